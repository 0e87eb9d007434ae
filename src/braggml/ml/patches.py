"""Candidate patches for the learned classifiers: candidates, normalised patches, labels and frame-wise splits.

The learned finders are two-stage, as in the workflow they come from: a classical finder tuned for high recall
proposes candidate peaks, a fixed-size square patch is cut around each candidate, and a classifier decides
peak / not peak. This module holds everything both classifiers share:

- :class:`CandidateConfig` and :func:`candidate_finder`: the classical candidate generator (any registered
  finder; by default peakfinder8 with a low SNR threshold and no ring or mask rejection, so that ice rings,
  hot pixels, streaks and noise maxima reach the classifier as hard negatives);
- :class:`PatchConfig`, :func:`extract_patches` and :func:`normalise_patches`: ``(2s+1)**2`` patches with a
  validity channel, normalised by the local background so one model works across detectors and gains;
- :func:`label_candidates`: one-to-one matching of candidates to true peaks within a radius;
- :func:`build_patch_set`: all of the above over a run, with truth from braggml simulated files or from a peak
  list the user brings (CXI, CrystFEL stream, CSV);
- :func:`split_by_frame`: train / validation / test split by frame (or by run), never by patch, since
  neighbouring patches of one frame share background, rings and artefacts.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError, DataFormatError
from ..finder import PeakFinder, make_finder
from ..geometry import PixelMaps
from ..peaks import FrameRef, PeakList

__all__ = [
    "LABEL_PEAK",
    "LABEL_NOT_PEAK",
    "LABEL_IGNORE",
    "CandidateConfig",
    "PatchConfig",
    "PatchSet",
    "Split",
    "candidate_finder",
    "extract_patches",
    "normalise_patches",
    "candidate_patches",
    "label_candidates",
    "build_patch_set",
    "split_by_frame",
    "positive_weight",
]

log = logging.getLogger(__name__)

#: Patch labels: a true peak, a false candidate, and a candidate matched to a true peak too weak to count.
LABEL_PEAK = 1
LABEL_NOT_PEAK = 0
LABEL_IGNORE = -1


def _high_recall_peakfinder8() -> dict[str, Any]:
    return {
        "minimum_snr": 3.0,
        "min_pixel_count": 1,
        "max_pixel_count": 400,
        "masked_peaks": "keep",
        "ice_rings": "off",
        "reject_powder_rings": False,
        "max_num_peaks": 100000,
    }


@dataclass(frozen=True)
class CandidateConfig:
    """The classical finder that proposes candidate peaks.

    Attributes
    ----------
    finder : str
        Registered finder name (see :func:`braggml.finder.available_finders`).
    params : mapping of str to value
        Its parameters. The default peakfinder8 settings trade precision for recall: a low SNR threshold,
        single-pixel groups allowed, and nothing dropped for touching the mask or lying on a ring, so the
        classifier sees (and learns to reject) those cases.
    """

    finder: str = "peakfinder8"
    params: Mapping[str, Any] = field(default_factory=_high_recall_peakfinder8)

    def __post_init__(self) -> None:
        if not isinstance(self.finder, str) or not self.finder:
            raise ConfigError(f"candidate finder must be a registered finder name, got {self.finder!r}")
        if not isinstance(self.params, Mapping):
            raise ConfigError(f"candidate finder params must be a mapping, got {self.params!r}")
        object.__setattr__(self, "params", dict(self.params))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what a checkpoint stores)."""
        return {"finder": self.finder, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CandidateConfig:
        return cls(finder=str(data["finder"]), params=dict(data.get("params", {})))


@dataclass(frozen=True)
class PatchConfig:
    """Size and normalisation of the patches cut around candidates.

    Attributes
    ----------
    half_size : int
        Patches are ``2 * half_size + 1`` pixels square, centred on the candidate's rounded centroid.
    background_inner : int
        Pixels further than this (Chebyshev distance) from the patch centre estimate the local background
        level and noise; the inner square holds the peak.
    normalisation : {"robust", "poisson"}
        ``robust``: subtract the background median, divide by the background's robust standard deviation
        (1.4826 x MAD; the plain standard deviation when the MAD is 0, as for sparse photon counts; at least
        0.5 for integer data). Works for integrating detectors in any unit and for counting detectors.
        ``poisson``: subtract the median, divide by ``sqrt(median + 1)``; for photon-counting data in photons.
    compress : bool
        Apply ``asinh`` to the normalised values, so that peaks of 5 and 50 000 sigma both stay in a range a
        small network handles.
    """

    half_size: int = 7
    background_inner: int = 3
    normalisation: Literal["robust", "poisson"] = "robust"
    compress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.half_size, bool) or int(self.half_size) != self.half_size or not 2 <= self.half_size <= 32:
            raise ConfigError(f"patch half_size must be an integer in 2..32, got {self.half_size!r}")
        if (
            isinstance(self.background_inner, bool)
            or int(self.background_inner) != self.background_inner
            or not 0 <= self.background_inner < self.half_size
        ):
            raise ConfigError(
                f"patch background_inner must be an integer in 0..half_size-1 ({self.half_size - 1}), "
                f"got {self.background_inner!r}"
            )
        if self.normalisation not in ("robust", "poisson"):
            raise ConfigError(f"patch normalisation must be 'robust' or 'poisson', got {self.normalisation!r}")
        object.__setattr__(self, "half_size", int(self.half_size))
        object.__setattr__(self, "background_inner", int(self.background_inner))

    @property
    def size(self) -> int:
        """Side of a patch in pixels."""
        return 2 * self.half_size + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "half_size": self.half_size,
            "background_inner": self.background_inner,
            "normalisation": self.normalisation,
            "compress": bool(self.compress),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PatchConfig:
        return cls(**{k: data[k] for k in ("half_size", "background_inner", "normalisation", "compress")})


def candidate_finder(config: CandidateConfig | None = None) -> PeakFinder:
    """Build the classical candidate finder of ``config``.

    Raises
    ------
    ConfigError
        Unknown finder name or parameter.
    """
    config = config or CandidateConfig()
    return make_finder(config.finder, **dict(config.params))


# -- patches ---------------------------------------------------------------------------------------------------
def extract_patches(
    image: NDArray[Any],
    rows: NDArray[np.floating] | Sequence[float],
    cols: NDArray[np.floating] | Sequence[float],
    *,
    half_size: int,
    bad: NDArray[np.bool_] | None = None,
) -> NDArray[np.float32]:
    """Cut square patches centred on the pixels nearest to ``(rows, cols)``.

    Parameters
    ----------
    image : (H, W) ndarray
        The frame (not modified).
    rows, cols : (N,) array_like
        Sub-pixel centres; each is rounded to the nearest pixel and clipped into the frame.
    half_size : int
        Patches are ``2 * half_size + 1`` square.
    bad : (H, W) bool ndarray, optional
        True marks a bad pixel.

    Returns
    -------
    (N, 2s+1, 2s+1) float32 ndarray
        Pixel values; NaN outside the frame, on bad pixels and on non-finite values.

    Examples
    --------
    >>> image = np.arange(16, dtype=np.float32).reshape(4, 4)
    >>> extract_patches(image, [0.2], [3.0], half_size=1)[0]
    array([[nan, nan, nan],
           [ 2.,  3., nan],
           [ 6.,  7., nan]], dtype=float32)
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"image must be 2-D (H, W), got shape {img.shape}")
    r = np.asarray(rows, dtype=np.float64).reshape(-1)
    c = np.asarray(cols, dtype=np.float64).reshape(-1)
    if r.shape != c.shape:
        raise ValueError(f"rows and cols differ in length: {r.size} and {c.size}")
    s = int(half_size)
    h, w = img.shape
    padded = np.full((h + 2 * s, w + 2 * s), np.nan, np.float32)
    inner = padded[s : s + h, s : s + w]
    inner[...] = img
    if bad is not None:
        b = np.asarray(bad, dtype=bool)
        if b.shape != img.shape:
            raise ValueError(f"bad-pixel mask has shape {b.shape}, image has {img.shape}")
        inner[b] = np.nan
    inner[~np.isfinite(inner)] = np.nan
    if r.size == 0:
        return np.empty((0, 2 * s + 1, 2 * s + 1), np.float32)
    ri = np.clip(np.rint(np.nan_to_num(r)).astype(np.int64), 0, h - 1)
    ci = np.clip(np.rint(np.nan_to_num(c)).astype(np.int64), 0, w - 1)
    offsets = np.arange(2 * s + 1)
    return padded[ri[:, None, None] + offsets[None, :, None], ci[:, None, None] + offsets[None, None, :]]


def _row_nanmedian(a: NDArray[np.floating]) -> NDArray[np.float64]:
    """Median of each row ignoring NaN (NaN for a row of NaN only); faster than ``np.nanmedian`` on many rows."""
    a = np.asarray(a, dtype=np.float32)
    if a.shape[0] == 0:
        return np.empty(0, np.float64)
    finite = np.isfinite(a)
    if finite.all():
        return np.median(a, axis=1).astype(np.float64)
    s = np.sort(np.where(finite, a, np.inf), axis=1)
    count = finite.sum(axis=1)
    rows = np.arange(a.shape[0])
    lo = np.maximum((count - 1) // 2, 0)
    hi = np.maximum(count // 2, 0)
    with np.errstate(invalid="ignore"):
        med = 0.5 * (s[rows, lo].astype(np.float64) + s[rows, hi].astype(np.float64))
    med[count == 0] = np.nan
    return med


def normalise_patches(values: NDArray[np.floating], config: PatchConfig | None = None) -> NDArray[np.float32]:
    """Normalise raw patches by their local background and add the validity channel.

    Parameters
    ----------
    values : (N, P, P) float ndarray
        Patches from :func:`extract_patches` (NaN = no valid pixel); not modified.
    config : PatchConfig, optional
        Normalisation settings; ``P`` must equal ``config.size``.

    Returns
    -------
    (N, 2, P, P) float32 ndarray
        Channel 0: normalised values (0 on invalid pixels); channel 1: 1 on valid pixels, 0 elsewhere.

    Examples
    --------
    >>> patch = np.full((1, 5, 5), 10.0)
    >>> patch[0, 2, 2] = 20.0
    >>> out = normalise_patches(patch, PatchConfig(half_size=2, background_inner=0, compress=False))
    >>> float(out[0, 0, 2, 2]), float(out[0, 0, 0, 0]), out.shape
    (20.0, 0.0, (1, 2, 5, 5))
    """
    config = config or PatchConfig()
    v = np.asarray(values, dtype=np.float32)
    p = config.size
    if v.ndim != 3 or v.shape[1:] != (p, p):
        raise ValueError(f"patches must have shape (N, {p}, {p}) for half_size {config.half_size}, got {v.shape}")
    n = v.shape[0]
    out = np.zeros((n, 2, p, p), np.float32)
    if n == 0:
        return out
    valid = np.isfinite(v)
    out[:, 1] = valid
    d = np.abs(np.arange(p) - config.half_size)
    ring = np.maximum(d[:, None], d[None, :]) > config.background_inner
    flat = v.reshape(n, -1)
    ring_vals = flat[:, ring.reshape(-1)]
    centre = _row_nanmedian(ring_vals)
    empty_ring = np.isnan(centre)
    if empty_ring.any():
        centre[empty_ring] = _row_nanmedian(flat[empty_ring])
    centre = np.nan_to_num(centre, nan=0.0)
    if config.normalisation == "robust":
        sigma = 1.4826 * _row_nanmedian(np.abs(ring_vals - centre[:, None]))
        bad_sigma = ~(sigma > 0)  # zero or NaN: sparse counts, or no ring pixels
        if bad_sigma.any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # rows without ring pixels
                sigma[bad_sigma] = np.nanstd(ring_vals[bad_sigma], axis=1)
        finite_vals = np.where(valid.reshape(n, -1), flat, 0.0)
        integer = np.all(finite_vals == np.floor(finite_vals), axis=1)
        floor = np.where(integer, 0.5, 1e-6 * np.maximum(np.abs(centre), 1.0))
        sigma = np.maximum(np.nan_to_num(sigma, nan=0.0), floor)
    else:
        sigma = np.sqrt(np.maximum(centre, 0.0) + 1.0)
    z = (v - centre[:, None, None].astype(np.float32)) / sigma[:, None, None].astype(np.float32)
    if config.compress:
        z = np.arcsinh(z)
    out[:, 0] = np.where(valid, z, 0.0)
    return out


def candidate_patches(
    finder: PeakFinder,
    image: NDArray[Any],
    mask: NDArray[np.bool_] | None,
    *,
    maps: PixelMaps | None,
    config: PatchConfig,
) -> tuple[PeakList, NDArray[np.float32]]:
    """Candidates of one frame and their normalised patches.

    Returns
    -------
    candidates : PeakList
        One-frame list from the candidate finder.
    patches : (N, 2, P, P) float32 ndarray
        One patch per candidate, in the same order.
    """
    candidates = finder.find(image, mask, maps=maps)
    bad = mask
    if maps is not None:
        bad = maps.mask if bad is None else (bad | maps.mask)
    raw = extract_patches(image, candidates.row, candidates.col, half_size=config.half_size, bad=bad)
    return candidates, normalise_patches(raw, config)


# -- labels ------------------------------------------------------------------------------------------------------
def label_candidates(
    candidate_rc: NDArray[np.floating],
    truth_rc: NDArray[np.floating],
    *,
    radius_px: float = 2.0,
    truth_snr: NDArray[np.floating] | None = None,
    min_truth_snr: float | None = None,
) -> NDArray[np.int8]:
    """Label candidates by one-to-one matching to true peaks within ``radius_px``.

    Parameters
    ----------
    candidate_rc, truth_rc : (N, 2) and (T, 2) float ndarrays
        (row, col) of the candidates and of the true peaks of one frame.
    radius_px : float
        Largest distance of a match.
    truth_snr : (T,) float ndarray, optional
        SNR of each true peak.
    min_truth_snr : float, optional
        A candidate matched to a true peak below this SNR gets :data:`LABEL_IGNORE` (too weak to call either
        way) instead of :data:`LABEL_PEAK`. Needs ``truth_snr``; true peaks with unknown (NaN) SNR count.

    Returns
    -------
    (N,) int8 ndarray
        :data:`LABEL_PEAK`, :data:`LABEL_NOT_PEAK` or :data:`LABEL_IGNORE`. A second candidate on the same
        true peak is not a peak: a finder that reports it makes a false detection.

    Examples
    --------
    >>> cand = np.array([[10.0, 10.0], [10.5, 11.0], [40.0, 40.0]])
    >>> label_candidates(cand, np.array([[10.4, 10.8]]), radius_px=2.0).tolist()
    [0, 1, 0]
    """
    from ..evaluate.matching import match_frame

    cand = np.asarray(candidate_rc, dtype=np.float64).reshape(-1, 2)
    truth = np.asarray(truth_rc, dtype=np.float64).reshape(-1, 2)
    labels = np.full(len(cand), LABEL_NOT_PEAK, np.int8)
    fi, ti = match_frame(cand, truth, radius_px)
    labels[fi] = LABEL_PEAK
    if min_truth_snr is not None:
        if truth_snr is None:
            raise ConfigError("min_truth_snr needs the true peaks' SNR (truth_snr)")
        snr = np.asarray(truth_snr, dtype=np.float64).reshape(-1)
        if snr.size != len(truth):
            raise ValueError(f"truth_snr has {snr.size} entries for {len(truth)} true peaks")
        weak = snr[ti] < min_truth_snr  # NaN compares False: unknown SNR counts as a peak
        labels[fi[weak]] = LABEL_IGNORE
    return labels


# -- patch sets --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PatchSet:
    """Labelled candidate patches of a run.

    Attributes
    ----------
    patches : (N, 2, P, P) float32 ndarray
        Normalised patches (:func:`normalise_patches`).
    labels : (N,) int8 ndarray
        :data:`LABEL_PEAK`, :data:`LABEL_NOT_PEAK` or :data:`LABEL_IGNORE`.
    frame : (N,) int64 ndarray
        Frame of each candidate, numbered over the whole run (all inputs in order).
    run : (N,) int64 ndarray
        Input file of each candidate (index into ``files``).
    row, col : (N,) float64 ndarrays
        Candidate centroids.
    snr : (N,) float64 ndarray
        Candidate SNR from the candidate finder.
    n_frames : int
        Frames used (with labels), including those without candidates.
    frames_used : (F,) int64 ndarray
        Run frame number of each used frame, increasing.
    truth : PeakList
        True peaks of the used frames (``n_frames == F``; peak ``frame`` k is run frame ``frames_used[k]``),
        those below ``min_truth_snr`` left out.
    files : tuple of str
        The input files.
    patch_config : PatchConfig
    candidate_config : CandidateConfig
    """

    patches: NDArray[np.float32]
    labels: NDArray[np.int8]
    frame: NDArray[np.int64]
    run: NDArray[np.int64]
    row: NDArray[np.float64]
    col: NDArray[np.float64]
    snr: NDArray[np.float64]
    n_frames: int
    frames_used: NDArray[np.int64]
    truth: PeakList
    files: tuple[str, ...]
    patch_config: PatchConfig
    candidate_config: CandidateConfig

    def __len__(self) -> int:
        return int(self.labels.size)

    def __repr__(self) -> str:
        return (
            f"PatchSet({len(self)} patches of {self.patch_config.size}x{self.patch_config.size} from "
            f"{self.n_frames} frames: {self.n_positive} peaks, {self.n_negative} not peaks)"
        )

    @property
    def n_positive(self) -> int:
        return int((self.labels == LABEL_PEAK).sum())

    @property
    def n_negative(self) -> int:
        return int((self.labels == LABEL_NOT_PEAK).sum())

    def take(self, index: NDArray[np.integer] | NDArray[np.bool_]) -> PatchSet:
        """A patch set with the rows ``index`` (bool or integer)."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return PatchSet(
            patches=self.patches[idx],
            labels=self.labels[idx],
            frame=self.frame[idx],
            run=self.run[idx],
            row=self.row[idx],
            col=self.col[idx],
            snr=self.snr[idx],
            n_frames=self.n_frames,
            frames_used=self.frames_used,
            truth=self.truth,
            files=self.files,
            patch_config=self.patch_config,
            candidate_config=self.candidate_config,
        )

    def for_frames(self, frames: NDArray[np.integer] | Sequence[int]) -> PatchSet:
        """The patches and true peaks of the run frames ``frames`` only (e.g. the test frames of a split)."""
        wanted = np.intersect1d(np.asarray(frames, np.int64), self.frames_used)
        pos = np.searchsorted(self.frames_used, wanted)
        truth = PeakList.concatenate([self.truth.for_frame(int(k)) for k in pos])
        sub = self.take(np.isin(self.frame, wanted))
        return PatchSet(
            patches=sub.patches,
            labels=sub.labels,
            frame=sub.frame,
            run=sub.run,
            row=sub.row,
            col=sub.col,
            snr=sub.snr,
            n_frames=int(wanted.size),
            frames_used=wanted,
            truth=truth,
            files=self.files,
            patch_config=self.patch_config,
            candidate_config=self.candidate_config,
        )

    def found_peaks(self, scores: NDArray[np.floating], threshold: float | None = None) -> PeakList:
        """The candidates as a peak list over the used frames, with ``scores``; those below ``threshold`` dropped.

        Frame ``k`` of the list is run frame ``frames_used[k]``, as in :attr:`truth`, so the two can be
        compared with :func:`braggml.evaluate.metrics.evaluate_peaks`.
        """
        s = np.asarray(scores, np.float64).reshape(-1)
        if s.size != len(self):
            raise ValueError(f"{s.size} scores for {len(self)} patches")
        keep = np.ones(len(self), bool) if threshold is None else s >= threshold
        return PeakList.from_columns(
            n_frames=self.n_frames,
            frame=np.searchsorted(self.frames_used, self.frame[keep]),
            row=self.row[keep],
            col=self.col[keep],
            snr=self.snr[keep],
            score=s[keep],
        )

    def labelled(self) -> PatchSet:
        """The patches whose label is peak or not peak (ignored ones dropped)."""
        return self.take(self.labels != LABEL_IGNORE)

    def groups(self, by: Literal["frame", "run"] = "frame") -> NDArray[np.int64]:
        """Group id of each patch for splitting and cross-validation."""
        if by == "frame":
            return self.frame
        if by == "run":
            return self.run
        raise ConfigError(f"split_by must be 'frame' or 'run', got {by!r}")


def _frame_key(ref: FrameRef) -> tuple[str, int]:
    return (Path(ref.file).name, int(ref.index))


def _labels_by_frame(labels: PeakList, refs: Sequence[FrameRef], source: str) -> dict[int, PeakList]:
    """Map the user's peak list onto the data frames: by file name and index, else by order."""
    out: dict[int, PeakList] = {}
    if labels.frames is not None:
        wanted: dict[tuple[str, int], int] = {}
        for k, ref in enumerate(labels.frames):
            wanted.setdefault(_frame_key(ref), k)
        for g, ref in enumerate(refs):
            k = wanted.get(_frame_key(ref))
            if k is not None:
                out[g] = labels.for_frame(k)
        if out:
            return out
        if labels.n_frames != len(refs):
            raise DataFormatError(
                f"{source}: the peak list names none of the {len(refs)} data frames (first data frame "
                f"{refs[0] if refs else '-'}, first listed frame {labels.frames[0] if labels.frames else '-'})"
            )
    if labels.n_frames != len(refs):
        raise DataFormatError(
            f"{source}: the peak list covers {labels.n_frames} frames but the data hold {len(refs)}, and it "
            "does not say which files its frames come from"
        )
    return {g: labels.for_frame(g) for g in range(len(refs))}


def _simulation_maps(path: str) -> PixelMaps | None:
    """Flat-detector maps (beam centre, pixel size, distance, wavelength) from a simulated file's parameters."""
    from ..geometry import flat_geometry
    from ..io.simfile import read_truth

    try:
        params = read_truth(path).parameters
        geo = params["geometry"]
        shape = (int(geo["shape"][0]), int(geo["shape"][1]))
        return flat_geometry(
            shape,
            beam_center_rowcol=(float(geo["beam_center_rowcol"][0]), float(geo["beam_center_rowcol"][1])),
            pixel_size_mm=float(geo["pixel_size_mm"]),
            distance_mm=float(geo["distance_mm"]),
            wavelength_a=float(geo["wavelength_a"]),
        ).pixel_maps(shape)
    except (DataFormatError, KeyError, IndexError, TypeError, ValueError):
        return None


def build_patch_set(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    labels: str | os.PathLike[str] | None = None,
    patch_config: PatchConfig | None = None,
    candidate_config: CandidateConfig | None = None,
    radius_px: float = 2.0,
    min_truth_snr: float | None = None,
    maps: PixelMaps | None = None,
    mask: NDArray[np.bool_] | None = None,
    dataset: str | None = None,
    max_frames: int | None = None,
    progress: bool = False,
) -> PatchSet:
    """Find candidates in every labelled frame of ``inputs``, cut their patches and label them.

    Parameters
    ----------
    inputs : path, glob or list of them
        Frames, as :func:`braggml.io.open_frames` reads them; files of several detectors (frame shapes) may
        be mixed (:func:`braggml.io.open_frame_groups`).
    labels : path, optional
        A peak list (CXI, CrystFEL stream, CSV) holding the true peaks, e.g. the peaks of frames that
        indexed. Only frames it lists are used (matched by file name and frame index; by order when it does
        not name files). Without it every input must be a braggml simulated file, whose truth is used.
    patch_config, candidate_config : optional
        Patch and candidate-finder settings.
    radius_px : float
        Matching radius between candidates and true peaks.
    min_truth_snr : float, optional
        Candidates matched to true peaks below this SNR are labelled :data:`LABEL_IGNORE`.
    maps : PixelMaps, optional
        Detector maps for the candidate finder; without them, simulated files get a flat geometry from their
        parameters and other files the finder's fallback (one panel, beam at the image centre).
    mask : (H, W) bool ndarray, optional
        Extra bad pixels (True = bad), added to the files' masks.
    dataset : str, optional
        Dataset path for HDF5 inputs that do not name one.
    max_frames : int, optional
        Use at most this many labelled frames (the first ones).
    progress : bool
        Show a progress bar.

    Raises
    ------
    DataFormatError
        When an input holds no truth and no ``labels`` are given, or the labels do not fit the frames.
    """
    from tqdm.auto import tqdm

    from ..evaluate.truth import load_truth
    from ..io.frames import open_frame_groups
    from ..io.peaklists import read_peaks

    patch_config = patch_config or PatchConfig()
    candidate_config = candidate_config or CandidateConfig()
    if not radius_px > 0:
        raise ConfigError(f"radius_px must be > 0, got {radius_px!r}")
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"max_frames must be >= 1, got {max_frames!r}")
    finder = candidate_finder(candidate_config)
    sources = open_frame_groups(inputs, dataset=dataset)
    # frame g is frame g - starts[k] of sources[k]: files of one detector (frame shape) after another
    starts = np.cumsum([0] + [len(s) for s in sources])
    refs = [r for s in sources for r in s.refs]
    files = tuple(f for s in sources for f in s.files)
    file_index = {f: i for i, f in enumerate(files)}

    truth_of: dict[int, PeakList]
    if labels is not None:
        peak_list = read_peaks(labels)
        if peak_list.frames is None and len(sources) > 1:
            raise DataFormatError(
                f"{labels}: the peak list does not say which files its frames come from, and the data mix frame "
                f"shapes {', '.join(str(s.shape) for s in sources)}; give the frames of one detector at a time"
            )
        truth_of = _labels_by_frame(peak_list, refs, str(labels))
    else:
        truth_of = {}
        per_file: dict[str, PeakList] = {}
        for g, ref in enumerate(refs):
            if ref.file not in per_file:
                try:
                    per_file[ref.file] = load_truth(ref.file).peaks
                except (DataFormatError, ConfigError) as exc:
                    raise DataFormatError(
                        f"{ref.file}: no ground truth in the file ({exc}); give the true peaks with --labels PEAKS"
                    ) from None
            peaks = per_file[ref.file]
            if not 0 <= ref.index < peaks.n_frames:
                raise DataFormatError(f"{ref.file}: truth covers {peaks.n_frames} frames, frame {ref.index} has none")
            truth_of[g] = peaks.for_frame(ref.index)
    used = sorted(truth_of)
    if max_frames is not None:
        used = used[:max_frames]
    if not used:
        raise DataFormatError(f"no labelled frames in {', '.join(files)}")

    file_masks = [s.file_mask() for s in sources]
    sim_maps: dict[str, PixelMaps | None] = {}
    parts: dict[str, list[NDArray[Any]]] = {k: [] for k in ("patches", "labels", "frame", "run", "row", "col", "snr")}
    truth_parts: list[PeakList] = []
    bar = tqdm(used, unit="frame", desc="candidates", disable=not progress, leave=False)
    for g in bar:
        k = int(np.searchsorted(starts, g, side="right")) - 1
        frame = sources[k].frame(g - int(starts[k]))
        run_maps = maps
        if run_maps is None:
            if frame.ref.file not in sim_maps:
                sim_maps[frame.ref.file] = _simulation_maps(frame.ref.file)
            run_maps = sim_maps[frame.ref.file]
        bad = frame.bad.copy()
        for m in (file_masks[k], mask):
            if m is not None:
                if m.shape != bad.shape:
                    raise ConfigError(f"mask of shape {m.shape} does not match frames of shape {bad.shape}")
                bad |= m
        cands, patches = candidate_patches(finder, frame.data, bad, maps=run_maps, config=patch_config)
        truth = truth_of[g]
        lab = label_candidates(
            np.column_stack([cands.row, cands.col]),
            np.column_stack([truth.row, truth.col]),
            radius_px=radius_px,
            truth_snr=truth.snr,
            min_truth_snr=min_truth_snr,
        )
        if min_truth_snr is not None:
            truth = truth.take(~(truth.snr < min_truth_snr))
        truth_parts.append(truth)
        n = len(cands)
        parts["patches"].append(patches)
        parts["labels"].append(lab)
        parts["frame"].append(np.full(n, g, np.int64))
        parts["run"].append(np.full(n, file_index.get(frame.ref.file, 0), np.int64))
        parts["row"].append(cands.row)
        parts["col"].append(cands.col)
        parts["snr"].append(cands.snr)
    for s in sources:
        s.close()
    p = patch_config.size
    data = {
        k: (np.concatenate(v) if v else np.empty((0, 2, p, p) if k == "patches" else 0))
        for k, v in parts.items()
    }
    out = PatchSet(
        patches=data["patches"].astype(np.float32, copy=False),
        labels=data["labels"].astype(np.int8, copy=False),
        frame=data["frame"].astype(np.int64, copy=False),
        run=data["run"].astype(np.int64, copy=False),
        row=data["row"].astype(np.float64, copy=False),
        col=data["col"].astype(np.float64, copy=False),
        snr=data["snr"].astype(np.float64, copy=False),
        n_frames=len(used),
        frames_used=np.asarray(used, np.int64),
        truth=PeakList.concatenate(truth_parts),
        files=files,
        patch_config=patch_config,
        candidate_config=candidate_config,
    )
    log.info("%r", out)
    return out


# -- splits and balance ------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Split:
    """Row indices of the training, validation and test patches, and the groups (frames or runs) of each."""

    train: NDArray[np.int64]
    val: NDArray[np.int64]
    test: NDArray[np.int64]
    train_groups: NDArray[np.int64]
    val_groups: NDArray[np.int64]
    test_groups: NDArray[np.int64]


def split_by_frame(
    groups: NDArray[np.integer],
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    *,
    seed: int = 0,
) -> Split:
    """Split patches into training, validation and test sets by group (frame or run), never by patch.

    Groups are shuffled with ``seed`` and dealt to the three sets in proportion to ``fractions`` (rounded;
    a set with a non-zero fraction gets at least one group).

    Parameters
    ----------
    groups : (N,) int ndarray
        Group of each patch (:meth:`PatchSet.groups`).
    fractions : (float, float, float)
        Shares of the groups for training, validation and test; non-negative, summing to 1.
    seed : int
        Seed of the shuffle.

    Raises
    ------
    ConfigError
        Bad fractions, or fewer groups than sets to fill.

    Examples
    --------
    >>> s = split_by_frame(np.array([0, 0, 1, 1, 2, 3, 3, 4]), (0.6, 0.2, 0.2), seed=1)
    >>> sorted(np.concatenate([s.train_groups, s.val_groups, s.test_groups]).tolist())
    [0, 1, 2, 3, 4]
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (3,) or np.any(~np.isfinite(fr)) or np.any(fr < 0) or not np.isclose(fr.sum(), 1.0):
        raise ConfigError(f"split fractions must be three non-negative numbers summing to 1, got {fractions!r}")
    if fr[0] <= 0:
        raise ConfigError(f"the training fraction must be > 0, got {fractions!r}")
    g = np.asarray(groups).reshape(-1).astype(np.int64)
    unique = np.unique(g)
    needed = int((fr > 0).sum())
    if unique.size < needed:
        raise ConfigError(
            f"{unique.size} frame group(s) with candidates cannot fill {needed} sets (train/validation/test); "
            "use more frames"
        )
    order = np.random.default_rng(seed).permutation(unique)
    counts = np.floor(fr * unique.size).astype(int)
    counts[(fr > 0) & (counts == 0)] = 1
    while counts.sum() > unique.size:
        counts[int(np.argmax(counts))] -= 1
    counts[0] += unique.size - counts.sum()
    bounds = np.cumsum(counts)
    sets = np.split(order, bounds[:2])
    idx = [np.flatnonzero(np.isin(g, s)).astype(np.int64) for s in sets]
    return Split(idx[0], idx[1], idx[2], np.sort(sets[0]), np.sort(sets[1]), np.sort(sets[2]))


def positive_weight(labels: NDArray[np.integer], *, max_weight: float = 50.0) -> float:
    """Weight of a positive example that balances the classes: ``n_not_peak / n_peak``, in ``[1/max, max]``."""
    lab = np.asarray(labels)
    n_pos = int((lab == LABEL_PEAK).sum())
    n_neg = int((lab == LABEL_NOT_PEAK).sum())
    if n_pos == 0 or n_neg == 0:
        return 1.0
    return float(np.clip(n_neg / n_pos, 1.0 / max_weight, max_weight))
