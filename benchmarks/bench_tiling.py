"""TileGrid construction on a 100,000 x 80,000 px slide with a tissue mask, against a Python loop.

The baseline builds the same tiles with a double loop over rows and columns,
asking the same Tissue about each tile's core and area one box at a time. Both
build the summed-area table afresh (a new Tissue each run). For each tile
configuration, each round runs in turn ``TileGrid.from_dimensions``,
``boxes()`` + ``cores()`` of a built grid, and the loop; every time is the
median of ``--repeat`` rounds (min-max) and the speed-up is loop median /
TileGrid median. TileGrid is warmed up once; the loop is not (it takes
seconds, and its first run is checked against the grid). Prints the machine,
the load average at start and end, and a markdown table with the command above.

Runtime on 2 CPU cores at load average 2: the loop takes about 5 + 22 + 6 s
a round (one full-size 512/64 loop timed alone: 5.2 s), so the default (3
rounds) takes about 2 minutes (RESULTS.md's earlier figures, at load 3-8, were
4x slower: up to 7 minutes); ``--quick`` (a 25,000 x 20,000 px slide, 1/16 of
the tiles) took 7 s.

Run: .venv/bin/python benchmarks/bench_tiling.py [--quick] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
from _common import command, load_average, machine, median_range, repeat_count, timed_rounds

from wsimito.tiling import TileGrid
from wsimito.tissue import Tissue

WIDTH, HEIGHT, SLIDE_MPP = 100_000, 80_000, 0.25
TISSUE_MPP = 8.0
CONFIGS = [  # (tile_size, overlap, mpp): the MIDOG detector's tiles, and smaller ones
    (512, 64, 0.25),
    (256, 32, 0.25),
    (512, 64, 0.25 * 1.01),  # a detector mpp 1 % off the slide's: fractional boxes
]


def tissue_mask(width: int, height: int) -> np.ndarray:
    """Three tissue pieces (ellipses with a lumen) covering about 30 % of the slide."""
    rows, cols = Tissue.mask_shape((width, height), slide_mpp=SLIDE_MPP, mpp=TISSUE_MPP)
    yy, xx = np.mgrid[:rows, :cols] / np.array([rows, cols])[:, None, None]
    mask = np.zeros((rows, cols), dtype=bool)
    for cx, cy, rx, ry in ((0.3, 0.4, 0.22, 0.3), (0.7, 0.6, 0.18, 0.25), (0.85, 0.15, 0.06, 0.06)):
        mask |= ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
    mask &= ((xx - 0.3) / 0.05) ** 2 + ((yy - 0.4) / 0.05) ** 2 > 1
    return mask


def naive_grid(tissue: Tissue, tile_size: int, overlap: int, mpp: float, min_tissue: float):
    """The same tiles, one at a time: rows and columns of Python loops."""
    width, height = tissue.dimensions
    scale = mpp / SLIDE_MPP
    extent, stride, half = tile_size * scale, (tile_size - overlap) * scale, overlap * scale / 2
    tiles = []
    y, row = 0.0, 0
    while True:
        last_row = y + extent >= height
        x, col = 0.0, 0
        while True:
            last_col = x + extent >= width
            core = (
                0.0 if col == 0 else x + half,
                0.0 if row == 0 else y + half,
                width if last_col else x + stride + half,
                height if last_row else y + stride + half,
            )
            core_box = (core[0], core[1], core[2] - core[0], core[3] - core[1])
            if (
                tissue.intersects(np.array([core_box]))[0]
                or tissue.fraction((x, y, extent, extent)) >= min_tissue
            ):
                tiles.append((row, col, x, y, extent, extent) + core)
            if last_col:
                break
            x, col = (col + 1) * stride, col + 1
        if last_row:
            break
        y, row = (row + 1) * stride, row + 1
    return tiles


def fresh(mask: np.ndarray, dims: tuple[int, int]) -> Tissue:
    return Tissue(mask, mpp=TISSUE_MPP, slide_mpp=SLIDE_MPP, dimensions=dims)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 25,000 x 20,000 px slide")
    parser.add_argument("--repeat", type=repeat_count, default=3, help="rounds (>= 3)")
    args = parser.parse_args()
    dims = (WIDTH // 4, HEIGHT // 4) if args.quick else (WIDTH, HEIGHT)
    print(f"machine: {machine()}")
    print(f"load average at start: {load_average()}\n")
    mask = tissue_mask(*dims)
    rows_out = []
    for tile_size, overlap, mpp in CONFIGS:
        kwargs = dict(tile_size=tile_size, overlap=overlap, mpp=mpp, min_tissue=0.05)
        grid = TileGrid.from_dimensions(dims, SLIDE_MPP, tissue=fresh(mask, dims), **kwargs)
        grid.boxes(), grid.cores()  # warm-up
        naive_out: list = []

        def naive(kw=kwargs, out=naive_out) -> None:
            out.append(
                np.array(
                    naive_grid(fresh(mask, dims), kw["tile_size"], kw["overlap"], kw["mpp"], 0.05)
                )
            )

        fns = {
            "grid": lambda kw=kwargs: TileGrid.from_dimensions(
                dims, SLIDE_MPP, tissue=fresh(mask, dims), **kw
            ),
            "arrays": lambda g=grid: (g.boxes(), g.cores()),
            "loop": naive,
        }
        wall, _ = timed_rounds(fns, args.repeat, warmup=False)
        rows, cols = grid.positions()
        got = naive_out[0]
        assert np.array_equal(got[:, :2], np.stack([rows, cols], axis=1)), "loop and grid differ"
        assert np.allclose(got[:, 2:6], grid.boxes()) and np.allclose(got[:, 6:], grid.cores())
        speedup = statistics.median(wall["loop"]) / statistics.median(wall["grid"])
        rows_out.append(
            f"| {tile_size} / {overlap} | {mpp:.4g} | {grid.shape[0]} x {grid.shape[1]} "
            f"| {len(grid):,} | {median_range(wall['grid'], '.1f', 1e3)} "
            f"| {median_range(wall['arrays'], '.1f', 1e3)} "
            f"| {median_range(wall['loop'], '.2f')} | {speedup:.0f}x |"
        )
    print(
        f"slide {dims[0]:,} x {dims[1]:,} px at {SLIDE_MPP} µm/px; tissue mask {mask.shape[1]} x "
        f"{mask.shape[0]} px at {TISSUE_MPP} µm/px, {mask.mean():.0%} tissue; min_tissue 0.05; "
        f"median of {args.repeat} interleaved rounds (min-max)\n"
    )
    print(command())
    print()
    print(
        "| tile / overlap (px) | grid mpp | grid (rows x cols) | tiles kept | TileGrid (ms) "
        "| boxes()+cores() (ms) | Python loop (s) | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows_out))
    print(f"\nload average at end: {load_average()}")


if __name__ == "__main__":
    main()
