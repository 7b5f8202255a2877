"""Helpers shared by the benchmark scripts: timing, peak memory, machine facts."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "WSIMITO_DATA_DIR" not in os.environ and _SHARED.is_dir():
    os.environ["WSIMITO_DATA_DIR"] = str(_SHARED)


def tests_on_path() -> None:
    """Make the test helpers (``tests/_oracles.py``, ``tests/_marks.py``) importable."""
    tests = str(Path(__file__).resolve().parents[1] / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)


def best_of(fn: Callable[[], object], repeat: int = 5) -> float:
    """Median wall time of ``fn`` in seconds over ``repeat`` runs (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    return (
        f"{platform.system()} {cpu}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"torch {torch.__version__}"
    )
