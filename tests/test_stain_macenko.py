"""Macenko normalization: agreement with torchstain, behaviour on real and empty
tiles, fitting on a whole slide, saving and devices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchstain
from _stain_helpers import colour_distance, recolour
from PIL import Image

import wsimito
from wsimito.data import fetch
from wsimito.errors import EmptyTissueError
from wsimito.stain import Macenko, Reinhard
from wsimito.stain.base import masked_percentile

# Level-0 (x, y) of 512 px CMU tiles with 20-80 % tissue (optical density >= 0.15).
CMU_TILES = [(1024, 0), (1024, 512), (512, 1024), (1536, 1024), (1024, 2048)]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle between corresponding columns of two stain matrices, in degrees."""
    a = a / np.linalg.norm(a, axis=0)
    b = b / np.linalg.norm(b, axis=0)
    return np.degrees(np.arccos(np.clip((a * b).sum(axis=0), -1, 1)))


@pytest.fixture(scope="module")
def he_image() -> np.ndarray:
    return np.asarray(Image.open(fetch("images/he-target-tiatoolbox.png")).convert("RGB"))


@pytest.fixture(scope="module")
def cmu_slide():
    with wsimito.open_slide(fetch("slides/cmu-1-small-region.svs")) as slide:
        yield slide


@pytest.fixture(scope="module")
def cmu_tiles(cmu_slide) -> np.ndarray:
    return np.stack([cmu_slide.read_region(xy, 0, (512, 512)) for xy in CMU_TILES])


@pytest.fixture(scope="module")
def fitted(he_image):
    reference = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    reference.fit(he_image)
    return Macenko().fit(he_image), reference


def test_fit_matches_torchstain(fitted):
    ours, reference = fitted
    np.testing.assert_allclose(ours.stain_matrix.numpy(), reference.HERef, atol=2e-3)
    np.testing.assert_allclose(ours.max_concentrations.numpy(), reference.maxCRef, rtol=1e-3)


@pytest.fixture(scope="module")
def normalized_target(fitted, he_image) -> np.ndarray:
    return fitted[0](he_image)


def test_normalized_target_matches_torchstain(fitted, he_image, normalized_target):
    _, reference = fitted
    expected, _, _ = reference.normalize(he_image, stains=False)
    assert np.abs(normalized_target.astype(float) - expected).mean() < 2.0


def test_batched_cmu_tiles_match_torchstain_per_tile(fitted, cmu_tiles):
    ours, reference = fitted
    batch = torch.from_numpy(cmu_tiles).permute(0, 3, 1, 2)
    out = ours(batch).permute(0, 2, 3, 1).numpy().astype(float)
    sampled, _, valid = ours.estimate(batch)  # 16384 pixels per tile
    exact, _, _ = Macenko(n_samples=None).estimate(batch)  # every pixel
    assert valid.all()
    for i, tile in enumerate(cmu_tiles):
        expected, _, _ = reference.normalize(tile, stains=False)
        assert np.abs(out[i] - expected).mean() < 2.0
        own = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
        own.fit(tile)
        assert angles_deg(exact[i].numpy(), own.HERef).max() < 0.1
        assert angles_deg(sampled[i].numpy(), own.HERef).max() < 3.0


def test_normalizing_the_target_to_itself_changes_it_little(he_image, normalized_target):
    assert np.abs(normalized_target.astype(float) - he_image).mean() < 3.0
    assert colour_distance(normalized_target[::2, ::2], he_image[::2, ::2]) < 4.0


def test_recoloured_copy_moves_back_towards_the_target(he_image):
    target = np.ascontiguousarray(he_image[::2, ::2])
    copy = recolour(target)
    before = colour_distance(copy, target)
    after = colour_distance(Macenko().fit(target)(copy), target)
    assert before > 5.0
    assert after < 0.7 * before


def test_background_tiles_stay_light_and_do_not_disturb_the_batch(fitted, cmu_tiles):
    ours, _ = fitted
    white = np.full((512, 512, 3), 255, np.uint8)
    glass = np.full((512, 512, 3), 236, np.uint8)
    batch = np.stack([white, cmu_tiles[1], glass])
    out = ours(batch)
    assert out[0].min() >= 245
    assert np.abs(out[2].astype(int) - 236).max() <= 8
    np.testing.assert_array_equal(out[1], ours(cmu_tiles[1]))


def test_masked_percentiles_match_numpy():
    rng = np.random.default_rng(0)
    qs = [0.0, 1.0, 37.0, 50.0, 99.0, 100.0]
    for size in (1, 2, 7, 1000):
        values = torch.from_numpy(rng.normal(size=(3, size)))
        mask = torch.from_numpy(rng.random((3, size)) < 0.6)
        got = masked_percentile(values, mask, qs).numpy()
        for row in range(3):
            kept = values[row][mask[row]].numpy()
            expected = np.percentile(kept, qs) if kept.size else np.full(len(qs), np.inf)
            np.testing.assert_allclose(got[row], expected)
        np.testing.assert_allclose(
            masked_percentile(values, None, qs).numpy(), np.percentile(values.numpy(), qs, axis=1).T
        )


def test_reference_without_tissue_raises():
    with pytest.raises(EmptyTissueError, match="tissue"):
        Macenko().fit(np.full((256, 256, 3), 250, np.uint8))
    assert issubclass(EmptyTissueError, ValueError)


def test_fit_on_a_slide_samples_its_tissue(cmu_slide):
    from wsimito.tissue import detect_tissue

    tissue = detect_tissue(cmu_slide)
    whole = cmu_slide.read((0, 0, *cmu_slide.dimensions))
    cell = tissue.mpp / cmu_slide.mpp
    rows = (np.arange(whole.shape[0]) // cell).astype(int)
    cols = (np.arange(whole.shape[1]) // cell).astype(int)
    inside = tissue.mask[rows[:, None], cols[None, :]]
    expected = Macenko().fit(whole[inside][None])
    from_slide = Macenko().fit(cmu_slide, tissue=tissue)
    assert angles_deg(from_slide.stain_matrix.numpy(), expected.stain_matrix.numpy()).max() < 1.5
    np.testing.assert_allclose(
        from_slide.max_concentrations.numpy(), expected.max_concentrations.numpy(), rtol=0.05
    )


def test_fit_on_a_slide_with_an_empty_mask_raises(cmu_slide):
    from wsimito.tissue import Tissue

    empty = Tissue.full(cmu_slide)
    empty.mask[:] = False
    with pytest.raises(EmptyTissueError, match="no tissue"):
        Macenko().fit(cmu_slide, tissue=empty)


def test_saved_parameters_load_and_transform_identically(fitted, cmu_tiles, tmp_path):
    ours, _ = fitted
    path = tmp_path / "macenko.pt"
    ours.save(path)
    loaded = Macenko.load(path)
    np.testing.assert_array_equal(loaded(cmu_tiles[:2]), ours(cmu_tiles[:2]))
    fresh = Macenko().load_state_dict(ours.state_dict())
    np.testing.assert_array_equal(fresh(cmu_tiles[:1]), ours(cmu_tiles[:1]))
    with pytest.raises(ValueError, match="Macenko"):
        Reinhard.load(path)


@pytest.mark.parametrize("device", DEVICES)
def test_output_keeps_type_layout_and_device(fitted, cmu_tiles, device):
    ours, _ = fitted
    batch = torch.from_numpy(cmu_tiles[:2]).permute(0, 3, 1, 2).to(device)
    out = ours.to(device)(batch)
    assert out.device == batch.device and out.dtype == torch.uint8 and out.shape == batch.shape
    np.testing.assert_array_equal(out.permute(0, 2, 3, 1).cpu().numpy(), ours(cmu_tiles[:2]))
    ours.to("cpu")
