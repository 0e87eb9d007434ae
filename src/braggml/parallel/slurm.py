"""Plain SLURM job arrays (no Dask needed): one shard of the run per array task, then a merge.

:func:`array_script` writes the sbatch script whose task ``i`` runs ``braggml find … --shard i/N`` into its own
output ``<stem>.shard-<i><suffix>``; each shard output gets a small record beside it
(``<output>.shard.json``, :class:`ShardRecord`) saying which run and which frames it holds. :func:`merge_shards`
checks that the shards are the complete, consistent set of one run and joins them into the output a single run
would have written.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataFormatError, InputNotFoundError
from ..io.atomic import atomic_output
from ..peaks import PeakList
from ..pipeline import FindJob, RunSummary
from .dask_backend import check_walltime
from .plan import Shard

__all__ = [
    "SlurmArrayConfig",
    "ShardRecord",
    "shard_output",
    "array_script",
    "merge_script",
    "submit_script",
    "write_shard_record",
    "read_shard_record",
    "merge_shards",
    "find_arguments",
    "expand_shard_paths",
    "summary_to_dict",
]

_RECORD_SUFFIX = ".shard.json"
_RECORD_FORMAT = 1
_JOB_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass(frozen=True)
class SlurmArrayConfig:
    """The ``#SBATCH`` settings of a job array.

    Attributes
    ----------
    array : int
        Number of array tasks (= shards of the run).
    job_name : str
        Job name (``%x`` in the log file names).
    partition, qos, account : str or None
        ``--partition``, ``--qos``, ``--account``.
    time : str
        Time limit of each task (``HH:MM:SS``, ``D-HH:MM``...).
    cpus_per_task : int or None
        CPU cores per task; ``find`` then runs that many local workers unless ``--workers`` was given.
    mem : str or None
        Memory per task (``--mem``, e.g. ``8G``).
    gpus_per_task : int
        GPUs per task (``--gres=gpu:N``); 0 for none.
    max_running : int or None
        Most tasks running at once (``--array=0-N%M``).
    log_dir : str or None
        Folder of the ``.out``/``.err`` logs (default: the submission folder).
    setup : tuple of str
        Shell lines run before braggml (``module load …``, ``source venv/bin/activate``).
    extra : tuple of str
        More ``#SBATCH`` options, e.g. ``("--constraint=skylake",)``.
    """

    array: int = 1
    job_name: str = "braggml-find"
    partition: str | None = None
    qos: str | None = None
    account: str | None = None
    time: str = "01:00:00"
    cpus_per_task: int | None = None
    mem: str | None = None
    gpus_per_task: int = 0
    max_running: int | None = None
    log_dir: str | None = None
    setup: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.array < 1:
            raise ConfigError(f"--array must be >= 1, got {self.array}")
        if not _JOB_NAME_RE.match(self.job_name):
            raise ConfigError(f"--job-name may hold letters, digits and _.+- only, got {self.job_name!r}")
        check_walltime(self.time, "--time")
        if self.cpus_per_task is not None and self.cpus_per_task < 1:
            raise ConfigError(f"--cpus-per-task must be >= 1, got {self.cpus_per_task}")
        if self.gpus_per_task < 0:
            raise ConfigError(f"--gpus-per-task must be >= 0, got {self.gpus_per_task}")
        if self.max_running is not None and self.max_running < 1:
            raise ConfigError(f"--max-running must be >= 1, got {self.max_running}")
        for name in ("partition", "qos", "account", "mem"):
            value = getattr(self, name)
            if value is not None and (not value or any(ch.isspace() for ch in value)):
                raise ConfigError(f"--{name} must be one word, got {value!r}")

    def directives(self, *, array: bool = True, job_name: str | None = None, time: str | None = None) -> list[str]:
        """The ``#SBATCH`` lines."""
        name = job_name or self.job_name
        logs = f"{self.log_dir.rstrip('/')}/" if self.log_dir else ""
        pattern = "%x_%A_%a" if array else "%x_%j"
        lines = [
            f"--job-name={name}",
            f"--output={logs}{pattern}.out",
            f"--error={logs}{pattern}.err",
        ]
        if array:
            limit = f"%{self.max_running}" if self.max_running else ""
            lines.append(f"--array=0-{self.array - 1}{limit}")
        for flag, value in (("partition", self.partition), ("qos", self.qos), ("account", self.account)):
            if value:
                lines.append(f"--{flag}={value}")
        lines.append(f"--time={time or self.time}")
        lines.append("--ntasks=1")
        if array:
            if self.cpus_per_task:
                lines.append(f"--cpus-per-task={self.cpus_per_task}")
            if self.mem:
                lines.append(f"--mem={self.mem}")
            if self.gpus_per_task:
                lines.append(f"--gres=gpu:{self.gpus_per_task}")
            lines.extend(self.extra)
        return [f"#SBATCH {line}" for line in lines]


def shard_output(output: str | os.PathLike[str], index: int | str) -> str:
    """The output of shard ``index``: ``<stem>.shard-<index><suffix>`` beside ``output``.

    Examples
    --------
    >>> shard_output("out/peaks.h5", 3)
    'out/peaks.shard-3.h5'
    """
    p = Path(os.fspath(output))
    return str(p.with_name(f"{p.stem}.shard-{index}{p.suffix}"))


def find_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace, *, skip: Sequence[str] = ()) -> list[str]:
    """Command-line words that reproduce the options in ``args`` that differ from ``parser``'s defaults.

    Options whose destination is in ``skip`` are left out; positionals come last.
    """
    words: list[str] = []
    positionals: list[str] = []
    for action in parser._actions:
        dest = action.dest
        if dest in skip or dest == "help" or isinstance(action, argparse._HelpAction):
            continue
        if dest.startswith("_") or isinstance(action, argparse._SubParsersAction):
            continue
        value = getattr(args, dest, action.default)
        if not action.option_strings:
            positionals.extend(str(v) for v in (value if isinstance(value, list) else [value]))
            continue
        if value == action.default or value is None:
            continue
        if isinstance(action, argparse.BooleanOptionalAction):
            words.append(action.option_strings[0] if value else action.option_strings[1])
            continue
        flag = max(action.option_strings, key=len)
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            words.append(flag)
        elif isinstance(action, argparse._CountAction):
            words.extend([flag] * int(value))
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                words.extend([flag, str(item)])
        elif isinstance(value, (list, tuple)):
            words.append(flag)
            words.extend(str(v) for v in value)
        else:
            words.extend([flag, str(value)])
    return words + ["--", *positionals] if positionals else words


def _quote(words: Sequence[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)


def _braggml_command() -> list[str]:
    """How the jobs start braggml: this Python interpreter (a shared file system is assumed)."""
    return [sys.executable, "-m", "braggml"]


def array_script(
    config: SlurmArrayConfig,
    find_words: Sequence[str],
    output: str,
    *,
    workdir: str | None = None,
    has_workers: bool = False,
    command: Sequence[str] | None = None,
) -> str:
    """The sbatch script of a job array whose task ``i`` runs ``find`` on shard ``i`` of ``config.array``.

    Parameters
    ----------
    config : SlurmArrayConfig
        The ``#SBATCH`` settings.
    find_words : sequence of str
        The ``find`` options and inputs (no ``-o``, ``--shard``, ``--hits-out``).
    output : str
        The merged output; task ``i`` writes :func:`shard_output` ``(output, i)``.
    workdir : str, optional
        Folder the tasks run in (default: the current folder), so relative paths mean the same there.
    has_workers : bool
        ``find_words`` already set ``--workers``; otherwise the tasks use ``$SLURM_CPUS_PER_TASK`` workers.
    command : sequence of str, optional
        How to start braggml (default: this Python with ``-m braggml``).
    """
    from .. import __version__

    cmd = list(command or _braggml_command())
    workdir = workdir or os.getcwd()
    n = config.array
    target = shard_output(output, "${SLURM_ARRAY_TASK_ID}")
    head, _, tail = target.partition("${SLURM_ARRAY_TASK_ID}")
    out_word = shlex.quote(head) + '"${SLURM_ARRAY_TASK_ID}"' + shlex.quote(tail)
    merge_words = [*cmd, "merge", shard_output(output, "*"), "-o", output]
    lines = ["#!/bin/bash", *config.directives()]
    lines += [
        f"# braggml {__version__}: array task i finds the peaks of shard i of {n} of the run's frames.",
        "# When every task has finished, join the shards into one output with:",
        f"#   {_quote(merge_words)}",
        "set -euo pipefail",
        *config.setup,
        f"cd {shlex.quote(workdir)}",
    ]
    run = [_quote(cmd), "find", "--shard", f'"${{SLURM_ARRAY_TASK_ID}}/{n}"', "-o", out_word]
    if not has_workers:
        run += ["--workers", '"${SLURM_CPUS_PER_TASK:-1}"']
    run.append(_quote(find_words))
    lines.append(" ".join(w for w in run if w))
    return "\n".join(lines) + "\n"


def merge_script(
    config: SlurmArrayConfig,
    output: str,
    *,
    hits_out: str | None = None,
    dials_expt: str | None = None,
    workdir: str | None = None,
    command: Sequence[str] | None = None,
) -> str:
    """The sbatch script of the job that merges the array's shard outputs (submit it ``afterok`` the array)."""
    cmd = list(command or _braggml_command())
    words = [*cmd, "merge", shard_output(output, "*"), "-o", output]
    if hits_out:
        words += ["--hits-out", hits_out]
    if dials_expt:
        words += ["--dials-expt", dials_expt]
    lines = ["#!/bin/bash", *config.directives(array=False, job_name=f"{config.job_name}-merge", time="00:30:00")]
    lines += ["set -euo pipefail", *config.setup, f"cd {shlex.quote(workdir or os.getcwd())}", _quote(words)]
    return "\n".join(lines) + "\n"


def _run_refs(record: ShardRecord) -> list[Any]:
    """The frames of the run the record belongs to, in order (empty when its inputs cannot be opened here)."""
    import logging

    from ..errors import BraggMLError
    from ..io.frames import open_frames

    job = record.find_job()
    try:
        with open_frames(list(job.inputs), dataset=job.dataset) as source:
            return source.refs
    except BraggMLError as exc:
        logging.getLogger("braggml").warning("the merged frames are not named (the run's inputs: %s)", exc)
        return []


def submit_script(path: str | os.PathLike[str], *, dependency: str | None = None) -> str:
    """Submit ``path`` with ``sbatch --parsable``; returns the job id.

    Raises
    ------
    ConfigError
        ``sbatch`` is not on the PATH, or it refused the script (its message is given).
    """
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise ConfigError(f"sbatch not found on this machine (no SLURM here?); the script is {path}")
    cmd = [sbatch, "--parsable"]
    if dependency:
        cmd.append(f"--dependency={dependency}")
    cmd.append(os.fspath(path))
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise ConfigError(f"sbatch {path} failed: {message[-1] if message else f'exit status {done.returncode}'}")
    return done.stdout.strip().split(";")[0]


# -- shard records and merging ---------------------------------------------------------------------------------


@dataclass
class ShardRecord:
    """What a shard output holds: which run (identity), which shard and frames, its summary and settings."""

    identity: str
    shard: tuple[int, int]
    frame_range: tuple[int, int]
    n_total_frames: int
    frame_shape: tuple[int, int]
    job: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)

    def find_job(self) -> FindJob:
        """The :class:`~braggml.pipeline.FindJob` the shard was run with."""
        data = dict(self.job)
        data["inputs"] = tuple(data["inputs"])
        data["params"] = tuple((k, v) for k, v in data["params"])
        if data.get("beam_center_rowcol") is not None:
            data["beam_center_rowcol"] = tuple(data["beam_center_rowcol"])
        return FindJob(**data)


def _record_path(output: str | os.PathLike[str]) -> Path:
    return Path(os.fspath(output) + _RECORD_SUFFIX)


def write_shard_record(output: str | os.PathLike[str], record: ShardRecord) -> Path:
    """Write ``<output>.shard.json`` (atomically)."""
    path = _record_path(output)
    data = {"format": _RECORD_FORMAT, **asdict(record)}
    with atomic_output(path, mode="w") as fh:
        json.dump(data, fh, indent=1, default=str)
    return path


def read_shard_record(output: str | os.PathLike[str]) -> ShardRecord:
    """The record beside a shard output; DataFormatError when it is missing or damaged."""
    path = _record_path(output)
    if not path.is_file():
        raise DataFormatError(
            f"{output}: no shard record {path.name} beside it (merge joins the outputs of 'braggml find --shard i/N')"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.pop("format") != _RECORD_FORMAT:
            raise ValueError("unknown format")
        return ShardRecord(
            identity=str(data["identity"]),
            shard=(int(data["shard"][0]), int(data["shard"][1])),
            frame_range=(int(data["frame_range"][0]), int(data["frame_range"][1])),
            n_total_frames=int(data["n_total_frames"]),
            frame_shape=(int(data["frame_shape"][0]), int(data["frame_shape"][1])),
            job=dict(data["job"]),
            summary=dict(data.get("summary", {})),
        )
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise DataFormatError(f"{path}: damaged shard record ({exc})") from None


def summary_to_dict(summary: RunSummary) -> dict[str, Any]:
    """A :class:`~braggml.pipeline.RunSummary` as JSON-ready values."""
    return {
        "n_frames": summary.n_frames,
        "n_hits": summary.n_hits,
        "n_peaks": summary.n_peaks,
        "seconds": summary.seconds,
        "rejected": dict(summary.rejected),
        "failures": list(summary.failures),
    }


def expand_shard_paths(paths: Sequence[str]) -> list[str]:
    """Shard output names with globs expanded (sorted), each once; InputNotFoundError for missing ones."""
    out: list[str] = []
    for p in paths:
        if any(ch in p for ch in "*?[") and not os.path.exists(p):
            matches = sorted(glob.glob(p))
            if not matches:
                raise InputNotFoundError(f"no shard outputs match {p!r}")
            out.extend(matches)
        else:
            if not os.path.isfile(p):
                raise InputNotFoundError(f"{p}: no such shard output")
            out.append(p)
    return list(dict.fromkeys(out))


def merge_shards(
    paths: Sequence[str], *, dials_experiments: str | os.PathLike[str] | None = None
) -> tuple[PeakList, RunSummary, ShardRecord]:
    """Join shard outputs of one run into the peaks of the whole run.

    A DIALS reflection table records neither the frames without spots after its last spot nor where its frames
    come from: the shard's record gives its frame count, and the run's inputs (when they can be opened here) the
    frames' files.

    Parameters
    ----------
    paths : sequence of str
        Shard outputs (globs allowed), in any order.
    dials_experiments : str or path-like, optional
        The DIALS experiment list that places the spots of ``.refl`` shards on several panels.

    Returns
    -------
    peaks : PeakList
        The whole run's peaks, frames numbered as in a single run.
    summary : RunSummary
        The shards' summaries added up (``seconds`` is their sum: CPU time, not wall time).
    record : ShardRecord
        Shard 0's record (run settings, frame shape).

    Raises
    ------
    DataFormatError
        A shard has no record, belongs to another run, is missing, is given twice, or holds a different number
        of frames than its record says.
    """
    from ..io.peaklists import peak_format, read_peaks

    files = expand_shard_paths(paths)
    if not files:
        raise ConfigError("no shard outputs given")
    records = [(read_shard_record(f), f) for f in files]
    first, first_file = records[0]
    count = first.shard[1]
    by_index: dict[int, tuple[ShardRecord, str]] = {}
    for rec, f in records:
        if rec.identity != first.identity or rec.n_total_frames != first.n_total_frames:
            raise DataFormatError(f"{f} is a shard of a different run than {first_file} (other inputs or settings)")
        if rec.shard[1] != count:
            raise DataFormatError(f"{f} is shard {rec.shard[0]}/{rec.shard[1]}, {first_file} one of {count} shards")
        if rec.shard[0] in by_index:
            raise DataFormatError(f"shard {rec.shard[0]}/{count} given twice: {by_index[rec.shard[0]][1]} and {f}")
        by_index[rec.shard[0]] = (rec, f)
    missing = sorted(set(range(count)) - set(by_index))
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        raise DataFormatError(f"{len(missing)} of {count} shards missing: {shown}")
    parts: list[PeakList] = []
    run_refs: list[Any] | None = None
    summary = RunSummary(min_peaks=int(first.job.get("min_peaks", 1)))
    position = 0
    for i in range(count):
        rec, f = by_index[i]
        expected = Shard(i, count).frame_range(rec.n_total_frames)
        if tuple(rec.frame_range) != expected or rec.frame_range[0] != position:
            raise DataFormatError(f"{f}: shard {i}/{count} covers frames {rec.frame_range}, expected {expected}")
        peaks = read_peaks(f, dials_experiments=dials_experiments)
        n = rec.frame_range[1] - rec.frame_range[0]
        if peak_format(f) == "refl" and peaks.n_frames <= n:
            run_refs = _run_refs(rec) if run_refs is None else run_refs  # read once, for the first such shard
            refs = run_refs[rec.frame_range[0] : rec.frame_range[1]]
            peaks = replace(peaks, n_frames=n, frames=tuple(refs) if len(refs) == n else peaks.frames)
        if peaks.n_frames != n:
            raise DataFormatError(f"{f}: holds {peaks.n_frames} frames, its record says {n}")
        parts.append(peaks)
        position = rec.frame_range[1]
        s = rec.summary
        summary.n_frames += int(s.get("n_frames", n))
        summary.n_hits += int(s.get("n_hits", 0))
        summary.n_peaks += int(s.get("n_peaks", len(peaks)))
        summary.seconds += float(s.get("seconds", 0.0))
        summary.failures.extend(str(x) for x in s.get("failures", []))
        for cause, c in dict(s.get("rejected", {})).items():
            summary.rejected[cause] = summary.rejected.get(cause, 0) + int(c)
    summary.failures = list(dict.fromkeys(summary.failures))  # a damaged input file is reported by every shard
    return PeakList.concatenate(parts), summary, by_index[0][0]
