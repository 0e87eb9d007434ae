"""Training the U-Net on simulated frames: crops, targets, loss, peak-level validation and early stopping.

Targets are compact cores: the pixels within :attr:`UNetTrainConfig.core_radius_px` of every observable spot
whose expected SNR reaches :attr:`UNetTrainConfig.min_snr`, so that neighbouring spots stay apart. A ring just
outside each core and the truth footprints of weaker spots are left out of the loss (neither peak nor
background); the rest of a strong spot's footprint, ice and powder rings, cosmic-ray streaks, hot pixels and
everything else are background. Training frames mix several variants of each simulator preset (hits, weak
hits, hits on ice rings, blank frames) so that the network learns the negatives as well as the spots.
Validation scores peaks, not pixels: regions above the probability cut are matched one-to-one to the true
spots within 2 px (:func:`braggml.evaluate.matching.match_frame`) and the F1 decides early stopping and the
model's cut.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage

from ..classical._common import check_choice
from ..errors import ConfigError
from ..evaluate.matching import match_frame
from ..geometry import HC_KEV_A
from ..simulate import Simulator, get_preset
from ..simulate.config import BackgroundConfig, CrystalConfig, SimulationConfig, apply_overrides
from ..simulate.frame import FOOTPRINT_SPOT, SimulatedFrame
from .cnn import resolve_device
from .unet import FLIPS, NormConfig, TrainedUNet, UNet, UNetConfig, check_flips, normalise_frame
from .unet_extract import candidate_reach, extract_peaks, gather_candidates

__all__ = [
    "UNetTrainConfig",
    "VARIANTS",
    "DEFAULT_VARIANTS",
    "VAL_AVERAGES",
    "variant_config",
    "varied_config",
    "crowded_config",
    "sharp_config",
    "pinpoint_config",
    "lattice_spacing_px",
    "CropSet",
    "IGNORE",
    "frame_target",
    "faulty_lines",
    "unlit_region",
    "cast_shadow",
    "crops_from_frame",
    "simulate_crops",
    "peak_f1",
    "train_unet",
    "choose_threshold",
    "average_weights",
]

log = logging.getLogger(__name__)

#: Target value of pixels left out of the loss.
IGNORE = 2

#: Kinds of training frame made from each simulator preset (see :func:`variant_config`).
VARIANTS = (
    "hits", "weak", "ice", "blank", "dense", "quiet", "varied", "compact", "crowded", "sharp", "pinpoint", "phosphor",
)

#: Ways of averaging the validation F1 over the validation crops or frames (:func:`peak_f1`).
VAL_AVERAGES = ("pooled", "variant")

#: Variants used when none are chosen: all but ``crowded``, ``sharp``, ``pinpoint`` and ``phosphor``. In one run, a
#: model trained from scratch with crowded frames found tight groups of spots better but fired on the diffuse kapton
#: scatter of a real Rayonix frame (thousands of peaks), so these are for fine-tuning a model that has learned the
#: rest first.
DEFAULT_VARIANTS = tuple(v for v in VARIANTS if v not in ("crowded", "sharp", "pinpoint", "phosphor"))


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(math.log(low), math.log(high))))


def _scaled_strength(crystal: CrystalConfig, factor: float) -> list[float]:
    """The crystal-strength range of ``crystal`` (``strength_range_photons``) scaled by ``factor``."""
    low, high = crystal.strength_range_photons
    return [low * factor, high * factor]


def _scaled_background(bg: BackgroundConfig, factor: float) -> dict[str, float]:
    """Overrides that scale every diffuse-scatter level of ``bg`` (air, floor, water, diffuse) by ``factor``."""
    return {
        name: getattr(bg, name) * factor
        for name in ("air_photons", "floor_photons", "water_photons", "diffuse_photons")
    }


def varied_config(base: SimulationConfig, rng: np.random.Generator) -> SimulationConfig:
    """A hit on the preset's detector layout with the experiment drawn at random around the preset.

    Pixel size (x0.45-2.2, kept within 50-200 um), distance (x0.6-1.6), point spread (0.1-0.6 px), beam
    divergence and mosaicity (x0.3-3), unit cell (x0.7-2.5), crystal strength (x0.1-1) and background
    (x0.02-3) change from frame to frame, so that spots take the sizes, shapes, densities and contrasts of
    detectors and experiments other than the preset's.
    """
    det, bg, cr, beam = base.detector, base.background, base.crystal, base.beam
    strength = _log_uniform(rng, 0.1, 1.0)
    cell_scale = _log_uniform(rng, 0.7, 2.5)
    bg_scale = _log_uniform(rng, 0.02, 3.0)
    overrides: dict[str, dict[str, object]] = {
        "crystal": {
            "hit_fraction": 1.0,
            "strength_range_photons": _scaled_strength(cr, strength),
            "mosaicity_deg": cr.mosaicity_deg * _log_uniform(rng, 0.3, 3.0),
            "cell": [*(cell_scale * a for a in cr.cell[:3]), *cr.cell[3:]],
        },
        "beam": {"divergence_mrad": beam.divergence_mrad * _log_uniform(rng, 0.3, 3.0)},
        "detector": {
            "pixel_size_mm": float(np.clip(det.pixel_size_mm * _log_uniform(rng, 0.45, 2.2), 0.05, 0.2)),
            "distance_mm": det.distance_mm * _log_uniform(rng, 0.6, 1.6),
            "psf_sigma_px": float(rng.uniform(0.1, 0.6)),
        },
        "background": _scaled_background(bg, bg_scale),
    }
    return apply_overrides(base, overrides)


def lattice_spacing_px(config: SimulationConfig) -> float:
    """Smallest spacing of low-resolution spots on the detector, in pixels: ``distance * wavelength / (a * pixel)``.

    ``a`` is the longest cell edge; near the beam the spots of neighbouring reflections lie about this far apart.
    """
    wavelength_a = HC_KEV_A / config.beam.energy_kev
    det = config.detector
    return det.distance_mm * wavelength_a / (max(config.crystal.cell[:3]) * det.pixel_size_mm)


def crowded_config(base: SimulationConfig, rng: np.random.Generator) -> SimulationConfig:
    """A hit on the preset's detector layout whose spots lie 2.5-6 pixels apart, drawn at random per frame.

    The spacing of neighbouring low-resolution spots (:func:`lattice_spacing_px`) is drawn log-uniformly in
    2.5-6 px and reached by a shorter distance (x0.3-1) and a longer unit cell, as for large complexes and
    viruses or short camera lengths; the resolution limit grows with the cell so that the number of
    reflections stays of the order of the preset's, and there is one lattice. Point spread (0.1-0.4 px),
    divergence (x0.3-1) and mosaicity (x0.5-1.5) make the spots from one to a few pixels wide; crystal
    strength (x0.2-1) and background (x0.1-2) vary too. Crowded lattices of distinct sharp spots teach the
    network that a bright spot a few pixels from another is a peak of its own.
    """
    spacing = _log_uniform(rng, 2.5, 6.0)
    distance = _log_uniform(rng, 0.3, 1.0)
    natural = lattice_spacing_px(base)
    cell_scale = natural * distance / spacing
    if cell_scale < 1.0:  # the preset's cell: the distance alone sets the spacing
        distance, cell_scale = spacing / natural, 1.0
    cr, beam, bg = base.crystal, base.beam, base.background
    strength = _log_uniform(rng, 0.2, 1.0)
    d_scale = max(1.0, cell_scale / 1.5)
    bg_scale = _log_uniform(rng, 0.1, 2.0)
    overrides: dict[str, dict[str, object]] = {
        "crystal": {
            "hit_fraction": 1.0,
            "strength_range_photons": _scaled_strength(cr, strength),
            "cell": [*(cell_scale * a for a in cr.cell[:3]), *cr.cell[3:]],
            "d_min_range_a": [d * d_scale for d in cr.d_min_range_a],
            "mosaicity_deg": cr.mosaicity_deg * _log_uniform(rng, 0.5, 1.5),
            "multi_lattice_fraction": 0.0,
        },
        "beam": {"divergence_mrad": beam.divergence_mrad * _log_uniform(rng, 0.3, 1.0)},
        "detector": {
            "distance_mm": base.detector.distance_mm * distance,
            "psf_sigma_px": float(rng.uniform(0.1, 0.4)),
        },
        "background": _scaled_background(bg, bg_scale),
    }
    return apply_overrides(base, overrides)


def sharp_config(
    base: SimulationConfig, rng: np.random.Generator, background: tuple[float, float] = (0.005, 0.3)
) -> SimulationConfig:
    """A hit on the preset's detector layout whose few-photon spots fall into one or two pixels of an almost
    empty background, drawn at random per frame.

    Point spread (0.1-0.35 px), divergence and mosaicity (x0.1-0.5, mosaic domains of at least 1 um) make the
    spots about as sharp as the pixel allows; crystal strength (x0.03-1) and background (``background``,
    by default x0.005-0.3, drawn log-uniformly) put most spots at a few to a few tens of photons on a frame of
    mostly empty pixels, as on photon-counting detectors with small pixels and short exposures. The
    detector's hot pixels stay: a sharp spot is told from a hot pixel by its faint spill into the neighbouring
    pixels.
    """
    cr, beam, bg = base.crystal, base.beam, base.background
    strength = _log_uniform(rng, 0.03, 1.0)
    overrides: dict[str, dict[str, object]] = {
        "crystal": {
            "hit_fraction": 1.0,
            "strength_range_photons": _scaled_strength(cr, strength),
            "mosaicity_deg": cr.mosaicity_deg * _log_uniform(rng, 0.1, 0.5),
            "mosaic_domain_size_um": max(cr.mosaic_domain_size_um, 1.0),
        },
        "beam": {"divergence_mrad": beam.divergence_mrad * _log_uniform(rng, 0.1, 0.5)},
        "detector": {"psf_sigma_px": float(rng.uniform(0.1, 0.35))},
        "background": _scaled_background(bg, _log_uniform(rng, *background)),
    }
    return apply_overrides(base, overrides)


def pinpoint_config(base: SimulationConfig, rng: np.random.Generator) -> SimulationConfig:
    """As :func:`sharp_config`, but on about the preset's own background (x0.3-3): spots of a few to a few tens
    of photons in one or two pixels, standing a few noise units above a background of one or more photons per
    pixel, where a finder that trusts only broad spots loses them.
    """
    return sharp_config(base, rng, background=(0.3, 3.0))


def phosphor_config(base: SimulationConfig, rng: np.random.Generator) -> SimulationConfig:
    """A hit read out behind a phosphor (Rayonix, MarCCD, sCMOS), drawn at random per frame.

    Every photon's signal spreads over the neighbouring pixels (``detector.phosphor_spread_px`` 0.5-1.5 px),
    so the photon noise is shared by neighbours; the detector integrates (counting presets become
    integrating ones) at 2-20 ADU per photon with 1-5 ADU of read noise; background (x1-30) and crystal
    strength (x0.1-1) vary.
    """
    cr, bg = base.crystal, base.background
    overrides: dict[str, dict[str, object]] = {
        "crystal": {"hit_fraction": 1.0, "strength_range_photons": _scaled_strength(cr, _log_uniform(rng, 0.1, 1.0))},
        "detector": {
            "mode": "integrating",
            "dtype": "float32",
            "gap_value": "zero",
            "gain_adu_per_photon": _log_uniform(rng, 2.0, 20.0),
            "read_noise_adu": float(rng.uniform(1.0, 5.0)),
            "adu_step": 1.0,
            "saturation_value": 1e7,
            "phosphor_spread_px": float(rng.uniform(0.5, 1.5)),
        },
        "background": _scaled_background(bg, _log_uniform(rng, 1.0, 30.0)),
    }
    return apply_overrides(base, overrides)


def variant_config(base: SimulationConfig, variant: str) -> SimulationConfig:
    """A simulator preset turned into one kind of training frame.

    ``hits``: every frame a hit. ``weak``: every frame a hit by a crystal diffracting ten times more weakly
    (shot-noise-limited spots near the threshold). ``ice``: every frame a hit with ice-Ih rings. ``blank``: no
    crystal (solvent scatter, ice on half of the frames, detector artefacts only). ``dense``: a hit by a
    crystal with a 3.5 times longer unit cell, to 3-5 A (crowded spots a few pixels apart, as from large
    complexes and viruses). ``quiet``: a weak hit on a fiftieth of the background (a few photons per spot on an
    almost empty frame, as on counting detectors with short exposures). ``varied``: a hit with the experiment
    drawn at random around the preset for each training frame (:func:`varied_config`; here, the preset's hit).
    ``compact``: a hit whose spots fall into one to three pixels (mosaic domains of at least 1 um, a third of
    the mosaicity and divergence, a point spread of 0.1 px; spot sigmas of about 0.25-0.5 px), from crystals
    up to ten times weaker, so that sharp spots are told from hot pixels by their faint spill into the
    neighbouring pixels. ``crowded``: a hit whose spots lie 2.5-6 pixels apart, drawn at random for each
    training frame (:func:`crowded_config`; here, the preset's hit). ``sharp``: a hit whose few-photon spots
    fall into one or two pixels of an almost empty background, drawn at random for each training frame
    (:func:`sharp_config`; here, the preset's hit). ``pinpoint``: as ``sharp``, on about the preset's own
    background (:func:`pinpoint_config`; here, the preset's hit). ``phosphor``: a hit read out behind a phosphor, whose
    photon noise neighbouring pixels share, drawn at random for each training frame (:func:`phosphor_config`;
    here, the preset's hit).
    """
    low, high = base.crystal.strength_range_photons
    weak = {"hit_fraction": 1.0, "strength_range_photons": [low / 10.0, high / 10.0]}
    hit = {"crystal": {"hit_fraction": 1.0}}
    bg = base.background
    overrides: dict[str, dict[str, object]] = {
        "hits": hit,
        "weak": {"crystal": weak},
        "ice": {"crystal": {"hit_fraction": 1.0}, "background": {"ice_fraction": 1.0}},
        "blank": {"crystal": {"hit_fraction": 0.0}, "background": {"ice_fraction": 0.5}},
        "dense": {
            "crystal": {
                "hit_fraction": 1.0,
                "cell": [*(3.5 * a for a in base.crystal.cell[:3]), *base.crystal.cell[3:]],
                "d_min_range_a": [3.0, 5.0],
            }
        },
        # drawn per training frame (_DRAWN); as a fixed configuration, the preset's hit
        "varied": hit,
        "crowded": hit,
        "sharp": hit,
        "pinpoint": hit,
        "phosphor": hit,
        "compact": {
            "crystal": {
                "hit_fraction": 1.0,
                "strength_range_photons": [low / 10.0, high],
                "mosaicity_deg": base.crystal.mosaicity_deg / 3.0,
                "mosaic_domain_size_um": max(base.crystal.mosaic_domain_size_um, 1.0),
            },
            "beam": {"divergence_mrad": base.beam.divergence_mrad / 3.0},
            "detector": {"psf_sigma_px": 0.1},
        },
        "quiet": {
            "crystal": weak,
            "background": _scaled_background(bg, 1.0 / 50.0),
        },
    }
    if variant not in overrides:
        raise ConfigError(f"unknown training frame variant {variant!r}; choose from {', '.join(VARIANTS)}")
    return apply_overrides(base, overrides[variant])


@dataclass(frozen=True)
class UNetTrainConfig:
    """Settings of :func:`train_unet` and of the simulated training data.

    Attributes
    ----------
    presets : tuple of str
        Simulator presets the training frames are drawn from.
    variants : tuple of str
        Kinds of frame made from each preset (:data:`VARIANTS`, see :func:`variant_config`; by default
        :data:`DEFAULT_VARIANTS`); frame ``k`` of a preset is of variant ``variants[k % len(variants)]``.
    train_frames_per_preset, val_frames_per_preset : int
        Simulated frames per preset for training and for validation (disjoint frame numbers).
    crop_size : int
        Side of the square training crops.
    crops_per_frame : int
        Crops taken from each frame.
    spot_crop_fraction : float
        Fraction of the crops centred near a target spot; the others lie anywhere on the frame.
    min_snr : float
        Spots with at least this expected SNR are targets.
    core_radius_px : float
        Pixels within this distance of a target spot's position are its target core.
    gain_range : tuple of float
        Augmentation: half of the training frames are multiplied by a gain factor drawn log-uniformly from
        this range and get a constant pedestal of up to 5 times that factor before normalisation.
    shadow_fraction : float
        Augmentation: this fraction of the training frames get an unmasked region that the X-rays do not
        reach (:func:`unlit_region`, :func:`cast_shadow`): pixels that read the detector's dark level only.
    hot_mask_fraction : float
        Augmentation: this fraction of the training frames have their hot pixels in the mask, as a detector's
        own mask or ``braggml find --hot-pixels auto`` put them there; on the others the network must tell
        them from one-pixel spots unaided. Masking them on most frames keeps the network from learning to
        doubt every sharp spot of a few photons for a hot pixel.
    epochs, batch_size : int
    learning_rate, weight_decay : float
        AdamW settings (cosine schedule over the epochs).
    pos_weight : float
        Weight of peak pixels in the binary cross-entropy.
    dice_weight : float
        Weight of the soft Dice loss added to it.
    patience : int
        Epochs without a better validation F1 before stopping.
    val_average : {"pooled", "variant"}
        Validation F1 over the counts of all crops together, or averaged over the variants of the validation
        frames (:func:`peak_f1`): pooled counts are ruled by the frames with the most spots.
    max_seconds : float or None
        Wall-clock budget of the training loop.
    flips : {1, 2, 4}
        The trained model averages its logits over this many flipped copies of a frame unless told otherwise
        (:attr:`TrainedUNet.flips`, :class:`~braggml.ml.unet.FlipAveraged`); :func:`choose_threshold` chooses
        a cut for every number of copies.
    cut_tolerance : float
        :func:`choose_threshold` takes the highest cut whose F1 is within this of the best. The F1 of whole
        validation frames changes little over a wide range of cuts, and the higher cut gives fewer false
        peaks on frames unlike the simulated ones (powder rings, blank real frames).
    seed : int
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    """

    presets: tuple[str, ...] = ("jungfrau4m", "pilatus6m")
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    train_frames_per_preset: int = 8
    val_frames_per_preset: int = 4
    crop_size: int = 128
    crops_per_frame: int = 48
    spot_crop_fraction: float = 0.4
    min_snr: float = 3.0
    core_radius_px: float = 1.5
    gain_range: tuple[float, float] = (0.5, 2.0)
    shadow_fraction: float = 0.25
    hot_mask_fraction: float = 0.0
    epochs: int = 30
    batch_size: int = 16
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    pos_weight: float = 5.0
    dice_weight: float = 0.5
    patience: int = 6
    val_average: str = "pooled"
    max_seconds: float | None = None
    flips: int = 1
    cut_tolerance: float = 0.005
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        check_flips(self.flips)
        if not 0 <= self.cut_tolerance < 1:
            raise ConfigError(f"cut_tolerance must lie in [0, 1), got {self.cut_tolerance!r}")
        object.__setattr__(self, "presets", tuple(self.presets))
        object.__setattr__(self, "variants", tuple(self.variants))
        if not self.variants or any(v not in VARIANTS for v in self.variants):
            raise ConfigError(f"variants must be chosen from {', '.join(VARIANTS)}, got {self.variants!r}")
        check_choice("val_average", self.val_average, VAL_AVERAGES)
        for name in ("spot_crop_fraction", "shadow_fraction", "hot_mask_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")
        if not 0.5 <= self.core_radius_px <= 5:
            raise ConfigError(f"core_radius_px must lie in [0.5, 5], got {self.core_radius_px!r}")
        object.__setattr__(self, "gain_range", tuple(float(g) for g in self.gain_range))
        for name in ("train_frames_per_preset", "crop_size", "crops_per_frame", "epochs", "batch_size", "patience"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.val_frames_per_preset < 0:
            raise ConfigError(f"val_frames_per_preset must be >= 0, got {self.val_frames_per_preset!r}")
        if not self.presets:
            raise ConfigError("presets must name at least one simulator preset")
        if len(self.gain_range) != 2 or not 0 < self.gain_range[0] <= self.gain_range[1]:
            raise ConfigError(f"gain_range must be (low, high) with 0 < low <= high, got {self.gain_range!r}")
        for name in ("learning_rate", "pos_weight"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.weight_decay < 0 or self.dice_weight < 0:
            raise ConfigError("weight_decay and dice_weight must be >= 0")
        resolve_device(self.device, check_only=True)


@dataclass(frozen=True, eq=False)
class CropSet:
    """Training or validation crops.

    Attributes
    ----------
    inputs : (N, 2, S, S) float32 ndarray
        Normalised crops (:attr:`NormalisedFrame.inputs`).
    target : (N, S, S) uint8 ndarray
        1 peak, 0 background, :data:`IGNORE` left out of the loss.
    spots : list of (K, 2) float ndarrays
        (row, col) of the target spots inside each crop, crop coordinates.
    variant : tuple of str
        Training-frame variant each crop was cut from (:data:`VARIANTS`); empty when not known.
    """

    inputs: NDArray[np.float32]
    target: NDArray[np.uint8]
    spots: list[NDArray[np.float64]]
    variant: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.variant and len(self.variant) != len(self.spots):
            raise ValueError(f"{len(self.variant)} variant names for {len(self.spots)} crops")

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @staticmethod
    def concatenate(parts: Sequence[CropSet]) -> CropSet:
        return CropSet(
            inputs=np.concatenate([p.inputs for p in parts]),
            target=np.concatenate([p.target for p in parts]),
            spots=[s for p in parts for s in p.spots],
            variant=tuple(v for p in parts for v in p.variant) if all(p.variant or not len(p) for p in parts) else (),
        )


def frame_target(
    frame: SimulatedFrame, min_snr: float, core_radius_px: float = 1.5
) -> tuple[NDArray[np.uint8], NDArray[np.float64]]:
    """Per-pixel target of a simulated frame and the (row, col) of its target spots.

    Pixels within ``core_radius_px`` of an observable spot with ``snr >= min_snr`` are peaks (1). Left out
    (:data:`IGNORE`): the ring out to ``core_radius_px + 1.2`` around each target core, and the footprint
    regions (8-connected) that hold no target spot. Everything else is background (0), the outer footprint of
    strong spots included, so that the network marks compact cores that keep neighbouring spots apart.
    """
    s = frame.spots
    strong = s["observable"] & (s["snr"] >= min_snr)
    spot_px = (frame.footprint & FOOTPRINT_SPOT) > 0
    h, w = spot_px.shape
    target = np.zeros((h, w), np.uint8)
    rc = np.column_stack([s["row"][strong], s["col"][strong]]).astype(np.float64)
    labels, n = ndimage.label(spot_px, structure=np.ones((3, 3), bool))
    if n:
        is_target = np.zeros(n + 1, bool)
        if rc.size:
            r = np.clip(np.rint(rc[:, 0]).astype(int), 0, h - 1)
            c = np.clip(np.rint(rc[:, 1]).astype(int), 0, w - 1)
            is_target[labels[r, c]] = True
        is_target[0] = True
        target[~is_target[labels]] = IGNORE
    if rc.size:
        outer = core_radius_px + 1.2
        reach = int(np.ceil(outer)) + 1
        dr, dc = np.mgrid[-reach : reach + 1, -reach : reach + 1]
        base_r, base_c = np.rint(rc[:, 0]).astype(int), np.rint(rc[:, 1]).astype(int)
        rows = base_r[:, None] + dr.ravel()[None, :]
        cols = base_c[:, None] + dc.ravel()[None, :]
        dist = np.hypot(rows - rc[:, :1], cols - rc[:, 1:])
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        ring = inside & (dist <= outer)
        target[rows[ring], cols[ring]] = np.maximum(target[rows[ring], cols[ring]], IGNORE)
        core = inside & (dist <= core_radius_px)
        target[rows[core], cols[core]] = 1
    return target, rc


def crops_from_frame(
    inputs: NDArray[np.float32],
    target: NDArray[np.uint8],
    spots_rc: NDArray[np.float64],
    *,
    crop_size: int,
    n_crops: int,
    rng: np.random.Generator,
    spot_fraction: float = 0.5,
) -> CropSet:
    """Random square crops of a normalised frame, ``spot_fraction`` of them centred near a target spot."""
    _, h, w = inputs.shape
    s = min(crop_size, h, w)
    out_x = np.empty((n_crops, inputs.shape[0], s, s), np.float32)
    out_t = np.empty((n_crops, s, s), np.uint8)
    spots = []
    for i in range(n_crops):
        if len(spots_rc) and rng.random() < spot_fraction:
            centre = spots_rc[rng.integers(len(spots_rc))] + rng.integers(-s // 3, s // 3 + 1, 2)
            r0 = int(np.clip(centre[0] - s // 2, 0, h - s))
            c0 = int(np.clip(centre[1] - s // 2, 0, w - s))
        else:
            r0 = int(rng.integers(0, h - s + 1))
            c0 = int(rng.integers(0, w - s + 1))
        out_x[i] = inputs[:, r0 : r0 + s, c0 : c0 + s]
        out_t[i] = target[r0 : r0 + s, c0 : c0 + s]
        inside = (
            (spots_rc[:, 0] >= r0 - 0.5) & (spots_rc[:, 0] < r0 + s - 0.5)
            & (spots_rc[:, 1] >= c0 - 0.5) & (spots_rc[:, 1] < c0 + s - 0.5)
        ) if len(spots_rc) else np.zeros(0, bool)
        spots.append(spots_rc[inside] - np.array([r0, c0], float))
    return CropSet(inputs=out_x, target=out_t, spots=spots)


def simulate_crops(
    config: UNetTrainConfig,
    *,
    frames: Sequence[int],
    augment: bool,
    norm: NormConfig | None = None,
    rng: np.random.Generator,
) -> CropSet:
    """Crops of simulated frames of every preset and variant (frame numbers ``frames`` of run seed ``config.seed``)."""
    parts = []
    for _, k, sim, maps, variant in _training_frames(config, frames):
        frame = sim.frame(k)
        image = frame.image
        lines = shadow = None
        if augment and config.shadow_fraction > 0 and rng.random() < config.shadow_fraction:
            shadow = unlit_region(maps.mask.shape, sim.layout.beam_rowcol, rng)
            image = cast_shadow(sim, frame, shadow, rng)
        if augment and rng.random() < 0.5:  # half of the frames as recorded, half rescaled
            lo, hi = config.gain_range
            g = float(np.exp(rng.uniform(math.log(lo), math.log(hi))))
            image = image.astype(np.float32) * np.float32(g) + np.float32(rng.uniform(0, 5) * g)
        if augment and rng.random() < 0.5:
            image, lines = faulty_lines(image, maps.panel_id, maps.mask, rng)
        mask = maps.mask
        if augment and config.hot_mask_fraction > 0 and rng.random() < config.hot_mask_fraction:
            mask = mask | (sim.layout.hot_photons > 0)
        nf = normalise_frame(image, mask, maps=maps, config=norm)
        target, rc = frame_target(frame, config.min_snr, config.core_radius_px)
        target[nf.bad & (target == 1)] = IGNORE
        if lines is not None:
            target[lines & (target == 1)] = IGNORE
        if shadow is not None:  # a spot in the shadow is dimmed to an unknown degree: neither peak nor background
            target[shadow & (target == 1)] = IGNORE
        crops = crops_from_frame(
            nf.inputs,
            target,
            rc,
            crop_size=config.crop_size,
            n_crops=config.crops_per_frame,
            rng=rng,
            spot_fraction=config.spot_crop_fraction,
        )
        parts.append(replace(crops, variant=(variant,) * len(crops)))
    if not parts:  # no frames: an empty set of the configured crop size
        s = config.crop_size
        return CropSet(inputs=np.zeros((0, 2, s, s), np.float32), target=np.zeros((0, s, s), np.uint8), spots=[])
    return CropSet.concatenate(parts)


def faulty_lines(
    image: NDArray,
    panel_id: NDArray[np.int32],
    bad: NDArray[np.bool_],
    rng: np.random.Generator,
    n_lines: tuple[int, int] = (3, 9),
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """A copy of a frame with unmasked faulty pixel lines, and where they are.

    Real detectors show rows and columns that read low (dead or badly corrected readout lines, a panel's
    first row) or high (double-size pixels at sensor edges, bright columns), often along a panel edge and
    rarely in the mask. Each line is a stretch of a row or column inside one panel, scaled by a factor in
    [0, 0.3] or [1.5, 3]; half of them lie on a panel's border.
    """
    whole = np.issubdtype(np.asarray(image).dtype, np.integer)
    out = np.asarray(image, np.float32).copy()
    where = np.zeros(out.shape, bool)
    h, w = out.shape
    ids = np.unique(panel_id[panel_id >= 0])
    if ids.size == 0:
        return out, where
    for _ in range(int(rng.integers(n_lines[0], n_lines[1] + 1))):
        rows, cols = np.nonzero(panel_id == ids[rng.integers(ids.size)])
        r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
        along_row = bool(rng.random() < 0.5)
        on_edge = bool(rng.random() < 0.5)
        if along_row:
            r = (r0 if rng.random() < 0.5 else r1) if on_edge else int(rng.integers(r0, r1 + 1))
            length = int(rng.integers(32, c1 - c0 + 2))
            start = int(rng.integers(c0, c1 - length + 2))
            sel = (slice(r, r + 1), slice(start, start + length))
        else:
            c = (c0 if rng.random() < 0.5 else c1) if on_edge else int(rng.integers(c0, c1 + 1))
            length = int(rng.integers(32, r1 - r0 + 2))
            start = int(rng.integers(r0, r1 - length + 2))
            sel = (slice(start, start + length), slice(c, c + 1))
        factor = rng.uniform(0.0, 0.3) if rng.random() < 0.6 else rng.uniform(1.5, 3.0)
        out[sel] *= np.float32(factor)
        if whole:  # counts stay whole numbers
            out[sel] = np.rint(out[sel])
        where[sel] = True
    where &= ~bad
    return out, where


def unlit_region(
    shape: tuple[int, int], beam_rowcol: tuple[float, float], rng: np.random.Generator
) -> NDArray[np.bool_]:
    """A random region of a frame that the X-rays do not reach and that no mask covers.

    One of three kinds, equally often: the pixels outside a circle about the beam (the corners outside a round
    active area or an exit window), the pixels beyond a straight edge (a detector partly behind a frame or a
    shielding plate) - each 5-40 % of the frame - or a straight band 4-80 px wide running outwards from near
    the beam (a beamstop arm, a nozzle or a cable left out of the mask).
    """
    h, w = shape
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = int(rng.integers(3))
    share = rng.uniform(0.05, 0.4)
    if kind == 0:
        centre_r, centre_c = beam_rowcol[0] + rng.normal(0, 0.05 * h), beam_rowcol[1] + rng.normal(0, 0.05 * w)
        dist = np.hypot(rows - np.float32(centre_r), cols - np.float32(centre_c))
        return dist > np.quantile(dist, 1.0 - share)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    sin, cos = np.float32(math.sin(angle)), np.float32(math.cos(angle))
    dr, dc = rows - np.float32(beam_rowcol[0]), cols - np.float32(beam_rowcol[1])
    along = dr * sin + dc * cos  # distance from the beam along the angle
    if kind == 1:
        return along > np.quantile(along, 1.0 - share)
    across = dc * sin - dr * cos
    return (along >= rng.uniform(0.0, 100.0)) & (np.abs(across) <= rng.uniform(2.0, 40.0))


def cast_shadow(
    sim: Simulator,
    frame: SimulatedFrame,
    region: NDArray[np.bool_],
    rng: np.random.Generator,
    transmission: tuple[float, float] = (0.0, 0.2),
) -> NDArray:
    """A new readout of ``frame`` in which ``region`` receives a fraction of its X-rays.

    The expected photons in the region (spots and diffuse scatter, not the hot pixels, which are the
    detector's own) are scaled by a transmission drawn from ``transmission``, and the whole frame is read out
    again (:meth:`Simulator.detect`: Poisson, gain, read noise, panel offsets, gaps), so that the region holds
    the detector's dark level and noise, as unlit pixels do, in a frame whose panels keep one offset each.
    The new readout has no cosmic rays.
    """
    t = np.float32(rng.uniform(*transmission))
    hot = sim.layout.hot_photons
    expected = frame.expected_photons.copy()
    expected[region] = (expected[region] - hot[region]) * t + hot[region]
    return sim.detect(np.maximum(expected, 0.0), rng)


#: Variants whose experiment is drawn anew for every training frame.
_DRAWN: dict[str, Callable[[SimulationConfig, np.random.Generator], SimulationConfig]] = {
    "varied": varied_config,
    "crowded": crowded_config,
    "sharp": sharp_config,
    "pinpoint": pinpoint_config,
    "phosphor": phosphor_config,
}


def _training_frames(config: UNetTrainConfig, frames: Sequence[int]):
    """(preset, frame number, simulator, pixel maps, variant) of every frame, each frame of its variant."""
    for p, name in enumerate(config.presets):
        base = get_preset(name)
        sims = {v: Simulator(variant_config(base, v), seed=config.seed) for v in config.variants}
        maps = next(iter(sims.values())).layout.pixel_maps(next(iter(sims.values())).wavelength_a)
        for k in frames:
            variant = config.variants[int(k) % len(config.variants)]
            if variant in _DRAWN:  # a new experiment for every frame, the same for a given seed and frame
                rng = np.random.default_rng([config.seed, p, int(k)])
                sim = Simulator(_DRAWN[variant](base, rng), seed=config.seed)
                yield name, int(k), sim, sim.layout.pixel_maps(sim.wavelength_a), variant
            else:
                yield name, int(k), sims[variant], maps, variant


def _augment(x: torch.Tensor, t: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips and transposition of a batch (same for all crops of the batch), and random masked blocks.

    A quarter of the crops get a masked rectangle (bad-pixel channel 1, input 0, left out of the loss), as a
    user mask, beamstop shadow or panel gap would cut a frame anywhere.
    """
    flips = torch.rand(3, generator=generator) < 0.5
    if flips[0]:
        x, t = x.flip(-1), t.flip(-1)
    if flips[1]:
        x, t = x.flip(-2), t.flip(-2)
    if flips[2] and x.shape[-1] == x.shape[-2]:
        x, t = x.transpose(-1, -2), t.transpose(-1, -2)
    n, c, h, w = x.shape
    chosen = torch.nonzero(torch.rand(n, generator=generator) < 0.25).flatten()
    if chosen.numel() and c > 1:
        x, t = x.clone(), t.clone()
        for i in chosen.tolist():
            size = torch.randint(4, max(h // 3, 5), (2,), generator=generator)
            r0 = int(torch.randint(0, h - int(size[0]) + 1, (1,), generator=generator))
            c0 = int(torch.randint(0, w - int(size[1]) + 1, (1,), generator=generator))
            block = (i, slice(r0, r0 + int(size[0])), slice(c0, c0 + int(size[1])))
            x[block[0], 0, block[1], block[2]] = 0.0
            x[block[0], 1, block[1], block[2]] = 1.0
            t[block] = IGNORE
    return x, t


def _loss(logits: torch.Tensor, target: torch.Tensor, pos_weight: float, dice_weight: float) -> torch.Tensor:
    valid = (target != IGNORE).float()
    y = (target == 1).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, y, weight=valid * (1.0 + (pos_weight - 1.0) * y), reduction="sum"
    ) / valid.sum().clamp(min=1.0)
    if dice_weight == 0:
        return bce
    p = torch.sigmoid(logits) * valid
    inter = (p * y).sum()
    dice = 1.0 - (2.0 * inter + 1.0) / (p.sum() + y.sum() + 1.0)
    return bce + dice_weight * dice


def _predict(model: UNet, inputs: NDArray[np.float32], device: torch.device, batch_size: int) -> NDArray[np.float32]:
    model.eval()
    out = []
    with torch.inference_mode():
        for k in range(0, len(inputs), batch_size):
            x = torch.from_numpy(inputs[k : k + batch_size]).to(device)
            out.append(torch.sigmoid(model(x))[:, 0].cpu().numpy())
    return np.concatenate(out) if out else np.empty((0, *inputs.shape[2:]), np.float32)


def _region_centroids(
    prob: NDArray[np.float32],
    residual: NDArray[np.floating],
    background: NDArray[np.floating],
    noise: NDArray[np.floating],
    bad: NDArray[np.bool_],
    panel_id: NDArray[np.integer],
    threshold: float,
    grow_px: float,
) -> NDArray[np.float64]:
    """(row, col) of the regions above the cut, unsplit and widened by ``grow_px`` (as the finder measures them).

    Returns
    -------
    (P, 2) float64 ndarray
    """
    candidates = gather_candidates(
        prob, residual, background, noise, bad, panel_id, float(threshold), candidate_reach(grow_px)
    )
    cols = extract_peaks(candidates, min_pixel_count=1, split=False, grow_px=grow_px).columns
    return np.column_stack([cols["row"], cols["col"]])


def peak_f1(
    prob: NDArray[np.float32],
    crops: CropSet,
    threshold: float,
    *,
    radius_px: float = 2.0,
    average: str = "pooled",
) -> tuple[float, float, float]:
    """Peak-level precision, recall and F1 of probability maps of crops against their target spots.

    Parameters
    ----------
    prob : (N, S, S) float ndarray
        Probability maps of the crops.
    crops : CropSet
    threshold : float
        Probability cut.
    radius_px : float
        Largest distance of a found peak from the target spot it matches.
    average : {"pooled", "variant"}
        ``"pooled"``: the counts of all crops together, so that crops of crowded frames weigh most.
        ``"variant"``: precision, recall and F1 of each variant's crops (:attr:`CropSet.variant`), averaged over
        the variants that hold target spots, so that every kind of frame weighs the same.

    Returns
    -------
    precision, recall, f1 : float
    """
    check_choice("average", average, VAL_AVERAGES)
    counts = _peak_counts(prob, crops, threshold, radius_px)
    if not crops.variant:
        return _averaged_f1({"": counts.sum(axis=0)}, average)
    names = np.asarray(crops.variant)
    return _averaged_f1({v: counts[names == v].sum(axis=0) for v in dict.fromkeys(crops.variant)}, average)


def _averaged_f1(counts: dict[str, NDArray[np.int64]], average: str) -> tuple[float, float, float]:
    """Precision, recall and F1 from (true positives, found, true) counts per variant: of their sum
    (``"pooled"``), or the mean over the variants that hold true peaks (``"variant"``; the sum when none does)."""
    groups = [c for c in counts.values() if c[2] > 0] if average == "variant" else []
    if not groups:
        groups = [sum(counts.values(), np.zeros(3, np.int64))]
    precision, recall, f1 = np.mean([_f1(*c) for c in groups], axis=0)
    return float(precision), float(recall), float(f1)


def _f1(tp: float, n_found: float, n_true: float) -> tuple[float, float, float]:
    precision = tp / n_found if n_found else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return float(precision), float(recall), float(f1)


def _peak_counts(prob: NDArray[np.float32], crops: CropSet, threshold: float, radius_px: float) -> NDArray[np.int64]:
    """(N, 3) true positives, found peaks and target spots of every crop."""
    out = np.zeros((len(prob), 3), np.int64)
    shape = prob.shape[1:]
    background, noise = np.zeros(shape, np.float32), np.ones(shape, np.float32)
    panel = np.zeros(shape, np.int32)
    for i, (p, x, spots) in enumerate(zip(prob, crops.inputs, crops.spots)):
        # the crops' probabilities are not zeroed on bad pixels: those above the cut stay region pixels,
        # the others are never grown onto
        bad = (x[1] > 0.5) & ~(p > float(threshold))
        rc = _region_centroids(p, np.sinh(x[0]), background, noise, bad, panel, threshold, 2.0)
        fi, _ = match_frame(rc, spots, radius_px)
        out[i] = len(fi), len(rc), len(spots)
    return out


def train_unet(
    train: CropSet,
    val: CropSet,
    *,
    config: UNetTrainConfig | None = None,
    model_config: UNetConfig | None = None,
    norm: NormConfig | None = None,
    thresholds: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
    progress: Callable[[dict[str, float]], None] | None = None,
    initial: TrainedUNet | None = None,
) -> TrainedUNet:
    """Train a :class:`UNet` on crops; keep the epoch with the best validation peak F1.

    Parameters
    ----------
    train, val : CropSet
        Training and validation crops (from different frames).
    config : UNetTrainConfig, optional
    model_config : UNetConfig, optional
    norm : NormConfig, optional
        The normalisation the crops were made with (recorded in the model).
    thresholds : sequence of float
        Probability cuts tried on the validation crops each epoch.
    progress : callable, optional
        Called after every epoch with that epoch's figures.
    initial : TrainedUNet, optional
        Start from this network's weights (fine-tuning); its architecture replaces ``model_config``.

    Returns
    -------
    TrainedUNet
        Weights of the best epoch (the last one when there are no validation crops), the best cut as
        ``threshold`` and the training history in ``info``.
    """
    cfg = config or UNetTrainConfig()
    if len(train) == 0:
        raise ConfigError("no training crops")
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    if initial is not None:
        model = copy.deepcopy(initial.model).to(device)
    else:
        model = UNet(model_config).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=cfg.learning_rate, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.1
    )
    x_all = torch.from_numpy(train.inputs)
    t_all = torch.from_numpy(train.target.astype(np.int64))
    best_state, best_f1, best_thr, best_epoch = copy.deepcopy(model.state_dict()), -1.0, 0.5, 0
    history: list[dict[str, float]] = []
    start = time.monotonic()
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        total = 0.0
        for k in range(0, len(train), cfg.batch_size):
            idx = order[k : k + cfg.batch_size]
            x, t = _augment(x_all[idx], t_all[idx], generator)
            x, t = x.to(device), t.to(device)
            loss = _loss(model(x)[:, 0], t, cfg.pos_weight, cfg.dice_weight)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        record: dict[str, float] = {"epoch": float(epoch), "loss": total / len(train)}
        if len(val):
            prob = _predict(model, val.inputs, device, cfg.batch_size)
            scores = [(peak_f1(prob, val, thr, average=cfg.val_average), thr) for thr in thresholds]
            (precision, recall, f1), thr = max(scores, key=lambda s: s[0][2])
            record.update(val_precision=precision, val_recall=recall, val_f1=f1, threshold=thr)
        else:
            f1, thr = float(epoch), 0.5
        record["seconds"] = time.monotonic() - start
        history.append(record)
        log.info("epoch %d: %s", epoch, record)
        if progress is not None:
            progress(record)
        if f1 > best_f1:
            best_state, best_f1, best_thr, best_epoch = copy.deepcopy(model.state_dict()), f1, thr, epoch
        elif epoch - best_epoch >= cfg.patience:
            break
        if cfg.max_seconds is not None and time.monotonic() - start > cfg.max_seconds:
            break
    model.load_state_dict(best_state)
    model.eval()
    info = {
        "train_config": asdict(cfg),
        "history": history,
        "best_epoch": best_epoch,
        "val_f1": best_f1 if len(val) else None,
        "n_train_crops": len(train),
        "n_val_crops": len(val),
        "target": f"footprints of observable spots with expected snr >= {cfg.min_snr}",
    }
    return TrainedUNet(model=model, norm=norm or NormConfig(), threshold=float(best_thr), info=info, flips=cfg.flips)


def choose_threshold(
    trained: TrainedUNet,
    config: UNetTrainConfig,
    *,
    frames: Sequence[int],
    thresholds: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98),
    flips: Sequence[int] = tuple(FLIPS),
    radius_px: float = 2.0,
    grow_px: float = 2.0,
) -> tuple[float, list[dict[str, float]]]:
    """Probability cuts for the best peak F1 on whole simulated frames, one for each number of flipped copies
    (sets ``trained.cuts``, and ``trained.threshold`` to the cut for ``trained.flips`` copies).

    Crops centred near spots over-represent peaks, so a cut chosen on them is too lax for whole frames; this
    runs the finder's full path (normalisation, tiled inference on ``n`` flipped copies for each ``n`` of
    ``flips``, regions within panels widened by ``grow_px``, centroids) on frames ``frames`` of every preset
    and variant of ``config`` and scores each cut against the spots with ``snr >= config.min_snr``. A peak
    found at any other simulated spot (weaker, or centred on a bad pixel: a real reflection, left out of the
    training target too) counts as neither a true nor a false positive, as in
    :func:`braggml.evaluate.metrics.evaluate_peaks` with ``optional``. The F1 is that of all frames' peaks
    together, or the mean over the variants, as ``config.val_average`` says (:func:`peak_f1`). The cut taken
    is the highest whose F1 is within ``config.cut_tolerance`` of the best; the one with the best F1 is
    recorded too (``trained.info["threshold_choice"]``).

    Returns
    -------
    threshold : float
        The cut for ``trained.flips`` copies (which must be among ``flips``).
    scores : list of dict
        Precision, recall and F1 of each cut, for ``trained.flips`` copies (every count's are in
        ``trained.info["threshold_choice"]["by_flips"]``).
    """
    own = trained.flips
    counts_of = [check_flips(n) for n in flips]
    if own not in counts_of:
        raise ConfigError(f"flips must include the model's own number of copies ({own}), got {tuple(flips)!r}")
    # (copies, variant) -> (cuts, 3) true positives, found, true
    counts: dict[tuple[int, str], NDArray[np.int64]] = {}
    try:
        for _, k, sim, maps, variant in _training_frames(config, frames):
            frame = sim.frame(k)
            _, truth = frame_target(frame, config.min_snr, config.core_radius_px)
            s = frame.spots
            weaker = ~(s["observable"] & (s["snr"] >= config.min_snr))
            weaker_rc = np.column_stack([s["row"][weaker], s["col"][weaker]]).astype(np.float64)
            norm = None  # normalised once, for every count of copies
            for n in counts_of:
                trained.flips = n
                prob, norm = trained.probability(frame.image, maps.mask, maps=maps, normalised=norm)
                c = counts.setdefault((n, variant), np.zeros((len(thresholds), 3), np.int64))
                for i, thr in enumerate(thresholds):
                    rc = _region_centroids(
                        prob, norm.residual, norm.background, norm.noise, norm.bad, norm.panel_id, thr, grow_px
                    )
                    fi, _ = match_frame(rc, truth, radius_px)
                    left = np.setdiff1d(np.arange(len(rc)), fi)
                    at_weaker, _ = match_frame(rc[left], weaker_rc, radius_px)
                    c[i] += len(fi), len(rc) - len(at_weaker), len(truth)
    finally:
        trained.flips = own
    by_flips: dict[str, dict[str, Any]] = {}
    cuts: dict[int, float] = {}
    for n in counts_of:
        scores = []
        for i, thr in enumerate(thresholds):
            precision, recall, f1 = _averaged_f1(
                {v: c[i] for (m, v), c in counts.items() if m == n}, config.val_average
            )
            scores.append(
                {"threshold": float(thr), "precision": float(precision), "recall": float(recall), "f1": float(f1)}
            )
        best = max(scores, key=lambda r: r["f1"])
        chosen = max(
            (r for r in scores if r["f1"] >= best["f1"] - config.cut_tolerance), key=lambda r: r["threshold"]
        )
        cuts[n] = chosen["threshold"]
        by_flips[str(n)] = {"scores": scores, "cut": chosen["threshold"], "best_f1_cut": best["threshold"]}
    trained.cuts = cuts
    trained.threshold = cuts[own]
    mine = by_flips[str(own)]
    trained.info["threshold_choice"] = {
        "frames": [int(k) for k in frames],
        "scores": mine["scores"],
        "best_f1_cut": mine["best_f1_cut"],
        "flips": own,
        "cut_tolerance": config.cut_tolerance,
        "by_flips": by_flips,
    }
    return cuts[own], mine["scores"]


def average_weights(models: Sequence[TrainedUNet]) -> TrainedUNet:
    """One network whose weights and batch-norm statistics are the mean of those of ``models``.

    Networks fine-tuned from one trained network lie close together in weight space, and their average
    usually does better than each of them, at the cost of one network. The models must share the
    architecture and the input normalisation. The average runs one flipped copy and keeps the first model's
    cut, with no other cuts: choose them again on validation frames (:func:`choose_threshold`). Its ``info``
    lists what each model was trained on, under ``"averaged_from"``.

    Raises
    ------
    ConfigError
        When ``models`` is empty, or the models differ in architecture or normalisation.
    """
    models = list(models)
    if not models:
        raise ConfigError("average_weights needs at least one model")
    first = models[0]
    for m in models[1:]:
        if m.config != first.config or m.norm != first.norm:
            raise ConfigError(
                f"cannot average models of different architectures or normalisations: {first.config}, "
                f"{first.norm} against {m.config}, {m.norm}"
            )
    states = [{k: v.detach().cpu() for k, v in m.model.state_dict().items()} for m in models]
    averaged = {}
    for name, value in states[0].items():
        if value.is_floating_point():
            total = sum(state[name].to(torch.float64) for state in states)
            averaged[name] = (total / len(states)).to(value.dtype)
        else:  # counters (batches seen by batch normalisation)
            averaged[name] = value.clone()
    model = UNet(first.config)
    model.load_state_dict(averaged)
    model.eval()
    info = {"averaged_from": [m.info.get("trained_on") for m in models]}
    return TrainedUNet(model=model, norm=first.norm, threshold=first.threshold, info=info).to(first.device)
