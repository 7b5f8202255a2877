"""Training throughput: patches/s on the CPU, the share of reading vs computing, and on a GPU
one training step of the point detector at batch 32 of 512 x 512 px (time, peak memory).

CPU mode writes synthetic JPEG slides (0.25 µm/px, two pyramid levels) and runs training
epochs of the demo-sized point network on 256 px patches at 0.5 µm/px with every
augmentation on: once with the reads in the loop (``prefetch = 0``) to split the time into
reading, augmenting and the network, once with the background reader (``prefetch = 2``) for
the throughput a run gets. Each figure is the median of ``--repeat`` epochs (min, max).

    python benchmarks/bench_training.py              # CPU; GPU part when CUDA is present
    python benchmarks/bench_training.py --quick      # smaller epochs, 3 repeats
    python benchmarks/bench_training.py --device cuda
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from _common import machine

from wsimito.detect import autocast_dtype, resolve_device
from wsimito.models import PointHeatmapNet
from wsimito.synthetic import write_slide
from wsimito.train.augment import (
    AmplitudeBank,
    Augmenter,
    Dihedral,
    DomainFDA,
    GaussianBlur,
    HEDStainJitter,
    JPEGArtefacts,
    StainMatrixJitter,
    Zoom,
)
from wsimito.train.config import TrainingConfig
from wsimito.train.loop import Trainer
from wsimito.train.losses import focal_heatmap_loss, heatmap_targets, lookalike_weights

#: The network of examples/midogpp/midogpp.toml and the demo's.
NETWORKS = {
    "midogpp.toml (width 32, depth 5, 2 blocks)": {
        "width": 32,
        "depth": 5,
        "stride": 4,
        "blocks": 2,
    },
    "demo (width 16, depth 4, 1 block)": {"width": 16, "depth": 4, "stride": 4, "blocks": 1},
}


def write_data(folder: Path, slides: int, side: int) -> pd.DataFrame:
    """Synthetic JPEG slides at 0.25 µm/px and their cells (to_frame() layout)."""
    rows = []
    for i in range(slides):
        name = f"s{i}.svs"
        truth = write_slide(
            folder / name,
            side,
            side,
            mpp=0.25,
            seed=500 + i,
            tissue_fraction=1.0,
            tumour_fraction=0.9,
            mitoses_per_mm2=200,
        )
        split = "valid" if i == 0 else "train"
        for kind, points in (("mitosis", truth.mitoses), ("lookalike", truth.imposters)):
            rows += [
                {
                    "slide": name,
                    "x": x,
                    "y": y,
                    "kind": kind,
                    "label": kind,
                    "split": split,
                    "domain": f"d{i % 2}",
                }
                for x, y in points
            ]
    return pd.DataFrame(rows)


def cpu_config(
    folder: Path, out: Path, epoch_size: int, prefetch: int, device: str
) -> TrainingConfig:
    return TrainingConfig.from_dict(
        {
            "out": str(out),
            "device": device,
            "training_data": "synthetic (benchmark)",
            "data": {
                "annotations": str(folder / "cells.csv"),
                "format": "table",
                "images": str(folder),
            },
            "split": {"validation": ["valid"], "test": []},
            "sampler": {"epoch_size": epoch_size, "domains": ["domain"]},
            "augment": {"fda": {"bank_patches": 4}},
            "model": {
                "mpp": 0.5,
                "patch_size": 256,
                "tile_size": 512,
                "overlap": 64,
                **NETWORKS["demo (width 16, depth 4, 1 block)"],
            },
            "train": {"epochs": 1000, "batch_size": 8, "num_workers": 2, "prefetch": prefetch},
            "test": {"evaluate": False},
        }
    )


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3g} (min {min(values):.3g}, max {max(values):.3g})"


def bench_loop(folder: Path, epoch_size: int, repeat: int, device: str) -> None:
    """Median patches/s and time shares over ``repeat`` epochs, without and with prefetch."""
    print(
        f"\n### Training epochs on {device}: {epoch_size} patches of 256 px at 0.5 µm/px, "
        "batch 8, every augmentation\n"
    )
    print("| reads | patches/s | reading s | augmenting s | network s | reading share |")
    print("|---|---|---|---|---|---|")
    for prefetch in (0, 2):
        with tempfile.TemporaryDirectory() as out:
            trainer = Trainer(
                cpu_config(folder, Path(out), epoch_size, prefetch, device),
                progress=False,
                log=lambda _: None,
            )
            trainer.prepare()
            rows = []
            try:
                trainer.train_epoch()  # warm-up
                for _ in range(repeat):
                    rows.append(trainer.train_epoch())
            finally:
                trainer.close()
        rate = [r["patches_per_s"] for r in rows]
        read = [r["read_wait_s"] for r in rows]
        aug = [r["augment_s"] for r in rows]
        net = [r["compute_s"] - r["augment_s"] for r in rows]
        share = [r["read_wait_s"] / r["train_s"] for r in rows]
        label = "in the loop (prefetch 0)" if prefetch == 0 else "background thread (prefetch 2)"
        print(
            f"| {label} | {spread(rate)} | {spread(read)} | {spread(aug)} | {spread(net)} | "
            f"{statistics.median(share):.0%} |"
        )


def gpu_step(model, optimizer, scaler, augment, batch, dtype, device) -> tuple[float, float]:
    """One step; returns the augmentation and the network (forward, backward, AdamW) ms."""
    images, points, domains = batch
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    x, pts = augment(images, points, domains)
    torch.cuda.synchronize(device)
    t1 = time.perf_counter()
    x = ((x.float() / 255 - 0.5) / 0.25).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=dtype):
        out = model(x)
    mitoses = [p[p[:, 2] == 0, :2] for p in pts]
    lookalikes = [p[p[:, 2] == 1, :2] for p in pts]
    targets = heatmap_targets(mitoses, (512, 512), 4, 8.0, device)
    weights = lookalike_weights(lookalikes, (512, 512), 4, 8.0, 4.0, device)
    loss = focal_heatmap_loss(out, targets, sum(len(m) for m in mitoses), weights=weights)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    torch.cuda.synchronize(device)
    return (t1 - t0) * 1000, (time.perf_counter() - t1) * 1000


def bench_gpu_step(device: torch.device, steps: int) -> None:
    """One training step at batch 32 of 512 x 512 px: augmentation, forward, backward, AdamW."""
    name = torch.cuda.get_device_name(device)
    print(f"\n### One training step on {name}: batch 32 of 512 x 512 px\n")
    print("| network | parameters | precision | augment ms | step ms | peak memory GiB |")
    print("|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (32, 3, 512, 512), dtype=torch.uint8, generator=g).to(device)
    points = [
        torch.cat([torch.rand(6, 2, generator=g) * 512, (torch.arange(6) % 2)[:, None]], 1)
        for _ in range(32)
    ]
    batch = (images, points, [k % 2 for k in range(32)])
    bank = AmplitudeBank.from_patches(images[:8], [0, 0, 0, 0, 1, 1, 1, 1], beta=0.01)
    augment = Augmenter(
        [
            Dihedral(),
            Zoom(0.1, p=0.5),
            StainMatrixJitter(p=0.3),
            HEDStainJitter(p=0.5),
            DomainFDA(bank, p=0.5),
            GaussianBlur(p=0.2),
            JPEGArtefacts(p=0.2),
        ]
    )
    dtype = autocast_dtype(device, "auto")
    for label, kwargs in NETWORKS.items():
        model = PointHeatmapNet(**kwargs).to(device, memory_format=torch.channels_last).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
        for _ in range(3):
            gpu_step(model, optimizer, scaler, augment, batch, dtype, device)
        torch.cuda.reset_peak_memory_stats(device)
        times = [
            gpu_step(model, optimizer, scaler, augment, batch, dtype, device) for _ in range(steps)
        ]
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        params = sum(p.numel() for p in model.parameters())
        precision = str(dtype).replace("torch.", "")
        print(
            f"| {label} | {params / 1e6:.2f} M | {precision} | {spread([t[0] for t in times])} | "
            f"{spread([t[1] for t in times])} | {peak:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller epochs and data")
    parser.add_argument("--repeat", type=int, default=3, help="epochs measured (>= 3)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (the GPU step)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"machine: {machine()}; load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="wsimito-bench-train-") as tmp:
        folder = Path(tmp)
        cells = write_data(folder, slides=3, side=1536 if args.quick else 3072)
        cells.to_csv(folder / "cells.csv", index=False)
        bench_loop(folder, 64 if args.quick else 256, max(3, args.repeat), "cpu")
        if device.type == "cuda":
            bench_loop(folder, 256 if args.quick else 1024, max(3, args.repeat), "cuda")
    if device.type == "cuda":
        bench_gpu_step(device, 5 if args.quick else 20)
    else:
        print(
            "\nGPU step (batch 32 of 512 x 512 px): skipped, no CUDA device here "
            "(run with --device cuda on a GPU machine)"
        )
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
