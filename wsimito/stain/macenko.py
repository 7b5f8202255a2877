"""Macenko stain normalization (Macenko et al., ISBI 2009), batched.

Per image: optical density ``OD = -log((I + 1) / Io)``; tissue pixels are
those with ``OD >= beta`` in every channel; the two leading eigenvectors of
their OD covariance span the stain plane; the stain vectors are the directions
at the ``alpha`` and ``100 - alpha`` percentiles of the pixel angles in that
plane (haematoxylin first: the one with the larger red OD); concentrations are
the least-squares solution for every pixel, scaled so that their 99th
percentile matches the reference's. These conventions follow torchstain's
numpy backend, the usual reference.

Batched: the statistics (covariance, angle and concentration percentiles) come
from the same fixed pseudo-random subset of ``n_samples`` pixels of every image,
all eigen-decompositions run as one batched ``eigh``, and the per-pixel work
reduces to one 3 x 3 matrix per image: ``out = Io * exp(-M @ OD)``.
"""

from __future__ import annotations

import math

import torch

from ..errors import EmptyTissueError
from .base import StainNormalizer, masked_percentile, sample_indices

# Reference stain vectors (columns: haematoxylin, eosin; rows R, G, B) and
# 99th-percentile concentrations of Macenko's reference, as in torchstain.
HE_REFERENCE = torch.tensor([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])
MAX_CONCENTRATION_REFERENCE = torch.tensor([1.9705, 1.0308])

# Fewest tissue pixels, absolute and as a fraction of the pixels looked at,
# for an image's own stain estimate; emptier tiles keep their colours.
_MIN_TISSUE_PIXELS = 64
_MIN_TISSUE_FRACTION = 0.02


def optical_density(x: torch.Tensor, Io: float) -> torch.Tensor:
    """Compute the optical density ``-log((I + 1) / Io)`` of pixel values.

    Parameters
    ----------
    x : torch.Tensor
        Pixel values ``I``, 0-255 (float).
    Io : float
        Transmitted light intensity, grey levels.

    Returns
    -------
    torch.Tensor
        Optical densities, the shape of ``x``.
    """
    return -torch.log((x + 1.0) / Io)


def estimate_stains(
    od: torch.Tensor, *, alpha: float, beta: float, min_tissue: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Estimate each image's stain matrix and concentration scale (Macenko's method).

    Parameters
    ----------
    od : torch.Tensor
        Optical densities ``(N, 3, P)``.
    alpha : float
        Percentile (%) of the extreme stain angles.
    beta : float
        Optical density below which a channel counts as background.
    min_tissue : int
        Fewest tissue pixels for a valid estimate.

    Returns
    -------
    stains : torch.Tensor
        ``(N, 3, 2)`` stain vectors (columns: haematoxylin, eosin).
    max_concentrations : torch.Tensor
        ``(N, 2)`` 99th-percentile concentrations.
    valid : torch.Tensor
        ``(N,)`` bool: at least ``min_tissue`` tissue pixels and a positive
        99th-percentile concentration.
    """
    tissue = (od >= beta).all(dim=1)  # (N, P)
    count = tissue.sum(dim=1)
    weight = tissue.to(od.dtype)[:, None]
    mean = (od * weight).sum(-1, keepdim=True) / count.clamp_min(1)[:, None, None]
    centred = (od - mean) * weight
    cov = (centred @ centred.transpose(1, 2)).double() / (count - 1).clamp_min(1)[:, None, None]
    enough = count >= min_tissue
    cov = torch.where(enough[:, None, None], cov, torch.eye(3, dtype=cov.dtype, device=cov.device))
    _, vectors = torch.linalg.eigh(cov)
    plane = vectors[..., 1:3].to(od.dtype)  # (N, 3, 2), largest last
    proj = plane.transpose(1, 2) @ od  # (N, 2, P)
    phi = torch.atan2(proj[:, 1], proj[:, 0])
    bounds = masked_percentile(phi, tissue, [alpha, 100 - alpha])  # (N, 2)
    bounds = torch.where(torch.isfinite(bounds), bounds, 0.0)
    directions = torch.stack([bounds.cos(), bounds.sin()], dim=1)  # (N, 2, 2)
    v = plane @ directions  # (N, 3, 2): vMin, vMax
    swap = v[:, 0, 0] <= v[:, 0, 1]
    he = torch.where(swap[:, None, None], v.flip(-1), v)
    conc = torch.linalg.pinv(he) @ od  # (N, 2, P)
    max_c = masked_percentile(conc, None, [99.0])[..., 0]  # (N, 2)
    valid = enough & (max_c > 1e-3).all(dim=1)
    return he, max_c, valid


class Macenko(StainNormalizer):
    """Macenko stain normalization of whole batches, fitted to a reference.

    Unfitted, it uses Macenko's reference stains. Tiles with less than 2 %
    (and 64 px) tissue among the sampled pixels are reconstructed with the
    reference stains themselves, which leaves them nearly unchanged.

    Parameters
    ----------
    Io : float
        Transmitted light intensity, grey levels.
    alpha : float
        Percentile (%) of the extreme stain angles, in [0, 50).
    beta : float
        Optical density below which a channel counts as background.
    n_samples : int or None
        Pixels per image used for the statistics; ``None`` uses all.

    Raises
    ------
    ValueError
        ``alpha`` is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> from wsimito.stain import Macenko
    >>> ref = np.random.default_rng(0).integers(0, 200, (64, 64, 3), dtype=np.uint8)
    >>> norm = Macenko().fit(ref)
    >>> norm(ref).shape
    (64, 64, 3)
    """

    _tensors = ("stain_matrix", "max_concentrations")
    _settings = ("Io", "alpha", "beta", "n_samples")

    def __init__(
        self,
        *,
        Io: float = 240.0,
        alpha: float = 1.0,
        beta: float = 0.15,
        n_samples: int | None = 16384,
    ) -> None:
        super().__init__()
        if not 0 <= alpha < 50:
            raise ValueError(f"alpha is a percentile in [0, 50), got {alpha}")
        self.Io, self.alpha, self.beta, self.n_samples = (
            float(Io),
            float(alpha),
            float(beta),
            n_samples,
        )
        self.stain_matrix: torch.Tensor = HE_REFERENCE.clone()
        self.max_concentrations: torch.Tensor = MAX_CONCENTRATION_REFERENCE.clone()

    def _fit(self, pixels: torch.Tensor) -> None:
        od = optical_density(pixels, self.Io)
        he, max_c, valid = estimate_stains(od, alpha=self.alpha, beta=self.beta, min_tissue=100)
        if not bool(valid[0]):
            raise EmptyTissueError(
                f"the reference has fewer than 100 tissue pixels (optical density >= {self.beta} "
                "in every channel); fit on an image or slide region that shows stained tissue"
            )
        self.stain_matrix, self.max_concentrations = he[0], max_c[0]

    def estimate(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Estimate the stains of every image of a batch.

        Parameters
        ----------
        batch : torch.Tensor
            The images, uint8 ``(N, 3, H, W)``.

        Returns
        -------
        stains : torch.Tensor
            ``(N, 3, 2)`` stain vectors (columns: haematoxylin, eosin).
        max_concentrations : torch.Tensor
            ``(N, 2)`` 99th-percentile concentrations.
        valid : torch.Tensor
            ``(N,)`` bool: whether each image had enough tissue.
        """
        n = batch.shape[0]
        flat = batch.reshape(n, 3, -1)
        index = sample_indices(flat.shape[-1], self.n_samples, batch.device)
        sample = flat if index is None else flat[..., index]
        min_tissue = max(_MIN_TISSUE_PIXELS, int(_MIN_TISSUE_FRACTION * sample.shape[-1]))
        return estimate_stains(
            optical_density(sample.float(), self.Io),
            alpha=self.alpha,
            beta=self.beta,
            min_tissue=min_tissue,
        )

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        p = self.params(x.device)
        he_ref, max_ref = p["stain_matrix"], p["max_concentrations"]
        he, max_c, valid = self.estimate(x)
        he = torch.where(valid[:, None, None], he, he_ref)
        scale = torch.where(valid[:, None], max_ref / max_c, 1.0)  # (N, 2)
        mix = he_ref @ (scale[..., None] * torch.linalg.pinv(he))  # (N, 3, 3)
        # Io * exp(-mix @ OD) with OD = log(Io) - log(1 + I), as exp(bias + mix @ log(1 + I))
        log_io = math.log(self.Io)
        bias = log_io * (1.0 - mix.sum(dim=2, keepdim=True))  # (N, 3, 1)
        n, _, h, w = x.shape
        log_light = x.reshape(n, 3, h * w).float().log1p_()
        return torch.baddbmm(bias, mix, log_light).exp_().view(n, 3, h, w)
