"""The command line's parallel options and subcommands (``find --workers``, ``slurm find``, ``merge``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, DataFormatError, InputNotFoundError
from ..pipeline import FindJob, PreparedRun
from .dask_backend import DaskConfig
from .execute import SCHEDULERS, ExecutionConfig, FileDone, FindOutcome, run_find
from .plan import Shard, parse_shard

if TYPE_CHECKING:
    from .slurm import ShardRecord

__all__ = [
    "add_parallel_arguments",
    "add_slurm_arguments",
    "add_merge_arguments",
    "execution_from_args",
    "prepare_run",
    "split_outputs",
    "run_find_command",
    "finish_find_command",
    "run_slurm_find",
    "run_merge",
]

log = logging.getLogger(__name__)

_FORMAT_SUFFIX = {"cxi": ".h5", "stream": ".stream", "csv": ".csv", "refl": ".refl"}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def add_parallel_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of parallel, resumable and cluster runs to ``find``."""
    g = parser.add_argument_group("parallel runs (same output for any number of workers)")
    g.add_argument("--workers", type=_positive_int, default=1, metavar="N", help="worker processes on this machine")
    g.add_argument(
        "--chunk-frames", type=_positive_int, metavar="N", help="frames per work unit (none: ~8 per worker, <= 50)"
    )
    g.add_argument("--scheduler", choices=SCHEDULERS, default="local", help="local process pool, or Dask")
    g.add_argument(
        "--scheduler-address", metavar="ADDR", help="join this Dask scheduler (tcp://host:8786 or a scheduler file)"
    )
    g.add_argument("--shard", metavar="i/N", help="process only shard i of N (0-based) of the frames")
    g.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="skip frames finished by an interrupted run with the same -o (none: on when -o is given)",
    )
    g.add_argument(
        "--split-output",
        action="store_true",
        help="one peak list per input file: -o names a folder or a pattern with {stem}",
    )
    c = parser.add_argument_group("Dask workers as SLURM jobs (dask-jobqueue; with --scheduler dask)")
    c.add_argument("--cluster", choices=["slurm"], help="start the Dask workers as SLURM jobs")
    c.add_argument("--partition", help="SLURM partition of the jobs")
    c.add_argument("--qos", help="SLURM quality of service of the jobs")
    c.add_argument("--account", help="SLURM account of the jobs")
    c.add_argument("--walltime", help="time limit of each worker job (HH:MM:SS)")
    c.add_argument("--jobs", type=_positive_int, metavar="N", help="number of worker jobs")
    c.add_argument("--cores-per-job", type=_positive_int, metavar="N", help="cores (workers) per job")
    c.add_argument("--memory-per-job", metavar="MEM", help="memory of each worker job, e.g. 16GiB")
    c.add_argument("--gpus-per-job", type=int, metavar="N", help="GPUs of each worker job")


def execution_from_args(args: argparse.Namespace) -> tuple[ExecutionConfig, Shard | None]:
    """The :class:`ExecutionConfig` and shard the ``find`` options describe."""
    dask = None
    uses_cluster = args.cluster is not None or args.scheduler_address is not None
    if uses_cluster and args.scheduler != "dask":
        raise ConfigError("--cluster and --scheduler-address need --scheduler dask")
    if args.scheduler == "dask":
        names = ("partition", "qos", "account", "walltime", "jobs", "cores_per_job", "memory_per_job", "gpus_per_job")
        given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
        dask = DaskConfig(address=args.scheduler_address, cluster=args.cluster, **given)
    shard = parse_shard(args.shard) if args.shard else None
    if args.split_output and shard is not None:
        raise ConfigError("--split-output cannot be combined with --shard (merge joins whole-run shards)")
    if args.resume and not args.output:
        raise ConfigError("--resume needs -o: finished frames are kept beside the output")
    if args.split_output and not args.output:
        raise ConfigError("--split-output needs -o (a folder or a pattern with {stem})")
    config = ExecutionConfig(workers=args.workers, scheduler=args.scheduler, chunk_frames=args.chunk_frames, dask=dask)
    return config, shard


def prepare_run(job: FindJob) -> tuple[PreparedRun, list[str]]:
    """Open a run; damaged input files among several are left out and returned as failure messages.

    A missing file or a run whose every file is damaged still raises.
    """
    try:
        return PreparedRun(job), []
    except InputNotFoundError:
        raise
    except DataFormatError as first_error:
        from ..io.frames import expand_inputs, open_frames

        pairs = expand_inputs(list(job.inputs), dataset=job.dataset)
        if len(pairs) < 2:
            raise
        good: list[str] = []
        failures: list[str] = []
        for file, dataset in pairs:
            spec = file if dataset is None else f"{file}::{dataset}"
            try:
                open_frames(spec, detector_kind=job.detector_kind, saturation=job.saturation).close()
            except InputNotFoundError:
                raise
            except DataFormatError as exc:
                log.error("%s: left out of the run: %s", file, exc)
                failures.append(f"{file}: unreadable file, left out ({exc})")
            else:
                good.append(spec)
        if not failures or not good:
            raise first_error from None
        return PreparedRun(replace(job, inputs=tuple(good))), failures


def _split_target(template: str, fmt: str | None) -> tuple[str, str]:
    """(folder-or-pattern, kind) of a --split-output -o."""
    if "{stem}" in template:
        return template, "pattern"
    if Path(template).is_dir():
        return str(Path(template) / ("{stem}_peaks" + _FORMAT_SUFFIX[fmt or "cxi"])), "folder"
    raise ConfigError(f"--split-output: -o {template!r} must be an existing folder or a pattern holding {{stem}}")


def split_outputs(template: str, files: list[str], fmt: str | None) -> dict[str, str]:
    """Output name of each input file for ``--split-output`` (distinct names required)."""
    pattern, _kind = _split_target(template, fmt)
    inputs = {Path(f).resolve() for f in files}
    out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for f in files:
        name = Path(f).name
        for packed in (".gz", ".bz2", ".xz"):
            name = name.removesuffix(packed)
        stem = Path(name).stem
        target = pattern.replace("{stem}", stem)
        if target in seen:
            raise ConfigError(f"--split-output: {seen[target]} and {f} would both write {target}; rename one")
        seen[target] = f
        out[f] = target
        if Path(target).resolve() in inputs:
            raise ConfigError(f"--split-output: {target} is one of the inputs; it would be overwritten")
        if not Path(target).resolve().parent.is_dir():
            raise ConfigError(f"{target}: output folder {Path(target).resolve().parent} does not exist")
    return out


def run_find_command(args: argparse.Namespace, run: PreparedRun, *, progress: bool) -> FindOutcome:
    """Run ``find`` as its options say (workers, scheduler, shard, resume, split outputs)."""
    from ..io.peaklists import write_peaks

    config, shard = execution_from_args(args)
    resume = args.resume if args.resume is not None else True
    on_file_done = None
    if args.split_output:
        targets = split_outputs(args.output, run.source.files, args.format)

        def on_file_done(done: FileDone) -> None:
            path = targets[done.file]
            write_peaks(done.peaks, path, format=args.format, maps=run.geometry.maps, geometry=run.geometry.geometry)
            if not args.quiet:
                print(f"{done.file}: {done.summary.n_frames} frames, {done.summary.n_peaks} peaks -> {path}")

    return run_find(
        run,
        config,
        shard=shard,
        output=args.output,
        resume=resume,
        progress=progress,
        keep_peaks=not args.split_output or bool(args.hits_out or args.plot),
        on_file_done=on_file_done,
    )


def finish_find_command(args: argparse.Namespace, run: PreparedRun, outcome: FindOutcome) -> None:
    """After the outputs are written: the shard record (with --shard), then the finished-chunk store removed."""
    from .resume import run_identity
    from .slurm import ShardRecord, summary_to_dict, write_shard_record

    if args.shard and args.output:
        shard = parse_shard(args.shard)
        job = run.job
        record = ShardRecord(
            identity=run_identity(job, run.source.files, (0, outcome.n_total_frames), outcome.n_total_frames),
            shard=(shard.index, shard.count),
            frame_range=outcome.frame_range,
            n_total_frames=outcome.n_total_frames,
            frame_shape=run.source.shape,
            job={
                **{k: getattr(job, k) for k in job.__dataclass_fields__},
                "inputs": list(job.inputs),
                "params": [[k, v] for k, v in job.params],
            },
            summary=summary_to_dict(outcome.summary),
        )
        write_shard_record(args.output, record)
    outcome.finish()


# -- braggml slurm find ----------------------------------------------------------------------------------------


def add_slurm_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the job-array options to the ``slurm find`` parser."""
    s = parser.add_argument_group("SLURM job array (one shard of the frames per array task)")
    s.add_argument("--array", type=_positive_int, required=True, metavar="N", help="number of array tasks (shards)")
    s.add_argument("--job-name", help="job name (%%x in the log names; none: braggml-find)")
    s.add_argument("--time", help="time limit of each task (HH:MM:SS or D-HH:MM; none: 01:00:00)")
    s.add_argument("--cpus-per-task", type=_positive_int, metavar="N", help="cores per task (= find workers)")
    s.add_argument("--mem", metavar="MEM", help="memory per task, e.g. 8G")
    s.add_argument("--gpus-per-task", type=int, metavar="N", help="GPUs per task (--gres=gpu:N)")
    s.add_argument("--max-running", type=_positive_int, metavar="M", help="at most M tasks at once (--array=…%%M)")
    s.add_argument("--log-dir", metavar="DIR", help="folder of the .out/.err logs")
    s.add_argument("--setup", action="append", default=[], metavar="LINE", help="shell line run first (repeatable)")
    s.add_argument("--sbatch", action="append", default=[], metavar="OPT", help="extra #SBATCH option (repeatable)")
    s.add_argument("--script", metavar="FILE", help="where to write the script (none: <job-name>.sbatch)")
    s.add_argument("--dry-run", action="store_true", help="print the script, write and submit nothing")
    s.add_argument("--submit", action="store_true", help="submit the array and its merge job with sbatch")


_SLURM_ONLY = (
    "array",
    "job_name",
    "time",
    "cpus_per_task",
    "mem",
    "gpus_per_task",
    "max_running",
    "log_dir",
    "setup",
    "sbatch",
    "script",
    "dry_run",
    "submit",
    "partition",
    "qos",
    "account",
    "func",
    "command",
    "slurm_command",
)
_NOT_PASSED = (
    "output",
    "shard",
    "hits_out",
    "split_output",
    "walltime",
    "jobs",
    "cores_per_job",
    "memory_per_job",
    "gpus_per_job",
    "cluster",
    "scheduler",
    "scheduler_address",
    "progress",
)


def run_slurm_find(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``braggml slurm find``: write (print, submit) the job-array script and its merge script."""
    from .slurm import SlurmArrayConfig, array_script, find_arguments, merge_script, submit_script

    if not args.output:
        raise ConfigError("slurm find needs -o: the merged output (task i writes <stem>.shard-i<suffix>)")
    if args.shard or args.split_output:
        raise ConfigError("slurm find sets --shard itself and cannot split outputs per file")
    if args.scheduler != "dask" and (args.cluster or args.scheduler_address):
        raise ConfigError("--cluster and --scheduler-address are not used by job arrays")
    if args.scheduler == "dask":
        raise ConfigError("slurm find runs plain job arrays; for Dask use find --scheduler dask --cluster slurm")
    if args.dry_run and args.submit:
        raise ConfigError("give --dry-run or --submit, not both")
    if not Path(args.output).resolve().parent.is_dir():
        raise ConfigError(f"{args.output}: output folder {Path(args.output).resolve().parent} does not exist")
    names = (
        "job_name",
        "partition",
        "qos",
        "account",
        "time",
        "cpus_per_task",
        "mem",
        "gpus_per_task",
        "max_running",
        "log_dir",
    )
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    config = SlurmArrayConfig(array=args.array, setup=tuple(args.setup), extra=tuple(args.sbatch), **given)
    words = find_arguments(parser, args, skip=_SLURM_ONLY + _NOT_PASSED)
    workdir = os.getcwd()
    script = array_script(config, words, args.output, workdir=workdir, has_workers=args.workers != 1)
    merge = merge_script(config, args.output, hits_out=args.hits_out, dials_expt=args.dials_expt, workdir=workdir)
    if args.dry_run:
        sys.stdout.write(script)
        print("# ---- merge job (submitted afterok the array with --submit) ----")
        sys.stdout.write(merge)
        return 0
    path = Path(args.script or f"{config.job_name}.sbatch")
    merge_path = path.with_name(path.stem + ".merge" + (path.suffix or ".sbatch"))
    if config.log_dir:
        Path(config.log_dir).mkdir(parents=True, exist_ok=True)
    from ..io.atomic import atomic_output

    for target, text in ((path, script), (merge_path, merge)):
        with atomic_output(target, mode="w") as fh:
            fh.write(text)
        target.chmod(0o755)
    print(f"job array script written to {path} ({config.array} tasks)")
    print(f"merge script written to {merge_path}")
    if args.submit:
        job_id = submit_script(path)
        print(f"submitted job array {job_id}")
        merge_id = submit_script(merge_path, dependency=f"afterok:{job_id}")
        print(f"submitted merge job {merge_id} (runs when every task has succeeded)")
    else:
        print(f"submit with: sbatch {path} && sbatch --dependency=afterok:<array job id> {merge_path}")
    return 0


# -- braggml merge ---------------------------------------------------------------------------------------------


def add_merge_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``merge`` options."""
    parser.add_argument("shards", nargs="+", metavar="SHARD", help="shard outputs of 'find --shard' (globs allowed)")
    parser.add_argument("-o", "--output", required=True, metavar="PEAKS", help="merged peak list to write")
    parser.add_argument(
        "--format", choices=["cxi", "stream", "csv", "refl"], help="peak-list format (none: from the name)"
    )
    parser.add_argument(
        "--dials-expt",
        metavar="EXPT",
        help="for a .refl output: the frames' DIALS experiment list (as for find)",
    )
    parser.add_argument("--hits-out", metavar="LIST", help="write hit frames as a CrystFEL event list")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def _shard_geometry(record: ShardRecord) -> tuple[Any, Any]:
    """The geometry and pixel maps the shards were found with (from the inputs, as the run did)."""
    from ..errors import BraggMLError
    from ..pipeline import resolve_geometry

    job = record.find_job()
    try:
        run = PreparedRun(job, warn_without_geometry=False)
        return run.geometry.geometry, run.geometry.maps
    except BraggMLError as exc:
        log.warning("cannot open the run's inputs (%s); the stream's geometry comes from the options only", exc)
    rg = resolve_geometry(
        record.frame_shape,
        geom=job.geom,
        beam_center_rowcol=job.beam_center_rowcol,
        pixel_size_mm=job.pixel_size_mm,
        distance_mm=job.distance_mm,
        wavelength_a=job.wavelength_a,
        photon_energy_ev=job.photon_energy_ev,
        warn=False,
    )
    return rg.geometry, rg.maps


def run_merge(args: argparse.Namespace) -> int:
    """``braggml merge``: check the shards belong together, join them, write the output (and hit list)."""
    import shutil

    from ..io.peaklists import peak_format, write_event_list, write_peaks
    from .slurm import expand_shard_paths, merge_shards

    fmt = args.format
    kind = peak_format(args.output, fmt)
    if args.dials_expt is not None and kind != "refl":
        raise ConfigError("--dials-expt goes with a DIALS reflection table output (-o strong.refl)")
    peaks, summary, record = merge_shards(args.shards, dials_experiments=args.dials_expt)
    geometry = maps = None
    if kind == "stream":  # the stream names panels and resolution: the run's geometry
        geometry, maps = _shard_geometry(record)
    write_peaks(peaks, args.output, format=fmt, geometry=geometry, maps=maps, dials_experiments=args.dials_expt)
    settings = [Path(f + ".yaml") for f in expand_shard_paths(args.shards) if Path(f + ".yaml").is_file()]
    if settings:
        shutil.copyfile(settings[0], str(args.output) + ".yaml")
    if args.hits_out:
        counts = peaks.counts_per_frame()
        hits = [ref for ref, n in zip(peaks.frames or (), counts) if n >= summary.min_peaks]
        write_event_list(hits, args.hits_out)
    if not args.quiet:
        print(f"merged {record.shard[1]} shards")
        for line in summary.lines():
            print(line)
        print(f"peaks written to {args.output}")
        if args.hits_out:
            print(f"hit list written to {args.hits_out}")
    return 0
