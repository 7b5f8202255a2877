"""count_mitoses: end-to-end throughput and peak memory.

1. Throughput on a synthetic JPEG SVS read through OpenSlide, with the point
   detector architecture of the demo model:
   - end to end (`count_mitoses`, tissue=None so every tile is processed),
   - the detector alone on the same tiles already in memory (upper bound),
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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openslide
import torch
from _common import machine

import wsimito
from wsimito.pipeline import count_mitoses
from wsimito.tiling import TileGrid


def point_detector(tile_size: int = 512):
    from wsimito.models import load_detector

    try:
        return load_detector("demo", device="cpu")
    except Exception:  # bundled weights not trained yet: same architecture, random weights
        from wsimito.models.detectors import PointDetector
        from wsimito.models.pointnet import PointHeatmapNet

        return PointDetector(
            PointHeatmapNet(),
            mpp=0.25,
            tile_size=tile_size,
            overlap=64,
            threshold=0.5,
            device="cpu",
        )


def naive_loop(path: str, det, boxes: np.ndarray, radius_px: float) -> int:
    """What a user writes first: read each tile with OpenSlide, one forward pass each.

    NMS runs at the end.
    """
    osr = openslide.OpenSlide(path)
    pts, scores = [], []
    size = det.tile_size
    for x, y, _w, _h in boxes:
        rgba = np.asarray(osr.read_region((int(x), int(y)), 0, (size, size)))
        tile = torch.from_numpy(np.ascontiguousarray(rgba[:, :, :3])).permute(2, 0, 1)[None]
        with torch.inference_mode():
            out = det.detect(tile.to(det.device))[0].cpu().numpy()
        for px, py, s in out:
            pts.append((x + px, y + py))
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


def throughput(size: int) -> dict:
    from wsimito.synthetic import write_slide

    det = point_detector()
    tmp = Path(tempfile.mkdtemp())
    path = str(tmp / "bench.svs")
    write_slide(path, size, size, mpp=0.25, seed=7, format="svs", compression="jpeg", tile_size=256)
    slide = wsimito.open_slide(path, backend="openslide")
    grid = TileGrid(slide, tile_size=det.tile_size, overlap=det.overlap, mpp=det.mpp)
    n = len(grid)
    torch.set_num_threads(2)

    t0 = time.perf_counter()
    result = count_mitoses(slide, det, tissue=None, progress=False, batch_size=8)
    t_e2e = time.perf_counter() - t0 - result.timing["tissue_seconds"]

    tiles = torch.stack(
        [
            torch.from_numpy(
                slide.read_region((int(b[0]), int(b[1])), 0, (det.tile_size,) * 2)
            ).permute(2, 0, 1)
            for b in grid.boxes()
        ]
    )
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, n, 8):
            det.detect(tiles[i : i + 8].contiguous(memory_format=torch.channels_last))
    t_alone = time.perf_counter() - t0

    t0 = time.perf_counter()
    naive_loop(path, det, grid.boxes(), radius_px=3.0 / 0.25)
    t_naive = time.perf_counter() - t0
    return {"tiles": n, "e2e": n / t_e2e, "alone": n / t_alone, "naive": n / t_naive}


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
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    print(f"machine: {machine()}\n")
    if not args.memory_only:
        report_throughput(throughput(2048 if args.quick else 4096))
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
    print(f"### Throughput ({t['tiles']} tiles of 512 px at 0.25 µm/px, CPU)\n")
    print("| path | tiles/s | ratio |")
    print("|---|---|---|")
    print(f"| detector alone, tiles in memory | {t['alone']:.2f} | 1.00 |")
    print(
        f"| count_mitoses end to end | {t['e2e']:.2f} "
        f"| {t['e2e'] / t['alone']:.2f} of detector alone |"
    )
    print(
        f"| naive loop (read_region, 1 tile/forward, global NMS) | {t['naive']:.2f} | "
        f"end to end is {t['e2e'] / t['naive']:.2f}x faster |"
    )


if __name__ == "__main__":
    main()
