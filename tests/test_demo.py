"""The demo, end to end on a tiny setting: simulate, train both classifiers, compare every finder, report."""

from __future__ import annotations

import json

import pytest

from braggml.cli import main


def test_demo_tiny_run_writes_a_complete_report(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--preset", "test", "--frames", "3", "--train-frames", "6", "--epochs", "2"]
    argv.append("-q")
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for finder in ("peakfinder8", "dispersion", "dispersion_extended", "threshold", "cnn", "svm", "cnn_builtin",
                   "svm_builtin", "unet"):
        assert finder in printed
        assert (out / f"peaks_{finder}.h5").is_file()
    report = (out / "report.md").read_text()
    assert "| peakfinder8 |" in report and "| cnn |" in report and "| cnn_builtin |" in report
    assert "| unet |" in report
    figures = json.loads((out / "report.json").read_text())
    pf8 = figures["finders"]["peakfinder8"]
    assert pf8["n_true"] > 0
    # the test preset's strong spots are found by the default finder
    assert pf8["recall_by_snr"][-1]["recall"] is None or pf8["recall_by_snr"][-1]["recall"] > 0.8
    assert pf8["precision"] > 0.8
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "recall_vs_snr.png" in pngs and "peak_counts.png" in pngs and any(p.startswith("frame_") for p in pngs)
    assert any(p.startswith("run_") for p in pngs)
    assert f"report: {(out / 'report.md').resolve()}" in printed


def test_demo_rejects_bad_settings(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--frames", "0", "--no-train"]) == 2
    assert "--frames" in capsys.readouterr().err
