"""What bundled detectors say about themselves, and the warning shown for them.

Kept apart from the networks so that the command line, results and exporters
can use it without importing torch models.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEMO_METADATA = {
    "training_data": "synthetic H&E from wsimito.synthetic (every mitotic figure synthetic); "
    "real H&E only as negatives: two sample images assumed to hold no mitotic figures",
    "intended_use": "demonstration only; trained on synthetic data; not for diagnostic use",
}

MIDOG21_METADATA = {
    "training_data": "MIDOG 2021 training set (4 scanners, human breast cancer)",
    "intended_use": "research; MIDOG 2021 reference algorithm (Wilm, Breininger, Aubreville)",
    "source": "https://github.com/DeepMicroscopy/MIDOG_reference_docker",
}


def trained_on_synthetic(metadata: Mapping[str, Any]) -> bool:
    """Tell whether a detector learned from synthetic data, from its metadata.

    Parameters
    ----------
    metadata : Mapping[str, Any]
        The detector's metadata.

    Returns
    -------
    bool
        ``True`` when ``metadata["training_data"]`` mentions synthetic data.
    """
    return "synthetic" in str(metadata.get("training_data", "")).lower()


def detector_note(metadata: Mapping[str, Any]) -> str:
    """Write a one-line warning for detectors trained on synthetic data or not for diagnosis.

    Parameters
    ----------
    metadata : Mapping[str, Any]
        The detector's metadata.

    Returns
    -------
    str
        The warning; empty when there is nothing to say.

    Examples
    --------
    >>> from wsimito.models.metadata import DEMO_METADATA, detector_note
    >>> detector_note(DEMO_METADATA)  # doctest: +ELLIPSIS
    'This detector learned mitotic figures from synthetic data only. Intended use: ...'
    """
    parts = []
    if trained_on_synthetic(metadata):
        parts.append("This detector learned mitotic figures from synthetic data only.")
    use = metadata.get("intended_use")
    if use:
        parts.append(f"Intended use: {use}.")
    return " ".join(parts)
