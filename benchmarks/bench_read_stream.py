"""Reading a slide at the JPEG decode limit: the direct decoder against tiffslide.

Builds (once, cached) a 12,288 x 12,288 px JPEG-tiled pyramid TIFF of real H&E
(a mirrored mosaic of the TCGA sample at its native resolution with the H&E
target patch stamped on it; 256 x 256 px file tiles, JPEG quality 90, YCbCr
4:2:0, 0.25 µm/px, levels 1/4/16), then in one run, each figure the median of
``--repeat`` passes with min and max (passes interleaved):

(a) the decode limit: every level-0 file tile decoded once with imagecodecs
    (bytes already in memory) on 1 and 2 threads;
(b) tiffslide's and OpenSlide's ``read_region`` of every 512 px tile at stride
    448 (level 0, 0.25 µm/px), from 1 and 2 threads (one handle per thread);
    their 2 / 1 thread ratios show which reader holds the GIL;
(c) ``Slide.read_level_box`` over the same grid with the direct decoder and its
    tile cache (cleared before each pass), 1 and 2 threads, into a reused
    buffer; and with the cache off (2 threads), for its effect;
(d) at 0.5 µm/px: the 1,024 px level-0 boxes (input of a 2x area reduction)
    of every 512 px output tile at stride 448, ours and tiffslide's.

Run: .venv/bin/python benchmarks/bench_read_stream.py [--quick] [--repeat N]
``--quick``: a 4,096 px slide and one pass, as a smoke test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagecodecs
import numpy as np
import openslide
import tifffile
import tiffslide
from _common import load_average, machine, timed_rounds
from PIL import Image

import wsimito
from wsimito.data import fetch

MPP = 0.25
FILE_TILE = 256
GRID_TILE, GRID_STRIDE = 512, 448
TARGETS = {"coverage": 0.6, "scaling": 1.6, "vs_tiffslide": 0.8}


def build_slide(size: int, path: Path) -> None:
    """A mirrored mosaic of real H&E, written as a 4-level JPEG-tiled pyramid TIFF."""
    tcga = wsimito.open_slide(str(fetch("slides/tcga-cr-7395-01a-01-ts1.svs")), mpp=MPP)
    base = tcga.read_region((0, 0), 0, tcga.dimensions)
    patch = np.asarray(Image.open(fetch("images/he-target-tiatoolbox.png")).convert("RGB"))
    reps_y = -(-size // base.shape[0])
    reps_x = -(-size // base.shape[1])
    rows = []
    for j in range(reps_y):
        row = [base[:, ::-1] if (i + j) % 2 else base for i in range(reps_x)]
        block = np.concatenate(row, axis=1)
        rows.append(block[::-1] if j % 2 else block)
    image = np.ascontiguousarray(np.concatenate(rows, axis=0)[:size, :size])
    ph, pw = patch.shape[:2]
    for y in range(ph // 2, size - ph, 3 * ph):
        for x in range(pw // 2, size - pw, 3 * pw):
            image[y : y + ph, x : x + pw] = patch
    tmp = path.with_suffix(".partial.tif")
    with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        level = image
        for i, ds in enumerate((1, 4, 16)):
            if ds > 1:
                level = np.asarray(Image.fromarray(image).reduce(ds))  # area average of level 0
            tif.write(
                level,
                tile=(FILE_TILE, FILE_TILE),
                compression="jpeg",
                compressionargs={"level": 90},
                photometric="rgb",  # tifffile stores it as YCbCr 4:2:0 JPEG
                subfiletype=1 if i else 0,
                resolution=(1e4 / (MPP * ds),) * 2,
                resolutionunit="CENTIMETER",
            )
    os.replace(tmp, path)


def slide_path(size: int) -> Path:
    folder = Path(
        os.environ.get("WSIMITO_BENCH_CACHE", Path(tempfile.gettempdir()) / "wsimito-bench")
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"he-mosaic-v2-{size}-jpeg90-t{FILE_TILE}.tif"
    if not path.exists():
        t0 = time.perf_counter()
        build_slide(size, path)
        print(f"built {path} in {time.perf_counter() - t0:.1f} s")
    return path


def grid(size: int, tile: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners (px) of every tile at ``stride``, the last ones crossing the edge."""
    n = -(-(size - tile) // stride) + 1
    return [(x * stride, y * stride) for y in range(n) for x in range(n)]


def run_threads(n: int, boxes, make_worker) -> None:
    local = threading.local()

    def task(box):
        worker = getattr(local, "worker", None)
        if worker is None:
            worker = local.worker = make_worker()
        worker(box)

    with ThreadPoolExecutor(n) as pool:
        for _ in pool.map(task, boxes):
            pass


def decode_limit(path: Path, threads: int) -> Callable[[], None]:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        fh = tif.filehandle
        tables = page.jpegtables
        data = []
        for off, count in zip(page.dataoffsets, page.databytecounts, strict=True):
            fh.seek(off)
            data.append(fh.read(count))

    def decode(chunk):
        return imagecodecs.jpeg8_decode(chunk, tables=tables)

    def run():
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(decode, data):
                pass

    return run


def tiffslide_reader(path: Path, size: int):
    def make():
        ts = tiffslide.TiffSlide(str(path))
        return lambda box: ts.read_region(box, 0, (size, size), as_array=True)

    return make


def openslide_reader(path: Path, size: int):
    def make():
        osr = openslide.OpenSlide(str(path))
        return lambda box: np.asarray(osr.read_region(box, 0, (size, size)))

    return make


def ours_reader(slide, size: int):
    def make():
        handle = slide.reopen()
        buf = np.empty((size, size, 3), dtype=np.uint8)
        return lambda box: handle.read_level_box(box[0], box[1], 0, size, size, out=buf)

    return make


def summary(times: list[float]) -> str:
    return f"{statistics.median(times):.3f} s ({min(times):.3f}-{max(times):.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="4,096 px slide, one pass")
    ap.add_argument("--repeat", type=int, default=None, help="passes per figure (default 3)")
    args = ap.parse_args()
    size = 4096 if args.quick else 12288
    repeat = args.repeat or (1 if args.quick else 3)
    path = slide_path(size)
    print(f"machine: {machine()}")
    print(f"slide: {path.name}, {size} x {size} px, {MPP} µm/px, {FILE_TILE} px JPEG file tiles")
    print(f"load average at start: {load_average()}; {repeat} pass(es) per figure\n")

    slide = wsimito.open_slide(str(path), backend="tiffslide")
    assert slide.decoder == "direct", slide.decoder
    cache = slide.tile_cache
    level0_tiles = len(tifffile.TiffFile(path).pages[0].dataoffsets)
    boxes = grid(size, GRID_TILE, GRID_STRIDE)
    boxes_05 = grid(size, 2 * GRID_TILE, 2 * GRID_STRIDE)

    default_bytes = cache.max_bytes

    def ours(n: int, boxes, side: int, cache_bytes: int = default_bytes):
        def run():
            cache.max_bytes = cache_bytes
            cache.clear()
            cache.reset_stats()
            run_threads(n, boxes, ours_reader(slide, side))

        return run

    def theirs(n: int, boxes, side: int):
        return lambda: run_threads(n, boxes, tiffslide_reader(path, side))

    def osr(n: int, boxes, side: int):
        return lambda: run_threads(n, boxes, openslide_reader(path, side))

    big = 2 * GRID_TILE
    rows = [
        ("(a) decode limit, 1 thread", "limit1", decode_limit(path, 1), level0_tiles),
        ("(a) decode limit, 2 threads", "limit2", decode_limit(path, 2), level0_tiles),
        ("(b) tiffslide read_region, 1 thread", "ts1", theirs(1, boxes, GRID_TILE), len(boxes)),
        ("(b) tiffslide read_region, 2 threads", "ts2", theirs(2, boxes, GRID_TILE), len(boxes)),
        ("(b) OpenSlide read_region, 1 thread", "os1", osr(1, boxes, GRID_TILE), len(boxes)),
        ("(b) OpenSlide read_region, 2 threads", "os2", osr(2, boxes, GRID_TILE), len(boxes)),
        ("(c) ours, direct + cache, 1 thread", "ours1", ours(1, boxes, GRID_TILE), len(boxes)),
        ("(c) ours, direct + cache, 2 threads", "ours2", ours(2, boxes, GRID_TILE), len(boxes)),
        (
            "(c) ours, direct, no cache, 2 threads",
            "nocache2",
            ours(2, boxes, GRID_TILE, 0),
            len(boxes),
        ),
        (
            "(d) 0.5 µm/px: tiffslide 1024² boxes, 2 threads",
            "ts05",
            theirs(2, boxes_05, big),
            len(boxes_05),
        ),
        (
            "(d) 0.5 µm/px: ours 1024² boxes, 1 thread",
            "ours05_1",
            ours(1, boxes_05, big),
            len(boxes_05),
        ),
        (
            "(d) 0.5 µm/px: ours 1024² boxes, 2 threads",
            "ours05_2",
            ours(2, boxes_05, big),
            len(boxes_05),
        ),
    ]
    print("| what | items | wall time: median (min-max) | CPU s | items/s | MP/s |")
    print("|---|---|---|---|---|---|")
    hit_rates: dict[str, float] = {}

    def with_hit_rate(key: str, fn: Callable[[], None]) -> Callable[[], None]:
        def run():
            fn()
            if key.startswith(("ours", "nocache")):
                hit_rates[key] = cache.hit_rate

        return run

    results, cpu = timed_rounds({key: with_hit_rate(key, fn) for _, key, fn, _ in rows}, repeat)
    for label, key, _, items in rows:
        times = results[key]
        med = statistics.median(times)
        side = FILE_TILE if key.startswith("limit") else big if "05" in key else GRID_TILE
        mp = items * side * side / 1e6
        print(
            f"| {label} | {items} | {summary(times)} | {statistics.median(cpu[key]):.3f} | "
            f"{items / med:.0f} | {mp / med:.0f} |"
        )
    cache.max_bytes = default_bytes

    med = {k: statistics.median(v) for k, v in results.items()}
    print()
    print(
        f"tile cache: {default_bytes / 2**20:.0f} MiB; hit rate per pass "
        + ", ".join(f"{k} {v:.1%}" for k, v in hit_rates.items())
    )
    checks = [
        (
            "coverage at 0.25 µm/px: decode-limit time / our time (2 threads)",
            med["limit2"] / med["ours2"],
            TARGETS["coverage"],
        ),
        (
            "coverage at 0.5 µm/px: decode-limit time / our time (2 threads)",
            med["limit2"] / med["ours05_2"],
            TARGETS["coverage"],
        ),
        ("ours 2 threads / 1 thread", med["ours1"] / med["ours2"], TARGETS["scaling"]),
        ("ours 2 threads / 1 thread at 0.5 µm/px", med["ours05_1"] / med["ours05_2"], None),
        ("tiffslide 2 threads / 1 thread (GIL held?)", med["ts1"] / med["ts2"], None),
        ("OpenSlide 2 threads / 1 thread (GIL held?)", med["os1"] / med["os2"], None),
        ("decode limit 2 threads / 1 thread", med["limit1"] / med["limit2"], None),
        ("ours vs tiffslide, 2 threads (speed ratio)", med["ts2"] / med["ours2"], 0.8),
        (
            "CPU s per pass: decode limit / ours (2 threads; load-independent)",
            statistics.median(cpu["limit2"]) / statistics.median(cpu["ours2"]),
            None,
        ),
        ("ours vs tiffslide at 0.5 µm/px, 2 threads", med["ts05"] / med["ours05_2"], None),
    ]
    print("\n| ratio | value | target |")
    print("|---|---|---|")
    for label, value, target in checks:
        verdict = "-" if target is None else f">= {target} {'met' if value >= target else 'MISSED'}"
        print(f"| {label} | {value:.2f} | {verdict} |")
    print(f"\nload average at end: {load_average()}")


if __name__ == "__main__":
    main()
