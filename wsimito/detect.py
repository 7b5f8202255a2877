"""The ``Detector`` protocol, tile validation and device handling.

A detector turns a batch of RGB tiles into points. Coordinates follow the
continuous pixel convention used by OpenSlide and QuPath: pixel ``(col, row)``
covers ``[col, col + 1) x [row, row + 1)``, so its centre is
``(col + 0.5, row + 0.5)``. Scaling a point between resolutions is then a plain
multiplication by the ratio of the mpp values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn

from .errors import TileInputError

Precision = Literal["auto", "fp32", "fp16", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("auto", "fp32", "fp16", "bf16")


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
        Default decision threshold on the score, in [0, 1].
    device : torch.device
        Where ``detect`` expects its input.
    name : str
        Short name, copied into results and exports.
    metadata : Mapping[str, Any]
        What the detector says about itself, copied into results: at least
        ``training_data`` and ``intended_use`` where known, and
        ``weights_sha256`` for detectors loaded from a file.
    min_distance_um : float or None
        The closest two objects may be, µm. The pipeline's duplicate check
        across tiles uses it as its radius (``None``: 3 µm).
    """

    # Read-only in the protocol: a plain attribute satisfies it, and so does a property
    # (a cascade takes its resolution and tile size from its first stage).

    @property
    def mpp(self) -> float:
        """Resolution the model expects, µm/px."""
        ...

    @property
    def tile_size(self) -> int:
        """Input side length, px at ``mpp``."""
        ...

    @property
    def overlap(self) -> int:
        """Overlap between neighbouring tiles, px at ``mpp``."""
        ...

    @property
    def threshold(self) -> float:
        """Default decision threshold on the score, in [0, 1]."""
        ...

    @property
    def device(self) -> torch.device:
        """Where ``detect`` expects its input."""
        ...

    @property
    def name(self) -> str:
        """Short name, copied into results and exports."""
        ...

    @property
    def metadata(self) -> Mapping[str, Any]:
        """What the detector says about itself."""
        ...

    @property
    def min_distance_um(self) -> float | None:
        """The closest two objects may be, µm (``None``: 3 µm)."""
        ...

    def detect(self, tiles: torch.Tensor) -> list[torch.Tensor]:
        """Detect objects in a batch of tiles.

        Parameters
        ----------
        tiles : torch.Tensor
            The tiles, uint8 RGB ``(N, 3, tile_size, tile_size)`` on
            :attr:`device`, read at :attr:`mpp`.

        Returns
        -------
        list of torch.Tensor
            One float tensor ``(K, 3)`` per tile: ``x, y`` in tile px at
            ``mpp`` (continuous convention, see the module docstring) and a
            score in [0, 1].
        """
        ...


def protocol_members() -> tuple[str, ...]:
    """List the names an object needs to follow :class:`Detector`, read off the protocol.

    Returns
    -------
    tuple of str
        Attribute and method names, sorted.

    Examples
    --------
    >>> from wsimito.detect import protocol_members
    >>> protocol_members()
    ('detect', 'device', 'metadata', 'min_distance_um', 'mpp', 'name', 'overlap', 'threshold',
     'tile_size')
    """
    names = {
        k
        for k, v in vars(Detector).items()
        if (callable(v) or isinstance(v, property)) and not k.startswith("_")
    }
    return tuple(sorted(names))


def as_detector(obj: Any) -> Detector:
    """Check that an object follows the :class:`Detector` protocol with sane geometry.

    Parameters
    ----------
    obj : object
        The would-be detector.

    Returns
    -------
    Detector
        ``obj`` itself.

    Raises
    ------
    TypeError
        Naming every protocol member ``obj`` lacks.
    ValueError
        When ``overlap`` is not in ``[0, tile_size)``.
    """
    if not isinstance(obj, Detector):
        missing = [name for name in protocol_members() if not hasattr(obj, name)]
        raise TypeError(
            f"{type(obj).__name__} does not follow the wsimito.Detector protocol: missing "
            f"{', '.join(missing)}. Give it mpp (µm/px), tile_size and overlap (px at mpp), "
            "threshold, device, name, metadata (a dict), min_distance_um (µm or None) and "
            "detect(tiles) -> list of (K, 3) tensors, or pass a registry name such as 'demo' "
            "or a weights path."
        )
    if not 0 <= int(obj.overlap) < int(obj.tile_size):
        raise ValueError(
            f"detector overlap ({obj.overlap} px) must be >= 0 and below its "
            f"tile_size ({obj.tile_size} px)"
        )
    return obj


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn a device request into a concrete device that this machine has.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` picks CUDA, then Apple MPS, then the CPU; or ``"cpu"``,
        ``"cuda"``, ``"cuda:1"``, ``"mps"``, or a ``torch.device``.

    Returns
    -------
    torch.device
        The device.

    Raises
    ------
    ValueError
        For an unknown device string, or a CUDA/MPS device this machine or
        this torch build does not have.
    """
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:0' or 'mps'"
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={str(device)!r}, but this torch build ({torch.__version__}) or machine "
                "has no CUDA GPU; use device='auto' or 'cpu', or install a CUDA build of torch"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={str(device)!r}, but only {torch.cuda.device_count()} CUDA device(s) "
                f"exist (cuda:0 to cuda:{torch.cuda.device_count() - 1})"
            )
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device={str(device)!r}, but Apple MPS is not available here")
    return dev


@dataclass(frozen=True)
class RuntimeOptions:
    """Where and how a torch detector runs; one object for every detector class.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
    precision : {"auto", "fp32", "fp16", "bf16"}
        Autocast dtype; ``"auto"`` is bf16 on CUDA where supported, else fp16
        on CUDA and MPS, fp32 on the CPU.
    channels_last : bool or None
        Channels-last memory format; ``None`` means on CUDA only.
    compile : bool
        Wrap the network with ``torch.compile``.
    """

    device: str | torch.device = "auto"
    precision: Precision = "auto"
    channels_last: bool | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")


def autocast_dtype(device: torch.device, precision: Precision = "auto") -> torch.dtype | None:
    """Choose the autocast dtype for a precision on a device.

    Parameters
    ----------
    device : torch.device
        Where the network runs.
    precision : {"auto", "fp32", "fp16", "bf16"}
        ``"auto"`` gives bf16 on CUDA devices that support it, else fp16 on
        CUDA and MPS, and fp32 on the CPU.

    Returns
    -------
    torch.dtype or None
        The autocast dtype; ``None`` means full fp32 (no autocast).

    Raises
    ------
    ValueError
        ``precision`` is not one of the four.

    Examples
    --------
    >>> import torch
    >>> from wsimito.detect import autocast_dtype
    >>> autocast_dtype(torch.device("cpu")) is None
    True
    >>> autocast_dtype(torch.device("cpu"), "bf16")
    torch.bfloat16
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
    """Check that tiles are uint8 ``(N, 3, tile_size, tile_size)``; they are never resized.

    Parameters
    ----------
    tiles : torch.Tensor
        The batch a detector was given.
    tile_size : int
        The detector's input side, px.

    Returns
    -------
    torch.Tensor
        ``tiles`` itself.

    Raises
    ------
    wsimito.TileInputError
        Not a tensor, the wrong shape, layout, dtype or size; the message
        names the fix.
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
    model : torch.nn.Module
        The network.
    mpp : float
        Resolution the model expects, µm/px.
    tile_size : int
        Input side length, px at ``mpp``.
    overlap : int
        Overlap between neighbouring tiles, px at ``mpp``.
    threshold : float
        Default decision threshold on the score, in [0, 1].
    options : RuntimeOptions, optional
        Device, precision, channels-last and compile settings.
    device : str or torch.device, optional
        Shortcut that overrides ``options.device``.
    name : str
        Short model name, copied into results.
    metadata : Mapping[str, Any], optional
        Free-form facts (training data, intended use), copied into results.
    min_distance_um : float or None
        The closest two detections may be, µm (see :class:`Detector`).

    Raises
    ------
    ValueError
        ``mpp``, ``tile_size``, ``overlap``, ``threshold`` or
        ``min_distance_um`` is out of range, or the device is not available.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mpp: float,
        tile_size: int,
        overlap: int,
        threshold: float,
        options: RuntimeOptions | None = None,
        device: str | torch.device | None = None,
        name: str = "detector",
        metadata: Mapping[str, Any] | None = None,
        min_distance_um: float | None = None,
    ) -> None:
        if not (math.isfinite(mpp) and mpp > 0):
            raise ValueError(f"mpp must be > 0 µm/px, got {mpp}")
        if tile_size <= 0 or not 0 <= overlap < tile_size:
            raise ValueError(
                f"need tile_size > 0 and 0 <= overlap < tile_size (px), got {tile_size}, {overlap}"
            )
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold is a score in [0, 1], got {threshold}")
        if min_distance_um is not None and not min_distance_um >= 0:
            raise ValueError(f"min_distance_um must be >= 0 µm or None, got {min_distance_um}")
        options = options or RuntimeOptions()
        if device is not None:
            options = replace(options, device=device)
        self.options = options
        self.mpp = float(mpp)
        self.tile_size = int(tile_size)
        self.overlap = int(overlap)
        self.threshold = float(threshold)
        self.min_distance_um = None if min_distance_um is None else float(min_distance_um)
        self.device = resolve_device(options.device)
        self.name = name
        self.metadata: Mapping[str, Any] = dict(metadata or {})
        self.precision = options.precision
        self._autocast = autocast_dtype(self.device, options.precision)
        self.channels_last = (
            self.device.type == "cuda" if options.channels_last is None else options.channels_last
        )
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        # Module.to takes memory_format (see its documentation); torch's overloads omit it.
        moved = model.to(self.device, memory_format=memory_format)  # type: ignore[call-overload]
        self.model = moved.eval()
        self._forward = torch.compile(self.model) if options.compile else self.model

    def preprocess(self, tiles: torch.Tensor) -> torch.Tensor:
        """Turn tiles into the network's input.

        Parameters
        ----------
        tiles : torch.Tensor
            The tiles, uint8 ``(N, 3, S, S)`` RGB on :attr:`device`, ``S = tile_size``.

        Returns
        -------
        torch.Tensor
            Float network input.
        """
        raise NotImplementedError

    def postprocess(self, output: Any) -> list[torch.Tensor]:
        """Turn the network's output into points.

        Parameters
        ----------
        output : object
            What the network returned for one batch.

        Returns
        -------
        list of torch.Tensor
            One float32 ``(K, 3)`` tensor per tile: ``x, y`` in tile px at
            ``mpp`` and a score in [0, 1].
        """
        raise NotImplementedError

    def _autocast_context(self) -> AbstractContextManager[Any]:
        if self._autocast is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self._autocast)

    def detect(self, tiles: torch.Tensor) -> list[torch.Tensor]:
        """Detect objects in a batch of tiles (see :meth:`Detector.detect`).

        Points come back on ``device`` as float32 ordinary tensors (cloned out
        of inference mode), so callers may shift them in place.

        Parameters
        ----------
        tiles : torch.Tensor
            The tiles, uint8 RGB ``(N, 3, tile_size, tile_size)``, read at
            ``mpp``; moved to ``device`` if elsewhere.

        Returns
        -------
        list of torch.Tensor
            One float32 ``(K, 3)`` tensor per tile: ``x, y`` in tile px at
            ``mpp`` and a score in [0, 1].

        Raises
        ------
        wsimito.TileInputError
            The tiles are not uint8 ``(N, 3, tile_size, tile_size)``.
        """
        tiles = check_tiles(tiles, self.tile_size).to(self.device, non_blocking=True)
        with torch.inference_mode():
            x = self.preprocess(tiles)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self._autocast_context():
                output = self._forward(x)
            points = self.postprocess(output)
        if not points:
            return []
        # One copy out of inference mode for the whole batch (cat makes an ordinary tensor
        # here), then views per tile.
        sizes = [int(p.shape[0]) for p in points]
        return list(torch.cat([p.reshape(-1, 3) for p in points]).split(sizes))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, mpp={self.mpp}, "
            f"tile_size={self.tile_size}, overlap={self.overlap}, threshold={self.threshold}, "
            f"device={str(self.device)!r})"
        )


def choose_batch_size(
    detector: Detector,
    *,
    memory_fraction: float = 0.5,
    max_batch_size: int = 256,
    cpu_batch_size: int = 8,
) -> int:
    """Choose how many tiles per batch a detector gets on its device.

    On CUDA, one probe tile measures the peak memory per tile and the batch
    fills ``memory_fraction`` of the free memory (at most ``max_batch_size``).
    On the CPU and MPS, where larger batches do not run faster, it returns
    ``cpu_batch_size``.

    Parameters
    ----------
    detector : Detector
        The detector, on its device.
    memory_fraction : float
        Fraction (0 to 1) of the free GPU memory the batch may use.
    max_batch_size : int
        Upper bound on the CUDA batch size, tiles.
    cpu_batch_size : int
        Batch size on the CPU and MPS, tiles.

    Returns
    -------
    int
        Tiles per batch (>= 1).
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
