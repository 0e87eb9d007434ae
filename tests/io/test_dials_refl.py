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


def _expt(path: Path, n_experiments: int, sequence: bool, panels: list[tuple[int, int, int, int]] = ()) -> Path:
    """An experiment list; ``panels``: (fast offset, slow offset, fast size, slow size) of each detector panel."""
    imageset = {"__id__": "ImageSequence" if sequence else "ImageSet", "images": ["a.cbf"]}
    experiments = [{"__id__": "Experiment", "identifier": f"id-{k}", "imageset": 0} for k in range(n_experiments)]
    doc = {"__id__": "ExperimentList", "experiment": experiments, "imageset": [imageset]}
    if panels:
        doc["detector"] = [{"panels": [{"name": f"row-{k:02d}", "raw_image_offset": [f0, s0], "image_size": [nf, ns]}
                                       for k, (f0, s0, nf, ns) in enumerate(panels)]}]
    path.write_text(json.dumps(doc))
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


def test_spots_of_a_multi_panel_detector_are_written_and_read_in_panel_pixels(tmp_path: Path, capsys) -> None:
    """A detector of two panels of 50 x 80 pixels, the second 60 rows down (as dials.import gives a Pilatus
    12M's modules): each peak goes on its panel, in its pixels; a peak in the gap is left out with a warning;
    reading places them back on the image, with the experiment list only."""
    expt = _expt(tmp_path / "two.expt", 3, False, panels=[(0, 0, 80, 50), (0, 60, 80, 50)])
    peaks = PeakList.from_columns(
        n_frames=3, frame=[0, 0, 2, 2], row=[10.25, 70.0, 55.0, 109.4], col=[20.5, 3.75, 5.0, 79.0],
        intensity=[900.0, 50.0, 30.0, 400.0], snr=[30.0, 5.0, 4.0, 20.0], n_pixels=[9, 2, 2, 16],
    )
    with pytest.warns(UserWarning, match="1 peaks lie outside every panel of the DIALS detector"):
        table = _table(write_peaks(peaks, tmp_path / "s.refl", dials_experiments=expt))
    assert _column(table, "panel", "<u8").tolist() == [0, 1, 1]
    xyz = _column(table, "xyzobs.px.value", "<f8", 3)
    assert np.allclose(xyz, [[21.0, 10.75, 0.5], [4.25, 10.5, 0.5], [79.5, 49.9, 2.5]])
    bbox = _column(table, "bbox", "<i4", 6)
    assert all(b[0] <= x < b[1] and b[2] <= y < b[3] for b, (x, y, _z) in zip(bbox, xyz))
    with pytest.raises(DataFormatError, match=r"spots lie on 2 detector panels; give the experiment list"):
        read_peaks(tmp_path / "s.refl")
    back = read_peaks(tmp_path / "s.refl", dials_experiments=expt)
    assert back.frame.tolist() == [0, 0, 2]
    assert np.allclose(back.row, [10.25, 70.0, 109.4]) and np.allclose(back.col, [20.5, 3.75, 79.0])
    # evaluate places them too
    write_peaks(peaks.take([0, 1, 3]), tmp_path / "found.csv")
    args = ["evaluate", "--truth", str(tmp_path / "s.refl"), "--peaks", str(tmp_path / "found.csv"), "--radius", "0.1"]
    assert main(args) == 2 and "give the experiment list" in capsys.readouterr().err
    assert main([*args, "--dials-expt", str(expt)]) == 0
    assert "precision 1.000   recall 1.000" in capsys.readouterr().out
    # and show draws them
    np.save(tmp_path / "frames.npy", np.ones((3, 110, 80), np.float32))
    show = ["show", str(tmp_path / "frames.npy"), "--frame", "2", "--peaks", str(tmp_path / "s.refl")]
    assert main([*show, "-o", str(tmp_path / "a.png")]) == 2 and "give the experiment list" in capsys.readouterr().err
    assert main([*show, "--dials-expt", str(expt), "-o", str(tmp_path / "a.png")]) == 0
    assert (tmp_path / "a.png").stat().st_size > 1000
    # a table of more panels than the detector has, and a detector whose panels overlap
    one = _expt(tmp_path / "one.expt", 3, False, panels=[(0, 0, 80, 110)])
    with pytest.raises(DataFormatError, match="spots lie on panel 1, the DIALS detector has 1 panels"):
        read_peaks(tmp_path / "s.refl", dials_experiments=one)
    same = _expt(tmp_path / "same.expt", 3, False, panels=[(0, 0, 194, 185), (0, 0, 194, 185)])
    with pytest.raises(DataFormatError, match=r"panels 'row-00' and 'row-01' overlap in the image"):
        write_peaks(peaks, tmp_path / "t.refl", dials_experiments=same)
    assert not (tmp_path / "t.refl").exists()
    assert main(["find", str(tmp_path / "found.csv"), "-o", str(tmp_path / "u.refl"), "--dials-expt", str(same)]) == 2
    assert "overlap in the image" in capsys.readouterr().err


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


@pytest.mark.skipif(
    not DIALS_PYTHON.is_file() or shutil.which("dials.find_spots") is None, reason="DIALS is not installed"
)
def test_a_pilatus_12m_frame_on_dials_24_panels(tmp_path: Path, real_data: Path) -> None:
    """dials.import reads the DLS I23 Pilatus 12M as 24 panels: braggml's spots go on them, DIALS reads them,
    and DIALS' own spots, placed on the frame through the same experiment list, are braggml's (dispersion
    extended, within 1 px)."""
    import gzip

    cbf = tmp_path / "thau_00001.cbf"
    cbf.write_bytes(gzip.decompress((real_data / "pilatus_misc" / "DLS_I23_P12M_thau_00001.cbf.gz").read_bytes()))
    for cmd in (["dials.import", cbf.name], ["dials.find_spots", "imported.expt", "nproc=1"]):
        subprocess.run(cmd, cwd=tmp_path, capture_output=True, timeout=300, check=True)
    expt, ours = tmp_path / "imported.expt", tmp_path / "ours.refl"
    args = ["find", str(cbf), "--finder", "dispersion_extended", "-o", str(ours), "--dials-expt", str(expt), "-q"]
    assert main(args) == 0
    script = (
        "import sys; from dials.array_family import flex\n"
        "t = flex.reflection_table.from_file(sys.argv[1])\n"
        "print(len(t), len(set(t['panel'])), max(t['xyzobs.px.value'].parts()[1]))\n"
    )
    done = subprocess.run([str(DIALS_PYTHON), "-c", script, str(ours)], capture_output=True, text=True, timeout=120)
    n, n_panels, y_max = done.stdout.split()
    assert int(n) > 150 and int(n_panels) > 10 and float(y_max) <= 195  # module rows, not frame rows
    theirs = read_peaks(tmp_path / "strong.refl", dials_experiments=expt)
    mine = read_peaks(ours, dials_experiments=expt)
    from braggml.evaluate.metrics import evaluate_peaks

    ev = evaluate_peaks(mine, theirs, radius_px=1.0)
    assert ev.recall > 0.9 and ev.precision > 0.9
