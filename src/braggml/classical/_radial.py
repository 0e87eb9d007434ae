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


@numba.njit(cache=True, nogil=True, inline="always")
def _hist_slot(v, lo, span, n_hist):  # pragma: no cover - compiled
    """Histogram column of ``v`` among ``n_hist`` columns from ``lo`` over ``span``."""
    j = int((v - lo) / span * n_hist) if span > 0 else 0
    if j >= n_hist:
        j = n_hist - 1
    return j


@numba.njit(cache=True, nogil=True, inline="always")
def _median_spread(h, total, lo, hi, n_hist):  # pragma: no cover - compiled
    """Median and ``max(p84 - median, column width)`` of a histogram ``h`` of ``total`` samples
    between ``lo`` and ``hi``."""
    width = (hi - lo) / n_hist
    acc = 0
    med = -1
    p84 = -1
    for j in range(n_hist):
        acc += np.int64(h[j])
        if med < 0 and acc >= 0.5 * total:
            med = j
        if p84 < 0 and acc >= 0.8413 * total:
            p84 = j
            break
    median = lo + (med + 0.5) * width
    spread = max((p84 - med) * width, width)
    return median, spread


@numba.njit(cache=True, nogil=True, inline="always")
def _add_sums(s1, s2, n, k, v):  # pragma: no cover - compiled
    """Add ``v`` to the sum, sum of squares and count of bin ``k``."""
    s1[k] += v
    s2[k] += v * v
    n[k] += 1


@numba.njit(cache=True, nogil=True, inline="always")
def _finish_bins(s1, s2, count, offset, sigma, threshold, snr, floor, sigma_floor):  # pragma: no cover
    """Mean, standard deviation and next clipping threshold of each bin from its sums."""
    for k in range(count.size):
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


@numba.njit(cache=True, nogil=True, inline="always")
def _settled(count, previous, changed):  # pragma: no cover - compiled
    """Whether (almost) no pixel changed sides since the ``previous`` counts (``changed`` more are
    counted as moved): one in ten thousand does not move any threshold. Otherwise the counts become
    the ``previous`` ones."""
    total = 0
    for k in range(count.size):
        changed += abs(count[k] - previous[k])
        total += count[k]
    if changed <= max(2, total // 10000):
        return True
    previous[:] = count
    return False


@numba.njit(cache=True, nogil=True, inline="always")
def _sum_means(s, n):  # pragma: no cover - compiled
    """``s / n`` per bin (0 where ``n`` is 0)."""
    mean = np.zeros(s.size)
    for k in range(s.size):
        if n[k] > 0:
            mean[k] = s[k] / n[k]
    return mean


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
            hist[row[k], _hist_slot(v, lo[k], hi[k] - lo[k], n_hist)] += 1
    threshold = np.full(n_keys, np.inf)
    for k in range(n_keys):
        if row[k] < 0:
            continue
        h = hist[row[k]]
        total = h.sum()
        if total == 0:
            continue
        median, spread = _median_spread(h, total, lo[k], hi[k], n_hist)
        threshold[k] = median + snr * spread
    return threshold


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
                _add_sums(s1, s2, count, k, v)
            k = keys2[i]
            if k >= 0 and v < threshold[k]:
                _add_sums(s1, s2, count, k, v)
        _finish_bins(s1, s2, count, offset, sigma, threshold, snr, floor, sigma_floor)
        # stop once (almost) no pixel changes sides
        if _settled(count, previous, 0):
            break
    return offset, sigma, count


@numba.njit(cache=True, nogil=True)
def _sink_keys_kernel(values, use, compact, partner, sink):  # pragma: no cover - compiled
    """Compact bin of each used pixel (``sink`` for the others) and, over every third pixel (the
    sample of the robust start), the lowest and highest value feeding each compact bin."""
    n = values.size
    out = np.empty(n, np.uint16)
    for i in range(n):
        out[i] = compact[i] if use[i] else sink
    lo = np.full(sink, np.inf)
    hi = np.full(sink, -np.inf)
    for i in range(0, n, 3):
        k = np.int64(out[i])
        if k == sink:
            continue
        v = values[i]
        if v < lo[k]:
            lo[k] = v
        if v > hi[k]:
            hi[k] = v
    # every sample of a bin also feeds its partner: the partner's range covers the bin's
    for k in range(sink):
        g = partner[k]
        if g >= 0:
            if lo[k] < lo[g]:
                lo[g] = lo[k]
            if hi[k] > hi[g]:
                hi[g] = hi[k]
    return out, lo, hi


@numba.njit(cache=True, nogil=True)
def _robust_start_hist_kernel(values, keys, partner, sink, lo, hi, snr, hist, level_snr):  # pragma: no cover
    """Per compact bin ``median + snr * (p84 - median)`` from histograms (``hist``: zeros, one row of
    as many bins as it has columns for each compact bin; its integer type must hold the sample
    counts) between the ``lo`` and ``hi`` of :func:`_sink_keys_kernel`, of every third used
    pixel; each pixel also feeds its bin's ``partner`` (the all-panel bin of its radius, if any).
    Also returns ``median + level_snr * (p84 - median)`` (+inf for bins without samples)."""
    n_hist = hist.shape[1]
    span = np.zeros(sink)
    for k in range(sink):
        span[k] = hi[k] - lo[k]
    for i in range(0, values.size, 3):
        k = np.int64(keys[i])
        if k == sink:
            continue
        v = values[i]
        for t in range(2):
            if t == 1:
                k = partner[k]
                if k < 0:
                    break
            hist[k, _hist_slot(v, lo[k], span[k], n_hist)] += 1
    threshold = np.full(sink, np.inf)
    level = np.full(sink, np.inf)
    for k in range(sink):
        if hi[k] < lo[k]:
            continue
        h = hist[k]
        total = 0
        for j in range(n_hist):
            total += np.int64(h[j])
        if total == 0:
            continue
        median, spread = _median_spread(h, total, lo[k], hi[k], n_hist)
        threshold[k] = median + snr * spread
        level[k] = median + level_snr * spread
    return threshold, level


@numba.njit(cache=True, nogil=True)
def _list_tail(values, keys, level, sure1, sure2, suren, index, value, listed_key):  # pragma: no cover
    """Add the pixels below their bin's ``level`` to the per-bin sums, list the others (flat index,
    value, bin) in the given arrays; returns how many were listed, or -1 when they did not fit."""
    capacity = index.size
    m = 0
    for i in range(values.size):
        v = values[i]
        k = keys[i]
        if v < level[k]:
            _add_sums(sure1, sure2, suren, k, v)
        elif m < capacity:
            index[m] = i
            value[m] = v
            listed_key[m] = k
            m += 1
        else:
            return -1
    return m


@numba.njit(cache=True, nogil=True)
def _relist(
    values, keys, stale, level, new_level, sure1, sure2, suren, n_listed, index, value, listed_key
):  # pragma: no cover
    """Lower the level of the ``stale`` bins to ``new_level``: their pixels between the two levels
    leave the sums below the level and join the list after its first ``n_listed`` entries. Returns
    the new length, or -1 when the list is full."""
    m = n_listed
    capacity = index.size
    for i in range(values.size):
        k = keys[i]
        if stale[k]:
            v = values[i]
            if v >= new_level[k] and v < level[k]:
                if m == capacity:
                    return -1
                sure1[k] -= v
                sure2[k] -= v * v
                suren[k] -= 1
                index[m] = i
                value[m] = v
                listed_key[m] = k
                m += 1
    return m


@numba.njit(cache=True, nogil=True)
def _clipped_stats_partner_kernel(
    values, keys, partner, n_keys, iterations, snr, floor, sigma_floor, start, n_empty, border_sigma, first_level
):  # pragma: no cover - compiled
    """:func:`_clipped_stats_kernel` on the compact keys of :func:`_sink_keys_kernel` (key ``n_keys``:
    unused pixels), where a pixel of bin ``k`` also feeds bin ``partner[k]`` when that is not -1.

    Each pass looks at every pixel once: below the lower of its two bins' thresholds it counts for
    both, between the two thresholds for the bin with the higher one (the pass's sums are split per
    bin and joined afterwards). ``n_empty`` bins without pixels were left out (they count once in the
    first convergence test).

    With ``border_sigma > 0`` the second pass also splits the pixels at a level ``border_sigma``
    sigmas above each bin's first-pass mean (with a non-empty ``first_level``, the first pass at that
    level; never above the pass's threshold): the sums of the pixels below it are kept, the others
    listed. Later passes look at the listed pixels only, which gives the same sums; bins whose
    threshold falls below their level (or, after the first pass, whose level stands more than
    ``1.5 * border_sigma`` sigmas above their mean) first move their pixels above ``border_sigma``
    sigmas into the list. Returns the statistics, the level per bin (+inf without a list), the sum
    and count of the pixels below it per bin, and the flat index, value and bin of the listed
    pixels."""
    threshold = start.copy()
    offset = np.zeros(n_keys)
    sigma = np.zeros(n_keys)
    count = np.zeros(n_keys, np.int64)
    s1 = np.zeros(n_keys)
    s2 = np.zeros(n_keys)
    previous = np.full(n_keys, -1, np.int64)
    low = np.empty(n_keys + 1)
    high = np.empty(n_keys + 1)
    low[n_keys] = -np.inf
    high[n_keys] = -np.inf
    a1 = np.zeros(n_keys + 1)
    a2 = np.zeros(n_keys + 1)
    an = np.zeros(n_keys + 1, np.int64)
    e1 = np.zeros(n_keys + 1)
    e2 = np.zeros(n_keys + 1)
    en = np.zeros(n_keys + 1, np.int64)
    # pixels below the level (per bin, the sink bin's level is +inf) and the listed ones
    level = np.full(n_keys + 1, np.inf)
    sure1 = np.zeros(n_keys + 1)
    sure2 = np.zeros(n_keys + 1)
    suren = np.zeros(n_keys + 1, np.int64)
    listed = False
    tried = False
    stale = np.zeros(n_keys + 1, np.bool_)
    new_level = np.full(n_keys + 1, np.inf)
    n_listed = 0
    # room for a quarter of the pixels (a frame whose tail is larger is not listed)
    capacity = max(values.size // 4, 1) if border_sigma > 0 and (iterations > 1 or first_level.size > 0) else 0
    listed_index = np.empty(capacity, np.int32)
    listed_value = np.empty(capacity, np.float32)
    listed_key = np.empty(capacity, np.uint16)
    for it in range(iterations):
        for k in range(n_keys):
            g = partner[k]
            t = threshold[k]
            if g < 0:
                low[k] = t
                high[k] = t
            else:
                low[k] = min(t, threshold[g])
                high[k] = max(t, threshold[g])
        if not tried and (it >= 1 or first_level.size > 0) and border_sigma > 0:
            tried = True
            for k in range(n_keys):
                if it == 0:
                    level[k] = min(first_level[k], low[k])
                else:
                    level[k] = min(offset[k] + border_sigma * max(sigma[k], sigma_floor), low[k])
            n_listed = _list_tail(values, keys, level, sure1, sure2, suren, listed_index, listed_value, listed_key)
            if n_listed < 0:
                n_listed = 0
                level[:] = np.inf
            else:
                listed = True
        # bins whose threshold fell below their listing level, or whose level stands far above their
        # current background (later thresholds a few sigmas up should find their pixels listed),
        # lower their level
        n_stale = 0
        if listed:
            for k in range(n_keys):
                new_level[k] = min(offset[k] + border_sigma * max(sigma[k], sigma_floor), low[k])
                far = it == 1 and level[k] > offset[k] + 1.5 * border_sigma * max(sigma[k], sigma_floor)
                stale[k] = level[k] > low[k] or far
                n_stale += stale[k]
        if n_stale > 0:
            n_listed = _relist(
                values,
                keys,
                stale,
                level,
                new_level,
                sure1,
                sure2,
                suren,
                n_listed,
                listed_index,
                listed_value,
                listed_key,
            )
            if n_listed < 0:
                listed = False
                n_listed = 0
                level[:] = np.inf
            else:
                for k in range(n_keys):
                    if stale[k]:
                        level[k] = new_level[k]
                        stale[k] = False
        a1[:] = 0.0
        a2[:] = 0.0
        an[:] = 0
        e1[:] = 0.0
        e2[:] = 0.0
        en[:] = 0
        if listed:
            a1[:] = sure1
            a2[:] = sure2
            an[:] = suren
            for j in range(n_listed):
                v = listed_value[j]
                k = listed_key[j]
                if v < low[k]:
                    _add_sums(a1, a2, an, k, v)
                elif v < high[k]:
                    _add_sums(e1, e2, en, k, v)
        else:
            for i in range(values.size):
                v = values[i]
                k = keys[i]
                if v < low[k]:
                    _add_sums(a1, a2, an, k, v)
                elif v < high[k]:
                    _add_sums(e1, e2, en, k, v)
        s1[:] = 0.0
        s2[:] = 0.0
        count[:] = 0
        for k in range(n_keys):
            s1[k] += a1[k]
            s2[k] += a2[k]
            count[k] += an[k]
            g = partner[k]
            if g < 0:
                continue
            s1[g] += a1[k]
            s2[g] += a2[k]
            count[g] += an[k]
            if en[k] > 0:
                j = k if threshold[k] > threshold[g] else g
                s1[j] += e1[k]
                s2[j] += e2[k]
                count[j] += en[k]
        _finish_bins(s1, s2, count, offset, sigma, threshold, snr, floor, sigma_floor)
        if _settled(count, previous, n_empty if it == 0 else 0):
            break
    if not listed:
        level[:] = np.inf
    return (
        offset,
        sigma,
        count,
        level[:n_keys].copy(),
        sure1[:n_keys].copy(),
        suren[:n_keys].copy(),
        listed_index[:n_listed].copy(),
        listed_value[:n_listed].copy(),
        listed_key[:n_listed].copy(),
    )


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
    mean = _sum_means(s, n)
    return out, members, above, total, mean


@numba.njit(cache=True, nogil=True)
def _stale_pass(data, key, stale, threshold, rad, min_res, max_res, cut, flat, members, m, s, n):  # pragma: no cover
    """Candidates and rate sums of the pixels of the ``stale`` bins (see :func:`_classify_used_kernel`);
    returns the new number of ``members``."""
    d = data.ravel()
    kk = key.ravel()
    rate = cut.size > 0
    for i in range(d.size):
        k = kk[i]
        if not stale[k]:
            continue
        v = d[i]
        if v > threshold[k]:
            x = rad[i]
            if x >= min_res and x <= max_res:
                flat[i] = True
                members[m] = i
                m += 1
        if rate and v < cut[k]:
            s[k] += v
            n[k] += 1
    return m


@numba.njit(cache=True, nogil=True)
def _classify_used_kernel(
    data,
    key,
    threshold,
    radius,
    min_res,
    max_res,
    key_radius,
    level,
    n_r,
    cut,
    use_list,
    index,
    value,
    listed_key,
    below_sum,
    below_count,
    stale,
):  # pragma: no cover - compiled
    """:func:`_classify_kernel` on the compact bins of ``RadialStats.used_bin``: ``threshold``, ``cut``,
    ``level`` and ``key_radius`` hold one more entry, for the sink bin (+inf, -inf, +inf and ``n_r``).
    With ``use_list`` the candidates and the background-rate sums come from the listed upper tail
    (``index``, ``value``, ``listed_key``) and the sums below the listing level, except for the
    ``stale`` bins (whose candidate threshold or rate cut lies below the listing level), whose pixels
    are all looked at; ring counts always look at every other pixel."""
    h, w = data.shape
    out = np.zeros((h, w), np.bool_)
    flat = out.ravel()
    rad = radius.ravel()
    rate = cut.size > 0
    rings = level.size > 0
    s = np.zeros(cut.size)
    n = np.zeros(cut.size, np.int64)
    n_stale = 0
    for k in range(stale.size):
        n_stale += stale[k]
    ordered = True
    if use_list:
        members = np.empty(index.size if n_stale == 0 else data.size, np.int64)
        m = 0
        if rate:
            for k in range(below_sum.size):
                if not stale[k]:
                    s[k] = below_sum[k]
                    n[k] = below_count[k]
        previous = -1
        for j in range(index.size):
            i = np.int64(index[j])
            ordered &= i > previous
            previous = i
            v = value[j]
            k = listed_key[j]
            if stale[k]:
                continue
            if v > threshold[k]:
                x = rad[i]
                if x >= min_res and x <= max_res:
                    flat[i] = True
                    members[m] = i
                    m += 1
            if rate and v < cut[k]:
                s[k] += v
                n[k] += 1
        if n_stale > 0 and not rings:
            m = _stale_pass(data, key, stale, threshold, rad, min_res, max_res, cut, flat, members, m, s, n)
    else:
        d = data.ravel()
        kk = key.ravel()
        members = np.empty(d.size, np.int64)
        m = 0
        for i in range(d.size):
            k = kk[i]
            v = d[i]
            if v > threshold[k]:
                x = rad[i]
                if x >= min_res and x <= max_res:
                    flat[i] = True
                    members[m] = i
                    m += 1
            if rate and v < cut[k]:
                s[k] += v
                n[k] += 1
    # two interleaved sets of counts (pixels c and c + 2 rarely share a counter in flight)
    counts = np.zeros((2, 2 * (n_r + 1)), np.int64)
    if rings and use_list and n_stale > 0:
        # the pixels of the stale bins in the same pass
        for r in range(h):
            krow = key[r]
            drow = data[r]
            for c in range(w):
                k = krow[c]
                if stale[k]:
                    i = r * w + c
                    v = drow[c]
                    if v > threshold[k]:
                        x = rad[i]
                        if x >= min_res and x <= max_res:
                            flat[i] = True
                            members[m] = i
                            m += 1
                    if rate and v < cut[k]:
                        s[k] += v
                        n[k] += 1
                if ((r + c) & 1) == 0:
                    b = 2 * key_radius[k]
                    half = (c >> 1) & 1
                    counts[half, b] += 1
                    counts[half, b + 1] += drow[c] > level[k]
    elif rings:
        even = counts[0]
        odd = counts[1]
        for r in range(h):
            krow = key[r]
            drow = data[r]
            c = r & 1
            while c + 2 < w:
                k = krow[c]
                b = 2 * key_radius[k]
                even[b] += 1
                even[b + 1] += drow[c] > level[k]
                k = krow[c + 2]
                b = 2 * key_radius[k]
                odd[b] += 1
                odd[b + 1] += drow[c + 2] > level[k]
                c += 4
            if c < w:
                k = krow[c]
                b = 2 * key_radius[k]
                even[b] += 1
                even[b + 1] += drow[c] > level[k]
    if use_list and (n_stale > 0 or not ordered):
        members[:m].sort()
    summed = counts[0] + counts[1]
    total = summed[0 : 2 * n_r : 2].copy()
    above = summed[1 : 2 * n_r : 2].copy()
    mean = _sum_means(s, n)
    return out, members[:m].copy(), above, total, mean


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
    :func:`background_rate` in a single pass over the frame (identical results). With statistics that
    listed each bin's upper tail (``stats.border``), the candidates and the rate come from that list
    and the sums below it, and only the ring counts read the frame.

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
        # one more entry for the bin of the unused pixels
        threshold_c = np.append(threshold[full], np.float32(np.inf))
        cut_c = np.append(cut[full], -np.inf) if with_rate else cut
        level_c = np.append(level[full], np.float32(np.inf)) if rings else level
        border = stats.border
        stale = np.zeros(full.size + 1, bool)
        if border is not None:
            # bins whose candidates or rate reach below the listed tail look at all their pixels
            stale[:-1] = threshold_c[:-1] < border.level
            if with_rate:
                stale[:-1] |= cut_c[:-1] < border.level
        use_list = border is not None and 4 * int(stale.sum()) < full.size
        if border is None or not use_list:
            listed = (np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(0, np.uint16))
            below = (np.zeros(0), np.zeros(0, np.int64))
        else:
            listed = (border.index, border.value, border.key)
            below = (border.below_sum, border.below_count)
        out, members, above, total, mean = _classify_used_kernel(
            data,
            stats.used_bin,
            threshold_c,
            np.ascontiguousarray(radius_px, dtype=np.float32),
            float(min_res),
            float(max_res),
            np.append(key_radius[full], n_r),
            level_c,
            n_r,
            cut_c,
            use_list,
            *listed,
            *below,
            stale,
        )
        mean = mean[:-1] if with_rate else mean
    else:
        out, members, above, total, mean = _classify_kernel(
            data,
            bad,
            True,
            stats.bin_index,
            -1,
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
    group of each bin, the group of each rounded radius, the bin of each compact bin (the bins that
    hold pixels, in order), the flat map of compact bins in 16 bits (None when they do not fit) and
    the compact all-panel bin each compact bin's pixels also feed (-1 if none); the result for the
    last maps is cached."""
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
    narrow1 = None
    partner = np.full(full_of.size, -1, np.int64)
    most_pixels = 0
    if full_of.size < _NARROW_BINS:
        narrow1 = compact_of[key32].astype(np.uint16).ravel()
        if split:
            # a pixel of a panel's bin also feeds the all-panel bin of the same radius group
            panel_bins = full_of < n_panels * n_r
            partner[panel_bins] = compact_of[n_panels * n_r + full_of[panel_bins] % n_r]
        # the most pixels any compact bin receives, its partners' included
        per_bin = np.bincount(narrow1, minlength=full_of.size).astype(np.int64)
        fed = per_bin.copy()
        np.add.at(fed, partner[partner >= 0], per_bin[partner >= 0])
        most_pixels = int(fed.max()) if fed.size else 0
    result = (key32, key2, n_keys, radius_bin.astype(np.int64), group, full_of, narrow1, partner, most_pixels)
    _KEY_CACHE[:] = [(radius_px, panel_id, (per_panel, min_bin_pixels), result)]
    return result


#: Level, in background sigmas above a bin's first-pass mean, above which the clipping passes list the
#: pixels they look at again (see :func:`_clipped_stats_partner_kernel`).
_BORDER_SIGMA = 2.0


@dataclass(frozen=True)
class BorderPixels:
    """The pixels of a frame at or above a level per bin, listed once so that later passes over the
    frame's upper tail need not read the whole frame.

    Attributes
    ----------
    level : (K,) float64 ndarray
        Level of each compact bin (see ``RadialStats.used_bin``).
    below_sum, below_count : (K,) float64 and int64 ndarrays
        Sum and number of the used pixels of each compact bin below its level.
    index : (M,) int32 ndarray
        Flat indices of the used pixels at or above their bin's level, in raster order except for
        the pixels added when a bin's level was lowered, which follow.
    value : (M,) float32 ndarray
        Their values.
    key : (M,) uint16 ndarray
        Their compact bins.
    """

    level: NDArray[np.float64]
    below_sum: NDArray[np.float64]
    below_count: NDArray[np.int64]
    index: NDArray[np.int32]
    value: NDArray[np.float32]
    key: NDArray[np.uint16]


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
    border : BorderPixels or None
        The upper tail of each compact bin, when the clipping listed it.
    """

    bin_index: NDArray[np.int32]
    offset: NDArray[np.float32]
    sigma: NDArray[np.float32]
    count: NDArray[np.int64]
    radius_bin: NDArray[np.int64]
    radius_group: NDArray[np.int64]
    used_bin: NDArray[np.uint16] | None = None
    used_bin_keys: NDArray[np.int64] | None = None
    border: BorderPixels | None = None


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

    When the bins that hold pixels fit in 16 bits, one compiled pass serves each pixel's panel bin and
    all-panel bin at once, and the first pass keeps the sums below a level about two sigmas above
    each bin's background and lists the pixels above it (``RadialStats.border``): the later passes,
    and the candidate search of :func:`classify_pixels`, mostly read that upper tail only. The sums,
    and so the statistics, are those of passes over every pixel.

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
    key32, key2, n_keys, radius_bin, group, full_of, narrow1, partner, most_pixels = _bin_keys(
        radius_px, panel_id, per_panel, int(min_bin_pixels)
    )
    values = np.ascontiguousarray(data).ravel()
    flat_use = np.ascontiguousarray(use).ravel()
    n_compact = full_of.size
    narrow = None
    border = None
    if narrow1 is not None:
        # the bins that hold pixels, in 16 bits, with unused pixels in a sink bin: each clipping pass
        # reads less memory and the per-bin arrays stay small
        narrow, lo, hi = _sink_keys_kernel(values, flat_use, narrow1, partner, n_compact)
        if robust_start:
            # 16-bit counts where no bin can sample more pixels: fewer cache lines to update
            counts_type = np.uint16 if most_pixels // 3 + 1 <= np.iinfo(np.uint16).max else np.int64
            hist = np.zeros((n_compact, 64), counts_type)
            start, first_level = _robust_start_hist_kernel(
                values, narrow, partner, n_compact, lo, hi, float(snr), hist, _BORDER_SIGMA
            )
        else:
            start, first_level = np.full(n_compact, np.inf), np.zeros(0)
        offset_c, sigma_c, count_c, level, below_sum, below_count, listed_index, listed_value, listed_key = (
            _clipped_stats_partner_kernel(
                values,
                narrow,
                partner,
                n_compact,
                int(iterations),
                float(snr),
                float(floor),
                float(sigma_floor),
                start,
                n_keys - n_compact,
                _BORDER_SIGMA,
                first_level,
            )
        )
        if np.isfinite(level).any():
            border = BorderPixels(level, below_sum, below_count, listed_index, listed_value, listed_key)
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
        border=border,
    )


@numba.njit(cache=True, nogil=True)
def _percentile_sorted(values, q):  # pragma: no cover - compiled
    """``np.percentile(values, q)`` (linear interpolation) of an already sorted array."""
    pos = q / 100.0 * (values.size - 1)
    below = int(np.floor(pos))
    above = min(below + 1, values.size - 1)
    t = pos - below
    a = values[below]
    b = values[above]
    diff = b - a
    return b - diff * (1.0 - t) if t >= 0.5 else a + diff * t


@numba.njit(cache=True, nogil=True)
def _line_fit(x, y, keep):  # pragma: no cover - compiled
    """Least-squares slope and intercept of ``y`` against ``x`` over ``keep`` (the minimum-norm
    solution when the kept ``x`` are all equal)."""
    n = 0
    sx = 0.0
    sy = 0.0
    for i in range(x.size):
        if keep[i]:
            n += 1
            sx += x[i]
            sy += y[i]
    mx = sx / n
    my = sy / n
    sxx = 0.0
    sxy = 0.0
    for i in range(x.size):
        if keep[i]:
            dx = x[i] - mx
            sxx += dx * dx
            sxy += dx * (y[i] - my)
    if sxx > 0:
        slope = sxy / sxx
        return slope, my - slope * mx
    scale = my / (mx * mx + 1.0)
    return scale * mx, scale


@numba.njit(cache=True, nogil=True)
def _gain_kernel(offset, sigma, count, min_count):  # pragma: no cover - compiled
    """The slope fit of :func:`estimate_gain` (0 when there is none)."""
    n_ok = 0
    for i in range(offset.size):
        if count[i] >= min_count and np.isfinite(offset[i]) and np.isfinite(sigma[i]):
            n_ok += 1
    if n_ok < 10:
        return 0.0
    m = np.empty(n_ok)
    v = np.empty(n_ok)
    j = 0
    for i in range(offset.size):
        if count[i] >= min_count and np.isfinite(offset[i]) and np.isfinite(sigma[i]):
            m[j] = np.float64(offset[i])
            v[j] = np.float64(sigma[i]) ** 2
            j += 1
    ordered = np.sort(m)
    lo = _percentile_sorted(ordered, 5.0)
    hi = _percentile_sorted(ordered, 95.0)
    if hi - lo <= 1e-6 * max(abs(hi), 1.0):
        return 0.0
    keep = np.ones(n_ok, np.bool_)
    slope = 0.0
    resid = np.empty(n_ok)
    for _ in range(4):
        slope, icpt = _line_fit(m, v, keep)
        n_keep = 0
        for i in range(n_ok):
            resid[i] = v[i] - (slope * m[i] + icpt)
            if keep[i]:
                n_keep += 1
        kept = np.empty(n_keep)
        j = 0
        for i in range(n_ok):
            if keep[i]:
                kept[j] = abs(resid[i])
                j += 1
        mad = np.median(kept) * 1.4826 + 1e-12
        n_keep = 0
        for i in range(n_ok):
            keep[i] = abs(resid[i]) < 4 * mad
            if keep[i]:
                n_keep += 1
        if n_keep < 10:
            break
    spread = 0.0
    n_keep = 0
    for i in range(n_ok):
        if keep[i]:
            n_keep += 1
    if n_keep > 0:
        spread = np.std(m[keep])
    if not np.isfinite(slope) or spread <= 0:
        return 0.0
    return max(slope, 0.0)


@numba.njit(cache=True, nogil=True)
def _gain_per_row_kernel(offset, sigma, count, n_r, min_count):  # pragma: no cover - compiled
    """:func:`_gain_kernel` on each row of ``n_r`` bins but the last (the all-panel bins), then the
    median of the positive slopes; -1 when there is none."""
    n_rows = offset.size // n_r
    slopes = np.empty(max(n_rows - 1, 1))
    n = 0
    for row in range(n_rows - 1):
        part = slice(row * n_r, (row + 1) * n_r)
        g = _gain_kernel(offset[part], sigma[part], count[part], min_count)
        if g > 0:
            slopes[n] = g
            n += 1
    if n == 0:
        return -1.0
    return np.median(slopes[:n])


def estimate_gain(offset: NDArray, sigma: NDArray, count: NDArray, *, min_count: int = 200) -> float:
    """Detector units per photon from how the background variance grows with its mean across bins.

    For a shot-noise-limited background, ``var = gain * (mean - pedestal) + read_noise**2``; the slope of
    a robust straight-line fit of the binned clipped variances against the binned means is the gain.
    Returns 0 when the means do not vary enough for a fit (no shot-noise term is then used).
    """
    return float(
        _gain_kernel(
            np.ascontiguousarray(offset, dtype=np.float64),
            np.ascontiguousarray(sigma, dtype=np.float64),
            np.ascontiguousarray(count, dtype=np.int64),
            int(min_count),
        )
    )


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
    if n_rows > 1:
        # every panel's fit in one compiled call (the last row holds the all-panel bins)
        g = float(
            _gain_per_row_kernel(
                np.ascontiguousarray(stats.offset, dtype=np.float64),
                np.ascontiguousarray(stats.sigma, dtype=np.float64),
                np.ascontiguousarray(stats.count, dtype=np.int64),
                n_r,
                int(min_count),
            )
        )
        if g > 0:
            return g
    return estimate_gain(stats.offset, stats.sigma, stats.count, min_count=min_count)


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
    return _sum_means(s, n)


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
