"""Beam-centre refinement from circular scattering, and its use when a run has no user geometry."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from braggml.classical.centering import refine_beam_center
from braggml.errors import ConfigError
from braggml.pipeline import FindJob, PreparedRun


def _rings(shape=(400, 440), centre=(210.3, 190.8), seed=0) -> np.ndarray:
    rows, cols = np.indices(shape)
    r = np.hypot(rows - centre[0], cols - centre[1])
    expected = 5.0 + 200.0 * np.exp(-r / 80.0)
    for radius in (60.0, 110.0, 150.0):
        expected += 40.0 * np.exp(-((r - radius) ** 2) / (2 * 2.0**2))
    return np.random.default_rng(seed).poisson(expected).astype(np.float32)


def test_refines_an_offset_centre_to_the_rings():
    image = _rings()
    mask = np.zeros(image.shape, bool)
    mask[:, 100:104] = True  # a gap
    centre, before, after = refine_beam_center(image, mask, (222.0, 178.0))
    assert np.hypot(centre[0] - 210.3, centre[1] - 190.8) < 0.5
    assert after > before


def test_flat_noise_keeps_the_stated_centre():
    image = np.random.default_rng(1).poisson(10.0, (300, 300)).astype(np.float32)
    centre, before, after = refine_beam_center(image, None, (150.0, 140.0))
    assert centre == (150.0, 140.0) and after == before


def test_bad_parameters():
    with pytest.raises(ConfigError, match="search_px"):
        refine_beam_center(np.zeros((64, 64)), None, (32, 32), search_px=0)


def test_run_without_geometry_finds_the_beam(tmp_path):
    path = tmp_path / "rings.h5"
    with h5py.File(path, "w") as f:
        f["entry/data/data"] = _rings()[None]
    run = PreparedRun(FindJob(inputs=(str(path),)), warn_without_geometry=False)
    radius = run.geometry.maps.radius_px
    row, col = np.unravel_index(np.argmin(radius), radius.shape)
    assert abs(row - 210) <= 1 and abs(col - 191) <= 1
    fixed = PreparedRun(FindJob(inputs=(str(path),), refine_beam_center=False), warn_without_geometry=False)
    row, col = np.unravel_index(np.argmin(fixed.geometry.maps.radius_px), radius.shape)
    assert (row, col) in {(199, 219), (200, 219), (199, 220), (200, 220)}
