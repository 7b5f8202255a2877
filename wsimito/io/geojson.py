"""GeoJSON that QuPath imports as-is: detections with class and score, tissue and hotspot.

QuPath's rules, which :func:`feature_collection` follows:

- a ``FeatureCollection`` of ``Feature`` objects, each with ``type``,
  ``geometry``, ``properties`` and an ``id`` that is a UUID string;
- ``properties.objectType`` is ``"detection"`` or ``"annotation"`` and sits
  inside ``properties``;
- ``properties.classification`` is ``{"name": str, "color": [r, g, b]}`` with
  both keys;
- ``properties.measurements`` is a flat ``{name: number}`` map;
- coordinates are level-0 px minus OpenSlide's ``bounds-x``/``bounds-y``
  (QuPath shows slides cropped to their bounds); polygons are valid with
  closed rings.

Run metadata (detector, its training data and intended use, threshold, mpp)
travel in a top-level ``"wsimito"`` member, which QuPath ignores.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from ..classes import (
    HOTSPOT_CLASS,
    HOTSPOT_COLOR,
    ID_NAMESPACE,
    MITOSIS_CLASS,
    MITOSIS_COLOR,
    TISSUE_CLASS,
    TISSUE_COLOR,
)
from .atomic import atomic_write

if TYPE_CHECKING:
    from ..result import MitosisResult

# Decimals (level-0 px) a point is rounded to before it is hashed into its id.
ID_DECIMALS = 1


def point_ids(slide_name: str, points: np.ndarray) -> list[str]:
    """Stable UUID strings for level-0 points ``(N, 2)`` px on the slide ``slide_name``.

    The id is uuid5 of the slide name and the coordinates rounded to 0.1 px,
    so the same point on the same slide gets the same id in every run; two
    points that round alike get ``#2``, ``#3``... appended before hashing.
    """
    seen: dict[str, int] = {}
    ids = []
    for x, y in np.round(np.asarray(points, dtype=np.float64).reshape(-1, 2), ID_DECIMALS).tolist():
        key = f"{slide_name}:{x:.{ID_DECIMALS}f}:{y:.{ID_DECIMALS}f}"
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:
            key = f"{key}#{seen[key]}"
        ids.append(str(uuid.uuid5(ID_NAMESPACE, key)))
    return ids


def feature_collection(
    result: MitosisResult, *, include_tissue: bool = True, include_hotspot: bool = True
) -> dict:
    """The QuPath FeatureCollection of ``result`` as a JSON-ready dict.

    One ``Point`` detection per mitotic figure (``score >= threshold``), in the
    order of ``result.detections``; then, if asked and not empty, the tissue
    outline and the hotspot as annotations with their count and area.
    """
    bx, by = result.bounds_offset
    detections = result.detections
    xy = np.column_stack([detections["x"].to_numpy(), detections["y"].to_numpy()])
    ids = point_ids(result.slide_name, xy)
    features: list[dict] = [
        {
            "type": "Feature",
            "id": uid,
            "geometry": {"type": "Point", "coordinates": [x - bx, y - by]},
            "properties": {
                "objectType": "detection",
                "classification": _classification(MITOSIS_CLASS, MITOSIS_COLOR),
                "measurements": {"score": score},
            },
        }
        for uid, (x, y), score in zip(ids, xy.tolist(), detections["score"].tolist(), strict=True)
    ]
    if include_tissue:
        features.extend(_tissue_features(result, (bx, by)))
    if include_hotspot:
        features.extend(_hotspot_features(result, (bx, by)))
    return {
        "type": "FeatureCollection",
        "features": features,
        "wsimito": _run_metadata(result),
    }


def write_geojson(
    result: MitosisResult,
    path: str | os.PathLike,
    *,
    include_tissue: bool = True,
    include_hotspot: bool = True,
) -> Path:
    """Write :func:`feature_collection` to ``path`` atomically (UTF-8); returns the path."""
    obj = feature_collection(result, include_tissue=include_tissue, include_hotspot=include_hotspot)
    with atomic_write(path) as fh:
        json.dump(obj, fh, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Path(path)


def _classification(name: str, color: tuple[int, int, int]) -> dict:
    return {"name": name, "color": list(color)}


def _tissue_features(result: MitosisResult, offset: tuple[float, float]) -> list[dict]:
    geometry = shapely.union_all(np.asarray(result.tissue.polygons.geometry, dtype=object))
    if shapely.is_empty(geometry):
        return []
    shapely.prepare(geometry)
    xy = result.points[result.scores >= result.threshold]
    inside = int(np.count_nonzero(shapely.covers(geometry, shapely.points(xy)))) if len(xy) else 0
    area = result.tissue_area_mm2
    return [
        _annotation(
            geometry,
            offset,
            name="Tissue",
            cls=TISSUE_CLASS,
            color=TISSUE_COLOR,
            key=f"{result.slide_name}:tissue",
            measurements={
                "count": inside,
                "area_mm2": area,
                "density_per_mm2": inside / area if area > 0 else 0.0,
            },
        )
    ]


def _hotspot_features(result: MitosisResult, offset: tuple[float, float]) -> list[dict]:
    spot = result.hotspot
    if shapely.is_empty(spot.polygon):
        return []
    measurements = {
        "count": spot.count,
        "area_mm2": spot.area_mm2,
        "tissue_fraction": spot.tissue_fraction,
        "density_per_mm2": spot.density_per_mm2,
    }
    if spot.count_per_10hpf is not None:
        measurements["count_per_10hpf"] = spot.count_per_10hpf
    what = "whole tissue" if spot.whole_tissue else f"{spot.area_mm2:g} mm²"
    return [
        _annotation(
            spot.polygon,
            offset,
            name=f"Hotspot: {spot.count} mitotic figures in {what}",
            cls=HOTSPOT_CLASS,
            color=HOTSPOT_COLOR,
            key=f"{result.slide_name}:hotspot:{shapely.to_wkt(spot.polygon, rounding_precision=1)}",
            measurements=measurements,
        )
    ]


def _annotation(
    geometry: shapely.Geometry,
    offset: tuple[float, float],
    *,
    name: str,
    cls: str,
    color: tuple[int, int, int],
    key: str,
    measurements: dict[str, float],
) -> dict:
    shifted = shapely.transform(geometry, lambda c: c - np.asarray(offset))
    if not shifted.is_valid:
        shifted = _polygons_only(shapely.make_valid(shifted))
    return {
        "type": "Feature",
        "id": str(uuid.uuid5(ID_NAMESPACE, key)),
        "geometry": shapely.geometry.mapping(shifted),
        "properties": {
            "objectType": "annotation",
            "name": name,
            "classification": _classification(cls, color),
            "measurements": {k: float(v) for k, v in measurements.items()},
        },
    }


def _polygons_only(geometry: shapely.Geometry) -> shapely.Geometry:
    parts = [
        p for p in shapely.get_parts(geometry) if isinstance(p, shapely.Polygon) and p.area > 0
    ]
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)


def _run_metadata(result: MitosisResult) -> dict:
    return {
        "slide": result.slide_name,
        "slide_dimensions": list(result.slide_dimensions),
        "mpp": result.slide_mpp,
        "bounds_offset": list(result.bounds_offset),
        "coordinates": "level-0 px minus bounds_offset",
        "detector": result.detector_name,
        "detector_metadata": _jsonable(result.detector_metadata),
        "detector_mpp": result.detector_mpp,
        "threshold": result.threshold,
        "count": result.count,
    }


def _jsonable(value: Any) -> Any:
    """``value`` made of JSON types: numpy scalars unwrapped, non-finite floats as None,
    anything else as its string."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)
