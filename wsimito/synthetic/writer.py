"""Write a synthetic slide as a pyramidal tiled TIFF: generic TIFF or Aperio-style SVS.

Level 0 is rendered tile by tile and streamed to the file; each finished tile
is area-averaged into the next level, kept in a temporary memory-mapped file
beside the output, so memory stays bounded whatever the slide size. The file
is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from .artefacts import ArtefactSpec
from .render import Scene
from .truth import GroundTruth

FORMATS = ("svs", "tiff")
COMPRESSIONS = ("jpeg", "deflate")
_THUMBNAIL_PX = 768
_BIGTIFF_BYTES = 2**31


def _reduce(block: np.ndarray, f: int) -> np.ndarray:
    """Area-average ``f`` x ``f`` px blocks (trailing rows/columns that do not fill a block dropped)."""
    h, w = block.shape[0] // f, block.shape[1] // f
    s = block[: h * f, : w * f].reshape(h, f, w, f, 3).sum(axis=(1, 3), dtype=np.uint32)
    return ((s + f * f // 2) // (f * f)).astype(np.uint8)


def _pad(tile: np.ndarray, size: int) -> np.ndarray:
    if tile.shape[0] == size and tile.shape[1] == size:
        return tile
    out = np.full((size, size, 3), 255, np.uint8)
    out[: tile.shape[0], : tile.shape[1]] = tile
    return out


def _level0_tiles(
    scene: Scene, size: int, f: int, level1: np.ndarray | None
) -> Iterator[np.ndarray]:
    for y in range(0, scene.height, size):
        for x in range(0, scene.width, size):
            tile = scene.render(x, y, min(size, scene.width - x), min(size, scene.height - y))
            if level1 is not None:
                small = _reduce(tile, f)
                h = min(small.shape[0], level1.shape[0] - y // f)
                w = min(small.shape[1], level1.shape[1] - x // f)
                level1[y // f : y // f + h, x // f : x // f + w] = small[:h, :w]
            yield _pad(tile, size)


def _array_tiles(arr: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for y in range(0, arr.shape[0], size):
        for x in range(0, arr.shape[1], size):
            yield _pad(np.asarray(arr[y : y + size, x : x + size]), size)


def _fill_from(src: np.ndarray, dst: np.ndarray, f: int, size: int) -> None:
    """Area-average ``src`` into ``dst`` block by block (bounded memory)."""
    for y in range(0, dst.shape[0], size):
        for x in range(0, dst.shape[1], size):
            block = _reduce(np.asarray(src[y * f : (y + size) * f, x * f : (x + size) * f]), f)
            dst[y : y + block.shape[0], x : x + block.shape[1]] = block


def _level_sizes(width: int, height: int, f: int, size: int) -> list[tuple[int, int]]:
    dims = [(width, height)]
    while max(dims[-1]) > size and min(dims[-1]) >= f:
        w, h = dims[-1]
        dims.append((w // f, h // f))
    return dims


def _aperio_description(
    scene: Scene,
    dims: tuple[int, int],
    level_dims: tuple[int, int],
    size: int,
    compression: str,
    quality: int,
) -> str:
    w, h = dims
    codec = f"JPEG/RGB Q={quality}" if compression == "jpeg" else "Deflate/RGB"
    head = f"Aperio Image Library wsimito synthetic\r\n{w}x{h} [0,0 {w}x{h}] ({size}x{size})"
    if level_dims != dims:
        head += f" -> {level_dims[0]}x{level_dims[1]}"
    return (
        f"{head} {codec}|AppMag = {10.0 / scene.mpp:.4g}|MPP = {scene.mpp:.6g}"
        f"|wsimito.seed = {scene.seed}|wsimito.stain = {scene.stain.name}"
    )


def write_slide(
    path: str | os.PathLike,
    width: int,
    height: int,
    *,
    mpp: float = 0.25,
    seed: int = 0,
    stain: str = "random",
    format: str = "svs",
    compression: str = "jpeg",
    quality: int = 90,
    tile_size: int = 256,
    downsample: int = 2,
    artefacts: ArtefactSpec = "none",
    **scene_kwargs,
) -> GroundTruth:
    """Render a synthetic slide to ``path`` and return its ground truth (level-0 px).

    ``format``: "svs" (Aperio-style; OpenSlide and tiffslide read the mpp
    from ``MPP =`` in the description) or "tiff" (generic pyramidal TIFF,
    resolution tags in pixels per centimetre). ``compression``: "jpeg"
    (``quality`` 1-100) or "deflate" (lossless). ``tile_size``: 256 or 512 px.
    ``downsample``: 2 or 4, the factor between pyramid levels, each made by
    area averaging. ``artefacts``: "none", "realistic", "heavy" or an
    :class:`~wsimito.synthetic.Artefacts`. Level 0 equals
    :func:`~wsimito.synthetic.make_slide` with the same arguments (exactly
    with deflate).
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    if tile_size not in (256, 512):
        raise ValueError(f"tile_size must be 256 or 512 px, got {tile_size!r}")
    if downsample not in (2, 4):
        raise ValueError(f"downsample must be 2 or 4, got {downsample!r}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must lie in 1..100, got {quality!r}")
    scene = Scene.build(
        width, height, mpp=mpp, seed=seed, stain=stain, artefacts=artefacts, **scene_kwargs
    )
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} does not exist; create it first")
    dims = _level_sizes(scene.width, scene.height, downsample, tile_size)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    codec = (
        {"compression": "jpeg", "compressionargs": {"level": quality}}
        if compression == "jpeg"
        else {"compression": "zlib", "predictor": True}
    )
    try:
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".wsimito-levels-") as work:
            levels = [
                np.lib.format.open_memmap(
                    os.path.join(work, f"level{i}.npy"), mode="w+", dtype=np.uint8, shape=(h, w, 3)
                )
                for i, (w, h) in enumerate(dims)
                if i > 0
            ]
            bigtiff = scene.width * scene.height * 3 * 4 // 3 > _BIGTIFF_BYTES
            with tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tif:
                for i, (w, h) in enumerate(dims):
                    if i == 0:
                        data = _level0_tiles(
                            scene, tile_size, downsample, levels[0] if levels else None
                        )
                    else:
                        data = _array_tiles(levels[i - 1], tile_size)
                    res = 1e4 / (scene.mpp * scene.width / w)
                    desc = (
                        _aperio_description(scene, dims[0], (w, h), tile_size, compression, quality)
                        if format == "svs"
                        else f"wsimito synthetic slide; seed={scene.seed}; "
                        f"stain={scene.stain.name}; mpp={scene.mpp:.6g}"
                    )
                    tif.write(
                        data,
                        shape=(h, w, 3),
                        dtype=np.uint8,
                        tile=(tile_size, tile_size),
                        photometric="rgb",
                        description=desc,
                        resolution=(res, res),
                        resolutionunit="CENTIMETER",
                        subfiletype=1 if i and format == "tiff" else 0,
                        metadata=None,
                        **codec,
                    )
                    if i == 0:
                        for finer, coarser in zip(levels, levels[1:], strict=False):
                            _fill_from(finer, coarser, downsample, tile_size)
                        if format == "svs":
                            _write_thumbnail(tif, levels[-1] if levels else None, scene, codec)
            del levels
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return scene.truth()


def _write_thumbnail(
    tif: tifffile.TiffWriter, smallest: np.ndarray | None, scene: Scene, codec: dict
) -> None:
    """Aperio's second directory: a small stripped overview (tifffile expects it there).

    Aperio marks reduced levels as full images (NewSubfileType 0), so readers
    tell levels from the thumbnail by tiling alone.
    """
    if smallest is None:
        src = scene.render(0, 0, scene.width, scene.height)
    else:
        src = np.asarray(smallest)
    img = Image.fromarray(src)
    img.thumbnail((_THUMBNAIL_PX, _THUMBNAIL_PX), Image.Resampling.BOX)
    tif.write(
        np.asarray(img),
        photometric="rgb",
        metadata=None,
        description="Aperio Image Library wsimito synthetic\r\nthumbnail",
        **codec,
    )
