"""The whole-frame segmentation network: a compact U-Net giving every pixel a Bragg-peak probability.

:func:`normalise_frame` turns a raw frame of any detector into the network's input (background-subtracted,
divided by the local noise, compressed with ``asinh``, plus a bad-pixel channel), :class:`UNet` is the network,
:func:`predict_tiled` runs it over a frame of any size by overlapping tiles without seams, and
:class:`TrainedUNet` / :func:`load_unet` hold and read back a trained network with its settings from a model
file (safetensors + JSON, nothing unpickled).
"""

from __future__ import annotations

import copy
import json
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numba
import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from ..classical._common import prepare_frame
from ..classical._radial import (
    RadialStats,
    background_rate,
    estimate_gain_per_panel,
    noise_floor,
    radial_statistics,
)
from ..errors import ConfigError, DataFormatError
from ..geometry import PixelMaps
from .checkpoint import FORMAT_NAME, FORMAT_VERSION, _metadata, _open, json_clean, require, versions
from .cnn import resolve_device

__all__ = [
    "UNetConfig",
    "NormConfig",
    "NormalisedFrame",
    "UNet",
    "FlipAveraged",
    "FLIPS",
    "check_flips",
    "inference_network",
    "TrainedUNet",
    "normalise_frame",
    "noise_correlation",
    "correlation_tiles",
    "correlated_noise_scale",
    "predict_tiled",
    "inference_precision",
    "resolve_precision",
    "network_autocast",
    "tile_starts",
    "load_unet",
    "save_unet",
    "export_torchscript",
    "export_onnx",
    "DEFAULT_MODEL_PATH",
]

#: The model shipped with braggml (trained on simulated Jungfrau-4M and Pilatus-6M frames).
DEFAULT_MODEL_PATH = Path(__file__).resolve().parent.parent / "data" / "unet_default.safetensors"
_KIND = "unet"


# -- configuration ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UNetConfig:
    """Architecture of :class:`UNet`.

    Attributes
    ----------
    in_channels : int
        Input channels (normalised frame and bad-pixel map).
    channels : tuple of int
        Feature channels of each resolution level, finest first; every further level halves the frame side.
        The last level is the bottleneck.
    convs_per_block : int
        3x3 convolutions (each followed by batch normalisation and ReLU) in every block.
    downsample : int
        Space-to-depth factor of the input: every ``downsample x downsample`` block of pixels becomes one
        position with ``in_channels * downsample**2`` channels, and the head gives ``downsample**2`` logits per
        position that are put back in place (pixel shuffle). Lossless, and it cuts the cost of the finest
        level by ``downsample**2``; 1 runs the finest level on the pixels themselves.
    """

    in_channels: int = 2
    channels: tuple[int, ...] = (16, 32, 64, 64)
    convs_per_block: int = 1
    downsample: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if self.in_channels < 1:
            raise ConfigError(f"in_channels must be >= 1, got {self.in_channels!r}")
        if len(self.channels) < 2 or any(c < 1 for c in self.channels):
            raise ConfigError(f"channels must be two or more positive integers, got {self.channels!r}")
        if self.convs_per_block < 1:
            raise ConfigError(f"convs_per_block must be >= 1, got {self.convs_per_block!r}")
        if self.downsample not in (1, 2, 4):
            raise ConfigError(f"downsample must be 1, 2 or 4, got {self.downsample!r}")

    @property
    def multiple(self) -> int:
        """Input sides are padded to a multiple of this (``downsample`` times 2 to the number of poolings)."""
        return self.downsample * 2 ** (len(self.channels) - 1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UNetConfig:
        """The configuration stored in a model file (files without ``downsample`` predate it: 1)."""
        values = {"downsample": 1, **data}
        return cls(**{k: (tuple(v) if k == "channels" else v) for k, v in values.items()})


@dataclass(frozen=True)
class NormConfig:
    """How a raw frame becomes the network's input.

    Attributes
    ----------
    clip_sigma : float
        Sigma-clipping level of the per-panel radial background statistics.
    photon_noise_floor : float
        Smallest noise used, in photons (times the estimated gain): a single photon on an empty background is
        then ``1 / photon_noise_floor`` noise units whatever the detector's gain or read noise.
    asinh_scale : float
        The residual in noise units is divided by this before ``asinh``.
    correlated_noise_min : float
        On detectors whose noise is shared by neighbouring pixels (a phosphor's or a fibre-optic taper's point
        spread: Rayonix, MarCCD, sCMOS), noise blobs a few pixels wide look like weak spots. When 3 x 3 sums of
        the background vary at least this many times more than independent pixels would
        (:func:`noise_correlation`), the noise is multiplied by that ratio: it keeps growing with the size of
        the sums, and the network looks at more than 3 x 3 pixels. Pixel detectors and simulated frames
        measure 0.9-1.1, phosphor-coupled detectors about 2.5; ``inf`` turns it off.
    """

    clip_sigma: float = 3.0
    photon_noise_floor: float = 0.5
    asinh_scale: float = 1.0
    correlated_noise_min: float = 1.5

    def __post_init__(self) -> None:
        for name in ("clip_sigma", "photon_noise_floor", "asinh_scale"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value!r}")
        if not self.correlated_noise_min >= 1.0:
            value = self.correlated_noise_min
            raise ConfigError(f"correlated_noise_min must be >= 1 (inf turns it off), got {value!r}")


# -- input normalisation ---------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class NormalisedFrame:
    """A frame prepared for the network, with what is needed to measure peaks on its original pixels.

    Attributes
    ----------
    inputs : (2, H, W) float32 ndarray
        Channel 0: ``asinh((image - background) / noise / asinh_scale)``, 0 on bad pixels; channel 1: 1 on bad
        pixels, else 0.
    residual : (H, W) float32 ndarray
        Background-subtracted frame in detector units (0 on bad pixels).
    background : (H, W) float32 ndarray
        Background per pixel in detector units.
    noise : (H, W) float32 ndarray
        Background noise per pixel in detector units (> 0), scaled up where the noise is correlated
        (``noise_correlation``).
    bad : (H, W) bool ndarray
        Bad pixels (mask, geometry mask, no panel, non-finite).
    panel_id : (H, W) int32 ndarray
    gain : float
        Estimated detector units per photon (0 when no shot-noise trend was found).
    stats : RadialStats or None
        The per-panel radial background statistics the background and noise come from.
    maps : PixelMaps or None
        The pixel maps used (radius, resolution).
    noise_correlation : float
        Variance of 3 x 3 sums of the background relative to independent pixels (:func:`noise_correlation`).
    integer : bool
        Whether every good pixel holds a whole number (counts).
    """

    inputs: NDArray[np.float32]
    residual: NDArray[np.float32]
    background: NDArray[np.float32]
    noise: NDArray[np.float32]
    bad: NDArray[np.bool_]
    panel_id: NDArray[np.int32]
    gain: float
    stats: RadialStats | None = None
    maps: PixelMaps | None = None
    noise_correlation: float = 1.0
    integer: bool = False


#: Tiles of this side (pixels), up to this many along each axis, sample the noise of a frame.
CORRELATION_TILE_PX = 128
CORRELATION_TILES = 4
_BOX_PX = 3
_HIGHPASS_PX = 15
_MIN_SAMPLES = 2000


def correlation_tiles(shape: tuple[int, int]) -> list[tuple[slice, slice]]:
    """The tiles :func:`noise_correlation` samples: up to 4 x 4 evenly spread squares of 128 pixels (the whole
    side of a shorter frame), all of one size."""

    def starts(n: int) -> tuple[list[int], int]:
        size = min(CORRELATION_TILE_PX, n)
        count = CORRELATION_TILES if n > size else 1
        return sorted({int(round(x)) for x in np.linspace(0, n - size, count)}), size

    rows, height = starts(int(shape[0]))
    cols, width = starts(int(shape[1]))
    return [(slice(r, r + height), slice(c, c + width)) for r in rows for c in cols]


def noise_correlation(z: torch.Tensor, good: torch.Tensor) -> torch.Tensor:
    """How many times more the background varies in 3 x 3 sums than independent pixels would, per frame.

    Pixels within 3 noise units of the background are high-passed (the mean over 15 x 15 of such pixels is
    subtracted, so that a background the radial profile misses does not count) and the variance of their 3 x 3
    sums is divided by 9 times their variance. Independent noise gives about 1 (0.96 with the high-pass);
    a point spread shared by neighbouring pixels gives more.

    Parameters
    ----------
    z : (B, T, h, w) float tensor
        Background-subtracted frames in noise units, on the tiles of :func:`correlation_tiles`.
    good : (B, T, h, w) bool tensor
        Good pixels.

    Returns
    -------
    (B,) float64 tensor
        The ratio; 1 for a frame with fewer than 2000 usable pixels.
    """
    b, t, h, w = z.shape
    ok = good & (z.abs() < 3.0)
    okf = ok.to(torch.float32).reshape(b * t, 1, h, w)
    zz = torch.where(ok, z, torch.zeros((), dtype=z.dtype, device=z.device)).to(torch.float32)
    zz = zz.reshape(b * t, 1, h, w)

    def box(x: torch.Tensor, k: int) -> torch.Tensor:
        """Sums over k x k centred windows (zeros beyond the tile), from running sums along each axis."""
        r = k // 2
        run = torch.nn.functional.pad(x, (r + 1, r, r + 1, r)).cumsum(dim=-1)
        run = (run[..., k:] - run[..., :-k]).cumsum(dim=-2)
        return run[..., k:, :] - run[..., :-k, :]

    window = box(okf, _HIGHPASS_PX)
    high = torch.where(okf > 0, zz - box(zz, _HIGHPASS_PX) / window.clamp(min=1.0), torch.zeros_like(zz))
    sums = box(high, _BOX_PX)
    use = (window > _HIGHPASS_PX**2 - 0.5) & (box(okf, _BOX_PX) > _BOX_PX**2 - 0.5)
    use = use.to(torch.float64).reshape(b, -1)
    sums, high = sums.to(torch.float64).reshape(b, -1), high.to(torch.float64).reshape(b, -1)
    n = use.sum(dim=1)
    safe = n.clamp(min=1.0)

    def variance(x: torch.Tensor) -> torch.Tensor:
        mean = (x * use).sum(dim=1) / safe
        return ((x * x * use).sum(dim=1) / safe - mean * mean).clamp(min=0.0)

    ratio = variance(sums) / (_BOX_PX**2 * variance(high)).clamp(min=1e-12)
    return torch.where(n >= _MIN_SAMPLES, ratio, torch.ones_like(ratio))


def correlated_noise_scale(correlation: torch.Tensor, config: NormConfig) -> torch.Tensor:
    """Factor on the noise for a measured :func:`noise_correlation` (1 below ``correlated_noise_min``)."""
    return torch.where(correlation >= config.correlated_noise_min, correlation, torch.ones_like(correlation))


def normalise_frame(
    image: NDArray,
    mask: NDArray[np.bool_] | None = None,
    *,
    maps: PixelMaps | None = None,
    config: NormConfig | None = None,
) -> NormalisedFrame:
    """Background-subtract a frame and express it in units of its local noise.

    The background and its spread are sigma-clipped statistics per panel and 1-pixel radius bin (as in
    peakfinder8); the detector gain is estimated from how the variance grows with the mean across bins and the
    photon rate from a trimmed mean, so that the noise is ``max(sqrt(sigma**2 + gain**2 * rate),
    photon_noise_floor * gain)``. Photon-counting and integrating detectors of unknown gain thus give inputs on
    the same scale. Where neighbouring pixels share their noise (:func:`noise_correlation` at least
    ``config.correlated_noise_min``), the noise is multiplied by that ratio.

    Parameters
    ----------
    image : (H, W) ndarray
        The frame, any real dtype; not modified.
    mask : (H, W) bool ndarray, optional
        True marks a bad pixel.
    maps : PixelMaps, optional
        Panels and radii; :meth:`PixelMaps.fallback` when omitted.
    config : NormConfig, optional

    Returns
    -------
    NormalisedFrame
    """
    cfg = NormConfig() if config is None else config
    frame = prepare_frame(image, mask, maps)
    good = ~frame.bad
    # half a count for whole-number data; float frames get no floor here (the photon floor below applies)
    floor = noise_floor(frame.data, good, True) if frame.integer else 0.0
    stats = radial_statistics(
        frame.data,
        good,
        np.asarray(frame.maps.radius_px),
        frame.panel_id,
        snr=cfg.clip_sigma,
        sigma_floor=floor,
        per_panel=True,
    )
    gain = estimate_gain_per_panel(stats)
    if gain == 0 and frame.integer:
        gain = 1.0
    # photons per pixel that the clipping removed: trimmed mean above the clipped mean (pedestal-free)
    trimmed = background_rate(frame.data, good, stats, gain) * gain
    extra = np.maximum(trimmed - stats.offset.astype(np.float64), 0.0) / gain if gain > 0 else 0.0
    sigma = stats.sigma.astype(np.float64)
    noise_bin = np.sqrt(sigma**2 + gain**2 * extra)
    noise_bin = np.maximum(noise_bin, max(cfg.photon_noise_floor * gain, floor, 1e-6))
    shape = frame.data.shape
    inputs = np.empty((2, *shape), np.float32)
    residual = np.empty(shape, np.float32)
    background = np.empty(shape, np.float32)
    noise = np.empty(shape, np.float32)
    _normalise_kernel(
        np.ascontiguousarray(frame.data, np.float32),
        np.ascontiguousarray(frame.bad),
        np.ascontiguousarray(stats.bin_index),
        np.ascontiguousarray(stats.offset, np.float32),
        noise_bin.astype(np.float32),
        np.float32(1.0 / cfg.asinh_scale),
        inputs,
        residual,
        background,
        noise,
    )
    correlation = 1.0
    if np.isfinite(cfg.correlated_noise_min):
        tiles = correlation_tiles(shape)
        z = torch.from_numpy(np.stack([residual[t] / noise[t] for t in tiles]))[None]
        good_tiles = torch.from_numpy(np.stack([good[t] for t in tiles]))[None]
        measured = noise_correlation(z, good_tiles)
        correlation = float(measured[0])
        scale = float(correlated_noise_scale(measured, cfg)[0])
        if scale != 1.0:
            noise *= np.float32(scale)
            inputs[0] = np.where(frame.bad, np.float32(0), np.arcsinh(residual / noise / np.float32(cfg.asinh_scale)))
    return NormalisedFrame(
        inputs=inputs,
        residual=residual,
        background=background,
        noise=noise,
        bad=frame.bad,
        panel_id=frame.panel_id,
        gain=float(gain),
        stats=stats,
        maps=frame.maps,
        noise_correlation=correlation,
        integer=frame.integer,
    )


@numba.njit(cache=True, nogil=True)
def _normalise_kernel(data, bad, bin_index, offset, noise_bin, inv_scale, inputs, residual, background, noise):
    """One pass over the pixels: background, noise, residual and the two input channels."""
    h, w = data.shape
    for i in range(h):
        for j in range(w):
            b = bin_index[i, j]
            bg = offset[b]
            sd = noise_bin[b]
            background[i, j] = bg
            noise[i, j] = sd
            if bad[i, j]:
                residual[i, j] = 0.0
                inputs[0, i, j] = 0.0
                inputs[1, i, j] = 1.0
            else:
                r = data[i, j] - bg
                residual[i, j] = r
                inputs[0, i, j] = np.arcsinh(r / sd * inv_scale)
                inputs[1, i, j] = 0.0


# -- the network ---------------------------------------------------------------------------------------
def _block(c_in: int, c_out: int, n_convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n_convs):
        layers += [
            nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """A compact U-Net: per-pixel peak logits of a normalised frame.

    Encoder blocks at each level of ``config.channels`` with 2x2 max pooling between them, the last level as
    bottleneck, then for every finer level a 2x2 transposed convolution, concatenation with the encoder's
    features at that level (skip connection) and a block; a 1x1 convolution gives one logit per pixel.
    Inputs of any size are padded to a multiple of :attr:`UNetConfig.multiple` and the output cropped back.

    Parameters
    ----------
    config : UNetConfig, optional
    """

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or UNetConfig()
        ch, n, d = cfg.channels, cfg.convs_per_block, cfg.downsample
        self.encoders = nn.ModuleList(
            [_block(cfg.in_channels * d * d if i == 0 else ch[i - 1], ch[i], n) for i in range(len(ch) - 1)]
        )
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _block(ch[-2], ch[-1], n)
        self.upsamplers = nn.ModuleList(
            [nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2) for i in reversed(range(len(ch) - 1))]
        )
        self.decoders = nn.ModuleList([_block(2 * ch[i], ch[i], n) for i in reversed(range(len(ch) - 1))])
        self.head = nn.Conv2d(ch[0], d * d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) normalised input -> (N, 1, H, W) logits."""
        h, w = x.shape[-2:]
        m = self.config.multiple
        pad_h, pad_w = (-h) % m, (-w) % m
        if pad_h or pad_w:
            x = nn.functional.pad(x, (0, pad_w, 0, pad_h))
        d = self.config.downsample
        if d > 1:
            x = nn.functional.pixel_unshuffle(x, d)
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, decoder, skip in zip(self.upsamplers, self.decoders, reversed(skips)):
            x = decoder(torch.cat([up(x), skip], dim=1))
        x = self.head(x)
        if d > 1:
            x = nn.functional.pixel_shuffle(x, d)
        return x[..., :h, :w]

    def for_inference(self) -> UNet:
        """A copy for fast inference: batch normalisation folded into the convolutions, channels-last layout.

        Gives the same logits as the evaluation-mode network to float precision.
        """
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        fused = copy.deepcopy(self).eval()
        for block in [*fused.encoders, fused.bottleneck, *fused.decoders]:
            for i in range(0, len(block), 3):
                conv, bn = block[i], block[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    block[i] = fuse_conv_bn_eval(conv, bn)
                    block[i + 1] = nn.Identity()
        return fused.to(memory_format=torch.channels_last)


#: The flips of each allowed ``flips`` count (tensor axes of an (N, C, H, W) batch): none; a half turn; and
#: every flip of the rows and the columns.
FLIPS: dict[int, tuple[tuple[int, ...], ...]] = {1: ((),), 2: ((), (2, 3)), 4: ((), (3,), (2,), (2, 3))}


def check_flips(flips: object) -> int:
    """``flips`` as an int, when it is one of the counts of :data:`FLIPS`; ConfigError otherwise."""
    if isinstance(flips, bool) or not isinstance(flips, (int, np.integer)) or int(flips) not in FLIPS:
        raise ConfigError(f"flips must be one of {', '.join(map(str, FLIPS))}, got {flips!r}")
    return int(flips)


class FlipAveraged(nn.Module):
    """A network whose logits are the mean of its logits on flipped copies of the input, flipped back.

    The pixel grid is symmetric under these flips but a trained network is not exactly so: averaging its
    answers on the flipped copies removes part of its own noise. Peaks near the cut gain most; how much F1
    gains depends on the model (docs/unet.md). Each copy costs one more pass of the network.
    The input is padded to a multiple of :attr:`UNetConfig.multiple` before it is flipped, so that every copy
    is cut into the same space-to-depth and pooling blocks.

    Parameters
    ----------
    net : UNet
        The network (usually :meth:`UNet.for_inference`).
    flips : {1, 2, 4}
        How many copies (:data:`FLIPS`).
    """

    def __init__(self, net: UNet, flips: int) -> None:
        super().__init__()
        self.net = net
        self.config = net.config
        self.flips = check_flips(flips)
        self._dims = [list(d) for d in FLIPS[self.flips]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) normalised input -> (N, 1, H, W) logits averaged over the flips."""
        h, w = x.shape[-2], x.shape[-1]
        m = self.config.multiple
        # padded before flipping, so that every copy is cut into the same blocks
        x = nn.functional.pad(x, (0, (m - w % m) % m, 0, (m - h % m) % m))
        total = self.net(x)
        for dims in self._dims[1:]:
            total = total + torch.flip(self.net(torch.flip(x, dims)), dims)
        if len(self._dims) > 1:
            total = total / len(self._dims)
        return total[..., :h, :w]


def inference_network(net: UNet, flips: int = 1) -> nn.Module:
    """``net`` prepared for inference (:meth:`UNet.for_inference`, a copy), averaged over ``flips`` flipped
    copies of the input when ``flips`` > 1 (:class:`FlipAveraged`)."""
    fused = net.for_inference()
    return fused if check_flips(flips) == 1 else FlipAveraged(fused, flips)


# -- tiled inference -------------------------------------------------------------------------------------
_AUTOCAST = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def inference_precision(device: torch.device | str) -> str:
    """The fastest arithmetic that keeps the peaks: float16 on CUDA, bfloat16 on CPUs with native bfloat16
    instructions (AVX512-BF16, AMX), float32 otherwise."""
    device = torch.device(device)
    if device.type == "cuda":
        return "float16"
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        try:
            if torch.ops.mkldnn._is_mkldnn_bf16_supported():
                return "bfloat16"
        except (AttributeError, RuntimeError):
            pass
    return "float32"

def resolve_precision(device: torch.device, precision: str) -> str:
    """The network's arithmetic on ``device`` for a ``precision`` setting (``"auto"``: :func:`inference_precision`).

    Raises
    ------
    ConfigError
        An unknown precision, or float16 off CUDA.
    """
    precision = inference_precision(device) if precision == "auto" else precision
    if precision not in _AUTOCAST:
        raise ConfigError(f"precision must be float32, bfloat16, float16 or auto, got {precision!r}")
    if precision == "float16" and device.type != "cuda":
        raise ConfigError("precision float16 needs a CUDA device (use bfloat16 or float32 on CPU)")
    return precision


def network_autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context that runs the network in ``precision`` (from :func:`resolve_precision`) on ``device``."""
    dtype = _AUTOCAST[precision]
    return torch.autocast(device_type=device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def tile_starts(length: int, tile: int, overlap: int, multiple: int = 1) -> tuple[list[int], list[int], int]:
    """Tiles along one axis: their starts, the cuts between them and their common side.

    The fewest tiles of side at most ``tile`` that overlap by at least ``overlap`` are made as small as they
    can be and spread evenly over the axis, so that little is computed twice. Starts are multiples of
    ``multiple`` (the network's pooling grid is then the same in every tile). A pixel belongs to the tile
    where it is most central: the boundary between tiles ``i`` and ``i + 1`` lies in the middle of their
    overlap.

    Returns
    -------
    starts : list of int
        First index of each tile; the last tile may reach beyond ``length`` (padded).
    cuts : list of int
        ``len(starts) + 1`` boundaries: tile ``i`` owns ``cuts[i] <= index < cuts[i + 1]``.
    side : int
        Side of every tile (``length`` itself when one tile holds the whole axis).

    Examples
    --------
    >>> tile_starts(100, 64, 16, 8)
    ([0, 48], [0, 56, 100], 64)
    >>> tile_starts(2156, 1024, 64, 16)
    ([0, 704, 1408], [0, 736, 1440, 2156], 768)
    """
    if tile < 1 or overlap < 0 or overlap >= tile:
        raise ConfigError(f"tile size must be >= 1 and overlap in [0, tile), got tile {tile}, overlap {overlap}")
    multiple = max(int(multiple), 1)
    if length <= tile:
        return [0], [0, length], length
    n = -(-(length - overlap) // (tile - overlap))
    per_tile = -(-(length + (n - 1) * overlap) // n)
    side = -(-per_tile // multiple) * multiple
    while True:
        stride = max(((side - overlap) // multiple) * multiple, multiple)
        if stride * (n - 1) + side >= length:
            break
        side += multiple
    starts = [i * stride for i in range(n)]
    cuts = [0] + [(starts[i] + side + starts[i + 1]) // 2 for i in range(n - 1)] + [length]
    return starts, cuts, side


def predict_tiled(
    model: UNet | FlipAveraged,
    inputs: NDArray[np.float32],
    *,
    tile_size: int = 1024,
    overlap: int = 64,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    precision: str = "float32",
) -> NDArray[np.float32]:
    """Per-pixel peak probability of a normalised frame, by overlapping tiles.

    Parameters
    ----------
    model : UNet or FlipAveraged
        In evaluation mode (:meth:`TrainedUNet.inference_model`).
    inputs : (C, H, W) float32 ndarray
        :attr:`NormalisedFrame.inputs`.
    tile_size : int
        Side of the square tiles (rounded up to :attr:`UNetConfig.multiple`; frames smaller than a tile are
        run whole).
    overlap : int
        Overlap of neighbouring tiles; each pixel's value comes from the tile where it is most central, so for
        results identical to whole-frame inference half the overlap must exceed the network's receptive
        field radius.
    batch_size : int
        Tiles per forward pass.
    device : torch.device or str
    precision : {"float32", "bfloat16", "float16", "auto"}
        Arithmetic of the network: ``"bfloat16"`` and ``"float16"`` run it under autocast (half the memory
        traffic; ``"float16"`` needs CUDA); ``"auto"`` is :func:`inference_precision` of the device.

    Returns
    -------
    (H, W) float32 ndarray
        Probabilities in [0, 1].
    """
    c, h, w = inputs.shape
    m = model.config.multiple
    tile = -(-int(tile_size) // m) * m
    rows, row_cuts, th = tile_starts(h, tile, overlap, m)
    cols, col_cuts, tw = tile_starts(w, tile, overlap, m)
    padded = np.zeros((c, rows[-1] + th, cols[-1] + tw), np.float32)
    padded[1] = 1.0 if c > 1 else 0.0  # outside the frame: bad pixels
    padded[:, :h, :w] = inputs
    out = np.empty((h, w), np.float32)
    jobs = [(i, j) for i in range(len(rows)) for j in range(len(cols))]
    device = torch.device(device)
    autocast = network_autocast(device, resolve_precision(device, precision))
    with torch.inference_mode(), autocast:
        for k in range(0, len(jobs), max(int(batch_size), 1)):
            part = jobs[k : k + max(int(batch_size), 1)]
            batch = np.stack([padded[:, rows[i] : rows[i] + th, cols[j] : cols[j] + tw] for i, j in part])
            x = torch.from_numpy(batch).to(device).contiguous(memory_format=torch.channels_last)
            prob = torch.sigmoid(model(x).float())[:, 0].cpu().numpy()
            for (i, j), p in zip(part, prob):
                r0, r1 = row_cuts[i], row_cuts[i + 1]
                c0, c1 = col_cuts[j], col_cuts[j + 1]
                out[r0:r1, c0:c1] = p[r0 - rows[i] : r1 - rows[i], c0 - cols[j] : c1 - cols[j]]
    return out


# -- a trained network and its model file ----------------------------------------------------------------
@dataclass(eq=False)
class TrainedUNet:
    """A trained :class:`UNet` with the settings needed to use it.

    Attributes
    ----------
    model : UNet
    norm : NormConfig
        The input normalisation it was trained with.
    threshold : float
        Probability cut chosen on validation frames (for ``flips`` copies).
    info : dict
        Training figures and provenance (JSON-serialisable).
    flips : {1, 2, 4}
        Inference averages the logits of this many flipped copies of the input (:class:`FlipAveraged`).
    cuts : dict of int to float
        The cut chosen for each number of copies (:func:`~braggml.ml.unet_train.choose_threshold`); empty
        when only ``threshold`` is known. :meth:`use_flips` switches between them.
    """

    model: UNet
    norm: NormConfig = field(default_factory=NormConfig)
    threshold: float = 0.5
    info: dict[str, Any] = field(default_factory=dict)
    flips: int = 1
    cuts: dict[int, float] = field(default_factory=dict)
    _inference: tuple[int, nn.Module] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.flips = check_flips(self.flips)
        self.cuts = {check_flips(int(k)): float(v) for k, v in self.cuts.items()}
        for k, v in self.cuts.items():
            if not 0 < v < 1:
                raise ConfigError(f"the cut for {k} copies must lie in (0, 1), got {v!r}")

    def use_flips(self, flips: int) -> None:
        """Run ``flips`` copies from now on, with the cut chosen for them when the model has one (otherwise
        the cut stays)."""
        self.flips = check_flips(flips)
        self.threshold = self.cuts.get(self.flips, self.threshold)

    def inference_model(self) -> nn.Module:
        """The network prepared for inference (:meth:`UNet.for_inference`, averaged over :attr:`flips`
        copies), made once per ``flips``, on the model's device."""
        self.flips = check_flips(self.flips)
        if self._inference is None or self._inference[0] != self.flips:
            self._inference = (self.flips, inference_network(self.model, self.flips).to(self.device))
        return self._inference[1]

    @property
    def config(self) -> UNetConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> TrainedUNet:
        self.model.to(resolve_device(device) if isinstance(device, str) else device)
        self._inference = None
        return self

    def probability(
        self,
        image: NDArray,
        mask: NDArray[np.bool_] | None = None,
        *,
        maps: PixelMaps | None = None,
        tile_size: int = 1024,
        overlap: int = 64,
        batch_size: int = 4,
        precision: str = "auto",
        normalised: NormalisedFrame | None = None,
    ) -> tuple[NDArray[np.float32], NormalisedFrame]:
        """Peak probability of every pixel of a raw frame, and the normalised frame (``precision`` as in
        :func:`predict_tiled`; ``normalised``, when given, is this frame already normalised with this model's
        settings, and ``image``, ``mask`` and ``maps`` are then not looked at)."""
        norm = normalise_frame(image, mask, maps=maps, config=self.norm) if normalised is None else normalised
        prob = predict_tiled(
            self.inference_model(),
            norm.inputs,
            tile_size=tile_size,
            overlap=overlap,
            batch_size=batch_size,
            device=self.device,
            precision=precision,
        )
        prob[norm.bad] = 0.0
        return prob, norm

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model file (see :func:`save_unet`)."""
        return save_unet(self, path)


def save_unet(trained: TrainedUNet, path: str | os.PathLike[str]) -> Path:
    """Write a trained U-Net to a ``.safetensors`` model file of kind ``"unet"``.

    The weights are the tensors; architecture, normalisation, threshold, training figures and versions are the
    JSON metadata under the key ``"braggml"`` (same layout as the other braggml model files).
    """
    from safetensors.numpy import save_file

    from ..io.atomic import atomic_output

    arrays = {name: t.detach().cpu().numpy().copy() for name, t in trained.model.state_dict().items()}
    meta = {
        "kind": _KIND,
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model_config": asdict(trained.model.config),
        "norm_config": asdict(trained.norm),
        "threshold": float(trained.threshold),
        "flips": int(trained.flips),
        "cuts": {str(k): float(v) for k, v in sorted(trained.cuts.items())},
        "info": json_clean(trained.info),
    }
    text = json.dumps(json_clean(meta), sort_keys=True, allow_nan=False)
    path = Path(path)
    with atomic_output(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp), metadata={"braggml": text})
    return path


def load_unet(path: str | os.PathLike[str] | None = None, *, device: str = "auto") -> TrainedUNet:
    """Read a U-Net model file (the shipped model when ``path`` is None); nothing is unpickled.

    Raises
    ------
    InputNotFoundError
        The file does not exist.
    DataFormatError
        The file is damaged, not a braggml model file, or holds another kind of model.
    """
    path = Path(DEFAULT_MODEL_PATH if path is None else path)
    handle = _open(path)
    meta = _metadata(handle, path)
    found = meta.get("kind")
    if found != _KIND:
        hint = f" (use --finder {found})" if found in ("cnn", "svm") else ""
        raise DataFormatError(f"{path}: holds a {found} model, not a {_KIND} model{hint}")
    try:
        model_cfg = UNetConfig.from_dict(require(meta, "model_config", path))
        norm_cfg = NormConfig(**require(meta, "norm_config", path))
    except (TypeError, ConfigError) as exc:
        raise DataFormatError(f"{path}: invalid model settings ({exc})") from None
    model = UNet(model_cfg)
    try:
        state = {name: torch.from_numpy(np.array(handle.get_tensor(name))) for name in handle.keys()}  # noqa: SIM118
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataFormatError(f"{path}: damaged or mismatched model weights ({first})") from None
    model.eval()
    try:
        cuts = meta.get("cuts", {})
        if not isinstance(cuts, dict):
            raise ConfigError(f"cuts must map copies to cuts, got {cuts!r}")
        trained = TrainedUNet(
            model=model,
            norm=norm_cfg,
            threshold=float(require(meta, "threshold", path)),
            info=meta.get("info", {}),
            flips=meta.get("flips", 1),
            cuts={int(k): v for k, v in cuts.items()},
        )
    except (ConfigError, TypeError, ValueError) as exc:
        raise DataFormatError(f"{path}: invalid model settings ({exc})") from None
    return trained.to(device)


def _export_settings(trained: TrainedUNet, tile_size: int) -> str:
    """The settings stored with an exported network (JSON): architecture, normalisation, cut, tile side, versions."""
    settings = {
        "model_config": asdict(trained.config),
        "norm_config": asdict(trained.norm),
        "threshold": trained.threshold,
        "flips": trained.flips,
        "tile_size": tile_size,
        "versions": versions(),
    }
    return json.dumps(json_clean(settings))


def export_torchscript(
    trained: TrainedUNet, path: str | os.PathLike[str], *, tile_size: int = 512
) -> Path:
    """Write the network as a TorchScript file for deployment without braggml.

    The network is exported as prepared for inference (:meth:`TrainedUNet.inference_model`: batch
    normalisation folded, logits averaged over the model's ``flips``). The traced module takes
    ``(N, 2, tile_size, tile_size)`` float32 normalised tiles (any ``N``) and returns ``(N, 1, tile_size,
    tile_size)`` logits; the frame normalisation (:func:`normalise_frame`), tiling and peak extraction stay
    with the caller. The model settings are stored as the file's ``braggml.json`` extra file.

    Parameters
    ----------
    trained : TrainedUNet
    path : path
        Output file (``.pt``).
    tile_size : int
        Tile side the module is traced for (a multiple of :attr:`UNetConfig.multiple`).
    """
    m = trained.config.multiple
    if tile_size < m or tile_size % m:
        raise ConfigError(f"tile_size must be a positive multiple of {m}, got {tile_size!r}")
    model = inference_network(trained.model, trained.flips).to("cpu")
    example = torch.zeros(1, trained.config.in_channels, tile_size, tile_size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the padding branch is fixed for a tile side
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model, example)
    extra = _export_settings(trained, tile_size)
    from ..io.atomic import atomic_output

    path = Path(path)
    with warnings.catch_warnings(), atomic_output(path) as tmp:
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(traced, str(tmp), _extra_files={"braggml.json": extra})
    return path


class _PaddedForExport(nn.Module):
    """Pads to the network's multiple with sizes computed in the graph, so an exported graph takes any H, W."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.multiple = net.config.multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        m = self.multiple
        x = nn.functional.pad(x, (0, (m - w % m) % m, 0, (m - h % m) % m))  # (last axis, then rows)
        return self.net(x)[..., :h, :w]


def export_onnx(
    trained: TrainedUNet, path: str | os.PathLike[str], *, tile_size: int = 512, opset: int | None = None
) -> Path:
    """Write the network as an ONNX file for deployment without braggml or PyTorch (e.g. ONNX Runtime).

    The network is exported as prepared for inference (:meth:`TrainedUNet.inference_model`, float32, CPU;
    the averaging over the model's ``flips`` is part of the graph). The graph has one input ``"inputs"`` of
    shape ``(N, 2, H, W)`` (float32 normalised tiles) and one output ``"logits"`` of shape ``(N, 1, H, W)``;
    ``N``, ``H`` and ``W`` are dynamic axes, and any ``H``, ``W`` gives the logits of the PyTorch network (the
    padding to :attr:`UNetConfig.multiple` is part of the graph). The frame normalisation
    (:func:`normalise_frame`), tiling and peak extraction stay with the caller. The model settings
    (``model_config``, ``norm_config``, ``threshold``, ``flips``, ``tile_size``, ``versions``; the same JSON
    as :func:`export_torchscript`'s extra file) are the model's ``metadata_props`` entry ``"braggml"``.

    Parameters
    ----------
    trained : TrainedUNet
    path : path
        Output file (``.onnx``), written atomically.
    tile_size : int
        Tile side of the example the graph is traced with, recorded as the suggested tile side (a multiple of
        :attr:`UNetConfig.multiple`).
    opset : int, optional
        ONNX operator set version; the exporter's default when None.

    Raises
    ------
    ConfigError
        ``tile_size`` is not a positive multiple of :attr:`UNetConfig.multiple`, or the ``onnx`` package is
        missing.
    """
    m = trained.config.multiple
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < m or tile_size % m:
        raise ConfigError(f"tile_size must be a positive multiple of {m}, got {tile_size!r}")
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < 1):
        raise ConfigError(f"opset must be a positive integer, got {opset!r}")
    try:
        import onnx
    except ImportError:
        raise ConfigError("ONNX export needs the onnx package: pip install 'braggml[onnx]'") from None
    import inspect
    import io as _io

    from ..io.atomic import atomic_output

    model = _PaddedForExport(inference_network(trained.model, trained.flips).to("cpu", torch.float32)).eval()
    example = torch.zeros(1, trained.config.in_channels, tile_size, tile_size)
    axes = {name: {0: "batch", 2: "height", 3: "width"} for name in ("inputs", "logits")}
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    buffer = _io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation; the network's own padding branch is never taken
        torch.onnx.export(
            model, (example,), buffer, input_names=["inputs"], output_names=["logits"], dynamic_axes=axes,
            opset_version=opset, **legacy,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    extra = _export_settings(trained, tile_size)
    entry = proto.metadata_props.add()
    entry.key = "braggml"
    entry.value = extra
    path = Path(path)
    with atomic_output(path, mode="wb") as fh:
        fh.write(proto.SerializeToString())
    return path
