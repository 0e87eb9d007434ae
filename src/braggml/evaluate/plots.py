"""Pictures people look at: a frame with its peaks, recall against SNR, precision-recall, peak counts.

Every function writes a PNG (matplotlib's Agg backend, no screen needed) and returns its path.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..geometry import DetectorGeometry
from ..io.pictures import new_figure, save_png
from ..peaks import HIT_MIN_PEAKS, PeakList
from .matching import Match, match_peaks

__all__ = [
    "plot_frame",
    "plot_run_overview",
    "plot_recall_vs_snr",
    "plot_precision_recall",
    "plot_peak_counts",
    "precision_recall_curve",
]


def _figure(width: float = 6.4, height: float = 4.8) -> Any:
    return new_figure(width, height)


_save = save_png


def plot_frame(
    image: NDArray,
    path: str | Path,
    *,
    mask: NDArray[np.bool_] | None = None,
    found: PeakList | None = None,
    truth: PeakList | None = None,
    radius_px: float = 2.0,
    title: str = "",
    marker_size: float = 10.0,
    optional: PeakList | None = None,
    geometry: DetectorGeometry | None = None,
) -> Path:
    """Save a frame on a log scale, masked pixels grey, with its peaks marked.

    With both ``found`` and ``truth`` (one-frame lists), true positives are green circles, misses orange
    squares and false peaks red crosses; found peaks at ``optional`` true peaks (real but not scored, see
    :func:`~braggml.evaluate.matching.match_peaks`) are white circles. With one of them, its peaks are circled.
    With a ``geometry`` the panels are drawn where they sit in the laboratory frame, x to the right and y up (see
    :func:`~braggml.geometry.assemble_image`), with the beam marked; otherwise the data array is drawn as stored.
    """
    import matplotlib as mpl
    from matplotlib.colors import LogNorm

    data = np.asarray(image, dtype=np.float64)
    bad = ~np.isfinite(data)
    if mask is not None:
        bad |= mask
    extent = None
    if geometry is not None:
        from ..geometry import assemble_image

        picture = assemble_image(geometry, data, bad=bad)
        data, bad, extent = picture.image, picture.bad, picture.extent_xy

    def place(peaks: PeakList) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Where peaks are drawn: (col, row) of the array, or the laboratory (x, y) of the geometry."""
        if geometry is None:
            return peaks.col, peaks.row
        x, y, _z, _panel = geometry.lab_position_px(peaks.row, peaks.col)
        return x, y

    good = data[~bad]
    floor = max(np.percentile(good, 1) if good.size else 1.0, 0.0) + 1.0
    shown = np.ma.masked_array(np.clip(data, floor - 1.0, None) - (floor - 1.0) + 1.0, mask=bad)
    top = float(np.percentile(shown.compressed(), 99.9)) if good.size else 10.0
    cmap = mpl.colormaps["viridis"].with_extremes(bad="0.6")
    fig = _figure(7.5, 7.5 * data.shape[0] / data.shape[1] + 0.6)
    ax = fig.add_subplot()
    norm = LogNorm(vmin=1.0, vmax=max(top, 2.0))
    if extent is None:
        im = ax.imshow(shown, cmap=cmap, norm=norm, interpolation="nearest")
    else:
        im = ax.imshow(shown, cmap=cmap, norm=norm, interpolation="nearest", origin="lower", extent=extent)
        ax.plot([0.0], [0.0], marker="+", color="white", markersize=12, linestyle="none")  # the beam
    fig.colorbar(im, ax=ax, shrink=0.8, label=f"value - {floor - 1.0:.3g} (log)")
    ring = dict(facecolors="none", s=marker_size**2, linewidths=0.9)
    if found is not None and truth is not None:
        m: Match = match_peaks(found, truth, radius_px=radius_px, optional=optional)
        tp = found.take(m.found_matched)
        fp = found.take(~m.found_matched & ~m.found_optional)
        weak = found.take(m.found_optional)
        miss = truth.take(~m.truth_matched)
        ax.scatter(*place(tp), edgecolors="lime", marker="o", label=f"found, true ({len(tp)})", **ring)
        if len(weak):
            ax.scatter(*place(weak), edgecolors="white", marker="o",
                       label=f"found, weaker true peak, not scored ({len(weak)})", **ring)
        ax.scatter(*place(miss), edgecolors="orange", marker="s", label=f"missed ({len(miss)})", **ring)
        ax.scatter(*place(fp), c="red", marker="x", s=marker_size**2 * 0.6, linewidths=1.0,
                   label=f"false ({len(fp)})")
        ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
    else:
        peaks = found if found is not None else truth
        if peaks is not None:
            ax.scatter(*place(peaks), edgecolors="red", marker="o", label=f"peaks ({len(peaks)})", **ring)
            ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
    if extent is None:
        ax.set_xlabel("col (fs), px")
        ax.set_ylabel("row (ss), px")
    else:
        ax.set_xlabel("laboratory x, px (beam at 0)")
        ax.set_ylabel("laboratory y, px")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_recall_vs_snr(evaluations: Mapping[str, object], path: str | Path) -> Path:
    """Recall in truth-SNR bins for one or more finders (``{name: Evaluation}``)."""
    fig = _figure()
    ax = fig.add_subplot()
    for name, ev in evaluations.items():
        bins = [b for b in ev.recall_by_snr if b["n_true"]]  # type: ignore[attr-defined]
        if not bins:
            continue
        centres = [np.sqrt(max(b["low"], 0.5) * (b["high"] if np.isfinite(b["high"]) else 2 * b["low"]))
                   for b in bins]
        ax.plot(centres, [b["recall"] for b in bins], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("true spot SNR")
    ax.set_ylabel("recall")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def precision_recall_curve(
    found: PeakList, truth: PeakList, *, radius_px: float = 2.0, optional: PeakList | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Precision and recall of ``found`` kept above each score threshold.

    Matching is done once on all peaks; a peak's match counts for every threshold below its score. Peaks at
    ``optional`` true peaks (see :func:`~braggml.evaluate.matching.match_peaks`) count for neither.
    Returns (thresholds, precision, recall), thresholds in decreasing order.
    """
    m = match_peaks(found, truth, radius_px=radius_px, optional=optional)
    score = np.nan_to_num(found.score, nan=1.0)
    order = np.argsort(-score, kind="stable")
    tp = np.cumsum(m.found_matched[order])
    n = np.maximum(np.cumsum(~m.found_optional[order]), 1)
    precision = tp / n
    recall = tp / max(len(truth), 1)
    return score[order], precision, recall


def plot_precision_recall(
    scored: Mapping[str, PeakList],
    truth: PeakList,
    path: str | Path,
    *,
    radius_px: float = 2.0,
    optional: PeakList | None = None,
) -> Path:
    """Precision-recall curves of scored finders (``{name: peaks}``); see :func:`precision_recall_curve`."""
    fig = _figure()
    ax = fig.add_subplot()
    for name, peaks in scored.items():
        _, p, r = precision_recall_curve(peaks, truth, radius_px=radius_px, optional=optional)
        ax.plot(r, p, label=name)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_peak_counts(counts: Mapping[str, NDArray[np.integer]], path: str | Path) -> Path:
    """Peaks per frame for each named series (e.g. truth and each finder)."""
    fig = _figure(7.0, 3.6)
    ax = fig.add_subplot()
    for name, c in counts.items():
        ax.plot(np.arange(len(c)), c, marker=".", linewidth=1.0, label=name)
    ax.set_xlabel("frame")
    ax.set_ylabel("peaks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_run_overview(
    peaks: PeakList,
    path: str | Path,
    *,
    shape: tuple[int, int],
    min_peaks: int = HIT_MIN_PEAKS,
    radius_px: NDArray[np.floating] | None = None,
    resolution_a: NDArray[np.floating] | None = None,
    mask: NDArray[np.bool_] | None = None,
    title: str = "",
) -> Path:
    """One picture of a whole run, to judge a finder's settings and the data at a glance.

    - Peaks per frame, with the hit threshold and the hit rate.
    - Where the peaks of all frames lie on the detector (the data array; bad pixels grey). Bragg spots spread
      over it; a hot pixel the mask lacks is one bright point, a ring of peaks an ice or powder ring, a line
      of them a panel edge.
    - A peakogram (as Cheetah and OM draw it): each peak's brightest pixel against its distance from the beam
      (or 1/d where the resolution is known). Saturated pixels form a ceiling; rings form columns.
    - How the peaks' SNRs are spread.

    Parameters
    ----------
    peaks : PeakList
        The run's peaks.
    path : str or Path
        PNG to write.
    shape : (H, W)
        Frame shape.
    min_peaks : int
        Peaks a frame needs to be a hit.
    radius_px, resolution_a : (H, W) ndarray, optional
        The run's pixel maps; without them the peakogram is against the distance from the frame centre.
    mask : (H, W) bool ndarray, optional
        Bad pixels of the run, drawn grey on the detector map.
    title : str
        Figure title (e.g. the input).
    """
    import matplotlib as mpl
    from matplotlib.colors import LogNorm

    height, width = (int(v) for v in shape)
    counts = peaks.counts_per_frame()
    fig = _figure(11.0, 8.0)
    axes = fig.subplots(2, 2)
    fig.suptitle(title or "run overview", fontsize=10)

    ax = axes[0, 0]
    frames = np.arange(len(counts))
    hits = counts >= min_peaks
    ax.plot(frames, counts, color="0.4", linewidth=0.6)
    ax.scatter(frames[hits], counts[hits], s=6, color="tab:green", label=f"hits ({int(hits.sum())})", zorder=3)
    ax.scatter(frames[~hits], counts[~hits], s=6, color="tab:red", label=f"not hits ({int((~hits).sum())})", zorder=3)
    ax.axhline(min_peaks - 0.5, color="black", linestyle="--", linewidth=0.8)
    rate = 100.0 * hits.mean() if len(counts) else 0.0
    ax.set_title(f"peaks per frame: {len(peaks)} in {len(counts)} frames, hit rate {rate:.1f} % (>= {min_peaks})",
                 fontsize=9)
    ax.set_xlabel("frame")
    ax.set_ylabel("peaks")
    ax.legend(fontsize=7, loc="upper right")

    ax = axes[0, 1]
    rows = np.clip(np.rint(peaks.row).astype(np.int64), 0, height - 1)
    cols = np.clip(np.rint(peaks.col).astype(np.int64), 0, width - 1)
    ax.set_facecolor("black")
    if mask is not None and mask.shape == (height, width):
        step = max(1, int(np.ceil(max(height, width) / 1024)))
        ax.imshow(np.where(mask[::step, ::step], 1.0, np.nan), cmap=mpl.colormaps["Greys"], vmin=0, vmax=2,
                  interpolation="nearest", extent=(-0.5, width - 0.5, height - 0.5, -0.5))
    if len(peaks):
        # one dot per pixel holding peaks, coloured by how many frames have one there: a hot pixel the mask
        # lacks is a bright dot, a spot of one frame a dim one
        flat, times = np.unique(rows * width + cols, return_counts=True)
        order = np.argsort(times, kind="stable")
        flat, times = flat[order], times[order]
        dots = ax.scatter(flat % width, flat // width, c=times, s=4, linewidths=0, cmap=mpl.colormaps["plasma"],
                          norm=LogNorm(vmin=1, vmax=max(2, int(times.max()))))
        fig.colorbar(dots, ax=ax, shrink=0.8, label="frames with a peak at that pixel")
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_title("where the peaks lie (all frames)", fontsize=9)
    ax.set_xlabel("col (fs), px")
    ax.set_ylabel("row (ss), px")

    ax = axes[1, 0]
    label = "distance from the frame centre, px"
    if resolution_a is not None and resolution_a.shape == (height, width):
        with np.errstate(divide="ignore"):
            x = 1.0 / resolution_a[rows, cols]
        label = "1/d, 1/A"
    elif radius_px is not None and radius_px.shape == (height, width):
        x = radius_px[rows, cols]
        label = "distance from the beam, px"
    else:
        x = np.hypot(peaks.row - (height - 1) / 2.0, peaks.col - (width - 1) / 2.0)
    y = np.asarray(peaks.max_value, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y) & (y > 0)
    if 0 < ok.sum() <= 20000:
        ax.scatter(x[ok], y[ok], s=3, linewidths=0, alpha=0.6, color="tab:blue")
        ax.set_yscale("log")
    elif ok.any():  # a density of many peaks
        ybins = np.geomspace(max(float(y[ok].min()), 1e-3), max(float(y[ok].max()), 1e-3) * 1.001 + 1e-9, 120)
        hist, xe, ye = np.histogram2d(x[ok], y[ok], bins=(150, ybins))
        im = ax.pcolormesh(xe, ye, np.ma.masked_equal(hist.T, 0), cmap=mpl.colormaps["viridis"],
                           norm=LogNorm(vmin=1, vmax=max(2.0, float(hist.max()))))
        ax.set_yscale("log")
        fig.colorbar(im, ax=ax, shrink=0.8, label="peaks")
    ax.set_title("peakogram: brightest pixel of each peak", fontsize=9)
    ax.set_xlabel(label)
    ax.set_ylabel("maximum value")

    ax = axes[1, 1]
    snr = np.asarray(peaks.snr, dtype=np.float64)
    snr = snr[np.isfinite(snr) & (snr > 0)]
    if snr.size:
        ax.hist(snr, bins=np.geomspace(max(float(snr.min()), 0.1), float(snr.max()) * 1.001 + 1e-9, 60),
                color="tab:blue")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.axvline(float(np.median(snr)), color="black", linestyle="--", linewidth=0.8,
                   label=f"median {float(np.median(snr)):.1f}")
        ax.legend(fontsize=7)
    ax.set_title("SNR of the peaks", fontsize=9)
    ax.set_xlabel("SNR")
    ax.set_ylabel("peaks")
    return _save(fig, path)
