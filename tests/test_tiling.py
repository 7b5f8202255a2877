"""TileGrid geometry: the cores partition the slide, margins hold, tissue is never orphaned."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import wsimito
from wsimito.tiling import TileGrid
from wsimito.tissue import Tissue

MAX_TILES = 4000
PROPERTY = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)


@st.composite
def grids(draw):
    """Random slide size and resolution, grid resolution, tile size and overlap."""
    width = draw(st.integers(1, 5000))
    height = draw(st.integers(1, 5000))
    slide_mpp = draw(st.floats(0.1, 1.0))
    # grid mpp: a 1 % offset, an exact multiple, or anything in range
    mpp = draw(
        st.one_of(
            st.floats(0.1, 4.0),
            st.sampled_from([slide_mpp * 1.01, slide_mpp * 2, slide_mpp / 2, slide_mpp]),
        )
    )
    tile_size = draw(st.integers(1, 1024))
    overlap = draw(
        st.one_of(
            st.just(0),
            st.integers(0, tile_size - 1),
            st.just(tile_size - 1),
            st.just(tile_size // 2 * 2),
        )
    )
    assume(overlap < tile_size)
    stride = (tile_size - overlap) * mpp / slide_mpp
    assume(math.ceil(width / stride + 1) * math.ceil(height / stride + 1) <= MAX_TILES)
    return (width, height), slide_mpp, tile_size, overlap, mpp


def _sample_points(grid: TileGrid, rng: np.random.Generator) -> np.ndarray:
    """Points inside the slide: every core edge, the float just below it, and random points."""
    width, height = grid.dimensions
    cores = grid.cores()

    def coords(lo: np.ndarray, hi: np.ndarray, size: int) -> np.ndarray:
        edges = np.concatenate([lo, hi, [0.0, float(size)]])
        v = np.concatenate(
            [
                edges,
                np.nextafter(edges, -np.inf),
                np.nextafter(edges, np.inf),
                rng.uniform(0, size, 64),
            ]
        )
        return np.unique(v[(v >= 0) & (v < size)])

    xs = coords(cores[:, 0], cores[:, 2], width)
    ys = coords(cores[:, 1], cores[:, 3], height)
    along_x = np.stack([xs, rng.choice(ys, len(xs))], axis=1)
    along_y = np.stack([rng.choice(xs, len(ys)), ys], axis=1)
    corners = np.stack(np.meshgrid(xs[:40], ys[:40]), axis=-1).reshape(-1, 2)
    return np.concatenate([along_x, along_y, corners])


def _owners(cores: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Number of half-open cores that hold each point."""
    count = np.zeros(len(points), dtype=np.int64)
    for start in range(0, len(points), 500):
        p = points[start : start + 500, None, :]
        inside = (
            (cores[None, :, 0] <= p[..., 0])
            & (p[..., 0] < cores[None, :, 2])
            & (cores[None, :, 1] <= p[..., 1])
            & (p[..., 1] < cores[None, :, 3])
        )
        count[start : start + 500] = inside.sum(axis=1)
    return count


@PROPERTY
@given(params=grids(), seed=st.integers(0, 2**32 - 1))
def test_cores_partition_the_slide(params, seed):
    dims, slide_mpp, tile_size, overlap, mpp = params
    grid = TileGrid.from_dimensions(dims, slide_mpp, tile_size=tile_size, overlap=overlap, mpp=mpp)
    points = _sample_points(grid, np.random.default_rng(seed))
    owners = _owners(grid.cores(), points)
    assert owners.min() == 1 and owners.max() == 1, "a point is owned twice or not at all"
    # locate() names that one owner
    cores = grid.cores()[grid.locate(points)]
    assert np.all(
        (cores[:, 0] <= points[:, 0])
        & (points[:, 0] < cores[:, 2])
        & (cores[:, 1] <= points[:, 1])
        & (points[:, 1] < cores[:, 3])
    )


@PROPERTY
@given(params=grids())
def test_cores_keep_half_the_overlap_from_tile_edges_except_at_slide_edges(params):
    dims, slide_mpp, tile_size, overlap, mpp = params
    grid = TileGrid.from_dimensions(dims, slide_mpp, tile_size=tile_size, overlap=overlap, mpp=mpp)
    width, height = dims
    boxes, cores = grid.boxes(), grid.cores()
    scale = mpp / slide_mpp
    half = overlap * scale / 2
    tol = 1e-9 * max(width, height, tile_size * scale)
    assert np.allclose(boxes[:, 2:], tile_size * scale, rtol=1e-12), "edge tiles must not shrink"
    for axis, size in ((0, width), (1, height)):
        before = cores[:, axis] - boxes[:, axis]
        after = boxes[:, axis] + boxes[:, axis + 2] - cores[:, axis + 2]
        assert np.all(before >= -tol) and np.all(after >= -tol), "core outside its tile"
        assert np.all((cores[:, axis] <= 0) | (before >= half - tol))
        assert np.all((cores[:, axis + 2] >= size) | (after >= half - tol))
    # the fewest tiles that reach the far edge (a convolution's output size)
    stride = (tile_size - overlap) * scale
    for n, size in ((grid.shape[1], width), (grid.shape[0], height)):
        assert (n - 1) * stride + tile_size * scale >= size - tol
        assert n == 1 or (n - 2) * stride + tile_size * scale < size + tol


@st.composite
def grids_with_tissue(draw):
    dims, slide_mpp, tile_size, overlap, mpp = draw(grids())
    cells = draw(st.floats(1.0, 40.0))  # mask pixels along the longer side
    tissue_mpp = slide_mpp * max(dims) / cells
    density = draw(st.sampled_from([0.002, 0.02, 0.2]))
    min_tissue = draw(st.one_of(st.just(0.05), st.just(1.0), st.floats(0.0, 1.0)))
    return dims, slide_mpp, tile_size, overlap, mpp, tissue_mpp, density, min_tissue


def _overlap_1d(a0, a1, b0, b1):
    return np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None)


@PROPERTY
@given(params=grids_with_tissue(), seed=st.integers(0, 2**32 - 1))
def test_every_tissue_pixel_lies_in_kept_cores_and_only_empty_cores_are_pruned(params, seed):
    dims, slide_mpp, tile_size, overlap, mpp, tissue_mpp, density, min_tissue = params
    shape = Tissue.mask_shape(dims, slide_mpp=slide_mpp, mpp=tissue_mpp)
    mask = np.random.default_rng(seed).random(shape) < density
    tissue = Tissue(mask, mpp=tissue_mpp, slide_mpp=slide_mpp, dimensions=dims)
    kwargs = dict(tile_size=tile_size, overlap=overlap, mpp=mpp)
    full = TileGrid.from_dimensions(dims, slide_mpp, **kwargs)
    kept = TileGrid.from_dimensions(dims, slide_mpp, tissue=tissue, min_tissue=min_tissue, **kwargs)
    is_kept = np.zeros(full.shape, dtype=bool)
    is_kept[kept.positions()] = True
    is_kept = is_kept[full.positions()]

    # exact area of each tissue pixel (clipped to the slide) inside each core and each tile
    s = tissue.scale
    width, height = dims
    ti, tj = np.nonzero(mask)
    px0, px1 = tj * s, np.minimum((tj + 1) * s, width)
    py0, py1 = ti * s, np.minimum((ti + 1) * s, height)
    cores, boxes = full.cores(), full.boxes()
    in_core = _overlap_1d(px0[None], px1[None], cores[:, :1], cores[:, 2:3]) * _overlap_1d(
        py0[None], py1[None], cores[:, 1:2], cores[:, 3:4]
    )
    holds = (in_core > 1e-9 * s * s).any(axis=1)
    assert np.all(is_kept[holds]), "a core holding tissue was dropped"

    in_tile = _overlap_1d(
        px0[None], px1[None], boxes[:, :1], boxes[:, :1] + boxes[:, 2:3]
    ) * _overlap_1d(py0[None], py1[None], boxes[:, 1:2], boxes[:, 1:2] + boxes[:, 3:4])
    fraction = in_tile.sum(axis=1) / (boxes[:, 2] * boxes[:, 3])
    empty_core = ~(in_core > 0).any(axis=1)
    clear = np.abs(fraction - min_tissue) > 1e-9
    expected = fraction >= min_tissue
    assert np.array_equal(is_kept[empty_core & clear], expected[empty_core & clear])
    assert np.allclose(tissue.fractions(boxes), fraction, atol=1e-9)


def test_slide_smaller_than_one_tile_gives_one_tile_owning_the_slide():
    grid = TileGrid.from_dimensions((300, 200), slide_mpp=0.25, tile_size=512, overlap=64, mpp=0.5)
    assert len(grid) == 1 and grid.shape == (1, 1)
    tile = grid[0]
    assert tile.core == (0.0, 0.0, 300.0, 200.0)
    assert tile.width == tile.height == 1024.0  # 512 px at 0.5 µm/px; the outside reads as white


def test_level0_boxes_are_fractional_when_mpps_do_not_divide():
    grid = TileGrid.from_dimensions(
        (20_000, 10_000), slide_mpp=0.2475, tile_size=512, overlap=64, mpp=0.25
    )
    scale = 0.25 / 0.2475
    boxes = grid.boxes()
    assert boxes[0, 2] == pytest.approx(512 * scale)
    assert np.allclose(np.diff(np.unique(boxes[:, 0])), 448 * scale)
    assert grid.shape[1] == math.ceil((20_000 - 512 * scale) / (448 * scale)) + 1


def test_tiles_index_kept_tiles_row_by_row_and_match_the_arrays():
    mask = np.zeros((40, 40), dtype=bool)
    mask[5:9, 30:33] = True
    mask[25, 2] = True
    tissue = Tissue(mask, mpp=8.0, slide_mpp=0.25, dimensions=(40 * 32, 40 * 32))
    grid = TileGrid.from_dimensions(
        (1280, 1280), 0.25, tile_size=128, overlap=16, mpp=0.25, tissue=tissue
    )
    tiles = list(grid)
    assert len(tiles) == len(grid) < grid.shape[0] * grid.shape[1]
    assert [t.index for t in tiles] == list(range(len(grid)))
    assert [(t.row, t.col) for t in tiles] == sorted((t.row, t.col) for t in tiles)
    assert grid[-1] == tiles[-1] and grid[1:3] == tiles[1:3]
    assert np.array_equal(grid.boxes(), [t.box for t in tiles])
    assert np.array_equal(grid.cores(), [t.core for t in tiles])
    with pytest.raises(IndexError):
        grid[len(grid)]


def test_a_tissue_speck_far_below_min_tissue_keeps_its_tile_and_margin_only_tiles_prune():
    # one 8 µm tissue pixel (1.6 % of a 64 µm tile) in the core of tile (0, 0), which
    # ends at 224 px; tiles (0, 1), (1, 0) and (1, 1) start at 192 px and see it in their margins
    mask = np.zeros((20, 20), dtype=bool)
    mask[6, 6] = True
    dims = (640, 640)  # 160 µm at 0.25 µm/px
    tissue = Tissue(mask, mpp=8.0, slide_mpp=0.25, dimensions=dims)
    grid = TileGrid.from_dimensions(
        dims, 0.25, tile_size=256, overlap=64, mpp=0.25, tissue=tissue, min_tissue=0.05
    )
    owner = grid.locate(np.array([[6.5 * 32, 6.5 * 32]]))[0]
    assert owner >= 0 and grid.tissue.fraction(grid[owner].box) < 0.05
    assert len(grid) == 1 and (grid[0].row, grid[0].col) == (0, 0)
    everything = TileGrid.from_dimensions(
        dims, 0.25, tile_size=256, overlap=64, mpp=0.25, tissue=tissue, min_tissue=0.0
    )
    assert len(everything) == everything.shape[0] * everything.shape[1] > 1


def test_grid_from_a_slide_matches_pure_geometry(sample):
    slide = wsimito.open_slide(sample("slides/cmu-1-small-region.svs"))
    grid = TileGrid(slide, tile_size=256, overlap=32, mpp=0.5)
    same = TileGrid.from_dimensions(slide.dimensions, slide.mpp, tile_size=256, overlap=32, mpp=0.5)
    assert np.array_equal(grid.boxes(), same.boxes())
    assert grid.cores()[-1, 2:].tolist() == list(slide.dimensions)


def test_tissue_from_another_slide_is_refused():
    tissue = Tissue(np.ones((4, 4), dtype=bool), mpp=8.0, slide_mpp=0.25, dimensions=(128, 128))
    with pytest.raises(ValueError, match="same slide"):
        TileGrid.from_dimensions((256, 128), 0.25, tissue=tissue)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(tile_size=0), ValueError),
        (dict(overlap=512), ValueError),
        (dict(overlap=-1), ValueError),
        (dict(tile_size=256.5), TypeError),
        (dict(mpp=0), ValueError),
        (dict(min_tissue=1.5), ValueError),
    ],
)
def test_bad_grid_parameters_raise(kwargs, error):
    with pytest.raises(error):
        TileGrid.from_dimensions((1000, 1000), 0.25, **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mpp=math.nan), r"mpp must be a positive, finite number of µm per pixel .* got nan"),
        (dict(mpp=math.inf), r"mpp must be a positive, finite number of µm per pixel .* got inf"),
        (dict(mpp=-0.5), r"mpp must be a positive, finite number of µm per pixel"),
        (dict(tile_size=True), r"tile_size must be a whole number of px at mpp, got True"),
        (dict(tile_size=2.5), r"tile_size must be a whole number of px at mpp, got 2.5"),
        (dict(overlap=8.0), r"overlap must be a whole number of px at mpp"),
        (
            dict(min_tissue=math.nan),
            r"min_tissue must be a fraction of the tile's area in \[0, 1\]",
        ),
        (dict(max_tiles=0), r"max_tiles must be a whole number of tiles >= 1"),
    ],
)
def test_bad_grid_parameters_name_the_parameter_unit_and_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TileGrid.from_dimensions((1000, 1000), 0.25, **kwargs)


def test_an_absurd_grid_is_refused_before_anything_is_allocated(sample):
    # The user's case: mpp=1e-6 on the CMU sample asked numpy for TiBs.
    import tracemalloc

    slide = wsimito.open_slide(sample("slides/cmu-1-small-region.svs"))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as info:
            TileGrid(slide, mpp=1e-6)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    cols = math.ceil((2220 * 0.499 / 1e-6 - 512) / 448) + 1  # the convolution-style count
    assert f"({cols:,} x " in message
    assert "max_tiles=2,000,000" in message and "max_tiles=None" in message
    assert "GiB" in message and "TiB of pixels" in message
    assert peak < 1_000_000  # bytes: nothing tile-sized was allocated


def test_max_tiles_is_the_limit_and_none_lifts_it():
    dims, slide_mpp = (10_000, 8_000), 0.25
    n = len(TileGrid.from_dimensions(dims, slide_mpp))
    assert n == 414
    assert len(TileGrid.from_dimensions(dims, slide_mpp, max_tiles=n)) == n
    with pytest.raises(ValueError, match=r"a grid of 414 tiles \(23 x 18\) .* max_tiles=413"):
        TileGrid.from_dimensions(dims, slide_mpp, max_tiles=n - 1)
    with pytest.raises(ValueError, match=r"5,000,000 tiles .* above max_tiles=2,000,000"):
        TileGrid.from_dimensions(dims, slide_mpp, tile_size=4, overlap=0)
    big = TileGrid.from_dimensions(dims, slide_mpp, tile_size=4, overlap=0, max_tiles=None)
    assert len(big) == 2500 * 2000
    assert big[-1].core == (9996.0, 7996.0, 10_000.0, 8_000.0)


def test_geodataframe_holds_tiles_or_cores_with_tissue_fraction():
    mask = np.zeros((8, 8), dtype=bool)
    mask[:4] = True
    tissue = Tissue(mask, mpp=8.0, slide_mpp=0.5, dimensions=(128, 128))
    grid = TileGrid.from_dimensions(
        (128, 128), 0.5, tile_size=64, overlap=8, mpp=0.5, tissue=tissue, min_tissue=0.0
    )
    tiles = grid.to_geodataframe()
    cores = grid.to_geodataframe(geometry="core")
    assert len(tiles) == len(grid)
    assert np.allclose(tiles.area, grid.boxes()[:, 2] * grid.boxes()[:, 3])
    assert cores.area.sum() == pytest.approx(128 * 128)  # the cores tile the slide
    # tiles on the top row hold tissue over all of their part inside the slide
    top = tiles[tiles["row"] == 0]
    inside = (np.minimum(top["x"] + 64, 128) - top["x"]) / 64
    assert np.allclose(top["tissue_fraction"], inside)
    assert np.all(tiles.loc[tiles["y"] >= 64, "tissue_fraction"] == 0)
