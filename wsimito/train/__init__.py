"""Training detectors from point annotations.

- :mod:`~wsimito.train.sampler`: which patches an epoch holds, balanced over
  domains and classes (:class:`BalancedSampler`);
- :mod:`~wsimito.train.augment`: augmentation on the device, per batch, with
  the points moved along (:class:`Augmenter` and its operations);
- :mod:`~wsimito.train.heatmap`: heatmap targets, the focal loss and a small
  loop over in-memory crops (:func:`train_point_detector`);
- :mod:`~wsimito.train.mining`: hard-negative mining (:func:`mine_hard_negatives`);
- :mod:`~wsimito.train.wsdal`: the cascade's patch classifier, trained with
  DMU, DLE and CSDGL (:func:`train_patch_classifier`).
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
from .mining import MinedCandidates, mine_hard_negatives
from .sampler import CLASSES, BalancedSampler, Samples
from .wsdal import ClassifierConfig, PatchSet, train_patch_classifier

__all__ = [
    "CLASSES",
    "AmplitudeBank",
    "Augmenter",
    "BalancedSampler",
    "ClassifierConfig",
    "Dihedral",
    "DomainFDA",
    "GaussianBlur",
    "HEDStainJitter",
    "JPEGArtefacts",
    "MinedCandidates",
    "PatchSet",
    "Samples",
    "StainMatrixJitter",
    "Zoom",
    "focal_heatmap_loss",
    "heatmap_targets",
    "mine_hard_negatives",
    "train_patch_classifier",
    "train_point_detector",
]
