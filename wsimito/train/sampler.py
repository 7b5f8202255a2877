"""Where training patches come from: a sampler that balances domains and classes.

The scheme, drawn independently for every patch of an epoch:

1. a **domain** (e.g. a tumour type, a scanner, or a tumour type x scanner
   pair), uniformly by default, so a domain with 20 slides weighs as much as
   one with 150;
2. a **class** with the given proportions: ``"mitosis"`` (centred on an
   annotated mitotic figure), ``"lookalike"`` (on an annotated look-alike, a
   hard negative) or ``"random"`` (a random location of the image or its
   tissue); a class the domain does not have gets its share spread over the
   others, in proportion;
3. an **item**: a slide of that domain that has the class, uniformly
   (``within_domain="slides"``, the default) or weighted by how many such
   cells it holds (``"cells"``), then one of its cells uniformly;
4. a random **offset** of the patch, so that the cell is not always centred.

This is MitDet's idea of balancing data diversity (Wang et al.): rare domains
and rare classes are seen as often as common ones, and no single slide with
hundreds of figures dominates an epoch. An epoch is a fixed number of patches
(``epoch_size``), as in the MIDOG++ reference training (1,000 patches of
512 px per epoch), not a pass over all cells.

The sampler is pure bookkeeping over tables: it reads no pixels, so it can be
checked on the full MIDOG++ annotation file without the images. Epoch ``e``
is drawn from ``numpy.random.default_rng([seed, e])``, so every epoch is
reproducible on its own and resuming needs only the epoch number
(:meth:`BalancedSampler.state_dict`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

#: Patch classes, in the order of their integer codes in :attr:`Samples.cls`.
CLASSES: tuple[str, ...] = ("mitosis", "lookalike", "random")
#: Default class proportions: half the patches on figures, a quarter each on
#: look-alikes and on random locations.
DEFAULT_PROPORTIONS: dict[str, float] = {"mitosis": 0.5, "lookalike": 0.25, "random": 0.25}

DomainWeights = Literal["uniform", "slides"]
WithinDomain = Literal["slides", "cells"]
RandomIn = Literal["image", "tissue"]


@dataclass(frozen=True)
class Samples:
    """The patches of one epoch: where each is centred and why it was drawn.

    Attributes
    ----------
    slide : numpy.ndarray
        ``(N,)`` int64 positions in the sampler's ``slides`` table.
    x, y : numpy.ndarray
        ``(N,)`` float64 level-0 px of the sampled cell or random location.
    offset : numpy.ndarray
        ``(N, 2)`` float64 shift of the patch centre away from ``(x, y)``, as a
        fraction of half the patch side (each component in
        ``[-max_shift, max_shift]``); the reader turns it into px.
    cls : numpy.ndarray
        ``(N,)`` int64 index into :data:`CLASSES`.
    domain : numpy.ndarray
        ``(N,)`` int64 index into :attr:`BalancedSampler.domains`.
    cell : numpy.ndarray
        ``(N,)`` int64 row of the sampled cell in the sampler's ``cells`` table,
        -1 for random locations.
    """

    slide: np.ndarray
    x: np.ndarray
    y: np.ndarray
    offset: np.ndarray
    cls: np.ndarray
    domain: np.ndarray
    cell: np.ndarray

    def __len__(self) -> int:
        return len(self.slide)

    def __getitem__(self, index: slice | np.ndarray) -> Samples:
        """The samples at ``index`` (a slice or an index array)."""
        return Samples(
            self.slide[index],
            self.x[index],
            self.y[index],
            self.offset[index],
            self.cls[index],
            self.domain[index],
            self.cell[index],
        )


def domain_labels(table: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """One domain name per row: the values of ``columns`` joined by ``" / "`` (``"all"`` if none).

    Raises
    ------
    ValueError
        When a column is missing, naming the columns there are.
    """
    columns = list(columns)
    if not columns:
        return pd.Series("all", index=table.index, dtype=object)
    missing = [c for c in columns if c not in table]
    if missing:
        raise ValueError(
            f"domain columns {missing} are not in the slide table; it has {list(table.columns)}"
        )
    parts = [table[c].astype(str).where(table[c].notna(), "unknown") for c in columns]
    label = parts[0]
    for part in parts[1:]:
        label = label + " / " + part
    return label.astype(object)


class BalancedSampler:
    """Draw the patches of each epoch, balanced over domains and classes (see the module).

    Parameters
    ----------
    cells : pandas.DataFrame
        Annotated cells: columns ``slide`` (name), ``x``, ``y`` (level-0 px) and
        ``kind`` (``"mitosis"``, ``"lookalike"``, anything else is never sampled).
    slides : pandas.DataFrame
        One row per training slide: ``slide`` (name), ``width`` and ``height``
        (level-0 px), and the domain columns. Slides without cells take part in
        the random class.
    epoch_size : int
        Patches per epoch.
    proportions : mapping of str to float, optional
        Share of each class of :data:`CLASSES` (normalised to sum 1); missing
        classes get 0. Default :data:`DEFAULT_PROPORTIONS`.
    domains : str or sequence of str
        Slide columns that define a domain, e.g. ``"tumor_type"`` or
        ``["tumor_type", "scanner"]``; empty for one domain.
    domain_weights : {"uniform", "slides"} or mapping
        How often each domain is drawn: equally, in proportion to its number of
        slides, or given weights per domain name.
    within_domain : {"slides", "cells"}
        Pick a slide uniformly and then one of its cells, or a cell uniformly
        among the domain's cells.
    max_shift : float
        Largest offset of the patch centre from the sampled point, as a
        fraction of half the patch side, in [0, 1].
    random_in : {"image", "tissue"}
        Random locations anywhere in the image, or in tissue (needs ``tissue``).
    tissue : mapping of str to (numpy.ndarray, float), optional
        Per slide name, a boolean tissue mask and its cell size in level-0 px.
    seed : int
        Seed of every epoch's draws.

    Raises
    ------
    ValueError
        When a parameter is out of range or a table lacks a column, naming it.

    Examples
    --------
    >>> import pandas as pd
    >>> cells = pd.DataFrame({"slide": ["a", "a", "b"], "x": [10.0, 50, 70],
    ...                       "y": [20.0, 60, 80], "kind": ["mitosis", "lookalike", "mitosis"]})
    >>> slides = pd.DataFrame({"slide": ["a", "b"], "width": [100, 100], "height": [100, 100],
    ...                        "tumor_type": ["t1", "t2"]})
    >>> sampler = BalancedSampler(cells, slides, epoch_size=8, domains="tumor_type")
    >>> len(sampler.samples(0))
    8
    """

    def __init__(
        self,
        cells: pd.DataFrame,
        slides: pd.DataFrame,
        *,
        epoch_size: int,
        proportions: Mapping[str, float] | None = None,
        domains: str | Sequence[str] = (),
        domain_weights: DomainWeights | Mapping[str, float] = "uniform",
        within_domain: WithinDomain = "slides",
        max_shift: float = 0.5,
        random_in: RandomIn = "image",
        tissue: Mapping[str, tuple[np.ndarray, float]] | None = None,
        seed: int = 0,
    ) -> None:
        if isinstance(epoch_size, bool) or not isinstance(epoch_size, int) or epoch_size < 1:
            raise ValueError(f"epoch_size must be a positive number of patches, got {epoch_size!r}")
        if not 0.0 <= max_shift <= 1.0:
            raise ValueError(
                f"max_shift is a fraction of half the patch side in [0, 1], got {max_shift}"
            )
        if within_domain not in ("slides", "cells"):
            raise ValueError(f"within_domain must be 'slides' or 'cells', got {within_domain!r}")
        if random_in not in ("image", "tissue"):
            raise ValueError(f"random_in must be 'image' or 'tissue', got {random_in!r}")
        if random_in == "tissue" and tissue is None:
            raise ValueError("random_in='tissue' needs tissue masks (tissue=)")
        for column in ("slide", "width", "height"):
            if column not in slides:
                raise ValueError(
                    f"the slide table needs a {column!r} column; it has {list(slides)}"
                )
        for column in ("slide", "x", "y", "kind"):
            if column not in cells:
                raise ValueError(f"the cell table needs a {column!r} column; it has {list(cells)}")
        if len(slides) == 0:
            raise ValueError("the slide table is empty; there is nothing to sample from")
        self.epoch_size = epoch_size
        self.seed = int(seed)
        self.epoch = 0
        self.max_shift = float(max_shift)
        self.within_domain: WithinDomain = within_domain
        self.random_in: RandomIn = random_in
        self.domain_columns = [domains] if isinstance(domains, str) else list(domains)
        self.proportions = _proportions(proportions)

        self.slides = slides.reset_index(drop=True)
        names = self.slides["slide"].astype(str)
        if names.duplicated().any():
            raise ValueError(f"slide {names[names.duplicated()].iloc[0]!r} is listed twice")
        position = {name: k for k, name in enumerate(names)}
        slide_domain = domain_labels(self.slides, self.domain_columns)
        self.domains: list[str] = sorted(pd.unique(slide_domain).tolist())
        domain_code = slide_domain.map({d: k for k, d in enumerate(self.domains)}).to_numpy()
        self._slide_domain = domain_code.astype(np.int64)
        self._size = self.slides[["width", "height"]].to_numpy(dtype=np.float64)

        kinds = cells["kind"].astype(str).to_numpy()
        keep = np.isin(kinds, CLASSES[:2]) & cells["slide"].astype(str).isin(position).to_numpy()
        self.cells = cells[keep].reset_index(drop=True)
        self._cell_slide = self.cells["slide"].astype(str).map(position).to_numpy(np.int64)
        self._cell_xy = self.cells[["x", "y"]].to_numpy(dtype=np.float64)
        self._cell_cls = np.where(self.cells["kind"].astype(str).to_numpy() == "mitosis", 0, 1)
        self._cell_row = np.flatnonzero(keep)  # rows of the caller's table

        self._tissue = self._tissue_cells(tissue, names) if random_in == "tissue" else None
        self._pools = self._build_pools()
        self.domain_probabilities = self._domain_probabilities(domain_weights)
        self.class_probabilities = self._class_probabilities()

    # -- set-up -----------------------------------------------------------------
    def _tissue_cells(
        self, tissue: Mapping[str, tuple[np.ndarray, float]] | None, names: pd.Series
    ) -> list[tuple[np.ndarray, float]]:
        assert tissue is not None
        out = []
        for name in names:
            if name not in tissue:
                raise ValueError(f"random_in='tissue' but slide {name!r} has no tissue mask")
            mask, cell = tissue[name]
            rows, cols = np.nonzero(np.asarray(mask, dtype=bool))
            out.append((np.column_stack([cols, rows]).astype(np.float64), float(cell)))
        return out

    def _build_pools(self) -> dict[tuple[int, int], tuple[np.ndarray, list[np.ndarray]]]:
        """Per (domain, class): the slides that have the class and, per slide, its cell rows."""
        pools: dict[tuple[int, int], tuple[np.ndarray, list[np.ndarray]]] = {}
        for d in range(len(self.domains)):
            in_domain = np.flatnonzero(self._slide_domain == d)
            for c in (0, 1):
                rows = np.flatnonzero((self._cell_cls == c) & np.isin(self._cell_slide, in_domain))
                if len(rows) == 0:
                    continue
                order = np.argsort(self._cell_slide[rows], kind="stable")
                rows = rows[order]
                slides, starts = np.unique(self._cell_slide[rows], return_index=True)
                pools[(d, c)] = (slides, np.split(rows, starts[1:]))
            if self._tissue is not None:
                in_domain = np.array([s for s in in_domain if len(self._tissue[s][0])], np.int64)
            if len(in_domain):
                pools[(d, 2)] = (in_domain, [])
        return pools

    def _domain_probabilities(self, weights: DomainWeights | Mapping[str, float]) -> np.ndarray:
        if isinstance(weights, Mapping):
            unknown = sorted(set(weights) - set(self.domains))
            if unknown:
                raise ValueError(
                    f"domain_weights names unknown domains {unknown}; domains are {self.domains}"
                )
            w = np.array([float(weights.get(d, 0.0)) for d in self.domains])
        elif weights == "uniform":
            w = np.ones(len(self.domains))
        elif weights == "slides":
            w = np.bincount(self._slide_domain, minlength=len(self.domains)).astype(np.float64)
        else:
            raise ValueError(
                f"domain_weights must be 'uniform', 'slides' or a mapping, got {weights!r}"
            )
        usable = np.array(
            [
                any((d, c) in self._pools and self.proportions[c] > 0 for c in range(3))
                for d in range(len(self.domains))
            ]
        )
        w = np.where(usable, w, 0.0)
        if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
            raise ValueError(
                "no domain can be sampled: every domain with a positive weight lacks the "
                f"classes with a positive share ({self.proportions}); domains: {self.domains}"
            )
        return w / w.sum()

    def _class_probabilities(self) -> np.ndarray:
        """``(D, 3)``: per domain, the class shares with missing classes spread over the others."""
        table = np.zeros((len(self.domains), len(CLASSES)))
        for d in range(len(self.domains)):
            have = np.array([(d, c) in self._pools for c in range(3)])
            p = np.where(have, self.proportions, 0.0)
            if p.sum() > 0:
                table[d] = p / p.sum()
        return table

    # -- drawing ------------------------------------------------------------------
    def samples(self, epoch: int) -> Samples:
        """The ``epoch_size`` patches of epoch ``epoch`` (the same every time it is asked)."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        n = self.epoch_size
        domain = rng.choice(len(self.domains), size=n, p=self.domain_probabilities)
        cumulative = np.cumsum(self.class_probabilities[domain], axis=1)
        cls = (rng.random(n)[:, None] >= cumulative).sum(axis=1).clip(max=2)
        slide = np.zeros(n, np.int64)
        xy = np.zeros((n, 2))
        cell = np.full(n, -1, np.int64)
        u_slide, u_cell, u_pos = rng.random(n), rng.random(n), rng.random((n, 2))
        for (d, c), (slides, rows_per_slide) in self._pools.items():
            members = np.flatnonzero((domain == d) & (cls == c))
            if len(members) == 0:
                continue
            if c == 2:
                pick = slides[_index(u_slide[members], len(slides))]
                slide[members] = pick
                xy[members] = self._random_points(pick, u_pos[members], u_cell[members])
                continue
            if self.within_domain == "slides":
                k = _index(u_slide[members], len(slides))
                rows = np.array(
                    [
                        rows_per_slide[j][_index(u, len(rows_per_slide[j]))]
                        for j, u in zip(k, u_cell[members], strict=True)
                    ],
                    dtype=np.int64,
                )
            else:
                flat = np.concatenate(rows_per_slide)
                rows = flat[_index(u_cell[members], len(flat))]
            slide[members] = self._cell_slide[rows]
            xy[members] = self._cell_xy[rows]
            cell[members] = self._cell_row[rows]
        offset = rng.uniform(-self.max_shift, self.max_shift, size=(n, 2))
        return Samples(slide, xy[:, 0].copy(), xy[:, 1].copy(), offset, cls, domain, cell)

    def _random_points(self, slides: np.ndarray, u: np.ndarray, u_cell: np.ndarray) -> np.ndarray:
        if self._tissue is None:
            return u * self._size[slides]
        out = np.empty((len(slides), 2))
        for i, (s, uc) in enumerate(zip(slides, u_cell, strict=True)):
            cells, size = self._tissue[s]
            out[i] = (cells[_index(np.array([uc]), len(cells))[0]] + u[i]) * size
        return np.minimum(out, self._size[slides])

    def next_epoch(self) -> Samples:
        """The patches of :attr:`epoch`, which then advances by one."""
        samples = self.samples(self.epoch)
        self.epoch += 1
        return samples

    # -- inspection and resume ----------------------------------------------------
    def summary(self) -> pd.DataFrame:
        """Per domain: slides, mitotic figures, look-alikes, draw probability and class shares."""
        rows = []
        for d, name in enumerate(self.domains):
            in_domain = self._slide_domain[self._cell_slide] == d
            rows.append(
                {
                    "domain": name,
                    "slides": int(np.count_nonzero(self._slide_domain == d)),
                    "mitoses": int(np.count_nonzero(in_domain & (self._cell_cls == 0))),
                    "lookalikes": int(np.count_nonzero(in_domain & (self._cell_cls == 1))),
                    "p_domain": float(self.domain_probabilities[d]),
                    **{
                        f"p_{c}": float(self.class_probabilities[d, k])
                        for k, c in enumerate(CLASSES)
                    },
                }
            )
        return pd.DataFrame(rows)

    def _fingerprint(self) -> dict[str, Any]:
        return {
            "domains": list(self.domains),
            "slides": int(len(self.slides)),
            "cells": int(len(self.cells)),
            "epoch_size": self.epoch_size,
            "proportions": [float(p) for p in self.proportions],
            "max_shift": self.max_shift,
            "within_domain": self.within_domain,
            "random_in": self.random_in,
        }

    def state_dict(self) -> dict[str, Any]:
        """What resuming needs: the seed, the next epoch, and a fingerprint of the data."""
        return {"seed": self.seed, "epoch": self.epoch, "fingerprint": self._fingerprint()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict`.

        Raises
        ------
        ValueError
            When the state was made over other data or settings (naming what differs).
        """
        mine = self._fingerprint()
        theirs = dict(state.get("fingerprint", {}))
        differ = sorted(k for k in mine if theirs.get(k) != mine[k])
        if differ:
            detail = ", ".join(f"{k}: saved {theirs.get(k)!r}, now {mine[k]!r}" for k in differ)
            raise ValueError(
                f"the sampler state belongs to other data or settings ({detail}); resume with "
                "the same annotations, split and sampler settings, or start a new run"
            )
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])


def _proportions(proportions: Mapping[str, float] | None) -> np.ndarray:
    given = DEFAULT_PROPORTIONS if proportions is None else dict(proportions)
    unknown = sorted(set(given) - set(CLASSES))
    if unknown:
        raise ValueError(f"unknown patch classes {unknown}; use {list(CLASSES)}")
    p = np.array([float(given.get(c, 0.0)) for c in CLASSES])
    if (p < 0).any() or not np.isfinite(p).all() or p.sum() <= 0:
        raise ValueError(f"class proportions must be >= 0 and not all 0, got {dict(given)}")
    return p / p.sum()


def _index(u: np.ndarray, n: int) -> np.ndarray:
    """Uniform integers in ``[0, n)`` from uniforms ``u`` in ``[0, 1)``."""
    return np.minimum((np.asarray(u) * n).astype(np.int64), n - 1)


__all__ = ["CLASSES", "DEFAULT_PROPORTIONS", "BalancedSampler", "Samples", "domain_labels"]
