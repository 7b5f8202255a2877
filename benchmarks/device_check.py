"""One-shot device benchmark: detector alone, read-only stream and count_mitoses end to end.

Run through ``benchmarks/device_check.sh`` on a machine with a CUDA GPU (it
also runs, as a dry run with a CPU-only report, anywhere else):

    python benchmarks/device_check.py --out device-check [--quick]

For the point detector (the demo's first-stage network, run at 0.25 µm/px on 512 px tiles,
3.2 GFLOPs per tile) and the MIDOG RetinaNet (random weights, 30.7 GFLOPs per
tile), at fp32 and bf16 (CUDA only), on its own virtual JPEG-tiled pyramids:

- the detector alone on tiles already on the device (tiles/s);
- the read-only stream: :class:`wsimito.reader.TileReader` over the slide's
  grid with a detector that returns nothing (tiles/s), with the direct tile
  decoder where the slide allows it;
- ``count_mitoses`` end to end (tiles/s), and its ratio to the larger of the
  two (a perfect overlap reaches 1.0 on a GPU), with where its main thread
  waited (for the reader, in ``detect``, merging);
- the read-only stream of the point detector's tiles with 1, 2, 4, 8, ... reader
  threads up to the core count (how reading scales on the host);
- CPU/GPU agreement: the same points within 0.5 level-0 px and equal counts
  at the default threshold, on a small slide, the device at fp32 (set
  explicitly) against the CPU at fp32; and, reported beside it, the device at
  bf16 against the same reference (counts must agree; bf16 moves points).

Each figure is the median of ``--repeat`` runs with min and max. The time
per 100,000 x 80,000 px slide assumes a third of it is tissue (about 12,000
tiles of 512 px at 0.25 µm/px with 64 px overlap). Results go to
``OUT/device_check.md`` and ``OUT/device_check.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import wsimito
from wsimito.models.detectors import PointDetector, RetinaNetDetector
from wsimito.models.pointnet import PointHeatmapNet
from wsimito.reader import TileReader, default_num_workers

#: Tiles of 512 px at 0.25 µm/px (stride 448) on a 100k x 80k slide with a third tissue.
WHOLE_SLIDE_TILES = math.ceil(100_000 / 448) * math.ceil(80_000 / 448) // 3


class NoDetections:
    """A detector that returns nothing at once: what is left is reading and moving tiles."""

    def __init__(self, mpp: float, tile_size: int, overlap: int, device: torch.device) -> None:
        self.mpp, self.tile_size, self.overlap = mpp, tile_size, overlap
        self.threshold, self.device = 0.5, device
        self.name, self.metadata, self.min_distance_um = "none", {}, None

    def detect(self, tiles: torch.Tensor) -> list[torch.Tensor]:
        return [torch.zeros((0, 3), device=tiles.device) for _ in range(len(tiles))]


def environment() -> dict[str, Any]:
    env = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "wsimito": wsimito.__version__,
        "platform": platform.platform(),
        "cpu_cores": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
        "load_average": os.getloadavg(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1))
    try:
        import nvidia.nvimgcodec  # noqa: F401

        env["gpu_decode"] = "nvImageCodec"
    except ImportError:
        env["gpu_decode"] = None
    return env


def make_slide(folder: Path, size: int, seed: int) -> Path:
    from wsimito.synthetic import write_slide

    path = folder / f"virtual-{size}-{seed}.svs"
    if not path.exists():
        write_slide(path, size, size, mpp=0.25, seed=seed, tissue_fraction=0.9, mitoses_per_mm2=40)
    return path


def timed(fn: Any, repeat: int, sync: bool) -> dict[str, float]:
    fn()  # warm-up (cudnn autotune, caches, compile)
    times = []
    for _ in range(repeat):
        if sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def detectors(device: torch.device, precision: str) -> dict[str, Any]:
    """The two models. The point detector carries the trained weights of the demo's first
    stage (run at 0.25 µm/px for the 512 px tiles of the goal), so that it returns as few
    points as a trained model: random weights put hundreds of weak peaks in every tile,
    and the time would measure their merging. RetinaNet has random weights (its reference
    weights cannot be downloaded here); its decoder keeps the top boxes per tile."""
    first = wsimito.load_detector("demo", device="cpu").candidates
    net = PointHeatmapNet(**first.model.config)
    net.load_state_dict(first.model.state_dict())
    options = wsimito.detect.RuntimeOptions(device=device, precision=precision)  # type: ignore[arg-type]
    return {
        "point": PointDetector(
            net,
            mpp=0.25,
            tile_size=512,
            overlap=64,
            mean=first.normalize.mean,
            std=first.normalize.std,
            options=options,
        ),
        "retinanet": RetinaNetDetector(options=options),
    }


def tiles_per_s(n: int, seconds: dict[str, float]) -> dict[str, float]:
    """``n`` tiles over :func:`timed`'s seconds as rates (the slowest run gives the min)."""
    return {"median": n / seconds["median"], "min": n / seconds["max"], "max": n / seconds["min"]}


def read_stream(slide: Any, boxes: Any, det: Any, batch: int, workers: int) -> None:
    """Read every box through :class:`TileReader` onto the detector's device."""
    reader = TileReader(
        slide,
        boxes,
        mpp=det.mpp,
        tile_size=det.tile_size,
        overlap=det.overlap,
        batch_size=batch,
        device=det.device,
        num_workers=workers,
    )
    for b in reader:
        b.pixels.sum()  # touch the pixels on the device


def stream_scaling(
    slide_path: Path, det: Any, batch: int, repeat: int, counts: list[int]
) -> list[dict[str, float]]:
    """The read-only stream's tiles/s for each number of reader threads in ``counts``."""
    slide = wsimito.open_slide(slide_path)
    boxes = wsimito.TileGrid(
        slide, tile_size=det.tile_size, overlap=det.overlap, mpp=det.mpp
    ).boxes()
    rows = []
    for workers in counts:
        t = timed(
            lambda w=workers: read_stream(slide, boxes, det, batch, w),
            repeat,
            det.device.type == "cuda",
        )
        rows.append({"workers": workers, **tiles_per_s(len(boxes), t)})
        print(json.dumps(rows[-1]), flush=True)
    slide.close()
    return rows


def measure(
    slide_path: Path, det: Any, batch: int, repeat: int, workers: int
) -> dict[str, dict[str, float]]:
    sync = det.device.type == "cuda"
    slide = wsimito.open_slide(slide_path)
    grid = wsimito.TileGrid(slide, tile_size=det.tile_size, overlap=det.overlap, mpp=det.mpp)
    boxes = grid.boxes()
    n = len(boxes)
    tiles = torch.randint(0, 256, (batch, 3, det.tile_size, det.tile_size), dtype=torch.uint8)
    tiles = tiles.to(det.device).contiguous(memory_format=torch.channels_last)

    def alone() -> None:
        for _ in range(math.ceil(n / batch)):
            det.detect(tiles)

    def stream() -> None:
        read_stream(slide, boxes, det, batch, workers)

    stages: list[dict[str, Any]] = []

    def end_to_end() -> None:
        result = wsimito.count_mitoses(
            slide, det, tissue=None, batch_size=batch, num_workers=workers, progress=False
        )
        stages.append(result.timing)

    out = {}
    for name, fn in (("detector", alone), ("stream", stream), ("end_to_end", end_to_end)):
        t = timed(fn, repeat, sync)
        out[name] = {**tiles_per_s(n, t), "tiles": n}
    # Where the main thread spent the timed end-to-end runs (the warm-up run left out):
    # waiting for the reader, in detect, merging. The largest is what limits.
    for key in ("read_wait_seconds", "detect_seconds", "merge_seconds"):
        out["end_to_end"][key] = statistics.median(t[key] for t in stages[1:])
    slide.close()
    return out


def agreement(slide_path: Path, workers: int, precision: str = "fp32") -> dict[str, Any]:
    """The bundled demo detector on the CPU at fp32 against the device at ``precision``:
    equal counts at its default threshold, and the counted points within 0.5 level-0 px.

    The precision is set explicitly: ``"auto"`` (the default) runs bf16 autocast on
    CUDA, and a check meant to compare fp32 with fp32 must not inherit it. TF32 is off
    for the fp32 check (it rounds fp32 convolutions on the GPU to 10 bits of mantissa).
    Without CUDA the "device" is the CPU itself: at fp32 there is nothing to compare,
    and at bf16 the check shows what bf16 alone does to the points.
    """
    from wsimito.detect import RuntimeOptions

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and precision == "fp32":
        return {"checked": False, "precision": precision, "why": "no CUDA device"}
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    results = {}
    try:
        for name, dev, prec in (("reference", "cpu", "fp32"), ("device", device, precision)):
            options = RuntimeOptions(device=dev, precision=prec)  # type: ignore[arg-type]
            det = wsimito.load_detector("demo", device=dev, options=options)
            results[name] = wsimito.count_mitoses(
                slide_path, det, num_workers=workers, progress=False
            )
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    ref, dev_result = results["reference"].counted(), results["device"].counted()
    from scipy.spatial import cKDTree

    if len(ref.xy) and len(dev_result.xy):
        dist, _ = cKDTree(dev_result.xy).query(ref.xy)
        worst = float(dist.max())
        beyond = int((dist > 0.5).sum())
    else:
        worst = 0.0 if len(ref.xy) == len(dev_result.xy) else math.inf
        beyond = 0
    return {
        "checked": True,
        "reference": "cpu fp32",
        "device": device,
        "precision": precision,
        "reference_count": results["reference"].count,
        "device_count": results["device"].count,
        "candidates": [len(results["reference"].points), len(results["device"].points)],
        "max_counted_point_distance_px": worst,
        "counted_points_beyond_0.5_px": beyond,
        "ok": results["reference"].count == results["device"].count and worst <= 0.5,
    }


def markdown(
    env: dict[str, Any],
    rows: list[dict[str, Any]],
    agree: list[dict[str, Any]],
    scaling: list[dict[str, float]],
) -> str:
    lines = [
        "# device_check",
        "",
        f"Device: {env.get('gpu', 'CPU only (no CUDA device): a dry run')}; "
        f"{env['cpu_cores']} CPU cores; torch {env['torch']}; Python {env['python']}; "
        f"GPU decode: {env['gpu_decode'] or 'not installed'}; "
        f"load average at start {env['load_average'][0]:.2f}.",
        "",
        "| model | precision | tiles | detector alone (tiles/s) | read-only stream (tiles/s) "
        "| end to end (tiles/s) | end to end / min(detector, stream) | 100k x 80k slide (s) "
        "| main thread: read wait / detect / merge (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        d, s, e = r["detector"], r["stream"], r["end_to_end"]
        bound = min(d["median"], s["median"])
        lines.append(
            f"| {r['model']} | {r['precision']} | {d['tiles']} "
            f"| {d['median']:.1f} ({d['min']:.1f}-{d['max']:.1f}) "
            f"| {s['median']:.1f} ({s['min']:.1f}-{s['max']:.1f}) "
            f"| {e['median']:.1f} ({e['min']:.1f}-{e['max']:.1f}) "
            f"| {e['median'] / bound:.2f} | {WHOLE_SLIDE_TILES / e['median']:.0f} "
            f"| {e['read_wait_seconds']:.2f} / {e['detect_seconds']:.2f} "
            f"/ {e['merge_seconds']:.2f} |"
        )
    lines += [
        "",
        f"Read-only stream of the point detector's tiles by reader threads "
        f"(default here: {env['default_workers']}):",
        "",
        "| reader threads | tiles/s, median (min-max) |",
        "|---:|---:|",
    ]
    for r in scaling:
        lines.append(f"| {r['workers']} | {r['median']:.1f} ({r['min']:.1f}-{r['max']:.1f}) |")
    lines += [""]
    for item in agree:
        lines += [f"Agreement with the CPU at fp32 ({item['precision']}): {json.dumps(item)}"]
    lines += [""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("device-check"))
    parser.add_argument("--quick", action="store_true", help="small slides, one repeat")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", type=int, default=None, help="slide side, px at 0.25 µm/px")
    parser.add_argument(
        "--workers", type=int, default=None, help="reader threads (default: as count_mitoses)"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore", UserWarning)
    env = environment()
    print(json.dumps(env, indent=1), flush=True)
    cuda = env["cuda"]
    device = torch.device("cuda" if cuda else "cpu")
    size = args.size or (1536 if args.quick else (12_288 if cuda else 3072))
    repeat = 1 if args.quick else args.repeat
    workers = args.workers or default_num_workers(device)
    env["default_workers"] = default_num_workers(device)
    cores = os.cpu_count() or 1
    batch = 32 if cuda else 4
    folder = Path(tempfile.gettempdir()) / "wsimito-device-check"
    folder.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    slide_path = make_slide(folder, size, seed=7)
    small = make_slide(folder, 4096, seed=8)
    print(f"slides written in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for precision in ("fp32", "bf16") if cuda else ("fp32",):
        for model, det in detectors(device, precision).items():
            if model == "retinanet" and not cuda and not args.quick:
                continue  # 0.4 tiles/s on a CPU: minutes for nothing
            r = measure(slide_path, det, batch, repeat, workers)
            rows.append({"model": model, "precision": precision, **r})
            print(json.dumps(rows[-1]), flush=True)
    counts = sorted({n for n in (1, 2, 4, 8, 12, 16, cores - 1, cores) if 1 <= n <= cores})
    if args.quick:
        counts = counts[:2]
    point = detectors(device, "fp32")["point"]
    scaling = stream_scaling(slide_path, point, batch, repeat, counts)
    # fp32 is the check (it must pass); bf16 is reported, and fails only on unequal counts
    agree = [agreement(small, workers, "fp32"), agreement(small, workers, "bf16")]
    report = markdown(env, rows, agree, scaling)
    (args.out / "device_check.md").write_text(report)
    (args.out / "device_check.json").write_text(
        json.dumps(
            {"environment": env, "rows": rows, "scaling": scaling, "agreement": agree}, indent=1
        )
    )
    print(report)
    fp32, bf16 = agree
    counts_equal = bf16.get("reference_count") == bf16.get("device_count")
    return 0 if fp32.get("ok", True) and counts_equal else 1


if __name__ == "__main__":
    sys.exit(main())
