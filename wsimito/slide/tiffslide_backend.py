"""tiffslide reader: the TIFF family (SVS, generic and OME TIFF), local or fsspec URLs."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UnsupportedImageError
from .backend import Backend
from .mpp import parse_properties
from .pixels import conversion_note, to_rgb8


class TiffSlideBackend(Backend):
    """Reads through tiffslide (pure Python + tifffile; no per-tile cairo compositing).

    Parameters
    ----------
    source : str
        A local path or an fsspec URL.
    storage_options : dict, optional
        fsspec options for URLs (credentials, caching).
    """

    name = "tiffslide"

    def __init__(self, source: str, storage_options: dict[str, Any] | None = None) -> None:
        import tiffslide

        self.source = str(source)
        self._storage_options = storage_options
        self._ts = tiffslide.TiffSlide(self.source, storage_options=storage_options)
        self.level_dimensions = tuple((int(w), int(h)) for w, h in self._ts.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in self._ts.level_downsamples)
        self.properties = {str(k): str(v) for k, v in self._ts.properties.items() if v is not None}
        first = self._level_array(0)
        channels = first.shape[2] if len(first.shape) == 3 else 1
        try:
            self.conversion = conversion_note(first.dtype, channels)
        except ValueError as exc:
            self._ts.close()
            raise UnsupportedImageError(f"{self.source}: {exc}") from None
        self._convert = first.dtype != np.uint8 or channels != 3

    def _level_array(self, level: int) -> Any:
        group = self._ts.zarr_group
        return group[str(level)] if len(self.level_dimensions) > 1 or "0" in group else group

    def read_level(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        # Index the level's pixels directly: tiffslide's read_region maps a
        # level-0 location to the level by truncation, which is off by one
        # pixel where the downsample is not a whole number.
        arr = np.asarray(self._level_array(level)[y : y + height, x : x + width])
        if self._convert:
            return to_rgb8(arr)
        return np.ascontiguousarray(arr)

    def tile_size(self, level: int) -> tuple[int, int]:
        p = self.properties
        tw = int(p.get(f"tiffslide.level[{level}].tile-width", 0) or 0)
        th = int(p.get(f"tiffslide.level[{level}].tile-height", 0) or 0)
        return (tw or 512, th or 512)

    def mpp(self) -> tuple[float | None, float | None]:
        found = parse_properties(self.properties)
        return found if found else (None, None)

    def reopen_spec(self) -> tuple[type[Backend], tuple[Any, ...], dict[str, Any]]:
        return (type(self), (self.source,), {"storage_options": self._storage_options})

    def close(self) -> None:
        self._ts.close()
