"""SlideRunner / MIDOG SQLite export: SlideRunner's tables and columns, one spot per figure."""

from __future__ import annotations

import re
import sqlite3
import uuid

import numpy as np
import pytest
from test_result import make_result, random_result

# SlideRunner's database layout (SlideRunner/dataAccess/database.py): table -> column -> type.
SLIDERUNNER_SCHEMA = {
    "Slides": {
        "uid": "INTEGER",
        "filename": "TEXT",
        "width": "INTEGER",
        "height": "INTEGER",
        "directory": "TEXT",
        "uuid": "TEXT",
        "exactImageID": "TEXT",
        "EXACTUSER": "INTEGER",
    },
    "Classes": {"uid": "INTEGER", "name": "TEXT", "color": "TEXT"},
    "Persons": {"uid": "INTEGER", "name": "TEXT", "isExactUser": "INTEGER"},
    "Annotations": {
        "uid": "INTEGER",
        "guid": "TEXT",
        "deleted": "INTEGER",
        "slide": "INTEGER",
        "type": "INTEGER",
        "agreedClass": "INTEGER",
        "lastModified": "REAL",
        "description": "TEXT",
    },
    "Annotations_coordinates": {
        "uid": "INTEGER",
        "coordinateX": "INTEGER",
        "coordinateY": "INTEGER",
        "coordinateZ": "INTEGER",
        "slide": "INTEGER",
        "annoId": "INTEGER",
        "orderIdx": "INTEGER",
    },
    "Annotations_label": {
        "uid": "INTEGER",
        "exact_id": "INTEGER",
        "person": "INTEGER",
        "class": "INTEGER",
        "annoId": "INTEGER",
    },
    "Log": {"uid": "INTEGER", "dateTime": "FLOAT", "labelId": "INTEGER"},
}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    result = random_result(n=120, bounds_offset=(500.0, 700.0))
    path = result.to_sliderunner(tmp_path_factory.mktemp("sr") / "case.sqlite")
    return result, path


def test_tables_and_columns_are_sliderunners(written):
    _, path = written
    with sqlite3.connect(path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert set(SLIDERUNNER_SCHEMA) <= tables
        for table, columns in SLIDERUNNER_SCHEMA.items():
            info = {row[1]: row[2] for row in db.execute(f"PRAGMA table_info({table})")}
            assert info == columns, table
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3


def test_each_figure_is_one_spot_of_class_mitotic_figure(written):
    result, path = written
    with sqlite3.connect(path) as db:
        # the queries SlideRunner runs when it loads a slide
        (slide_uid,) = db.execute(
            "SELECT uid FROM Slides WHERE filename = ?", (result.slide_name,)
        ).fetchone()
        annos = db.execute(
            "SELECT uid, type, agreedClass, guid, deleted FROM Annotations WHERE slide == ?",
            (slide_uid,),
        ).fetchall()
        coords = db.execute(
            "SELECT coordinateX, coordinateY, coordinateZ, annoId FROM Annotations_coordinates "
            "WHERE annoId IN (SELECT uid FROM Annotations WHERE slide == ?) ORDER BY orderIdx",
            (slide_uid,),
        ).fetchall()
        labels = db.execute("SELECT annoId, person, class FROM Annotations_label").fetchall()
        classes = dict(db.execute("SELECT uid, name FROM Classes"))
        (color,) = db.execute("SELECT color FROM Classes").fetchone()
        width, height = db.execute("SELECT width, height FROM Slides").fetchone()
    assert (width, height) == result.slide_dimensions
    assert len(annos) == result.count == len(coords) == len(labels)
    assert {a[1] for a in annos} == {1} and {a[4] for a in annos} == {0}
    assert {classes[a[2]] for a in annos} == {"Mitotic figure"}
    assert {classes[lab[2]] for lab in labels} == {"Mitotic figure"}
    assert re.fullmatch(r"#[0-9a-f]{6}", color)
    by_anno = {a: (x, y, z) for x, y, z, a in coords}
    assert len(by_anno) == len(coords)  # one coordinate per spot
    got = np.array(sorted((x, y) for x, y, _ in by_anno.values()))
    expected = np.rint(result.detections[["x", "y"]].to_numpy()).astype(
        int
    )  # level-0, no bounds offset
    assert np.array_equal(got, np.array(sorted(map(tuple, expected))))
    geo_ids = {
        f["id"]
        for f in result.to_geo_dict()["features"]
        if f["properties"]["objectType"] == "detection"
    }
    assert {a[3] for a in annos} == geo_ids


def test_database_stays_editable_with_plain_sqlite(written, tmp_path):
    _, path = written
    copy = tmp_path / "copy.sqlite"
    copy.write_bytes(path.read_bytes())
    with sqlite3.connect(copy) as db:
        db.execute(
            "INSERT INTO Annotations (slide, agreedClass, type, description) VALUES (1, 1, 1, '')"
        )
        uid = db.execute("SELECT last_insert_rowid()").fetchone()[0]
        guid, modified = db.execute(
            "SELECT guid, lastModified FROM Annotations WHERE uid = ?", (uid,)
        ).fetchone()
        assert uuid.UUID(guid).version == 4
        assert modified > 1.6e9  # Unix time, s
        db.execute("INSERT INTO Classes (name) VALUES ('Non-mitotic figure')")
        (color,) = db.execute(
            "SELECT color FROM Classes WHERE name = 'Non-mitotic figure'"
        ).fetchone()
        assert re.fullmatch(r"#[0-9a-f]{6}", color)
        db.execute("UPDATE Annotations SET lastModified = 0 WHERE uid = 1")
        db.execute("INSERT INTO Annotations_label (person, class, annoId) VALUES (1, 1, 1)")
        assert (
            db.execute("SELECT lastModified FROM Annotations WHERE uid = 1").fetchone()[0] > 1.6e9
        )


def test_empty_result_writes_an_empty_database_that_replaces_the_old(tmp_path):
    path = tmp_path / "case.sqlite"
    random_result(n=30).to_sliderunner(path)
    make_result(np.empty((0, 2)), np.empty(0)).to_sliderunner(path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM Annotations").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM Slides").fetchone()[0] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.sqlite"]
