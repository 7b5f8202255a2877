"""Training augmentation on the device, per batch, with the points moved along.

Every operation takes a float batch ``(N, 3, H, W)`` of 0-255 RGB values on
any device, the points of each image, a CPU ``torch.Generator`` and the
domain of each image, and returns the new batch and points. Points are one
``(K, D)`` tensor per image whose first two columns are x, y in px of the
image (continuous convention: the centre of pixel ``j`` is ``j + 0.5``); any
further columns (class, weight, ...) travel unchanged. All random numbers
come from the one generator, drawn on the CPU, so a seeded
:class:`Augmenter` gives the same batches on the CPU and on a GPU.

Operations (each with ``p``, the share of images it touches):

- :class:`Dihedral`: flips and 90° rotations (the 8 symmetries of a square);
- :class:`Zoom`: a small change of scale about the centre (glass-white fill);
- :class:`HEDStainJitter`: haematoxylin / eosin / DAB concentration jitter
  (Tellez et al. 2018), through :class:`wsimito.stain.HEDJitter`;
- :class:`StainMatrixJitter`: MitDet's unsupervised stain augmentation: each
  image's own stain matrix is estimated with the Macenko machinery, the two
  stain vectors and the concentrations are perturbed, and the image is
  recomposed (the residual the two stains do not explain is kept);
- :class:`DomainFDA`: Fourier domain adaptation (Yang & Soatto 2020) towards
  the low-frequency amplitude spectrum of a training patch from *another*
  domain, drawn from an :class:`AmplitudeBank` built once (the method of the
  MIDOG 2021 winner, FMDet);
- :class:`GaussianBlur`: focus variation;
- :class:`JPEGArtefacts`: compression artefacts (encoded on the CPU with Pillow).

:class:`Augmenter` chains them in this order: geometry first, then colour,
then blur and compression, as a scanner would.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..stain import HEDJitter
from ..stain.fda import half_width, low_frequencies, swap_amplitudes_
from ..stain.macenko import Macenko, optical_density

Points = list[torch.Tensor]


class Operation(Protocol):
    """One augmentation step; see the module docstring for the conventions."""

    p: float

    def __call__(
        self,
        images: torch.Tensor,
        points: Points,
        generator: torch.Generator,
        domains: torch.Tensor | None,
    ) -> tuple[torch.Tensor, Points]: ...


def _rand(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(shape, generator=generator)


def _chosen(p: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of the images an operation with probability ``p`` touches (CPU int64)."""
    return torch.nonzero(_rand(generator, n) < p).flatten()


def _check_p(p: float, name: str) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name}: p is a probability in [0, 1], got {p}")
    return float(p)


def _check_range(
    value: float | Sequence[float], name: str, low: float, high: float
) -> tuple[float, float]:
    lo, hi = (value, value) if isinstance(value, (int, float)) else tuple(value)
    if not (low <= lo <= hi <= high):
        raise ValueError(
            f"{name} must be a (low, high) range within [{low}, {high}], got {value!r}"
        )
    return float(lo), float(hi)


class Dihedral:
    """Random flips and 90° rotations; points follow exactly.

    Each chosen image gets one of the 8 symmetries of the square, uniformly
    (a transpose with probability 1/2, then a horizontal and a vertical flip
    with probability 1/2 each); non-square images never get the transpose.
    In continuous px: a horizontal flip maps ``x`` to ``W - x``, a vertical
    flip ``y`` to ``H - y``, a transpose swaps ``x`` and ``y``.

    Parameters
    ----------
    p : float
        Share of images transformed.
    """

    def __init__(self, p: float = 1.0) -> None:
        self.p = _check_p(p, "Dihedral")

    def __call__(
        self,
        images: torch.Tensor,
        points: Points,
        generator: torch.Generator,
        domains: torch.Tensor | None,
    ) -> tuple[torch.Tensor, Points]:
        """Augment ``images`` (float ``(N, 3, H, W)``, 0-255) and move ``points``."""
        n, _, h, w = images.shape
        draw = _rand(generator, n, 4)
        code = torch.where(draw[:, 0] < self.p, 1, 0) * (
            (draw[:, 1] < 0.5).long() * 4 * int(h == w)
            + (draw[:, 2] < 0.5).long()
            + (draw[:, 3] < 0.5).long() * 2
        )
        out = images.clone()
        points = list(points)
        for k in torch.unique(code).tolist():
            if k == 0:
                continue
            idx = torch.nonzero(code == k).flatten()
            part = images[idx.to(images.device)]
            if k & 4:
                part = part.transpose(-1, -2)
            if k & 1:
                part = part.flip(-1)
            if k & 2:
                part = part.flip(-2)
            out[idx.to(images.device)] = part
            for i in idx.tolist():
                pts = points[i].clone()
                if k & 4:
                    pts[:, [0, 1]] = pts[:, [1, 0]]
                if k & 1:
                    pts[:, 0] = w - pts[:, 0]
                if k & 2:
                    pts[:, 1] = h - pts[:, 1]
                points[i] = pts
        return out, points


class Zoom:
    """A small random change of scale about the image centre; points follow.

    The factor ``s`` is log-uniform in ``[1 / (1 + max_change), 1 + max_change]``;
    output px ``u`` samples the input at ``c + (u - c) / s`` (bilinear), so a
    point moves to ``c + (x - c) * s``. Areas that come from outside the image
    are glass white.

    Parameters
    ----------
    max_change : float
        Largest relative change of scale, e.g. 0.1 for +-10 %.
    p : float
        Share of images transformed.
    """

    def __init__(self, max_change: float = 0.1, p: float = 0.5) -> None:
        if not 0.0 <= max_change < 1.0:
            raise ValueError(
                f"Zoom: max_change is a relative scale change in [0, 1), got {max_change}"
            )
        self.max_change, self.p = float(max_change), _check_p(p, "Zoom")

    def __call__(
        self,
        images: torch.Tensor,
        points: Points,
        generator: torch.Generator,
        domains: torch.Tensor | None,
    ) -> tuple[torch.Tensor, Points]:
        """Augment ``images`` (float ``(N, 3, H, W)``, 0-255) and move ``points``."""
        n, _, h, w = images.shape
        idx = _chosen(self.p, n, generator)
        span = math.log1p(self.max_change)
        factor = torch.exp((2 * _rand(generator, n) - 1) * span)
        if len(idx) == 0 or self.max_change == 0:
            return images, points
        s = factor[idx]
        theta = torch.zeros(len(idx), 2, 3)
        theta[:, 0, 0] = 1 / s
        theta[:, 1, 1] = 1 / s
        grid = F.affine_grid(theta.to(images.device), [len(idx), 3, h, w], align_corners=False)
        part = images[idx.to(images.device)] - 255.0
        part = F.grid_sample(
            part, grid.to(part.dtype), mode="bilinear", padding_mode="zeros", align_corners=False
        )
        out = images.clone()
        out[idx.to(images.device)] = part + 255.0
        points = list(points)
        centre = torch.tensor([w / 2, h / 2])
        for i, si in zip(idx.tolist(), s.tolist(), strict=True):
            pts = points[i].clone()
            pts[:, :2] = centre.to(pts) + (pts[:, :2] - centre.to(pts)) * si
            points[i] = pts
        return out, points


class HEDStainJitter:
    """Haematoxylin-eosin-DAB concentration jitter of :class:`wsimito.stain.HEDJitter`.

    Parameters
    ----------
    sigma : float
        Concentrations are scaled by a factor uniform in ``[1 - sigma, 1 + sigma]``.
    bias : float
        ... and shifted by up to ``bias`` optical-density units.
    p : float
        Share of images transformed.
    """

    def __init__(self, sigma: float = 0.05, bias: float = 0.02, p: float = 0.5) -> None:
        self.jitter = HEDJitter(sigma=sigma, bias=bias)
        self.p = _check_p(p, "HEDStainJitter")

    def __call__(
        self,
        images: torch.Tensor,
        points: Points,
        generator: torch.Generator,
        domains: torch.Tensor | None,
    ) -> tuple[torch.Tensor, Points]:
        """Augment ``images`` (float ``(N, 3, H, W)``, 0-255) and move ``points``."""
        idx = _chosen(self.p, images.shape[0], generator)
        if len(idx) == 0:
            return images, points
        out = images.clone()
        dev = idx.to(images.device)
        pixels = images[dev].round().clamp(0, 255).to(torch.uint8)  # HEDJitter takes uint8
        out[dev] = self.jitter(pixels, generator=generator).to(images.dtype)
        return out, points


class StainMatrixJitter:
    """Perturb each image's own Macenko stain matrix and stain concentrations.

    For every chosen image with enough tissue, the optical density
    ``OD = -log((I + 1) / Io)`` is split into two stains, ``OD = S C + R``,
    with ``S`` the image's Macenko stain matrix (haematoxylin, eosin),
    ``C = pinv(S) OD`` and the residual ``R``. Each stain vector gets
    Gaussian noise of standard deviation ``matrix_sigma`` and is renormalised,
    each stain's concentrations a factor uniform in
    ``[1 - concentration_sigma, 1 + concentration_sigma]``; the image is
    recomposed as ``Io exp(-(S' C' + R)) - 1``. With no perturbation the image
    comes back unchanged. Images without tissue are left alone.

    Parameters
    ----------
    matrix_sigma : float
        Standard deviation of the noise added to each unit stain vector.
    concentration_sigma : float
        Largest relative change of each stain's concentrations.
    p : float
        Share of images transformed.
    """

    def __init__(
        self, matrix_sigma: float = 0.05, concentration_sigma: float = 0.15, p: float = 0.3
    ) -> None:
        if matrix_sigma < 0 or not 0 <= concentration_sigma < 1:
            raise ValueError(
                "StainMatrixJitter: matrix_sigma must be >= 0 and concentration_sigma in [0, 1), "
                f"got {matrix_sigma}, {concentration_sigma}"
            )
        self.matrix_sigma = float(matrix_sigma)
        self.concentration_sigma = float(concentration_sigma)
        self.p = _check_p(p, "StainMatrixJitter")
        self.macenko = Macenko()

    def __call__(
        self,
        images: torch.Tensor,
        points: Points,
        generator: torch.Generator,
        domains: torch.Tensor | None,
    ) -> tuple[torch.Tensor, Points]:
        """Augment ``images`` (float ``(N, 3, H, W)``, 0-255) and move ``points``."""
        n = images.shape[0]
        idx = _chosen(self.p, n, generator)
        noise = torch.randn((n, 3, 2), generator=generator)
        scale = 1 + self.concentration_sigma * (2 * _rand(generator, n, 2) - 1)
        if len(idx) == 0:
            return images, points
        dev = idx.to(images.device)
        x = images[dev].float()
        m, _, h, w = x.shape
        stains, _, valid = self.macenko.estimate(x)
        od = optical_density(x.reshape(m, 3, h * w), self.macenko.Io)
        conc = torch.linalg.pinv(stains) @ od  # (M, 2, P)
        residual = od - stains @ conc
        new = stains + self.matrix_sigma * noise[idx].to(x.device)
        new = new.clamp_min(1e-3)
        new = new / new.norm(dim=1, keepdim=True)
        recomposed = new @ (conc * scale[idx].to(x.device)[:, :, None]) + residual
        result = (self.macenko.Io * torch.exp(-recomposed) - 1.0).view(m, 3, h, w)
        result = torch.where(valid.view(m, 1, 1, 1), result, x)
        out = images.clone()
        out[dev] = result.to(images.dtype)
        return out, points


class AmplitudeBank:
    """Low-frequency amplitude spectra of training patches, grouped by domain (built once).

    Parameters
    ----------
    amplitudes : torch.Tensor
        ``(K, 3, 2b + 1, 2b + 1)`` amplitudes of the DFT at frequencies
        ``-b..b`` on both axes (as :func:`wsimito.stain.fda.low_frequencies`).
    domains : torch.Tensor
        ``(K,)`` int64 domain of each entry.
    size : tuple of int
        ``(H, W)`` px of the patches they were computed on; the batches that
        use the bank must have this size.
    """

    def __init__(
        self, amplitudes: torch.Tensor, domains: torch.Tensor, size: tuple[int, int]
    ) -> None:
        if amplitudes.ndim != 4 or amplitudes.shape[1] != 3 or amplitudes.shape[-1] % 2 == 0:
            raise ValueError(
                f"amplitudes must be (K, 3, 2b+1, 2b+1), got {tuple(amplitudes.shape)}"
            )
        if len(domains) != len(amplitudes) or len(amplitudes) == 0:
            raise ValueError("need one domain per amplitude entry, and at least one entry")
        self.amplitudes = amplitudes.detach().float().cpu()
        self.domains = torch.as_tensor(domains, dtype=torch.int64).cpu()
        self.size = (int(size[0]), int(size[1]))
        self.b = (self.amplitudes.shape[-1] - 1) // 2

    @classmethod
    def from_patches(
        cls, patches: torch.Tensor, domains: torch.Tensor | Sequence[int], beta: float
    ) -> AmplitudeBank:
        """The bank of ``patches`` (uint8 or float ``(K, 3, H, W)``, any device) up to ``beta``.

        ``beta`` is the largest FDA window that will be used, as a fraction of
        ``min(H, W)`` (``b = floor(min(H, W) * beta)``).
        """
        _, _, h, w = patches.shape
        b = half_width(h, w, beta)
        amplitudes = [
            low_frequencies(patches[i : i + 16].float(), b).abs().cpu()
            for i in range(0, len(patches), 16)
        ]
        return cls(torch.cat(amplitudes), torch.as_tensor(list(domains)), (h, w))

    def __len__(self) -> int:
        return len(self.amplitudes)

    def draw(self, domains: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """For each image's domain, the index of a bank entry from another domain.

        Entries are drawn uniformly among those of other domains; when the bank
        holds one domain only, among all entries.
        """
        out = torch.empty(len(domains), dtype=torch.int64)
        u = _rand(generator, len(domains))
        for i, d in enumerate(domains.tolist()):
            others = torch.nonzero(self.domains != d).flatten()
            if len(others) == 0:
                others = torch.arange(len(self.domains))
            out[i] = others[min(int(u[i] * len(others)), len(others) - 1)]
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"amplitudes": self.amplitudes, "domains": self.domains, "size": list(self.size)}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> AmplitudeBank:
        return cls(state["amplitudes"], state["domains"], tuple(state["size"]))


class DomainFDA:
    """Fourier domain adaptation towards patches of other domains of the training set.

    Each chosen image keeps its phase and takes, in the centred
    ``(2b + 1) x (2b + 1)`` low-frequency square (``b = floor(min(H, W) * beta)``,
    ``beta`` uniform in the range), the amplitudes of a bank entry from
    another domain (see :meth:`AmplitudeBank.draw`).

    Parameters
    ----------
    bank : AmplitudeBank
        Target amplitudes, built once from training patches.
    beta : float or (float, float)
        Window half-width as a fraction of ``min(H, W)``; at most the bank's.
    p : float
        Share of images transformed.
    """

    def __init__(
        self, bank: AmplitudeBank, beta: float | tuple[float, float] = (0.0, 0.01), p: float = 0.5
    ) -> None:
        self.bank = bank
        self.beta = _check_range(beta, "DomainFDA beta", 0.0, 0.5)
        if half_width(*bank.size, self.beta[1]) > bank.b:
            raise ValueError(
                f"DomainFDA: beta up to {self.beta[1]} needs a bank built with at least that beta "
                f"(the bank holds b = {bank.b} frequencies at {bank.size} px)"
            )
        self.p = _check_p(p, "DomainFDA")

    def __call__(
        self,
        images: torch.Tensor,
        points: Points,
        generator: torch.Generator,
        domains: torch.Tensor | None,
    ) -> tuple[torch.Tensor, Points]:
        """Augment ``images`` (float ``(N, 3, H, W)``, 0-255) and move ``points``."""
        n, _, h, w = images.shape
        if (h, w) != self.bank.size:
            raise ValueError(
                f"DomainFDA: the bank was built on {self.bank.size} px patches, got {h} x {w} px"
            )
        apply = _rand(generator, n) < self.p
        beta = self.beta[0] + (self.beta[1] - self.beta[0]) * _rand(generator, n)
        if domains is None:
            domains = torch.full((n,), -1, dtype=torch.int64)
        target = self.bank.draw(domains.cpu(), generator)
        if not apply.any():
            return images, points
        b = torch.floor(min(h, w) * beta).long().clamp_max(self.bank.b)
        b = torch.where(apply, b, -1)
        amp = self.bank.amplitudes[target].to(images.device, images.dtype)
        x = images.contiguous().clone()
        return swap_amplitudes_(x, amp, b.to(images.device)), points


class GaussianBlur:
    """Gaussian blur with a random standard deviation per image (reflect padding).

    Parameters
    ----------
    sigma : float or (float, float)
        Standard deviation range, px.
    p : float
        Share of images transformed.
    """

    def __init__(self, sigma: float | tuple[float, float] = (0.3, 1.2), p: float = 0.2) -> None:
        self.sigma = _check_range(sigma, "GaussianBlur sigma", 0.0, 20.0)
        self.p = _check_p(p, "GaussianBlur")

    def __call__(
        self,
        images: torch.Tensor,
        points: Points,
        generator: torch.Generator,
        domains: torch.Tensor | None,
    ) -> tuple[torch.Tensor, Points]:
        """Augment ``images`` (float ``(N, 3, H, W)``, 0-255) and move ``points``."""
        n, c, h, w = images.shape
        apply = _rand(generator, n) < self.p
        sigma = self.sigma[0] + (self.sigma[1] - self.sigma[0]) * _rand(generator, n)
        idx = torch.nonzero(apply & (sigma > 0)).flatten()
        if len(idx) == 0:
            return images, points
        radius = max(1, math.ceil(3 * self.sigma[1]))
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-(t[None] ** 2) / (2 * sigma[idx, None] ** 2))
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).to(images.device, images.dtype)
        m = len(idx)
        x = images[idx.to(images.device)].reshape(1, m * c, h, w)
        weights = kernel.repeat_interleave(c, dim=0)  # (M * C, 2r + 1)
        x = F.pad(x, (radius, radius, 0, 0), mode="reflect")
        x = F.conv2d(x, weights[:, None, None, :], groups=m * c)
        x = F.pad(x, (0, 0, radius, radius), mode="reflect")
        x = F.conv2d(x, weights[:, None, :, None], groups=m * c)
        out = images.clone()
        out[idx.to(images.device)] = x.view(m, c, h, w)
        return out, points


class JPEGArtefacts:
    """JPEG compression at a random quality per image, encoded with Pillow on the CPU.

    Parameters
    ----------
    quality : int or (int, int)
        JPEG quality range, 1-100 (inclusive).
    p : float
        Share of images transformed.
    """

    def __init__(self, quality: int | tuple[int, int] = (60, 95), p: float = 0.2) -> None:
        lo, hi = _check_range(quality, "JPEGArtefacts quality", 1, 100)
        self.quality = (int(lo), int(hi))
        self.p = _check_p(p, "JPEGArtefacts")

    def __call__(
        self,
        images: torch.Tensor,
        points: Points,
        generator: torch.Generator,
        domains: torch.Tensor | None,
    ) -> tuple[torch.Tensor, Points]:
        """Augment ``images`` (float ``(N, 3, H, W)``, 0-255) and move ``points``."""
        n = images.shape[0]
        apply = _rand(generator, n) < self.p
        quality = self.quality[0] + (
            _rand(generator, n) * (self.quality[1] - self.quality[0] + 1)
        ).long().clamp_max(self.quality[1] - self.quality[0])
        idx = torch.nonzero(apply).flatten()
        if len(idx) == 0:
            return images, points
        dev = idx.to(images.device)
        host = images[dev].round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        done = np.stack([_jpeg(img, int(q)) for img, q in zip(host, quality[idx], strict=True)])
        out = images.clone()
        out[dev] = torch.from_numpy(done).permute(0, 3, 1, 2).to(images.device, images.dtype)
        return out, points


def _as_points(points: Any) -> torch.Tensor:
    t = torch.as_tensor(points, dtype=torch.float32)
    if t.numel() == 0 and t.ndim < 2:
        t = t.reshape(0, 2)
    if t.ndim != 2 or t.shape[1] < 2:
        raise ValueError(f"points must be (K, D) tensors with x, y first, got {tuple(t.shape)}")
    return t


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


class Augmenter:
    """A chain of augmentation operations with its own seeded generator.

    Parameters
    ----------
    operations : sequence of Operation
        Applied in order (see the module docstring for a sensible one).
    seed : int
        Seed of the CPU generator all operations draw from.

    Examples
    --------
    >>> import torch
    >>> aug = Augmenter([Dihedral(), GaussianBlur(p=0.5)], seed=0)
    >>> images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    >>> points = [torch.tensor([[3.5, 7.5]])] * 4
    >>> out, moved = aug(images, points)
    >>> out.dtype, out.shape, len(moved)
    (torch.uint8, torch.Size([4, 3, 32, 32]), 4)
    """

    def __init__(self, operations: Sequence[Operation], seed: int = 0) -> None:
        self.operations = list(operations)
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def __call__(
        self,
        images: torch.Tensor,
        points: Sequence[torch.Tensor],
        domains: torch.Tensor | Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, Points]:
        """Augment one batch.

        Parameters
        ----------
        images : torch.Tensor
            ``(N, 3, H, W)`` uint8, or float 0-255, on any device.
        points : sequence of torch.Tensor
            Per image, ``(K, D)`` with x, y (px) in the first two columns.
        domains : torch.Tensor or sequence of int, optional
            Per image, its domain (needed by :class:`DomainFDA` to pick others).

        Returns
        -------
        images : torch.Tensor
            The input's dtype (uint8 rounded and clipped) and device.
        points : list of torch.Tensor
            Moved with the pixels; the other columns unchanged.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        if len(points) != images.shape[0]:
            raise ValueError(f"{len(points)} point sets for {images.shape[0]} images")
        dtype = images.dtype
        x = images.float()
        pts = [_as_points(p) for p in points]
        dom = None if domains is None else torch.as_tensor(domains, dtype=torch.int64).cpu()
        for operation in self.operations:
            x, pts = operation(x, pts, self.generator, dom)
        if dtype == torch.uint8:
            x = x.round_().clamp_(0, 255).to(torch.uint8)
        return x, pts

    def state_dict(self) -> dict[str, Any]:
        """The generator state (for resuming a run)."""
        return {"seed": self.seed, "generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.seed = int(state["seed"])
        self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        names = ", ".join(f"{type(op).__name__}(p={op.p:g})" for op in self.operations)
        return f"Augmenter([{names}], seed={self.seed})"


__all__ = [
    "AmplitudeBank",
    "Augmenter",
    "Dihedral",
    "DomainFDA",
    "GaussianBlur",
    "HEDStainJitter",
    "JPEGArtefacts",
    "Operation",
    "StainMatrixJitter",
    "Zoom",
]
