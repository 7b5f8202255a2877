"""``wsimito review``: a gallery of what a detector counts on a slide, with scores.

The gallery shows the top detections, the near misses and mined hard negatives,
each crop with its score.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from ..models.metadata import detector_note


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``review`` command to the ``wsimito`` command line.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The subcommands of the ``wsimito`` parser.
    """
    review = sub.add_parser(
        "review", help="gallery (PNG or HTML) of top detections, near misses and negatives"
    )
    review.add_argument("slide")
    review.add_argument(
        "-o", "--output", default=None, help="gallery file, .png or .html (default: SLIDE.html)"
    )
    review.add_argument("--detector", default="demo", help="registry name, weights path or URL")
    review.add_argument(
        "--negatives",
        default=None,
        help="mined hard negatives of this slide (GeoJSON or SlideRunner file) to show too",
    )
    review.add_argument("--top", type=int, default=24, help="crops per section (default 24)")
    review.add_argument("--size-um", type=float, default=40.0, help="crop side, µm (default 40)")
    review.add_argument(
        "--no-near-misses", action="store_true", help="leave out candidates below the threshold"
    )
    review.add_argument(
        "--mpp", type=float, default=None, help="level-0 resolution, µm/px, for files without one"
    )
    review.add_argument(
        "--threshold", type=float, default=None, help="score threshold (default: the detector's)"
    )
    review.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    review.add_argument(
        "--no-tissue", action="store_true", help="process the whole image, not just tissue"
    )
    review.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    review.set_defaults(func=_review)


def _review(args: argparse.Namespace) -> int:
    from ..models import load_detector
    from ..pipeline import count_mitoses
    from ..review import write_review
    from ..slide import open_slide

    console = Console()
    out = Path(args.output) if args.output else Path(Path(args.slide).name + ".html")
    detector = load_detector(args.detector, device=args.device)
    note = detector_note(getattr(detector, "metadata", {}) or {})
    with open_slide(args.slide, mpp=args.mpp) as slide:
        result = count_mitoses(
            slide,
            detector,
            threshold=args.threshold,
            progress=not args.quiet,
            tissue="auto" if not args.no_tissue else None,
        )
        write_review(
            out,
            result,
            slide,
            negatives=args.negatives,
            n=args.top,
            near_misses=not args.no_near_misses,
            size_um=args.size_um,
        )
    console.print(
        f"{result.slide_name}: {result.count} counted in {result.tissue_area_mm2:.3f} mm² of "
        f"tissue ({result.density_per_mm2:.2f} per mm²) at threshold {result.threshold:.2f}"
    )
    report = getattr(detector, "report", None)
    if report is not None:
        console.print(f"cascade stages (per tile, before merging): {report}")
    console.print(f"gallery written to {out}")
    if note:
        console.print(f"[yellow]{note}[/yellow]", soft_wrap=True)
    return 0
