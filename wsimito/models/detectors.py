"""Detectors that follow the :class:`wsimito.Detector` protocol.

- :class:`PointDetector`: our centre-heatmap network plus peak extraction.
- :class:`RetinaNetDetector`: the MIDOG reference RetinaNet with its
  post-processing; a point is a box centre.
- :class:`DarkBlobDetector`: a learning-free baseline that marks dark blobs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..detect import RuntimeOptions, TorchDetector, check_tiles, resolve_device
from .anchors import create_anchors, cthw_to_tlbr, decode_boxes, nms
from .metadata import MIDOG21_METADATA
from .peaks import find_peaks
from .retinanet import RetinaNetDA

# RGB mean and std (of values / 255) the reference RetinaNet was trained with.
MIDOG21_MEAN = (0.7481, 0.5692, 0.7225)
MIDOG21_STD = (0.1759, 0.2284, 0.1792)


class _Normalizer:
    """uint8 RGB -> (x / 255 - mean) / std, per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values each, std > 0; got {mean}, {std}")
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=tiles.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=tiles.device).view(1, 3, 1, 1)
        return (tiles.float() / 255.0 - mean) / std


class PointDetector(TorchDetector):
    """A centre-heatmap network as a :class:`wsimito.Detector`.

    The network maps normalized tiles to one logit per ``stride`` px cell; a
    point is a local maximum of the sigmoid heatmap, refined to sub-pixel
    precision, with no other point within ``min_distance_um``.

    Parameters
    ----------
    model : a network with a ``stride`` attribute (px per output cell), e.g.
        :class:`PointHeatmapNet`.
    mpp : µm/px the model expects.
    tile_size : tile side, px at ``mpp``; a multiple of the network's input multiple.
    overlap : px at ``mpp``; at least the largest figure's diameter.
    threshold : default decision threshold on the peak probability.
    min_score : peaks below this probability are not returned at all; keep it
        below any threshold you may want to apply later.
    min_distance_um : minimum distance between two points, µm (6.25 µm is
        25 px at 0.25 µm/px, the reference's slide-wide suppression distance).
    mean, std : per-channel normalization of RGB / 255.
    options, device, name, metadata : see :class:`wsimito.detect.TorchDetector`.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mpp: float = 0.25,
        tile_size: int = 512,
        overlap: int = 64,
        threshold: float = 0.5,
        min_score: float = 0.1,
        min_distance_um: float = 6.25,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.25, 0.25, 0.25),
        options: RuntimeOptions | None = None,
        device: str | torch.device | None = None,
        name: str = "point-detector",
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        stride = getattr(model, "stride", None)
        if not isinstance(stride, int) or stride < 1:
            raise ValueError("model needs an integer `stride` attribute: input px per output cell")
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score is a probability in [0, 1], got {min_score}")
        if min_distance_um < 0:
            raise ValueError(f"min_distance_um must be >= 0 µm, got {min_distance_um}")
        super().__init__(
            model,
            mpp=mpp,
            tile_size=tile_size,
            overlap=overlap,
            threshold=threshold,
            options=options,
            device=device,
            name=name,
            metadata=metadata,
            min_distance_um=min_distance_um,
        )
        self.stride = stride
        self.min_score = float(min_score)
        self.normalize = _Normalizer(mean, std)

    @property
    def settings(self) -> dict[str, Any]:
        """Everything besides the network that a checkpoint must restore."""
        return {
            "mpp": self.mpp,
            "tile_size": self.tile_size,
            "overlap": self.overlap,
            "threshold": self.threshold,
            "min_score": self.min_score,
            "min_distance_um": self.min_distance_um,
            "mean": list(self.normalize.mean),
            "std": list(self.normalize.std),
        }

    def preprocess(self, tiles: torch.Tensor) -> torch.Tensor:
        return self.normalize(tiles)

    def postprocess(self, output: torch.Tensor) -> list[torch.Tensor]:
        return find_peaks(
            torch.sigmoid(output.float()),
            stride=self.stride,
            min_score=self.min_score,
            min_distance=self.min_distance_um / self.mpp,
        )


class RetinaNetDetector(TorchDetector):
    """The MIDOG 2021 reference RetinaNet as a :class:`wsimito.Detector`.

    Post-processing follows the reference: sigmoid on the class logits; the
    box score is the maximum over the classes (``class_score="max"``) or the
    mitotic-figure column 0 alone (``"mitosis"``); boxes scoring above
    ``min_score`` are decoded, clipped to the tile and go through NMS at IoU
    ``nms_iou``; a point is a box centre. The slide-wide suppression by
    centre distance is the pipeline's job.

    Parameters
    ----------
    model : a :class:`RetinaNetDA`; ``None`` builds one with random weights.
    mpp : 0.25 µm/px. tile_size : 512 px. overlap : 52 px (10 %, stride 460 px).
    threshold : 0.64, the reference decision threshold.
    min_score : 0.4, boxes at or below it are dropped before NMS.
    nms_iou : 0.4.
    class_score : ``"max"`` (reference) or ``"mitosis"`` (column 0 only).
    mean, std : normalization of RGB / 255 used in training.
    min_distance_um : the reference's slide-wide suppression distance, 25 px at
        0.25 µm/px = 6.25 µm; the pipeline's duplicate check across tiles uses it.
    options, device, name, metadata : see :class:`wsimito.detect.TorchDetector`.
    """

    def __init__(
        self,
        model: RetinaNetDA | None = None,
        *,
        mpp: float = 0.25,
        tile_size: int = 512,
        overlap: int = 52,
        threshold: float = 0.64,
        min_score: float = 0.4,
        nms_iou: float = 0.4,
        class_score: str = "max",
        mean: Sequence[float] = MIDOG21_MEAN,
        std: Sequence[float] = MIDOG21_STD,
        scales: Sequence[float] = (0.2, 0.4, 0.6, 0.8, 1.0),
        min_distance_um: float = 6.25,
        options: RuntimeOptions | None = None,
        device: str | torch.device | None = None,
        name: str = "midog21-retinanet",
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if class_score not in ("max", "mitosis"):
            raise ValueError(f"class_score must be 'max' or 'mitosis', got {class_score!r}")
        model = RetinaNetDA() if model is None else model
        if len(scales) != model.n_anchors:
            raise ValueError(
                f"{len(scales)} anchor scales for a model with {model.n_anchors} anchors"
            )
        super().__init__(
            model,
            mpp=mpp,
            tile_size=tile_size,
            overlap=overlap,
            threshold=threshold,
            options=options,
            device=device,
            name=name,
            metadata=MIDOG21_METADATA if metadata is None else metadata,
            min_distance_um=min_distance_um,
        )
        self.min_score = float(min_score)
        self.nms_iou = float(nms_iou)
        self.class_score = class_score
        self.scales = tuple(float(s) for s in scales)
        self.normalize = _Normalizer(mean, std)
        grids = [(tile_size // s, tile_size // s) for s in (8, 16, 32, 64, 128)]
        self.anchors = create_anchors(
            [g for g in grids if g[0] in model.sizes], scales=self.scales
        ).to(self.device)

    @property
    def settings(self) -> dict[str, Any]:
        """Everything besides the network that a checkpoint must restore."""
        return {
            "mpp": self.mpp,
            "tile_size": self.tile_size,
            "overlap": self.overlap,
            "threshold": self.threshold,
            "min_score": self.min_score,
            "min_distance_um": self.min_distance_um,
            "nms_iou": self.nms_iou,
            "class_score": self.class_score,
            "mean": list(self.normalize.mean),
            "std": list(self.normalize.std),
            "scales": list(self.scales),
        }

    def preprocess(self, tiles: torch.Tensor) -> torch.Tensor:
        return self.normalize(tiles)

    def postprocess(self, output: tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
        return boxes_to_points(
            output[0].float(),
            output[1].float(),
            self.anchors,
            tile_size=self.tile_size,
            min_score=self.min_score,
            nms_iou=self.nms_iou,
            class_score=self.class_score,
        )


def boxes_to_points(
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    anchors: torch.Tensor,
    *,
    tile_size: int,
    min_score: float,
    nms_iou: float,
    class_score: str = "max",
) -> list[torch.Tensor]:
    """RetinaNet outputs -> per-tile ``(K, 3)`` box centres (x, y in tile px) and scores.

    ``class_logits``: ``(N, A, C)``; ``box_deltas``: ``(N, A, 4)``; ``anchors``:
    ``(A, 4)`` normalized cthw; ``tile_size`` in px.
    """
    probs = torch.sigmoid(class_logits)
    scores = probs.amax(dim=-1) if class_score == "max" else probs[..., 0]
    points = []
    for tile_scores, tile_deltas in zip(scores, box_deltas, strict=True):
        candidates = torch.nonzero(tile_scores > min_score, as_tuple=True)[0]
        boxes = cthw_to_tlbr(decode_boxes(tile_deltas[candidates], anchors[candidates]))
        boxes = boxes.clamp(-1.0, 1.0)
        keep = nms(boxes, tile_scores[candidates], nms_iou)
        boxes = boxes[keep]
        centre_yx = ((boxes[:, :2] + boxes[:, 2:]) / 2 + 1) * (tile_size / 2)
        points.append(
            torch.stack([centre_yx[:, 1], centre_yx[:, 0], tile_scores[candidates][keep]], dim=1)
        )
    return points


class DarkBlobDetector:
    """A learning-free baseline: local maxima of smoothed darkness; scores in [0, 1].

    It smooths the darkness of each tile over a disc the size of a nucleus and
    reports local maxima above a darkness level, batched on any device for the
    cost of a few pooling operations. It is the baseline a learned detector
    must beat (mitotic figures are dark, but so are pyknotic nuclei, apoptotic
    bodies and lymphocytes), and a cheap detector for pipeline benchmarks.

    Parameters
    ----------
    mpp: resolution the detector works at, µm/px.
    tile_size, overlap: px at ``mpp``.
    blob_um: diameter of the smoothing window, µm (about a nucleus).
    min_distance_um: peaks closer than this (µm) are merged.
    darkness: darkness (0 = white, 1 = black, after smoothing) that maps to score 0.5.
    threshold: decision threshold on the score.
    """

    def __init__(
        self,
        mpp: float = 0.25,
        tile_size: int = 512,
        overlap: int = 64,
        *,
        blob_um: float = 6.0,
        min_distance_um: float = 8.0,
        darkness: float = 0.55,
        threshold: float = 0.5,
        device: str | torch.device = "auto",
    ) -> None:
        self.mpp, self.tile_size, self.overlap = float(mpp), int(tile_size), int(overlap)
        self.blob_um, self.min_distance_um, self.darkness = blob_um, min_distance_um, darkness
        self.threshold = threshold
        self.device = resolve_device(device)
        self.name = "dark-blob-baseline"
        self.metadata = {
            "training_data": "none (hand-set darkness rule)",
            "intended_use": "baseline for comparison; not for diagnostic use",
        }

    def detect(self, tiles: torch.Tensor) -> list[torch.Tensor]:
        """uint8 ``(N, 3, tile_size, tile_size)`` -> per tile ``(K, 3)``: x, y (px, continuous), score."""
        tiles = check_tiles(tiles, self.tile_size)
        gray = tiles.float().mean(dim=1, keepdim=True) / 255.0
        dark = 1.0 - gray
        k = max(1, int(round(self.blob_um / self.mpp)) | 1)
        smooth = F.avg_pool2d(dark, k, stride=1, padding=k // 2, count_include_pad=False)
        w = max(1, int(round(self.min_distance_um / self.mpp)) | 1)
        peaks = (smooth == F.max_pool2d(smooth, w, stride=1, padding=w // 2)) & (
            smooth > self.darkness - 0.15
        )
        out = []
        for n in range(tiles.shape[0]):
            ys, xs = torch.nonzero(peaks[n, 0], as_tuple=True)
            d = smooth[n, 0, ys, xs]
            score = torch.sigmoid((d - self.darkness) * 20.0)
            out.append(torch.stack([xs.float() + 0.5, ys.float() + 0.5, score], dim=1))
        return out
