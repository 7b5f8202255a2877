"""The training loop behind ``wsimito train CONFIG.toml``.

One epoch: the sampler draws ``epoch_size`` patches, a background thread
reads them (:class:`~wsimito.train.datasets.PatchDataset`), each batch is
augmented on the device (:class:`~wsimito.train.augment.Augmenter`), and the
network takes one optimiser step per batch, in mixed precision on CUDA
(autocast, with a gradient scaler for float16; the CPU stays float32).
After it, the detector counts every validation image with
:func:`wsimito.count_mitoses`, the decision threshold with the best pooled F1
(MIDOG matching, 7.5 µm with each image's mpp) is chosen, and the outputs are
written:

- ``last.pt``: the training state (model, optimiser, scheduler, gradient
  scaler, sampler, augmentation generator, FDA bank, Python / numpy / torch
  random states, metric history, chosen thresholds), so ``--resume``
  continues the same run exactly;
- ``best.pt``: the detector of the best validation F1 so far, with that
  threshold, as a normal wsimito checkpoint (:func:`wsimito.load_detector`);
- ``metrics.csv`` and ``curves.png`` (when matplotlib is installed);
- at the end, ``test_metrics.csv``: the best detector on the test slides.
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch

from ..detect import autocast_dtype, resolve_device
from ..io.atomic import atomic_path, atomic_write
from ..models import PointDetector, PointHeatmapNet, RetinaNetDA, RetinaNetDetector
from ..models.anchors import create_anchors
from ..models.cascade import point_stage
from ..models.detectors import MIDOG21_MEAN, MIDOG21_STD
from ..progress import Progress
from .augment import (
    AmplitudeBank,
    Augmenter,
    Dihedral,
    DomainFDA,
    GaussianBlur,
    HEDStainJitter,
    JPEGArtefacts,
    Operation,
    StainMatrixJitter,
    Zoom,
)
from .config import Architecture, ConfigError, TrainingConfig, load_config
from .datasets import KIND_CODES, PatchDataset, TrainingDataError, slide_table
from .losses import focal_heatmap_loss, heatmap_targets, lookalike_weights, retinanet_loss
from .sampler import BalancedSampler, Samples, domain_labels
from .validation import (
    ImageDetections,
    best_threshold,
    detect_images,
    domain_scores,
    pooled_score,
)

if TYPE_CHECKING:
    from ..detect import Detector

STATE_FORMAT = "wsimito-training-state"
STATE_VERSION = 1
Log = Callable[[str], None]

#: Defaults of the point detector's geometry when nothing else sets them.
POINT_TILE_SIZE, POINT_OVERLAP, DEFAULT_MPP = 512, 64, 0.25
#: Minimum distance between two detections, µm (25 px at 0.25 µm/px, as the MIDOG reference).
MIN_DISTANCE_UM = 6.25


# -- data -----------------------------------------------------------------------------
def load_tables(config: TrainingConfig) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Read the cells and slides of ``config.data``.

    ``format = "table"`` reads a CSV or Parquet table in the layout of
    :meth:`wsimito.Annotations.to_frame`; every other format goes through
    :func:`wsimito.read_annotations`.

    Parameters
    ----------
    config : TrainingConfig
        The run; its ``[data]`` section is read.

    Returns
    -------
    cells : pandas.DataFrame
        One row per annotated cell (x, y in level-0 px of its slide).
    slides : pandas.DataFrame
        One row per slide, with its columns (split, domain, ...).
    source : str
        The annotations' path, for messages.

    Raises
    ------
    TrainingDataError
        ``[data] annotations`` does not exist.
    ConfigError
        ``split_table`` is given with ``format = "table"``.
    """
    data = config.data
    path = Path(data.annotations)
    if not path.exists():
        raise TrainingDataError(f"[data] annotations: {path} does not exist")
    if data.format == "table":
        if data.split_table is not None:
            raise ConfigError(
                "[data] split_table works with annotation files, not format = 'table'"
            )
        cells = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        return cells, slide_table(cells), str(path)
    try:
        from ..io.annotations import read_annotations
    except ImportError as exc:  # the annotation readers are a separate module
        raise ConfigError(
            f"[data] format = {data.format!r} needs wsimito.read_annotations, which this "
            "installation lacks; convert the annotations to a table and use format = 'table'"
        ) from exc
    ann = read_annotations(
        path,
        format=data.format,
        split=data.split_table,
        mitosis_names=data.mitosis_names,
        lookalike_names=data.lookalike_names,
        margin_px=data.margin_px,
    )
    return ann.to_frame(), ann.slide_info, str(path)


def split_slides(
    slides: pd.DataFrame, config: TrainingConfig, source: str = "annotations"
) -> dict[str, list[str]]:
    """Split the slides into the training, validation and test sets of ``config.split``.

    Held-out slides (``hold_out_column`` in ``hold_out``) leave training and
    validation and are the only test slides. Without validation values, a
    ``validation_fraction`` of the training slides is drawn (seeded), per
    domain of ``[sampler] domains``, at least one per domain that has two.

    Parameters
    ----------
    slides : pandas.DataFrame
        One row per slide: ``slide`` (its name) and the split columns.
    config : TrainingConfig
        The run (``[split]``, ``[sampler] domains`` and ``seed``).
    source : str
        Where the slides come from, for messages.

    Returns
    -------
    dict of str to list of str
        Slide names under ``"train"``, ``"validation"`` and ``"test"``.

    Raises
    ------
    TrainingDataError
        When the split column is missing or a set comes out empty, naming the
        values there are.
    """
    s = config.split
    if s.column not in slides:
        raise TrainingDataError(
            f"{source}: the slides have no {s.column!r} column for [split] column; they have "
            f"{list(slides.columns)} (MIDOG++: set [data] split_table)"
        )
    value = slides[s.column].astype(str)
    held = pd.Series(False, index=slides.index)
    if s.hold_out:
        if s.hold_out_column is None or s.hold_out_column not in slides:
            raise TrainingDataError(
                f"[split] hold_out needs hold_out_column, a slide column; got "
                f"{s.hold_out_column!r}, columns are {list(slides.columns)}"
            )
        held = slides[s.hold_out_column].astype(str).isin(s.hold_out)
        _require(held, f"{s.hold_out_column} in {s.hold_out}", slides[s.hold_out_column], source)
    train = value.isin(s.train) & ~held
    _require(train, f"{s.column} in {s.train}", value, source, "training")
    if s.validation:
        validation = value.isin(s.validation) & ~held
        _require(validation, f"{s.column} in {s.validation}", value, source, "validation")
    else:
        validation = _draw_validation(slides, train, config)
        if not validation.any():
            raise TrainingDataError(
                f"{source}: the validation split is empty ([split] validation_fraction = "
                f"{s.validation_fraction} of {int(train.sum())} training slides); raise it or "
                "name validation values"
            )
        train &= ~validation
    test = value.isin(s.test) & (held if s.hold_out else True)
    names = slides["slide"].astype(str)
    return {
        "train": names[train].tolist(),
        "validation": names[validation].tolist(),
        "test": names[test].tolist(),
    }


def _require(mask: pd.Series, what: str, values: pd.Series, source: str, role: str = "") -> None:
    if not mask.any():
        present = sorted(pd.unique(values.astype(str)).tolist())
        raise TrainingDataError(
            f"{source}: the {role + ' ' if role else ''}split is empty: no slide has {what}; "
            f"the values there are {present[:12]}"
        )


def _draw_validation(slides: pd.DataFrame, train: pd.Series, config: TrainingConfig) -> pd.Series:
    fraction = config.split.validation_fraction
    out = pd.Series(False, index=slides.index)
    if fraction <= 0:
        return out
    domains = domain_labels(slides, config.sampler.domains)
    rng = np.random.default_rng([config.seed, 0x5A11])
    for domain in sorted(pd.unique(domains[train])):
        members = np.flatnonzero((train & (domains == domain)).to_numpy())
        n = int(round(fraction * len(members)))
        if len(members) >= 2:
            n = min(max(n, 1), len(members) - 1)
        out.iloc[rng.permutation(members)[:n]] = True
    return out


# -- the model ---------------------------------------------------------------------------
@dataclass
class ModelSetup:
    """The network and what a detector around it needs.

    Attributes
    ----------
    model : torch.nn.Module
        The network (on the CPU when built).
    architecture : {"point-heatmap-net", "retinanet-da"}
        Its architecture.
    mpp : float
        Resolution of its input, µm/px.
    tile_size, overlap : int
        Inference tile side and overlap, px at ``mpp``.
    mean, std : tuple of float
        Per-channel normalisation of the 0-1 RGB input.
    init_metadata : dict of str to object
        What the starting checkpoint said about itself (empty from scratch).
    """

    model: torch.nn.Module
    architecture: Architecture
    mpp: float
    tile_size: int
    overlap: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    init_metadata: dict[str, Any] = field(default_factory=dict)


def build_model(config: TrainingConfig) -> ModelSetup:
    """Build the network of ``[model]``: new (``init = "scratch"``) or from a checkpoint.

    ``init`` may be ``"demo"``, any name or path :func:`wsimito.load_detector`
    reads (a wsimito checkpoint, or the MIDOG reference RetinaNet state dict,
    plain or as ``{"model": ...}``). From a :class:`~wsimito.CascadeDetector`
    (the demo since version 2) its first stage, the point detector, is used.

    Parameters
    ----------
    config : TrainingConfig
        The run; its ``[model]`` section is used.

    Returns
    -------
    ModelSetup
        The network, its resolution (µm/px), tile geometry (px) and input
        normalisation.

    Raises
    ------
    ConfigError
        When the checkpoint's architecture or geometry does not fit the config.
    """
    m = config.model
    retina = m.architecture == "retinanet-da"
    sizes = [m.patch_size // s for s in (8, 16, 32)]
    if m.init == "scratch":
        model: torch.nn.Module
        if retina:
            model = RetinaNetDA(n_classes=2 if m.lookalikes == "class" else 1, sizes=sizes)
            mean, std = MIDOG21_MEAN, MIDOG21_STD
        else:
            model = PointHeatmapNet(width=m.width, depth=m.depth, stride=m.stride, blocks=m.blocks)
            mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
        mpp = m.mpp or DEFAULT_MPP
        tile = m.tile_size or (m.patch_size if retina else POINT_TILE_SIZE)
        overlap = (
            m.overlap if m.overlap is not None else (round(0.1 * tile) if retina else POINT_OVERLAP)
        )
        return ModelSetup(model, m.architecture, mpp, tile, overlap, mean, std)
    from ..models import load_detector

    loaded = load_detector(m.init, device="cpu")
    # a cascade (the demo since version 2) trains on from its point detector, its first stage
    det = loaded if isinstance(loaded, RetinaNetDetector) else point_stage(loaded)
    if det is None:
        raise ConfigError(
            f"[model] init = {m.init!r} holds no point-heatmap-net or retinanet-da network"
        )
    found = "retinanet-da" if isinstance(det, RetinaNetDetector) else "point-heatmap-net"
    if found != m.architecture:
        raise ConfigError(
            f"[model] init = {m.init!r} holds a {found!r} network, but architecture = "
            f"{m.architecture!r}; set architecture = {found!r}"
        )
    if isinstance(det.model, RetinaNetDA):
        model = RetinaNetDA(**{**det.model.config, "sizes": sizes})
        model.load_state_dict(det.model.state_dict())
        if m.lookalikes == "class" and det.model.n_classes < 2:
            raise ConfigError("[model] lookalikes = 'class' needs a network with 2 class outputs")
    else:
        model = det.model
        multiple = 2 ** int(det.model.config["depth"])
        if m.patch_size % multiple:
            raise ConfigError(
                f"[model] patch_size = {m.patch_size} must be a multiple of {multiple} px for "
                f"the network in {m.init!r}"
            )
    settings = det.settings
    tile = m.tile_size or (m.patch_size if retina else int(settings["tile_size"]))
    return ModelSetup(
        model,
        m.architecture,
        m.mpp or float(settings["mpp"]),
        tile,
        m.overlap if m.overlap is not None else int(settings["overlap"]),
        tuple(settings["mean"]),
        tuple(settings["std"]),
        {
            "initialised_from": str(m.init)
            + (" (the first stage of its cascade)" if det is not loaded else ""),
            "init_training_data": str(det.metadata.get("training_data", "")),
        },
    )


def build_augmenter(config: TrainingConfig, bank: AmplitudeBank | None, seed: int) -> Augmenter:
    """Build the :class:`Augmenter` of ``[augment]`` (operations in the documented order).

    Parameters
    ----------
    config : TrainingConfig
        The run; its ``[augment]`` section is used.
    bank : AmplitudeBank or None
        The FDA amplitude bank; ``None`` leaves Fourier domain adaptation out.
    seed : int
        Seed of the augmentation generator.

    Returns
    -------
    Augmenter
        The enabled operations: flips, zoom, stain matrix, HED, FDA, blur, JPEG.
    """
    a = config.augment
    ops: list[Operation] = []
    if a.flips.enabled:
        ops.append(Dihedral(p=a.flips.p))
    if a.zoom.enabled:
        ops.append(Zoom(max_change=a.zoom.max_change, p=a.zoom.p))
    if a.stain_matrix.enabled:
        ops.append(
            StainMatrixJitter(
                a.stain_matrix.matrix_sigma, a.stain_matrix.concentration_sigma, p=a.stain_matrix.p
            )
        )
    if a.hed.enabled:
        ops.append(HEDStainJitter(sigma=a.hed.sigma, bias=a.hed.bias, p=a.hed.p))
    if a.fda.enabled and bank is not None:
        ops.append(DomainFDA(bank, beta=(a.fda.beta[0], a.fda.beta[1]), p=a.fda.p))
    if a.blur.enabled:
        ops.append(GaussianBlur(sigma=(a.blur.sigma[0], a.blur.sigma[1]), p=a.blur.p))
    if a.jpeg.enabled:
        q = a.jpeg.quality
        ops.append(JPEGArtefacts(quality=(int(q[0]), int(q[1])), p=a.jpeg.p))
    return Augmenter(ops, seed=seed)


# -- results ----------------------------------------------------------------------------------
@dataclass
class TrainingResult:
    """What a run produced.

    Attributes
    ----------
    out : Path
        The output folder.
    best : Path or None
        ``best.pt``, the detector of the best validation F1.
    history : list of dict
        One row of metrics per epoch (as in ``metrics.csv``).
    test : dict
        Test-set scores of the best detector (empty when not evaluated).
    """

    out: Path
    best: Path | None
    history: list[dict[str, Any]]
    test: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """A training run of a :class:`~wsimito.train.config.TrainingConfig` (see the module).

    Parameters
    ----------
    config : TrainingConfig
        The run.
    device : str or torch.device, optional
        Overrides ``config.device``.
    progress : bool
        Progress bars for the epochs and the validation.
    log : callable
        Receives one line per event (default ``print``).
    cells, slides : pandas.DataFrame, optional
        The annotation tables, instead of reading ``[data] annotations``
        (e.g. from :meth:`wsimito.Annotations.to_frame` in a notebook).
    """

    def __init__(
        self,
        config: TrainingConfig,
        *,
        device: str | torch.device | None = None,
        progress: bool = True,
        log: Log = print,
        cells: pd.DataFrame | None = None,
        slides: pd.DataFrame | None = None,
    ) -> None:
        self.config = config
        self.device = resolve_device(device if device is not None else config.device)
        self.progress, self.log = progress, log
        self.out = Path(config.out)
        _seed_everything(config.seed)
        if cells is None:
            cells, slides, source = load_tables(config)
        else:
            source = "the given tables"
            slides = slide_table(cells) if slides is None else slides
        assert slides is not None
        self.split = split_slides(slides, config, source)
        if config.test.evaluate:
            self._check_test_images(self.split["test"])
        self.setup = build_model(config)
        self.model = self.setup.model.to(self.device)
        use = set(self.split["train"]) | set(self.split["validation"])
        self.dataset = PatchDataset(
            cells[cells["slide"].astype(str).isin(use)],
            config.data.images,
            slides=slides[slides["slide"].astype(str).isin(use)],
            mpp=self.setup.mpp,
            patch_size=config.model.patch_size,
            slide_mpp=config.data.mpp,
            margin_px=config.data.margin_px,
            unknown_classes=config.data.unknown_classes,
            max_open=config.train.max_open_slides,
            num_workers=config.train.num_workers,
            device=self.device,
            source=source,
        )
        self._cells, self._slides, self._source = cells, slides, source
        names = self.dataset.slides["slide"]
        train_mask = names.isin(self.split["train"])
        self.train_index = np.flatnonzero(train_mask.to_numpy())
        self.validation_index = np.flatnonzero(names.isin(self.split["validation"]).to_numpy())
        self.domains = domain_labels(self.dataset.slides, config.sampler.domains).tolist()
        s = config.sampler
        train_slides = self.dataset.slides[train_mask]
        self.sampler = BalancedSampler(
            self.dataset.cells[self.dataset.cells["slide"].isin(self.split["train"])],
            train_slides,
            epoch_size=s.epoch_size,
            proportions={"mitosis": s.mitosis, "lookalike": s.lookalike, "random": s.random},
            domains=s.domains,
            domain_weights=s.domain_weights,
            within_domain=s.within_domain,
            max_shift=s.max_shift,
            random_in=s.random_in,
            tissue=self._tissue(train_slides) if s.random_in == "tissue" else None,
            seed=config.seed,
        )
        self._to_dataset = self.train_index  # sampler slide k -> dataset slide
        self.batch_size = config.train.batch_size
        self.steps = config.sampler.epoch_size // self.batch_size
        if self.steps < 1:
            raise ConfigError(
                f"[sampler] epoch_size = {config.sampler.epoch_size} is below one batch "
                f"([train] batch_size = {self.batch_size})"
            )
        self.bank: AmplitudeBank | None = None
        self.augmenter = build_augmenter(config, None, config.seed)
        self.optimizer = self._optimizer()
        self.scheduler = self._scheduler()
        self._amp = (
            autocast_dtype(self.device, config.train.precision)
            if self.device.type == "cuda"
            else None
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self._amp == torch.float16)
        # input px per heatmap cell (point network); anchors (RetinaNet)
        self.network_config = dict(getattr(self.model, "config", {}))
        self.stride = int(self.network_config.get("stride", 1))
        self.anchors = (
            create_anchors([(g, g) for g in self.network_config["sizes"]]).to(self.device)
            if self.setup.architecture == "retinanet-da"
            else None
        )
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"f1": -1.0, "epoch": -1, "threshold": 0.5}
        self.epoch = 0

    # -- set-up ---------------------------------------------------------------------------
    def _check_test_images(self, names: list[str]) -> None:
        """Test images must exist (they are not opened before the end of training)."""
        folder = Path(self.config.data.images)
        missing = [n for n in names if not (folder / n).exists()]
        if missing:
            raise TrainingDataError(
                f"{len(missing)} test images are missing from {folder}, e.g. {missing[:3]}; "
                "download them, or set [test] evaluate = false to train without the test score"
            )

    def _tissue(self, slides: pd.DataFrame) -> dict[str, tuple[np.ndarray, float]]:
        from ..tissue import detect_tissue

        out = {}
        for name in slides["slide"]:
            k = int(np.flatnonzero(self.dataset.slides["slide"] == name)[0])
            with self.dataset.open(k) as slide:
                tissue = detect_tissue(slide)
                out[name] = (np.asarray(tissue.mask, bool), float(tissue.mpp) / slide.mpp)
        return out

    def _optimizer(self) -> torch.optim.Optimizer:
        o = self.config.optimizer
        params = [p for p in self.model.parameters() if p.requires_grad]
        if o.name == "sgd":
            return torch.optim.SGD(
                params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
            )
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)

    def _scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        o, total = self.config.optimizer, self.config.train.epochs * self.steps
        if o.schedule == "onecycle":
            return torch.optim.lr_scheduler.OneCycleLR(
                self.optimizer,
                max_lr=o.lr,
                total_steps=total,
                pct_start=max(o.warmup_fraction, 1e-3),
            )
        if o.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=total)
        return torch.optim.lr_scheduler.ConstantLR(self.optimizer, factor=1.0, total_iters=0)

    def prepare(self) -> None:
        """Build what a new run needs before its first epoch.

        That is the FDA amplitude bank (read from training patches) and the
        augmentation chain that uses it.
        """
        self.bank = self._build_bank()
        self.augmenter = build_augmenter(self.config, self.bank, self.config.seed)

    def _build_bank(self) -> AmplitudeBank | None:
        """The FDA bank: ``bank_patches`` random training patches per domain (seeded)."""
        a = self.config.augment.fda
        if not a.enabled:
            return None
        sampler = self.sampler
        rng = np.random.default_rng([self.config.seed, 0xFDA])
        picks, domains = [], []
        for d in range(len(sampler.domains)):
            slides = np.flatnonzero(sampler._slide_domain == d)
            if len(slides) == 0:
                continue
            chosen = slides[rng.integers(len(slides), size=a.bank_patches)]
            picks.append(chosen)
            domains.append(np.full(a.bank_patches, d))
        slide = np.concatenate(picks)
        size = sampler.slides[["width", "height"]].to_numpy(np.float64)[slide]
        xy = rng.random((len(slide), 2)) * size
        samples = Samples(
            self._to_dataset[slide],
            xy[:, 0],
            xy[:, 1],
            np.zeros((len(slide), 2)),
            np.full(len(slide), 2),
            np.concatenate(domains),
            np.full(len(slide), -1),
        )
        pixels = torch.cat(
            [self.dataset.read(samples[i : i + 32]).pixels for i in range(0, len(samples), 32)]
        )
        return AmplitudeBank.from_patches(pixels, samples.domain, beta=a.beta[1])

    # -- one step ----------------------------------------------------------------------------
    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.setup.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.setup.std, device=images.device).view(1, 3, 1, 1)
        return (images.float() / 255.0 - mean) / std

    def loss(self, images: torch.Tensor, points: list[torch.Tensor]) -> torch.Tensor:
        """Compute the training loss of one augmented batch.

        Parameters
        ----------
        images : torch.Tensor
            The uint8 ``(N, 3, H, W)`` RGB patches, on the training device.
        points : list of torch.Tensor
            Per patch, ``(K, 3)``: x, y (px of the patch) and the cell's kind
            code (:data:`~wsimito.train.datasets.KIND_CODES`).

        Returns
        -------
        torch.Tensor
            The scalar loss (focal heatmap loss, or RetinaNet's classification
            plus box loss), with its graph.
        """
        x = self._normalize(images)
        size = (images.shape[-2], images.shape[-1])
        autocast = (
            nullcontext()
            if self._amp is None
            else torch.autocast(self.device.type, dtype=self._amp)
        )
        with autocast:
            output = self.model(x)
        mitoses = [p[p[:, 2] == KIND_CODES["mitosis"], :2] for p in points]
        if self.anchors is None:
            stride = self.stride
            sigma = self.config.model.sigma or 2.0 * stride
            targets = heatmap_targets(mitoses, size, stride, sigma, self.device)
            looks = [p[p[:, 2] == KIND_CODES["lookalike"], :2] for p in points]
            weights = lookalike_weights(
                looks, size, stride, sigma, self.config.model.lookalike_weight, self.device
            )
            return focal_heatmap_loss(
                output, targets, sum(len(m) for m in mitoses), weights=weights
            )
        as_class = self.config.model.lookalikes == "class"
        classes = [
            torch.where(p[:, 2] == KIND_CODES["mitosis"], 0, 1 if as_class else -1).long()
            for p in points
        ]
        cls_loss, box_loss = retinanet_loss(
            output[0],
            output[1],
            self.anchors,
            [p[:, :2] for p in points],
            classes,
            tile_size=size[0],
            box_px=self.config.model.box_um / self.setup.mpp,
        )
        return cls_loss + box_loss

    def train_epoch(self) -> dict[str, Any]:
        """Run one epoch of optimiser steps.

        Returns
        -------
        dict of str to object
            ``epoch`` (1-based), mean ``loss``, the last learning rate ``lr``,
            ``patches`` and ``patches_per_s``, and timings, s: ``read_wait_s``
            waiting for patches (reading not hidden by the prefetch thread),
            ``augment_s`` augmenting, ``compute_s`` augmenting plus the
            network's forward, backward and step; ``train_s`` the whole epoch.

        Raises
        ------
        FloatingPointError
            The loss is not finite (lower the learning rate).
        """
        samples = self.sampler.next_epoch()
        samples = samples[: self.steps * self.batch_size]
        samples = Samples(
            self._to_dataset[samples.slide],
            samples.x,
            samples.y,
            samples.offset,
            samples.cls,
            samples.domain,
            samples.cell,
        )
        self.model.train()
        losses, wait, augment, compute = [], 0.0, 0.0, 0.0
        timed = self.device.type == "cuda"  # synchronise, so the timings are the device's
        start = time.perf_counter()
        clip = self.config.optimizer.grad_clip
        epochs = self.config.train.epochs
        with Progress(
            self.steps, f"epoch {self.epoch + 1}/{epochs}", unit="steps", enabled=self.progress
        ) as bar:
            batches = self.dataset.batches(samples, self.batch_size, self.config.train.prefetch)
            t0 = time.perf_counter()
            for batch in batches:
                t1 = time.perf_counter()
                wait += t1 - t0
                images, points = self.augmenter(batch.pixels, batch.points, batch.samples.domain)
                if timed:
                    torch.cuda.synchronize(self.device)
                augment += time.perf_counter() - t1
                loss = self.loss(images, points)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f"the loss became {value} in epoch {self.epoch + 1}; lower [optimizer] lr "
                        f"(now {self.config.optimizer.lr})"
                    )
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                if clip > 0:
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.scheduler.step()
                losses.append(value)
                if timed:
                    torch.cuda.synchronize(self.device)
                t0 = time.perf_counter()
                compute += t0 - t1
                bar.advance(extra=f"loss {np.mean(losses):.4f}")
        seconds = time.perf_counter() - start
        return {
            "epoch": self.epoch + 1,
            "loss": float(np.mean(losses)),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "patches": len(samples),
            "patches_per_s": len(samples) / seconds,
            "read_wait_s": wait,
            "augment_s": augment,
            "compute_s": compute,
            "train_s": seconds,
        }

    # -- detectors and validation -----------------------------------------------------------
    def detector(
        self, threshold: float, metadata: Mapping[str, Any] | None = None
    ) -> PointDetector | RetinaNetDetector:
        """The network as a detector (sharing its weights) with ``threshold``.

        Parameters
        ----------
        threshold : float
            Score threshold of the count, in [0, 1].
        metadata : mapping of str to object, optional
            Added to :meth:`metadata` (e.g. the validation F1).

        Returns
        -------
        PointDetector or RetinaNetDetector
            A detector at the model's mpp and tile geometry, on the training device.
        """
        s, c = self.setup, self.config
        common: dict[str, Any] = {
            "mpp": s.mpp,
            "tile_size": s.tile_size,
            "overlap": s.overlap,
            "threshold": threshold,
            "min_score": c.validation.min_score,
            "min_distance_um": MIN_DISTANCE_UM,
            "mean": s.mean,
            "std": s.std,
            "device": self.device,
            "name": c.name,
            "metadata": {**self.metadata(), **(metadata or {})},
        }
        if s.architecture == "retinanet-da":
            class_score: Literal["max", "mitosis"] = (
                "mitosis"
                if c.model.lookalikes == "class" or self.network_config["n_classes"] == 1
                else "max"
            )
            assert isinstance(self.model, RetinaNetDA)
            return RetinaNetDetector(self.model, class_score=class_score, **common)
        return PointDetector(self.model, **common)

    def metadata(self) -> dict[str, Any]:
        """What the trained detector says about itself.

        Returns
        -------
        dict of str to object
            ``training_data``, ``intended_use``, ``trained_with`` and what the
            starting checkpoint said (``initialised_from``, ...).
        """
        c = self.config
        described = c.training_data or (
            f"{Path(c.data.annotations).name}: {len(self.split['train'])} training slides"
        )
        meta = {
            "training_data": described,
            "intended_use": c.intended_use,
            "trained_with": "wsimito train",
        }
        if self.setup.init_metadata:
            meta.update(self.setup.init_metadata)
        return meta

    def evaluate(
        self,
        detector: Detector,
        dataset: PatchDataset,
        indices: np.ndarray,
        domains: list[str],
        description: str,
    ) -> list[ImageDetections]:
        """Count the slides ``indices`` of ``dataset`` with ``detector``, keeping every candidate.

        Parameters
        ----------
        detector : Detector
            The detector; its ``min_score`` bounds the thresholds tried later.
        dataset : PatchDataset
            The images and their annotations.
        indices : numpy.ndarray
            Slides of ``dataset`` to count.
        domains : list of str
            Domain name of each slide of ``dataset``.
        description : str
            Label of the progress bar.

        Returns
        -------
        list of ImageDetections
            Per slide, its candidates (level-0 px, score) and annotated cells.
        """
        return detect_images(
            detector,
            dataset,
            indices,
            domains=domains,
            tissue=self.config.validation.tissue,
            num_workers=self.config.train.num_workers,
            batch_size=self.config.validation.batch_size,
            progress=self.progress,
            description=description,
        )

    def validate(self) -> dict[str, Any]:
        """Score the network on the validation slides at its F1-optimal threshold.

        Returns
        -------
        dict of str to object
            ``threshold``, pooled ``f1``, ``precision``, ``recall``, ``tp``,
            ``fp``, ``fn`` (matching within ``[validation] radius_um`` µm), and
            ``"f1 <domain>"`` per domain.
        """
        radius = self.config.validation.radius_um
        detector = self.detector(0.5)
        images = self.evaluate(
            detector, self.dataset, self.validation_index, self.domains, "validation"
        )
        threshold, score = best_threshold(images, radius)
        row: dict[str, Any] = {
            "threshold": threshold,
            "f1": score.f1,
            "precision": score.precision,
            "recall": score.recall,
            "tp": score.tp,
            "fp": score.fp,
            "fn": score.fn,
        }
        for domain, s in domain_scores(images, threshold, radius).items():
            row[f"f1 {domain}"] = s.f1
        return row

    # -- the run ---------------------------------------------------------------------------
    def fit(self, resume: bool = False, until: int | None = None) -> TrainingResult:
        """Train for ``[train] epochs`` (continuing ``last.pt`` with ``resume``).

        Parameters
        ----------
        resume : bool
            Continue from ``last.pt`` in the output folder.
        until : int, optional
            Stop after this epoch (e.g. to fit a job's time limit; resume later).
            The test set is scored only when the last epoch is done.

        Returns
        -------
        TrainingResult
            The output folder, ``best.pt`` (when a validation was done), the
            metrics of every epoch and the test scores.

        Raises
        ------
        FileExistsError
            When the output folder already holds a run and ``resume`` is false.
        FileNotFoundError
            When ``resume`` is true and there is no ``last.pt``.
        """
        self.out.mkdir(parents=True, exist_ok=True)
        last = self.out / "last.pt"
        if resume:
            if not last.is_file():
                raise FileNotFoundError(f"nothing to resume: {last} does not exist")
            self.load_state(last)
            self.log(f"resumed {last} after epoch {self.epoch}")
        else:
            if last.exists():
                raise FileExistsError(
                    f"{self.out} already holds a run ({last}); pass --resume to continue it, or "
                    "choose another [out] folder"
                )
            self.prepare()
            self._write_json("split.json", self.split)
            self._write_json("config.json", self.config.to_dict())
        self.log(
            f"training {self.config.name}: {len(self.train_index)} training and "
            f"{len(self.validation_index)} validation slides, {self.steps} steps of "
            f"{self.batch_size} patches per epoch, on {self.device}"
        )
        epochs, every = self.config.train.epochs, self.config.validation.every
        stop = epochs if until is None else min(int(until), epochs)
        while self.epoch < stop:
            row = self.train_epoch()
            if (self.epoch + 1) % every == 0 or self.epoch + 1 == epochs:
                row.update(self.validate())
                if row["f1"] == row["f1"] and row["f1"] > self.best["f1"]:  # not NaN, better
                    self.best = {
                        "f1": row["f1"],
                        "epoch": self.epoch + 1,
                        "threshold": row["threshold"],
                    }
                    self._save_best()
            self.epoch += 1
            self.history.append(row)
            self.save_state(last)
            if self.config.train.keep_checkpoints == "all":
                self.save_state(self.out / f"epoch-{self.epoch:04d}.pt")
            self._write_metrics()
            self.log(_summary(row))
        best = self.out / "best.pt"
        result = TrainingResult(self.out, best if best.exists() else None, list(self.history))
        done = self.epoch >= epochs
        if done and self.config.test.evaluate and self.split["test"] and result.best is not None:
            result.test = self.test(result.best)
        return result

    def _save_best(self) -> None:
        from ..models import save_detector

        meta = {
            "validation_f1": float(self.best["f1"]),
            "epoch": int(self.best["epoch"]),
            "validation_slides": len(self.validation_index),
        }
        detector = self.detector(float(self.best["threshold"]), meta)
        with atomic_path(self.out / "best.pt") as tmp:
            save_detector(detector, tmp)

    def test(self, best: Path) -> dict[str, Any]:
        """Score the detector in ``best`` on the test slides; writes ``test_metrics.csv``.

        Parameters
        ----------
        best : Path
            A detector checkpoint (``best.pt``), used at its own threshold.

        Returns
        -------
        dict of str to object
            Pooled ``f1``, ``precision`` and ``recall``, the ``threshold``, and
            ``domains``: the F1 of each domain.
        """
        from ..models import load_detector

        c = self.config
        names = set(self.split["test"])
        cells = self._cells[self._cells["slide"].astype(str).isin(names)]
        slides = self._slides[self._slides["slide"].astype(str).isin(names)]
        dataset = PatchDataset(
            cells,
            c.data.images,
            slides=slides,
            mpp=self.setup.mpp,
            patch_size=c.model.patch_size,
            slide_mpp=c.data.mpp,
            margin_px=c.data.margin_px,
            unknown_classes=c.data.unknown_classes,
            max_open=c.train.max_open_slides,
            num_workers=1,
            device=self.device,
            source=self._source,
        )
        try:
            detector = load_detector(best, device=self.device)
            domains = domain_labels(dataset.slides, c.sampler.domains).tolist()
            images = self.evaluate(detector, dataset, np.arange(len(dataset)), domains, "test")
        finally:
            dataset.close()
        threshold = float(detector.threshold)
        rows = [("all", pooled_score(images, threshold, c.validation.radius_um))]
        rows += list(domain_scores(images, threshold, c.validation.radius_um).items())
        with atomic_write(self.out / "test_metrics.csv", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(
                ["domain", "images", "threshold", "f1", "precision", "recall", "tp", "fp", "fn"]
            )
            for name, s in rows:
                n = len(images) if name == "all" else sum(im.domain == name for im in images)
                writer.writerow([name, n, threshold, s.f1, s.precision, s.recall, s.tp, s.fp, s.fn])
        total = rows[0][1]
        self.log(
            f"test: {len(images)} images, F1 {total.f1:.3f} (precision {total.precision:.3f}, "
            f"recall {total.recall:.3f}) at threshold {threshold:.3f}"
        )
        return {
            "f1": total.f1,
            "precision": total.precision,
            "recall": total.recall,
            "threshold": threshold,
            "domains": {k: v.f1 for k, v in rows[1:]},
        }

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything ``--resume`` needs (see the module docstring).

        Returns
        -------
        dict of str to object
            Format and version, epoch, config, split, the model, optimiser,
            scheduler, gradient scaler, sampler, augmentation and FDA bank
            states, the random states, the best epoch and the metric history.
        """
        # the legacy global numpy state: third-party code (e.g. a user's model) may draw from it
        numpy_state: Any = np.random.get_state()  # noqa: NPY002
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "config": self.config.to_dict(),
            "split": self.split,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "augment": self.augmenter.state_dict(),
            "fda_bank": None if self.bank is None else self.bank.state_dict(),
            "rng": {
                "python": _plain(random.getstate()),
                "numpy": [
                    numpy_state[0],
                    torch.from_numpy(numpy_state[1].astype(np.int64)),
                    *numpy_state[2:],
                ],
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            "best": dict(self.best),
            "history": list(self.history),
        }

    def save_state(self, path: Path) -> None:
        """Write :meth:`state_dict` to ``path`` atomically.

        Parameters
        ----------
        path : Path
            The file to write (replaced if it exists), e.g. ``last.pt``.
        """
        with atomic_path(path) as tmp:
            torch.save(self.state_dict(), tmp)

    def load_state(self, path: Path) -> None:
        """Continue from a file :meth:`save_state` wrote.

        Parameters
        ----------
        path : Path
            The training state, e.g. ``last.pt``.

        Raises
        ------
        ConfigError
            When the file is no training state, or was made with another configuration.
        """
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ConfigError(f"{path} is not a wsimito training state (written by wsimito train)")
        if state.get("version") != STATE_VERSION:
            raise ConfigError(
                f"{path} is a training state of version {state.get('version')}; "
                f"this wsimito resumes version {STATE_VERSION}"
            )
        differ = _differences(state["config"], self.config.to_dict())
        if differ:
            raise ConfigError(
                f"{path} was made with another configuration ({'; '.join(differ[:5])}); resume "
                "with the same config, or start a new run in another [out] folder"
            )
        if state["split"] != self.split:
            raise ConfigError(f"{path} was made with other train/validation/test slides")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        bank = state["fda_bank"]
        self.bank = None if bank is None else AmplitudeBank.from_state_dict(bank)
        self.augmenter = build_augmenter(self.config, self.bank, self.config.seed)
        self.augmenter.load_state_dict(state["augment"])
        rng = state["rng"]
        random.setstate(_tuples(rng["python"]))
        numpy_state = rng["numpy"]
        np.random.set_state(  # noqa: NPY002
            (numpy_state[0], numpy_state[1].numpy().astype(np.uint32), *numpy_state[2:])
        )
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.best = dict(state["best"])
        self.history = list(state["history"])
        self.epoch = int(state["epoch"])

    # -- outputs -----------------------------------------------------------------------------
    def _write_json(self, name: str, data: Any) -> None:
        with atomic_write(self.out / name) as fh:
            json.dump(data, fh, indent=2)

    def _write_metrics(self) -> None:
        columns: list[str] = []
        for row in self.history:
            columns += [k for k in row if k not in columns]
        with atomic_write(self.out / "metrics.csv", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.history)
        plot_curves(self.history, self.out / "curves.png", log=None if self.epoch > 1 else self.log)

    def close(self) -> None:
        """Stop the reader threads and close the slides."""
        self.dataset.close()


def plot_curves(history: list[dict[str, Any]], path: Path, log: Log | None = None) -> bool:
    """Plot the loss and validation F1 per epoch as a PNG.

    Parameters
    ----------
    history : list of dict
        One row of metrics per epoch (``epoch``, ``loss``; ``f1`` and
        ``"f1 <domain>"`` where validated).
    path : Path
        The PNG to write (replaced if it exists).
    log : callable, optional
        Told when matplotlib is missing.

    Returns
    -------
    bool
        Whether the plot was written (``False`` without matplotlib).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if log is not None:
            log("matplotlib is not installed: no curves.png (metrics.csv has the numbers)")
        return False
    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, [row["loss"] for row in history], marker="o")
    left.set(xlabel="epoch", ylabel="training loss", title="loss")
    valid = [row for row in history if "f1" in row]
    right.plot([r["epoch"] for r in valid], [r["f1"] for r in valid], marker="o", label="pooled F1")
    for key in sorted({k for r in valid for k in r if k.startswith("f1 ")}):
        right.plot(
            [r["epoch"] for r in valid], [r.get(key, np.nan) for r in valid], lw=0.8, label=key[3:]
        )
    right.set(xlabel="epoch", ylabel="F1 at the chosen threshold", title="validation", ylim=(0, 1))
    right.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return True


def train(
    config: TrainingConfig | str | Path,
    *,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    log: Log = print,
) -> TrainingResult:
    """Run a training configuration (a :class:`TrainingConfig` or a TOML path).

    Parameters
    ----------
    config : TrainingConfig, str or Path
        The run; see ``docs/training.md``.
    resume : bool
        Continue the run in the output folder from its ``last.pt``.
    device : str or torch.device, optional
        Overrides ``config.device``.
    progress : bool
        Progress bars.
    log : callable
        Receives the progress lines.

    Returns
    -------
    TrainingResult
        The output folder, ``best.pt``, the metrics of every epoch and the
        test scores.

    Raises
    ------
    ConfigError
        A wrong configuration key or value.
    TrainingDataError
        Bad data: a missing image, a cell outside its image, an unknown class, an empty split.
    """
    if not isinstance(config, TrainingConfig):
        config = load_config(config)
    trainer = Trainer(config, device=device, progress=progress, log=log)
    try:
        return trainer.fit(resume=resume)
    finally:
        trainer.close()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the global state, for third-party code)
    torch.manual_seed(seed)


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _differences(saved: Mapping[str, Any], now: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(now)):
        if key == "device" and not prefix:
            continue
        a, b = saved.get(key), now.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: saved {a!r}, now {b!r}")
    return out


def _summary(row: Mapping[str, Any]) -> str:
    text = f"epoch {row['epoch']}: loss {row['loss']:.4f}, {row['patches_per_s']:.1f} patches/s"
    if "f1" in row:
        text += (
            f", validation F1 {row['f1']:.3f} (P {row['precision']:.3f}, R {row['recall']:.3f}) "
            f"at threshold {row['threshold']:.3f}"
        )
    return text


__all__ = [
    "ModelSetup",
    "Trainer",
    "TrainingResult",
    "build_augmenter",
    "build_model",
    "load_tables",
    "plot_curves",
    "split_slides",
    "train",
]
