"""Pixel kinds the readers accept, and their conversion to 8-bit RGB.

wsimito works on ``(h, w, 3)`` uint8 RGB. Readers also accept, converting
with a warning when the slide is opened:

- greyscale (one channel) and greyscale + alpha: the grey value in R, G and B;
- 16-bit channels: scaled to 8 bits over the full 16-bit range,
  ``round(v * 255 / 65535)`` (so 12-bit data stored in 16 bits come out dark);
- alpha (RGBA, grey + alpha): composited on white, as OpenSlide does.

Anything else (other bit depths, floats in files, 2 or more than 4 channels)
is refused with one :class:`~wsimito.errors.UnsupportedImageError` line.
"""

from __future__ import annotations

import numpy as np

SUPPORTED = (
    "wsimito reads RGB or RGBA images with 8 or 16 bits per channel (greyscale is "
    "converted to RGB, 16 bits scaled to 8)"
)

_CHANNELS = {1: "greyscale", 2: "greyscale + alpha", 3: "RGB", 4: "RGBA"}


def conversion_note(dtype: np.dtype, channels: int) -> str | None:
    """What reading pixels of ``dtype`` with ``channels`` channels converts, or ``None``.

    Parameters
    ----------
    dtype : numpy.dtype
        The stored type of one channel.
    channels : int
        Channels per pixel (1 for a 2-d image).

    Returns
    -------
    str or None
        A sentence for the warning, or ``None`` when nothing is converted
        beyond alpha compositing.

    Raises
    ------
    ValueError
        The pixels are of a kind no reader here converts; the message says
        what is supported.
    """
    dtype = np.dtype(dtype)
    if channels not in _CHANNELS or dtype not in (np.uint8, np.uint16):
        raise ValueError(
            f"{dtype} pixels with {channels} channel(s) are not supported; {SUPPORTED}"
        )
    notes = []
    if channels <= 2:
        notes.append(f"{_CHANNELS[channels]} image shown as RGB (the grey value in R, G and B)")
    if dtype == np.uint16:
        notes.append(
            "16-bit channels scaled to 8 bits over the full range, round(v * 255 / 65535); "
            "data with fewer bits (e.g. 12) come out dark: rescale them yourself and pass "
            "an 8-bit array"
        )
    return "; ".join(notes) if notes else None


def rgba_on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite an ``(h, w, 4)`` uint8 RGBA array on white; returns RGB uint8."""
    alpha = rgba[:, :, 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgba[:, :, :3])
    rgb = rgba[:, :, :3].astype(np.uint16)
    a = alpha[:, :, None].astype(np.uint16)
    return ((rgb * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def to_rgb8(pixels: np.ndarray) -> np.ndarray:
    """``(h, w)`` or ``(h, w, c)`` uint8/uint16 pixels (c = 1 to 4) as ``(h, w, 3)`` uint8 RGB.

    Parameters
    ----------
    pixels : numpy.ndarray
        Greyscale, greyscale + alpha, RGB or RGBA; 8 or 16 bits per channel.

    Returns
    -------
    numpy.ndarray
        ``(h, w, 3)`` uint8, C-contiguous; alpha composited on white.
    """
    arr = pixels if pixels.ndim == 3 else pixels[:, :, None]
    if arr.dtype == np.uint16:
        arr = ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ValueError(f"{arr.dtype} pixels are not supported; {SUPPORTED}")
    channels = arr.shape[2]
    if channels == 1:
        return np.ascontiguousarray(np.repeat(arr, 3, axis=2))
    if channels == 2:  # grey + alpha
        return rgba_on_white(arr[:, :, [0, 0, 0, 1]])
    if channels == 4:
        return rgba_on_white(arr)
    return np.ascontiguousarray(arr)
