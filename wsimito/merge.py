"""Merging detections across tiles: core ownership, then a radius check across tiles.

A :class:`~wsimito.tiling.TileGrid`'s cores partition the slide, so keeping a
detection only in the tile whose core holds it counts every object once, even
where tiles overlap. A detector may still place one object in two cores when
it lies on a core border and each tile sees it slightly differently;
:func:`merge_across_tiles` removes such pairs (points of *different* tiles
closer than a radius), keeping the higher score. All coordinates are level-0 px.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def owned(points: np.ndarray, core: np.ndarray) -> np.ndarray:
    """Tell which level-0 points lie in their core ``(x0, y0, x1, y1)`` (half-open).

    Parameters
    ----------
    points : numpy.ndarray
        ``(K, 2)`` level-0 px.
    core : numpy.ndarray
        ``(4,)`` one core for all points, or ``(4, K)`` one core per point, level-0 px.

    Returns
    -------
    numpy.ndarray
        ``(K,)`` bool.
    """
    x0, y0, x1, y1 = core
    x, y = points[:, 0], points[:, 1]
    return np.asarray((x >= x0) & (x < x1) & (y >= y0) & (y < y1))


def merge_across_tiles(
    points: np.ndarray, scores: np.ndarray, tiles: np.ndarray, radius_px: float
) -> np.ndarray:
    """Pick the points to keep after the cross-tile duplicate check.

    Parameters
    ----------
    points : numpy.ndarray
        ``(N, 2)`` level-0 px.
    scores : numpy.ndarray
        ``(N,)`` scores; the higher one of a pair is kept.
    tiles : numpy.ndarray
        ``(N,)`` the tile each point came from; points of one tile never suppress
        each other (the detector already separated them).
    radius_px : float
        Level-0 px; points of different tiles closer than this are duplicates.

    Returns
    -------
    numpy.ndarray
        Sorted int indices into ``points``. Ties are broken by position, so
        the result does not depend on the order of the input.

    Examples
    --------
    Two tiles saw the same figure 2 px apart; the third point is another one:

    >>> import numpy as np
    >>> from wsimito.merge import merge_across_tiles
    >>> points = np.array([[100.0, 100.0], [102.0, 100.0], [300.0, 50.0]])
    >>> merge_across_tiles(points, np.array([0.7, 0.9, 0.8]), np.array([0, 1, 1]), 12.0)
    array([1, 2])
    """
    if len(points) < 2 or radius_px <= 0:
        return np.arange(len(points))
    pairs = cKDTree(points).query_pairs(radius_px, output_type="ndarray")
    pairs = pairs[tiles[pairs[:, 0]] != tiles[pairs[:, 1]]]
    if len(pairs) == 0:
        return np.arange(len(points))
    neighbours: dict[int, list[int]] = {}
    for a, b in pairs.tolist():
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    removed = np.zeros(len(points), dtype=bool)
    for i in np.lexsort((points[:, 1], points[:, 0], -scores)).tolist():
        if removed[i]:
            continue
        for j in neighbours.get(i, ()):
            removed[j] = True
    return np.flatnonzero(~removed)
