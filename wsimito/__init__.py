"""wsimito: count mitotic figures in H&E whole-slide images.

Coordinates are level-0 pixels; resolutions are µm per pixel (mpp).
"""

from .errors import (
    EmptyTissueError,
    MissingMPPError,
    SlideOpenError,
    TileReadError,
    WeightsError,
    WsimitoError,
)
from .slide import Slide, open_slide

__version__ = "0.1.0"

__all__ = [
    "EmptyTissueError",
    "MissingMPPError",
    "Slide",
    "SlideOpenError",
    "TileReadError",
    "WeightsError",
    "WsimitoError",
    "open_slide",
]
