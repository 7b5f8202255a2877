"""SQLite databases in the layout of SlideRunner, the format of the MIDOG++ databases.

The tables and columns are SlideRunner's (``SlideRunner/dataAccess/database.py``,
database version 3): ``Slides``, ``Classes``, ``Persons``, ``Annotations``,
``Annotations_coordinates``, ``Annotations_label`` and ``Log``.

Reading (:func:`read_sliderunner`): every annotation that is not deleted
becomes one cell on the slide named by ``Slides.filename``; its class is the
consensus, ``Annotations.agreedClass``, by name from ``Classes``. A spot
(type 1) or special spot (type 4) sits at its coordinate; a rectangle
(type 2) or circle (type 5), stored as two corners, at their midpoint.
Polygons (type 3) are regions, not cells; image-level labels (type 6) are
skipped. Coordinates are level-0 px (SlideRunner does not crop to OpenSlide
bounds, so no offset applies).

Writing (:func:`write_sliderunner`): each cell is a spot annotation with one
coordinate (rounded to whole pixels, as SlideRunner stores them), its class
as agreed class and one label by one person (e.g. the detector). A score
goes into ``description`` as ``score=0.123456`` and is read back from there.

SlideRunner fills ``guid``, ``lastModified`` and class colours through
triggers when it edits a file. This module writes triggers of the same names
and effect built on SQLite's own functions, so the database stays editable
both in SlideRunner and with plain ``sqlite3``.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..classes import MITOSIS_CLASS, hex_color
from .annotation_set import AnnotationError, Annotations, class_color, class_kind
from .atomic import atomic_path
from .geojson import point_ids

SPOT = 1
"""SlideRunner's annotation type of a spot (a single point)."""
AREA, POLYGON, SPECIAL_SPOT, CIRCLE, IMAGE_LABEL = 2, 3, 4, 5, 6
"""SlideRunner's other annotation types: rectangle, polygon, special spot, circle, image label."""
SCHEMA_VERSION = 3
"""SlideRunner database version written to ``PRAGMA user_version``."""

_TABLES = (
    """CREATE TABLE `Slides` (`uid` INTEGER PRIMARY KEY AUTOINCREMENT UNIQUE, `filename` TEXT,
       `width` INTEGER, `height` INTEGER, `directory` TEXT, `uuid` TEXT, `exactImageID` TEXT,
       `EXACTUSER` INTEGER DEFAULT 0)""",
    """CREATE TABLE `Classes` (`uid` INTEGER PRIMARY KEY AUTOINCREMENT UNIQUE, `name` TEXT,
       `color` TEXT)""",
    """CREATE TABLE `Persons` (`uid` INTEGER PRIMARY KEY AUTOINCREMENT UNIQUE, `name` TEXT,
       `isExactUser` INTEGER DEFAULT 0)""",
    """CREATE TABLE `Annotations` (`uid` INTEGER PRIMARY KEY AUTOINCREMENT UNIQUE, `slide` INTEGER,
       `guid` TEXT, `lastModified` REAL, `deleted` INTEGER DEFAULT 0, `type` INTEGER,
       `agreedClass` INTEGER, `description` TEXT)""",
    """CREATE TABLE `Annotations_coordinates` (`uid` INTEGER PRIMARY KEY AUTOINCREMENT UNIQUE,
       `coordinateX` INTEGER, `coordinateY` INTEGER, `coordinateZ` INTEGER DEFAULT 0,
       `slide` INTEGER, `annoId` INTEGER, `orderIdx` INTEGER)""",
    """CREATE TABLE `Annotations_label` (`uid` INTEGER PRIMARY KEY AUTOINCREMENT UNIQUE,
       `person` INTEGER, `class` INTEGER, `exact_id` INTEGER, `annoId` INTEGER)""",
    """CREATE TABLE `Log` (`uid` INTEGER PRIMARY KEY AUTOINCREMENT, `dateTime` FLOAT,
       `labelId` INTEGER)""",
)

# SQLite expressions standing in for SlideRunner's Python functions in its triggers.
_NOW = "((julianday('now') - 2440587.5) * 86400.0)"  # Unix time, s
_UUID4 = (
    "(lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || "
    "substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (random() & 3), 1) || "
    "substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6))))"
)
_COLOR = (
    "printf('#%02x%02x%02x', 30 + ((random() & 1023) % 225), 30 + ((random() & 1023) % 225), "
    "30 + ((random() & 1023) % 225))"
)


def _triggers() -> list[str]:
    out = []
    for event in ("UPDATE", "INSERT"):
        for name, table, key in (
            ("fromLabel", "Annotations_label", "annoId"),
            ("fromCoords", "Annotations_coordinates", "annoId"),
            ("", "Annotations", "uid"),
        ):
            out.append(
                f"CREATE TRIGGER updateAnnotation_{name}{event} AFTER {event} ON {table} "
                f"BEGIN UPDATE Annotations SET lastModified = {_NOW} WHERE uid = new.{key}; END"
            )
    out.append(
        "CREATE TRIGGER updateAnnotation_ins AFTER INSERT ON Annotations BEGIN "
        f"UPDATE Annotations SET guid = {_UUID4} WHERE uid = new.uid AND guid IS NULL; END"
    )
    out.append(
        "CREATE TRIGGER setRandomcolor AFTER INSERT ON Classes BEGIN "
        f"UPDATE Classes SET color = {_COLOR} WHERE uid = new.uid AND color IS NULL; END"
    )
    return out


_SCORE = re.compile(r"score=([-+0-9.eE]+|nan|inf)")


def write_sliderunner(
    path: str | os.PathLike,
    annotations: Annotations | Any,
    *,
    labels: str | Sequence[str] | None = None,
    scores: Any = None,
    slide_name: str | None = None,
    slide_size: tuple[int, int] | None = None,
    slide_directory: str = "",
    person: str = "wsimito",
) -> Path:
    """Write cells to a new SlideRunner database at ``path``, one spot annotation each.

    An existing file at ``path`` is replaced atomically (it is never seen half
    written). Each spot's ``guid`` is the id wsimito's GeoJSON gives the same
    point (:func:`wsimito.io.geojson.point_ids`), and its ``description``
    holds its score (``score=0.123456``) where there is one.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.sqlite`` file to write.
    annotations : Annotations or array_like
        An :class:`~wsimito.io.annotations.Annotations` (any number of slides,
        classes, with or without scores), or an ``(N, 2)`` array of level-0 px
        points on one slide.
    labels : str or sequence of str, optional
        For an array: one class name for all points or one per point
        (default ``"Mitotic figure"``).
    scores : array_like, optional
        For an array: ``(N,)`` scores.
    slide_name : str, optional
        For an array: the slide's file name (required).
    slide_size : (int, int), optional
        For an array: level-0 ``(width, height)`` px.
    slide_directory : str
        Folder of the slide(s), stored in ``Slides.directory``.
    person : str
        Name of the annotator that every label is given by.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    AnnotationError
        When an array comes without ``slide_name``, or array-only arguments
        come with an :class:`Annotations`.
    """
    if isinstance(annotations, Annotations):
        if any(v is not None for v in (labels, scores, slide_name, slide_size)):
            raise AnnotationError(
                "labels, scores, slide_name and slide_size are for an array of points; an "
                "Annotations carries its own"
            )
        ann = annotations
        declared: list[str] = []
    else:
        if slide_name is None:
            raise AnnotationError("write_sliderunner needs slide_name= for an array of points")
        width, height = slide_size if slide_size is not None else (None, None)
        label = MITOSIS_CLASS if labels is None else labels
        # one class name for all points: declare it even when there are no points
        declared = [label] if isinstance(label, str) else []
        ann = Annotations.from_points(
            annotations,
            slide=slide_name,
            labels=label,
            scores=scores,
            width=width,
            height=height,
        )
    frame = ann.to_frame()
    info = ann.slide_info
    class_ids: dict[str, int] = {}
    classes = []
    pairs = [(d, class_kind(d, ann.mitosis_names, ann.lookalike_names)) for d in declared]
    pairs += list(frame[["label", "kind"]].drop_duplicates().itertuples(index=False))
    for label, kind in pairs:
        if label and label not in class_ids:
            class_ids[label] = len(class_ids) + 1
            classes.append((class_ids[label], label, hex_color(class_color(label, kind))))
    has_scores = "score" in frame
    now = time.time()
    with atomic_path(path) as tmp:
        db = sqlite3.connect(tmp)
        try:
            for statement in _TABLES:
                db.execute(statement)
            db.executemany(
                "INSERT INTO Slides (uid, filename, width, height, directory, uuid, EXACTUSER) "
                "VALUES (?, ?, ?, ?, ?, '', 0)",
                [
                    (
                        uid,
                        slide,
                        _int_or_none(info, k, "width"),
                        _int_or_none(info, k, "height"),
                        slide_directory,
                    )
                    for uid, (k, slide) in enumerate(info["slide"].items(), start=1)
                ],
            )
            db.executemany("INSERT INTO Classes (uid, name, color) VALUES (?, ?, ?)", classes)
            db.execute("INSERT INTO Persons (uid, name, isExactUser) VALUES (1, ?, 0)", (person,))
            slide_uid = {slide: uid for uid, slide in enumerate(info["slide"], start=1)}
            annotations_rows, coordinate_rows, label_rows = [], [], []
            uid = 0
            groups = frame.groupby("slide", sort=False).indices
            for slide in info["slide"]:
                rows = frame.iloc[groups.get(slide, [])]
                xy = rows[["x", "y"]].to_numpy(dtype=np.float64)
                guids = point_ids(slide, xy)
                coords = np.rint(xy).astype(np.int64).tolist()
                row_scores = rows["score"].tolist() if has_scores else [np.nan] * len(rows)
                for guid, (x, y), label, score in zip(
                    guids, coords, rows["label"].tolist(), row_scores, strict=True
                ):
                    uid += 1
                    cls = class_ids.get(label, 0)
                    text = "" if np.isnan(score) else f"score={score:.6f}"
                    annotations_rows.append((uid, slide_uid[slide], guid, now, SPOT, cls, text))
                    coordinate_rows.append((x, y, slide_uid[slide], uid))
                    if cls:
                        label_rows.append((cls, uid))
            db.executemany(
                "INSERT INTO Annotations (uid, slide, guid, lastModified, deleted, type, "
                "agreedClass, description) VALUES (?, ?, ?, ?, 0, ?, ?, ?)",
                annotations_rows,
            )
            db.executemany(
                "INSERT INTO Annotations_coordinates (coordinateX, coordinateY, coordinateZ, "
                "slide, annoId, orderIdx) VALUES (?, ?, 0, ?, ?, 1)",
                coordinate_rows,
            )
            db.executemany(
                "INSERT INTO Annotations_label (person, class, exact_id, annoId) "
                "VALUES (1, ?, NULL, ?)",
                label_rows,
            )
            for statement in _triggers():
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.commit()
        finally:
            db.close()
    return Path(path)


def _int_or_none(info: pd.DataFrame, row: Any, column: str) -> int | None:
    if column not in info:
        return None
    value = info.at[row, column]
    return int(value) if pd.notna(value) else None


def read_sliderunner(
    path: str | os.PathLike,
    *,
    slide: str | None = None,
    mitosis_names: Collection[str] | None = None,
    lookalike_names: Collection[str] | None = None,
) -> Annotations:
    """Read the consensus annotations of a SlideRunner database (e.g. MIDOG++'s).

    The file is opened read-only and never changed.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.sqlite`` database.
    slide : str, optional
        Read only the slide with this file name.
    mitosis_names, lookalike_names : collection of str, optional
        See :func:`wsimito.io.annotations.class_kind`.

    Returns
    -------
    Annotations
        Cells with ``label`` = the agreed class's name (``""`` where there is no
        consensus class), ``id`` = the annotation's ``uid``, ``score`` where
        descriptions carry one; slides with ``width``, ``height`` (px) where
        stored; polygons in ``regions``.

    Raises
    ------
    AnnotationError
        When the file lacks SlideRunner's tables, an annotation refers to a
        slide or class the file does not have, or has no coordinates.
    FileNotFoundError
        When ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SlideRunner database {path} does not exist")
    source = str(path)
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        needed = {"Slides", "Classes", "Annotations", "Annotations_coordinates"}
        if not needed <= tables:
            raise AnnotationError(
                f"{source}: not a SlideRunner database (missing tables {sorted(needed - tables)})"
            )
        slides = db.execute(
            "SELECT uid, filename, width, height FROM Slides ORDER BY uid"
        ).fetchall()
        classes = dict(db.execute("SELECT uid, name FROM Classes"))
        annos = db.execute(
            "SELECT uid, slide, type, agreedClass, description FROM Annotations "
            "WHERE deleted IS NULL OR deleted = 0 ORDER BY uid"
        ).fetchall()
        coordinates: dict[int, list[tuple[float, float]]] = {}
        for anno, x, y in db.execute(
            "SELECT annoId, coordinateX, coordinateY FROM Annotations_coordinates "
            "ORDER BY annoId, orderIdx, uid"
        ):
            coordinates.setdefault(anno, []).append((x, y))
    except sqlite3.DatabaseError as exc:
        raise AnnotationError(f"{source}: cannot read it as SQLite ({exc})") from None
    finally:
        db.close()
    names = {uid: str(filename) for uid, filename, _, _ in slides}
    duplicated = pd.Series(list(names.values()))
    if duplicated.duplicated().any():
        raise AnnotationError(
            f"{source}: two slides share the file name {duplicated[duplicated.duplicated()].iloc[0]!r}"
        )
    if slide is not None:
        wanted = [
            uid for uid, name in names.items() if name == slide or os.path.basename(name) == slide
        ]
        if not wanted:
            raise AnnotationError(
                f"{source}: no slide {slide!r}; slides are {sorted(names.values())}"
            )
    rows, regions = [], []
    for uid, slide_uid, kind, agreed, description in annos:
        if slide_uid not in names:
            raise AnnotationError(
                f"{source}: annotation uid {uid} refers to slide uid {slide_uid}, which table "
                "Slides does not have"
            )
        if slide is not None and slide_uid not in wanted:
            continue
        if kind == IMAGE_LABEL:
            continue
        if agreed in (None, 0):
            label = ""
        elif agreed in classes:
            label = str(classes[agreed])
        else:
            raise AnnotationError(
                f"{source}: annotation uid {uid} has agreed class {agreed}, which table "
                f"Classes does not have (it has {sorted(classes)})"
            )
        points = coordinates.get(uid, [])
        needs = 2 if kind in (AREA, CIRCLE) else 1
        if len(points) < needs or any(v is None for p in points[:needs] for v in p):
            raise AnnotationError(
                f"{source}: annotation uid {uid} (type {kind}) has {len(points)} coordinates; "
                f"it needs {needs}"
            )
        if kind in (SPOT, SPECIAL_SPOT):
            x, y = points[0]
        elif kind in (AREA, CIRCLE):
            (x1, y1), (x2, y2) = points[:2]
            x, y = (x1 + x2) / 2, (y1 + y2) / 2
        elif kind == POLYGON:
            regions.append(
                {
                    "slide": names[slide_uid],
                    "label": label,
                    "name": str(uid),
                    "geometry": _polygon(points),
                }
            )
            continue
        else:
            raise AnnotationError(
                f"{source}: annotation uid {uid} has type {kind}, which SlideRunner does not define"
            )
        match = _SCORE.search(description or "")
        score = float(match.group(1)) if match else np.nan
        rows.append((names[slide_uid], float(x), float(y), label, score, uid))
    cells = pd.DataFrame(rows, columns=["slide", "x", "y", "label", "score", "id"])
    if cells["score"].isna().all():
        cells = cells.drop(columns="score")
    info = pd.DataFrame(
        [
            {"slide": name, "width": w, "height": h}
            for uid, name, w, h in slides
            if slide is None or uid in wanted
        ],
        columns=["slide", "width", "height"],
    )
    for column in ("width", "height"):
        info[column] = pd.to_numeric(info[column], errors="coerce").astype("Int64")
    region_frame = None
    if regions:
        import geopandas

        region_frame = geopandas.GeoDataFrame(regions, geometry="geometry")
    return Annotations(
        cells,
        info,
        regions=region_frame,
        source=source,
        mitosis_names=mitosis_names,
        lookalike_names=lookalike_names,
    )


def _polygon(points: list[tuple[float, float]]) -> Any:
    import shapely

    if len(points) < 3:
        return shapely.LineString(points) if len(points) == 2 else shapely.Point(points[0])
    return shapely.Polygon(points)
