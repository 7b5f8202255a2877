"""The second stage of a cascade: a small patch CNN that rescores candidate points.

- :class:`PatchClassifierNet`: the network only (plain torch): normalised
  ``(N, 3, P, P)`` patches to one logit each, plus the pooled features the
  contrastive loss of :mod:`wsimito.train.wsdal` works on.
- :class:`PatchClassifier`: the network with its resolution, patch size,
  normalisation and device; :meth:`PatchClassifier.predict` maps uint8
  patches to probabilities.
- :func:`crop_patches`: patches centred on points, cut from tiles that are
  already on the device (no second read of the slide).

Default patch: 64 px at 0.5 µm/px, i.e. 32 µm square. A mitotic figure is
8-15 µm across, so the patch holds the figure, its cytoplasm and a ring of
neighbours; that context is what tells a figure from a fold, an ink blot or a
tissue edge (glass on one side). At 0.5 µm/px a metaphase plate (3-5 µm
wide) is still 6-10 px, and 0.5 µm/px is what the bundled demo detector reads,
so the patches come straight out of its tiles without resampling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..detect import resolve_device


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class PatchClassifierNet(nn.Module):
    """A plain CNN: ``(N, 3, P, P)`` normalised patches -> ``(N,)`` logits of "mitotic figure".

    Four stages of two 3x3 conv-BN-ReLU layers, the first of each at stride 2,
    with ``width``, ``2 width``, ``4 width`` and ``8 width`` channels, global
    average pooling, dropout and one linear layer: 0.29 M parameters and
    about 14 M multiply-adds per 64 px patch at ``width=16``.

    Parameters
    ----------
    width : int
        Channels of the first stage.
    dropout : float
        Dropout before the linear layer, in [0, 1).

    Examples
    --------
    >>> net = PatchClassifierNet(width=8)
    >>> net(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2])
    """

    def __init__(self, width: int = 16, dropout: float = 0.2) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1 channel, got {width}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.width, self.dropout = int(width), float(dropout)
        w = self.width
        self.body = nn.Sequential(
            _conv(3, w, stride=2),
            _conv(w, w),
            _conv(w, 2 * w, stride=2),
            _conv(2 * w, 2 * w),
            _conv(2 * w, 4 * w, stride=2),
            _conv(4 * w, 4 * w),
            _conv(4 * w, 8 * w, stride=2),
            _conv(8 * w, 8 * w),
        )
        self.head = nn.Sequential(nn.Dropout(self.dropout), nn.Linear(8 * w, 1))

    @property
    def feature_dim(self) -> int:
        """Length of the pooled feature vector."""
        return 8 * self.width

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments, for checkpoints."""
        return {"width": self.width, "dropout": self.dropout}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Compute the pooled features the linear layer sees.

        Parameters
        ----------
        x : torch.Tensor
            Normalised float patches ``(N, 3, P, P)``, P px a side.

        Returns
        -------
        torch.Tensor
            ``(N, feature_dim)`` features after global average pooling.
        """
        return F.adaptive_avg_pool2d(self.body(x), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Score patches.

        Parameters
        ----------
        x : torch.Tensor
            Normalised float patches ``(N, 3, P, P)``, P px a side.

        Returns
        -------
        torch.Tensor
            ``(N,)`` logits of "mitotic figure".
        """
        logits: torch.Tensor = self.head(self.features(x)).squeeze(1)
        return logits


class PatchClassifier:
    """A :class:`PatchClassifierNet` with what it needs to score uint8 patches.

    Parameters
    ----------
    model : PatchClassifierNet
        The network.
    mpp : float
        Resolution of the patches, µm/px.
    patch_size : int
        Patch side, px at ``mpp``.
    mean, std : sequence of float
        Per-channel normalisation of RGB / 255.
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ...

    Raises
    ------
    ValueError
        For a non-positive ``mpp``, a ``patch_size`` under 8 px, or ``mean`` and
        ``std`` not 3 values each with ``std`` > 0.
    """

    def __init__(
        self,
        model: PatchClassifierNet,
        *,
        mpp: float = 0.5,
        patch_size: int = 64,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.25, 0.25, 0.25),
        device: str | torch.device = "auto",
    ) -> None:
        if not (math.isfinite(mpp) and mpp > 0):
            raise ValueError(f"mpp must be > 0 µm/px, got {mpp}")
        if int(patch_size) < 8:
            raise ValueError(f"patch_size must be at least 8 px, got {patch_size}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values each, std > 0; got {mean}, {std}")
        self.mpp = float(mpp)
        self.patch_size = int(patch_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()

    @property
    def settings(self) -> dict[str, Any]:
        """Everything besides the network that a checkpoint must restore."""
        return {
            "mpp": self.mpp,
            "patch_size": self.patch_size,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    def to(self, device: str | torch.device) -> PatchClassifier:
        """Move the network to ``device``.

        Parameters
        ----------
        device : str or torch.device
            ``"auto"``, ``"cpu"``, ``"cuda"``, ...

        Returns
        -------
        PatchClassifier
            ``self``, now on ``device``.
        """
        self.device = resolve_device(device)
        self.model.to(self.device)
        return self

    def normalize(self, patches: torch.Tensor) -> torch.Tensor:
        """Turn RGB patches into the network's input.

        Parameters
        ----------
        patches : torch.Tensor
            The patches, uint8 (or float 0-255) RGB ``(N, 3, P, P)``.

        Returns
        -------
        torch.Tensor
            The input, float32 ``(N, 3, P, P)``: RGB / 255 minus ``mean``, divided by
            ``std``, on the device of ``patches``.
        """
        mean = torch.tensor(self.mean, device=patches.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=patches.device).view(1, 3, 1, 1)
        return (patches.float() / 255.0 - mean) / std

    def predict(self, patches: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Probability of "mitotic figure" for each patch.

        Parameters
        ----------
        patches : torch.Tensor
            The patches, uint8 RGB ``(N, 3, patch_size, patch_size)`` at :attr:`mpp`.
        batch_size : int
            Patches per forward pass.

        Returns
        -------
        torch.Tensor
            The probabilities, float32 ``(N,)`` in [0, 1], on :attr:`device`.

        Raises
        ------
        ValueError
            When the patches do not have shape ``(N, 3, patch_size, patch_size)``.
        """
        size = self.patch_size
        if patches.ndim != 4 or tuple(patches.shape[1:]) != (3, size, size):
            raise ValueError(
                f"patches must be (N, 3, {size}, {size}) RGB at {self.mpp} µm/px, got "
                f"{tuple(patches.shape)}"
            )
        self.model.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(patches), batch_size):
                x = self.normalize(patches[start : start + batch_size].to(self.device))
                out.append(torch.sigmoid(self.model(x).float()))
        if not out:
            return torch.zeros(0, device=self.device)
        return torch.cat(out)

    def __repr__(self) -> str:
        return (
            f"PatchClassifier(width={self.model.width}, mpp={self.mpp}, "
            f"patch_size={self.patch_size}, device={str(self.device)!r})"
        )


def crop_patches(
    tiles: torch.Tensor,
    points: Sequence[torch.Tensor],
    size: int,
    scale: float = 1.0,
) -> torch.Tensor:
    """Square patches centred on points, cut from tiles on their device.

    Parameters
    ----------
    tiles : torch.Tensor
        The tiles, uint8 (or float 0-255) RGB ``(N, 3, H, W)``.
    points : sequence of torch.Tensor
        One ``(K, >=2)`` tensor per tile: x, y in tile px (continuous
        convention: pixel ``j`` has its centre at ``j + 0.5``).
    size : int
        Patch side, px of the patch.
    scale : float
        Tile px per patch px (patch mpp / tile mpp). The patch's corner is
        rounded to a whole tile pixel (at most half a tile px off centre). At
        1 the patch is an exact copy of the tile pixels; at 2 bilinear sampling
        falls between pixels, so each patch pixel is the exact 2 x 2 area
        average; other scales are sampled bilinearly.

    Returns
    -------
    torch.Tensor
        ``(sum K, 3, size, size)`` in the dtype of ``tiles``, on their device,
        patches in the order of the tiles and of the points. Pixels beyond the
        tile are white (glass).

    Raises
    ------
    ValueError
        When the number of point sets differs from the number of tiles.
    """
    if len(points) != tiles.shape[0]:
        raise ValueError(f"{len(points)} point sets for {tiles.shape[0]} tiles")
    n_points = [int(p.shape[0]) for p in points]
    dtype, device = tiles.dtype, tiles.device
    if sum(n_points) == 0:
        return torch.empty((0, 3, size, size), dtype=dtype, device=device)
    h, w = tiles.shape[-2:]
    u = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) * scale
    mode = "nearest" if scale == 1.0 else "bilinear"
    parts = []
    for k, pts in enumerate(points):
        if not n_points[k]:
            continue
        corner = (pts[:, :2].to(device=device, dtype=torch.float32) - size * scale / 2.0).round()
        gx = (corner[:, 0:1] + u[None, :]) * (2.0 / w) - 1.0  # (K, size)
        gy = (corner[:, 1:2] + u[None, :]) * (2.0 / h) - 1.0
        m = len(corner)
        grid = torch.stack(
            (gx[:, None, :].expand(m, size, size), gy[:, :, None].expand(m, size, size)), dim=-1
        ).reshape(1, m * size, size, 2)
        # Sample 255 - x with zero padding, so that outside the tile is white.
        inverted = 255.0 - tiles[k : k + 1].float()
        sampled = F.grid_sample(
            inverted, grid, mode=mode, padding_mode="zeros", align_corners=False
        )
        parts.append(255.0 - sampled.reshape(3, m, size, size).transpose(0, 1))
    out = torch.cat(parts)
    if dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.to(dtype)


def patch_classifier_from_settings(
    model: PatchClassifierNet, settings: Mapping[str, Any], device: str | torch.device
) -> PatchClassifier:
    """Build a :class:`PatchClassifier` around ``model`` from its saved settings.

    Parameters
    ----------
    model : PatchClassifierNet
        The network.
    settings : Mapping
        :attr:`PatchClassifier.settings` as a checkpoint stores it.
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ...

    Returns
    -------
    PatchClassifier
        ``model`` with those settings, on ``device``.
    """
    return PatchClassifier(model, device=device, **dict(settings))


__all__ = ["PatchClassifier", "PatchClassifierNet", "crop_patches"]
