"""The command line, run in-process through ``main(argv)`` and once as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from braggml.cli import main
from braggml.io.peaklists import read_peaks

SPOTS = [(40.3, 50.6), (90.0, 30.2), (20.7, 100.1), (110.4, 110.8)]


def _frame(seed: int, spots=SPOTS, shape=(128, 144)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows, cols = np.indices(shape)
    image = np.full(shape, 20.0)
    for r, c in spots:
        image += 800.0 * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * 1.0**2))
    return rng.poisson(image).astype(np.int32)


@pytest.fixture()
def cxi_file(tmp_path: Path) -> Path:
    path = tmp_path / "run.cxi"
    frames = np.stack([_frame(0), _frame(1), np.random.default_rng(2).poisson(20.0, (128, 144)).astype(np.int32)])
    with h5py.File(path, "w") as f:
        f.create_dataset("entry_1/data_1/data", data=frames, chunks=(1, 128, 144), compression="gzip")
        mask = np.zeros((128, 144), np.uint16)
        mask[:, 0:3] = 1
        f.create_dataset("entry_1/data_1/mask", data=mask)
    return path


def _nearest(peaks, frame: int, r: float, c: float) -> float:
    sel = peaks.frame == frame
    return float(np.min(np.hypot(peaks.row[sel] - r, peaks.col[sel] - c)))


def test_find_default_finder_writes_cxi(cxi_file: Path, tmp_path: Path, capsys):
    out = tmp_path / "peaks.h5"
    assert main(["find", str(cxi_file), "-o", str(out)]) == 0
    peaks = read_peaks(out)
    assert peaks.n_frames == 3
    counts = peaks.counts_per_frame()
    assert counts[0] == len(SPOTS) and counts[1] == len(SPOTS)
    assert counts[2] == 0
    for frame in (0, 1):
        for r, c in SPOTS:
            assert _nearest(peaks, frame, r, c) < 0.3
    assert peaks.frames is not None and peaks.frames[1].index == 1
    assert (tmp_path / "peaks.h5.yaml").is_file()
    printed = capsys.readouterr().out
    assert "frames: 3" in printed and "peaks: 8" in printed


@pytest.mark.parametrize("suffix", [".stream", ".csv"])
def test_find_writes_other_formats_and_hit_list(cxi_file: Path, tmp_path: Path, suffix: str):
    out = tmp_path / f"peaks{suffix}"
    hits = tmp_path / "hits.lst"
    argv = ["find", str(cxi_file), "-o", str(out), "--min-peaks", "3", "--hits-out", str(hits), "-q"]
    assert main(argv) == 0
    assert read_peaks(out).counts_per_frame().tolist() == [4, 4, 0]
    lines = hits.read_text().splitlines()
    assert lines == [f"{cxi_file} //0", f"{cxi_file} //1"]


def test_find_draws_the_run(cxi_file: Path, tmp_path: Path, capsys):
    png = tmp_path / "run.png"
    assert main(["find", str(cxi_file), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"run picture written to {png}" in capsys.readouterr().out
    assert main(["find", str(cxi_file), "-o", str(png), "--plot", str(png)]) == 2
    assert "--plot and -o name the same file" in capsys.readouterr().err
    assert main(["find", str(cxi_file), "--plot", str(tmp_path / "no" / "run.png")]) == 2
    assert "output folder" in capsys.readouterr().err
    folder = tmp_path / "split"
    folder.mkdir()
    png.unlink()
    assert main(["find", str(cxi_file), "-o", str(folder), "--split-output", "--plot", str(png), "-q"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG" and (folder / "run_peaks.h5").is_file()


def test_find_reads_back_its_hit_list(cxi_file: Path, tmp_path: Path):
    """The hits of one run (an event list) are the input of the next: only those frames, same peaks."""
    first, hits = tmp_path / "all.h5", tmp_path / "hits.lst"
    assert main(["find", str(cxi_file), "-o", str(first), "--min-peaks", "3", "--hits-out", str(hits), "-q"]) == 0
    hits.write_text("\n".join(reversed(hits.read_text().splitlines())) + "\n")  # frames 1 then 0
    second = tmp_path / "hits_only.h5"
    assert main(["find", str(hits), "-o", str(second), "-q"]) == 0
    every, chosen = read_peaks(first), read_peaks(second)
    assert chosen.n_frames == 2 and [ref.index for ref in chosen.frames] == [1, 0]
    for k, index in enumerate((1, 0)):
        mine = np.column_stack([chosen.row[chosen.frame == k], chosen.col[chosen.frame == k]])
        theirs = np.column_stack([every.row[every.frame == index], every.col[every.frame == index]])
        np.testing.assert_allclose(np.sort(mine, axis=0), np.sort(theirs, axis=0))
    (tmp_path / "bad.lst").write_text(f"{cxi_file} //7\n")
    assert main(["find", str(tmp_path / "bad.lst"), "-o", str(tmp_path / "x.h5"), "-q"]) == 2


def test_find_with_each_classical_finder(cxi_file: Path, tmp_path: Path):
    for name in ("threshold", "peakfinder8", "dispersion", "dispersion_extended"):
        out = tmp_path / f"{name}.csv"
        assert main(["find", str(cxi_file), "--finder", name, "-o", str(out), "-q"]) == 0, name
        peaks = read_peaks(out)
        for r, c in SPOTS:
            assert _nearest(peaks, 0, r, c) < 0.5, name


def test_finder_flag_and_config_file(cxi_file: Path, tmp_path: Path):
    out = tmp_path / "p.csv"
    # a threshold above every spot's peak finds nothing
    assert main(["find", str(cxi_file), "--adc-threshold", "1e6", "-o", str(out), "-q"]) == 0
    assert len(read_peaks(out)) == 0
    config = tmp_path / "settings.yaml"
    config.write_text("finder: peakfinder8\npeakfinder8:\n  adc_threshold: 1000000\n")
    assert main(["find", str(cxi_file), "--config", str(config), "-o", str(out), "-q"]) == 0
    assert len(read_peaks(out)) == 0


def _error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_bad_inputs_give_one_line(tmp_path: Path, cxi_file: Path, capsys):
    assert "missing.h5" in _error(["find", str(tmp_path / "missing.h5")], capsys)
    assert "nothing*" in _error(["find", str(tmp_path / "nothing*.h5")], capsys)
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    assert "notes.h5" in _error(["find", str(text)], capsys)
    assert "/no/such" in _error(["find", f"{cxi_file}::/no/such"], capsys)
    assert "minimum_snr" in _error(["find", str(cxi_file), "--minimum-snr", "-3"], capsys)
    flag_error = _error(["find", str(cxi_file), "--finder", "peakfinder8", "--sigma-strong", "3"], capsys)
    assert "--sigma-strong does not apply" in flag_error
    config = tmp_path / "bad.yaml"
    config.write_text("peakfinder8:\n  no_such_knob: 1\n")
    assert "no_such_knob" in _error(["find", str(cxi_file), "--config", str(config)], capsys)
    out_in_missing_dir = tmp_path / "nowhere" / "peaks.h5"
    assert "nowhere" in _error(["find", str(cxi_file), "-o", str(out_in_missing_dir)], capsys)
    # an output of no known format fails before the run: a damaged input is not even opened
    error = _error(["find", str(text), "-o", str(tmp_path / "peaks.txt")], capsys)
    assert "cannot tell the peak-list format of" in error and "peaks.txt" in error and "--format" in error


def test_find_masks_the_run_hot_pixels(tmp_path: Path, capsys):
    import yaml

    from braggml.io.masks import load_mask

    hot = [(5, 7), (64, 70), (120, 140)]
    frames = np.stack([_frame(k, spots=[(30.0 + 8 * k, 40.0 + 5 * k)]) for k in range(10)])
    for r, c in hot:
        frames[:, r, c] += 500
    path = tmp_path / "hot.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("entry/data/data", data=frames, chunks=(1, 128, 144))
    one_pixel = ["--min-pixel-count", "1"]  # a lone bright pixel is a peak unless it is masked
    out, mask_out = tmp_path / "peaks.csv", tmp_path / "hot_mask.h5"
    assert main(["find", str(path), "-o", str(out), "--hot-pixel-mask-out", str(mask_out), *one_pixel]) == 0
    assert "hot pixels: 3 masked (from 10 frames looked at)" in capsys.readouterr().out
    peaks = read_peaks(out)
    assert peaks.counts_per_frame().tolist() == [1] * 10
    assert np.argwhere(load_mask(mask_out, shape=(128, 144))).tolist() == [list(rc) for rc in hot]
    settings = yaml.safe_load((tmp_path / "peaks.csv.yaml").read_text())
    assert settings["hot_pixels"] == {"frames_looked_at": 10, "rowcol": [list(rc) for rc in hot]}

    off = tmp_path / "off.csv"
    assert main(["find", str(path), "-o", str(off), "--hot-pixels", "off", *one_pixel]) == 0
    assert "hot pixels" not in capsys.readouterr().out
    assert read_peaks(off).counts_per_frame().tolist() == [4] * 10
    short = tmp_path / "short.h5"
    with h5py.File(short, "w") as f:
        f.create_dataset("entry/data/data", data=frames[:7])
    npy = tmp_path / "none.npy"
    assert main(["find", str(short), "-o", str(tmp_path / "short.csv"), "--hot-pixel-mask-out", str(npy)]) == 0
    assert "hot pixels" not in capsys.readouterr().out  # too short a run to tell
    assert not load_mask(npy, shape=(128, 144)).any()

    same = ["find", str(path), "-o", str(out), "--hot-pixel-mask-out", str(out)]
    assert "--hot-pixel-mask-out and -o name the same file" in _error(same, capsys)
    hits_too = ["find", str(path), "-o", str(out), "--hits-out", str(out)]
    assert "--hits-out and -o name the same file" in _error(hits_too, capsys)
    assert "give a .h5, .hdf5, .npy" in _error(["find", str(path), "--hot-pixel-mask-out", "mask.txt"], capsys)
    with pytest.raises(SystemExit):
        main(["find", str(path), "--hot-pixels", "on"])
    assert "invalid choice: 'on'" in capsys.readouterr().err


def test_outputs_never_replace_inputs(cxi_file: Path, tmp_path: Path, capsys):
    before = cxi_file.read_bytes()
    assert main(["find", str(cxi_file), "-o", str(cxi_file)]) == 2
    assert f"-o {cxi_file} is one of the run's inputs; it would be overwritten" in capsys.readouterr().err
    for argv in (
        ["find", str(tmp_path / "*.cxi"), "-o", str(cxi_file)],  # through a glob
        ["find", str(cxi_file), "--plot", str(cxi_file)],
        ["find", str(cxi_file), "-o", str(tmp_path / "p.csv"), "--hits-out", str(tmp_path / "run.cxi")],
        ["find", str(cxi_file), "-o", str(tmp_path / "{stem}.cxi"), "--split-output"],
    ):
        assert main(argv) == 2
        assert "it would be overwritten" in capsys.readouterr().err
    assert cxi_file.read_bytes() == before


def test_failed_run_leaves_no_output(tmp_path: Path, cxi_file: Path, capsys):
    out = tmp_path / "peaks.h5"
    assert main(["find", str(cxi_file), f"{tmp_path}/missing.h5", "-o", str(out)]) == 2
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_info(cxi_file: Path, capsys):
    assert main(["info", str(cxi_file)]) == 0
    out = capsys.readouterr().out
    assert "/entry_1/data_1/data" in out and "3" in out and "mask" in out


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("find", "info", "simulate", "demo"):
        assert command in out


def test_subprocess_python_m_braggml(cxi_file: Path, tmp_path: Path):
    out = tmp_path / "peaks.stream"
    run = subprocess.run(
        [sys.executable, "-m", "braggml", "find", str(cxi_file), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "Begin chunk" in out.read_text()
    bad = subprocess.run(
        [sys.executable, "-m", "braggml", "find", str(tmp_path / "absent.cxi")], capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and "absent.cxi" in bad.stderr


def test_first_compile_is_announced(cxi_file: Path, tmp_path: Path, capsys, monkeypatch):
    import braggml.classical.jit

    notice = "braggml find: compiling the finders' kernels for this machine"
    monkeypatch.setattr(braggml.classical.jit, "kernels_cached", lambda: False)
    assert main(["find", str(cxi_file), "-o", str(tmp_path / "a.h5")]) == 0
    assert notice in capsys.readouterr().err
    assert main(["find", str(cxi_file), "-o", str(tmp_path / "b.h5"), "-q"]) == 0
    assert capsys.readouterr().err == ""  # --quiet: errors only
    monkeypatch.setattr(braggml.classical.jit, "kernels_cached", lambda: True)
    assert main(["find", str(cxi_file), "-o", str(tmp_path / "c.h5")]) == 0
    assert "compiling" not in capsys.readouterr().err


def test_library_chatter_hidden_unless_verbose(real_data: Path, tmp_path: Path):
    # fabio warns about a private TIFF tag of this file on every read; that is not the user's concern
    tif = real_data / "pilatus_misc" / "Fe3O4C_M1_map_1_P1_E1_001.tif"
    out = tmp_path / "peaks.csv"
    geometry = ["--beam-center", "521", "490"]
    quiet = subprocess.run(
        [sys.executable, "-m", "braggml", "find", str(tif), *geometry, "-o", str(out), "-q"],
        capture_output=True, text=True, timeout=300,
    )
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    loud = subprocess.run(
        [sys.executable, "-m", "braggml", "-v", "find", str(tif), *geometry, "-o", str(out), "-q"],
        capture_output=True, text=True, timeout=300,
    )
    assert loud.returncode == 0, loud.stderr
    assert "braggml: WARNING: [fabio.TiffIO] Data at tag id" in loud.stderr


def test_the_hits_of_a_numpy_stack_are_its_hit_frames(tmp_path: Path, capsys):
    """find --hits-out on a stack without dataset paths lists each hit frame, so the list read back is those frames
    (a bare file name would stand for every frame of the stack)."""
    frames = np.stack([_frame(k, spots=[(30.0, 40.0)] * (k % 2)) for k in range(6)])
    np.save(tmp_path / "run.npy", frames)
    hits = tmp_path / "hits.lst"
    argv = ["find", str(tmp_path / "run.npy"), "-o", str(tmp_path / "all.csv"), "--min-peaks", "1", "-q"]
    assert main([*argv, "--hits-out", str(hits)]) == 0
    assert hits.read_text().split() == [word for k in (1, 3, 5) for word in (str(tmp_path / "run.npy"), f"//{k}")]
    assert main(["find", str(hits), "-o", str(tmp_path / "again.csv"), "--min-peaks", "1", "-q"]) == 0
    again = read_peaks(tmp_path / "again.csv")
    assert [(Path(r.file).name, r.index) for r in again.frames] == [("run.npy", 1), ("run.npy", 3), ("run.npy", 5)]
    assert again.counts_per_frame().tolist() == [1, 1, 1] and np.allclose(again.row, 30.0, atol=0.1)
