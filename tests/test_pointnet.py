"""Our point detector: network shapes, targets and peaks, and a short training run."""

from __future__ import annotations

import pytest
import torch

from wsimito.evaluate import DetectionScore, match_points, score_points
from wsimito.models import PointDetector, PointHeatmapNet
from wsimito.models.peaks import find_peaks
from wsimito.train import heatmap_targets, train_point_detector

TILE = 64
DISC_RADIUS = 4.0
EDGE = 6.0  # px; a disc centre closer than this to the border is an "edge" disc


def _disc_image(
    gen: torch.Generator, size: int = TILE, n_max: int = 4, min_sep: float = 14.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bright discs on noise; centres anywhere in the image, edges included."""
    n = int(torch.randint(0, n_max + 1, (), generator=gen))
    centres: list[torch.Tensor] = []
    while len(centres) < n:
        c = torch.rand(2, generator=gen) * size
        if all(float((c - q).norm()) >= min_sep for q in centres):
            centres.append(c)
    points = torch.stack(centres) if centres else torch.zeros(0, 2)
    return _render(points, size, gen), points


def _render(points: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    image = torch.rand(3, size, size, generator=gen) * 90 + 40
    for x, y in points.tolist():
        image[:, (xx - x) ** 2 + (yy - y) ** 2 <= DISC_RADIUS**2] = 230
    return image.round().to(torch.uint8)


@pytest.fixture(scope="module")
def trained() -> PointDetector:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    data = [_disc_image(gen) for _ in range(256)]
    model = PointHeatmapNet(width=8, depth=3, stride=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is as fast and robust to a busy CPU
    try:
        train_point_detector(model, data, steps=250, batch_size=8, lr=3e-3, device="cpu")
    finally:
        torch.set_num_threads(threads)
    return PointDetector(
        model, mpp=0.25, tile_size=TILE, overlap=16, min_distance_um=1.5, device="cpu"
    )


def test_point_detector_learns_discs_including_at_tile_edges(trained):
    gen = torch.Generator().manual_seed(2)
    test = [_disc_image(gen) for _ in range(64)]
    found = trained.detect(torch.stack([image for image, _ in test]))
    total = DetectionScore()
    errors: list[float] = []
    edge_gt = edge_hit = 0
    for points, (_, gt) in zip(found, test, strict=True):
        points = points[points[:, 2] >= trained.threshold]
        total = total + score_points(points, gt, mpp=0.25, radius_um=0.75)  # 3 px
        pred_idx, gt_idx = match_points(points, gt, radius=3.0)
        errors += (points[pred_idx, :2] - gt[gt_idx]).norm(dim=1).tolist()
        near_edge = ((gt < EDGE) | (gt > TILE - EDGE)).any(dim=1)
        edge_gt += int(near_edge.sum())
        edge_hit += int(near_edge[torch.as_tensor(gt_idx, dtype=torch.long)].sum())
    assert total.f1 >= 0.9, total
    assert edge_gt >= 20 and edge_hit / edge_gt >= 0.8, (edge_hit, edge_gt)
    assert sum(errors) / len(errors) < 1.5  # px, mean localization error


def test_detect_output_shifts_with_the_input(trained):
    gen = torch.Generator().manual_seed(3)
    centres = torch.tensor([[20.3, 30.1], [45.7, 22.4], [38.2, 55.9], [60.5, 41.0]])
    canvas = _render(centres, 128, gen)
    dx, dy = 9, 5
    a, b = trained.detect(
        torch.stack([canvas[:, :TILE, :TILE], canvas[:, dy : dy + TILE, dx : dx + TILE]])
    )
    a, b = a[a[:, 2] >= 0.5], b[b[:, 2] >= 0.5]
    inside = lambda p: ((p[:, :2] > 8) & (p[:, :2] < TILE - 8)).all(dim=1)  # noqa: E731
    b_in_a_frame = b[:, :2] + torch.tensor([dx, dy])
    a_both = a[inside(a) & inside(a[:, :2] - torch.tensor([dx, dy]))]
    assert len(a_both) >= 2
    pred_idx, gt_idx = match_points(b_in_a_frame, a_both, radius=2.0)
    assert len(gt_idx) == len(a_both)
    assert (b_in_a_frame[pred_idx] - a_both[gt_idx, :2]).abs().max() < 1.0


def test_peaks_of_gaussian_targets_recover_sub_pixel_points():
    points = torch.tensor([[13.3, 22.7], [40.0, 41.9], [2.2, 50.5]])
    heat = heatmap_targets([points], (64, 64), stride=4, sigma=6.0)
    found = find_peaks(heat, stride=4, min_score=0.5, min_distance=8.0)[0]
    order = torch.argsort(found[:, 0])
    # The point at x = 2.2 sits in the first column of cells: no neighbour to its left,
    # so x snaps to the cell centre (2.0); y is still refined.
    expected = torch.tensor([[2.0, 50.5], [13.3, 22.7], [40.0, 41.9]])
    assert torch.allclose(found[order, :2], expected, atol=0.05)
    assert (found[:, 2] > 0.9).all()


def test_peaks_closer_than_the_minimum_distance_keep_the_higher_one():
    heat = torch.zeros(1, 1, 16, 16)
    heat[0, 0, 4, 4] = 0.9
    heat[0, 0, 4, 7] = 0.8  # 12 px away at stride 4
    heat[0, 0, 12, 12] = 0.7
    heat[0, 0, 12, 13] = 0.7  # tie, 4 px away: the first in order is kept
    close = find_peaks(heat, stride=4, min_score=0.1, min_distance=14.0)[0]
    assert close[:, 2].tolist() == pytest.approx([0.9, 0.7])
    far = find_peaks(heat, stride=4, min_score=0.1, min_distance=10.0)[0]
    assert far[:, 2].tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert find_peaks(heat, stride=4, min_score=0.75, min_distance=10.0)[0].shape == (2, 3)


@pytest.mark.parametrize(("depth", "stride"), [(3, 2), (3, 4), (4, 4), (4, 16)])
def test_network_outputs_one_logit_per_stride_cell(depth, stride):
    model = PointHeatmapNet(width=4, depth=depth, stride=stride).eval()
    with torch.inference_mode():
        out = model(torch.zeros(2, 3, 64, 96))
    assert out.shape == (2, 1, 64 // stride, 96 // stride)


def test_network_rejects_bad_strides_and_sizes():
    with pytest.raises(ValueError, match="power of two"):
        PointHeatmapNet(depth=3, stride=3)
    with pytest.raises(ValueError, match="power of two"):
        PointHeatmapNet(depth=2, stride=8)
    with pytest.raises(ValueError, match="multiples of 8"):
        PointHeatmapNet(width=4, depth=3, stride=4)(torch.zeros(1, 3, 60, 64))


def test_the_head_stays_float32_under_bf16_autocast_so_peaks_do_not_multiply():
    """bf16 logits have an 8-bit mantissa: rounded, a smooth heatmap turns into flat
    plateaus, and every cell of a plateau is a local maximum to the peak finder."""
    torch.manual_seed(0)
    net = PointHeatmapNet().eval()
    x = torch.randn(2, 3, 256, 256)
    with torch.inference_mode():
        full = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = net(x)
        rounded = full.to(torch.bfloat16).float()  # what a bf16 head would give

    def peaks(logits: torch.Tensor) -> int:
        found = find_peaks(torch.sigmoid(logits), stride=net.stride, min_score=0.0, min_distance=4)
        return sum(len(p) for p in found)

    assert mixed.dtype == torch.float32
    assert torch.allclose(mixed, full, atol=0.05)
    assert abs(peaks(mixed) - peaks(full)) <= 0.05 * peaks(full)
    # the failure this guards against: the rounded heatmap has many more "peaks"
    assert peaks(rounded) > 1.2 * peaks(full)
