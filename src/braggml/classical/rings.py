"""Ice rings and powder rings: which peaks lie on them.

Ice-Ih rings are recognised from the resolution of each peak (needs a known geometry); any other sharp,
azimuthally continuous ring (powder, kapton, ice with unknown geometry) from a bump in the clipped radial
background profile, which needs no geometry beyond the radius of each pixel. A ring is looked for in whole
annuli and in azimuthal sectors: on a tilted detector, or about a beam centre a fraction of a pixel off, a
ring is an ellipse whose radius changes around the annulus but hardly within a sector.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numba
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from ._radial import RadialStats

__all__ = [
    "ICE_RING_D_A",
    "POWDER_RING_FRACTION",
    "ICE_RING_FRACTION",
    "RING_SECTORS",
    "SECTOR_SUPPORT",
    "SECTOR_WANDER_PX",
    "SECTOR_MIN_PIXELS",
    "SECTOR_MIN_ARC_PX",
    "SECTOR_MIN_STANDING",
    "azimuth_sectors",
    "RingEvidence",
    "on_ice_rings",
    "ring_evidence",
    "ring_levels",
    "ring_evidence_from_counts",
    "sector_counts",
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

#: Azimuthal sectors in which the ring test is repeated.
RING_SECTORS = 16
#: Share of the sectors holding pixels near a radius in which a ring must stand out for it to count.
SECTOR_SUPPORT = 0.5
#: How far (pixels) a ring's radius may move from one sector to another (ellipse, centre error).
SECTOR_WANDER_PX = 3
#: Looked-at pixels a sector needs at a radius for its fraction to count.
SECTOR_MIN_PIXELS = 8
#: Shortest arc (pixels) of a sector for the sector test, so that one Bragg spot covers a small part of it
#: (with 16 sectors, radii from 102 pixels).
SECTOR_MIN_ARC_PX = 40.0
#: Fewest sectors in which a ring must stand out.
SECTOR_MIN_STANDING = 4

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
def _elevated_counts(data, good, key, key_radius, level, n_r, sector, n_sec):  # pragma: no cover - compiled
    above = np.zeros((n_r, n_sec), np.int64)
    total = np.zeros((n_r, n_sec), np.int64)
    h, w = data.shape
    for r in range(h):
        for c in range(r % 2, w, 2):  # every other pixel: the fractions need no more
            if not good[r, c]:
                continue
            k = key[r, c]
            b = key_radius[k]
            s = sector[r, c] if n_sec > 1 else 0
            total[b, s] += 1
            if data[r, c] > level[k]:
                above[b, s] += 1
    return above, total


_SECTOR_CACHE: list = []


def azimuth_sectors(
    radius_px: NDArray[np.floating], panel_id: NDArray[np.int32], n_sectors: int = RING_SECTORS
) -> NDArray[np.uint8]:
    """Azimuthal sector of every pixel, from the direction in which its radius grows.

    The direction is that of the radius map's gradient (central differences within the pixel's panel),
    so any radius map serves: for a flat detector it is the azimuth about the beam. Panels stored rotated
    in the array number their sectors in their own orientation. The result for the last maps is cached.

    Parameters
    ----------
    radius_px : (H, W) float ndarray
        Distance of each pixel from the beam.
    panel_id : (H, W) int32 ndarray
        Panel of each pixel (-1: none).
    n_sectors : int
        Sectors over the full circle; sector 0 starts at azimuth -pi (pointing to lower columns).

    Returns
    -------
    (H, W) uint8 ndarray

    Examples
    --------
    >>> rows, cols = np.mgrid[0:5, 0:5] - 2.0
    >>> azimuth_sectors(np.hypot(rows, cols), np.zeros((5, 5), np.int32), 4)[2].tolist()  # through the centre
    [0, 0, 2, 2, 2]
    """
    for entry in _SECTOR_CACHE:
        if entry[0] is radius_px and entry[1] is panel_id and entry[2] == n_sectors:
            return entry[3]
    radius = np.asarray(radius_px, np.float64)
    panel = np.asarray(panel_id)
    grads = []
    for axis in (0, 1):
        step = np.zeros_like(radius)
        steps = np.zeros(radius.shape, np.int8)
        ahead = [slice(None)] * 2
        behind = [slice(None)] * 2
        ahead[axis], behind[axis] = slice(1, None), slice(None, -1)
        ahead_, behind_ = tuple(ahead), tuple(behind)
        same = (panel[ahead_] == panel[behind_]) & np.isfinite(radius[ahead_]) & np.isfinite(radius[behind_])
        diff = np.where(same, radius[ahead_] - radius[behind_], 0.0)
        # each pixel averages the differences to its neighbours in the same panel (one-sided at a border)
        step[behind_] += diff
        steps[behind_] += same
        step[ahead_] += diff
        steps[ahead_] += same
        grads.append(step / np.maximum(steps, 1))
    angle = np.arctan2(grads[0], grads[1])
    sector = np.floor((angle + np.pi) * (n_sectors / (2 * np.pi))).astype(np.int64) % n_sectors
    result = sector.astype(np.uint8)
    _SECTOR_CACHE[:] = [(radius_px, panel_id, n_sectors, result)]
    return result


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
    """How ring-like each radius of a frame is, over whole annuli and by azimuthal sector.

    Attributes
    ----------
    fraction : (R,) float ndarray
        Share of the good pixels at each rounded radius (pixels) that stand above the neighbouring
        radii by the chosen contrast.
    raised : (R,) bool ndarray
        Whether the clipped background at that radius stands :data:`RING_MIN_EXCESS` background sigmas above
        the neighbouring radii.
    sectors : (H, W) uint8 ndarray or None
        Sector of each pixel (:func:`azimuth_sectors`); None: whole annuli only.
    count_sectors : callable or None
        ``count_sectors(radii)`` returns, per rounded radius and sector ((R, S) each), the looked-at pixels
        standing out and all looked-at pixels, at least at the rounded radii where the (R,) bool ``radii``
        is True (all when None); called only when a peak needs the sector test (:meth:`sector_counts`).
    """

    fraction: NDArray[np.float64]
    raised: NDArray[np.bool_]
    sectors: NDArray[np.uint8] | None = None
    count_sectors: Callable[[NDArray[np.bool_] | None], tuple[NDArray[np.int64], NDArray[np.int64]]] | None = field(
        default=None, repr=False, compare=False
    )

    def sector_counts(
        self, radii: NDArray[np.bool_] | None = None
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]] | None:
        """(above, total), each (R, S), counted at the rounded radii ``radii`` (all when None; other radii may
        read zero); None without sectors."""
        if self.sectors is None or self.count_sectors is None:
            return None
        return self.count_sectors(radii)

    def on_ring(self, min_fraction: float, widen_px: int = 2) -> NDArray[np.bool_]:
        """Radii where more than ``min_fraction`` of the pixels are elevated, widened by ``widen_px``."""
        ring = self.raised & (self.fraction > min_fraction)
        if widen_px > 0:
            ring = ndimage.binary_dilation(ring, iterations=widen_px)
        return ring

    def sector_fraction(self, radii: NDArray[np.bool_] | None = None) -> NDArray[np.float64] | None:
        """(R, S): share of each sector's looked-at pixels standing out (at the rounded radii ``radii``, as
        :meth:`sector_counts`); NaN where the sector's arc is shorter than :data:`SECTOR_MIN_ARC_PX` or it
        holds fewer than :data:`SECTOR_MIN_PIXELS`."""
        counts = self.sector_counts(radii)
        if counts is None:
            return None
        above, total = counts
        n_r, n_sec = total.shape
        long_enough = (2 * np.pi * np.arange(n_r) / n_sec >= SECTOR_MIN_ARC_PX)[:, None]
        return np.where(long_enough & (total >= SECTOR_MIN_PIXELS), above / np.maximum(total, 1), np.nan)

    def on_sector_ring(
        self, min_fraction: float, widen_px: int = 2, radii: NDArray[np.bool_] | None = None
    ) -> NDArray[np.bool_] | None:
        """(R, S): radius and sector pairs on a ring whose radius may change from sector to sector.

        A pair is on a ring when more than ``min_fraction`` of its pixels are elevated (widened by
        ``widen_px`` along the radius), the clipped background is raised within ``widen_px`` of the
        radius, and at least :data:`SECTOR_SUPPORT` of the sectors counted within :data:`SECTOR_WANDER_PX`
        of the radius, and no fewer than :data:`SECTOR_MIN_STANDING`, show such a share there too: a ring
        goes round the beam, Bragg spots crowd in a few sectors at most. With ``radii``, only radii within
        ``widen_px + SECTOR_WANDER_PX`` of them are sure to be answered. None without sectors.
        """
        if radii is not None:
            radii = ndimage.binary_dilation(radii, iterations=widen_px + SECTOR_WANDER_PX)
        frac = self.sector_fraction(radii)
        if frac is None:
            return None
        counted = np.isfinite(frac)
        stands = counted & (np.nan_to_num(frac) > min_fraction)
        reach = 2 * SECTOR_WANDER_PX + 1
        near = ndimage.maximum_filter1d(stands, reach, axis=0, mode="constant")
        near_counted = ndimage.maximum_filter1d(counted, reach, axis=0, mode="constant")
        n_near = near.sum(axis=1)
        supported = (n_near >= SECTOR_MIN_STANDING) & (n_near >= SECTOR_SUPPORT * near_counted.sum(axis=1))
        raised = ndimage.binary_dilation(self.raised, iterations=widen_px) if widen_px > 0 else self.raised
        ring = stands & (raised & supported)[:, None]
        if widen_px > 0:
            ring = ndimage.maximum_filter1d(ring, 2 * widen_px + 1, axis=0, mode="constant")
        return ring

    def at(self, radius_px: NDArray, flat_index: NDArray | None, min_fraction: float) -> NDArray[np.bool_]:
        """Whether each point (its distance from the beam and, for the sector test, its flat pixel index)
        lies on a ring (:meth:`on_ring`, or :meth:`on_sector_ring` when there are sectors). The sectors are
        counted only for points off the whole-annulus rings within :data:`SECTOR_WANDER_PX` of a raised radius
        whose share of standing-out pixels lies above the midpoint of the frame's median share and
        ``min_fraction``."""
        rb = np.clip(np.rint(np.asarray(radius_px, np.float64)).astype(np.int64), 0, self.fraction.size - 1)
        hit = self.on_ring(min_fraction)[rb]
        if self.sectors is None or self.count_sectors is None or flat_index is None:
            return hit
        # a ring spread over a few radii by an ellipse still lifts their whole-annulus share well above the
        # frame's typical share; elsewhere the sectors are not counted
        seen = self.fraction[self.fraction > 0]
        typical = float(np.median(seen)) if seen.size else 0.0
        reach = 2 * SECTOR_WANDER_PX + 1
        share = ndimage.maximum_filter1d(np.where(self.raised, self.fraction, 0.0), reach, mode="constant")
        need = (share[rb] > (typical + min_fraction) / 2) & ~hit
        if not need.any():
            return hit
        radii = np.zeros(self.fraction.size, bool)
        radii[rb[need]] = True
        by_sector = self.on_sector_ring(min_fraction, radii=radii)
        if by_sector is not None:
            sector = self.sectors.ravel()[np.asarray(flat_index, np.int64)]
            hit = hit | by_sector[rb, sector]
        return hit


def ring_evidence(
    data: NDArray[np.float32],
    good: NDArray[np.bool_],
    stats: RadialStats,
    *,
    contrast: float,
    sectors: NDArray[np.uint8] | None = None,
    half_window_px: int = 12,
    min_count: int = 20,
) -> RingEvidence:
    """Measure, for every radius, how much of the annulus (and of each sector) stands above the
    neighbouring radii.

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
    sectors : (H, W) uint8 ndarray, optional
        Azimuthal sector of each pixel (:func:`azimuth_sectors`); without it only whole annuli are measured.
    """
    level = ring_levels(stats, contrast=contrast, half_window_px=half_window_px, min_count=min_count)
    above, total = sector_counts(data, good, stats, level, None)
    return ring_evidence_from_counts(
        level,
        above[:, 0],
        total[:, 0],
        count_sectors=None if sectors is None else partial(sector_counts, data, good, stats, level, sectors),
        sectors=sectors,
    )


def sector_counts(
    data: NDArray[np.float32],
    good: NDArray[np.bool_],
    stats: RadialStats,
    levels: RingLevels,
    sectors: NDArray[np.uint8] | None,
    groups: NDArray[np.bool_] | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Per radius group and sector ((R, S) each; one sector without ``sectors``), the looked-at good
    pixels (every other one) above their bin's ring level, and all looked-at good pixels.

    With ``groups`` ((R,) bool), only those radius groups are counted (the others are zero), reading only
    their pixels.
    """
    n_r = int(stats.radius_bin.max()) + 1 if stats.radius_bin.size else 1
    sector = np.zeros((1, 1), np.uint8) if sectors is None else sectors
    n_sec = int(sector.max()) + 1 if sector.size else 1
    if groups is None or sectors is None:
        return _elevated_counts(data, good, stats.bin_index, stats.radius_bin, levels.level, n_r, sector, n_sec)
    order, starts = _pixels_by_group(stats.bin_index, stats.radius_bin, n_r)
    return _group_counts(
        np.ascontiguousarray(data).ravel(),
        np.ascontiguousarray(good).ravel(),
        stats.bin_index.ravel(),
        levels.level,
        sector.ravel(),
        n_sec,
        order,
        starts,
        np.asarray(groups, bool),
    )


_ORDER_CACHE: list = []


def _pixels_by_group(
    bin_index: NDArray[np.int32], radius_bin: NDArray[np.int64], n_r: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Flat indices of the looked-at pixels (row + col even) sorted by radius group, and where each group's
    run starts ((R + 1,)); cached for the last bin map."""
    for entry in _ORDER_CACHE:
        if entry[0] is bin_index:
            return entry[1]
    h, w = bin_index.shape
    rows, cols = np.indices((h, w), dtype=np.int64)
    looked = np.flatnonzero(((rows + cols) % 2 == 0).ravel())
    group = radius_bin[bin_index.ravel()[looked]]
    order = np.argsort(group, kind="stable")
    result = (looked[order], np.searchsorted(group[order], np.arange(n_r + 1)))
    _ORDER_CACHE[:] = [(bin_index, result)]
    return result


@numba.njit(cache=True, nogil=True)
def _group_counts(data, good, key, level, sector, n_sec, order, starts, groups):  # pragma: no cover - compiled
    n_r = groups.size
    above = np.zeros((n_r, n_sec), np.int64)
    total = np.zeros((n_r, n_sec), np.int64)
    for b in range(n_r):
        if not groups[b]:
            continue
        for j in range(starts[b], starts[b + 1]):
            i = order[j]
            if not good[i]:
                continue
            s = sector[i]
            total[b, s] += 1
            if data[i] > level[key[i]]:
                above[b, s] += 1
    return above, total


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


def ring_evidence_from_counts(
    levels: RingLevels,
    above: NDArray[np.int64],
    total: NDArray[np.int64],
    *,
    count_sectors: Callable[[NDArray[np.bool_] | None], tuple[NDArray[np.int64], NDArray[np.int64]]] | None = None,
    sectors: NDArray[np.uint8] | None = None,
) -> RingEvidence:
    """:class:`RingEvidence` from the levels and, per radius group, the looked-at pixels above the
    level and all looked-at pixels; ``count_sectors(groups)`` returns the same two per radius group and
    sector ((R, S) each) of the pixels' ``sectors``, at least for the radius groups where the (R,) bool
    ``groups`` is True (all when None; see :func:`sector_counts`), when first needed."""
    fraction = np.where(total > 0, above / np.maximum(total, 1), 0.0)
    group = levels.radius_group
    by_radius = None if count_sectors is None else partial(_per_radius, count_sectors, group)
    return RingEvidence(fraction=fraction[group], raised=levels.raised[group], sectors=sectors, count_sectors=by_radius)


def _per_radius(
    count_sectors: Callable[[NDArray[np.bool_] | None], tuple[NDArray[np.int64], NDArray[np.int64]]],
    group: NDArray[np.int64],
    radii: NDArray[np.bool_] | None,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The counts per radius group and sector of ``count_sectors`` (for the groups of the rounded
    ``radii``), indexed by rounded radius."""
    groups = None
    if radii is not None:
        groups = np.zeros(int(group.max()) + 1 if group.size else 1, bool)
        groups[group[np.asarray(radii, bool)]] = True
    above, total = count_sectors(groups)
    return above[group], total[group]


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
    flat_index: NDArray[np.int64] | None = None,
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
    flat_index : (P,) int ndarray, optional
        Flat pixel index of each peak, for the sector test of rings that are not circles about the
        beam centre (:meth:`RingEvidence.on_sector_ring`).

    Returns
    -------
    on_powder : (P,) bool ndarray
        On a ring more than :data:`POWDER_RING_FRACTION` of whose annulus, or of whose sectors, stands out
        (when rejected).
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
        on_powder = rings.at(radius_px, flat_index, POWDER_RING_FRACTION)
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
