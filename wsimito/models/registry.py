"""Load and save detectors: a registry of named weights, local files and URLs.

The registry follows torchvision's ``register_model`` / ``list_models`` and
``Weights(url, meta)``: each name maps to a :class:`Weights` record (where the
file is, its SHA-256, its architecture and what it is). ``"demo"`` and
``"midog21-retinanet"`` are built in; :func:`register_detector` adds more.

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

Every loaded detector records the SHA-256 of its weights file in
``detector.metadata["weights_sha256"]`` and the file or URL in
``detector.metadata["weights"]``, so results can say which weights made them.
"""

from __future__ import annotations

import math
import pickle
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pooch
import torch
from torch import nn

from ..detect import TorchDetector
from ..errors import WeightsError
from ..io.atomic import atomic_path
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

MAX_PARAMETERS = 1_000_000_000
"""Largest network (parameters and buffers) a checkpoint's config may build: 4 GB in
float32, about 80 times the MIDOG reference RetinaNet."""
# Largest integer a network config may hold (channels, depth, grid sizes).
_MAX_CONFIG_INT = 1 << 16
_SHA256 = re.compile(r"[0-9a-f]{64}")
SKIP = "skip"
"""``sha256="skip"``: load a URL without checking its hash (warns)."""


class UnpinnedWeightsWarning(UserWarning):
    """Weights were loaded without a known SHA-256 to check them against."""


@dataclass(frozen=True)
class Weights:
    """A detector's weights: where the file is, its SHA-256 and what it is.

    Parameters
    ----------
    path : pathlib.Path or None
        A local checkpoint file; give this or ``url``.
    url : str or None
        An http(s) URL of the checkpoint, downloaded once into the user cache.
    sha256 : str or None
        The file's SHA-256 as 64 hex digits; loading refuses a file that
        differs. ``None`` leaves the weights unpinned: loading then warns.
    architecture : str or None
        ``"point-heatmap-net"``, ``"retinanet-da"`` or ``"cascade"``; ``None`` means what the
        checkpoint says (our format) or the MIDOG reference RetinaNet (a plain
        state dict).
    description : str
        One line for :func:`list_detectors` users and docs.
    metadata : Mapping
        Facts copied into the detector's and the results' metadata
        (``training_data``, ``intended_use``, ``source``, ...).

    Examples
    --------
    >>> Weights(url="https://example.org/mitosis.pt", sha256="ab" * 32).pinned
    True
    """

    path: Path | None = None
    url: str | None = None
    sha256: str | None = None
    architecture: str | None = None
    description: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.path is None) == (self.url is None):
            raise ValueError("Weights needs exactly one of path= (a local file) or url=")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"Weights url must be an http(s) URL, got {self.url!r}")
        if self.path is not None:
            object.__setattr__(self, "path", Path(self.path).expanduser())
        if self.sha256 is not None:
            object.__setattr__(self, "sha256", _checked_sha256(self.sha256, "sha256"))
        if self.architecture is not None and self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"unknown architecture {self.architecture!r}; known: {', '.join(ARCHITECTURES)}"
            )

    @property
    def pinned(self) -> bool:
        """Whether the file is checked against a known SHA-256 when loaded."""
        return self.sha256 is not None

    @property
    def source(self) -> str:
        """The file or URL, as text."""
        return str(self.path) if self.path is not None else str(self.url)


_DETECTOR_WEIGHTS: dict[str, Weights] = {
    "demo": Weights(
        path=WEIGHTS_DIR / "demo.pt",
        architecture="cascade",
        description="small two-stage detector (point detector and patch classifier) trained on "
        "synthetic images, real tissue only as negatives; demonstration only",
        metadata=DEMO_METADATA,
    ),
    # The publishers give no SHA-256, and this machine cannot download the file
    # to compute one: the entry is unpinned and warns when loaded.
    "midog21-retinanet": Weights(
        url="https://github.com/DeepMicroscopy/MIDOG_reference_docker/raw/master/"
        "model_weights/RetinaNetDA.pth",
        architecture="retinanet-da",
        description="MIDOG 2021 reference RetinaNet (domain-adversarial), plain state dict",
        metadata=MIDOG21_METADATA,
    ),
}


def register_detector(
    name: str,
    weights: Weights | str | Path,
    *,
    sha256: str | None = None,
    architecture: str | None = None,
    description: str = "",
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Weights:
    """Register weights under ``name``, so that ``load_detector(name)`` loads them.

    Parameters
    ----------
    name : str
        The registry name, e.g. ``"my-lab-midog22"``.
    weights : Weights, str or pathlib.Path
        A :class:`Weights` record, or a local path or http(s) URL from which
        one is made with the keyword arguments below.
    sha256 : str or None
        The file's SHA-256 (64 hex digits). Without it, loading a URL warns
        that the weights are unpinned; a local file is hashed and recorded.
    architecture : str or None
        As in :class:`Weights`.
    description : str
        One line saying what the detector is.
    metadata : Mapping or None
        Facts copied into results, e.g. ``{"training_data": "...",
        "intended_use": "research"}``.
    overwrite : bool
        Replace an existing name (built-in names included).

    Returns
    -------
    Weights
        The registered record.

    Raises
    ------
    ValueError
        ``name`` is taken (without ``overwrite``), empty, or the weights are
        malformed (not a URL or path, bad SHA-256, unknown architecture).
    WeightsError
        A local path that does not exist.

    Examples
    --------
    >>> register_detector("lab-model", "/models/lab.pt", sha256="0" * 64)  # doctest: +SKIP
    >>> "lab-model" in list_detectors()                                    # doctest: +SKIP
    True
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a detector name must be a non-empty string, got {name!r}")
    if name in _DETECTOR_WEIGHTS and not overwrite:
        raise ValueError(
            f"a detector named {name!r} is already registered; pass overwrite=True to replace it"
        )
    if not isinstance(weights, Weights):
        text = str(weights)
        where = {"url": text} if text.startswith(("http://", "https://")) else {"path": Path(text)}
        weights = Weights(
            **where,
            sha256=sha256,
            architecture=architecture,
            description=description,
            metadata=dict(metadata or {}),
        )
    if weights.path is not None and not weights.path.is_file():
        raise WeightsError(f"cannot register {name!r}: {weights.path} is not a file")
    _DETECTOR_WEIGHTS[name] = weights
    return weights


def list_detectors() -> list[str]:
    """The registered detector names, sorted.

    Returns
    -------
    list of str
        Names that :func:`load_detector` accepts.

    Examples
    --------
    >>> list_detectors()[:2]
    ['demo', 'midog21-retinanet']
    """
    return sorted(_DETECTOR_WEIGHTS)


def get_weights(name: str) -> Weights:
    """The :class:`Weights` registered under ``name``.

    Parameters
    ----------
    name : str
        A name from :func:`list_detectors`.

    Returns
    -------
    Weights
        The record.

    Raises
    ------
    KeyError
        ``name`` is not registered; the message lists the names that are.
    """
    try:
        return _DETECTOR_WEIGHTS[name]
    except KeyError:
        raise KeyError(
            f"no detector named {name!r}; registered: {', '.join(list_detectors())}"
        ) from None


def save_detector(
    detector: PointDetector | RetinaNetDetector | CascadeDetector, path: str | Path
) -> Path:
    """Write ``detector`` (network, settings, name, metadata) to ``path`` in our format.

    The file is written under a temporary name and renamed, so a failed write
    leaves nothing behind. ``metadata["weights"]`` and ``["weights_sha256"]``
    describe the file a detector was loaded from, so they are not saved.

    Parameters
    ----------
    detector : PointDetector, RetinaNetDetector or CascadeDetector
        The detector to save.
    path : str or pathlib.Path
        The checkpoint file to write.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    TypeError
        ``detector`` is of a class this format does not hold.
    """
    architecture = next(
        (name for name, (_, cls) in ARCHITECTURES.items() if type(detector) is cls), None
    )
    if architecture is None:
        raise TypeError(
            f"save_detector writes {[c.__name__ for _, c in ARCHITECTURES.values()]}, "
            f"got {type(detector).__name__}; save a custom network's state_dict with torch.save"
        )
    metadata = {
        k: v for k, v in detector.metadata.items() if k not in ("weights", "weights_sha256")
    }
    checkpoint = {
        "format": FORMAT,
        "version": VERSION,
        "architecture": architecture,
        "config": detector.model.config,
        "state_dict": {k: v.detach().cpu() for k, v in detector.model.state_dict().items()},
        "settings": detector.settings,
        "name": detector.name,
        "metadata": metadata,
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return path


def load_detector(
    spec: str | Path | Weights,
    device: str | torch.device = "auto",
    *,
    sha256: str | None = None,
    **settings: Any,
) -> PointDetector | RetinaNetDetector | CascadeDetector:
    """A ready detector from a registry name, a local checkpoint path or a URL.

    Parameters
    ----------
    spec : str, pathlib.Path or Weights
        A name from :func:`list_detectors` (``"demo"``, ``"midog21-retinanet"``),
        a :class:`Weights` record, a path to a checkpoint (ours, or a MIDOG
        reference RetinaNet state dict, plain or as ``{"model": ...}``), or an
        http(s) URL of one (downloaded once into the user cache).
    device : str or torch.device
        ``"auto"`` (CUDA, then MPS, then CPU) or a device.
    sha256 : str or None
        The expected SHA-256 of the file (64 hex digits). Required for URLs:
        an unchecked download can change every count without a word. Pass
        ``sha256="skip"`` to load a URL unchecked (warns). For registry names
        and paths it is optional and, when given, checked.
    **settings : Any
        Overrides of the detector's settings, e.g. ``threshold=0.7``.

    Returns
    -------
    PointDetector, RetinaNetDetector or CascadeDetector
        The detector; ``metadata["weights_sha256"]`` holds the SHA-256 of the
        file loaded and ``metadata["weights"]`` its path or URL.

    Raises
    ------
    WeightsError
        A URL without ``sha256``; a file whose SHA-256 differs from the
        expected one; a file that is not a checkpoint, has no state dict, has
        a config out of bounds (checked before the network is built), or
        does not fit the architecture (missing and unexpected keys listed).

    Warns
    -----
    UnpinnedWeightsWarning
        Weights loaded without a known SHA-256 (``sha256="skip"``, or a
        registry entry without one, such as ``"midog21-retinanet"``).
    """
    if sha256 is not None and sha256 != SKIP:
        sha256 = _checked_sha256(sha256, "sha256")
    text = str(spec) if not isinstance(spec, Weights) else ""
    if isinstance(spec, Weights) or text in _DETECTOR_WEIGHTS:
        weights = spec if isinstance(spec, Weights) else _DETECTOR_WEIGHTS[text]
        name = text or Path(weights.source).stem
        expected = weights.sha256 if sha256 is None else sha256
        metadata: dict[str, Any] = {**weights.metadata, "weights": weights.source}
        if weights.path is not None:
            path = _bundled_or_local(name, weights.path, isinstance(spec, Weights))
        else:
            path = _download(str(weights.url), None if expected == SKIP else expected)
        architecture = weights.architecture
    elif text.startswith(("http://", "https://")):
        path = fetch_weights(text, sha256=sha256)
        expected = sha256
        name, metadata, architecture = Path(text).stem, {"weights": text}, None
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"{text!r} is neither a registered detector ({', '.join(list_detectors())}), "
                "an existing checkpoint file nor an http(s) URL"
            )
        expected = sha256
        name, metadata, architecture = path.stem, {"weights": str(path)}, None
    digest = pooch.file_hash(str(path), alg="sha256")
    if expected not in (None, SKIP) and digest != expected:
        raise WeightsError(
            f"{path} has SHA-256 {digest}, not the expected {expected}: it is not the file that "
            "was pinned (changed, truncated or replaced). It was not loaded; fetch the right file "
            "or, if you trust this one, pass its hash as sha256="
        )
    if expected in (None, SKIP) and (sha256 == SKIP or "://" in metadata["weights"]):
        warnings.warn(
            f"the weights {metadata['weights']} are not pinned by a SHA-256, so nothing checks "
            f"that they are the intended file. This copy has SHA-256 {digest}; pin it with "
            f"load_detector(..., sha256='{digest}') or register_detector(..., sha256=...)",
            UnpinnedWeightsWarning,
            stacklevel=2,
        )
    metadata["weights_sha256"] = digest
    checkpoint = _read(path)
    if isinstance(checkpoint, Mapping) and checkpoint.get("format") == FORMAT:
        return _from_ours(checkpoint, path, device, settings, architecture, metadata)
    if architecture not in (None, "retinanet-da"):
        raise WeightsError(
            f"{path} is not a {FORMAT} checkpoint, so it cannot hold a {architecture!r} network; "
            "save it with wsimito.save_detector"
        )
    state_dict = _unwrap(checkpoint, path)
    model = _build(RetinaNetDA, {}, state_dict, "retinanet-da", path)
    assert isinstance(model, RetinaNetDA)
    return RetinaNetDetector(model, device=device, name=name, metadata=metadata, **settings)


def _checked_sha256(value: object, name: str) -> str:
    text = str(value).strip().lower()
    if text.startswith("sha256:"):
        text = text[len("sha256:") :]
    if not _SHA256.fullmatch(text):
        raise ValueError(f"{name} must be a SHA-256 of 64 hex digits, got {value!r}")
    return text


def _bundled_or_local(name: str, path: Path, given: bool) -> Path:
    if not path.is_file():
        if given:
            raise WeightsError(f"{path} is not a file")
        raise WeightsError(
            f"the bundled weights for {name!r} are missing: {path} is not in this "
            "installation. Reinstall wsimito, or train a model with "
            "wsimito.train.heatmap.train_point_detector and save it with save_detector"
        )
    return path


def fetch_weights(url: str, *, sha256: str | None) -> Path:
    """Download a weights file once into the user cache, checked against its SHA-256.

    Parameters
    ----------
    url : str
        An http(s) URL.
    sha256 : str or None
        The file's SHA-256 (64 hex digits), or ``"skip"`` to accept any file.

    Returns
    -------
    pathlib.Path
        The cached copy.

    Raises
    ------
    WeightsError
        Without ``sha256``, when the download fails, or when the file differs.
    """
    if sha256 is None:
        raise WeightsError(
            f"{url} is a URL and no sha256= was given: wsimito loads downloaded weights only "
            "when their SHA-256 is known, since other weights change every count without a "
            "word. Pass load_detector(url, sha256='<64 hex digits>') (the publisher's hash, "
            "or `sha256sum` of a copy you trust; on the command line --sha256), or "
            "sha256='skip' to load it unchecked"
        )
    if sha256 != SKIP:
        sha256 = _checked_sha256(sha256, "sha256")
    return _download(url, None if sha256 == SKIP else sha256)


def _download(url: str, sha256: str | None) -> Path:
    """Fetch ``url`` once into the user cache; pooch checks the SHA-256 when it is known."""
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
        if "does not match the known hash" in str(exc):
            raise WeightsError(
                f"{url} does not have the expected SHA-256 {sha256}: the file changed or is not "
                f"the one intended, and was not loaded ({exc})"
            ) from exc
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


def _build(
    network_cls: type[nn.Module],
    config: Any,
    state_dict: Mapping[str, torch.Tensor],
    architecture: str,
    path: Path,
) -> nn.Module:
    """The network of ``config`` holding ``state_dict``; every check runs before allocating.

    The config's numbers are checked against sane bounds, then the network is
    built on the ``meta`` device (no memory) to count its parameters and to
    compare its keys and shapes with the state dict.
    """
    if not isinstance(config, Mapping) or not all(isinstance(k, str) for k in config):
        raise WeightsError(
            f"{path}: the {architecture!r} config is not a dict of names, got "
            f"{type(config).__name__}"
        )
    bad = [f"{k}={v!r}" for k, v in config.items() if not _sane_config_value(v)]
    if bad:
        raise WeightsError(
            f"{path} has an invalid {architecture!r} config: {', '.join(bad)}. Sizes must be "
            f"whole numbers from 0 to {_MAX_CONFIG_INT:,} (or lists of them); the file is "
            "damaged or not a wsimito checkpoint"
        )
    try:
        with torch.device("meta"):
            shape_only = network_cls(**config)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{path} has an invalid {architecture!r} config: {exc}") from exc
    size = sum(t.numel() for t in shape_only.state_dict().values())
    if size > MAX_PARAMETERS:
        raise WeightsError(
            f"{path}: its {architecture!r} config {dict(config)} makes a network of {size:,} "
            f"parameters ({size * 4 / 2**30:.3g} GiB in float32), above the limit of "
            f"{MAX_PARAMETERS:,}; the file is damaged or not a wsimito checkpoint"
        )
    _check_state(shape_only, state_dict, architecture, path)
    model = network_cls(**config)
    model.load_state_dict(state_dict, strict=True)
    return model


def _sane_config_value(value: Any) -> bool:
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, int):
        return 0 <= value <= _MAX_CONFIG_INT
    if isinstance(value, float):
        return math.isfinite(value) and abs(value) <= _MAX_CONFIG_INT
    if isinstance(value, (list, tuple)):
        return len(value) <= 64 and all(
            not isinstance(v, (list, tuple)) and _sane_config_value(v) for v in value
        )
    return False


def _check_state(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], architecture: str, path: Path
) -> None:
    """Compare ``state_dict`` with ``model``'s keys and shapes; list every mismatch."""
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
    expected_architecture: str | None,
    metadata: Mapping[str, Any],
) -> PointDetector | RetinaNetDetector | CascadeDetector:
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
    if expected_architecture is not None and architecture != expected_architecture:
        raise WeightsError(
            f"{path} holds a {architecture!r} network, but its registry entry says "
            f"{expected_architecture!r}"
        )
    state_dict = checkpoint.get("state_dict")
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state_dict.values()
    ):
        raise WeightsError(
            f"{path} is a {FORMAT} checkpoint without a state dict (the network's weights under "
            "'state_dict'); it is damaged or was not written by save_detector"
        )
    settings = checkpoint.get("settings", {})
    saved_metadata = checkpoint.get("metadata", {})
    if not isinstance(settings, Mapping) or not isinstance(saved_metadata, Mapping):
        raise WeightsError(f"{path}: 'settings' and 'metadata' must be dicts")
    network_cls, detector_cls = ARCHITECTURES[architecture]
    model = _build(network_cls, checkpoint.get("config", {}), state_dict, architecture, path)
    # The class's from_network, else the class; both take the network and these keywords.
    build: Callable[..., object] = getattr(detector_cls, "from_network", detector_cls)
    detector = build(
        model,
        device=device,
        name=checkpoint.get("name", path.stem),
        metadata={**saved_metadata, **metadata},
        **{**settings, **overrides},
    )
    assert isinstance(detector, (PointDetector, RetinaNetDetector, CascadeDetector))
    return detector
