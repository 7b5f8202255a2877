"""Conversion between the image layouts users pass and the batched tensors we compute on.

Accepted: torch ``(N, 3, H, W)`` or ``(3, H, W)`` on any device, numpy
``(H, W, 3)`` or ``(N, H, W, 3)``. Computation happens on ``(N, 3, H, W)``
float32 tensors in grey levels (0-255); :func:`restore` gives the result back
with the input's type, layout, dtype and device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

Image = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class Layout:
    """How an input image or batch arrived, so the output can leave the same way."""

    is_numpy: bool
    batched: bool
    dtype: torch.dtype
    numpy_dtype: np.dtype | None


def _shape_error(what: str, shape: tuple[int, ...]) -> ValueError:
    return ValueError(
        f"{what} must be a torch tensor (N, 3, H, W) or (3, H, W), or a numpy array "
        f"(H, W, 3) or (N, H, W, 3), got shape {shape}; move the RGB channels to the "
        "expected axis (torch: x.permute(0, 3, 1, 2); numpy: a.transpose(0, 2, 3, 1))"
    )


def as_batch(
    images: Image, *, what: str = "batch", allow_float: bool = False
) -> tuple[torch.Tensor, Layout]:
    """Return ``images`` as a ``(N, 3, H, W)`` tensor (no copy where possible) and its layout.

    Pixels must be uint8; with ``allow_float`` floating-point pixels are
    accepted too (returned in their own dtype and scale).
    """
    if isinstance(images, torch.Tensor):
        t, is_numpy = images, False
        if t.ndim == 3 and t.shape[0] == 3:
            t, batched = t.unsqueeze(0), False
        elif t.ndim == 4 and t.shape[1] == 3:
            batched = True
        else:
            raise _shape_error(what, tuple(t.shape))
        numpy_dtype = None
    elif isinstance(images, np.ndarray):
        a, is_numpy = images, True
        if a.ndim == 3 and a.shape[2] == 3:
            a, batched = a[None], False
        elif a.ndim == 4 and a.shape[3] == 3:
            batched = True
        else:
            raise _shape_error(what, a.shape)
        numpy_dtype = a.dtype
        if not a.flags.writeable:
            a = a.copy()
        t = torch.from_numpy(a).permute(0, 3, 1, 2)
    else:
        raise TypeError(
            f"{what} must be a torch.Tensor or numpy.ndarray, got {type(images).__name__}; "
            "convert PIL images with numpy.asarray(image)"
        )
    if t.dtype != torch.uint8 and not (allow_float and t.dtype.is_floating_point):
        allowed = "uint8 or floating-point" if allow_float else "uint8"
        raise TypeError(
            f"{what} must hold {allowed} RGB pixels, got {t.dtype}; convert 0-1 floats with "
            "(x * 255).round().to(torch.uint8) or numpy's (a * 255).round().astype(np.uint8)"
        )
    if t.shape[0] == 0 or t.shape[2] == 0 or t.shape[3] == 0:
        raise ValueError(f"{what} is empty (shape {tuple(images.shape)}); pass at least one pixel")
    return t, Layout(is_numpy, batched, t.dtype, numpy_dtype)


def restore(result: torch.Tensor, layout: Layout) -> Image:
    """Give a ``(N, 3, H, W)`` float result back in the layout of the input.

    uint8 inputs get rounded (half up) and clipped to 0-255; floating-point
    inputs get their own dtype, unrounded and unclipped. ``result`` may be
    overwritten.
    """
    if layout.dtype == torch.uint8:
        out = result.clamp_(0, 255).add_(0.5).to(torch.uint8)
    else:
        out = result.to(layout.dtype)
    if layout.is_numpy:
        arr = out.permute(0, 2, 3, 1).cpu().numpy()
        arr = np.ascontiguousarray(arr).astype(layout.numpy_dtype, copy=False)
        return arr if layout.batched else arr[0]
    return out if layout.batched else out[0]
