"""Test helpers for plots and galleries: white slides with dark dots at known points, and
results built from given points (no detector run)."""

from __future__ import annotations

import numpy as np

from wsimito.result import MitosisResult
from wsimito.slide.array_backend import ArrayBackend
from wsimito.slide.slide import Slide
from wsimito.tissue import Tissue


def dotted_slide(
    points: np.ndarray, *, size: tuple[int, int] = (800, 600), mpp: float = 0.5, radius: int = 1
) -> Slide:
    """A white slide with a black square of side ``2 * radius + 1`` px centred on the pixel
    that holds each level-0 point."""
    width, height = size
    arr = np.full((height, width, 3), 255, np.uint8)
    for x, y in np.asarray(points, dtype=np.float64).reshape(-1, 2):
        j, i = int(np.floor(x)), int(np.floor(y))
        arr[max(0, i - radius) : i + radius + 1, max(0, j - radius) : j + radius + 1] = 0
    return Slide(ArrayBackend(arr), mpp=mpp)


def tissue_slide(width: int = 1200, height: int = 1000, mpp: float = 4.0) -> Slide:
    """Light-grey glass with a pink tissue rectangle at x 100-1000, y 100-900 px (level 0)."""
    arr = np.full((height, width, 3), 245, np.uint8)
    arr[100:900, 100:1000] = (200, 120, 180)
    return Slide(ArrayBackend(arr), mpp=mpp)


def make_result(
    slide: Slide,
    points,
    scores,
    *,
    tissue: Tissue | None = None,
    threshold: float = 0.5,
    skipped_cores=(),
    slide_path: str | None = None,
    thumbnail: bool = True,
) -> MitosisResult:
    """A result on ``slide`` with the given candidates (tissue: the whole slide by default)."""
    return MitosisResult(
        points=np.asarray(points, dtype=np.float64).reshape(-1, 2),
        scores=np.asarray(scores, dtype=np.float64).reshape(-1),
        threshold=threshold,
        slide_name=slide.name,
        slide_path=slide_path,
        slide_dimensions=slide.dimensions,
        slide_mpp=slide.mpp,
        tissue=tissue if tissue is not None else Tissue.full(slide),
        detector_name="test",
        detector_mpp=slide.mpp,
        skipped_cores=[tuple(c) for c in skipped_cores],
        skipped_tiles=[(c[0], c[1], c[2] - c[0], c[3] - c[1]) for c in skipped_cores],
        thumbnail=slide.thumbnail(256) if thumbnail else None,
    )
