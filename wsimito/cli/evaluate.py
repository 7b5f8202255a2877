"""``wsimito evaluate``: score predicted mitotic figures against ground truth, MIDOG-style."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.markup import escape


def add_parser(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser(
        "evaluate",
        help="score predictions against ground truth (F1 as the MIDOG challenges compute it)",
        description=(
            "Match predicted mitotic figures to ground truth within a radius in µm and print "
            "pooled precision, recall, F1 and average precision. PRED and GT may be any "
            "format read_annotations reads: MIDOG COCO JSON, SlideRunner SQLite, QuPath or "
            "wsimito GeoJSON, a CSV or a folder of images with one CSV each."
        ),
    )
    evaluate.add_argument("predictions", metavar="PRED", help="predicted figures (file or folder)")
    evaluate.add_argument("ground_truth", metavar="GT", help="ground-truth figures")
    evaluate.add_argument(
        "--radius-um", type=float, default=7.5, help="hit radius, µm (default: 7.5, MIDOG's)"
    )
    evaluate.add_argument(
        "--mpp", type=float, default=None, help="µm/px for slides whose files give none"
    )
    evaluate.add_argument(
        "--by", default=None, help="report per domain: a per-slide column, e.g. tumor_type, scanner"
    )
    evaluate.add_argument(
        "--split",
        default=None,
        metavar="TABLE",
        help="MIDOG split table (;-separated) joined to GT: adds split, scanner, origin, species",
    )
    evaluate.add_argument(
        "--select",
        action="append",
        default=[],
        metavar="COLUMN=VALUE",
        help="score only GT slides with this per-slide value, e.g. split=test (repeatable)",
    )
    evaluate.add_argument(
        "--threshold", type=float, default=None, help="count predictions with score >= this"
    )
    evaluate.add_argument(
        "--order",
        choices=("reference", "nearest"),
        default="reference",
        help="matching order (default: reference, grand-challenge-metrics' score_detection)",
    )
    evaluate.add_argument(
        "--allow-missing",
        action="store_true",
        help="score GT slides without predictions as slides without detections",
    )
    evaluate.add_argument("--csv", default=None, metavar="OUT.csv", help="write the table as CSV")
    evaluate.add_argument(
        "--plot", default=None, metavar="OUT.png", help="write a precision-recall plot (PNG)"
    )
    evaluate.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from ..errors import WsimitoError
    from ..evaluate import score_annotations
    from ..io.annotations import read_annotations

    console = Console()
    if not console.is_terminal:  # a file or pipe: do not squeeze the table into 80 columns
        console = Console(width=160)
    try:
        selection = dict(_pair(item) for item in args.select)
        gt = read_annotations(args.ground_truth, split=args.split)
        if selection:
            gt = gt.select(**selection)
        result = score_annotations(
            args.predictions,
            gt,
            radius_um=args.radius_um,
            mpp=args.mpp,
            by=args.by,
            threshold=args.threshold,
            order=args.order,
            missing="empty" if args.allow_missing else "error",
        )
        console.print(result)
        if result.ignored_slides:
            console.print(
                f"[yellow]{len(result.ignored_slides)} prediction slides have no ground truth "
                "and were not scored[/yellow]"
            )
        if args.csv:
            console.print(f"table: {result.to_csv(args.csv)}")
        if args.plot:
            console.print(f"precision-recall plot: {result.plot(args.plot)}")
    except (WsimitoError, OSError, ValueError, ImportError) as exc:
        message = escape(str(exc))
        Console(stderr=True).print(f"[red]error:[/red] {message}", soft_wrap=True, highlight=False)
        return 2
    return 0


def _pair(item: str) -> tuple[str, str]:
    column, sep, value = item.partition("=")
    if not sep or not column:
        raise ValueError(f"--select takes COLUMN=VALUE, e.g. split=test; got {item!r}")
    return column.strip(), value.strip()
