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

The writers take data (points, scores, geometries); :class:`wsimito.MitosisResult`
assembles its collection from them (:meth:`~wsimito.MitosisResult.to_geo_dict`).
"""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any, Literal

import numpy as np
import shapely

from ..classes import ID_NAMESPACE, MITOSIS_CLASS, MITOSIS_COLOR
from .atomic import atomic_write

# Decimals (level-0 px) a point is rounded to before it is hashed into its id.
ID_DECIMALS = 1


def point_ids(slide_name: str, points: np.ndarray) -> list[str]:
    """Give level-0 points on a slide stable UUID strings.

    The id is uuid5 of the slide name and the coordinates rounded to 0.1 px,
    so the same point on the same slide gets the same id in every run; two
    points that round alike get ``#2``, ``#3``... appended before hashing.

    Parameters
    ----------
    slide_name : str
        The slide's name, hashed with each point.
    points : numpy.ndarray
        ``(N, 2)`` points ``(x, y)``, level-0 px.

    Returns
    -------
    list of str
        One UUID string per point.

    Examples
    --------
    >>> from wsimito.io.geojson import point_ids
    >>> a = point_ids("slide.svs", [[10.0, 20.0], [10.0, 20.0]])
    >>> a[0] == point_ids("slide.svs", [[10.04, 19.96]])[0], a[0] == a[1]
    (True, False)
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


def point_features(
    points: np.ndarray,
    scores: np.ndarray | None = None,
    *,
    slide_name: str,
    class_name: str = MITOSIS_CLASS,
    color: tuple[int, int, int] = MITOSIS_COLOR,
    offset: tuple[float, float] = (0.0, 0.0),
    object_type: Literal["detection", "annotation"] = "detection",
    ids: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Make one QuPath ``Point`` feature per point.

    Parameters
    ----------
    points : numpy.ndarray
        ``(N, 2)`` level-0 px.
    scores : numpy.ndarray, optional
        ``(N,)`` scores, written as the ``score`` measurement.
    slide_name : str
        Hashed into the stable ids (see :func:`point_ids`).
    class_name : str
        QuPath classification name.
    color : tuple of (int, int, int)
        Classification colour, RGB 0-255.
    offset : tuple of float
        Subtracted from every coordinate: OpenSlide's ``bounds-x/y``, level-0 px.
    object_type : {"detection", "annotation"}
        QuPath object type.
    ids : list of str, optional
        Feature ids; :func:`point_ids` of the points by default.

    Returns
    -------
    list of dict
        GeoJSON features.
    """
    xy = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    ids = point_ids(slide_name, xy) if ids is None else ids
    values = [None] * len(xy) if scores is None else np.asarray(scores, dtype=np.float64).tolist()
    bx, by = offset
    features = []
    for uid, (x, y), score in zip(ids, xy.tolist(), values, strict=True):
        properties: dict[str, Any] = {
            "objectType": object_type,
            "classification": _classification(class_name, color),
        }
        if score is not None:
            properties["measurements"] = {"score": score}
        features.append(
            {
                "type": "Feature",
                "id": uid,
                "geometry": {"type": "Point", "coordinates": [x - bx, y - by]},
                "properties": properties,
            }
        )
    return features


def feature_collection(
    features: list[dict[str, Any]], metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Gather features into a GeoJSON ``FeatureCollection``.

    Parameters
    ----------
    features : list of dict
        GeoJSON features (:func:`point_features`, :func:`polygon_feature`).
    metadata : dict, optional
        Goes in a top-level ``"wsimito"`` member (QuPath ignores it), made
        JSON-safe (NaN becomes ``null``).

    Returns
    -------
    dict of str to object
        The collection.
    """
    collection: dict[str, Any] = {"type": "FeatureCollection", "features": list(features)}
    if metadata is not None:
        collection["wsimito"] = jsonable(metadata)
    return collection


def write_geojson(path: str | os.PathLike[str], collection: dict[str, Any]) -> Path:
    """Write a GeoJSON object atomically (UTF-8, no NaN).

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; it appears complete or not at all.
    collection : dict
        The GeoJSON object (:func:`feature_collection`).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ValueError
        The object holds NaN or infinite numbers (JSON has none).
    """
    with atomic_write(path) as fh:
        json.dump(collection, fh, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Path(path)


def _classification(name: str, color: tuple[int, int, int]) -> dict[str, Any]:
    return {"name": name, "color": list(color)}


def polygon_feature(
    geometry: shapely.Geometry,
    *,
    name: str,
    class_name: str,
    color: tuple[int, int, int],
    key: str,
    measurements: dict[str, float],
    offset: tuple[float, float] = (0.0, 0.0),
) -> dict[str, Any]:
    """Make a QuPath annotation of a (Multi)Polygon; invalid geometry is repaired.

    Parameters
    ----------
    geometry : shapely.Geometry
        The (Multi)Polygon, level-0 px.
    name : str
        The annotation's name, shown in QuPath.
    class_name : str
        QuPath classification name.
    color : tuple of (int, int, int)
        Classification colour, RGB 0-255.
    key : str
        Hashed into a stable UUID id.
    measurements : dict of str to float
        A flat name -> number map, written as floats; non-finite ones are left out.
    offset : tuple of (float, float)
        Subtracted from every coordinate: OpenSlide's ``bounds-x/y``, level-0 px.

    Returns
    -------
    dict of str to object
        The GeoJSON feature.
    """
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
            "classification": _classification(class_name, color),
            "measurements": {k: float(v) for k, v in measurements.items() if math.isfinite(v)},
        },
    }


def _polygons_only(geometry: shapely.Geometry) -> shapely.Geometry:
    parts = [
        p for p in shapely.get_parts(geometry) if isinstance(p, shapely.Polygon) and p.area > 0
    ]
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)


def jsonable(value: Any) -> Any:
    """Turn a value into JSON types.

    Parameters
    ----------
    value : object
        Nested dicts, lists, tuples, numpy arrays and scalars.

    Returns
    -------
    object
        The same structure in JSON types: numpy scalars unwrapped, non-finite
        floats as ``None``, anything else as its string.

    Examples
    --------
    >>> import numpy as np
    >>> from wsimito.io.geojson import jsonable
    >>> jsonable({"mpp": np.float32(0.25), "density": float("nan"), "dims": (10, 20)})
    {'mpp': 0.25, 'density': None, 'dims': [10, 20]}
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)
