"""Results reload from their GeoJSON, and a region drawn or edited in QuPath is counted in."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
from _marks import MarkDetector, draw_marks

import wsimito
from wsimito.result import MitosisResult

MARKS = np.array([[100.5, 120.5], [400.5, 300.5], [700.5, 500.5], [650.5, 150.5]])


@pytest.fixture()
def counted(tmp_path):
    image = draw_marks(900, 700, MARKS, 8.0)
    image[:, :, 1] = np.minimum(image[:, :, 1], 200)  # a faint pink: every pixel is tissue
    slide = wsimito.open_slide(image, mpp=0.25)
    result = wsimito.count_mitoses(slide, MarkDetector(), tissue=None, progress=False)
    path = result.to_geojson(tmp_path / "run.geojson", include_candidates=True)
    return slide, result, path


def test_a_result_reloads_with_the_same_numbers(counted):
    slide, result, path = counted
    again = MitosisResult.from_geojson(path, slide)
    assert again.count == result.count == len(MARKS)
    np.testing.assert_allclose(again.counted().xy, result.counted().xy)
    np.testing.assert_allclose(again.counted().scores, result.counted().scores)
    assert again.tissue_area_mm2 == pytest.approx(result.tissue_area_mm2)
    assert again.density_per_mm2 == pytest.approx(result.density_per_mm2)
    assert again.threshold == result.threshold and again.detector_name == "marks"
    assert again.hotspot.count == result.hotspot.count


def test_a_region_edited_in_qupath_is_what_is_counted(counted, tmp_path):
    slide, result, path = counted
    collection = json.loads(path.read_text())
    left = shapely.box(0, 0, 450, 700)
    for feature in collection["features"]:
        if feature["properties"]["classification"]["name"] == "Tissue":
            feature["geometry"] = shapely.geometry.mapping(left)
    del collection["wsimito"]  # QuPath's own export does not keep it
    edited = tmp_path / "edited.geojson"
    edited.write_text(json.dumps(collection))
    inside = int(np.count_nonzero(MARKS[:, 0] < 450))
    assert 0 < inside < len(MARKS)

    reloaded = MitosisResult.from_geojson(edited, slide, threshold=result.threshold)
    assert reloaded.count == inside
    assert reloaded.tissue_area_mm2 == pytest.approx(450 * 700 * 0.25**2 * 1e-6)

    again = wsimito.count_mitoses(slide, MarkDetector(), tissue=edited, progress=False)
    assert again.count == inside
    assert again.tissue_area_mm2 == pytest.approx(reloaded.tissue_area_mm2)


def test_reloading_onto_the_wrong_slide_or_without_a_region_says_so(counted, tmp_path):
    slide, _, path = counted
    other = wsimito.open_slide(np.full((300, 300, 3), 200, np.uint8), mpp=0.25)
    with pytest.raises(ValueError, match="900x700 px slide"):
        MitosisResult.from_geojson(path, other)
    points_only = tmp_path / "points.geojson"
    collection = json.loads(path.read_text())
    collection["features"] = [f for f in collection["features"] if f["geometry"]["type"] == "Point"]
    points_only.write_text(json.dumps(collection))
    with pytest.raises(ValueError, match="no polygon"):
        MitosisResult.from_geojson(points_only, slide)
    with pytest.raises(ValueError, match="existing GeoJSON"):
        wsimito.count_mitoses(slide, MarkDetector(), tissue=str(tmp_path / "missing.geojson"))
