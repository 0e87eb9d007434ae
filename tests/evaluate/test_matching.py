import numpy as np
import pytest

from braggml.errors import ConfigError
from braggml.evaluate.matching import match_frame, match_peaks
from braggml.peaks import PeakList


def test_two_found_near_one_truth_match_only_the_closer():
    found = np.array([[10.0, 10.0], [10.0, 11.2]])
    truth = np.array([[10.0, 11.0]])
    fi, ti = match_frame(found, truth, 2.0)
    assert fi.tolist() == [1] and ti.tolist() == [0]


def test_assignment_maximises_number_of_pairs_before_distance():
    # greedy nearest-first would pair found 0 with truth 1 (distance 0.1) and leave truth 0 unmatched
    found = np.array([[0.0, 1.0], [0.0, 2.5]])
    truth = np.array([[0.0, 0.0], [0.0, 1.1]])
    fi, ti = match_frame(found, truth, 1.5)
    assert sorted(zip(fi.tolist(), ti.tolist())) == [(0, 0), (1, 1)]


def test_identical_positions_match_at_zero_distance():
    pts = np.array([[5.0, 5.0], [50.0, 7.0]])
    fi, ti = match_frame(pts, pts, 1.0)
    assert fi.tolist() == [0, 1] and ti.tolist() == [0, 1]


def test_duplicates_count_once():
    found = np.array([[3.0, 3.0], [3.0, 3.0], [3.0, 3.0]])
    truth = np.array([[3.2, 3.0]])
    fi, _ = match_frame(found, truth, 2.0)
    assert fi.size == 1


def test_many_peaks_are_matched_exactly():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 2000, size=(5000, 2))
    found = truth + rng.normal(0, 0.3, truth.shape)
    fi, ti = match_frame(found, truth, 2.0)
    assert fi.size >= 4990
    assert np.mean(fi == ti) > 0.99


def test_match_peaks_scores_by_frame():
    truth = PeakList.from_columns(n_frames=3, frame=[0, 0, 2], row=[10, 20, 30], col=[10, 20, 30])
    # frame 0: one hit, one false peak; frame 1: false peak only; frame 2: miss; positions in frame 1 equal a
    # truth position of frame 0 and must not match across frames
    found = PeakList.from_columns(n_frames=3, frame=[0, 0, 1], row=[10.5, 50, 20], col=[10, 50, 20])
    m = match_peaks(found, truth, radius_px=2.0)
    assert m.true_positives == 1 and m.false_positives == 2 and m.false_negatives == 2
    assert m.precision == pytest.approx(1 / 3)
    assert m.recall == pytest.approx(1 / 3)
    assert m.f1 == pytest.approx(2 * 1 / (3 + 3))
    assert m.offset_rc.tolist() == [[0.5, 0.0]]
    assert m.centroid_error_px.tolist() == [0.5]


def test_empty_lists():
    m = match_peaks(PeakList.empty(2), PeakList.empty(2))
    assert m.true_positives == 0 and np.isnan(m.precision) and np.isnan(m.recall)


def test_runs_of_different_length_rejected():
    with pytest.raises(ConfigError, match="not the same run"):
        match_peaks(PeakList.empty(2), PeakList.empty(3))


def test_bad_radius_rejected():
    with pytest.raises(ConfigError, match="radius_px"):
        match_frame(np.zeros((1, 2)), np.zeros((1, 2)), 0.0)
