"""Virtual slides: a :class:`~wsimito.slide.Slide` whose tiles are rendered on demand.

Nothing is stored: a 100,000 x 80,000 px slide exists as soon as it is made,
and each read renders only the pixels asked for. Levels are 2x apart; coarse
levels are rendered directly at their own resolution (region colours instead
of single nuclei above 2 µm/px), not averaged down from level 0, so a
thumbnail or a tissue mask costs about as much as a few level-0 tiles.
"""

from __future__ import annotations

import math

import numpy as np

from ..slide.backend import Backend
from ..slide.slide import Slide
from .artefacts import ArtefactSpec
from .render import Scene
from .truth import GroundTruth

_LEVEL_FACTOR = 2
_SMALLEST_LEVEL_PX = 512


class VirtualSlideBackend(Backend):
    """Renders a :class:`~wsimito.synthetic.render.Scene` tile by tile; picklable."""

    name = "virtual"

    def __init__(self, scene: Scene, tile_size: int = 512) -> None:
        if tile_size <= 0:
            raise ValueError(f"tile_size must be a positive number of px, got {tile_size!r}")
        self.source = scene
        self.scene = scene
        self._tile = int(tile_size)
        dims, downs = [(scene.width, scene.height)], [1.0]
        while max(dims[-1]) > _SMALLEST_LEVEL_PX:
            ds = downs[-1] * _LEVEL_FACTOR
            dims.append((math.ceil(scene.width / ds), math.ceil(scene.height / ds)))
            downs.append(ds)
        self.level_dimensions = tuple(dims)
        self.level_downsamples = tuple(downs)
        self.properties = {
            "openslide.vendor": "wsimito-synthetic",
            "openslide.mpp-x": repr(scene.mpp),
            "openslide.mpp-y": repr(scene.mpp),
            "wsimito.synthetic.seed": str(scene.seed),
            "wsimito.synthetic.stain": scene.stain.name,
        }
        if scene.layout.artefacts is not None:
            self.properties["wsimito.synthetic.artefacts"] = repr(scene.layout.artefacts)

    def read_level(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        return self.scene.render(x, y, width, height, self.level_downsamples[level])

    def tile_size(self, level: int) -> tuple[int, int]:
        return (self._tile, self._tile)

    def mpp(self) -> tuple[float | None, float | None]:
        return (self.scene.mpp, self.scene.mpp)

    def reopen_spec(self) -> tuple[type[Backend], tuple, dict]:
        return (type(self), (self.scene,), {"tile_size": self._tile})


class VirtualSlide(Slide):
    """A :class:`~wsimito.slide.Slide` over a virtual backend, with its ground truth."""

    @property
    def scene(self) -> Scene:
        """The scene (seed, stain, layout) this slide renders."""
        return self._backend.scene

    @property
    def truth(self) -> GroundTruth:
        """Every mitotic figure and look-alike of the whole slide (level-0 px)."""
        return self.ground_truth()

    def ground_truth(self, box: tuple[float, float, float, float] | None = None) -> GroundTruth:
        """Mitotic figures and look-alikes centred in the level-0 box ``(x, y, w, h)`` px.

        Only the box is enumerated, so a small box of a huge slide is cheap.
        """
        return self.scene.truth(box)


def virtual_slide(
    width: int,
    height: int,
    *,
    mpp: float = 0.25,
    seed: int = 0,
    stain: str = "random",
    tile_size: int = 512,
    artefacts: ArtefactSpec = "none",
    **scene_kwargs,
) -> VirtualSlide:
    """A synthetic slide of ``width`` x ``height`` level-0 px at ``mpp`` µm/px, rendered on demand.

    ``scene_kwargs`` are the knobs of :func:`wsimito.synthetic.make_slide`
    (``tissue_fraction``, ``mitoses_per_mm2``, ...). ``artefacts``: "none",
    "realistic", "heavy" or an :class:`~wsimito.synthetic.Artefacts`. Level 0
    shows exactly the pixels of ``make_slide`` with the same arguments;
    ``slide.truth`` holds the ground truth, artefacts included.

    >>> slide = virtual_slide(100_000, 80_000, seed=1)   # instant, nothing rendered yet
    >>> slide.read((50_000, 40_000, 512, 512)).shape
    (512, 512, 3)
    """
    scene = Scene.build(
        width, height, mpp=mpp, seed=seed, stain=stain, artefacts=artefacts, **scene_kwargs
    )
    return VirtualSlide(VirtualSlideBackend(scene, tile_size=tile_size))
