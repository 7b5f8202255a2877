"""The training loop on synthetic slides: it learns, resumes exactly, and its best
checkpoint is an ordinary detector that count_mitoses uses unchanged."""

from __future__ import annotations

import csv
from pathlib import Path

import _synthetic_training
import numpy as np
import pytest
from _synthetic_training import point_truth, small_config

import wsimito
from wsimito.cli import main
from wsimito.evaluate import score_points
from wsimito.models import PointDetector
from wsimito.train.config import TrainingConfig
from wsimito.train.loop import Trainer

synthetic_set = _synthetic_training.synthetic_set  # the session fixture

COMPARED = ("loss", "lr", "threshold", "f1", "precision", "recall", "tp", "fp", "fn")


def test_training_raises_validation_f1_and_the_best_checkpoint_counts(synthetic_set, tmp_path):
    folder, cells = synthetic_set
    config = TrainingConfig.from_dict(
        small_config(folder, tmp_path / "run", train={"epochs": 3}, test={"evaluate": True})
    )
    lines: list[str] = []
    trainer = Trainer(config, progress=False, log=lines.append)
    try:
        untrained = trainer.validate()
        result = trainer.fit()
    finally:
        trainer.close()
    assert untrained["f1"] < 0.3
    best = max(result.history, key=lambda row: row["f1"])
    assert best["f1"] >= 0.8, result.history
    with open(tmp_path / "run" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert "f1 standard" in rows[0]
    pytest.importorskip("matplotlib")
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000

    detector = wsimito.load_detector(result.best, device="cpu")
    assert isinstance(detector, PointDetector)
    assert detector.threshold == pytest.approx(best["threshold"])
    assert "synthetic" in detector.metadata["training_data"]
    assert detector.metadata["validation_f1"] == pytest.approx(best["f1"])
    # count_mitoses with the loaded checkpoint gives exactly the validation score ...
    counted = wsimito.count_mitoses(folder / "v0.svs", detector, tissue=None, progress=False)
    score = score_points(
        np.column_stack([counted.points, counted.scores]),
        point_truth(cells, "v0.svs"),
        mpp=0.25,
        threshold=detector.threshold,
    )
    assert score.f1 == pytest.approx(best["f1"])
    assert counted.count == score.tp + score.fp
    # ... and, on the test slide, the end-of-run test score (only 4 small training slides:
    # it finds the figures, but fires on more unannotated nuclei than on the validation slide)
    counted = wsimito.count_mitoses(folder / "x0.svs", detector, tissue=None, progress=False)
    score = score_points(
        np.column_stack([counted.points, counted.scores]),
        point_truth(cells, "x0.svs"),
        mpp=0.25,
        threshold=detector.threshold,
    )
    assert score.recall >= 0.75
    assert result.test["f1"] == pytest.approx(score.f1)
    assert (tmp_path / "run" / "test_metrics.csv").is_file()


def test_resume_reproduces_the_uninterrupted_run(synthetic_set, tmp_path):
    folder, _ = synthetic_set
    every_augmentation = {
        name: {"p": 0.5} for name in ("zoom", "stain_matrix", "hed", "fda", "blur", "jpeg")
    }
    every_augmentation["fda"]["bank_patches"] = 2

    def config(out: Path) -> TrainingConfig:
        return TrainingConfig.from_dict(
            small_config(
                folder,
                out,
                sampler={"epoch_size": 16},
                train={"epochs": 3, "batch_size": 8, "prefetch": 1},
                augment={**every_augmentation, "flips": {"p": 1.0}},
                optimizer={"lr": 1e-2},
                validation={"min_score": 0.01},
            )
        )

    straight = Trainer(config(tmp_path / "a"), progress=False, log=lambda _: None)
    try:
        whole = straight.fit().history
    finally:
        straight.close()
    first = Trainer(config(tmp_path / "b"), progress=False, log=lambda _: None)
    try:
        first.fit(until=2)
    finally:
        first.close()
    second = Trainer(config(tmp_path / "b"), progress=False, log=lambda _: None)
    try:
        resumed = second.fit(resume=True).history
    finally:
        second.close()
    assert len(resumed) == 3
    for key in COMPARED:
        np.testing.assert_equal(resumed[2][key], whole[2][key], err_msg=key)
        np.testing.assert_equal(resumed[1][key], whole[1][key], err_msg=key)
    assert whole[2]["tp"] > 0  # the compared epochs found figures
    assert whole[2]["loss"] != whole[1]["loss"]  # the compared epochs did train
    a = wsimito.load_detector(tmp_path / "a" / "best.pt", device="cpu")
    b = wsimito.load_detector(tmp_path / "b" / "best.pt", device="cpu")
    for (name, x), (_, y) in zip(
        a.model.state_dict().items(), b.model.state_dict().items(), strict=True
    ):
        assert np.array_equal(x.numpy(), y.numpy()), name


def _toml(folder: Path, out: Path, extra: str = "") -> str:
    return f"""
name = "cli-run"
out = "{out}"
device = "cpu"
training_data = "synthetic slides (test)"
{extra}
[data]
annotations = "{folder / "cells.csv"}"
format = "table"
images = "{folder}"

[split]
validation = ["valid"]

[sampler]
epoch_size = 8
domains = ["stain"]

[augment.fda]
enabled = false

[model]
mpp = 0.5
patch_size = 64
tile_size = 256
overlap = 32
width = 8
depth = 3

[train]
epochs = 1
batch_size = 8
num_workers = 1

[test]
evaluate = false
"""


def test_cli_trains_resumes_and_names_bad_keys(synthetic_set, tmp_path, capsys):
    folder, _ = synthetic_set
    path = tmp_path / "config.toml"
    path.write_text(_toml(folder, tmp_path / "out"))
    assert main(["train", str(path), "-q"]) == 0
    assert (tmp_path / "out" / "best.pt").is_file()
    assert "best detector" in capsys.readouterr().out
    assert main(["train", str(path), "-q"]) == 2  # the folder holds a run
    assert "--resume" in capsys.readouterr().err
    assert main(["train", str(path), "-q", "--resume"]) == 0
    path.write_text(_toml(folder, tmp_path / "other", "seeed = 1"))
    assert main(["train", str(path), "-q"]) == 2
    err = capsys.readouterr().err
    assert "seeed" in err and "seed" in err
    path.write_text(_toml(folder, tmp_path / "other").replace('format = "table"', 'format = "xml"'))
    assert main(["train", str(path), "-q"]) == 2
    assert "[data] format" in capsys.readouterr().err
