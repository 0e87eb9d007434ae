"""Dask as the engine: a local cluster, an existing scheduler, or worker jobs on SLURM through dask-jobqueue.

Dask is optional (``pip install braggml[cluster]``) and imported only when used. Each Dask worker runs
:func:`~braggml.parallel.worker.process_chunk`: it opens the frames itself from the files named in the job, so a
shared file system is assumed on a cluster, as for any SLURM job.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import BraggMLError, ConfigError, DataFormatError
from ..pipeline import FindJob
from .plan import Chunk
from .worker import ChunkResult, process_chunk

__all__ = ["DaskConfig", "DaskBackend", "require_dask", "make_client", "slurm_cluster_kwargs", "slurm_job_script"]

log = logging.getLogger(__name__)

_WALLTIME_RE = re.compile(r"^(\d+-)?\d{1,3}(:\d{2}){0,2}$")


def require_dask(jobqueue: bool = False) -> Any:
    """Import ``distributed`` (and ``dask_jobqueue``), or raise a ConfigError saying how to install them."""
    try:
        import distributed
    except ImportError:
        raise ConfigError(
            "--scheduler dask needs Dask's distributed scheduler: pip install 'braggml[cluster]' "
            "(or pip install 'dask[distributed]' dask-jobqueue)"
        ) from None
    if jobqueue:
        try:
            import dask_jobqueue  # noqa: F401
        except ImportError:
            raise ConfigError(
                "--cluster slurm needs dask-jobqueue: pip install 'braggml[cluster]' (or pip install dask-jobqueue)"
            ) from None
    return distributed


def check_walltime(walltime: str, name: str = "walltime") -> str:
    """``walltime`` if SLURM reads it as a time limit (``MM``, ``HH:MM:SS``, ``D-HH:MM``...), else ConfigError.

    Examples
    --------
    >>> check_walltime("02:00:00"), check_walltime("1-12:00")
    ('02:00:00', '1-12:00')
    """
    text = str(walltime).strip()
    if not _WALLTIME_RE.match(text):
        raise ConfigError(f"{name} must be a SLURM time such as 90, 02:00:00 or 1-12:00, got {walltime!r}")
    return text


@dataclass(frozen=True)
class DaskConfig:
    """Which Dask cluster runs the chunks.

    Attributes
    ----------
    address : str or None
        Scheduler address to join (``tcp://host:8786`` or a scheduler file ``*.json``); None starts a cluster.
    processes : bool
        LocalCluster only: one process per worker (True) or threads in this process (False).
    cluster : {"slurm"} or None
        Start Dask workers as SLURM jobs through dask-jobqueue instead of a LocalCluster.
    partition, qos, account : str or None
        SLURM partition (``-p``), quality of service (``--qos``) and account (``-A``) of the worker jobs.
    walltime : str
        Time limit of each worker job.
    jobs : int
        Number of worker jobs.
    cores_per_job : int
        CPU cores of each job; each core runs one single-threaded worker process.
    memory_per_job : str
        Memory of each job (``16GiB``).
    gpus_per_job : int
        GPUs of each job (``--gres=gpu:N``); 0 for none.
    job_extra : tuple of str
        More ``#SBATCH`` options, e.g. ``("--constraint=a100",)``.
    """

    address: str | None = None
    processes: bool = True
    cluster: Literal["slurm"] | None = None
    partition: str | None = None
    qos: str | None = None
    account: str | None = None
    walltime: str = "01:00:00"
    jobs: int = 1
    cores_per_job: int = 8
    memory_per_job: str = "16GiB"
    gpus_per_job: int = 0
    job_extra: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.cluster not in (None, "slurm"):
            raise ConfigError(f"cluster must be 'slurm' or None, got {self.cluster!r}")
        if self.cluster is not None and self.address is not None:
            raise ConfigError("give either a scheduler address or --cluster slurm, not both")
        for name in ("jobs", "cores_per_job"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.gpus_per_job < 0:
            raise ConfigError(f"gpus_per_job must be >= 0, got {self.gpus_per_job}")
        check_walltime(self.walltime)


def slurm_cluster_kwargs(config: DaskConfig) -> dict[str, Any]:
    """Keyword arguments of ``dask_jobqueue.SLURMCluster`` for ``config`` (one worker process per core)."""
    extra = [f"--qos={config.qos}"] if config.qos else []
    if config.gpus_per_job:
        extra.append(f"--gres=gpu:{config.gpus_per_job}")
    extra.extend(config.job_extra)
    kwargs: dict[str, Any] = {
        "cores": config.cores_per_job,
        "processes": config.cores_per_job,
        "memory": config.memory_per_job,
        "walltime": config.walltime,
        "job_name": "braggml-dask",
        "job_extra_directives": extra,
        "scheduler_options": {"dashboard_address": None},
    }
    if config.partition:
        kwargs["queue"] = config.partition
    if config.account:
        kwargs["account"] = config.account
    return kwargs


def slurm_job_script(config: DaskConfig) -> str:
    """The sbatch script dask-jobqueue would submit for each worker job (nothing is submitted)."""
    require_dask(jobqueue=True)
    from dask_jobqueue import SLURMCluster

    cluster = SLURMCluster(**slurm_cluster_kwargs(config))
    try:
        return str(cluster.job_script())
    finally:
        cluster.close()


def make_client(config: DaskConfig, *, workers: int = 1) -> tuple[Any, Any, int]:
    """A ``distributed.Client`` for ``config``, the cluster it started (or None) and the expected worker count."""
    distributed = require_dask(jobqueue=config.cluster == "slurm")
    if config.address is not None:
        target = config.address
        try:
            if target.endswith(".json"):
                client = distributed.Client(scheduler_file=target, timeout="30s")
            else:
                client = distributed.Client(target, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {target}: {exc}") from None
        n = sum(client.nthreads().values()) or workers
        return client, None, n
    if config.cluster == "slurm":
        from dask_jobqueue import SLURMCluster

        cluster = SLURMCluster(**slurm_cluster_kwargs(config))
        cluster.scale(jobs=config.jobs)
        log.warning("submitted %d Dask worker job(s) to SLURM; waiting for them to start", config.jobs)
        return distributed.Client(cluster), cluster, config.jobs * config.cores_per_job
    cluster = distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=config.processes,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    return distributed.Client(cluster), cluster, workers


class DaskBackend:
    """Runs chunks on Dask workers, a few per worker in flight; yields results in completion order."""

    def __init__(self, job: FindJob, config: DaskConfig, *, workers: int = 1) -> None:
        self.job = job
        self.client, self.cluster, self.workers = make_client(config, workers=workers)

    def map_unordered(self, chunks: Sequence[Chunk]) -> Iterator[ChunkResult | tuple[Chunk, BaseException]]:
        from distributed import KilledWorker, as_completed

        todo = list(reversed(chunks))
        window = 2 * max(1, self.workers)
        which: dict[str, Chunk] = {}

        def submit() -> Any:
            chunk = todo.pop()
            fut = self.client.submit(process_chunk, self.job, chunk.start, chunk.stop, pure=False)
            which[fut.key] = chunk
            return fut

        first = [submit() for _ in range(min(window, len(todo)))]
        queue = as_completed(first)
        for fut in queue:
            chunk = which.pop(fut.key)
            try:
                result = fut.result()
            except BraggMLError as exc:
                yield chunk, exc
            except KilledWorker:  # Dask retried the chunk on other workers; each died
                yield (
                    chunk,
                    DataFormatError(
                        f"Dask workers died on frames {chunk.start}..{chunk.stop - 1} "
                        f"(damaged data crashing a decompression filter, or out of memory?)"
                    ),
                )
            else:
                yield result
            finally:
                fut.release()
            if todo:
                queue.add(submit())

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()
