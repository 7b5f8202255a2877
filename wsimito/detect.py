"""The ``Detector`` protocol, tile validation and device handling.

A detector turns a batch of RGB tiles into points. Coordinates follow the
continuous pixel convention used by OpenSlide and QuPath: pixel ``(col, row)``
covers ``[col, col + 1) x [row, row + 1)``, so its centre is
``(col + 0.5, row + 0.5)``. Scaling a point between resolutions is then a plain
multiplication by the ratio of the mpp values.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from .errors import TileInputError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@runtime_checkable
class Detector(Protocol):
    """What the pipeline needs from a detector; any object with these works.

    Attributes
    ----------
    mpp : float
        Resolution the model expects, µm/px.
    tile_size : int
        Input side length, px at ``mpp``.
    overlap : int
        Overlap between neighbouring tiles, px at ``mpp``; at least the
        diameter of the largest object.
    threshold : float
        Default decision threshold on the score.
    device : torch.device
        Where ``detect`` expects its input.
    """

    mpp: float
    tile_size: int
    overlap: int
    threshold: float
    device: torch.device

    def detect(self, tiles: torch.Tensor) -> list[torch.Tensor]:
        """Detect objects in uint8 RGB tiles ``(N, 3, tile_size, tile_size)``.

        Returns one float tensor ``(K, 3)`` per tile: ``x, y`` in tile pixels
        at ``mpp`` (continuous convention, see the module docstring) and a
        score in [0, 1].
        """
        ...


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return a concrete device; ``"auto"`` picks CUDA, then Apple MPS, then CPU."""
    if isinstance(device, torch.device):
        return device
    if device != "auto":
        try:
            return torch.device(device)
        except RuntimeError as exc:
            raise ValueError(
                f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:0' or 'mps'"
            ) from exc
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; ``None`` means full fp32.

    ``"auto"`` gives bf16 on CUDA devices that support it, else fp16 on CUDA
    and MPS, and fp32 on the CPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return None


def check_tiles(tiles: Any, tile_size: int) -> torch.Tensor:
    """Return ``tiles`` if they are uint8 ``(N, 3, tile_size, tile_size)``, else raise.

    Raises :class:`TileInputError` naming the fix; tiles are never resized.
    """
    if not isinstance(tiles, torch.Tensor):
        raise TileInputError(
            f"tiles must be a torch.Tensor, got {type(tiles).__name__}; convert a numpy "
            "(N, H, W, 3) array with torch.from_numpy(a).permute(0, 3, 1, 2)"
        )
    shape = tuple(tiles.shape)
    if tiles.ndim != 4 or shape[1] != 3:
        hint = (
            "; this looks channels-last, use tiles.permute(0, 3, 1, 2)"
            if tiles.ndim == 4 and shape[-1] == 3
            else "; add a batch axis with tiles[None]"
            if tiles.ndim == 3
            else ""
        )
        raise TileInputError(f"tiles must have shape (N, 3, H, W), got {shape}{hint}")
    if tiles.dtype != torch.uint8:
        raise TileInputError(
            f"tiles must be uint8 RGB (0-255), got {tiles.dtype}; convert values in [0, 1] "
            "with (tiles * 255).round().to(torch.uint8)"
        )
    if shape[2] != tile_size or shape[3] != tile_size:
        raise TileInputError(
            f"this detector takes {tile_size}x{tile_size} px tiles, got {shape[3]}x{shape[2]}; "
            f"read tiles with tile_size={tile_size} at the detector's mpp (no silent resize)"
        )
    return tiles


class TorchDetector:
    """Base class for detectors wrapping a ``torch.nn.Module``; optional.

    Handles input checks, device placement, channels_last, autocast,
    ``torch.compile`` and ``torch.inference_mode``. Subclasses implement
    :meth:`preprocess` (uint8 tiles to network input) and :meth:`postprocess`
    (network output to per-tile ``(K, 3)`` points).

    Parameters
    ----------
    model : the network.
    mpp : µm/px the model expects.
    tile_size : input side length, px at ``mpp``.
    overlap : px at ``mpp`` between neighbouring tiles.
    threshold : default decision threshold on the score.
    device : ``"auto"``, a device string or a ``torch.device``.
    precision : ``"auto"``, ``"fp32"``, ``"fp16"`` or ``"bf16"`` (autocast dtype).
    channels_last : use channels_last memory format; ``None`` means on GPUs only.
    compile : wrap the model with ``torch.compile``.
    name : short model name, copied into results.
    metadata : free-form facts (training data, intended use), copied into results.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mpp: float,
        tile_size: int,
        overlap: int,
        threshold: float,
        device: str | torch.device = "auto",
        precision: str = "auto",
        channels_last: bool | None = None,
        compile: bool = False,
        name: str = "detector",
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if mpp <= 0:
            raise ValueError(f"mpp must be > 0 µm/px, got {mpp}")
        if tile_size <= 0 or not 0 <= overlap < tile_size:
            raise ValueError(
                f"need tile_size > 0 and 0 <= overlap < tile_size, got {tile_size}, {overlap}"
            )
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold is a score in [0, 1], got {threshold}")
        self.mpp = float(mpp)
        self.tile_size = int(tile_size)
        self.overlap = int(overlap)
        self.threshold = float(threshold)
        self.device = resolve_device(device)
        self.name = name
        self.metadata = dict(metadata or {})
        self.precision = precision
        self._autocast = autocast_dtype(self.device, precision)
        self.channels_last = self.device.type == "cuda" if channels_last is None else channels_last
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=memory_format).eval()
        self._forward = torch.compile(self.model) if compile else self.model

    def preprocess(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, 3, S, S)`` on ``device`` -> float network input."""
        raise NotImplementedError

    def postprocess(self, output: Any) -> list[torch.Tensor]:
        """Network output -> one float32 ``(K, 3)`` tensor (x, y, score) per tile."""
        raise NotImplementedError

    def _autocast_context(self) -> AbstractContextManager:
        if self._autocast is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self._autocast)

    def detect(self, tiles: torch.Tensor) -> list[torch.Tensor]:
        """See :meth:`Detector.detect`; points come back on ``device`` as float32.

        They are ordinary tensors (cloned out of inference mode), so callers
        may shift them in place.
        """
        tiles = check_tiles(tiles, self.tile_size).to(self.device, non_blocking=True)
        with torch.inference_mode():
            x = self.preprocess(tiles)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self._autocast_context():
                output = self._forward(x)
            points = self.postprocess(output)
        return [p.clone() for p in points]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, mpp={self.mpp}, tile_size={self.tile_size}, "
            f"overlap={self.overlap}, threshold={self.threshold}, device={str(self.device)!r})"
        )


def choose_batch_size(
    detector: Detector,
    *,
    memory_fraction: float = 0.5,
    max_batch_size: int = 256,
    cpu_batch_size: int = 8,
) -> int:
    """Tiles per batch for ``detector`` on its device.

    On CUDA, one probe tile measures the peak memory per tile and the batch
    fills ``memory_fraction`` of the free memory (at most ``max_batch_size``).
    On the CPU and MPS, where larger batches do not run faster, it returns
    ``cpu_batch_size``.
    """
    device = detector.device
    if device.type != "cuda":
        return cpu_batch_size
    free, _ = torch.cuda.mem_get_info(device)
    probe = torch.zeros(
        (1, 3, detector.tile_size, detector.tile_size), dtype=torch.uint8, device=device
    )
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    detector.detect(probe)
    torch.cuda.synchronize(device)
    per_tile = max(torch.cuda.max_memory_allocated(device) - base, 1)
    return int(max(1, min(max_batch_size, free * memory_fraction // per_tile)))
