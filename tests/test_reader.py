"""The public tile reader: boxes of a slide at a target mpp, as ordered device batches."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from _marks import write_pyramid

import wsimito
from wsimito.reader import ReadPlan, TileReader, default_num_workers


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (1100, 1300, 3), dtype=np.uint8)
    path = write_pyramid(tmp_path_factory.mktemp("reader") / "noise.tif", image, 0.25, levels=3)
    return path, image


def test_batches_hold_each_box_exactly_and_survive_later_batches(pyramid):
    path, image = pyramid
    slide = wsimito.open_slide(path)
    assert slide.decoder == "direct"
    grid = wsimito.TileGrid(slide, tile_size=256, overlap=32, mpp=0.25)
    reader = TileReader(slide, grid.boxes(), mpp=0.25, tile_size=256, batch_size=3, num_workers=2)
    assert not reader.plan.resample
    batches = list(reader)  # keep every batch: later reads must not overwrite earlier ones
    assert sum(len(b) for b in batches) == len(grid) and len(batches) == len(reader)
    white = np.full((1400, 1600, 3), 255, np.uint8)
    white[:1100, :1300] = image
    for batch in batches:
        for k, i in enumerate(batch.index):
            x, y = (int(v) for v in grid.boxes()[i, :2])
            tile = batch.pixels[k].permute(1, 2, 0).numpy()
            np.testing.assert_array_equal(tile, white[y : y + 256, x : x + 256])
            np.testing.assert_array_equal(batch.corners[k], (x, y))
    assert batches[0].scale == 1.0


def test_an_exact_twofold_reduction_is_area_pooling(pyramid):
    _, image = pyramid
    slide = wsimito.open_slide(image, mpp=0.25)  # one level: 0.5 µm/px needs a reduction
    boxes = np.array([[0.0, 0.0, 512.0, 512.0], [512.0, 256.0, 512.0, 512.0]])
    # tile_size 256 at 0.5 µm/px from level 0 (0.25): the plan pools 2x2 exactly.
    plan = ReadPlan.for_slide(slide, 0.5, 256, 0)
    assert plan.level == 0 and plan.exact and plan.pool == 2
    batch = next(iter(TileReader(slide, boxes, mpp=0.5, tile_size=256, batch_size=2)))
    for k, (x, y, w, h) in enumerate(boxes.astype(int)):
        block = image[y : y + h, x : x + w].astype(np.float64)
        expected = block.reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))
        got = batch.pixels[k].permute(1, 2, 0).numpy().astype(np.float64)
        assert np.abs(got - expected).max() <= 0.5 + 1e-9  # rounding only
    np.testing.assert_array_equal(batch.corners, boxes[:, :2])
    assert batch.scale == 2.0


def test_the_stream_is_bounded_and_boxes_are_checked(pyramid):
    path, _ = pyramid
    slide = wsimito.open_slide(path)
    boxes = np.zeros((10, 4)) + [0, 0, 256, 256]
    reader = TileReader(
        slide, boxes, mpp=0.25, tile_size=256, batch_size=2, num_workers=2, prefetch_bytes=1
    )
    assert reader.window == 2 + 2  # at least a batch plus one read per thread
    with pytest.raises(ValueError, match="box 0 is 100 x 100 level-0 px"):
        TileReader(slide, np.array([[0, 0, 100, 100]]), mpp=0.25, tile_size=256)
    with pytest.raises(ValueError, match="batch_size"):
        TileReader(slide, boxes, mpp=0.25, tile_size=256, batch_size=2.5)  # type: ignore[arg-type]
    assert len(list(TileReader(slide, np.empty((0, 4)), mpp=0.25, tile_size=256))) == 0


@pytest.mark.parametrize("k", [2, 4, 8])
def test_device_and_reader_thread_area_pooling_agree_exactly(k):
    """CUDA pools on the device (_area_pool), a CPU in the reader threads (PIL's reduce, used
    for powers of two, where its rounding is exact)."""
    import torch
    from PIL import Image

    from wsimito.reader import _area_pool

    rng = np.random.default_rng(k)
    patches = rng.integers(0, 256, (3, 32 * k, 32 * k, 3), dtype=np.uint8)
    batch = torch.from_numpy(patches).permute(0, 3, 1, 2)
    pooled = _area_pool(batch, k).permute(0, 2, 3, 1).numpy()
    for patch, got in zip(patches, pooled, strict=True):
        np.testing.assert_array_equal(got, np.asarray(Image.fromarray(patch).reduce(k)))
        sums = patch.astype(np.int64).reshape(32, k, 32, k, 3).sum(axis=(1, 3))
        np.testing.assert_array_equal(got, (sums + k * k // 2) // (k * k))


@pytest.mark.parametrize(
    ("cores", "cpu", "cuda"),
    [(1, 1, 1), (2, 2, 1), (4, 4, 3), (16, 4, 8), (64, 4, 8)],
)
def test_default_reader_count_depends_on_where_the_model_runs(monkeypatch, cores, cpu, cuda):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert default_num_workers("cpu") == cpu
    assert default_num_workers(torch.device("cuda")) == cuda


def _patch_box_rule(plan: ReadPlan, x: float, y: float) -> tuple[int, int, int]:
    """The per-box rule the reader threads apply, written out one box at a time."""
    lx, ly = x / plan.downsample, y / plan.downsample
    if plan.exact and float(lx).is_integer() and float(ly).is_integer():
        return int(lx), int(ly), plan.pool * plan.tile_size
    if plan.resample:
        return math.floor(lx) - 1, math.floor(ly) - 1, plan.read_size
    return round(lx), round(ly), plan.read_size


@pytest.mark.parametrize(
    ("mpp", "overlap"),
    # level 0 as is, nearly as is, resampled; level 1 nearly as is, resampled; level 2 pooled
    # exactly 2x and 3x (whole level px only; the others are resampled)
    [(0.25, 32), (0.26, 32), (0.3, 0), (0.5004, 64), (0.75, 0), (2.0, 0), (3.0, 0)],
)
def test_patches_computed_for_all_boxes_at_once_follow_the_per_box_rule(pyramid, mpp, overlap):
    path, _ = pyramid
    slide = wsimito.open_slide(path)
    side = 128 * mpp / slide.mpp
    rng = np.random.default_rng(int(mpp * 1e4))
    corners = np.concatenate(
        [
            rng.integers(-50, 1200, (40, 2)).astype(np.float64),  # whole level-0 px
            rng.uniform(-50, 1200, (40, 2)),
            rng.integers(-10, 300, (20, 2)) * 2.0 + 0.5,  # halves: rounding to even
            rng.integers(-10, 300, (20, 2)) * 4.0,  # whole px of levels 1 and 2
        ]
    )
    boxes = np.column_stack([corners, np.full((len(corners), 2), side)])
    reader = TileReader(slide, boxes, mpp=mpp, tile_size=128, overlap=overlap)
    if reader.plan.exact:  # both of its branches are taken
        assert len({reader._patch_box(k)[2] for k in range(len(corners))}) == 2
    for k, (x, y) in enumerate(corners):
        expected = _patch_box_rule(reader.plan, float(x), float(y))
        got = reader._patch_box(k)
        assert got == expected and all(type(v) is int for v in got), (k, x, y, reader.plan)


@pytest.mark.parametrize(("n", "batch_size", "workers"), [(23, 5, 3), (7, 8, 2), (40, 1, 4)])
def test_reader_threads_take_runs_of_boxes_within_a_batch(pyramid, n, batch_size, workers):
    path, image = pyramid
    slide = wsimito.open_slide(path)
    rng = np.random.default_rng(n)
    corners = rng.integers(0, 1000, (n, 2)).astype(np.float64)
    boxes = np.column_stack([corners, np.full((n, 2), 64.0)])
    reader = TileReader(
        slide, boxes, mpp=0.25, tile_size=64, batch_size=batch_size, num_workers=workers
    )
    chunk = reader._chunk()
    runs = list(reader._runs(chunk))
    assert [i for start, stop in runs for i in range(start, stop)] == list(range(n))
    for start, stop in runs:
        assert 0 < stop - start <= chunk <= batch_size
        assert start // batch_size == (stop - 1) // batch_size
    assert chunk * 2 * workers <= max(reader.window, 2 * workers)
    seen = []
    for batch in reader:
        for k, i in enumerate(batch.index):
            x, y = (int(v) for v in corners[i])
            tile = batch.pixels[k].permute(1, 2, 0).numpy()
            expected = np.full((64, 64, 3), 255, np.uint8)
            part = image[y : y + 64, x : x + 64]
            expected[: part.shape[0], : part.shape[1]] = part
            np.testing.assert_array_equal(tile, expected)
            seen.append(int(i))
    assert seen == list(range(n))
