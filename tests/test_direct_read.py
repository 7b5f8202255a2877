"""The direct tile decoder: same pixels as the backends, one decode per file tile, clear errors."""

from __future__ import annotations

import pickle
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import imagecodecs
import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image

import wsimito
from wsimito.slide.direct import DirectUnsupportedError, TileCache

DIRECT_SAMPLES = [
    ("slides/cmu-1-small-region.svs", None),  # Aperio JPEG, shared JPEGTables, 240 px tiles
    ("slides/tcga-cr-7395-01a-01-ts1.svs", 0.25),  # Aperio JPEG 2000 (33005), 2 levels
    ("slides/boxes.tiff", 1.0),  # generic pyramid, deflate + predictor, 4 levels
    ("slides/small.svs", None),  # one 64 px JPEG tile larger than the image
]


def boxes_for(dims: tuple[int, int]):
    """Boxes (x, y, w, h) in level px: whole (small) level, across each corner, inside, outside."""
    w, h = dims
    yield 0, 0, min(w, 1100), min(h, 1100)
    yield -7, -5, min(w, 300) + 9, min(h, 200) + 6
    yield w - min(w, 250) + 11, h - min(h, 150) + 13, min(w, 250), min(h, 150)
    yield w // 3, h // 4, max(1, w // 3), max(1, h // 3)
    yield w + 5, -40, 20, 30


def assert_same_pixels(path: str, mpp: float | None, reference: str = "tiffslide") -> None:
    direct = wsimito.open_slide(path, backend="tiffslide", mpp=mpp, decoder="direct")
    ref = wsimito.open_slide(path, backend=reference, mpp=mpp, decoder="backend")
    assert direct.decoder == "direct" and ref.decoder == "backend"
    assert direct.level_dimensions == ref.level_dimensions
    for level in range(direct.level_count):
        for box in boxes_for(direct.level_dimensions[level]):
            ours = direct.read_level_box(box[0], box[1], level, box[2], box[3])
            theirs = ref.read_level_box(box[0], box[1], level, box[2], box[3])
            assert ours.shape == (box[3], box[2], 3) and ours.dtype == np.uint8
            assert np.array_equal(ours, theirs), f"{path} level {level} box {box}"


@pytest.mark.parametrize(("name", "mpp"), DIRECT_SAMPLES)
def test_direct_pixels_equal_tiffslide_on_real_samples(sample, name, mpp):
    assert_same_pixels(sample(name), mpp)


@pytest.mark.parametrize(("name", "mpp"), DIRECT_SAMPLES)
def test_direct_pixels_equal_openslide_where_levels_are_whole_downsamples(sample, name, mpp):
    # OpenSlide reads a level-px box through a level-0 location; where the
    # downsample is fractional (TCGA level 1: 2.0005) it interpolates, so only
    # whole-downsample levels are comparable. libjpeg-turbo and OpenJPEG agree
    # with imagecodecs bit for bit there.
    path = sample(name)
    direct = wsimito.open_slide(path, backend="openslide", mpp=mpp, decoder="direct")
    assert direct.decoder == "direct"
    with openslide.OpenSlide(path) as osr:
        for level, ds in enumerate(osr.level_downsamples):
            if not float(ds).is_integer():
                continue
            for x, y, w, h in boxes_for(osr.level_dimensions[level]):
                rgba = np.asarray(osr.read_region((x * int(ds), y * int(ds)), level, (w, h)))
                ref = np.where(rgba[:, :, 3:] == 0, 255, rgba[:, :, :3]).astype(np.uint8)
                ours = direct.read_level_box(x, y, level, w, h)
                assert np.array_equal(ours, ref), f"{name} level {level} box {(x, y, w, h)}"


def test_auto_chooses_direct_for_tiled_tiff_and_the_backend_elsewhere(sample):
    assert wsimito.open_slide(sample("slides/cmu-1-small-region.svs")).decoder == "direct"
    tcga = wsimito.open_slide(sample("slides/tcga-cr-7395-01a-01-ts1.svs"), mpp=0.25)
    assert tcga.decoder == "direct" and tcga.backend == "openslide"
    # Untiled TIFF (strips): read into memory by the array backend; no file tiles.
    kidney = sample("slides/kidney-48-5.tif")
    assert wsimito.open_slide(kidney, mpp=0.5).decoder == "backend"
    with pytest.raises(wsimito.SlideOpenError, match="strips"):
        wsimito.open_slide(kidney, backend="tiffslide", mpp=0.5, decoder="direct")
    dicom = wsimito.open_slide(sample("slides/boxes_0.dcm"))
    assert dicom.decoder == "backend" and dicom.tile_cache is None
    forced = wsimito.open_slide(sample("slides/cmu-1-small-region.svs"), decoder="backend")
    assert forced.decoder == "backend" and forced.tile_cache is None
    with pytest.raises(ValueError, match="decoder"):
        wsimito.open_slide(kidney, decoder="fast")
    array = wsimito.open_slide(np.zeros((8, 8, 3), np.uint8), mpp=1.0)
    assert array.decoder == "backend"


def write_pyramid(path, image: np.ndarray, levels: int, *, ome: bool = False, **kwargs) -> None:
    """A tiled pyramid TIFF whose levels are 2x area averages (tifffile's writer)."""
    kwargs.setdefault("tile", (128, 128))
    pyramid = [image]
    for _ in range(levels - 1):
        pyramid.append(np.asarray(Image.fromarray(pyramid[-1]).reduce(2)))
    with tifffile.TiffWriter(path, ome=ome) as tif:
        if ome:
            tif.write(pyramid[0], subifds=levels - 1, metadata={"axes": "YXS"}, **kwargs)
            for level in pyramid[1:]:
                tif.write(level, subfiletype=1, **kwargs)
        else:
            for i, level in enumerate(pyramid):
                tif.write(level, subfiletype=1 if i else 0, **kwargs)


@pytest.fixture(scope="module")
def he_image() -> np.ndarray:
    """Real H&E, 700 x 900 px (not a multiple of any tile size used here)."""
    from wsimito.data import fetch

    with Image.open(fetch("images/he-target-tiatoolbox.png")) as img:
        return np.asarray(img.convert("RGB"))[:700, :900].copy()


GENERATED = {
    "jpeg-ycbcr-420": dict(compression="jpeg", compressionargs={"level": 90}, photometric="rgb"),
    "jpeg-rgb": dict(
        compression="jpeg",
        compressionargs={"level": 90, "outcolorspace": "rgb"},
        photometric="rgb",
    ),
    "zstd": dict(compression="zstd", photometric="rgb"),
    "deflate-predictor": dict(compression="deflate", predictor=True, photometric="rgb"),
    "lzw": dict(compression="lzw", photometric="rgb"),
    "webp": dict(compression="webp", compressionargs={"level": 90}, photometric="rgb"),
    "none-256": dict(photometric="rgb", tile=(256, 256)),
}


@pytest.mark.parametrize("kind", sorted(GENERATED))
def test_generated_pyramids_read_the_same_through_both_decoders(tmp_path, he_image, kind):
    path = str(tmp_path / f"{kind}.tif")
    write_pyramid(path, he_image, 3, **GENERATED[kind])
    assert_same_pixels(path, 0.25)
    direct = wsimito.open_slide(path, mpp=0.25)
    assert direct.decoder == "direct"
    tif_compression = tifffile.TiffFile(path).pages[0].compression
    if tif_compression not in (50001,):  # OpenSlide has no WebP
        assert_same_pixels(path, 0.25, reference="openslide")
    if kind in ("zstd", "lzw", "deflate-predictor", "none-256"):  # lossless: the image itself
        np.testing.assert_array_equal(direct.read_level_box(0, 0, 0, 900, 700), he_image)


def test_ome_tiff_pyramid_in_subifds(tmp_path, he_image):
    path = str(tmp_path / "pyramid.ome.tif")
    write_pyramid(path, he_image, 3, ome=True, compression="zstd", photometric="rgb")
    slide = wsimito.open_slide(path, mpp=0.25)
    assert slide.decoder == "direct" and slide.level_count == 3
    assert_same_pixels(path, 0.25)


def test_alpha_is_composited_on_white_and_grey_becomes_rgb(tmp_path, he_image):
    rgba = np.dstack([he_image, np.linspace(0, 255, 900, dtype=np.uint8)[None, :].repeat(700, 0)])
    path = str(tmp_path / "rgba.tif")
    write_pyramid(path, rgba, 2, compression="zstd", photometric="rgb", extrasamples=["unassalpha"])
    slide = wsimito.open_slide(path, backend="tiffslide", mpp=0.25)
    assert slide.decoder == "direct"
    a = rgba[:, :, 3:].astype(np.float64) / 255
    expected = np.round(rgba[:, :, :3] * a + 255 * (1 - a))
    got = slide.read_level_box(0, 0, 0, 900, 700)
    assert np.abs(got - expected).max() <= 1
    assert_same_pixels(path, 0.25)
    grey = str(tmp_path / "grey.tif")
    write_pyramid(grey, he_image[:, :, 1].copy(), 2, compression="zstd", photometric="minisblack")
    slide = wsimito.open_slide(grey, backend="tiffslide", mpp=0.25)
    assert slide.decoder == "direct"
    np.testing.assert_array_equal(
        slide.read_level_box(0, 0, 0, 900, 700), np.repeat(he_image[:, :, 1:2], 3, axis=2)
    )


def test_aperio_ycbcr_jpeg2000_tiles_are_converted_to_rgb(tmp_path, he_image):
    # Aperio's 33003 keeps YCbCr in the JPEG 2000 codestream; tiffslide returns it
    # as is, OpenSlide and the direct path convert it to RGB.
    rgb = he_image[:512, :512].copy()
    ycc = np.asarray(Image.fromarray(rgb).convert("YCbCr"))
    tiles = [
        imagecodecs.jpeg2k_encode(
            np.ascontiguousarray(ycc[y : y + 256, x : x + 256]),
            level=0,
            codecformat="J2K",
            mct=False,
            reversible=True,
        )
        for y in (0, 256)
        for x in (0, 256)
    ]
    path = str(tmp_path / "ycbcr.svs")
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            iter(tiles),
            shape=(512, 512, 3),
            dtype="uint8",
            tile=(256, 256),
            compression=33003,
            photometric="rgb",
            description="Aperio Image Library v10.0.51\r\n512x512 (256x256) J2K|MPP = 0.25",
        )
    slide = wsimito.open_slide(path, backend="tiffslide")
    assert slide.decoder == "direct"
    ours = slide.read_level_box(0, 0, 0, 512, 512).astype(int)
    raw = wsimito.open_slide(path, backend="tiffslide", decoder="backend")
    assert np.array_equal(raw.read_level_box(0, 0, 0, 512, 512), ycc)  # tiffslide: YCbCr
    assert np.abs(ours - rgb).mean() < 1.5 and np.abs(ours - rgb).max() <= 3


def grid_boxes(width: int, height: int, tile: int, stride: int):
    return [
        (x, y, tile, tile)
        for y in range(0, height - 1, stride)
        for x in range(0, width - 1, stride)
    ]


def tiles_touched(boxes, tile_w: int, tile_h: int, width: int, height: int) -> set:
    touched = set()
    for x, y, w, h in boxes:
        for row in range(max(y, 0) // tile_h, (min(y + h, height) - 1) // tile_h + 1):
            for col in range(max(x, 0) // tile_w, (min(x + w, width) - 1) // tile_w + 1):
                touched.add((row, col))
    return touched


def test_a_grid_decodes_each_file_tile_once_from_several_threads(tmp_path, he_image):
    path = str(tmp_path / "jpeg.tif")
    write_pyramid(path, he_image, 1, compression="jpeg", photometric="rgb", tile=(64, 64))
    slide = wsimito.open_slide(path, mpp=0.25)
    ref = wsimito.open_slide(path, mpp=0.25, decoder="backend")
    cache = slide.tile_cache
    cache.clear()
    cache.reset_stats()
    boxes = grid_boxes(900, 700, 160, 112)  # overlapping tiles, 64 px file tiles
    local = threading.local()

    def read(box):
        handle = getattr(local, "slide", None)
        if handle is None:
            handle = local.slide = slide.reopen()  # one handle per thread, one shared cache
        return handle.read_level_box(*box[:2], 0, *box[2:])

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(read, boxes))
    for box, pixels in zip(boxes, results, strict=True):
        np.testing.assert_array_equal(pixels, ref.read_level_box(box[0], box[1], 0, 160, 160))
    assert cache.misses == len(tiles_touched(boxes, 64, 64, 900, 700))
    assert cache.hits > cache.misses and 0 < cache.hit_rate < 1


def test_the_cache_is_bounded_in_bytes_and_shared_by_handles(tmp_path, he_image):
    path = str(tmp_path / "jpeg.tif")
    write_pyramid(path, he_image, 2, compression="jpeg", photometric="rgb", tile=(64, 64))
    slide = wsimito.open_slide(path, mpp=0.25)
    cache = slide.tile_cache
    assert isinstance(cache, TileCache) and cache.max_bytes >= 32 * 2**20
    clone = pickle.loads(pickle.dumps(slide))
    assert clone.decoder == "direct" and clone.tile_cache is cache
    assert slide.reopen().tile_cache is cache
    tile_bytes = 64 * 64 * 3
    cache.max_bytes = 5 * tile_bytes
    assert len(cache) <= 5
    cache.clear()
    cache.reset_stats()
    slide.read_level_box(0, 0, 0, 900, 700)  # 15 x 11 file tiles
    assert cache.nbytes <= 5 * tile_bytes and len(cache) == 5 and cache.misses == 165
    cache.max_bytes = 0
    assert len(cache) == 0 and cache.nbytes == 0
    np.testing.assert_array_equal(
        slide.read_level_box(10, 20, 1, 100, 90),
        wsimito.open_slide(path, decoder="backend").read_level_box(10, 20, 1, 100, 90),
    )
    with pytest.raises(ValueError, match="max_bytes"):
        cache.max_bytes = -1


@pytest.mark.parametrize("decoder", ["direct", "backend"])
def test_read_level_box_fills_a_given_buffer(sample, decoder):
    slide = wsimito.open_slide(sample("slides/cmu-1-small-region.svs"), decoder=decoder)
    expected = slide.read_level_box(2100, -10, 0, 200, 150)
    batch = np.zeros((2, 3, 150, 200), dtype=np.uint8)  # channels-first batch buffer
    view = batch[1].transpose(1, 2, 0)
    got = slide.read_level_box(2100, -10, 0, 200, 150, out=view)
    assert got is view
    np.testing.assert_array_equal(batch[1].transpose(1, 2, 0), expected)
    assert not batch[0].any()
    with pytest.raises(ValueError, match=r"out must be .* \(150, 200, 3\)"):
        slide.read_level_box(0, 0, 0, 200, 150, out=np.empty((150, 200, 4), np.uint8))


def test_read_region_read_and_thumbnail_agree_between_decoders(sample):
    path = sample("slides/cmu-1-small-region.svs")
    for backend in ("tiffslide", "openslide"):
        direct = wsimito.open_slide(path, backend=backend)
        plain = wsimito.open_slide(path, backend=backend, decoder="backend")
        for args in (((-5, 7), 0, (300, 200)), ((2000, 2800), 0, (300, 300))):
            np.testing.assert_array_equal(direct.read_region(*args), plain.read_region(*args))
        box = (100.5, 200.25, 700, 500)
        np.testing.assert_array_equal(direct.read(box, mpp=1.1), plain.read(box, mpp=1.1))
        np.testing.assert_array_equal(direct.thumbnail(300), plain.thumbnail(300))


def corrupt_copy(src: str, dst, level_page: int, tile: int, how: str) -> None:
    shutil.copy(src, dst)
    with tifffile.TiffFile(dst) as tif:
        page = tif.pages[level_page]
        offset, count = page.dataoffsets[tile], page.databytecounts[tile]
    with open(dst, "r+b") as fh:
        if how == "garbage":
            fh.seek(offset)
            fh.write(bytes(range(256)) * (count // 256) + b"\x00" * (count % 256))
        else:
            fh.truncate(offset + count // 2)


@pytest.mark.parametrize("how", ["garbage", "truncate"])
def test_a_damaged_tile_raises_slide_read_error_naming_file_level_and_box(tmp_path, he_image, how):
    path = str(tmp_path / "jpeg.tif")
    write_pyramid(path, he_image, 1, compression="jpeg", photometric="rgb", tile=(128, 128))
    bad = tmp_path / "bad.tif"
    last = 6 * 8 - 1  # the last tile of level 0 (8 x 6 tiles): written last, so truncation hits it
    corrupt_copy(path, bad, 0, last, how)
    slide = wsimito.open_slide(str(bad), backend="tiffslide", mpp=0.25)
    assert slide.decoder == "direct"
    np.testing.assert_array_equal(  # the intact tiles still read
        slide.read_level_box(0, 0, 0, 256, 256),
        wsimito.open_slide(path, mpp=0.25).read_level_box(0, 0, 0, 256, 256),
    )
    with pytest.raises(wsimito.SlideReadError) as info:
        slide.read_level_box(880, 650, 0, 20, 50)
    message = str(info.value)
    assert str(bad) in message and "level 0" in message and "x=880, y=650, 20x50 px" in message
    assert f"file tile {last}" in message
    assert isinstance(info.value, wsimito.WsimitoError)


def test_direct_unsupported_says_why(sample, tmp_path):
    with pytest.raises(DirectUnsupportedError, match="not a TIFF"):
        wsimito.Slide(wsimito.open_slide(sample("slides/boxes_0.dcm"))._backend, decoder="direct")
    # Uncompressed YCbCr: tiffslide returns it unconverted; the direct path declines.
    path = str(tmp_path / "ycbcr.tif")
    image = np.zeros((64, 64, 3), np.uint8)
    tifffile.imwrite(path, image, tile=(16, 16), photometric="ycbcr", subsampling=(1, 1))
    assert wsimito.open_slide(path, backend="tiffslide", mpp=1.0).decoder == "backend"
    with pytest.raises(wsimito.SlideOpenError, match="photometric 6"):
        wsimito.open_slide(path, backend="tiffslide", mpp=1.0, decoder="direct")


def test_a_tile_being_decoded_is_waited_for_not_decoded_twice():
    """Real threads: one decodes, others wait (or, with ``wait=False``, move on); a failed
    decode is not cached and a waiter then decodes the tile itself."""
    cache = TileCache(2**20)
    started, release = threading.Event(), threading.Event()
    tile = np.zeros((4, 4, 3), np.uint8)
    calls: list[str] = []

    def slow() -> np.ndarray:
        calls.append("owner")
        started.set()
        assert release.wait(10)
        return tile

    def other() -> np.ndarray:
        calls.append("waiter")
        return tile.copy()

    with ThreadPoolExecutor(2) as pool:
        owner = pool.submit(cache.get, (0, 1), slow)
        assert started.wait(10)
        assert cache.get((0, 1), other, wait=False) is None  # being made: come back later
        waiter = pool.submit(cache.get, (0, 1), other)
        release.set()
        assert owner.result(10) is tile and waiter.result(10) is tile
    assert calls == ["owner"] and cache.misses == 1 and cache.hits == 1

    def broken() -> np.ndarray:
        started.set()
        assert release.wait(10)
        raise OSError("corrupt tile")

    started.clear()
    release.clear()
    with ThreadPoolExecutor(2) as pool:
        owner = pool.submit(cache.get, (0, 2), broken)
        assert started.wait(10)
        waiter = pool.submit(cache.get, (0, 2), other)
        release.set()
        with pytest.raises(OSError, match="corrupt tile"):
            owner.result(10)
        again = waiter.result(10)
    assert calls == ["owner", "waiter"] and again is not tile and (0, 2) not in cache._pending
