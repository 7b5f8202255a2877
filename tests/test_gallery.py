"""wsimito.gallery: crops centred on their points, sections, and the PNG / HTML gallery."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser

import numpy as np
import pytest
import shapely
from _plot_helpers import dotted_slide, make_result
from PIL import Image

import wsimito
from wsimito import gallery
from wsimito.gallery import GallerySection

# Dots far enough apart that each 32 px crop holds only its own, some near the edges.
DOTS = np.array(
    [[100.5, 80.5], [300.3, 200.9], [520.0, 410.0], [3.5, 590.5], [797.2, 2.7], [650.5, 300.5]]
)


def test_crops_are_centred_on_their_points_at_level_0():
    slide = dotted_slide(DOTS)
    out = gallery.crops(slide, DOTS, size_px=32)
    assert out.shape == (len(DOTS), 32, 32, 3) and out.dtype == np.uint8
    for crop in out:
        dark = crop.min(axis=2) < 128
        assert dark[15:17, 15:17].all()  # the 2 x 2 centre pixels lie on the 3 x 3 dot
        rows, cols = np.nonzero(dark)
        assert np.abs(rows - 15.5).max() <= 2.5 and np.abs(cols - 15.5).max() <= 2.5


def test_crop_boxes_are_centred_within_half_a_pixel_and_whole_at_level_0():
    slide = dotted_slide(DOTS)
    boxes = gallery.crop_boxes(slide, DOTS, size_px=32)
    centre = boxes[:, :2] + boxes[:, 2:] / 2
    assert np.abs(centre - DOTS).max() <= 0.5
    assert np.array_equal(boxes[:, :2], np.round(boxes[:, :2]))
    assert np.all(boxes[:, 2:] == 32)


def test_crops_at_a_coarser_mpp_are_centred_and_exact_in_size():
    slide = dotted_slide(DOTS, radius=2)  # 5 x 5 px dots: 2.5 px at 1 µm/px
    boxes = gallery.crop_boxes(slide, DOTS, size_px=16, mpp=1.0)
    assert np.allclose(boxes[:, :2] + boxes[:, 2:] / 2, DOTS)  # exact centre when resampling
    assert np.allclose(boxes[:, 2:], 32.0)  # 16 px at 1 µm/px = 32 level-0 px at 0.5 µm/px
    for crop in gallery.crops(slide, DOTS, size_px=16, mpp=1.0):
        grey = crop.astype(float).mean(axis=2)
        i, j = np.unravel_index(np.argmin(grey), grey.shape)
        assert abs(i + 0.5 - 8) <= 1.0 and abs(j + 0.5 - 8) <= 1.0
        assert grey.min() < 100


def test_crops_reject_bad_input():
    slide = dotted_slide(DOTS)
    with pytest.raises(ValueError, match="size_px"):
        gallery.crops(slide, DOTS, size_px=0)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        gallery.crops(slide, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        gallery.crops(slide, [[np.nan, 1.0]])
    with pytest.raises(ValueError, match="mpp"):
        gallery.crops(slide, DOTS, mpp=-1)
    assert gallery.crops(slide, np.empty((0, 2)), size_px=8).shape == (0, 8, 8, 3)


def test_read_section_orders_by_descending_score_and_keeps_the_top_n():
    slide = dotted_slide(DOTS)
    scores = np.array([0.3, 0.9, 0.5, 0.9, 0.1, 0.7])
    section = gallery.read_section(slide, DOTS, scores, title="T", size_px=16, n=4)
    order = [1, 3, 5, 2]  # ties keep their given order
    assert section.labels == ("0.90", "0.90", "0.70", "0.50")
    assert np.array_equal(section.points, DOTS[order])
    assert np.array_equal(section.crops, gallery.crops(slide, DOTS[order], size_px=16))
    plain = gallery.read_section(slide, DOTS[:2], size_px=8)
    assert plain.labels == ("#1", "#2")
    with pytest.raises(ValueError, match="scores has 2 entries for 6 points"):
        gallery.read_section(slide, DOTS, [0.1, 0.2])


def _solid_crops(colors, size=10) -> np.ndarray:
    return np.stack([np.full((size, size, 3), c, np.uint8) for c in colors])


def test_gallery_image_lays_out_every_crop_zoomed_with_its_mark_and_caption():
    colors = [(255, 0, 0), (0, 0, 255), (0, 200, 0), (200, 200, 0), (0, 200, 200)]
    section = GallerySection("Five", _solid_crops(colors), [f"c{i}" for i in range(5)])
    image = gallery.gallery_image([section], columns=3, zoom=4, marker=True, title="Test")
    assert image.ndim == 3 and image.dtype == np.uint8
    for color in colors:
        hit = np.all(image == color, axis=2)
        rows, cols = np.nonzero(hit)
        # One 40 x 40 block per crop (zoom 4), minus the centre ticks.
        assert rows.max() - rows.min() == 39 and cols.max() - cols.min() == 39
        assert 40 * 40 * 0.8 < hit.sum() < 40 * 40
        block = image[rows.min() : rows.min() + 40, cols.min() : cols.min() + 40]
        marks = np.all(block == section.color, axis=2)
        assert marks.any() and not marks[18:22, 18:22].any()  # ticks around a free centre
        caption = image[rows.max() + 1 : rows.max() + 17, cols.min() : cols.max() + 1]
        assert (caption.min(axis=2) < 128).any()  # the caption's text
    # Crops 0-2 on the first row, 3-4 on the second.
    tops = [np.nonzero(np.all(image == c, axis=2))[0].min() for c in colors]
    assert tops[0] == tops[1] == tops[2] < tops[3] == tops[4]


def test_gallery_image_without_marker_shows_the_crops_untouched():
    crops = _solid_crops([(10, 20, 30), (40, 50, 60)], size=8)
    image = gallery.gallery_image(crops, ["a", "b"], zoom=2, marker=False)
    for color in [(10, 20, 30), (40, 50, 60)]:
        assert np.all(image == color, axis=2).sum() == 16 * 16


def test_gallery_image_shows_each_section_and_an_empty_one():
    a = GallerySection("First", _solid_crops([(255, 0, 0)]), ["x"])
    empty = GallerySection("Nothing", np.zeros((0, 10, 10, 3), np.uint8), [])
    b = GallerySection("Second", _solid_crops([(0, 0, 255)]), ["y"])
    image = gallery.gallery_image([a, empty, b], columns=2, zoom=1, marker=False)
    top_a = np.nonzero(np.all(image == (255, 0, 0), axis=2))[0].min()
    top_b = np.nonzero(np.all(image == (0, 0, 255), axis=2))[0].min()
    assert top_b > top_a + 10 + 2 * 16  # a caption row and the empty section's line between


def test_sections_validate_their_parts():
    with pytest.raises(ValueError, match="2 labels for 1 crops"):
        GallerySection("s", _solid_crops([(0, 0, 0)]), ["a", "b"])
    with pytest.raises(ValueError, match="uint8"):
        GallerySection("s", np.zeros((1, 4, 4, 3), np.float32), ["a"])
    with pytest.raises(ValueError, match="columns"):
        gallery.gallery_image(_solid_crops([(0, 0, 0)]), ["a"], columns=0)
    with pytest.raises(TypeError, match="GallerySection"):
        gallery.gallery_image(["not a section"])


class _Figures(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.figures: list[dict] = []
        self.headings: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "figure":
            self.figures.append({"title": attrs.get("title"), "caption": ""})
        elif tag == "img":
            self.figures[-1]["src"] = attrs["src"]
        self._in = tag

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "figcaption":
            self.figures[-1]["caption"] += data
        elif self._in == "h2":
            self.headings.append(data)


def test_gallery_html_holds_every_crop_with_caption_position_and_escaped_text():
    slide = dotted_slide(DOTS)
    counted = gallery.read_section(slide, DOTS[:3], [0.9, 0.8, 0.7], title="Counted", size_px=16)
    negatives = gallery.read_section(
        slide,
        DOTS[3:],
        labels=["<b>ink</b>", "fold", "dust"],
        title="Mined <negatives>",
        size_px=16,
        color=(70, 130, 180),
    )
    page = gallery.gallery_html([counted, negatives], zoom=3, marker=False)
    parser = _Figures()
    parser.feed(page)
    assert parser.headings == ["Counted", "Mined <negatives>"]
    assert "<b>ink</b>" not in page and "&lt;b&gt;ink&lt;/b&gt;" in page
    captions = [f["caption"] for f in parser.figures]
    assert captions == ["0.90", "0.80", "0.70", "<b>ink</b>", "fold", "dust"]
    for fig, (x, y), crop in zip(
        parser.figures, DOTS, np.concatenate([counted.crops, negatives.crops]), strict=True
    ):
        assert fig["title"] == f"x = {x:.1f}, y = {y:.1f} (level-0 px)"
        png = base64.b64decode(fig["src"].split(",", 1)[1])
        shown = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        assert np.array_equal(shown[::3, ::3], crop)  # zoom 3, nearest neighbour


def test_write_gallery_writes_png_or_html_by_suffix_and_nothing_else(tmp_path):
    slide = dotted_slide(DOTS)
    section = gallery.read_section(slide, DOTS, np.linspace(1, 0, len(DOTS)), size_px=16)
    png = gallery.write_gallery(tmp_path / "g.png", [section], title="t", columns=4)
    written = np.asarray(Image.open(png).convert("RGB"))
    assert np.array_equal(written, gallery.gallery_image([section], title="t", columns=4))
    page = gallery.write_gallery(tmp_path / "g.HTML", [section])
    assert page.read_text(encoding="utf-8").count("<figure") == len(DOTS)
    with pytest.raises(ValueError, match=r"\.png or \.html"):
        gallery.write_gallery(tmp_path / "g.jpg", [section])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.HTML", "g.png"]


def test_detection_section_selects_each_kind_of_candidate():
    pts = np.array([[100, 100], [200, 200], [300, 300], [700, 500], [650, 50], [400, 400.0]])
    scores = np.array([0.9, 0.4, 0.6, 0.95, 0.2, 0.5])
    slide = dotted_slide(pts)
    tissue = wsimito.Tissue.from_polygons([shapely.box(0, 0, 500, 450)], slide, mpp=4.0)
    result = make_result(slide, pts, scores, tissue=tissue, threshold=0.5)
    inside = np.array([True, True, True, False, False, True])
    expect = {
        "counted": inside & (scores >= 0.5),
        "candidates": np.ones(6, bool),
        "below_threshold": inside & (scores < 0.5),
        "outside_tissue": ~inside,
    }
    for which, keep in expect.items():
        section = gallery.detection_section(result, slide, which=which, n=None, size_um=8)
        order = np.argsort(-scores[keep], kind="stable")
        assert np.array_equal(section.points, pts[keep][order]), which
        assert section.labels == tuple(f"{s:.2f}" for s in scores[keep][order])
        assert section.crops.shape[1:] == (16, 16, 3)  # 8 µm at 0.5 µm/px
    top = gallery.detection_section(result, slide, which="candidates", n=2)
    assert "top 2 of 6" in top.title and len(top) == 2
    with pytest.raises(ValueError, match="which="):
        gallery.detection_section(result, slide, which="everything")


def test_detection_section_opens_the_result_slide_file_or_says_what_to_pass(sample):
    path = sample("slides/cmu-1-small-region.svs")
    with wsimito.open_slide(path) as slide:
        pts = np.array([[1000.0, 1200.0], [1500.0, 2000.0]])
        result = make_result(slide, pts, [0.8, 0.6], slide_path=path)
        direct = gallery.crops(slide, pts, size_px=40)
    section = gallery.detection_section(result, which="counted", size_um=40 * slide.mpp)
    assert np.array_equal(section.crops, direct)
    in_memory = make_result(dotted_slide(pts, size=(2220, 2967)), pts, [0.8, 0.6])
    with pytest.raises(ValueError, match="pass slide="):
        gallery.detection_section(in_memory)
    with pytest.raises(ValueError, match="pass the slide it was counted on"):
        gallery.detection_section(in_memory, dotted_slide(pts))
