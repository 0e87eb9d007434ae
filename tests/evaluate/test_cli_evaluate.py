"""``braggml evaluate`` and ``braggml show`` with truth and peaks in every format braggml reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from braggml.cli import main
from braggml.errors import ConfigError
from braggml.io.peaklists import write_peaks
from braggml.peaks import FrameRef, PeakList
from braggml.simulate import get_preset, simulate_to_file


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sim") / "frames.h5"
    simulate_to_file(path, 3, get_preset("test"), seed=11)
    return path


def _lists(tmp: Path) -> tuple[PeakList, PeakList]:
    refs = [FrameRef("run.cxi", "/entry_1/data_1/data", i) for i in range(2)]
    truth = PeakList.from_columns(frames=refs, frame=[0, 0, 1], row=[10, 20, 30], col=[10, 20, 30])
    found = PeakList.from_columns(frames=refs, frame=[0, 1, 1], row=[10.5, 30.2, 5], col=[10, 30, 5])
    return truth, found


@pytest.mark.parametrize("truth_ext", [".h5", ".stream", ".csv"])
@pytest.mark.parametrize("peaks_ext", [".h5", ".stream", ".csv"])
def test_every_truth_and_peak_format(tmp_path: Path, truth_ext: str, peaks_ext: str, capsys):
    truth, found = _lists(tmp_path)
    t_path = write_peaks(truth, tmp_path / f"truth{truth_ext}")
    p_path = write_peaks(found, tmp_path / f"found{peaks_ext}")
    out = tmp_path / "figures.json"
    argv = ["evaluate", "--truth", str(t_path), "--peaks", str(p_path), "--json", str(out), "--min-peaks", "1"]
    assert main(argv) == 0
    figures = json.loads(out.read_text())
    assert figures["true_positives"] == 2
    assert figures["precision"] == pytest.approx(2 / 3) and figures["recall"] == pytest.approx(2 / 3)
    assert figures["per_frame"]["true_positives"] == [1, 1]
    assert figures["centroid_median_px"] == pytest.approx(np.median([0.5, 0.2]), abs=1e-3)
    assert "precision 0.667" in capsys.readouterr().out


def test_simulated_truth_report_and_pictures(simulated: Path, tmp_path: Path, capsys):
    peaks = tmp_path / "pf8.h5"
    assert main(["find", str(simulated), "-o", str(peaks), "-q"]) == 0
    report = tmp_path / "report"
    assert main(["evaluate", "--truth", str(simulated), "--peaks", str(peaks), "--report", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "recall by resolution" in printed and "hit finding" in printed
    text = (report / "report.md").read_text()
    assert "| pf8.h5 |" in text
    for png in ("recall_vs_snr.png", "peak_counts.png"):
        assert (report / png).read_bytes()[:4] == b"\x89PNG"
    assert list(report.glob("frame_*.png")), "a frame picture with true/missed/false peaks"


def test_show_masked_frame_with_peaks_and_truth(simulated: Path, tmp_path: Path, capsys):
    peaks = tmp_path / "p.csv"
    assert main(["find", str(simulated), "-o", str(peaks), "-q"]) == 0
    png = tmp_path / "frame.png"
    argv = ["show", str(simulated), "--frame", "1", "--peaks", str(peaks), "--truth", str(simulated), "-o", str(png)]
    assert main(argv) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["show", str(simulated), "--frame", "7", "-o", str(png)]) == 2
    assert "out of range" in capsys.readouterr().err


def test_show_assembled_with_a_geometry(simulated: Path, tmp_path: Path, capsys):
    from braggml.geometry import flat_geometry
    from braggml.io.geom import write_crystfel_geom
    from braggml.io.simfile import read_sim_mask

    shape = read_sim_mask(simulated).shape
    geom = tmp_path / "flat.geom"
    write_crystfel_geom(
        flat_geometry(shape, pixel_size_mm=0.1, distance_mm=100.0, beam_center_rowcol=(10.0, 20.0)), geom
    )
    png = tmp_path / "frame.png"
    assert main(["show", str(simulated), "--frame", "1", "--geom", str(geom), "-o", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    small = tmp_path / "small.geom"
    write_crystfel_geom(flat_geometry((9, 9), pixel_size_mm=0.1, distance_mm=100.0, beam_center_rowcol=(4, 4)), small)
    big = tmp_path / "big.geom"
    write_crystfel_geom(
        flat_geometry((9999, 9), pixel_size_mm=0.1, distance_mm=100.0, beam_center_rowcol=(4.0, 4.0)), big
    )
    assert main(["show", str(simulated), "--geom", str(big), "-o", str(png)]) == 2
    assert "outside frames of shape" in capsys.readouterr().err
    assert main(["show", str(simulated), "--geom", str(small), "-o", str(png)]) == 0  # a part of the frame


def test_evaluate_rejects_mismatched_runs_and_bad_radius(tmp_path: Path, capsys):
    truth, found = _lists(tmp_path)
    t_path = write_peaks(truth, tmp_path / "t.csv")
    other = write_peaks(PeakList.empty(5), tmp_path / "o.csv")
    assert main(["evaluate", "--truth", str(t_path), "--peaks", str(other)]) == 2
    assert "frames" in capsys.readouterr().err
    assert main(["evaluate", "--truth", str(t_path), "--peaks", str(t_path), "--radius", "0"]) == 2
    assert "--radius" in capsys.readouterr().err
    assert main(["evaluate", "--truth", str(tmp_path / "none.h5"), "--peaks", str(t_path)]) == 2
    assert "none.h5" in capsys.readouterr().err
    assert main(["evaluate", "--truth", str(tmp_path / "strong.refl"), "--peaks", str(t_path)]) == 2
    assert f"truth file '{tmp_path / 'strong.refl'}' does not exist" in capsys.readouterr().err  # not "simulated"


def test_peaks_at_weaker_simulated_spots_are_not_scored(simulated: Path, tmp_path: Path, capsys):
    from braggml.evaluate.truth import load_truth
    from braggml.io.simfile import read_truth

    all_spots = read_truth(simulated).spots
    truth = load_truth(simulated, min_snr=8.0)
    scored = all_spots["observable"] & (all_spots["snr"] >= 8.0)
    assert len(truth.peaks) == scored.sum() and len(truth.optional) == (~scored).sum()
    assert sorted(truth.optional.snr.tolist()) == sorted(all_spots["snr"][~scored].tolist())
    peaks = tmp_path / "pf8.csv"
    assert main(["find", str(simulated), "-o", str(peaks), "-q"]) == 0
    out = tmp_path / "figures.json"
    argv = ["evaluate", "--truth", str(simulated), "--peaks", str(peaks), "--min-snr", "8", "--json", str(out)]
    assert main(argv) == 0
    figures = json.loads(out.read_text())
    assert figures["n_optional"] > 0  # peakfinder8 finds reflections weaker than SNR 8
    scored = figures["n_found"] - figures["n_optional"]
    assert figures["precision"] == pytest.approx(figures["true_positives"] / scored)
    assert f"at weaker true peaks (not scored) {figures['n_optional']}" in capsys.readouterr().out


def test_peaks_of_some_frames_are_scored_against_the_truth_of_those(simulated: Path, tmp_path: Path, capsys):
    """Peaks found in an event list (frames 2 and 0 of the run) are paired with the truth of frames 2 and 0."""
    from braggml.evaluate.metrics import evaluate_peaks
    from braggml.evaluate.truth import load_truth, truth_for
    from braggml.io.peaklists import read_peaks

    listing = tmp_path / "some.lst"
    listing.write_text(f"{simulated} //2\n{simulated} //0\n")
    found_path, figures = tmp_path / "some.h5", tmp_path / "some.json"
    assert main(["find", str(listing), "-o", str(found_path), "-q"]) == 0
    argv = ["evaluate", "--truth", str(simulated), "--peaks", str(found_path), "--json", str(figures), "--min-snr", "3"]
    assert main(argv) == 0
    assert "(frames 2, 0)" in capsys.readouterr().out
    whole = load_truth(simulated, min_snr=3.0)
    found = read_peaks(found_path)
    expected = evaluate_peaks(
        found,
        PeakList.concatenate([whole.peaks.for_frame(2), whole.peaks.for_frame(0)]),
        optional=PeakList.concatenate([whole.optional.for_frame(2), whole.optional.for_frame(0)]),
    )
    scored = json.loads(figures.read_text())
    assert scored["n_true"] == expected.n_true and scored["f1"] == pytest.approx(expected.f1)
    assert expected.recall > 0.5  # the pairing is right: the wrong frames' truth would hardly match
    chosen = truth_for(whole, found)
    assert chosen.is_hit.tolist() == [whole.is_hit[2], whole.is_hit[0]]
    assert len(chosen.resolution_a) == len(chosen.peaks)
    np.testing.assert_array_equal(chosen.resolution_a[: (whole.peaks.frame == 2).sum()],
                                  whole.resolution_a[whole.peaks.frame == 2])
    stranger = found.with_frames([FrameRef("other.h5", "/data", 0), FrameRef("other.h5", "/data", 1)])
    with pytest.raises(ConfigError, match=r"frame other\.h5::/data //0 is not among the frames of the truth"):
        truth_for(whole, stranger)
    bare = PeakList.from_columns(n_frames=2, frame=[0], row=[1.0], col=[1.0])
    with pytest.raises(ConfigError, match="has 2 frames but the truth"):
        truth_for(whole, bare)
