"""`wsimito count` survives a batch: errors in one or two lines, plain-text names, harmless
CSV cells, --on-error, --version, Ctrl-C with a consistent manifest, resume, and atomic
writes that clean up after killed writers."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tifffile

import wsimito
from wsimito.batch import LOCK_NAME, MANIFEST_NAME, BatchError, file_sha256, find_slides
from wsimito.cli import main
from wsimito.io.atomic import STALE_AFTER_S, _temporary_name, atomic_write
from wsimito.synthetic import write_slide

ROOT = Path(__file__).resolve().parents[1]
FORMULA = '=HYPERLINK("http://example.invalid","x")'
ODD_USE = "tests only [/z] [bold]not markup[/bold]; not for diagnostic use"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    """A tiny untrained point detector whose name is a spreadsheet formula and whose
    metadata holds rich markup."""
    torch = pytest.importorskip("torch")
    from wsimito.models import PointDetector, PointHeatmapNet, save_detector

    torch.manual_seed(0)
    det = PointDetector(
        PointHeatmapNet(width=8, depth=3, stride=4),
        mpp=0.5,
        tile_size=128,
        overlap=32,
        threshold=0.2,
        min_score=0.05,
        device="cpu",
        name=FORMULA,
        metadata={"training_data": "none (untrained test weights)", "intended_use": ODD_USE},
    )
    return str(save_detector(det, tmp_path_factory.mktemp("w") / "tiny.pt"))


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("cli-slides")
    paths = []
    for seed in range(3):
        path = root / f"slide{seed}.svs"
        write_slide(path, 512, 512, mpp=0.5, seed=seed)
        paths.append(str(path))
    return paths


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _count(*args: str) -> list[str]:
    return ["count", *args, "-q"]


def test_version_prints_the_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"wsimito {wsimito.__version__}"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown backend", "unknown backend 'nope'"),
        ("unwritable output", "cannot write to the output folder"),
        ("output is a file", "is a file, not a folder"),
        ("missing slide", "no such file or folder"),
    ],
)
def test_errors_print_one_or_two_lines_and_no_traceback(
    case, expected, slides, weights, tmp_path, capsys
):
    args = {
        "unknown backend": [slides[0], "-o", str(tmp_path), "--backend", "nope"],
        "unwritable output": [slides[0], "-o", "/proc/wsimito-test/out"],
        "output is a file": [slides[0], "-o", slides[1]],
        "missing slide": [str(tmp_path / "absent.svs"), "-o", str(tmp_path)],
    }[case]
    assert main(_count(*args, "--detector", weights)) == 2
    captured = capsys.readouterr()
    err = _lines(captured.err)
    assert 1 <= len(err) <= 2 and expected in err[0]
    assert "Traceback" not in captured.out + captured.err


def test_debug_shows_the_traceback(slides, weights, tmp_path):
    for argv in (
        ["--debug", *_count(slides[0], "-o", str(tmp_path), "--backend", "nope")],
        [*_count(slides[0], "-o", str(tmp_path), "--backend", "nope"), "--debug"],
    ):
        with pytest.raises(ValueError, match="unknown backend"):
            main([*argv, "--detector", weights])


def test_a_slide_without_mpp_fails_alone_and_names_the_option(
    slides, weights, sample, tmp_path, capsys
):
    no_mpp = sample("slides/tcga-cr-7395-01a-01-ts1.svs")
    rc = main(_count(no_mpp, slides[0], "-o", str(tmp_path), "--detector", weights))
    out = capsys.readouterr().out
    assert rc == 1
    line = next(line for line in out.splitlines() if line.startswith("failed:"))
    assert no_mpp in line and "--mpp" in line and "mpp=" not in line
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest["slides"][no_mpp]["error_type"] == "MissingMPPError"
    assert manifest["slides"][slides[0]]["status"] == "done"


@pytest.fixture(scope="module")
def odd_run(slides, weights, tmp_path_factory):
    """A slide whose path holds rich markup, counted with --mpp that the file overrides."""
    root = tmp_path_factory.mktemp("odd")
    folder = root / "odd["
    folder.mkdir()
    slide = folder / "z]x.svs"
    shutil.copy(slides[0], slide)
    out = root / "out"
    return str(slide), out, [str(slide), "-o", str(out), "--detector", weights, "--mpp", "0.25"]


def test_markup_in_names_and_metadata_prints_as_text(odd_run, capsys):
    slide, out, args = odd_run
    assert "[/z]" in slide
    assert main(_count(*args)) == 0
    printed = capsys.readouterr().out
    assert ODD_USE in printed
    warning = next(line for line in printed.splitlines() if line.startswith("warning:"))
    assert slide in warning and "--mpp 0.25" in warning and "0.5 µm/px" in warning


def test_csv_cells_that_look_like_formulas_are_made_harmless(odd_run, capsys):
    slide, out, args = odd_run
    if not (out / "summary.csv").exists():
        assert main(_count(*args)) == 0
    capsys.readouterr()
    with open(out / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["slide"] for r in rows] == [slide]
    assert rows[0]["detector"] == "'" + FORMULA
    assert rows[0]["mpp_given"] == "0.25" and rows[0]["mpp"] == "0.5"


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory, slides) -> str:
    """A slide whose central level-0 file tile is zeroed: its JPEG cannot be decoded."""
    path = tmp_path_factory.mktemp("corrupt") / "corrupt.svs"
    write_slide(path, 640, 640, mpp=0.5, seed=7, tile_size=256)
    with tifffile.TiffFile(path) as tif:
        offset, size = tif.pages[0].dataoffsets[4], tif.pages[0].databytecounts[4]
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\0" * size)
    return str(path)


def test_on_error_raise_fails_the_slide_and_says_how_to_skip(
    corrupt, slides, weights, tmp_path, capsys
):
    rc = main(_count(corrupt, slides[1], "-o", str(tmp_path), "--detector", weights))
    out = capsys.readouterr().out
    assert rc == 1
    line = next(line for line in out.splitlines() if line.startswith("failed:"))
    assert "TileReadError" in line and "--on-error skip" in line
    with open(tmp_path / "summary.csv", newline="") as fh:
        status = {r["slide"]: r["status"] for r in csv.DictReader(fh)}
    assert status == {corrupt: "failed", slides[1]: "done"}


def test_on_error_skip_states_the_partial_result_and_its_area(corrupt, weights, tmp_path, capsys):
    rc = main(_count(corrupt, "-o", str(tmp_path), "--detector", weights, "--on-error", "skip"))
    out = capsys.readouterr().out
    assert rc == 0
    with open(tmp_path / "summary.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    skipped = float(row["skipped_area_mm2"])
    assert row["partial"] == "True" and skipped > 0
    assert f"left {skipped:.3g} mm² of tissue out of the analysis" in out
    assert "partial" in out and "left the analysed area" in row["warnings"]


def test_a_rerun_with_other_settings_is_refused_unless_overwrite(slides, weights, tmp_path, capsys):
    base = [slides[2], "-o", str(tmp_path), "--detector", weights]
    assert main(_count(*base)) == 0
    first = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert main(_count(*base, "--threshold", "0.9")) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) <= 2 and "threshold" in err[0] and "--overwrite" in err[0]
    assert main(_count(*base, "--threshold", "0.9", "--overwrite")) == 0
    second = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert second["settings"]["threshold"] == 0.9 and first["settings"]["threshold"] == 0.2
    assert second["slides"][slides[2]]["attempts"] == 1


def test_ctrl_c_exits_130_with_a_consistent_manifest_and_a_rerun_finishes(
    slides, weights, tmp_path, capsys
):
    inputs = []
    for k in range(4):  # copies are other paths, so other slides to count
        copy = tmp_path / "in" / f"copy{k}.svs"
        copy.parent.mkdir(exist_ok=True)
        shutil.copy(slides[k % len(slides)], copy)
        inputs.append(str(copy))
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-m", "wsimito", *_count(*inputs, "-o", str(out)), "--detector"]
    # A shell without job control starts background commands with SIGINT ignored, and a
    # child inherits that: give the command the default disposition, as a terminal would.
    proc = subprocess.Popen(
        [*argv, weights],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            entries = json.loads((out / MANIFEST_NAME).read_text())["slides"].values()
        except (OSError, ValueError, KeyError):
            entries = []
        if any(e["status"] == "done" for e in entries):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert "interrupted" in stderr and "Traceback" not in stdout + stderr
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    done = [p for p, e in manifest["slides"].items() if e["status"] == "done"]
    assert done and len(done) < len(inputs)
    assert all(manifest["slides"][p]["status"] == "pending" for p in set(inputs) - set(done))
    for path in done:
        for info in manifest["slides"][path]["outputs"].values():
            assert file_sha256(out / info["file"]) == info["sha256"]
    assert not list(out.glob(".*.tmp")) and not (out / LOCK_NAME).exists()

    assert main([*argv[3:], weights]) == 0
    capsys.readouterr()
    final = json.loads((out / MANIFEST_NAME).read_text())
    assert all(e["status"] == "done" for e in final["slides"].values())
    for path in done:  # not counted again
        assert final["slides"][path]["finished"] == manifest["slides"][path]["finished"]
        assert final["slides"][path]["attempts"] == 1


def test_folders_and_patterns_name_the_slides_inside(tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    for name in ("b.svs", "a.tiff", ".hidden.svs", "notes.txt"):
        (folder / name).write_bytes(b"")
    expected = [str(folder / "a.tiff"), str(folder / "b.svs")]
    assert find_slides([folder]) == expected
    assert find_slides([str(folder / "*.svs"), folder]) == [expected[1], expected[0]]
    assert find_slides([folder / "b.svs", folder / "b.svs"]) == [expected[1]]
    (tmp_path / "empty").mkdir()
    for bad, message in (("empty", "holds no slide"), ("x*.svs", "no file matches")):
        with pytest.raises(BatchError, match=message):
            find_slides([str(tmp_path / bad)])


def test_a_killed_write_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "result.geojson"
    code = (
        "import os, signal, sys\n"
        "from wsimito.io.atomic import atomic_write\n"
        "with atomic_write(sys.argv[1]) as fh:\n"
        "    fh.write('half a file'); fh.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    killed = subprocess.run([sys.executable, "-c", code, str(target)], env=env, check=False)
    assert killed.returncode == -signal.SIGKILL
    left = list(tmp_path.glob(".result.geojson.*.tmp"))
    assert len(left) == 1 and not target.exists()
    live = _temporary_name(target)  # a writer of this (live) process
    old = tmp_path / ".result.geojson.ba9876543210.tmp"  # the earlier naming, a day old
    fresh = tmp_path / ".result.geojson.aaaaaaaaaaaa.tmp"
    for path in (live, old, fresh):
        path.write_text("x")
    stale = time.time() - STALE_AFTER_S - 60
    os.utime(old, (stale, stale))
    with atomic_write(target) as fh:
        fh.write("{}")
    assert target.read_text() == "{}"
    remaining = set(tmp_path.glob(".result.geojson.*.tmp"))
    assert remaining == {live, fresh}


def test_a_url_detector_needs_its_sha256_on_the_command_line(tmp_path, weights, slides, capsys):
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(weights, served / "tiny.pt")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.environ["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/tiny.pt"
        out = tmp_path / "out"
        assert main(["count", slides[0], "-o", str(out), "--detector", url, "-q"]) == 2
        assert "--sha256" in capsys.readouterr().err
        digest = file_sha256(Path(weights))
        args = ["count", slides[0], "-o", str(out), "--detector", url, "--sha256", digest, "-q"]
        assert main(args) == 0
        manifest = json.loads((out / MANIFEST_NAME).read_text())
        assert digest in json.dumps(manifest["settings"])
    finally:
        os.environ.pop("XDG_CACHE_HOME", None)
        server.shutdown()
        server.server_close()
