"""Tests every patch classifier passes (CNN and SVM), then model-specific ones."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from braggml.errors import DataFormatError, InputNotFoundError
from braggml.ml import cnn, svm
from braggml.ml.checkpoint import load_classifier, read_metadata
from braggml.ml.patches import PatchSet

TINY_CNN = cnn.CNNConfig(channels=(8, 16), hidden=16, dropout=0.1)


def _fit(kind: str, train: PatchSet, val: PatchSet, **kw: Any) -> Any:
    if kind == "cnn":
        config = cnn.TrainConfig(epochs=kw.get("epochs", 4), batch_size=128, seed=0, device="cpu")
        return cnn.train_cnn(train, val, model_config=TINY_CNN, config=config)
    config = svm.SVMConfig(cv_folds=2, c_values=kw.get("c_values", (0.01, 1.0)), rbf_max_samples=0)
    return svm.train_svm(train, val, config=config)


def _load(kind: str, path: Path) -> Any:
    return cnn.load_model(path, device="cpu") if kind == "cnn" else svm.load_model(path)


@pytest.fixture(scope="module", params=["cnn", "svm"])
def trained(request: pytest.FixtureRequest, split_sets) -> tuple[str, Any]:
    train, val, _ = split_sets
    return request.param, _fit(request.param, train, val)


class TestPatchClassifier:
    """Shared behaviour: scores, save/load round trip, the model file's settings, corrupt files."""

    def test_scores_shape_and_range(self, trained, split_sets) -> None:
        kind, model = trained
        test = split_sets[2]
        scores = model.scores(test.patches)
        assert scores.shape == (len(test),)
        assert np.all((scores >= 0) & (scores <= 1))
        assert model.kind == kind
        assert 0.0 <= model.threshold <= 1.0
        with pytest.raises(ValueError, match="patches must have shape"):
            model.scores(test.patches[:, :, :5, :5])

    def test_better_than_chance_on_held_out_frames(self, trained, split_sets) -> None:
        _, model = trained
        test = split_sets[2].labelled()
        pred = model.scores(test.patches) >= model.threshold
        truth = test.labels == 1
        tp = (pred & truth).sum()
        f1 = 2 * tp / (pred.sum() + truth.sum())
        assert f1 > 0.6

    def test_save_load_round_trip_identical(self, trained, split_sets, tmp_path: Path) -> None:
        kind, model = trained
        path = model.save(tmp_path / "model.safetensors")
        loaded = _load(kind, path)
        test = split_sets[2]
        np.testing.assert_array_equal(loaded.scores(test.patches), model.scores(test.patches))
        assert loaded.threshold == pytest.approx(model.threshold)
        assert loaded.patch_config == model.patch_config
        assert loaded.candidate_config == model.candidate_config
        again = load_classifier(path, device="cpu")
        assert type(again) is type(model)
        meta = read_metadata(path)
        assert meta["kind"] == kind and meta["format"] == "braggml-model"
        assert meta["candidates"]["finder"] == "peakfinder8"
        assert meta["patch"]["half_size"] == 7
        assert "numpy" in meta["versions"]

    def test_wrong_kind_is_refused(self, trained, tmp_path: Path) -> None:
        kind, model = trained
        path = model.save(tmp_path / "model.safetensors")
        other = "svm" if kind == "cnn" else "cnn"
        with pytest.raises(DataFormatError, match=f"holds a {kind} model, not a {other} model"):
            _load(other, path)

    def test_corrupt_files_are_refused(self, trained, tmp_path: Path) -> None:
        kind, model = trained
        garbage = tmp_path / "garbage.safetensors"
        garbage.write_bytes(b"\x00\x01 not a model at all" * 10)
        with pytest.raises(DataFormatError, match="not a braggml model file"):
            _load(kind, garbage)
        good = model.save(tmp_path / "model.safetensors").read_bytes()
        truncated = tmp_path / "truncated.safetensors"
        truncated.write_bytes(good[: len(good) // 2])
        with pytest.raises(DataFormatError, match="truncated.safetensors"):
            _load(kind, truncated)
        with pytest.raises(InputNotFoundError, match="not found"):
            _load(kind, tmp_path / "missing.safetensors")

    def test_foreign_safetensors_file_is_refused(self, trained, tmp_path: Path) -> None:
        from safetensors.numpy import save_file

        kind, _ = trained
        path = tmp_path / "foreign.safetensors"
        save_file({"w": np.zeros(3, np.float32)}, str(path), metadata={"other": "tool"})
        with pytest.raises(DataFormatError, match="without braggml settings"):
            _load(kind, path)


def _rewrite_metadata(src: Path, dst: Path, change) -> None:
    """Copy a safetensors file with its braggml JSON changed (header length prefix kept consistent)."""
    raw = src.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["braggml"])
    change(meta)
    header["__metadata__"]["braggml"] = json.dumps(meta)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    dst.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


# -- CNN -----------------------------------------------------------------------------------------------------
def test_patch_cnn_forward_backward_shapes() -> None:
    net = cnn.PatchCNN(TINY_CNN)
    x = torch.randn(6, 2, 15, 15, requires_grad=True)
    out = net(x)
    assert out.shape == (6,)
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    wide = cnn.PatchCNN(cnn.CNNConfig(patch_size=21, channels=(4, 8, 8), hidden=8))
    assert wide(torch.zeros(2, 2, 21, 21)).shape == (2,)


def test_cnn_config_validation() -> None:
    from braggml.errors import ConfigError

    with pytest.raises(ConfigError, match="patch_size must be odd"):
        cnn.CNNConfig(patch_size=14)
    with pytest.raises(ConfigError, match="pooling stages"):
        cnn.CNNConfig(patch_size=7, channels=(2, 2, 2, 2))
    with pytest.raises(ConfigError, match="dropout"):
        cnn.CNNConfig(dropout=1.0)
    with pytest.raises(ConfigError, match="device must be"):
        cnn.TrainConfig(device="tpu")
    with pytest.raises(ConfigError, match="balance"):
        cnn.TrainConfig(balance="oversample")


def test_cnn_overfits_a_tiny_set(split_sets) -> None:
    train = split_sets[0].labelled()
    rng = np.random.default_rng(0)
    pos = rng.choice(np.flatnonzero(train.labels == 1), 16, replace=False)
    neg = rng.choice(np.flatnonzero(train.labels == 0), 16, replace=False)
    tiny = train.take(np.concatenate([pos, neg]))
    config = cnn.TrainConfig(epochs=60, batch_size=32, learning_rate=5e-3, patience=60, augment=False,
                             device="cpu")
    model = cnn.train_cnn(tiny, tiny, model_config=cnn.CNNConfig(channels=(8, 16), hidden=32, dropout=0.0),
                          config=config)
    pred = model.scores(tiny.patches) >= model.threshold
    assert (pred == (tiny.labels == 1)).mean() == 1.0
    assert model.history[-1].train_loss < model.history[0].train_loss


def test_cnn_training_is_seeded(split_sets) -> None:
    train, val, test = split_sets
    a = _fit("cnn", train, val, epochs=1)
    b = _fit("cnn", train, val, epochs=1)
    np.testing.assert_array_equal(a.scores(test.patches), b.scores(test.patches))


def test_cnn_mismatched_checkpoint(split_sets, tmp_path: Path) -> None:
    model = _fit("cnn", split_sets[0], split_sets[1], epochs=1)
    path = model.save(tmp_path / "model.safetensors")

    def widen(meta: dict) -> None:
        meta["model_config"]["channels"] = [4, 8]

    bad = tmp_path / "mismatched.safetensors"
    _rewrite_metadata(path, bad, widen)
    with pytest.raises(DataFormatError, match="weight .* has shape"):
        cnn.load_model(bad, device="cpu")

    def deeper(meta: dict) -> None:
        meta["model_config"]["channels"] = [8, 16, 16]

    _rewrite_metadata(path, bad, deeper)
    with pytest.raises(DataFormatError, match="weights do not match"):
        cnn.load_model(bad, device="cpu")

    def newer(meta: dict) -> None:
        meta["format_version"] = 99

    _rewrite_metadata(path, bad, newer)
    with pytest.raises(DataFormatError, match="upgrade braggml"):
        cnn.load_model(bad, device="cpu")


def test_model_file_holds_no_pickle(trained, tmp_path: Path) -> None:
    _, model = trained
    raw = model.save(tmp_path / "model.safetensors").read_bytes()
    assert b"\x80\x04\x95" not in raw[:64] and not raw.startswith(b"PK")  # no pickle / torch zip archive
    n = struct.unpack("<Q", raw[:8])[0]
    json.loads(raw[8 : 8 + n])  # the header is plain JSON


# -- SVM -----------------------------------------------------------------------------------------------------
def test_svm_matches_scikit_learn_decision(split_sets) -> None:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from braggml.ml.svm import _from_pipeline, patch_features

    train, _, test = split_sets
    train = train.labelled()
    x, y = patch_features(train.patches), (train.labels == 1).astype(int)
    for clf in (SVC(kernel="rbf", C=3.0, gamma=0.002), SVC(kernel="linear", C=0.01)):
        pipe = Pipeline([("scale", StandardScaler()), ("svm", clf)]).fit(x[:600], y[:600])
        model = _from_pipeline(pipe, train.patch_config, train.candidate_config, (2, 15, 15))
        if clf.kernel == "linear":
            model.kernel, model.coef = "linear", clf.coef_.ravel().astype(float)
            model.support_vectors = model.dual_coef = None
        np.testing.assert_allclose(
            model.decision_function(test.patches), pipe.decision_function(patch_features(test.patches)),
            rtol=1e-6, atol=1e-6,
        )


def test_svm_with_pca_and_rbf_round_trip(split_sets, tmp_path: Path) -> None:
    train, val, test = split_sets
    config = svm.SVMConfig(cv_folds=2, c_values=(0.1,), pca_components=20, rbf_max_samples=10_000,
                           rbf_c_values=(1.0,), max_train_samples=300)
    model = svm.train_svm(train, val, config=config)
    assert model.pca_components is not None and model.pca_components.shape == (20, 450)
    assert {row["kernel"] for row in model.info["search"]} == {"linear", "rbf"}
    assert model.info["n_train_patches"] == 300
    loaded = svm.load_model(model.save(tmp_path / "svm.safetensors"))
    np.testing.assert_array_equal(loaded.scores(test.patches), model.scores(test.patches))
    if model.kernel == "linear":
        assert loaded.coefficient_map().shape == (2, 15, 15)


def test_svm_coefficient_map_and_overfit(split_sets) -> None:
    train = split_sets[0].labelled()
    rng = np.random.default_rng(1)
    idx = np.concatenate([rng.choice(np.flatnonzero(train.labels == k), 20, replace=False) for k in (0, 1)])
    tiny = train.take(idx)
    model = svm.train_svm(tiny, None, config=svm.SVMConfig(cv_folds=2, c_values=(100.0,), rbf_max_samples=0))
    assert model.kernel == "linear"
    assert (svm.TrainedSVM.decision_function(model, tiny.patches) > 0).tolist() == (tiny.labels == 1).tolist()
    weights = model.coefficient_map()
    assert weights.shape == (2, 15, 15)
    # peaks are brighter in the middle: the central pixels weigh towards "peak"
    assert weights[0, 6:9, 6:9].mean() > weights[0].mean()
