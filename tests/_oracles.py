"""Test oracles: plain, slow, step-by-step references that the fast code is checked against.

Also imported by the benchmarks (which put ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import numpy as np


def fda_reference_numpy(source: np.ndarray, target: np.ndarray, beta: float) -> np.ndarray:
    """One image at a time in numpy, step by step as Yang & Soatto publish it: fft2 per channel,
    fftshift, replace the centred (2b + 1)-wide square of the amplitude (b = floor(min(H, W) *
    beta)), keep the phase, ifft2. (H, W, 3) in, float (H, W, 3) out. The reference that tests
    and benchmarks compare the batched :func:`fda` against."""
    spec_s = np.fft.fft2(source.astype(np.float64), axes=(0, 1))
    spec_t = np.fft.fft2(target.astype(np.float64), axes=(0, 1))
    amp_s = np.fft.fftshift(np.abs(spec_s), axes=(0, 1))
    amp_t = np.fft.fftshift(np.abs(spec_t), axes=(0, 1))
    h, w = source.shape[:2]
    b = int(np.floor(min(h, w) * beta))
    ch, cw = h // 2, w // 2
    amp_s[ch - b : ch + b + 1, cw - b : cw + b + 1] = amp_t[
        ch - b : ch + b + 1, cw - b : cw + b + 1
    ]
    amp = np.fft.ifftshift(amp_s, axes=(0, 1))
    return np.real(np.fft.ifft2(amp * np.exp(1j * np.angle(spec_s)), axes=(0, 1)))
