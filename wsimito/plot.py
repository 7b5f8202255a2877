"""Matplotlib plots of slides, tissue, detections, density and detection galleries.

Every plot draws in level-0 px: the image is placed with ``extent`` so that
data coordinates *are* level-0 px (x right, y down), and you can overplot
your own points with ``ax.scatter(x, y)``. Each artist this module draws
carries a ``gid`` (``"wsimito-thumbnail"``, ``"wsimito-tissue"``,
``"wsimito-tiles"``, ``"wsimito-hotspot"``, ``"wsimito-detections"``,
``"wsimito-candidates"``, ``"wsimito-density"``, ``"wsimito-scalebar"``) so
that it can be found and restyled.

This module needs matplotlib, an optional extra: ``pip install "wsimito[plot]"``.
:mod:`wsimito.gallery` makes PNG/HTML galleries without it.

Examples
--------
>>> import wsimito.plot                                          # doctest: +SKIP
>>> ax = wsimito.plot.plot_slide(result, candidates=True)         # doctest: +SKIP
>>> ax.scatter(my_x, my_y, marker="x")  # level-0 px              # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import shapely

try:
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import Normalize
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        'wsimito.plot needs matplotlib, an optional extra: pip install "wsimito[plot]" '
        "(or pip install matplotlib). wsimito.gallery writes PNG/HTML galleries without it."
    ) from exc

from . import gallery as _gallery
from .classes import CANDIDATE_COLOR, HOTSPOT_COLOR, MITOSIS_COLOR, TISSUE_COLOR

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .result import MitosisResult
    from .slide import Slide
    from .tiling import TileGrid
    from .tissue import Tissue

#: Round scale-bar lengths are 1, 2 or 5 times a power of ten, µm.
_NICE = (1.0, 2.0, 5.0)
#: The scale bar is the longest round length up to this fraction of the axes' width.
_BAR_FRACTION = 0.25
#: Largest region ``plot_region`` reads, px at the requested mpp.
MAX_REGION_PIXELS = 4096 * 4096


def _rgb(color: tuple[int, int, int]) -> tuple[float, float, float]:
    return tuple(c / 255 for c in color)  # type: ignore[return-value]


def plot_slide(
    result_or_slide: MitosisResult | Slide,
    *,
    tissue: Tissue | None = None,
    tiles: TileGrid | np.ndarray | None = None,
    ax: Axes | None = None,
    candidates: bool = False,
    hotspot: bool = True,
    scale_bar: bool = True,
    colorbar: bool = True,
    legend: bool = True,
    cmap: str = "viridis",
    marker_size: float = 30.0,
    max_size: int = 1024,
) -> Axes:
    """A slide's thumbnail with its tissue, tiles, detections (coloured by score) and hotspot.

    Parameters
    ----------
    result_or_slide : MitosisResult or Slide
        A counting result (its stored thumbnail, analysed tissue, counted
        figures and hotspot are drawn) or a slide (its thumbnail only).
    tissue : Tissue, optional
        Tissue whose outline is drawn (green); for a result, its analysed
        tissue by default.
    tiles : TileGrid or numpy.ndarray, optional
        Tile boxes to outline: a :class:`~wsimito.tiling.TileGrid` or an
        ``(N, 4)`` array of level-0 ``(x, y, w, h)`` px.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure by default.
    candidates : bool
        Also draw the candidates that were not counted (grey; below the
        threshold or outside the analysed tissue).
    hotspot : bool
        Outline the hotspot window (orange), unless the hotspot is the whole tissue.
    scale_bar : bool
        Draw a scale bar of a round length in µm or mm.
    colorbar : bool
        Add a score colour bar, with the threshold marked.
    legend : bool
        Add a legend.
    cmap : str
        Colour map of the scores (0 to 1).
    marker_size : float
        Size of the detection markers, points².
    max_size : int
        Longest side of the thumbnail read from a slide, px (a result's
        stored thumbnail is used as it is).

    Returns
    -------
    matplotlib.axes.Axes
        Axes whose data coordinates are level-0 px of the slide.

    Raises
    ------
    TypeError
        If ``result_or_slide`` is neither a result nor a slide.
    """
    from .slide import Slide

    result: MitosisResult | None = None
    if isinstance(result_or_slide, Slide):
        dims, mpp, name = result_or_slide.dimensions, result_or_slide.mpp, result_or_slide.name
        image = result_or_slide.thumbnail(max_size)
    elif _is_result(result_or_slide):
        result = result_or_slide
        dims, mpp, image = result.slide_dimensions, result.slide_mpp, result.thumbnail
        name = result.slide_name
        if tissue is None:
            tissue = result.analysed_tissue
    else:
        raise TypeError(
            f"plot_slide takes a MitosisResult or a Slide, got {type(result_or_slide).__name__}"
        )
    width, height = dims
    ax = _axes(ax, (width, height))
    _draw_image(ax, image, (0.0, float(width), float(height), 0.0))
    if tissue is not None:
        _outline(ax, tissue.geometry, TISSUE_COLOR, "tissue", gid="wsimito-tissue")
    if tiles is not None:
        _draw_tiles(ax, tiles)
    title = name
    if result is not None:
        if hotspot:
            spot = result.hotspot
            if not spot.whole_tissue:
                _outline(
                    ax,
                    spot.polygon,
                    HOTSPOT_COLOR,
                    f"hotspot ({spot.count} in {spot.area_mm2:.3g} mm²)",
                    gid="wsimito-hotspot",
                    linewidth=2.0,
                )
        if candidates:
            _draw_candidates(ax, result, None, marker_size)
        counted = result.counted()
        artist = _draw_detections(ax, counted.xy, counted.scores, cmap, marker_size)
        if colorbar:
            _score_colorbar(ax, artist, result.threshold)
        title = (
            f"{name}: {result.count} counted, {result.density_per_mm2:.3g}/mm² "
            f"of {result.tissue_area_mm2:.3g} mm²"
        )
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    _finish(ax, title, mpp, width, scale_bar, legend)
    return ax


def plot_tissue(
    tissue: Tissue,
    *,
    ax: Axes | None = None,
    scale_bar: bool = True,
    legend: bool = True,
) -> Axes:
    """The image tissue detection saw, with the tissue outline and its area.

    Parameters
    ----------
    tissue : Tissue
        From :func:`wsimito.detect_tissue` (the image it classified is drawn)
        or built from polygons (the outline on white).
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure by default.
    scale_bar : bool
        Draw a scale bar of a round length in µm or mm.
    legend : bool
        Add a legend.

    Returns
    -------
    matplotlib.axes.Axes
        Axes whose data coordinates are level-0 px of the slide.
    """
    width, height = tissue.dimensions
    ax = _axes(ax, (width, height))
    rows, cols = tissue.mask.shape
    s = tissue.scale
    # The classified image covers the whole mask grid, which may reach past the slide.
    _draw_image(ax, tissue.image, (0.0, cols * s, rows * s, 0.0))
    _outline(ax, tissue.geometry, TISSUE_COLOR, "tissue", gid="wsimito-tissue")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    title = f"tissue: {tissue.area_mm2:.3g} mm² (method {tissue.method}, mask {tissue.mpp:g} µm/px)"
    _finish(ax, title, tissue.slide_mpp, width, scale_bar, legend)
    return ax


def plot_region(
    slide: Slide,
    box: Sequence[float],
    result: MitosisResult | None = None,
    *,
    mpp: float | None = None,
    ax: Axes | None = None,
    candidates: bool = True,
    scale_bar: bool = True,
    colorbar: bool = True,
    legend: bool = True,
    cmap: str = "viridis",
    marker_size: float = 80.0,
) -> Axes:
    """A region of a slide at full resolution (or ``mpp``), with the detections in it.

    Parameters
    ----------
    slide : Slide
        The slide.
    box : sequence of float
        Level-0 ``(x, y, w, h)`` px of the region.
    result : MitosisResult, optional
        A result counted on this slide: its counted figures in the region are
        drawn coloured by score, with the analysed tissue's outline.
    mpp : float, optional
        Resolution to read at, µm/px; the slide's level-0 resolution by default.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure by default.
    candidates : bool
        Also draw the region's candidates that were not counted (grey rings).
    scale_bar, colorbar, legend : bool
        As for :func:`plot_slide`.
    cmap : str
        Colour map of the scores (0 to 1).
    marker_size : float
        Size of the detection markers, points².

    Returns
    -------
    matplotlib.axes.Axes
        Axes whose data coordinates are level-0 px of the slide, limited to ``box``.

    Raises
    ------
    ValueError
        If ``box`` is not four finite numbers with positive width and height,
        the region would exceed :data:`MAX_REGION_PIXELS` at ``mpp`` (pass a
        coarser ``mpp``), or ``result`` was counted on another slide.
    """
    x, y, w, h = _box(box)
    scale = 1.0 if mpp is None else float(mpp) / slide.mpp
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"mpp must be a positive number of µm per pixel, got {mpp!r}")
    pixels = (w / scale) * (h / scale)
    if pixels > MAX_REGION_PIXELS:
        coarser = slide.mpp * math.sqrt(w * h / MAX_REGION_PIXELS)
        raise ValueError(
            f"box {w:g} x {h:g} px is {pixels / 1e6:.0f} MP at {slide.mpp * scale:g} µm/px, "
            f"more than plot_region draws ({MAX_REGION_PIXELS / 1e6:.0f} MP); pass "
            f"mpp={math.ceil(coarser * 100) / 100:g} or larger, or use plot_slide"
        )
    if result is not None:
        _gallery.check_slide(result, slide)
    image = slide.read((x, y, w, h), mpp=mpp)
    ax = _axes(ax, (w, h))
    _draw_image(ax, image, (x, x + w, y + h, y))
    title = f"{slide.name}: x {x:.0f}-{x + w:.0f}, y {y:.0f}-{y + h:.0f} px"
    if result is not None:
        _outline(ax, result.analysed_tissue.geometry, TISSUE_COLOR, "tissue", gid="wsimito-tissue")
        if candidates:
            _draw_candidates(ax, result, (x, y, w, h), marker_size)
        counted = result.counted()
        inside = _in_box(counted.xy, (x, y, w, h))
        artist = _draw_detections(
            ax, counted.xy[inside], counted.scores[inside], cmap, marker_size, hollow=True
        )
        if colorbar:
            _score_colorbar(ax, artist, result.threshold)
        title += f", {int(inside.sum())} counted"
    ax.set_xlim(x, x + w)
    ax.set_ylim(y + h, y)
    _finish(ax, title, slide.mpp, w, scale_bar, legend)
    return ax


def plot_density(
    result: MitosisResult,
    *,
    cell_um: float = 250.0,
    min_tissue: float = 0.25,
    ax: Axes | None = None,
    cmap: str = "YlOrRd",
    background: bool = True,
    scale_bar: bool = True,
    colorbar: bool = True,
    vmax: float | None = None,
) -> Axes:
    """A heat map of counted mitotic figures per mm² of analysed tissue.

    The slide is cut into square cells of ``cell_um`` µm from its top-left
    corner. A cell's value is the number of counted figures in it
    (``x0 <= x < x1``, ``y0 <= y < y1``) divided by the analysed tissue area
    inside it, mm². Cells whose analysed tissue covers less than
    ``min_tissue`` of the cell are blank (NaN): too little tissue for a
    density, and outside the tissue there is none.

    Parameters
    ----------
    result : MitosisResult
        A counting result.
    cell_um : float
        Side of a cell, µm (250 µm: 0.0625 mm², about a quarter of an HPF).
    min_tissue : float
        Fraction (0 to 1] of a cell's area that must be analysed tissue for
        it to get a value.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure by default.
    cmap : str
        Colour map of the density.
    background : bool
        Draw the thumbnail under a semi-transparent map.
    scale_bar, colorbar : bool
        As for :func:`plot_slide`; the colour bar is in figures / mm².
    vmax : float, optional
        Top of the colour scale, figures / mm² (the map's maximum by default).

    Returns
    -------
    matplotlib.axes.Axes
        Axes whose data coordinates are level-0 px of the slide; the map is
        the image with ``gid="wsimito-density"``, one pixel per cell.

    Raises
    ------
    ValueError
        If ``cell_um`` is not positive or ``min_tissue`` is not in (0, 1].
    """
    cell_um = float(cell_um)
    if not (math.isfinite(cell_um) and cell_um > 0):
        raise ValueError(f"cell_um must be a positive cell side in µm, got {cell_um!r}")
    if not 0.0 < float(min_tissue) <= 1.0:
        raise ValueError(f"min_tissue must be a fraction in (0, 1], got {min_tissue!r}")
    density, side = _density_grid(result, cell_um, float(min_tissue))
    rows, cols = density.shape
    width, height = result.slide_dimensions
    ax = _axes(ax, (width, height))
    if background and result.thumbnail is not None:
        _draw_image(ax, result.thumbnail, (0.0, float(width), float(height), 0.0))
    finite = density[np.isfinite(density)]
    top = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    image = ax.imshow(
        density,
        extent=(0.0, cols * side, rows * side, 0.0),
        cmap=cmap,
        vmin=0.0,
        vmax=max(top, 1e-9),
        interpolation="nearest",
        alpha=0.75 if background and result.thumbnail is not None else 1.0,
        zorder=2,
    )
    image.set_gid("wsimito-density")
    _outline(ax, result.analysed_tissue.geometry, TISSUE_COLOR, "tissue", gid="wsimito-tissue")
    if colorbar:
        ax.figure.colorbar(image, ax=ax, shrink=0.8, label="mitotic figures / mm²")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    title = f"{result.slide_name}: {result.density_per_mm2:.3g}/mm² overall, {cell_um:g} µm cells"
    _finish(ax, title, result.slide_mpp, width, scale_bar, legend=False)
    return ax


def detection_gallery(
    result: MitosisResult,
    slide: Slide | None = None,
    *,
    n: int = 24,
    which: _gallery.Which = "counted",
    size_um: float = 40.0,
    mpp: float | None = None,
    columns: int = 6,
) -> Figure:
    """Crops around the top-``n`` detections of a result, each titled with its score.

    The crops come from :func:`wsimito.gallery.detection_section` (the same
    crops :func:`wsimito.gallery.write_gallery` writes as PNG or HTML). Each
    crop is drawn with ``extent`` in level-0 px, so its axes' data
    coordinates are slide coordinates, and the detection at its centre is
    marked with four ticks.

    Parameters
    ----------
    result : MitosisResult
        A counting result.
    slide : Slide, optional
        The slide it was counted on; by default the result's file is opened.
    n : int
        How many, by descending score.
    which : {"counted", "candidates", "below_threshold", "outside_tissue"}
        Which candidates (see :func:`wsimito.gallery.select_detections`).
    size_um : float
        Side of each crop, µm.
    mpp : float, optional
        Resolution of the crops, µm/px; the slide's level-0 resolution by default.
    columns : int
        Crops per row.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per crop (in order of descending score), titled with the
        score; the figure's title says which candidates and how many.

    Raises
    ------
    ValueError
        As :func:`wsimito.gallery.detection_section`.
    """
    columns = _gallery._positive_int(columns, "columns")
    with _gallery.result_slide(result, slide) as s:
        section = _gallery.detection_section(result, s, which=which, n=n, size_um=size_um, mpp=mpp)
        side_px = section.crops.shape[1] if len(section) else 1
        boxes = _gallery.crop_boxes(s, section.points, size_px=side_px, mpp=mpp)
    count = len(section)
    rows = max(1, math.ceil(count / columns))
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(1.7 * columns, 1.9 * rows + 0.4),
        squeeze=False,
        layout="constrained",
    )
    color = _rgb(section.color)
    for k, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if k >= count:
            continue
        bx, by, bw, bh = boxes[k]
        ax.imshow(section.crops[k], extent=(bx, bx + bw, by + bh, by), interpolation="nearest")
        px, py = section.points[k]
        near, far = 0.2 * bw, 0.34 * bw
        for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            ax.plot(
                [px + dx * near, px + dx * far],
                [py + dy * near, py + dy * far],
                color=color,
                lw=1.5,
            )
        ax.set_xlim(bx, bx + bw)
        ax.set_ylim(by + bh, by)
        ax.set_title(section.labels[k], fontsize=9)
    if not count:
        axes[0, 0].text(0.0, 0.5, "nothing to show", transform=axes[0, 0].transAxes)
    fig.suptitle(f"{result.slide_name}: {section.title}", fontsize=10)
    return fig


# -- drawing helpers ------------------------------------------------------------------


def _is_result(value: object) -> bool:
    """Whether ``value`` is a MitosisResult (checked by name: wsimito.result imports this
    module lazily, so importing it back would make a cycle)."""
    return any(c.__name__ == "MitosisResult" for c in type(value).__mro__)


def _axes(ax: Axes | None, size: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    w, h = size
    aspect = h / w if w > 0 else 1.0
    _, ax = plt.subplots(figsize=(7.0, min(10.0, max(3.0, 6.0 * aspect))), layout="constrained")
    return ax


def _draw_image(ax: Axes, image: np.ndarray | None, extent: tuple[float, ...]) -> None:
    if image is None:
        ax.set_facecolor((0.93, 0.93, 0.93))
        return
    artist = ax.imshow(np.asarray(image), extent=extent, interpolation="antialiased", zorder=0)
    artist.set_gid("wsimito-thumbnail")


def _outline(
    ax: Axes,
    geometry: shapely.Geometry,
    color: tuple[int, int, int],
    label: str,
    *,
    gid: str,
    linewidth: float = 1.2,
) -> None:
    """Every ring of ``geometry``'s polygons as one line each; only the first one is labelled."""
    if geometry is None or shapely.is_empty(geometry):
        return
    first = True
    for poly in shapely.get_parts(geometry):
        if not isinstance(poly, shapely.Polygon):
            continue
        for ring in (poly.exterior, *poly.interiors):
            xy = np.asarray(ring.coords)
            (line,) = ax.plot(
                xy[:, 0],
                xy[:, 1],
                color=_rgb(color),
                lw=linewidth,
                label=label if first else "_nolegend_",
                zorder=3,
            )
            line.set_gid(gid)
            first = False


def _draw_tiles(ax: Axes, tiles: TileGrid | np.ndarray) -> None:
    boxes = tiles.boxes() if hasattr(tiles, "boxes") else np.asarray(tiles, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x, y, w, h = boxes.T
    corners = np.stack(
        [
            np.stack([x, y], 1),
            np.stack([x + w, y], 1),
            np.stack([x + w, y + h], 1),
            np.stack([x, y + h], 1),
        ],
        axis=1,
    )
    collection = PolyCollection(
        corners,
        facecolors="none",
        edgecolors=(0.2, 0.4, 0.9, 0.6),
        linewidths=0.6,
        label=f"tiles ({len(boxes)})",
        zorder=2,
    )
    collection.set_gid("wsimito-tiles")
    ax.add_collection(collection)


def _draw_detections(
    ax: Axes,
    xy: np.ndarray,
    scores: np.ndarray,
    cmap: str,
    size: float,
    *,
    hollow: bool = False,
) -> ScalarMappable:
    """Points coloured by score (0 to 1 on ``cmap``): dots, or rings when ``hollow``.

    Returns the mappable for a colour bar.
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    mappable = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap)
    colors = mappable.to_rgba(np.asarray(scores, dtype=np.float64).reshape(-1))
    if hollow:
        style = {"facecolors": "none", "edgecolors": colors, "linewidths": 2.0}
    else:
        style = {"facecolors": colors, "edgecolors": "white", "linewidths": 0.6}
    artist = ax.scatter(xy[:, 0], xy[:, 1], s=size, label=f"counted ({len(xy)})", zorder=5, **style)
    artist.set_gid("wsimito-detections")
    return mappable


def _draw_candidates(
    ax: Axes, result: MitosisResult, box: tuple[float, float, float, float] | None, size: float
) -> None:
    frame = result.candidates
    rest = ~frame["counted"].to_numpy()
    xy = frame[["x", "y"]].to_numpy(dtype=np.float64)[rest]
    if box is not None:
        xy = xy[_in_box(xy, box)]
    artist = ax.scatter(
        xy[:, 0],
        xy[:, 1],
        s=size * 0.6,
        facecolors="none",
        edgecolors=_rgb(CANDIDATE_COLOR),
        linewidths=1.0,
        label=f"not counted ({len(xy)})",
        zorder=4,
    )
    artist.set_gid("wsimito-candidates")


def _score_colorbar(ax: Axes, artist: ScalarMappable, threshold: float) -> None:
    label = f"score (threshold {threshold:.2f}: red line)"
    bar = ax.figure.colorbar(artist, ax=ax, shrink=0.8, label=label)
    bar.ax.axhline(threshold, color=_rgb(MITOSIS_COLOR), lw=2)


def nice_length_um(target_um: float) -> float:
    """The longest round length (1, 2 or 5 times a power of ten, µm) not above ``target_um``.

    Parameters
    ----------
    target_um : float
        Upper bound, µm (> 0).

    Returns
    -------
    float
        A length, µm.

    Raises
    ------
    ValueError
        If ``target_um`` is not a positive, finite number.
    """
    if not (math.isfinite(target_um) and target_um > 0):
        raise ValueError(f"target_um must be a positive length in µm, got {target_um!r}")
    power = 10.0 ** math.floor(math.log10(target_um))
    best = power
    for factor in _NICE:
        if factor * power <= target_um * (1 + 1e-12):
            best = factor * power
    return best


def format_length_um(length_um: float) -> str:
    """A length as a scale-bar label.

    Parameters
    ----------
    length_um : float
        Length, µm.

    Returns
    -------
    str
        ``"500 µm"``, or from 1000 µm on ``"2 mm"``.
    """
    if length_um >= 1000:
        return f"{length_um / 1000:g} mm"
    return f"{length_um:g} µm"


def _scale_bar(ax: Axes, mpp: float, width_px: float) -> None:
    length_um = nice_length_um(width_px * mpp * _BAR_FRACTION)
    bar = AnchoredSizeBar(
        ax.transData,
        length_um / mpp,
        format_length_um(length_um),
        loc="lower right",
        pad=0.4,
        sep=4,
        color="black",
        frameon=True,
        size_vertical=0,
        fontproperties={"size": 8},
    )
    bar.patch.set_alpha(0.75)
    bar.set_gid("wsimito-scalebar")
    ax.add_artist(bar)


def _finish(
    ax: Axes, title: str, mpp: float, width_px: float, scale_bar: bool, legend: bool
) -> None:
    ax.set_aspect("equal")
    ax.set_xlabel("x (level-0 px)")
    ax.set_ylabel("y (level-0 px)")
    ax.set_title(title, fontsize=10)
    if scale_bar:
        _scale_bar(ax, mpp, width_px)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=7, framealpha=0.8)


def _density_grid(
    result: MitosisResult, cell_um: float, min_tissue: float
) -> tuple[np.ndarray, float]:
    """Counted figures per mm² of analysed tissue in square cells; NaN where too little tissue.

    Returns the ``(rows, cols)`` map and the cell side in level-0 px.
    """
    mpp = result.slide_mpp
    side = cell_um / mpp
    width, height = result.slide_dimensions
    cols, rows = max(1, math.ceil(width / side)), max(1, math.ceil(height / side))
    xs, ys = np.arange(cols + 1) * side, np.arange(rows + 1) * side
    xy = result.counted().xy
    counts = np.zeros((rows, cols), dtype=np.float64)
    if len(xy):
        j = np.clip(np.floor(xy[:, 0] / side).astype(np.int64), 0, cols - 1)
        i = np.clip(np.floor(xy[:, 1] / side).astype(np.int64), 0, rows - 1)
        np.add.at(counts, (i, j), 1.0)
    gx, gy = np.meshgrid(xs[:-1], ys[:-1])
    boxes = np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, side), np.full(gx.size, side)], 1)
    area_px = _tissue_area_px(result.analysed_tissue.geometry, boxes).reshape(rows, cols)
    density = np.full((rows, cols), np.nan)
    ok = (area_px >= min_tissue * side * side) & (area_px > 0)
    density[ok] = counts[ok] / (area_px[ok] * mpp * mpp * 1e-6)
    return density, side


def _tissue_area_px(geometry: shapely.Geometry, boxes: np.ndarray) -> np.ndarray:
    """Exact area (level-0 px²) of ``geometry`` inside each ``(x, y, w, h)`` box.

    The area that counts (as for ``result.tissue_area_mm2``); only boxes that
    cross the outline need a polygon intersection.
    """
    area = np.zeros(len(boxes), dtype=np.float64)
    if geometry is None or shapely.is_empty(geometry):
        return area
    x, y, w, h = boxes.T
    cells = shapely.box(x, y, x + w, y + h)
    shapely.prepare(geometry)
    inside = shapely.contains(geometry, cells)
    area[inside] = w[inside] * h[inside]
    edge = ~inside & shapely.intersects(geometry, cells)
    area[edge] = shapely.area(shapely.intersection(geometry, cells[edge]))
    return area


def _box(box: Sequence[float]) -> tuple[float, float, float, float]:
    values = np.asarray(box, dtype=np.float64).reshape(-1)
    if values.shape != (4,) or not np.isfinite(values).all():
        raise ValueError(f"box must be four finite numbers (x, y, w, h) in level-0 px, got {box!r}")
    x, y, w, h = (float(v) for v in values)
    if w <= 0 or h <= 0:
        raise ValueError(f"box width and height must be positive px, got {w:g} x {h:g}")
    return x, y, w, h


def _in_box(xy: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    x, y, w, h = box
    return (xy[:, 0] >= x) & (xy[:, 0] < x + w) & (xy[:, 1] >= y) & (xy[:, 1] < y + h)


__all__ = [
    "MAX_REGION_PIXELS",
    "detection_gallery",
    "format_length_um",
    "nice_length_um",
    "plot_density",
    "plot_region",
    "plot_slide",
    "plot_tissue",
]
