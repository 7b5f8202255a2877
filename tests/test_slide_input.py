"""open_slide on input it must check or convert: bad mpp, greyscale, 16 bits, DICOM gaps."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image

import wsimito
from wsimito.errors import UnsupportedImageError

CMU = "slides/cmu-1-small-region.svs"
SIXTEEN_BITS = r"16-bit channels scaled to 8 bits over the full range, round\(v \* 255 / 65535\)"


@pytest.mark.parametrize("mpp", [0, -0.25, math.nan, math.inf])
def test_a_bad_mpp_is_named_not_blamed_on_the_file(sample, mpp):
    # The user's case: open_slide(path, mpp=0) said "Check that the file is complete".
    with pytest.raises(ValueError, match=r"^mpp must be a positive, finite number of µm per pixel"):
        wsimito.open_slide(sample(CMU), mpp=mpp)
    with pytest.raises(ValueError, match=r"^mpp must be a positive, finite number"):
        wsimito.open_slide(np.zeros((8, 8, 3), np.uint8), mpp=mpp)


@pytest.fixture
def grey(sample):
    """A real greyscale image: the CMU sample's luminance, 300 x 400 px."""
    rgb = wsimito.open_slide(sample(CMU)).read_region((600, 900), 0, (400, 300))
    return np.asarray(Image.fromarray(rgb).convert("L"))


@pytest.mark.parametrize("suffix, tiled", [(".png", False), (".tif", False), (".tif", True)])
def test_greyscale_files_are_read_as_rgb_with_a_warning(tmp_path, grey, suffix, tiled):
    path = tmp_path / f"grey{suffix}"
    if suffix == ".png":
        Image.fromarray(grey).save(path)
    else:
        tifffile.imwrite(path, grey, tile=(128, 128) if tiled else None)
    with pytest.warns(UserWarning, match=r"grey\w*\.\w+: greyscale image shown as RGB"):
        slide = wsimito.open_slide(path, mpp=0.5)
    assert slide.backend == ("tiffslide" if tiled else "array")
    rgb = slide.read_region((0, 0), 0, (400, 300))
    assert np.array_equal(rgb, np.repeat(grey[:, :, None], 3, axis=2))


@pytest.mark.parametrize("kind", ["png-grey", "tif-rgb", "tif-rgb-tiled"])
def test_16_bit_files_are_scaled_to_8_bits_with_a_warning_saying_how(tmp_path, grey, kind):
    rng = np.random.default_rng(1)
    values = (grey.astype(np.uint16) * 257 + rng.integers(-128, 128, grey.shape)).clip(0, 65535)
    values = values.astype(np.uint16)
    if kind == "png-grey":
        path = tmp_path / "sixteen.png"
        Image.fromarray(values).save(path)
        stored = values[:, :, None].repeat(3, axis=2)
    else:
        path = tmp_path / "sixteen.tif"
        stored = np.stack([values, values[::-1], 65535 - values], axis=2)
        tifffile.imwrite(
            path, stored, photometric="rgb", tile=(128, 128) if "tiled" in kind else None
        )
    with pytest.warns(UserWarning, match=SIXTEEN_BITS):
        slide = wsimito.open_slide(path, mpp=0.5)
    expected = np.round(stored / 257).astype(np.uint8)  # v * 255 / 65535 = v / 257
    assert np.array_equal(slide.read_region((0, 0), 0, (400, 300)), expected)


@pytest.mark.parametrize(
    "pixels, kwargs, message",
    [
        (
            np.zeros((5, 64, 80), np.uint8),  # five channels (e.g. multiplex), one page
            dict(photometric="minisblack", planarconfig="separate"),
            r"got shape \(5, 64, 80\)",
        ),
        (np.full((64, 80, 3), 2.0, np.float32), dict(photometric="rgb"), r"float32 pixels"),
        (np.zeros((64, 80, 3), np.int32), dict(photometric="rgb"), r"int32 pixels"),
    ],
)
def test_unsupported_pixels_fail_with_one_line_saying_what_is_supported(
    tmp_path, pixels, kwargs, message
):
    path = tmp_path / "odd.tif"
    tifffile.imwrite(path, pixels, **kwargs)
    with pytest.raises(UnsupportedImageError, match=message) as info:
        wsimito.open_slide(path, mpp=0.5)
    text = str(info.value)
    assert "\n" not in text and text.startswith(str(path))
    assert "tiffslide:" not in text and "openslide:" not in text  # no backend chorus
    assert "wsimito reads RGB or RGBA images with 8 or 16 bits per channel" in text
    assert isinstance(info.value, wsimito.SlideOpenError) and isinstance(info.value, ValueError)


def _dicom_copy(sample, folder, drop: str | None, file: str = "boxes_0.dcm"):
    """Both files of the boxes DICOM series in ``folder``, ``drop`` deleted from ``file``."""
    folder.mkdir()
    for name in ("boxes_0.dcm", "boxes_1.dcm"):
        shutil.copy(sample(f"slides/{name}"), folder / name)
    if drop is not None:
        ds = pydicom.dcmread(folder / file)
        delattr(ds, drop)
        ds.save_as(folder / file)
    return folder / "boxes_0.dcm"


def test_dicom_without_image_type_says_what_is_missing_and_the_repair_works(sample, tmp_path):
    # The user's case: a VL Whole Slide Microscopy file without ImageType gave "Couldn't get
    # image flavor ... supported format (... DICOM ...)".
    path = _dicom_copy(sample, tmp_path / "series", "ImageType")
    with pytest.raises(wsimito.SlideOpenError) as info:
        wsimito.open_slide(path)
    text = str(info.value)
    assert "boxes_0.dcm has no Image Type (0008,0008)" in text
    assert "OpenSlide and wsidicom need Image Type value 3" in text and "VOLUME" in text
    assert "ds.ImageType = ['ORIGINAL', 'PRIMARY', 'VOLUME', 'NONE']" in text
    assert "supported format" not in text
    # Follow the repair the message gives, then the file opens with the original's pixels.
    ds = pydicom.dcmread(path)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.save_as(path)
    original = wsimito.open_slide(sample("slides/boxes_0.dcm"))
    repaired = wsimito.open_slide(path)
    assert repaired.dimensions == original.dimensions
    assert np.array_equal(
        repaired.read_region((0, 0), 0, original.dimensions),
        original.read_region((0, 0), 0, original.dimensions),
    )


def test_dicom_gaps_in_another_file_of_the_series_are_named(sample, tmp_path):
    path = _dicom_copy(sample, tmp_path / "thumbnail", "ImageType", file="boxes_1.dcm")
    with pytest.raises(wsimito.SlideOpenError, match=r"boxes_1\.dcm has no Image Type"):
        wsimito.open_slide(path)
    path = _dicom_copy(sample, tmp_path / "size", "TotalPixelMatrixColumns")
    with pytest.raises(
        wsimito.SlideOpenError, match=r"boxes_0\.dcm has no TotalPixelMatrixColumns \(0048,0006\)"
    ) as info:
        wsimito.open_slide(path)
    assert "ds.TotalPixelMatrixColumns = <level width in px>" in str(info.value)
