"""count_mitoses is exact at tile borders, slide edges and across resolutions.

A geometric detector that finds dark discs exactly runs on pyramids of several
formats; every mark must come back once, at its position.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import zarr
from _marks import MarkDetector, draw_marks, marks_near_borders, write_pyramid
from scipy.spatial import cKDTree

import wsimito
from wsimito.pipeline import count_mitoses
from wsimito.reader import ReadPlan, resample_batch
from wsimito.tiling import TileGrid

RADIUS_UM = 2.0  # mark radius; 8 px at the detector's 0.25 µm/px, overlap/2 = 16 px


def assert_found_exactly(result, marks: np.ndarray, tol_px: float) -> None:
    found = (
        result.candidates[["x", "y"]].to_numpy() if hasattr(result, "candidates") else result.points
    )
    assert len(found) == len(marks), f"found {len(found)} marks, expected {len(marks)}"
    dist, idx = cKDTree(found).query(marks)
    assert len(set(idx.tolist())) == len(marks), "a mark was matched twice"
    assert dist.max() <= tol_px, f"largest position error {dist.max():.3f} level-0 px"


def make_case(width, height, mpp, detector, seed=0):
    rng = np.random.default_rng(seed)
    grid = TileGrid.from_dimensions(
        (width, height),
        mpp,
        tile_size=detector.tile_size,
        overlap=detector.overlap,
        mpp=detector.mpp,
    )
    radius = RADIUS_UM / mpp
    marks = marks_near_borders(grid, width, height, radius, rng)
    return draw_marks(width, height, marks, radius), marks


@pytest.mark.parametrize(
    ("fmt", "mpp", "levels"),
    [
        ("svs-jpeg", 0.25, 3),  # openslide reads it; tiles at the detector's mpp, no resampling
        ("tiff", 0.125, 1),  # one level twice as fine: device resampling with 2x2 area pooling
        ("tiff", 0.125, 3),  # the pyramid's level 1 matches the detector: read it directly
        ("zarr", 0.5, 1),  # coarser than the detector: upsampling on the device
        ("array", 0.25 * 1.01, 1),  # 1 % off the detector's mpp: within tolerance, no resampling
        ("array", 0.25 * 1.10, 1),  # 10 % off: resampled
    ],
)
def test_every_mark_found_once_at_its_position(tmp_path, fmt, mpp, levels):
    det = MarkDetector()
    width, height = int(700 * 0.25 / mpp), int(560 * 0.25 / mpp)
    image, marks = make_case(width, height, mpp, det)
    if fmt.startswith("svs"):
        source = str(
            write_pyramid(
                tmp_path / "marks.svs", image, mpp, levels=levels, svs=True, compression="jpeg"
            )
        )
    elif fmt == "tiff":
        source = str(write_pyramid(tmp_path / "marks.tif", image, mpp, levels=levels))
    elif fmt == "zarr":
        source = str(tmp_path / "marks.zarr")
        arr = zarr.open_array(
            source, mode="w", shape=image.shape, chunks=(256, 256, 3), dtype="uint8"
        )
        arr[:] = image
    else:
        source = image
    slide = wsimito.open_slide(source, mpp=None if fmt in ("svs-jpeg", "tiff") else mpp)
    assert slide.mpp == pytest.approx(mpp)
    result = count_mitoses(slide, det, tissue=None, progress=False, batch_size=4)
    # Tolerance: 0.35 px at the detector's resolution, expressed in level-0 px.
    assert_found_exactly(result, marks, tol_px=0.35 * 0.25 / mpp)
    assert result.count == len(marks)
    assert result.timing["tiles"] == len(TileGrid(slide, tile_size=128, overlap=32, mpp=0.25))


def test_readers_resample_where_expected():
    det = MarkDetector()
    plans = {}
    for mpp in (0.25, 0.125, 0.2525, 0.5, 0.275):
        slide = wsimito.open_slide(np.full((300, 300, 3), 255, np.uint8), mpp=mpp)
        plans[mpp] = ReadPlan.for_slide(slide, det.mpp, det.tile_size, det.overlap)
    assert not plans[0.25].resample and not plans[0.2525].resample
    assert plans[0.125].resample and plans[0.125].pool == 2
    assert plans[0.5].resample and plans[0.275].resample


def test_slide_smaller_than_one_tile(tmp_path):
    det = MarkDetector()
    mpp = 0.25
    marks = np.array([[10.5, 11.5], [60.25, 40.75], [89.0, 69.0]])
    image = draw_marks(100, 80, marks, RADIUS_UM / mpp)
    result = count_mitoses(wsimito.open_slide(image, mpp=mpp), det, tissue=None, progress=False)
    assert result.timing["tiles"] == 1
    assert_found_exactly(result, marks, tol_px=0.35)


def test_naive_tiling_without_core_ownership_would_double_count():
    # Guard against a vacuous exactness test: the marks do sit in tile overlaps.
    det = MarkDetector()
    mpp = 0.25
    image, marks = make_case(700, 560, mpp, det, seed=3)
    grid = TileGrid.from_dimensions(
        (700, 560), mpp, tile_size=det.tile_size, overlap=det.overlap, mpp=mpp
    )
    boxes = grid.boxes()
    inside = (
        (marks[:, None, 0] >= boxes[None, :, 0] + 8)
        & (marks[:, None, 0] < boxes[None, :, 0] + boxes[None, :, 2] - 8)
        & (marks[:, None, 1] >= boxes[None, :, 1] + 8)
        & (marks[:, None, 1] < boxes[None, :, 1] + boxes[None, :, 3] - 8)
    )
    assert (inside.sum(axis=1) >= 2).sum() >= 10


def test_resample_batch_maps_the_tile_corner_exactly():
    # A patch whose value is its x coordinate: sampled values reveal where each output pixel looked.
    s = 40
    xs = torch.arange(s, dtype=torch.float32) + 0.5
    patch = xs.expand(s, s).expand(1, 3, s, s).clone()
    out = resample_batch(patch.round().to(torch.uint8), torch.tensor([[3.25, 0.0]]), 0.5, 16)
    expected = 3.25 + (torch.arange(16) + 0.5) * 0.5
    assert torch.allclose(out[0, 0, 0].float(), expected.round(), atol=1.0)


def test_empty_slide_gives_no_tiles_and_says_no_tissue_was_analysed():
    det = MarkDetector()
    white = wsimito.open_slide(np.full((600, 500, 3), 255, np.uint8), mpp=0.25)
    with pytest.warns(UserWarning, match="no tissue was analysed"):
        result = count_mitoses(white, det, tissue="auto", progress=False)
    assert result.count == 0 and result.timing["tiles"] == 0 and det.calls == 0
    assert result.tissue_area_mm2 == 0 and math.isnan(result.density_per_mm2)


def test_detector_protocol_is_checked():
    class NotADetector:
        mpp = 0.25

    with pytest.raises(TypeError, match="tile_size"):
        count_mitoses(np.zeros((64, 64, 3), np.uint8), NotADetector(), mpp=0.25, progress=False)


def test_tile_read_failures_retry_then_raise_or_skip(tmp_path):
    from wsimito.slide.array_backend import ArrayBackend

    class FlakyBackend(ArrayBackend):
        """Fails every read of the region x >= 200 (a broken tile on disk)."""

        def read_level(self, x, y, level, width, height):
            if x + width > 200 and x < 260 and y < 100:
                raise OSError("corrupt JPEG tile")
            return super().read_level(x, y, level, width, height)

    det = MarkDetector()
    marks = np.array([[40.5, 40.5], [400.5, 300.5]])
    image = draw_marks(500, 400, marks, RADIUS_UM / 0.25)
    slide = wsimito.Slide(FlakyBackend(image), mpp=0.25)
    with pytest.raises(wsimito.TileReadError, match=r"level-0 box \(x="):
        count_mitoses(slide, det, tissue=None, progress=False)
    with pytest.warns(UserWarning, match="skipped"):
        result = count_mitoses(slide, det, tissue=None, progress=False, on_error="skip")
    assert result.skipped_tiles and all(len(b) == 4 for b in result.skipped_tiles)
    assert result.count == 2  # both marks lie in cores of readable tiles


def test_stain_hook_runs_on_each_batch_before_the_detector():
    det = MarkDetector()
    marks = np.array([[40.5, 40.5], [300.5, 200.5]])
    slide = wsimito.open_slide(draw_marks(400, 300, marks, RADIUS_UM / 0.25), mpp=0.25)
    seen = []

    def blank(batch: torch.Tensor) -> torch.Tensor:
        seen.append((batch.dtype, tuple(batch.shape[1:]), batch.device.type))
        return torch.full_like(batch, 255)  # the detector must now see no marks

    assert count_mitoses(slide, det, tissue=None, progress=False).count == 2
    result = count_mitoses(slide, det, tissue=None, progress=False, stain=blank)
    assert result.count == 0
    assert seen and all(s == (torch.uint8, (3, 128, 128), "cpu") for s in seen)


class _SlowMarks(MarkDetector):
    """The mark detector, waiting ``seconds`` in every call (a slow model)."""

    seconds = 0.05

    def detect(self, tiles):
        import time

        time.sleep(self.seconds)
        return super().detect(tiles)


def test_timing_says_where_the_main_thread_spent_its_time():
    det = _SlowMarks()
    width, height = 700, 560
    image, marks = make_case(width, height, 0.25, det)
    slide = wsimito.open_slide(image, mpp=0.25)
    result = count_mitoses(slide, det, tissue=None, progress=False, batch_size=4)
    assert_found_exactly(result, marks, tol_px=0.35)
    timing = result.timing
    batches = math.ceil(timing["tiles"] / 4)
    assert batches >= 4
    # every batch waited in detect; reading an in-memory slide and merging are fast
    assert timing["detect_seconds"] >= batches * det.seconds
    assert timing["detect_seconds"] > timing["read_wait_seconds"]
    assert timing["detect_seconds"] > timing["merge_seconds"]
    assert min(timing["read_wait_seconds"], timing["merge_seconds"]) >= 0
    parts = timing["read_wait_seconds"] + timing["detect_seconds"] + timing["merge_seconds"]
    assert parts <= timing["seconds"]
