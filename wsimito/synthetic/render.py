"""Deterministic rendering of any box of a synthetic slide at any downsample.

A :class:`Scene` is the whole, infinite-resolution slide: its seed, stain and
layout knobs. ``scene.render(x, y, w, h, downsample)`` draws one box of one
pyramid level; every pixel depends only on its absolute position, so boxes
rendered separately agree with one rendered whole. Levels finer than
:data:`DETAIL_MPP` draw every object; coarser levels draw each region's mean
colour directly (no object is visible at that scale anyway).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import shapely

from . import artefacts as art
from . import content as c
from .stains import StainModel, beer_lambert, resolve_stain
from .stats import IMPOSTERS_PER_MITOSIS, MITOTIC_DENSITY_MEAN
from .truth import GroundTruth

#: Coarsest level resolution (µm/px) at which nuclei and figures are drawn one by one.
DETAIL_MPP = 2.0
_COARSE_STEP_UM = 2.0  # spacing of the sub-grid that smooth fields are evaluated on
_COARSE_STEP_COARSE_UM = 8.0  # the same on levels drawn without objects
_FIBRE_PERIOD_UM = 5.0
_GRAIN_TABLE = 256
_BLOCK = 1024  # px per side rendered at once by render_image
_BLOCK_UM = 256.0  # objects are enumerated and cached per block of this side
_MAX_COMPANIONS = 20  # most look-alikes placed around each mitotic figure
# Mean nuclear haematoxylin OD per area, for levels drawn without objects
# (tumour nests, stroma): measured by area-averaging level-0 renders.
_MEAN_NUCLEAR_OD = (0.12, 0.02)


@dataclass(frozen=True)
class Scene:
    """A synthetic slide: size in level-0 px, ``mpp`` µm/px, seed, stain and layout."""

    width: int
    height: int
    mpp: float
    seed: int
    stain: StainModel
    layout: c.Layout
    tumour_fraction: float

    @classmethod
    def build(
        cls,
        width: int,
        height: int,
        *,
        mpp: float = 0.25,
        seed: int = 0,
        stain: str | StainModel = "random",
        tissue_fraction: float = 0.45,
        tissue_scale_um: float = 1500.0,
        tumour_fraction: float = 0.55,
        mitoses_per_mm2: float = MITOTIC_DENSITY_MEAN,
        imposters_per_mitosis: float = IMPOSTERS_PER_MITOSIS,
        imposters_per_mm2: float | None = None,
        min_imposters_per_mitosis: int = 0,
        artefacts: art.ArtefactSpec = "none",
    ) -> Scene:
        """Check the knobs and build a scene (see :func:`wsimito.synthetic.make_slide`).

        Raises
        ------
        ValueError
            If a knob is out of its range; the message names it and the range.
        """
        if int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"width and height must be positive px, got {width} x {height}")
        if not (math.isfinite(mpp) and mpp > 0):
            raise ValueError(f"mpp must be a positive number of µm per pixel, got {mpp!r}")
        for name, value in (
            ("tissue_fraction", tissue_fraction),
            ("tumour_fraction", tumour_fraction),
        ):
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
        if tumour_fraction == 0 and mitoses_per_mm2 > 0:
            raise ValueError(
                "mitotic figures sit in tumour nests: use tumour_fraction > 0 or mitoses_per_mm2=0"
            )
        if mitoses_per_mm2 < 0 or imposters_per_mitosis < 0:
            raise ValueError("mitoses_per_mm2 and imposters_per_mitosis must be >= 0")
        if imposters_per_mm2 is not None:
            if not (math.isfinite(imposters_per_mm2) and imposters_per_mm2 >= 0):
                raise ValueError(
                    f"imposters_per_mm2 must be None or a number >= 0 per mm² of tissue, "
                    f"got {imposters_per_mm2!r}"
                )
            if tumour_fraction == 0 and imposters_per_mm2 > 0:
                raise ValueError(
                    "look-alikes sit in tumour nests: use tumour_fraction > 0 or "
                    "imposters_per_mm2=0"
                )
            imposter_limit = c.max_rare_rate() * tumour_fraction
            if imposters_per_mm2 > imposter_limit:
                raise ValueError(
                    f"imposters_per_mm2={imposters_per_mm2:g} is more than this layout holds; "
                    f"use at most {imposter_limit:.0f} (or raise tumour_fraction)"
                )
        if int(min_imposters_per_mitosis) != min_imposters_per_mitosis or not (
            0 <= min_imposters_per_mitosis <= _MAX_COMPANIONS
        ):
            raise ValueError(
                f"min_imposters_per_mitosis must be a whole number from 0 to {_MAX_COMPANIONS}, "
                f"got {min_imposters_per_mitosis!r}"
            )
        min_imposters_per_mitosis = int(min_imposters_per_mitosis)
        artefact_set = art.resolve_artefacts(artefacts)
        if tissue_scale_um <= 0:
            raise ValueError(f"tissue_scale_um must be positive µm, got {tissue_scale_um!r}")
        seed = int(seed)
        rate = mitoses_per_mm2 / tumour_fraction if tumour_fraction > 0 else 0.0
        ratio = imposters_per_mitosis if imposters_per_mm2 is None else 1.0
        limit = c.max_rare_rate() * tumour_fraction / max(1.0, ratio)
        if mitoses_per_mm2 > limit:
            raise ValueError(
                f"mitoses_per_mm2={mitoses_per_mm2:g} is more than this layout holds; "
                f"use at most {limit:.0f} (or raise tumour_fraction)"
            )
        layout = c.Layout(
            seed,
            float(tissue_scale_um),
            c.threshold_for_fraction(tissue_fraction),
            c.threshold_for_fraction(tumour_fraction),
            rate,
            float(imposters_per_mitosis),
            None
            if imposters_per_mm2 is None
            else float(imposters_per_mm2) / tumour_fraction
            if tumour_fraction > 0
            else 0.0,
            min_imposters_per_mitosis,
            (int(width) * float(mpp), int(height) * float(mpp))
            if min_imposters_per_mitosis
            else None,
            artefact_set,
        )
        return cls(
            int(width),
            int(height),
            float(mpp),
            seed,
            resolve_stain(stain, seed),
            layout,
            float(tumour_fraction),
        )

    # -- objects and truth -------------------------------------------------
    def objects(self, box_um: tuple[float, float, float, float]) -> c.Objects:
        """Everything drawn whose centre lies in ``box_um`` (x0, y0, x1, y1 µm)."""
        x0, y0, x1, y1 = box_um
        b = _BLOCK_UM
        parts = [
            _block_objects(self.layout, bx, by)
            for by in range(math.floor(y0 / b), math.floor(y1 / b) + 1)
            for bx in range(math.floor(x0 / b), math.floor(x1 / b) + 1)
        ]
        objs = c.Objects.concat(parts)
        return objs.take((objs.x >= x0) & (objs.x < x1) & (objs.y >= y0) & (objs.y < y1))

    def truth(self, box: tuple[float, float, float, float] | None = None) -> GroundTruth:
        """Mitotic figures and look-alikes whose centres lie in the level-0 box (px), and the
        artefacts whose polygons reach into it.

        ``box`` ``(x, y, w, h)`` defaults to the whole slide. Cost grows with the
        box area (about a second per 100 mm² of slide on one core).
        """
        x, y, w, h = box if box is not None else (0, 0, self.width, self.height)
        m = self.mpp
        box_um = (x * m, y * m, (x + w) * m, (y + h) * m)
        objs = rare_objects(self.layout, box_um)
        order = np.lexsort((objs.x, objs.y))
        objs = objs.take(order)
        pts = np.stack([objs.x / m, objs.y / m], axis=1).reshape(-1, 2)
        mit = np.isin(objs.kind, c.MITOTIC_KINDS)
        names = np.array([c.KIND_NAMES.get(int(k), "") for k in objs.kind], dtype=object)
        found: tuple[art.Artefact, ...] = ()
        if self.layout.artefacts is not None:
            placed = art.place(self.layout, box_um, functools.partial(rare_objects, self.layout))
            frame = shapely.box(x, y, x + w, y + h)
            found = tuple(
                art.Artefact(kind, poly / m, detail)
                for kind, poly, detail in art.outlines(self.layout, placed)
                if shapely.intersects(frame, shapely.Polygon(poly / m))
            )
        return GroundTruth(
            pts[mit],
            names[mit].astype(str),
            pts[~mit],
            names[~mit].astype(str),
            m,
            (float(x), float(y), float(w), float(h)),
            artefacts=found,
            mitosis_free=self.layout.mitoses_per_mm2_tumour == 0,
        )

    # -- pixels ---------------------------------------------------------------
    def render(self, x: int, y: int, w: int, h: int, downsample: float = 1.0) -> np.ndarray:
        """RGB uint8 ``(h, w, 3)`` of the box at ``(x, y)`` in px of a level with ``downsample``.

        Pixel ``(X, Y)`` of that level covers level-0 px ``[X * downsample, (X + 1) * downsample)``.
        """
        if w <= 0 or h <= 0:
            raise ValueError(f"render box must have positive size, got {w} x {h} px")
        ds = float(downsample)
        if self.layout.artefacts is not None:
            return self._render_with_artefacts(x, y, w, h, ds)
        hem, eos = self._stain_maps(x, y, w, h, ds)
        grain = self._grain(x, y, w, h)
        return beer_lambert(hem, eos, self.stain, grain)

    def _render_with_artefacts(self, x: int, y: int, w: int, h: int, ds: float) -> np.ndarray:
        mpp_r = self.mpp * ds
        rare = functools.partial(rare_objects, self.layout)
        placed = art.place(
            self.layout, (x * mpp_r, y * mpp_r, (x + w) * mpp_r, (y + h) * mpp_r), rare
        )
        m = art.defocus_margin(placed, mpp_r)
        if m:
            x0, y0, x1, y1 = x - m, y - m, x + w + m, y + h + m
            placed = art.place(self.layout, (x0 * mpp_r, y0 * mpp_r, x1 * mpp_r, y1 * mpp_r), rare)
        frame = art.Frame(x - m, y - m, w + 2 * m, h + 2 * m, mpp_r)
        hem, eos = self._stain_maps(frame.x, frame.y, frame.w, frame.h, ds)
        rgb = art.paint(self.layout, placed, frame, hem, eos, self.stain, mpp_r, blur=m > 0)
        if m:
            rgb = rgb[m : m + h, m : m + w]
        rgb += self._grain(x, y, w, h)[..., None]
        rgb += 0.5
        np.clip(rgb, 0, 255, out=rgb)
        return rgb.astype(np.uint8)

    def _stain_maps(
        self, x: int, y: int, w: int, h: int, ds: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Haematoxylin and eosin amounts ``(h, w)`` float32 of a box of the level at ``ds``."""
        mpp_r = self.mpp * ds
        detail = mpp_r <= DETAIL_MPP
        eos_base, hem_cyto, *more = self._smooth_fields(x, y, w, h, ds, detail)
        seed = self.seed
        theta = 2 * np.pi * float(c.uniform(seed, 300)[0])

        cols, rows = np.arange(x, x + w), np.arange(y, y + h)
        cyto = c.CYTO.grid(seed, cols, rows, mpp_r) * c.CYTO.fade(mpp_r)
        cells = c.CELLS.grid(seed, cols, rows, mpp_r) * c.CELLS.fade(mpp_r)
        membrane = np.clip(1.0 - np.abs(cells) * 2.5, 0.0, 1.0)
        hem = hem_cyto * (1.0 + 0.2 * cyto + 0.25 * cells - 0.5 * membrane)
        eos = eos_base * (1.0 + 0.08 * cyto + 0.1 * cells + 0.35 * membrane)
        if detail and mpp_r < 1.5:
            fibre_w, warp = more
            table = c.FIBRES.table(seed, mpp_r, theta)
            shift = np.round(warp / mpp_r).astype(np.int64)
            shift += (rows % c.TABLE_SIZE)[:, None]
            shift %= c.TABLE_SIZE
            shift *= c.TABLE_SIZE
            shift += (cols % c.TABLE_SIZE)[None, :]
            fib = table.ravel()[shift]
            eos += fibre_w * fib * c.FIBRES.fade(mpp_r)
        if detail:
            nuc = self._draw_objects(x, y, w, h, ds, theta)
            halo = nuc["halo"]
            keep = 1.0 - halo
            hem *= keep
            eos *= keep
            eos += nuc["eos"]
            fine = c.CHROM_FINE.grid(seed, cols, rows, mpp_r) * c.CHROM_FINE.fade(mpp_r)
            tex = 1.0 + nuc["tf"] * fine
            tex += nuc["tc"] * nuc["cc"]
            np.maximum(tex, 0.0, out=tex)
            hem += nuc["hem"] * tex
        else:
            cover, tumour_cover = more
            t_nuc, s_nuc = _MEAN_NUCLEAR_OD
            hem += tumour_cover * (t_nuc - s_nuc) + cover * s_nuc
        return hem, eos

    def _smooth_fields(
        self, x: int, y: int, w: int, h: int, ds: float, detail: bool
    ) -> list[np.ndarray]:
        """Slowly varying maps on a coarse absolute sub-grid, interpolated to every pixel.

        Eosin and cytoplasm haematoxylin, then with ``detail`` fibre contrast and
        fibre warp (µm), without it the stain cover and the tumour cover (for
        the mean nuclear colour).
        """
        mpp_r = self.mpp * ds
        k = max(1, int(round((_COARSE_STEP_UM if detail else _COARSE_STEP_COARSE_UM) / mpp_r)))
        cx0, cy0 = (x // k) * k, (y // k) * k
        cx = np.arange(cx0, x + w + k, k) if k > 1 else np.arange(x, x + w)
        cy = np.arange(cy0, y + h + k, k) if k > 1 else np.arange(y, y + h)
        scale = ds * self.mpp
        xs, ys = (cx + 0.5) * scale, (cy + 0.5) * scale
        lay, seed = self.layout, self.seed
        fine = 2.0 * k * scale  # µm: octaves finer than two samples are left out

        def field(noise: c.Noise) -> np.ndarray:
            return noise.grid(seed, xs, ys, fine)

        tis = c.tissue_alpha(field(c.tissue_noise(lay.tissue_scale_um)), lay.tissue_threshold)
        tum = c.tumour_weight(field(c.REGION), lay.tumour_threshold)
        lum = c.lumen_weight(field(c.LUMEN)) * tum
        cover = tis * (1.0 - lum) * c.faint_gain(field(c.FAINT))
        eos_var = 1.0 + 0.25 * field(c.EOSIN)
        stroma = 1.0 - tum
        maps = [
            cover * eos_var * (0.42 * stroma + 0.3 * tum),  # eosin of stroma and cytoplasm
            cover * (0.02 * stroma + 0.2 * tum),  # haematoxylin tint of cytoplasm
        ]
        if detail:
            maps += [
                cover * stroma * 0.13 * np.clip(1.0 + field(c.FIBRE_AMP), 0, 2),
                6.0 * field(c.WARP),
            ]  # fibre contrast; waviness in µm
        else:
            maps += [cover, cover * tum]
        fields = np.stack(maps).astype(np.float32)
        if k == 1:
            return list(fields)
        fx = np.arange(x, x + w) - cx0
        fy = np.arange(y, y + h) - cy0
        jx, jy = fx // k, fy // k
        tx = ((fx % k) / k).astype(np.float32)
        ty = ((fy % k) / k).astype(np.float32)[:, None]
        rows = fields[:, :, jx] * (1 - tx) + fields[:, :, jx + 1] * tx
        out = rows[:, jy] * (1 - ty)
        out += rows[:, jy + 1] * ty
        return list(out)

    def _draw_objects(self, x, y, w, h, ds, theta) -> dict[str, np.ndarray]:
        mpp_r = self.mpp * ds
        scale = ds * self.mpp
        reach = c.MAX_RADIUS_UM
        box_um = (
            x * scale - reach,
            y * scale - reach,
            (x + w) * scale + reach,
            (y + h) * scale + reach,
        )
        objs = self.objects(box_um)
        maps = {name: np.zeros((h, w), np.float32) for name in ("hem", "tf", "tc", "halo", "eos")}
        cc = c.CHROM_COARSE.grid(
            self.seed, np.arange(x, x + w), np.arange(y, y + h), mpp_r
        ) * c.CHROM_COARSE.fade(mpp_r)
        maps["cc"] = cc
        edge = max(0.45, 0.6 * mpp_r)  # µm: blur of object outlines
        for kind in np.unique(objs.kind):
            shape, half = c.SHAPES[int(kind)]
            sel = objs.take(objs.kind == kind)
            n = int(math.ceil(half / mpp_r))
            size = 2 * n + 1
            ox = np.round(sel.x / scale - 0.5).astype(np.int64) - n - x
            oy = np.round(sel.y / scale - 0.5).astype(np.int64) - n - y
            ar = np.arange(size)
            du = ((ox[:, None] + ar + x + 0.5) * scale - sel.x[:, None]).astype(np.float32)
            dv = ((oy[:, None] + ar + y + 0.5) * scale - sel.y[:, None]).astype(np.float32)
            angle = 2 * np.pi * sel.params[:, 0]
            if kind == c.FIBROBLAST:
                angle = theta + (sel.params[:, 0] - 0.5) * 0.6
            ca = np.cos(angle).astype(np.float32)[:, None, None]
            sa = np.sin(angle).astype(np.float32)[:, None, None]
            U = du[:, None, :] * ca + dv[:, :, None] * sa
            V = dv[:, :, None] * ca - du[:, None, :] * sa
            gy = np.clip(oy[:, None] + ar, 0, h - 1)
            gx = np.clip(ox[:, None] + ar, 0, w - 1)
            ccp = cc[gy[:, :, None], gx[:, None, :]]
            patches = shape(sel.params, U, V, ccp, edge)
            gain = sel.gain.astype(np.float32)[:, None, None]
            for name in ("hem", "eos"):
                if name in patches:
                    patches[name] = patches[name] * gain
            for i in range(len(sel)):
                r0, c0 = oy[i], ox[i]
                a0, b0 = max(r0, 0), max(c0, 0)
                a1, b1 = min(r0 + size, h), min(c0 + size, w)
                if a1 <= a0 or b1 <= b0:
                    continue
                for name, patch in patches.items():
                    dst = maps[name][a0:a1, b0:b1]
                    np.maximum(dst, patch[i, a0 - r0 : a1 - r0, b0 - c0 : b1 - c0], out=dst)
        return maps

    def _grain(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        table = _grain_table(self.seed)
        return table[np.ix_(np.arange(y, y + h) % _GRAIN_TABLE, np.arange(x, x + w) % _GRAIN_TABLE)]

    def render_image(self) -> np.ndarray:
        """The whole level 0 as one ``(height, width, 3)`` uint8 array, rendered in blocks."""
        out = np.empty((self.height, self.width, 3), np.uint8)
        for y0 in range(0, self.height, _BLOCK):
            for x0 in range(0, self.width, _BLOCK):
                bw, bh = min(_BLOCK, self.width - x0), min(_BLOCK, self.height - y0)
                out[y0 : y0 + bh, x0 : x0 + bw] = self.render(x0, y0, bw, bh)
        return out


@functools.lru_cache(maxsize=512)
def _block_objects(layout: c.Layout, bx: int, by: int) -> c.Objects:
    """All objects centred in block ``(bx, by)`` of ``_BLOCK_UM`` µm (cached: tiles share blocks)."""
    b = _BLOCK_UM
    x0, y0, x1, y1 = bx * b, by * b, (bx + 1) * b, (by + 1) * b
    gap = 8.0  # µm: a normal nucleus this close to a figure gives way to it
    rare = rare_objects(layout, (x0 - gap, y0 - gap, x1 + gap, y1 + gap))
    nuclei = c.cell_nuclei(layout, (x0, y0, x1, y1))
    if len(rare) and len(nuclei):
        d2 = (nuclei.x[:, None] - rare.x[None, :]) ** 2 + (nuclei.y[:, None] - rare.y[None, :]) ** 2
        nuclei = nuclei.take(~(d2 < gap * gap).any(axis=1))
    rare = rare.take((rare.x >= x0) & (rare.x < x1) & (rare.y >= y0) & (rare.y < y1))
    return c.Objects.concat([nuclei, rare])


def rare_objects(layout: c.Layout, box: tuple[float, float, float, float]) -> c.Objects:
    """Mitotic figures and look-alikes centred in ``box`` (x0, y0, x1, y1 µm), all rules applied.

    On top of :func:`.content.rare_objects`: each figure's companions
    (``min_imposters_per_mitosis``; a figure that cannot place them all is
    dropped with them), and nothing where a torn edge took the tissue away.
    """
    n = layout.min_imposters_per_mitosis
    if layout.artefacts is None and n == 0:
        return c.rare_objects(layout, box)
    x0, y0, x1, y1 = box
    reach = c.COMPANION_REACH_UM if n else 0.0
    usable = None
    if layout.artefacts is not None:
        r = 2 * reach
        tears = art.tear_sites(layout, (x0 - r, y0 - r, x1 + r, y1 + r))
        if len(tears):

            def usable(px: np.ndarray, py: np.ndarray) -> np.ndarray:
                return art.tear_keep_points(layout, tears, px, py) >= 0.5

    figs = c.rare_objects(layout, (x0 - reach, y0 - reach, x1 + reach, y1 + reach), imposters=False)
    if usable is not None:
        figs = figs.take(usable(figs.x, figs.y))
    comps, _, complete = c.companions(layout, figs, usable)
    figs = figs.take(complete)
    imps = c.rare_objects(layout, box, figures=False)
    if usable is not None:
        imps = imps.take(usable(imps.x, imps.y))
    figs = figs.take(c._in_box(figs.x, figs.y, box))
    comps = comps.take(c._in_box(comps.x, comps.y, box))
    return c.Objects.concat([figs, imps, comps])


@functools.lru_cache(maxsize=8)
def _grain_table(seed: int) -> np.ndarray:
    """Sensor noise in grey levels, tiled over the slide with period 256 px."""
    rng = np.random.default_rng([seed, 0x6A41])
    return rng.normal(0, 1.6, (_GRAIN_TABLE, _GRAIN_TABLE)).astype(np.float32)
