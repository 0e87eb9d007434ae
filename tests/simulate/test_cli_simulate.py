"""``braggml simulate`` in-process: output file, preview, overrides and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from braggml.cli import main
from braggml.io.simfile import read_truth


def test_simulate_writes_file_and_preview(tmp_path, capsys) -> None:
    out = tmp_path / "frames.h5"
    png = tmp_path / "preview.png"
    status = main(
        ["simulate", "-n", "3", "-o", str(out), "--preset", "test", "--seed", "4", "--preview", str(png),
         "--set", "crystal.hit_fraction=1", "--set", "crystal.b_factor_a2=35"]
    )
    assert status == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    truth = read_truth(out)
    assert summary["frames"] == 3 and summary["hits"] == 3 == int(truth.hit.sum())
    assert summary["observable_spots"] == len(truth.peaks) > 0
    assert truth.parameters["config"]["crystal"]["b_factor_a2"] == 35.0
    assert truth.parameters["preset"] == "test"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_config_file(tmp_path) -> None:
    cfg = tmp_path / "sim.yaml"
    cfg.write_text("crystal:\n  hit_fraction: 0.0\n")
    out = tmp_path / "blank.h5"
    assert main(["simulate", "-n", "2", "-o", str(out), "--preset", "test", "--config", str(cfg), "-q"]) == 0
    truth = read_truth(out)
    assert not truth.hit.any() and len(truth.peaks) == 0
    assert np.all(truth.frames["n_spots"] == 0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "crystal.nope=3"], "unknown setting 'crystal.nope'"),
        (["--set", "beam.energy_kev=-1"], "beam.energy_kev must be > 0"),
        (["--config", "missing.yaml"], "missing.yaml"),
    ],
)
def test_simulate_bad_input_is_one_line_error(tmp_path, capsys, argv, message) -> None:
    status = main(["simulate", "-n", "1", "-o", str(tmp_path / "x.h5"), "--preset", "test", *argv])
    err = capsys.readouterr().err
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.h5").exists()


def test_simulate_output_folder_must_exist(tmp_path, capsys) -> None:
    status = main(["simulate", "-n", "1", "-o", str(tmp_path / "no" / "x.h5"), "--preset", "test"])
    assert status == 2 and "does not exist" in capsys.readouterr().err


def test_show_config_round_trips_through_config_file(tmp_path, capsys) -> None:
    from braggml.simulate import get_preset
    from braggml.simulate.cli_support import build_config

    assert main(["simulate", "--preset", "pilatus6m", "--show-config"]) == 0
    saved = tmp_path / "pilatus.yaml"
    saved.write_text(capsys.readouterr().out)
    assert build_config("test", saved) == get_preset("pilatus6m")


def test_simulate_needs_frames_and_output(capsys) -> None:
    assert main(["simulate", "--preset", "test"]) == 2
    assert "needs -n/--frames and -o/--output" in capsys.readouterr().err
