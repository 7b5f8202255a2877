"""Detector networks, their protocol wrappers, and the weights registry."""

from .detectors import PointDetector, RetinaNetDetector
from .pointnet import PointHeatmapNet
from .registry import REGISTRY, load_detector, save_detector
from .retinanet import RetinaNetDA

__all__ = [
    "REGISTRY",
    "PointDetector",
    "PointHeatmapNet",
    "RetinaNetDA",
    "RetinaNetDetector",
    "load_detector",
    "save_detector",
]
