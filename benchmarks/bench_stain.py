"""Batched Macenko and FDA versus per-image reference loops, in the same run.

Macenko: ``wsimito.stain.Macenko`` on one (N, 3, 512, 512) batch versus
torchstain's numpy ``MacenkoNormalizer`` called per image (the baseline). FDA:
``wsimito.stain.fda`` on the batch versus a per-image numpy implementation of
Yang & Soatto's algorithm (fft2, swap the centred amplitude square, ifft2; the
baseline). Tiles are 512 x 512 px crops of the tiatoolbox H&E target image.

Each wall time is the median of ``--repeat`` rounds (min-max); in every round
the four paths run in turn (reference then wsimito, Macenko then FDA), after a
warm-up of each on 2 tiles. The speed-up is reference median / wsimito median.
Prints the machine, the load average at start and end, and a markdown table
with the command above it.

Runtime on 2 CPU cores: ``--tiles 4`` took 12 s at load average 2 (the
reference loops, ~0.3 s + 0.1 s a tile, are most of it), so the default (64
tiles, 3 rounds) takes about 2 minutes at load 2 and up to 4 at load 4-8;
``--quick`` (16 tiles) about 40 s.

    WSIMITO_DATA_DIR=../shared/data python benchmarks/bench_stain.py \
        [--tiles 64] [--device cpu] [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
import torchstain
from _common import (
    command,
    load_average,
    machine,
    median_range,
    repeat_count,
    tests_on_path,
    timed_rounds,
)
from PIL import Image

from wsimito.data import fetch
from wsimito.stain import Macenko, fda

tests_on_path()
from _oracles import fda_reference_numpy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=None, help="tiles per batch (default 64)")
    parser.add_argument("--size", type=int, default=512, help="tile side, px")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=repeat_count, default=3, help="rounds (>= 3)")
    parser.add_argument("--quick", action="store_true", help="16 tiles (unless --tiles)")
    args = parser.parse_args()
    n_tiles = args.tiles or (16 if args.quick else 64)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    print(f"machine: {machine()}")
    print(f"load average at start: {load_average()}")

    image = np.asarray(Image.open(fetch("images/he-target-tiatoolbox.png")).convert("RGB"))
    rng = np.random.default_rng(0)
    corners = rng.integers(0, image.shape[0] - args.size, (n_tiles, 2))
    tiles = np.stack([image[y : y + args.size, x : x + args.size] for y, x in corners])
    batch = torch.from_numpy(tiles).permute(0, 3, 1, 2).contiguous().to(device)
    targets = batch.roll(1, dims=0)
    target_np = targets.permute(0, 2, 3, 1).cpu().numpy()

    reference = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    reference.fit(image)
    ours = Macenko().fit(image).to(device)
    outputs: dict[str, object] = {}

    def keep(key: str, fn):
        def run() -> None:
            outputs[key] = fn()

        return run

    def macenko_ref(n: int):
        return lambda: [reference.normalize(t, stains=False)[0] for t in tiles[:n]]

    def fda_ref(n: int):
        return lambda: [
            fda_reference_numpy(s, t, 0.01) for s, t in zip(tiles[:n], target_np[:n], strict=True)
        ]

    # warm-up on 2 tiles: a full-size warm-up of the reference loops would cost a round
    for warm in (macenko_ref(2), lambda: ours(batch[:2]), fda_ref(2)):
        warm()
    fda(batch[:2], targets[:2])
    fns = {
        "macenko ref": keep("macenko ref", macenko_ref(n_tiles)),
        "macenko ours": keep("macenko ours", lambda: ours(batch)),
        "fda ref": keep("fda ref", fda_ref(n_tiles)),
        "fda ours": keep("fda ours", lambda: fda(batch, targets, 0.01)),
    }
    wall, _ = timed_rounds(fns, args.repeat, warmup=False, sync=sync)

    def as_numpy(key: str) -> np.ndarray:
        return outputs[key].permute(0, 2, 3, 1).cpu().numpy().astype(float)

    diff_macenko = np.abs(as_numpy("macenko ours") - np.stack(outputs["macenko ref"])).mean()
    expected = np.clip(np.round(np.stack(outputs["fda ref"])), 0, 255)
    diff_fda = np.abs(as_numpy("fda ours") - expected).mean()
    rows = [
        ("Macenko (torchstain numpy, per image)", "macenko", diff_macenko),
        ("FDA beta=0.01 (Yang & Soatto numpy, per image)", "fda", diff_fda),
    ]

    where = f"{args.device}, {torch.get_num_threads()} threads"
    print(
        f"\n{n_tiles} tiles of {args.size}x{args.size} px, wsimito on {where}; wall s, median of "
        f"{args.repeat} interleaved rounds (min-max)\n"
    )
    print(command())
    print()
    print(
        "| method (reference) | reference loop (s) | wsimito batched (s) | speed-up | "
        "mean abs diff (grey levels) |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, key, diff in rows:
        ref, ours_t = wall[f"{key} ref"], wall[f"{key} ours"]
        speedup = statistics.median(ref) / statistics.median(ours_t)
        print(
            f"| {name} | {median_range(ref, '.2f')} | {median_range(ours_t)} | {speedup:.1f}x "
            f"| {diff:.2f} |"
        )
    print(f"\nload average at end: {load_average()}")


if __name__ == "__main__":
    main()
