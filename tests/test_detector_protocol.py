"""The Detector protocol, tile validation and device handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsimito.detect import (
    Detector,
    TileInputError,
    autocast_dtype,
    check_tiles,
    resolve_device,
)
from wsimito.models import PointDetector, PointHeatmapNet, RetinaNetDA, RetinaNetDetector


class PlainDetector:
    """A user's detector: no base class, just the protocol's attributes and method."""

    mpp = 0.5
    tile_size = 32
    overlap = 4
    threshold = 0.5
    device = torch.device("cpu")
    name = "plain"
    metadata: dict = {}
    min_distance_um = None

    def detect(self, tiles: torch.Tensor) -> list[torch.Tensor]:
        return [torch.zeros(0, 3) for _ in tiles]


@pytest.fixture(scope="module")
def point_detector() -> PointDetector:
    torch.manual_seed(0)
    model = PointHeatmapNet(width=4, depth=3, stride=4)
    with torch.no_grad():
        model.head[-1].bias.fill_(2.0)  # an untrained net with peaks above min_score
    return PointDetector(model, tile_size=64, overlap=8, device="cpu")


def test_plain_objects_and_bundled_wrappers_satisfy_the_protocol(point_detector):
    assert isinstance(PlainDetector(), Detector)
    assert isinstance(point_detector, Detector)
    assert isinstance(RetinaNetDetector(device="cpu"), Detector)
    assert not isinstance(object(), Detector)


def test_a_detector_missing_protocol_members_is_refused_with_their_names():
    from wsimito.detect import as_detector

    class Partial:
        mpp, tile_size, overlap, threshold, device = 0.5, 32, 4, 0.5, torch.device("cpu")

        def detect(self, tiles):
            return []

    with pytest.raises(TypeError, match="metadata, min_distance_um, name"):
        as_detector(Partial())


def test_detect_returns_one_float_point_table_per_tile(point_detector):
    tiles = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    out = point_detector.detect(tiles)
    assert len(out) == 3
    assert all(len(points) > 0 for points in out)
    for points in out:
        assert points.dtype == torch.float32 and points.ndim == 2 and points.shape[1] == 3
        assert ((points[:, 2] >= 0) & (points[:, 2] <= 1)).all()
        assert ((points[:, :2] >= 0) & (points[:, :2] <= 64)).all()
        points[:, :2] += torch.tensor([100.0, 200.0])  # callers may shift points in place


@pytest.mark.parametrize(
    ("tiles", "message"),
    [
        (torch.zeros(1, 3, 48, 64, dtype=torch.uint8), "takes 64x64 px tiles, got 64x48"),
        (torch.zeros(1, 3, 128, 128, dtype=torch.uint8), "no silent resize"),
        (torch.zeros(1, 3, 64, 64), "must be uint8"),
        (torch.zeros(1, 64, 64, 3, dtype=torch.uint8), "channels-last"),
        (torch.zeros(3, 64, 64, dtype=torch.uint8), r"tiles\[None\]"),
        (np.zeros((1, 3, 64, 64), dtype=np.uint8), "torch.Tensor"),
    ],
)
def test_wrong_tile_size_dtype_or_layout_raises_a_clear_error(point_detector, tiles, message):
    with pytest.raises(TileInputError, match=message):
        point_detector.detect(tiles)


def test_retinanet_detector_rejects_tiles_other_than_512_px():
    detector = RetinaNetDetector(RetinaNetDA(), device="cpu")
    with pytest.raises(TileInputError, match="512x512"):
        detector.detect(torch.zeros(1, 3, 256, 256, dtype=torch.uint8))


def test_check_tiles_passes_valid_tiles_through_unchanged():
    tiles = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    assert check_tiles(tiles, 16) is tiles


def test_resolve_device_picks_cuda_then_mps_then_cpu():
    mps = getattr(torch.backends, "mps", None)
    if torch.cuda.is_available():
        expected = "cuda"
    elif mps is not None and mps.is_available():
        expected = "mps"
    else:
        expected = "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu-please")


def test_autocast_uses_half_precision_on_gpus_only():
    assert autocast_dtype(torch.device("cpu")) is None
    assert autocast_dtype(torch.device("mps")) == torch.float16
    assert autocast_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
    assert autocast_dtype(torch.device("cuda"), "fp16") == torch.float16
    with pytest.raises(ValueError, match="precision"):
        autocast_dtype(torch.device("cpu"), "int8")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mpp": 0.0}, "mpp"),
        ({"overlap": 64}, "overlap"),
        ({"threshold": 1.5}, "threshold"),
        ({"min_score": -0.1}, "min_score"),
    ],
)
def test_point_detector_rejects_invalid_settings(kwargs, message):
    settings = {"tile_size": 64, "overlap": 8, "device": "cpu", **kwargs}
    with pytest.raises(ValueError, match=message):
        PointDetector(PointHeatmapNet(width=4, depth=3), **settings)
