"""Tissue detection on real slides and on real slides with the artefacts scanners add."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from scipy import ndimage

import wsimito
from wsimito.slide import Slide
from wsimito.slide.array_backend import ArrayBackend
from wsimito.tissue import Tissue, detect_tissue

CMU = "slides/cmu-1-small-region.svs"
TCGA = "slides/tcga-cr-7395-01a-01-ts1.svs"
ROI = "images/he-target-tiatoolbox.png"
TCGA_MPP = 0.25  # the file has no mpp; it is a 40x-style Aperio scan


@pytest.fixture(scope="module")
def cmu(sample):
    return wsimito.open_slide(sample(CMU))


@pytest.fixture(scope="module")
def cmu_pixels(cmu):
    """Level 0 of the CMU sample, (h, w, 3) uint8 at 0.499 µm/px."""
    return cmu.read_region((0, 0), 0, cmu.dimensions)


@pytest.fixture(scope="module")
def cmu_tissue(cmu):
    return detect_tissue(cmu)


def _slide(pixels: np.ndarray, mpp: float) -> Slide:
    return Slide(ArrayBackend(pixels), mpp=mpp)


def _upsample(mask: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    return np.kron(mask, np.ones((factor, factor), dtype=bool))[: shape[0], : shape[1]]


def _clean(mask: np.ndarray, min_px: float) -> np.ndarray:
    """Drop pieces and fill holes smaller than ``min_px`` pixels."""
    labels, _ = ndimage.label(mask)
    mask = np.isin(labels, np.flatnonzero(np.bincount(labels.ravel()) >= min_px)) & mask
    labels, _ = ndimage.label(~mask)
    holes = np.bincount(labels.ravel()) < min_px
    holes[0] = False
    return mask | holes[labels]


def test_cmu_green_ink_is_not_tissue_and_the_tissue_is_found(cmu, cmu_tissue):
    # Reference at 2 µm/px, 4 x 4 fine pixels per 8 µm mask pixel. Ink: clearly coloured
    # (chroma > 30) and greener than red by 20 levels. An ink cell is a mask pixel at least
    # half covered by ink (marker strokes, not a fleck on tissue). H&E: chroma >= 20 and
    # redder than green.
    rows, cols = cmu_tissue.mask.shape
    s = cmu_tissue.scale
    fine = cmu.read((0, 0, cols * s, rows * s), mpp=2.0).astype(int)[: rows * 4, : cols * 4]
    chroma = fine.max(axis=2) - fine.min(axis=2)
    green_over_red = fine[..., 1] - fine[..., 0]
    ink = ((green_over_red > 20) & (chroma > 30)).reshape(rows, 4, cols, 4).mean(axis=(1, 3))
    ink_cells = ink >= 0.5
    assert ink_cells.sum() >= 20, "the sample's green ink should be in the reference"
    coarse = cmu.read((0, 0, cols * s, rows * s), mpp=8.0).astype(int)
    coarse_chroma = coarse.max(axis=2) - coarse.min(axis=2)
    assert np.mean(coarse_chroma[ink_cells] >= 25) > 0.8  # as coloured as tissue ...
    assert (ink_cells & cmu_tissue.mask).sum() <= 0.1 * ink_cells.sum()  # ... but not tissue
    he = ((chroma >= 20) & (green_over_red < 0)).reshape(rows, 4, cols, 4).mean(axis=(1, 3)) >= 0.5
    assert (he & cmu_tissue.mask).sum() > 0.95 * he.sum()
    assert 0.45 < cmu_tissue.area_mm2 < 0.8  # about 0.6 mm² of skin


def test_tcga_area_matches_a_reference_mask_from_its_colours(sample):
    slide = wsimito.open_slide(sample(TCGA), mpp=TCGA_MPP)
    tissue = detect_tissue(slide)
    # Reference at 2 µm/px (4x finer than the detection): a pixel is tissue when it is
    # pink or purple (chroma >= 15 and red above green); glass on this slide is white or
    # grey (chroma < 10) and never redder than green. Loose stroma has white gaps at this
    # scale, so close them with a 6 µm disk, then drop pieces and fill holes under
    # 10,000 µm² (2,500 px), as the detector's defaults do.
    width, height = slide.dimensions
    fine = slide.read((0, 0, width, height), mpp=2.0).astype(int)
    chroma = fine.max(axis=2) - fine.min(axis=2)
    coloured = (chroma >= 15) & (fine[..., 0] > fine[..., 1])
    disk = np.hypot(*np.mgrid[-3:4, -3:4]) <= 3
    reference = _clean(ndimage.binary_closing(coloured, structure=disk), 2500)
    reference_mm2 = reference.sum() * 2.0 * 2.0 * 1e-6
    assert reference_mm2 > 0.3
    assert tissue.area_mm2 == pytest.approx(reference_mm2, rel=0.10)


def test_all_white_image_has_no_tissue():
    tissue = detect_tissue(_slide(np.full((2000, 3000, 3), 255, np.uint8), mpp=0.5))
    assert tissue.is_empty and tissue.area_mm2 == 0
    assert len(tissue.polygons) == 0
    assert tissue.fraction((0, 0, 3000, 2000)) == 0


def test_neutral_glass_grey_background_noise_and_black_borders_are_not_tissue():
    rng = np.random.default_rng(0)
    glass = np.full((1500, 2000, 3), 205, np.uint8)
    glass[:, :700] = 240
    glass = np.clip(glass + rng.normal(0, 4, glass.shape), 0, 255).astype(np.uint8)
    glass[:120] = 0  # black scanner border
    glass[:, -60:] = 15
    assert detect_tissue(_slide(glass, mpp=0.5)).is_empty


def test_all_tissue_region_of_interest_is_all_tissue(sample):
    slide = wsimito.open_slide(sample(ROI), mpp=0.25)
    for method in ("otsu", "fixed"):
        tissue = detect_tissue(slide, method=method)
        assert tissue.mask.all(), method
        assert tissue.area_mm2 == pytest.approx(1000 * 1000 * 0.25**2 * 1e-6)


def test_all_tissue_image_at_fine_mpp_is_not_split_in_two(sample):
    # At 2 µm/px the ROI shows nuclei against pink cytoplasm: two tissue classes that Otsu
    # alone splits (it leaves about 7 % out here). Without hole filling only the few real
    # lumens (about 1 %) may stay out.
    slide = wsimito.open_slide(sample(ROI), mpp=0.25)
    tissue = detect_tissue(slide, mpp=2.0, min_object_um2=0, min_hole_um2=0)
    assert tissue.mask.mean() > 0.98


def test_tissue_touching_the_image_edge_is_kept(sample):
    tcga = wsimito.open_slide(sample(TCGA), mpp=TCGA_MPP)
    roi = tcga.read_region((1200, 1000), 0, (1600, 1600))  # inside the tumour
    pixels = np.full((1600, 3200, 3), 248, np.uint8)
    pixels[:, :1600] = roi
    tissue = detect_tissue(_slide(pixels, mpp=TCGA_MPP), mpp=4.0)  # 16 px per mask pixel
    assert tissue.mask[:, :99].mean() > 0.97  # left half, to the image's own edges
    assert not tissue.mask[:, 101:].any()


def test_black_border_and_grey_background_leave_the_tissue_area(cmu_pixels, cmu_tissue):
    h, w = cmu_pixels.shape[:2]
    bordered = np.zeros((h + 300, w + 300, 3), np.uint8)  # black scanner border on two sides
    bordered[300:, 300:] = cmu_pixels
    tissue = detect_tissue(_slide(bordered, mpp=cmu_tissue.slide_mpp))
    assert tissue.area_mm2 == pytest.approx(cmu_tissue.area_mm2, rel=0.02)
    assert tissue.fraction((0, 0, w + 300, 300)) == 0
    darker = (cmu_pixels * 0.82).astype(np.uint8)  # glass ~200 grey instead of ~245 white
    assert detect_tissue(_slide(darker, mpp=cmu_tissue.slide_mpp)).area_mm2 == pytest.approx(
        cmu_tissue.area_mm2, rel=0.05
    )


def test_bubbles_and_dust_on_the_glass_are_not_tissue(cmu_pixels, cmu_tissue):
    pixels = cmu_pixels.copy()
    mpp = cmu_tissue.slide_mpp

    def paint(cx: float, cy: float, radius: float, inner: float, colour: tuple[int, int, int]):
        """Paint the ring inner <= r < radius (level-0 px) around (cx, cy)."""
        y0, x0 = int(cy - radius), int(cx - radius)
        yy, xx = np.mgrid[y0 : int(cy + radius) + 1, x0 : int(cx + radius) + 1]
        r = np.hypot(xx - cx, yy - cy)
        pixels[yy[(r >= inner) & (r < radius)], xx[(r >= inner) & (r < radius)]] = colour

    paint(250, 1500, 100 / mpp, 92 / mpp, (90, 92, 95))  # a 200 µm air bubble, 8 µm dark rim
    rng = np.random.default_rng(1)
    for x, y, d in zip(
        rng.uniform(50, 400, 40), rng.uniform(1800, 2500, 40), rng.uniform(10, 30, 40), strict=True
    ):
        paint(x, y, d / 2 / mpp, 0, (40, 40, 40))  # dust: forty dark specks of 10-30 µm
    # no size filter, so that only colour decides
    sizes = dict(min_object_um2=0, min_hole_um2=0)
    before = detect_tissue(_slide(cmu_pixels, mpp=cmu_tissue.slide_mpp), **sizes)
    after = detect_tissue(_slide(pixels, mpp=cmu_tissue.slide_mpp), **sizes)
    assert not (after.mask & ~before.mask).any()


def test_faint_tissue_is_found_by_the_fixed_threshold(cmu_pixels, cmu_tissue):
    faint = (255 - (255 - cmu_pixels.astype(np.float64)) * 0.25).astype(np.uint8)  # 4x paler
    tissue = detect_tissue(
        _slide(faint, mpp=cmu_tissue.slide_mpp), method="fixed", chroma_threshold=6
    )
    overlap = (tissue.mask & cmu_tissue.mask).sum() / cmu_tissue.mask.sum()
    assert overlap > 0.9
    assert tissue.area_mm2 < 1.15 * cmu_tissue.area_mm2


@pytest.mark.parametrize("name, mpp", [(CMU, None), (TCGA, TCGA_MPP)])
def test_polygons_are_valid_and_match_the_area(sample, name, mpp):
    tissue = detect_tissue(wsimito.open_slide(sample(name), mpp=mpp))
    polygons = tissue.polygons
    assert len(polygons) > 0 and shapely.is_valid(polygons.geometry).all()
    assert all(g.geom_type == "Polygon" for g in polygons.geometry)
    area_mm2 = polygons.geometry.area.sum() * tissue.slide_mpp**2 * 1e-6
    assert area_mm2 == pytest.approx(tissue.area_mm2, rel=0.01)
    assert polygons["area_mm2"].sum() == pytest.approx(tissue.area_mm2, rel=1e-9)
    # the outline is the mask: mask pixel centres fall inside the polygons exactly when set
    s = tissue.scale
    rows, cols = np.mgrid[: tissue.mask.shape[0], : tissue.mask.shape[1]]
    cx, cy = (cols.ravel() + 0.5) * s, (rows.ravel() + 0.5) * s
    w, h = tissue.dimensions
    inside_slide = (cx < w) & (cy < h)
    union = shapely.union_all(polygons.geometry)
    hit = shapely.contains_xy(union, cx[inside_slide], cy[inside_slide])
    assert np.array_equal(hit, tissue.mask.ravel()[inside_slide])


def test_polygons_keep_holes():
    mask = np.zeros((30, 30), dtype=bool)
    mask[5:25, 5:25] = True
    mask[12:16, 12:16] = False
    tissue = Tissue(mask, mpp=8.0, slide_mpp=0.5, dimensions=(480, 480))
    (polygon,) = tissue.polygons.geometry
    assert len(polygon.interiors) == 1
    assert tissue.area_mm2 == pytest.approx((400 - 16) * 64 * 1e-6)


def test_otsu_threshold_is_otsu_on_square_root_chroma():
    from skimage.filters import threshold_otsu

    from wsimito.tissue import classify_tissue

    rng = np.random.default_rng(5)
    glass = rng.normal(4, 2, 6000)
    tissue = rng.normal(60, 25, 4000)
    chroma = np.clip(np.concatenate([glass, tissue]), 0, 200).astype(np.int64)
    # pink: red 250, green 250 - chroma, blue in between; never greener than red
    rgb = np.stack([np.full_like(chroma, 250), 250 - chroma, 250 - chroma // 2], axis=1)
    rgb = rgb.astype(np.uint8)[None]
    mask, t = classify_tissue(rgb)
    reference = threshold_otsu(np.sqrt(chroma.astype(np.float64))) ** 2  # tissue: above it
    assert 8 <= t <= 25 and abs(t - reference) <= 1.5
    assert np.array_equal(mask[0], chroma >= t)


def test_min_sizes_are_in_square_micrometres():
    mask = np.zeros((200, 200, 3), np.uint8) + 245
    mask[20:70, 20:70] = (200, 120, 170)  # 50 x 50 px at 2 µm = 10,000 µm²
    mask[100:110, 100:110] = (200, 120, 170)  # 400 µm²
    slide = _slide(mask, mpp=2.0)
    kept = detect_tissue(slide, mpp=2.0, min_object_um2=1000)
    assert kept.area_mm2 == pytest.approx(0.01)
    both = detect_tissue(slide, mpp=2.0, min_object_um2=100)
    assert both.area_mm2 == pytest.approx(0.0104)
    # the same µm² limit at another mask resolution gives the same answer
    assert detect_tissue(slide, mpp=4.0, min_object_um2=1000).area_mm2 == pytest.approx(0.01)


def test_fractions_are_exact_area_fractions_of_the_mask():
    rng = np.random.default_rng(3)
    mask = rng.random((13, 17)) < 0.4
    dims = (17 * 10 - 4, 13 * 10 - 7)  # the last column and row reach past the slide
    tissue = Tissue(mask, mpp=5.0, slide_mpp=0.5, dimensions=dims)
    boxes = np.column_stack(
        [
            rng.uniform(-20, 180, 300),
            rng.uniform(-20, 140, 300),
            rng.uniform(0, 90, 300),
            rng.uniform(0, 90, 300),
        ]
    )
    # reference: sum over pixels of the area each shares with the box (inside the slide)
    j, i = np.meshgrid(np.arange(17), np.arange(13))
    x0, y0 = j.ravel() * 10.0, i.ravel() * 10.0
    x1, y1 = np.minimum(x0 + 10, dims[0]), np.minimum(y0 + 10, dims[1])
    ox = np.clip(
        np.minimum(x1, boxes[:, :1] + boxes[:, 2:3]) - np.maximum(x0, boxes[:, :1]), 0, None
    )
    oy = np.clip(
        np.minimum(y1, boxes[:, 1:2] + boxes[:, 3:4]) - np.maximum(y0, boxes[:, 1:2]), 0, None
    )
    shared = ox * oy * mask.ravel()
    expected = shared.sum(axis=1) / (boxes[:, 2] * boxes[:, 3])
    assert np.allclose(tissue.fractions(boxes), expected, atol=1e-12)
    assert np.array_equal(tissue.intersects(boxes), shared.max(axis=1) > 0)
    assert tissue.fraction((0, 0, *dims)) * dims[0] * dims[1] * 0.25e-6 == pytest.approx(
        tissue.area_mm2
    )


def test_full_tissue_covers_the_slide(cmu):
    tissue = Tissue.full(cmu)
    w, h = cmu.dimensions
    assert tissue.mask.all()
    assert tissue.area_mm2 == pytest.approx(w * h * cmu.mpp**2 * 1e-6)
    assert tissue.fraction((0, 0, w, h)) == pytest.approx(1.0)


def test_from_polygons_marks_every_touched_pixel_and_keeps_the_exact_area(cmu):
    w, h = cmu.dimensions
    blob = (
        shapely.Point(1000.3, 1500.7).buffer(300.0).difference(shapely.Point(1000, 1500).buffer(80))
    )
    sliver = shapely.box(100.2, 100.2, 101.1, 900.0)  # thinner than a mask pixel
    outside = shapely.box(w - 50, 0, w + 500, 300)  # half off the slide
    with pytest.warns(UserWarning, match=r"35\.1% of the tissue polygons' area lies outside"):
        tissue = Tissue.from_polygons([blob, sliver, outside], cmu, mpp=8.0)
    clipped = blob.area + sliver.area + 50 * 300
    assert tissue.area_mm2 == pytest.approx(clipped * cmu.mpp**2 * 1e-6, rel=1e-9)
    s = tissue.scale
    rows, cols = np.nonzero(np.ones_like(tissue.mask))
    cells = shapely.box(cols * s, rows * s, (cols + 1) * s, (rows + 1) * s)
    shapes = shapely.union_all([blob, sliver, outside]).intersection(shapely.box(0, 0, w, h))
    overlaps = shapely.area(shapely.intersection(cells, shapes)) > 0
    assert np.all(tissue.mask[rows[overlaps], cols[overlaps]]), "a touched pixel is missing"
    assert not np.any(tissue.mask[rows, cols] & ~shapely.intersects(cells, shapes))
    # a GeoDataFrame of the same polygons gives the same tissue
    again = Tissue.from_polygons(tissue.polygons, cmu, mpp=8.0)
    assert np.array_equal(again.mask, tissue.mask)


def test_repr_html_shows_an_outlined_thumbnail(cmu_tissue):
    page = cmu_tissue._repr_html_()
    assert page.count("<img src='data:image/png;base64,") == 1
    assert "mm²" in page


@pytest.mark.parametrize(
    "kwargs",
    [dict(method="kmeans"), dict(mpp=0), dict(chroma_threshold=5), dict(min_object_um2=-1)],
)
def test_bad_detection_arguments_raise(cmu, kwargs):
    with pytest.raises(ValueError):
        detect_tissue(cmu, **kwargs)


def test_missing_resolution_raises_with_the_fix(sample):
    with pytest.raises(wsimito.MissingMPPError, match="mpp="):
        detect_tissue(wsimito.open_slide(sample(TCGA)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mpp=math.nan), r"mpp must be a positive, finite number of µm per pixel"),
        (dict(mpp=math.inf), r"mpp must be a positive, finite number of µm per pixel"),
        (dict(mpp=-8.0), r"mpp must be a positive, finite number of µm per pixel"),
        (dict(min_hole_um2=math.nan), r"min_hole_um2 must be a finite number of µm² >= 0"),
        (
            dict(method="fixed", chroma_threshold=300),
            r"chroma_threshold must be a chroma level .* in \[0, 255\], got 300",
        ),
        (dict(on_error="ignore"), r"on_error='ignore' is not an option"),
    ],
)
def test_bad_detection_arguments_name_the_parameter_unit_and_range(cmu, kwargs, message):
    with pytest.raises(ValueError, match=message):
        detect_tissue(cmu, **kwargs)


def test_threshold_is_now_called_chroma_threshold(cmu):
    with pytest.raises(TypeError, match="threshold"):
        detect_tissue(cmu, method="fixed", threshold=8)  # the old, ambiguous name
    tissue = detect_tissue(cmu, method="fixed", chroma_threshold=12)
    assert tissue.chroma_threshold == 12.0


def test_an_absurd_mask_resolution_is_refused_before_reading(cmu):
    # The user's case: detect_tissue(mpp=1e-6) on the CMU sample tried to allocate TiBs.
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as info:
            detect_tissue(cmu, mpp=1e-6)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert "max_mask_pixels=100,000,000" in message and "max_mask_pixels=None" in message
    assert f"{math.ceil(2220 * 0.499 / 1e-6):,} x " in message and "GiB" in message
    assert peak < 1_000_000  # bytes
    with pytest.raises(ValueError, match="max_mask_pixels"):
        Tissue.full(cmu, mpp=1e-6)
    small = detect_tissue(cmu, mpp=16.0, max_mask_pixels=70 * 93)
    assert small.mask.shape == (93, 70)
    with pytest.raises(ValueError, match="max_mask_pixels=6,509"):
        detect_tissue(cmu, mpp=16.0, max_mask_pixels=70 * 93 - 1)


def test_mask_shape_is_rows_then_columns_everywhere(cmu):
    tissue = detect_tissue(cmu, mpp=16.0)
    rows, cols = Tissue.mask_shape(cmu.dimensions, slide_mpp=cmu.mpp, mpp=16.0)
    assert (rows, cols) == tissue.mask.shape == tissue.unread.shape
    assert (rows, cols) == (math.ceil(2967 * cmu.mpp / 16), math.ceil(2220 * cmu.mpp / 16))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_polygons_with_nan_vertices_raise_a_value_error_not_a_geos_exception(cmu):
    bad = shapely.Polygon([(0, 0), (500, 0), (500, math.nan), (0, 500)])
    with pytest.raises(ValueError, match="tissue polygon 1 has NaN or infinite vertices"):
        Tissue.from_polygons([shapely.box(0, 0, 100, 100), bad], cmu)


def test_polygons_outside_the_slide_or_none_at_all_are_refused(cmu):
    w, h = cmu.dimensions
    with pytest.raises(wsimito.EmptyTissueError, match=r"none of the tissue polygons overlaps"):
        Tissue.from_polygons([shapely.box(w + 10, 0, w + 500, 300)], cmu)
    with pytest.raises(wsimito.EmptyTissueError, match="empty"):
        Tissue.from_polygons([], cmu)
    with pytest.raises(wsimito.EmptyTissueError, match="empty"):
        Tissue.from_polygons([shapely.LineString([(0, 0), (100, 100)])], cmu)
