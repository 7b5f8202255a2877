"""A small loop that trains a centre-heatmap point detector on in-memory crops.

:func:`train_point_detector` is what the bundled demo detector was trained
with; training on annotated slides goes through :mod:`wsimito.train.loop`.
The targets and the loss live in :mod:`wsimito.train.losses`
(:func:`heatmap_targets`: Gaussians at the network stride centred on the
exact sub-pixel positions, so the sub-pixel refinement of
:mod:`wsimito.models.peaks` recovers them; :func:`focal_heatmap_loss`) and
are re-exported here.

Points are x, y in input px, continuous convention (pixel ``(c, r)`` has its
centre at ``(c + 0.5, r + 0.5)``); heatmap cell ``j`` at stride ``s`` is
centred on ``s * (j + 0.5)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..detect import resolve_device
from .losses import focal_heatmap_loss, heatmap_targets

Sample = tuple[torch.Tensor, torch.Tensor]


def _augment(image: torch.Tensor, points: torch.Tensor, generator: torch.Generator) -> Sample:
    """Random flips and 90° rotations of a ``(3, H, W)`` image and its ``(K, 2)`` points."""
    _, h, w = image.shape
    points = points.clone()
    if torch.rand((), generator=generator) < 0.5:
        image = image.flip(-1)
        points[:, 0] = w - points[:, 0]
    if torch.rand((), generator=generator) < 0.5:
        image = image.flip(-2)
        points[:, 1] = h - points[:, 1]
    if h == w and torch.rand((), generator=generator) < 0.5:
        image = image.transpose(-1, -2)
        points = points.flip(-1)
    return image, points


@dataclass
class TrainingLog:
    """What :func:`train_point_detector` records.

    Attributes
    ----------
    losses : list of float
        The loss of every step (mean over the batch, see :func:`focal_heatmap_loss`).
    """

    losses: list[float] = field(default_factory=list)


def train_point_detector(
    model: nn.Module,
    dataset: Sequence[Sample],
    *,
    steps: int = 1000,
    batch_size: int = 8,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    sigma: float | None = None,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.25, 0.25, 0.25),
    augment: bool = True,
    device: str | torch.device = "auto",
    seed: int = 0,
    callback: Callable[[int, float], None] | None = None,
) -> TrainingLog:
    """Train ``model`` (with a ``stride`` attribute) on point-annotated images, in place.

    Parameters
    ----------
    model : torch.nn.Module
        A heatmap network such as :class:`wsimito.models.PointHeatmapNet`,
        with ``stride``: input px per heatmap cell.
    dataset : sequence of (torch.Tensor, torch.Tensor)
        Item ``i`` is ``(image, points)``: a uint8 ``(3, H, W)`` RGB tensor and
        a float ``(K, 2)`` tensor of x, y in px of the image. All images share
        one size.
    steps : int
        Optimiser steps; batches are drawn at random with replacement.
    batch_size : int
        Images per step.
    lr : float
        Peak learning rate of AdamW, which follows a one-cycle schedule.
    weight_decay : float
        AdamW's weight decay.
    sigma : float, optional
        Gaussian standard deviation of the targets, px; ``None`` means
        ``2 * stride``.
    mean, std : sequence of float
        Per-channel normalisation of RGB / 255; use the same in the
        :class:`~wsimito.models.PointDetector`.
    augment : bool
        Random flips and 90° rotations.
    device : str or torch.device
        Where to train (``"auto"``: CUDA, then MPS, then CPU).
    seed : int
        Seed of batch sampling and augmentation.
    callback : callable, optional
        Called as ``callback(step, loss)`` after every step.

    Returns
    -------
    TrainingLog
        The loss of every step; the model is left in eval mode on ``device``.

    Raises
    ------
    ValueError
        ``dataset`` is empty, or an image is not uint8 ``(3, H, W)``.
    AttributeError
        ``model`` has no ``stride``.
    FloatingPointError
        The loss is not finite (lower ``lr``).
    """
    if len(dataset) == 0:
        raise ValueError("dataset is empty; it must yield (uint8 (3, H, W) image, (K, 2) points)")
    stride_attribute = getattr(model, "stride", None)
    if stride_attribute is None:
        raise AttributeError(
            f"{type(model).__name__} has no stride (input px per heatmap cell); train a heatmap "
            "network such as wsimito.models.PointHeatmapNet"
        )
    stride = int(stride_attribute)
    target_sigma = 2.0 * stride if sigma is None else float(sigma)
    device = resolve_device(device)
    model.to(device).train()
    generator = torch.Generator().manual_seed(seed)
    norm_mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    norm_std = torch.tensor(std, device=device).view(1, 3, 1, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=steps, pct_start=min(0.3, 100 / max(steps, 1))
    )
    log = TrainingLog()
    for step in range(steps):
        images, points = [], []
        for index in torch.randint(len(dataset), (batch_size,), generator=generator).tolist():
            image, pts = dataset[index]
            if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
                raise ValueError(
                    "dataset images must be uint8 (3, H, W), got "
                    f"{image.dtype} {tuple(image.shape)}"
                )
            pts = torch.as_tensor(pts, dtype=torch.float32).reshape(-1, 2)
            if augment:
                image, pts = _augment(image, pts, generator)
            images.append(image)
            points.append(pts)
        batch = torch.stack(images).to(device).float() / 255.0
        batch = (batch - norm_mean) / norm_std
        size = (batch.shape[-2], batch.shape[-1])
        targets = heatmap_targets(points, size, stride, target_sigma).to(device)
        loss = focal_heatmap_loss(model(batch), targets, sum(len(p) for p in points))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at step {step}; lower lr={lr}")
        log.losses.append(value)
        if callback is not None:
            callback(step, value)
    model.eval()
    return log
