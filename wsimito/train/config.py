"""The training configuration: a TOML file, checked key by key.

Every section and key, its type, default and allowed values are declared
here once; :func:`load_config` reads a TOML file (paths in it are relative to
the file's folder) and :meth:`TrainingConfig.from_dict` checks a mapping.
A wrong key or value raises :class:`ConfigError` naming the key (e.g.
``[sampler] epoch_size``) and what is allowed. ``docs/training.md`` is the
reference for users; :func:`describe` prints the same table from the code.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

from ..errors import WsimitoError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


# The string options of the configuration (each key's allowed values are these).
AnnotationTableFormat = Literal["auto", "midog", "sliderunner", "qupath", "csv", "table"]
UnknownClasses = Literal["error", "ignore"]
DomainWeights = Literal["uniform", "slides"]
WithinDomain = Literal["slides", "cells"]
RandomIn = Literal["image", "tissue"]
Architecture = Literal["point-heatmap-net", "retinanet-da"]
Lookalikes = Literal["negative", "class"]
OptimizerName = Literal["adamw", "sgd"]
Schedule = Literal["onecycle", "cosine", "constant"]
Precision = Literal["auto", "fp32", "fp16", "bf16"]
KeepCheckpoints = Literal["last", "all"]
ValidationTissue = Literal["none", "auto"]

_Section = TypeVar("_Section", bound="type[DataclassInstance]")


class ConfigError(WsimitoError, ValueError):
    """A training configuration is invalid; the message names the key and what is allowed."""


def _key(
    kind: str,
    default: Any = MISSING,
    *,
    choices: tuple[str, ...] = (),
    low: float | None = None,
    high: float | None = None,
    doc: str = "",
) -> Any:
    """A config field: ``kind`` is one of int, float, str, bool, path, strs, range."""
    meta = {"kind": kind, "choices": choices, "low": low, "high": high, "doc": doc}
    if isinstance(default, (list, dict)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata=meta)
    return field(default=default, metadata=meta)


#: numpydoc type of each kind of key.
_KIND_TYPES = {
    "int": "int",
    "float": "float",
    "bool": "bool",
    "str": "str",
    "path": "str",
    "strs": "list of str",
    "range": "list of float",
}


def _documented(cls: _Section) -> _Section:
    """Append to a section's docstring an Attributes section made from its keys.

    Each key's type, allowed values, range and default come from the metadata
    that :func:`_key` records, the same that :func:`describe` prints, so the
    documentation cannot drift from what :func:`load_config` checks.
    """
    lines = ["", "Attributes", "----------"]
    for f in fields(cls):
        meta = f.metadata
        if "kind" not in meta:  # a sub-section
            section = f.type if isinstance(f.type, str) else f.type.__name__
            summary = inspect.cleandoc(_SECTION_DOCS[section]).splitlines()[0]
            lines += [f"{f.name} : {section}", f"    {summary}"]
            continue
        choices = meta["choices"]
        kind = "{" + ", ".join(map(repr, choices)) + "}" if choices else _KIND_TYPES[meta["kind"]]
        default = _default(f)
        if default == "None":
            kind += " or None"
        text = meta["doc"] or "see the module"
        if "a" <= text[0] <= "z":  # a sentence, but "µm/px ..." stays as it is
            text = text[0].upper() + text[1:]
        text = text if text.endswith(".") else text + "."
        text += _range(meta["low"], meta["high"])
        text += " Required." if default == "required" else f" Default {default}."
        lines += [f"{f.name} : {kind}", f"    {text}"]
    cls.__doc__ = inspect.cleandoc(cls.__doc__ or "") + "\n" + "\n".join(lines) + "\n"
    _SECTION_DOCS[cls.__name__] = cls.__doc__
    return cls


#: Docstrings of the sections documented so far, by class name.
_SECTION_DOCS: dict[str, str] = {}


def _default(f: Any) -> str:
    """A key's default as written in the documentation (``"required"`` without one)."""
    if f.default is not MISSING:
        return repr(f.default)
    return "required" if f.default_factory is MISSING else repr(f.default_factory())


def _range(low: float | None, high: float | None) -> str:
    """The allowed range of a number as a sentence (empty without bounds)."""
    if low is not None and high is not None:
        return f" In [{low:g}, {high:g}]."
    if low is not None:
        return f" At least {low:g}."
    return "" if high is None else f" At most {high:g}."


@_documented
@dataclass
class DataConfig:
    """``[data]``: the annotations and where the images are."""

    annotations: str = _key(
        "path", doc="annotation file or folder (any format read_annotations reads)"
    )
    format: AnnotationTableFormat = _key(
        "str",
        "auto",
        choices=get_args(AnnotationTableFormat),
        doc="annotation format; 'table' = a CSV/Parquet table in the to_frame() layout",
    )
    split_table: str | None = _key("path", None, doc="MIDOG split table joined to the slides")
    images: str = _key("path", "images", doc="folder that holds every image under its slide name")
    mpp: float | None = _key(
        "float", None, low=0.01, high=100.0, doc="level-0 µm/px for images whose file gives none"
    )
    mitosis_names: list[str] | None = _key("strs", None, doc="class names meaning mitotic figure")
    lookalike_names: list[str] | None = _key("strs", None, doc="class names meaning look-alike")
    unknown_classes: UnknownClasses = _key(
        "str",
        "error",
        choices=get_args(UnknownClasses),
        doc="cells of other classes: stop, or drop them",
    )
    margin_px: float = _key(
        "float", 25.0, low=0.0, doc="level-0 px a cell may lie outside its image"
    )


@_documented
@dataclass
class SplitConfig:
    """``[split]``: which slides train, validate and test."""

    column: str = _key("str", "split", doc="slide column that holds the split")
    train: list[str] = _key("strs", ["train"], doc="values of column used for training")
    validation: list[str] = _key(
        "strs", [], doc="values used for validation; empty: a fraction of the training slides"
    )
    validation_fraction: float = _key(
        "float", 0.2, low=0.0, high=0.9, doc="share of training slides kept for validation"
    )
    test: list[str] = _key(
        "strs", ["test"], doc="values of the test slides (never read in training)"
    )
    hold_out_column: str | None = _key("str", None, doc="slide column of the held-out domain")
    hold_out: list[str] = _key("strs", [], doc="values of hold_out_column used only for testing")


@_documented
@dataclass
class SamplerConfig:
    """``[sampler]``: what an epoch holds (see :class:`~wsimito.train.sampler.BalancedSampler`)."""

    epoch_size: int = _key("int", 1000, low=1, doc="patches per epoch")
    domains: list[str] = _key("strs", [], doc="slide columns that define a domain")
    domain_weights: DomainWeights = _key(
        "str",
        "uniform",
        choices=get_args(DomainWeights),
        doc="domains drawn uniformly, or in proportion to their slides",
    )
    within_domain: WithinDomain = _key(
        "str",
        "slides",
        choices=get_args(WithinDomain),
        doc="in a domain, a slide then one of its cells, or one of all its cells",
    )
    mitosis: float = _key("float", 0.5, low=0.0, doc="share of patches on mitotic figures")
    lookalike: float = _key("float", 0.25, low=0.0, doc="share of patches on look-alikes")
    random: float = _key("float", 0.25, low=0.0, doc="share of patches at random locations")
    max_shift: float = _key(
        "float",
        0.5,
        low=0.0,
        high=1.0,
        doc="largest offset of the cell from the patch centre (half sides)",
    )
    random_in: RandomIn = _key(
        "str",
        "image",
        choices=get_args(RandomIn),
        doc="random patches anywhere in the image, or in its detected tissue",
    )


_ENABLED = "apply this operation"
_P = "share of images the operation transforms"


@_documented
@dataclass
class FlipsConfig:
    """``[augment.flips]``: flips and 90° rotations."""

    enabled: bool = _key("bool", True, doc=_ENABLED)
    p: float = _key("float", 1.0, low=0.0, high=1.0, doc=_P)


@_documented
@dataclass
class ZoomConfig:
    """``[augment.zoom]``: small scale changes."""

    enabled: bool = _key("bool", True, doc=_ENABLED)
    p: float = _key("float", 0.5, low=0.0, high=1.0, doc=_P)
    max_change: float = _key(
        "float", 0.1, low=0.0, high=0.5, doc="largest relative change of scale (0.1: +-10 %)"
    )


@_documented
@dataclass
class HEDConfig:
    """``[augment.hed]``: HED concentration jitter."""

    enabled: bool = _key("bool", True, doc=_ENABLED)
    p: float = _key("float", 0.5, low=0.0, high=1.0, doc=_P)
    sigma: float = _key(
        "float", 0.05, low=0.0, high=1.0, doc="concentrations scaled by up to 1 +- sigma"
    )
    bias: float = _key(
        "float", 0.02, low=0.0, high=1.0, doc="concentrations shifted by up to bias, OD units"
    )


@_documented
@dataclass
class StainMatrixConfig:
    """``[augment.stain_matrix]``: Macenko stain-matrix jitter."""

    enabled: bool = _key("bool", True, doc=_ENABLED)
    p: float = _key("float", 0.3, low=0.0, high=1.0, doc=_P)
    matrix_sigma: float = _key(
        "float", 0.05, low=0.0, high=1.0, doc="standard deviation of the noise on each stain vector"
    )
    concentration_sigma: float = _key(
        "float", 0.15, low=0.0, high=0.9, doc="largest relative change of each stain's amount"
    )


@_documented
@dataclass
class FDAConfig:
    """``[augment.fda]``: Fourier domain adaptation towards other domains."""

    enabled: bool = _key("bool", True, doc=_ENABLED)
    p: float = _key("float", 0.5, low=0.0, high=1.0, doc=_P)
    beta: list[float] = _key(
        "range",
        [0.0, 0.01],
        low=0.0,
        high=0.49,
        doc="[low, high] low-frequency window half-width, fraction of the patch side",
    )
    bank_patches: int = _key("int", 16, low=1, doc="random patches per domain in the bank")


@_documented
@dataclass
class BlurConfig:
    """``[augment.blur]``: Gaussian blur."""

    enabled: bool = _key("bool", True, doc=_ENABLED)
    p: float = _key("float", 0.2, low=0.0, high=1.0, doc=_P)
    sigma: list[float] = _key(
        "range",
        [0.3, 1.2],
        low=0.0,
        high=10.0,
        doc="[low, high] standard deviation, px at the model's mpp",
    )


@_documented
@dataclass
class JPEGConfig:
    """``[augment.jpeg]``: JPEG compression."""

    enabled: bool = _key("bool", True, doc=_ENABLED)
    p: float = _key("float", 0.2, low=0.0, high=1.0, doc=_P)
    quality: list[float] = _key(
        "range", [60.0, 95.0], low=1.0, high=100.0, doc="[low, high] JPEG quality"
    )


@_documented
@dataclass
class AugmentConfig:
    """``[augment]``: one sub-table per operation, applied in this order."""

    flips: FlipsConfig = field(default_factory=FlipsConfig)
    zoom: ZoomConfig = field(default_factory=ZoomConfig)
    stain_matrix: StainMatrixConfig = field(default_factory=StainMatrixConfig)
    hed: HEDConfig = field(default_factory=HEDConfig)
    fda: FDAConfig = field(default_factory=FDAConfig)
    blur: BlurConfig = field(default_factory=BlurConfig)
    jpeg: JPEGConfig = field(default_factory=JPEGConfig)


ARCHITECTURES: tuple[Architecture, ...] = get_args(Architecture)


@_documented
@dataclass
class ModelConfig:
    """``[model]``: the network, its starting weights and its geometry."""

    architecture: Architecture = _key(
        "str",
        "point-heatmap-net",
        choices=ARCHITECTURES,
        doc="PointHeatmapNet, or the domain-adversarial RetinaNet of the MIDOG reference",
    )
    init: str = _key(
        "str", "scratch", doc="'scratch', 'demo', or a checkpoint / reference state-dict path"
    )
    mpp: float | None = _key(
        "float",
        None,
        low=0.05,
        high=10.0,
        doc="µm/px of patches and tiles (default: init's, else 0.25)",
    )
    patch_size: int = _key("int", 512, low=32, high=4096, doc="training patch side, px at mpp")
    tile_size: int | None = _key(
        "int",
        None,
        low=32,
        high=4096,
        doc="inference tile side, px at mpp (default: retinanet patch_size, else init's or 512)",
    )
    overlap: int | None = _key(
        "int",
        None,
        low=0,
        high=2048,
        doc="inference tile overlap, px at mpp (default: init's; scratch 64, retinanet 10 %)",
    )
    width: int = _key(
        "int", 16, low=4, high=256, doc="PointHeatmapNet channels of the first level (scratch)"
    )
    depth: int = _key(
        "int", 4, low=1, high=7, doc="PointHeatmapNet levels; the deepest at stride 2**depth px"
    )
    stride: int = _key(
        "int", 4, low=2, high=64, doc="PointHeatmapNet output stride, px (a power of two)"
    )
    blocks: int = _key("int", 1, low=0, high=8, doc="PointHeatmapNet residual blocks per level")
    sigma: float | None = _key(
        "float", None, low=0.5, high=64.0, doc="heatmap Gaussian sigma, px (default 2 x stride)"
    )
    lookalike_weight: float = _key(
        "float", 4.0, low=1.0, high=100.0, doc="heatmap loss weight at look-alikes"
    )
    lookalikes: Lookalikes = _key(
        "str",
        "negative",
        choices=get_args(Lookalikes),
        doc="retinanet: look-alikes as background or as class 2",
    )
    box_um: float = _key(
        "float", 12.5, low=1.0, high=100.0, doc="retinanet: box side around each point, µm"
    )


@_documented
@dataclass
class OptimizerConfig:
    """``[optimizer]``: the optimiser and its learning-rate schedule."""

    name: OptimizerName = _key(
        "str", "adamw", choices=get_args(OptimizerName), doc="AdamW, or SGD with momentum"
    )
    lr: float = _key("float", 1e-3, low=0.0, high=10.0, doc="learning rate (onecycle: its peak)")
    weight_decay: float = _key("float", 1e-4, low=0.0, high=1.0, doc="weight decay")
    momentum: float = _key("float", 0.9, low=0.0, high=1.0, doc="SGD momentum")
    schedule: Schedule = _key(
        "str",
        "onecycle",
        choices=get_args(Schedule),
        doc="learning rate over the steps of the run",
    )
    warmup_fraction: float = _key(
        "float", 0.1, low=0.0, high=0.9, doc="onecycle: share of the steps rising to lr"
    )
    grad_clip: float = _key("float", 0.0, low=0.0, doc="max gradient norm; 0 = off")


@_documented
@dataclass
class TrainSection:
    """``[train]``: epochs, batches, precision and reading."""

    epochs: int = _key("int", 100, low=1, doc="epochs of epoch_size patches")
    batch_size: int = _key("int", 12, low=1, doc="patches per optimiser step")
    precision: Precision = _key(
        "str",
        "auto",
        choices=get_args(Precision),
        doc="autocast on CUDA; the CPU stays fp32",
    )
    num_workers: int = _key("int", 4, low=1, high=64, doc="reader threads")
    max_open_slides: int = _key("int", 64, low=1, doc="slides the reader keeps open")
    prefetch: int = _key("int", 2, low=0, high=16, doc="batches read ahead")
    keep_checkpoints: KeepCheckpoints = _key(
        "str",
        "last",
        choices=get_args(KeepCheckpoints),
        doc="the training state of the last epoch only, or of every epoch too",
    )


@_documented
@dataclass
class ValidationConfig:
    """``[validation]``: how and how often the detector is scored during training."""

    every: int = _key("int", 1, low=1, doc="validate every n-th epoch (and the last)")
    tissue: ValidationTissue = _key(
        "str",
        "none",
        choices=get_args(ValidationTissue),
        doc="'none': whole images (ROIs); 'auto': detected tissue",
    )
    radius_um: float = _key(
        "float", 7.5, low=0.1, high=100.0, doc="a detection this close to a figure is a hit, µm"
    )
    min_score: float = _key(
        "float", 0.05, low=0.0, high=1.0, doc="candidates below are dropped; the lowest threshold"
    )
    batch_size: int | None = _key(
        "int", None, low=1, doc="tiles per forward pass (default: chosen by count_mitoses)"
    )


@_documented
@dataclass
class TestConfig:
    """``[test]``: the score on the test slides at the end."""

    evaluate: bool = _key("bool", True, doc="score the best detector on the test slides at the end")


@_documented
@dataclass
class TrainingConfig:
    """A whole training run (see the module docstring and ``docs/training.md``).

    Build it with :func:`load_config` from a TOML file or with :meth:`from_dict`;
    each section is a dataclass of its own, e.g. ``config.sampler.epoch_size``.
    """

    data: DataConfig
    name: str = _key("str", "detector", doc="name of the trained detector")
    out: str = _key("path", "runs/detector", doc="output folder")
    seed: int = _key("int", 0, low=0, doc="seed of the split, sampler, augmentation and network")
    device: str = _key("str", "auto", doc="torch device: 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'")
    training_data: str | None = _key("str", None, doc="what the data are, for the metadata")
    intended_use: str = _key(
        "str", "research only; not for diagnostic use", doc="stated in the metadata"
    )
    split: SplitConfig = field(default_factory=SplitConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainSection = field(default_factory=TrainSection)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    test: TestConfig = field(default_factory=TestConfig)

    @classmethod
    def from_dict(cls, table: Mapping[str, Any], base: str | Path | None = None) -> TrainingConfig:
        """Check ``table`` (as read from TOML) and build the configuration.

        Parameters
        ----------
        table : mapping
            Sections and keys.
        base : str or Path, optional
            Folder that relative paths are relative to (the config file's).

        Returns
        -------
        TrainingConfig
            The checked configuration, defaults filled in.

        Raises
        ------
        ConfigError
            Naming the first wrong key and what is allowed.

        Examples
        --------
        >>> config = TrainingConfig.from_dict(
        ...     {"data": {"annotations": "cells.csv", "format": "table"}, "seed": 3}
        ... )
        >>> config.seed, config.sampler.epoch_size, config.model.patch_size
        (3, 1000, 512)
        >>> TrainingConfig.from_dict({"data": {"annotations": "a.csv"}, "sampler": {"size": 9}})
        Traceback (most recent call last):
        ...
        wsimito.train.config.ConfigError: unknown key [sampler] size; ...
        """
        if "data" not in table:
            raise ConfigError("the config needs a [data] section with at least annotations = PATH")
        root = Path(base) if base is not None else None
        config: TrainingConfig = _build(cls, table, "", root)
        if root is not None:  # defaults are relative to the config's folder too
            if "out" not in table:
                config.out = str(root / config.out)
            if "images" not in table["data"]:
                config.data.images = str(root / config.data.images)
        _check_combinations(config)
        return config

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain data (for checkpoints and logs).

        Returns
        -------
        dict of str to object
            Sections as nested dicts of keys (:func:`dataclasses.asdict`).
        """
        return asdict(self)


def _where(prefix: str, key: str) -> str:
    return f"[{prefix}] {key}" if prefix else key


def _build(cls: type, table: Mapping[str, Any], prefix: str, base: Path | None) -> Any:
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{prefix}] must be a table of keys, got {table!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown key {_where(prefix, unknown[0])}; "
            f"{f'[{prefix}]' if prefix else 'the top level'} allows {', '.join(sorted(known))}"
        )
    values = {}
    for name, f in known.items():
        where = _where(prefix, name)
        if "kind" not in f.metadata:  # a sub-section
            sub = f"{prefix}.{name}" if prefix else name
            values[name] = _build(_SECTIONS[sub], table.get(name, {}), sub, base)
            continue
        if name not in table:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(f"{where} is required ({f.metadata['doc']})")
            continue
        values[name] = _value(table[name], f.metadata, where, base)
    return cls(**values)


def _value(raw: Any, meta: Mapping[str, Any], where: str, base: Path | None) -> Any:
    kind, choices, low, high = meta["kind"], meta["choices"], meta["low"], meta["high"]

    def number(v: object, integer: bool) -> float:
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, float))
            or (integer and not isinstance(v, int))
        ):
            raise ConfigError(
                f"{where} must be {'an integer' if integer else 'a number'}, got {v!r}"
            )
        if (low is not None and v < low) or (high is not None and v > high):
            bounds = (
                f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
            )
            raise ConfigError(f"{where} = {v!r} is out of range; allowed: {bounds}")
        return v

    if kind == "int":
        return int(number(raw, True))
    if kind == "float":
        return float(number(raw, False))
    if kind == "bool":
        if not isinstance(raw, bool):
            raise ConfigError(f"{where} must be true or false, got {raw!r}")
        return raw
    if kind in ("str", "path"):
        if not isinstance(raw, str):
            raise ConfigError(f"{where} must be a string, got {raw!r}")
        if choices and raw not in choices:
            raise ConfigError(
                f"{where} = {raw!r} is not allowed; use one of {', '.join(map(repr, choices))}"
            )
        if kind == "path" and base is not None and not Path(raw).expanduser().is_absolute():
            return str(base / raw)
        return str(Path(raw).expanduser()) if kind == "path" else raw
    if kind == "strs":
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise ConfigError(f"{where} must be a string or a list of strings, got {raw!r}")
        return list(items)
    if kind == "range":
        items = [raw, raw] if isinstance(raw, (int, float)) and not isinstance(raw, bool) else raw
        if not isinstance(items, list) or len(items) != 2:
            raise ConfigError(f"{where} must be a number or a [low, high] pair, got {raw!r}")
        lo, hi = (float(number(v, False)) for v in items)
        if lo > hi:
            raise ConfigError(f"{where} = {raw!r}: low must not exceed high")
        return [lo, hi]
    raise AssertionError(kind)


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "split": SplitConfig,
    "sampler": SamplerConfig,
    "augment": AugmentConfig,
    "augment.flips": FlipsConfig,
    "augment.zoom": ZoomConfig,
    "augment.stain_matrix": StainMatrixConfig,
    "augment.hed": HEDConfig,
    "augment.fda": FDAConfig,
    "augment.blur": BlurConfig,
    "augment.jpeg": JPEGConfig,
    "model": ModelConfig,
    "optimizer": OptimizerConfig,
    "train": TrainSection,
    "validation": ValidationConfig,
    "test": TestConfig,
}


def _check_combinations(config: TrainingConfig) -> None:
    s = config.sampler
    if s.mitosis + s.lookalike + s.random <= 0:
        raise ConfigError("[sampler] mitosis, lookalike and random are all 0; give one a share")
    m = config.model
    if m.stride & (m.stride - 1) or m.stride > 2**m.depth:
        raise ConfigError(
            f"[model] stride = {m.stride} must be a power of two of at most "
            f"2 ** depth = {2**m.depth}"
        )
    scratch_point_net = m.architecture == "point-heatmap-net" and m.init == "scratch"
    if scratch_point_net and m.patch_size % 2**m.depth:  # else build_model checks the init's
        raise ConfigError(
            f"[model] patch_size = {m.patch_size} must be a multiple of "
            f"2 ** depth = {2**m.depth} px"
        )
    if m.architecture == "retinanet-da":
        if m.patch_size % 32:
            raise ConfigError(
                f"[model] patch_size = {m.patch_size} must be a multiple of 32 px for retinanet-da"
            )
        if m.tile_size is not None and m.tile_size != m.patch_size:
            raise ConfigError(
                f"[model] tile_size = {m.tile_size} must equal patch_size = {m.patch_size} for "
                "retinanet-da (its pyramid levels are fixed by the input size)"
            )
    tile = m.tile_size or m.patch_size
    if m.overlap is not None and m.overlap >= tile:
        raise ConfigError(f"[model] overlap = {m.overlap} must be below the tile size ({tile} px)")
    split = config.split
    # with a held-out domain, train and test may share split values: the domain separates them
    other = set(split.validation) | (set() if split.hold_out else set(split.test))
    overlap = set(split.train) & other
    if overlap:
        raise ConfigError(
            f"[split] the value(s) {sorted(overlap)} are in train and in test or validation"
        )


def load_config(path: str | Path) -> TrainingConfig:
    """Read and check a TOML training configuration; relative paths are relative to its folder.

    Parameters
    ----------
    path : str or Path
        The TOML file (see ``docs/training.md``; ``wsimito train --describe``
        lists every key).

    Returns
    -------
    TrainingConfig
        The checked configuration, paths made absolute.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ConfigError
        When the TOML is malformed or a key or value is wrong (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training config at {path}")
    try:
        with open(path, "rb") as fh:
            table = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    try:
        return TrainingConfig.from_dict(table, base=path.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def describe() -> str:
    """List every section and key with its default and allowed values.

    Returns
    -------
    str
        One line per section and per key (``key = default (choices): doc``),
        as ``wsimito train --describe`` prints them.
    """
    lines = []
    for section, cls in [("", TrainingConfig), *_SECTIONS.items()]:
        lines.append(f"[{section}]" if section else "top level")
        for f in fields(cls):
            if "kind" not in f.metadata:
                continue
            default = _default(f)
            allowed = f" ({' | '.join(f.metadata['choices'])})" if f.metadata["choices"] else ""
            doc = f": {f.metadata['doc']}" if f.metadata["doc"] else ""
            lines.append(f"  {f.name} = {default}{allowed}{doc}")
    return "\n".join(lines)


__all__ = ["ConfigError", "TrainingConfig", "describe", "load_config"]
