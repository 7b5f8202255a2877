"""Post-processing of a whole batch at once equals suppression tile by tile.

``find_peaks``, ``boxes_to_points`` and ``DarkBlobDetector`` bring a batch's
candidates to the host once and suppress there for every tile together, instead of
one device round trip per tile. The references below are the per-tile rules
(``suppress_close``, ``nms``) applied tile by tile; the batched versions must give
the same points, in the same order, for every tile.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from wsimito.models.anchors import (
    create_anchors,
    cthw_to_tlbr,
    decode_boxes,
    greedy_keep,
    grouped_greedy_keep,
    nms,
)
from wsimito.models.detectors import DarkBlobDetector, boxes_to_points
from wsimito.models.peaks import find_peaks, refine_peaks, suppress_close


def _peaks_tile_by_tile(heat, stride, min_score, min_distance):
    heat = heat[:, 0].float()
    radius = max(1, int(np.ceil(min_distance / stride)) - 1)
    pooled = F.max_pool2d(heat[:, None], 2 * radius + 1, stride=1, padding=radius)[:, 0]
    out = []
    for t in range(heat.shape[0]):
        i, j = torch.nonzero((heat[t] == pooled[t]) & (heat[t] >= min_score), as_tuple=True)
        n = torch.full_like(i, t)
        di, dj = refine_peaks(heat.clamp(min=1e-6).log(), n, i, j)
        points = torch.stack([stride * (j + dj + 0.5), stride * (i + di + 0.5), heat[t, i, j]], 1)
        out.append(suppress_close(points, min_distance))
    return out


def _smooth_random_heat(seed: int, n: int = 6, size: int = 48) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand((n, 1, size, size), generator=g)
    return F.avg_pool2d(noise, 5, stride=1, padding=2)  # many local maxima, ties unlikely


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("min_distance", [0.0, 6.0, 14.0, 30.0])
def test_find_peaks_on_a_batch_equals_suppression_tile_by_tile(seed, min_distance):
    heat = _smooth_random_heat(seed)
    heat[2] = 0.0  # a tile with no peak above the score
    got = find_peaks(heat, stride=4, min_score=0.45, min_distance=min_distance)
    want = _peaks_tile_by_tile(heat, 4, 0.45, min_distance)
    assert len(got) == len(want) == heat.shape[0]
    assert got[2].shape == (0, 3)
    assert sum(len(p) for p in got) > 20  # the case is not trivial
    for a, b in zip(got, want, strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    if min_distance > 0:  # the rule holds inside every tile
        for p in got:
            if len(p) > 1:
                d = torch.cdist(p[:, :2].double(), p[:, :2].double())
                assert (d + torch.eye(len(p)) * 1e9).min() >= min_distance


def test_grouped_greedy_keep_equals_greedy_keep_within_each_group():
    rng = np.random.default_rng(5)
    group = rng.integers(0, 7, 300)
    score = rng.choice(np.linspace(0, 1, 40), 300)  # many ties: input order must break them
    xy = rng.uniform(0, 100, (300, 2))

    def close(members: np.ndarray) -> np.ndarray:
        d = xy[members, None] - xy[None, members]
        return np.hypot(d[..., 0], d[..., 1]) < 12.0

    kept = grouped_greedy_keep(group, score, close)
    for g in range(7):
        members = np.flatnonzero(group == g)
        order = members[np.argsort(-score[members], kind="stable")]
        reference = order[greedy_keep(torch.from_numpy(close(order))).numpy()]
        assert kept[group[kept] == g].tolist() == reference.tolist()
    assert np.all(np.diff(group[kept]) >= 0)  # grouped, in group order
    assert len(grouped_greedy_keep(np.zeros(0, int), np.zeros(0), close)) == 0


def test_boxes_to_points_on_a_batch_equals_nms_tile_by_tile():
    torch.manual_seed(0)
    anchors = create_anchors()
    n = 5
    logits = torch.randn(n, len(anchors), 2) * 2.0 - 1.0
    logits[3] = -20.0  # a tile without candidates
    deltas = torch.randn(n, len(anchors), 4)
    got = boxes_to_points(logits, deltas, anchors, tile_size=512, min_score=0.6, nms_iou=0.4)
    scores = torch.sigmoid(logits).amax(dim=-1)
    assert got[3].shape == (0, 3)
    assert sum(len(p) for p in got) > 20
    for t in range(n):
        candidates = torch.nonzero(scores[t] > 0.6, as_tuple=True)[0]
        boxes = cthw_to_tlbr(decode_boxes(deltas[t, candidates], anchors[candidates]))
        boxes = boxes.clamp(-1.0, 1.0)
        keep = nms(boxes, scores[t, candidates], 0.4)
        centre = ((boxes[keep, :2] + boxes[keep, 2:]) / 2 + 1) * 256
        want = torch.stack([centre[:, 1], centre[:, 0], scores[t, candidates][keep]], 1)
        torch.testing.assert_close(got[t], want, rtol=0, atol=1e-4)


def test_dark_blobs_on_a_batch_equal_the_tiles_one_at_a_time():
    detector = DarkBlobDetector(mpp=0.5, tile_size=64, overlap=8, device="cpu")
    g = torch.Generator().manual_seed(3)
    tiles = (torch.rand((4, 3, 64, 64), generator=g) * 255).to(torch.uint8)
    tiles[1] = 255  # glass: no blob
    batch = detector.detect(tiles)
    assert batch[1].shape == (0, 3)
    assert sum(len(p) for p in batch) > 0
    for t in range(4):
        torch.testing.assert_close(batch[t], detector.detect(tiles[t : t + 1])[0])
