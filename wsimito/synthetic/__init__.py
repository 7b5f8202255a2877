"""Synthetic H&E slides whose every mitotic figure is known.

Procedural tissue (islands on glass, stroma with fibres, tumour nests,
lymphocytes), mitotic figures in their phases and hard look-alikes, rendered
through a Beer-Lambert stain model at any mpp, deterministically for a seed.
Three ways to get pixels, all identical at level 0 for the same arguments:

- :func:`make_slide`: an in-memory image and its :class:`GroundTruth`;
- :func:`write_slide`: a pyramidal SVS or TIFF file, rendered tile by tile;
- :func:`virtual_slide`: a :class:`~wsimito.slide.Slide` rendered on demand.
"""

from __future__ import annotations

import numpy as np

from .render import Scene
from .stains import PRESETS, StainModel, random_stain
from .stats import IMPOSTERS_PER_MITOSIS, MITOTIC_DENSITY_MEAN, sample_mitotic_density
from .truth import GroundTruth
from .virtual import VirtualSlide, VirtualSlideBackend, virtual_slide
from .writer import write_slide

__all__ = [
    "IMPOSTERS_PER_MITOSIS",
    "MITOTIC_DENSITY_MEAN",
    "PRESETS",
    "GroundTruth",
    "Scene",
    "StainModel",
    "VirtualSlide",
    "VirtualSlideBackend",
    "make_slide",
    "random_stain",
    "sample_mitotic_density",
    "virtual_slide",
    "write_slide",
]


def make_slide(
    width: int,
    height: int,
    *,
    mpp: float = 0.25,
    seed: int = 0,
    stain: str | StainModel = "random",
    tissue_fraction: float = 0.45,
    tissue_scale_um: float = 1500.0,
    tumour_fraction: float = 0.55,
    mitoses_per_mm2: float = MITOTIC_DENSITY_MEAN,
    imposters_per_mitosis: float = IMPOSTERS_PER_MITOSIS,
) -> tuple[np.ndarray, GroundTruth]:
    """Render a synthetic H&E image of ``width`` x ``height`` px at ``mpp`` µm/px.

    Returns ``(image, truth)``: ``(height, width, 3)`` uint8 RGB and the
    mitotic figures and look-alikes centred in it (level-0 px).

    ``stain``: "random" (a preset varied by ``seed``), a name in
    :data:`PRESETS` or a :class:`StainModel`. ``tissue_fraction``: share of the
    slide covered by tissue (the rest is glass); 1.0 for tissue everywhere.
    ``tissue_scale_um``: size of tissue islands (µm, first noise octave).
    ``tumour_fraction``: share of tissue in tumour nests (the rest is stroma);
    mitotic figures and look-alikes sit in the nests. ``mitoses_per_mm2``:
    mean mitotic figures per mm² of tissue (default: the MIDOG++ mean, 10.3;
    raise it, up to a few hundred, for training data).
    ``imposters_per_mitosis``: look-alikes per figure (default: MIDOG++, 1.2).

    >>> image, truth = make_slide(1024, 1024, seed=3, tissue_fraction=1.0, mitoses_per_mm2=200)
    >>> image.shape, truth.mitoses.shape[1]
    ((1024, 1024, 3), 2)
    """
    scene = Scene.build(
        width,
        height,
        mpp=mpp,
        seed=seed,
        stain=stain,
        tissue_fraction=tissue_fraction,
        tissue_scale_um=tissue_scale_um,
        tumour_fraction=tumour_fraction,
        mitoses_per_mm2=mitoses_per_mm2,
        imposters_per_mitosis=imposters_per_mitosis,
    )
    return scene.render_image(), scene.truth()
