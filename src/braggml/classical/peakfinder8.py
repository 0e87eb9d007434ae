"""peakfinder8: radial-background thresholding with local-background acceptance (Cheetah, OM, CrystFEL)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError
from ..geometry import PixelMaps
from ..peaks import PeakList
from ._common import (
    FindReport,
    ReportingFinder,
    SelectionConfig,
    check_non_negative,
    check_positive,
    label_within_panels,
    measure_peaks,
    poisson_significant,
    prepare_frame,
    rate_at_peaks,
    select_peaks,
)
from ._radial import (
    classify_pixels,
    estimate_gain_per_panel,
    noise_floor,
    radial_statistics,
)
from .rings import azimuth_sectors, ring_evidence_from_counts, ring_levels, sector_counts

__all__ = ["Peakfinder8", "Peakfinder8Config"]


@dataclass(frozen=True)
class Peakfinder8Config(SelectionConfig):
    """Parameters of :class:`Peakfinder8` (names and meanings as in OM and CrystFEL).

    Attributes
    ----------
    adc_threshold : float
        Lowest value a peak pixel may have, in detector units. The default relies on the noise-based
        threshold alone, which is what makes the finder work on photon counts and on ADU alike.
    minimum_snr : float
        A peak is accepted when its background-subtracted integrated intensity exceeds ``minimum_snr``
        times the local noise (peakfinder8's test) and is a ``minimum_snr``-sigma Poisson excess over
        its background (see :func:`~braggml.classical._common.poisson_significant`). With
        ``pixel_snr=None`` it is also the candidate level, as in OM and CrystFEL.
    min_pixel_count, max_pixel_count : int
        Accepted number of pixels in a peak (true pixel count).
    local_bg_radius : int
        The local background and noise come from the good, non-candidate pixels within
        ``2 * local_bg_radius`` pixels of the peak centre on the same panel.
    per_panel_background : bool
        Radial statistics per panel and radius (removes panel-to-panel offsets and gains of integrating
        detectors); bins with too few pixels fall back to all panels.
    gain : float or None
        Detector units per photon, for the Poisson significance test and the shot-noise term of the
        reported SNR; estimated from the slope of the background variance against its mean over the
        radius bins (median over panels) when None. Integer frames where no slope can be measured
        (flat or empty backgrounds) are taken as photon counts (gain 1).
    pixel_snr : float or None
        Candidate pixels lie ``pixel_snr`` background sigmas above their radius bin's mean; None uses
        ``minimum_snr`` as OM and CrystFEL do. A lower level than ``minimum_snr`` lets weak spots
        in, and the integrated tests (``minimum_snr``) keep noise out.
    min_pixel_photons : float
        Candidate pixels also lie this many photons (``gain`` units) above the mean, so that isolated
        photons on a sparse background are never candidates; 0 turns it off.
    background_clip_sigma : float or None
        Each clipping pass of the radial statistics keeps the pixels below ``mean + background_clip_sigma
        * sigma``; None clips at ``minimum_snr`` sigmas, as OM and CrystFEL do.
    robust_background_start : bool
        Start the clipping from a histogram estimate of each bin's median and spread instead of from
        all its pixels (OM and CrystFEL), so that bins where strong spots hold a large share of the
        pixels still converge to their background.
    clip_iterations : int
        Most passes of sigma clipping for the radial statistics (fewer when hardly any pixel changes
        side); OM and CrystFEL make 5 from all pixels, the robust start needs fewer.
    """

    adc_threshold: float = 0.0
    minimum_snr: float = 5.0
    min_pixel_count: int = 2
    max_pixel_count: int = 200
    local_bg_radius: int = 3
    per_panel_background: bool = True
    gain: float | None = None
    pixel_snr: float | None = 3.5
    min_pixel_photons: float = 2.0
    background_clip_sigma: float | None = None
    robust_background_start: bool = True
    clip_iterations: int = 3

    def __post_init__(self) -> None:
        if not np.isfinite(self.adc_threshold):
            raise ConfigError(f"adc_threshold must be finite, got {self.adc_threshold!r}")
        check_positive("minimum_snr", self.minimum_snr)
        if int(self.min_pixel_count) != self.min_pixel_count or self.min_pixel_count < 1:
            raise ConfigError(f"min_pixel_count must be an integer >= 1, got {self.min_pixel_count!r}")
        if int(self.max_pixel_count) != self.max_pixel_count or self.max_pixel_count < self.min_pixel_count:
            raise ConfigError(
                f"max_pixel_count ({self.max_pixel_count!r}) must be an integer >= min_pixel_count "
                f"({self.min_pixel_count!r})"
            )
        if int(self.local_bg_radius) != self.local_bg_radius or self.local_bg_radius < 1:
            raise ConfigError(f"local_bg_radius must be an integer >= 1, got {self.local_bg_radius!r}")
        if self.gain is not None:
            check_non_negative("gain", self.gain)
        if self.pixel_snr is not None:
            check_positive("pixel_snr", self.pixel_snr)
        check_non_negative("min_pixel_photons", self.min_pixel_photons)
        if self.background_clip_sigma is not None:
            check_positive("background_clip_sigma", self.background_clip_sigma)
        if int(self.clip_iterations) != self.clip_iterations or self.clip_iterations < 1:
            raise ConfigError(f"clip_iterations must be an integer >= 1, got {self.clip_iterations!r}")
        self._check_selection()


class Peakfinder8(ReportingFinder):
    """The peakfinder8 algorithm of Cheetah (Barty et al. 2014), with masks, panels and ring rejection.

    1. Background mean and sigma per radius bin (and panel), by iterative one-sided sigma clipping;
       the gain (detector units per photon) from how the background variance follows its mean.
    2. Candidate pixels above ``max(adc_threshold, mean + pixel_snr * sigma, mean + min_pixel_photons *
       gain)``, inside the ``min_res``..``max_res`` radius range, grouped 8-connected inside each panel.
    3. For each group of ``min_pixel_count``..``max_pixel_count`` pixels: local background and noise
       from the non-candidate pixels within ``2 * local_bg_radius``; accepted when the integrated
       background-subtracted intensity is at least ``minimum_snr`` local sigmas, its maximum is above
       every background pixel of that disk, and (with a gain) it is a ``minimum_snr``-sigma Poisson
       excess over the background photons, isolated photons included.
    4. Peaks whose core lies along bad pixels or gaps, on powder or ice rings, or beyond
       ``max_num_peaks`` are removed (see
       :class:`~braggml.classical._common.SelectionConfig`); ``last_report`` counts them by cause.

    ``pixel_snr=None, min_pixel_photons=0, gain=0, per_panel_background=False,
    robust_background_start=False, clip_iterations=5, reject_powder_rings=False, ice_rings="off",
    masked_peaks="keep"`` reproduce OM's peakfinder8.

    The reported SNR is ``intensity / sqrt(n_pixels * sigma**2 + gain * intensity)``.

    References
    ----------
    Barty, A. et al. (2014). Cheetah: software for high-throughput reduction and analysis of serial
    femtosecond X-ray diffraction data. J. Appl. Cryst. 47, 1118-1131. doi:10.1107/S1600576714007626

    Examples
    --------
    >>> image = np.zeros((32, 32), np.float32)
    >>> image[10:12, 20:22] = 100.0
    >>> peaks = Peakfinder8().find(image + np.random.default_rng(0).normal(0, 1, image.shape))
    >>> peaks.row.round(1).tolist(), peaks.col.round(1).tolist()
    ([10.5], [20.5])
    """

    name: ClassVar[str] = "peakfinder8"
    config_class: ClassVar[type] = Peakfinder8Config
    config: Peakfinder8Config

    def find(
        self,
        image: NDArray,
        mask: NDArray[np.bool_] | None = None,
        *,
        maps: PixelMaps | None = None,
    ) -> PeakList:
        cfg = self.config
        frame = prepare_frame(image, mask, maps)
        report = FindReport()
        self.last_report = report
        good = ~frame.bad
        radius = np.asarray(frame.maps.radius_px)
        counts_like = frame.integer
        sigma_floor = noise_floor(frame.data, good, counts_like)
        stats = radial_statistics(
            frame.data,
            good,
            radius,
            frame.panel_id,
            snr=cfg.minimum_snr if cfg.background_clip_sigma is None else cfg.background_clip_sigma,
            floor=cfg.adc_threshold,
            sigma_floor=sigma_floor,
            iterations=cfg.clip_iterations,
            per_panel=cfg.per_panel_background,
            robust_start=cfg.robust_background_start,
        )
        gain = cfg.gain if cfg.gain is not None else estimate_gain_per_panel(stats)
        if gain == 0 and cfg.gain is None and counts_like:
            gain = 1.0
        pixel_snr = cfg.minimum_snr if cfg.pixel_snr is None else cfg.pixel_snr
        threshold = np.maximum(
            stats.offset + pixel_snr * np.maximum(stats.sigma, sigma_floor),
            stats.offset + cfg.min_pixel_photons * gain,
        )
        threshold = np.maximum(threshold, cfg.adc_threshold)
        threshold = np.where(stats.count > 0, threshold, np.inf).astype(np.float32)
        want_rings = cfg.reject_powder_rings or (cfg.ice_rings == "auto" and frame.maps.resolution_a is not None)
        levels = ring_levels(stats, contrast=cfg.powder_ring_contrast) if want_rings else None
        # candidates, ring counts and background rate in one pass over the frame
        classes = classify_pixels(
            frame.data,
            None if stats.used_bin is not None else frame.bad,  # the statistics used the good pixels
            stats,
            threshold,
            radius,
            cfg.min_res,
            cfg.max_res,
            ring_level=None if levels is None else levels.level,
            rate_gain=gain,
        )
        candidate = classes.candidate
        labels, n = label_within_panels(candidate, frame.panel_id, connectivity=8, members=classes.members)
        report.n_candidates = n
        report.gain = gain
        rings = None
        if levels is not None:
            sectors = by_sector = None
            if cfg.reject_powder_rings:
                sectors = azimuth_sectors(frame.maps.radius_px, frame.maps.panel_id)
                by_sector = partial(sector_counts, frame.data, good, stats, levels, sectors)
            rings = ring_evidence_from_counts(
                levels, classes.ring_above, classes.ring_total, count_sectors=by_sector, sectors=sectors
            )
        if n == 0:
            return PeakList.empty(1)
        measured = measure_peaks(
            frame,
            labels,
            n,
            excluded=candidate,
            ring_radius=2 * cfg.local_bg_radius,
            bin_index=stats.bin_index,
            bin_offset=stats.offset,
            bin_sigma=stats.sigma,
            size_range=(cfg.min_pixel_count, cfg.max_pixel_count),
            members=classes.members,
        )
        keep = np.ones(n, bool)

        def reject(cause: str, bad: NDArray[np.bool_]) -> None:
            hit = keep & bad
            report.count(cause, int(hit.sum()))
            keep[hit] = False

        reject("too_small", measured.n_pixels < cfg.min_pixel_count)
        reject("too_large", measured.n_pixels > cfg.max_pixel_count)
        sigma = np.maximum(measured.sigma, 1e-6)
        reject("low_snr", ~(measured.intensity >= cfg.minimum_snr * sigma))
        reject("below_ring_max", measured.max_above_background < measured.ring_max - measured.background)
        rate_per_bin = classes.rate if classes.rate is not None else np.zeros(stats.offset.size)
        rate = rate_at_peaks(measured, stats.bin_index, rate_per_bin)
        reject("not_significant", ~poisson_significant(measured, gain, cfg.minimum_snr, rate))
        snr = measured.snr(gain)
        return select_peaks(measured, keep, snr, frame, cfg, report, rings)
