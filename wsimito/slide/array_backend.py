"""In-memory images: numpy arrays, PIL images, PNG/JPEG and plain TIFF files.

For region-of-interest images such as the MIDOG crops, which fit in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import UnsupportedImageError
from .backend import Backend
from .mpp import parse_properties, tifffile_properties
from .pixels import SUPPORTED, conversion_note, to_rgb8

Image.MAX_IMAGE_PIXELS = None  # ROI images are trusted local files

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def as_rgb_array(image: Any) -> tuple[np.ndarray, str | None]:
    """Convert an array or PIL image to ``(h, w, 3)`` uint8 RGB, and say what was converted.

    Parameters
    ----------
    image : numpy.ndarray or PIL.Image.Image
        ``(h, w)`` greyscale, ``(h, w, c)`` with c = 1 to 4 (grey, grey + alpha,
        RGB, RGBA), 8 or 16 bits per channel, or floats in [0, 1].

    Returns
    -------
    rgb : numpy.ndarray
        ``(h, w, 3)`` uint8, alpha composited on white.
    conversion : str or None
        The sentence for the open-time warning (greyscale, 16 bits), or ``None``.

    Raises
    ------
    UnsupportedImageError
        Any other kind of pixels (also a ``ValueError``).
    """
    if isinstance(image, Image.Image):
        if image.mode in ("P", "PA"):
            image = image.convert("RGBA")
        elif image.mode in ("I;16", "I;16B", "I;16L"):
            image = np.asarray(image).astype(np.uint16)
        elif image.mode == "1":
            image = image.convert("L")
        image = np.asarray(image)
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] > 4):
        hint = (
            "; transpose channel-first arrays with arr.transpose(1, 2, 0)"
            if arr.ndim == 3 and arr.shape[0] <= 4
            else ""
        )
        raise UnsupportedImageError(
            f"expected an (h, w, 3) RGB or (h, w, 4) RGBA image, got shape {arr.shape}{hint}; "
            f"{SUPPORTED}"
        )
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    if np.issubdtype(arr.dtype, np.floating) and arr.size and 0.0 <= arr.min() <= arr.max() <= 1:
        arr = np.clip(arr * 255 + 0.5, 0, 255).astype(np.uint8)
    try:
        note = conversion_note(arr.dtype, channels)
    except ValueError as exc:
        kind = " (floats must lie in [0, 1])" if np.issubdtype(arr.dtype, np.floating) else ""
        raise UnsupportedImageError(f"{exc}{kind}") from None
    return to_rgb8(arr), note


class ArrayBackend(Backend):
    """A single-level image held in memory.

    Parameters
    ----------
    source : str, pathlib.Path, numpy.ndarray or PIL.Image.Image
        A PNG, JPEG, BMP or plain (untiled) TIFF file, or the pixels; see
        :func:`as_rgb_array` for the kinds of pixels accepted.
    """

    name = "array"

    def __init__(self, source: Any) -> None:
        self.source = str(source) if isinstance(source, Path) else source
        props: dict[str, str] = {}
        if isinstance(self.source, str):
            image, props = _load_file(self.source)
        else:
            image = source
        try:
            self._array, self.conversion = as_rgb_array(image)
        except UnsupportedImageError as exc:
            if isinstance(self.source, str):
                raise UnsupportedImageError(f"{self.source}: {exc}") from None
            raise
        h, w = self._array.shape[:2]
        self.level_dimensions = ((w, h),)
        self.level_downsamples = (1.0,)
        self.properties = props
        self._mpp = parse_properties(props)

    def read_level(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        return self._array[y : y + height, x : x + width].copy()

    def tile_size(self, level: int) -> tuple[int, int]:
        return (1024, 1024)

    def mpp(self) -> tuple[float | None, float | None]:
        return self._mpp if self._mpp else (None, None)

    def reopen_spec(self) -> tuple[type[Backend], tuple[Any, ...], dict[str, Any]]:
        src = self.source if isinstance(self.source, str) else self._array
        return (type(self), (src,), {})


def _load_file(path: str) -> tuple[np.ndarray, dict[str, str]]:
    suffix = Path(path).suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            props = tifffile_properties(page)
            arr = page.asarray()
        if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (3, 4):
            arr = arr.transpose(1, 2, 0)
        return arr, props
    with Image.open(path) as img:
        props = {}
        dpi = img.info.get("dpi")
        if dpi and dpi[0] and dpi[1]:
            props = {
                "tiff.XResolution": str(float(dpi[0])),
                "tiff.YResolution": str(float(dpi[1])),
                "tiff.ResolutionUnit": "inch",
            }
        img.load()
        if img.mode in ("P", "PA"):
            return np.asarray(img.convert("RGBA")), props
        if img.mode.startswith("I;16"):
            return np.asarray(img).astype(np.uint16), props
        if img.mode in ("1", "I", "F"):
            return np.asarray(img.convert("L") if img.mode == "1" else img), props
        return np.asarray(img), props
