"""`Slide`: one object for every reader, in level-0 pixels and µm per pixel."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image

from ..checks import finite_float, positive_float
from ..errors import MissingMPPError, SlideReadError, WsimitoError
from .backend import Backend
from .direct import DECODERS, Decoder, DirectReader, DirectUnsupportedError, TileCache, open_direct

if TYPE_CHECKING:
    import dask.array as da

#: Relative difference above which a given ``mpp=`` disagrees with the file's (1 %).
MPP_AGREEMENT = 0.01
# Two resolutions closer than this (relative) count as equal when picking a
# pyramid level: vendors write downsamples such as 4.000395.
_LEVEL_TOLERANCE = 1e-2
# Largest source strip resampled at once (pixels); bounds the memory of read().
_STRIP_PIXELS = 16 * 1024 * 1024


class Slide:
    """A whole-slide image or region of interest, opened lazily.

    Every coordinate is in level-0 pixels (x right, y down) and every
    resolution in µm per pixel (mpp). Create it with :func:`wsimito.open_slide`.

    Examples
    --------
    >>> import wsimito
    >>> with wsimito.open_slide("slide.svs") as slide:          # doctest: +SKIP
    ...     tile = slide.read((1000, 2000, 512, 512), mpp=0.5)  # 256 x 256 px at 0.5 µm/px
    """

    def __init__(
        self,
        backend: Backend,
        *,
        mpp: float | None = None,
        force_mpp: bool = False,
        decoder: Decoder = "backend",
        _warn: bool = True,
    ) -> None:
        """Wrap an open ``backend``; prefer :func:`wsimito.open_slide`.

        Parameters
        ----------
        backend : Backend
            The open reader.
        mpp : float, optional
            Level-0 resolution in µm per pixel for files that carry none; where
            the file states one, the file's wins (see :func:`wsimito.open_slide`).
        force_mpp : bool
            Use ``mpp`` even where the file states another resolution.
        decoder : {"auto", "direct", "backend"}
            Where pixels of tiled TIFF files come from: ``"direct"`` decodes
            the file's tiles with imagecodecs in the calling thread, through a
            shared tile cache (:mod:`wsimito.slide.direct`); ``"backend"`` uses
            the backend's own reader; ``"auto"`` is direct where the file's
            layout and codec allow it, else the backend.

        Raises
        ------
        ValueError
            ``mpp`` is not a positive, finite number, or ``decoder`` is unknown.
        DirectUnsupportedError
            ``decoder="direct"`` and the file is not a tiled TIFF the direct
            path reads; the message says why.
        """
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
        self._backend = backend
        self._decoder_request: Decoder = decoder
        self._direct: DirectReader | None = None
        if mpp is not None:
            mpp = float(mpp)
            if not (math.isfinite(mpp) and mpp > 0):
                raise ValueError(
                    f"mpp={mpp!r}: the level-0 resolution must be a positive, finite number of "
                    "µm per pixel (about 0.25 for a 40x scan, 0.5 for 20x)"
                )
        self._mpp_override = mpp
        self._force_mpp = bool(force_mpp)
        mx, my = backend.mpp()
        self._file_mpp_xy = (mx, my)
        file_mpp = None if mx is None or my is None else (mx + my) / 2
        use_given = mpp is not None and (force_mpp or file_mpp is None)
        self._mpp_xy: tuple[float | None, float | None] = (mpp, mpp) if use_given else (mx, my)
        if decoder != "backend":
            try:
                self._direct = open_direct(backend)
            except DirectUnsupportedError as exc:
                if decoder == "direct":
                    raise DirectUnsupportedError(
                        f"decoder='direct' cannot read {backend.source!r}: {exc}. "
                        "Use decoder='auto' or 'backend'"
                    ) from exc
        if _warn and file_mpp is not None:
            self._warn_about_mpp(mpp, file_mpp, use_given)

    def _warn_about_mpp(self, mpp: float | None, file_mpp: float, use_given: bool) -> None:
        mx, my = self._file_mpp_xy
        if mpp is not None and not self._force_mpp and abs(mpp / file_mpp - 1) > MPP_AGREEMENT:
            warnings.warn(
                f"{self.name}: the file says {file_mpp:.6g} µm/px at level 0, but mpp={mpp:g} "
                f"was given; wsimito uses the file's {file_mpp:.6g} µm/px (mpp= only sets the "
                "resolution of files that have none). Both are recorded in results; pass "
                "force_mpp=True to use the given value instead.",
                UserWarning,
                stacklevel=4,
            )
        if not use_given and abs(mx - my) > 0.01 * max(mx, my):  # type: ignore[operator,type-var]
            warnings.warn(
                f"{self.name}: anisotropic pixels, mpp-x = {mx} µm and mpp-y = {my} µm; "
                f"wsimito uses their mean {file_mpp:.6g} µm/px. Pass mpp= with "
                "force_mpp=True to choose another value.",
                stacklevel=4,
            )

    # -- metadata ---------------------------------------------------------
    @property
    def backend(self) -> str:
        """Name of the reader in use ("openslide", "tiffslide", "zarr", "array", ...)."""
        return self._backend.name

    @property
    def decoder(self) -> Literal["direct", "backend"]:
        """Where pixels come from: ``"direct"`` (file tiles decoded here) or ``"backend"``."""
        return "direct" if self._direct is not None else "backend"

    @property
    def tile_cache(self) -> TileCache | None:
        """The decoded-tile cache of the direct decoder, or ``None`` with ``decoder="backend"``.

        Shared by every handle of this slide in the process (:meth:`reopen`,
        unpickled copies). Its bound is ``tile_cache.max_bytes`` (bytes,
        settable); ``hits``, ``misses`` and ``hit_rate`` count its lookups.
        """
        return self._direct.cache if self._direct is not None else None

    @property
    def path(self) -> str | None:
        """The file or store this slide was opened from, or ``None`` for in-memory data."""
        src = self._backend.source
        return src if isinstance(src, str) else None

    @property
    def name(self) -> str:
        """A short name for messages: the file name, or a description."""
        p = self.path
        return p.rsplit("/", 1)[-1] if p else f"<{self.backend} slide>"

    @property
    def dimensions(self) -> tuple[int, int]:
        """``(width, height)`` of level 0, in px."""
        return self._backend.level_dimensions[0]

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self._backend.level_dimensions)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(width, height)`` of each level, in px of that level."""
        return self._backend.level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Level-0 px per level px, for each level."""
        return self._backend.level_downsamples

    @property
    def level_tile_sizes(self) -> tuple[tuple[int, int], ...]:
        """The file's native tile ``(width, height)`` at each level, px of that level.

        Reads that follow these tiles decode each file tile once; files
        without tiles report the blocks their reader works in.
        """
        return tuple(self._backend.tile_size(level) for level in range(self.level_count))

    @property
    def properties(self) -> dict[str, str]:
        """Vendor and reader metadata, all values ``str``."""
        return self._backend.properties

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        """Non-empty area ``(x, y, width, height)`` in level-0 px (OpenSlide ``bounds-*``)."""
        return self._backend.bounds()

    @property
    def file_mpp(self) -> float | None:
        """Level-0 resolution the file itself states, µm/px (mean of x and y), or ``None``."""
        mx, my = self._file_mpp_xy
        return None if mx is None or my is None else (mx + my) / 2

    @property
    def given_mpp(self) -> float | None:
        """The ``mpp=`` given when opening, µm/px, whether or not it was used (see :attr:`mpp`)."""
        return self._mpp_override

    @property
    def has_mpp(self) -> bool:
        """Whether the level-0 resolution is known (from the file or ``mpp=``)."""
        return self._mpp_xy[0] is not None and self._mpp_xy[1] is not None

    @property
    def mpp(self) -> float:
        """Level-0 resolution in µm per pixel; raises :class:`MissingMPPError` if unknown."""
        mx, my = self._mpp_xy
        if mx is None or my is None:
            where = (
                f"wsimito.open_slide({self.path!r}, mpp=0.25)"
                if self.path
                else "wsimito.open_slide(array, mpp=0.25)"
            )
            raise MissingMPPError(
                f"{self.name} carries no resolution (µm per pixel) and none was given. "
                f"Pass it when opening, e.g. {where}: a 40x scan is about 0.25 µm/px, "
                "a 20x scan about 0.5 µm/px. wsimito never assumes one."
            )
        return (mx + my) / 2

    def level_mpp(self, level: int) -> float:
        """Resolution of ``level`` in µm per pixel."""
        return self.mpp * self.level_downsamples[level]

    def best_level(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed ``downsample`` (level-0 px per px).

        Parameters
        ----------
        downsample : float
            Level-0 px per output px.

        Returns
        -------
        int
            The level.
        """
        best = 0
        for i, ds in enumerate(self.level_downsamples):
            if ds <= downsample * (1 + _LEVEL_TOLERANCE) and ds >= self.level_downsamples[best]:
                best = i
        return best

    # -- pixels -------------------------------------------------------------
    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        """Read ``size = (w, h)`` px of ``level`` whose top-left is ``location`` (level-0 px).

        OpenSlide's call, with OpenSlide's coordinates.

        Parameters
        ----------
        location : tuple of int
            ``(x, y)`` of the top-left corner, level-0 px.
        level : int
            The pyramid level, 0 to ``level_count - 1``.
        size : tuple of int
            ``(w, h)``, px of ``level`` (>= 0).

        Returns
        -------
        numpy.ndarray
            ``(h, w, 3)`` uint8 RGB; pixels outside the slide or transparent
            are white.

        Raises
        ------
        ValueError
            A negative size or a level that does not exist.
        wsimito.SlideReadError
            The reader failed on the region (names the file, level and box).
        """
        w, h = int(size[0]), int(size[1])
        if w < 0 or h < 0:
            raise ValueError(f"size must be non-negative (w, h) in px, got {size!r}")
        if not 0 <= level < self.level_count:
            raise ValueError(
                f"level {level} does not exist; this slide has levels 0..{self.level_count - 1}"
            )
        if w == 0 or h == 0:
            return np.empty((h, w, 3), dtype=np.uint8)
        x, y = int(location[0]), int(location[1])
        if self._direct is not None:
            ds = self.level_downsamples[level]
            # Backends that keep the base class's read_region snap a level-0
            # location to the level pixel below it; OpenSlide interpolates where
            # the location is not a whole level pixel, so defer to it there.
            snaps = type(self._backend).read_region is Backend.read_region
            if snaps or ((x / ds).is_integer() and (y / ds).is_integer()):
                lx, ly = (int(x // ds), int(y // ds)) if snaps else (round(x / ds), round(y / ds))
                return self._direct.read_level_box(lx, ly, level, w, h)
        try:
            return self._backend.read_region((x, y), level, (w, h))
        except (WsimitoError, MemoryError):
            raise
        except Exception as exc:  # each reader raises its own types
            ds = self.level_downsamples[level]
            raise self._read_error(exc, level, (int(x // ds), int(y // ds), w, h)) from exc

    def read_level_box(
        self,
        x: int,
        y: int,
        level: int,
        width: int,
        height: int,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Read ``width`` x ``height`` px of ``level`` whose top-left is ``(x, y)`` in **level** px.

        Unlike :meth:`read_region`, the corner is given in the level's own
        pixels, which is what tile readers that work at one level need. The box
        may cross the level's edge: pixels outside are white. With the direct
        decoder (:attr:`decoder`) the file tiles are decoded in the calling
        thread, so reads from several threads use several cores.

        Parameters
        ----------
        x, y : int
            Top-left corner in px of ``level``.
        level : int
            Pyramid level, ``0 <= level < level_count``.
        width, height : int
            Box size in px of ``level``, positive.
        out : numpy.ndarray, optional
            A writable ``(height, width, 3)`` uint8 array (a view into a batch
            buffer, for instance) to fill instead of allocating one.

        Parameters
        ----------
        x, y : int
            Top-left corner, px of ``level``.
        level : int
            The pyramid level.
        width, height : int
            Size, px of ``level`` (> 0).

        Returns
        -------
        numpy.ndarray
            ``(height, width, 3)`` uint8 RGB: ``out`` when given.

        Raises
        ------
        ValueError
            The level does not exist, the size is not positive or ``out`` does
            not fit.
        wsimito.SlideReadError
            The reader failed on the region, or a file tile is damaged; the
            message names the file, the level and the box.
        """
        if not 0 <= level < self.level_count:
            raise ValueError(
                f"level {level} does not exist; this slide has levels 0..{self.level_count - 1}"
            )
        if width <= 0 or height <= 0:
            raise ValueError(f"width and height must be positive px, got {width} x {height}")
        x, y, width, height = int(x), int(y), int(width), int(height)
        if out is not None and (
            not isinstance(out, np.ndarray)
            or out.shape != (height, width, 3)
            or out.dtype != np.uint8
            or not out.flags.writeable
        ):
            got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
            raise ValueError(
                f"out must be a writable uint8 numpy array of shape ({height}, {width}, 3), "
                f"got {got}"
            )
        if self._direct is not None:
            return self._direct.read_level_box(x, y, level, width, height, out)
        pixels = self._read_level_box(x, y, level, width, height)
        if out is None:
            return pixels
        out[...] = pixels
        return out

    def _read_level_box(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """:meth:`read_level_box` without the checks, for callers that computed the box;
        the backend's failures become :class:`SlideReadError`."""
        if self._direct is not None:
            return self._direct.read_level_box(x, y, level, width, height)
        try:
            return self._backend.read_level_box(x, y, level, width, height)
        except (WsimitoError, MemoryError):
            raise
        except Exception as exc:  # each reader raises its own types
            raise self._read_error(exc, level, (x, y, width, height)) from exc

    def _read_error(
        self, exc: Exception, level: int, box: tuple[int, int, int, int]
    ) -> SlideReadError:
        """A :class:`SlideReadError` naming the file, the level and the box (level px)."""
        x, y, w, h = box
        ds = self.level_downsamples[level]
        where = self.path or f"<{self.backend} slide>"
        return SlideReadError(
            f"{where}: cannot read level {level}, box x={x}, y={y}, {w}x{h} px of that level "
            f"(level-0 box x={x * ds:g}, y={y * ds:g}, {w * ds:g}x{h * ds:g} px): "
            f"{type(exc).__name__}: {exc}. The file may be damaged or truncated in this region.",
            path=self.path,
            level=level,
            box=box,
        )

    def read(self, box: tuple[float, float, float, float], mpp: float | None = None) -> np.ndarray:
        """Read the level-0 box ``(x, y, w, h)`` (px) resampled to ``mpp`` (µm/px).

        Uses the coarsest pyramid level at least as fine as ``mpp`` and
        area-averages when shrinking (bilinear when enlarging). Memory is
        bounded by reading in strips, so large boxes are safe.

        Parameters
        ----------
        box : tuple of float
            ``(x, y, w, h)`` in level-0 px; may be fractional and may cross the
            slide's edge (white outside).
        mpp : float or None
            Resolution of the result, µm/px (> 0); ``None`` for level 0.

        Returns
        -------
        numpy.ndarray
            ``(round(h * slide.mpp / mpp), round(w * slide.mpp / mpp), 3)``
            uint8 RGB.

        Raises
        ------
        ValueError
            A negative or non-finite box, or ``mpp`` not positive and finite.
        wsimito.SlideReadError
            The reader failed on part of the box.
        """
        x, y, w, h = (finite_float(v, "box", "level-0 px") for v in box)
        if w < 0 or h < 0:
            raise ValueError(f"box width and height must be non-negative px, got {box!r}")
        if mpp is not None:
            mpp = positive_float(mpp, "mpp", "µm per pixel")
        if mpp is None or abs(mpp / self.mpp - 1) < 1e-9:
            if x.is_integer() and y.is_integer() and w.is_integer() and h.is_integer():
                return self.read_region((int(x), int(y)), 0, (int(w), int(h)))
            scale = 1.0
        else:
            scale = mpp / self.mpp
        out_w, out_h = max(1, round(w / scale)), max(1, round(h / scale))
        if w == 0 or h == 0:
            return np.full((round(h / scale), round(w / scale), 3), 255, dtype=np.uint8)
        level = self.best_level(scale)
        return self._resample_level(level, x, y, w, h, out_w, out_h)

    def _resample_level(
        self, level: int, x: float, y: float, w: float, h: float, out_w: int, out_h: int
    ) -> np.ndarray:
        ds = self.level_downsamples[level]
        fx0, fy0, fw, fh = x / ds, y / ds, w / ds, h / ds
        if (
            fx0.is_integer()
            and fy0.is_integer()
            and abs(fw - out_w) < 1e-6
            and abs(fh - out_h) < 1e-6
        ):
            return self._read_level_box(int(fx0), int(fy0), level, out_w, out_h)
        shrinking = fw >= out_w
        resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
        pad = 0 if shrinking else 1
        ix0 = math.floor(fx0) - pad
        ix1 = math.ceil(fx0 + fw) + pad
        sy = fh / out_h
        rows_per_strip = max(1, int(_STRIP_PIXELS / max(1.0, (ix1 - ix0) * sy)))
        out = np.empty((out_h, out_w, 3), dtype=np.uint8)
        for r0 in range(0, out_h, rows_per_strip):
            r1 = min(out_h, r0 + rows_per_strip)
            sy0, sy1 = fy0 + r0 * sy, fy0 + r1 * sy
            iy0, iy1 = math.floor(sy0) - pad, math.ceil(sy1) + pad
            src = self._read_level_box(ix0, iy0, level, ix1 - ix0, iy1 - iy0)
            img = Image.fromarray(src)
            part = img.resize(
                (out_w, r1 - r0), resample, box=(fx0 - ix0, sy0 - iy0, fx0 + fw - ix0, sy1 - iy0)
            )
            out[r0:r1] = np.asarray(part)
        return out

    def to_dask(self, level: int = 0, *, chunk_tiles: int = 1) -> da.Array:
        """A lazy ``dask.array`` of shape ``(h, w, 3)`` uint8 for ``level``.

        Building the array reads no pixels; computing a slice reads only the
        chunks it covers. The graph holds this picklable slide, so it runs on
        dask.distributed workers, each reopening the file.

        Parameters
        ----------
        level : int
            The pyramid level.
        chunk_tiles : int
            File tiles per chunk side; chunks follow the file's native tiles.

        Returns
        -------
        dask.array.Array
            ``(h, w, 3)`` uint8, px of ``level``.
        """
        import dask.array as da
        from dask.base import tokenize
        from dask.highlevelgraph import HighLevelGraph

        if not 0 <= level < self.level_count:
            raise ValueError(
                f"level {level} does not exist; this slide has levels 0..{self.level_count - 1}"
            )
        lw, lh = self.level_dimensions[level]
        tw, th = self._backend.tile_size(level)
        tw, th = max(1, tw * chunk_tiles), max(1, th * chunk_tiles)
        xs = tuple(min(tw, lw - x) for x in range(0, lw, tw))
        ys = tuple(min(th, lh - y) for y in range(0, lh, th))
        name = "wsimito-slide-" + tokenize(self._token(), level, tw, th)
        dsk: dict[Any, Any] = {}
        y0 = 0
        for j, ch in enumerate(ys):
            x0 = 0
            for i, cw in enumerate(xs):
                dsk[(name, j, i, 0)] = (_read_chunk, self, level, x0, y0, cw, ch)
                x0 += cw
            y0 += ch
        graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
        return da.Array(
            graph,
            name,
            chunks=(ys, xs, (3,)),
            dtype=np.uint8,
            meta=np.empty((0, 0, 0), dtype=np.uint8),
        )

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """An RGB overview whose longer side is at most ``max_size`` px.

        Parameters
        ----------
        max_size : int
            Longest side of the result, px.

        Returns
        -------
        numpy.ndarray
            ``(h, w, 3)`` uint8 RGB of the whole slide, area-averaged.
        """
        w, h = self.dimensions
        scale = max(w, h) / max_size
        if scale <= 1:
            return self.read_region((0, 0), 0, (w, h))
        out_w, out_h = max(1, round(w / scale)), max(1, round(h / scale))
        level = self.best_level(scale)
        return self._resample_level(level, 0.0, 0.0, float(w), float(h), out_w, out_h)

    # -- life cycle ---------------------------------------------------------
    def _token(self) -> tuple:
        cls, args, kwargs = self._backend.reopen_spec()
        src = args[0] if args else None
        ident = src if isinstance(src, str) else id(self._backend)
        return (cls.__name__, ident, self._mpp_override, self.decoder)

    def reopen(self, *, mpp: float | None = None) -> Slide:
        """A new, independent handle on the same data (one per thread or process).

        With the direct decoder the new handle has its own file descriptor and
        shares this one's tile cache.

        Parameters
        ----------
        mpp : float, optional
            Level-0 resolution, µm/px, for the new handle (same rule as
            :func:`wsimito.open_slide`); by default the one this handle was given.
        """
        cls, args, kwargs = self._backend.reopen_spec()
        handle = Slide(
            cls(*args, **kwargs),
            mpp=self._mpp_override if mpp is None else mpp,
            force_mpp=self._force_mpp,
            _warn=mpp is not None,
        )
        handle._decoder_request = self._decoder_request
        if self._direct is not None:
            handle._direct = self._direct.reopen()
        return handle

    def close(self) -> None:
        """Release the reader's file handles."""
        self._backend.close()
        if self._direct is not None:
            self._direct.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "spec": self._backend.reopen_spec(),
            "mpp": self._mpp_override,
            "force_mpp": self._force_mpp,
            "decoder": self._decoder_request,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        cls, args, kwargs = state["spec"]
        Slide.__init__(
            self,
            cls(*args, **kwargs),
            mpp=state["mpp"],
            force_mpp=state.get("force_mpp", False),
            decoder=state.get("decoder", "backend"),
            _warn=False,
        )

    def __repr__(self) -> str:
        mpp = f"{self.mpp:.4g} µm/px" if self.has_mpp else "mpp unknown"
        w, h = self.dimensions
        return (
            f"<Slide {self.name}: {w}x{h} px, {mpp}, {self.level_count} levels, "
            f"{self.backend}, {self.decoder} decoder>"
        )

    def _repr_html_(self) -> str:
        """A 256 px thumbnail beside the size, resolution and pyramid (for Jupyter)."""
        from ..overview import html_preview

        w, h = self.dimensions
        rows = [
            ("file", self.name),
            ("backend", self.backend),
            ("decoder", self.decoder),
            ("size (level 0)", f"{w} x {h} px"),
            ("mpp", f"{self.mpp:.4g} µm/px" if self.has_mpp else "unknown (pass mpp=)"),
            (
                "size",
                f"{w * self.mpp / 1000:.2f} x {h * self.mpp / 1000:.2f} mm"
                if self.has_mpp
                else "-",
            ),
            ("levels", ", ".join(f"{ds:.4g}x" for ds in self.level_downsamples)),
        ]
        return html_preview(self.thumbnail(256), rows)


def _read_chunk(slide: Slide, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
    return slide.read_level_box(x, y, level, w, h)
