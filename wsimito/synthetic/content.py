"""Procedural tissue content: noise fields, object placement and object shapes.

Everything is a function of absolute position in µm and of the slide seed,
never of the tile being drawn: fields are value noise on hashed lattices, and
objects (nuclei, mitotic figures, look-alikes) are drawn per grid cell from a
hash of (seed, grid, cell, slot). Any box can therefore be rendered alone and
neighbouring boxes agree exactly.

Sizes follow H&E at 40x: tumour nuclei 8-13 µm across, lymphocytes 5.5-7.5 µm,
mitotic figures 8-15 µm overall (the phase shapes below), look-alikes 5-14 µm.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import ndtri

if TYPE_CHECKING:
    from .artefacts import Artefacts

# -- hashing -----------------------------------------------------------------
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31, _S11 = (np.uint64(s) for s in (30, 27, 31, 11))


def _mix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> _S30)
    h = h * _M1
    h = h ^ (h >> _S27)
    h = h * _M2
    return h ^ (h >> _S31)


def hash_keys(*keys: int | np.ndarray) -> np.ndarray:
    """A uint64 hash of integer keys, arrays broadcast (at least 1-d).

    Put scalar keys first: they are mixed on a single element before the
    arrays widen the state.
    """
    h = np.array([0x2545F4914F6CDD1D], dtype=np.uint64)
    for k in keys:
        h = _mix(h + _GOLD + np.asarray(k, dtype=np.int64).view(np.uint64))
    return h


def uniform(*keys: int | np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1) hashed from integer keys (float64, broadcast shape)."""
    return (hash_keys(*keys) >> _S11).astype(np.float64) * (1.0 / (1 << 53))


# -- value noise -------------------------------------------------------------
def _smoothstep(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def _octave_std() -> float:
    t = (np.arange(4096) + 0.5) / 4096
    s = _smoothstep(t)
    one_axis = float(np.mean((1 - s) ** 2 + s**2))
    return float(np.sqrt(one_axis * one_axis / 3.0))  # lattice values uniform in [-1, 1]


_OCTAVE_STD = _octave_std()


@dataclass(frozen=True)
class Noise:
    """Fractal value noise with about unit standard deviation.

    ``key``: identifies the field; ``spacing``: lattice spacing of the first
    octave in µm; each further octave halves the spacing and the amplitude.
    """

    key: int
    spacing: float
    octaves: int = 1

    def _norm(self) -> float:
        return _OCTAVE_STD * float(np.sqrt(sum(0.25**o for o in range(self.octaves))))

    def grid(
        self, seed: int, xs: np.ndarray, ys: np.ndarray, min_spacing: float = 0.0
    ) -> np.ndarray:
        """Values at the grid ``ys[:, None], xs[None, :]`` (µm, float64); float32 ``(len(ys), len(xs))``.

        Octaves whose lattice spacing is below ``min_spacing`` µm (detail the
        grid cannot show) are left out.
        """
        out = np.zeros((len(ys), len(xs)), dtype=np.float32)
        for o in range(self.octaves):
            s = self.spacing / 2**o
            if o and s < min_spacing:
                break
            ix, tx = _axis(xs / s)
            iy, ty = _axis(ys / s)
            lx = np.arange(ix.min(), ix.max() + 2)
            ly = np.arange(iy.min(), iy.max() + 2)
            lat = (uniform(seed, self.key, o, ly[:, None], lx[None, :]) * 2 - 1).astype(np.float32)
            jx, jy = ix - lx[0], iy - ly[0]
            rows = lat[:, jx] * (1 - tx) + lat[:, jx + 1] * tx
            val = rows[jy] * (1 - ty)[:, None]
            val += rows[jy + 1] * ty[:, None]
            val *= np.float32(0.5**o)
            out += val
        out *= np.float32(1.0 / self._norm())
        return out


def noise_points(seed: int, noises: tuple[Noise, ...], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Values of several noises at points ``(x, y)`` in µm (1-d float64): ``(len(noises), n)``.

    All octaves of all noises are evaluated in one vectorised pass.
    """
    keys, octs, spacing, weight, owner = [], [], [], [], []
    for i, nz in enumerate(noises):
        for o in range(nz.octaves):
            keys.append(nz.key)
            octs.append(o)
            spacing.append(nz.spacing / 2**o)
            weight.append(0.5**o / nz._norm())
            owner.append(i)
    s = np.asarray(spacing)[:, None]
    k = np.asarray(keys)[:, None]
    o = np.asarray(octs)[:, None]
    ix, tx = _axis(np.asarray(x, dtype=np.float64)[None, :] / s)
    iy, ty = _axis(np.asarray(y, dtype=np.float64)[None, :] / s)
    tx, ty = tx.astype(np.float64), ty.astype(np.float64)

    def lat(dx: int, dy: int) -> np.ndarray:
        return uniform(seed, k, o, iy + dy, ix + dx) * 2 - 1

    top = lat(0, 0) * (1 - tx) + lat(1, 0) * tx
    bottom = lat(0, 1) * (1 - tx) + lat(1, 1) * tx
    vals = (top * (1 - ty) + bottom * ty) * np.asarray(weight)[:, None]
    out = np.zeros((len(noises), vals.shape[1]))
    np.add.at(out, np.asarray(owner), vals)
    return out


def _axis(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    i = np.floor(f)
    return i.astype(np.int64), _smoothstep(f - i).astype(np.float32)


def threshold_for_fraction(fraction: float) -> float:
    """Noise level (in noise std) above which about ``fraction`` of the area lies."""
    if fraction >= 1:
        return -np.inf
    if fraction <= 0:
        return np.inf
    return float(ndtri(1.0 - fraction))


# -- the fields every scene uses --------------------------------------------
FAINT = Noise(2, 700.0, 3)  # faint, thin or poorly stained areas
REGION = Noise(3, 220.0, 4)  # tumour nests (high) versus stroma (low)
LUMEN = Noise(4, 70.0, 3)  # clefts and lumina inside tumour nests
LYMPH = Noise(5, 120.0, 3)  # lymphocyte aggregates in stroma
HOTSPOT = Noise(6, 600.0, 3)  # regional variation of mitotic activity
EOSIN = Noise(7, 40.0, 2)  # eosin strength of stroma and cytoplasm
WARP = Noise(8, 30.0, 2)  # waviness of collagen fibres
FIBRE_AMP = Noise(12, 15.0, 2)  # where fibres are dense or loose
TISSUE_KEY = 1


# -- textures ------------------------------------------------------------------
_TABLE = 512
TABLE_SIZE = _TABLE


@dataclass(frozen=True)
class Texture:
    """Isotropic or streaky random texture of unit standard deviation, tiled every 512 px.

    ``sigma_um``: correlation length in µm across; ``stretch``: ratio of the
    length along ``angle`` (radians) to ``sigma_um`` (1 = isotropic). The table
    is white noise filtered with a Gaussian in the Fourier domain, so it wraps
    seamlessly; it is indexed by absolute level pixel, which makes it free to
    evaluate and identical across tiles.
    """

    key: int
    sigma_um: float
    stretch: float = 1.0

    def grid(
        self, seed: int, cols: np.ndarray, rows: np.ndarray, mpp_r: float, angle: float = 0.0
    ) -> np.ndarray:
        """Values at level pixels ``rows[:, None], cols[None, :]`` of a level at ``mpp_r`` µm/px.

        ``rows`` and ``cols`` are consecutive integer ranges. The result may be
        a read-only view: do not modify it in place.
        """
        r0, c0 = int(rows[0]) % _TABLE, int(cols[0]) % _TABLE
        if len(rows) <= _TABLE and len(cols) <= _TABLE:
            big = _doubled_table(
                seed, self.key, round(self.sigma_um / mpp_r, 3), self.stretch, round(angle, 4)
            )
            return big[r0 : r0 + len(rows), c0 : c0 + len(cols)]
        table = self.table(seed, mpp_r, angle)
        out = np.take(table, np.arange(r0, r0 + len(rows)), axis=0, mode="wrap")
        return np.take(out, np.arange(c0, c0 + len(cols)), axis=1, mode="wrap")

    def table(self, seed: int, mpp_r: float, angle: float = 0.0) -> np.ndarray:
        """The ``(512, 512)`` float32 period of the texture at ``mpp_r`` µm/px."""
        return _texture_table(
            seed, self.key, round(self.sigma_um / mpp_r, 3), self.stretch, round(angle, 4)
        )

    def fade(self, mpp_r: float) -> float:
        """Amplitude kept at ``mpp_r`` µm/px: texture finer than about a pixel fades out."""
        return float(min(1.0, 1.5 * self.sigma_um / mpp_r))


@functools.lru_cache(maxsize=64)
def _texture_table(
    seed: int, key: int, sigma_px: float, stretch: float, angle: float
) -> np.ndarray:
    rng = np.random.default_rng([seed, key, 0x7E47])
    white = rng.standard_normal((_TABLE, _TABLE))
    f = np.fft.fftfreq(_TABLE)
    fy, fx = np.meshgrid(f, f, indexing="ij")
    along = fx * np.cos(angle) + fy * np.sin(angle)
    across = -fx * np.sin(angle) + fy * np.cos(angle)
    s = max(sigma_px, 0.3)
    gain = np.exp(-2 * np.pi**2 * s * s * (across**2 + (stretch * along) ** 2))
    out = np.fft.ifft2(np.fft.fft2(white) * gain).real
    out /= out.std()
    out = out.astype(np.float32)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=64)
def _doubled_table(
    seed: int, key: int, sigma_px: float, stretch: float, angle: float
) -> np.ndarray:
    big = np.tile(_texture_table(seed, key, sigma_px, stretch, angle), (2, 2))
    big.flags.writeable = False
    return big


CYTO = Texture(9, 1.2)  # granular cytoplasm
CHROM_FINE = Texture(10, 0.3)  # fine chromatin speckle
CHROM_COARSE = Texture(11, 0.6)  # clumped chromatin, ragged mitotic edges
FIBRES = Texture(13, 0.45, 12.0)  # collagen fibres, streaks along the slide's fibre angle
CELLS = Texture(14, 2.2)  # cell-sized cytoplasm variation; its zero lines act as membranes


def tissue_noise(scale_um: float) -> Noise:
    """The tissue-island field: first octave ``scale_um`` µm, down to ``scale_um / 32``."""
    return Noise(TISSUE_KEY, scale_um, 6)


def tissue_alpha(t: np.ndarray, threshold: float) -> np.ndarray:
    """Tissue cover (0 glass .. 1 tissue) from tissue noise; edges a few µm wide."""
    return np.clip((t - threshold) * 12.0 + 0.5, 0.0, 1.0)


def tumour_weight(r: np.ndarray, threshold: float) -> np.ndarray:
    """Tumour-nest membership (0 stroma .. 1 tumour) from region noise."""
    return np.clip((r - threshold) * 5.0 + 0.5, 0.0, 1.0)


def lumen_weight(lum: np.ndarray) -> np.ndarray:
    """Empty clefts (1) from lumen noise: about 6 % of the area."""
    return np.clip((lum - 1.6) * 8.0, 0.0, 1.0)


def faint_gain(f: np.ndarray) -> np.ndarray:
    """Stain strength multiplier: 1 in most tissue, down to 0.5 in faint areas (~15 %)."""
    return 1.0 - 0.5 * np.clip((f - 1.05) * 3.0 + 0.5, 0.0, 1.0)


# -- objects -----------------------------------------------------------------
TUMOUR, FIBROBLAST, LYMPHOCYTE = 0, 1, 2
PROPHASE, METAPHASE, ANAPHASE, TELOPHASE = 10, 11, 12, 13
PYKNOTIC, APOPTOTIC, DARK_LYMPHOCYTE, DEBRIS, HYPERCHROMATIC = 20, 21, 22, 23, 24

#: Names of the mitotic phases and look-alike kinds, by kind code.
KIND_NAMES = {
    PROPHASE: "prophase",
    METAPHASE: "metaphase",
    ANAPHASE: "anaphase",
    TELOPHASE: "telophase",
    PYKNOTIC: "pyknotic nucleus",
    APOPTOTIC: "apoptotic body",
    DARK_LYMPHOCYTE: "lymphocyte",
    DEBRIS: "dark debris",
    HYPERCHROMATIC: "hyperchromatic nucleus",
}
MITOTIC_KINDS = (PROPHASE, METAPHASE, ANAPHASE, TELOPHASE)
#: Share of each phase among mitotic figures (prophase/prometaphase and metaphase dominate).
PHASE_SHARES = (0.35, 0.35, 0.12, 0.18)
IMPOSTER_KINDS = (PYKNOTIC, APOPTOTIC, DARK_LYMPHOCYTE, DEBRIS, HYPERCHROMATIC)
IMPOSTER_SHARES = (0.22, 0.24, 0.18, 0.14, 0.22)

#: Largest distance from an object's centre to any pixel it touches, µm.
MAX_RADIUS_UM = 12.0
N_PARAMS = 16

_CELL_GRID_UM = 15.0  # one slot per tumour cell or fibroblast
_LYMPH_GRID_UM = 7.5  # one slot per lymphocyte in aggregates
_RARE_GRID_UM = 64.0  # mitoses and look-alikes: a few slots per cell
_RARE_SLOTS = 16
_HOTSPOT_SIGMA = 0.6  # log-normal spread of regional mitotic activity
_HOTSPOT_MAX = 4.0  # cap of that multiplier (mean about 1)


@dataclass
class Objects:
    """Objects to draw: ``kind`` codes, centres ``x``/``y`` in µm, ``params`` uniforms
    ``(K, 16)`` and ``gain``, the stain strength at the centre (faint areas < 1)."""

    kind: np.ndarray
    x: np.ndarray
    y: np.ndarray
    params: np.ndarray
    gain: np.ndarray

    @staticmethod
    def empty() -> Objects:
        return Objects(
            np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros((0, N_PARAMS)), np.zeros(0)
        )

    def __len__(self) -> int:
        return len(self.kind)

    def take(self, keep: np.ndarray) -> Objects:
        return Objects(
            self.kind[keep], self.x[keep], self.y[keep], self.params[keep], self.gain[keep]
        )

    @staticmethod
    def concat(parts: list[Objects]) -> Objects:
        if not parts:
            return Objects.empty()
        return Objects(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("kind", "x", "y", "params", "gain")
            )
        )


@dataclass(frozen=True)
class Layout:
    """Scene knobs that decide where things are (all densities per mm² of tissue).

    ``imposters_per_mm2_tumour``: look-alike density per mm² of tumour, or None
    for ``mitoses_per_mm2_tumour * imposters_per_mitosis``.
    ``min_imposters_per_mitosis``: look-alikes placed next to each figure.
    ``extent_um``: slide width and height in µm (companions stay inside it).
    ``artefacts``: the slide artefacts, or None for none.
    """

    seed: int
    tissue_scale_um: float
    tissue_threshold: float
    tumour_threshold: float
    mitoses_per_mm2_tumour: float
    imposters_per_mitosis: float
    imposters_per_mm2_tumour: float | None = None
    min_imposters_per_mitosis: int = 0
    extent_um: tuple[float, float] | None = None
    artefacts: Artefacts | None = None

    @property
    def imposter_rate(self) -> float:
        """Look-alikes per mm² of tumour placed independently of the figures."""
        if self.imposters_per_mm2_tumour is not None:
            return self.imposters_per_mm2_tumour
        return self.mitoses_per_mm2_tumour * self.imposters_per_mitosis


def max_rare_rate() -> float:
    """Highest rate of mitotic figures or of look-alikes the object grid holds, per mm² of tumour."""
    return _RARE_SLOTS / (_HOTSPOT_MAX * (_RARE_GRID_UM / 1000.0) ** 2)


def _cells(grid: float, box: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    x0, y0, x1, y1 = box
    cx = np.arange(np.floor(x0 / grid), np.floor(x1 / grid) + 1).astype(np.int64)
    cy = np.arange(np.floor(y0 / grid), np.floor(y1 / grid) + 1).astype(np.int64)
    gx, gy = np.meshgrid(cx, cy)
    return gx.ravel(), gy.ravel()


def _in_box(x: np.ndarray, y: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    return (x >= box[0]) & (x < box[2]) & (y >= box[1]) & (y < box[3])


def site_fields(layout: Layout, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """What may sit at points (µm): tissue cover, tumour membership, stain gain,
    lymphocyte-aggregate noise and the hotspot multiplier of mitotic activity."""
    t, r, lu, f, ly, hs = noise_points(
        layout.seed,
        (tissue_noise(layout.tissue_scale_um), REGION, LUMEN, FAINT, LYMPH, HOTSPOT),
        x,
        y,
    )
    tum = tumour_weight(r, layout.tumour_threshold)
    cover = tissue_alpha(t, layout.tissue_threshold) * (1 - lumen_weight(lu) * tum)
    hot = np.minimum(np.exp(_HOTSPOT_SIGMA * hs - _HOTSPOT_SIGMA**2 / 2), _HOTSPOT_MAX)
    return {
        "tissue": cover,
        "tumour": tum,
        "gain": cover * faint_gain(f),
        "lymph": ly,
        "hotspot": hot,
    }


def _grid_sites(layout: Layout, grid_id: int, grid: float, box, jitter: float):
    cx, cy = _cells(grid, box)
    u = uniform(layout.seed, grid_id, cy[:, None], cx[:, None], np.arange(N_PARAMS + 3)[None, :])
    x = (cx + 0.5 + jitter * (u[:, 0] - 0.5)) * grid
    y = (cy + 0.5 + jitter * (u[:, 1] - 0.5)) * grid
    keep = _in_box(x, y, box)
    return x[keep], y[keep], u[keep, 2], u[keep, 3:]


def cell_nuclei(layout: Layout, box: tuple[float, float, float, float]) -> Objects:
    """Tumour nuclei, fibroblasts and lymphocytes with centres inside ``box`` (x0, y0, x1, y1 µm)."""
    x, y, pick, params = _grid_sites(layout, 101, _CELL_GRID_UM, box, 0.5)
    f = site_fields(layout, x, y)
    tum = f["tumour"] > 0.5
    present = (f["tissue"] > 0.5) & (pick < np.where(tum, 0.93, 0.2))
    cells = Objects(
        np.where(tum, TUMOUR, FIBROBLAST)[present],
        x[present],
        y[present],
        params[present],
        f["gain"][present],
    )
    lx, ly, lpick, lparams = _grid_sites(layout, 102, _LYMPH_GRID_UM, box, 0.35)
    lf = site_fields(layout, lx, ly)
    aggregate = lf["lymph"] > 1.3
    chance = np.where(aggregate & (lf["tumour"] < 0.5), 0.85, 0.012)
    lpresent = (lf["tissue"] > 0.5) & (lpick < chance)
    lymph = Objects(
        np.full(int(lpresent.sum()), LYMPHOCYTE),
        lx[lpresent],
        ly[lpresent],
        lparams[lpresent],
        lf["gain"][lpresent],
    )
    if len(lymph):
        # aggregates replace the stromal cells they overlap
        d2 = (cells.x[:, None] - lymph.x[None, :]) ** 2 + (cells.y[:, None] - lymph.y[None, :]) ** 2
        cells = cells.take(~(d2 < 6.0**2).any(axis=1))
    return Objects.concat([cells, lymph])


def rare_objects(
    layout: Layout,
    box: tuple[float, float, float, float],
    *,
    figures: bool = True,
    imposters: bool = True,
) -> Objects:
    """Mitotic figures and look-alikes with centres inside ``box`` (x0, y0, x1, y1 µm).

    Candidates are drawn at the highest possible rate per cell and thinned by
    the local rate (tissue, tumour nests, hotspot field), so that enumerating a
    whole slide costs a few vectorised hashes per 64 µm cell. ``figures`` and
    ``imposters`` choose the groups (the look-alikes placed at the background
    rate; companions of figures come from :func:`companions`).
    """
    cx, cy = _cells(_RARE_GRID_UM, box)
    cell_mm2 = (_RARE_GRID_UM / 1000.0) ** 2
    parts = []
    groups = []
    if figures:
        groups.append((201, layout.mitoses_per_mm2_tumour, MITOTIC_KINDS, PHASE_SHARES))
    if imposters:
        groups.append((202, layout.imposter_rate, IMPOSTER_KINDS, IMPOSTER_SHARES))
    for group, rate, kinds, shares in groups:
        p_slot = rate * _HOTSPOT_MAX * cell_mm2 / _RARE_SLOTS
        if p_slot <= 0:
            continue
        slot = np.arange(_RARE_SLOTS)
        u0 = uniform(layout.seed, group, cy[:, None], cx[:, None], slot[None, :], -1).ravel()
        cand = np.flatnonzero(u0 < p_slot)
        ccx = np.repeat(cx, _RARE_SLOTS)[cand]
        ccy = np.repeat(cy, _RARE_SLOTS)[cand]
        cslot = np.tile(slot, len(cx))[cand]
        u = uniform(
            layout.seed,
            group,
            ccy[:, None],
            ccx[:, None],
            cslot[:, None],
            np.arange(N_PARAMS + 4)[None, :],
        )
        x = (ccx + u[:, 0]) * _RARE_GRID_UM
        y = (ccy + u[:, 1]) * _RARE_GRID_UM
        inside = _in_box(x, y, box)
        x, y, u = x[inside], y[inside], u[inside]
        f = site_fields(layout, x, y)
        local = (f["tissue"] > 0.5) * f["tumour"] * f["hotspot"]
        accept = u[:, 2] * _HOTSPOT_MAX < local
        x, y, u, gain = x[accept], y[accept], u[accept], f["gain"][accept]
        edges = np.cumsum(shares)
        kind = np.asarray(kinds)[
            np.minimum(np.searchsorted(edges, u[:, 3] * edges[-1]), len(kinds) - 1)
        ]
        parts.append(Objects(kind, x, y, u[:, 4:], gain))
    return Objects.concat(parts)


_COMPANION_RING_UM = (18.0, 90.0)  # distance of a figure's companions from its centre
#: Farthest a figure's companion look-alike lies from the figure, µm.
COMPANION_REACH_UM = _COMPANION_RING_UM[1]
_COMPANION_TRIES = 5  # candidate places per wanted companion
_COMPANION_GAP_UM = 16.0  # companions of one figure keep this far apart


def companions(
    layout: Layout,
    figs: Objects,
    usable: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> tuple[Objects, np.ndarray, np.ndarray]:
    """``layout.min_imposters_per_mitosis`` look-alikes around each figure in ``figs``.

    Each figure draws candidate places 18-90 µm from its centre from a hash of
    its own parameters, so its companions do not depend on the box enumerated.
    A place is usable in tumour tissue, inside ``layout.extent_um`` and where
    ``usable(x, y)`` (µm) allows. Returns the companions, the index of each
    one's figure in ``figs``, and per figure whether it found all it needs
    (figures that did not are meant to be dropped with their companions).
    """
    n = layout.min_imposters_per_mitosis
    if n <= 0 or len(figs) == 0:
        return Objects.empty(), np.zeros(0, np.int64), np.ones(len(figs), bool)
    m = n * _COMPANION_TRIES
    key = (figs.params[:, :2] * float(1 << 52)).astype(np.int64)
    u = uniform(
        layout.seed,
        203,
        key[:, 0, None, None],
        key[:, 1, None, None],
        np.arange(m)[None, :, None],
        np.arange(N_PARAMS + 4)[None, None, :],
    )  # (F, m, 20)
    lo, hi = _COMPANION_RING_UM
    r = np.sqrt(lo * lo + (hi * hi - lo * lo) * u[..., 0])
    phi = 2 * np.pi * u[..., 1]
    x = figs.x[:, None] + r * np.cos(phi)
    y = figs.y[:, None] + r * np.sin(phi)
    f = site_fields(layout, x.ravel(), y.ravel())
    ok = ((f["tissue"] > 0.5) & (f["tumour"] > 0.5)).reshape(x.shape)
    if layout.extent_um is not None:
        w, h = layout.extent_um
        ok &= (x >= 0) & (x < w) & (y >= 0) & (y < h)
    if usable is not None:
        ok &= usable(x.ravel(), y.ravel()).reshape(x.shape)
    d2 = (x[:, :, None] - x[:, None, :]) ** 2 + (y[:, :, None] - y[:, None, :]) ** 2
    crowded = ((d2 < _COMPANION_GAP_UM**2) & np.tri(m, k=-1, dtype=bool)[None]).any(axis=2)
    ok &= ~crowded
    chosen = ok & (np.cumsum(ok, axis=1) <= n)
    complete = chosen.sum(axis=1) == n
    chosen &= complete[:, None]
    fi, ki = np.nonzero(chosen)
    uu = u[fi, ki]
    edges = np.cumsum(IMPOSTER_SHARES)
    kind = np.asarray(IMPOSTER_KINDS)[
        np.minimum(np.searchsorted(edges, uu[:, 3] * edges[-1]), len(IMPOSTER_KINDS) - 1)
    ]
    gain = f["gain"].reshape(x.shape)[fi, ki]
    return Objects(kind, x[fi, ki], y[fi, ki], uu[:, 4:], gain), fi, complete


# -- object shapes -------------------------------------------------------------
# Each shape takes the object parameters p (K, 16) in [0, 1), local coordinates
# U, V (K, P, P) in µm along the object's axes, clumped-chromatin noise cc at
# the same pixels and the edge width in µm, and returns per-pixel maps:
# "hem" haematoxylin OD of nuclear material, "tf"/"tc" fine/coarse chromatin
# texture amplitude, "halo" clear cytoplasm (0..1), "eos" extra eosin OD.


def _col(p: np.ndarray, i: int, lo: float, hi: float) -> np.ndarray:
    return (lo + (hi - lo) * p[:, i])[:, None, None].astype(np.float32)


def _ellipse_d(U: np.ndarray, V: np.ndarray, a, b) -> np.ndarray:
    return np.sqrt((U / a) ** 2 + (V / b) ** 2)


def _inside(d: np.ndarray, size, edge: float) -> np.ndarray:
    """Soft 0..1 cover of the region d < 1 whose scale is ``size`` µm."""
    return np.clip((1.0 - d) * (size / edge) + 0.5, 0.0, 1.0)


def _tumour(p, U, V, cc, edge):
    a = _col(p, 1, 4.5, 7.0)
    b = a * _col(p, 2, 0.62, 0.97)
    d = _ellipse_d(U, V + _col(p, 3, -0.05, 0.05) * U * U, a, b)
    m = _inside(d, b, edge)
    rim = np.clip(1.0 - np.abs(1.0 - d) * (b / 0.7), 0.0, 1.0)
    dn = np.sqrt((U - _col(p, 5, -0.3, 0.3) * a) ** 2 + (V - _col(p, 6, -0.3, 0.3) * b) ** 2)
    nucleolus = _inside(dn / _col(p, 7, 0.5, 1.1), 0.8, edge) * (p[:, 8] < 0.7)[:, None, None]
    hem = m * _col(p, 4, 0.36, 0.58) * (0.7 + 0.6 * rim) + m * nucleolus * 0.7
    return {"hem": hem, "tf": m * 0.6, "tc": m * 0.3}


def _fibroblast(p, U, V, cc, edge):
    a = _col(p, 1, 4.5, 7.5)
    b = _col(p, 2, 1.1, 1.9)
    d = _ellipse_d(U, V + _col(p, 3, -0.04, 0.04) * U * U, a, b)
    m = _inside(d, b, edge)
    return {"hem": m * _col(p, 4, 0.6, 0.85), "tf": m * 0.25, "tc": m * 0.15}


def _lymphocyte(p, U, V, cc, edge, dark=(0.9, 1.15)):
    a = _col(p, 1, 2.8, 3.7)
    d = _ellipse_d(U, V, a, a * _col(p, 2, 0.85, 1.0))
    m = _inside(d, a, edge * 0.7)
    return {"hem": m * _col(p, 4, *dark), "tf": m * 0.2, "tc": m * 0.35}


def _halo(U, V, a, b, edge):
    return _inside(_ellipse_d(U, V, a, b), b, edge * 8) * 0.5


def _prophase(p, U, V, cc, edge):
    a = _col(p, 1, 4.2, 6.0)
    b = a * _col(p, 2, 0.8, 1.0)
    d = _ellipse_d(U, V, a, b) - 0.06 * cc
    m = _inside(d, b, edge)
    threads = np.clip(1.3 - np.abs(cc) * 1.1, 0.0, 1.0)  # condensed chromosomes: coarse threads
    return {
        "hem": m * _col(p, 4, 0.95, 1.25) * (0.45 + 0.75 * threads),
        "tf": m * 0.2,
        "tc": m * 0.0,
        "halo": _halo(U, V, a * 1.45, b * 1.45, edge),
    }


def _metaphase(p, U, V, cc, edge):
    a = _col(p, 1, 4.5, 7.0)
    b = _col(p, 2, 1.6, 2.4)
    d = _ellipse_d(U, V + _col(p, 3, -0.04, 0.04) * U * U, a, b)
    m = _inside(d - 0.2 * cc, b, edge)  # ragged, hairy edges
    return {
        "hem": m * _col(p, 4, 1.05, 1.35),
        "tf": m * 0.15,
        "tc": m * 0.35,
        "halo": _halo(U, V, a + 1.5, b + 4.0, edge),
    }


def _pair(U, V, gap, a, b, bend, edge, cc, rag):
    d1 = _ellipse_d(U, V - gap / 2 - bend * U * U, a, b)
    d2 = _ellipse_d(U, V + gap / 2 + bend * U * U, a, b)
    return _inside(np.minimum(d1, d2) - rag * cc, b, edge)


def _anaphase(p, U, V, cc, edge):
    a = _col(p, 1, 3.5, 5.5)
    b = _col(p, 2, 1.1, 1.7)
    gap = _col(p, 5, 4.0, 8.0)
    m = _pair(U, V, gap, a, b, _col(p, 3, 0.02, 0.07), edge, cc, 0.12)
    return {
        "hem": m * _col(p, 4, 1.05, 1.35),
        "tf": m * 0.15,
        "tc": m * 0.35,
        "halo": _halo(U, V, a + 2.0, gap / 2 + b + 3.5, edge),
    }


def _telophase(p, U, V, cc, edge):
    a = _col(p, 1, 2.4, 4.0)
    b = _col(p, 2, 1.4, 2.4)
    gap = _col(p, 5, 7.0, 12.0)
    m = _pair(U, V, gap, a, b, _col(p, 3, 0.05, 0.12), edge, cc, 0.15)
    r = b + 2.2
    cell = np.maximum(
        _inside(np.sqrt(U * U + (V - gap / 2) ** 2) / r, r, edge * 8),
        _inside(np.sqrt(U * U + (V + gap / 2) ** 2) / r, r, edge * 8),
    )
    return {"hem": m * _col(p, 4, 1.0, 1.3), "tf": m * 0.2, "tc": m * 0.45, "halo": cell * 0.4}


def _pyknotic(p, U, V, cc, edge):
    a = _col(p, 1, 2.4, 3.8)
    b = a * _col(p, 2, 0.85, 1.0)
    d = _ellipse_d(U, V, a, b)
    m = _inside(d, b, edge * 0.6)
    body = _inside(d / 1.7, b * 1.7, edge)
    return {
        "hem": m * _col(p, 4, 1.2, 1.5),
        "tf": m * 0.05,
        "tc": m * 0.05,
        "halo": _inside(d / 2.1, b * 2.1, edge * 6) * 0.3,
        "eos": body * 0.2,
    }


def _apoptotic(p, U, V, cc, edge):
    rb = _col(p, 1, 3.5, 5.5)
    d = np.sqrt(U * U + V * V) / rb
    body = _inside(d, rb, edge)
    count = 1 + np.floor(p[:, 14] * 4)
    frag = np.zeros_like(U)
    for k in range(4):
        phi = 2 * np.pi * (p[:, 5] + k / 4.0)
        rho = rb[:, 0, 0] * (0.15 + 0.45 * p[:, 6 + k])
        r = (0.9 + 1.3 * p[:, 10 + k])[:, None, None]
        fx = (rho * np.cos(phi))[:, None, None]
        fy = (rho * np.sin(phi))[:, None, None]
        fk = _inside(np.sqrt((U - fx) ** 2 + (V - fy) ** 2) / r, r, edge * 0.6)
        frag = np.maximum(frag, fk * (k < count)[:, None, None])
    return {
        "hem": frag * _col(p, 4, 1.2, 1.5),
        "tf": frag * 0.05,
        "tc": frag * 0.05,
        "halo": _inside(d * rb / (rb + 1.5), rb + 1.5, edge * 6) * 0.35,
        "eos": body * 0.25,
    }


def _dark_lymphocyte(p, U, V, cc, edge):
    return _lymphocyte(p, U, V, cc, edge, dark=(1.1, 1.4))


def _debris(p, U, V, cc, edge):
    a = _col(p, 1, 2.5, 5.5)
    b = a * _col(p, 2, 0.5, 1.0)
    d = _ellipse_d(U, V, a, b) - 0.45 * cc
    m = _inside(d, b, edge * 0.6)
    return {"hem": m * _col(p, 4, 0.9, 1.35), "tf": m * 0.1, "tc": m * 0.2, "eos": m * 0.35}


def _hyperchromatic(p, U, V, cc, edge):
    a = _col(p, 1, 4.0, 5.8)
    b = a * _col(p, 2, 0.7, 1.0)
    d = _ellipse_d(U, V + _col(p, 3, -0.04, 0.04) * U * U, a, b)
    m = _inside(d, b, edge)
    return {"hem": m * _col(p, 4, 0.95, 1.2), "tf": m * 0.4, "tc": m * 0.25}


#: kind -> (shape function, largest reach from the centre in µm).
SHAPES = {
    TUMOUR: (_tumour, 7.0),
    FIBROBLAST: (_fibroblast, 8.0),
    LYMPHOCYTE: (_lymphocyte, 4.2),
    PROPHASE: (_prophase, 9.0),
    METAPHASE: (_metaphase, 9.0),
    ANAPHASE: (_anaphase, 9.0),
    TELOPHASE: (_telophase, 11.0),
    PYKNOTIC: (_pyknotic, 9.0),
    APOPTOTIC: (_apoptotic, 8.0),
    DARK_LYMPHOCYTE: (_dark_lymphocyte, 4.5),
    DEBRIS: (_debris, 9.0),
    HYPERCHROMATIC: (_hyperchromatic, 6.5),
}
