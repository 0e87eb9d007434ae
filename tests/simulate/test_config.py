"""Simulation configuration: presets, overrides from files and --set, validation."""

from __future__ import annotations

import pytest

from braggml.errors import ConfigError
from braggml.simulate import (
    CrystalConfig,
    DetectorConfig,
    SimulationConfig,
    apply_overrides,
    available_presets,
    get_preset,
    parse_set_options,
)
from braggml.simulate.cli_support import build_config


def test_presets_have_documented_geometry() -> None:
    assert {"jungfrau4m", "pilatus6m", "eiger4m", "test"} <= set(available_presets())
    jf = get_preset("jungfrau4m").detector
    assert jf.shape == (4 * 512 + 3 * 36, 2 * 1024 + 12) and jf.mode == "integrating" and jf.dtype == "float32"
    pil = get_preset("pilatus6m").detector
    assert pil.shape == (2527, 2463) and pil.mode == "counting" and pil.gap_value == "minus_one"
    eig = get_preset("eiger4m").detector
    assert eig.shape == (2167, 2070) and eig.dtype == "uint16" and eig.gap_value == "dtype_max"
    assert get_preset("test").detector.shape == (256, 256)


def test_unknown_preset_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown simulation preset 'cspad'.*jungfrau4m"):
        get_preset("cspad")


def test_set_options_override_nested_settings() -> None:
    overrides = parse_set_options(
        ["detector.distance_mm=120", "crystal.cell=78 78 37 90 90 90", "detector.beam_center_rowcol=none"]
    )
    cfg = apply_overrides(get_preset("pilatus6m"), overrides)
    assert cfg.detector.distance_mm == 120.0
    assert cfg.crystal.cell == (78.0, 78.0, 37.0, 90.0, 90.0, 90.0)
    assert cfg.detector.beam_center_rowcol is None
    assert cfg.detector.pixel_size_mm == 0.172  # untouched settings keep the preset's values


def test_config_file_then_set(tmp_path) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text("crystal:\n  b_factor_a2: 40\n  hit_fraction: 0.3\nbeam:\n  energy_kev: 9.5\n")
    cfg = build_config("test", path, ["crystal.hit_fraction=0.9"])
    assert cfg.crystal.b_factor_a2 == 40.0 and cfg.crystal.hit_fraction == 0.9 and cfg.beam.energy_kev == 9.5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"crystal": {"foo": 1}}, r"unknown setting 'crystal.foo'"),
        ({"detektor": {"distance_mm": 1}}, r"unknown section 'detektor'"),
        ({"crystal": {"hit_fraction": 1.5}}, r"crystal.hit_fraction must lie in \[0, 1\]"),
        ({"detector": {"distance_mm": -3}}, r"detector.distance_mm must be > 0"),
        ({"crystal": {"cell": [10, 10, 10, 90, 90]}}, r"expected 6 values"),
        ({"detector": {"mode": "magic"}}, r"'magic' is not one of"),
        ({"crystal": {"d_min_range_a": [3.0, 2.0]}}, r"crystal.d_min_range_a must be \(min, max\)"),
        ({"detector": {"mode": "counting", "gain_adu_per_photon": 10}}, r"gain_adu_per_photon must be 1"),
        ({"crystal": "strong"}, r"'crystal' is a section"),
        ({"crystal": {"mosaic_domain_size_um": 0}}, r"crystal.mosaic_domain_size_um must be > 0"),
        ({"beam": {"focus_fwhm_um": -1}}, r"beam.focus_fwhm_um must be > 0"),
    ],
)
def test_bad_settings_are_rejected_by_name(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides(SimulationConfig(), overrides)


def test_bad_set_syntax() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        parse_set_options(["crystal.b_factor_a2"])


def test_invalid_cell_angles() -> None:
    with pytest.raises(ConfigError, match="crystal.cell.alpha"):
        CrystalConfig(cell=(10, 10, 10, 190, 90, 90))
    with pytest.raises(ConfigError, match="valid cell"):
        CrystalConfig(cell=(10, 10, 10, 150, 150, 150))


def test_detector_shape_includes_gaps() -> None:
    det = DetectorConfig(module_shape=(10, 20), module_grid=(3, 2), module_gap_px=(4, 5))
    assert det.shape == (3 * 10 + 2 * 4, 2 * 20 + 5)
