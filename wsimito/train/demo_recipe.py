"""The reproducible recipe behind the bundled ``"demo"`` detector.

The demo (version 2) is a :class:`~wsimito.models.cascade.CascadeDetector`:
a point detector proposes candidates and a patch classifier rescores them.
Its mitotic figures are all synthetic (:mod:`wsimito.synthetic`); real H&E
enters only as negatives, mined from two sample images that are assumed to
hold no mitotic figures (:data:`REAL_NEGATIVES`). The CMU sample is never
used: it is the test for false alarms on real tissue.

First stage (version 1 of the demo, unchanged):

1. :func:`build_dataset`: training crops (``CROP`` px at ``DEMO_MPP`` µm/px)
   from many slide seeds, each with its own random stain variation; two
   stain presets (:data:`HELD_OUT_PRESETS`) are never used, so evaluation can
   test unseen stains. Mitotic figures are raised to 120-300 per mm² of
   tissue and look-alikes kept at 1.2-2.5 per figure (MIDOG++: 1.2), so the
   network must learn shape, not darkness. Half of the crops are rendered at
   0.25 µm/px and area-averaged to 0.5 µm/px (what a pyramid level holds),
   half rendered at 0.5 µm/px directly (what a virtual slide draws); half go
   through JPEG.
2. :func:`stain_views`: each crop plus two copies with HED stain jitter and
   random Fourier domain adaptation (:mod:`wsimito.stain`), on top of the
   flips and rotations of :func:`~wsimito.train.heatmap.train_point_detector`.
3. :func:`train_demo_detector`: a small :class:`~wsimito.models.PointHeatmapNet`.
4. :func:`select_threshold`: the decision threshold with the best pooled F1
   (MIDOG matching, 7.5 µm) on validation slides run through
   :func:`wsimito.count_mitoses`.
5. :func:`evaluate`: F1 per stain variation on held-out slides (seeds and
   stains never used in training), for any detector.

Second stage (:class:`CascadeRecipe`):

6. :func:`mine_synthetic`: the first stage runs over artefact-rich and
   look-alike-rich synthetic slides (:func:`mining_specs`, some of them
   mitosis-free) at a low threshold; :func:`wsimito.train.mining.mine_hard_negatives`
   sorts its candidates into hits and hard negatives, and the annotated
   look-alikes join the negatives;
7. :func:`mine_real`: the first stage at a still lower threshold and the
   dark-blob detector (every dark nucleus) run over the real images of
   :data:`REAL_NEGATIVES`, declared mitosis-free: every candidate is a negative;
8. :func:`train_second_stage`: the patch classifier, trained with WS-DAL
   (:mod:`wsimito.train.wsdal`) on patches around all of them;
9. the cascade's threshold: best pooled F1 on the validation slides (step 4).

Seed ranges: training slides from 10,000 (mining slides from 12,000),
validation from 20,000, test from 30,000; the demo's default seed (2026)
lies in none of them.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ..evaluate import DetectionScore, score_points
from ..models import PointDetector, PointHeatmapNet
from ..models.cascade import CascadeDetector
from ..models.metadata import DEMO_METADATA
from ..stain import HEDJitter, RandomFDA
from ..synthetic import (
    PRESETS,
    ArtefactPreset,
    StainModel,
    make_slide,
    random_stain,
    write_slide,
)
from ..synthetic.truth import GroundTruth
from .heatmap import train_point_detector
from .wsdal import ClassifierConfig, PatchSet, TrainedClassifier, train_patch_classifier

if TYPE_CHECKING:
    from ..detect import Detector
    from ..models.detectors import DarkBlobDetector
    from ..slide import Slide

#: Resolution the demo detector works at, µm/px: figures of 8-15 µm are 16-30 px.
DEMO_MPP = 0.5
#: Detector tile side, px at ``DEMO_MPP`` (256 µm).
TILE_SIZE = 512
#: Tile overlap, px at ``DEMO_MPP`` (32 µm, twice the largest figure).
OVERLAP = 64
#: Training crop side, px at ``DEMO_MPP``.
CROP = 256
#: Network size: about 0.47 M parameters, 1.9 MB.
NETWORK = {"width": 16, "depth": 4, "stride": 4, "blocks": 1}
#: Stain presets never used for training or validation.
HELD_OUT_PRESETS = ("pale", "cool-scanner")
#: Resolution of the validation and test slides, µm/px (as scanned at 40x).
SLIDE_MPP = 0.25
TRAIN_SEED0, VALIDATION_SEED0, TEST_SEED0 = 10_000, 20_000, 30_000


Log = Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    """Knobs of the demo training run (defaults: the shipped weights).

    Parameters
    ----------
    train_slides : int
        Synthetic training slides, 4 crops each.
    steps : int
        Optimiser steps.
    batch_size : int
        Crops per step.
    lr : float
        Peak learning rate (AdamW, one-cycle schedule).
    validation_slides : int
        Validation slides the threshold is chosen on.
    validation_size : int
        Side of each validation slide, px at 0.25 µm/px.
    seed : int
        Seeds sampling and augmentation.
    """

    train_slides: int = 300
    steps: int = 2400
    batch_size: int = 8
    lr: float = 3e-3
    validation_slides: int = 6
    validation_size: int = 3000
    seed: int = 0


@dataclass(frozen=True)
class SlideSpec:
    """One evaluation slide.

    Parameters
    ----------
    variation : str
        The label its scores are grouped under.
    seed : int
        Seeds the slide.
    stain : StainModel
        Its stain.
    size : int
        Side, px at 0.25 µm/px.
    mitoses_per_mm2 : float
        Mean mitotic figures per mm² of tissue.
    """

    variation: str
    seed: int
    stain: StainModel
    size: int
    mitoses_per_mm2: float


def held_out(stain: StainModel) -> bool:
    """Tell whether a stain is, or is a random variation of, a held-out preset.

    Parameters
    ----------
    stain : StainModel
        The stain.

    Returns
    -------
    bool
        True for a preset of :data:`HELD_OUT_PRESETS` or a variation of one.
    """
    return any(stain.name == p or stain.name.endswith(f"({p})") for p in HELD_OUT_PRESETS)


def training_stains(count: int, first_seed: int) -> list[tuple[int, StainModel]]:
    """Draw random stains from consecutive seeds, skipping held-out presets.

    Parameters
    ----------
    count : int
        Stains wanted.
    first_seed : int
        The first seed tried.

    Returns
    -------
    list of (int, StainModel)
        ``count`` (seed, stain) pairs, seeds increasing from ``first_seed``.
    """
    pairs: list[tuple[int, StainModel]] = []
    seed = first_seed
    while len(pairs) < count:
        stain = random_stain(seed)
        if not held_out(stain):
            pairs.append((seed, stain))
        seed += 1
    return pairs


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def render_training_slide(
    index: int, seed: int, stain: StainModel
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Render one training slide as four crops with their mitotic figures.

    Parameters
    ----------
    index : int
        The slide's position in the training set; it picks the rendering path:
        even at 0.25 µm/px then area-averaged, odd at 0.5 µm/px directly, and
        60 % tissue (else 100 %) when a multiple of 4.
    seed : int
        Seeds the slide (and its figure density and JPEG quality).
    stain : StainModel
        Its stain.

    Returns
    -------
    list of (torch.Tensor, torch.Tensor)
        Four pairs: a uint8 ``(3, CROP, CROP)`` crop at ``DEMO_MPP`` µm/px and
        the float32 ``(K, 2)`` x, y of its mitotic figures, crop px (figures up
        to 8 px outside the crop included).
    """
    rng = np.random.default_rng([seed, 0xDE30])
    side = 2 * CROP
    render = functools.partial(
        make_slide,
        seed=seed,
        stain=stain,
        tissue_fraction=1.0 if index % 4 else 0.6,
        tumour_fraction=0.8,
        mitoses_per_mm2=float(rng.uniform(120, 300)),
        imposters_per_mitosis=float(rng.uniform(1.2, 2.5)),
    )
    if index % 2 == 0:
        fine, truth = render(2 * side, 2 * side, mpp=DEMO_MPP / 2)
        image = fine.reshape(side, 2, side, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8)
        points = truth.mitoses / 2
    else:
        image, truth = render(side, side, mpp=DEMO_MPP)
        points = truth.mitoses
    if rng.random() < 0.5:
        image = _jpeg(image, int(rng.integers(70, 96)))
    crops = []
    margin = 8.0  # px: figures just outside a crop still shape its border
    for y in (0, CROP):
        for x in (0, CROP):
            pts = points - (x, y)
            keep = np.all((pts > -margin) & (pts < CROP + margin), axis=1)
            crop = np.ascontiguousarray(image[y : y + CROP, x : x + CROP].transpose(2, 0, 1))
            crops.append((torch.from_numpy(crop), torch.from_numpy(pts[keep]).float()))
    return crops


def build_dataset(recipe: Recipe, log: Log = print) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Render all training crops of a recipe.

    Parameters
    ----------
    recipe : Recipe
        Sets the number of training slides (``train_slides``).
    log : callable
        Receives a progress line every 40 slides.

    Returns
    -------
    list of (torch.Tensor, torch.Tensor)
        Per crop, uint8 ``(3, CROP, CROP)`` at ``DEMO_MPP`` µm/px and the
        float32 ``(K, 2)`` x, y of its mitotic figures, crop px.
    """
    crops: list[tuple[torch.Tensor, torch.Tensor]] = []
    start = time.perf_counter()
    for index, (seed, stain) in enumerate(training_stains(recipe.train_slides, TRAIN_SEED0)):
        crops.extend(render_training_slide(index, seed, stain))
        if (index + 1) % 40 == 0:
            log(
                f"  rendered {index + 1}/{recipe.train_slides} training slides "
                f"({time.perf_counter() - start:.0f} s)"
            )
    return crops


def stain_views(
    crops: Sequence[tuple[torch.Tensor, torch.Tensor]],
    views: int = 3,
    seed: int = 0,
    batch: int = 64,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Add stain-augmented copies of every crop, computed batched once.

    Each copy gets, with probability 0.3, a Fourier domain adaptation (β up to
    0.01) towards one of 32 crops of other training slides, then an HED jitter
    (concentrations scaled by up to ±15 %, shifted by up to 0.03 OD).
    Deterministic for ``seed``.

    Parameters
    ----------
    crops : sequence of (torch.Tensor, torch.Tensor)
        The crops, uint8 ``(3, H, W)``, and their points, as from :func:`build_dataset`.
    views : int
        Versions of each crop in the output, the original included.
    seed : int
        Seeds the augmentation.
    batch : int
        Crops augmented at once.

    Returns
    -------
    list of (torch.Tensor, torch.Tensor)
        The crops as given, then ``views - 1`` rounds of augmented copies with
        the same points.
    """
    generator = torch.Generator().manual_seed(seed)
    jitter = HEDJitter(sigma=0.15, bias=0.03)
    bank = torch.stack([crops[i][0] for i in np.linspace(0, len(crops) - 1, 32).astype(int)])
    fda = RandomFDA(bank, beta=(0.0, 0.01), p=0.3)
    out = list(crops)
    for _ in range(views - 1):
        for start in range(0, len(crops), batch):
            part = crops[start : start + batch]
            images = jitter(
                fda(torch.stack([c[0] for c in part]), generator=generator), generator=generator
            )
            assert isinstance(images, torch.Tensor)  # tensors in, tensors out
            out.extend(zip(images.unbind(0), (c[1] for c in part), strict=True))
    return out


def new_detector(
    model: torch.nn.Module, threshold: float = 0.5, metadata: dict[str, Any] | None = None
) -> PointDetector:
    """Wrap a network in the demo's :class:`PointDetector` settings, on the CPU.

    Parameters
    ----------
    model : torch.nn.Module
        A :class:`PointHeatmapNet` (or another network with a ``stride``).
    threshold : float
        Decision threshold, in [0, 1].
    metadata : dict, optional
        Facts added to (and overriding) :data:`DEMO_METADATA`.

    Returns
    -------
    PointDetector
        Named ``"demo"``, at ``DEMO_MPP`` µm/px with ``TILE_SIZE`` px tiles,
        ``OVERLAP`` px overlap and ``min_score`` 0.1.
    """
    return PointDetector(
        model,
        mpp=DEMO_MPP,
        tile_size=TILE_SIZE,
        overlap=OVERLAP,
        threshold=threshold,
        min_score=0.1,
        device="cpu",
        name="demo",
        metadata={**DEMO_METADATA, **(metadata or {})},
    )


def train_demo_detector(recipe: Recipe, log: Log = print) -> PointDetector:
    """Render the dataset and train the first-stage network.

    Parameters
    ----------
    recipe : Recipe
        The training run's settings.
    log : callable
        Receives progress lines.

    Returns
    -------
    PointDetector
        The trained network in :func:`new_detector`'s settings; its threshold
        is not chosen yet (0.5).
    """
    torch.manual_seed(recipe.seed)
    start = time.perf_counter()
    crops = build_dataset(recipe, log)
    n_points = sum(len(p) for _, p in crops)
    log(
        f"dataset: {len(crops)} crops of {CROP} px at {DEMO_MPP} µm/px, {n_points} figures, "
        f"{time.perf_counter() - start:.0f} s"
    )
    model = PointHeatmapNet(**NETWORK)
    start = time.perf_counter()

    def report(step: int, loss: float) -> None:
        if (step + 1) % 50 == 0 or step == 0:
            log(
                f"  step {step + 1}/{recipe.steps}: loss {loss:.3f} "
                f"({time.perf_counter() - start:.0f} s)"
            )

    train_point_detector(
        model,
        stain_views(crops, seed=recipe.seed),
        steps=recipe.steps,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        device="cpu",
        seed=recipe.seed,
        callback=report,
    )
    log(f"training: {recipe.steps} steps in {time.perf_counter() - start:.0f} s")
    return new_detector(model)


@dataclass
class Scored:
    """Candidates and truth of evaluated slides: pooled scores at any threshold.

    Parameters
    ----------
    candidates : list of numpy.ndarray
        Per slide, ``(K, 3)`` x, y (level-0 px at 0.25 µm/px) and score.
    truths : list of numpy.ndarray
        Per slide, ``(M, 2)`` x, y of the mitotic figures, level-0 px.
    """

    candidates: list[np.ndarray] = field(default_factory=list)  # (K, 3) x, y, score; level-0 px
    truths: list[np.ndarray] = field(default_factory=list)  # (M, 2) level-0 px

    def score(self, threshold: float) -> DetectionScore:
        """Pool TP, FP and FN over the slides, matching within 7.5 µm (MIDOG).

        Parameters
        ----------
        threshold : float
            Candidates scoring at least this count, in [0, 1].

        Returns
        -------
        DetectionScore
            The counts summed over the slides.
        """
        return sum(
            (
                score_points(c, t, mpp=SLIDE_MPP, threshold=threshold)
                for c, t in zip(self.candidates, self.truths, strict=True)
            ),
            DetectionScore(),
        )


def render_slide(spec: SlideSpec, folder: Path) -> tuple[Path, GroundTruth]:
    """Write one evaluation slide as a JPEG-compressed SVS at 0.25 µm/px.

    Parameters
    ----------
    spec : SlideSpec
        The slide.
    folder : pathlib.Path
        Where the file goes, named after the variation and the seed.

    Returns
    -------
    path : pathlib.Path
        The SVS file.
    truth : GroundTruth
        Its mitotic figures and look-alikes, level-0 px.
    """
    path = folder / f"{spec.variation.replace(' ', '_')}-{spec.seed}.svs"
    truth = write_slide(
        path,
        spec.size,
        spec.size,
        mpp=SLIDE_MPP,
        seed=spec.seed,
        stain=spec.stain,
        mitoses_per_mm2=spec.mitoses_per_mm2,
    )
    return path, truth


def run_slides(
    detector: Detector, slides: Iterable[tuple[SlideSpec, Path, GroundTruth]]
) -> dict[str, Scored]:
    """Run a detector through :func:`wsimito.count_mitoses` (tissue "auto") on each slide.

    Parameters
    ----------
    detector : Detector
        The detector.
    slides : iterable of (SlideSpec, pathlib.Path, GroundTruth)
        Rendered slides, as from :func:`rendered`.

    Returns
    -------
    dict of str to Scored
        The candidates (every score returned) and the truth, by variation.
    """
    from ..pipeline import count_mitoses

    groups: dict[str, Scored] = {}
    for spec, path, truth in slides:
        result = count_mitoses(path, detector, tissue="auto", progress=False)
        group = groups.setdefault(spec.variation, Scored())
        group.candidates.append(np.column_stack([result.points, result.scores]))
        group.truths.append(truth.mitoses)
    return groups


def select_threshold(scored: Iterable[Scored]) -> tuple[float, DetectionScore]:
    """Choose the threshold with the best pooled F1.

    The thresholds tried are 0.10-0.95 in steps of 0.01 and 201 quantiles of
    the candidates' scores; ties take the middle of the best run.

    Parameters
    ----------
    scored : iterable of Scored
        Candidates and truth, pooled.

    Returns
    -------
    threshold : float
        The chosen threshold, in [0, 1].
    score : DetectionScore
        The pooled counts at that threshold.
    """
    pooled = Scored()
    for s in scored:
        pooled.candidates += s.candidates
        pooled.truths += s.truths
    scores = np.concatenate([c[:, 2] for c in pooled.candidates if len(c)] or [np.zeros(0)])
    quantiles = np.quantile(scores, np.linspace(0, 1, 201)) if len(scores) else []
    grid = np.unique(np.concatenate([np.round(np.arange(0.10, 0.951, 0.01), 2), quantiles]))
    f1 = np.array([pooled.score(float(t)).f1 for t in grid])
    best = np.flatnonzero(f1 >= np.nanmax(f1) - 1e-12)
    threshold = float(grid[best[len(best) // 2]])
    return threshold, pooled.score(threshold)


def validation_specs(recipe: Recipe) -> list[SlideSpec]:
    """List the validation slides: unseen seeds, random stains of the training presets.

    Parameters
    ----------
    recipe : Recipe
        Sets the number (``validation_slides``) and side (``validation_size``).

    Returns
    -------
    list of SlideSpec
        Slides at 150 figures per mm² of tissue, seeds from 20,000.
    """
    return [
        SlideSpec("validation", seed, stain, recipe.validation_size, 150.0)
        for seed, stain in training_stains(recipe.validation_slides, VALIDATION_SEED0)
    ]


def test_specs(
    size: int = 4000, per_variation: int = 2, mean_density_size: int = 6000
) -> list[SlideSpec]:
    """List the held-out test slides (seeds from 30,000).

    Parameters
    ----------
    size : int
        Side of the slides of each stain variation, px at 0.25 µm/px.
    per_variation : int
        Slides per stain variation.
    mean_density_size : int
        Side of the two slides at the MIDOG++ mean density, px at 0.25 µm/px.

    Returns
    -------
    list of SlideSpec
        ``per_variation`` slides at 100 figures per mm² of tissue for each of
        the two held-out presets, the exact "standard" preset and three random
        stains of unseen seeds; then two slides at the MIDOG++ mean density
        (10.3 per mm²), random stains.
    """
    stains: list[tuple[str, StainModel]] = [(p, PRESETS[p]) for p in HELD_OUT_PRESETS]
    stains.append(("standard", PRESETS["standard"]))
    for k in range(3):
        stain = random_stain(TEST_SEED0 + 100 + k)
        stains.append((stain.name, stain))
    specs = [
        SlideSpec(label, TEST_SEED0 + 10 * v + i, stain, size, 100.0)
        for v, (label, stain) in enumerate(stains)
        for i in range(per_variation)
    ]
    for i in range(2):
        stain = random_stain(TEST_SEED0 + 200 + i)
        specs.append(
            SlideSpec(
                "MIDOG++ mean density, random stains",
                TEST_SEED0 + 200 + i,
                stain,
                mean_density_size,
                10.3,
            )
        )
    return specs


def rendered(specs: Sequence[SlideSpec], folder: Path) -> list[tuple[SlideSpec, Path, GroundTruth]]:
    """Write every slide of ``specs`` into ``folder`` (see :func:`render_slide`).

    Parameters
    ----------
    specs : sequence of SlideSpec
        The slides.
    folder : pathlib.Path
        Where the files go.

    Returns
    -------
    list of (SlideSpec, pathlib.Path, GroundTruth)
        Each spec with its file and truth, in order.
    """
    return [(spec, *render_slide(spec, folder)) for spec in specs]


def evaluate(
    detector: Detector,
    slides: Sequence[tuple[SlideSpec, Path, GroundTruth]],
    threshold: float | None = None,
) -> dict[str, DetectionScore]:
    """Score a detector on rendered slides, MIDOG matching within 7.5 µm.

    Parameters
    ----------
    detector : Detector
        The detector.
    slides : sequence of (SlideSpec, pathlib.Path, GroundTruth)
        Rendered slides, as from :func:`rendered`.
    threshold : float, optional
        Decision threshold, in [0, 1]; default: the detector's.

    Returns
    -------
    dict of str to DetectionScore
        Pooled TP, FP and FN per variation, and over all slides (``"all"``).
    """
    threshold = float(detector.threshold if threshold is None else threshold)
    groups = run_slides(detector, slides)
    table = {name: group.score(threshold) for name, group in groups.items()}
    table["all"] = sum(table.values(), DetectionScore())
    return table


def tune_dark_blobs(
    slides: Sequence[tuple[SlideSpec, Path, GroundTruth]], log: Log = print
) -> DarkBlobDetector | None:
    """Tune the dark-blob baseline's blob size and threshold for the best pooled F1.

    Parameters
    ----------
    slides : sequence of (SlideSpec, pathlib.Path, GroundTruth)
        Rendered slides, as from :func:`rendered`.
    log : callable
        Receives one line per blob size.

    Returns
    -------
    DarkBlobDetector or None
        The :class:`~wsimito.models.detectors.DarkBlobDetector` (blobs of 5, 7
        or 9 µm) with the best F1, its threshold set; None when no blob size
        gives a finite F1 (no figures and no detections).
    """
    from ..models.detectors import DarkBlobDetector

    best: tuple[float, DarkBlobDetector | None] = (-math.inf, None)
    for blob_um in (5.0, 7.0, 9.0):
        det = DarkBlobDetector(
            mpp=DEMO_MPP,
            tile_size=TILE_SIZE,
            overlap=OVERLAP,
            blob_um=blob_um,
            darkness=0.45,
            device="cpu",
        )
        threshold, score = select_threshold(run_slides(det, slides).values())
        log(f"  dark blobs {blob_um} µm: threshold {threshold:.2f}, F1 {score.f1:.3f}")
        if score.f1 > best[0]:
            det.threshold = threshold
            best = (score.f1, det)
    return best[1]


def format_table(rows: dict[str, dict[str, DetectionScore]]) -> str:
    """Format scores as a plain-text table.

    Parameters
    ----------
    rows : dict of str to dict of str to DetectionScore
        Per detector name, the scores by variation (as from :func:`evaluate`);
        every detector has the variations of the first.

    Returns
    -------
    str
        One line per variation: F1 (precision / recall) and the number of
        figures for each detector.
    """
    names = list(rows)
    variations = list(next(iter(rows.values())))
    lines = ["variation".ljust(44) + "".join(f"{n + ' F1 (P/R)':>30}" for n in names)]
    for v in variations:
        cells = []
        for n in names:
            s = rows[n][v]
            cells.append(f"{s.f1:.3f} ({s.precision:.2f}/{s.recall:.2f}) n={s.tp + s.fn}".rjust(30))
        lines.append(v.ljust(44) + "".join(cells))
    return "\n".join(lines)


def temporary_folder() -> tempfile.TemporaryDirectory[str]:
    """Make a scratch folder for rendered evaluation slides.

    Returns
    -------
    tempfile.TemporaryDirectory
        The folder, removed when the object is cleaned up or its context exits.
    """
    return tempfile.TemporaryDirectory(prefix="wsimito-demo-train-")


# -- version 2: the second stage -------------------------------------------------------

#: Real H&E mined as mitosis-free: (sample file, resolution in µm/px it is opened at).
#: That they hold no mitotic figures is an assumption, not a fact: they hold few, if any.
#: Neither file states its resolution. The tiatoolbox patch (high magnification) is
#: opened at 0.25 and at 0.5 µm/px, two plausible scans; the TCGA slide at 0.25 µm/px.
REAL_NEGATIVES: tuple[tuple[str, float], ...] = (
    ("images/he-target-tiatoolbox.png", 0.25),
    ("images/he-target-tiatoolbox.png", 0.5),
    ("slides/tcga-cr-7395-01a-01-ts1.svs", 0.25),
)
MINING_SEED0 = 12_000

#: The demo's patch classifier: 64 px at 0.5 µm/px (32 µm: a figure of 8-15 µm, its
#: cytoplasm and a ring of neighbours), WS-DAL on, synthetic and real domains balanced
#: 65 / 35, HED jitter as strong as the first stage's (±20 % on 80 % of the patches).
DEMO_CLASSIFIER = ClassifierConfig(
    mpp=DEMO_MPP,
    patch_size=64,
    margin=8,
    max_shift_px=3.0,
    width=16,
    epochs=10,
    epoch_size=4096,
    batch_size=64,
    lr=2e-3,
    domains=("origin",),
    domain_weights={"synthetic": 0.65, "real": 0.35},
    stain_sigma=0.2,
    stain_p=0.8,
)


@dataclass(frozen=True)
class CascadeRecipe:
    """Knobs of the second stage (defaults: the shipped demo).

    With ``finetune_steps`` > 0 the first stage is first fine-tuned
    (:func:`finetune_first_stage`) on crops of version-1 training slides, of
    mining slides (artefacts, edges, look-alikes: everything but the figures is
    a negative) and of the real images (no figures at all).

    Parameters
    ----------
    mining_slides : int
        Synthetic slides mined with the first stage (:func:`mining_specs`).
    mining_size : int
        Their side, px at 0.5 µm/px.
    mining_threshold : float
        Lowest first-stage score mined on them, in [0, 1].
    real_threshold : float
        Lowest first-stage score mined on the real images, in [0, 1].
    real_blob_um : float
        Blob size of the dark-blob detector run on the real images, µm.
    real_blob_threshold : float
        Lowest dark-blob score mined on the real images, in [0, 1].
    real_random : int
        Random points in the tissue of each real image, and as many on its
        outline, taken as negatives too.
    candidate_threshold : float
        First-stage score a point needs to reach the classifier, in [0, 1].
    classifier_weight : float
        ``w`` in the cascade's score ``p1 ** (1 - w) * p2 ** w``, in [0, 1]
        (0.5: both stages must agree).
    classifier : ClassifierConfig
        The patch classifier's training settings.
    finetune_steps : int
        Fine-tuning steps of the first stage (0: none).
    finetune_lr : float
        Peak learning rate of the fine-tuning.
    finetune_synthetic_slides : int
        Version-1 training slides among the fine-tuning crops.
    finetune_artefact_slides : int
        Mining slides, the first ones, among the fine-tuning crops.
    finetune_real_repeats : int
        Times each real crop appears among the fine-tuning crops.
    """

    mining_slides: int = 64
    mining_size: int = 1024
    mining_threshold: float = 0.1
    real_threshold: float = 0.02
    real_blob_um: float = 6.0
    real_blob_threshold: float = 0.3
    real_random: int = 400
    candidate_threshold: float = 0.15
    classifier_weight: float = 0.5
    classifier: ClassifierConfig = DEMO_CLASSIFIER
    finetune_steps: int = 800
    finetune_lr: float = 1e-3
    finetune_synthetic_slides: int = 120
    finetune_artefact_slides: int = 64
    finetune_real_repeats: int = 3


@dataclass(frozen=True)
class MiningSlide:
    """One synthetic slide mined for the second stage (see :func:`mining_specs`).

    Parameters
    ----------
    seed : int
        Seeds the slide.
    stain : StainModel
        Its stain.
    size : int
        Side, px at ``render_mpp``.
    render_mpp : float
        Resolution it is rendered at, µm/px.
    tissue_fraction : float
        Share of the slide covered by tissue, 0 to 1.
    tissue_scale_um : float
        Size of the tissue islands, µm.
    mitoses_per_mm2 : float
        Mean mitotic figures per mm² of tissue (0: mitosis-free).
    imposters_per_mitosis : float
        Look-alikes per figure placed at random in the tumour nests.
    imposters_per_mm2 : float or None
        Look-alikes per mm² of tissue instead (None: per figure).
    min_imposters_per_mitosis : int
        Look-alikes placed around each figure.
    artefacts : {"none", "realistic", "heavy"}
        Artefact preset.
    """

    seed: int
    stain: StainModel
    size: int
    render_mpp: float
    tissue_fraction: float
    tissue_scale_um: float
    mitoses_per_mm2: float
    imposters_per_mitosis: float
    imposters_per_mm2: float | None
    min_imposters_per_mitosis: int
    artefacts: ArtefactPreset

    def render(self) -> tuple[np.ndarray, GroundTruth]:
        """Render the slide in memory.

        Returns
        -------
        tuple of numpy.ndarray and GroundTruth
            The RGB image ``(size, size, 3)`` uint8 at ``render_mpp`` µm/px,
            and its ground truth (level-0 px of that image).
        """
        return make_slide(
            self.size,
            self.size,
            mpp=self.render_mpp,
            seed=self.seed,
            stain=self.stain,
            tissue_fraction=self.tissue_fraction,
            tissue_scale_um=self.tissue_scale_um,
            tumour_fraction=0.8,
            mitoses_per_mm2=self.mitoses_per_mm2,
            imposters_per_mitosis=self.imposters_per_mitosis,
            imposters_per_mm2=self.imposters_per_mm2,
            min_imposters_per_mitosis=self.min_imposters_per_mitosis,
            artefacts=self.artefacts,
        )


def mining_specs(recipe: CascadeRecipe) -> list[MiningSlide]:
    """List the synthetic mining slides: training stains, four kinds in turn.

    Kind 0: heavy artefacts, 60 % tissue in islands of about 400 µm (so the slide has
    tissue edges, and torn ones), 3 look-alikes around each figure;
    kind 1: realistic artefacts, 80 % tissue (400 µm islands), 1.2-2.5 look-alikes
    per figure;
    kind 2: heavy artefacts, 60 % tissue (300 µm islands) and no mitotic figures at all
    (100 look-alikes per mm²);
    kind 3: no artefacts, tissue everywhere, 3 look-alikes around each figure.
    Every third slide is rendered at 0.25 µm/px (the reader area-averages it,
    like a pyramid level), the others at 0.5 µm/px.

    Parameters
    ----------
    recipe : CascadeRecipe
        Sets the number (``mining_slides``) and side (``mining_size``, px at
        0.5 µm/px) of the slides.

    Returns
    -------
    list of MiningSlide
        The slides, seeds from 12,000.
    """
    artefacts: tuple[ArtefactPreset, ...] = ("heavy", "realistic", "heavy", "none")
    specs = []
    for index, (seed, stain) in enumerate(training_stains(recipe.mining_slides, MINING_SEED0)):
        rng = np.random.default_rng([seed, 0xC45C])
        kind = index % 4
        fine = index % 3 == 0
        specs.append(
            MiningSlide(
                seed=seed,
                stain=stain,
                size=recipe.mining_size * (2 if fine else 1),
                render_mpp=DEMO_MPP / 2 if fine else DEMO_MPP,
                tissue_fraction=(0.6, 0.8, 0.6, 1.0)[kind],
                tissue_scale_um=(400.0, 400.0, 300.0, 1500.0)[kind],
                mitoses_per_mm2=0.0 if kind == 2 else float(rng.uniform(100, 220)),
                imposters_per_mitosis=float(rng.uniform(1.2, 2.5)),
                imposters_per_mm2=100.0 if kind == 2 else None,
                min_imposters_per_mitosis=3 if kind in (0, 3) else 0,
                artefacts=artefacts[kind],
            )
        )
    return specs


@contextlib.contextmanager
def _known_synthetic_detector() -> Iterator[None]:
    """Silence the warning that a synthetic-data detector runs on a foreign image.

    Here that is the point: in-memory synthetic images, and real images mined for
    negatives.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*trained on synthetic mitotic figures only.*")
        yield


def mine_synthetic(
    first: Detector,
    recipe: CascadeRecipe,
    log: Log = print,
    specs: Sequence[MiningSlide] | None = None,
) -> PatchSet:
    """Read patches around the candidates, figures and look-alikes of the mining slides.

    Each slide is rendered in memory, mined with
    :func:`~wsimito.train.mining.mine_hard_negatives` (tissue "auto", truth as
    annotations; mitosis-free slides declared so) and dropped again.

    Parameters
    ----------
    first : Detector
        The first stage.
    recipe : CascadeRecipe
        Sets the mining threshold and the classifier's patches.
    log : callable
        Receives a progress line every 16 slides.
    specs : sequence of MiningSlide, optional
        The slides (default: :func:`mining_specs` of ``recipe``).

    Returns
    -------
    PatchSet
        Positives on the hits and on every annotated figure, negatives on the
        hard negatives and look-alikes; ``origin`` ``"synthetic"``.
    """
    from ..classes import LOOKALIKE_CLASS, MITOSIS_CLASS
    from ..io.annotations import Annotations
    from ..slide import open_slide
    from .mining import mine_hard_negatives

    config = recipe.classifier
    parts: list[PatchSet] = []
    start = time.perf_counter()
    for k, spec in enumerate(specs if specs is not None else mining_specs(recipe)):
        image, truth = spec.render()
        name = f"synthetic-{spec.seed}"
        cells = [(name, x, y, MITOSIS_CLASS) for x, y in truth.mitoses]
        cells += [(name, x, y, LOOKALIKE_CLASS) for x, y in truth.imposters]
        annotations = Annotations(  # the slide is annotated even when it holds no cell
            pd.DataFrame(cells, columns=["slide", "x", "y", "label"]),
            pd.DataFrame({"slide": [name]}),
        )
        slide = open_slide(image, mpp=spec.render_mpp)
        with _known_synthetic_detector():
            mined = mine_hard_negatives(
                first,
                {name: slide},
                annotations,
                threshold=recipe.mining_threshold,
                mitosis_free=[name] if truth.mitosis_free else (),
            )
        info = pd.DataFrame({"slide": [name], "origin": ["synthetic"]})
        parts.append(
            PatchSet.from_mined(mined, {name: slide}, config, slide_info=info, figures=True)
        )
        if (k + 1) % 16 == 0:
            log(
                f"  mined {k + 1} synthetic slides: {sum(len(p) for p in parts)} patches "
                f"({time.perf_counter() - start:.0f} s)"
            )
    return PatchSet.concat(parts)


def mine_real(first: PointDetector, recipe: CascadeRecipe, log: Log = print) -> PatchSet:
    """Read negatives from the real images of :data:`REAL_NEGATIVES`, declared mitosis-free.

    Two detectors propose them: the first stage at ``recipe.real_threshold``
    (what it nearly counts) and the dark-blob detector (every dark nucleus).
    With ``recipe.real_random`` > 0, that many points drawn uniformly in the
    detected tissue and as many on its outline (tissue edges against glass)
    join them.

    Parameters
    ----------
    first : PointDetector
        The first stage; a copy with ``min_score`` lowered to
        ``recipe.real_threshold`` mines.
    recipe : CascadeRecipe
        Sets the thresholds, the blob size, the random points and the patches.
    log : callable
        Receives one line per image and miner.

    Returns
    -------
    PatchSet
        Negatives only; ``origin`` ``"real"``, ``miner`` the detector's name or
        ``"random"``.
    """
    from ..data import fetch
    from ..models.detectors import DarkBlobDetector
    from ..slide import open_slide
    from .mining import mine_hard_negatives

    low = PointDetector(
        first.model,
        device="cpu",
        name=f"{first.name}-low",
        metadata=first.metadata,
        **{**first.settings, "min_score": recipe.real_threshold},
    )
    blobs = DarkBlobDetector(
        mpp=DEMO_MPP,
        tile_size=TILE_SIZE,
        overlap=OVERLAP,
        blob_um=recipe.real_blob_um,
        darkness=0.45,
        device="cpu",
    )
    parts = []
    for key, mpp in REAL_NEGATIVES:
        slide = open_slide(fetch(key), mpp=mpp)
        name = f"{Path(key).name}@{mpp:g}"
        try:
            for detector, threshold in (
                (low, recipe.real_threshold),
                (blobs, recipe.real_blob_threshold),
            ):
                with _known_synthetic_detector():
                    mined = mine_hard_negatives(
                        detector, {name: slide}, threshold=threshold, mitosis_free=[name]
                    )
                info = pd.DataFrame({"slide": [name], "origin": ["real"]})
                part = PatchSet.from_mined(mined, {name: slide}, recipe.classifier, slide_info=info)
                part.cells["miner"] = detector.name
                parts.append(part)
                log(f"  {name}: {len(part)} negatives from {detector.name}")
            if recipe.real_random > 0:
                part = _random_negatives(slide, name, recipe)
                parts.append(part)
                log(f"  {name}: {len(part)} negatives in tissue and on its edge")
        finally:
            slide.close()
    return PatchSet.concat(parts)


def _random_negatives(slide: Slide, name: str, recipe: CascadeRecipe) -> PatchSet:
    """Negatives at random places in the tissue of ``slide`` and on the tissue's outline."""
    import shapely

    from ..tissue import detect_tissue
    from .mining import MinedCandidates

    rng = np.random.default_rng(sum(map(ord, name)))
    tissue = detect_tissue(slide)
    w, h = slide.dimensions
    inside = rng.uniform((0, 0), (w, h), size=(20 * recipe.real_random, 2))
    inside = inside[tissue.contains(inside)][: recipe.real_random]
    outline = shapely.union_all(tissue.polygons.geometry.to_numpy()).boundary
    edge = np.zeros((0, 2))
    if not outline.is_empty:
        along = shapely.line_interpolate_point(
            outline, rng.uniform(0, 1, recipe.real_random), normalized=True
        )
        edge = shapely.get_coordinates(along) + rng.normal(0, 4.0 / slide.mpp, (len(along), 2))
    xy = np.concatenate([inside, edge])
    cells = pd.DataFrame(
        {
            "slide": name,
            "x": xy[:, 0],
            "y": xy[:, 1],
            "score": np.nan,
            "kind": "hard negative",
            "source": ["tissue"] * len(inside) + ["edge"] * len(edge),
        }
    )
    mined = MinedCandidates(cells, pd.DataFrame({"slide": [name]}), 0.0, 7.5, "random")
    info = pd.DataFrame({"slide": [name], "origin": ["real"]})
    part = PatchSet.from_mined(mined, {name: slide}, recipe.classifier, slide_info=info)
    part.cells["miner"] = "random"
    return part


def train_second_stage(
    patches: PatchSet, recipe: CascadeRecipe, log: Log = print
) -> TrainedClassifier:
    """Train the cascade's patch classifier with WS-DAL, on the CPU.

    Parameters
    ----------
    patches : PatchSet
        Training patches, as from :func:`mine_synthetic` and :func:`mine_real`.
    recipe : CascadeRecipe
        Its ``classifier`` settings are used.
    log : callable
        Receives one line per epoch.

    Returns
    -------
    TrainedClassifier
        The classifier and its training record.
    """
    return train_patch_classifier(patches, recipe.classifier, device="cpu", log=log)


def new_cascade(
    first: PointDetector,
    trained: TrainedClassifier,
    recipe: CascadeRecipe,
    threshold: float = 0.5,
    metadata: dict[str, Any] | None = None,
) -> CascadeDetector:
    """Assemble the demo cascade: ``first`` proposes, the trained classifier rescores.

    Parameters
    ----------
    first : PointDetector
        The first stage (on the CPU).
    trained : TrainedClassifier
        The second stage; its classifier is moved to the CPU.
    recipe : CascadeRecipe
        Sets ``candidate_threshold`` and ``classifier_weight``.
    threshold : float
        The cascade's decision threshold, in [0, 1].
    metadata : dict, optional
        Facts added to (and overriding) :data:`DEMO_METADATA`.

    Returns
    -------
    CascadeDetector
        Named ``"demo"``, on the CPU.
    """
    return CascadeDetector(
        first,
        trained.classifier.to("cpu"),
        candidate_threshold=recipe.candidate_threshold,
        threshold=threshold,
        classifier_weight=recipe.classifier_weight,
        name="demo",
        metadata={**DEMO_METADATA, **(metadata or {})},
    )


def _crops_of(image: np.ndarray, points: np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``CROP`` px crops tiling ``image`` (at ``DEMO_MPP``) with the points inside each."""
    crops = []
    h, w = image.shape[:2]
    margin = 8.0
    for y in range(0, h - CROP + 1, CROP):
        for x in range(0, w - CROP + 1, CROP):
            crop = image[y : y + CROP, x : x + CROP]
            if (crop.mean(axis=2) < 220).mean() < 0.2:  # mostly glass
                continue
            pts = np.asarray(points, dtype=np.float64).reshape(-1, 2) - (x, y)
            keep = np.all((pts > -margin) & (pts < CROP + margin), axis=1)
            tensor = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))
            crops.append((tensor, torch.from_numpy(pts[keep]).float()))
    return crops


def artefact_crops(recipe: CascadeRecipe) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Render crops of the first ``finetune_artefact_slides`` mining slides.

    Parameters
    ----------
    recipe : CascadeRecipe
        Sets the mining slides and how many are used.

    Returns
    -------
    list of (torch.Tensor, torch.Tensor)
        Crops tiling each slide: uint8 ``(3, CROP, CROP)`` at ``DEMO_MPP`` µm/px
        (mostly-glass crops left out) and the float32 ``(K, 2)`` x, y of their
        mitotic figures, crop px.
    """
    crops = []
    for spec in mining_specs(recipe)[: recipe.finetune_artefact_slides]:
        image, truth = spec.render()
        points = truth.mitoses
        if spec.render_mpp != DEMO_MPP:
            f = round(DEMO_MPP / spec.render_mpp)
            side = image.shape[0] // f
            image = image[: side * f, : side * f].reshape(side, f, side, f, 3).mean(axis=(1, 3))
            image = image.round().astype(np.uint8)
            points = points / f
        crops += _crops_of(image, points)
    return crops


def real_crops() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Read crops of the real images of :data:`REAL_NEGATIVES`.

    Returns
    -------
    list of (torch.Tensor, torch.Tensor)
        Crops tiling each image: uint8 ``(3, CROP, CROP)`` at ``DEMO_MPP`` µm/px
        (mostly-glass crops left out), each with an empty ``(0, 2)`` set of
        figures.
    """
    from ..data import fetch
    from ..slide import open_slide

    crops = []
    for key, mpp in REAL_NEGATIVES:
        with open_slide(fetch(key), mpp=mpp) as slide:
            w, h = slide.dimensions
            image = slide.read((0, 0, w, h), mpp=DEMO_MPP)
        crops += _crops_of(image, np.zeros((0, 2)))
    return crops


def finetune_first_stage(
    first: PointDetector, recipe: CascadeRecipe, log: Log = print
) -> PointDetector:
    """Fine-tune the first stage with hard negatives.

    The crops are artefact-rich synthetic crops and real crops without figures,
    next to version-1 training crops that keep it on the figures.

    Parameters
    ----------
    first : PointDetector
        The first stage; its network is copied, not changed.
    recipe : CascadeRecipe
        Sets the crops, the steps and the learning rate.
    log : callable
        Receives progress lines.

    Returns
    -------
    PointDetector
        The fine-tuned copy in :func:`new_detector`'s settings, with
        ``first``'s threshold.
    """
    import copy

    start = time.perf_counter()
    base = build_dataset(Recipe(train_slides=recipe.finetune_synthetic_slides), log)
    hard = artefact_crops(recipe)
    real = real_crops()
    log(
        f"fine-tuning data: {len(base)} version-1 crops, {len(hard)} artefact-rich crops, "
        f"{len(real)} real crops x {recipe.finetune_real_repeats} "
        f"({time.perf_counter() - start:.0f} s)"
    )
    crops = base + hard + real * recipe.finetune_real_repeats
    model = copy.deepcopy(first.model)

    def report(step: int, loss: float) -> None:
        if (step + 1) % 100 == 0:
            log(
                f"  step {step + 1}/{recipe.finetune_steps}: loss {loss:.3f} "
                f"({time.perf_counter() - start:.0f} s)"
            )

    train_point_detector(
        model,
        stain_views(crops, seed=1),
        steps=recipe.finetune_steps,
        batch_size=8,
        lr=recipe.finetune_lr,
        device="cpu",
        seed=1,
        callback=report,
    )
    return new_detector(model, first.threshold)
