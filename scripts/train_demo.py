"""Train the bundled "demo" detector (a cascade) and evaluate it on held-out synthetic slides.

    .venv/bin/python scripts/train_demo.py            # writes wsimito/models/weights/demo.pt
    .venv/bin/python scripts/train_demo.py --first-stage demo-v1.pt   # reuse a first stage

Steps (see wsimito.train.demo_recipe and docs/demo.md): train the first stage
(the point detector of demo version 1) and pick its threshold on validation
slides, unless --first-stage gives one; mine hard negatives with it on
synthetic slides (artefact-rich, look-alike-rich, some mitosis-free) and on two
real images assumed to be mitosis-free; train the patch classifier with
WS-DAL; pick the cascade's threshold on the validation slides; save; print F1
per held-out stain variation for the cascade, its first stage alone and the
tuned dark-blob baseline (MIDOG matching, 7.5 µm, through
wsimito.count_mitoses). The CMU sample is never used here.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

from wsimito.models import PointDetector, load_detector, save_detector
from wsimito.models.cascade import point_stage
from wsimito.models.registry import WEIGHTS_DIR
from wsimito.train import demo_recipe as demo
from wsimito.train.wsdal import PatchSet, config_summary


def first_stage(args: argparse.Namespace, recipe: demo.Recipe, validation) -> PointDetector:
    """The first stage: trained by the version-1 recipe, or loaded from --first-stage."""
    if args.first_stage is None:
        detector = demo.train_demo_detector(recipe)
        threshold, score = demo.select_threshold(demo.run_slides(detector, validation).values())
        print(f"first stage: threshold {threshold:.2f}, validation F1 {score.f1:.3f}")
        detector.threshold = threshold
        return detector
    detector = point_stage(load_detector(args.first_stage, device="cpu"))
    if detector is None:
        raise SystemExit(f"{args.first_stage} holds no point detector")
    print(f"first stage from {args.first_stage} (threshold {detector.threshold:.2f})")
    return demo.new_detector(detector.model, detector.threshold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR / "demo.pt")
    parser.add_argument("--first-stage", type=Path, help="a saved first stage (or cascade)")
    parser.add_argument("--steps", type=int, default=demo.Recipe.steps)
    parser.add_argument("--train-slides", type=int, default=demo.Recipe.train_slides)
    parser.add_argument("--validation-slides", type=int, default=demo.Recipe.validation_slides)
    parser.add_argument("--mining-slides", type=int, default=demo.CascadeRecipe.mining_slides)
    parser.add_argument("--epochs", type=int, default=demo.DEMO_CLASSIFIER.epochs)
    parser.add_argument(
        "--finetune-steps",
        type=int,
        default=demo.CascadeRecipe.finetune_steps,
        help="fine-tune the first stage with hard negatives for this many steps (0: no)",
    )
    parser.add_argument(
        "--test-size", type=int, default=4000, help="side of the held-out slides, px at 0.25 µm/px"
    )
    parser.add_argument(
        "--mean-density-size",
        type=int,
        default=6000,
        help="side of the held-out slides at the MIDOG++ mean density, px",
    )
    parser.add_argument("--skip-eval", action="store_true", help="train and save only")
    parser.add_argument("--skip-baseline", action="store_true", help="no dark-blob baseline")
    args = parser.parse_args()
    recipe = dataclasses.replace(
        demo.Recipe(),
        steps=args.steps,
        train_slides=args.train_slides,
        validation_slides=args.validation_slides,
    )
    second = dataclasses.replace(
        demo.CascadeRecipe(),
        mining_slides=args.mining_slides,
        finetune_steps=args.finetune_steps,
        classifier=dataclasses.replace(demo.DEMO_CLASSIFIER, epochs=args.epochs),
    )
    start = time.perf_counter()
    print(f"recipe: {recipe}\nsecond stage: {second}")
    with demo.temporary_folder() as scratch:
        folder = Path(scratch)
        validation = demo.rendered(demo.validation_specs(recipe), folder)
        first = first_stage(args, recipe, validation)
        if second.finetune_steps > 0:
            first = demo.finetune_first_stage(first, second)
            threshold, score = demo.select_threshold(demo.run_slides(first, validation).values())
            first.threshold = threshold
            print(
                f"fine-tuned first stage: threshold {threshold:.2f}, validation F1 {score.f1:.3f}"
            )

        t = time.perf_counter()
        synthetic = demo.mine_synthetic(first, second)
        real = demo.mine_real(first, second)
        patches = PatchSet.concat([synthetic, real])
        labels = patches.labels.numpy()
        origin = patches.cells["origin"].to_numpy()
        synthetic_labels = labels[origin == "synthetic"]
        print(
            f"mined {len(patches)} patches in {time.perf_counter() - t:.0f} s: synthetic "
            f"{int(synthetic_labels.sum())} positives (hits and annotated figures) and "
            f"{int((synthetic_labels == 0).sum())} negatives, real "
            f"{int((origin == 'real').sum())} negatives"
        )
        t = time.perf_counter()
        trained = demo.train_second_stage(patches, second)
        flagged = trained.flagged
        print(
            f"classifier trained in {time.perf_counter() - t:.0f} s; DMU flags "
            f"{int(flagged.sum())} samples as probably mislabelled "
            f"({int(flagged[labels == 1].sum())} positives, "
            f"{int(flagged[origin == 'real'].sum())} real negatives)"
        )

        cascade = demo.new_cascade(first, trained, second)
        threshold, score = demo.select_threshold(demo.run_slides(cascade, validation).values())
        cascade.threshold = threshold
        print(
            f"cascade threshold {threshold:.2f}: validation F1 {score.f1:.3f} "
            f"(P {score.precision:.3f}, R {score.recall:.3f}, {score.tp + score.fn} figures)"
        )
        cascade.metadata.update(
            {
                "recipe": "scripts/train_demo.py (wsimito.train.demo_recipe), version 2",
                "recipe_settings": dataclasses.asdict(recipe),
                "second_stage_settings": {
                    **{k: v for k, v in dataclasses.asdict(second).items() if k != "classifier"},
                    "classifier": config_summary(second.classifier),
                },
                "real_negatives": [
                    f"{key} at {mpp} µm/px, assumed mitosis-free"
                    for key, mpp in demo.REAL_NEGATIVES
                ],
                "held_out_stain_presets": list(demo.HELD_OUT_PRESETS),
                "validation_f1": round(score.f1, 4),
                "first_stage_threshold": round(first.threshold, 4),
            }
        )
        save_detector(cascade, args.out)
        print(
            f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) after "
            f"{time.perf_counter() - start:.0f} s"
        )
        if args.skip_eval:
            return
        test = demo.rendered(
            demo.test_specs(size=args.test_size, mean_density_size=args.mean_density_size), folder
        )
        cascade.reset_report()
        rows = {"demo (cascade)": demo.evaluate(cascade, test)}
        report = cascade.reset_report()
        rows["first stage alone"] = demo.evaluate(first, test)
        if not args.skip_baseline:
            rows["dark blobs"] = demo.evaluate(demo.tune_dark_blobs(validation), test)
    print(
        f"held-out slides ({args.test_size} px at 0.25 µm/px, 100 figures/mm² of tissue unless "
        "stated), MIDOG matching at 7.5 µm:"
    )
    print(demo.format_table(rows))
    print(f"cascade stages on the held-out slides: {report}")
    print(f"classifier history:\n{trained.history.round(3).to_string(index=False)}")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"total {time.perf_counter() - start:.0f} s (load average {load})")


if __name__ == "__main__":
    main()
