"""`count_mitoses`: stream a slide through a detector, merge at tile borders, count.

Data flow: a :class:`~wsimito.tiling.TileGrid` at the detector's mpp, tile
size and overlap covers the tissue; reader threads (each with its own slide
handle) read every tile from the pyramid level closest to, but not coarser
than, the detector's mpp into a bounded prefetch window; batches go to the
device, are resampled there to the detector's mpp when the level's resolution
differs, optionally stain-normalized, and detected. A detection is kept only by
the tile whose core owns it, then a radius check across neighbouring tiles
removes near-duplicates. Memory is bounded by the prefetch window: nothing the
size of the slide is ever built.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .detect import Detector, choose_batch_size, resolve_device
from .errors import TileReadError
from .result import MitosisResult
from .slide import Slide, open_slide
from .tiling import TileGrid
from .tissue import Tissue, detect_tissue

_PROTOCOL = ("mpp", "tile_size", "overlap", "threshold", "device", "detect")
# Default radius (µm) of the cross-tile duplicate check when the detector names none.
_DEFAULT_MERGE_RADIUS_UM = 3.0


@dataclass(frozen=True)
class ReadPlan:
    """How tiles are read: the pyramid level and the resampling to the detector's mpp.

    ``scale`` is level-0 px per detector px; ``factor`` is level px per detector
    px. Resampling is skipped when ``|factor - 1| * tile_size <= overlap / 4``:
    then the read area differs from the tile by at most a quarter of the
    overlap, so every core still lies inside what the detector sees, objects
    are scaled by under ``overlap / (4 * tile_size)`` (about 2 % for 512/64 px,
    far below the natural variation of nuclear size), and coordinates are mapped
    back with the level's own downsample, so positions stay exact.
    """

    level: int
    downsample: float
    scale: float
    factor: float
    resample: bool
    read_size: int
    pool: int

    @classmethod
    def for_slide(cls, slide: Slide, detector_mpp: float, tile_size: int, overlap: int) -> ReadPlan:
        scale = detector_mpp / slide.mpp
        level = slide.best_level(scale)
        ds = slide.level_downsamples[level]
        factor = scale / ds
        resample = abs(factor - 1) * tile_size > overlap / 4
        pool = int(math.floor(factor)) if resample and factor >= 2 else 1
        read_size = math.ceil(tile_size * factor) + pool + 2 if resample else tile_size
        return cls(level, ds, scale, factor, resample, read_size, pool)


@dataclass
class _TileRead:
    index: int
    pixels: np.ndarray | None  # (S, S, 3) uint8, None when skipped
    origin: tuple[float, float]  # level coordinate of the read patch's corner, level px
    error: str | None = None


def _as_detector(detector: Any, device: str | torch.device) -> Detector:
    if isinstance(detector, (str, Path)):
        from .models import load_detector

        return load_detector(detector, device=device)
    missing = [name for name in _PROTOCOL if not hasattr(detector, name)]
    if missing:
        raise TypeError(
            f"{type(detector).__name__} does not follow the wsimito.Detector protocol: missing "
            f"{', '.join(missing)}. Give it mpp (µm/px), tile_size and overlap (px at mpp), "
            "threshold, device and detect(tiles) -> list of (K, 3) tensors, or pass a registry "
            "name such as 'demo' or a weights path."
        )
    if not 0 <= int(detector.overlap) < int(detector.tile_size):
        raise ValueError(
            f"detector overlap ({detector.overlap} px) must be >= 0 and below its "
            f"tile_size ({detector.tile_size} px)"
        )
    return detector


def _as_tissue(tissue: Any, slide: Slide) -> Tissue:
    if isinstance(tissue, str):
        if tissue != "auto":
            raise ValueError(
                f"tissue={tissue!r}: use 'auto', None (whole image), a Tissue or polygons"
            )
        return detect_tissue(slide)
    if tissue is None:
        return Tissue.full(slide)
    if isinstance(tissue, Tissue):
        return tissue
    return Tissue.from_polygons(tissue, slide)


def _read_tile(
    slide: Slide, plan: ReadPlan, box: Sequence[float]
) -> tuple[np.ndarray, tuple[float, float]]:
    """Read one tile's pixels at the plan's level; returns pixels and the patch corner (level px)."""
    x, y = box[0] / plan.downsample, box[1] / plan.downsample
    if plan.resample:
        lx, ly = math.floor(x) - 1, math.floor(y) - 1
    else:
        lx, ly = round(x), round(y)
    pixels = slide.read_level_box(lx, ly, plan.level, plan.read_size, plan.read_size)
    return pixels, (float(lx), float(ly))


def resample_batch(
    batch: torch.Tensor, offsets: torch.Tensor, factor: float, tile_size: int, pool: int = 1
) -> torch.Tensor:
    """Resample read patches to detector tiles on the batch's device.

    ``batch``: uint8 ``(N, 3, S, S)`` patches; ``offsets``: ``(N, 2)`` float,
    the tile corner inside each patch in patch px (continuous coordinates);
    ``factor``: patch px per output px. Output pixel ``u`` samples the patch at
    ``offset + (u + 0.5) * factor``; when shrinking by ``pool`` or more, a
    ``pool`` x ``pool`` box filter runs first (area averaging). Returns uint8
    ``(N, 3, tile_size, tile_size)``.
    """
    x = batch.float()
    if pool > 1:
        x = F.avg_pool2d(x, pool, stride=1)
    size_y, size_x = x.shape[-2:]
    u = (torch.arange(tile_size, device=x.device, dtype=torch.float32) + 0.5) * factor
    shift = (pool - 1) / 2  # pooled pixel i is centred on patch coordinate i + pool / 2
    off = offsets.to(device=x.device, dtype=torch.float32)
    gx = (off[:, 0:1] + u[None, :] - shift) * (2.0 / size_x) - 1.0  # (N, T)
    gy = (off[:, 1:2] + u[None, :] - shift) * (2.0 / size_y) - 1.0
    n = x.shape[0]
    grid = torch.stack(
        torch.broadcast_tensors(
            gx[:, None, :].expand(n, tile_size, tile_size),
            gy[:, :, None].expand(n, tile_size, tile_size),
        ),
        dim=-1,
    )
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


class _Reader:
    """Reader threads with their own slide handles and a bounded, ordered prefetch window."""

    def __init__(
        self,
        slide: Slide,
        plan: ReadPlan,
        boxes: np.ndarray,
        *,
        workers: int,
        window: int,
        on_error: str,
    ) -> None:
        self.slide, self.plan, self.boxes = slide, plan, boxes
        self.on_error = on_error
        self.window = max(1, window)
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, workers), thread_name_prefix="wsimito-read"
        )

    def _handle(self) -> Slide:
        handle = getattr(self._local, "slide", None)
        if handle is None:
            handle = self.slide.reopen()
            self._local.slide = handle
        return handle

    def _read(self, index: int) -> _TileRead:
        box = self.boxes[index]
        error: Exception | None = None
        for _attempt in range(2):  # one retry
            try:
                pixels, origin = _read_tile(self._handle(), self.plan, box)
                return _TileRead(index, pixels, origin)
            except Exception as exc:  # any reader failure
                error = exc
                self._local.slide = None  # reopen the handle for the retry
        x, y, w, h = (float(v) for v in box)
        message = (
            f"reading the tile at level-0 box (x={x:.1f}, y={y:.1f}, w={w:.1f}, h={h:.1f}) "
            f"failed twice: {type(error).__name__}: {error}"
        )
        if self.on_error == "skip":
            return _TileRead(index, None, (0.0, 0.0), message)
        raise TileReadError(
            message + ". Pass on_error='skip' to record it and continue."
        ) from error

    def __iter__(self) -> Iterator[_TileRead]:
        pending: deque[Future] = deque()
        order = iter(range(len(self.boxes)))
        try:
            for index in order:
                pending.append(self._pool.submit(self._read, index))
                if len(pending) >= self.window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()
            self._pool.shutdown(wait=True, cancel_futures=True)


def _batches(reads: Iterator[_TileRead], size: int) -> Iterator[list[_TileRead]]:
    batch: list[_TileRead] = []
    for item in reads:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _merge_across_tiles(
    points: np.ndarray, scores: np.ndarray, tiles: np.ndarray, radius_px: float
) -> np.ndarray:
    """Indices to keep: highest score first, drop points of *other* tiles within ``radius_px``."""
    if len(points) < 2 or radius_px <= 0:
        return np.arange(len(points))
    from scipy.spatial import cKDTree

    tree = cKDTree(points)
    pairs = tree.query_pairs(radius_px, output_type="ndarray")
    pairs = pairs[tiles[pairs[:, 0]] != tiles[pairs[:, 1]]]
    if len(pairs) == 0:
        return np.arange(len(points))
    neighbours: dict[int, list[int]] = {}
    for a, b in pairs:
        neighbours.setdefault(int(a), []).append(int(b))
        neighbours.setdefault(int(b), []).append(int(a))
    removed = np.zeros(len(points), dtype=bool)
    for i in np.lexsort((points[:, 1], points[:, 0], -scores)):
        if removed[i]:
            continue
        for j in neighbours.get(int(i), ()):
            removed[j] = True
    return np.flatnonzero(~removed)


class _Progress:
    """A rich progress bar with tiles/s and ETA, or nothing."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self._bar = None
        if enabled and total:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._task = self._bar.add_task(label, total=total, rate="")
            self._start = time.perf_counter()
            self._done = 0
            self._bar.start()

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._done += n
            rate = self._done / max(time.perf_counter() - self._start, 1e-9)
            self._bar.update(self._task, advance=n, rate=f"{rate:6.1f} tiles/s")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def count_mitoses(
    slide_or_path: Slide | str | Path | np.ndarray,
    detector: Detector | str | Path = "demo",
    *,
    tissue: Tissue | str | Any | None = "auto",
    threshold: float | None = None,
    batch_size: int | None = None,
    device: str | torch.device = "auto",
    stain: Any = None,
    progress: bool = True,
    num_workers: int | None = None,
    on_error: str = "raise",
    mpp: float | None = None,
    merge_radius_um: float | None = None,
) -> MitosisResult:
    """Detect and count mitotic figures on a whole slide or region of interest.

    Parameters
    ----------
    slide_or_path:
        A :class:`~wsimito.slide.Slide`, a path, or an ``(h, w, 3)`` uint8 array
        (then ``mpp`` is required).
    detector:
        A registry name (``"demo"``), a weights path or URL, or any object that
        follows the :class:`wsimito.Detector` protocol.
    tissue:
        ``"auto"`` runs :func:`wsimito.detect_tissue`; ``None`` processes the
        whole image; a :class:`~wsimito.tissue.Tissue` or polygons in level-0 px.
    threshold:
        Score threshold for the count; the detector's own by default.
    batch_size:
        Tiles per forward pass; chosen from free memory on CUDA when ``None``.
    device:
        ``"auto"`` (CUDA, then MPS, then CPU), or a torch device for registry
        detectors; a detector object keeps its own device.
    stain:
        Optional normalizer (``transform(batch)``, e.g. :class:`wsimito.stain.Macenko`)
        applied on the device to each uint8 batch before the detector.
    progress:
        Show a progress bar (tiles/s, ETA).
    num_workers:
        Reader threads (default: ``min(4, cpu count)``).
    on_error:
        ``"raise"`` (default) stops at a tile that fails twice; ``"skip"``
        records it in ``result.skipped_tiles`` and warns.
    mpp:
        Level-0 resolution in µm/px, for images that carry none.
    merge_radius_um:
        Radius in µm of the duplicate check across neighbouring tiles (default:
        the detector's ``min_distance_um``, else 3 µm).

    Returns
    -------
    MitosisResult
        Points in level-0 px, count, density per mm², hotspot, exporters.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error={on_error!r}: use 'raise' or 'skip'")
    t_start = time.perf_counter()
    own_slide = not isinstance(slide_or_path, Slide)
    slide = open_slide(slide_or_path, mpp=mpp) if own_slide or mpp is not None else slide_or_path
    try:
        det = _as_detector(detector, device)
        if not isinstance(detector, (str, Path)) and device != "auto":
            target = resolve_device(device)
            if torch.device(det.device) != target:
                raise ValueError(
                    f"the detector object lives on {det.device}, not {target}; move it "
                    "there first or leave device='auto'"
                )
        slide_mpp = slide.mpp  # MissingMPPError before any work
        tissue_obj = _as_tissue(tissue, slide)
        t_tissue = time.perf_counter() - t_start
        tile_size, overlap = int(det.tile_size), int(det.overlap)
        grid = TileGrid(
            slide, tile_size=tile_size, overlap=overlap, mpp=float(det.mpp), tissue=tissue_obj
        )
        plan = ReadPlan.for_slide(slide, float(det.mpp), tile_size, overlap)
        boxes, cores = grid.boxes(), grid.cores()
        dev = torch.device(det.device)
        if batch_size is None:
            batch_size = choose_batch_size(det)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if stain is not None and hasattr(stain, "to"):
            stain = stain.to(dev)
        workers = num_workers if num_workers is not None else min(4, _cpu_count())
        points, scores, tile_ids, skipped = _run(
            slide, det, plan, boxes, cores, batch_size, dev, stain, workers, on_error, progress
        )
        radius_um = (
            merge_radius_um
            if merge_radius_um is not None
            else float(getattr(det, "min_distance_um", None) or _DEFAULT_MERGE_RADIUS_UM)
        )
        keep = _merge_across_tiles(points, scores, tile_ids, radius_um / slide_mpp)
        points, scores = points[keep], scores[keep]
        seconds = time.perf_counter() - t_start
        infer_seconds = seconds - t_tissue
        if skipped:
            warnings.warn(
                f"{len(skipped)} tile(s) could not be read and were skipped; see "
                "result.skipped_tiles",
                stacklevel=2,
            )
        return MitosisResult(
            points=points,
            scores=scores,
            threshold=float(det.threshold if threshold is None else threshold),
            slide_name=slide.name,
            slide_path=slide.path,
            slide_dimensions=slide.dimensions,
            slide_mpp=slide_mpp,
            bounds_offset=tuple(float(v) for v in slide.bounds[:2]),
            tissue=tissue_obj,
            detector_name=str(getattr(det, "name", type(det).__name__)),
            detector_metadata=dict(getattr(det, "metadata", {}) or {}),
            detector_mpp=float(det.mpp),
            timing={
                "tiles": len(boxes),
                "seconds": seconds,
                "tissue_seconds": t_tissue,
                "tiles_per_s": len(boxes) / infer_seconds if infer_seconds > 0 else 0.0,
            },
            skipped_tiles=[tuple(float(v) for v in boxes[i]) for i in skipped],
            thumbnail=_overview(slide),
        )
    finally:
        if own_slide:
            slide.close()


def _overview(slide: Slide) -> np.ndarray | None:
    """A 512 px overview for the result's display; a failed read only loses the picture."""
    try:
        return slide.thumbnail(512)
    except Exception as exc:  # a broken region must not discard a finished count
        warnings.warn(f"no overview image for {slide.name}: {exc}", stacklevel=3)
        return None


def _cpu_count() -> int:
    import os

    return (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )


def _run(
    slide: Slide,
    det: Detector,
    plan: ReadPlan,
    boxes: np.ndarray,
    cores: np.ndarray,
    batch_size: int,
    dev: torch.device,
    stain: Any,
    workers: int,
    on_error: str,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Stream every tile through the detector; returns kept points, scores, tile ids, skipped."""
    tile_size = int(det.tile_size)
    found_xy: list[np.ndarray] = []
    found_score: list[np.ndarray] = []
    found_tile: list[np.ndarray] = []
    skipped: list[int] = []
    reader = _Reader(
        slide, plan, boxes, workers=workers, window=2 * batch_size + workers, on_error=on_error
    )
    bar = _Progress(progress, len(boxes), f"counting mitoses in {slide.name}")
    transform: Callable | None = None
    if stain is not None:
        transform = stain.transform if hasattr(stain, "transform") else stain
    try:
        for batch in _batches(iter(reader), batch_size):
            good = [item for item in batch if item.pixels is not None]
            skipped.extend(item.index for item in batch if item.pixels is None)
            if good:
                _detect_batch(
                    good,
                    det,
                    plan,
                    boxes,
                    cores,
                    dev,
                    tile_size,
                    transform,
                    found_xy,
                    found_score,
                    found_tile,
                )
            bar.advance(len(batch))
    finally:
        bar.close()
    if not found_xy:
        return np.empty((0, 2)), np.empty(0), np.empty(0, dtype=np.int64), skipped
    return (
        np.concatenate(found_xy),
        np.concatenate(found_score),
        np.concatenate(found_tile),
        skipped,
    )


def _detect_batch(
    good: list[_TileRead],
    det: Detector,
    plan: ReadPlan,
    boxes: np.ndarray,
    cores: np.ndarray,
    dev: torch.device,
    tile_size: int,
    transform: Callable | None,
    found_xy: list,
    found_score: list,
    found_tile: list,
) -> None:
    batch = torch.from_numpy(np.stack([item.pixels for item in good])).permute(0, 3, 1, 2)
    if dev.type == "cuda":
        batch = batch.pin_memory().to(dev, non_blocking=True)
    else:
        batch = batch.to(dev)
    index = np.array([item.index for item in good])
    origins = np.array([item.origin for item in good], dtype=np.float64)  # level px
    ds = plan.downsample
    if plan.resample:
        # Tile corner inside each patch, in patch (level) px.
        offsets = boxes[index, :2] / ds - origins
        batch = resample_batch(batch, torch.from_numpy(offsets), plan.factor, tile_size, plan.pool)
        corner = boxes[index, :2]
        scale = plan.scale  # level-0 px per detector px, exactly as sampled
    else:
        corner = origins * ds
        scale = ds
    batch = batch.contiguous(memory_format=torch.channels_last)
    if transform is not None:
        batch = transform(batch)
    with torch.inference_mode():
        outputs = det.detect(batch)
    if len(outputs) != len(good):
        raise RuntimeError(
            f"{type(det).__name__}.detect returned {len(outputs)} results for "
            f"{len(good)} tiles; it must return one (K, 3) tensor per tile"
        )
    for k, out in enumerate(outputs):
        out = out.detach().to("cpu", torch.float64).numpy().reshape(-1, 3)
        if not len(out):
            continue
        xy = corner[k] + out[:, :2] * scale
        x0, y0, x1, y1 = cores[index[k]]
        own = (xy[:, 0] >= x0) & (xy[:, 0] < x1) & (xy[:, 1] >= y0) & (xy[:, 1] < y1)
        if own.any():
            found_xy.append(xy[own])
            found_score.append(out[own, 2])
            found_tile.append(np.full(int(own.sum()), index[k], dtype=np.int64))
