"""Radial background statistics: iteratively sigma-clipped mean and noise per radius bin (and per panel)."""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "RadialStats",
    "radial_statistics",
    "estimate_gain",
    "candidates_above",
    "noise_floor",
    "estimate_gain_per_panel",
    "background_rate",
    "classify_pixels",
    "PixelClasses",
]


@numba.njit(cache=True, nogil=True)
def _robust_start_kernel(values, use, keys, keys2, n_keys, snr, n_hist):  # pragma: no cover - compiled
    """Per-bin clipping threshold from histogram estimates of the median and the 84th percentile."""
    stride = 3  # a sample of the pixels is enough for a starting point
    # the sample (value and bins) is gathered once, into contiguous arrays
    n_max = (values.size + stride - 1) // stride
    sample_v = np.empty(n_max, np.float32)
    sample_k = np.empty(n_max, np.int32)
    sample_k2 = np.empty(n_max, np.int32)
    lo = np.full(n_keys, np.inf)
    hi = np.full(n_keys, -np.inf)
    m = 0
    for i in range(0, values.size, stride):
        if use[i]:
            v = values[i]
            k = keys[i]
            k2 = keys2[i]
            sample_v[m] = v
            sample_k[m] = k
            sample_k2[m] = k2
            m += 1
            if k >= 0:
                if v < lo[k]:
                    lo[k] = v
                if v > hi[k]:
                    hi[k] = v
            if k2 >= 0:
                if v < lo[k2]:
                    lo[k2] = v
                if v > hi[k2]:
                    hi[k2] = v
    return _threshold_from_sample(sample_v, sample_k, sample_k2, m, lo, hi, n_keys, snr, n_hist)


@numba.njit(cache=True, nogil=True)
def _threshold_from_sample(sample_v, sample_k, sample_k2, m, lo, hi, n_keys, snr, n_hist):  # pragma: no cover
    """Per-bin ``median + snr * (p84 - median)`` from 64-bin histograms of the first ``m`` samples."""
    # one histogram row for each bin that holds a sample
    row = np.full(n_keys, -1, np.int64)
    n_rows = 0
    for k in range(n_keys):
        if hi[k] >= lo[k]:
            row[k] = n_rows
            n_rows += 1
    hist = np.zeros((max(n_rows, 1), n_hist), np.int64)
    for i in range(m):
        v = sample_v[i]
        for t in range(2):
            k = sample_k[i] if t == 0 else sample_k2[i]
            if k < 0:
                continue
            span = hi[k] - lo[k]
            j = int((v - lo[k]) / span * n_hist) if span > 0 else 0
            if j >= n_hist:
                j = n_hist - 1
            hist[row[k], j] += 1
    threshold = np.full(n_keys, np.inf)
    for k in range(n_keys):
        if row[k] < 0:
            continue
        h = hist[row[k]]
        total = h.sum()
        if total == 0:
            continue
        width = (hi[k] - lo[k]) / n_hist
        acc = 0
        med = -1
        p84 = -1
        for j in range(n_hist):
            acc += h[j]
            if med < 0 and acc >= 0.5 * total:
                med = j
            if p84 < 0 and acc >= 0.8413 * total:
                p84 = j
                break
        median = lo[k] + (med + 0.5) * width
        spread = max((p84 - med) * width, width)
        threshold[k] = median + snr * spread
    return threshold


@numba.njit(cache=True, nogil=True)
def _robust_start_sink_kernel(values, keys, keys2, two_keys, sink, snr, n_hist):  # pragma: no cover
    """:func:`_robust_start_kernel` on the keys of :func:`_fill_sink_keys` (same sample, same result)."""
    stride = 3
    n_max = (values.size + stride - 1) // stride
    sample_v = np.empty(n_max, np.float32)
    sample_k = np.empty(n_max, np.int32)
    sample_k2 = np.empty(n_max, np.int32)
    lo = np.full(sink, np.inf)
    hi = np.full(sink, -np.inf)
    m = 0
    for i in range(0, values.size, stride):
        k = np.int64(keys[i])
        if k == sink:  # not used
            continue
        v = values[i]
        k2 = np.int64(keys2[i]) if two_keys else sink
        sample_v[m] = v
        sample_k[m] = k
        sample_k2[m] = k2 if k2 != sink else -1
        m += 1
        if v < lo[k]:
            lo[k] = v
        if v > hi[k]:
            hi[k] = v
        if k2 != sink:
            if v < lo[k2]:
                lo[k2] = v
            if v > hi[k2]:
                hi[k2] = v
    return _threshold_from_sample(sample_v, sample_k, sample_k2, m, lo, hi, sink, snr, n_hist)


@numba.njit(cache=True, nogil=True)
def _clipped_stats_kernel(
    values, use, keys, keys2, n_keys, iterations, snr, floor, sigma_floor, start
):  # pragma: no cover - compiled
    threshold = start.copy()
    offset = np.zeros(n_keys)
    sigma = np.zeros(n_keys)
    count = np.zeros(n_keys, np.int64)
    s1 = np.zeros(n_keys)
    s2 = np.zeros(n_keys)
    previous = np.full(n_keys, -1, np.int64)
    for _ in range(iterations):
        s1[:] = 0.0
        s2[:] = 0.0
        count[:] = 0
        for i in range(values.size):
            if not use[i]:
                continue
            v = values[i]
            k = keys[i]
            if v < threshold[k]:
                s1[k] += v
                s2[k] += v * v
                count[k] += 1
            k = keys2[i]
            if k >= 0 and v < threshold[k]:
                s1[k] += v
                s2[k] += v * v
                count[k] += 1
        for k in range(n_keys):
            if count[k] == 0:
                offset[k] = 0.0
                sigma[k] = 0.0
                threshold[k] = np.inf
            else:
                m = s1[k] / count[k]
                var = s2[k] / count[k] - m * m
                offset[k] = m
                sigma[k] = np.sqrt(var) if var > 0 else 0.0
                threshold[k] = max(m + snr * max(sigma[k], sigma_floor), floor)
        # stop once (almost) no pixel changes sides: one in ten thousand does not move any threshold
        changed = 0
        total = 0
        for k in range(n_keys):
            changed += abs(count[k] - previous[k])
            total += count[k]
        if changed <= max(2, total // 10000):
            break
        previous[:] = count
    return offset, sigma, count


@numba.njit(cache=True, nogil=True)
def _fill_sink_keys(use, keys, keys2, sink, out, out2, two_keys):  # pragma: no cover - compiled
    """Bins of the used pixels in a narrow integer type; unused pixels (and missing second bins) go to
    the ``sink`` bin, which never takes a value."""
    for i in range(keys.size):
        if use[i]:
            out[i] = keys[i]
            if two_keys:
                k2 = keys2[i]
                out2[i] = k2 if k2 >= 0 else sink
        else:
            out[i] = sink
            if two_keys:
                out2[i] = sink


@numba.njit(cache=True, nogil=True)
def _clipped_stats_sink_kernel(
    values, keys, keys2, two_keys, n_keys, iterations, snr, floor, sigma_floor, start, n_empty
):  # pragma: no cover - compiled
    """:func:`_clipped_stats_kernel` on the keys of :func:`_fill_sink_keys` (same sums, same order);
    ``n_empty`` bins without pixels were left out (they count once in the first convergence test)."""
    threshold = np.empty(n_keys + 1)
    threshold[:n_keys] = start
    threshold[n_keys] = -np.inf  # the sink bin
    offset = np.zeros(n_keys)
    sigma = np.zeros(n_keys)
    count = np.zeros(n_keys + 1, np.int64)
    s1 = np.zeros(n_keys + 1)
    s2 = np.zeros(n_keys + 1)
    previous = np.full(n_keys, -1, np.int64)
    for it in range(iterations):
        s1[:] = 0.0
        s2[:] = 0.0
        count[:] = 0
        if two_keys:
            for i in range(values.size):
                v = values[i]
                k = keys[i]
                if v < threshold[k]:
                    s1[k] += v
                    s2[k] += v * v
                    count[k] += 1
                k = keys2[i]
                if v < threshold[k]:
                    s1[k] += v
                    s2[k] += v * v
                    count[k] += 1
        else:
            for i in range(values.size):
                v = values[i]
                k = keys[i]
                if v < threshold[k]:
                    s1[k] += v
                    s2[k] += v * v
                    count[k] += 1
        for k in range(n_keys):
            if count[k] == 0:
                offset[k] = 0.0
                sigma[k] = 0.0
                threshold[k] = np.inf
            else:
                m = s1[k] / count[k]
                var = s2[k] / count[k] - m * m
                offset[k] = m
                sigma[k] = np.sqrt(var) if var > 0 else 0.0
                threshold[k] = max(m + snr * max(sigma[k], sigma_floor), floor)
        changed = n_empty if it == 0 else 0
        total = 0
        for k in range(n_keys):
            changed += abs(count[k] - previous[k])
            total += count[k]
        if changed <= max(2, total // 10000):
            break
        previous[:n_keys] = count[:n_keys]
    return offset, sigma, count[:n_keys].copy()


@numba.njit(cache=True, nogil=True)
def _candidate_kernel(data, bad, key, threshold, radius, min_res, max_res):  # pragma: no cover
    h, w = data.shape
    out = np.zeros((h, w), np.bool_)
    for r in range(h):
        for c in range(w):
            if bad[r, c]:
                continue
            if data[r, c] > threshold[key[r, c]]:
                x = radius[r, c]
                if x >= min_res and x <= max_res:
                    out[r, c] = True
    return out


@numba.njit(cache=True, nogil=True)
def _classify_kernel(
    data, bad, check_bad, key, sink, threshold, radius, min_res, max_res, key_radius, level, n_r, cut
):  # pragma: no cover - compiled
    """One pass over the frame once its statistics are known: candidate pixels (and their flat indices
    in raster order), ring counts on every other pixel (when ``level`` is not empty) and the sums of
    the background-rate trimmed mean (when ``cut`` is not empty). Pixels that are ``bad`` (when
    ``check_bad``) or in the ``sink`` bin are skipped."""
    h, w = data.shape
    out = np.zeros((h, w), np.bool_)
    n_members = 0
    rings = level.size > 0
    rate = cut.size > 0
    above = np.zeros(n_r, np.int64)
    total = np.zeros(n_r, np.int64)
    s = np.zeros(cut.size)
    n = np.zeros(cut.size, np.int64)
    for r in range(h):
        for c in range(w):
            if check_bad and bad[r, c]:
                continue
            k = key[r, c]
            if k == sink:
                continue
            v = data[r, c]
            if v > threshold[k]:
                x = radius[r, c]
                if x >= min_res and x <= max_res:
                    out[r, c] = True
                    n_members += 1
            if rate and v < cut[k]:
                s[k] += v
                n[k] += 1
            if rings and ((r + c) & 1) == 0:
                b = key_radius[k]
                total[b] += 1
                if v > level[k]:
                    above[b] += 1
    members = np.empty(n_members, np.int64)
    j = 0
    if n_members > 0:
        flat = out.ravel()
        for i in range(flat.size):
            if flat[i]:
                members[j] = i
                j += 1
    mean = np.zeros(cut.size)
    for k in range(cut.size):
        if n[k] > 0:
            mean[k] = s[k] / n[k]
    return out, members, above, total, mean


@dataclass(frozen=True)
class PixelClasses:
    """What :func:`classify_pixels` found in one pass over a frame.

    Attributes
    ----------
    candidate : (H, W) bool ndarray
        Good pixels above their bin's threshold inside the radius range.
    members : (C,) int64 ndarray
        Flat indices of the candidate pixels, in raster order.
    ring_above, ring_total : (R,) int64 ndarrays or None
        Per radius group, the looked-at pixels above the ring level and all looked-at pixels (see
        :func:`braggml.classical.rings.ring_evidence`); None when no ring levels were given.
    rate : (B,) float ndarray or None
        Background photons per pixel of each bin (see :func:`background_rate`); None without a cut.
    """

    candidate: NDArray[np.bool_]
    members: NDArray[np.int64]
    ring_above: NDArray[np.int64] | None
    ring_total: NDArray[np.int64] | None
    rate: NDArray[np.float64] | None


def classify_pixels(
    data: NDArray[np.float32],
    bad: NDArray[np.bool_] | None,
    stats: RadialStats,
    threshold: NDArray[np.float32],
    radius_px: NDArray,
    min_res: float,
    max_res: float,
    *,
    ring_level: NDArray[np.float32] | None = None,
    rate_gain: float = 0.0,
    rate_photons: float = 3.0,
) -> PixelClasses:
    """:func:`candidates_above`, the ring counts of :func:`~braggml.classical.rings.ring_evidence` and
    :func:`background_rate` in a single pass over the frame (identical results).

    Parameters
    ----------
    data : (H, W) float32 ndarray
    bad : (H, W) bool ndarray or None
        Pixels never taken; None for the pixels left out of the statistics (needs
        ``stats.used_bin``).
    stats : RadialStats
    threshold : (B,) float32 ndarray
        Candidate threshold of each bin.
    radius_px : (H, W) ndarray
    min_res, max_res : float
        Radius range of candidate pixels.
    ring_level : (B,) float32 ndarray, optional
        Ring level of each bin (:func:`~braggml.classical.rings.ring_levels`); no ring counts when None.
    rate_gain : float
        Detector units per photon for the background rate; no rate when not positive.
    rate_photons : float
        As ``photons`` of :func:`background_rate`.
    """
    n_r = int(stats.radius_bin.max()) + 1 if stats.radius_bin.size else 1
    rings = ring_level is not None
    with_rate = rate_gain > 0
    cut = _rate_cut(stats, rate_gain, rate_photons) if with_rate else np.zeros(0)
    level = np.asarray(ring_level, dtype=np.float32) if rings else np.zeros(0, np.float32)
    threshold = np.asarray(threshold, dtype=np.float32)
    key_radius = stats.radius_bin
    if bad is None:
        if stats.used_bin is None or stats.used_bin_keys is None:
            raise ValueError("bad=None needs statistics with used_bin")
        full = stats.used_bin_keys
        check_bad, bad_map, key, sink = False, np.zeros((1, 1), np.bool_), stats.used_bin, full.size
        threshold, key_radius = threshold[full], key_radius[full]
        level = level[full] if rings else level
        cut = cut[full] if with_rate else cut
    else:
        check_bad, bad_map, key, sink = True, bad, stats.bin_index, -1
    out, members, above, total, mean = _classify_kernel(
        data,
        bad_map,
        check_bad,
        key,
        sink,
        np.ascontiguousarray(threshold),
        np.ascontiguousarray(radius_px, dtype=np.float32),
        float(min_res),
        float(max_res),
        np.ascontiguousarray(key_radius),
        np.ascontiguousarray(level),
        n_r,
        np.ascontiguousarray(cut),
    )
    if bad is None and with_rate:
        expanded = np.zeros(stats.offset.size)
        expanded[stats.used_bin_keys] = mean
        mean = expanded
    return PixelClasses(
        candidate=out,
        members=members,
        ring_above=above if rings else None,
        ring_total=total if rings else None,
        rate=np.maximum(mean, 0.0) / rate_gain if with_rate else None,
    )


def candidates_above(
    data: NDArray[np.float32],
    bad: NDArray[np.bool_],
    bin_index: NDArray[np.int32],
    threshold: NDArray[np.float32],
    radius_px: NDArray,
    min_res: float,
    max_res: float,
) -> NDArray[np.bool_]:
    """Good pixels above their bin's threshold whose radius lies in ``[min_res, max_res]``."""
    return _candidate_kernel(
        data,
        bad,
        bin_index,
        np.ascontiguousarray(threshold, dtype=np.float32),
        np.ascontiguousarray(radius_px, dtype=np.float32),
        float(min_res),
        float(max_res),
    )


@numba.njit(cache=True, nogil=True)
def _rounded_radius_kernel(radius, n_r):  # pragma: no cover - compiled
    h, w = radius.shape
    key = np.zeros((h, w), np.int32)
    for r in range(h):
        for c in range(w):
            x = radius[r, c]
            b = int(np.rint(x)) if np.isfinite(x) and x > 0 else 0
            if b >= n_r:
                b = n_r - 1
            key[r, c] = b
    return key


def _group_radii(counts: NDArray[np.int64], min_count: int) -> NDArray[np.int64]:
    """Group consecutive 1-pixel radius bins until each group holds ``min_count`` pixels."""
    group = np.zeros(counts.size, np.int64)
    g = 0
    acc = 0
    for r in range(counts.size):
        group[r] = g
        acc += counts[r]
        if acc >= min_count:
            g += 1
            acc = 0
    if acc and g > 0:  # a short last group joins the one before
        group[group == g] = g - 1
    return group


@numba.njit(cache=True, nogil=True)
def _bin_keys_kernel(rbin, panel_id, n_r, n_panels, min_count):  # pragma: no cover - compiled
    """Per-panel key of each pixel (its own panel's bin, or the all-panel bin where the panel's bin is
    small), and the all-panel key each pixel also feeds."""
    h, w = rbin.shape
    counts = np.zeros(n_panels * n_r, np.int64)
    for r in range(h):
        for c in range(w):
            p = panel_id[r, c]
            if p >= 0:
                counts[p * n_r + rbin[r, c]] += 1
    key = np.empty((h, w), np.int32)
    key2 = np.empty((h, w), np.int32)
    for r in range(h):
        for c in range(w):
            p = panel_id[r, c]
            b = rbin[r, c]
            glob = n_panels * n_r + b
            if p >= 0 and counts[p * n_r + b] >= min_count:
                key[r, c] = p * n_r + b
                key2[r, c] = glob
            else:
                key[r, c] = glob
                key2[r, c] = -1
    return key, key2


_KEY_CACHE: list = []
#: Bins that fit the 16-bit bin maps of the compiled passes (one value is the sink bin).
_NARROW_BINS = int(np.iinfo(np.uint16).max)


def _bin_keys(radius_px: NDArray, panel_id: NDArray[np.int32], per_panel: bool, min_bin_pixels: int) -> tuple:
    """Bin of every pixel, the all-panel bin it also feeds (-1 if none), the number of bins, the radius
    group of each bin, the group of each rounded radius, the same two bin maps numbered over the bins
    that hold pixels only, and the bin of each such compact bin (the result for the last maps is
    cached)."""
    for entry in _KEY_CACHE:
        if entry[0] is radius_px and entry[1] is panel_id and entry[2] == (per_panel, min_bin_pixels):
            return entry[3]
    radius = np.ascontiguousarray(radius_px, dtype=np.float32)
    panel = np.ascontiguousarray(panel_id, dtype=np.int32)
    finite = radius[np.isfinite(radius)]
    n_round = int(np.rint(finite.max())) + 1 if finite.size else 1
    rounded = _rounded_radius_kernel(radius, n_round)
    group = _group_radii(np.bincount(rounded[panel >= 0], minlength=n_round), min_bin_pixels)
    n_r = int(group.max()) + 1
    rbin = group.astype(np.int32)[rounded]
    n_panels = max(int(panel.max()) + 1, 1) if per_panel else 1
    split = per_panel and n_panels > 1
    if not split:
        n_panels = 1
    if split:
        key32, key2 = _bin_keys_kernel(rbin, panel, n_r, n_panels, min_bin_pixels)
    else:
        key32, key2 = rbin, np.full(rbin.shape, -1, np.int32)
    if split:
        n_keys = (n_panels + 1) * n_r
        radius_bin = np.concatenate([np.tile(np.arange(n_r), n_panels), np.arange(n_r)])
    else:
        n_keys = n_r
        radius_bin = np.arange(n_r)
    # bins that hold pixels, numbered compactly in the same order (per-panel bins mostly hold none)
    present = np.zeros(n_keys, bool)
    present[key32.ravel()] = True
    present[key2[key2 >= 0]] = True
    full_of = np.flatnonzero(present).astype(np.int64)
    compact_of = np.full(n_keys, -1, np.int32)
    compact_of[full_of] = np.arange(full_of.size, dtype=np.int32)
    compact1 = compact_of[key32]
    compact2 = np.where(key2 >= 0, compact_of[np.maximum(key2, 0)], -1).astype(np.int32)
    result = (key32, key2, n_keys, radius_bin.astype(np.int64), group, compact1, compact2, full_of)
    _KEY_CACHE[:] = [(radius_px, panel_id, (per_panel, min_bin_pixels), result)]
    return result


@dataclass(frozen=True)
class RadialStats:
    """Background statistics per bin.

    Attributes
    ----------
    bin_index : (H, W) int32 ndarray
        Bin of each pixel.
    offset, sigma : (B,) float32 ndarrays
        Clipped mean and standard deviation of each bin.
    count : (B,) int64 ndarray
        Pixels that entered the last iteration.
    radius_bin : (B,) int64 ndarray
        Radius group of each bin: consecutive 1-pixel radius bins are grouped until each group holds
        enough pixels (only near the beam does a group span several pixels).
    radius_group : (R,) int64 ndarray
        Group of each rounded radius in pixels.
    used_bin : (H, W) uint16 ndarray or None
        Compact bin (an index into ``used_bin_keys``) of each pixel that entered the statistics, and
        ``K`` for the others: the narrow form of ``bin_index`` read by the compiled passes; None when
        the bins holding pixels do not fit in 16 bits.
    used_bin_keys : (K,) int64 ndarray or None
        The bin of each compact bin (the bins that hold pixels, in increasing order).
    """

    bin_index: NDArray[np.int32]
    offset: NDArray[np.float32]
    sigma: NDArray[np.float32]
    count: NDArray[np.int64]
    radius_bin: NDArray[np.int64]
    radius_group: NDArray[np.int64]
    used_bin: NDArray[np.uint16] | None = None
    used_bin_keys: NDArray[np.int64] | None = None


def radial_statistics(
    data: NDArray[np.float32],
    use: NDArray[np.bool_],
    radius_px: NDArray,
    panel_id: NDArray[np.int32],
    *,
    snr: float,
    floor: float = -np.inf,
    sigma_floor: float = 0.0,
    iterations: int = 5,
    per_panel: bool = False,
    min_bin_pixels: int = 100,
    robust_start: bool = True,
) -> RadialStats:
    """Clipped background mean and noise per 1-pixel radius bin.

    Each iteration keeps the pixels below ``max(floor, mean + snr * sigma)`` of the previous one, as in
    peakfinder8 (Barty et al. 2014). The first keeps all pixels, or, with ``robust_start``, those below
    ``median + snr * (p84 - median)`` estimated from a 64-bin histogram of every third pixel of each
    bin, so that bins where
    strong spots hold a large share of the pixels converge to their background.

    Parameters
    ----------
    data : (H, W) float32 ndarray
    use : (H, W) bool ndarray
        Pixels entering the statistics.
    radius_px : (H, W) ndarray
        Distance of each pixel from the beam; bins are ``rint(radius_px)``.
    panel_id : (H, W) int32 ndarray
    snr : float
        Clipping level in standard deviations.
    floor : float
        Lowest clipping threshold (peakfinder8's ``adc_threshold``).
    sigma_floor : float
        Lowest sigma used for the clipping threshold (keeps sparse photon counts from collapsing the
        statistics to zero).
    iterations : int
        Number of clipping passes.
    min_bin_pixels : int
        Consecutive radius bins are merged until each holds this many pixels.
    per_panel : bool
        Separate statistics for each panel and radius (panels with their own offsets or gains); a
        panel's bin with fewer than ``min_bin_pixels`` pixels uses the all-panel bin of its radius.
    """
    key32, key2, n_keys, radius_bin, group, compact1, compact2, full_of = _bin_keys(
        radius_px, panel_id, per_panel, int(min_bin_pixels)
    )
    values = np.ascontiguousarray(data).ravel()
    flat_use = np.ascontiguousarray(use).ravel()
    two_keys = n_keys > int(group.max()) + 1  # per-panel bins: each pixel also feeds an all-panel bin
    n_compact = full_of.size
    narrow = None
    if n_compact < _NARROW_BINS:
        # the bins that hold pixels, in 16 bits, with unused pixels in a sink bin: each clipping pass
        # reads less memory and the per-bin arrays stay small
        narrow = np.empty(values.size, np.uint16)
        narrow2 = np.empty(values.size if two_keys else 1, np.uint16)
        _fill_sink_keys(flat_use, compact1.ravel(), compact2.ravel(), n_compact, narrow, narrow2, two_keys)
        if robust_start:
            start = _robust_start_sink_kernel(values, narrow, narrow2, two_keys, n_compact, float(snr), 64)
        else:
            start = np.full(n_compact, np.inf)
        offset_c, sigma_c, count_c = _clipped_stats_sink_kernel(
            values,
            narrow,
            narrow2,
            two_keys,
            n_compact,
            int(iterations),
            float(snr),
            float(floor),
            float(sigma_floor),
            np.asarray(start, np.float64),
            n_keys - n_compact,
        )
        offset = np.zeros(n_keys)
        sigma = np.zeros(n_keys)
        count = np.zeros(n_keys, np.int64)
        offset[full_of] = offset_c
        sigma[full_of] = sigma_c
        count[full_of] = count_c
    else:
        if robust_start:
            start = _robust_start_kernel(values, flat_use, key32.ravel(), key2.ravel(), n_keys, float(snr), 64)
        else:
            start = np.full(n_keys, np.inf)
        offset, sigma, count = _clipped_stats_kernel(
            values,
            flat_use,
            key32.ravel(),
            key2.ravel(),
            n_keys,
            int(iterations),
            float(snr),
            float(floor),
            float(sigma_floor),
            start,
        )
    return RadialStats(
        bin_index=key32,
        offset=offset.astype(np.float32),
        sigma=sigma.astype(np.float32),
        count=count,
        radius_bin=radius_bin,
        radius_group=group,
        used_bin=None if narrow is None else narrow.reshape(key32.shape),
        used_bin_keys=None if narrow is None else full_of,
    )


def _median(values: NDArray[np.float64]) -> float:
    """``np.median`` of a non-empty 1-D array without NaNs (same value, less overhead)."""
    n = values.size
    lo, hi = (n - 1) // 2, n // 2
    part = np.partition(values, (lo, hi))
    return float((part[lo] + part[hi]) / 2.0)


def estimate_gain(offset: NDArray, sigma: NDArray, count: NDArray, *, min_count: int = 200) -> float:
    """Detector units per photon from how the background variance grows with its mean across bins.

    For a shot-noise-limited background, ``var = gain * (mean - pedestal) + read_noise**2``; the slope of
    a robust straight-line fit of the binned clipped variances against the binned means is the gain.
    Returns 0 when the means do not vary enough for a fit (no shot-noise term is then used).
    """
    ok = (count >= min_count) & np.isfinite(offset) & np.isfinite(sigma)
    if ok.sum() < 10:
        return 0.0
    m = np.asarray(offset, np.float64)[ok]
    v = np.asarray(sigma, np.float64)[ok] ** 2
    lo, hi = np.percentile(m, [5, 95])
    if hi - lo <= 1e-6 * max(abs(hi), 1.0):
        return 0.0
    keep = np.ones(m.size, bool)
    slope = 0.0
    for _ in range(4):
        a = np.ones((int(keep.sum()), 2), order="F")
        a[:, 0] = m[keep]
        (slope, icpt), *_ = np.linalg.lstsq(a, v[keep], rcond=None)
        resid = v - (slope * m + icpt)
        mad = _median(np.abs(resid[keep])) * 1.4826 + 1e-12
        keep = np.abs(resid) < 4 * mad
        if keep.sum() < 10:
            break
    spread = m[keep].std() if keep.any() else 0.0
    if not np.isfinite(slope) or spread <= 0:
        return 0.0
    return float(max(slope, 0.0))


def noise_floor(data: NDArray[np.float32], good: NDArray[np.bool_], integer: bool) -> float:
    """Smallest background sigma worth trusting.

    Half a count for integer data (photon counts or raw ADU); for float data, a thousandth of the
    spread between the median and the 99.9th percentile (on every 7th pixel), so that a noiseless or
    nearly noiseless frame does not turn every value above the background into a candidate.
    """
    if integer:
        return 0.5
    sample = data.ravel()[::7][good.ravel()[::7]]
    if sample.size == 0:
        return 0.0
    lo, hi = np.percentile(sample, [50.0, 99.9])
    return float(max(hi - lo, 0.0) * 1e-3)


def estimate_gain_per_panel(stats: RadialStats, *, min_count: int = 200) -> float:
    """:func:`estimate_gain` for each panel's radius bins, then the median over panels.

    Panels with their own offsets (integrating detectors) spread the all-panel means without raising the
    variance, which flattens a single fit; fitting each panel alone avoids that.
    """
    n_r = int(stats.radius_bin.max()) + 1 if stats.radius_bin.size else 1
    n_rows = stats.offset.size // n_r
    if n_rows <= 1:
        return estimate_gain(stats.offset, stats.sigma, stats.count, min_count=min_count)
    slopes = []
    for row in range(n_rows - 1):  # the last row holds the all-panel bins
        part = slice(row * n_r, (row + 1) * n_r)
        g = estimate_gain(stats.offset[part], stats.sigma[part], stats.count[part], min_count=min_count)
        if g > 0:
            slopes.append(g)
    if not slopes:
        return estimate_gain(stats.offset, stats.sigma, stats.count, min_count=min_count)
    return float(np.median(slopes))


@numba.njit(cache=True, nogil=True)
def _trimmed_mean_kernel(values, use, keys, n_keys, cut):  # pragma: no cover - compiled
    s = np.zeros(n_keys)
    n = np.zeros(n_keys, np.int64)
    for i in range(values.size):
        if use[i]:
            k = keys[i]
            v = values[i]
            if v < cut[k]:
                s[k] += v
                n[k] += 1
    out = np.zeros(n_keys)
    for k in range(n_keys):
        if n[k] > 0:
            out[k] = s[k] / n[k]
    return out


def background_rate(
    data: NDArray[np.float32], use: NDArray[np.bool_], stats: RadialStats, gain: float, *, photons: float = 3.0
) -> NDArray[np.float64]:
    """Mean background per bin in photons, counting the isolated photons that sigma clipping removes.

    On a sparse background recorded with little read noise (integrating detectors that resolve single
    photons, low-background counting detectors) the clipped statistics keep only the pixels without a
    photon and so miss the photon rate. Here every pixel below ``offset + max(photons * gain, 5 * sigma)``
    of its bin counts, which keeps single photons in and Bragg-spot cores out.

    Returns
    -------
    (B,) float ndarray
        Background photons per pixel of each bin (0 without a gain).
    """
    if not gain > 0:
        return np.zeros(stats.offset.size)
    mean = _trimmed_mean_kernel(
        np.ascontiguousarray(data).ravel(),
        np.ascontiguousarray(use).ravel(),
        stats.bin_index.ravel(),
        stats.offset.size,
        _rate_cut(stats, gain, photons),
    )
    return np.maximum(mean, 0.0) / gain


def _rate_cut(stats: RadialStats, gain: float, photons: float) -> NDArray[np.float64]:
    """Per-bin upper limit of the pixels that count towards the background rate."""
    return stats.offset.astype(np.float64) + np.maximum(photons * gain, 5.0 * stats.sigma.astype(np.float64))
