"""Reinhard colour transfer (Reinhard et al., 2001) in CIELAB, batched.

Each image's tissue pixels get the per-channel mean and standard deviation of
the reference's tissue pixels in CIE L*a*b* (sRGB, D65 white): ``lab' = (lab -
mean) / std * std_ref + mean_ref``, applied to every pixel. Tissue is every
pixel darker than ``tissue_lightness`` (L*, 0-100), so white background does
not dilute the statistics.
"""

from __future__ import annotations

import torch

from ..errors import EmptyTissueError
from .base import StainNormalizer, sample_indices, srgb_to_linear

_RGB_TO_XYZ = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_WHITE = torch.tensor([0.95047, 1.0, 1.08883])
_EPS = (6.0 / 29.0) ** 3
_MIN_TISSUE_PIXELS = 64
# Smallest standard deviation (L*a*b* units) an image's statistics may have;
# keeps near-uniform tiles from being stretched into noise.
_MIN_STD = 1.0


def rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """Convert sRGB pixels to CIE L*a*b* (D65 white).

    Parameters
    ----------
    x : torch.Tensor
        Pixels ``(N, 3, ...)``, sRGB in 0-255.

    Returns
    -------
    torch.Tensor
        ``(N, 3, ...)`` float: L* (0-100), a*, b*.

    Examples
    --------
    >>> import torch
    >>> from wsimito.stain.reinhard import rgb_to_lab
    >>> rgb_to_lab(torch.tensor([[255.0, 0.0, 0.0]]).T[None]).flatten().round()
    tensor([53., 80., 67.])
    """
    lin = srgb_to_linear(x.float() / 255.0)
    m = (_RGB_TO_XYZ / _WHITE[:, None]).to(x.device)
    xyz = torch.einsum("ij,nj...->ni...", m, lin)
    f = torch.where(
        xyz > _EPS, xyz.clamp_min(_EPS).pow(1.0 / 3.0), xyz / (3 * (6 / 29) ** 2) + 4 / 29
    )
    return torch.stack(
        [116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], dim=1
    )


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Convert CIE L*a*b* (D65 white) to sRGB pixels.

    Parameters
    ----------
    lab : torch.Tensor
        ``(N, 3, ...)``: L* (0-100), a*, b*.

    Returns
    -------
    torch.Tensor
        ``(N, 3, ...)`` float sRGB in 0-255 (not rounded).
    """
    fy = (lab[:, 0] + 16) / 116
    f = torch.stack([fy + lab[:, 1] / 500, fy, fy - lab[:, 2] / 200], dim=1)
    xyz = torch.where(f > 6 / 29, f.pow(3), 3 * (6 / 29) ** 2 * (f - 4 / 29))
    m = torch.linalg.inv(_RGB_TO_XYZ / _WHITE[:, None]).to(lab.device)
    lin = torch.einsum("ij,nj...->ni...", m, xyz).clamp(0.0, 1.0)
    srgb = torch.where(
        lin > 0.0031308, 1.055 * lin.clamp_min(0.0031308).pow(1 / 2.4) - 0.055, 12.92 * lin
    )
    return srgb * 255.0


def tissue_statistics(lab: torch.Tensor, tissue: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Compute per-image colour statistics over the tissue pixels.

    Parameters
    ----------
    lab : torch.Tensor
        ``(N, 3, P)`` L*a*b* pixels.
    tissue : torch.Tensor
        ``(N, P)`` bool: the pixels to use.

    Returns
    -------
    tuple of torch.Tensor
        Mean ``(N, 3)``, standard deviation ``(N, 3)`` and tissue pixel count ``(N,)``.
    """
    w = tissue.to(lab.dtype)[:, None]
    count = tissue.sum(dim=1)
    n = count.clamp_min(1)[:, None]
    mean = (lab * w).sum(-1) / n
    var = (((lab - mean[..., None]) * w) ** 2).sum(-1) / n
    return mean, var.sqrt(), count


class Reinhard(StainNormalizer):
    """Reinhard colour normalization in CIELAB of whole batches, fitted to a reference.

    Tiles with fewer than 64 tissue pixels among the sampled ones are left
    unchanged.

    Parameters
    ----------
    tissue_lightness : float
        L* (0-100) below which a pixel counts as tissue.
    n_samples : int or None
        Pixels per image used for the statistics; ``None`` uses all.

    Examples
    --------
    >>> import numpy as np
    >>> from wsimito.stain import Reinhard
    >>> ref = np.random.default_rng(0).integers(0, 200, (64, 64, 3), dtype=np.uint8)
    >>> Reinhard().fit(ref)(ref).shape
    (64, 64, 3)
    """

    _tensors = ("target_mean", "target_std")
    _settings = ("tissue_lightness", "n_samples")

    def __init__(self, *, tissue_lightness: float = 80.0, n_samples: int | None = 65536) -> None:
        super().__init__()
        self.tissue_lightness, self.n_samples = float(tissue_lightness), n_samples
        self.target_mean: torch.Tensor | None = None
        self.target_std: torch.Tensor | None = None

    def _fit(self, pixels: torch.Tensor) -> None:
        lab = rgb_to_lab(pixels)
        mean, std, count = tissue_statistics(lab, lab[:, 0] < self.tissue_lightness)
        if int(count[0]) < 100:
            raise EmptyTissueError(
                f"the reference has fewer than 100 tissue pixels (L* < {self.tissue_lightness}); "
                "fit on an image or slide region that shows stained tissue"
            )
        self.target_mean, self.target_std = mean[0], std[0]

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        p = self.params(x.device)
        n, _, h, w = x.shape
        lab = rgb_to_lab(x.reshape(n, 3, h * w))
        index = sample_indices(h * w, self.n_samples, x.device)
        sample = lab if index is None else lab[..., index]
        mean, std, count = tissue_statistics(sample, sample[:, 0] < self.tissue_lightness)
        valid = (count >= _MIN_TISSUE_PIXELS)[:, None]
        scale = torch.where(valid, p["target_std"] / std.clamp_min(_MIN_STD), 1.0)
        shift = torch.where(valid, p["target_mean"] - mean * scale, 0.0)
        return lab_to_rgb(lab * scale[..., None] + shift[..., None]).view(n, 3, h, w)
