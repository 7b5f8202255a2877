"""The one small interface every slide reader implements.

A backend knows how to read pixels at a pyramid level; everything else
(resolution handling, resampling, dask views, pickling) lives in
:class:`wsimito.slide.Slide`. Coordinates are level-0 pixels throughout.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np


class Backend(ABC):
    """A pyramid reader. Subclasses set the attributes in ``__init__``.

    Attributes
    ----------
    name : str
        Backend name used by ``open_slide(backend=...)``.
    source : Any
        What was opened (a path string, or an object for in-memory backends).
    level_dimensions : tuple of (int, int)
        ``(width, height)`` per level, px at that level.
    level_downsamples : tuple of float
        Level-0 px per level px, per level.
    properties : dict of str to str
        Vendor and reader metadata.
    conversion : str or None
        What reading converts (greyscale to RGB, 16 to 8 bits), said once when
        the slide is opened; ``None`` for 8-bit RGB(A).
    """

    name: str = "abstract"
    source: Any
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    properties: dict[str, str]
    conversion: str | None = None

    @abstractmethod
    def read_level(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """Read a box given in **level** pixels that lies inside the level.

        Returns ``(height, width, 3)`` uint8 RGB; transparent pixels composited
        on white. Callers guarantee ``0 <= x``, ``x + width <= level width``
        (same for y) and positive sizes.
        """

    def read_level_box(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """Read a box in **level** pixels that may cross the level's edge (white outside)."""
        lw, lh = self.level_dimensions[level]
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, lw), min(y + height, lh)
        if x0 == x and y0 == y and x1 == x + width and y1 == y + height:
            return self.read_level(x, y, level, width, height)
        out = np.full((height, width, 3), 255, dtype=np.uint8)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self.read_level(x0, y0, level, x1 - x0, y1 - y0)
        return out

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        """OpenSlide-style read: ``location`` in level-0 px, ``size`` in level px.

        Pixels outside the level are white. Backends whose library handles
        this natively (OpenSlide) override it.
        """
        ds = self.level_downsamples[level]
        lx, ly = int(location[0] // ds), int(location[1] // ds)
        return self.read_level_box(lx, ly, level, int(size[0]), int(size[1]))

    def tile_size(self, level: int) -> tuple[int, int]:
        """The file's native tile ``(width, height)`` at ``level``, in level px."""
        return (512, 512)

    def mpp(self) -> tuple[float | None, float | None]:
        """Level-0 resolution ``(x, y)`` in µm/px found in the file, or ``None``."""
        return (None, None)

    def bounds(self) -> tuple[int, int, int, int]:
        """Non-empty area ``(x, y, width, height)`` in level-0 px (OpenSlide's bounds-*)."""
        w, h = self.level_dimensions[0]
        return (0, 0, w, h)

    def reopen_spec(self) -> tuple[type[Backend], tuple[Any, ...], dict[str, Any]]:
        """``(class, args, kwargs)`` that reopen this backend in another process."""
        return (type(self), (self.source,), {})

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release file handles."""
