"""Point annotations of cells in one in-memory form: :class:`Annotations`.

:func:`read_annotations` reads any supported file (MIDOG COCO JSON, SlideRunner
SQLite, QuPath or wsimito GeoJSON, one CSV or a folder of images with one CSV
each) into an :class:`Annotations`: one row per annotated cell with ``slide``,
``x``, ``y`` (level-0 px, continuous convention), ``label`` (the class name as
in the file), ``kind`` (mitosis, lookalike, other), and per-slide metadata.
See :mod:`wsimito.io.annotation_set` for the class itself.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import pandas as pd

from .annotation_set import (
    DEFAULT_MARGIN_PX,
    KINDS,
    SLIDE_COLUMNS,
    AnnotationError,
    Annotations,
    Kind,
    Outside,
    class_color,
    class_kind,
    slide_key,
)
from .csvfolder import read_csv_folder
from .midog import join_split, read_midog
from .qupath import load_json, read_qupath
from .sliderunner import read_sliderunner

__all__ = [
    "DEFAULT_MARGIN_PX",
    "KINDS",
    "SLIDE_COLUMNS",
    "AnnotationError",
    "AnnotationFormat",
    "Annotations",
    "Kind",
    "Outside",
    "class_color",
    "class_kind",
    "detect_format",
    "read_annotations",
    "slide_key",
]

AnnotationFormat = Literal["auto", "midog", "sliderunner", "qupath", "csv"]

_SQLITE_MAGIC = b"SQLite format 3\x00"


def detect_format(path: str | os.PathLike) -> str:
    """The annotation format of ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        A file or folder.

    Returns
    -------
    str
        ``"midog"``, ``"sliderunner"``, ``"qupath"`` or ``"csv"``.

    Raises
    ------
    AnnotationError
        When the content fits none of them.
    FileNotFoundError
        When ``path`` does not exist.

    Notes
    -----
    A folder is a CSV folder, or a folder of GeoJSON files when it holds
    ``.geojson``/``.json`` files and no CSV; ``.csv`` a single CSV; an SQLite
    file a SlideRunner database; JSON with ``images`` and ``annotations``
    MIDOG/COCO; other JSON GeoJSON.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    if path.is_dir():
        suffixes = {p.suffix.lower() for p in path.iterdir()}
        if ".csv" not in suffixes and suffixes & {".geojson", ".json"}:
            return "qupath"
        return "csv"
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head.startswith(_SQLITE_MAGIC):
        return "sliderunner"
    if path.suffix.lower() in (".csv", ".txt"):
        return "csv"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text[:1] in (b"{", b"["):
        data = load_json(path)
        if isinstance(data, dict) and "images" in data and "annotations" in data:
            return "midog"
        return "qupath"
    raise AnnotationError(
        f"{path}: cannot tell its annotation format (not SQLite, JSON or CSV); pass "
        "format='midog', 'sliderunner', 'qupath' or 'csv'"
    )


def read_annotations(
    path: str | os.PathLike,
    *,
    format: AnnotationFormat = "auto",
    mitosis_names: Collection[str] | None = None,
    lookalike_names: Collection[str] | None = None,
    strict: bool = False,
    split: str | os.PathLike | pd.DataFrame | Mapping[str, str] | None = None,
    mpp: float | Mapping[str, float] | None = None,
    margin_px: float = DEFAULT_MARGIN_PX,
    outside: Outside = "raise",
    **options: Any,
) -> Annotations:
    """Read point annotations (or predictions) from any supported format.

    Parameters
    ----------
    path : str or os.PathLike
        A MIDOG/MIDOG++ COCO JSON file, a SlideRunner SQLite database, a
        QuPath or wsimito GeoJSON file, one CSV, or a folder of images with
        one CSV each.
    format : {"auto", "midog", "sliderunner", "qupath", "csv"}
        ``"auto"`` looks at the file (:func:`detect_format`).
    mitosis_names, lookalike_names : collection of str, optional
        Class names that mean mitotic figure / look-alike (case-insensitive).
        Default: :data:`wsimito.classes.MITOSIS_NAMES`, :data:`wsimito.classes.LOOKALIKE_NAMES`.
    strict : bool
        Raise on a class name that is in neither set.
    split : path, DataFrame or mapping, optional
        A MIDOG split table (``MIDOGpp-split.csv``) joined by slide number, or
        ``{slide name: split}``; adds ``split`` and the table's domain columns.
    mpp : float or mapping, optional
        Level-0 resolution (µm/px) for slides whose file gives none: one value
        or ``{slide name: mpp}``. The file's own value wins.
    margin_px : float
        How far (level-0 px) a cell centre may lie beyond its image's edge.
    outside : {"raise", "drop", "keep"}
        What to do with cells outside their image, where the image size is known.
    **options
        Passed to the format's reader: :func:`wsimito.io.midog.read_midog`
        (``bbox``, ``keep_empty``), :func:`wsimito.io.sliderunner.read_sliderunner`
        (``slide``), :func:`wsimito.io.qupath.read_qupath` (``slide``,
        ``bounds_offset``), :func:`wsimito.io.csvfolder.read_csv_folder`
        (``default_label``, ``require_images``, ``read_sizes``).

    Returns
    -------
    Annotations

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    AnnotationError
        On bad data, naming the file and the entry: a missing image
        reference, a cell outside its image, an unknown class with
        ``strict=True``, a slide missing from the split table.

    Examples
    --------
    >>> import wsimito
    >>> from wsimito.data import fetch
    >>> ann = wsimito.read_annotations(fetch("annotations/MIDOGpp.json"))
    >>> int(ann.counts("tumor_type")["mitosis"].sum())
    11937
    """
    path = Path(path)
    fmt = detect_format(path) if format == "auto" else format
    names: dict[str, Any] = {"mitosis_names": mitosis_names, "lookalike_names": lookalike_names}
    options = {**names, **options}
    if fmt == "midog":
        ann = read_midog(path, **options)
    elif fmt == "sliderunner":
        ann = read_sliderunner(path, **options)
    elif fmt == "qupath":
        ann = read_qupath(path, **options)
    elif fmt == "csv":
        ann = read_csv_folder(path, **options)
    else:
        raise AnnotationError(f"format must be one of {get_args(AnnotationFormat)}, got {format!r}")
    if split is not None:
        ann = join_split(ann, split)
    if mpp is not None:
        ann = ann.with_slide_info("mpp", mpp)
    return ann.validated(margin_px=margin_px, outside=outside, strict=strict)
