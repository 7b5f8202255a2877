"""Reader faults: a slide whose later JPEG tiles are corrupt, read by OpenSlide and tiffslide.

Every failure becomes a :class:`wsimito.errors.SlideReadError` naming the file
and the region; ``detect_tissue(on_error="skip")`` loses only the bad tiles.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

import wsimito
from wsimito.errors import SlideReadError, WsimitoError

SIZE, TILE, MPP = 2048, 256, 1.0  # px, px, µm/px
BAD_TILES = (40, 41, 42, 43)  # row 5 of 8, columns 0 to 3
BACKENDS = ("openslide", "tiffslide")


def _write_tiff(path, image: np.ndarray) -> None:
    tifffile.imwrite(
        path,
        image,
        tile=(TILE, TILE),
        compression="jpeg",
        photometric="rgb",
        resolution=(1e4 / MPP, 1e4 / MPP),
        resolutionunit="CENTIMETER",
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A clean JPEG-tiled TIFF of a tissue disc on glass, and a copy with four corrupt tiles."""
    folder = tmp_path_factory.mktemp("faults")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    image = np.full((SIZE, SIZE, 3), 244, np.uint8)
    image[(xx - 1024) ** 2 + (yy - 1024) ** 2 < 800**2] = (200, 120, 170)
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    clean, corrupt = folder / "clean.tif", folder / "corrupt.tif"
    _write_tiff(clean, image)
    _write_tiff(corrupt, image)
    with tifffile.TiffFile(corrupt) as tif:
        offsets, counts = tif.pages[0].dataoffsets, tif.pages[0].databytecounts
    with open(corrupt, "r+b") as fh:  # keep the JPEG start marker, scramble the rest
        for i in BAD_TILES:
            fh.seek(offsets[i] + 2)
            fh.write(rng.integers(0, 256, counts[i] - 2, dtype=np.uint8).tobytes())
    return str(clean), str(corrupt)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_corrupt_tile_raises_slide_read_error_naming_file_and_region(files, backend):
    _, corrupt = files
    slide = wsimito.open_slide(corrupt, backend=backend)
    with pytest.raises(SlideReadError) as info:
        slide.read_region((0, 5 * TILE), 0, (TILE, TILE))
    error = info.value
    assert isinstance(error, WsimitoError) and isinstance(error, OSError)
    assert (error.path, error.level, error.box) == (corrupt, 0, (0, 5 * TILE, TILE, TILE))
    assert str(error).startswith(f"{corrupt}: cannot read level 0, box x=0, y=1280, 256x256 px")
    # The handle stays usable: OpenSlide refuses every call on a handle that saw an error.
    good = slide.read_region((0, 0), 0, (TILE, TILE))
    assert good.shape == (TILE, TILE, 3)
    with pytest.raises(SlideReadError):
        slide.read((0, 5 * TILE, 2 * TILE, TILE), mpp=2.0)
    with pytest.raises(SlideReadError):
        slide.to_dask()[5 * TILE : 6 * TILE, :TILE].compute()


@pytest.mark.parametrize("backend", BACKENDS)
def test_tissue_detection_raises_by_default_with_the_way_out(files, backend):
    _, corrupt = files
    slide = wsimito.open_slide(corrupt, backend=backend)
    with pytest.raises(SlideReadError, match=r"corrupt\.tif: cannot read level 0") as info:
        wsimito.detect_tissue(slide)
    assert "on_error='skip'" in str(info.value)
    assert info.value.box == (0, 5 * TILE, TILE, TILE)  # narrowed down to the first bad tile


@pytest.mark.parametrize("backend", BACKENDS)
def test_skip_loses_only_the_bad_tiles_and_reports_them(files, backend):
    clean, corrupt = files
    expected = wsimito.detect_tissue(wsimito.open_slide(clean, backend=backend))
    assert expected.unread_area_mm2 == 0 and not expected.unread.any()
    slide = wsimito.open_slide(corrupt, backend=backend)
    with pytest.warns(UserWarning, match=r"4 region\(s\) .* could not be read \(0\.262 mm²\)"):
        tissue = wsimito.detect_tissue(slide, on_error="skip")
    bad_area_mm2 = len(BAD_TILES) * (TILE * MPP / 1000) ** 2
    assert tissue.unread_area_mm2 == pytest.approx(bad_area_mm2)
    assert repr(tissue).endswith(", 0.262 mm² unread>")
    assert sorted(tissue.unread_boxes) == [(c * TILE, 5 * TILE, TILE, TILE) for c in range(4)]
    s = round(tissue.scale)
    unread = np.zeros(tissue.mask.shape, bool)
    unread[5 * TILE // s : 6 * TILE // s, : 4 * TILE // s] = True
    assert np.array_equal(tissue.unread, unread)
    assert not (tissue.mask & tissue.unread).any()  # unknown is never tissue
    assert np.array_equal(tissue.mask, expected.mask & ~unread)  # the rest is untouched
    lost = float(expected.fractions(np.array([[0, 5 * TILE, 4 * TILE, TILE]]))[0])
    assert tissue.area_mm2 == pytest.approx(expected.area_mm2 - lost * bad_area_mm2)
