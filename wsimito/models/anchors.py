"""Anchors, box decoding and NMS for the MIDOG reference RetinaNet, in plain torch.

Boxes follow fastai's normalized convention: ``(cy, cx, h, w)`` where the tile
spans -1 to 1 along each axis (``"cthw"``), or ``(top, left, bottom, right)``
in the same units (``"tlbr"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

# The reference scales regression outputs (dy, dx, dh, dw) by these factors.
BOX_DELTA_SCALE = (0.1, 0.1, 0.2, 0.2)


def create_anchors(
    sizes: Sequence[tuple[int, int]] = ((64, 64), (32, 32), (16, 16)),
    scales: Sequence[float] = (0.2, 0.4, 0.6, 0.8, 1.0),
    ratios: Sequence[float] = (1.0,),
) -> torch.Tensor:
    """Anchors ``(A, 4)`` in normalized cthw, ordered (level, row, col, ratio, scale).

    On an ``(h, w)`` grid the anchor centres sit at the cell centres and the
    sides are ``8 * scale * sqrt(ratio) / h`` (height) and
    ``8 * scale / sqrt(ratio) / w`` (width) normalized units, i.e.
    ``2048 * scale / grid`` px on a 512 px tile for ratio 1.
    """
    shapes = torch.tensor(
        [[s * math.sqrt(r), s * math.sqrt(1 / r)] for r in ratios for s in scales]
    )
    levels = []
    for h, w in sizes:
        cy = (torch.arange(h, dtype=torch.float32) + 0.5) * 2 / h - 1
        cx = (torch.arange(w, dtype=torch.float32) + 0.5) * 2 / w - 1
        centres = torch.stack(torch.meshgrid(cy, cx, indexing="ij"), dim=-1).reshape(-1, 1, 2)
        sides = (8 * shapes / torch.tensor([h, w])).reshape(1, -1, 2)
        levels.append(
            torch.cat([centres.expand(-1, len(shapes), 2), sides.expand(h * w, -1, 2)], dim=-1)
        )
    return torch.cat([lv.reshape(-1, 4) for lv in levels])


def decode_boxes(deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Regression outputs ``(..., A, 4)`` on ``anchors`` ``(A, 4)`` -> cthw boxes.

    centre = anchor centre + 0.1 * delta * anchor side;
    side = anchor side * exp(0.2 * delta).
    """
    scaled = deltas * deltas.new_tensor(BOX_DELTA_SCALE)
    centres = anchors[..., :2] + anchors[..., 2:] * scaled[..., :2]
    sides = anchors[..., 2:] * torch.exp(scaled[..., 2:])
    return torch.cat([centres, sides], dim=-1)


def cthw_to_tlbr(boxes: torch.Tensor) -> torch.Tensor:
    """``(cy, cx, h, w)`` -> ``(top, left, bottom, right)``."""
    half = boxes[..., 2:] / 2
    return torch.cat([boxes[..., :2] - half, boxes[..., :2] + half], dim=-1)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of tlbr boxes ``(K, 4)`` x ``(M, 4)`` -> ``(K, M)``."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(dim=-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(dim=-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-12)


def greedy_keep(conflicts: torch.Tensor) -> torch.Tensor:
    """Greedy suppression over items sorted best first.

    ``conflicts[a, b]`` (``a < b``) says a kept item ``a`` removes ``b``. Returns
    the boolean keep mask on the input's device.
    """
    upper = torch.triu(conflicts, diagonal=1).cpu()
    keep = torch.ones(len(upper), dtype=torch.bool)
    for k in range(len(upper)):
        if keep[k]:
            keep &= ~upper[k]
    return keep.to(conflicts.device)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression of tlbr boxes; returns kept indices by score.

    A box is dropped when its IoU with a higher-scoring kept box exceeds
    ``iou_threshold``.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    boxes = boxes[order]
    return order[greedy_keep(box_iou(boxes, boxes) > iou_threshold)]
