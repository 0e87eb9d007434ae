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
from scipy import ndimage

from ..classical._common import check_choice, check_positive, label_within_panels
from ..errors import ConfigError
from ..finder import PeakFinder
from ..geometry import PixelMaps
from ..peaks import PeakList

if TYPE_CHECKING:  # torch is imported only when a model is loaded, not when the finder is looked up
    from ..classical.rings import RingEvidence
    from .unet import NormalisedFrame, TrainedUNet
    from .unet_batch import BatchedUNetFinder

__all__ = [
    "UNetFinderConfig",
    "UNetFinder",
    "finish_peaks",
    "segment_peaks",
    "split_regions",
    "grow_regions",
    "measure_regions",
]


@dataclass(frozen=True)
class UNetFinderConfig:
    """Parameters of :class:`UNetFinder`.

    Attributes
    ----------
    model_path : str
        U-Net model file; empty for the model shipped with braggml.
    probability_threshold : float or None
        Pixels above this probability form peaks; None uses the model's own cut (chosen on validation frames).
    min_pixel_count : int
        Smallest region kept.
    grow_px : float
        Regions are widened by this many pixels (never into another region, a bad pixel or another panel)
        before centroid, intensity and SNR are measured, so that a spot's tails count.
    split_regions : bool
        Split regions holding several local maxima of the background-subtracted frame (crowded spots whose
        cores touch) into one peak per maximum (:func:`split_regions`).
    masked_peaks : {"drop", "keep"}
        ``"drop"``: drop regions all of whose pixels lie along bad pixels, a panel gap, another panel or the
        frame's edge (their maximum may be hidden, or they are edge artefacts), as the classical finders do.
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
    min_pixel_count: int = 1
    grow_px: float = 2.0
    split_regions: bool = True
    masked_peaks: str = "drop"
    reject_powder_rings: bool = True
    ice_rings: str = "auto"
    ice_ring_width_inv_a: float = 0.004
    powder_ring_contrast: float = 1.0
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
        if self.min_pixel_count < 1:
            raise ConfigError(f"min_pixel_count must be >= 1, got {self.min_pixel_count!r}")
        if not np.isfinite(self.grow_px) or not 0 <= self.grow_px <= 10:
            raise ConfigError(f"grow_px must lie in [0, 10], got {self.grow_px!r}")
        check_choice("ice_rings", self.ice_rings, ("auto", "reject", "off"))
        check_choice("masked_peaks", self.masked_peaks, ("drop", "keep"))
        check_choice("precision", self.precision, ("auto", "float32", "bfloat16", "float16"))
        check_positive("ice_ring_width_inv_a", self.ice_ring_width_inv_a)
        check_positive("powder_ring_contrast", self.powder_ring_contrast)
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


def segment_peaks(
    prob: NDArray[np.floating],
    threshold: float,
    *,
    panel_id: NDArray[np.int32] | None = None,
    min_pixel_count: int = 1,
) -> tuple[NDArray[np.int32], int]:
    """Label connected regions of pixels with ``prob > threshold`` (8-connected, within panels).

    Returns
    -------
    labels : (H, W) int32 ndarray
        0 outside regions, 1..n inside.
    n : int
    """
    above = np.asarray(prob) > threshold
    if panel_id is None:
        labels, n = ndimage.label(above, structure=np.ones((3, 3), bool))
        labels = labels.astype(np.int32)
    else:
        labels, n = label_within_panels(above, panel_id, connectivity=8)
    if min_pixel_count > 1 and n:
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        small = sizes < min_pixel_count
        small[0] = False
        if small.any():
            keep = np.flatnonzero(~small[1:]) + 1
            remap = np.zeros(n + 1, np.int32)
            remap[keep] = np.arange(1, keep.size + 1, dtype=np.int32)
            labels = remap[labels]
            n = int(keep.size)
    return labels, int(n)


def split_regions(
    labels: NDArray[np.int32],
    n: int,
    residual: NDArray[np.floating],
    noise: NDArray[np.floating],
    *,
    min_pixels: int = 10,
    min_relative_height: float = 0.25,
) -> tuple[NDArray[np.int32], int]:
    """Split regions that hold several spots, at the local maxima of the background-subtracted frame.

    In each region of at least ``min_pixels`` pixels, the 3 x 3 means of the residual are searched for local
    maxima (3 x 3 neighbourhood) that stand at least ``min_relative_height`` of the region's highest mean and
    two noise units of a 3 x 3 mean above the background. With two or more, every pixel of the region goes to
    its nearest maximum, so that spots a few pixels apart, whose cores touch, become separate peaks. The input
    is not modified.

    Returns
    -------
    labels : (H, W) int32 ndarray
    n : int
    """
    if n == 0:
        return labels, n
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    big = np.flatnonzero(sizes[1:] >= min_pixels) + 1
    if big.size == 0:
        return labels, n
    out = labels.copy()
    boxes = ndimage.find_objects(labels)
    next_label = n + 1
    h, w = labels.shape
    for k in big:
        rs, cs = boxes[k - 1]
        r0, r1 = max(rs.start - 1, 0), min(rs.stop + 1, h)
        c0, c1 = max(cs.start - 1, 0), min(cs.stop + 1, w)
        region = labels[r0:r1, c0:c1] == k
        smooth = ndimage.uniform_filter(np.asarray(residual[r0:r1, c0:c1], np.float64), size=3, mode="nearest")
        peak = region & (smooth == ndimage.maximum_filter(smooth, size=3, mode="nearest"))
        if np.count_nonzero(peak) < 2:
            continue
        pr, pc = np.nonzero(peak)
        values = smooth[pr, pc]
        floor = max(min_relative_height * values.max(), 2.0 * float(np.mean(noise[r0:r1, c0:c1][region])) / 3.0)
        strong = values >= floor
        if np.count_nonzero(strong) < 2:
            continue
        pr, pc = pr[strong], pc[strong]
        rr, cc = np.nonzero(region)
        nearest = np.argmin((rr[:, None] - pr[None, :]) ** 2 + (cc[:, None] - pc[None, :]) ** 2, axis=1)
        new = np.concatenate([[k], np.arange(next_label, next_label + pr.size - 1)]).astype(np.int32)
        out[r0 + rr, c0 + cc] = new[nearest]
        next_label += pr.size - 1
    return out, next_label - 1


def along_mask(
    labels: NDArray[np.int32], n: int, bad: NDArray[np.bool_], panel_id: NDArray[np.int32] | None = None
) -> NDArray[np.float64]:
    """Share of each region's pixels that touch (8-connected) a bad pixel, another panel or the frame's edge."""
    h, w = labels.shape
    idx = np.flatnonzero(labels.ravel())
    if n == 0 or idx.size == 0:
        return np.zeros(n)
    r, c = idx // w, idx % w
    touch = np.zeros(idx.size, bool)
    panel_flat = None if panel_id is None else np.asarray(panel_id).ravel()
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr == 0 and dc == 0:
                continue
            rr, cc = r + dr, c + dc
            outside = (rr < 0) | (rr >= h) | (cc < 0) | (cc >= w)
            nb = np.clip(rr, 0, h - 1) * w + np.clip(cc, 0, w - 1)
            hit = outside | bad.ravel()[nb]
            if panel_flat is not None:
                hit |= panel_flat[nb] != panel_flat[idx]
            touch |= hit
    lab = labels.ravel()[idx]
    sizes = np.bincount(lab, minlength=n + 1)[1:]
    return np.bincount(lab, weights=touch, minlength=n + 1)[1:] / np.maximum(sizes, 1)


def grow_regions(
    labels: NDArray[np.int32],
    grow_px: float,
    *,
    bad: NDArray[np.bool_] | None = None,
    panel_id: NDArray[np.int32] | None = None,
) -> NDArray[np.int32]:
    """Labelled regions widened to every free pixel within ``grow_px`` of them.

    A free pixel (unlabelled, not bad, on the same panel) takes the label of the nearest region pixel, so
    regions grow into a spot's tails for its measurement without ever merging; the input is not modified.
    """
    if grow_px <= 0:
        return labels
    h, w = labels.shape
    flat = labels.ravel()
    idx = np.flatnonzero(flat)
    if idx.size == 0:
        return labels
    reach = int(np.floor(grow_px))
    dr, dc = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    dist = np.hypot(dr, dc).ravel()
    order = np.argsort(dist, kind="stable")
    keep = order[(dist[order] > 0) & (dist[order] <= grow_px)]
    out = flat.copy()
    r0, c0 = idx // w, idx % w
    lab0 = flat[idx]
    bad_flat = None if bad is None else np.asarray(bad).ravel()
    panel_flat = None if panel_id is None else np.asarray(panel_id).ravel()
    for k in keep:  # nearest offsets first: a pixel takes the label of the closest region
        r, c = r0 + dr.ravel()[k], c0 + dc.ravel()[k]
        ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        target = r[ok] * w + c[ok]
        source = idx[ok]
        free = out[target] == 0
        if bad_flat is not None:
            free &= ~bad_flat[target]
        if panel_flat is not None:
            free &= panel_flat[target] == panel_flat[source]
        out[target[free]] = lab0[ok][free]
    return out.reshape(h, w)


def measure_regions(
    labels: NDArray[np.int32],
    n: int,
    prob: NDArray[np.floating],
    residual: NDArray[np.floating],
    *,
    background: NDArray[np.floating] | None = None,
    noise: NDArray[np.floating] | None = None,
    measure_labels: NDArray[np.int32] | None = None,
) -> dict[str, NDArray[Any]]:
    """Centroid, intensity, SNR and score of labelled regions, on background-subtracted pixels.

    The centroid weights each pixel by its positive residual (the region's probabilities where no residual is
    positive); SNR is ``intensity / sqrt(sum noise**2)``. Only the labelled pixels are visited.

    Parameters
    ----------
    labels : (H, W) int32 ndarray
        Regions 1..n (from :func:`segment_peaks`); they give the score (highest probability).
    n : int
    prob, residual : (H, W) ndarray
    background, noise : (H, W) ndarray, optional
    measure_labels : (H, W) int32 ndarray, optional
        The same regions widened (:func:`grow_regions`) over which centroid, intensity, SNR, pixel count and
        maximum are measured; ``labels`` when omitted.

    Returns
    -------
    dict of str to (n,) ndarray
        ``row``, ``col``, ``intensity``, ``background``, ``snr``, ``n_pixels``, ``max_value``, ``score``.
    """
    if n == 0:
        empty = np.empty(0)
        return {k: empty for k in ("row", "col", "intensity", "background", "snr", "max_value", "score")} | {
            "n_pixels": np.empty(0, np.int64)
        }
    w = labels.shape[1]
    core = np.flatnonzero(labels.ravel())
    score = np.zeros(n + 1)
    np.maximum.at(score, labels.ravel()[core], np.asarray(prob).ravel()[core].astype(np.float64))
    wide = labels if measure_labels is None else measure_labels
    idx = np.flatnonzero(wide.ravel())
    lab = wide.ravel()[idx]
    rr, cc = (idx // w).astype(np.float64), (idx % w).astype(np.float64)
    res = np.asarray(residual).ravel()[idx].astype(np.float64)
    pw = np.asarray(prob).ravel()[idx].astype(np.float64)

    def total(values: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.bincount(lab, weights=values, minlength=n + 1)[1:]

    weight = np.clip(res, 0.0, None)
    wsum, psum = total(weight), total(pw)
    use_w = wsum > 0
    row = np.where(use_w, total(weight * rr) / np.where(use_w, wsum, 1.0), total(pw * rr) / np.maximum(psum, 1e-30))
    col = np.where(use_w, total(weight * cc) / np.where(use_w, wsum, 1.0), total(pw * cc) / np.maximum(psum, 1e-30))
    n_pixels = np.bincount(lab, minlength=n + 1)[1:].astype(np.int64)
    intensity = total(res)
    bg = (
        total(np.asarray(background).ravel()[idx].astype(np.float64)) / np.maximum(n_pixels, 1)
        if background is not None
        else np.zeros(n)
    )
    if noise is not None:
        var = total(np.asarray(noise).ravel()[idx].astype(np.float64) ** 2)
        snr = intensity / np.sqrt(np.maximum(var, 1e-30))
    else:
        snr = np.full(n, np.nan)
    peak = np.full(n + 1, -np.inf)
    np.maximum.at(peak, lab, res)
    return {
        "row": row,
        "col": col,
        "intensity": intensity,
        "background": bg,
        "snr": snr,
        "n_pixels": n_pixels,
        "max_value": peak[1:] + bg,
        "score": score[1:],
    }


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
        self.last_probability: NDArray[np.float32] | None = None
        self._rejected: dict[str, int] = {}

    @property
    def last_rejections(self) -> dict[str, int]:
        """Regions of the last frame dropped, by cause (``"powder_ring"``, ``"ice_ring"``, ``"masked"``)."""
        return dict(self._rejected)

    @property
    def model(self) -> TrainedUNet:
        """The loaded model (read on first use)."""
        if self._model is None:
            from .unet import DEFAULT_MODEL_PATH, load_unet

            path = self.config.model_path or DEFAULT_MODEL_PATH
            self._model = load_unet(path, device=self.config.device)
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
        if self.model.device.type != "cuda":
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
        return self.peaks_from_probability(prob, norm)

    def peaks_from_probability(
        self, prob: NDArray[np.float32], norm: NormalisedFrame, threshold: float | None = None
    ) -> PeakList:
        """The peaks of a probability map (from :meth:`probability`) at a cut (the configured one when None)."""
        from .unet_extract import candidate_reach, extract_peaks, gather_candidates

        cfg = self.config
        if threshold is None:
            threshold = self.model.threshold if cfg.probability_threshold is None else cfg.probability_threshold
        candidates = gather_candidates(
            prob,
            norm.residual,
            norm.background,
            norm.noise,
            norm.bad,
            norm.panel_id,
            float(threshold),
            candidate_reach(cfg.grow_px),
        )
        cols, along = extract_peaks(
            candidates, min_pixel_count=cfg.min_pixel_count, split=cfg.split_regions, grow_px=cfg.grow_px
        )
        maps = norm.maps
        radius = None if maps is None else np.asarray(maps.radius_px)
        resolution = None if maps is None or maps.resolution_a is None else np.asarray(maps.resolution_a)
        rings = None
        if cols["row"].size and norm.stats is not None and cfg.reject_powder_rings | (cfg.ice_rings == "auto"):
            from ..classical.rings import ring_evidence

            good = ~norm.bad
            data = np.where(good, norm.residual + norm.background, np.float32(0)).astype(np.float32)
            rings = ring_evidence(data, good, norm.stats, contrast=cfg.powder_ring_contrast)
        peaks, self._rejected = finish_peaks(cols, along, rings, radius, resolution, cfg)
        return peaks


def finish_peaks(
    cols: dict[str, NDArray[Any]],
    along: NDArray[np.float64],
    rings: RingEvidence | None,
    radius_px: NDArray | None,
    resolution_a: NDArray | None,
    config: UNetFinderConfig,
) -> tuple[PeakList, dict[str, int]]:
    """Apply the ring and mask rules to measured regions and make the frame's peak list.

    Parameters
    ----------
    cols : dict of str to (n,) ndarray
        The regions' measurements (:func:`~braggml.ml.unet_extract.extract_peaks`).
    along : (n,) float ndarray
        Share of each region's pixels along bad pixels, another panel or the frame's edge.
    rings : RingEvidence or None
        The frame's ring evidence (None: no powder-ring rejection, and ``ice_rings="auto"`` rejects nothing).
    radius_px, resolution_a : (H, W) ndarray or None
        The run's maps (no ring rule applies without ``radius_px``, no ice rule without ``resolution_a``).
    config : UNetFinderConfig

    Returns
    -------
    peaks : PeakList
        One frame.
    rejected : dict of str to int
        Regions dropped, by cause (``"powder_ring"``, ``"ice_ring"``, ``"masked"``).
    """
    from ..classical.rings import peaks_on_rings

    rejected: dict[str, int] = {}
    n = cols["row"].size
    keep = np.ones(n, bool)
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
        )
        for cause, bad in (("powder_ring", on_powder), ("ice_ring", ice_rejected)):
            hit = keep & bad
            if hit.any():
                rejected[cause] = int(hit.sum())
                keep[hit] = False
    if config.masked_peaks == "drop" and n:
        hit = keep & (along >= 1.0)
        if hit.any():
            rejected["masked"] = int(hit.sum())
            keep &= ~hit
    peaks = PeakList.from_columns(
        n_frames=1, frame=np.zeros(int(keep.sum()), np.int64), **{k: v[keep] for k, v in cols.items()}
    )
    return peaks, rejected
