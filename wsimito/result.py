"""`MitosisResult`: what :func:`wsimito.count_mitoses` found on one slide.

It holds every candidate detection (level-0 px and score) with the decision
threshold, so the count, the density, the hotspot and the exports all follow
from one threshold and can be redone at another without running the detector
again (:meth:`MitosisResult.with_threshold`).
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import html
import io
import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

from .classes import HOTSPOT_COLOR, MITOSIS_COLOR, TISSUE_COLOR
from .hotspot import Hotspot, find_hotspot
from .io.atomic import atomic_write
from .io.geojson import (
    feature_collection,
    point_ids,
    write_geojson,
)
from .io.sliderunner import write_sliderunner

if TYPE_CHECKING:
    import geopandas

    from .tissue import Tissue

# Longest side of the overview drawn by ``_repr_html_``, px.
_PREVIEW_SIZE = 512
_DOT_RADIUS = 3


@dataclass(frozen=True, eq=False, kw_only=True, repr=False)
class MitosisResult:
    """Mitotic figures found on one slide, with the tissue they were counted in.

    Parameters
    ----------
    points:
        ``(N, 2)`` level-0 px ``(x, y)`` of every candidate detection after
        merging across tiles, whatever its score.
    scores:
        ``(N,)`` scores in [0, 1].
    threshold:
        Decision threshold: a candidate with ``score >= threshold`` is a mitotic figure.
    slide_name, slide_path:
        The slide's short name and file path (``None`` for in-memory slides).
    slide_dimensions:
        Level-0 ``(width, height)``, px.
    slide_mpp:
        Level-0 resolution, µm/px.
    bounds_offset:
        OpenSlide ``bounds-x``/``bounds-y`` in level-0 px (``(0, 0)`` if none);
        QuPath coordinates are level-0 px minus this offset.
    tissue:
        The tissue that was searched (:class:`wsimito.tissue.Tissue`).
    detector_name, detector_metadata:
        The detector and what it says about itself, e.g.
        ``{"training_data": "synthetic", "intended_use": "..."}``.
    detector_mpp:
        Resolution the detector ran at, µm/px.
    timing:
        ``{"tiles": int, "seconds": float, "tiles_per_s": float, ...}``.
    skipped_tiles:
        Level-0 boxes ``(x, y, w, h)`` px of tiles that could not be read.
    thumbnail:
        A small ``(h, w, 3)`` uint8 RGB overview of the whole slide, or ``None``.

    Examples
    --------
    >>> result = wsimito.count_mitoses("slide.svs")        # doctest: +SKIP
    >>> result.count, f"{result.density_per_mm2:.2f}/mm²"  # doctest: +SKIP
    >>> result.to_geojson("slide.geojson")                 # doctest: +SKIP
    """

    points: np.ndarray
    scores: np.ndarray
    threshold: float
    slide_name: str
    slide_path: str | None = None
    slide_dimensions: tuple[int, int]
    slide_mpp: float
    bounds_offset: tuple[float, float] = (0.0, 0.0)
    tissue: Tissue
    detector_name: str
    detector_metadata: dict = field(default_factory=dict)
    detector_mpp: float
    timing: dict = field(default_factory=dict)
    skipped_tiles: list = field(default_factory=list)
    thumbnail: np.ndarray | None = None

    def __post_init__(self) -> None:
        points = _frozen_array(self.points, "points")
        scores = _frozen_array(self.scores, "scores")
        points = points.reshape(-1, 2) if points.size == 0 else points
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(
                f"points must be an (N, 2) array of level-0 (x, y) px, got shape {points.shape}"
            )
        if scores.shape != (len(points),):
            raise ValueError(
                f"scores must be an (N,) array with one score per point; got {scores.shape} "
                f"for {len(points)} points"
            )
        if not (np.isfinite(points).all() and np.isfinite(scores).all()):
            raise ValueError(
                "points and scores must be finite; drop NaN or infinite detections first"
            )
        if scores.size and (scores.min() < 0 or scores.max() > 1):
            raise ValueError(
                f"scores must lie in [0, 1], got {scores.min():g} to {scores.max():g}; "
                "apply a sigmoid to logits first"
            )
        threshold = float(self.threshold)
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be a finite score, got {self.threshold!r}")
        slide_mpp = float(self.slide_mpp)
        if not (math.isfinite(slide_mpp) and slide_mpp > 0):
            raise ValueError(
                f"slide_mpp must be a positive number of µm per pixel, got {self.slide_mpp!r}"
            )
        width, height = (int(v) for v in self.slide_dimensions)
        if tuple(self.tissue.dimensions) != (width, height):
            raise ValueError(
                f"the tissue covers a {self.tissue.dimensions} px slide but slide_dimensions "
                f"is {(width, height)}; pass the tissue of this slide"
            )
        bx, by = (float(v) for v in self.bounds_offset)
        for name, value in (
            ("points", points),
            ("scores", scores),
            ("threshold", threshold),
            ("slide_mpp", slide_mpp),
            ("slide_dimensions", (width, height)),
            ("bounds_offset", (bx, by)),
            ("detector_mpp", float(self.detector_mpp)),
            ("detector_metadata", dict(self.detector_metadata)),
            ("timing", dict(self.timing)),
            ("skipped_tiles", [tuple(float(v) for v in b) for b in self.skipped_tiles]),
        ):
            object.__setattr__(self, name, value)

    # -- counts ---------------------------------------------------------------------
    @property
    def count(self) -> int:
        """Number of mitotic figures: candidates with ``score >= threshold``."""
        return int(np.count_nonzero(self.scores >= self.threshold))

    @cached_property
    def _order(self) -> np.ndarray:
        """Candidate indices by descending score, then y, then x."""
        return np.lexsort((self.points[:, 0], self.points[:, 1], -self.scores))

    @cached_property
    def _detected(self) -> np.ndarray:
        """Indices of the detections, in the deterministic order."""
        order = self._order
        return order[self.scores[order] >= self.threshold]

    @cached_property
    def detections(self) -> geopandas.GeoDataFrame:
        """The mitotic figures: level-0 px Points with ``score``, ``x``, ``y``.

        Sorted by descending score, then y, then x, so the same run gives the same table.
        """
        return self._frame(self._detected)

    @cached_property
    def candidates(self) -> geopandas.GeoDataFrame:
        """Every candidate, whatever its score; same columns and order as :attr:`detections`."""
        return self._frame(self._order)

    def _frame(self, index: np.ndarray) -> geopandas.GeoDataFrame:
        import geopandas

        xy = self.points[index]
        return geopandas.GeoDataFrame(
            {"score": self.scores[index], "x": xy[:, 0], "y": xy[:, 1]},
            geometry=geopandas.points_from_xy(xy[:, 0], xy[:, 1]),
        )

    def with_threshold(self, threshold: float) -> MitosisResult:
        """The same candidates counted at another ``threshold`` (no detector run)."""
        return dataclasses.replace(self, threshold=threshold)

    # -- areas ------------------------------------------------------------------------
    @property
    def mpp(self) -> float:
        """Level-0 resolution of the slide, µm/px (the unit of every coordinate here)."""
        return self.slide_mpp

    @cached_property
    def tissue_area_mm2(self) -> float:
        """Area of the tissue searched, mm²."""
        return float(self.tissue.area_mm2)

    @property
    def density_per_mm2(self) -> float:
        """Mitotic figures per mm² of tissue; 0 when there is no tissue."""
        area = self.tissue_area_mm2
        return self.count / area if area > 0 else 0.0

    @cached_property
    def hotspot(self) -> Hotspot:
        """The 2.37 mm² (10 HPF) square in tissue with the most mitotic figures.

        See :func:`wsimito.hotspot.find_hotspot`; call it directly for another
        window area, raster step or minimum tissue fraction.
        """
        return find_hotspot(self.points[self._detected], self.tissue, self.slide_mpp)

    # -- exports ---------------------------------------------------------------------
    def to_geo_dict(self, *, include_tissue: bool = True, include_hotspot: bool = True) -> dict:
        """The QuPath-ready GeoJSON FeatureCollection that :meth:`to_geojson` writes, as a dict."""
        return feature_collection(
            self, include_tissue=include_tissue, include_hotspot=include_hotspot
        )

    def to_geojson(
        self, path: str | os.PathLike, *, include_tissue: bool = True, include_hotspot: bool = True
    ) -> Path:
        """Write the detections (and tissue outline, hotspot) as QuPath-ready GeoJSON.

        Coordinates are level-0 px minus ``bounds_offset``, as QuPath expects.
        Drag the file onto the slide in QuPath to import it. The file appears
        complete or not at all. Returns the path written.
        """
        return write_geojson(
            self, path, include_tissue=include_tissue, include_hotspot=include_hotspot
        )

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the detections as CSV: ``id, x, y`` (level-0 px), ``x_um, y_um`` (µm from
        the slide's top-left corner) and ``score``, in the order of :attr:`detections`."""
        index = self._detected
        xy = self.points[index]
        ids = point_ids(self.slide_name, xy)
        with atomic_write(path, newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "x", "y", "x_um", "y_um", "score"])
            for uid, (x, y), score in zip(
                ids, xy.tolist(), self.scores[index].tolist(), strict=True
            ):
                writer.writerow(
                    [
                        uid,
                        repr(x),
                        repr(y),
                        repr(x * self.slide_mpp),
                        repr(y * self.slide_mpp),
                        repr(score),
                    ]
                )
        return Path(path)

    def to_sliderunner(self, path: str | os.PathLike) -> Path:
        """Write the detections as a SlideRunner / MIDOG SQLite database (replaces ``path``).

        See :func:`wsimito.io.sliderunner.write_sliderunner`. Returns the path written.
        """
        detections = self.detections
        return write_sliderunner(
            path,
            np.column_stack([detections["x"].to_numpy(), detections["y"].to_numpy()]),
            scores=detections["score"].to_numpy(),
            slide_name=self.slide_name,
            slide_size=self.slide_dimensions,
            slide_directory=(
                os.path.dirname(os.path.realpath(self.slide_path)) if self.slide_path else ""
            ),
            person=f"wsimito/{self.detector_name}",
        )

    # -- reporting -------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """One flat row of numbers and names, e.g. for a table of many slides.

        Keys: ``slide``, ``count``, ``candidates``, ``threshold``,
        ``tissue_area_mm2``, ``density_per_mm2`` (per mm² of tissue),
        ``hotspot_count``, ``hotspot_area_mm2``, ``hotspot_count_per_10hpf``
        (``None`` when the whole tissue was counted), ``hotspot_whole_tissue``,
        ``hotspot_tissue_fraction``, ``detector``, ``training_data``,
        ``intended_use``, ``mpp`` and ``detector_mpp`` (µm/px), ``tiles``,
        ``seconds``, ``tiles_per_s``, ``skipped_tiles`` (how many).
        """
        spot = self.hotspot
        meta = self.detector_metadata
        return {
            "slide": self.slide_name,
            "count": self.count,
            "candidates": len(self.points),
            "threshold": self.threshold,
            "tissue_area_mm2": self.tissue_area_mm2,
            "density_per_mm2": self.density_per_mm2,
            "hotspot_count": spot.count,
            "hotspot_area_mm2": spot.area_mm2,
            "hotspot_count_per_10hpf": spot.count_per_10hpf,
            "hotspot_whole_tissue": spot.whole_tissue,
            "hotspot_tissue_fraction": spot.tissue_fraction,
            "detector": self.detector_name,
            "training_data": meta.get("training_data"),
            "intended_use": meta.get("intended_use"),
            "mpp": self.slide_mpp,
            "detector_mpp": self.detector_mpp,
            "tiles": self.timing.get("tiles"),
            "seconds": self.timing.get("seconds"),
            "tiles_per_s": self.timing.get("tiles_per_s"),
            "skipped_tiles": len(self.skipped_tiles),
        }

    def __repr__(self) -> str:
        spot = self.hotspot
        where = "whole tissue" if spot.whole_tissue else "per 10 HPF"
        return (
            f"<MitosisResult {self.slide_name}: {self.count} mitotic figures at threshold "
            f"{self.threshold:g}, {self.tissue_area_mm2:.3g} mm² tissue, "
            f"{self.density_per_mm2:.3g}/mm², hotspot {spot.count} ({where}), "
            f"detector {self.detector_name}>"
        )

    def _repr_html_(self) -> str:
        """The overview with tissue, hotspot and detections drawn, the summary, and the
        detector's intended use."""
        buf = io.BytesIO()
        Image.fromarray(self._overview()).save(buf, format="PNG")
        b64 = base64.b64encode(buf.getvalue()).decode()
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(key)}</th>"
            f"<td style='text-align:left'>{html.escape(_format(value))}</td></tr>"
            for key, value in self.summary().items()
        )
        use = self.detector_metadata.get("intended_use")
        note = (
            f"<p><b>Detector {html.escape(self.detector_name)}</b>: intended use: "
            f"{html.escape(str(use))}; trained on "
            f"{html.escape(str(self.detector_metadata.get('training_data', 'unknown data')))}.</p>"
            if use
            else f"<p><b>Detector {html.escape(self.detector_name)}</b> states no intended use.</p>"
        )
        return (
            f"<div><div style='display:flex;gap:1em;align-items:flex-start'>"
            f"<img src='data:image/png;base64,{b64}' alt='detections on {html.escape(self.slide_name)}'/>"
            f"<table>{rows}</table></div>{note}</div>"
        )

    def _overview(self) -> np.ndarray:
        """RGB overview, longest side 512 px: tissue outline (green), hotspot (orange),
        detections (red rings with a white halo)."""
        width, height = self.slide_dimensions
        factor = _PREVIEW_SIZE / max(width, height)
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        if self.thumbnail is not None:
            image = Image.fromarray(np.asarray(self.thumbnail, dtype=np.uint8)).convert("RGB")
            image = image.resize(size, Image.Resampling.BILINEAR)
        else:
            image = Image.new("RGB", size, (255, 255, 255))
        draw = ImageDraw.Draw(image)
        sx, sy = size[0] / width, size[1] / height

        def ring(coords: np.ndarray, color: tuple[int, int, int], w: int) -> None:
            draw.line([(x * sx, y * sy) for x, y in coords], fill=color, width=w)

        for poly in self.tissue.polygons.geometry:
            ring(np.asarray(poly.exterior.coords), TISSUE_COLOR, 1)
            for hole in poly.interiors:
                ring(np.asarray(hole.coords), TISSUE_COLOR, 1)
        spot = self.hotspot
        if not spot.whole_tissue:
            ring(np.asarray(spot.polygon.exterior.coords), HOTSPOT_COLOR, 2)
        r = _DOT_RADIUS
        for x, y in self.points[self._detected].tolist():
            u, v = x * sx, y * sy
            draw.ellipse(
                (u - r - 1, v - r - 1, u + r + 1, v + r + 1), outline=(255, 255, 255), width=1
            )
            draw.ellipse((u - r, v - r, u + r, v + r), outline=MITOSIS_COLOR, width=2)
        return np.asarray(image)


def _frozen_array(value: Any, name: str) -> np.ndarray:
    """A read-only float64 array; copies unless ``value`` already is one."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.flags.writeable or not arr.flags.c_contiguous:
        arr = np.array(arr, dtype=np.float64, order="C")
        arr.setflags(write=False)
    if arr.ndim == 0:
        raise ValueError(f"{name} must be an array, got a scalar")
    return arr


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "n/a" if value is None else str(value)


__all__ = ["MitosisResult"]
