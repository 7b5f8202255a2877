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
    """Pixels of an open slide could not be read (a damaged or truncated tile)."""
