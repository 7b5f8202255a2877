"""CascadeDetector: crops, the Detector protocol, one checkpoint, the stage report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import wsimito
from wsimito.detect import as_detector
from wsimito.models import PointDetector, PointHeatmapNet, load_detector, save_detector
from wsimito.models.cascade import CascadeDetector, CascadeNet
from wsimito.models.classifier import PatchClassifier, PatchClassifierNet, crop_patches
from wsimito.models.detectors import DarkBlobDetector


def test_crops_are_the_tile_pixels_around_each_point_and_white_outside():
    rng = np.random.default_rng(0)
    tiles = torch.from_numpy(rng.integers(0, 255, (2, 3, 40, 50), dtype=np.uint8))
    points = [torch.tensor([[20.4, 15.6], [3.0, 38.0]]), torch.tensor([[49.9, 0.2]])]
    crops = crop_patches(tiles, points, 8)
    assert crops.shape == (3, 3, 8, 8) and crops.dtype == torch.uint8
    padded = np.pad(tiles.numpy(), ((0, 0), (0, 0), (8, 8), (8, 8)), constant_values=255)
    for k, (tile, x, y) in enumerate([(0, 20.4, 15.6), (0, 3.0, 38.0), (1, 49.9, 0.2)]):
        x0, y0 = round(x - 4), round(y - 4)  # corner rounded to a whole pixel
        expected = padded[tile, :, y0 + 8 : y0 + 16, x0 + 8 : x0 + 16]
        assert np.array_equal(crops[k].numpy(), expected), k


def test_half_resolution_crops_are_exact_area_averages():
    rng = np.random.default_rng(1)
    tiles = torch.from_numpy(rng.integers(0, 255, (1, 3, 64, 64), dtype=np.uint8))
    crops = crop_patches(tiles, [torch.tensor([[32.0, 30.0]])], 8, scale=2.0)
    block = tiles[0, :, 22:38, 24:40].double().reshape(3, 8, 2, 8, 2).mean(dim=(2, 4))
    assert torch.equal(crops[0], block.round().to(torch.uint8))


def _calibrate(network: torch.nn.Module, inputs: torch.Tensor) -> None:
    """Set the batch-norm statistics of random weights from real inputs, so scores spread."""
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one pass gives the exact statistics
    network.train()
    with torch.no_grad():
        network(inputs)
    network.eval()


def _cascade(candidate_threshold: float | None = None, tiles: torch.Tensor | None = None):
    torch.manual_seed(0)
    first = PointDetector(
        PointHeatmapNet(width=8, depth=3, stride=4),
        mpp=0.5,
        tile_size=256,
        overlap=32,
        min_score=0.0,
        device="cpu",
        metadata={"training_data": "none (random weights)", "intended_use": "tests"},
    )
    second = PatchClassifier(PatchClassifierNet(width=4), mpp=0.5, patch_size=32, device="cpu")
    if tiles is not None:
        _calibrate(first.model, first.normalize(tiles))
        points = first.detect(tiles)
        _calibrate(second.model, second.normalize(crop_patches(tiles, points, 32)))
        scores = torch.cat(points)[:, 2]
        candidate_threshold = float(scores.median())
    return CascadeDetector(first, second, candidate_threshold=candidate_threshold, threshold=0.5)


@pytest.fixture(scope="module")
def tiles(sample):
    image = np.asarray(Image.open(sample("images/he-target-tiatoolbox.png")).convert("RGB"))
    crops = [image[y : y + 256, x : x + 256] for y, x in ((0, 0), (300, 500), (700, 700))]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()


def test_cascade_follows_the_detector_protocol_and_reports_each_stage(tiles):
    cascade = as_detector(_cascade(tiles=tiles))
    calls = []
    predict = cascade.classifier.predict
    cascade.classifier.predict = lambda patches, **kw: (
        calls.append(len(patches)) or predict(patches, **kw)
    )
    out = cascade.detect(tiles)
    first = cascade.candidates.detect(tiles)
    assert len(out) == 3
    for points, proposed in zip(out, first, strict=True):
        keep = proposed[:, 2] >= cascade.candidate_threshold
        assert torch.equal(points[:, :2], proposed[keep, :2])
        assert ((points[:, 2] >= 0) & (points[:, 2] <= 1)).all()
    report = cascade.report
    n_first = sum(len(p) for p in first)
    assert report.tiles == 3 and report.first_stage == n_first
    assert report.candidates == sum(len(p) for p in out) == sum(calls)  # only candidates
    assert report.first_stage == report.removed_by_first_stage + report.candidates
    assert report.kept == sum(int((p[:, 2] >= 0.5).sum()) for p in out)
    assert report.removed_by_first_stage and report.removed_by_classifier and report.kept
    assert report.candidates == report.removed_by_classifier + report.kept
    assert cascade.reset_report() is report and cascade.report.tiles == 0


def test_cascade_saves_and_loads_as_one_checkpoint(tmp_path, tiles):
    cascade = _cascade(tiles=tiles)
    path = save_detector(cascade, tmp_path / "cascade.pt")
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["architecture"] == "cascade"
    assert set(checkpoint["config"]) >= {"first_width", "second_width"}
    loaded = load_detector(path, device="cpu")
    assert isinstance(loaded, CascadeDetector) and isinstance(loaded.model, CascadeNet)
    assert loaded.settings == cascade.settings
    assert loaded.metadata["weights_sha256"] and loaded.metadata["intended_use"] == "tests"
    for a, b in zip(cascade.detect(tiles), loaded.detect(tiles), strict=True):
        assert torch.allclose(a, b)
    tuned = load_detector(path, device="cpu", threshold=0.9, candidate_threshold=0.3)
    assert (tuned.threshold, tuned.candidate_threshold) == (0.9, 0.3)
    assert tuned.candidates.threshold == cascade.candidates.threshold


def test_count_mitoses_runs_a_cascade_unchanged(sample, tmp_path, tiles):
    cascade = _cascade(tiles=tiles)
    path = save_detector(cascade, tmp_path / "c.pt")
    slide = wsimito.open_slide(sample("images/he-target-tiatoolbox.png"), mpp=0.25)
    direct = wsimito.count_mitoses(slide, cascade, progress=False)
    from_file = wsimito.count_mitoses(slide, str(path), progress=False, device="cpu")
    assert np.allclose(direct.points, from_file.points)
    assert np.allclose(direct.scores, from_file.scores, atol=1e-6)
    assert direct.detector_name == "cascade"
    assert cascade.report.tiles == direct.timing["tiles"]


def test_the_score_combines_both_stages(tiles):
    cascade = _cascade(tiles=tiles)
    probs = cascade.rescore(tiles, cascade.candidates.detect(tiles))
    first = cascade.candidates.detect(tiles)
    for weight in (1.0, 0.5, 0.0):
        cascade.classifier_weight = weight
        out = cascade.detect(tiles)
        for points, p, q in zip(out, first, probs, strict=True):
            keep = p[:, 2] >= cascade.candidate_threshold
            expected = p[keep, 2] ** (1 - weight) * q[keep] ** weight
            assert torch.allclose(points[:, 2], expected, atol=1e-6), weight


def test_a_cascade_over_another_detector_runs_but_is_not_saved(tmp_path, tiles):
    blobs = DarkBlobDetector(mpp=0.5, tile_size=256, overlap=32, device="cpu")
    cascade = CascadeDetector(blobs, PatchClassifier(PatchClassifierNet(width=4), device="cpu"))
    assert cascade.candidate_threshold == 0.0
    assert len(cascade.detect(tiles)) == 3
    with pytest.raises(TypeError, match="only a cascade over a PointDetector"):
        save_detector(cascade, tmp_path / "x.pt")


def test_bad_thresholds_and_patches_are_refused():
    with pytest.raises(ValueError, match=r"candidate_threshold must lie in \[0, 1\]"):
        CascadeDetector(_cascade().candidates, _cascade().classifier, candidate_threshold=2.0)
    with pytest.raises(ValueError, match=r"threshold must lie in \[0, 1\]"):
        CascadeDetector(_cascade().candidates, _cascade().classifier, threshold=-0.1)
    with pytest.raises(ValueError, match=r"patches must be \(N, 3, 32, 32\)"):
        _cascade().classifier.predict(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
