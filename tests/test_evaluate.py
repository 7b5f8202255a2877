"""MIDOG-protocol point matching and scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wsimito.evaluate import DetectionScore, match_points, score_images, score_points


def test_hit_radius_is_7_5_um_converted_with_the_mpp():
    gt = [[100.0, 100.0]]
    assert score_points([[129.9, 100.0]], gt, mpp=0.25).tp == 1  # 30 px = 7.5 µm
    assert score_points([[130.1, 100.0]], gt, mpp=0.25) == DetectionScore(tp=0, fp=1, fn=1)
    assert score_points([[114.9, 100.0]], gt, mpp=0.5).tp == 1  # 15 px = 7.5 µm
    assert score_points([[115.1, 100.0]], gt, mpp=0.5).tp == 0
    assert score_points([[104.0, 100.0]], gt, mpp=0.25, radius_um=1.0).tp == 1
    assert score_points([[104.1, 100.0]], gt, mpp=0.25, radius_um=1.0).tp == 0


def test_each_prediction_and_each_ground_truth_point_is_used_once():
    two_gt_one_pred = score_points([[5.0, 0.0]], [[0.0, 0.0], [10.0, 0.0]], mpp=0.25)
    assert two_gt_one_pred == DetectionScore(tp=1, fp=0, fn=1)
    two_pred_one_gt = score_points([[1.0, 0.0], [2.0, 0.0]], [[0.0, 0.0]], mpp=0.25)
    assert two_pred_one_gt == DetectionScore(tp=1, fp=1, fn=0)


def test_nearest_pairs_are_matched_first():
    gt = [[0.0, 0.0], [10.0, 0.0]]
    pred = [[5.5, 0.0], [-7.0, 0.0]]
    pred_idx, gt_idx = match_points(pred, gt, radius=7.5, order="nearest")
    # The closest pair (pred 0, gt 1: 4.5) goes first, so gt 0 falls back to pred 1 (7.0).
    assert sorted(zip(pred_idx.tolist(), gt_idx.tolist(), strict=True)) == [(0, 1), (1, 0)]
    # In ground-truth order (grand-challenge-metrics, the default), gt 0 takes pred 0 (5.5)
    # and gt 1 misses.
    ref_pred, ref_gt = match_points(pred, gt, radius=7.5)
    assert list(zip(ref_pred.tolist(), ref_gt.tolist(), strict=True)) == [(0, 0)]


def test_nearest_order_does_not_depend_on_input_order():
    rng = np.random.default_rng(7)
    gt = rng.uniform(0, 200, size=(60, 2))
    pred = gt + rng.normal(0, 15, size=(60, 2))
    base = score_points(pred, gt, mpp=0.25, order="nearest")
    for _ in range(5):
        shuffled = score_points(
            rng.permutation(pred), rng.permutation(gt), mpp=0.25, order="nearest"
        )
        assert shuffled == base


def test_scores_sum_counts_over_images_before_the_f1():
    images = [
        (torch.tensor([[10.0, 10.0, 0.9]]), torch.tensor([[12.0, 10.0]])),  # 1 TP
        (torch.zeros(0, 3), torch.tensor([[0.0, 0.0], [50.0, 0.0], [99.0, 0.0]])),  # 3 FN
    ]
    per_image, total = score_images(images, mpp=0.25)
    assert per_image == [DetectionScore(1, 0, 0), DetectionScore(0, 0, 3)]
    assert total == DetectionScore(1, 0, 3)
    assert math.isclose(total.f1, 2 / 5)
    assert not math.isclose(total.f1, np.mean([s.f1 for s in per_image]))
    assert math.isclose(total.precision, 1.0) and math.isclose(total.recall, 0.25)


def test_threshold_keeps_predictions_scoring_at_least_the_threshold():
    pred = [[0.0, 0.0, 0.5], [100.0, 0.0, 0.49]]
    gt = [[0.0, 0.0]]
    assert score_points(pred, gt, mpp=0.25, threshold=0.5) == DetectionScore(1, 0, 0)
    assert score_points(pred, gt, mpp=0.25) == DetectionScore(1, 1, 0)
    with pytest.raises(ValueError, match="score column"):
        score_points([[0.0, 0.0]], gt, mpp=0.25, threshold=0.5)


def test_empty_inputs_count_everything_as_misses_or_false_alarms():
    assert score_points([], [[1.0, 1.0], [2.0, 2.0]], mpp=0.25) == DetectionScore(0, 0, 2)
    assert score_points([[1.0, 1.0]], [], mpp=0.25) == DetectionScore(0, 1, 0)
    nothing = score_points([], [], mpp=0.25)
    assert math.isnan(nothing.precision) and math.isnan(nothing.f1)
