"""Where the read-only stream holds the GIL: a target for py-spy, and a summary of its samples.

With 2 reader threads on 2 cores, decoding (imagecodecs, GIL released) runs in
parallel, and everything that holds the GIL runs one thread at a time. This
script streams the slide of ``bench_stream.py`` (512 px tiles, 64 px overlap,
0.25 µm/px, a detector that returns nothing) a few times, so that py-spy can
sample only the thread holding the GIL, and then sums those samples per part of
the stream, in seconds per pass.

Run (py-spy is not a dependency: ``.venv/bin/pip install py-spy``)::

    py-spy record --gil --threads -r 500 -f raw -o /tmp/gil.txt -- \\
        .venv/bin/python benchmarks/gil_profile.py --run 5
    .venv/bin/python benchmarks/gil_profile.py --summarize /tmp/gil.txt --passes 6

``--passes`` counts every stream in the file: the untimed first one plus ``--run``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections import Counter
from pathlib import Path

#: Parts of the stream, by the first matching frame (innermost first).
PARTS = (
    ("JPEG decoding (imagecodecs, its GIL-holding part)", ("jpeg_decode", "jpeg8_decode")),
    ("tile cache bookkeeping", ("TileCache.get",)),
    ("copying file tiles into the batch (_copy_tile)", ("_copy_tile",)),
    ("box geometry and the rest of the read", ("read_level_box", "TileReader._read")),
    ("thread pool (futures, queue)", ("concurrent/futures",)),
    ("main thread: batches, detector call, merging", ("count_mitoses",)),
)


def summarize(path: Path, passes: int, rate: float) -> None:
    """Print the GIL-held seconds per pass for each part of :data:`PARTS`."""
    parts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        in_stream = "wsimito-read" in frames[0] or any("count_mitoses" in f for f in frames)
        if not in_stream:  # imports, opening the slide
            continue
        name = "other"
        for frame in reversed(frames[1:]):
            hit = next((p for p, keys in PARTS if any(k in frame for k in keys)), None)
            if hit is not None:
                name = hit
                break
        parts[name] += int(count)
    total = sum(parts.values())
    print(f"GIL held in the stream: {total / rate / passes:.3f} s per pass ({passes} passes)")
    for name, n in parts.most_common():
        print(f"  {n / rate / passes:.3f} s  {100 * n / total:4.1f} %  {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=int, help="stream the slide this many times (after one more)")
    ap.add_argument("--size", type=int, default=16384, help="slide side, px at 0.25 µm/px")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--summarize", type=Path, help="a py-spy raw (-f raw) file")
    ap.add_argument("--passes", type=int, default=6, help="streams in that file")
    ap.add_argument("--rate", type=float, default=500.0, help="py-spy's samples per second")
    args = ap.parse_args()
    if args.summarize:
        summarize(args.summarize, args.passes, args.rate)
        return
    if not args.run:
        ap.error("give --run N or --summarize FILE")
    from bench_read_stream import slide_path
    from bench_stream import NoDetections

    import wsimito

    warnings.simplefilter("ignore", UserWarning)
    slide = wsimito.open_slide(slide_path(args.size))
    det = NoDetections(0.25)
    for k in range(args.run + 1):
        start = time.perf_counter()
        wsimito.count_mitoses(
            slide, det, tissue=None, num_workers=args.workers, batch_size=8, progress=False
        )
        print(f"pass {k}: {time.perf_counter() - start:.2f} s" + (" (untimed)" if k == 0 else ""))


if __name__ == "__main__":
    main()
