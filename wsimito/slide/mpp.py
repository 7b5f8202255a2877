"""Small named parsers that find the level-0 resolution (µm/px) in metadata.

Each parser takes a properties mapping (or a file object) and returns
``(mpp_x, mpp_y)`` in µm per pixel, or ``None`` when it finds nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# A resolution coarser than this is a screen DPI (72 or 96 dpi), not a scan.
_MAX_PLAUSIBLE_MPP = 100.0

_UNIT_TO_UM = {
    "centimeter": 1e4,
    "cm": 1e4,
    "3": 1e4,
    "inch": 25400.0,
    "2": 25400.0,
    "millimeter": 1e3,
    "mm": 1e3,
    "micrometer": 1.0,
    "micron": 1.0,
    "µm": 1.0,
    "um": 1.0,
    "nanometer": 1e-3,
    "nm": 1e-3,
}

MPPPair = tuple[float, float]


def _plausible(mx: float, my: float) -> MPPPair | None:
    if 0 < mx < _MAX_PLAUSIBLE_MPP and 0 < my < _MAX_PLAUSIBLE_MPP:
        return (mx, my)
    return None


def _float(value: object) -> float | None:
    try:
        f = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return f if f > 0 else None


def parse_openslide(props: Mapping[str, str]) -> MPPPair | None:
    """``openslide.mpp-x`` / ``openslide.mpp-y`` (also ``tiffslide.mpp-*``)."""
    for prefix in ("openslide", "tiffslide"):
        mx, my = _float(props.get(f"{prefix}.mpp-x")), _float(props.get(f"{prefix}.mpp-y"))
        if mx and my:
            return _plausible(mx, my)
    return None


def parse_aperio(props: Mapping[str, str]) -> MPPPair | None:
    """Aperio ``aperio.MPP`` or ``MPP = 0.4990`` in the SVS image description."""
    m = _float(props.get("aperio.MPP"))
    if m is None:
        desc = props.get("tiff.ImageDescription", "")
        match = re.search(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)", desc)
        m = _float(match.group(1)) if match else None
    return _plausible(m, m) if m else None


def parse_tiff_resolution(props: Mapping[str, str]) -> MPPPair | None:
    """TIFF ``XResolution``/``YResolution`` (px per unit) with ``ResolutionUnit``.

    Only centimetre and inch units count; "none" (1) and screen DPIs are ignored.
    """
    unit = str(props.get("tiff.ResolutionUnit", "")).strip().lower()
    scale = _UNIT_TO_UM.get(unit)
    if scale is None:
        return None
    rx, ry = _float(props.get("tiff.XResolution")), _float(props.get("tiff.YResolution"))
    if not rx or not ry:
        return None
    return _plausible(scale / rx, scale / ry)


def parse_ome_xml(xml: str) -> MPPPair | None:
    """``PhysicalSizeX/Y`` of the first OME ``Pixels`` element, honouring its units."""
    match = re.search(r"<(?:\w+:)?Pixels\b([^>]*)>", xml)
    if not match:
        return None
    attrs = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
    sx, sy = _float(attrs.get("PhysicalSizeX")), _float(attrs.get("PhysicalSizeY"))
    if not sx or not sy:
        return None
    ux = _UNIT_TO_UM.get(attrs.get("PhysicalSizeXUnit", "µm").lower())
    uy = _UNIT_TO_UM.get(attrs.get("PhysicalSizeYUnit", "µm").lower())
    if ux is None or uy is None:
        return None
    return _plausible(sx * ux, sy * uy)


def parse_properties(props: Mapping[str, str]) -> MPPPair | None:
    """Try every parser on a properties mapping, most specific first."""
    for parser in (parse_openslide, parse_aperio, parse_tiff_resolution):
        found = parser(props)
        if found:
            return found
    desc = props.get("tiff.ImageDescription", "")
    if "<OME" in desc:
        return parse_ome_xml(desc)
    return None


def tifffile_properties(page: Any) -> dict[str, str]:
    """The resolution tags of a ``tifffile.TiffPage`` as ``tiff.*`` properties."""
    props: dict[str, str] = {}
    tags = page.tags
    if "ImageDescription" in tags:
        props["tiff.ImageDescription"] = str(tags["ImageDescription"].value)
    if "XResolution" in tags and "YResolution" in tags:
        for axis in ("X", "Y"):
            num, den = tags[f"{axis}Resolution"].value
            props[f"tiff.{axis}Resolution"] = repr(num / den) if den else "0"
        unit = tags["ResolutionUnit"].value if "ResolutionUnit" in tags else 2
        props["tiff.ResolutionUnit"] = {1: "none", 2: "inch", 3: "centimeter"}.get(
            int(unit), "none"
        )
    return props
