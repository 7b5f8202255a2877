"""The MIDOG++ recipe's data plumbing on the real annotation and split files, with stand-in
TIFF images (real names and sizes, a dark disc at every annotated cell) for a subset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from wsimito.data import fetch
from wsimito.train.config import load_config
from wsimito.train.loop import Trainer, load_tables, split_slides
from wsimito.train.sampler import BalancedSampler

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "midogpp"
TUMOURS = 7
RADIUS = 10  # px of the stand-in discs


@pytest.fixture(scope="module")
def midogpp() -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(cells, slides)`` of MIDOG++ with the published split, read as the config reads them."""
    config = load_config(EXAMPLES / "midogpp.toml")
    config.data.annotations = str(fetch("annotations/MIDOGpp.json"))
    config.data.split_table = str(fetch("annotations/MIDOGpp-split.csv"))
    cells, slides, _ = load_tables(config)
    return cells, slides


def test_the_config_reads_every_annotation(midogpp):
    cells, slides = midogpp
    assert cells["kind"].value_counts().to_dict() == {"lookalike": 14349, "mitosis": 11937}
    assert len(slides) == 503 and slides["tumor_type"].nunique() == TUMOURS


def test_published_split_keeps_every_test_slide_out(midogpp):
    cells, slides = midogpp
    config = load_config(EXAMPLES / "midogpp.toml")
    parts = split_slides(slides, config)
    test = set(slides.loc[slides["split"] == "test", "slide"])
    assert len(test) == 111 and set(parts["test"]) == test
    used = set(parts["train"]) | set(parts["validation"])
    assert len(used) == 392 and not used & test
    by_tumour = slides.set_index("slide")["tumor_type"]
    assert by_tumour[parts["validation"]].nunique() == TUMOURS  # validation from every type
    assert by_tumour[parts["train"]].nunique() == TUMOURS
    assert cells[cells["slide"].isin(used)]["kind"].value_counts()["mitosis"] > 8000


def test_leave_one_tumour_out_holds_the_type_out(midogpp):
    _, slides = midogpp
    config = load_config(EXAMPLES / "midogpp-leave-one-tumour-out.toml")
    parts = split_slides(slides, config)
    tumour = slides.set_index("slide")["tumor_type"]
    assert set(tumour[parts["test"]]) == {"human melanoma"}
    assert len(parts["test"]) == int((slides["tumor_type"] == "human melanoma").sum())
    assert "human melanoma" not in set(tumour[parts["train"] + parts["validation"]])
    assert tumour[parts["train"]].nunique() == TUMOURS - 1


def test_sampler_draws_every_tumour_type_equally_from_training_slides(midogpp):
    cells, slides = midogpp
    parts = split_slides(slides, load_config(EXAMPLES / "midogpp.toml"))
    train = slides[slides["slide"].isin(parts["train"])]
    sampler = BalancedSampler(
        cells[cells["slide"].isin(parts["train"])],
        train,
        epoch_size=7000,
        domains="tumor_type",
        proportions={"mitosis": 0.5, "lookalike": 0.25, "random": 0.25},
    )
    samples = sampler.samples(0)
    counts = np.bincount(samples.domain, minlength=TUMOURS)
    assert len(sampler.domains) == TUMOURS and counts.min() > 850 and counts.max() < 1150
    assert set(train["slide"].to_numpy()[samples.slide]) <= set(parts["train"])
    assert abs(np.mean(samples.cls == 0) - 0.5) < 0.03


def write_standin(path: Path, width: int, height: int, points: np.ndarray, mpp: float) -> None:
    """A tiled TIFF of ``width`` x ``height`` px, white with a dark disc at each point."""
    tile = 512

    def tiles():
        yy, xx = np.mgrid[0:tile, 0:tile] + 0.5
        for y0 in range(0, height, tile):
            for x0 in range(0, width, tile):
                block = np.full((tile, tile, 3), 255, np.uint8)
                near = points[
                    (np.abs(points[:, 0] - x0 - tile / 2) < tile / 2 + RADIUS)
                    & (np.abs(points[:, 1] - y0 - tile / 2) < tile / 2 + RADIUS)
                ]
                for x, y in near:
                    block[(xx + x0 - x) ** 2 + (yy + y0 - y) ** 2 <= RADIUS**2] = 40
                yield block

    tifffile.imwrite(
        path,
        tiles(),
        shape=(height, width, 3),
        dtype=np.uint8,
        tile=(tile, tile),
        photometric="rgb",
        compression="zlib",
        resolution=(1e4 / mpp, 1e4 / mpp),
        resolutionunit="CENTIMETER",
        metadata=None,
    )


def test_standin_images_give_the_right_patches_and_no_test_image_is_read(midogpp, tmp_path):
    cells, slides = midogpp
    config = load_config(EXAMPLES / "midogpp.toml")
    # a subset: two training and one test slide per tumour type, at their real names and sizes
    subset = pd.concat(
        [
            group.head(n)
            for (_, split), group in slides.groupby(["tumor_type", "split"])
            for n in [2 if split == "train" else 1]
        ]
    )
    assert len(subset) == 3 * TUMOURS
    for row in subset.itertuples():
        points = cells.loc[cells["slide"] == row.slide, ["x", "y"]].to_numpy()
        write_standin(tmp_path / row.slide, int(row.width), int(row.height), points, 0.25)
    config.data.images = str(tmp_path)
    config.out = str(tmp_path / "run")
    trainer = Trainer(
        config,
        device="cpu",
        progress=False,
        log=lambda _: None,
        cells=cells[cells["slide"].isin(subset["slide"])],
        slides=subset,
    )
    try:
        test = set(subset.loc[subset["split"] == "test", "slide"])
        assert set(trainer.split["test"]) == test
        assert not set(trainer.dataset.slides["slide"]) & test  # test images are never opened
        assert len(trainer.sampler.domains) == TUMOURS
        samples = trainer.sampler.samples(0)[:42]
        assert len(np.unique(samples.domain)) == TUMOURS
        batch = trainer.dataset.read(
            type(samples)(
                trainer._to_dataset[samples.slide],
                samples.x,
                samples.y,
                samples.offset,
                samples.cls,
                samples.domain,
                samples.cell,
            )
        )
    finally:
        trainer.close()
    assert batch.pixels.shape == (42, 3, 512, 512)
    checked = 0
    for pixels, points in zip(batch.pixels, batch.points, strict=True):
        inside = points[((points[:, :2] >= RADIUS) & (points[:, :2] < 512 - RADIUS)).all(dim=1)]
        for x, y, _kind in inside.tolist():
            assert int(pixels[:, int(y), int(x)].max()) < 60  # the disc is under the target
            checked += 1
        dark = (pixels.float().mean(dim=0) < 128).sum().item()
        assert dark <= len(points) * np.pi * (RADIUS + 1) ** 2  # no disc without its target
    assert checked >= 42
