"""Atomic output: the final file appears only after a complete write, temporary files never linger."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import h5py
import numpy as np
import pytest

from braggml.errors import ConfigError
from braggml.io.atomic import atomic_output


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_text_mode_writes_and_renames(tmp_path: Path) -> None:
    out = tmp_path / "peaks.csv"
    with atomic_output(out, mode="w") as fh:
        fh.write("a,b\n1,2\n")
        tmp = Path(fh.name)
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".peaks.csv.") and tmp.name.endswith(".tmp")
        assert not out.exists()
    assert out.read_text() == "a,b\n1,2\n"
    assert _leftovers(tmp_path) == []


def test_binary_mode(tmp_path: Path) -> None:
    out = tmp_path / "x.bin"
    with atomic_output(out, mode="wb") as fh:
        fh.write(b"\x00\x01")
    assert out.read_bytes() == b"\x00\x01"


def test_path_mode_with_h5py(tmp_path: Path) -> None:
    out = tmp_path / "x.h5"
    with atomic_output(out) as tmp, h5py.File(tmp, "w") as f:
        assert isinstance(tmp, Path)
        f["a"] = np.arange(3)
    with h5py.File(out, "r") as f:
        assert f["a"][()].tolist() == [0, 1, 2]
    assert _leftovers(tmp_path) == []


def test_error_keeps_old_file_and_removes_temporary(tmp_path: Path) -> None:
    out = tmp_path / "peaks.csv"
    out.write_text("old\n")
    with pytest.raises(RuntimeError, match="boom"), atomic_output(out, mode="w") as fh:
        fh.write("partial")
        raise RuntimeError("boom")
    assert out.read_text() == "old\n"
    assert _leftovers(tmp_path) == []


def test_keyboard_interrupt_removes_temporary(tmp_path: Path) -> None:
    out = tmp_path / "peaks.h5"
    with pytest.raises(KeyboardInterrupt), atomic_output(out) as tmp:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt
    assert not out.exists()
    assert _leftovers(tmp_path) == []


def test_replaces_existing_file(tmp_path: Path) -> None:
    out = tmp_path / "a.txt"
    out.write_text("old")
    with atomic_output(out, mode="w") as fh:
        fh.write("new")
    assert out.read_text() == "new"


def test_permissions_follow_umask(tmp_path: Path) -> None:
    out = tmp_path / "a.txt"
    with atomic_output(out, mode="w") as fh:
        fh.write("x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    out = tmp_path / "nope" / "peaks.h5"
    with pytest.raises(ConfigError, match="folder .*nope.* does not exist"), atomic_output(out):
        pass


def test_directory_target_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"), atomic_output(tmp_path, mode="w"):
        pass


def test_bad_mode_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mode"), atomic_output(tmp_path / "a", mode="a"):  # type: ignore[call-overload]
        pass
