"""How a run is cut up: shards of the whole run (one per SLURM array task) and chunks of frames (one per task).

A *shard* is a contiguous range of the run's frames, so the shards' peak lists join back by concatenation. A
*chunk* is the unit of work sent to a worker and of resumption: a contiguous range of frames that never crosses
an input file's boundary, so each worker reads from one file at a time and a file's output can be written as
soon as its chunks are done.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ConfigError
from ..peaks import FrameRef

__all__ = ["Shard", "Chunk", "parse_shard", "file_ranges", "plan_chunks", "auto_chunk_frames", "MAX_AUTO_CHUNK"]

#: Largest chunk chosen automatically (frames): a restart redoes at most this many frames per worker.
MAX_AUTO_CHUNK = 50


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based), e.g. one SLURM array task's share of the run."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError(f"shard count must be >= 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ConfigError(f"shard index must satisfy 0 <= index < {self.count}, got {self.index}")

    def frame_range(self, n_frames: int) -> tuple[int, int]:
        """Frames ``start <= k < stop`` of this shard in a run of ``n_frames`` (sizes differ by at most one).

        Examples
        --------
        >>> [Shard(i, 3).frame_range(10) for i in range(3)]
        [(0, 3), (3, 6), (6, 10)]
        """
        return (self.index * n_frames) // self.count, ((self.index + 1) * n_frames) // self.count

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> Shard:
    """``"i/N"`` (0-based index i of N shards) as a :class:`Shard`.

    Examples
    --------
    >>> parse_shard("3/8")
    Shard(index=3, count=8)
    """
    m = _SHARD_RE.match(text)
    if m is None or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise ConfigError(f"--shard expects i/N with 0 <= i < N (e.g. 0/4), got {text!r}")
    return Shard(int(m.group(1)), int(m.group(2)))


@dataclass(frozen=True)
class Chunk:
    """Frames ``start <= k < stop`` of the run (all from one input file)."""

    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def name(self) -> str:
        """A file-name-safe label, sortable in frame order."""
        return f"{self.start:012d}-{self.stop:012d}"


def file_ranges(refs: Sequence[FrameRef]) -> list[tuple[str, int, int]]:
    """``(file, start, stop)`` of each run of consecutive frames from the same file, in frame order.

    Examples
    --------
    >>> refs = [FrameRef("a.h5", "/d", 0), FrameRef("a.h5", "/d", 1), FrameRef("b.h5", "/d", 0)]
    >>> file_ranges(refs)
    [('a.h5', 0, 2), ('b.h5', 2, 3)]
    """
    out: list[tuple[str, int, int]] = []
    for k, ref in enumerate(refs):
        if out and out[-1][0] == ref.file and out[-1][2] == k:
            out[-1] = (ref.file, out[-1][1], k + 1)
        else:
            out.append((ref.file, k, k + 1))
    return out


def auto_chunk_frames(n_frames: int, workers: int) -> int:
    """Chunk size giving each worker about eight chunks, at most :data:`MAX_AUTO_CHUNK` frames."""
    if n_frames <= 0:
        return 1
    return max(1, min(MAX_AUTO_CHUNK, math.ceil(n_frames / (8 * max(1, workers)))))


def plan_chunks(
    boundaries: Sequence[tuple[int, int]], chunk_frames: int, *, start: int = 0, stop: int | None = None
) -> list[Chunk]:
    """Cut frames ``start <= k < stop`` into chunks of at most ``chunk_frames``, never across a boundary.

    Parameters
    ----------
    boundaries : sequence of (start, stop)
        Frame ranges that a chunk must not cross (one per input file), in order and contiguous.
    chunk_frames : int
        Largest chunk, >= 1.
    start, stop : int
        The frames to plan (a shard); ``stop`` defaults to the end of the last boundary.

    Examples
    --------
    >>> [(c.start, c.stop) for c in plan_chunks([(0, 5), (5, 7)], 2)]
    [(0, 2), (2, 4), (4, 5), (5, 7)]
    """
    if chunk_frames < 1:
        raise ConfigError(f"chunk_frames must be >= 1, got {chunk_frames}")
    end = boundaries[-1][1] if boundaries else 0
    stop = end if stop is None else stop
    if not 0 <= start <= stop <= end:
        raise ConfigError(f"frame range {start}..{stop} outside the run's {end} frames")
    chunks: list[Chunk] = []
    for lo, hi in boundaries:
        lo, hi = max(lo, start), min(hi, stop)
        k = lo
        while k < hi:
            chunks.append(Chunk(k, min(k + chunk_frames, hi)))
            k += chunk_frames
    return chunks
