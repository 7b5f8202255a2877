"""A two-stage detector: recall-oriented candidates, then a patch classifier on each.

Stage 1 (:class:`~wsimito.models.PointDetector`) proposes points on whole
tiles; every point scoring at least ``candidate_threshold`` (a low,
recall-oriented threshold) becomes a candidate. Stage 2
(:class:`~wsimito.models.classifier.PatchClassifier`) sees a patch centred
on each candidate, cut from the tile already on the device, and rescores it:
the candidate's score is ``p1 ** (1 - w) * p2 ** w`` for the first stage's
score ``p1``, the classifier's probability ``p2`` and ``w =
classifier_weight`` (1: the classifier alone; 0.5: the geometric mean, so
that both stages must agree). The classifier runs only on candidates: its
cost grows with their number, not with the tissue area.

The cascade follows the :class:`wsimito.Detector` protocol, so
:func:`wsimito.count_mitoses` runs it unchanged, and it is saved and loaded as
one checkpoint (architecture ``"cascade"``) by :func:`wsimito.save_detector`
and :func:`wsimito.load_detector`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..detect import Detector, check_tiles, resolve_device
from .classifier import PatchClassifier, PatchClassifierNet, crop_patches
from .detectors import PointDetector
from .pointnet import PointHeatmapNet

_FIRST, _SECOND = "first_", "second_"


class CascadeNet(nn.Module):
    """Both networks of a cascade in one module (for one checkpoint).

    Parameters
    ----------
    **config : int or float
        The first stage's :class:`PointHeatmapNet` arguments prefixed with
        ``first_`` and the second stage's :class:`PatchClassifierNet` arguments
        prefixed with ``second_`` (a flat dict, as checkpoints store it).

    Raises
    ------
    TypeError
        For a key with neither prefix.
    """

    def __init__(self, **config: Any) -> None:
        super().__init__()
        unknown = [k for k in config if not k.startswith((_FIRST, _SECOND))]
        if unknown:
            raise TypeError(f"CascadeNet config keys must start with first_ or second_: {unknown}")
        first = {k[len(_FIRST) :]: v for k, v in config.items() if k.startswith(_FIRST)}
        second = {k[len(_SECOND) :]: v for k, v in config.items() if k.startswith(_SECOND)}
        self.first = PointHeatmapNet(**first)
        self.second = PatchClassifierNet(**second)

    @classmethod
    def of(cls, first: PointHeatmapNet, second: PatchClassifierNet) -> CascadeNet:
        """Make a CascadeNet that shares the parameters of two existing networks.

        Parameters
        ----------
        first : PointHeatmapNet
            The first stage's network.
        second : PatchClassifierNet
            The second stage's network.

        Returns
        -------
        CascadeNet
            A module holding ``first`` and ``second`` themselves, not copies.
        """
        net = cls.__new__(cls)
        nn.Module.__init__(net)
        net.first, net.second = first, second
        return net

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (flat, prefixed), for checkpoints."""
        return {
            **{_FIRST + k: v for k, v in self.first.config.items()},
            **{_SECOND + k: v for k, v in self.second.config.items()},
        }


@dataclass
class CascadeReport:
    """What each stage of a :class:`CascadeDetector` removed, summed over ``detect`` calls.

    Counts are per tile, before the pipeline merges points across overlapping
    tiles, so a point in an overlap may be counted twice.

    Attributes
    ----------
    tiles : int
        Tiles seen.
    first_stage : int
        Points the first stage returned.
    removed_by_first_stage : int
        Of those, points below ``candidate_threshold`` (never classified).
    candidates : int
        Points the classifier rescored.
    removed_by_classifier : int
        Candidates whose classifier score is below the cascade's ``threshold``.
    kept : int
        Candidates at or above ``threshold``.
    """

    tiles: int = 0
    first_stage: int = 0
    removed_by_first_stage: int = 0
    candidates: int = 0
    removed_by_classifier: int = 0
    kept: int = 0

    def as_dict(self) -> dict[str, int]:
        """Return the counts by name.

        Returns
        -------
        dict of str to int
            The attributes above, by name.
        """
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"{self.tiles} tiles: first stage {self.first_stage} points, "
            f"{self.removed_by_first_stage} below the candidate threshold; classifier rescored "
            f"{self.candidates}, removed {self.removed_by_classifier}, kept {self.kept}"
        )


class CascadeDetector:
    """A :class:`wsimito.Detector` made of a candidate detector and a patch classifier.

    Parameters
    ----------
    candidates : Detector
        The first stage, any :class:`wsimito.Detector`; its ``mpp``,
        ``tile_size``, ``overlap``, ``device`` and ``min_distance_um`` are the
        cascade's. Only a cascade over a :class:`PointDetector` can be saved
        with :func:`wsimito.save_detector`.
    classifier : PatchClassifier
        The second stage; moved to the first stage's device.
    candidate_threshold : float, optional
        First-stage score a point needs to be classified, in [0, 1]; keep it
        low (recall-oriented). Default: the first stage's ``min_score`` (0 if
        it has none).
    threshold : float
        Default decision threshold on the cascade's score, in [0, 1].
    classifier_weight : float
        ``w`` in the score ``p1 ** (1 - w) * p2 ** w``, in [0, 1].
    name : str
        Short name, copied into results.
    metadata : Mapping, optional
        Facts copied into results; default: the first stage's.

    Raises
    ------
    ValueError
        When a threshold lies outside [0, 1].

    Examples
    --------
    >>> from wsimito.models import PointHeatmapNet, PointDetector
    >>> from wsimito.models.classifier import PatchClassifier, PatchClassifierNet
    >>> first = PointDetector(PointHeatmapNet(width=8), mpp=0.5, device="cpu")
    >>> second = PatchClassifier(PatchClassifierNet(width=8), mpp=0.5, device="cpu")
    >>> cascade = CascadeDetector(first, second, candidate_threshold=0.2)
    >>> len(cascade.detect(torch.zeros(2, 3, 512, 512, dtype=torch.uint8)))
    2
    """

    def __init__(
        self,
        candidates: Detector,
        classifier: PatchClassifier,
        *,
        candidate_threshold: float | None = None,
        threshold: float = 0.5,
        classifier_weight: float = 1.0,
        name: str = "cascade",
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if candidate_threshold is None:
            candidate_threshold = float(getattr(candidates, "min_score", 0.0))
        for label, value in (
            ("candidate_threshold", candidate_threshold),
            ("threshold", threshold),
            ("classifier_weight", classifier_weight),
        ):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{label} must lie in [0, 1], got {value}")
        self.candidates = candidates
        self.classifier = classifier.to(torch.device(candidates.device))
        self.candidate_threshold = float(candidate_threshold)
        self.threshold = float(threshold)
        self.classifier_weight = float(classifier_weight)
        self.name = name
        self.metadata = dict(candidates.metadata if metadata is None else metadata)
        self.report = CascadeReport()

    # -- the Detector protocol: geometry comes from the first stage --------------
    @property
    def mpp(self) -> float:
        """Resolution of the tiles, µm/px (the first stage's)."""
        return self.candidates.mpp

    @property
    def tile_size(self) -> int:
        """Tile side, px at :attr:`mpp`."""
        return self.candidates.tile_size

    @property
    def overlap(self) -> int:
        """Tile overlap, px at :attr:`mpp`."""
        return self.candidates.overlap

    @property
    def device(self) -> torch.device:
        """Where both stages run."""
        return torch.device(self.candidates.device)

    @property
    def min_distance_um(self) -> float | None:
        """The closest two detections may be, µm (the first stage's)."""
        return self.candidates.min_distance_um

    @property
    def model(self) -> CascadeNet:
        """Both networks as one module (what :func:`wsimito.save_detector` writes).

        Raises
        ------
        TypeError
            When the first stage is not a :class:`PointDetector`.
        """
        first = self._saveable_first_stage()
        return CascadeNet.of(first.model, self.classifier.model)

    def _saveable_first_stage(self) -> PointDetector:
        if not isinstance(self.candidates, PointDetector):
            raise TypeError(
                f"only a cascade over a PointDetector is saved as one checkpoint; this one's "
                f"first stage is a {type(self.candidates).__name__}"
            )
        return self.candidates

    @property
    def settings(self) -> dict[str, Any]:
        """Everything besides the networks that a checkpoint must restore."""
        first = self._saveable_first_stage()
        return {
            **first.settings,
            "threshold": self.threshold,
            "first_threshold": first.threshold,
            "candidate_threshold": self.candidate_threshold,
            "classifier_weight": self.classifier_weight,
            **{_SECOND + k: v for k, v in self.classifier.settings.items()},
        }

    @classmethod
    def from_network(
        cls,
        model: CascadeNet,
        *,
        device: str | torch.device = "auto",
        name: str = "cascade",
        metadata: Mapping[str, Any] | None = None,
        threshold: float = 0.5,
        candidate_threshold: float | None = None,
        classifier_weight: float = 1.0,
        first_threshold: float = 0.5,
        **settings: Any,
    ) -> CascadeDetector:
        """Build a cascade around a :class:`CascadeNet` from its :attr:`settings`.

        This is how :func:`wsimito.load_detector` restores a checkpoint.

        Parameters
        ----------
        model : CascadeNet
            Both networks.
        device : str or torch.device
            Where both stages run (``"auto"``: the best available).
        name : str
            Short name; the first stage is named ``"{name}-candidates"``.
        metadata : Mapping, optional
            Facts copied into results.
        threshold : float
            Decision threshold on the cascade's score, in [0, 1].
        candidate_threshold : float, optional
            First-stage score a point needs to be classified, in [0, 1]; default:
            the first stage's ``min_score``.
        classifier_weight : float
            ``w`` in the score ``p1 ** (1 - w) * p2 ** w``.
        first_threshold : float
            The first stage's own decision threshold, in [0, 1] (used when it runs
            alone).
        **settings : Any
            The first stage's :class:`PointDetector` settings, and the
            classifier's prefixed with ``second_``.

        Returns
        -------
        CascadeDetector
            Both stages on ``device``.
        """
        second = {k[len(_SECOND) :]: v for k, v in settings.items() if k.startswith(_SECOND)}
        first = {k: v for k, v in settings.items() if not k.startswith(_SECOND)}
        device = resolve_device(device)
        candidates = PointDetector(
            model.first,
            device=device,
            name=f"{name}-candidates",
            metadata=metadata,
            threshold=first_threshold,
            **first,
        )
        classifier = PatchClassifier(model.second, device=device, **second)
        return cls(
            candidates,
            classifier,
            candidate_threshold=candidate_threshold,
            threshold=threshold,
            classifier_weight=classifier_weight,
            name=name,
            metadata=metadata,
        )

    def reset_report(self) -> CascadeReport:
        """Return the current :attr:`report` and start a new one.

        Returns
        -------
        CascadeReport
            The counts since the last reset.
        """
        report, self.report = self.report, CascadeReport()
        return report

    def rescore(self, tiles: torch.Tensor, points: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Score ``points`` (one ``(K, >=2)`` tensor per tile, tile px) with the classifier.

        Parameters
        ----------
        tiles : torch.Tensor
            The tiles, uint8 ``(N, 3, tile_size, tile_size)`` on :attr:`device`.
        points : sequence of torch.Tensor
            Per tile, x, y in tile px (continuous convention) first.

        Returns
        -------
        list of torch.Tensor
            Per tile, float32 ``(K,)`` probabilities of "mitotic figure".
        """
        scale = self.classifier.mpp / self.mpp
        patches = crop_patches(tiles, points, self.classifier.patch_size, scale)
        probs = self.classifier.predict(patches) if len(patches) else torch.zeros(0)
        return list(probs.to(self.device).split([int(p.shape[0]) for p in points]))

    def detect(self, tiles: torch.Tensor) -> list[torch.Tensor]:
        """Detect candidates with the first stage and rescore them with the classifier.

        Updates :attr:`report`. See :meth:`wsimito.Detector.detect`.

        Parameters
        ----------
        tiles : torch.Tensor
            The tiles, uint8 RGB ``(N, 3, tile_size, tile_size)`` read at
            :attr:`mpp`; moved to :attr:`device`.

        Returns
        -------
        list of torch.Tensor
            One float32 ``(K, 3)`` tensor per tile: x, y in tile px and the score
            ``p1 ** (1 - w) * p2 ** w`` (see the module), for every first-stage
            point at or above ``candidate_threshold``.
        """
        tiles = check_tiles(tiles, self.tile_size).to(self.device, non_blocking=True)
        with torch.inference_mode():
            first = self.candidates.detect(tiles)
            kept = [p[p[:, 2] >= self.candidate_threshold] for p in first]
            probs = self.rescore(tiles, kept)
        w = self.classifier_weight
        scores = [
            p[:, 2].clamp(0, 1) ** (1 - w) * q.to(p.dtype) ** w
            for p, q in zip(kept, probs, strict=True)
        ]
        out = [torch.cat([p[:, :2], s[:, None]], dim=1) for p, s in zip(kept, scores, strict=True)]
        n_first = sum(int(p.shape[0]) for p in first)
        n_kept = sum(int(p.shape[0]) for p in kept)
        n_pass = sum(int((s >= self.threshold).sum()) for s in scores)
        r = self.report
        r.tiles += int(tiles.shape[0])
        r.first_stage += n_first
        r.removed_by_first_stage += n_first - n_kept
        r.candidates += n_kept
        r.removed_by_classifier += n_kept - n_pass
        r.kept += n_pass
        return [o.clone() for o in out]

    def __repr__(self) -> str:
        return (
            f"CascadeDetector(name={self.name!r}, mpp={self.mpp}, tile_size={self.tile_size}, "
            f"candidate_threshold={self.candidate_threshold}, threshold={self.threshold}, "
            f"classifier_weight={self.classifier_weight}, "
            f"classifier={self.classifier!r})"
        )


def point_stage(detector: object) -> PointDetector | None:
    """Find the point detector in ``detector``: itself, or a cascade's first stage.

    Parameters
    ----------
    detector : object
        Any detector.

    Returns
    -------
    PointDetector or None
        ``detector`` if it is a :class:`PointDetector`, the first stage of a
        :class:`CascadeDetector` over one, else ``None``.
    """
    if isinstance(detector, CascadeDetector):
        detector = detector.candidates
    return detector if isinstance(detector, PointDetector) else None


__all__ = ["CascadeDetector", "CascadeNet", "CascadeReport", "point_stage"]
