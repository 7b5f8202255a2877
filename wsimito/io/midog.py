"""MIDOG and MIDOG++ annotations: the COCO-like JSON and the published split table.

The JSON (``MIDOG++.json``) lists ``images`` (``id``, ``file_name``,
``width``, ``height``, ``tumor_type``), ``categories`` (1 "mitotic figure",
2 "not mitotic figure", the look-alikes) and ``annotations`` (``image_id``,
``category_id``, ``bbox``). Unlike standard COCO, ``bbox`` is
``[x1, y1, x2, y2]``: the corners of a 50 × 50 px box around the cell, in
pixel-edge coordinates, so its midpoint is the cell centre in wsimito's
continuous convention without any half-pixel shift.

The split table (``datasets_xvalidation.csv`` in the MIDOG++ repository) is
``;``-separated with columns ``Slide;Dataset;Tumor;Scanner;Origin;Species``
and one row per annotated slide, numbered as the image files
(``001.tiff`` is slide 1). Its spellings differ from the JSON's:
:data:`TUMOR_SPELLINGS` and :data:`SCANNER_SPELLINGS` map them to one
canonical name each (the JSON's tumour names; the scanner maker's spelling).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from .annotation_set import AnnotationError, Annotations, _preview, slide_key
from .qupath import load_json

#: Tumour names in the split table -> the JSON's name for the same tumour (lower case keys).
TUMOR_SPELLINGS = {"canine lymphoma": "canine lymphosarcoma"}
#: Scanner names in the split table -> canonical spelling (lower case keys).
SCANNER_SPELLINGS = {"hamammatsu xr": "Hamamatsu XR"}
#: Split-table columns -> wsimito's per-slide column names.
SPLIT_COLUMNS = {
    "Slide": "slide_number",
    "Dataset": "split",
    "Tumor": "tumor_type",
    "Scanner": "scanner",
    "Origin": "origin",
    "Species": "species",
}
_IMAGE_SKIP = {"id", "file_name", "license", "coco_url", "flickr_url", "date_captured"}


def read_midog(
    path: str | os.PathLike,
    *,
    bbox: Literal["xyxy", "xywh"] = "xyxy",
    keep_empty: bool = False,
    mitosis_names: Collection[str] | None = None,
    lookalike_names: Collection[str] | None = None,
) -> Annotations:
    """Read a MIDOG / MIDOG++ COCO-like JSON file.

    Parameters
    ----------
    path : str or os.PathLike
        The JSON file.
    bbox : {"xyxy", "xywh"}
        ``"xyxy"``: ``[x1, y1, x2, y2]`` as in MIDOG; ``"xywh"``: standard
        COCO ``[x, y, width, height]``. The cell is the box's midpoint.
    keep_empty : bool
        Keep images without any annotation. MIDOG++ lists 553 images of which
        50 (151-200, the MIDOG 2021 test images whose labels were not released)
        have none; they are left out by default so that they do not count as
        images without mitotic figures.
    mitosis_names, lookalike_names : collection of str, optional
        See :func:`wsimito.io.annotations.class_kind`.

    Returns
    -------
    Annotations
        Cells with ``label`` = the category name, ``id`` = the annotation id;
        slides with ``width``, ``height`` (px) and the images' other fields
        (``tumor_type``).

    Raises
    ------
    AnnotationError
        When an annotation refers to an image or category that the file does
        not list, or its box is malformed.
    """
    path = Path(path)
    data = load_json(path)
    source = str(path)
    if not isinstance(data, dict) or not {"images", "annotations"} <= set(data):
        raise AnnotationError(f"{source}: not a COCO/MIDOG file (needs 'images' and 'annotations')")
    images: dict[Any, dict] = {}
    for k, image in enumerate(data["images"]):
        if "id" not in image or "file_name" not in image:
            raise AnnotationError(f"{source}: images[{k}] has no 'id' or 'file_name'")
        images[image["id"]] = image
    categories = {c["id"]: str(c["name"]) for c in data.get("categories", [])}
    rows = []
    for k, entry in enumerate(data["annotations"]):
        ident = entry.get("id", k)
        image = images.get(entry.get("image_id"))
        if image is None:
            raise AnnotationError(
                f"{source}: annotation {ident} refers to image_id {entry.get('image_id')!r}, "
                "which 'images' does not list"
            )
        category = entry.get("category_id")
        if category not in categories:
            raise AnnotationError(
                f"{source}: annotation {ident} has category_id {category!r}; 'categories' "
                f"lists {sorted(categories)}"
            )
        x, y = _centre(entry.get("bbox"), bbox, source, ident)
        rows.append((image["file_name"], x, y, categories[category], ident))
    cells = pd.DataFrame(rows, columns=["slide", "x", "y", "label", "id"])
    used = set(cells["slide"])
    slides = pd.DataFrame(
        [
            {"slide": image["file_name"], **_image_fields(image)}
            for image in images.values()
            if keep_empty or image["file_name"] in used
        ]
    )
    return Annotations(
        cells,
        slides if len(slides) else None,
        source=source,
        mitosis_names=mitosis_names,
        lookalike_names=lookalike_names,
    )


def _centre(box: Any, layout: str, source: str, ident: Any) -> tuple[float, float]:
    try:
        a, b, c, d = (float(v) for v in box)
    except (TypeError, ValueError):
        raise AnnotationError(
            f"{source}: annotation {ident} has bbox {box!r}; expected four numbers"
        ) from None
    if layout == "xywh":
        c, d = a + c, b + d
    elif layout != "xyxy":
        raise AnnotationError(f"bbox must be 'xyxy' or 'xywh', got {layout!r}")
    if c < a or d < b:
        raise AnnotationError(
            f"{source}: annotation {ident} has bbox {box!r} with x2 < x1 or y2 < y1; if the "
            "file uses COCO's [x, y, width, height], pass bbox='xywh'"
        )
    return (a + c) / 2, (b + d) / 2


def _image_fields(image: dict) -> dict:
    fields = {k: v for k, v in image.items() if k not in _IMAGE_SKIP and _scalar(v)}
    return fields


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def slide_number(name: str) -> int | None:
    """The MIDOG slide number of an image name.

    Parameters
    ----------
    name : str
        E.g. ``"001.tiff"``.

    Returns
    -------
    int or None
        ``1`` for ``"001.tiff"``; ``None`` when the name is not a number.
    """
    key = slide_key(name)
    return int(key) if re.fullmatch(r"\d+", key) else None


def canonical_tumor(name: str) -> str:
    """A tumour name in MIDOG++ JSON spelling.

    Parameters
    ----------
    name : str
        A tumour name as a split table spells it.

    Returns
    -------
    str
        The name with runs of spaces collapsed, mapped by :data:`TUMOR_SPELLINGS`.
    """
    cleaned = " ".join(str(name).split())
    return TUMOR_SPELLINGS.get(cleaned.lower(), cleaned)


def canonical_scanner(name: str) -> str:
    """A scanner name in canonical spelling.

    Parameters
    ----------
    name : str
        A scanner name as a split table spells it.

    Returns
    -------
    str
        The name with runs of spaces collapsed, mapped by :data:`SCANNER_SPELLINGS`.
    """
    cleaned = " ".join(str(name).split())
    return SCANNER_SPELLINGS.get(cleaned.lower(), cleaned)


def read_split_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read the MIDOG++ split table (``;``-separated) with canonical spellings.

    Parameters
    ----------
    path : str or os.PathLike
        ``MIDOGpp-split.csv`` / ``datasets_xvalidation.csv``.

    Returns
    -------
    pandas.DataFrame
        Columns ``slide_number`` (int), ``split`` (``"train"``/``"test"``),
        ``tumor_type``, ``scanner``, ``origin``, ``species``; one row per slide.

    Raises
    ------
    AnnotationError
        When a column is missing, a slide number is not a whole number, or a
        slide is listed twice.
    """
    source = str(path)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh, delimiter=";")
        missing = set(SPLIT_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise AnnotationError(
                f"{source}: the split table needs ;-separated columns {list(SPLIT_COLUMNS)}; "
                f"missing {sorted(missing)}"
            )
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                number = int(row["Slide"])
            except (TypeError, ValueError):
                raise AnnotationError(
                    f"{source}: line {line} has slide number {row['Slide']!r}; expected an integer"
                ) from None
            rows.append(
                {
                    "slide_number": number,
                    "split": row["Dataset"].strip(),
                    "tumor_type": canonical_tumor(row["Tumor"]),
                    "scanner": canonical_scanner(row["Scanner"]),
                    "origin": row["Origin"].strip(),
                    "species": row["Species"].strip(),
                }
            )
    table = pd.DataFrame(rows, columns=list(SPLIT_COLUMNS.values()))
    twice = table["slide_number"][table["slide_number"].duplicated()]
    if len(twice):
        raise AnnotationError(f"{source}: slide {twice.iloc[0]} is listed twice")
    table.attrs["source"] = source
    return table


def join_split(
    annotations: Annotations,
    split: str | os.PathLike | pd.DataFrame | Mapping[str, str],
) -> Annotations:
    """Add the split (and the split table's domain columns) to every slide.

    Parameters
    ----------
    annotations : Annotations
        Slides named like the MIDOG images (``"001.tiff"`` is slide 1).
    split : path, DataFrame or mapping
        A split table file, its :func:`read_split_table` frame, or
        ``{slide name: split}``.

    Returns
    -------
    Annotations
        With columns ``split``, ``tumor_type``, ``scanner``, ``origin``,
        ``species`` per slide. Where the annotation file already names the
        tumour, its name is kept, and it must agree with the table's.

    Raises
    ------
    AnnotationError
        When a slide with annotations has no row in the table, or the table
        names another tumour type for it than the annotation file.
    """
    info = annotations.slide_info
    with_cells = set(annotations.to_frame()["slide"])
    if isinstance(split, Mapping):
        keyed = {slide_key(k): v for k, v in split.items()}
        values = info["slide"].map(lambda s: keyed.get(slide_key(s)))
        _require_rows(annotations, info["slide"][values.isna()], with_cells, "the split mapping")
        return annotations._derive(slides=info.assign(split=values))
    table = split if isinstance(split, pd.DataFrame) else read_split_table(split)
    source = table.attrs.get("source", "the split table")
    by_number = table.set_index("slide_number")
    numbers = info["slide"].map(slide_number)
    found = numbers.isin(by_number.index)
    _require_rows(annotations, info["slide"][~found], with_cells, source)
    joined = by_number.reindex(numbers.to_numpy())
    joined.index = info.index
    for column in joined.columns:
        if column in info and column == "tumor_type":
            mine = info[column].map(lambda v: canonical_tumor(v) if pd.notna(v) else v)
            clash = found & mine.notna() & (mine != joined[column])
            if clash.any():
                k = clash.idxmax()
                raise AnnotationError(
                    f"{annotations.source}: slide {info['slide'][k]!r} is "
                    f"{info[column][k]!r} in the annotations but {joined[column][k]!r} in "
                    f"{source}; check that the two files belong together"
                )
            continue
        if column in info:
            info[column] = info[column].where(info[column].notna(), joined[column])
        else:
            info[column] = joined[column]
    return annotations._derive(slides=info)


def _require_rows(
    annotations: Annotations, missing: pd.Series, with_cells: set, source: str
) -> None:
    missing = [s for s in missing if s in with_cells]
    if missing:
        raise AnnotationError(
            f"{annotations.source}: {len(missing)} annotated slides have no row in {source}, "
            f"e.g. {_preview(missing, 4)}; check that the two files belong together"
        )
