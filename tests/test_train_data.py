"""Patch datasets: the right pixels under every target, a bounded slide cache, and bad data
(missing image, cell outside its image, unknown class, empty split, bad config) named clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _marks import MarkDetector, draw_marks, write_pyramid
from PIL import Image

from wsimito.train.config import ConfigError, TrainingConfig
from wsimito.train.datasets import PatchDataset, TrainingDataError
from wsimito.train.loop import split_slides
from wsimito.train.sampler import BalancedSampler

RADIUS = 8.0  # px at 0.25 µm/px


@pytest.fixture
def dotted(tmp_path) -> tuple[Path, pd.DataFrame]:
    """Four 600 x 500 px slides at 0.25 µm/px (two levels) with a dark disc at every cell."""
    rng = np.random.default_rng(3)
    rows = []
    for i in range(4):
        marks = rng.uniform(40, [560, 460], size=(6, 2))
        write_pyramid(tmp_path / f"s{i}.tif", draw_marks(600, 500, marks, RADIUS), 0.25, levels=2)
        for j, (x, y) in enumerate(marks):
            label = "mitotic figure" if j < 4 else "hard negative"
            rows.append(
                {
                    "slide": f"s{i}.tif",
                    "x": x,
                    "y": y,
                    "label": label,
                    "id": 10 * i + j,
                    "split": "train" if i < 3 else "test",
                    "scanner": f"sc{i % 2}",
                }
            )
    return tmp_path, pd.DataFrame(rows)


@pytest.mark.parametrize("mpp", [0.25, 0.4, 0.5])
def test_patches_have_the_annotated_dots_at_their_targets(dotted, mpp):
    folder, cells = dotted
    dataset = PatchDataset(cells, folder, mpp=mpp, patch_size=64, num_workers=2)
    try:
        sampler = BalancedSampler(
            dataset.cells,
            dataset.slides,
            epoch_size=24,
            proportions={"mitosis": 1, "lookalike": 1},
            max_shift=0.6,
            seed=1,
        )
        samples = sampler.samples(0)
        batch = dataset.read(samples)
    finally:
        dataset.close()
    assert batch.pixels.shape == (24, 3, 64, 64) and batch.pixels.dtype.is_floating_point is False
    found = MarkDetector(mpp=mpp, tile_size=64).detect(batch.pixels)
    radius = RADIUS * 0.25 / mpp
    checked = 0
    for k, (points, dots) in enumerate(zip(batch.points, found, strict=True)):
        inside = points[((points[:, :2] > radius + 1) & (points[:, :2] < 63 - radius)).all(dim=1)]
        for x, y, _kind in inside.tolist():
            distance = (dots[:, :2] - dots.new_tensor([x, y])).norm(dim=1).min()
            assert float(distance) < 0.35, (k, x, y)
            checked += 1
        # the sampled cell is among the targets, with its kind
        u = (np.array([samples.x[k], samples.y[k]]) - batch.corners[k]) / batch.scales[k]
        nearest = (points[:, :2] - points.new_tensor(u)).norm(dim=1).argmin()
        assert float((points[nearest, :2] - points.new_tensor(u)).norm()) < 1e-4
        assert int(points[nearest, 2]) == int(samples.cls[k])
    assert checked >= 24


def test_open_slides_are_bounded_and_reused(dotted):
    folder, cells = dotted
    dataset = PatchDataset(cells, folder, mpp=0.5, patch_size=64, max_open=1, num_workers=1)
    try:
        sampler = BalancedSampler(
            dataset.cells, dataset.slides, epoch_size=12, proportions={"random": 1}
        )
        dataset.read(sampler.samples(0))
        assert dataset.cache.idle <= 1
        opened = dataset.cache.opened
        dataset.read(sampler.samples(1))
        assert dataset.cache.opened > opened  # the evicted slides were opened again
    finally:
        dataset.close()
    roomy = PatchDataset(cells, folder, mpp=0.5, patch_size=64, max_open=8, num_workers=1)
    try:
        roomy.read(sampler.samples(0))
        opened = roomy.cache.opened
        roomy.read(sampler.samples(1))
        assert roomy.cache.opened == opened  # nothing reopened
    finally:
        roomy.close()


def test_missing_image_names_the_slide_and_the_path(dotted):
    folder, cells = dotted
    extra = pd.DataFrame([{"slide": "gone.tif", "x": 5.0, "y": 5.0, "label": "mitosis", "id": 99}])
    with pytest.raises(TrainingDataError, match=r"'gone.tif'.*id 99.*gone.tif does not exist"):
        PatchDataset(pd.concat([cells, extra]), folder, mpp=0.5, patch_size=64)


def test_cell_outside_its_image_names_the_entry_and_the_file(dotted):
    folder, cells = dotted
    cells = cells.copy()
    cells.loc[3, "x"] = 5000.0
    with pytest.raises(TrainingDataError, match=r"id 3 \(slide 's0.tif'\).*600 x 500 px.*s0.tif"):
        PatchDataset(cells, folder, mpp=0.5, patch_size=64)


def test_unknown_class_is_an_error_or_dropped(dotted):
    folder, cells = dotted
    cells = cells.copy()
    cells.loc[7, "label"] = "tumour cell"
    with pytest.raises(TrainingDataError, match=r"id 11 .*'tumour cell'.*mitosis_names"):
        PatchDataset(cells, folder, mpp=0.5, patch_size=64)
    kept = PatchDataset(cells, folder, mpp=0.5, patch_size=64, unknown_classes="ignore")
    kept.close()
    assert len(kept.cells) == len(cells) - 1


def test_image_size_and_resolution_are_checked(dotted, tmp_path):
    folder, cells = dotted
    with pytest.raises(TrainingDataError, match=r"700 x 500 px in the annotations.*600 x 500"):
        PatchDataset(cells.assign(width=700, height=500), folder, mpp=0.5, patch_size=64)
    Image.fromarray(draw_marks(200, 200, np.array([[100.0, 100.0]]), 8)).save(folder / "roi.png")
    roi = pd.DataFrame([{"slide": "roi.png", "x": 100.0, "y": 100.0, "label": "mitotic figure"}])
    with pytest.raises(TrainingDataError, match=r"roi.png.*data.mpp"):
        PatchDataset(roi, folder, mpp=0.5, patch_size=64)
    dataset = PatchDataset(roi, folder, mpp=0.5, patch_size=64, slide_mpp=0.25)
    dataset.close()
    assert dataset.slides["mpp"].tolist() == [0.25]


def _config(**split) -> TrainingConfig:
    return TrainingConfig.from_dict({"data": {"annotations": "a.csv"}, "split": split})


def test_splits_and_empty_splits(dotted):
    _, cells = dotted
    slides = cells.groupby("slide", as_index=False).first()
    parts = split_slides(slides, _config(validation_fraction=0.5))
    assert parts["test"] == ["s3.tif"] and len(parts["validation"]) == 2
    assert sorted(parts["train"] + parts["validation"]) == ["s0.tif", "s1.tif", "s2.tif"]
    with pytest.raises(TrainingDataError, match=r"training split is empty.*\['test', 'train'\]"):
        split_slides(slides, _config(train=["training"]))
    with pytest.raises(TrainingDataError, match=r"validation split is empty"):
        split_slides(slides, _config(validation=["valid"]))
    with pytest.raises(TrainingDataError, match=r"no 'fold' column"):
        split_slides(slides, _config(column="fold"))
    held = split_slides(
        slides,
        _config(
            validation_fraction=0.5,
            hold_out_column="scanner",
            hold_out=["sc1"],
        ),
    )
    assert sorted(held["train"] + held["validation"]) == ["s0.tif", "s2.tif"]
    assert held["test"] == ["s3.tif"]  # test slides of the held-out scanner only


@pytest.mark.parametrize(
    "table, message",
    [
        ({"sampler": {"epoch_size": "many"}}, r"\[sampler\] epoch_size must be an integer"),
        ({"sampler": {"mitosis": -1.0}}, r"\[sampler\] mitosis = -1.0 is out of range"),
        ({"augment": {"hed": {"strength": 1}}}, r"unknown key \[augment.hed\] strength.*sigma"),
        ({"model": {"architecture": "unet"}}, r"'point-heatmap-net', 'retinanet-da'"),
        ({"model": {"stride": 3}}, r"\[model\] stride = 3 must be a power of two"),
        (
            {"model": {"architecture": "retinanet-da", "patch_size": 256, "tile_size": 512}},
            r"tile_size = 512 must equal patch_size",
        ),
        ({"split": {"train": ["a"], "test": ["a"]}}, r"\['a'\] are in train and in test"),
        ({"train": {"precision": "fp8"}}, r"\[train\] precision = 'fp8' is not allowed"),
    ],
)
def test_bad_config_values_name_the_key_and_what_is_allowed(table, message):
    with pytest.raises(ConfigError, match=message):
        TrainingConfig.from_dict({"data": {"annotations": "a.csv"}, **table})


def test_init_demo_starts_from_the_demo_weights():
    import torch

    import wsimito
    from wsimito.train.loop import build_model

    config = TrainingConfig.from_dict(
        {"data": {"annotations": "a.csv"}, "model": {"init": "demo", "patch_size": 256}}
    )
    setup = build_model(config)
    demo = wsimito.load_detector("demo", device="cpu")
    assert isinstance(demo, wsimito.CascadeDetector)  # training goes on from its first stage
    demo = demo.candidates
    assert (setup.mpp, setup.tile_size, setup.overlap) == (demo.mpp, demo.tile_size, demo.overlap)
    assert setup.mean == tuple(demo.normalize.mean)
    mine, theirs = setup.model.state_dict(), demo.model.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert "synthetic" in setup.init_metadata["init_training_data"]
    assert "first stage" in setup.init_metadata["initialised_from"]
    with pytest.raises(ConfigError, match=r"patch_size = 100 must be a multiple of 16"):
        build_model(
            TrainingConfig.from_dict(
                {"data": {"annotations": "a.csv"}, "model": {"init": "demo", "patch_size": 100}}
            )
        )


def test_a_handle_whose_read_failed_is_not_cached_again(dotted):
    from wsimito.train.datasets import _Lease

    folder, cells = dotted
    dataset = PatchDataset(cells, folder, mpp=0.5, patch_size=64, num_workers=1)
    try:
        lease = _Lease(dataset.cache, 0)
        first = lease.reopen()
        first.close()  # what the reader does with a handle whose read failed ...
        second = lease.reopen()  # ... before it asks for another
        assert second.handle is not first.handle
        lease.close()
        assert first.handle not in dataset.cache._idle.get(0, [])
        assert second.handle in dataset.cache._idle[0]
    finally:
        dataset.close()
