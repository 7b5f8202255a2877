"""Direct tile decoding for tiled TIFF files (SVS, generic pyramidal TIFF, OME-TIFF).

The backends read pixels through their own ``read_region``. For tiled TIFF
files this module reads the compressed bytes of exactly the file tiles a box
needs (``os.pread`` at tifffile's tile offsets, so threads never share a file
position) and decodes them with tifffile's own decoder for the page
(imagecodecs underneath: JPEG with the page's shared JPEGTables merged, JPEG
2000, LZW, deflate, zstd, WebP, uncompressed). Decoding releases the GIL, so
reads from several threads run on several cores. Decoded tiles go into a
:class:`TileCache` bounded in bytes and shared by every handle of the slide in
the process, so a file tile that several overlapping grid tiles need is
decoded once.

Every coordinate here is in pixels of the level being read (level px); level
0 px only where said.
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import SlideReadError, WsimitoError
from .backend import Backend

Decoder = Literal["auto", "direct", "backend"]
DECODERS: tuple[Decoder, ...] = ("auto", "direct", "backend")

# TIFF compressions this path decodes: none, LZW, JPEG, deflate (2 tags),
# Aperio JPEG 2000 YCbCr / RGB, JPEG 2000, zstd, WebP.
SUPPORTED_COMPRESSIONS = {
    1: "none",
    5: "LZW",
    7: "JPEG",
    8: "deflate",
    32946: "deflate",
    33003: "Aperio JPEG 2000 (YCbCr)",
    33005: "Aperio JPEG 2000 (RGB)",
    34712: "JPEG 2000",
    50000: "zstd",
    50001: "WebP",
}
_APERIO_J2K_YCBCR = 33003
_PHOTOMETRIC_MINISBLACK, _PHOTOMETRIC_RGB, _PHOTOMETRIC_YCBCR = 1, 2, 6
_JPEG = 7
# OpenSlide vendors whose levels are plain grids of TIFF tiles.
_OPENSLIDE_PLAIN_VENDORS = ("aperio", "generic-tiff")

# Default cache: enough for this many rows of level-0 file tiles, so that a
# grid walked row by row finds the rows it shares with the previous grid row,
# within these bounds (bytes).
_CACHE_ROWS = 6
_CACHE_MIN_BYTES = 32 * 2**20
_CACHE_MAX_BYTES = 256 * 2**20


class DirectUnsupportedError(WsimitoError, ValueError):
    """The file's layout or codec is outside what the direct decoder reads."""


class TileCache:
    """A thread-safe LRU cache of decoded file tiles, bounded in bytes.

    Keys are ``(level, tile index)``; values are read-only ``(h, w, 3)``
    uint8 arrays. A tile that one thread is decoding is not decoded again by
    another thread that needs it meanwhile: the second waits for the first.

    Parameters
    ----------
    max_bytes : int
        Upper bound on the bytes of decoded pixels held (bytes). ``0``
        disables caching. Settable later through :attr:`max_bytes`.

    Attributes
    ----------
    hits : int
        Lookups answered from the cache, or by waiting for another thread's
        decode of the same tile.
    misses : int
        Lookups that decoded the tile.
    """

    def __init__(self, max_bytes: int) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        # A tile being decoded maps to a lock its decoding thread holds until it is done;
        # a plain lock costs a fraction of a threading.Event, and this runs once per file tile.
        self._pending: dict[tuple[int, int], threading.Lock] = {}
        self._nbytes = 0
        self._max_bytes = 0
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0

    @property
    def max_bytes(self) -> int:
        """The bound on cached pixels, in bytes; lowering it evicts at once."""
        return self._max_bytes

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        value = int(value)
        if value < 0:
            raise ValueError(f"max_bytes must be >= 0 bytes, got {value}")
        with self._lock:
            self._max_bytes = value
            self._evict()

    @property
    def nbytes(self) -> int:
        """Bytes of decoded pixels held now."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def hit_rate(self) -> float:
        """``hits / (hits + misses)``; 0.0 before any lookup."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def reset_stats(self) -> None:
        """Set :attr:`hits` and :attr:`misses` back to zero."""
        with self._lock:
            self.hits = self.misses = 0

    def clear(self) -> None:
        """Drop every cached tile (statistics are kept)."""
        with self._lock:
            self._entries.clear()
            self._nbytes = 0

    def get(
        self, key: tuple[int, int], decode: Callable[[], np.ndarray], *, wait: bool = True
    ) -> np.ndarray | None:
        """The tile for ``key``, calling ``decode()`` only if no one holds or is making it.

        Parameters
        ----------
        key : tuple of int
            ``(level, tile index)``.
        decode : callable
            Makes the tile (a read-only ``(h, w, 3)`` uint8 array) on a miss.
        wait : bool
            With ``False``, return ``None`` instead of waiting for another
            thread's decode of the same tile, so the caller can do other work first.

        Returns
        -------
        numpy.ndarray or None
            The tile; ``None`` only with ``wait=False`` while another thread makes it.

        Raises
        ------
        Exception
            Whatever ``decode`` raises; nothing is cached then.
        """
        with self._lock:
            tile = self._entries.get(key)
            if tile is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return tile
            busy = self._pending.get(key)
            owner = busy is None
            if busy is None:
                busy = self._pending[key] = threading.Lock()
                busy.acquire()
                self.misses += 1
            elif not wait:
                return None
            else:
                self.hits += 1
        if not owner:
            with busy:  # free once the owner has finished
                pass
            with self._lock:
                tile = self._entries.get(key)
            # Absent when the owner failed or the tile did not fit: decode it here.
            return tile if tile is not None else decode()
        try:
            tile = decode()
        except BaseException:
            with self._lock:
                del self._pending[key]
            busy.release()
            raise
        with self._lock:
            del self._pending[key]
            if tile.nbytes <= self._max_bytes:
                self._entries[key] = tile
                self._nbytes += tile.nbytes
                self._evict()
        busy.release()
        return tile

    def _evict(self) -> None:
        while self._nbytes > self._max_bytes and self._entries:
            _, old = self._entries.popitem(last=False)
            self._nbytes -= old.nbytes

    def __repr__(self) -> str:
        return (
            f"<TileCache {len(self)} tiles, {self._nbytes / 2**20:.1f} / "
            f"{self._max_bytes / 2**20:.1f} MiB, hit rate {self.hit_rate:.1%}>"
        )


@dataclass(frozen=True)
class _Level:
    """One pyramid level as stored: tile grid, tile offsets and the page's decoder."""

    page_index: int
    width: int  # level px
    height: int
    tile_width: int
    tile_height: int
    tiles_across: int
    offsets: np.ndarray  # int64 byte offset per tile (row-major)
    bytecounts: np.ndarray  # int64 byte count per tile; 0 = tile absent
    samples: int
    compression: int
    decode: Callable[..., Any]  # tifffile's decoder for the page
    jpegtables: bytes | None
    jpegheader: bytes | None

    @property
    def row_bytes(self) -> int:
        """Decoded RGB bytes of one row of file tiles."""
        return self.tiles_across * self.tile_width * self.tile_height * 3


class _Layout:
    """The tiled pages of a TIFF file that match a backend's pyramid levels."""

    def __init__(
        self, path: str, level_dimensions: tuple[tuple[int, int], ...], all_tiled: bool
    ) -> None:
        import tifffile

        self.path = path
        try:
            tif = tifffile.TiffFile(path)
        except Exception as exc:
            raise DirectUnsupportedError(f"tifffile cannot parse it ({exc})") from exc
        with tif:
            if tif.is_ndpi:
                raise DirectUnsupportedError(
                    "Hamamatsu NDPI tiles are JPEG restart intervals, not verified here"
                )
            candidates = _level_pages(tif, all_tiled)
            levels = []
            for i, (w, h) in enumerate(level_dimensions):
                page = candidates.get((w, h))
                if page is None:
                    raise DirectUnsupportedError(
                        f"no tiled TIFF page has the {w} x {h} px of level {i}"
                    )
                levels.append(_describe(page, i))
        self.levels: tuple[_Level, ...] = tuple(levels)

    def default_cache_bytes(self) -> int:
        """Enough for a few rows of level-0 file tiles, within 32-256 MiB."""
        want = _CACHE_ROWS * self.levels[0].row_bytes
        return int(min(_CACHE_MAX_BYTES, max(_CACHE_MIN_BYTES, want)))


def _level_pages(tif: Any, all_tiled: bool) -> dict[tuple[int, int], Any]:
    """``(width, height) -> page`` for pyramid levels.

    The levels of tifffile's first series (what tiffslide reads), each one
    page; with ``all_tiled``, also every tiled page of the main IFD chain (what
    OpenSlide's generic TIFF reader takes as levels).
    """
    found: dict[tuple[int, int], Any] = {}
    if tif.series:
        for level in tif.series[0].levels:
            pages = [p for p in level.pages if p is not None]
            if len(pages) == 1:
                page = pages[0]
                found.setdefault((int(page.imagewidth), int(page.imagelength)), page)
    if all_tiled:
        for page in tif.pages:
            if getattr(page, "is_tiled", False):
                found.setdefault((int(page.imagewidth), int(page.imagelength)), page)
    return found


def _describe(page: Any, level: int) -> _Level:
    """Check that the direct path reads ``page`` and record what reading it needs."""
    where = f"level {level} (TIFF page {page.index})"
    if not page.is_tiled:
        raise DirectUnsupportedError(f"{where} is stored in strips, not tiles")
    if page.tiledepth != 1 or page.imagedepth != 1:
        raise DirectUnsupportedError(f"{where} is a volume, not a 2-D image")
    compression = int(page.compression)
    if compression not in SUPPORTED_COMPRESSIONS:
        raise DirectUnsupportedError(f"{where} uses TIFF compression {compression}")
    if page.bitspersample != 8 or page.dtype != np.uint8:
        raise DirectUnsupportedError(f"{where} has {page.bitspersample}-bit samples, not 8-bit")
    if page.planarconfig != 1:
        raise DirectUnsupportedError(f"{where} stores colour planes separately")
    samples = int(page.samplesperpixel)
    photometric = int(page.photometric)
    colour = (samples in (3, 4) and photometric == _PHOTOMETRIC_RGB) or (
        samples == 3 and photometric == _PHOTOMETRIC_YCBCR and compression == _JPEG
    )
    grey = samples == 1 and photometric == _PHOTOMETRIC_MINISBLACK
    if not (colour or grey):
        raise DirectUnsupportedError(
            f"{where} has {samples} samples with photometric {photometric}; "
            "the direct path reads RGB, RGBA and greyscale"
        )
    jpegheader = None
    jpegtables = None
    if compression == _JPEG:
        jpegtables = page.jpegtables
        jpegheader = page.keyframe.jpegheader
    try:
        decode = page.decode
    except Exception as exc:
        raise DirectUnsupportedError(f"{where}: tifffile has no decoder ({exc})") from exc
    return _Level(
        page_index=int(page.index if isinstance(page.index, int) else page.index[-1]),
        width=int(page.imagewidth),
        height=int(page.imagelength),
        tile_width=int(page.tilewidth),
        tile_height=int(page.tilelength),
        tiles_across=math.ceil(page.imagewidth / page.tilewidth),
        offsets=np.asarray(page.dataoffsets, dtype=np.int64),
        bytecounts=np.asarray(page.databytecounts, dtype=np.int64),
        samples=samples,
        compression=compression,
        decode=decode,
        jpegtables=jpegtables,
        jpegheader=jpegheader,
    )


class _Shared:
    """What every handle of one slide in this process shares: its layout and its cache."""

    def __init__(self, layout: _Layout) -> None:
        self.layout = layout
        self.cache = TileCache(layout.default_cache_bytes())
        self.checked_against: set[str] = set()  # backends whose pixels agreed


# (real path, size, mtime, level dimensions) -> _Shared, while any handle holds it.
_RegistryKey = tuple[str, int, int, tuple[tuple[int, int], ...], bool]
_REGISTRY: weakref.WeakValueDictionary[_RegistryKey, _Shared] = weakref.WeakValueDictionary()
_REGISTRY_LOCK = threading.Lock()


def _shared_for(
    path: str, level_dimensions: tuple[tuple[int, int], ...], all_tiled: bool
) -> _Shared:
    st = os.stat(path)
    key: _RegistryKey = (
        os.path.realpath(path),
        st.st_size,
        st.st_mtime_ns,
        level_dimensions,
        all_tiled,
    )
    with _REGISTRY_LOCK:
        shared = _REGISTRY.get(key)
        if shared is None:
            shared = _Shared(_Layout(path, level_dimensions, all_tiled))
            _REGISTRY[key] = shared
        return shared


class _File:
    """Positional reads on one file descriptor, safe from many threads."""

    def __init__(self, path: str) -> None:
        self._pread = hasattr(os, "pread")
        self._finalizer: weakref.finalize[..., _File]
        if self._pread:
            self._fd = os.open(path, os.O_RDONLY)
            self._finalizer = weakref.finalize(self, os.close, self._fd)
        else:  # Windows: a lock around seek + read
            self._fh = open(path, "rb")  # noqa: SIM115 - closed by the finalizer
            self._lock = threading.Lock()
            self._finalizer = weakref.finalize(self, self._fh.close)

    def read(self, offset: int, count: int) -> bytes:
        if self._pread:
            return os.pread(self._fd, count, offset)
        with self._lock:
            self._fh.seek(offset)
            return self._fh.read(count)

    def close(self) -> None:
        self._finalizer()


class DirectReader:
    """Reads boxes of a tiled TIFF by decoding its file tiles in the calling thread.

    Create it with :func:`open_direct`; :class:`~wsimito.slide.Slide` does so
    for ``open_slide(..., decoder="auto" | "direct")``. One reader may be used
    from many threads; :meth:`reopen` gives another handle on the same cache.

    Parameters
    ----------
    path : str
        The TIFF file.
    shared : _Shared
        The file's parsed layout and tile cache, shared by every handle.
    """

    def __init__(self, path: str, shared: _Shared) -> None:
        self.path = path
        self._shared = shared
        self._levels = shared.layout.levels
        self._file = _File(path)

    @property
    def cache(self) -> TileCache:
        """The tile cache shared by every handle of this slide in the process."""
        return self._shared.cache

    def tile_size(self, level: int) -> tuple[int, int]:
        """Give the size of the file tiles of a level.

        Parameters
        ----------
        level : int
            Pyramid level.

        Returns
        -------
        tuple of (int, int)
            ``(width, height)`` of the file tiles, px of ``level``.
        """
        lv = self._levels[level]
        return (lv.tile_width, lv.tile_height)

    def reopen(self) -> DirectReader:
        """Open another handle, with its own file descriptor, on this one's layout and cache.

        Returns
        -------
        DirectReader
            The new handle.
        """
        return DirectReader(self.path, self._shared)

    def close(self) -> None:
        """Close this handle's file descriptor (the shared cache stays)."""
        self._file.close()

    def read_level_box(
        self,
        x: int,
        y: int,
        level: int,
        width: int,
        height: int,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Fill ``(height, width, 3)`` uint8 RGB with the box at ``(x, y)`` (level px).

        Pixels outside the level, and absent file tiles, are white; alpha is
        composited on white. The caller checks the arguments
        (:meth:`wsimito.slide.Slide.read_level_box` does).

        Parameters
        ----------
        x, y : int
            Top-left corner in px of ``level``; may lie outside the level.
        level : int
            Pyramid level.
        width, height : int
            Box size in px of ``level``, positive.
        out : numpy.ndarray, optional
            A writable ``(height, width, 3)`` uint8 array to fill.

        Returns
        -------
        numpy.ndarray
            ``out``, or a new array.

        Raises
        ------
        SlideReadError
            A file tile the box needs cannot be read or decoded.
        """
        lv = self._levels[level]
        if out is None:
            out = np.empty((height, width, 3), dtype=np.uint8)
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, lv.width), min(y + height, lv.height)
        if x1 <= x0 or y1 <= y0:
            out[...] = 255
            return out
        if y0 > y:
            out[: y0 - y] = 255
        if y1 < y + height:
            out[y1 - y :] = 255
        if x0 > x:
            out[y0 - y : y1 - y, : x0 - x] = 255
        if x1 < x + width:
            out[y0 - y : y1 - y, x1 - x :] = 255
        tw, th = lv.tile_width, lv.tile_height
        deferred = []
        for row in range(y0 // th, (y1 - 1) // th + 1):
            ty0 = row * th
            sy0, sy1 = max(y0, ty0), min(y1, ty0 + th)
            for col in range(x0 // tw, (x1 - 1) // tw + 1):
                tx0 = col * tw
                sx0, sx1 = max(x0, tx0), min(x1, tx0 + tw)
                dst = out[sy0 - y : sy1 - y, sx0 - x : sx1 - x]
                index = row * lv.tiles_across + col
                if lv.bytecounts[index] == 0:
                    dst[...] = 255
                    continue
                place = (index, dst, sy0 - ty0, sy1 - ty0, sx0 - tx0, sx1 - tx0)
                # Tiles another thread is decoding now come last, when they are likely done.
                if not self._copy_tile(level, lv, place, (x, y, width, height), wait=False):
                    deferred.append(place)
        for place in deferred:
            self._copy_tile(level, lv, place, (x, y, width, height), wait=True)
        return out

    def _copy_tile(
        self,
        level: int,
        lv: _Level,
        place: tuple[Any, ...],
        box: tuple[int, int, int, int],
        wait: bool,
    ) -> bool:
        """Copy one file tile's part of the box into place; False if deferred (``wait=False``)."""
        index, dst, r0, r1, c0, c1 = place
        try:
            tile = self._shared.cache.get(
                (level, index), lambda: self._decode(lv, index), wait=wait
            )
        except _TileError as err:
            row, col = divmod(index, lv.tiles_across)
            raise self._error(
                level,
                box,
                f"cannot decode file tile {index} (column {col}, row {row}): {err}. The file "
                "is damaged or truncated there; open it with decoder='backend' to try the "
                "backend's own reader, or skip the tile.",
            ) from err.__cause__
        if tile is None:
            return False
        if tile.shape[0] < r1 or tile.shape[1] < c1:
            raise self._error(
                level,
                box,
                f"file tile {index} decodes to {tile.shape[1]} x {tile.shape[0]} px, smaller "
                f"than its place in the {lv.tile_width} x {lv.tile_height} px tile grid. The "
                "file is damaged; open it with decoder='backend'.",
            )
        dst[...] = tile[r0:r1, c0:c1]
        return True

    def _error(self, level: int, box: tuple[int, int, int, int], why: str) -> SlideReadError:
        """A :class:`SlideReadError` for ``box`` (level px), worded as the backends' are."""
        x, y, width, height = box
        return SlideReadError(
            f"{self.path}: cannot read level {level}, box x={x}, y={y}, {width}x{height} px of "
            f"that level: {why}",
            path=self.path,
            level=level,
            box=(x, y, width, height),
        )

    def _decode(self, lv: _Level, index: int) -> np.ndarray:
        """Read and decode one file tile to a read-only ``(h, w, 3)`` uint8 RGB array."""
        count = int(lv.bytecounts[index])
        try:
            data = self._file.read(int(lv.offsets[index]), count)
        except OSError as exc:
            raise _TileError(f"reading {count} bytes failed ({exc})") from exc
        if len(data) != count:
            raise _TileError(f"the file ends {count - len(data)} bytes before the tile's end")
        try:
            pixels, _, _ = lv.decode(
                data, index, jpegtables=lv.jpegtables, jpegheader=lv.jpegheader
            )
        except Exception as exc:  # imagecodecs and tifffile raise their own types
            raise _TileError(f"{type(exc).__name__}: {exc}") from exc
        if pixels is None or pixels.ndim != 4:
            raise _TileError("the decoder returned no pixels")
        tile = pixels[0]
        if lv.compression == _APERIO_J2K_YCBCR:
            tile = ycbcr_to_rgb(tile)
        elif lv.samples == 1:
            tile = np.repeat(tile, 3, axis=2)
        elif lv.samples == 4:
            from .openslide_backend import rgba_on_white

            tile = rgba_on_white(tile)
        tile = np.ascontiguousarray(tile)
        tile.flags.writeable = False
        return tile

    def __repr__(self) -> str:
        return f"<DirectReader {self.path}: {len(self._levels)} levels, {self.cache!r}>"


class _TileError(Exception):
    """One file tile could not be read or decoded (wrapped with the box by the caller)."""


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """Full-range BT.601 YCbCr (as in JPEG/JFIF) to RGB.

    Aperio's JPEG 2000 variant 33003 stores YCbCr without the codestream's
    colour transform; OpenSlide converts it to RGB, and so does the direct path.

    Parameters
    ----------
    ycbcr : numpy.ndarray
        ``(h, w, 3)`` uint8 Y, Cb, Cr.

    Returns
    -------
    numpy.ndarray
        ``(h, w, 3)`` uint8 RGB, rounded and clipped.
    """
    f = ycbcr.astype(np.float32)
    y, cb, cr = f[..., 0], f[..., 1] - 128.0, f[..., 2] - 128.0
    rgb = np.empty(ycbcr.shape, dtype=np.float32)
    rgb[..., 0] = y + 1.402 * cr
    rgb[..., 1] = y - 0.344136 * cb - 0.714136 * cr
    rgb[..., 2] = y + 1.772 * cb
    np.rint(rgb, out=rgb)
    np.clip(rgb, 0, 255, out=rgb)
    return rgb.astype(np.uint8)


def _local_path(backend: Backend) -> str | None:
    src = backend.source
    if not isinstance(src, str) or "://" in src or not os.path.isfile(src):
        return None
    return src


def open_direct(backend: Backend) -> DirectReader:
    """A direct reader for ``backend``'s file, checked against the backend's own pixels.

    The file must be a local tiled TIFF whose pages match the backend's
    levels, in a codec of :data:`SUPPORTED_COMPRESSIONS`. One file tile of
    every level is decoded both ways and must agree (mean absolute difference
    under one grey level), which catches a level read from the wrong page.

    Parameters
    ----------
    backend : Backend
        The open backend whose file to read.

    Returns
    -------
    DirectReader
        A reader sharing the process-wide cache of this file.

    Raises
    ------
    DirectUnsupportedError
        The file is not a local tiled TIFF this path reads; the message says why.
    """
    path = _local_path(backend)
    if path is None:
        raise DirectUnsupportedError(f"{backend.source!r} is not a local file")
    if backend.name not in ("tiffslide", "openslide"):
        raise DirectUnsupportedError(f"the {backend.name} backend does not read TIFF files")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic not in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        raise DirectUnsupportedError("it is not a TIFF file")
    all_tiled = False
    if backend.name == "openslide":
        # OpenSlide lays out other vendors' TIFFs by its own rules (overlapping
        # Ventana tiles, Leica and Philips layouts): only these two are plain grids.
        vendor = backend.properties.get("openslide.vendor", "")
        if vendor not in _OPENSLIDE_PLAIN_VENDORS:
            raise DirectUnsupportedError(
                f"OpenSlide reads this {vendor or 'unknown'} file with its own layout rules"
            )
        all_tiled = vendor == "generic-tiff"
    shared = _shared_for(path, tuple(backend.level_dimensions), all_tiled)
    reader = DirectReader(path, shared)
    if backend.name not in shared.checked_against:  # once per process, file and backend
        for level, lv in enumerate(reader._levels):
            _check_level(reader, backend, level, lv)
        shared.checked_against.add(backend.name)
    return reader


def _check_level(reader: DirectReader, backend: Backend, level: int, lv: _Level) -> None:
    present = np.flatnonzero(lv.bytecounts)
    if present.size == 0:
        return
    index = int(present[0])
    row, col = divmod(index, lv.tiles_across)
    x, y = col * lv.tile_width, row * lv.tile_height
    w, h = min(lv.tile_width, lv.width - x), min(lv.tile_height, lv.height - y)
    try:
        ours = reader.read_level_box(x, y, level, w, h)
    except SlideReadError as exc:
        raise DirectUnsupportedError(f"decoding a tile of level {level} failed: {exc}") from exc
    if lv.compression == _APERIO_J2K_YCBCR and backend.name != "openslide":
        return  # tiffslide returns the raw YCbCr of these tiles: no reference to compare
    theirs = backend.read_level_box(x, y, level, w, h)
    diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16)).mean()
    if diff >= 1.0:
        raise DirectUnsupportedError(
            f"its tile at ({x}, {y}) of level {level} differs from the {backend.name} "
            f"backend's pixels by {diff:.2f} grey levels on average"
        )
