"""Following a run while it is written: new files are taken once they stop growing, and ``find --follow`` finds
the same peaks as a run over the finished files."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from braggml.cli import main
from braggml.errors import ConfigError
from braggml.io.peaklists import read_peaks
from braggml.parallel.follow import FollowConfig, follow_inputs


class FakeTime:
    """A clock that only moves when the follower sleeps, with file events at given times."""

    def __init__(self, events: dict[float, callable]) -> None:
        self.now = 1000.0
        self.events = sorted(events.items())

    def clock(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        while self.events and self.events[0][0] <= self.now:
            self.events.pop(0)[1]()


def _touch(path: Path, size: int, when: float) -> None:
    path.write_bytes(b"x" * size)
    os.utime(path, (when, when))


def test_batches_of_settled_new_files(tmp_path: Path) -> None:
    t = FakeTime({})
    _touch(tmp_path / "a_001.h5", 10, t.now - 100)  # at rest before the start: taken at once
    _touch(tmp_path / "b.txt", 10, t.now - 100)  # not matched
    t.events = [
        (1002.0, lambda: _touch(tmp_path / "a_002.h5", 5, 1002.0)),  # still being written ...
        (1004.0, lambda: _touch(tmp_path / "a_002.h5", 9, 1004.0)),  # ... grows ...
        (1004.0, lambda: _touch(tmp_path / "a_003.h5", 9, 1004.0)),
    ]
    config = FollowConfig(poll_s=1.0, settle_s=3.0, idle_s=5.0)
    batches = []
    for batch in follow_inputs([str(tmp_path / "a_*.h5")], config, clock=t.clock, sleep=t.sleep, wall=t.wall):
        batches.append(([Path(f).name for f in batch], t.now))
    # a_002 and a_003 stop changing at 1004 and are taken 3 s later, together; then 5 s idle ends it
    assert batches == [(["a_001.h5"], 1000.0), (["a_002.h5", "a_003.h5"], 1007.0)]
    assert t.now == 1012.0


def test_seen_files_and_datasets(tmp_path: Path) -> None:
    t = FakeTime({})
    for name in ("r1.h5", "r2.h5"):
        _touch(tmp_path / name, 10, t.now - 100)
    seen = {os.path.realpath(tmp_path / "r1.h5")}
    config = FollowConfig(poll_s=1.0, settle_s=2.0, idle_s=2.0)
    batches = list(follow_inputs([f"{tmp_path}/r*.h5::/entry/data/data"], config, seen=seen, clock=t.clock,
                                 sleep=t.sleep, wall=t.wall))
    assert batches == [[f"{tmp_path / 'r2.h5'}::/entry/data/data"]]
    assert seen == {os.path.realpath(tmp_path / name) for name in ("r1.h5", "r2.h5")}


def test_busy_caller_keeps_it_polling(tmp_path: Path) -> None:
    t = FakeTime({})
    pending = [3]  # the caller has something to try again for three more polls

    def busy() -> bool:
        pending[0] -= 1
        return pending[0] >= 0

    config = FollowConfig(poll_s=1.0, settle_s=0.0, idle_s=1.0)
    batches = list(follow_inputs([str(tmp_path / "*.h5")], config, busy=busy, clock=t.clock, sleep=t.sleep,
                                 wall=t.wall))
    assert batches == [[], [], []]  # an empty batch per poll while busy, then the idle second ends it
    assert t.now == 1003.0


def test_bad_settings() -> None:
    with pytest.raises(ConfigError, match="poll interval must be > 0"):
        FollowConfig(poll_s=0)
    with pytest.raises(ConfigError, match="idle_s must be >= 0"):
        FollowConfig(idle_s=-1)
    with pytest.raises(ConfigError, match="retry_s must be >= 0"):
        FollowConfig(retry_s=-1)


def _frames(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = rng.poisson(10.0, (2, 64, 80)).astype(np.int32)
    frames[:, 20 + seed : 23 + seed, 30:33] += 600
    return frames


def test_find_follow_takes_files_as_they_come(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    np.save(folder / "f_0.npy", _frames(0))

    def feed() -> None:  # the detector writes two more files while braggml follows
        for k in (1, 2):
            time.sleep(0.6)
            np.save(tmp_path / "tmp.npy", _frames(k))
            os.replace(tmp_path / "tmp.npy", folder / f"f_{k}.npy")

    writer = threading.Thread(target=feed)
    writer.start()
    out = tmp_path / "peaks.h5"
    argv = ["find", str(folder / "f_*.npy"), "-o", str(out), "--hits-out", str(tmp_path / "hits.lst"),
            "--min-peaks", "1", "--follow", "--follow-poll", "0.2", "--follow-idle", "2"]
    try:
        assert main(argv) == 0
    finally:
        writer.join()
    printed = capsys.readouterr().out
    assert printed.count("+1 files") + printed.count("+2 files") >= 2  # more than one batch
    followed = read_peaks(out)
    assert followed.n_frames == 6 and followed.counts_per_frame().tolist() == [1] * 6
    assert len((tmp_path / "hits.lst").read_text().splitlines()) == 6
    assert main(["find", str(folder / "f_*.npy"), "-o", str(tmp_path / "batch.h5"), "-q"]) == 0
    batch = read_peaks(tmp_path / "batch.h5")
    assert np.array_equal(followed.row, batch.row) and np.array_equal(followed.col, batch.col)


def test_find_follow_resumes_split_outputs_and_refuses_shards(tmp_path: Path, capsys, caplog) -> None:
    for k in range(3):
        np.save(tmp_path / f"f_{k}.npy", _frames(k))
    out = tmp_path / "out"
    out.mkdir()
    argv = ["find", str(tmp_path / "f_*.npy"), "-o", str(out), "--split-output", "--follow", "--follow-poll", "0.1",
            "--follow-idle", "0.3", "--follow-retry", "0.5"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"f_{k}_peaks.h5" for k in range(3)]
    (tmp_path / "f_3.npy").write_bytes(b"not an array")  # a damaged file is reported, and the run goes on
    (out / "f_1_peaks.h5").unlink()
    capsys.readouterr()
    assert main(argv) == 0  # a restart does only the file whose peak list is missing
    printed = capsys.readouterr().out
    assert "f_1.npy: 2 frames" in printed and "f_0.npy" not in printed and "f_2.npy" not in printed
    assert "failures: 1" in printed and "f_3.npy cannot be read yet" in caplog.text
    assert "f_3.npy: left out, still unreadable after 0.5 s" in caplog.text
    caplog.clear()
    assert main(argv) == 0  # a batch of damaged files alone is reported too, and following goes on
    assert "frames: 0" in capsys.readouterr().out and "f_3.npy: left out" in caplog.text
    assert main(["find", str(tmp_path / "f_*.npy"), "-o", str(tmp_path / "x.h5"), "--follow", "--shard", "0/2"]) == 2
    assert "--follow runs on this machine" in capsys.readouterr().err


def test_find_follow_does_not_take_its_own_outputs(tmp_path: Path, capsys) -> None:
    np.save(tmp_path / "f_0.npy", _frames(0))

    def feed() -> None:
        time.sleep(0.5)
        np.save(tmp_path / "f_1.npy", _frames(1))

    writer = threading.Thread(target=feed)
    writer.start()
    try:  # the glob matches everything in the folder, the peak lists written there included
        argv = ["find", str(tmp_path / "*"), "-o", str(tmp_path), "--split-output", "--plot", str(tmp_path / "r.png"),
                "--follow", "--follow-poll", "0.2", "--follow-idle", "1.5"]
        assert main(argv) == 0
    finally:
        writer.join()
    printed = capsys.readouterr().out
    assert "frames: 4" in printed and "failures" not in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f_0.npy", "f_0_peaks.h5", "f_1.npy", "f_1_peaks.h5", "r.png"]


def test_find_follow_finds_hot_pixels_over_small_batches(tmp_path: Path, capsys) -> None:
    # one frame per file, a few files at a time: no batch alone has the 8 frames the hot-pixel search needs
    rng = np.random.default_rng(9)

    def frame(k: int) -> np.ndarray:
        image = rng.poisson(10.0, (1, 64, 80)).astype(np.int32)
        image[0, 10 + 4 * k : 13 + 4 * k, 30:33] += 600  # a spot that moves
        image[0, 50, 60] += 800  # a hot pixel that does not
        return image

    def feed() -> None:
        for first in (3, 6, 9):
            time.sleep(0.5)
            for k in range(first, first + 3):
                np.save(tmp_path / "tmp.npy", frame(k))
                os.replace(tmp_path / "tmp.npy", tmp_path / f"f_{k:02d}.npy")

    for k in range(3):
        np.save(tmp_path / f"f_{k:02d}.npy", frame(k))
    writer = threading.Thread(target=feed)
    writer.start()
    out = tmp_path / "peaks.csv"
    try:
        argv = ["find", str(tmp_path / "f_*.npy"), "-o", str(out), "--min-pixel-count", "1", "--follow",
                "--follow-poll", "0.2", "--follow-idle", "2"]
        assert main(argv) == 0
    finally:
        writer.join()
    assert "hot pixels: 1 masked" in capsys.readouterr().out
    peaks = read_peaks(out)
    assert peaks.n_frames == 12
    at_hot = (np.rint(peaks.row) == 50) & (np.rint(peaks.col) == 60)
    # the first batches, before 8 frames were seen, still report it; every later one masks it
    assert at_hot[peaks.frame >= 8].sum() == 0 and at_hot.sum() < 8


def test_find_follow_resumes_a_single_output(tmp_path: Path, capsys) -> None:
    for k in range(2):
        np.save(tmp_path / f"f_{k}.npy", _frames(k))
    out = tmp_path / "peaks.h5"
    argv = ["find", str(tmp_path / "f_*.npy"), "-o", str(out), "--follow", "--follow-poll", "0.1",
            "--follow-idle", "0.3"]
    assert main(argv) == 0
    first = read_peaks(out)
    np.save(tmp_path / "f_2.npy", _frames(2))
    capsys.readouterr()
    assert main(argv) == 0  # started again: the frames already in the output are kept, their files not redone
    printed = capsys.readouterr().out
    assert "resumed: 4 frames of 2 files" in printed and "+1 files: 2 frames" in printed
    again = read_peaks(out)
    assert again.n_frames == 6 and np.array_equal(again.row[: len(first)], first.row)
    assert [Path(r.file).name for r in again.frames] == ["f_0.npy"] * 2 + ["f_1.npy"] * 2 + ["f_2.npy"] * 2
    # other settings are another run: nothing is taken from the output, every file is found again
    assert main([*argv, "--minimum-snr", "7"]) == 0
    printed = capsys.readouterr().out
    assert "resumed" not in printed and "+3 files: 6 frames" in printed


def test_find_follow_tries_a_file_again_until_it_can_be_read(tmp_path: Path, capsys, caplog) -> None:
    # a master file whose data file comes later, as an Eiger writes them: unreadable at first, then read
    import h5py

    with h5py.File(tmp_path / "run_master.h5", "w") as f:
        f["entry/data/data_000001"] = h5py.ExternalLink("run_data_000001.h5", "entry/data/data")
    os.utime(tmp_path / "run_master.h5", (time.time() - 60, time.time() - 60))  # at rest: taken at once

    def feed() -> None:
        time.sleep(1.0)
        with h5py.File(tmp_path / "tmp.h5", "w") as f:
            f["entry/data/data"] = _frames(0)
        os.replace(tmp_path / "tmp.h5", tmp_path / "run_data_000001.h5")

    writer = threading.Thread(target=feed)
    writer.start()
    out = tmp_path / "peaks.csv"
    try:
        argv = ["find", str(tmp_path / "*_master.h5"), "-o", str(out), "--follow", "--follow-poll", "0.2",
                "--follow-idle", "0.5"]
        assert main(argv) == 0
    finally:
        writer.join()
    assert "run_master.h5 cannot be read yet" in caplog.text
    assert "failures" not in capsys.readouterr().out
    assert read_peaks(out).counts_per_frame().tolist() == [1, 1]


def test_find_follow_resumes_a_dials_reflection_table(tmp_path: Path, capsys) -> None:
    """A ``.refl`` table does not say which file each image came from: the settings file beside it does, so a
    restart keeps its frames, frames without peaks at the end included, and does not read their files again."""
    import yaml

    np.save(tmp_path / "f_0.npy", _frames(0))
    np.save(tmp_path / "f_1.npy", np.random.default_rng(5).poisson(10.0, (2, 64, 80)).astype(np.int32))  # no peak
    out = tmp_path / "strong.refl"
    argv = ["find", str(tmp_path / "f_*.npy"), "-o", str(out), "--follow", "--follow-poll", "0.1",
            "--follow-idle", "0.3"]
    assert main(argv) == 0
    first = read_peaks(out)
    assert first.frames is None and first.n_frames == 2 and len(first) > 0
    recorded = yaml.safe_load(Path(str(out) + ".yaml").read_text())["frames"]
    assert [(Path(r["file"]).name, r["first"], r["count"]) for r in recorded] == [("f_0.npy", 0, 2), ("f_1.npy", 0, 2)]
    np.save(tmp_path / "f_2.npy", _frames(2))
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "resumed: 4 frames of 2 files" in printed and "+1 files: 2 frames" in printed
    again = read_peaks(out)
    assert np.array_equal(again.row[: len(first)], first.row) and set(again.frame[len(first):]) <= {4, 5}
    assert len(yaml.safe_load(Path(str(out) + ".yaml").read_text())["frames"]) == 3
