"""Cost of synthetic artefacts: a 4000 x 4000 px slide rendered with and without them.

``make_slide``'s scene at 0.25 µm/px (1 mm²) with ``artefacts="none"`` (the
baseline), ``"realistic"`` and ``"heavy"``. Each of ``--repeat`` rounds uses
its own seed (1, 2, 3, ...) and renders the three mixes in turn; the figure is
the CPU time of ``render_image`` (process time, so it does not count waiting
for a busy machine), median of the rounds (min-max), and the ratio to "none"
is the ratio of the medians. Scene building and a first small render (texture
caches) are not timed. Prints the machine, the load average at start and end,
and a markdown table with the command above.

Runtime on 2 CPU cores at load average 2: ``--size 1000`` took 6 s; the
default (4000 px, 3 rounds: about 1.5 + 1.7 + 4.8 CPU s of renders a round,
docs/synthetic.md) about 40 s.

Run: .venv/bin/python benchmarks/bench_synthetic.py [--repeat 3] [--size 4000]
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import command, load_average, machine, median_range, repeat_count

from wsimito.synthetic.render import Scene

MIXES = ("none", "realistic", "heavy")


def cpu_seconds(size: int, artefacts: str, seed: int) -> tuple[float, int]:
    scene = Scene.build(size, size, seed=seed, artefacts=artefacts)
    scene.render(0, 0, 256, 256)  # warm the texture caches, as any later render would
    t0 = time.process_time()
    scene.render_image()
    spent = time.process_time() - t0
    return spent, len(scene.truth().artefacts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=repeat_count, default=3, help="rounds = seeds (>= 3)")
    parser.add_argument("--size", type=int, default=4000, help="slide side, px")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"load average at start: {load_average()}")
    times: dict[str, list[float]] = {mix: [] for mix in MIXES}
    counts: dict[str, list[int]] = {mix: [] for mix in MIXES}
    for seed in range(1, args.repeat + 1):
        for mix in MIXES:
            spent, count = cpu_seconds(args.size, mix, seed)
            times[mix].append(spent)
            counts[mix].append(count)
    base = statistics.median(times["none"])
    print(
        f"\nCPU s of render_image per {args.size}² px at 0.25 µm/px, median of {args.repeat} "
        "interleaved rounds, one seed each (min-max)\n"
    )
    print(command())
    print()
    print(f"| artefacts | CPU s per {args.size}² px | ratio to none | artefacts (median) |")
    print("|---|---|---|---|")
    for mix in MIXES:
        ratio = statistics.median(times[mix]) / base
        print(
            f"| {mix} | {median_range(times[mix], '.2f')} | {ratio:.2f} "
            f"| {statistics.median(counts[mix]):.0f} |"
        )
    print(f"\nload average at end: {load_average()}")


if __name__ == "__main__":
    main()
