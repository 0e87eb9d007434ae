"""Configuration checks: every invalid parameter is rejected with its name and value."""

from __future__ import annotations

import pytest

from braggml.errors import ConfigError
from braggml.finder import make_finder

COMMON = [
    ("min_res", -1.0),
    ("max_res", -5.0),
    ("max_num_peaks", 0),
    ("masked_peaks", "maybe"),
    ("ice_rings", "sometimes"),
    ("ice_ring_width_inv_a", 0.0),
    ("powder_ring_contrast", -1.0),
]

BAD = {
    "peakfinder8": [
        ("adc_threshold", float("nan")),
        ("minimum_snr", 0.0),
        ("minimum_snr", -3.0),
        ("min_pixel_count", 0),
        ("max_pixel_count", 1),  # below the default min_pixel_count
        ("local_bg_radius", 0),
        ("local_bg_radius", -2),
        ("gain", -1.0),
        ("pixel_snr", 0.0),
        ("min_pixel_photons", -1.0),
        ("background_clip_sigma", 0.0),
        ("clip_iterations", 0),
    ],
    "threshold": [
        ("threshold", 0.0),
        ("threshold_mode", "relative"),
        ("background", "global"),
        ("local_window_px", 0),
        ("min_separation_px", 0),
        ("min_pixel_count", 0),
        ("max_pixel_count", 1),
        ("min_snr", -1.0),
        ("local_bg_radius", -1),
        ("significance_snr", -1.0),
        ("min_pixel_photons", -2.0),
    ],
    "dispersion": [
        ("gain", 0.0),
        ("kernel_size", 0),
        ("sigma_background", -1.0),
        ("sigma_strong", -0.5),
        ("min_local", 1),
        ("min_local", 1000),
        ("global_threshold", -1.0),
        ("min_spot_size", 0),
        ("max_spot_size", 1),
        ("connectivity", 6),
        ("local_bg_radius", 0),
        ("min_snr", -2.0),
        ("significance_snr", -0.5),
    ],
}
BAD["dispersion_extended"] = BAD["dispersion"]

CASES = [(name, param, value) for name, bad in BAD.items() for param, value in bad + COMMON]


@pytest.mark.parametrize(("finder_name", "param", "value"), CASES)
def test_invalid_parameter_names_itself(finder_name: str, param: str, value: object) -> None:
    with pytest.raises(ConfigError, match=param):
        make_finder(finder_name, **{param: value})


@pytest.mark.parametrize("finder_name", sorted(BAD))
def test_min_res_must_be_below_max_res(finder_name: str) -> None:
    with pytest.raises(ConfigError, match="max_res"):
        make_finder(finder_name, min_res=100.0, max_res=50.0)


@pytest.mark.parametrize("finder_name", sorted(BAD))
def test_unknown_parameter_rejected(finder_name: str) -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        make_finder(finder_name, no_such_setting=1)


def test_parameters_from_strings_as_given_on_the_command_line() -> None:
    finder = make_finder("peakfinder8", minimum_snr="7", min_pixel_count="3", masked_peaks="keep", gain="1")
    assert finder.config.minimum_snr == 7.0
    assert finder.config.min_pixel_count == 3
    assert finder.config.masked_peaks == "keep"
    assert finder.config.gain == 1.0


def test_om_parameter_names_exist() -> None:
    config = make_finder("peakfinder8").config
    for name in (
        "adc_threshold",
        "minimum_snr",
        "min_pixel_count",
        "max_pixel_count",
        "local_bg_radius",
        "min_res",
        "max_res",
        "max_num_peaks",
    ):
        assert hasattr(config, name)
