"""Many slides on a Dask cluster: :func:`count_many`.

Each slide is one task on ``dask.distributed``. Without a client,
:func:`count_many` starts a :class:`~distributed.LocalCluster` of worker
processes on the loopback interface; otherwise it runs on any scheduler (one
started with ``dask scheduler`` / ``dask worker`` on other machines, or
dask-jobqueue on an HPC queue; see ``docs/cluster.md``).

- Each worker loads the detector once and reuses it
  (:func:`wsimito.batch.cached_detector`).
- A worker that sees GPUs takes one of its own (:class:`GPUPinning`).
- Worker memory limits come from the slides and the batch size
  (:func:`estimate_worker_memory`).
- Outputs, the run manifest, resume and the summary table are those of
  :mod:`wsimito.batch`, shared with ``wsimito count``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .batch import (
    BatchError,
    BatchResult,
    BatchRun,
    SlideJob,
    batch_settings,
    check_options,
    count_slide,
    detector_spec,
    failure_record,
    find_slides,
)

if TYPE_CHECKING:
    from distributed import Client, Future, Worker
    from distributed.deploy.cluster import Cluster
    from typing_extensions import Unpack

    from .batch import BatchOptions
    from .detect import Detector
    from .slide import Slide

#: Resident memory of a worker process before its first slide, bytes: Python,
#: torch, wsimito, OpenSlide and the Dask worker (about 390 MiB measured on
#: Linux x86-64 with the CPU build of torch), rounded up.
PROCESS_BASE_BYTES = 512 * 2**20
#: Host memory the CUDA runtime adds to a process that uses a GPU, bytes.
CUDA_CONTEXT_BYTES = 1024 * 2**20
#: Float32 maps of one tile's size per tile assumed for detectors that are not
#: torch modules (the dark-blob baseline keeps about six).
DEFAULT_ACTIVATION_MAPS = 8
#: Bytes per mask pixel held while the tissue is found (RGB, chroma, ink,
#: mask, labels and their temporaries).
TISSUE_BYTES_PER_MASK_PX = 32
#: Factor applied to the sum of the parts (allocator slack, the result's tables).
MEMORY_MARGIN = 1.5
#: The tissue mask resolution of :func:`wsimito.detect_tissue`, µm/px.
TISSUE_MPP = 8.0


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of one worker counting one slide, in bytes, by part.

    ``total = MEMORY_MARGIN * (base + weights + prefetch + batch + tissue)``.

    Attributes
    ----------
    base : int
        The process before its first slide (:data:`PROCESS_BASE_BYTES`, plus
        :data:`CUDA_CONTEXT_BYTES` with a GPU).
    weights : int
        Twice the detector's parameters (the checkpoint read and the network).
    prefetch : int
        The tile reader's prefetch window: ``(2 * batch_size + readers) * S² * 3``
        with ``S`` the side of one read, px of the pyramid level read.
    batch : int
        ``batch_size * (3 * T² * (1 + 4 + 4) + A)``: a batch as uint8, its
        float copy and the resampled input, with ``T`` the tile size (px at
        the detector's mpp) and ``A`` the activation bytes of one tile.
    tissue : int
        Tissue detection: the pyramid level read for the 8 µm/px mask (RGB)
        plus :data:`TISSUE_BYTES_PER_MASK_PX` per mask pixel.
    """

    base: int
    weights: int
    prefetch: int
    batch: int
    tissue: int

    @property
    def total(self) -> int:
        """The estimate with its margin, bytes."""
        parts = self.base + self.weights + self.prefetch + self.batch + self.tissue
        return int(math.ceil(MEMORY_MARGIN * parts))

    def __str__(self) -> str:
        mib = 2**20
        return (
            f"{self.total / 2**30:.2f} GiB = {MEMORY_MARGIN} x (base {self.base // mib} + weights "
            f"{self.weights // mib} + prefetch {self.prefetch // mib} + batch "
            f"{self.batch // mib} + tissue {self.tissue // mib} MiB)"
        )


def activation_bytes_per_tile(detector: Detector) -> int:
    """Measure the memory of every layer's outputs for one tile, in one forward pass.

    For a detector with a torch ``model``, forward hooks add up the outputs of
    its leaf modules on one blank tile (an upper bound of what is alive at
    once). Other detectors are given :data:`DEFAULT_ACTIVATION_MAPS` float32
    maps of one tile.

    Parameters
    ----------
    detector : Detector
        Any object that follows the :class:`wsimito.Detector` protocol.

    Returns
    -------
    int
        Bytes per tile.
    """
    import torch

    tile = int(detector.tile_size)
    model = getattr(detector, "model", None)
    if not isinstance(model, torch.nn.Module):
        return DEFAULT_ACTIVATION_MAPS * tile * tile * 4
    total = 0

    def add(_module: Any, _inputs: Any, output: Any) -> None:
        nonlocal total
        for t in output if isinstance(output, (list, tuple)) else (output,):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(add) for m in leaves]
    try:
        probe = torch.zeros((1, 3, tile, tile), dtype=torch.uint8, device=detector.device)
        with torch.no_grad():
            detector.detect(probe)
    finally:
        for hook in hooks:
            hook.remove()
    return int(total)


def estimate_worker_memory(
    slide: Slide,
    detector: Detector,
    *,
    batch_size: int = 8,
    num_workers: int | None = None,
    gpu: bool = False,
    activation_bytes: int | None = None,
) -> MemoryEstimate:
    """Peak memory of a worker process that counts ``slide`` with ``detector``.

    Parameters
    ----------
    slide : Slide
        The slide (its metadata only is read).
    detector : Detector
        The detector, for its tile size, resolution and parameters.
    batch_size : int
        Tiles per batch.
    num_workers : int, optional
        Reader threads (default as in :func:`wsimito.count_mitoses`:
        :func:`wsimito.reader.default_num_workers`).
    gpu : bool
        Whether the worker runs the detector on a GPU (adds the CUDA context;
        the batch then lives in GPU memory, but its pinned host copy is kept).
    activation_bytes : int, optional
        Bytes of activations per tile; measured with
        :func:`activation_bytes_per_tile` when ``None``.

    Returns
    -------
    MemoryEstimate
        The parts and their total (bytes).
    """
    from .reader import ReadPlan, default_num_workers

    tile, overlap = int(detector.tile_size), int(detector.overlap)
    readers = (
        num_workers if num_workers is not None else default_num_workers("cuda" if gpu else "cpu")
    )
    plan = ReadPlan.for_slide(slide, float(detector.mpp), tile, overlap)
    side = plan.pool * tile if plan.exact else plan.read_size
    prefetch = (2 * batch_size + readers) * side * side * 3
    if activation_bytes is None:
        activation_bytes = activation_bytes_per_tile(detector)
    batch = batch_size * (3 * tile * tile * (1 + 4 + 4) + int(activation_bytes))
    model = getattr(detector, "model", None)
    params = sum(p.numel() * p.element_size() for p in model.parameters()) if model else 0
    width, height = slide.dimensions
    scale = TISSUE_MPP / slide.mpp
    level = slide.best_level(scale)
    lw, lh = slide.level_dimensions[level]
    mask_px = math.ceil(width / scale) * math.ceil(height / scale)
    tissue = lw * lh * 3 + mask_px * TISSUE_BYTES_PER_MASK_PX
    base = PROCESS_BASE_BYTES + (CUDA_CONTEXT_BYTES if gpu else 0)
    return MemoryEstimate(base, 2 * params, prefetch, batch, tissue)


# -- GPUs --------------------------------------------------------------------------------
def visible_gpus() -> list[str]:
    """The NVIDIA GPUs this process may use, without initialising CUDA.

    ``CUDA_VISIBLE_DEVICES`` where set (as given: indices or UUIDs), else the
    GPUs the driver lists in ``/proc/driver/nvidia/gpus`` or ``nvidia-smi -L``.

    Returns
    -------
    list of str
        GPU ids as ``CUDA_VISIBLE_DEVICES`` names them; empty without GPUs
        (or with ``CUDA_VISIBLE_DEVICES`` empty or ``-1``).
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [g.strip() for g in env.split(",") if g.strip()]
        return [] if not ids or ids[0].startswith("-") else ids
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        return [str(i) for i in range(len(list(proc.iterdir())))]
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def gpu_lock_dir() -> Path:
    """The folder of the per-GPU lock files of this user on this machine.

    Returns
    -------
    pathlib.Path
        ``<temporary folder>/wsimito-gpu-locks-<uid>`` (not created here).
    """
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"wsimito-gpu-locks-{uid}"


def choose_gpu(gpus: Sequence[str], lock_dir: str | os.PathLike[str]) -> tuple[str, TextIO | None]:
    """Take the first of ``gpus`` that no other live process holds.

    Each GPU has a lock file in ``lock_dir``; a process holds an exclusive
    ``flock`` on it for as long as it keeps the returned file open (the lock
    goes with the process when it dies). When every GPU is taken, GPUs are
    shared, chosen by process id, with a warning.

    Parameters
    ----------
    gpus : sequence of str
        GPU ids as ``CUDA_VISIBLE_DEVICES`` names them.
    lock_dir : str or os.PathLike
        Folder of the lock files (created when missing).

    Returns
    -------
    tuple of (str, file or None)
        The GPU id, and the open lock file to keep (``None`` when shared).

    Raises
    ------
    ValueError
        ``gpus`` is empty.
    """
    import fcntl  # POSIX only; GPUs are pinned on Linux clusters

    if not gpus:
        raise ValueError("gpus is empty: there is no GPU to choose")
    folder = Path(lock_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for gpu in gpus:
        name = "".join(c if c.isalnum() or c in "-_" else "_" for c in gpu)
        handle = open(folder / f"gpu-{name}.lock", "a+")  # noqa: SIM115 (kept open: the lock)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        return gpu, handle
    gpu = gpus[os.getpid() % len(gpus)]
    warnings.warn(
        f"every GPU of {list(gpus)} is taken by another worker; this worker shares GPU {gpu}. "
        "Start at most one worker per GPU.",
        stacklevel=2,
    )
    return gpu, None


try:
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPlugin
except ImportError:  # distributed is an optional extra
    _WorkerPlugin = object  # type: ignore[assignment,misc]


class GPUPinning(_WorkerPlugin):
    """A Dask worker plugin that gives each worker process one GPU of its machine.

    On set-up the worker takes the first GPU of :func:`visible_gpus` that no
    other worker on the machine holds (:func:`choose_gpu`) and sets
    ``CUDA_VISIBLE_DEVICES`` to it, so ``device="auto"`` and ``"cuda"`` mean
    that GPU. It does nothing on machines without GPUs, and warns where CUDA
    is already in use in the worker (set ``CUDA_VISIBLE_DEVICES`` per worker
    instead).

    Parameters
    ----------
    lock_dir : str, optional
        Folder of the lock files (default :func:`gpu_lock_dir`).
    """

    name = "wsimito-gpu-pinning"
    idempotent = True

    def __init__(self, lock_dir: str | None = None) -> None:
        self.lock_dir = lock_dir
        self.gpu: str | None = None
        self._handle: TextIO | None = None

    def setup(self, worker: Worker | None = None) -> None:
        """Take a free GPU of this machine and make it the worker's only visible GPU.

        Parameters
        ----------
        worker : distributed.Worker, optional
            The worker the plugin is registered on (not used).

        Warns
        -----
        UserWarning
            CUDA is already initialised in the worker (no GPU is pinned), or
            every GPU is held by another worker (one is shared).
        """
        gpus = visible_gpus()
        if not gpus:
            return
        torch = __import__("sys").modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            warnings.warn(
                "CUDA is already in use in this worker, so it cannot be given one GPU; set "
                "CUDA_VISIBLE_DEVICES for each worker before it starts",
                stacklevel=2,
            )
            return
        self.gpu, self._handle = choose_gpu(gpus, self.lock_dir or gpu_lock_dir())
        os.environ["CUDA_VISIBLE_DEVICES"] = self.gpu

    def teardown(self, worker: Worker | None = None) -> None:
        """Release the GPU's lock file, so that another worker can take the GPU.

        Parameters
        ----------
        worker : distributed.Worker, optional
            The worker the plugin is removed from (not used).
        """
        if self._handle is not None:
            self._handle.close()
            self._handle = None


# -- count_many -------------------------------------------------------------------------
def count_many(
    slides: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    client: Client | Cluster | str | None = None,
    detector: Detector | str | Path = "demo",
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    on_slide: Callable[[dict[str, Any]], None] | None = None,
    **count_kwargs: Unpack[BatchOptions],
) -> BatchResult:
    """Count mitotic figures on many slides, one Dask task per slide.

    Parameters
    ----------
    slides : str, Path or iterable of them
        Slide files, folders (every slide file directly inside) and glob
        patterns (see :func:`wsimito.batch.find_slides`).
    out_dir : str or Path
        Output folder: per slide ``<stem>-<hash>.geojson``, ``.csv`` and
        ``.json``; ``wsimito-manifest.json``; ``summary.csv`` and
        ``summary.parquet``. It must be visible to every worker.
    client : distributed.Client, cluster, str or None
        ``None`` starts a :class:`~distributed.LocalCluster` of ``workers``
        processes on 127.0.0.1 (one thread each; torch uses the cores) and
        closes it at the end. A Client, a cluster object (e.g. a
        dask-jobqueue ``SLURMCluster``) or a scheduler address
        (``"tcp://host:8786"``) runs on that cluster instead.
    detector : Detector, str or Path
        A registry name, a weights path or URL (each worker loads it once and
        reuses it), or a picklable detector object.
    workers : int, optional
        Worker processes of the local cluster: by default one per GPU, else
        one per four CPU cores; never more than the slides to count, and fewer
        when the memory limits (:func:`estimate_worker_memory`) would exceed
        the machine's memory. Ignored with ``client``.
    overwrite : bool
        Replace a run with other settings in ``out_dir`` (its outputs are
        removed first). Without it such a folder is refused.
    progress : bool
        Show a progress view of the batch: slides done, failed, slides per hour.
    on_slide : callable, optional
        Called in this process with each slide's manifest record as it finishes.
    **count_kwargs
        Passed to :func:`wsimito.count_mitoses` for every slide (see
        :class:`wsimito.batch.BatchOptions`): ``tissue`` (``"auto"`` or
        ``None``), ``threshold``, ``batch_size``, ``device``, ``stain`` (a
        picklable :class:`~wsimito.pipeline.StainTransform`), ``num_workers``,
        ``on_error`` (``"raise"`` or ``"skip"``), ``mpp`` (µm/px for files
        without a resolution; a file's own wins), ``merge_radius_um`` (µm);
        and ``backend`` for :func:`wsimito.open_slide`.

    Returns
    -------
    BatchResult
        ``table`` (pandas DataFrame, one row per slide of the run), the
        ``manifest`` path, the summary files, and which slides this call
        counted or found done already.

    Raises
    ------
    BatchError
        A slide item matches nothing, or ``out_dir`` cannot be used.
    BatchSettingsError
        ``out_dir`` holds a run with other settings and ``overwrite`` is False.
    ValueError, TypeError
        An option is unknown or out of range (checked before any work).

    Examples
    --------
    >>> import wsimito
    >>> batch = wsimito.count_many("slides/*.svs", "counts", workers=2)  # doctest: +SKIP
    >>> batch.table[["slide", "count", "density_per_mm2", "status"]]     # doctest: +SKIP
    """
    options = check_options(count_kwargs)
    items = [slides] if isinstance(slides, (str, os.PathLike)) else list(slides)
    paths = find_slides(items)
    loaded = _driver_detector(detector)
    settings = batch_settings(detector, loaded, options)
    runtime = {
        "executor": "dask.distributed",
        "device": str(options.get("device", "auto")),
        "batch_size": options.get("batch_size"),
    }
    run = BatchRun.open(paths, out_dir, settings, runtime=runtime, overwrite=overwrite)
    if not run.todo:
        return run.finish()
    try:
        with _cluster(client, workers, run.todo, loaded, options) as dask_client:
            records = _submit(dask_client, run, detector, options)
            result = run.run(records, progress=progress, on_slide=on_slide)
    finally:
        run.close()
    if on_slide is None:
        _warn_about_slides(result)
    return result


def _warn_about_slides(result: BatchResult) -> None:
    """Warn once about the slides of this call that warned or failed.

    The workers' own warnings stay in their processes; they are in the table's
    ``warnings`` column.
    """
    rows = result.table[result.table["slide"].isin(result.counted)]
    warned = rows[rows["warnings"].notna()]
    failed = rows[rows["status"] == "failed"]
    if warned.empty and failed.empty:
        return
    parts = []
    if len(failed):
        parts.append(
            f"{len(failed)} slide(s) failed (first: {failed['slide'].iloc[0]}: "
            f"{failed['error'].iloc[0]})"
        )
    if len(warned):
        first = str(warned["warnings"].iloc[0]).split(" | ")[0]
        parts.append(
            f"{len(warned)} slide(s) gave warnings (first: {warned['slide'].iloc[0]}: {first})"
        )
    warnings.warn(
        "; ".join(parts) + ". See the 'error' and 'warnings' columns of the table.",
        UserWarning,
        stacklevel=3,
    )


def _driver_detector(detector: Any) -> Any:
    """The detector in this process (on the CPU for specs), for its settings and memory."""
    spec = detector_spec(detector)
    if isinstance(spec, str):
        from .models import load_detector

        return load_detector(spec, device="cpu")
    from .detect import as_detector

    return as_detector(detector)


@contextlib.contextmanager
def _cluster(
    client: Any,
    workers: int | None,
    todo: Sequence[SlideJob],
    loaded: Any,
    options: Mapping[str, Any],
) -> Iterator[Client]:
    from distributed import Client

    if client is None:
        with _local_cluster(workers, todo, loaded, options) as local:
            yield local
        return
    if isinstance(client, Client):
        _check_remote_memory(client, todo, loaded, options)
        client.register_plugin(GPUPinning())
        yield client
        return
    try:
        remote = Client(client, timeout="30s")  # an address or a cluster object
    except OSError as exc:
        raise BatchError(
            f"cannot reach the Dask scheduler at {client} ({exc}); start one with "
            "`dask scheduler` and workers with `dask worker ADDRESS`, or use a local cluster"
        ) from exc
    with remote:
        _check_remote_memory(remote, todo, loaded, options)
        remote.register_plugin(GPUPinning())
        yield remote


@contextlib.contextmanager
def _local_cluster(
    workers: int | None, todo: Sequence[SlideJob], loaded: Any, options: Mapping[str, Any]
) -> Iterator[Client]:
    import dask
    import psutil
    from distributed import Client, LocalCluster

    gpus = visible_gpus()
    cores = _cores()
    if workers is not None and (
        isinstance(workers, bool) or int(workers) != workers or workers < 1
    ):
        raise ValueError(f"workers={workers!r}: give a positive whole number of processes")
    n = int(workers) if workers is not None else (len(gpus) or max(1, cores // 4))
    n = min(n, len(todo))
    limit = _memory_limit(todo, loaded, options, gpu=bool(gpus))
    fits = max(1, int(psutil.virtual_memory().total // limit))
    if n > fits:
        warnings.warn(
            f"{n} workers of {limit / 2**30:.1f} GiB each do not fit this machine's memory; "
            f"starting {fits}",
            stacklevel=4,
        )
        n = fits
    threads = max(1, cores // n)
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    # A slide's memory is not Dask data: nothing to spill, and pausing a worker whose
    # torch allocator keeps its pages could pause it for good. Only the limit stays.
    memory = {"target": False, "spill": False, "pause": False, "terminate": 0.95}
    with (
        _nanny_log_level(),
        dask.config.set({f"distributed.worker.memory.{k}": v for k, v in memory.items()}),
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            memory_limit=limit,
            env=env,
        ) as cluster,
        Client(cluster) as local,
    ):
        if gpus:
            local.register_plugin(GPUPinning())
        try:
            yield local
        finally:
            _quiet_nanny_on_close()


@contextlib.contextmanager
def _nanny_log_level() -> Iterator[None]:
    """Restore the level of the ``distributed.nanny`` log after :func:`_quiet_nanny_on_close`."""
    log = logging.getLogger("distributed.nanny")
    level = log.level
    try:
        yield
    finally:
        log.setLevel(level)


def _quiet_nanny_on_close() -> None:
    """Hide the nanny's warning about a worker it had to kill at the end of a batch.

    A worker that imported torch may take more than the nanny's 4 s to exit on a
    busy machine; it is then killed, which is harmless at the end of a batch.
    """
    logging.getLogger("distributed.nanny").setLevel(logging.ERROR)


def _memory_limit(
    todo: Sequence[SlideJob], loaded: Any, options: Mapping[str, Any], *, gpu: bool
) -> int:
    """The largest estimate over the slides to count, bytes (see :func:`estimate_worker_memory`)."""
    from .slide import open_slide

    batch_size = options.get("batch_size") or 8
    activations = activation_bytes_per_tile(loaded)
    largest = None
    for job in todo:
        try:
            with (
                warnings.catch_warnings(),
                open_slide(
                    job.path, backend=options.get("backend", "auto"), mpp=options.get("mpp")
                ) as slide,
            ):
                warnings.simplefilter("ignore")
                estimate = estimate_worker_memory(
                    slide,
                    loaded,
                    batch_size=batch_size,
                    num_workers=options.get("num_workers"),
                    gpu=gpu,
                    activation_bytes=activations,
                )
        except Exception:  # an unreadable slide fails in its task, with its error recorded
            continue
        if largest is None or estimate.total > largest.total:
            largest = estimate
    return largest.total if largest is not None else 2 * PROCESS_BASE_BYTES


def _check_remote_memory(
    client: Client, todo: Sequence[SlideJob], loaded: Any, options: Mapping[str, Any]
) -> None:
    """Warn when the cluster's workers have less memory than the slides need."""
    info = client.scheduler_info().get("workers", {})
    limits = [w.get("memory_limit") or 0 for w in info.values()]
    limits = [m for m in limits if m]
    if not limits:
        return
    need = _memory_limit(todo, loaded, options, gpu=False)
    if min(limits) < need:
        warnings.warn(
            f"some workers have {min(limits) / 2**30:.1f} GiB of memory, but the largest slide "
            f"needs about {need / 2**30:.1f} GiB (see wsimito.distributed.estimate_worker_memory); "
            "start them with --memory-limit or more memory, or lower batch_size",
            stacklevel=4,
        )


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _threads_per_host(client: Client) -> dict[str, int]:
    """Task threads of the cluster's workers, per host (to share the cores among them)."""
    per_host: dict[str, int] = {}
    for info in client.scheduler_info().get("workers", {}).values():
        host = str(info.get("host"))
        per_host[host] = per_host.get(host, 0) + int(info.get("nthreads") or 1)
    return per_host


def count_on_worker(
    job: SlideJob,
    out_dir: str,
    detector: Detector | str,
    options: Mapping[str, Any],
    settings_key: str,
    threads_per_host: Mapping[str, int],
) -> dict[str, Any]:
    """Count one slide on a Dask worker, with torch on this worker's share of the cores.

    :func:`wsimito.batch.count_slide`, with its ``torch_threads`` from
    ``threads_per_host``; it never raises for the slide's errors.

    Parameters
    ----------
    job : wsimito.batch.SlideJob
        The slide and its output name.
    out_dir : str
        Output folder (shared by every worker).
    detector : str or Detector
        A spec from :func:`wsimito.batch.detector_spec`, or a detector object.
    options : mapping of str to object
        Checked keyword arguments (:func:`wsimito.batch.check_options`).
    settings_key : str
        The run's settings key, stored in the slide's summary JSON.
    threads_per_host : mapping of str to int
        Task threads of all workers per host address, when the batch started;
        torch gets ``cores // threads`` of this host (``cores // nthreads`` of
        this worker for a host that joined later).

    Returns
    -------
    dict of str to object
        The slide's manifest record (see :func:`wsimito.batch.count_slide`).
    """
    from distributed import get_worker

    worker = get_worker()
    host = worker.address.split("://")[-1].rsplit(":", 1)[0]
    busy = threads_per_host.get(host) or worker.state.nthreads
    threads = max(1, _cores() // max(1, busy))
    return count_slide(job, out_dir, detector, options, settings_key, torch_threads=threads)


def _submit(
    client: Client, run: BatchRun, detector: Any, options: Mapping[str, Any]
) -> Iterator[dict[str, Any]]:
    """Submit one task per slide; yield each slide's record as it finishes."""
    import pickle
    import uuid

    from distributed import as_completed

    spec = detector_spec(detector)
    if not isinstance(spec, str) and len(pickle.dumps(spec)) > 2**20:
        # A large detector object travels once per worker, not once per task.
        spec = client.scatter(spec, broadcast=True, hash=False)
    threads = _threads_per_host(client)
    token = uuid.uuid4().hex[:8]
    futures: dict[Future[dict[str, Any]], SlideJob] = {}
    for job in run.todo:
        future = client.submit(
            count_on_worker,
            job,
            str(run.out_dir),
            spec,
            dict(options, progress=False),
            run.settings_key,
            threads,
            key=f"wsimito-count-{job.name}-{token}",
            pure=False,
        )
        futures[future] = job
    try:
        for future in as_completed(futures):
            job = futures[future]
            if future.status == "finished":
                yield future.result()
            else:
                yield _failure(job, future)
    finally:  # Ctrl-C or an error here: stop what still runs
        pending = [f for f in futures if not f.done()]
        if pending:
            client.cancel(pending)


def _failure(job: SlideJob, future: Future[dict[str, Any]]) -> dict[str, Any]:
    try:
        exc = future.exception()
    except Exception as error:  # cancelled or lost
        exc = error
    kind = type(exc).__name__
    message = f"{kind}: {exc}"
    if kind == "KilledWorker":
        message = (
            f"KilledWorker: the worker counting {job.name} died (out of memory, or killed); "
            f"rerun to count it again ({exc})"
        )
    return failure_record(job, message, kind)


__all__ = [
    "GPUPinning",
    "MemoryEstimate",
    "activation_bytes_per_tile",
    "choose_gpu",
    "count_many",
    "count_on_worker",
    "estimate_worker_memory",
    "visible_gpus",
]
