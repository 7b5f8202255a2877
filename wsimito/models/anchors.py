"""Anchors, box decoding and NMS for the MIDOG reference RetinaNet, in plain torch.

Boxes follow fastai's normalized convention: ``(cy, cx, h, w)`` where the tile
spans -1 to 1 along each axis (``"cthw"``), or ``(top, left, bottom, right)``
in the same units (``"tlbr"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

# The reference scales regression outputs (dy, dx, dh, dw) by these factors.
BOX_DELTA_SCALE = (0.1, 0.1, 0.2, 0.2)


def create_anchors(
    sizes: Sequence[tuple[int, int]] = ((64, 64), (32, 32), (16, 16)),
    scales: Sequence[float] = (0.2, 0.4, 0.6, 0.8, 1.0),
    ratios: Sequence[float] = (1.0,),
) -> torch.Tensor:
    """Make the anchors of a RetinaNet, in normalized cthw.

    On an ``(h, w)`` grid the anchor centres sit at the cell centres and the
    sides are ``8 * scale * sqrt(ratio) / h`` (height) and
    ``8 * scale / sqrt(ratio) / w`` (width) normalized units, i.e.
    ``2048 * scale / grid`` px on a 512 px tile for ratio 1.

    Parameters
    ----------
    sizes : sequence of tuple of (int, int)
        ``(h, w)`` of each pyramid level's grid, cells.
    scales : sequence of float
        Anchor scales.
    ratios : sequence of float
        Aspect ratios (height / width).

    Returns
    -------
    torch.Tensor
        ``(A, 4)`` anchors ``(cy, cx, h, w)``, ordered (level, row, col, ratio, scale).

    Examples
    --------
    >>> from wsimito.models.anchors import create_anchors
    >>> anchors = create_anchors(sizes=[(64, 64)], scales=[0.2, 1.0])
    >>> tuple(anchors.shape), anchors[1].tolist()  # 32 px anchor of a 512 px tile
    ((8192, 4), [-0.984375, -0.984375, 0.125, 0.125])
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
    """Decode regression outputs on their anchors into boxes.

    centre = anchor centre + 0.1 * delta * anchor side;
    side = anchor side * exp(0.2 * delta).

    Parameters
    ----------
    deltas : torch.Tensor
        ``(..., A, 4)`` regression outputs ``(dy, dx, dh, dw)``.
    anchors : torch.Tensor
        ``(A, 4)`` anchors, normalized cthw.

    Returns
    -------
    torch.Tensor
        ``(..., A, 4)`` boxes, normalized cthw.
    """
    scaled = deltas * deltas.new_tensor(BOX_DELTA_SCALE)
    centres = anchors[..., :2] + anchors[..., 2:] * scaled[..., :2]
    sides = anchors[..., 2:] * torch.exp(scaled[..., 2:])
    return torch.cat([centres, sides], dim=-1)


def cthw_to_tlbr(boxes: torch.Tensor) -> torch.Tensor:
    """Convert boxes from ``(cy, cx, h, w)`` to ``(top, left, bottom, right)``.

    Parameters
    ----------
    boxes : torch.Tensor
        ``(..., 4)`` cthw boxes.

    Returns
    -------
    torch.Tensor
        ``(..., 4)`` tlbr boxes, same units.
    """
    half = boxes[..., 2:] / 2
    return torch.cat([boxes[..., :2] - half, boxes[..., :2] + half], dim=-1)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Compute the intersection over union of every pair of tlbr boxes.

    Parameters
    ----------
    a : torch.Tensor
        ``(K, 4)`` boxes.
    b : torch.Tensor
        ``(M, 4)`` boxes.

    Returns
    -------
    torch.Tensor
        ``(K, M)`` IoU in [0, 1].
    """
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(dim=-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(dim=-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-12)


def greedy_keep(conflicts: torch.Tensor) -> torch.Tensor:
    """Suppress greedily over items sorted best first.

    Parameters
    ----------
    conflicts : torch.Tensor
        ``(K, K)`` bool: ``conflicts[a, b]`` (``a < b``) says a kept item ``a``
        removes ``b``.

    Returns
    -------
    torch.Tensor
        ``(K,)`` bool keep mask, on the input's device.
    """
    keep = _greedy_mask(conflicts.cpu().numpy())
    return torch.from_numpy(keep).to(conflicts.device)


def _greedy_mask(conflicts: np.ndarray) -> np.ndarray:
    """``(K,)`` bool keep mask of greedy suppression over ``(K, K)`` conflicts, best first."""
    upper = np.triu(conflicts, k=1)
    keep = np.ones(len(upper), dtype=bool)
    for k in range(len(upper)):
        if keep[k]:
            keep &= ~upper[k]
    return keep


def grouped_greedy_keep(
    group: np.ndarray,
    score: np.ndarray,
    conflicts: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """Suppress greedily within each group, on the host, for a whole batch at once.

    Items are ordered by group, then by descending score, ties by input order;
    within a group an item is dropped when :func:`greedy_keep`'s rule would drop
    it. One call replaces one device round trip per group.

    Parameters
    ----------
    group : numpy.ndarray
        ``(K,)`` int group of each item (e.g. its tile in the batch).
    score : numpy.ndarray
        ``(K,)`` scores.
    conflicts : callable
        Takes the indices of one group's items, best first, and returns their
        ``(k, k)`` bool conflict matrix (``[a, b]``: a kept ``a`` removes ``b``).

    Returns
    -------
    numpy.ndarray
        Indices of the kept items, by group and then descending score.
    """
    order = np.lexsort((-np.asarray(score), np.asarray(group)))  # stable: ties keep input order
    bounds = np.flatnonzero(np.diff(np.asarray(group)[order])) + 1
    kept: list[np.ndarray] = []
    for members in np.split(order, bounds):
        kept.append(members if len(members) < 2 else members[_greedy_mask(conflicts(members))])
    return np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Apply greedy non-maximum suppression to tlbr boxes.

    A box is dropped when its IoU with a higher-scoring kept box exceeds
    ``iou_threshold``.

    Parameters
    ----------
    boxes : torch.Tensor
        ``(K, 4)`` tlbr boxes.
    scores : torch.Tensor
        ``(K,)`` scores.
    iou_threshold : float
        IoU in [0, 1] above which the lower-scoring box goes.

    Returns
    -------
    torch.Tensor
        Indices of the kept boxes, by descending score.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    boxes = boxes[order]
    return order[greedy_keep(box_iou(boxes, boxes) > iou_threshold)]
