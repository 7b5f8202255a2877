"""Hard-negative mining: a detector's own false positives, for training and review.

:func:`mine_hard_negatives` runs any :class:`wsimito.Detector` over slides or
region-of-interest images through :func:`wsimito.count_mitoses`, at a low
threshold, and sorts every candidate it returns:

- a candidate within ``radius_um`` of an annotated mitotic figure is a
  **hit** (the detector was right, or near enough);
- a candidate farther than ``radius_um`` from every annotated figure is a
  **hard negative**, kept with its score;
- on a slide declared mitosis-free (``mitosis_free=``), every candidate is a
  hard negative;
- annotated look-alikes join the hard negatives (source ``"annotation"``,
  no score), whether the detector fired on them or not.

The result (:class:`MinedCandidates`) is one table; it writes the negatives
as QuPath GeoJSON and as a SlideRunner database, so that a pathologist can
review them, and :func:`candidate_patches` reads the patches around them
through :class:`wsimito.reader.TileReader`, the tile reader
:func:`wsimito.count_mitoses` uses.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
from scipy.spatial import cKDTree

from ..classes import LOOKALIKE_COLOR, MITOSIS_CLASS, MITOSIS_COLOR
from ..evaluate import MIDOG_RADIUS_UM
from ..slide import Slide, open_slide

if TYPE_CHECKING:
    from ..detect import Detector
    from ..io.annotation_set import Annotations

#: Class name given to mined hard negatives (one of the look-alike names readers know).
HARD_NEGATIVE_CLASS = "Hard negative"
#: Values of the ``kind`` column of :attr:`MinedCandidates.cells`.
MinedKind = Literal["hit", "hard negative", "lookalike"]

SlideSource = str | os.PathLike[str] | Slide


@dataclass
class MinedCandidates:
    """Every candidate of a mining run, sorted into hits and hard negatives.

    Attributes
    ----------
    cells : pandas.DataFrame
        One row per candidate or annotated look-alike: ``slide`` (name), ``x``,
        ``y`` (level-0 px), ``score`` (the detector's; NaN for annotated
        look-alikes it did not return), ``kind`` (``"hit"``, ``"hard
        negative"`` or ``"lookalike"``), ``source`` (``"detector"`` or
        ``"annotation"``), ``label`` (the class name written for review),
        ``distance_um`` (to the nearest annotated mitotic figure, µm; inf
        where there is none) and ``in_tissue`` (bool).
    slides : pandas.DataFrame
        One row per slide: ``slide`` (name), ``path`` (or None), ``width``,
        ``height`` (level-0 px), ``mpp`` (µm/px), ``mitosis_free`` (bool),
        ``figures`` (annotated mitotic figures), ``tissue_area_mm2``.
    threshold : float
        Lowest detector score kept, in [0, 1].
    radius_um : float
        Hit radius, µm.
    detector : str
        The detector's name.
    figures : dict of str to numpy.ndarray
        Per slide name, the annotated mitotic figures the candidates were judged
        against: ``(F, 2)`` float64 level-0 px (none on a mitosis-free slide).
    """

    cells: pd.DataFrame
    slides: pd.DataFrame
    threshold: float
    radius_um: float
    detector: str
    figures: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def negatives(self) -> pd.DataFrame:
        """The hard negatives and annotated look-alikes (rows of :attr:`cells`)."""
        return self.cells[self.cells["kind"] != "hit"].reset_index(drop=True)

    @property
    def hits(self) -> pd.DataFrame:
        """Candidates within the hit radius of an annotated mitotic figure."""
        return self.cells[self.cells["kind"] == "hit"].reset_index(drop=True)

    def summary(self) -> pd.DataFrame:
        """Count hits, hard negatives, annotated look-alikes and figures per slide.

        Returns
        -------
        pandas.DataFrame
            One row per slide: ``slide``, ``mitosis_free``, ``figures``,
            ``tissue_area_mm2`` (mm²) and the counts ``hit``, ``hard negative``
            and ``lookalike``.
        """
        counts = (
            self.cells.groupby(["slide", "kind"]).size().unstack(fill_value=0)
            if len(self.cells)
            else pd.DataFrame()
        )
        table = self.slides[["slide", "mitosis_free", "figures", "tissue_area_mm2"]].copy()
        for kind in ("hit", "hard negative", "lookalike"):
            table[kind] = table["slide"].map(counts.get(kind, {})).fillna(0)
            table[kind] = table[kind].astype(int)
        return table

    def training_cells(self) -> pd.DataFrame:
        """Return the rows as cells for :class:`~wsimito.train.BalancedSampler`.

        Returns
        -------
        pandas.DataFrame
            A copy of :attr:`cells` whose ``kind`` is ``"mitosis"`` for hits and
            ``"lookalike"`` for everything else.
        """
        cells = self.cells.copy()
        cells["kind"] = np.where(cells["kind"] == "hit", "mitosis", "lookalike")
        return cells

    def to_geojson(
        self, path: str | os.PathLike[str], slide: str | None = None, *, include_hits: bool = False
    ) -> Path:
        """Write the negatives of one slide as QuPath point annotations.

        Parameters
        ----------
        path : str or os.PathLike
            The ``.geojson`` file (written atomically).
        slide : str, optional
            The slide's name; may be left out when the run had one slide.
        include_hits : bool
            Also write the hits (class "Mitotic figure").

        Returns
        -------
        pathlib.Path
            ``path``.

        Raises
        ------
        ValueError
            When ``slide`` is missing and the run had several slides, or is unknown.
        """
        from ..io.geojson import feature_collection, point_features, write_geojson

        name = self._one_slide(slide)
        rows = self._rows(name, include_hits)
        features = []
        for label, group in rows.groupby("label", sort=True):
            color = MITOSIS_COLOR if label == MITOSIS_CLASS else LOOKALIKE_COLOR
            features += point_features(
                group[["x", "y"]].to_numpy(),
                np.nan_to_num(group["score"].to_numpy(), nan=0.0),
                slide_name=name,
                class_name=str(label),
                color=color,
                object_type="annotation",
            )
        metadata = {
            "slide": name,
            "mined_by": self.detector,
            "threshold": self.threshold,
            "radius_um": self.radius_um,
            "coordinates": "level-0 px",
            "note": "hard negatives mined for review; a score of 0 marks an annotated look-alike "
            "the detector did not return",
        }
        return write_geojson(path, feature_collection(features, metadata))

    def to_annotations(self, *, include_hits: bool = False) -> Annotations:
        """Return the negatives (and optionally the hits) as annotations.

        Parameters
        ----------
        include_hits : bool
            Also include the hits (class "Mitotic figure").

        Returns
        -------
        Annotations
            One cell per row (``slide``, ``x``, ``y`` in level-0 px, ``label``,
            ``score``) on every mined slide.
        """
        from ..io.annotations import Annotations

        rows = self.cells if include_hits else self.negatives
        cells = rows[["slide", "x", "y", "label", "score"]].copy()
        slides = self.slides[["slide", "width", "height", "mpp"]].copy()
        return Annotations(cells, slides, source=f"hard negatives mined by {self.detector}")

    def to_sliderunner(self, path: str | os.PathLike[str], *, include_hits: bool = False) -> Path:
        """Write the negatives of every slide to a SlideRunner database (atomically).

        Parameters
        ----------
        path : str or os.PathLike
            The SlideRunner database (SQLite) file.
        include_hits : bool
            Also write the hits (class "Mitotic figure").

        Returns
        -------
        pathlib.Path
            ``path``.
        """
        from ..io.sliderunner import write_sliderunner

        return write_sliderunner(
            path, self.to_annotations(include_hits=include_hits), person=f"{self.detector}"
        )

    def _one_slide(self, slide: str | None) -> str:
        names = self.slides["slide"].tolist()
        if slide is None:
            if len(names) != 1:
                raise ValueError(f"this run has {len(names)} slides; pass slide= one of {names}")
            return str(names[0])
        if slide not in names:
            raise ValueError(f"slide {slide!r} was not mined; the slides are {names}")
        return slide

    def _rows(self, slide: str, include_hits: bool) -> pd.DataFrame:
        rows = self.cells[self.cells["slide"] == slide]
        return rows if include_hits else rows[rows["kind"] != "hit"]


def _as_slides(
    slides: Mapping[str, SlideSource] | Sequence[SlideSource] | SlideSource,
    mpp: float | Mapping[str, float] | None,
) -> list[tuple[str, Slide, bool]]:
    """(name, open slide, whether we opened it) for each slide given."""
    if isinstance(slides, (str, os.PathLike, Slide)):
        slides = [slides]
    items: Iterable[tuple[str | None, SlideSource]]
    if isinstance(slides, Mapping):
        items = [(str(k), v) for k, v in slides.items()]
    else:
        items = [(None, s) for s in slides]
    out: list[tuple[str, Slide, bool]] = []
    for name, source in items:
        if isinstance(source, Slide):
            slide, own = source, False
        else:
            key = name or Path(source).name
            given = mpp.get(key) if isinstance(mpp, Mapping) else mpp
            slide, own = open_slide(source, mpp=given), True
        out.append((name or slide.name, slide, own))
    names = [n for n, _, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(
            f"slide names must be unique, got {names}; pass a mapping {{name: slide}} instead"
        )
    return out


def _annotation_frame(annotations: Any) -> pd.DataFrame:
    """Cells with slide, x, y, label and kind from an Annotations or a DataFrame."""
    if annotations is None:
        return pd.DataFrame(columns=["slide", "x", "y", "label", "kind"])
    frame = annotations.to_frame() if hasattr(annotations, "to_frame") else annotations
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            "annotations must be a wsimito.Annotations or a DataFrame with columns slide, x, y "
            f"and kind (or label); got {type(annotations).__name__}"
        )
    missing = [c for c in ("slide", "x", "y") if c not in frame]
    if missing or not ({"kind", "label"} & set(frame.columns)):
        raise ValueError(
            f"annotations need columns slide, x, y (level-0 px) and kind or label; they have "
            f"{list(frame.columns)}"
        )
    frame = frame.copy()
    if "kind" not in frame:
        from ..classes import LOOKALIKE_NAMES, MITOSIS_NAMES

        key = frame["label"].astype(str).str.strip().str.lower()
        frame["kind"] = np.where(
            key.isin(MITOSIS_NAMES), "mitosis", np.where(key.isin(LOOKALIKE_NAMES), "lookalike", "")
        )
    if "label" not in frame:
        frame["label"] = frame["kind"].map({"lookalike": "Non-mitotic figure"}).fillna("")
    frame["slide"] = frame["slide"].astype(str)
    return frame


def mine_hard_negatives(
    detector: Detector | str | Path,
    slides: Mapping[str, SlideSource] | Sequence[SlideSource] | SlideSource,
    annotations: Annotations | pd.DataFrame | None = None,
    *,
    threshold: float = 0.1,
    radius_um: float = MIDOG_RADIUS_UM,
    mitosis_free: Collection[str] | bool = (),
    tissue: Literal["auto"] | None | Mapping[str, Any] = "auto",
    inside_tissue: bool = True,
    mpp: float | Mapping[str, float] | None = None,
    progress: bool = False,
    device: str | torch.device = "auto",
) -> MinedCandidates:
    """Run ``detector`` over slides and keep its false positives as hard negatives.

    Parameters
    ----------
    detector : Detector, str or Path
        Any :class:`wsimito.Detector`, a registry name or a checkpoint path.
        Its candidates come from :func:`wsimito.count_mitoses`, so only those
        above the detector's own lowest returned score exist (e.g.
        ``min_score`` of a :class:`~wsimito.models.PointDetector`).
    slides : mapping of name to slide, sequence or one slide
        Paths or :class:`~wsimito.slide.Slide` objects; names default to the
        file names and must match the ``slide`` column of ``annotations``.
    annotations : Annotations or pandas.DataFrame, optional
        Annotated cells (``slide``, ``x``, ``y`` in level-0 px, and ``kind``
        ``"mitosis"``/``"lookalike"``, or a ``label`` the class names of
        :mod:`wsimito.classes` resolve).
    threshold : float
        Lowest detector score kept, in [0, 1]; low, to see what the detector
        nearly counts.
    radius_um : float
        Hit radius, µm (MIDOG: 7.5).
    mitosis_free : collection of str or bool
        Names of slides that contain no mitotic figures (every candidate there
        is a negative), or True for all slides. It is the caller's
        declaration; nothing checks it.
    tissue : {"auto"}, None or mapping of name to tissue
        As ``count_mitoses(tissue=...)``, for all slides or per slide name.
    inside_tissue : bool
        Keep only candidates in the analysed tissue (what would be counted).
    mpp : float or mapping of name to float, optional
        Level-0 resolution (µm/px) for files that carry none.
    progress : bool
        Show a progress bar per slide.
    device : str or torch.device
        For registry names and paths: where the detector runs.

    Returns
    -------
    MinedCandidates
        Every candidate at or above ``threshold`` (in tissue if ``inside_tissue``),
        sorted into hits and hard negatives, plus the annotated look-alikes.

    Raises
    ------
    ValueError
        When a slide is neither declared mitosis-free nor annotated (no ground
        truth to judge its candidates), when annotations name slides that were
        not given, or a parameter is out of range.

    Examples
    --------
    >>> mined = mine_hard_negatives("demo", ["roi.png"], mitosis_free=True,
    ...                             mpp=0.25)                    # doctest: +SKIP
    >>> mined.to_geojson("roi-negatives.geojson")                # doctest: +SKIP
    """
    from ..pipeline import _load, count_mitoses

    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a score in [0, 1], got {threshold}")
    if not (math.isfinite(radius_um) and radius_um > 0):
        raise ValueError(f"radius_um must be a positive distance in µm, got {radius_um}")
    det = _load(detector, device)
    opened = _as_slides(slides, mpp)
    try:
        names = [n for n, _, _ in opened]
        free = set(names) if mitosis_free is True else set(mitosis_free or ())
        unknown = sorted(free - set(names))
        if unknown:
            raise ValueError(f"mitosis_free names slides that were not given: {unknown}")
        cells = _annotation_frame(annotations)
        stray = sorted(set(cells["slide"]) - set(names))
        if stray:
            raise ValueError(
                f"annotations name slides that were not given: {stray[:5]}; slides given: "
                f"{names[:5]} (names are file names unless slides is a mapping)"
            )
        annotated = set(cells["slide"])
        if annotations is not None and hasattr(annotations, "slides"):
            annotated |= {str(s) for s in annotations.slides}
        unjudged = [n for n in names if n not in free and n not in annotated]
        if unjudged:
            raise ValueError(
                f"slides {unjudged} have no annotations and are not declared mitosis-free, so "
                "their candidates cannot be judged; annotate them or pass mitosis_free=[...]"
            )
        rows, slide_rows, figures = [], [], {}
        for name, slide, _ in opened:
            mine = cells[cells["slide"] == name]
            figs = (
                np.zeros((0, 2))
                if name in free
                else mine.loc[mine["kind"] == "mitosis", ["x", "y"]].to_numpy(np.float64)
            )
            figures[name] = figs
            slide_tissue = tissue.get(name, "auto") if isinstance(tissue, Mapping) else tissue
            result = count_mitoses(
                slide, det, tissue=slide_tissue, threshold=threshold, progress=progress
            )
            keep = result.scores >= threshold
            if inside_tissue:
                keep &= result.in_tissue
            xy, score = result.points[keep], result.scores[keep]
            distance = _distance_um(xy, figs, slide.mpp)
            hit = distance <= radius_um
            rows.append(
                pd.DataFrame(
                    {
                        "slide": name,
                        "x": xy[:, 0],
                        "y": xy[:, 1],
                        "score": score,
                        "kind": np.where(hit, "hit", "hard negative"),
                        "source": "detector",
                        "label": np.where(hit, MITOSIS_CLASS, HARD_NEGATIVE_CLASS),
                        "distance_um": distance,
                        "in_tissue": result.in_tissue[keep],
                    }
                )
            )
            looks = mine[mine["kind"] == "lookalike"]
            if len(looks):
                lxy = looks[["x", "y"]].to_numpy(np.float64)
                rows.append(
                    pd.DataFrame(
                        {
                            "slide": name,
                            "x": lxy[:, 0],
                            "y": lxy[:, 1],
                            "score": _nearby_score(lxy, xy, score, radius_um / slide.mpp),
                            "kind": "lookalike",
                            "source": "annotation",
                            "label": looks["label"].astype(str).to_numpy(),
                            "distance_um": _distance_um(lxy, figs, slide.mpp),
                            "in_tissue": result.tissue.contains(lxy),
                        }
                    )
                )
            width, height = slide.dimensions
            slide_rows.append(
                {
                    "slide": name,
                    "path": slide.path,
                    "width": int(width),
                    "height": int(height),
                    "mpp": float(slide.mpp),
                    "mitosis_free": name in free,
                    "figures": len(figs),
                    "tissue_area_mm2": float(result.tissue_area_mm2),
                }
            )
    finally:
        for _, slide, own in opened:
            if own:
                slide.close()
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    return MinedCandidates(
        table, pd.DataFrame(slide_rows), float(threshold), float(radius_um), str(det.name), figures
    )


def _distance_um(points: np.ndarray, figures: np.ndarray, mpp: float) -> np.ndarray:
    """Distance of each point to its nearest figure, µm (inf without figures)."""
    if len(points) == 0:
        return np.zeros(0)
    if len(figures) == 0:
        return np.full(len(points), np.inf)
    distance: np.ndarray = cKDTree(figures).query(points)[0]
    return distance * mpp


def _nearby_score(
    points: np.ndarray, candidates: np.ndarray, scores: np.ndarray, radius_px: float
) -> np.ndarray:
    """The highest candidate score within ``radius_px`` of each point; NaN where none."""
    out = np.full(len(points), np.nan)
    if len(candidates) == 0 or len(points) == 0:
        return out
    tree = cKDTree(candidates)
    for i, near in enumerate(tree.query_ball_point(points, radius_px)):
        if near:
            out[i] = float(np.max(scores[near]))
    return out


def candidate_patches(
    slide: Slide,
    points: np.ndarray,
    *,
    mpp: float,
    size: int,
    batch_size: int = 64,
    num_workers: int = 2,
) -> torch.Tensor:
    """Read square patches centred on points through :class:`wsimito.reader.TileReader`.

    Parameters
    ----------
    slide : Slide
        The slide.
    points : numpy.ndarray
        ``(N, 2)`` level-0 px.
    mpp : float
        Resolution of the patches, µm/px.
    size : int
        Patch side, px at ``mpp``.
    batch_size : int
        Patches per read batch.
    num_workers : int
        Reader threads.

    Returns
    -------
    torch.Tensor
        The patches, uint8 ``(N, 3, size, size)`` on the CPU; pixel ``(size / 2, size / 2)``
        (continuous) is each point. Pixels beyond the slide are white.
    """
    from ..reader import TileReader

    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    out = torch.empty((len(points), 3, size, size), dtype=torch.uint8)
    if len(points) == 0:
        return out
    side = size * mpp / slide.mpp
    boxes = np.column_stack([points - side / 2, np.full((len(points), 2), side)])
    reader = TileReader(
        slide, boxes, mpp=mpp, tile_size=size, batch_size=batch_size, num_workers=num_workers
    )
    for batch in reader:
        out[torch.from_numpy(batch.index)] = batch.pixels.cpu().contiguous()
    return out


__all__ = [
    "HARD_NEGATIVE_CLASS",
    "MinedCandidates",
    "candidate_patches",
    "mine_hard_negatives",
]
