"""In-memory images: numpy arrays, PIL images, PNG/JPEG and plain TIFF files.

For region-of-interest images such as the MIDOG crops, which fit in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .backend import Backend
from .mpp import parse_properties, tifffile_properties

Image.MAX_IMAGE_PIXELS = None  # ROI images are trusted local files

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def as_rgb_array(image: Any) -> np.ndarray:
    """Convert an array or PIL image to ``(h, w, 3)`` uint8 RGB (alpha on white)."""
    if isinstance(image, Image.Image):
        if image.mode in ("RGBA", "LA", "P", "PA"):
            image = image.convert("RGBA")
        image = np.asarray(image)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(
            f"expected an (h, w, 3) RGB or (h, w, 4) RGBA image, got shape {arr.shape}; "
            "transpose channel-first arrays with arr.transpose(1, 2, 0)"
        )
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and arr.max() <= 1.0:
            arr = np.clip(arr * 255 + 0.5, 0, 255).astype(np.uint8)
        else:
            raise ValueError(f"expected uint8 pixels (or floats in [0, 1]), got {arr.dtype}")
    if arr.shape[2] == 4:
        rgb = arr[:, :, :3].astype(np.uint16)
        a = arr[:, :, 3:4].astype(np.uint16)
        arr = ((rgb * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


class ArrayBackend(Backend):
    """A single-level image held in memory."""

    name = "array"

    def __init__(self, source: Any) -> None:
        self.source = str(source) if isinstance(source, Path) else source
        props: dict[str, str] = {}
        if isinstance(self.source, str):
            image, props = _load_file(self.source)
        else:
            image = source
        self._array = as_rgb_array(image)
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

    def reopen_spec(self):
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
        return np.asarray(img.convert("RGBA") if img.mode in ("P", "PA", "LA") else img), props
