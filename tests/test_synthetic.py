"""Synthetic H&E slides: determinism, seamless tiles, files, virtual slides, ground truth."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from wsimito.slide.openslide_backend import OpenSlideBackend
from wsimito.slide.slide import Slide
from wsimito.slide.tiffslide_backend import TiffSlideBackend
from wsimito.synthetic import (
    IMPOSTERS_PER_MITOSIS,
    MITOTIC_DENSITY_MEAN,
    PRESETS,
    make_slide,
    virtual_slide,
    write_slide,
)
from wsimito.synthetic.render import Scene

# Dense figures so that small images hold enough of them.
DENSE = {
    "mpp": 0.25,
    "stain": "standard",
    "tissue_fraction": 1.0,
    "tumour_fraction": 0.9,
    "mitoses_per_mm2": 300.0,
}


def test_same_seed_gives_identical_pixels_and_points():
    a, ta = make_slide(768, 512, seed=7, **DENSE)
    b, tb = make_slide(768, 512, seed=7, **DENSE)
    assert np.array_equal(a, b)
    assert np.array_equal(ta.mitoses, tb.mitoses) and np.array_equal(ta.imposters, tb.imposters)
    assert list(ta.phases) == list(tb.phases)


def test_different_seeds_give_different_slides():
    a, ta = make_slide(768, 512, seed=1, **DENSE)
    b, tb = make_slide(768, 512, seed=2, **DENSE)
    assert np.abs(a.astype(int) - b).mean() > 10
    assert ta.mitoses.shape != tb.mitoses.shape or not np.allclose(ta.mitoses, tb.mitoses)


def test_random_stain_varies_with_seed_and_presets_differ_in_colour():
    scenes = [Scene.build(64, 64, seed=s) for s in range(4)]
    assert len({sc.stain for sc in scenes}) == 4
    means = [
        make_slide(256, 256, seed=3, **{**DENSE, "stain": name})[0].mean(axis=(0, 1))
        for name in ("standard", "pale", "dark")
    ]
    assert means[1].mean() > means[0].mean() > means[2].mean()  # pale is lighter, dark darker


@pytest.mark.parametrize("downsample", [1, 4])
def test_box_rendered_in_pieces_matches_box_rendered_whole(downsample):
    scene = Scene.build(20_000, 20_000, seed=5, **DENSE)
    x, y, w, h = 1_003, 2_011, 600, 420
    whole = scene.render(x, y, w, h, downsample)
    left = scene.render(x, y, 237, h, downsample)
    right_top = scene.render(x + 237, y, w - 237, 201, downsample)
    right_bottom = scene.render(x + 237, y + 201, w - 237, h - 201, downsample)
    assert np.array_equal(whole[:, :237], left)
    assert np.array_equal(whole[:201, 237:], right_top)
    assert np.array_equal(whole[201:, 237:], right_bottom)


def _luminance(img: np.ndarray) -> np.ndarray:
    return img.astype(float) @ np.array([0.299, 0.587, 0.114])


def _darkest_within(lum: np.ndarray, pts: np.ndarray, radius: int) -> np.ndarray:
    out = []
    for x, y in pts:
        xi, yi = int(round(x)), int(round(y))
        patch = lum[max(yi - radius, 0) : yi + radius + 1, max(xi - radius, 0) : xi + radius + 1]
        out.append(np.percentile(patch, 5))
    return np.array(out)


def test_ground_truth_points_lie_on_dark_nuclear_material():
    img, truth = make_slide(1024, 1024, seed=11, **DENSE)
    assert len(truth.mitoses) >= 5 and len(truth.imposters) >= 5
    lum = _luminance(img)
    # 2 µm around the centre; telophase centres sit between two masses up to 6 µm away
    radius = np.where(truth.phases == "telophase", 22, 8)
    fig = np.array(
        [_darkest_within(lum, p[None], r)[0] for p, r in zip(truth.mitoses, radius, strict=True)]
    )
    imp = _darkest_within(lum, truth.imposters, 8)
    random_pts = np.random.default_rng(0).uniform(0, 1024, (400, 2))
    background = _darkest_within(lum, random_pts, 8)
    dark = 40.0  # luminance (0-255) of condensed chromatin; cytoplasm and glass are far lighter
    assert (fig < dark).mean() > 0.85 and (imp < dark).mean() > 0.85
    assert (background < dark).mean() < 0.5
    assert set(truth.phases) <= {"prophase", "metaphase", "anaphase", "telophase"}


def test_look_alikes_are_as_dark_as_mitotic_figures():
    img, truth = make_slide(1536, 1536, seed=12, **DENSE)
    lum = _luminance(img)
    fig = _darkest_within(lum, truth.mitoses, 12)
    imp = _darkest_within(lum, truth.imposters, 12)
    assert abs(np.median(fig) - np.median(imp)) < 25  # darkness alone cannot tell them apart


def test_ground_truth_within_box_selects_points_inside():
    _, truth = make_slide(800, 600, seed=3, **DENSE)
    part = truth.within((100, 50, 400, 300))
    for pts, sub in ((truth.mitoses, part.mitoses), (truth.imposters, part.imposters)):
        expected = pts[
            (pts[:, 0] >= 100) & (pts[:, 0] < 500) & (pts[:, 1] >= 50) & (pts[:, 1] < 350)
        ]
        assert np.array_equal(sub, expected)
    assert len(part.phases) == len(part.mitoses)


@pytest.mark.parametrize("fmt", ["svs", "tiff"])
@pytest.mark.parametrize("backend", [OpenSlideBackend, TiffSlideBackend])
def test_written_lossless_slide_reads_back_with_mpp_levels_and_exact_pixels(tmp_path, fmt, backend):
    kw = {**DENSE, "mpp": 0.5, "seed": 21}
    image, truth = make_slide(1100, 700, **kw)
    path = tmp_path / f"slide.{fmt}"
    written = write_slide(path, 1100, 700, format=fmt, compression="deflate", tile_size=256, **kw)
    assert np.array_equal(written.mitoses, truth.mitoses)
    with Slide(backend(str(path))) as slide:
        assert slide.mpp == pytest.approx(0.5, rel=1e-4)
        dims = slide.level_dimensions
        assert dims[0] == (1100, 700)
        assert all(b == (a[0] // 2, a[1] // 2) for a, b in zip(dims, dims[1:], strict=False))
        assert max(dims[-1]) <= 256 < max(dims[-2])
        assert np.array_equal(slide.read_region((0, 0), 0, (1100, 700)), image)
        level1 = slide.read_region((0, 0), 1, dims[1])
        expected = image[:700, :1100].reshape(350, 2, 550, 2, 3).mean(axis=(1, 3))
        assert np.abs(level1 - expected).max() <= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary files left


@pytest.mark.parametrize("fmt", ["svs", "tiff"])
def test_written_jpeg_slide_is_close_to_rendered_image(tmp_path, fmt):
    kw = {**DENSE, "seed": 22}
    image, _ = make_slide(600, 520, **kw)
    path = tmp_path / f"slide.{fmt}"
    write_slide(
        path,
        600,
        520,
        format=fmt,
        compression="jpeg",
        quality=90,
        tile_size=512,
        downsample=4,
        **kw,
    )
    with Slide(OpenSlideBackend(str(path))) as slide:
        assert slide.mpp == pytest.approx(0.25, rel=1e-4)
        assert slide.level_dimensions == ((600, 520), (150, 130))
        diff = np.abs(slide.read_region((0, 0), 0, (600, 520)).astype(int) - image)
        assert diff.mean() < 4


def test_virtual_slide_level0_matches_make_slide_and_survives_pickle():
    kw = {**DENSE, "seed": 31}
    image, truth = make_slide(700, 500, **kw)
    slide = virtual_slide(700, 500, **kw)
    assert slide.mpp == 0.25
    assert np.array_equal(slide.read_region((0, 0), 0, (700, 500)), image)
    clone = pickle.loads(pickle.dumps(slide))
    assert np.array_equal(clone.read_region((123, 45), 0, (200, 150)), image[45:195, 123:323])
    assert np.array_equal(clone.truth.mitoses, truth.mitoses)


def test_virtual_slide_coarse_level_has_the_colour_of_averaged_level0():
    slide = virtual_slide(8192, 8192, seed=4, stain="standard", tissue_fraction=0.6)
    ds = 16
    level = slide.level_downsamples.index(float(ds))
    coarse = slide.read_region((0, 0), level, (512, 512)).astype(float)
    fine = (
        slide.read_region((2048, 2048), 0, (2048, 2048)).reshape(128, 16, 128, 16, 3).mean((1, 3))
    )
    assert np.abs(coarse[128:256, 128:256].mean((0, 1)) - fine.mean((0, 1))).max() < 12


def test_huge_virtual_slide_has_glass_and_enumerable_truth():
    slide = virtual_slide(100_000, 80_000, seed=1)
    assert slide.dimensions == (100_000, 80_000)
    assert max(slide.level_dimensions[-1]) <= 512
    thumb = slide.thumbnail(256).astype(float)
    glass = (thumb.min(axis=2) > 225).mean()
    assert 0.3 < glass < 0.8
    truth = slide.truth
    assert len(truth.mitoses) > 500
    box = (30_000, 20_000, 20_000, 15_000)
    assert np.array_equal(slide.ground_truth(box).mitoses, truth.within(box).mitoses)


def test_mitotic_density_and_look_alike_ratio_follow_midog_and_the_knob():
    scene = Scene.build(40_000, 40_000, seed=2, tissue_fraction=1.0)
    truth = scene.truth()
    density = len(truth.mitoses) / truth.area_mm2
    assert 0.7 * MITOTIC_DENSITY_MEAN < density < 1.3 * MITOTIC_DENSITY_MEAN
    ratio = len(truth.imposters) / len(truth.mitoses)
    assert 0.8 * IMPOSTERS_PER_MITOSIS < ratio < 1.25 * IMPOSTERS_PER_MITOSIS
    dense = Scene.build(40_000, 40_000, seed=2, tissue_fraction=1.0, mitoses_per_mm2=100).truth()
    assert 7 < len(dense.mitoses) / len(truth.mitoses) < 13
    phases, counts = np.unique(dense.phases, return_counts=True)
    assert set(phases) == {"prophase", "metaphase", "anaphase", "telophase"}
    assert counts.min() > 0.05 * counts.sum()


def test_bad_arguments_raise_with_a_fix():
    with pytest.raises(ValueError, match="pale"):
        make_slide(64, 64, stain="purple")
    with pytest.raises(ValueError, match="tissue_fraction"):
        make_slide(64, 64, tissue_fraction=1.5)
    with pytest.raises(ValueError, match="mitoses_per_mm2"):
        make_slide(64, 64, mitoses_per_mm2=50_000)
    with pytest.raises(ValueError, match="format"):
        write_slide("x.ndpi", 64, 64, format="ndpi")
    assert "standard" in PRESETS
