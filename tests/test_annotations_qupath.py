"""QuPath point GeoJSON and wsimito's own GeoJSON: points, classes, scores, regions, offsets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_result import random_result

import wsimito
from wsimito.io.annotations import AnnotationError
from wsimito.io.qupath import read_qupath


def _qupath_points_export() -> dict:
    """What QuPath 0.4/0.5 exports after a pathologist clicked cells with the points tool
    (one MultiPoint annotation per class) and drew a rectangle ROI."""
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": "5b0b1c4e-4d57-4c3e-9a57-6a1f6c5d0a11",
                "geometry": {
                    "type": "MultiPoint",
                    "coordinates": [[1200.5, 830.25], [1410.0, 902.75], [1733.125, 1001.5]],
                },
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": "Mitosis", "color": [220, 20, 60]},
                },
            },
            {
                "type": "Feature",
                "id": "0f3b8e3a-2b7e-4bb0-8d7e-2c3c9c4b1e22",
                "geometry": {"type": "MultiPoint", "coordinates": [[1500.0, 700.0]]},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": "Imposter", "color": [70, 130, 180]},
                },
            },
            {
                "type": "Feature",
                "id": "a4b8f0a2-6f0e-4a4f-8f77-44f1a0cfe133",
                "geometry": {"type": "Point", "coordinates": [1600.0, 650.0]},
                "properties": {"objectType": "annotation"},
            },
            {
                "type": "Feature",
                "id": "c9a3c2de-3c55-4d2b-9c07-1f7b9e0c9f44",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [
                        [[1000, 600], [2000, 600], [2000, 1100], [1000, 1100], [1000, 600]]
                    ],
                },
                "properties": {
                    "objectType": "annotation",
                    "name": "ROI 1",
                    "classification": "Region*",
                },
            },
        ],
    }


def test_qupath_points_export_reads_to_one_cell_per_point(tmp_path):
    path = tmp_path / "case-17.svs.geojson"
    path.write_text(json.dumps(_qupath_points_export()))
    ann = wsimito.read_annotations(path)
    frame = ann.to_frame()
    assert ann.slides == ["case-17.svs"]
    assert frame[["x", "y"]].values.tolist() == [
        [1200.5, 830.25],
        [1410.0, 902.75],
        [1733.125, 1001.5],
        [1500.0, 700.0],
        [1600.0, 650.0],
    ]
    assert frame["label"].tolist() == ["Mitosis"] * 3 + ["Imposter", ""]
    assert frame["kind"].tolist() == ["mitosis"] * 3 + ["lookalike", "other"]
    assert frame["id"].iloc[1] == "5b0b1c4e-4d57-4c3e-9a57-6a1f6c5d0a11[1]"
    assert "score" not in frame
    regions = ann.regions
    assert regions["name"].tolist() == ["ROI 1"] and regions["label"].tolist() == ["Region*"]
    assert regions.geometry.iloc[0].bounds == (1000.0, 600.0, 2000.0, 1100.0)


def test_bare_feature_lists_older_class_strings_and_bounds_offsets(tmp_path):
    features = _qupath_points_export()["features"]
    features[0]["properties"]["classification"] = "Mitotic figure"  # QuPath <= 0.1 style
    path = tmp_path / "bare.json"
    path.write_text(json.dumps(features))
    ann = read_qupath(path, slide="mirax.mrxs", bounds_offset=(30000, 12000))
    assert ann.slides == ["mirax.mrxs"]
    assert ann.points("mirax.mrxs", kind="mitosis")[0].tolist() == [31200.5, 12830.25]
    assert ann.regions.geometry.iloc[0].bounds[:2] == (31000.0, 12600.0)


def test_wsimito_geojson_reads_back_to_the_results_detections(tmp_path):
    result = random_result(n=80, bounds_offset=(512.0, 256.0))
    path = result.to_geojson(tmp_path / "case.svs.geojson")
    ann = wsimito.read_annotations(path)
    expected = result.detections
    assert ann.slides == [result.slide_name]
    # subtracting and adding the offset back rounds in the last bit, nothing more
    np.testing.assert_allclose(
        ann.points(result.slide_name), expected[["x", "y"]].to_numpy(), rtol=0, atol=1e-9
    )
    assert np.array_equal(ann.scores(result.slide_name), expected["score"].to_numpy())
    assert set(ann.labels) == {"Mitotic figure"} and ann.has_scores
    info = ann.slide_info.iloc[0]
    assert (info["width"], info["height"]) == result.slide_dimensions
    assert info["mpp"] == result.slide_mpp
    assert set(ann.regions["label"]) <= {"Tissue", "Hotspot"} and len(ann.regions) >= 1
    tissue = ann.regions[ann.regions["label"] == "Tissue"].geometry.iloc[0]
    assert tissue.area == pytest.approx(result.tissue.polygons.geometry.union_all().area)
    # the file itself holds QuPath coordinates: level-0 px minus the bounds offset
    first = json.loads(path.read_text())["features"][0]["geometry"]["coordinates"]
    assert first == [expected["x"].iloc[0] - 512.0, expected["y"].iloc[0] - 256.0]


def test_not_geojson_and_bad_points_are_named(tmp_path):
    path = tmp_path / "x.geojson"
    path.write_text(json.dumps({"type": "Topology"}))
    with pytest.raises(AnnotationError, match="not GeoJSON"):
        read_qupath(path)
    path.write_text(
        json.dumps(
            [{"type": "Feature", "id": "f1", "geometry": {"type": "Point", "coordinates": ["a"]}}]
        )
    )
    with pytest.raises(AnnotationError, match="feature f1 has point"):
        read_qupath(path)
    path.write_text("{not json")
    with pytest.raises(AnnotationError, match="not valid JSON .*line 1"):
        wsimito.read_annotations(path)


def test_a_folder_of_results_reads_to_one_slide_each(tmp_path):
    first = random_result(n=30, seed=1, name="a.svs")
    second = random_result(n=40, seed=2, name="b.svs")
    first.to_geojson(tmp_path / "a.svs.geojson")
    second.to_geojson(tmp_path / "b.svs.geojson")
    ann = wsimito.read_annotations(tmp_path)
    assert ann.slides == ["a.svs", "b.svs"]
    assert [len(ann.points(s)) for s in ann.slides] == [first.count, second.count]


def test_qupath_point_annotations_round_trip_through_the_geojson_writer(tmp_path):
    from wsimito.io.annotations import Annotations, class_color
    from wsimito.io.geojson import feature_collection, point_features, write_geojson

    rng = np.random.default_rng(9)
    labels = rng.choice(["Mitotic figure", "Non-mitotic figure", "Tumor"], 40).tolist()
    original = Annotations.from_points(
        rng.uniform(0, 5000, (40, 2)), slide="case.ndpi", labels=labels
    )
    features = []
    for label in original.labels:
        kind = original.select(label=label).to_frame()["kind"].iloc[0]
        features += point_features(
            original.points("case.ndpi", label=label),
            slide_name="case.ndpi",
            class_name=label,
            color=class_color(label, kind),
            object_type="annotation",
        )
    path = write_geojson(tmp_path / "case.ndpi.geojson", feature_collection(features))
    back = wsimito.read_annotations(path)
    columns = ["slide", "x", "y", "label", "kind"]
    order = ["label", "x", "y"]
    expected = original.to_frame()[columns].sort_values(order, ignore_index=True)
    got = back.to_frame()[columns].sort_values(order, ignore_index=True)
    assert got.equals(expected)
