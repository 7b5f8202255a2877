"""TileGrid construction on a 100,000 x 80,000 px slide with a tissue mask, against a Python loop.

The baseline builds the same tiles with a double loop over rows and columns,
asking the same Tissue about each tile's core and area one box at a time. Both
build the summed-area table afresh (a new Tissue each run).

Run: .venv/bin/python benchmarks/bench_tiling.py
"""

from __future__ import annotations

import time

import numpy as np
from _common import best_of, machine

from wsimito.tiling import TileGrid
from wsimito.tissue import Tissue

WIDTH, HEIGHT, SLIDE_MPP = 100_000, 80_000, 0.25
TISSUE_MPP = 8.0
CONFIGS = [  # (tile_size, overlap, mpp): the MIDOG detector's tiles, and smaller ones
    (512, 64, 0.25),
    (256, 32, 0.25),
    (512, 64, 0.25 * 1.01),  # a detector mpp 1 % off the slide's: fractional boxes
]


def tissue_mask() -> np.ndarray:
    """Three tissue pieces (ellipses with a lumen) covering about 30 % of the slide."""
    rows, cols = Tissue.mask_shape((WIDTH, HEIGHT), slide_mpp=SLIDE_MPP, mpp=TISSUE_MPP)
    yy, xx = np.mgrid[:rows, :cols] / np.array([rows, cols])[:, None, None]
    mask = np.zeros((rows, cols), dtype=bool)
    for cx, cy, rx, ry in ((0.3, 0.4, 0.22, 0.3), (0.7, 0.6, 0.18, 0.25), (0.85, 0.15, 0.06, 0.06)):
        mask |= ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
    mask &= ((xx - 0.3) / 0.05) ** 2 + ((yy - 0.4) / 0.05) ** 2 > 1
    return mask


def naive_grid(tissue: Tissue, tile_size: int, overlap: int, mpp: float, min_tissue: float):
    """The same tiles, one at a time: rows and columns of Python loops."""
    scale = mpp / SLIDE_MPP
    extent, stride, half = tile_size * scale, (tile_size - overlap) * scale, overlap * scale / 2
    tiles = []
    y, row = 0.0, 0
    while True:
        last_row = y + extent >= HEIGHT
        x, col = 0.0, 0
        while True:
            last_col = x + extent >= WIDTH
            core = (
                0.0 if col == 0 else x + half,
                0.0 if row == 0 else y + half,
                WIDTH if last_col else x + stride + half,
                HEIGHT if last_row else y + stride + half,
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


def fresh(mask: np.ndarray) -> Tissue:
    return Tissue(mask, mpp=TISSUE_MPP, slide_mpp=SLIDE_MPP, dimensions=(WIDTH, HEIGHT))


def main() -> None:
    print(f"machine: {machine()}\n")
    mask = tissue_mask()
    print(
        f"slide {WIDTH:,} x {HEIGHT:,} px at {SLIDE_MPP} µm/px; tissue mask {mask.shape[1]} x "
        f"{mask.shape[0]} px at {TISSUE_MPP} µm/px, {mask.mean():.0%} tissue; min_tissue 0.05\n"
    )
    print(
        "| tile / overlap (px) | grid mpp | grid (rows x cols) | tiles kept | TileGrid (ms) "
        "| boxes()+cores() (ms) | Python loop (ms) | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for tile_size, overlap, mpp in CONFIGS:
        kwargs = dict(tile_size=tile_size, overlap=overlap, mpp=mpp, min_tissue=0.05)
        grid = TileGrid.from_dimensions((WIDTH, HEIGHT), SLIDE_MPP, tissue=fresh(mask), **kwargs)
        t_grid = best_of(
            lambda kw=kwargs: TileGrid.from_dimensions(
                (WIDTH, HEIGHT), SLIDE_MPP, tissue=fresh(mask), **kw
            ),
            repeat=5,
        )
        t_arrays = best_of(lambda g=grid: (g.boxes(), g.cores()), repeat=5)
        start = time.perf_counter()  # one run: the loop takes tens of seconds
        naive = np.array(naive_grid(fresh(mask), tile_size, overlap, mpp, 0.05))
        t_naive = time.perf_counter() - start
        rows, cols = grid.positions()
        assert np.array_equal(naive[:, :2], np.stack([rows, cols], axis=1)), "loop and grid differ"
        assert np.allclose(naive[:, 2:6], grid.boxes()) and np.allclose(naive[:, 6:], grid.cores())
        print(
            f"| {tile_size} / {overlap} | {mpp:.4g} | {grid.shape[0]} x {grid.shape[1]} "
            f"| {len(grid):,} | {t_grid * 1e3:.1f} | {t_arrays * 1e3:.1f} | {t_naive * 1e3:.0f} "
            f"| {t_naive / t_grid:.0f}x |"
        )


if __name__ == "__main__":
    main()
