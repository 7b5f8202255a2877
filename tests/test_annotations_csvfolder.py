"""A folder of images with one CSV each (the MitDet layout): read, write, round-trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import wsimito
from wsimito.io.annotations import AnnotationError, Annotations
from wsimito.io.csvfolder import read_csv_folder, write_csv_folder


def _image(folder, name, size=(320, 240)):
    Image.new("RGB", size, (230, 200, 220)).save(folder / name)


def test_round_trip_keeps_slides_points_labels_and_scores(tmp_path):
    rng = np.random.default_rng(4)
    parts = []
    for name, size in (("roi-1.png", (320, 240)), ("roi-2.jpg", (200, 300))):
        _image(tmp_path, name, size)
        xy = rng.uniform(0, 1, (12, 2)) * size
        labels = rng.choice(["Mitotic figure", "Non-mitotic figure"], 12).tolist()
        parts.append(
            Annotations.from_points(xy, slide=name, labels=labels, scores=rng.uniform(0, 1, 12))
        )
    _image(tmp_path, "roi-3.png")  # an image in which nobody found anything
    parts.append(Annotations.from_points(np.zeros((0, 2)), slide="roi-3.png", scores=[]))
    original = Annotations.concat(parts)
    written = write_csv_folder(tmp_path, original)
    assert [p.name for p in written] == ["roi-1.csv", "roi-2.csv", "roi-3.csv"]
    back = wsimito.read_annotations(tmp_path)
    columns = ["slide", "x", "y", "label", "kind", "score"]
    pd.testing.assert_frame_equal(back.to_frame()[columns], original.to_frame()[columns])
    assert back.slides == ["roi-1.png", "roi-2.jpg", "roi-3.png"]
    info = back.slide_info.set_index("slide")
    assert tuple(info.loc["roi-2.jpg", ["width", "height"]]) == (200, 300)  # from the image
    assert back.points("roi-3.png").shape == (0, 2)


def test_headerless_mitdet_csv_and_header_in_any_order(tmp_path):
    _image(tmp_path, "a.tif")
    _image(tmp_path, "b.png")
    (tmp_path / "a.csv").write_text("10,20\n30.5,40.25\n\n")
    (tmp_path / "b.png.csv").write_text("score,Y,X,class\n0.9,5,6,imposter\n0.4,7,8,\n")
    ann = read_csv_folder(tmp_path)
    frame = ann.to_frame()
    assert frame[["slide", "x", "y", "label"]].values.tolist() == [
        ["a.tif", 10.0, 20.0, "Mitotic figure"],  # rows without a class are mitotic figures
        ["a.tif", 30.5, 40.25, "Mitotic figure"],
        ["b.png", 6.0, 5.0, "imposter"],
        ["b.png", 8.0, 7.0, "Mitotic figure"],
    ]
    assert frame["kind"].tolist() == ["mitosis", "mitosis", "lookalike", "mitosis"]
    assert ann.scores("b.png").tolist() == [0.9, 0.4]
    assert frame["id"].tolist() == ["a.csv:1", "a.csv:2", "b.png.csv:2", "b.png.csv:3"]


def test_single_csv_file_and_missing_images(tmp_path):
    (tmp_path / "lonely.csv").write_text("x,y\n1,2\n")
    with pytest.raises(AnnotationError, match="lonely.csv: no image of the same name"):
        wsimito.read_annotations(tmp_path)
    ann = wsimito.read_annotations(tmp_path / "lonely.csv", require_images=False)
    assert ann.slides == ["lonely"] and ann.points("lonely").tolist() == [[1.0, 2.0]]
    _image(tmp_path, "lonely.png")
    assert wsimito.read_annotations(tmp_path / "lonely.csv").slides == ["lonely.png"]


def test_bad_rows_and_cells_outside_the_image_name_the_line(tmp_path):
    _image(tmp_path, "c.png", (100, 50))
    (tmp_path / "c.csv").write_text("x,y\n1,2\nseven,3\n")
    with pytest.raises(AnnotationError, match=r"c.csv: line 3 \('seven,3'\) needs numbers"):
        read_csv_folder(tmp_path)
    (tmp_path / "c.csv").write_text("x,y\n1,2\n90,300\n")
    with pytest.raises(
        AnnotationError, match=r"entry c.csv:3 on slide 'c.png' lies at \(90, 300\)"
    ):
        wsimito.read_annotations(tmp_path)
    assert len(wsimito.read_annotations(tmp_path, outside="drop")) == 1
    _image(tmp_path, "c.jpg")
    with pytest.raises(AnnotationError, match="share the name 'c'"):
        read_csv_folder(tmp_path)
