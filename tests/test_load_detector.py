"""load_detector and save_detector: registry names, files, URLs and wrong files."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch

from wsimito.errors import WeightsError
from wsimito.models import (
    REGISTRY,
    PointDetector,
    PointHeatmapNet,
    RetinaNetDA,
    RetinaNetDetector,
    load_detector,
    save_detector,
)
from wsimito.models import registry as registry_module


@pytest.fixture(scope="module")
def retinanet_state() -> dict[str, torch.Tensor]:
    """A RetinaNetDA state dict with every tensor randomized, BN statistics included."""
    gen = torch.Generator().manual_seed(0)
    state = RetinaNetDA().state_dict()
    return {
        k: (torch.rand(v.shape, generator=gen) + 0.5 if v.is_floating_point() else v + 3)
        for k, v in state.items()
    }


def _assert_same_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k].cpu(), state[k]) for k in state)


@pytest.mark.parametrize("wrapped", [False, True])
def test_retinanet_checkpoint_round_trips_plain_or_wrapped(tmp_path, retinanet_state, wrapped):
    path = tmp_path / "RetinaNetDA.pth"
    torch.save({"model": retinanet_state} if wrapped else retinanet_state, path)
    detector = load_detector(path, device="cpu")
    assert isinstance(detector, RetinaNetDetector)
    _assert_same_state(detector.model, retinanet_state)
    assert (detector.mpp, detector.tile_size, detector.overlap, detector.threshold) == (
        0.25,
        512,
        52,
        0.64,
    )
    assert (detector.name, detector.metadata) == ("RetinaNetDA", {"weights": str(path)})


def test_wrong_state_dict_lists_missing_and_unexpected_keys(tmp_path, retinanet_state):
    state = dict(retinanet_state)
    del state["classifier.3.bias"]
    state["classifier.9.bias"] = torch.zeros(10)
    state["c5top5.weight"] = torch.zeros(64, 512, 1, 1)
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as info:
        load_detector(path, device="cpu")
    message = str(info.value)
    assert "retinanet-da" in message and "RetinaNetDA" in message
    assert "missing keys (1): classifier.3.bias" in message
    assert "unexpected keys (1): classifier.9.bias" in message
    assert "c5top5.weight: file (64, 512, 1, 1), model (128, 512, 1, 1)" in message


def test_a_different_network_is_reported_with_the_expected_architecture(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(PointHeatmapNet(width=4, depth=3).state_dict(), path)
    with pytest.raises(WeightsError, match=r"(?s)RetinaNetDA.*missing keys \(209\).*unexpected"):
        load_detector(path, device="cpu")


def _trained_like_point_detector() -> PointDetector:
    torch.manual_seed(0)
    model = PointHeatmapNet(width=4, depth=3, stride=4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        model.head[-1].bias.fill_(2.0)  # peaks above min_score, so outputs are compared
    return PointDetector(
        model,
        mpp=0.5,
        tile_size=64,
        overlap=12,
        threshold=0.7,
        min_distance_um=3.0,
        device="cpu",
        name="tiny",
        metadata={"training_data": "synthetic", "intended_use": "tests"},
    )


def test_point_detector_round_trips_through_our_format(tmp_path):
    detector = _trained_like_point_detector()
    path = save_detector(detector, tmp_path / "tiny.pt")
    assert not (tmp_path / "tiny.pt.part").exists()
    loaded = load_detector(path, device="cpu")
    assert isinstance(loaded, PointDetector)
    assert loaded.settings == detector.settings
    assert (loaded.name, loaded.metadata) == ("tiny", detector.metadata)
    assert loaded.model.config == detector.model.config
    tiles = torch.randint(
        0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    expected, got = detector.detect(tiles), loaded.detect(tiles)
    assert sum(len(p) for p in expected) > 0
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))


def test_settings_can_be_overridden_when_loading(tmp_path):
    path = save_detector(_trained_like_point_detector(), tmp_path / "tiny.pt")
    assert load_detector(path, device="cpu", threshold=0.3).threshold == 0.3


def test_missing_bundled_weights_raise_a_clear_error(monkeypatch, tmp_path):
    entry = REGISTRY["demo"]
    assert entry.path == Path(registry_module.__file__).parent / "weights" / "demo.pt"
    monkeypatch.setitem(
        REGISTRY,
        "demo",
        registry_module.RegistryEntry(
            architecture=entry.architecture,
            description=entry.description,
            path=tmp_path / "absent" / "demo.pt",
        ),
    )
    with pytest.raises(WeightsError, match="bundled weights for 'demo' are missing"):
        load_detector("demo", device="cpu")


def test_unknown_spec_names_the_registered_detectors():
    with pytest.raises(WeightsError, match="demo, midog21-retinanet"):
        load_detector("no-such-model-or-file.pt", device="cpu")


class _Opaque:
    """Not a tensor: weights-only loading refuses it."""


def test_checkpoints_with_python_objects_are_refused_with_advice(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"model": {}, "extra": _Opaque()}, path)
    with pytest.raises(WeightsError, match="weights_only=False"):
        load_detector(path, device="cpu")


def test_non_checkpoint_files_raise_weights_error(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable torch checkpoint"):
        load_detector(path, device="cpu")


@pytest.fixture
def http_folder(tmp_path, monkeypatch):
    """Serve a folder over http on localhost; pooch's cache goes to tmp_path."""
    served = tmp_path / "served"
    served.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_urls_are_downloaded_once_and_checked_by_sha256(http_folder, monkeypatch):
    served, base = http_folder
    original = _trained_like_point_detector()
    save_detector(original, served / "tiny.pt")
    detector = load_detector(f"{base}/tiny.pt", device="cpu")
    _assert_same_state(detector.model, original.model.state_dict())
    assert len(list((Path(registry_module.pooch.os_cache("wsimito")) / "weights").iterdir())) == 1

    sha = hashlib.sha256((served / "tiny.pt").read_bytes()).hexdigest()
    for name, digest in (("good", sha), ("bad", "0" * 64)):
        monkeypatch.setitem(
            REGISTRY,
            name,
            registry_module.RegistryEntry(
                architecture="point-heatmap-net",
                description="test",
                url=f"{base}/tiny.pt",
                sha256=digest,
            ),
        )
    (served / "tiny.pt").unlink()  # "good" must come from the cache now
    assert load_detector("good", device="cpu").settings == original.settings
    with pytest.raises(WeightsError, match="could not download"):
        load_detector("bad", device="cpu")
