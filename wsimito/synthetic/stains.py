"""Beer-Lambert rendering of haematoxylin and eosin, with per-slide stain variation.

Light of the glass colour ``I0`` passing through stain amounts ``h`` and ``e``
(optical density units, base 10, at unit gain) leaves
``I = I0 * 10 ** -(h * gain_h * H + e * gain_e * E)``, where ``H`` and ``E``
are unit optical-density vectors over (R, G, B). Labs differ in stain
strength and hue, scanners in white balance: a :class:`StainModel` holds one
such combination. :data:`PRESETS` names a few; :func:`random_stain` varies one
from a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_LN10 = np.float32(np.log(10.0))


def _unit(v: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    return a / np.linalg.norm(a)


@dataclass(frozen=True)
class StainModel:
    """One lab's stain and one scanner's colour.

    Attributes
    ----------
    name : str
        What to call it.
    h_od, e_od : tuple of (float, float, float)
        Optical density per unit haematoxylin / eosin over (R, G, B),
        normalised to length 1 when used.
    h_gain, e_gain : float
        Stain strength multipliers (dimensionless).
    background : tuple of (float, float, float)
        RGB of empty glass, 0-255.
    """

    name: str
    h_od: tuple[float, float, float]
    e_od: tuple[float, float, float]
    h_gain: float = 1.0
    e_gain: float = 1.0
    background: tuple[float, float, float] = (244.0, 242.0, 246.0)

    def matrix(self) -> np.ndarray:
        """Give the stain matrix, gains applied.

        Returns
        -------
        numpy.ndarray
            ``(2, 3)`` float32: optical density per unit h and e over (R, G, B).
        """
        return np.stack([_unit(self.h_od) * self.h_gain, _unit(self.e_od) * self.e_gain]).astype(
            np.float32
        )


# Ruifrok & Johnston (2001) and Macenko et al. (2009) reference stain vectors.
_RUIFROK_H = (0.650, 0.704, 0.286)
_RUIFROK_E = (0.072, 0.990, 0.105)
_MACENKO_H = (0.5626, 0.7201, 0.4062)
_MACENKO_E = (0.2159, 0.8012, 0.5581)

#: Named stain set-ups imitating common lab and scanner looks.
PRESETS: dict[str, StainModel] = {
    m.name: m
    for m in (
        StainModel("standard", _MACENKO_H, (0.17, 0.86, 0.48)),
        StainModel("ruifrok", _RUIFROK_H, _RUIFROK_E, 0.95, 0.8),
        StainModel("pale", _MACENKO_H, _MACENKO_E, 0.62, 0.7, (246.0, 245.0, 247.0)),
        StainModel(
            "dark", (0.58, 0.74, 0.34), (0.16, 0.87, 0.46), 1.3, 1.15, (238.0, 236.0, 240.0)
        ),
        StainModel("eosin-rich", _MACENKO_H, (0.10, 0.92, 0.38), 0.85, 1.45),
        StainModel("haematoxylin-rich", (0.66, 0.68, 0.32), _MACENKO_E, 1.3, 0.7),
        StainModel(
            "warm-scanner", (0.56, 0.74, 0.37), (0.20, 0.83, 0.52), 1.0, 1.0, (248.0, 240.0, 226.0)
        ),
        StainModel(
            "cool-scanner", (0.60, 0.68, 0.42), (0.22, 0.78, 0.58), 1.0, 0.95, (232.0, 238.0, 250.0)
        ),
    )
}


def random_stain(seed: int) -> StainModel:
    """Vary a preset chosen from ``seed``: its vectors, gains and glass colour.

    Vectors move by about 5 % (then renormalise), gains by a factor of about
    0.8-1.25, the glass colour by up to 6 grey levels per channel.

    Parameters
    ----------
    seed : int
        Picks the preset and the variation.

    Returns
    -------
    StainModel
        Named ``random-<seed>(<preset>)``.

    Examples
    --------
    >>> from wsimito.synthetic import random_stain
    >>> random_stain(7) == random_stain(7), random_stain(7).name.startswith("random-7(")
    (True, True)
    """
    rng = np.random.default_rng([seed, 0x57A1])
    base = list(PRESETS.values())[int(rng.integers(len(PRESETS)))]
    h = np.clip(_unit(base.h_od) + rng.normal(0, 0.05, 3), 0.05, None)
    e = np.clip(_unit(base.e_od) + rng.normal(0, 0.05, 3), 0.02, None)
    gains = np.exp(rng.normal(0, 0.12, 2))
    bg = np.clip(np.asarray(base.background) + rng.uniform(-6, 6, 3), 200, 255)
    return StainModel(
        f"random-{seed}({base.name})",
        _triple(_unit(h)),
        _triple(_unit(e)),
        float(base.h_gain * gains[0]),
        float(base.e_gain * gains[1]),
        _triple(bg),
    )


def _triple(a: np.ndarray) -> tuple[float, float, float]:
    return (float(a[0]), float(a[1]), float(a[2]))


def resolve_stain(stain: str | StainModel, seed: int) -> StainModel:
    """Turn ``"random"``, a preset name or a :class:`StainModel` into a :class:`StainModel`."""
    if isinstance(stain, StainModel):
        return stain
    if stain == "random":
        return random_stain(seed)
    if stain in PRESETS:
        return PRESETS[stain]
    raise ValueError(
        f"unknown stain {stain!r}; use 'random', a StainModel, or one of {sorted(PRESETS)}"
    )


def beer_lambert(
    h: np.ndarray, e: np.ndarray, stain: StainModel, grain: np.ndarray | None = None
) -> np.ndarray:
    """RGB uint8 ``(rows, cols, 3)`` from stain amounts ``h`` and ``e`` (``(rows, cols)`` float32).

    ``grain``: optional ``(rows, cols)`` additive sensor noise in grey levels.
    """
    m = stain.matrix()
    bg = np.asarray(stain.background, dtype=np.float32)
    out = np.empty(h.shape + (3,), dtype=np.uint8)
    for c in range(3):
        od = h * (-_LN10 * m[0, c])
        od += e * (-_LN10 * m[1, c])
        val = np.exp(od, out=od)
        val *= bg[c]
        if grain is not None:
            val += grain
        val += 0.5
        np.clip(val, 0, 255, out=val)
        out[:, :, c] = val
    return out
