"""Command line: ``wsimito info``, ``count``, ``demo``, ``evaluate`` and ``train``.

One module per sub-command; each has ``add_parser(subparsers)`` and registers
its own ``func``. Add a command by adding its module to :data:`COMMANDS`.

Errors print as one or two lines of plain text (never a traceback, never rich
markup, so a file name such as ``a[/z].svs`` prints as it is) unless
``--debug`` is given. Exit status: 0 success, 1 some slides failed, 2 an error
before or outside the slides' work, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from typing import TextIO

from rich.console import Console
from rich.text import Text

#: Sub-command modules, in the order ``wsimito --help`` lists them.
COMMANDS = ("info", "count", "demo", "evaluate", "train", "review")

_DEBUG_HELP = "show the full traceback of an error"


def build_parser() -> argparse.ArgumentParser:
    """The ``wsimito`` argument parser with every sub-command of :data:`COMMANDS`.

    Returns
    -------
    argparse.ArgumentParser
        The parser; each sub-command sets ``func``, which runs it and returns
        the exit status.
    """
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="wsimito", description="Count mitotic figures in H&E slides."
    )
    parser.add_argument("--version", action="version", version=f"wsimito {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    for command in sub.choices.values():  # `wsimito count ... --debug` works too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    return parser


def error_message(exc: BaseException) -> str:
    """What the command line says about ``exc``: the message, in command-line terms.

    Parameters
    ----------
    exc : BaseException
        The error that stopped a command.

    Returns
    -------
    str
        One line of plain text; a missing resolution names ``--mpp``, a missing
        or unreadable file names the file.

    Examples
    --------
    >>> error_message(FileNotFoundError(2, "No such file or directory", "slide.svs"))
    'slide.svs: no such file or folder'
    """
    from ..errors import MissingMPPError

    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, MissingMPPError):
        first = text.split(". ")[0]
        return (
            f"{first}. Pass --mpp with the level-0 resolution in µm/px (about 0.25 for a 40x "
            "scan, 0.5 for 20x)."
        )
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"{exc.filename}: no such file or folder"
    if isinstance(exc, PermissionError) and exc.filename:
        return f"{exc.filename}: permission denied"
    return text


def main(argv: list[str] | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``wsimito`` (default: those of this process).

    Returns
    -------
    int
        0 success, 1 some slides failed, 2 an error, 130 interrupted.
    """
    from ..errors import WsimitoError

    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    err = Console(stderr=True, highlight=False, soft_wrap=True)

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        text = " ".join(str(message).split())
        where = f" ({category.__name__} at {filename}:{lineno})" if debug else ""
        err.print(Text("warning: ", style="yellow") + Text(text + where))

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show  # one line per warning, as plain text
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        err.print(Text("interrupted", style="red"))
        return 130
    except (WsimitoError, ValueError, OSError, TypeError) as exc:
        if debug:
            raise
        err.print(Text("error: ", style="red") + Text(error_message(exc)))
        return 2
    except Exception as exc:
        if debug:
            raise
        err.print(
            Text("error: ", style="red") + Text(f"{type(exc).__name__}: {error_message(exc)}")
        )
        err.print(Text("this looks like a bug in wsimito; run again with --debug for the details"))
        return 2


if __name__ == "__main__":
    sys.exit(main())
