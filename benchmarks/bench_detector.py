"""Detector cost: parameters, FLOPs per 512x512 tile, and tiles/s through ``detect``.

Compares our point detector (``PointHeatmapNet`` defaults, the demo
configuration) with the MIDOG reference RetinaNet, measured in the same run,
and prints a markdown table with the speed ratio against RetinaNet.

    python benchmarks/bench_detector.py                 # CPU, fp32
    python benchmarks/bench_detector.py --device cuda   # bf16/fp16 autocast, channels_last
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from wsimito.detect import TorchDetector, resolve_device
from wsimito.models import PointDetector, PointHeatmapNet, RetinaNetDA, RetinaNetDetector

TILE = 512


def count_flops(model: nn.Module) -> int:
    """FLOPs (2 per multiply-add) of one forward pass on a 3x512x512 input."""
    model = model.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, TILE, TILE))
    return counter.get_total_flops()


def tiles_per_second(detector: TorchDetector, batch_size: int, seconds: float) -> float:
    """Tiles/s of ``detector.detect`` on random uint8 tiles (after one warm-up batch)."""
    gen = torch.Generator().manual_seed(0)
    tiles = torch.randint(0, 256, (batch_size, 3, TILE, TILE), dtype=torch.uint8, generator=gen).to(
        detector.device
    )

    def sync() -> None:
        if detector.device.type == "cuda":
            torch.cuda.synchronize(detector.device)

    detector.detect(tiles)
    sync()
    done, start = 0, time.perf_counter()
    while True:
        detector.detect(tiles)
        sync()
        done += batch_size
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    parser.add_argument("--precision", default="auto", help="auto, fp32, fp16 or bf16")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="tiles per batch (default: 4 on the CPU, 32 on a GPU)",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="timing per model, s")
    parser.add_argument("--compile", action="store_true", help="use torch.compile")
    args = parser.parse_args()

    device = resolve_device(args.device)
    batch_size = args.batch_size or (4 if device.type == "cpu" else 32)
    options = {"device": device, "precision": args.precision, "compile": args.compile}
    models = {
        "point detector (PointHeatmapNet defaults)": (
            PointHeatmapNet(),
            lambda m: PointDetector(m, **options),
        ),
        "MIDOG reference RetinaNet": (RetinaNetDA(), lambda m: RetinaNetDetector(m, **options)),
    }
    rows = []
    for label, (model, wrap) in models.items():
        params = sum(p.numel() for p in model.parameters())
        flops = count_flops(model)
        detector = wrap(model)
        rate = tiles_per_second(detector, batch_size, args.seconds)
        rows.append((label, params, flops, rate, detector))

    baseline = rows[-1][3]
    first = rows[0][4]
    print(
        f"device: {device} ({torch.get_num_threads()} CPU threads), precision: "
        f"{first._autocast or 'fp32'}, channels_last: {first.channels_last}, "
        f"batch: {batch_size}, torch {torch.__version__}\n"
    )
    print("| model | parameters | GFLOPs / 512 px tile | tiles/s | speed vs RetinaNet |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, params, flops, rate, _ in rows:
        print(
            f"| {label} | {params / 1e6:.2f} M | {flops / 1e9:.1f} | {rate:.1f} | "
            f"{rate / baseline:.1f}x |"
        )
    print(
        "\nRetinaNet parameters include the three domain discriminators (kept for loading, "
        "never run); its FLOPs count the inference path only."
    )


if __name__ == "__main__":
    main()
