"""Load and save detectors: registry names, local files and URLs.

Our checkpoint format (written by :func:`save_detector`) is a dict::

    {"format": "wsimito-detector", "version": 1,
     "architecture": "point-heatmap-net" | "retinanet-da",
     "config": {...},          # constructor arguments of the network
     "state_dict": {...},
     "settings": {...},        # mpp, tile_size, overlap, threshold, min_distance_um, ...
     "name": "...",
     "metadata": {...}}        # training_data, intended_use, ...

Foreign checkpoints of the MIDOG reference RetinaNet are accepted as a plain
state dict or wrapped as ``{"model": state_dict}``.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pooch
import torch
from torch import nn

from ..detect import TorchDetector
from ..errors import WeightsError
from .cascade import CascadeDetector, CascadeNet
from .detectors import PointDetector, RetinaNetDetector
from .metadata import DEMO_METADATA, MIDOG21_METADATA
from .pointnet import PointHeatmapNet
from .retinanet import RetinaNetDA

FORMAT = "wsimito-detector"
VERSION = 1
WEIGHTS_DIR = Path(__file__).parent / "weights"

# architecture name -> (network class, detector class); a detector class with a
# ``from_network`` classmethod is built through it.
ARCHITECTURES: dict[str, tuple[type[nn.Module], type[TorchDetector] | type[CascadeDetector]]] = {
    "point-heatmap-net": (PointHeatmapNet, PointDetector),
    "retinanet-da": (RetinaNetDA, RetinaNetDetector),
    "cascade": (CascadeNet, CascadeDetector),
}


@dataclass(frozen=True)
class RegistryEntry:
    """A named detector: a packaged file, or a URL (with its SHA-256 when known)."""

    architecture: str
    description: str
    path: Path | None = None
    url: str | None = None
    sha256: str | None = None
    metadata: Mapping[str, Any] | None = None


REGISTRY: dict[str, RegistryEntry] = {
    "demo": RegistryEntry(
        architecture="point-heatmap-net",
        description="small point detector trained on synthetic images; demonstration only",
        path=WEIGHTS_DIR / "demo.pt",
        metadata=DEMO_METADATA,
    ),
    "midog21-retinanet": RegistryEntry(
        architecture="retinanet-da",
        description="MIDOG 2021 reference RetinaNet (domain-adversarial), plain state dict",
        url="https://github.com/DeepMicroscopy/MIDOG_reference_docker/raw/master/"
        "model_weights/RetinaNetDA.pth",
        metadata=MIDOG21_METADATA,
    ),
}


def save_detector(detector: PointDetector | RetinaNetDetector, path: str | Path) -> Path:
    """Write ``detector`` (network, settings, name, metadata) to ``path`` in our format.

    The file is written under a temporary name and renamed, so a failed write
    leaves nothing behind.
    """
    architecture = next(
        (name for name, (_, cls) in ARCHITECTURES.items() if type(detector) is cls), None
    )
    if architecture is None:
        raise TypeError(
            f"save_detector writes {[c.__name__ for _, c in ARCHITECTURES.values()]}, "
            f"got {type(detector).__name__}; save a custom network's state_dict with torch.save"
        )
    checkpoint = {
        "format": FORMAT,
        "version": VERSION,
        "architecture": architecture,
        "config": detector.model.config,
        "state_dict": {k: v.detach().cpu() for k, v in detector.model.state_dict().items()},
        "settings": detector.settings,
        "name": detector.name,
        "metadata": dict(detector.metadata),
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    try:
        torch.save(checkpoint, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_detector(
    spec: str | Path, device: str | torch.device = "auto", **settings: Any
) -> PointDetector | RetinaNetDetector:
    """A ready detector from a registry name, a local checkpoint path or a URL.

    Parameters
    ----------
    spec : a name in :data:`REGISTRY` (``"demo"``, ``"midog21-retinanet"``), a path
        to a checkpoint (ours, or a MIDOG reference RetinaNet state dict, plain or
        as ``{"model": ...}``), or an http(s) URL of one (cached with pooch).
    device : ``"auto"`` (CUDA, then MPS, then CPU) or a device.
    settings : overrides of the detector's settings, e.g. ``threshold=0.7``.

    Raises :class:`wsimito.errors.WeightsError` when the file does not fit the
    architecture, listing missing and unexpected keys.
    """
    entry = REGISTRY.get(str(spec))
    if entry is not None:
        path = _registry_file(str(spec), entry)
        name, metadata = str(spec), entry.metadata
    elif str(spec).startswith(("http://", "https://")):
        path = _download(str(spec), None)
        name, metadata = Path(str(spec)).stem, {"weights": str(spec)}
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"{spec!r} is neither a registered detector ({', '.join(REGISTRY)}), "
                "an existing checkpoint file nor an http(s) URL"
            )
        name, metadata = path.stem, {"weights": str(path)}
    checkpoint = _read(path)
    if isinstance(checkpoint, Mapping) and checkpoint.get("format") == FORMAT:
        return _from_ours(checkpoint, path, device, settings)
    state_dict = _unwrap(checkpoint, path)
    model = RetinaNetDA()
    _load_state(model, state_dict, "retinanet-da", path)
    return RetinaNetDetector(model, device=device, name=name, metadata=metadata, **settings)


def _registry_file(name: str, entry: RegistryEntry) -> Path:
    if entry.path is not None:
        if not entry.path.is_file():
            raise WeightsError(
                f"the bundled weights for {name!r} are missing: {entry.path} is not in this "
                "installation. Reinstall wsimito, or train a model with "
                "wsimito.train.heatmap.train_point_detector and save it with save_detector"
            )
        return entry.path
    assert entry.url is not None
    return _download(entry.url, entry.sha256)


def _download(url: str, sha256: str | None) -> Path:
    """Fetch ``url`` once into the user cache; checked by SHA-256 when it is known."""
    try:
        return Path(
            pooch.retrieve(
                url,
                known_hash=f"sha256:{sha256}" if sha256 else None,
                path=pooch.os_cache("wsimito") / "weights",
                progressbar=False,
            )
        )
    except Exception as exc:  # network errors, hash mismatch
        raise WeightsError(
            f"could not download {url} ({exc}); download it by hand and pass its local path"
        ) from exc


def _read(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" not in str(exc).lower():
            raise WeightsError(f"{path} is not a readable torch checkpoint ({exc})") from exc
        raise WeightsError(
            f"{path} holds Python objects besides tensors, which are not loaded for safety. "
            "If you trust it, keep only the weights: sd = torch.load(path, weights_only=False); "
            "torch.save(sd['model'] if 'model' in sd else sd.state_dict(), 'weights.pth')"
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise WeightsError(f"{path} is not a readable torch checkpoint ({exc})") from exc


def _unwrap(checkpoint: Any, path: Path) -> Mapping[str, torch.Tensor]:
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("model"), Mapping):
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in checkpoint.values()
    ):
        raise WeightsError(
            f"{path} is neither a wsimito checkpoint nor a state dict (plain or as "
            "{'model': state_dict}) of the MIDOG reference RetinaNetDA"
        )
    return checkpoint


def _load_state(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], architecture: str, path: Path
) -> None:
    """Strictly load ``state_dict``; on any mismatch raise a WeightsError that lists it."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state_dict[k].shape)}, model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        raise WeightsError(
            f"{path} does not fit the {architecture!r} architecture "
            f"({ARCHITECTURES[architecture][0].__name__}).\n"
            f"{_listing('missing keys', missing)}\n{_listing('unexpected keys', unexpected)}\n"
            f"{_listing('shape mismatches', mismatched)}"
        )
    model.load_state_dict(state_dict, strict=True)


def _listing(title: str, items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit]) + (
        f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    )
    return f"  {title} ({len(items)}): {shown or '-'}"


def _from_ours(
    checkpoint: Mapping[str, Any],
    path: Path,
    device: str | torch.device,
    overrides: Mapping[str, Any],
) -> PointDetector | RetinaNetDetector:
    version = checkpoint.get("version")
    if version != VERSION:
        raise WeightsError(
            f"{path} is a {FORMAT} checkpoint of version {version}; this wsimito reads version "
            f"{VERSION}. Upgrade wsimito or re-save the detector"
        )
    architecture = checkpoint.get("architecture")
    if architecture not in ARCHITECTURES:
        raise WeightsError(
            f"{path} names the unknown architecture {architecture!r}; known: "
            f"{', '.join(ARCHITECTURES)}"
        )
    network_cls, detector_cls = ARCHITECTURES[architecture]
    try:
        model = network_cls(**checkpoint.get("config", {}))
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{path} has an invalid {architecture!r} config: {exc}") from exc
    _load_state(model, checkpoint["state_dict"], architecture, path)
    settings = {**checkpoint.get("settings", {}), **overrides}
    return getattr(detector_cls, "from_network", detector_cls)(
        model,
        device=device,
        name=checkpoint.get("name", path.stem),
        metadata=checkpoint.get("metadata", {}),
        **settings,
    )
