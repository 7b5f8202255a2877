"""Synthetic annotated slides for the training tests (written once per test session)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wsimito.synthetic import write_slide

#: name, side (px at 0.25 µm/px), split, domain (stain preset), seed
SLIDES = [
    ("t0.svs", 1024, "train", "standard", 11),
    ("t1.svs", 1024, "train", "haematoxylin-rich", 12),
    ("t2.svs", 1024, "train", "standard", 13),
    ("t3.svs", 1024, "train", "haematoxylin-rich", 14),
    ("v0.svs", 2048, "valid", "standard", 21),
    ("x0.svs", 1536, "test", "standard", 31),
]


def write_set(folder: Path) -> pd.DataFrame:
    """Write :data:`SLIDES` into ``folder``; their cells as a table in the to_frame() layout."""
    rows = []
    for name, side, split, stain, seed in SLIDES:
        truth = write_slide(
            folder / name,
            side,
            side,
            mpp=0.25,
            seed=seed,
            stain=stain,
            tissue_fraction=1.0,
            tumour_fraction=0.9,
            mitoses_per_mm2=250,
            imposters_per_mitosis=0.6,
            compression="deflate",
        )
        for kind, label, points in (
            ("mitosis", "mitotic figure", truth.mitoses),
            ("lookalike", "hard negative", truth.imposters),
        ):
            rows += [
                {
                    "slide": name,
                    "x": x,
                    "y": y,
                    "label": label,
                    "kind": kind,
                    "split": split,
                    "stain": stain,
                }
                for x, y in points
            ]
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def synthetic_set(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """``(folder, cells)``: the synthetic slides and their annotations."""
    folder = tmp_path_factory.getbasetemp() / "synthetic-training"
    if (folder / "cells.csv").is_file():  # written for another test module of this session
        return folder, pd.read_csv(folder / "cells.csv")
    folder.mkdir(exist_ok=True)
    cells = write_set(folder)
    cells.to_csv(folder / "cells.csv", index=False)
    return folder, cells


def small_config(folder: Path, out: Path, **sections) -> dict:
    """A config dict for a small point network at 0.5 µm/px on :data:`SLIDES`."""
    config = {
        "name": "synthetic-test",
        "out": str(out),
        "seed": 0,
        "device": "cpu",
        "training_data": "synthetic slides from wsimito.synthetic (test)",
        "data": {
            "annotations": str(folder / "cells.csv"),
            "format": "table",
            "images": str(folder),
        },
        "split": {"train": ["train"], "validation": ["valid"], "test": ["test"]},
        "sampler": {
            "epoch_size": 320,
            "domains": ["stain"],
            "mitosis": 0.6,
            "lookalike": 0.2,
            "random": 0.2,
        },
        "augment": {
            "zoom": {"enabled": False},
            "stain_matrix": {"enabled": False},
            "fda": {"bank_patches": 4},
            "blur": {"enabled": False},
            "jpeg": {"enabled": False},
        },
        "model": {
            "mpp": 0.5,
            "patch_size": 128,
            "tile_size": 256,
            "overlap": 32,
            "width": 8,
            "depth": 3,
            "stride": 4,
        },
        "optimizer": {"lr": 3e-3},
        "train": {"epochs": 2, "batch_size": 8, "num_workers": 2},
        "test": {"evaluate": False},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            config[key] = {**config.get(key, {}), **value}
        else:
            config[key] = value
    return config


def point_truth(cells: pd.DataFrame, slide: str) -> np.ndarray:
    """``(M, 2)`` mitotic figures of ``slide`` (level-0 px)."""
    rows = cells[(cells["slide"] == slide) & (cells["kind"] == "mitosis")]
    return rows[["x", "y"]].to_numpy()
