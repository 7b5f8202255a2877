"""Shared fixtures. Sample files come through wsimito's data registry,
pointed at ../shared/data so that nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "WSIMITO_DATA_DIR" not in os.environ and _SHARED.is_dir():
    os.environ["WSIMITO_DATA_DIR"] = str(_SHARED)


@pytest.fixture(scope="session")
def sample():
    """``sample("slides/cmu-1-small-region.svs") -> Path`` through the data registry."""
    from wsimito.data import fetch

    return lambda name: str(fetch(name))
