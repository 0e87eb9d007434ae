"""Preview pictures: a frame on a log scale with its truth spots circled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError

__all__ = ["save_preview", "preview_file"]


def save_preview(
    path: str | Path,
    image: NDArray[Any],
    *,
    mask: NDArray[np.bool_] | None = None,
    rows: NDArray[np.floating] | None = None,
    cols: NDArray[np.floating] | None = None,
    snr: NDArray[np.floating] | None = None,
    min_snr: float = 3.0,
    title: str = "",
    dpi: int = 120,
) -> Path:
    """Save a PNG of ``image`` on a log scale, masked pixels grey, spots circled.

    Parameters
    ----------
    path : str or Path
        Output PNG.
    image : (H, W) ndarray
        The frame.
    mask : (H, W) bool ndarray, optional
        True = bad pixel (drawn grey).
    rows, cols : (S,) ndarray, optional
        Spot centres; circled in green where ``snr >= min_snr`` and in light blue otherwise.
    snr : (S,) ndarray, optional
        Spot SNRs (all spots drawn as strong when omitted).
    min_snr : float
        SNR that separates the two circle colours.
    title : str
        Figure title.
    dpi : int
        Resolution of the PNG.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ConfigError(f"image must be 2-D, got shape {img.shape}")
    bad = np.zeros(img.shape, bool) if mask is None else np.asarray(mask, bool)
    if bad.shape != img.shape:
        raise ConfigError(f"mask has shape {bad.shape}, image {img.shape}")
    good = img[~bad]
    floor = float(np.percentile(good, 1)) if good.size else 0.0
    shown = np.log10(np.maximum(img - floor, 0.0) + 1.0)
    hi = float(np.percentile(shown[~bad], 99.95)) if good.size else 1.0
    shown = np.ma.masked_array(shown, mask=bad)
    height, width = img.shape
    r = np.asarray(rows, float) if rows is not None else np.zeros(0)
    c = np.asarray(cols, float) if cols is not None else np.zeros(0)
    strong = np.ones(r.size, bool) if snr is None else np.asarray(snr, float) >= min_snr
    crop = _zoom_window(r, c, img.shape) if max(height, width) > 600 else None

    n_axes = 2 if crop is not None else 1
    scale = 8.0 / max(height, width)
    fig = Figure(figsize=(n_axes * (max(3.0, width * scale) + 0.4) + 1.0, max(3.0, height * scale) + 0.8))
    FigureCanvasAgg(fig)
    cmap = _cmap()
    label = f"log10(value {'-' if floor >= 0 else '+'} {abs(floor):.3g} + 1)"
    axes = [fig.add_subplot(1, n_axes, i + 1) for i in range(n_axes)]
    for i, ax in enumerate(axes):
        im = ax.imshow(shown, cmap=cmap, vmin=0.0, vmax=max(hi, 1e-6), interpolation="nearest")
        radius = max(3.0, 0.006 * max(height, width))
        if i == 1 and crop is not None:
            (r0, r1), (c0, c1) = crop
            ax.set_xlim(c0 - 0.5, c1 - 0.5)
            ax.set_ylim(r1 - 0.5, r0 - 0.5)
            radius = 0.02 * (r1 - r0)
            ax.set_title(f"full resolution: rows {r0}-{r1 - 1}, cols {c0}-{c1 - 1}", fontsize=9)
        for rr, cc, st in zip(r, c, strong, strict=True):
            ax.add_patch(
                Circle((cc, rr), radius, fill=False, lw=0.8, color="lime" if st else "deepskyblue", alpha=0.9)
            )
        ax.set_ylabel("row")
        ax.set_xlabel("col")
    if r.size:
        n_strong, n_weak = int(strong.sum()), int((~strong).sum())
        axes[0].set_xlabel(f"col  ({n_strong} spots with SNR >= {min_snr:g} green, {n_weak} weaker blue)")
    fig.colorbar(im, ax=axes, fraction=0.03, pad=0.02, label=label)
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    return path


def _zoom_window(
    rows: NDArray[np.float64], cols: NDArray[np.float64], shape: tuple[int, int], size: int = 256
) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """A size x size window holding the most spots (None when there are none)."""
    if rows.size == 0:
        return None
    half = size // 2
    near = (np.abs(rows[:, None] - rows[None, :]) < half) & (np.abs(cols[:, None] - cols[None, :]) < half)
    counts = near.sum(axis=1)
    best = int(np.argmax(counts))
    r0 = int(np.clip(round(rows[best]) - half, 0, max(0, shape[0] - size)))
    c0 = int(np.clip(round(cols[best]) - half, 0, max(0, shape[1] - size)))
    return (r0, min(shape[0], r0 + size)), (c0, min(shape[1], c0 + size))


def _cmap() -> Any:
    from matplotlib import colormaps

    cmap = colormaps["magma"].copy()
    cmap = cmap.with_extremes(bad="0.6")
    return cmap


def preview_file(h5_path: str | Path, png_path: str | Path, index: int | None = None, *, min_snr: float = 3.0) -> Path:
    """Preview one frame of a simulated file; by default the frame with the most truth spots."""
    from ..io.simfile import read_sim_frame, read_truth

    truth = read_truth(h5_path)
    counts = truth.peaks.counts_per_frame()
    if index is None:
        index = int(np.argmax(counts)) if counts.size else 0
    if not 0 <= index < truth.n_frames:
        raise ConfigError(f"preview frame {index} out of range for {truth.n_frames} frames")
    image = read_sim_frame(h5_path, index)
    spots = truth.peaks.for_frame(index)
    hit = bool(truth.hit[index])
    title = f"{Path(h5_path).name} frame {index}: {'hit' if hit else 'blank'}, {len(spots)} truth spots"
    return save_preview(
        png_path, image, mask=truth.mask, rows=spots.row, cols=spots.col, snr=spots.snr, min_snr=min_snr, title=title
    )
