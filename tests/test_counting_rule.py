"""One number everywhere: what is counted, on what area, at what resolution (issue 12, items 1-5).

A figure is counted when its score reaches the threshold and its point lies in
the analysed tissue; count, density, hotspot, GeoJSON, CSV, SlideRunner and the
summary all agree, and points outside stay in ``candidates``.
"""

from __future__ import annotations

import csv
import json
import math
import sqlite3
import warnings

import numpy as np
import pytest
import shapely
from _marks import MarkDetector, draw_marks
from test_geojson_qupath import check_qupath_geojson

import wsimito
from wsimito.slide.array_backend import ArrayBackend
from wsimito.synthetic import write_slide


def _geojson_numbers(obj: dict) -> tuple[int, dict]:
    detections = [f for f in obj["features"] if f["properties"]["objectType"] == "detection"]
    tissue = [f for f in obj["features"] if f["properties"]["classification"]["name"] == "Tissue"]
    assert len(tissue) == 1
    return len(detections), tissue[0]["properties"]["measurements"]


@pytest.fixture(scope="module")
def cmu_result(sample):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the synthetic-detector warning
        return wsimito.count_mitoses(sample("slides/cmu-1-small-region.svs"), progress=False)


def test_cmu_python_and_qupath_show_one_number(cmu_result, tmp_path):
    result = cmu_result
    candidates = result.candidates
    above = candidates["score"] >= result.threshold
    # The user's case: detections above the threshold lie on glass, outside the tissue.
    assert (above & ~candidates["in_tissue"]).sum() > 0
    tissue = shapely.union_all(list(result.tissue.polygons.geometry))
    counted = result.detections[["x", "y"]].to_numpy()
    assert shapely.intersects_xy(tissue, counted[:, 0], counted[:, 1]).all()
    assert result.count == int((above & candidates["in_tissue"]).sum())

    geo = json.loads(result.to_geojson(tmp_path / "cmu.geojson").read_text())
    check_qupath_geojson(geo)
    n_detections, measured = _geojson_numbers(geo)
    assert n_detections == result.count == measured["count"] == geo["wsimito"]["count"]
    assert measured["area_mm2"] == pytest.approx(result.tissue_area_mm2)
    assert measured["density_per_mm2"] == pytest.approx(result.density_per_mm2)
    with open(result.to_csv(tmp_path / "cmu.csv"), newline="") as fh:
        assert len(list(csv.DictReader(fh))) == result.count
    db = sqlite3.connect(result.to_sliderunner(tmp_path / "cmu.sqlite"))
    assert db.execute("SELECT COUNT(*) FROM Annotations").fetchone()[0] == result.count
    db.close()
    summary = result.summary()
    assert summary["count"] == result.count
    assert summary["candidates_outside_tissue"] == int((~candidates["in_tissue"]).sum())
    assert result.hotspot.count == result.count  # the whole tissue is the hotspot here


def painted(width=1200, height=1000, mpp=0.25) -> wsimito.Slide:
    """Glass with a pink tissue rectangle at x 100-1000, y 100-900 px, and dark marks."""
    arr = np.full((height, width, 3), 245, np.uint8)
    arr[100:900, 100:1000] = (200, 120, 180)
    return wsimito.Slide(ArrayBackend(arr), mpp=mpp)


def test_points_outside_the_tissue_stay_candidates_in_every_export(tmp_path):
    from wsimito.result import MitosisResult

    slide = painted(mpp=4.0)
    tissue = wsimito.detect_tissue(slide)
    inside, outside = [(500.0, 500.0), (300.0, 700.0)], [(50.0, 50.0), (1100.0, 950.0)]
    result = MitosisResult(
        points=np.array(inside + outside),
        scores=np.array([0.9, 0.8, 0.95, 0.7]),
        threshold=0.5,
        slide_name="painted",
        slide_dimensions=slide.dimensions,
        slide_mpp=slide.mpp,
        tissue=tissue,
        detector_name="test",
        detector_mpp=0.5,
    )
    assert result.count == 2
    assert sorted(map(tuple, result.counted().xy.tolist())) == sorted(inside)
    assert len(result.candidates) == 4 and result.candidates["counted"].sum() == 2
    n_detections, measured = _geojson_numbers(result.to_geo_dict())
    assert n_detections == measured["count"] == 2
    everything = result.to_geo_dict(include_candidates=True)
    check_qupath_geojson(everything)
    names = [f["properties"]["classification"]["name"] for f in everything["features"]]
    assert names.count("Candidate (not counted)") == 2
    assert result.density_per_mm2 == pytest.approx(2 / result.tissue_area_mm2)


class FlakyBackend(ArrayBackend):
    """Fails every read that touches x in [600, 700) (a broken stretch of JPEG tiles)."""

    def read_level(self, x, y, level, width, height):
        if x < 700 and x + width > 600:
            raise OSError("corrupt JPEG tile")
        return super().read_level(x, y, level, width, height)


def test_skipped_tiles_leave_the_analysed_area_and_the_result_says_partial(tmp_path):
    det = MarkDetector()
    marks = np.array([[60.5, 60.5], [1000.5, 300.5]])
    image = draw_marks(1200, 400, marks, 8.0)  # 2 µm at 0.25 µm/px
    slide = wsimito.Slide(FlakyBackend(image), mpp=0.25)
    with pytest.warns(UserWarning, match="partial"):
        result = wsimito.count_mitoses(slide, det, tissue=None, progress=False, on_error="skip")
    assert result.partial and result.skipped_tiles
    cores = np.array(result.skipped_cores)
    lost = float(np.sum((cores[:, 2] - cores[:, 0]) * (cores[:, 3] - cores[:, 1])))
    full = 1200 * 400 * 0.25**2 * 1e-6
    assert result.skipped_area_mm2 == pytest.approx(lost * 0.25**2 * 1e-6)
    assert result.tissue_area_mm2 == pytest.approx(full - result.skipped_area_mm2)
    assert result.density_per_mm2 == pytest.approx(result.count / result.tissue_area_mm2)
    assert result.count == 2
    geo = result.to_geo_dict()
    assert geo["wsimito"]["partial"] is True
    assert geo["wsimito"]["skipped_area_mm2"] == pytest.approx(result.skipped_area_mm2)
    _, measured = _geojson_numbers(geo)
    assert measured["area_mm2"] == pytest.approx(result.tissue_area_mm2)
    summary = result.summary()
    assert summary["partial"] and summary["skipped_area_mm2"] == pytest.approx(
        result.skipped_area_mm2
    )
    assert "PARTIAL" in repr(result)


def test_a_given_mpp_does_not_override_the_files(sample):
    path = sample("slides/cmu-1-small-region.svs")
    with (
        pytest.warns(UserWarning, match=r"0\.499.*mpp=0\.25"),
        wsimito.open_slide(path, mpp=0.25) as slide,
    ):
        assert slide.mpp == pytest.approx(0.499)
        assert (slide.file_mpp, slide.given_mpp) == (pytest.approx(0.499), 0.25)
    det = MarkDetector(mpp=1.0, tile_size=256, overlap=32)
    with pytest.warns(UserWarning, match="file says"):
        result = wsimito.count_mitoses(path, det, mpp=0.25, progress=False, tissue=None)
    assert result.slide_mpp == pytest.approx(0.499)
    assert (result.mpp_file, result.mpp_given) == (pytest.approx(0.499), 0.25)
    assert result.summary()["mpp_given"] == 0.25
    assert result.to_geo_dict()["wsimito"]["mpp_file"] == pytest.approx(0.499)
    with wsimito.open_slide(path, mpp=0.25, force_mpp=True) as forced:
        assert forced.mpp == 0.25
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with wsimito.open_slide(path, mpp=0.4995) as close:  # within 1 %: no warning
            assert close.mpp == pytest.approx(0.499)
        tcga = sample("slides/tcga-cr-7395-01a-01-ts1.svs")
        with wsimito.open_slide(tcga, mpp=0.25) as no_mpp:
            assert no_mpp.mpp == 0.25 and no_mpp.file_mpp is None


def test_an_analysis_without_tissue_is_not_a_measured_zero():
    tall = wsimito.open_slide(np.full((3000, 3, 3), 180, np.uint8), mpp=0.25)
    with pytest.warns(UserWarning, match="no tissue was analysed"):
        result = wsimito.count_mitoses(tall, MarkDetector(), progress=False)
    assert result.count == 0 and math.isnan(result.density_per_mm2)
    summary = result.summary()
    assert math.isnan(summary["density_per_mm2"]) and summary["tissue_area_mm2"] == 0
    check_qupath_geojson(result.to_geo_dict())  # NaN never reaches the file


def test_a_synthetic_trained_detector_warns_on_slides_wsimito_did_not_make(tmp_path):
    real = np.full((300, 300, 3), (200, 120, 180), np.uint8)
    with pytest.warns(UserWarning, match="trained on synthetic mitotic figures only.*detector="):
        wsimito.count_mitoses(real, "demo", mpp=0.5, tissue=None, progress=False)
    path = tmp_path / "synthetic.svs"
    write_slide(path, 600, 600, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wsimito.count_mitoses(path, "demo", progress=False, tissue=None)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": -0.5}, r"threshold=-0\.5.*\[0, 1\]"),
        ({"threshold": float("nan")}, r"threshold=nan.*\[0, 1\]"),
        ({"threshold": 1.5}, r"threshold=1\.5"),
        ({"batch_size": 2.5}, r"batch_size=2\.5.*positive whole number of tiles"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"batch_size": True}, "batch_size=True"),
        ({"num_workers": 0}, "num_workers=0"),
        ({"mpp": 0}, r"mpp=0.*µm per pixel"),
        ({"mpp": float("nan")}, r"mpp=nan.*µm per pixel"),
        ({"mpp": float("inf")}, r"mpp=inf.*µm per pixel"),
        ({"mpp": -0.25}, r"mpp=-0\.25"),
        ({"merge_radius_um": -1}, r"merge_radius_um=-1.*µm"),
        ({"on_error": "ignore"}, "on_error='ignore'"),
    ],
)
def test_count_mitoses_checks_its_parameters_before_any_work(kwargs, match):
    det = MarkDetector()
    image = np.full((200, 200, 3), 255, np.uint8)
    with pytest.raises(ValueError, match=match):
        wsimito.count_mitoses(image, det, **{"mpp": 0.25, **kwargs}, progress=False)
    assert det.calls == 0


def test_a_cuda_device_without_cuda_says_so():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        wsimito.count_mitoses(np.zeros((64, 64, 3), np.uint8), "demo", mpp=0.5, device="cuda")


def test_geojson_names_one_whole_tissue_hotspot_with_correct_grammar():
    from wsimito.result import MitosisResult

    slide = painted(mpp=0.5)  # 0.6 x 0.5 mm: no 10-HPF window fits
    result = MitosisResult(
        points=np.array([[500.0, 500.0]]),
        scores=np.array([0.9]),
        threshold=0.5,
        slide_name="small",
        slide_dimensions=slide.dimensions,
        slide_mpp=slide.mpp,
        tissue=wsimito.detect_tissue(slide),
        detector_name="test",
        detector_mpp=0.5,
    )
    assert result.hotspot.whole_tissue
    geo = result.to_geo_dict()
    annotations = [f for f in geo["features"] if f["properties"]["objectType"] == "annotation"]
    assert [f["properties"]["classification"]["name"] for f in annotations] == ["Tissue"]
    name = annotations[0]["properties"]["name"]
    assert "1 mitotic figure in" in name and "whole tissue" in name and "under 10 HPF" in name
    assert "1 mitotic figures" not in repr(result)
