"""Batched stain normalization, Fourier domain adaptation and stain augmentation.

All functions and normalizers take uint8 torch batches ``(N, 3, H, W)`` on any
device (or numpy ``(H, W, 3)`` / ``(N, H, W, 3)``) and return the input's
type, layout and device.
"""

from .augment import HEDJitter, RandomFDA
from .base import StainNormalizer
from .fda import FDA, fda
from .macenko import Macenko
from .reinhard import Reinhard
from .vahadane import Vahadane

__all__ = [
    "FDA",
    "HEDJitter",
    "Macenko",
    "RandomFDA",
    "Reinhard",
    "StainNormalizer",
    "Vahadane",
    "fda",
]
