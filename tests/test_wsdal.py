"""WS-DAL pieces: the supervised contrastive loss against a direct implementation, the
memory's states, difficulty levels, and DMU finding flipped labels in a small learning run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from wsimito.train.wsdal import (
    EASY,
    HARD,
    MISLABELLED,
    ClassifierConfig,
    DynamicMemory,
    PatchSet,
    difficulty_levels,
    supervised_contrastive_loss,
    train_patch_classifier,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small networks train as fast on one thread, and do not stall in thread barriers
    when the CPU is shared with other work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _supcon_reference(z: np.ndarray, groups: np.ndarray, t: float) -> float:
    """Khosla et al. (2020), eq. 2, written out with loops."""
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    keep = groups >= 0
    z, groups = z[keep], groups[keep]
    losses = []
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        positives = [p for p in others if groups[p] == groups[i]]
        if not positives:
            continue
        denominator = sum(np.exp(z[i] @ z[a] / t) for a in others)
        losses.append(-np.mean([np.log(np.exp(z[i] @ z[p] / t) / denominator) for p in positives]))
    return float(np.mean(losses))


def test_supervised_contrastive_loss_matches_the_definition():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(12, 5))
    groups = np.array([0, 0, 1, 1, 1, 2, 2, 3, -1, 0, 2, 5])  # 5 has no partner, -1 sits out
    ours = supervised_contrastive_loss(torch.from_numpy(z), torch.from_numpy(groups), 0.2)
    assert float(ours) == pytest.approx(_supcon_reference(z, groups, 0.2), rel=1e-5)


def test_contrastive_loss_is_lower_when_groups_cluster():
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    clustered = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3)
    mixed = torch.tensor([[1.0, 0.0], [0.0, 1.0]] * 3)
    assert supervised_contrastive_loss(clustered, groups) < supervised_contrastive_loss(
        mixed, groups
    )


def test_memory_states_follow_the_recent_probabilities_of_the_label():
    memory = DynamicMemory(4)
    assert (memory.states() == HARD).all()
    for epoch in range(5):
        early = epoch < 2
        memory.record(
            loss=np.zeros(4),
            prob_of_label=np.array([0.95, 0.6, 0.5 if early else 0.1, 0.1 if early else 0.97]),
        )
    states = memory.states(easy_probability=0.9, mislabelled_probability=0.3, window=3)
    assert states.tolist() == [EASY, HARD, MISLABELLED, EASY]
    # over the whole memory the late learner is not easy yet
    assert memory.states(window=None)[3] == HARD
    assert memory.losses.shape == (4, 5)


def test_difficulty_levels_order_hard_samples_by_loss():
    rng = np.random.default_rng(0)
    n = 40
    labels = np.repeat([0, 1], n // 2)
    high = rng.uniform(0, 1, n) < 0.5
    trajectories = np.where(high[:, None], 2.0, 0.5) + rng.normal(0, 0.05, (n, 6))
    states = np.full(n, HARD)
    states[:3] = EASY
    states[3] = MISLABELLED
    levels = difficulty_levels(trajectories, labels, states, levels=2, seed=0)
    assert levels[:3].tolist() == [0, 0, 0] and levels[3] == -1
    hard = states == HARD
    assert (levels[hard & high] == 2).all() and (levels[hard & ~high] == 1).all()


def _blob_patches(n: int = 360, size: int = 20, seed: int = 0) -> PatchSet:
    """Compact dark blobs (label 1) against rings (label 0) on noisy pale background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    images = np.clip(rng.normal(200, 20, (n, size, size, 3)), 0, 255)
    labels = rng.integers(0, 2, n)
    for i in range(n):
        r = rng.uniform(2.5, 4.0)
        cx, cy = size / 2 + rng.uniform(-1, 1, 2)
        d = np.hypot(xx - cx, yy - cy)
        if labels[i]:
            images[i][d < r] = (60, 30, 110)
        else:
            images[i][(d < r + 1.5) & (d > r)] = (120, 80, 160)
    tensor = torch.from_numpy(images.round().astype(np.uint8)).permute(0, 3, 1, 2).contiguous()
    cells = pd.DataFrame({"slide": [f"s{i % 4}" for i in range(n)], "x": 0.0, "y": 0.0})
    return PatchSet(tensor, torch.from_numpy(labels), cells)


def test_dmu_flags_flipped_labels():
    clean = _blob_patches()
    noisy, flipped = clean.with_flipped_labels(0.2, seed=1)
    assert flipped.sum() == 72 and (noisy.labels != clean.labels).sum() == 72
    config = ClassifierConfig(
        mpp=1.0,
        patch_size=16,
        margin=2,
        max_shift_px=1,
        width=4,
        epochs=7,
        batch_size=48,
        epoch_size=360,
        lr=1e-2,
        dmu_warmup=3,
    )
    trained = train_patch_classifier(noisy, config, device="cpu")
    flagged = trained.flagged
    precision = (flagged & flipped).sum() / max(1, flagged.sum())
    recall = (flagged & flipped).sum() / flipped.sum()
    assert precision >= 0.7 and recall >= 0.7, (precision, recall)
    # the memory holds one row per epoch and the flagged samples sit out of the contrast
    assert trained.memory.losses.shape == (len(noisy), config.epochs)
    assert (trained.levels[flagged] == -1).all()
    assert set(trained.history.columns) >= {"epoch", "ce", "supcon", "mislabelled"}


def test_switches_off_leave_no_memory():
    patches = _blob_patches(n=64)
    config = ClassifierConfig(
        mpp=1.0,
        patch_size=16,
        margin=2,
        max_shift_px=1,
        width=4,
        epochs=1,
        batch_size=32,
        dmu=False,
        dle=False,
        csdgl=False,
        augment=False,
    )
    trained = train_patch_classifier(patches, config, device="cpu")
    assert len(trained.memory) == 0
    assert (trained.history["supcon"] == 0).all()


def test_config_from_dict_names_unknown_keys():
    assert ClassifierConfig.from_dict({"dmu": False}).dmu is False
    with pytest.raises(ValueError, match="unknown classifier settings.*'dmu_on'"):
        ClassifierConfig.from_dict({"dmu_on": True})
    with pytest.raises(ValueError, match="max_shift_px"):
        ClassifierConfig(margin=2, max_shift_px=4)


def test_wrong_patch_size_is_refused():
    patches = _blob_patches(n=8)
    with pytest.raises(ValueError, match="needs 80 px"):
        train_patch_classifier(patches, ClassifierConfig(), device="cpu")
