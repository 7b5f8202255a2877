"""Reinhard (CIELAB statistics) and Vahadane (sparse non-negative factorization in torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _stain_helpers import colour_distance, recolour
from PIL import Image
from scipy.optimize import minimize
from skimage.color import lab2rgb, rgb2lab

from wsimito.data import fetch
from wsimito.errors import EmptyTissueError
from wsimito.stain import Reinhard, Vahadane
from wsimito.stain.reinhard import lab_to_rgb, rgb_to_lab
from wsimito.stain.vahadane import learn_stains, nonnegative_lasso

NORMALIZERS = [Reinhard, Vahadane]


@pytest.fixture(scope="module")
def he_image() -> np.ndarray:
    return np.asarray(Image.open(fetch("images/he-target-tiatoolbox.png")).convert("RGB"))


@pytest.fixture(scope="module")
def target(he_image) -> np.ndarray:
    """The target at half resolution (500 x 500 px), to keep the tests quick."""
    return np.ascontiguousarray(he_image[::2, ::2])


@pytest.fixture(scope="module", params=NORMALIZERS, ids=lambda c: c.__name__)
def fitted(request, target):
    return request.param().fit(target)


def test_lab_conversion_matches_scikit_image_and_inverts():
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    lab = rgb_to_lab(x)
    np.testing.assert_allclose(lab[0].permute(1, 2, 0).numpy(), rgb2lab(rgb), atol=1e-3)
    np.testing.assert_allclose(lab_to_rgb(lab).numpy(), x.float().numpy(), atol=1e-2)
    np.testing.assert_allclose(
        lab_to_rgb(lab)[0].permute(1, 2, 0).numpy() / 255, lab2rgb(rgb2lab(rgb)), atol=1e-4
    )


def test_reinhard_gives_the_reference_tissue_statistics(he_image, target):
    norm = Reinhard().fit(he_image)
    out = norm(recolour(target))
    lab = rgb2lab(out).reshape(-1, 3)
    tissue = lab[:, 0] < norm.tissue_lightness
    np.testing.assert_allclose(lab[tissue].mean(axis=0), norm.target_mean.numpy(), atol=2.0)
    np.testing.assert_allclose(lab[tissue].std(axis=0), norm.target_std.numpy(), rtol=0.1)


def test_nonnegative_lasso_is_optimal():
    rng = np.random.default_rng(1)
    stains = torch.nn.functional.normalize(torch.rand(1, 3, 2, dtype=torch.float64), dim=1)
    od = torch.from_numpy(rng.uniform(0, 2, (1, 3, 40)))
    conc = nonnegative_lasso(stains, od, 0.1)
    w, y = stains[0].numpy(), od[0].numpy()

    def objective(c, j):
        return 0.5 * np.sum((y[:, j] - w @ c) ** 2) + 0.1 * c.sum()

    for j in range(40):
        best = minimize(
            objective,
            np.ones(2),
            args=(j,),
            bounds=[(0, None)] * 2,
            method="L-BFGS-B",
            options={"ftol": 1e-14, "gtol": 1e-12},
        )
        assert (conc[0, :, j].numpy() >= 0).all()
        assert objective(conc[0, :, j].numpy(), j) <= best.fun + 1e-9


def test_vahadane_recovers_known_stains_from_a_synthetic_image():
    rng = np.random.default_rng(2)
    true = np.array([[0.60, 0.20], [0.75, 0.85], [0.28, 0.49]])
    true /= np.linalg.norm(true, axis=0)
    n = 20000
    conc = np.zeros((2, n))
    kind = rng.integers(0, 3, n)  # haematoxylin, eosin, or both
    conc[0, kind != 1] = rng.uniform(0.2, 1.5, (kind != 1).sum())
    conc[1, kind != 0] = rng.uniform(0.2, 1.0, (kind != 0).sum())
    pixels = np.clip(255 * np.exp(-true @ conc), 0, 255).round()
    od = -torch.log(torch.from_numpy(pixels).clamp_min(1)[None] / 255)
    learnt = learn_stains(od, torch.ones(1, n, dtype=torch.bool), sparsity=0.1, iterations=40)[0]
    cosines = (learnt.numpy() * true).sum(axis=0)
    assert np.degrees(np.arccos(np.clip(cosines, -1, 1))).max() < 3.0


@pytest.mark.parametrize("normalizer", NORMALIZERS, ids=lambda c: c.__name__)
def test_normalizing_an_image_to_itself_changes_it_little(normalizer, target):
    out = normalizer().fit(target)(target)
    assert np.abs(out.astype(float) - target).mean() < 4.0
    assert colour_distance(out, target) < 4.0


def test_recoloured_copy_moves_back_towards_the_target(fitted, target):
    copy = recolour(target)
    before = colour_distance(copy, target)
    after = colour_distance(fitted(copy), target)
    assert before > 5.0
    assert after < 0.85 * before


def test_white_tiles_stay_white_and_do_not_disturb_the_batch(fitted, target):
    white = np.full_like(target, 255)
    out = fitted(np.stack([white, target]))
    assert out[0].min() >= 250
    np.testing.assert_array_equal(out[1], fitted(target))


@pytest.mark.parametrize("normalizer", NORMALIZERS, ids=lambda c: c.__name__)
def test_reference_without_tissue_raises(normalizer):
    with pytest.raises(EmptyTissueError, match="tissue"):
        normalizer().fit(np.full((128, 128, 3), 245, np.uint8))


@pytest.mark.parametrize("normalizer", NORMALIZERS, ids=lambda c: c.__name__)
def test_unfitted_normalizer_says_to_fit(normalizer, target):
    with pytest.raises(RuntimeError, match="fit"):
        normalizer()(target)


def test_saved_parameters_load_and_transform_identically(fitted, target, tmp_path):
    path = tmp_path / "stain.pt"
    fitted.save(path)
    loaded = type(fitted).load(path)
    assert loaded.state_dict().keys() == fitted.state_dict().keys()
    batch = torch.from_numpy(target[:128, :128].copy()).permute(2, 0, 1)[None]
    assert torch.equal(loaded(batch), fitted(batch))
