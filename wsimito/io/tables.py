"""CSV tables: detections with level-0 and micrometre coordinates, and summary rows.

Every text cell that a spreadsheet would read as a formula (starting with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return) is written with a
leading apostrophe, so a slide called ``=HYPERLINK(...)`` stays text. Numbers
are written with ``repr`` (exact round trip); NaN and ``None`` become empty cells.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """Make a value safe for a CSV cell.

    Parameters
    ----------
    value : object
        A number, text, ``None`` or anything with a ``str``.

    Returns
    -------
    object
        Formula-like text with a leading ``'``; floats as their ``repr``; NaN
        and ``None`` as ``""``; bools and integers unchanged.

    Examples
    --------
    >>> from wsimito.io.tables import safe_cell
    >>> safe_cell("=HYPERLINK(1)"), safe_cell(float("nan")), safe_cell(0.1)
    ("'=HYPERLINK(1)", '', '0.1')
    """
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return repr(float(value)) if math.isfinite(value) else ""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def write_rows(
    path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]], columns: Sequence[str]
) -> Path:
    """Write rows as CSV, atomically; cells go through :func:`safe_cell`.

    Parameters
    ----------
    path : str or os.PathLike
        Output file, replaced atomically.
    rows : iterable of mapping
        One mapping of column name to value per row; missing keys stay empty.
    columns : sequence of str
        The header, in order.

    Returns
    -------
    Path
        The path written.
    """
    with atomic_write(path, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([safe_cell(c) for c in columns])
        for row in rows:
            writer.writerow([safe_cell(row.get(c)) for c in columns])
    return Path(path)


def write_points(
    path: str | os.PathLike[str],
    points: np.ndarray,
    scores: np.ndarray,
    *,
    mpp: float,
    ids: Sequence[str],
    columns: Mapping[str, Sequence[Any]] | None = None,
) -> Path:
    """Write detections as CSV: ``id, x, y`` (level-0 px), ``x_um, y_um``, ``score``.

    Parameters
    ----------
    path : str or os.PathLike
        Output file, replaced atomically.
    points : numpy.ndarray
        ``(N, 2)`` level-0 px.
    scores : numpy.ndarray
        ``(N,)`` scores in [0, 1].
    mpp : float
        Level-0 resolution, µm/px: ``x_um = x * mpp`` is µm from the slide's
        top-left corner.
    ids : sequence of str
        One id per point (e.g. the GeoJSON feature ids).
    columns : mapping, optional
        Extra columns, one value per point, appended in order.

    Returns
    -------
    Path
        The path written.
    """
    xy = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    extra = dict(columns or {})
    names = ["id", "x", "y", "x_um", "y_um", "score", *extra]
    rows = (
        {
            "id": uid,
            "x": x,
            "y": y,
            "x_um": x * mpp,
            "y_um": y * mpp,
            "score": score,
            **{name: values[k] for name, values in extra.items()},
        }
        for k, (uid, (x, y), score) in enumerate(
            zip(ids, xy.tolist(), np.asarray(scores, dtype=np.float64).tolist(), strict=True)
        )
    )
    return write_rows(path, rows, names)


__all__ = ["safe_cell", "write_points", "write_rows"]
