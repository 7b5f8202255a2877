"""Vahadane stain normalization (Vahadane et al., IEEE TMI 2016) without spams, batched.

Structure-preserving colour normalization: optical densities ``OD = -log(I / Io)``
of tissue pixels are factorized as ``OD ≈ W C`` with non-negative stain vectors
``W`` (3 x 2, unit columns; haematoxylin first) and sparse non-negative
concentrations ``C``, minimizing ``½‖OD - W C‖² + λ‖C‖₁``.

The factorization is written in torch and runs on a whole batch at once. It
alternates two exact steps, started from Ruifrok & Johnston's H&E vectors:

* concentrations: for two stains the non-negative lasso has a closed form per
  pixel (the unconstrained optimum if it is non-negative, else the better of
  the two one-stain solutions);
* stains: one pass of block-coordinate descent over the two columns of ``W``
  for fixed ``C``, each projected onto the non-negative part of the unit ball
  (the dictionary update of Mairal et al., JMLR 2010, as in spams).

Each step lowers the objective. The learnt columns are rescaled to unit length.

Normalization then follows Vahadane: every pixel's concentrations (lasso
with the smaller ``concentration_sparsity``) are scaled so that their 99th
percentile matches the reference's, and recombined with the reference stains.
"""

from __future__ import annotations

import torch

from ..errors import EmptyTissueError
from .base import StainNormalizer, lightness_below, masked_percentile, sample_indices

# Ruifrok & Johnston's haematoxylin and eosin OD vectors (columns), the starting point.
_RUIFROK_HE = torch.nn.functional.normalize(
    torch.tensor([[0.650, 0.072], [0.704, 0.990], [0.286, 0.105]]), dim=0
)
_MIN_TISSUE_PIXELS = 64
_MIN_TISSUE_FRACTION = 0.02


def optical_density(x: torch.Tensor, Io: float) -> torch.Tensor:
    """Compute the optical density ``-log(max(I, 1) / Io)`` of pixel values.

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
    return -torch.log(x.clamp_min(1.0) / Io)


def nonnegative_lasso(stains: torch.Tensor, od: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Solve for the concentrations ``c >= 0`` minimizing ``½‖od - stains c‖² + sparsity·Σc``.

    Exact, per pixel.

    Parameters
    ----------
    stains : torch.Tensor
        ``(N, 3, 2)`` stain vectors.
    od : torch.Tensor
        ``(N, 3, P)`` optical densities.
    sparsity : float
        The weight λ of the L1 term.

    Returns
    -------
    torch.Tensor
        ``(N, 2, P)`` concentrations.
    """
    gram = stains.transpose(1, 2) @ stains  # (N, 2, 2)
    g00, g01, g11 = gram[:, 0, 0, None], gram[:, 0, 1, None], gram[:, 1, 1, None]
    # Explicit sums over the 3 channels rather than a batched matmul, whose kernel
    # (and rounding) can change with the batch size: each image's result must not
    # depend on which other images share its batch.
    r = _contract(stains.transpose(1, 2), od) - sparsity  # (N, 2, P)
    r0, r1 = r[:, 0], r[:, 1]
    det = (g00 * g11 - g01 * g01).clamp_min(1e-8)
    c0, c1 = (g11 * r0 - g01 * r1) / det, (g00 * r1 - g01 * r0) / det
    interior = (c0 >= 0) & (c1 >= 0)
    a0 = (r0 / g00).clamp_min(0)  # haematoxylin only
    b1 = (r1 / g11).clamp_min(0)  # eosin only
    first = (0.5 * g00 * a0 - r0) * a0 <= (0.5 * g11 * b1 - r1) * b1
    c0 = torch.where(interior, c0, torch.where(first, a0, 0.0))
    c1 = torch.where(interior, c1, torch.where(first, 0.0, b1))
    return torch.stack([c0, c1], dim=1)


def _contract(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Compute ``a @ b`` for a small inner dimension, ``(N, I, K) x (N, K, P) -> (N, I, P)``.

    Written as elementwise products so that every image's values are the same in any batch.
    """
    out = a[:, :, 0, None] * b[:, None, 0]
    for k in range(1, a.shape[2]):
        out = out + a[:, :, k, None] * b[:, None, k]
    return out


def learn_stains(
    od: torch.Tensor, tissue: torch.Tensor, *, sparsity: float, iterations: int
) -> torch.Tensor:
    """Learn the stain matrices that factorize the tissue pixels (sparse, non-negative).

    Parameters
    ----------
    od : torch.Tensor
        ``(N, 3, P)`` optical densities.
    tissue : torch.Tensor
        ``(N, P)`` bool: the tissue pixels.
    sparsity : float
        The weight λ of the factorization's L1 term.
    iterations : int
        Alternating steps.

    Returns
    -------
    torch.Tensor
        ``(N, 3, 2)`` unit stain vectors (columns: haematoxylin, eosin).
    """
    y = od * tissue.to(od.dtype)[:, None]  # background: zero
    init = _RUIFROK_HE.to(od.device, od.dtype).expand(od.shape[0], 3, 2)
    stains = init.clone()
    for _ in range(iterations):
        c = nonnegative_lasso(stains, y, sparsity)
        ct = c.transpose(1, 2)
        a, b = c @ ct, y @ ct  # (N, 2, 2), (N, 3, 2)
        for j in range(2):  # the two stains
            ajj = a[:, j, j, None]
            u = stains[:, :, j] + (
                b[:, :, j] - (stains @ a[:, :, j, None])[..., 0]
            ) / ajj.clamp_min(1e-12)
            u = u.clamp_min(0)
            u = u / u.norm(dim=1, keepdim=True).clamp_min(1.0)
            stains[:, :, j] = torch.where(ajj > 1e-12, u, stains[:, :, j])
    norm = stains.norm(dim=1, keepdim=True)
    stains = torch.where(norm > 1e-6, stains / norm.clamp_min(1e-6), init)
    swap = stains[:, 0, 0] < stains[:, 0, 1]
    return torch.where(swap[:, None, None], stains.flip(-1), stains)


class Vahadane(StainNormalizer):
    """Vahadane (sparse non-negative) stain normalization of whole batches.

    Tiles with less than 2 % (and 64 px) tissue are recombined with the
    reference stains, which keeps white white.

    Parameters
    ----------
    Io : float
        Transmitted light intensity, grey levels.
    sparsity : float
        The weight λ of the stain factorization's L1 term (0.1 as in the paper).
    concentration_sparsity : float
        The weight λ of the L1 term for per-pixel concentrations.
    iterations : int
        Alternating steps per image.
    tissue_lightness : float
        L* (0-100) below which a pixel is tissue.
    n_samples : int or None
        Pixels per image used to learn its stains; ``None`` uses all.

    Examples
    --------
    >>> import numpy as np
    >>> from wsimito.stain import Vahadane
    >>> ref = np.random.default_rng(0).integers(0, 200, (64, 64, 3), dtype=np.uint8)
    >>> Vahadane().fit(ref)(ref).shape
    (64, 64, 3)
    """

    _tensors = ("stain_matrix", "max_concentrations")
    _settings = (
        "Io",
        "sparsity",
        "concentration_sparsity",
        "iterations",
        "tissue_lightness",
        "n_samples",
    )

    def __init__(
        self,
        *,
        Io: float = 255.0,
        sparsity: float = 0.1,
        concentration_sparsity: float = 0.01,
        iterations: int = 20,
        tissue_lightness: float = 80.0,
        n_samples: int | None = 16384,
    ) -> None:
        super().__init__()
        self.Io, self.sparsity = float(Io), float(sparsity)
        self.concentration_sparsity, self.iterations = (
            float(concentration_sparsity),
            int(iterations),
        )
        self.tissue_lightness, self.n_samples = float(tissue_lightness), n_samples
        self.stain_matrix: torch.Tensor | None = None
        self.max_concentrations: torch.Tensor | None = None

    def estimate(
        self,
        pixels: torch.Tensor,
        *,
        iterations: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Estimate the stains of every image.

        Parameters
        ----------
        pixels : torch.Tensor
            ``(N, 3, P)`` pixel values, 0-255.
        iterations : int, optional
            Overrides the setting.

        Returns
        -------
        stains : torch.Tensor
            ``(N, 3, 2)`` stain vectors (columns: haematoxylin, eosin).
        max_concentrations : torch.Tensor
            ``(N, 2)`` 99th-percentile concentrations.
        valid : torch.Tensor
            ``(N,)`` bool: whether each image had enough tissue.
        """
        index = sample_indices(pixels.shape[-1], self.n_samples, pixels.device)
        sample = (pixels if index is None else pixels[..., index]).float()
        tissue = lightness_below(sample, self.tissue_lightness)
        od = optical_density(sample, self.Io)
        stains = learn_stains(
            od,
            tissue,
            sparsity=self.sparsity,
            iterations=self.iterations if iterations is None else iterations,
        )
        conc = nonnegative_lasso(stains, od, self.concentration_sparsity)
        max_c = masked_percentile(conc, None, [99.0])[..., 0]
        count = tissue.sum(dim=1)
        min_tissue = max(_MIN_TISSUE_PIXELS, int(_MIN_TISSUE_FRACTION * sample.shape[-1]))
        valid = (count >= min_tissue) & (max_c > 1e-3).all(dim=1)
        return stains, max_c, valid

    def _fit(self, pixels: torch.Tensor) -> None:
        if int(lightness_below(pixels, self.tissue_lightness).sum()) < 100:
            raise EmptyTissueError(
                f"the reference has fewer than 100 tissue pixels (L* < {self.tissue_lightness}); "
                "fit on an image or slide region that shows stained tissue"
            )
        stains, max_c, _ = self.estimate(pixels, iterations=2 * self.iterations)
        self.stain_matrix, self.max_concentrations = stains[0], max_c[0]

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        p = self.params(x.device)
        n, _, h, w = x.shape
        flat = x.reshape(n, 3, h * w).float()
        stains, max_c, valid = self.estimate(flat)
        stains = torch.where(valid[:, None, None], stains, p["stain_matrix"])
        scale = torch.where(valid[:, None], p["max_concentrations"] / max_c, 1.0)
        conc = nonnegative_lasso(
            stains, optical_density(flat, self.Io), self.concentration_sparsity
        )
        od = _contract(p["stain_matrix"].expand(n, 3, 2), conc * scale[..., None])
        return od.neg_().exp_().mul_(self.Io).view(n, 3, h, w)
