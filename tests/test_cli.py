"""The command line: `wsimito info` and `wsimito count` on real files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from _marks import draw_marks, write_pyramid
from test_geojson_qupath import check_qupath_geojson

from wsimito.cli import main
from wsimito.models import PointDetector, PointHeatmapNet, save_detector


def test_info_prints_size_resolution_and_levels(sample, capsys):
    assert main(["info", sample("slides/cmu-1-small-region.svs")]) == 0
    out = capsys.readouterr().out
    assert "2220 x 2967 px" in out and "0.499 µm/px" in out


def test_info_without_mpp_says_how_to_pass_it(sample, capsys):
    assert main(["info", sample("slides/tcga-cr-7395-01a-01-ts1.svs")]) == 0
    assert "--mpp" in capsys.readouterr().out


def test_bad_file_exits_with_a_message(sample, capsys):
    assert main(["info", sample("slides/broken.svs")]) == 2
    assert "broken.svs" in capsys.readouterr().err


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    det = PointDetector(
        PointHeatmapNet(width=8, depth=3, stride=4),
        mpp=0.5,
        tile_size=128,
        overlap=32,
        threshold=0.2,
        min_score=0.05,
        device="cpu",
        metadata={
            "training_data": "synthetic (untrained test weights)",
            "intended_use": "tests only; not for diagnostic use",
        },
    )
    return save_detector(det, tmp_path_factory.mktemp("w") / "tiny.pt")


def test_count_writes_geojson_per_slide_and_a_summary(tmp_path, weights, capsys):
    marks = np.array([[100.5, 120.5], [400.5, 300.5], [700.5, 500.5]])
    slides = []
    for i in range(2):
        path = write_pyramid(
            tmp_path / f"s{i}.tif", draw_marks(900, 700, marks, 8.0), 0.25, levels=2
        )
        slides.append(str(path))
    out = tmp_path / "out"
    assert (
        main(["count", *slides, "-o", str(out), "--detector", str(weights), "-q", "--no-tissue"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "synthetic" in printed and "not for diagnostic use" in printed
    with open(out / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["slide"] for r in rows] == slides
    for row in rows:
        geo = json.loads(Path(row["geojson"]).read_text())
        check_qupath_geojson(geo)
        detections = [f for f in geo["features"] if f["properties"]["objectType"] == "detection"]
        assert len(detections) == int(row["count"])
        assert float(row["mpp"]) == pytest.approx(0.25)
    assert not list(out.glob(".*.tmp"))


def test_info_prints_markup_in_a_path_as_text(sample, tmp_path, capsys):
    folder = tmp_path / "odd["
    folder.mkdir()
    path = folder / "z][bold]x.svs"
    path.write_bytes(Path(sample("slides/cmu-1-small-region.svs")).read_bytes())
    assert main(["info", str(path)]) == 0
    out = "".join(capsys.readouterr().out.split())  # the title may wrap
    assert "".join(str(path).split()) in out
