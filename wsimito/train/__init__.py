"""Training detectors from point annotations.

- :mod:`~wsimito.train.sampler`: which patches an epoch holds, balanced over
  domains and classes (:class:`BalancedSampler`);
- :mod:`~wsimito.train.augment`: augmentation on the device, per batch, with
  the points moved along (:class:`Augmenter` and its operations);
- :mod:`~wsimito.train.heatmap`: heatmap targets, the focal loss and a small
  loop over in-memory crops (:func:`train_point_detector`).
"""

from .augment import (
    AmplitudeBank,
    Augmenter,
    Dihedral,
    DomainFDA,
    GaussianBlur,
    HEDStainJitter,
    JPEGArtefacts,
    StainMatrixJitter,
    Zoom,
)
from .heatmap import focal_heatmap_loss, heatmap_targets, train_point_detector
from .sampler import CLASSES, BalancedSampler, Samples

__all__ = [
    "CLASSES",
    "AmplitudeBank",
    "Augmenter",
    "BalancedSampler",
    "Dihedral",
    "DomainFDA",
    "GaussianBlur",
    "HEDStainJitter",
    "JPEGArtefacts",
    "Samples",
    "StainMatrixJitter",
    "Zoom",
    "focal_heatmap_loss",
    "heatmap_targets",
    "train_point_detector",
]
