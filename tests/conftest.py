"""Shared fixtures. Sample files come through wsimito's data registry,
pointed at ../shared/data so that nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _sample_data_dir():
    """Point wsimito's data registry at ../shared/data for the session (unless already set)."""
    if "WSIMITO_DATA_DIR" in os.environ or not _SHARED.is_dir():
        yield
        return
    os.environ["WSIMITO_DATA_DIR"] = str(_SHARED)
    try:
        yield
    finally:
        os.environ.pop("WSIMITO_DATA_DIR", None)


@pytest.fixture(scope="session")
def sample():
    """``sample("slides/cmu-1-small-region.svs") -> Path`` through the data registry."""
    from wsimito.data import fetch

    return lambda name: str(fetch(name))
