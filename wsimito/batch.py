"""Many slides into one output folder: output names, the run manifest, resume, the summary.

Shared by :func:`wsimito.count_many` (a Dask cluster) and ``wsimito count`` (in
process, one slide after another): both hand each slide to
:func:`count_slide` and record what comes back through a :class:`BatchRun`.

An output folder holds one run:

- per slide ``<stem>-<hash>.geojson`` (QuPath), ``<stem>-<hash>.csv`` (one row
  per counted figure) and ``<stem>-<hash>.json`` (the slide's summary), where
  ``<hash>`` is 8 hex digits of the SHA-256 of the slide's absolute path, so
  two slides with the same file name in different folders keep their own
  outputs and a rerun writes to the same names (:func:`output_name`);
- ``wsimito-manifest.json``: the settings, package versions and, per slide,
  its status (``done``, ``failed`` or ``pending``), error, timing, warnings
  and output files with their SHA-256. It is rewritten atomically after
  every slide, and a slide's outputs are referenced only once all of them
  are complete, so a crash leaves a consistent manifest;
- ``summary.csv`` and ``summary.parquet``: one row per slide of the manifest.

A rerun with the same settings skips the slides that are done and whose
outputs are intact (same SHA-256) and counts the rest. A rerun with other
settings refuses (:class:`BatchSettingsError`) unless ``overwrite``, which
removes the earlier run's outputs first: results of two runs are never mixed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import glob
import hashlib
import json
import math
import os
import pickle
import platform
import re
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict, cast, overload

from .errors import WsimitoError
from .io.atomic import atomic_path, atomic_write, remove_stale_temporaries
from .io.tables import write_rows

if TYPE_CHECKING:
    import pandas
    import torch

    from .detect import Detector
    from .pipeline import StainTransform
    from .reader import OnError
    from .result import MitosisResult
    from .slide.open import BackendName

MANIFEST_NAME = "wsimito-manifest.json"
SUMMARY_CSV = "summary.csv"
SUMMARY_PARQUET = "summary.parquet"
LOCK_NAME = ".wsimito-run.lock"
MANIFEST_FORMAT = "wsimito-batch-manifest"
MANIFEST_VERSION = 1

#: File suffixes taken from a folder given as input (a ``.zarr`` folder is one slide).
SLIDE_SUFFIXES = (
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".mrxs",
    ".scn",
    ".vms",
    ".vmu",
    ".bif",
    ".dcm",
    ".qptiff",
    ".zarr",
)


class BatchOptions(TypedDict, total=False):
    """The keyword arguments a batch passes to :func:`wsimito.count_mitoses` for every slide.

    Every key is optional; a missing key takes :func:`wsimito.count_mitoses`'s
    default. ``backend`` goes to :func:`wsimito.open_slide` instead.

    Attributes
    ----------
    tissue : {"auto"} or None
        ``"auto"`` analyses each slide's detected tissue, ``None`` the whole image.
    threshold : float or None
        Score threshold in [0, 1] for the count (default: the detector's).
    batch_size : int or None
        Tiles per forward pass (default: chosen from free memory on CUDA, else 8).
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
    stain : StainTransform, callable or None
        A picklable stain transform applied on the device to each uint8 batch.
    num_workers : int or None
        Reader threads per slide (default: up to 4).
    on_error : {"raise", "skip"}
        A tile that cannot be read: fail the slide, or leave it out of the
        analysed tissue and mark the result partial.
    mpp : float or None
        Level-0 resolution, µm/px, for files that state none (a file's own wins).
    merge_radius_um : float or None
        Radius, µm, of the duplicate check across tiles (default: the detector's).
    backend : {"auto", "openslide", "tiffslide", "zarr", "array"}
        The slide reader.
    """

    tissue: Literal["auto"] | None
    threshold: float | None
    batch_size: int | None
    device: str | torch.device
    stain: StainTransform | Callable[[torch.Tensor], torch.Tensor] | None
    num_workers: int | None
    on_error: OnError
    mpp: float | None
    merge_radius_um: float | None
    backend: BackendName


#: Keyword arguments of :func:`wsimito.count_mitoses` a batch accepts, besides
#: ``backend`` (for :func:`wsimito.open_slide`): the keys of :class:`BatchOptions`,
#: and ``progress`` (each slide's tile progress bar, for :func:`count_slide`).
BATCH_OPTIONS: tuple[str, ...] = (*BatchOptions.__annotations__, "progress")
#: Columns of the summary table, in order.
SUMMARY_COLUMNS = (
    "slide",
    "name",
    "status",
    "error",
    "count",
    "tissue_area_mm2",
    "density_per_mm2",
    "hotspot_count",
    "hotspot_count_per_10hpf",
    "hotspot_whole_tissue",
    "candidates",
    "threshold",
    "detector",
    "weights_sha256",
    "mpp",
    "mpp_file",
    "mpp_given",
    "seconds",
    "peak_rss_mib",
    "partial",
    "skipped_tiles",
    "skipped_area_mm2",
    "warnings",
    "geojson",
    "csv",
    "json",
)
_NUMERIC = {
    "count": "Int64",
    "hotspot_count": "Int64",
    "candidates": "Int64",
    "skipped_tiles": "Int64",
    "tissue_area_mm2": "float64",
    "density_per_mm2": "float64",
    "hotspot_count_per_10hpf": "float64",
    "threshold": "float64",
    "mpp": "float64",
    "mpp_file": "float64",
    "mpp_given": "float64",
    "seconds": "float64",
    "peak_rss_mib": "float64",
    "skipped_area_mm2": "float64",
    "partial": "boolean",
    "hotspot_whole_tissue": "boolean",
}


class BatchError(WsimitoError):
    """A batch cannot start: a bad input list, output folder or option."""


class BatchSettingsError(BatchError, ValueError):
    """The output folder holds a run with other settings."""


class OutputFolderError(BatchError, OSError):
    """The output folder cannot be created or written, or another run holds it."""


# -- names and inputs ------------------------------------------------------------------
def output_name(path: str | os.PathLike[str]) -> str:
    """The stem of a slide's output files: ``<stem>-<8 hex digits>``.

    The hex digits are the start of the SHA-256 of the absolute, normalised
    path, so the name is the same on every run and differs for two files of
    the same name in different folders. Characters other than letters,
    digits, ``.``, ``_`` and ``-`` become ``_``.

    Parameters
    ----------
    path : str or os.PathLike
        The slide's path.

    Returns
    -------
    str
        E.g. ``"CMU-1-a3f09c12"`` for ``/data/CMU-1.svs``.
    """
    absolute = os.path.abspath(os.fspath(path))
    stem = Path(absolute.rstrip("/")).name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    else:
        stem = Path(stem).stem or stem
    stem = re.sub(r"[^\w.-]+", "_", stem, flags=re.ASCII).strip("._-")[:80] or "slide"
    digest = hashlib.sha256(absolute.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{stem}-{digest}"


def find_slides(items: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Absolute paths of the slides named by files, folders and glob patterns.

    A file is taken as given; a folder gives the slide files directly inside
    it (suffixes :data:`SLIDE_SUFFIXES`, hidden files left out, ``.zarr``
    folders as one slide each); anything else is a glob pattern (``*``,
    ``?``, ``[...]``, ``**``). Order is kept and duplicates are dropped.

    Parameters
    ----------
    items : iterable of str or os.PathLike
        Files, folders and patterns.

    Returns
    -------
    list of str
        Absolute paths.

    Raises
    ------
    BatchError
        An item is neither an existing path nor a pattern that matches a slide,
        or a folder holds no slide file.
    """
    found: dict[str, None] = {}
    for item in items:
        text = os.fspath(item)
        path = Path(text).expanduser()
        if path.is_dir() and path.suffix.lower() != ".zarr":
            inside = sorted(
                p
                for p in path.iterdir()
                if not p.name.startswith(".") and p.suffix.lower() in SLIDE_SUFFIXES
            )
            if not inside:
                raise BatchError(
                    f"folder {text} holds no slide file ({', '.join(SLIDE_SUFFIXES)}); "
                    "name the files or a pattern instead"
                )
            found.update((os.path.abspath(p), None) for p in inside)
        elif path.exists():
            found[os.path.abspath(path)] = None
        elif glob.has_magic(text):
            matches = sorted(
                m
                for m in glob.glob(os.path.expanduser(text), recursive=True)
                if not Path(m).is_dir() or m.lower().endswith(".zarr")
            )
            if not matches:
                raise BatchError(f"no file matches the pattern {text}")
            found.update((os.path.abspath(m), None) for m in matches)
        else:
            raise BatchError(f"{text}: no such file or folder")
    return list(found)


# -- settings ----------------------------------------------------------------------------
def describe(value: Any) -> Any:
    """A JSON-friendly, comparable description of a setting.

    Plain values stay as they are; an object is described by its class and the
    SHA-256 of its pickle (the bytes that are sent to the workers).

    Parameters
    ----------
    value : object
        A setting: a number, text, path, sequence or any picklable object.

    Returns
    -------
    object
        ``value`` itself, an absolute path, a list, or
        ``{"object": "module.Class", "pickle_sha256": "..."}``.

    Raises
    ------
    TypeError
        An object that does not pickle (it could not reach the workers either).
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.path.abspath(os.fspath(value))
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    try:
        digest = hashlib.sha256(pickle.dumps(value, protocol=4)).hexdigest()
    except Exception as exc:
        raise TypeError(
            f"a {kind} cannot be sent to other processes (it does not pickle: {exc}); "
            "pass a registry name or a weights path instead of the object"
        ) from exc
    return {"object": kind, "pickle_sha256": digest}


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    chunk : int
        Bytes read at a time.

    Returns
    -------
    str
        64 hex digits.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@overload
def detector_spec(detector: str | os.PathLike[str]) -> str: ...
@overload
def detector_spec(detector: Detector) -> Detector: ...
def detector_spec(detector: Detector | str | os.PathLike[str]) -> Detector | str:
    """What a worker needs to load ``detector``.

    Parameters
    ----------
    detector : str, os.PathLike or Detector
        A registry name, a weights path or URL, or a detector object.

    Returns
    -------
    str or Detector
        The registry name or URL as given, a path made absolute (workers may
        run in another folder), or the object itself.
    """
    if isinstance(detector, (str, os.PathLike)):
        text = os.fspath(detector)
        if "://" in text:
            return text
        from .models.registry import list_detectors

        if text in list_detectors():
            return text
        return os.path.abspath(os.path.expanduser(text))
    return detector


def batch_settings(
    detector: Detector | str | os.PathLike[str], loaded: Detector, options: Mapping[str, Any]
) -> dict[str, Any]:
    """The settings that decide what a batch counts (compared on every rerun).

    Parameters
    ----------
    detector : str, os.PathLike or Detector
        What the caller gave (see :func:`detector_spec`).
    loaded : Detector
        The detector loaded from it, for its name, resolution and metadata.
    options : mapping of str to object
        The batch's keyword arguments for :func:`wsimito.count_mitoses`
        (:class:`BatchOptions`).

    Returns
    -------
    dict of str to object
        JSON-friendly settings: detector, its weights' SHA-256, resolution
        (``detector_mpp``, µm/px), tile size and overlap (px at that mpp),
        threshold, tissue mode, ``mpp`` (µm/px), backend, on_error,
        ``merge_radius_um`` (µm), stain and the wsimito version.
    """
    from . import __version__

    spec = detector_spec(detector)
    meta = dict(getattr(loaded, "metadata", {}) or {})
    weights = meta.get("weights_sha256")
    if weights is None and isinstance(spec, str) and "://" not in spec:
        weights = _weights_file_sha256(spec)
    threshold = options.get("threshold")
    return {
        "detector": describe(spec),
        "detector_name": str(getattr(loaded, "name", type(loaded).__name__)),
        "weights_sha256": weights,
        "detector_mpp": float(loaded.mpp),
        "tile_size": int(loaded.tile_size),
        "overlap": int(loaded.overlap),
        "threshold": float(loaded.threshold if threshold is None else threshold),
        "tissue": "whole image" if options.get("tissue", "auto") is None else "auto",
        "mpp": options.get("mpp"),
        "backend": options.get("backend", "auto"),
        "on_error": options.get("on_error", "raise"),
        "merge_radius_um": options.get("merge_radius_um"),
        "stain": describe(options.get("stain")),
        "wsimito_version": __version__,
    }


def _weights_file_sha256(spec: str) -> str | None:
    from .models.registry import get_weights, list_detectors

    entry = get_weights(spec) if spec in list_detectors() else None
    path = entry.path if entry is not None else Path(spec)
    if path is None or not Path(path).is_file():
        return entry.sha256 if entry is not None else None
    return file_sha256(path)


def check_options(options: Mapping[str, Any]) -> BatchOptions:
    """The batch's keyword arguments for :func:`wsimito.count_mitoses`, checked up front.

    Parameters
    ----------
    options : mapping of str to object
        Keywords from :data:`BATCH_OPTIONS` (see :class:`BatchOptions` for
        their types and units).

    Returns
    -------
    BatchOptions
        A copy of ``options``.

    Raises
    ------
    TypeError
        An unknown keyword.
    ValueError
        A value out of range (the message names it), ``tissue`` other than
        ``"auto"`` or ``None``, or an unknown ``backend``.
    """
    from .pipeline import _check_parameters
    from .slide.open import BACKENDS

    unknown = sorted(set(options) - set(BATCH_OPTIONS))
    if unknown:
        raise TypeError(
            f"unknown keyword(s) {', '.join(unknown)}; a batch accepts {', '.join(BATCH_OPTIONS)}"
        )
    checked = dict(options)
    tissue = checked.get("tissue", "auto")
    if not (tissue is None or (isinstance(tissue, str) and tissue == "auto")):
        raise ValueError(
            f"tissue={tissue!r}: each slide of a batch is analysed in its own tissue; use "
            "'auto' (detected) or None (the whole image)"
        )
    backend = checked.get("backend", "auto")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    _check_parameters(
        checked.get("threshold"),
        checked.get("batch_size"),
        checked.get("num_workers"),
        checked.get("on_error", "raise"),
        checked.get("merge_radius_um"),
        checked.get("mpp"),
    )
    return cast("BatchOptions", checked)


def package_versions() -> dict[str, str | None]:
    """The versions of Python, wsimito and the packages that shape a count.

    Returns
    -------
    dict of str to str or None
        Package name to version (``None`` when not installed).
    """
    from importlib import metadata

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in (
        "wsimito",
        "numpy",
        "torch",
        "openslide-python",
        "openslide-bin",
        "tiffslide",
        "shapely",
        "dask",
        "distributed",
        "pandas",
        "pyarrow",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    if versions["wsimito"] is None:
        from . import __version__

        versions["wsimito"] = __version__
    return versions


# -- one slide -------------------------------------------------------------------------------
#: Detectors loaded in this process, keyed by (spec, device): each worker loads once.
_DETECTORS: dict[tuple[str, str], Detector] = {}


def cached_detector(spec: Detector | str, device: str | torch.device = "auto") -> Detector:
    """The detector for ``spec`` on ``device``, loaded once per process and then reused.

    Parameters
    ----------
    spec : str or Detector
        From :func:`detector_spec`; a detector object is returned as it is.
    device : str or torch.device
        ``"auto"`` or a torch device (name).

    Returns
    -------
    Detector
        The loaded detector (the same object on every call with the same
        ``spec`` and ``device`` in this process).
    """
    if not isinstance(spec, str):
        return spec
    key = (spec, str(device))
    if key not in _DETECTORS:
        from .models import load_detector

        _DETECTORS[key] = load_detector(spec, device=device)
    return _DETECTORS[key]


@dataclass(frozen=True)
class SlideJob:
    """One slide of a batch: its absolute path and the stem of its output files.

    Attributes
    ----------
    path : str
        The slide's absolute path.
    name : str
        The stem of its output files (:func:`output_name`).
    """

    path: str
    name: str


def count_slide(
    job: SlideJob,
    out_dir: str,
    detector: Detector | str,
    options: Mapping[str, Any],
    settings_key: str,
    *,
    torch_threads: int | None = None,
) -> dict[str, Any]:
    """Count one slide of a batch and write its outputs; never raises for the slide's errors.

    Runs where the slide is counted (a Dask worker, or this process). The
    detector is loaded once per process (:func:`cached_detector`). The
    GeoJSON, the per-detection CSV and the summary JSON are each written
    atomically; the record lists them with their SHA-256.

    Parameters
    ----------
    job : SlideJob
        The slide and its output name.
    out_dir : str
        Output folder (shared by every worker).
    detector : str or Detector
        A spec from :func:`detector_spec`, or a detector object.
    options : mapping of str to object
        Checked keyword arguments (:func:`check_options`, :class:`BatchOptions`).
    settings_key : str
        The run's settings key, stored in the slide's summary JSON.
    torch_threads : int, optional
        Threads for torch in this process (a worker's share of its machine's
        cores); left as they are when ``None``.

    Returns
    -------
    dict of str to object
        The manifest record: ``status`` ("done" or "failed"), ``error`` and
        ``error_type``, ``seconds`` (wall time), ``started``, ``finished`` (ISO
        8601 UTC), ``host``,
        ``pid``, ``peak_rss_mib`` (the process's peak resident memory so far,
        MiB), ``warnings``, ``outputs`` and the slide's ``summary`` row.
    """
    from .pipeline import count_mitoses
    from .slide import open_slide

    start = time.perf_counter()
    record: dict[str, Any] = {
        "path": job.path,
        "name": job.name,
        "started": _now(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    if torch_threads:
        import torch

        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(int(torch_threads))
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            det = cached_detector(detector, options.get("device", "auto"))
            kwargs = {k: v for k, v in options.items() if k not in ("backend", "mpp", "progress")}
            slide = open_slide(
                job.path, backend=options.get("backend", "auto"), mpp=options.get("mpp")
            )
            with slide:
                result = count_mitoses(
                    slide, det, progress=bool(options.get("progress", False)), **kwargs
                )
            outputs = _write_outputs(result, job, Path(out_dir), settings_key, caught)
        record.update(status="done", error=None, error_type=None, outputs=outputs)
        record["summary"] = _json_safe(result.summary())
    except Exception as exc:  # a slide's failure is recorded; the batch goes on
        record.update(
            status="failed",
            error=f"{type(exc).__name__}: {exc}",
            error_type=type(exc).__name__,
            outputs={},
            summary=None,
        )
    record["warnings"] = _warning_lines(caught)
    record["seconds"] = time.perf_counter() - start
    record["peak_rss_mib"] = peak_rss_mib()
    record["finished"] = _now()
    return record


def peak_rss_mib() -> float | None:
    """Peak resident memory of this process so far, MiB (``None`` where unknown).

    On Linux it is ``VmHWM`` of ``/proc/self/status``: the peak of this
    process's own memory. ``getrusage`` is used elsewhere; on Linux it would
    carry over the parent's peak into a worker started with fork and exec.

    Returns
    -------
    float or None
        MiB (2**20 bytes), or ``None`` where the platform reports no peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


#: Warnings about the code rather than the slide (a ResourceWarning may come from
#: an earlier slide's handles being collected), left out of the records.
_NOT_FOR_USERS = (DeprecationWarning, PendingDeprecationWarning, ResourceWarning)


def _warning_lines(caught: Sequence[warnings.WarningMessage]) -> list[str]:
    lines: dict[str, None] = {}
    for w in caught:
        text = " ".join(str(w.message).split())
        if issubclass(w.category, _NOT_FOR_USERS):
            continue
        lines[text] = None
    return list(lines)


def _write_outputs(
    result: MitosisResult,
    job: SlideJob,
    out_dir: Path,
    settings_key: str,
    caught: Sequence[warnings.WarningMessage],
) -> dict[str, dict[str, str]]:
    geojson = out_dir / f"{job.name}.geojson"
    table = out_dir / f"{job.name}.csv"
    summary = out_dir / f"{job.name}.json"
    result.to_geojson(geojson)
    result.to_csv(table)
    document = {
        "format": "wsimito-slide-summary",
        "slide_path": job.path,
        "output_name": job.name,
        "settings_key": settings_key,
        "summary": result.summary(),
        "run": result.run_metadata(),
        "warnings": _warning_lines(caught),
    }
    with atomic_write(summary) as fh:
        json.dump(_json_safe(document), fh, indent=1, ensure_ascii=False, allow_nan=False)
    return {
        kind: {"file": path.name, "sha256": file_sha256(path)}
        for kind, path in (("geojson", geojson), ("csv", table), ("json", summary))
    }


def _json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as ``None`` and numpy scalars as Python ones."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        with contextlib.suppress(TypeError, ValueError):
            value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


# -- the run -----------------------------------------------------------------------------
@dataclass
class BatchResult:
    """What a batch produced.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per slide of the run (:data:`SUMMARY_COLUMNS`): slide path,
        status, error, count, analysed tissue area (mm²), density (per mm²),
        hotspot count, detector and weights hash, seconds, peak memory of the
        process that counted it (MiB), partial result and
        skipped area (mm²), warnings, and the output files (absolute paths).
    manifest : Path
        The run manifest (JSON).
    summary_csv, summary_parquet : Path or None
        The summary table as CSV and as Parquet (``None`` without pyarrow).
    counted : list of str
        Slides counted by this call (done or failed).
    skipped : list of str
        Slides left alone because an earlier call of the same run finished them.
    interrupted : bool
        The call was interrupted (Ctrl-C) before every slide was counted.
    """

    table: pandas.DataFrame
    manifest: Path
    summary_csv: Path
    summary_parquet: Path | None
    counted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def failed(self) -> list[str]:
        """Paths of the slides whose status is ``failed``."""
        return [str(s) for s in self.table.loc[self.table["status"] == "failed", "slide"]]

    @property
    def ok(self) -> bool:
        """True when every slide of the run is done."""
        return bool((self.table["status"] == "done").all())

    def __repr__(self) -> str:
        status = self.table["status"].value_counts().to_dict()
        parts = ", ".join(f"{n} {s}" for s, n in sorted(status.items()))
        return (
            f"<BatchResult {len(self.table)} slides ({parts}); counted now {len(self.counted)}, "
            f"already done {len(self.skipped)}; manifest {self.manifest}>"
        )


class BatchRun:
    """An output folder holding one run: manifest, resume, records and summary tables.

    Create it with :meth:`open`; it holds a lock file in the folder until
    :meth:`close`, so two runs never write into one folder at once.

    Parameters
    ----------
    out_dir : Path
        The output folder.
    manifest : dict
        The manifest, as written to ``wsimito-manifest.json``.
    todo : list of SlideJob
        Slides to count in this call.
    skipped : list of str
        Slides already done with intact outputs.
    """

    def __init__(
        self, out_dir: Path, manifest: dict[str, Any], todo: list[SlideJob], skipped: list[str]
    ) -> None:
        self.out_dir = out_dir
        self.manifest = manifest
        self.todo = todo
        self.skipped = skipped
        self.counted: list[str] = []
        self._locked = True

    @property
    def settings_key(self) -> str:
        """SHA-256 of the canonical JSON of the settings."""
        return str(self.manifest["settings_key"])

    @property
    def manifest_path(self) -> Path:
        """The manifest file, ``<out_dir>/wsimito-manifest.json``."""
        return self.out_dir / MANIFEST_NAME

    @classmethod
    def open(
        cls,
        slides: Sequence[str],
        out_dir: str | os.PathLike[str],
        settings: Mapping[str, Any],
        *,
        runtime: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> BatchRun:
        """Prepare ``out_dir`` for counting ``slides`` with ``settings``.

        Parameters
        ----------
        slides : sequence of str
            Absolute slide paths (see :func:`find_slides`).
        out_dir : str or os.PathLike
            Output folder; created when missing.
        settings : mapping
            From :func:`batch_settings`.
        runtime : mapping, optional
            How the run is executed (device, workers, ...): recorded, not compared.
        overwrite : bool
            Replace a run with other settings in ``out_dir``: its outputs and
            manifest are removed first.

        Returns
        -------
        BatchRun
            The run, holding the folder's lock, with its manifest written
            (every slide to count marked ``pending``).

        Raises
        ------
        OutputFolderError
            ``out_dir`` is a file, cannot be created or written, or another
            run is writing into it.
        BatchSettingsError
            ``out_dir`` holds a run with other settings and ``overwrite`` is False.
        """
        out = _prepare_folder(out_dir)
        _lock(out)
        try:
            return cls._start(slides, out, dict(settings), dict(runtime or {}), overwrite)
        except BaseException:
            _unlock(out)
            raise

    @classmethod
    def _start(
        cls,
        slides: Sequence[str],
        out: Path,
        settings: dict[str, Any],
        runtime: dict[str, Any],
        overwrite: bool,
    ) -> BatchRun:
        key = settings_key(settings)
        path = out / MANIFEST_NAME
        old = _read_manifest(path)
        if old is not None and old.get("settings_key") != key:
            if not overwrite:
                raise BatchSettingsError(
                    f"{out} holds a run with other settings ({_differences(old, settings)}); "
                    "write to another folder, or replace that run with overwrite=True "
                    "(--overwrite on the command line)"
                )
            _remove_run(out, old)
            old = None
        entries: dict[str, dict[str, Any]] = dict(old["slides"]) if old is not None else {}
        todo, skipped = [], []
        for slide in slides:
            entry = entries.get(slide)
            if entry is not None and entry.get("status") == "done" and _intact(out, entry):
                skipped.append(slide)
                continue
            name = output_name(slide)
            todo.append(SlideJob(slide, name))
            entries[slide] = {
                "path": slide,
                "name": name,
                "status": "pending",
                "error": None,
                "attempts": int((entry or {}).get("attempts", 0)),
            }
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "settings_key": key,
            "settings": settings,
            "runtime": runtime,
            "versions": package_versions(),
            "created": old["created"] if old is not None else _now(),
            "updated": _now(),
            "counting_rule": _counting_rule(),
            "slides": entries,
        }
        run = cls(out, manifest, todo, skipped)
        run.save()
        return run

    def record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Store a slide's record from :func:`count_slide` and rewrite the manifest.

        A ``done`` record whose outputs no longer match their SHA-256 is stored
        as failed.

        Parameters
        ----------
        record : mapping of str to object
            From :func:`count_slide` or :func:`failure_record`.

        Returns
        -------
        dict of str to object
            The manifest entry as stored.
        """
        path = str(record["path"])
        entry = dict(self.manifest["slides"].get(path, {}))
        attempts = int(entry.get("attempts", 0)) + 1
        entry.update(record)
        entry["attempts"] = attempts
        if entry.get("status") == "done" and not _intact(self.out_dir, entry):
            entry.update(
                status="failed",
                error="the outputs were changed or removed while the run went on; count again",
                error_type="OutputChanged",
            )
        self.manifest["slides"][path] = entry
        self.counted.append(path)
        self.save()
        return entry

    def save(self) -> None:
        """Write the manifest atomically."""
        self.manifest["updated"] = _now()
        with atomic_write(self.manifest_path) as fh:
            json.dump(_json_safe(self.manifest), fh, indent=1, ensure_ascii=False)

    def table(self) -> pandas.DataFrame:
        """The summary table: one row per slide of the manifest.

        Returns
        -------
        pandas.DataFrame
            The columns :data:`SUMMARY_COLUMNS`; areas in mm², densities per
            mm², ``mpp`` in µm/px, ``seconds`` of wall time, ``peak_rss_mib`` in MiB.
        """
        import pandas

        frame = pandas.DataFrame(self._rows(), columns=list(SUMMARY_COLUMNS))
        for column, dtype in _NUMERIC.items():
            frame[column] = frame[column].astype(dtype)
        return frame

    def _rows(self) -> list[dict[str, Any]]:
        return [_row(entry, self.out_dir) for entry in self.manifest["slides"].values()]

    def finish(self, *, interrupted: bool = False) -> BatchResult:
        """Write the summary CSV and Parquet, release the folder and return the result.

        Parameters
        ----------
        interrupted : bool
            The call was interrupted before every slide was counted (recorded
            in the result).

        Returns
        -------
        BatchResult
            The summary table, the manifest and summary files, and the slides
            counted and skipped by this call.
        """
        try:
            frame = self.table()
            csv_path = write_rows(self.out_dir / SUMMARY_CSV, self._rows(), SUMMARY_COLUMNS)
            parquet = _write_parquet(frame, self.out_dir / SUMMARY_PARQUET)
            self.save()
        finally:
            self.close()
        return BatchResult(
            table=frame,
            manifest=self.manifest_path,
            summary_csv=csv_path,
            summary_parquet=parquet,
            counted=list(self.counted),
            skipped=list(self.skipped),
            interrupted=interrupted,
        )

    def close(self) -> None:
        """Release the folder's lock (the manifest stays as last saved)."""
        if self._locked:
            _unlock(self.out_dir)
            self._locked = False

    def run(
        self,
        records: Iterator[dict[str, Any]],
        *,
        progress: bool = True,
        on_slide: Callable[[dict[str, Any]], None] | None = None,
    ) -> BatchResult:
        """Store each record as it arrives, with a progress view of the whole batch.

        On Ctrl-C the manifest stays as last written (every finished slide
        recorded, the others pending), the summary is written and
        :class:`KeyboardInterrupt` propagates.

        Parameters
        ----------
        records : iterator of dict
            One record per slide of :attr:`todo` (from :func:`count_slide` or
            :func:`failure_record`), in any order.
        progress : bool
            Show slides done, failed and slides per hour.
        on_slide : callable, optional
            Called with each stored manifest entry.

        Returns
        -------
        BatchResult
            As from :meth:`finish`, once every record is stored.

        Raises
        ------
        KeyboardInterrupt
            On Ctrl-C, after the summary is written.
        """
        from .progress import Progress

        total = len(self.todo)
        failed = 0
        label = f"counting {total} slide" + ("" if total == 1 else "s")
        if self.skipped:
            label += f" ({len(self.skipped)} already done)"
        try:
            with Progress(
                total, label, unit="slides", rate_per="h", enabled=progress and total > 0
            ) as bar:
                for record in records:
                    entry = self.record(record)
                    failed += entry.get("status") != "done"
                    bar.advance(1, extra=f"{failed} failed" if failed else "")
                    if on_slide is not None:
                        on_slide(entry)
        except KeyboardInterrupt:
            self.finish(interrupted=True)
            raise
        except BaseException:
            self.close()
            raise
        return self.finish()


def settings_key(settings: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``settings`` (sorted keys).

    Parameters
    ----------
    settings : mapping of str to object
        From :func:`batch_settings`.

    Returns
    -------
    str
        64 hex digits; equal for settings that are equal as JSON.

    Examples
    --------
    >>> a = settings_key({"threshold": 0.5, "mpp": None})
    >>> a == settings_key({"mpp": None, "threshold": 0.5})
    True
    >>> len(settings_key({}))
    64
    """
    text = json.dumps(_json_safe(dict(settings)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_sequential(
    run: BatchRun, detector: Detector | str, options: Mapping[str, Any]
) -> Iterator[dict[str, Any]]:
    """Count the slides of ``run`` one after another in this process.

    Parameters
    ----------
    run : BatchRun
        The run; its :attr:`~BatchRun.todo` slides are counted in order.
    detector : str or Detector
        From :func:`detector_spec`.
    options : mapping of str to object
        Checked keyword arguments (:func:`check_options`, :class:`BatchOptions`).

    Yields
    ------
    dict
        Each slide's record from :func:`count_slide`.
    """
    for job in run.todo:
        yield count_slide(job, str(run.out_dir), detector, options, run.settings_key)


def failure_record(job: SlideJob, error: str, error_type: str) -> dict[str, Any]:
    """The record of a slide that failed outside :func:`count_slide` (e.g. its worker died).

    Parameters
    ----------
    job : SlideJob
        The slide.
    error : str
        What happened, for the manifest and the summary.
    error_type : str
        The exception's class name.

    Returns
    -------
    dict of str to object
        A record for :meth:`BatchRun.record`.
    """
    return {
        "path": job.path,
        "name": job.name,
        "status": "failed",
        "error": error,
        "error_type": error_type,
        "outputs": {},
        "summary": None,
        "warnings": [],
        "seconds": None,
        "finished": _now(),
    }


def _counting_rule() -> str:
    from .result import COUNTING_RULE

    return COUNTING_RULE


def _row(entry: Mapping[str, Any], out: Path) -> dict[str, Any]:
    summary = entry.get("summary") or {}
    outputs = entry.get("outputs") or {}
    row = {key: summary.get(key) for key in SUMMARY_COLUMNS if key in summary}
    row.update(
        slide=entry.get("path"),
        name=entry.get("name"),
        status=entry.get("status"),
        error=entry.get("error"),
        seconds=entry.get("seconds"),
        peak_rss_mib=entry.get("peak_rss_mib"),
        warnings=" | ".join(entry.get("warnings") or []) or None,
    )
    for kind in ("geojson", "csv", "json"):
        file = (outputs.get(kind) or {}).get("file")
        row[kind] = os.path.abspath(out / file) if file else None
    if summary and row.get("density_per_mm2") is None:
        row["density_per_mm2"] = math.nan
    return row


def _write_parquet(frame: pandas.DataFrame, path: Path) -> Path | None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        warnings.warn(
            "summary.parquet was not written: install pyarrow (pip install 'wsimito[distributed]')",
            stacklevel=3,
        )
        return None
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return path


def _intact(out: Path, entry: Mapping[str, Any]) -> bool:
    """Whether every output of a done entry exists with its recorded SHA-256."""
    outputs = entry.get("outputs") or {}
    if set(outputs) != {"geojson", "csv", "json"}:
        return False
    for info in outputs.values():
        path = out / str(info.get("file", ""))
        if not path.is_file() or file_sha256(path) != info.get("sha256"):
            return False
    return True


def _differences(old: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    before = old.get("settings") or {}
    changed = [
        f"{key}: {before.get(key)!r} -> {settings.get(key)!r}"
        for key in sorted(set(before) | set(settings))
        if before.get(key) != _json_safe(settings.get(key))
    ]
    return "; ".join(changed) if changed else "a different settings key"


def _read_manifest(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BatchError(
            f"{path} is not a readable wsimito manifest ({exc}); move it away or write to "
            "another folder"
        ) from exc
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise BatchError(
            f"{path} is not a wsimito manifest; move it away or write to another folder"
        )
    return data


def _remove_run(out: Path, manifest: Mapping[str, Any]) -> None:
    """Remove an earlier run's outputs, summary tables and manifest (for ``overwrite``)."""
    for entry in (manifest.get("slides") or {}).values():
        name = entry.get("name")
        for suffix in (".geojson", ".csv", ".json"):
            if name:
                (out / f"{name}{suffix}").unlink(missing_ok=True)
    for name in (SUMMARY_CSV, SUMMARY_PARQUET, MANIFEST_NAME):
        (out / name).unlink(missing_ok=True)


def _prepare_folder(out_dir: str | os.PathLike[str]) -> Path:
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"the output {out} is a file, not a folder; give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".wsimito-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputFolderError(
            f"cannot write to the output folder {out} ({reason}); choose another folder"
        ) from exc
    remove_stale_temporaries(out / MANIFEST_NAME)
    return out


def _lock(out: Path) -> None:
    lock = out / LOCK_NAME
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": _now()}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                holder = {}
            from .io.atomic import _pid_alive

            same_host = holder.get("host") == me["host"]
            if same_host and not _pid_alive(int(holder.get("pid", 0))):
                lock.unlink(missing_ok=True)  # left by a run that was killed
                continue
            where = f"pid {holder.get('pid')} on {holder.get('host')}"
            raise OutputFolderError(
                f"another wsimito run ({where}) is writing into {out}; wait for it, or use "
                f"another folder (if no run is active, delete {lock})"
            ) from None
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        return
    raise OutputFolderError(f"could not take the lock {lock}; delete it if no run is active")


def _unlock(out: Path) -> None:
    with contextlib.suppress(OSError):
        lock = out / LOCK_NAME
        holder = json.loads(lock.read_text(encoding="utf-8"))
        if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            lock.unlink()


__all__ = [
    "BATCH_OPTIONS",
    "MANIFEST_NAME",
    "SUMMARY_COLUMNS",
    "BatchError",
    "BatchOptions",
    "BatchResult",
    "BatchRun",
    "BatchSettingsError",
    "OutputFolderError",
    "SlideJob",
    "batch_settings",
    "cached_detector",
    "check_options",
    "count_slide",
    "failure_record",
    "find_slides",
    "output_name",
    "peak_rss_mib",
    "run_sequential",
    "settings_key",
]
