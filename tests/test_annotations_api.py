"""The Annotations object: construction, iteration, selection, counts, kinds and formats."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import wsimito
from wsimito.io.annotations import AnnotationError, Annotations, class_kind, detect_format


def _two_slides() -> Annotations:
    a = Annotations.from_points(
        [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]],
        slide="a.svs",
        labels=["Mitotic figure", "Imposter", "Tumor"],
        mpp=0.25,
        tumor_type="human melanoma",
    )
    b = Annotations.from_points(
        np.zeros((0, 2)), slide="b.svs", mpp=0.5, tumor_type="canine lung cancer"
    )
    return Annotations.concat([a, b])


def test_lazy_public_names():
    assert wsimito.Annotations is Annotations
    assert wsimito.read_annotations.__module__ == "wsimito.io.annotations"
    assert issubclass(wsimito.AnnotationError, wsimito.WsimitoError)


def test_iteration_gives_every_slide_with_points_and_labels():
    ann = _two_slides()
    items = list(ann)
    assert [s for s, _, _ in items] == ["a.svs", "b.svs"]
    assert items[0][1].tolist() == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    assert items[0][2].tolist() == ["Mitotic figure", "Imposter", "Tumor"]
    assert items[1][1].shape == (0, 2) and items[1][2].shape == (0,)
    assert len(ann) == 3 and ann.mpp("b.svs") == 0.5
    assert "3 cells (1 mitosis, 1 lookalike, 1 other) on 2 slides" in repr(ann)


def test_counts_and_selection_keep_slides_without_cells():
    ann = _two_slides()
    counts = ann.counts("tumor_type")
    assert counts.loc["canine lung cancer"].tolist() == [1, 0, 0, 0, 0]
    assert counts.loc["human melanoma", ["slides", "mitosis", "cells"]].tolist() == [1, 1, 3]
    mitoses = ann.select(kind="mitosis")
    assert mitoses.slides == ["a.svs", "b.svs"] and len(mitoses) == 1
    assert ann.counts("label")["cells"].to_dict() == {
        "Imposter": 1,
        "Mitotic figure": 1,
        "Tumor": 1,
    }
    frame = ann.to_frame()
    assert list(frame.columns[:5]) == ["slide", "x", "y", "label", "kind"]
    assert list(frame.columns[5:]) == ["mpp", "tumor_type"]


def test_kinds_follow_the_class_name_sets():
    assert class_kind("  MITOTIC   figure ") == "mitosis"
    assert class_kind("not mitotic figure") == "lookalike"
    ann = _two_slides().with_classes(mitosis_names=["tumor"], lookalike_names=[])
    assert ann.to_frame()["kind"].tolist() == ["other", "other", "mitosis"]


def test_bad_construction_is_refused():
    with pytest.raises(AnnotationError, match="3 labels for 2 points"):
        Annotations.from_points([[0, 0], [1, 1]], slide="s", labels=["a", "b", "c"])
    with pytest.raises(AnnotationError, match="slide 'a.svs' is listed twice"):
        Annotations.concat([_two_slides(), _two_slides()])
    cells = pd.DataFrame({"slide": ["s"], "x": [np.nan], "y": [1.0], "label": ["m"], "id": [4]})
    with pytest.raises(AnnotationError, match="entry 4 on slide 's' has x = nan"):
        Annotations(cells, source="f.csv")
    with pytest.raises(AnnotationError, match="kind must be among"):
        _two_slides().points("a.svs", kind="mitotic")


def test_file_mpp_wins_over_the_fill_in(tmp_path, sample):
    path = tmp_path / "pts.geojson"
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [],
                "wsimito": {"slide": "w.svs", "mpp": 0.5, "slide_dimensions": [10, 10]},
            }
        )
    )
    assert wsimito.read_annotations(path, mpp=0.25).mpp("w.svs") == 0.5
    midog = wsimito.read_annotations(sample("annotations/MIDOGpp.json"), mpp={"001.tiff": 0.23})
    assert midog.mpp("001.tiff") == 0.23 and midog.mpp("002.tiff") is None


def test_format_detection(tmp_path, sample):
    assert detect_format(sample("annotations/MIDOGpp.json")) == "midog"
    assert detect_format(tmp_path) == "csv"
    geo = tmp_path / "a.json"
    geo.write_text('[{"type": "Feature"}]')
    assert detect_format(geo) == "qupath"
    unknown = tmp_path / "a.bin"
    unknown.write_bytes(b"\x00\x01")
    with pytest.raises(AnnotationError, match="cannot tell its annotation format"):
        detect_format(unknown)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        wsimito.read_annotations(tmp_path / "nope.json")
