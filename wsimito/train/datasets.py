"""Training patches from annotated slides or region-of-interest images.

A :class:`PatchDataset` holds a table of annotated cells (the layout of
:meth:`wsimito.Annotations.to_frame`: ``slide``, ``x``, ``y`` in level-0 px,
``label``, ``kind`` and per-slide metadata such as ``tumor_type``,
``scanner``, ``split``, ``width``, ``height``), finds each slide's image, and
reads patches for the samples a :class:`~wsimito.train.sampler.BalancedSampler`
draws:

- pixels come through :class:`wsimito.reader.TileReader`, the reader of
  :func:`wsimito.count_mitoses`: at the detector's mpp, from the best pyramid
  level, resampled on the device; no whole image is ever loaded;
- the slides of one batch are read in parallel by ``num_workers`` threads,
  each slide's patches by one reader;
- open slides are kept in a least-recently-used cache of at most
  ``max_open`` handles, so hundreds of slides never exhaust file handles and
  a slide read again soon is not reopened;
- the targets of a patch are the annotated cells inside it (plus a margin), in
  patch px, with their kind.

Every check runs when the dataset is made, so bad data fails before training
starts, with the file and the entry named: a missing image, an unreadable
image, a cell outside its image, an unknown class.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch

from ..classes import LOOKALIKE_NAMES, MITOSIS_NAMES
from ..errors import WsimitoError
from ..reader import ReadPlan, TileReader
from ..slide import Slide, open_slide
from .sampler import Samples

if TYPE_CHECKING:
    from ..io.annotation_set import Annotations

#: Integer code of each cell kind in :attr:`PatchBatch.points`.
KIND_CODES = {"mitosis": 0, "lookalike": 1}
#: How far (level-0 px) a cell may lie outside its image before it is an error: half a
#: MIDOG box, as :func:`wsimito.read_annotations` allows.
DEFAULT_MARGIN_PX = 25.0
#: Cells up to this many patch px outside a patch are still returned as its targets
#: (a figure cut by the border still shapes the heatmap there).
TARGET_MARGIN_PX = 32.0

#: Bound, bytes, of the decoded-tile cache of each slide held open for training patches.
PATCH_TILE_CACHE_BYTES = 8 * 2**20

ImageSource = str | os.PathLike[str] | Slide
Images = str | os.PathLike[str] | Mapping[str, ImageSource]
UnknownClasses = Literal["error", "ignore"]


class TrainingDataError(WsimitoError, ValueError):
    """Training data are unusable; the message names the file and the entry."""


@dataclass
class PatchBatch:
    """Patches read for a batch of samples, with their targets.

    Attributes
    ----------
    pixels : torch.Tensor
        uint8 ``(N, 3, patch_size, patch_size)`` RGB on the dataset's device.
    points : list of torch.Tensor
        Per patch, ``(K, 3)`` float32: x, y in patch px (continuous convention)
        and the kind code (:data:`KIND_CODES`) of each annotated cell in the
        patch or within :data:`TARGET_MARGIN_PX` of it.
    samples : Samples
        The samples these patches were read for.
    corners : numpy.ndarray
        ``(N, 2)`` level-0 px of each patch's top-left pixel edge.
    scales : numpy.ndarray
        ``(N,)`` level-0 px per patch px: patch point ``(u, v)`` lies at
        ``corners[k] + (u, v) * scales[k]``.
    """

    pixels: torch.Tensor
    points: list[torch.Tensor]
    samples: Samples
    corners: np.ndarray
    scales: np.ndarray

    def __len__(self) -> int:
        return len(self.points)


class SlideCache:
    """Open slides, reused: at most ``max_open`` idle handles, least recently used closed first.

    Parameters
    ----------
    opener : callable
        ``opener(k)`` opens slide ``k`` and returns a :class:`~wsimito.slide.Slide`.
    max_open : int
        Idle handles kept open; handles in use by reader threads come on top.
    """

    def __init__(self, opener: Callable[[int], Slide], max_open: int = 64) -> None:
        if max_open < 1:
            raise ValueError(f"max_open must be a positive number of slides, got {max_open}")
        self._opener = opener
        self.max_open = int(max_open)
        self._idle: OrderedDict[int, list[Slide]] = OrderedDict()
        self._lock = threading.Lock()
        self.opened = 0

    def acquire(self, k: int) -> Slide:
        """Lend a handle on slide ``k`` that no other thread uses until :meth:`release`.

        Parameters
        ----------
        k : int
            The slide's index (as ``opener`` takes it).

        Returns
        -------
        Slide
            An idle cached handle, or a newly opened one.
        """
        with self._lock:
            handles = self._idle.get(k)
            if handles:
                self._idle.move_to_end(k)
                return handles.pop()
        handle = self._opener(k)
        with self._lock:
            self.opened += 1
        return handle

    def release(self, k: int, handle: Slide) -> None:
        """Give a handle back; the least recently used idle handles beyond ``max_open`` close.

        Parameters
        ----------
        k : int
            The slide's index.
        handle : Slide
            A handle from :meth:`acquire` for slide ``k``.
        """
        closing = []
        with self._lock:
            self._idle.setdefault(k, []).append(handle)
            self._idle.move_to_end(k)
            while sum(len(v) for v in self._idle.values()) > self.max_open:
                oldest, handles = next(iter(self._idle.items()))
                closing.append(handles.pop(0))
                if not handles:
                    del self._idle[oldest]
        for h in closing:
            h.close()

    def forget(self, k: int, handle: Slide) -> None:
        """Take ``handle`` out of the idle handles, if it is there (it is closed elsewhere).

        Parameters
        ----------
        k : int
            The slide's index.
        handle : Slide
            A handle of slide ``k``.
        """
        with self._lock:
            handles = self._idle.get(k, [])
            if handle in handles:
                handles.remove(handle)
                if not handles:
                    del self._idle[k]

    @property
    def idle(self) -> int:
        """Idle open handles."""
        with self._lock:
            return sum(len(v) for v in self._idle.values())

    def close(self) -> None:
        """Close every idle handle."""
        with self._lock:
            handles = [h for v in self._idle.values() for h in v]
            self._idle.clear()
        for h in handles:
            h.close()


class _Borrowed:
    """A cached handle lent to a reader thread: ``close()`` gives it back to the cache.

    :class:`~wsimito.reader.TileReader` closes the handles it opened when it is done.
    """

    def __init__(self, cache: SlideCache, k: int) -> None:
        self._cache, self._k = cache, k
        self.handle = cache.acquire(k)
        self._lent = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)

    def close(self) -> None:
        if self._lent:
            self._lent = False
            self._cache.release(self._k, self.handle)

    def discard(self) -> None:
        """Close the handle for good (a read through it failed)."""
        if self._lent:
            self._lent = False
        else:
            self._cache.forget(self._k, self.handle)
        self.handle.close()


class _Lease:
    """A slide as :class:`~wsimito.reader.TileReader` sees it, made of cached handles.

    Metadata come from one cached handle, ``reopen()`` lends further cached
    handles, and :meth:`close` returns all.

    The reader runs one thread, which asks for a second handle only after a
    read failed: the handle lent before is then closed rather than cached again.
    """

    def __init__(self, cache: SlideCache, k: int) -> None:
        self._base = _Borrowed(cache, k)
        self._cache, self._k = cache, k
        self._lent: list[_Borrowed] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)

    def reopen(self) -> _Borrowed:
        for failed in self._lent:
            failed.discard()
        self._lent = [_Borrowed(self._cache, self._k)]
        return self._lent[0]

    def close(self) -> None:
        for borrowed in [*self._lent, self._base]:
            borrowed.close()
        self._lent = []


def cell_kinds(labels: pd.Series) -> np.ndarray:
    """Classify class names as ``"mitosis"``, ``"lookalike"`` or ``"other"``.

    The default name sets decide (:data:`wsimito.classes.MITOSIS_NAMES`,
    :data:`wsimito.classes.LOOKALIKE_NAMES`), ignoring case and repeated spaces.

    Parameters
    ----------
    labels : pandas.Series
        Class names, one per cell.

    Returns
    -------
    numpy.ndarray
        The kind of each cell, strings.

    Examples
    --------
    >>> import pandas as pd
    >>> cell_kinds(pd.Series(["Mitotic figure", "hard negative", "tumour cell"])).tolist()
    ['mitosis', 'lookalike', 'other']
    """
    key = labels.astype(str).str.split().str.join(" ").str.lower()
    return np.where(
        key.isin(MITOSIS_NAMES),
        "mitosis",
        np.where(key.isin(LOOKALIKE_NAMES), "lookalike", "other"),
    )


def slide_table(cells: pd.DataFrame, slides: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per slide: the given ``slides`` table, else the per-slide columns of ``cells``.

    A column counts as per-slide when it has one value per slide in ``cells``
    (``x``, ``y``, ``label``, ``kind``, ``score`` and ``id`` never do).

    Parameters
    ----------
    cells : pandas.DataFrame
        One row per annotated cell, with a ``slide`` column.
    slides : pandas.DataFrame, optional
        One row per slide with a ``slide`` column; slides that only ``cells``
        names are added to it.

    Returns
    -------
    pandas.DataFrame
        One row per slide, ``slide`` (str) first.

    Raises
    ------
    TrainingDataError
        ``slides`` has no ``slide`` column.

    Examples
    --------
    >>> import pandas as pd
    >>> cells = pd.DataFrame(
    ...     {"slide": ["a", "a", "b"], "x": [1.0, 2.0, 3.0], "y": [4.0, 5.0, 6.0],
    ...      "scanner": ["S1", "S1", "S2"]}
    ... )
    >>> slide_table(cells)
      slide scanner
    0     a      S1
    1     b      S2
    """
    if slides is not None:
        table = slides.copy()
        if "slide" not in table:
            raise TrainingDataError(f"the slide table needs a 'slide' column; it has {list(table)}")
        table["slide"] = table["slide"].astype(str)
        extra = sorted(set(cells["slide"].astype(str)) - set(table["slide"]))
        if extra:
            table = pd.concat([table, pd.DataFrame({"slide": extra})], ignore_index=True)
        return table.drop_duplicates("slide").reset_index(drop=True)
    cell_columns = {"slide", "x", "y", "label", "kind", "score", "id"}
    names = cells["slide"].astype(str)
    groups = cells.assign(slide=names).groupby("slide", sort=False)
    keep = [
        c
        for c in cells.columns
        if c not in cell_columns and bool((groups[c].nunique(dropna=False) <= 1).all())
    ]
    return groups[keep].first().reset_index() if keep else pd.DataFrame({"slide": pd.unique(names)})


class PatchDataset:
    """Annotated slides or ROI images, read as training patches at a target mpp.

    Parameters
    ----------
    cells : pandas.DataFrame
        One row per annotated cell in the layout of
        :meth:`wsimito.Annotations.to_frame`: ``slide`` (image file name),
        ``x``, ``y`` (level-0 px), ``label`` and, optionally, ``kind``
        (``"mitosis"`` / ``"lookalike"`` / ``"other"``; computed from ``label``
        with the default class names when absent), ``id`` and per-slide columns
        (``width``, ``height`` px, ``mpp`` µm/px, ``tumor_type``, ``scanner``,
        ``split``, ...).
    images : str, os.PathLike or mapping
        A folder that holds every slide's image under its ``slide`` name, or a
        mapping from slide name to a path or an open :class:`~wsimito.slide.Slide`.
    mpp : float
        Resolution of the patches, µm/px (the detector's).
    patch_size : int
        Side of the patches, px at ``mpp``.
    slides : pandas.DataFrame, optional
        One row per slide (``slide`` plus metadata), so that slides without any
        annotated cell are known too (e.g. :attr:`wsimito.Annotations.slide_info`).
        Default: the per-slide columns of ``cells``.
    slide_mpp : float, optional
        Level-0 resolution, µm/px, for images whose file carries none (the
        file's own value wins, see :func:`wsimito.open_slide`).
    margin_px : float
        How far (level-0 px) a cell may lie outside its image.
    unknown_classes : {"error", "ignore"}
        What to do with cells whose kind is neither mitosis nor look-alike.
    max_open : int
        Idle slide handles kept open (:class:`SlideCache`).
    num_workers : int
        Threads reading the slides of a batch in parallel.
    device : str or torch.device
        Where the patches are delivered (and resampled).
    source : str
        Where the annotations came from, for messages.

    Raises
    ------
    TrainingDataError
        A missing or unreadable image, an image without a resolution, a cell
        outside its image, an unknown class, or an empty table; the message
        names the file and the entry.
    """

    def __init__(
        self,
        cells: pd.DataFrame,
        images: Images,
        *,
        mpp: float,
        patch_size: int,
        slides: pd.DataFrame | None = None,
        slide_mpp: float | None = None,
        margin_px: float = DEFAULT_MARGIN_PX,
        unknown_classes: UnknownClasses = "error",
        max_open: int = 64,
        num_workers: int = 4,
        device: str | torch.device = "cpu",
        source: str = "annotations",
    ) -> None:
        if not mpp > 0:
            raise ValueError(f"mpp must be a positive number of µm/px, got {mpp!r}")
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 8:
            raise ValueError(f"patch_size must be an int of at least 8 px, got {patch_size!r}")
        if unknown_classes not in ("error", "ignore"):
            raise ValueError(
                f"unknown_classes must be 'error' or 'ignore', got {unknown_classes!r}"
            )
        if num_workers < 1:
            raise ValueError(f"num_workers must be a positive number of threads, got {num_workers}")
        self.mpp, self.patch_size = float(mpp), int(patch_size)
        self.source = str(source)
        self.device = torch.device(device)
        self.num_workers = int(num_workers)
        self._images = images
        self._slide_mpp = slide_mpp
        self.cells = self._checked_cells(cells, unknown_classes)
        self.slides = slide_table(self.cells, slides)
        if len(self.slides) == 0:
            raise TrainingDataError(f"{self.source}: no slides to train on (the table is empty)")
        self._paths = [self._resolve(name) for name in self.slides["slide"]]
        self.cache = SlideCache(self._open_for_patches, max_open)
        self._plans: list[ReadPlan] = []
        self._inspect_slides(margin_px)
        names = {name: k for k, name in enumerate(self.slides["slide"])}
        codes = self.cells["kind"].map(KIND_CODES).to_numpy()
        by_slide = self.cells["slide"].map(names).to_numpy()
        xy = self.cells[["x", "y"]].to_numpy(np.float64)
        self._targets = [
            (xy[by_slide == k], codes[by_slide == k].astype(np.float32))
            for k in range(len(self.slides))
        ]
        self._pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="wsimito-patches")

    @classmethod
    def from_annotations(
        cls, annotations: Annotations, images: Images, **kwargs: Any
    ) -> PatchDataset:
        """Make a dataset over the cells of a :class:`wsimito.Annotations`.

        Its ``to_frame()`` gives the cells, its per-slide table (where it has
        one) the slides, and its source file the name used in messages.

        Parameters
        ----------
        annotations : wsimito.Annotations
            Annotated cells, e.g. from :func:`wsimito.read_annotations`.
        images : str, os.PathLike or mapping
            As for :class:`PatchDataset`.
        **kwargs
            The other parameters of :class:`PatchDataset` (``mpp`` and
            ``patch_size`` are required).

        Returns
        -------
        PatchDataset
            The dataset, checked.
        """
        kwargs.setdefault("slides", getattr(annotations, "slide_info", None))
        kwargs.setdefault("source", getattr(annotations, "source", "") or "annotations")
        return cls(annotations.to_frame(), images, **kwargs)

    # -- checks ---------------------------------------------------------------------
    def _entry(self, cells: pd.DataFrame, row: int) -> str:
        ident = f"id {cells['id'].iloc[row]}" if "id" in cells else f"row {cells.index[row]}"
        return f"entry {ident} (slide {cells['slide'].iloc[row]!r})"

    def _checked_cells(self, cells: pd.DataFrame, unknown: UnknownClasses) -> pd.DataFrame:
        missing = [c for c in ("slide", "x", "y") if c not in cells]
        if missing or ("label" not in cells and "kind" not in cells):
            raise TrainingDataError(
                f"{self.source}: the cell table needs columns slide, x, y and label (or kind); "
                f"it has {list(cells.columns)}"
            )
        cells = cells.copy()
        cells["slide"] = cells["slide"].astype(str)
        if "kind" not in cells:
            cells["kind"] = cell_kinds(cells["label"])
        xy = cells[["x", "y"]].to_numpy(np.float64)
        bad = ~np.isfinite(xy).all(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise TrainingDataError(
                f"{self.source}: {self._entry(cells, row)} has no finite position ({xy[row]})"
            )
        other = ~cells["kind"].isin(list(KIND_CODES))
        if other.any() and unknown == "error":
            row = int(np.flatnonzero(other.to_numpy())[0])
            label = cells["label"].iloc[row] if "label" in cells else cells["kind"].iloc[row]
            names = pd.unique(cells.loc[other, "label" if "label" in cells else "kind"]).tolist()
            raise TrainingDataError(
                f"{self.source}: {self._entry(cells, row)} has the class {label!r}, which is "
                f"neither a mitotic figure nor a look-alike ({int(other.sum())} cells of classes "
                f"{names[:8]}). Name its kind when reading (read_annotations(..., "
                "mitosis_names=..., lookalike_names=...)) or drop such cells "
                "(unknown_classes='ignore'; data.unknown_classes = \"ignore\" in a config)"
            )
        return cells[~other]

    def _resolve(self, name: str) -> ImageSource:
        images = self._images
        if isinstance(images, Mapping):
            if name not in images:
                raise TrainingDataError(
                    f"{self.source}: slide {name!r} ({self._count(name)}) has no entry in the "
                    "image mapping; add it, or select the slides you have"
                )
            source = images[name]
        else:
            source = Path(images) / name
        if not isinstance(source, Slide) and not Path(source).exists():
            raise TrainingDataError(
                f"{self.source}: the image of slide {name!r} ({self._count(name)}) is missing: "
                f"{source} does not exist. Download it, point the images folder at it, or "
                "select the slides you have"
            )
        return source

    def _count(self, name: str) -> str:
        rows = self.cells[self.cells["slide"] == name]
        if len(rows) == 0:
            return "no annotated cells"
        return f"{len(rows)} annotated cells, first {self._entry(rows, 0)}"

    def _open(self, k: int) -> Slide:
        source = self._paths[k]
        if isinstance(source, Slide):
            return source.reopen()
        return open_slide(source, mpp=self._slide_mpp)

    def _open_for_patches(self, k: int) -> Slide:
        """Open a handle for the patch cache, with a small decoded-tile cache.

        Random patches rarely reuse file tiles and many slides stay open at once.
        """
        handle = self._open(k)
        tiles = getattr(handle, "tile_cache", None)
        if tiles is not None:
            tiles.max_bytes = min(tiles.max_bytes, PATCH_TILE_CACHE_BYTES)
        return handle

    def _inspect_slides(self, margin_px: float) -> None:
        """Open every slide once: size, resolution, read plan; cells inside their image."""
        widths, heights, mpps = [], [], []
        for k, name in enumerate(self.slides["slide"]):
            try:
                handle = self._open(k)
            except WsimitoError as exc:
                raise TrainingDataError(f"{self.source}: slide {name!r}: {exc}") from exc
            except Exception as exc:  # any reader failure
                raise TrainingDataError(
                    f"{self.source}: the image of slide {name!r} ({self._paths[k]}) cannot be "
                    f"opened: {type(exc).__name__}: {exc}"
                ) from exc
            try:
                try:
                    slide_mpp = handle.mpp
                except WsimitoError as exc:
                    raise TrainingDataError(
                        f"{self.source}: slide {name!r}: {exc} (in a training config: data.mpp)"
                    ) from exc
                width, height = handle.dimensions
                self._plans.append(ReadPlan.for_slide(handle, self.mpp, self.patch_size))
            finally:
                handle.close()
            self._check_size(k, width, height)
            widths.append(width)
            heights.append(height)
            mpps.append(slide_mpp)
            self._check_inside(k, width, height, margin_px)
        self.slides["width"] = widths
        self.slides["height"] = heights
        self.slides["mpp"] = mpps

    def _check_size(self, k: int, width: int, height: int) -> None:
        """The image must have the size the annotations give for it (where they give one)."""
        if not {"width", "height"} <= set(self.slides):
            return
        given = self.slides.loc[k, ["width", "height"]]
        if given.isna().any():
            return
        if abs(float(given["width"]) - width) > 1 or abs(float(given["height"]) - height) > 1:
            raise TrainingDataError(
                f"{self.source}: slide {self.slides['slide'][k]!r} is "
                f"{float(given['width']):g} x {float(given['height']):g} px in the annotations, "
                f"but its image {self._paths[k]} is {width} x {height} px at level 0; check "
                "that the image belongs to the annotations"
            )

    def _check_inside(self, k: int, width: int, height: int, margin: float) -> None:
        name = self.slides["slide"][k]
        rows = self.cells[self.cells["slide"] == name]
        x, y = rows["x"].to_numpy(), rows["y"].to_numpy()
        bad = (x < -margin) | (y < -margin) | (x > width + margin) | (y > height + margin)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise TrainingDataError(
                f"{self.source}: {self._entry(rows, row)} lies at ({x[row]:g}, {y[row]:g}) "
                f"level-0 px, outside its {width} x {height} px image {self._paths[k]} by more "
                f"than {margin:g} px ({int(bad.sum())} such cells). Check that the image belongs "
                "to the annotations (same scan, level 0)"
            )

    # -- reading --------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of slides."""
        return len(self.slides)

    def side_px(self, k: int) -> float:
        """Side of a patch in level-0 px of slide ``k``.

        Parameters
        ----------
        k : int
            The slide's index.

        Returns
        -------
        float
            ``patch_size`` times the slide's level-0 px per patch px.
        """
        return self.patch_size * self._plans[k].scale

    def corners(self, samples: Samples) -> np.ndarray:
        """Place the patches of ``samples`` on their slides.

        Parameters
        ----------
        samples : Samples
            Points and offsets (from :class:`~wsimito.train.sampler.BalancedSampler`).

        Returns
        -------
        numpy.ndarray
            ``(N, 2)`` level-0 px of the patches' top-left corners: centred on
            each sample's point, shifted by its offset, kept inside the image
            where it is larger than a patch, and snapped to whole pixels of the
            level that is read.
        """
        side = np.array([self.side_px(k) for k in samples.slide])
        step = np.array([self._plans[k].downsample for k in samples.slide])
        size = self.slides[["width", "height"]].to_numpy(np.float64)[samples.slide]
        centre = np.column_stack([samples.x, samples.y]) + samples.offset * (side / 2)[:, None]
        corner = np.clip(centre - (side / 2)[:, None], 0.0, np.maximum(size - side[:, None], 0.0))
        snapped: np.ndarray = np.round(corner / step[:, None]) * step[:, None]
        return snapped

    def read(self, samples: Samples) -> PatchBatch:
        """Read the patches of ``samples`` and their targets.

        Parameters
        ----------
        samples : Samples
            The patches to read (slide indices into this dataset).

        Returns
        -------
        PatchBatch
            The uint8 pixels on :attr:`device`, targets in patch px, corners
            and scales in level-0 px.
        """
        n, size = len(samples), self.patch_size
        corners = self.corners(samples)
        pixels = torch.empty((n, 3, size, size), dtype=torch.uint8, device=self.device)
        out_corners, scales = np.zeros((n, 2)), np.zeros(n)
        groups = [np.flatnonzero(samples.slide == k) for k in np.unique(samples.slide)]

        def read_group(members: np.ndarray) -> None:
            k = int(samples.slide[members[0]])
            lease = _Lease(self.cache, k)
            try:
                reader = TileReader(
                    # a Slide by duck typing: one cached handle's metadata, and reopen()
                    lease,  # type: ignore[arg-type]
                    corners[members],
                    mpp=self.mpp,
                    tile_size=size,
                    batch_size=len(members),
                    device=self.device,
                    num_workers=1,
                )
                for batch in reader:
                    where = members[batch.index]
                    pixels[torch.as_tensor(where, device=self.device)] = batch.pixels
                    out_corners[where] = batch.corners
                    scales[where] = batch.scale
            finally:
                lease.close()

        for future in [self._pool.submit(read_group, g) for g in groups]:
            future.result()
        points = [
            self._patch_targets(int(k), c, s)
            for k, c, s in zip(samples.slide, out_corners, scales, strict=True)
        ]
        return PatchBatch(pixels, points, samples, out_corners, scales)

    def _patch_targets(self, k: int, corner: np.ndarray, scale: float) -> torch.Tensor:
        xy, codes = self._targets[k]
        uv = (xy - corner) / scale
        inside = ((uv > -TARGET_MARGIN_PX) & (uv < self.patch_size + TARGET_MARGIN_PX)).all(axis=1)
        return torch.from_numpy(np.column_stack([uv[inside], codes[inside]]).astype(np.float32))

    def batches(self, samples: Samples, batch_size: int, prefetch: int = 2) -> Iterator[PatchBatch]:
        """Read consecutive batches of ``samples``, ahead of use, in a background thread.

        Parameters
        ----------
        samples : Samples
            The patches of an epoch, in order.
        batch_size : int
            Patches per batch; the last batch may be smaller.
        prefetch : int
            Batches read ahead and waiting at most; 0 reads each when asked.

        Yields
        ------
        PatchBatch
            The next batch (see :meth:`read`).
        """
        starts = range(0, len(samples), batch_size)
        if prefetch < 1:
            for start in starts:
                yield self.read(samples[start : start + batch_size])
            return
        box: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=prefetch)
        stop = threading.Event()

        def produce() -> None:
            try:
                for start in starts:
                    if stop.is_set():
                        return
                    box.put(("batch", self.read(samples[start : start + batch_size])))
                box.put(("done", None))
            except BaseException as exc:  # handed to the consumer
                box.put(("error", exc))

        worker = threading.Thread(target=produce, name="wsimito-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                kind, item = box.get()
                if kind == "done":
                    return
                if kind == "error":
                    raise item
                yield item
        finally:
            stop.set()
            while worker.is_alive():
                with contextlib.suppress(queue.Empty):
                    box.get(timeout=0.05)
            worker.join()

    # -- whole images (validation and test) ------------------------------------------
    def truth(self, k: int, kind: Literal["mitosis", "lookalike"] = "mitosis") -> np.ndarray:
        """The annotated cells of one kind on slide ``k``.

        Parameters
        ----------
        k : int
            The slide's index.
        kind : {"mitosis", "lookalike"}
            Which cells.

        Returns
        -------
        numpy.ndarray
            ``(M, 2)`` x, y in level-0 px.
        """
        xy, codes = self._targets[k]
        cells: np.ndarray = xy[codes == KIND_CODES[kind]]
        return cells

    def open(self, k: int) -> Slide:
        """Open a fresh handle on slide ``k`` (the caller closes it).

        Parameters
        ----------
        k : int
            The slide's index.

        Returns
        -------
        Slide
            A new handle, outside the cache.
        """
        return self._open(k)

    def close(self) -> None:
        """Stop the reader threads and close every cached slide handle."""
        self._pool.shutdown(wait=True)
        self.cache.close()

    def __repr__(self) -> str:
        kinds = self.cells["kind"].value_counts()
        return (
            f"<PatchDataset {len(self.slides)} slides, {kinds.get('mitosis', 0)} mitotic figures, "
            f"{kinds.get('lookalike', 0)} look-alikes; {self.patch_size} px at {self.mpp:g} µm/px>"
        )


__all__ = [
    "DEFAULT_MARGIN_PX",
    "KIND_CODES",
    "PatchBatch",
    "PatchDataset",
    "SlideCache",
    "TrainingDataError",
    "cell_kinds",
    "slide_table",
]
