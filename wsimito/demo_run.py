"""``wsimito demo``: the whole job on a synthetic slide whose every mitotic figure is known.

:func:`run_demo` writes a synthetic Aperio-style SVS, counts its mitotic
figures with the bundled ``"demo"`` detector through
:func:`wsimito.count_mitoses`, writes the QuPath GeoJSON, an overview PNG and
a JSON summary, scores the detections against the ground truth (MIDOG
matching, 7.5 µm) and prints what it found.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .classes import HOTSPOT_COLOR, MITOSIS_COLOR, TISSUE_COLOR
from .evaluate import MIDOG_RADIUS_UM, DetectionScore, match_points, score_points
from .io.atomic import atomic_path, atomic_write
from .overview import PointLayer, draw_overview
from .result import MitosisResult
from .synthetic import GroundTruth, random_stain, write_slide

#: Level-0 resolution of the demo slide, µm/px (a 40x scan).
DEMO_SLIDE_MPP = 0.25
#: Mitotic figures per mm² of tumour tissue on the demo slide: a high-grade
#: tumour (the MIDOG++ mean is 10.3, its 90th percentile 28.5), so the picture
#: and the F1 have enough figures to show.
DEMO_DENSITY_PER_MM2 = 40.0
#: Share of the demo slide covered by tissue, so that a 10-HPF hotspot fits.
DEMO_TISSUE_FRACTION = 0.6
#: Longest side of ``overview.png``, px.
OVERVIEW_PX = 1200
TRUTH_COLOR = (0, 170, 255)
WARNING = (
    "The demo detector was trained on synthetic H&E only and is for demonstration; "
    "it is not for diagnostic use."
)


@dataclass(frozen=True)
class DemoRun:
    """What :func:`run_demo` produced: the result, the ground truth, the score and the files.

    Attributes
    ----------
    result : MitosisResult
        What the demo detector found.
    truth : GroundTruth
        Every mitotic figure of the synthetic slide.
    score : DetectionScore
        Detections against the truth, MIDOG matching (7.5 µm).
    slide : pathlib.Path
        The synthetic SVS.
    geojson : pathlib.Path
        The QuPath GeoJSON.
    overview : pathlib.Path
        The overview PNG.
    summary : pathlib.Path
        The JSON summary.
    seconds : float
        Wall time of the whole demo, s.
    """

    result: MitosisResult
    truth: GroundTruth
    score: DetectionScore
    slide: Path
    geojson: Path
    overview: Path
    summary: Path
    seconds: float


def run_demo(out: Path, seed: int = 2026, size: int = 8000, *, progress: bool = True) -> DemoRun:
    """Run the demo: synthetic slide, count, GeoJSON, overview PNG, summary and F1.

    Writes ``out/synthetic-<seed>.svs``, ``out/synthetic-<seed>.geojson``,
    ``out/overview.png`` and ``out/summary.json``, and prints the count,
    density, hotspot, F1 / precision / recall and the synthetic-data warning.

    Parameters
    ----------
    out : pathlib.Path
        Folder for the files (created if missing).
    seed : int
        Seeds the slide and its stain (a random variation of a preset); the
        demo detector was trained on seeds 10,000 and up, so keep ``seed``
        below 10,000 for a slide it has never seen.
    size : int
        Side of the square slide, px at 0.25 µm/px (8000 px = 2 mm; the
        10-HPF hotspot window is 1.54 mm wide).
    progress : bool
        Show progress bars.

    Returns
    -------
    DemoRun
        The result, the ground truth, the score and the paths written.

    Raises
    ------
    ValueError
        ``size`` is below 512 px.
    """
    from rich.console import Console

    from .pipeline import count_mitoses

    if size < 512:
        raise ValueError(f"size must be at least 512 px at 0.25 µm/px, got {size}")
    console = Console()
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stain = random_stain(seed)
    name = f"synthetic-{seed}"
    slide_path = out / f"{name}.svs"
    with (
        console.status(
            f"writing a {size} x {size} px synthetic slide ({stain.name} stain)", spinner="dots"
        )
        if progress
        else nullcontext()
    ):
        truth = write_slide(
            slide_path,
            size,
            size,
            mpp=DEMO_SLIDE_MPP,
            seed=seed,
            stain=stain,
            format="svs",
            compression="jpeg",
            tissue_fraction=DEMO_TISSUE_FRACTION,
            mitoses_per_mm2=DEMO_DENSITY_PER_MM2,
        )
    result = count_mitoses(slide_path, "demo", tissue="auto", progress=progress)
    candidates = np.column_stack([result.points, result.scores])
    score = score_points(candidates, truth.mitoses, mpp=DEMO_SLIDE_MPP, threshold=result.threshold)
    geojson = result.to_geojson(out / f"{name}.geojson")
    overview = write_overview(out / "overview.png", result, truth, slide_path)
    seconds = time.perf_counter() - start
    summary = out / "summary.json"
    with atomic_write(summary) as fh:
        json.dump(
            _summary(
                result,
                truth,
                score,
                seed,
                stain.name,
                seconds,
                {"slide": slide_path, "geojson": geojson, "overview": overview},
            ),
            fh,
            indent=2,
            allow_nan=False,
        )
    run = DemoRun(result, truth, score, slide_path, Path(geojson), overview, summary, seconds)
    _print(console, run)
    return run


def _finite(value: Any) -> Any:
    """JSON has no NaN: undefined rates (e.g. precision without detections) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _summary(
    result: MitosisResult,
    truth: GroundTruth,
    score: DetectionScore,
    seed: int,
    stain: str,
    seconds: float,
    files: dict[str, Path],
) -> dict[str, Any]:
    row = {
        **result.summary(),
        "synthetic_seed": seed,
        "synthetic_stain": stain,
        "true_mitotic_figures": len(truth.mitoses),
        "true_look_alikes": len(truth.imposters),
        "match_radius_um": MIDOG_RADIUS_UM,
        "true_positives": score.tp,
        "false_positives": score.fp,
        "false_negatives": score.fn,
        "f1": score.f1,
        "precision": score.precision,
        "recall": score.recall,
        "demo_seconds": seconds,
        "files": {key: str(path) for key, path in files.items()},
        "warning": WARNING,
    }
    return {key: _finite(value) for key, value in row.items()}


def _print(console: Any, run: DemoRun) -> None:
    from rich.panel import Panel
    from rich.table import Table

    from .models.metadata import detector_note

    result, score, spot = run.result, run.score, run.result.hotspot
    table = Table(title=f"wsimito demo: {run.slide.name}", show_header=False)
    table.add_row(
        "mitotic figures found",
        f"{result.count} (ground truth: {len(run.truth.mitoses)}, "
        f"plus {len(run.truth.imposters)} look-alikes)",
    )
    table.add_row("tissue area", f"{result.tissue_area_mm2:.2f} mm²")
    table.add_row("density", f"{result.density_per_mm2:.1f} per mm² of tissue")
    if spot.whole_tissue:
        table.add_row(
            "hotspot",
            f"{spot.count} in the whole tissue ({spot.area_mm2:.2f} mm²): no 10-HPF window fits",
        )
    else:
        table.add_row("hotspot", f"{spot.count} per 10 HPF ({spot.area_mm2:.2f} mm² window)")
    table.add_row(
        "F1 (7.5 µm)",
        f"{score.f1:.3f}  precision {score.precision:.3f}, "
        f"recall {score.recall:.3f}  (TP {score.tp}, FP {score.fp}, FN {score.fn})",
    )
    table.add_row(
        "detector",
        f"{result.detector_name}, threshold {result.threshold:.2f}, {result.detector_mpp:g} µm/px",
    )
    table.add_row("time", f"{run.seconds:.0f} s ({result.timing.get('tiles')} tiles)")
    console.print(table)
    console.print(f"files in [bold]{run.slide.parent}[/bold]:")
    for label, path in (
        ("slide (open in QuPath)", run.slide),
        ("detections (QuPath: File > Import objects)", run.geojson),
        ("overview", run.overview),
        ("summary", run.summary),
    ):
        console.print(f"  {label}: {path}")
    note = detector_note(result.detector_metadata)
    console.print(Panel(note or WARNING, title="synthetic data", style="yellow"))


def write_overview(
    path: Path,
    result: MitosisResult,
    truth: GroundTruth,
    slide_path: Path,
    max_size: int = OVERVIEW_PX,
) -> Path:
    """Draw the demo's overview PNG, with a legend.

    The slide with the tissue outline, the hotspot, the ground-truth figures (blue
    rings) and the detections (red dots; missed figures and false alarms stand out).

    Parameters
    ----------
    path : pathlib.Path
        The PNG file to write.
    result : MitosisResult
        What the demo detector found.
    truth : GroundTruth
        The synthetic slide's ground truth.
    slide_path : pathlib.Path
        The slide ``result`` was counted on.
    max_size : int
        Longest side of the picture, px.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    from .slide import open_slide

    with open_slide(slide_path) as slide:
        thumb = slide.thumbnail(max_size)
    spot = result.hotspot
    detected = result.counted().xy
    matched, _ = match_points(detected, truth.mitoses, MIDOG_RADIUS_UM / result.slide_mpp)
    image = Image.fromarray(
        draw_overview(
            thumb,
            result.slide_dimensions,
            size=max(thumb.shape[:2]),
            tissue=result.analysed_tissue.geometry,
            hotspot=None if spot.whole_tissue else spot.polygon,
            tissue_width=2,
            hotspot_width=3,
            legend=[(TISSUE_COLOR, "tissue"), (HOTSPOT_COLOR, "hotspot (10 HPF)")],
            layers=[
                PointLayer(
                    truth.mitoses,
                    TRUTH_COLOR,
                    radius=7,
                    label=f"ground truth ({len(truth.mitoses)})",
                ),
                PointLayer(
                    detected,
                    MITOSIS_COLOR,
                    radius=4,
                    style="dot",
                    label=f"detections ({len(detected)}, {len(matched)} correct)",
                ),
            ],
        )
    )
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)
