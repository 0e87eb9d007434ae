"""Batched input normalisation of the U-Net on a torch device, for frames that share one geometry.

:func:`braggml.ml.unet.normalise_frame` prepares one frame at a time on the CPU. In a run every frame has the
same mask and pixel maps, so everything that depends on the geometry alone (the radial bins of each pixel,
the static bad-pixel map, the samples read by the robust start and the ring counts) is prepared once by
:class:`TorchNormaliser` and kept on the device; each call then normalises a whole batch of frames with a
fixed set of scatter/gather kernels. The results are those of :func:`~braggml.ml.unet.normalise_frame`
frame by frame (same bad pixels, clipped statistics, gain, background, noise and network inputs), and the
powder-ring evidence of :func:`braggml.classical.rings.ring_evidence` comes with them.

Only the small per-bin arrays travel to the CPU: the detector gain and the ring levels are computed there
with the functions of the classical finders.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import numpy as np
import torch
from numpy.typing import NDArray

from ..classical._common import check_positive
from ..classical._radial import RadialStats, _bin_keys, estimate_gain_per_panel
from ..classical.rings import RingEvidence, RingLevels, azimuth_sectors, ring_evidence_from_counts, ring_levels
from ..errors import ConfigError
from ..geometry import PixelMaps
from .cnn import resolve_device
from .unet import NormConfig, correlated_noise_scale, correlation_tiles, noise_correlation

__all__ = ["TorchNormaliser", "TorchNormalised"]

_T = TypeVar("_T")

#: Clipping passes of the radial statistics (as :func:`~braggml.classical._radial.radial_statistics`).
_ITERATIONS = 5
#: Smallest number of pixels of a panel's radius bin (smaller ones use the all-panel bin).
_MIN_BIN_PIXELS = 100
#: Columns of the histogram that gives each bin's robust starting threshold, and its sampling stride.
_N_HIST = 64
_HIST_STRIDE = 3
#: Photons per pixel, in units of the gain, below which a pixel counts towards the background rate.
_RATE_PHOTONS = 3.0


@dataclass(eq=False)
class TorchNormalised:
    """A batch of frames prepared for the network, on the device of the :class:`TorchNormaliser`.

    Attributes
    ----------
    inputs : (B, 2, H, W) float32 tensor
        As :attr:`braggml.ml.unet.NormalisedFrame.inputs` for each frame.
    residual, background, noise : (B, H, W) float32 tensors
        Background-subtracted frame (0 on bad pixels), background and noise per pixel, in detector units.
    bad : (B, H, W) bool tensor
        Static bad pixels and the non-finite pixels of each frame.
    gains : list of float
        Detector units per photon of each frame (as :attr:`~braggml.ml.unet.NormalisedFrame.gain`).
    stats : list of RadialStats
        Per-frame clipped statistics (CPU arrays, ``bin_index`` shared by all frames).
    ring_above, ring_total : (B, R) int64 ndarrays or None
        Per radius group, the looked-at good pixels above their bin's ring level and all looked-at good
        pixels (every other pixel); None when ring evidence was not asked for.
    ring_sector_above, ring_sector_total : (B, R, S) int64 ndarrays or None
        The same per radius group and azimuthal sector (``sectors``).
    ring_levels : list of RingLevels or None
        Ring levels of each frame (:func:`braggml.classical.rings.ring_levels`).
    sectors : (H, W) uint8 ndarray or None
        Azimuthal sector of each pixel (:func:`braggml.classical.rings.azimuth_sectors`).
    noise_correlation : list of float
        Each frame's :func:`~braggml.ml.unet.noise_correlation` (the noise is scaled up where it is high).
    integer : list of bool
        Whether every good pixel of each frame holds a whole number (counts).
    """

    inputs: torch.Tensor
    residual: torch.Tensor
    background: torch.Tensor
    noise: torch.Tensor
    bad: torch.Tensor
    gains: list[float]
    stats: list[RadialStats]
    ring_above: NDArray[np.int64] | None
    ring_total: NDArray[np.int64] | None
    ring_levels: list[RingLevels] | None
    ring_sector_above: NDArray[np.int64] | None = None
    ring_sector_total: NDArray[np.int64] | None = None
    sectors: NDArray[np.uint8] | None = None
    noise_correlation: list[float] = field(default_factory=list)
    integer: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.gains)

    def rings(self, i: int) -> RingEvidence:
        """The :class:`~braggml.classical.rings.RingEvidence` of frame ``i`` of the batch.

        Raises
        ------
        ValueError
            When the batch was normalised without ring evidence.
        IndexError
            When ``i`` is not a frame of the batch.
        """
        if self.ring_levels is None or self.ring_above is None or self.ring_total is None:
            raise ValueError("this batch was normalised with rings=False: no ring evidence")
        if not -len(self.gains) <= i < len(self.gains):
            raise IndexError(f"frame {i} is not in a batch of {len(self.gains)}")
        by_sector = None
        if self.ring_sector_above is not None and self.ring_sector_total is not None:
            by_sector = partial(_all_counted, (self.ring_sector_above[i], self.ring_sector_total[i]))
        return ring_evidence_from_counts(
            self.ring_levels[i], self.ring_above[i], self.ring_total[i], count_sectors=by_sector, sectors=self.sectors
        )


def _all_counted(
    counts: tuple[NDArray[np.int64], NDArray[np.int64]], groups: NDArray[np.bool_] | None = None
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Ring counts by sector made on the device for every radius group (whichever ``groups`` are asked for)."""
    return counts


def _device(device: str | torch.device) -> torch.device:
    """A torch device from a name (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, or any torch device name)."""
    if isinstance(device, torch.device):
        return device
    text = str(device).strip().lower()
    if text == "auto" or text == "cpu" or text.startswith("cuda"):
        return resolve_device(text)
    try:
        return torch.device(text)
    except RuntimeError as exc:
        raise ConfigError(f"device must be a torch device name, got {device!r}") from exc


def _float32_above(threshold: torch.Tensor) -> torch.Tensor:
    """The smallest float32 at or above each float64 ``threshold``: for any float32 ``v``,
    ``v < threshold`` (in float64) exactly when ``v < _float32_above(threshold)``."""
    t32 = threshold.to(torch.float32)
    below = t32.to(torch.float64) < threshold
    return torch.where(below, torch.nextafter(t32, torch.full_like(t32, float("inf"))), t32)


class TorchNormaliser:
    """Normalise batches of frames of one detector geometry on a torch device, as
    :func:`~braggml.ml.unet.normalise_frame` does for one frame on the CPU.

    The per-panel radial bins (:func:`braggml.classical._radial.radial_statistics` with ``per_panel=True``),
    the static bad-pixel map and the pixel samples used by the statistics are prepared once here and
    uploaded to the device. Each call then computes, for every frame of the batch: the non-finite pixels
    and whether the frame holds whole numbers; the sigma-clipped background and noise of every bin
    (robust start from 64-column histograms of every third pixel, at most five passes that stop, frame by
    frame, where the CPU statistics stop); the gain (on the CPU from the small per-bin arrays); the
    background photon rate; the per-bin noise and the network inputs; and the powder-ring counts.

    Parameters
    ----------
    shape : (int, int)
        Frame shape (rows, cols).
    maps : PixelMaps, optional
        Panels and radii; :meth:`PixelMaps.fallback` when omitted.
    mask : (H, W) bool ndarray, optional
        True marks a bad pixel (in addition to ``maps.mask`` and the pixels of no panel).
    config : NormConfig, optional
    device : str or torch.device
        Where the frames live and the work is done (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``...).
    ring_contrast : float
        As ``contrast`` of :func:`braggml.classical.rings.ring_levels` (the finder's
        ``powder_ring_contrast``).

    Raises
    ------
    ValueError
        If ``shape`` is not two positive integers or the maps or the mask have another shape.
    ConfigError
        For an unknown device or a ``ring_contrast`` that is not positive.

    Examples
    --------
    >>> norm = TorchNormaliser((40, 50))
    >>> out = norm(torch.full((2, 40, 50), 3, dtype=torch.int32))
    >>> tuple(out.inputs.shape), out.gains
    ((2, 2, 40, 50), [1.0, 1.0])
    """

    def __init__(
        self,
        shape: tuple[int, int],
        *,
        maps: PixelMaps | None = None,
        mask: NDArray[np.bool_] | None = None,
        config: NormConfig | None = None,
        device: str | torch.device = "cpu",
        ring_contrast: float = 1.0,
    ) -> None:
        try:
            rows, cols = (int(s) for s in shape)
            valid = rows > 0 and cols > 0 and (rows, cols) == tuple(shape)
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise ValueError(f"shape must be two positive integers (rows, cols), got {shape!r}")
        if config is not None and not isinstance(config, NormConfig):
            raise ConfigError(f"config must be a NormConfig, got {type(config).__name__}")
        check_positive("ring_contrast", float(ring_contrast))
        self.shape = (rows, cols)
        self.config = NormConfig() if config is None else config
        self.ring_contrast = float(ring_contrast)
        self.device = _device(device)
        if maps is None:
            maps = PixelMaps.fallback(self.shape)
        elif maps.shape != self.shape:
            raise ValueError(f"maps have shape {maps.shape}, frames have {self.shape}")
        if mask is not None and np.shape(mask) != self.shape:
            raise ValueError(f"mask has shape {np.shape(mask)}, frames have {self.shape}")
        self.maps = maps
        panel_id = np.ascontiguousarray(maps.panel_id, dtype=np.int32)
        self.panel_id = panel_id
        static_bad = np.asarray(maps.mask, dtype=bool) | (panel_id < 0)
        if mask is not None:
            static_bad = static_bad | np.asarray(mask, dtype=bool)
        self.static_bad = static_bad

        # the bins of radial_statistics(per_panel=True), and the compact numbering of those holding pixels
        key32, key2, n_keys, radius_bin, group, full_of, _, _, _ = _bin_keys(
            np.asarray(maps.radius_px), panel_id, True, _MIN_BIN_PIXELS
        )
        self.bin_index: NDArray[np.int32] = key32
        self.n_keys = int(n_keys)
        self.radius_bin: NDArray[np.int64] = radius_bin
        self.radius_group: NDArray[np.int64] = group
        self.n_r = int(radius_bin.max()) + 1 if radius_bin.size else 1
        self.full_of: NDArray[np.int64] = full_of
        n_c = int(full_of.size)
        self.n_compact = n_c  # bins holding pixels, numbered in order; index n_c is a sink for unused samples
        compact_of = np.full(self.n_keys, -1, np.int64)
        compact_of[full_of] = np.arange(n_c)
        key_all = compact_of[key32.ravel()]
        good = np.flatnonzero(~static_bad.ravel())
        key2_good = key2.ravel()[good]
        second = key2_good >= 0
        # each pixel feeds its own bin (layout 0) and, where there is one, its all-panel bin (layout 1)
        self._layouts = [
            _Layout.build(good, key_all[good], cols, radius_bin[full_of], self.device),
            _Layout.build(good[second], compact_of[key2_good[second]], cols, radius_bin[full_of], self.device),
        ]
        # radius group and azimuthal sector of each position of the first layout, for the ring counts
        self.sectors = azimuth_sectors(maps.radius_px, maps.panel_id)
        self.n_sectors = int(self.sectors.max()) + 1
        lay = self._layouts[0]
        sector_at = torch.as_tensor(self.sectors.ravel().astype(np.int64)).to(self.device)[lay.index]
        self._ring_cell = lay.chunk_group.repeat_interleave(_CHUNK) * self.n_sectors + sector_at
        self._tiles = correlation_tiles(self.shape)
        self._key_all = torch.as_tensor(key_all).to(self.device)
        self._bad = torch.as_tensor(static_bad.ravel()).to(self.device)
        self._n_good = int(good.size)
        self._pool: ThreadPoolExecutor | None = None

    # -- per batch ------------------------------------------------------------------------------------------
    def __call__(self, frames: torch.Tensor, *, bad: torch.Tensor | None = None, rings: bool = True) -> TorchNormalised:
        """Normalise a batch of frames.

        Parameters
        ----------
        frames : (B, H, W) tensor
            Frames of any real dtype (integers, floats, bool), preferably already on the normaliser's
            device (others are moved there); not modified.
        bad : (B, H, W) bool tensor, optional
            Each frame's own bad pixels, on top of the normaliser's mask.
        rings : bool
            Also count the pixels for the powder-ring evidence (:meth:`TorchNormalised.rings`).

        Returns
        -------
        TorchNormalised

        Raises
        ------
        ValueError
            If ``frames`` is not a (B, H, W) tensor of real numbers of the normaliser's frame shape with
            B >= 1.
        """
        if not isinstance(frames, torch.Tensor):
            raise ValueError(f"frames must be a torch tensor (B, H, W), got {type(frames).__name__}")
        if frames.ndim != 3 or tuple(frames.shape[1:]) != self.shape or frames.shape[0] < 1:
            raise ValueError(f"frames must have shape (B, {self.shape[0]}, {self.shape[1]}), got {tuple(frames.shape)}")
        if frames.is_complex():
            raise ValueError(f"frames must hold real numbers, got dtype {frames.dtype}")
        frames = frames.to(self.device)
        if bad is not None:
            if tuple(bad.shape) != tuple(frames.shape):
                raise ValueError(f"bad must have the frames' shape {tuple(frames.shape)}, got {tuple(bad.shape)}")
            # a frame's own bad pixels are treated as non-finite values: out of every statistic, flagged bad
            frames = torch.where(bad.to(self.device, torch.bool), float("nan"), frames.to(torch.float32))
        with torch.no_grad():
            return self._normalise(frames, rings)

    def _submit(self, fn: Callable[[RadialStats], _T], items: list[RadialStats]) -> Callable[[], list[_T]]:
        """Start ``fn`` over ``items`` on a few threads (the compiled kernels release the GIL); the returned
        function waits for the results."""
        if len(items) < 2:
            results = [fn(x) for x in items]
            return lambda: results
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
        jobs = [self._pool.submit(fn, x) for x in items]
        return lambda: [job.result() for job in jobs]

    def _normalise(self, frames: torch.Tensor, rings: bool) -> TorchNormalised:
        cfg = self.config
        n_frames = frames.shape[0]
        h, w = self.shape
        flat = frames.reshape(n_frames, h * w)
        inf = torch.tensor(float("inf"), dtype=torch.float32, device=self.device)
        # the good pixels of each layout, bin by bin; padding and non-finite pixels hold +inf, which no
        # clipping or trimming cut takes
        data = flat.to(torch.float32)
        values = []
        for lay in self._layouts:
            v = data[:, lay.index]
            values.append(torch.where(lay.pad | ~torch.isfinite(v), inf, v))
        bad = self._bad.expand(n_frames, h * w)
        if frames.is_floating_point():
            bad = bad | ~torch.isfinite(data)
            finite = torch.isfinite(values[0])
            fractional = (finite & (values[0] != torch.floor(values[0]))).any(dim=1)
            integer = (finite.any(dim=1) & ~fractional).tolist()
        else:
            integer = [self._n_good > 0] * n_frames
        # half a count for whole-number frames; other frames have no floor here (the photon floor applies)
        floor = torch.tensor([0.5 if i else 0.0 for i in integer], dtype=torch.float64, device=self.device)

        offset, sigma, count, chunks = self._clipped_statistics(values, floor)
        offset32 = offset.to(torch.float32)
        sigma32 = sigma.to(torch.float32)
        offset_np = offset32.cpu().numpy()
        sigma_np = sigma32.cpu().numpy()
        count_np = count.cpu().numpy()
        stats = [self._stats(offset_np[b], sigma_np[b], count_np[b]) for b in range(n_frames)]
        # the ring levels are computed on the CPU while the device works on the outputs
        levels_of = self._submit(partial(ring_levels, contrast=self.ring_contrast), stats) if rings else None
        gains = []
        for g, whole in zip(self._submit(estimate_gain_per_panel, stats)(), integer):
            gains.append(1.0 if g == 0 and whole else float(g))
        noise_bin = self._noise_per_bin(chunks, offset32, sigma32, gains, floor)
        key_all = self._key_all.expand(n_frames, h * w)
        offset_px = offset32.gather(1, key_all)
        noise_px = noise_bin.gather(1, key_all)
        zero = torch.zeros((), dtype=torch.float32, device=self.device)
        residual = torch.where(bad, zero, data - offset_px)
        correlation = torch.ones(n_frames, dtype=torch.float64, device=self.device)
        if math.isfinite(cfg.correlated_noise_min):
            frame_residual = residual.view(n_frames, h, w)
            frame_noise = noise_px.view(n_frames, h, w)
            frame_good = ~bad.view(n_frames, h, w)
            correlation = noise_correlation(
                torch.stack([frame_residual[:, t[0], t[1]] / frame_noise[:, t[0], t[1]] for t in self._tiles], dim=1),
                torch.stack([frame_good[:, t[0], t[1]] for t in self._tiles], dim=1),
            )
            noise_px = noise_px * correlated_noise_scale(correlation, cfg).to(torch.float32)[:, None]
        scaled = torch.asinh(residual / noise_px * torch.tensor(1.0 / cfg.asinh_scale, dtype=torch.float32))
        inputs = torch.stack([torch.where(bad, zero, scaled), bad.to(torch.float32)], dim=1)

        ring_above = ring_total = sector_above = sector_total = levels = None
        if levels_of is not None:
            levels = levels_of()
            sector_above, sector_total = self._ring_counts(values[0], levels)
            ring_above, ring_total = sector_above.sum(axis=2), sector_total.sum(axis=2)
        shape = (n_frames, h, w)
        return TorchNormalised(
            inputs=inputs.reshape(n_frames, 2, h, w),
            residual=residual.reshape(shape),
            background=offset_px.reshape(shape),
            noise=noise_px.reshape(shape),
            bad=bad.reshape(shape),
            gains=gains,
            stats=stats,
            ring_above=ring_above,
            ring_total=ring_total,
            ring_levels=levels,
            ring_sector_above=sector_above,
            ring_sector_total=sector_total,
            sectors=self.sectors if levels is not None else None,
            noise_correlation=correlation.tolist(),
            integer=[bool(i) for i in integer],
        )

    def _stats(self, offset: NDArray, sigma: NDArray, count: NDArray) -> RadialStats:
        """One frame's :class:`RadialStats` (all bins) from its compact per-bin arrays."""
        off = np.zeros(self.n_keys, np.float32)
        sig = np.zeros(self.n_keys, np.float32)
        cnt = np.zeros(self.n_keys, np.int64)
        off[self.full_of] = offset
        sig[self.full_of] = sigma
        cnt[self.full_of] = count
        return RadialStats(
            bin_index=self.bin_index,
            offset=off,
            sigma=sig,
            count=cnt,
            radius_bin=self.radius_bin,
            radius_group=self.radius_group,
        )

    def _per_bin(self, chunk_values: list[torch.Tensor], reduce: str = "sum") -> torch.Tensor:
        """Join per-chunk values of both layouts, (B, n_chunks) each, into (B, n_c) per-bin values."""
        first = chunk_values[0]
        fill = {"sum": 0, "amin": float("inf"), "amax": float("-inf")}[reduce]
        out = torch.full((first.shape[0], self.n_compact), fill, dtype=first.dtype, device=self.device)
        for lay, v in zip(self._layouts, chunk_values):
            if v.shape[1] == 0:
                continue
            key = lay.chunk_key.expand_as(v)
            if reduce == "sum":
                out.scatter_add_(1, key, v)
            else:
                out.scatter_reduce_(1, key, v, reduce)
        return out

    def _robust_start(self, values: list[torch.Tensor]) -> torch.Tensor:
        """Per bin ``median + snr * max(p84 - median, column width)`` from a 64-column histogram, between the
        lowest and highest sample, of every third pixel (+inf for bins without samples); (B, n_c) float64."""
        n_frames = values[0].shape[0]
        n_c = self.n_compact
        lows, highs = [], []
        for lay, v in zip(self._layouts, values):
            sampled = lay.sample & torch.isfinite(v)
            lows.append(torch.where(sampled, v, float("inf")).view(n_frames, -1, _CHUNK).amin(dim=2))
            highs.append(torch.where(sampled, v, float("-inf")).view(n_frames, -1, _CHUNK).amax(dim=2))
        lo = self._per_bin(lows, "amin").to(torch.float64)
        hi = self._per_bin(highs, "amax").to(torch.float64)
        span = hi - lo
        width = span / _N_HIST
        hist = torch.zeros(n_frames, (n_c + 1) * _N_HIST, dtype=torch.int64, device=self.device)
        sink = torch.full((n_frames, 1), float("nan"), dtype=torch.float64, device=self.device)
        lo_s = torch.cat([lo, sink], dim=1)
        span_s = torch.cat([span, sink], dim=1)
        for lay, v in zip(self._layouts, values):
            sample = v[:, lay.sample_at]
            use = torch.isfinite(sample)
            key = torch.where(use, lay.sample_key.expand_as(sample), n_c)
            v64 = sample.to(torch.float64)
            lo_k = lo_s.gather(1, key)
            span_k = span_s.gather(1, key)
            # as int((v - lo) / span * n_hist) of the CPU, a bin without spread in its first column
            pos = torch.where(span_k > 0, (v64 - lo_k) / span_k * _N_HIST, torch.zeros_like(v64))
            slot = torch.nan_to_num(pos, nan=0.0, posinf=0.0, neginf=0.0).to(torch.int64).clamp_(0, _N_HIST - 1)
            hist.scatter_add_(1, key * _N_HIST + slot, torch.ones_like(slot))
        acc = hist.view(n_frames, n_c + 1, _N_HIST)[:, :n_c].cumsum(dim=2).to(torch.float64)
        total = acc[..., -1]
        med = (acc < 0.5 * total[..., None]).sum(dim=2).to(torch.float64)
        p84 = (acc < 0.8413 * total[..., None]).sum(dim=2).to(torch.float64)
        median = lo + (med + 0.5) * width
        spread = torch.maximum((p84 - med) * width, width)
        start = median + self.config.clip_sigma * spread
        return torch.where((hi >= lo) & (total > 0), start, torch.full_like(start, float("inf")))

    def _clipped_statistics(
        self, values: list[torch.Tensor], sigma_floor: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, _SortedChunks]:
        """Clipped mean, standard deviation and count of each bin, (B, n_c) float64, float64 and int64, as
        :func:`~braggml.classical._radial.radial_statistics` (each pixel feeds its bin and its all-panel
        bin; the passes of each frame stop where the CPU's stop), and the sorted chunks of the first layout."""
        n_frames = values[0].shape[0]
        n_c = self.n_compact
        snr = self.config.clip_sigma
        threshold = self._robust_start(values)
        offset = torch.zeros(n_frames, n_c, dtype=torch.float64, device=self.device)
        sigma = torch.zeros_like(offset)
        count = torch.zeros(n_frames, n_c, dtype=torch.int64, device=self.device)
        previous = torch.full_like(count, -1)
        done = torch.zeros(n_frames, dtype=torch.bool, device=self.device)
        # each chunk sorted once, with its running sums: a pass then only counts the values below the cut
        # (the CPU sums float32 squares in float64)
        sorted_chunks = [_SortedChunks.of(v.view(n_frames, -1, _CHUNK)) for v in values]
        sf = sigma_floor[:, None]
        inf = torch.full_like(offset, float("inf"))
        zero = torch.zeros((), dtype=torch.float64, device=self.device)
        for it in range(_ITERATIONS):
            cut = _float32_above(threshold)
            s1, s2, n = [], [], []
            for lay, chunks in zip(self._layouts, sorted_chunks):
                below, sum1, sum2 = chunks.below(cut.gather(1, lay.chunk_key.expand(n_frames, -1)))
                s1.append(sum1)
                s2.append(sum2)
                n.append(below)
            s1_b, s2_b, n_b = self._per_bin(s1), self._per_bin(s2), self._per_bin(n)
            filled = n_b > 0
            safe = torch.where(filled, n_b, torch.ones_like(n_b)).to(torch.float64)
            m = s1_b / safe
            var = s2_b / safe - m * m
            sd = torch.where(filled & (var > 0), torch.sqrt(torch.clamp(var, min=0.0)), zero)
            m = torch.where(filled, m, zero)
            new_threshold = torch.where(filled, m + snr * torch.maximum(sd, sf), inf)
            active = (~done)[:, None]
            offset = torch.where(active, m, offset)
            sigma = torch.where(active, sd, sigma)
            count = torch.where(active, n_b, count)
            threshold = torch.where(active, new_threshold, threshold)
            # the CPU's test: (almost) no pixel changed sides since the previous pass
            changed = (n_b - previous).abs().sum(dim=1)
            if it == 0:
                changed = changed + (self.n_keys - n_c)
            settled = changed <= torch.clamp(n_b.sum(dim=1) // 10000, min=2)
            previous = torch.where(active & ~settled[:, None], n_b, previous)
            done = done | settled
            if it + 1 < _ITERATIONS and bool(done.all()):
                break
        return offset, sigma, count, sorted_chunks[0]

    def _noise_per_bin(
        self,
        chunks: _SortedChunks,
        offset32: torch.Tensor,
        sigma32: torch.Tensor,
        gains: list[float],
        floor: torch.Tensor,
    ) -> torch.Tensor:
        """Per bin ``max(sqrt(sigma**2 + gain**2 * extra), max(photon floor * gain, floor, 1e-6))`` with
        ``extra`` the background photons the clipping removed (trimmed mean below
        ``offset + max(3 * gain, 5 * sigma)``, see :func:`~braggml.classical._radial.background_rate`);
        (B, n_c) float32."""
        n_frames = offset32.shape[0]
        gain = torch.tensor(gains, dtype=torch.float64, device=self.device)[:, None]
        positive = gain > 0
        safe_gain = torch.where(positive, gain, torch.ones_like(gain))
        off64 = offset32.to(torch.float64)
        sig64 = sigma32.to(torch.float64)
        extra = torch.zeros_like(off64)
        if any(g > 0 for g in gains):
            lay = self._layouts[0]
            cut = _float32_above(off64 + torch.maximum(_RATE_PHOTONS * gain, 5.0 * sig64))
            below, total, _ = chunks.below(cut.gather(1, lay.chunk_key.expand(n_frames, -1)))
            s = self._per_bin([total])
            n = self._per_bin([below])
            zero = torch.zeros((), dtype=torch.float64, device=self.device)
            mean = torch.where(n > 0, s / torch.clamp(n, min=1).to(torch.float64), zero)
            trimmed = torch.clamp(mean, min=0.0) / safe_gain * safe_gain
            extra = torch.where(positive, torch.clamp(trimmed - off64, min=0.0) / safe_gain, extra)
        noise = torch.sqrt(sig64**2 + gain**2 * extra)
        lowest = torch.clamp(torch.maximum(self.config.photon_noise_floor * gain, floor[:, None]), min=1e-6)
        return torch.maximum(noise, lowest).to(torch.float32)

    def _ring_counts(
        self, values: torch.Tensor, levels: list[RingLevels]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Per frame, radius group and azimuthal sector ``(B, R, S)``, the looked-at good pixels (every other
        pixel) above their bin's ring level, and all of them."""
        n_frames = values.shape[0]
        lay = self._layouts[0]
        level = np.stack([lv.level[self.full_of] for lv in levels])
        level_t = torch.as_tensor(level, dtype=torch.float32).to(self.device)
        v = values.view(n_frames, -1, _CHUNK)
        counted = (lay.ring & torch.isfinite(values)).view_as(v)
        above = counted & (v > level_t.gather(1, lay.chunk_key.expand(n_frames, -1))[..., None])
        n_cells = self.n_r * self.n_sectors
        shape = (n_frames, self.n_r, self.n_sectors)
        total = torch.stack([torch.bincount(self._ring_cell[c.view(-1)], minlength=n_cells) for c in counted]).view(
            shape
        )
        high = torch.stack([torch.bincount(self._ring_cell[a.view(-1)], minlength=n_cells) for a in above]).view(shape)
        return high.cpu().numpy(), total.cpu().numpy()


#: Pixels of one chunk of a layout: all pixels of a chunk belong to one bin.
_CHUNK = 32


@dataclass(frozen=True)
class _SortedChunks:
    """The values of each chunk in increasing order and their running sums (float64, from 0).

    Attributes
    ----------
    values : (B, C, _CHUNK) float32 tensor
    sum1, sum2 : (B, C, _CHUNK + 1) float64 tensors
        Sums of the first ``j`` values and of their float32 squares.
    """

    values: torch.Tensor
    sum1: torch.Tensor
    sum2: torch.Tensor

    @classmethod
    def of(cls, chunks: torch.Tensor) -> _SortedChunks:
        """Sort the chunks ``(B, C, _CHUNK)`` (+inf entries, never counted, come last)."""
        ordered = torch.sort(chunks, dim=2).values.contiguous()
        finite = torch.where(torch.isfinite(ordered), ordered, torch.zeros((), device=chunks.device))
        # running sums as one product with a triangular matrix of ones (a scan over 32 entries is slow)
        size = chunks.shape[2]
        steps = torch.ones(size, size + 1, dtype=torch.float64, device=chunks.device).triu(diagonal=1)
        sum1 = torch.matmul(finite.to(torch.float64), steps)
        sum2 = torch.matmul((finite * finite).to(torch.float64), steps)
        return cls(ordered, sum1, sum2)

    def below(self, cut: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Number, sum and sum of squares of the values of each chunk below its ``cut`` (B, C)."""
        at = torch.searchsorted(self.values, cut[..., None].contiguous())
        return at[..., 0], self.sum1.gather(2, at)[..., 0], self.sum2.gather(2, at)[..., 0]


@dataclass(frozen=True)
class _Layout:
    """The good pixels of a frame ordered by bin, each bin padded to whole chunks of ``_CHUNK`` pixels, so
    that per-bin sums are chunk sums (plain reductions) joined by few scatters.

    Attributes
    ----------
    index : (P,) int64 tensor
        Flat pixel index of each position (0 for padding).
    pad : (P,) bool tensor
        Padding positions.
    chunk_key : (P / _CHUNK,) int64 tensor
        Bin of each chunk.
    chunk_group : (P / _CHUNK,) int64 tensor
        Radius group of each chunk's bin.
    sample : (P,) bool tensor
        Positions of the robust start's sample (flat index a multiple of three).
    sample_at, sample_key : (S,) int64 tensors
        Those positions and their bins.
    ring : (P,) bool tensor
        Positions looked at by the ring counts (row + col even).
    """

    index: torch.Tensor
    pad: torch.Tensor
    chunk_key: torch.Tensor
    chunk_group: torch.Tensor
    sample: torch.Tensor
    sample_at: torch.Tensor
    sample_key: torch.Tensor
    ring: torch.Tensor

    @classmethod
    def build(
        cls,
        pixels: NDArray[np.int64],
        keys: NDArray[np.int64],
        cols: int,
        bin_group: NDArray[np.int64],
        device: torch.device,
    ) -> _Layout:
        """The layout of the flat ``pixels`` feeding the bins ``keys``."""
        order = np.argsort(keys, kind="stable")
        pixels = pixels[order]
        keys = keys[order]
        bins, first, counts = np.unique(keys, return_index=True, return_counts=True)
        chunks = -(-counts // _CHUNK)
        start = np.cumsum(chunks * _CHUNK) - chunks * _CHUNK
        size = int(chunks.sum()) * _CHUNK
        dest = np.repeat(start - first, counts) + np.arange(keys.size)
        index = np.zeros(size, np.int64)
        index[dest] = pixels
        pad = np.ones(size, bool)
        pad[dest] = False
        chunk_key = np.repeat(bins, chunks).astype(np.int64)
        sample = ~pad & (index % _HIST_STRIDE == 0)
        sample_at = np.flatnonzero(sample)
        ring = ~pad & ((index // cols + index % cols) % 2 == 0)

        def put(a: NDArray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a)).to(device)

        return cls(
            index=put(index),
            pad=put(pad),
            chunk_key=put(chunk_key),
            chunk_group=put(bin_group[chunk_key].astype(np.int64)),
            sample=put(sample),
            sample_at=put(sample_at),
            sample_key=put(chunk_key[sample_at // _CHUNK]),
            ring=put(ring),
        )
