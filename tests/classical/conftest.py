"""Fixtures of the classical-finder tests; puts this folder on the path for ``classical_synthetic``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

FINDERS = ["threshold", "peakfinder8", "dispersion", "dispersion_extended"]


@pytest.fixture(params=FINDERS)
def finder_name(request: pytest.FixtureRequest) -> str:
    return request.param
