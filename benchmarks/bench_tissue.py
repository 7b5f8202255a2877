"""detect_tissue on the sample slides, and on large pyramids: its time follows the coarse read.

For the large slides a procedural pyramid (levels 2x apart, each rendered at its
own resolution, like a scanner's stored levels; also 4x apart, as in SVS files)
stands in for a real file. The
table shows which level detect_tissue read, how many pixels it decoded against
level 0's, and its time against a bare ``slide.read`` of that level.

Run: .venv/bin/python benchmarks/bench_tissue.py
"""

from __future__ import annotations

import math

import numpy as np
from _common import best_of, machine

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


def samples() -> None:
    print(
        "| slide | size (px) | mask (px) | area (mm²) | detect_tissue (ms) "
        "| slide.read at 8 µm/px (ms) |"
    )
    print("|---|---|---|---|---|---|")
    for label, name, mpp in SAMPLES:
        slide = wsimito.open_slide(fetch(name), mpp=mpp)
        w, h = slide.dimensions
        tissue = detect_tissue(slide)
        t_detect = best_of(lambda s=slide: detect_tissue(s), repeat=3)
        t_read = best_of(lambda s=slide, w=w, h=h: s.read((0, 0, w, h), mpp=8.0), repeat=3)
        rows, cols = tissue.mask.shape
        print(
            f"| {label} | {w} x {h} | {cols} x {rows} | {tissue.area_mm2:.3f} "
            f"| {t_detect * 1e3:.0f} | {t_read * 1e3:.0f} |"
        )


def large() -> None:
    print(
        "| slide (px) | pyramid step | level read (µm/px) | px decoded | level-0 px "
        "| detect_tissue (s) | slide.read at 8 µm/px (s) | detect / read | tissue (mm²) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for w, h, step in LARGE:
        backend = ProceduralPyramid(w, h, step)
        slide = Slide(backend)
        tissue = detect_tissue(slide)
        level = max(i for i, n in enumerate(backend.decoded) if n)
        decoded = backend.decoded[level]
        assert sum(backend.decoded[:level]) == 0, "a finer level was read"
        t_detect = best_of(lambda s=slide: detect_tissue(s), repeat=3)
        t_read = best_of(lambda s=slide, w=w, h=h: s.read((0, 0, w, h), mpp=8.0), repeat=3)
        print(
            f"| {w:,} x {h:,} | {step}x | {slide.level_mpp(level):g} | {decoded:,} | {w * h:,} "
            f"| {t_detect:.2f} | {t_read:.2f} | {t_detect / t_read:.2f} | {tissue.area_mm2:.1f} |"
        )


def main() -> None:
    print(f"machine: {machine()}\n")
    print("detect_tissue(slide) with the defaults (mpp=8, method='otsu'), median of 3 runs\n")
    samples()
    print()
    large()


if __name__ == "__main__":
    main()
