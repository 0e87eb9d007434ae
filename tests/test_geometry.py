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
    PanelRect,
    PixelMaps,
    assemble_image,
    derive_panels,
    electron_wavelength_a,
    flat_geometry,
    module_background_steps,
    panel_id_from_rects,
    split_cspad_sensors,
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


# -- panels derived from the gaps of a tiled frame ------------------------------------------------------------


def _tiled_gaps(tiles: tuple[int, int], tile: tuple[int, int], gap_px: tuple[int, int]) -> np.ndarray:
    """Gap map of ``tiles`` rows x cols of ``tile``-sized modules separated by ``gap_px`` (rows, cols) gaps."""
    rows = tiles[0] * tile[0] + (tiles[0] - 1) * gap_px[0]
    cols = tiles[1] * tile[1] + (tiles[1] - 1) * gap_px[1]
    gap = np.ones((rows, cols), bool)
    for i in range(tiles[0]):
        for j in range(tiles[1]):
            r, c = i * (tile[0] + gap_px[0]), j * (tile[1] + gap_px[1])
            gap[r : r + tile[0], c : c + tile[1]] = False
    return gap


class TestDerivePanels:
    def test_tiled_modules_with_gaps_become_panels_in_row_major_order(self) -> None:
        gap = _tiled_gaps((3, 2), (40, 60), (7, 17))  # Pilatus-like: 7-row and 17-column gaps
        gap[5, 5] = gap[50:53, 80] = True  # bad pixels inside modules do not split them
        rects = derive_panels(gap, min_panel_px=100)
        assert [tuple(r) for r in rects] == [
            (0, 39, 0, 59), (0, 39, 77, 136), (47, 86, 0, 59), (47, 86, 77, 136), (94, 133, 0, 59), (94, 133, 77, 136)
        ]
        panel_id = panel_id_from_rects(gap.shape, rects)
        assert panel_id[0, 0] == 0 and panel_id[39, 136] == 1 and panel_id[133, 77] == 5
        assert panel_id[20, 60:77].tolist() == [-1] * 17 and panel_id[40:47, 10].tolist() == [-1] * 7
        assert (panel_id >= 0).sum() == 6 * 40 * 60

    def test_frames_that_are_not_tiled_keep_one_panel(self) -> None:
        rows, cols = np.indices((120, 120))
        assert derive_panels(np.zeros((120, 120), bool)) == ()  # no gaps
        assert derive_panels(np.hypot(rows - 60, cols - 60) > 55, min_panel_px=100) == ()  # circular active area
        assert derive_panels(np.hypot(rows - 60, cols - 60) < 10, min_panel_px=100) == ()  # beam hole
        arm = np.hypot(rows - 60, cols - 60) < 10
        arm[55:65, 60:] = True  # beamstop and its arm: still one region
        assert derive_panels(arm, min_panel_px=100) == ()
        enclosed = np.zeros((120, 120), bool)
        enclosed[30:90, 30:90] = True
        enclosed[33:87, 33:87] = False  # a masked square outline: the outer region's box holds the inner one
        assert derive_panels(enclosed, min_panel_px=100) == ()
        thin = np.zeros((120, 120), bool)
        thin[:, 60:62] = True
        thin[np.triu_indices(120, 1)] = True  # two triangles, each filling half its box
        assert derive_panels(thin, min_panel_px=100, min_fill=0.6) == ()

    def test_small_islands_are_left_out_and_do_not_count_as_modules(self) -> None:
        gap = _tiled_gaps((1, 2), (50, 50), (0, 6))
        gap[:, 20:22] = False  # nothing special: a gap column made good joins nothing new
        gap[10, 52] = False  # an isolated good pixel in the gap
        rects = derive_panels(gap, min_panel_px=100)
        assert [tuple(r) for r in rects] == [(0, 49, 0, 49), (0, 49, 56, 105)]
        assert derive_panels(gap, min_panel_px=3000) == ()  # modules too small for this setting

    def test_bad_arguments(self) -> None:
        with pytest.raises(ConfigError, match="gap map must be 2-D"):
            derive_panels(np.zeros(5, bool))
        with pytest.raises(ConfigError, match="min_panel_px must be >= 1"):
            derive_panels(np.zeros((4, 4), bool), min_panel_px=0)
        with pytest.raises(ConfigError, match="min_fill must be in"):
            derive_panels(np.zeros((4, 4), bool), min_fill=0.0)
        with pytest.raises(ConfigError, match=r"panel rectangle 0 \(0, 9, 0, 9\) does not lie inside"):
            panel_id_from_rects((5, 5), [(0, 9, 0, 9)])
        with pytest.raises(ConfigError, match="panel rectangle 1 must be"):
            panel_id_from_rects((5, 5), [(0, 1, 0, 1), ("a", 1)])

    def test_pixel_maps_with_panels(self) -> None:
        maps = PixelMaps.fallback((20, 30))
        split = maps.with_panels([PanelRect(0, 19, 0, 13), PanelRect(0, 19, 16, 29)])
        assert split.n_panels == 2 and split.mask[:, 14:16].all() and not split.mask[:, :14].any()
        np.testing.assert_array_equal(split.radius_px, maps.radius_px)
        assert split.known is maps.known and maps.with_panels([]) is maps
        assert maps.n_panels == 1 and not maps.mask.any()  # the original is not changed


class TestModuleSteps:
    def test_offsets_between_modules_show_as_steps_in_noise_units(self) -> None:
        gap = _tiled_gaps((2, 2), (60, 80), (6, 10))
        rects = derive_panels(gap)
        rng = np.random.default_rng(2)
        rows, cols = np.indices(gap.shape)
        smooth = 100.0 + 0.05 * rows + 2.0 * np.sin(cols / 40.0)  # gentle gradients are not steps
        seamless = smooth + rng.normal(0.0, 4.0, gap.shape)
        steps = module_background_steps(seamless, gap, rects)
        assert steps.size == 4 and np.all(steps < 0.3)  # two facing pairs in each direction
        stepped = seamless.copy()
        stepped[66:, :] += 6.0  # the lower modules read 1.5 noise units more
        steps = module_background_steps(stepped, gap, rects)
        assert np.sort(steps)[:2] == pytest.approx([0.0, 0.0], abs=0.3)  # left-right pairs: no step
        assert np.sort(steps)[2:] == pytest.approx([1.7, 1.7], abs=0.35)
        assert module_background_steps(seamless, gap, rects[:1]).size == 0


class TestCspad:
    def test_two_by_ones_split_into_asics_without_the_big_pixel_columns(self) -> None:
        gap = _tiled_gaps((2, 3), (185, 388), (4, 4))  # six two-by-ones tiled as in the real-data file
        rects = derive_panels(gap)
        assert len(rects) == 6 and all(r.shape == (185, 388) for r in rects)
        asics, n = split_cspad_sensors(rects)
        assert n == 6 and len(asics) == 12 and all(a.shape == (185, 193) for a in asics)
        panel_id = panel_id_from_rects(gap.shape, asics)
        for origin_col in (0, 392, 784):
            assert (panel_id[:185, origin_col + 193 : origin_col + 195] == -1).all()  # big pixels
            assert (panel_id[:185, origin_col + 192] >= 0).all() and (panel_id[:185, origin_col + 195] >= 0).all()
        assert panel_id[0, 192] != panel_id[0, 195]

    def test_transposed_sensors_and_other_panels(self) -> None:
        asics, n = split_cspad_sensors([PanelRect(10, 397, 0, 184), PanelRect(0, 99, 200, 299)])
        assert n == 1
        assert [tuple(a) for a in asics] == [(10, 202, 0, 184), (205, 397, 0, 184), (0, 99, 200, 299)]


class TestAssembleImage:
    def test_flat_detector_is_drawn_pixel_for_pixel(self) -> None:
        frame = np.arange(35.0).reshape(5, 7)
        geom = flat_geometry((5, 7), pixel_size_mm=0.1, distance_mm=100.0, beam_center_rowcol=(2.0, 3.0))
        picture = assemble_image(geom, frame)
        # rows along +y (up): the frame's last row is the picture's first
        assert np.array_equal(picture.image, frame[::-1])
        assert picture.extent_xy == (-3.5, 3.5, -2.5, 2.5) and not picture.bad.any()

    def test_rotated_panels_hold_every_pixel_once(self) -> None:
        # four 6 x 10 panels turned by 0, 90, 180 and 270 degrees about the beam, 3 px from it
        panels = []
        for q in range(4):
            c, s = round(math.cos(q * math.pi / 2)), round(math.sin(q * math.pi / 2))
            panels.append(Panel(f"q{q}", 0, 9, 6 * q, 6 * q + 5, corner_x=3 * c - 3 * s, corner_y=3 * s + 3 * c,
                                res_px_per_m=1e4, fs_vector=(c, s, 0), ss_vector=(-s, c, 0)))
        geom = DetectorGeometry(panels=tuple(panels))
        frame = np.random.default_rng(3).permutation(240).reshape(24, 10).astype(float)
        bad = np.zeros((24, 10), bool)
        bad[13, 4] = True
        picture = assemble_image(geom, frame, bad=bad)
        assert picture.shape == (26, 26) and picture.extent_xy == (-13.0, 13.0, -13.0, 13.0)
        drawn = picture.image[np.isfinite(picture.image)]
        assert sorted(drawn.tolist()) == sorted(frame.ravel().tolist())  # each pixel once, nothing else
        rows, cols = np.indices(frame.shape)
        x, y, _z, _panel = geom.lab_position_px(rows.ravel(), cols.ravel())
        i = np.floor(y - picture.extent_xy[2]).astype(int)
        j = np.floor(x - picture.extent_xy[0]).astype(int)
        assert np.array_equal(picture.image[i, j], frame.ravel())  # every pixel drawn where its centre is
        assert np.argwhere(picture.bad & np.isfinite(picture.image)).tolist() == [[i[134], j[134]]]
        assert np.isnan(picture.image[13, 13]) and picture.bad[13, 13]  # the beam hole between the panels

    def test_bad_input(self) -> None:
        geom = flat_geometry((5, 7), pixel_size_mm=0.1, distance_mm=100.0, beam_center_rowcol=(2.0, 3.0))
        with pytest.raises(ConfigError, match=r"outside frames of shape \(4, 7\)"):
            assemble_image(geom, np.zeros((4, 7)))
        with pytest.raises(ConfigError, match="bad-pixel map of shape"):
            assemble_image(geom, np.zeros((5, 7)), bad=np.zeros((4, 7), bool))
        far = Panel("far", 0, 9, 0, 9, corner_x=5000.0, corner_y=0.0, res_px_per_m=1e4)
        near = Panel("near", 0, 9, 10, 19, corner_x=0.0, corner_y=0.0, res_px_per_m=1e4)
        with pytest.raises(ConfigError, match="more than max_side"):
            assemble_image(DetectorGeometry(panels=(far, near)), np.zeros((20, 10)))
