"""MIDOG-protocol scoring of point detections.

A prediction is a hit when it lies within ``radius_um`` (7.5 µm by default,
30 px at 0.25 µm/px) of a ground-truth figure. Each prediction and each
ground-truth point is matched at most once. F1 = 2TP / (2TP + FP + FN); the
MIDOG challenge sums TP, FP and FN over all images before computing it
(:func:`score_images`).

Two greedy matching orders are offered:

- ``"nearest"`` (default): all candidate pairs within the radius, nearest
  first; independent of the order of the inputs.
- ``"reference"``: ground-truth points in their given order, each taking its
  nearest still unmatched prediction, as ``score_detection`` in
  grand-challenge-metrics (0.6) does. Both give the same counts unless
  hits compete for one prediction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

MIDOG_RADIUS_UM = 7.5
ORDERS = ("nearest", "reference")


@dataclass(frozen=True)
class DetectionScore:
    """True positives, false positives and false negatives, with derived rates.

    A rate whose denominator is 0 (e.g. precision without predictions) is NaN.
    Scores add up: ``sum(scores, DetectionScore())`` pools images.
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: DetectionScore) -> DetectionScore:
        return DetectionScore(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        """TP / (TP + FP)."""
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        """TP / (TP + FN)."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        """2TP / (2TP + FP + FN)."""
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def _as_points(points: object, name: str) -> np.ndarray:
    if hasattr(points, "detach"):
        points = points.detach().cpu().numpy()
    array = np.asarray(points, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 2))
    if array.ndim != 2 or array.shape[1] < 2:
        raise ValueError(f"{name} must be (K, 2) or (K, 3) x, y[, score]; got shape {array.shape}")
    return array


def match_points(
    predictions: object,
    ground_truth: object,
    radius: float,
    *,
    order: str = "nearest",
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching of points within ``radius`` (same unit as the points).

    ``predictions`` and ``ground_truth``: ``(K, 2+)`` and ``(M, 2+)`` arrays or
    tensors; only x, y are used. Returns the matched prediction and
    ground-truth indices, as two equally long int arrays. Distances equal to
    ``radius`` count as hits.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    pred = _as_points(predictions, "predictions")[:, :2]
    gt = _as_points(ground_truth, "ground_truth")[:, :2]
    empty = np.zeros(0, dtype=np.int64)
    if len(pred) == 0 or len(gt) == 0:
        return empty, empty
    pairs = cKDTree(gt).sparse_distance_matrix(cKDTree(pred), radius, output_type="ndarray")
    gi, pi, dist = pairs["i"], pairs["j"], pairs["v"]
    if order == "nearest":
        sequence = np.lexsort((gi, pi, dist))
    else:
        sequence = np.lexsort((pi, dist, gi))
    used_pred = np.zeros(len(pred), dtype=bool)
    used_gt = np.zeros(len(gt), dtype=bool)
    matched_pred, matched_gt = [], []
    for k in sequence:
        p, g = pi[k], gi[k]
        if not used_pred[p] and not used_gt[g]:
            used_pred[p] = used_gt[g] = True
            matched_pred.append(p)
            matched_gt.append(g)
    return np.asarray(matched_pred, dtype=np.int64), np.asarray(matched_gt, dtype=np.int64)


def score_points(
    predictions: object,
    ground_truth: object,
    *,
    mpp: float,
    radius_um: float = MIDOG_RADIUS_UM,
    threshold: float | None = None,
    order: str = "nearest",
) -> DetectionScore:
    """TP, FP and FN of one image.

    Parameters
    ----------
    predictions : ``(K, 2)`` x, y or ``(K, 3)`` x, y, score, px at ``mpp``.
    ground_truth : ``(M, 2)`` x, y, px at ``mpp``.
    mpp : µm/px of the coordinates.
    radius_um : hit radius, µm.
    threshold : if given, only predictions with score >= threshold count
        (needs a score column).
    order : ``"nearest"`` or ``"reference"``, see the module docstring.
    """
    if mpp <= 0:
        raise ValueError(f"mpp must be > 0 µm/px, got {mpp}")
    pred = _as_points(predictions, "predictions")
    gt = _as_points(ground_truth, "ground_truth")
    if threshold is not None:
        if pred.shape[1] < 3 and len(pred):
            raise ValueError("threshold needs predictions with a score column (K, 3)")
        pred = pred[pred[:, 2] >= threshold] if len(pred) else pred
    matched, _ = match_points(pred, gt, radius_um / mpp, order=order)
    tp = len(matched)
    return DetectionScore(tp=tp, fp=len(pred) - tp, fn=len(gt) - tp)


def score_images(
    pairs: Iterable[tuple[object, object]],
    *,
    mpp: float,
    radius_um: float = MIDOG_RADIUS_UM,
    threshold: float | None = None,
    order: str = "nearest",
) -> tuple[list[DetectionScore], DetectionScore]:
    """Score many images: ``pairs`` yields ``(predictions, ground_truth)`` per image.

    Returns the per-image scores and their sum (the MIDOG F1 is ``total.f1``).
    All coordinates are px at ``mpp`` µm/px; see :func:`score_points`.
    """
    per_image = [
        score_points(pred, gt, mpp=mpp, radius_um=radius_um, threshold=threshold, order=order)
        for pred, gt in pairs
    ]
    return per_image, sum(per_image, DetectionScore())
