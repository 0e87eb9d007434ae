"""Shared fixtures of the learned-finder tests: a few simulated frames and their labelled patches."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("safetensors")

from braggml.ml.patches import PatchSet, build_patch_set, split_by_frame  # noqa: E402
from braggml.simulate import get_preset, simulate_to_file  # noqa: E402

N_FRAMES = 5
SEED = 11


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """Tiny networks run fastest on one thread (and CI runners are shared)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def sim_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five frames of the small "test" detector, with truth."""
    path = tmp_path_factory.mktemp("ml") / "frames.h5"
    return simulate_to_file(path, N_FRAMES, get_preset("test"), seed=SEED)


@pytest.fixture(scope="session")
def patch_set(sim_file: Path) -> PatchSet:
    return build_patch_set(sim_file)


@pytest.fixture(scope="session")
def split_sets(patch_set: PatchSet) -> tuple[PatchSet, PatchSet, PatchSet]:
    s = split_by_frame(patch_set.groups(), (0.6, 0.2, 0.2), seed=0)
    return patch_set.take(s.train), patch_set.take(s.val), patch_set.take(s.test)
