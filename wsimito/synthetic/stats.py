"""Mitotic-figure and look-alike densities measured on MIDOG++, stored as constants.

The numbers come from the MIDOG++ annotation database (``annotations/MIDOGpp.json``,
553 image entries of 503 cases, 7 tumour types; 11,937 mitotic figures and
14,349 non-mitotic look-alikes). They were computed once with this script and
copied here; the library never reads that file::

    import collections, json
    import numpy as np
    db = json.load(open("MIDOGpp.json"))
    mit, imp = collections.Counter(), collections.Counter()
    for a in db["annotations"]:
        (mit if a["category_id"] == 1 else imp)[a["image_id"]] += 1
    area = {im["id"]: im["width"] * im["height"] * (0.25 / 1000) ** 2 for im in db["images"]}
    dens = np.array([mit[i] / area[i] for i in area])           # figures per mm²
    print(np.percentile(dens, [0, 10, 25, 50, 75, 90, 100]), dens.mean())
    print(sum(imp.values()) / sum(mit.values()))               # look-alikes per figure

Areas assume 0.25 µm/px for every image (the MIDOG scanners range from 0.23
to 0.26 µm/px, so densities are within about 15 %). Each image is one
annotated region of about 2 to 2.4 mm² (roughly 10 high-power fields).
"""

from __future__ import annotations

import numpy as np

#: Mean mitotic figures per mm² over all MIDOG++ regions.
MITOTIC_DENSITY_MEAN = 10.34
#: Median mitotic figures per mm² over MIDOG++ regions.
MITOTIC_DENSITY_MEDIAN = 3.59
#: Percentiles (0, 10, 25, 50, 75, 90, 100) of mitotic figures per mm² per region.
MITOTIC_DENSITY_PERCENTILES = {0: 0.0, 10: 0.0, 25: 1.23, 50: 3.59, 75: 9.86, 90: 28.54, 100: 111.9}
#: Mean non-mitotic look-alikes ("imposters") per mm² over MIDOG++ regions.
IMPOSTER_DENSITY_MEAN = 12.22
#: Look-alikes per mitotic figure, pooled over MIDOG++ (14,349 / 11,937).
IMPOSTERS_PER_MITOSIS = 1.202

#: Per tumour type: (mitotic figures per mm², pooled; look-alikes per figure).
TUMOUR_TYPES = {
    "canine cutaneous mast cell tumor": (23.89, 0.59),
    "canine lung cancer": (9.58, 1.11),
    "canine lymphosarcoma": (35.50, 1.08),
    "canine soft tissue sarcoma": (6.34, 1.85),
    "human breast cancer": (4.01, 1.58),
    "human melanoma": (9.62, 0.80),
    "human neuroendocrine tumor": (4.76, 2.76),
}


def sample_mitotic_density(seed: int) -> float:
    """Draw a mitotic density from the MIDOG++ per-region distribution.

    Interpolates the stored percentiles linearly at a uniform quantile drawn
    from ``seed``; about 10 % of draws are 0, as in MIDOG++.

    Parameters
    ----------
    seed : int
        Fixes the draw.

    Returns
    -------
    float
        Mitotic figures per mm² of tissue (>= 0).
    """
    q = np.random.default_rng(seed).uniform(0, 100)
    keys = np.array(sorted(MITOTIC_DENSITY_PERCENTILES), dtype=float)
    values = np.array([MITOTIC_DENSITY_PERCENTILES[k] for k in sorted(MITOTIC_DENSITY_PERCENTILES)])
    return float(np.interp(q, keys, values))
