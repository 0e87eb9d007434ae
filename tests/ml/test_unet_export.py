"""Export of the U-Net for deployment: ONNX (run in ONNX Runtime), TorchScript, and the ``braggml export`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from braggml.cli import main  # noqa: E402
from braggml.errors import ConfigError  # noqa: E402
from braggml.ml.checkpoint import save_arrays  # noqa: E402
from braggml.ml.unet import FLIPS, NormConfig, TrainedUNet, UNet, UNetConfig, export_onnx  # noqa: E402

SMALL = UNetConfig(channels=(8, 16), convs_per_block=1, downsample=2)


def _trained(config: UNetConfig = SMALL, seed: int = 0, flips: int = 1) -> TrainedUNet:
    """A network with random weights and non-trivial batch-norm statistics (so folding them matters)."""
    torch.manual_seed(seed)
    model = UNet(config)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return TrainedUNet(
        model=model.eval(), norm=NormConfig(asinh_scale=2.0), threshold=0.42, flips=flips, cuts={1: 0.42, 4: 0.3}
    )


def _reference(trained: TrainedUNet, x: np.ndarray) -> np.ndarray:
    """The eval-mode network's logits, averaged over the model's flipped copies of the padded input."""
    net = trained.model.eval()
    h, w = x.shape[-2:]
    m = trained.config.multiple
    padded = torch.nn.functional.pad(torch.from_numpy(x), (0, (-w) % m, 0, (-h) % m))
    with torch.no_grad():
        outs = [torch.flip(net(torch.flip(padded, d)), d) if d else net(padded) for d in FLIPS[trained.flips]]
        return torch.stack(outs).mean(0)[..., :h, :w].numpy()


def _session(path: Path):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _trained().save(tmp_path_factory.mktemp("export") / "unet.safetensors")


@pytest.mark.parametrize(
    ("config", "flips"),
    [(SMALL, 1), (UNetConfig(channels=(8, 16, 16), convs_per_block=2, downsample=1), 1), (SMALL, 4)],
)
def test_onnx_gives_the_torch_logits(config: UNetConfig, flips: int, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    trained = _trained(config, flips=flips)
    path = export_onnx(trained, tmp_path / "unet.onnx", tile_size=64)
    session = _session(path)
    assert [i.name for i in session.get_inputs()] == ["inputs"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    rng = np.random.default_rng(1)
    # batch 1 and 3 at the tile side, then other sides (including ones that are not multiples of the padding)
    for shape in [(1, 2, 64, 64), (3, 2, 64, 64), (2, 2, 50, 37), (1, 2, 128, 96), (1, 2, 5, 7)]:
        x = rng.normal(size=shape).astype(np.float32)
        x[:, 1] = rng.random(shape[:1] + shape[2:]) < 0.05  # bad-pixel channel
        (logits,) = session.run(None, {"inputs": x})
        ref = _reference(trained, x)
        assert logits.shape == (shape[0], 1, *shape[2:])
        np.testing.assert_allclose(logits, ref, atol=1e-4, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unet.onnx"]  # no temporary left behind


def test_onnx_metadata_round_trips(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    trained = _trained()
    path = export_onnx(trained, tmp_path / "unet.onnx", tile_size=128, opset=17)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version == 17
    meta = {p.key: p.value for p in proto.metadata_props}
    settings = json.loads(meta["braggml"])
    assert UNetConfig.from_dict(settings["model_config"]) == SMALL
    assert NormConfig(**settings["norm_config"]) == NormConfig(asinh_scale=2.0)
    assert settings["threshold"] == pytest.approx(0.42)
    assert settings["tile_size"] == 128
    assert "torch" in settings["versions"]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 2, "height", "width"]


def test_onnx_export_rejects_bad_settings(tmp_path: Path) -> None:
    trained = _trained()  # multiple 4
    for tile in (0, 6, -4):
        with pytest.raises(ConfigError, match="tile_size must be a positive multiple of 4"):
            export_onnx(trained, tmp_path / "unet.onnx", tile_size=tile)
    with pytest.raises(ConfigError, match="opset"):
        export_onnx(trained, tmp_path / "unet.onnx", opset=0)
    assert not any(tmp_path.iterdir())


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_cli_exports_torchscript_and_onnx(model_file: Path, tmp_path: Path, capsys) -> None:
    onnx = pytest.importorskip("onnx")
    trained = _trained()
    x = np.random.default_rng(2).normal(size=(3, 2, 64, 64)).astype(np.float32)
    ref = _reference(trained, x)

    pt = tmp_path / "unet.pt"
    assert main(["export", str(model_file), "-o", str(pt), "--tile-size", "64"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == "torchscript" and summary["bytes"] == pt.stat().st_size
    extra = {"braggml.json": ""}
    module = torch.jit.load(str(pt), _extra_files=extra)
    assert json.loads(extra["braggml.json"])["tile_size"] == 64
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), ref, atol=1e-4, rtol=0)

    out = tmp_path / "model.bin"  # suffix says nothing: --format decides
    assert main(["export", str(model_file), "-o", str(out), "--format", "onnx", "--tile-size", "64", "-q"]) == 0
    assert capsys.readouterr().out == ""
    proto = onnx.load(str(out))
    assert json.loads({p.key: p.value for p in proto.metadata_props}["braggml"])["threshold"] == pytest.approx(0.42)
    (logits,) = _session(out).run(None, {"inputs": x})
    np.testing.assert_allclose(logits, ref, atol=1e-4, rtol=0)

    default = tmp_path / "unet.onnx"
    assert main(["export", str(model_file), "-o", str(default)]) == 0
    assert json.loads(capsys.readouterr().out)["tile_size"] == 512

    # four flipped copies, with the model's cut for them
    four = tmp_path / "four.pt"
    assert main(["export", str(model_file), "-o", str(four), "--tile-size", "64", "--flips", "4"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["flips"] == 4 and summary["threshold"] == pytest.approx(0.3)
    module = torch.jit.load(str(four), _extra_files=extra)
    assert json.loads(extra["braggml.json"])["flips"] == 4
    trained.use_flips(4)
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), _reference(trained, x), atol=1e-4, rtol=0)


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_cli_export_errors_are_one_line(model_file: Path, tmp_path: Path, capsys) -> None:
    cnn = save_arrays(tmp_path / "cnn.safetensors", {"w": np.zeros(3, np.float32)}, {"kind": "cnn"})
    assert "holds a cnn model, not a unet model" in _error(["export", str(cnn), "-o", str(tmp_path / "a.pt")], capsys)
    missing = tmp_path / "missing.safetensors"
    assert "missing.safetensors" in _error(["export", str(missing), "-o", str(tmp_path / "a.pt")], capsys)
    line = _error(["export", str(model_file), "-o", str(tmp_path / "a.pt"), "--tile-size", "30"], capsys)
    assert "tile_size must be a positive multiple of 4" in line
    line = _error(["export", str(model_file), "-o", str(tmp_path / "a.bin")], capsys)
    assert "--format" in line
    line = _error(["export", str(model_file), "-o", str(tmp_path / "no" / "a.pt")], capsys)
    assert "not a file in an existing folder" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.safetensors"]


def test_onnx_export_without_onnx_says_what_to_install(tmp_path: Path, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'braggml\[onnx\]'"):
        export_onnx(_trained(), tmp_path / "unet.onnx", tile_size=64)
    assert not any(tmp_path.iterdir())
