"""`MitosisResult`: what :func:`wsimito.count_mitoses` found on one slide.

It holds every candidate detection (level-0 px and score) with the decision
threshold and the tissue that was analysed, so the count, the density, the
hotspot and the exports all follow from one rule (:data:`COUNTING_RULE`) and
can be redone at another threshold without running the detector again
(:meth:`MitosisResult.with_threshold`).
"""

from __future__ import annotations

import dataclasses
import html
import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import shapely

from .classes import (
    CANDIDATE_CLASS,
    CANDIDATE_COLOR,
    HOTSPOT_CLASS,
    HOTSPOT_COLOR,
    MITOSIS_CLASS,
    MITOSIS_COLOR,
    TISSUE_CLASS,
    TISSUE_COLOR,
)
from .hotspot import Hotspot, find_hotspot
from .io.geojson import (
    feature_collection,
    point_features,
    point_ids,
    polygon_feature,
    write_geojson,
)
from .io.sliderunner import write_sliderunner
from .io.tables import write_points
from .overview import PointLayer, draw_overview, html_preview

if TYPE_CHECKING:
    import geopandas
    import matplotlib.axes
    import matplotlib.figure

    from .slide import Slide
    from .tissue import Tissue

# Longest side of the overview drawn by ``_repr_html_``, px.
_PREVIEW_SIZE = 512
_DOT_RADIUS = 3


class CountedPoints(NamedTuple):
    """The mitotic figures a result counts, in its deterministic order.

    Attributes
    ----------
    xy : numpy.ndarray
        ``(N, 2)`` level-0 px.
    scores : numpy.ndarray
        ``(N,)`` scores in [0, 1].
    ids : list of str
        Stable ids (the GeoJSON feature ids; uuid5 of the slide name and point).
    """

    xy: np.ndarray
    scores: np.ndarray
    ids: list[str]


@dataclass(frozen=True, eq=False, kw_only=True, repr=False)
class MitosisResult:
    """Mitotic figures found on one slide, with the tissue they were counted in.

    **What is counted.** A candidate is a mitotic figure when its score is at
    least ``threshold`` *and* its point lies in the analysed tissue: the
    tissue searched minus the cores of tiles that could not be read
    (:attr:`analysed_tissue`). The count, the density, the hotspot, the
    GeoJSON measurements, the CSV, the SlideRunner database and
    :meth:`summary` all use this one rule; every other candidate stays in
    :attr:`candidates` (column ``counted``) for inspection.

    Parameters
    ----------
    points : numpy.ndarray
        ``(N, 2)`` level-0 px ``(x, y)`` of every candidate detection after
        merging across tiles, whatever its score and wherever it lies.
    scores : numpy.ndarray
        ``(N,)`` scores in [0, 1].
    threshold : float
        Decision threshold on the score, in [0, 1].
    slide_name, slide_path : str, str or None
        The slide's short name and file path (``None`` for in-memory slides).
    slide_dimensions : tuple of int
        Level-0 ``(width, height)``, px.
    slide_mpp : float
        Level-0 resolution used, µm/px.
    mpp_file, mpp_given : float or None
        The resolution the file states and the one given by the caller (µm/px),
        when they exist; both are kept when they disagree.
    bounds_offset : tuple of float
        OpenSlide ``bounds-x``/``bounds-y`` in level-0 px (``(0, 0)`` if none);
        QuPath coordinates are level-0 px minus this offset.
    tissue : Tissue
        The tissue that was searched (:class:`wsimito.tissue.Tissue`).
    detector_name, detector_metadata : str, dict
        The detector and what it says about itself, e.g.
        ``{"training_data": "synthetic", "intended_use": "...", "weights_sha256": "..."}``.
    detector_mpp : float
        Resolution the detector ran at, µm/px.
    timing : dict
        ``{"tiles": int, "seconds": float, "tissue_seconds": float, "tiles_per_s": float,
        "read_wait_seconds": float, "detect_seconds": float, "merge_seconds": float}``:
        the whole call, tissue detection, and the main thread's time waiting for the
        reader, in ``detect`` (with the stain transform) and merging points.
    skipped_tiles : list of tuple
        Level-0 boxes ``(x, y, w, h)`` px of tiles that could not be read.
    skipped_cores : list of tuple
        Level-0 ``(x0, y0, x1, y1)`` px of their cores, which leave the analysed tissue.
    thumbnail : numpy.ndarray or None
        A small ``(h, w, 3)`` uint8 RGB overview of the whole slide.

    Examples
    --------
    Usually :func:`wsimito.count_mitoses` makes the result:

    >>> result = wsimito.count_mitoses("slide.svs")        # doctest: +SKIP
    >>> result.count, f"{result.density_per_mm2:.2f}/mm²"  # doctest: +SKIP
    >>> result.to_geojson("slide.geojson")                 # doctest: +SKIP

    Candidates from elsewhere can be counted too. Here, on a 4 x 4 mm image at
    2 µm/px that is all tissue, three candidates (level-0 px), two of them at
    or above the threshold:

    >>> import numpy as np
    >>> import wsimito
    >>> from wsimito.result import MitosisResult
    >>> slide = wsimito.open_slide(np.zeros((2000, 2000, 3), np.uint8), mpp=2.0)
    >>> result = MitosisResult(
    ...     points=np.array([[100.0, 200.0], [1500.0, 900.0], [1800.0, 1900.0]]),
    ...     scores=np.array([0.9, 0.7, 0.3]),
    ...     threshold=0.5,
    ...     slide_name="example",
    ...     slide_dimensions=slide.dimensions,
    ...     slide_mpp=slide.mpp,
    ...     tissue=wsimito.Tissue.full(slide),
    ...     detector_name="external",
    ...     detector_mpp=0.25,
    ... )
    >>> result.count, result.tissue_area_mm2, result.density_per_mm2  # figures, mm², per mm²
    (2, 16.0, 0.125)
    >>> result.with_threshold(0.2).count
    3
    """

    points: np.ndarray
    scores: np.ndarray
    threshold: float
    slide_name: str
    slide_path: str | None = None
    slide_dimensions: tuple[int, int]
    slide_mpp: float
    mpp_file: float | None = None
    mpp_given: float | None = None
    bounds_offset: tuple[float, float] = (0.0, 0.0)
    tissue: Tissue
    detector_name: str
    detector_metadata: dict[str, Any] = field(default_factory=dict)
    detector_mpp: float
    timing: dict[str, Any] = field(default_factory=dict)
    skipped_tiles: list[tuple[float, float, float, float]] = field(default_factory=list)
    skipped_cores: list[tuple[float, float, float, float]] = field(default_factory=list)
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
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be a score in [0, 1], got {self.threshold!r}")
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
            ("skipped_cores", [tuple(float(v) for v in b) for b in self.skipped_cores]),
        ):
            object.__setattr__(self, name, value)

    # -- reloading -------------------------------------------------------------------
    @classmethod
    def from_geojson(
        cls,
        path: str | os.PathLike[str],
        slide: Slide | str | os.PathLike[str],
        *,
        threshold: float | None = None,
    ) -> MitosisResult:
        """Reload a result from GeoJSON that :meth:`to_geojson` (or QuPath) wrote.

        The "Tissue" annotation of the file (else all its polygons, see
        :func:`wsimito.io.qupath.tissue_from_geojson`) becomes the analysed
        tissue, so a tissue outline edited in QuPath and exported again is
        counted as edited. Every point of class "Mitotic figure" (and, when the file has
        them, "Candidate (not counted)") is a candidate with its ``score``
        measurement; the count follows the usual rule. Files that QuPath
        exported no longer carry wsimito's ``"wsimito"`` member: their
        coordinates are taken relative to the slide's bounds (as QuPath shows
        them), and the threshold defaults to the lowest score among the
        "Mitotic figure" points, so the candidates the run did not count stay
        uncounted.

        Parameters
        ----------
        path : str or os.PathLike
            The GeoJSON file.
        slide : Slide, str or os.PathLike
            The slide the file belongs to (for its size, resolution and bounds).
        threshold : float, optional
            Decision threshold in [0, 1]; by default the one the file records
            (for files without wsimito's metadata: the lowest score of its
            "Mitotic figure" points).

        Returns
        -------
        MitosisResult
            Without a thumbnail or timing; ``detector_name`` and metadata as recorded.

        Raises
        ------
        ValueError
            When the file belongs to a slide of another size, or holds no polygon.
        """
        from .io.qupath import load_json, read_qupath, recorded_offset, tissue_from_geojson
        from .slide import Slide, open_slide

        if isinstance(slide, Slide):
            handle, own = slide, False
        else:
            handle, own = open_slide(slide), True
        try:
            raw = load_json(path)
            meta = raw.get("wsimito") if isinstance(raw, dict) else None
            meta = meta if isinstance(meta, dict) else {}
            dims = tuple(int(v) for v in meta.get("slide_dimensions", handle.dimensions))
            if dims != tuple(handle.dimensions):
                raise ValueError(
                    f"{path} was written for a {dims[0]}x{dims[1]} px slide, but "
                    f"{handle.name} is {handle.dimensions[0]}x{handle.dimensions[1]} px; pass "
                    "the slide it was counted on"
                )
            cells = read_qupath(path, bounds_offset=recorded_offset(path, handle)).to_frame()
            cells = cells[cells["label"].isin([MITOSIS_CLASS, CANDIDATE_CLASS])]
            scores = (
                cells["score"].to_numpy(dtype=np.float64)
                if "score" in cells
                else np.ones(len(cells))
            )
            scores = np.where(np.isfinite(scores), scores, 1.0)
            # Without wsimito's metadata (a QuPath re-export) the threshold is the lowest
            # score of the points the run counted, so its other candidates stay uncounted.
            counted_there = (cells["label"] == MITOSIS_CLASS).to_numpy()
            floor = float(scores[counted_there].min()) if counted_there.any() else 0.0
            tissue = tissue_from_geojson(path, handle)
            detector_meta = meta.get("detector_metadata")
            return cls(
                points=cells[["x", "y"]].to_numpy(dtype=np.float64),
                scores=scores,
                threshold=float(
                    threshold if threshold is not None else meta.get("threshold", floor)
                ),
                slide_name=handle.name,
                slide_path=handle.path,
                slide_dimensions=handle.dimensions,
                slide_mpp=handle.mpp,
                mpp_file=meta.get("mpp_file"),
                mpp_given=meta.get("mpp_given"),
                bounds_offset=(float(handle.bounds[0]), float(handle.bounds[1])),
                tissue=tissue,
                detector_name=str(meta.get("detector", "unknown (QuPath export)")),
                detector_metadata=detector_meta if isinstance(detector_meta, dict) else {},
                detector_mpp=float(meta.get("detector_mpp") or handle.mpp),
            )
        finally:
            if own:
                handle.close()

    # -- what is counted -------------------------------------------------------------
    @cached_property
    def analysed_tissue(self) -> Tissue:
        """The tissue really analysed: :attr:`tissue` minus the cores of skipped tiles."""
        return self.tissue.without(np.asarray(self.skipped_cores, dtype=np.float64))

    @cached_property
    def in_tissue(self) -> np.ndarray:
        """Whether each candidate lies in the analysed tissue: ``(N,)`` bool."""
        return self.analysed_tissue.contains(self.points)

    @cached_property
    def _order(self) -> np.ndarray:
        """Candidate indices by descending score, then y, then x."""
        return np.lexsort((self.points[:, 0], self.points[:, 1], -self.scores))

    @cached_property
    def _counted(self) -> np.ndarray:
        """Indices of the counted figures, in the deterministic order."""
        order = self._order
        keep = (self.scores[order] >= self.threshold) & self.in_tissue[order]
        return np.asarray(order[keep])

    def counted(self) -> CountedPoints:
        """Give the counted mitotic figures: level-0 points, scores and stable ids.

        This is what every number and export of the result is made of.

        Returns
        -------
        CountedPoints
            ``xy`` ``(N, 2)`` level-0 px, ``scores`` ``(N,)`` and ``ids``, by
            descending score, then y, then x.
        """
        index = self._counted
        xy = self.points[index]
        return CountedPoints(xy, self.scores[index], point_ids(self.slide_name, xy))

    @property
    def count(self) -> int:
        """Number of mitotic figures: score at least ``threshold``, inside the analysed tissue."""
        return int(len(self._counted))

    @cached_property
    def detections(self) -> geopandas.GeoDataFrame:
        """The counted mitotic figures: level-0 px Points with ``score``, ``x``, ``y``.

        Sorted by descending score, then y, then x, so the same run gives the same table.
        """
        return self._frame(self._counted)

    @cached_property
    def candidates(self) -> geopandas.GeoDataFrame:
        """Every candidate, whatever its score and wherever it lies.

        Same columns and order as :attr:`detections`, plus ``in_tissue`` and
        ``counted`` (bool).
        """
        frame = self._frame(self._order)
        inside = self.in_tissue[self._order]
        frame["in_tissue"] = inside
        frame["counted"] = inside & (self.scores[self._order] >= self.threshold)
        return frame

    def _frame(self, index: np.ndarray) -> geopandas.GeoDataFrame:
        import geopandas

        xy = self.points[index]
        return geopandas.GeoDataFrame(
            {"score": self.scores[index], "x": xy[:, 0], "y": xy[:, 1]},
            geometry=geopandas.points_from_xy(xy[:, 0], xy[:, 1]),
        )

    def with_threshold(self, threshold: float) -> MitosisResult:
        """Count the same candidates at another threshold (no detector run).

        Parameters
        ----------
        threshold : float
            Decision threshold on the score, in [0, 1].

        Returns
        -------
        MitosisResult
            A new result; ``self`` is unchanged.
        """
        return dataclasses.replace(self, threshold=threshold)

    # -- areas ------------------------------------------------------------------------
    @property
    def mpp(self) -> float:
        """Level-0 resolution of the slide, µm/px (the unit of every coordinate here)."""
        return self.slide_mpp

    @cached_property
    def tissue_area_mm2(self) -> float:
        """Area of the analysed tissue, mm² (skipped tiles' cores excluded)."""
        return float(self.analysed_tissue.area_mm2)

    @cached_property
    def skipped_area_mm2(self) -> float:
        """Area that could not be read and left the analysis, mm².

        The tissue in the cores of skipped tiles, plus the regions the tissue
        detection could not read (:attr:`Tissue.unread_area_mm2`), which count
        as unknown, not as tissue.
        """
        lost = 0.0
        if self.skipped_cores:
            lost = max(0.0, float(self.tissue.area_mm2) - self.tissue_area_mm2)
        return lost + float(self.tissue.unread_area_mm2)

    @property
    def partial(self) -> bool:
        """True when something could not be read: the result covers less than the slide's tissue."""
        return bool(self.skipped_tiles) or self.tissue.unread_area_mm2 > 0

    @property
    def density_per_mm2(self) -> float:
        """Mitotic figures per mm² of analysed tissue; NaN when no tissue was analysed."""
        area = self.tissue_area_mm2
        return self.count / area if area > 0 else math.nan

    @cached_property
    def hotspot(self) -> Hotspot:
        """The 2.37 mm² (10 HPF) square in analysed tissue with the most mitotic figures.

        See :func:`wsimito.hotspot.find_hotspot`; call it directly for another
        window area, raster step or minimum tissue fraction.
        """
        return find_hotspot(self.points[self._counted], self.analysed_tissue, self.slide_mpp)

    # -- exports ---------------------------------------------------------------------
    def run_metadata(self) -> dict[str, Any]:
        """Give what travels with every export: slide, resolution, detector, threshold, totals.

        Returns
        -------
        dict of str to object
            JSON-ready values; coordinates in exports are level-0 px minus
            ``bounds_offset``, resolutions µm/px, areas mm².
        """
        return {
            "slide": self.slide_name,
            "slide_dimensions": list(self.slide_dimensions),
            "mpp": self.slide_mpp,
            "mpp_file": self.mpp_file,
            "mpp_given": self.mpp_given,
            "bounds_offset": list(self.bounds_offset),
            "coordinates": "level-0 px minus bounds_offset",
            "detector": self.detector_name,
            "detector_metadata": self.detector_metadata,
            "weights_sha256": self.detector_metadata.get("weights_sha256"),
            "detector_mpp": self.detector_mpp,
            "threshold": self.threshold,
            "count": self.count,
            "tissue_area_mm2": self.tissue_area_mm2,
            "density_per_mm2": self.density_per_mm2,
            "counting_rule": COUNTING_RULE,
            "partial": self.partial,
            "skipped_tiles": len(self.skipped_tiles),
            "skipped_area_mm2": self.skipped_area_mm2,
            "wsimito_version": _version(),
        }

    def to_geo_dict(
        self,
        *,
        include_tissue: bool = True,
        include_hotspot: bool = True,
        include_candidates: bool = False,
    ) -> dict[str, Any]:
        """Build the QuPath-ready GeoJSON FeatureCollection that :meth:`to_geojson` writes.

        One ``Point`` detection of class "Mitotic figure" per counted figure
        (with its ``score``), then the analysed tissue as an annotation whose
        measurements are the result's count, area and density, then the
        hotspot window (omitted when the hotspot is the whole tissue: the
        tissue annotation says so). With ``include_candidates``, the other
        candidates follow as detections of class "Candidate (not counted)".

        Parameters
        ----------
        include_tissue : bool
            Add the analysed tissue annotation.
        include_hotspot : bool
            Add the hotspot annotation.
        include_candidates : bool
            Add the candidates that were not counted.

        Returns
        -------
        dict of str to object
            The FeatureCollection; coordinates are level-0 px minus
            ``bounds_offset``.
        """
        offset = self.bounds_offset
        counted = self.counted()
        features = point_features(
            counted.xy, counted.scores, slide_name=self.slide_name, offset=offset, ids=counted.ids
        )
        if include_tissue:
            features.extend(self._tissue_features())
        if include_hotspot:
            features.extend(self._hotspot_features())
        if include_candidates:
            rest = np.setdiff1d(self._order, self._counted, assume_unique=True)
            rest = self._order[np.isin(self._order, rest)]
            features.extend(
                point_features(
                    self.points[rest],
                    self.scores[rest],
                    slide_name=f"{self.slide_name}:candidates",
                    class_name=CANDIDATE_CLASS,
                    color=CANDIDATE_COLOR,
                    offset=offset,
                )
            )
        return feature_collection(features, self.run_metadata())

    def _tissue_features(self) -> list[dict[str, Any]]:
        geometry = self.analysed_tissue.geometry
        if shapely.is_empty(geometry):
            return []
        spot = self.hotspot
        name = f"Tissue: {_figures(self.count)} in {self.tissue_area_mm2:.3g} mm²"
        if spot.whole_tissue:
            name += " (whole tissue, under 10 HPF: the hotspot is the whole tissue)"
        if self.partial:
            name += f" (partial: {self.skipped_area_mm2:.3g} mm² unread)"
        return [
            polygon_feature(
                geometry,
                name=name,
                class_name=TISSUE_CLASS,
                color=TISSUE_COLOR,
                key=f"{self.slide_name}:tissue",
                offset=self.bounds_offset,
                measurements={
                    "count": self.count,
                    "area_mm2": self.tissue_area_mm2,
                    "density_per_mm2": self.density_per_mm2,
                    "skipped_area_mm2": self.skipped_area_mm2,
                },
            )
        ]

    def _hotspot_features(self) -> list[dict[str, Any]]:
        spot = self.hotspot
        if spot.whole_tissue or shapely.is_empty(spot.polygon):
            return []
        measurements = {
            "count": spot.count,
            "area_mm2": spot.area_mm2,
            "tissue_fraction": spot.tissue_fraction,
            "density_per_mm2": spot.density_per_mm2,
        }
        if spot.count_per_10hpf is not None:
            measurements["count_per_10hpf"] = spot.count_per_10hpf
        return [
            polygon_feature(
                spot.polygon,
                name=f"Hotspot: {_figures(spot.count)} in {spot.area_mm2:g} mm²",
                class_name=HOTSPOT_CLASS,
                color=HOTSPOT_COLOR,
                key=f"{self.slide_name}:hotspot:"
                f"{shapely.to_wkt(spot.polygon, rounding_precision=1)}",
                offset=self.bounds_offset,
                measurements=measurements,
            )
        ]

    def to_geojson(
        self,
        path: str | os.PathLike[str],
        *,
        include_tissue: bool = True,
        include_hotspot: bool = True,
        include_candidates: bool = False,
    ) -> Path:
        """Write the detections (and tissue outline, hotspot) as QuPath-ready GeoJSON.

        Coordinates are level-0 px minus ``bounds_offset``, as QuPath expects.
        Drag the file onto the slide in QuPath to import it. The file appears
        complete or not at all.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write (replaced if it exists).
        include_tissue : bool
            Add the analysed tissue annotation.
        include_hotspot : bool
            Add the hotspot annotation.
        include_candidates : bool
            Add the candidates that were not counted.

        Returns
        -------
        pathlib.Path
            The path written.
        """
        collection = self.to_geo_dict(
            include_tissue=include_tissue,
            include_hotspot=include_hotspot,
            include_candidates=include_candidates,
        )
        return write_geojson(path, collection)

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write the counted figures as CSV, in the order of :attr:`detections`.

        Columns: ``id``, ``x``, ``y`` (level-0 px), ``x_um``, ``y_um`` (µm from
        the slide's top-left corner) and ``score``.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write (replaced if it exists).

        Returns
        -------
        pathlib.Path
            The path written.
        """
        counted = self.counted()
        return write_points(path, counted.xy, counted.scores, mpp=self.slide_mpp, ids=counted.ids)

    def to_sliderunner(self, path: str | os.PathLike[str]) -> Path:
        """Write the counted figures as a SlideRunner / MIDOG SQLite database.

        See :func:`wsimito.io.sliderunner.write_sliderunner`.

        Parameters
        ----------
        path : str or os.PathLike
            The database file to write (replaced if it exists).

        Returns
        -------
        pathlib.Path
            The path written.
        """
        counted = self.counted()
        return write_sliderunner(
            path,
            counted.xy,
            scores=counted.scores,
            slide_name=self.slide_name,
            slide_size=self.slide_dimensions,
            slide_directory=(
                os.path.dirname(os.path.realpath(self.slide_path)) if self.slide_path else ""
            ),
            person=f"wsimito/{self.detector_name}",
        )

    # -- plots and galleries ---------------------------------------------------------
    def plot(self, **kwargs: Any) -> matplotlib.axes.Axes:
        """Plot the thumbnail with tissue, hotspot and counted figures coloured by score.

        Needs matplotlib (``pip install "wsimito[plot]"``).

        Parameters
        ----------
        **kwargs
            Passed to :func:`wsimito.plot.plot_slide` (``ax``, ``tiles``,
            ``candidates``, ...).

        Returns
        -------
        matplotlib.axes.Axes
            Axes in level-0 px.
        """
        from .plot import plot_slide

        return plot_slide(self, **kwargs)

    def plot_density(self, **kwargs: Any) -> matplotlib.axes.Axes:
        """Plot a heat map of counted figures per mm² of analysed tissue.

        Needs matplotlib.

        Parameters
        ----------
        **kwargs
            Passed to :func:`wsimito.plot.plot_density` (``cell_um``,
            ``min_tissue``, ``ax``, ...).

        Returns
        -------
        matplotlib.axes.Axes
            Axes in level-0 px.
        """
        from .plot import plot_density

        return plot_density(self, **kwargs)

    def gallery(self, slide: Slide | None = None, **kwargs: Any) -> matplotlib.figure.Figure:
        """Show crops around the top-scoring detections, each titled with its score.

        Needs matplotlib. To write the gallery as PNG or HTML without
        matplotlib, use :func:`wsimito.gallery.write_gallery` with
        :func:`wsimito.gallery.detection_section`.

        Parameters
        ----------
        slide : Slide, optional
            The slide the result was counted on; by default its file is opened.
        **kwargs
            Passed to :func:`wsimito.plot.detection_gallery` (``n``, ``which``,
            ``size_um``, ``mpp``, ``columns``).

        Returns
        -------
        matplotlib.figure.Figure
            The figure.
        """
        from .plot import detection_gallery

        return detection_gallery(self, slide, **kwargs)

    # -- reporting -------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Give one flat row of numbers and names, e.g. for a table of many slides.

        Returns
        -------
        dict of str to object
            Keys: ``slide``, ``count``, ``candidates``, ``candidates_outside_tissue``,
            ``threshold``, ``tissue_area_mm2`` (analysed), ``density_per_mm2`` (per
            mm² of analysed tissue; NaN when none), ``hotspot_count``,
            ``hotspot_area_mm2``, ``hotspot_count_per_10hpf`` (``None`` when the
            whole tissue was counted), ``hotspot_whole_tissue``,
            ``hotspot_tissue_fraction``, ``detector``, ``weights_sha256``,
            ``training_data``, ``intended_use``, ``mpp``, ``mpp_file``,
            ``mpp_given`` and ``detector_mpp`` (µm/px), ``tiles``, ``seconds``,
            ``tiles_per_s``, ``skipped_tiles`` (how many), ``skipped_area_mm2`` and
            ``partial``.
        """
        spot = self.hotspot
        meta = self.detector_metadata
        return {
            "slide": self.slide_name,
            "count": self.count,
            "candidates": len(self.points),
            "candidates_outside_tissue": int(np.count_nonzero(~self.in_tissue)),
            "threshold": self.threshold,
            "tissue_area_mm2": self.tissue_area_mm2,
            "density_per_mm2": self.density_per_mm2,
            "hotspot_count": spot.count,
            "hotspot_area_mm2": spot.area_mm2,
            "hotspot_count_per_10hpf": spot.count_per_10hpf,
            "hotspot_whole_tissue": spot.whole_tissue,
            "hotspot_tissue_fraction": spot.tissue_fraction,
            "detector": self.detector_name,
            "weights_sha256": meta.get("weights_sha256"),
            "training_data": meta.get("training_data"),
            "intended_use": meta.get("intended_use"),
            "mpp": self.slide_mpp,
            "mpp_file": self.mpp_file,
            "mpp_given": self.mpp_given,
            "detector_mpp": self.detector_mpp,
            "tiles": self.timing.get("tiles"),
            "seconds": self.timing.get("seconds"),
            "tiles_per_s": self.timing.get("tiles_per_s"),
            "skipped_tiles": len(self.skipped_tiles),
            "skipped_area_mm2": self.skipped_area_mm2,
            "partial": self.partial,
        }

    def __repr__(self) -> str:
        spot = self.hotspot
        where = "whole tissue" if spot.whole_tissue else "per 10 HPF"
        partial = f", PARTIAL ({self.skipped_area_mm2:.3g} mm² unread)" if self.partial else ""
        return (
            f"<MitosisResult {self.slide_name}: {_figures(self.count)} at threshold "
            f"{self.threshold:g}, {self.tissue_area_mm2:.3g} mm² tissue, "
            f"{self.density_per_mm2:.3g}/mm², hotspot {spot.count} ({where}), "
            f"detector {self.detector_name}{partial}>"
        )

    def _repr_html_(self) -> str:
        """Show the overview with tissue, hotspot and detections, the summary, and intended use."""
        rows = [(key, _format(value)) for key, value in self.summary().items()]
        use = self.detector_metadata.get("intended_use")
        name = html.escape(self.detector_name)
        if use:
            trained = self.detector_metadata.get("training_data", "unknown data")
            note = (
                f"<p><b>Detector {name}</b>: intended use: {html.escape(str(use))}; trained on "
                f"{html.escape(str(trained))}.</p>"
            )
        else:
            note = f"<p><b>Detector {name}</b> states no intended use.</p>"
        return html_preview(self._overview(), rows, note)

    def _overview(self) -> np.ndarray:
        """Draw the RGB overview, longest side 512 px.

        Analysed tissue in green, hotspot in orange, counted figures as red
        rings with a white halo.
        """
        spot = self.hotspot
        return draw_overview(
            self.thumbnail,
            self.slide_dimensions,
            size=_PREVIEW_SIZE,
            tissue=self.analysed_tissue.geometry,
            hotspot=None if spot.whole_tissue else spot.polygon,
            layers=[PointLayer(self.points[self._counted], MITOSIS_COLOR, _DOT_RADIUS)],
        )


#: The one rule by which a candidate is counted, as stated in every export.
COUNTING_RULE = (
    "a candidate is a mitotic figure when its score >= threshold and its point lies in the "
    "analysed tissue (the tissue searched minus the cores of tiles that could not be read)"
)


def _figures(n: int) -> str:
    return f"{n} mitotic figure" + ("" if n == 1 else "s")


def _version() -> str:
    from . import __version__

    return __version__


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


__all__ = ["COUNTING_RULE", "CountedPoints", "MitosisResult"]
