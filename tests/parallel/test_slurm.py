"""SLURM job arrays: the script follows the options; shards merged equal a single run; bad shard sets rejected."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest

from braggml.cli import main
from braggml.errors import ConfigError
from braggml.io.peaklists import read_event_list, read_peaks
from braggml.parallel.slurm import SlurmArrayConfig, array_script, read_shard_record, shard_output
from braggml.pipeline import FindJob, PreparedRun


def _directives(script: str) -> list[str]:
    return [line[len("#SBATCH ") :] for line in script.splitlines() if line.startswith("#SBATCH ")]


def test_dry_run_script_follows_the_options(run_files, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [
        "slurm",
        "find",
        str(run_files[0]),
        "run_b*.cxi",
        "--finder",
        "peakfinder8",
        "--adc-threshold",
        "60",
        "--min-peaks",
        "2",
        "--hits-out",
        "hits.lst",
        "-o",
        "out.h5",
        "--array",
        "8",
        "--partition",
        "gpu",
        "--qos",
        "high",
        "--time",
        "1-02:00",
        "--cpus-per-task",
        "4",
        "--mem",
        "8G",
        "--gpus-per-task",
        "1",
        "--job-name",
        "lyso",
        "--max-running",
        "3",
        "--setup",
        "module load hdf5",
        "--dry-run",
        "--no-resume",
        "--beam-center",
        "48",
        "56.5",
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    array, merge = text.split("# ---- merge job")
    assert _directives(array) == [
        "--job-name=lyso",
        "--output=%x_%A_%a.out",
        "--error=%x_%A_%a.err",
        "--array=0-7%3",
        "--partition=gpu",
        "--qos=high",
        "--time=1-02:00",
        "--ntasks=1",
        "--cpus-per-task=4",
        "--mem=8G",
        "--gres=gpu:1",
    ]
    run_line = array.strip().splitlines()[-1]
    words = shlex.split(run_line.replace("${SLURM_ARRAY_TASK_ID}", "5").replace("${SLURM_CPUS_PER_TASK:-1}", "4"))
    assert words[1:4] == ["-m", "braggml", "find"]
    assert words[words.index("--shard") + 1] == "5/8"
    assert words[words.index("-o") + 1] == "out.shard-5.h5"
    assert words[words.index("--workers") + 1] == "4"
    assert words[words.index("--adc-threshold") + 1] == "60" and words[words.index("--min-peaks") + 1] == "2"
    assert words[-3:] == ["--", str(run_files[0]), "run_b*.cxi"]
    assert "--no-resume" in words and words[words.index("--beam-center") + 1 : words.index("--beam-center") + 3] == [
        "48.0",
        "56.5",
    ]
    assert "--hits-out" not in words  # the merge job writes the hit list of the whole run
    assert "module load hdf5" in array and f"cd {tmp_path}" in array
    assert "--dependency" not in merge and "--array" not in merge
    assert re.search(r"merge 'out\.shard-\*\.h5' -o out\.h5 --hits-out hits\.lst", merge)
    assert not list(tmp_path.glob("*.sbatch"))  # a dry run writes nothing
    # a DIALS table: the tasks and the merge are given the experiment list
    (tmp_path / "imported.expt").write_text(json.dumps({"experiment": [{}]}))
    argv = ["slurm", "find", str(run_files[0]), "-o", "s.refl", "--dials-expt", "imported.expt", "--array", "2"]
    assert main([*argv, "--dry-run"]) == 0
    array, merge = capsys.readouterr().out.split("# ---- merge job")
    assert "--dials-expt imported.expt" in array.strip().splitlines()[-1]
    assert re.search(r"merge 's\.shard-\*\.refl' -o s\.refl --dials-expt imported\.expt", merge)


def test_bad_slurm_options(run_files, tmp_path: Path, capsys):
    f, out = str(run_files[0]), str(tmp_path / "o.h5")
    for extra, message in (
        (["--array", "2", "--time", "two hours"], "--time"),
        (["--array", "2", "--job-name", "a b"], "--job-name"),
        (["--array", "2", "--shard", "0/2"], "sets --shard itself"),
    ):
        assert main(["slurm", "find", f, "-o", out, *extra, "--dry-run"]) == 2
        assert message in capsys.readouterr().err
    assert main(["slurm", "find", f, "--array", "2", "--dry-run"]) == 2
    assert "needs -o" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--array"):
        SlurmArrayConfig(array=0)


_FAKE_SBATCH = """#!/bin/sh
echo "$@" >> "{log}"
case "$*" in *dependency*) echo 1002;; *) echo 1001;; esac
"""


def test_submitted_array_and_merge_equal_a_single_run(run_files, tmp_path: Path, capsys, monkeypatch):
    """Submit through a stand-in sbatch, run every array task and the merge job as SLURM would."""
    monkeypatch.chdir(tmp_path)
    files = list(map(str, run_files))
    assert main(["find", *files, "-o", "single.h5", "--hits-out", "single.lst", "-q"]) == 0
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(_FAKE_SBATCH.format(log=tmp_path / "sbatch.log"))
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    argv = ["slurm", "find", *files, "-o", "merged.h5", "--hits-out", "merged.lst", "--array", "3", "--submit"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "submitted job array 1001" in printed and "merge job 1002" in printed
    calls = (tmp_path / "sbatch.log").read_text().splitlines()
    assert calls == ["--parsable braggml-find.sbatch", "--parsable --dependency=afterok:1001 braggml-find.merge.sbatch"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for task in range(3):
        done = subprocess.run(
            ["bash", "braggml-find.sbatch"], env={**env, "SLURM_ARRAY_TASK_ID": str(task)}, capture_output=True
        )
        assert done.returncode == 0, done.stderr.decode()
    assert sorted(p.name for p in tmp_path.glob("merged.shard-*.h5")) == [f"merged.shard-{i}.h5" for i in range(3)]
    done = subprocess.run(["bash", "braggml-find.merge.sbatch"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "merged 3 shards" in done.stdout and "frames: 24" in done.stdout
    a, b = read_peaks("merged.h5"), read_peaks("single.h5")
    assert a.equals(b) and a.frames == b.frames
    assert read_event_list("merged.lst") == read_event_list("single.lst")


def test_sbatch_missing_is_one_error_line(run_files, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["slurm", "find", str(run_files[0]), "-o", "o.h5", "--array", "2", "--submit"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sbatch not found" in err[0]
    assert (tmp_path / "braggml-find.sbatch").is_file()


@pytest.fixture()
def shards(run_files, tmp_path: Path) -> list[Path]:
    files = list(map(str, run_files))
    outs = []
    for i in range(4):
        out = Path(shard_output(tmp_path / "p.csv", i))
        assert main(["find", *files, "--shard", f"{i}/4", "-o", str(out), "-q"]) == 0
        outs.append(out)
    return outs


def test_merge_equals_single_run_and_checks_the_set(shards, run_files, tmp_path: Path, capsys):
    files = list(map(str, run_files))
    single = tmp_path / "single.stream"
    assert main(["find", *files, "-o", str(single), "-q"]) == 0
    merged = tmp_path / "merged.stream"
    assert main(["merge", *map(str, reversed(shards)), "-o", str(merged), "-q"]) == 0
    a, b = read_peaks(merged), read_peaks(single)
    assert a.equals(b, atol=0.006) and a.frames == b.frames  # stream positions are written to 0.01 px
    assert merged.read_text().split("----- Begin chunk", 1)[1] == single.read_text().split("----- Begin chunk", 1)[1]

    def error(argv) -> str:
        assert main(argv) == 2
        return capsys.readouterr().err.strip()

    out = str(tmp_path / "m.csv")
    assert "1 of 4 shards missing: 2" in error(["merge", str(shards[0]), str(shards[1]), str(shards[3]), "-o", out])
    copy = tmp_path / "copy.csv"
    shutil.copyfile(shards[0], copy)
    shutil.copyfile(str(shards[0]) + ".shard.json", str(copy) + ".shard.json")
    assert "given twice" in error(["merge", *map(str, shards), str(copy), "-o", out])
    other = tmp_path / "other.shard-1.csv"
    assert main(["find", *files, "--adc-threshold", "500", "--shard", "1/4", "-o", str(other), "-q"]) == 0
    assert "different run" in error(["merge", str(shards[0]), str(other), "-o", out])
    assert "no shard record" in error(["merge", str(single), "-o", out])
    assert "no shard outputs match" in error(["merge", str(tmp_path / "none*.csv"), "-o", out])
    # a DIALS table of the merged run: one rotation sequence where the experiment list says so
    expt = tmp_path / "imported.expt"
    expt.write_text(json.dumps({"experiment": [{"identifier": "seq"}], "imageset": [{"__id__": "ImageSequence"}]}))
    refl = tmp_path / "merged.refl"
    assert main(["merge", *map(str, shards), "-o", str(refl), "--dials-expt", str(expt), "-q"]) == 0
    merged = read_peaks(refl)
    assert np.array_equal(merged.frame, b.frame) and len(merged) == len(b) > 0
    assert np.allclose(merged.row, b.row, atol=0.006) and np.allclose(merged.col, b.col, atol=0.006)
    _tag, _version, table = msgpack.unpackb(refl.read_bytes(), raw=False, strict_map_key=False)
    assert table["identifiers"] == {0: "seq"} and set(np.frombuffer(table["data"]["id"][1][1], "<i4")) == {0}
    assert "--dials-expt goes with a DIALS reflection table" in error(
        ["merge", *map(str, shards), "-o", out, "--dials-expt", str(expt)]
    )


def test_dask_jobqueue_worker_script_follows_the_options():
    pytest.importorskip("dask_jobqueue")
    from braggml.parallel.dask_backend import DaskConfig, slurm_job_script

    config = DaskConfig(
        cluster="slurm",
        partition="gpu",
        qos="high",
        account="mx123",
        walltime="02:00:00",
        cores_per_job=4,
        memory_per_job="8GiB",
        gpus_per_job=2,
    )
    script = slurm_job_script(config)
    for expected in (
        "#SBATCH -p gpu",
        "#SBATCH -A mx123",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH -t 02:00:00",
        "#SBATCH --qos=high",
        "#SBATCH --gres=gpu:2",
        "--nworkers 4",
        "--nthreads 1",
    ):
        assert expected in script, expected
    with pytest.raises(ConfigError, match="walltime"):
        DaskConfig(cluster="slurm", walltime="soon")
    with pytest.raises(ConfigError, match="not both"):
        DaskConfig(cluster="slurm", address="tcp://host:8786")


def test_array_script_uses_given_workers():
    script = array_script(
        SlurmArrayConfig(array=2),
        ["--workers", "3", "--", "a.h5"],
        "o.h5",
        has_workers=True,
        command=["braggml"],
        workdir="/data",
    )
    assert "SLURM_CPUS_PER_TASK" not in script
    assert script.splitlines()[-1].startswith("braggml find --shard")


def test_shard_record_keeps_what_the_run_learned(tmp_path: Path):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from parallel_frames import write_ring_cxi

    data = write_ring_cxi(tmp_path / "tiles.cxi", 6, gap_cols=(84, 90), right_offset=8.0)
    out = Path(shard_output(tmp_path / "p.csv", 1))
    assert main(["find", str(data), "--shard", "1/2", "-o", str(out), "-q"]) == 0
    job = read_shard_record(out).find_job()
    assert len(job.derived_panels) == 2 and job.refined_beam_center_rowcol is not None
    run = PreparedRun(FindJob(inputs=(str(data),)), warn_without_geometry=False)
    assert job == run.job
    merged = tmp_path / "m.stream"
    assert main(["find", str(data), "--shard", "0/2", "-o", str(shard_output(tmp_path / "p.csv", 0)), "-q"]) == 0
    assert main(["merge", str(tmp_path / "p.shard-*.csv"), "-o", str(merged), "-q"]) == 0


def test_dials_table_shards_merge_with_their_empty_frames(tmp_path: Path, capsys):
    """A .refl shard records neither its trailing frames without spots nor where its frames come from: the merge
    takes the frame count from the shard's record and the frames from the run's inputs."""
    rng = np.random.default_rng(0)
    frames = rng.poisson(5.0, (6, 64, 64)).astype(np.int32)
    frames[:4, 30:33, 30:33] += 400  # frames 4 and 5, the end of shard 1, hold no spot
    np.save(tmp_path / "run.npy", frames)
    run = str(tmp_path / "run.npy")
    for i in range(2):
        out = str(tmp_path / f"m.shard-{i}.refl")
        assert main(["find", run, "--shard", f"{i}/2", "-o", out, "--min-peaks", "1", "-q"]) == 0
    hits = tmp_path / "hits.lst"
    merged = tmp_path / "merged.refl"
    assert main(["merge", str(tmp_path / "m.shard-*.refl"), "-o", str(merged), "--hits-out", str(hits), "-q"]) == 0
    assert read_peaks(merged).frame.tolist() == [0, 1, 2, 3]
    assert [(r.index) for r in read_event_list(hits)] == [0, 1, 2, 3]
    assert main(["find", run, "-o", str(tmp_path / "single.refl"), "--min-peaks", "1", "-q"]) == 0
    assert read_peaks(merged).equals(read_peaks(tmp_path / "single.refl"))
