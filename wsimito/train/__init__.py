"""Training detectors from point annotations (see ``docs/training.md``).

- :mod:`~wsimito.train.sampler`: which patches an epoch holds, balanced over
  domains and classes (:class:`BalancedSampler`);
- :mod:`~wsimito.train.datasets`: reading them from annotated slides
  (:class:`PatchDataset`);
- :mod:`~wsimito.train.augment`: augmentation on the device, per batch, with
  the points moved along (:class:`Augmenter` and its operations);
- :mod:`~wsimito.train.losses`: heatmap loss with look-alikes as negatives,
  RetinaNet loss;
- :mod:`~wsimito.train.config` and :mod:`~wsimito.train.loop`: the TOML
  configuration and the loop behind ``wsimito train`` (:func:`train`,
  :class:`Trainer`);
- :mod:`~wsimito.train.heatmap`: the small in-memory loop of the demo detector
  (:func:`train_point_detector`);
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
from .config import ConfigError, TrainingConfig, load_config
from .datasets import PatchBatch, PatchDataset, TrainingDataError
from .heatmap import train_point_detector
from .loop import Trainer, TrainingResult, train
from .losses import focal_heatmap_loss, heatmap_targets, lookalike_weights, retinanet_loss
from .mining import MinedCandidates, mine_hard_negatives
from .sampler import CLASSES, BalancedSampler, Samples
from .wsdal import ClassifierConfig, PatchSet, train_patch_classifier

__all__ = [
    "CLASSES",
    "AmplitudeBank",
    "Augmenter",
    "BalancedSampler",
    "ClassifierConfig",
    "ConfigError",
    "Dihedral",
    "DomainFDA",
    "GaussianBlur",
    "HEDStainJitter",
    "JPEGArtefacts",
    "MinedCandidates",
    "PatchBatch",
    "PatchDataset",
    "PatchSet",
    "Samples",
    "StainMatrixJitter",
    "Trainer",
    "TrainingConfig",
    "TrainingDataError",
    "TrainingResult",
    "Zoom",
    "focal_heatmap_loss",
    "heatmap_targets",
    "load_config",
    "lookalike_weights",
    "mine_hard_negatives",
    "retinanet_loss",
    "train",
    "train_patch_classifier",
    "train_point_detector",
]
