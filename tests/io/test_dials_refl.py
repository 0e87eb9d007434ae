"""DIALS reflection tables (.refl): written as dials.find_spots writes its strong spots, read back, and (where DIALS
is installed) read by DIALS itself."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import msgpack
import numpy as np
import pytest

from braggml.cli import main
from braggml.errors import ConfigError, DataFormatError, InputNotFoundError
from braggml.io.dials_refl import REFL_TAG, experiment_layout, read_refl, write_refl
from braggml.io.peaklists import read_peaks, write_peaks
from braggml.peaks import PeakList

DIALS_PYTHON = Path("/usr/bin/python3")


def _peaks() -> PeakList:
    return PeakList.from_columns(
        n_frames=3,
        frame=[0, 0, 2],
        row=[10.25, 40.0, 7.5],
        col=[20.5, 3.75, 60.0],
        intensity=[900.0, 50.0, 400.0],
        snr=[30.0, 5.0, 20.0],
        n_pixels=[9, 2, 16],
    )


def _table(path: Path) -> dict:
    tag, version, table = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)
    assert (tag, version) == (REFL_TAG, 1)
    return table


def _column(table: dict, name: str, dtype: str, width: int = 1) -> np.ndarray:
    kind, (n, blob) = table["data"][name]
    values = np.frombuffer(blob, dtype=dtype)
    return values.reshape(n, width) if width > 1 else values


def _expt(path: Path, n_experiments: int, sequence: bool) -> Path:
    imageset = {"__id__": "ImageSequence" if sequence else "ImageSet", "images": ["a.cbf"]}
    experiments = [{"__id__": "Experiment", "identifier": f"id-{k}", "imageset": 0} for k in range(n_experiments)]
    path.write_text(json.dumps({"__id__": "ExperimentList", "experiment": experiments, "imageset": [imageset]}))
    return path


def test_columns_as_dials_writes_strong_spots(tmp_path: Path) -> None:
    table = _table(write_refl(_peaks(), tmp_path / "s.refl"))
    assert table["nrows"] == 3 and table["identifiers"] == {}
    assert set(table["data"]) == {
        "bbox", "flags", "id", "intensity.sum.value", "intensity.sum.variance", "n_signal", "panel",
        "xyzobs.px.value", "xyzobs.px.variance",
    }
    xyz = _column(table, "xyzobs.px.value", "<f8", 3)
    assert xyz.tolist() == [[21.0, 10.75, 0.5], [4.25, 40.5, 0.5], [60.5, 8.0, 2.5]]  # corner origin, as DIALS
    assert np.allclose(_column(table, "xyzobs.px.variance", "<f8", 3), 1 / 12)
    assert _column(table, "id", "<i4").tolist() == [0, 0, 2]  # stills: one experiment per frame
    assert _column(table, "flags", "<u8").tolist() == [32] * 3  # strong
    assert _column(table, "intensity.sum.variance", "<f8").tolist() == pytest.approx([900.0, 100.0, 400.0])
    bbox = _column(table, "bbox", "<i4", 6)
    assert bbox[2].tolist() == [58, 63, 6, 11, 2, 3]  # about 4 x 4 pixels around the 16-pixel peak, on image 2
    assert all(b[0] <= x < b[1] and b[2] <= y < b[3] for b, (x, y, _z) in zip(bbox, xyz))


def test_read_back(tmp_path: Path) -> None:
    back = read_peaks(write_peaks(_peaks(), tmp_path / "s.refl"))
    original = _peaks()
    assert np.array_equal(back.frame, original.frame)
    assert np.allclose(back.row, original.row) and np.allclose(back.col, original.col)
    assert np.array_equal(back.intensity, original.intensity) and np.array_equal(back.n_pixels, original.n_pixels)


def test_sequence_and_identifiers_from_the_experiment_list(tmp_path: Path) -> None:
    sequence = _expt(tmp_path / "seq.expt", 1, sequence=True)
    assert experiment_layout(sequence) == ("sequence", {0: "id-0"})
    table = _table(write_peaks(_peaks(), tmp_path / "a.refl", dials_experiments=sequence))
    assert _column(table, "id", "<i4").tolist() == [0, 0, 0] and table["identifiers"] == {0: "id-0"}
    stills = _expt(tmp_path / "stills.expt", 3, sequence=False)
    table = _table(write_peaks(_peaks(), tmp_path / "b.refl", dials_experiments=stills))
    assert _column(table, "id", "<i4").tolist() == [0, 0, 2] and table["identifiers"][2] == "id-2"
    with pytest.raises(ConfigError, match="has 2 experiments, but peaks lie on frame 2"):
        write_peaks(_peaks(), tmp_path / "c.refl", dials_experiments=_expt(tmp_path / "two.expt", 2, False))


def test_multi_panel_geometry_is_warned_about(tmp_path: Path) -> None:
    from braggml.geometry import DetectorGeometry, Panel

    panels = tuple(Panel(f"p{k}", 0, 99, 50 * k, 50 * k + 49, 0.0, 50.0 * k, 1e4) for k in range(2))
    with pytest.warns(UserWarning, match="DIALS must read these frames as one panel"):
        write_peaks(_peaks(), tmp_path / "s.refl", geometry=DetectorGeometry(panels=panels))


def test_info_describes_a_table(tmp_path: Path, capsys) -> None:
    write_refl(_peaks(), tmp_path / "s.refl")
    assert main(["info", str(tmp_path / "s.refl")]) == 0
    text = capsys.readouterr().out
    for line in ("rows:           3", "experiments:    2 (ids 0..2)", "images:         2 (z 0..2)", "strong:         3",
                 "indexed:        0", "xyzobs.px.value (vec3<double>)"):
        assert line in text
    (tmp_path / "x.refl").write_text("no")
    assert main(["info", str(tmp_path / "x.refl")]) == 2
    assert "x.refl: not a DIALS reflection table" in capsys.readouterr().err


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="nowhere.expt"):
        experiment_layout(tmp_path / "nowhere.expt")
    (tmp_path / "x.expt").write_text("{}")
    with pytest.raises(DataFormatError, match=r"x\.expt: not a DIALS experiment list"):
        experiment_layout(tmp_path / "x.expt")
    (tmp_path / "text.refl").write_text("hello")
    with pytest.raises(DataFormatError, match=r"text\.refl: not a DIALS reflection table"):
        read_refl(tmp_path / "text.refl")
    table = _table(write_refl(_peaks(), tmp_path / "p.refl"))
    table["data"]["panel"] = ["std::size_t", [3, np.array([0, 1, 0], "<u8").tobytes()]]
    (tmp_path / "p.refl").write_bytes(msgpack.packb([REFL_TAG, 1, table], use_bin_type=True))
    with pytest.raises(DataFormatError, match="spots lie on 2 detector panels"):
        read_refl(tmp_path / "p.refl")
    del table["data"]["xyzobs.px.value"]
    (tmp_path / "p.refl").write_bytes(msgpack.packb([REFL_TAG, 1, table], use_bin_type=True))
    with pytest.raises(DataFormatError, match="no xyzobs.px.value column"):
        read_refl(tmp_path / "p.refl")


def test_find_writes_a_reflection_table(tmp_path: Path, capsys) -> None:
    frames = np.random.default_rng(0).poisson(20.0, (2, 64, 72)).astype(np.int32)
    frames[:, 30:33, 40:43] += 900
    np.save(tmp_path / "run.npy", frames)
    out = tmp_path / "strong.refl"
    assert main(["find", str(tmp_path / "run.npy"), "-o", str(out), "-q"]) == 0
    peaks = read_peaks(out)
    assert peaks.frame.tolist() == [0, 1] and np.allclose(peaks.row, 31.0, atol=0.05)
    assert main(["find", str(tmp_path / "run.npy"), "-o", str(tmp_path / "p.h5"), "--dials-expt", "x.expt"]) == 2
    assert "--dials-expt goes with a DIALS reflection table output" in capsys.readouterr().err


@pytest.mark.skipif(
    not DIALS_PYTHON.is_file() or shutil.which("dials.find_spots") is None, reason="DIALS is not installed"
)
def test_dials_reads_it(tmp_path: Path) -> None:
    path = write_refl(_peaks(), tmp_path / "s.refl")
    script = (
        "import sys; from dials.array_family import flex\n"
        "t = flex.reflection_table.from_file(sys.argv[1])\n"
        "print(len(t), t.get_flags(t.flags.strong).count(True), list(t['xyzobs.px.value'][2]), list(t['id']))\n"
    )
    done = subprocess.run([str(DIALS_PYTHON), "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    if done.returncode and "No module named" in done.stderr:
        pytest.skip("DIALS' Python modules are not installed")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "3 3 [60.5, 8.0, 2.5] [0, 0, 2]"
