"""Running ``find`` over many frames: in this process, a local process pool or a Dask cluster.

Every backend receives the same small :class:`~braggml.pipeline.FindJob` and frame ranges (chunks); each worker
opens the frames itself, so no frame travels between processes, and only the chunks' small peak lists come
back. Results are gathered in frame order, whatever order the workers finish in, so the output is identical
for any number of workers. At most a few chunks per worker are in flight, and finished chunks go to disk
(:class:`~braggml.parallel.resume.PartStore`) when the run has an output, so memory stays bounded and an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from ..errors import BraggMLError, ConfigError, DataFormatError
from ..peaks import FrameRef, PeakList
from ..pipeline import PreparedRun, RunSummary
from .plan import Chunk, Shard, auto_chunk_frames, file_ranges, plan_chunks
from .resume import PartStore, parts_folder, run_identity
from .worker import ChunkResult, merge_summaries, process_chunk

if TYPE_CHECKING:
    from .dask_backend import DaskConfig

__all__ = ["ExecutionConfig", "FindOutcome", "FileDone", "run_find", "SCHEDULERS", "START_METHODS"]

log = logging.getLogger(__name__)

SCHEDULERS = ("local", "dask")
START_METHODS = ("forkserver", "spawn")

#: Chunks kept in flight per worker (the next ones are ready when a worker finishes).
_IN_FLIGHT_PER_WORKER = 2


def _default_start_method() -> str:
    return "forkserver" if sys.platform.startswith("linux") else "spawn"


@dataclass(frozen=True)
class ExecutionConfig:
    """Where and how the frames are processed.

    Attributes
    ----------
    workers : int
        Local worker processes (``scheduler="local"``), or workers of the Dask LocalCluster started when no
        scheduler address is given. 1 processes the frames in this process.
    scheduler : {"local", "dask"}
        A local process pool, or Dask (see :class:`~braggml.parallel.dask_backend.DaskConfig`).
    chunk_frames : int or None
        Frames per chunk (the unit of work and of resumption); None chooses about eight chunks per worker,
        at most :data:`~braggml.parallel.plan.MAX_AUTO_CHUNK` frames.
    start_method : {"forkserver", "spawn"} or None
        How local worker processes start (never ``fork``: HDF5 handles must not be shared); None picks
        forkserver on Linux, spawn elsewhere.
    dask : DaskConfig or None
        Dask settings (scheduler address, SLURM cluster); defaults when None.
    """

    workers: int = 1
    scheduler: Literal["local", "dask"] = "local"
    chunk_frames: int | None = None
    start_method: Literal["forkserver", "spawn"] | None = None
    dask: DaskConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError(f"workers must be an integer >= 1, got {self.workers!r}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if self.chunk_frames is not None and self.chunk_frames < 1:
            raise ConfigError(f"chunk_frames must be >= 1, got {self.chunk_frames}")
        if self.start_method is not None and self.start_method not in START_METHODS:
            raise ConfigError(f"start_method must be one of {', '.join(START_METHODS)}, got {self.start_method!r}")


@dataclass(frozen=True)
class FileDone:
    """All frames of one input file are found: its peaks (frames numbered from 0 within the file)."""

    file: str
    start: int
    stop: int
    peaks: PeakList
    summary: RunSummary


@dataclass
class FindOutcome:
    """What :func:`run_find` did.

    Attributes
    ----------
    peaks : PeakList or None
        Peaks of the frames run (a shard's frames numbered from 0); None when ``keep_peaks`` was False.
    summary : RunSummary
        Frames, hits, peaks, failures and wall time of the frames run.
    frame_range : (int, int)
        The run's frames that were processed (a shard, or all).
    n_total_frames : int
        Frames in the whole run.
    resumed_frames : int
        Frames taken from an interrupted earlier run.
    store : PartStore or None
        The finished-chunk store; :meth:`finish` removes it once the outputs are written.
    """

    peaks: PeakList | None
    summary: RunSummary
    frame_range: tuple[int, int]
    n_total_frames: int
    resumed_frames: int = 0
    n_chunks: int = 0
    store: PartStore | None = field(default=None, repr=False)

    def finish(self) -> None:
        """Remove the finished-chunk store (call after the outputs are safely written)."""
        if self.store is not None:
            self.store.discard()
            self.store = None


# -- backends ----------------------------------------------------------------------------------------------------


class _Backend(Protocol):
    """Runs chunks of a job; yields results (or the chunk and its error) in completion order."""

    def map_unordered(self, chunks: Sequence[Chunk]) -> Iterator[ChunkResult | tuple[Chunk, BaseException]]: ...

    def close(self) -> None: ...


class _SerialBackend:
    """This process, with the already opened run."""

    def __init__(self, run: PreparedRun, on_frame: Callable[[int, PeakList], None] | None = None) -> None:
        self.run = run
        self.on_frame = on_frame

    def close(self) -> None:
        return None

    def map_unordered(self, chunks: Sequence[Chunk]) -> Iterator[ChunkResult | tuple[Chunk, BaseException]]:
        for chunk in chunks:
            t0, cpu0 = time.perf_counter(), time.thread_time()
            try:
                peaks, summary = self.run.run(chunk.start, chunk.stop, progress=False, on_frame=self.on_frame)
            except BraggMLError as exc:
                yield chunk, exc
                continue
            yield ChunkResult(
                start=chunk.start,
                stop=chunk.stop,
                peaks=peaks,
                n_hits=summary.n_hits,
                n_peaks=summary.n_peaks,
                seconds=time.perf_counter() - t0,
                rejected=dict(summary.rejected),
                failures=list(summary.failures),
                cpu_seconds=time.thread_time() - cpu0,
            )


class _ProcessBackend:
    """A local :class:`concurrent.futures.ProcessPoolExecutor`; each process opens the frames itself.

    A worker process that dies (a crash in a decompression filter on damaged data, the out-of-memory killer)
    breaks the pool: a new pool is started and the chunks that were in flight are retried one at a time, so
    that a chunk which kills its worker again is found, reported as failed, and the run goes on.
    """

    def __init__(
        self,
        run: PreparedRun,
        workers: int,
        start_method: str | None,
        *,
        task: Callable[..., ChunkResult] | None = None,
    ) -> None:
        method = start_method or _default_start_method()
        self.ctx = multiprocessing.get_context(method)
        if method == "forkserver":
            self.ctx.set_forkserver_preload(["braggml.parallel.worker"])
        self.job = run.job
        self.workers = workers
        self.task = task or process_chunk
        self.pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=self.ctx)

    def _restart(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=self.ctx)

    def map_unordered(self, chunks: Sequence[Chunk]) -> Iterator[ChunkResult | tuple[Chunk, BaseException]]:
        todo = deque(chunks)
        suspects: deque[Chunk] = deque()  # in flight when a worker died: retried alone
        pending: dict[cf.Future[ChunkResult], Chunk] = {}
        window = self.workers * _IN_FLIGHT_PER_WORKER
        while todo or suspects or pending:
            if suspects:
                if not pending:
                    chunk = suspects.popleft()
                    pending[self.pool.submit(self.task, self.job, chunk.start, chunk.stop)] = chunk
            else:
                while todo and len(pending) < window:
                    chunk = todo.popleft()
                    pending[self.pool.submit(self.task, self.job, chunk.start, chunk.stop)] = chunk
            alone = len(pending) == 1
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            broken = False
            for fut in done:
                chunk = pending.pop(fut)
                exc = fut.exception()
                if exc is None:
                    yield fut.result()
                elif isinstance(exc, BrokenProcessPool):
                    broken = True
                    if alone:  # it died on this chunk alone: the chunk is the cause
                        yield (
                            chunk,
                            DataFormatError(
                                f"the worker process died on frames {chunk.start}..{chunk.stop - 1} "
                                f"(damaged data crashing a decompression filter, or out of memory?)"
                            ),
                        )
                    else:
                        suspects.append(chunk)
                elif isinstance(exc, BraggMLError):
                    yield chunk, exc
                else:
                    raise exc
            if broken:
                suspects.extend(pending.values())
                pending.clear()
                log.warning("a worker process died; restarting the pool and retrying %d chunk(s)", len(suspects))
                self._restart()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


# -- the run -----------------------------------------------------------------------------------------------------


def _failed_chunk(all_refs: Sequence[FrameRef], chunk: Chunk, exc: BaseException) -> ChunkResult:
    """Every frame of a chunk that could not be processed, as failures with no peaks."""
    refs = all_refs[chunk.start : chunk.stop]
    log.error("frames %d..%d could not be processed: %s", chunk.start, chunk.stop - 1, exc)
    return ChunkResult(
        start=chunk.start,
        stop=chunk.stop,
        peaks=PeakList.empty(len(chunk), frames=refs),
        failures=[f"{ref}: {exc}" for ref in refs],
    )


def _make_backend(run: PreparedRun, config: ExecutionConfig) -> _Backend:
    if config.scheduler == "dask":
        from .dask_backend import DaskBackend, DaskConfig

        return DaskBackend(run.job, config.dask or DaskConfig(), workers=config.workers)
    if config.workers == 1:
        return _SerialBackend(run)
    return _ProcessBackend(run, config.workers, config.start_method)


def run_find(
    run: PreparedRun,
    config: ExecutionConfig | None = None,
    *,
    shard: Shard | None = None,
    output: str | Path | None = None,
    resume: bool = True,
    progress: bool = False,
    keep_peaks: bool = True,
    on_file_done: Callable[[FileDone], None] | None = None,
    on_chunk: Callable[[ChunkResult], None] | None = None,
) -> FindOutcome:
    """Find the peaks of a run (or one shard of it) with the configured workers.

    Parameters
    ----------
    run : PreparedRun
        The opened run; workers open their own copy from ``run.job``.
    config : ExecutionConfig, optional
        Workers and scheduler; one worker in this process when omitted.
    shard : Shard, optional
        Process only this shard's frames (the peaks then number them from 0).
    output : path, optional
        The run's output: finished chunks are kept in ``.<name>.parts`` beside it until
        :meth:`FindOutcome.finish`. Without it nothing is kept on disk and nothing can be resumed.
    resume : bool
        Skip chunks found finished by an interrupted run with the same inputs and settings.
    progress : bool
        Show a progress bar with frames/s.
    keep_peaks : bool
        Return the whole peak list; with False (when ``on_file_done`` takes each file's peaks) only one input
        file's peaks are held at a time.
    on_file_done : callable, optional
        Called with a :class:`FileDone` as soon as all frames of an input file are found, in file order.
    on_chunk : callable, optional
        Called with each newly computed chunk after it is stored.

    Returns
    -------
    FindOutcome

    Notes
    -----
    Frames that cannot be read are failures in the summary and get no peaks; so are the frames of a chunk
    whose file cannot be opened by a worker. The run goes on in both cases.
    """
    from tqdm.auto import tqdm

    config = config or ExecutionConfig()
    t0 = time.perf_counter()
    n_total = len(run)
    start, stop = shard.frame_range(n_total) if shard is not None else (0, n_total)
    all_refs = run.source.refs
    files = file_ranges(all_refs)
    size = config.chunk_frames or auto_chunk_frames(stop - start, config.workers)
    plan = plan_chunks([(a, b) for _, a, b in files], size, start=start, stop=stop)
    store = None
    if output is not None:
        identity = run_identity(run.job, run.source.files, (start, stop), n_total)
        store = PartStore(parts_folder(output), identity, plan, resume=resume)
        plan = store.plan
    done = store.done() if store is not None else set()
    todo = [c for c in plan if c not in done]
    resumed_frames = sum(len(c) for c in done)
    if done:
        log.warning(
            "resuming: %d of %d chunks (%d frames) were finished by an earlier run",
            len(done),
            len(plan),
            resumed_frames,
        )

    # Results are released in frame order; file boundaries tell when a file's output can be written.
    file_stops = {b: (name, a) for name, a, b in files}
    ready: dict[int, ChunkResult] = {}
    in_file: list[ChunkResult] = []
    kept: list[ChunkResult] = []
    summaries: list[ChunkResult] = []
    position = 0

    def result_of(chunk: Chunk) -> ChunkResult:
        got = ready.pop(chunk.start, None)
        if got is None and store is not None:
            got = store.load(chunk)
        if got is None:  # a damaged part: redo it here
            got = next(iter(_SerialBackend(run).map_unordered([chunk])))
            if isinstance(got, tuple):
                got = _failed_chunk(all_refs, *got)
        return got

    def release() -> None:
        nonlocal position, in_file
        while position < len(plan):
            chunk = plan[position]
            if chunk not in done and chunk.start not in ready:
                return
            res = result_of(chunk)
            position += 1
            light = ChunkResult(
                res.start, res.stop, PeakList.empty(0), res.n_hits, res.n_peaks, res.seconds, res.rejected, res.failures
            )
            summaries.append(light)
            if keep_peaks:
                kept.append(res)
            if on_file_done is not None:
                in_file.append(res)
                if res.stop in file_stops or position == len(plan):
                    name, file_start = file_stops.get(res.stop, (all_refs[res.start].file, in_file[0].start))
                    peaks = PeakList.concatenate([r.peaks for r in in_file])
                    file_summary = merge_summaries(in_file, min_peaks=run.job.min_peaks, seconds=0.0)
                    on_file_done(FileDone(name, in_file[0].start, res.stop, peaks, file_summary))
                    in_file = []

    bar = tqdm(
        total=stop - start,
        initial=resumed_frames,
        unit="frame",
        disable=not progress,
        dynamic_ncols=True,
        leave=False,
    )
    backend = _make_backend(run, config) if todo else None
    per_frame = isinstance(backend, _SerialBackend)
    if per_frame:  # this process: the bar moves frame by frame
        backend.on_frame = lambda _k, _peaks: bar.update(1)
    n_hits = 0
    try:
        release()
        if backend is not None:
            for item in backend.map_unordered(todo):
                if isinstance(item, tuple):
                    result = _failed_chunk(all_refs, *item)
                else:
                    result = item
                    if store is not None:
                        store.save(result)
                    if on_chunk is not None:
                        on_chunk(result)
                    if not isinstance(backend, _SerialBackend):  # this process logged its own failures
                        for failure in result.failures:
                            log.error("%s", failure)
                ready[result.start] = result
                n_hits += result.n_hits
                if isinstance(item, tuple) or not per_frame:
                    bar.update(result.stop - result.start)
                else:  # frames that failed were not counted frame by frame
                    bar.update(len(result.failures))
                bar.set_postfix(hits=n_hits, refresh=False)
                release()
        release()
    finally:
        bar.close()
        if backend is not None:
            backend.close()
    summary = merge_summaries(summaries, min_peaks=run.job.min_peaks, seconds=time.perf_counter() - t0)
    peaks = None
    if keep_peaks:
        peaks = PeakList.concatenate([r.peaks for r in kept]) if kept else PeakList.empty(0, frames=())
    return FindOutcome(
        peaks=peaks,
        summary=summary,
        frame_range=(start, stop),
        n_total_frames=n_total,
        resumed_frames=resumed_frames,
        n_chunks=len(plan),
        store=store,
    )
