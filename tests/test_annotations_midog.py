"""MIDOG++ COCO JSON and split table: counts, centres, the spelling join, and bad data.

Expectations come straight from the files with ``json`` and ``csv``, not through
wsimito's reader.
"""

from __future__ import annotations

import collections
import csv
import json
from pathlib import Path

import numpy as np
import pytest

import wsimito
from wsimito.io.annotations import AnnotationError
from wsimito.io.midog import read_split_table

JSON = "annotations/MIDOGpp.json"
SPLIT = "annotations/MIDOGpp-split.csv"


@pytest.fixture(scope="module")
def raw(sample):
    with open(sample(JSON)) as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def midog(sample):
    return wsimito.read_annotations(sample(JSON), split=sample(SPLIT))


def test_figures_and_lookalikes_per_tumour_equal_the_files(midog, raw):
    images = {image["id"]: image for image in raw["images"]}
    names = {c["id"]: c["name"] for c in raw["categories"]}
    expected = collections.Counter(
        (images[a["image_id"]]["tumor_type"], names[a["category_id"]]) for a in raw["annotations"]
    )
    annotated = {images[a["image_id"]]["file_name"] for a in raw["annotations"]}
    frame = midog.to_frame()
    assert len(annotated) == 503 == len(midog.slides)
    assert sorted(midog.slides) == sorted(annotated)
    assert (frame["kind"] == "mitosis").sum() == 11_937
    assert (frame["kind"] == "lookalike").sum() == 14_349
    got = collections.Counter(zip(frame["tumor_type"], frame["label"], strict=True))
    assert got == expected
    counts = midog.counts("tumor_type")
    for tumour in counts.index:
        assert counts.loc[tumour, "mitosis"] == expected[(tumour, "mitotic figure")]
        assert counts.loc[tumour, "lookalike"] == expected[(tumour, "not mitotic figure")]


def test_cell_is_the_box_midpoint_and_keeps_its_entry_id(midog, raw):
    frame = midog.to_frame().set_index("id")
    files = {image["id"]: image["file_name"] for image in raw["images"]}
    for entry in raw["annotations"][::997]:
        x1, y1, x2, y2 = entry["bbox"]
        row = frame.loc[entry["id"]]
        assert (row["x"], row["y"]) == ((x1 + x2) / 2, (y1 + y2) / 2)
        assert row["slide"] == files[entry["image_id"]]
    sizes = midog.slide_info.set_index("slide")
    first = raw["images"][0]
    assert tuple(sizes.loc[first["file_name"], ["width", "height"]]) == (
        first["width"],
        first["height"],
    )


def test_every_annotated_image_gets_a_split_and_a_canonical_scanner(midog, sample):
    with open(sample(SPLIT), newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter=";"))
    info = midog.slide_info
    assert info["split"].notna().all() and info["scanner"].notna().all()
    assert info["origin"].notna().all() and info["species"].notna().all()
    assert (info["split"] == "train").sum() == 392 == sum(r["Dataset"] == "train" for r in rows)
    assert (info["split"] == "test").sum() == 111 == sum(r["Dataset"] == "test" for r in rows)
    # the table spells one scanner two ways and one tumour otherwise than the JSON
    assert {r["Scanner"] for r in rows} >= {"Hamammatsu XR", "Hamamatsu XR"}
    assert set(info["scanner"]) == {"3D Histech", "Aperio CS2", "Hamamatsu S360", "Hamamatsu XR"}
    assert "canine lymphoma" in {r["Tumor"] for r in rows}
    assert "canine lymphoma" not in set(info["tumor_type"])
    lymphoma = {int(r["Slide"]) for r in rows if r["Tumor"] == "canine lymphoma"}
    joined = info[info["slide"].map(lambda s: int(s.split(".")[0])).isin(lymphoma)]
    assert set(joined["tumor_type"]) == {"canine lymphosarcoma"} and len(joined) == len(lymphoma)
    by_number = {int(r["Slide"]): r for r in rows}
    for _, row in info.iloc[::50].iterrows():
        source = by_number[int(row["slide"].split(".")[0])]
        assert row["split"] == source["Dataset"] and row["origin"] == source["Origin"]


def test_selection_by_split_kind_and_domain(midog):
    test = midog.select(split="test")
    assert len(test.slides) == 111 and set(test.slide_info["split"]) == {"test"}
    melanoma = midog.select(split="train", kind="mitosis", tumor_type="human melanoma")
    frame = melanoma.to_frame()
    assert set(frame["kind"]) == {"mitosis"} and set(frame["tumor_type"]) == {"human melanoma"}
    assert len(melanoma.slides) == 38  # slides without figures would stay too
    scanners = midog.select(scanner=["Aperio CS2", "Hamamatsu S360"]).counts("scanner")
    assert list(scanners.index) == ["Aperio CS2", "Hamamatsu S360"]
    assert scanners["slides"].sum() == 150


def test_unannotated_images_are_left_out_unless_asked(sample, raw):
    all_images = wsimito.read_annotations(sample(JSON), keep_empty=True)
    assert len(all_images.slides) == len(raw["images"]) == 553
    empty = set(all_images.slides) - set(all_images.to_frame()["slide"])
    assert len(empty) == 50
    assert all(all_images.points(s).shape == (0, 2) for s in list(empty)[:3])


def test_cells_beyond_the_image_edge_are_an_error_naming_the_entry(sample):
    path = sample(JSON)
    # two MIDOG++ cells lie 2 and 5 px beyond their image's edge: within the default margin
    with pytest.raises(AnnotationError, match=r"MIDOGpp.json: entry 15363 on slide '305.tiff'"):
        wsimito.read_annotations(path, margin_px=0)
    dropped = wsimito.read_annotations(path, margin_px=0, outside="drop")
    assert len(dropped) == 26_286 - 2


def _write(tmp_path, data, name="bad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _tiny(**changes):
    data = {
        "images": [{"id": 1, "file_name": "001.tiff", "width": 100, "height": 80}],
        "categories": [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "hard negative"}],
        "annotations": [
            {"id": 7, "image_id": 1, "category_id": 1, "bbox": [10, 10, 60, 60]},
            {"id": 8, "image_id": 1, "category_id": 2, "bbox": [0, 0, 50, 50]},
        ],
    }
    data.update(changes)
    return data


def test_bad_json_entries_are_named(tmp_path):
    ann = _tiny()
    ann["annotations"][1]["image_id"] = 9
    with pytest.raises(AnnotationError, match="annotation 8 refers to image_id 9"):
        wsimito.read_annotations(_write(tmp_path, ann))
    ann = _tiny()
    ann["annotations"][0]["bbox"] = [10, 10, 50, 5]
    with pytest.raises(AnnotationError, match="annotation 7 .* bbox='xywh'"):
        wsimito.read_annotations(_write(tmp_path, ann))
    ann = _tiny()
    ann["annotations"][0]["bbox"] = [300, 10, 350, 60]
    with pytest.raises(AnnotationError, match=r"bad.json: entry 7 on slide '001.tiff' lies at"):
        wsimito.read_annotations(_write(tmp_path, ann))


def test_strict_classes_and_overridden_names(tmp_path):
    data = _tiny(categories=[{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "granulocyte"}])
    path = _write(tmp_path, data)
    loose = wsimito.read_annotations(path)
    assert loose.to_frame()["kind"].tolist() == ["mitosis", "other"]
    with pytest.raises(AnnotationError, match="entry 8 .* class 'granulocyte'"):
        wsimito.read_annotations(path, strict=True)
    custom = wsimito.read_annotations(path, lookalike_names=["Granulocyte"], strict=True)
    assert custom.to_frame()["kind"].tolist() == ["mitosis", "lookalike"]


def test_coco_xywh_boxes(tmp_path):
    data = _tiny()
    data["annotations"][0]["bbox"] = [10, 20, 50, 40]
    got = wsimito.read_annotations(_write(tmp_path, data), bbox="xywh").to_frame()
    assert (got["x"][0], got["y"][0]) == (35.0, 40.0)


def test_split_tables_that_do_not_fit_are_refused(midog, sample, tmp_path):
    lines = Path(sample(SPLIT)).read_text().splitlines()
    missing = tmp_path / "missing.csv"
    missing.write_text("\n".join([lines[0], *lines[2:]]) + "\n")  # slide 1 removed
    with pytest.raises(AnnotationError, match=r"no row in .*missing.csv.*'001.tiff'"):
        wsimito.read_annotations(sample(JSON), split=missing)
    clash = tmp_path / "clash.csv"
    clash.write_text(
        "\n".join([lines[0], lines[1].replace("human breast cancer", "human melanoma"), *lines[2:]])
    )
    with pytest.raises(AnnotationError, match="'001.tiff' is 'human breast cancer'"):
        wsimito.read_annotations(sample(JSON), split=clash)
    table = read_split_table(sample(SPLIT))
    assert len(table) == 503 and table["slide_number"].is_unique


def test_empty_selections_and_typos_are_errors(midog):
    with pytest.raises(AnnotationError, match=r"tumor_type \['human lymphoma'\] occurs nowhere"):
        midog.select(tumor_type="human lymphoma")
    with pytest.raises(AnnotationError, match="leaves no slide"):
        midog.select(split="test", tumor_type="human breast cancer", scanner="3D Histech")
    with pytest.raises(AnnotationError, match="label .*Mitotic figure.* occurs nowhere"):
        midog.select(label="Mitotic figure")  # the file says "mitotic figure"
    with pytest.raises(AnnotationError, match="cannot select by 'stain'"):
        midog.select(stain="H&E")
    assert np.array_equal(
        midog.points("001.tiff", kind="mitosis"),
        midog.select(slide="001.tiff", kind="mitosis").points("001.tiff"),
    )
