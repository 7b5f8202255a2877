"""One overview renderer and one HTML preview for slides, tissue and results.

:func:`draw_overview` draws the tissue outline, the hotspot and point sets on
a thumbnail (all given in level-0 px); :func:`html_preview` puts an image
beside a table for Jupyter's ``_repr_html_``. Both are plain PIL, so they need
no plotting library; :mod:`wsimito.plot` offers the matplotlib versions.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import shapely
from PIL import Image, ImageDraw

from .classes import HOTSPOT_COLOR, TISSUE_COLOR

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class PointLayer:
    """Points to draw on an overview.

    Attributes
    ----------
    points : numpy.ndarray
        ``(N, 2)`` level-0 px.
    color : tuple of int
        RGB 0-255.
    radius : float
        Marker radius, px of the overview.
    style : {"ring", "dot"}
        A ring with a white halo, or a filled dot with a white outline.
    label : str
        Legend text, or ``""`` for none.
    """

    points: np.ndarray
    color: RGB
    radius: float = 3.0
    style: Literal["ring", "dot"] = "ring"
    label: str = ""


def draw_overview(
    image: np.ndarray | None,
    dimensions: tuple[int, int],
    *,
    size: int = 512,
    tissue: shapely.Geometry | None = None,
    hotspot: shapely.Geometry | None = None,
    layers: Sequence[PointLayer] = (),
    legend: Sequence[tuple[RGB, str]] = (),
    tissue_width: int = 1,
    hotspot_width: int = 2,
) -> np.ndarray:
    """An RGB overview of a slide with its tissue, hotspot and points drawn.

    Parameters
    ----------
    image : numpy.ndarray or None
        ``(h, w, 3)`` uint8 thumbnail of the whole slide (any size; it is
        resized), or ``None`` for a white background.
    dimensions : tuple of int
        Level-0 ``(width, height)`` of the slide, px.
    size : int
        Longest side of the overview, px.
    tissue, hotspot : shapely geometry, optional
        Outlines to draw, level-0 px (green and orange).
    layers : sequence of PointLayer
        Point sets, drawn in order.
    legend : sequence of (colour, text)
        Extra legend entries, before those of the layers; a legend strip is
        added below the image when there is any entry.
    tissue_width, hotspot_width : int
        Line widths, px of the overview.

    Returns
    -------
    numpy.ndarray
        ``(h, w, 3)`` uint8; ``h`` includes the legend strip.
    """
    width, height = dimensions
    factor = size / max(width, height)
    shape = (max(1, round(width * factor)), max(1, round(height * factor)))
    if image is not None:
        base = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
        base = base.resize(shape, Image.Resampling.BILINEAR)
    else:
        base = Image.new("RGB", shape, (255, 255, 255))
    entries = list(legend) + [(layer.color, layer.label) for layer in layers if layer.label]
    strip = 28 if entries else 0
    canvas = Image.new("RGB", (shape[0], shape[1] + strip), (255, 255, 255))
    canvas.paste(base, (0, 0))
    draw = ImageDraw.Draw(canvas)
    sx, sy = shape[0] / width, shape[1] / height

    def outline(geometry: shapely.Geometry, color: RGB, w: int) -> None:
        for poly in shapely.get_parts(geometry):
            if not isinstance(poly, shapely.Polygon):
                continue
            for ring in (poly.exterior, *poly.interiors):
                coords = np.asarray(ring.coords)
                draw.line([(x * sx, y * sy) for x, y in coords], fill=color, width=w)

    if tissue is not None and not shapely.is_empty(tissue):
        outline(tissue, TISSUE_COLOR, tissue_width)
    if hotspot is not None and not shapely.is_empty(hotspot):
        outline(hotspot, HOTSPOT_COLOR, hotspot_width)
    for layer in layers:
        r = layer.radius
        for x, y in np.asarray(layer.points, dtype=np.float64).reshape(-1, 2).tolist():
            u, v = x * sx, y * sy
            if layer.style == "dot":
                draw.ellipse(
                    (u - r, v - r, u + r, v + r), fill=layer.color, outline=(255, 255, 255)
                )
            else:
                draw.ellipse(
                    (u - r - 1, v - r - 1, u + r + 1, v + r + 1), outline=(255, 255, 255), width=1
                )
                draw.ellipse((u - r, v - r, u + r, v + r), outline=layer.color, width=2)
    x = 8
    for color, label in entries:
        y0 = shape[1] + 6
        draw.rectangle((x, y0 + 2, x + 12, y0 + 14), fill=color)
        draw.text((x + 18, y0 + 2), label, fill=(0, 0, 0))
        x += 26 + int(draw.textlength(label))
    return np.asarray(canvas)


def png_base64(image: np.ndarray) -> str:
    """Encode an image as a base64 PNG, for inlining in HTML.

    Parameters
    ----------
    image : numpy.ndarray
        ``(h, w, 3)`` uint8 RGB.

    Returns
    -------
    str
        The PNG file, base64-encoded (ASCII).
    """
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def html_preview(image: np.ndarray, rows: Sequence[tuple[str, str]], note: str = "") -> str:
    """An image beside a two-column table, for Jupyter's ``_repr_html_``.

    Parameters
    ----------
    image : numpy.ndarray
        ``(h, w, 3)`` uint8 RGB.
    rows : sequence of (str, str)
        Names and values, escaped here.
    note : str
        Trusted HTML shown below (escape any user text before passing it).

    Returns
    -------
    str
        HTML.
    """
    table = "".join(
        f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
        f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>"
        for k, v in rows
    )
    return (
        "<div><div style='display:flex;gap:1em;align-items:flex-start'>"
        f"<img src='data:image/png;base64,{png_base64(image)}'/><table>{table}</table></div>"
        f"{note}</div>"
    )


__all__ = ["PointLayer", "draw_overview", "html_preview", "png_base64"]
