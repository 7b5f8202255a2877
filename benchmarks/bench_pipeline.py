"""count_mitoses: end-to-end throughput and peak memory.

1. Throughput on the real-H&E JPEG mosaic of ``bench_read_stream.py``
   (32,768 px at 0.25 µm/px: 1,369 tiles of 512 px at the demo detector's
   0.5 µm/px, so that streaming, not fixed costs, is measured), with the
   bundled demo detector, interleaved rounds, median of 3:
   - end to end (`count_mitoses`, tissue=None so every tile is processed),
   - the detector alone on tiles already in memory (upper bound): 64 tiles spread
     evenly over the slide, cycled until as many tiles as the slide has ran,
   - the naive loop a user would write: OpenSlide `read_region` per tile,
     one tile per forward pass, a global radius NMS at the end.
2. Peak RSS of `count_mitoses` on a small and a very large virtual slide
   (80,000 x 80,000 px), each in its own process, with the cheap dark-blob
   detector at 1 µm/px so that the large slide finishes in minutes.

Run: .venv/bin/python benchmarks/bench_pipeline.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import openslide
import torch
from _common import machine
from PIL import Image

import wsimito
from wsimito.pipeline import count_mitoses
from wsimito.reader import TileReader
from wsimito.tiling import TileGrid


def naive_loop(path: str, det, boxes: np.ndarray, radius_px: float) -> int:
    """What a user writes first: read each tile with OpenSlide, one forward pass each.

    NMS runs at the end.
    """
    osr = openslide.OpenSlide(path)
    pts, scores = [], []
    size = det.tile_size
    scale = det.mpp / float(osr.properties[openslide.PROPERTY_NAME_MPP_X])
    read = round(size * scale)
    for x, y, _w, _h in boxes:
        region = osr.read_region((int(x), int(y)), 0, (read, read)).convert("RGB")
        if read != size:
            region = region.resize((size, size), Image.Resampling.BOX)
        tile = torch.from_numpy(np.asarray(region).copy()).permute(2, 0, 1)[None]
        with torch.inference_mode():
            out = det.detect(tile.to(det.device))[0].cpu().numpy()
        for px, py, s in out:
            pts.append((x + px * scale, y + py * scale))
            scores.append(s)
    if not pts:
        return 0
    from scipy.spatial import cKDTree

    pts_a, sc = np.array(pts), np.array(scores)
    order = np.argsort(-sc)
    tree = cKDTree(pts_a)
    removed = np.zeros(len(pts_a), bool)
    keep = 0
    for i in order:
        if removed[i]:
            continue
        keep += sc[i] >= det.threshold
        removed[tree.query_ball_point(pts_a[i], radius_px)] = True
    return int(keep)


def throughput(size: int, repeat: int) -> dict:
    """Tiles/s of each path on the real-H&E mosaic, interleaved rounds, median of ``repeat``."""
    from _common import load_average, timed_rounds
    from bench_read_stream import slide_path
    from bench_stream import NoDetections

    path = str(slide_path(size))
    det = wsimito.load_detector("demo", device="cpu")
    slide = wsimito.open_slide(path)
    grid = TileGrid(slide, tile_size=det.tile_size, overlap=det.overlap, mpp=det.mpp)
    n = len(grid)
    # 64 tiles spread evenly over the slide, read once: the cascade's cost depends on how
    # many candidates a tile has, so a few neighbouring tiles would not stand for the slide.
    sample = grid.boxes()[np.linspace(0, n - 1, min(n, 64)).round().astype(int)]
    batches = [
        b.pixels for b in TileReader(slide, sample, mpp=det.mpp, tile_size=512, batch_size=8)
    ]

    def alone() -> None:
        with torch.inference_mode():
            for k in range(0, n, 8):
                det.detect(batches[(k // 8) % len(batches)])

    def run(detector) -> None:
        count_mitoses(slide, detector, tissue=None, progress=False, batch_size=8, num_workers=2)

    fns = {
        "alone": alone,
        "stream": lambda: run(NoDetections(det.mpp, det.tile_size, det.overlap)),
        "e2e": lambda: run(det),
        "naive": lambda: naive_loop(path, det, grid.boxes(), radius_px=6.25 / 0.25),
    }
    start = load_average()
    wall, _ = timed_rounds(fns, repeat)
    rates = {k: sorted(n / t for t in v) for k, v in wall.items()}
    return {"tiles": n, "rates": rates, "load": (start, load_average()), "slide": Path(path).name}


def memory_child(width: int) -> None:
    """Run in a subprocess: count on a virtual slide of width x width px, print peak RSS (MB)."""
    from wsimito.models.detectors import DarkBlobDetector
    from wsimito.synthetic import virtual_slide

    slide = virtual_slide(width, width, mpp=0.25, seed=11)
    det = DarkBlobDetector(mpp=1.0, tile_size=512, overlap=32, device="cpu")
    t0 = time.perf_counter()
    result = count_mitoses(slide, det, progress=False, batch_size=8)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "width": width,
                "tiles": result.timing["tiles"],
                "seconds": time.perf_counter() - t0,
                "peak_rss_mb": peak_mb,
                "tissue_mm2": result.tissue_area_mm2,
            }
        )
    )


def memory(widths: list[int]) -> list[dict]:
    rows = []
    for width in widths:
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(width)],
            check=True,
            capture_output=True,
            text=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--memory-child", type=int, default=None)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument(
        "--size", type=int, default=32768, help="mosaic side, px at 0.25 µm/px (default 32768)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (>= 3)")
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    print(f"machine: {machine()}\n")
    if not args.memory_only:
        report_throughput(
            throughput(4096 if args.quick else args.size, 1 if args.quick else args.repeat)
        )
    if args.skip_memory:
        return
    rows = memory([8000, 80000] if not args.quick else [4000, 40000])
    print("\n### Peak memory (virtual slides, dark-blob detector at 1 µm/px)\n")
    print("| slide (px) | tiles | seconds | peak RSS (MB) |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['width']} x {r['width']} | {r['tiles']} | {r['seconds']:.1f} "
            f"| {r['peak_rss_mb']:.0f} |"
        )
    print(f"\nlarge - small peak RSS: {rows[-1]['peak_rss_mb'] - rows[0]['peak_rss_mb']:+.0f} MB")


def report_throughput(t: dict) -> None:
    def cell(key: str) -> str:
        r = t["rates"][key]
        return f"{statistics.median(r):.1f} ({r[0]:.1f}-{r[-1]:.1f})"

    med = {k: statistics.median(v) for k, v in t["rates"].items()}
    print(
        f"### Throughput ({t['tiles']} tiles of 512 px at 0.5 µm/px from the 0.25 µm/px level of "
        f"{t['slide']}, demo detector, CPU; load average {t['load'][0]} -> {t['load'][1]})\n"
    )
    print("| path | tiles/s, median (min-max) | ratio |")
    print("|---|---|---|")
    print(f"| demo detector alone, tiles in memory | {cell('alone')} | 1.00 |")
    print(f"| read-and-reduce stream alone (no detections) | {cell('stream')} | |")
    bound = 1 / (1 / med["stream"] + 1 / med["alone"])
    print(
        f"| count_mitoses end to end | {cell('e2e')} | {med['e2e'] / med['alone']:.2f} of alone; "
        f"time / (stream + alone) = {bound / med['e2e']:.2f} |"
    )
    print(
        f"| naive loop (OpenSlide read_region at level 0, PIL 2x, 1 tile/forward, global NMS) "
        f"| {cell('naive')} | end to end is {med['e2e'] / med['naive']:.2f}x faster |"
    )


if __name__ == "__main__":
    main()
