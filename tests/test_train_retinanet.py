"""Fine-tuning the MIDOG reference RetinaNet: the loss, learning from a reference-layout state
dict, and a checkpoint that loads and counts."""

from __future__ import annotations

import _synthetic_training
import pytest
import torch
from _synthetic_training import small_config

import wsimito
from wsimito.models import RetinaNetDA, RetinaNetDetector
from wsimito.models.anchors import create_anchors, decode_boxes
from wsimito.train.config import TrainingConfig
from wsimito.train.loop import Trainer
from wsimito.train.losses import encode_boxes, retinanet_loss
from wsimito.train.sampler import Samples

synthetic_set = _synthetic_training.synthetic_set  # the session fixture


def test_box_encoding_inverts_the_reference_decoding():
    anchors = create_anchors(((16, 16),))
    boxes = anchors.clone()
    boxes[:, :2] += 0.03 * torch.randn(len(anchors), 2, generator=torch.Generator().manual_seed(0))
    boxes[:, 2:] *= 1.3
    torch.testing.assert_close(decode_boxes(encode_boxes(boxes, anchors), anchors), boxes)


def test_lookalikes_as_negatives_are_plain_background():
    anchors = create_anchors(((16, 16), (8, 8), (4, 4)))
    logits = torch.randn(1, len(anchors), 2, generator=torch.Generator().manual_seed(1))
    deltas = torch.randn(1, len(anchors), 4, generator=torch.Generator().manual_seed(2))
    points = torch.tensor([[40.0, 50.0], [90.0, 20.0]])
    with_negative = retinanet_loss(
        logits, deltas, anchors, [points], [torch.tensor([0, -1])], tile_size=128, box_px=25
    )
    without = retinanet_loss(
        logits, deltas, anchors, [points[:1]], [torch.tensor([0])], tile_size=128, box_px=25
    )
    as_class = retinanet_loss(
        logits, deltas, anchors, [points], [torch.tensor([0, 1])], tile_size=128, box_px=25
    )
    torch.testing.assert_close(with_negative, without)
    assert not torch.allclose(as_class[0], without[0])


def test_fine_tuning_from_a_reference_state_dict(synthetic_set, tmp_path):
    folder, cells = synthetic_set
    torch.manual_seed(0)
    reference = tmp_path / "RetinaNetDA.pth"
    torch.save(RetinaNetDA().state_dict(), reference)  # random weights, reference layout
    cells = cells.assign(split=cells["split"].replace({"valid": "unused"}))
    cells.loc[cells["slide"] == "t3.svs", "split"] = "valid"  # a small validation slide
    config = TrainingConfig.from_dict(
        small_config(
            folder,
            tmp_path / "run",
            model={
                "architecture": "retinanet-da",
                "init": str(reference),
                "patch_size": 128,
                "tile_size": 128,
                "overlap": 16,
                "lookalikes": "class",
            },
            sampler={"epoch_size": 8},
            train={"epochs": 1, "batch_size": 4},
            optimizer={"lr": 1e-4},
            augment={
                "flips": {"enabled": False},
                "hed": {"enabled": False},
                "fda": {"enabled": False},
            },
        )
    )
    trainer = Trainer(config, cells=cells, progress=False, log=lambda _: None)
    try:
        assert trainer.model.sizes == (16, 8, 4) and trainer.model.n_classes == 2
        first = trainer.sampler.samples(0)[:4]
        batch = trainer.dataset.read(
            Samples(
                trainer._to_dataset[first.slide],
                first.x,
                first.y,
                first.offset,
                first.cls,
                first.domain,
                first.cell,
            )
        )
        assert sum(len(p) for p in batch.points) >= 4
        trainer.model.train()
        for group in trainer.optimizer.param_groups:  # past the one-cycle warm-up
            group["lr"] = 1e-4
        losses = []
        for _ in range(12):  # the network learns this batch
            loss = trainer.loss(batch.pixels, batch.points)
            trainer.optimizer.zero_grad()
            loss.backward()
            trainer.optimizer.step()
            losses.append(float(loss.detach()))
        assert losses[-1] < 0.7 * losses[0], losses
        result = trainer.fit()
    finally:
        trainer.close()
    detector = wsimito.load_detector(result.best, device="cpu")
    assert isinstance(detector, RetinaNetDetector)
    assert detector.class_score == "mitosis" and detector.tile_size == 128
    assert detector.model.sizes == (16, 8, 4)
    counted = wsimito.count_mitoses(folder / "t3.svs", detector, tissue=None, progress=False)
    assert counted.timing["tiles"] > 0
    # the reference weights themselves still load for inference
    assert isinstance(wsimito.load_detector(reference, device="cpu"), RetinaNetDetector)


def test_architecture_mismatch_is_a_config_error(tmp_path, synthetic_set):
    from wsimito.train.config import ConfigError

    folder, _ = synthetic_set
    torch.save(RetinaNetDA().state_dict(), tmp_path / "ref.pth")
    config = TrainingConfig.from_dict(
        small_config(folder, tmp_path / "run", model={"init": str(tmp_path / "ref.pth")})
    )
    with pytest.raises(ConfigError, match=r"holds a 'retinanet-da' network.*architecture"):
        Trainer(config, progress=False)
