"""The mitotic hotspot: the square window inside tissue that holds the most detections.

Pathologists count mitoses in the 10 high-power fields (HPF, 0.237 mm² each,
so 2.37 mm² together) with the highest activity. :func:`find_hotspot` places
a square window of that area at every position of a fine raster and returns
the best placement, found exactly with two summed-area tables (one of
detection counts, one of tissue area) rather than by sampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import shapely

from .checks import positive_float

if TYPE_CHECKING:
    from .tissue import Tissue

HPF_MM2 = 0.237
"""Area of one high-power field, mm²."""
TEN_HPF_MM2 = 10 * HPF_MM2
"""Area of the 10 high-power fields a mitotic count is reported on, mm²."""

# Rows of raster cells whose tissue fraction is computed at once (bounds memory).
_CELL_ROWS_PER_CHUNK = 256
# Tissue fractions closer than this count as equal when breaking ties.
_FRACTION_DECIMALS = 9


@dataclass(frozen=True)
class Hotspot:
    """The densest window of the slide, or the whole tissue when no window fits.

    Attributes
    ----------
    count: detections inside ``polygon``.
    polygon: the window (or the whole tissue), shapely geometry in level-0 px.
    area_mm2: area of ``polygon``, mm² (the real area counted, never rescaled).
    tissue_fraction: fraction (0 to 1) of ``polygon`` that is tissue.
    count_per_10hpf: ``count`` scaled to 2.37 mm² from the window's area (equal
        to ``count`` for the default 2.37 mm² window); ``None`` when
        ``whole_tissue`` is true, since no window was counted.
    whole_tissue: true when no window placement lies in tissue (the tissue is
        smaller than the window, or too narrow), so ``polygon`` is all the tissue.
    step_um: spacing of the raster the window was placed on, µm (0 when
        ``whole_tissue``).
    note: one sentence saying what was counted.
    """

    count: int
    polygon: shapely.Geometry
    area_mm2: float
    tissue_fraction: float
    count_per_10hpf: float | None
    whole_tissue: bool
    step_um: float
    note: str

    @property
    def density_per_mm2(self) -> float:
        """Detections per mm² of the counted area (0 when the area is 0)."""
        return self.count / self.area_mm2 if self.area_mm2 > 0 else 0.0


def find_hotspot(
    points_level0: np.ndarray,
    tissue: Tissue,
    slide_mpp: float,
    area_mm2: float = TEN_HPF_MM2,
    *,
    step_um: float = 16.0,
    min_tissue: float = 0.5,
) -> Hotspot:
    """The placement of a square window of ``area_mm2`` in tissue with the most detections.

    Parameters
    ----------
    points_level0:
        ``(N, 2)`` detections ``(x, y)`` in level-0 px.
    tissue:
        Where the tissue is (:class:`wsimito.tissue.Tissue`).
    slide_mpp:
        Level-0 resolution of the slide, µm/px.
    area_mm2:
        Window area, mm²; 2.37 mm² (10 HPF of 0.237 mm²) by default. The window
        is a square of side ``sqrt(area_mm2)`` mm (1539 µm by default).
    step_um:
        Target raster step, µm. The window side is divided into
        ``k = round(side / step_um)`` equal cells (16.04 µm for the defaults,
        about one cell nucleus), and the window is placed at every multiple of
        that cell size from the slide's origin (0, 0), fully inside the raster
        that covers the slide. Every placement is evaluated exactly.
    min_tissue:
        A placement is *inside tissue* when at least this fraction (0 to 1) of
        its area is tissue (exact, from the tissue mask). Areas beyond the
        slide's edge count as glass.

    The window counts detections ``x0 <= x < x0 + side``, ``y0 <= y < y0 + side``.
    Ties go to the placement with more tissue, then the smaller y, then the
    smaller x. When no placement is inside tissue (the tissue is smaller than
    the window, as in MIDOG regions of interest of about 2 mm², or too
    narrow), the hotspot is the whole tissue with its real area, and
    ``whole_tissue`` says so.
    """
    pts = np.asarray(points_level0, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(pts).all():
        raise ValueError("points_level0 holds NaN or infinite coordinates; drop them first")
    slide_mpp = positive_float(slide_mpp, "slide_mpp", "µm per pixel")
    area_mm2 = positive_float(area_mm2, "area_mm2", "mm²")
    step_um = positive_float(step_um, "step_um", "µm")
    if not 0.0 <= float(min_tissue) <= 1.0:
        raise ValueError(f"min_tissue must be a fraction between 0 and 1, got {min_tissue!r}")
    if abs(tissue.slide_mpp - slide_mpp) > 1e-6 * slide_mpp:
        raise ValueError(
            f"the tissue was found on a slide at {tissue.slide_mpp:g} µm/px but "
            f"slide_mpp is {slide_mpp:g}; pass the tissue of this slide"
        )
    if tissue.is_empty:
        return Hotspot(
            count=0,
            polygon=shapely.Polygon(),
            area_mm2=0.0,
            tissue_fraction=0.0,
            count_per_10hpf=None,
            whole_tissue=True,
            step_um=0.0,
            note="no tissue: nothing was counted",
        )

    side_um = math.sqrt(area_mm2) * 1000.0
    k = max(1, round(side_um / step_um))
    cell = side_um / k / slide_mpp  # level-0 px per raster cell
    best = _best_placement(pts, tissue, cell, k, float(min_tissue))
    if best is None:
        return _whole_tissue(pts, tissue, area_mm2, float(min_tissue))
    x0, y0 = best[0] * cell, best[1] * cell
    side = k * cell
    x, y = pts[:, 0], pts[:, 1]
    count = int(np.count_nonzero((x >= x0) & (x < x0 + side) & (y >= y0) & (y < y0 + side)))
    return Hotspot(
        count=count,
        polygon=shapely.box(x0, y0, x0 + side, y0 + side),
        area_mm2=area_mm2,
        tissue_fraction=tissue.fraction((x0, y0, side, side)),
        count_per_10hpf=count * TEN_HPF_MM2 / area_mm2,
        whole_tissue=False,
        step_um=side_um / k,
        note=(
            f"densest {area_mm2:g} mm² square ({side_um:.0f} µm side) with at least "
            f"{min_tissue:.0%} tissue; placements every {side_um / k:.2f} µm"
        ),
    )


def _best_placement(
    pts: np.ndarray, tissue: Tissue, cell: float, k: int, min_tissue: float
) -> tuple[int, int] | None:
    """Raster origin ``(i, j)`` (cells) of the best window, or None when none is in tissue."""
    width, height = tissue.dimensions
    nx, ny = math.ceil(width / cell), math.ceil(height / cell)
    if nx < k or ny < k:
        return None
    # Only windows that can reach tissue matter: crop the raster to the tissue's
    # bounding box grown by one window (still at least k cells wide, as nx >= k).
    s = tissue.scale
    cols = np.flatnonzero(tissue.mask.any(axis=0))
    rows = np.flatnonzero(tissue.mask.any(axis=1))
    cx0 = max(0, math.floor(cols[0] * s / cell) - k)
    cx1 = min(nx, math.ceil((cols[-1] + 1) * s / cell) + k)
    cy0 = max(0, math.floor(rows[0] * s / cell) - k)
    cy1 = min(ny, math.ceil((rows[-1] + 1) * s / cell) + k)
    w, h = cx1 - cx0, cy1 - cy0

    counts = _window_sums(_point_cells(pts, cell, cx0, cy0, w, h), k)
    fractions = _window_sums(_cell_fractions(tissue, cell, cx0, cy0, w, h), k) / (k * k)
    eligible = np.flatnonzero(fractions.ravel() >= min_tissue - 1e-12)
    if eligible.size == 0:
        return None
    c = counts.ravel()[eligible]
    f = np.round(fractions.ravel()[eligible], _FRACTION_DECIMALS)
    best = eligible[np.lexsort((eligible, -f, -c))[0]]  # flat index: row-major, so y then x
    j, i = divmod(int(best), counts.shape[1])
    return cx0 + i, cy0 + j


def _point_cells(pts: np.ndarray, cell: float, cx0: int, cy0: int, w: int, h: int) -> np.ndarray:
    """Number of points in each raster cell of the ``h x w`` block starting at cell (cx0, cy0)."""
    ix = np.floor(pts[:, 0] / cell).astype(np.int64) - cx0
    iy = np.floor(pts[:, 1] / cell).astype(np.int64) - cy0
    inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    flat = iy[inside] * w + ix[inside]
    return np.bincount(flat, minlength=w * h).reshape(h, w)


def _cell_fractions(tissue: Tissue, cell: float, cx0: int, cy0: int, w: int, h: int) -> np.ndarray:
    """Tissue fraction (0 to 1) of each raster cell of the block, exact for the mask.

    The mask is piecewise constant, so a cell's tissue area is separable: integrate
    each mask row over the cell columns, then those sums over the cell rows.
    Area beyond the mask counts as glass, as in :meth:`Tissue.fractions`.
    """
    mask = tissue.mask
    rows, cols = mask.shape
    s = tissue.scale
    u = np.clip((cx0 + np.arange(w + 1)) * cell / s, 0.0, cols)  # cell edges, mask px
    v = np.clip((cy0 + np.arange(h + 1)) * cell / s, 0.0, rows)
    out = np.empty((h, w), dtype=np.float64)
    for r0 in range(0, h, _CELL_ROWS_PER_CHUNK):
        r1 = min(h, r0 + _CELL_ROWS_PER_CHUNK)
        i0 = min(int(v[r0]), rows - 1)
        i1 = max(i0 + 1, min(rows, math.ceil(v[r1])))
        along_x = _integrate(mask[i0:i1], u, axis=1)
        out[r0:r1] = _integrate(along_x, v[r0 : r1 + 1] - i0, axis=0)
    return out * (s * s) / (cell * cell)


def _integrate(a: np.ndarray, edges: np.ndarray, axis: int) -> np.ndarray:
    """Integral of the piecewise-constant ``a`` (one value per pixel) along ``axis``
    between consecutive ``edges`` (pixel units, clipped to the array)."""
    n = a.shape[axis]
    e = np.clip(edges, 0.0, n)
    k = np.minimum(e.astype(np.int64), n - 1)
    frac = e - k
    values = np.take(a, k, axis=axis).astype(np.float64)
    below = np.take(np.cumsum(a, axis=axis, dtype=np.float64), k, axis=axis) - values
    total = below + (frac[None, :] if axis == 1 else frac[:, None]) * values
    return np.diff(total, axis=axis)


def _window_sums(grid: np.ndarray, k: int) -> np.ndarray:
    """Sum of every ``k x k`` window of ``grid``, through a summed-area table."""
    h, w = grid.shape
    dtype = np.int64 if np.issubdtype(grid.dtype, np.integer) else np.float64
    sat = np.zeros((h + 1, w + 1), dtype=dtype)
    np.cumsum(np.cumsum(grid, axis=0, dtype=dtype), axis=1, out=sat[1:, 1:])
    return sat[k:, k:] - sat[:-k, k:] - sat[k:, :-k] + sat[:-k, :-k]


def _whole_tissue(pts: np.ndarray, tissue: Tissue, area_mm2: float, min_tissue: float) -> Hotspot:
    geometry = shapely.union_all(np.asarray(tissue.polygons.geometry, dtype=object))
    shapely.prepare(geometry)
    count = int(np.count_nonzero(shapely.covers(geometry, shapely.points(pts)))) if len(pts) else 0
    tissue_mm2 = tissue.area_mm2
    return Hotspot(
        count=count,
        polygon=geometry,
        area_mm2=tissue_mm2,
        tissue_fraction=1.0,
        count_per_10hpf=None,
        whole_tissue=True,
        step_um=0.0,
        note=(
            f"no {area_mm2:g} mm² square holds {min_tissue:.0%} tissue (tissue "
            f"{tissue_mm2:.3g} mm²): the whole tissue was counted instead"
        ),
    )
