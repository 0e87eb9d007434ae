"""Configuration of the frame simulator: one frozen dataclass per part of the experiment.

:class:`SimulationConfig` nests :class:`CrystalConfig`, :class:`BeamConfig`, :class:`DetectorConfig`,
:class:`BackgroundConfig`, :class:`ArtefactConfig` and :class:`TruthConfig`. Every default lives here; the
presets in :mod:`braggml.simulate.presets` replace some of them. Settings are addressed from the command line
and YAML files by their dotted path, e.g. ``crystal.b_factor_a2`` or ``detector.distance_mm``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..config import config_from_mapping, config_to_dict
from ..errors import ConfigError

__all__ = [
    "ArtefactConfig",
    "BackgroundConfig",
    "BeamConfig",
    "CrystalConfig",
    "DetectorConfig",
    "SimulationConfig",
    "TruthConfig",
    "ICE_IH_D_SPACINGS_A",
    "ICE_IH_RELATIVE_INTENSITIES",
    "apply_overrides",
    "parse_set_options",
]

#: d-spacings (Angstrom) of the strongest hexagonal-ice (Ih) powder rings.
ICE_IH_D_SPACINGS_A: tuple[float, ...] = (3.897, 3.669, 3.441, 2.671, 2.249, 2.072, 1.948, 1.918, 1.883)
#: Relative powder intensities of those rings (strongest = 1).
ICE_IH_RELATIVE_INTENSITIES: tuple[float, ...] = (1.0, 0.6, 0.55, 0.2, 0.25, 0.15, 0.03, 0.15, 0.1)


def _positive(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ConfigError(f"{owner}.{name} must be > 0, got {value!r}")


def _non_negative(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not value >= 0:
            raise ConfigError(f"{owner}.{name} must be >= 0, got {value!r}")


def _fraction(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{owner}.{name} must lie in [0, 1], got {value!r}")


def _range(owner: str, name: str, value: tuple[float, float], *, low: float = 0.0) -> None:
    if len(value) != 2 or not (low < value[0] <= value[1]):
        raise ConfigError(f"{owner}.{name} must be (min, max) with {low} < min <= max, got {value!r}")


@dataclass(frozen=True)
class CrystalConfig:
    """The crystals: unit cell, disorder, diffraction strength and how often frames are hits.

    Attributes
    ----------
    cell : (a, b, c, alpha, beta, gamma)
        Unit cell, Angstrom and degrees.
    b_factor_a2 : float
        Mean Wilson B factor (Angstrom^2); intensities fall as ``exp(-B / (2 d^2))``.
    b_factor_spread_a2 : float
        Standard deviation of the per-crystal B factor around ``b_factor_a2``.
    strength_range_photons : (min, max)
        Range of the per-frame crystal strength, drawn log-uniformly: expected photons of a fully recorded
        reflection of mean Wilson intensity at zero resolution, before polarisation and solid-angle factors.
    d_min_range_a : (min, max)
        Range of the per-crystal resolution limit (Angstrom), drawn uniformly; no spot lies beyond it.
    mosaicity_deg : float
        Mosaic spread (standard deviation of block orientations, degrees). It widens the reach of each
        reflection (which reflections diffract, their partiality) and, in a still with a narrow bandwidth,
        streaks the spot only tangentially (along the powder ring, ``2 sin(theta) eta``): a rotated block keeps
        ``|q|`` and so the scattering angle.
    mosaic_domain_size_um : float
        Size of the coherently diffracting mosaic domains; gives every reciprocal-lattice point a width of
        about ``0.4 / size`` (reach at all resolutions, hence more low-resolution partials) and turns the
        diffracted rays by only ``lambda * 0.4 / size`` (negligible on the detector).
    crystal_size_um : float
        Crystal edge length; with ``beam.focus_fwhm_um`` it sets the illuminated width, whose image widens every
        spot on the detector.
    hit_fraction : float
        Fraction of frames holding a crystal; the others are blank (background and artefacts only).
    multi_lattice_fraction : float
        Fraction of hits holding a second, independently oriented lattice.
    second_lattice_scale_range : (min, max)
        Strength of the second lattice relative to the first, drawn uniformly.
    min_partiality : float
        Reflections recorded with a smaller partiality are not drawn.
    """

    cell: tuple[float, float, float, float, float, float] = (79.1, 79.1, 37.9, 90.0, 90.0, 90.0)
    b_factor_a2: float = 25.0
    b_factor_spread_a2: float = 5.0
    strength_range_photons: tuple[float, float] = (10.0, 20000.0)
    d_min_range_a: tuple[float, float] = (1.6, 3.5)
    mosaicity_deg: float = 0.1
    mosaic_domain_size_um: float = 0.5
    crystal_size_um: float = 5.0
    hit_fraction: float = 0.8
    multi_lattice_fraction: float = 0.1
    second_lattice_scale_range: tuple[float, float] = (0.2, 1.0)
    min_partiality: float = 0.01

    def __post_init__(self) -> None:
        a, b, c, alpha, beta, gamma = self.cell
        _positive("crystal.cell", a=a, b=b, c=c)
        for name, angle in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
            if not 0.0 < angle < 180.0:
                raise ConfigError(f"crystal.cell.{name} must lie in (0, 180) degrees, got {angle!r}")
        ca, cb, cg = (math.cos(math.radians(v)) for v in (alpha, beta, gamma))
        if 1.0 - ca**2 - cb**2 - cg**2 + 2.0 * ca * cb * cg <= 0:
            raise ConfigError(f"crystal.cell {self.cell!r}: the angles do not make a valid cell")
        _non_negative("crystal", b_factor_a2=self.b_factor_a2, b_factor_spread_a2=self.b_factor_spread_a2,
                      mosaicity_deg=self.mosaicity_deg)
        _positive("crystal", crystal_size_um=self.crystal_size_um,
                  mosaic_domain_size_um=self.mosaic_domain_size_um)
        _range("crystal", "strength_range_photons", self.strength_range_photons)
        _range("crystal", "d_min_range_a", self.d_min_range_a, low=0.3)
        _range("crystal", "second_lattice_scale_range", self.second_lattice_scale_range)
        _fraction("crystal", hit_fraction=self.hit_fraction, multi_lattice_fraction=self.multi_lattice_fraction,
                  min_partiality=self.min_partiality)
        if self.min_partiality <= 0:
            raise ConfigError(f"crystal.min_partiality must be > 0, got {self.min_partiality!r}")


@dataclass(frozen=True)
class BeamConfig:
    """The X-ray beam.

    Attributes
    ----------
    energy_kev : float
        Mean photon energy (keV); the wavelength is ``12.398 / energy_kev`` Angstrom.
    energy_jitter_rel : float
        Shot-to-shot relative standard deviation of the mean energy.
    bandwidth_rel : float
        Relative standard deviation of the photon energies within one pulse/exposure.
    divergence_mrad : float
        Standard deviation of the beam direction (milliradian); turns the diffracted rays by as much (spot size
        in both directions) and widens the reach of every reflection.
    focus_fwhm_um : float
        Full width at half maximum of the beam at the sample; the illuminated width is the smaller of it and
        the crystal, and its image on the detector widens every spot.
    polarisation_fraction : float
        Fraction of the beam polarised along the column (horizontal) axis.
    """

    energy_kev: float = 12.0
    energy_jitter_rel: float = 0.001
    bandwidth_rel: float = 0.0015
    divergence_mrad: float = 0.05
    focus_fwhm_um: float = 1.5
    polarisation_fraction: float = 0.99

    def __post_init__(self) -> None:
        _positive("beam", energy_kev=self.energy_kev)
        _non_negative("beam", energy_jitter_rel=self.energy_jitter_rel, bandwidth_rel=self.bandwidth_rel,
                      divergence_mrad=self.divergence_mrad)
        _positive("beam", focus_fwhm_um=self.focus_fwhm_um)
        _fraction("beam", polarisation_fraction=self.polarisation_fraction)


@dataclass(frozen=True)
class DetectorConfig:
    """A flat detector perpendicular to the beam, tiled from identical modules.

    The frame array covers the module grid with the gaps between modules included (gap pixels belong to no
    panel and are masked). Each module can be split into chips separated by masked lines.

    Attributes
    ----------
    module_shape : (rows, cols)
        Pixels of one module (one panel).
    module_grid : (rows, cols)
        Number of modules along rows and columns.
    module_gap_px : (rows, cols)
        Gap between neighbouring modules along rows and along columns (pixels).
    chip_shape : (rows, cols)
        Chip size inside a module; ``(0, 0)`` for modules without internal chip boundaries.
    chip_gap_px : int
        Width of the masked line at each chip boundary inside a module.
    pixel_size_mm : float
        Square pixel size.
    distance_mm : float
        Sample-to-detector distance along the beam.
    beam_center_rowcol : (row, col) or None
        Where the direct beam meets the detector (array coordinates); None puts it at the frame centre
        shifted by ``beam_offset_px``.
    beam_offset_px : (row, col)
        Offset of the beam from the frame centre when ``beam_center_rowcol`` is None.
    mode : {"integrating", "counting"}
        ``integrating``: pedestal-subtracted output of ``gain_adu_per_photon`` ADU per photon plus Gaussian
        read noise (charge-integrating XFEL detectors); ``counting``: integer photon counts (hybrid pixel
        counting detectors: Pilatus, Eiger).
    gain_adu_per_photon : float
        Detector units per photon (integrating mode; counting detectors use 1).
    read_noise_adu : float
        Standard deviation of the Gaussian read noise (integrating mode).
    adu_step : float
        Integrating mode: values are rounded to multiples of this (the ADC's digitisation step after gain
        correction); 0 keeps full float precision (which compresses poorly).
    saturation_value : float
        Largest value a pixel can report; larger values are clipped to it.
    dtype : {"float32", "int32", "uint16", "uint32"}
        Data type of the frames.
    gap_value : {"zero", "minus_one", "dtype_max"}
        Value written into gap pixels (no sensor): 0, -1 (Pilatus) or the dtype maximum (Eiger).
    psf_sigma_px : float
        Point-spread (charge sharing) of the sensor, Gaussian standard deviation in pixels.
    phosphor_spread_px : float
        Integrating detectors behind a phosphor or a fibre-optic taper (Rayonix, MarCCD, sCMOS): the signal of
        every photon spreads over the neighbouring pixels with a Gaussian of this standard deviation (pixels)
        before the read noise is added, so the photon noise is shared by neighbours and spots broaden with
        it (the truth's footprints and SNR are those before the spread). 0 for pixel detectors.
    """

    module_shape: tuple[int, int] = (512, 1024)
    module_grid: tuple[int, int] = (4, 2)
    module_gap_px: tuple[int, int] = (36, 12)
    chip_shape: tuple[int, int] = (256, 256)
    chip_gap_px: int = 2
    pixel_size_mm: float = 0.075
    distance_mm: float = 100.0
    beam_center_rowcol: tuple[float, float] | None = None
    beam_offset_px: tuple[float, float] = (-12.3, 7.6)
    mode: Literal["integrating", "counting"] = "integrating"
    gain_adu_per_photon: float = 12.0
    read_noise_adu: float = 1.2
    adu_step: float = 1.0
    saturation_value: float = 120000.0
    dtype: Literal["float32", "int32", "uint16", "uint32"] = "float32"
    gap_value: Literal["zero", "minus_one", "dtype_max"] = "zero"
    psf_sigma_px: float = 0.3
    phosphor_spread_px: float = 0.0

    def __post_init__(self) -> None:
        for name in ("module_shape", "module_grid"):
            value = getattr(self, name)
            if len(value) != 2 or min(value) < 1:
                raise ConfigError(f"detector.{name} must be two integers >= 1, got {value!r}")
        if len(self.module_gap_px) != 2 or min(self.module_gap_px) < 0:
            raise ConfigError(f"detector.module_gap_px must be two integers >= 0, got {self.module_gap_px!r}")
        if len(self.chip_shape) != 2 or min(self.chip_shape) < 0:
            raise ConfigError(f"detector.chip_shape must be two integers >= 0, got {self.chip_shape!r}")
        _non_negative("detector", chip_gap_px=self.chip_gap_px, read_noise_adu=self.read_noise_adu,
                      psf_sigma_px=self.psf_sigma_px, adu_step=self.adu_step,
                      phosphor_spread_px=self.phosphor_spread_px)
        _positive("detector", pixel_size_mm=self.pixel_size_mm, distance_mm=self.distance_mm,
                  gain_adu_per_photon=self.gain_adu_per_photon, saturation_value=self.saturation_value)
        if self.mode == "counting" and self.gain_adu_per_photon != 1.0:
            raise ConfigError(
                f"detector.gain_adu_per_photon must be 1 for a counting detector, got {self.gain_adu_per_photon!r}"
            )
        if self.mode == "counting" and self.phosphor_spread_px > 0:
            raise ConfigError(
                f"detector.phosphor_spread_px needs an integrating detector, got {self.phosphor_spread_px!r} "
                "with mode 'counting'"
            )
        if self.gap_value == "minus_one" and self.dtype.startswith("uint"):
            raise ConfigError(f"detector.gap_value 'minus_one' needs a signed dtype, got {self.dtype!r}")

    @property
    def shape(self) -> tuple[int, int]:
        """Frame shape (rows, cols), gaps included."""
        return (
            self.module_grid[0] * self.module_shape[0] + (self.module_grid[0] - 1) * self.module_gap_px[0],
            self.module_grid[1] * self.module_shape[1] + (self.module_grid[1] - 1) * self.module_gap_px[1],
        )


@dataclass(frozen=True)
class BackgroundConfig:
    """Diffuse scatter, as expected photons per pixel at normal incidence (before solid angle/polarisation).

    The profile is a function of ``q = 1/d``: ``air_photons * exp(-q / air_q_scale_inv_a)`` plus
    ``floor_photons`` plus a water/solvent ring (Gaussian in q at ``1 / water_ring_d_a``) plus, on hits, broad
    diffuse scatter, scaled per frame by a log-normal factor, plus ice-Ih rings on a fraction of frames.

    Attributes
    ----------
    air_photons : float
        Air and windows scatter extrapolated to q = 0.
    air_q_scale_inv_a : float
        Decay constant of the air scatter in q (1/Angstrom).
    floor_photons : float
        Constant diffuse background.
    water_photons : float
        Peak height of the water/solvent ring on hits.
    blank_water_scale : float
        Water ring on blank frames relative to hits (liquid jet or buffer without crystal).
    water_ring_d_a : float
        d-spacing of the water ring maximum.
    water_ring_width_inv_a : float
        Gaussian standard deviation of the water ring in q.
    diffuse_photons : float
        Broad diffuse scatter of the crystal and its solvent on hits, ``exp(-q^2 / (2 w^2))`` at q = 0.
    diffuse_width_inv_a : float
        Width ``w`` of that diffuse scatter in q.
    scale_spread : float
        Standard deviation of the log of the per-frame background scale.
    ice_fraction : float
        Fraction of frames showing ice rings.
    ice_photons_range : (min, max)
        Peak height of the strongest ice ring, drawn log-uniformly per icy frame.
    ice_ring_width_inv_a : float
        Gaussian standard deviation of the ice rings in q.
    """

    air_photons: float = 2.0
    air_q_scale_inv_a: float = 0.15
    floor_photons: float = 0.05
    water_photons: float = 1.5
    blank_water_scale: float = 0.5
    water_ring_d_a: float = 3.7
    water_ring_width_inv_a: float = 0.06
    diffuse_photons: float = 0.2
    diffuse_width_inv_a: float = 0.5
    scale_spread: float = 0.3
    ice_fraction: float = 0.05
    ice_photons_range: tuple[float, float] = (2.0, 50.0)
    ice_ring_width_inv_a: float = 0.002

    def __post_init__(self) -> None:
        _non_negative("background", air_photons=self.air_photons, floor_photons=self.floor_photons,
                      water_photons=self.water_photons, blank_water_scale=self.blank_water_scale,
                      scale_spread=self.scale_spread, diffuse_photons=self.diffuse_photons)
        _positive("background", air_q_scale_inv_a=self.air_q_scale_inv_a, water_ring_d_a=self.water_ring_d_a,
                  water_ring_width_inv_a=self.water_ring_width_inv_a, diffuse_width_inv_a=self.diffuse_width_inv_a,
                  ice_ring_width_inv_a=self.ice_ring_width_inv_a)
        _fraction("background", ice_fraction=self.ice_fraction)
        _range("background", "ice_photons_range", self.ice_photons_range)


@dataclass(frozen=True)
class ArtefactConfig:
    """Detector and beamline artefacts.

    Attributes
    ----------
    beamstop_radius_mm : float
        Radius of the beamstop shadow around the beam centre (0 for none).
    beamstop_arm_width_mm : float
        Width of the beamstop holder arm running from the beamstop to the frame edge (0 for none).
    beamstop_arm_angle_deg : float
        Direction of the arm: 0 points along +col, 90 along +row.
    beamstop_transmission : float
        Fraction of the photons getting through the beamstop and its arm.
    hot_pixel_fraction : float
        Fraction of pixels that are hot (same pixels in every frame of a run); they are not masked.
    hot_pixel_photons_range : (min, max)
        Mean extra signal of a hot pixel, drawn log-uniformly per pixel.
    dead_pixel_fraction : float
        Fraction of pixels that read 0 (same in every frame); they are masked.
    zingers_per_frame : float
        Mean number of cosmic-ray/zinger events per frame (Poisson).
    zinger_max_length_px : float
        Longest cosmic-ray streak; lengths are uniform in [0, max] (0 gives a one-pixel zinger).
    zinger_photons_range : (min, max)
        Energy deposited per pixel along a streak, in photon equivalents, drawn log-uniformly per event.
    panel_offset_adu : float
        Integrating detectors: standard deviation of a per-frame, per-panel offset (residual pedestal /
        common mode) added to every pixel of the panel. Not part of the truth background.
    """

    beamstop_radius_mm: float = 1.5
    beamstop_arm_width_mm: float = 1.0
    beamstop_arm_angle_deg: float = 135.0
    beamstop_transmission: float = 0.002
    hot_pixel_fraction: float = 2e-5
    hot_pixel_photons_range: tuple[float, float] = (5.0, 500.0)
    dead_pixel_fraction: float = 1e-4
    zingers_per_frame: float = 0.5
    zinger_max_length_px: float = 25.0
    zinger_photons_range: tuple[float, float] = (3.0, 60.0)
    panel_offset_adu: float = 0.6

    def __post_init__(self) -> None:
        _non_negative("artefacts", beamstop_radius_mm=self.beamstop_radius_mm,
                      beamstop_arm_width_mm=self.beamstop_arm_width_mm, zingers_per_frame=self.zingers_per_frame,
                      zinger_max_length_px=self.zinger_max_length_px, panel_offset_adu=self.panel_offset_adu)
        _fraction("artefacts", beamstop_transmission=self.beamstop_transmission,
                  hot_pixel_fraction=self.hot_pixel_fraction, dead_pixel_fraction=self.dead_pixel_fraction)
        _range("artefacts", "hot_pixel_photons_range", self.hot_pixel_photons_range)
        _range("artefacts", "zinger_photons_range", self.zinger_photons_range)


@dataclass(frozen=True)
class TruthConfig:
    """What is recorded as ground truth.

    Attributes
    ----------
    min_photons : float
        Reflections with fewer expected photons are neither drawn nor recorded.
    footprint_fraction : float
        A pixel belongs to a spot's footprint where the spot's expected signal is at least this fraction of
        its highest pixel.
    max_box_half_px : int
        Largest half-size of the box a spot profile is rendered in.
    """

    min_photons: float = 1.0
    footprint_fraction: float = 0.05
    max_box_half_px: int = 12

    def __post_init__(self) -> None:
        _positive("truth", min_photons=self.min_photons)
        if not 0.0 < self.footprint_fraction < 1.0:
            raise ConfigError(f"truth.footprint_fraction must lie in (0, 1), got {self.footprint_fraction!r}")
        if self.max_box_half_px < 2:
            raise ConfigError(f"truth.max_box_half_px must be >= 2, got {self.max_box_half_px!r}")


@dataclass(frozen=True)
class SimulationConfig:
    """Everything the simulator needs, nested by part of the experiment.

    Attributes
    ----------
    crystal, beam, detector, background, artefacts, truth
        The parts; see their classes.
    compression : {"bitshuffle_lz4", "gzip", "none"}
        HDF5 compression of the frames and footprints in the output file.
    """

    crystal: CrystalConfig = field(default_factory=CrystalConfig)
    beam: BeamConfig = field(default_factory=BeamConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    artefacts: ArtefactConfig = field(default_factory=ArtefactConfig)
    truth: TruthConfig = field(default_factory=TruthConfig)
    compression: Literal["bitshuffle_lz4", "gzip", "none"] = "bitshuffle_lz4"

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON/YAML-serialisable)."""
        return config_to_dict(self)


def _deep_merge(base: dict[str, Any], overrides: Mapping[str, Any], where: str) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        name = str(key).replace("-", "_")
        path = f"{where}.{key}" if where else str(key)
        if isinstance(value, Mapping):
            current = out.get(name)
            if not isinstance(current, dict):
                sections = ", ".join(sorted(k for k in out if isinstance(out[k], dict)))
                raise ConfigError(f"unknown section {path!r} (known: {sections})")
            out[name] = _deep_merge(current, value, path)
        else:
            if isinstance(out.get(name), dict):
                raise ConfigError(f"{path!r} is a section; set one of its keys, e.g. {path}.{next(iter(out[name]))}")
            out[name] = value
    return out


def apply_overrides(base: SimulationConfig, overrides: Mapping[str, Any]) -> SimulationConfig:
    """Return ``base`` with nested ``overrides`` applied (unknown keys rejected by dotted path).

    Examples
    --------
    >>> cfg = apply_overrides(SimulationConfig(), {"crystal": {"b_factor_a2": 40}})
    >>> cfg.crystal.b_factor_a2
    40.0
    """
    merged = _deep_merge(base.to_dict(), overrides, "")
    return config_from_mapping(SimulationConfig, merged)


def parse_set_options(items: Sequence[str]) -> dict[str, Any]:
    """Turn ``["detector.distance_mm=120", "crystal.cell=78 78 37 90 90 90"]`` into a nested mapping.

    Values stay strings; :func:`apply_overrides` converts them to the field types. ``none`` or ``null``
    gives None (for optional settings such as ``detector.beam_center_rowcol``).
    """
    nested: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        node = nested
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part!r} was given a value and used as a section")
            node = child
        text = value.strip()
        node[parts[-1]] = None if text.lower() in ("none", "null") else text
    return nested


def replace_nested(config: SimulationConfig, **sections: Mapping[str, Any]) -> SimulationConfig:
    """Shortcut for tests and presets: ``replace_nested(cfg, crystal={"hit_fraction": 1.0})``."""
    return apply_overrides(config, sections)

