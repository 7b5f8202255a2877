"""Slide readers: one `Slide` API over OpenSlide, tiffslide, zarr and in-memory arrays."""

from .backend import Backend
from .open import open_slide
from .slide import Slide

__all__ = ["Backend", "Slide", "open_slide"]
