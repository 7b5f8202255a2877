"""MIDOG-protocol scoring of point detections.

A prediction is a hit when it lies within ``radius_um`` (7.5 µm by default,
30 px at 0.25 µm/px) of a ground-truth mitotic figure; the radius is
converted to px with each image's own mpp. Each prediction and each
ground-truth point is matched at most once. F1 = 2TP / (2TP + FP + FN); the
MIDOG challenges sum TP, FP and FN over all images before computing it
(:func:`score_images`, :func:`score_annotations`).

Two greedy matching orders are offered:

- ``"reference"`` (default): the challenge scorer's, ``score_detection`` of
  grand-challenge-metrics (formerly evalutils). Ground-truth points are
  walked in their given order; each takes the nearest prediction within
  the radius that no earlier ground-truth point took; a prediction at
  exactly the radius is a hit. That scorer finds and orders the candidates
  with scikit-learn's ``BallTree.query_radius(..., sort_results=True)``
  (default leaf size 40, Euclidean metric), whose order among predictions at
  exactly equal distance, and whose verdict on a distance equal to the
  radius up to rounding, follow from the tree's layout. Wherever such a case
  decides a match (the nearest free candidate within 1e-9 of the radius, or
  another free candidate at a different place at a distance equal to 1e-9,
  relative: on whole-pixel coordinates with many predictions such ties
  change the counts in about 1 % of random cases), wsimito runs that same
  BallTree call; elsewhere the outcome is unambiguous and a faster SciPy
  k-d tree gives it. The counts equal the challenge's in every case.
- ``"nearest"``: all candidate pairs within the radius, nearest first;
  independent of the order of the inputs. It differs from ``"reference"``
  only when hits compete for one prediction (about 5 % of random cases).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

if TYPE_CHECKING:
    from rich.table import Table

    from .io.annotations import Annotations

MIDOG_RADIUS_UM = 7.5
Order = Literal["reference", "nearest"]
ORDERS: tuple[str, ...] = get_args(Order)
_PLOT_HINT = "pip install 'wsimito[plot]'"


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


def _ratio(num: float, den: float) -> float:
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


def _check_order(order: str) -> None:
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")


def match_points(
    predictions: object,
    ground_truth: object,
    radius: float,
    *,
    order: Order = "reference",
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching of points within ``radius``.

    Parameters
    ----------
    predictions : array_like or torch.Tensor
        ``(K, 2+)``; only the first two columns (x, y) are used.
    ground_truth : array_like or torch.Tensor
        ``(M, 2+)``; x, y in the same unit as ``predictions``.
    radius : float
        Hit radius in the unit of the points (e.g. px); a distance equal to it is a hit.
    order : {"reference", "nearest"}
        See the module docstring.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The matched prediction and ground-truth indices, as two equally long
        int64 arrays, in the order the pairs were made.

    Raises
    ------
    ValueError
        On a bad shape or order.
    """
    _check_order(order)
    pred = _as_points(predictions, "predictions")[:, :2]
    gt = _as_points(ground_truth, "ground_truth")[:, :2]
    empty = np.zeros(0, dtype=np.int64)
    if len(pred) == 0 or len(gt) == 0:
        return empty, empty
    if order == "reference":
        return _match_reference(pred, gt, radius)
    pairs = cKDTree(gt).sparse_distance_matrix(cKDTree(pred), radius, output_type="ndarray")
    gi, pi, dist = pairs["i"], pairs["j"], pairs["v"]
    sequence = np.lexsort((gi, pi, dist))
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


def _match_reference(pred: np.ndarray, gt: np.ndarray, radius: float) -> tuple:
    fast = _match_reference_unambiguous(pred, gt, radius)
    return fast if fast is not None else _match_reference_balltree(pred, gt, radius)


def _match_reference_balltree(pred: np.ndarray, gt: np.ndarray, radius: float) -> tuple:
    """The challenge scorer's matching with the challenge scorer's spatial index."""
    from sklearn.neighbors import BallTree

    hits = BallTree(pred).query_radius(gt, r=radius, sort_results=True, return_distance=True)[0]
    return _greedy(enumerate(hits), len(pred))


# Distances within this relative band of the radius, or of each other, are left to the
# BallTree: there floating-point details decide, and only the same code decides alike.
_AMBIGUOUS = 1e-9


def _match_reference_unambiguous(
    pred: np.ndarray, gt: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """The same matching without scikit-learn's per-call overhead, or ``None`` where a
    decision is ambiguous: the nearest free candidate lies at the radius, or another free
    candidate at a different place lies equally far."""
    band = _AMBIGUOUS * max(radius, 1.0)
    reach = radius + 2 * band
    pairs = cKDTree(gt).sparse_distance_matrix(cKDTree(pred), reach, output_type="ndarray")
    gi, pi = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64)
    dist = np.hypot(pred[pi, 0] - gt[gi, 0], pred[pi, 1] - gt[gi, 1])
    order = np.lexsort((pi, dist, gi))
    gi, pi, dist = gi[order], pi[order], dist[order]
    bounds = np.searchsorted(gi, np.arange(len(gt) + 1)).tolist()
    pi_list, dist_list = pi.tolist(), dist.tolist()
    places = pred[:, :2].tolist()
    used = [False] * len(pred)
    matched_pred, matched_gt = [], []
    for g in range(len(gt)):
        free = [k for k in range(bounds[g], bounds[g + 1]) if not used[pi_list[k]]]
        if not free:
            continue
        first = free[0]
        d = dist_list[first]
        if abs(d - radius) <= band:
            return None
        if d > radius:
            continue
        p = pi_list[first]
        for k in free[1:]:
            if dist_list[k] - d > _AMBIGUOUS * max(d, 1.0):
                break
            if places[pi_list[k]] != places[p]:  # equally far, elsewhere: the tree decides
                return None
        used[p] = True
        matched_pred.append(p)
        matched_gt.append(g)
    return np.asarray(matched_pred, dtype=np.int64), np.asarray(matched_gt, dtype=np.int64)


def _greedy(candidates: Iterable[tuple[int, Sequence[int]]], n_pred: int) -> tuple:
    """Each ground-truth point in turn takes its first candidate not yet taken."""
    used = np.zeros(n_pred, dtype=bool)
    matched_pred, matched_gt = [], []
    for g, options in candidates:
        for p in options:
            if not used[p]:
                used[p] = True
                matched_pred.append(p)
                matched_gt.append(g)
                break
    return np.asarray(matched_pred, dtype=np.int64), np.asarray(matched_gt, dtype=np.int64)


def score_points(
    predictions: object,
    ground_truth: object,
    *,
    mpp: float,
    radius_um: float = MIDOG_RADIUS_UM,
    threshold: float | None = None,
    order: Order = "reference",
) -> DetectionScore:
    """TP, FP and FN of one image.

    Parameters
    ----------
    predictions : array_like or torch.Tensor
        ``(K, 2)`` x, y or ``(K, 3)`` x, y, score; px at ``mpp``.
    ground_truth : array_like or torch.Tensor
        ``(M, 2)`` x, y; px at ``mpp``.
    mpp : float
        µm/px of the coordinates.
    radius_um : float
        Hit radius, µm.
    threshold : float, optional
        Only predictions with score >= threshold count (needs a score column).
    order : {"reference", "nearest"}
        See the module docstring.

    Returns
    -------
    DetectionScore

    Raises
    ------
    ValueError
        When ``mpp`` is not positive, or ``threshold`` comes without scores.
    """
    if not mpp > 0:
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


def _per_image_mpp(mpp: float | Sequence[float], n: int) -> list[float]:
    if isinstance(mpp, (int, float, np.floating)):
        return [float(mpp)] * n
    values = [float(v) for v in mpp]
    if len(values) != n:
        raise ValueError(f"got {len(values)} mpp values for {n} images; give one per image")
    return values


def score_images(
    pairs: Iterable[tuple[object, object]],
    *,
    mpp: float | Sequence[float],
    radius_um: float = MIDOG_RADIUS_UM,
    threshold: float | None = None,
    order: Order = "reference",
) -> tuple[list[DetectionScore], DetectionScore]:
    """Score many images: ``pairs`` yields ``(predictions, ground_truth)`` per image.

    Parameters
    ----------
    pairs : iterable of (array_like, array_like)
        Per image, predictions ``(K, 2|3)`` and ground truth ``(M, 2)``, px.
    mpp : float or sequence of float
        µm/px of the coordinates: one for all images, or one per image.
    radius_um, threshold, order
        See :func:`score_points`.

    Returns
    -------
    (list of DetectionScore, DetectionScore)
        The per-image scores and their sum (the MIDOG F1 is ``total.f1``).
    """
    pairs = list(pairs)
    mpps = _per_image_mpp(mpp, len(pairs))
    per_image = [
        score_points(pred, gt, mpp=m, radius_um=radius_um, threshold=threshold, order=order)
        for (pred, gt), m in zip(pairs, mpps, strict=True)
    ]
    return per_image, sum(per_image, DetectionScore())


# -- precision and recall over thresholds -----------------------------------------------
@dataclass(frozen=True)
class _Steps:
    """One image's counts at each of its own distinct scores (descending)."""

    thresholds: np.ndarray
    tp: np.ndarray
    predictions: np.ndarray
    ground_truth: int


def _image_steps(pred: np.ndarray, gt: np.ndarray, radius: float, order: Order) -> _Steps:
    scores = pred[:, 2] if len(pred) else np.zeros(0)
    thresholds = np.unique(scores)[::-1]
    counts = len(scores) - np.searchsorted(np.sort(scores), thresholds, side="left")
    tp = np.zeros(len(thresholds), dtype=np.int64)
    if len(gt) and len(pred):
        # Only predictions near some ground truth can be matched, so TP changes only at
        # their scores; there the matching is redone on the near ones, in input order.
        # (A tolerance keeps predictions at exactly the radius; match_points decides.)
        distance, _ = cKDTree(gt[:, :2]).query(pred[:, :2], k=1)
        near = distance <= radius * (1 + 1e-9) + 1e-9
        changes = set(scores[near].tolist())
        current = 0
        for k, t in enumerate(thresholds.tolist()):
            if t in changes:
                keep = near & (scores >= t)
                current = len(match_points(pred[keep], gt, radius, order=order)[0])
            tp[k] = current
    return _Steps(thresholds, tp, counts.astype(np.int64), len(gt))


def _pooled_curve(steps: Sequence[_Steps]) -> pd.DataFrame:
    columns = ["threshold", "tp", "fp", "fn", "precision", "recall", "f1"]
    thresholds = np.unique(np.concatenate([s.thresholds for s in steps] or [np.zeros(0)]))[::-1]
    total_gt = sum(s.ground_truth for s in steps)
    tp = np.zeros(len(thresholds), dtype=np.int64)
    npred = np.zeros(len(thresholds), dtype=np.int64)
    for s in steps:
        if not len(s.thresholds):
            continue
        # the image's step at global threshold t: its smallest own threshold >= t
        k = len(s.thresholds) - np.searchsorted(s.thresholds[::-1], thresholds, side="left") - 1
        valid = k >= 0
        tp[valid] += s.tp[k[valid]]
        npred[valid] += s.predictions[k[valid]]
    fp = npred - tp
    fn = total_gt - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(npred > 0, tp / np.maximum(npred, 1), np.nan)
        recall = np.where(total_gt > 0, tp / max(total_gt, 1), np.nan)
        den = 2 * tp + fp + fn
        f1 = np.where(den > 0, 2 * tp / np.maximum(den, 1), np.nan)
    return pd.DataFrame(
        dict(zip(columns, [thresholds, tp, fp, fn, precision, recall, f1], strict=True))
    )


def precision_recall_curve(
    pairs: Iterable[tuple[object, object]],
    *,
    mpp: float | Sequence[float],
    radius_um: float = MIDOG_RADIUS_UM,
    order: Order = "reference",
) -> pd.DataFrame:
    """Pooled precision and recall at every distinct prediction score.

    Parameters
    ----------
    pairs : iterable of (array_like, array_like)
        Per image, predictions ``(K, 3)`` x, y, score and ground truth ``(M, 2)``, px.
    mpp : float or sequence of float
        µm/px of the coordinates: one for all images, or one per image.
    radius_um : float
        Hit radius, µm.
    order : {"reference", "nearest"}
        Matching order (see the module docstring).

    Returns
    -------
    pandas.DataFrame
        One row per distinct score ``threshold``, highest first, with ``tp``,
        ``fp``, ``fn``, ``precision``, ``recall`` and ``f1``: the counts summed
        over all images when predictions with ``score >= threshold`` are kept,
        each image matched as :func:`score_points` matches it. (TP is
        recomputed at the scores of predictions within the radius of some
        ground truth, matching only those: predictions farther from all of it
        cannot be matched. The one case where a row can differ from
        :func:`score_points` on the full prediction list is a tie in the
        ``"reference"`` order, two predictions at exactly the same distance
        from one ground-truth point, which scikit-learn's tree may then try
        in another order.)

    Raises
    ------
    ValueError
        When predictions have no score column.
    """
    pairs = list(pairs)
    mpps = _per_image_mpp(mpp, len(pairs))
    steps = []
    for (pred, gt), m in zip(pairs, mpps, strict=True):
        found = _as_points(pred, "predictions")
        if len(found) and found.shape[1] < 3:
            raise ValueError("a precision-recall curve needs predictions with a score column")
        truth = _as_points(gt, "ground_truth")
        steps.append(_image_steps(found, truth, radius_um / m, order))
    return _pooled_curve(steps)


def average_precision(curve: pd.DataFrame) -> float:
    """Area under the precision-recall curve as a step sum: Σ (R_k − R_{k−1}) P_k.

    The same non-interpolated definition as scikit-learn's
    ``average_precision_score``, except that recall is over all ground truth,
    so figures that no prediction reaches lower it.

    Parameters
    ----------
    curve : pandas.DataFrame
        :func:`precision_recall_curve`'s table (thresholds highest first; R_0 = 0).

    Returns
    -------
    float
        In [0, 1]; NaN without ground truth or predictions.
    """
    if not len(curve) or curve["recall"].isna().all():
        return float("nan")
    recall = curve["recall"].to_numpy()
    precision = curve["precision"].to_numpy()
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def best_threshold(curve: pd.DataFrame) -> tuple[float, float]:
    """The score threshold with the highest F1.

    Parameters
    ----------
    curve : pandas.DataFrame
        :func:`precision_recall_curve`'s table.

    Returns
    -------
    (float, float)
        The threshold (the highest one on ties) and its F1; ``(nan, nan)`` for
        an empty curve.
    """
    if not len(curve) or curve["f1"].isna().all():
        return float("nan"), float("nan")
    k = int(np.nanargmax(curve["f1"].to_numpy()))
    return float(curve["threshold"].iloc[k]), float(curve["f1"].iloc[k])


# -- many slides from annotation files ---------------------------------------------------
@dataclass(frozen=True)
class Evaluation:
    """Scores of predictions against ground truth over many slides.

    Attributes
    ----------
    per_slide : pandas.DataFrame
        One row per ground-truth slide: ``slide``, the domain column (if
        ``by``), ``mpp`` (µm/px), ``radius_px``, ``ground_truth``,
        ``predictions``, ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1``.
    curve : pandas.DataFrame
        Pooled precision-recall table over all slides (see
        :func:`precision_recall_curve`); empty without scores.
    domain_curves : dict of str to pandas.DataFrame
        The same per domain, when ``by`` was given.
    by : str or None
        The per-slide column the domains come from (e.g. ``"tumor_type"``).
    radius_um : float
        Hit radius, µm.
    threshold : float or None
        The score threshold the counts were made at (``None``: every prediction).
    order : str
        The matching order.
    ignored_slides : list of str
        Prediction slides without ground truth (not scored).
    """

    per_slide: pd.DataFrame
    curve: pd.DataFrame
    domain_curves: dict[str, pd.DataFrame] = field(default_factory=dict)
    by: str | None = None
    radius_um: float = MIDOG_RADIUS_UM
    threshold: float | None = None
    order: str = "reference"
    ignored_slides: list[str] = field(default_factory=list)

    @property
    def total(self) -> DetectionScore:
        """TP, FP, FN summed over all slides."""
        sums = self.per_slide[["tp", "fp", "fn"]].sum()
        return DetectionScore(int(sums["tp"]), int(sums["fp"]), int(sums["fn"]))

    @property
    def f1(self) -> float:
        """Pooled F1 = 2TP / (2TP + FP + FN), TP, FP, FN summed over slides."""
        return self.total.f1

    @property
    def precision(self) -> float:
        """Pooled precision."""
        return self.total.precision

    @property
    def recall(self) -> float:
        """Pooled recall."""
        return self.total.recall

    @property
    def average_precision(self) -> float:
        """Pooled average precision (see :func:`average_precision`); NaN without scores."""
        return average_precision(self.curve)

    @property
    def best_threshold(self) -> float:
        """The score threshold with the highest pooled F1; NaN without scores."""
        return best_threshold(self.curve)[0]

    @property
    def best_f1(self) -> float:
        """The pooled F1 at :attr:`best_threshold`."""
        return best_threshold(self.curve)[1]

    def table(self) -> pd.DataFrame:
        """One row per domain (when ``by`` was given) and a last row ``"all"``.

        Columns: ``domain``, ``slides``, ``ground_truth``, ``predictions``,
        ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1`` (at
        :attr:`threshold`), ``average_precision``, ``best_threshold`` and
        ``best_f1`` (from the domain's precision-recall curve).
        """
        groups: list[tuple[str, pd.DataFrame, pd.DataFrame]] = []
        if self.by is not None:
            for name, rows in self.per_slide.groupby(self.by, sort=True, dropna=False):
                key = str(name)
                groups.append((key, rows, self.domain_curves.get(key, pd.DataFrame())))
        groups.append(("all", self.per_slide, self.curve))
        out = []
        for name, rows, curve in groups:
            score = DetectionScore(
                int(rows["tp"].sum()), int(rows["fp"].sum()), int(rows["fn"].sum())
            )
            threshold, f1 = best_threshold(curve)
            out.append(
                {
                    "domain": name,
                    "slides": len(rows),
                    "ground_truth": int(rows["ground_truth"].sum()),
                    "predictions": int(rows["predictions"].sum()),
                    "tp": score.tp,
                    "fp": score.fp,
                    "fn": score.fn,
                    "precision": score.precision,
                    "recall": score.recall,
                    "f1": score.f1,
                    "average_precision": average_precision(curve),
                    "best_threshold": threshold,
                    "best_f1": f1,
                }
            )
        return pd.DataFrame(out)

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write :meth:`table` as CSV, atomically.

        Parameters
        ----------
        path : str or os.PathLike
            The ``.csv`` file.

        Returns
        -------
        pathlib.Path
            ``path``.
        """
        from .io.atomic import atomic_write

        with atomic_write(path, newline="") as fh:
            self.table().to_csv(fh, index=False)
        return Path(path)

    def plot(self, path: str | os.PathLike) -> Path:
        """Write a precision-recall plot (PNG) with one curve per domain, atomically.

        Parameters
        ----------
        path : str or os.PathLike
            The ``.png`` file.

        Returns
        -------
        pathlib.Path
            ``path``.

        Raises
        ------
        ModuleNotFoundError
            When matplotlib is missing (``pip install 'wsimito[plot]'``).
        ValueError
            When the predictions had no scores, so there is no curve.
        """
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise ModuleNotFoundError(
                f"the precision-recall plot needs matplotlib: {_PLOT_HINT}"
            ) from None
        if not len(self.curve):
            raise ValueError("the predictions carry no scores, so there is no curve to plot")
        from .io.atomic import atomic_path

        fig, ax = plt.subplots(figsize=(6, 5), dpi=120)
        try:
            for name, curve in {**self.domain_curves, "all": self.curve}.items():
                if not len(curve):
                    continue
                ap = average_precision(curve)
                ax.step(
                    curve["recall"],
                    curve["precision"],
                    where="pre",
                    linewidth=2.0 if name == "all" else 1.0,
                    color="black" if name == "all" else None,
                    label=f"{name} (AP {ap:.3f})",
                )
            threshold, f1 = best_threshold(self.curve)
            best = self.curve.iloc[int(np.nanargmax(self.curve["f1"].to_numpy()))]
            ax.plot(
                best["recall"],
                best["precision"],
                "o",
                color="crimson",
                label=f"best F1 {f1:.3f} at score ≥ {threshold:.3g}",
            )
            ax.set(
                xlabel="recall",
                ylabel="precision",
                xlim=(0, 1.02),
                ylim=(0, 1.02),
                title=f"Mitotic figures, hit radius {self.radius_um:g} µm",
            )
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower left")
            fig.tight_layout()
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format="png")
        finally:
            plt.close(fig)
        return Path(path)

    def __rich__(self) -> Table:
        from rich.table import Table

        table = self.table()
        at = "every prediction" if self.threshold is None else f"score ≥ {self.threshold:g}"
        out = Table(
            title=f"Mitotic figures: hit radius {self.radius_um:g} µm, counts at {at}",
            caption="F1 = 2TP / (2TP + FP + FN), TP, FP, FN summed over slides",
        )
        names = {
            "domain": self.by or "",
            "ground_truth": "GT",
            "predictions": "pred",
            "average_precision": "AP",
            "best_threshold": "best thr",
            "best_f1": "best F1",
        }
        for column in table.columns:
            out.add_column(
                names.get(column, column), justify="left" if column == "domain" else "right"
            )
        for _, row in table.iterrows():
            out.add_row(*(_cell(row[c]) for c in table.columns), end_section=row["domain"] == "all")
        return out

    def __str__(self) -> str:
        from rich.console import Console

        console = Console(width=150, record=True, file=io.StringIO())
        console.print(self)
        return console.export_text()


def _cell(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return "–" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _read(path: str | os.PathLike, *, predictions: bool) -> Annotations:
    """Read a side for scoring: CSV files need not have their images beside them, and a
    prediction beyond the image edge is scored like any other."""
    from .io.annotations import detect_format, read_annotations

    options: dict[str, Any] = {"require_images": False} if detect_format(path) == "csv" else {}
    if predictions:
        options["outside"] = "keep"
    return read_annotations(path, **options)


def score_annotations(
    predictions: Annotations | str | os.PathLike,
    ground_truth: Annotations | str | os.PathLike,
    *,
    radius_um: float = MIDOG_RADIUS_UM,
    mpp: float | Mapping[str, float] | None = None,
    by: str | None = None,
    threshold: float | None = None,
    order: Order = "reference",
    missing: Literal["error", "empty"] = "error",
) -> Evaluation:
    """Score predicted mitotic figures against ground truth over many slides.

    Only cells of kind ``"mitosis"`` count, on both sides (look-alikes are not
    targets; see ``mitosis_names`` in :func:`wsimito.read_annotations`).
    Slides are matched by name without image suffix (``001.tiff`` = ``001``);
    every ground-truth slide is scored, including those without figures.

    Parameters
    ----------
    predictions, ground_truth : Annotations or path
        Anything :func:`wsimito.read_annotations` reads (CSV files are read
        with ``require_images=False``, predictions with ``outside="keep"``).
    radius_um : float
        Hit radius, µm; converted to px with each slide's mpp.
    mpp : float or mapping, optional
        µm/px for slides whose files carry none (ground truth first, then the
        predictions' file): one value or ``{slide: mpp}``.
    by : str, optional
        A per-slide column of the ground truth to report per domain, e.g.
        ``"tumor_type"`` or ``"scanner"``.
    threshold : float, optional
        Count only predictions with score >= threshold; ``None`` counts every
        prediction as given.
    order : {"reference", "nearest"}
        Matching order (see the module docstring).
    missing : {"error", "empty"}
        A ground-truth slide that the predictions do not list: an error, or
        scored as a slide without predictions.

    Returns
    -------
    Evaluation

    Raises
    ------
    wsimito.io.annotations.AnnotationError
        When a side has cells but none of kind mitosis, ``by`` is not a column,
        or a slide is missing from the predictions (with ``missing="error"``).
    wsimito.MissingMPPError
        When a slide's mpp is known neither from the files nor from ``mpp``.
    """
    from .errors import MissingMPPError
    from .io.annotations import AnnotationError, Annotations, slide_key

    _check_order(order)
    pred = (
        predictions
        if isinstance(predictions, Annotations)
        else _read(predictions, predictions=True)
    )
    gt = (
        ground_truth
        if isinstance(ground_truth, Annotations)
        else _read(ground_truth, predictions=False)
    )
    for side, name in ((pred, "predictions"), (gt, "ground truth")):
        cells = side.to_frame()
        if len(cells) and not (cells["kind"] == "mitosis").any():
            raise AnnotationError(
                f"{side.source}: the {name} have {len(cells)} cells but none is a mitotic figure "
                f"by class name (classes {side.labels[:5]}); pass mitosis_names= to "
                "read_annotations"
            )
    if threshold is not None and len(pred) and not pred.has_scores:
        raise AnnotationError(f"{pred.source}: threshold= needs predictions with scores")
    gt_info = gt.slide_info
    if by is not None and by not in gt_info:
        raise AnnotationError(
            f"{gt.source}: cannot report by {by!r}; the ground truth's slides have "
            f"{[c for c in gt_info.columns if c != 'slide']}"
            + (" (pass split= to read_annotations for scanner)" if by == "scanner" else "")
        )
    pred_by_key: dict[str, str] = {}
    for name in pred.slides:
        pred_by_key.setdefault(slide_key(name), name)
    gt_keys = {slide_key(s) for s in gt.slides}
    ignored = [s for k, s in pred_by_key.items() if k not in gt_keys]
    absent = [s for s in gt.slides if slide_key(s) not in pred_by_key]
    if absent and missing == "error":
        raise AnnotationError(
            f"{pred.source}: no predictions for {len(absent)} ground-truth slides, e.g. "
            f"{absent[:4]}; select the ground-truth slides you predicted, or pass "
            "missing='empty' to score them as slides without detections"
        )
    rows, steps, domains = [], [], []
    for slide in gt.slides:
        other = pred_by_key.get(slide_key(slide))
        slide_mpp = gt.mpp(slide) or (pred.mpp(other) if other else None)
        if slide_mpp is None and mpp is not None:
            slide_mpp = (
                mpp.get(slide, mpp.get(slide_key(slide))) if isinstance(mpp, Mapping) else mpp
            )
        if slide_mpp is None:
            raise MissingMPPError(
                f"slide {slide!r}: neither {gt.source} nor {pred.source} gives its resolution; "
                "pass mpp= (µm/px, e.g. 0.25 for MIDOG's 40x scans) or --mpp"
            )
        truth = gt.points(slide, kind="mitosis")
        if other is None:
            found = np.zeros((0, 3))
        else:
            found = np.column_stack(
                [pred.points(other, kind="mitosis"), pred.scores(other, kind="mitosis")]
            )
        if pred.has_scores and np.isnan(found[:, 2]).any():
            raise AnnotationError(
                f"{pred.source}: some predictions on slide {other!r} have a score and others "
                "none; give every prediction a score, or none"
            )
        score = score_points(
            found if pred.has_scores else found[:, :2],
            truth,
            mpp=slide_mpp,
            radius_um=radius_um,
            threshold=threshold,
            order=order,
        )
        counted = score.tp + score.fp
        row: dict[str, Any] = {"slide": slide}
        if by is not None:
            value = gt_info.loc[gt_info["slide"] == slide, by].iloc[0]
            row[by] = str(value)
            domains.append(str(value))
        row.update(
            mpp=float(slide_mpp),
            radius_px=radius_um / slide_mpp,
            ground_truth=len(truth),
            predictions=counted,
            tp=score.tp,
            fp=score.fp,
            fn=score.fn,
            precision=score.precision,
            recall=score.recall,
            f1=score.f1,
        )
        rows.append(row)
        if pred.has_scores:
            steps.append(_image_steps(found, truth, radius_um / slide_mpp, order))
    curve = _pooled_curve(steps) if steps else _pooled_curve([])
    domain_curves = {}
    if by is not None and steps:
        for name in sorted(set(domains)):
            domain_curves[name] = _pooled_curve(
                [s for s, d in zip(steps, domains, strict=True) if d == name]
            )
    return Evaluation(
        per_slide=pd.DataFrame(rows),
        curve=curve,
        domain_curves=domain_curves,
        by=by,
        radius_um=radius_um,
        threshold=threshold,
        order=order,
        ignored_slides=ignored,
    )
