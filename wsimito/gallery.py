"""Galleries of crops around points: what a detector counted, with its scores, in one look.

Three layers, none of which needs matplotlib (PIL is enough):

- :func:`crops` reads square crops centred on level-0 points (through
  :meth:`wsimito.slide.Slide.read`); :func:`crop_boxes` says which level-0 box
  each crop covers.
- :class:`GallerySection` holds one titled group of crops with a caption for
  each (e.g. "counted" and "mined negatives" side by side);
  :func:`read_section` builds one from a slide, points and scores, and
  :func:`detection_section` from a :class:`~wsimito.result.MitosisResult`.
- :func:`gallery_image` draws sections as one RGB image with captions,
  :func:`gallery_html` as a self-contained HTML page, and :func:`write_gallery`
  writes either (by the file's suffix), atomically.

:func:`wsimito.plot.detection_gallery` draws the same crops with matplotlib.

Examples
--------
>>> from wsimito.gallery import read_section, write_gallery       # doctest: +SKIP
>>> counted = read_section(slide, xy, scores, title="Counted")     # doctest: +SKIP
>>> negatives = read_section(slide, neg_xy, neg_scores, title="Negatives",
...                          color=(70, 130, 180))                 # doctest: +SKIP
>>> write_gallery("review.html", [counted, negatives])            # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import html
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .classes import CANDIDATE_COLOR, MITOSIS_COLOR
from .io.atomic import atomic_path, atomic_write
from .overview import png_base64

if TYPE_CHECKING:
    from .result import MitosisResult
    from .slide import Slide

RGB = tuple[int, int, int]

#: Which candidates of a result a gallery shows (see :func:`select_detections`).
Which = Literal["counted", "candidates", "below_threshold", "outside_tissue"]
WHICH: tuple[str, ...] = ("counted", "candidates", "below_threshold", "outside_tissue")

_GAP = 6  # px between cells of a gallery image
_CAPTION = 16  # px of caption under each crop
_HEADING = 22  # px of a section heading
_MARGIN = 8  # px around the image


def crop_boxes(
    slide: Slide, points: np.ndarray, *, size_px: int = 64, mpp: float | None = None
) -> np.ndarray:
    """The level-0 box each crop of :func:`crops` covers.

    Parameters
    ----------
    slide : Slide
        The slide the points lie on (its level-0 resolution must be known).
    points : numpy.ndarray
        ``(N, 2)`` level-0 px ``(x, y)``.
    size_px : int
        Side of each crop, px at ``mpp``.
    mpp : float, optional
        Resolution of the crops, µm/px; the slide's level-0 resolution by default.

    Returns
    -------
    numpy.ndarray
        ``(N, 4)`` float64 ``(x, y, width, height)``, level-0 px. Each box is
        centred on its point; at level-0 resolution it is moved to whole
        pixels, so the point lies within 0.5 px of the centre.

    Raises
    ------
    ValueError
        If ``points`` is not ``(N, 2)`` and finite, ``size_px`` is not a
        positive integer or ``mpp`` is not positive.
    """
    xy = _points(points)
    size_px = _size(size_px)
    scale = _scale(slide, mpp)
    side = size_px * scale
    corner = xy - side / 2
    if abs(scale - 1.0) < 1e-9:
        corner = np.floor(corner + 0.5)
    sides = np.full((len(xy), 2), side, dtype=np.float64)
    return np.concatenate([corner, sides], axis=1)


def crops(
    slide: Slide, points: np.ndarray, *, size_px: int = 64, mpp: float | None = None
) -> np.ndarray:
    """Square crops centred on level-0 points, read with :meth:`Slide.read`.

    Parameters
    ----------
    slide : Slide
        The slide the points lie on.
    points : numpy.ndarray
        ``(N, 2)`` level-0 px ``(x, y)``.
    size_px : int
        Side of each crop, px at ``mpp``.
    mpp : float, optional
        Resolution of the crops, µm/px; the slide's level-0 resolution by
        default (no resampling).

    Returns
    -------
    numpy.ndarray
        ``(N, size_px, size_px, 3)`` uint8 RGB. A point lies at the crop's
        centre (continuous px ``size_px / 2``; within 0.5 px at level 0, see
        :func:`crop_boxes`). Parts outside the slide are white.

    Raises
    ------
    ValueError
        As :func:`crop_boxes`.
    """
    boxes = crop_boxes(slide, points, size_px=size_px, mpp=mpp)
    size_px = int(size_px)
    out = np.empty((len(boxes), size_px, size_px, 3), dtype=np.uint8)
    for i, box in enumerate(boxes.tolist()):
        crop = slide.read(tuple(box), mpp=mpp)
        if crop.shape[:2] != (size_px, size_px):  # rounding of the box at coarse mpp
            crop = np.asarray(
                Image.fromarray(crop).resize((size_px, size_px), Image.Resampling.BILINEAR)
            )
        out[i] = crop
    return out


@dataclass(frozen=True)
class GallerySection:
    """One titled group of crops, each with a caption.

    Attributes
    ----------
    title : str
        Heading of the group (e.g. ``"Counted"``, ``"Mined negatives"``).
    crops : numpy.ndarray
        ``(N, h, w, 3)`` uint8 RGB, each centred on its point.
    labels : tuple of str
        One caption per crop (e.g. the score).
    points : numpy.ndarray or None
        ``(N, 2)`` level-0 px of the crops' centres (shown as tooltips in HTML).
    color : tuple of int
        RGB 0-255 of the centre marks.
    """

    title: str
    crops: np.ndarray
    labels: tuple[str, ...]
    points: np.ndarray | None = None
    color: RGB = MITOSIS_COLOR

    def __post_init__(self) -> None:
        arr = np.asarray(self.crops)
        if arr.size == 0:
            arr = arr.reshape(0, 1, 1, 3).astype(np.uint8)
        if arr.ndim != 4 or arr.shape[3] != 3 or arr.dtype != np.uint8:
            raise ValueError(
                f"section {self.title!r}: crops must be an (N, h, w, 3) uint8 array, got "
                f"{arr.shape} {arr.dtype}"
            )
        labels = tuple(str(v) for v in self.labels)
        if len(labels) != len(arr):
            raise ValueError(
                f"section {self.title!r}: {len(labels)} labels for {len(arr)} crops; "
                "give one label per crop"
            )
        points = None
        if self.points is not None:
            points = _points(self.points)
            if len(points) != len(arr):
                raise ValueError(
                    f"section {self.title!r}: {len(points)} points for {len(arr)} crops"
                )
        object.__setattr__(self, "crops", arr)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "color", tuple(int(c) for c in self.color))

    def __len__(self) -> int:
        return len(self.crops)


def read_section(
    slide: Slide,
    points: np.ndarray,
    scores: np.ndarray | None = None,
    *,
    title: str = "",
    size_px: int = 64,
    mpp: float | None = None,
    n: int | None = None,
    color: RGB = MITOSIS_COLOR,
    labels: Sequence[str] | None = None,
) -> GallerySection:
    """Read the crops of one gallery section from a slide.

    Parameters
    ----------
    slide : Slide
        The slide the points lie on.
    points : numpy.ndarray
        ``(N, 2)`` level-0 px.
    scores : numpy.ndarray, optional
        ``(N,)`` scores in [0, 1]. When given, the points are shown by
        descending score (ties keep their order) and each caption is the
        score with two decimals.
    title : str
        Heading of the section.
    size_px : int
        Side of each crop, px at ``mpp``.
    mpp : float, optional
        Resolution of the crops, µm/px; the slide's level-0 resolution by default.
    n : int, optional
        Show only the first ``n`` points (after sorting by score).
    color : tuple of int
        RGB 0-255 of the centre marks.
    labels : sequence of str, optional
        Captions, one per point, instead of the scores.

    Returns
    -------
    GallerySection

    Raises
    ------
    ValueError
        If ``scores`` or ``labels`` do not match the points, or ``n`` is negative.
    """
    xy = _points(points)
    order = np.arange(len(xy))
    if scores is not None:
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(s) != len(xy):
            raise ValueError(f"scores has {len(s)} entries for {len(xy)} points")
        order = np.argsort(-s, kind="stable")
    if labels is not None:
        labels = [str(v) for v in labels]
        if len(labels) != len(xy):
            raise ValueError(f"labels has {len(labels)} entries for {len(xy)} points")
    if n is not None:
        if int(n) < 0:
            raise ValueError(f"n must be a number of crops >= 0, got {n!r}")
        order = order[: int(n)]
    xy = xy[order]
    if labels is not None:
        text = tuple(labels[i] for i in order)
    elif scores is not None:
        text = tuple(f"{s[i]:.2f}" for i in order)
    else:
        text = tuple(f"#{i + 1}" for i in range(len(order)))
    return GallerySection(
        title, crops(slide, xy, size_px=size_px, mpp=mpp), text, points=xy, color=color
    )


def select_detections(
    result: MitosisResult, which: Which = "counted"
) -> tuple[np.ndarray, np.ndarray]:
    """Points and scores of one kind of candidate of ``result``, by descending score.

    Parameters
    ----------
    result : MitosisResult
        A counting result.
    which : {"counted", "candidates", "below_threshold", "outside_tissue"}
        ``"counted"``: the mitotic figures the result counts; ``"candidates"``:
        every candidate; ``"below_threshold"``: candidates in the analysed
        tissue scored below the threshold (the near misses);
        ``"outside_tissue"``: candidates outside the analysed tissue, whatever
        their score.

    Returns
    -------
    tuple of numpy.ndarray
        ``(N, 2)`` level-0 px and ``(N,)`` scores, in the order of
        :attr:`MitosisResult.candidates` (descending score, then y, then x).

    Raises
    ------
    ValueError
        For an unknown ``which``.
    """
    if which not in WHICH:
        raise ValueError(f"which={which!r} is not one of {', '.join(map(repr, WHICH))}")
    frame = result.candidates
    keep = {
        "counted": frame["counted"].to_numpy(),
        "candidates": np.ones(len(frame), dtype=bool),
        "below_threshold": (frame["in_tissue"] & ~frame["counted"]).to_numpy(),
        "outside_tissue": ~frame["in_tissue"].to_numpy(),
    }[which]
    xy = frame[["x", "y"]].to_numpy(dtype=np.float64)[keep]
    return xy, frame["score"].to_numpy(dtype=np.float64)[keep]


_TITLES = {
    "counted": "Counted mitotic figures",
    "candidates": "All candidates",
    "below_threshold": "Candidates in tissue below the threshold",
    "outside_tissue": "Candidates outside the analysed tissue",
}


def detection_section(
    result: MitosisResult,
    slide: Slide | None = None,
    *,
    which: Which = "counted",
    n: int | None = 24,
    size_um: float = 40.0,
    mpp: float | None = None,
) -> GallerySection:
    """The top-``n`` candidates of one kind from ``result`` as a gallery section.

    Parameters
    ----------
    result : MitosisResult
        A counting result.
    slide : Slide, optional
        The slide it was counted on; by default the result's ``slide_path`` is
        opened (and closed again).
    which : {"counted", "candidates", "below_threshold", "outside_tissue"}
        Which candidates (see :func:`select_detections`).
    n : int or None
        How many, by descending score; ``None`` for all.
    size_um : float
        Side of each crop, µm.
    mpp : float, optional
        Resolution of the crops, µm/px; the slide's level-0 resolution by default.

    Returns
    -------
    GallerySection
        Titled e.g. ``"Counted mitotic figures: top 24 of 31 (threshold 0.49)"``.

    Raises
    ------
    ValueError
        If the result has no slide path and no ``slide`` is given, the slide
        is not the one the result was counted on, or ``size_um`` is not positive.
    """
    xy, scores = select_detections(result, which)
    size_um = float(size_um)
    if not (math.isfinite(size_um) and size_um > 0):
        raise ValueError(f"size_um must be a positive crop side in µm, got {size_um!r}")
    shown = len(xy) if n is None else min(len(xy), int(n))
    title = f"{_TITLES[which]}: " + (
        f"top {shown} of {len(xy)}" if shown < len(xy) else f"{len(xy)}"
    )
    title += f" (threshold {result.threshold:.2f})"
    color = MITOSIS_COLOR if which == "counted" else CANDIDATE_COLOR
    with result_slide(result, slide) as s:
        size_px = max(8, round(size_um / (s.mpp if mpp is None else float(mpp))))
        return read_section(s, xy, scores, title=title, size_px=size_px, mpp=mpp, n=n, color=color)


@contextlib.contextmanager
def result_slide(result: MitosisResult, slide: Slide | None = None) -> Iterator[Slide]:
    """The slide ``result`` was counted on: ``slide`` itself, or its file opened for the block.

    Parameters
    ----------
    result : MitosisResult
        A counting result.
    slide : Slide, optional
        The slide, if the caller has it open; otherwise ``result.slide_path``
        is opened (with the ``mpp=`` the result was given) and closed after.

    Yields
    ------
    Slide

    Raises
    ------
    ValueError
        If the result came from an in-memory image and no ``slide`` is given,
        or the slide's size or resolution differs from the result's (see
        :func:`check_slide`).
    """
    if slide is not None:
        check_slide(result, slide)
        yield slide
        return
    if result.slide_path is None:
        raise ValueError(
            f"{result.slide_name} was counted from an in-memory image; pass slide= "
            "(the Slide it was counted on) to read the crops"
        )
    from .slide import open_slide

    with open_slide(result.slide_path, mpp=result.mpp_given) as opened:
        check_slide(result, opened)
        yield opened


def check_slide(result: MitosisResult, slide: Slide) -> None:
    """Check that ``slide`` is the slide ``result`` was counted on.

    Parameters
    ----------
    result : MitosisResult
        A counting result.
    slide : Slide
        The slide to check.

    Raises
    ------
    ValueError
        If the slide's level-0 size (px) or resolution (µm/px) differs from the result's.
    """
    if tuple(slide.dimensions) != tuple(result.slide_dimensions):
        raise ValueError(
            f"slide {slide.name} is {slide.dimensions} px but the result was counted on a "
            f"{result.slide_dimensions} px slide ({result.slide_name}); pass the slide it was "
            "counted on"
        )
    if abs(slide.mpp / result.slide_mpp - 1) > 1e-6:
        raise ValueError(
            f"slide {slide.name} is at {slide.mpp:g} µm/px but the result was counted at "
            f"{result.slide_mpp:g} µm/px; open the slide with the same mpp="
        )


def gallery_image(
    sections: np.ndarray | Sequence[GallerySection],
    labels: Sequence[str] | None = None,
    *,
    title: str | None = None,
    columns: int = 8,
    zoom: int = 2,
    marker: bool = True,
) -> np.ndarray:
    """Crops with their captions as one RGB image, grouped in titled sections.

    Parameters
    ----------
    sections : numpy.ndarray or sequence of GallerySection
        The sections; or one ``(N, h, w, 3)`` uint8 array of crops, shown as
        a single untitled section with ``labels``.
    labels : sequence of str, optional
        Only with an array of crops: one caption per crop (default: none).
    title : str, optional
        Heading of the whole image.
    columns : int
        Crops per row.
    zoom : int
        Each crop is enlarged by this integer factor (nearest neighbour).
    marker : bool
        Mark the crop centre (the point) with four short ticks around it,
        in the section's colour; the centre itself stays visible.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8 RGB, ready for ``PIL.Image.fromarray(...).save("x.png")``.

    Raises
    ------
    ValueError
        If ``columns`` or ``zoom`` is not a positive integer, or labels do not
        match the crops.
    """
    parts = _sections(sections, labels)
    columns, zoom = _positive_int(columns, "columns"), _positive_int(zoom, "zoom")
    font, small = _font(14), _font(11)
    cell_w = max((s.crops.shape[2] * zoom for s in parts if len(s)), default=64)
    width = max(_MARGIN * 2 + columns * cell_w + (columns - 1) * _GAP, 320)
    layout: list[tuple[GallerySection, int, int]] = []
    y = _MARGIN + (_HEADING + 4 if title else 0)
    for section in parts:
        heading = _HEADING if section.title or not len(section) else 0
        cell_h = (section.crops.shape[1] * zoom + _CAPTION) if len(section) else _CAPTION
        rows = max(1, math.ceil(len(section) / columns))
        layout.append((section, y, heading))
        y += heading + rows * (cell_h + _GAP)
    canvas = Image.new("RGB", (width, y + _MARGIN - _GAP), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((_MARGIN, _MARGIN), title, fill=(0, 0, 0), font=_font(16))
    for section, top, heading in layout:
        if heading:
            draw.text((_MARGIN, top + 3), section.title, fill=(0, 0, 0), font=font)
        if not len(section):
            draw.text((_MARGIN, top + heading), "(none)", fill=(110, 110, 110), font=small)
            continue
        h, w = section.crops.shape[1] * zoom, section.crops.shape[2] * zoom
        for k, (crop, label) in enumerate(zip(section.crops, section.labels, strict=True)):
            row, col = divmod(k, columns)
            x0 = _MARGIN + col * (cell_w + _GAP)
            y0 = top + heading + row * (h + _CAPTION + _GAP)
            canvas.paste(_tile(crop, zoom, section.color if marker else None), (x0, y0))
            text_w = draw.textlength(label, font=small)
            draw.text((x0 + (w - text_w) / 2, y0 + h + 2), label, fill=(0, 0, 0), font=small)
    return np.asarray(canvas)


def gallery_html(
    sections: np.ndarray | Sequence[GallerySection],
    labels: Sequence[str] | None = None,
    *,
    title: str | None = None,
    zoom: int = 2,
    marker: bool = True,
) -> str:
    """Crops with their captions as one self-contained HTML page (images inlined as PNG).

    Parameters
    ----------
    sections : numpy.ndarray or sequence of GallerySection
        As for :func:`gallery_image`.
    labels : sequence of str, optional
        Only with an array of crops: one caption per crop.
    title : str, optional
        Page heading and ``<title>``.
    zoom : int
        Each crop is enlarged by this integer factor.
    marker : bool
        Mark each crop's centre, as in :func:`gallery_image`.

    Returns
    -------
    str
        HTML. Each crop is a ``<figure>`` with its caption; where the section
        knows the points, hovering shows the level-0 px position.

    Raises
    ------
    ValueError
        As :func:`gallery_image`.
    """
    parts = _sections(sections, labels)
    zoom = _positive_int(zoom, "zoom")
    heading = html.escape(title or "wsimito gallery")
    body = [f"<h1>{heading}</h1>"] if title else []
    for section in parts:
        if section.title:
            body.append(f"<h2>{html.escape(section.title)}</h2>")
        if not len(section):
            body.append("<p class='none'>(none)</p>")
            continue
        figures = []
        for k, (crop, label) in enumerate(zip(section.crops, section.labels, strict=True)):
            tile = np.asarray(_tile(crop, zoom, section.color if marker else None))
            tip = ""
            if section.points is not None:
                x, y = section.points[k]
                tip = f" title='x = {x:.1f}, y = {y:.1f} (level-0 px)'"
            figures.append(
                f"<figure{tip}><img src='data:image/png;base64,{png_base64(tile)}' "
                f"width='{tile.shape[1]}' height='{tile.shape[0]}' alt='{html.escape(label)}'/>"
                f"<figcaption>{html.escape(label)}</figcaption></figure>"
            )
        body.append(f"<div class='grid'>{''.join(figures)}</div>")
    style = (
        "body{font-family:sans-serif;margin:1em}"
        ".grid{display:flex;flex-wrap:wrap;gap:6px}"
        "figure{margin:0;text-align:center;font-size:12px}.none{color:#666}"
    )
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{heading}</title><style>{style}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def write_gallery(
    path: str | os.PathLike,
    sections: np.ndarray | Sequence[GallerySection],
    labels: Sequence[str] | None = None,
    *,
    title: str | None = None,
    columns: int = 8,
    zoom: int = 2,
    marker: bool = True,
) -> Path:
    """Write a gallery as PNG (``.png``) or HTML (``.html``, ``.htm``), atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Output file; its suffix picks the format. The file appears complete or
        not at all.
    sections, labels, title, columns, zoom, marker
        As for :func:`gallery_image` (``columns`` applies to PNG only; HTML
        wraps to the window's width).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ValueError
        For another suffix, or as :func:`gallery_image`.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix == ".png":
        image = gallery_image(
            sections, labels, title=title, columns=columns, zoom=zoom, marker=marker
        )
        with atomic_path(target) as tmp:
            Image.fromarray(image).save(tmp, format="PNG", optimize=True)
    elif suffix in (".html", ".htm"):
        page = gallery_html(sections, labels, title=title, zoom=zoom, marker=marker)
        with atomic_write(target) as fh:
            fh.write(page)
    else:
        raise ValueError(
            f"{target.name}: a gallery is written as .png or .html; got suffix {suffix!r}"
        )
    return target


# -- helpers ----------------------------------------------------------------------


def _tile(crop: np.ndarray, zoom: int, color: RGB | None) -> Image.Image:
    """One crop enlarged by ``zoom``, with ticks around its centre in ``color`` (if any)."""
    image = Image.fromarray(crop)
    if zoom > 1:
        image = image.resize((crop.shape[1] * zoom, crop.shape[0] * zoom), Image.Resampling.NEAREST)
    if color is not None:
        draw = ImageDraw.Draw(image)
        w, h = image.size
        cx, cy, side = w / 2, h / 2, min(w, h)
        near, far = 0.2 * side, 0.34 * side
        width = max(1, round(side / 64))
        for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            draw.line(
                [(cx + dx * near, cy + dy * near), (cx + dx * far, cy + dy * far)],
                fill=color,
                width=width,
            )
    return image


def _sections(
    sections: np.ndarray | Sequence[GallerySection], labels: Sequence[str] | None
) -> list[GallerySection]:
    if isinstance(sections, np.ndarray):
        n = len(sections)
        return [GallerySection("", sections, tuple(labels) if labels is not None else ("",) * n)]
    if labels is not None:
        raise ValueError("labels= goes with an array of crops; sections carry their own labels")
    parts = list(sections)
    bad = [type(s).__name__ for s in parts if not isinstance(s, GallerySection)]
    if bad:
        raise TypeError(
            f"expected an (N, h, w, 3) array of crops or GallerySection objects, got {bad[0]}"
        )
    return parts


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _points(points: np.ndarray) -> np.ndarray:
    xy = np.asarray(points, dtype=np.float64)
    if xy.size == 0:
        return xy.reshape(0, 2)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"points must be an (N, 2) array of level-0 (x, y) px, got {xy.shape}")
    if not np.isfinite(xy).all():
        raise ValueError("points holds NaN or infinite coordinates; drop them first")
    return xy


def _size(size_px: int) -> int:
    if isinstance(size_px, bool) or int(size_px) != size_px or size_px < 1:
        raise ValueError(f"size_px must be a positive whole number of px, got {size_px!r}")
    return int(size_px)


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive whole number, got {value!r}")
    return int(value)


def _scale(slide: Slide, mpp: float | None) -> float:
    """Level-0 px per crop px."""
    if mpp is None:
        return 1.0
    mpp = float(mpp)
    if not (math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp must be a positive number of µm per pixel, got {mpp!r}")
    return mpp / slide.mpp


__all__ = [
    "WHICH",
    "GallerySection",
    "Which",
    "check_slide",
    "crop_boxes",
    "crops",
    "detection_section",
    "gallery_html",
    "gallery_image",
    "read_section",
    "result_slide",
    "select_detections",
    "write_gallery",
]
