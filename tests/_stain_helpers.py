"""Shared helpers of the stain tests: a differently stained copy and a colour distance."""

from __future__ import annotations

import numpy as np
from skimage.color import deltaE_cie76, rgb2lab


def recolour(image: np.ndarray) -> np.ndarray:
    """A copy stained differently: Ruifrok H&E unmixing, then other stain vectors
    (browner eosin, bluer haematoxylin) and concentrations (H x1.5, E x0.6)."""
    ruifrok = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
    other = np.array([[0.45, 0.85, 0.30], [0.30, 0.90, 0.20], [0.27, 0.57, 0.78]])
    ruifrok /= np.linalg.norm(ruifrok, axis=1, keepdims=True)
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    od = -np.log((image.reshape(-1, 3).astype(np.float64) + 1) / 256)
    conc = od @ np.linalg.inv(ruifrok) * [1.5, 0.6, 1.0]
    out = 256 * np.exp(-conc @ other) - 1
    return np.clip(out, 0, 255).round().astype(np.uint8).reshape(image.shape)


def colour_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean CIE76 colour difference (ΔE, L*a*b* units) between aligned images."""
    return float(deltaE_cie76(rgb2lab(a), rgb2lab(b)).mean())
