"""Many slides: `count_many` with 1 and 2 local workers against a plain sequential loop.

The same synthetic slides (JPEG SVS, written once) are counted, in every
repetition and in turn:

- ``loop``: ``for path in slides: count_mitoses(path, detector)`` in this
  process, the detector loaded once (what a user writes first);
- ``count_many`` with a LocalCluster of 1 and of 2 worker processes, end to
  end: cluster start, workers importing torch and loading the detector,
  outputs, manifest and summary tables included.

Slides per hour are reported as the median, min and max over the
repetitions, with the load average before and after. Peak memory per worker
is the largest peak resident memory a worker process reported (the manifest's
``peak_rss_mib``, VmHWM on Linux), next to the limit count_many gave the workers
(:func:`wsimito.distributed.estimate_worker_memory`).

Run: .venv/bin/python benchmarks/bench_batch.py [--quick] [--repeat 3] [--slides 6]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from _common import machine

import wsimito
from wsimito.batch import peak_rss_mib
from wsimito.synthetic import write_slide


def _detector(name: str):
    if name == "dark-blob":
        return wsimito.DarkBlobDetector(mpp=0.5, tile_size=256, overlap=32, device="cpu")
    return wsimito.load_detector(name, device="cpu")


def _loop(paths: list[str], detector) -> float:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in paths:
            wsimito.count_mitoses(path, detector, progress=False)
    return time.perf_counter() - start


def _many(paths: list[str], detector, workers: int, out: Path) -> tuple[float, float, float]:
    """Seconds end to end, the largest worker peak RSS (MiB) and the memory limit (MiB)."""
    from wsimito.batch import SlideJob, output_name
    from wsimito.distributed import _driver_detector, _memory_limit

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = wsimito.count_many(paths, out, detector=detector, workers=workers, progress=False)
    seconds = time.perf_counter() - start
    if not batch.ok:
        raise RuntimeError(f"slides failed: {batch.table[['slide', 'error']]}")
    jobs = [SlideJob(p, output_name(p)) for p in paths]
    limit = _memory_limit(jobs, _driver_detector(detector), {}, gpu=False)
    return seconds, float(batch.table["peak_rss_mib"].max()), limit / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 small slides, 1 repetition")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--slides", type=int, default=6)
    parser.add_argument("--size", type=int, default=4096, help="slide side, px at 0.25 µm/px")
    parser.add_argument("--detector", default="demo", help="'demo' or 'dark-blob'")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.slides, args.size = 1, 4, 1536
    detector = _detector(args.detector)
    with tempfile.TemporaryDirectory(prefix="wsimito-bench-batch-") as tmp:
        root = Path(tmp)
        paths = []
        for k in range(args.slides):
            path = root / f"slide{k}.svs"
            write_slide(path, args.size, args.size, mpp=0.25, seed=k)
            paths.append(str(path))
        runs: dict[str, list[float]] = {"loop": [], "1 worker": [], "2 workers": []}
        peaks: dict[str, list[float]] = {"1 worker": [], "2 workers": []}
        limits: list[float] = []
        load_before = os.getloadavg()
        loop_peak = None
        for rep in range(args.repeat):
            runs["loop"].append(_loop(paths, detector))
            loop_peak = loop_peak or peak_rss_mib()  # before any count_many in this process
            for workers, key in ((1, "1 worker"), (2, "2 workers")):
                seconds, peak, limit = _many(
                    paths, detector, workers, root / f"out-{rep}-{workers}"
                )
                runs[key].append(seconds)
                peaks[key].append(peak)
                limits.append(limit)
        load_after = os.getloadavg()
    print(f"Machine: {machine()}")
    print(
        f"{args.slides} synthetic JPEG SVS slides of {args.size}² px at 0.25 µm/px, detector "
        f"{args.detector!r} on the CPU, {args.repeat} repetition(s); load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after\n"
    )
    print("| run | slides/h median | min | max | peak RSS per process (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for key, times in runs.items():
        rates = [args.slides / t * 3600 for t in times]
        peak = f"{loop_peak:.0f} (this process)" if key == "loop" else f"{max(peaks[key]):.0f}"
        print(
            f"| {key} | {statistics.median(rates):.0f} | {min(rates):.0f} | {max(rates):.0f} "
            f"| {peak} |"
        )
    print(f"\nWorker memory limit set by count_many: {max(limits):.0f} MiB")


if __name__ == "__main__":
    main()
