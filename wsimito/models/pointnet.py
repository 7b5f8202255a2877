"""A compact encoder-decoder that predicts a centre heatmap at reduced stride.

Network only: pre-processing lives in :class:`wsimito.models.PointDetector`,
peak extraction in :mod:`wsimito.models.peaks`, training in
:mod:`wsimito.train.heatmap`.

Every down-sampling step is aligned with the pixel grid (kernel 4 / stride 2 /
padding 1 for the stem, kernel 2 / stride 2 after it) and up-sampling is
nearest-neighbour, so heatmap cell ``j`` at stride ``s`` is centred on input
pixel coordinate ``s * (j + 0.5)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from typing_extensions import override


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    padding = 1 if kernel in (3, 4) else 0
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity shortcut.

    Parameters
    ----------
    channels : int
        Input and output channels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(channels, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(self.conv1(x))), inplace=True)


class PointHeatmapNet(nn.Module):
    """Encoder-decoder predicting one centre-heatmap logit per ``stride`` px cell.

    Parameters
    ----------
    width : int
        Channels of the first (stride 2) level; level ``i`` has
        ``width * 2**i`` channels, at most ``8 * width``.
    depth : int
        Encoder levels; the deepest one has stride ``2**depth`` px.
    stride : int
        Output stride in input px, a power of two between 2 and ``2**depth``.
    blocks : int
        Residual blocks per encoder level below stride 2.
    decoder_width : int or None
        Channels of the decoder; ``None`` means ``2 * width``.

    Raises
    ------
    ValueError
        ``depth`` < 1, or ``stride`` is not a power of two in ``[2, 2**depth]``.

    Examples
    --------
    >>> import torch
    >>> from wsimito.models import PointHeatmapNet
    >>> net = PointHeatmapNet(width=8, depth=3, stride=4).eval()
    >>> tuple(net(torch.zeros(1, 3, 64, 64)).shape)  # one logit per 4 x 4 px cell
    (1, 1, 16, 16)
    """

    def __init__(
        self,
        width: int = 16,
        depth: int = 4,
        stride: int = 4,
        blocks: int = 1,
        decoder_width: int | None = None,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if stride < 2 or stride & (stride - 1) or stride > 2**depth:
            raise ValueError(f"stride must be a power of two in [2, {2**depth}], got {stride}")
        self.width, self.depth, self.stride, self.blocks = width, depth, stride, blocks
        self.decoder_width = decoder_width or 2 * width
        channels = [width * 2 ** min(i, 3) for i in range(depth)]
        self.stem = nn.Sequential(
            _conv_bn_relu(3, width, kernel=4, stride=2), _conv_bn_relu(width, width)
        )
        self.down = nn.ModuleList(
            nn.Sequential(
                _conv_bn_relu(channels[i - 1], channels[i], kernel=2, stride=2),
                *(ResidualBlock(channels[i]) for _ in range(blocks)),
            )
            for i in range(1, depth)
        )
        # Levels used by the decoder: from the deepest up to the output stride.
        self._levels = [i for i in range(depth) if 2 ** (i + 1) >= stride]
        dw = self.decoder_width
        self.lateral = nn.ModuleList(nn.Conv2d(channels[i], dw, 1) for i in self._levels)
        self.smooth = nn.ModuleList(_conv_bn_relu(dw, dw) for _ in self._levels[:-1])
        hidden = _conv_bn_relu(dw, dw)
        logits = nn.Conv2d(dw, 1, 1)
        assert logits.bias is not None  # a Conv2d has a bias unless bias=False
        nn.init.constant_(logits.bias, -4.0)
        self.head = nn.Sequential(hidden, logits)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments, for checkpoints."""
        return {
            "width": self.width,
            "depth": self.depth,
            "stride": self.stride,
            "blocks": self.blocks,
            "decoder_width": self.decoder_width,
        }

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict the centre heatmap.

        Parameters
        ----------
        x : torch.Tensor
            Normalized float images ``(N, 3, H, W)``, H and W multiples of
            ``2**depth`` px.

        Returns
        -------
        torch.Tensor
            Logits ``(N, 1, H / stride, W / stride)``.

        Raises
        ------
        ValueError
            H or W is not a multiple of ``2**depth``.
        """
        multiple = 2**self.depth
        if x.shape[-1] % multiple or x.shape[-2] % multiple:
            raise ValueError(
                f"input height and width must be multiples of {multiple} px, "
                f"got {tuple(x.shape[-2:])}"
            )
        features = [self.stem(x)]
        for down in self.down:
            features.append(down(features[-1]))
        levels = [features[i] for i in self._levels]
        y = self.lateral[-1](levels[-1])
        for k in range(len(levels) - 2, -1, -1):
            y = F.interpolate(y, scale_factor=2.0, mode="nearest") + self.lateral[k](levels[k])
            y = self.smooth[k](y)
        # The head runs in float32 even under bf16/fp16 autocast: logits rounded to 8 bits of
        # mantissa form flat plateaus, every cell of which is a local maximum to the peak finder.
        with torch.autocast(device_type=y.device.type, enabled=False):
            logits: torch.Tensor = self.head(y.float())
        return logits
