"""Real-slide artefacts: tissue folds, pen ink, dust and fibres, out-of-focus regions,
torn tissue edges, red blood cells and air bubbles.

These are what make a mitosis detector raise false alarms on real slides.
Each artefact is placed like the objects of :mod:`.content`: per grid cell,
from a hash of (seed, kind, cell, slot), so every pixel still depends only on
its absolute position and the seed, and boxes rendered apart agree with the
same box rendered whole. Where they act:

- torn edges cut tissue away (before anything else is stacked on it);
- folds scale the stain amounts of the tissue under them (doubled thickness);
- red blood cells replace the stain of the tissue they lie on;
- ink, dust, fibres and bubble rims add optical density (bubble rims also
  take some away: their bright inner rim);
- out-of-focus regions and the inside of bubbles blur the finished colours.

Every artefact is listed with a polygon in the ground truth
(:class:`~wsimito.synthetic.GroundTruth` ``artefacts``), which encloses every
pixel it changes.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Literal, Union

import numpy as np
from scipy import ndimage

from . import content as c
from .stains import _LN10

if TYPE_CHECKING:
    from .stains import StainModel

InkColour = Literal["green", "blue", "black", "red"]
ArtefactPreset = Literal["none", "realistic", "heavy"]
ArtefactSpec = Union[ArtefactPreset, "Artefacts", None]

#: Optical density per unit of ink over (R, G, B) for each marker colour.
INK_OD: dict[str, tuple[float, float, float]] = {
    "green": (0.85, 0.20, 0.45),
    "blue": (0.75, 0.50, 0.12),
    "black": (0.80, 0.80, 0.74),
    "red": (0.08, 0.85, 0.65),
}

FOLD, INK, DUST, FIBRE, BLUR, TEAR, RBC, VESSEL, BUBBLE = (
    "fold",
    "ink",
    "dust",
    "fibre",
    "out of focus",
    "torn edge",
    "red blood cell",
    "vessel",
    "air bubble",
)
#: The artefact kinds as named in the ground truth ("vessel": the lumen around a
#: cluster of red blood cells, listed beside each of its cells).
ARTEFACT_KINDS = (FOLD, INK, DUST, FIBRE, BLUR, TEAR, RBC, VESSEL, BUBBLE)


@dataclass(frozen=True)
class _Kind:
    """How one artefact kind is placed: hash key, rate knob, grid, slots, reach and site."""

    name: str
    key: int
    rate: str  # attribute of Artefacts holding the rate per mm²
    grid_um: float
    slots: int
    reach_um: float  # largest distance from an instance's centre to a pixel it changes
    site: Literal["any", "tissue", "edge"]

    def max_rate(self) -> float:
        return self.slots / (self.grid_um / 1000.0) ** 2


_KINDS = (
    _Kind(FOLD, 1, "folds_per_mm2", 1000.0, 4, 420.0, "tissue"),
    _Kind(INK, 2, "ink_per_mm2", 2000.0, 4, 2700.0, "any"),
    _Kind(DUST, 3, "dust_per_mm2", 250.0, 8, 40.0, "any"),
    _Kind(FIBRE, 4, "fibres_per_mm2", 500.0, 4, 260.0, "any"),
    _Kind(BLUR, 5, "blur_per_mm2", 1000.0, 4, 400.0, "any"),
    _Kind(TEAR, 6, "tears_per_mm2", 500.0, 4, 300.0, "edge"),
    _Kind(RBC, 7, "rbc_groups_per_mm2", 200.0, 8, 70.0, "tissue"),
    _Kind(BUBBLE, 8, "bubbles_per_mm2", 1000.0, 4, 300.0, "any"),
)
_BY_NAME = {k.name: k for k in _KINDS}
_RBC_MAX_GROUP = 60
_TEAR_REACH_UM = 22.0  # a removed figure's pixels and the nuclei that gave way to it
_RBC_CLEARANCE_UM = 12.0  # red cell groups keep this far from figures and look-alikes


@dataclass(frozen=True)
class Artefacts:
    """Which artefacts a synthetic slide has, and how many.

    Every rate is a mean number of artefacts per mm²: of slide (glass
    included) for ink, dust, fibres, out-of-focus regions, tear sites and
    bubbles; of tissue for folds and red-cell groups, which sit only on
    tissue. Instances are placed by the seed.

    Parameters
    ----------
    folds_per_mm2 : float
        Tissue folds: bands 150-700 µm long and 15-70 µm wide of doubled
        thickness (stain 1.75-2.2x), with darker creases along their edges.
    ink_per_mm2 : float
        Marker strokes 0.8-4 mm long and 120-500 µm wide, on glass and over
        tissue, with streaks along the stroke and ink pooled at its edges.
    ink_colours : tuple of str
        The marker colours drawn from: "green", "blue", "black", "red".
    dust_per_mm2 : float
        Dark irregular particles, 4-40 µm across, sharp or out of focus.
    fibres_per_mm2 : float
        Thin wavy fibres (lint), 40-400 µm long and 1.5-5 µm wide.
    blur_per_mm2 : float
        Out-of-focus regions: ellipses 160-800 µm across, blurred by a
        Gaussian of 1-3.2 µm at their centre, fading to sharp at their rim.
    tears_per_mm2 : float
        Tear sites, 80-300 µm in radius. A site tears the tissue edge inside
        it (a ragged boundary, cracks and small detached fragments); sites
        that hold no tissue edge do nothing and are not listed. Slides with
        ``tissue_fraction=1.0`` have no edges, hence no tears.
    rbc_groups_per_mm2 : float
        Groups of red blood cells (6.6-8 µm biconcave discs): single cells in
        the tissue, or clusters packed in a vessel lumen.
    rbc_per_group : tuple of int
        Smallest and largest number of cells in a group (1-60); small groups
        are the most common.
    bubbles_per_mm2 : float
        Air bubbles under the cover slip, 30-500 µm across: a dark ring, a
        bright inner rim and a slightly blurred, brighter inside.

    Raises
    ------
    ValueError
        If a rate is negative or above what the placement grid holds, an ink
        colour is unknown, or ``rbc_per_group`` is not ``(lo, hi)`` with
        ``1 <= lo <= hi <= 60``.
    """

    folds_per_mm2: float = 0.0
    ink_per_mm2: float = 0.0
    ink_colours: tuple[InkColour, ...] = ("green", "blue", "black", "red")
    dust_per_mm2: float = 0.0
    fibres_per_mm2: float = 0.0
    blur_per_mm2: float = 0.0
    tears_per_mm2: float = 0.0
    rbc_groups_per_mm2: float = 0.0
    rbc_per_group: tuple[int, int] = (1, 24)
    bubbles_per_mm2: float = 0.0

    def __post_init__(self) -> None:
        for kind in _KINDS:
            rate = getattr(self, kind.rate)
            if not (isinstance(rate, numbers.Real) and math.isfinite(rate) and rate >= 0):
                raise ValueError(
                    f"Artefacts.{kind.rate} must be a number >= 0 per mm², got {rate!r}"
                )
            if rate > kind.max_rate():
                raise ValueError(
                    f"Artefacts.{kind.rate}={rate:g} is more than the placement grid holds; "
                    f"use at most {kind.max_rate():g} per mm²"
                )
        colours = tuple(self.ink_colours)
        if not colours or any(col not in INK_OD for col in colours):
            raise ValueError(
                f"Artefacts.ink_colours must be a non-empty tuple of {sorted(INK_OD)}, "
                f"got {self.ink_colours!r}"
            )
        object.__setattr__(self, "ink_colours", colours)
        lo, hi = (int(v) for v in self.rbc_per_group)
        if not 1 <= lo <= hi <= _RBC_MAX_GROUP:
            raise ValueError(
                f"Artefacts.rbc_per_group must be (lo, hi) with 1 <= lo <= hi <= "
                f"{_RBC_MAX_GROUP}, got {self.rbc_per_group!r}"
            )
        object.__setattr__(self, "rbc_per_group", (lo, hi))

    @property
    def any(self) -> bool:
        """Whether any artefact has a rate above zero."""
        return any(getattr(self, k.rate) > 0 for k in _KINDS)

    def only(self, *kinds: str) -> Artefacts:
        """The same rates for ``kinds``, zero for the others.

        Parameters
        ----------
        *kinds : str
            Names in :data:`ARTEFACT_KINDS` ("vessel" stands for the red cells).

        Returns
        -------
        Artefacts
            A copy with every other rate set to 0.

        Examples
        --------
        >>> ARTEFACT_PRESETS["heavy"].only("ink", "dust").folds_per_mm2
        0.0

        Raises
        ------
        ValueError
            If a name is not an artefact kind.
        """
        kinds = tuple(RBC if k == VESSEL else k for k in kinds)
        unknown = [k for k in kinds if k not in _BY_NAME]
        if unknown:
            raise ValueError(f"unknown artefact kinds {unknown}; use names from {ARTEFACT_KINDS}")
        keep = {_BY_NAME[k].rate for k in kinds}
        rates = {k.rate: 0.0 for k in _KINDS if k.rate not in keep}
        return Artefacts(**{f.name: getattr(self, f.name) for f in fields(self)} | rates)


#: Named artefact mixes. "realistic": what a routine whole slide shows (a few
#: folds, ink strokes and bubbles per slide, dust everywhere, red cells in
#: most fields). "heavy": every kind several times per mm², for training and
#: hard-negative mining.
ARTEFACT_PRESETS: dict[str, Artefacts] = {
    "none": Artefacts(),
    "realistic": Artefacts(
        folds_per_mm2=0.02,
        ink_per_mm2=0.01,
        dust_per_mm2=3.0,
        fibres_per_mm2=0.1,
        blur_per_mm2=0.02,
        tears_per_mm2=0.2,
        rbc_groups_per_mm2=8.0,
        bubbles_per_mm2=0.01,
    ),
    "heavy": Artefacts(
        folds_per_mm2=1.0,
        ink_per_mm2=0.25,
        dust_per_mm2=40.0,
        fibres_per_mm2=3.0,
        blur_per_mm2=1.0,
        tears_per_mm2=4.0,
        rbc_groups_per_mm2=60.0,
        bubbles_per_mm2=0.8,
    ),
}


def resolve_artefacts(spec: ArtefactSpec) -> Artefacts | None:
    """An :class:`Artefacts` from a preset name or an instance.

    Parameters
    ----------
    spec : {"none", "realistic", "heavy"}, Artefacts or None
        A name in :data:`ARTEFACT_PRESETS` or an :class:`Artefacts`.

    Returns
    -------
    Artefacts or None
        None when ``spec`` asks for no artefact at all (every rate 0).

    Raises
    ------
    ValueError
        If ``spec`` is a string that names no preset, or neither a string nor
        an :class:`Artefacts`.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec not in ARTEFACT_PRESETS:
            raise ValueError(
                f"unknown artefacts {spec!r}; use an Artefacts(...) or one of "
                f"{sorted(ARTEFACT_PRESETS)}"
            )
        spec = ARTEFACT_PRESETS[spec]
    if not isinstance(spec, Artefacts):
        raise ValueError(
            f"artefacts must be a preset name or an Artefacts, got {type(spec).__name__}"
        )
    return spec if spec.any else None


# -- placement ---------------------------------------------------------------
_KEY = 0xA27E  # hash group of all artefacts
_N_P = 16


@dataclass
class _Set:
    """Instances of one kind: centres ``x``/``y`` (µm), parameters ``p`` (K, 16) in [0, 1)."""

    x: np.ndarray
    y: np.ndarray
    p: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    def take(self, keep: np.ndarray) -> _Set:
        return _Set(self.x[keep], self.y[keep], self.p[keep])


def _candidates(layout: c.Layout, kind: _Kind, box: tuple[float, float, float, float]) -> _Set:
    rate = getattr(layout.artefacts, kind.rate)
    empty = _Set(np.zeros(0), np.zeros(0), np.zeros((0, _N_P)))
    if rate <= 0:
        return empty
    g = kind.grid_um
    x0, y0, x1, y1 = box
    r = kind.reach_um
    cx, cy = c._cells(g, (x0 - r, y0 - r, x1 + r, y1 + r))
    slot = np.arange(kind.slots)
    seed = layout.seed
    u0 = c.uniform(seed, _KEY, kind.key, cy[:, None], cx[:, None], slot[None, :], -1).ravel()
    cand = np.flatnonzero(u0 < rate * (g / 1000.0) ** 2 / kind.slots)
    if len(cand) == 0:
        return empty
    ccx = np.repeat(cx, kind.slots)[cand]
    ccy = np.repeat(cy, kind.slots)[cand]
    cslot = np.tile(slot, len(cx))[cand]
    u = c.uniform(
        seed, _KEY, kind.key, ccy[:, None], ccx[:, None], cslot[:, None], np.arange(_N_P + 2)
    )
    x, y = (ccx + u[:, 0]) * g, (ccy + u[:, 1]) * g
    return _Set(x, y, u[:, 2:])


def _radius(kind: str, p: np.ndarray, arts: Artefacts) -> np.ndarray:
    """Largest distance (µm) from each instance's centre to a pixel it changes."""
    if kind == FOLD:
        g = _fold_geometry(p)
        return np.hypot(g["L"] / 2, np.abs(g["sag"]) + g["W"] / 2 + 6.0)
    if kind == INK:
        g = _ink_geometry(p)
        return np.hypot(g["L"] / 2, np.abs(g["sag"])) + g["W"] / 2 + _INK_MARGIN_UM
    if kind == DUST:
        g = _dust_geometry(p)
        return g["r0"] * (1 + g["a"].sum(axis=1)) + 5 * _DUST_ROUGH_UM + 2 * g["soft"] + 1.0
    if kind == FIBRE:
        g = _fibre_geometry(p)
        return np.hypot(g["L"] / 2 + 2 * g["soft"], np.abs(g["sag"]) + 1.4 * g["amp"] + g["w"])
    if kind == BLUR:
        return _blur_geometry(p)["a"]
    if kind == TEAR:
        return _tear_geometry(p)["R"]
    if kind == RBC:
        g = _rbc_geometry(p, arts.rbc_per_group)
        return g["A"] * (1.0 + 4.0 / g["B"]) + 6.0
    g = _bubble_geometry(p)
    return g["R"] + 4 * g["wr"]


@dataclass
class Placed:
    """The artefacts that reach a box: one :class:`_Set` per kind name."""

    sets: dict[str, _Set]

    def __iter__(self):
        return iter(self.sets.items())


def tear_keep_points(layout: c.Layout, tears: _Set, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Share of tissue left (0..1) by ``tears`` at points ``x``, ``y`` (µm, 1-d)."""
    keep = np.ones(len(x))
    if len(tears) == 0 or len(x) == 0:
        return keep
    g = _tear_geometry(tears.p)
    d = np.hypot(x[:, None] - tears.x[None, :], y[:, None] - tears.y[None, :])
    near = d < g["R"][None, :]
    rows = np.flatnonzero(near.any(axis=1))
    if len(rows) == 0:
        return keep
    px, py = x[rows], y[rows]
    t, rag, crack = c.noise_points(
        layout.seed, (c.tissue_noise(layout.tissue_scale_um), _RAG, _CRACK), px, py
    )
    for j in range(len(tears)):
        on = near[rows, j]
        if not on.any():
            continue
        env = _envelope(d[rows[on], j] / g["R"][j])
        k = _tear_keep(
            t[on], rag[on], crack[on], env, layout.tissue_threshold, g["grad"][j], g["depth"][j]
        )
        keep[rows[on]] = np.minimum(keep[rows[on]], k)
    return keep


def place(
    layout: c.Layout,
    box: tuple[float, float, float, float],
    rare: Callable[[tuple[float, float, float, float]], c.Objects] | None = None,
) -> Placed:
    """Every artefact that changes a pixel of ``box`` (x0, y0, x1, y1 µm).

    ``rare(box)`` lists the figures and look-alikes of a box; red-cell groups
    keep clear of them. Instances come from the grid cells around ``box``, so
    the same instance is found from every box it reaches.
    """
    sets: dict[str, _Set] = {}
    for kind in _KINDS:
        found = _placed_kind(layout, kind, box)
        if len(found):
            sets[kind.name] = found
    tears = sets.get(TEAR, _Set(np.zeros(0), np.zeros(0), np.zeros((0, _N_P))))
    groups = sets.get(RBC)
    if groups is not None:
        keep = tear_keep_points(layout, tears, groups.x, groups.y) >= 0.5
        if rare is not None and keep.any():
            g = _rbc_geometry(groups.p, layout.artefacts.rbc_per_group)
            reach = g["A"] + _RBC_CLEARANCE_UM + c.MAX_RADIUS_UM
            objs = rare(
                (
                    float((groups.x - reach).min()),
                    float((groups.y - reach).min()),
                    float((groups.x + reach).max()),
                    float((groups.y + reach).max()),
                )
            )
            if len(objs):
                d = np.hypot(groups.x[:, None] - objs.x[None, :], groups.y[:, None] - objs.y)
                keep &= ~(d < reach[:, None] - c.MAX_RADIUS_UM).any(axis=1)
        groups = groups.take(keep)
        if len(groups):
            sets[RBC] = groups
        else:
            del sets[RBC]
    return Placed(sets)


def _on_edges(layout: c.Layout, s: _Set) -> _Set:
    """Tear sites whose inner half holds a tissue edge.

    Parameter 15 of each kept site is replaced by the tissue noise gradient at
    its centre (noise units per µm), which turns noise values into distances.
    """
    if not np.isfinite(layout.tissue_threshold):
        return s.take(np.zeros(len(s), bool))
    nz = (c.tissue_noise(layout.tissue_scale_um),)
    t = c.noise_points(layout.seed, nz, s.x, s.y)[0]
    gx = c.noise_points(layout.seed, nz, s.x + 1.0, s.y)[0] - t
    gy = c.noise_points(layout.seed, nz, s.x, s.y + 1.0)[0] - t
    grad = np.hypot(gx, gy)
    dist = np.abs(t - layout.tissue_threshold) / np.maximum(grad, 1e-9)
    keep = dist < 0.5 * _tear_geometry(s.p)["R"]
    p = s.p[keep].copy()
    p[:, -1] = grad[keep]
    return _Set(s.x[keep], s.y[keep], p)


def tear_sites(layout: c.Layout, box: tuple[float, float, float, float]) -> _Set:
    """The tear sites that reach ``box`` (x0, y0, x1, y1 µm)."""
    return _placed_kind(layout, _BY_NAME[TEAR], box)


def _placed_kind(layout: c.Layout, kind: _Kind, box: tuple[float, float, float, float]) -> _Set:
    s = _candidates(layout, kind, box)
    if len(s) == 0:
        return s
    x0, y0, x1, y1 = box
    r = _radius(kind.name, s.p, layout.artefacts)
    s = s.take((s.x + r > x0) & (s.x - r < x1) & (s.y + r > y0) & (s.y - r < y1))
    if len(s) and kind.site == "tissue":
        s = s.take(c.site_fields(layout, s.x, s.y)["tissue"] > 0.5)
    if len(s) and kind.site == "edge":
        s = _on_edges(layout, s)
    return s


# -- geometry of each kind (from the 16 parameters in [0, 1)) ---------------------
def _fold_geometry(p: np.ndarray) -> dict[str, np.ndarray]:
    L = 150.0 + 550.0 * p[:, 0]
    return {
        "L": L,
        "W": 15.0 + 55.0 * p[:, 1] ** 1.5,
        "angle": np.pi * p[:, 2],
        "sag": (p[:, 3] - 0.5) * 0.24 * L,
        "gain": 1.75 + 0.45 * p[:, 4],
        "phase": 2 * np.pi * p[:, 5],
        "wave": 60.0 + 140.0 * p[:, 6],
        "crease": 0.25 + 0.35 * p[:, 7],
    }


_INK_MARGIN_UM = 22.0  # granular ragged edge and pooling beyond the stroke's half width


def _ink_geometry(p: np.ndarray) -> dict[str, np.ndarray]:
    L = 800.0 + 3200.0 * p[:, 0]
    return {
        "L": L,
        "W": 120.0 + 380.0 * p[:, 1],
        "angle": np.pi * p[:, 2],
        "sag": (p[:, 3] - 0.5) * 0.3 * L,
        "density": 0.55 + 0.5 * p[:, 4],
        "colour": p[:, 5],
        "streak1": 8.0 + 17.0 * p[:, 6],
        "streak2": 30.0 + 60.0 * p[:, 7],
        "phase1": 2 * np.pi * p[:, 8],
        "phase2": 2 * np.pi * p[:, 9],
        "pool": 0.3 + 0.6 * p[:, 10],
    }


def _dust_geometry(p: np.ndarray) -> dict[str, np.ndarray]:
    r0 = 1.5 * 10.0 ** (p[:, 0] ** 2)  # 1.5-15 µm, mostly small
    return {
        "r0": r0,
        "a": np.stack([0.2 * p[:, 1], 0.22 * p[:, 2], 0.15 * p[:, 3], 0.1 * p[:, 4]], 1),
        "phi": 2 * np.pi * p[:, 5:9],
        "density": (0.5 + 1.0 * p[:, 9]) * (1.0 - 0.4 * (r0 - 1.5) / 13.5),
        "soft": 0.3 + 2.0 * p[:, 10] ** 2,
        "tint": p[:, 11],
        "angle": 2 * np.pi * p[:, 12],
    }


_DUST_ROUGH_UM = 0.8  # edge roughness of dust: this many µm per unit of grain texture


def _fibre_geometry(p: np.ndarray) -> dict[str, np.ndarray]:
    L = 40.0 + 360.0 * p[:, 0]
    return {
        "L": L,
        "w": 1.5 + 3.5 * p[:, 1],
        "angle": 2 * np.pi * p[:, 2],
        "sag": (p[:, 3] - 0.5) * 0.3 * L,
        "amp": 1.0 + 6.0 * p[:, 4],
        "k": 2 * np.pi / (25.0 + 100.0 * p[:, 5]),
        "phase": 2 * np.pi * p[:, 6],
        "density": 0.3 + 0.6 * p[:, 7],
        "tint": p[:, 8],
        "phase2": 2 * np.pi * p[:, 9],
        "phase3": 2 * np.pi * p[:, 10],
        "phase4": 2 * np.pi * p[:, 11],
        "soft": 0.6 + 0.9 * p[:, 12],
    }


def _fibre_centre(U, g, i=slice(None)):
    """Centre line ``V`` (µm) of fibres at ``U``: a bend and two waves."""
    half = g["L"][i] / 2
    amp, k = g["amp"][i], g["k"][i]
    return (
        g["sag"][i] / half**2 * U * U
        + amp * np.sin(k * U + g["phase"][i])
        + 0.4 * amp * np.sin(2.7 * k * U + g["phase2"][i])
    )


def _blur_geometry(p: np.ndarray) -> dict[str, np.ndarray]:
    a = 80.0 + 320.0 * p[:, 0]
    return {
        "a": a,
        "b": a * (0.5 + 0.5 * p[:, 1]),
        "angle": np.pi * p[:, 2],
        "sigma": 1.0 + 2.2 * p[:, 3],
    }


def _tear_geometry(p: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "R": 80.0 + 220.0 * p[:, 0],
        "depth": 25.0 + 65.0 * p[:, 1],
        "grad": p[:, -1],  # set by _on_edges: the tissue noise gradient at the site
    }


def _rbc_geometry(p: np.ndarray, per_group: tuple[int, int] = (1, 1)) -> dict[str, np.ndarray]:
    lo, hi = per_group
    n = np.minimum(lo + np.floor((hi - lo + 1) * p[:, 0] ** 2), hi).astype(np.int64)
    q = 0.35 + 0.45 * p[:, 1]
    A = np.where(n > 1, np.sqrt(n * 9.0 / q) + 3.0, 4.2)  # packed: cells overlap
    return {"n": n, "A": A, "B": A * q, "angle": np.pi * p[:, 2], "key": p[:, 3]}


def _bubble_geometry(p: np.ndarray) -> dict[str, np.ndarray]:
    R = 15.0 + 235.0 * p[:, 0] ** 1.5
    return {
        "R": R,
        "q": 0.85 + 0.15 * p[:, 1],
        "angle": np.pi * p[:, 2],
        "wr": np.maximum(2.0, (0.035 + 0.05 * p[:, 3]) * R),
        "density": 0.35 + 0.45 * p[:, 4],
        "hx": (p[:, 5] - 0.5) * 0.6,
        "hy": (p[:, 6] - 0.5) * 0.6,
        "sigma": 0.6 + 1.2 * p[:, 7],
    }


def _rbc_cells(layout: c.Layout, groups: _Set) -> dict[str, np.ndarray]:
    """Every red cell of ``groups``: centre (µm), radius, axis ratio, angle, density, group."""
    g = _rbc_geometry(groups.p, layout.artefacts.rbc_per_group)
    n = g["n"]
    owner = np.repeat(np.arange(len(groups)), n)
    k = np.arange(len(owner)) - np.repeat(np.cumsum(n) - n, n)
    key = (g["key"] * float(1 << 52)).astype(np.int64)[owner]
    u = c.uniform(layout.seed, _KEY, 99, key[:, None], k[:, None], np.arange(6)[None, :])
    single = (n == 1)[owner]
    rho = np.where(single, 0.0, np.sqrt(u[:, 0]))
    phi = 2 * np.pi * u[:, 1]
    # centres keep a cell radius (4 µm) inside the lumen
    a_in, b_in = np.maximum(g["A"][owner] - 4.0, 0), np.maximum(g["B"][owner] - 4.0, 0)
    lu, lv = a_in * rho * np.cos(phi), b_in * rho * np.sin(phi)
    ca, sa = np.cos(g["angle"][owner]), np.sin(g["angle"][owner])
    return {
        "x": groups.x[owner] + lu * ca - lv * sa,
        "y": groups.y[owner] + lu * sa + lv * ca,
        "r": 3.3 + 0.7 * u[:, 2],
        "q": 0.85 + 0.15 * u[:, 3],
        "angle": np.pi * u[:, 4],
        "density": 0.6 + 0.25 * u[:, 5],
        "owner": owner,
    }


# -- per-pixel profiles ----------------------------------------------------------
_RAG = c.Noise(31, 45.0, 3)  # raggedness of torn edges
_CRACK = c.Noise(32, 80.0, 2)  # cracks that split fragments off a torn edge
_GRAIN = c.Texture(33, 1.5)  # granular ink and edge roughness
_BLOTCH = c.Noise(34, 60.0, 2)  # uneven ink laydown


def _envelope(r: np.ndarray) -> np.ndarray:
    """Tear strength over a site: 1 in the middle, fading to 0 at radius 1."""
    return np.clip((1.0 - r) / 0.35, 0.0, 1.0)


def _tear_keep(t, rag, crack, env, threshold, grad, depth):
    """Tissue left (0..1) where tearing of strength ``env`` meets the tissue edge."""
    dist = (t - threshold) / max(float(grad), 1e-9)  # µm into the tissue, about
    zone = np.clip(1.0 - dist / depth, 0.0, 1.0) * env
    ramp = np.minimum(4.0 * zone, 1.0)  # no tearing outside the zone, however ragged
    ragged = np.clip(0.5 - (zone + 0.35 * rag * ramp - 0.75) * 8.0, 0.0, 1.0)
    cracked = np.clip((np.abs(crack) - (0.1 * zone - 0.02)) * 30.0 + 1.0, 0.0, 1.0)
    return ragged * cracked


def _soft(d: np.ndarray, edge: float) -> np.ndarray:
    """0..1 cover of the region ``d < 0`` (µm), softened over ``edge`` µm."""
    return np.clip(0.5 - d / edge, 0.0, 1.0)


@dataclass
class _Canvas:
    """Per-pixel artefact maps of one render box (allocated when first needed)."""

    h: int
    w: int
    keep: np.ndarray | None = None
    fold: np.ndarray | None = None
    od: np.ndarray | None = None
    defocus: np.ndarray | None = None
    rbc_cover: np.ndarray | None = None
    rbc_eos: np.ndarray | None = None
    lumen: np.ndarray | None = None

    def get(self, name: str, fill: float, channels: int = 0) -> np.ndarray:
        arr = getattr(self, name)
        if arr is None:
            shape = (self.h, self.w, channels) if channels else (self.h, self.w)
            arr = np.full(shape, fill, np.float32)
            setattr(self, name, arr)
        return arr


class Frame:
    """A render box: ``x``, ``y``, ``w``, ``h`` in px of a level at ``scale`` µm/px, and the
    µm coordinates of its pixel centres (``xs``, ``ys``)."""

    def __init__(self, x: int, y: int, w: int, h: int, scale: float) -> None:
        self.x, self.y, self.w, self.h, self.scale = x, y, w, h, scale
        self.xs = (np.arange(x, x + w) + 0.5) * scale
        self.ys = (np.arange(y, y + h) + 0.5) * scale

    def window(self, cx: float, cy: float, r: float) -> tuple[slice, slice] | None:
        s = self.scale
        c0 = max(int(math.floor((cx - r) / s)) - self.x, 0)
        c1 = min(int(math.ceil((cx + r) / s)) + 1 - self.x, self.w)
        r0 = max(int(math.floor((cy - r) / s)) - self.y, 0)
        r1 = min(int(math.ceil((cy + r) / s)) + 1 - self.y, self.h)
        if c1 <= c0 or r1 <= r0:
            return None
        return slice(r0, r1), slice(c0, c1)

    def windows(
        self,
        cx: float,
        cy: float,
        r: float,
        angle: float,
        near: Callable[[np.ndarray, np.ndarray, float], np.ndarray],
        step: int = 16,
        band: int = 4,
    ) -> list[tuple[slice, slice]]:
        """Sub-boxes of ``window(cx, cy, r)`` that hold every pixel an elongated artefact reaches.

        ``near(U, V, slack)`` says, for local coordinates of the centres of
        ``step``-px cells, whether some point within ``slack`` µm of them may be
        reached. Rows of cells are grouped ``band`` at a time, each group giving
        one sub-box from its first to its last reached cell.
        """
        win = self.window(cx, cy, r)
        if win is None:
            return []
        rs, cs = win
        rows = np.arange(rs.start, rs.stop, step)
        cols = np.arange(cs.start, cs.stop, step)
        xs = (np.minimum(cols + step / 2, cs.stop) + self.x) * self.scale
        ys = (np.minimum(rows + step / 2, rs.stop) + self.y) * self.scale
        du = (xs - cx)[None, :]
        dv = (ys - cy)[:, None]
        ca, sa = math.cos(angle), math.sin(angle)
        hit = near(du * ca + dv * sa, dv * ca - du * sa, step * self.scale * 0.75)
        out = []
        for b in range(0, len(rows), band):
            reached = np.flatnonzero(hit[b : b + band].any(axis=0))
            if len(reached) == 0:
                continue
            r1 = min(rows[min(b + band, len(rows)) - 1] + step, rs.stop)
            c1 = min(cols[reached[-1]] + step, cs.stop)
            out.append((slice(int(rows[b]), int(r1)), slice(int(cols[reached[0]]), int(c1))))
        return out

    def local(self, win, cx: float, cy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates ``U`` (along ``angle``) and ``V`` (across) in µm over ``win``."""
        du = (self.xs[win[1]] - cx).astype(np.float32)[None, :]
        dv = (self.ys[win[0]] - cy).astype(np.float32)[:, None]
        ca, sa = np.float32(math.cos(angle)), np.float32(math.sin(angle))
        return du * ca + dv * sa, dv * ca - du * sa


def _draw_fold(
    cv: _Canvas, fr: Frame, s: _Set, layout: c.Layout, edge: float, mpp_r: float
) -> None:
    g = _fold_geometry(s.p)
    r = _radius(FOLD, s.p, layout.artefacts)
    for i in range(len(s)):
        half = g["L"][i] / 2
        bend = g["sag"][i] / half**2
        reach = g["W"][i] / 2 * 1.15 + 6.0
        near = _near_band(half, bend, 0.0, reach)
        for win in fr.windows(s.x[i], s.y[i], r[i], g["angle"][i], near):
            U, V = fr.local(win, s.x[i], s.y[i], g["angle"][i])
            t = np.clip(1.0 - (U / half) ** 2, 0.0, 1.0)
            wave = np.sin(2 * np.pi * U / g["wave"][i] + g["phase"][i])
            hw = g["W"][i] / 2 * t**0.25 * (1.0 + 0.15 * wave)
            off = np.abs(V - bend * U * U) - hw
            band = _soft(off, max(2.0, edge)) * (t > 0)
            crease = np.exp(-((off / 1.2) ** 2)) * (t > 0)
            factor = 1.0 + (g["gain"][i] - 1.0) * band + g["crease"][i] * crease
            fold = cv.get("fold", 1.0)
            np.maximum(fold[win], factor, out=fold[win])


def _near_band(half: float, bend: float, slope: float, reach: float):
    """A test on coarse samples: could a pixel within ``slack`` µm of ``(U, V)`` lie within
    ``reach`` µm of a band's centre line ``V = bend U² (+ a wave of slope <= slope)`` for
    ``|U| <= half``?"""

    def near(U: np.ndarray, V: np.ndarray, slack: float) -> np.ndarray:
        lip = 1.0 + slope + 2.0 * abs(bend) * (np.abs(U) + slack)
        dist = np.sqrt(np.maximum(np.abs(U) - half, 0.0) ** 2 + (V - bend * U * U) ** 2)
        return dist - reach < slack * lip + 1.0

    return near


def _draw_ink(cv: _Canvas, fr: Frame, s: _Set, layout: c.Layout, edge: float, mpp_r: float) -> None:
    g = _ink_geometry(s.p)
    r = _radius(INK, s.p, layout.artefacts)
    colours = layout.artefacts.ink_colours
    for i in range(len(s)):
        half = g["L"][i] / 2
        bend = g["sag"][i] / half**2
        near = _near_band(half, bend, 0.0, g["W"][i] / 2 + _INK_MARGIN_UM)
        col = colours[min(int(g["colour"][i] * len(colours)), len(colours) - 1)]
        vec = np.asarray(INK_OD[col], np.float32)
        for win in fr.windows(s.x[i], s.y[i], r[i], g["angle"][i], near):
            U, V = fr.local(win, s.x[i], s.y[i], g["angle"][i])
            Vb = V - bend * U * U
            gran = _grain(layout, fr, win, mpp_r)
            hw = g["W"][i] / 2 + 4.0 * gran
            dist = np.sqrt(np.maximum(np.abs(U) - half, 0.0) ** 2 + Vb * Vb)
            inside = _soft(dist - hw, max(2.0, edge))
            pool = np.exp(-(((hw - dist) / 8.0) ** 2))
            streak = (
                1.0
                + 0.18 * np.sin(2 * np.pi * Vb / g["streak1"][i] + g["phase1"][i])
                + 0.10 * np.sin(2 * np.pi * Vb / g["streak2"][i] + g["phase2"][i])
            )
            blotch = _BLOTCH.grid(layout.seed, fr.xs[win[1]], fr.ys[win[0]])
            amount = inside * (streak + g["pool"][i] * pool)
            amount *= np.clip(1.0 + 0.15 * gran + 0.3 * blotch, 0.2, None)
            amount *= g["density"][i]
            od = cv.get("od", 0.0, 3)
            od[win] += amount[..., None] * vec


_DUST_BROWN = np.array([0.75, 0.9, 1.15], np.float32) / np.float32(np.sqrt(3.0))
_NEUTRAL = np.ones(3, np.float32)
_FIBRE_BLUE = np.array([1.1, 0.95, 0.7], np.float32)


def _draw_dust(
    cv: _Canvas, fr: Frame, s: _Set, layout: c.Layout, edge: float, mpp_r: float
) -> None:
    g = _dust_geometry(s.p)
    r = _radius(DUST, s.p, layout.artefacts)
    for i in range(len(s)):
        win = fr.window(s.x[i], s.y[i], r[i])
        if win is None:
            continue
        U, V = fr.local(win, s.x[i], s.y[i], g["angle"][i])
        theta = np.arctan2(V, U)
        rim = np.ones_like(theta)
        for k in range(4):
            rim += g["a"][i, k] * np.cos((k + 2) * theta + g["phi"][i, k])
        gran = _grain(layout, fr, win, mpp_r)
        inward = g["r0"][i] * rim + _DUST_ROUGH_UM * gran - np.sqrt(U * U + V * V)
        cover = _soft(-inward, max(g["soft"][i], edge))
        rimmed = 0.75 + 0.35 * np.exp(-((inward / 1.2) ** 2))  # darker outline
        t = np.float32(g["tint"][i])
        vec = _NEUTRAL * (1 - t) + _DUST_BROWN * np.float32(np.sqrt(3.0)) * t
        amount = g["density"][i] * cover * rimmed * (1.0 + 0.2 * gran)
        od = cv.get("od", 0.0, 3)
        od[win] += amount[..., None] * vec


def _grain(layout: c.Layout, fr: Frame, win: tuple[slice, slice], mpp_r: float) -> np.ndarray:
    cols = np.arange(fr.x + win[1].start, fr.x + win[1].stop)
    rows = np.arange(fr.y + win[0].start, fr.y + win[0].stop)
    return _GRAIN.grid(layout.seed, cols, rows, mpp_r) * np.float32(_GRAIN.fade(mpp_r))


def _draw_fibre(
    cv: _Canvas, fr: Frame, s: _Set, layout: c.Layout, edge: float, mpp_r: float
) -> None:
    g = _fibre_geometry(s.p)
    r = _radius(FIBRE, s.p, layout.artefacts)
    for i in range(len(s)):
        half = g["L"][i] / 2
        bend = g["sag"][i] / half**2
        amp, k = g["amp"][i], g["k"][i]
        e = max(g["soft"][i], edge)
        near = _near_band(half, bend, 2.1 * amp * k, 1.4 * amp + g["w"][i] + e)
        for win in fr.windows(s.x[i], s.y[i], r[i], g["angle"][i], near):
            U, V = fr.local(win, s.x[i], s.y[i], g["angle"][i])
            hw = g["w"][i] / 2 * (1.0 + 0.25 * np.sin(0.6 * k * U + g["phase3"][i]))
            off = np.abs(V - _fibre_centre(U, g, i)) / hw
            cover = _soft((off - 1.0) * hw, e) * _soft(np.abs(U) - half, e)
            along = 0.75 + 0.25 * np.sin(0.35 * k * U + g["phase4"][i])
            amount = g["density"][i] * cover * along * (0.55 + 0.45 * np.minimum(off, 1.0) ** 2)
            vec = _NEUTRAL if g["tint"][i] < 0.6 else _FIBRE_BLUE
            od = cv.get("od", 0.0, 3)
            od[win] += amount[..., None] * vec * np.float32(0.8)


def _draw_blur(
    cv: _Canvas, fr: Frame, s: _Set, layout: c.Layout, edge: float, mpp_r: float
) -> None:
    g = _blur_geometry(s.p)
    for i in range(len(s)):
        win = fr.window(s.x[i], s.y[i], g["a"][i])
        if win is None:
            continue
        U, V = fr.local(win, s.x[i], s.y[i], g["angle"][i])
        d = np.sqrt((U / g["a"][i]) ** 2 + (V / g["b"][i]) ** 2)
        m = np.clip((1.0 - d) / 0.35, 0.0, 1.0)
        m = m * m * (3 - 2 * m)
        dd = cv.get("defocus", 0.0)
        np.maximum(dd[win], g["sigma"][i] * m, out=dd[win])


def _draw_tears(
    cv: _Canvas, fr: Frame, s: _Set, layout: c.Layout, edge: float, mpp_r: float
) -> None:
    g = _tear_geometry(s.p)
    for i in range(len(s)):
        win = fr.window(s.x[i], s.y[i], g["R"][i])
        if win is None:
            continue
        xs, ys = fr.xs[win[1]], fr.ys[win[0]]
        t = c.tissue_noise(layout.tissue_scale_um).grid(layout.seed, xs, ys)
        rag = _RAG.grid(layout.seed, xs, ys)
        crack = _CRACK.grid(layout.seed, xs, ys)
        d = np.hypot((xs - s.x[i])[None, :], (ys - s.y[i])[:, None]) / g["R"][i]
        k = _tear_keep(
            t, rag, crack, _envelope(d), layout.tissue_threshold, g["grad"][i], g["depth"][i]
        ).astype(np.float32)
        keep = cv.get("keep", 1.0)
        np.minimum(keep[win], k, out=keep[win])


def _draw_rbc(cv: _Canvas, fr: Frame, s: _Set, layout: c.Layout, edge: float, mpp_r: float) -> None:
    g = _rbc_geometry(s.p, layout.artefacts.rbc_per_group)
    for i in np.flatnonzero(g["n"] > 1):  # vessel lumina of clusters
        win = fr.window(s.x[i], s.y[i], g["A"][i] * (1.0 + 4.0 / g["B"][i]) + 1.0)
        if win is None:
            continue
        U, V = fr.local(win, s.x[i], s.y[i], g["angle"][i])
        a, b = g["A"][i], g["B"][i]
        d = np.sqrt((U / a) ** 2 + (V / b) ** 2)
        lumen = _soft((d - 1.0) * b, max(1.0, edge))
        wall = np.exp(-((((d - 1.0) * b - 0.8) / 1.0) ** 2))
        lm = cv.get("lumen", 0.0)
        np.maximum(lm[win], lumen, out=lm[win])
        eos = cv.get("rbc_eos", 0.0)
        eos[win] += 0.25 * wall + 0.06 * lumen  # vessel wall; plasma
    cells = _rbc_cells(layout, s)
    for j in range(len(cells["x"])):
        rj = cells["r"][j]
        win = fr.window(cells["x"][j], cells["y"][j], rj + 1.5)
        if win is None:
            continue
        U, V = fr.local(win, cells["x"][j], cells["y"][j], cells["angle"][j])
        d = np.sqrt(U * U + (V / cells["q"][j]) ** 2) / rj
        cover = _soft((d - 1.0) * rj, max(0.5, edge))
        profile = 0.75 + 0.25 * np.exp(-(((d - 0.72) / 0.25) ** 2))  # biconcave: pale centre
        cov = cv.get("rbc_cover", 0.0)
        np.maximum(cov[win], cover, out=cov[win])
        eos = cv.get("rbc_eos", 0.0)
        eos[win] += cells["density"][j] * cover * profile


def _draw_bubbles(
    cv: _Canvas, fr: Frame, s: _Set, layout: c.Layout, edge: float, mpp_r: float
) -> None:
    g = _bubble_geometry(s.p)
    r = _radius(BUBBLE, s.p, layout.artefacts)
    for i in range(len(s)):
        win = fr.window(s.x[i], s.y[i], r[i])
        if win is None:
            continue
        R, wr = g["R"][i], g["wr"][i]
        U, V = fr.local(win, s.x[i], s.y[i], g["angle"][i])
        rr = np.sqrt(U * U + (V / g["q"][i]) ** 2)
        x = (rr - R) / wr  # ring widths from the outline, negative inside
        sharp = _soft(x * wr, max(0.8, edge))  # inside the outline
        ring = np.exp(-(((x + 0.5) / 0.55) ** 2)) * sharp
        bright = np.exp(-(((x + 1.5) / 0.45) ** 2))
        inner = _soft((x + 2.0) * wr, max(2.0, edge))
        hx, hy = g["hx"][i] * R, g["hy"][i] * R
        spot = np.exp(-(((U - hx) ** 2 + (V - hy) ** 2) / (0.12 * R) ** 2))
        od = cv.get("od", 0.0, 3)
        amount = g["density"][i] * ring - 0.08 * bright - 0.008 * inner - 0.03 * spot * inner
        od[win] += amount[..., None] * np.array([0.95, 1.0, 1.05], np.float32)
        dd = cv.get("defocus", 0.0)
        np.maximum(dd[win], g["sigma"][i] * inner, out=dd[win])


_DRAW = {
    FOLD: _draw_fold,
    INK: _draw_ink,
    DUST: _draw_dust,
    FIBRE: _draw_fibre,
    BLUR: _draw_blur,
    TEAR: _draw_tears,
    RBC: _draw_rbc,
    BUBBLE: _draw_bubbles,
}


# -- rendering -----------------------------------------------------------------
_DEFOCUS_LEVELS_UM = (0.0, 0.8, 1.6, 3.2)
_TRUNCATE = 3.0  # Gaussian kernels reach this many sigma


def defocus_margin(placed: Placed, mpp_r: float) -> int:
    """Extra px around a box that its blur needs: 0 when nothing in it is out of focus, or
    when the level (``mpp_r`` µm/px) is too coarse for the blur to show."""
    if BLUR not in placed.sets and BUBBLE not in placed.sets:
        return 0
    if _DEFOCUS_LEVELS_UM[1] / mpp_r < 0.25:
        return 0
    return int(math.ceil(_TRUNCATE * _DEFOCUS_LEVELS_UM[-1] / mpp_r)) + 2


def paint(
    layout: c.Layout,
    placed: Placed,
    frame: Frame,
    hem: np.ndarray,
    eos: np.ndarray,
    stain: StainModel,
    mpp_r: float,
    *,
    blur: bool,
) -> np.ndarray:
    """Linear RGB (0-255 float32, no sensor grain) of ``frame`` with the artefacts on it.

    ``hem`` and ``eos`` are the stain amounts of the tissue (modified in place).
    """
    cv = _Canvas(frame.h, frame.w)
    edge = 0.6 * mpp_r
    for name, s in placed:
        _DRAW[name](cv, frame, s, layout, edge, mpp_r)
    if cv.lumen is not None:
        hem *= 1.0 - 0.9 * cv.lumen
        eos *= 1.0 - 0.8 * cv.lumen
    if cv.rbc_cover is not None:
        clear = 1.0 - cv.rbc_cover
        hem *= clear
        eos *= clear
    if cv.rbc_eos is not None:
        eos += np.minimum(cv.rbc_eos, 1.6)
    if cv.keep is not None:
        hem *= cv.keep
        eos *= cv.keep
    if cv.fold is not None:
        hem *= cv.fold
        eos *= cv.fold
    # the same float32 operations as stains.beer_lambert, so that pixels no artefact
    # touches come out exactly as without artefacts
    m = stain.matrix()
    bg = np.asarray(stain.background, dtype=np.float32)
    rgb = np.empty((frame.h, frame.w, 3), np.float32)
    for ch in range(3):
        od = hem * (-_LN10 * m[0, ch])
        od += eos * (-_LN10 * m[1, ch])
        if cv.od is not None:
            extra = cv.od[..., ch]
            # over-exposed tissue highlights (negative density) darken under ink like glass
            np.minimum(od, 0.0, out=od, where=extra != 0)
            od -= _LN10 * extra
        np.exp(od, out=od)
        od *= bg[ch]
        rgb[..., ch] = od
    if blur and cv.defocus is not None:
        _defocus(rgb, cv.defocus, mpp_r)
    return rgb


def _defocus(rgb: np.ndarray, sigma_um: np.ndarray, mpp_r: float) -> None:
    """Blur ``rgb`` in place by the per-pixel Gaussian sigma ``sigma_um`` (µm).

    Blends a few fixed blur levels, each computed around the pixels that use
    it, so that a pixel's value depends on its neighbourhood alone (and boxes
    rendered apart agree).
    """
    levels = np.asarray(_DEFOCUS_LEVELS_UM, np.float32)
    top = min(int(np.searchsorted(levels, sigma_um.max())), len(levels) - 1)
    if top == 0:
        return
    h, w = sigma_um.shape
    a0, a1, b0, b1 = _bbox(sigma_um > 0)
    d = sigma_um[a0:a1, b0:b1]
    out = rgb[a0:a1, b0:b1].copy()
    weight0 = np.interp(d, levels[: top + 1], np.eye(top + 1)[0]).astype(np.float32)
    out *= weight0[..., None]
    for i in range(1, top + 1):
        weight = np.interp(d, levels[: top + 1], np.eye(top + 1)[i]).astype(np.float32)
        if not weight.any():
            continue
        r0, r1, c0, c1 = _bbox(weight > 0)
        s = float(levels[i] / mpp_r)
        m = int(math.ceil(_TRUNCATE * s)) + 2
        y0, y1 = max(a0 + r0 - m, 0), min(a0 + r1 + m, h)
        x0, x1 = max(b0 + c0 - m, 0), min(b0 + c1 + m, w)
        blurred = ndimage.gaussian_filter(
            rgb[y0:y1, x0:x1], sigma=(s, s, 0), truncate=_TRUNCATE, mode="nearest"
        )
        ry, rx = a0 + r0 - y0, b0 + c0 - x0
        out[r0:r1, c0:c1] += (
            weight[r0:r1, c0:c1, None] * blurred[ry : ry + r1 - r0, rx : rx + c1 - c0]
        )
    rgb[a0:a1, b0:b1] = out


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Rows and columns ``(r0, r1, c0, c1)`` (ends excluded) that hold the True pixels."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


# -- ground truth --------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Artefact:
    """One artefact of a synthetic slide.

    ``kind``: one of :data:`ARTEFACT_KINDS`. ``polygon``: ``(K, 2)`` float64
    x, y in level-0 px, enclosing every pixel the artefact changes.
    ``detail``: the ink colour for ink, else "".
    """

    kind: str
    polygon: np.ndarray
    detail: str = ""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Artefact):
            return NotImplemented
        return (
            self.kind == other.kind
            and self.detail == other.detail
            and np.array_equal(self.polygon, other.polygon)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        lo, hi = self.polygon.min(axis=0), self.polygon.max(axis=0)
        extra = f" ({self.detail})" if self.detail else ""
        return (
            f"<Artefact {self.kind}{extra} in x {lo[0]:.0f}-{hi[0]:.0f}, "
            f"y {lo[1]:.0f}-{hi[1]:.0f} px>"
        )


def _rotate(cx, cy, U, V, angle):
    """World µm of local ``U``, ``V`` (K, P) around centres ``cx``, ``cy`` (K,)."""
    ca, sa = np.cos(angle)[:, None], np.sin(angle)[:, None]
    return np.stack([cx[:, None] + U * ca - V * sa, cy[:, None] + U * sa + V * ca], axis=-1)


def _band_outline(cx, cy, angle, half, centre_fn, half_width_fn, n=41):
    """Polygon (K, 2n, 2) of a band between ``centre ± half_width`` along ``U`` in [-half, half]."""
    t = np.linspace(-1.0, 1.0, n)[None, :]
    U = half[:, None] * t
    mid, hw = centre_fn(U), half_width_fn(U)
    Ut = np.concatenate([U, U[:, ::-1]], axis=1)
    Vt = np.concatenate([mid + hw, (mid - hw)[:, ::-1]], axis=1)
    return _rotate(cx, cy, Ut, Vt, angle)


def _capsule_outline(cx, cy, angle, half, sag, radius, n=41, m=24):
    """Polygon (K, 2n + 2m, 2) of a bent capsule: ``|V - bend U²|`` within ``radius`` of the
    segment ``U`` in [-half, half], where ``bend = sag / half²``; the caps are pushed out so
    that the chords enclose them."""
    bend = (sag / half**2)[:, None]
    half, radius = half[:, None], radius[:, None]
    t = np.linspace(-1.0, 1.0, n)[None, :]
    phi = np.linspace(np.pi / 2, -np.pi / 2, m + 2)[None, 1:-1]
    r_out = radius / np.cos(np.pi / (2 * (m + 1)))
    top_u = half * t
    cap_u = half + r_out * np.cos(phi)
    cap_v = r_out * np.sin(phi)
    U = np.concatenate([top_u, cap_u, -top_u, -cap_u], axis=1)
    Vb = np.concatenate([radius + 0 * t, cap_v, -radius + 0 * t, -cap_v], axis=1)
    return _rotate(cx, cy, U, Vb + bend * U * U, angle)


def _ellipse_outline(cx, cy, angle, a, b, n=32):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)[None, :]
    return _rotate(cx, cy, a[:, None] * np.cos(t), b[:, None] * np.sin(t), angle)


def outlines(layout: c.Layout, placed: Placed) -> list[tuple[str, np.ndarray, str]]:
    """``(kind, polygon (K, 2) in µm, detail)`` for every placed artefact."""
    out: list[tuple[str, np.ndarray, str]] = []

    def add(kind: str, polys: np.ndarray, details=None) -> None:
        for i, poly in enumerate(polys):
            out.append((kind, poly, "" if details is None else details[i]))

    for name, s in placed:
        x, y, p = s.x, s.y, s.p
        if name == FOLD:
            g = _fold_geometry(p)
            half = g["L"] / 2
            bend = (g["sag"] / half**2)[:, None]
            add(
                name,
                _band_outline(
                    x,
                    y,
                    g["angle"],
                    half,
                    lambda U, bend=bend: bend * U * U,
                    lambda U, g=g: np.broadcast_to(g["W"][:, None] / 2 * 1.15 + 6.0, U.shape),
                ),
            )
        elif name == INK:
            g = _ink_geometry(p)
            polys = _capsule_outline(
                x, y, g["angle"], g["L"] / 2, g["sag"], g["W"] / 2 + _INK_MARGIN_UM
            )
            cols = layout.artefacts.ink_colours
            names = [cols[min(int(v * len(cols)), len(cols) - 1)] for v in g["colour"]]
            add(name, polys, names)
        elif name == DUST:
            g = _dust_geometry(p)
            t = np.linspace(0, 2 * np.pi, 64, endpoint=False)[None, :]
            rim = np.ones((len(s), 64))
            for k in range(4):
                rim += g["a"][:, k, None] * np.cos((k + 2) * t + g["phi"][:, k, None])
            rad = g["r0"][:, None] * rim + 5 * _DUST_ROUGH_UM + g["soft"][:, None] + 0.5
            rad = rad / np.cos(np.pi / 64)  # so that the chords stay outside the outline
            add(name, _rotate(x, y, rad * np.cos(t), rad * np.sin(t), g["angle"]))
        elif name == FIBRE:
            g = _fibre_geometry(p)
            soft = g["soft"][:, None]
            half = g["L"] / 2 + soft[:, 0]
            n = 121
            # widen by the most the centre line moves between two samples
            step = 2 * half[:, None] / (n - 1)
            slope = 2.1 * g["amp"][:, None] * g["k"][:, None] + np.abs(
                2 * g["sag"][:, None] / (g["L"][:, None] / 2)
            )
            hw = g["w"][:, None] / 2 * 1.25 + soft + slope * step / 2 + 0.5
            polys = _band_outline(
                x,
                y,
                g["angle"],
                half,
                lambda U, g=g: _fibre_centre(U, {k: v[:, None] for k, v in g.items()}),
                lambda U, hw=hw: np.broadcast_to(hw, U.shape),
                n,
            )
            add(name, polys)
        elif name == BLUR:
            g = _blur_geometry(p)
            k = 1.0 / np.cos(np.pi / 48)
            add(name, _ellipse_outline(x, y, g["angle"], g["a"] * k, g["b"] * k, 48))
        elif name == TEAR:
            # objects centred in the torn part are left out: their pixels reach further
            R = (_tear_geometry(p)["R"] + _TEAR_REACH_UM) / np.cos(np.pi / 32)
            add(name, _ellipse_outline(x, y, np.zeros(len(s)), R, R))
        elif name == RBC:
            g = _rbc_geometry(p, layout.artefacts.rbc_per_group)
            many = g["n"] > 1
            if many.any():
                k = 1.0 / np.cos(np.pi / 32)
                add(
                    VESSEL,
                    _ellipse_outline(
                        x[many],
                        y[many],
                        g["angle"][many],
                        g["A"][many] * (1.0 + 4.0 / g["B"][many]) * k,
                        (g["B"][many] + 4.0) * k,
                    ),
                )
            cells = _rbc_cells(layout, s)
            r = (cells["r"] + 1.0) / np.cos(np.pi / 16)
            add(
                name,
                _ellipse_outline(cells["x"], cells["y"], cells["angle"], r, r * cells["q"], 16),
            )
        elif name == BUBBLE:
            g = _bubble_geometry(p)
            R = (g["R"] + 3 * g["wr"]) / np.cos(np.pi / 48)
            add(name, _ellipse_outline(x, y, g["angle"], R, R * g["q"], 48))
    return out
