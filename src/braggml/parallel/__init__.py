"""Scale-out: many frames and files on all cores of a machine, on a Dask cluster, or as SLURM job arrays.

- :func:`run_find` runs a :class:`~braggml.pipeline.PreparedRun` in chunks of frames on a local process pool or
  Dask; workers open the frames themselves and results are gathered in frame order (identical for any number
  of workers). Finished chunks are kept beside the output, so an interrupted run resumes.
- :mod:`~braggml.parallel.slurm` writes SLURM job-array scripts (one shard per task) and merges the shards.
- :mod:`~braggml.parallel.dask_backend` starts or joins Dask clusters, including SLURM through dask-jobqueue.

Nothing here imports Dask until a Dask run is asked for.
"""

from __future__ import annotations

from .execute import ExecutionConfig, FileDone, FindOutcome, run_find
from .plan import Chunk, Shard, parse_shard, plan_chunks

__all__ = [
    "ExecutionConfig",
    "FindOutcome",
    "FileDone",
    "run_find",
    "Shard",
    "Chunk",
    "parse_shard",
    "plan_chunks",
]
