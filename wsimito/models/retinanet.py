"""The MIDOG 2021/2022 reference detector ``RetinaNetDA``, network only.

Re-implemented in plain torch with the reference state-dict layout, so the
published weights load unchanged:

- ``encoder.0`` ... ``encoder.7``: a ResNet-18 body (conv1, bn1, relu,
  maxpool, layer1 ... layer4) as one Sequential;
- ``c5top5``, ``c5top6``, ``p6top7.1``, ``merges.{0,1}.conv_lat``,
  ``smoothers.{0,1,2}``: a feature pyramid with ``channels`` channels;
- ``classifier`` and ``box_regressor``: heads shared across levels,
  ``n_conv`` conv+ReLU blocks then one conv to ``n_anchors * outputs``;
- ``d3``, ``d4``, ``d5``: the domain discriminators of the adversarial
  training. They carry weights, so strict loading works, but inference never
  runs them.

Only pyramid levels whose grid size is in ``sizes`` are returned: P3 to P5
(64, 32, 16 cells) for a 512 px input. Decoding and NMS live in
:mod:`wsimito.models.anchors`, pre- and post-processing in
:class:`wsimito.models.RetinaNetDetector`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from typing_extensions import override


def _conv(cin: int, cout: int, kernel: int = 3, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=bias)


class BasicBlock(nn.Module):
    """ResNet basic block with the torchvision parameter names.

    Parameters
    ----------
    cin : int
        Input channels.
    cout : int
        Output channels.
    stride : int
        Stride of the first convolution (2 halves the resolution).
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv(cin, cout, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv(cout, cout, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        out: torch.Tensor = self.relu(self.bn2(self.conv2(y)) + shortcut)
        return out


def resnet18_body() -> nn.Sequential:
    """Build ResNet-18 without its pooling and classifier.

    Returns
    -------
    torch.nn.Sequential
        Eight modules (conv1, bn1, relu, maxpool, layer1 ... layer4); the output
        is C5 at stride 32 px.
    """

    def layer(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout))

    return nn.Sequential(
        nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
        layer(64, 64, 1),
        layer(64, 128, 2),
        layer(128, 256, 2),
        layer(256, 512, 2),
    )


class LateralMerge(nn.Module):
    """FPN top-down step: 1x1 lateral conv of C_k plus 2x nearest up-sampling of P_k+1.

    Parameters
    ----------
    channels : int
        Pyramid channels.
    lateral_channels : int
        Channels of the lateral input C_k.
    """

    def __init__(self, channels: int, lateral_channels: int) -> None:
        super().__init__()
        self.conv_lat = _conv(lateral_channels, channels, kernel=1)

    @override
    def forward(self, top: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
        merged: torch.Tensor = self.conv_lat(lateral) + F.interpolate(
            top, scale_factor=2.0, mode="nearest"
        )
        return merged


class Discriminator(nn.Module):
    """Domain classifier of the adversarial training; kept for its weights only.

    Parameters
    ----------
    channels : int
        Input channels.
    n_domains : int
        Outputs, one per domain.
    """

    def __init__(self, channels: int, n_domains: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout in (
            (channels, channels),
            (channels, channels // 2),
            (channels // 2, channels // 4),
        ):
            layers += [
                nn.Conv2d(cin, cout, 3, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Dropout(),
            ]
        self.reducer = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1))
        self.reducer2 = nn.Linear(channels // 4, n_domains, bias=False)

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.reducer2(torch.flatten(self.reducer(x), 1))
        return logits


def _head(channels: int, outputs: int, n_conv: int, final_bias: float) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Sequential(_conv(channels, channels), nn.ReLU()) for _ in range(n_conv)
    ]
    final = _conv(channels, outputs)
    assert final.bias is not None  # _conv makes a bias by default
    nn.init.zeros_(final.weight)
    nn.init.constant_(final.bias, final_bias)
    return nn.Sequential(*layers, final)


class RetinaNetDA(nn.Module):
    """RetinaNet with a ResNet-18 body, as in the MIDOG reference docker.

    Parameters
    ----------
    n_classes : int
        Class outputs per anchor (2 in the reference).
    n_anchors : int
        Anchors per location (5 scales x 1 ratio).
    channels : int
        FPN and head channels (128).
    n_conv : int
        Conv+ReLU blocks per head (3).
    n_domains : int
        Outputs of the discriminators (4).
    sizes : sequence of int
        Grid sizes (cells) of the pyramid levels to return.
    """

    def __init__(
        self,
        n_classes: int = 2,
        n_anchors: int = 5,
        channels: int = 128,
        n_conv: int = 3,
        n_domains: int = 4,
        sizes: Sequence[int] = (64, 32, 16),
    ) -> None:
        super().__init__()
        self.n_classes, self.n_anchors, self.channels = n_classes, n_anchors, channels
        self.n_conv, self.n_domains, self.sizes = n_conv, n_domains, tuple(sizes)
        self.encoder = resnet18_body()
        self.c5top5 = _conv(512, channels, kernel=1)
        self.c5top6 = _conv(512, channels, stride=2)
        self.p6top7 = nn.Sequential(nn.ReLU(), _conv(channels, channels, stride=2))
        self.merges = nn.ModuleList([LateralMerge(channels, 256), LateralMerge(channels, 128)])
        self.smoothers = nn.ModuleList(_conv(channels, channels) for _ in range(3))
        self.classifier = _head(channels, n_classes * n_anchors, n_conv, final_bias=-4.0)
        self.box_regressor = _head(channels, 4 * n_anchors, n_conv, final_bias=0.0)
        self.d3 = Discriminator(128, n_domains)
        self.d4 = Discriminator(256, n_domains)
        self.d5 = Discriminator(512, n_domains)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments, for checkpoints."""
        return {
            "n_classes": self.n_classes,
            "n_anchors": self.n_anchors,
            "channels": self.channels,
            "n_conv": self.n_conv,
            "n_domains": self.n_domains,
            "sizes": list(self.sizes),
        }

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Compute the feature pyramid.

        Parameters
        ----------
        x : torch.Tensor
            Normalized float images ``(N, 3, H, W)``.

        Returns
        -------
        list of torch.Tensor
            The maps P3 ... P7 (strides 8 ... 128 px) whose grid size is in ``sizes``.
        """
        c3 = self.encoder[:6](x)
        c4 = self.encoder[6](c3)
        c5 = self.encoder[7](c4)
        p5 = self.c5top5(c5)
        p6 = self.c5top6(c5)
        p7 = self.p6top7(p6)
        p4 = self.merges[0](p5, c4)
        p3 = self.merges[1](p4, c3)
        levels = [self.smoothers[0](p3), self.smoothers[1](p4), self.smoothers[2](p5), p6, p7]
        return [p for p in levels if p.shape[-1] in self.sizes]

    def _apply_head(
        self, head: nn.Module, levels: list[torch.Tensor], outputs: int
    ) -> torch.Tensor:
        return torch.cat(
            [head(p).permute(0, 2, 3, 1).reshape(p.shape[0], -1, outputs) for p in levels], dim=1
        )

    @override
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict class logits and box deltas for every anchor.

        Parameters
        ----------
        x : torch.Tensor
            Normalized float images ``(N, 3, H, W)``.

        Returns
        -------
        class_logits : torch.Tensor
            ``(N, A, n_classes)``.
        box_deltas : torch.Tensor
            ``(N, A, 4)``; anchors ordered (level, row, col, anchor) like
            :func:`wsimito.models.anchors.create_anchors`.
        """
        levels = self.pyramid(x)
        return (
            self._apply_head(self.classifier, levels, self.n_classes),
            self._apply_head(self.box_regressor, levels, 4),
        )
