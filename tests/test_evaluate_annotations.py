"""Scoring annotation sets: per-slide radius in µm, pooled and per-domain F1, the CLI."""

from __future__ import annotations

import csv
import sys

import numpy as np
import pandas as pd
import pytest
from grand_challenge_metrics.scorers import score_detection

import wsimito
from wsimito.cli import main
from wsimito.evaluate import score_annotations
from wsimito.io.annotations import AnnotationError, Annotations
from wsimito.io.sliderunner import write_sliderunner

JSON = "annotations/MIDOGpp.json"
SPLIT = "annotations/MIDOGpp-split.csv"


@pytest.fixture(scope="module")
def midog_test(sample):
    ann = wsimito.read_annotations(sample(JSON), split=sample(SPLIT))
    return ann.select(split="test")


@pytest.fixture(scope="module")
def predictions(midog_test, tmp_path_factory):
    """A stand-in detector's output on the MIDOG++ test images, as one SlideRunner file:
    most figures found near their centre, some look-alikes mistaken, some missed."""
    rng = np.random.default_rng(21)
    frame = midog_test.to_frame()
    keep = rng.uniform(size=len(frame)) < np.where(frame["kind"] == "mitosis", 0.85, 0.3)
    found = frame[keep]
    xy = found[["x", "y"]].to_numpy() + rng.normal(0, 14, (len(found), 2))
    score = np.where(
        found["kind"] == "mitosis", rng.uniform(0.3, 1, len(found)), rng.uniform(0, 0.8, len(found))
    )
    cells = pd.DataFrame(
        {
            "slide": found["slide"],
            "x": xy[:, 0],
            "y": xy[:, 1],
            "label": "Mitotic figure",
            "score": score,
        }
    )
    info = midog_test.slide_info[["slide", "width", "height"]]
    path = tmp_path_factory.mktemp("pred") / "detections.sqlite"
    return write_sliderunner(path, Annotations(cells, info))


def _challenge_counts(pred: Annotations, gt: Annotations, slides, mpp: float, threshold: float):
    tp = fp = fn = 0
    for slide in slides:
        truth = gt.points(slide, kind="mitosis")
        found = pred.points(slide)[pred.scores(slide) >= threshold]
        if len(truth) and len(found):
            got = score_detection(
                ground_truth=[tuple(p) for p in truth.tolist()],
                predictions=[tuple(p) for p in found.tolist()],
                radius=7.5 / mpp,
            )
            tp, fp, fn = (
                tp + got.true_positives,
                fp + got.false_positives,
                fn + got.false_negatives,
            )
        else:
            fp, fn = fp + len(found), fn + len(truth)
    return tp, fp, fn


def test_midog_test_split_per_tumour_equals_the_challenge_scorer(predictions, midog_test):
    pred = wsimito.read_annotations(predictions, outside="keep")  # a few stray past the edge
    result = score_annotations(pred, midog_test, mpp=0.25, by="tumor_type", threshold=0.5)
    table = result.table().set_index("domain")
    info = midog_test.slide_info
    for tumour, rows in info.groupby("tumor_type"):
        expected = _challenge_counts(pred, midog_test, rows["slide"], 0.25, 0.5)
        assert tuple(table.loc[tumour, ["tp", "fp", "fn"]]) == expected, tumour
    total = _challenge_counts(pred, midog_test, info["slide"], 0.25, 0.5)
    assert (result.total.tp, result.total.fp, result.total.fn) == total
    assert result.f1 == pytest.approx(2 * total[0] / (2 * total[0] + total[1] + total[2]))
    assert len(table) == 8 and table.loc["all", "slides"] == 111
    assert table.loc["all", "ground_truth"] == (midog_test.to_frame()["kind"] == "mitosis").sum()
    # the pooled curve agrees with the counts at the threshold used
    at = result.curve[result.curve["threshold"] >= 0.5].iloc[-1]
    assert (at.tp, at.fp, at.fn) == total


def test_radius_in_um_uses_each_slides_mpp():
    truth = Annotations.concat(
        [
            Annotations.from_points([[100.0, 100.0]], slide="fine.svs", mpp=0.25),
            Annotations.from_points([[100.0, 100.0]], slide="coarse.svs", mpp=0.5),
            Annotations.from_points([[100.0, 100.0]], slide="unknown.svs"),
        ]
    )
    pred = Annotations.concat(
        [Annotations.from_points([[120.0, 100.0]], slide=s) for s in truth.slides]
    )  # 20 px away: 5 µm at 0.25 µm/px (hit), 10 µm at 0.5 µm/px (miss)
    with pytest.raises(wsimito.MissingMPPError, match="'unknown.svs'"):
        score_annotations(pred, truth)
    result = score_annotations(pred, truth, mpp={"unknown.svs": 0.2})
    rows = result.per_slide.set_index("slide")
    assert rows["tp"].to_dict() == {"fine.svs": 1, "coarse.svs": 0, "unknown.svs": 1}
    assert rows.loc["coarse.svs", "radius_px"] == 15.0
    assert rows.loc["unknown.svs", "mpp"] == 0.2


def test_only_mitoses_count_and_slides_match_without_suffix():
    truth = Annotations.from_points(
        [[10.0, 10.0], [200.0, 10.0]],
        slide="001.tiff",
        labels=["mitotic figure", "not mitotic figure"],
        mpp=0.25,
    )
    pred = Annotations.concat(
        [
            Annotations.from_points(
                [[12.0, 10.0], [201.0, 10.0], [400.0, 0.0]],
                slide="001",
                labels=["Mitotic figure", "Mitotic figure", "Imposter"],
            ),
            Annotations.from_points([[1.0, 1.0]], slide="999.tiff"),
        ]
    )
    result = score_annotations(pred, truth)
    # the look-alike in the ground truth is no target; the predicted "Imposter" no detection
    assert (result.total.tp, result.total.fp, result.total.fn) == (1, 1, 0)
    assert result.ignored_slides == ["999.tiff"]
    assert len(result.curve) == 0 and np.isnan(result.average_precision)


def test_missing_prediction_slides_and_unusable_classes(tmp_path):
    truth = Annotations.concat(
        [Annotations.from_points([[5.0, 5.0]], slide=s, mpp=0.25) for s in ("a.png", "b.png")]
    )
    pred = Annotations.from_points([[5.0, 5.0]], slide="a.png")
    with pytest.raises(AnnotationError, match=r"no predictions for 1 ground-truth slides.*b.png"):
        score_annotations(pred, truth)
    empty = score_annotations(pred, truth, missing="empty")
    assert (empty.total.tp, empty.total.fn) == (1, 1)
    unclassified = Annotations.from_points([[5.0, 5.0]], slide="a.png", labels="cell")
    with pytest.raises(AnnotationError, match="none is a mitotic figure .* mitosis_names="):
        score_annotations(unclassified, truth, missing="empty")
    with pytest.raises(AnnotationError, match="cannot report by 'scanner'.*split="):
        score_annotations(pred, truth, by="scanner", missing="empty")


def test_cli_prints_the_table_and_writes_csv_and_plot(predictions, sample, tmp_path, capsys):
    out_csv, out_png = tmp_path / "scores.csv", tmp_path / "pr.png"
    argv = [
        "evaluate",
        str(predictions),
        sample(JSON),
        "--split",
        sample(SPLIT),
        "--select",
        "split=test",
        "--by",
        "scanner",
        "--mpp",
        "0.25",
        "--csv",
        str(out_csv),
        "--plot",
        str(out_png),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    gt = wsimito.read_annotations(sample(JSON), split=sample(SPLIT)).select(split="test")
    expected = score_annotations(predictions, gt, mpp=0.25, by="scanner")
    assert "Hamamatsu XR" in printed and "hit radius 7.5 µm" in printed
    all_row = next(line for line in printed.splitlines() if "│ all" in line)
    assert f"{expected.f1:.3f}" in all_row and str(expected.total.tp) in all_row
    with open(out_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["domain"] for r in rows] == [*sorted(set(gt.slide_info["scanner"])), "all"]
    assert float(rows[-1]["f1"]) == pytest.approx(expected.f1)
    assert float(rows[-1]["average_precision"]) == pytest.approx(expected.average_precision)
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_errors_are_one_line(predictions, sample, tmp_path, capsys, monkeypatch):
    assert main(["evaluate", str(tmp_path / "none.sqlite"), sample(JSON)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err and err.count("\n") == 1
    assert main(["evaluate", str(predictions), sample(JSON), "--select", "split"]) == 2
    assert "COLUMN=VALUE" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if matplotlib were not installed
    png = tmp_path / "pr.png"
    argv = ["evaluate", str(predictions), sample(JSON), "--split", sample(SPLIT)]
    argv += ["--select", "split=test", "--mpp", "0.25", "--plot", str(png)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pip install 'wsimito[plot]'" in err and not png.exists()
