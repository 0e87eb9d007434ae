"""Behaviour shared by every classical finder: centroids, masks, panels, dtypes, borders, rings."""

from __future__ import annotations

import numpy as np
import pytest
from classical_synthetic import elliptical_ring, gaussian_spots, grid_centres, match, on_ellipse, two_panel_maps

from braggml.finder import make_finder
from braggml.geometry import PixelMaps
from braggml.peaks import PeakList

SHAPE = (160, 192)


def test_registry_builds_every_classical_finder(finder_name: str) -> None:
    finder = make_finder(finder_name)
    assert finder.name == finder_name
    assert finder.config == finder.config_class()


def test_noiseless_gaussian_centroids_within_a_tenth_of_a_pixel(finder_name: str) -> None:
    centres = grid_centres(SHAPE)
    image = gaussian_spots(SHAPE, centres)
    peaks = make_finder(finder_name).find(image)
    assert isinstance(peaks, PeakList) and peaks.n_frames == 1
    assert len(peaks) == len(centres)
    dist = match(peaks.row, peaks.col, centres)
    assert dist.max() < 0.1, dist.max()
    assert np.all(np.isnan(peaks.score))
    assert np.all(peaks.intensity > 0) and np.all(peaks.n_pixels >= 2)
    assert np.all(peaks.max_value > 150)


def test_noisy_spots_found_with_defaults(finder_name: str) -> None:
    rng = np.random.default_rng(3)
    centres = grid_centres(SHAPE, seed=3)
    image = rng.poisson(gaussian_spots(SHAPE, centres, amplitude=80.0, background=5.0)).astype(np.int32)
    peaks = make_finder(finder_name).find(image)
    dist = match(peaks.row, peaks.col, centres)
    assert np.all(dist < 0.5)
    assert len(peaks) == len(centres)


def test_nothing_reported_inside_masked_areas(finder_name: str) -> None:
    centres = grid_centres(SHAPE)
    image = gaussian_spots(SHAPE, centres)
    mask = np.zeros(SHAPE, bool)
    mask[:, :64] = True  # hides the first two columns of spots
    peaks = make_finder(finder_name).find(image, mask)
    assert np.all(peaks.col > 64)
    visible = [c for c in centres if c[1] > 70]
    assert len(peaks) == len(visible)


def test_peaks_touching_mask_dropped_or_flagged(finder_name: str) -> None:
    centre = [(20.2, 30.7)]
    image = gaussian_spots((80, 120), centre, sigma_px=1.5)
    mask = np.zeros(image.shape, bool)
    mask[21, 31] = True  # a bad pixel inside the spot
    dropped = make_finder(finder_name).find(image, mask)
    assert len(dropped) == 0
    finder = make_finder(finder_name, masked_peaks="keep")
    kept = finder.find(image, mask)
    if finder_name != "dispersion_extended":  # its core pixels keep away from bad pixels by design
        assert len(kept) == 1
        assert finder.last_report.touches_mask.tolist() == [True]


def test_gap_pixels_of_no_panel_are_never_peaks(finder_name: str) -> None:
    image = gaussian_spots((80, 120), [(40.0, 30.0), (40.0, 90.0)])
    fallback = PixelMaps.fallback(image.shape)
    panel = np.zeros(image.shape, np.int32)
    panel[:, 80:100] = -1
    maps = PixelMaps(panel_id=panel, radius_px=fallback.radius_px, mask=np.zeros(image.shape, bool))
    peaks = make_finder(finder_name).find(image, maps=maps)
    assert peaks.col.tolist() == pytest.approx([30.0], abs=0.1)


def test_no_peak_spans_two_panels(finder_name: str) -> None:
    image = gaussian_spots((80, 120), [(40.0, 89.6), (20.3, 20.2)], sigma_px=1.2)
    maps = two_panel_maps(image.shape, 90)
    finder = make_finder(finder_name, masked_peaks="keep")
    peaks = finder.find(image, maps=maps)
    straddling = peaks.take(np.abs(peaks.row - 40) < 3)
    if finder_name != "dispersion_extended":
        assert len(straddling) == 2
        left, right = sorted(straddling.col)
        assert left < 89.5 <= right
        assert np.all(finder.last_report.touches_mask[np.abs(peaks.row - 40) < 3])
    # by default the half whose core lies along the boundary is dropped; the half holding the rest
    # of the core stays, within a pixel of the spot's centre
    dropped = make_finder(finder_name).find(image, maps=maps)
    assert dropped.take(np.abs(dropped.row - 20.3) < 1).row.tolist() == pytest.approx([20.3], abs=0.1)
    halves = dropped.take(np.abs(dropped.row - 40) < 3)
    assert len(halves) <= 1
    assert np.all(np.abs(halves.col - 89.6) < 1.0)


def test_peaks_cut_by_a_gap_kept_when_their_core_is_not(finder_name: str) -> None:
    # one spot centred on the first row of a panel, one centred in the gap (only its tail is seen)
    image = gaussian_spots((80, 120), [(30.3, 40.0), (28.2, 90.0)], sigma_px=1.3, amplitude=2000.0)
    fallback = PixelMaps.fallback(image.shape)
    panel = np.zeros(image.shape, np.int32)
    panel[:30] = -1
    maps = PixelMaps(panel_id=panel, radius_px=fallback.radius_px, mask=np.zeros(image.shape, bool))
    finder = make_finder(finder_name)
    peaks = finder.find(image, maps=maps)
    if finder_name != "dispersion_extended":
        assert peaks.col.tolist() == pytest.approx([40.0], abs=0.1)
        assert 30.0 <= peaks.row[0] < 31.3


def test_single_hot_pixel_rejected(finder_name: str) -> None:
    rng = np.random.default_rng(5)
    image = rng.poisson(5.0, SHAPE).astype(np.int32)
    image[50, 70] = 5000
    finder = make_finder(finder_name)
    peaks = finder.find(image)
    assert len(peaks) == 0
    assert finder.last_report.rejected.get("too_small", 0) >= 1


def test_smooth_radial_background_and_ring_give_no_peaks(finder_name: str) -> None:
    rng = np.random.default_rng(11)
    maps = PixelMaps.fallback((256, 256))
    r = maps.radius_px.astype(np.float64)
    smooth = 20 + 400 * np.exp(-r / 30) + 60 * np.exp(-((r - 90) ** 2) / (2 * 6.0**2))
    image = rng.poisson(smooth).astype(np.int32)
    peaks = make_finder(finder_name).find(image, maps=maps)
    assert len(peaks) == 0


def test_spots_at_the_border_are_found(finder_name: str) -> None:
    centres = [(0.0, 40.3), (30.4, 0.0), (59.0, 59.0), (30.0, 30.0)]
    image = gaussian_spots((60, 60), centres, sigma_px=1.0)
    peaks = make_finder(finder_name, reject_powder_rings=False).find(image)
    dist = match(peaks.row, peaks.col, centres)
    if finder_name == "dispersion_extended":
        # its core test needs the spot kernel_size pixels inside the frame
        assert dist[3] < 0.1
    else:
        # half a spot cut off by the border pulls its centroid inwards by about 0.5 px
        assert np.all(dist < 1.0), dist
        assert dist[3] < 0.1


@pytest.mark.parametrize(
    "dtype",
    [
        np.uint8,
        np.uint16,
        np.uint32,
        np.uint64,
        np.int8,
        np.int16,
        np.int32,
        np.int64,
        np.float16,
        np.float32,
        np.float64,
    ],
)
def test_every_real_dtype(finder_name: str, dtype: type) -> None:
    centres = grid_centres((96, 96))
    image = np.rint(gaussian_spots((96, 96), centres, amplitude=100.0, background=10.0))
    reference = make_finder(finder_name).find(image)
    peaks = make_finder(finder_name).find(image.astype(dtype))
    assert len(peaks) == len(reference) == len(centres)
    assert np.allclose(peaks.row, reference.row, atol=0.02)
    assert np.allclose(peaks.col, reference.col, atol=0.02)


def test_input_not_modified_and_read_only_input_accepted(finder_name: str) -> None:
    image = gaussian_spots(SHAPE, grid_centres(SHAPE)).astype(np.float32)
    image[3, 3] = np.nan
    mask = np.zeros(SHAPE, bool)
    mask[10:20, 10:20] = True
    before, mask_before = image.copy(), mask.copy()
    image.setflags(write=False)
    mask.setflags(write=False)
    make_finder(finder_name).find(image, mask)
    np.testing.assert_array_equal(image, before)
    np.testing.assert_array_equal(mask, mask_before)


def test_bad_frames_rejected(finder_name: str) -> None:
    finder = make_finder(finder_name)
    with pytest.raises(ValueError, match="2-D"):
        finder.find(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="mask has shape"):
        finder.find(np.zeros((8, 8)), np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="maps have shape"):
        finder.find(np.zeros((8, 8)), maps=PixelMaps.fallback((4, 4)))
    with pytest.raises(ValueError, match="real numbers"):
        finder.find(np.zeros((8, 8), complex))


def test_empty_and_constant_frames_give_no_peaks(finder_name: str) -> None:
    finder = make_finder(finder_name)
    assert len(finder.find(np.zeros((32, 32)))) == 0
    assert len(finder.find(np.full((32, 32), 7, np.uint16))) == 0
    assert len(finder.find(np.zeros((32, 32)), np.ones((32, 32), bool))) == 0


def test_ice_ring_peaks_rejected_when_resolution_known(finder_name: str) -> None:
    shape = (128, 128)
    fallback = PixelMaps.fallback(shape)
    spot = (63.5, 103.5)  # 40 px from the beam
    image = gaussian_spots(shape, [spot])

    def maps_with_spot_at(d_a: float) -> PixelMaps:
        resolution = (d_a * 40.0 / np.maximum(fallback.radius_px, 1e-3)).astype(np.float32)
        return PixelMaps(
            panel_id=fallback.panel_id, radius_px=fallback.radius_px, mask=fallback.mask, resolution_a=resolution
        )

    finder = make_finder(finder_name, reject_powder_rings=False, ice_rings="reject")
    assert len(finder.find(image, maps=maps_with_spot_at(3.0))) == 1
    assert len(finder.find(image, maps=maps_with_spot_at(3.669))) == 0
    assert finder.last_report.rejected == {"ice_ring": 1}
    assert len(make_finder(finder_name, ice_rings="off").find(image, maps=maps_with_spot_at(3.669))) == 1
    flagger = make_finder(finder_name, reject_powder_rings=False, ice_rings="flag")
    assert len(flagger.find(image, maps=maps_with_spot_at(3.669))) == 1
    assert flagger.last_report.on_ice_ring.tolist() == [True]


def test_ice_rings_auto_rejects_only_at_rings_the_frame_shows(finder_name: str) -> None:
    rng = np.random.default_rng(8)
    shape = (256, 256)
    fallback = PixelMaps.fallback(shape)
    r = fallback.radius_px.astype(np.float64)
    resolution = (3.669 * 80.0 / np.maximum(r, 1e-3)).astype(np.float32)  # the 3.669 A ring at 80 px
    maps = PixelMaps(
        panel_id=fallback.panel_id, radius_px=fallback.radius_px, mask=fallback.mask, resolution_a=resolution
    )
    spot = [(127.5, 127.5 + 80.0)]
    clean = rng.poisson(gaussian_spots(shape, spot, amplitude=300.0, background=20.0)).astype(np.int32)
    iced = rng.poisson(
        gaussian_spots(shape, spot, amplitude=300.0, background=20.0) + 8 * np.exp(-((r - 80) ** 2) / 4.0)
    ).astype(np.int32)
    finder = make_finder(finder_name, reject_powder_rings=False)
    assert finder.config.ice_rings == "auto"
    assert len(finder.find(clean, maps=maps)) == 1
    assert len(finder.find(iced, maps=maps)) == 0
    assert finder.last_report.rejected.get("ice_ring") == 1


def test_grainy_powder_ring_rejected_without_geometry(finder_name: str) -> None:
    rng = np.random.default_rng(2)
    maps = PixelMaps.fallback((256, 256))
    r = maps.radius_px.astype(np.float64)
    ring = 30 * np.exp(-((r - 70) ** 2) / (2 * 1.5**2))
    angles = rng.uniform(0, 2 * np.pi, 40)
    grains = [(127.5 + 70 * np.sin(a), 127.5 + 70 * np.cos(a)) for a in angles]
    image = gaussian_spots((256, 256), grains, amplitude=400.0, background=10.0) + ring
    image = rng.poisson(image).astype(np.int32)

    def n_on_ring(peaks: PeakList) -> int:
        return int((np.abs(np.hypot(peaks.row - 127.5, peaks.col - 127.5) - 70) < 4).sum())

    finder = make_finder(finder_name)
    assert n_on_ring(finder.find(image, maps=maps)) == 0
    if finder.last_report.rejected.get("powder_ring", 0):
        assert n_on_ring(make_finder(finder_name, reject_powder_rings=False).find(image, maps=maps)) >= 1


def test_elliptical_powder_ring_rejected_and_spots_off_it_kept(finder_name: str) -> None:
    """A faint grainy ring on a tilted detector (radius 240 +- 3 px around the annulus) is spread over too many
    1-pixel radius bins for any whole annulus to show it; it is recognised sector by sector."""
    rng = np.random.default_rng(13)
    shape = (600, 600)
    ring, ring_radius = elliptical_ring(shape, 240.0, 3.0, height=5.0)
    grains = on_ellipse(shape, 240.0, 3.0, rng.uniform(0, 2 * np.pi, 80))
    spots = [(150.3, 420.7), (420.2, 160.4), (300.6, 120.1), (80.4, 300.2), (560.3, 380.3)]
    image = gaussian_spots(shape, grains, amplitude=100.0, background=10.0) + ring
    image = rng.poisson(image + gaussian_spots(shape, spots, amplitude=300.0, background=0.0)).astype(np.int32)
    maps = PixelMaps.fallback(shape)

    def n_on_ring(peaks: PeakList) -> int:
        rows, cols = np.rint(peaks.row).astype(int), np.rint(peaks.col).astype(int)
        off = np.hypot(peaks.row - 299.5, peaks.col - 299.5) - ring_radius[rows, cols]
        return int((np.abs(off) < 4).sum())

    finder = make_finder(finder_name)
    peaks = finder.find(image, maps=maps)
    assert n_on_ring(peaks) == 0
    assert np.all(match(peaks.row, peaks.col, spots) < 1.0)
    assert finder.last_report.rejected.get("powder_ring", 0) >= 10
    assert n_on_ring(make_finder(finder_name, reject_powder_rings=False).find(image, maps=maps)) >= 10


def test_max_num_peaks_keeps_the_strongest(finder_name: str) -> None:
    centres = grid_centres(SHAPE)
    image = gaussian_spots(SHAPE, centres)
    image += gaussian_spots(SHAPE, [centres[7]], amplitude=800.0, background=0.0)
    finder = make_finder(finder_name, max_num_peaks=1)
    peaks = finder.find(image)
    assert len(peaks) == 1
    assert match(peaks.row, peaks.col, [centres[7]])[0] < 0.1
    assert finder.last_report.rejected["max_num_peaks"] == len(centres) - 1


def test_resolution_limits_in_pixels(finder_name: str) -> None:
    centres = grid_centres(SHAPE)
    image = gaussian_spots(SHAPE, centres)
    maps = PixelMaps.fallback(SHAPE)
    peaks = make_finder(finder_name, min_res=20, max_res=60).find(image, maps=maps)
    r = np.hypot(peaks.row - (SHAPE[0] - 1) / 2, peaks.col - (SHAPE[1] - 1) / 2)
    assert len(peaks) > 0 and np.all((r >= 19) & (r <= 61))


def test_find_frames_stacks_frames(finder_name: str) -> None:
    a = gaussian_spots((64, 64), [(20.0, 20.0)])
    b = gaussian_spots((64, 64), [(30.0, 40.0), (50.0, 10.0)])
    peaks = make_finder(finder_name).find_frames([a, np.zeros((64, 64)), b])
    assert peaks.counts_per_frame().tolist() == [1, 0, 2]


def test_rejections_exposed_for_the_run_summary(finder_name: str) -> None:
    rng = np.random.default_rng(5)
    image = rng.poisson(5.0, SHAPE).astype(np.int32)
    image[50, 70] = 5000
    finder = make_finder(finder_name)
    finder.find(image)
    assert finder.last_rejections == finder.last_report.rejected
    assert finder.last_rejections.get("too_small", 0) >= 1
