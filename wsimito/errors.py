"""Exceptions raised by wsimito. Each message says what to do next."""

from __future__ import annotations


class WsimitoError(Exception):
    """Base class of every wsimito error."""


class MissingMPPError(WsimitoError, ValueError):
    """The slide carries no resolution (µm per pixel) and none was given."""


class SlideOpenError(WsimitoError, OSError):
    """No backend could open the file."""


class WeightsError(WsimitoError, ValueError):
    """A weights file does not fit the architecture it was loaded into."""


class EmptyTissueError(WsimitoError, ValueError):
    """An operation needs tissue and the image has none."""


class TileReadError(WsimitoError, RuntimeError):
    """Reading a tile failed twice during a pipeline run."""


class TileInputError(WsimitoError, ValueError):
    """Tiles given to a detector have the wrong type, shape or dtype."""


class SlideReadError(WsimitoError, OSError):
    """A reader failed on a region of an opened slide (a corrupt tile, a vanished file).

    Attributes
    ----------
    path : str or None
        The file, or ``None`` for in-memory images.
    level : int
        The pyramid level that was read.
    box : tuple of int
        ``(x, y, width, height)`` of the region, in px of ``level``.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        level: int = 0,
        box: tuple[int, int, int, int] = (0, 0, 0, 0),
    ) -> None:
        super().__init__(message)
        self.path = path
        self.level = level
        self.box = box


class UnsupportedImageError(SlideOpenError, ValueError):
    """The file opens, but its pixels are of a kind wsimito does not read (e.g. 5 channels)."""


class ParameterTypeError(WsimitoError, TypeError, ValueError):
    """A parameter has the wrong kind of value, e.g. 2.5 or True where a whole number is needed.

    Both a ``TypeError`` and a ``ValueError``, so either ``except`` clause catches it.
    """
