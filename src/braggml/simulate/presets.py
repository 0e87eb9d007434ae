"""Named experiment presets; see docs/simulation.md for their geometry.

``jungfrau4m``
    XFEL serial crystallography on a Jungfrau-4M-like charge-integrating detector: 8 modules of 512 x 1024
    pixels (75 um) in a 4 x 2 grid with gaps, masked chip boundaries, 12 keV, 100 mm, pedestal-subtracted
    float32 output in keV units (12 ADU per photon) with read noise. It is :class:`SimulationConfig`'s default.
``pilatus6m``
    Synchrotron serial/grid-scan stills on a Pilatus-6M-like counting detector: 5 x 12 modules of
    195 x 487 pixels (172 um), int32 counts with -1 in the gaps, 0.9686 A, 351 mm (the geometry of the
    thaumatin grid scan in the real-data folder).
``eiger4m``
    Synchrotron stills on an Eiger-4M-like counting detector: 2 x 4 modules of 514 x 1030 pixels (75 um)
    with masked chip boundaries, uint16 counts with 65535 in the gaps.
``test``
    A small 256 x 256 two-module integrating detector for fast tests; every frame is a hit.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError
from .config import (
    ArtefactConfig,
    BackgroundConfig,
    BeamConfig,
    CrystalConfig,
    DetectorConfig,
    SimulationConfig,
    TruthConfig,
)

__all__ = ["PRESETS", "DEFAULT_PRESET", "get_preset", "available_presets"]


def _jungfrau4m() -> SimulationConfig:
    return SimulationConfig()


def _pilatus6m() -> SimulationConfig:
    return SimulationConfig(
        crystal=CrystalConfig(
            strength_range_photons=(200.0, 15000.0),
            b_factor_a2=18.0,
            d_min_range_a=(1.5, 2.5),
            hit_fraction=0.6,
            mosaicity_deg=0.07,
            mosaic_domain_size_um=0.08,
            crystal_size_um=20.0,
            multi_lattice_fraction=0.5,
            second_lattice_scale_range=(0.3, 1.0),
        ),
        beam=BeamConfig(
            energy_kev=12.8,
            energy_jitter_rel=0.0,
            bandwidth_rel=1e-4,
            divergence_mrad=0.3,
            focus_fwhm_um=10.0,
            polarisation_fraction=0.99,
        ),
        detector=DetectorConfig(
            module_shape=(195, 487),
            module_grid=(12, 5),
            module_gap_px=(17, 7),
            chip_shape=(0, 0),
            chip_gap_px=0,
            pixel_size_mm=0.172,
            distance_mm=351.0,
            beam_center_rowcol=(1306.96, 1261.61),
            mode="counting",
            gain_adu_per_photon=1.0,
            read_noise_adu=0.0,
            saturation_value=1048575.0,
            dtype="int32",
            gap_value="minus_one",
            psf_sigma_px=0.2,
        ),
        background=BackgroundConfig(
            air_photons=6.0,
            air_q_scale_inv_a=0.33,
            floor_photons=0.05,
            water_photons=3.5,
            water_ring_width_inv_a=0.05,
            diffuse_photons=1.6,
            diffuse_width_inv_a=0.6,
            blank_water_scale=0.1,
            scale_spread=0.15,
            ice_fraction=0.05,
            ice_photons_range=(5.0, 200.0),
        ),
        artefacts=ArtefactConfig(
            beamstop_radius_mm=2.0,
            beamstop_arm_width_mm=1.5,
            beamstop_arm_angle_deg=-90.0,
            hot_pixel_fraction=5e-6,
            dead_pixel_fraction=1e-4,
            zingers_per_frame=0.2,
        ),
    )


def _eiger4m() -> SimulationConfig:
    return SimulationConfig(
        crystal=CrystalConfig(
            strength_range_photons=(8.0, 800.0),
            d_min_range_a=(1.4, 2.5),
            hit_fraction=0.6,
            mosaicity_deg=0.03,
            mosaic_domain_size_um=0.5,
            crystal_size_um=10.0,
            multi_lattice_fraction=0.2,
        ),
        beam=BeamConfig(
            energy_kev=12.7,
            energy_jitter_rel=0.0,
            bandwidth_rel=1e-4,
            divergence_mrad=0.05,
            focus_fwhm_um=5.0,
            polarisation_fraction=0.99,
        ),
        detector=DetectorConfig(
            module_shape=(514, 1030),
            module_grid=(4, 2),
            module_gap_px=(37, 10),
            chip_shape=(257, 258),
            chip_gap_px=2,
            pixel_size_mm=0.075,
            distance_mm=150.0,
            beam_offset_px=(15.2, -20.4),
            mode="counting",
            gain_adu_per_photon=1.0,
            read_noise_adu=0.0,
            saturation_value=65534.0,
            dtype="uint16",
            gap_value="dtype_max",
            psf_sigma_px=0.25,
        ),
        background=BackgroundConfig(
            air_photons=0.3, air_q_scale_inv_a=0.2, floor_photons=0.01, water_photons=0.3, scale_spread=0.3
        ),
        artefacts=ArtefactConfig(hot_pixel_fraction=5e-6, zingers_per_frame=0.2),
    )


def _test() -> SimulationConfig:
    return SimulationConfig(
        crystal=CrystalConfig(hit_fraction=1.0, multi_lattice_fraction=0.0, strength_range_photons=(200.0, 20000.0)),
        beam=BeamConfig(energy_kev=12.0),
        detector=DetectorConfig(
            module_shape=(124, 256),
            module_grid=(2, 1),
            module_gap_px=(8, 0),
            chip_shape=(0, 0),
            chip_gap_px=0,
            pixel_size_mm=0.1,
            distance_mm=25.0,
            beam_offset_px=(3.3, -4.6),
        ),
        artefacts=ArtefactConfig(beamstop_radius_mm=0.5, beamstop_arm_width_mm=0.3),
        truth=TruthConfig(),
    )


#: Preset name -> factory.
PRESETS: dict[str, Callable[[], SimulationConfig]] = {
    "jungfrau4m": _jungfrau4m,
    "pilatus6m": _pilatus6m,
    "eiger4m": _eiger4m,
    "test": _test,
}

#: Preset used when none is named.
DEFAULT_PRESET = "jungfrau4m"


def available_presets() -> list[str]:
    """Names of the presets."""
    return sorted(PRESETS)


def get_preset(name: str) -> SimulationConfig:
    """The :class:`SimulationConfig` of preset ``name``.

    Raises
    ------
    ConfigError
        If no preset has that name (the message lists the known ones).
    """
    try:
        factory = PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown simulation preset {name!r} (known: {', '.join(available_presets())})") from None
    return factory()
