"""Count mitotic figures in H&E whole-slide images: the public names of wsimito.

Coordinates are level-0 pixels; resolutions are µm per pixel (mpp); areas mm².
Heavy parts (torch models, stain tools, synthetic slides) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    EmptyTissueError,
    MissingMPPError,
    SlideOpenError,
    SlideReadError,
    TileInputError,
    TileReadError,
    UnsupportedImageError,
    WeightsError,
    WsimitoError,
)
from .slide import Slide, open_slide
from .tiling import Tile, TileGrid
from .tissue import Tissue, detect_tissue

__version__ = "0.1.0"

# Public names whose modules import torch or other heavy dependencies.
_LAZY = {
    "Detector": ("wsimito.detect", "Detector"),
    "load_detector": ("wsimito.models", "load_detector"),
    "register_detector": ("wsimito.models", "register_detector"),
    "list_detectors": ("wsimito.models", "list_detectors"),
    "Weights": ("wsimito.models", "Weights"),
    "save_detector": ("wsimito.models", "save_detector"),
    "count_mitoses": ("wsimito.pipeline", "count_mitoses"),
    "count_many": ("wsimito.distributed", "count_many"),
    "MitosisResult": ("wsimito.result", "MitosisResult"),
    "Hotspot": ("wsimito.hotspot", "Hotspot"),
    "find_hotspot": ("wsimito.hotspot", "find_hotspot"),
    "DarkBlobDetector": ("wsimito.models.detectors", "DarkBlobDetector"),
    "CascadeDetector": ("wsimito.models.cascade", "CascadeDetector"),
    "Annotations": ("wsimito.io.annotations", "Annotations"),
    "AnnotationError": ("wsimito.io.annotations", "AnnotationError"),
    "read_annotations": ("wsimito.io.annotations", "read_annotations"),
}
_SUBMODULES = {"stain", "synthetic", "evaluate", "models", "data", "io", "train", "plot", "gallery"}

if TYPE_CHECKING:
    from .detect import Detector
    from .distributed import count_many
    from .hotspot import Hotspot, find_hotspot
    from .io.annotations import AnnotationError, Annotations, read_annotations
    from .models import Weights, list_detectors, load_detector, register_detector, save_detector
    from .models.cascade import CascadeDetector
    from .models.detectors import DarkBlobDetector
    from .pipeline import count_mitoses
    from .result import MitosisResult


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"wsimito.{name}")
    raise AttributeError(f"module 'wsimito' has no attribute {name!r}")


__all__ = [
    "AnnotationError",
    "Annotations",
    "CascadeDetector",
    "DarkBlobDetector",
    "Detector",
    "EmptyTissueError",
    "Hotspot",
    "MissingMPPError",
    "MitosisResult",
    "Slide",
    "SlideOpenError",
    "SlideReadError",
    "Tile",
    "TileGrid",
    "TileInputError",
    "TileReadError",
    "Tissue",
    "UnsupportedImageError",
    "Weights",
    "WeightsError",
    "WsimitoError",
    "count_many",
    "count_mitoses",
    "detect_tissue",
    "find_hotspot",
    "list_detectors",
    "load_detector",
    "open_slide",
    "read_annotations",
    "register_detector",
    "save_detector",
]
