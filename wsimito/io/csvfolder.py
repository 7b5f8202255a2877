"""A folder of images with one CSV of cell positions each (the MitDet layout).

``case7.png`` has its cells in ``case7.csv`` (or ``case7.png.csv``): one row
per cell, ``x,y`` in level-0 px, optionally a class name and a score. A
header row is optional; with one, the columns are found by name (``x``,
``y``, ``label`` or ``class``, ``score``) in any order. Without one, the
columns are ``x, y[, label[, score]]``. Rows without a class get
``default_label`` (``"Mitotic figure"``: a MitDet CSV lists mitotic figures).
An image without a CSV is an image without cells.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..classes import MITOSIS_CLASS
from .annotation_set import _IMAGE_SUFFIXES, AnnotationError, Annotations, slide_key
from .atomic import atomic_write

_LABEL_NAMES = ("label", "class", "classification", "category", "name")
_SCORE_NAMES = ("score", "probability", "confidence", "prob")


def read_csv_folder(
    path: str | os.PathLike,
    *,
    default_label: str = MITOSIS_CLASS,
    require_images: bool = True,
    read_sizes: bool = True,
    mitosis_names: Collection[str] | None = None,
    lookalike_names: Collection[str] | None = None,
) -> Annotations:
    """Read a folder of images with one CSV each, or a single CSV.

    Parameters
    ----------
    path : str or os.PathLike
        The folder, or one ``.csv`` file (its image, if any, sits beside it).
    default_label : str
        Class name of rows without one.
    require_images : bool
        Raise when a CSV has no image of the same name beside it. With
        ``False`` the slide is named after the CSV (e.g. ``case7``).
    read_sizes : bool
        Open each image (header only) for its ``width``, ``height`` (px) and
        ``mpp`` (µm/px, where the file has one), which lets cells outside
        the image be caught.
    mitosis_names, lookalike_names : collection of str, optional
        See :func:`wsimito.io.annotations.class_kind`.

    Returns
    -------
    Annotations
        ``slide`` = the image's file name; ``id`` = the CSV's name and line number.

    Raises
    ------
    AnnotationError
        When a CSV has no image (with ``require_images``), two images share a
        name, or a row is malformed (naming the file and line).
    """
    path = Path(path)
    if path.is_dir():
        folder, csv_files = path, sorted(path.glob("*.csv"))
    else:
        folder, csv_files = path.parent, [path]
    images = _images_by_key(folder)
    frames = []
    slide_rows: dict[str, dict] = {}
    if path.is_dir():
        for image in images.values():
            slide_rows[image.name] = {"slide": image.name, "_image": image}
    for csv_path in csv_files:
        match = images.get(slide_key(csv_path.name[: -len(".csv")]))
        if match is None and require_images:
            raise AnnotationError(
                f"{csv_path}: no image of the same name in {folder} (looked for "
                f"{slide_key(csv_path.name[:-4])}.<image suffix>); put the image there or pass "
                "require_images=False"
            )
        name = match.name if match is not None else csv_path.name[: -len(".csv")]
        slide_rows.setdefault(name, {"slide": name, "_image": match})
        frames.append(_read_one_csv(csv_path, name, default_label))
    for row in slide_rows.values():
        found = row.pop("_image")
        if read_sizes and found is not None:
            row.update(_image_size(found))
    columns = ["slide", "x", "y", "label", "score", "id"]
    cells = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    if "score" in cells and cells["score"].isna().all():
        cells = cells.drop(columns="score")
    slides = pd.DataFrame(list(slide_rows.values())) if slide_rows else None
    return Annotations(
        cells,
        slides,
        source=str(path),
        mitosis_names=mitosis_names,
        lookalike_names=lookalike_names,
    )


def _images_by_key(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for item in sorted(folder.iterdir()):
        lower = item.name.lower()
        if not any(lower.endswith(s) for s in _IMAGE_SUFFIXES) or lower.endswith(".csv"):
            continue
        key = slide_key(item.name)
        if key in found:
            raise AnnotationError(
                f"{folder}: images {found[key].name} and {item.name} share the name {key!r}, so "
                "their CSV is ambiguous; keep one image per name"
            )
        found[key] = item
    return found


def _image_size(image: Path) -> dict[str, Any]:
    from ..errors import MissingMPPError
    from ..slide import open_slide

    with open_slide(image) as slide:
        width, height = slide.dimensions
        try:
            mpp = float(slide.mpp)
        except MissingMPPError:
            mpp = np.nan
    return {"width": int(width), "height": int(height), "mpp": mpp}


def _read_one_csv(path: Path, slide: str, default_label: str) -> pd.DataFrame:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = [(n, r) for n, r in enumerate(csv.reader(fh), start=1) if any(c.strip() for c in r)]
    columns: dict[str, int | None] = {"x": 0, "y": 1, "label": 2, "score": 3}
    if rows and not _is_number(rows[0][1][0]):
        header = [c.strip().lower() for c in rows[0][1]]
        columns = {
            "x": _find(header, ("x",)),
            "y": _find(header, ("y",)),
            "label": _find(header, _LABEL_NAMES),
            "score": _find(header, _SCORE_NAMES),
        }
        rows = rows[1:]
    ix, iy = columns["x"], columns["y"]
    if ix is None or iy is None:
        raise AnnotationError(f"{path}: the header on line 1 has no 'x' and 'y' columns")
    out = []
    for line, row in rows:
        try:
            x, y = float(row[ix]), float(row[iy])
        except (ValueError, IndexError):
            raise AnnotationError(
                f"{path}: line {line} ({','.join(row)!r}) needs numbers x, y (level-0 px)"
            ) from None
        label = _cell(row, columns["label"]) or default_label
        score_text = _cell(row, columns["score"])
        try:
            score = float(score_text) if score_text else np.nan
        except ValueError:
            raise AnnotationError(
                f"{path}: line {line} has score {score_text!r}, not a number"
            ) from None
        out.append((slide, x, y, label, score, f"{path.name}:{line}"))
    return pd.DataFrame(out, columns=["slide", "x", "y", "label", "score", "id"])


def _find(header: list[str], names: tuple[str, ...]) -> int | None:
    return next((header.index(n) for n in names if n in header), None)


def _cell(row: list[str], index: int | None) -> str:
    if index is None or index >= len(row):
        return ""
    return row[index].strip()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def write_csv_folder(
    folder: str | os.PathLike,
    annotations: Annotations,
    *,
    header: bool = True,
) -> list[Path]:
    """Write one CSV per slide into ``folder`` (created if missing), each atomically.

    The CSV of ``case7.png`` is ``case7.csv`` with columns ``x,y,label`` and
    ``score`` when the annotations have scores; x, y in level-0 px, written
    with full float precision. A slide without cells gets a CSV with the
    header only. Images are not copied.

    Parameters
    ----------
    folder : str or os.PathLike
        Target folder.
    annotations : Annotations
        What to write.
    header : bool
        Write the header row.

    Returns
    -------
    list of pathlib.Path
        The files written, in slide order.

    Raises
    ------
    AnnotationError
        When two slides would share one CSV name.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = {s: slide_key(s) + ".csv" for s in annotations.slides}
    clash = pd.Series(list(names.values()))
    if clash.duplicated().any():
        twice = clash[clash.duplicated()].iloc[0]
        raise AnnotationError(f"two slides would both be written to {twice}; rename one")
    with_scores = annotations.has_scores
    frame = annotations.to_frame()
    groups = frame.groupby("slide", sort=False).indices
    written = []
    for slide in annotations.slides:
        rows = frame.iloc[groups.get(slide, [])]
        target = folder / names[slide]
        with atomic_write(target, newline="") as fh:
            writer = csv.writer(fh)
            if header:
                writer.writerow(["x", "y", "label", *(["score"] if with_scores else [])])
            scores = rows["score"].tolist() if with_scores else [None] * len(rows)
            for x, y, label, score in zip(
                rows["x"].tolist(), rows["y"].tolist(), rows["label"].tolist(), scores, strict=True
            ):
                line = [repr(x), repr(y), label]
                if with_scores:
                    line.append("" if score is None or np.isnan(score) else repr(score))
                writer.writerow(line)
        written.append(target)
    return written
