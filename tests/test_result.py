"""MitosisResult: counting at a threshold, deterministic tables, density, summary, CSV, HTML."""

from __future__ import annotations

import base64
import csv
import io
import math

import numpy as np
import pytest
from PIL import Image

from wsimito.classes import MITOSIS_COLOR
from wsimito.io.atomic import atomic_write
from wsimito.result import MitosisResult
from wsimito.slide.array_backend import ArrayBackend
from wsimito.slide.slide import Slide
from wsimito.tissue import Tissue, detect_tissue

META = {"training_data": "synthetic", "intended_use": "demonstration only; not for diagnostic use"}


def painted_slide(width: int = 1200, height: int = 1000, mpp: float = 4.0) -> Slide:
    """A glass slide (light grey) with a pink tissue rectangle at x 100-1000, y 100-900 px."""
    arr = np.full((height, width, 3), 245, np.uint8)
    arr[100:900, 100:1000] = (200, 120, 180)
    return Slide(ArrayBackend(arr), mpp=mpp)


def make_result(
    points,
    scores,
    *,
    threshold: float = 0.5,
    slide: Slide | None = None,
    tissue: Tissue | None = None,
    bounds_offset=(0.0, 0.0),
    name: str = "case.svs",
    thumbnail: bool = True,
) -> MitosisResult:
    slide = slide if slide is not None else painted_slide()
    tissue = tissue if tissue is not None else detect_tissue(slide)
    return MitosisResult(
        points=np.asarray(points, dtype=np.float64),
        scores=np.asarray(scores, dtype=np.float64),
        threshold=threshold,
        slide_name=name,
        slide_path=None,
        slide_dimensions=slide.dimensions,
        slide_mpp=slide.mpp,
        bounds_offset=bounds_offset,
        tissue=tissue,
        detector_name="demo",
        detector_metadata=META,
        detector_mpp=0.25,
        timing={"tiles": 12, "seconds": 2.0, "tiles_per_s": 6.0},
        skipped_tiles=[(0.0, 0.0, 512.0, 512.0)],
        thumbnail=slide.thumbnail(256) if thumbnail else None,
    )


def no_tissue(slide: Slide) -> Tissue:
    """A tissue mask of the slide with no tissue at all."""
    full = Tissue.full(slide)
    return Tissue(
        np.zeros_like(full.mask), mpp=full.mpp, slide_mpp=slide.mpp, dimensions=slide.dimensions
    )


def random_result(n: int = 200, seed: int = 0, **kwargs) -> MitosisResult:
    rng = np.random.default_rng(seed)
    points = rng.uniform((110, 110), (990, 890), size=(n, 2))
    return make_result(points, rng.uniform(0, 1, n), **kwargs)


def test_count_is_candidates_at_or_above_threshold():
    scores = [0.2, 0.5, 0.49999, 0.9, 1.0, 0.0]
    result = make_result(np.arange(12).reshape(6, 2) * 50 + 200, scores, threshold=0.5)
    assert result.count == 3  # 0.5 itself counts
    assert sorted(result.detections["score"]) == [0.5, 0.9, 1.0]
    assert len(result.candidates) == 6


def test_detections_sorted_by_score_then_y_then_x():
    points = [(300, 500), (200, 500), (250, 400), (800, 300), (150, 600)]
    scores = [0.7, 0.7, 0.7, 0.95, 0.3]
    det = make_result(points, scores, threshold=0.5).detections
    assert list(zip(det["x"], det["y"], strict=True)) == [
        (800, 300),
        (250, 400),
        (200, 500),
        (300, 500),
    ]
    assert list(det.columns) == ["score", "x", "y", "geometry"]
    assert np.array_equal(det.geometry.x.to_numpy(), det["x"].to_numpy())
    assert np.array_equal(det.geometry.y.to_numpy(), det["y"].to_numpy())


def test_same_candidates_in_another_order_give_the_same_table():
    rng = np.random.default_rng(3)
    points = rng.uniform(120, 880, size=(50, 2))
    scores = rng.choice([0.6, 0.8, 0.9], size=50)  # many ties
    perm = rng.permutation(50)
    a = make_result(points, scores).detections
    b = make_result(points[perm], scores[perm]).detections
    assert a[["score", "x", "y"]].equals(b[["score", "x", "y"]])


def test_with_threshold_recounts_without_changing_the_original():
    result = random_result()
    stricter = result.with_threshold(0.9)
    assert result.threshold == 0.5
    assert stricter.count == int(np.sum(result.scores >= 0.9))
    assert result.count == int(np.sum(result.scores >= 0.5))
    assert stricter.count < result.count
    assert stricter.hotspot.count <= result.hotspot.count
    assert (stricter.detections["score"] >= 0.9).all()


def test_density_is_count_per_tissue_area():
    result = random_result()
    assert result.tissue_area_mm2 == pytest.approx(result.tissue.area_mm2)
    assert result.density_per_mm2 == pytest.approx(result.count / result.tissue.area_mm2)
    # 900 x 800 px of tissue at 4 µm/px = 11.52 mm²
    assert result.tissue_area_mm2 == pytest.approx(900 * 800 * 16e-6, rel=0.02)


def test_no_tissue_counts_nothing_and_gives_a_nan_density():
    slide = painted_slide()
    result = make_result([(500, 500)], [0.9], slide=slide, tissue=no_tissue(slide))
    assert result.count == 0 and len(result.candidates) == 1
    assert not result.candidates["in_tissue"].any()
    assert result.tissue_area_mm2 == 0.0
    assert math.isnan(result.density_per_mm2)
    assert result.hotspot.count == 0 and result.hotspot.whole_tissue
    summary = result.summary()
    assert summary["count"] == 0 and math.isnan(summary["density_per_mm2"])


def test_bad_input_raises_with_a_fix():
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        make_result(np.zeros((3, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="one score per point"):
        make_result(np.zeros((3, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="sigmoid"):
        make_result(np.zeros((1, 2)), [1.5])
    with pytest.raises(ValueError, match="finite"):
        make_result([(np.nan, 1.0)], [0.5])
    slide = painted_slide()
    other = Tissue.full(painted_slide(600, 500))
    with pytest.raises(ValueError, match="tissue of this slide"):
        make_result([(1, 1)], [0.5], slide=slide, tissue=other)


def test_inputs_are_copied_and_read_only():
    points = np.array([[200.0, 300.0]])
    result = make_result(points, [0.8])
    points[0, 0] = 999.0
    assert result.points[0, 0] == 200.0
    with pytest.raises(ValueError):
        result.points[0, 0] = 1.0


def test_summary_reports_the_run():
    result = random_result()
    s = result.summary()
    assert s["count"] == result.count and s["candidates"] == 200
    assert s["hotspot_count"] == result.hotspot.count
    assert s["hotspot_area_mm2"] == pytest.approx(2.37)
    assert s["hotspot_count_per_10hpf"] == result.hotspot.count
    assert s["density_per_mm2"] == pytest.approx(result.density_per_mm2)
    assert s["training_data"] == "synthetic" and "not for diagnostic use" in s["intended_use"]
    assert (s["mpp"], s["detector_mpp"], s["threshold"]) == (4.0, 0.25, 0.5)
    assert (s["tiles"], s["tiles_per_s"], s["skipped_tiles"]) == (12, 6.0, 1)


def test_csv_holds_level0_and_micrometre_coordinates(tmp_path):
    result = random_result(bounds_offset=(30.0, 40.0))
    path = result.to_csv(tmp_path / "case.csv")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    det = result.detections
    assert len(rows) == result.count
    x = np.array([float(r["x"]) for r in rows])
    y = np.array([float(r["y"]) for r in rows])
    assert np.array_equal(x, det["x"].to_numpy()) and np.array_equal(y, det["y"].to_numpy())
    assert np.allclose([float(r["x_um"]) for r in rows], x * 4.0)
    assert np.allclose([float(r["y_um"]) for r in rows], y * 4.0)
    assert np.array_equal([float(r["score"]) for r in rows], det["score"].to_numpy())
    geo_ids = [
        f["id"]
        for f in result.to_geo_dict()["features"]
        if f["properties"]["objectType"] == "detection"
    ]
    assert [r["id"] for r in rows] == geo_ids


def test_html_shows_overview_summary_and_intended_use():
    result = random_result(name="<b>case</b>.svs")
    page = result._repr_html_()
    assert "not for diagnostic use" in page and "synthetic" in page
    assert "&lt;b&gt;case&lt;/b&gt;.svs" in page and "<b>case</b>" not in page
    assert f"<td style='text-align:left'>{result.count}</td>" in page
    b64 = page.split("base64,", 1)[1].split("'", 1)[0]
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))
    assert max(image.shape[:2]) == 512


def test_overview_draws_each_detection_where_it_is():
    slide = painted_slide()
    result = make_result([(300, 250), (900, 700)], [0.9, 0.2], slide=slide)
    image = result._overview().astype(int)
    scale = 512 / 1200

    def red_near(x, y):
        u, v = round(x * scale), round(y * scale)
        patch = image[v - 5 : v + 6, u - 5 : u + 6]
        return bool(np.any(np.abs(patch - np.array(MITOSIS_COLOR)).sum(axis=2) < 30))

    assert red_near(300, 250)
    assert not red_near(900, 700)  # below threshold: not drawn


def test_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out.geojson"
    with pytest.raises(RuntimeError), atomic_write(target) as fh:
        fh.write('{"type": "FeatureCol')
        raise RuntimeError("crash while writing")
    assert list(tmp_path.iterdir()) == []
    target.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError), atomic_write(target) as fh:
        fh.write("half")
        raise RuntimeError("crash while writing")
    assert target.read_text(encoding="utf-8") == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_writing_into_a_missing_folder_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="create it first"):
        random_result().to_geojson(tmp_path / "missing" / "x.geojson")
