"""Interrupted runs resume to the same output; damaged frames and files are reported while the run goes on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from parallel_frames import corrupt_frame, spots_of, write_cxi

from braggml.cli import main
from braggml.io.peaklists import read_peaks
from braggml.parallel import ExecutionConfig, run_find
from braggml.parallel.resume import parts_folder
from braggml.pipeline import FindJob, PreparedRun


class _Crash(Exception):
    pass


def _job(files, **kw) -> FindJob:
    return FindJob(inputs=tuple(map(str, files)), finder="peakfinder8", **kw)


def test_interrupted_run_resumes_to_the_same_peaks(run_files, tmp_path: Path):
    run = PreparedRun(_job(run_files), warn_without_geometry=False)
    reference, _ = run.run()
    out = tmp_path / "peaks.h5"
    computed: list[tuple[int, int]] = []

    def crash_after_three(result) -> None:
        computed.append((result.start, result.stop))
        if len(computed) == 3:
            raise _Crash

    config = ExecutionConfig(workers=1, chunk_frames=3)
    with pytest.raises(_Crash):
        run_find(run, config, output=out, on_chunk=crash_after_three)
    folder = parts_folder(out)
    assert len(list(folder.glob("*.npz"))) == 3 and (folder / "manifest.json").is_file()

    # Restart with two workers and no chunk size: the interrupted run's plan is kept, its chunks are skipped.
    again: list[tuple[int, int]] = []
    outcome = run_find(run, ExecutionConfig(workers=2), output=out, on_chunk=lambda r: again.append((r.start, r.stop)))
    assert outcome.resumed_frames == 9
    assert sorted(again) == [
        c
        for c in [(0, 3), (3, 6), (6, 9), (9, 12), (12, 13), (13, 16), (16, 19), (19, 22), (22, 24)]
        if c not in computed
    ]
    assert outcome.peaks.equals(reference) and outcome.peaks.frames == reference.frames
    assert outcome.summary.n_frames == 24 and outcome.summary.n_peaks == len(reference)
    outcome.finish()
    assert not folder.exists()


def test_changed_settings_do_not_reuse_parts(run_files, tmp_path: Path):
    out = tmp_path / "peaks.h5"
    run = PreparedRun(_job(run_files), warn_without_geometry=False)

    def crash(result) -> None:
        raise _Crash

    with pytest.raises(_Crash):
        run_find(run, ExecutionConfig(chunk_frames=4), output=out, on_chunk=crash)
    strict = PreparedRun(_job(run_files, params=(("adc_threshold", 1e6),)), warn_without_geometry=False)
    outcome = run_find(strict, ExecutionConfig(chunk_frames=4), output=out)
    assert outcome.resumed_frames == 0 and len(outcome.peaks) == 0
    with pytest.raises(_Crash):
        run_find(run, ExecutionConfig(chunk_frames=4), output=out, on_chunk=crash)
    assert run_find(run, ExecutionConfig(chunk_frames=4), output=out, resume=False).resumed_frames == 0


def test_an_edited_event_list_does_not_reuse_parts(run_files, tmp_path: Path):
    """Parts of a run over an event list are reused only while the list is the one they were computed from."""
    listing = tmp_path / "frames.lst"
    listing.write_text("".join(f"{f} //{k}\n" for f in run_files for k in range(3)))
    out = tmp_path / "peaks.h5"
    run = PreparedRun(_job([listing]), warn_without_geometry=False)

    def crash(result) -> None:
        raise _Crash

    with pytest.raises(_Crash):
        run_find(run, ExecutionConfig(chunk_frames=2), output=out, on_chunk=crash)
    assert run_find(run, ExecutionConfig(chunk_frames=2), output=out).resumed_frames == 2
    out = tmp_path / "again.h5"
    with pytest.raises(_Crash):
        run_find(run, ExecutionConfig(chunk_frames=2), output=out, on_chunk=crash)
    listing.write_text("".join(f"{f} //{k}\n" for f in run_files for k in (2, 1, 0)))
    os.utime(listing, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))  # a new mtime even on coarse clocks
    edited = PreparedRun(_job([listing]), warn_without_geometry=False)
    outcome = run_find(edited, ExecutionConfig(chunk_frames=2), output=out)
    assert outcome.resumed_frames == 0
    assert [ref.index for ref in outcome.peaks.frames[:3]] == [2, 1, 0]


_SLOW_FIND = """
import sys, time
import braggml.pipeline as pipeline
original = pipeline.PreparedRun.run
def slow(self, *args, **kwargs):
    time.sleep(0.25)
    return original(self, *args, **kwargs)
pipeline.PreparedRun.run = slow
from braggml.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_run_killed_with_sigkill_resumes(run_files, tmp_path: Path, capsys):
    files = list(map(str, run_files))
    reference = tmp_path / "reference.h5"
    assert main(["find", *files, "-o", str(reference), "-q"]) == 0
    out = tmp_path / "peaks.h5"
    argv = ["find", *files, "--chunk-frames", "2", "-o", str(out), "-q"]
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_FIND, *argv], stderr=subprocess.DEVNULL)
    folder = parts_folder(out)
    deadline = time.monotonic() + 60
    try:
        while len(list(folder.glob("*.npz"))) < 3:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    assert main(["find", *files, "--chunk-frames", "2", "-o", str(out)]) == 0
    assert "frames were taken from an interrupted run" in capsys.readouterr().out
    a, b = read_peaks(out), read_peaks(reference)
    assert a.equals(b) and a.frames == b.frames
    assert not folder.exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_corrupt_frame_is_reported_and_the_rest_processed(tmp_path: Path, capsys, workers: int):
    clean = write_cxi(tmp_path / "clean.cxi", 10)
    damaged = write_cxi(tmp_path / "damaged.cxi", 10)
    corrupt_frame(damaged, 6)
    out_clean, out_damaged = tmp_path / "clean.h5", tmp_path / "damaged.h5"
    assert main(["find", str(clean), "-o", str(out_clean), "-q"]) == 0
    argv = ["find", str(damaged), "--workers", str(workers), "--chunk-frames", "3", "-o", str(out_damaged)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "failures: 1" in printed and "damaged.cxi" in printed and "frame 6" in printed
    good, bad = read_peaks(out_clean), read_peaks(out_damaged)
    assert bad.n_frames == 10 and bad.counts_per_frame()[6] == 0
    for k in range(10):
        if k != 6:
            assert bad.for_frame(k).equals(good.for_frame(k)), k
            assert len(good.for_frame(k)) == len(spots_of(k))


def test_unreadable_file_is_left_out_and_reported(run_files, tmp_path: Path, capsys):
    broken = tmp_path / "broken.cxi"
    broken.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(np.random.default_rng(1).integers(0, 256, 400, np.uint8)))
    out = tmp_path / "peaks.h5"
    assert main(["find", str(run_files[0]), str(broken), str(run_files[1]), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "broken.cxi: unreadable file, left out" in printed
    peaks = read_peaks(out)
    assert peaks.n_frames == 24
    assert {ref.file for ref in peaks.frames} == {str(run_files[0]), str(run_files[1])}


def test_dying_worker_is_reported_and_the_run_goes_on(run_files, monkeypatch):
    import parallel_frames

    from braggml.parallel import execute

    run = PreparedRun(_job(run_files), warn_without_geometry=False)
    reference, _ = run.run()
    monkeypatch.setattr(execute, "process_chunk", parallel_frames.crash_on_frame_3)
    outcome = run_find(run, ExecutionConfig(workers=2, chunk_frames=2))
    failures = outcome.summary.failures
    assert len(failures) == 2 and "//2" in failures[0] and "//3" in failures[1]
    assert "worker process died" in failures[0]
    for k in range(24):
        if k not in (2, 3):
            assert outcome.peaks.for_frame(k).equals(reference.for_frame(k)), k
    assert len(outcome.peaks.for_frame(2)) == 0 and outcome.peaks.n_frames == 24
