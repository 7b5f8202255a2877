"""Class names, colours and ids shared by every reader, writer and plot.

The names are what QuPath shows and what SlideRunner stores; the colours are
RGB 0-255. Annotation readers tell mitotic figures from look-alikes by name:
:data:`MITOSIS_NAMES` and :data:`LOOKALIKE_NAMES` are the defaults (compared
case-insensitively, ignoring surrounding spaces), and every reader takes an
argument to override them.
"""

from __future__ import annotations

import uuid

MITOSIS_CLASS = "Mitotic figure"
MITOSIS_COLOR = (220, 20, 60)
LOOKALIKE_CLASS = "Non-mitotic figure"
LOOKALIKE_COLOR = (70, 130, 180)
CANDIDATE_CLASS = "Candidate (not counted)"
CANDIDATE_COLOR = (160, 160, 160)
TISSUE_CLASS = "Tissue"
TISSUE_COLOR = (0, 160, 60)
HOTSPOT_CLASS = "Hotspot"
HOTSPOT_COLOR = (255, 140, 0)

#: Class names that mean "mitotic figure" in MIDOG, MIDOG++, SlideRunner and QuPath files.
MITOSIS_NAMES = frozenset({"mitotic figure", "mitosis", "mitotic", "mitoses", "mitotic figures"})
#: Class names that mean "look-alike" (hard negative, "imposter").
LOOKALIKE_NAMES = frozenset(
    {
        "non-mitotic figure",
        "not mitotic figure",
        "mitotic figure lookalike",
        "mitotic-like figure",
        "hard negative",
        "imposter",
        "impostor",
        "non-mitosis",
        "nonmitosis",
        "lookalike",
        "look-alike",
    }
)

#: Namespace of the stable feature ids (uuid5 of the slide name and the point).
ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://wsimito/detections")


def hex_color(rgb: tuple[int, int, int]) -> str:
    """Write an RGB colour the way SlideRunner stores it.

    Parameters
    ----------
    rgb : tuple of (int, int, int)
        ``(r, g, b)``, each 0-255.

    Returns
    -------
    str
        ``"#rrggbb"``.

    Examples
    --------
    >>> from wsimito.classes import MITOSIS_COLOR, hex_color
    >>> hex_color(MITOSIS_COLOR)
    '#dc143c'
    """
    return "#{:02x}{:02x}{:02x}".format(*rgb)
