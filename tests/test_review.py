"""`wsimito review`: a gallery of counted detections, near misses and mined negatives."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from wsimito.cli import main
from wsimito.review import negative_points
from wsimito.train.mining import mine_hard_negatives

ROI = "images/he-target-tiatoolbox.png"


@pytest.fixture(scope="module")
def negatives(sample, tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        mined = mine_hard_negatives(
            "demo",
            {"he-target-tiatoolbox.png": sample(ROI)},
            mitosis_free=True,
            mpp=0.25,
            threshold=0.05,
            device="cpu",
        )
    path = tmp_path_factory.mktemp("review") / "negatives.geojson"
    return mined, mined.to_geojson(path)


def test_review_writes_a_gallery_with_every_section(sample, negatives, tmp_path, capsys):
    mined, path = negatives
    out = tmp_path / "review.html"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        status = main(
            [
                "review",
                sample(ROI),
                "--mpp",
                "0.25",
                "--negatives",
                str(path),
                "--top",
                "5",
                "-o",
                str(out),
                "-q",
                "--device",
                "cpu",
            ]
        )
    assert status == 0
    page = out.read_text()
    n = len(mined.negatives)
    assert f"Mined negatives: top {min(5, n)} of {n}" in page
    assert "Counted mitotic figures" in page and "below the threshold" in page
    assert "he-target-tiatoolbox.png: demo counts" in page
    # each section holds at most 5 crops, and the negatives section exactly min(5, n)
    assert len(re.findall(r"<img", page)) <= 15
    printed = capsys.readouterr().out
    assert "gallery written to" in printed and "per mm²" in printed


def test_review_writes_png(sample, negatives, tmp_path):
    _, path = negatives
    out = tmp_path / "review.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        main(
            [
                "review",
                sample(ROI),
                "--mpp",
                "0.25",
                "--negatives",
                str(path),
                "--top",
                "3",
                "-o",
                str(out),
                "-q",
                "--device",
                "cpu",
                "--no-near-misses",
            ]
        )
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100


def test_negative_points_pick_the_slide_and_sort_by_score():
    table = pd.DataFrame(
        {
            "slide": ["a", "a", "a", "b"],
            "x": [1.0, 2.0, 3.0, 4.0],
            "y": [1.0, 2.0, 3.0, 4.0],
            "score": [0.2, np.nan, 0.9, 0.5],
            "kind": ["hard negative", "lookalike", "hard negative", "hard negative"],
        }
    )
    xy, scores = negative_points(table, "a")
    assert xy[:, 0].tolist() == [3.0, 1.0, 2.0]  # by score, annotated (no score) last
    assert np.isnan(scores[-1])
    one = table[table["slide"] == "b"]
    assert negative_points(one, "renamed.svs")[0].tolist() == [[4.0, 4.0]]
    with pytest.raises(ValueError, match="cover slides"):
        negative_points(table, "c")
