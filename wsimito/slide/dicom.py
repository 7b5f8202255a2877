"""What is wrong with a DICOM whole-slide image that the readers refuse, in DICOM terms.

OpenSlide (and wsidicom) read a VL Whole Slide Microscopy series by grouping
the files of one folder by Series Instance UID and sorting them by the third
value of Image Type (VOLUME: a pyramid level; LABEL, OVERVIEW, THUMBNAIL: the
other images). A file without that value, or without the size of its total
pixel matrix, fails with a message such as "Couldn't get image flavor" that
names neither. :func:`dicom_problems` finds such gaps with pydicom, and
:func:`explain` turns them into a message with the repair.
"""

from __future__ import annotations

from pathlib import Path

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
"""SOP Class UID of VL Whole Slide Microscopy Image Storage."""
FLAVOURS = ("VOLUME", "LABEL", "OVERVIEW", "THUMBNAIL")
"""Values of Image Type value 3 that OpenSlide and wsidicom know."""
# Attributes a whole-slide image needs besides Image Type: keyword -> (tag, what it is).
_REQUIRED = {
    "TotalPixelMatrixColumns": ("(0048,0006)", "the width of the whole level, px"),
    "TotalPixelMatrixRows": ("(0048,0007)", "the height of the whole level, px"),
    "Rows": ("(0028,0010)", "the height of one tile (frame), px"),
    "Columns": ("(0028,0011)", "the width of one tile (frame), px"),
}
_TAGS = ["SOPClassUID", "SeriesInstanceUID", "ImageType", "NumberOfFrames", *_REQUIRED]
# At most this many other files of the folder are inspected for the series.
_MAX_FILES = 500


def is_dicom(path: str | Path) -> bool:
    """Whether ``path`` is a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:] == b"DICM"
    except OSError:
        return False


def dicom_problems(path: str | Path) -> list[str]:
    """The gaps that keep readers from the whole-slide series of ``path``, one sentence each.

    Parameters
    ----------
    path : str or pathlib.Path
        One DICOM file of the series; the other files of its folder with the
        same Series Instance UID are inspected too (as OpenSlide reads them).

    Returns
    -------
    list of str
        Empty when nothing is found missing.
    """
    import pydicom

    path = Path(path)
    first = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_TAGS)
    sop = str(first.get("SOPClassUID", ""))
    if sop != WSI_SOP_CLASS:
        name = getattr(first.get("SOPClassUID"), "name", "") or "unknown"
        return [
            f"{path.name} is a DICOM file of SOP Class {sop or '(none)'} ({name}), not a VL "
            f"Whole Slide Microscopy Image ({WSI_SOP_CLASS}); whole-slide readers read only "
            "those"
        ]
    series = first.get("SeriesInstanceUID")
    files = [(path, first)]
    others = sorted(p for p in path.parent.iterdir() if p != path and p.is_file())
    for other in others[:_MAX_FILES]:
        if not is_dicom(other):
            continue
        try:
            ds = pydicom.dcmread(other, stop_before_pixels=True, specific_tags=_TAGS)
        except Exception:  # noqa: S112 - an unreadable neighbour is not this file's problem
            continue
        if series is not None and ds.get("SeriesInstanceUID") == series:
            files.append((other, ds))
    problems = []
    for file, ds in files:
        image_type = list(ds.get("ImageType") or [])
        if not image_type:
            problems.append(f"{file.name} has no Image Type (0008,0008)")
        elif len(image_type) < 3 or str(image_type[2]).upper() not in FLAVOURS:
            value = image_type[2] if len(image_type) >= 3 else "(absent)"
            given = "\\".join(map(str, image_type))
            problems.append(
                f"{file.name} has Image Type {given} (0008,0008), "
                f"whose value 3 is {value}, not one of {', '.join(FLAVOURS)}"
            )
        for keyword, (tag, what) in _REQUIRED.items():
            if keyword not in ds:
                problems.append(f"{file.name} has no {keyword} {tag}, {what}")
    return problems


def explain(path: str | Path, problems: list[str], reader_error: str) -> str:
    """The message for a DICOM file the readers refuse: what is missing and how to repair it.

    Parameters
    ----------
    path : str or pathlib.Path
        The file given to :func:`wsimito.open_slide`.
    problems : list of str
        From :func:`dicom_problems`.
    reader_error : str
        What the readers said, appended for reference.

    Returns
    -------
    str
        One paragraph.
    """
    fixes = []
    text = " ".join(problems)
    if "Image Type" in text:
        fixes.append(
            "ds.ImageType = ['ORIGINAL', 'PRIMARY', 'VOLUME', 'NONE'] (VOLUME for a pyramid "
            "level; LABEL, OVERVIEW or THUMBNAIL for those images)"
        )
    if "TotalPixelMatrix" in text:
        fixes.append(
            "ds.TotalPixelMatrixColumns = <level width in px>; "
            "ds.TotalPixelMatrixRows = <level height in px>"
        )
    repair = (
        " Repair a copy with pydicom: ds = pydicom.dcmread(path); "
        + "; ".join(fixes)
        + "; ds.save_as(path), or export the slide again from the scanner's software."
        if fixes
        else ""
    )
    return (
        f"cannot open {path}: " + "; ".join(problems) + ". OpenSlide and wsidicom need Image "
        "Type value 3 to tell the pyramid levels (VOLUME) from the label and overview images, "
        "and Total Pixel Matrix Columns/Rows for the size of each level."
        + repair
        + f" (The reader said: {reader_error})"
    )
