"""Batched Macenko and FDA versus per-image reference loops, in the same run.

Macenko: ``wsimito.stain.Macenko`` on one (N, 3, 512, 512) batch versus
torchstain's numpy ``MacenkoNormalizer`` called per image. FDA:
``wsimito.stain.fda`` on the batch versus a per-image numpy implementation of
Yang & Soatto's algorithm (fft2, swap the centred amplitude square, ifft2).
Tiles are 512 x 512 px crops of the tiatoolbox H&E target image. Prints the
timings, the ratios and a markdown table.

    WSIMITO_DATA_DIR=../shared/data python benchmarks/bench_stain.py [--tiles 64] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torchstain
from _common import tests_on_path
from PIL import Image

from wsimito.data import fetch
from wsimito.stain import Macenko, fda

tests_on_path()
from _oracles import fda_reference_numpy  # noqa: E402


def timed(fn, device: torch.device, repeat: int = 1) -> tuple[float, object]:
    """Best wall time (s) of ``repeat`` calls of ``fn`` and its last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=64)
    parser.add_argument("--size", type=int, default=512, help="tile side, px")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    image = np.asarray(Image.open(fetch("images/he-target-tiatoolbox.png")).convert("RGB"))
    rng = np.random.default_rng(0)
    corners = rng.integers(0, image.shape[0] - args.size, (args.tiles, 2))
    tiles = np.stack([image[y : y + args.size, x : x + args.size] for y, x in corners])
    batch = torch.from_numpy(tiles).permute(0, 3, 1, 2).contiguous().to(device)
    targets = batch.roll(1, dims=0)
    rows = []

    reference = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    reference.fit(image)
    ours = Macenko().fit(image).to(device)
    ours(batch[:2])  # warm-up
    t_ref, ref_out = timed(lambda: [reference.normalize(t, stains=False)[0] for t in tiles], device)
    t_ours, out = timed(lambda: ours(batch), device, repeat=3)
    diff = np.abs(out.permute(0, 2, 3, 1).cpu().numpy().astype(float) - np.stack(ref_out)).mean()
    rows.append(("Macenko (torchstain numpy, per image)", t_ref, t_ours, diff))

    target_np = targets.permute(0, 2, 3, 1).cpu().numpy()
    fda(batch[:2], targets[:2])  # warm-up
    t_ref, ref_out = timed(
        lambda: [fda_reference_numpy(s, t, 0.01) for s, t in zip(tiles, target_np, strict=True)],
        device,
    )
    t_ours, out = timed(lambda: fda(batch, targets, 0.01), device, repeat=3)
    expected = np.clip(np.round(np.stack(ref_out)), 0, 255)
    diff = np.abs(out.permute(0, 2, 3, 1).cpu().numpy().astype(float) - expected).mean()
    rows.append(("FDA beta=0.01 (Yang & Soatto numpy, per image)", t_ref, t_ours, diff))

    where = f"{args.device}, {torch.get_num_threads()} threads"
    print(f"{args.tiles} tiles of {args.size}x{args.size} px, wsimito on {where}\n")
    print(
        "| method (reference) | reference loop (s) | wsimito batched (s) | speed-up | "
        "mean abs diff (grey levels) |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, t_ref, t_ours, diff in rows:
        print(f"| {name} | {t_ref:.2f} | {t_ours:.3f} | {t_ref / t_ours:.1f}x | {diff:.2f} |")


if __name__ == "__main__":
    main()
