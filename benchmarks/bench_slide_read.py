"""Slide.read_region overhead over the raw readers, and openslide vs tiffslide speed.

For each sample slide (JPEG SVS and JPEG 2000 SVS), ``--tiles`` 512 px tiles at
random level-0 positions are read five ways in turn in every round: OpenSlide's
and tiffslide's own ``read_region`` (the baselines), ``Slide.read_region`` on
each of them with ``decoder="backend"`` (so that the difference is the
wrapper's overhead), and ``Slide.read_region`` with the direct decoder, its
tile cache cleared before each pass. Each time per tile is the median of
``--repeat`` interleaved rounds (min-max), after one warm-up pass; overheads
and ratios are ratios of the medians. Tables: the overhead per file and reader;
the OpenSlide / tiffslide time ratio of ``Slide.read_region`` and what
``open_slide`` picks by default; the direct decoder against the faster raw
reader. Prints the machine and the load average at start and end, and the
command above each table.

Runtime on 2 CPU cores at load average 2: ``--tiles 4`` took 5 s, so the
default (24 tiles, 3 rounds) takes about 30 s.

Run: .venv/bin/python benchmarks/bench_slide_read.py [--tiles 24] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import warnings
from collections.abc import Callable

import numpy as np
import openslide
import tiffslide
from _common import command, load_average, machine, median_range, repeat_count, timed_rounds

import wsimito
from wsimito.data import fetch

SAMPLES = {
    "JPEG SVS (CMU)": "slides/cmu-1-small-region.svs",
    "JPEG 2000 SVS (TCGA)": "slides/tcga-cr-7395-01a-01-ts1.svs",
}


def tile_locations(dims, n=24, size=512, seed=0):
    rng = np.random.default_rng(seed)
    w, h = dims
    return [(int(rng.integers(0, w - size)), int(rng.integers(0, h - size))) for _ in range(n)]


def passes(path: str, n: int) -> dict[tuple[str, str], Callable[[], object]]:
    """One pass over ``n`` tiles per path, in the order they run in a round.

    Raw OpenSlide, ``Slide`` on it, raw tiffslide, ``Slide`` on it (both with
    ``decoder="backend"``, so that the difference is the wrapper's overhead),
    and ``Slide`` with the direct decoder, its tile cache cleared before each
    pass (the same tiles are read in every pass).
    """
    osr, ts = openslide.OpenSlide(path), tiffslide.TiffSlide(path)
    locs = tile_locations(osr.dimensions, n=n)
    fns: dict[tuple[str, str], Callable[[], object]] = {
        ("openslide", "raw"): lambda: [np.asarray(osr.read_region(p, 0, (512, 512))) for p in locs]
    }
    fns[("openslide", "ours")] = ours(
        open_slide(path, backend="openslide", decoder="backend"), locs
    )
    fns[("tiffslide", "raw")] = lambda: [
        ts.read_region(p, 0, (512, 512), as_array=True) for p in locs
    ]
    fns[("tiffslide", "ours")] = ours(
        open_slide(path, backend="tiffslide", decoder="backend"), locs
    )
    direct = open_slide(path)
    if direct.tile_cache is not None:
        fns[("direct", "ours")] = ours(direct, locs)
    return fns


def open_slide(path: str, **kwargs) -> wsimito.Slide:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the CMU file's own mpp is not 0.25
        return wsimito.open_slide(path, mpp=0.25, **kwargs)


def ours(slide: wsimito.Slide, locs) -> Callable[[], object]:
    cache = slide.tile_cache

    def run() -> list[np.ndarray]:
        if cache is not None:
            cache.clear()
        return [slide.read_region(p, 0, (512, 512)) for p in locs]

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=24, help="tiles per pass")
    parser.add_argument("--repeat", type=repeat_count, default=3, help="rounds (>= 3)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"load average at start: {load_average()}\n")
    rows, direct_rows, speeds = [], [], {}
    speeds_of = ("openslide", "tiffslide")
    for label, name in SAMPLES.items():
        path = str(fetch(name))
        fns = passes(path, args.tiles)
        wall, _ = timed_rounds(fns, args.repeat)
        per_tile = {key: [t / args.tiles for t in times] for key, times in wall.items()}
        for backend in ("openslide", "tiffslide"):
            raw, ours = per_tile[(backend, "raw")], per_tile[(backend, "ours")]
            overhead = statistics.median(ours) / statistics.median(raw) - 1
            rows.append(
                f"| {label} | {backend} | {median_range(raw, '.2f', 1e3)} "
                f"| {median_range(ours, '.2f', 1e3)} | {overhead:+.1%} |"
            )
            speeds[(label, backend)] = statistics.median(ours)
        if ("direct", "ours") in per_tile:
            direct = per_tile[("direct", "ours")]
            best_raw = min(statistics.median(per_tile[(b, "raw")]) for b in speeds_of)
            direct_rows.append(
                f"| {label} | {median_range(direct, '.2f', 1e3)} "
                f"| {best_raw / statistics.median(direct):.2f} |"
            )

    print(
        f"{args.tiles} tiles of 512 px at random level-0 positions; ms per tile, median of "
        f"{args.repeat} interleaved rounds (min-max)\n"
    )
    print(command())
    print()
    print(
        "| file | reader | raw read_region (ms/tile) "
        "| Slide.read_region, decoder='backend' (ms/tile) | overhead |"
    )
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    print("\nSame run, ratio of the Slide.read_region (decoder='backend') medians:\n")
    print(command())
    print()
    print("| file | openslide / tiffslide time per tile | auto picks |")
    print("|---|---|---|")
    for label, name in SAMPLES.items():
        ratio = speeds[(label, "openslide")] / speeds[(label, "tiffslide")]
        auto = open_slide(str(fetch(name)))
        print(f"| {label} | {ratio:.2f} | {auto.backend}, decoder {auto.decoder} |")
    if direct_rows:
        print(
            "\nSame run: Slide.read_region with the direct decoder (the default where the file "
            "allows), its tile cache cleared before each pass:\n"
        )
        print(command())
        print()
        print("| file | direct decoder (ms/tile) | faster raw reader's time / direct |")
        print("|---|---|---|")
        print("\n".join(direct_rows))
    print(f"\nload average at end: {load_average()}")


if __name__ == "__main__":
    main()
