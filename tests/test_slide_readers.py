"""Slide readers against OpenSlide's own pixels, on the real sample files."""

from __future__ import annotations

import pickle

import numpy as np
import openslide
import pytest
from PIL import Image

import wsimito
from wsimito.slide.open import _backend_class

READABLE = [
    "slides/cmu-1-small-region.svs",
    "slides/tcga-cr-7395-01a-01-ts1.svs",
    "slides/boxes.tiff",
    "slides/small.svs",
    "slides/boxes_0.dcm",
]


def openslide_rgb(path: str, location, level: int, size) -> np.ndarray:
    """OpenSlide's read_region, RGBA composited on white with PIL (the reference)."""
    with openslide.OpenSlide(path) as osr:
        rgba = osr.read_region(location, level, size)
    white = Image.new("RGBA", size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))


def backends_that_open(path: str) -> list[str]:
    names = []
    for name in ("openslide", "tiffslide"):
        try:
            _backend_class(name)(path)
        except Exception:
            continue
        names.append(name)
    return names


def regions(dims, ds, integral: bool):
    """Boxes (level-0 location, level size) that cross each edge of the level and sit inside it."""
    w, h = dims
    bw, bh = min(w, 300) + 9, min(h, 200) + 6
    yield (0, 0), (bw, bh)  # from the corner
    if integral:
        # Across the top-left corner, the bottom-right corner, and inside.
        yield (-round(7 * ds), -round(5 * ds)), (bw, bh)
        yield (round((w - bw + 7) * ds), round((h - bh + 5) * ds)), (bw, bh)
        yield (round((w // 3) * ds), round((h // 4) * ds)), (max(1, w // 3), max(1, h // 3))


@pytest.mark.parametrize("name", READABLE)
def test_pixels_equal_openslide_at_every_level_for_every_backend(sample, name):
    path = sample(name)
    names = backends_that_open(path)
    assert "openslide" in names
    for backend in names:
        slide = wsimito.open_slide(path, backend=backend)
        for level in range(slide.level_count):
            ds = slide.level_downsamples[level]
            # OpenSlide interpolates sub-pixel level offsets when the downsample is
            # not a whole number; other readers snap to the pixel. Compare those
            # only where the level coordinate is a whole pixel.
            integral = backend == "openslide" or float(ds).is_integer()
            for location, size in regions(slide.level_dimensions[level], ds, integral):
                ours = slide.read_region(location, level, size)
                ref = openslide_rgb(path, location, level, size)
                assert ours.shape == (size[1], size[0], 3) and ours.dtype == np.uint8
                np.testing.assert_array_equal(
                    ours, ref, err_msg=f"{backend} level {level} {location} {size}"
                )


def test_auto_backend_reads_the_same_pixels_as_openslide(sample):
    for name in READABLE:
        path = sample(name)
        slide = wsimito.open_slide(path)
        w, h = slide.dimensions
        for location in ((-3, -2), (w - 200, h - 150)):
            np.testing.assert_array_equal(
                slide.read_region(location, 0, (256, 192)),
                openslide_rgb(path, location, 0, (256, 192)),
            )


def test_plain_tiff_opens_with_the_array_backend_and_matches_pil(sample):
    path = sample("slides/kidney-48-5.tif")
    slide = wsimito.open_slide(path, mpp=0.5)
    assert slide.backend == "array"
    with Image.open(path) as img:
        ref = np.asarray(img.convert("RGB"))
    np.testing.assert_array_equal(slide.read_region((0, 0), 0, slide.dimensions), ref)


def test_outside_the_slide_is_white_and_negative_sizes_are_refused(sample):
    slide = wsimito.open_slide(sample("slides/cmu-1-small-region.svs"))
    w, h = slide.dimensions
    far = slide.read_region((w + 100, h + 100), 0, (32, 16))
    assert far.shape == (16, 32, 3) and (far == 255).all()
    with pytest.raises(ValueError, match="non-negative"):
        slide.read_region((0, 0), 0, (-1, 10))
    with pytest.raises(ValueError, match="non-negative"):
        slide.read((0, 0, 10, -5), mpp=1.0)


def area_average(image: np.ndarray, factor: int) -> np.ndarray:
    h, w = image.shape[0] // factor, image.shape[1] // factor
    return (
        image[: h * factor, : w * factor]
        .astype(np.float64)
        .reshape(h, factor, w, factor, 3)
        .mean(axis=(1, 3))
    )


def test_read_at_twice_the_mpp_agrees_with_area_averaging_level_0(sample, tmp_path):
    # A JPEG pyramid of the CMU sample whose levels are 2x area averages, read
    # through both TIFF readers, and the boxes.tiff pyramid.
    import tifffile

    base = wsimito.open_slide(sample("slides/cmu-1-small-region.svs"))
    level0 = base.read_region((0, 0), 0, base.dimensions)
    path = tmp_path / "pyramid.tif"
    with tifffile.TiffWriter(path) as tif:
        image = level0
        for i in range(3):
            tif.write(
                image,
                tile=(256, 256),
                compression="jpeg",
                compressionargs={"level": 95},
                photometric="rgb",
                subfiletype=1 if i else 0,
                resolution=(1e4 / (0.499 * 2**i),) * 2,
                resolutionunit="CENTIMETER",
            )
            image = area_average(image, 2).round().astype(np.uint8)
    for backend in ("openslide", "tiffslide"):
        slide = wsimito.open_slide(str(path), backend=backend)
        assert slide.level_count == 3 and slide.mpp == pytest.approx(0.499, rel=1e-6)
        fast = slide.read((200, 300, 1024, 768), mpp=2 * slide.mpp)
        ref = area_average(slide.read_region((200, 300), 0, (1024, 768)), 2)
        assert fast.shape == (384, 512, 3)
        assert np.abs(fast - ref).mean() < 2.0, backend
    boxes = wsimito.open_slide(sample("slides/boxes.tiff"), mpp=1.0)
    fast = boxes.read((0, 0, 300, 250), mpp=2.0)
    assert np.abs(fast - area_average(boxes.read_region((0, 0), 0, (300, 250)), 2)).mean() < 2.0
    # Without a pyramid level to use, read() itself area-averages level 0.
    small = base.read((100, 100, 400, 300), mpp=2 * base.mpp)
    assert np.abs(small - area_average(base.read_region((100, 100), 0, (400, 300)), 2)).max() <= 1.0


def test_read_picks_the_coarsest_level_fine_enough(sample):
    slide = wsimito.open_slide(sample("slides/tcga-cr-7395-01a-01-ts1.svs"), mpp=0.25)
    assert slide.best_level(1.0) == 0
    assert slide.best_level(2.0) == 1  # downsample 2.0005 counts as 2
    assert slide.best_level(8.0) == 1
    out = slide.read((0, 0, 4443, 3567), mpp=4.0)
    assert out.shape == (round(3567 / 16), round(4443 / 16), 3)


def test_to_dask_is_lazy_and_reads_only_the_chunks_it_needs(sample):
    from wsimito.slide.tiffslide_backend import TiffSlideBackend

    class CountingTiffSlide(TiffSlideBackend):
        reads: list = []

        def read_level(self, x, y, level, width, height):
            CountingTiffSlide.reads.append((x, y, level, width, height))
            return super().read_level(x, y, level, width, height)

    path = sample("slides/cmu-1-small-region.svs")
    slide = wsimito.Slide(CountingTiffSlide(path))
    arr = slide.to_dask()
    assert CountingTiffSlide.reads == []
    assert arr.shape == (2967, 2220, 3) and arr.chunksize == (240, 240, 3)
    part = arr[250:300, 490:500].compute()
    assert CountingTiffSlide.reads == [(480, 240, 0, 240, 240)]
    np.testing.assert_array_equal(part, openslide_rgb(path, (490, 250), 0, (10, 50)))


def test_to_dask_level_matches_read_region_and_thumbnail_fits(sample):
    path = sample("slides/boxes.tiff")
    slide = wsimito.open_slide(path, mpp=1.0)
    for level in range(slide.level_count):
        w, h = slide.level_dimensions[level]
        np.testing.assert_array_equal(
            slide.to_dask(level).compute(), openslide_rgb(path, (0, 0), level, (w, h))
        )
    thumb = slide.thumbnail(100)
    assert max(thumb.shape[:2]) == 100 and thumb.shape[1] == 100


def test_missing_mpp_raises_until_given(sample):
    path = sample("slides/tcga-cr-7395-01a-01-ts1.svs")
    slide = wsimito.open_slide(path)
    assert not slide.has_mpp
    with pytest.raises(wsimito.MissingMPPError, match=r"mpp="):
        _ = slide.mpp
    with pytest.raises(wsimito.MissingMPPError):
        slide.read((0, 0, 100, 100), mpp=1.0)
    assert wsimito.open_slide(path, mpp=0.2527).mpp == pytest.approx(0.2527)


def test_screen_dpi_is_not_taken_as_a_scan_resolution(sample):
    # boxes.tiff says 72 dpi (352.8 µm/px): a default, not a microscope.
    with pytest.raises(wsimito.MissingMPPError):
        _ = wsimito.open_slide(sample("slides/boxes.tiff")).mpp


@pytest.mark.parametrize(
    "name", ["slides/broken.svs", "slides/unopenable.tiff", "slides/unreadable.svs"]
)
def test_bad_files_raise_slide_open_error_naming_the_file(sample, name):
    path = sample(name)
    with pytest.raises(wsimito.SlideOpenError) as info:
        wsimito.open_slide(path)
    assert path in str(info.value) and "openslide" in str(info.value)


def test_missing_file_and_unknown_backend(tmp_path):
    with pytest.raises(wsimito.SlideOpenError, match="no such file"):
        wsimito.open_slide(tmp_path / "nope.svs")
    with pytest.raises(ValueError, match="choose one of"):
        wsimito.open_slide(tmp_path, backend="bioformats")


def test_slide_pickles_by_reopening_and_works_as_context_manager(sample):
    path = sample("slides/cmu-1-small-region.svs")
    with wsimito.open_slide(path, backend="openslide", mpp=0.5, force_mpp=True) as slide:
        clone = pickle.loads(pickle.dumps(slide))
        assert clone is not slide and clone.backend == "openslide" and clone.mpp == 0.5
        np.testing.assert_array_equal(
            clone.read_region((5, 5), 0, (64, 64)), slide.read_region((5, 5), 0, (64, 64))
        )
        html = slide._repr_html_()
        assert "data:image/png;base64," in html and "2220 x 2967 px" in html


def test_properties_and_bounds(sample):
    slide = wsimito.open_slide(sample("slides/cmu-1-small-region.svs"))
    assert all(isinstance(v, str) for v in slide.properties.values())
    assert slide.bounds == (0, 0, 2220, 2967)
    assert slide.mpp == pytest.approx(0.499)
