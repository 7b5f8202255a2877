"""The in-memory form of annotated cells: :class:`Annotations`, and its error type.

Every reader (MIDOG COCO JSON, SlideRunner SQLite, QuPath GeoJSON, a folder
of images with one CSV each) returns an :class:`Annotations`;
:func:`wsimito.io.annotations.read_annotations` picks the reader from the
file. Import both from :mod:`wsimito.io.annotations` (or ``wsimito``); this
module exists so that the readers can build the class without importing the
dispatcher that imports them. One row per
annotated cell: ``slide`` (image or slide file name), ``x``, ``y`` (level-0
px, continuous convention: the centre of pixel ``j`` is ``j + 0.5``),
``label`` (the class name exactly as in the file) and ``kind``
(``"mitosis"``, ``"lookalike"`` or ``"other"``, from the class name), plus
``score`` for predictions and ``id`` (the entry's id in its file). Per-slide
metadata (``width``, ``height`` in px, ``mpp`` in µm/px, ``tumor_type``,
``scanner``, ``origin``, ``species``, ``split``) sit in one row per slide
(:attr:`Annotations.slide_info`) and are joined to the cells by
:meth:`Annotations.to_frame`.

No reader shifts coordinates by half a pixel: every format stores either
pixel-edge coordinates (QuPath, MIDOG box corners, so box midpoints are
already continuous) or whole pixels (SlideRunner, CSV), and half a pixel is
far below the 7.5 µm (30 px) hit radius of the MIDOG protocol.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import pandas as pd

from ..classes import LOOKALIKE_NAMES, MITOSIS_CLASS, MITOSIS_NAMES
from ..errors import WsimitoError

if TYPE_CHECKING:
    import geopandas

Kind = Literal["mitosis", "lookalike", "other"]
Outside = Literal["raise", "drop", "keep"]

KINDS: tuple[str, ...] = get_args(Kind)
#: Per-slide metadata columns that wsimito knows, in the order :meth:`Annotations.to_frame`
#: puts them (any other per-slide column follows).
SLIDE_COLUMNS = ("width", "height", "mpp", "tumor_type", "scanner", "origin", "species", "split")
#: How far (level-0 px) a cell's centre may lie outside its image before it is an error:
#: half a MIDOG box (50 px), so a cell cut by the image edge still counts. Two MIDOG++ cells
#: sit 2 and 5 px beyond the edge of their images.
DEFAULT_MARGIN_PX = 25.0

_CELL_COLUMNS = ("slide", "x", "y", "label", "kind")
_OPTIONAL_CELL_COLUMNS = ("score", "id")


class AnnotationError(WsimitoError, ValueError):
    """An annotation file or selection is unusable; the message names the file and entry."""


def _normalise(name: str) -> str:
    return " ".join(str(name).split()).lower()


def _name_set(names: Collection[str] | None, default: frozenset[str]) -> frozenset[str]:
    if names is None:
        return default
    if isinstance(names, str):
        names = [names]
    return frozenset(_normalise(n) for n in names)


def class_kind(
    label: str,
    mitosis_names: Collection[str] | None = None,
    lookalike_names: Collection[str] | None = None,
) -> Kind:
    """Whether the class name ``label`` means a mitotic figure, a look-alike, or neither.

    Parameters
    ----------
    label : str
        A class name as a file has it.
    mitosis_names, lookalike_names : collection of str, optional
        Names that mean "mitotic figure" and "look-alike", compared
        case-insensitively with runs of spaces collapsed. Default:
        :data:`wsimito.classes.MITOSIS_NAMES` and :data:`wsimito.classes.LOOKALIKE_NAMES`.

    Returns
    -------
    str
        ``"mitosis"``, ``"lookalike"`` or ``"other"``.

    Examples
    --------
    >>> class_kind("Mitotic figure"), class_kind("not mitotic figure"), class_kind("Tumor")
    ('mitosis', 'lookalike', 'other')
    """
    key = _normalise(label)
    if key in _name_set(mitosis_names, MITOSIS_NAMES):
        return "mitosis"
    if key in _name_set(lookalike_names, LOOKALIKE_NAMES):
        return "lookalike"
    return "other"


def slide_key(name: str) -> str:
    """The name a slide is matched by across files: its base name without an image suffix.

    Parameters
    ----------
    name : str
        A slide's file name or path.

    Returns
    -------
    str
        ``"/data/001.tiff"``, ``"001.tiff"`` and ``"001"`` all give ``"001"``, so
        predictions named after the image file match MIDOG ground truth.
    """
    base = os.path.basename(str(name))
    lower = base.lower()
    for suffix in _IMAGE_SUFFIXES:
        if lower.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return base


_IMAGE_SUFFIXES = (
    ".ome.tiff",
    ".ome.tif",
    ".ome.zarr",
    ".tiff",
    ".tif",
    ".svs",
    ".ndpi",
    ".mrxs",
    ".scn",
    ".vms",
    ".vmu",
    ".bif",
    ".svslide",
    ".dcm",
    ".zarr",
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
)


class Annotations:
    """Annotated cells (points) on one or more slides, with per-slide metadata.

    Build one with :func:`read_annotations`, :meth:`from_points` or from
    tables (the constructor). Selections return new objects; nothing is
    changed in place.

    Parameters
    ----------
    cells : pandas.DataFrame
        One row per cell with columns ``slide`` (str), ``x``, ``y`` (level-0
        px) and ``label`` (str); optionally ``score`` (float, predictions)
        and ``id`` (the entry's id in its file). ``kind`` is computed from
        ``label``.
    slides : pandas.DataFrame, optional
        One row per slide: column ``slide`` plus metadata columns such as
        ``width``, ``height`` (level-0 px), ``mpp`` (µm/px), ``tumor_type``,
        ``scanner``, ``split``. Slides that have cells but no row are added.
        Slides without cells are kept (an image in which nobody found a
        figure is ground truth too).
    regions : geopandas.GeoDataFrame, optional
        Non-point objects from the file (ROI polygons, tissue outlines),
        with columns ``slide``, ``label``, ``name``, ``geometry`` (level-0 px).
    source : str
        Where the data came from, for messages.
    mitosis_names, lookalike_names : collection of str, optional
        Class names that mean mitotic figure / look-alike (see :func:`class_kind`).

    Raises
    ------
    AnnotationError
        When a column is missing or a coordinate is not a finite number.

    Examples
    --------
    >>> import wsimito
    >>> ann = wsimito.Annotations.from_points([[10.0, 20.0], [30.5, 40.5]], slide="a.png")
    >>> ann.points("a.png").tolist()
    [[10.0, 20.0], [30.5, 40.5]]
    """

    def __init__(
        self,
        cells: pd.DataFrame,
        slides: pd.DataFrame | None = None,
        *,
        regions: geopandas.GeoDataFrame | None = None,
        source: str = "",
        mitosis_names: Collection[str] | None = None,
        lookalike_names: Collection[str] | None = None,
    ) -> None:
        self._source = str(source)
        self._mitosis_names = _name_set(mitosis_names, MITOSIS_NAMES)
        self._lookalike_names = _name_set(lookalike_names, LOOKALIKE_NAMES)
        self._cells = self._checked_cells(cells)
        self._slides = self._checked_slides(slides)
        self._regions = regions

    # -- construction -----------------------------------------------------------------
    def _checked_cells(self, cells: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in ("slide", "x", "y", "label") if c not in cells.columns]
        if missing:
            raise AnnotationError(
                f"{self._where()}cells need columns slide, x, y, label; missing {missing}"
            )
        keep = ["slide", "x", "y", "label"] + [c for c in _OPTIONAL_CELL_COLUMNS if c in cells]
        out = cells.loc[:, keep].reset_index(drop=True).copy()
        out["slide"] = out["slide"].astype(str)
        out["label"] = out["label"].fillna("").astype(str)
        for axis in ("x", "y"):
            values = pd.to_numeric(out[axis], errors="coerce").astype(np.float64)
            bad = ~np.isfinite(values.to_numpy())
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise AnnotationError(
                    f"{self._where()}{self._entry(out, row)} has {axis} = "
                    f"{_plain(cells[axis].iloc[row])!r}, not a finite number of px"
                )
            out[axis] = values
        if "score" in out:
            out["score"] = pd.to_numeric(out["score"], errors="coerce").astype(np.float64)
        out.insert(4, "kind", self._kinds(out["label"]))
        return out

    def _kinds(self, labels: pd.Series) -> np.ndarray:
        unique = pd.unique(labels)
        lookup = {
            name: class_kind(name, self._mitosis_names, self._lookalike_names) for name in unique
        }
        return labels.map(lookup).to_numpy(dtype=object)

    def _checked_slides(self, slides: pd.DataFrame | None) -> pd.DataFrame:
        if slides is None:
            slides = pd.DataFrame({"slide": pd.unique(self._cells["slide"])})
        elif "slide" not in slides.columns:
            raise AnnotationError(f"{self._where()}the slide table needs a column 'slide'")
        table = slides.reset_index(drop=True).copy()
        table["slide"] = table["slide"].astype(str)
        duplicated = table["slide"][table["slide"].duplicated()]
        if len(duplicated):
            raise AnnotationError(
                f"{self._where()}slide {duplicated.iloc[0]!r} is listed twice; "
                "slide names must be unique within one annotation set"
            )
        extra = pd.unique(self._cells["slide"][~self._cells["slide"].isin(table["slide"])])
        if len(extra):
            table = pd.concat([table, pd.DataFrame({"slide": extra})], ignore_index=True)
        return table

    @classmethod
    def from_points(
        cls,
        points: Any,
        *,
        slide: str,
        labels: str | Sequence[str] = MITOSIS_CLASS,
        scores: Any = None,
        width: int | None = None,
        height: int | None = None,
        mpp: float | None = None,
        **metadata: Any,
    ) -> Annotations:
        """Annotations of one slide from an ``(N, 2)`` array of level-0 px points.

        Parameters
        ----------
        points : array_like
            ``(N, 2)`` x, y, level-0 px.
        slide : str
            The slide's file name.
        labels : str or sequence of str
            One class name for all points, or one per point.
        scores : array_like, optional
            ``(N,)`` scores (predictions).
        width, height : int, optional
            Level-0 size of the slide, px.
        mpp : float, optional
            Level-0 resolution, µm/px.
        **metadata
            Other per-slide values, e.g. ``tumor_type="human melanoma"``.

        Returns
        -------
        Annotations

        Raises
        ------
        AnnotationError
            When the shapes of ``points``, ``labels`` and ``scores`` disagree.
        """
        xy = np.asarray(points, dtype=np.float64)
        xy = xy.reshape(0, 2) if xy.size == 0 else xy
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise AnnotationError(f"points must be (N, 2) x, y px; got shape {xy.shape}")
        n = len(xy)
        names = [labels] * n if isinstance(labels, str) else list(labels)
        if len(names) != n:
            raise AnnotationError(f"got {len(names)} labels for {n} points; give one per point")
        cells = pd.DataFrame({"slide": [slide] * n, "x": xy[:, 0], "y": xy[:, 1], "label": names})
        if scores is not None:
            score = np.asarray(scores, dtype=np.float64).reshape(-1)
            if len(score) != n:
                raise AnnotationError(f"got {len(score)} scores for {n} points; give one per point")
            cells["score"] = score
        info: dict[str, Any] = {"slide": [slide]}
        for key, value in (("width", width), ("height", height), ("mpp", mpp), *metadata.items()):
            if value is not None:
                info[key] = [value]
        return cls(cells, pd.DataFrame(info), source=f"points of {slide}")

    @classmethod
    def concat(cls, items: Iterable[Annotations]) -> Annotations:
        """Join annotation sets of different slides into one.

        Parameters
        ----------
        items : iterable of Annotations
            Sets with distinct slides; the first one's class-name sets are kept.

        Returns
        -------
        Annotations

        Raises
        ------
        AnnotationError
            When two sets list the same slide, or no set is given.
        """
        items = list(items)
        if not items:
            raise AnnotationError("concat needs at least one Annotations")
        regions = [a._regions for a in items if a._regions is not None and len(a._regions)]
        joined_regions = None
        if regions:
            import geopandas

            joined_regions = geopandas.GeoDataFrame(pd.concat(regions, ignore_index=True))
        return cls(
            pd.concat([a._cells.drop(columns="kind") for a in items], ignore_index=True),
            pd.concat([a._slides for a in items], ignore_index=True),
            regions=joined_regions,
            source=", ".join(dict.fromkeys(a._source for a in items if a._source)),
            mitosis_names=items[0]._mitosis_names,
            lookalike_names=items[0]._lookalike_names,
        )

    def _derive(
        self,
        cells: pd.DataFrame | None = None,
        slides: pd.DataFrame | None = None,
        *,
        mitosis_names: Collection[str] | None = None,
        lookalike_names: Collection[str] | None = None,
    ) -> Annotations:
        cells = self._cells if cells is None else cells
        slides = self._slides if slides is None else slides
        regions = self._regions
        if regions is not None and len(regions):
            regions = regions[regions["slide"].isin(slides["slide"])]
        return Annotations(
            cells.drop(columns="kind"),
            slides,
            regions=regions,
            source=self._source,
            mitosis_names=self._mitosis_names if mitosis_names is None else mitosis_names,
            lookalike_names=self._lookalike_names if lookalike_names is None else lookalike_names,
        )

    # -- views ------------------------------------------------------------------------
    @property
    def source(self) -> str:
        """Where the annotations came from (file path), for messages."""
        return self._source

    @property
    def mitosis_names(self) -> frozenset[str]:
        """Class names (lower case) that mean mitotic figure in this set."""
        return self._mitosis_names

    @property
    def lookalike_names(self) -> frozenset[str]:
        """Class names (lower case) that mean look-alike in this set."""
        return self._lookalike_names

    @property
    def slides(self) -> list[str]:
        """Slide names, in the order of the file (slides without cells included)."""
        return self._slides["slide"].tolist()

    @property
    def slide_info(self) -> pd.DataFrame:
        """One row per slide: ``slide`` and its metadata columns (a copy)."""
        return self._slides.copy()

    @property
    def regions(self) -> geopandas.GeoDataFrame:
        """Non-point objects of the file (ROIs, tissue outlines), level-0 px; may be empty."""
        import geopandas

        if self._regions is None:
            return geopandas.GeoDataFrame(
                {"slide": [], "label": [], "name": []}, geometry=geopandas.GeoSeries([])
            )
        return self._regions.copy()

    @property
    def has_scores(self) -> bool:
        """Whether the cells carry scores (predictions do, ground truth does not)."""
        return "score" in self._cells and bool(self._cells["score"].notna().any())

    @property
    def labels(self) -> list[str]:
        """The distinct class names, in order of first appearance."""
        return pd.unique(self._cells["label"]).tolist()

    def to_frame(self) -> pd.DataFrame:
        """All cells as a new DataFrame with the per-slide metadata joined.

        Returns
        -------
        pandas.DataFrame
            Columns ``slide``, ``x``, ``y`` (level-0 px), ``label``, ``kind``,
            then ``score`` and ``id`` where the file has them, then the
            per-slide columns (``width``, ``height`` px, ``mpp`` µm/px,
            ``tumor_type``, ``scanner``, ``origin``, ``species``, ``split``,
            whichever are known, then any others).
        """
        meta = self._slides
        known = [c for c in SLIDE_COLUMNS if c in meta]
        others = [c for c in meta if c != "slide" and c not in known]
        return self._cells.merge(meta[["slide", *known, *others]], on="slide", how="left")

    def __len__(self) -> int:
        return len(self._cells)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """Per slide, in order: ``(slide, points (N, 2) level-0 px, labels (N,) str)``."""
        xy = self._cells[["x", "y"]].to_numpy()
        labels = self._cells["label"].to_numpy(dtype=object)
        for slide, index in self._by_slide.items():
            yield slide, xy[index], labels[index]

    def __repr__(self) -> str:
        kinds = self._cells["kind"].value_counts()
        parts = ", ".join(f"{kinds[k]:,} {k}" for k in KINDS if k in kinds)
        where = f" from {os.path.basename(self._source)}" if self._source else ""
        return f"<Annotations: {len(self):,} cells ({parts or 'none'}) on {len(self._slides)} slides{where}>"

    @functools.cached_property
    def _by_slide(self) -> dict[str, np.ndarray]:
        groups = self._cells.groupby("slide", sort=False).indices
        return {s: groups.get(s, np.zeros(0, dtype=np.int64)) for s in self._slides["slide"]}

    @functools.cached_property
    def _position(self) -> dict[str, int]:
        return {s: k for k, s in enumerate(self._slides["slide"])}

    def _rows(self, slide: str) -> pd.DataFrame:
        if slide not in self._by_slide:
            raise AnnotationError(
                f"{self._where()}no slide {slide!r}; slides are {_preview(self.slides)}"
            )
        return self._cells.iloc[self._by_slide[slide]]

    def points(
        self,
        slide: str,
        *,
        kind: Kind | Collection[str] | None = None,
        label: str | Collection[str] | None = None,
    ) -> np.ndarray:
        """The cells on ``slide``, optionally of some kinds or labels.

        Parameters
        ----------
        slide : str
            A slide name from :attr:`slides`.
        kind : str or collection of str, optional
            ``"mitosis"``, ``"lookalike"``, ``"other"``.
        label : str or collection of str, optional
            Class names, exactly as in the file.

        Returns
        -------
        numpy.ndarray
            ``(N, 2)`` float64 x, y, level-0 px, in file order.

        Raises
        ------
        AnnotationError
            When ``slide`` is not in the set, or ``kind`` is not a kind.
        """
        rows = self._filter_cells(self._rows(slide), kind=kind, label=label)
        return rows[["x", "y"]].to_numpy(dtype=np.float64).reshape(-1, 2)

    def scores(self, slide: str, *, kind: Kind | Collection[str] | None = None) -> np.ndarray:
        """Scores of the cells on ``slide``, in the order of :meth:`points`.

        Parameters
        ----------
        slide : str
            A slide name from :attr:`slides`.
        kind : str or collection of str, optional
            As for :meth:`points`.

        Returns
        -------
        numpy.ndarray
            ``(N,)`` float64 scores, NaN where the file has none.
        """
        rows = self._filter_cells(self._rows(slide), kind=kind, label=None)
        if "score" not in rows:
            return np.full(len(rows), np.nan)
        return rows["score"].to_numpy(dtype=np.float64)

    def mpp(self, slide: str) -> float | None:
        """Level-0 resolution of ``slide``.

        Parameters
        ----------
        slide : str
            A slide name from :attr:`slides`.

        Returns
        -------
        float or None
            µm/px, or ``None`` when neither the file nor ``mpp=`` gave one.
        """
        self._rows(slide)
        if "mpp" not in self._slides:
            return None
        value = self._slides["mpp"].iloc[self._position[slide]]
        return float(value) if pd.notna(value) else None

    def _filter_cells(
        self,
        rows: pd.DataFrame,
        *,
        kind: str | Collection[str] | None,
        label: str | Collection[str] | None,
    ) -> pd.DataFrame:
        if kind is not None:
            kinds = _as_set(kind)
            unknown = kinds - set(KINDS)
            if unknown:
                raise AnnotationError(f"kind must be among {KINDS}; got {sorted(unknown)}")
            rows = rows[rows["kind"].isin(kinds)]
        if label is not None:
            rows = rows[rows["label"].isin(_as_set(label))]
        return rows

    # -- selection --------------------------------------------------------------------
    def select(
        self,
        *,
        slide: str | Collection[str] | None = None,
        label: str | Collection[str] | None = None,
        kind: Kind | Collection[str] | None = None,
        split: str | Collection[str] | None = None,
        **metadata: Any,
    ) -> Annotations:
        """A new set with the slides and cells that match every filter given.

        Slide-level filters (``slide``, ``split`` and any per-slide column such as
        ``tumor_type=...`` or ``scanner=...``) keep whole slides. Cell-level
        filters (``label``, ``kind``) keep cells but every selected slide, so an
        image without mitotic figures stays in the set with zero of them. Each
        filter takes one value or a collection of values.

        Parameters
        ----------
        slide : str or collection of str, optional
            Slide names.
        label : str or collection of str, optional
            Class names, exactly as in the file.
        kind : str or collection of str, optional
            ``"mitosis"``, ``"lookalike"``, ``"other"``.
        split : str or collection of str, optional
            E.g. ``"train"`` or ``"test"`` (needs a ``split`` column, see
            ``read_annotations(split=...)``).
        **metadata
            Other per-slide columns, e.g. ``tumor_type="human melanoma"``.

        Returns
        -------
        Annotations

        Raises
        ------
        AnnotationError
            When a column is unknown, a value occurs nowhere (likely a typo: the
            message lists the values there are), or nothing is left.

        Examples
        --------
        >>> import wsimito
        >>> from wsimito.data import fetch
        >>> ann = wsimito.read_annotations(
        ...     fetch("annotations/MIDOGpp.json"), split=fetch("annotations/MIDOGpp-split.csv")
        ... )
        >>> train = ann.select(split="train", kind="mitosis", tumor_type="human melanoma")
        >>> len(train.slides)
        38
        """
        slides = self._slides
        filters = dict(metadata)
        if slide is not None:
            filters["slide"] = slide
        if split is not None:
            filters["split"] = split
        for column, wanted in filters.items():
            if column not in slides:
                raise AnnotationError(
                    f"{self._where()}cannot select by {column!r}: the slides have columns "
                    f"{[c for c in slides.columns]}"
                    + ("; pass split=PATH to read_annotations" if column == "split" else "")
                )
            values = _as_set(wanted)
            present = set(self._slides[column].dropna().astype(str))
            typo = {str(v) for v in values} - present
            if typo:
                raise AnnotationError(
                    f"{self._where()}{column} {sorted(typo)} occurs nowhere; "
                    f"values are {_preview(sorted(present))}"
                )
            slides = slides[slides[column].astype(str).isin({str(v) for v in values})]
        if label is not None:
            typo = _as_set(label) - set(self._cells["label"])
            if typo:
                raise AnnotationError(
                    f"{self._where()}label {sorted(typo)} occurs nowhere; labels are "
                    f"{_preview(self.labels)} (labels are compared exactly; use kind= for "
                    "mitosis / lookalike)"
                )
        if len(slides) == 0:
            raise AnnotationError(
                f"{self._where()}the selection {filters} leaves no slide (each value occurs, "
                "but not together)"
            )
        cells = self._cells[self._cells["slide"].isin(slides["slide"])]
        cells = self._filter_cells(cells, kind=kind, label=label)
        return self._derive(cells, slides)

    def with_classes(
        self,
        *,
        mitosis_names: Collection[str] | None = None,
        lookalike_names: Collection[str] | None = None,
    ) -> Annotations:
        """The same cells with ``kind`` recomputed from other class-name sets.

        Parameters
        ----------
        mitosis_names, lookalike_names : collection of str, optional
            Names that mean mitotic figure / look-alike; ``None`` keeps the current set.

        Returns
        -------
        Annotations
        """
        return self._derive(mitosis_names=mitosis_names, lookalike_names=lookalike_names)

    def with_slide_info(self, column: str, values: float | str | Mapping[str, Any]) -> Annotations:
        """A new set with the per-slide ``column`` filled where the files left it empty.

        Parameters
        ----------
        column : str
            E.g. ``"mpp"`` (µm/px) or ``"tumor_type"``.
        values : scalar or mapping
            One value for every slide, or ``{slide name: value}``.

        Returns
        -------
        Annotations
        """
        slides = self._slides.copy()
        new = (
            slides["slide"].map(values)
            if isinstance(values, Mapping)
            else pd.Series([values] * len(slides), index=slides.index)
        )
        slides[column] = (
            slides[column].where(slides[column].notna(), new) if column in slides else new
        )
        return self._derive(slides=slides)

    def counts(self, by: str | Sequence[str] = "slide") -> pd.DataFrame:
        """Cells per kind for each group.

        Parameters
        ----------
        by : str or sequence of str
            ``"slide"``, ``"label"`` or per-slide columns such as ``"tumor_type"``,
            ``"scanner"``, ``"split"``.

        Returns
        -------
        pandas.DataFrame
            Indexed by ``by``; columns ``slides`` (how many), ``mitosis``,
            ``lookalike``, ``other`` and ``cells`` (their sum). Groups without
            cells (e.g. a slide with none) appear with zeros.
        """
        keys = [by] if isinstance(by, str) else list(by)
        if "kind" in keys:
            raise AnnotationError("counts are per kind already; group by other columns")
        frame = self.to_frame()
        slide_keys = [k for k in keys if k in self._slides]
        unknown = [k for k in keys if k not in frame and k not in slide_keys]
        if unknown:
            raise AnnotationError(
                f"{self._where()}cannot count by {unknown}; columns are {list(frame.columns)}"
            )
        table = frame.groupby([*keys, "kind"], dropna=False).size().unstack("kind", fill_value=0)
        table = table.reindex(columns=list(KINDS), fill_value=0)
        if slide_keys == keys:
            slides = self._slides.groupby(keys, dropna=False).size().rename("slides")
            table = table.reindex(slides.index, fill_value=0)
            table.insert(0, "slides", slides)
        table["cells"] = table[list(KINDS)].sum(axis=1)
        table.columns.name = None
        return table

    # -- validation -------------------------------------------------------------------
    def validated(
        self,
        *,
        margin_px: float = DEFAULT_MARGIN_PX,
        outside: Outside = "raise",
        strict: bool = False,
    ) -> Annotations:
        """Check cells against their image size and (optionally) the class-name sets.

        Parameters
        ----------
        margin_px : float
            How far (level-0 px) a centre may lie beyond the image edge.
        outside : {"raise", "drop", "keep"}
            What to do with a cell outside its image (where the size is known).
        strict : bool
            Raise when a class name is neither a mitosis nor a look-alike name.

        Returns
        -------
        Annotations
            ``self``, or a copy without the dropped cells.

        Raises
        ------
        AnnotationError
            Naming the file and the first offending entry.
        """
        if outside not in get_args(Outside):
            raise AnnotationError(f"outside must be one of {get_args(Outside)}, got {outside!r}")
        result = self
        if {"width", "height"} <= set(self._slides) and outside != "keep":
            frame = self._cells.merge(self._slides[["slide", "width", "height"]], on="slide")
            w = pd.to_numeric(frame["width"], errors="coerce").astype(float).to_numpy()
            h = pd.to_numeric(frame["height"], errors="coerce").astype(float).to_numpy()
            x, y = frame["x"].to_numpy(), frame["y"].to_numpy()
            with np.errstate(invalid="ignore"):
                bad = (
                    (x < -margin_px) | (y < -margin_px) | (x > w + margin_px) | (y > h + margin_px)
                )
            if bad.any():
                if outside == "raise":
                    row = int(np.flatnonzero(bad)[0])
                    raise AnnotationError(
                        f"{self._where()}{self._entry(frame, row)} lies at "
                        f"({x[row]:g}, {y[row]:g}) px, outside its {w[row]:g}×{h[row]:g} px "
                        f"image by more than {margin_px:g} px ({int(bad.sum())} such cells); "
                        "fix the file, or pass outside='drop' or outside='keep'"
                    )
                result = self._derive(self._cells[~bad])
        if strict:
            other = result._cells[result._cells["kind"] == "other"]
            if len(other):
                names = pd.unique(other["label"]).tolist()
                raise AnnotationError(
                    f"{self._where()}{self._entry(other, 0)} has class {names[0]!r}, neither a "
                    f"mitosis nor a look-alike name ({len(other)} cells in classes "
                    f"{_preview(names)}); add it to mitosis_names= or lookalike_names=, or "
                    "pass strict=False"
                )
        return result

    def _where(self) -> str:
        return f"{self._source}: " if self._source else ""

    @staticmethod
    def _entry(frame: pd.DataFrame, row: int) -> str:
        item = frame.iloc[row]
        entry = f"entry {item['id']!s}" if "id" in frame and pd.notna(item["id"]) else "a cell"
        return f"{entry} on slide {item['slide']!r}"


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _as_set(value: Any) -> set:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return {value}
    return set(value)


def _preview(values: Sequence[Any], n: int = 8) -> str:
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:n])
    return f"[{shown}{', ...' if len(values) > n else ''}] ({len(values)})"


def class_color(label: str, kind: str) -> tuple[int, int, int]:
    """A stable colour for a class.

    Parameters
    ----------
    label : str
        The class name.
    kind : str
        Its kind (``"mitosis"``, ``"lookalike"``, ``"other"``).

    Returns
    -------
    (int, int, int)
        RGB 0-255: wsimito's colours for mitosis and look-alike, else one
        derived from a hash of the name.
    """
    from ..classes import LOOKALIKE_COLOR, MITOSIS_COLOR

    if kind == "mitosis":
        return MITOSIS_COLOR
    if kind == "lookalike":
        return LOOKALIKE_COLOR
    digest = hashlib.sha256(label.encode()).digest()
    return (40 + digest[0] % 200, 40 + digest[1] % 200, 40 + digest[2] % 200)
