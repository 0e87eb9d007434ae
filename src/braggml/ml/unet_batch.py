"""Batched U-Net peak finding on a torch device, for streams of frames that share one geometry.

:class:`UNetFinder` handles one frame at a time: the frame is normalised on the CPU, the network runs on tiles,
and the peaks are extracted on the CPU. On a GPU that leaves the device idle most of the time. Here a batch of
frames goes to the device whole: normalisation (:class:`~braggml.ml.unet_norm_torch.TorchNormaliser`), the
network in half precision on whole frames, the probability cut and the neighbourhood of every pixel above it
all run there, and only those few pixels come back to the host, where the same sparse extraction as the
single-frame finder (:func:`~braggml.ml.unet_extract.extract_peaks`) and the same ring and mask rules
(:func:`~braggml.ml.unet_finder.finish_peaks`) make the peaks, in worker threads while the device works on the
next batch.

Examples
--------
>>> finder = UNetFinder(device="cuda")  # doctest: +SKIP
>>> with BatchedUNetFinder(finder, frames.shape[1:], maps=maps, mask=mask, workers=2) as batched:  # doctest: +SKIP
...     for peaks in batched.find_stream(frames):
...         print(len(peaks))
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from ..classical.rings import RingEvidence
from ..errors import ConfigError
from ..geometry import PixelMaps
from ..peaks import PeakList
from .unet import network_autocast, resolve_precision
from .unet_extract import (
    SEED_CLEARANCE_PX,
    SEED_MIN_PHOTONS,
    SPARSE_PHOTONS,
    CandidatePixels,
    candidate_reach,
    screen_seeds,
    seed_blocks,
)
from .unet_finder import (
    UNetFinder,
    UNetFinderConfig,
    counting_gain,
    extract_regions,
    finish_peaks,
    gather_level,
    needs_ring_evidence,
    photon_seed_tests,
    wants_photon_spots,
)
from .unet_norm_torch import TorchNormalised, TorchNormaliser

__all__ = [
    "BatchedUNetFinder",
    "FramePixels",
    "peaks_from_pixels",
    "batch_that_fits",
    "DEVICE_BYTES_PER_PIXEL",
    "FLIP_BYTES_PER_PIXEL",
]

log = logging.getLogger(__name__)

#: Device memory a batch takes per frame pixel (normalisation, float16 network and extraction together): the
#: most seen on an H200 was 134-153 bytes for 4.4 Mpixel frames in batches of 8 and 16.
DEVICE_BYTES_PER_PIXEL = 160
#: What flipped copies (:class:`~braggml.ml.unet.FlipAveraged`) add per frame pixel: the flipped two-channel
#: float32 input, the copy's logits and their running sum. The copies run one after the other, so the
#: network's own buffers are not multiplied.
FLIP_BYTES_PER_PIXEL = 16


def batch_that_fits(
    requested: int, frame_pixels: int, free_bytes: int, *, share: float = 0.8, flips: int = 1
) -> int:
    """The largest batch, at most ``requested``, whose frames take no more than ``share`` of the free device
    memory (at least 1); with ``flips`` > 1 each pixel also needs :data:`FLIP_BYTES_PER_PIXEL`.

    Examples
    --------
    >>> batch_that_fits(8, 4_400_000, 80 * 2**30)
    8
    >>> batch_that_fits(8, 18_000_000, 16 * 2**30)
    4
    """
    per_pixel = DEVICE_BYTES_PER_PIXEL + (FLIP_BYTES_PER_PIXEL if flips > 1 else 0)
    fits = int(share * free_bytes // (per_pixel * max(frame_pixels, 1)))
    return max(1, min(int(requested), fits))


@dataclass(frozen=True, eq=False)
class FramePixels:
    """What the host needs of one frame after the device's work: the pixels near the peaks, the ring evidence."""

    candidates: CandidatePixels
    rings: RingEvidence | None
    counting: bool = False


# -- host side: the same extraction and rules as UNetFinder ----------------------------------------------------
def peaks_from_pixels(
    frame: FramePixels,
    config: UNetFinderConfig,
    radius_px: NDArray | None,
    resolution_a: NDArray | None,
) -> tuple[PeakList, dict[str, int]]:
    """The peaks of one frame from its near-peak pixels (see :func:`~braggml.ml.unet_finder.finish_peaks`)."""
    regions = extract_regions(frame.candidates, config)
    return finish_peaks(regions, frame.rings, radius_px, resolution_a, config, counting=frame.counting)


class BatchedUNetFinder:
    """Runs a :class:`UNetFinder` on batches of frames of one geometry, with the heavy work on its device.

    Parameters
    ----------
    finder : UNetFinder
        Its model, device, precision and extraction settings are used (``tile_size`` and ``overlap`` are not:
        whole frames go through the network at once).
    shape : (int, int)
        Shape of every frame.
    maps : PixelMaps, optional
        The run's detector maps (:meth:`PixelMaps.fallback` when omitted).
    mask : (H, W) bool ndarray, optional
        Bad pixels shared by every frame.
    batch_size : int
        Frames per batch on the device.
    workers : int
        Threads that extract the peaks while the device works on the next batch (one thread extracts about
        500 frames/s of 100-300 peaks on a 2-core machine); 0 extracts in the calling thread.

    Notes
    -----
    The peaks equal those of :meth:`UNetFinder.find` on the same frames except where the device's arithmetic
    (float16 network, float32 background statistics) moves a pixel across the probability cut.
    """

    def __init__(
        self,
        finder: UNetFinder,
        shape: tuple[int, int],
        *,
        maps: PixelMaps | None = None,
        mask: NDArray[np.bool_] | None = None,
        batch_size: int = 8,
        workers: int = 0,
    ) -> None:
        if not isinstance(finder, UNetFinder):
            raise ConfigError(f"BatchedUNetFinder needs a UNetFinder, got {type(finder).__name__}")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if int(workers) != workers or workers < 0:
            raise ConfigError(f"workers must be an integer >= 0, got {workers!r}")
        self.finder = finder
        self.config = cfg = finder.config
        self.shape = (int(shape[0]), int(shape[1]))
        self.maps = PixelMaps.fallback(self.shape) if maps is None else maps
        if self.maps.shape != self.shape:
            raise ConfigError(f"maps have shape {self.maps.shape}, frames have {self.shape}")
        trained = finder.model
        self.device = trained.device
        self.network = trained.inference_model()
        self.threshold = float(trained.threshold if cfg.probability_threshold is None else cfg.probability_threshold)
        self.precision = resolve_precision(self.device, cfg.precision)
        self.batch_size = int(batch_size)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # every batch has the same shape: the fastest kernels pay off
            free, _ = torch.cuda.mem_get_info(self.device)
            fitted = batch_that_fits(self.batch_size, self.shape[0] * self.shape[1], free, flips=trained.flips)
            if fitted < self.batch_size:
                log.warning(
                    "frame batch %d of %d x %d frames does not fit in %.1f GiB free on %s: batches of %d",
                    self.batch_size, *self.shape, free / 2**30, self.device, fitted,
                )
                self.batch_size = fitted
        self.normaliser = TorchNormaliser(
            self.shape,
            maps=self.maps,
            mask=mask,
            config=trained.norm,
            device=self.device,
            ring_contrast=cfg.powder_ring_contrast,
        )
        self.reach = candidate_reach(cfg.grow_px)
        self._panel_np = np.ascontiguousarray(self.maps.panel_id, np.int32)
        self._panel = torch.as_tensor(self._panel_np, device=self.device)
        self._radius = np.asarray(self.maps.radius_px)
        self._resolution = None if self.maps.resolution_a is None else np.asarray(self.maps.resolution_a)
        self._want_rings = needs_ring_evidence(cfg, self._resolution)
        self.rejected: dict[str, int] = {}
        self._staging: torch.Tensor | None = None
        self._pool = ThreadPoolExecutor(max_workers=int(workers)) if workers else None

    # -- context -----------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the worker threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> BatchedUNetFinder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- device side -------------------------------------------------------------------------------------
    def _upload(self, frames: NDArray | torch.Tensor | Sequence[NDArray]) -> torch.Tensor:
        """The batch on the device; on CUDA through one reused page-locked buffer (fast copies, no new host
        memory for every batch)."""
        if isinstance(frames, torch.Tensor | np.ndarray):
            parts = [frames]
            x = torch.as_tensor(frames)
        else:
            parts = [np.asarray(f)[None] for f in frames]
            x = torch.as_tensor(parts[0]) if parts else torch.empty(0)
        n = sum(p.shape[0] for p in parts)
        if x.ndim != 3 or tuple(x.shape[1:]) != self.shape or any(p.shape[1:] != parts[0].shape[1:] for p in parts):
            got = tuple(x.shape) if x.ndim != 3 or len(parts) == 1 else [tuple(p.shape[1:]) for p in parts]
            raise ConfigError(f"frames must have shape (B, {self.shape[0]}, {self.shape[1]}), got {got}")
        if self.device.type != "cuda":
            return x if len(parts) == 1 else torch.as_tensor(np.concatenate(parts))
        if self._staging is None or self._staging.dtype != x.dtype or self._staging.shape[0] < n:
            self._staging = torch.empty((max(n, self.batch_size), *self.shape), dtype=x.dtype, pin_memory=True)
        start = 0
        for p in parts:
            self._staging[start : start + p.shape[0]].copy_(torch.as_tensor(p))
            start += p.shape[0]
        return self._staging[:n].to(self.device, non_blocking=True)

    def device_pixels(
        self,
        frames: NDArray | torch.Tensor | Sequence[NDArray],
        bad: NDArray[np.bool_] | torch.Tensor | None = None,
    ) -> list[FramePixels]:
        """Normalise a batch, run the network and keep the pixels within reach of a pixel above the cut.

        Parameters
        ----------
        frames : (B, H, W) array or tensor, or a sequence of (H, W) arrays
            Any real dtype.
        bad : (B, H, W) bool array or tensor, optional
            Each frame's own bad pixels, on top of the shared mask.
        """
        x = self._upload(frames)
        extra = None if bad is None else torch.as_tensor(bad).to(self.device, non_blocking=True)
        with torch.inference_mode():
            norm = self.normaliser(x, bad=extra, rings=self._want_rings)
            prob = self._probability(norm.inputs)
            prob.masked_fill_(norm.bad, 0.0)
            level = gather_level(self.config, self.threshold)
            marked = prob > level
            tested = [counting_gain(*frame) for frame in zip(norm.integer, norm.gains, norm.noise_correlation)]
            seeds = self._photon_seeds(prob, marked, norm, [gain for _, gain in tested])
            above = (marked if seeds is None else marked | seeds).to(torch.float16)[:, None]
            k = 2 * self.reach + 1
            near = torch.nn.functional.max_pool2d(above, (1, k), stride=1, padding=(0, self.reach))
            near = torch.nn.functional.max_pool2d(near, (k, 1), stride=1, padding=(self.reach, 0))[:, 0] > 0
            b, h, w = prob.shape
            where = near.view(b, -1).nonzero()
            f, i = where[:, 0], where[:, 1]
            values = torch.stack(
                [t.view(b, -1)[f, i] for t in (prob, norm.residual, norm.background, norm.noise)]
            ).cpu().numpy()
            bad_px = norm.bad.view(b, -1)[f, i].cpu().numpy()
            seed_px = None if seeds is None else seeds.view(b, -1)[f, i].cpu().numpy()
            panel = self._panel.view(-1)[i].cpu().numpy()
            index = i.cpu().numpy()
            counts = torch.bincount(f, minlength=b).cpu().numpy()
        out = []
        ends = np.cumsum(counts)
        for j in range(b):
            s = slice(ends[j] - counts[j], ends[j])
            cands = CandidatePixels(
                shape=self.shape,
                index=index[s].astype(np.int64),
                prob=values[0, s],
                residual=values[1, s],
                background=values[2, s],
                noise=values[3, s],
                bad=bad_px[s],
                panel=panel[s],
                threshold=self.threshold,
                gain=tested[j][1],
                seed=None if seed_px is None or not seed_px[s].any() else seed_px[s],
            )
            rings = norm.rings(j) if (self._want_rings and counts[j]) else None
            out.append(FramePixels(cands, rings, tested[j][0]))
        return out

    def _photon_seeds(
        self, prob: torch.Tensor, marked: torch.Tensor, norm: TorchNormalised, gains: list[float]
    ) -> torch.Tensor | None:
        """(B, H, W) photon seeds of the frames that get photon spots (those of
        :func:`~braggml.ml.unet_extract.photon_seeds`, at the frames' ``gains``: those of their peak tests), or
        None when no frame has any. The places worth testing are found on the device; their 5 x 5 blocks are
        screened on the host, as on the CPU."""
        wanted = [
            wants_photon_spots(self.config, whole, gain, corr)
            for whole, gain, corr in zip(norm.integer, norm.gains, norm.noise_correlation)
        ]
        if not any(wanted):
            return None
        pool = torch.nn.functional.max_pool2d
        dev = prob.device
        b, h, w = prob.shape
        k = 2 * SEED_CLEARANCE_PX + 1
        minus_inf = torch.tensor(float("-inf"), device=dev)
        places = []
        for j in np.flatnonzero(wanted):  # one frame at a time: a frame's worth of device memory at most
            gain = float(gains[j])
            good = ~norm.bad[j]
            bright = good & (norm.residual[j] >= SEED_MIN_PHOTONS * gain)
            bright &= torch.maximum(norm.background[j] / gain, (norm.noise[j] / gain) ** 2) < SPARSE_PHOTONS
            value = torch.where(good, norm.residual[j], minus_inf)
            bright &= value >= pool(value[None, None], 3, stride=1, padding=1)[0, 0]  # padding counts as -inf
            marked_near = pool((marked[j] & good).to(torch.float16)[None, None], k, stride=1, padding=SEED_CLEARANCE_PX)
            bright &= marked_near[0, 0] == 0
            places.append((j, bright.view(-1).nonzero()[:, 0]))
        seeds = torch.zeros((b, h * w), dtype=torch.bool, device=dev)
        panel = self._panel_np.reshape(-1)
        tests = photon_seed_tests(self.config)
        for j, index in places:
            if index.numel() == 0:
                continue
            i = index.cpu().numpy()
            at, inside = seed_blocks(i, (h, w))
            at_dev = torch.as_tensor(at, device=dev)
            values = [t[j].view(-1)[at_dev].cpu().numpy() for t in (norm.residual, norm.background, norm.noise)]
            good = inside & ~norm.bad[j].view(-1)[at_dev].cpu().numpy() & (panel[at] == panel[i][None, :])
            keep = screen_seeds(*values, good, gains[j], **tests)
            if keep.any():
                seeds[j, torch.as_tensor(i[keep], device=dev)] = True
        return seeds.view(b, h, w)

    def _probability(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) normalised frames -> (B, H, W) float32 probabilities, whole frames at once."""
        with network_autocast(self.device, self.precision):
            logits = self.network(inputs.contiguous(memory_format=torch.channels_last))
        return torch.sigmoid(logits.float())[:, 0]

    # -- host side ---------------------------------------------------------------------------------------
    def _local(self, frame: FramePixels) -> tuple[PeakList, dict[str, int]]:
        return peaks_from_pixels(frame, self.config, self._radius, self._resolution)

    def _collect(self, result: tuple[PeakList, dict[str, int]]) -> PeakList:
        peaks, rejected = result
        for cause, count in rejected.items():
            self.rejected[cause] = self.rejected.get(cause, 0) + int(count)
        return peaks

    def _extract(self, pixels: list[FramePixels]) -> list[Future | PeakList]:
        """Start the host's work on a batch: in the worker threads (futures), or here (peaks)."""
        if self._pool is None:
            return [self._collect(self._local(p)) for p in pixels]
        return [self._pool.submit(self._local, p) for p in pixels]

    def _result(self, item: Future | PeakList) -> PeakList:
        return self._collect(item.result()) if isinstance(item, Future) else item

    def find_batch(
        self, frames: NDArray | torch.Tensor, bad: NDArray[np.bool_] | torch.Tensor | None = None
    ) -> list[PeakList]:
        """The peaks of each frame of a batch (``frames`` and ``bad`` as in :meth:`device_pixels`)."""
        return [self._result(item) for item in self._extract(self.device_pixels(frames, bad))]

    def find_stream(
        self, frames: Iterable[NDArray | tuple[NDArray, NDArray[np.bool_] | None]]
    ) -> Iterator[PeakList]:
        """The peaks of each frame of a stream, in order.

        Each item is a frame, or a ``(frame, bad)`` pair with the frame's own bad pixels (or None). With
        workers, the host extracts the peaks of one batch while the device works on the next.
        """
        pending: deque[list[Future | PeakList]] = deque()
        batch: list[NDArray] = []
        batch_bad: list[NDArray[np.bool_] | None] = []

        def launch() -> None:
            extra = None
            if any(m is not None for m in batch_bad):
                extra = np.stack([np.zeros(self.shape, bool) if m is None else m for m in batch_bad])
            pending.append(self._extract(self.device_pixels(batch, extra)))
            batch.clear()
            batch_bad.clear()

        def drain(keep: int) -> Iterator[PeakList]:
            while len(pending) > keep:
                yield from (self._result(item) for item in pending.popleft())

        for item in frames:
            image, bad = item if isinstance(item, tuple) else (item, None)
            batch.append(np.asarray(image))
            batch_bad.append(None if bad is None else np.asarray(bad, bool))
            if len(batch) == self.batch_size:
                launch()
                yield from drain(1)
        if batch:
            launch()
        yield from drain(0)
