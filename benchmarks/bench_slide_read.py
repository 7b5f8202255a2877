"""Slide.read_region overhead over the raw readers, and openslide vs tiffslide speed.

Run: .venv/bin/python benchmarks/bench_slide_read.py
"""

from __future__ import annotations

import numpy as np
import openslide
import tiffslide
from _common import best_of, machine

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


def main() -> None:
    print(f"machine: {machine()}\n")
    print("| file | reader | raw read_region (ms/tile) | Slide.read_region (ms/tile) | overhead |")
    print("|---|---|---|---|---|")
    speeds = {}
    for label, name in SAMPLES.items():
        path = str(fetch(name))
        osr, ts = openslide.OpenSlide(path), tiffslide.TiffSlide(path)
        locs = tile_locations(osr.dimensions)
        raws = {
            "openslide": lambda osr=osr, locs=locs: [
                np.asarray(osr.read_region(p, 0, (512, 512))) for p in locs
            ],
            "tiffslide": lambda ts=ts, locs=locs: [
                ts.read_region(p, 0, (512, 512), as_array=True) for p in locs
            ],
        }
        for backend, raw in raws.items():
            slide = wsimito.open_slide(path, backend=backend, mpp=0.25)
            t_raw = best_of(raw) / len(locs)
            t_ours = best_of(
                lambda s=slide, locs=locs: [s.read_region(p, 0, (512, 512)) for p in locs]
            ) / len(locs)
            speeds[(label, backend)] = t_ours
            print(
                f"| {label} | {backend} | {t_raw * 1e3:.2f} | {t_ours * 1e3:.2f} "
                f"| {t_ours / t_raw - 1:+.1%} |"
            )
    print("\n| file | openslide / tiffslide time per tile | auto picks |")
    print("|---|---|---|")
    for label, name in SAMPLES.items():
        ratio = speeds[(label, "openslide")] / speeds[(label, "tiffslide")]
        print(
            f"| {label} | {ratio:.2f} | {wsimito.open_slide(str(fetch(name)), mpp=0.25).backend} |"
        )


if __name__ == "__main__":
    main()
