"""`open_slide`: choose a backend for a file, store or array."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..checks import choice, positive_float
from ..errors import SlideOpenError, UnsupportedImageError
from .array_backend import IMAGE_SUFFIXES, ArrayBackend
from .backend import Backend
from .direct import DECODERS, Decoder
from .slide import Slide

BackendName = Literal["auto", "openslide", "tiffslide", "zarr", "array"]
BACKENDS: tuple[BackendName, ...] = ("auto", "openslide", "tiffslide", "zarr", "array")

# Formats only OpenSlide reads.
_OPENSLIDE_ONLY = {".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".dcm", ".isyntax"}
# TIFF compressions that tiffslide decodes slowly (JPEG 2000: Aperio 33003/33005, 34712).
_SLOW_IN_TIFFSLIDE = {33003, 33004, 33005, 34712}


def _backend_class(name: str) -> Callable[[str], Backend]:
    if name == "openslide":
        from .openslide_backend import OpenSlideBackend

        return OpenSlideBackend
    if name == "tiffslide":
        from .tiffslide_backend import TiffSlideBackend

        return TiffSlideBackend
    if name == "zarr":
        from .zarr_backend import ZarrBackend

        return ZarrBackend
    if name == "array":
        return ArrayBackend
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def _tiff_is_tiled_and_fast(path: str) -> tuple[bool, bool]:
    """(tiled, decodes quickly in tiffslide) for the first page of a TIFF."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page: Any = tif.pages[0]  # the first page is always a TiffPage
        return bool(page.is_tiled), int(page.compression) not in _SLOW_IN_TIFFSLIDE


def _auto_candidates(path: str) -> list[str]:
    """Backends to try, fastest first (see benchmarks/RESULTS.md for the measurements)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if p.is_dir() or suffix == ".zarr" or path.endswith((".zarr/", ".ome.zarr")):
        return ["zarr"]
    if "://" in path:
        return ["tiffslide"]
    if suffix in _OPENSLIDE_ONLY:
        return ["openslide"]
    if suffix in (".svs", ".tif", ".tiff", ".ome.tif", ".ome.tiff", ".qptiff"):
        try:
            tiled, fast = _tiff_is_tiled_and_fast(path)
        except Exception:
            return ["openslide", "tiffslide", "array"]
        if not tiled:
            return ["array", "tiffslide", "openslide"]
        return ["tiffslide", "openslide"] if fast else ["openslide", "tiffslide"]
    if suffix in IMAGE_SUFFIXES:
        return ["array"]
    return ["openslide", "tiffslide", "array"]


def _probe(reader: Backend) -> None:
    """Decode one pixel of the smallest level, so corrupt files fail at open, not mid-run."""
    level = len(reader.level_dimensions) - 1
    w, h = reader.level_dimensions[level]
    if w < 1 or h < 1:
        raise ValueError("the image has no pixels")
    reader.read_level(0, 0, level, 1, 1)


def open_slide(
    source: Any,
    *,
    backend: BackendName = "auto",
    mpp: float | None = None,
    force_mpp: bool = False,
    decoder: Decoder = "auto",
) -> Slide:
    """Open a whole-slide image, region-of-interest image, zarr store or array.

    Parameters
    ----------
    source : str, pathlib.Path, numpy.ndarray or PIL.Image.Image
        A path (SVS, NDPI, MRXS, SCN, DICOM folder/file, generic or OME TIFF,
        PNG/JPEG), an fsspec URL (tiffslide), a zarr/OME-Zarr path, a numpy
        array ``(h, w, 3)`` uint8 or a PIL image. Greyscale and 16-bit images
        are converted to 8-bit RGB with a warning that says how.
    backend : {"auto", "openslide", "tiffslide", "zarr", "array"}
        The reader; ``"auto"`` (default) tries the fastest that fits the file.
    mpp : float or None
        Level-0 resolution in µm per pixel (> 0, finite) for arrays and files
        that carry none (then it is required). Where the file states one, the
        file's wins; a given value more than 1 % off it is warned about, naming
        both, and both are kept (``slide.file_mpp``, ``slide.given_mpp``).
    force_mpp : bool
        Use ``mpp`` even where the file states another resolution (for files
        whose metadata are known to be wrong).
    decoder : {"auto", "direct", "backend"}
        Where the pixels of tiled TIFF files (SVS, generic and OME TIFF) come
        from. ``"auto"`` (default): tiles decoded directly with imagecodecs in
        the reading thread, through a tile cache shared by the slide's handles,
        wherever the file's layout and codec allow it (see
        ``wsimito.slide.direct``); the backend's own reader otherwise.
        ``"direct"``: the direct decoder or an error saying why not.
        ``"backend"``: always the backend's reader. ``slide.decoder`` tells
        which one a slide uses.

    Returns
    -------
    Slide
        The opened slide; only metadata and one pixel were read.

    Raises
    ------
    ValueError
        ``mpp`` is not a positive, finite number or ``backend`` is unknown.
    wsimito.errors.UnsupportedImageError
        The image opens but holds pixels wsimito does not read (e.g. five
        channels, 32-bit integers); one line says what is supported.
    SlideOpenError
        No backend could open the file; the message lists what each said, or,
        for DICOM, which attribute is missing and how to repair it (with
        ``decoder="direct"``, why the direct decoder cannot read it).

    Warns
    -----
    UserWarning
        When pixels are converted (greyscale to RGB, 16 to 8 bits).
    """
    backend = choice(backend, "backend", BACKENDS)
    decoder = choice(decoder, "decoder", DECODERS)
    if mpp is not None:
        mpp = positive_float(mpp, "mpp", "µm per pixel (the slide's level-0 resolution)")
    if isinstance(source, Slide):
        return source if mpp is None else source.reopen(mpp=mpp)
    if not isinstance(source, (str, Path)):
        if backend not in ("auto", "array"):
            raise ValueError(f"in-memory images use backend='array', not {backend!r}")
        if decoder == "direct":
            raise ValueError("in-memory images have no file tiles; use decoder='auto' or 'backend'")
        if (
            isinstance(source, np.ndarray)
            or hasattr(source, "__array__")
            or hasattr(source, "mode")
        ):
            return _opened(ArrayBackend(source), mpp, force_mpp)
        raise TypeError(
            f"cannot open a {type(source).__name__}; pass a path or an (h, w, 3) uint8 array"
        )
    path = str(source)
    if "://" not in path and not Path(path).exists():
        raise SlideOpenError(f"{path}: no such file or directory")
    names = _auto_candidates(path) if backend == "auto" else [backend]
    errors: list[str] = []
    unsupported: UnsupportedImageError | None = None
    for name in names:
        reader: Backend | None = None
        try:
            reader = _backend_class(name)(path)
            _probe(reader)
            return _opened(reader, mpp, force_mpp, decoder)
        except Exception as exc:  # each backend raises its own types
            if reader is not None:
                with contextlib.suppress(Exception):
                    reader.close()
            if isinstance(exc, UnsupportedImageError) and unsupported is None:
                unsupported = exc
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    if unsupported is not None:  # the pixels, not the readers, are the problem: say that alone
        raise UnsupportedImageError(str(unsupported)) from None
    said = "; ".join(errors)
    if _looks_like_dicom(path):
        from .dicom import dicom_problems, explain

        problems = dicom_problems(path)
        if problems:
            raise SlideOpenError(explain(path, problems, said))
    raise SlideOpenError(
        f"cannot open {path}: "
        + said
        + ". Check that the file is complete and a supported format (SVS, NDPI, MRXS, SCN, "
        "DICOM, TIFF, OME-Zarr, PNG/JPEG), or choose another backend=."
    )


def _opened(
    reader: Backend, mpp: float | None, force_mpp: bool, decoder: Decoder = "backend"
) -> Slide:
    """The slide over ``reader``, warning once about pixel conversions."""
    slide = Slide(reader, mpp=mpp, force_mpp=force_mpp, decoder=decoder)
    if reader.conversion:
        warnings.warn(f"{slide.name}: {reader.conversion}.", stacklevel=3)
    return slide


def _looks_like_dicom(path: str) -> bool:
    from .dicom import is_dicom

    return Path(path).suffix.lower() == ".dcm" or ("://" not in path and is_dicom(path))
