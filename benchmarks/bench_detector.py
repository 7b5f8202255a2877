"""Detector cost: parameters, FLOPs per 512x512 tile, and tiles/s through ``detect``.

Compares our point detector (``PointHeatmapNet`` defaults, the demo
configuration) with the MIDOG reference RetinaNet (the baseline), measured in
the same run: after one warm-up batch each, the two alternate for ``--repeat``
rounds, each measurement running whole batches of random uint8 tiles for at
least ``--seconds``. Tiles/s is the median of the rounds (min-max) and the
speed ratio against RetinaNet is the ratio of the medians. Prints the machine,
the load average at start and end, and a markdown table with the command above.

Runtime on 2 CPU cores at load average 2 (fp32): one RetinaNet batch of 4
takes about 9 s, so the default (``--seconds 5``, batch 4, 3 rounds) takes
about 1.2 minutes and ``--seconds 10`` about 2; ``--batch-size 1 --seconds 0.1``
took 20 s.

    python benchmarks/bench_detector.py                 # CPU, fp32
    python benchmarks/bench_detector.py --device cuda   # bf16/fp16 autocast, channels_last
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import command, load_average, machine, median_range, repeat_count
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from wsimito.detect import RuntimeOptions, TorchDetector, resolve_device
from wsimito.models import PointDetector, PointHeatmapNet, RetinaNetDA, RetinaNetDetector

TILE = 512


def count_flops(model: nn.Module) -> int:
    """FLOPs (2 per multiply-add) of one forward pass on a 3x512x512 input."""
    model = model.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, TILE, TILE))
    return counter.get_total_flops()


def random_tiles(detector: TorchDetector, batch_size: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (batch_size, 3, TILE, TILE), dtype=torch.uint8, generator=gen).to(
        detector.device
    )


def tiles_per_second(detector: TorchDetector, tiles: torch.Tensor, seconds: float) -> float:
    """Tiles/s of ``detector.detect`` on ``tiles``, whole batches for at least ``seconds``."""

    def sync() -> None:
        if detector.device.type == "cuda":
            torch.cuda.synchronize(detector.device)

    sync()
    done, start = 0, time.perf_counter()
    while True:
        detector.detect(tiles)
        sync()
        done += len(tiles)
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
    parser.add_argument("--seconds", type=float, default=5.0, help="timing per model and round, s")
    parser.add_argument("--repeat", type=repeat_count, default=3, help="rounds (>= 3)")
    parser.add_argument("--compile", action="store_true", help="use torch.compile")
    args = parser.parse_args()

    device = resolve_device(args.device)
    batch_size = args.batch_size or (4 if device.type == "cpu" else 32)
    options = RuntimeOptions(device=device, precision=args.precision, compile=args.compile)
    models = {
        "point detector (PointHeatmapNet defaults)": (
            PointHeatmapNet(),
            lambda m: PointDetector(m, options=options),
        ),
        "MIDOG reference RetinaNet": (
            RetinaNetDA(),
            lambda m: RetinaNetDetector(m, options=options),
        ),
    }
    print(f"machine: {machine()}")
    print(f"load average at start: {load_average()}")
    rows, detectors = [], {}
    for label, (model, wrap) in models.items():
        params = sum(p.numel() for p in model.parameters())
        flops = count_flops(model)
        detector = wrap(model)
        tiles = random_tiles(detector, batch_size)
        detector.detect(tiles)  # warm-up
        detectors[label] = (detector, tiles)
        rows.append((label, params, flops))
    rates: dict[str, list[float]] = {label: [] for label in detectors}
    for _ in range(args.repeat):
        for label, (detector, tiles) in detectors.items():
            rates[label].append(tiles_per_second(detector, tiles, args.seconds))

    med = {label: statistics.median(r) for label, r in rates.items()}
    baseline = med[rows[-1][0]]
    first = detectors[rows[0][0]][0]
    print(
        f"\ndevice: {device} ({torch.get_num_threads()} CPU threads), precision: "
        f"{first._autocast or 'fp32'}, channels_last: {first.channels_last}, "
        f"batch: {batch_size}, torch {torch.__version__}; tiles/s, median of {args.repeat} "
        f"interleaved rounds of >= {args.seconds:g} s each (min-max)\n"
    )
    print(command())
    print()
    print("| model | parameters | GFLOPs / 512 px tile | tiles/s | speed vs RetinaNet |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, params, flops in rows:
        print(
            f"| {label} | {params / 1e6:.2f} M | {flops / 1e9:.1f} | "
            f"{median_range(rates[label], '.2f')} | {med[label] / baseline:.1f}x |"
        )
    print(
        "\nRetinaNet parameters include the three domain discriminators (kept for loading, "
        "never run); its FLOPs count the inference path only."
    )
    print(f"\nload average at end: {load_average()}")


if __name__ == "__main__":
    main()
