"""Shared fixtures: the real detector frames beside the checkout (tests using them skip when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """``../shared/data/real``; the test is skipped when that folder is absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real detector frames not available at {REAL_DATA}")
    return REAL_DATA
