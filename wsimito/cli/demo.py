"""``wsimito demo``: synthetic slide, count, GeoJSON, overview PNG and F1."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``demo`` command to the ``wsimito`` command line.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The subcommands of the ``wsimito`` parser.
    """
    demo = sub.add_parser("demo", help="synthetic slide -> count -> GeoJSON, overview PNG and F1")
    demo.add_argument("--out", default="demo-output")
    demo.add_argument("--seed", type=int, default=2026)
    demo.add_argument(
        "--size",
        type=int,
        default=8000,
        help="slide side in px at 0.25 µm/px (8000 = 2 mm, room for the 10-HPF hotspot)",
    )
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from ..demo_run import run_demo

    run_demo(Path(args.out), seed=args.seed, size=args.size)
    return 0
