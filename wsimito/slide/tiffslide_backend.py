"""tiffslide reader: the TIFF family (SVS, generic and OME TIFF), local or fsspec URLs."""

from __future__ import annotations

import numpy as np

from .backend import Backend
from .mpp import parse_properties


class TiffSlideBackend(Backend):
    """Reads through tiffslide (pure Python + tifffile; no per-tile cairo compositing)."""

    name = "tiffslide"

    def __init__(self, source: str, storage_options: dict | None = None) -> None:
        import tiffslide

        self.source = str(source)
        self._storage_options = storage_options
        self._ts = tiffslide.TiffSlide(self.source, storage_options=storage_options)
        self.level_dimensions = tuple(tuple(map(int, d)) for d in self._ts.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in self._ts.level_downsamples)
        self.properties = {str(k): str(v) for k, v in self._ts.properties.items() if v is not None}

    def read_level(self, x, y, level, width, height):
        # Index the level's pixels directly: tiffslide's read_region maps a
        # level-0 location to the level by truncation, which is off by one
        # pixel where the downsample is not a whole number.
        group = self._ts.zarr_group
        arr = group[str(level)] if len(self.level_dimensions) > 1 or "0" in group else group
        arr = np.asarray(arr[y : y + height, x : x + width])
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        elif arr.shape[2] == 4:
            from .openslide_backend import rgba_on_white

            arr = rgba_on_white(arr)
        if arr.dtype != np.uint8:
            raise TypeError(
                f"{self.source}: {arr.dtype} pixels are not supported; wsimito reads 8-bit RGB"
            )
        return np.ascontiguousarray(arr)

    def tile_size(self, level):
        p = self.properties
        tw = int(p.get(f"tiffslide.level[{level}].tile-width", 0) or 0)
        th = int(p.get(f"tiffslide.level[{level}].tile-height", 0) or 0)
        return (tw or 512, th or 512)

    def mpp(self):
        found = parse_properties(self.properties)
        return found if found else (None, None)

    def reopen_spec(self):
        return (type(self), (self.source,), {"storage_options": self._storage_options})

    def close(self):
        self._ts.close()
