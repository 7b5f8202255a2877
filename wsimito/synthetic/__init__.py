"""Synthetic H&E slides whose every mitotic figure is known.

Procedural tissue (islands on glass, stroma with fibres, tumour nests,
lymphocytes), mitotic figures in their phases and hard look-alikes, rendered
through a Beer-Lambert stain model at any mpp, deterministically for a seed.
Three ways to get pixels, all identical at level 0 for the same arguments:

- :func:`make_slide`: an in-memory image and its :class:`GroundTruth`;
- :func:`write_slide`: a pyramidal SVS or TIFF file, rendered tile by tile;
- :func:`virtual_slide`: a :class:`~wsimito.slide.Slide` rendered on demand.

``artefacts=`` adds what real slides have and detectors mistake for figures:
tissue folds, pen ink, dust and fibres, out-of-focus regions, torn edges, red
blood cells and air bubbles (:class:`Artefacts`, :data:`ARTEFACT_PRESETS`);
the ground truth lists each one with its polygon.
"""

from __future__ import annotations

import numpy as np

from .artefacts import (
    ARTEFACT_KINDS,
    ARTEFACT_PRESETS,
    INK_OD,
    Artefact,
    ArtefactPreset,
    Artefacts,
    ArtefactSpec,
    InkColour,
)
from .render import Scene
from .stains import PRESETS, StainModel, random_stain
from .stats import IMPOSTERS_PER_MITOSIS, MITOTIC_DENSITY_MEAN, sample_mitotic_density
from .truth import GroundTruth
from .virtual import VirtualSlide, VirtualSlideBackend, virtual_slide
from .writer import write_slide

__all__ = [
    "ARTEFACT_KINDS",
    "ARTEFACT_PRESETS",
    "IMPOSTERS_PER_MITOSIS",
    "INK_OD",
    "MITOTIC_DENSITY_MEAN",
    "PRESETS",
    "Artefact",
    "ArtefactPreset",
    "ArtefactSpec",
    "Artefacts",
    "GroundTruth",
    "InkColour",
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
    imposters_per_mm2: float | None = None,
    min_imposters_per_mitosis: int = 0,
    artefacts: ArtefactSpec = "none",
) -> tuple[np.ndarray, GroundTruth]:
    """Render a synthetic H&E image of ``width`` x ``height`` px at ``mpp`` µm/px.

    Parameters
    ----------
    width, height : int
        Size in level-0 px.
    mpp : float
        Resolution in µm/px.
    seed : int
        Fixes every pixel, point and artefact.
    stain : str or StainModel
        "random" (a preset varied by ``seed``), a name in :data:`PRESETS` or a
        :class:`StainModel`.
    tissue_fraction : float
        Share of the slide covered by tissue (the rest is glass); 1.0 for
        tissue everywhere.
    tissue_scale_um : float
        Size of tissue islands (µm, first noise octave).
    tumour_fraction : float
        Share of tissue in tumour nests (the rest is stroma); mitotic figures
        and look-alikes sit in the nests.
    mitoses_per_mm2 : float
        Mean mitotic figures per mm² of tissue (default: the MIDOG++ mean,
        10.3; raise it, up to a few hundred, for training data). 0 makes a
        slide declared mitosis-free (``truth.mitosis_free``).
    imposters_per_mitosis : float
        Look-alikes per figure placed at random in the nests (default:
        MIDOG++, 1.2).
    imposters_per_mm2 : float or None
        Look-alikes per mm² of tissue, instead of
        ``imposters_per_mitosis * mitoses_per_mm2``; the way to put
        look-alikes on mitosis-free slides.
    min_imposters_per_mitosis : int
        Look-alikes placed 18-90 µm around each figure, on top of the others,
        so that the slide has at least this many per figure (0-20; a figure
        that has no room for them is left out).
    artefacts : {"none", "realistic", "heavy"} or Artefacts
        Real-slide artefacts (:data:`ARTEFACT_PRESETS` or an
        :class:`Artefacts`). "none", the default, renders exactly what
        earlier versions did.

    Returns
    -------
    image : numpy.ndarray
        ``(height, width, 3)`` uint8 RGB.
    truth : GroundTruth
        The mitotic figures and look-alikes centred in the image and the
        artefacts on it (level-0 px).

    Raises
    ------
    ValueError
        If a knob is out of range; the message names it.

    Examples
    --------
    >>> image, truth = make_slide(1024, 1024, seed=3, tissue_fraction=1.0, mitoses_per_mm2=200)
    >>> image.shape, truth.mitoses.shape[1]
    ((1024, 1024, 3), 2)
    >>> image, truth = make_slide(1024, 1024, seed=3, artefacts="heavy")
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
        imposters_per_mm2=imposters_per_mm2,
        min_imposters_per_mitosis=min_imposters_per_mitosis,
        artefacts=artefacts,
    )
    return scene.render_image(), scene.truth()
