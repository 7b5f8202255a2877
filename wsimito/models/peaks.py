"""Peak extraction from centre heatmaps.

Max-pool NMS, sub-pixel refinement, and a minimum distance between points.

Heatmap cell ``(row i, col j)`` at stride ``s`` is centred on the input pixel
coordinate ``(x, y) = (s * (j + 0.5), s * (i + 0.5))``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from .anchors import greedy_keep, grouped_greedy_keep


def _parabola_offset(left: torch.Tensor, centre: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Vertex of the parabola through three samples at -1, 0, +1 (cells), clamped to ±0.5."""
    curvature = left - 2.0 * centre + right
    offset = 0.5 * (left - right) / curvature.clamp(max=-1e-6)
    return offset.clamp(-0.5, 0.5)


def refine_peaks(
    log_heat: torch.Tensor, n: torch.Tensor, i: torch.Tensor, j: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Refine peaks of a log-heatmap to sub-cell precision.

    Fits a parabola along each axis through the peak and its two neighbours;
    exact for a sampled Gaussian. At the heatmap border, where a neighbour is
    missing, the offset along that axis is 0.

    Parameters
    ----------
    log_heat : torch.Tensor
        ``(N, h, w)`` log probabilities.
    n, i, j : torch.Tensor
        ``(K,)`` int: image, row and column of each peak.

    Returns
    -------
    di : torch.Tensor
        ``(K,)`` row offsets, cells, in [-0.5, 0.5].
    dj : torch.Tensor
        ``(K,)`` column offsets, cells, in [-0.5, 0.5].
    """
    h, w = log_heat.shape[-2:]
    inner_i = (i > 0) & (i < h - 1)
    inner_j = (j > 0) & (j < w - 1)
    centre = log_heat[n, i, j]
    up = log_heat[n, (i - 1).clamp(min=0), j]
    down = log_heat[n, (i + 1).clamp(max=h - 1), j]
    left = log_heat[n, i, (j - 1).clamp(min=0)]
    right = log_heat[n, i, (j + 1).clamp(max=w - 1)]
    di = torch.where(inner_i, _parabola_offset(up, centre, down), torch.zeros_like(centre))
    dj = torch.where(inner_j, _parabola_offset(left, centre, right), torch.zeros_like(centre))
    return di, dj


def suppress_close(points: torch.Tensor, min_distance: float) -> torch.Tensor:
    """Keep the highest-scoring of any points closer than ``min_distance`` px.

    Greedy in descending score order (ties broken by input order).

    Parameters
    ----------
    points : torch.Tensor
        ``(K, 3)``: x, y (px) and score.
    min_distance : float
        Minimum distance between kept points, px.

    Returns
    -------
    torch.Tensor
        The kept points, sorted by descending score.

    Examples
    --------
    >>> import torch
    >>> from wsimito.models.peaks import suppress_close
    >>> suppress_close(torch.tensor([[10.0, 10.0, 0.6], [13.0, 14.0, 0.9], [40.0, 10.0, 0.7]]), 8.0)
    tensor([[13.0000, 14.0000,  0.9000],
            [40.0000, 10.0000,  0.7000]])
    """
    points = points[torch.argsort(points[:, 2], descending=True, stable=True)]
    if len(points) < 2 or min_distance <= 0:
        return points
    return points[greedy_keep(torch.cdist(points[:, :2], points[:, :2]) < min_distance)]


def find_peaks(
    heat: torch.Tensor,
    *,
    stride: int,
    min_score: float,
    min_distance: float,
) -> list[torch.Tensor]:
    """Find points at the local maxima of probability heatmaps.

    Parameters
    ----------
    heat : torch.Tensor
        ``(N, 1, h, w)`` or ``(N, h, w)`` probabilities in [0, 1].
    stride : int
        Input px per heatmap cell.
    min_score : float
        Peaks below this probability are dropped.
    min_distance : float
        Minimum distance between returned points, input px.

    Returns
    -------
    list of torch.Tensor
        One float32 ``(K, 3)`` tensor per image: x, y in input px (continuous
        convention) and the peak probability, sorted by descending score.
    """
    if heat.ndim == 4:
        heat = heat[:, 0]
    heat = heat.float()
    # Max-pool window: as wide as possible without suppressing cells min_distance apart.
    radius = max(1, math.ceil(min_distance / stride) - 1)
    pooled = F.max_pool2d(heat[:, None], 2 * radius + 1, stride=1, padding=radius)[:, 0]
    # The one synchronisation: how many peaks there are. Then one copy of them to the host,
    # where the minimum distance is enforced for the whole batch (not one round trip per tile).
    n, i, j = torch.nonzero((heat == pooled) & (heat >= min_score), as_tuple=True)
    log_heat = heat.clamp(min=1e-6).log()
    di, dj = refine_peaks(log_heat, n, i, j)
    points = torch.stack([stride * (j + dj + 0.5), stride * (i + di + 0.5), heat[n, i, j]], dim=1)
    host, tile = points.cpu().numpy(), n.cpu().numpy()
    if min_distance > 0:
        xy = host[:, :2].astype(np.float64)

        def too_close(members: np.ndarray) -> np.ndarray:
            d = xy[members, None, :] - xy[None, members, :]
            close: np.ndarray = np.hypot(d[..., 0], d[..., 1]) < min_distance
            return close

        keep = grouped_greedy_keep(tile, host[:, 2], too_close)
    else:
        keep = np.lexsort((-host[:, 2], tile))
    counts = np.bincount(tile[keep], minlength=heat.shape[0]).tolist()
    kept = torch.from_numpy(host[keep]).to(heat.device)
    return list(torch.split(kept, counts))
