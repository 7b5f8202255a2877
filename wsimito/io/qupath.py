"""Read QuPath point annotations and wsimito's own GeoJSON output.

QuPath exports a ``FeatureCollection`` (or, from some versions and scripts,
a bare list of features). A pathologist's clicks with the points tool
become ``Point`` or ``MultiPoint`` features; the class is
``properties.classification.name`` (older exports: ``properties.classification``
as a plain string). Every point is one cell. Polygons and lines (regions of
interest, tissue outlines, wsimito's hotspot) are not cells: they go to
:attr:`Annotations.regions`.

QuPath's coordinates are level-0 px of the slide as QuPath shows it, which
for OpenSlide formats with bounds (e.g. MIRAX) is cropped to the bounds:
pass ``bounds_offset=(bounds_x, bounds_y)`` to get level-0 px of the file.
wsimito's GeoJSON records its offset in the top-level ``wsimito`` member,
and the reader adds it back on its own; that member also gives the slide's
name, size and mpp, and each detection's score is ``measurements.score``.
The writer is :mod:`wsimito.io.geojson`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..classes import TISSUE_CLASS
from .annotation_set import AnnotationError, Annotations

if TYPE_CHECKING:
    from ..slide import Slide
    from ..tissue import Tissue

_POINT_TYPES = ("Point", "MultiPoint")
_REGION_TYPES = ("Polygon", "MultiPolygon", "LineString", "MultiLineString")


def load_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file (UTF-8, with or without a byte-order mark).

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    object
        The parsed JSON value.

    Raises
    ------
    AnnotationError
        When the file is not valid JSON, naming the line and column.
    """
    try:
        with open(path, encoding="utf-8-sig") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None


def read_qupath(
    path: str | os.PathLike,
    *,
    slide: str | None = None,
    bounds_offset: tuple[float, float] | None = None,
    mitosis_names: Collection[str] | None = None,
    lookalike_names: Collection[str] | None = None,
) -> Annotations:
    """Read point annotations from a QuPath GeoJSON export or a wsimito GeoJSON result.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.geojson`` / ``.json`` file, or a folder of them (one slide each,
        e.g. what ``wsimito count`` wrote).
    slide : str, optional
        The slide's name. Default: the ``wsimito`` member's slide, else the
        file name without ``.geojson``/``.json`` (QuPath names exports after
        the image, e.g. ``case.svs.geojson``).
    bounds_offset : (float, float), optional
        Level-0 px added to every coordinate (OpenSlide ``bounds-x``,
        ``bounds-y`` of the slide QuPath showed). Default: the ``wsimito``
        member's ``bounds_offset``, else ``(0, 0)``.
    mitosis_names, lookalike_names : collection of str, optional
        See :func:`wsimito.io.annotations.class_kind`.

    Returns
    -------
    Annotations
        One cell per point with ``label`` = the class name (``""`` for
        unclassified objects), ``id`` = the feature id, and ``score`` where the
        features have ``measurements.score``; polygons in ``regions``.

    Raises
    ------
    AnnotationError
        When the JSON is not GeoJSON, or a point has no two numeric coordinates.
    """
    path = Path(path)
    if path.is_dir():
        return _read_folder(
            path, bounds_offset, mitosis_names=mitosis_names, lookalike_names=lookalike_names
        )
    data = load_json(path)
    source = str(path)
    meta = data.get("wsimito") if isinstance(data, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    features = _features(data, source)
    name = slide or meta.get("slide") or _name_from_file(path)
    offset = bounds_offset if bounds_offset is not None else meta.get("bounds_offset") or (0, 0)
    try:
        bx, by = (float(v) for v in offset)
    except (TypeError, ValueError):
        raise AnnotationError(f"{source}: bounds_offset {offset!r} is not two numbers") from None
    rows: list[tuple] = []
    regions: list[dict] = []
    for n, feature in enumerate(features):
        if not isinstance(feature, dict):
            raise AnnotationError(f"{source}: feature {n} is not a JSON object")
        props = feature.get("properties") or {}
        geometry = feature.get("geometry") or {}
        kind = geometry.get("type")
        label = _class_name(props.get("classification"))
        ident = feature.get("id", props.get("id", n))
        if kind in _POINT_TYPES:
            score = _score(props.get("measurements"))
            coords = geometry.get("coordinates")
            points = [coords] if kind == "Point" else coords
            for k, point in enumerate(points or []):
                x, y = _xy(point, source, ident)
                entry = ident if kind == "Point" else f"{ident}[{k}]"
                rows.append((name, x + bx, y + by, label, score, entry))
        elif kind in _REGION_TYPES:
            regions.append(
                {
                    "slide": name,
                    "label": label,
                    "name": str(props.get("name", "")),
                    "geometry": _shifted(geometry, (bx, by)),
                }
            )
    cells = pd.DataFrame(rows, columns=["slide", "x", "y", "label", "score", "id"])
    if cells["score"].isna().all():
        cells = cells.drop(columns="score")
    info: dict[str, Any] = {"slide": [name]}
    dims = meta.get("slide_dimensions")
    if isinstance(dims, list) and len(dims) == 2:
        info["width"], info["height"] = [dims[0]], [dims[1]]
    if meta.get("mpp") is not None:
        info["mpp"] = [float(meta["mpp"])]
    region_frame = None
    if regions:
        import geopandas

        region_frame = geopandas.GeoDataFrame(regions, geometry="geometry")
    return Annotations(
        cells,
        pd.DataFrame(info),
        regions=region_frame,
        source=source,
        mitosis_names=mitosis_names,
        lookalike_names=lookalike_names,
    )


def _read_folder(
    folder: Path, bounds_offset: tuple[float, float] | None, **names: Any
) -> Annotations:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".geojson", ".json"))
    if not files:
        raise AnnotationError(f"{folder}: no .geojson or .json files in this folder")
    parts = [read_qupath(p, bounds_offset=bounds_offset, **names) for p in files]
    return Annotations.concat(parts)


def _features(data: Any, source: str) -> list:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        if data.get("type") == "FeatureCollection" and isinstance(data.get("features"), list):
            return data["features"]
        if data.get("type") == "Feature":
            return [data]
    raise AnnotationError(
        f"{source}: not GeoJSON (expected a FeatureCollection, a Feature or a list of features)"
    )


def _name_from_file(path: Path) -> str:
    name = path.name
    for suffix in (".geojson", ".json"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _class_name(classification: Any) -> str:
    if classification is None:
        return ""
    if isinstance(classification, str):
        return classification
    if isinstance(classification, dict):
        if classification.get("name") is not None:
            return str(classification["name"])
        names = classification.get("names")
        if isinstance(names, list):
            return ": ".join(str(n) for n in names)
    return str(classification)


def _score(measurements: Any) -> float:
    if isinstance(measurements, dict):
        value = measurements.get("score")
    elif isinstance(measurements, list):  # QuPath 0.2: [{"name": ..., "value": ...}]
        value = next((m.get("value") for m in measurements if m.get("name") == "score"), None)
    else:
        value = None
    try:
        return float(value) if value is not None else np.nan
    except (TypeError, ValueError):
        return np.nan


def _xy(point: Any, source: str, ident: Any) -> tuple[float, float]:
    try:
        x, y = float(point[0]), float(point[1])
    except (TypeError, ValueError, IndexError):
        raise AnnotationError(
            f"{source}: feature {ident} has point {point!r}; expected [x, y] numbers"
        ) from None
    return x, y


def _shifted(geometry: dict, offset: tuple[float, float]) -> Any:
    import shapely
    import shapely.geometry

    shape = shapely.geometry.shape(geometry)
    if offset == (0.0, 0.0):
        return shape
    return shapely.transform(shape, lambda c: c + np.asarray(offset))


def tissue_from_geojson(path: str | os.PathLike, slide: Slide) -> Tissue:
    """The analysis region drawn in a GeoJSON file (e.g. annotations exported from QuPath).

    Polygons classified "Tissue" are used when the file has any (a wsimito
    result's outline, edited or not); otherwise every polygon of the file.
    Coordinates are read as QuPath writes them: level-0 px minus the slide's
    bounds offset (a wsimito file's own recorded offset wins).

    Parameters
    ----------
    path : str or os.PathLike
        The GeoJSON file.
    slide : Slide
        The slide the polygons were drawn on.

    Returns
    -------
    Tissue
        Exact polygons, level-0 px; the mask marks every 8 µm pixel they touch.

    Raises
    ------
    ValueError
        When the file holds no polygon.
    """
    from ..tissue import Tissue

    regions = read_qupath(path, bounds_offset=recorded_offset(path, slide)).regions
    if not len(regions):
        raise ValueError(
            f"{path} holds no polygon to count in; in QuPath draw the region as an annotation "
            "and export it with File > Export objects as GeoJSON"
        )
    chosen = regions[regions["label"] == TISSUE_CLASS]
    geometry = (chosen if len(chosen) else regions).geometry
    return Tissue.from_polygons(list(geometry), slide)


def recorded_offset(path: str | os.PathLike, slide: Slide) -> tuple[float, float] | None:
    """The offset to add to a file's coordinates: ``None`` when the file records wsimito's
    own (a ``"wsimito"`` member), else the slide's OpenSlide bounds (QuPath's crop), level-0 px."""
    raw = load_json(path)
    if isinstance(raw, dict) and isinstance(raw.get("wsimito"), dict):
        return None
    return (float(slide.bounds[0]), float(slide.bounds[1]))
