"""SQLite databases in the layout of SlideRunner, which the MIDOG tools read too.

The tables and columns are SlideRunner's (``SlideRunner/dataAccess/database.py``,
database version 3): ``Slides``, ``Classes``, ``Persons``, ``Annotations``,
``Annotations_coordinates``, ``Annotations_label`` and ``Log``. Each mitotic
figure is a spot annotation (type 1) with one coordinate (level-0 px, rounded
to whole pixels as SlideRunner stores them; SlideRunner does not crop to
OpenSlide bounds, so no offset applies), agreed class "Mitotic figure" and
one label by a person named after the detector.

SlideRunner fills ``guid``, ``lastModified`` and class colours through
triggers when it edits a file. This module writes triggers of the same names
and effect built on SQLite's own functions, so the database stays editable
both in SlideRunner and with plain ``sqlite3``.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..classes import MITOSIS_CLASS, MITOSIS_COLOR
from .atomic import atomic_path
from .geojson import point_ids

if TYPE_CHECKING:
    from ..result import MitosisResult

SPOT = 1
"""SlideRunner's annotation type of a spot (a single point)."""
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


def write_sliderunner(result: MitosisResult, path: str | os.PathLike) -> Path:
    """Write the mitotic figures of ``result`` to a new SlideRunner database at ``path``.

    An existing file at ``path`` is replaced (atomically: it is never seen half
    written). Each figure's ``guid`` is its GeoJSON feature id and its
    ``description`` holds its score. Returns the path written.
    """
    detections = result.detections
    xy = np.column_stack([detections["x"].to_numpy(), detections["y"].to_numpy()])
    scores = detections["score"].tolist()
    guids = point_ids(result.slide_name, xy)
    coords = np.rint(xy).astype(np.int64).tolist()
    directory = os.path.dirname(os.path.realpath(result.slide_path)) if result.slide_path else ""
    width, height = result.slide_dimensions
    now = time.time()
    with atomic_path(path) as tmp:
        db = sqlite3.connect(tmp)
        try:
            for statement in _TABLES:
                db.execute(statement)
            db.execute(
                "INSERT INTO Slides (uid, filename, width, height, directory, uuid, EXACTUSER) "
                "VALUES (1, ?, ?, ?, ?, '', 0)",
                (result.slide_name, width, height, directory),
            )
            db.execute(
                "INSERT INTO Classes (uid, name, color) VALUES (1, ?, ?)",
                (MITOSIS_CLASS, "#{:02x}{:02x}{:02x}".format(*MITOSIS_COLOR)),
            )
            db.execute(
                "INSERT INTO Persons (uid, name, isExactUser) VALUES (1, ?, 0)",
                (f"wsimito/{result.detector_name}",),
            )
            uids = range(1, len(guids) + 1)
            db.executemany(
                "INSERT INTO Annotations (uid, slide, guid, lastModified, deleted, type, agreedClass, "
                "description) VALUES (?, 1, ?, ?, 0, ?, 1, ?)",
                [
                    (uid, guid, now, SPOT, f"score={score:.6f}")
                    for uid, guid, score in zip(uids, guids, scores, strict=True)
                ],
            )
            db.executemany(
                "INSERT INTO Annotations_coordinates (coordinateX, coordinateY, coordinateZ, slide, "
                "annoId, orderIdx) VALUES (?, ?, 0, 1, ?, 1)",
                [(x, y, uid) for uid, (x, y) in zip(uids, coords, strict=True)],
            )
            db.executemany(
                "INSERT INTO Annotations_label (person, class, exact_id, annoId) "
                "VALUES (1, 1, NULL, ?)",
                [(uid,) for uid in uids],
            )
            for statement in _triggers():
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.commit()
        finally:
            db.close()
    return Path(path)
