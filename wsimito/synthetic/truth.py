"""Ground truth of a synthetic slide: every mitotic figure and look-alike, in level-0 px."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GroundTruth:
    """Centres of mitotic figures and of their look-alikes.

    ``mitoses``: ``(N, 2)`` float64 x, y in level-0 px; ``phases``: ``(N,)``
    str, one of "prophase", "metaphase", "anaphase", "telophase".
    ``imposters``: ``(M, 2)`` float64 x, y in level-0 px of non-mitotic
    look-alikes (MIDOG category 2); ``imposter_kinds``: ``(M,)`` str
    ("pyknotic nucleus", "apoptotic body", "lymphocyte", "dark debris",
    "hyperchromatic nucleus"). ``mpp``: µm per level-0 px. ``box``: the
    level-0 box ``(x, y, w, h)`` in px that was enumerated.
    """

    mitoses: np.ndarray
    phases: np.ndarray
    imposters: np.ndarray
    imposter_kinds: np.ndarray
    mpp: float
    box: tuple[float, float, float, float]

    @property
    def area_mm2(self) -> float:
        """Area of ``box`` in mm² (glass included)."""
        return self.box[2] * self.box[3] * (self.mpp / 1000.0) ** 2

    def within(self, box: tuple[float, float, float, float]) -> GroundTruth:
        """The points inside the level-0 box ``(x, y, w, h)`` px (left/top edges included)."""
        x, y, w, h = (float(v) for v in box)
        if w < 0 or h < 0:
            raise ValueError(f"box width and height must be non-negative px, got {box!r}")

        def inside(pts: np.ndarray) -> np.ndarray:
            return (pts[:, 0] >= x) & (pts[:, 0] < x + w) & (pts[:, 1] >= y) & (pts[:, 1] < y + h)

        m, i = inside(self.mitoses), inside(self.imposters)
        return GroundTruth(
            self.mitoses[m],
            self.phases[m],
            self.imposters[i],
            self.imposter_kinds[i],
            self.mpp,
            (x, y, w, h),
        )

    def __repr__(self) -> str:
        return (
            f"<GroundTruth {len(self.mitoses)} mitotic figures, {len(self.imposters)} "
            f"look-alikes in {self.box[2]:.0f}x{self.box[3]:.0f} px at {self.mpp:g} µm/px>"
        )
