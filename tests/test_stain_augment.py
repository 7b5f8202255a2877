"""Augmentation: HED jitter perturbs stain concentrations per image as drawn; random
FDA picks targets, sizes and skips per image; both reproduce with a seeded generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from wsimito.data import fetch
from wsimito.stain import HEDJitter, RandomFDA, fda
from wsimito.stain.augment import RGB_FROM_HED


@pytest.fixture(scope="module")
def tiles() -> torch.Tensor:
    image = np.asarray(Image.open(fetch("images/he-target-tiatoolbox.png")).convert("RGB"))
    x = torch.from_numpy(image.copy()).permute(2, 0, 1)
    return torch.stack(
        [x[:, :128, :128], x[:, 400:528, 300:428], x[:, 800:928, 800:928], x[:, 200:328, 700:828]]
    )


def hed(batch: torch.Tensor) -> torch.Tensor:
    """Ruifrok HED concentrations (N, 3, P) of a uint8 batch, OD = -log((I + 1) / 256)."""
    od = -torch.log((batch.reshape(*batch.shape[:2], -1).double() + 1) / 256)
    return torch.linalg.inv(RGB_FROM_HED.double().T) @ od


def test_hed_jitter_without_spread_is_the_identity(tiles):
    assert torch.equal(HEDJitter(sigma=0.0, bias=0.0)(tiles), tiles)


def test_hed_jitter_scales_and_shifts_each_images_concentrations_as_drawn(tiles):
    jitter = HEDJitter(sigma=0.2, bias=0.05)
    scale, shift = jitter.draw(len(tiles), torch.Generator().manual_seed(7))
    out = jitter(tiles, generator=torch.Generator().manual_seed(7))
    before, after = hed(tiles), hed(out)
    unclipped = ((out > 3) & (out < 252)).all(dim=1).reshape(len(tiles), -1)
    for i in range(len(tiles)):
        for s in range(3):
            c_in = before[i, s, unclipped[i]].numpy()
            c_out = after[i, s, unclipped[i]].numpy()
            slope, intercept = np.polyfit(c_in, c_out, 1)
            assert slope == pytest.approx(float(scale[i, s]), abs=0.02)
            assert intercept == pytest.approx(float(shift[i, s]), abs=0.01)
    assert ((scale >= 0.8) & (scale <= 1.2)).all() and (shift.abs() <= 0.05).all()


def test_hed_jitter_is_reproducible_and_differs_between_images(tiles):
    same = tiles[:1].repeat(6, 1, 1, 1)
    jitter = HEDJitter(sigma=0.1, bias=0.02)
    first = jitter(same, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first, jitter(same, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(first, jitter(same, generator=torch.Generator().manual_seed(1)))
    assert len({first[i].numpy().tobytes() for i in range(6)}) == 6


def test_hed_jitter_keeps_white_white_and_numpy_layout():
    white = np.full((2, 16, 16, 3), 255, np.uint8)
    out = HEDJitter(sigma=0.3, bias=0.0)(white, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, np.ndarray) and out.shape == white.shape
    np.testing.assert_array_equal(out, white)


def test_random_fda_with_certain_application_equals_fda(tiles):
    target = tiles[2]
    aug = RandomFDA(target, beta=0.02, p=1.0)
    out = aug(tiles, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, fda(tiles, target, 0.02))


def test_random_fda_skips_images_and_reproduces_with_a_seed(tiles):
    batch = tiles.repeat(4, 1, 1, 1)
    aug = RandomFDA([tiles[2], tiles[3].flip(0)], beta=(0.0, 0.05), p=0.5)
    out = aug(batch, generator=torch.Generator().manual_seed(4))
    assert torch.equal(out, aug(batch, generator=torch.Generator().manual_seed(4)))
    unchanged = (out == batch).flatten(1).all(dim=1)
    assert 0 < int(unchanged.sum()) < len(batch)
    assert torch.equal(RandomFDA(tiles[2], p=0.0)(batch), batch)


def test_random_fda_rejects_bad_settings(tiles):
    with pytest.raises(ValueError, match="low <= high"):
        RandomFDA(tiles[0], beta=(0.05, 0.01))
    with pytest.raises(ValueError, match="probability"):
        RandomFDA(tiles[0], p=1.5)
