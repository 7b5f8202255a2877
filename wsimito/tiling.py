"""`TileGrid`: overlapping tiles whose cores partition the slide. Pure geometry, no I/O.

Along each axis, tile ``k`` starts at ``k * stride`` level-0 px and is
``tile_size * mpp / slide_mpp`` level-0 px long, with
``stride = (tile_size - overlap) * mpp / slide_mpp``. The number of tiles is
the smallest that reaches the slide's end, like the output size of a
convolution with padding at the far edge, so edge tiles stick out past the
slide (their outside reads as white) instead of shrinking.

Each tile owns a *core*: the boundary between the cores of neighbouring tiles
runs through the middle of their overlap, the first core starts at 0 and the
last ends at the slide's edge. The cores therefore partition the slide
(half-open boxes: every level-0 point lies in exactly one), and each core lies
``overlap / 2`` px (at ``mpp``) inside its tile except along the slide's own
edges. A detection kept only in the tile whose core holds it is counted once.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, overload

import numpy as np

from .checks import in_range, non_negative_int, positive_float, positive_int

if TYPE_CHECKING:
    import geopandas

    from .slide import Slide
    from .tissue import Tissue

MAX_TILES = 2_000_000
"""Largest grid built without ``max_tiles=None``: 20 times the tiles of a 5 x 2.5 cm
slide at 0.25 µm/px (512 px tiles), so only a wrong ``mpp`` or ``tile_size`` reaches it."""
# Bytes the grid's own arrays take per tile while it is built (positions,
# boxes, cores and the tissue test): what the memory estimate counts.
_BYTES_PER_TILE = 160


@dataclass(frozen=True)
class Tile:
    """One tile of a :class:`TileGrid`; every number is in level-0 px.

    ``x, y, width, height``: the box to read (``width = tile_size * mpp /
    slide_mpp``; it may reach past the slide). ``core``: the half-open box
    ``(x0, y0, x1, y1)`` this tile owns. ``row, col``: position in the full
    grid. ``index``: position in the grid's sequence of kept tiles.
    """

    x: float
    y: float
    width: float
    height: float
    core: tuple[float, float, float, float]
    row: int
    col: int
    index: int

    @property
    def box(self) -> tuple[float, float, float, float]:
        """``(x, y, width, height)`` in level-0 px, as ``Slide.read`` takes it."""
        return (self.x, self.y, self.width, self.height)


class TileGrid(Sequence[Tile]):
    """Tiles of ``tile_size`` px at ``mpp`` µm/px that overlap by ``overlap`` px.

    Tiles are numbered row by row over the kept tiles; ``grid[i]`` builds the
    :class:`Tile` on demand, and :meth:`boxes` / :meth:`cores` return them all
    as arrays.

    Parameters
    ----------
    slide : Slide
        Gives the level-0 size and resolution; no pixels are read.
    tile_size : int
        Tile side, px at ``mpp`` (>= 1).
    overlap : int
        Overlap between neighbours, px at ``mpp`` (``0 <= overlap < tile_size``).
        Choose it at least the diameter of the largest object a detector must
        see whole.
    mpp : float
        Resolution the tiles will be read at, µm/px (> 0).
    tissue : Tissue or None
        Without it every tile is kept.
    min_tissue : float
        Fraction in [0, 1]. Tiles whose tissue fraction (of the whole tile's
        area) is below this are dropped, unless their core overlaps tissue: a
        tile is kept when ``tissue.intersects(core) or tissue.fraction(tile) >=
        min_tissue``. Since the cores partition the slide, no tissue is ever
        left without the one tile that owns it, however small the tissue is.
        The tiles it prunes hold tissue only in their margins, which other
        tiles own; ``min_tissue=1.0`` keeps just the tiles whose core holds
        tissue, the fewest that still cover it all, and ``min_tissue=0`` keeps
        every tile.
    max_tiles : int or None
        Refuse grids of more tiles than this (counted before anything is
        allocated); :data:`MAX_TILES` (2,000,000) by default, ``None`` for no
        limit. A grid that large comes from a wrong ``mpp`` or ``tile_size``.

    Raises
    ------
    ValueError
        A parameter is out of range, the tissue belongs to another slide, or
        the grid would have more than ``max_tiles`` tiles (the message gives
        the count and the memory it would take, and how to force it).
    wsimito.errors.ParameterTypeError
        ``tile_size``, ``overlap`` or ``max_tiles`` is not a whole number, or a
        resolution is not a number (also a ``TypeError``).

    Examples
    --------
    >>> grid = TileGrid.from_dimensions((10_000, 8_000), slide_mpp=0.25)
    >>> len(grid), grid.shape
    (414, (18, 23))
    >>> grid[0].core
    (0.0, 0.0, 480.0, 480.0)
    """

    def __init__(
        self,
        slide: Slide,
        tile_size: int = 512,
        overlap: int = 64,
        mpp: float = 0.25,
        tissue: Tissue | None = None,
        min_tissue: float = 0.05,
        *,
        max_tiles: int | None = MAX_TILES,
    ) -> None:
        self._build(
            slide.dimensions, slide.mpp, tile_size, overlap, mpp, tissue, min_tissue, max_tiles
        )

    @classmethod
    def from_dimensions(
        cls,
        dimensions: tuple[int, int],
        slide_mpp: float,
        tile_size: int = 512,
        overlap: int = 64,
        mpp: float = 0.25,
        tissue: Tissue | None = None,
        min_tissue: float = 0.05,
        *,
        max_tiles: int | None = MAX_TILES,
    ) -> TileGrid:
        """A grid for a slide of ``dimensions = (width, height)`` level-0 px at ``slide_mpp`` µm/px.

        The other parameters are those of :class:`TileGrid`.
        """
        grid = cls.__new__(cls)
        grid._build(dimensions, slide_mpp, tile_size, overlap, mpp, tissue, min_tissue, max_tiles)
        return grid

    def _build(
        self,
        dimensions: tuple[int, int],
        slide_mpp: float,
        tile_size: int,
        overlap: int,
        mpp: float,
        tissue: Tissue | None,
        min_tissue: float,
        max_tiles: int | None,
    ) -> None:
        width, height = (positive_int(v, "slide dimensions", "level-0 px") for v in dimensions)
        tile_size = positive_int(tile_size, "tile_size", "px at mpp")
        overlap = non_negative_int(overlap, "overlap", "px at mpp")
        if overlap >= tile_size:
            raise ValueError(
                f"overlap must be in [0, tile_size) px at mpp, got {overlap} with tile_size "
                f"{tile_size}"
            )
        slide_mpp = positive_float(slide_mpp, "slide_mpp", "µm per pixel")
        mpp = positive_float(mpp, "mpp", "µm per pixel")
        min_tissue = in_range(min_tissue, "min_tissue", "fraction of the tile's area", 0.0, 1.0)
        if max_tiles is not None:
            max_tiles = positive_int(max_tiles, "max_tiles", "tiles")
        self.dimensions = (width, height)
        self.slide_mpp = slide_mpp
        self.mpp = mpp
        self.tile_size = tile_size
        self.overlap = overlap
        self.tissue = tissue
        self.min_tissue = min_tissue
        scale = mpp / slide_mpp
        self.tile_extent = tile_size * scale
        self.stride = (tile_size - overlap) * scale
        half = overlap * scale / 2
        cols = _count(width, self.tile_extent, self.stride, half)
        rows = _count(height, self.tile_extent, self.stride, half)
        if max_tiles is not None and cols * rows > max_tiles:
            raise ValueError(_too_many_tiles(cols, rows, tile_size, mpp, slide_mpp, max_tiles))
        self._x, self._bx = _axis(width, self.tile_extent, self.stride, half, cols)
        self._y, self._by = _axis(height, self.tile_extent, self.stride, half, rows)
        self.shape = (len(self._y), len(self._x))
        self._kept: np.ndarray | None = None
        if tissue is not None:
            self._kept = self._select(tissue)

    def _select(self, tissue: Tissue) -> np.ndarray:
        """Flat indices of the tiles to keep (see the class docstring for the rule)."""
        if tissue.dimensions != self.dimensions or not math.isclose(
            tissue.slide_mpp, self.slide_mpp, rel_tol=1e-6
        ):
            tw, th = tissue.dimensions
            gw, gh = self.dimensions
            raise ValueError(
                f"the tissue belongs to a {tw}x{th} px slide at {tissue.slide_mpp:g} µm/px, this "
                f"grid to a {gw}x{gh} px slide at {self.slide_mpp:g} µm/px; detect the tissue on "
                "the same slide"
            )
        rows, cols = np.divmod(np.arange(self.shape[0] * self.shape[1]), self.shape[1])
        x0, x1 = self._bx[cols], self._bx[cols + 1]
        y0, y1 = self._by[rows], self._by[rows + 1]
        keep = tissue.intersects(np.stack([x0, y0, x1 - x0, y1 - y0], axis=1))
        rest = np.flatnonzero(~keep)
        if self.min_tissue <= 0.0:
            keep[:] = True
        elif self.min_tissue < 1.0 and len(rest):  # a whole-tissue tile has tissue in its core
            rr, cc = rows[rest], cols[rest]
            side = np.full(len(rest), self.tile_extent)
            boxes = np.stack([self._x[cc], self._y[rr], side, side], axis=1)
            keep[rest] = tissue.fractions(boxes) >= self.min_tissue
        return np.flatnonzero(keep)

    # -- Sequence --------------------------------------------------------------------
    def __len__(self) -> int:
        return self.shape[0] * self.shape[1] if self._kept is None else len(self._kept)

    @overload
    def __getitem__(self, index: int) -> Tile: ...

    @overload
    def __getitem__(self, index: slice) -> list[Tile]: ...

    def __getitem__(self, index: int | slice) -> Tile | list[Tile]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = operator.index(index)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"tile index {index} out of range for a grid of {n} tiles")
        flat = i if self._kept is None else int(self._kept[i])
        row, col = (int(v) for v in np.unravel_index(flat, self.shape))
        return self._tile(i, row, col)

    def __iter__(self) -> Iterator[Tile]:
        rows, cols = self.positions()
        for i, (row, col) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
            yield self._tile(i, row, col)

    def _tile(self, index: int, row: int, col: int) -> Tile:
        core = (
            float(self._bx[col]),
            float(self._by[row]),
            float(self._bx[col + 1]),
            float(self._by[row + 1]),
        )
        return Tile(
            float(self._x[col]),
            float(self._y[row]),
            self.tile_extent,
            self.tile_extent,
            core,
            row,
            col,
            index,
        )

    # -- arrays ----------------------------------------------------------------------
    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the kept tiles in the full grid.

        Returns
        -------
        rows, cols : numpy.ndarray
            ``(N,)`` int64 each.
        """
        flat = np.arange(len(self)) if self._kept is None else self._kept
        rows, cols = np.unravel_index(flat, self.shape)
        return rows.astype(np.int64), cols.astype(np.int64)

    def boxes(self) -> np.ndarray:
        """The boxes to read, one per kept tile.

        Returns
        -------
        numpy.ndarray
            ``(N, 4)`` float64 ``(x, y, width, height)``, level-0 px.
        """
        rows, cols = self.positions()
        side = np.full(len(rows), self.tile_extent)
        return np.stack([self._x[cols], self._y[rows], side, side], axis=1)

    def cores(self) -> np.ndarray:
        """The boxes the kept tiles own (half-open; they partition the slide).

        Returns
        -------
        numpy.ndarray
            ``(N, 4)`` float64 ``(x0, y0, x1, y1)``, level-0 px.
        """
        rows, cols = self.positions()
        return np.stack(
            [self._bx[cols], self._by[rows], self._bx[cols + 1], self._by[rows + 1]], axis=1
        )

    def locate(self, points: np.ndarray) -> np.ndarray:
        """Index of the kept tile whose core holds each point.

        Parameters
        ----------
        points : numpy.ndarray
            ``(N, 2)`` ``(x, y)``, level-0 px.

        Returns
        -------
        numpy.ndarray
            ``(N,)`` int64; -1 for points outside the slide or owned by a
            dropped tile.
        """
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        x, y = pts[:, 0], pts[:, 1]
        width, height = self.dimensions
        inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
        cols = np.clip(np.searchsorted(self._bx, x, side="right") - 1, 0, self.shape[1] - 1)
        rows = np.clip(np.searchsorted(self._by, y, side="right") - 1, 0, self.shape[0] - 1)
        flat = rows * self.shape[1] + cols
        if self._kept is None:
            index = flat.astype(np.int64)
        else:
            lookup = np.full(self.shape[0] * self.shape[1], -1, dtype=np.int64)
            lookup[self._kept] = np.arange(len(self._kept))
            index = lookup[flat]
        return np.where(inside, index, -1)

    def to_geodataframe(self, geometry: Literal["tile", "core"] = "tile") -> geopandas.GeoDataFrame:
        """The kept tiles as a GeoDataFrame in level-0 px, for plotting and QuPath.

        Parameters
        ----------
        geometry : {"tile", "core"}
            The box read, or the box owned.

        Returns
        -------
        geopandas.GeoDataFrame
            Columns ``row``, ``col``, ``x``, ``y``, ``width``, ``height``,
            ``core_x0``, ``core_y0``, ``core_x1``, ``core_y1`` (level-0 px) and,
            with a tissue, ``tissue_fraction`` (of the tile).
        """
        import geopandas
        import shapely

        if geometry not in ("tile", "core"):
            raise ValueError(f"geometry must be 'tile' or 'core', got {geometry!r}")
        rows, cols = self.positions()
        boxes, cores = self.boxes(), self.cores()
        columns = {
            "row": rows,
            "col": cols,
            "x": boxes[:, 0],
            "y": boxes[:, 1],
            "width": boxes[:, 2],
            "height": boxes[:, 3],
            "core_x0": cores[:, 0],
            "core_y0": cores[:, 1],
            "core_x1": cores[:, 2],
            "core_y1": cores[:, 3],
        }
        if self.tissue is not None:
            columns["tissue_fraction"] = self.tissue.fractions(boxes)
        if geometry == "tile":
            shapes = shapely.box(
                boxes[:, 0], boxes[:, 1], boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]
            )
        else:
            shapes = shapely.box(cores[:, 0], cores[:, 1], cores[:, 2], cores[:, 3])
        return geopandas.GeoDataFrame(columns, geometry=shapes)

    def __repr__(self) -> str:
        kept = (
            "" if self._kept is None else f" ({len(self)} of {self.shape[0] * self.shape[1]} kept)"
        )
        return (
            f"<TileGrid {self.shape[0]}x{self.shape[1]} tiles{kept} of {self.tile_size} px, "
            f"overlap {self.overlap} px at {self.mpp:g} µm/px>"
        )


def _count(length: int, extent: float, stride: float, half: float) -> int:
    """Number of tiles along one axis: the fewest with ``(n - 1) * stride + extent >= length``."""
    n = 1 if length <= extent else math.ceil((length - extent) / stride) + 1
    while (n - 1) * stride + extent < length:  # rounding: the last tile must reach the end
        n += 1
    while n > 1 and (n - 1) * stride + half >= length:  # rounding: no empty last core
        n -= 1
    return n


def _too_many_tiles(
    cols: int, rows: int, tile_size: int, mpp: float, slide_mpp: float, max_tiles: int
) -> str:
    """The message for a grid above ``max_tiles``: count, memory and how to force it."""
    n = cols * rows
    grid_gib = n * _BYTES_PER_TILE / 2**30
    pixels_tib = n * tile_size * tile_size * 3 / 2**40
    return (
        f"a grid of {n:,} tiles ({cols:,} x {rows:,}) of {tile_size} px at {mpp:g} µm/px on a "
        f"slide at {slide_mpp:g} µm/px is above max_tiles={max_tiles:,}: its arrays alone "
        f"would need about {grid_gib:.3g} GiB and reading it {pixels_tib:.3g} TiB of pixels. "
        "Check mpp (the tiles' resolution, µm/px), the slide's mpp and tile_size; pass "
        "max_tiles=None to build it anyway"
    )


def _axis(
    length: int, extent: float, stride: float, half: float, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Tile starts ``(n,)`` and core boundaries ``(n + 1,)`` along one axis, level-0 px."""
    starts = np.arange(n, dtype=np.float64) * stride
    bounds = np.empty(n + 1, dtype=np.float64)
    bounds[0] = 0.0
    bounds[1:n] = starts[1:] + half
    bounds[n] = float(length)
    return starts, bounds
