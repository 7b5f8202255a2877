"""Cascade ablation on look-alike-rich synthetic slides, label-noise test, and cost.

    .venv/bin/python benchmarks/bench_cascade.py                 # 8-10 min on 2 cores (load 1-3)
    .venv/bin/python benchmarks/bench_cascade.py --skip-cost --seed 1   # ~6.5 min, another seed
    .venv/bin/python benchmarks/bench_cascade.py --select  # training length; DMU on validation
    .venv/bin/python benchmarks/bench_cascade.py --dmu-variants  # DMU settings; what it flags
    .venv/bin/python benchmarks/bench_cascade.py --first-stage demo-v1.pt   # another first stage
    .venv/bin/python benchmarks/bench_cascade.py --noise-only --noise-models ce,oracle  # ceiling
    .venv/bin/python benchmarks/bench_cascade.py --cost-only --cost-size 16000  # cost, ~2.5 min
    .venv/bin/python benchmarks/bench_cascade.py --train-slides 8 --epochs 2   # smoke run

First stage: the point detector of the bundled demo (its candidates at 0.15).
Its candidates are mined on look-alike-rich synthetic training slides (training
stains, 3 look-alikes 18-90 µm around each figure plus 1.2-2.5 per figure at
random, seeds from 14,000); patch classifiers are trained on the same patches
with the WS-DAL components switched on one by one (10 epochs of 2,048 patches,
DMU acting from epoch 4: the length ``--select`` chose by DMU's flags on label
flips of its own). Every model's threshold is the F1-optimal one on validation
slides (training stains, seeds from 24,000); so is a cascade's classifier
weight ``w`` in its score ``p1 ** (1 - w) * p2 ** w`` (from 0.25, 0.5, 0.75, 1);
the scores are on test slides in stains never used in training (the presets
"pale" and "cool-scanner" and random variations of them, seeds from 34,000),
MIDOG matching at 7.5 µm, TP/FP/FN pooled. "P at R of stage 1": the model's
precision at the highest threshold at which its recall on the test slides reaches
the first stage's.

Label noise: a class-balanced subset of the mined patches (every figure, as
many negatives drawn at random), 20 % of its labels flipped at random; DMU's
flagged samples against the flipped ones; the cascades with and without DMU
scored on the clean test slides, beside an oracle that drops exactly the
flipped samples (the ceiling of any rule that drops samples).

Cost: count_mitoses end to end (tissue detection included) on an 8000 x 8000 px
synthetic SVS at 0.25 µm/px, first stage alone against the cascade, alternating
for 5 rounds (medians); and the two detectors' ``detect`` alone over the same
tiles.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import _common  # noqa: F401  (points WSIMITO_DATA_DIR at ../shared/data)
import numpy as np
import torch

import wsimito
from wsimito.evaluate import DetectionScore, score_points
from wsimito.models import PointDetector, load_detector
from wsimito.models.cascade import CascadeDetector, point_stage
from wsimito.synthetic import PRESETS, random_stain, write_slide
from wsimito.train import demo_recipe as demo
from wsimito.train.wsdal import ClassifierConfig, PatchSet, train_patch_classifier

MPP = 0.5
CANDIDATE_THRESHOLD = 0.15


def first_stage(source: str = "demo") -> PointDetector:
    """The point detector of ``source`` (a cascade's first stage, or the detector itself)."""
    found = point_stage(load_detector(source, device="cpu"))
    assert found is not None, f"{source} holds no point detector"
    return found


def specs(count: int, seed0: int, size: int, stains: str) -> list[demo.MiningSlide]:
    """Look-alike-rich slides at 0.5 µm/px. ``stains="training"``: random stains of the
    training presets; ``"held-out"``: the two held-out presets, then random variations of
    them."""
    out: list[demo.MiningSlide] = []
    seed = seed0
    while len(out) < count:
        seed += 1
        if stains == "held-out" and len(out) < 2:
            stain = PRESETS[demo.HELD_OUT_PRESETS[len(out)]]
        else:
            stain = random_stain(seed)
            if demo.held_out(stain) != (stains == "held-out"):
                continue
        rng = np.random.default_rng([seed, 0xAB1])
        out.append(
            demo.MiningSlide(
                seed=seed,
                stain=stain,
                size=size,
                render_mpp=MPP,
                tissue_fraction=1.0,
                tissue_scale_um=1500.0,
                mitoses_per_mm2=float(rng.uniform(80, 160)),
                imposters_per_mitosis=float(rng.uniform(1.2, 2.5)),
                imposters_per_mm2=None,
                min_imposters_per_mitosis=3,
                artefacts="none",
            )
        )
    return out


def render(spec: demo.MiningSlide):
    image, truth = spec.render()
    return wsimito.open_slide(image, mpp=spec.render_mpp), truth


def candidates(detector, slides) -> list[tuple[np.ndarray, np.ndarray]]:
    """(candidates x, y, score; truth) per slide, through count_mitoses."""
    out = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*trained on synthetic mitotic figures only.*")
        for slide, truth in slides:
            result = wsimito.count_mitoses(slide, detector, progress=False)
            keep = result.in_tissue
            out.append((np.column_stack([result.points, result.scores])[keep], truth.mitoses))
    return out


def pooled(runs, threshold: float) -> DetectionScore:
    return sum(
        (score_points(c, t, mpp=MPP, threshold=threshold) for c, t in runs), DetectionScore()
    )


def best_threshold(runs) -> float:
    scores = np.concatenate([c[:, 2] for c, _ in runs if len(c)] or [np.zeros(0)])
    grid = np.unique(
        np.concatenate([np.arange(0.05, 0.96, 0.01), np.quantile(scores, np.linspace(0, 1, 101))])
    )
    f1 = np.array([pooled(runs, t).f1 for t in grid])
    best = np.flatnonzero(f1 >= np.nanmax(f1) - 1e-12)
    return float(grid[best[len(best) // 2]])


def precision_at_recall(runs, recall: float) -> float:
    """Precision at the highest threshold whose recall reaches ``recall``."""
    scores = np.unique(np.concatenate([c[:, 2] for c, _ in runs if len(c)]))[::-1]
    for t in scores:
        s = pooled(runs, float(t))
        if s.recall >= recall - 1e-12:
            return s.precision
    return float("nan")


WEIGHTS = (0.25, 0.5, 0.75, 1.0)


def row(name: str, detector, validation, test, recall_1: float | None = None) -> dict:
    """Score ``detector`` on the test slides at its F1-optimal validation threshold.

    For a cascade, the classifier's weight in the fused score is chosen on the
    validation slides too (from :data:`WEIGHTS`, the best validation F1), so the
    test slides set nothing.
    """
    choices = WEIGHTS if isinstance(detector, CascadeDetector) else (None,)
    fits = []
    for weight in choices:
        if weight is not None:
            detector.classifier_weight = weight
        runs = candidates(detector, validation)
        threshold = best_threshold(runs)
        fits.append((pooled(runs, threshold).f1, weight, threshold))
    best_f1 = max(f for f, _, _ in fits)
    _, weight, threshold = next(f for f in fits if f[0] >= best_f1 - 1e-12)
    alone = float("nan")  # the classifier's score alone (w = 1), at its validation threshold
    if weight is not None:
        detector.classifier_weight = 1.0
        alone = pooled(candidates(detector, test), next(t for _, w, t in fits if w == 1.0)).f1
        detector.classifier_weight = weight
    runs = candidates(detector, test)
    s = pooled(runs, threshold)
    return {
        "model": name,
        "threshold": threshold,
        "weight": weight,
        "f1_alone": alone,
        "precision": s.precision,
        "recall": s.recall,
        "f1": s.f1,
        "p_at_r1": precision_at_recall(runs, recall_1) if recall_1 is not None else s.precision,
        "figures": s.tp + s.fn,
    }


def flag_scores(trained, flipped: np.ndarray) -> tuple[float, float]:
    """Precision and recall of DMU's flags against the flipped labels."""
    f = trained.flagged
    return float((f & flipped).sum() / max(1, f.sum())), float((f & flipped).sum() / flipped.sum())


#: Training lengths compared by ``--select`` (epochs, patches per epoch, DMU warm-up epochs).
TRAINING_CHOICES = ((6, 2048, 3), (10, 2048, 4), (12, None, 4))
SELECTION_FLIPS = (1000, 1001)
NOISE_MODELS = ("clean", "ce", "oracle", "dmu", "wsdal")  # the rows of the label-noise table


def dmu_only(
    base: ClassifierConfig, length: tuple[int, int | None, int], dmu: bool
) -> ClassifierConfig:
    """``base`` trained for ``length`` (epochs, patches per epoch, DMU warm-up), DLE and
    CSDGL off, DMU on or off."""
    epochs, epoch_size, warmup = length
    return dataclasses.replace(
        base,
        epochs=epochs,
        epoch_size=epoch_size,
        dmu_warmup=warmup,
        dmu=dmu,
        dle=False,
        csdgl=False,
    )


def select_training(balanced: PatchSet, base: ClassifierConfig) -> None:
    """How DMU's flags depend on the training length, on label flips of their own.

    20 % of the balanced set's labels are flipped with the seeds in
    :data:`SELECTION_FLIPS` (the reported noise runs use ``7 + seed``), and a DMU
    classifier is trained at each of :data:`TRAINING_CHOICES`. This chose the
    defaults of this benchmark; no test slide and no reported flip takes part.
    """
    print(
        "| epochs | patches per epoch | DMU warm-up | flip seed | flag precision | flag recall "
        "| train s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for epochs, epoch_size, warmup in TRAINING_CHOICES:
        config = dmu_only(base, (epochs, epoch_size, warmup), dmu=True)
        for flip in SELECTION_FLIPS:
            noisy, flipped = balanced.with_flipped_labels(0.2, seed=flip)
            t0 = time.perf_counter()
            precision, recall = flag_scores(
                train_patch_classifier(noisy, config, device="cpu"), flipped
            )
            print(
                f"| {epochs} | {epoch_size or len(noisy)} | {warmup} | {flip} | {precision:.2f} "
                f"| {recall:.2f} | {time.perf_counter() - t0:.0f} |",
                flush=True,
            )


def noise_on_validation(balanced: PatchSet, base: ClassifierConfig, first, validation) -> None:
    """Cross-entropy against DMU under 20 % flipped labels, on the validation slides only.

    For the training lengths 10 x 2,048 and 12 full epochs (DMU from epoch 4) and
    the selection flips, both cascades are scored on the validation slides at their
    F1-optimal validation threshold, fused (w = 0.25) and with the classifier alone
    (w = 1). This is how to ask "does DMU help here?" without the test slides.
    """
    print("\n| epochs | patches per epoch | flip seed | model | F1 fused (w = 0.25) | F1 alone |")
    print("| --- | --- | --- | --- | --- | --- |")
    for epochs, epoch_size, warmup in TRAINING_CHOICES[1:]:
        for flip in SELECTION_FLIPS:
            noisy, _ = balanced.with_flipped_labels(0.2, seed=flip)
            for name, dmu in (("cross-entropy", False), ("DMU", True)):
                config = dmu_only(base, (epochs, epoch_size, warmup), dmu=dmu)
                det = cascade(first, train_patch_classifier(noisy, config, device="cpu"))
                f1 = []
                for weight in (0.25, 1.0):
                    det.classifier_weight = weight
                    runs = candidates(det, validation)
                    f1.append(pooled(runs, best_threshold(runs)).f1)
                print(
                    f"| {epochs} | {epoch_size or len(noisy)} | {flip} | {name} | {f1[0]:.3f} "
                    f"| {f1[1]:.3f} |",
                    flush=True,
                )


#: DMU settings compared by ``--dmu-variants``: name and ``ClassifierConfig`` changes.
DMU_VARIANTS = (
    ("cross-entropy", {"dmu": False}),
    ("DMU, drop below 0.3 (default)", {"dmu": True}),
    ("DMU, drop below 0.15", {"dmu": True, "mislabelled_probability": 0.15}),
    ("DMU, down-weight to 0.1 below 0.3", {"dmu": True, "dmu_action": "downweight"}),
)


def dmu_variants_on_validation(
    balanced: PatchSet, base: ClassifierConfig, first, validation
) -> None:
    """DMU's settings under 20 % flipped labels, and which correct labels it flags.

    At the benchmark's training length, on the selection flips and the validation
    slides only: each setting's flags against the flips, the correctly labelled
    samples it flags (true figures and look-alikes), and its cascade's F1 (fused at
    w = 0.25, and the classifier alone) at the F1-optimal validation threshold.
    """
    labels = balanced.labels.numpy()
    print(
        "\n| flip seed | model | flag precision | flag recall | correct labels flagged: "
        "figures / look-alikes | F1 fused (w = 0.25) | F1 alone |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    length = (base.epochs, base.epoch_size, base.dmu_warmup)
    for flip in SELECTION_FLIPS:
        noisy, flipped = balanced.with_flipped_labels(0.2, seed=flip)
        for name, changes in DMU_VARIANTS:
            config = dataclasses.replace(dmu_only(base, length, dmu=True), **changes)
            trained = train_patch_classifier(noisy, config, device="cpu")
            flags = "- | - | -"
            if config.dmu:
                precision, recall = flag_scores(trained, flipped)
                wrong = trained.flagged & ~flipped
                flags = (
                    f"{precision:.2f} | {recall:.2f} | {int((labels[wrong] == 1).sum())} / "
                    f"{int((labels[wrong] == 0).sum())}"
                )
            det = cascade(first, trained)
            f1 = []
            for weight in (0.25, 1.0):
                det.classifier_weight = weight
                runs = candidates(det, validation)
                f1.append(pooled(runs, best_threshold(runs)).f1)
            print(f"| {flip} | {name} | {flags} | {f1[0]:.3f} | {f1[1]:.3f} |", flush=True)


def cascade(first: PointDetector, trained) -> CascadeDetector:
    return CascadeDetector(
        first, trained.classifier.to("cpu"), candidate_threshold=CANDIDATE_THRESHOLD, name="cascade"
    )


def cost(first: PointDetector, detector: CascadeDetector, size: int, rounds: int) -> dict:
    """End-to-end and detector-only times, first stage alone against the cascade.

    The two alternate for ``rounds`` rounds (medians), so that a change of machine load
    hits both alike. Detector-only: the sum over the slide's batches of ``detect``
    alone, on the same tiles.
    """
    from wsimito.reader import TileReader

    times: dict[str, list[float]] = {"first stage": [], "cascade": []}
    alone: dict[str, list[float]] = {"first stage": [], "cascade": []}
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*trained on synthetic mitotic figures only.*")
        path = Path(folder) / "cost.svs"
        write_slide(
            path,
            size,
            size,
            mpp=0.25,
            seed=34_999,
            stain="standard",
            mitoses_per_mm2=30,
            min_imposters_per_mitosis=3,
        )
        with wsimito.open_slide(path) as slide:
            grid = wsimito.TileGrid(
                slide,
                tile_size=first.tile_size,
                overlap=first.overlap,
                mpp=first.mpp,
                tissue=wsimito.detect_tissue(slide),
            )
            reader = TileReader(
                slide,
                grid.boxes(),
                mpp=first.mpp,
                tile_size=first.tile_size,
                overlap=first.overlap,
                batch_size=8,
            )
            batches = [b.pixels.contiguous() for b in reader]
        for _ in range(rounds):
            for name, det in (("first stage", first), ("cascade", detector)):
                t0 = time.perf_counter()
                wsimito.count_mitoses(str(path), det, progress=False)
                times[name].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                with torch.inference_mode():  # as count_mitoses runs it
                    for pixels in batches:
                        det.detect(pixels)
                alone[name].append(time.perf_counter() - t0)
    detector.reset_report()
    with torch.inference_mode():
        for pixels in batches:
            detector.detect(pixels)
    out: dict = {name: statistics.median(v) for name, v in times.items()}
    out.update({f"{name} detect": statistics.median(v) for name, v in alone.items()})
    out["tiles"] = len(grid)
    out["candidates per tile"] = detector.report.candidates / max(1, detector.report.tiles)
    out["ratio"] = out["cascade"] / out["first stage"]
    out["detect ratio"] = out["cascade detect"] / out["first stage detect"]
    # per-round ratios (each round runs both, back to back): their spread is the noise
    per_round = [c / f for c, f in zip(times["cascade"], times["first stage"], strict=True)]
    out["ratio min"], out["ratio max"] = min(per_round), max(per_round)
    for name in ("first stage", "cascade"):
        out[f"{name} min"], out[f"{name} max"] = min(times[name]), max(times[name])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-slides", type=int, default=32)
    parser.add_argument("--validation-slides", type=int, default=4)
    parser.add_argument("--test-slides", type=int, default=12)
    parser.add_argument("--size", type=int, default=1024, help="slide side, px at 0.5 µm/px")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--dmu-warmup", type=int, default=4, help="epochs before DMU acts")
    parser.add_argument("--epoch-size", type=int, default=2048)
    parser.add_argument("--cost-size", type=int, default=8000, help="px at 0.25 µm/px")
    parser.add_argument("--cost-rounds", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's); on a shared, loaded machine 1 thread "
        "avoids the barrier waits that make small operations slow",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="classifier training and label-flip seed"
    )
    parser.add_argument(
        "--first-stage",
        default="demo",
        help="first stage: a point detector checkpoint, or a cascade whose first stage is "
        "used (default: the bundled demo's, which was fine-tuned with hard negatives)",
    )
    parser.add_argument("--skip-cost", action="store_true", help="the ablation only")
    parser.add_argument(
        "--noise-only", action="store_true", help="only the label-noise part (and stage 1)"
    )
    parser.add_argument(
        "--noise-epochs",
        type=int,
        default=None,
        help="label-noise runs: epochs (default: --epochs)",
    )
    parser.add_argument(
        "--noise-epoch-size",
        default="main",
        help="label-noise runs: patches per epoch, 'full' (the whole set) or 'main' (default: "
        "--epoch-size)",
    )
    parser.add_argument(
        "--noise-models",
        default="clean,ce,oracle,dmu,wsdal",
        help="label-noise models, comma-separated: clean (clean labels), ce (cross-entropy "
        "on the flipped labels), oracle (the flipped samples dropped: the most any drop rule "
        "can do), dmu, wsdal (default: all)",
    )
    parser.add_argument(
        "--select",
        action="store_true",
        help="only compare training lengths by DMU's flags on selection flips (how the "
        "defaults were chosen), and cross-entropy against DMU under those flips on the "
        "validation slides (~20 min)",
    )
    parser.add_argument(
        "--dmu-variants",
        action="store_true",
        help="only compare DMU's settings under selection flips on the validation slides, "
        "with the correct labels each flags (~8 min)",
    )
    parser.add_argument(
        "--cost-only",
        action="store_true",
        help="the cost only, of the bundled demo cascade against its own first stage",
    )
    args = parser.parse_args()
    chosen = [key.strip() for key in args.noise_models.split(",") if key.strip()]
    unknown = sorted(set(chosen) - set(NOISE_MODELS))
    if unknown:
        parser.error(f"--noise-models: unknown {unknown}; choose from {list(NOISE_MODELS)}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    first = first_stage(args.first_stage)
    print(f"first stage: {args.first_stage}")
    if args.cost_only:
        shipped = load_detector("demo", device="cpu")
        assert isinstance(shipped, CascadeDetector)
        print_cost(cost(first, shipped, args.cost_size, args.cost_rounds), args)
        print_machine(start)
        return
    base = ClassifierConfig(
        epochs=args.epochs,
        epoch_size=args.epoch_size,
        dmu_warmup=args.dmu_warmup,
        seed=args.seed,
    )
    recipe = dataclasses.replace(demo.CascadeRecipe(), classifier=base)

    train_specs = specs(args.train_slides, 14_000, args.size, "training")
    patches: PatchSet = demo.mine_synthetic(first, recipe, specs=train_specs)
    labels = patches.labels.numpy()
    print(
        f"mined {len(patches)} patches ({int(labels.sum())} figures) in "
        f"{time.perf_counter() - start:.0f} s"
    )
    validation = [render(s) for s in specs(args.validation_slides, 24_000, args.size, "training")]
    test = [render(s) for s in specs(args.test_slides, 34_000, args.size, "held-out")]
    n_look = sum(len(t.imposters) for _, t in test)
    n_fig = sum(len(t.mitoses) for _, t in test)
    print(f"test: {n_fig} figures, {n_look} look-alikes ({n_look / max(1, n_fig):.1f} per figure)")

    # Label noise on a class-balanced set: flipping 20 % of an 80 / 20 set at random would
    # make about half of the "mitosis" labels wrong, which no memory can sort out.
    rng = np.random.default_rng(7)
    positives = np.flatnonzero(labels == 1)
    negatives = rng.choice(np.flatnonzero(labels == 0), size=len(positives), replace=False)
    balanced = patches.subset(np.sort(np.concatenate([positives, negatives])))
    if args.dmu_variants:
        dmu_variants_on_validation(balanced, base, first, validation)
        print_machine(start)
        return
    if args.select:
        select_training(balanced, base)
        noise_on_validation(balanced, base, first, validation)
        print_machine(start)
        return

    rows = [row("first stage alone", first, validation, test)]
    recall_1 = rows[0]["recall"]
    rows[0]["p_at_r1"] = rows[0]["precision"]
    variants = [
        ("+ classifier (cross-entropy)", dict(dmu=False, dle=False, csdgl=False)),
        ("+ DMU", dict(dmu=True, dle=False, csdgl=False)),
        ("+ DMU + CSDGL (class subclasses)", dict(dmu=True, dle=False, csdgl=True)),
        ("+ DMU + DLE + CSDGL (WS-DAL)", dict(dmu=True, dle=True, csdgl=True)),
    ]
    trained_full = None
    for name, switches in variants if not args.noise_only else ():
        t0 = time.perf_counter()
        trained = train_patch_classifier(
            patches, dataclasses.replace(base, **switches), device="cpu"
        )
        rows.append(row(name, cascade(first, trained), validation, test, recall_1))
        rows[-1]["train_s"] = time.perf_counter() - t0
        trained_full = trained
        print(rows[-1])

    noisy, flipped = balanced.with_flipped_labels(0.2, seed=7 + args.seed)
    noise_size = {"main": base.epoch_size, "full": None}.get(args.noise_epoch_size)
    if args.noise_epoch_size not in ("main", "full"):
        noise_size = int(args.noise_epoch_size)
    noise_rows = []
    off = dict(dmu=False, dle=False, csdgl=False)
    # The oracle drops exactly the flipped samples: no rule that drops samples can do better,
    # so its gain over cross-entropy bounds what DMU can show here.
    noise_models = {
        "clean": ("cross-entropy, balanced, clean labels", balanced, off),
        "ce": ("cross-entropy, 20 % flipped", noisy, off),
        "oracle": (
            "oracle: the flipped samples dropped",
            noisy.subset(np.flatnonzero(~flipped)),
            off,
        ),
        "dmu": ("+ DMU, 20 % flipped", noisy, dict(dmu=True, dle=False, csdgl=False)),
        "wsdal": ("WS-DAL, 20 % flipped", noisy, dict(dmu=True, dle=True, csdgl=True)),
    }
    for name, data, switches in (noise_models[key] for key in chosen):
        noise_config = dataclasses.replace(
            base, epochs=args.noise_epochs or base.epochs, epoch_size=noise_size, **switches
        )
        trained = train_patch_classifier(data, noise_config, device="cpu")
        r = row(name, cascade(first, trained), validation, test, recall_1)
        if switches["dmu"]:
            r["flag_precision"], r["flag_recall"] = flag_scores(trained, flipped)
        noise_rows.append(r)
        print(r)

    print(
        "\n| model | weight | threshold | precision | recall | F1 | P at R of stage 1 "
        "| F1, classifier score alone (w = 1) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows + noise_rows:
        weight = "-" if r["weight"] is None else f"{r['weight']:.2f}"
        alone = "-" if r["weight"] is None else f"{r['f1_alone']:.3f}"
        print(
            f"| {r['model']} | {weight} | {r['threshold']:.2f} | {r['precision']:.3f} "
            f"| {r['recall']:.3f} | {r['f1']:.3f} | {r['p_at_r1']:.3f} | {alone} |"
        )
    print(f"flipped labels: {int(flipped.sum())} of {len(noisy)} (a class-balanced subset)")
    for r in noise_rows:
        if "flag_precision" in r:
            print(
                f"{r['model']}: DMU flags precision {r['flag_precision']:.2f}, "
                f"recall {r['flag_recall']:.2f}"
            )
    if not args.skip_cost and trained_full is not None:  # --noise-only trains no full cascade
        costs = cost(first, cascade(first, trained_full), args.cost_size, args.cost_rounds)
        print_cost(costs, args)
    print(f"{rows[0]['figures']} test figures; classifier seed {args.seed}")
    print_machine(start)


def print_machine(start: float) -> None:
    print(
        f"total {time.perf_counter() - start:.0f} s; "
        f"load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}; "
        f"{torch.get_num_threads()} torch threads; {_common.machine()}"
    )


def print_cost(costs: dict, args: argparse.Namespace) -> None:
    print(
        f"\ncost on a {args.cost_size} px slide ({costs['tiles']} tiles, "
        f"{costs['candidates per tile']:.1f} candidates per tile), medians of "
        f"{args.cost_rounds} alternating rounds: count_mitoses end to end, first stage "
        f"{costs['first stage']:.2f} s ({costs['first stage min']:.2f}-"
        f"{costs['first stage max']:.2f}), cascade {costs['cascade']:.2f} s "
        f"({costs['cascade min']:.2f}-{costs['cascade max']:.2f}), ratio "
        f"{costs['ratio']:.2f} (per round {costs['ratio min']:.2f}-{costs['ratio max']:.2f}); "
        f"detect alone {costs['first stage detect']:.2f} s against "
        f"{costs['cascade detect']:.2f} s, ratio {costs['detect ratio']:.2f}"
    )


if __name__ == "__main__":
    main()
