"""Fixtures of the parallel tests; puts this folder on the path for ``parallel_frames``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from parallel_frames import write_cxi  # noqa: E402


@pytest.fixture()
def run_files(tmp_path: Path) -> list[Path]:
    """Two CXI files: 13 and 11 frames."""
    return [write_cxi(tmp_path / "run_a.cxi", 13), write_cxi(tmp_path / "run_b.cxi", 11, first=13)]
