"""Physics of the frame simulator: Bragg geometry, Wilson fall-off, noise, SNR, reproducibility, artefacts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from braggml.errors import ConfigError
from braggml.simulate import Simulator, apply_overrides, get_preset
from braggml.simulate.crystal import reciprocal_basis


def make_sim(seed: int = 7, **sections: dict) -> Simulator:
    return Simulator(apply_overrides(get_preset("test"), sections), seed=seed)


def cell_d_spacing(cell: tuple[float, ...], hkl: np.ndarray) -> np.ndarray:
    """d(hkl) from the metric tensor of the direct cell (independent of the simulator's orthogonalisation)."""
    a, b, c, al, be, ga = cell
    ca, cb, cg = np.cos(np.radians([al, be, ga]))
    g = np.array([[a * a, a * b * cg, a * c * cb], [a * b * cg, b * b, b * c * ca], [a * c * cb, b * c * ca, c * c]])
    g_star = np.linalg.inv(g)
    h = hkl.astype(float)
    return 1.0 / np.sqrt(np.einsum("ni,ij,nj->n", h, g_star, h))


QUIET = {"zingers_per_frame": 0.0, "hot_pixel_fraction": 0.0, "dead_pixel_fraction": 0.0, "panel_offset_adu": 0.0}


@pytest.mark.parametrize("cell", [(79.1, 79.1, 37.9, 90.0, 90.0, 90.0), (52.0, 61.0, 70.0, 80.0, 104.0, 95.0)])
def test_spot_positions_satisfy_bragg_condition(cell: tuple[float, ...]) -> None:
    sim = make_sim(
        crystal={"cell": list(cell), "mosaicity_deg": 0.005, "d_min_range_a": [1.9, 2.0]},
        beam={"bandwidth_rel": 1e-4, "divergence_mrad": 0.01},
    )
    det = sim.config.detector
    beam_r, beam_c = sim.layout.beam_rowcol
    n_checked = 0
    for k in range(4):
        frame = sim.frame(k)
        spots = frame.spots
        assert frame.n_spots > 10
        wavelength = frame.info["wavelength_a"]
        dr = (spots["row"] - beam_r) * det.pixel_size_mm
        dc = (spots["col"] - beam_c) * det.pixel_size_mm
        two_theta = np.arctan2(np.hypot(dr, dc), det.distance_mm)
        d_from_position = wavelength / (2.0 * np.sin(two_theta / 2.0))
        hkl = np.stack([spots["h"], spots["k"], spots["l"]], axis=1)
        d_cell = cell_d_spacing(cell, hkl)
        rel = np.abs(d_from_position - d_cell) / d_cell
        assert np.median(rel) < 2e-4
        assert rel.max() < 2e-3
        np.testing.assert_allclose(spots["resolution_a"], d_cell, rtol=1e-9)
        assert np.all(d_cell >= frame.info["d_min_a"] - 1e-9)  # resolution cut-off of the crystal
        n_checked += rel.size
    assert n_checked > 100


def test_truth_positions_follow_recorded_orientation() -> None:
    sim = make_sim(seed=3)
    frame = sim.frame(1)
    spots = frame.spots
    rot = Rotation.from_quat(frame.orientations[0])
    hkl = np.stack([spots["h"], spots["k"], spots["l"]], axis=1).astype(float)
    q = rot.apply(hkl @ reciprocal_basis(sim.config.crystal.cell).T)
    k_out = q + np.array([0.0, 0.0, 1.0 / frame.info["wavelength_a"]])
    det = sim.config.detector
    scale = det.distance_mm / det.pixel_size_mm
    row = sim.layout.beam_rowcol[0] + scale * k_out[:, 0] / k_out[:, 2]
    col = sim.layout.beam_rowcol[1] + scale * k_out[:, 1] / k_out[:, 2]
    np.testing.assert_allclose(spots["row"], row, atol=1e-6)
    np.testing.assert_allclose(spots["col"], col, atol=1e-6)
    # Excitation error: the reflection lies within reach of the Ewald sphere by its recorded amount.
    s = np.linalg.norm(k_out, axis=1) - 1.0 / frame.info["wavelength_a"]
    np.testing.assert_allclose(spots["excitation_error_inv_a"], s, atol=1e-12)
    assert np.all(spots["partiality"] >= sim.config.crystal.min_partiality)


def test_intensities_fall_off_with_resolution_per_b_factor() -> None:
    b_factor = 30.0
    sim = make_sim(
        seed=11,
        crystal={"cell": [14.0, 16.0, 19.0, 90.0, 90.0, 90.0], "b_factor_a2": b_factor, "b_factor_spread_a2": 0.0,
                 "d_min_range_a": [1.6, 1.6],
                 "strength_range_photons": [5000, 5000], "mosaicity_deg": 0.2},
        detector={"distance_mm": 18.0},
        artefacts={**QUIET, "beamstop_radius_mm": 0.0},
    )
    inv_d2, normalised = [], []
    for k in range(30):
        frame = sim.frame(k)
        spots = frame.spots
        signal = frame.expected_photons - frame.background_photons  # spots only, from the pixels
        rows, cols = signal.shape
        r = np.rint(spots["row"]).astype(int)
        c = np.rint(spots["col"]).astype(int)
        for j in range(frame.n_spots):
            others = np.hypot(spots["row"] - spots["row"][j], spots["col"] - spots["col"][j])
            if (np.sort(others)[1:2] < 9).any() or not (4 <= r[j] < rows - 4 and 4 <= c[j] < cols - 4):
                continue
            box = (slice(r[j] - 4, r[j] + 5), slice(c[j] - 4, c[j] + 5))
            if sim.layout.mask[box].any():
                continue
            integrated = signal[box].sum()
            norm = spots["partiality"][j] * spots["geom_factor"][j] * frame.info["strength_photons"]
            inv_d2.append(1.0 / spots["resolution_a"][j] ** 2)
            normalised.append(integrated / norm)
    inv_d2 = np.asarray(inv_d2)
    normalised = np.asarray(normalised)
    assert inv_d2.size > 300
    edges = np.quantile(inv_d2, np.linspace(0, 1, 7))
    centres, log_mean = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (inv_d2 >= lo) & (inv_d2 <= hi)
        centres.append(inv_d2[sel].mean())
        log_mean.append(np.log(normalised[sel].mean()))
    slope, intercept = np.polyfit(centres, log_mean, 1)
    # Wilson plot: ln <I> = ln <|E|^2> - B / (2 d^2), with <|E|^2> = 1.
    assert slope == pytest.approx(-b_factor / 2.0, rel=0.2)
    assert intercept == pytest.approx(0.0, abs=0.35)


@pytest.mark.parametrize(
    ("mode", "gain", "read_noise"), [("integrating", 12.0, 3.0), ("integrating", 1.0, 0.0), ("counting", 1.0, 0.0)]
)
def test_pixel_noise_is_poisson_times_gain(mode: str, gain: float, read_noise: float) -> None:
    sim = make_sim(
        seed=5,
        crystal={"hit_fraction": 0.0},
        background={"floor_photons": 20.0, "air_photons": 0.0, "water_photons": 0.0, "scale_spread": 0.0,
                    "ice_fraction": 0.0},
        detector={"mode": mode, "gain_adu_per_photon": gain, "read_noise_adu": read_noise, "adu_step": 0.0,
                  "distance_mm": 200.0,
                  "dtype": "float32" if mode == "integrating" else "int32", "saturation_value": 1e9},
        artefacts=QUIET,
    )
    frame = sim.frame(0)
    expected = frame.expected_photons
    flat = ~sim.layout.mask & (np.abs(expected / np.median(expected[~sim.layout.mask]) - 1.0) < 0.02)
    assert flat.sum() > 10000
    rng = np.random.default_rng(0)
    values = np.concatenate([sim.detect(expected, rng)[flat].astype(float) for _ in range(4)])
    lam = np.tile(expected[flat].astype(float), 4)
    assert values.mean() == pytest.approx(gain * lam.mean(), rel=0.005)
    assert values.var() == pytest.approx(gain**2 * lam.mean() + read_noise**2, rel=0.03)
    # The frame's own noise has the same statistics.
    own = frame.image[flat].astype(float)
    assert own.var() == pytest.approx(gain**2 * expected[flat].mean() + read_noise**2, rel=0.05)


def test_phosphor_spread_shares_the_photon_noise_between_neighbours() -> None:
    """Behind a phosphor each photon's signal spreads over neighbouring pixels: the mean is kept, the pixel
    variance falls and neighbouring pixels' noise becomes correlated (as on Rayonix or MarCCD detectors)."""
    spread = 1.0
    common = dict(
        seed=5,
        crystal={"hit_fraction": 0.0},
        background={"floor_photons": 20.0, "air_photons": 0.0, "water_photons": 0.0, "scale_spread": 0.0,
                    "ice_fraction": 0.0},
        artefacts=QUIET,
    )
    flat_cfg = {"gain_adu_per_photon": 10.0, "read_noise_adu": 0.0, "adu_step": 0.0, "distance_mm": 200.0,
                "saturation_value": 1e9}
    sims = {s: make_sim(**common, detector={**flat_cfg, "phosphor_spread_px": s}) for s in (0.0, spread)}
    layout = sims[0.0].layout
    expected = sims[0.0].frame(0).expected_photons.astype(float)
    # pixels at least 5 px inside a module (the spread takes no signal from the gaps there)
    inside = ndimage.binary_erosion((layout.panel_id == 0) & ~layout.mask, iterations=5)
    assert inside.sum() > 5000
    rng = np.random.default_rng(3)
    plain = sims[0.0].detect(expected, rng) - 10.0 * expected
    spread_image = sims[spread].detect(expected, rng) - 10.0 * expected
    assert abs(spread_image[inside].mean()) < 0.01 * 10.0 * expected[inside].mean()
    # a Gaussian spread of sigma s leaves about 1 / (4 pi s^2) of a pixel's independent variance
    assert spread_image[inside].var() == pytest.approx(plain[inside].var() / (4 * np.pi * spread**2), rel=0.15)

    def neighbour_correlation(x: np.ndarray) -> float:
        pairs = inside[:, 1:] & inside[:, :-1]
        return float((x[:, 1:] * x[:, :-1])[pairs].mean() / x[inside].var())

    assert abs(neighbour_correlation(plain)) < 0.03
    assert neighbour_correlation(spread_image) > 0.6
    with pytest.raises(ConfigError, match="phosphor_spread_px"):
        make_sim(detector={"mode": "counting", "gain_adu_per_photon": 1.0, "phosphor_spread_px": 1.0})
    with pytest.raises(ConfigError, match="phosphor_spread_px"):
        make_sim(detector={"phosphor_spread_px": -0.5})


def test_truth_snr_agrees_with_snr_measured_from_pixels() -> None:
    sim = make_sim(
        seed=21,
        crystal={"cell": [15.0, 17.0, 19.0, 90.0, 90.0, 90.0], "strength_range_photons": [100, 3000],
                 "mosaicity_deg": 0.15},
        detector={"read_noise_adu": 6.0, "adu_step": 0.0, "saturation_value": 1e9},
        background={"floor_photons": 1.0},
        artefacts=QUIET,
    )
    gain = sim.config.detector.gain_adu_per_photon
    rng = np.random.default_rng(1)
    truth_snr, measured_snr, truth_signal, measured_signal = [], [], [], []
    for k in range(4):
        frame = sim.frame(k)
        spots = frame.spots
        fp = (frame.footprint & 1).astype(bool)
        rows, cols = fp.shape
        rr, cc = np.mgrid[0:rows, 0:cols]
        chosen = []
        for j in range(frame.n_spots):
            dist = np.hypot(spots["row"] - spots["row"][j], spots["col"] - spots["col"][j])
            if np.sort(dist)[1] < 12 or not spots["observable"][j] or not 1.5 < spots["snr"][j] < 60:
                continue
            near = fp & (np.hypot(rr - spots["row"][j], cc - spots["col"][j]) < 6)
            assert near.sum() == spots["n_pixels"][j]  # the footprint map holds this spot's footprint
            chosen.append((j, near))
        if not chosen:
            continue
        sums = np.empty((300, len(chosen)))
        for t in range(300):
            img = sim.detect(frame.expected_photons, rng)
            for i, (_j, near) in enumerate(chosen):
                sums[t, i] = img[near].sum()
        idx = np.array([j for j, _ in chosen])
        background = spots["background_adu"][idx] * spots["n_pixels"][idx]
        measured_signal.extend(sums.mean(axis=0) - background)
        measured_snr.extend((sums.mean(axis=0) - background) / sums.std(axis=0))
        truth_snr.extend(spots["snr"][idx])
        truth_signal.extend(gain * spots["photons_in_footprint"][idx])
    assert len(truth_snr) >= 8
    ratio = np.asarray(measured_snr) / np.asarray(truth_snr)
    assert np.median(ratio) == pytest.approx(1.0, abs=0.05)
    assert np.all(np.abs(ratio - 1.0) < 0.2)
    np.testing.assert_allclose(measured_signal, truth_signal, rtol=0.1, atol=3 * gain)


def test_same_seed_same_frame_any_order() -> None:
    a = make_sim(seed=42)
    b = make_sim(seed=42)
    late = b.frame(3)
    for k in range(3):
        a.frame(k)
    again = a.frame(3)
    np.testing.assert_array_equal(late.image, again.image)
    np.testing.assert_array_equal(late.footprint, again.footprint)
    for name in late.spots:
        np.testing.assert_array_equal(late.spots[name], again.spots[name])
    other = make_sim(seed=43).frame(3)
    assert not np.array_equal(other.image, late.image)


def test_blank_frames_have_no_spots() -> None:
    sim = make_sim(crystal={"hit_fraction": 0.0})
    for k in range(3):
        frame = sim.frame(k)
        assert not frame.info["hit"]
        assert frame.n_spots == 0 and frame.info["n_lattices"] == 0
        assert not (frame.footprint & 1).any()
        np.testing.assert_allclose(frame.expected_photons, frame.background_photons + sim.layout.hot_photons
                                   * (sim.layout.panel_id >= 0), rtol=1e-6)


def test_hit_fraction_and_two_lattices() -> None:
    sim = make_sim(crystal={"hit_fraction": 1.0, "multi_lattice_fraction": 1.0})
    frame = sim.frame(0)
    assert frame.info["n_lattices"] == 2
    assert set(np.unique(frame.spots["lattice"]).tolist()) == {0, 1}
    assert np.isfinite(frame.orientations).all()
    mixed = make_sim(seed=1, crystal={"hit_fraction": 0.5})
    hits = [mixed.frame(k).info["hit"] for k in range(40)]
    assert 10 <= sum(hits) <= 30


@pytest.mark.parametrize(
    ("detector", "gap"),
    [
        ({"mode": "integrating", "dtype": "float32", "gap_value": "zero"}, 0),
        ({"mode": "counting", "gain_adu_per_photon": 1.0, "dtype": "int32", "gap_value": "minus_one"}, -1),
        ({"mode": "counting", "gain_adu_per_photon": 1.0, "dtype": "uint16", "gap_value": "dtype_max"}, 65535),
    ],
)
def test_gaps_beamstop_and_dead_pixels_are_masked(detector: dict, gap: float) -> None:
    sim = make_sim(detector=detector, artefacts={"dead_pixel_fraction": 1e-3})
    frame = sim.frame(0)
    lay = sim.layout
    assert frame.image.dtype == np.dtype(detector["dtype"])
    gap_rows = slice(124, 132)  # two 124-row modules with an 8-row gap
    assert (lay.panel_id[gap_rows] == -1).all() and lay.mask[gap_rows].all()
    assert (frame.image[gap_rows] == gap).all()
    assert (lay.panel_id[:124] == 0).all() and (lay.panel_id[132:] == 1).all()
    beam_r, beam_c = lay.beam_rowcol
    assert lay.mask[int(round(beam_r)), int(round(beam_c))]
    assert (lay.mask_reason & 2).any()
    assert lay.dead.sum() > 10 and lay.mask[lay.dead].all() and (frame.image[lay.dead] == 0).all()
    # No truth spot is observable with its centre on a masked pixel.
    spots = frame.spots
    centre = lay.mask[np.rint(spots["row"]).astype(int), np.rint(spots["col"]).astype(int)]
    assert not (spots["observable"] & centre).any()


def test_ice_rings_at_ice_ih_spacings() -> None:
    sim = make_sim(
        crystal={"hit_fraction": 0.0},
        background={"ice_fraction": 1.0, "ice_photons_range": [100.0, 100.0], "water_photons": 0.0},
        detector={"distance_mm": 15.0},
    )
    frame = sim.frame(0)
    assert frame.info["ice"]
    lay = sim.layout
    wavelength = frame.info["wavelength_a"]
    resolution = wavelength / (2 * np.sin(lay.two_theta / 2))
    profile = frame.background_photons / np.maximum(lay.geom_factor, 1e-6)
    ok = lay.panel_id >= 0
    ok &= lay.transmission == 1
    for ring in (3.897, 3.669, 3.441):
        on = ok & (np.abs(resolution - ring) < 0.005)
        off = ok & (np.abs(resolution - ring) > 0.06) & (np.abs(resolution - ring) < 0.08)
        assert profile[on].mean() > 5 * profile[off].mean()


def test_cosmic_ray_streaks_are_flagged() -> None:
    sim = make_sim(artefacts={"zingers_per_frame": 5.0, "zinger_photons_range": [40.0, 40.0]},
                   crystal={"hit_fraction": 0.0})
    frame = sim.frame(2)
    streak = (frame.footprint & 2).astype(bool) & (sim.layout.panel_id >= 0) & ~sim.layout.dead
    assert frame.info["n_zingers"] > 0 and streak.any()
    gain = sim.config.detector.gain_adu_per_photon
    assert np.median(frame.image[streak]) > 15 * gain


def test_spot_profile_is_integrated_over_pixels() -> None:
    sim = make_sim(seed=2, crystal={"cell": [15.0, 17.0, 19.0, 90.0, 90.0, 90.0]}, artefacts=QUIET)
    lay = sim.layout
    n_checked = 0
    for k in range(3):
        frame = sim.frame(k)
        spots = frame.spots
        signal = frame.expected_photons - frame.background_photons
        for j in np.flatnonzero(spots["observable"]):
            r, c = int(round(spots["row"][j])), int(round(spots["col"][j]))
            box = (slice(r - 6, r + 7), slice(c - 6, c + 7))
            if r < 6 or c < 6 or r > 249 or c > 249 or lay.mask[box].any():
                continue
            dist = np.hypot(spots["row"] - spots["row"][j], spots["col"] - spots["col"][j])
            if np.sort(dist)[1] < 14:
                continue
            # All photons of the spot land in the box ...
            assert signal[box].sum() == pytest.approx(spots["photons"][j], rel=0.01)
            # ... distributed as the Gaussian integrated over each pixel's area (20 x 20 sub-samples).
            sub = (np.arange(20) + 0.5) / 20 - 0.5
            rr = (np.arange(r - 6, r + 7)[:, None] + sub[None, :]).reshape(-1)
            cc = (np.arange(c - 6, c + 7)[:, None] + sub[None, :]).reshape(-1)
            cov = np.array([[spots["sigma_row_px"][j] ** 2, spots["cov_rowcol_px2"][j]],
                            [spots["cov_rowcol_px2"][j], spots["sigma_col_px"][j] ** 2]], dtype=float)
            prec = np.linalg.inv(cov)
            dr = (rr - spots["row"][j])[:, None]
            dc = (cc - spots["col"][j])[None, :]
            dense_full = np.exp(-0.5 * (prec[0, 0] * dr**2 + 2 * prec[0, 1] * dr * dc + prec[1, 1] * dc**2))
            dense = dense_full.reshape(13, 20, 13, 20).sum(axis=(1, 3))
            dense *= spots["photons"][j] / dense.sum()
            np.testing.assert_allclose(signal[box], dense, atol=2e-3 * spots["photons"][j])
            n_checked += 1
    assert n_checked >= 3


def test_panel_offsets_shift_whole_panels() -> None:
    sim = make_sim(
        crystal={"hit_fraction": 0.0},
        detector={"read_noise_adu": 0.0, "adu_step": 0.0},
        artefacts={**QUIET, "panel_offset_adu": 40.0},
    )
    frame = sim.frame(0)
    gain = sim.config.detector.gain_adu_per_photon
    residual = frame.image - gain * frame.expected_photons
    lay = sim.layout
    means = []
    for panel in (0, 1):
        on = (lay.panel_id == panel) & ~lay.mask
        means.append(residual[on].mean())
        # Within a panel only photon noise remains around the panel's offset.
        assert residual[on].std() == pytest.approx(gain * np.sqrt(frame.expected_photons[on].mean()), rel=0.15)
    assert abs(means[0] - means[1]) > 1.0


def test_saturation_clips_pixels_and_flags_spots() -> None:
    sim = make_sim(crystal={"strength_range_photons": [2e6, 2e6]}, detector={"saturation_value": 30000.0},
                   artefacts=QUIET)
    frame = sim.frame(0)
    spots = frame.spots
    assert spots["saturated"].any() and not spots["saturated"].all()
    np.testing.assert_array_equal(spots["saturated"], spots["peak_adu"] >= 30000.0)
    assert frame.image.max() == np.float32(30000.0)
    j = int(np.argmax(spots["peak_adu"]))
    assert frame.image[int(round(spots["row"][j])), int(round(spots["col"][j]))] == np.float32(30000.0)


def _scattering_angles(sim: Simulator, spots: dict) -> tuple[np.ndarray, np.ndarray]:
    """2 theta and theta of each spot, recomputed from its position on the detector."""
    det = sim.config.detector
    beam_r, beam_c = sim.layout.beam_rowcol
    radius_mm = np.hypot(spots["row"] - beam_r, spots["col"] - beam_c) * det.pixel_size_mm
    two_theta = np.arctan2(radius_mm, det.distance_mm)
    return two_theta, two_theta / 2.0


def test_mosaicity_streaks_tangentially_and_bandwidth_radially() -> None:
    flat = {"divergence_mrad": 0.0, "energy_jitter_rel": 0.0}
    base = {"cell": [40.0, 45.0, 50.0, 90.0, 90.0, 90.0], "mosaic_domain_size_um": 50.0, "crystal_size_um": 50.0}
    det = {"psf_sigma_px": 0.3}
    eta_deg = 0.5
    mosaic = make_sim(seed=4, crystal={**base, "mosaicity_deg": eta_deg}, beam={**flat, "bandwidth_rel": 0.0},
                      detector=det, artefacts=QUIET)
    spots = mosaic.frame(0).spots
    assert spots["row"].size >= 20
    d_px = mosaic.config.detector.distance_mm / mosaic.config.detector.pixel_size_mm
    two_theta, theta = _scattering_angles(mosaic, spots)
    # A rotated mosaic block keeps |q|, hence 2 theta: the spot widens along the ring only.
    np.testing.assert_allclose(spots["sigma_radial_px"], 0.3, rtol=0.02)
    excess_tan = spots["sigma_tangential_px"].astype(float) ** 2 - spots["sigma_radial_px"].astype(float) ** 2
    expected_tan = (d_px / np.cos(two_theta) * 2.0 * np.sin(theta) * np.radians(eta_deg)) ** 2
    np.testing.assert_allclose(excess_tan, expected_tan, rtol=0.02)

    bw = 0.01
    streak = make_sim(seed=4, crystal={**base, "mosaicity_deg": 0.0}, beam={**flat, "bandwidth_rel": bw},
                      detector=det, artefacts=QUIET)
    spots = streak.frame(0).spots
    assert spots["row"].size >= 20
    two_theta, theta = _scattering_angles(streak, spots)
    np.testing.assert_allclose(spots["sigma_tangential_px"], 0.3, rtol=0.02)
    excess_rad = spots["sigma_radial_px"].astype(float) ** 2 - spots["sigma_tangential_px"].astype(float) ** 2
    expected_rad = (d_px / np.cos(two_theta) ** 2 * 2.0 * np.tan(theta) * bw) ** 2
    np.testing.assert_allclose(excess_rad, expected_rad, rtol=0.02)


def test_elongated_spots_point_at_the_beam_at_any_azimuth() -> None:
    sim = make_sim(seed=9, crystal={"cell": [30.0, 33.0, 36.0, 90.0, 90.0, 90.0], "mosaicity_deg": 0.0},
                   beam={"bandwidth_rel": 0.015, "divergence_mrad": 0.0}, artefacts=QUIET)
    beam_r, beam_c = sim.layout.beam_rowcol
    angles = []
    for k in range(3):
        frame = sim.frame(k)
        spots = frame.spots
        signal = (frame.expected_photons - frame.background_photons).astype(float)
        for j in range(frame.n_spots):
            r, c = int(round(spots["row"][j])), int(round(spots["col"][j]))
            elongated = spots["sigma_radial_px"][j] >= 2 * spots["sigma_tangential_px"][j]
            if not (7 <= r < 249 and 7 <= c < 249 and elongated and spots["sigma_radial_px"][j] < 1.8):
                continue
            if np.sort(np.hypot(spots["row"] - spots["row"][j], spots["col"] - spots["col"][j]))[1] < 24:
                continue
            if sim.layout.mask[r - 6 : r + 7, c - 6 : c + 7].any():
                continue
            box = signal[r - 6 : r + 7, c - 6 : c + 7]
            rr, cc = np.mgrid[r - 6 : r + 7, c - 6 : c + 7]
            total = box.sum()
            mr, mc = (box * rr).sum() / total, (box * cc).sum() / total
            dr, dc = rr - mr, cc - mc
            cov = np.array([[(box * dr * dr).sum(), (box * dr * dc).sum()],
                            [(box * dr * dc).sum(), (box * dc * dc).sum()]]) / total
            vals, vecs = np.linalg.eigh(cov)
            long_axis = vecs[:, 1]
            radial = np.array([spots["row"][j] - beam_r, spots["col"][j] - beam_c])
            radial /= np.linalg.norm(radial)
            angles.append(np.degrees(np.arccos(min(1.0, abs(long_axis @ radial)))))
            # The measured spot holds the recorded covariance (pixel-area integration adds 1/12 px^2).
            assert vals[1] == pytest.approx(spots["sigma_radial_px"][j] ** 2 + 1 / 12, rel=0.05)
    assert len(angles) >= 5
    assert max(angles) < 3.0


def test_small_mosaic_domains_add_reflections_not_spot_size() -> None:
    counts, widths = [], []
    for domain_um in (5.0, 0.1):
        sim = make_sim(seed=5, crystal={"cell": [40.0, 45.0, 50.0, 90.0, 90.0, 90.0],
                                        "mosaicity_deg": 0.02, "mosaic_domain_size_um": domain_um},
                       artefacts=QUIET)
        spots = sim.frame(0).spots
        counts.append(spots["row"].size)
        widths.append(np.median(spots["sigma_radial_px"]))
    assert counts[1] > 1.5 * counts[0]
    assert widths[1] == pytest.approx(widths[0], rel=0.1)
