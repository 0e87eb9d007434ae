"""Local worker processes and Dask give exactly the peaks of a one-worker run."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from parallel_frames import HOT_PIXELS, chunk_without_setup_work, spots_of, write_hot_cxi, write_ring_cxi

from braggml.cli import main
from braggml.errors import ConfigError
from braggml.io.peaklists import read_peaks
from braggml.parallel import ExecutionConfig, run_find
from braggml.peaks import PeakList
from braggml.pipeline import FindJob, PreparedRun


def _job(files: list[Path], **kw) -> FindJob:
    return FindJob(inputs=tuple(map(str, files)), finder="peakfinder8", **kw)


def _assert_same(a, b) -> None:
    assert a.equals(b)
    assert a.frames == b.frames


def _assert_spots_found(peaks) -> None:
    for k in range(peaks.n_frames):
        sel = peaks.frame == k
        assert int(sel.sum()) == len(spots_of(k)), k
        for r, c in spots_of(k):
            assert np.min(np.hypot(peaks.row[sel] - r, peaks.col[sel] - c)) < 0.5


def test_two_workers_equal_one(run_files):
    run = PreparedRun(_job(run_files), warn_without_geometry=False)
    reference, ref_summary = run.run()
    _assert_spots_found(reference)
    outcome = run_find(run, ExecutionConfig(workers=2, chunk_frames=3))
    _assert_same(outcome.peaks, reference)
    assert outcome.summary.n_frames == 24 and outcome.summary.n_peaks == ref_summary.n_peaks
    assert outcome.summary.n_hits == ref_summary.n_hits and not outcome.summary.failures
    assert outcome.n_chunks == 9  # 13 + 11 frames in chunks of 3 that never cross a file


def test_beam_centre_refined_once_for_all_workers(tmp_path: Path):
    from braggml.parallel.execute import _ProcessBackend

    files = [write_ring_cxi(tmp_path / "rings.cxi", 8)]
    run = PreparedRun(_job(files), warn_without_geometry=False)
    centre = run.job.refined_beam_center_rowcol
    assert centre == pytest.approx((20.3, 95.7), abs=1.0) and run.job.derived_panels == ()
    reference, _ = run.run()
    _assert_spots_found(reference)
    backend = _ProcessBackend(run, 2, None, task=chunk_without_setup_work)
    try:
        results = sorted(backend.map_unordered(run_chunks := _chunks(8, 3)), key=lambda r: r.start)
    finally:
        backend.close()
    assert [(r.start, r.stop) for r in results] == [(c.start, c.stop) for c in run_chunks]
    peaks = PeakList.concatenate([r.peaks for r in results], frames=reference.frames)
    _assert_same(peaks, reference)
    outcome = run_find(run, ExecutionConfig(workers=2, chunk_frames=3))
    _assert_same(outcome.peaks, reference)


def test_hot_pixels_found_once_and_masked_in_every_worker(tmp_path: Path):
    from braggml.parallel.execute import _ProcessBackend

    files = [write_hot_cxi(tmp_path / "hot.cxi", 12)]
    one_pixel = (("min_pixel_count", 1),)  # so that a lone bright pixel is a peak when not masked
    run = PreparedRun(_job(files, params=one_pixel), warn_without_geometry=False)
    assert run.job.hot_pixel_frames == 12
    assert sorted(map(tuple, run.hot_pixels.rowcol.tolist())) == [(r, c) for r, c, _ in HOT_PIXELS]
    assert all(run.mask[r, c] for r, c, _ in HOT_PIXELS)
    reference, _ = run.run()
    _assert_spots_found(reference)  # the spots alone: no peak at a hot pixel
    backend = _ProcessBackend(run, 2, None, task=chunk_without_setup_work)
    try:
        results = sorted(backend.map_unordered(_chunks(12, 5)), key=lambda r: r.start)
    finally:
        backend.close()
    _assert_same(PeakList.concatenate([r.peaks for r in results], frames=reference.frames), reference)

    unmasked, _ = PreparedRun(
        _job(files, params=one_pixel, search_hot_pixels=False), warn_without_geometry=False
    ).run()
    for r, c, _ in HOT_PIXELS:
        assert np.sum(np.hypot(unmasked.row - r, unmasked.col - c) < 0.5) >= 10, (r, c)


def _chunks(n: int, size: int):
    from braggml.parallel.plan import plan_chunks

    return plan_chunks([(0, n)], size)


def test_dask_local_cluster_equals_one_worker(run_files):
    pytest.importorskip("distributed")
    from braggml.parallel.dask_backend import DaskConfig

    run = PreparedRun(_job(run_files), warn_without_geometry=False)
    reference, _ = run.run()
    config = ExecutionConfig(workers=2, scheduler="dask", chunk_frames=4, dask=DaskConfig(processes=False))
    outcome = run_find(run, config)
    _assert_same(outcome.peaks, reference)
    assert outcome.summary.n_peaks == len(reference)


def test_cli_workers_and_split_output(run_files, tmp_path: Path, capsys):
    one, two = tmp_path / "one.h5", tmp_path / "two.csv"
    files = list(map(str, run_files))
    assert main(["find", *files, "--finder", "peakfinder8", "-o", str(one), "-q"]) == 0
    assert main(["find", *files, "--finder", "peakfinder8", "--workers", "2", "-o", str(two), "-q"]) == 0
    _assert_same(read_peaks(two), read_peaks(one))
    assert not any(p.name.endswith(".parts") for p in tmp_path.iterdir())  # resume store removed
    folder = tmp_path / "per_file"
    folder.mkdir()
    assert main(["find", *files, "--finder", "peakfinder8", "--split-output", "-o", str(folder)]) == 0
    a, b = read_peaks(folder / "run_a_peaks.h5"), read_peaks(folder / "run_b_peaks.h5")
    assert (a.n_frames, b.n_frames) == (13, 11)
    whole = read_peaks(one)
    _assert_same(a, PeakList.concatenate([whole.for_frame(k) for k in range(13)]))
    assert b.frames[0].index == 0 and b.frames[0].file.endswith("run_b.cxi")
    assert "run_b_peaks.h5" in capsys.readouterr().out


def test_cli_dask_processes(run_files, tmp_path: Path):
    pytest.importorskip("distributed")
    one, dask_out = tmp_path / "one.h5", tmp_path / "dask.h5"
    files = list(map(str, run_files))
    assert main(["find", *files, "-o", str(one), "-q"]) == 0
    argv = ["find", *files, "--scheduler", "dask", "--workers", "2", "-o", str(dask_out), "-q"]
    assert main(argv) == 0
    _assert_same(read_peaks(dask_out), read_peaks(one))


def _error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_bad_parallel_options(run_files, tmp_path: Path, capsys, monkeypatch):
    f = str(run_files[0])
    out = str(tmp_path / "p.h5")
    assert "--shard expects i/N" in _error(["find", f, "--shard", "4/4", "-o", out], capsys)
    assert "need --scheduler dask" in _error(["find", f, "--scheduler-address", "tcp://x:1"], capsys)
    assert "--resume needs -o" in _error(["find", f, "--resume"], capsys)
    assert "{stem}" in _error(["find", f, "--split-output", "-o", out], capsys)
    assert "cannot be combined" in _error(["find", f, "--split-output", "--shard", "0/2", "-o", out], capsys)
    with pytest.raises(SystemExit):
        main(["find", f, "--workers", "0"])
    assert "--workers" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "distributed", None)  # Dask not installed
    assert "pip install" in _error(["find", f, "--scheduler", "dask", "-o", out], capsys)
    with pytest.raises(ConfigError, match="workers"):
        ExecutionConfig(workers=0)


def test_cli_joins_a_running_dask_scheduler(run_files, tmp_path: Path):
    distributed = pytest.importorskip("distributed")
    one, joined = tmp_path / "one.h5", tmp_path / "joined.h5"
    files = list(map(str, run_files))
    assert main(["find", *files, "-o", str(one), "-q"]) == 0
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None)
    with cluster:
        argv = ["find", *files, "--scheduler", "dask", "--scheduler-address", cluster.scheduler_address]
        assert main([*argv, "-o", str(joined), "-q"]) == 0
    _assert_same(read_peaks(joined), read_peaks(one))


def test_split_output_names(tmp_path: Path):
    from braggml.parallel.cli_support import split_outputs

    names = split_outputs(str(tmp_path / "{stem}.stream"), ["a/lyso.0001.cbf.gz", "b/lyso.0002.cbf"], None)
    assert names == {
        "a/lyso.0001.cbf.gz": str(tmp_path / "lyso.0001.stream"),
        "b/lyso.0002.cbf": str(tmp_path / "lyso.0002.stream"),
    }
    assert split_outputs(str(tmp_path), ["x/run_7.h5"], "csv") == {"x/run_7.h5": str(tmp_path / "run_7_peaks.csv")}
    with pytest.raises(ConfigError, match="would both write"):
        split_outputs(str(tmp_path / "{stem}.h5"), ["a/x.h5", "b/x.h5"], None)


def test_every_shard_masks_the_same_hot_pixels(tmp_path: Path, capsys):
    import json

    files = [str(write_hot_cxi(tmp_path / "hot_a.cxi", 7)), str(write_hot_cxi(tmp_path / "hot_b.cxi", 6, first=7))]
    one_pixel = ["--min-pixel-count", "1", "-q"]
    assert main(["find", *files, "-o", str(tmp_path / "single.h5"), *one_pixel]) == 0
    shards = [tmp_path / f"shard{i}.h5" for i in (0, 1)]
    for i, out in enumerate(shards):
        assert main(["find", *files, "--shard", f"{i}/2", "-o", str(out), *one_pixel]) == 0
    records = [json.loads(Path(f"{out}.shard.json").read_text()) for out in shards]
    hot = {int(r) * 112 + int(c) for r, c, _ in HOT_PIXELS}  # flat indices in frames of 112 columns
    assert [set(rec["job"]["hot_pixels"]) for rec in records] == [hot, hot]
    assert records[0]["identity"] == records[1]["identity"]
    merged = tmp_path / "merged.h5"
    assert main(["merge", *map(str, shards), "-o", str(merged), "-q"]) == 0
    a, b = read_peaks(merged), read_peaks(tmp_path / "single.h5")
    assert a.equals(b)
    _assert_spots_found(b)  # a file of 7 frames and one of 6: one run of 13, searched as a whole
