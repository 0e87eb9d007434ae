"""The unit of work: one chunk of frames found by a worker that opened the frames itself.

:func:`process_chunk` is what every backend runs (a local process pool, Dask workers, the main process). It
receives the small, picklable :class:`~braggml.pipeline.FindJob` and a frame range, builds (once per worker
process or thread) a :class:`~braggml.pipeline.PreparedRun` that reads the frames straight from the files, and
returns a :class:`ChunkResult`: the chunk's peaks and its share of the run summary, small enough to send back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import logging
import multiprocessing
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..peaks import PEAK_COLUMNS, FrameRef, PeakList
from ..pipeline import FindJob, PreparedRun, RunSummary

__all__ = ["ChunkResult", "process_chunk", "job_key", "merge_summaries"]

_local = threading.local()


@dataclass
class ChunkResult:
    """Peaks and summary of frames ``start <= k < stop`` (``peaks`` numbers its frames from 0)."""

    start: int
    stop: int
    peaks: PeakList
    n_hits: int = 0
    n_peaks: int = 0
    seconds: float = 0.0
    rejected: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0

    # -- storage as plain arrays (npz, no pickling) ---------------------------------------------------------
    def to_arrays(self) -> dict[str, NDArray[Any]]:
        """The result as named arrays for :func:`numpy.savez`."""
        refs = self.peaks.frames or ()
        out: dict[str, NDArray[Any]] = {f"col_{name}": getattr(self.peaks, name) for name in PEAK_COLUMNS}
        out.update(
            range=np.array([self.start, self.stop], np.int64),
            counts=np.array([self.n_hits, self.n_peaks], np.int64),
            seconds=np.array(self.seconds, np.float64),
            cpu_seconds=np.array(self.cpu_seconds, np.float64),
            has_refs=np.array(self.peaks.frames is not None),
            ref_file=np.array([r.file for r in refs], dtype=str),
            ref_dataset=np.array([r.dataset for r in refs], dtype=str),
            ref_index=np.array([r.index for r in refs], dtype=np.int64),
            rejected_cause=np.array(list(self.rejected), dtype=str),
            rejected_count=np.array(list(self.rejected.values()), dtype=np.int64),
            failures=np.array(self.failures, dtype=str),
        )
        return out

    @classmethod
    def from_arrays(cls, data: Any) -> ChunkResult:
        """Inverse of :meth:`to_arrays` (``data`` maps names to arrays, e.g. an opened npz)."""
        start, stop = (int(v) for v in data["range"])
        frames = None
        if bool(data["has_refs"]):
            frames = tuple(
                FrameRef(str(f), str(d), int(i))
                for f, d, i in zip(data["ref_file"], data["ref_dataset"], data["ref_index"], strict=True)
            )
        peaks = PeakList(**{name: data[f"col_{name}"] for name in PEAK_COLUMNS}, n_frames=stop - start, frames=frames)
        n_hits, n_peaks = (int(v) for v in data["counts"])
        rejected = {str(k): int(v) for k, v in zip(data["rejected_cause"], data["rejected_count"], strict=True)}
        return cls(
            start=start,
            stop=stop,
            peaks=peaks,
            n_hits=n_hits,
            n_peaks=n_peaks,
            seconds=float(data["seconds"]),
            rejected=rejected,
            failures=[str(f) for f in data["failures"]],
            cpu_seconds=float(data["cpu_seconds"]) if "cpu_seconds" in data else 0.0,
        )


def job_key(job: FindJob) -> str:
    """A stable text digest of everything that defines ``job`` (used to cache a worker's opened run)."""
    fields = asdict(job)
    fields["params"] = [[str(k), repr(v)] for k, v in job.params]
    text = json.dumps(fields, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _tune_allocator() -> None:
    """Undo Dask's ``MALLOC_TRIM_THRESHOLD_`` for this worker process (glibc only; once per process).

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which fixes glibc's mmap threshold at its
    128 KiB default: every megabyte-sized frame array is then a fresh ``mmap`` whose pages fault in on first use,
    costing about 40 % more CPU per frame for peakfinder8 on 1024 x 1024 frames. Frame-sized blocks are served
    from the heap again (up to 64 MiB), and the heap is trimmed only beyond 256 MiB of free memory.
    """
    if getattr(_tune_allocator, "done", False):
        return
    _tune_allocator.done = True  # type: ignore[attr-defined]
    if not sys.platform.startswith("linux") or "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 64 << 20)
    mallopt(m_trim_threshold, 256 << 20)


def _prepared(job: FindJob) -> PreparedRun:
    """This worker's opened run for ``job`` (built on first use; one per thread, as frame readers are not shared)."""
    key = job_key(job)
    cache: dict[str, PreparedRun] | None = getattr(_local, "runs", None)
    if cache is None:
        cache = _local.runs = {}
    run = cache.get(key)
    if run is None:
        _tune_allocator()
        if multiprocessing.parent_process() is not None:
            # Unreadable frames are reported by the process that gathers the results, not twice.
            logging.getLogger("braggml.pipeline").setLevel(logging.CRITICAL)
        if len(cache) >= 2:  # a worker serving a new run forgets older ones
            cache.clear()
        run = cache[key] = PreparedRun(job, warn_without_geometry=False)
    return run


def process_chunk(job: FindJob, start: int, stop: int) -> ChunkResult:
    """Find the peaks of frames ``start <= k < stop`` of ``job`` (frames read by this worker).

    Unreadable frames are failures in the result, not exceptions; configuration or file errors raise.
    """
    run = _prepared(job)
    t0, cpu0 = time.perf_counter(), time.thread_time()
    peaks, summary = run.run(start, stop, progress=False)
    return ChunkResult(
        start=start,
        stop=stop,
        peaks=peaks,
        n_hits=summary.n_hits,
        n_peaks=summary.n_peaks,
        seconds=time.perf_counter() - t0,
        rejected=dict(summary.rejected),
        failures=list(summary.failures),
        cpu_seconds=time.thread_time() - cpu0,
    )


def merge_summaries(results: list[ChunkResult], *, min_peaks: int, seconds: float) -> RunSummary:
    """One :class:`~braggml.pipeline.RunSummary` from chunk results in frame order; ``seconds`` is wall time."""
    summary = RunSummary(min_peaks=min_peaks, seconds=seconds)
    for r in results:
        summary.n_frames += r.stop - r.start
        summary.n_hits += r.n_hits
        summary.n_peaks += r.n_peaks
        summary.failures.extend(r.failures)
        for cause, count in r.rejected.items():
            summary.rejected[cause] = summary.rejected.get(cause, 0) + count
    return summary
