"""Draw docs/images/synthetic-artefacts.png: each synthetic artefact beside a real one.

Real crops come from the sample data (``wsimito.data.fetch``): the TCGA slide
(no mpp in the file; read as if 0.5 µm/px, so its scale is approximate), the
tiatoolbox H&E patch (about 0.25 µm/px) and, for pen ink only, the CMU sample,
which is looked at here and used for nothing else.

Run: WSIMITO_DATA_DIR=../shared/data python scripts/render_synthetic_artefacts.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import wsimito
from wsimito.data import fetch
from wsimito.synthetic import Artefacts, virtual_slide

TILE = 200  # px per crop in the picture
LABEL = 22  # px of caption above each pair
OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "synthetic-artefacts.png"

# kind -> (Artefacts for a synthetic slide, crop side in µm, seed, needs tissue around it)
SYNTHETIC = {
    "fold": (Artefacts(folds_per_mm2=3.0), 450.0, 1, True),
    "ink": (Artefacts(ink_per_mm2=0.5, ink_colours=("green",)), 500.0, 3, False),
    "dust": (Artefacts(dust_per_mm2=60.0), 70.0, 4, True),
    "fibre": (Artefacts(fibres_per_mm2=10.0), 220.0, 2, True),
    "out of focus": (Artefacts(blur_per_mm2=2.0), 160.0, 6, True),
    "torn edge": (Artefacts(tears_per_mm2=8.0), 450.0, 1, False),
    "vessel": (Artefacts(rbc_groups_per_mm2=80.0, rbc_per_group=(8, 30)), 90.0, 5, True),
    "air bubble": (Artefacts(bubbles_per_mm2=2.0), 300.0, 3, True),
}
# kind -> (sample file, level-0 box x, y, w, h); None: no example in the sample data
REAL = {
    "fold": ("slides/tcga-cr-7395-01a-01-ts1.svs", (0, 1600, 400, 400)),
    "ink": ("slides/cmu-1-small-region.svs", (1780, 1230, 320, 320)),
    "dust": ("slides/tcga-cr-7395-01a-01-ts1.svs", (3795, 548, 60, 60)),
    "fibre": None,
    "out of focus": ("slides/tcga-cr-7395-01a-01-ts1.svs", (3968, 3200, 256, 256)),
    "torn edge": ("slides/tcga-cr-7395-01a-01-ts1.svs", (150, 1300, 400, 400)),
    "vessel": ("images/he-target-tiatoolbox.png", (170, 280, 200, 200)),
    "air bubble": ("slides/tcga-cr-7395-01a-01-ts1.svs", (2730, 2377, 400, 400)),
}
CAPTION = {"vessel": "red blood cells", "out of focus": "out of focus"}


def _synthetic(kind: str) -> np.ndarray:
    arts, side_um, seed, tissue = SYNTHETIC[kind]
    kw = {"seed": seed, "stain": "random", "tissue_fraction": 0.6, "mpp": 0.25}
    slide = virtual_slide(40_000, 40_000, artefacts=arts, **kw)
    side = int(side_um / 0.25)
    found = [a for a in slide.ground_truth((8000, 8000, 24_000, 24_000)).artefacts]
    found = [a for a in found if a.kind == kind]
    if kind == "fold":  # the widest first
        found.sort(key=lambda a: -float(np.ptp(a.polygon @ _normal(a), axis=0)))
    for art in found:
        cx, cy = art.polygon.mean(axis=0)
        if kind in ("ink", "torn edge"):  # show the edge of a big artefact
            cx, cy = art.polygon[len(art.polygon) // 4]
        crop = slide.read_region((int(cx - side / 2), int(cy - side / 2)), 0, (side, side))
        chroma = crop.max(axis=2).astype(int) - crop.min(axis=2)
        if not tissue or (chroma > 40).mean() > 0.5:
            return np.asarray(Image.fromarray(crop).resize((TILE, TILE), Image.Resampling.LANCZOS))
    raise RuntimeError(f"no {kind} with tissue around it; try another seed")


def _normal(art) -> np.ndarray:
    """Unit vector across a band-shaped polygon (its shortest principal axis)."""
    xy = art.polygon - art.polygon.mean(axis=0)
    return np.linalg.eigh(xy.T @ xy)[1][:, 0]


def _real(kind: str) -> np.ndarray:
    if REAL[kind] is None:
        img = Image.new("RGB", (TILE, TILE), (235, 235, 235))
        ImageDraw.Draw(img).text(
            (12, TILE // 2 - 12), "no real example\nin the sample data", fill=0
        )
        return np.asarray(img)
    name, (x, y, w, h) = REAL[kind]
    with wsimito.open_slide(fetch(name), mpp=0.5 if name.endswith("ts1.svs") else 0.25) as s:
        crop = s.read_region((x, y), 0, (w, h))
    return np.asarray(Image.fromarray(crop).resize((TILE, TILE), Image.Resampling.LANCZOS))


def main() -> None:
    kinds = list(SYNTHETIC)
    per_row = 4
    pair_w = 2 * TILE + 4
    width = per_row * pair_w + (per_row - 1) * 16
    rows = (len(kinds) + per_row - 1) // per_row
    height = rows * (TILE + LABEL) + (rows - 1) * 12
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, kind in enumerate(kinds):
        x0 = (i % per_row) * (pair_w + 16)
        y0 = (i // per_row) * (TILE + LABEL + 12)
        draw.text((x0 + 2, y0 + 4), f"{CAPTION.get(kind, kind)}: synthetic | real", fill=0)
        sheet.paste(Image.fromarray(_synthetic(kind)), (x0, y0 + LABEL))
        sheet.paste(Image.fromarray(_real(kind)), (x0 + TILE + 4, y0 + LABEL))
    sheet.save(OUT, optimize=True)  # full colour: the comparison is about colour
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
