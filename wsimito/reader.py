"""Boxes of a slide at a target mpp, as a bounded, ordered stream of device batches.

This is the one tile reader of wsimito: :func:`wsimito.count_mitoses`, the
training patch datasets and the cascade detector's candidate crops all read
through it. It follows dlup's split between geometry and reading: a
:class:`~wsimito.tiling.TileGrid` (or any other source of boxes) says *where*,
a :class:`TileReader` reads *what is there*.

Data flow for each box (level-0 px):

1. a :class:`ReadPlan` picks the pyramid level closest to, but not coarser
   than, the target mpp, and how to get from that level to the target;
2. reader threads, each with its own slide handle, read the level patches
   into a bounded prefetch window whose size is given in bytes;
3. in order, ``batch_size`` patches at a time are stacked, moved to the device
   (through pinned, reused host buffers and a separate copy stream on CUDA),
   and resampled there: exact ``k x k`` area pooling when the level is an
   integer factor finer and the boxes sit on whole level pixels, otherwise
   area pooling followed by bilinear sampling at the exact sub-pixel offsets.

Every output tile carries its level-0 corner and scale, so a point found at
tile px ``(u, v)`` lies at ``corner + (u, v) * scale`` level-0 px.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import TileReadError
from .process_reads import Parallel, ProcessReads, choose_parallel, shared_memory_free
from .slide import Slide

OnError = Literal["raise", "skip"]

#: Relative tolerance under which a level's downsample counts as an exact integer
#: factor of the target resolution (vendors write downsamples such as 4.000395).
_INTEGER_FACTOR_TOLERANCE = 1e-6


@dataclass(frozen=True)
class ReadPlan:
    """How boxes are read: the pyramid level and the way from it to the target mpp.

    Attributes
    ----------
    level : int
        Pyramid level read.
    downsample : float
        Level-0 px per level px of that level.
    scale : float
        Level-0 px per output px (target mpp / slide mpp).
    factor : float
        Level px per output px (``scale / downsample``).
    resample : bool
        Whether the patches are resampled. It is skipped when
        ``|factor - 1| * tile_size <= overlap / 4``: the read area then differs
        from the tile by at most a quarter of the overlap, so every core still
        lies inside what the detector sees, objects are scaled by under
        ``overlap / (4 * tile_size)`` (about 2 % for 512/64 px, far below the
        natural variation of nuclear size), and coordinates are mapped back
        with the level's own downsample, so positions stay exact.
    pool : int
        Side of the area-averaging box applied before sampling (1 = none);
        ``floor(factor)`` when shrinking by 2x or more.
    exact : bool
        ``factor`` is an integer ``pool``: patches of ``pool * tile_size``
        level px whose corner is a whole level pixel are reduced by area
        pooling alone, with no interpolation.
    read_size : int
        Side of the general read patch, level px (the exact path reads
        ``pool * tile_size``).
    tile_size : int
        Side of the output tiles, px at the target mpp.
    """

    level: int
    downsample: float
    scale: float
    factor: float
    resample: bool
    pool: int
    exact: bool
    read_size: int
    tile_size: int

    @classmethod
    def for_slide(cls, slide: Slide, mpp: float, tile_size: int, overlap: int = 0) -> ReadPlan:
        """The plan for ``tile_size`` px tiles at ``mpp`` µm/px on ``slide``.

        Parameters
        ----------
        slide : Slide
            The slide to read.
        mpp : float
            Target resolution, µm/px.
        tile_size : int
            Output tile side, px at ``mpp``.
        overlap : int
            Overlap of neighbouring tiles, px at ``mpp``; it sets how far the
            level may be from the target before resampling (see the class).

        Returns
        -------
        ReadPlan
        """
        scale = mpp / slide.mpp
        level = slide.best_level(scale)
        ds = slide.level_downsamples[level]
        factor = scale / ds
        resample = abs(factor - 1) * tile_size > overlap / 4
        pool = math.floor(factor + _INTEGER_FACTOR_TOLERANCE) if resample and factor >= 2 else 1
        exact = resample and pool >= 2 and abs(factor - pool) <= _INTEGER_FACTOR_TOLERANCE * pool
        read_size = math.ceil(tile_size * factor) + pool + 2 if resample else tile_size
        return cls(level, ds, scale, factor, resample, pool, exact, read_size, int(tile_size))


@dataclass
class TileBatch:
    """One batch of tiles on the device, with where each came from.

    Attributes
    ----------
    pixels : torch.Tensor
        uint8 ``(N, 3, tile_size, tile_size)`` RGB on the reader's device, in
        channels-last memory format. Only the boxes that were read.
    index : numpy.ndarray
        ``(N,)`` int64 positions of these tiles in the reader's ``boxes``.
    corners : numpy.ndarray
        ``(N, 2)`` float64 level-0 px of each tile's top-left pixel edge.
    scale : float
        Level-0 px per tile px: tile point ``(u, v)`` lies at
        ``corners[k] + (u, v) * scale`` level-0 px.
    skipped : list of (int, str)
        Boxes of this batch that could not be read (``on_error="skip"``):
        their position in ``boxes`` and the error.
    """

    pixels: torch.Tensor
    index: np.ndarray
    corners: np.ndarray
    scale: float
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.index)

    def to_level0(self, k: int, points: np.ndarray) -> np.ndarray:
        """Map points from tile px to level-0 px.

        Parameters
        ----------
        k : int
            The tile's position in this batch.
        points : numpy.ndarray
            ``(K, 2)`` points ``(x, y)``, px of tile ``k`` (at the reader's mpp).

        Returns
        -------
        numpy.ndarray
            ``(K, 2)`` float64, level-0 px.
        """
        return np.asarray(self.corners[k] + np.asarray(points, dtype=np.float64) * self.scale)


@dataclass
class _Read:
    index: int
    pixels: np.ndarray | None  # (S, S, 3) uint8 level patch; None when skipped
    origin: tuple[float, float]  # level px of the patch's top-left corner
    error: str | None = None
    staged: bool = False  # pixels were decoded into the batch's staging buffer


class TileReader:
    """Read level-0 boxes as tiles at a target mpp: an ordered stream of device batches.

    Parameters
    ----------
    slide : Slide
        The slide. Each reader thread opens its own handle with
        :meth:`Slide.reopen`, so the slide's own handle is never shared.
    boxes : numpy.ndarray
        ``(N, 4)`` level-0 boxes ``(x, y, w, h)`` px, each ``tile_size * mpp /
        slide.mpp`` px wide and high (e.g. :meth:`TileGrid.boxes`), or
        ``(N, 2)`` top-left corners. Boxes may cross the slide's edge: pixels
        outside are white.
    mpp : float
        Resolution of the output tiles, µm/px.
    tile_size : int
        Side of the output tiles, px at ``mpp``.
    overlap : int
        Overlap of neighbouring tiles, px at ``mpp`` (sets when resampling is
        skipped, see :class:`ReadPlan`); 0 always resamples off-resolution
        levels.
    batch_size : int
        Tiles per batch.
    device : str or torch.device
        Where the batches are delivered.
    num_workers : int
        Reader threads (or processes, see ``parallel``).
    on_error : {"raise", "skip"}
        A box that fails twice raises :class:`~wsimito.errors.TileReadError`,
        or, with ``"skip"``, is reported in :attr:`TileBatch.skipped`.
    prefetch_bytes : int, optional
        Upper bound, in bytes, of level pixels read ahead of the consumer. The
        window always holds at least one batch plus one read per thread.
        Default: two batches plus one read per thread.
    parallel : {"auto", "threads", "processes"}
        How the readers run. Threads share the slide's tile cache and start at
        once; processes each open their own handle and write pixels into
        shared memory (:mod:`wsimito.process_reads`), which scales on backends
        that hold the GIL while decoding, at the cost of starting them. ``"auto"``
        uses processes for large reads of such backends (tiffslide with its own
        decoder), threads otherwise; :attr:`parallel` says which ran.

    Examples
    --------
    A 250 x 250 µm image at 0.25 µm/px read as 256 px tiles at 0.5 µm/px
    (128 µm, 32 px overlap): a 3 x 3 grid, in batches of 4 tiles.

    >>> import numpy as np, wsimito
    >>> from wsimito.reader import TileReader
    >>> slide = wsimito.open_slide(np.full((1000, 1000, 3), 200, np.uint8), mpp=0.25)
    >>> grid = wsimito.TileGrid(slide, tile_size=256, overlap=32, mpp=0.5)
    >>> reader = TileReader(slide, grid.boxes(), mpp=0.5, tile_size=256, batch_size=4)
    >>> [tuple(b.pixels.shape) for b in reader]
    [(4, 3, 256, 256), (4, 3, 256, 256), (1, 3, 256, 256)]
    """

    def __init__(
        self,
        slide: Slide,
        boxes: np.ndarray,
        *,
        mpp: float,
        tile_size: int,
        overlap: int = 0,
        batch_size: int = 8,
        device: str | torch.device = "cpu",
        num_workers: int = 2,
        on_error: OnError = "raise",
        prefetch_bytes: int | None = None,
        parallel: Parallel = "auto",
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error={on_error!r}: use 'raise' or 'skip'")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int (tiles), got {batch_size!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f"num_workers must be a positive int (threads), got {num_workers!r}")
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] not in (2, 4):
            raise ValueError(f"boxes must be (N, 4) x, y, w, h or (N, 2) x, y; got {boxes.shape}")
        if not np.isfinite(boxes).all():
            raise ValueError("boxes must be finite level-0 px")
        self.slide = slide
        self.plan = ReadPlan.for_slide(slide, float(mpp), int(tile_size), int(overlap))
        self.mpp, self.tile_size = float(mpp), int(tile_size)
        side = self.tile_size * self.plan.scale
        if boxes.shape[1] == 4:
            wrong = np.abs(boxes[:, 2:] - side) > 1e-6 * max(side, 1.0)
            if wrong.any():
                k = int(np.flatnonzero(wrong.any(axis=1))[0])
                raise ValueError(
                    f"box {k} is {boxes[k, 2]:g} x {boxes[k, 3]:g} level-0 px, but a "
                    f"{tile_size} px tile at {mpp:g} µm/px covers {side:g} px of this "
                    f"{slide.mpp:g} µm/px slide"
                )
        self.boxes = boxes[:, :2].copy()
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.num_workers = num_workers
        self.on_error: OnError = on_error
        read_side = self.plan.pool * self.tile_size if self.plan.exact else self.plan.read_size
        self.read_bytes = read_side * read_side * 3
        #: Exact k x k reductions are done by the reader threads (PIL, GIL released) on a CPU,
        #: where they would otherwise cost the main thread more than decoding; on CUDA the
        #: device pools the full-resolution patches. PIL rounds exactly as ``_area_pool`` for
        #: powers of two only (its division by 9, 25, ... is approximate), so other factors
        #: stay on the device.
        pool = self.plan.pool
        self.host_pool = self.plan.exact and self.device.type != "cuda" and pool & (pool - 1) == 0
        default = (2 * batch_size + num_workers) * self.read_bytes
        budget = default if prefetch_bytes is None else int(prefetch_bytes)
        self.window = max(batch_size + num_workers, budget // self.read_bytes)
        self._patches = self._patch_boxes()
        #: ``"threads"`` or ``"processes"``: how the readers run (see ``parallel``).
        self.parallel = choose_parallel(slide, parallel, num_workers, len(self.boxes))
        if self.parallel == "processes":
            need, free = self.window * self._slot_side() ** 2 * 3, shared_memory_free()
            if free is not None and need > free:
                if parallel == "processes":
                    raise ValueError(
                        f"parallel='processes' needs {need / 2**20:.0f} MiB of shared memory "
                        f"for its prefetch window, but /dev/shm has {free / 2**20:.0f} MiB free "
                        "(containers often have 64 MiB: start Docker with --shm-size=1g). "
                        "Lower batch_size or prefetch_bytes, or use parallel='threads'."
                    )
                self.parallel = "threads"  # "auto": threads need no shared memory

    def __len__(self) -> int:
        """Number of batches."""
        return -(-len(self.boxes) // self.batch_size)

    # -- reading on the threads -------------------------------------------------
    def _patch_boxes(self) -> tuple[list[int], list[int], list[int]]:
        """Level px corners and sides of the patches read for all boxes (see :meth:`_read`).

        Computed once, as lists of Python ints, so the reader threads only look them up.
        """
        plan = self.plan
        lx, ly = self.boxes[:, 0] / plan.downsample, self.boxes[:, 1] / plan.downsample
        side = np.full(len(lx), plan.read_size, dtype=np.int64)
        if plan.resample:
            ox, oy = np.floor(lx) - 1, np.floor(ly) - 1
        else:
            ox, oy = np.round(lx), np.round(ly)  # half to even, as Python's round()
        if plan.exact:
            whole = (lx == np.floor(lx)) & (ly == np.floor(ly))
            ox, oy = np.where(whole, lx, ox), np.where(whole, ly, oy)
            side[whole] = plan.pool * self.tile_size
        return ox.astype(np.int64).tolist(), oy.astype(np.int64).tolist(), side.tolist()

    def _patch_box(self, index: int) -> tuple[int, int, int]:
        """Level px corner and side of the patch read for box ``index``."""
        ox, oy, side = self._patches
        return ox[index], oy[index], side[index]

    def _read(self, handles: _Handles, staging: _Staging, index: int) -> _Read:
        ox, oy, side = self._patch_box(index)
        reduce = self._reduced_on_read(side)
        staged = side == staging.side or reduce
        error: Exception | None = None
        for _attempt in range(2):  # one retry, on a fresh handle
            try:
                out = staging.slot(index // self.batch_size, index % self.batch_size)
                if reduce:  # k x k area average in this thread (PIL releases the GIL)
                    patch = handles.get().read_level_box(
                        ox, oy, self.plan.level, side, side, out=handles.scratch(side)
                    )
                    out[...] = np.asarray(Image.fromarray(patch).reduce(self.plan.pool))
                    return _Read(index, out, (float(ox), float(oy)), staged=True)
                pixels = handles.get().read_level_box(
                    ox, oy, self.plan.level, side, side, out=out if staged else None
                )
                return _Read(index, pixels, (float(ox), float(oy)), staged=staged)
            except Exception as exc:  # any reader failure
                error = exc
                handles.drop()
        message = self._failure(index, f"{type(error).__name__}: {error}")
        if self.on_error == "skip":
            return _Read(index, None, (0.0, 0.0), message)
        raise TileReadError(
            message + ". Pass on_error='skip' to record it and continue."
        ) from error

    def _reads(self, staging: _Staging) -> Iterator[_Read]:
        if self.parallel == "processes":
            yield from self._process_reads(staging)
            return
        handles = _Handles(self.slide)
        pool = ThreadPoolExecutor(max_workers=self.num_workers, thread_name_prefix="wsimito-read")
        # Threads take runs of consecutive boxes (never across a batch), not single boxes: a
        # future per box cost the main thread and the readers more GIL time than cropping.
        chunk = self._chunk()
        pending: deque[Future[list[_Read]]] = deque()
        in_flight = 0
        try:
            for start, stop in self._runs(chunk):
                pending.append(pool.submit(self._read_run, handles, staging, start, stop))
                in_flight += stop - start
                while in_flight >= self.window:
                    reads = pending.popleft().result()
                    in_flight -= len(reads)
                    yield from reads
            while pending:
                yield from pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            handles.close()

    def _chunk(self) -> int:
        """Boxes per reader-thread task: up to a batch, with two tasks per thread in the window."""
        return max(1, min(self.batch_size, self.window // (2 * self.num_workers)))

    def _runs(self, chunk: int) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` box ranges of up to ``chunk`` boxes, none crossing a batch."""
        n, size = len(self.boxes), self.batch_size
        for first in range(0, n, size):
            last = min(first + size, n)
            for start in range(first, last, chunk):
                yield start, min(start + chunk, last)

    def _read_run(self, handles: _Handles, staging: _Staging, start: int, stop: int) -> list[_Read]:
        return [self._read(handles, staging, index) for index in range(start, stop)]

    def _process_reads(self, staging: _Staging) -> Iterator[_Read]:
        """As :meth:`_reads`, with reader processes writing into shared memory.

        Box ``i`` goes to slot ``i % window``; a slot's pixels are copied into
        the batch's staging buffer (or a new array) before box ``i + window`` is
        submitted, so no slot is overwritten while it is still needed.
        """
        plan = self.plan
        with ProcessReads(self.slide, self.num_workers, self.window, self._slot_side()) as readers:
            pending: deque[tuple[int, int, int, Future[tuple[int, str | None]]]] = deque()

            def collect() -> _Read:
                index, ox, oy, future = pending.popleft()
                try:
                    written, error = future.result()
                except Exception as exc:  # a worker process died (e.g. a crash in C code)
                    written, error = 0, f"the reader process failed: {type(exc).__name__}: {exc}"
                    if self.on_error == "raise":
                        raise TileReadError(
                            self._failure(index, error) + ". Pass parallel='threads' to read "
                            "in this process."
                        ) from exc
                if error is not None:
                    if self.on_error == "skip":
                        return _Read(index, None, (0.0, 0.0), self._failure(index, error))
                    raise TileReadError(
                        self._failure(index, error) + ". Pass on_error='skip' to record it and "
                        "continue."
                    )
                pixels = readers.pixels(index % self.window, written)
                staged = written == staging.side
                if staged:
                    out = staging.slot(index // self.batch_size, index % self.batch_size)
                    out[...] = pixels
                else:
                    out = pixels.copy()
                return _Read(index, out, (float(ox), float(oy)), staged=staged)

            for index in range(len(self.boxes)):
                ox, oy, read_side = self._patch_box(index)
                reduce = self._reduced_on_read(read_side)
                future = readers.submit(
                    index % self.window,
                    ox,
                    oy,
                    plan.level,
                    read_side,
                    plan.pool if reduce else 1,
                )
                pending.append((index, ox, oy, future))
                if len(pending) >= self.window:
                    yield collect()
            while pending:
                yield collect()

    def _reduced_on_read(self, side: int) -> bool:
        """Whether a patch of ``side`` level px is reduced by the reader (thread or process)."""
        return self.host_pool and side == self.plan.pool * self.tile_size

    def _slot_side(self) -> int:
        """Side, px, of a shared-memory slot: the largest patch a reader process writes."""
        plan = self.plan
        if self.host_pool:  # exact reductions arrive reduced
            return max(self.tile_size, plan.read_size)
        return max(plan.pool * self.tile_size if plan.exact else 0, plan.read_size)

    def _failure(self, index: int, error: str) -> str:
        x, y = self.boxes[index]
        box_side = self.tile_size * self.plan.scale
        return (
            f"reading {self.slide.name} at level-0 box (x={x:.1f}, y={y:.1f}, w={box_side:.1f}, "
            f"h={box_side:.1f}), level {self.plan.level}, failed twice: {error}"
        )

    # -- batches on the device ----------------------------------------------------
    def __iter__(self) -> Iterator[TileBatch]:
        """Batches in the order of ``boxes``; each holds up to ``batch_size`` tiles."""
        plan = self.plan
        if self.host_pool:
            side = self.tile_size
        else:
            side = plan.pool * self.tile_size if plan.exact else plan.read_size
        staging = _Staging(self.batch_size, side, pinned=self.device.type == "cuda")
        transfer = _Transfer(self.device)
        batch: list[_Read] = []
        number = 0
        for item in self._reads(staging):
            batch.append(item)
            if len(batch) == self.batch_size:
                yield self._assemble(batch, number, staging, transfer)
                batch, number = [], number + 1
        if batch:
            yield self._assemble(batch, number, staging, transfer)

    def _assemble(
        self, batch: list[_Read], number: int, staging: _Staging, transfer: _Transfer
    ) -> TileBatch:
        good = [item for item in batch if item.pixels is not None]
        skipped = [(item.index, str(item.error)) for item in batch if item.pixels is None]
        index = np.array([item.index for item in good], dtype=np.int64)
        plan, size = self.plan, self.tile_size
        buffer = staging.take(number)
        if not good:
            staging.give_back(buffer)
            empty = torch.empty((0, 3, size, size), dtype=torch.uint8, device=self.device)
            return TileBatch(empty, index, np.empty((0, 2)), plan.scale, skipped)
        origins = np.array([item.origin for item in good], dtype=np.float64)  # level px
        whole = buffer is not None and len(good) == len(batch) and all(i.staged for i in good)
        groups: dict[tuple[int, int], list[int]] = {}
        for k, item in enumerate(good):
            groups.setdefault(item.pixels.shape[:2], []).append(k)  # type: ignore[union-attr]
        out: torch.Tensor | None = None
        aliased = False
        for shape, members in groups.items():
            if whole:  # the threads decoded straight into this batch's buffer
                stack, aliased = transfer.to_device(buffer[: len(good)])  # type: ignore[index]
            else:
                host = torch.from_numpy(np.stack([good[k].pixels for k in members]))  # type: ignore[misc]
                stack, _ = transfer.to_device(host)
            if not plan.resample or (self.host_pool and shape[0] == size):
                tiles = stack  # at the target resolution already (read so, or reduced on read)
            elif plan.exact and shape[0] == plan.pool * size:
                tiles = _area_pool(stack, plan.pool)
            else:
                offsets = self.boxes[index[members]] / plan.downsample - origins[members]
                tiles = resample_batch(
                    stack, torch.from_numpy(offsets), plan.factor, size, plan.pool
                )
            if len(groups) == 1:
                out = tiles  # no copy; when aliased, the staging buffer now belongs to the batch
            else:
                if out is None:
                    out = torch.empty(
                        (len(good), 3, size, size),
                        dtype=torch.uint8,
                        device=self.device,
                        memory_format=torch.channels_last,
                    )
                out[members] = tiles
        as_read = not plan.resample or self.host_pool
        if not (whole and as_read and aliased):
            staging.give_back(buffer, transfer.last_event)
        assert out is not None
        if plan.resample:
            corners = self.boxes[index]
            scale = plan.scale
        else:
            corners = origins * plan.downsample
            scale = plan.downsample
        return TileBatch(out, index, corners, scale, skipped)


class _Staging:
    """Host buffers that reader threads decode into, one per batch in flight.

    Thread ``t`` reading box ``i`` writes its pixels straight into
    ``buffer[i // batch_size][i % batch_size]`` (no per-tile array, no stacking
    copy). Buffers are pinned on CUDA, so the copy to the device can run
    asynchronously, and are reused once their copy has finished.
    """

    def __init__(self, batch_size: int, side: int, *, pinned: bool) -> None:
        self.batch_size, self.side, self.pinned = batch_size, side, pinned
        self._lock = threading.Lock()
        self._live: dict[int, tuple[torch.Tensor, np.ndarray]] = {}  # buffer, its numpy view
        self._free: list[tuple[torch.Tensor, torch.cuda.Event | None]] = []

    def _new(self) -> torch.Tensor:
        for k, (buffer, event) in enumerate(self._free):
            if event is None or event.query():
                del self._free[k]
                return buffer
        shape = (self.batch_size, self.side, self.side, 3)
        return torch.empty(shape, dtype=torch.uint8, pin_memory=self.pinned)

    def slot(self, number: int, k: int) -> np.ndarray:
        """The ``(side, side, 3)`` uint8 place of tile ``k`` of batch ``number``."""
        with self._lock:
            live = self._live.get(number)
            if live is None:
                buffer = self._new()
                live = self._live[number] = (buffer, buffer.numpy())
        place: np.ndarray = live[1][k]
        return place

    def take(self, number: int) -> torch.Tensor | None:
        """The buffer of batch ``number``, or ``None`` when no tile was staged in it."""
        with self._lock:
            live = self._live.pop(number, None)
        return None if live is None else live[0]

    def give_back(self, buffer: torch.Tensor | None, event: Any = None) -> None:
        """Reuse ``buffer`` once ``event`` (its copy to the device) has completed."""
        if buffer is not None:
            with self._lock:
                self._free.append((buffer, event))


class _Handles:
    """One slide handle per reader thread (:meth:`Slide.reopen`), all closed at the end."""

    def __init__(self, slide: Slide) -> None:
        self.slide = slide
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[Slide] = []

    def get(self) -> Slide:
        handle = getattr(self._local, "slide", None)
        if handle is None:
            handle = self._local.slide = self.slide.reopen()
            with self._lock:
                self._open.append(handle)
        return handle

    def scratch(self, side: int) -> np.ndarray:
        """The calling thread's reusable ``(side, side, 3)`` uint8 buffer for patches to reduce.

        A new array per patch costs page faults on every read (3 MiB for a 1,024 px patch).
        """
        buf: np.ndarray | None = getattr(self._local, "scratch", None)
        if buf is None or buf.shape[0] != side:
            buf = self._local.scratch = np.empty((side, side, 3), dtype=np.uint8)
        return buf

    def drop(self) -> None:
        """Forget this thread's handle (after a failure), so the next read reopens."""
        handle = getattr(self._local, "slide", None)
        self._local.slide = None
        if handle is not None:
            with self._lock:
                self._open.remove(handle)
            handle.close()

    def close(self) -> None:
        with self._lock:
            handles, self._open = self._open, []
        for handle in handles:
            handle.close()


class _Transfer:
    """Host-to-device copies of staged batches, on a side stream on CUDA.

    On CUDA the pinned staging buffer of batch ``k + 1`` is copied on a
    separate stream while batch ``k`` is computed; the compute stream waits on
    the copy's event, and the buffer is reused only after that event (see
    :class:`_Staging`). Elsewhere the tensor is used where it is.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self._stream = torch.cuda.Stream(device) if self.cuda else None
        self.last_event: Any = None

    def to_device(self, host: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Move a host batch to the device as ``(N, 3, S, S)`` uint8 channels-last.

        Parameters
        ----------
        host : torch.Tensor
            ``(N, S, S, 3)`` uint8 on the host.

        Returns
        -------
        tuple of (torch.Tensor, bool)
            The device batch, and whether it shares ``host``'s memory.
        """
        if not self.cuda:
            moved = host.to(self.device)
            self.last_event = None
            return moved.permute(0, 3, 1, 2), moved.data_ptr() == host.data_ptr()
        if not host.is_pinned():
            host = host.pin_memory()
        assert self._stream is not None
        with torch.cuda.stream(self._stream):
            gpu = host.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self._stream)
        self.last_event = event
        torch.cuda.current_stream(self.device).wait_event(event)
        gpu.record_stream(torch.cuda.current_stream(self.device))
        return gpu.permute(0, 3, 1, 2), False


def default_num_workers(device: str | torch.device) -> int:
    """How many readers :func:`wsimito.count_mitoses` starts when none are given.

    On a CPU the model needs the cores too, so readers take at most 4. On CUDA
    the host only reads, so readers take every core but one (for the main
    thread), at most 8: the number measured on a 16-core GPU host (about 1,600
    tiles of 512 px per second; see ``benchmarks/RESULTS.md``). More may pay on
    larger hosts; pass ``num_workers`` to try.

    Parameters
    ----------
    device : str or torch.device
        Where the detector runs.

    Returns
    -------
    int
        Reader threads or processes, >= 1.
    """
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    if torch.device(device).type == "cuda":
        return max(1, min(8, cores - 1))
    return max(1, min(4, cores))


def _area_pool(batch: torch.Tensor, k: int) -> torch.Tensor:
    """Exact ``k x k`` area averages of uint8 ``(N, 3, k*T, k*T)``, rounded half up, as uint8.

    Integer sums of strided slices in channels-last order: on a CPU this is
    about three times faster than ``avg_pool2d`` on floats, which matters
    because reduction shares the cores with decoding.
    """
    x = batch.permute(0, 2, 3, 1)  # (N, H, W, C): contiguous for a channels-last batch
    wide = torch.int16 if 255 * k * k < 2**15 else torch.int32
    x = x.to(wide)
    rows = x[:, 0::k]
    for i in range(1, k):
        rows = rows + x[:, i::k]
    total = rows[:, :, 0::k]
    for j in range(1, k):
        total = total + rows[:, :, j::k]
    area = k * k
    mean = torch.div(total + area // 2, area, rounding_mode="floor")
    return mean.to(torch.uint8).permute(0, 3, 1, 2)


def resample_batch(
    batch: torch.Tensor, offsets: torch.Tensor, factor: float, tile_size: int, pool: int = 1
) -> torch.Tensor:
    """Resample read patches to tiles on the batch's device.

    Parameters
    ----------
    batch : torch.Tensor
        The patches read, uint8 ``(N, 3, S, S)``.
    offsets : torch.Tensor
        ``(N, 2)`` float: the tile corner inside each patch, patch px
        (continuous coordinates).
    factor : float
        Patch px per output px.
    tile_size : int
        Output side, px.
    pool : int
        When shrinking by ``pool`` or more, a ``pool x pool`` patch px box filter runs
        first (area averaging).

    Returns
    -------
    torch.Tensor
        The tiles, uint8 ``(N, 3, tile_size, tile_size)``: output pixel ``u``
        samples the patch at ``offset + (u + 0.5) * factor``.
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


__all__ = ["ReadPlan", "TileBatch", "TileReader", "default_num_workers", "resample_batch"]
