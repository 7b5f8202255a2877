"""A learning-free baseline: mark dark blobs.

`DarkBlobDetector` smooths the darkness of each tile over a disc the size of a
nucleus and reports local maxima above a level. It follows the
:class:`wsimito.Detector` protocol, runs batched on any device, and costs a few
pooling operations per tile. It serves two purposes: the baseline a learned
detector must beat (mitotic figures are dark, but so are pyknotic nuclei,
apoptotic bodies and lymphocytes), and a cheap detector for pipeline
benchmarks where the model's cost should not dominate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .detect import check_tiles, resolve_device


class DarkBlobDetector:
    """Local maxima of smoothed darkness; scores in [0, 1].

    Parameters
    ----------
    mpp: resolution the detector works at, µm/px.
    tile_size, overlap: px at ``mpp``.
    blob_um: diameter of the smoothing window, µm (about a nucleus).
    min_distance_um: peaks closer than this (µm) are merged.
    level: darkness (0 = white, 1 = black, after smoothing) that maps to score 0.5.
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
        level: float = 0.55,
        threshold: float = 0.5,
        device: str | torch.device = "auto",
    ) -> None:
        self.mpp, self.tile_size, self.overlap = float(mpp), int(tile_size), int(overlap)
        self.blob_um, self.min_distance_um, self.level = blob_um, min_distance_um, level
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
            smooth > self.level - 0.15
        )
        out = []
        for n in range(tiles.shape[0]):
            ys, xs = torch.nonzero(peaks[n, 0], as_tuple=True)
            d = smooth[n, 0, ys, xs]
            score = torch.sigmoid((d - self.level) * 20.0)
            out.append(torch.stack([xs.float() + 0.5, ys.float() + 0.5, score], dim=1))
        return out
