"""Hard-negative mining on real images: mitosis-free slides, outputs for review, errors.

(That mining finds the planted look-alikes a first stage confuses is tested in
tests/test_cascade_learning.py, on synthetic slides whose truth is known.)"""

from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd
import pytest

import wsimito
from wsimito.models.detectors import DarkBlobDetector
from wsimito.train.mining import HARD_NEGATIVE_CLASS, candidate_patches, mine_hard_negatives

ROI = "images/he-target-tiatoolbox.png"


@pytest.fixture(scope="module")
def roi(sample):
    return sample(ROI)


def _blobs() -> DarkBlobDetector:
    """A detector with many candidates on real tissue: every dark nucleus."""
    return DarkBlobDetector(mpp=0.5, tile_size=256, overlap=32, blob_um=6.0, device="cpu")


@pytest.fixture(scope="module")
def mined(roi):
    return mine_hard_negatives(
        _blobs(), {"roi.png": roi}, mitosis_free=True, threshold=0.3, mpp=0.25
    )


def test_every_candidate_of_a_mitosis_free_slide_is_a_negative(roi, mined):
    result = wsimito.count_mitoses(roi, _blobs(), mpp=0.25, progress=False)
    expected = result.points[(result.scores >= 0.3) & result.in_tissue]
    cells = mined.cells
    assert len(cells) == len(expected) > 10
    assert (cells["kind"] == "hard negative").all() and (cells["source"] == "detector").all()
    assert np.isinf(cells["distance_um"]).all() and (cells["score"] >= 0.3).all()
    assert np.allclose(np.sort(cells[["x", "y"]].to_numpy(), 0), np.sort(expected, 0))
    summary = mined.summary().iloc[0]
    assert summary["mitosis_free"] and summary["hard negative"] == len(cells)


def test_negatives_are_written_for_qupath(mined, tmp_path):
    path = mined.to_geojson(tmp_path / "negatives.geojson")
    data = json.loads(path.read_text())
    features = data["features"]
    assert len(features) == len(mined.negatives)
    for feature in features:
        props = feature["properties"]
        assert props["objectType"] == "annotation"
        assert props["classification"]["name"] == HARD_NEGATIVE_CLASS
        assert len(props["classification"]["color"]) == 3
        uuid.UUID(feature["id"])
    xy = np.array([f["geometry"]["coordinates"] for f in features])
    assert np.allclose(np.sort(xy, 0), np.sort(mined.negatives[["x", "y"]].to_numpy(), 0))
    assert data["wsimito"]["mined_by"] == "dark-blob-baseline"
    # read back through wsimito's own QuPath reader: the names mean look-alikes
    back = wsimito.read_annotations(path, slide="roi.png").to_frame()
    assert (back["kind"] == "lookalike").all() and len(back) == len(features)


def test_negatives_are_written_for_sliderunner(mined, tmp_path):
    path = mined.to_sliderunner(tmp_path / "negatives.sqlite")
    back = wsimito.read_annotations(path).to_frame()
    ours = mined.negatives
    assert len(back) == len(ours)
    assert (back["label"] == HARD_NEGATIVE_CLASS).all() and (back["kind"] == "lookalike").all()
    assert np.allclose(
        np.sort(back[["x", "y"]].to_numpy(), 0), np.sort(np.rint(ours[["x", "y"]]), 0)
    )
    assert np.allclose(np.sort(back["score"]), np.sort(ours["score"]), atol=1e-6)


def test_annotated_lookalikes_join_and_hits_are_sorted_out(roi):
    slide = wsimito.open_slide(roi, mpp=0.25)
    with pytest.warns(UserWarning, match="synthetic"):
        first = wsimito.count_mitoses(slide, "demo", progress=False, device="cpu")
    top = first.points[np.argsort(-first.scores)[:2]]
    annotations = pd.DataFrame(
        {
            "slide": "roi",
            "x": [top[0, 0] + 3.0, 100.0],
            "y": [top[0, 1] - 2.0, 120.0],
            "label": ["Mitotic figure", "Non-mitotic figure"],
        }
    )
    with pytest.warns(UserWarning, match="synthetic"):
        mined = mine_hard_negatives("demo", {"roi": slide}, annotations, device="cpu")
    cells = mined.cells
    hit = cells[cells["kind"] == "hit"]
    assert len(hit) == 1 and np.allclose(hit[["x", "y"]].to_numpy(), top[:1])
    assert (cells.loc[cells["kind"] == "hard negative", "distance_um"] > 7.5).all()
    joined = cells[cells["source"] == "annotation"]
    assert joined[["x", "y", "kind"]].values.tolist() == [[100.0, 120.0, "lookalike"]]
    assert mined.figures["roi"].tolist() == [[top[0, 0] + 3.0, top[0, 1] - 2.0]]


def test_slides_without_ground_truth_are_refused(roi):
    with pytest.raises(ValueError, match=r"have no annotations and are not declared mitosis-free"):
        mine_hard_negatives("demo", {"roi": roi}, mpp=0.25, device="cpu")
    with pytest.raises(ValueError, match="annotations name slides that were not given"):
        mine_hard_negatives(
            "demo",
            {"roi": roi},
            pd.DataFrame({"slide": ["other"], "x": [1.0], "y": [1.0], "kind": ["mitosis"]}),
            mpp=0.25,
            device="cpu",
        )
    with pytest.raises(ValueError, match="threshold is a score"):
        mine_hard_negatives("demo", {"roi": roi}, mitosis_free=True, threshold=1.5)


def test_candidate_patches_come_from_the_tile_reader(roi):
    slide = wsimito.open_slide(roi, mpp=0.25)
    points = np.array([[500.0, 400.0], [10.0, 990.0]])
    patches = candidate_patches(slide, points, mpp=0.5, size=16)
    image = slide.read_region((0, 0), 0, slide.dimensions).astype(float)
    block = image[384:416, 484:516].reshape(16, 2, 16, 2, 3).mean(axis=(1, 3))
    expected = np.floor(block + 0.5).astype(np.uint8)  # the reader rounds halves up
    assert np.array_equal(patches[0].permute(1, 2, 0).numpy(), expected)
    # the box of the second point spans x -6..26 and y 974..1006 level-0 px: beyond the
    # image (3 columns on the left, 3 rows at the bottom) it is white, inside it is not
    edge = patches[1].numpy()
    assert (edge[:, 13:, :] == 255).all() and (edge[:, :, :3] == 255).all()
    assert (edge[:, :13, 3:] < 250).any()
