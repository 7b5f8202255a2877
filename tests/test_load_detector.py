"""load_detector and save_detector: registry names, files, URLs and wrong files."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch

from wsimito.errors import WeightsError
from wsimito.models import (
    PointDetector,
    PointHeatmapNet,
    RetinaNetDA,
    RetinaNetDetector,
    UnpinnedWeightsWarning,
    Weights,
    get_weights,
    list_detectors,
    load_detector,
    register_detector,
    save_detector,
)
from wsimito.models import registry as registry_module


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def registry(monkeypatch):
    """The detector registry, restored after the test."""
    monkeypatch.setattr(
        registry_module, "_DETECTOR_WEIGHTS", dict(registry_module._DETECTOR_WEIGHTS)
    )
    return registry_module._DETECTOR_WEIGHTS


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
    assert (detector.name, detector.metadata) == (
        "RetinaNetDA",
        {"weights": str(path), "weights_sha256": _sha256(path)},
    )


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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.pt"]  # no temporary left
    loaded = load_detector(path, device="cpu")
    assert isinstance(loaded, PointDetector)
    assert loaded.settings == detector.settings
    provenance = {"weights": str(path), "weights_sha256": _sha256(path)}
    assert (loaded.name, loaded.metadata) == ("tiny", {**detector.metadata, **provenance})
    # saving again does not carry the loaded file's provenance into the new file
    again = load_detector(save_detector(loaded, tmp_path / "again.pt"), device="cpu")
    assert again.metadata["weights_sha256"] == _sha256(tmp_path / "again.pt")
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


def test_missing_bundled_weights_raise_a_clear_error(registry, tmp_path):
    entry = registry["demo"]
    assert entry.path == Path(registry_module.__file__).parent / "weights" / "demo.pt"
    registry["demo"] = dataclasses.replace(entry, path=tmp_path / "absent" / "demo.pt")
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


def test_urls_are_downloaded_once_and_checked_by_sha256(http_folder, registry):
    served, base = http_folder
    original = _trained_like_point_detector()
    save_detector(original, served / "tiny.pt")
    sha = _sha256(served / "tiny.pt")
    detector = load_detector(f"{base}/tiny.pt", device="cpu", sha256=sha)
    _assert_same_state(detector.model, original.model.state_dict())
    assert detector.metadata["weights_sha256"] == sha
    assert detector.metadata["weights"] == f"{base}/tiny.pt"
    assert len(list((Path(registry_module.pooch.os_cache("wsimito")) / "weights").iterdir())) == 1

    register_detector("good", f"{base}/tiny.pt", sha256=sha, architecture="point-heatmap-net")
    register_detector("bad", Weights(url=f"{base}/tiny.pt", sha256="0" * 64))
    (served / "tiny.pt").unlink()  # "good" must come from the cache now
    assert load_detector("good", device="cpu").settings == original.settings
    with pytest.raises(WeightsError, match="could not download"):
        load_detector("bad", device="cpu")


def test_a_url_needs_a_sha256_or_an_explicit_skip(http_folder):
    served, base = http_folder
    save_detector(_trained_like_point_detector(), served / "tiny.pt")
    with pytest.raises(WeightsError, match=r"no sha256= was given.*sha256='skip'"):
        load_detector(f"{base}/tiny.pt", device="cpu")
    sha = _sha256(served / "tiny.pt")
    with pytest.warns(UnpinnedWeightsWarning, match=f"This copy has SHA-256 {sha}"):
        detector = load_detector(f"{base}/tiny.pt", device="cpu", sha256="skip")
    assert detector.metadata["weights_sha256"] == sha


def test_tampered_weights_served_by_url_are_refused(http_folder):
    # The user's case: a changed demo.pt served locally changed the count from 3 to 47.
    served, base = http_folder
    demo = get_weights("demo").path
    (served / "demo.pt").write_bytes(demo.read_bytes())
    pinned = _sha256(demo)
    tampered = load_detector("demo", device="cpu")
    with torch.no_grad():
        tampered.candidates.model.head[-1].bias.fill_(4.0)  # the demo is a cascade
    save_detector(tampered, served / "demo.pt")
    with pytest.raises(WeightsError, match=f"does not have the expected SHA-256 {pinned}"):
        load_detector(f"{base}/demo.pt", device="cpu", sha256=pinned)


def test_a_local_file_is_checked_when_a_sha256_is_given(tmp_path):
    path = save_detector(_trained_like_point_detector(), tmp_path / "tiny.pt")
    digest = _sha256(path)
    assert load_detector(path, device="cpu", sha256=digest).metadata["weights_sha256"] == digest
    with pytest.raises(WeightsError, match=f"has SHA-256 {digest}, not the expected 1111"):
        load_detector(path, device="cpu", sha256="1" * 64)
    with pytest.raises(ValueError, match="64 hex digits"):
        load_detector(path, device="cpu", sha256="abc")


def test_every_loaded_detector_records_the_sha256_of_its_weights():
    demo = load_detector("demo", device="cpu")
    assert demo.metadata["weights_sha256"] == _sha256(get_weights("demo").path)
    assert demo.metadata["weights"] == str(get_weights("demo").path)
    assert "synthetic" in demo.metadata["training_data"]  # the entry's facts are kept


def test_the_midog_entry_is_unpinned_and_warns_when_loaded(http_folder, registry, retinanet_state):
    served, base = http_folder
    entry = get_weights("midog21-retinanet")
    assert entry.url.endswith("RetinaNetDA.pth") and not entry.pinned
    torch.save(retinanet_state, served / "RetinaNetDA.pth")
    registry["midog21-retinanet"] = dataclasses.replace(entry, url=f"{base}/RetinaNetDA.pth")
    digest = _sha256(served / "RetinaNetDA.pth")
    with pytest.warns(UnpinnedWeightsWarning, match=f"not pinned by a SHA-256.*{digest}"):
        detector = load_detector("midog21-retinanet", device="cpu")
    assert detector.metadata["weights_sha256"] == digest
    assert detector.metadata["source"] == entry.metadata["source"]


def test_registered_detectors_load_by_name_and_are_listed(tmp_path, registry):
    assert {"demo", "midog21-retinanet"} <= set(list_detectors())
    path = save_detector(_trained_like_point_detector(), tmp_path / "tiny.pt")
    weights = register_detector(
        "lab-tiny", path, sha256=_sha256(path), metadata={"intended_use": "tests"}
    )
    assert weights.pinned and weights.path == path and get_weights("lab-tiny") is weights
    assert list_detectors() == sorted(list_detectors()) and "lab-tiny" in list_detectors()
    detector = load_detector("lab-tiny", device="cpu")
    assert detector.name == "tiny" and detector.metadata["intended_use"] == "tests"
    assert isinstance(load_detector(weights, device="cpu"), PointDetector)
    with pytest.raises(ValueError, match="already registered; pass overwrite=True"):
        register_detector("lab-tiny", path)
    register_detector("lab-tiny", path, overwrite=True)
    with pytest.raises(WeightsError, match="is not a file"):
        register_detector("lab-missing", tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        register_detector("lab-bad", path, architecture="resnet")
    with pytest.raises(KeyError, match="registered: demo"):
        get_weights("no-such-detector")


def test_a_checkpoint_without_a_state_dict_is_a_weights_error(tmp_path):
    path = save_detector(_trained_like_point_detector(), tmp_path / "tiny.pt")
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["state_dict"]
    torch.save(checkpoint, path)
    with pytest.raises(WeightsError, match="without a state dict"):
        load_detector(path, device="cpu")


@pytest.mark.parametrize(
    "config, message",
    [
        ({"width": 10**9}, r"invalid 'point-heatmap-net' config: width=1000000000"),
        ({"width": 60_000, "depth": 6}, r"makes a network of [\d,]+ parameters .* GiB"),
        ({"width": "wide"}, r"invalid 'point-heatmap-net' config"),
        ([1, 2], r"config is not a dict"),
    ],
)
def test_an_absurd_config_is_refused_before_the_network_is_built(tmp_path, config, message):
    # The user's case: a width of 1e9 made torch try to allocate 192 GB.
    import tracemalloc

    path = save_detector(_trained_like_point_detector(), tmp_path / "tiny.pt")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["config"] = (
        config if not isinstance(config, dict) else {**checkpoint["config"], **config}
    )
    torch.save(checkpoint, path)
    tracemalloc.start()
    try:
        with pytest.raises(WeightsError, match=message):
            load_detector(path, device="cpu")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50_000_000  # bytes


def test_a_failed_save_leaves_no_file(tmp_path):
    detector = _trained_like_point_detector()
    detector.metadata["note"] = lambda: None  # torch.save cannot pickle it
    with pytest.raises(Exception, match="pickle"):
        save_detector(detector, tmp_path / "tiny.pt")
    assert list(tmp_path.iterdir()) == []


def test_the_two_registries_have_names_that_tell_them_apart():
    import wsimito.data
    import wsimito.models

    assert "slides/cmu-1-small-region.svs" in wsimito.data.SAMPLES
    assert not hasattr(wsimito.data, "REGISTRY") and not hasattr(wsimito.models, "REGISTRY")
    assert wsimito.register_detector is register_detector
    assert wsimito.list_detectors() == list_detectors()
