"""The default scorer equals the challenge's: grand-challenge-metrics ``score_detection``.

The reference package is the real one (dev extra). Cases cover float and
integer coordinates (ties at equal distance, whose order the challenge's
BallTree decides), duplicates, empty sides, points exactly at the radius and
trees deeper than one leaf (more than 40 predictions).
"""

from __future__ import annotations

import numpy as np
import pytest
from grand_challenge_metrics.scorers import score_detection
from sklearn.metrics import average_precision_score

from wsimito.evaluate import (
    _match_reference_unambiguous,
    average_precision,
    best_threshold,
    precision_recall_curve,
    score_images,
    score_points,
)


def _reference(pred: np.ndarray, gt: np.ndarray, radius: float) -> tuple[int, int, int]:
    got = score_detection(
        ground_truth=[tuple(p) for p in gt[:, :2].tolist()],
        predictions=[tuple(p) for p in pred[:, :2].tolist()],
        radius=radius,
    )
    return got.true_positives, got.false_positives, got.false_negatives


def _ours(pred: np.ndarray, gt: np.ndarray, radius: float, order: str = "reference") -> tuple:
    # mpp = 1 µm/px: the radius in µm is the radius in px
    score = score_points(pred, gt, mpp=1.0, radius_um=radius, order=order)
    return score.tp, score.fp, score.fn


def _on_circle(rng, centres: np.ndarray, radius: float, n: int) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi, n)
    base = centres[rng.integers(0, len(centres), n)]
    return base + radius * np.column_stack([np.cos(angle), np.sin(angle)])


def _cases(seed: int):
    """(name, predictions, ground truth, radius) tuples of every kind the scorer meets."""
    rng = np.random.default_rng(seed)
    for _ in range(600):  # floats: detections scattered around figures, plus false alarms
        gt = rng.uniform(0, 300, size=(rng.integers(1, 40), 2))
        near = gt[rng.integers(0, len(gt), rng.integers(0, 50))] + rng.normal(0, 15, (1, 2))
        near = near + rng.normal(0, 12, near.shape)
        pred = np.concatenate([near, rng.uniform(0, 300, size=(rng.integers(0, 20), 2))])
        yield "float", pred, gt, 30.0
    for _ in range(600):  # whole pixels in a small field: many exactly equal distances
        gt = rng.integers(0, 40, size=(rng.integers(1, 25), 2)).astype(float)
        pred = rng.integers(0, 40, size=(rng.integers(1, 60), 2)).astype(float)
        yield "integer", pred, gt, float(rng.choice([3.0, 5.0, 10.0]))
    for _ in range(300):  # duplicates on both sides
        gt = rng.uniform(0, 100, size=(rng.integers(1, 12), 2))
        gt = np.concatenate([gt, gt[rng.integers(0, len(gt), 4)]])
        pred = gt[rng.integers(0, len(gt), rng.integers(1, 30))] + rng.normal(0, 4, (1, 2))
        pred = np.concatenate([pred, pred[rng.integers(0, len(pred), 5)]])
        yield "duplicates", pred, gt, 7.5
    for _ in range(300):  # exactly at the radius: Pythagorean offsets and on the circle
        gt = rng.integers(0, 200, size=(rng.integers(1, 15), 2)).astype(float)
        offsets = np.array([[30, 0], [0, -30], [18, 24], [-24, 18], [-18, -24], [30, 0.0]])
        exact = gt[rng.integers(0, len(gt), 12)] + offsets[rng.integers(0, len(offsets), 12)]
        pred = np.concatenate([exact, _on_circle(rng, gt, 30.0, 10)])
        yield "at radius", pred, gt, 30.0
    for _ in range(200):  # dense whole pixels: ties whose order changes the counts
        gt = rng.integers(0, 12, size=(rng.integers(2, 30), 2)).astype(float)
        pred = rng.integers(0, 12, size=(rng.integers(5, 120), 2)).astype(float)
        yield "dense ties", pred, gt, float(rng.choice([1.0, 1.5, 2.0, 2.3]))
    for _ in range(30):  # more than 40 predictions: a BallTree of several levels
        gt = rng.integers(0, 120, size=(rng.integers(40, 120), 2)).astype(float)
        pred = rng.integers(0, 120, size=(rng.integers(41, 300), 2)).astype(float)
        yield "deep tree", pred, gt, float(rng.choice([4.0, 5.0, 8.0]))
    empty = np.zeros((0, 2))
    for n in (0, 1, 7):
        points = rng.uniform(0, 50, size=(n, 2))
        yield "empty predictions", empty, points, 30.0
        yield "empty ground truth", points, empty, 30.0


def test_reference_order_equals_grand_challenge_metrics_on_thousands_of_cases():
    mismatches, nearest_differs, total = [], 0, 0
    kinds = set()
    for name, pred, gt, radius in _cases(2024):
        total += 1
        kinds.add(name)
        expected = _reference(pred, gt, radius) if len(gt) and len(pred) else None
        if expected is None:  # g-c-m answers empty sides without matching
            expected = (0, len(pred), len(gt))
            assert _reference(pred, gt, radius) == (0, len(pred), len(gt))
        got = _ours(pred, gt, radius)
        if got != expected:
            mismatches.append((name, got, expected))
        nearest_differs += _ours(pred, gt, radius, order="nearest") != expected
    assert total > 2000 and len(kinds) == 8
    assert mismatches == []
    # the test can tell orders apart: "nearest" disagrees with the challenge in some cases
    assert nearest_differs > 10


def test_ties_and_the_radius_itself_go_to_the_challenges_own_tree():
    gt = np.array([[0.0, 0.0], [10.0, 0.0]])
    tie = np.array([[-5.0, 0.0], [5.0, 0.0]])  # both 5 px from gt 0; gt 1 reaches only one
    assert _match_reference_unambiguous(tie, gt, 6.0) is None
    assert _ours(tie, gt, 6.0) == _reference(tie, gt, 6.0)
    at_radius = np.array([[30.0, 0.0]])
    assert _match_reference_unambiguous(at_radius, gt[:1], 30.0) is None
    assert _ours(at_radius, gt[:1], 30.0) == (1, 0, 0) == _reference(at_radius, gt[:1], 30.0)
    plain = np.array([[1.0, 2.0], [13.0, 1.0]])
    assert _match_reference_unambiguous(plain, gt, 6.0) is not None


def _images(seed: int, n: int = 12):
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        gt = rng.uniform(0, 400, size=(rng.integers(0, 25), 2))
        near = gt[rng.integers(0, max(len(gt), 1), rng.integers(0, 30))] if len(gt) else gt
        near = near + rng.normal(0, 14, near.shape)
        pred = np.concatenate([near, rng.uniform(0, 400, size=(rng.integers(0, 15), 2))])
        scores = np.round(rng.uniform(0, 1, len(pred)), 2)  # repeated scores on purpose
        images.append((np.column_stack([pred, scores]), gt))
    return images


def test_precision_recall_rows_equal_the_challenge_scorer_at_each_threshold():
    images = _images(5)
    mpps = [0.25, 0.5, 0.23] * 4
    curve = precision_recall_curve(images, mpp=mpps)
    all_scores = np.concatenate([p[:, 2] for p, _ in images])
    assert curve["threshold"].tolist() == sorted(set(all_scores.tolist()), reverse=True)
    for row in curve.itertuples():
        tp = fp = fn = 0
        for (pred, gt), mpp in zip(images, mpps, strict=True):
            kept = pred[pred[:, 2] >= row.threshold]
            if len(kept) and len(gt):
                a, b, c = _reference(kept, gt, 7.5 / mpp)
            else:
                a, b, c = 0, len(kept), len(gt)
            tp, fp, fn = tp + a, fp + b, fn + c
        assert (row.tp, row.fp, row.fn) == (tp, fp, fn), row.threshold
    last = curve.iloc[-1]  # the lowest threshold keeps every prediction
    _, total = score_images([(p, g) for p, g in images], mpp=mpps)
    assert (last.tp, last.fp, last.fn) == (total.tp, total.fp, total.fn)


def test_average_precision_is_scikit_learns_scaled_to_all_ground_truth():
    # Well-separated cells: each prediction can only ever match its own figure, so its
    # TP status does not depend on the threshold and scikit-learn's AP applies.
    rng = np.random.default_rng(11)
    centres = np.stack(np.meshgrid(np.arange(10) * 200.0, np.arange(6) * 200.0), -1).reshape(-1, 2)
    gt = centres[:40]
    hit = gt[rng.choice(40, 28, replace=False)] + rng.uniform(-10, 10, (28, 2))
    miss = centres[40:] + rng.uniform(-10, 10, (20, 2))
    pred = np.concatenate([hit, miss])
    scores = rng.uniform(0, 1, len(pred))
    curve = precision_recall_curve([(np.column_stack([pred, scores]), gt)], mpp=0.25)
    is_hit = np.r_[np.ones(28), np.zeros(20)]
    expected = average_precision_score(is_hit, scores) * 28 / 40
    assert average_precision(curve) == pytest.approx(expected, rel=1e-12)
    threshold, f1 = best_threshold(curve)
    assert f1 == curve["f1"].max()
    at_best = score_points(np.column_stack([pred, scores]), gt, mpp=0.25, threshold=threshold)
    assert at_best.f1 == pytest.approx(f1)
    assert threshold == curve.loc[curve["f1"] == f1, "threshold"].max()  # highest on ties
