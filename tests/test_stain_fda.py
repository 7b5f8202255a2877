"""Fourier domain adaptation: agreement with Yang & Soatto's published algorithm,
phase preservation, identity, batching, banks of targets, layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _oracles import fda_reference_numpy
from PIL import Image

from wsimito.data import fetch
from wsimito.stain import FDA, fda


@pytest.fixture(scope="module")
def he_image() -> np.ndarray:
    return np.asarray(Image.open(fetch("images/he-target-tiatoolbox.png")).convert("RGB"))


@pytest.fixture(scope="module")
def pair(he_image):
    """A non-square source and a differently coloured target of the same size."""
    source = np.ascontiguousarray(he_image[:192, :256])
    target = np.ascontiguousarray(he_image[600:792, 500:756, ::-1])
    return source, target


@pytest.mark.parametrize("beta", [0.0, 0.01, 0.05, 0.2])
def test_fda_matches_published_reference(pair, beta):
    source, target = pair
    expected = fda_reference_numpy(source, target, beta)
    as_float = fda(source.astype(np.float64), target.astype(np.float64), beta)
    np.testing.assert_allclose(as_float, expected, atol=1e-6)
    as_uint8 = fda(source, target, beta).astype(np.int16)
    rounded = np.clip(np.round(expected), 0, 255)
    assert np.abs(as_uint8 - rounded).max() <= 1
    assert np.abs(as_uint8 - rounded).mean() < 0.01


def test_beta_zero_swaps_the_mean_colour_only(pair):
    source, target = pair
    out = fda(source.astype(np.float64), target.astype(np.float64), 0.0)
    np.testing.assert_allclose(out.mean(axis=(0, 1)), target.mean(axis=(0, 1)), atol=1e-9)
    np.testing.assert_allclose(
        out - out.mean(axis=(0, 1)), source - source.mean(axis=(0, 1)), atol=1e-9
    )


def test_source_as_its_own_target_returns_the_input(he_image):
    batch = torch.from_numpy(he_image[:256, :256].copy()).permute(2, 0, 1)[None].repeat(2, 1, 1, 1)
    batch[1] = batch[1].flip(-1)
    assert torch.equal(fda(batch, batch, 0.05), batch)


def test_result_keeps_the_source_phase_and_takes_the_target_amplitude(pair):
    source, target = pair
    beta = 0.05
    out = fda(source.astype(np.float64), target.astype(np.float64), beta)
    spec_o, spec_s, spec_t = (
        np.fft.fft2(a.astype(np.float64), axes=(0, 1)) for a in (out, source, target)
    )
    meaningful = np.abs(spec_s) > 1e-6 * np.abs(spec_s).max()
    phase_gap = np.angle(spec_o[meaningful] * np.conj(spec_s[meaningful]))
    assert np.abs(phase_gap).max() < 1e-6
    h, w = source.shape[:2]
    b = int(min(h, w) * beta)
    k_y = np.abs(np.fft.fftfreq(h) * h)[:, None]
    k_x = np.abs(np.fft.fftfreq(w) * w)[None, :]
    square = np.broadcast_to((k_y <= b) & (k_x <= b), (h, w))
    np.testing.assert_allclose(np.abs(spec_o)[square], np.abs(spec_t)[square], rtol=1e-7, atol=1e-6)
    np.testing.assert_allclose(
        np.abs(spec_o)[~square], np.abs(spec_s)[~square], rtol=1e-7, atol=1e-6
    )


def test_batched_equals_one_by_one(he_image):
    x = torch.from_numpy(he_image.copy()).permute(2, 0, 1)
    sources = torch.stack([x[:, :256, :256], x[:, 500:756, :256], x[:, :256, 600:856]])
    targets = torch.stack([x[:, 700:956, 700:956], x[:, 300:556, 300:556], x[:, 100:356, 740:996]])
    together = fda(sources, targets, 0.02)
    for i in range(3):
        assert torch.equal(together[i : i + 1], fda(sources[i : i + 1], targets[i : i + 1], 0.02))
    one_target = fda(sources, targets[:1], 0.02)
    assert torch.equal(one_target, fda(sources, targets[:1].expand(3, -1, -1, -1), 0.02))


def test_layouts_come_back_as_they_went_in(pair):
    source, target = pair
    single = fda(source, target)
    assert (
        isinstance(single, np.ndarray) and single.shape == source.shape and single.dtype == np.uint8
    )
    stacked = fda(np.stack([source, source]), target)
    assert stacked.shape == (2, *source.shape)
    np.testing.assert_array_equal(stacked[1], single)
    chw = torch.from_numpy(source.copy()).permute(2, 0, 1)
    as_tensor = fda(chw, target)
    assert as_tensor.shape == chw.shape and as_tensor.dtype == torch.uint8
    np.testing.assert_array_equal(as_tensor.permute(1, 2, 0).numpy(), single)


def test_uniform_white_tile_takes_the_target_mean_colour_without_nan(pair):
    _, target = pair
    white = np.full_like(target, 255)
    out = fda(white.astype(np.float64), target.astype(np.float64), 0.05)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, np.broadcast_to(target.mean(axis=(0, 1)), out.shape), atol=1e-6)


def test_target_of_another_size_is_resized_to_the_source(he_image):
    source = np.ascontiguousarray(he_image[:128, :128])
    small = np.ascontiguousarray(he_image[500:628, 500:628, ::-1])
    large = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)
    same_size = fda(source, small, 0.05).astype(np.int16)
    resized = fda(source, large, 0.05).astype(np.int16)
    assert np.abs(same_size - resized).mean() < 1.0


def test_bank_draws_one_target_per_image_reproducibly(he_image):
    source = np.ascontiguousarray(he_image[:128, :128])
    targets = [
        np.ascontiguousarray(he_image[400:528, 400:528, order])
        for order in ([0, 1, 2], [2, 1, 0], [1, 0, 2])
    ]
    bank = FDA(targets, beta=0.02)
    batch = np.stack([source] * 12)
    out = bank(batch, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(out, bank(batch, generator=torch.Generator().manual_seed(3)))
    singles = [fda(source, t, 0.02) for t in targets]
    used = set()
    for image in out:
        matches = [k for k, s in enumerate(singles) if np.array_equal(image, s)]
        assert len(matches) == 1
        used.add(matches[0])
    assert len(used) > 1


def test_bad_arguments_raise_clear_errors(pair):
    source, target = pair
    with pytest.raises(ValueError, match="beta"):
        fda(source, target, beta=0.5)
    with pytest.raises(ValueError, match="one per source"):
        fda(np.stack([source] * 3), np.stack([target] * 2))
    with pytest.raises(TypeError, match="uint8"):
        FDA(target).__call__(source.astype(np.int32))
    with pytest.raises(ValueError, match="shape"):
        fda(source[..., :2], target)
