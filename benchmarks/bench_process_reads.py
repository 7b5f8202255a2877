"""Reader processes against reader threads on a backend that holds the GIL (tiffslide).

The read-only stream of ``bench_stream.py`` (``count_mitoses`` with a detector
that returns nothing, ``tissue=None``, 512 px tiles with 64 px overlap at
0.25 µm/px) on the same JPEG-tiled pyramid of real H&E, opened with tiffslide
and its own decoder (``decoder="backend"``), in interleaved rounds:

1. tiffslide, reader threads, 1 and 2 workers;
2. tiffslide, reader processes (shared memory), 1 and 2 workers;
3. for reference, wsimito's direct decoder with 2 threads (the default path
   for this file).

Ratios: 2 / 1 workers for threads and for processes (how each scales on two
cores), and processes / threads at 2 workers, as speeds. Wall time only: the
workers' CPU time is not the parent's. Each figure is the median of
``--repeat`` passes with min and max.

Run: .venv/bin/python benchmarks/bench_process_reads.py [--size 16384] [--repeat 3]
"""

from __future__ import annotations

import argparse
import warnings

from _common import command, load_average, machine, repeat_count, rounds_table, timed_rounds
from bench_read_stream import slide_path
from bench_stream import NoDetections

import wsimito


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=16384, help="slide side, px at 0.25 µm/px")
    ap.add_argument("--repeat", type=repeat_count, default=3)
    args = ap.parse_args()
    warnings.simplefilter("ignore", UserWarning)
    path = slide_path(args.size)
    backend = wsimito.open_slide(path, backend="tiffslide", decoder="backend")
    direct = wsimito.open_slide(path)
    n = len(wsimito.TileGrid(backend, tile_size=512, overlap=64, mpp=0.25))
    print(command())
    print(f"{machine()}; {path.name} ({args.size}² px), {n} tiles; load average {load_average()}")

    def stream(slide, workers: int, parallel: str):
        det = NoDetections(0.25)
        return lambda: wsimito.count_mitoses(
            slide,
            det,
            tissue=None,
            num_workers=workers,
            batch_size=8,
            parallel=parallel,
            progress=False,
        )

    fns = {
        "tiffslide, threads, 1 worker": stream(backend, 1, "threads"),
        "tiffslide, threads, 2 workers": stream(backend, 2, "threads"),
        "tiffslide, processes, 1 worker": stream(backend, 1, "processes"),
        "tiffslide, processes, 2 workers": stream(backend, 2, "processes"),
        "direct decoder, threads, 2 workers (reference)": stream(direct, 2, "threads"),
    }
    wall, _ = timed_rounds(fns, args.repeat)
    print(f"\nload average at end {load_average()}")
    med = rounds_table(wall, dict.fromkeys(fns, n))
    t1, t2 = med["tiffslide, threads, 1 worker"], med["tiffslide, threads, 2 workers"]
    p1, p2 = med["tiffslide, processes, 1 worker"], med["tiffslide, processes, 2 workers"]
    print(f"threads 2 / 1 workers: {t1 / t2:.2f}")
    print(f"processes 2 / 1 workers: {p1 / p2:.2f}")
    print(f"processes / threads at 2 workers, as speeds: {t2 / p2:.2f}")
    print(f"processes at 2 workers / direct decoder: {med[list(fns)[-1]] / p2:.2f} as speeds")


if __name__ == "__main__":
    main()
