"""Training the cascade's patch classifier with difficulty-aware learning (WS-DAL).

WS-DAL attacks look-alikes with weak point supervision in four steps; the
first, negative sample search, is :mod:`wsimito.train.mining`. This module
holds the other three and the training loop around them:

- **DMU, dynamic memory units** (:class:`DynamicMemory`): after every epoch
  the loss and the predicted probability of its given label are recorded for
  every training sample (one pass over the centred patches, no augmentation).
  From the memory each sample is *easy* (mean probability of its label at
  least ``easy_probability``), *probably mislabelled* (below
  ``mislabelled_probability``: the network keeps disagreeing with the label,
  which noisy labels do long before the network memorises them) or *hard*.
  From ``dmu_warmup`` epochs on, mislabelled samples are dropped from the
  sampler or their loss down-weighted.
- **DLE, difficulty level evaluation** (:func:`difficulty_levels`): the hard
  samples of each class are clustered by their loss trajectories (k-means,
  SciPy) into ``levels`` levels ordered by mean loss; easy samples are level 0.
- **CSDGL, class-stratified difficulty-guided learning**
  (:func:`supervised_contrastive_loss`): a supervised contrastive loss (Khosla
  et al. 2020) over class x difficulty subclasses, on a projection of the
  pooled features, added to the cross-entropy with weight ``csdgl_weight``.
  Without DLE the subclasses are the two classes.

Each is switched by :class:`ClassifierConfig` (``dmu``, ``dle``, ``csdgl``)
for ablations. Patches are drawn by :class:`~wsimito.train.BalancedSampler`
(mitotic figures against negatives, balanced over domains) and augmented on
the device by :class:`~wsimito.train.Augmenter`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.cluster.vq import kmeans2
from torch import nn

from ..detect import resolve_device
from ..models.classifier import PatchClassifier, PatchClassifierNet, crop_patches
from .augment import Augmenter, Dihedral, GaussianBlur, HEDStainJitter, Zoom
from .sampler import BalancedSampler

if TYPE_CHECKING:
    from ..slide import Slide
    from .mining import MinedCandidates

Log = Callable[[str], None]

#: Sample states of :class:`DynamicMemory`.
EASY, HARD, MISLABELLED = 0, 1, 2
STATE_NAMES = ("easy", "hard", "mislabelled")


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything that shapes a patch-classifier training run.

    Parameters
    ----------
    mpp : float
        Patch resolution, µm/px.
    patch_size : int
        Patch side, px at ``mpp``.
    margin : int
        Extra px read on each side of the patch, for shifts and rotations.
    max_shift_px : float
        Largest shift of the patch centre away from the candidate, px.
    width : int
        :class:`~wsimito.models.classifier.PatchClassifierNet` width.
    dropout : float
        Dropout before the last layer.
    epochs : int
        Training epochs.
    epoch_size : int or None
        Patches per epoch (``None``: as many as training samples).
    batch_size : int
        Patches per step.
    lr, weight_decay : float
        AdamW settings; the learning rate follows a one-cycle schedule.
    proportions : mapping
        Class shares of the sampler (``"mitosis"``, ``"lookalike"``).
    domains : sequence of str
        Columns of the patch table that define the sampler's domains.
    domain_weights : mapping, optional
        How often each domain is drawn (default: uniformly).
    augment : bool
        Flips and rotations, small zoom, HED jitter, blur (:func:`default_augmenter`).
    stain_sigma, stain_p : float
        Strength of the HED concentration jitter and the share of patches it touches.
    dmu : bool
        Act on the memory: drop or down-weight probably mislabelled samples.
    dmu_warmup : int
        Epochs before DMU acts.
    dmu_action : {"drop", "downweight"}
        What happens to probably mislabelled samples.
    dmu_weight : float
        Loss weight of probably mislabelled samples with ``"downweight"``.
    easy_probability : float
        Mean probability of the given label from which a sample is easy.
    mislabelled_probability : float
        Mean probability of the given label below which a sample is
        probably mislabelled.
    memory_window : int
        Epochs of the memory the states are judged on (the most recent).
    dle : bool
        Split hard samples into difficulty levels (used by CSDGL).
    levels : int
        Difficulty levels of hard samples.
    csdgl : bool
        Add the supervised contrastive loss over class x difficulty subclasses.
    csdgl_weight : float
        Its weight next to the cross-entropy.
    temperature : float
        Its temperature.
    projection_dim : int
        Dimension of the contrastive projection.
    seed : int
        Seeds the network, the sampler and the augmentation.
    """

    mpp: float = 0.5
    patch_size: int = 64
    margin: int = 8
    max_shift_px: float = 3.0
    width: int = 16
    dropout: float = 0.2
    epochs: int = 12
    epoch_size: int | None = None
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    proportions: Mapping[str, float] = field(
        default_factory=lambda: {"mitosis": 0.5, "lookalike": 0.5}
    )
    domains: Sequence[str] = ()
    domain_weights: Mapping[str, float] | None = None
    augment: bool = True
    stain_sigma: float = 0.1
    stain_p: float = 0.5
    dmu: bool = True
    dmu_warmup: int = 3
    dmu_action: Literal["drop", "downweight"] = "drop"
    dmu_weight: float = 0.1
    easy_probability: float = 0.9
    mislabelled_probability: float = 0.3
    memory_window: int = 3
    dle: bool = True
    levels: int = 2
    csdgl: bool = True
    csdgl_weight: float = 0.5
    temperature: float = 0.1
    projection_dim: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dmu_action not in ("drop", "downweight"):
            raise ValueError(f"dmu_action must be 'drop' or 'downweight', got {self.dmu_action!r}")
        if not 0 <= self.mislabelled_probability < self.easy_probability <= 1:
            raise ValueError(
                "need 0 <= mislabelled_probability < easy_probability <= 1, got "
                f"{self.mislabelled_probability}, {self.easy_probability}"
            )
        for name in ("patch_size", "epochs", "batch_size", "levels", "projection_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.margin < 0 or self.max_shift_px < 0 or self.max_shift_px > self.margin:
            raise ValueError(
                f"need 0 <= max_shift_px <= margin (px), got {self.max_shift_px}, {self.margin}"
            )
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ClassifierConfig:
        """Make a config from a mapping (e.g. a TOML table); unknown keys are an error.

        Parameters
        ----------
        values : Mapping
            Settings by field name; missing ones take their defaults.

        Returns
        -------
        ClassifierConfig
            The config, checked as by the constructor.

        Raises
        ------
        ValueError
            Naming the unknown keys and the known ones.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown classifier settings {unknown}; known: {sorted(known)}")
        return cls(**dict(values))

    @property
    def read_size(self) -> int:
        """Side of the stored patches, px at ``mpp`` (patch plus margins)."""
        return self.patch_size + 2 * self.margin


# -- data ---------------------------------------------------------------------------


@dataclass
class PatchSet:
    """Training patches centred on candidates, with labels.

    Attributes
    ----------
    images : torch.Tensor
        uint8 ``(N, 3, S, S)``, each centred on its candidate (continuous
        pixel ``S / 2``), S = ``patch_size + 2 * margin`` px at the config's mpp.
    labels : torch.Tensor
        int64 ``(N,)``: 1 for a mitotic figure, 0 for a negative (the given,
        possibly wrong, labels).
    cells : pandas.DataFrame
        One row per patch: at least ``slide``, ``x``, ``y`` (level-0 px), and
        any domain columns.
    """

    images: torch.Tensor
    labels: torch.Tensor
    cells: pd.DataFrame

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, S, S), got {tuple(self.images.shape)}")
        if self.labels.shape != (n,) or len(self.cells) != n:
            raise ValueError(
                f"{n} images, {tuple(self.labels.shape)} labels and {len(self.cells)} cells: "
                "give one label and one cell row per image"
            )
        self.labels = self.labels.to(torch.int64)
        self.cells = self.cells.reset_index(drop=True)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @classmethod
    def from_mined(
        cls,
        mined: MinedCandidates,
        slides: Mapping[str, Slide | str | os.PathLike[str]],
        config: ClassifierConfig,
        *,
        slide_info: pd.DataFrame | None = None,
        figures: bool = False,
    ) -> PatchSet:
        """Read patches around every row of a :class:`~wsimito.train.mining.MinedCandidates`.

        Parameters
        ----------
        mined : MinedCandidates
            Hits become positives; hard negatives and look-alikes negatives.
        slides : mapping of name to Slide or path
            The slides the mining ran on (paths need the resolution in the file).
        config : ClassifierConfig
            Sets the patch resolution and size.
        slide_info : pandas.DataFrame, optional
            Per-slide columns (``slide`` plus e.g. domain columns) joined to the cells.
        figures : bool
            Also add a positive patch centred on every annotated mitotic figure
            (``kind`` ``"figure"``), not only on the candidates near one.

        Returns
        -------
        PatchSet
            uint8 patches of ``config.read_size`` px at ``config.mpp``, labelled 1
            for hits (and figures), 0 otherwise, in the order of ``mined.cells``
            (figures last).

        Raises
        ------
        KeyError
            When a mined slide is not in ``slides``.
        """
        from ..slide import Slide, open_slide
        from .mining import candidate_patches

        cells = mined.cells
        if figures:
            rows = [
                pd.DataFrame(
                    {
                        "slide": name,
                        "x": xy[:, 0],
                        "y": xy[:, 1],
                        "kind": "figure",
                        "source": "annotation",
                        "distance_um": 0.0,
                    }
                )
                for name, xy in mined.figures.items()
                if len(xy)
            ]
            cells = pd.concat([cells, *rows], ignore_index=True)
        cells = cells.reset_index(drop=True)
        images = torch.empty((len(cells), 3, config.read_size, config.read_size), dtype=torch.uint8)
        for name, rows in cells.groupby("slide", sort=False):
            source = slides[name]
            slide = source if isinstance(source, Slide) else open_slide(source)
            try:
                patches = candidate_patches(
                    slide, rows[["x", "y"]].to_numpy(), mpp=config.mpp, size=config.read_size
                )
            finally:
                if slide is not source:
                    slide.close()
            images[torch.from_numpy(rows.index.to_numpy(dtype=np.int64, copy=True))] = patches
        positive = cells["kind"].isin(["hit", "figure"]).to_numpy()
        labels = torch.from_numpy(positive.astype(np.int64))
        table = cells.copy()
        if slide_info is not None:
            table = table.merge(slide_info, on="slide", how="left", suffixes=("", "_slide"))
        return cls(images, labels, table)

    @staticmethod
    def concat(sets: Sequence[PatchSet]) -> PatchSet:
        """Join patch sets into one.

        Parameters
        ----------
        sets : sequence of PatchSet
            Sets with the same patch size.

        Returns
        -------
        PatchSet
            The patches of all ``sets``, in order.
        """
        return PatchSet(
            torch.cat([s.images for s in sets]),
            torch.cat([s.labels for s in sets]),
            pd.concat([s.cells for s in sets], ignore_index=True),
        )

    def subset(self, index: np.ndarray) -> PatchSet:
        """Select patches.

        Parameters
        ----------
        index : numpy.ndarray
            Int positions or a boolean mask of length ``len(self)``.

        Returns
        -------
        PatchSet
            The patches at ``index``, in its order.
        """
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        t = torch.from_numpy(index.astype(np.int64))
        return PatchSet(self.images[t], self.labels[t], self.cells.iloc[index])

    def with_flipped_labels(self, fraction: float, seed: int = 0) -> tuple[PatchSet, np.ndarray]:
        """Flip a random share of the labels (to test robustness to label noise).

        Parameters
        ----------
        fraction : float
            Share of the labels flipped, in [0, 1] (rounded to a whole count).
        seed : int
            Seeds the choice.

        Returns
        -------
        patches : PatchSet
            A copy with the flipped labels (the images are shared, not copied).
        flipped : numpy.ndarray
            ``(n,)`` bool: which labels were flipped.

        Raises
        ------
        ValueError
            When ``fraction`` lies outside [0, 1].
        """
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
        rng = np.random.default_rng(seed)
        flipped = np.zeros(len(self), bool)
        flipped[rng.choice(len(self), size=round(fraction * len(self)), replace=False)] = True
        labels = self.labels.clone()
        labels[torch.from_numpy(flipped)] = 1 - labels[torch.from_numpy(flipped)]
        return PatchSet(self.images, labels, self.cells), flipped


# -- DMU ----------------------------------------------------------------------------


class DynamicMemory:
    """Per-sample loss and probability of the given label, one row per epoch.

    Parameters
    ----------
    n : int
        Number of training samples.
    """

    def __init__(self, n: int) -> None:
        self.n = int(n)
        self._loss: list[np.ndarray] = []
        self._prob: list[np.ndarray] = []

    def __len__(self) -> int:
        """Epochs recorded."""
        return len(self._loss)

    def record(self, loss: np.ndarray, prob_of_label: np.ndarray) -> None:
        """Add one epoch's losses and probabilities.

        Parameters
        ----------
        loss : numpy.ndarray
            ``(n,)`` loss of each sample.
        prob_of_label : numpy.ndarray
            ``(n,)`` predicted probability of each sample's given label.

        Raises
        ------
        ValueError
            When an array does not have ``n`` entries.
        """
        loss, prob = np.asarray(loss, np.float64), np.asarray(prob_of_label, np.float64)
        if loss.shape != (self.n,) or prob.shape != (self.n,):
            raise ValueError(f"need ({self.n},) losses and probabilities, got {loss.shape}")
        self._loss.append(loss)
        self._prob.append(prob)

    @property
    def losses(self) -> np.ndarray:
        """``(n, epochs)`` loss trajectories."""
        return np.stack(self._loss, axis=1) if self._loss else np.zeros((self.n, 0))

    @property
    def probabilities(self) -> np.ndarray:
        """``(n, epochs)`` probability of each sample's given label."""
        return np.stack(self._prob, axis=1) if self._prob else np.zeros((self.n, 0))

    def states(
        self,
        easy_probability: float = 0.9,
        mislabelled_probability: float = 0.3,
        window: int | None = 3,
    ) -> np.ndarray:
        """Each sample's state from the mean probability of its label over recent epochs.

        Parameters
        ----------
        easy_probability : float
            Mean probability of the given label from which a sample is easy.
        mislabelled_probability : float
            Mean probability below which it is probably mislabelled.
        window : int or None
            Epochs averaged: the last ``window`` recorded (``None``: all).

        Returns
        -------
        numpy.ndarray
            ``(n,)`` int: :data:`EASY`, :data:`HARD` or :data:`MISLABELLED`
            (all :data:`HARD` before the first epoch is recorded).
        """
        if not self._prob:
            return np.full(self.n, HARD)
        recent = self.probabilities if window is None else self.probabilities[:, -int(window) :]
        mean = recent.mean(axis=1)
        return np.where(
            mean >= easy_probability,
            EASY,
            np.where(mean < mislabelled_probability, MISLABELLED, HARD),
        )


# -- DLE ----------------------------------------------------------------------------


def difficulty_levels(
    trajectories: np.ndarray,
    labels: np.ndarray,
    states: np.ndarray,
    levels: int = 2,
    seed: int = 0,
) -> np.ndarray:
    """Difficulty level of each sample: 0 easy, 1..``levels`` hard, -1 mislabelled.

    The hard samples of each class are clustered by their standardised loss
    trajectories with k-means (``scipy.cluster.vq.kmeans2``, k-means++
    start); clusters are numbered by increasing mean loss.

    Parameters
    ----------
    trajectories : numpy.ndarray
        ``(n, epochs)`` losses.
    labels : numpy.ndarray
        ``(n,)`` given labels.
    states : numpy.ndarray
        ``(n,)`` states from :meth:`DynamicMemory.states`.
    levels : int
        Number of hard levels.
    seed : int
        Seeds k-means.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` int levels.
    """
    out = np.where(states == EASY, 0, np.where(states == MISLABELLED, -1, 1)).astype(np.int64)
    if levels < 2 or trajectories.shape[1] == 0:
        return out
    rng = np.random.default_rng(seed)
    for label in np.unique(labels):
        hard = np.flatnonzero((labels == label) & (states == HARD))
        if len(hard) < 2 * levels:
            continue
        x = trajectories[hard]
        x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
        _, assign = kmeans2(x, levels, minit="++", seed=rng)
        means = [
            trajectories[hard[assign == k]].mean() if (assign == k).any() else np.inf
            for k in range(levels)
        ]
        rank = np.argsort(np.argsort(means))
        out[hard] = 1 + rank[assign]
    return out


# -- CSDGL --------------------------------------------------------------------------


def supervised_contrastive_loss(
    embeddings: torch.Tensor, groups: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, the "out" form) over ``groups``.

    Parameters
    ----------
    embeddings : torch.Tensor
        ``(B, D)``; L2-normalised here.
    groups : torch.Tensor
        ``(B,)`` int subclass of each sample; samples with a negative group
        take no part.
    temperature : float
        Softmax temperature.

    Returns
    -------
    torch.Tensor
        Scalar: the mean over anchors that have at least one positive (0 if none).
    """
    keep = groups >= 0
    z = F.normalize(embeddings[keep].float(), dim=1)
    g = groups[keep]
    b = z.shape[0]
    if b < 2:
        return embeddings.sum() * 0.0
    logits = z @ z.T / temperature
    self_mask = torch.eye(b, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, -1e9)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (g[:, None] == g[None, :]) & ~self_mask
    n_pos = positive.sum(dim=1)
    anchors = n_pos > 0
    if not anchors.any():
        return embeddings.sum() * 0.0
    mean_log_prob = (log_prob * positive).sum(dim=1)[anchors] / n_pos[anchors]
    return -mean_log_prob.mean()


class _Projection(nn.Module):
    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim_in, dim_in), nn.ReLU(inplace=True), nn.Linear(dim_in, dim_out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


# -- the loop -----------------------------------------------------------------------


@dataclass
class TrainedClassifier:
    """What :func:`train_patch_classifier` returns.

    Attributes
    ----------
    classifier : PatchClassifier
        The trained network, ready for :class:`~wsimito.models.cascade.CascadeDetector`.
    memory : DynamicMemory
        Loss and probability trajectories (empty when DMU and DLE are off).
    states : numpy.ndarray
        ``(n,)`` final :data:`EASY` / :data:`HARD` / :data:`MISLABELLED` state.
    levels : numpy.ndarray
        ``(n,)`` final difficulty level (0 easy, 1.. hard, -1 mislabelled).
    history : pandas.DataFrame
        One row per epoch: losses, training accuracy, flagged samples, seconds,
        and validation accuracy where a validation set was given.
    config : ClassifierConfig
        The settings it was trained with.
    """

    classifier: PatchClassifier
    memory: DynamicMemory
    states: np.ndarray
    levels: np.ndarray
    history: pd.DataFrame
    config: ClassifierConfig

    @property
    def flagged(self) -> np.ndarray:
        """``(n,)`` bool: samples the memory calls probably mislabelled."""
        flagged: np.ndarray = self.states == MISLABELLED
        return flagged


def default_augmenter(seed: int, stain_sigma: float = 0.1, stain_p: float = 0.5) -> Augmenter:
    """Make the patch augmentation: flips and 90° rotations, zoom ±10 %, HED jitter, blur.

    Macenko stain-matrix jitter is left out: it estimates a stain matrix per
    patch, which costs more than the classifier's own step on the CPU.

    Parameters
    ----------
    seed : int
        Seeds the augmentation.
    stain_sigma : float
        Strength of the HED concentration jitter: scale up to ±``stain_sigma``
        (a fraction), shift up to ±0.02 OD.
    stain_p : float
        Share of the patches the HED jitter touches, in [0, 1].

    Returns
    -------
    Augmenter
        Dihedral flips and rotations (every patch), zoom ±10 % (p 0.2), the
        HED jitter (p ``stain_p``) and a Gaussian blur with sigma 0.3-1 px (p 0.1).
    """
    return Augmenter(
        [
            Dihedral(),
            Zoom(max_change=0.1, p=0.2),
            HEDStainJitter(sigma=stain_sigma, bias=0.02, p=stain_p),
            GaussianBlur(sigma=(0.3, 1.0), p=0.1),
        ],
        seed=seed,
    )


def _sampler(
    train: PatchSet, active: np.ndarray, config: ClassifierConfig, seed: int
) -> BalancedSampler:
    cells = train.cells.iloc[active].reset_index(drop=True).copy()
    labels = train.labels.numpy()[active]
    cells["kind"] = np.where(labels == 1, "mitosis", "lookalike")
    slide_cols = [c for c in config.domains if c in cells]
    slides = cells.drop_duplicates("slide")[["slide", *slide_cols]].copy()
    slides["width"], slides["height"] = 1, 1
    size = config.epoch_size or len(train)
    return BalancedSampler(
        cells,
        slides,
        epoch_size=int(size),
        proportions=dict(config.proportions),
        domains=list(config.domains),
        domain_weights=dict(config.domain_weights or {}) or "uniform",
        max_shift=config.max_shift_px / (config.patch_size / 2),
        seed=seed,
    )


def _centre_patches(images: torch.Tensor, config: ClassifierConfig) -> torch.Tensor:
    m = config.margin
    return images[:, :, m : m + config.patch_size, m : m + config.patch_size]


def evaluate_patches(
    classifier: PatchClassifier, patches: PatchSet, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Score the centred patches of a set with a classifier.

    Parameters
    ----------
    classifier : PatchClassifier
        The classifier; its ``patch_size`` is cut from the centre of each patch.
    patches : PatchSet
        The patches and their labels.
    batch_size : int
        Patches per forward pass.

    Returns
    -------
    probs : numpy.ndarray
        ``(n,)`` float64 probabilities of "mitotic figure", in [0, 1].
    loss : numpy.ndarray
        ``(n,)`` binary cross-entropy against the set's labels.
    """
    size = classifier.patch_size
    margin = (patches.images.shape[-1] - size) // 2
    centre = patches.images[:, :, margin : margin + size, margin : margin + size]
    probs = classifier.predict(centre, batch_size=batch_size).cpu().double()
    labels = patches.labels.double()
    loss = F.binary_cross_entropy(probs.clamp(1e-6, 1 - 1e-6), labels, reduction="none")
    return probs.numpy(), loss.numpy()


def train_patch_classifier(
    train: PatchSet,
    config: ClassifierConfig | None = None,
    *,
    validation: PatchSet | None = None,
    device: str | torch.device = "auto",
    log: Log | None = None,
) -> TrainedClassifier:
    """Train a :class:`PatchClassifierNet` on candidate patches with DMU, DLE and CSDGL.

    Parameters
    ----------
    train : PatchSet
        Training patches (``S = config.read_size`` px at ``config.mpp``).
    config : ClassifierConfig, optional
        Settings; the defaults switch DMU, DLE and CSDGL on.
    validation : PatchSet, optional
        Scored each epoch (accuracy, in the history).
    device : str or torch.device
        Where to train.
    log : callable, optional
        Receives one line per epoch.

    Returns
    -------
    TrainedClassifier
        The classifier (on ``device``, in eval mode), the memory, the final
        states and levels, and the per-epoch history.

    Raises
    ------
    ValueError
        When the patches do not have ``config.read_size`` px, or one class is missing.
    """
    config = config or ClassifierConfig()
    if train.images.shape[-1] != config.read_size or train.images.shape[-2] != config.read_size:
        raise ValueError(
            f"training patches are {tuple(train.images.shape[-2:])} px; this config needs "
            f"{config.read_size} px (patch_size + 2 * margin) at {config.mpp} µm/px"
        )
    labels_np = train.labels.numpy()
    if len(np.unique(labels_np)) < 2:
        raise ValueError("training patches need both classes (mitotic figures and negatives)")
    device = resolve_device(device)
    torch.manual_seed(config.seed)
    net = PatchClassifierNet(width=config.width, dropout=config.dropout)
    classifier = PatchClassifier(net, mpp=config.mpp, patch_size=config.patch_size, device=device)
    projection = _Projection(net.feature_dim, config.projection_dim).to(device)
    params = list(net.parameters()) + (list(projection.parameters()) if config.csdgl else [])
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    epoch_size = int(config.epoch_size or len(train))
    steps_per_epoch = max(1, math.ceil(epoch_size / config.batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=steps_per_epoch * config.epochs, pct_start=0.2
    )
    augmenter = (
        default_augmenter(config.seed, config.stain_sigma, config.stain_p)
        if config.augment
        else None
    )
    memory = DynamicMemory(len(train))
    use_memory = config.dmu or config.dle
    states = np.full(len(train), HARD)
    levels = np.ones(len(train), np.int64)
    weights = np.ones(len(train))
    active = np.arange(len(train))
    sampler = _sampler(train, active, config, config.seed)
    rows = []
    half = config.read_size / 2.0
    for epoch in range(config.epochs):
        start = time.perf_counter()
        net.train()
        projection.train()
        samples = sampler.samples(epoch)
        order = active[samples.cell]  # sampler rows -> training indices
        shifts = samples.offset * (config.patch_size / 2)
        totals = {"loss": 0.0, "ce": 0.0, "supcon": 0.0, "correct": 0, "seen": 0}
        for step in range(steps_per_epoch):
            part = slice(step * config.batch_size, (step + 1) * config.batch_size)
            index = order[part]
            if len(index) == 0:
                break
            t_index = torch.from_numpy(index)
            images = train.images[t_index].to(device)
            centres = [torch.tensor([[half + dx, half + dy]]) for dx, dy in shifts[part]]
            if augmenter is not None:
                images, centres = augmenter(images, centres)
            patches = crop_patches(images, centres, config.patch_size)
            target = train.labels[t_index].to(device).float()
            features = net.features(classifier.normalize(patches))
            logits = net.head(features).squeeze(1)
            w = torch.from_numpy(weights[index]).to(device, torch.float32)
            ce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * w).sum()
            ce = ce / w.sum().clamp(min=1e-6)
            loss = ce
            supcon = torch.zeros((), device=device)
            if config.csdgl:
                lv = levels[index] if config.dle else np.where(levels[index] < 0, -1, 0)
                group = np.where(lv < 0, -1, train.labels.numpy()[index] * (config.levels + 1) + lv)
                supcon = supervised_contrastive_loss(
                    projection(features), torch.from_numpy(group).to(device), config.temperature
                )
                loss = loss + config.csdgl_weight * supcon
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"loss became {value} in epoch {epoch}; lower lr")
            totals["loss"] += value * len(index)
            totals["ce"] += float(ce.detach()) * len(index)
            totals["supcon"] += float(supcon.detach()) * len(index)
            totals["correct"] += int(((logits.detach() > 0).float() == target).sum())
            totals["seen"] += len(index)
        net.eval()
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": totals["loss"] / max(1, totals["seen"]),
            "ce": totals["ce"] / max(1, totals["seen"]),
            "supcon": totals["supcon"] / max(1, totals["seen"]),
            "train_accuracy": totals["correct"] / max(1, totals["seen"]),
        }
        if use_memory:
            probs, loss_np = evaluate_patches(classifier, train)
            memory.record(loss_np, np.where(labels_np == 1, probs, 1 - probs))
            states = memory.states(
                config.easy_probability, config.mislabelled_probability, config.memory_window
            )
            if config.dle:
                levels = difficulty_levels(
                    memory.losses, labels_np, states, config.levels, config.seed + epoch
                )
            else:
                levels = np.where(states == MISLABELLED, -1, 0)
            if config.dmu and epoch + 1 >= config.dmu_warmup:
                flagged = states == MISLABELLED
                if config.dmu_action == "drop":
                    weights = np.where(flagged, 0.0, 1.0)
                    keep = np.flatnonzero(~flagged)
                    if len(np.unique(labels_np[keep])) == 2 and not np.array_equal(keep, active):
                        active = keep
                        sampler = _sampler(train, active, config, config.seed)
                else:
                    weights = np.where(flagged, config.dmu_weight, 1.0)
            row.update({name: int((states == k).sum()) for k, name in enumerate(STATE_NAMES)})
        if validation is not None and len(validation):
            vprobs, _ = evaluate_patches(classifier, validation)
            row["val_accuracy"] = float(
                ((vprobs >= 0.5).astype(int) == validation.labels.numpy()).mean()
            )
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        if log is not None:
            log(
                "  epoch {epoch}: loss {loss:.3f} (ce {ce:.3f}, supcon {supcon:.3f}), "
                "train acc {train_accuracy:.3f}".format(**row)
                + (f", val acc {row['val_accuracy']:.3f}" if "val_accuracy" in row else "")
                + (
                    f", {row['mislabelled']} flagged, {row['hard']} hard"
                    if "mislabelled" in row
                    else ""
                )
                + f" ({row['seconds']:.0f} s)"
            )
    net.eval()
    return TrainedClassifier(classifier, memory, states, levels, pd.DataFrame(rows), config)


def config_summary(config: ClassifierConfig) -> dict[str, Any]:
    """Turn a config into a plain dict (for checkpoint metadata).

    Parameters
    ----------
    config : ClassifierConfig
        The config.

    Returns
    -------
    dict of str to Any
        Its fields by name; mappings as dicts, sequences as lists.
    """
    out = asdict(config)
    out["proportions"] = dict(config.proportions)
    out["domains"] = list(config.domains)
    out["domain_weights"] = dict(config.domain_weights or {})
    return out


def with_components(
    config: ClassifierConfig, *, dmu: bool, dle: bool, csdgl: bool
) -> ClassifierConfig:
    """Switch the three WS-DAL components of a config (for ablations).

    Parameters
    ----------
    config : ClassifierConfig
        The config.
    dmu, dle, csdgl : bool
        Whether DMU, DLE and CSDGL are on.

    Returns
    -------
    ClassifierConfig
        A copy of ``config`` with these three fields replaced.
    """
    return replace(config, dmu=dmu, dle=dle, csdgl=csdgl)


__all__ = [
    "EASY",
    "HARD",
    "MISLABELLED",
    "ClassifierConfig",
    "DynamicMemory",
    "PatchSet",
    "TrainedClassifier",
    "default_augmenter",
    "difficulty_levels",
    "evaluate_patches",
    "supervised_contrastive_loss",
    "train_patch_classifier",
    "with_components",
]
