from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from braggml.errors import ConfigError, DataFormatError
from braggml.io.peaklists import write_peaks
from braggml.ml.patches import (
    LABEL_IGNORE,
    LABEL_NOT_PEAK,
    LABEL_PEAK,
    CandidateConfig,
    PatchConfig,
    build_patch_set,
    extract_patches,
    label_candidates,
    normalise_patches,
    positive_weight,
    split_by_frame,
)
from braggml.simulate import get_preset, simulate_to_file
from braggml.simulate.config import apply_overrides


# -- patches --------------------------------------------------------------------------------------------------
def test_extract_patches_centres_pads_edges_and_masks_bad_pixels() -> None:
    image = np.arange(100, dtype=np.int32).reshape(10, 10)
    bad = np.zeros((10, 10), bool)
    bad[5, 6] = True
    before = image.copy()
    out = extract_patches(image, [5.3, 0.0], [5.6, 9.4], half_size=2, bad=bad)
    assert out.shape == (2, 5, 5) and out.dtype == np.float32
    np.testing.assert_array_equal(image, before)
    # the first centre rounds to (5, 6), a bad pixel: NaN there, values around it
    assert np.isnan(out[0, 2, 2])
    assert out[0, 2, 1] == 55
    assert out[0, 0, 0] == 34  # (3, 4)
    # corner patch: rows -2..2, cols 7..11 -> outside rows and columns are NaN
    assert np.isnan(out[1, :2]).all() and np.isnan(out[1, :, 3:]).all()
    assert out[1, 2, 2] == 9


def test_extract_patches_empty_and_bad_shapes() -> None:
    assert extract_patches(np.zeros((8, 8)), [], [], half_size=3).shape == (0, 7, 7)
    with pytest.raises(ValueError, match="2-D"):
        extract_patches(np.zeros((2, 8, 8)), [1], [1], half_size=1)
    with pytest.raises(ValueError, match="mask has shape"):
        extract_patches(np.zeros((8, 8)), [1], [1], half_size=1, bad=np.zeros((4, 4), bool))


def test_normalise_patches_background_zero_validity_channel() -> None:
    cfg = PatchConfig(half_size=3, background_inner=1, compress=False)
    rng = np.random.default_rng(0)
    raw = rng.normal(100.0, 5.0, (3, 7, 7)).astype(np.float32)
    raw[0, 3, 3] = 200.0
    raw[1, 0, :] = np.nan  # off the frame
    before = raw.copy()
    out = normalise_patches(raw, cfg)
    np.testing.assert_array_equal(np.isnan(raw), np.isnan(before))
    assert out.shape == (3, 2, 7, 7)
    np.testing.assert_array_equal(out[1, 1, 0], 0.0)
    assert out[1, 1, 1:].all()
    assert abs(np.median(out[2, 0])) < 0.5
    assert 10 < out[0, 0, 3, 3] < 40  # 100 above a background of sigma ~5
    np.testing.assert_array_equal(out[1, 0, 0], 0.0)


def test_normalise_patches_gain_invariant_and_counting_floor() -> None:
    rng = np.random.default_rng(1)
    raw = rng.poisson(20.0, (4, 9, 9)).astype(np.float32)
    raw[:, 4, 4] += 80
    cfg = PatchConfig(half_size=4)
    np.testing.assert_allclose(normalise_patches(raw, cfg), normalise_patches(raw * 12.0, cfg), atol=1e-4)
    sparse = np.zeros((1, 9, 9), np.float32)
    sparse[0, 4, 4] = 1.0  # one photon on an empty background: sigma floor 0.5 for counts
    out = normalise_patches(sparse, PatchConfig(half_size=4, compress=False))
    assert out[0, 0, 4, 4] == pytest.approx(2.0)
    constant = np.full((1, 9, 9), 7.0, np.float32)
    assert np.all(np.isfinite(normalise_patches(constant, cfg)))


def test_normalise_patches_rejects_wrong_size() -> None:
    with pytest.raises(ValueError, match=r"\(N, 15, 15\)"):
        normalise_patches(np.zeros((2, 9, 9)), PatchConfig())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"half_size": 1}, "half_size"),
        ({"half_size": 4, "background_inner": 4}, "background_inner"),
        ({"normalisation": "zscore"}, "normalisation"),
    ],
)
def test_patch_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        PatchConfig(**kwargs)


def test_candidate_config_unknown_finder() -> None:
    from braggml.ml.patches import candidate_finder

    with pytest.raises(ConfigError, match="unknown finder"):
        candidate_finder(CandidateConfig(finder="nope", params={}))
    with pytest.raises(ConfigError, match="must be a registered finder"):
        CandidateConfig(finder="")


# -- labels ---------------------------------------------------------------------------------------------------
def test_label_candidates_hand_made_case() -> None:
    candidates = np.array(
        [
            [10.0, 10.0],  # 0: 0.5 px from truth A, but 1 is closer -> duplicate, not a peak
            [10.2, 10.4],  # 1: truth A
            [30.0, 30.0],  # 2: 1.4 px from truth B -> peak
            [50.0, 50.0],  # 3: nothing near -> not a peak
            [70.0, 71.0],  # 4: 3 px from truth C -> beyond the radius
            [90.0, 90.0],  # 5: truth D, a weak spot
        ]
    )
    truth = np.array([[10.3, 10.4], [31.0, 31.0], [70.0, 74.0], [90.5, 90.0]])
    labels = label_candidates(candidates, truth, radius_px=2.0)
    assert labels.tolist() == [0, 1, 1, 0, 0, 1]
    snr = np.array([20.0, 8.0, 30.0, 1.5])
    labels = label_candidates(candidates, truth, radius_px=2.0, truth_snr=snr, min_truth_snr=3.0)
    assert labels.tolist() == [LABEL_NOT_PEAK, LABEL_PEAK, LABEL_PEAK, LABEL_NOT_PEAK, LABEL_NOT_PEAK, LABEL_IGNORE]
    assert label_candidates(candidates, np.empty((0, 2))).tolist() == [0] * 6
    with pytest.raises(ConfigError, match="truth_snr"):
        label_candidates(candidates, truth, min_truth_snr=3.0)


def test_positive_weight() -> None:
    assert positive_weight(np.array([1, 0, 0, 0, -1])) == 3.0
    assert positive_weight(np.array([0, 0])) == 1.0


# -- splits ---------------------------------------------------------------------------------------------------
def test_split_by_frame_never_shares_a_frame() -> None:
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 20, 1000)
    s = split_by_frame(groups, (0.6, 0.2, 0.2), seed=5)
    sets = [set(groups[s.train]), set(groups[s.val]), set(groups[s.test])]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert set().union(*sets) == set(groups.tolist())
    assert len(s.train) + len(s.val) + len(s.test) == len(groups)
    assert (s.train_groups.size, s.val_groups.size, s.test_groups.size) == (12, 4, 4)
    again = split_by_frame(groups, (0.6, 0.2, 0.2), seed=5)
    np.testing.assert_array_equal(again.test, s.test)
    other = split_by_frame(groups, (0.6, 0.2, 0.2), seed=6)
    assert set(other.test_groups.tolist()) != set(s.test_groups.tolist())


def test_split_by_frame_errors() -> None:
    with pytest.raises(ConfigError, match="summing to 1"):
        split_by_frame(np.arange(10), (0.5, 0.2, 0.2))
    with pytest.raises(ConfigError, match="cannot fill 3 sets"):
        split_by_frame(np.array([0, 0, 1]), (0.6, 0.2, 0.2))
    s = split_by_frame(np.array([0, 1, 2]), (0.6, 0.2, 0.2))
    assert (s.train_groups.size, s.val_groups.size, s.test_groups.size) == (1, 1, 1)


# -- patch sets from simulated files and from user peak lists -------------------------------------------------
def test_build_patch_set_from_simulation(patch_set, sim_file: Path) -> None:
    ps = patch_set
    assert ps.n_frames == 5 and ps.frames_used.tolist() == [0, 1, 2, 3, 4]
    assert ps.patches.shape == (len(ps), 2, 15, 15)
    assert ps.n_positive > 100 and ps.n_negative > 30  # hard negatives kept
    assert set(np.unique(ps.labels)) <= {0, 1}
    assert len(ps.truth) > ps.n_positive and ps.truth.n_frames == 5
    # positives are centred on bright pixels: the centre of a peak patch is well above its background
    centre = ps.patches[:, 0, 7, 7]
    assert np.median(centre[ps.labels == 1]) > np.median(centre[ps.labels == 0])
    sub = ps.for_frames([1, 3])
    assert sub.n_frames == 2 and set(np.unique(sub.frame)) == {1, 3}
    assert sub.truth.n_frames == 2
    found = sub.found_peaks(np.ones(len(sub)))
    assert found.n_frames == 2 and len(found) == len(sub)


def test_build_patch_set_from_user_peak_list_matches_simulation(patch_set, sim_file: Path, tmp_path: Path) -> None:
    labels = tmp_path / "truth.csv"
    write_peaks(patch_set.truth, labels)
    ps = build_patch_set(sim_file, labels=labels, max_frames=2)
    assert ps.n_frames == 2
    reference = patch_set.for_frames([0, 1])
    np.testing.assert_array_equal(ps.labels, reference.labels)


def test_build_patch_set_mixes_detectors_of_other_frame_shapes(patch_set, sim_file: Path, tmp_path: Path) -> None:
    config = apply_overrides(get_preset("test"), {"detector": {"module_shape": [96, 200]}})
    other = simulate_to_file(tmp_path / "other.h5", 2, config, seed=3)
    ps = build_patch_set([sim_file, other])
    assert ps.n_frames == 7 and [Path(f).name for f in ps.files] == [sim_file.name, "other.h5"]
    # the first file's frames are labelled as alone; the other's come after them, as run 1
    first = ps.for_frames([0, 1, 2, 3, 4])
    np.testing.assert_array_equal(first.labels, patch_set.labels)
    np.testing.assert_array_equal(first.patches, patch_set.patches)
    second = ps.for_frames([5, 6])
    assert len(second) > 0 and set(np.unique(second.run)) == {1}
    assert second.n_positive > 10 and second.row.max() < 200 and second.col.max() < 200
    alone = build_patch_set(other)
    np.testing.assert_array_equal(second.labels, alone.labels)
    # a peak list that does not name its files cannot be matched by order across two detectors
    labels = tmp_path / "by_order.csv"
    labels.write_text("frame,row,col\n" + "".join(f"{k},10,10\n" for k in range(7)))
    with pytest.raises(DataFormatError, match=r"does not say which files.*mix frame shapes \(256, 256\), \(200, 200\)"):
        build_patch_set([sim_file, other], labels=labels)


def test_build_patch_set_without_truth_needs_labels(tmp_path: Path) -> None:
    frames = tmp_path / "frames.npy"
    np.save(frames, np.random.default_rng(0).poisson(2.0, (2, 64, 64)).astype(np.float32))
    with pytest.raises(DataFormatError, match="--labels"):
        build_patch_set(frames)
    other = tmp_path / "other.csv"
    other.write_text("frame,row,col\n0,10,10\n0,20,20\n1,5,5\n2,3,3\n")
    with pytest.raises(DataFormatError, match="covers 3 frames but the data hold 2"):
        build_patch_set(frames, labels=other)
