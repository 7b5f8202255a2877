"""zarr reader: OME-Zarr multiscales (v0.4 and v0.5) and plain zarr arrays.

Axes are read from the multiscales metadata (``y``, ``x`` and ``c``; ``t``
and ``z`` take index 0). A plain array must be ``(h, w, 3)`` or ``(3, h, w)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UnsupportedImageError
from .backend import Backend
from .mpp import _UNIT_TO_UM
from .pixels import conversion_note, to_rgb8


class ZarrBackend(Backend):
    """Reads OME-Zarr multiscales and plain zarr arrays through zarr-python.

    Parameters
    ----------
    source : str
        Path or URL of the store (a group with OME multiscales, or an array).
    """

    name = "zarr"

    def __init__(self, source: str) -> None:
        import zarr

        self.source = str(source)
        node: Any = zarr.open(self.source, mode="r")
        attrs: dict[str, Any] = dict(node.attrs)
        ome: dict[str, Any] = attrs.get("ome", attrs)  # v0.5 nests under "ome"
        self.properties = {"zarr.format": str(getattr(node.metadata, "zarr_format", ""))}
        self._mpp: tuple[float | None, float | None] = (None, None)
        self._arrays: list[Any]
        if "multiscales" in ome:
            ms: dict[str, Any] = ome["multiscales"][0]
            axes = [
                a["name"] if isinstance(a, dict) else a for a in ms.get("axes", ["c", "y", "x"])
            ]
            units = {a["name"]: a.get("unit") for a in ms.get("axes", []) if isinstance(a, dict)}
            self._arrays = [node[d["path"]] for d in ms["datasets"]]
            scales = [_scale(d, axes) for d in ms["datasets"]]
            self.properties["ome.version"] = str(ms.get("version", ome.get("version", "")))
            sy, sx = scales[0]
            if sx and sy:
                factor = _UNIT_TO_UM.get(str(units.get("x") or "").lower())
                if factor is not None:
                    self._mpp = (sx * factor, sy * factor)
        else:
            if not hasattr(node, "shape"):
                raise ValueError(f"{self.source}: a zarr group without OME multiscales metadata")
            self._arrays = [node]
            shape = node.shape
            axes = ["y", "x", "c"] if shape[-1] in (3, 4) else ["c", "y", "x"]
        self._axes = axes
        dims = []
        for arr in self._arrays:
            shape = dict(zip(axes, arr.shape, strict=True))
            dims.append((int(shape["x"]), int(shape["y"])))
        self.level_dimensions = tuple(dims)
        w0 = dims[0][0]
        self.level_downsamples = tuple(w0 / w for w, _ in dims)
        channels = dict(zip(axes, self._arrays[0].shape, strict=True)).get("c", 1)
        try:
            self.conversion = conversion_note(self._arrays[0].dtype, int(channels))
        except ValueError as exc:
            raise UnsupportedImageError(f"{self.source}: {exc}") from None

    def _index(self, x: int, y: int, width: int, height: int) -> tuple[Any, ...]:
        idx: list[Any] = []
        for a in self._axes:
            idx.append(
                {"x": slice(x, x + width), "y": slice(y, y + height), "c": slice(0, 3)}.get(a, 0)
            )
        return tuple(idx)

    def read_level(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        arr = np.asarray(self._arrays[level][self._index(x, y, width, height)])
        kept = [a for a in self._axes if a in ("x", "y", "c")]
        arr = np.transpose(arr, [kept.index(a) for a in ("y", "x", "c") if a in kept])
        return to_rgb8(arr)

    def tile_size(self, level: int) -> tuple[int, int]:
        chunks = dict(zip(self._axes, self._arrays[level].chunks, strict=True))
        return (int(chunks["x"]), int(chunks["y"]))

    def mpp(self) -> tuple[float | None, float | None]:
        return self._mpp


def _scale(dataset: dict[str, Any], axes: list[str]) -> tuple[float | None, float | None]:
    for t in dataset.get("coordinateTransformations", []):
        if t.get("type") == "scale":
            s = dict(zip(axes, t["scale"], strict=True))
            return (float(s["y"]), float(s["x"]))
    return (None, None)
