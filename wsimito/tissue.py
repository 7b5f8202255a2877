"""Tissue detection: which parts of a slide hold tissue, as a mask and as polygons.

:func:`detect_tissue` reads the whole slide once at a coarse resolution
(8 µm/px by default, through the coarsest pyramid level fine enough for it)
and classifies each pixel by its colour; :class:`Tissue` holds the result and
answers "how much of this level-0 box is tissue" in constant time per box.
See ``docs/tissue-and-tiles.md`` for when to use which method.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from PIL import Image
from scipy import ndimage

from .errors import EmptyTissueError

if TYPE_CHECKING:
    import geopandas

    from .slide import Slide

METHODS = ("otsu", "fixed")

# Colour of a pixel: chroma = max(R, G, B) - min(R, G, B), in 8-bit levels.
# White glass, grey glass, black scanner borders, dust and bubble rims are all
# near-neutral (chroma about 0-8 on scanned slides); H&E tissue is coloured.
_CHROMA_FLOOR = 8.0  # below this nothing is tissue: the noise of neutral glass
_CHROMA_SURE = 25.0  # at or above this a (non-ink) pixel is always tissue
# Otsu's lower class is glass when its mean chroma is below this; otherwise the
# image has no glass at all (a region of interest that is all tissue).
_GLASS_MAX_MEAN = 15.0
# Pen ink (green, teal, blue, and their mixtures with tissue) is greener than
# it is red; both H&E stains absorb green more than red, so H&E never is.
_INK_GREEN_OVER_RED = 4
# Longest side of the image kept for ``_repr_html_`` (px).
_PREVIEW_SIZE = 512


def detect_tissue(
    slide: Slide,
    *,
    mpp: float = 8.0,
    method: str = "otsu",
    min_object_um2: float = 10_000.0,
    min_hole_um2: float = 10_000.0,
    threshold: float | None = None,
) -> Tissue:
    """Find the tissue of ``slide``; ink, glass, dust and scanner borders are not tissue.

    Parameters
    ----------
    slide:
        The slide; its level-0 resolution must be known (``slide.mpp``).
    mpp:
        Resolution of the mask in µm/px. The whole slide is read once at this
        resolution from the coarsest pyramid level that is fine enough, so the
        cost depends on ``mpp`` and the pyramid, not on the level-0 size.
    method:
        ``"otsu"`` (default): a per-slide threshold on chroma, chosen by Otsu's
        method between glass and tissue; it recognises images that hold no
        glass (regions of interest) and then keeps every coloured pixel.
        ``"fixed"``: a fixed chroma threshold (``threshold``, default 8 levels),
        for faint or pale tissue that Otsu would cut off, and for tiny images.
    min_object_um2:
        Tissue pieces smaller than this (µm²) are dropped (dust, debris).
    min_hole_um2:
        Holes smaller than this (µm²) inside tissue are filled.
    threshold:
        Only with ``method="fixed"``: the chroma, ``max(R, G, B) - min(R, G, B)``
        in 8-bit levels, from which a pixel counts as tissue.

    Pixels greener than they are red (green, teal and blue marker ink) are never
    tissue; neutral pixels (white or grey glass, black borders, dust, bubble
    rims) fall below the chroma threshold.

    Examples
    --------
    >>> tissue = wsimito.detect_tissue(slide)               # doctest: +SKIP
    >>> f"{tissue.area_mm2:.1f} mm²"                        # doctest: +SKIP
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if threshold is not None and method != "fixed":
        raise ValueError(
            "threshold= applies to method='fixed' only; drop it or pass method='fixed'"
        )
    mpp = _positive(mpp, "mpp", "µm per pixel, e.g. 8.0")
    min_object_um2 = _non_negative(min_object_um2, "min_object_um2")
    min_hole_um2 = _non_negative(min_hole_um2, "min_hole_um2")
    width, height = slide.dimensions
    slide_mpp = slide.mpp
    s = mpp / slide_mpp
    cols, rows = _mask_shape((width, height), s)
    rgb = slide.read((0.0, 0.0, cols * s, rows * s), mpp=mpp)
    if rgb.shape[:2] != (rows, cols):  # read() rounds; keep the mask on the exact grid
        rgb = np.asarray(Image.fromarray(rgb).resize((cols, rows), Image.Resampling.BOX))
    pixel_um2 = mpp * mpp
    mask, used = classify_tissue(
        rgb,
        method=method,
        threshold=threshold,
        min_object_px=min_object_um2 / pixel_um2,
        min_hole_px=min_hole_um2 / pixel_um2,
    )
    return Tissue(
        mask,
        mpp=mpp,
        slide_mpp=slide_mpp,
        dimensions=(width, height),
        image=_preview(rgb),
        method=method,
        threshold=used,
    )


def classify_tissue(
    rgb: np.ndarray,
    *,
    method: str = "otsu",
    threshold: float | None = None,
    min_object_px: float = 0.0,
    min_hole_px: float = 0.0,
) -> tuple[np.ndarray, float]:
    """Tissue mask of an RGB image ``(h, w, 3)`` uint8, and the chroma threshold used.

    The pixel-level core of :func:`detect_tissue`; sizes are in px of ``rgb``.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (h, w, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    chroma = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    ink = g > np.minimum(r, 255 - _INK_GREEN_OVER_RED) + _INK_GREEN_OVER_RED
    if method == "fixed":
        t = _CHROMA_FLOOR if threshold is None else _non_negative(threshold, "threshold")
    else:
        t = _otsu_chroma_threshold(np.bincount(chroma[~ink], minlength=256))
    mask = (chroma >= t) & ~ink
    mask = _drop_small_components(mask, min_object_px, full_connectivity=True)
    mask = ~_drop_small_components(~mask, min_hole_px, full_connectivity=False)
    return mask, float(t)


def _drop_small_components(
    mask: np.ndarray, min_px: float, *, full_connectivity: bool
) -> np.ndarray:
    """``mask`` without its connected components of fewer than ``min_px`` pixels."""
    if min_px <= 1 or not mask.any():
        return mask
    structure = np.ones((3, 3), dtype=bool) if full_connectivity else None
    labels, n = ndimage.label(mask, structure=structure)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_px
    keep[0] = False
    return keep[labels]


def _otsu_chroma_threshold(histogram: np.ndarray) -> float:
    """Otsu on sqrt(chroma), kept between the glass noise floor and the sure-tissue level.

    ``histogram[k]`` counts the (non-ink) pixels of chroma ``k``. The square
    root evens out the long tail of dense tissue so that the split falls
    between glass and pale tissue rather than inside the tissue. When the
    lower class is itself coloured the image has no glass: every pixel above
    the noise floor is tissue.
    """
    counts = histogram.astype(np.float64)
    levels = np.arange(len(counts), dtype=np.float64)
    total = counts.sum()
    if total == 0 or counts[int(_CHROMA_FLOOR) :].sum() == 0:
        return _CHROMA_FLOOR
    value = np.sqrt(levels)
    w0 = np.cumsum(counts)  # pixels with chroma <= k
    s0 = np.cumsum(counts * value)
    w1 = total - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (s0 / w0 - (s0[-1] - s0) / w1) ** 2
    between[~np.isfinite(between)] = -1.0
    t = float(np.argmax(between) + 1)  # tissue: chroma >= t
    lower = counts[: int(t)]
    if lower.sum() == 0 or (lower @ levels[: int(t)]) / lower.sum() >= _GLASS_MAX_MEAN:
        return _CHROMA_FLOOR
    return min(max(t, _CHROMA_FLOOR), _CHROMA_SURE)


class Tissue:
    """Where the tissue is: a boolean mask at ``mpp`` and its polygons in level-0 px.

    Mask pixel ``(i, j)`` covers level-0 x in ``[j * s, (j + 1) * s)`` and y in
    ``[i * s, (i + 1) * s)`` with ``s = mpp / slide_mpp`` (level-0 px per mask
    px). The mask has ``ceil(width / s)`` columns and ``ceil(height / s)`` rows,
    so its last column and row may reach past the slide; areas and fractions
    count only the part inside the slide.

    Build one with :func:`detect_tissue`, :meth:`full` or :meth:`from_polygons`.

    Attributes
    ----------
    mask: bool ``(h, w)`` array at ``mpp``.
    mpp: resolution of the mask, µm/px.
    slide_mpp: level-0 resolution of the slide, µm/px.
    dimensions: ``(width, height)`` of the slide, level-0 px.
    """

    def __init__(
        self,
        mask: np.ndarray,
        *,
        mpp: float,
        slide_mpp: float,
        dimensions: tuple[int, int],
        polygons: Any = None,
        image: np.ndarray | None = None,
        method: str | None = None,
        threshold: float | None = None,
    ) -> None:
        self.mpp = _positive(mpp, "mpp", "µm per pixel")
        self.slide_mpp = _positive(slide_mpp, "slide_mpp", "µm per pixel")
        width, height = (int(v) for v in dimensions)
        if width < 1 or height < 1:
            raise ValueError(
                f"dimensions must be positive (width, height) in px, got {dimensions!r}"
            )
        self.dimensions = (width, height)
        mask = np.asarray(mask, dtype=bool)
        expected = _mask_shape(self.dimensions, self.scale)[::-1]
        if mask.shape != expected:
            raise ValueError(
                f"a {width}x{height} px slide at {self.mpp:g} µm/px (level 0 {self.slide_mpp:g} µm/px) "
                f"needs a mask of shape {expected} (rows, columns), got {mask.shape}"
            )
        self.mask = mask
        self.method = method
        self.threshold = threshold
        self._geometry = polygons  # exact outline when built from polygons
        self._image = image
        self._sat: np.ndarray | None = None
        self._gdf: geopandas.GeoDataFrame | None = None

    # -- constructors -----------------------------------------------------------
    @classmethod
    def full(cls, slide: Slide, mpp: float = 8.0) -> Tissue:
        """Everything is tissue: the whole slide, as a mask at ``mpp`` (µm/px)."""
        s = _positive(mpp, "mpp", "µm per pixel") / slide.mpp
        cols, rows = _mask_shape(slide.dimensions, s)
        width, height = slide.dimensions
        return cls(
            np.ones((rows, cols), dtype=bool),
            mpp=mpp,
            slide_mpp=slide.mpp,
            dimensions=slide.dimensions,
            polygons=shapely.box(0, 0, width, height),
            method="full",
        )

    @classmethod
    def from_polygons(cls, polygons: Any, slide: Slide, mpp: float = 8.0) -> Tissue:
        """Tissue given as polygons in level-0 px (e.g. a QuPath annotation).

        ``polygons``: a GeoDataFrame or GeoSeries, a shapely geometry, or a list
        of polygons. They are repaired if invalid and clipped to the slide.
        ``area_mm2`` and ``polygons`` are exact; the mask at ``mpp`` (µm/px)
        marks every pixel the polygons touch, so it never misses tissue.
        """
        width, height = slide.dimensions
        geometry = shapely.intersection(_polygonal(polygons), shapely.box(0, 0, width, height))
        geometry = _polygonal(geometry)
        s = _positive(mpp, "mpp", "µm per pixel") / slide.mpp
        cols, rows = _mask_shape(slide.dimensions, s)
        mask = _rasterise_touched(geometry, s, (rows, cols))
        return cls(
            mask,
            mpp=mpp,
            slide_mpp=slide.mpp,
            dimensions=slide.dimensions,
            polygons=geometry,
            method="polygons",
        )

    @staticmethod
    def mask_shape(dimensions: tuple[int, int], *, slide_mpp: float, mpp: float) -> tuple[int, int]:
        """``(rows, columns)`` of the mask at ``mpp`` (µm/px) for a slide of ``dimensions`` (level-0 px)."""
        cols, rows = _mask_shape(dimensions, mpp / slide_mpp)
        return (rows, cols)

    # -- geometry -----------------------------------------------------------------
    @property
    def scale(self) -> float:
        """Level-0 px per mask px (``mpp / slide_mpp``)."""
        return self.mpp / self.slide_mpp

    @property
    def is_empty(self) -> bool:
        """True when no pixel is tissue."""
        return not self.mask.any()

    @property
    def area_mm2(self) -> float:
        """Tissue area in mm², counting only the part inside the slide."""
        if self._geometry is not None:
            return float(shapely.area(self._geometry)) * self.slide_mpp**2 * 1e-6
        wx, wy = self._pixel_extents()
        area_px = float(wy @ self.mask.astype(np.float64) @ wx)
        return area_px * self.slide_mpp**2 * 1e-6

    @property
    def polygons(self) -> geopandas.GeoDataFrame:
        """The tissue as valid polygons with holes, level-0 px, one row per piece.

        Columns: ``geometry`` and ``area_mm2``. For detected tissue they trace
        the mask's pixel edges exactly (clipped to the slide), so their total
        area equals :attr:`area_mm2`.
        """
        if self._gdf is None:
            import geopandas

            geometry = self._geometry if self._geometry is not None else self._trace_mask()
            parts = shapely.get_parts(geometry) if not shapely.is_empty(geometry) else []
            parts = [p for p in parts if isinstance(p, shapely.Polygon) and p.area > 0]
            area = np.array([p.area for p in parts], dtype=np.float64) * self.slide_mpp**2 * 1e-6
            self._gdf = geopandas.GeoDataFrame({"area_mm2": area}, geometry=parts)
        return self._gdf

    @property
    def geometry(self) -> shapely.Geometry:
        """The tissue as one shapely (Multi)Polygon, level-0 px (the union of :attr:`polygons`)."""
        if self._geometry is not None:
            return self._geometry
        return shapely.union_all(np.asarray(self.polygons.geometry, dtype=object))

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Whether each level-0 point ``(x, y)`` px lies in the tissue (its outline included).

        This is the rule by which :func:`wsimito.count_mitoses` counts: the
        same polygons QuPath shows as the "Tissue" annotation.

        Parameters
        ----------
        points : numpy.ndarray
            ``(N, 2)`` level-0 px.

        Returns
        -------
        numpy.ndarray
            ``(N,)`` bool.
        """
        xy = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if not len(xy) or self.is_empty:
            return np.zeros(len(xy), dtype=bool)
        geometry = self.geometry
        shapely.prepare(geometry)
        return shapely.intersects_xy(geometry, xy[:, 0], xy[:, 1])

    def without(self, boxes: np.ndarray) -> Tissue:
        """This tissue minus level-0 boxes ``(x0, y0, x1, y1)`` px (e.g. cores never read).

        The polygons and :attr:`area_mm2` of the result are exact; its mask
        drops the pixels that the boxes cover entirely, so, like
        :meth:`from_polygons`, it never misses tissue.

        Returns
        -------
        Tissue
            A new object; ``self`` is unchanged.
        """
        corners = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if not len(corners):
            return self
        cut = shapely.union_all(shapely.box(*corners.T))
        geometry = _polygonal(shapely.difference(self.geometry, cut))
        s = self.scale
        rows, cols = self.mask.shape
        mask = self.mask.copy()
        for x0, y0, x1, y1 in corners.tolist():
            j0, j1 = max(0, math.ceil(x0 / s)), min(cols, math.floor(x1 / s))
            i0, i1 = max(0, math.ceil(y0 / s)), min(rows, math.floor(y1 / s))
            if j1 > j0 and i1 > i0:
                mask[i0:i1, j0:j1] = False
        return Tissue(
            mask,
            mpp=self.mpp,
            slide_mpp=self.slide_mpp,
            dimensions=self.dimensions,
            polygons=geometry,
            method=self.method,
            threshold=self.threshold,
        )

    def fraction(self, box: tuple[float, float, float, float]) -> float:
        """Fraction (0 to 1) of the level-0 box ``(x, y, w, h)`` (px) that is tissue."""
        return float(self.fractions(np.asarray([box], dtype=np.float64))[0])

    def fractions(self, boxes: np.ndarray) -> np.ndarray:
        """Tissue fraction of each level-0 box; ``boxes`` is ``(N, 4)`` ``(x, y, w, h)`` px.

        Exact for the piecewise-constant mask (each pixel counts by the part of
        it inside the box); a summed-area table makes it O(1) per box. The
        part of a box outside the slide counts as glass.
        """
        x, y, w, h = _boxes(boxes)
        x0, y0, x1, y1 = self._clip(x, y, w, h)
        s = self.scale
        covered = self._integral(x0 / s, y0 / s, x1 / s, y1 / s) * (s * s)
        area = w * h
        out = np.zeros_like(area)
        np.divide(covered, area, out=out, where=area > 0)
        return np.clip(out, 0.0, 1.0)

    def intersects(self, boxes: np.ndarray) -> np.ndarray:
        """Whether any tissue pixel overlaps each level-0 box ``(x, y, w, h)`` (px).

        A tissue pixel counts when it overlaps the half-open box by a positive
        area, however small (a box that only touches a pixel's edge does not),
        so a box that holds any tissue point is never reported empty.
        Returns a bool ``(N,)`` array.
        """
        x0, y0, x1, y1 = self._clip(*_boxes(boxes))
        s = self.scale
        rows, cols = self.mask.shape
        j0 = np.clip(np.floor(x0 / s), 0, cols).astype(np.int64)
        j1 = np.clip(np.ceil(x1 / s), 0, cols).astype(np.int64)
        i0 = np.clip(np.floor(y0 / s), 0, rows).astype(np.int64)
        i1 = np.clip(np.ceil(y1 / s), 0, rows).astype(np.int64)
        sat = self._summed_area()
        count = sat[i1, j1] - sat[i0, j1] - sat[i1, j0] + sat[i0, j0]
        return (count > 0) & (x1 > x0) & (y1 > y0)

    def require(self) -> Tissue:
        """Return self, or raise :class:`EmptyTissueError` when there is no tissue."""
        if self.is_empty:
            raise EmptyTissueError(
                "no tissue was found. Check the slide thumbnail; for faint tissue try "
                "detect_tissue(slide, method='fixed'), or pass tissue=None to use the whole slide"
            )
        return self

    # -- internals ------------------------------------------------------------------
    def _clip(self, x, y, w, h) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Boxes ``(x, y, w, h)`` clipped to the slide, as ``(x0, y0, x1, y1)`` level-0 px."""
        width, height = self.dimensions
        return (
            np.clip(x, 0, width),
            np.clip(y, 0, height),
            np.clip(x + w, 0, width),
            np.clip(y + h, 0, height),
        )

    def _pixel_extents(self) -> tuple[np.ndarray, np.ndarray]:
        """Width of each mask column and height of each row inside the slide, level-0 px."""
        s = self.scale
        rows, cols = self.mask.shape
        width, height = self.dimensions
        edges_x = np.minimum(np.arange(cols + 1) * s, width)
        edges_y = np.minimum(np.arange(rows + 1) * s, height)
        return np.diff(edges_x), np.diff(edges_y)

    def _summed_area(self) -> np.ndarray:
        """``sat[i, j]`` = number of tissue pixels in ``mask[:i, :j]``."""
        if self._sat is None:
            rows, cols = self.mask.shape
            dtype = np.int32 if rows * cols < 2**31 else np.int64
            sat = np.zeros((rows + 1, cols + 1), dtype=dtype)
            np.cumsum(self.mask.view(np.uint8), axis=1, dtype=dtype, out=sat[1:, 1:])
            np.cumsum(sat[1:, 1:], axis=0, out=sat[1:, 1:])
            self._sat = sat
        return self._sat

    def _integral(self, u0, v0, u1, v1) -> np.ndarray:
        """Tissue area (mask px²) of the boxes ``[u0, u1) x [v0, v1)`` in mask px."""
        return (
            self._corner(u1, v1)
            - self._corner(u0, v1)
            - self._corner(u1, v0)
            + self._corner(u0, v0)
        )

    def _corner(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Tissue area in ``[0, u) x [0, v)``: the summed-area table is bilinear inside a pixel."""
        sat = self._summed_area()
        rows, cols = self.mask.shape
        u = np.clip(u, 0.0, cols)
        v = np.clip(v, 0.0, rows)
        j = np.minimum(np.floor(u).astype(np.int64), cols - 1)
        i = np.minimum(np.floor(v).astype(np.int64), rows - 1)
        fu, fv = u - j, v - i
        s00, s01 = sat[i, j], sat[i, j + 1]
        s10, s11 = sat[i + 1, j], sat[i + 1, j + 1]
        return (1 - fv) * ((1 - fu) * s00 + fu * s01) + fv * ((1 - fu) * s10 + fu * s11)

    def _trace_mask(self) -> shapely.Geometry:
        """Union of the mask's pixel runs, scaled to level-0 px and clipped to the slide."""
        rows, cols = self.mask.shape
        if not self.mask.any():
            return shapely.GeometryCollection()
        padded = np.zeros((rows, cols + 2), dtype=np.int8)
        padded[:, 1:-1] = self.mask
        step = np.diff(padded, axis=1)
        run_rows, starts = np.nonzero(step == 1)
        _, ends = np.nonzero(step == -1)
        # Stack identical runs of consecutive rows into one rectangle.
        key_changes = np.ones(len(starts), dtype=bool)
        order = np.lexsort((run_rows, ends, starts))
        r, a, b = run_rows[order], starts[order], ends[order]
        key_changes[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1]) | (r[1:] != r[:-1] + 1)
        group = np.cumsum(key_changes) - 1
        top = r[key_changes]
        bottom = np.zeros(group[-1] + 1, dtype=np.int64)
        np.maximum.at(bottom, group, r + 1)
        s = self.scale
        width, height = self.dimensions
        rects = shapely.box(
            a[key_changes] * s,
            top * s,
            np.minimum(b[key_changes] * s, width),
            np.minimum(bottom * s, height),
        )
        return shapely.union_all(rects)

    def __repr__(self) -> str:
        rows, cols = self.mask.shape
        return (
            f"<Tissue {self.area_mm2:.4g} mm², mask {cols}x{rows} px at {self.mpp:g} µm/px, "
            f"method {self.method}>"
        )

    def _repr_html_(self) -> str:
        """A thumbnail with the tissue outline, and the area."""
        preview = self._image
        rows, cols = self.mask.shape
        factor = min(1.0, _PREVIEW_SIZE / max(rows, cols))
        size = (max(1, round(cols * factor)), max(1, round(rows * factor)))
        if preview is None:
            preview = np.full((size[1], size[0], 3), 255, dtype=np.uint8)
            small = _resize_mask(self.mask, size)
            preview[small] = (236, 200, 220)
        else:
            preview = np.asarray(Image.fromarray(preview).resize(size, Image.Resampling.BILINEAR))
            small = _resize_mask(self.mask, size)
        outline = small & ~_erode(small)
        preview = preview.copy()
        preview[outline] = (0, 160, 60)
        buf = io.BytesIO()
        Image.fromarray(preview).save(buf, format="PNG")
        b64 = base64.b64encode(buf.getvalue()).decode()
        rows_html = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>"
            f"{html.escape(v)}</td></tr>"
            for k, v in (
                ("area", f"{self.area_mm2:.4g} mm²"),
                ("mask", f"{cols} x {rows} px at {self.mpp:g} µm/px"),
                ("method", str(self.method)),
            )
        )
        return (
            f"<div style='display:flex;gap:1em;align-items:flex-start'>"
            f"<img src='data:image/png;base64,{b64}'/><table>{rows_html}</table></div>"
        )


# -- helpers ------------------------------------------------------------------------


def _mask_shape(dimensions: tuple[int, int], s: float) -> tuple[int, int]:
    """``(columns, rows)`` of a mask with ``s`` level-0 px per pixel covering the slide."""
    width, height = dimensions
    return (max(1, math.ceil(width / s)), max(1, math.ceil(height / s)))


def _positive(value: float, name: str, what: str) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number of {what}; got {value!r}")
    return value


def _non_negative(value: float, name: str) -> float:
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def _boxes(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(
            f"boxes must be an (N, 4) array of level-0 (x, y, w, h) px, got shape {arr.shape}"
        )
    x, y, w, h = arr.T
    if np.any(w < 0) or np.any(h < 0):
        raise ValueError("box widths and heights must be >= 0 px")
    return x, y, w, h


def _polygonal(polygons: Any) -> shapely.Geometry:
    """A valid (Multi)Polygon from a GeoDataFrame, GeoSeries, geometry or iterable of them."""
    if hasattr(polygons, "geometry") and hasattr(polygons, "crs"):
        geoms = list(getattr(polygons, "geometry", polygons))
    elif isinstance(polygons, shapely.Geometry):
        geoms = [polygons]
    elif isinstance(polygons, Iterable) and not isinstance(polygons, (str, bytes)):
        geoms = list(polygons)
    else:
        raise TypeError(
            f"expected polygons (a GeoDataFrame, shapely geometry or list of polygons), got "
            f"{type(polygons).__name__}"
        )
    bad = [type(g).__name__ for g in geoms if not isinstance(g, shapely.Geometry)]
    if bad:
        raise TypeError(f"polygons must be shapely geometries in level-0 px; got {bad[0]}")
    parts = (
        [
            p
            for g in shapely.make_valid(np.asarray(geoms, dtype=object))
            for p in shapely.get_parts(g)
        ]
        if geoms
        else []
    )
    polys = [
        p for p in parts if isinstance(p, (shapely.Polygon, shapely.MultiPolygon)) and p.area > 0
    ]
    if not polys:
        return shapely.MultiPolygon()
    return shapely.union_all(polys)


def _rasterise_touched(geometry: shapely.Geometry, s: float, shape: tuple[int, int]) -> np.ndarray:
    """Mask of the pixels (``s`` level-0 px wide) that ``geometry`` touches."""
    from skimage.draw import polygon as draw_polygon

    mask = np.zeros(shape, dtype=bool)
    if shapely.is_empty(geometry):
        return mask
    for poly in shapely.get_parts(geometry):
        inside = np.zeros(shape, dtype=bool)
        ext = np.asarray(poly.exterior.coords) / s - 0.5  # pixel centres at integers
        inside[draw_polygon(ext[:, 1], ext[:, 0], shape)] = True
        for ring in poly.interiors:
            hole = np.asarray(ring.coords) / s - 0.5
            inside[draw_polygon(hole[:, 1], hole[:, 0], shape)] = False
        mask |= inside
    # Pixels on the outline: test each candidate exactly against the geometry.
    outline = shapely.segmentize(shapely.boundary(geometry), max_segment_length=s / 2)
    pts = np.floor(shapely.get_coordinates(outline) / s).astype(np.int64)
    near = pts[:, None, :] + np.array([(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)])[None]
    near = np.unique(near.reshape(-1, 2), axis=0)
    rows, cols = shape
    near = near[(near[:, 0] >= 0) & (near[:, 0] < cols) & (near[:, 1] >= 0) & (near[:, 1] < rows)]
    cells = shapely.box(near[:, 0] * s, near[:, 1] * s, (near[:, 0] + 1) * s, (near[:, 1] + 1) * s)
    shapely.prepare(geometry)
    hit = shapely.intersects(geometry, cells)
    mask[near[hit, 1], near[hit, 0]] = True
    return mask


def _preview(rgb: np.ndarray) -> np.ndarray:
    rows, cols = rgb.shape[:2]
    factor = min(1.0, _PREVIEW_SIZE / max(rows, cols))
    if factor == 1.0:
        return rgb.copy()
    size = (max(1, round(cols * factor)), max(1, round(rows * factor)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    img = Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)
    return np.asarray(img) > 127


def _erode(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1, constant_values=False)
    return (
        padded[1:-1, 1:-1]
        & padded[:-2, 1:-1]
        & padded[2:, 1:-1]
        & padded[1:-1, :-2]
        & padded[1:-1, 2:]
    )
