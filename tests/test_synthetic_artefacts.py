"""Real-slide artefacts of synthetic slides, look-alike-rich and mitosis-free slides.

Each artefact is checked against an artefact-free render of the same slide:
pixels change only inside the polygons the ground truth gives, and inside
them they change the way the artefact should (ink adds its colour, a fold
darkens, blur removes fine detail, a tear leaves glass, ...).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import shapely
from PIL import Image, ImageDraw
from scipy import ndimage

import wsimito
from wsimito.slide.openslide_backend import OpenSlideBackend
from wsimito.slide.slide import Slide
from wsimito.synthetic import (
    ARTEFACT_KINDS,
    ARTEFACT_PRESETS,
    INK_OD,
    Artefacts,
    make_slide,
    virtual_slide,
    write_slide,
)
from wsimito.synthetic.render import Scene

# Every kind several times in a 1600 x 1600 px (0.16 mm²) image.
DENSE_ARTEFACTS = Artefacts(
    folds_per_mm2=4.0,
    ink_per_mm2=0.8,
    dust_per_mm2=60.0,
    fibres_per_mm2=10.0,
    blur_per_mm2=3.0,
    tears_per_mm2=12.0,
    rbc_groups_per_mm2=120.0,
    bubbles_per_mm2=3.0,
    rbc_per_group=(1, 30),
)
SLIDE = {
    "seed": 2,  # a seed whose 1600 px image holds every kind
    "mpp": 0.25,
    "stain": "standard",
    "tissue_fraction": 0.6,
    "mitoses_per_mm2": 150.0,
}
SIZE = 1600


@pytest.fixture(scope="module")
def pair():
    """The dense-artefact image, its truth, and the same slide without artefacts."""
    image, truth = make_slide(SIZE, SIZE, artefacts=DENSE_ARTEFACTS, **SLIDE)
    plain, plain_truth = make_slide(SIZE, SIZE, **SLIDE)
    return image, truth, plain, plain_truth


def _mask(polygons, shape) -> np.ndarray:
    """Pixels whose centres lie inside any of the level-0 polygons (PIL fills the outline
    pixels too; the polygons keep a margin of a few px around what they enclose)."""
    img = Image.new("1", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(img)
    frame = shapely.box(-2, -2, shape[1] + 2, shape[0] + 2)
    for poly in polygons:
        clipped = shapely.Polygon(poly).intersection(frame)
        for part in getattr(clipped, "geoms", [clipped]):
            if part.is_empty or part.geom_type != "Polygon":
                continue
            xy = np.asarray(part.exterior.coords) - 0.5  # PIL puts pixel centres on integers
            draw.polygon([tuple(v) for v in xy], fill=1)
    return np.asarray(img, dtype=bool)


def _od(img: np.ndarray, background) -> np.ndarray:
    """Optical density per channel relative to the glass colour."""
    return -np.log10(np.maximum(img.astype(float), 1.0) / np.asarray(background, float))


def _luminance(img: np.ndarray) -> np.ndarray:
    return img.astype(float) @ np.array([0.299, 0.587, 0.114])


def _around(kind: str, artefacts: Artefacts, pick=None, mpp: float = 0.25, **kw):
    """The smallest artefact of ``kind`` in the middle of a large virtual slide, the slide
    with and without artefacts, and the level-0 box around the artefact:
    ``(artefact, box, slide, plain)``."""
    kw = {"seed": 3, "stain": "standard", "tissue_fraction": 0.5, **kw}
    slide = virtual_slide(40_000, 40_000, mpp=mpp, artefacts=artefacts, **kw)
    plain = virtual_slide(40_000, 40_000, mpp=mpp, **kw)
    found = [a for a in slide.ground_truth((12_000, 12_000, 16_000, 16_000)).artefacts]
    found = [a for a in found if a.kind == kind and (pick is None or pick(a))]
    assert found, kind
    art = min(found, key=lambda a: np.ptp(a.polygon, axis=0).max())
    (x0, y0), (x1, y1) = np.floor(art.polygon.min(axis=0)), np.ceil(art.polygon.max(axis=0))
    return art, (int(x0), int(y0), int(x1 - x0), int(y1 - y0)), slide, plain


def _read(slide, box) -> np.ndarray:
    return slide.read_region(box[:2], 0, box[2:])


def _local_mask(art, box) -> np.ndarray:
    poly = art.polygon - np.array(box[:2], float)
    return _mask([poly], (box[3], box[2]))


# -- the default is unchanged ----------------------------------------------------
def test_no_artefacts_renders_exactly_the_plain_slide():
    kw = {**SLIDE, "seed": 5}
    plain, truth = make_slide(700, 500, **kw)
    for spec in ("none", Artefacts(), ARTEFACT_PRESETS["none"]):
        image, t = make_slide(700, 500, artefacts=spec, **kw)
        assert np.array_equal(image, plain)
        assert np.array_equal(t.mitoses, truth.mitoses) and t.artefacts == ()
    slide = virtual_slide(700, 500, artefacts="none", **kw)
    assert np.array_equal(slide.read_region((0, 0), 0, (700, 500)), plain)


# -- where artefacts act ---------------------------------------------------------------
def test_every_kind_appears_and_changes_pixels_only_inside_its_polygons(pair):
    image, truth, plain, _ = pair
    kinds = set(truth.artefact_kinds)
    assert kinds == set(ARTEFACT_KINDS)
    changed = (image != plain).any(axis=2)
    inside = _mask([a.polygon for a in truth.artefacts], changed.shape)
    assert changed.sum() > 0.05 * changed.size
    assert not (changed & ~inside).any()
    for kind in kinds - {"vessel"}:  # a vessel's lumen is listed with its red cells
        own = _mask([a.polygon for a in truth.artefacts if a.kind == kind], changed.shape)
        assert (changed & own).sum() > 50, kind


def test_ink_dust_and_fibres_only_darken():
    arts = DENSE_ARTEFACTS.only("ink", "dust", "fibre")
    image, truth = make_slide(SIZE, SIZE, artefacts=arts, **SLIDE)
    plain, _ = make_slide(SIZE, SIZE, **SLIDE)
    assert set(truth.artefact_kinds) == {"ink", "dust", "fibre"}
    assert (image <= plain).all()
    assert (image < plain).any(axis=2).sum() > 10_000


def _core(artefact, erode_px: float) -> shapely.Polygon:
    return shapely.Polygon(artefact.polygon).buffer(-erode_px)


@pytest.mark.parametrize("colour", sorted(INK_OD))
def test_ink_adds_its_own_colour(colour):
    kw = {"seed": 3, "stain": "standard", "tissue_fraction": 0.5}
    arts = Artefacts(ink_per_mm2=0.5, ink_colours=(colour,))
    slide = virtual_slide(40_000, 40_000, artefacts=arts, **kw)
    plain = virtual_slide(40_000, 40_000, **kw)
    inks = [a for a in slide.ground_truth((10_000, 10_000, 20_000, 20_000)).artefacts]
    assert inks and {a.detail for a in inks} == {colour}
    core = _core(inks[0], 40 / 0.25)  # 40 µm inside the outline: always ink
    x, y = (int(v) for v in core.representative_point().coords[0])
    box = (x - 200, y - 200, 400, 400)
    img = slide.read_region(box[:2], 0, box[2:])
    ref = plain.read_region(box[:2], 0, box[2:])
    cols, rows = np.meshgrid(np.arange(400) + box[0] + 0.5, np.arange(400) + box[1] + 0.5)
    sel = shapely.contains_xy(core, cols, rows)
    assert sel.sum() > 1000
    bg = slide.scene.stain.background
    added = (_od(img, bg) - _od(ref, bg))[sel].mean(axis=0)
    expected = np.asarray(INK_OD[colour]) / np.linalg.norm(INK_OD[colour])
    assert added @ expected / np.linalg.norm(added) > 0.97
    if colour in ("green", "blue"):  # greener than red: what detect_tissue calls ink
        assert (img[sel][:, 1] > img[sel][:, 0]).mean() > 0.95


def test_folds_double_the_stain_of_the_tissue_under_them(pair):
    arts = DENSE_ARTEFACTS.only("fold")
    image, truth = make_slide(SIZE, SIZE, artefacts=arts, **SLIDE)
    plain = pair[2]
    folds = _mask([a.polygon for a in truth.artefacts], image.shape[:2])
    bg = Scene.build(8, 8, **SLIDE).stain.background
    od, od0 = _od(image, bg).sum(axis=2), _od(plain, bg).sum(axis=2)
    tissue = folds & (od0 > 0.4) & (image != plain).any(axis=2)
    assert tissue.sum() > 5000
    ratio = np.median(od[tissue] / od0[tissue])
    assert 1.6 < ratio < 2.5
    assert _luminance(image)[tissue].mean() < _luminance(plain)[tissue].mean() - 20


def test_out_of_focus_regions_lose_fine_detail():
    kw = {"seed": 6, "stain": "standard", "tissue_fraction": 1.0}
    arts = Artefacts(blur_per_mm2=1.0)
    slide = virtual_slide(40_000, 40_000, artefacts=arts, **kw)
    plain = virtual_slide(40_000, 40_000, **kw)
    blurs = slide.ground_truth((10_000, 10_000, 20_000, 20_000)).artefacts
    assert blurs and {a.kind for a in blurs} == {"out of focus"}
    region = shapely.Polygon(blurs[0].polygon)
    x, y = (int(v) for v in region.centroid.coords[0])
    box = ((x - 150, y - 150), 0, (300, 300))  # the middle: the strongest blur

    def detail(img: np.ndarray) -> float:
        return float(ndimage.laplace(_luminance(img)).var())

    assert detail(slide.read_region(*box)) < 0.3 * detail(plain.read_region(*box))


def test_red_blood_cells_are_drawn_one_for_each_listed_cell():
    kw = {"seed": 8, "stain": "standard", "tissue_fraction": 1.0, "mitoses_per_mm2": 0.0}
    arts = Artefacts(rbc_groups_per_mm2=190.0, rbc_per_group=(1, 1))
    image, truth = make_slide(1600, 1600, artefacts=arts, **kw)
    plain, _ = make_slide(1600, 1600, **kw)
    cells = [a for a in truth.artefacts if a.kind == "red blood cell"]
    assert {a.kind for a in truth.artefacts} == {"red blood cell"} and len(cells) > 20
    changed = (image != plain).any(axis=2)
    labels, n = ndimage.label(changed)
    sizes = np.bincount(labels.ravel())[1:]
    # cells cut by the image border may fall below 40 px; touching cells merge
    assert abs(int((sizes >= 40).sum()) - len(cells)) <= max(2, len(cells) // 20)
    inside = _mask([a.polygon for a in cells], changed.shape) & changed
    red = image[inside].astype(float)
    red0 = plain[inside].astype(float)
    assert np.median(red[:, 0] - red[:, 1]) > np.median(red0[:, 0] - red0[:, 1]) + 40


def test_torn_edges_only_take_tissue_away_and_keep_no_figure_on_glass():
    arts = Artefacts(tears_per_mm2=4.0)
    tear, box, slide, plain = _around("torn edge", arts, mpp=0.5, mitoses_per_mm2=100.0)
    image, ref = _read(slide, box), _read(plain, box)
    changed = (image != ref).any(axis=2)
    assert changed.sum() > 2000
    assert not (changed & ~_local_mask(tear, box)).any()
    lum, lum0 = _luminance(image), _luminance(ref)
    assert np.median(lum[changed] - lum0[changed]) > 30  # towards glass
    region = (12_000, 12_000, 6_000, 6_000)
    truth, truth0 = slide.ground_truth(region), plain.ground_truth(region)
    assert len(truth.mitoses) < len(truth0.mitoses)  # figures where tissue went are gone
    local = slide.ground_truth(box)
    for pts in (local.mitoses, local.imposters):
        for x, y in (pts - np.array(box[:2])).astype(int):
            patch = lum[max(y - 5, 0) : y + 6, max(x - 5, 0) : x + 6]
            assert patch.min() < 120  # chromatin is there, not glass


def test_air_bubbles_have_a_dark_ring_and_a_bright_rim_on_glass():
    arts = Artefacts(bubbles_per_mm2=3.0)
    bubble, box, slide, plain = _around("air bubble", arts, tissue_fraction=0.0)
    image, ref = _read(slide, box), _read(plain, box)
    inside = _local_mask(bubble, box)
    lum, lum0 = _luminance(image), _luminance(ref)
    assert lum0[inside].min() > 200  # glass
    assert lum[inside].min() < 150  # the ring
    assert (lum[inside] > lum0[inside] + 3).sum() > 50  # the bright inner rim


# -- determinism, pieces, files ---------------------------------------------------------
def test_artefacts_are_fixed_by_the_seed():
    image, truth = make_slide(800, 800, artefacts=DENSE_ARTEFACTS, **SLIDE)
    again, truth2 = make_slide(800, 800, artefacts=DENSE_ARTEFACTS, **SLIDE)
    assert np.array_equal(image, again)
    assert len(truth.artefacts) >= 5 and truth.artefacts == truth2.artefacts
    other = Scene.build(800, 800, artefacts=DENSE_ARTEFACTS, **{**SLIDE, "seed": 3}).truth()
    assert [a.polygon.shape for a in other.artefacts] != [a.polygon.shape for a in truth.artefacts]


@pytest.mark.parametrize("downsample", [1, 4])
def test_boxes_rendered_in_pieces_match_the_whole_with_artefacts(downsample):
    scene = Scene.build(20_000, 20_000, artefacts=DENSE_ARTEFACTS, **SLIDE)
    x, y, w, h = 1_003, 2_011, 600, 420
    whole = scene.render(x, y, w, h, downsample)
    assert np.array_equal(whole[:, :237], scene.render(x, y, 237, h, downsample))
    assert np.array_equal(whole[:201, 237:], scene.render(x + 237, y, w - 237, 201, downsample))
    assert np.array_equal(
        whole[201:, 237:], scene.render(x + 237, y + 201, w - 237, h - 201, downsample)
    )
    kinds = set(
        scene.truth((x * downsample, y * downsample, w * downsample, h * downsample)).artefact_kinds
    )
    assert "out of focus" in kinds and len(kinds) >= 4


def test_file_and_virtual_slide_show_the_artefacts_of_make_slide(tmp_path):
    kw = {**SLIDE, "seed": 22}
    image, truth = make_slide(600, 520, artefacts="heavy", **kw)
    path = tmp_path / "slide.svs"
    written = write_slide(path, 600, 520, compression="deflate", artefacts="heavy", **kw)
    assert [a.kind for a in written.artefacts] == [a.kind for a in truth.artefacts]
    with Slide(OpenSlideBackend(str(path))) as slide:
        assert np.array_equal(slide.read_region((0, 0), 0, (600, 520)), image)
    virtual = virtual_slide(600, 520, artefacts="heavy", **kw)
    assert np.array_equal(virtual.read_region((0, 0), 0, (600, 520)), image)
    clone = pickle.loads(pickle.dumps(virtual))
    assert np.array_equal(clone.read_region((100, 80), 0, (200, 150)), image[80:230, 100:300])
    assert "wsimito.synthetic.artefacts" in virtual.properties


def test_coarse_levels_show_the_ink_of_level0():
    ink, _, slide, plain = _around("ink", Artefacts(ink_per_mm2=0.5))
    core = shapely.Polygon(ink.polygon).buffer(-400.0)  # 100 µm inside the stroke
    x, y = (int(v) // 8 * 8 for v in core.representative_point().coords[0])
    level = slide.level_downsamples.index(8.0)
    box = ((x - 256, y - 256), level, (64, 64))
    coarse = slide.read_region(*box).astype(float)
    fine = slide.read_region((x - 256, y - 256), 0, (512, 512)).astype(float)
    fine = fine.reshape(64, 8, 64, 8, 3).mean(axis=(1, 3))
    cols, rows = np.meshgrid(x - 256 + 8 * np.arange(64) + 4.0, y - 256 + 8 * np.arange(64) + 4.0)
    on = shapely.contains_xy(core, cols, rows)
    assert on.sum() > 200
    assert np.abs(coarse[on].mean(axis=0) - fine[on].mean(axis=0)).max() < 10
    without = plain.read_region(*box).astype(float)
    assert np.abs(coarse[on].mean(axis=0) - without[on].mean(axis=0)).max() > 30


# -- ground truth -------------------------------------------------------------------------
def test_artefact_at_names_the_artefact_under_each_point(pair):
    _, truth, _, _ = pair
    dust = next(a for a in truth.artefacts if a.kind == "dust")
    centre = dust.polygon.mean(axis=0)
    far = np.array([[-5_000.0, -5_000.0]])
    found = truth.artefact_at(np.vstack([centre, far]), kinds=["dust"])
    assert list(found) == ["dust", ""]
    assert truth.artefact_at(far, margin_px=10_000.0)[0] != ""
    part = truth.within((0, 0, 400, 400))
    assert all(a in truth.artefacts for a in part.artefacts)
    assert len(part.artefacts) < len(truth.artefacts)


def test_green_ink_is_not_tissue_for_detect_tissue():
    kw = {"seed": 3, "stain": "standard", "tissue_fraction": 0.4}
    arts = Artefacts(ink_per_mm2=0.3, ink_colours=("green",))
    slide = virtual_slide(24_000, 24_000, artefacts=arts, **kw)
    plain = virtual_slide(24_000, 24_000, **kw)
    tissue, glass = wsimito.detect_tissue(slide), ~wsimito.detect_tissue(plain).mask
    inks = shapely.union_all([shapely.Polygon(a.polygon) for a in slide.truth.artefacts])
    s = tissue.mpp / slide.mpp
    rows, cols = np.mgrid[0 : glass.shape[0], 0 : glass.shape[1]]
    on_glass = shapely.contains_xy(inks, (cols + 0.5) * s, (rows + 0.5) * s) & glass
    assert on_glass.sum() > 1000
    assert not tissue.mask[on_glass].any()


# -- look-alike-rich and mitosis-free slides ----------------------------------------------
def test_each_figure_gets_at_least_the_requested_look_alikes():
    scene = Scene.build(
        20_000,
        20_000,
        seed=2,
        tissue_fraction=0.5,
        mitoses_per_mm2=30.0,
        imposters_per_mitosis=0.0,
        min_imposters_per_mitosis=3,
    )
    truth = scene.truth()
    assert len(truth.mitoses) > 100
    assert len(truth.imposters) >= 3 * len(truth.mitoses)
    d = np.hypot(*(truth.mitoses[:, None, :] - truth.imposters[None, :, :]).transpose(2, 0, 1))
    near = (d <= 90.0 / 0.25 + 1e-6).sum(axis=1)
    assert (near >= 3).all()
    image, small = make_slide(
        1024,
        1024,
        seed=3,
        stain="standard",
        tissue_fraction=1.0,
        mitoses_per_mm2=200.0,
        min_imposters_per_mitosis=3,
    )
    assert len(small.imposters) >= 3 * len(small.mitoses) > 0
    lum = _luminance(image)
    dark = [
        lum[max(y - 8, 0) : y + 9, max(x - 8, 0) : x + 9].min()
        for x, y in small.imposters.astype(int)
    ]
    assert np.mean(np.array(dark) < 60) > 0.85  # drawn, as dark as figures


def test_mitosis_free_slides_have_look_alikes_but_no_figures():
    scene = Scene.build(
        20_000, 20_000, seed=2, tissue_fraction=0.5, mitoses_per_mm2=0.0, imposters_per_mm2=40.0
    )
    truth = scene.truth()
    assert truth.mitosis_free and len(truth.mitoses) == 0
    density = len(truth.imposters) / (truth.area_mm2 * 0.5)
    assert 25 < density < 60
    assert truth.within((0, 0, 5000, 5000)).mitosis_free
    assert not Scene.build(2000, 2000, seed=2).truth().mitosis_free


def test_bad_artefact_arguments_raise_with_a_fix():
    with pytest.raises(ValueError, match="dust_per_mm2"):
        Artefacts(dust_per_mm2=-1.0)
    with pytest.raises(ValueError, match="at most"):
        Artefacts(folds_per_mm2=100.0)
    with pytest.raises(ValueError, match="ink_colours"):
        Artefacts(ink_colours=("purple",))
    with pytest.raises(ValueError, match="rbc_per_group"):
        Artefacts(rbc_per_group=(5, 2))
    with pytest.raises(ValueError, match="realistic"):
        make_slide(64, 64, artefacts="lots")
    with pytest.raises(ValueError, match="kinds"):
        DENSE_ARTEFACTS.only("smudge")
    with pytest.raises(ValueError, match="min_imposters_per_mitosis"):
        make_slide(64, 64, min_imposters_per_mitosis=1.5)
    with pytest.raises(ValueError, match="imposters_per_mm2"):
        make_slide(64, 64, imposters_per_mm2=1e6)
