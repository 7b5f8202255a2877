"""Cost of synthetic artefacts: a 4000 x 4000 px slide rendered with and without them.

``make_slide`` at 0.25 µm/px (1 mm²) with ``artefacts="none"``, ``"realistic"``
and ``"heavy"``; CPU time of the render (process time, median of a few seeds,
so it does not count waiting for a busy machine) and the ratio to "none".

Run: .venv/bin/python benchmarks/bench_synthetic.py
"""

from __future__ import annotations

import os
import statistics
import time

from _common import machine

from wsimito.synthetic.render import Scene

SIZE = 4000
SEEDS = (1, 2, 3)
MIXES = ("none", "realistic", "heavy")


def cpu_seconds(artefacts: str, seed: int) -> tuple[float, int]:
    scene = Scene.build(SIZE, SIZE, seed=seed, artefacts=artefacts)
    scene.render(0, 0, 256, 256)  # warm the texture caches, as any later render would
    t0 = time.process_time()
    scene.render_image()
    spent = time.process_time() - t0
    return spent, len(scene.truth().artefacts)


def main() -> None:
    print(machine())
    print(f"load average before: {os.getloadavg()[0]:.2f}\n")
    print(
        f"| artefacts | CPU s per {SIZE}² px (median of {len(SEEDS)} seeds) | ratio | artefacts |"
    )
    print("|---|---|---|---|")
    base = None
    for mix in MIXES:
        runs = [cpu_seconds(mix, s) for s in SEEDS]
        t = statistics.median(r[0] for r in runs)
        base = base or t
        count = statistics.median(r[1] for r in runs)
        print(f"| {mix} | {t:.2f} | {t / base:.2f} | {count:.0f} |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
