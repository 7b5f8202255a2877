"""OpenSlide reader: SVS, NDPI, MRXS, SCN, Philips, DICOM, generic tiled TIFF."""

from __future__ import annotations

import numpy as np

from .backend import Backend
from .mpp import parse_properties


def rgba_on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite an ``(h, w, 4)`` uint8 RGBA array on white; returns RGB uint8."""
    alpha = rgba[:, :, 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgba[:, :, :3])
    rgb = rgba[:, :, :3].astype(np.uint16)
    a = alpha[:, :, None].astype(np.uint16)
    return ((rgb * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


class OpenSlideBackend(Backend):
    """Reads through openslide-python (thread-safe; one handle serves many threads)."""

    name = "openslide"

    def __init__(self, source: str) -> None:
        import openslide

        self.source = str(source)
        self._osr = openslide.OpenSlide(self.source)
        self.level_dimensions = tuple(tuple(map(int, d)) for d in self._osr.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in self._osr.level_downsamples)
        self.properties = {str(k): str(v) for k, v in self._osr.properties.items()}

    def read_region(self, location, level, size):
        img = self._osr.read_region(
            (int(location[0]), int(location[1])), level, (int(size[0]), int(size[1]))
        )
        if img.getextrema()[3][0] == 255:  # fully opaque: drop alpha in C
            return np.array(img.convert("RGB"))
        return rgba_on_white(np.asarray(img))

    def read_level(self, x, y, level, width, height):
        ds = self.level_downsamples[level]
        return self.read_region((round(x * ds), round(y * ds)), level, (width, height))

    def read_level_box(self, x, y, level, width, height):
        return self.read_level(x, y, level, width, height)

    def tile_size(self, level):
        p = self.properties
        tw = int(p.get(f"openslide.level[{level}].tile-width", 0) or 0)
        th = int(p.get(f"openslide.level[{level}].tile-height", 0) or 0)
        return (tw or 512, th or 512)

    def mpp(self):
        found = parse_properties(self.properties)
        return found if found else (None, None)

    def bounds(self):
        p = self.properties
        w, h = self.level_dimensions[0]
        if "openslide.bounds-x" not in p:
            return (0, 0, w, h)
        return (
            int(p.get("openslide.bounds-x", 0)),
            int(p.get("openslide.bounds-y", 0)),
            int(p.get("openslide.bounds-width", w)),
            int(p.get("openslide.bounds-height", h)),
        )

    def close(self):
        self._osr.close()
