"""`count_mitoses`: stream a slide through a detector, merge at tile borders, count.

Data flow: a :class:`~wsimito.tiling.TileGrid` at the detector's mpp, tile
size and overlap covers the tissue; a :class:`~wsimito.reader.TileReader`
streams the tiles to the device in batches (read from the best pyramid level,
resampled on the device); optional stain work and the detector run there; a
detection is kept only by the tile whose core owns it, then a radius check
across neighbouring tiles removes near-duplicates (:mod:`wsimito.merge`).
Memory is bounded by the reader's prefetch window: nothing the size of the
slide is ever built.

What is counted (one rule for every number and export): a candidate whose
score reaches the threshold and whose point lies in the *analysed* tissue, the
tissue minus the cores of tiles that could not be read. See
:class:`~wsimito.result.MitosisResult`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol, cast, runtime_checkable

import numpy as np
import torch

from .detect import Detector, as_detector, choose_batch_size, resolve_device
from .merge import merge_across_tiles, owned
from .models.metadata import trained_on_synthetic
from .process_reads import PARALLEL_MODES, Parallel
from .progress import Progress
from .reader import OnError, TileBatch, TileReader, default_num_workers
from .result import MitosisResult
from .slide import Slide, open_slide
from .tiling import TileGrid
from .tissue import Tissue, detect_tissue

#: Longest side of the overview kept in a result, px.
_OVERVIEW_PX = 512
#: Default radius (µm) of the duplicate check across tiles when the detector names none.
DEFAULT_MERGE_RADIUS_UM = 3.0


@runtime_checkable
class StainTransform(Protocol):
    """A colour transform applied on the device to each batch before the detector.

    :class:`wsimito.stain.Macenko`, ``Reinhard``, ``Vahadane`` and ``FDA``
    follow it; a plain callable ``f(batch) -> batch`` works too.
    """

    def transform(self, batch: torch.Tensor) -> torch.Tensor:
        """Transform the colours of a batch.

        Parameters
        ----------
        batch : torch.Tensor
            The tiles, uint8 ``(N, 3, H, W)`` RGB.

        Returns
        -------
        torch.Tensor
            The transformed tiles, uint8 ``(N, 3, H, W)`` RGB on the same device.
        """
        ...


def _load(detector: Any, device: str | torch.device) -> Detector:
    if isinstance(detector, (str, Path)):
        from .models import load_detector

        return load_detector(detector, device=device)
    det = as_detector(detector)
    if device != "auto":
        target = resolve_device(device)
        if torch.device(det.device) != target:
            raise ValueError(
                f"the detector object lives on {det.device}, not {target}; move it "
                "there first or leave device='auto'"
            )
    return det


def _as_tissue(tissue: Any, slide: Slide, on_error: OnError) -> Tissue:
    if isinstance(tissue, str) and tissue == "auto":
        return detect_tissue(slide, on_error=on_error)
    if isinstance(tissue, (str, Path)):
        path = Path(tissue)
        if path.suffix.lower() not in (".geojson", ".json") or not path.is_file():
            raise ValueError(
                f"tissue={str(tissue)!r}: use 'auto', None (whole image), a Tissue, polygons "
                "(level-0 px), or the path of an existing GeoJSON file (e.g. annotations "
                "exported from QuPath)"
            )
        from .io.qupath import tissue_from_geojson

        return tissue_from_geojson(path, slide)
    if tissue is None:
        return Tissue.full(slide)
    if isinstance(tissue, Tissue):
        if tuple(tissue.dimensions) != tuple(slide.dimensions):
            raise ValueError(
                f"the Tissue covers a {tissue.dimensions} px slide, not this "
                f"{slide.dimensions} px one; detect the tissue on this slide"
            )
        return tissue
    return Tissue.from_polygons(tissue, slide)


def _made_by_wsimito(slide: Slide) -> bool:
    """Whether ``slide`` is a synthetic slide that wsimito rendered (its metadata says so)."""
    if slide.backend == "virtual":
        return True
    return any(
        "wsimito.synthetic" in key or "wsimito synthetic" in str(value)
        for key, value in slide.properties.items()
    )


def _check_parameters(
    threshold: float | None,
    batch_size: int | None,
    num_workers: int | None,
    on_error: OnError,
    merge_radius_um: float | None,
    mpp: float | None,
    parallel: str = "auto",
) -> None:
    """Every numeric keyword of :func:`count_mitoses`, checked before any work."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error={on_error!r}: use 'raise' or 'skip'")
    if parallel not in PARALLEL_MODES:
        raise ValueError(f"parallel={parallel!r}: use one of {PARALLEL_MODES}")
    if threshold is not None and not (isinstance(threshold, (int, float)) and 0 <= threshold <= 1):
        raise ValueError(
            f"threshold={threshold!r}: a score threshold must lie in [0, 1] (not NaN); "
            "leave it None for the detector's own"
        )
    for name, value, unit in (
        ("batch_size", batch_size, "tiles"),
        ("num_workers", num_workers, "reader threads"),
    ):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"{name}={value!r}: give a positive whole number of {unit}, or None")
    if merge_radius_um is not None and not (
        isinstance(merge_radius_um, (int, float))
        and math.isfinite(merge_radius_um)
        and merge_radius_um >= 0
    ):
        raise ValueError(
            f"merge_radius_um={merge_radius_um!r}: give a radius >= 0 µm, or None for the "
            "detector's min_distance_um"
        )
    if mpp is not None and not (isinstance(mpp, (int, float)) and math.isfinite(mpp) and mpp > 0):
        raise ValueError(
            f"mpp={mpp!r}: the level-0 resolution must be a positive, finite number of µm per "
            "pixel (about 0.25 for a 40x scan, 0.5 for 20x)"
        )


def count_mitoses(
    slide_or_path: Slide | str | Path | np.ndarray,
    detector: Detector | str | Path = "demo",
    *,
    tissue: Tissue | str | Any | None = "auto",
    threshold: float | None = None,
    batch_size: int | None = None,
    device: str | torch.device = "auto",
    stain: StainTransform | Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = True,
    num_workers: int | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    mpp: float | None = None,
    merge_radius_um: float | None = None,
    parallel: Parallel = "auto",
) -> MitosisResult:
    """Detect and count mitotic figures on a whole slide or region of interest.

    Parameters
    ----------
    slide_or_path : Slide, str, Path or numpy.ndarray
        A :class:`~wsimito.slide.Slide`, a path, or an ``(h, w, 3)`` uint8
        array (then ``mpp`` is required).
    detector : Detector, str or Path
        A registry name (``"demo"``), a weights path or URL, or any object that
        follows the :class:`wsimito.Detector` protocol.
    tissue : {"auto"}, Tissue, polygons, GeoJSON path or None
        ``"auto"`` runs :func:`wsimito.detect_tissue`; ``None`` analyses the
        whole image; a :class:`~wsimito.tissue.Tissue`; polygons in level-0 px;
        or the path of a GeoJSON file whose polygons are the region (e.g.
        annotations exported from QuPath, see :func:`wsimito.io.qupath.tissue_from_geojson`).
    threshold : float, optional
        Score threshold in [0, 1] for the count; the detector's own by default.
    batch_size : int, optional
        Tiles per forward pass; chosen from free memory on CUDA when ``None``.
    device : str or torch.device
        ``"auto"`` (CUDA, then MPS, then CPU), or a torch device for registry
        detectors; a detector object keeps its own device.
    stain : StainTransform or callable, optional
        A normalizer (``transform(batch)``, e.g. :class:`wsimito.stain.Macenko`)
        applied on the device to each uint8 batch before the detector.
    progress : bool
        Show a progress bar (tiles/s, ETA), in a terminal or in Jupyter.
    num_workers : int, optional
        Reader threads or processes (default: up to 4 when the detector runs on
        the CPU, up to 8 on CUDA; :func:`wsimito.reader.default_num_workers`).
    on_error : {"raise", "skip"}
        ``"raise"`` stops at a tile that fails twice; ``"skip"`` records it in
        ``result.skipped_tiles``, removes its core from the analysed tissue
        (area, density and hotspot use the area really read) and warns.
    mpp : float, optional
        Level-0 resolution, µm/px, for images that carry none. Where the file
        has one, the file's wins; a value more than 1 % off it is warned about
        and both are recorded in the result.
    merge_radius_um : float, optional
        Radius, µm, of the duplicate check across neighbouring tiles (default:
        the detector's ``min_distance_um``, else 3 µm).
    parallel : {"auto", "threads", "processes"}
        How the readers run: threads, or processes that hand pixels over through
        shared memory (for backends that hold the GIL while decoding; see
        :class:`wsimito.reader.TileReader`). ``"auto"`` chooses.

    Returns
    -------
    MitosisResult
        Points in level-0 px, the count (figures at or above the threshold
        inside the analysed tissue), the density per mm², the hotspot, exporters.

    Raises
    ------
    MissingMPPError
        The image carries no resolution and ``mpp`` was not given.
    TileReadError
        A tile failed twice and ``on_error="raise"``.
    ValueError
        A parameter is out of range (the message names it, its unit and range).

    Warns
    -----
    UserWarning
        When no tissue was analysed (count 0, density NaN), when tiles were
        skipped, when ``mpp`` disagrees with the file, and whenever a detector
        trained on synthetic data runs on a slide that wsimito did not make.
    """
    _check_parameters(threshold, batch_size, num_workers, on_error, merge_radius_um, mpp, parallel)
    t_start = time.perf_counter()
    if not isinstance(slide_or_path, Slide):
        slide, own_slide = open_slide(slide_or_path, mpp=mpp), True
    elif mpp is not None:
        slide, own_slide = slide_or_path.reopen(mpp=mpp), True
    else:
        slide, own_slide = slide_or_path, False
    try:
        det = _load(detector, device)
        slide_mpp = slide.mpp  # MissingMPPError before any work
        metadata = dict(getattr(det, "metadata", {}) or {})
        if trained_on_synthetic(metadata) and not _made_by_wsimito(slide):
            warnings.warn(
                f"the detector {det.name!r} was trained on synthetic mitotic figures only and is "
                f"not for diagnostic use; its count on {slide.name}, a slide wsimito did not make, "
                "is a demonstration. "
                "Pass detector= real weights (e.g. 'midog21-retinanet', or your own checkpoint, "
                "see wsimito.train).",
                UserWarning,
                stacklevel=2,
            )
        tissue_obj = _as_tissue(tissue, slide, on_error)
        t_tissue = time.perf_counter() - t_start
        tile_size, overlap = int(det.tile_size), int(det.overlap)
        grid = TileGrid(
            slide, tile_size=tile_size, overlap=overlap, mpp=float(det.mpp), tissue=tissue_obj
        )
        boxes, cores = grid.boxes(), grid.cores()
        if batch_size is None:
            batch_size = choose_batch_size(det)
        workers = num_workers if num_workers is not None else default_num_workers(det.device)
        reader = TileReader(
            slide,
            boxes,
            mpp=float(det.mpp),
            tile_size=tile_size,
            overlap=overlap,
            batch_size=batch_size,
            device=torch.device(det.device),
            num_workers=workers,
            on_error=on_error,
            parallel=parallel,
        )
        transform = _stain_transform(stain, torch.device(det.device))
        stages: dict[str, float] = {}
        points, scores, tile_ids, skipped = _run(reader, det, cores, transform, progress, stages)
        radius_um = (
            merge_radius_um
            if merge_radius_um is not None
            else float(getattr(det, "min_distance_um", None) or DEFAULT_MERGE_RADIUS_UM)
        )
        keep = merge_across_tiles(points, scores, tile_ids, radius_um / slide_mpp)
        points, scores = points[keep], scores[keep]
        seconds = time.perf_counter() - t_start
        infer_seconds = seconds - t_tissue
        result = MitosisResult(
            points=points,
            scores=scores,
            threshold=float(det.threshold if threshold is None else threshold),
            slide_name=slide.name,
            slide_path=slide.path,
            slide_dimensions=slide.dimensions,
            slide_mpp=slide_mpp,
            mpp_file=slide.file_mpp,
            mpp_given=mpp if mpp is not None else slide.given_mpp,
            bounds_offset=(float(slide.bounds[0]), float(slide.bounds[1])),
            tissue=tissue_obj,
            detector_name=str(det.name),
            detector_metadata=metadata,
            detector_mpp=float(det.mpp),
            timing={
                "tiles": len(boxes),
                "seconds": seconds,
                "tissue_seconds": t_tissue,
                "tiles_per_s": len(boxes) / infer_seconds if infer_seconds > 0 else 0.0,
                **stages,
            },
            skipped_tiles=[_box(boxes[i]) for i, _ in skipped],
            skipped_cores=[_box(cores[i]) for i, _ in skipped],
            thumbnail=_overview(slide, tissue_obj),
        )
        if skipped:
            warnings.warn(
                f"{len(skipped)} tile(s) of {slide.name} could not be read and were skipped: "
                f"{result.skipped_area_mm2:.3g} mm² of tissue left the analysed area, so the "
                "result is partial (see result.skipped_tiles and result.partial)",
                UserWarning,
                stacklevel=2,
            )
        if result.tissue_area_mm2 <= 0:
            warnings.warn(
                f"no tissue was analysed on {slide.name}: {_why_no_tissue(tissue, result)}. "
                "The count is 0 and the density NaN, which is not a measured zero.",
                UserWarning,
                stacklevel=2,
            )
        return result
    finally:
        if own_slide:
            slide.close()


def _box(row: np.ndarray) -> tuple[float, float, float, float]:
    a, b, c, d = (float(v) for v in row)
    return (a, b, c, d)


def _why_no_tissue(tissue: Any, result: MitosisResult) -> str:
    if result.partial:
        return "every region with tissue failed to read"
    if isinstance(tissue, str):
        return (
            "tissue detection found none (a blank, greyscale or very narrow image?); pass "
            "tissue=None to analyse the whole image or give polygons"
        )
    return "the given tissue is empty"


def _stain_transform(
    stain: object, device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if stain is None:
        return None
    to = getattr(stain, "to", None)
    if callable(to):
        stain = to(device)
    if isinstance(stain, StainTransform):
        return stain.transform
    if callable(stain):
        return cast(Callable[[torch.Tensor], torch.Tensor], stain)
    raise TypeError(
        f"stain must have transform(batch) (e.g. wsimito.stain.Macenko) or be callable; got "
        f"{type(stain).__name__}"
    )


def _overview(slide: Slide, tissue: Tissue) -> np.ndarray | None:
    """A small overview for the result's display.

    The image tissue detection already read (8 µm/px by default) serves when it
    is at least 512 px on its longer side, so the slide is not read a second
    time; otherwise a 512 px thumbnail is read. A failed read only loses the
    picture.
    """
    image = tissue.image
    if image is not None and max(image.shape[:2]) >= _OVERVIEW_PX:
        from PIL import Image

        s = tissue.scale
        width, height = slide.dimensions
        image = image[: max(1, round(height / s)), : max(1, round(width / s))]
        factor = _OVERVIEW_PX / max(image.shape[:2])
        size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
        return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
    try:
        return slide.thumbnail(_OVERVIEW_PX)
    except Exception as exc:  # a broken region must not discard a finished count
        warnings.warn(f"no overview image for {slide.name}: {exc}", stacklevel=3)
        return None


def _run(
    reader: TileReader,
    det: Detector,
    cores: np.ndarray,
    transform: Callable[[torch.Tensor], torch.Tensor] | None,
    progress: bool,
    stages: dict[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """Stream every tile through the detector.

    The outputs of batch ``k`` are merged on the host only after batch ``k + 1``
    was handed to the detector. The bundled detectors synchronise once per batch
    inside ``detect`` (to learn how many peaks or boxes each tile has) and then
    suppress on the host for the whole batch; the reader threads keep decoding
    the next batches meanwhile.

    ``stages``, when given, receives the main thread's seconds spent waiting for
    the reader (``"read_wait_seconds"``), in the stain transform and ``detect``
    (``"detect_seconds"``) and merging a batch's points (``"merge_seconds"``): what
    limits a run shows as the largest of them.

    Returns the owned points (level-0 px), their scores and tile ids, and the
    skipped tiles ``(index, error)``.
    """
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    skipped: list[tuple[int, str]] = []
    pending: tuple[TileBatch, list[torch.Tensor]] | None = None
    wait = detect = merge = 0.0
    with Progress(
        len(reader.boxes), f"counting mitoses in {reader.slide.name}", enabled=progress
    ) as bar:
        batches = iter(reader)
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            t1 = time.perf_counter()
            wait += t1 - t0
            if batch is None:
                break
            skipped.extend(batch.skipped)
            if len(batch):
                outputs = _detect_batch(batch, det, transform)
                t2 = time.perf_counter()
                detect += t2 - t1
                if pending is not None:
                    found.append(_owned_points(*pending, cores))
                merge += time.perf_counter() - t2
                pending = (batch, outputs)
            bar.advance(len(batch) + len(batch.skipped))
        if pending is not None:
            t0 = time.perf_counter()
            found.append(_owned_points(*pending, cores))
            merge += time.perf_counter() - t0
    if stages is not None:
        stages.update(read_wait_seconds=wait, detect_seconds=detect, merge_seconds=merge)
    if not found:
        return np.empty((0, 2)), np.empty(0), np.empty(0, dtype=np.int64), skipped
    xy, score, tile = (np.concatenate(parts) for parts in zip(*found, strict=True))
    return xy, score, tile, skipped


def _detect_batch(
    batch: TileBatch,
    det: Detector,
    transform: Callable[[torch.Tensor], torch.Tensor] | None,
) -> list[torch.Tensor]:
    """Stain-transform and detect one batch on the device; outputs stay on the device."""
    pixels = batch.pixels
    if transform is not None:
        pixels = transform(pixels)
    with torch.inference_mode():
        outputs = det.detect(pixels)
    if len(outputs) != len(batch):
        raise RuntimeError(
            f"{type(det).__name__}.detect returned {len(outputs)} results for "
            f"{len(batch)} tiles; it must return one (K, 3) tensor per tile"
        )
    return outputs


def _owned_points(
    batch: TileBatch, outputs: list[torch.Tensor], cores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One batch's detections kept by core ownership: level-0 points, scores and tile ids."""
    sizes = [int(out.shape[0]) for out in outputs]
    if not sum(sizes):
        return np.empty((0, 2)), np.empty(0), np.empty(0, dtype=np.int64)
    flat = torch.cat([out.reshape(-1, 3) for out in outputs]).to("cpu", torch.float64).numpy()
    tile_pos = np.repeat(np.arange(len(outputs)), sizes)
    xy = batch.corners[tile_pos] + flat[:, :2] * batch.scale
    tile_ids = batch.index[tile_pos]
    mine = owned(xy, cores[tile_ids].T)
    return xy[mine], flat[mine, 2], tile_ids[mine]
