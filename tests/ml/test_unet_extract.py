"""Sparse peak extraction: the same peaks as a plain full-frame reference of its rules, from the candidate pixels."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage, special, stats

from braggml.ml.unet_extract import (
    PEAK_COLUMNS,
    SEED_CLEARANCE_PX,
    SEED_MIN_PHOTONS,
    SPARSE_PHOTONS,
    CandidatePixels,
    Regions,
    candidate_reach,
    extract_peaks,
    gather_candidates,
    photon_seeds,
)

THRESHOLD = 0.5


# -- a plain full-frame reference of the same rules (slow, but simple enough to read at a glance) -----------
def _ref_label(above: np.ndarray, panel: np.ndarray, min_pixel_count: int) -> tuple[np.ndarray, int]:
    """8-connected regions within each panel, numbered in raster order of their first pixel."""
    raw = np.zeros(above.shape, np.int64)
    count = 0
    for p in np.unique(panel[above]):
        lab, n = ndimage.label(above & (panel == p), structure=np.ones((3, 3), bool))
        raw[lab > 0] = lab[lab > 0] + count
        count += n
    ids, first, sizes = np.unique(raw.ravel(), return_index=True, return_counts=True)
    keep = (ids > 0) & (sizes >= min_pixel_count)
    ids, first = ids[keep], first[keep]
    number = np.zeros(count + 1, np.int32)
    number[ids[np.argsort(first)]] = np.arange(1, ids.size + 1)
    return number[raw], int(ids.size)


def _ref_saddle(region: np.ndarray, value: np.ndarray, higher: np.ndarray, r: int, c: int) -> float:
    """The highest level at which pixel (r, c) joins, within the region, a pixel ranked above it (-inf: none)."""
    for level in np.unique(value[region])[::-1]:
        if level > value[r, c]:
            continue
        lab, _ = ndimage.label(region & (value >= level), structure=np.ones((3, 3), bool))
        if np.any(higher & (lab == lab[r, c])):
            return float(level)
    return -np.inf


def _ref_split(
    labels: np.ndarray, n: int, residual: np.ndarray, noise: np.ndarray, gain: float = 0.0
) -> tuple[np.ndarray, int]:
    """Regions of >= 3 pixels divided between their separate maxima: those whose highest saddle to a higher pixel
    lies 3 sigmas of the difference (background and shot noise of both) and a fifth of their height below them."""
    out, next_label = labels.copy(), n + 1
    h, w = labels.shape
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or np.count_nonzero(labels[box] == k) < 3:
            continue
        region = labels[box] == k
        value = residual[box].astype(np.float64)
        flat = np.arange(h * w).reshape(h, w)[box]
        rr, cc = np.nonzero(region)  # raster order
        # rank: higher value first, raster order among equals
        order = sorted(range(rr.size), key=lambda i: (-value[rr[i], cc[i]], flat[rr[i], cc[i]]))
        rank = np.full(region.shape, rr.size, np.int64)
        rank[rr[order], cc[order]] = np.arange(rr.size)
        lowest_around = ndimage.minimum_filter(rank, size=3, mode="constant", cval=rr.size)
        maxima = []
        for r, c in zip(rr, cc):
            if lowest_around[r, c] < rank[r, c]:
                continue  # a neighbour ranks above: no dip
            if rank[r, c] == 0:
                maxima.append((r, c))
                continue
            saddle = _ref_saddle(region, value, rank < rank[r, c], r, c)
            dip = value[r, c] - saddle
            sigma = np.sqrt(2.0 * float(noise[box][r, c]) ** 2 + gain * (max(value[r, c], 0.0) + max(saddle, 0.0)))
            if dip >= 3.0 * sigma and dip >= 0.2 * value[r, c]:
                maxima.append((r, c))
        if len(maxima) < 2:
            continue
        mr, mc = np.array(maxima).T
        nearest = np.argmin((rr[:, None] - mr) ** 2 + (cc[:, None] - mc) ** 2, axis=1)
        numbers = np.concatenate([[k], np.arange(next_label, next_label + mr.size - 1)])
        out[box][rr, cc] = numbers[nearest]
        next_label += mr.size - 1
    return out, next_label - 1


def _ref_grow(labels: np.ndarray, grow_px: float, bad: np.ndarray, panel: np.ndarray) -> np.ndarray:
    """Free pixels within ``grow_px`` taken by the region pixel at the nearest offset (raster order on ties)."""
    out = labels.copy()
    h, w = labels.shape
    reach = int(np.floor(grow_px))
    offsets = [(dr, dc) for dr in range(-reach, reach + 1) for dc in range(-reach, reach + 1)]
    offsets = sorted((o for o in offsets if 0 < np.hypot(*o) <= grow_px), key=lambda o: np.hypot(*o))
    rows, cols = np.nonzero(labels)
    for dr, dc in offsets:
        r, c = rows + dr, cols + dc
        ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        r, c, sr, sc = r[ok], c[ok], rows[ok], cols[ok]
        free = (out[r, c] == 0) & ~bad[r, c] & (panel[r, c] == panel[sr, sc])
        out[r[free], c[free]] = labels[sr[free], sc[free]]
    return out


def _ref_measure(labels: np.ndarray, wide: np.ndarray, n: int, frame: dict) -> dict:
    index = np.arange(1, n + 1)
    rr, cc = np.mgrid[: labels.shape[0], : labels.shape[1]].astype(np.float64)
    res, prob = frame["residual"].astype(np.float64), frame["prob"].astype(np.float64)

    def total(values: np.ndarray) -> np.ndarray:
        return np.asarray(ndimage.sum_labels(values, wide, index), np.float64).reshape(n)

    weight = np.clip(res, 0.0, None)
    wsum, psum = total(weight), total(prob)
    by_weight = wsum > 0
    n_pixels = total(np.ones_like(res)).astype(np.int64)
    intensity = total(res)
    background = total(frame["background"].astype(np.float64)) / np.maximum(n_pixels, 1)
    return {
        "row": np.where(by_weight, total(weight * rr) / np.where(by_weight, wsum, 1), total(prob * rr) / psum),
        "col": np.where(by_weight, total(weight * cc) / np.where(by_weight, wsum, 1), total(prob * cc) / psum),
        "intensity": intensity,
        "background": background,
        "snr": intensity / np.sqrt(np.maximum(total(frame["noise"].astype(np.float64) ** 2), 1e-30)),
        "n_pixels": n_pixels,
        "max_value": np.asarray(ndimage.maximum(res, wide, index), np.float64).reshape(n) + background,
        "score": np.asarray(ndimage.maximum(prob, labels, index), np.float64).reshape(n),
    }


def _ref_along_mask(labels: np.ndarray, n: int, bad: np.ndarray, panel: np.ndarray) -> np.ndarray:
    """Share of each region's pixels with a bad, off-frame or other-panel pixel among their 8 neighbours."""
    h, w = labels.shape
    padded_bad = np.pad(bad, 1, constant_values=True)
    padded_panel = np.pad(panel, 1, mode="edge")
    touch = np.zeros((h, w), bool)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            touch |= padded_bad[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]
            touch |= padded_panel[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w] != panel
    return np.asarray(ndimage.mean(touch, labels, np.arange(1, n + 1)), np.float64).reshape(n)


def _ref_lone(labels: np.ndarray, n: int, frame: dict, gain: float) -> np.ndarray:
    """Regions where the brightest good pixel (on its panel) of the 3 x 3 block of the region's brightest pixel
    has 8 good neighbours on its panel whose counts, with the background as a Poisson rate of its variance, are
    below a tenth of that pixel with a Poisson chance under 4 normal sigmas', and stand less than 3 sigmas of
    their background noise above it."""
    out = np.zeros(n, bool)
    if gain <= 0:
        return out
    res, noise = frame["residual"].astype(np.float64), frame["noise"].astype(np.float64)
    bad, panel = frame["bad"], frame["panel"]
    h, w = res.shape

    def good(r: int, c: int, of: tuple[int, int]) -> bool:
        return 0 <= r < h and 0 <= c < w and not bad[r, c] and panel[r, c] == panel[of]

    for k in range(1, n + 1):
        rows, cols = np.nonzero(labels == k)  # raster order
        top = int(np.argmax(res[rows, cols]))  # the first of equals
        r, c = int(rows[top]), int(cols[top])
        near = [(r + dr, c + dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if good(r + dr, c + dc, (r, c))]
        best = max(res[q] for q in near)
        if res[r, c] < best:  # the centre on a tie, else the first of equals in raster order
            r, c = next(q for q in near if res[q] == best)
        if not all(good(r + dr, c + dc, (r, c)) for dr in (-1, 0, 1) for dc in (-1, 0, 1)):
            continue
        block = np.s_[r - 1 : r + 2, c - 1 : c + 2]
        spill = res[block].sum() - res[r, c]
        expected = 0.1 * max(res[r, c], 0.0)
        background2 = (noise[block] ** 2).sum() - noise[r, c] ** 2
        rate = background2 / gain**2
        observed = max(spill / gain + rate, 0.0)
        chance = stats.gamma.sf(expected / gain + rate, a=observed + 1.0)  # P(Poisson(mean) <= observed)
        out[k - 1] = chance < stats.norm.sf(4.0) and spill < 3.0 * np.sqrt(background2)
    return out


def _ref_significance(labels: np.ndarray, n: int, frame: dict, gain: float) -> tuple[np.ndarray, ...]:
    """Per region, from the 3 x 3 block of its brightest pixel (good pixels on its panel): whether the block
    averages under a photon of background per pixel; the most significant Poisson excess (normal sigmas) of the
    block's four brightest pixels, the block and the region; that of the block without its centre; and whether
    the centre is the block's brightest pixel."""
    sparse, local_max = np.zeros(n, bool), np.zeros(n, bool)
    significance, spill = np.full(n, np.nan), np.full(n, np.nan)
    res = frame["residual"].astype(np.float64)
    bad, panel = frame["bad"], frame["panel"]
    h, w = res.shape

    def sigmas(n_photons: float, mu: float) -> float:  # P(Poisson(mu) >= mu + n_photons), continued to real counts
        return float(stats.norm.isf(stats.gamma.cdf(mu, a=mu + n_photons))) if n_photons > 0 else -np.inf

    for k in range(1, n + 1):
        rows, cols = np.nonzero(labels == k)  # raster order
        top = int(np.argmax(res[rows, cols]))  # the first of equals
        r, c = rows[top], cols[top]
        block = [
            (i, j)
            for i in range(r - 1, r + 2)
            for j in range(c - 1, c + 2)
            if 0 <= i < h and 0 <= j < w and not bad[i, j] and panel[i, j] == panel[r, c]
        ]
        local_max[k - 1] = all(res[p] <= res[r, c] for p in block)
        if gain <= 0:
            continue
        photons = res / gain
        rate = np.maximum(frame["background"] / gain, (frame["noise"].astype(np.float64) / gain) ** 2)
        sparse[k - 1] = sum(rate[p] for p in block) < SPARSE_PHOTONS * len(block)
        four = sorted(block, key=lambda p: -photons[p])[:4]
        significance[k - 1] = max(
            sigmas(sum(photons[p] for p in four), sum(rate[p] for p in four)),
            sigmas(sum(photons[p] for p in block), sum(rate[p] for p in block)),
            sigmas(photons[rows, cols].sum(), rate[rows, cols].sum()),
        )
        around = [p for p in block if p != (r, c)]
        spill[k - 1] = sigmas(sum(photons[p] for p in around), sum(rate[p] for p in around))
    return sparse, significance, spill, local_max


def _ref_without_above(labels: np.ndarray, n: int, prob: np.ndarray, level: float) -> tuple[np.ndarray, int]:
    keep = [k for k in range(1, n + 1) if not (prob[labels == k] > level).any()]
    out = np.zeros_like(labels)
    for new, k in enumerate(keep, start=1):
        out[labels == k] = new
    return out, len(keep)


def _full_frame_chain(
    frame: dict,
    threshold: float,
    *,
    grow_px: float,
    split: bool = True,
    min_pixel_count: int = 1,
    gain: float = 0.0,
    exclude_above: float | None = None,
) -> tuple:
    bad, panel = frame["bad"], frame["panel"]
    labels, n = _ref_label((frame["prob"] > threshold) & ~bad, panel, min_pixel_count)
    if exclude_above is not None:
        labels, n = _ref_without_above(labels, n, frame["prob"], exclude_above)
    if split and n:
        labels, n = _ref_split(labels, n, frame["residual"], frame["noise"], gain)
    wide = _ref_grow(labels, grow_px, bad, panel) if grow_px > 0 else labels
    measured = _ref_measure(labels, wide, n, frame)
    return (
        measured,
        _ref_along_mask(labels, n, bad, panel),
        _ref_lone(labels, n, frame, gain),
        *_ref_significance(labels, n, frame, gain),
    )


def _sparse_chain(
    frame: dict,
    threshold: float,
    *,
    grow_px: float,
    split: bool = True,
    min_pixel_count: int = 1,
    gain: float = 0.0,
    exclude_above: float | None = None,
) -> Regions:
    c = gather_candidates(
        frame["prob"],
        frame["residual"],
        frame["background"],
        frame["noise"],
        frame["bad"],
        frame["panel"],
        threshold,
        candidate_reach(grow_px),
        gain=gain,
    )
    return extract_peaks(c, min_pixel_count=min_pixel_count, split=split, grow_px=grow_px, exclude_above=exclude_above)


def _assert_same(full: tuple, sparse: tuple) -> None:
    (a, a_mask, a_lone, *a_rest), (b, b_mask, b_lone, *b_rest) = full, sparse
    assert set(b) == set(PEAK_COLUMNS)
    assert b["row"].size == a["row"].size
    for key in PEAK_COLUMNS:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-6, atol=0, err_msg=key)
    assert b["n_pixels"].dtype == np.int64
    np.testing.assert_allclose(b_mask, a_mask, rtol=1e-12)
    assert b_lone.dtype == bool and b_lone.tolist() == a_lone.tolist()
    (a_sparse, a_sig, a_spill, a_max), (b_sparse, b_sig, b_spill, b_max) = a_rest, b_rest
    assert b_sparse.dtype == bool and b_sparse.tolist() == a_sparse.tolist()
    assert b_max.dtype == bool and b_max.tolist() == a_max.tolist()
    np.testing.assert_allclose(b_sig, a_sig, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(b_spill, a_spill, rtol=1e-6, atol=1e-6)


def _spot(shape: tuple[int, int], row: float, col: float, height: float, sigma: float = 1.0) -> np.ndarray:
    r, c = np.mgrid[: shape[0], : shape[1]]
    return height * np.exp(-((r - row) ** 2 + (c - col) ** 2) / (2 * sigma**2))


def _synthetic_frame(seed: int = 0, shape: tuple[int, int] = (48, 80)) -> dict:
    """Two panels side by side (columns 0-39 and 40-79, no gap) with touching spots, spots at the frame's edge,
    against bad pixels and across the panel border, on noise; probability rises with the residual."""
    rng = np.random.default_rng(seed)
    residual = rng.normal(0.0, 1.0, shape)
    spots = [
        (20.0, 12.0, 40.0, 1.3),  # two spots whose cores touch: one region, split in two
        (20.0, 16.5, 30.0, 1.3),
        (0.4, 25.0, 30.0, 1.0),  # at the top edge
        (30.0, 78.6, 25.0, 1.0),  # at the right edge
        (8.0, 60.0, 30.0, 1.2),  # against a bad block
        (35.0, 39.5, 30.0, 1.2),  # across the panel border
        (40.0, 10.0, 20.0, 2.2),  # wide, several maxima in the noise
        (12.0, 45.0, 8.0, 0.8),
    ]
    for row, col, height, sigma in spots:
        residual += _spot(shape, row, col, height, sigma)
    bad = np.zeros(shape, bool)
    bad[5:12, 62:64] = True
    bad[rng.integers(0, shape[0], 10), rng.integers(0, shape[1], 10)] = True
    panel = np.zeros(shape, np.int32)
    panel[:, 40:] = 1
    noise = rng.uniform(0.8, 1.2, shape).astype(np.float32)
    residual = np.where(bad, 0.0, residual).astype(np.float32)
    prob = (1.0 / (1.0 + np.exp(-(residual / noise - 4.0)))).astype(np.float32)
    prob[bad] = 0.0  # as the network's probability map
    background = rng.uniform(5.0, 6.0, shape).astype(np.float32)
    return {"prob": prob, "residual": residual, "background": background, "noise": noise, "bad": bad, "panel": panel}


@pytest.mark.parametrize("grow_px", [0.0, 2.0, 3.5])
@pytest.mark.parametrize("split", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_frames_give_the_full_frame_peaks(grow_px: float, split: bool, seed: int) -> None:
    frame = _synthetic_frame(seed)
    for min_pixel_count in (1, 3):
        full = _full_frame_chain(frame, THRESHOLD, grow_px=grow_px, split=split, min_pixel_count=min_pixel_count)
        sparse = _sparse_chain(frame, THRESHOLD, grow_px=grow_px, split=split, min_pixel_count=min_pixel_count)
        assert full[0]["row"].size >= 6
        _assert_same(full, sparse)


def _crowded_frame(seed: int, shape: tuple[int, int] = (96, 128)) -> dict:
    """Many spots of random size and height, often touching, and hot pixels, on four panels in a 2 x 2 grid
    without gaps."""
    rng = np.random.default_rng(seed)
    residual = rng.normal(0.0, 1.0, shape)
    for _ in range(40):
        row, col = rng.uniform(-1, shape[0]), rng.uniform(-1, shape[1])
        residual += _spot(shape, row, col, rng.uniform(6, 60), rng.uniform(0.6, 2.5))
    hot = rng.integers(0, shape[0], 12), rng.integers(0, shape[1], 12)
    residual[hot] += rng.uniform(20.0, 1000.0, 12)
    bad = rng.random(shape) < 0.01
    bad[40:44, 70:90] = True
    panel = np.zeros(shape, np.int32)
    panel[shape[0] // 2 :, :] += 2
    panel[:, shape[1] // 2 :] += 1
    noise = rng.uniform(0.8, 1.2, shape).astype(np.float32)
    residual = np.where(bad, 0.0, residual).astype(np.float32)
    prob = (1.0 / (1.0 + np.exp(-(residual / noise - 4.0)))).astype(np.float32)
    prob[bad] = 0.0
    background = rng.uniform(5.0, 6.0, shape).astype(np.float32)
    return {"prob": prob, "residual": residual, "background": background, "noise": noise, "bad": bad, "panel": panel}


@pytest.mark.parametrize("seed", range(5))
def test_crowded_frames_on_four_panels_give_the_full_frame_peaks(seed: int) -> None:
    frame = _crowded_frame(seed)
    gain = 0.5 * (seed % 3)  # the spots' shot noise: none, then half and one noise unit squared per unit
    for grow_px in (0.0, 1.5, 2.0, 3.5, 10.0):
        full = _full_frame_chain(frame, THRESHOLD, grow_px=grow_px, gain=gain)
        assert full[0]["row"].size >= 20
        assert full[2].any() == (gain > 0)
        _assert_same(full, _sparse_chain(frame, THRESHOLD, grow_px=grow_px, gain=gain))
        # a set reaching further than needed (as an accelerator may ship) gives the same peaks
        args = [frame[k] for k in ("prob", "residual", "background", "noise", "bad", "panel")]
        wider = gather_candidates(*args, THRESHOLD, candidate_reach(grow_px) + 2, gain=gain)
        _assert_same(full, extract_peaks(wider, grow_px=grow_px))


def test_touching_spots_are_split_and_panel_border_spots_are_not_joined() -> None:
    frame = _synthetic_frame(0)
    cols, share, *_ = _sparse_chain(frame, THRESHOLD, grow_px=2.0)
    found = np.column_stack([cols["row"], cols["col"]])

    def near(row: float, col: float, tol: float = 1.0) -> np.ndarray:
        return np.flatnonzero(np.hypot(found[:, 0] - row, found[:, 1] - col) < tol)

    assert near(20.0, 12.0).size == 1 and near(20.0, 16.5).size == 1  # two peaks from one region
    unsplit, *_ = _sparse_chain(frame, THRESHOLD, grow_px=2.0, split=False)
    assert unsplit["row"].size < cols["row"].size
    # the spot across the panel border is two regions, one on each panel, both along the other panel
    left, right = near(35.0, 38.5), near(35.0, 40.5)
    assert near(35.0, 39.5, 3.0).size == 2 and left.size == 1 and right.size == 1
    assert cols["col"][left[0]] < 40 <= cols["col"][right[0]]
    assert share[left[0]] > 0 and share[right[0]] > 0
    top = near(0.5, 25.0)
    assert top.size == 1 and share[top[0]] > 0  # the frame's edge counts as the mask
    middle = near(20.0, 12.0)
    assert share[middle[0]] == 0.0


def _pair_frame(rng: np.random.Generator, strong: float, weak: float, gain: float) -> dict:
    """A strong compact spot at (20, 20) and a weak one diagonally next to it at (23, 23.2) (4.4 px apart)
    whose regions touch, in photons times ``gain`` on a background of 2 photons per pixel, Poisson noise."""
    shape = (40, 40)
    photons = 2.0 + _spot(shape, 20.0, 20.0, strong, 0.6) + _spot(shape, 23.0, 23.2, weak, 0.6)
    counts = rng.poisson(photons).astype(np.float32) * gain
    residual = counts - 2.0 * gain
    noise = np.full(shape, np.sqrt(2.0) * gain, np.float32)
    prob = np.zeros(shape, np.float32)
    prob[18:25, 18:25] = 0.9  # the network marks both spots as one blob
    return {
        "prob": prob,
        "residual": residual.astype(np.float32),
        "background": np.full(shape, 2.0 * gain, np.float32),
        "noise": noise,
        "bad": np.zeros(shape, bool),
        "panel": np.zeros(shape, np.int32),
    }


@pytest.mark.parametrize("gain", [1.0, 10.0])
def test_a_lone_bright_pixel_is_told_from_a_sharp_spot(gain: float) -> None:
    """A hot pixel (all its signal in one pixel) is a lone pixel; a spot of sigma 0.35 px with the same signal,
    centred on a pixel (over a quarter of it in the neighbours), is not, nor is a hot pixel too faint to tell,
    nor a bright spot with a twentieth of its signal shared with two neighbours (clearly above their noise)."""
    rng = np.random.default_rng(4)
    shape = (40, 60)
    noise = np.full(shape, np.sqrt(2.0 * gain), np.float32)  # two photons of background
    edges = special.erf(np.array([-1.5, -0.5, 0.5, 1.5]) / (0.35 * np.sqrt(2.0)))
    share = np.diff(edges) / 2.0  # of a Gaussian of sigma 0.35 px in the pixels -1, 0, 1: 0.08, 0.85, 0.08
    for _ in range(5):
        residual = rng.normal(0.0, 1.0, shape) * noise
        residual[10, 10] += 500.0 * gain  # hot
        residual[9:12, 29:32] += 500.0 * gain * np.outer(share, share)  # the sharp spot
        residual[30, 45] += 15.0 * gain  # a faint hot pixel
        residual[30, 15] += 2000.0 * gain  # a spot sharper than a pixel, with charge shared by two neighbours
        residual[29, 15] += 55.0 * gain
        residual[30, 16] += 55.0 * gain
        residual = residual.astype(np.float32)
        prob = np.where(residual > 5 * noise, 0.9, 0.0).astype(np.float32)
        frame = {"prob": prob, "residual": residual, "background": np.full(shape, 2.0 * gain, np.float32),
                 "noise": noise, "bad": np.zeros(shape, bool), "panel": np.zeros(shape, np.int32)}
        cols, _, lone, *_ = _sparse_chain(frame, THRESHOLD, grow_px=2.0, gain=gain)
        found = np.column_stack([cols["row"], cols["col"]]).round()
        assert sorted(map(tuple, found.tolist())) == [(10.0, 10.0), (10.0, 30.0), (30.0, 15.0), (30.0, 45.0)]
        assert {tuple(p) for p in found[lone].tolist()} == {(10.0, 10.0)}
        # without the gain the shot noise is unknown, and nothing is called a lone pixel
        assert not _sparse_chain(frame, THRESHOLD, grow_px=2.0, gain=0.0)[2].any()


@pytest.mark.parametrize("gain", [1.0, 10.0])
def test_a_weak_spot_beside_a_strong_one_is_its_own_peak(gain: float) -> None:
    rng = np.random.default_rng(3)
    for _ in range(10):
        frame = _pair_frame(rng, 1000.0, 100.0, gain)
        sparse = _sparse_chain(frame, THRESHOLD, grow_px=0.0, gain=gain)
        cols = sparse[0]
        found = np.column_stack([cols["row"], cols["col"]])
        assert found.shape == (2, 2)
        strong, weak = np.argsort(-cols["intensity"])
        np.testing.assert_allclose(found[strong], [20.0, 20.0], atol=0.3)
        np.testing.assert_allclose(found[weak], [23.0, 23.2], atol=0.6)
        _assert_same(_full_frame_chain(frame, THRESHOLD, grow_px=0.0, gain=gain), sparse)


@pytest.mark.parametrize("gain", [1.0, 10.0])
def test_shot_noise_on_a_bright_spot_does_not_split_it(gain: float) -> None:
    rng = np.random.default_rng(4)
    shape = (40, 40)
    split_without = 0
    for _ in range(20):
        photons = 2.0 + _spot(shape, 20.3, 19.8, 80.0, 1.8) + _spot(shape, 21.0, 19.2, 40.0, 2.0)
        frame = _pair_frame(rng, 0.0, 0.0, gain)
        frame["residual"] = ((rng.poisson(photons) - 2.0) * gain).astype(np.float32)
        frame["prob"][:] = 0.0
        frame["prob"][14:28, 13:27] = 0.9
        one = _sparse_chain(frame, THRESHOLD, grow_px=0.0, gain=gain).columns
        assert one["row"].size == 1
        split_without += _sparse_chain(frame, THRESHOLD, grow_px=0.0, gain=0.0)[0]["row"].size > 1
    assert split_without > 0  # the background noise alone would split it on some draws


def _counting_frame(seed: int, shape: tuple[int, int] = (64, 96)) -> dict:
    """Photon counts on a sparse background (0.1-0.8 photon per pixel, from left to right) with sharp spots of
    5-40 photons, broad spots and bad pixels, on two panels; gain 1, probability rising with the 3 x 3 sum of
    the residual so that clusters of noise photons form regions too."""
    rng = np.random.default_rng(seed)
    rate = np.broadcast_to(np.linspace(0.1, 0.8, shape[1]), shape)
    signal = np.zeros(shape)
    for _ in range(25):
        row, col = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        sigma = rng.choice([0.3, 0.5, 1.5])
        signal += _spot(shape, row, col, rng.uniform(5.0, 40.0) / (2 * np.pi * sigma**2), sigma)
    counts = rng.poisson(rate + signal).astype(np.float64)
    bad = rng.random(shape) < 0.01
    panel = np.zeros(shape, np.int32)
    panel[:, shape[1] // 2 :] = 1
    residual = np.where(bad, 0.0, counts - rate).astype(np.float32)
    noise = np.sqrt(rate).astype(np.float32)
    local = ndimage.uniform_filter(residual.astype(np.float64), 3, mode="constant") * 9
    prob = (1.0 / (1.0 + np.exp(-(local - 6.0)))).astype(np.float32)
    prob[bad] = 0.0
    return {"prob": prob, "residual": residual, "background": rate.astype(np.float32), "noise": noise,
            "bad": bad, "panel": panel}


@pytest.mark.parametrize("seed", range(4))
def test_sparse_counting_frames_give_the_full_frame_significance(seed: int) -> None:
    frame = _counting_frame(seed)
    for grow_px in (0.0, 2.0):
        full = _full_frame_chain(frame, THRESHOLD, grow_px=grow_px, gain=1.0)
        sparse, significance, spill, local_max = full[3:]
        _assert_same(full, _sparse_chain(frame, THRESHOLD, grow_px=grow_px, gain=1.0))
        assert sparse.all()  # under a photon per pixel everywhere
        faint = significance < 5.0
        assert 0 < faint.sum() < faint.size  # some regions are noise clusters, some are spots
        assert 0 < (spill < 2.0).sum() < spill.size and 0 < local_max.sum() < local_max.size
        # the second cut's regions: those above a lower cut holding no pixel above the first
        low = _full_frame_chain(frame, 0.2, grow_px=grow_px, gain=1.0, exclude_above=THRESHOLD)
        assert 0 < low[0]["row"].size and (low[0]["score"] <= THRESHOLD).all()
        _assert_same(low, _sparse_chain(frame, 0.2, grow_px=grow_px, gain=1.0, exclude_above=THRESHOLD))
        # without the gain nothing is sparse and nothing has a significance
        blind = _sparse_chain(frame, THRESHOLD, grow_px=grow_px, gain=0.0)
        assert not blind.sparse.any() and np.isnan(blind.significance).all() and np.isnan(blind.spill).all()


def test_noise_clusters_on_a_sparse_background_are_told_from_faint_sharp_spots() -> None:
    """On half a photon per pixel, a loose cluster of 2-5-photon pixels (a 5-sigma excess for Gaussian pixels of
    that variance) is not significant; a sharp spot of 8 + 6 + 3 photons is, and so is a 14-photon spot on an
    almost empty frame. On 3 photons per pixel nothing is judged: a faint broad spot there stays."""
    shape = (40, 60)

    def regions(rate: float, blobs: list[tuple[slice, slice, np.ndarray]]):
        residual = np.zeros(shape)
        prob = np.zeros(shape, np.float32)
        for rows, cols, photons in blobs:
            residual[rows, cols] += photons
            prob[rows, cols] = 0.9
        frame = {"prob": prob, "residual": residual.astype(np.float32),
                 "background": np.full(shape, rate, np.float32), "noise": np.full(shape, np.sqrt(rate), np.float32),
                 "bad": np.zeros(shape, bool), "panel": np.zeros(shape, np.int32)}
        out = _sparse_chain(frame, THRESHOLD, grow_px=2.0, split=False, gain=1.0)
        _assert_same(_full_frame_chain(frame, THRESHOLD, grow_px=2.0, split=False, gain=1.0), out)
        return out

    def faint(found: Regions) -> list[bool]:
        return (found.sparse & (found.significance < 5.0)).tolist()

    cluster = np.array([[1.5, 2.5, 1.5], [1.5, 4.5, 1.5], [0.5, 1.5, -0.5]])  # 2-5 photons on 0.5 each
    sharp = np.array([[-0.5, 2.5, -0.5], [-0.5, 7.5, 5.5], [-0.5, -0.5, -0.5]])
    found = regions(0.5, [(np.s_[9:12], np.s_[9:12], cluster), (np.s_[9:12], np.s_[39:42], sharp)])
    assert found.columns["col"].round().tolist() == [10.0, 40.0]
    assert faint(found) == [True, False]
    assert (found.significance[1] > 6.0) and (found.spill[1] > 2.0) and found.local_max.all()
    # Gaussian pixels of that variance would call the cluster a spot: its 3 x 3 block holds 6.8 sigmas
    assert cluster.sum() / (3 * np.sqrt(0.5)) > 6.5
    almost_empty = regions(0.02, [(np.s_[19:21], np.s_[29:31], np.array([[9.0, 3.0], [2.0, 0.0]]))])
    assert faint(almost_empty) == [False]
    # a broad spot of 40 photons (sigma 1.5 px) on 3 photons per pixel: under 4 sigmas in its brightest 3 x 3
    # and in the whole region, but the background is not sparse, so it stays
    r, c = np.mgrid[-3:4, -3:4]
    broad = 40.0 * np.exp(-(r**2 + c**2) / (2 * 1.5**2)) / (2 * np.pi * 1.5**2)
    assert broad[2:5, 2:5].sum() / np.sqrt(9 * 3.0) < 4.0 and broad.sum() / np.sqrt(49 * 3.0) < 4.0
    assert SPARSE_PHOTONS <= 3.0
    on_three = regions(3.0, [(np.s_[17:24], np.s_[27:34], broad)])
    assert on_three.sparse.tolist() == [False] and on_three.significance[0] < 4.0


def test_regions_two_pixels_apart_on_the_edge_and_against_bad_pixels() -> None:
    shape = (10, 12)
    prob = np.zeros(shape, np.float32)
    residual = np.zeros(shape, np.float32)
    prob[0, 0] = prob[0, 2] = 0.9  # two regions at the corner, one free pixel between them
    prob[5, 5:7] = 0.8
    residual[0, :3] = [5.0, 1.0, 3.0]
    residual[5, 4:8] = [1.0, 4.0, 6.0, 2.0]
    bad = np.zeros(shape, bool)
    bad[6, 5] = True
    panel = np.zeros(shape, np.int32)
    frame = {
        "prob": prob,
        "residual": residual,
        "background": np.ones(shape, np.float32),
        "noise": np.ones(shape, np.float32),
        "bad": bad,
        "panel": panel,
    }
    regions = _sparse_chain(frame, THRESHOLD, grow_px=1.0)
    _assert_same(_full_frame_chain(frame, THRESHOLD, grow_px=1.0), regions)
    cols, share = regions.columns, regions.along_mask
    # (0, 1) lies one pixel from both corner regions: the offset (0, -1) comes first, so it joins the second;
    # nothing grows onto the bad pixel (6, 5)
    assert cols["n_pixels"].tolist() == [2, 4, 7]
    np.testing.assert_allclose(share, [1.0, 1.0, 1.0])
    np.testing.assert_allclose(cols["score"], [0.9, 0.9, 0.8])


def test_no_pixel_above_the_cut_gives_empty_columns() -> None:
    frame = _synthetic_frame(0)
    frame["prob"] *= 0.5
    cols, share, *_ = _sparse_chain(frame, THRESHOLD, grow_px=2.0)
    assert all(cols[k].size == 0 for k in PEAK_COLUMNS) and share.shape == (0,)
    assert cols["n_pixels"].dtype == np.int64
    empty = CandidatePixels(
        shape=(4, 4),
        index=np.empty(0, np.int64),
        prob=np.empty(0, np.float32),
        residual=np.empty(0, np.float32),
        background=np.empty(0, np.float32),
        noise=np.empty(0, np.float32),
        bad=np.empty(0, bool),
        panel=np.empty(0, np.int32),
        threshold=0.5,
    )
    regions = extract_peaks(empty)
    cols = regions.columns
    assert set(cols) == set(PEAK_COLUMNS) and cols["row"].size == 0
    assert all(flag.size == 0 for flag in regions[1:])


@pytest.mark.parametrize("reach", [0, 1, 2, 4])
def test_candidates_are_the_square_neighbourhood_of_good_pixels_above_the_cut(reach: int) -> None:
    frame = _synthetic_frame(3)
    frame["prob"][0, 0] = 0.9  # a pixel at a corner
    frame["prob"][5, 62] = 0.9  # a bad one: not above the cut
    c = gather_candidates(
        frame["prob"], frame["residual"], frame["background"], frame["noise"], frame["bad"], frame["panel"], 0.5, reach
    )
    above = (frame["prob"] > 0.5) & ~frame["bad"]
    expected = ndimage.binary_dilation(above, np.ones((2 * reach + 1,) * 2, bool)) if reach else above
    np.testing.assert_array_equal(c.index, np.flatnonzero(expected))
    for name, key in (("prob", "prob"), ("residual", "residual"), ("noise", "noise"), ("bad", "bad")):
        np.testing.assert_array_equal(getattr(c, name), frame[key].ravel()[c.index])
    np.testing.assert_array_equal(c.panel, frame["panel"].ravel()[c.index])
    assert c.index.dtype == np.int64 and c.prob.dtype == np.float32 and c.panel.dtype == np.int32


def test_inputs_are_not_modified() -> None:
    frame = _synthetic_frame(1)
    copies = {k: v.copy() for k, v in frame.items()}
    _sparse_chain(frame, THRESHOLD, grow_px=2.0)
    for key, value in frame.items():
        np.testing.assert_array_equal(value, copies[key])


def test_candidate_reach() -> None:
    assert [candidate_reach(g) for g in (0.0, 1.0, 2.0, 2.9, 3.5, 10.0)] == [2, 2, 2, 2, 3, 10]
    with pytest.raises(ValueError, match="grow_px"):
        candidate_reach(-1.0)
    with pytest.raises(ValueError, match="grow_px"):
        candidate_reach(float("nan"))


def test_bad_input_is_rejected() -> None:
    frame = _synthetic_frame(0)
    args = [frame[k] for k in ("prob", "residual", "background", "noise", "bad", "panel")]
    c = gather_candidates(*args, THRESHOLD, 1)
    with pytest.raises(ValueError, match="reach"):
        extract_peaks(c, grow_px=2.0)  # the widening needs two pixels around the regions
    with pytest.raises(ValueError, match="reach"):
        extract_peaks(gather_candidates(*args, THRESHOLD, 2), grow_px=3.5, split=False)  # the widening needs 3
    with pytest.raises(ValueError, match="reach"):
        gather_candidates(*args, THRESHOLD, -1)
    for gain in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="gain"):
            gather_candidates(*args, THRESHOLD, 2, gain=gain)
    with pytest.raises(ValueError, match="noise"):
        gather_candidates(*args[:3], args[3][:-1], *args[4:], THRESHOLD, 2)
    with pytest.raises(ValueError, match="min_pixel_count"):
        extract_peaks(gather_candidates(*args, THRESHOLD, 2), min_pixel_count=0)
    with pytest.raises(ValueError, match="exclude_above"):
        extract_peaks(gather_candidates(*args, THRESHOLD, 2), exclude_above=float("nan"))
    with pytest.raises(ValueError, match="strictly increasing"):
        CandidatePixels(
            shape=(2, 2),
            index=np.array([2, 1]),
            prob=np.zeros(2, np.float32),
            residual=np.zeros(2, np.float32),
            background=np.zeros(2, np.float32),
            noise=np.zeros(2, np.float32),
            bad=np.zeros(2, bool),
            panel=np.zeros(2, np.int32),
            threshold=0.5,
        )
    with pytest.raises(ValueError, match="prob"):
        CandidatePixels(
            shape=(2, 2),
            index=np.zeros(1, np.int64),
            prob=np.zeros(2, np.float32),
            residual=np.zeros(1, np.float32),
            background=np.zeros(1, np.float32),
            noise=np.zeros(1, np.float32),
            bad=np.zeros(1, bool),
            panel=np.zeros(1, np.int32),
            threshold=0.5,
        )


@pytest.fixture(scope="module")
def network_frame() -> tuple[dict, float, float]:
    """The shipped model's probability map of a simulated jungfrau4m frame (about 4 s on one core)."""
    pytest.importorskip("torch")
    from braggml.ml.unet import load_unet
    from braggml.simulate import Simulator, get_preset
    from braggml.simulate.config import apply_overrides

    sim = Simulator(apply_overrides(get_preset("jungfrau4m"), {"crystal": {"hit_fraction": 1.0}}), seed=8)
    frame, maps = sim.frame(0), sim.layout.pixel_maps(sim.wavelength_a)
    model = load_unet(device="cpu")
    prob, norm = model.probability(frame.image, maps.mask, maps=maps)
    arrays = {
        "prob": prob,
        "residual": norm.residual,
        "background": norm.background,
        "noise": norm.noise,
        "bad": norm.bad,
        "panel": norm.panel_id,
    }
    return arrays, model.threshold, norm.gain


@pytest.mark.parametrize("grow_px", [0.0, 2.0, 3.5])
def test_network_output_gives_the_full_frame_peaks(network_frame: tuple[dict, float, float], grow_px: float) -> None:
    frame, threshold, gain = network_frame
    assert gain > 0
    full = _full_frame_chain(frame, threshold, grow_px=grow_px, gain=gain)
    assert full[0]["row"].size > 100
    _assert_same(full, _sparse_chain(frame, threshold, grow_px=grow_px, gain=gain))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_photon_seeds_are_the_full_frame_local_maxima_away_from_the_marks(seed: int) -> None:
    """Seeds: good pixels of two photons or more on a sparse background (the pixel and its block), the brightest
    of their 3 x 3 block (beyond the edge nothing counts) and more than two pixels from every good pixel above
    the level; stricter tests keep fewer."""
    rng = np.random.default_rng(seed)
    shape = (70, 90)
    gain = 1.0 + 0.5 * seed
    background = np.where(np.arange(shape[1]) < 60, 0.3, 2.0)[None, :].repeat(shape[0], 0).astype(np.float32) * gain
    noise = np.sqrt(background * gain).astype(np.float32)
    residual = (rng.poisson(background / gain) * gain - background).astype(np.float32)
    residual[rng.random(shape) < 0.01] += np.float32(6 * gain)  # a few bright pixels
    residual[0, 5] = residual[69, 3] = 9 * gain  # on the edges
    residual[10, 10] = residual[10, 11] = 7 * gain  # a tie: both are maxima of their block
    bad = rng.random(shape) < 0.03
    residual[bad] = 0
    prob = rng.random(shape).astype(np.float32) ** 40  # a few pixels above the level
    residual[30:33, 20:23] += np.array([[1, 2, 1], [2, 12, 3], [0, 2, 1]], np.float32) * gain  # a sharp spot
    bad[29:34, 19:24] = False
    prob[27:36, 17:26] = 0.0
    panel = np.zeros(shape, np.int32)
    got = photon_seeds(prob, residual, background, noise, bad, panel, 0.3, gain)

    good = ~bad
    value = np.where(good, residual, -np.inf)
    top = value >= ndimage.maximum_filter(value, 3, mode="constant", cval=-np.inf)
    rate = np.maximum(background / gain, (noise / gain) ** 2)
    near = ndimage.maximum_filter((prob > 0.3) & good, 2 * SEED_CLEARANCE_PX + 1, mode="constant", cval=False)
    # the block's good pixels average under a photon of background, raised by the median excess of the 16 good
    # pixels around the block where they hold one
    box = np.ones((3, 3))

    def total(values: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        return ndimage.correlate(np.where(good, values, 0.0), footprint, mode="constant")

    values = np.where(good, residual / gain, np.nan)
    padded = np.pad(values, 2, constant_values=np.nan)
    around = np.stack([padded[2 + dr : 2 + dr + shape[0], 2 + dc : 2 + dc + shape[1]]
                       for dr in range(-2, 3) for dc in range(-2, 3) if max(abs(dr), abs(dc)) == 2])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        raised = np.nan_to_num(np.maximum(np.nanmedian(around, axis=0), 0))
    level = (total(rate, box) + raised * total(np.ones(shape), box)) / np.maximum(total(np.ones(shape), box), 1)
    place = good & top & (residual >= SEED_MIN_PHOTONS * gain) & (rate < SPARSE_PHOTONS) & ~near
    want = np.flatnonzero(place & (level < SPARSE_PHOTONS))
    # a median of whole counts raises the level to exactly one photon at times: rounding decides there
    tie = np.flatnonzero(place & (np.abs(level - SPARSE_PHOTONS) < 1e-5))
    np.testing.assert_array_equal(np.setdiff1d(got, tie), np.setdiff1d(want, tie))
    assert want.size > 5 and np.all(want % shape[1] < 60)  # none on the dense background
    for r, c in [(0, 5), (69, 3)]:
        assert (r * shape[1] + c in got) == (good[r, c] and not near[r, c])
    strict = photon_seeds(prob, residual, background, noise, bad, panel, 0.3, gain, min_sigma=5.0, min_spill=1.0)
    assert 31 * shape[1] + 21 in strict and strict.size < got.size and np.isin(strict, got).all()
    # no gain, no seeds
    assert photon_seeds(prob, residual, background, noise, bad, panel, 0.3, 0.0).size == 0


def test_photon_seeds_are_measured_as_regions_of_their_own() -> None:
    """Seeds are gathered with their neighbourhood and measured as one-pixel regions (grown as any region), with
    the probability of their pixel as score."""
    shape = (40, 40)
    residual = np.zeros(shape, np.float32)
    residual[9:12, 9:12] = [[0, 2, 0], [1, 9, 3], [0, 1, 0]]
    residual[30, 30] = 5.0
    prob = np.zeros(shape, np.float32)
    prob[30, 30] = 0.9  # the network's own region
    prob[10, 10] = 0.1
    ones, zero = np.ones(shape, np.float32), np.zeros(shape, np.float32)
    bad = np.zeros(shape, bool)
    panel = np.zeros(shape, np.int32)
    seeds = photon_seeds(prob, residual, zero + 0.1, ones * 0.3, bad, panel, 0.5, 1.0)
    assert seeds.tolist() == [10 * 40 + 10]
    c = gather_candidates(prob, residual, zero + 0.1, ones * 0.3, bad, panel, 0.5, 2, gain=1.0, seeds=seeds)
    assert c.seed is not None and c.index[c.seed].tolist() == seeds.tolist()
    net = extract_peaks(c, grow_px=2.0)
    found = extract_peaks(c, grow_px=2.0, seeds=True)
    assert net.columns["row"].tolist() == [30.0]
    assert found.columns["score"].tolist() == [pytest.approx(0.1)]
    assert found.columns["intensity"][0] == pytest.approx(16.0)
    assert found.columns["row"][0] == pytest.approx(159 / 16) and found.columns["col"][0] == pytest.approx(162 / 16)
    assert found.sparse.tolist() == [True] and found.significance[0] > 6 and found.local_max.tolist() == [True]
    # without seeds the set is the network's alone
    plain = gather_candidates(prob, residual, zero + 0.1, ones * 0.3, bad, panel, 0.5, 2, gain=1.0)
    assert plain.seed is None and extract_peaks(plain, seeds=True).columns["row"].size == 0
    with pytest.raises(ValueError, match="seeds"):
        gather_candidates(prob, residual, zero, ones, bad, panel, 0.5, 2, seeds=np.array([40 * 40]))
