"""The building blocks against brute-force versions: box sums, dispersion test, labelling, statistics."""

from __future__ import annotations

import numpy as np
import pytest
from classical_synthetic import elliptical_ring, gaussian_spots, on_ellipse

from braggml.classical import _radial
from braggml.classical._common import label_within_panels, prepare_frame
from braggml.classical._radial import estimate_gain, estimate_gain_per_panel, radial_statistics
from braggml.classical.dispersion import DispersionFinder, box_sums, estimate_dispersion_gain
from braggml.classical.peakfinder8 import Peakfinder8
from braggml.classical.rings import (
    POWDER_RING_FRACTION,
    RING_MIN_EXCESS,
    RING_SECTORS,
    azimuth_sectors,
    on_ice_rings,
    powder_ring_bins,
    ring_evidence,
    ring_levels,
)
from braggml.classical.threshold import ThresholdFinder
from braggml.finder import make_finder
from braggml.geometry import PixelMaps


def test_box_sums_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(5, 2, (23, 31)).astype(np.float32)
    valid = rng.random((23, 31)) > 0.2
    k = 2
    m, x, y = box_sums(data, valid, k)
    for r in range(23):
        for c in range(31):
            win = (slice(max(r - k, 0), r + k + 1), slice(max(c - k, 0), c + k + 1))
            v = data[win][valid[win]].astype(np.float64)
            assert m[r, c] == v.size
            assert x[r, c] == pytest.approx(v.sum(), abs=1e-6)
            assert y[r, c] == pytest.approx((v**2).sum(), rel=1e-9, abs=1e-6)


def test_dispersion_strong_pixels_follow_the_dials_formulae() -> None:
    rng = np.random.default_rng(1)
    data = rng.poisson(gaussian_spots((40, 50), [(20.0, 25.0)], amplitude=60.0, background=3.0))
    data = data.astype(np.float32)
    valid = np.ones(data.shape, bool)
    finder = DispersionFinder(gain=1.0, kernel_size=3, sigma_background=6.0, sigma_strong=3.0)
    strong, gain = finder.strong_pixels(data, valid)
    assert gain == 1.0
    k = 3
    expected = np.zeros_like(strong)
    for r in range(40):
        for c in range(50):
            v = data[max(r - k, 0) : r + k + 1, max(c - k, 0) : c + k + 1].astype(np.float64)
            n, mean, var = v.size, v.mean(), v.var(ddof=1)
            if n < 2 or mean <= 0:
                continue
            dispersed = var / mean > 1 + 6.0 * np.sqrt(2 / (n - 1))
            expected[r, c] = dispersed and data[r, c] > mean + 3.0 * np.sqrt(mean) and data[r, c] > 0
    np.testing.assert_array_equal(strong, expected)
    assert strong[20, 25]


def test_labelling_is_eight_connected_and_stops_at_panel_edges() -> None:
    cand = np.zeros((6, 8), bool)
    cand[1, 1] = cand[2, 2] = True  # diagonal neighbours
    cand[4, 3:6] = True  # crosses the panel edge at column 4
    panel = np.zeros((6, 8), np.int32)
    panel[:, 4:] = 1
    labels, n = label_within_panels(cand, panel)
    assert n == 3
    assert labels[1, 1] == labels[2, 2]
    assert labels[4, 3] != labels[4, 4] and labels[4, 4] == labels[4, 5]
    labels4, n4 = label_within_panels(cand, panel, connectivity=4)
    assert n4 == 4


def test_radial_statistics_clip_spots_out_of_the_background() -> None:
    rng = np.random.default_rng(2)
    maps = PixelMaps.fallback((200, 200))
    image = rng.normal(100, 5, (200, 200)).astype(np.float32)
    image[50:53, 50:53] += 5000
    stats = radial_statistics(image, np.ones(image.shape, bool), maps.radius_px, maps.panel_id, snr=3.0, iterations=10)
    used = stats.count > 150
    assert np.allclose(stats.offset[used], 100, atol=1.5)
    assert np.allclose(stats.sigma[used], 5, atol=0.8)


def test_gain_estimated_from_poisson_background_in_any_units() -> None:
    rng = np.random.default_rng(3)
    maps = PixelMaps.fallback((300, 300))
    expected = 2 + 200 * np.exp(-maps.radius_px / 60.0)
    counts = rng.poisson(expected).astype(np.float32)
    for gain in (1.0, 25.0):
        data = counts * gain
        stats = radial_statistics(data, np.ones(data.shape, bool), maps.radius_px, maps.panel_id, snr=5.0)
        assert estimate_gain(stats.offset, stats.sigma, stats.count) == pytest.approx(gain, rel=0.15)
        assert estimate_dispersion_gain(data, np.ones(data.shape, bool)) == pytest.approx(gain, rel=0.15)


@pytest.mark.parametrize("finder_name", ["peakfinder8", "threshold", "dispersion", "dispersion_extended"])
def test_photon_pairs_on_a_sparse_background_are_not_peaks(finder_name: str) -> None:
    rng = np.random.default_rng(4)
    image = rng.poisson(0.02, (300, 300)).astype(np.int32)
    for r, c in rng.integers(5, 295, (40, 2)):
        image[r, c : c + 2] = 1  # charge-shared single photons
    image[150:153, 100:103] += 12  # a weak but real spot of about 100 photons
    peaks = make_finder(finder_name).find(image)
    assert len(peaks) == 1
    assert abs(peaks.row[0] - 151) < 0.3 and abs(peaks.col[0] - 101) < 0.3


def test_panel_offsets_of_an_integrating_detector_do_not_make_peaks() -> None:
    rng = np.random.default_rng(5)
    shape = (128, 256)
    panel = np.zeros(shape, np.int32)
    panel[:, 128:] = 1
    fallback = PixelMaps.fallback(shape)
    maps = PixelMaps(panel_id=panel, radius_px=fallback.radius_px, mask=np.zeros(shape, bool))
    image = rng.normal(0, 8, shape) + np.where(panel == 1, 60.0, -20.0)  # pedestal offsets in ADU
    image = np.rint(image).astype(np.int32)
    image[40:42, 60:62] += 400
    image[90:92, 200:202] += 400
    for finder in (Peakfinder8(), ThresholdFinder()):
        peaks = finder.find(image, maps=maps)
        assert len(peaks) == 2, type(finder).__name__


def test_powder_ring_radii_found_from_azimuthal_continuity() -> None:
    rng = np.random.default_rng(6)
    maps = PixelMaps.fallback((300, 300))
    r = maps.radius_px.astype(np.float64)
    half = np.arange(300)[None, :] < 150  # a half ring, as kapton gives
    image = 20 + 40 * np.exp(-((r - 100) ** 2) / 2.0) * half
    image = image + gaussian_spots((300, 300), [(149.5, 89.5), (60.0, 150.0)], amplitude=500.0, background=0)
    data = rng.poisson(image).astype(np.float32)
    good = np.ones(data.shape, bool)
    stats = radial_statistics(data, good, maps.radius_px, maps.panel_id, snr=3.0, iterations=10)
    ring = powder_ring_bins(data, good, stats, contrast=1.0)
    assert ring[100] and ring[99] and ring[101]
    assert not ring[60] and not ring[90] and not ring[130]


def test_azimuth_sectors_follow_the_radius_map_within_each_panel() -> None:
    maps = PixelMaps.fallback((120, 160))
    sectors = azimuth_sectors(maps.radius_px, maps.panel_id)
    rows, cols = np.indices((120, 160)) - np.array([59.5, 79.5])[:, None, None]
    expected = np.floor((np.arctan2(rows, cols) + np.pi) / (2 * np.pi) * RING_SECTORS).astype(int) % RING_SECTORS
    assert sectors.dtype == np.uint8 and sectors.max() == RING_SECTORS - 1
    assert np.mean(sectors == expected) > 0.97  # all but pixels on sector borders
    assert azimuth_sectors(maps.radius_px, maps.panel_id) is sectors  # cached for the same maps
    # a panel stored upside down: its sectors are those of its own orientation, found within the panel
    flipped = np.asarray(maps.radius_px).copy()
    flipped[60:] = flipped[60:][::-1]
    panel = np.where(np.arange(120)[:, None] < 60, 0, 1).astype(np.int32) * np.ones((1, 160), np.int32)
    turned = azimuth_sectors(flipped, panel)
    np.testing.assert_array_equal(turned[:59], sectors[:59])
    source_rows = 179 - np.arange(60, 120)  # the rows of the flipped panel come from these rows of the frame
    mirrored = np.arctan2(-(source_rows[:, None] - 59.5), cols[60:])
    expected = np.floor((mirrored + np.pi) / (2 * np.pi) * RING_SECTORS).astype(int) % RING_SECTORS
    assert np.mean(turned[60:] == expected) > 0.97  # one-sided differences at the panel's border


def _ring_evidence_of(image: np.ndarray, *, sectors: bool):
    data = image.astype(np.float32)
    good = np.ones(data.shape, bool)
    maps = PixelMaps.fallback(data.shape)
    stats = radial_statistics(data, good, maps.radius_px, maps.panel_id, snr=3.0, iterations=10)
    found = azimuth_sectors(maps.radius_px, maps.panel_id) if sectors else None
    return ring_evidence(data, good, stats, contrast=1.0, sectors=found)


def test_an_elliptical_ring_is_found_sector_by_sector() -> None:
    """A faint grainy ring whose radius wanders by +-3 px around the annulus (a tilted detector) is spread
    over seven 1-pixel radius bins, so no whole annulus holds enough of it; within each sector it is sharp."""
    rng = np.random.default_rng(11)
    shape = (600, 600)
    ring, _ = elliptical_ring(shape, 240.0, 3.0, height=5.0)
    grains = on_ellipse(shape, 240.0, 3.0, rng.uniform(0, 2 * np.pi, 80))
    image = rng.poisson(gaussian_spots(shape, grains, amplitude=100.0, background=10.0) + ring)
    whole = _ring_evidence_of(image, sectors=False)
    assert whole.sector_fraction() is None and whole.on_sector_ring(POWDER_RING_FRACTION) is None
    assert not whole.on_ring(POWDER_RING_FRACTION)[230:251].any()  # whole annuli miss it
    evidence = _ring_evidence_of(image, sectors=True)
    np.testing.assert_array_equal(evidence.fraction, whole.fraction)
    by_sector = evidence.on_sector_ring(POWDER_RING_FRACTION)
    assert by_sector is not None and by_sector.shape == (evidence.fraction.size, RING_SECTORS)
    # each sector flags the ring at its own radius: 243 px along the columns, 237 px along the rows
    maps = PixelMaps.fallback(shape)
    sectors = azimuth_sectors(maps.radius_px, maps.panel_id)
    assert by_sector[243, sectors[300, 599]] and by_sector[237, sectors[599, 300]]
    assert by_sector[234:247].any(axis=0).all()
    assert not by_sector[:230].any() and not by_sector[251:].any()
    flat = np.ravel_multi_index(([300, 300], [300 + 243, 300 + 150]), shape)
    assert evidence.at(np.array([243.0, 150.0]), flat, POWDER_RING_FRACTION).tolist() == [True, False]
    assert whole.at(np.array([243.0, 150.0]), flat, POWDER_RING_FRACTION).tolist() == [False, False]
    # counted only near the radii asked for, the same as counting every radius there
    near = np.zeros(evidence.fraction.size, bool)
    near[236:245] = True
    (above, total), (all_above, all_total) = evidence.sector_counts(near), evidence.sector_counts()
    np.testing.assert_array_equal(above[near], all_above[near])
    np.testing.assert_array_equal(total[near], all_total[near])
    assert total[:200].sum() == 0 < all_total[:200].sum()


def test_bragg_spots_crowding_a_few_sectors_at_one_radius_make_no_ring() -> None:
    """Spots along an arc of 70 degrees at one radius (a lattice row) fill their sectors, but a ring must stand
    out in at least half of the sectors."""
    rng = np.random.default_rng(12)
    shape = (600, 600)
    spots = on_ellipse(shape, 240.0, 0.0, np.linspace(0.2, 0.2 + np.radians(70), 50))
    image = rng.poisson(gaussian_spots(shape, spots, amplitude=400.0, sigma_px=1.5, background=10.0))
    evidence = _ring_evidence_of(image, sectors=True)
    frac = evidence.sector_fraction()
    assert frac is not None and np.nanmax(frac[238:243]) > POWDER_RING_FRACTION  # the crowded sectors
    assert not evidence.on_sector_ring(POWDER_RING_FRACTION).any()


def test_a_radius_is_raised_only_by_a_real_bump_of_the_background() -> None:
    """A bump of a tenth of the noise (as dense Bragg spots leave in the clipped statistics) raises no radius,
    one of two noise sigmas (a ring) does."""
    maps = PixelMaps.fallback((300, 300))
    rr, cc = np.indices((300, 300))
    r = np.rint(maps.radius_px).astype(np.int64)
    image = 100.0 + 5.0 * np.where((rr + cc) % 2 == 0, 1.0, -1.0)  # mean 100, sigma 5 in every bin
    image = image + np.where(r == 60, 0.5, 0.0) + np.where(r == 100, 10.0, 0.0)
    data = image.astype(np.float32)
    good = np.ones(data.shape, bool)
    stats = radial_statistics(data, good, maps.radius_px, maps.panel_id, snr=3.0)
    raised = ring_levels(stats, contrast=1.0).raised[stats.radius_group]
    assert 0.1 < RING_MIN_EXCESS < 2.0
    assert raised[100] and not raised[60]
    assert not raised[[40, 59, 61, 80, 99, 101, 120]].any()


def test_ice_ring_membership() -> None:
    d = np.array([3.897, 3.95, 3.669, 2.0, 1.918, np.nan, 0.0])
    assert on_ice_rings(d, 0.002).tolist() == [True, False, True, False, True, False, False]


def _multi_panel_frame(integer: bool) -> tuple[np.ndarray, np.ndarray, PixelMaps]:
    """A 4-panel frame with panel offsets, a radial background, spots, a hot pixel and a masked block."""
    rng = np.random.default_rng(11)
    shape = (160, 200)
    fallback = PixelMaps.fallback(shape)
    panel = np.zeros(shape, np.int32)
    panel[80:, :] += 2
    panel[:, 100:] += 1
    panel[78:82, :] = -1  # a gap
    expected = 4.0 + 30.0 * np.exp(-fallback.radius_px / 60.0) + 3.0 * panel
    image = rng.poisson(expected).astype(np.float64)
    centres = [(20.3, 30.6), (50.2, 150.4), (120.5, 60.1), (140.7, 170.2), (100.1, 99.6)]
    image += gaussian_spots(shape, centres, amplitude=400.0, sigma_px=1.2, background=0.0)
    image[60, 60] = 5000.0
    if not integer:
        image = image * 0.37 + 0.11
    mask = np.zeros(shape, bool)
    mask[10:14, 180:190] = True
    maps = PixelMaps(panel_id=panel, radius_px=fallback.radius_px, mask=panel < 0)
    return image, mask, maps


@pytest.mark.parametrize("integer", [True, False])
def test_listed_upper_tail_gives_the_sums_of_full_passes(integer: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    image, mask, maps = _multi_panel_frame(integer)
    frame = prepare_frame(image, mask, maps)
    good = ~frame.bad
    kw = dict(snr=5.0, sigma_floor=0.5 if integer else 0.0, iterations=4, per_panel=True)
    listed = radial_statistics(frame.data, good, maps.radius_px, frame.panel_id, **kw)
    assert listed.border is not None and 0 < listed.border.index.size < good.sum() // 4
    monkeypatch.setattr(_radial, "_BORDER_SIGMA", 0.0)
    full = radial_statistics(frame.data, good, maps.radius_px, frame.panel_id, **kw)
    assert full.border is None
    np.testing.assert_array_equal(listed.count, full.count)
    np.testing.assert_allclose(listed.offset, full.offset, rtol=1e-6)
    np.testing.assert_allclose(listed.sigma, full.sigma, rtol=1e-5)
    # the candidate search from the listed tail equals the pass over the frame with the bad-pixel map
    threshold = (listed.offset + 3.5 * np.maximum(listed.sigma, 0.5)).astype(np.float32)
    level = (listed.offset + listed.sigma).astype(np.float32)
    args = (listed, threshold, maps.radius_px, 5.0, 1e9)
    fast = _radial.classify_pixels(frame.data, None, *args, ring_level=level, rate_gain=1.0)
    slow = _radial.classify_pixels(frame.data, frame.bad, *args, ring_level=level, rate_gain=1.0)
    np.testing.assert_array_equal(fast.candidate, slow.candidate)
    np.testing.assert_array_equal(fast.members, slow.members)
    np.testing.assert_array_equal(fast.ring_above, slow.ring_above)
    np.testing.assert_array_equal(fast.ring_total, slow.ring_total)
    np.testing.assert_allclose(fast.rate, slow.rate, rtol=1e-9)


def test_gain_per_panel_is_the_median_of_the_panel_fits() -> None:
    rng = np.random.default_rng(3)
    shape = (500, 600)
    fallback = PixelMaps.fallback(shape)
    panel = (np.arange(shape[1])[None, :] // 200 * np.ones((shape[0], 1))).astype(np.int32)
    maps = PixelMaps(panel_id=panel, radius_px=fallback.radius_px, mask=np.zeros(shape, bool))
    expected = 20.0 + 200.0 * np.exp(-fallback.radius_px / 80.0)
    data = (rng.poisson(expected) * 7.0 + 100.0 * panel).astype(np.float32)
    stats = radial_statistics(data, np.ones(shape, bool), maps.radius_px, panel, snr=5.0, per_panel=True)
    n_r = int(stats.radius_bin.max()) + 1
    rows = [slice(p * n_r, (p + 1) * n_r) for p in range(3)]
    fits = [estimate_gain(stats.offset[r], stats.sigma[r], stats.count[r]) for r in rows]
    assert all(g > 0 for g in fits)
    assert estimate_gain_per_panel(stats) == pytest.approx(float(np.median(fits)), rel=1e-12)
    assert estimate_gain_per_panel(stats) == pytest.approx(7.0, rel=0.15)
