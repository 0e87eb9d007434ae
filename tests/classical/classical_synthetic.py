"""Synthetic frames and matching helpers for the classical-finder tests."""

from __future__ import annotations

import numpy as np

from braggml.geometry import PixelMaps

FINDERS = ["threshold", "peakfinder8", "dispersion", "dispersion_extended"]


def gaussian_spots(
    shape: tuple[int, int],
    centres: list[tuple[float, float]],
    *,
    amplitude: float = 200.0,
    sigma_px: float = 1.0,
    background: float = 10.0,
) -> np.ndarray:
    """A float64 frame: constant background plus pixel-sampled Gaussian spots."""
    rows = np.arange(shape[0])[:, None]
    cols = np.arange(shape[1])[None, :]
    image = np.full(shape, background, np.float64)
    for r, c in centres:
        image += amplitude * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * sigma_px**2))
    return image


def grid_centres(shape: tuple[int, int], step: int = 32, seed: int = 0) -> list[tuple[float, float]]:
    """Spot centres on a grid with random sub-pixel offsets, away from the border."""
    rng = np.random.default_rng(seed)
    out = []
    for r in range(step // 2, shape[0] - step // 2 + 1, step):
        for c in range(step // 2, shape[1] - step // 2 + 1, step):
            out.append((r + rng.uniform(-0.5, 0.5), c + rng.uniform(-0.5, 0.5)))
    return out


def match(found_rows, found_cols, centres, tol=1.0):
    """For each true centre, the distance to the nearest found peak."""
    found = np.column_stack([found_rows, found_cols])
    dist = []
    for r, c in centres:
        if len(found) == 0:
            dist.append(np.inf)
        else:
            dist.append(float(np.min(np.hypot(found[:, 0] - r, found[:, 1] - c))))
    return np.array(dist)


def two_panel_maps(shape: tuple[int, int], split_col: int) -> PixelMaps:
    """Two panels side by side (columns < split_col are panel 0)."""
    maps = PixelMaps.fallback(shape)
    panel = np.zeros(shape, np.int32)
    panel[:, split_col:] = 1
    return PixelMaps(panel_id=panel, radius_px=maps.radius_px, mask=np.zeros(shape, bool), known=True)


def elliptical_ring(
    shape: tuple[int, int], radius_px: float, wander_px: float, *, height: float = 25.0, width_px: float = 0.8
) -> tuple[np.ndarray, np.ndarray]:
    """A narrow ring about the frame's centre whose radius goes as ``radius_px + wander_px * cos(2 azimuth)``,
    as on a tilted detector: the float64 ring and the ring's radius at each pixel's azimuth."""
    rows, cols = np.indices(shape, dtype=np.float64)
    dr, dc = rows - (shape[0] - 1) / 2, cols - (shape[1] - 1) / 2
    ring_radius = radius_px + wander_px * np.cos(2 * np.arctan2(dr, dc))
    return height * np.exp(-((np.hypot(dr, dc) - ring_radius) ** 2) / (2 * width_px**2)), ring_radius


def on_ellipse(shape: tuple[int, int], radius_px: float, wander_px: float, azimuths) -> list[tuple[float, float]]:
    """Points (row, col) of the ring of :func:`elliptical_ring` at the given azimuths (radians)."""
    centre = ((shape[0] - 1) / 2, (shape[1] - 1) / 2)
    radii = [radius_px + wander_px * np.cos(2 * a) for a in azimuths]
    return [(centre[0] + r * np.sin(a), centre[1] + r * np.cos(a)) for r, a in zip(radii, azimuths)]
