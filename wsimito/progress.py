"""Progress bars that work in a terminal and in Jupyter without extra installs.

In a terminal (or any console rich can drive) it is a rich progress bar. In a
Jupyter kernel, where rich's live display needs ipywidgets, it is one HTML
line updated in place through IPython's display handles, which every kernel
has. The same object counts tiles, slides or training steps.
"""

from __future__ import annotations

import html
import sys
import time
from typing import Any, Literal

#: Seconds between two redraws of the Jupyter line.
_NOTEBOOK_REFRESH_S = 0.25


def in_notebook() -> bool:
    """Tell whether this process is a Jupyter (IPython kernel) process.

    Returns
    -------
    bool
        ``True`` inside a Jupyter kernel, ``False`` in a terminal or script.
    """
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()
    except Exception:
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


class Progress:
    """A progress bar over ``total`` items with a rate and an ETA, or nothing.

    Parameters
    ----------
    total : int
        Number of items.
    description : str
        Shown before the bar; printed as plain text, never as markup.
    unit : str
        Plural name of the items, for the rate (e.g. ``"tiles"``).
    enabled : bool
        ``False`` shows nothing.
    rate_per : {"s", "h"}
        Rate per second or per hour.
    """

    def __init__(
        self,
        total: int,
        description: str,
        *,
        unit: str = "tiles",
        enabled: bool = True,
        rate_per: Literal["s", "h"] = "s",
    ) -> None:
        self.total, self.description, self.unit = int(total), description, unit
        self.rate_per = 3600.0 if rate_per == "h" else 1.0
        self._per = "h" if rate_per == "h" else "s"
        self.done = 0
        self.extra = ""
        self._start = time.perf_counter()
        self._bar: Any = None
        self._handle: Any = None
        self._last_draw = 0.0
        if not enabled or not self.total:
            return
        if in_notebook():
            from IPython.display import HTML, display

            self._handle = display(HTML(self._html()), display_id=True)
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress
        from rich.text import Text

        self._bar = RichProgress(
            TextColumn("{task.fields[label]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task = self._bar.add_task("", total=self.total, label=Text(description), rate="")
        self._bar.start()

    @property
    def rate(self) -> float:
        """Items per second (or per hour with ``rate_per="h"``) so far."""
        return self.done / max(time.perf_counter() - self._start, 1e-9) * self.rate_per

    def advance(self, n: int = 1, extra: str | None = None) -> None:
        """Count more items done.

        Parameters
        ----------
        n : int
            Items done since the last call.
        extra : str, optional
            Replaces the text shown after the rate; ``None`` keeps it.
        """
        self.done += n
        if extra is not None:
            self.extra = extra
        if self._bar is not None:
            from rich.text import Text

            text = f"{self.rate:6.1f} {self.unit}/{self._per}" + (
                f" {self.extra}" if self.extra else ""
            )
            self._bar.update(self._task, advance=n, rate=Text(text))
        elif self._handle is not None:
            now = time.perf_counter()
            if now - self._last_draw >= _NOTEBOOK_REFRESH_S or self.done >= self.total:
                self._last_draw = now
                self._redraw()

    def _html(self) -> str:
        frac = self.done / self.total if self.total else 1.0
        rest = ""
        if self.done and self.done < self.total:
            left = (time.perf_counter() - self._start) / self.done * (self.total - self.done)
            rest = f", {left:.0f} s left"
        extra = f" {html.escape(self.extra)}" if self.extra else ""
        return (
            f"<div><span>{html.escape(self.description)}</span> "
            f"<progress value='{self.done}' max='{self.total}' style='width:40%'></progress> "
            f"{self.done}/{self.total} ({frac:.0%}), {self.rate:.1f} {html.escape(self.unit)}/"
            f"{self._per}{rest}{extra}</div>"
        )

    def _redraw(self) -> None:
        from IPython.display import HTML

        self._handle.update(HTML(self._html()))

    def close(self) -> None:
        """Stop the bar (leaving its last state on screen)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self._handle is not None:
            self._redraw()
            self._handle = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
