"""Learning is tested, not assumed: on small synthetic slides, mining finds the planted
look-alikes the first stage confuses, and a cascade trained on the mined patches removes
most of them while keeping the figures.

The first stage is the learning-free dark-blob detector, which fires on mitotic figures and
on their dark look-alikes alike (pyknotic nuclei, apoptotic bodies, dark lymphocytes).
Slides are rendered in memory at 0.5 µm/px and read through the real array backend."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial import cKDTree

import wsimito
from wsimito.models.cascade import CascadeDetector
from wsimito.models.detectors import DarkBlobDetector
from wsimito.synthetic import make_slide
from wsimito.train.mining import mine_hard_negatives
from wsimito.train.wsdal import ClassifierConfig, PatchSet, train_patch_classifier

MPP = 0.5
RADIUS_PX = 7.5 / MPP
FIRST_THRESHOLD = 0.5


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small networks train as fast on one thread, and do not stall in thread barriers
    when the CPU is shared with other work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _slides(seeds: range) -> tuple[dict, dict]:
    slides, truths = {}, {}
    for seed in seeds:
        image, truth = make_slide(
            768,
            768,
            mpp=MPP,
            seed=seed,
            stain="standard",
            tissue_fraction=1.0,
            tumour_fraction=0.8,
            mitoses_per_mm2=200,
            imposters_per_mitosis=3.0,
        )
        slides[f"slide-{seed}"] = wsimito.open_slide(image, mpp=MPP)
        truths[f"slide-{seed}"] = truth
    return slides, truths


def _first_stage() -> DarkBlobDetector:
    return DarkBlobDetector(
        mpp=MPP, tile_size=256, overlap=32, blob_um=7.0, darkness=0.45, device="cpu"
    )


@pytest.fixture(scope="module")
def mined():
    slides, truths = _slides(range(100, 103))
    rows = [
        (name, x, y, kind)
        for name, truth in truths.items()
        for kind, points in (("mitosis", truth.mitoses), ("lookalike", truth.imposters))
        for x, y in points
    ]
    annotations = pd.DataFrame(rows, columns=["slide", "x", "y", "kind"])
    result = mine_hard_negatives(
        _first_stage(), slides, annotations, threshold=FIRST_THRESHOLD, tissue=None
    )
    return slides, truths, result


@pytest.fixture(scope="module")
def trained(mined):
    slides, _, result = mined
    config = ClassifierConfig(
        mpp=1.0,
        patch_size=32,
        margin=4,
        max_shift_px=2,
        width=8,
        epochs=5,
        batch_size=64,
        epoch_size=640,
        lr=3e-3,
        proportions={"mitosis": 0.4, "lookalike": 0.6},
        seed=0,
        dmu=False,
        dle=False,
        csdgl=False,
    )
    patches = PatchSet.from_mined(result, slides, config)
    return train_patch_classifier(patches, config, device="cpu")


def test_mining_finds_the_lookalikes_the_first_stage_confuses(mined):
    slides, truths, result = mined
    confused_total = 0
    for name, slide in slides.items():
        truth = truths[name]
        run = wsimito.count_mitoses(slide, _first_stage(), tissue=None, progress=False)
        fired = run.points[run.scores >= FIRST_THRESHOLD]
        near_lookalike = cKDTree(truth.imposters).query(fired)[0] <= RADIUS_PX
        near_figure = cKDTree(truth.mitoses).query(fired)[0] <= RADIUS_PX
        confused = fired[near_lookalike & ~near_figure]
        confused_total += len(confused)
        rows = result.cells[result.cells["slide"] == name]
        negatives = rows.loc[rows["kind"] == "hard negative", ["x", "y"]].to_numpy()
        hits = rows.loc[rows["kind"] == "hit", ["x", "y"]].to_numpy()
        # every confused look-alike is a mined hard negative, at the same place
        assert len(confused) and np.allclose(cKDTree(negatives).query(confused)[0], 0)
        # and no hard negative lies near a figure, while every hit does
        assert (cKDTree(truth.mitoses).query(negatives)[0] > RADIUS_PX).all()
        assert (cKDTree(truth.mitoses).query(hits)[0] <= RADIUS_PX).all()
        # every annotated look-alike joined the negatives
        annotated = rows.loc[rows["kind"] == "lookalike", ["x", "y"]].to_numpy()
        assert np.allclose(np.sort(annotated, axis=0), np.sort(truth.imposters, axis=0))
    # the first stage really is confused by look-alikes
    assert confused_total >= 50


def test_cascade_removes_most_confused_lookalikes_and_keeps_figures(trained):
    slides, truths = _slides(range(200, 202))
    first = _first_stage()
    cascade = CascadeDetector(
        first, trained.classifier, candidate_threshold=FIRST_THRESHOLD, threshold=0.5
    )
    confused = removed = figures_found = figures_kept = 0
    for name, slide in slides.items():
        truth = truths[name]
        alone = wsimito.count_mitoses(slide, first, tissue=None, progress=False)
        both = wsimito.count_mitoses(slide, cascade, tissue=None, progress=False)
        fired = alone.points[alone.scores >= FIRST_THRESHOLD]
        near_lookalike = cKDTree(truth.imposters).query(fired)[0] <= RADIUS_PX
        near_figure = cKDTree(truth.mitoses).query(fired)[0] <= RADIUS_PX
        kept = both.points[both.scores >= cascade.threshold]
        still = cKDTree(kept).query(fired)[0] < 1.0 if len(kept) else np.zeros(len(fired), bool)
        confused += int((near_lookalike & ~near_figure).sum())
        removed += int((near_lookalike & ~near_figure & ~still).sum())
        figures_found += int(near_figure.sum())
        figures_kept += int((near_figure & still).sum())
    assert confused >= 30
    assert removed / confused >= 0.55, (removed, confused)
    assert figures_kept / figures_found >= 0.75, (figures_kept, figures_found)
    report = cascade.report
    assert report.first_stage == report.removed_by_first_stage + report.candidates
    assert report.candidates == report.removed_by_classifier + report.kept
    assert report.removed_by_classifier > report.kept
