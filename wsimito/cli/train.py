"""``wsimito train CONFIG.toml``: train a detector on annotated slides (see docs/training.md)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``train`` command to the ``wsimito`` command line.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The subcommands of the ``wsimito`` parser.
    """
    train = sub.add_parser(
        "train",
        help="train a detector from a TOML config (annotations, split, sampler, augmentation, ...)",
        description="Train a detector on annotated slides or ROI images. The config is "
        "documented in docs/training.md; `wsimito train --describe` lists every key.",
    )
    train.add_argument("config", nargs="?", help="the TOML configuration")
    train.add_argument("--resume", action="store_true", help="continue the run in the out folder")
    train.add_argument("--device", default=None, help="overrides the config: auto, cpu, cuda, mps")
    train.add_argument(
        "--until", type=int, default=None, help="stop after this epoch (resume later)"
    )
    train.add_argument(
        "--describe", action="store_true", help="list every config key with its default and exit"
    )
    train.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from ..train.config import describe, load_config

    if args.describe:
        print(describe())
        return 0
    if args.config is None:
        raise SystemExit("wsimito train: give a CONFIG.toml (or --describe)")
    from ..train.loop import Trainer

    config = load_config(args.config)
    trainer = Trainer(config, device=args.device, progress=not args.quiet)
    try:
        result = trainer.fit(resume=args.resume, until=args.until)
    finally:
        trainer.close()
    if result.best is not None:
        print(
            f"best detector: {result.best} "
            f"(count with: wsimito count SLIDE --detector {result.best})"
        )
    return 0
