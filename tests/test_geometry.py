"""The detector geometry model: panels, pixel maps, bad regions, resolution, flat detectors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from braggml.errors import ConfigError
from braggml.geometry import (
    HC_KEV_A,
    BadRegion,
    DetectorGeometry,
    MaskSpec,
    Panel,
    PixelMaps,
    electron_wavelength_a,
    flat_geometry,
)


def _d_by_hand(r_px: float, pixel_m: float, distance_m: float, wavelength_a: float) -> float:
    two_theta = math.atan(r_px * pixel_m / distance_m)
    return wavelength_a / (2.0 * math.sin(two_theta / 2.0))


def _two_panels(**geom_kwargs: object) -> DetectorGeometry:
    """A 100 x 100 frame split into two 50-row panels; p1 is rotated by 180 degrees."""
    p0 = Panel("p0", 0, 99, 0, 49, corner_x=-50.0, corner_y=-50.0, res_px_per_m=1e4,
               fs_vector=(1, 0, 0), ss_vector=(0, 1, 0), clen_m=0.1)
    p1 = Panel("p1", 0, 99, 50, 99, corner_x=50.0, corner_y=50.0, res_px_per_m=1e4,
               fs_vector=(-1, 0, 0), ss_vector=(0, -1, 0), clen_m=0.1)
    return DetectorGeometry(panels=(p0, p1), **geom_kwargs)  # type: ignore[arg-type]


class TestFlatGeometry:
    def test_radius_and_resolution_by_hand(self) -> None:
        geom = flat_geometry((40, 60), pixel_size_mm=0.075, distance_mm=120.0, beam_center_rowcol=(10.0, 20.5),
                             wavelength_a=0.9686)
        maps = geom.pixel_maps()
        assert maps.shape == (40, 60) and maps.known
        assert (maps.panel_id == 0).all() and not maps.mask.any()
        assert maps.radius_px[10, 30] == pytest.approx(9.5)
        assert maps.radius_px[13, 24] == pytest.approx(math.hypot(3, 3.5))
        assert maps.resolution_a is not None
        r = math.hypot(39 - 10, 59 - 20.5)
        assert maps.resolution_a[39, 59] == pytest.approx(_d_by_hand(r, 75e-6, 0.12, 0.9686), rel=1e-5)

    def test_beam_on_a_pixel_gives_infinite_resolution(self) -> None:
        maps = flat_geometry((5, 5), pixel_size_mm=0.1, distance_mm=100, beam_center_rowcol=(2, 2),
                             wavelength_a=1.0).pixel_maps()
        assert maps.radius_px[2, 2] == 0.0
        assert np.isinf(maps.resolution_a[2, 2])  # type: ignore[index]

    def test_photon_energy_converts_to_wavelength(self) -> None:
        geom = flat_geometry((4, 4), pixel_size_mm=0.1, distance_mm=100, beam_center_rowcol=(0, 0),
                             photon_energy_ev=12398.419843320026)
        assert geom.wavelength_a == pytest.approx(1.0)
        assert geom.photon_energy_ev == pytest.approx(12398.419843320026)

    def test_no_wavelength_no_resolution(self) -> None:
        maps = flat_geometry((4, 4), pixel_size_mm=0.1, distance_mm=100, beam_center_rowcol=(0, 0)).pixel_maps()
        assert maps.resolution_a is None
        assert maps.radius_px[3, 0] == pytest.approx(3.0)

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"pixel_size_mm": 0.0}, "pixel_size_mm"),
            ({"distance_mm": -1.0}, "distance_mm"),
            ({"beam_center_rowcol": (1.0,)}, "beam_center_rowcol"),
            ({"beam_center_rowcol": (math.nan, 1.0)}, "beam_center_rowcol"),
            ({"wavelength_a": 1.0, "photon_energy_ev": 9000.0}, "not both"),
            ({"photon_energy_ev": -5.0}, "photon_energy_ev"),
        ],
    )
    def test_bad_parameters(self, kwargs: dict, match: str) -> None:
        args = {"pixel_size_mm": 0.1, "distance_mm": 100.0, "beam_center_rowcol": (1.0, 1.0)} | kwargs
        with pytest.raises(ConfigError, match=match):
            flat_geometry((4, 4), **args)

    def test_bad_shape(self) -> None:
        with pytest.raises(ConfigError, match="shape"):
            flat_geometry((0, 4), pixel_size_mm=0.1, distance_mm=1.0, beam_center_rowcol=(0, 0))


class TestPixelMaps:
    def test_two_panels_by_hand(self) -> None:
        geom = _two_panels(wavelength_a=1.0)
        maps = geom.pixel_maps((100, 100))
        assert isinstance(maps, PixelMaps)
        assert maps.panel_id.dtype == np.int32 and maps.radius_px.dtype == np.float32
        assert (maps.panel_id[:50] == 0).all() and (maps.panel_id[50:] == 1).all()
        # p0 centre of pixel (ss=0, fs=0): corner + 0.5 fs + 0.5 ss = (-49.5, -49.5)
        assert maps.radius_px[0, 0] == pytest.approx(math.hypot(49.5, 49.5))
        # p0 (ss=49, fs=50): (0.5, -0.5) -- next to the beam
        assert maps.radius_px[49, 50] == pytest.approx(math.hypot(0.5, 0.5))
        # p1 runs backwards: (ss=50, fs=0) is at (49.5, 49.5); (ss=99, fs=99) at (-49.5, 0.5)
        assert maps.radius_px[50, 0] == pytest.approx(math.hypot(49.5, 49.5))
        assert maps.radius_px[99, 99] == pytest.approx(math.hypot(49.5, 0.5))
        assert maps.resolution_a is not None
        expected = _d_by_hand(math.hypot(0.5, 49.5), 1e-4, 0.1, 1.0)
        assert maps.resolution_a[0, 50] == pytest.approx(expected, rel=1e-5)
        assert not maps.mask.any()

    def test_gaps_are_masked_with_nan_radius(self) -> None:
        geom = _two_panels()
        maps = geom.pixel_maps((104, 110))
        assert (maps.panel_id[100:] == -1).all() and (maps.panel_id[:, 100:] == -1).all()
        assert maps.mask[100:].all() and maps.mask[:, 100:].all()
        assert np.isnan(maps.radius_px[101, 3])
        assert not maps.mask[:100, :100].any()

    def test_panel_outside_frame_rejected(self) -> None:
        with pytest.raises(ConfigError, match="panel 'p1'.*outside frames of shape"):
            _two_panels().pixel_maps((80, 100))

    def test_xy_bad_region_uses_pixel_corners(self) -> None:
        region = BadRegion("badc", min_x=-2.5, max_x=2.5, min_y=-2.5, max_y=2.5)
        maps = _two_panels(bad_regions=(region,)).pixel_maps()
        expected = np.zeros((100, 100), bool)
        # p0 pixel corner (x, y) = (-50 + fs, -50 + ss); p1 corner = (50 - fs, 50 - (ss - 50))
        expected[48:50, 48:53] = True
        expected[98:100, 48:53] = True
        np.testing.assert_array_equal(maps.mask, expected)

    def test_fsss_bad_region_limited_to_its_panel(self) -> None:
        region = BadRegion("badp", min_fs=0, max_fs=9, min_ss=0, max_ss=99, panel="p1")
        maps = _two_panels(bad_regions=(region,)).pixel_maps()
        assert maps.mask[50:, :10].all()
        assert maps.mask.sum() == 50 * 10

    def test_bad_panel_and_edges_and_detector_mask(self) -> None:
        geom = _two_panels()
        p0, p1 = geom.panels
        from dataclasses import replace

        extra = np.zeros((100, 100), bool)
        extra[0, 0] = True
        geom = DetectorGeometry(panels=(replace(p0, mask_edge_pixels=2), replace(p1, bad=True)), mask=extra)
        maps = geom.pixel_maps()
        assert maps.mask[50:].all()
        inner = maps.mask[:50]
        assert inner[:2].all() and inner[48:].all() and inner[:, :2].all() and inner[:, 98:].all()
        assert not inner[2:48, 2:98].any()
        with pytest.raises(ConfigError, match="mask has shape"):
            geom.pixel_maps((101, 100))

    def test_coffset_and_tilt_change_resolution(self) -> None:
        flat = Panel("a", 0, 9, 0, 9, corner_x=0.0, corner_y=0.0, res_px_per_m=1e4, clen_m=0.1, coffset_m=0.01)
        maps = DetectorGeometry(panels=(flat,), wavelength_a=1.0).pixel_maps()
        assert maps.resolution_a[0, 9] == pytest.approx(  # type: ignore[index]
            _d_by_hand(math.hypot(9.5, 0.5), 1e-4, 0.11, 1.0), rel=1e-5
        )
        tilted = Panel("a", 0, 9, 0, 9, corner_x=0.0, corner_y=0.0, res_px_per_m=1e4, clen_m=0.1,
                       fs_vector=(0.8, 0.0, 0.6))
        maps = DetectorGeometry(panels=(tilted,), wavelength_a=1.0).pixel_maps()
        x, z = 0.8 * 5.5, 1000.0 + 0.6 * 5.5
        two_theta = math.atan2(math.hypot(x, 0.5), z)
        assert maps.resolution_a[0, 5] == pytest.approx(1.0 / (2 * math.sin(two_theta / 2)), rel=1e-5)  # type: ignore[index]

    def test_unknown_clen_gives_no_resolution(self) -> None:
        p = Panel("a", 0, 3, 0, 3, corner_x=0.0, corner_y=0.0, res_px_per_m=1e4)
        assert DetectorGeometry(panels=(p,), wavelength_a=1.0).pixel_maps().resolution_a is None

    def test_overlapping_panels_warn_and_first_wins(self) -> None:
        a = Panel("a", 0, 9, 0, 9, corner_x=0.0, corner_y=0.0, res_px_per_m=1e4)
        b = Panel("b", 0, 9, 5, 14, corner_x=0.0, corner_y=100.0, res_px_per_m=1e4)
        with pytest.warns(UserWarning, match="overlap"):
            maps = DetectorGeometry(panels=(a, b)).pixel_maps()
        assert (maps.panel_id[:10] == 0).all() and (maps.panel_id[10:] == 1).all()
        assert maps.radius_px[12, 0] == pytest.approx(math.hypot(0.5, 107.5))


class TestSubPixel:
    def test_lab_position_and_resolution_at_peaks(self) -> None:
        geom = _two_panels(wavelength_a=1.0)
        rows = np.array([0.0, 49.4, 49.6, 75.25, -3.0])
        cols = np.array([0.0, 50.0, 50.0, 10.5, 5.0])
        x, y, z, idx = geom.lab_position_px(rows, cols)
        assert idx.tolist() == [0, 0, 1, 1, -1]
        assert (x[0], y[0]) == pytest.approx((-49.5, -49.5))
        # row 49.6 rounds to pixel row 50 (panel p1): (50 - 50.5, 50 - (49.6 + 0.5 - 50)) = (-0.5, 49.9)
        assert (x[2], y[2]) == pytest.approx((-0.5, 49.9))
        assert z[0] == pytest.approx(1000.0)
        assert np.isnan(x[4])
        d = geom.resolution_at(rows, cols)
        assert d[3] == pytest.approx(_d_by_hand(math.hypot(50 - 11.0, 50 - 25.75), 1e-4, 0.1, 1.0), rel=1e-9)
        assert np.isnan(d[4])
        maps = geom.pixel_maps()
        assert d[0] == pytest.approx(float(maps.resolution_a[0, 0]), rel=1e-6)  # type: ignore[index]


class TestValidation:
    def test_panel_checks(self) -> None:
        with pytest.raises(ConfigError, match="min_fs <= max_fs"):
            Panel("a", 5, 4, 0, 1, corner_x=0.0, corner_y=0.0, res_px_per_m=1.0)
        with pytest.raises(ConfigError, match="res_px_per_m"):
            Panel("a", 0, 4, 0, 1, corner_x=0.0, corner_y=0.0, res_px_per_m=0.0)
        with pytest.raises(ConfigError, match="zero vector"):
            Panel("a", 0, 4, 0, 1, corner_x=0.0, corner_y=0.0, res_px_per_m=1.0, fs_vector=(0, 0, 0))
        with pytest.raises(ConfigError, match="clen_m"):
            Panel("a", 0, 4, 0, 1, corner_x=0.0, corner_y=0.0, res_px_per_m=1.0, clen_m=-0.1)

    def test_geometry_checks(self) -> None:
        p = Panel("a", 0, 4, 0, 1, corner_x=0.0, corner_y=0.0, res_px_per_m=1.0)
        with pytest.raises(ConfigError, match="at least one panel"):
            DetectorGeometry(panels=())
        with pytest.raises(ConfigError, match="unique"):
            DetectorGeometry(panels=(p, p))
        with pytest.raises(ConfigError, match="unknown panel 'zz'"):
            DetectorGeometry(panels=(p,), bad_regions=(BadRegion("bad1", min_fs=0, max_fs=1, min_ss=0, max_ss=1,
                                                                  panel="zz"),))
        with pytest.raises(ConfigError, match="wavelength_a"):
            DetectorGeometry(panels=(p,), wavelength_a=0.0)

    def test_bad_region_checks(self) -> None:
        with pytest.raises(ConfigError, match="mixes"):
            BadRegion("bad", min_x=0, max_x=1, min_y=0, max_y=1, min_fs=0, max_fs=1, min_ss=0, max_ss=1)
        with pytest.raises(ConfigError, match="needs all of min_x"):
            BadRegion("bad", min_x=0, max_x=1)
        with pytest.raises(ConfigError, match="no limits"):
            BadRegion("bad")


def test_mask_spec_bits() -> None:
    spec = MaskSpec("/mask", good_bits=0b011, bad_bits=0b100)
    values = np.array([0b011, 0b001, 0b111, 0b1011])
    assert spec.bad_pixels(values).tolist() == [False, True, True, False]
    assert not MaskSpec("/m").bad_pixels(values).any()


def test_electron_wavelength() -> None:
    assert electron_wavelength_a(300e3) == pytest.approx(0.019687, abs=2e-6)
    assert electron_wavelength_a(200e3) == pytest.approx(0.025079, abs=2e-6)
    with pytest.raises(ConfigError, match="voltage"):
        electron_wavelength_a(0.0)


def test_hc_constant() -> None:
    assert HC_KEV_A / 12.398419843320026 == pytest.approx(1.0)


def test_with_wavelength_and_mask_return_new_geometry() -> None:
    geom = _two_panels()
    assert geom.pixel_maps().resolution_a is None
    g2 = geom.with_wavelength(1.0)
    assert g2.pixel_maps().resolution_a is not None and geom.wavelength_a is None
    m = np.zeros((100, 100), bool)
    m[5, 5] = True
    g3 = geom.with_mask(m)
    m[6, 6] = True  # the geometry keeps its own copy
    assert g3.pixel_maps().mask.sum() == 1
    assert geom.data_shape == (100, 100) and geom.n_panels == 2 and geom.panel("p1").height == 50
