import json

import numpy as np
import pytest

from braggml.errors import ConfigError
from braggml.evaluate.metrics import evaluate_peaks
from braggml.evaluate.plots import (
    plot_frame,
    plot_peak_counts,
    plot_precision_recall,
    plot_run_overview,
    precision_recall_curve,
)
from braggml.evaluate.report import write_report
from braggml.peaks import PeakList


def _truth() -> PeakList:
    # frame 0: 4 spots, frame 1: 2 spots, frame 2: blank
    return PeakList.from_columns(
        n_frames=3,
        frame=[0, 0, 0, 0, 1, 1],
        row=[10, 20, 30, 40, 10, 60],
        col=[10, 20, 30, 40, 50, 60],
        snr=[2, 4, 8, 30, 4, 30],
    )


def _found() -> PeakList:
    # frame 0: 3 of 4 found (offsets 0.3, 0.4, 1.0), one false; frame 1: 1 of 2; frame 2: one false peak
    return PeakList.from_columns(
        n_frames=3,
        frame=[0, 0, 0, 0, 1, 2],
        row=[20.3, 30, 41, 90, 60, 5],
        col=[20, 30.4, 40, 90, 60, 5],
        score=[0.9, 0.8, 0.7, 0.6, 0.95, 0.5],
    )


def test_figures_match_hand_computation():
    ev = evaluate_peaks(_found(), _truth(), radius_px=2.0, min_peaks=2, truth_resolution_a=[5, 5, 3, 3, 2.2, 2.2])
    assert ev.true_positives == 4
    assert ev.precision == pytest.approx(4 / 6)
    assert ev.recall == pytest.approx(4 / 6)
    assert ev.f1 == pytest.approx(2 * 4 / 12)
    errors = np.array([0.3, 0.4, 1.0, 0.0])
    assert ev.centroid_median_px == pytest.approx(np.median(errors))
    assert ev.centroid_rmsd_px == pytest.approx(np.sqrt(np.mean(errors**2)))
    assert ev.per_frame["true_positives"] == [3, 1, 0]
    assert ev.per_frame["recall"][0] == pytest.approx(0.75)
    assert np.isnan(ev.per_frame["recall"][2])  # no truth in the blank frame
    by_snr = {(b["low"], b["high"]): b for b in ev.recall_by_snr}
    assert by_snr[(0.0, 3.0)]["n_true"] == 1 and by_snr[(0.0, 3.0)]["recall"] == 0.0
    assert by_snr[(3.0, 5.0)]["n_true"] == 2 and by_snr[(3.0, 5.0)]["recall"] == 0.5
    assert by_snr[(20.0, 50.0)]["recall"] == 1.0
    shells = {(b["low"], b["high"]): b for b in ev.recall_by_resolution}
    assert shells[(8.0, 4.0)]["recall"] == 0.5 and shells[(4.0, 3.0)]["recall"] == 1.0
    assert shells[(2.5, 2.0)]["recall"] == 0.5
    # hits: truth hits = frames 0, 1; called (>= 2 found) = frame 0 only
    assert ev.hit_finding["accuracy"] == pytest.approx(2 / 3)
    assert ev.hit_finding["precision"] == 1.0 and ev.hit_finding["recall"] == 0.5
    json.dumps(ev.to_dict())  # machine-readable, NaN turned into null
    assert any("precision" in line for line in ev.table_lines())


def test_truth_hit_flags_override_and_bad_arguments():
    ev = evaluate_peaks(_found(), _truth(), truth_is_hit=[True, False, False], min_peaks=1)
    assert ev.hit_finding["accuracy"] == pytest.approx(1 / 3)
    with pytest.raises(ConfigError, match="truth_is_hit"):
        evaluate_peaks(_found(), _truth(), truth_is_hit=[True])
    with pytest.raises(ConfigError, match="min_peaks"):
        evaluate_peaks(_found(), _truth(), min_peaks=0)


def test_precision_recall_curve_orders_by_score():
    thresholds, precision, recall = precision_recall_curve(_found(), _truth())
    assert thresholds.tolist() == sorted(thresholds.tolist(), reverse=True)
    assert precision[0] == 1.0  # the best-scored peak (frame 1, 0.95) is true
    assert recall[-1] == pytest.approx(4 / 6)


def test_pictures_and_report(tmp_path):
    image = np.random.default_rng(0).poisson(5.0, (64, 80)).astype(np.float32)
    mask = np.zeros(image.shape, bool)
    mask[:, :8] = True
    image[:, :8] = -1
    truth = PeakList.from_columns(n_frames=1, row=[20, 40], col=[30, 50])
    found = PeakList.from_columns(n_frames=1, row=[20.2, 10], col=[30, 10])
    png = plot_frame(image, tmp_path / "f.png", mask=mask, found=found, truth=truth)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_peak_counts({"truth": np.array([3, 1, 0])}, tmp_path / "c.png")
    plot_precision_recall({"x": _found()}, _truth(), tmp_path / "pr.png")
    ev = evaluate_peaks(_found(), _truth())
    report = write_report(tmp_path / "rep", {"finder": ev}, pictures={"frame": png})
    text = report.read_text()
    assert "| finder |" in text and "0.667" in text and "](../f.png)" in text
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["finders"]["finder"]["true_positives"] == 4


@pytest.mark.parametrize("n_peaks", [0, 40, 30000])  # none, a few drawn one by one, a density of many
def test_run_overview(tmp_path, n_peaks):
    rng = np.random.default_rng(1)
    peaks = PeakList.from_columns(
        n_frames=50,
        frame=np.sort(rng.integers(0, 50, n_peaks)),
        row=rng.uniform(0, 99, n_peaks),
        col=rng.uniform(0, 119, n_peaks),
        snr=rng.lognormal(2, 1, n_peaks),
        max_value=rng.lognormal(4, 1, n_peaks),
    )
    resolution = np.full((100, 120), 3.0)
    resolution[0, 0] = np.inf  # the beam
    mask = np.zeros((100, 120), bool)
    mask[:, 60:62] = True
    png = plot_run_overview(peaks, tmp_path / "run.png", shape=(100, 120), min_peaks=2, resolution_a=resolution,
                            mask=mask, title="run")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp*"))


def test_found_peaks_at_optional_true_peaks_are_not_scored():
    # frame 0: the false peak at (90, 90) sits on a real but weak reflection; frame 2's at (5, 5) does not
    weaker = PeakList.from_columns(n_frames=3, frame=[0, 0, 2], row=[90.5, 20, 50], col=[90, 20, 50], snr=[1, 1, 1])
    ev = evaluate_peaks(_found(), _truth(), optional=weaker, min_peaks=4)
    assert ev.true_positives == 4 and ev.n_optional == 1
    assert ev.precision == pytest.approx(4 / 5)  # one false peak left
    assert ev.recall == pytest.approx(4 / 6)
    assert ev.f1 == pytest.approx(2 * 4 / (5 + 6))
    assert ev.match.false_positives == 1 and ev.match.found_optional.tolist() == [0, 0, 0, 1, 0, 0]
    assert ev.per_frame["n_optional"] == [1, 0, 0] and ev.per_frame["precision"][0] == 1.0
    assert ev.hit_finding["n_called"] == 1  # hit finding counts every found peak: frame 0 has 4
    assert any("not scored) 1" in line for line in ev.table_lines())
    # a found peak matched to a scored true peak is never taken by an optional one nearby
    near = PeakList.from_columns(n_frames=3, frame=[0], row=[20.0], col=[20.5], snr=[1])
    assert evaluate_peaks(_found(), _truth(), optional=near).n_optional == 0
    _, precision, _ = precision_recall_curve(_found(), _truth(), optional=weaker)
    assert precision[-1] == pytest.approx(4 / 5)
    with pytest.raises(ConfigError, match="optional truth covers 2"):
        evaluate_peaks(_found(), _truth(), optional=PeakList.empty(2))
