"""``wsimito info``: a slide's size, resolution and pyramid."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table
from rich.text import Text


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``info`` command to the ``wsimito`` command line.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The subcommands of the ``wsimito`` parser.
    """
    info = sub.add_parser("info", help="print a slide's size, resolution and pyramid")
    info.add_argument("slides", nargs="+")
    info.add_argument("--backend", default="auto")
    info.add_argument("--mpp", type=float, default=None, help="level-0 resolution, µm/px")
    info.set_defaults(func=_info)


def _info(args: argparse.Namespace) -> int:
    from ..slide import open_slide

    console = Console()
    for path in args.slides:
        slide = open_slide(path, backend=args.backend, mpp=args.mpp)
        table = Table(title=Text(str(path)), show_header=False)
        w, h = slide.dimensions
        table.add_row("backend", slide.backend)
        table.add_row("size (level 0)", f"{w} x {h} px")
        if slide.has_mpp:
            table.add_row("mpp", f"{slide.mpp:.4g} µm/px")
            table.add_row(
                "physical size", f"{w * slide.mpp / 1000:.2f} x {h * slide.mpp / 1000:.2f} mm"
            )
        else:
            table.add_row("mpp", "not in the file: pass --mpp")
        table.add_row(
            "levels",
            ", ".join(
                f"{d[0]}x{d[1]} ({ds:.4g}x)"
                for d, ds in zip(slide.level_dimensions, slide.level_downsamples, strict=True)
            ),
        )
        table.add_row("bounds", "x={}, y={}, w={}, h={}".format(*slide.bounds))
        vendor = slide.properties.get("openslide.vendor") or slide.properties.get(
            "tiffslide.vendor"
        )
        if vendor:
            table.add_row("vendor", Text(vendor))
        console.print(table)
    return 0
