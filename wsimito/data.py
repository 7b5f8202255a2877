"""The sample files used by tests, examples and benchmarks (:data:`SAMPLES`).

Files are looked up by name and checked by SHA-256. (Detector weights have a
registry of their own: :func:`wsimito.models.list_detectors`.) Set the environment
variable ``WSIMITO_DATA_DIR`` to a folder holding them (the development
checkout points it at ``../shared/data``) and nothing is downloaded; otherwise
files with a public URL are fetched once with pooch into the user cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pooch

from .errors import WsimitoError

_OPENSLIDE = "https://openslide.cs.cmu.edu/download/openslide-testdata"
_OSPY = "https://raw.githubusercontent.com/openslide/openslide-python/main/tests"
_HISTOLAB = "https://raw.githubusercontent.com/histolab/histolab/master/tests/fixtures"

# name -> (sha256, public URL or None)
SAMPLES: dict[str, tuple[str, str | None]] = {
    "slides/cmu-1-small-region.svs": (
        "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7",
        f"{_OPENSLIDE}/Aperio/CMU-1-Small-Region.svs",
    ),
    "slides/tcga-cr-7395-01a-01-ts1.svs": (
        "77da93f125bfc55570b9731af309b81904dc2648722103d7c3bf5db4f8a6a365",
        f"{_HISTOLAB}/svs-images/tcga-cr-7395-01a-01-ts1.svs",
    ),
    "slides/kidney-48-5.tif": (
        "2dbe184b45f25624d6fa533b781867b52d0fa8f82741a3f0799dd6738f12c681",
        f"{_HISTOLAB}/tiff-images/kidney-48-5.tiff",
    ),
    "slides/broken.svs": (
        "26828c763a5ff824a68c6a1b1765dbc19afd5d12f1c12d856b8462741f461d37",
        f"{_HISTOLAB}/svs-images/broken.svs",
    ),
    "slides/small.svs": (
        "01ab0fea0c0bf62e67e22f2f754c4be40c16a286d112584a7edd6e2e49014122",
        f"{_OSPY}/small.svs",
    ),
    "slides/boxes.tiff": (
        "785517d0bcd91745f84faf85c7afa9541aac051ee78fdcd668749c1f506183fc",
        f"{_OSPY}/boxes.tiff",
    ),
    "slides/boxes_0.dcm": (
        "551530cb1cb6ad2319d7d590349b154dd4ac3269926e8ff69ebcd292816a7ddc",
        f"{_OSPY}/boxes_0.dcm",
    ),
    "slides/boxes_1.dcm": (
        "77f17daaa1cc47987109667547906ddd70a705929b8e8266d2c652e2e8b514cc",
        f"{_OSPY}/boxes_1.dcm",
    ),
    "slides/unopenable.tiff": (
        "46e6c28ae5a050ba8c17bc0dc91f6bba87b1f9b831da283b1e717e21af6c6af6",
        f"{_OSPY}/unopenable.tiff",
    ),
    "slides/unreadable.svs": (
        "393e1995e46ec5c2ea3f1ec35dc8ccb58fb9e2a4fcd0d9077b93db200226df75",
        f"{_OSPY}/unreadable.svs",
    ),
    "images/he-target-tiatoolbox.png": (
        "23c1e65fb65f2c5ba6aba2ad958181860e196b280a025f35e91296ba8ba51b6c",
        "https://raw.githubusercontent.com/TissueImageAnalytics/tiatoolbox/develop/tiatoolbox/data/target_image.png",
    ),
    "images/ihc-skimage.png": (
        "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
        "https://raw.githubusercontent.com/scikit-image/scikit-image/main/skimage/data/ihc.png",
    ),
    "annotations/MIDOGpp.json": (
        "8c87ab4276eb11f6b6b5ac0d956b89dad7568a5474e0904b653d54dc68091f47",
        "https://raw.githubusercontent.com/DeepMicroscopy/MIDOGpp/main/databases/MIDOG%2B%2B.json",
    ),
    "annotations/MIDOGpp-split.csv": (
        "211140f590199d50ee98d923ddc923c382c3a5543ea3b430612c3624570b26b8",
        "https://raw.githubusercontent.com/DeepMicroscopy/MIDOGpp/main/datasets_xvalidation.csv",
    ),
}


class DataNotFoundError(WsimitoError, FileNotFoundError):
    """A sample file is neither in WSIMITO_DATA_DIR nor downloadable."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_dir() -> Path | None:
    """The local folder named by ``WSIMITO_DATA_DIR``, if set."""
    value = os.environ.get("WSIMITO_DATA_DIR")
    return Path(value) if value else None


def fetch(name: str, *, verify: bool = True) -> Path:
    """Return a local path to the sample file ``name`` (a key of :data:`SAMPLES`).

    Looks in ``WSIMITO_DATA_DIR`` first (no download), then fetches the public
    URL with pooch into the user cache.

    Parameters
    ----------
    name : str
        E.g. ``"slides/cmu-1-small-region.svs"``.
    verify : bool
        Check the SHA-256 of a file found in ``WSIMITO_DATA_DIR``.

    Returns
    -------
    pathlib.Path
        The local file.

    Raises
    ------
    DataNotFoundError
        ``name`` is unknown, the file is neither local nor downloadable, or its
        checksum does not match.
    """
    if name not in SAMPLES:
        raise DataNotFoundError(f"{name!r} is not a registered sample; known: {sorted(SAMPLES)}")
    sha, url = SAMPLES[name]
    local = data_dir()
    if local is not None and (local / name).is_file():
        path = local / name
        if verify and _sha256(path) != sha:
            raise DataNotFoundError(
                f"{path} does not have the registered SHA-256 {sha}; restore the original file"
            )
        return path
    if url is None:
        raise DataNotFoundError(
            f"{name} has no public URL; set WSIMITO_DATA_DIR to a folder that holds it"
        )
    try:
        return Path(
            pooch.retrieve(
                url,
                known_hash=f"sha256:{sha}",
                path=pooch.os_cache("wsimito"),
                fname=name.replace("/", "__"),
                progressbar=False,
            )
        )
    except Exception as exc:  # network errors, hash mismatch
        raise DataNotFoundError(
            f"could not fetch {name} from {url} ({exc}); download it by hand and set "
            "WSIMITO_DATA_DIR to its folder"
        ) from exc
