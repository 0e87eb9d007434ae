"""The frame simulator: still diffraction frames of randomly oriented crystals, with ground truth.

Physics per frame, all vectorised over reflections and pixels:

1. A crystal (on a fraction of frames; two on some) in a uniformly random orientation. Its reciprocal lattice
   points ``q = R B h`` near the Ewald sphere of the shot's wavelength diffract; the excitation error
   ``s = |k0 + q| - 1/lambda`` and the Gaussian width ``sigma_s`` of a reflection's reach (mosaic spread,
   mosaic domain size, beam divergence, bandwidth) give the partiality ``exp(-s^2 / (2 sigma_s^2))``.
2. The diffracted ray ``(k0 + q) / |k0 + q|`` meets the flat detector at the spot centre. Its expected photons
   are the crystal strength times a Wilson-distributed ``|E|^2`` (one draw per reflection and run: the same
   crystal form throughout) times ``exp(-B / (2 d^2))`` times the partiality, polarisation and solid angle.
3. The spot is a 2-D Gaussian with its own radial and tangential widths, rotated to the spot's azimuth: the
   mosaic spread streaks it along the ring only (``2 sin(theta) eta``; a rotated block keeps the scattering
   angle), the bandwidth radially (``2 tan(theta) dlambda/lambda``), divergence and the domain size in both
   directions; the illuminated width of the sample and the sensor point spread add on the detector. It is
   integrated over each pixel's area (error-function differences for the round part, summed along the long
   axis).
4. Background: air scatter decaying in q, a constant floor, a broad water/solvent ring and, on some frames,
   ice-Ih rings, all times solid angle and polarisation; then the beamstop transmission, hot pixels, Poisson
   noise, cosmic-ray streaks, gain and read noise (integrating) or counting, saturation, dead pixels and gaps.

Frame ``k`` depends only on ``(seed, k)``; the detector defects and the structure-factor draws only on
``seed``. So frames can be simulated in any order, in shards, and reproduced one at a time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from scipy.spatial.transform import Rotation
from scipy.special import erf

from ..errors import ConfigError
from ..geometry import HC_KEV_A
from .config import ICE_IH_D_SPACINGS_A, ICE_IH_RELATIVE_INTENSITIES, SimulationConfig
from .crystal import enumerate_reflections
from .detector import DetectorLayout, build_layout, geometric_factor

__all__ = [
    "FRAME_COLUMNS",
    "FOOTPRINT_SPOT",
    "FOOTPRINT_ZINGER",
    "SPOT_COLUMNS",
    "SimulatedFrame",
    "Simulator",
    "frame_rng",
]

#: Bits of the per-pixel footprint map.
FOOTPRINT_SPOT = 1
FOOTPRINT_ZINGER = 2

#: Per-spot truth columns and their dtypes (see docs/simulation.md for definitions).
SPOT_COLUMNS: dict[str, Any] = {
    "frame": np.int64,
    "row": np.float64,
    "col": np.float64,
    "photons": np.float64,
    "adu": np.float64,
    "photons_in_footprint": np.float64,
    "background_photons": np.float64,
    "background_adu": np.float64,
    "snr": np.float64,
    "n_pixels": np.int32,
    "peak_adu": np.float64,
    "resolution_a": np.float64,
    "h": np.int32,
    "k": np.int32,
    "l": np.int32,
    "panel": np.int32,
    "lattice": np.int8,
    "partiality": np.float64,
    "excitation_error_inv_a": np.float64,
    "full_photons": np.float64,
    "geom_factor": np.float64,
    "sigma_row_px": np.float32,
    "sigma_col_px": np.float32,
    "cov_rowcol_px2": np.float32,
    "sigma_radial_px": np.float32,
    "sigma_tangential_px": np.float32,
    "observable": np.bool_,
    "saturated": np.bool_,
}

#: Per-frame truth columns and their dtypes.
FRAME_COLUMNS: dict[str, Any] = {
    "hit": np.bool_,
    "n_lattices": np.int8,
    "n_spots": np.int32,
    "n_observable_spots": np.int32,
    "wavelength_a": np.float64,
    "strength_photons": np.float64,
    "b_factor_a2": np.float64,
    "d_min_a": np.float64,
    "second_lattice_scale": np.float64,
    "background_scale": np.float64,
    "ice": np.bool_,
    "ice_photons": np.float64,
    "n_zingers": np.int32,
}

_STREAM_FRAME = 0
_STREAM_DETECTOR = 1
_STREAM_STRUCTURE = 2
_N_BG_BINS = 16384
#: Spacing (pixels) and reach (standard deviations) of the nodes along a spot's long axis.
_NODE_SPACING_PX = 0.4
_NODE_REACH = 3.5
#: Longest extra width (pixels) rendered with the 3-point Gauss-Hermite rule.
_HERMITE_MAX_PX = 0.15


def frame_rng(seed: int, k: int) -> np.random.Generator:
    """The random generator of frame ``k`` of a run with ``seed`` (independent of every other frame)."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(_STREAM_FRAME, int(k))))


def _stream_rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(stream,)))


@dataclass(frozen=True, eq=False)
class SimulatedFrame:
    """One simulated frame and its ground truth.

    Attributes
    ----------
    index : int
        Frame number ``k`` in the run.
    image : (H, W) ndarray
        The detector frame in the detector's dtype, with its gap values.
    expected_photons : (H, W) float32 ndarray
        Noise-free expected photons per pixel (background, spots, hot pixels), before noise and artefacts.
    background_photons : (H, W) float32 ndarray
        Noise-free expected diffuse background per pixel (no spots, no hot pixels).
    footprint : (H, W) uint8 ndarray
        Bit field: 1 where a truth spot's footprint covers the pixel, 2 where a cosmic-ray streak hit it.
    spots : dict of str to (S,) ndarray
        Per-spot truth, columns :data:`SPOT_COLUMNS` (``frame`` holds ``index``).
    info : dict of str to scalar
        Per-frame truth, keys :data:`FRAME_COLUMNS`.
    orientations : (2, 4) float64 ndarray
        Crystal orientation quaternions (x, y, z, w; scipy order) of lattice 0 and 1, NaN when absent.
    """

    index: int
    image: NDArray[Any]
    expected_photons: NDArray[np.float32]
    background_photons: NDArray[np.float32]
    footprint: NDArray[np.uint8]
    spots: dict[str, NDArray[Any]]
    info: dict[str, Any]
    orientations: NDArray[np.float64]

    @property
    def n_spots(self) -> int:
        return int(self.spots["row"].size)


def _empty_spots() -> dict[str, NDArray[Any]]:
    return {name: np.empty(0, dtype) for name, dtype in SPOT_COLUMNS.items()}


class Simulator:
    """Simulate frames of one run (one detector, one crystal form, one seed).

    Parameters
    ----------
    config : SimulationConfig, optional
        The experiment; the default is the XFEL Jungfrau-4M-like setup.
    seed : int
        Run seed: frame ``k`` is a function of ``(seed, k)`` only.

    Examples
    --------
    >>> from braggml.simulate.presets import get_preset
    >>> sim = Simulator(get_preset("test"), seed=1)
    >>> frame = sim.frame(0)
    >>> frame.image.shape
    (256, 256)
    """

    def __init__(self, config: SimulationConfig | None = None, *, seed: int = 0) -> None:
        if config is None:
            config = SimulationConfig()
        if not isinstance(config, SimulationConfig):
            raise TypeError(f"Simulator takes a SimulationConfig, got {type(config).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
        self.config = config
        self.seed = int(seed)
        self.wavelength_a = HC_KEV_A / config.beam.energy_kev
        self.layout: DetectorLayout = build_layout(
            config.detector, config.beam, config.artefacts, _stream_rng(self.seed, _STREAM_DETECTOR)
        )
        lay = self.layout
        self._on_panel = lay.panel_id >= 0
        # Photons reaching a pixel per photon of the profile: gaps record nothing, the beamstop attenuates.
        self._throughput = np.where(self._on_panel, lay.transmission, 0.0).astype(np.float32)
        self._bg_response = (lay.geom_factor * self._throughput).astype(np.float32)
        self._hot = np.where(self._on_panel, lay.hot_photons, 0.0).astype(np.float32)
        tt_max = float(lay.two_theta.max()) if lay.two_theta.size else 0.0
        self._bg_two_theta = np.linspace(0.0, tt_max * (1 + 1e-6) + 1e-9, _N_BG_BINS)
        step = self._bg_two_theta[1] - self._bg_two_theta[0]
        self._bg_bin = np.clip(np.rint(lay.two_theta / step), 0, _N_BG_BINS - 1).astype(np.uint16)

    # -- fixed per run ---------------------------------------------------------------------------------------
    @cached_property
    def _reflections(self) -> tuple[NDArray[np.int32], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """All reflections to the best resolution limit, |q| and their Wilson-distributed |E|^2 (fixed per run)."""
        cry = self.config.crystal
        hkl, q = enumerate_reflections(cry.cell, cry.d_min_range_a[0])
        rng = _stream_rng(self.seed, _STREAM_STRUCTURE)
        e2 = rng.exponential(1.0, hkl.shape[0])
        q_len = np.linalg.norm(q, axis=1)
        order = np.argsort(q_len, kind="stable")  # by resolution, so a d_min cut is a prefix
        return hkl[order], np.ascontiguousarray(q[order]), q_len[order], e2[order]

    def parameters(self) -> dict[str, Any]:
        """Run parameters as a JSON-serialisable dict: seed, configuration and derived geometry."""
        det = self.config.detector
        return {
            "seed": self.seed,
            "config": self.config.to_dict(),
            "geometry": {
                "shape": list(det.shape),
                "beam_center_rowcol": list(self.layout.beam_rowcol),
                "distance_mm": det.distance_mm,
                "pixel_size_mm": det.pixel_size_mm,
                "wavelength_a": self.wavelength_a,
                "energy_kev": self.config.beam.energy_kev,
                "n_panels": int(self.layout.panel_id.max()) + 1,
                "lab_frame": "beam along +z; detector plane z = distance_mm; row axis = lab axis 0, "
                "col axis = lab axis 1; pixel (row, col) at ((row - beam_row) * pixel_size_mm, "
                "(col - beam_col) * pixel_size_mm, distance_mm)",
            },
        }

    def parameters_json(self) -> str:
        return json.dumps(self.parameters(), sort_keys=True)

    # -- one frame -------------------------------------------------------------------------------------------
    def frame(self, k: int) -> SimulatedFrame:
        """Simulate frame ``k`` (deterministic in ``(seed, k)``)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ConfigError(f"frame index must be an integer >= 0, got {k!r}")
        cfg = self.config
        rng = frame_rng(self.seed, int(k))
        shape = self.layout.shape

        # Shot parameters (drawn in a fixed order so that every frame uses the same stream layout).
        hit = bool(rng.random() < cfg.crystal.hit_fraction)
        wavelength = self.wavelength_a / (1.0 + cfg.beam.energy_jitter_rel * rng.standard_normal())
        bg_scale = float(np.exp(cfg.background.scale_spread * rng.standard_normal()))
        ice = bool(rng.random() < cfg.background.ice_fraction)
        lo, hi = cfg.background.ice_photons_range
        ice_photons = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if ice else 0.0
        lo, hi = cfg.crystal.strength_range_photons
        strength = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        b_factor = max(0.0, cfg.crystal.b_factor_a2 + cfg.crystal.b_factor_spread_a2 * rng.standard_normal())
        d_min = float(rng.uniform(*cfg.crystal.d_min_range_a))
        two_lattices = bool(rng.random() < cfg.crystal.multi_lattice_fraction)
        second_scale = float(rng.uniform(*cfg.crystal.second_lattice_scale_range))
        rotations = Rotation.random(2, random_state=rng)
        n_lattices = (2 if two_lattices else 1) if hit else 0

        background = self._background(wavelength, bg_scale, hit, ice_photons)
        spot_photons = np.zeros(shape[0] * shape[1], np.float64)
        parts = []
        for lattice in range(n_lattices):
            scale = strength * (1.0 if lattice == 0 else second_scale)
            spots = self._lattice_spots(rotations[lattice].as_matrix(), wavelength, scale, b_factor, d_min)
            if spots is None:
                continue
            spots["lattice"] = np.full(spots["row"].size, lattice, np.int8)
            box = self._render(spots, spot_photons)
            parts.append((spots, box))
        spot_img = spot_photons.reshape(shape).astype(np.float32)
        expected = background + spot_img + self._hot

        footprint = np.zeros(shape, np.uint8)
        table = self._truth(parts, expected, footprint, int(k))

        photons = rng.poisson(expected)
        deposit, n_zingers = self._zingers(rng, footprint)
        image = self._detect(photons, deposit, rng)

        orientations = np.full((2, 4), np.nan)
        for lattice in range(n_lattices):
            orientations[lattice] = rotations[lattice].as_quat()
        info = {
            "hit": hit,
            "n_lattices": n_lattices,
            "n_spots": int(table["row"].size),
            "n_observable_spots": int(table["observable"].sum()),
            "wavelength_a": float(wavelength),
            "strength_photons": strength if hit else 0.0,
            "b_factor_a2": float(b_factor) if hit else float("nan"),
            "d_min_a": d_min if hit else float("nan"),
            "second_lattice_scale": second_scale if n_lattices == 2 else float("nan"),
            "background_scale": bg_scale,
            "ice": ice,
            "ice_photons": ice_photons,
            "n_zingers": n_zingers,
        }
        return SimulatedFrame(
            index=int(k),
            image=image,
            expected_photons=expected,
            background_photons=background,
            footprint=footprint,
            spots=table,
            info=info,
            orientations=orientations,
        )

    def detect(self, expected_photons: NDArray[np.floating], rng: np.random.Generator) -> NDArray[Any]:
        """One noisy detector readout of ``expected_photons`` (Poisson, gain, read noise, saturation, gaps).

        No cosmic rays; used to study the noise model on a fixed expected image.
        """
        expected = np.asarray(expected_photons, dtype=np.float64)
        if expected.shape != self.layout.shape:
            raise ValueError(f"expected_photons has shape {expected.shape}, the detector {self.layout.shape}")
        return self._detect(rng.poisson(expected), None, rng)

    # -- pieces ----------------------------------------------------------------------------------------------
    def _background(self, wavelength: float, scale: float, hit: bool, ice_photons: float) -> NDArray[np.float32]:
        bg = self.config.background
        q = 2.0 * np.sin(self._bg_two_theta / 2.0) / wavelength
        water = bg.water_photons * (1.0 if hit else bg.blank_water_scale)
        profile = scale * (
            bg.air_photons * np.exp(-q / bg.air_q_scale_inv_a)
            + bg.floor_photons
            + water * np.exp(-0.5 * ((q - 1.0 / bg.water_ring_d_a) / bg.water_ring_width_inv_a) ** 2)
            + (bg.diffuse_photons if hit else 0.0) * np.exp(-0.5 * (q / bg.diffuse_width_inv_a) ** 2)
        )
        if ice_photons > 0:
            for d_ring, rel in zip(ICE_IH_D_SPACINGS_A, ICE_IH_RELATIVE_INTENSITIES, strict=True):
                profile += ice_photons * rel * np.exp(-0.5 * ((q - 1.0 / d_ring) / bg.ice_ring_width_inv_a) ** 2)
        return profile.astype(np.float32)[self._bg_bin] * self._bg_response

    def _lattice_spots(
        self, rotation: NDArray[np.float64], wavelength: float, scale: float, b_factor: float, d_min: float
    ) -> dict[str, NDArray[Any]] | None:
        cfg = self.config
        det = cfg.detector
        hkl_all, q_all, q_len_all, e2_all = self._reflections
        n_res = int(np.searchsorted(q_len_all, 1.0 / d_min, side="right"))
        inv_wl = 1.0 / wavelength
        eta = np.radians(cfg.crystal.mosaicity_deg)
        div = cfg.beam.divergence_mrad * 1e-3
        # Width of a reciprocal-lattice point from the size of the coherent domains (never above the crystal).
        domain_width = 0.4 / (min(cfg.crystal.mosaic_domain_size_um, cfg.crystal.crystal_size_um) * 1e4)
        # Cheap pre-selection with the beam component of q only and the largest reach of any reflection.
        q_max = 1.0 / d_min
        reach_max = np.sqrt(
            (q_max * eta) ** 2 + (q_max * div) ** 2 + (0.5 * wavelength * q_max**2 * cfg.beam.bandwidth_rel) ** 2
            + domain_width**2
        )
        s_cut = reach_max * np.sqrt(-2.0 * np.log(cfg.crystal.min_partiality)) * 1.001
        q_beam = q_all[:n_res] @ rotation[2]
        q_len_sq = q_len_all[:n_res] ** 2
        s_all = np.sqrt(np.maximum(q_len_sq + 2.0 * q_beam * inv_wl + inv_wl**2, 0.0)) - inv_wl
        sel = np.flatnonzero(np.abs(s_all) <= s_cut)
        if sel.size == 0:
            return None
        q = q_all[sel] @ rotation.T
        q_len = q_len_all[sel]
        kq = q.copy()
        kq[:, 2] += inv_wl
        kq_len = np.linalg.norm(kq, axis=1)
        s = kq_len - inv_wl
        sin_theta = np.clip(0.5 * wavelength * q_len, 0.0, 1.0)
        cos_theta = np.sqrt(1.0 - sin_theta**2)
        sigma_s = np.sqrt(
            (q_len * eta) ** 2
            + (q_len * div * cos_theta) ** 2
            + (0.5 * wavelength * q_len**2 * cfg.beam.bandwidth_rel) ** 2
            + domain_width**2
        )
        partiality = np.exp(-0.5 * (s / sigma_s) ** 2)
        keep = (partiality >= cfg.crystal.min_partiality) & (kq[:, 2] > 0)
        if not keep.any():
            return None
        idx = np.flatnonzero(keep)
        kq, kq_len, s, partiality, q_len = kq[idx], kq_len[idx], s[idx], partiality[idx], q_len[idx]
        sin_theta, cos_theta = sin_theta[idx], cos_theta[idx]
        ref = sel[idx]
        unit = kq / kq_len[:, None]
        beam_r, beam_c = self.layout.beam_rowcol
        to_px = det.distance_mm / det.pixel_size_mm
        row = beam_r + to_px * unit[:, 0] / unit[:, 2]
        col = beam_c + to_px * unit[:, 1] / unit[:, 2]
        rows, cols = det.shape
        inside = (row >= -0.5) & (row < rows - 0.5) & (col >= -0.5) & (col < cols - 0.5)
        d = 1.0 / q_len
        full = scale * e2_all[ref] * np.exp(-b_factor / (2.0 * d**2))
        two_theta = np.arccos(np.clip(unit[:, 2], -1.0, 1.0))
        azimuth = np.arctan2(unit[:, 0], unit[:, 1])
        geom = geometric_factor(two_theta, azimuth, cfg.beam.polarisation_fraction)
        photons = full * partiality * geom
        keep = inside & (photons >= cfg.truth.min_photons)
        if not keep.any():
            return None
        k = np.flatnonzero(keep)
        two_theta, azimuth = two_theta[k], azimuth[k]
        # Angular spreads (radian) of the diffracted ray, radial and tangential to the powder ring.
        # Divergence tilts the diffracted ray by as much in both directions. A mosaic block rotated by eta moves
        # q by |q| eta on the sphere of constant |q|; the part of that cap on the Ewald sphere is an arc of
        # constant 2 theta, so mosaicity turns the ray by lambda |q| eta = 2 sin(theta) eta tangentially only.
        # The bandwidth changes 2 theta by 2 tan(theta) dlambda/lambda (radial streak); the domain size turns
        # the ray by lambda * (its reciprocal-point width) in both directions.
        tan_theta = sin_theta[k] / cos_theta[k]
        ang_common = div**2 + (wavelength * domain_width) ** 2
        ang_tan = ang_common + (2.0 * sin_theta[k] * eta) ** 2
        ang_radial = ang_common + (2.0 * tan_theta * cfg.beam.bandwidth_rel) ** 2
        # On a flat detector the ray's angle maps to D / cos^2(2 theta) radially and D / cos(2 theta)
        # tangentially; the illuminated width of the sample and the sensor's point spread add everywhere.
        cos2t = np.cos(two_theta)
        width_mm = 1e-3 * min(cfg.crystal.crystal_size_um / np.sqrt(12.0), cfg.beam.focus_fwhm_um / 2.3548)
        psf2 = det.psf_sigma_px**2
        sig_rad2 = ((det.distance_mm / cos2t**2) ** 2 * ang_radial + width_mm**2) / det.pixel_size_mm**2 + psf2
        sig_tan2 = ((det.distance_mm / cos2t) ** 2 * ang_tan + width_mm**2) / det.pixel_size_mm**2 + psf2
        er, ec = np.sin(azimuth), np.cos(azimuth)
        var_row = sig_rad2 * er**2 + sig_tan2 * ec**2
        var_col = sig_rad2 * ec**2 + sig_tan2 * er**2
        cov_rc = (sig_rad2 - sig_tan2) * er * ec
        hkl = hkl_all[ref[k]]
        return {
            "row": row[k],
            "col": col[k],
            "photons": photons[k],
            "resolution_a": d[k],
            "h": hkl[:, 0].astype(np.int32),
            "k": hkl[:, 1].astype(np.int32),
            "l": hkl[:, 2].astype(np.int32),
            "partiality": partiality[k],
            "excitation_error_inv_a": s[k],
            "full_photons": full[k],
            "geom_factor": geom[k],
            "sigma_row_px": np.sqrt(var_row).astype(np.float32),
            "sigma_col_px": np.sqrt(var_col).astype(np.float32),
            "cov_rowcol_px2": cov_rc.astype(np.float32),
            "sigma_radial_px": np.sqrt(sig_rad2).astype(np.float32),
            "sigma_tangential_px": np.sqrt(sig_tan2).astype(np.float32),
            "azimuth_rad": azimuth,
        }

    def _render(self, spots: dict[str, NDArray[Any]], out: NDArray[np.float64]) -> dict[str, NDArray[Any]]:
        """Add the spots' expected photons (integrated over pixel areas) to the flat image ``out``.

        Each spot is a 2-D Gaussian with its radial and tangential widths along the azimuth. It is split
        exactly into an isotropic Gaussian of the smaller width, integrated over each pixel by error-function
        differences along rows and columns, convolved with a 1-D Gaussian along the longer axis (any
        direction): three Gauss-Hermite nodes for slightly elongated spots, else a sum over nodes at most
        ``_NODE_SPACING_PX`` apart. The pixel box and the isotropic part smooth the node sum, whose error
        (Poisson summation) is far below the photon noise.
        """
        rows, cols = self.layout.shape
        var_rad = spots["sigma_radial_px"].astype(np.float64) ** 2
        var_tan = spots["sigma_tangential_px"].astype(np.float64) ** 2
        sigma_max = float(np.sqrt(max(var_rad.max(), var_tan.max())))
        half = int(min(self.config.truth.max_box_half_px, max(2, np.ceil(4.0 * sigma_max))))
        offsets = np.arange(-half, half + 1)
        n = spots["row"].size
        r_idx = np.rint(spots["row"]).astype(np.int64)[:, None] + offsets[None, :]
        c_idx = np.rint(spots["col"]).astype(np.int64)[:, None] + offsets[None, :]
        sigma_iso = np.sqrt(np.maximum(np.minimum(var_rad, var_tan), 1e-6))
        sigma_line = np.sqrt(np.abs(var_rad - var_tan))
        er, ec = np.sin(spots["azimuth_rad"]), np.cos(spots["azimuth_rad"])
        radial_longer = var_rad >= var_tan
        dir_row = np.where(radial_longer, er, ec)
        dir_col = np.where(radial_longer, ec, -er)
        # Nodes per spot: none for round spots; the 3-point Gauss-Hermite rule (exact to the 5th moment) for
        # slightly elongated ones; else evenly spaced nodes at most min(spacing, sigma_line) apart, their odd
        # counts in a few buckets so that each bucket is one batched product.
        step = np.minimum(_NODE_SPACING_PX, np.maximum(sigma_line, 1e-9))
        need = 2 * np.ceil(_NODE_REACH * sigma_line / step).astype(np.int64) + 1
        gauss_hermite = sigma_line < _HERMITE_MAX_PX
        need[gauss_hermite] = 3
        need[sigma_line < 1e-3] = 1
        buckets = np.array([1, 3, 5, 9, 17, 33, 65, 129])
        bucket_of = np.minimum(np.searchsorted(buckets, need), buckets.size - 1)
        profile = np.empty((n, offsets.size, offsets.size))
        row_ok = (r_idx >= 0) & (r_idx < rows)
        col_ok = (c_idx >= 0) & (c_idx < cols)
        for b, hermite in {(int(v), bool(h)) for v, h in zip(bucket_of, gauss_hermite, strict=True)}:
            sel = np.flatnonzero((bucket_of == b) & (gauss_hermite == hermite))
            n_nodes = int(buckets[b])
            if n_nodes == 1:
                u = np.zeros((sel.size, 1))
                w = np.ones((sel.size, 1))
            elif hermite:
                u = np.array([-1.0, 0.0, 1.0])[None, :] * (np.sqrt(3.0) * sigma_line[sel])[:, None]
                w = np.broadcast_to(np.array([1.0, 4.0, 1.0]) / 6.0, u.shape)
            else:
                spacing = 2.0 * _NODE_REACH * sigma_line[sel] / (n_nodes - 1)
                u = (np.arange(n_nodes) - (n_nodes - 1) / 2.0)[None, :] * spacing[:, None]
                w = np.exp(-0.5 * (u / sigma_line[sel][:, None]) ** 2)
                w /= w.sum(axis=1, keepdims=True)
            centre_r = spots["row"][sel][:, None] + u * dir_row[sel][:, None]  # (m, K)
            centre_c = spots["col"][sel][:, None] + u * dir_col[sel][:, None]
            scale = (1.0 / (np.sqrt(2.0) * sigma_iso[sel]))[:, None, None]
            # Error function at the B + 1 pixel edges, differenced: the isotropic part integrated per pixel.
            edge_r = r_idx[sel][:, None, :1] - 0.5 + np.arange(offsets.size + 1)[None, None, :]
            edge_c = c_idx[sel][:, None, :1] - 0.5 + np.arange(offsets.size + 1)[None, None, :]
            w_row = 0.5 * np.diff(erf((edge_r - centre_r[:, :, None]) * scale), axis=2)
            w_col = 0.5 * np.diff(erf((edge_c - centre_c[:, :, None]) * scale), axis=2)
            w_row = w_row * w[:, :, None]
            profile[sel] = np.matmul(w_row.transpose(0, 2, 1), w_col)  # (m, B, K) @ (m, K, B)
        profile *= row_ok[:, :, None] & col_ok[:, None, :]
        flat = np.clip(r_idx, 0, rows - 1)[:, :, None] * cols + np.clip(c_idx, 0, cols - 1)[:, None, :]
        throughput = self._throughput.reshape(-1)[flat]
        contribution = profile * spots["photons"][:, None, None] * throughput
        out += np.bincount(flat.reshape(-1), weights=contribution.reshape(-1), minlength=out.size)
        return {"flat": flat, "profile": profile, "contribution": contribution}

    def _truth(
        self,
        parts: list[tuple[dict[str, NDArray[Any]], dict[str, NDArray[Any]]]],
        expected: NDArray[np.float32],
        footprint: NDArray[np.uint8],
        k: int,
    ) -> dict[str, NDArray[Any]]:
        if not parts:
            table = _empty_spots()
            return table
        det = self.config.detector
        gain = det.gain_adu_per_photon
        read_var = (det.read_noise_adu / gain) ** 2 if det.mode == "integrating" else 0.0
        lay = self.layout
        mask_flat = lay.mask.reshape(-1)
        expected_flat = expected.reshape(-1)
        panel_flat = lay.panel_id.reshape(-1)
        rows, cols = lay.shape
        tables = []
        for spots, box in parts:
            flat, profile, contribution = box["flat"], box["profile"], box["contribution"]
            n = flat.shape[0]
            usable = (profile > 0) & ~mask_flat[flat]
            peak = profile.reshape(n, -1).max(axis=1)
            fp = usable & (profile >= self.config.truth.footprint_fraction * peak[:, None, None])
            n_pix = fp.reshape(n, -1).sum(axis=1)
            signal = np.where(fp, contribution, 0.0).reshape(n, -1).sum(axis=1)
            total = np.where(fp, expected_flat[flat], 0.0).reshape(n, -1).sum(axis=1)
            bg_sum = np.maximum(total - signal, 0.0)
            variance = signal + bg_sum + n_pix * read_var
            with np.errstate(divide="ignore", invalid="ignore"):
                snr = np.where(variance > 0, signal / np.sqrt(variance), 0.0)
                bg_mean = np.where(n_pix > 0, bg_sum / np.maximum(n_pix, 1), np.nan)
            peak_val = np.where(fp, expected_flat[flat], 0.0).reshape(n, -1).max(axis=1)
            footprint.reshape(-1)[flat[fp]] |= np.uint8(FOOTPRINT_SPOT)
            centre_r = np.clip(np.rint(spots["row"]).astype(np.int64), 0, rows - 1)
            centre_c = np.clip(np.rint(spots["col"]).astype(np.int64), 0, cols - 1)
            centre = centre_r * cols + centre_c
            table = dict(spots)
            table["frame"] = np.full(n, k, np.int64)
            table["adu"] = spots["photons"] * gain
            table["photons_in_footprint"] = signal
            table["background_photons"] = bg_mean
            table["background_adu"] = bg_mean * gain
            table["snr"] = snr
            table["n_pixels"] = n_pix.astype(np.int32)
            table["peak_adu"] = peak_val * gain
            table["panel"] = panel_flat[centre].astype(np.int32)
            table["observable"] = (~mask_flat[centre]) & (n_pix > 0)
            table["saturated"] = peak_val * gain >= det.saturation_value
            tables.append(table)
        out = {name: np.concatenate([t[name] for t in tables]).astype(dtype) for name, dtype in SPOT_COLUMNS.items()}
        return out

    def _zingers(
        self, rng: np.random.Generator, footprint: NDArray[np.uint8]
    ) -> tuple[NDArray[np.float64] | None, int]:
        art = self.config.artefacts
        n = int(rng.poisson(art.zingers_per_frame)) if art.zingers_per_frame > 0 else 0
        if n == 0:
            return None, 0
        rows, cols = self.layout.shape
        flat_all = []
        energy_all = []
        for _ in range(n):
            r0, c0 = rng.uniform(0, rows), rng.uniform(0, cols)
            length = rng.uniform(0.0, art.zinger_max_length_px)
            angle = rng.uniform(0.0, np.pi)
            lo, hi = art.zinger_photons_range
            energy = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            t = np.linspace(0.0, length, max(2, int(np.ceil(length * 4)) + 1))
            rr = np.floor(r0 + t * np.sin(angle)).astype(np.int64)
            cc = np.floor(c0 + t * np.cos(angle)).astype(np.int64)
            ok = (rr >= 0) & (rr < rows) & (cc >= 0) & (cc < cols)
            flat = np.unique(rr[ok] * cols + cc[ok])
            flat_all.append(flat)
            energy_all.append(np.full(flat.size, energy) * rng.uniform(0.5, 1.5, flat.size))
        flat = np.concatenate(flat_all)
        deposit = np.zeros(rows * cols)
        np.add.at(deposit, flat, np.concatenate(energy_all))
        footprint.reshape(-1)[flat] |= np.uint8(FOOTPRINT_ZINGER)
        return deposit.reshape(rows, cols), n

    def _detect(
        self, photons: NDArray[np.integer], deposit: NDArray[np.float64] | None, rng: np.random.Generator
    ) -> NDArray[Any]:
        det = self.config.detector
        dtype = np.dtype(det.dtype)
        if det.mode == "integrating":
            values = photons.astype(np.float32)
            if deposit is not None:
                values += deposit.astype(np.float32)
            if det.phosphor_spread_px > 0:
                values = ndimage.gaussian_filter(values, det.phosphor_spread_px, mode="nearest")
            values *= np.float32(det.gain_adu_per_photon)
            if det.read_noise_adu > 0:
                values += np.float32(det.read_noise_adu) * rng.standard_normal(values.shape, dtype=np.float32)
            offset_adu = self.config.artefacts.panel_offset_adu
            if offset_adu > 0:
                n_panels = int(self.layout.panel_id.max()) + 1
                offsets = np.append(offset_adu * rng.standard_normal(n_panels), 0.0).astype(np.float32)
                values += offsets[self.layout.panel_id]  # index -1 (gaps) picks the appended 0
            if det.adu_step > 0:
                step = np.float32(det.adu_step)
                np.multiply(np.rint(values / step), step, out=values)
            np.minimum(values, np.float32(det.saturation_value), out=values)
            if dtype.kind in "iu":
                values = np.rint(values)
                if dtype.kind == "u":
                    np.maximum(values, 0, out=values)
        else:
            values = photons
            if deposit is not None:
                values = values + (deposit > 0)  # one count per pixel a charged particle crosses
            values = np.minimum(values, det.saturation_value)
        image = values.astype(dtype, copy=False)
        image[self.layout.dead] = 0
        if det.gap_value == "zero":
            gap = 0
        elif det.gap_value == "minus_one":
            gap = -1
        else:
            gap = np.finfo(dtype).max if dtype.kind == "f" else np.iinfo(dtype).max
        image[~self._on_panel] = gap
        return image
