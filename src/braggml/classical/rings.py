"""Ice rings and powder rings: which peaks lie on them.

Ice-Ih rings are recognised from the resolution of each peak (needs a known geometry); any other sharp,
azimuthally continuous ring (powder, kapton, ice with unknown geometry) from a bump in the clipped radial
background profile, which needs no geometry beyond the radius of each pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from ._radial import RadialStats

__all__ = [
    "ICE_RING_D_A",
    "POWDER_RING_FRACTION",
    "ICE_RING_FRACTION",
    "RingEvidence",
    "on_ice_rings",
    "ring_evidence",
    "ring_levels",
    "ring_evidence_from_counts",
    "RingLevels",
    "powder_ring_bins",
    "peaks_on_rings",
]

#: Share of an annulus that must stand out for any ring to reject peaks.
POWDER_RING_FRACTION = 0.4
#: Share of an annulus at an ice-ring resolution that shows the ice ring is present (``ice_rings="auto"``).
ICE_RING_FRACTION = 0.3

#: A radius is raised when its clipped background stands this many background sigmas above the neighbouring
#: radii (weighted mean over the panels).
RING_MIN_EXCESS = 0.25

#: d-spacings (Angstrom) of the strongest hexagonal ice (Ih) powder rings.
ICE_RING_D_A: tuple[float, ...] = (3.897, 3.669, 3.441, 2.671, 2.249, 2.072, 1.948, 1.918, 1.883, 1.721)


def on_ice_rings(
    resolution_a: NDArray, width_inv_a: float, rings_a: tuple[float, ...] = ICE_RING_D_A
) -> NDArray[np.bool_]:
    """True where a resolution lies within ``width_inv_a`` (in 1/d, inverse Angstrom) of an ice ring.

    Examples
    --------
    >>> on_ice_rings(np.array([3.67, 3.0, np.nan]), 0.004).tolist()
    [True, False, False]
    """
    d = np.asarray(resolution_a, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
    rings = 1.0 / np.asarray(rings_a, dtype=np.float64)
    near = np.abs(inv[..., None] - rings) <= width_inv_a
    return np.any(near, axis=-1) & np.isfinite(inv)


@numba.njit(cache=True, nogil=True)
def _elevated_counts(data, good, key, key_radius, level, n_r):  # pragma: no cover - compiled
    above = np.zeros(n_r, np.int64)
    total = np.zeros(n_r, np.int64)
    h, w = data.shape
    for r in range(h):
        for c in range(r % 2, w, 2):  # every other pixel: the fractions need no more
            if not good[r, c]:
                continue
            k = key[r, c]
            b = key_radius[k]
            total[b] += 1
            if data[r, c] > level[k]:
                above[b] += 1
    return above, total


@numba.njit(cache=True, nogil=True)
def _running_baselines(values, ok, half):  # pragma: no cover - compiled
    """For each row, the running median over ``2 * half + 1`` of its ``ok`` entries (edges repeat
    the first and last entry, as ``scipy.ndimage.median_filter(mode="nearest")``), NaN elsewhere;
    rows with fewer than three ``ok`` entries are all NaN."""
    n_rows, n_cols = values.shape
    out = np.full((n_rows, n_cols), np.nan)
    size = 2 * half + 1
    x = np.empty(n_cols)
    where = np.empty(n_cols, np.int64)
    window = np.empty(size)
    for row in range(n_rows):
        n = 0
        for j in range(n_cols):
            if ok[row, j]:
                x[n] = values[row, j]
                where[n] = j
                n += 1
        if n < 3:
            continue
        # a sorted window slides along the row: one value leaves and one enters at each step
        for j in range(size):
            window[j] = x[min(max(j - half, 0), n - 1)]
        window.sort()
        out[row, where[0]] = window[half]
        for i in range(1, n):
            leaving = x[min(max(i - 1 - half, 0), n - 1)]
            entering = x[min(i + half, n - 1)]
            if leaving != entering:
                p = 0
                while window[p] != leaving:
                    p += 1
                if entering > leaving:
                    while p + 1 < size and window[p + 1] < entering:
                        window[p] = window[p + 1]
                        p += 1
                else:
                    while p > 0 and window[p - 1] > entering:
                        window[p] = window[p - 1]
                        p -= 1
                window[p] = entering
            out[row, where[i]] = window[half]
    return out


@dataclass(frozen=True)
class RingEvidence:
    """How ring-like each radius of a frame is.

    Attributes
    ----------
    fraction : (R,) float ndarray
        Share of the good pixels at each rounded radius (pixels) that stand above the neighbouring
        radii by the chosen contrast.
    raised : (R,) bool ndarray
        Whether the clipped background at that radius stands :data:`RING_MIN_EXCESS` background sigmas above
        the neighbouring radii.
    """

    fraction: NDArray[np.float64]
    raised: NDArray[np.bool_]

    def on_ring(self, min_fraction: float, widen_px: int = 2) -> NDArray[np.bool_]:
        """Radii where more than ``min_fraction`` of the pixels are elevated, widened by ``widen_px``."""
        ring = self.raised & (self.fraction > min_fraction)
        if widen_px > 0:
            ring = ndimage.binary_dilation(ring, iterations=widen_px)
        return ring


def ring_evidence(
    data: NDArray[np.float32],
    good: NDArray[np.bool_],
    stats: RadialStats,
    *,
    contrast: float,
    half_window_px: int = 12,
    min_count: int = 20,
) -> RingEvidence:
    """Measure, for every radius, how much of the annulus stands above the neighbouring radii.

    For every statistics bin (radius, and panel when the statistics are per panel) the baseline is the
    running median, over ``+-half_window_px`` bins of the same panel, of the clipped background, and
    the noise the running median of the clipped sigma; panel offsets therefore cancel. A pixel is
    elevated above ``baseline + contrast * noise`` (every other pixel is looked at). Bragg spots cover a
    small part of any annulus; continuous powder, ice or kapton rings (full or half) cover much of it.

    Parameters
    ----------
    data : (H, W) float32 ndarray
    good : (H, W) bool ndarray
    stats : RadialStats
        Clipped statistics of the frame (per panel or not).
    contrast : float
        Height, in units of the background noise, above which a pixel counts as elevated.
    """
    level = ring_levels(stats, contrast=contrast, half_window_px=half_window_px, min_count=min_count)
    n_r = int(stats.radius_bin.max()) + 1 if stats.radius_bin.size else 1
    above, total = _elevated_counts(data, good, stats.bin_index, stats.radius_bin, level.level, n_r)
    return ring_evidence_from_counts(level, above, total)


@dataclass(frozen=True)
class RingLevels:
    """Per-bin quantities of :func:`ring_evidence` known before looking at the pixels.

    Attributes
    ----------
    level : (B,) float32 ndarray
        Value above which a pixel of the bin counts as elevated (infinite where there is no baseline).
    raised : (R,) bool ndarray
        Whether the clipped background of each radius group stands :data:`RING_MIN_EXCESS` sigmas above the
        neighbouring radii.
    radius_group : (R0,) int64 ndarray
        Radius group of each rounded radius (from the statistics).
    """

    level: NDArray[np.float32]
    raised: NDArray[np.bool_]
    radius_group: NDArray[np.int64]


def ring_levels(stats: RadialStats, *, contrast: float, half_window_px: int = 12, min_count: int = 20) -> RingLevels:
    """The per-bin levels and raised radii of :func:`ring_evidence` (same parameters)."""
    n_r = int(stats.radius_bin.max()) + 1 if stats.radius_bin.size else 1
    n_rows = stats.offset.size // n_r
    offset = stats.offset.astype(np.float64).reshape(n_rows, n_r)
    sigma = stats.sigma.astype(np.float64).reshape(n_rows, n_r)
    count = stats.count.reshape(n_rows, n_r)
    ok = count >= min_count
    baseline = _running_baselines(offset, ok, int(half_window_px))
    noise = _running_baselines(sigma, ok, int(half_window_px))
    usable = np.isfinite(baseline)
    scale = np.maximum(np.nan_to_num(noise), 1e-6 * np.maximum(np.abs(np.nan_to_num(baseline)), 1.0))
    level = np.where(usable, baseline + contrast * scale, np.inf).ravel().astype(np.float32)
    weight = np.where(usable, count, 0).astype(np.float64)
    excess = np.where(usable, (offset - np.nan_to_num(baseline)) / scale, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_excess = (weight * excess).sum(axis=0) / weight.sum(axis=0)
    raised = (weight.sum(axis=0) >= min_count) & (np.nan_to_num(mean_excess) >= RING_MIN_EXCESS)
    return RingLevels(level=level, raised=raised, radius_group=stats.radius_group)


def ring_evidence_from_counts(levels: RingLevels, above: NDArray[np.int64], total: NDArray[np.int64]) -> RingEvidence:
    """:class:`RingEvidence` from the levels and, per radius group, the looked-at pixels above the
    level and all looked-at pixels."""
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(total > 0, above / np.maximum(total, 1), 0.0)
    return RingEvidence(fraction=fraction[levels.radius_group], raised=levels.raised[levels.radius_group])


def powder_ring_bins(
    data: NDArray[np.float32],
    good: NDArray[np.bool_],
    stats: RadialStats,
    *,
    contrast: float,
    min_fraction: float = POWDER_RING_FRACTION,
) -> NDArray[np.bool_]:
    """Radii lying on a ring: more than ``min_fraction`` of their pixels stand above the neighbouring
    radii (see :func:`ring_evidence`); indexed by the rounded radius in pixels, widened by two pixels."""
    return ring_evidence(data, good, stats, contrast=contrast).on_ring(min_fraction)


def peaks_on_rings(
    radius_px: NDArray[np.floating],
    resolution_a: NDArray[np.floating] | None,
    rings: RingEvidence | None,
    *,
    reject_powder_rings: bool,
    ice_rings: str,
    ice_ring_width_inv_a: float,
) -> tuple[NDArray[np.bool_], NDArray[np.bool_], NDArray[np.bool_]]:
    """Which peaks the ring rules reject, shared by every finder.

    Parameters
    ----------
    radius_px, resolution_a : (P,) ndarrays
        Distance from the beam and resolution at each peak (``resolution_a`` None without a geometry).
    rings : RingEvidence or None
        The frame's ring evidence (None: no powder-ring rejection, and ``"auto"`` rejects no ice).
    reject_powder_rings : bool
    ice_rings : {"reject", "auto", "flag", "off"}
    ice_ring_width_inv_a : float

    Returns
    -------
    on_powder : (P,) bool ndarray
        On a ring more than :data:`POWDER_RING_FRACTION` of whose annulus stands out (when rejected).
    ice_rejected : (P,) bool ndarray
        At an ice-Ih resolution that is rejected: every ice ring with ``"reject"``, the ice rings the frame
        shows (more than :data:`ICE_RING_FRACTION`) with ``"auto"``.
    at_ice : (P,) bool ndarray
        At any ice-Ih resolution (unless ``"off"`` or without a geometry).
    """
    n = np.asarray(radius_px).size
    rb = np.rint(np.asarray(radius_px, np.float64)).astype(np.int64)
    on_powder = np.zeros(n, bool)
    if rings is not None and reject_powder_rings:
        ring = rings.on_ring(POWDER_RING_FRACTION)
        on_powder = ring[np.clip(rb, 0, ring.size - 1)]
    at_ice = np.zeros(n, bool)
    ice_rejected = np.zeros(n, bool)
    if ice_rings != "off" and resolution_a is not None:
        at_ice = on_ice_rings(resolution_a, ice_ring_width_inv_a)
        if ice_rings == "reject":
            ice_rejected = at_ice
        elif ice_rings == "auto" and rings is not None:
            present = rings.on_ring(ICE_RING_FRACTION)
            ice_rejected = at_ice & present[np.clip(rb, 0, present.size - 1)]
    return on_powder, ice_rejected, at_ice
