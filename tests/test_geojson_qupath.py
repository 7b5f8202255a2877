"""GeoJSON for QuPath: the import rules as a checker, and every file we write passes it.

``check_qupath_geojson(obj)`` encodes QuPath's GeoJSON import rules; other
tests import it from here.
"""

from __future__ import annotations

import copy
import json
import math
import uuid

import geopandas
import numpy as np
import pytest
import shapely
import shapely.geometry
from test_result import make_result, no_tissue, painted_slide, random_result

from wsimito.tissue import Tissue

OBJECT_TYPES = {"detection", "annotation"}


def check_qupath_geojson(obj: dict) -> None:
    """Raise AssertionError, naming the feature, where ``obj`` breaks a QuPath import rule."""
    assert obj.get("type") == "FeatureCollection", "top level must be a FeatureCollection"
    assert isinstance(obj.get("features"), list), "FeatureCollection needs a 'features' list"
    for n, feature in enumerate(obj["features"]):
        where = f"feature {n}"
        assert feature.get("type") == "Feature", f"{where}: type must be 'Feature'"
        for key in ("geometry", "properties"):
            assert key in feature, f"{where}: missing {key!r}"
        assert "objectType" not in feature, f"{where}: objectType must sit inside properties"
        props = feature["properties"]
        assert isinstance(props, dict), f"{where}: properties must be an object"
        assert props.get("objectType") in OBJECT_TYPES, (
            f"{where}: objectType must be one of {OBJECT_TYPES}"
        )
        if "classification" in props:
            cls = props["classification"]
            assert isinstance(cls, dict) and set(cls) >= {"name", "color"}, (
                f"{where}: classification needs both 'name' and 'color'"
            )
            assert isinstance(cls["name"], str) and cls["name"], (
                f"{where}: classification name must be a string"
            )
            color = cls["color"]
            assert isinstance(color, list) and len(color) == 3, f"{where}: color must be [r, g, b]"
            assert all(
                isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color
            ), f"{where}: color values must be ints 0-255"
        if "measurements" in props:
            m = props["measurements"]
            assert isinstance(m, dict), f"{where}: measurements must be a flat name -> number map"
            for name, value in m.items():
                assert isinstance(name, str), f"{where}: measurement names must be strings"
                assert (
                    isinstance(value, (int, float))
                    and not isinstance(value, bool)
                    and math.isfinite(value)
                ), f"{where}: measurement {name!r} must be a finite number"
        assert "id" in feature, f"{where}: needs an id"
        assert isinstance(feature["id"], str), f"{where}: id must be a string"
        assert _is_uuid(feature["id"]), f"{where}: id must be a UUID string, got {feature['id']!r}"
        _check_geometry(feature["geometry"], where)


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def _check_geometry(geometry: dict, where: str) -> None:
    assert isinstance(geometry, dict) and "type" in geometry and "coordinates" in geometry, (
        f"{where}: geometry needs type and coordinates"
    )
    kind = geometry["type"]
    coords = geometry["coordinates"]
    assert kind in {
        "Point",
        "MultiPoint",
        "LineString",
        "MultiLineString",
        "Polygon",
        "MultiPolygon",
    }, f"{where}: unsupported geometry type {kind!r}"
    flat = np.asarray(_positions(coords), dtype=np.float64)
    assert flat.size > 0 and flat.shape[-1] == 2, f"{where}: positions must be [x, y]"
    assert np.isfinite(flat).all(), f"{where}: coordinates must be finite"
    rings = (
        coords
        if kind == "Polygon"
        else [r for p in coords for r in p]
        if kind == "MultiPolygon"
        else []
    )
    for ring in rings:
        assert len(ring) >= 4 and ring[0] == ring[-1], (
            f"{where}: polygon rings must be closed (>= 4 positions)"
        )
    shape = shapely.geometry.shape(geometry)
    assert shape.is_valid, f"{where}: invalid geometry ({shapely.is_valid_reason(shape)})"


def _positions(coords) -> list:
    if coords and isinstance(coords[0], (int, float)):
        return [coords]
    return [p for c in coords for p in _positions(c)]


def _detection_features(obj: dict) -> list[dict]:
    return [f for f in obj["features"] if f["properties"]["objectType"] == "detection"]


# -- the checker bites ---------------------------------------------------------------


def _good_collection() -> dict:
    return random_result(n=20).to_geo_dict()


def _break(obj: dict, fault: str) -> dict:
    obj = copy.deepcopy(obj)
    det = _detection_features(obj)[0]
    ann = next(f for f in obj["features"] if f["geometry"]["type"] in ("Polygon", "MultiPolygon"))
    if fault == "objectType at feature level":
        det["objectType"] = det["properties"].pop("objectType")
    elif fault == "classification without color":
        del det["properties"]["classification"]["color"]
    elif fault == "color as hex":
        det["properties"]["classification"]["color"] = "#ff0000"
    elif fault == "id not a UUID":
        det["id"] = "detection-1"
    elif fault == "nested measurements":
        det["properties"]["measurements"] = [{"name": "score", "value": 0.5}]
    elif fault == "NaN measurement":
        det["properties"]["measurements"]["score"] = float("nan")
    elif fault == "unclosed ring":
        ann["geometry"] = {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10]]]}
    elif fault == "self-intersecting polygon":
        ann["geometry"] = {
            "type": "Polygon",
            "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]],
        }
    elif fault == "infinite coordinate":
        det["geometry"]["coordinates"] = [float("inf"), 3.0]
    elif fault == "missing properties":
        del det["properties"]
    return obj


@pytest.mark.parametrize(
    "fault",
    [
        "objectType at feature level",
        "classification without color",
        "color as hex",
        "id not a UUID",
        "nested measurements",
        "NaN measurement",
        "unclosed ring",
        "self-intersecting polygon",
        "infinite coordinate",
        "missing properties",
    ],
)
def test_checker_rejects_what_qupath_refuses(fault):
    good = _good_collection()
    check_qupath_geojson(good)
    with pytest.raises(AssertionError):
        check_qupath_geojson(_break(good, fault))


# -- what we write -------------------------------------------------------------------


def test_written_geojson_passes_and_reads_back_to_the_same_points(tmp_path):
    offset = (1000.5, 250.0)
    result = random_result(n=150, bounds_offset=offset)
    path = result.to_geojson(tmp_path / "case.geojson")
    obj = json.loads(path.read_text(encoding="utf-8"))
    check_qupath_geojson(obj)
    det = _detection_features(obj)
    assert len(det) == result.count
    for f, score in zip(det, result.detections["score"], strict=True):
        assert f["properties"]["classification"]["name"] == "Mitotic figure"
        assert f["properties"]["measurements"] == {"score": score}
    frame = geopandas.read_file(path)
    points = frame[frame["objectType"] == "detection"].geometry
    back = np.column_stack([points.x.to_numpy() + offset[0], points.y.to_numpy() + offset[1]])
    expected = result.detections[["x", "y"]].to_numpy()
    np.testing.assert_allclose(back, expected, rtol=0, atol=1e-9)
    assert not any(path.parent.glob(".*.tmp"))


def test_tissue_and_hotspot_are_annotations_with_count_and_area(tmp_path):
    offset = (64.0, 32.0)
    result = random_result(n=300, bounds_offset=offset)
    obj = json.loads(result.to_geojson(tmp_path / "a.geojson").read_text(encoding="utf-8"))
    annotations = {
        f["properties"]["classification"]["name"]: f
        for f in obj["features"]
        if f["properties"]["objectType"] == "annotation"
    }
    assert set(annotations) == {"Tissue", "Hotspot"}
    points = shapely.points(
        np.array([f["geometry"]["coordinates"] for f in _detection_features(obj)])
    )

    tissue = annotations["Tissue"]
    shape = shapely.geometry.shape(tissue["geometry"])
    assert tissue["properties"]["measurements"]["area_mm2"] == pytest.approx(result.tissue_area_mm2)
    assert shape.area * 16e-6 == pytest.approx(result.tissue_area_mm2)  # 4 µm/px
    assert tissue["properties"]["measurements"]["count"] == np.count_nonzero(
        shapely.covers(shape, points)
    )

    hot = annotations["Hotspot"]
    box = shapely.geometry.shape(hot["geometry"])
    spot = result.hotspot
    assert shapely.equals_exact(box, shapely.transform(spot.polygon, lambda c: c - offset), 1e-9)
    m = hot["properties"]["measurements"]
    assert m["count"] == spot.count == _half_open_count(box, points)
    assert m["area_mm2"] == pytest.approx(2.37) and box.area * 16e-6 == pytest.approx(2.37)
    assert m["count_per_10hpf"] == spot.count


def _half_open_count(box: shapely.Polygon, points: np.ndarray) -> int:
    x0, y0, x1, y1 = box.bounds
    xy = shapely.get_coordinates(points)
    return int(np.sum((xy[:, 0] >= x0) & (xy[:, 0] < x1) & (xy[:, 1] >= y0) & (xy[:, 1] < y1)))


def test_options_leave_out_tissue_and_hotspot():
    result = random_result(n=30)
    obj = result.to_geo_dict(include_tissue=False, include_hotspot=False)
    check_qupath_geojson(obj)
    assert {f["properties"]["objectType"] for f in obj["features"]} == {"detection"}


def test_empty_result_is_a_valid_feature_collection(tmp_path):
    slide = painted_slide()
    result = make_result(np.empty((0, 2)), np.empty(0), slide=slide, tissue=no_tissue(slide))
    obj = json.loads(result.to_geojson(tmp_path / "empty.geojson").read_text(encoding="utf-8"))
    check_qupath_geojson(obj)
    assert obj["features"] == []
    assert len(geopandas.read_file(tmp_path / "empty.geojson")) == 0

    with_tissue = make_result(np.empty((0, 2)), np.empty(0), slide=slide)
    obj = json.loads(with_tissue.to_geojson(tmp_path / "t.geojson").read_text(encoding="utf-8"))
    check_qupath_geojson(obj)
    assert [f["properties"]["classification"]["name"] for f in obj["features"]] == [
        "Tissue",
        "Hotspot",
    ]
    assert all(f["properties"]["measurements"]["count"] == 0 for f in obj["features"])


def test_ids_are_stable_for_the_same_slide_and_point():
    rng = np.random.default_rng(7)
    points = rng.uniform(120, 880, size=(40, 2))
    scores = rng.uniform(0.6, 1.0, 40)
    perm = rng.permutation(40)

    def ids(result):
        return {
            tuple(f["geometry"]["coordinates"]): f["id"]
            for f in _detection_features(result.to_geo_dict())
        }

    first = ids(make_result(points, scores))
    again = ids(make_result(points[perm], scores[perm] * 0.99))  # another run, other scores
    assert first == again
    assert len(set(first.values())) == 40
    other_slide = ids(make_result(points, scores, name="other.svs"))
    assert not set(first.values()) & set(other_slide.values())


def test_points_that_round_alike_still_get_distinct_ids():
    result = make_result([(500.01, 400.0), (500.02, 400.0)], [0.9, 0.8])
    obj = result.to_geo_dict()
    check_qupath_geojson(obj)
    assert len({f["id"] for f in obj["features"]}) == len(obj["features"])


def test_run_metadata_sits_in_a_member_qupath_ignores():
    result = random_result(n=10)
    meta = result.to_geo_dict()["wsimito"]
    assert meta["detector"] == "demo"
    assert meta["detector_metadata"]["training_data"] == "synthetic"
    assert "not for diagnostic use" in meta["detector_metadata"]["intended_use"]
    assert meta["threshold"] == 0.5 and meta["mpp"] == 4.0
    json.dumps(result.to_geo_dict(), allow_nan=False)


def test_polygon_tissue_with_a_hole_stays_valid_after_the_offset(tmp_path):
    slide = painted_slide()
    ring = shapely.Point(550, 500).buffer(380)
    tissue = Tissue.from_polygons(ring.difference(shapely.Point(550, 500).buffer(120)), slide)
    result = random_result(n=60, tissue=tissue, bounds_offset=(0.25, 1e4))
    obj = json.loads(result.to_geojson(tmp_path / "ring.geojson").read_text(encoding="utf-8"))
    check_qupath_geojson(obj)
    tissue_geom = next(
        f["geometry"]
        for f in obj["features"]
        if f["properties"]["classification"]["name"] == "Tissue"
    )
    assert len(tissue_geom["coordinates"]) == 2  # exterior and the hole
