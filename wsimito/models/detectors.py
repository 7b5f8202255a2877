"""Detectors that follow the :class:`wsimito.Detector` protocol.

- :class:`PointDetector`: our centre-heatmap network plus peak extraction.
- :class:`RetinaNetDetector`: the MIDOG reference RetinaNet with its
  post-processing; a point is a box centre.
- :class:`DarkBlobDetector`: a learning-free baseline that marks dark blobs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from ..detect import RuntimeOptions, TorchDetector, check_tiles, resolve_device
from .anchors import box_iou, create_anchors, cthw_to_tlbr, decode_boxes, grouped_greedy_keep
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
    model : torch.nn.Module
        A network with an integer ``stride`` attribute (input px per output
        cell), e.g. :class:`PointHeatmapNet`.
    mpp : float
        Resolution the model expects, µm/px.
    tile_size : int
        Tile side, px at ``mpp``; a multiple of the network's input multiple.
    overlap : int
        Overlap between tiles, px at ``mpp``; at least the largest figure's diameter.
    threshold : float
        Default decision threshold on the peak probability, in [0, 1].
    min_score : float
        Peaks below this probability are not returned at all; keep it below
        any threshold you may want to apply later.
    min_distance_um : float
        Minimum distance between two points, µm (6.25 µm is 25 px at
        0.25 µm/px, the reference's slide-wide suppression distance).
    mean : sequence of float
        Per-channel mean of RGB / 255 that the network was trained with.
    std : sequence of float
        Per-channel standard deviation of RGB / 255 (> 0).
    options : RuntimeOptions, optional
        Device, precision, channels-last and compile settings.
    device : str or torch.device, optional
        Shortcut that overrides ``options.device``.
    name : str
        Short model name, copied into results.
    metadata : Mapping[str, Any], optional
        Free-form facts (training data, intended use), copied into results.

    Raises
    ------
    ValueError
        The model has no integer ``stride``, or a parameter is out of range.
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

    @override
    def preprocess(self, tiles: torch.Tensor) -> torch.Tensor:
        return self.normalize(tiles)

    @override
    def postprocess(self, output: torch.Tensor) -> list[torch.Tensor]:
        return find_peaks(
            torch.sigmoid(output.float()),
            stride=self.stride,
            min_score=self.min_score,
            min_distance=(self.min_distance_um or 0.0) / self.mpp,
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
    model : RetinaNetDA or None
        The network; ``None`` builds one with random weights.
    mpp : float
        Resolution the model expects, µm/px (0.25 for the reference).
    tile_size : int
        Tile side, px at ``mpp`` (512).
    overlap : int
        Overlap between tiles, px at ``mpp`` (52 px: 10 %, stride 460 px).
    threshold : float
        Default decision threshold on the box score (0.64, the reference's).
    min_score : float
        Box score in [0, 1] at or below which boxes are dropped before NMS (0.4).
    nms_iou : float
        IoU above which NMS suppresses the lower-scoring box (0.4).
    class_score : {"max", "mitosis"}
        ``"max"`` (the reference): the maximum over the classes; ``"mitosis"``:
        the mitotic-figure column 0 alone.
    mean : sequence of float
        Per-channel mean of RGB / 255 used in training.
    std : sequence of float
        Per-channel standard deviation of RGB / 255 used in training.
    scales : sequence of float
        Anchor scales, one per anchor of the model.
    min_distance_um : float
        The reference's slide-wide suppression distance, 25 px at 0.25 µm/px
        = 6.25 µm; the pipeline's duplicate check across tiles uses it.
    options : RuntimeOptions, optional
        Device, precision, channels-last and compile settings.
    device : str or torch.device, optional
        Shortcut that overrides ``options.device``.
    name : str
        Short model name, copied into results.
    metadata : Mapping[str, Any], optional
        Free-form facts (training data, intended use), copied into results.

    Raises
    ------
    ValueError
        ``class_score`` is unknown, the number of scales does not match the
        model's anchors, or a parameter is out of range.
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
        class_score: Literal["max", "mitosis"] = "max",
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

    @override
    def preprocess(self, tiles: torch.Tensor) -> torch.Tensor:
        return self.normalize(tiles)

    @override
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
    class_score: Literal["max", "mitosis"] = "max",
) -> list[torch.Tensor]:
    """Turn RetinaNet outputs into box centres and scores, per tile.

    Parameters
    ----------
    class_logits : torch.Tensor
        ``(N, A, C)`` class logits.
    box_deltas : torch.Tensor
        ``(N, A, 4)`` box regression outputs.
    anchors : torch.Tensor
        ``(A, 4)`` anchors, normalized ``(cy, cx, h, w)`` in [-1, 1] units.
    tile_size : int
        Tile side, px.
    min_score : float
        Box score in [0, 1] at or below which boxes are dropped before NMS.
    nms_iou : float
        IoU above which NMS suppresses the lower-scoring box.
    class_score : {"max", "mitosis"}
        The box score: the maximum over the classes, or class 0 alone.

    Returns
    -------
    list of torch.Tensor
        One ``(K, 3)`` tensor per tile: box centre ``x, y`` in tile px and score.
    """
    probs = torch.sigmoid(class_logits)
    scores = probs.amax(dim=-1) if class_score == "max" else probs[..., 0]
    # One synchronisation per batch (the number of candidates), then NMS on the host for
    # every tile at once: no device round trip per tile.
    tile, anchor = torch.nonzero(scores > min_score, as_tuple=True)
    boxes = cthw_to_tlbr(decode_boxes(box_deltas[tile, anchor], anchors[anchor]))
    boxes = boxes.clamp(-1.0, 1.0)
    box_scores = scores[tile, anchor]
    host_boxes, host_scores = boxes.cpu(), box_scores.cpu().numpy()
    host_tile = tile.cpu().numpy()

    def overlapping(members: np.ndarray) -> np.ndarray:
        chosen = host_boxes[torch.from_numpy(members)]
        overlap: np.ndarray = (box_iou(chosen, chosen) > nms_iou).numpy()
        return overlap

    keep = grouped_greedy_keep(host_tile, host_scores, overlapping)
    kept = host_boxes[torch.from_numpy(keep)]
    centre_yx = ((kept[:, :2] + kept[:, 2:]) / 2 + 1) * (tile_size / 2)
    points = torch.stack(
        [centre_yx[:, 1], centre_yx[:, 0], torch.from_numpy(host_scores[keep])], dim=1
    ).to(scores.device)
    counts = np.bincount(host_tile[keep], minlength=scores.shape[0]).tolist()
    return list(torch.split(points, counts))


class DarkBlobDetector:
    """A learning-free baseline: local maxima of smoothed darkness; scores in [0, 1].

    It smooths the darkness of each tile over a disc the size of a nucleus and
    reports local maxima above a darkness level, batched on any device for the
    cost of a few pooling operations. It is the baseline a learned detector
    must beat (mitotic figures are dark, but so are pyknotic nuclei, apoptotic
    bodies and lymphocytes), and a cheap detector for pipeline benchmarks.

    Parameters
    ----------
    mpp : float
        Resolution the detector works at, µm/px.
    tile_size : int
        Tile side, px at ``mpp``.
    overlap : int
        Overlap between tiles, px at ``mpp``.
    blob_um : float
        Diameter of the smoothing window, µm (about a nucleus).
    min_distance_um : float
        Peaks closer than this, µm, are merged.
    darkness : float
        Darkness (0 = white, 1 = black, after smoothing) that maps to score 0.5.
    threshold : float
        Decision threshold on the score, in [0, 1].
    device : str or torch.device
        Where to run; ``"auto"`` picks CUDA, then MPS, then the CPU.

    Examples
    --------
    A dark disc of 8 µm on white, in one 256 px tile at 0.25 µm/px:

    >>> import torch
    >>> from wsimito import DarkBlobDetector
    >>> det = DarkBlobDetector(tile_size=256, device="cpu")
    >>> tile = torch.full((1, 3, 256, 256), 240, dtype=torch.uint8)
    >>> yy, xx = torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij")
    >>> tile[0, :, (xx - 100) ** 2 + (yy - 60) ** 2 < 16**2] = 40
    >>> points = det.detect(tile)[0]
    >>> points[points[:, 2] >= det.threshold].tolist()  # x, y (px at 0.25 µm/px), score
    [[100.5, 60.5, 1.0]]
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
        self.blob_um, self.darkness = blob_um, darkness
        self.min_distance_um: float | None = min_distance_um
        self.threshold = threshold
        self.device = resolve_device(device)
        self.name = "dark-blob-baseline"
        self.metadata: Mapping[str, Any] = {
            "training_data": "none (hand-set darkness rule)",
            "intended_use": "baseline for comparison; not for diagnostic use",
        }

    def detect(self, tiles: torch.Tensor) -> list[torch.Tensor]:
        """Detect dark blobs in a batch of tiles.

        Parameters
        ----------
        tiles : torch.Tensor
            The tiles, uint8 RGB ``(N, 3, tile_size, tile_size)``, read at ``mpp``.

        Returns
        -------
        list of torch.Tensor
            One float ``(K, 3)`` tensor per tile: ``x, y`` in tile px
            (continuous convention) and a score in [0, 1].

        Raises
        ------
        wsimito.TileInputError
            The tiles are not uint8 ``(N, 3, tile_size, tile_size)``.
        """
        tiles = check_tiles(tiles, self.tile_size)
        gray = tiles.float().mean(dim=1, keepdim=True) / 255.0
        dark = 1.0 - gray
        k = max(1, int(round(self.blob_um / self.mpp)) | 1)
        smooth = F.avg_pool2d(dark, k, stride=1, padding=k // 2, count_include_pad=False)
        w = max(1, int(round((self.min_distance_um or 0.0) / self.mpp)) | 1)
        peaks = (smooth == F.max_pool2d(smooth, w, stride=1, padding=w // 2)) & (
            smooth > self.darkness - 0.15
        )
        n, _, ys, xs = torch.nonzero(peaks, as_tuple=True)  # one synchronisation per batch
        score = torch.sigmoid((smooth[n, 0, ys, xs] - self.darkness) * 20.0)
        points = torch.stack([xs.float() + 0.5, ys.float() + 0.5, score], dim=1)
        counts = torch.bincount(n, minlength=tiles.shape[0]).tolist()
        return list(torch.split(points, counts))
