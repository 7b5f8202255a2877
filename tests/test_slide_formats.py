"""OME-Zarr, plain zarr, in-memory arrays and resolution metadata."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

import wsimito
from wsimito.slide import mpp as mpp_parsers


@pytest.fixture(scope="module")
def cmu(sample):
    slide = wsimito.open_slide(sample("slides/cmu-1-small-region.svs"))
    return slide.read_region((0, 0), 0, (600, 500))


def write_ome_zarr(path, image: np.ndarray, mpp: float, zarr_format: int) -> None:
    """An OME-Zarr multiscales image (c, y, x) with two levels, v0.4 (zarr 2) or v0.5 (zarr 3)."""
    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    levels = [image, image[::2, ::2]]
    datasets = []
    for i, level in enumerate(levels):
        arr = root.create_array(
            str(i), shape=(3, *level.shape[:2]), dtype="uint8", chunks=(3, 128, 128)
        )
        arr[:] = level.transpose(2, 0, 1)
        datasets.append(
            {
                "path": str(i),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [1.0, mpp * 2**i, mpp * 2**i]}
                ],
            }
        )
    axes = [
        {"name": "c", "type": "channel"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    ms = {"axes": axes, "datasets": datasets, "name": "cmu"}
    if zarr_format == 2:
        root.attrs["multiscales"] = [{**ms, "version": "0.4"}]
    else:
        root.attrs["ome"] = {"version": "0.5", "multiscales": [ms]}


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_ome_zarr_multiscales_read_with_their_mpp_and_levels(tmp_path, cmu, zarr_format):
    path = tmp_path / f"image-v{zarr_format}.ome.zarr"
    write_ome_zarr(path, cmu, mpp=0.499, zarr_format=zarr_format)
    slide = wsimito.open_slide(str(path))
    assert slide.backend == "zarr"
    assert slide.mpp == pytest.approx(0.499)
    assert slide.level_dimensions == ((600, 500), (300, 250))
    assert slide.level_downsamples == (1.0, 2.0)
    white_margin = np.full((200, 10, 3), 255, np.uint8)
    np.testing.assert_array_equal(
        slide.read_region((-10, 20), 0, (300, 200)),
        np.concatenate([white_margin, cmu[20:220, :290]], axis=1),
    )
    np.testing.assert_array_equal(
        slide.read_region((100, 60), 1, (50, 40)), cmu[::2, ::2][30:70, 50:100]
    )
    assert slide.to_dask(0).chunksize == (128, 128, 3)
    np.testing.assert_array_equal(slide.to_dask(0)[5:300, 7:9].compute(), cmu[5:300, 7:9])


def test_plain_zarr_array_needs_mpp(tmp_path, cmu):
    path = tmp_path / "plain.zarr"
    arr = zarr.open_array(str(path), mode="w", shape=cmu.shape, chunks=(100, 100, 3), dtype="uint8")
    arr[:] = cmu
    slide = wsimito.open_slide(str(path), backend="zarr")
    with pytest.raises(wsimito.MissingMPPError):
        _ = slide.mpp
    slide = wsimito.open_slide(str(path), mpp=0.5)
    np.testing.assert_array_equal(slide.read_region((0, 0), 0, (600, 500)), cmu)


def test_numpy_arrays_need_mpp_and_alpha_is_composited_on_white():
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red-ish, bottom half transparent
    slide = wsimito.open_slide(rgba)
    with pytest.raises(wsimito.MissingMPPError, match="mpp="):
        _ = slide.mpp
    out = wsimito.open_slide(rgba, mpp=0.25).read_region((0, 0), 0, (5, 4))
    assert (out[:2] == [200, 0, 0]).all() and (out[2:] == 255).all()
    with pytest.raises(ValueError, match="transpose"):
        wsimito.open_slide(np.zeros((3, 64, 64), np.uint8), mpp=0.25)
    with pytest.raises(ValueError, match="positive"):
        wsimito.open_slide(np.zeros((8, 8, 3), np.uint8), mpp=-1)


@pytest.mark.parametrize(
    ("unit", "resolution", "expected"),
    [
        ("CENTIMETER", 1e4 / 0.25, 0.25),  # px per cm
        ("INCH", 25400 / 0.5, 0.5),  # px per inch
    ],
)
def test_tiff_resolution_tags_in_centimetres_and_inches(tmp_path, cmu, unit, resolution, expected):
    path = tmp_path / "roi.tif"
    tifffile.imwrite(
        path, cmu, resolution=(resolution, resolution), resolutionunit=unit, photometric="rgb"
    )
    slide = wsimito.open_slide(str(path))
    assert slide.backend == "array"
    assert slide.mpp == pytest.approx(expected, rel=1e-6)
    np.testing.assert_array_equal(slide.read_region((0, 0), 0, (600, 500)), cmu)


def test_png_with_and_without_a_physical_resolution(tmp_path, cmu):
    plain = tmp_path / "plain.png"
    Image.fromarray(cmu).save(plain)
    with pytest.raises(wsimito.MissingMPPError):
        _ = wsimito.open_slide(plain).mpp
    tagged = tmp_path / "tagged.png"
    Image.fromarray(cmu).save(tagged, dpi=(25400 / 0.25, 25400 / 0.25))
    assert wsimito.open_slide(tagged).mpp == pytest.approx(0.25, rel=1e-3)


def test_anisotropic_pixels_warn_naming_both_values(tmp_path, cmu):
    path = tmp_path / "aniso.tif"
    tifffile.imwrite(
        path,
        cmu,
        resolution=(1e4 / 0.25, 1e4 / 0.30),
        resolutionunit="CENTIMETER",
        photometric="rgb",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        slide = wsimito.open_slide(str(path))
    text = " ".join(str(w.message) for w in caught)
    assert "0.25" in text and "0.3" in text
    assert slide.mpp == pytest.approx(0.275)


def test_named_parsers_read_vendor_metadata():
    assert mpp_parsers.parse_aperio(
        {"tiff.ImageDescription": "Aperio Image |AppMag = 40|MPP = 0.2526|"}
    ) == (0.2526, 0.2526)
    ome = (
        '<OME><Image><Pixels PhysicalSizeX="250" PhysicalSizeXUnit="nm" '
        'PhysicalSizeY="0.25" SizeX="10"/></Image></OME>'
    )
    assert mpp_parsers.parse_ome_xml(ome) == pytest.approx((0.25, 0.25))
    assert (
        mpp_parsers.parse_tiff_resolution(
            {"tiff.ResolutionUnit": "none", "tiff.XResolution": "4", "tiff.YResolution": "4"}
        )
        is None
    )
    assert mpp_parsers.parse_openslide({"openslide.mpp-x": "0.5", "openslide.mpp-y": "0.5"}) == (
        0.5,
        0.5,
    )
    assert mpp_parsers.parse_properties({"aperio.MPP": "0.499"}) == (0.499, 0.499)
