"""Training the CNN under torchrun: rank detection, per-rank shares of each epoch, and two-process CPU runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from braggml.errors import ConfigError
from braggml.ml import cnn
from braggml.ml.checkpoint import read_arrays
from braggml.simulate import get_preset, simulate_to_file

TORCHRUN_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE",
                "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")
RUN_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def six_frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulate_to_file(tmp_path_factory.mktemp("ddp") / "frames.h5", 6, get_preset("test"), seed=3)


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Start two CPU processes with torch.distributed.run (a free rendezvous port is picked by --standalone)."""
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


# -- per-rank shares -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 5, 8, 1075])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_rank_shares_are_equal_disjoint_and_cover_the_order(n: int, world_size: int) -> None:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    shares = [cnn.rank_indices(order, r, world_size) for r in range(world_size)]
    per_rank = -(-n // world_size)
    assert [len(s) for s in shares] == [per_rank] * world_size
    together = torch.cat(shares).numpy()
    assert set(together.tolist()) == set(range(n))  # covering
    counts = np.bincount(together, minlength=n)
    padding = per_rank * world_size - n
    assert counts.sum() - n == padding
    if n >= world_size:  # disjoint up to the padding, which repeats the first entries of the order once
        assert counts.max() <= 2
        assert sorted(np.flatnonzero(counts == 2).tolist()) == sorted(order[:padding].tolist())
        for s in shares:
            assert len(set(s.tolist())) == len(s)


def test_rank_shares_follow_the_order() -> None:
    order = torch.tensor([7, 3, 9, 1, 4])
    assert cnn.rank_indices(order, 0, 2).tolist() == [7, 9, 4]
    assert cnn.rank_indices(order, 1, 2).tolist() == [3, 1, 7]
    assert torch.equal(cnn.rank_indices(order, 0, 1), order)
    assert cnn.rank_indices(order[:0], 1, 2).numel() == 0


@pytest.mark.parametrize(("rank", "world_size", "match"), [(2, 2, "rank"), (-1, 2, "rank"), (0, 0, "world_size")])
def test_rank_shares_reject_bad_ranks(rank: int, world_size: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cnn.rank_indices(torch.arange(4), rank, world_size)


# -- environment -----------------------------------------------------------------------------------------------
GOOD_ENV = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "MASTER_ADDR": "node1", "MASTER_PORT": "29500"}


def test_context_from_torchrun_environment() -> None:
    ctx = cnn.distributed_context(GOOD_ENV)
    assert ctx == cnn.DistributedContext(rank=3, local_rank=1, world_size=4)
    assert not ctx.is_main
    assert cnn.distributed_context({**GOOD_ENV, "RANK": "0"}).is_main


@pytest.mark.parametrize("env", [{}, {"WORLD_SIZE": "1", "RANK": "0"}, {"WORLD_SIZE": " "}])
def test_single_process_has_no_context(env: dict[str, str]) -> None:
    assert cnn.distributed_context(env) is None


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"RANK": None}, "RANK is not set"),
        ({"LOCAL_RANK": None}, "LOCAL_RANK is not set"),
        ({"MASTER_ADDR": None}, "MASTER_ADDR is not set"),
        ({"MASTER_PORT": "http"}, "MASTER_PORT must be an integer"),
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE must be an integer"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE must be >= 1"),
        ({"RANK": "4"}, r"RANK must lie in \[0, 4\)"),
        ({"LOCAL_RANK": "-1"}, "LOCAL_RANK must be >= 0"),
    ],
)
def test_bad_torchrun_environment_is_rejected(change: dict[str, str | None], match: str) -> None:
    env = {k: v for k, v in {**GOOD_ENV, **change}.items() if v is not None}
    with pytest.raises(ConfigError, match=match):
        cnn.distributed_context(env)


def test_rank_device() -> None:
    assert cnn.rank_device("cpu", 3) == torch.device("cpu")
    if torch.cuda.is_available():
        assert cnn.rank_device("auto", 0) == torch.device("cuda", 0)
    else:
        assert cnn.rank_device("auto", 1) == torch.device("cpu")
        with pytest.raises(ConfigError, match="no CUDA device"):
            cnn.rank_device("cuda", 0)
    with pytest.raises(ConfigError, match="device must be"):
        cnn.rank_device("tpu", 0)


def test_svm_refuses_torchrun(monkeypatch: pytest.MonkeyPatch, six_frames: Path, tmp_path: Path) -> None:
    import argparse

    from braggml.ml.cli_support import add_train_arguments, run_train

    for name, value in {**GOOD_ENV, "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    args = parser.parse_args([str(six_frames), "--model", "svm", "-o", str(tmp_path / "m.safetensors")])
    with pytest.raises(ConfigError, match="only --model cnn runs under torchrun"):
        run_train(args)
    assert not list(tmp_path.iterdir())


# -- two CPU processes -------------------------------------------------------------------------------------------
def test_train_command_under_torchrun(six_frames: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.safetensors"
    run = _torchrun(["-m", "braggml", "train", "--model", "cnn", str(six_frames), "-o", str(out), "--epochs", "2",
                     "--batch-size", "64", "--channels", "4", "8", "--hidden", "8", "--device", "cpu",
                     "--no-plots"], tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    epoch_lines = [line for line in run.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/2", "2/2"]  # printed by rank 0 only
    assert run.stdout.count("model written to") == 1
    assert run.stdout.count("finding candidates") == 1
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["model.safetensors"]
    model = cnn.load_model(out, device="cpu")
    assert model.info["world_size"] == 2
    assert model.info["global_batch_size"] == 128
    assert len(model.history) == 2
    assert 0.0 < model.threshold < 1.0
    metrics = json.loads(out.with_suffix(".metrics.json").read_text())
    assert metrics["info"]["world_size"] == 2


RANK_SCRIPT = """
import json
import sys
from dataclasses import asdict

from braggml.ml import cnn
from braggml.ml.patches import build_patch_set, split_by_frame

context = cnn.distributed_context()
cnn.init_distributed(context, "cpu")
patches = build_patch_set(sys.argv[1])
split = split_by_frame(patches.groups(), (0.6, 0.2, 0.2), seed=0)
model = cnn.train_cnn(
    patches.take(split.train), patches.take(split.val),
    model_config=cnn.CNNConfig(channels=(4, 8), hidden=8),
    config=cnn.TrainConfig(epochs=4, batch_size=48, patience=1, balance="sample", device="cpu", seed=5),
)
model.save(f"rank{context.rank}.safetensors")
with open(f"rank{context.rank}.json", "w") as fh:
    json.dump({"threshold": model.threshold, "history": [asdict(r) for r in model.history]}, fh)
cnn.shutdown_distributed()
"""


def test_every_rank_ends_with_the_same_model(six_frames: Path, tmp_path: Path) -> None:
    script = tmp_path / "train_ranks.py"
    script.write_text(textwrap.dedent(RANK_SCRIPT))
    run = _torchrun([str(script), str(six_frames)], tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert results[0]["threshold"] == results[1]["threshold"]
    for h in results:
        for record in h["history"]:
            record.pop("seconds")
    assert results[0]["history"] == results[1]["history"]  # same figures, same early-stopping epoch
    weights = [read_arrays(tmp_path / f"rank{r}.safetensors", kind="cnn")[0] for r in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        np.testing.assert_array_equal(weights[0][name], weights[1][name], err_msg=name)
