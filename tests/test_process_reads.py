"""Reader processes that hand pixels over through shared memory (``parallel="processes"``).

They must deliver exactly what reader threads deliver, on a real file through a
backend that holds the GIL (tiffslide), for every way a tile is made (as read,
reduced 2x in the readers, resampled); report bad tiles the same way; and leave
no shared-memory block behind, also when the consumer stops early.
"""

from __future__ import annotations

import multiprocessing
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

import wsimito
from wsimito.errors import TileReadError
from wsimito.process_reads import MIN_BOXES_FOR_PROCESSES, choose_parallel
from wsimito.reader import TileReader
from wsimito.synthetic import write_slide

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork and /dev/shm")


def _shm_blocks() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob("wsimito-*")}


def _read_all(slide, mpp, parallel, **kwargs):
    grid = wsimito.TileGrid(slide, tile_size=256, overlap=32, mpp=mpp)
    reader = TileReader(
        slide, grid.boxes(), mpp=mpp, tile_size=256, overlap=32, num_workers=2,
        batch_size=3, parallel=parallel, **kwargs,
    )  # fmt: skip
    batches = [(b.pixels.clone(), b.index.copy(), b.corners.copy(), b.skipped) for b in reader]
    return reader, batches


@linux
@pytest.mark.parametrize("factor", [1.0, 2.0, 1.37], ids=["as-read", "reduced-2x", "resampled"])
def test_reader_processes_deliver_the_pixels_of_reader_threads(sample, factor):
    slide = wsimito.open_slide(
        sample("slides/cmu-1-small-region.svs"), backend="tiffslide", decoder="backend"
    )
    mpp = slide.mpp * factor
    before = _shm_blocks()
    threads, expected = _read_all(slide, mpp, "threads")
    processes, got = _read_all(slide, mpp, "processes")
    assert (threads.parallel, processes.parallel) == ("threads", "processes")
    assert processes.plan == threads.plan
    assert len(got) == len(expected) > 1
    for (pa, ia, ca, _), (pb, ib, cb, _) in zip(expected, got, strict=True):
        assert np.array_equal(ia, ib) and np.array_equal(ca, cb)
        assert pa.shape == pb.shape and bool((pa == pb).all())
    # tissue is there: a blank read would also be "equal"
    assert max(float(b[0].float().std()) for b in got) > 20
    assert _shm_blocks() == before


@linux
def test_shared_memory_is_freed_when_the_consumer_stops_early(sample):
    slide = wsimito.open_slide(
        sample("slides/cmu-1-small-region.svs"), backend="tiffslide", decoder="backend"
    )
    grid = wsimito.TileGrid(slide, tile_size=256, overlap=32, mpp=slide.mpp)
    before = _shm_blocks()
    reader = TileReader(
        slide, grid.boxes(), mpp=slide.mpp, tile_size=256, overlap=32, batch_size=2,
        parallel="processes",
    )  # fmt: skip
    batches = iter(reader)
    first = next(batches)
    assert len(first) == 2
    assert len(_shm_blocks() - before) == 1  # the block exists while reading
    batches.close()  # what a `break` out of the loop does
    assert _shm_blocks() == before
    assert bool((first.pixels != 0).any())  # the batch outlives the block


@pytest.fixture(scope="module")
def corrupt_tiff(tmp_path_factory):
    """A JPEG-tiled TIFF whose file tiles 9 and 10 (row 2, columns 1 and 2) are scrambled."""
    path = tmp_path_factory.mktemp("process-faults") / "corrupt.tif"
    rng = np.random.default_rng(4)
    image = rng.integers(90, 230, (1024, 1024, 3), dtype=np.uint8)
    tifffile.imwrite(
        path, image, tile=(256, 256), compression="jpeg", photometric="rgb",
        resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER",
    )  # fmt: skip
    with tifffile.TiffFile(path) as tif:
        offsets, counts = tif.pages[0].dataoffsets, tif.pages[0].databytecounts
    with open(path, "r+b") as fh:
        for i in (9, 10):
            fh.seek(offsets[i] + 2)
            fh.write(rng.integers(0, 256, counts[i] - 2, dtype=np.uint8).tobytes())
    return str(path)


@linux
def test_reader_processes_skip_and_raise_bad_tiles_as_threads_do(corrupt_tiff):
    slide = wsimito.open_slide(corrupt_tiff, backend="tiffslide", decoder="backend")
    _, threads = _read_all(slide, 0.5, "threads", on_error="skip")
    _, processes = _read_all(slide, 0.5, "processes", on_error="skip")
    skipped_t = [i for *_, s in threads for i, _ in s]
    skipped_p = [i for *_, s in processes for i, _ in s]
    assert skipped_t and skipped_p == skipped_t
    message = next(m for *_, s in processes for _, m in s)
    assert "corrupt.tif" in message and "failed twice" in message
    for (pa, ia, _, _), (pb, ib, _, _) in zip(threads, processes, strict=True):
        assert np.array_equal(ia, ib) and bool((pa == pb).all())
    with pytest.raises(TileReadError, match="corrupt.tif.*on_error='skip'"):
        _read_all(slide, 0.5, "processes")


@linux
def test_count_mitoses_with_reader_processes_gives_the_result_of_threads(tmp_path):
    path = tmp_path / "synthetic.svs"
    write_slide(path, 2048, 2048, mpp=0.25, seed=5, tissue_fraction=0.9, mitoses_per_mm2=60)
    slide = wsimito.open_slide(path, backend="tiffslide", decoder="backend")
    detector = wsimito.load_detector("demo", device="cpu")
    results = {}
    for parallel in ("threads", "processes"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            results[parallel] = wsimito.count_mitoses(
                slide, detector, parallel=parallel, num_workers=2, progress=False
            )
    a, b = results["threads"], results["processes"]
    assert a.count == b.count > 0
    assert np.array_equal(a.points, b.points) and np.array_equal(a.scores, b.scores)


def _slide_kinds(sample):
    path = sample("slides/cmu-1-small-region.svs")
    return {
        "tiffslide": wsimito.open_slide(path, backend="tiffslide", decoder="backend"),
        "direct": wsimito.open_slide(path, backend="tiffslide"),
        "openslide": wsimito.open_slide(path, backend="openslide", decoder="backend"),
        "array": wsimito.open_slide(np.zeros((64, 64, 3), np.uint8), mpp=0.5),
    }


def test_auto_uses_processes_only_for_large_reads_of_gil_bound_backends(sample):
    kinds = _slide_kinds(sample)
    assert kinds["direct"].decoder == "direct"
    many = MIN_BOXES_FOR_PROCESSES
    fork = sys.platform.startswith("linux")
    assert choose_parallel(kinds["tiffslide"], "auto", 2, many) == (
        "processes" if fork else "threads"
    )
    assert choose_parallel(kinds["tiffslide"], "auto", 1, many) == "threads"
    assert choose_parallel(kinds["tiffslide"], "auto", 2, many - 1) == "threads"
    for name in ("direct", "openslide", "array"):
        assert choose_parallel(kinds[name], "auto", 4, 10 * many) == "threads", name
    assert choose_parallel(kinds["openslide"], "processes", 2, 1) == "processes"
    assert choose_parallel(kinds["tiffslide"], "threads", 2, many) == "threads"


def test_impossible_requests_for_processes_say_what_to_do(sample):
    kinds = _slide_kinds(sample)
    with pytest.raises(ValueError, match="held in memory.*parallel='threads'"):
        choose_parallel(kinds["array"], "processes", 2, 10)
    with pytest.raises(ValueError, match="parallel must be one of"):
        choose_parallel(kinds["tiffslide"], "process", 2, 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="parallel='many'"):
        wsimito.count_mitoses(kinds["array"], "demo", parallel="many")  # type: ignore[arg-type]


def _choose_in_daemon(path: str, queue) -> None:
    slide = wsimito.open_slide(path, backend="tiffslide", decoder="backend")
    auto = choose_parallel(slide, "auto", 2, 10 * MIN_BOXES_FOR_PROCESSES)
    try:
        choose_parallel(slide, "processes", 2, 10)
        forced = "allowed"
    except ValueError as exc:
        forced = str(exc)
    queue.put((auto, forced))


@linux
def test_a_daemonic_process_such_as_a_dask_worker_reads_with_threads(sample):
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(
        target=_choose_in_daemon, args=(sample("slides/cmu-1-small-region.svs"), queue)
    )
    child.daemon = True
    child.start()
    auto, forced = queue.get(timeout=60)
    child.join(timeout=60)
    assert auto == "threads"
    assert "daemonic" in forced and "parallel='threads'" in forced


@linux
def test_too_little_shared_memory_is_said_or_avoided(sample):
    from wsimito.process_reads import shared_memory_free

    slide = wsimito.open_slide(
        sample("slides/cmu-1-small-region.svs"), backend="tiffslide", decoder="backend"
    )
    free = shared_memory_free()
    assert free is not None and free > 0
    boxes = np.zeros((MIN_BOXES_FOR_PROCESSES, 2))
    huge = 4 * free  # a prefetch window that /dev/shm cannot hold
    common = dict(mpp=slide.mpp, tile_size=256, num_workers=2, prefetch_bytes=huge)
    with pytest.raises(ValueError, match=r"/dev/shm has \d+ MiB free.*--shm-size"):
        TileReader(slide, boxes, parallel="processes", **common)
    assert TileReader(slide, boxes, parallel="auto", **common).parallel == "threads"
    assert TileReader(slide, boxes, parallel="auto", mpp=slide.mpp, tile_size=256,
                      num_workers=2).parallel == "processes"  # fmt: skip
