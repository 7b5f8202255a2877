"""detect_tissue on the sample slides, and on large pyramids: its time follows the coarse read.

For the large slides a procedural pyramid (levels 2x apart, each rendered at its
own resolution, like a scanner's stored levels; also 4x apart, as in SVS files)
stands in for a real file. The tables show which level detect_tissue read, how
many pixels it decoded against level 0's, and its time against the baseline, a
bare ``slide.read`` of the whole slide at 8 µm/px (the read it needs). For each
slide the two alternate for ``--repeat`` rounds after one warm-up call each;
every time is the median (min-max) and detect / read is the ratio of the
medians. Prints the machine, the load average at start and end, and the
command above each table.

Runtime on 2 CPU cores at load average 2: ``--quick`` (the samples and the
20,000 px pyramids only) took 4 s; the default (3 rounds, up to 200,000 x
160,000 px, where one detect_tissue + read takes about 6 s) about 1 minute.

Run: .venv/bin/python benchmarks/bench_tissue.py [--quick] [--repeat 3]
"""

from __future__ import annotations

import argparse
import math
import statistics

import numpy as np
from _common import command, load_average, machine, median_range, repeat_count, timed_rounds

import wsimito
from wsimito.data import fetch
from wsimito.slide import Backend, Slide
from wsimito.tissue import detect_tissue

SAMPLES = [  # (label, registry name, mpp to pass or None)
    ("CMU-1 small region (JPEG SVS)", "slides/cmu-1-small-region.svs", None),
    ("TCGA CR-7395 (JPEG 2000 SVS, mpp 0.25 given)", "slides/tcga-cr-7395-01a-01-ts1.svs", 0.25),
    ("tiatoolbox H&E ROI (PNG, mpp 0.25 given)", "images/he-target-tiatoolbox.png", 0.25),
]
# (width, height, pyramid step): 2x levels include 8 µm/px; 4x levels (as in SVS) stop at 4
LARGE = [
    (20_000, 16_000, 2),
    (50_000, 40_000, 2),
    (100_000, 80_000, 2),
    (200_000, 160_000, 2),
    (20_000, 16_000, 4),
    (100_000, 80_000, 4),
]
SLIDE_MPP = 0.25


class ProceduralPyramid(Backend):
    """A pyramid (levels ``step`` x apart, down to 512 px) of pink tissue ellipses on white glass.

    Each level is rendered at its own resolution, so reading it costs what
    decoding that level of a real file would, roughly; ``decoded`` counts the
    pixels read per level.
    """

    name = "procedural"

    def __init__(self, width: int, height: int, step: int = 2) -> None:
        self.source = f"procedural {width}x{height}"
        dims, downs = [(width, height)], [1.0]
        while max(dims[-1]) > 512:
            ds = downs[-1] * step
            dims.append((math.ceil(width / ds), math.ceil(height / ds)))
            downs.append(ds)
        self.level_dimensions, self.level_downsamples = tuple(dims), tuple(downs)
        self.properties = {}
        self.decoded = [0] * len(dims)
        self._size = (width, height)
        self._step = step

    def read_level(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        self.decoded[level] += width * height
        ds = self.level_downsamples[level]
        w0, h0 = self._size
        u = (x + np.arange(width) + 0.5) * ds / w0
        v = (y + np.arange(height) + 0.5) * ds / h0
        inside = np.zeros((height, width), dtype=bool)
        for cx, cy, rx, ry in ((0.3, 0.4, 0.22, 0.3), (0.7, 0.6, 0.18, 0.25)):
            inside |= ((u[None] - cx) / rx) ** 2 + ((v[:, None] - cy) / ry) ** 2 < 1
        texture = (np.sin(u * w0 / 40)[None] * np.cos(v * h0 / 55)[:, None] * 25).astype(np.int16)
        out = np.full((height, width, 3), 246, dtype=np.uint8)
        pink = np.clip(np.array([215, 130, 180], dtype=np.int16) + texture[..., None], 0, 255)
        out[inside] = pink[inside].astype(np.uint8)
        return out

    def mpp(self) -> tuple[float, float]:
        return (SLIDE_MPP, SLIDE_MPP)

    def reopen_spec(self):
        return (type(self), self._size, {"step": self._step})


def detect_and_read(slide: Slide, repeat: int) -> dict[str, list[float]]:
    """Wall times (s) of detect_tissue and of the 8 µm/px read, in interleaved rounds.

    The caller has run detect_tissue once; the read is warmed up here.
    """
    w, h = slide.dimensions
    fns = {
        "detect": lambda: detect_tissue(slide),
        "read": lambda: slide.read((0, 0, w, h), mpp=8.0),
    }
    fns["read"]()
    wall, _ = timed_rounds(fns, repeat, warmup=False)
    return wall


def ratio(wall: dict[str, list[float]]) -> float:
    return statistics.median(wall["detect"]) / statistics.median(wall["read"])


def samples(repeat: int) -> list[str]:
    rows = []
    for label, name, mpp in SAMPLES:
        slide = wsimito.open_slide(fetch(name), mpp=mpp)
        w, h = slide.dimensions
        tissue = detect_tissue(slide)
        wall = detect_and_read(slide, repeat)
        rows.append(
            f"| {label} | {w} x {h} | {tissue.mask.shape[1]} x {tissue.mask.shape[0]} "
            f"| {tissue.area_mm2:.3f} | {median_range(wall['detect'], '.0f', 1e3)} "
            f"| {median_range(wall['read'], '.0f', 1e3)} | {ratio(wall):.2f} |"
        )
    return rows


def large(sizes: list[tuple[int, int, int]], repeat: int) -> list[str]:
    rows = []
    for w, h, step in sizes:
        backend = ProceduralPyramid(w, h, step)
        slide = Slide(backend)
        tissue = detect_tissue(slide)
        level = max(i for i, n in enumerate(backend.decoded) if n)
        decoded = backend.decoded[level]
        assert sum(backend.decoded[:level]) == 0, "a finer level was read"
        wall = detect_and_read(slide, repeat)
        rows.append(
            f"| {w:,} x {h:,} | {step}x | {slide.level_mpp(level):g} | {decoded:,} | {w * h:,} "
            f"| {median_range(wall['detect'], '.2f')} | {median_range(wall['read'], '.2f')} "
            f"| {ratio(wall):.2f} | {tissue.area_mm2:.1f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="large pyramids of 20,000 px only")
    parser.add_argument("--repeat", type=repeat_count, default=3, help="rounds (>= 3)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"load average at start: {load_average()}\n")
    sizes = [s for s in LARGE if s[0] <= 20_000] if args.quick else LARGE
    sample_rows = samples(args.repeat)
    large_rows = large(sizes, args.repeat)
    print(
        "detect_tissue(slide) with the defaults (mpp=8, method='otsu') against "
        f"slide.read at 8 µm/px; median of {args.repeat} interleaved rounds (min-max)\n"
    )
    print(command())
    print()
    print(
        "| slide | size (px) | mask (px) | area (mm²) | detect_tissue (ms) "
        "| slide.read at 8 µm/px (ms) | detect / read |"
    )
    print("|---|---|---|---|---|---|---|")
    print("\n".join(sample_rows))
    print()
    print(command())
    print()
    print(
        "| slide (px) | pyramid step | level read (µm/px) | px decoded | level-0 px "
        "| detect_tissue (s) | slide.read at 8 µm/px (s) | detect / read | tissue (mm²) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(large_rows))
    print(f"\nload average at end: {load_average()}")


if __name__ == "__main__":
    main()
