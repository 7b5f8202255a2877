"""Training detectors from point annotations."""

from .heatmap import focal_heatmap_loss, heatmap_targets, train_point_detector

__all__ = ["focal_heatmap_loss", "heatmap_targets", "train_point_detector"]
