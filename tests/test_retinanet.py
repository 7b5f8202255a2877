"""The MIDOG reference RetinaNet: state-dict layout, anchors, decoding and NMS."""

from __future__ import annotations

import math

import pytest
import torch

from wsimito.models import RetinaNetDA, RetinaNetDetector
from wsimito.models.anchors import box_iou, create_anchors, nms


def _bn(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    keys = {
        f"{prefix}.{name}": (channels,)
        for name in ("weight", "bias", "running_mean", "running_var")
    }
    keys[f"{prefix}.num_batches_tracked"] = ()
    return keys


def _reference_layout() -> dict[str, tuple[int, ...]]:
    """Keys and shapes of RetinaNetDA.pth as published with the MIDOG 2021 reference docker."""
    keys: dict[str, tuple[int, ...]] = {"encoder.0.weight": (64, 3, 7, 7), **_bn("encoder.1", 64)}
    for index, cin, cout in ((4, 64, 64), (5, 64, 128), (6, 128, 256), (7, 256, 512)):
        for block in (0, 1):
            p = f"encoder.{index}.{block}"
            first_in = cin if block == 0 else cout
            keys[f"{p}.conv1.weight"] = (cout, first_in, 3, 3)
            keys.update(_bn(f"{p}.bn1", cout))
            keys[f"{p}.conv2.weight"] = (cout, cout, 3, 3)
            keys.update(_bn(f"{p}.bn2", cout))
            if block == 0 and cin != cout:
                keys[f"{p}.downsample.0.weight"] = (cout, cin, 1, 1)
                keys.update(_bn(f"{p}.downsample.1", cout))
    keys.update(
        {
            "c5top5.weight": (128, 512, 1, 1),
            "c5top5.bias": (128,),
            "c5top6.weight": (128, 512, 3, 3),
            "c5top6.bias": (128,),
            "p6top7.1.weight": (128, 128, 3, 3),
            "p6top7.1.bias": (128,),
            "merges.0.conv_lat.weight": (128, 256, 1, 1),
            "merges.0.conv_lat.bias": (128,),
            "merges.1.conv_lat.weight": (128, 128, 1, 1),
            "merges.1.conv_lat.bias": (128,),
        }
    )
    for i in range(3):
        keys[f"smoothers.{i}.weight"] = (128, 128, 3, 3)
        keys[f"smoothers.{i}.bias"] = (128,)
    for head, outputs in (("classifier", 2 * 5), ("box_regressor", 4 * 5)):
        for i in range(3):
            keys[f"{head}.{i}.0.weight"] = (128, 128, 3, 3)
            keys[f"{head}.{i}.0.bias"] = (128,)
        keys[f"{head}.3.weight"] = (outputs, 128, 3, 3)
        keys[f"{head}.3.bias"] = (outputs,)
    for name, c in (("d3", 128), ("d4", 256), ("d5", 512)):
        keys[f"{name}.reducer.0.weight"] = (c, c, 3, 3)
        keys.update(_bn(f"{name}.reducer.1", c))
        keys[f"{name}.reducer.4.weight"] = (c // 2, c, 3, 3)
        keys.update(_bn(f"{name}.reducer.5", c // 2))
        keys[f"{name}.reducer.8.weight"] = (c // 4, c // 2, 3, 3)
        keys.update(_bn(f"{name}.reducer.9", c // 4))
        keys[f"{name}.reducer2.weight"] = (4, c // 4)
    return keys


def test_state_dict_matches_the_reference_layout_exactly():
    layout = {k: tuple(v.shape) for k, v in RetinaNetDA().state_dict().items()}
    assert layout == _reference_layout()


def test_forward_returns_p3_to_p5_anchors_for_a_512_px_tile():
    model = RetinaNetDA().eval()
    with torch.inference_mode():
        classes, boxes = model(torch.zeros(1, 3, 512, 512))
    n_anchors = 5 * (64 * 64 + 32 * 32 + 16 * 16)
    assert classes.shape == (1, n_anchors, 2)
    assert boxes.shape == (1, n_anchors, 4)
    assert len(create_anchors()) == n_anchors


def test_anchor_sides_are_2048_scale_over_grid_px_and_centred_on_cells():
    anchors = create_anchors()
    px = 256.0  # normalized units -> px on a 512 px tile
    first_cell = anchors[:5]  # P3 (64 x 64), row 0, col 0, scales 0.2 ... 1.0
    assert torch.allclose(first_cell[:, 2] * px, torch.tensor([6.4, 12.8, 19.2, 25.6, 32.0]))
    assert torch.allclose(first_cell[:, 2], first_cell[:, 3])
    assert torch.allclose((first_cell[:, :2] + 1) * px, torch.full((5, 2), 4.0))
    p5_first = anchors[5 * (64 * 64 + 32 * 32)]
    assert torch.allclose((p5_first[:2] + 1) * px, torch.tensor([16.0, 16.0]))
    assert math.isclose(float(p5_first[2]) * px, 2048 * 0.2 / 16, rel_tol=1e-6)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _hand_built_outputs() -> tuple[torch.Tensor, torch.Tensor]:
    n = len(create_anchors())
    classes = torch.full((1, n, 2), -10.0)
    deltas = torch.zeros(1, n, 4)
    # P3 cell (row 10, col 20), scale 1.0 (32 px): centre (164, 84) px, moved by
    # 0.1 * (dy, dx) * 32 px with (dy, dx) = (2, -1) -> (160.8, 90.4).
    a = (10 * 64 + 20) * 5 + 4
    classes[0, a, 0] = _logit(0.9)
    deltas[0, a] = torch.tensor([2.0, -1.0, 0.0, 0.0])
    # Same cell, scale 0.8 (25.6 px), lower score: IoU 0.64 with the box above -> suppressed.
    classes[0, a - 1, 0] = _logit(0.8)
    # P5 cell (row 3, col 7), scale 0.2 (25.6 px): centre (240, 112) px; (dy, dx) = (-1.5, 0.5)
    # -> (241.28, 108.16); the score comes from class column 1.
    b = 5 * (64 * 64 + 32 * 32) + (3 * 16 + 7) * 5
    classes[0, b, 1] = _logit(0.7)
    deltas[0, b] = torch.tensor([-1.5, 0.5, 1.0, 1.0])
    # P3 cell (0, 0), scale 1.0: a 32 px box centred at (4, 4) px, clipped to the tile
    # [0, 20] x [0, 20] -> centre (10, 10), as the reference does.
    classes[0, 4, 0] = _logit(0.95)
    # Below min_score 0.4: dropped.
    classes[0, (40 * 64 + 40) * 5, 0] = _logit(0.3)
    return classes, deltas


def test_decoding_hand_built_outputs_gives_the_expected_box_centres():
    detector = RetinaNetDetector(device="cpu")
    points = detector.postprocess(_hand_built_outputs())
    assert len(points) == 1
    expected = torch.tensor([[10.0, 10.0, 0.95], [160.8, 90.4, 0.9], [241.28, 108.16, 0.7]])
    assert torch.allclose(points[0], expected, atol=1e-3)


def test_mitosis_class_score_ignores_the_second_class_column():
    detector = RetinaNetDetector(device="cpu", class_score="mitosis")
    points = detector.postprocess(_hand_built_outputs())[0]
    assert torch.allclose(points[:, 2], torch.tensor([0.95, 0.9]), atol=1e-4)


def test_nms_drops_boxes_overlapping_a_better_one_above_the_iou_threshold():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # score 0.5
            [0.0, 1.0, 10.0, 11.0],  # IoU 9/11 with box 0, score 0.9
            [0.0, 20.0, 10.0, 30.0],  # disjoint, score 0.6
            [0.0, 6.0, 10.0, 16.0],
        ]
    )  # IoU 1/3 with box 1, score 0.4
    scores = torch.tensor([0.5, 0.9, 0.6, 0.4])
    assert torch.allclose(box_iou(boxes[:1], boxes[1:2]), torch.tensor([[9 / 11]]))
    assert nms(boxes, scores, 0.4).tolist() == [1, 2, 3]
    assert nms(boxes, scores, 0.3).tolist() == [1, 2]


def test_detector_rejects_a_model_with_other_anchor_counts():
    with pytest.raises(ValueError, match="anchor scales"):
        RetinaNetDetector(RetinaNetDA(n_anchors=3), device="cpu")
