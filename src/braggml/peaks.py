"""The peak list: one table of Bragg peaks for a whole run.

Positions are sub-pixel array coordinates: the centre of pixel ``image[r, c]`` is at ``row = r``,
``col = c`` (``ss`` and ``fs`` in CrystFEL's words), as in Cheetah, OM and CrystFEL's CXI peak lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["FrameRef", "PeakList", "PEAK_COLUMNS", "HIT_MIN_PEAKS"]

#: Peaks a frame needs to be called a hit, unless told otherwise (``find`` and ``evaluate`` alike). A frame of
#: a serial run with a few peaks is usually a blank with ice, a hot pixel the mask lacks or a cosmic ray.
HIT_MIN_PEAKS = 10


@dataclass(frozen=True)
class FrameRef:
    """Where a frame came from: file, dataset path (empty for CBF/npy) and index within the dataset."""

    file: str
    dataset: str = ""
    index: int = 0

    @property
    def event(self) -> str:
        """The CrystFEL event id of the frame (``//index``)."""
        return f"//{self.index}"

    def __str__(self) -> str:
        where = f"{self.file}::{self.dataset}" if self.dataset else self.file
        return f"{where} {self.event}"


#: Per-peak columns of :class:`PeakList` with their dtypes, in file order.
PEAK_COLUMNS: dict[str, type] = {
    "frame": np.int64,
    "row": np.float64,
    "col": np.float64,
    "intensity": np.float64,
    "background": np.float64,
    "snr": np.float64,
    "n_pixels": np.int64,
    "max_value": np.float64,
    "score": np.float64,
}


@dataclass(frozen=True, eq=False)
class PeakList:
    """Bragg peaks of ``n_frames`` frames, one row per peak, sorted by frame.

    Parameters
    ----------
    frame : (P,) int ndarray
        Index of each peak's frame in the run, ``0 <= frame < n_frames``.
    row, col : (P,) float ndarray
        Sub-pixel centroid (slow-scan ``ss`` and fast-scan ``fs``), pixel centres at integers.
    intensity : (P,) float ndarray
        Background-subtracted integrated intensity (detector units).
    background : (P,) float ndarray
        Local background per pixel under the peak.
    snr : (P,) float ndarray
        Signal-to-noise ratio of the integrated intensity.
    n_pixels : (P,) int ndarray
        Number of pixels in the peak.
    max_value : (P,) float ndarray
        Highest pixel value in the peak.
    score : (P,) float ndarray
        Classifier confidence in [0, 1] for learned finders, NaN for classical ones.
    n_frames : int
        Number of frames in the run, including those with no peaks.
    frames : tuple of FrameRef, optional
        Provenance of each frame (length ``n_frames``) when known.

    Examples
    --------
    >>> peaks = PeakList.from_columns(n_frames=2, frame=[0, 1, 1], row=[5.5, 8.0, 9.2], col=[3, 4, 7])
    >>> peaks.counts_per_frame().tolist()
    [1, 2]
    >>> len(peaks.for_frame(1))
    2
    """

    frame: NDArray[np.int64]
    row: NDArray[np.float64]
    col: NDArray[np.float64]
    intensity: NDArray[np.float64]
    background: NDArray[np.float64]
    snr: NDArray[np.float64]
    n_pixels: NDArray[np.int64]
    max_value: NDArray[np.float64]
    score: NDArray[np.float64]
    n_frames: int = 0
    frames: tuple[FrameRef, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        n = None
        for name, dtype in PEAK_COLUMNS.items():
            # A private copy: the caller's arrays stay writable and cannot change the frozen list later.
            value = np.array(getattr(self, name), dtype=dtype, copy=True).reshape(-1)
            value.setflags(write=False)
            object.__setattr__(self, name, value)
            if n is None:
                n = value.size
            elif value.size != n:
                raise ValueError(f"PeakList column {name!r} has {value.size} entries, expected {n}")
        if isinstance(self.n_frames, (bool, np.bool_)) or int(self.n_frames) != self.n_frames or self.n_frames < 0:
            raise ValueError(f"n_frames must be an integer >= 0, got {self.n_frames!r}")
        object.__setattr__(self, "n_frames", int(self.n_frames))
        if self.frame.size:
            if self.frame.min() < 0 or self.frame.max() >= self.n_frames:
                raise ValueError(
                    f"peak frame indices must lie in [0, n_frames={self.n_frames}), "
                    f"got {self.frame.min()}..{self.frame.max()}"
                )
            if np.any(np.diff(self.frame) < 0):
                raise ValueError("PeakList rows must be sorted by frame")
        if self.frames is not None:
            object.__setattr__(self, "frames", tuple(self.frames))
            if len(self.frames) != self.n_frames:
                raise ValueError(f"{len(self.frames)} frame references given for n_frames={self.n_frames}")

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def empty(cls, n_frames: int = 0, frames: Sequence[FrameRef] | None = None) -> PeakList:
        """A peak list with no peaks."""
        return cls.from_columns(n_frames=n_frames, frames=frames)

    @classmethod
    def from_columns(
        cls,
        *,
        n_frames: int | None = None,
        frames: Sequence[FrameRef] | None = None,
        **columns: ArrayLike,
    ) -> PeakList:
        """Build a peak list from any subset of the columns; missing ones are filled.

        ``intensity``, ``background``, ``snr`` and ``max_value`` default to NaN, ``n_pixels`` to 0,
        ``score`` to NaN and ``frame`` to 0. Rows are sorted by frame (stable).
        """
        unknown = set(columns) - set(PEAK_COLUMNS)
        if unknown:
            raise TypeError(f"unknown peak column(s): {', '.join(sorted(unknown))}")
        sizes = {np.size(v) for v in columns.values()}
        if len(sizes) > 1:
            raise ValueError(f"peak columns differ in length: {sorted(sizes)}")
        n = sizes.pop() if sizes else 0
        data: dict[str, NDArray] = {}
        for name, dtype in PEAK_COLUMNS.items():
            if name in columns:
                data[name] = np.asarray(columns[name], dtype=dtype).reshape(-1)
            elif name in ("frame", "n_pixels"):
                data[name] = np.zeros(n, dtype=dtype)
            else:
                data[name] = np.full(n, np.nan, dtype=dtype)
        order = np.argsort(data["frame"], kind="stable")
        data = {k: v[order] for k, v in data.items()}
        if n_frames is None:
            n_frames = len(frames) if frames is not None else (int(data["frame"].max()) + 1 if n else 0)
        return cls(**data, n_frames=n_frames, frames=tuple(frames) if frames is not None else None)

    @classmethod
    def concatenate(
        cls, per_frame: Iterable[PeakList], frames: Sequence[FrameRef] | None = None
    ) -> PeakList:
        """Join single-frame (or multi-frame) peak lists in order, renumbering their frames."""
        parts: list[PeakList] = list(per_frame)
        offset = 0
        columns: dict[str, list[NDArray]] = {name: [] for name in PEAK_COLUMNS}
        for part in parts:
            for name in PEAK_COLUMNS:
                value = getattr(part, name)
                columns[name].append(value + offset if name == "frame" else value)
            offset += part.n_frames
        data = {
            name: (np.concatenate(v) if v else np.empty(0, PEAK_COLUMNS[name])) for name, v in columns.items()
        }
        if frames is None and parts and all(p.frames is not None for p in parts):
            frames = tuple(ref for p in parts for ref in p.frames)  # type: ignore[union-attr]
        return cls(**data, n_frames=offset, frames=tuple(frames) if frames is not None else None)

    # -- access -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.frame.size)

    def __repr__(self) -> str:
        return f"PeakList({len(self)} peaks in {self.n_frames} frames)"

    def columns(self) -> dict[str, NDArray]:
        """The per-peak columns as a dict of read-only arrays."""
        return {name: getattr(self, name) for name in PEAK_COLUMNS}

    def counts_per_frame(self) -> NDArray[np.int64]:
        """Number of peaks in each frame, shape (n_frames,)."""
        return np.bincount(self.frame, minlength=self.n_frames).astype(np.int64)

    def take(self, index: NDArray[np.bool_] | NDArray[np.integer]) -> PeakList:
        """A peak list with a subset of the rows (frames are kept)."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = np.sort(idx)
        return PeakList(
            **{name: getattr(self, name)[idx] for name in PEAK_COLUMNS},
            n_frames=self.n_frames,
            frames=self.frames,
        )

    def for_frame(self, k: int) -> PeakList:
        """The peaks of frame ``k`` as a one-frame peak list."""
        if not 0 <= k < self.n_frames:
            raise IndexError(f"frame {k} out of range for {self.n_frames} frames")
        lo, hi = np.searchsorted(self.frame, [k, k + 1])
        data = {name: getattr(self, name)[lo:hi] for name in PEAK_COLUMNS}
        data["frame"] = np.zeros(hi - lo, np.int64)
        refs = (self.frames[k],) if self.frames is not None else None
        return PeakList(**data, n_frames=1, frames=refs)

    def with_frames(self, frames: Sequence[FrameRef]) -> PeakList:
        """The same peaks with frame provenance attached."""
        return PeakList(**self.columns(), n_frames=self.n_frames, frames=tuple(frames))

    def equals(self, other: PeakList, *, atol: float = 0.0) -> bool:
        """True when both lists hold the same peaks (NaN equal to NaN), within ``atol`` for floats."""
        if self.n_frames != other.n_frames or len(self) != len(other):
            return False
        for name in PEAK_COLUMNS:
            a, b = getattr(self, name), getattr(other, name)
            if not np.allclose(a, b, rtol=0.0, atol=atol, equal_nan=True):
                return False
        return True
