"""Test helpers: slides with dark disc marks at known positions, and a detector
that finds such marks exactly (darkness-weighted centroids), for checking the
pipeline's geometry independently of any learned model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
import torch
from scipy import ndimage

from wsimito.detect import resolve_device


class MarkDetector:
    """Finds dark discs; follows the wsimito.Detector protocol without subclassing anything."""

    def __init__(
        self,
        mpp: float = 0.25,
        tile_size: int = 128,
        overlap: int = 32,
        threshold: float = 0.5,
        device: str = "cpu",
    ) -> None:
        self.mpp, self.tile_size, self.overlap, self.threshold = mpp, tile_size, overlap, threshold
        self.device = resolve_device(device)
        self.name = "marks"
        self.metadata = {"training_data": "none (geometric test detector)"}
        self.min_distance_um = None
        self.calls = 0
        self.tiles_seen = 0

    def detect(self, tiles: torch.Tensor) -> list[torch.Tensor]:
        assert tiles.dtype == torch.uint8 and tiles.shape[1:] == (3, self.tile_size, self.tile_size)
        self.calls += 1
        self.tiles_seen += len(tiles)
        darkness = (255.0 - tiles.float().mean(dim=1)).cpu().numpy()  # (N, H, W)
        out = []
        for dark in darkness:
            labels, n = ndimage.label(dark > 40)
            if n == 0:
                out.append(torch.zeros((0, 3)))
                continue
            idx = np.arange(1, n + 1)
            weight = np.where(dark > 5, dark, 0)
            grown = ndimage.grey_dilation(labels, size=3)  # include the anti-aliased rim
            cy, cx = np.array(ndimage.center_of_mass(weight, grown, idx)).T
            pts = np.stack([cx + 0.5, cy + 0.5, np.ones(n)], axis=1)  # continuous pixel coords
            out.append(torch.from_numpy(pts).float())
        return out


def draw_marks(
    width: int, height: int, marks: np.ndarray, radius: float, supersample: int = 4
) -> np.ndarray:
    """White RGB image with anti-aliased dark discs of ``radius`` px centred at ``marks``.

    ``marks`` are level-0 px.
    """
    img = np.full((height, width), 255.0)
    r = radius
    for cx, cy in marks:
        x0, x1 = int(max(0, np.floor(cx - r - 1))), int(min(width, np.ceil(cx + r + 1)))
        y0, y1 = int(max(0, np.floor(cy - r - 1))), int(min(height, np.ceil(cy + r + 1)))
        s = supersample
        sub = (np.arange((x1 - x0) * s) + 0.5) / s + x0
        suby = (np.arange((y1 - y0) * s) + 0.5) / s + y0
        inside = ((sub[None, :] - cx) ** 2 + (suby[:, None] - cy) ** 2) <= r * r
        cover = inside.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3))
        img[y0:y1, x0:x1] -= 200.0 * cover
    gray = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def area_halve(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[0] // 2, image.shape[1] // 2
    return (
        image[: 2 * h, : 2 * w]
        .astype(np.float64)
        .reshape(h, 2, w, 2, 3)
        .mean(axis=(1, 3))
        .round()
        .astype(np.uint8)
    )


def write_pyramid(
    path: Path,
    image: np.ndarray,
    mpp: float,
    *,
    levels: int = 3,
    svs: bool = False,
    compression: str = "zlib",
) -> Path:
    """A tiled pyramid TIFF (generic, or Aperio-style SVS) with 2x area-averaged levels."""
    h, w = image.shape[:2]
    with tifffile.TiffWriter(path) as tif:
        level = image
        for i in range(levels):
            lh, lw = level.shape[:2]
            if svs:
                desc = (
                    f"Aperio Image Library v12.0.0\r\n{w}x{h} [0,0 {w}x{h}] (256x256) "
                    f"{'JPEG/RGB Q=95' if compression == 'jpeg' else 'RGB'}|AppMag = 40|MPP = {mpp}"
                )
                if i:
                    desc = f"Aperio Image Library v12.0.0\r\n{w}x{h} -> {lw}x{lh}"
            else:
                desc = None
            kwargs = {"compressionargs": {"level": 95}} if compression == "jpeg" else {}
            tif.write(
                level,
                tile=(256, 256),
                compression=compression,
                photometric="rgb",
                description=desc,
                subfiletype=1 if i and not svs else 0,
                resolution=(1e4 / (mpp * 2**i),) * 2,
                resolutionunit="CENTIMETER",
                metadata=None,
                **kwargs,
            )
            if min(level.shape[:2]) < 4:
                break
            level = area_halve(level)
    return path


def marks_near_borders(
    grid, width: int, height: int, radius_px: float, rng: np.random.Generator, n_random: int = 20
) -> np.ndarray:
    """Mark centres (level-0 px): on tile core borders, at the slide's edges, and random.

    The border marks lie within a few px of a core border.
    """
    margin = radius_px + 2
    cores = grid.cores()
    xs = np.unique(np.clip(cores[:, [0, 2]].ravel(), 0, width))
    ys = np.unique(np.clip(cores[:, [1, 3]].ravel(), 0, height))
    xs = xs[(xs > margin) & (xs < width - margin)]
    ys = ys[(ys > margin) & (ys < height - margin)]
    pts = []
    for x in xs:  # just left / right of vertical core borders
        for dx in (-3.2, 2.7):
            pts.append((x + dx, rng.uniform(margin, height - margin)))
    for y in ys:
        for dy in (-2.6, 3.1):
            pts.append((rng.uniform(margin, width - margin), y + dy))
    pts += [
        (margin + 0.3, margin + 0.4),
        (width - margin - 0.2, height - margin - 0.1),
        (margin + 0.1, height - margin - 0.3),
        (width - margin - 0.4, margin + 0.2),
    ]
    pts += [
        (rng.uniform(margin, width - margin), rng.uniform(margin, height - margin))
        for _ in range(n_random)
    ]
    # Keep marks at least 3 radii apart so they stay separate blobs.
    kept: list[tuple[float, float]] = []
    for p in pts:
        if all((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 > (3 * radius_px) ** 2 for q in kept):
            kept.append(p)
    return np.array(kept)
