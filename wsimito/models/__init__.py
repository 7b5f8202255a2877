"""Detector networks, their protocol wrappers, and the registry of named weights."""

from .cascade import CascadeDetector, CascadeNet
from .classifier import PatchClassifier, PatchClassifierNet
from .detectors import PointDetector, RetinaNetDetector
from .pointnet import PointHeatmapNet
from .registry import (
    UnpinnedWeightsWarning,
    Weights,
    get_weights,
    list_detectors,
    load_detector,
    register_detector,
    save_detector,
)
from .retinanet import RetinaNetDA

__all__ = [
    "CascadeDetector",
    "CascadeNet",
    "PatchClassifier",
    "PatchClassifierNet",
    "PointDetector",
    "PointHeatmapNet",
    "RetinaNetDA",
    "RetinaNetDetector",
    "UnpinnedWeightsWarning",
    "Weights",
    "get_weights",
    "list_detectors",
    "load_detector",
    "register_detector",
    "save_detector",
]
