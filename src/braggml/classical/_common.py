"""Building blocks shared by the classical finders: input checks, panel-aware labelling and peak measurement.

All compiled kernels work on C-contiguous float32 frames, a bool map of bad pixels and an int32 panel map,
and never write to their inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numba
import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError
from ..finder import PeakFinder
from ..geometry import PixelMaps
from ..peaks import PeakList

if TYPE_CHECKING:
    from .rings import RingEvidence

__all__ = [
    "FindReport",
    "PreparedFrame",
    "prepare_frame",
    "label_within_panels",
    "measure_peaks",
    "PeakMeasurements",
    "check_positive",
    "check_non_negative",
    "check_choice",
    "poisson_tail",
]


# -- parameter checks --------------------------------------------------------------------------------------
def check_positive(name: str, value: float) -> None:
    """Raise :class:`ConfigError` unless ``value > 0``."""
    if not np.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")


def check_non_negative(name: str, value: float) -> None:
    """Raise :class:`ConfigError` unless ``value >= 0`` (infinity allowed)."""
    if np.isnan(value) or value < 0:
        raise ConfigError(f"{name} must be >= 0, got {value!r}")


def check_choice(name: str, value: object, choices: tuple[object, ...]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


# -- per-call report ---------------------------------------------------------------------------------------
@dataclass
class FindReport:
    """What happened to the candidates of the last frame a finder processed.

    Attributes
    ----------
    n_candidates : int
        Connected groups of candidate pixels before any test.
    rejected : dict of str to int
        Number of groups rejected per cause (``"too_small"``, ``"too_large"``, ``"low_snr"``,
        ``"below_ring_max"``, ``"resolution"``, ``"masked"``, ``"ice_ring"``, ``"powder_ring"``,
        ``"max_num_peaks"``, ...), only causes that occurred.
    touches_mask : (P,) bool ndarray
        For each returned peak, whether it touches a bad pixel, a panel gap or another panel.
    on_ice_ring : (P,) bool ndarray
        For each returned peak, whether it lies on an ice ring (set when ice rings are flagged, not
        rejected).
    gain : float
        Detector units per photon used for the frame (given or estimated).
    """

    n_candidates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    touches_mask: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))
    on_ice_ring: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))
    gain: float = float("nan")

    def count(self, cause: str, n: int) -> None:
        """Add ``n`` rejections for ``cause`` (nothing when ``n == 0``)."""
        if n:
            self.rejected[cause] = self.rejected.get(cause, 0) + int(n)


# -- input preparation -------------------------------------------------------------------------------------
class ReportingFinder(PeakFinder):
    """Base of the classical finders: keeps the :class:`FindReport` of the last frame found."""

    def __init__(self, config: object = None, **params: object) -> None:
        super().__init__(config, **params)
        self.last_report = FindReport()

    @property
    def last_rejections(self) -> dict[str, int]:
        """Candidates of the last frame rejected, by cause (see :class:`FindReport`)."""
        return dict(self.last_report.rejected)


@dataclass(frozen=True)
class PreparedFrame:
    """A frame ready for the compiled kernels.

    Attributes
    ----------
    data : (H, W) float32 ndarray
        A private copy of the frame, bad pixels set to 0.
    bad : (H, W) bool ndarray
        Bad pixels: the user's mask, the geometry's mask, pixels of no panel and non-finite values.
    panel_id : (H, W) int32 ndarray
        Panel of each pixel, -1 where there is none.
    maps : PixelMaps
        The maps used (the fallback when none were given).
    integer : bool
        Whether every good pixel holds a whole number (photon counts or raw ADU).
    """

    data: NDArray[np.float32]
    bad: NDArray[np.bool_]
    panel_id: NDArray[np.int32]
    maps: PixelMaps
    integer: bool = False


def prepare_frame(image: NDArray, mask: NDArray[np.bool_] | None, maps: PixelMaps | None) -> PreparedFrame:
    """Check a frame, its mask and maps, and build the float32 copy and the combined bad-pixel map.

    Parameters
    ----------
    image : (H, W) ndarray
        Any real dtype (bool, integers, floats); not modified.
    mask : (H, W) bool ndarray or None
        True marks a bad pixel.
    maps : PixelMaps or None
        :meth:`PixelMaps.fallback` when None.

    Raises
    ------
    ValueError
        If the image is not 2-D and real, or the mask or maps have another shape.
    """
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"image must be 2-D (H, W), got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise ValueError(f"image must hold real numbers, got dtype {arr.dtype}")
    if maps is None:
        maps = PixelMaps.fallback(arr.shape)
    elif maps.shape != arr.shape:
        raise ValueError(f"maps have shape {maps.shape}, image has {arr.shape}")
    if mask is not None and np.shape(mask) != arr.shape:
        raise ValueError(f"mask has shape {np.shape(mask)}, image has {arr.shape}")
    data = np.array(arr, dtype=np.float32, order="C", copy=True)
    panel_id = np.ascontiguousarray(maps.panel_id, dtype=np.int32)
    geometry = np.ascontiguousarray(maps.mask, dtype=bool)
    if mask is None:
        user = geometry  # the same map twice costs nothing
    else:
        user = np.ascontiguousarray(mask, dtype=bool)
    if arr.dtype.kind in "biu":
        # integers are whole and finite: only the masks decide
        bad, integer = _combine_bad_integer_kernel(data, user, geometry, panel_id)
    else:
        bad, integer = _combine_bad_kernel(data, user, geometry, panel_id)
    return PreparedFrame(data=data, bad=bad, panel_id=panel_id, maps=maps, integer=bool(integer))


@numba.njit(cache=True, nogil=True)
def _combine_bad_kernel(data, user, geometry, panel_id):  # pragma: no cover - compiled
    """Bad-pixel map (masks, pixels of no panel, non-finite values; bad pixels set to 0 in ``data``)
    and whether every good pixel holds a whole number (False without good pixels)."""
    d = data.ravel()
    u = user.ravel()
    g = geometry.ravel()
    p = panel_id.ravel()
    bad = np.empty(d.size, np.bool_)
    n_good = 0
    fractional = False
    for i in range(d.size):
        v = d[i]
        b = u[i] | g[i] | (p[i] < 0) | (not np.isfinite(v))
        bad[i] = b
        d[i] = np.float32(0.0) if b else v
        n_good += not b
        fractional |= (not b) & (v != np.floor(v))
    return bad.reshape(data.shape), n_good > 0 and not fractional


@numba.njit(cache=True, nogil=True)
def _combine_bad_integer_kernel(data, user, geometry, panel_id):  # pragma: no cover - compiled
    """:func:`_combine_bad_kernel` for frames converted from an integer dtype (whole and finite)."""
    d = data.ravel()
    u = user.ravel()
    g = geometry.ravel()
    p = panel_id.ravel()
    bad = np.empty(d.size, np.bool_)
    n_good = 0
    for i in range(d.size):
        b = u[i] | g[i] | (p[i] < 0)
        bad[i] = b
        d[i] = np.float32(0.0) if b else d[i]
        n_good += not b
    return bad.reshape(data.shape), n_good > 0


# -- connected components inside panels --------------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def _flood_labels(mask, panel_id, seeds, eight, radius, stack_size):  # pragma: no cover - compiled
    """Label the ``mask`` pixels of each seed's panel connected to it (8-connected, or 4-connected
    without ``eight``), seeds in order, a seed already labelled adding nothing; with ``radius >= 0``
    only pixels within ``radius`` of the seed in both directions join. ``stack_size`` must bound the
    pixels one label can take."""
    h, w = mask.shape
    labels = np.zeros((h, w), np.int32)
    stack = np.empty(stack_size, np.int64)
    n = 0
    for seed in seeds:
        r0 = seed // w
        c0 = seed - r0 * w
        if labels[r0, c0] != 0:
            continue
        n += 1
        p = panel_id[r0, c0]
        labels[r0, c0] = n
        stack[0] = seed
        # the rows and columns a pixel of this label may take
        r_lo, r_hi, c_lo, c_hi = 0, h, 0, w
        if radius >= 0:
            r_lo, r_hi = max(r0 - radius, 0), min(r0 + radius + 1, h)
            c_lo, c_hi = max(c0 - radius, 0), min(c0 + radius + 1, w)
        top = 1
        while top > 0:
            top -= 1
            r = stack[top] // w
            c = stack[top] - r * w
            for dr in range(-1, 2):
                rr = r + dr
                if rr < r_lo or rr >= r_hi:
                    continue
                for dc in range(-1, 2):
                    if dr == 0 and dc == 0:
                        continue
                    if not eight and dr != 0 and dc != 0:
                        continue
                    cc = c + dc
                    if cc < c_lo or cc >= c_hi:
                        continue
                    if mask[rr, cc] and labels[rr, cc] == 0 and panel_id[rr, cc] == p:
                        labels[rr, cc] = n
                        stack[top] = rr * w + cc
                        top += 1
    return labels, n


def label_within_panels(
    candidate: NDArray[np.bool_],
    panel_id: NDArray[np.int32],
    *,
    connectivity: int = 8,
    members: NDArray[np.int64] | None = None,
) -> tuple[NDArray[np.int32], int]:
    """Label connected groups of candidate pixels, never joining pixels of different panels.

    Parameters
    ----------
    candidate : (H, W) bool ndarray
    panel_id : (H, W) int32 ndarray
    connectivity : {4, 8}
        Neighbourhood of a pixel.
    members : (C,) int64 ndarray, optional
        Flat indices of the candidate pixels in raster order, when already known.

    Returns
    -------
    labels : (H, W) int32 ndarray
        0 for non-candidates, 1..n numbered in raster order of each group's first pixel.
    n : int
        Number of groups.

    Examples
    --------
    >>> cand = np.array([[1, 1, 0, 1]], bool)
    >>> labels, n = label_within_panels(cand, np.array([[0, 0, 0, 1]], np.int32))
    >>> labels.tolist(), n
    ([[1, 1, 0, 2]], 2)
    """
    candidate = np.ascontiguousarray(candidate, dtype=np.bool_)
    seeds = np.flatnonzero(candidate).astype(np.int64) if members is None else members
    labels, n = _flood_labels(
        candidate, np.ascontiguousarray(panel_id, dtype=np.int32), seeds, connectivity == 8, -1, max(seeds.size, 16)
    )
    return labels, int(n)


# -- measuring labelled groups -----------------------------------------------------------------------------
#: Share of a peak's maximum above its local background that makes a pixel part of the peak's core.
CORE_FRACTION = 0.5


@numba.njit(cache=True, nogil=True)
def _measure_kernel(
    data,
    bad,
    panel_id,
    labels,
    n,
    excluded,
    bin_index,
    bin_offset,
    bin_sigma,
    ring_radius,
    members,
    near_bad,
    min_pixels,
    max_pixels,
    core_fraction,
):  # pragma: no cover - compiled
    h, w = data.shape
    counts = np.zeros(n + 1, np.int64)
    for q in members:
        counts[labels[q // w, q % w]] += 1
    starts = np.zeros(n + 2, np.int64)
    for k in range(1, n + 1):
        starts[k + 1] = starts[k] + counts[k]
    fill = starts.copy()
    pix_r = np.empty(starts[n + 1], np.int32)
    pix_c = np.empty(starts[n + 1], np.int32)
    for q in members:
        r = q // w
        c = q % w
        lab = labels[r, c]
        pix_r[fill[lab]] = r
        pix_c[fill[lab]] = c
        fill[lab] += 1

    npix = np.zeros(n, np.int64)
    row = np.zeros(n, np.float64)
    col = np.zeros(n, np.float64)
    total = np.zeros(n, np.float64)
    background = np.zeros(n, np.float64)
    sigma = np.zeros(n, np.float64)
    n_ring = np.zeros(n, np.int64)
    max_raw = np.zeros(n, np.float64)
    max_sub = np.zeros(n, np.float64)
    ring_max = np.zeros(n, np.float64)
    touches = np.zeros(n, np.bool_)
    inner = np.zeros(n, np.bool_)
    enclosed = np.zeros(n, np.bool_)
    rr2 = ring_radius * ring_radius
    for k in range(n):
        lab = k + 1
        lo = starts[lab]
        hi = starts[lab + 1]
        m = hi - lo
        npix[k] = m
        if m < min_pixels or m > max_pixels:
            # not measured: rejected on size by the caller (most groups are single noise pixels)
            row[k] = np.mean(pix_r[lo:hi].astype(np.float64))
            col[k] = np.mean(pix_c[lo:hi].astype(np.float64))
            continue
        # centre for the background ring: weights above the radial offset (geometric centre if none)
        sw = 0.0
        sr = 0.0
        sc = 0.0
        mx = -np.inf
        p = panel_id[pix_r[lo], pix_c[lo]]
        for i in range(lo, hi):
            r = pix_r[i]
            c = pix_c[i]
            if data[r, c] > mx:
                mx = data[r, c]
            v = data[r, c] - bin_offset[bin_index[r, c]]
            if v > 0:
                sw += v
                sr += v * r
                sc += v * c
        if sw > 0:
            cr = int(np.rint(sr / sw))
            cc = int(np.rint(sc / sw))
        else:
            cr = int(np.rint(np.mean(pix_r[lo:hi].astype(np.float64))))
            cc = int(np.rint(np.mean(pix_c[lo:hi].astype(np.float64))))
        # local background and noise from the disk around the centre, excluding candidate pixels
        s1 = 0.0
        s2 = 0.0
        nb = 0
        bmax = -np.inf
        for dr in range(-ring_radius, ring_radius + 1):
            r = cr + dr
            if r < 0 or r >= h:
                continue
            for dc in range(-ring_radius, ring_radius + 1):
                if dr * dr + dc * dc > rr2:
                    continue
                c = cc + dc
                if c < 0 or c >= w:
                    continue
                if bad[r, c] or excluded[r, c] or panel_id[r, c] != p:
                    continue
                v = data[r, c]
                s1 += v
                s2 += v * v
                nb += 1
                if v > bmax:
                    bmax = v
        b = bin_offset[bin_index[cr, cc]] if (0 <= cr < h and 0 <= cc < w) else 0.0
        if nb >= 2:
            b = s1 / nb
            var = s2 / nb - b * b
            sg = np.sqrt(var) if var > 0 else 0.0
        else:
            sg = bin_sigma[bin_index[pix_r[lo], pix_c[lo]]]
            bmax = b
        n_ring[k] = nb
        background[k] = b
        sigma[k] = sg
        ring_max[k] = bmax
        # background-subtracted sums over the peak; centroid with positive weights over the peak and
        # its unlabelled good neighbours of the same panel (the shoulders a threshold cuts off)
        # the core (pixels at least core_fraction of the maximum above the background) decides whether
        # the peak touches the mask: a faint tail reaching a gap does not make a peak unmeasurable
        core_level = core_fraction * (mx - b)
        t = 0.0
        sw = 0.0
        sr = 0.0
        sc = 0.0
        for i in range(lo, hi):
            r = pix_r[i]
            c = pix_c[i]
            v = data[r, c]
            d = v - b
            t += d
            if d > 0:
                sw += d
                sr += d * r
                sc += d * c
            core = d >= core_level
            edge = False
            for dr in range(-1, 2):
                r2 = r + dr
                if r2 < 0 or r2 >= h:
                    continue
                for dc in range(-1, 2):
                    c2 = c + dc
                    if c2 < 0 or c2 >= w:
                        continue
                    off = bad[r2, c2] or panel_id[r2, c2] != p
                    if off or near_bad[r2, c2]:
                        touches[k] = True
                        edge = True
                        if core:
                            # a bad pixel with the peak on its far side lies inside the peak
                            r3 = r2 + dr
                            c3 = c2 + dc
                            if 0 <= r3 < h and 0 <= c3 < w and labels[r3, c3] == lab:
                                enclosed[k] = True
                    if off:
                        continue
                    if labels[r2, c2] != 0:
                        continue
                    labels[r2, c2] = -lab  # a shoulder pixel, counted once
                    d2 = data[r2, c2] - b
                    if d2 > 0:
                        sw += d2
                        sr += d2 * r2
                        sc += d2 * c2
            if core and not edge:
                inner[k] = True
        total[k] = t
        max_raw[k] = mx
        max_sub[k] = mx - b
        if sw > 0:
            row[k] = sr / sw
            col[k] = sc / sw
        else:
            row[k] = np.mean(pix_r[lo:hi].astype(np.float64))
            col[k] = np.mean(pix_c[lo:hi].astype(np.float64))
    return (
        npix,
        row,
        col,
        total,
        background,
        sigma,
        n_ring,
        max_raw,
        max_sub,
        ring_max,
        touches,
        (touches & ~inner) | enclosed,
    )


@dataclass(frozen=True)
class PeakMeasurements:
    """Per-group measurements (one entry per label 1..n, in label order).

    Attributes
    ----------
    n_pixels, row, col, intensity, background, sigma, n_ring, max_value, max_above_background,
    ring_max, touches_mask, edge_bound : (n,) ndarrays
        Pixel count; sub-pixel centroid weighted by the positive background-subtracted values of the
        peak's pixels and their unlabelled good neighbours; integrated
        background-subtracted intensity; local background per pixel and its standard deviation over
        ``n_ring`` ring pixels; highest raw value and highest background-subtracted value; highest
        ring value; whether the group touches a bad pixel, a gap or another panel; whether the
        mask cuts into the peak: every pixel of its core (at least ``core_fraction`` of its maximum
        above the local background) touches a bad pixel, gap or other panel (the bright part of the
        peak may lie under the mask, or the group is an artefact of the mask's border such as the hot
        edge of a sensor), or a bad pixel next to the core has the peak on its far side (a masked
        pixel inside the peak).
    """

    n_pixels: NDArray[np.int64]
    row: NDArray[np.float64]
    col: NDArray[np.float64]
    intensity: NDArray[np.float64]
    background: NDArray[np.float64]
    sigma: NDArray[np.float64]
    n_ring: NDArray[np.int64]
    max_value: NDArray[np.float64]
    max_above_background: NDArray[np.float64]
    ring_max: NDArray[np.float64]
    touches_mask: NDArray[np.bool_]
    edge_bound: NDArray[np.bool_]

    def snr(self, gain: float = 0.0) -> NDArray[np.float64]:
        """Signal-to-noise ratio of the integrated intensity.

        ``intensity / sqrt(n_pixels * sigma**2 + gain * max(intensity, 0))``: the background noise of
        the peak's pixels plus, when ``gain`` (detector units per photon) is positive, the shot noise of
        the peak itself.
        """
        var = self.n_pixels * self.sigma**2 + max(gain, 0.0) * np.maximum(self.intensity, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = self.intensity / np.sqrt(var)
        return np.where(var > 0, out, np.where(self.intensity > 0, np.inf, 0.0))


def measure_peaks(
    frame: PreparedFrame,
    labels: NDArray[np.int32],
    n: int,
    *,
    excluded: NDArray[np.bool_],
    ring_radius: int,
    bin_index: NDArray[np.int32] | None = None,
    bin_offset: NDArray[np.float32] | None = None,
    bin_sigma: NDArray[np.float32] | None = None,
    near_bad: NDArray[np.bool_] | None = None,
    size_range: tuple[int, int] = (1, 2**31 - 1),
    members: NDArray[np.int64] | None = None,
    core_fraction: float = CORE_FRACTION,
) -> PeakMeasurements:
    """Measure every labelled group: local background from a disk, centroid, intensity, maximum.

    Parameters
    ----------
    frame : PreparedFrame
    labels : (H, W) int32 ndarray
        Groups 1..n from :func:`label_within_panels`; used as scratch space (shoulder pixels of the
        centroid are marked with negative labels).
    n : int
        Number of groups.
    excluded : (H, W) bool ndarray
        Pixels never used for the local background (all candidate pixels).
    ring_radius : int
        Radius in pixels of the disk, centred on the group's rounded centroid, whose unexcluded good
        pixels of the same panel give the local background.
    bin_index, bin_offset, bin_sigma : optional
        Radial-bin index of each pixel and the bins' background and noise: the centroid used to place the
        disk weights values above the bin background, and a group with no ring pixels takes them.
    near_bad : (H, W) bool ndarray, optional
        Extra pixels that count as bad when deciding whether a group touches the mask (for finders
        whose groups keep a distance from bad pixels by construction).
    size_range : (int, int)
        Only groups with this many pixels (inclusive) are measured; the others get their pixel count
        and geometric centre only (the caller rejects them on size).
    members : (C,) int64 ndarray, optional
        Flat indices, in raster order, of the labelled pixels, when already known.
    core_fraction : float
        A pixel belongs to the core of its peak when it lies at least this share of the peak's maximum
        above the local background (see ``edge_bound``).
    """
    if bin_index is None or bin_offset is None or bin_sigma is None:
        bin_index = np.zeros(frame.data.shape, np.int32)
        bin_offset = np.zeros(1, np.float32)
        bin_sigma = np.zeros(1, np.float32)
    out = _measure_kernel(
        frame.data,
        frame.bad,
        frame.panel_id,
        labels,
        n,
        np.ascontiguousarray(excluded, dtype=np.bool_),
        np.ascontiguousarray(bin_index, dtype=np.int32),
        np.ascontiguousarray(bin_offset, dtype=np.float32),
        np.ascontiguousarray(bin_sigma, dtype=np.float32),
        int(ring_radius),
        np.flatnonzero(labels > 0).astype(np.int64) if members is None else members,
        np.ascontiguousarray(frame.bad if near_bad is None else near_bad, dtype=np.bool_),
        int(size_range[0]),
        int(min(size_range[1], 2**31 - 1)),
        float(core_fraction),
    )
    return PeakMeasurements(*out)


def peaklist_from(measured: PeakMeasurements, keep: NDArray[np.bool_], snr: NDArray[np.float64]) -> PeakList:
    """A one-frame :class:`PeakList` of the kept groups (score NaN)."""
    idx = np.flatnonzero(keep)
    return PeakList.from_columns(
        n_frames=1,
        row=measured.row[idx],
        col=measured.col[idx],
        intensity=measured.intensity[idx],
        background=measured.background[idx],
        snr=snr[idx],
        n_pixels=measured.n_pixels[idx],
        max_value=measured.max_value[idx],
        frame=np.zeros(idx.size, np.int64),
    )


# -- options and final selection shared by all classical finders --------------------------------------------
@dataclass(frozen=True)
class SelectionConfig:
    """Options every classical finder applies after measuring its candidate peaks.

    Attributes
    ----------
    min_res, max_res : float
        Accepted range of the peak's distance from the beam, in pixels (as in OM and CrystFEL, where
        ``min_res`` is the inner and ``max_res`` the outer radius).
    max_num_peaks : int
        Keep at most this many peaks (the highest-SNR ones).
    masked_peaks : {"drop", "keep"}
        Peaks whose core (the pixels at least half the peak's maximum above the local background)
        lies entirely along bad pixels, a panel gap or another panel, or that hold a bad pixel inside,
        are dropped: their maximum may be hidden, or they are artefacts of the mask's border. A peak
        that only reaches the mask with its tail or one side of its core is kept, as all peaks are
        with ``"keep"``; peaks touching the mask are flagged in the finder's
        ``last_report.touches_mask``.
    ice_rings : {"reject", "auto", "flag", "off"}
        What to do with peaks at ice-Ih resolutions; needs ``maps.resolution_a`` (ignored without it).
        ``"auto"`` rejects them only at the ice rings that the frame shows (a part of the annulus
        standing above the neighbouring radii), ``"flag"`` keeps them and marks them in
        ``last_report.on_ice_ring``.
    ice_ring_width_inv_a : float
        Half-width of an ice ring in 1/d (inverse Angstrom).
    reject_powder_rings : bool
        Drop peaks at radii where the clipped background profile shows a sharp ring.
    powder_ring_contrast : float
        A pixel counts towards a ring when it stands this many background sigmas above the profile of the
        neighbouring radii (see :func:`braggml.classical.rings.powder_ring_bins`).
    """

    min_res: float = 0.0
    max_res: float = float("inf")
    max_num_peaks: int = 2048
    masked_peaks: Literal["drop", "keep"] = "drop"
    ice_rings: Literal["reject", "auto", "flag", "off"] = "auto"
    ice_ring_width_inv_a: float = 0.004
    reject_powder_rings: bool = True
    powder_ring_contrast: float = 1.0

    def _check_selection(self) -> None:
        check_non_negative("min_res", self.min_res)
        check_non_negative("max_res", self.max_res)
        if self.max_res <= self.min_res:
            raise ConfigError(f"max_res ({self.max_res}) must be greater than min_res ({self.min_res})")
        if int(self.max_num_peaks) != self.max_num_peaks or self.max_num_peaks < 1:
            raise ConfigError(f"max_num_peaks must be an integer >= 1, got {self.max_num_peaks!r}")
        check_choice("masked_peaks", self.masked_peaks, ("drop", "keep"))
        check_choice("ice_rings", self.ice_rings, ("reject", "auto", "flag", "off"))
        check_positive("ice_ring_width_inv_a", self.ice_ring_width_inv_a)
        check_positive("powder_ring_contrast", self.powder_ring_contrast)


def select_peaks(
    measured: PeakMeasurements,
    keep: NDArray[np.bool_],
    snr: NDArray[np.float64],
    frame: PreparedFrame,
    config: SelectionConfig,
    report: FindReport,
    rings: RingEvidence | None,
) -> PeakList:
    """Apply resolution limits, mask, powder/ice-ring rejection and ``max_num_peaks``; build the list.

    Each rejected peak is counted once in ``report.rejected``, under the first cause that applies.
    """
    from .rings import peaks_on_rings

    keep = keep.copy()
    h, w = frame.data.shape
    ri = np.clip(np.rint(measured.row).astype(np.int64), 0, h - 1)
    ci = np.clip(np.rint(measured.col).astype(np.int64), 0, w - 1)
    radius = np.asarray(frame.maps.radius_px)[ri, ci].astype(np.float64)

    def reject(cause: str, bad: NDArray[np.bool_]) -> None:
        hit = keep & bad
        report.count(cause, int(hit.sum()))
        keep[hit] = False

    reject("resolution", (radius < config.min_res) | (radius > config.max_res))
    if config.masked_peaks == "drop":
        reject("masked", measured.edge_bound)
    resolution = None if frame.maps.resolution_a is None else np.asarray(frame.maps.resolution_a)[ri, ci]
    on_powder, ice_rejected, ice = peaks_on_rings(
        radius,
        resolution,
        rings,
        reject_powder_rings=config.reject_powder_rings,
        ice_rings=config.ice_rings,
        ice_ring_width_inv_a=config.ice_ring_width_inv_a,
        flat_index=ri * w + ci,
    )
    reject("powder_ring", on_powder)
    reject("ice_ring", ice_rejected)
    idx = np.flatnonzero(keep)
    if idx.size > config.max_num_peaks:
        order = np.argsort(-snr[idx], kind="stable")
        dropped = idx[order[config.max_num_peaks :]]
        keep[dropped] = False
        report.count("max_num_peaks", dropped.size)
    idx = np.flatnonzero(keep)
    report.touches_mask = measured.touches_mask[idx].copy()
    report.on_ice_ring = ice[idx].copy()
    return peaklist_from(measured, keep, snr)


@numba.njit(cache=True, nogil=True)
def _integer_kernel(data, good):  # pragma: no cover - compiled
    h, w = data.shape
    seen = False
    for r in range(h):
        for c in range(w):
            if good[r, c]:
                v = data[r, c]
                if v != np.floor(v):
                    return False
                seen = True
    return seen


def integer_valued(data: NDArray[np.float32], good: NDArray[np.bool_]) -> bool:
    """True when every good pixel holds a whole number (photon counts or raw ADU)."""
    return bool(_integer_kernel(data, np.ascontiguousarray(good)))


def poisson_significant(
    measured: PeakMeasurements,
    gain: float,
    min_snr: float,
    rate: NDArray[np.float64] | None = None,
) -> NDArray[np.bool_]:
    """Whether each peak's photons are unlikely to come from its background, by a Poisson tail test.

    The background of the ``n`` peak pixels is modelled as Poisson with mean
    ``mu = n * max(background / gain, (sigma / gain)**2, rate)`` photons (``rate``: background photons
    per pixel at each peak, see :func:`~braggml.classical._radial.background_rate`); a peak of
    ``N = intensity / gain``
    photons passes when ``P(Poisson(mu) >= mu + N)`` is below the one-sided normal tail at ``min_snr``.
    For large backgrounds this is ``intensity >= min_snr * sigma * sqrt(n)``; for sparse photon counts
    it stops single photons and charge-shared photon pairs from counting as peaks. Without a gain
    (``gain <= 0``) every peak passes.
    """
    from scipy.special import ndtr

    if not gain > 0:
        return np.ones(measured.intensity.size, bool)
    photons = measured.intensity / gain
    per_pixel = np.maximum(np.maximum(measured.background / gain, (measured.sigma / gain) ** 2), 0.0)
    if rate is not None:
        per_pixel = np.maximum(per_pixel, rate)
    mu = measured.n_pixels * per_pixel
    return poisson_tail(photons, mu) <= ndtr(-min_snr)


def poisson_tail(photons: NDArray[np.float64], mu: NDArray[np.float64]) -> NDArray[np.float64]:
    """The one-sided tail ``P(Poisson(mu) >= mu + photons)``, continued to real counts by the regularised
    incomplete gamma function (1 where ``photons <= 0``; ``mu`` below 0 counts as 0).

    Examples
    --------
    >>> poisson_tail(np.array([0.0, 3.0]), np.array([1.0, 1.0])).round(4).tolist()  # P(X >= 4 | 1) = 0.019
    [1.0, 0.019]
    """
    from scipy.special import gammainc

    photons = np.asarray(photons, np.float64)
    mu = np.maximum(np.asarray(mu, np.float64), 0.0)
    with np.errstate(invalid="ignore"):
        return np.where(photons > 0, gammainc(np.maximum(mu + photons, 1e-12), mu), 1.0)


def rate_at_peaks(
    measured: PeakMeasurements, bin_index: NDArray[np.int32], rate_per_bin: NDArray[np.float64]
) -> NDArray[np.float64]:
    """The per-bin background rate at each peak's rounded centroid."""
    h, w = bin_index.shape
    r = np.clip(np.rint(measured.row).astype(np.int64), 0, h - 1)
    c = np.clip(np.rint(measured.col).astype(np.int64), 0, w - 1)
    return rate_per_bin[bin_index[r, c]]
