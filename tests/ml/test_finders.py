"""The cnn and svm finders end to end, and ``braggml train`` run in-process."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from braggml.errors import ConfigError, DataFormatError, InputNotFoundError
from braggml.evaluate.matching import match_frame
from braggml.finder import make_finder
from braggml.geometry import PixelMaps
from braggml.ml.cli_support import add_train_arguments, run_train
from braggml.ml.finders import CNNFinder, CNNFinderConfig, SVMFinder, SVMFinderConfig
from braggml.simulate import Simulator, get_preset

from .conftest import SEED


def _train(tmp_path: Path, sim_file: Path, kind: str, *extra: str) -> tuple[int, Path]:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    out = tmp_path / f"{kind}.safetensors"
    argv = [str(sim_file), "--model", kind, "-o", str(out), "--split", "0.6", "0.2", "0.2", "-q", *extra]
    return run_train(parser.parse_args(argv)), out


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, sim_file: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    rc_cnn, cnn_path = _train(folder, sim_file, "cnn", "--epochs", "4", "--device", "cpu", "--channels", "8", "16",
                              "--convs-per-stage", "1", "--hidden", "32")
    rc_svm, svm_path = _train(folder, sim_file, "svm", "--cv-folds", "2", "--c-values", "0.01", "0.1",
                              "--rbf-max-samples", "0")
    assert rc_cnn == 0 and rc_svm == 0
    return {"cnn": cnn_path, "svm": svm_path}


def test_train_writes_model_metrics_and_plots(models: dict[str, Path]) -> None:
    for kind, path in models.items():
        assert path.is_file()
        metrics = json.loads(path.with_suffix(".metrics.json").read_text())
        test = metrics["test"]
        assert set(test["patches"]) >= {"precision", "recall", "f1", "accuracy", "confusion"}
        assert np.asarray(test["patches"]["confusion"]).shape == (2, 2)
        assert 0.0 < test["peaks"]["f1"] <= 1.0
        assert test["peaks"]["recall"] <= test["peaks"]["candidate_recall"]
        plots = path.with_name(path.stem + "_plots")
        names = {p.name for p in plots.glob("*.png")}
        assert {"confusion_matrix.png", "precision_recall_patches.png", "precision_recall_peaks.png",
                "training_curves.png"} <= names
        if kind == "svm":
            assert "coefficient_map.png" in names
        split = metrics["info"]["split"]
        sets = [set(split[k]) for k in ("train", "val", "test")]
        assert all(sets) and not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
        assert metrics["test"]["n_frames"] == len(sets[2])


def test_train_prints_per_epoch_metrics(tmp_path: Path, sim_file: Path, capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    args = parser.parse_args([str(sim_file), "--model", "cnn", "-o", str(tmp_path / "m.safetensors"),
                              "--epochs", "2", "--max-frames", "3", "--no-plots", "--device", "cpu",
                              "--channels", "4", "8", "--convs-per-stage", "1", "--threads", "1"])
    assert run_train(args) == 0
    out = capsys.readouterr().out
    assert "epoch   1/2" in out and "val P" in out and "F1" in out
    assert "held-out test patches" in out and "confusion" in out
    assert not (tmp_path / "m_plots").exists()


def test_train_rejects_bad_options(tmp_path: Path, sim_file: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        _train(tmp_path, sim_file, "cnn", "--candidate-param", "no_such_param=3")
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        _train(tmp_path, sim_file, "cnn", "--candidate-param", "minimum_snr")
    with pytest.raises(ConfigError, match="does not exist"):
        parser = argparse.ArgumentParser()
        add_train_arguments(parser)
        run_train(parser.parse_args([str(sim_file), "--model", "svm", "-o", str(tmp_path / "no" / "m.st")]))
    with pytest.raises(InputNotFoundError, match=r"missing\.h5: no such file"):
        _train(tmp_path, tmp_path / "missing.h5", "cnn")


def test_train_on_the_candidates_the_finder_classifies(tmp_path: Path, sim_file: Path) -> None:
    """--min-candidate-snr leaves the faint candidates (which the finders do not classify) out of training."""
    from braggml.ml.checkpoint import load_classifier

    quick = ("--cv-folds", "2", "--c-values", "0.01", "--rbf-max-samples", "0", "--no-plots")
    (tmp_path / "every").mkdir()
    rc_every, every = _train(tmp_path / "every", sim_file, "svm", *quick)
    rc_floor, floor = _train(tmp_path, sim_file, "svm", *quick, "--min-candidate-snr", "3")
    assert rc_every == 0 and rc_floor == 0
    a, b = load_classifier(every).info, load_classifier(floor).info
    assert a["min_candidate_snr"] == 0 and b["min_candidate_snr"] == 3
    assert 0 < b["n_train_patches"] < a["n_train_patches"]
    with pytest.raises(ConfigError, match="--min-candidate-snr must be >= 0"):
        _train(tmp_path, sim_file, "svm", "--min-candidate-snr", "-1")


@pytest.mark.parametrize("kind", ["cnn", "svm"])
def test_finder_finds_strong_spots_on_a_new_frame(models: dict[str, Path], kind: str) -> None:
    sim = Simulator(get_preset("test"), seed=SEED)
    frame = sim.frame(40)  # not one of the training frames
    maps = sim.layout.pixel_maps(sim.wavelength_a)
    finder = CNNFinder(model_path=str(models["cnn"]), device="cpu") if kind == "cnn" else \
        SVMFinder(model_path=str(models["svm"]))
    image = frame.image.copy()
    peaks = finder.find(image, maps.mask, maps=maps)
    np.testing.assert_array_equal(image, frame.image)
    assert peaks.n_frames == 1 and len(peaks) > 0
    assert np.all((peaks.score >= finder.threshold) & (peaks.score <= 1.0))
    assert np.all(np.isfinite(peaks.row)) and np.all(np.isfinite(peaks.snr))
    spots = frame.spots
    strong = spots["observable"] & (spots["snr"] >= 20)
    truth_rc = np.column_stack([spots["row"][strong], spots["col"][strong]])
    _, ti = match_frame(np.column_stack([peaks.row, peaks.col]), truth_rc, 2.0)
    assert ti.size >= 0.9 * strong.sum()
    assert finder.last_rejections["classifier"] == len(finder.last_candidates) - len(peaks)
    # a stricter threshold keeps a subset
    strict = type(finder)(finder.config, score_threshold=0.99)
    assert len(strict.find(frame.image, maps.mask, maps=maps)) <= len(peaks)


@pytest.mark.parametrize("kind", ["cnn", "svm"])
def test_shipped_model_finds_the_spots_of_an_unseen_detector(kind: str) -> None:
    """Without a model file the finders use the shipped models, trained on Jungfrau and Pilatus frames only."""
    finder = make_finder(kind)
    assert finder.config.model_path == ""
    assert finder.model.kind == kind and finder.model.info["labels"] == "simulation truth"
    assert any("jungfrau4m" in f for f in finder.model.info["data"])
    assert not any("test" in Path(f).name or "eiger" in f for f in finder.model.info["data"])
    sim = Simulator(get_preset("test"), seed=SEED)
    maps = sim.layout.pixel_maps(sim.wavelength_a)
    frame = sim.frame(40)
    peaks = finder.find(frame.image, maps.mask, maps=maps)
    s = frame.spots
    found, spots = np.column_stack([peaks.row, peaks.col]), np.column_stack([s["row"], s["col"]])
    strong = s["observable"] & (s["snr"] >= 10)
    _, ti = match_frame(found, spots[strong], 2.0)
    assert strong.sum() > 100 and len(ti) >= 0.88 * strong.sum()  # cnn 164, svm 152 of 169 (2-3 along a gap)
    fi, _ = match_frame(found, spots, 2.0)
    assert len(fi) >= 0.97 * len(peaks)  # few peaks where no reflection is


def test_candidates_below_min_snr_are_not_classified() -> None:
    sim = Simulator(get_preset("test"), seed=SEED)
    frame, maps = sim.frame(40), sim.layout.pixel_maps(sim.wavelength_a)
    floor = make_finder("cnn")
    assert floor.config.min_snr == 3.0
    kept = floor.find(frame.image, maps.mask, maps=maps)
    assert len(kept) > 100 and kept.snr.min() >= 3.0
    assert floor.last_rejections["min_snr"] > 0 and floor.last_candidates.snr.min() >= 3.0
    every = make_finder("cnn", min_snr=0.0)
    all_peaks = every.find(frame.image, maps.mask, maps=maps)
    assert every.last_rejections["min_snr"] == 0
    np.testing.assert_array_equal(np.sort(all_peaks.row[all_peaks.snr >= 3.0]), np.sort(kept.row))
    with pytest.raises(ConfigError, match="min_snr"):
        SVMFinderConfig(min_snr=-1.0)


def test_shipped_models_reject_a_blank_frame() -> None:
    rng = np.random.default_rng(4)
    image = rng.poisson(3.0, (256, 256)).astype(np.int32)
    image[100, 100] = 5000  # a lone hot pixel
    for kind in ("cnn", "svm"):
        assert len(make_finder(kind).find(image)) <= 1, kind


@pytest.mark.parametrize("kind", ["cnn", "svm"])
def test_peaks_on_a_powder_ring_are_dropped_and_spots_off_it_kept(kind: str) -> None:
    """The shipped models' candidates keep ring peaks (so the classifiers saw them); the finders drop them."""
    rng = np.random.default_rng(2)
    maps = PixelMaps.fallback((256, 256))
    r = maps.radius_px.astype(np.float64)
    rows, cols = np.indices((256, 256))
    expected = 10.0 + 30 * np.exp(-((r - 70) ** 2) / (2 * 1.5**2))
    grains = [(127.5 + 70 * np.sin(a), 127.5 + 70 * np.cos(a)) for a in rng.uniform(0, 2 * np.pi, 40)]
    spots = [(40.0, 40.0), (200.0, 60.0), (60.0, 210.0), (215.0, 215.0)]
    for rc, c in grains + spots:
        expected += 400.0 * np.exp(-((rows - rc) ** 2 + (cols - c) ** 2) / (2 * 1.0**2))
    image = rng.poisson(expected).astype(np.int32)

    def n_on_ring(peaks) -> int:
        return int((np.abs(np.hypot(peaks.row - 127.5, peaks.col - 127.5) - 70) < 4).sum())

    kept = make_finder(kind).find(image, maps=maps)
    assert n_on_ring(kept) == 0
    _, ti = match_frame(np.column_stack([kept.row, kept.col]), np.array(spots), 1.0)
    assert len(ti) == len(spots)
    assert n_on_ring(make_finder(kind, reject_powder_rings=False).find(image, maps=maps)) >= 1  # 3 of 40 grains


def test_peaks_along_a_panel_border_are_dropped_and_spots_inside_kept() -> None:
    """A CSPAD-like sensor: the column along the border between two panels has wider pixels (2.5 times the
    background) with pairs of bright pixels in it; the finders drop peaks whose core lies along the other panel,
    as the classical finders do, and keep the spots inside the panels."""
    rng = np.random.default_rng(5)
    shape = (256, 256)
    panel = np.zeros(shape, np.int32)
    panel[:, 128:] = 1
    maps = PixelMaps(panel_id=panel, radius_px=PixelMaps.fallback(shape).radius_px, mask=np.zeros(shape, bool),
                     resolution_a=None)
    rows, cols = np.indices(shape)
    expected = np.full(shape, 4.0)
    expected[:, 127] *= 2.5
    border = [(float(r), 127.0) for r in range(16, 250, 24)]
    spots = [(40.0, 40.0), (200.0, 60.0), (60.0, 200.0), (215.0, 215.0)]
    for rc, c in spots:
        expected += 300.0 * np.exp(-((rows - rc) ** 2 + (cols - c) ** 2) / (2 * 0.9**2))
    for rc, c in border:  # two bright pixels, one above the other
        expected[int(rc) : int(rc) + 2, int(c)] += 80.0
    image = rng.poisson(expected).astype(np.int32)
    for kind in ("cnn", "svm"):
        kept = make_finder(kind).find(image, maps=maps)
        _, ti = match_frame(np.column_stack([kept.row, kept.col]), np.array(spots), 1.0)
        assert len(ti) == len(spots), kind
        assert not (np.abs(kept.col - 127.5) < 2).any(), kind
    every = make_finder("cnn", masked_peaks="keep")
    assert every.candidates.config.masked_peaks == "keep"
    kept = every.find(image, maps=maps)
    assert (np.abs(kept.col - 127.5) < 2).sum() >= len(border) // 2
    with pytest.raises(ConfigError, match="masked_peaks"):
        CNNFinderConfig(masked_peaks="hide")


def test_finder_configuration_errors(models: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="ice_rings"):
        SVMFinderConfig(ice_rings="sometimes")
    with pytest.raises(InputNotFoundError, match="no_such_model"):
        CNNFinder(model_path="no_such_model.safetensors")
    with pytest.raises(ConfigError, match="score_threshold"):
        CNNFinderConfig(model_path="m", score_threshold=1.5)
    with pytest.raises(ConfigError, match="batch_size"):
        SVMFinderConfig(model_path="m", batch_size=0)
    with pytest.raises(ConfigError, match="device"):
        CNNFinder(model_path=str(models["cnn"]), device="gpu0")
    with pytest.raises(DataFormatError, match="holds a svm model, not a cnn model"):
        CNNFinder(model_path=str(models["svm"]))
    with pytest.raises(DataFormatError, match="holds a cnn model, not a svm model"):
        SVMFinder(model_path=str(models["cnn"]))


def test_finder_on_an_empty_frame(models: dict[str, Path]) -> None:
    finder = CNNFinder(model_path=str(models["cnn"]), device="cpu")
    peaks = finder.find(np.zeros((64, 64), np.float32))
    assert len(peaks) == 0 and peaks.n_frames == 1


def test_info_describes_trained_models(models: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    from braggml.cli import main
    from braggml.ml.checkpoint import load_classifier
    from braggml.ml.describe import describe_model

    for kind, path in models.items():
        info = describe_model(path)
        metrics = json.loads(path.with_suffix(".metrics.json").read_text())
        model = load_classifier(path, device="cpu")
        assert info["kind"] == kind and info["builtin"] is None
        assert info["threshold"] == pytest.approx(model.threshold)
        assert info["patch_size_px"] == 15
        assert info["candidates"]["finder"] == "peakfinder8"
        assert info["n_training_files"] == 1
        assert info["test"]["f1"] == pytest.approx(metrics["test"]["peaks"]["f1"])
        if kind == "cnn":  # fitted numbers: every weight and bias, not the batch-norm statistics
            assert info["parameters"] == sum(p.numel() for p in model.model.parameters())
    assert main(["info", str(models["cnn"]), str(models["svm"])]) == 0
    out = capsys.readouterr().out
    assert "patch CNN classifier (--finder cnn)" in out and "patch SVM classifier (--finder svm)" in out
    assert f"F1 {describe_model(models['svm'])['test']['f1']:.3f}" in out


def test_info_describes_the_builtin_models(capsys: pytest.CaptureFixture) -> None:
    from braggml.cli import main
    from braggml.ml.checkpoint import read_metadata
    from braggml.ml.describe import BUILTIN_MODELS, describe_model
    from braggml.ml.unet import load_unet

    assert main(["info", "--builtin-models"]) == 0
    out = capsys.readouterr().out
    for kind in ("cnn", "svm", "unet"):
        assert f"yes: what --finder {kind} uses without --model" in out
    unet = describe_model(BUILTIN_MODELS["unet"])
    loaded = load_unet(BUILTIN_MODELS["unet"], device="cpu")
    assert unet["builtin"] == "unet" and unet["threshold"] == pytest.approx(loaded.threshold)
    assert unet["parameters"] == sum(p.numel() for p in loaded.model.parameters())
    assert "jungfrau4m" in unet["trained_on"]
    for kind in ("cnn", "svm"):  # the shipped record names its frames, not where they lay when it was trained
        names = read_metadata(BUILTIN_MODELS[kind])["info"]["data"]
        assert names and not any("/" in name for name in names)
        assert describe_model(BUILTIN_MODELS[kind])["n_training_files"] == len(names)
    assert describe_model(BUILTIN_MODELS["svm"])["min_candidate_snr"] == 3  # what the finder classifies


def test_info_rejects_bad_model_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from braggml.cli import main

    assert main(["info", str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors: model file not found" in capsys.readouterr().err
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model")
    assert main(["info", str(junk)]) == 2
    assert "junk.safetensors: not a braggml model file" in capsys.readouterr().err
    assert main(["info"]) == 2
    assert "give a detector or model file, or --builtin-models" in capsys.readouterr().err


def test_find_rejects_a_bad_model_file_before_any_frame(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Every learned finder fails at once with one line naming the model file, writing nothing, where the U-Net
    (which reads its model on first use) used to fail on every frame and leave an empty peak list."""
    from braggml.cli import main

    frames = tmp_path / "run.npy"
    np.save(frames, np.random.default_rng(0).poisson(5.0, (2, 64, 64)).astype(np.int32))
    out = tmp_path / "peaks.csv"
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model")
    for finder in ("unet", "cnn", "svm"):
        for model, message in ((tmp_path / "missing.safetensors", "missing.safetensors: model file not found"),
                               (junk, "junk.safetensors: not a braggml model file")):
            assert main(["find", str(frames), "--finder", finder, "--model", str(model), "-o", str(out), "-q"]) == 2
            assert message in capsys.readouterr().err
            assert not out.exists()
    from braggml.ml.describe import BUILTIN_MODELS

    other = BUILTIN_MODELS["cnn"]
    assert main(["find", str(frames), "--finder", "unet", "--model", str(other), "-o", str(out), "-q"]) == 2
    assert "holds a cnn model, not a unet model (use --finder cnn)" in capsys.readouterr().err
