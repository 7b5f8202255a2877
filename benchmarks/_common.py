"""Helpers shared by the benchmark scripts: interleaved timing rounds, table cells, machine facts.

House rule: a benchmark reports a ratio against a baseline measured in the same
run; results are the median of at least 3 runs with min and max
(:func:`timed_rounds`, :func:`median_range`, :func:`repeat_count`), and the
load average while it ran (:func:`load_average`, at start and end).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
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


def load_average() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def timed_rounds(
    fns: dict[str, Callable[[], object]],
    repeat: int,
    *,
    warmup: bool = True,
    sync: Callable[[], object] | None = None,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and process CPU times (s) of each function, in interleaved rounds.

    Interleaving spreads a busy machine's changing load over every figure
    alike, so that their ratios stay meaningful; CPU seconds per pass do not
    depend on the load at all. With ``warmup`` each function runs once first
    (page cache, imports, thread pools); ``sync`` (e.g. ``torch.cuda.synchronize``)
    is called before and after each timed call.
    """
    if warmup:
        for fn in fns.values():
            fn()
    wall: dict[str, list[float]] = {key: [] for key in fns}
    cpu: dict[str, list[float]] = {key: [] for key in fns}
    for _ in range(repeat):
        for key, fn in fns.items():
            if sync is not None:
                sync()
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            if sync is not None:
                sync()
            wall[key].append(time.perf_counter() - t0)
            cpu[key].append(time.process_time() - c0)
    return wall, cpu


def median_range(values: list[float], fmt: str = ".3f", scale: float = 1.0) -> str:
    """The table cell "median (min-max)" of ``values`` times ``scale``."""
    v = [x * scale for x in values]
    return f"{statistics.median(v):{fmt}} ({min(v):{fmt}}-{max(v):{fmt}})"


def rounds_table(
    wall: dict[str, list[float]],
    tiles: dict[str, int | None],
    cpu: dict[str, list[float]] | None = None,
) -> dict[str, float]:
    """Print :func:`timed_rounds`' times as a markdown table and return their medians.

    Columns: path, wall s as "median (min-max)", CPU s (median; with ``cpu``) and
    tiles/s (``tiles[path]`` per pass; left empty where it is ``None``).
    """
    med = {key: statistics.median(v) for key, v in wall.items()}
    cpu_head, cpu_rule = ("CPU s | ", "---|") if cpu is not None else ("", "")
    print(f"| path | wall s, median (min-max) | {cpu_head}tiles/s |")
    print(f"|---|---|{cpu_rule}---|")
    for key, times in wall.items():
        cpu_cell = f"{statistics.median(cpu[key]):.2f} | " if cpu is not None else ""
        n = tiles.get(key)
        rate = "" if n is None else f"{n / med[key]:.0f}"
        print(f"| {key} | {median_range(times, '.2f')} | {cpu_cell}{rate} |")
    return med


def repeat_count(text: str) -> int:
    """argparse type for ``--repeat``: the house rule is a median of at least 3 runs."""
    n = int(text)
    if n < 3:
        raise argparse.ArgumentTypeError(f"--repeat must be >= 3 (median of 3 runs), got {n}")
    return n


def command() -> str:
    """The command line that ran this script, as a markdown line to print above a table."""
    script = f"benchmarks/{Path(sys.argv[0]).name}"
    return f"`.venv/bin/python {shlex.join([script, *sys.argv[1:]])}`"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    return (
        f"{platform.system()} {cpu}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"torch {torch.__version__}"
    )
