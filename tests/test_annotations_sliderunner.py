"""SlideRunner databases: wsimito reads what SlideRunner's own data-access package writes,
and that package reads what wsimito writes, to the same points and consensus labels."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import time

import numpy as np
import pandas as pd
import pytest
from SlideRunner_dataAccess.annotations import AnnotationType
from SlideRunner_dataAccess.database import Database

import wsimito
from wsimito.io.annotations import AnnotationError, Annotations
from wsimito.io.sliderunner import read_sliderunner, write_sliderunner


@pytest.fixture(scope="module")
def sliderunner_made(tmp_path_factory):
    """A database made with SlideRunner's package: two slides, two classes, spots,
    a rectangle, a circle, a polygon, a deleted spot and a disputed one."""
    path = tmp_path_factory.mktemp("sr") / "made-by-sliderunner.sqlite"
    rng = np.random.default_rng(3)
    db = Database().create(str(path))
    mitosis = db.insertClass("Mitotic figure")
    lookalike = db.insertClass("Non-mitotic figure")
    first, second = db.insertAnnotator("expert 1"), db.insertAnnotator("expert 2")
    for name, size in (("case-a.svs", (4000, 3000)), ("case-b.tiff", (2500, 2000))):
        slide = db.insertNewSlide(name, f"/data/{name}")
        db.setSlideDimensions(slide, size)
        for x, y, cls in zip(
            rng.integers(0, size[0], 25).tolist(),
            rng.integers(0, size[1], 25).tolist(),
            rng.choice([mitosis, lookalike], 25).tolist(),
            strict=True,
        ):
            db.insertNewSpotAnnotation(x, y, slide, cls, first)
    slide = 1
    db.insertNewAreaAnnotation(100, 200, 160, 240, slide, mitosis, first)  # rectangle
    db.insertNewAreaAnnotation(300, 300, 340, 360, slide, lookalike, first, typeId=5)  # circle
    db.insertNewPolygonAnnotation([[10, 10], [90, 10], [90, 70]], slide, lookalike, first)
    deleted = db.insertNewSpotAnnotation(55, 66, slide, mitosis, first)
    db.removeAnnotation(deleted)
    disputed = db.insertNewSpotAnnotation(777, 888, slide, mitosis, first)
    db.addAnnotationLabel(lookalike, second, disputed)  # disagreement: no consensus
    settled = db.insertNewSpotAnnotation(999, 111, slide, mitosis, first)
    db.addAnnotationLabel(lookalike, second, settled)
    db.setAgreedClass(lookalike, settled)  # consensus after discussion
    db.commit()
    db.db.close()
    return path


def _as_sliderunner_reads_it(path, tmp_path) -> pd.DataFrame:
    """Cells as SlideRunner's package loads them: centre and agreed class per annotation."""
    copy = tmp_path / f"copy-{hashlib.md5(str(path).encode()).hexdigest()[:6]}.sqlite"
    shutil.copy(path, copy)  # the package amends tables on open
    db = Database().open(str(copy))
    classes = {uid: name for name, uid, *_ in db.getAllClasses()}
    rows = []
    for slide_uid, filename in db.execute("SELECT uid, filename FROM Slides").fetchall():
        db.loadIntoMemory(slide_uid)
        for uid, anno in db.annotations.items():
            if anno.deleted or anno.annotationType in (AnnotationType.POLYGON,):
                continue
            if anno.annotationType in (AnnotationType.SPOT, AnnotationType.SPECIAL_SPOT):
                x, y = anno.x1, anno.y1
            else:
                centre = anno.getCenter()
                x, y = centre.x, centre.y
            label = classes.get(anno.agreedClass, "")
            rows.append((filename, float(x), float(y), label, uid))
    db.db.close()
    return pd.DataFrame(rows, columns=["slide", "x", "y", "label", "id"])


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["slide", "id"]).reset_index(drop=True)


def test_database_written_by_sliderunner_reads_to_its_points_and_consensus(
    sliderunner_made, tmp_path
):
    before = sliderunner_made.read_bytes()
    ann = wsimito.read_annotations(sliderunner_made)
    assert sliderunner_made.read_bytes() == before  # opened read-only
    ours = _sorted(ann.to_frame()[["slide", "x", "y", "label", "id"]])
    theirs = _sorted(_as_sliderunner_reads_it(sliderunner_made, tmp_path))
    pd.testing.assert_frame_equal(ours, theirs, check_dtype=False)
    assert len(ours) == 50 + 2 + 2  # spots, rectangle, circle, disputed, settled; not deleted
    assert 66.0 not in set(ours["y"])
    rect = ours[ours["id"] == 51].iloc[0]
    assert (rect["x"], rect["y"], rect["label"]) == (130.0, 220.0, "Mitotic figure")
    by_id = ours.set_index("id")
    assert {51, 52, 55, 56} <= set(by_id.index) and not {53, 54} & set(by_id.index)
    assert by_id.loc[55, "label"] == ""  # disputed: no consensus
    assert by_id.loc[56, "label"] == "Non-mitotic figure"  # settled
    info = ann.slide_info.set_index("slide")
    assert tuple(info.loc["case-a.svs", ["width", "height"]]) == (4000, 3000)
    assert len(ann.regions) == 1 and ann.regions.geometry.iloc[0].area == 80 * 60 / 2


def test_database_written_by_wsimito_reads_back_identically_in_both(tmp_path):
    rng = np.random.default_rng(8)
    parts = []
    for name in ("001.tiff", "002.tiff"):
        labels = rng.choice(["mitotic figure", "not mitotic figure", "Tumor"], 30).tolist()
        parts.append(
            Annotations.from_points(
                rng.uniform(0, 1000, (30, 2)).round(),
                slide=name,
                labels=labels,
                scores=rng.uniform(0, 1, 30).round(6),
                width=1000,
                height=1000,
            )
        )
    original = Annotations.concat(parts)
    path = write_sliderunner(tmp_path / "written.sqlite", original)
    back = read_sliderunner(path)
    columns = ["slide", "x", "y", "label", "kind", "score"]
    pd.testing.assert_frame_equal(
        back.to_frame()[columns], original.to_frame()[columns], check_dtype=False
    )
    assert back.slide_info[["slide", "width", "height"]].values.tolist() == [
        ["001.tiff", 1000, 1000],
        ["002.tiff", 1000, 1000],
    ]
    theirs = _as_sliderunner_reads_it(path, tmp_path)
    ours = back.to_frame()
    assert theirs[["slide", "x", "y", "label"]].values.tolist() == (
        ours[["slide", "x", "y", "label"]].values.tolist()
    )
    with sqlite3.connect(path) as db:
        colours = dict(db.execute("SELECT name, color FROM Classes"))
    assert colours["mitotic figure"] == "#dc143c"  # wsimito's mitosis colour


def test_points_of_one_slide_with_the_rounding_sliderunner_applies(tmp_path):
    xy = np.array([[10.4, 20.6], [300.5, 40.49]])
    path = write_sliderunner(
        tmp_path / "one.sqlite", xy, scores=[0.91, 0.5], slide_name="s.svs", slide_size=(400, 80)
    )
    back = read_sliderunner(path, slide="s.svs")
    assert back.points("s.svs").tolist() == np.rint(xy).tolist()
    assert back.scores("s.svs").tolist() == [0.91, 0.5]
    assert back.labels == ["Mitotic figure"]
    with pytest.raises(AnnotationError, match="no slide 'other.svs'"):
        read_sliderunner(path, slide="other.svs")
    with pytest.raises(AnnotationError, match="slide_name"):
        write_sliderunner(tmp_path / "x.sqlite", xy)


def _edit(path, statement):
    with sqlite3.connect(path) as db:
        db.create_function("pycurrent_time", 0, time.time)  # SlideRunner's triggers call it
        db.execute(statement)


def test_broken_references_are_named(sliderunner_made, tmp_path):
    broken = tmp_path / "broken.sqlite"
    shutil.copy(sliderunner_made, broken)
    _edit(broken, "UPDATE Annotations SET agreedClass = 9 WHERE uid = 3")
    with pytest.raises(AnnotationError, match="annotation uid 3 has agreed class 9"):
        read_sliderunner(broken)
    shutil.copy(sliderunner_made, broken)
    _edit(broken, "UPDATE Annotations SET slide = 5 WHERE uid = 4")
    with pytest.raises(AnnotationError, match="annotation uid 4 refers to slide uid 5"):
        read_sliderunner(broken)
    shutil.copy(sliderunner_made, broken)
    _edit(broken, "DELETE FROM Annotations_coordinates WHERE annoId = 6")
    with pytest.raises(AnnotationError, match="annotation uid 6 .* has 0 coordinates"):
        read_sliderunner(broken)
    plain = tmp_path / "plain.sqlite"
    with sqlite3.connect(plain) as db:
        db.execute("CREATE TABLE t (a)")
    with pytest.raises(AnnotationError, match="not a SlideRunner database"):
        wsimito.read_annotations(plain)


def test_result_export_opens_in_sliderunners_package_with_its_detections(tmp_path):
    from test_result import random_result

    result = random_result(n=60, bounds_offset=(500.0, 700.0))
    path = result.to_sliderunner(tmp_path / "result.sqlite")
    theirs = _as_sliderunner_reads_it(path, tmp_path)
    expected = np.rint(result.detections[["x", "y"]].to_numpy())
    assert sorted(map(tuple, theirs[["x", "y"]].to_numpy())) == sorted(map(tuple, expected))
    assert set(theirs["label"]) == {"Mitotic figure"} and len(theirs) == result.count
    ours = read_sliderunner(path)
    assert np.allclose(
        np.sort(ours.scores(result.slide_name)), np.sort(result.detections["score"]), atol=1e-6
    )
