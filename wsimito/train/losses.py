"""Training losses: the point detector's heatmap loss and the RetinaNet loss.

Heatmap (:class:`~wsimito.models.PointHeatmapNet`): Gaussian targets at the
network stride centred on the exact mitotic-figure positions
(:func:`heatmap_targets`), a focal loss for soft targets
(:func:`focal_heatmap_loss`), and look-alikes as explicit negatives: the
target stays 0 at a look-alike, but the cells around it weigh
``lookalike_weight`` times more (:func:`lookalike_weights`), so the network
pays for every look-alike it fires on.

RetinaNet (:class:`~wsimito.models.RetinaNetDA`): each point becomes a
square box (50 x 50 px at 0.25 µm/px in MIDOG, 12.5 µm); anchors with IoU of
at least 0.5 with a box are positive, below 0.4 negative, in between ignored,
and each box's best anchor is positive; sigmoid focal loss (alpha 0.25,
gamma 2) over the classes, summed and divided by the positives, plus
smooth-L1 on the encoded box of each positive anchor (the inverse of
:func:`wsimito.models.anchors.decode_boxes`).

Points are x, y in input px, continuous convention (pixel ``(c, r)`` has its
centre at ``(c + 0.5, r + 0.5)``); heatmap cell ``j`` at stride ``s`` is
centred on ``s * (j + 0.5)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from ..models.anchors import BOX_DELTA_SCALE, box_iou, cthw_to_tlbr


def _gaussians(
    points: Sequence[torch.Tensor],
    size: tuple[int, int],
    stride: int,
    sigma: float,
    device: torch.device | str,
) -> torch.Tensor:
    """``(N, 1, H / stride, W / stride)``: the maximum of unit Gaussians at the points."""
    h, w = size[0] // stride, size[1] // stride
    s = sigma / stride
    rows = torch.arange(h, dtype=torch.float32, device=device)
    cols = torch.arange(w, dtype=torch.float32, device=device)
    out = torch.zeros(len(points), 1, h, w, device=device)
    for n, pts in enumerate(points):
        pts = torch.as_tensor(pts, dtype=torch.float32).reshape(-1, 2).to(device)
        if len(pts) == 0:
            continue
        u = pts[:, 0] / stride - 0.5
        v = pts[:, 1] / stride - 0.5
        gy = torch.exp(-((rows[None, :] - v[:, None]) ** 2) / (2 * s * s))
        gx = torch.exp(-((cols[None, :] - u[:, None]) ** 2) / (2 * s * s))
        out[n, 0] = (gy[:, :, None] * gx[:, None, :]).amax(dim=0)
    return out


def heatmap_targets(
    points: Sequence[torch.Tensor],
    size: tuple[int, int],
    stride: int,
    sigma: float,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Gaussian centre heatmaps ``(N, 1, H / stride, W / stride)`` with peak 1 at each point.

    Parameters
    ----------
    points : sequence of torch.Tensor
        One ``(K, 2)`` tensor of x, y (input px) per image.
    size : tuple of int
        Input ``(H, W)`` px.
    stride : int
        Input px per heatmap cell.
    sigma : float
        Gaussian standard deviation, input px. Overlapping Gaussians combine by maximum.
    device : torch.device or str
        Where the targets are built.

    Returns
    -------
    torch.Tensor
        The float32 targets in [0, 1], on ``device``.

    Examples
    --------
    >>> import torch
    >>> maps = heatmap_targets([torch.tensor([[6.0, 2.0]])], (8, 16), stride=4, sigma=2.0)
    >>> tuple(maps.shape), maps.max().item()  # peak at heatmap cell (row 0, column 1)
    ((1, 1, 2, 4), 1.0)
    """
    return _gaussians(points, size, stride, sigma, device)


def lookalike_weights(
    lookalikes: Sequence[torch.Tensor],
    size: tuple[int, int],
    stride: int,
    sigma: float,
    weight: float,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Per-cell loss weights ``1 + (weight - 1) * g``, with ``g`` Gaussians (peak 1) at look-alikes.

    Parameters
    ----------
    lookalikes : sequence of torch.Tensor
        One ``(K, 2)`` tensor of look-alike x, y (input px) per image.
    size : tuple of int
        Input ``(H, W)`` px.
    stride : int
        Input px per heatmap cell.
    sigma : float
        Gaussian standard deviation, input px.
    weight : float
        Weight at a look-alike's centre (1 = no extra weight).
    device : torch.device or str
        Where the weights are built.

    Returns
    -------
    torch.Tensor
        ``(N, 1, H / stride, W / stride)`` float32 weights >= 1.

    Raises
    ------
    ValueError
        ``weight`` is below 1.
    """
    if weight < 1:
        raise ValueError(f"lookalike weight must be >= 1, got {weight}")
    return 1.0 + (weight - 1.0) * _gaussians(lookalikes, size, stride, sigma, device)


def focal_heatmap_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    n_points: int,
    gamma: float = 2.0,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Focal loss for soft targets, summed and divided by ``max(1, n_points)``.

    Per cell: ``w * |t - p| ** gamma * BCE(p, t)`` with ``p = sigmoid(logit)``
    (the quality focal loss of Li et al. 2020); it is minimal at ``p = t``, so
    the network learns the Gaussian shape that sub-pixel refinement relies on.

    Parameters
    ----------
    logits, targets : torch.Tensor
        ``(N, 1, h, w)`` network output and targets in [0, 1].
    n_points : int
        Positive points in the batch (the normaliser).
    gamma : float
        Focusing exponent.
    weights : torch.Tensor, optional
        Per-cell weights, e.g. :func:`lookalike_weights`.

    Returns
    -------
    torch.Tensor
        The scalar loss (computed in float32).
    """
    logits = logits.float()
    prob = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    per_cell = (prob - targets).abs().pow(gamma) * bce
    if weights is not None:
        per_cell = per_cell * weights
    return per_cell.sum() / max(1, n_points)


def encode_boxes(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """The regression targets that :func:`~wsimito.models.anchors.decode_boxes` maps to ``boxes``.

    Parameters
    ----------
    boxes : torch.Tensor
        ``(..., 4)`` boxes, cthw (centre y, x, height, width) in normalized
        units: the tile spans -1 to 1.
    anchors : torch.Tensor
        ``(..., 4)`` anchors, cthw in the same units, broadcastable to ``boxes``.

    Returns
    -------
    torch.Tensor
        ``(..., 4)`` box deltas (scaled by ``BOX_DELTA_SCALE``).
    """
    scale = boxes.new_tensor(BOX_DELTA_SCALE)
    centre = (boxes[..., :2] - anchors[..., :2]) / anchors[..., 2:] / scale[:2]
    side = torch.log(boxes[..., 2:] / anchors[..., 2:]) / scale[2:]
    return torch.cat([centre, side], dim=-1)


def retinanet_loss(
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    anchors: torch.Tensor,
    points: Sequence[torch.Tensor],
    classes: Sequence[torch.Tensor],
    *,
    tile_size: int,
    box_px: float,
    alpha: float = 0.25,
    gamma: float = 2.0,
    positive_iou: float = 0.5,
    negative_iou: float = 0.4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Focal classification loss and smooth-L1 box loss of a RetinaNet batch.

    Parameters
    ----------
    class_logits : torch.Tensor
        ``(N, A, C)`` class logits.
    box_deltas : torch.Tensor
        ``(N, A, 4)`` box regression outputs.
    anchors : torch.Tensor
        ``(A, 4)`` anchors, normalized cthw (:func:`~wsimito.models.anchors.create_anchors`).
    points : sequence of torch.Tensor
        Per image, ``(K, 2)`` object centres x, y in input px.
    classes : sequence of torch.Tensor
        Per image, ``(K,)`` int64 class column of each object (0 = mitotic figure),
        or -1 for objects that are background (look-alikes as negatives): their
        anchors count as negatives.
    tile_size : int
        Input side, px.
    box_px : float
        Side of the box around each point, input px.
    alpha, gamma : float
        Focal loss settings.
    positive_iou, negative_iou : float
        Anchor matching thresholds.

    Returns
    -------
    classification : torch.Tensor
        The scalar focal loss, summed over non-ignored anchors and divided by
        the number of positive anchors (at least 1).
    regression : torch.Tensor
        The scalar mean smooth-L1 over the box coordinates of positive
        anchors (0 without any).
    """
    n, a, c = class_logits.shape
    device = class_logits.device
    anchors = anchors.to(device)
    anchor_boxes = cthw_to_tlbr(anchors)
    half = tile_size / 2
    target = torch.zeros(n, a, c, device=device)
    weight = torch.ones(n, a, device=device)
    reg_loss, n_pos = class_logits.new_zeros((), dtype=torch.float32), 0
    for i, (pts, cls) in enumerate(zip(points, classes, strict=True)):
        pts = torch.as_tensor(pts, dtype=torch.float32).reshape(-1, 2).to(device)
        cls = torch.as_tensor(cls, dtype=torch.int64).reshape(-1).to(device)
        objects = cls >= 0
        pts, cls = pts[objects], cls[objects]
        if len(pts) == 0:
            continue
        side = torch.full((len(pts), 2), box_px / half, device=device)
        boxes = torch.cat([pts[:, [1, 0]] / half - 1.0, side], dim=1)  # cthw, normalized
        iou = box_iou(anchor_boxes, cthw_to_tlbr(boxes))  # (A, K)
        best_iou, best = iou.max(dim=1)
        best[iou.argmax(dim=0)] = torch.arange(len(pts), device=device)
        best_iou[iou.argmax(dim=0)] = 1.0  # each object's best anchor is positive
        positive = best_iou >= positive_iou
        weight[i] = torch.where((best_iou >= negative_iou) & ~positive, 0.0, 1.0)
        target[i, positive, cls[best[positive]]] = 1.0
        if positive.any():
            encoded = encode_boxes(boxes[best[positive]], anchors[positive])
            reg_loss = reg_loss + F.smooth_l1_loss(
                box_deltas[i, positive].float(), encoded, reduction="sum"
            )
            n_pos += int(positive.sum())
    logits = class_logits.float()
    prob = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    focal = alpha_t * (1 - p_t).pow(gamma) * bce * weight[..., None]
    classification = focal.sum() / max(1, n_pos)
    regression = reg_loss / max(1, 4 * n_pos)
    return classification, regression


__all__ = [
    "encode_boxes",
    "focal_heatmap_loss",
    "heatmap_targets",
    "lookalike_weights",
    "retinanet_loss",
]
