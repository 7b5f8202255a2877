"""Train the bundled "demo" detector on synthetic slides and evaluate it.

    .venv/bin/python scripts/train_demo.py            # writes wsimito/models/weights/demo.pt

Renders the training crops, trains, picks the threshold on validation
slides, saves the checkpoint, then prints F1 per held-out stain variation
for the demo detector and for the tuned dark-blob baseline (MIDOG matching,
7.5 µm, through wsimito.count_mitoses). See docs/demo.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from wsimito.models import save_detector
from wsimito.models.registry import WEIGHTS_DIR
from wsimito.train import demo_recipe as demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR / "demo.pt")
    parser.add_argument("--steps", type=int, default=demo.Recipe.steps)
    parser.add_argument("--train-slides", type=int, default=demo.Recipe.train_slides)
    parser.add_argument("--validation-slides", type=int, default=demo.Recipe.validation_slides)
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
    args = parser.parse_args()
    recipe = dataclasses.replace(
        demo.Recipe(),
        steps=args.steps,
        train_slides=args.train_slides,
        validation_slides=args.validation_slides,
    )
    start = time.perf_counter()
    print(f"recipe: {recipe}")
    detector = demo.train_demo_detector(recipe)
    with demo.temporary_folder() as scratch:
        folder = Path(scratch)
        validation = demo.rendered(demo.validation_specs(recipe), folder)
        threshold, score = demo.select_threshold(demo.run_slides(detector, validation).values())
        print(
            f"threshold {threshold:.2f}: validation F1 {score.f1:.3f} "
            f"(P {score.precision:.3f}, R {score.recall:.3f}, {score.tp + score.fn} figures)"
        )
        detector.threshold = threshold
        detector.metadata.update(
            {
                "recipe": "scripts/train_demo.py (wsimito.train.demo_recipe)",
                "recipe_settings": dataclasses.asdict(recipe),
                "held_out_stain_presets": list(demo.HELD_OUT_PRESETS),
                "validation_f1": round(score.f1, 4),
            }
        )
        save_detector(detector, args.out)
        print(
            f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) after "
            f"{time.perf_counter() - start:.0f} s"
        )
        if args.skip_eval:
            return
        baseline = demo.tune_dark_blobs(validation)
        test = demo.rendered(
            demo.test_specs(size=args.test_size, mean_density_size=args.mean_density_size), folder
        )
        rows = {"demo": demo.evaluate(detector, test), "dark blobs": demo.evaluate(baseline, test)}
    print(
        f"held-out slides ({args.test_size} px at 0.25 µm/px, 100 figures/mm² of tissue unless "
        "stated), MIDOG matching at 7.5 µm:"
    )
    print(demo.format_table(rows))
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
