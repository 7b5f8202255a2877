"""The hotspot: the 10-HPF square in tissue with the most detections, found exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from test_result import painted_slide

from wsimito.hotspot import TEN_HPF_MM2, find_hotspot
from wsimito.slide.array_backend import ArrayBackend
from wsimito.slide.slide import Slide
from wsimito.tissue import Tissue

MPP = 2.0  # level-0 µm/px of the test slides: 2000 px = 4 mm


def mask_tissue(mask: np.ndarray, dimensions: tuple[int, int], mask_mpp: float = 8.0) -> Tissue:
    return Tissue(mask, mpp=mask_mpp, slide_mpp=MPP, dimensions=dimensions)


def half_tissue(width: int = 2500, height: int = 2000) -> Tissue:
    """Tissue on the left half (x < width / 2) of a slide at 2 µm/px, glass on the right."""
    s = 8.0 / MPP
    mask = np.zeros((math.ceil(height / s), math.ceil(width / s)), bool)
    mask[:, : mask.shape[1] // 2] = True
    return mask_tissue(mask, (width, height))


def cluster(rng, centre, radius_px, n):
    angle = rng.uniform(0, 2 * np.pi, n)
    r = radius_px * np.sqrt(rng.uniform(0, 1, n))
    return np.column_stack([centre[0] + r * np.cos(angle), centre[1] + r * np.sin(angle)])


def test_finds_a_planted_dense_cluster():
    rng = np.random.default_rng(1)
    dims = (3000, 2500)  # 6 x 5 mm
    tissue = mask_tissue(np.ones((625, 750), bool), dims)
    background = rng.uniform((0, 0), dims, size=(150, 2))
    planted = cluster(rng, (2100, 700), 150, 40)  # 300 µm radius: fits the 1539 µm window
    spot = find_hotspot(np.vstack([background, planted]), tissue, MPP)
    assert shapely.contains(spot.polygon, shapely.points(planted)).all()
    assert not spot.whole_tissue
    assert spot.count >= 40
    assert spot.area_mm2 == pytest.approx(TEN_HPF_MM2)
    assert spot.polygon.area * MPP**2 * 1e-6 == pytest.approx(TEN_HPF_MM2, rel=1e-12)
    assert spot.count_per_10hpf == spot.count


def test_a_cluster_on_glass_is_not_chosen():
    rng = np.random.default_rng(2)
    tissue = half_tissue()
    in_tissue = rng.uniform((0, 0), (1250, 2000), size=(60, 2))
    on_glass = cluster(rng, (2200, 1000), 150, 80)  # far right: no window there is half tissue
    points = np.vstack([in_tissue, on_glass])
    spot = find_hotspot(points, tissue, MPP)
    assert spot.tissue_fraction >= 0.5
    assert not shapely.intersects(spot.polygon, shapely.points(on_glass)).any()
    coarse = find_hotspot(points, tissue, MPP, step_um=100.0)
    assert coarse.count == _best_brute_force(points, tissue, 100.0, 0.5)[0]


def test_min_tissue_decides_how_far_a_window_may_reach_onto_glass():
    rng = np.random.default_rng(3)
    tissue = half_tissue()
    edge_cluster = cluster(
        rng, (1340, 1000), 50, 30
    )  # on glass, 40-140 px past the edge at x = 1250
    lenient = find_hotspot(edge_cluster, tissue, MPP, min_tissue=0.3)
    strict = find_hotspot(edge_cluster, tissue, MPP, min_tissue=0.99)
    assert lenient.count == 30 and lenient.tissue_fraction >= 0.3
    assert strict.count == 0 and strict.tissue_fraction >= 0.99


def _best_brute_force(points, tissue, step_um, min_tissue, area_mm2=TEN_HPF_MM2):
    """Every raster placement, counted and tissue-checked one by one (no summed-area tables)."""
    side_um = math.sqrt(area_mm2) * 1000
    k = round(side_um / step_um)
    cell = side_um / k / MPP
    side = k * cell
    width, height = tissue.dimensions
    nx, ny = math.ceil(width / cell), math.ceil(height / cell)
    best = (-1, -1.0, 0, 0)
    for j in range(ny - k + 1):
        for i in range(nx - k + 1):
            x0, y0 = i * cell, j * cell
            frac = tissue.fraction((x0, y0, side, side))
            if frac < min_tissue:
                continue
            n = int(
                np.sum(
                    (points[:, 0] >= x0)
                    & (points[:, 0] < x0 + side)
                    & (points[:, 1] >= y0)
                    & (points[:, 1] < y0 + side)
                )
            )
            if (n, round(frac, 9)) > best[:2]:  # scanning y then x keeps the first of equals
                best = (n, round(frac, 9), x0, y0)
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_over_every_placement(seed):
    rng = np.random.default_rng(seed)
    dims = (2000, 1800)  # 4 x 3.6 mm
    yy, xx = np.mgrid[0:450, 0:500]
    blob = ((xx - 220) / 200.0) ** 2 + ((yy - 230) / 170.0) ** 2 < 1 + 0.3 * np.sin(xx / 17.0)
    tissue = mask_tissue(blob, dims)
    points = np.vstack(
        [
            rng.uniform((0, 0), dims, size=(120, 2)),
            cluster(rng, rng.uniform(300, 1500, 2), 200, 25),
            cluster(rng, rng.uniform(300, 1500, 2), 120, 20),
        ]
    )
    step_um, min_tissue = 100.0, 0.6
    spot = find_hotspot(points, tissue, MPP, step_um=step_um, min_tissue=min_tissue)
    count, frac, x0, y0 = _best_brute_force(points, tissue, step_um, min_tissue)
    assert spot.count == count
    assert spot.tissue_fraction == pytest.approx(frac, abs=1e-9)
    assert spot.polygon.bounds[:2] == pytest.approx((x0, y0), abs=1e-9)


def test_tissue_smaller_than_the_window_is_counted_whole():
    # A MIDOG-style region of interest: 1.5 x 1.2 mm, all tissue (1.8 mm² < 2.37 mm²).
    slide = Slide(ArrayBackend(np.full((600, 750, 3), 200, np.uint8)), mpp=MPP)
    tissue = Tissue.full(slide)
    rng = np.random.default_rng(4)
    points = rng.uniform((0, 0), (750, 600), size=(33, 2))
    spot = find_hotspot(points, tissue, MPP)
    assert spot.whole_tissue
    assert spot.count == 33
    assert spot.area_mm2 == pytest.approx(750 * 600 * MPP**2 * 1e-6)
    assert spot.count_per_10hpf is None
    assert "whole tissue" in spot.note


def test_small_tissue_on_a_large_slide_is_counted_whole():
    slide = Slide(ArrayBackend(np.full((1500, 2000, 3), 240, np.uint8)), mpp=MPP)
    piece = shapely.box(800, 600, 1300, 1000)  # 1 x 0.8 mm
    tissue = Tissue.from_polygons(piece, slide)
    inside = np.array([[900.0, 700.0], [1299.0, 999.0], [1000.0, 800.0]])
    outside = np.array([[100.0, 100.0], [1800.0, 1400.0]])
    spot = find_hotspot(np.vstack([inside, outside]), tissue, MPP)
    assert spot.whole_tissue
    assert spot.count == 3
    assert spot.area_mm2 == pytest.approx(0.8)
    assert shapely.equals(spot.polygon, piece)


def test_no_tissue_gives_an_empty_hotspot():
    tissue = mask_tissue(np.zeros((500, 500), bool), (2000, 2000))
    spot = find_hotspot(np.array([[10.0, 10.0]]), tissue, MPP)
    assert (spot.count, spot.area_mm2, spot.whole_tissue) == (0, 0.0, True)
    assert spot.polygon.is_empty and spot.density_per_mm2 == 0.0


def test_window_area_follows_area_mm2():
    tissue = mask_tissue(np.ones((500, 500), bool), (2000, 2000))
    spot = find_hotspot(np.empty((0, 2)), tissue, MPP, area_mm2=2.0)
    assert spot.polygon.area * MPP**2 * 1e-6 == pytest.approx(2.0, rel=1e-12)
    assert spot.count == 0 and spot.tissue_fraction == 1.0


def test_rejects_inconsistent_input():
    tissue = mask_tissue(np.ones((500, 500), bool), (2000, 2000))
    with pytest.raises(ValueError, match="tissue of this slide"):
        find_hotspot(np.empty((0, 2)), tissue, 0.25)
    with pytest.raises(ValueError, match="min_tissue"):
        find_hotspot(np.empty((0, 2)), tissue, MPP, min_tissue=1.5)
    with pytest.raises(ValueError, match="NaN"):
        find_hotspot(np.array([[np.nan, 1.0]]), tissue, MPP)


def test_result_hotspot_counts_only_detections():
    from test_result import make_result

    slide = painted_slide()  # 4 µm/px, tissue 3.6 x 3.2 mm
    rng = np.random.default_rng(5)
    strong = cluster(rng, (300, 300), 40, 10)
    weak = cluster(rng, (800, 700), 40, 30)
    result = make_result(np.vstack([strong, weak]), [0.9] * 10 + [0.2] * 30, slide=slide)
    assert result.hotspot.count == 10
    assert shapely.contains(result.hotspot.polygon, shapely.points(strong)).all()
