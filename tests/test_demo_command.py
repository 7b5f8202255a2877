"""`wsimito demo`: a synthetic slide through the real pipeline to files QuPath and people can
read, with the synthetic-data warning printed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from test_geojson_qupath import check_qupath_geojson

from wsimito.cli import main
from wsimito.demo_run import run_demo
from wsimito.slide import open_slide

SEED, SIZE = 8, 2048  # a seed whose 2048 px slide holds mitotic figures


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo-out")
    code = main(["demo", "--out", str(out), "--seed", str(SEED), "--size", str(SIZE)])
    return code, out


def _read_json(path: Path) -> dict:
    def no_nan(value: str) -> float:
        raise ValueError(f"{path} holds {value}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=no_nan)


def test_demo_writes_a_readable_slide_of_the_requested_size(demo_run):
    code, out = demo_run
    assert code == 0
    with open_slide(out / f"synthetic-{SEED}.svs") as slide:
        assert slide.dimensions == (SIZE, SIZE)
        assert slide.mpp == pytest.approx(0.25)


def test_demo_geojson_passes_qupath_rules_and_matches_the_summary(demo_run):
    _, out = demo_run
    geo = _read_json(out / f"synthetic-{SEED}.geojson")
    check_qupath_geojson(geo)
    summary = _read_json(out / "summary.json")
    detections = [f for f in geo["features"] if f["properties"]["objectType"] == "detection"]
    assert (
        len(detections)
        == summary["count"]
        == summary["true_positives"] + summary["false_positives"]
    )
    assert summary["true_positives"] + summary["false_negatives"] == summary["true_mitotic_figures"]
    assert "synthetic" in geo["wsimito"]["detector_metadata"]["training_data"]


def test_demo_summary_scores_against_ground_truth_and_carries_the_warning(demo_run):
    _, out = demo_run
    summary = _read_json(out / "summary.json")
    tp, fp, fn = summary["true_positives"], summary["false_positives"], summary["false_negatives"]
    assert summary["true_mitotic_figures"] > 0
    assert summary["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert summary["match_radius_um"] == 7.5
    assert "not for diagnostic use" in summary["warning"]
    assert "not for diagnostic use" in summary["intended_use"]
    assert Path(summary["files"]["geojson"]).is_file()


def test_demo_overview_is_a_png_with_the_slide_aspect_and_a_legend(demo_run):
    _, out = demo_run
    with Image.open(out / "overview.png") as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width == 1200 and height > width  # square slide plus a legend strip


def test_run_demo_prints_count_f1_files_and_warning(tmp_path, capsys):
    run = run_demo(tmp_path, seed=SEED, size=1024, progress=False)
    text = capsys.readouterr().out
    assert "not for diagnostic use" in text
    assert "F1" in text and str(run.result.count) in text
    assert "overview.png" in text and "summary.json" in text


def test_run_demo_rejects_a_slide_smaller_than_one_tile(tmp_path):
    with pytest.raises(ValueError, match="at least 512 px"):
        run_demo(tmp_path, size=100)
