"""Batched stain augmentation: HED colour jitter and random Fourier domain adaptation.

Both draw their random numbers from an optional ``torch.Generator`` (on the
CPU or on the batch's device), so a seeded generator reproduces a batch
exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._tensor import Image, as_batch, restore
from .fda import FDA, check_beta, half_width, swap_amplitudes_

# Ruifrok & Johnston's optical densities of haematoxylin, eosin and DAB
# (rows; columns R, G, B), the matrix behind scikit-image's rgb2hed.
RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=device)


class HEDJitter:
    """Perturb the haematoxylin, eosin and DAB concentrations of each image.

    Pixels are unmixed into Ruifrok & Johnston's HED stains (optical density
    ``-log((I + 1) / 256)``, so white stays white), each image's concentrations
    ``c`` of stain ``s`` become ``c * a_s + b_s`` with ``a_s`` uniform in
    ``[1 - sigma, 1 + sigma]`` and ``b_s`` uniform in ``[-bias, bias]`` (OD
    units), drawn per image and stain (Tellez et al., 2018), and are mixed back.
    Input: uint8 torch (N, 3, H, W) on any device or numpy (H, W, 3) /
    (N, H, W, 3); the output has the same type and layout.

    Parameters
    ----------
    sigma : float
        Half-range of the concentration scale around 1 (>= 0).
    bias : float
        Half-range of the concentration shift around 0, optical density units (>= 0).

    Raises
    ------
    ValueError
        ``sigma`` or ``bias`` is negative.

    Examples
    --------
    >>> import torch
    >>> from wsimito.stain import HEDJitter
    >>> jitter = HEDJitter(sigma=0.05, bias=0.02)
    >>> x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    >>> y = jitter(x, generator=torch.Generator().manual_seed(0))
    >>> y.shape == x.shape
    True
    """

    def __init__(self, sigma: float = 0.05, bias: float = 0.05) -> None:
        if not (sigma >= 0 and bias >= 0):
            raise ValueError(f"sigma and bias must be >= 0, got sigma={sigma}, bias={bias}")
        self.sigma, self.bias = float(sigma), float(bias)

    def draw(
        self,
        n: int,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw per-image scales and shifts of the H, E and D concentrations.

        Parameters
        ----------
        n : int
            Number of images.
        generator : torch.Generator, optional
            Source of the random numbers; the global one by default.

        Returns
        -------
        scale : torch.Tensor
            ``(n, 3)`` factors in ``[1 - sigma, 1 + sigma]``.
        shift : torch.Tensor
            ``(n, 3)`` shifts in ``[-bias, bias]``, optical density units.
        """
        u = _uniform((2, n, 3), generator)
        return 1 + self.sigma * (2 * u[0] - 1), self.bias * (2 * u[1] - 1)

    def __call__(self, batch: Image, generator: torch.Generator | None = None) -> Image:
        """Jitter every image of ``batch`` with its own draw from ``generator``."""
        x, layout = as_batch(batch)
        n, _, h, w = x.shape
        scale, shift = (t.to(x.device) for t in self.draw(n, generator))
        mix = RGB_FROM_HED.to(x.device).T  # OD = mix @ c
        unmix = torch.linalg.inv(mix)
        matrix = mix @ (scale[..., None] * unmix)  # (N, 3, 3)
        offset = mix @ shift[..., None]  # (N, 3, 1)
        neg_od = x.reshape(n, 3, h * w).float().add_(1.0).div_(256.0).log_()
        out = torch.baddbmm(-offset, matrix, neg_od).exp_().mul_(256.0).sub_(1.0)
        return restore(out.view(n, 3, h, w), layout)

    def __repr__(self) -> str:
        return f"HEDJitter(sigma={self.sigma}, bias={self.bias})"


class RandomFDA:
    """Fourier domain adaptation as augmentation: random target, random size, random skip.

    Each image, with probability ``p``, takes the low-frequency amplitudes of a
    target drawn uniformly from ``targets`` (a bank as in :class:`FDA`), with
    ``beta`` drawn uniformly from the range ``beta`` (or fixed when a float);
    the others are left unchanged. Input and output as in :func:`wsimito.stain.fda`.

    Parameters
    ----------
    targets : torch.Tensor, numpy.ndarray or sequence of them
        The target images (a bank as in :class:`FDA`).
    beta : float or tuple of (float, float)
        Fixed ``beta``, or the ``(low, high)`` range it is drawn from; each in
        [0, 0.5), as a fraction of the shorter image side.
    p : float
        Probability, in [0, 1], that an image is adapted.

    Raises
    ------
    ValueError
        A ``beta`` or ``p`` out of range, or ``low > high``.

    Examples
    --------
    >>> import torch
    >>> from wsimito.stain import RandomFDA
    >>> aug = RandomFDA(torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8),
    ...                 beta=(0.0, 0.05), p=0.5)
    >>> aug(torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8),
    ...     generator=torch.Generator().manual_seed(1)).shape
    torch.Size([8, 3, 64, 64])
    """

    def __init__(
        self,
        targets: Image | Sequence[Image],
        beta: float | tuple[float, float] = (0.0, 0.01),
        p: float = 0.5,
    ) -> None:
        low, high = (beta, beta) if isinstance(beta, (int, float)) else beta
        self.beta = (check_beta(low), check_beta(high))
        if low > high:
            raise ValueError(f"beta range must be (low, high) with low <= high, got {beta}")
        if not 0 <= p <= 1:
            raise ValueError(f"p is a probability in [0, 1], got {p}")
        self.p = float(p)
        self.bank = FDA(targets, beta=high)

    def __call__(self, batch: Image, generator: torch.Generator | None = None) -> Image:
        """Augment every image of ``batch`` with its own draw from ``generator``."""
        x, layout = as_batch(batch, allow_float=True)
        n, _, h, w = x.shape
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        low, high = self.beta
        amp = self.bank.amplitudes(h, w, half_width(h, w, high), device=x.device, dtype=dtype)
        u = _uniform((2, n), generator)
        index = (_uniform((n,), generator) * len(self.bank)).long().clamp_max(len(self.bank) - 1)
        beta = low + (high - low) * u[1]
        b = torch.floor(min(h, w) * beta).long()
        b = torch.where(u[0] < self.p, b, -1)
        xf = x.to(dtype, memory_format=torch.contiguous_format, copy=True)
        return restore(swap_amplitudes_(xf, amp[index.to(x.device)], b), layout)

    def __repr__(self) -> str:
        return f"RandomFDA({len(self.bank)} targets, beta={self.beta}, p={self.p})"
