"""Sparse peak extraction shared by the CPU and GPU paths of the U-Net finder.

A frame's peaks depend only on the pixels close to those above the probability cut. The pixels within a small
chessboard distance of them (:func:`candidate_reach`) are gathered into a :class:`CandidatePixels` set: by
:func:`gather_candidates` from full-frame arrays on the CPU, or shipped as such by an accelerator that keeps the
frame. :func:`extract_peaks` then labels, splits, grows and measures the regions on that set alone, with the
same results as passes over the whole frame, so that the cost follows the number of candidate pixels, not the
frame's size.

Neighbours are found in the sorted flat indices of the set (compiled searches that walk on while the pixels are
taken in raster order); regions are the connected components of a sparse graph of the pixels above the cut.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import numba
import numpy as np
from numpy.typing import NDArray
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import gammaincc, ndtr, ndtri

from ..classical._common import poisson_tail

__all__ = [
    "CandidatePixels",
    "Regions",
    "candidate_reach",
    "gather_candidates",
    "photon_seeds",
    "seed_blocks",
    "screen_seeds",
    "block_evidence",
    "extract_peaks",
    "PEAK_COLUMNS",
]

#: Columns returned by :func:`extract_peaks` (those of a one-frame :class:`~braggml.peaks.PeakList`).
PEAK_COLUMNS = ("row", "col", "intensity", "background", "snr", "n_pixels", "max_value", "score")

#: Regions of at least this many pixels are examined for several maxima.
SPLIT_MIN_PIXELS = 3
#: A maximum is a peak of its own when it stands this many sigmas (background and shot noise of the difference)
#: above the highest saddle that joins it to a higher maximum.
SPLIT_MIN_PROMINENCE_SIGMA = 3.0
#: ... and when that dip is at least this share of its height above the background.
SPLIT_MIN_RELATIVE_DIP = 0.2
#: A Bragg spot spreads at least this share of its brightest pixel's signal over the 8 neighbours (a spot of
#: sigma 0.26 px centred on a pixel: sharper spots fit in one pixel and cannot be told from a hot pixel).
LONE_MIN_SPILL = 0.1
#: A region is a lone pixel when its neighbours hold less than that share, with a Poisson chance under that of
#: this many normal sigmas ...
LONE_SIGMA = 4.0
#: ... and stand less than this many sigmas of their background noise above the background (a sharp spot's
#: charge sharing or faint tails show there; a hot pixel's neighbours hold nothing).
LONE_NEIGHBOUR_SIGMA = 3.0
#: Backgrounds below this many photons per pixel are sparse: there the photon counts are far from Gaussian, and a
#: cluster of 2-4-photon pixels that a Gaussian noise model puts at 5 sigmas is a common Poisson fluctuation.
SPARSE_PHOTONS = 1.0
#: A photon seed (:func:`photon_seeds`) holds at least this many photons above its background ...
SEED_MIN_PHOTONS = 2.0
#: ... and lies further than this (chessboard distance, pixels) from every pixel the network marked: what lies
#: nearer is the network's to judge.
SEED_CLEARANCE_PX = 2


@dataclass(frozen=True, eq=False)
class CandidatePixels:
    """The pixels of one frame within ``reach`` (chessboard distance) of a pixel above the probability cut.

    Attributes
    ----------
    shape : (int, int)
        Shape ``(H, W)`` of the frame.
    index : (N,) int64 ndarray
        Flat indices ``row * W + col`` of the pixels, strictly increasing.
    prob : (N,) float32 ndarray
        Peak probability of each pixel.
    residual : (N,) float32 ndarray
        Background-subtracted value in detector units (0 on bad pixels).
    background : (N,) float32 ndarray
        Background in detector units.
    noise : (N,) float32 ndarray
        Background noise in detector units.
    bad : (N,) bool ndarray
        Bad pixels; they are never above the cut, never join a region and count as the mask for
        :func:`extract_peaks`' share along the mask.
    panel : (N,) int32 ndarray
        Panel of each pixel.
    threshold : float
        The probability cut: pixels with ``prob > threshold`` that are not bad form the regions.
    gain : float
        Detector units per photon, for the shot noise of the spots when regions are split (0: unknown, the
        background noise alone counts).
    seed : (N,) bool ndarray or None
        Photon seeds (:func:`photon_seeds`) among the pixels, which :func:`extract_peaks` measures as regions
        of their own with ``seeds=True``; None when there are none.
    """

    shape: tuple[int, int]
    index: NDArray[np.int64]
    prob: NDArray[np.float32]
    residual: NDArray[np.float32]
    background: NDArray[np.float32]
    noise: NDArray[np.float32]
    bad: NDArray[np.bool_]
    panel: NDArray[np.int32]
    threshold: float
    gain: float = 0.0
    seed: NDArray[np.bool_] | None = None

    def __post_init__(self) -> None:
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ValueError(f"shape must be (H, W) with H, W >= 1, got {self.shape!r}")
        n = np.shape(self.index)
        if len(n) != 1:
            raise ValueError(f"index must be 1-D, got shape {n}")
        for name in ("prob", "residual", "background", "noise", "bad", "panel", "seed"):
            if getattr(self, name) is not None and np.shape(getattr(self, name)) != n:
                raise ValueError(f"{name} has shape {np.shape(getattr(self, name))}, index has {n}")
        if not np.isfinite(self.threshold):
            raise ValueError(f"threshold must be finite, got {self.threshold!r}")
        if not (np.isfinite(self.gain) and self.gain >= 0):
            raise ValueError(f"gain must be finite and >= 0, got {self.gain!r}")
        index = np.asarray(self.index)
        if index.size and (
            index[0] < 0 or index[-1] >= self.shape[0] * self.shape[1] or np.any(index[1:] <= index[:-1])
        ):
            raise ValueError(f"index must be strictly increasing flat indices of a frame of shape {self.shape}")

    @property
    def size(self) -> int:
        """Number of candidate pixels ``N``."""
        return int(self.index.size)


def candidate_reach(grow_px: float) -> int:
    """Smallest reach of a :class:`CandidatePixels` set for which :func:`extract_peaks` is exact.

    It covers the widening of the regions (``floor(grow_px)``) and the neighbours that tell whether a region
    lies along the mask (1 pixel), with a floor of 2 pixels.

    Parameters
    ----------
    grow_px : float
        The regions' widening in pixels (``>= 0``).

    Returns
    -------
    int
        Chessboard distance in pixels.

    Examples
    --------
    >>> candidate_reach(2.0), candidate_reach(3.5)
    (2, 3)
    """
    if not np.isfinite(grow_px) or grow_px < 0:
        raise ValueError(f"grow_px must be finite and >= 0, got {grow_px!r}")
    return max(2, int(np.floor(grow_px)))


def gather_candidates(
    prob: NDArray[np.floating],
    residual: NDArray[np.floating],
    background: NDArray[np.floating],
    noise: NDArray[np.floating],
    bad: NDArray[np.bool_],
    panel_id: NDArray[np.integer],
    threshold: float,
    reach: int,
    *,
    gain: float = 0.0,
    seeds: NDArray[np.integer] | None = None,
) -> CandidatePixels:
    """The pixels of a frame within ``reach`` of a good pixel above the cut (or of a photon seed), from
    full-frame arrays.

    Only the pixels above the cut are visited beyond the one comparison of ``prob`` with the cut: the set is
    built from the offsets of those pixels, so the cost follows their number.

    Parameters
    ----------
    prob, residual, background, noise : (H, W) ndarray
        Probability and normalised frame (as :class:`~braggml.ml.unet.NormalisedFrame`).
    bad : (H, W) bool ndarray
    panel_id : (H, W) int ndarray
    threshold : float
        Pixels with ``prob > threshold`` that are not bad are above the cut.
    reach : int
        Chessboard distance (``>= 0``), at least :func:`candidate_reach` of the ``grow_px`` to be used.
    gain : float
        Detector units per photon (:attr:`CandidatePixels.gain`).
    seeds : (S,) int ndarray, optional
        Flat indices of photon seeds (:func:`photon_seeds`): gathered with their neighbourhood too, and flagged
        (:attr:`CandidatePixels.seed`).

    Returns
    -------
    CandidatePixels

    Raises
    ------
    ValueError
        If the arrays are not 2-D of one shape, or ``reach`` or ``threshold`` is invalid.

    Examples
    --------
    >>> prob = np.zeros((5, 5), np.float32)
    >>> prob[0, 0] = 0.9
    >>> zero = np.zeros((5, 5), np.float32)
    >>> c = gather_candidates(prob, zero, zero, zero + 1, zero > 0, np.zeros((5, 5), np.int32), 0.5, 1)
    >>> c.index.tolist()
    [0, 1, 5, 6]
    """
    prob = np.asarray(prob)
    if prob.ndim != 2:
        raise ValueError(f"prob must be 2-D (H, W), got shape {prob.shape}")
    arrays = {"residual": residual, "background": background, "noise": noise, "bad": bad, "panel_id": panel_id}
    for name, arr in arrays.items():
        if np.shape(arr) != prob.shape:
            raise ValueError(f"{name} has shape {np.shape(arr)}, prob has {prob.shape}")
    if isinstance(reach, bool) or int(reach) != reach or reach < 0:
        raise ValueError(f"reach must be an integer >= 0, got {reach!r}")
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    h, w = prob.shape
    bad_flat = np.asarray(bad, dtype=bool).reshape(-1)
    above = np.flatnonzero(prob.reshape(-1) > threshold)
    above = above[~bad_flat[above]].astype(np.int64)
    if seeds is not None and np.size(seeds):
        seeds = _sorted_unique(np.asarray(seeds, np.int64).reshape(-1))
        if seeds[0] < 0 or seeds[-1] >= h * w:
            raise ValueError(f"seeds must be flat indices of a frame of shape {(h, w)}")
        above = _sorted_unique(np.concatenate([above, seeds]))
    else:
        seeds = None
    index = _dilate(above, (h, w), int(reach))
    seed_flags = None
    if seeds is not None:
        seed_flags = np.zeros(index.size, bool)
        seed_flags[np.searchsorted(index, seeds)] = True

    def take(arr: Any, dtype: type) -> NDArray[Any]:
        return np.asarray(arr).reshape(-1)[index].astype(dtype, copy=False)

    return CandidatePixels(
        shape=(h, w),
        index=index,
        prob=take(prob, np.float32),
        residual=take(residual, np.float32),
        background=take(background, np.float32),
        noise=take(noise, np.float32),
        bad=bad_flat[index],
        panel=take(panel_id, np.int32),
        threshold=float(threshold),
        gain=float(gain),
        seed=seed_flags,
    )


def photon_seeds(
    prob: NDArray[np.floating],
    residual: NDArray[np.floating],
    background: NDArray[np.floating],
    noise: NDArray[np.floating],
    bad: NDArray[np.bool_],
    panel_id: NDArray[np.integer],
    level: float,
    gain: float,
    *,
    min_sigma: float = -np.inf,
    min_spill: float = -np.inf,
) -> NDArray[np.int64]:
    """Pixels of a frame where the photons alone show a spot that the network left unmarked.

    A seed is a good pixel on a sparse background (``max(background / gain, (noise / gain)**2)`` under
    :data:`SPARSE_PHOTONS` photons) holding at least :data:`SEED_MIN_PHOTONS` photons above it, at least as
    bright as every good pixel of its 3 x 3 block (pixels beyond the frame's edge do not count), further than
    :data:`SEED_CLEARANCE_PX` from every good pixel of probability above ``level``, and whose block passes
    :func:`screen_seeds` (sparse, ``min_sigma`` and ``min_spill`` on the background of the pixels around it; the
    pixel itself is the core aperture).
    :func:`extract_peaks` (``seeds=True``) then measures each as a region of its own.

    Parameters
    ----------
    prob, residual, background, noise : (H, W) ndarray
        Probability and normalised frame (as :class:`~braggml.ml.unet.NormalisedFrame`).
    bad : (H, W) bool ndarray
    panel_id : (H, W) int ndarray
    level : float
        The lowest probability cut in use.
    gain : float
        Detector units per photon (> 0; no seeds otherwise).
    min_sigma, min_spill : float
        Significance and spill (normal sigmas) a seed's block needs (none by default).

    Returns
    -------
    (S,) int64 ndarray
        Flat indices, increasing.

    Examples
    --------
    >>> frame = np.zeros((7, 7), np.float32)
    >>> frame[3, 3], frame[3, 4] = 9.0, 4.0
    >>> zero = np.zeros((7, 7), np.float32)
    >>> photon_seeds(zero, frame, zero + 0.1, zero + 0.3, zero > 0, zero.astype(int), 0.5, 1.0).tolist()
    [24]
    """
    prob = np.asarray(prob)
    h, w = prob.shape
    if not (np.isfinite(gain) and gain > 0):
        return np.empty(0, np.int64)
    arrays = [np.ascontiguousarray(a, np.float32) for a in (prob, residual, background, noise)]
    bad = np.ascontiguousarray(bad, bool)
    bright = np.flatnonzero(arrays[1].reshape(-1) >= np.float32(SEED_MIN_PHOTONS * gain))
    table_rate, table_photons = _photons_needed(float(min_sigma))
    cand = _seed_places_kernel(bright, *arrays, bad, np.float32(level), np.float32(gain), SPARSE_PHOTONS,
                               SEED_CLEARANCE_PX, table_rate, table_photons)
    at, inside = seed_blocks(cand, (h, w))
    panel = np.asarray(panel_id).reshape(-1)
    res, bg, sd = (a.reshape(-1) for a in arrays[1:])
    block_good = inside & ~bad.reshape(-1)[at] & (panel[at] == panel[cand][None, :])
    keep = screen_seeds(res[at], bg[at], sd[at], block_good, gain, min_sigma=min_sigma, min_spill=min_spill)
    return cand[keep]


@functools.lru_cache(maxsize=8)
def _photons_needed(min_sigma: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Backgrounds (photons, increasing, from 1e-4 to :data:`SPARSE_PHOTONS`) and the fewest photons above each
    that make a Poisson excess of ``min_sigma`` normal sigmas (:func:`~braggml.classical._common.poisson_tail`)."""
    rate = np.geomspace(1e-4, SPARSE_PHOTONS, 96)
    tail = ndtr(-min_sigma)
    low, high = np.zeros_like(rate), np.full_like(rate, 1e3)
    for _ in range(60):  # the tail falls as the photons grow
        mid = 0.5 * (low + high)
        enough = poisson_tail(mid, rate) <= tail
        high, low = np.where(enough, mid, high), np.where(enough, low, mid)
    return rate, low


@numba.njit(cache=True, nogil=True)
def _seed_places_kernel(
    bright, prob, residual, background, noise, bad, level, gain, sparse, reach, table_rate, table_photons
):  # pragma: no cover
    """Of the flat indices ``bright``, those of good pixels on a background under ``sparse`` photons, at least as
    bright as every good neighbour, with no good pixel above ``level`` within ``reach``, whose 3 x 3 block could
    be significant: its positive photons reach ``table_photons`` at the highest ``table_rate`` not above the
    least background an aperture holding the pixel can have (see :func:`screen_seeds`)."""
    h, w = prob.shape
    keep = np.zeros(bright.size, np.bool_)
    for k in range(bright.size):
        r, c = bright[k] // w, bright[k] % w
        rate = max(background[r, c] / gain, (noise[r, c] / gain) ** 2)
        if bad[r, c] or not rate < sparse:
            continue
        v = residual[r, c]
        ok = True
        positive = 0.0
        least = np.inf
        for rr in range(max(r - 1, 0), min(r + 2, h)):
            for cc in range(max(c - 1, 0), min(c + 2, w)):
                if not bad[rr, cc]:
                    if residual[rr, cc] > v:
                        ok = False
                    positive += max(residual[rr, cc], 0.0) / gain
                    least = min(least, max(background[rr, cc] / gain, (noise[rr, cc] / gain) ** 2))
        floor = min(rate, 4.0 * least)
        at = np.searchsorted(table_rate, floor, side="right") - 1
        if not ok or (at >= 0 and positive < table_photons[at]):
            continue
        for rr in range(max(r - reach, 0), min(r + reach + 1, h)):
            for cc in range(max(c - reach, 0), min(c + reach + 1, w)):
                if not bad[rr, cc] and prob[rr, cc] > level:
                    ok = False
        keep[k] = ok
    return bright[keep]


def seed_blocks(index: NDArray[np.integer], shape: tuple[int, int]) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """The (25, S) flat indices of the 5 x 5 blocks around the pixels ``index`` (raster order, the centre at row
    12; the pixel itself beyond the frame's edge) and whether each lies in the frame."""
    h, w = shape
    index = np.asarray(index, np.int64)
    row, col = np.divmod(index, w)
    dr, dc = np.divmod(np.arange(25), 5)
    r, c = row[None, :] + (dr - 2)[:, None], col[None, :] + (dc - 2)[:, None]
    inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    return np.where(inside, r * w + c, index[None, :]), inside


#: Rows of a 5 x 5 block (:func:`seed_blocks`) that form the 3 x 3 block around its centre, and the ring around it.
_INNER = np.array([6, 7, 8, 11, 12, 13, 16, 17, 18])
_RING = np.setdiff1d(np.arange(25), _INNER)


def screen_seeds(
    residual: NDArray[np.floating],
    background: NDArray[np.floating],
    noise: NDArray[np.floating],
    good: NDArray[np.bool_],
    gain: float,
    *,
    min_sigma: float = -np.inf,
    min_spill: float = -np.inf,
) -> NDArray[np.bool_]:
    """Which seeds' (25, S) blocks (:func:`seed_blocks`; ``good``: good and on the seed's panel) show a spot: on
    the background of the 16 pixels around the 3 x 3 block (the frame's background raised by their median excess
    where they hold one: scatter that the radial background misses, by a beamstop, is no spot; a neighbouring
    spot's pixel is not a raised background), that block is sparse, significant and spills enough
    (:func:`block_evidence`, the seed pixel as the core)."""
    if np.shape(good)[1] == 0:
        return np.zeros(0, bool)
    photons = np.asarray(residual, np.float64) / gain
    rate = _photon_rate(background, noise, gain)
    ring = np.where(good[_RING], photons[_RING], np.nan)
    photons, rate, good = photons[_INNER], rate[_INNER], good[_INNER]
    # No aperture holds more photons than the block's positive ones, nor less background than the seed pixel
    # or four of the block's least (the seed, its brightest, is in every aperture but when the four brightest
    # are its equals), so this tail bounds them all from below (a raised background only lowers the photons and
    # adds background): most places end here.
    floor = np.minimum(rate[4], 4 * np.where(good, rate, np.inf).min(axis=0))
    best = poisson_tail(np.where(good, np.maximum(photons, 0.0), 0.0).sum(axis=0), floor)
    keep = -ndtri(best) >= min_sigma
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no good pixel around: nothing raised
        raised = np.nan_to_num(np.maximum(np.nanmedian(ring[:, keep], axis=0), 0.0))
    photons, rate = photons[:, keep] - raised, rate[:, keep] + raised
    sparse, significance, spill = block_evidence(photons, rate, good[:, keep], photons[4], rate[4])
    keep[keep] = sparse & (significance >= min_sigma) & (spill >= min_spill)
    return keep


def _photon_rate(background: NDArray[np.floating], noise: NDArray[np.floating], gain: float) -> NDArray[np.float64]:
    """The background of pixels in photons, as a Poisson rate: ``max(background / gain, (noise / gain)**2)``, so
    that a pedestal-free integrating background counts its variance, as in the classical finders' Poisson test."""
    return np.maximum(np.asarray(background, np.float64) / gain, (np.asarray(noise, np.float64) / gain) ** 2)


def block_evidence(
    photons: NDArray[np.float64],
    rate: NDArray[np.float64],
    good: NDArray[np.bool_],
    core_photons: NDArray[np.float64],
    core_rate: NDArray[np.float64],
) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.float64]]:
    """Whether 3 x 3 blocks lie on a sparse background, their significance and their spill.

    Parameters
    ----------
    photons, rate : (9, M) float ndarray
        Photons above the background, and the background in photons, of each block's pixels (raster order, the
        centre at row 4).
    good : (9, M) bool ndarray
        The pixels that count.
    core_photons, core_rate : (M,) float ndarray
        The same summed over a third aperture (the region).

    Returns
    -------
    sparse : (M,) bool ndarray
        The block's good pixels average under :data:`SPARSE_PHOTONS` photons of background.
    significance : (M,) float ndarray
        The most significant Poisson excess, in normal sigmas, of the four brightest good pixels, the block's
        good pixels and the core.
    spill : (M,) float ndarray
        The Poisson excess of the good pixels around the centre, in normal sigmas.
    """
    block_photons = np.where(good, photons, 0.0)
    block_rate = np.where(good, rate, 0.0)
    sparse = block_rate.sum(axis=0) < SPARSE_PHOTONS * np.maximum(good.sum(axis=0), 1)
    order = np.argsort(np.where(good, -photons, np.inf), axis=0, kind="stable")[:4]
    four_photons = np.take_along_axis(block_photons, order, axis=0).sum(axis=0)
    four_rate = np.take_along_axis(block_rate, order, axis=0).sum(axis=0)
    tail = np.minimum.reduce(
        [
            poisson_tail(four_photons, four_rate),
            poisson_tail(block_photons.sum(axis=0), block_rate.sum(axis=0)),
            poisson_tail(core_photons, core_rate),
        ]
    )
    spill = poisson_tail(block_photons.sum(axis=0) - block_photons[4], block_rate.sum(axis=0) - block_rate[4])
    return sparse, -ndtri(tail), -ndtri(spill)


def _dilate(index: NDArray[np.int64], shape: tuple[int, int], reach: int) -> NDArray[np.int64]:
    """Sorted flat indices of the pixels within chessboard distance ``reach`` of the pixels ``index``.

    The square is the product of a run along the row and one along the column, taken one after the other.
    """
    h, w = shape
    if reach == 0 or index.size == 0:
        return _sorted_unique(index)
    col = index % w
    along_row = _sorted_unique(
        np.concatenate([index[(col + dc >= 0) & (col + dc < w)] + dc for dc in range(-reach, reach + 1)])
    )
    row = along_row // w
    parts = []
    for dr in range(-reach, reach + 1):
        ok = (row + dr >= 0) & (row + dr < h)
        parts.append(along_row[ok] + dr * w)
    return _sorted_unique(np.concatenate(parts))


def _sorted_unique(values: NDArray[np.int64]) -> NDArray[np.int64]:
    """Sorted distinct values; fast when ``values`` is a concatenation of a few sorted runs (merge sort)."""
    values = np.sort(values, kind="stable")
    if values.size < 2:
        return values
    return values[np.concatenate(([True], values[1:] != values[:-1]))]


_REACH_MESSAGE = (
    "the candidate pixels do not reach far enough for these settings; gather them with a reach of at least "
    "candidate_reach(grow_px)"
)


class _Pixels:
    """Rows, columns and neighbour look-ups of a candidate set."""

    def __init__(self, c: CandidatePixels) -> None:
        self.h, self.w = c.shape
        self.index = np.ascontiguousarray(c.index, dtype=np.int64)
        self.row = self.index // self.w
        self.col = self.index - self.row * self.w

    def block(self, pos: NDArray[np.int64], *, clip: bool = False) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
        """Positions in the set of the 3 x 3 neighbourhoods of the pixels at ``pos``, offsets in raster order.

        Returns ``(9, M)`` positions and ``(9, M)`` flags telling whether the neighbour lies in the frame.
        Beyond the frame the position is -1, or with ``clip`` that of the nearest pixel of the frame (the
        ``"nearest"`` border of a filter).

        Raises
        ------
        ValueError
            If a neighbour in the frame is not in the set.
        """
        out, inside, missing = _block_kernel(self.index, self.h, self.w, np.ascontiguousarray(pos, np.int64), clip)
        if missing:
            raise ValueError(_REACH_MESSAGE)
        return out, inside


@numba.njit(cache=True, nogil=True)
def _seek(index, value, hint):  # pragma: no cover - compiled
    """First position of ``index`` (sorted) holding at least ``value``: a walk on from ``hint`` when the values
    sought rise, as they do for pixels taken in raster order, else a binary search."""
    if hint > 0 and index[hint - 1] >= value:
        return np.searchsorted(index, value)
    while hint < index.size and index[hint] < value:
        hint += 1
    return hint


@numba.njit(cache=True, nogil=True)
def _block_kernel(index, h, w, pos, clip):  # pragma: no cover - compiled
    """See :meth:`_Pixels.block`; also whether a neighbour was missing from the set."""
    n = index.size
    out = np.full((9, pos.size), -1, np.int64)
    inside = np.zeros((9, pos.size), np.bool_)
    missing = False
    start = np.zeros(3, np.int64)  # per row of the neighbourhood: where the last search ended
    for i in range(pos.size):
        r0 = index[pos[i]] // w
        c0 = index[pos[i]] - r0 * w
        for a in range(3):
            r = r0 + a - 1
            row_in = 0 <= r < h
            if not row_in and not clip:
                continue
            r = min(max(r, 0), h - 1)
            j = _seek(index, r * w + max(c0 - 1, 0), start[a])
            start[a] = j
            for b in range(3):
                c = c0 + b - 1
                col_in = 0 <= c < w
                inside[3 * a + b, i] = row_in and col_in
                if not col_in and not clip:
                    continue
                t = r * w + min(max(c, 0), w - 1)
                k = j
                while k < n and index[k] < t:
                    k += 1
                if k < n and index[k] == t:
                    out[3 * a + b, i] = k
                else:
                    missing = True
    return out, inside, missing


@numba.njit(cache=True, nogil=True)
def _grow_kernel(index, h, w, labels, bad, panel, rank, reach):  # pragma: no cover - compiled
    """Every free pixel takes the label of the region pixel at the lowest-ranked offset from it (``rank``:
    ``(2 reach + 1, 2 reach + 1)`` order of the offsets, -1 for those not used); also whether a pixel of
    the frame within ``reach`` of a region was missing from the set."""
    n = index.size
    out = labels.copy()
    best = np.full(n, rank.size, np.int64)
    missing = False
    start = np.zeros(2 * reach + 1, np.int64)
    for i in range(n):
        lab = labels[i]
        if lab == 0:
            continue
        r0 = index[i] // w
        c0 = index[i] - r0 * w
        p = panel[i]
        lo = max(c0 - reach, 0)
        hi = min(c0 + reach, w - 1)
        for a in range(2 * reach + 1):
            r = r0 + a - reach
            if r < 0 or r >= h:
                continue
            k = _seek(index, r * w + lo, start[a])
            start[a] = k
            for c in range(lo, hi + 1):
                order = rank[a, c - c0 + reach]
                if order < 0:
                    continue
                t = r * w + c
                while k < n and index[k] < t:
                    k += 1
                if k >= n or index[k] != t:
                    missing = True
                    continue
                if labels[k] == 0 and not bad[k] and panel[k] == p and order < best[k]:
                    best[k] = order
                    out[k] = lab
    return out, missing


class Regions(NamedTuple):
    """The measured regions of one frame (:func:`extract_peaks`) and what the finder's rules need of them.

    Attributes
    ----------
    columns : dict of str to (P,) ndarray
        ``row``, ``col``, ``intensity``, ``background``, ``snr``, ``n_pixels`` (int64), ``max_value`` and
        ``score`` of the P regions (see :data:`PEAK_COLUMNS`), all float64 but ``n_pixels``.
    along_mask : (P,) float64 ndarray
        Share of each region's pixels (before widening) touching a bad pixel, another panel or the frame's
        edge (8-connected).
    lone_pixel : (P,) bool ndarray
        Regions that are a lone bright pixel.
    sparse : (P,) bool ndarray
        Regions on a sparse background (under :data:`SPARSE_PHOTONS` photons per pixel).
    significance : (P,) float64 ndarray
        The most significant Poisson excess of each region's compact apertures, in normal sigmas (NaN
        without the gain).
    spill : (P,) float64 ndarray
        The Poisson excess of the 8 neighbours of each region's brightest pixel, in normal sigmas (NaN without
        the gain): what a spot spreads around its brightest pixel and a hot pixel does not.
    local_max : (P,) bool ndarray
        Whether each region's brightest pixel is also the brightest good pixel of its 3 x 3 block (on its
        panel); a region beside a brighter pixel outside it (a hot pixel's neighbour) is not.
    """

    columns: dict[str, NDArray[Any]]
    along_mask: NDArray[np.float64]
    lone_pixel: NDArray[np.bool_]
    sparse: NDArray[np.bool_]
    significance: NDArray[np.float64]
    spill: NDArray[np.float64]
    local_max: NDArray[np.bool_]

    def take(self, index: NDArray[np.bool_] | NDArray[np.integer]) -> Regions:
        """The regions at ``index`` (a boolean mask or positions)."""
        return Regions({k: v[index] for k, v in self.columns.items()}, *(a[index] for a in self[1:]))

    def join(self, other: Regions) -> Regions:
        """These regions followed by ``other``'s."""
        return Regions(
            {k: np.concatenate([v, other.columns[k]]) for k, v in self.columns.items()},
            *(np.concatenate([a, b]) for a, b in zip(self[1:], other[1:])),
        )


def extract_peaks(
    c: CandidatePixels,
    *,
    min_pixel_count: int = 1,
    split: bool = True,
    grow_px: float = 2.0,
    exclude_above: float | None = None,
    seeds: bool = False,
) -> Regions:
    """The peaks of one frame from its candidate pixels.

    Regions are the 8-connected groups of good pixels above the cut within one panel, numbered in raster order
    of their first pixel; those smaller than ``min_pixel_count`` are dropped. With ``split``, a region whose
    residual holds several separate maxima is divided between them. A maximum is separate when the highest
    saddle joining it, within the region, to a higher pixel lies below it by at least three sigmas of that
    difference (``sqrt(2 noise**2 + gain * (maximum + saddle))``: the background noise at the maximum and the
    shot noise of both pixels) and by at least a fifth of its height (:data:`SPLIT_MIN_PROMINENCE_SIGMA`,
    :data:`SPLIT_MIN_RELATIVE_DIP`); pixels of equal value rank in raster order. Every pixel of a divided
    region goes to the nearest of its maxima (the first in raster order on a tie); the first keeps the
    region's number, the others are numbered after all regions, in order. The regions are then widened to the
    free pixels (not in a region, not bad, same panel) within ``grow_px``, each going to the nearest region
    pixel, and measured: centroid weighted by the positive residual (by the probability where none is
    positive), integrated residual, mean background, SNR ``intensity / sqrt(sum noise**2)``, pixel count,
    highest value, and as score the highest probability of the unwidened region.

    A region is a lone pixel (a hot pixel or a one-pixel zinger rather than a spot) when the brightest good pixel
    of the 3 x 3 block of its brightest pixel above the cut (that pixel itself on a tie; the first in raster order
    among a region's equals) has 8 good neighbours on its panel that hold too little: their counts, in photons
    with the background counted as a Poisson rate of its variance, are as low or lower with a chance under that
    of :data:`LONE_SIGMA` normal sigmas had they held :data:`LONE_MIN_SPILL` of that pixel's residual, and their
    sum stands less than :data:`LONE_NEIGHBOUR_SIGMA` sigmas of its background noise above the background. The
    block's brightest pixel is judged because the network may mark an empty neighbour of a hot pixel more
    surely than the hot pixel. The test needs the gain: with ``gain`` 0 no region is a lone pixel.

    Each region's significance is that of the most significant of three compact apertures, as a Poisson excess
    over their background in normal sigmas: the four brightest good pixels of the 3 x 3 block of its brightest
    pixel (good pixels on its panel), the whole block, and the region itself (before widening). The background
    of each pixel counts ``max(background / gain, (noise / gain)**2)`` photons, as in the classical finders'
    Poisson test (:func:`~braggml.classical._common.poisson_significant`). A region is on a sparse background
    when that block averages under :data:`SPARSE_PHOTONS` photons per pixel: there a sharp spot of a few
    photons is highly significant, while a loose cluster of 2-4-photon pixels on half a photon per pixel,
    which a noise model of Gaussian pixels would take for a 5-sigma spot, is not. Without the gain (``gain``
    0) no region is sparse and the significance is NaN. The spill is the Poisson excess, in normal sigmas, of
    the good neighbours of the brightest pixel in that block (NaN without the gain).

    Parameters
    ----------
    c : CandidatePixels
        Gathered with a reach of at least ``candidate_reach(grow_px)``.
    min_pixel_count : int
        Smallest region kept (pixels above the cut).
    split : bool
        Split regions holding several maxima.
    grow_px : float
        Widening of the regions in pixels (``>= 0``; 0 measures the regions as they are).
    exclude_above : float, optional
        Regions holding a pixel of higher probability are left out (before they are split): with a set
        re-cut lower, the regions that hold no pixel above the first cut.
    seeds : bool
        The regions are the good photon seeds of the set (:attr:`CandidatePixels.seed`; none when it is None)
        instead of the pixels above the cut; the score is still their probability.

    Returns
    -------
    Regions
        The regions' columns and flags.

    Raises
    ------
    ValueError
        If a setting is invalid or the set does not reach far enough for ``grow_px``.

    Examples
    --------
    >>> prob = np.zeros((6, 6), np.float32)
    >>> prob[2, 2:4] = 0.9
    >>> residual = prob * 10
    >>> ones = np.ones((6, 6), np.float32)
    >>> c = gather_candidates(prob, residual, ones, ones, ones < 0, np.zeros((6, 6), np.int32), 0.5, 2)
    >>> regions = extract_peaks(c, grow_px=1.0)
    >>> columns = regions.columns
    >>> columns["row"].tolist(), columns["col"].tolist(), columns["n_pixels"].tolist(), regions.along_mask.tolist()
    ([2.0], [2.5], [8], [0.0])
    >>> regions.lone_pixel.tolist(), regions.sparse.tolist(), regions.significance.tolist()  # gain 0: not tested
    ([False], [False], [nan])
    """
    if isinstance(min_pixel_count, bool) or int(min_pixel_count) != min_pixel_count or min_pixel_count < 1:
        raise ValueError(f"min_pixel_count must be an integer >= 1, got {min_pixel_count!r}")
    if exclude_above is not None and not np.isfinite(exclude_above):
        raise ValueError(f"exclude_above must be finite, got {exclude_above!r}")
    candidate_reach(grow_px)  # validates grow_px
    px = _Pixels(c)
    core = c.seed if seeds else c.prob > c.threshold
    labels, n = _label(c, px, int(min_pixel_count), np.zeros(c.size, bool) if core is None else core)
    if exclude_above is not None and n:
        labels, n = _without_regions_above(c, labels, n, float(exclude_above))
    if split and n:
        labels, n = _split(c, px, labels, n)
    wide = _grow(c, px, labels, grow_px) if grow_px > 0 and n else labels
    top = _brightest(c, labels)
    block, good = _blocks(c, px, top)  # the 3 x 3 block of each region's brightest pixel
    return Regions(
        _measure(c, px, labels, wide, n),
        _along_mask(c, px, labels, n),
        _lone_pixel(c, *_blocks(c, px, _block_brightest(c, block, good))),
        *_significance(c, labels, block, good),
        _local_max(c, block, good),
    )


def _without_regions_above(
    c: CandidatePixels, labels: NDArray[np.int32], n: int, level: float
) -> tuple[NDArray[np.int32], int]:
    """The regions holding no pixel of probability above ``level``, renumbered in order."""
    core = np.flatnonzero(labels)
    keep = np.ones(n + 1, bool)
    keep[labels[core][c.prob[core] > level]] = False
    keep[0] = False
    number = np.zeros(n + 1, np.int32)
    number[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return number[labels], int(keep.sum())


def _label(
    c: CandidatePixels, px: _Pixels, min_pixel_count: int, chosen: NDArray[np.bool_]
) -> tuple[NDArray[np.int32], int]:
    """Region number of every candidate (0 outside regions) and the number of regions: the 8-connected groups of
    the ``chosen`` good pixels within one panel."""
    labels = np.zeros(c.size, np.int32)
    core = np.flatnonzero(chosen & ~c.bad)
    m = core.size
    if m == 0:
        return labels, 0
    rank = np.full(c.size + 1, -1, np.int64)  # position in the set -> number among the pixels above the cut
    rank[core] = np.arange(m)
    nb, _ = px.block(core)
    a_parts, b_parts = [], []
    for k in (5, 6, 7, 8):  # (0, 1), (1, -1), (1, 0), (1, 1): each pair once, seen from its earlier pixel
        j = rank[nb[k]]  # -1 (the extra entry) outside the frame
        src = np.flatnonzero(j >= 0)
        j = j[src]
        same = c.panel[core[src]] == c.panel[core[j]]
        a_parts.append(src[same])
        b_parts.append(j[same])
    a, b = np.concatenate(a_parts), np.concatenate(b_parts)
    graph = coo_matrix((np.ones(a.size, np.int8), (a, b)), shape=(m, m)).tocsr()
    n, comp = connected_components(graph, directed=False)
    # number the regions in raster order of their first pixel, as scipy.ndimage.label does
    first = np.full(n, m, np.int64)
    np.minimum.at(first, comp, np.arange(m))
    number = np.empty(n, np.int32)
    number[np.argsort(first)] = np.arange(1, n + 1, dtype=np.int32)
    lab = number[comp]
    if min_pixel_count > 1:
        sizes = np.bincount(lab, minlength=n + 1)
        keep = sizes >= min_pixel_count
        keep[0] = False
        remap = np.zeros(n + 1, np.int32)
        remap[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
        lab = remap[lab]
        n = int(keep.sum())
    labels[core] = lab
    return labels, int(n)


def _split(c: CandidatePixels, px: _Pixels, labels: NDArray[np.int32], n: int) -> tuple[NDArray[np.int32], int]:
    """Regions divided between their separate maxima (see :func:`extract_peaks`)."""
    members = np.flatnonzero(labels)
    lab = labels[members]
    sizes = np.bincount(lab, minlength=n + 1)
    big = sizes >= SPLIT_MIN_PIXELS
    big[0] = False
    pos, plab = members[big[lab]], lab[big[lab]]
    if pos.size == 0:
        return labels, n
    nb, _ = px.block(pos)
    value = np.asarray(c.residual, np.float64)[pos]
    order = np.lexsort((pos, -value))  # highest first, raster order among equals
    is_max = _separate_maxima(
        pos,
        plab,
        value,
        np.asarray(c.noise, np.float64)[pos],
        nb,
        order,
        c.size,
        float(c.gain),
        SPLIT_MIN_PROMINENCE_SIGMA,
        SPLIT_MIN_RELATIVE_DIP,
    )
    mpos, mlab = pos[is_max], plab[is_max]
    count = np.bincount(mlab, minlength=n + 1)
    divided = count >= 2
    if not divided.any():
        return labels, n
    keep = divided[mlab]
    mpos, mlab = mpos[keep], mlab[keep]
    order = np.lexsort((mpos, mlab))  # by region, then raster order
    mpos, mlab = mpos[order], mlab[order]
    count = np.bincount(mlab, minlength=n + 1)
    start = np.concatenate([[0], np.cumsum(count)])  # first maximum of each region in mpos
    extra = np.maximum(count - 1, 0)
    first_new = n + 1 + np.concatenate([[0], np.cumsum(extra)])[:-1]  # number of each region's second maximum
    # every pixel of a divided region against every maximum of its region
    sel = divided[plab]
    spos, slab = pos[sel], plab[sel]
    reps = count[slab]
    pix = np.repeat(np.arange(spos.size), reps)
    offsets = np.arange(pix.size) - np.repeat(np.cumsum(reps) - reps, reps)  # rank of the maximum in its region
    mx = mpos[start[slab[pix]] + offsets]
    d2 = (px.row[spos[pix]] - px.row[mx]) ** 2 + (px.col[spos[pix]] - px.col[mx]) ** 2
    width = int(count.max())
    key = d2 * width + offsets  # nearest maximum, the first in raster order on a tie
    best = np.minimum.reduceat(key, np.cumsum(reps) - reps) % width
    new = np.where(best == 0, slab, first_new[slab] + best - 1).astype(np.int32)
    out = labels.copy()
    out[spos] = new
    return out, int(n + extra.sum())


@numba.njit(cache=True, nogil=True)
def _separate_maxima(pos, plab, value, noise, nb, order, n_set, gain, k_sigma, min_dip):  # pragma: no cover
    """Which region pixels are separate maxima: a flooding of each region from its highest pixel down
    (union-find). When a pixel joins components, each but the one with the highest maximum is tested at this
    saddle and merged into it unless its maximum stands out; the roots left are the maxima kept."""
    m = pos.size
    local = np.full(n_set, -1, np.int64)  # position in the set -> number among the region pixels (-1: none)
    for i in range(m):
        local[pos[i]] = i
    rank = np.empty(m, np.int64)  # 0 for the highest pixel
    for r in range(m):
        rank[order[r]] = r
    parent = np.arange(m)
    done = np.zeros(m, np.bool_)
    roots = np.empty(9, np.int64)
    for r in range(m):
        p = order[r]
        n_roots = 0
        for k in range(9):
            q = nb[k, p]
            if q < 0:
                continue
            j = local[q]
            if j < 0 or not done[j] or plab[j] != plab[p]:
                continue
            while parent[j] != j:  # find, halving the path
                parent[j] = parent[parent[j]]
                j = parent[j]
            seen = False
            for t in range(n_roots):
                seen = seen or roots[t] == j
            if not seen:
                roots[n_roots] = j
                n_roots += 1
        done[p] = True
        if n_roots == 0:
            continue  # a new maximum
        top = roots[0]
        for t in range(1, n_roots):
            if rank[roots[t]] < rank[top]:
                top = roots[t]
        parent[p] = top
        saddle = value[p]
        for t in range(n_roots):
            j = roots[t]
            if j == top:
                continue
            dip = value[j] - saddle
            sigma = np.sqrt(2.0 * noise[j] ** 2 + gain * (max(value[j], 0.0) + max(saddle, 0.0)))
            if dip >= k_sigma * sigma and dip >= min_dip * value[j]:
                continue  # a maximum of its own: its component stays apart
            parent[j] = top
    keep = np.zeros(m, np.bool_)
    for i in range(m):
        keep[i] = parent[i] == i
    return keep


def _grow(c: CandidatePixels, px: _Pixels, labels: NDArray[np.int32], grow_px: float) -> NDArray[np.int32]:
    """Regions widened to the free pixels within ``grow_px``.

    As in the full-frame code, which visits the offsets nearest first (raster order among equals), a free
    pixel (not in a region, not bad, on the region pixel's panel) goes to the region pixel at the first
    offset that reaches it.
    """
    reach = int(np.floor(grow_px))
    dr, dc = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    dist = np.hypot(dr, dc).ravel()
    order = np.argsort(dist, kind="stable")  # nearest offsets first, raster order among equals
    order = order[(dist[order] > 0) & (dist[order] <= grow_px)]
    rank = np.full(dist.size, -1, np.int64)
    rank[order] = np.arange(order.size)
    out, missing = _grow_kernel(
        px.index,
        px.h,
        px.w,
        np.ascontiguousarray(labels, np.int32),
        np.ascontiguousarray(c.bad, np.bool_),
        np.ascontiguousarray(c.panel, np.int32),
        rank.reshape(dr.shape),
        reach,
    )
    if missing:
        raise ValueError(_REACH_MESSAGE)
    return out


def _measure(
    c: CandidatePixels, px: _Pixels, labels: NDArray[np.int32], wide: NDArray[np.int32], n: int
) -> dict[str, NDArray[Any]]:
    """The peak columns (:data:`PEAK_COLUMNS`) of the regions, over the candidate pixels."""
    if n == 0:
        empty = np.empty(0)
        return {k: empty for k in PEAK_COLUMNS if k != "n_pixels"} | {"n_pixels": np.empty(0, np.int64)}
    core = np.flatnonzero(labels)
    score = np.zeros(n + 1)
    np.maximum.at(score, labels[core], c.prob[core].astype(np.float64))
    idx = np.flatnonzero(wide)
    lab = wide[idx]
    rr, cc = px.row[idx].astype(np.float64), px.col[idx].astype(np.float64)
    res = c.residual[idx].astype(np.float64)
    pw = c.prob[idx].astype(np.float64)

    def total(values: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.bincount(lab, weights=values, minlength=n + 1)[1:]

    weight = np.clip(res, 0.0, None)
    wsum, psum = total(weight), total(pw)
    use_w = wsum > 0
    wdiv, pdiv = np.where(use_w, wsum, 1.0), np.maximum(psum, 1e-30)
    row = np.where(use_w, total(weight * rr) / wdiv, total(pw * rr) / pdiv)
    col = np.where(use_w, total(weight * cc) / wdiv, total(pw * cc) / pdiv)
    n_pixels = np.bincount(lab, minlength=n + 1)[1:].astype(np.int64)
    intensity = total(res)
    background = total(c.background[idx].astype(np.float64)) / np.maximum(n_pixels, 1)
    snr = intensity / np.sqrt(np.maximum(total(c.noise[idx].astype(np.float64) ** 2), 1e-30))
    peak = np.full(n + 1, -np.inf)
    np.maximum.at(peak, lab, res)
    return {
        "row": row,
        "col": col,
        "intensity": intensity,
        "background": background,
        "snr": snr,
        "n_pixels": n_pixels,
        "max_value": peak[1:] + background,
        "score": score[1:],
    }


def _along_mask(c: CandidatePixels, px: _Pixels, labels: NDArray[np.int32], n: int) -> NDArray[np.float64]:
    """Share of each region's pixels touching a bad pixel, another panel or the frame's edge."""
    core = np.flatnonzero(labels)
    if n == 0 or core.size == 0:
        return np.zeros(n)
    _, good = _blocks(c, px, core)
    touch = ~good.all(axis=0)
    lab = labels[core]
    sizes = np.bincount(lab, minlength=n + 1)[1:]
    return np.bincount(lab, weights=touch, minlength=n + 1)[1:] / np.maximum(sizes, 1)


def _blocks(
    c: CandidatePixels, px: _Pixels, pos: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """The (9, M) positions of the 3 x 3 neighbourhoods of the pixels at ``pos`` (the pixel itself beyond the
    frame's edge) and whether each neighbour lies in the frame, is good and is on the pixel's panel."""
    nb, inside = px.block(pos)
    block = np.where(inside, nb, pos)
    return block, inside & ~c.bad[block] & (c.panel[block] == c.panel[pos])


def _brightest(c: CandidatePixels, labels: NDArray[np.int32]) -> NDArray[np.int64]:
    """Position in the set of the brightest pixel of regions 1..n (the first in raster order on a tie)."""
    core = np.flatnonzero(labels)
    if core.size == 0:
        return core
    lab = labels[core]
    value = np.asarray(c.residual, np.float64)[core]
    order = np.lexsort((core, -value, lab))  # by region, brightest first, raster order among equals
    first = np.flatnonzero(np.r_[True, lab[order][1:] != lab[order][:-1]])
    return core[order[first]]


def _block_brightest(c: CandidatePixels, block: NDArray[np.int64], good: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Position in the set of the brightest good pixel of each 3 x 3 block (the centre on a tie)."""
    order = np.array([4, 0, 1, 2, 3, 5, 6, 7, 8])
    residual = np.where(good, np.asarray(c.residual, np.float64)[block], -np.inf)[order]
    pick = order[np.argmax(residual, axis=0)]
    return np.take_along_axis(block, pick[None, :], axis=0)[0]


def _lone_pixel(c: CandidatePixels, block: NDArray[np.int64], good: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Regions that are a lone bright pixel (see :func:`extract_peaks`); ``block``: the (9, n) 3 x 3 blocks of
    their brightest pixels (the pixel itself beyond the frame's edge), ``good``: which are good and on its
    panel."""
    if block.shape[1] == 0 or c.gain <= 0:
        return np.zeros(block.shape[1], bool)
    touch = ~good.all(axis=0)  # judged only with all 8 neighbours good and on its panel
    gain = float(c.gain)
    residual = np.asarray(c.residual, np.float64)[block]
    noise2 = np.asarray(c.noise, np.float64)[block] ** 2
    peak = residual[4]
    spill = residual.sum(axis=0) - peak
    expected = LONE_MIN_SPILL * np.clip(peak, 0.0, None)
    background2 = noise2.sum(axis=0) - noise2[4]
    # the neighbours' counts in photons: the background as a Poisson rate of its variance, plus the spill
    rate = background2 / gain**2
    observed = np.maximum(spill / gain + rate, 0.0)
    too_little = gammaincc(observed + 1.0, expected / gain + rate) < ndtr(-LONE_SIGMA)  # P(X <= observed)
    return ~touch & too_little & (spill < LONE_NEIGHBOUR_SIGMA * np.sqrt(background2))


def _local_max(c: CandidatePixels, block: NDArray[np.int64], good: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Whether each region's brightest pixel (the centre of its block) is the brightest good pixel of the block."""
    residual = np.asarray(c.residual, np.float64)[block]
    return (np.where(good, residual, -np.inf) <= residual[4]).all(axis=0)


def _significance(
    c: CandidatePixels, labels: NDArray[np.int32], block: NDArray[np.int64], good: NDArray[np.bool_]
) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.float64]]:
    """Whether each region's background is sparse, its significance and its spill (see :func:`extract_peaks`;
    ``block`` and ``good`` as for :func:`_lone_pixel`)."""
    n = block.shape[1]
    if n == 0 or c.gain <= 0:
        return np.zeros(n, bool), np.full(n, np.nan), np.full(n, np.nan)
    gain = float(c.gain)
    photons = np.asarray(c.residual, np.float64) / gain
    rate = _photon_rate(c.background, c.noise, gain)
    # the region above the cut
    core = np.flatnonzero(labels)
    lab = labels[core] - 1
    core_photons = np.bincount(lab, weights=photons[core], minlength=n)
    core_rate = np.bincount(lab, weights=rate[core], minlength=n)
    return block_evidence(photons[block], rate[block], good, core_photons, core_rate)
