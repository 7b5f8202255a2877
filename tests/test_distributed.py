"""`wsimito.count_many` on a real LocalCluster of worker processes on loopback: results equal
sequential runs, killed workers and reruns, failing slides, output names, memory and GPUs."""

from __future__ import annotations

import csv
import json
import os
import signal
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

import wsimito
from wsimito.batch import (
    MANIFEST_NAME,
    BatchSettingsError,
    file_sha256,
    output_name,
    peak_rss_mib,
)
from wsimito.distributed import (
    GPUPinning,
    activation_bytes_per_tile,
    choose_gpu,
    estimate_worker_memory,
    visible_gpus,
)
from wsimito.synthetic import write_slide

SIZE = 640  # px at 0.5 µm/px: a 0.32 mm square, a handful of tiles


def _detector() -> wsimito.DarkBlobDetector:
    return wsimito.DarkBlobDetector(mpp=1.0, tile_size=128, overlap=16, device="cpu")


class KillOnce(wsimito.DarkBlobDetector):
    """The dark-blob detector, except that the first process to use it kills itself (SIGKILL)
    while counting: a worker that dies mid-slide."""

    def __init__(self, flag: str) -> None:
        super().__init__(mpp=1.0, tile_size=128, overlap=16, device="cpu")
        self.flag = flag

    def detect(self, tiles):
        try:
            os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return super().detect(tiles)
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> dict[str, str]:
    """Synthetic slides; two share the file name s.svs in different folders."""
    root = tmp_path_factory.mktemp("slides")
    paths = {}
    for key, rel, seed in (("a", "a/s.svs", 1), ("b", "b/s.svs", 2), ("c", "c.svs", 3)):
        path = root / rel
        path.parent.mkdir(exist_ok=True)
        write_slide(path, SIZE, SIZE, mpp=0.5, seed=seed)
        paths[key] = str(path)
    return paths


@pytest.fixture(scope="module")
def sequential(slides):
    """Plain count_mitoses runs, one after another, for every slide."""
    det = _detector()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {k: wsimito.count_mitoses(p, det, progress=False) for k, p in slides.items()}


@pytest.fixture(scope="module")
def broken(sample) -> str:
    return sample("slides/broken.svs")


@pytest.fixture(scope="module")
def parallel(slides, broken, tmp_path_factory):
    """count_many with its own LocalCluster of two worker processes; one slide is broken."""
    out = tmp_path_factory.mktemp("parallel")
    paths = [slides["c"], broken, slides["a"], slides["b"]]
    with pytest.warns(UserWarning, match=r"1 slide\(s\) failed \(first: .*broken\.svs"):
        batch = wsimito.count_many(paths, out, detector=_detector(), workers=2, progress=False)
    return out, batch


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


def _points(csv_path: str) -> np.ndarray:
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return np.array([[float(r["x"]), float(r["y"]), float(r["score"])] for r in rows]).reshape(
        -1, 3
    )


def _row(batch, path: str) -> dict:
    rows = batch.table[batch.table["slide"] == path].to_dict("records")
    assert len(rows) == 1, f"{path} appears {len(rows)} times"
    return rows[0]


def test_parallel_runs_give_exactly_the_sequential_results(slides, sequential, parallel):
    out, batch = parallel
    assert len(batch.table) == len(slides) + 1
    for key, path in slides.items():
        expected = sequential[key]
        row = _row(batch, path)
        assert row["count"] == expected.count
        assert row["tissue_area_mm2"] == expected.tissue_area_mm2
        assert row["hotspot_count"] == expected.hotspot.count
        counted = expected.counted()
        got = _points(row["csv"])
        np.testing.assert_array_equal(got[:, :2], counted.xy)
        np.testing.assert_array_equal(got[:, 2], counted.scores)
        geo = json.loads(Path(row["geojson"]).read_text())
        detections = [f for f in geo["features"] if f["properties"]["objectType"] == "detection"]
        assert len(detections) == expected.count
    parquet = __import__("pandas").read_parquet(out / "summary.parquet")
    assert parquet["count"].tolist() == batch.table["count"].tolist()


def test_slides_with_one_file_name_in_two_folders_keep_both_outputs(slides, sequential, parallel):
    _, batch = parallel
    a, b = _row(batch, slides["a"]), _row(batch, slides["b"])
    assert a["name"] != b["name"] and a["name"].startswith("s-") and b["name"].startswith("s-")
    for key, row in (("a", a), ("b", b)):
        summary = json.loads(Path(row["json"]).read_text())
        assert summary["slide_path"] == slides[key]
        assert summary["summary"]["count"] == sequential[key].count
    assert sequential["a"].count != sequential["b"].count  # the two really differ


def test_manifest_records_settings_versions_and_output_hashes(slides, parallel):
    out, batch = parallel
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["settings"]["detector_name"] == "dark-blob-baseline"
    assert manifest["settings"]["tissue"] == "auto"
    assert manifest["versions"]["wsimito"] == wsimito.__version__
    for path in slides.values():
        entry = manifest["slides"][path]
        assert entry["status"] == "done" and entry["seconds"] > 0
        for info in entry["outputs"].values():
            assert file_sha256(out / info["file"]) == info["sha256"]


def test_a_rerun_with_the_same_settings_counts_nothing_again(slides, parallel):
    out, first = parallel
    before = json.loads((out / MANIFEST_NAME).read_text())
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("s-*")}
    again = wsimito.count_many(list(slides.values()), out, detector=_detector(), progress=False)
    assert again.counted == [] and sorted(again.skipped) == sorted(slides.values())
    after = json.loads((out / MANIFEST_NAME).read_text())
    for path in slides.values():
        assert after["slides"][path]["finished"] == before["slides"][path]["finished"]
        assert after["slides"][path]["attempts"] == 1
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("s-*")} == stamps
    assert again.table["count"].tolist() == first.table["count"].tolist()


def test_a_rerun_with_other_settings_is_refused(slides, parallel):
    out, _ = parallel
    with pytest.raises(BatchSettingsError, match=r"threshold.*overwrite=True"):
        wsimito.count_many(list(slides.values()), out, detector=_detector(), threshold=0.9)


def test_an_unreadable_slide_is_reported_and_the_others_finish(slides, broken, parallel):
    out, batch = parallel
    row = _row(batch, broken)
    assert row["status"] == "failed" and "SlideOpenError" in row["error"]
    assert "broken.svs" in row["error"]
    assert [_row(batch, p)["status"] for p in slides.values()] == ["done"] * len(slides)
    assert batch.failed == [broken] and not batch.ok
    with open(out / "summary.csv", newline="") as fh:
        rows = {r["slide"]: r for r in csv.DictReader(fh)}
    assert rows[broken]["status"] == "failed" and "SlideOpenError" in rows[broken]["error"]
    assert rows[slides["c"]]["count"] == str(_row(batch, slides["c"])["count"])


def test_a_killed_worker_then_a_rerun_counts_every_slide_once(slides, sequential, client, tmp_path):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    scheduler = client.cluster.scheduler
    allowed, scheduler.allowed_failures = scheduler.allowed_failures, 0  # no silent retry
    det = KillOnce(str(tmp_path / "killed-once"))
    out = tmp_path / "out"
    paths = list(slides.values())
    try:
        with pytest.warns(UserWarning, match="KilledWorker"):
            first = wsimito.count_many(paths, out, client=client, detector=det, progress=False)
        second = wsimito.count_many(paths, out, client=client, detector=det, progress=False)
    finally:
        scheduler.allowed_failures = allowed
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    killed = first.failed
    assert killed, "the worker was not killed"
    assert all("KilledWorker" in _row(first, p)["error"] for p in killed)
    assert sorted(second.counted) == sorted(killed)
    assert sorted(second.skipped) == sorted(set(paths) - set(killed))
    assert second.ok and len(second.table) == len(paths)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    for key, path in slides.items():
        row = _row(second, path)
        assert row["count"] == sequential[key].count
        np.testing.assert_array_equal(_points(row["csv"])[:, :2], sequential[key].counted().xy)
        entry = manifest["slides"][path]
        assert entry["attempts"] == (2 if path in killed else 1)
        document = json.loads((out / entry["outputs"]["json"]["file"]).read_text())
        assert document["settings_key"] == manifest["settings_key"]
        for info in entry["outputs"].values():
            assert file_sha256(out / info["file"]) == info["sha256"]
    assert not list(out.glob(".*.tmp"))


def test_output_names_are_stable_and_unique_per_path(tmp_path):
    one, two = tmp_path / "x" / "slide.svs", tmp_path / "y" / "slide.svs"
    assert output_name(one) == output_name(str(one)) == output_name(tmp_path / "x/../x/slide.svs")
    assert output_name(one) != output_name(two)
    assert output_name(one).startswith("slide-") and len(output_name(one)) == len("slide-") + 8
    odd = output_name(tmp_path / "=cmd|' x[z].ome.tiff")
    assert odd.startswith("cmd_x_z-") and "/" not in odd and " " not in odd


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    """A tiny untrained point detector saved as a checkpoint (a detector given by path)."""
    torch = pytest.importorskip("torch")
    from wsimito.models import PointDetector, PointHeatmapNet, save_detector

    torch.manual_seed(0)
    det = PointDetector(
        PointHeatmapNet(width=8, depth=3, stride=4),
        mpp=0.5,
        tile_size=128,
        overlap=32,
        threshold=0.2,
        device="cpu",
        metadata={"training_data": "none (untrained test weights)"},
    )
    return str(save_detector(det, tmp_path_factory.mktemp("w") / "tiny.pt"))


def test_workers_load_a_detector_once_and_stay_under_its_memory_estimate(
    slides, weights, client, tmp_path
):
    batch = wsimito.count_many(
        [slides["a"], slides["c"]], tmp_path, client=client, detector=weights, progress=False
    )
    assert batch.ok
    loaded = client.run(lambda: list(__import__("wsimito.batch").batch._DETECTORS))
    assert [(weights, "auto")] in loaded.values()  # one entry, keyed by spec and device
    det = wsimito.load_detector(weights, device="cpu")
    with wsimito.open_slide(slides["a"]) as slide:
        estimate = estimate_worker_memory(slide, det, batch_size=8)
        bigger = estimate_worker_memory(slide, det, batch_size=16)
    peaks = client.run(peak_rss_mib)  # every worker, whatever it counted
    assert 0 < max(peaks.values()) * 2**20 < estimate.total
    assert 0 < max(batch.table["peak_rss_mib"]) * 2**20 < estimate.total
    assert bigger.batch == 2 * estimate.batch and bigger.prefetch > estimate.prefetch
    assert estimate.weights == 2 * sum(p.numel() * 4 for p in det.model.parameters())
    parts = estimate.base + estimate.weights + estimate.prefetch + estimate.batch + estimate.tissue
    assert estimate.total == pytest.approx(1.5 * parts, abs=1)


def test_activations_are_measured_from_the_network():
    torch = pytest.importorskip("torch")
    from wsimito.models import PointDetector, PointHeatmapNet

    torch.manual_seed(0)
    sizes = []
    for tile in (64, 128):
        det = PointDetector(
            PointHeatmapNet(width=8, depth=3, stride=4),
            mpp=0.5,
            tile_size=tile,
            overlap=16,
            threshold=0.5,
            device="cpu",
        )
        sizes.append(activation_bytes_per_tile(det))
    assert sizes[0] > 0 and sizes[1] == pytest.approx(4 * sizes[0], rel=0.05)


def test_each_worker_takes_its_own_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert visible_gpus() == ["3", "5"]
    workers = [GPUPinning(lock_dir=str(tmp_path)) for _ in range(3)]
    workers[0].setup()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    workers[1].setup()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with pytest.warns(UserWarning, match="shares GPU"):
        workers[2].setup()
    assert workers[2].gpu in ("3", "5")
    workers[0].teardown()  # its GPU is free again
    gpu, handle = choose_gpu(["3", "5"], tmp_path)
    assert gpu == "3" and handle is not None
    handle.close()
    workers[1].teardown()


def test_no_gpu_means_no_pinning(monkeypatch, tmp_path):
    for value in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
        assert visible_gpus() == []
        plugin = GPUPinning(lock_dir=str(tmp_path))
        plugin.setup()
        assert plugin.gpu is None and os.environ["CUDA_VISIBLE_DEVICES"] == value
    with pytest.raises(ValueError, match="no GPU"):
        choose_gpu([], tmp_path)
