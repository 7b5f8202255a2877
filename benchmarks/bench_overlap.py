"""Does count_mitoses overlap reading with a model that runs elsewhere (a GPU)?

On a CPU, reading and the model compete for the same cores, so they cannot
overlap. On a GPU the model's time is time the host spends waiting, with the
GIL released. This benchmark stands in a detector for that: it waits
(``time.sleep``, GIL released, no CPU) for a fixed time per batch, chosen so
that the model alone takes as long as the read-only stream. Then, on the
JPEG-tiled pyramid of real H&E of ``bench_stream.py`` (512 px tiles, 64 px
overlap, 0.25 µm/px, 2 reader threads), in interleaved rounds:

1. the read-only stream (a detector that returns nothing at once);
2. the model alone: the waits summed over the slide's batches (no reading);
3. end to end: the waiting detector through ``count_mitoses``.

Ratio (issue 15's GPU target, here with a stand-in model): end to end / the
larger of stream and model, <= 1.15. A pipeline that does not overlap gives
about 2.

Run: .venv/bin/python benchmarks/bench_overlap.py [--size 12288] [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from _common import load_average, machine, repeat_count, rounds_table, timed_rounds
from bench_read_stream import slide_path
from bench_stream import NoDetections

import wsimito

BATCH = 8


class WaitingDetector(NoDetections):
    """Follows the Detector protocol; waits ``seconds`` per batch with the GIL released."""

    def __init__(self, mpp: float, seconds: float) -> None:
        super().__init__(mpp)
        self.seconds = seconds

    def detect(self, tiles: torch.Tensor) -> list[torch.Tensor]:
        time.sleep(self.seconds)
        return super().detect(tiles)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=12288, help="slide side, px at 0.25 µm/px")
    ap.add_argument("--repeat", type=repeat_count, default=3)
    ap.add_argument("--workers", type=int, default=2, help="reader threads")
    ap.add_argument("--quick", action="store_true", help="4,096 px slide, 3 passes")
    args = ap.parse_args()
    size = 4096 if args.quick else args.size
    warnings.simplefilter("ignore", UserWarning)
    path = slide_path(size)
    slide = wsimito.open_slide(path)
    n_tiles = len(wsimito.TileGrid(slide, tile_size=512, overlap=64, mpp=0.25))
    batches = -(-n_tiles // BATCH)
    print(
        f"{machine()}; slide {path.name} ({size}² px, decoder {slide.decoder}), "
        f"{n_tiles} tiles in {batches} batches of {BATCH}; load average at start {load_average()}"
    )

    def run(det) -> None:
        wsimito.count_mitoses(
            slide, det, tissue=None, num_workers=args.workers, batch_size=BATCH, progress=False
        )

    # Calibrate the wait: the model alone takes as long as the stream (median of 3).
    quiet = NoDetections(0.25)
    run(quiet)
    calibration = []
    for _ in range(3):
        t0 = time.perf_counter()
        run(quiet)
        calibration.append(time.perf_counter() - t0)
    stream_s = statistics.median(calibration)
    wait = stream_s / batches
    waiting = WaitingDetector(0.25, wait)
    print(f"wait per batch {wait * 1e3:.1f} ms (stream median {stream_s:.2f} s)")

    fns = {
        "read-only stream": lambda: run(quiet),
        "model alone (waits only)": lambda: [time.sleep(wait) for _ in range(batches)],
        "end to end": lambda: run(waiting),
    }
    wall, cpu = timed_rounds(fns, args.repeat)
    print(f"\nload average at end {load_average()}")
    med = rounds_table(wall, dict.fromkeys(fns, n_tiles), cpu)
    larger = max(med["read-only stream"], med["model alone (waits only)"])
    ratio = med["end to end"] / larger
    serial = med["end to end"] / (med["read-only stream"] + med["model alone (waits only)"])
    print(f"end to end / larger of stream and model (<= 1.15): {ratio:.2f}")
    print(f"end to end / (stream + model), 1.0 = no overlap at all: {serial:.2f}")


if __name__ == "__main__":
    main()
