"""Ground truth of a synthetic slide: every mitotic figure, look-alike and artefact, in level-0 px."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import shapely

from .artefacts import Artefact


@dataclass(frozen=True)
class GroundTruth:
    """Centres of mitotic figures and of their look-alikes, and the artefacts of the slide.

    ``mitoses``: ``(N, 2)`` float64 x, y in level-0 px; ``phases``: ``(N,)``
    str, one of "prophase", "metaphase", "anaphase", "telophase".
    ``imposters``: ``(M, 2)`` float64 x, y in level-0 px of non-mitotic
    look-alikes (MIDOG category 2); ``imposter_kinds``: ``(M,)`` str
    ("pyknotic nucleus", "apoptotic body", "lymphocyte", "dark debris",
    "hyperchromatic nucleus"). ``mpp``: µm per level-0 px. ``box``: the
    level-0 box ``(x, y, w, h)`` in px that was enumerated.
    ``artefacts``: every artefact that changes a pixel of ``box`` (fold, ink,
    dust, ...; see :class:`~wsimito.synthetic.Artefact`), each with a level-0
    polygon that encloses the pixels it changes. ``mitosis_free``: True when
    the slide was made with ``mitoses_per_mm2=0``, a declaration that it
    holds no mitotic figure anywhere (not just in ``box``).
    """

    mitoses: np.ndarray
    phases: np.ndarray
    imposters: np.ndarray
    imposter_kinds: np.ndarray
    mpp: float
    box: tuple[float, float, float, float]
    artefacts: tuple[Artefact, ...] = ()
    mitosis_free: bool = False

    @property
    def area_mm2(self) -> float:
        """Area of ``box`` in mm² (glass included)."""
        return self.box[2] * self.box[3] * (self.mpp / 1000.0) ** 2

    @property
    def artefact_kinds(self) -> np.ndarray:
        """``(A,)`` str: the kind of each entry of ``artefacts``."""
        return np.array([a.kind for a in self.artefacts], dtype=str).reshape(-1)

    def within(self, box: tuple[float, float, float, float]) -> GroundTruth:
        """The points inside the level-0 box ``(x, y, w, h)`` px (left/top edges included),
        and the artefacts whose polygon's bounding box overlaps it.

        Raises
        ------
        ValueError
            If the box has a negative width or height.
        """
        x, y, w, h = (float(v) for v in box)
        if w < 0 or h < 0:
            raise ValueError(f"box width and height must be non-negative px, got {box!r}")

        def inside(pts: np.ndarray) -> np.ndarray:
            return (pts[:, 0] >= x) & (pts[:, 0] < x + w) & (pts[:, 1] >= y) & (pts[:, 1] < y + h)

        def overlaps(a: Artefact) -> bool:
            lo, hi = a.polygon.min(axis=0), a.polygon.max(axis=0)
            return bool(lo[0] < x + w and hi[0] > x and lo[1] < y + h and hi[1] > y)

        m, i = inside(self.mitoses), inside(self.imposters)
        return GroundTruth(
            self.mitoses[m],
            self.phases[m],
            self.imposters[i],
            self.imposter_kinds[i],
            self.mpp,
            (x, y, w, h),
            tuple(a for a in self.artefacts if overlaps(a)),
            self.mitosis_free,
        )

    def artefact_at(
        self, points: np.ndarray, *, kinds: Iterable[str] | None = None, margin_px: float = 0.0
    ) -> np.ndarray:
        """The kind of artefact under each point, "" where there is none.

        Parameters
        ----------
        points : numpy.ndarray
            ``(K, 2)`` x, y in level-0 px, e.g. a detector's false alarms.
        kinds : iterable of str, optional
            Only these artefact kinds count (default: all).
        margin_px : float
            Also count points within this distance (level-0 px) of an artefact.

        Returns
        -------
        numpy.ndarray
            ``(K,)`` str. Where artefacts overlap, the first listed one wins.

        Examples
        --------
        >>> on = truth.artefact_at(false_alarms)                     # doctest: +SKIP
        >>> (on != "").mean()   # share of false alarms on an artefact  # doctest: +SKIP
        """
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        out = np.full(len(pts), "", dtype=object)
        wanted = None if kinds is None else set(kinds)
        chosen = [a for a in self.artefacts if wanted is None or a.kind in wanted]
        if not chosen or not len(pts):
            return out.astype(str)
        polys = np.array([shapely.Polygon(a.polygon) for a in chosen], dtype=object)
        if margin_px > 0:
            polys = shapely.buffer(polys, margin_px)
        tree = shapely.STRtree(polys)
        hit_pt, hit_poly = tree.query(shapely.points(pts), predicate="intersects")
        order = np.lexsort((hit_poly, hit_pt))
        hit_pt, hit_poly = hit_pt[order], hit_poly[order]
        first = np.unique(hit_pt, return_index=True)[1]
        out[hit_pt[first]] = [chosen[j].kind for j in hit_poly[first]]
        return out.astype(str)

    def __repr__(self) -> str:
        extra = f", {len(self.artefacts)} artefacts" if self.artefacts else ""
        free = " (declared mitosis-free)" if self.mitosis_free else ""
        return (
            f"<GroundTruth {len(self.mitoses)} mitotic figures, {len(self.imposters)} "
            f"look-alikes{extra} in {self.box[2]:.0f}x{self.box[3]:.0f} px at "
            f"{self.mpp:g} µm/px{free}>"
        )
