"""DIALS' index-of-dispersion spot finders: ``dispersion`` and ``dispersion_extended``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

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
    check_non_negative,
    check_positive,
    label_within_panels,
    measure_peaks,
    poisson_significant,
    prepare_frame,
    rate_at_peaks,
    select_peaks,
)
from ._radial import background_rate, estimate_gain_per_panel, noise_floor, radial_statistics
from .rings import azimuth_sectors, ring_evidence

__all__ = [
    "DispersionConfig",
    "DispersionFinder",
    "DispersionExtendedFinder",
    "box_sums",
    "estimate_dispersion_gain",
]

#: Pixel values at or above this are left out of the local sums (DIALS' limit).
_BIG = float(1 << 24)


@numba.njit(cache=True, nogil=True)
def _row_sums(data, valid, kc):  # pragma: no cover - compiled
    h, w = data.shape
    tm = np.zeros((h, w), np.float64)
    tx = np.zeros((h, w), np.float64)
    ty = np.zeros((h, w), np.float64)
    for r in range(h):
        m = 0.0
        x = 0.0
        y = 0.0
        for c in range(-kc, w + kc):
            add = c + kc
            if add < w and valid[r, add]:
                v = np.float64(data[r, add])
                m += 1.0
                x += v
                y += v * v
            drop = c - kc - 1
            if 0 <= drop < w and valid[r, drop]:
                v = np.float64(data[r, drop])
                m -= 1.0
                x -= v
                y -= v * v
            if 0 <= c < w:
                tm[r, c] = m
                tx[r, c] = x
                ty[r, c] = y
    return tm, tx, ty


@numba.njit(cache=True, nogil=True)
def _box_sums_kernel(data, valid, kr, kc):  # pragma: no cover - compiled
    h, w = data.shape
    tm, tx, ty = _row_sums(data, valid, kc)
    om = np.zeros((h, w), np.float64)
    ox = np.zeros((h, w), np.float64)
    oy = np.zeros((h, w), np.float64)
    m = np.zeros(w)
    x = np.zeros(w)
    y = np.zeros(w)
    for r in range(-kr, h + kr):
        add = r + kr
        drop = r - kr - 1
        for c in range(w):
            if add < h:
                m[c] += tm[add, c]
                x[c] += tx[add, c]
                y[c] += ty[add, c]
            if 0 <= drop < h:
                m[c] -= tm[drop, c]
                x[c] -= tx[drop, c]
                y[c] -= ty[drop, c]
            if 0 <= r < h:
                om[r, c] = m[c]
                ox[r, c] = x[c]
                oy[r, c] = y[c]
    return om, ox, oy


@numba.njit(cache=True, nogil=True, inline="always")
def _slide_columns(data, valid, r, k, h, w, cm, cx, cy):  # pragma: no cover - compiled
    """Move the per-column window sums from rows ``r-1-k..r-1+k`` to ``r-k..r+k``."""
    add = r + k
    drop = r - k - 1
    if add < h:
        for c in range(w):
            if valid[add, c]:
                v = np.float64(data[add, c])
                cm[c] += 1.0
                cx[c] += v
                cy[c] += v * v
    if drop >= 0:
        for c in range(w):
            if valid[drop, c]:
                v = np.float64(data[drop, c])
                cm[c] -= 1.0
                cx[c] -= v
                cy[c] -= v * v


@numba.njit(cache=True, nogil=True)
def _dispersion_kernel(
    data, valid, k, gain, nsig_b, nsig_s, min_count, threshold, test_valid
):  # pragma: no cover - compiled
    """Dispersed-box map and strong-pixel map (classic test), from running window sums."""
    h, w = data.shape
    dispersed = np.zeros((h, w), np.bool_)
    strong = np.zeros((h, w), np.bool_)
    cm = np.zeros(w)
    cx = np.zeros(w)
    cy = np.zeros(w)
    for r in range(-k, h):
        _slide_columns(data, valid, r, k, h, w, cm, cx, cy)
        if r < 0:
            continue
        m = 0.0
        x = 0.0
        y = 0.0
        for c in range(min(k, w)):
            m += cm[c]
            x += cx[c]
            y += cy[c]
        for c in range(w):
            add = c + k
            if add < w:
                m += cm[add]
                x += cx[add]
                y += cy[add]
            drop = c - k - 1
            if drop >= 0:
                m -= cm[drop]
                x -= cx[drop]
                y -= cy[drop]
            if not test_valid[r, c] or m < min_count or x < 0:
                continue
            a = m * y - x * x
            bound = gain * x * (m - 1 + nsig_b * np.sqrt(2 * (m - 1)))
            if a > bound:
                dispersed[r, c] = True
                mean = x / m
                v = data[r, c]
                if v > mean + nsig_s * np.sqrt(gain * mean) and v > threshold:
                    strong[r, c] = True
    return dispersed, strong


@numba.njit(cache=True, nogil=True)
def _extended_final_kernel(data, background, core, k, gain, nsig_s, threshold):  # pragma: no cover
    """Core pixels above the mean of the background pixels of their wider box."""
    h, w = data.shape
    strong = np.zeros((h, w), np.bool_)
    cm = np.zeros(w)
    cx = np.zeros(w)
    cy = np.zeros(w)
    for r in range(-k, h):
        _slide_columns(data, background, r, k, h, w, cm, cx, cy)
        if r < 0:
            continue
        m = 0.0
        x = 0.0
        for c in range(min(k, w)):
            m += cm[c]
            x += cx[c]
        for c in range(w):
            add = c + k
            if add < w:
                m += cm[add]
                x += cx[add]
            drop = c - k - 1
            if drop >= 0:
                m -= cm[drop]
                x -= cx[drop]
            if not core[r, c]:
                continue
            mean = x / m if m >= 2 else 0.0
            if mean < 0:
                mean = 0.0
            v = data[r, c]
            if v > threshold and v >= mean + nsig_s * np.sqrt(gain * mean):
                strong[r, c] = True
    return strong


def box_sums(
    data: NDArray[np.float32], valid: NDArray[np.bool_], half_size: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Count, sum and sum of squares of the valid pixels in the ``(2k+1)**2`` box around each pixel.

    The box is cut at the image border. Running sums along rows then columns (no cancellation across
    the whole image as with one summed-area table).

    Examples
    --------
    >>> m, x, y = box_sums(np.ones((3, 3), np.float32), np.ones((3, 3), bool), 1)
    >>> m.astype(int).tolist()
    [[4, 6, 4], [6, 9, 6], [4, 6, 4]]
    """
    return _box_sums_kernel(
        np.ascontiguousarray(data, dtype=np.float32),
        np.ascontiguousarray(valid, dtype=np.bool_),
        int(half_size),
        int(half_size),
    )


@dataclass(frozen=True)
class DispersionConfig(SelectionConfig):
    """Parameters of the dispersion finders (names and meanings as in DIALS ``spotfinder.threshold``).

    Attributes
    ----------
    gain : float or None
        Detector units per photon. None estimates it as the median index of dispersion
        (variance / mean) of the frame's local boxes, which is 1 for a photon-counting detector and
        puts integrating detectors in ADU on the same footing.
    kernel_size : int
        Half-width ``k`` of the ``(2k+1)**2`` local box.
    sigma_background : float
        A pixel's box is dispersed when ``variance / mean > gain * (1 + sigma_background * sqrt(2 / (n - 1)))``.
    sigma_strong : float
        A strong pixel exceeds ``mean + sigma_strong * sqrt(gain * mean)``.
    min_local : int
        Fewest valid pixels in the box; 0 means the whole box.
    global_threshold : float
        A strong pixel exceeds this value too.
    min_spot_size, max_spot_size : int
        Accepted pixel counts of a spot.
    connectivity : {4, 8}
        Neighbourhood that joins strong pixels into spots.
    local_bg_radius : int
        Reported background and SNR come from the non-strong pixels within ``2 * local_bg_radius``.
    min_snr : float
        Lowest accepted SNR of a spot's integrated intensity (0 keeps all, as DIALS does).
    significance_snr : float
        Spots must be unlikely to be background fluctuations at this many sigma, by the Poisson tail test
        of :func:`~braggml.classical._common.poisson_significant` with the photon gain measured from the
        radial background (``gain`` when given). It removes the single photons, charge-shared photon
        pairs and textured-background spots that integrating detectors in ADU give; 0 turns it off
        (DIALS has no such test).
    """

    gain: float | None = None
    kernel_size: int = 3
    sigma_background: float = 6.0
    sigma_strong: float = 3.0
    min_local: int = 2
    global_threshold: float = 0.0
    min_spot_size: int = 3
    max_spot_size: int = 1000
    connectivity: int = 8
    local_bg_radius: int = 3
    min_snr: float = 0.0
    significance_snr: float = 5.0

    def __post_init__(self) -> None:
        if self.gain is not None:
            check_positive("gain", self.gain)
        if int(self.kernel_size) != self.kernel_size or self.kernel_size < 1:
            raise ConfigError(f"kernel_size must be an integer >= 1, got {self.kernel_size!r}")
        check_non_negative("sigma_background", self.sigma_background)
        check_non_negative("sigma_strong", self.sigma_strong)
        n_box = (2 * self.kernel_size + 1) ** 2
        if int(self.min_local) != self.min_local or not (self.min_local == 0 or 2 <= self.min_local <= n_box):
            raise ConfigError(f"min_local must be 0 or an integer in 2..{n_box}, got {self.min_local!r}")
        check_non_negative("global_threshold", self.global_threshold)
        if int(self.min_spot_size) != self.min_spot_size or self.min_spot_size < 1:
            raise ConfigError(f"min_spot_size must be an integer >= 1, got {self.min_spot_size!r}")
        if int(self.max_spot_size) != self.max_spot_size or self.max_spot_size < self.min_spot_size:
            raise ConfigError(
                f"max_spot_size ({self.max_spot_size!r}) must be an integer >= min_spot_size ({self.min_spot_size!r})"
            )
        if self.connectivity not in (4, 8):
            raise ConfigError(f"connectivity must be 4 or 8, got {self.connectivity!r}")
        if int(self.local_bg_radius) != self.local_bg_radius or self.local_bg_radius < 1:
            raise ConfigError(f"local_bg_radius must be an integer >= 1, got {self.local_bg_radius!r}")
        check_non_negative("min_snr", self.min_snr)
        check_non_negative("significance_snr", self.significance_snr)
        self._check_selection()


@numba.njit(cache=True, nogil=True)
def _tile_dispersion_kernel(data, use, block, step):  # pragma: no cover - compiled
    h, w = data.shape
    hb = h // block
    wb = w // block
    out = np.empty(((hb + step - 1) // step) * ((wb + step - 1) // step))
    n_out = 0
    for tr in range(0, hb, step):
        for tc in range(0, wb, step):
            n = 0.0
            s1 = 0.0
            s2 = 0.0
            for r in range(tr * block, tr * block + block):
                for c in range(tc * block, tc * block + block):
                    if use[r, c]:
                        v = np.float64(data[r, c])
                        n += 1.0
                        s1 += v
                        s2 += v * v
            if n >= block * block // 2 and s1 > 0:
                out[n_out] = (n * s2 - s1 * s1) / (s1 * (n - 1))
                n_out += 1
    return out[:n_out]


def estimate_dispersion_gain(data: NDArray[np.float32], use: NDArray[np.bool_], block: int = 7, step: int = 2) -> float:
    """Median index of dispersion (variance / mean) of non-overlapping ``block x block`` tiles.

    Every ``step``-th tile in each direction is used; tiles need a positive mean and at least half their
    pixels valid. Returns 1 when none qualify.
    """
    ratio = _tile_dispersion_kernel(
        np.ascontiguousarray(data, dtype=np.float32), np.ascontiguousarray(use), int(block), int(step)
    )
    ratio = ratio[np.isfinite(ratio)]
    if ratio.size == 0:
        return 1.0
    g = float(np.median(ratio))
    return g if g > 0 else 1.0


class DispersionFinder(ReportingFinder):
    """DIALS' ``dispersion`` threshold, then connected spots, spot-size filters and ring rejection.

    A pixel is strong when, over the valid pixels of its ``(2k+1)**2`` box (``n`` of them, mean ``mu``,
    sample variance ``var``): ``n >= min_local``, ``var / mu > gain * (1 + sigma_background *
    sqrt(2 / (n - 1)))``, ``I > mu + sigma_strong * sqrt(gain * mu)`` and ``I > global_threshold``.
    Strong pixels are grouped inside each panel; spots of ``min_spot_size``..``max_spot_size`` pixels
    are kept. The centroid is weighted by the values above the local background.

    References
    ----------
    Winter, G. et al. (2018). DIALS: implementation and evaluation of a new integration package.
    Acta Cryst. D74, 85-97. doi:10.1107/S2059798317017235
    Parkhurst, J. M. et al. (2016). Robust background modelling in DIALS. J. Appl. Cryst. 49,
    1912-1921. doi:10.1107/S1600576716013595
    """

    name: ClassVar[str] = "dispersion"
    config_class: ClassVar[type] = DispersionConfig
    config: DispersionConfig
    extended: ClassVar[bool] = False

    def strong_pixels(self, data: NDArray[np.float32], valid: NDArray[np.bool_]) -> tuple[NDArray[np.bool_], float]:
        """The strong-pixel map of a prepared frame and the gain used."""
        cfg = self.config
        k = cfg.kernel_size
        use = valid & (data < _BIG)
        gain = cfg.gain if cfg.gain is not None else estimate_dispersion_gain(data, use)
        min_count = cfg.min_local if cfg.min_local > 0 else (2 * k + 1) ** 2
        dispersed, strong = _dispersion_kernel(
            data,
            use,
            k,
            gain,
            cfg.sigma_background,
            cfg.sigma_strong,
            min_count,
            cfg.global_threshold,
            np.ascontiguousarray(valid),
        )
        if not self.extended:
            return strong, gain
        # extended: keep only the core of the dispersed regions, then test against the mean of the
        # remaining background in a box two pixels wider
        if k > 1:
            core = ndimage.minimum_filter(dispersed.view(np.uint8), size=2 * k - 1, mode="constant", cval=1) > 0
        else:
            core = dispersed
        strong = _extended_final_kernel(data, use & ~core, core, k + 2, gain, cfg.sigma_strong, cfg.global_threshold)
        return strong, gain

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
        valid = ~frame.bad
        strong, gain = self.strong_pixels(frame.data, valid)
        report.gain = gain
        radius = np.asarray(frame.maps.radius_px)
        if cfg.min_res > 0 or np.isfinite(cfg.max_res):
            strong &= (radius >= cfg.min_res) & (radius <= cfg.max_res)
        labels, n = label_within_panels(strong, frame.panel_id, connectivity=cfg.connectivity)
        report.n_candidates = n
        if n == 0:
            return PeakList.empty(1)
        want_rings = cfg.reject_powder_rings or (cfg.ice_rings == "auto" and frame.maps.resolution_a is not None)
        rings = None
        photon_gain = gain
        if want_rings or cfg.significance_snr > 0:
            # the half-count floor of whole-number data keeps the gain fit off near-empty bins: on a photon-counting
            # frame of a few photons per thousand pixels their clipped variances are noise (a gain of 126, not 1)
            sigma_floor = noise_floor(frame.data, valid, frame.integer)
            stats = radial_statistics(
                frame.data, valid, radius, frame.panel_id, snr=5.0, iterations=5, per_panel=True,
                sigma_floor=sigma_floor,
            )
            if want_rings:
                sectors = (
                    azimuth_sectors(frame.maps.radius_px, frame.maps.panel_id) if cfg.reject_powder_rings else None
                )
                rings = ring_evidence(frame.data, valid, stats, contrast=cfg.powder_ring_contrast, sectors=sectors)
            if cfg.gain is None:
                photon_gain = estimate_gain_per_panel(stats)
                if photon_gain == 0 and frame.integer:
                    photon_gain = 1.0
        near_bad = None
        if self.extended and cfg.kernel_size > 1:
            # core pixels keep kernel_size pixels away from bad ones: count that margin as touching
            size = 2 * cfg.kernel_size - 1
            near_bad = ndimage.maximum_filter(frame.bad.view(np.uint8), size=size, mode="constant") > 0
        measured = measure_peaks(
            frame,
            labels,
            n,
            excluded=strong,
            ring_radius=2 * cfg.local_bg_radius,
            near_bad=near_bad,
            size_range=(cfg.min_spot_size, cfg.max_spot_size),
        )
        keep = np.ones(n, bool)
        small = measured.n_pixels < cfg.min_spot_size
        report.count("too_small", int(small.sum()))
        keep &= ~small
        large = keep & (measured.n_pixels > cfg.max_spot_size)
        report.count("too_large", int(large.sum()))
        keep &= ~large
        snr = measured.snr(photon_gain)
        if cfg.min_snr > 0:
            low = keep & ~(snr >= cfg.min_snr)
            report.count("low_snr", int(low.sum()))
            keep &= ~low
        if cfg.significance_snr > 0:
            rate = rate_at_peaks(measured, stats.bin_index, background_rate(frame.data, valid, stats, photon_gain))
            weak = keep & ~poisson_significant(measured, photon_gain, cfg.significance_snr, rate)
            report.count("not_significant", int(weak.sum()))
            keep &= ~weak
        return select_peaks(measured, keep, snr, frame, cfg, report, rings)


class DispersionExtendedFinder(DispersionFinder):
    """DIALS' ``dispersion_extended`` threshold (the default of ``dials.find_spots``).

    Boxes whose index of dispersion exceeds the background test mark candidate regions; only pixels at
    least ``kernel_size`` pixels (Chebyshev distance) inside such a region stay candidates, and they are
    strong when above ``mu2 + sigma_strong * sqrt(gain * mu2)``, with ``mu2`` the mean of the remaining
    background pixels in a box of half-width ``kernel_size + 2``. Large, smooth features such as rings
    disperse less than the sharp edges of spots, so this variant fires less on them.
    """

    name: ClassVar[str] = "dispersion_extended"
    extended: ClassVar[bool] = True
