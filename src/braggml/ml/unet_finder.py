"""The ``unet`` peak finder: whole-frame segmentation by a trained :class:`~braggml.ml.unet.UNet`.

Every pixel gets a peak probability (tiled inference with overlap, no seams); peaks are the connected regions
above the probability cut, never crossing a panel border, measured on the background-subtracted original
pixels: centroid, integrated intensity, background, SNR, and as score the highest probability in the region.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ..classical._common import check_choice, check_non_negative, check_positive
from ..errors import ConfigError
from ..finder import PeakFinder
from ..geometry import PixelMaps
from ..peaks import PeakList

if TYPE_CHECKING:  # torch is imported only when a model is loaded, not when the finder is looked up
    from ..classical.rings import RingEvidence
    from .unet import NormalisedFrame, TrainedUNet
    from .unet_batch import BatchedUNetFinder
    from .unet_extract import CandidatePixels, Regions

__all__ = [
    "UNetFinderConfig",
    "UNetFinder",
    "counting_gain",
    "extract_regions",
    "finish_peaks",
    "gather_level",
    "needs_ring_evidence",
    "photon_counting",
    "photon_seed_tests",
    "wants_photon_spots",
]

#: The allowed ``flips`` (the keys of :data:`braggml.ml.unet.FLIPS`; kept here so that the finder is looked up
#: without importing torch).
_FLIP_COUNTS = (1, 2, 4)


@dataclass(frozen=True)
class UNetFinderConfig:
    """Parameters of :class:`UNetFinder`.

    Attributes
    ----------
    model_path : str
        U-Net model file; empty for the model shipped with braggml.
    probability_threshold : float or None
        Pixels above this probability form peaks; None uses the model's own cut (chosen on validation frames).
    flips : {1, 2, 4} or None
        The network's logits are averaged over this many flipped copies of the frame
        (:class:`~braggml.ml.unet.FlipAveraged`): a little more found near the cut, for one pass of the
        network per copy. The model's cut for that many copies is used when it has one (the shipped model
        has cuts for 1, 2 and 4). None uses the model's own count (1 for the shipped model).
    min_pixel_count : int
        Smallest region kept.
    grow_px : float
        Regions are widened by this many pixels (never into another region, a bad pixel or another panel)
        before centroid, intensity and SNR are measured, so that a spot's tails count.
    split_regions : bool
        Split regions holding several local maxima of the background-subtracted frame (crowded spots whose
        cores touch) into one peak per maximum (:func:`~braggml.ml.unet_extract.extract_peaks`).
    masked_peaks : {"drop", "keep"}
        ``"drop"``: drop regions all of whose pixels lie along bad pixels, a panel gap, another panel or the
        frame's edge (their maximum may be hidden, or they are edge artefacts), as the classical finders do.
    lone_pixels : {"drop", "keep"}
        ``"drop"``: drop regions whose brightest pixel is so much brighter than its neighbours that no spot
        could have made it (hot pixels the mask lacks, one-pixel zingers; see
        :func:`~braggml.ml.unet_extract.extract_peaks`), as peakfinder8's two-pixel minimum does.
    significance_snr : float
        On sparse backgrounds (under a photon per pixel) a region must be a Poisson excess of this many sigmas in
        its brightest pixels, their 3 x 3 block or the region itself, as the classical finders' peaks must
        (:func:`~braggml.ml.unet_extract.extract_peaks`); loose clusters of a few photons are dropped as
        ``not_significant``. On photon-counting frames, whose tests count one photon per count
        (:func:`counting_gain`), it asks :data:`COUNTING_SIGNIFICANCE_MARGIN` more. On other backgrounds the region
        must be an excess of :data:`SIGNIFICANCE_FLOOR` sigmas (or of ``significance_snr`` when lower). 0 turns both
        off.
    second_cut : float
        A second, lower probability cut: regions above it that hold no pixel above the model's cut are peaks
        too when they are a Poisson excess of ``second_cut_snr`` sigmas in the same compact apertures (spots
        the network is unsure of but the pixels show clearly; on detectors unlike those of its training
        these are mostly faint sharp spots). 0 turns it off.
    second_cut_snr : float
        Significance those regions need, in normal sigmas.
    photon_spots : {"auto", "on", "off"}
        Spots the network left below its second cut, found by their photons: on a sparse background (under a
        photon per pixel) every local maximum of two photons or more that lies away from the network's marks
        (:func:`~braggml.ml.unet_extract.photon_seeds`) becomes a peak when the same compact apertures hold a
        Poisson excess of ``second_cut_snr`` sigmas and the 8 neighbours of its pixel an excess of
        :data:`PHOTON_SPILL_SIGMA`, over the frame's background raised by what the pixels around its 3 x 3
        block hold above it (:func:`~braggml.ml.unet_extract.screen_seeds`). On a photon-counting detector such
        a cluster of a few photons can only be photons: there is no read noise, and a cosmic ray or zinger
        counts once per pixel it crosses, where an integrating detector records its whole charge, a one-pixel
        "spot" of tens of photons. ``"auto"`` applies it to photon-counting frames (:func:`photon_counting`:
        whole-number counts of about one count per photon, independent pixels); ``"on"`` to every frame whose
        gain is known.
    reject_powder_rings : bool
        Drop peaks at radii where much of the annulus stands above the neighbouring radii (powder, kapton
        or ice rings), as the classical finders do (:func:`braggml.classical.rings.ring_evidence`).
    ice_rings : {"auto", "reject", "off"}
        Peaks at ice-Ih resolutions (needs a known geometry): ``"auto"`` drops them at the ice rings the frame
        shows, ``"reject"`` at every ice ring.
    ice_ring_width_inv_a : float
        Half-width of an ice ring in 1/d (inverse Angstrom).
    powder_ring_contrast : float
        A pixel counts towards a ring when it stands this many background sigmas above the neighbouring
        radii.
    backstop : {"off", "cnn"}
        ``"cnn"``: the patch CNN finder (:class:`~braggml.ml.finders.CNNFinder`, with the same ring rules) runs
        on the frame too, and its peaks of score ``backstop_score`` or more that lie more than
        :data:`BACKSTOP_RADIUS_PX` from every U-Net peak are added. The two learned finders miss different
        spots (faint sharp ones are the network's gap on unfamiliar detectors), for the CNN finder's time
        on top. Frames then go through the network one at a time, also on a CUDA device.
    backstop_score : float
        CNN peak score an added peak needs.
    backstop_model : str
        CNN model file of the backstop; empty for the one shipped with braggml.
    tile_size : int
        Side of the inference tiles in pixels.
    overlap : int
        Overlap of neighbouring tiles in pixels.
    batch_size : int
        Tiles per forward pass.
    frame_batch : int
        On a CUDA device, runs of frames go through the network this many whole frames at a time, with the
        normalisation on the device too (:class:`~braggml.ml.unet_batch.BatchedUNetFinder`).
    extract_workers : int
        On a CUDA device, threads that extract the peaks of one batch while the device works on the next
        (0: in the calling thread).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    precision : {"auto", "float32", "bfloat16", "float16"}
        Arithmetic of the network: ``"auto"`` takes float16 on CUDA, bfloat16 on CPUs with native bfloat16
        instructions and float32 elsewhere (see :func:`braggml.ml.unet.inference_precision`).
    """

    model_path: str = ""
    probability_threshold: float | None = None
    flips: int | None = None
    min_pixel_count: int = 1
    grow_px: float = 2.0
    split_regions: bool = True
    masked_peaks: str = "drop"
    lone_pixels: str = "drop"
    significance_snr: float = 5.0
    second_cut: float = 0.3
    second_cut_snr: float = 6.0
    photon_spots: str = "auto"
    reject_powder_rings: bool = True
    ice_rings: str = "auto"
    ice_ring_width_inv_a: float = 0.004
    powder_ring_contrast: float = 1.0
    backstop: str = "off"
    backstop_score: float = 0.9
    backstop_model: str = ""
    tile_size: int = 1024
    overlap: int = 64
    batch_size: int = 4
    frame_batch: int = 8
    extract_workers: int = 1
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.probability_threshold is not None and not 0 < self.probability_threshold < 1:
            raise ConfigError(f"probability_threshold must lie in (0, 1), got {self.probability_threshold!r}")
        if self.flips is not None and (isinstance(self.flips, bool) or self.flips not in _FLIP_COUNTS):
            raise ConfigError(f"flips must be one of {', '.join(map(str, _FLIP_COUNTS))}, got {self.flips!r}")
        if self.min_pixel_count < 1:
            raise ConfigError(f"min_pixel_count must be >= 1, got {self.min_pixel_count!r}")
        if not np.isfinite(self.grow_px) or not 0 <= self.grow_px <= 10:
            raise ConfigError(f"grow_px must lie in [0, 10], got {self.grow_px!r}")
        check_choice("ice_rings", self.ice_rings, ("auto", "reject", "off"))
        check_choice("masked_peaks", self.masked_peaks, ("drop", "keep"))
        check_choice("lone_pixels", self.lone_pixels, ("drop", "keep"))
        check_non_negative("significance_snr", self.significance_snr)
        if not 0 <= self.second_cut < 1:
            raise ConfigError(f"second_cut must lie in [0, 1), got {self.second_cut!r}")
        check_positive("second_cut_snr", self.second_cut_snr)
        check_choice("photon_spots", self.photon_spots, ("auto", "on", "off"))
        check_choice("precision", self.precision, ("auto", "float32", "bfloat16", "float16"))
        check_positive("ice_ring_width_inv_a", self.ice_ring_width_inv_a)
        check_positive("powder_ring_contrast", self.powder_ring_contrast)
        check_choice("backstop", self.backstop, ("off", "cnn"))
        if not 0 <= self.backstop_score <= 1:
            raise ConfigError(f"backstop_score must lie in [0, 1], got {self.backstop_score!r}")
        if not isinstance(self.backstop_model, str):
            raise ConfigError(f"backstop_model must be a path, got {self.backstop_model!r}")
        check_positive("tile_size", self.tile_size)
        check_positive("batch_size", self.batch_size)
        check_positive("frame_batch", self.frame_batch)
        if int(self.extract_workers) != self.extract_workers or self.extract_workers < 0:
            raise ConfigError(f"extract_workers must be an integer >= 0, got {self.extract_workers!r}")
        if not 0 <= self.overlap < self.tile_size:
            raise ConfigError(f"overlap must lie in [0, tile_size), got {self.overlap!r}")
        text = str(self.device).lower()
        if not (text.startswith("cuda:") and text[5:].isdigit()):
            check_choice("device", text, ("auto", "cpu", "cuda"))


class UNetFinder(PeakFinder):
    """Peaks as connected regions of a U-Net's per-pixel peak probability.

    Examples
    --------
    >>> finder = UNetFinder(probability_threshold=0.6, device="cpu")  # doctest: +SKIP
    >>> peaks = finder.find(image, mask, maps=maps)  # doctest: +SKIP
    """

    name = "unet"
    config_class = UNetFinderConfig

    def __init__(self, config: Any = None, **params: Any) -> None:
        super().__init__(config, **params)
        self._model: TrainedUNet | None = None
        self._backstop: PeakFinder | None = None
        self.last_probability: NDArray[np.float32] | None = None
        self.last_backstop_added = 0
        self._rejected: dict[str, int] = {}

    @property
    def last_rejections(self) -> dict[str, int]:
        """Regions of the last frame dropped, by cause (``"powder_ring"``, ``"ice_ring"``, ``"masked"``,
        ``"lone_pixel"``, ``"not_significant"``)."""
        return dict(self._rejected)

    @property
    def model(self) -> TrainedUNet:
        """The loaded model (read on first use)."""
        if self._model is None:
            from .unet import DEFAULT_MODEL_PATH, load_unet

            path = self.config.model_path or DEFAULT_MODEL_PATH
            self._model = load_unet(path, device=self.config.device)
            if self.config.flips is not None:
                self._model.use_flips(self.config.flips)
        return self._model

    def probability(
        self, image: NDArray, mask: NDArray[np.bool_] | None = None, *, maps: PixelMaps | None = None
    ) -> tuple[NDArray[np.float32], NormalisedFrame]:
        """Per-pixel peak probability of a frame and its normalised form."""
        cfg = self.config
        return self.model.probability(
            image,
            mask,
            maps=maps,
            tile_size=cfg.tile_size,
            overlap=cfg.overlap,
            batch_size=cfg.batch_size,
            precision=cfg.precision,
        )

    def batch_runner(
        self,
        shape: tuple[int, int],
        *,
        mask: NDArray[np.bool_] | None = None,
        maps: PixelMaps | None = None,
    ) -> BatchedUNetFinder | None:
        """A runner that finds the peaks of a stream of frames of this shape in batches on the device, or None
        when frames are better taken one at a time (the model is not on a CUDA device)."""
        if self.model.device.type != "cuda" or self.config.backstop != "off":
            return None
        from .unet_batch import BatchedUNetFinder

        cfg = self.config
        return BatchedUNetFinder(
            self, shape, maps=maps, mask=mask, batch_size=cfg.frame_batch, workers=cfg.extract_workers
        )

    def find(
        self,
        image: NDArray,
        mask: NDArray[np.bool_] | None = None,
        *,
        maps: PixelMaps | None = None,
    ) -> PeakList:
        prob, norm = self.probability(image, mask, maps=maps)
        self.last_probability = prob
        peaks = self.peaks_from_probability(prob, norm)
        if self.config.backstop == "off":
            return peaks
        return self._add_backstop(peaks, image, mask, maps)

    def _add_backstop(
        self, peaks: PeakList, image: NDArray, mask: NDArray[np.bool_] | None, maps: PixelMaps | None
    ) -> PeakList:
        """``peaks`` and the backstop finder's sure peaks that lie away from all of them."""
        from scipy.spatial import cKDTree

        cfg = self.config
        if self._backstop is None:
            from .finders import CNNFinder

            self._backstop = CNNFinder(
                model_path=cfg.backstop_model,
                device=str(self.model.device),
                reject_powder_rings=cfg.reject_powder_rings,
                ice_rings=cfg.ice_rings,
            )
        extra = self._backstop.find(image, mask, maps=maps)
        keep = extra.score >= cfg.backstop_score
        if len(peaks) and keep.any():
            distance, _ = cKDTree(np.column_stack([peaks.row, peaks.col])).query(
                np.column_stack([extra.row[keep], extra.col[keep]])
            )
            keep[np.flatnonzero(keep)[distance <= BACKSTOP_RADIUS_PX]] = False
        self.last_backstop_added = int(keep.sum())
        if not keep.any():
            return peaks
        added = extra.take(keep).columns()
        joined = {k: np.concatenate([np.asarray(v), np.asarray(added[k], np.asarray(v).dtype)])
                  for k, v in peaks.columns().items()}
        return PeakList(**joined, n_frames=1, frames=peaks.frames)

    def peaks_from_probability(
        self, prob: NDArray[np.float32], norm: NormalisedFrame, threshold: float | None = None
    ) -> PeakList:
        """The peaks of a probability map (from :meth:`probability`) at a cut (the configured one when None)."""
        from dataclasses import replace

        from .unet_extract import candidate_reach, gather_candidates

        cfg = self.config
        if threshold is None:
            threshold = self.model.threshold if cfg.probability_threshold is None else cfg.probability_threshold
        level = gather_level(cfg, float(threshold))
        counting, gain = counting_gain(norm.integer, norm.gain, norm.noise_correlation)
        seeds = None
        if wants_photon_spots(cfg, norm.integer, norm.gain, norm.noise_correlation):
            from .unet_extract import photon_seeds

            seeds = photon_seeds(
                prob, norm.residual, norm.background, norm.noise, norm.bad, norm.panel_id, level, gain,
                **photon_seed_tests(cfg),
            )
        candidates = gather_candidates(
            prob,
            norm.residual,
            norm.background,
            norm.noise,
            norm.bad,
            norm.panel_id,
            level,
            candidate_reach(cfg.grow_px),
            gain=gain,
            seeds=seeds,
        )
        regions = extract_regions(replace(candidates, threshold=float(threshold)), cfg)
        maps = norm.maps
        radius = None if maps is None else np.asarray(maps.radius_px)
        resolution = None if maps is None or maps.resolution_a is None else np.asarray(maps.resolution_a)
        rings = None
        if regions.columns["row"].size and norm.stats is not None and needs_ring_evidence(cfg, resolution):
            from ..classical.rings import azimuth_sectors, ring_evidence

            good = ~norm.bad
            data = np.where(good, norm.residual + norm.background, np.float32(0)).astype(np.float32)
            sectors = None
            if cfg.reject_powder_rings and maps is not None:
                sectors = azimuth_sectors(maps.radius_px, maps.panel_id)
            rings = ring_evidence(data, good, norm.stats, contrast=cfg.powder_ring_contrast, sectors=sectors)
        peaks, self._rejected = finish_peaks(regions, rings, radius, resolution, cfg, counting=counting)
        return peaks


#: A backstop peak is added only when it lies further than this from every U-Net peak (pixels).
BACKSTOP_RADIUS_PX = 2.0

#: On any background a region must be a Poisson excess of at least this many sigmas in one of its compact
#: apertures (``significance_snr`` where the background is sparse): the network's probability alone does not
#: make a peak of pixels that stand no higher than their background.
SIGNIFICANCE_FLOOR = 3.0

#: Photon-counting frames (:func:`photon_counting`) measure a gain within this range of counts per photon (the
#: clipped statistics of sparse frames put it somewhat below one) ...
COUNTING_GAIN = (0.5, 2.0)
#: ... and a noise correlation of 3 x 3 sums under this (:func:`braggml.ml.unet.noise_correlation`; independent
#: pixels give about 1, a phosphor's spread more than 2).
COUNTING_MAX_CORRELATION = 1.5
#: On photon-counting frames, where the Poisson model of the peak tests is exact, the sparse-background test
#: (``significance_snr``) asks this many sigmas more. Of the local maxima of a 4.5-Mpixel frame of Poisson
#: background (0.05-0.8 photon per pixel), 1-13 pass that test at 5 sigmas and 0-1 at 5.5; on Gaussian noise of
#: the same variance (an integrating detector's, which the test counts as a Poisson rate), none pass at 4.5.
COUNTING_SIGNIFICANCE_MARGIN = 0.5
#: Photon spots (``photon_spots``) must spill this many sigmas (a Poisson excess) into the 8 neighbours of their
#: pixel: a little light beside it, which a hot pixel the mask lacks seldom shows.
PHOTON_SPILL_SIGMA = 1.5

#: Regions found by the second cut must also spill this many sigmas (a Poisson excess) into the 8 neighbours of
#: their brightest pixel: a spot does, a hot pixel the mask lacks does not.
SECOND_CUT_SPILL_SIGMA = 2.0


def photon_counting(integer: bool, gain: float, noise_correlation: float = 1.0) -> bool:
    """Whether a frame looks photon-counting: whole-number counts, a measured gain within
    :data:`COUNTING_GAIN` counts per photon, and independent pixels (:data:`COUNTING_MAX_CORRELATION`).

    Examples
    --------
    >>> photon_counting(True, 0.95), photon_counting(True, 31.0), photon_counting(False, 1.0)
    (True, False, False)
    """
    low, high = COUNTING_GAIN
    return bool(integer) and low <= gain <= high and noise_correlation < COUNTING_MAX_CORRELATION


def counting_gain(integer: bool, gain: float, noise_correlation: float = 1.0) -> tuple[bool, float]:
    """Whether a frame is photon-counting (:func:`photon_counting`), and the counts per photon of its peak tests.

    On a photon-counting frame at least one: each count is a photon, and the clipped statistics of a sparse frame
    measure less (the clipping takes the tail of the Poisson counts and part of their variance with it: 0.74-0.87
    on the simulated ``eiger4m`` frames, which would count each photon 1.15-1.35 times). A measured gain above
    one is kept, as clipping does not raise it. Other frames: the measured gain.

    Examples
    --------
    >>> counting_gain(True, 0.8), counting_gain(True, 1.4), counting_gain(True, 25.0), counting_gain(False, 0.8)
    ((True, 1.0), (True, 1.4), (False, 25.0), (False, 0.8))
    """
    counting = photon_counting(integer, gain, noise_correlation)
    return counting, max(gain, 1.0) if counting else gain


def wants_photon_spots(config: UNetFinderConfig, integer: bool, gain: float, noise_correlation: float) -> bool:
    """Whether the finder looks for photon spots on a frame (``config.photon_spots``)."""
    if config.photon_spots == "off" or not gain > 0:
        return False
    return config.photon_spots == "on" or photon_counting(integer, gain, noise_correlation)


def photon_seed_tests(config: UNetFinderConfig) -> dict[str, float]:
    """What a photon seed's block must show (:func:`~braggml.ml.unet_extract.screen_seeds`)."""
    return {"min_sigma": config.second_cut_snr, "min_spill": PHOTON_SPILL_SIGMA}


def gather_level(config: UNetFinderConfig, threshold: float) -> float:
    """The probability above which pixels are gathered with their neighbourhood: the cut, or the second cut
    when it is lower."""
    return min(threshold, config.second_cut) if config.second_cut > 0 else threshold


def extract_regions(candidates: CandidatePixels, config: UNetFinderConfig) -> Regions:
    """The regions above the cut (``candidates.threshold``) and, with a lower second cut, the regions above it
    that hold no pixel above the first, are significant enough (``second_cut_snr``), spill into the
    neighbours of their brightest pixel (:data:`SECOND_CUT_SPILL_SIGMA`) and whose brightest pixel is the
    brightest of its 3 x 3 block; then the photon seeds among the candidates (``photon_spots``), each a region
    of its own. The candidates must be gathered from :func:`gather_level`."""
    from dataclasses import replace

    from .unet_extract import extract_peaks

    settings = {"min_pixel_count": config.min_pixel_count, "split": config.split_regions, "grow_px": config.grow_px}
    regions = extract_peaks(candidates, **settings)
    if 0 < config.second_cut < candidates.threshold:
        low = replace(candidates, threshold=config.second_cut)
        second = extract_peaks(low, exclude_above=candidates.threshold, **settings)
        sure = (
            (second.significance >= config.second_cut_snr)
            & (second.spill >= SECOND_CUT_SPILL_SIGMA)
            & second.local_max
        )
        regions = regions.join(second.take(sure))
    if candidates.seed is not None and candidates.seed.any():
        # the seeds passed these tests already, on a background raised where their surroundings hold more
        # (:func:`~braggml.ml.unet_extract.screen_seeds`), and are the brightest of their blocks
        regions = regions.join(extract_peaks(candidates, seeds=True, **settings))
    return regions


def needs_ring_evidence(config: UNetFinderConfig, resolution_a: NDArray | None) -> bool:
    """Whether :func:`finish_peaks` reads the frame's ring evidence: for powder-ring rejection, and for
    ``ice_rings="auto"`` where the resolution is known (the rings the frame shows)."""
    return config.reject_powder_rings or (config.ice_rings == "auto" and resolution_a is not None)


def finish_peaks(
    regions: Regions,
    rings: RingEvidence | None,
    radius_px: NDArray | None,
    resolution_a: NDArray | None,
    config: UNetFinderConfig,
    *,
    counting: bool = False,
) -> tuple[PeakList, dict[str, int]]:
    """Apply the ring, mask, lone-pixel and significance rules to measured regions and make the frame's peak list.

    Parameters
    ----------
    regions : Regions
        The regions' measurements and flags (:func:`~braggml.ml.unet_extract.extract_peaks`).
    rings : RingEvidence or None
        The frame's ring evidence (None: no powder-ring rejection, and ``ice_rings="auto"`` rejects nothing).
    radius_px, resolution_a : (H, W) ndarray or None
        The run's maps (no ring rule applies without ``radius_px``, no ice rule without ``resolution_a``).
    config : UNetFinderConfig
    counting : bool
        The frame is photon-counting: regions on a sparse background need :data:`COUNTING_SIGNIFICANCE_MARGIN`
        more than ``config.significance_snr``.

    Returns
    -------
    peaks : PeakList
        One frame.
    rejected : dict of str to int
        Regions dropped, by cause (``"powder_ring"``, ``"ice_ring"``, ``"masked"``, ``"lone_pixel"``,
        ``"not_significant"``).
    """
    from ..classical.rings import peaks_on_rings

    cols = regions.columns
    n = cols["row"].size
    rules: list[tuple[str, NDArray[np.bool_]]] = []  # in the order they apply
    want_ice = config.ice_rings != "off" and resolution_a is not None
    if n and radius_px is not None and (config.reject_powder_rings or want_ice):
        h, w = radius_px.shape
        ri = np.clip(np.rint(cols["row"]).astype(np.int64), 0, h - 1)
        ci = np.clip(np.rint(cols["col"]).astype(np.int64), 0, w - 1)
        on_powder, ice_rejected, _ = peaks_on_rings(
            radius_px[ri, ci],
            None if resolution_a is None else resolution_a[ri, ci],
            rings,
            reject_powder_rings=config.reject_powder_rings,
            ice_rings=config.ice_rings,
            ice_ring_width_inv_a=config.ice_ring_width_inv_a,
            flat_index=ri * w + ci,
        )
        rules += [("powder_ring", on_powder), ("ice_ring", ice_rejected)]
    if config.masked_peaks == "drop":
        rules.append(("masked", regions.along_mask >= 1.0))
    if config.lone_pixels == "drop":
        rules.append(("lone_pixel", regions.lone_pixel))
    if config.significance_snr > 0:
        sparse_level = config.significance_snr + (COUNTING_SIGNIFICANCE_MARGIN if counting else 0.0)
        level = np.where(regions.sparse, sparse_level, min(SIGNIFICANCE_FLOOR, config.significance_snr))
        rules.append(("not_significant", regions.significance < level))  # NaN (no gain): not judged
    rejected: dict[str, int] = {}
    keep = np.ones(n, bool)
    for cause, bad in rules:
        hit = keep & bad
        if hit.any():
            rejected[cause] = int(hit.sum())
            keep &= ~hit
    peaks = PeakList.from_columns(
        n_frames=1, frame=np.zeros(int(keep.sum()), np.int64), **{k: v[keep] for k, v in cols.items()}
    )
    return peaks, rejected
