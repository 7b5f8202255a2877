"""Device augmentation: points move exactly with the pixels, FDA swaps amplitudes only,
stain operations keep structure, everything is seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _marks import MarkDetector, draw_marks
from PIL import Image

from wsimito.stain.fda import low_frequencies
from wsimito.train.augment import (
    AmplitudeBank,
    Augmenter,
    Dihedral,
    DomainFDA,
    GaussianBlur,
    HEDStainJitter,
    JPEGArtefacts,
    StainMatrixJitter,
    Zoom,
)

SIZE = 96


def _dot_batch(n: int, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``n`` white images, each with one dark disc (radius 6 px) at a random sub-pixel spot."""
    rng = np.random.default_rng(seed)
    images, points = [], []
    for _ in range(n):
        p = rng.uniform(16, SIZE - 16, size=(1, 2))
        images.append(torch.from_numpy(draw_marks(SIZE, SIZE, p, 6.0)).permute(2, 0, 1))
        points.append(torch.tensor([[p[0, 0], p[0, 1], 7.0]], dtype=torch.float32))  # + a class
    return torch.stack(images), points


def _found(images: torch.Tensor) -> np.ndarray:
    """Centre of the one dark disc of each image, px (continuous convention)."""
    detector = MarkDetector(tile_size=images.shape[-1])
    return np.stack([d[0, :2].numpy() for d in detector.detect(images)])


def test_flips_and_rotations_move_points_exactly_with_the_pixels():
    images, _ = _dot_batch(16)
    # the found disc centres (not the drawn ones, which anti-aliasing blurs by ~0.01 px)
    points = [torch.tensor([[x, y, 7.0]]) for x, y in _found(images)]
    aug = Augmenter([Dihedral(p=1.0)], seed=4)
    out, moved = aug(images, points)
    assert out.dtype == torch.uint8
    expected = np.stack([p[0, :2].numpy() for p in moved])
    np.testing.assert_allclose(_found(out), expected, atol=1e-3)
    # all 8 symmetries occur over a few batches, and the extra column travels unchanged
    seen = set()
    for _ in range(6):
        out, moved = aug(images, points)
        for a, b in zip(out, images, strict=True):
            seen.add(tuple(int(torch.equal(a, t)) for t in _symmetries(b)).index(1))
        assert all(float(m[0, 2]) == 7.0 for m in moved)
    assert seen == set(range(8))


def _symmetries(image: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for t in (False, True):
        x = image.transpose(-1, -2) if t else image
        out += [x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2)]
    return out


def test_zoom_moves_points_with_the_pixels():
    images, points = _dot_batch(8, seed=1)
    out, moved = Augmenter([Zoom(max_change=0.15, p=1.0)], seed=2)(images.float(), points)
    expected = np.stack([p[0, :2].numpy() for p in moved])
    assert np.abs(expected - np.stack([p[0, :2].numpy() for p in points])).max() > 1.0
    np.testing.assert_allclose(
        _found(out.round().clamp(0, 255).to(torch.uint8)), expected, atol=0.15
    )
    assert float(out[:, :, 0, 0].min()) > 250  # corners stay glass-white


def test_blur_keeps_points_and_p0_is_identity():
    images, points = _dot_batch(6, seed=2)
    out, moved = Augmenter([GaussianBlur(sigma=(1.0, 2.0), p=1.0)], seed=0)(images, points)
    assert not torch.equal(out, images)
    np.testing.assert_allclose(_found(out), _found(images), atol=0.05)
    same, _ = Augmenter([GaussianBlur(p=0.0), JPEGArtefacts(p=0.0)], seed=0)(images, points)
    assert torch.equal(same, images)


def _he_patches(n: int, size: int = 64) -> torch.Tensor:
    from wsimito.data import fetch

    image = np.asarray(Image.open(fetch("images/he-target-tiatoolbox.png")).convert("RGB"))
    crops = [image[i * 100 : i * 100 + size, i * 90 : i * 90 + size] for i in range(n)]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()


def test_fda_takes_amplitudes_of_another_domain_and_keeps_the_phase():
    patches = _he_patches(4).float()
    # a bank of two domains: domain 0 reddish, domain 1 bluish versions of the patches
    red = patches * torch.tensor([1.0, 0.7, 0.8]).view(1, 3, 1, 1)
    blue = patches * torch.tensor([0.7, 0.8, 1.0]).view(1, 3, 1, 1)
    beta = 0.05  # b = 3 on 64 px
    bank = AmplitudeBank.from_patches(torch.cat([red[:1], blue[:1]]), [0, 1], beta=beta)
    assert bank.b == 3
    source = patches[1:3]
    domains = torch.tensor([0, 1])
    out, _ = Augmenter([DomainFDA(bank, beta=beta, p=1.0)], seed=0)(
        source, [torch.zeros(0, 2)] * 2, domains
    )
    b = bank.b
    spec_in, spec_out = low_frequencies(source.double(), b), low_frequencies(out.double(), b)
    # image of domain 0 gets domain 1's amplitudes and vice versa
    np.testing.assert_allclose(spec_out[0].abs(), bank.amplitudes[1].double(), rtol=1e-4)
    np.testing.assert_allclose(spec_out[1].abs(), bank.amplitudes[0].double(), rtol=1e-4)
    phase_in, phase_out = torch.angle(spec_in), torch.angle(spec_out)
    diff = torch.remainder(phase_out - phase_in + torch.pi, 2 * torch.pi) - torch.pi
    assert float(diff.abs().max()) < 1e-3
    # outside the low-frequency square the spectrum is untouched
    full_in, full_out = torch.fft.fft2(source.double()), torch.fft.fft2(out.double())
    k = torch.fft.fftfreq(64, 1 / 64).abs()
    outside = torch.maximum(k[:, None], k[None, :]) > b
    np.testing.assert_allclose(
        full_out[..., outside].abs(), full_in[..., outside].abs(), rtol=1e-5, atol=0.05
    )
    assert not torch.allclose(out, source)


def test_fda_bank_must_match_patch_size_and_beta():
    bank = AmplitudeBank.from_patches(_he_patches(2), [0, 1], beta=0.02)
    with pytest.raises(ValueError, match="beta up to 0.1"):
        DomainFDA(bank, beta=(0.0, 0.1))
    with pytest.raises(ValueError, match="built on"):
        DomainFDA(bank, beta=0.01)(torch.zeros(1, 3, 32, 32), [], torch.Generator(), None)


def test_stain_matrix_jitter_recomposes_exactly_without_noise_and_changes_colour_with_it():
    patches = _he_patches(4)
    still, _ = Augmenter([StainMatrixJitter(0.0, 0.0, p=1.0)], seed=0)(
        patches, [torch.zeros(0, 2)] * 4
    )
    assert int((still.int() - patches.int()).abs().max()) <= 1
    changed, _ = Augmenter([StainMatrixJitter(0.1, 0.3, p=1.0)], seed=0)(
        patches, [torch.zeros(0, 2)] * 4
    )
    delta = (changed.float() - patches.float()).abs().mean(dim=(1, 2, 3))
    assert (delta > 2).all()
    # structure is kept: the grey levels stay strongly correlated
    a, b = patches.float().mean(1).flatten(1), changed.float().mean(1).flatten(1)
    corr = [np.corrcoef(x, y)[0, 1] for x, y in zip(a.numpy(), b.numpy(), strict=True)]
    assert min(corr) > 0.9
    # a blank (glass) image has no tissue and is left alone
    blank = torch.full((1, 3, 64, 64), 245, dtype=torch.uint8)
    out, _ = Augmenter([StainMatrixJitter(0.1, 0.3, p=1.0)], seed=0)(blank, [torch.zeros(0, 2)])
    assert torch.equal(out, blank)


def test_full_chain_is_seeded_and_resumable():
    patches = _he_patches(4)
    bank = AmplitudeBank.from_patches(patches, [0, 0, 1, 1], beta=0.02)

    def chain(seed: int) -> Augmenter:
        return Augmenter(
            [
                Dihedral(),
                Zoom(0.1, p=0.5),
                StainMatrixJitter(p=0.5),
                HEDStainJitter(p=0.5),
                DomainFDA(bank, beta=(0.0, 0.02), p=0.5),
                GaussianBlur(p=0.5),
                JPEGArtefacts(p=0.5),
            ],
            seed=seed,
        )

    points = [torch.tensor([[10.0, 20.0, 1.0]])] * 4
    domains = [0, 0, 1, 1]
    a, b = chain(5), chain(5)
    first, _ = a(patches, points, domains)
    assert torch.equal(first, b(patches, points, domains)[0])
    assert not torch.equal(first, chain(6)(patches, points, domains)[0])
    state = a.state_dict()
    next_a, pts_a = a(patches, points, domains)
    b.load_state_dict(state)
    next_b, pts_b = b(patches, points, domains)
    assert torch.equal(next_a, next_b)
    assert all(torch.equal(p, q) for p, q in zip(pts_a, pts_b, strict=True))
    assert not torch.equal(next_a, first)
