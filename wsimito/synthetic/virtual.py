"""Virtual slides: a :class:`~wsimito.slide.Slide` whose tiles are rendered on demand.

Nothing is stored: a 100,000 x 80,000 px slide exists as soon as it is made,
and each read renders only the pixels asked for. Levels are 2x apart; coarse
levels are rendered directly at their own resolution (region colours instead
of single nuclei above 2 µm/px), not averaged down from level 0, so a
thumbnail or a tissue mask costs about as much as a few level-0 tiles.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from typing_extensions import override

from ..slide.backend import Backend
from ..slide.slide import Slide
from .artefacts import ArtefactSpec
from .render import Scene
from .stains import StainModel
from .truth import GroundTruth

_LEVEL_FACTOR = 2
_SMALLEST_LEVEL_PX = 512


class VirtualSlideBackend(Backend):
    """Renders a :class:`~wsimito.synthetic.render.Scene` tile by tile; picklable.

    Parameters
    ----------
    scene : Scene
        What to render.
    tile_size : int
        Tile side the backend reports, px (> 0).

    Raises
    ------
    ValueError
        ``tile_size`` is not positive.
    """

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

    @override
    def read_level(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        return self.scene.render(x, y, width, height, self.level_downsamples[level])

    @override
    def tile_size(self, level: int) -> tuple[int, int]:
        return (self._tile, self._tile)

    @override
    def mpp(self) -> tuple[float | None, float | None]:
        return (self.scene.mpp, self.scene.mpp)

    @override
    def reopen_spec(self) -> tuple[type[Backend], tuple[Any, ...], dict[str, Any]]:
        return (type(self), (self.scene,), {"tile_size": self._tile})


class VirtualSlide(Slide):
    """A :class:`~wsimito.slide.Slide` over a virtual backend, with its ground truth.

    Make one with :func:`virtual_slide`.

    Parameters
    ----------
    backend : VirtualSlideBackend
        The renderer.
    mpp : float, optional
        Ignored unless ``force_mpp``: the scene states its resolution.
    force_mpp : bool
        Use ``mpp`` instead of the scene's resolution.
    decoder : {"auto", "direct", "backend"}
        Always the backend's renderer in effect (there is no file).
    """

    @property
    def scene(self) -> Scene:
        """The scene (seed, stain, layout) this slide renders."""
        backend = self._backend
        if not isinstance(backend, VirtualSlideBackend):
            raise TypeError(f"a VirtualSlide renders through a VirtualSlideBackend, not {backend}")
        return backend.scene

    @property
    def truth(self) -> GroundTruth:
        """Every mitotic figure and look-alike of the whole slide (level-0 px)."""
        return self.ground_truth()

    def ground_truth(self, box: tuple[float, float, float, float] | None = None) -> GroundTruth:
        """Give the mitotic figures and look-alikes centred in a box, and its artefacts.

        Only the box is enumerated, so a small box of a huge slide is cheap.

        Parameters
        ----------
        box : tuple of (float, float, float, float), optional
            ``(x, y, w, h)``, level-0 px; the whole slide by default.

        Returns
        -------
        GroundTruth
            Points in level-0 px.
        """
        return self.scene.truth(box)


def virtual_slide(
    width: int,
    height: int,
    *,
    mpp: float = 0.25,
    seed: int = 0,
    stain: str | StainModel = "random",
    tile_size: int = 512,
    artefacts: ArtefactSpec = "none",
    **scene_kwargs: Any,
) -> VirtualSlide:
    """Make a synthetic slide that is rendered on demand.

    Level 0 shows exactly the pixels of :func:`~wsimito.synthetic.make_slide`
    with the same arguments; ``slide.truth`` holds the ground truth, artefacts
    included.

    Parameters
    ----------
    width, height : int
        Size, level-0 px.
    mpp : float
        Level-0 resolution, µm/px.
    seed : int
        Fixes every pixel, point and artefact.
    stain : str or StainModel
        "random" (a preset varied by ``seed``), a preset name or a :class:`StainModel`.
    tile_size : int
        Tile side the slide reports, px.
    artefacts : {"none", "realistic", "heavy"} or Artefacts
        Real-slide artefacts.
    **scene_kwargs : Any
        The other knobs of :func:`wsimito.synthetic.make_slide`
        (``tissue_fraction``, ``mitoses_per_mm2``, ...).

    Returns
    -------
    VirtualSlide
        The slide; nothing is rendered until it is read.

    Raises
    ------
    ValueError
        A knob is out of range.

    Examples
    --------
    >>> from wsimito.synthetic import virtual_slide
    >>> slide = virtual_slide(100_000, 80_000, seed=1)   # instant, nothing rendered yet
    >>> slide.read((50_000, 40_000, 512, 512)).shape
    (512, 512, 3)
    """
    scene = Scene.build(
        width, height, mpp=mpp, seed=seed, stain=stain, artefacts=artefacts, **scene_kwargs
    )
    return VirtualSlide(VirtualSlideBackend(scene, tile_size=tile_size))
