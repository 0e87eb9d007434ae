"""The threshold finder: pixels above a level, 2-D local maxima at a minimum separation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numba
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from ..errors import ConfigError
from ..geometry import PixelMaps
from ..peaks import PeakList
from ._common import (
    FindReport,
    ReportingFinder,
    SelectionConfig,
    _flood_labels,
    check_choice,
    check_non_negative,
    check_positive,
    measure_peaks,
    poisson_significant,
    prepare_frame,
    rate_at_peaks,
    select_peaks,
)
from ._radial import RadialStats, background_rate, estimate_gain_per_panel, noise_floor, radial_statistics
from .rings import azimuth_sectors, ring_evidence

__all__ = ["ThresholdConfig", "ThresholdFinder"]


@dataclass(frozen=True)
class ThresholdConfig(SelectionConfig):
    """Parameters of :class:`ThresholdFinder`.

    Attributes
    ----------
    threshold : float
        The level: in background sigmas above the background (``threshold_mode="sigma"``) or in detector
        units (``"absolute"``).
    threshold_mode : {"sigma", "absolute"}
    background : {"radial", "local"}
        Background mean and sigma per radius bin and panel (sigma-clipped), or from the
        ``(2 * local_window_px + 1)**2`` box around each pixel (pixels above the level left out).
    local_window_px : int
        Half-width of the local background box.
    min_separation_px : int
        Maxima closer than this (Chebyshev distance) to a higher one are not peaks; a peak's pixels are
        the connected above-level pixels within this distance of its maximum.
    normalise : bool
        Apply the absolute level to ``(image - background) / sigma`` instead of the raw image.
    min_pixel_count, max_pixel_count : int
        Accepted number of pixels in a peak.
    min_snr : float
        Lowest accepted SNR of the integrated intensity (0 keeps all).
    local_bg_radius : int
        Reported background and SNR come from the below-level pixels within ``2 * local_bg_radius``.
    significance_snr : float
        Peaks must be unlikely to be background fluctuations at this many sigma, by the Poisson tail test
        of :func:`~braggml.classical._common.poisson_significant` with the photon gain measured from the
        radial background; 0 turns it off.
    min_pixel_photons : float
        In ``"sigma"`` mode, pixels must also stand this many photons (measured gain) above the
        background, so that isolated photons on a sparse background never count; 0 turns it off.
    """

    threshold: float = 6.0
    threshold_mode: Literal["sigma", "absolute"] = "sigma"
    background: Literal["radial", "local"] = "radial"
    local_window_px: int = 10
    min_separation_px: int = 3
    normalise: bool = False
    min_pixel_count: int = 2
    max_pixel_count: int = 200
    min_snr: float = 0.0
    local_bg_radius: int = 3
    significance_snr: float = 5.0
    min_pixel_photons: float = 2.0

    def __post_init__(self) -> None:
        if not np.isfinite(self.threshold):
            raise ConfigError(f"threshold must be finite, got {self.threshold!r}")
        check_choice("threshold_mode", self.threshold_mode, ("sigma", "absolute"))
        if self.threshold_mode == "sigma":
            check_positive("threshold", self.threshold)
        check_choice("background", self.background, ("radial", "local"))
        if int(self.local_window_px) != self.local_window_px or self.local_window_px < 1:
            raise ConfigError(f"local_window_px must be an integer >= 1, got {self.local_window_px!r}")
        if int(self.min_separation_px) != self.min_separation_px or self.min_separation_px < 1:
            raise ConfigError(f"min_separation_px must be an integer >= 1, got {self.min_separation_px!r}")
        if int(self.min_pixel_count) != self.min_pixel_count or self.min_pixel_count < 1:
            raise ConfigError(f"min_pixel_count must be an integer >= 1, got {self.min_pixel_count!r}")
        if int(self.max_pixel_count) != self.max_pixel_count or self.max_pixel_count < self.min_pixel_count:
            raise ConfigError(
                f"max_pixel_count ({self.max_pixel_count!r}) must be an integer >= min_pixel_count "
                f"({self.min_pixel_count!r})"
            )
        check_non_negative("min_snr", self.min_snr)
        check_non_negative("significance_snr", self.significance_snr)
        check_non_negative("min_pixel_photons", self.min_pixel_photons)
        if int(self.local_bg_radius) != self.local_bg_radius or self.local_bg_radius < 1:
            raise ConfigError(f"local_bg_radius must be an integer >= 1, got {self.local_bg_radius!r}")
        self._check_selection()


@numba.njit(cache=True, nogil=True)
def _panel_local_maxima(score, above, panel_id, candidates, sep):  # pragma: no cover - compiled
    """Candidates that are the highest pixel of their panel within ``sep`` (Chebyshev distance).

    Ties go to the pixel that comes first in raster order, so a flat top gives one maximum.
    """
    h, w = score.shape
    keep = np.zeros(candidates.size, np.bool_)
    for i in range(candidates.size):
        q = candidates[i]
        r0 = q // w
        c0 = q - r0 * w
        v = score[r0, c0]
        p = panel_id[r0, c0]
        best = True
        for r in range(max(r0 - sep, 0), min(r0 + sep + 1, h)):
            for c in range(max(c0 - sep, 0), min(c0 + sep + 1, w)):
                if panel_id[r, c] != p:
                    continue
                u = score[r, c]
                if u > v or (u == v and r * w + c < q):
                    best = False
                    break
            if not best:
                break
        keep[i] = best
    return candidates[keep]


def _grow_from_maxima(
    above: NDArray[np.bool_], panel_id: NDArray[np.int32], seeds: NDArray[np.int64], radius: int
) -> tuple[NDArray[np.int32], int]:
    """Label the above-level pixels connected to each seed within ``radius`` of it, seeds in order."""
    return _flood_labels(above, panel_id, seeds, True, radius, max((2 * radius + 1) ** 2, 16))


class ThresholdFinder(ReportingFinder):
    """Threshold and local-maximum peak finder.

    Pixels above the level (absolute, or ``threshold`` background sigmas above the radial or local
    background) that are the highest of their panel within ``min_separation_px`` in both directions (a
    2-D neighbourhood maximum, not a search along flattened rows) seed the peaks; each peak
    takes the connected above-level pixels of its panel within ``min_separation_px`` of its maximum, the
    highest maxima first.

    Examples
    --------
    >>> image = np.random.default_rng(1).normal(10, 1, (40, 40)).astype(np.float32)
    >>> image[20, 10:12] += 50
    >>> peaks = ThresholdFinder().find(image)
    >>> peaks.row.round(1).tolist(), peaks.col.round(1).tolist()
    ([20.0], [10.5])
    """

    name: ClassVar[str] = "threshold"
    config_class: ClassVar[type] = ThresholdConfig
    config: ThresholdConfig

    def _background(
        self,
        data: NDArray[np.float32],
        good: NDArray[np.bool_],
        radius: NDArray,
        panel_id: NDArray[np.int32],
        integer: bool,
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], RadialStats]:
        cfg = self.config
        sigma_floor = noise_floor(data, good, integer)
        clip = 3.0
        stats = radial_statistics(
            data, good, radius, panel_id, snr=clip, sigma_floor=sigma_floor, iterations=5, per_panel=True
        )
        if cfg.background == "radial":
            bg = stats.offset[stats.bin_index]
            sigma = np.maximum(stats.sigma, sigma_floor)[stats.bin_index]
            return bg.astype(np.float32), sigma.astype(np.float32), stats
        size = 2 * cfg.local_window_px + 1
        use = good.astype(np.float32)
        bg = np.zeros(data.shape, np.float32)
        sigma = np.zeros(data.shape, np.float32)
        for _ in range(2):
            n = ndimage.uniform_filter(use, size, mode="constant")
            s1 = ndimage.uniform_filter(data * use, size, mode="constant")
            s2 = ndimage.uniform_filter(data * data * use, size, mode="constant")
            with np.errstate(invalid="ignore", divide="ignore"):
                bg = np.where(n > 0, s1 / n, 0.0).astype(np.float32)
                var = np.where(n > 0, s2 / n - bg.astype(np.float64) ** 2, 0.0)
            sigma = np.sqrt(np.maximum(var, sigma_floor**2)).astype(np.float32)
            use = (good & (data <= bg + clip * sigma)).astype(np.float32)
        return bg, sigma, stats

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
        bg, sigma, stats = self._background(frame.data, good, radius, frame.panel_id, frame.integer)
        gain = estimate_gain_per_panel(stats)
        if gain == 0 and frame.integer:
            gain = 1.0
        report.gain = gain
        if cfg.threshold_mode == "sigma":
            level = frame.data - bg
            limit = np.maximum(cfg.threshold * sigma, np.float32(cfg.min_pixel_photons * gain))
        elif cfg.normalise:
            with np.errstate(invalid="ignore", divide="ignore"):
                level = np.where(sigma > 0, (frame.data - bg) / sigma, 0.0)
            limit = np.float32(cfg.threshold)
        else:
            level = frame.data
            limit = np.float32(cfg.threshold)
        above = good & (level > limit)
        if cfg.min_res > 0 or np.isfinite(cfg.max_res):
            above &= (radius >= cfg.min_res) & (radius <= cfg.max_res)
        # 2-D local maxima of the background-subtracted level within each panel, bad pixels never winning
        sep = cfg.min_separation_px
        score = np.where(good, level, -np.inf).astype(np.float32)
        candidates = np.flatnonzero(above).astype(np.int64)
        seeds = _panel_local_maxima(score, above, frame.panel_id, candidates, sep)
        seeds = seeds[np.argsort(-score.ravel()[seeds], kind="stable")]
        labels, n = _grow_from_maxima(above, frame.panel_id, seeds, sep)
        report.n_candidates = int(n)
        rings = None
        if cfg.reject_powder_rings or (cfg.ice_rings == "auto" and frame.maps.resolution_a is not None):
            sectors = azimuth_sectors(frame.maps.radius_px, frame.maps.panel_id) if cfg.reject_powder_rings else None
            rings = ring_evidence(frame.data, good, stats, contrast=cfg.powder_ring_contrast, sectors=sectors)
        if n == 0:
            return PeakList.empty(1)
        measured = measure_peaks(
            frame,
            labels,
            n,
            excluded=above,
            ring_radius=2 * cfg.local_bg_radius,
            bin_index=stats.bin_index,
            bin_offset=stats.offset,
            bin_sigma=stats.sigma,
            size_range=(cfg.min_pixel_count, cfg.max_pixel_count),
        )
        keep = np.ones(n, bool)

        def reject(cause: str, bad: NDArray[np.bool_]) -> None:
            hit = keep & bad
            report.count(cause, int(hit.sum()))
            keep[hit] = False

        reject("too_small", measured.n_pixels < cfg.min_pixel_count)
        reject("too_large", measured.n_pixels > cfg.max_pixel_count)
        snr = measured.snr(gain)
        if cfg.min_snr > 0:
            reject("low_snr", ~(snr >= cfg.min_snr))
        if cfg.significance_snr > 0:
            rate = rate_at_peaks(measured, stats.bin_index, background_rate(frame.data, good, stats, gain))
            reject("not_significant", ~poisson_significant(measured, gain, cfg.significance_snr, rate))
        return select_peaks(measured, keep, snr, frame, cfg, report, rings)
