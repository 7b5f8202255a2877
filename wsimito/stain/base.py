"""The interface every stain normalizer shares: fit, transform, move, save and load.

A normalizer is fitted once on a reference (an image, or tissue sampled from a
whole slide) and then transforms whole batches on their own device.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from ..errors import EmptyTissueError
from ..io.atomic import atomic_path
from ._tensor import Image, as_batch, restore

Self = TypeVar("Self", bound="StainNormalizer")

# Side of the square patches read from a slide when fitting (px at the chosen mpp).
_PATCH = 64
DEFAULT_N_PIXELS = 1 << 20


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """Convert sRGB values to linear light (IEC 61966-2-1).

    Parameters
    ----------
    x : torch.Tensor
        Values in sRGB, in [0, 1], any shape.

    Returns
    -------
    torch.Tensor
        Linear light in [0, 1], the shape of ``x``.
    """
    return torch.where(x > 0.04045, ((x + 0.055) / 1.055).pow(2.4), x / 12.92)


def lightness_below(x: torch.Tensor, lightness: float) -> torch.Tensor:
    """Mark the pixels darker than a CIE L* lightness.

    Parameters
    ----------
    x : torch.Tensor
        ``(N, 3, ...)`` RGB, uint8 or floats in 0-255.
    lightness : float
        CIE L*, 0 (black) to 100 (white).

    Returns
    -------
    torch.Tensor
        Bool ``(N, ...)``: ``True`` where the pixel's L* is below ``lightness``.
    """
    lin = srgb_to_linear(x.float() / 255.0)
    y = 0.212671 * lin[:, 0] + 0.715160 * lin[:, 1] + 0.072169 * lin[:, 2]
    f = (lightness + 16.0) / 116.0
    limit = f**3 if f > 6.0 / 29.0 else lightness / 903.3
    return y < limit


def sample_indices(count: int, n_samples: int | None, device: torch.device) -> torch.Tensor | None:
    """Pick a fixed pseudo-random subset of pixel indices.

    Parameters
    ----------
    count : int
        Number of pixels.
    n_samples : int or None
        How many to keep; ``None`` keeps all.
    device : torch.device
        Where the indices go.

    Returns
    -------
    torch.Tensor or None
        Sorted int64 indices ``(n_samples,)``; ``None`` when every pixel is kept.
    """
    if n_samples is None or count <= n_samples:
        return None
    g = torch.Generator().manual_seed(count)
    return torch.randperm(count, generator=g)[:n_samples].sort().values.to(device)


def masked_percentile(
    values: torch.Tensor, mask: torch.Tensor | None, q: list[float]
) -> torch.Tensor:
    """Compute percentiles along the last axis over the entries a mask keeps.

    Linear interpolation between order statistics, as numpy's default. Only
    the order statistics a percentile needs are found (``topk`` from the
    nearer end), so percentiles near 0 or 100 cost far less than a sort.

    Parameters
    ----------
    values : torch.Tensor
        ``(..., M)`` floats.
    mask : torch.Tensor or None
        Bool, the shape of ``values``: the entries to use; ``None`` uses all.
    q : list of float
        Percentiles, 0 to 100.

    Returns
    -------
    torch.Tensor
        ``(*values.shape[:-1], len(q))``; rows with no valid entry give inf.

    Examples
    --------
    >>> import torch
    >>> from wsimito.stain.base import masked_percentile
    >>> values = torch.tensor([[1.0, 2.0, 3.0, 4.0, 100.0]])
    >>> masked_percentile(values, values < 50, [50.0, 99.0])
    tensor([[2.5000, 3.9700]])
    """
    size = values.shape[-1]
    if mask is None:
        count = torch.full(values.shape[:-1], size, device=values.device)
    else:
        count = mask.sum(dim=-1)
    last = (count - 1).clamp_min(0)
    out = []
    for percent in q:
        upper = percent > 50
        share = (100.0 - percent if upper else percent) / 100.0
        k = min(size, int(share * (size - 1)) + 2)
        fill = -torch.inf if upper else torch.inf
        v = values if mask is None else torch.where(mask, values, fill)
        ends = v.topk(k, dim=-1, largest=upper, sorted=True).values  # from the nearer end
        pos = (percent / 100.0) * last.to(values.dtype)  # ascending position
        lo = pos.floor().long()
        hi = torch.minimum(lo + 1, last)
        frac = (pos - lo).unsqueeze(-1)
        if upper:
            lo, hi = last - lo, last - hi  # descending positions
        a = ends.gather(-1, lo.clamp_max(k - 1).unsqueeze(-1))
        b = ends.gather(-1, hi.clamp_max(k - 1).unsqueeze(-1))
        value = torch.where(frac > 0, a + (b - a) * frac, a)
        out.append(torch.where(count.unsqueeze(-1) > 0, value, torch.inf))
    return torch.cat(out, dim=-1)


def _slide_pixels(slide: Any, tissue: Any, mpp: float | None, n_pixels: int) -> np.ndarray:
    """Read up to ``n_pixels`` RGB pixels (P, 3) inside the tissue mask.

    They come from square patches centred on random mask cells.
    """
    if tissue is None:
        from ..tissue import detect_tissue

        tissue = detect_tissue(slide)
    mask = np.asarray(tissue.mask, dtype=bool)
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise EmptyTissueError(
            f"{slide.name}: the tissue mask holds no tissue, so there is nothing to fit the "
            "stain normalizer on; pass another slide, or a tissue mask (tissue=) that marks tissue"
        )
    read_mpp = slide.mpp if mpp is None else float(mpp)
    cell = float(tissue.mpp) / slide.mpp  # level-0 px per mask cell
    width, height = slide.dimensions
    side = min(_PATCH * read_mpp / slide.mpp, width, height)  # level-0 px per patch
    side = round(side) if abs(side - round(side)) < 1e-6 else side
    n_patches = min(len(ys), math.ceil(n_pixels / _PATCH**2))
    pick = np.random.default_rng(0).choice(len(ys), size=n_patches, replace=False)
    patches = []
    for i in pick:
        x0 = round(min(max((xs[i] + 0.5) * cell - side / 2, 0.0), width - side))
        y0 = round(min(max((ys[i] + 0.5) * cell - side / 2, 0.0), height - side))
        patch = slide.read((x0, y0, side, side), mpp=read_mpp)
        step = side / patch.shape[0]  # level-0 px per patch px
        rows = ((y0 + (np.arange(patch.shape[0]) + 0.5) * step) // cell).astype(int)
        cols = ((x0 + (np.arange(patch.shape[1]) + 0.5) * step) // cell).astype(int)
        inside = mask[
            np.minimum(rows, mask.shape[0] - 1)[:, None],
            np.minimum(cols, mask.shape[1] - 1)[None, :],
        ]
        patches.append(patch[inside])
    return np.concatenate(patches)[:n_pixels]


def reference_pixels(
    reference: Any,
    *,
    tissue: Any = None,
    mpp: float | None = None,
    n_pixels: int = DEFAULT_N_PIXELS,
) -> torch.Tensor:
    """Collect the pixels of a reference image or slide.

    Parameters
    ----------
    reference : numpy.ndarray, torch.Tensor or Slide
        An image (see :meth:`StainNormalizer.fit`) or a slide.
    tissue : Tissue, optional
        For a slide: where to sample (an object with a boolean ``mask`` and its
        ``mpp``); by default :func:`wsimito.detect_tissue` of the slide.
    mpp : float, optional
        For a slide: the resolution to read at, µm/px; by default the slide's own.
    n_pixels : int
        How many pixels at most (>= 1).

    Returns
    -------
    torch.Tensor
        The pixels, uint8 ``(1, 3, P)``: every pixel of an image (a pseudo-random
        ``n_pixels`` if there are more), or ``n_pixels`` sampled from a
        slide's tissue.

    Raises
    ------
    ValueError
        ``n_pixels`` < 1, or ``tissue``/``mpp`` given with an image.
    wsimito.EmptyTissueError
        The slide's tissue mask holds no tissue.
    """
    from ..slide.slide import Slide

    if n_pixels < 1:
        raise ValueError(f"n_pixels must be a positive number of pixels, got {n_pixels}")
    if isinstance(reference, Slide):
        pixels = torch.from_numpy(_slide_pixels(reference, tissue, mpp, n_pixels))
        return pixels.T.contiguous()[None]
    if tissue is not None or mpp is not None:
        raise ValueError(
            "tissue= and mpp= apply to a Slide reference; for an image, crop it instead"
        )
    x, _ = as_batch(reference, what="reference")
    flat = x.permute(1, 0, 2, 3).reshape(3, -1)
    index = sample_indices(flat.shape[1], n_pixels, flat.device)
    return (flat if index is None else flat[:, index])[None]


class StainNormalizer:
    """Base class: ``fit(reference)`` once, then ``transform(batch)`` on any device.

    Subclasses name their fitted tensors in ``_tensors`` and their settings in
    ``_settings``, and implement ``_fit(pixels)`` and ``_transform(x)``.

    Attributes
    ----------
    device : torch.device
        Where the fitted parameters live (see :meth:`to`).
    """

    _tensors: tuple[str, ...] = ()
    _settings: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.device = torch.device("cpu")

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`load_state_dict`) has given the parameters."""
        return all(getattr(self, name, None) is not None for name in self._tensors)

    def fit(
        self: Self,
        reference: Any,
        *,
        tissue: Any = None,
        mpp: float | None = None,
        n_pixels: int = DEFAULT_N_PIXELS,
    ) -> Self:
        """Fit the normalizer to a reference image or slide.

        Parameters
        ----------
        reference : numpy.ndarray, torch.Tensor or Slide
            A uint8 image (numpy ``(H, W, 3)`` / ``(N, H, W, 3)``, torch
            ``(N, 3, H, W)`` / ``(3, H, W)``) or a :class:`wsimito.slide.Slide`.
        tissue : Tissue, optional
            For a slide: where to sample, any object with a boolean ``mask``
            and its ``mpp`` (µm/px); by default
            ``wsimito.tissue.detect_tissue(slide)``.
        mpp : float, optional
            For a slide: the resolution pixels are read at, µm/px; by default
            the slide's own. They come from 64 x 64 px patches (px at ``mpp``)
            centred on random cells of ``tissue.mask``.
        n_pixels : int
            How many pixels to fit on, at most.

        Returns
        -------
        StainNormalizer
            ``self``, fitted.

        Raises
        ------
        wsimito.EmptyTissueError
            The reference holds no tissue.
        ValueError
            ``n_pixels`` < 1, or ``tissue``/``mpp`` given with an image.
        """
        pixels = reference_pixels(reference, tissue=tissue, mpp=mpp, n_pixels=n_pixels)
        self._fit(pixels.to(self.device).float())
        return self

    def transform(self, batch: Image) -> Image:
        """Normalize a batch of images.

        Parameters
        ----------
        batch : torch.Tensor or numpy.ndarray
            The images, uint8: torch ``(N, 3, H, W)`` on any device, or numpy
            ``(H, W, 3)`` / ``(N, H, W, 3)``.

        Returns
        -------
        torch.Tensor or numpy.ndarray
            The normalized images, uint8, in the input's type, layout and device.

        Raises
        ------
        RuntimeError
            The normalizer is not fitted.
        """
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(reference) first")
        x, layout = as_batch(batch)
        return restore(self._transform(x), layout)

    __call__ = transform

    def to(self: Self, device: torch.device | str) -> Self:
        """Move the fitted parameters to a device.

        Parameters
        ----------
        device : torch.device or str
            The device, e.g. ``"cuda"``.

        Returns
        -------
        StainNormalizer
            ``self``.
        """
        self.device = torch.device(device)
        for name in self._tensors:
            value = getattr(self, name, None)
            if value is not None:
                setattr(self, name, value.to(self.device))
        return self

    def params(self, device: torch.device) -> dict[str, torch.Tensor]:
        """Give the fitted tensors on a device.

        Parameters
        ----------
        device : torch.device
            Where the tensors go.

        Returns
        -------
        dict of str to torch.Tensor
            The fitted tensors by name.
        """
        return {name: getattr(self, name).to(device) for name in self._tensors}

    def state_dict(self) -> dict[str, Any]:
        """Give the settings and fitted tensors, for :meth:`load_state_dict` or :meth:`save`.

        Returns
        -------
        dict of str to object
            Settings by name, and fitted tensors (on the CPU) by name.

        Raises
        ------
        RuntimeError
            The normalizer is not fitted.
        """
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(reference) first")
        state: dict[str, Any] = {name: getattr(self, name) for name in self._settings}
        state.update({name: getattr(self, name).detach().cpu() for name in self._tensors})
        return state

    def load_state_dict(self: Self, state: dict[str, Any]) -> Self:
        """Restore settings and fitted tensors from :meth:`state_dict`.

        Parameters
        ----------
        state : dict of str to object
            What :meth:`state_dict` returned.

        Returns
        -------
        StainNormalizer
            ``self``.

        Raises
        ------
        ValueError
            ``state`` lacks a setting or tensor of this class.
        """
        missing = [k for k in (*self._settings, *self._tensors) if k not in state]
        if missing:
            raise ValueError(
                f"state for {type(self).__name__} lacks {missing}; pass the state_dict() "
                f"of a fitted {type(self).__name__}"
            )
        for name in self._settings:
            setattr(self, name, state[name])
        for name in self._tensors:
            setattr(self, name, torch.as_tensor(state[name], dtype=torch.float32).to(self.device))
        return self

    def save(self, path: str | Path) -> None:
        """Write the fitted parameters to a small torch file, atomically.

        Parameters
        ----------
        path : str or pathlib.Path
            The file to write.

        Raises
        ------
        RuntimeError
            The normalizer is not fitted.
        """
        with atomic_path(path) as tmp:
            torch.save({"normalizer": type(self).__name__, "state": self.state_dict()}, tmp)

    @classmethod
    def load(cls: type[Self], path: str | Path) -> Self:
        """Load a normalizer that :meth:`save` wrote.

        Parameters
        ----------
        path : str or pathlib.Path
            The file.

        Returns
        -------
        StainNormalizer
            A fitted normalizer of this class, on the CPU.

        Raises
        ------
        ValueError
            The file holds another normalizer's parameters, or none.
        """
        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("normalizer") != cls.__name__:
            found = blob.get("normalizer") if isinstance(blob, dict) else type(blob).__name__
            raise ValueError(
                f"{path} holds {found!r} parameters, not {cls.__name__}; load it with "
                f"wsimito.stain.{found}.load(path)"
                if found
                else f"{path} is not a saved {cls.__name__}; write one with "
                f"{cls.__name__}(...).save(path)"
            )
        return cls().load_state_dict(blob["state"])

    def _fit(self, pixels: torch.Tensor) -> None:
        raise NotImplementedError

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._settings)
        return f"{type(self).__name__}({settings}){'' if self.fitted else ' (not fitted)'}"
