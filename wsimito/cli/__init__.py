"""Command line: ``wsimito info``, ``wsimito count``, ``wsimito demo``, ``wsimito evaluate``.

One module per sub-command; each has ``add_parser(subparsers)`` and registers
its own ``func``. Add a command by adding its module to :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rich.console import Console

#: Sub-command modules, in the order ``wsimito --help`` lists them.
COMMANDS = ("info", "count", "demo", "evaluate", "review")


def build_parser() -> argparse.ArgumentParser:
    """The ``wsimito`` argument parser with every sub-command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="wsimito", description="Count mitotic figures in H&E slides."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 2 a wsimito error)."""
    from ..errors import WsimitoError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except WsimitoError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
