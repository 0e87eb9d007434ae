"""Beam-centre refinement from the frame itself: the centre about which the scattering is most circular.

Headers often state the beam centre a few pixels off (the powder-ring negatives in the real-data set are off by
about 15 px), which smears radial backgrounds and hides powder rings from ring rejection. The scattering
(solvent, air, powder rings) is circularly symmetric about the true centre, so the centre that lets the radius
explain the most of the pixel variance is taken, searched coarse to fine around the stated one. When the best
centre near the stated one lies at the edge of the search window (the stated centre is far off, or the beam
misses the chip as in SAXS), the whole frame and a margin around it are searched; a centre that still cannot be
pinned down is reported as a failure and the stated centre is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError

__all__ = ["BeamCenterFit", "fit_beam_center", "radial_coherence", "refine_beam_center"]

_MAX_SAMPLES = 200_000
#: Block means used by the search over the whole frame (and its margin).
_GLOBAL_SAMPLES = 20_000
#: Grid points per axis of that search.
_GLOBAL_STEPS = 48


def _binned(image: NDArray, valid: NDArray[np.bool_], factor: int) -> tuple[NDArray, NDArray[np.bool_]]:
    """Mean of the valid pixels in factor x factor blocks, and which blocks have any."""
    if factor == 1:
        return image, valid
    rows, cols = (s // factor * factor for s in image.shape)
    v = valid[:rows, :cols].reshape(rows // factor, factor, cols // factor, factor)
    x = np.where(valid, image, 0.0)[:rows, :cols].reshape(v.shape)
    n = v.sum(axis=(1, 3))
    total = x.sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / n
    return mean, n > 0


def radial_coherence(
    values: NDArray[np.floating],
    row: NDArray[np.floating],
    col: NDArray[np.floating],
    center_rowcol: tuple[float, float],
) -> float:
    """Fraction of the variance of ``values`` explained by their distance from ``center_rowcol`` (1-px shells)."""
    r = np.hypot(row - center_rowcol[0], col - center_rowcol[1])
    shell = r.astype(np.int64)
    counts = np.bincount(shell)
    sums = np.bincount(shell, weights=values)
    used = counts > 0
    means = sums[used] / counts[used]
    total = float(np.var(values)) * values.size
    if total <= 0:
        return 0.0
    explained = float(np.sum(counts[used] * (means - values.mean()) ** 2))
    return explained / total


@dataclass(frozen=True)
class BeamCenterFit:
    """Outcome of :func:`fit_beam_center`.

    Attributes
    ----------
    center_rowcol : (float, float)
        The refined centre when it was accepted, else the stated one.
    start_rowcol : (float, float)
        The stated centre.
    coherence_start, coherence_best : float
        Fraction of the variance explained by the radius about the stated and the returned centre.
    failed : bool
        The search could not pin the centre down (the scattering is most circular about a point at the edge
        of every region searched): the stated centre is kept.
    reason : str
        Why the fit failed or the centre was not moved ('' when it moved).
    """

    center_rowcol: tuple[float, float]
    start_rowcol: tuple[float, float]
    coherence_start: float
    coherence_best: float
    failed: bool = False
    reason: str = ""

    @property
    def moved(self) -> bool:
        """True when the returned centre differs from the stated one."""
        return self.center_rowcol != self.start_rowcol


class _Samples:
    """Block means of the valid pixels of a frame at several block sizes, for the coherence searches."""

    def __init__(self, data: NDArray[np.float64], valid: NDArray[np.bool_]) -> None:
        self.data = data
        self.valid = valid
        self._cache: dict[tuple[int, int], tuple[NDArray, NDArray, NDArray]] = {}

    def at(self, factor: int, limit: int) -> tuple[NDArray, NDArray, NDArray]:
        """Values and block-centre (row, col) in block units of ``factor x factor`` blocks (at most ``limit``,
        a fixed random choice)."""
        key = (factor, limit)
        if key not in self._cache:
            binned, ok = _binned(self.data, self.valid, factor)
            rr, cc = np.nonzero(ok)
            values = binned[rr, cc]
            rows = rr + (factor - 1) / (2.0 * factor)
            cols = cc + (factor - 1) / (2.0 * factor)
            if values.size > limit:
                keep = np.random.default_rng(factor).choice(values.size, limit, replace=False)
                values, rows, cols = values[keep], rows[keep], cols[keep]
            self._cache[key] = (values, rows, cols)
        return self._cache[key]


def _score(samples: tuple[NDArray, NDArray, NDArray], factor: int, centre: tuple[float, float]) -> float:
    values, rows, cols = samples
    return radial_coherence(values, rows, cols, (centre[0] / factor, centre[1] / factor))


def _n_shells(samples: tuple[NDArray, NDArray, NDArray], factor: int, centre: tuple[float, float]) -> int:
    """Number of 1-block shells about ``centre`` that hold samples."""
    _values, rows, cols = samples
    r = np.hypot(rows - centre[0] / factor, cols - centre[1] / factor).astype(np.int64)
    return int(np.count_nonzero(np.bincount(r)))


def _grid_best(
    samples: tuple[NDArray, NDArray, NDArray],
    factor: int,
    rows: NDArray[np.float64],
    cols: NDArray[np.float64],
) -> tuple[int, int]:
    """Index (i, j) of the best centre (rows[i], cols[j])."""
    scores = np.array([[_score(samples, factor, (r, c)) for c in cols] for r in rows])
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return int(i), int(j)


def _local_search(samples_of: _Samples, centre: tuple[float, float], half: float) -> tuple[tuple[float, float], bool]:
    """Coarse-to-fine search within ``half`` px of ``centre``; also whether the best lies inside the window.

    The best is inside when it is at least one coarse step (4 px) away from the window's edges: a best on
    the edge means the scattering is more circular about some point further out.
    """
    best = centre
    limit = half
    coarse_step = 4.0
    for factor, step in ((8, coarse_step), (4, 1.0), (2, 0.25)):
        samples = samples_of.at(factor, _MAX_SAMPLES)
        offsets = np.arange(-half, half + 1e-9, step)
        i, j = _grid_best(samples, factor, best[0] + offsets, best[1] + offsets)
        best = (best[0] + float(offsets[i]), best[1] + float(offsets[j]))
        half = step
    inside = max(abs(best[0] - centre[0]), abs(best[1] - centre[1])) <= limit - coarse_step + 1e-9
    return best, inside


def _global_search(
    samples_of: _Samples, shape: tuple[int, int], margin_px: float
) -> tuple[tuple[float, float], float, bool]:
    """Best centre on a grid over the frame and ``margin_px`` around it, the grid step, and whether it is inside."""
    rows_px, cols_px = shape
    factor = max(1, int(np.ceil(np.sqrt(rows_px * cols_px / _GLOBAL_SAMPLES))))
    samples = samples_of.at(factor, _GLOBAL_SAMPLES)
    step = max(rows_px + 2 * margin_px, cols_px + 2 * margin_px) / _GLOBAL_STEPS
    grid_rows = np.arange(-margin_px, rows_px - 1 + margin_px + 1e-9, step)
    grid_cols = np.arange(-margin_px, cols_px - 1 + margin_px + 1e-9, step)
    i, j = _grid_best(samples, factor, grid_rows, grid_cols)
    inside = 0 < i < grid_rows.size - 1 and 0 < j < grid_cols.size - 1
    return (float(grid_rows[i]), float(grid_cols[j])), float(step), inside


def fit_beam_center(
    image: NDArray,
    mask: NDArray[np.bool_] | None,
    start_rowcol: tuple[float, float],
    *,
    search_px: float = 32.0,
    min_gain: float = 0.05,
    min_coherence_gain: float = 0.02,
    margin_fraction: float = 0.25,
    min_far_coherence: float = 0.3,
) -> BeamCenterFit:
    """The beam centre about which the frame's scattering is most circular, and how the search went.

    Pixels above the 99th percentile (Bragg spots, zingers) are left out. The search runs on block means
    (8 x 8, 4 x 4, then 2 x 2, at most 200 000 of them per level) with steps shrinking from 4 to 0.25 px,
    within ``search_px`` of the stated centre. When its best centre lies on the edge of that window, the
    frame and a margin of ``margin_fraction`` of its larger side around it are searched on a coarse grid
    (the beam may miss the chip), then refined as before; a centre still on the edge of the region searched
    is a failure and the stated centre is kept.

    Parameters
    ----------
    image : (H, W) ndarray
        One frame.
    mask : (H, W) bool ndarray or None
        True marks a bad pixel.
    start_rowcol : (float, float)
        The stated beam centre (row, col), pixels; it may lie outside the frame.
    search_px : float
        Largest shift considered along each axis in the search near the stated centre.
    min_gain : float
        The refined centre is accepted only when it explains at least this fraction more of the variance
        (relative) than the stated one; otherwise the stated centre is kept. This keeps frames without
        circular scattering (blank, flat) from moving the centre.
    min_coherence_gain : float
        The same, as an absolute gain in explained variance.
    margin_fraction : float
        How far beyond the frame's edges the wide search looks, as a fraction of the larger side.
    min_far_coherence : float
        A centre found by the wide search is accepted only when the radius about it explains at least this
        fraction of the variance (clear rings or a clear radial fall-off, not a gradient).

    Returns
    -------
    BeamCenterFit

    Raises
    ------
    ConfigError
        A search size or gain is not positive (or not non-negative).
    """
    if not search_px > 0:
        raise ConfigError(f"search_px must be > 0, got {search_px}")
    if min_gain < 0:
        raise ConfigError(f"min_gain must be >= 0, got {min_gain}")
    if min_coherence_gain < 0:
        raise ConfigError(f"min_coherence_gain must be >= 0, got {min_coherence_gain}")
    if not margin_fraction >= 0:
        raise ConfigError(f"margin_fraction must be >= 0, got {margin_fraction}")
    start = (float(start_rowcol[0]), float(start_rowcol[1]))
    data = np.asarray(image, dtype=np.float64)
    if data.ndim != 2:
        raise ConfigError(f"image must be 2-D (H, W), got shape {data.shape}")
    valid = np.isfinite(data)
    if mask is not None:
        valid &= ~mask
    if valid.sum() < 1000:
        return BeamCenterFit(start, start, 0.0, 0.0, reason="fewer than 1000 valid pixels")
    cut = np.percentile(data[valid], 99.0)
    valid &= data <= cut
    samples_of = _Samples(data, valid)

    final = samples_of.at(2, 4 * _MAX_SAMPLES)
    start_score = _score(final, 2, start)

    def gains(score: float) -> bool:
        # k shells explain about k / N of the variance of N samples of pure noise: gains must exceed that
        chance = 3.0 * _n_shells(final, 2, best) / max(final[0].size, 1)
        return score >= start_score * (1.0 + min_gain) and score - start_score >= min_coherence_gain + chance

    best, inside = _local_search(samples_of, start, float(search_px))
    best_score = _score(final, 2, best)
    wide = False
    if not inside and gains(best_score):
        wide = True
        margin = margin_fraction * max(data.shape)
        coarse, step, inside = _global_search(samples_of, data.shape, margin)
        if inside:
            best, inside = _local_search(samples_of, coarse, max(2.0 * step, 12.0))
            best_score = _score(final, 2, best)
    if not gains(best_score):
        return BeamCenterFit(start, start, start_score, start_score, reason="no clear gain in radial coherence")
    if not inside:
        return BeamCenterFit(
            start,
            start,
            start_score,
            start_score,
            failed=True,
            reason="the scattering is most circular about a point at the edge of the region searched",
        )
    if wide and best_score < min_far_coherence:
        return BeamCenterFit(
            start,
            start,
            start_score,
            start_score,
            failed=True,
            reason=f"the best centre far from the stated one explains only {best_score:.2f} of the variance",
        )
    return BeamCenterFit(best, start, start_score, best_score)


def refine_beam_center(
    image: NDArray,
    mask: NDArray[np.bool_] | None,
    start_rowcol: tuple[float, float],
    *,
    search_px: float = 32.0,
    min_gain: float = 0.05,
    min_coherence_gain: float = 0.02,
) -> tuple[tuple[float, float], float, float]:
    """The beam centre about which the frame's scattering is most circular, near ``start_rowcol``.

    The search of :func:`fit_beam_center` (with its defaults for the wide search), returned as a tuple.

    Parameters
    ----------
    image : (H, W) ndarray
        One frame.
    mask : (H, W) bool ndarray or None
        True marks a bad pixel.
    start_rowcol : (float, float)
        The stated beam centre (row, col), pixels; it may lie outside the frame.
    search_px : float
        Largest shift considered along each axis near the stated centre.
    min_gain : float
        The refined centre is returned only when it explains at least this fraction more of the variance
        (relative) than the stated one; otherwise the stated centre is returned. This keeps frames without
        circular scattering (blank, flat) from moving the centre.
    min_coherence_gain : float
        The same, as an absolute gain in explained variance.

    Returns
    -------
    center_rowcol : (float, float)
        The refined (or the stated) centre.
    coherence_start, coherence_best : float
        Fraction of the variance explained by the radius about the stated and the returned centre.
    """
    fit = fit_beam_center(
        image, mask, start_rowcol, search_px=search_px, min_gain=min_gain, min_coherence_gain=min_coherence_gain
    )
    return fit.center_rowcol, fit.coherence_start, fit.coherence_best
