"""wsimito.plot draws what it says, where it says: level-0 px data coordinates, points,
outlines, scale bars, density values and gallery crops are checked, not only drawn."""

from __future__ import annotations

import re
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import shapely  # noqa: E402
from _plot_helpers import dotted_slide, make_result, tissue_slide  # noqa: E402
from matplotlib import colormaps  # noqa: E402

import wsimito  # noqa: E402
from wsimito import plot  # noqa: E402
from wsimito.tissue import Tissue  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def by_gid(ax, gid):
    found = [a for a in (*ax.collections, *ax.lines, *ax.images, *ax.artists) if a.get_gid() == gid]
    return found


def rings(geometry) -> list[np.ndarray]:
    return [
        np.asarray(ring.coords)
        for poly in shapely.get_parts(geometry)
        for ring in (poly.exterior, *poly.interiors)
    ]


def scale_bar(ax) -> tuple[float, float]:
    """(length in data units, length in µm from the label) of the axes' scale bar."""
    (bar,) = by_gid(ax, "wsimito-scalebar")
    (rect,) = bar.size_bar.get_children()
    number, unit = re.fullmatch(r"([\d.]+) (µm|mm)", bar.txt_label.get_text()).groups()
    return rect.get_width(), float(number) * (1000.0 if unit == "mm" else 1.0)


@pytest.fixture(scope="module")
def rect_result():
    """Tissue 100-1000 x 100-900 px on a 1200 x 1000 px slide at 4 µm/px; random candidates."""
    slide = tissue_slide()
    rng = np.random.default_rng(3)
    points = rng.uniform((5, 5), (1195, 995), size=(300, 2))
    scores = rng.uniform(0, 1, 300)
    tissue = wsimito.detect_tissue(slide)
    return slide, make_result(slide, points, scores, tissue=tissue, threshold=0.6)


def test_plot_slide_draws_the_counted_points_at_their_level0_positions_with_their_scores(
    rect_result,
):
    slide, result = rect_result
    ax = plot.plot_slide(result, candidates=True)
    pts, scores = result.points, result.scores
    inside = (pts[:, 0] > 100) & (pts[:, 0] < 1000) & (pts[:, 1] > 100) & (pts[:, 1] < 900)
    counted = inside & (scores >= 0.6)
    (dots,) = by_gid(ax, "wsimito-detections")
    drawn = dots.get_offsets()
    assert len(drawn) == counted.sum() == result.count
    order = np.lexsort((drawn[:, 0], drawn[:, 1]))
    expect = np.lexsort((pts[counted][:, 0], pts[counted][:, 1]))
    assert np.allclose(drawn[order], pts[counted][expect])
    colors = dots.get_facecolors()[order]
    assert np.allclose(colors, colormaps["viridis"](scores[counted][expect]))
    (others,) = by_gid(ax, "wsimito-candidates")
    assert len(others.get_offsets()) == len(pts) - counted.sum()
    # Data coordinates are level-0 px: the thumbnail spans the slide exactly.
    (thumb,) = by_gid(ax, "wsimito-thumbnail")
    assert thumb.get_extent() == [0.0, 1200.0, 1000.0, 0.0]
    assert ax.get_xlim() == (0.0, 1200.0) and ax.get_ylim() == (1000.0, 0.0)
    # A level-0 point lands on the display pixel of its thumbnail pixel.
    corner = ax.transData.transform([(100.0, 100.0)])[0]
    origin = ax.transData.transform([(0.0, 0.0)])[0]
    far = ax.transData.transform([(1200.0, 1000.0)])[0]
    assert np.allclose((corner - origin) / (far - origin), (100 / 1200, 100 / 1000))


def test_plot_slide_outlines_the_analysed_tissue_and_the_hotspot(rect_result):
    _, result = rect_result
    ax = plot.plot_slide(result)
    tissue_lines = [line.get_xydata() for line in by_gid(ax, "wsimito-tissue")]
    expect = rings(result.analysed_tissue.geometry)
    assert len(tissue_lines) == len(expect)
    assert all(np.allclose(a, b) for a, b in zip(tissue_lines, expect, strict=True))
    spot = result.hotspot
    assert not spot.whole_tissue  # a 1.54 mm window fits in 3.6 x 3.2 mm of tissue
    (hot,) = by_gid(ax, "wsimito-hotspot")
    assert np.allclose(hot.get_xydata(), np.asarray(spot.polygon.exterior.coords))
    x0, y0, x1, y1 = spot.polygon.bounds
    assert np.isclose((x1 - x0) * 4.0, np.sqrt(2.37e6), rtol=1e-3)  # 2.37 mm² square
    colorbar_ax = ax.figure.axes[1]
    (threshold_line,) = colorbar_ax.lines
    assert np.allclose(threshold_line.get_ydata(), 0.6)


def test_plot_slide_without_hotspot_when_the_hotspot_is_the_whole_tissue():
    slide = dotted_slide(np.empty((0, 2)), size=(400, 300), mpp=0.5)  # 0.03 mm², all tissue
    result = make_result(slide, [[10.0, 20.0]], [0.9])
    assert result.hotspot.whole_tissue
    ax = plot.plot_slide(result)
    assert by_gid(ax, "wsimito-hotspot") == []
    assert len(by_gid(ax, "wsimito-detections")[0].get_offsets()) == 1


@pytest.mark.parametrize(
    ("size", "mpp"), [((1200, 1000), 4.0), ((2220, 2967), 0.499), ((640, 480), 0.25)]
)
def test_scale_bar_length_in_data_units_equals_its_label_over_mpp(size, mpp):
    slide = tissue_slide(*size, mpp=mpp)
    ax = plot.plot_slide(slide)
    length_px, length_um = scale_bar(ax)
    assert np.isclose(length_px * mpp, length_um)
    width_um = size[0] * mpp
    assert 0.1 * width_um <= length_um <= 0.25 * width_um  # a round length, about 1/5 of the view
    mantissa = length_um / 10 ** np.floor(np.log10(length_um))
    assert np.isclose(mantissa, [1, 2, 5]).any()


def test_nice_lengths_are_round_and_the_longest_not_above_the_target():
    for target in np.geomspace(0.37, 3.1e4, 60):
        got = plot.nice_length_um(target)
        assert target / 2.5 - 1e-9 <= got <= target + 1e-9
        mantissa = got / 10 ** np.floor(np.log10(got) + 1e-12)
        assert np.isclose(mantissa, [1, 2, 5]).any()
    assert plot.format_length_um(500) == "500 µm" and plot.format_length_um(2000) == "2 mm"


def test_plot_slide_outlines_each_tile_box(rect_result):
    slide, result = rect_result
    grid = wsimito.TileGrid(slide, tile_size=64, overlap=8, mpp=8.0, tissue=result.tissue)
    ax = plot.plot_slide(slide, tiles=grid, tissue=result.tissue)
    (tiles,) = by_gid(ax, "wsimito-tiles")
    paths = tiles.get_paths()
    assert len(paths) == len(grid) > 0
    for path, box in zip(paths, grid.boxes(), strict=True):
        x, y, w, h = box
        assert np.allclose(path.vertices[:4], [(x, y), (x + w, y), (x + w, y + h), (x, y + h)])
    assert by_gid(ax, "wsimito-detections") == []  # a slide has no detections
    (thumb,) = by_gid(ax, "wsimito-thumbnail")
    assert np.array_equal(thumb.get_array(), slide.thumbnail(1024))


def test_plot_tissue_places_the_classified_image_on_the_mask_grid():
    slide = tissue_slide(1203, 1001)  # the 8 µm/px mask reaches past the slide's edge
    tissue = wsimito.detect_tissue(slide)
    ax = tissue.plot()
    rows, cols = tissue.mask.shape
    (image,) = by_gid(ax, "wsimito-thumbnail")
    assert image.get_extent() == [0.0, cols * 2.0, rows * 2.0, 0.0]  # 2 level-0 px per mask px
    lines = [line.get_xydata() for line in by_gid(ax, "wsimito-tissue")]
    assert all(np.allclose(a, b) for a, b in zip(lines, rings(tissue.geometry), strict=True))
    assert ax.get_xlim() == (0.0, 1203.0)


DOTS = np.array([[200.5, 150.5], [260.2, 170.7], [330.0, 260.0], [80.5, 400.5], [700.5, 500.5]])


def test_plot_region_shows_the_box_pixels_and_only_its_detections():
    slide = dotted_slide(DOTS)
    result = make_result(slide, DOTS, [0.9, 0.3, 0.7, 0.8, 0.95], threshold=0.5)
    box = (150, 100, 250, 200)  # holds dots 0, 1 (below threshold) and 2
    ax = plot.plot_region(slide, box, result)
    (image,) = by_gid(ax, "wsimito-thumbnail")
    assert image.get_extent() == [150.0, 400.0, 300.0, 100.0]
    assert np.array_equal(image.get_array(), slide.read(box))
    (dots,) = by_gid(ax, "wsimito-detections")
    assert np.allclose(dots.get_offsets(), DOTS[[0, 2]])
    assert np.allclose(dots.get_edgecolors(), colormaps["viridis"]([0.9, 0.7]))  # rings
    assert len(dots.get_facecolors()) == 0
    (others,) = by_gid(ax, "wsimito-candidates")
    assert np.allclose(others.get_offsets(), DOTS[[1]])
    assert ax.get_xlim() == (150.0, 400.0) and ax.get_ylim() == (300.0, 100.0)
    length_px, length_um = scale_bar(ax)
    assert np.isclose(length_px * 0.5, length_um)
    # The dark dots sit under their markers: the drawn pixel at each point is black.
    for x, y in DOTS[[0, 1, 2]]:
        assert image.get_array()[int(y - 100), int(x - 150)].max() == 0


def test_plot_region_at_a_coarser_mpp_and_its_size_limit():
    slide = dotted_slide(DOTS)
    ax = plot.plot_region(slide, (0, 0, 400, 300), mpp=1.0)
    (image,) = by_gid(ax, "wsimito-thumbnail")
    assert image.get_array().shape == (150, 200, 3)
    assert image.get_extent() == [0.0, 400.0, 300.0, 0.0]
    with pytest.raises(ValueError, match="pass mpp="):
        plot.plot_region(slide, (0, 0, 5000, 5000))
    with pytest.raises(ValueError, match="positive"):
        plot.plot_region(slide, (0, 0, 0, 10))


def test_plot_density_values_equal_an_independent_count_per_cell():
    slide = tissue_slide()  # 1200 x 1000 px at 4 µm/px
    # x0, y0, x1, y1: cells cut by the outline hold 10 % to 80 % tissue
    rect, hole = (130, 100, 1010, 880), (400, 420, 600, 500)
    tissue = Tissue.from_polygons(shapely.box(*rect), slide)
    rng = np.random.default_rng(7)
    pts = rng.uniform(0, (1200, 1000), size=(2000, 2))
    scores = rng.uniform(0, 1, len(pts))
    result = make_result(slide, pts, scores, tissue=tissue, threshold=0.5, skipped_cores=[hole])
    ax = plot.plot_density(result, cell_um=400.0, min_tissue=0.25)  # 100 px cells
    (image,) = by_gid(ax, "wsimito-density")
    drawn = np.ma.filled(image.get_array().astype(float), np.nan)
    assert drawn.shape == (10, 12)
    assert image.get_extent() == [0.0, 1200.0, 1000.0, 0.0]

    def overlap(a, b):
        return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(
            0.0, min(a[3], b[3]) - max(a[1], b[1])
        )

    def inside(x, y, r):
        return r[0] <= x <= r[2] and r[1] <= y <= r[3]

    counted = [
        (x, y)
        for (x, y), s in zip(pts, scores, strict=True)
        if s >= 0.5 and inside(x, y, rect) and not inside(x, y, hole)
    ]
    assert len(counted) == result.count
    expect = np.full((10, 12), np.nan)
    for i in range(10):
        for j in range(12):
            cell = (100 * j, 100 * i, 100 * (j + 1), 100 * (i + 1))
            area_px = overlap(cell, rect) - overlap(cell, hole)
            if area_px < 0.25 * 100 * 100:
                continue
            n = sum(cell[0] <= x < cell[2] and cell[1] <= y < cell[3] for x, y in counted)
            expect[i, j] = n / (area_px * 16e-6)
    assert np.array_equal(np.isnan(drawn), np.isnan(expect))
    assert np.allclose(drawn[~np.isnan(drawn)], expect[~np.isnan(expect)])
    assert np.isnan(drawn[0, 0]) and np.isnan(drawn[4, 4])  # glass; 20 % left by the core
    assert np.isnan(drawn[5, 10]) and np.isfinite(drawn[5, 1])  # 10 % and 70 % tissue
    assert ax.figure.axes[1].get_ylabel() == "mitotic figures / mm²"


def test_detection_gallery_shows_the_top_n_crops_centred_with_their_scores():
    slide = dotted_slide(DOTS)
    scores = [0.9, 0.3, 0.7, 0.8, 0.95]
    result = make_result(slide, DOTS, scores, threshold=0.5)
    fig = plot.detection_gallery(result, slide, n=3, size_um=16.0, columns=2)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 3
    expect = DOTS[[4, 0, 3]]  # the top 3 counted, by descending score
    assert [ax.get_title() for ax in shown] == ["0.95", "0.90", "0.80"]
    for ax, (x, y) in zip(shown, expect, strict=True):
        (image,) = ax.images
        x0, x1, y1, y0 = image.get_extent()
        assert abs((x0 + x1) / 2 - x) <= 0.5 and abs((y0 + y1) / 2 - y) <= 0.5
        assert np.isclose(x1 - x0, 32.0)  # 16 µm at 0.5 µm/px
        crop = np.asarray(image.get_array())
        assert crop.shape == (32, 32, 3) and crop[15:17, 15:17].max() == 0  # the dark dot
        assert np.array_equal(crop, slide.read((x0, y0, 32, 32)))
        assert len(ax.lines) == 4  # the ticks around the centre
    assert "top 3 of 4" in fig._suptitle.get_text()


def test_result_and_tissue_methods_delegate_to_the_plots(rect_result):
    slide, result = rect_result
    fig, ax = plt.subplots()
    assert result.plot(ax=ax) is ax
    assert len(by_gid(ax, "wsimito-detections")[0].get_offsets()) == result.count
    density = result.plot_density(cell_um=400.0)
    assert by_gid(density, "wsimito-density")[0].get_array().shape == (10, 12)
    small = dotted_slide(DOTS)
    gallery = make_result(small, DOTS, [0.9, 0.3, 0.7, 0.8, 0.95]).gallery(small, n=2)
    assert [a.get_title() for a in gallery.axes if a.images] == ["0.95", "0.90"]
    assert by_gid(result.tissue.plot(), "wsimito-tissue")


def test_without_matplotlib_the_import_error_says_how_to_install_it():
    code = (
        "import sys\n"
        "import wsimito, wsimito.result, wsimito.gallery\n"
        "assert 'matplotlib' not in sys.modules, 'imported matplotlib eagerly'\n"
        "sys.modules['matplotlib'] = None\n"
        "try:\n"
        "    import wsimito.plot\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 'pip install "wsimito[plot]"' in out.stdout


def test_a_result_without_detections_draws_empty_layers_and_an_empty_gallery():
    slide = dotted_slide(np.empty((0, 2)))
    result = make_result(slide, np.empty((0, 2)), np.empty(0))
    ax = plot.plot_slide(result, candidates=True)
    assert len(by_gid(ax, "wsimito-detections")[0].get_offsets()) == 0
    density = by_gid(plot.plot_density(result, cell_um=50.0), "wsimito-density")[0]
    assert np.all(np.asarray(density.get_array()) == 0)  # all tissue, no figures
    fig = plot.detection_gallery(result, slide)
    assert not [a for a in fig.axes if a.images]
    assert "Counted mitotic figures: 0" in fig._suptitle.get_text()
