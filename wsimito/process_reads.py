"""Reader worker processes that hand pixels over through shared memory.

Some backends hold the GIL while they decode (tiffslide's read path, for one),
so reader *threads* cannot run them on two cores at once. Reader *processes*
can. Each worker process opens its own handle on the slide once, reads the
level patches it is given and writes them straight into numbered slots of one
:class:`multiprocessing.shared_memory.SharedMemory` block; only the slot
number, the patch side and an error message cross the process boundary, never
the pixels (no pickling of tiles).

:class:`ProcessReads` is what :class:`wsimito.reader.TileReader` uses with
``parallel="processes"``. Workers start with ``fork`` on Linux, as PyTorch's
``DataLoader`` workers do: the child runs only slide reading (no torch, no
CUDA), and a script needs no ``if __name__ == "__main__":`` guard. Elsewhere
they start with ``spawn``, which re-imports the main script in each worker:
there ``"auto"`` keeps to threads, and a script that asks for processes needs
the guard, as with any multiprocessing.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
import uuid
import warnings
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Literal

import numpy as np
from PIL import Image

from .slide import Slide

Parallel = Literal["auto", "threads", "processes"]
PARALLEL_MODES: tuple[str, ...] = ("auto", "threads", "processes")

#: Backends whose read path holds the GIL (measured in ``benchmarks/bench_process_reads.py``):
#: with ``parallel="auto"`` their slides are read by processes.
GIL_BOUND_BACKENDS: frozenset[str] = frozenset({"tiffslide"})

#: With ``parallel="auto"``, fewer boxes than this are read by threads: a short read
#: would not win back the start of the worker processes and their slide handles.
MIN_BOXES_FOR_PROCESSES = 512

_worker: dict[str, Any] = {}


def shared_memory_free() -> int | None:
    """Free bytes where shared-memory blocks live (``/dev/shm``), where that is known.

    Returns
    -------
    int or None
        Bytes available to this user under ``/dev/shm`` on Linux; ``None``
        elsewhere. Containers often have little: Docker's default is 64 MiB.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        stats = os.statvfs("/dev/shm")
    except OSError:
        return None
    return int(stats.f_bavail * stats.f_frsize)


def start_method() -> str:
    """Name the start method of reader processes.

    Returns
    -------
    str
        ``"fork"`` on Linux, ``"spawn"`` elsewhere (see the module notes).
    """
    return "fork" if sys.platform.startswith("linux") else "spawn"


def choose_parallel(slide: Slide, parallel: Parallel, num_workers: int, boxes: int) -> str:
    """Decide between reader threads and reader processes.

    Parameters
    ----------
    slide : Slide
        The slide to read.
    parallel : {"auto", "threads", "processes"}
        The request. ``"auto"`` picks processes only for a file-backed slide
        whose backend holds the GIL (:data:`GIL_BOUND_BACKENDS`, with the
        backend's own decoder), more than one worker and at least
        :data:`MIN_BOXES_FOR_PROCESSES` boxes, on Linux (see the module notes);
        threads otherwise.
    num_workers : int
        Reader workers.
    boxes : int
        Boxes to read.

    Returns
    -------
    str
        ``"threads"`` or ``"processes"``.

    Raises
    ------
    ValueError
        For an unknown mode; ``"processes"`` for a slide held in memory (an
        array, an image or an in-memory store: every process would get a
        copy), or inside a daemonic process such as a Dask worker, which may
        not start children. Use threads there; ``"auto"`` does.
    """
    if parallel not in PARALLEL_MODES:
        raise ValueError(f"parallel must be one of {PARALLEL_MODES}, got {parallel!r}")
    in_memory = slide.path is None
    daemon = multiprocessing.current_process().daemon
    if parallel == "processes":
        if in_memory:
            raise ValueError(
                "parallel='processes' needs a slide opened from a file; this one is held in "
                "memory (an array or image), which threads read without copies: use "
                "parallel='threads'"
            )
        if daemon:
            raise ValueError(
                "parallel='processes' cannot start reader processes inside a daemonic process "
                "(a Dask worker, for one): use parallel='threads' there"
            )
        return "processes"
    if parallel == "threads" or in_memory or daemon:
        return "threads"
    worth_it = (
        slide.backend in GIL_BOUND_BACKENDS
        and slide.decoder == "backend"
        and num_workers > 1
        and boxes >= MIN_BOXES_FOR_PROCESSES
        and start_method() == "fork"
    )
    return "processes" if worth_it else "threads"


def _start(slide_state: bytes, shm_name: str, slots: int, side: int) -> None:
    """Worker initializer: attach the shared block and open this process's own handle.

    The slide arrives pickled (its reopening recipe), and is unpickled here, so
    that a forked worker never reads through a file descriptor it shares with
    the parent or its siblings: they would move one file offset under each other.
    """
    shm = SharedMemory(name=shm_name)
    _worker["shm"] = shm
    _worker["slots"] = np.ndarray((slots, side, side, 3), dtype=np.uint8, buffer=shm.buf)
    _worker["slide"] = pickle.loads(slide_state)


def _read(slot: int, x: int, y: int, level: int, side: int, pool: int) -> tuple[int, str | None]:
    """Read one level box into ``slot`` (reduced ``pool`` x ``pool`` by PIL when > 1).

    Returns the side written, px, and ``None``; or 0 and the error after two
    tries (the second on a freshly opened handle).
    """
    error = ""
    for _attempt in range(2):
        slide: Slide = _worker["slide"]
        try:
            if pool > 1:
                patch = slide.read_level_box(x, y, level, side, side)
                out = side // pool
                _worker["slots"][slot, :out, :out] = np.asarray(Image.fromarray(patch).reduce(pool))
                return out, None
            slide.read_level_box(x, y, level, side, side, out=_worker["slots"][slot, :side, :side])
            return side, None
        except Exception as exc:  # any reader failure: report it, as the threads do
            error = f"{type(exc).__name__}: {exc}"
            try:
                slide.close()
            finally:
                _worker["slide"] = slide.reopen()
    return 0, error


class ProcessReads:
    """A pool of reader processes and the shared block they write into.

    Parameters
    ----------
    slide : Slide
        A file-backed slide; each process opens its own handle (the slide is
        pickled as its reopening recipe, not as pixels).
    num_workers : int
        Processes.
    slots : int
        Patches that may be in flight at once (the prefetch window).
    side : int
        Largest patch side, px; each slot holds ``side x side x 3`` bytes.

    Notes
    -----
    Slot ``k`` may be reused only after :meth:`pixels` for its previous patch
    has been copied out; :class:`~wsimito.reader.TileReader` numbers slots by
    box index modulo the window, and never has more than the window in flight.
    Use as a context manager: the block is unlinked and the processes are
    stopped on exit, also when the consumer stops early.
    """

    def __init__(self, slide: Slide, num_workers: int, slots: int, side: int) -> None:
        self.side = int(side)
        self.slots = int(slots)
        size = max(1, self.slots * self.side * self.side * 3)
        self._pool: ProcessPoolExecutor | None = None
        self._shm: SharedMemory | None = SharedMemory(
            name=f"wsimito-{uuid.uuid4().hex[:16]}", create=True, size=size
        )
        self._view: np.ndarray | None = np.ndarray(
            (self.slots, self.side, self.side, 3), dtype=np.uint8, buffer=self._shm.buf
        )
        self._shm_name = self._shm.name
        try:
            self._pool = ProcessPoolExecutor(
                max_workers=num_workers,
                mp_context=multiprocessing.get_context(start_method()),
                initializer=_start,
                initargs=(pickle.dumps(slide), self._shm_name, self.slots, self.side),
            )
        except BaseException:
            self._release()
            raise

    @property
    def name(self) -> str:
        """Name of the shared-memory block (under ``/dev/shm`` on Linux)."""
        return self._shm_name

    def submit(
        self, slot: int, x: int, y: int, level: int, side: int, pool: int = 1
    ) -> Future[tuple[int, str | None]]:
        """Read the ``side`` px level box at level px ``(x, y)`` into ``slot``.

        Parameters
        ----------
        slot : int
            Slot to fill, in ``[0, slots)``.
        x, y : int
            Top-left corner, px of ``level``.
        level : int
            Pyramid level.
        side : int
            Box side, px of ``level``; at most the slot side (times ``pool``).
        pool : int
            Reduce the box ``pool`` x ``pool`` (exact area average) before storing.

        Returns
        -------
        concurrent.futures.Future
            Resolves to ``(side written, None)`` or ``(0, error message)``.
        """
        with warnings.catch_warnings():
            # Python >= 3.12 warns about fork() in a process with threads (torch's); the
            # child only reads the slide, as a DataLoader worker would.
            warnings.filterwarnings(
                "ignore", "This process .* is multi-threaded", DeprecationWarning
            )
            if self._pool is None:
                raise RuntimeError("these reader processes were closed")
            return self._pool.submit(_read, slot, x, y, level, side, pool)

    def pixels(self, slot: int, side: int) -> np.ndarray:
        """Return the pixels a read left in ``slot``.

        Parameters
        ----------
        slot : int
            The slot, in ``[0, slots)``.
        side : int
            The side the read reported, px.

        Returns
        -------
        numpy.ndarray
            A ``(side, side, 3)`` uint8 view into shared memory: copy it before
            the slot is reused.

        Raises
        ------
        RuntimeError
            After :meth:`close`.
        """
        if self._view is None:
            raise RuntimeError("these reader processes were closed")
        view: np.ndarray = self._view[slot, :side, :side]
        return view

    def close(self) -> None:
        """Stop the processes (pending reads are cancelled) and free the shared block."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self._release()

    def _release(self) -> None:
        shm = self._shm
        if shm is None:
            return
        self._view = None
        self._shm = None
        shm.close()
        shm.unlink()

    def __enter__(self) -> ProcessReads:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["GIL_BOUND_BACKENDS", "PARALLEL_MODES", "Parallel", "ProcessReads", "choose_parallel"]
