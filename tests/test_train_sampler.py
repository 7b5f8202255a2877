"""The balanced patch sampler: domains, class shares, determinism and resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wsimito.train.sampler import CLASSES, BalancedSampler


def _tables(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Three domains of very different sizes; domain "c" has no look-alikes; one big slide."""
    rng = np.random.default_rng(seed)
    slides = pd.DataFrame(
        {
            "slide": [f"s{k}.tiff" for k in range(13)],
            "width": [4000] * 13,
            "height": [3000] * 13,
            "tumor_type": ["a"] * 10 + ["b"] * 2 + ["c"],
        }
    )
    rows = []
    for k, name in enumerate(slides["slide"]):
        n_mit = 400 if k == 0 else 5  # slide 0 alone holds most of domain a's figures
        n_look = 0 if name == "s12.tiff" else 7
        for kind, n in (("mitosis", n_mit), ("lookalike", n_look)):
            xy = rng.uniform([0, 0], [4000, 3000], size=(n, 2))
            rows += [{"slide": name, "x": x, "y": y, "kind": kind} for x, y in xy]
    rows.append({"slide": "s1.tiff", "x": 5.0, "y": 5.0, "kind": "other"})
    rows.append({"slide": "test.tiff", "x": 10.0, "y": 10.0, "kind": "mitosis"})  # not training
    return pd.DataFrame(rows), slides


def _within(count: int, n: int, p: float) -> bool:
    """``count`` out of ``n`` is within 5 binomial standard deviations of ``n * p``."""
    return abs(count - n * p) <= 5 * np.sqrt(n * p * (1 - p)) + 1


def test_every_domain_equally_and_class_shares_as_requested():
    cells, slides = _tables()
    proportions = {"mitosis": 0.5, "lookalike": 0.3, "random": 0.2}
    sampler = BalancedSampler(
        cells, slides, epoch_size=9000, proportions=proportions, domains="tumor_type", seed=3
    )
    s = sampler.samples(0)
    assert sampler.domains == ["a", "b", "c"]
    n = len(s)
    for d in range(3):
        assert _within(np.count_nonzero(s.domain == d), n, 1 / 3)
    for d in (0, 1):  # domains with look-alikes get the requested shares
        members = s.domain == d
        m = int(members.sum())
        for c, name in enumerate(CLASSES):
            assert _within(np.count_nonzero(s.cls[members] == c), m, proportions[name])
    # domain c has no look-alikes: their share is spread over the others in proportion
    members = s.domain == 2
    assert np.count_nonzero(s.cls[members] == 1) == 0
    assert _within(np.count_nonzero(s.cls[members] == 0), int(members.sum()), 0.5 / 0.7)
    # the sampled cells are what they claim to be, on training slides only
    picked = s.cell[s.cls < 2]
    assert set(cells.loc[picked, "kind"]) == {"mitosis", "lookalike"}
    assert (cells.loc[picked, "kind"].to_numpy() == np.array(CLASSES)[s.cls[s.cls < 2]]).all()
    assert "test.tiff" not in set(cells.loc[picked, "slide"])
    np.testing.assert_array_equal(cells.loc[picked, "x"].to_numpy(), s.x[s.cls < 2])
    np.testing.assert_array_equal(
        slides["slide"].to_numpy()[s.slide[s.cls < 2]], cells.loc[picked, "slide"].to_numpy()
    )


def test_slides_not_cells_are_balanced_within_a_domain():
    cells, slides = _tables()
    by_slide = BalancedSampler(
        cells, slides, epoch_size=6000, proportions={"mitosis": 1}, domains="tumor_type"
    )
    by_cell = BalancedSampler(
        cells,
        slides,
        epoch_size=6000,
        proportions={"mitosis": 1},
        domains="tumor_type",
        within_domain="cells",
    )
    a = by_slide.samples(0)
    share_big = np.mean(a.slide[a.domain == 0] == 0)
    assert _within(
        int(share_big * np.count_nonzero(a.domain == 0)), np.count_nonzero(a.domain == 0), 0.1
    )
    b = by_cell.samples(0)
    assert np.mean(b.slide[b.domain == 0] == 0) > 0.8  # 400 of the domain's 445 figures


def test_random_locations_and_offsets_stay_in_bounds():
    cells, slides = _tables()
    sampler = BalancedSampler(
        cells, slides, epoch_size=2000, proportions={"random": 1}, max_shift=0.3, seed=1
    )
    s = sampler.samples(5)
    assert (s.cls == 2).all() and (s.cell == -1).all()
    assert (s.x >= 0).all() and (s.x <= 4000).all() and (s.y >= 0).all() and (s.y <= 3000).all()
    assert np.abs(s.offset).max() <= 0.3 and np.abs(s.offset).max() > 0.25
    assert len(np.unique(s.slide)) == 13  # slides without look-alikes and cells take part


def test_random_locations_in_tissue():
    cells, slides = _tables()
    mask = np.zeros((30, 40), bool)
    mask[10:12, 20:25] = True  # cells of 100 level-0 px
    tissue = {name: (mask, 100.0) for name in slides["slide"]}
    sampler = BalancedSampler(
        cells, slides, epoch_size=500, proportions={"random": 1}, random_in="tissue", tissue=tissue
    )
    s = sampler.samples(0)
    assert (s.x >= 2000).all() and (s.x <= 2500).all()
    assert (s.y >= 1000).all() and (s.y <= 1200).all()


def test_deterministic_per_epoch_and_resumable():
    cells, slides = _tables()
    kwargs = {"epoch_size": 300, "domains": ["tumor_type"], "seed": 7}
    first = BalancedSampler(cells, slides, **kwargs)
    e0, e1 = first.next_epoch(), first.next_epoch()
    again = BalancedSampler(cells, slides, **kwargs).samples(0)
    np.testing.assert_array_equal(e0.x, again.x)
    np.testing.assert_array_equal(e0.offset, again.offset)
    assert not np.array_equal(e0.x, e1.x)
    state = first.state_dict()
    resumed = BalancedSampler(cells, slides, **kwargs)
    resumed.load_state_dict(state)
    np.testing.assert_array_equal(resumed.next_epoch().x, first.next_epoch().x)
    other = BalancedSampler(cells, slides, **{**kwargs, "epoch_size": 200})
    with pytest.raises(ValueError, match="epoch_size"):
        other.load_state_dict(state)


def test_bad_settings_name_the_parameter():
    cells, slides = _tables()
    with pytest.raises(ValueError, match="unknown patch classes"):
        BalancedSampler(cells, slides, epoch_size=10, proportions={"mitoses": 1})
    with pytest.raises(ValueError, match="epoch_size"):
        BalancedSampler(cells, slides, epoch_size=0)
    with pytest.raises(ValueError, match="scanner"):
        BalancedSampler(cells, slides, epoch_size=10, domains="scanner")
    with pytest.raises(ValueError, match="no domain can be sampled"):
        BalancedSampler(
            cells[cells["kind"] == "mitosis"], slides, epoch_size=10, proportions={"lookalike": 1}
        )
    with pytest.raises(ValueError, match="unknown domains"):
        BalancedSampler(cells, slides, epoch_size=10, domains="tumor_type", domain_weights={"z": 1})
