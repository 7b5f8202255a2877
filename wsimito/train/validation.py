"""Validation and test scoring of a detector on whole annotated images.

Each image is counted with :func:`wsimito.count_mitoses`, exactly as a user
would count it, and every candidate it returns is scored against the
annotated mitotic figures with the MIDOG protocol: a hit within
``radius_um`` (7.5 µm) converted with that image's own mpp, TP, FP and FN
summed over the images before F1 is computed (pooled F1). The decision
threshold is the one with the best pooled F1 on the validation images
(:func:`best_threshold`, over every distinct candidate score); it is stored
in the trained detector.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from .. import evaluate
from ..evaluate import MIDOG_RADIUS_UM, DetectionScore, precision_recall_curve, score_points
from ..progress import Progress

if TYPE_CHECKING:
    from ..detect import Detector
    from .datasets import PatchDataset

TissueChoice = Literal["none", "auto"]


@dataclass(frozen=True)
class ImageDetections:
    """A detector's candidates on one image and the image's annotated mitotic figures.

    Attributes
    ----------
    slide : str
        The image's name.
    domain : str
        Its domain (e.g. tumour type), for per-domain scores.
    mpp : float
        Level-0 resolution of the image, µm/px.
    candidates : numpy.ndarray
        ``(K, 3)`` x, y (level-0 px) and score of every candidate.
    truth : numpy.ndarray
        ``(M, 2)`` level-0 px of the annotated mitotic figures.
    """

    slide: str
    domain: str
    mpp: float
    candidates: np.ndarray
    truth: np.ndarray

    def score(self, threshold: float, radius_um: float = MIDOG_RADIUS_UM) -> DetectionScore:
        """Score the candidates with score >= ``threshold`` against the annotated figures.

        Parameters
        ----------
        threshold : float
            Lowest score counted, in [0, 1].
        radius_um : float
            A candidate within this distance of a figure is a hit, µm.

        Returns
        -------
        DetectionScore
            TP, FP and FN of this image.
        """
        return score_points(
            self.candidates, self.truth, mpp=self.mpp, radius_um=radius_um, threshold=threshold
        )


def detect_images(
    detector: Detector,
    dataset: PatchDataset,
    indices: Iterable[int],
    *,
    domains: Sequence[str] | None = None,
    tissue: TissueChoice = "none",
    num_workers: int | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    description: str = "validation",
) -> list[ImageDetections]:
    """Count every image ``indices`` of ``dataset`` with ``detector``; keep all candidates.

    Parameters
    ----------
    detector : wsimito.Detector
        Any detector; its ``min_score`` (where it has one) bounds the thresholds
        that can be chosen later.
    dataset : PatchDataset
        The images and their annotations.
    indices : iterable of int
        Slides of ``dataset`` to run on.
    domains : sequence of str, optional
        Domain name of each slide of ``dataset`` (default ``"all"``).
    tissue : {"none", "auto"}
        Analyse whole images (region-of-interest images such as MIDOG++) or
        detected tissue (whole slides).
    num_workers, batch_size : int, optional
        Passed to :func:`wsimito.count_mitoses`.
    progress : bool
        A progress bar over the images.
    description : str
        The bar's label.

    Returns
    -------
    list of ImageDetections
        Per image of ``indices``, in order: every candidate (level-0 px and
        score) and the annotated mitotic figures.
    """
    from ..pipeline import count_mitoses

    indices = list(indices)
    out = []
    with Progress(len(indices), description, unit="images", enabled=progress) as bar:
        for k in indices:
            slide = dataset.open(k)
            try:
                result = count_mitoses(
                    slide,
                    detector,
                    tissue=None if tissue == "none" else "auto",
                    progress=False,
                    num_workers=num_workers,
                    batch_size=batch_size,
                )
                mpp = slide.mpp
            finally:
                slide.close()
            out.append(
                ImageDetections(
                    slide=str(dataset.slides["slide"][k]),
                    domain="all" if domains is None else str(domains[k]),
                    mpp=float(mpp),
                    candidates=np.column_stack([result.points, result.scores]).reshape(-1, 3),
                    truth=dataset.truth(k),
                )
            )
            bar.advance()
    return out


def pooled_score(
    images: Iterable[ImageDetections], threshold: float, radius_um: float = MIDOG_RADIUS_UM
) -> DetectionScore:
    """Sum TP, FP and FN over ``images`` at ``threshold`` (the pooled F1 is ``.f1``).

    Parameters
    ----------
    images : iterable of ImageDetections
        The scored images.
    threshold : float
        Lowest score counted, in [0, 1].
    radius_um : float
        Hit radius, µm (each image's own mpp converts it).

    Returns
    -------
    DetectionScore
        The pooled TP, FP and FN.
    """
    return sum((im.score(threshold, radius_um) for im in images), DetectionScore())


def domain_scores(
    images: Sequence[ImageDetections], threshold: float, radius_um: float = MIDOG_RADIUS_UM
) -> dict[str, DetectionScore]:
    """Pool TP, FP and FN per domain.

    Parameters
    ----------
    images : sequence of ImageDetections
        The scored images, each with its domain.
    threshold : float
        Lowest score counted, in [0, 1].
    radius_um : float
        Hit radius, µm.

    Returns
    -------
    dict of str to DetectionScore
        The pooled scores of each domain, in sorted domain order.
    """
    out: dict[str, DetectionScore] = {}
    for domain in sorted({im.domain for im in images}):
        out[domain] = pooled_score(
            [im for im in images if im.domain == domain], threshold, radius_um
        )
    return out


def best_threshold(
    images: Sequence[ImageDetections], radius_um: float = MIDOG_RADIUS_UM
) -> tuple[float, DetectionScore]:
    """Find the threshold with the best pooled F1 over ``images``.

    Every distinct candidate score is tried (:func:`wsimito.evaluate.precision_recall_curve`,
    each image's own mpp); of equally good thresholds the highest is taken
    (:func:`wsimito.evaluate.best_threshold`). Without any candidate the
    threshold is 0.5.

    Parameters
    ----------
    images : sequence of ImageDetections
        The scored images.
    radius_um : float
        Hit radius, µm.

    Returns
    -------
    threshold : float
        The chosen score threshold.
    score : DetectionScore
        The pooled TP, FP and FN at that threshold.

    Examples
    --------
    >>> import numpy as np
    >>> image = ImageDetections(
    ...     slide="roi-1", domain="all", mpp=0.25,
    ...     candidates=np.array([[100.0, 100.0, 0.9], [400.0, 400.0, 0.3]]),
    ...     truth=np.array([[102.0, 101.0]]),
    ... )
    >>> threshold, score = best_threshold([image])
    >>> threshold, score.tp, score.fp, score.fn
    (0.9, 1, 0, 0)
    """
    curve = precision_recall_curve(
        [(im.candidates, im.truth) for im in images],
        mpp=[im.mpp for im in images],
        radius_um=radius_um,
    )
    threshold, _ = evaluate.best_threshold(curve)
    if threshold != threshold:  # NaN: no candidates
        threshold = 0.5
    return threshold, pooled_score(images, threshold, radius_um)


__all__ = [
    "ImageDetections",
    "best_threshold",
    "detect_images",
    "domain_scores",
    "pooled_score",
]
