"""Tissue detection: which parts of a slide hold tissue, as a mask and as polygons.

:func:`detect_tissue` reads the whole slide once at a coarse resolution
(8 µm/px by default, through the coarsest pyramid level fine enough for it)
and classifies each pixel by its colour; :class:`Tissue` holds the result and
answers "how much of this level-0 box is tissue" in constant time per box.
See ``docs/tissue-and-tiles.md`` for when to use which method.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import shapely
from PIL import Image
from skimage.morphology import remove_small_objects

from .checks import choice, in_range, non_negative_float, positive_float, positive_int
from .errors import EmptyTissueError, SlideReadError

if TYPE_CHECKING:
    import geopandas
    import matplotlib.axes

    from .slide import Slide

Method = Literal["otsu", "fixed"]
OnError = Literal["raise", "skip"]
METHODS: tuple[Method, ...] = ("otsu", "fixed")
ON_ERROR: tuple[OnError, ...] = ("raise", "skip")

MAX_MASK_PIXELS = 100_000_000
"""Largest tissue mask made without ``max_mask_pixels=None``: 10,000 x 10,000 px,
80 x 80 mm at the default 8 µm/px, about 2 GB of working memory."""
# Working memory per mask pixel while detecting: RGB, chroma, masks, labels.
_BYTES_PER_MASK_PIXEL = 20
# Blocks of the tissue image are read this many px of the pyramid level wide;
# a block that fails is read again in pieces of one file tile.
_BLOCK_LEVEL_PX = 4096

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
    method: Literal["otsu", "fixed"] = "otsu",
    min_object_um2: float = 10_000.0,
    min_hole_um2: float = 10_000.0,
    chroma_threshold: float | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    max_mask_pixels: int | None = MAX_MASK_PIXELS,
) -> Tissue:
    """Find the tissue of ``slide``; ink, glass, dust and scanner borders are not tissue.

    Pixels greener than they are red (green, teal and blue marker ink) are never
    tissue; neutral pixels (white or grey glass, black borders, dust, bubble
    rims) fall below the chroma threshold.

    Parameters
    ----------
    slide : Slide
        The slide; its level-0 resolution must be known (``slide.mpp``).
    mpp : float
        Resolution of the mask, µm/px (> 0). The whole slide is read once at
        this resolution from the coarsest pyramid level that is fine enough,
        so the cost depends on ``mpp`` and the pyramid, not on the level-0 size.
    method : {"otsu", "fixed"}
        ``"otsu"`` (default): a per-slide chroma threshold, chosen by Otsu's
        method between glass and tissue; it recognises images that hold no
        glass (regions of interest) and then keeps every coloured pixel.
        ``"fixed"``: a fixed chroma threshold (``chroma_threshold``, default 8),
        for faint or pale tissue that Otsu would cut off, and for tiny images.
    min_object_um2 : float
        Tissue pieces smaller than this are dropped (dust, debris), µm² (>= 0).
    min_hole_um2 : float
        Holes smaller than this inside tissue are filled, µm² (>= 0).
    chroma_threshold : float or None
        Only with ``method="fixed"``: the chroma ``max(R, G, B) - min(R, G, B)``,
        in 8-bit levels from 0 to 255, from which a pixel counts as tissue.
    on_error : {"raise", "skip"}
        What a region the reader cannot decode (a corrupt tile) does:
        ``"raise"`` (default) raises :class:`~wsimito.errors.SlideReadError`
        naming the file and the region; ``"skip"`` marks the region unknown,
        not tissue (:attr:`Tissue.unread`, :attr:`Tissue.unread_area_mm2`),
        warns, and goes on. The image is read in blocks, and a failing block
        again file tile by file tile, so a bad tile loses only itself.
    max_mask_pixels : int or None
        Refuse masks of more pixels than this before reading anything;
        :data:`MAX_MASK_PIXELS` (10^8) by default, ``None`` for no limit.

    Returns
    -------
    Tissue
        The mask at ``mpp`` and everything derived from it.

    Raises
    ------
    ValueError
        A parameter is out of range, or the mask would have more than
        ``max_mask_pixels`` pixels (the message gives its size and memory).
    wsimito.MissingMPPError
        The slide's resolution is unknown.
    wsimito.errors.SlideReadError
        With ``on_error="raise"``, a region could not be read.

    Warns
    -----
    UserWarning
        With ``on_error="skip"``, when regions could not be read (their number,
        area in mm² and the first error).

    Examples
    --------
    >>> tissue = wsimito.detect_tissue(slide)               # doctest: +SKIP
    >>> f"{tissue.area_mm2:.1f} mm²"                        # doctest: +SKIP
    """
    method = choice(method, "method", METHODS)
    on_error = choice(on_error, "on_error", ON_ERROR)
    if chroma_threshold is not None and method != "fixed":
        raise ValueError(
            "chroma_threshold= applies to method='fixed' only; drop it or pass method='fixed'"
        )
    if chroma_threshold is not None:
        chroma_threshold = _chroma_level(chroma_threshold)
    mpp = positive_float(mpp, "mpp", "µm per pixel (the tissue mask's resolution)")
    min_object_um2 = non_negative_float(min_object_um2, "min_object_um2", "µm²")
    min_hole_um2 = non_negative_float(min_hole_um2, "min_hole_um2", "µm²")
    width, height = slide.dimensions
    slide_mpp = slide.mpp
    rows, cols = _mask_rows_cols((width, height), slide_mpp, mpp, max_mask_pixels)
    rgb, unread, failed = _read_tissue_image(slide, mpp, rows, cols, on_error)
    pixel_um2 = mpp * mpp
    mask, used = classify_tissue(
        rgb,
        method=method,
        chroma_threshold=chroma_threshold,
        min_object_px=min_object_um2 / pixel_um2,
        min_hole_px=min_hole_um2 / pixel_um2,
        unread=unread if failed else None,
    )
    tissue = Tissue(
        mask,
        mpp=mpp,
        slide_mpp=slide_mpp,
        dimensions=(width, height),
        image=_preview(rgb),
        method=method,
        chroma_threshold=used,
        unread=unread if failed else None,
        unread_boxes=[box for box, _ in failed],
    )
    if failed:
        warnings.warn(
            f"{slide.name}: {len(failed)} region(s) of the tissue image at {mpp:g} µm/px could "
            f"not be read ({tissue.unread_area_mm2:.3g} mm²); they count as unknown, not as "
            f"tissue (see Tissue.unread and Tissue.unread_boxes). First error: {failed[0][1]}",
            stacklevel=2,
        )
    return tissue


def _read_tissue_image(
    slide: Slide, mpp: float, rows: int, cols: int, on_error: str
) -> tuple[np.ndarray, np.ndarray, list[tuple[tuple[float, float, float, float], str]]]:
    """The slide at ``mpp`` on the mask's grid, read block by block.

    Returns the ``(rows, cols, 3)`` image (white where unread), the mask of
    unread pixels, and per failed piece its level-0 box ``(x, y, w, h)`` and
    the error message. A block that fails is read again in pieces of about one
    file tile; with ``on_error="raise"`` the first failing piece raises.
    """
    s = mpp / slide.mpp  # level-0 px per mask px
    level = slide.best_level(s)
    ds = slide.level_downsamples[level]
    tile_w, tile_h = slide.level_tile_sizes[level]
    block = max(1, int(_BLOCK_LEVEL_PX * ds / s))
    piece_c, piece_r = max(1, int(tile_w * ds / s)), max(1, int(tile_h * ds / s))
    rgb = np.empty((rows, cols, 3), dtype=np.uint8)
    unread = np.zeros((rows, cols), dtype=bool)
    failed: list[tuple[tuple[float, float, float, float], str]] = []

    def read(r0: int, c0: int, r1: int, c1: int) -> None:
        box = (c0 * s, r0 * s, (c1 - c0) * s, (r1 - r0) * s)
        part = slide.read(box, mpp=mpp)
        if part.shape[:2] != (r1 - r0, c1 - c0):  # read() rounds; keep the mask's grid
            part = np.asarray(Image.fromarray(part).resize((c1 - c0, r1 - r0), _BOX))
        rgb[r0:r1, c0:c1] = part

    for r0 in range(0, rows, block):
        for c0 in range(0, cols, block):
            r1, c1 = min(rows, r0 + block), min(cols, c0 + block)
            try:
                read(r0, c0, r1, c1)
                continue
            except SlideReadError:
                pass
            for pr in range(r0, r1, piece_r):
                for pc in range(c0, c1, piece_c):
                    pr1, pc1 = min(r1, pr + piece_r), min(c1, pc + piece_c)
                    try:
                        read(pr, pc, pr1, pc1)
                    except SlideReadError as exc:
                        if on_error == "raise":
                            raise SlideReadError(
                                f"{exc} Pass on_error='skip' to detect_tissue to count "
                                "unreadable regions as unknown instead of failing.",
                                path=exc.path,
                                level=exc.level,
                                box=exc.box,
                            ) from exc
                        rgb[pr:pr1, pc:pc1] = 255
                        unread[pr:pr1, pc:pc1] = True
                        box = (pc * s, pr * s, (pc1 - pc) * s, (pr1 - pr) * s)
                        failed.append((box, str(exc)))
    return rgb, unread, failed


def classify_tissue(
    rgb: np.ndarray,
    *,
    method: Literal["otsu", "fixed"] = "otsu",
    chroma_threshold: float | None = None,
    min_object_px: float = 0.0,
    min_hole_px: float = 0.0,
    unread: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Tissue mask of an RGB image, and the chroma threshold used.

    The pixel-level core of :func:`detect_tissue`.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(h, w, 3)`` uint8 RGB.
    method : {"otsu", "fixed"}
        As in :func:`detect_tissue`.
    chroma_threshold : float or None
        With ``method="fixed"``: chroma from which a pixel is tissue, 8-bit
        levels (0 to 255); 8 when ``None``.
    min_object_px, min_hole_px : float
        Smallest tissue piece kept and smallest hole left open, px of ``rgb``.
    unread : numpy.ndarray or None
        Bool ``(h, w)``: pixels that could not be read. They are left out of
        the threshold's statistics and are never tissue.

    Returns
    -------
    mask : numpy.ndarray
        Bool ``(h, w)``, True on tissue.
    chroma_threshold : float
        The threshold used, 8-bit chroma levels.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (h, w, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    method = choice(method, "method", METHODS)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    chroma = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    ink = g > np.minimum(r, 255 - _INK_GREEN_OVER_RED) + _INK_GREEN_OVER_RED
    excluded = ink if unread is None else ink | unread
    if method == "fixed":
        t = _CHROMA_FLOOR if chroma_threshold is None else _chroma_level(chroma_threshold)
    else:
        t = _otsu_chroma_threshold(np.bincount(chroma[~excluded], minlength=256))
    mask = (chroma >= t) & ~excluded
    if min_object_px > 1 and mask.any():  # drop pieces of fewer than min_object_px pixels
        mask = remove_small_objects(mask, max_size=math.ceil(min_object_px) - 1, connectivity=2)
    if min_hole_px > 1 and not mask.all():  # fill holes of fewer than min_hole_px pixels
        mask = _fill_small_holes(mask, min_hole_px)
    if unread is not None:  # a hole made by an unread region is unknown, not tissue
        mask &= ~unread
    return mask, float(t)


def _fill_small_holes(mask: np.ndarray, min_hole_px: float) -> np.ndarray:
    """``mask`` with its background regions of fewer than ``min_hole_px`` pixels filled.

    Such a region is a hole in tissue, a lumen or pale cytoplasm, even where it
    touches the image border (the edge of a region of interest). Only a region
    that covers at least half of the image is always kept as background: it is
    the glass of a small image, not a hole (scikit-image's ``remove_small_holes``
    would turn a thin or tiny image of glass into tissue).
    """
    from skimage.measure import label

    labels = label(~mask, connectivity=1)
    sizes = np.bincount(labels.ravel())
    small = (sizes < min_hole_px) & (sizes < 0.5 * mask.size)
    small[0] = False
    return mask | small[labels]


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

    Parameters
    ----------
    mask : numpy.ndarray
        Bool ``(rows, columns)`` at ``mpp``; its shape must be
        :meth:`mask_shape` ``(dimensions, slide_mpp=..., mpp=...)``.
    mpp : float
        Resolution of the mask, µm/px.
    slide_mpp : float
        Level-0 resolution of the slide, µm/px.
    dimensions : tuple of int
        ``(width, height)`` of the slide, level-0 px.
    polygons : shapely geometry, optional
        The exact outline, level-0 px, when the tissue was given as polygons.
    image : numpy.ndarray, optional
        An RGB preview of the slide, for ``_repr_html_``.
    method : str, optional
        How the tissue was found (``"otsu"``, ``"fixed"``, ``"full"``, ``"polygons"``).
    chroma_threshold : float, optional
        The chroma threshold used by detection, 8-bit levels.
    unread : numpy.ndarray, optional
        Bool mask of the pixels that could not be read (unknown, never tissue).
    unread_boxes : sequence of tuple, optional
        The level-0 boxes ``(x, y, w, h)`` (px) that could not be read.

    Attributes
    ----------
    mask : numpy.ndarray
        Bool ``(rows, columns)`` array at ``mpp``.
    mpp : float
        Resolution of the mask, µm/px.
    slide_mpp : float
        Level-0 resolution of the slide, µm/px.
    dimensions : tuple of int
        ``(width, height)`` of the slide, level-0 px.
    unread_boxes : list of tuple
        Level-0 boxes ``(x, y, w, h)`` (px) that could not be read; empty when
        everything was read.
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
        chroma_threshold: float | None = None,
        unread: np.ndarray | None = None,
        unread_boxes: Iterable[tuple[float, float, float, float]] = (),
    ) -> None:
        self.mpp = positive_float(mpp, "mpp", "µm per pixel")
        self.slide_mpp = positive_float(slide_mpp, "slide_mpp", "µm per pixel")
        width, height = (positive_int(v, "dimensions", "level-0 px") for v in dimensions)
        self.dimensions = (width, height)
        mask = np.asarray(mask, dtype=bool)
        expected = self.mask_shape(self.dimensions, slide_mpp=self.slide_mpp, mpp=self.mpp)
        if mask.shape != expected:
            raise ValueError(
                f"a {width}x{height} px slide at {self.mpp:g} µm/px (level 0 "
                f"{self.slide_mpp:g} µm/px) needs a mask of shape {expected} (rows, columns), "
                f"got {mask.shape}"
            )
        if unread is not None:
            unread = np.asarray(unread, dtype=bool)
            if unread.shape != expected:
                raise ValueError(
                    f"unread must have the mask's shape {expected}, got {unread.shape}"
                )
            mask = mask & ~unread
        self.mask = mask
        self.method = method
        self.chroma_threshold = chroma_threshold
        self.unread_boxes = [tuple(float(v) for v in box) for box in unread_boxes]
        self._unread = unread
        self._geometry = polygons  # exact outline when built from polygons
        self._image = image
        self._sat: np.ndarray | None = None
        self._gdf: geopandas.GeoDataFrame | None = None

    # -- constructors -----------------------------------------------------------
    @classmethod
    def full(
        cls, slide: Slide, mpp: float = 8.0, *, max_mask_pixels: int | None = MAX_MASK_PIXELS
    ) -> Tissue:
        """Everything is tissue: the whole slide.

        Parameters
        ----------
        slide : Slide
            The slide; its resolution must be known.
        mpp : float
            Resolution of the mask, µm/px (> 0).
        max_mask_pixels : int or None
            As in :func:`detect_tissue`.

        Returns
        -------
        Tissue
            A mask of ones and the slide's rectangle as polygon.
        """
        mpp = positive_float(mpp, "mpp", "µm per pixel (the tissue mask's resolution)")
        rows, cols = _mask_rows_cols(slide.dimensions, slide.mpp, mpp, max_mask_pixels)
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
    def from_polygons(
        cls,
        polygons: Any,
        slide: Slide,
        mpp: float = 8.0,
        *,
        max_mask_pixels: int | None = MAX_MASK_PIXELS,
    ) -> Tissue:
        """Tissue given as polygons in level-0 px (e.g. a QuPath annotation).

        The polygons are repaired if invalid and clipped to the slide (with a
        warning when more than 1 % of their area lies outside it). ``area_mm2``
        and ``polygons`` are exact; the mask at ``mpp`` marks every pixel the
        polygons touch, so it never misses tissue.

        Parameters
        ----------
        polygons : GeoDataFrame, GeoSeries, shapely geometry or list of them
            Polygons in level-0 px of ``slide``. QuPath exports are in level-0
            px minus ``openslide.bounds-x/y`` where the slide has bounds.
        slide : Slide
            The slide; its resolution must be known.
        mpp : float
            Resolution of the mask, µm/px (> 0).
        max_mask_pixels : int or None
            As in :func:`detect_tissue`.

        Returns
        -------
        Tissue
            The tissue inside the polygons.

        Raises
        ------
        ValueError
            A vertex is NaN or infinite.
        wsimito.EmptyTissueError
            No polygon was given, none has an area, or none overlaps the slide
            (a ``ValueError``): the input is plainly wrong, so no empty tissue
            is made from it.
        TypeError
            ``polygons`` is not polygons.
        """
        mpp = positive_float(mpp, "mpp", "µm per pixel (the tissue mask's resolution)")
        width, height = slide.dimensions
        given = _polygonal(polygons)
        if shapely.is_empty(given):
            raise EmptyTissueError(
                "the polygons given as tissue are empty (no polygon with an area); pass the "
                "tissue outline in level-0 px, or tissue='auto' to detect it"
            )
        geometry = _polygonal(shapely.intersection(given, shapely.box(0, 0, width, height)))
        outside = 1.0 - float(shapely.area(geometry)) / float(shapely.area(given))
        if shapely.is_empty(geometry):
            x0, y0, x1, y1 = shapely.bounds(given)
            raise EmptyTissueError(
                f"none of the tissue polygons overlaps the {width}x{height} px slide: they span "
                f"x {x0:g}..{x1:g}, y {y0:g}..{y1:g} (level-0 px). Are they in level-0 px of "
                "this slide (not a lower level, not µm)?"
            )
        if outside > 0.01:
            warnings.warn(
                f"{outside:.1%} of the tissue polygons' area lies outside the {width}x{height} px "
                "slide and was clipped; check that they are in level-0 px of this slide",
                stacklevel=2,
            )
        rows, cols = _mask_rows_cols(slide.dimensions, slide.mpp, mpp, max_mask_pixels)
        s = mpp / slide.mpp
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
        """The numpy shape ``(rows, columns)`` of the mask for a slide.

        Parameters
        ----------
        dimensions : tuple of int
            ``(width, height)`` of the slide, level-0 px.
        slide_mpp : float
            Level-0 resolution, µm/px.
        mpp : float
            Resolution of the mask, µm/px.

        Returns
        -------
        tuple of int
            ``(rows, columns)``, mask px.
        """
        return _mask_rows_cols(dimensions, slide_mpp, mpp, None)

    @property
    def unread(self) -> np.ndarray:
        """Bool mask at ``mpp`` of the pixels that could not be read: unknown, never tissue."""
        if self._unread is None:
            self._unread = np.zeros(self.mask.shape, dtype=bool)
        return self._unread

    @property
    def unread_area_mm2(self) -> float:
        """Area of the slide that could not be read, mm² (0 when everything was read)."""
        if self._unread is None or not self._unread.any():
            return 0.0
        wx, wy = self._pixel_extents()
        return float(wy @ self._unread.astype(np.float64) @ wx) * self.slide_mpp**2 * 1e-6

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
            chroma_threshold=self.chroma_threshold,
            unread=self.unread,
            unread_boxes=self.unread_boxes,
        )

    def fraction(self, box: tuple[float, float, float, float]) -> float:
        """Fraction (0 to 1) of the level-0 box ``(x, y, w, h)`` (px) that is tissue.

        Parameters
        ----------
        box : tuple of float
            ``(x, y, w, h)``, level-0 px.

        Returns
        -------
        float
            Tissue area / box area; 0 for an empty box.
        """
        return float(self.fractions(np.asarray([box], dtype=np.float64))[0])

    def fractions(self, boxes: np.ndarray) -> np.ndarray:
        """Tissue fraction of each level-0 box.

        Exact for the piecewise-constant mask (each pixel counts by the part of
        it inside the box); a summed-area table makes it O(1) per box. The
        part of a box outside the slide counts as glass.

        Parameters
        ----------
        boxes : numpy.ndarray
            ``(N, 4)`` ``(x, y, w, h)``, level-0 px.

        Returns
        -------
        numpy.ndarray
            ``(N,)`` float64 fractions in [0, 1].
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

        Parameters
        ----------
        boxes : numpy.ndarray
            ``(N, 4)`` ``(x, y, w, h)``, level-0 px.

        Returns
        -------
        numpy.ndarray
            ``(N,)`` bool.
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

    # -- internals ------------------------------------------------------------------
    def _clip(
        self, x: np.ndarray, y: np.ndarray, w: np.ndarray, h: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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

    def _integral(
        self, u0: np.ndarray, v0: np.ndarray, u1: np.ndarray, v1: np.ndarray
    ) -> np.ndarray:
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

    def plot(self, **kwargs: Any) -> matplotlib.axes.Axes:
        """The image tissue detection saw, with the tissue outline, in level-0 px.

        See :func:`wsimito.plot.plot_tissue` for the keyword arguments (``ax``,
        ``scale_bar``, ``legend``). Needs matplotlib (``pip install "wsimito[plot]"``).

        Returns
        -------
        matplotlib.axes.Axes
        """
        from .plot import plot_tissue

        return plot_tissue(self, **kwargs)

    def __repr__(self) -> str:
        rows, cols = self.mask.shape
        unread = self.unread_area_mm2
        return (
            f"<Tissue {self.area_mm2:.4g} mm², mask {cols}x{rows} px at {self.mpp:g} µm/px, "
            f"method {self.method}" + (f", {unread:.3g} mm² unread>" if unread else ">")
        )

    @property
    def image(self) -> np.ndarray | None:
        """The RGB image the mask was computed from, ``(rows, cols, 3)`` uint8 at :attr:`mpp`
        (covering the mask's grid, level-0 px ``[0, cols * scale) x [0, rows * scale)``),
        or ``None`` when the tissue was not detected from pixels."""
        return self._image

    def _repr_html_(self) -> str:
        """A thumbnail with the tissue outline, beside the area (for Jupyter)."""
        from .overview import draw_overview, html_preview

        rows, cols = self.mask.shape
        s = self.scale
        background = self._image
        if background is None:
            background = np.where(self.mask[..., None], (236, 200, 220), 255).astype(np.uint8)
        picture = draw_overview(
            background,
            (round(cols * s), round(rows * s)),
            size=min(_PREVIEW_SIZE, max(rows, cols)),
            tissue=self.geometry,
        )
        return html_preview(
            picture,
            [
                ("area", f"{self.area_mm2:.4g} mm²"),
                ("mask", f"{cols} x {rows} px at {self.mpp:g} µm/px"),
                ("method", str(self.method)),
            ],
        )


# -- helpers ------------------------------------------------------------------------


_BOX = Image.Resampling.BOX


def _mask_rows_cols(
    dimensions: tuple[int, int], slide_mpp: float, mpp: float, max_pixels: int | None
) -> tuple[int, int]:
    """``(rows, columns)`` of a mask at ``mpp`` covering a slide; refuses more than ``max_pixels``.

    ``dimensions`` is ``(width, height)`` in level-0 px at ``slide_mpp`` µm/px.
    """
    width, height = dimensions
    s = mpp / slide_mpp
    rows, cols = max(1, math.ceil(height / s)), max(1, math.ceil(width / s))
    if max_pixels is not None and rows * cols > positive_int(max_pixels, "max_mask_pixels", "px"):
        gib = rows * cols * _BYTES_PER_MASK_PIXEL / 2**30
        raise ValueError(
            f"a tissue mask of {cols:,} x {rows:,} px ({rows * cols:,} px) at {mpp:g} µm/px for a "
            f"{width}x{height} px slide at {slide_mpp:g} µm/px is above max_mask_pixels="
            f"{max_pixels:,} and would need about {gib:.3g} GiB. The tissue mask's mpp is "
            "coarse, e.g. 8 µm/px; pass max_mask_pixels=None to make it anyway"
        )
    return rows, cols


def _chroma_level(value: object) -> float:
    return in_range(
        value, "chroma_threshold", "chroma level (max(R, G, B) - min(R, G, B), 8-bit)", 0, 255
    )


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
    for i, g in enumerate(geoms):
        coords = shapely.get_coordinates(g)
        if not np.isfinite(coords).all():
            raise ValueError(
                f"tissue polygon {i} has NaN or infinite vertices; polygons need finite "
                "level-0 px coordinates (drop or repair it)"
            )
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
