"""Review what a detector counts: one gallery of detections, near misses and negatives.

The gallery shows a detector's top detections, its near misses and mined hard
negatives, each crop with its score.

This is how a pathologist (and a developer) sees in one look what a number is
made of. The crops and the page come from :mod:`wsimito.gallery`; this module
only chooses the sections. ``wsimito review`` is the command line for it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .classes import LOOKALIKE_COLOR
from .gallery import GallerySection, detection_section, read_section, result_slide, write_gallery

if TYPE_CHECKING:
    from .result import MitosisResult
    from .slide import Slide


def negative_points(negatives: Any, slide_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Level-0 points (px) and scores of the negatives on one slide, by descending score.

    Parameters
    ----------
    negatives : MinedCandidates, Annotations, pandas.DataFrame, str or os.PathLike
        Mined negatives (:class:`~wsimito.train.mining.MinedCandidates`), annotations with
        look-alikes, a table with ``slide``, ``x``, ``y`` (and ``score``, ``kind``), or a file
        :func:`wsimito.read_annotations` reads (e.g. the GeoJSON or SlideRunner database
        mining wrote).
    slide_name : str
        The slide's name. A set that covers one slide only is taken whatever its name.

    Returns
    -------
    points : numpy.ndarray
        ``(N, 2)`` level-0 px.
    scores : numpy.ndarray
        ``(N,)``; NaN where a negative has no score (an annotated look-alike), listed last.

    Raises
    ------
    ValueError
        When the set covers several slides and none is ``slide_name``.
    """
    if isinstance(negatives, (str, os.PathLike)):
        from .io.annotations import read_annotations

        negatives = read_annotations(negatives)
    if hasattr(negatives, "negatives"):  # MinedCandidates
        frame = negatives.negatives
    elif hasattr(negatives, "to_frame"):
        frame = negatives.to_frame()
    else:
        frame = pd.DataFrame(negatives)
    if "kind" in frame:
        frame = frame[frame["kind"].isin(["lookalike", "hard negative"])]
    if "slide" in frame:
        names = set(frame["slide"].astype(str))
        if slide_name in names:
            frame = frame[frame["slide"].astype(str) == slide_name]
        elif len(names) > 1:
            raise ValueError(
                f"the negatives cover slides {sorted(names)[:5]}, not {slide_name!r}; give the "
                "negatives of this slide"
            )
    xy = frame[["x", "y"]].to_numpy(np.float64).reshape(-1, 2)
    scores = frame["score"].to_numpy(np.float64) if "score" in frame else np.full(len(xy), np.nan)
    order = np.argsort(-np.nan_to_num(scores, nan=-1.0), kind="stable")
    return xy[order], scores[order]


def review_sections(
    result: MitosisResult,
    slide: Slide | None = None,
    *,
    negatives: Any = None,
    n: int = 24,
    near_misses: bool = True,
    size_um: float = 40.0,
) -> list[GallerySection]:
    """The sections of a review gallery: counted, near misses, mined negatives.

    Parameters
    ----------
    result : MitosisResult
        A counting result.
    slide : Slide, optional
        Its slide (default: the result's ``slide_path``, opened and closed again).
    negatives : optional
        Hard negatives of this slide (see :func:`negative_points`).
    n : int
        Crops per section, the top ``n`` by score.
    near_misses : bool
        Add the candidates in tissue scored below the threshold.
    size_um : float
        Side of each crop, µm.

    Returns
    -------
    list of GallerySection
        The counted detections, then the near misses (if ``near_misses``), then the
        negatives (if ``negatives`` is given), each at most ``n`` crops.
    """
    sections = [detection_section(result, slide, which="counted", n=n, size_um=size_um)]
    if near_misses:
        sections.append(
            detection_section(result, slide, which="below_threshold", n=n, size_um=size_um)
        )
    if negatives is not None:
        xy, scores = negative_points(negatives, result.slide_name)
        with result_slide(result, slide) as s:
            size_px = max(8, round(size_um / s.mpp))
            labels = [f"{v:.2f}" if np.isfinite(v) else "annotated" for v in scores]
            shown = min(len(xy), n)
            sections.append(
                read_section(
                    s,
                    xy[:shown],
                    title=f"Mined negatives: top {shown} of {len(xy)}",
                    size_px=size_px,
                    color=LOOKALIKE_COLOR,
                    labels=labels[:shown],
                )
            )
    return sections


def write_review(
    path: str | os.PathLike[str],
    result: MitosisResult,
    slide: Slide | None = None,
    *,
    negatives: Any = None,
    n: int = 24,
    near_misses: bool = True,
    size_um: float = 40.0,
    columns: int = 8,
) -> Path:
    """Write a review gallery (PNG for ``.png``, HTML for ``.html``), atomically.

    The title names the slide, the detector, the count, the tissue area (mm²)
    and the density (per mm²).

    Parameters
    ----------
    path : str or os.PathLike
        The gallery file: PNG for ``.png``, HTML for ``.html`` or ``.htm``.
    result : MitosisResult
        A counting result.
    slide : Slide, optional
        Its slide (default: the result's ``slide_path``, opened and closed again).
    negatives : optional
        Hard negatives of this slide (see :func:`negative_points`).
    n : int
        Crops per section, the top ``n`` by score.
    near_misses : bool
        Add the candidates in tissue scored below the threshold.
    size_um : float
        Side of each crop, µm.
    columns : int
        Crops per row (PNG only; HTML wraps to the window's width).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    sections = review_sections(
        result, slide, negatives=negatives, n=n, near_misses=near_misses, size_um=size_um
    )
    # "mm^2": the gallery's PNG font has no superscript two
    title = (
        f"{result.slide_name}: {result.detector_name} counts {result.count} in "
        f"{result.tissue_area_mm2:.2f} mm^2 of tissue ({result.density_per_mm2:.1f} per mm^2) "
        f"at threshold {result.threshold:.2f}"
    )
    return write_gallery(path, sections, title=title, columns=columns)


__all__ = ["negative_points", "review_sections", "write_review"]
