"""count_mitoses as a stream: reading against the decode limit, and reading against the model.

On a JPEG-tiled pyramid of real H&E (the mosaic of ``bench_read_stream.py``,
0.25 µm/px, 256 px file tiles), in one run with interleaved rounds, each
figure the median of ``--repeat`` passes with min and max:

1. the decode limit: every level-0 file tile decoded once with imagecodecs on
   2 threads;
2. tiffslide's ``read_region`` of every 512 px grid tile (stride 448) from 2
   threads, the raw backend a user would call;
3. the read-only stream: ``count_mitoses`` with a detector that returns nothing
   at once (``tissue=None``), 512 px tiles with 64 px overlap at 0.25 µm/px,
   with 1 and 2 reader threads;
4. the same at 0.5 µm/px (the demo detector's resolution: read from the
   0.25 µm/px level and reduced 2x, on a CPU by the reader threads);
5. with ``--cached``, the stream at 0.25 µm/px with 1 and 2 threads from a hard
   link to the slide, whose own tile cache already holds every decoded file
   tile: what reading costs besides decoding, and whether that part scales
   with threads. With all of level 0 decoded in memory, most of it is copying
   those tiles out of main memory, which the real stream, whose small cache
   holds recently decoded tiles, does not do: it overstates the copies (see
   RESULTS.md and ``gil_profile.py``).
(``bench_pipeline.py`` measures the demo detector alone and end to end.)

Ratios (issue 15's targets): coverage = decode-limit time / stream time
(>= 0.6 at 0.25 µm/px, >= 0.5 at 0.5 µm/px); 2 / 1 reader threads (>= 1.6);
stream / tiffslide (>= 0.8, as speeds).

Run: .venv/bin/python benchmarks/bench_stream.py [--size 16384] [--repeat 3] [--quick] [--cached]
"""

from __future__ import annotations

import argparse
import os
import shutil
import warnings

import torch
from _common import load_average, machine, rounds_table, timed_rounds
from bench_read_stream import (
    decode_limit,
    grid,
    run_threads,
    slide_path,
    tiffslide_reader,
)

import wsimito


class NoDetections:
    """Follows the Detector protocol and returns nothing at once."""

    def __init__(self, mpp: float, tile_size: int = 512, overlap: int = 64) -> None:
        self.mpp, self.tile_size, self.overlap = mpp, tile_size, overlap
        self.threshold, self.device = 0.5, torch.device("cpu")
        self.name, self.metadata, self.min_distance_um = "none", {}, None

    def detect(self, tiles: torch.Tensor) -> list[torch.Tensor]:
        return [torch.zeros((0, 3)) for _ in range(len(tiles))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=16384, help="slide side, px at 0.25 µm/px")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="4,096 px slide, one pass")
    ap.add_argument(
        "--cached",
        action="store_true",
        help="also stream with every file tile decoded in advance (holds level 0 decoded: "
        "about 0.8 GB at the default size)",
    )
    args = ap.parse_args()
    size, repeat = (4096, 1) if args.quick else (args.size, args.repeat)
    warnings.simplefilter("ignore", UserWarning)
    path = slide_path(size)
    slide = wsimito.open_slide(path)
    print(
        f"{machine()}; slide {path.name} ({size}² px, decoder {slide.decoder}); "
        f"load average at start {load_average()}"
    )

    def stream(mpp: float, workers: int, source: wsimito.Slide = slide):
        det = NoDetections(mpp)
        return lambda: wsimito.count_mitoses(
            source, det, tissue=None, num_workers=workers, batch_size=8, progress=False
        )

    n_half = len(wsimito.TileGrid(slide, tile_size=512, overlap=64, mpp=0.5))
    n_full = len(wsimito.TileGrid(slide, tile_size=512, overlap=64, mpp=0.25))

    boxes = grid(size, 512, 448)
    fns = {
        "decode limit (2 threads)": decode_limit(path, 2),
        "tiffslide read_region (2 threads)": lambda: run_threads(
            2, boxes, tiffslide_reader(path, 512)
        ),
        "stream 0.25 µm/px (1 thread)": stream(0.25, 1),
        "stream 0.25 µm/px (2 threads)": stream(0.25, 2),
        "stream 0.5 µm/px (2 threads)": stream(0.5, 2),
    }
    if args.cached:
        # Handles of one file share one tile cache in a process, so the cached stream reads a
        # hard link to the slide (another path: a cache of its own), sized for all of level 0
        # and filled once.
        twin = path.with_name(f"{path.stem}-twin{path.suffix}")
        if not twin.exists():
            try:
                os.link(path, twin)
            except OSError:  # another file system, or no hard links
                shutil.copyfile(path, twin)
        warm = wsimito.open_slide(twin)
        cache = warm.tile_cache
        if cache is None:
            raise SystemExit(f"{path.name} is not read by the direct decoder: --cached needs it")
        if cache is slide.tile_cache:
            raise SystemExit(f"{twin} shares the slide's tile cache; remove it and rerun")
        cache.max_bytes = size * size * 3 * 2
        stream(0.25, 2, warm)()
        fns["stream 0.25 µm/px, tiles cached (1 thread)"] = stream(0.25, 1, warm)
        fns["stream 0.25 µm/px, tiles cached (2 threads)"] = stream(0.25, 2, warm)
    wall, cpu = timed_rounds(fns, repeat)
    print(
        f"\nload average at end {load_average()}; {n_full} tiles at 0.25 µm/px, "
        f"{n_half} at 0.5 µm/px; {len(boxes)} grid boxes for tiffslide"
    )
    tiles = {
        key: None if key.startswith("decode") else n_half if "0.5" in key else n_full for key in fns
    }
    med = rounds_table(wall, tiles, cpu)
    limit = med["decode limit (2 threads)"]
    ratios = {
        "coverage at 0.25 µm/px (>= 0.6)": limit / med["stream 0.25 µm/px (2 threads)"],
        "coverage at 0.5 µm/px (>= 0.5)": limit / med["stream 0.5 µm/px (2 threads)"],
        "2 / 1 reader threads (>= 1.6)": med["stream 0.25 µm/px (1 thread)"]
        / med["stream 0.25 µm/px (2 threads)"],
        "stream / tiffslide read_region, speed (>= 0.8)": (
            med["tiffslide read_region (2 threads)"] / med["stream 0.25 µm/px (2 threads)"]
        ),
    }
    if args.cached:
        ratios["tiles cached: 2 / 1 reader threads"] = (
            med["stream 0.25 µm/px, tiles cached (1 thread)"]
            / med["stream 0.25 µm/px, tiles cached (2 threads)"]
        )
        ratios["tiles cached: share of the 1-thread stream's time"] = (
            med["stream 0.25 µm/px, tiles cached (1 thread)"] / med["stream 0.25 µm/px (1 thread)"]
        )
    for key, value in ratios.items():
        print(f"{key}: {value:.2f}")
    print(
        f"cpu count {os.cpu_count()}; the decode limit covers the whole level 0 once, and so "
        "does each stream (at 0.5 µm/px it reads level 0 and reduces it 2x)"
    )


if __name__ == "__main__":
    main()
