"""OpenSlide reader: SVS, NDPI, MRXS, SCN, Philips, DICOM, generic tiled TIFF."""

from __future__ import annotations

from typing import Any

import numpy as np

from .backend import Backend
from .mpp import parse_properties
from .pixels import rgba_on_white

__all__ = ["OpenSlideBackend", "rgba_on_white"]


class OpenSlideBackend(Backend):
    """Reads through openslide-python (thread-safe; one handle serves many threads).

    Parameters
    ----------
    source : str
        Path of the slide file (for DICOM, one file of the series).
    """

    name = "openslide"

    def __init__(self, source: str) -> None:
        import openslide

        self.source = str(source)
        self._osr = openslide.OpenSlide(self.source)
        self.level_dimensions = tuple((int(w), int(h)) for w, h in self._osr.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in self._osr.level_downsamples)
        self.properties = {str(k): str(v) for k, v in self._osr.properties.items()}

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        import openslide

        osr = self._osr
        try:
            img = osr.read_region(
                (int(location[0]), int(location[1])), level, (int(size[0]), int(size[1]))
            )
        except openslide.OpenSlideError:
            # OpenSlide refuses every later call on a handle that saw an error
            # (a corrupt tile): take a fresh handle so other regions stay readable.
            if self._osr is osr:
                self._osr = openslide.OpenSlide(self.source)
            raise
        extrema: Any = img.getextrema()  # (min, max) per band: R, G, B, A
        if extrema[3][0] == 255:  # fully opaque: drop alpha in C
            return np.array(img.convert("RGB"))
        return rgba_on_white(np.asarray(img))

    def read_level(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        ds = self.level_downsamples[level]
        return self.read_region((round(x * ds), round(y * ds)), level, (width, height))

    def read_level_box(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        return self.read_level(x, y, level, width, height)

    def tile_size(self, level: int) -> tuple[int, int]:
        p = self.properties
        tw = int(p.get(f"openslide.level[{level}].tile-width", 0) or 0)
        th = int(p.get(f"openslide.level[{level}].tile-height", 0) or 0)
        return (tw or 512, th or 512)

    def mpp(self) -> tuple[float | None, float | None]:
        found = parse_properties(self.properties)
        return found if found else (None, None)

    def bounds(self) -> tuple[int, int, int, int]:
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

    def close(self) -> None:
        self._osr.close()
