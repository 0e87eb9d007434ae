"""Frames stored module by module, (N, modules, ss, fs), as European XFEL's AGIPD/LPD/JUNGFRAU files and their
virtual CXI files hold them: read with the modules stacked along the rows, their masks, CrystFEL geometry files
whose panels name their module (``dim1 = 3``), and whole runs."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from braggml.cli import main
from braggml.errors import ConfigError, DataFormatError
from braggml.io import open_frames
from braggml.io.geom import format_crystfel_geom, parse_crystfel_geom, read_crystfel_geom, read_geometry_masks
from braggml.io.masks import load_mask
from braggml.io.metadata import geometry_hint
from braggml.io.peaklists import read_peaks

N, M, S, F = 3, 4, 64, 96
SPOTS = [(0, 20.3, 30.6), (1, 40.0, 70.2), (2, 10.7, 50.1), (3, 50.4, 20.8)]  # module, ss, fs


def _frames() -> np.ndarray:
    rng = np.random.default_rng(7)
    data = rng.poisson(5.0, (N, M, S, F)).astype(np.float32)
    rows, cols = np.indices((S, F))
    for n in range(N):
        for m, r, c in SPOTS:
            data[n, m] += rng.poisson(600 * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / 2.0))
    return data


def _write_virtual_cxi(path: Path, data: np.ndarray, mask: np.ndarray | None = None) -> Path:
    """The layout of ``extra_data``'s virtual CXI files: data and mask in the detector group, data_1 linked to it."""
    with h5py.File(path, "w") as f:
        g = f.create_group("entry_1/instrument_1/detector_1")
        g.create_dataset("data", data=data, chunks=(1, 1, S, F), compression="gzip")
        if mask is not None:
            g["mask"] = mask
        f["entry_1/data_1"] = h5py.SoftLink("/entry_1/instrument_1/detector_1")
    return path


def _geom_text(bad_region: str = "") -> str:
    lines = ["clen = 0.2", "photon_energy = 9300", "res = 5000", "dim0 = %", "dim2 = ss", "dim3 = fs", ""]
    for m in range(M):
        for a in range(2):  # two 32-row ASICs per module
            n = f"p{m}a{a}"
            lines += [
                f"{n}/dim1 = {m}", f"{n}/min_ss = {32 * a}", f"{n}/max_ss = {32 * a + 31}",
                f"{n}/min_fs = 0", f"{n}/max_fs = {F - 1}", f"{n}/fs = +1x", f"{n}/ss = +1y",
                f"{n}/corner_x = {-48 + 120 * (m % 2)}", f"{n}/corner_y = {-150 + 70 * m + 32 * a}", "",
            ]
    return "\n".join(lines) + bad_region


class TestReading:
    def test_frames_are_the_modules_stacked_along_the_rows(self, tmp_path: Path) -> None:
        data = _frames()
        mask = np.zeros((N, M, S, F), np.uint32)
        mask[1, 2, 5, 7] = 1  # a per-frame mask, as AGIPD's
        source = open_frames(_write_virtual_cxi(tmp_path / "r.cxi", data, mask))
        assert len(source) == N and source.shape == (M * S, F)
        frame = source.frame(1)
        assert np.array_equal(frame.data, data[1].reshape(M * S, F))
        assert frame.data[2 * S + 10, 3] == data[1, 2, 10, 3]
        assert np.argwhere(frame.bad).tolist() == [[2 * S + 5, 7]]  # the mask read once, through the link
        assert not source.frame(0).bad.any()

    def test_numpy_arrays_of_modules(self, tmp_path: Path) -> None:
        data = _frames()
        np.save(tmp_path / "r.npy", data)
        np.savez(tmp_path / "r.npz", data=data)
        for path in (tmp_path / "r.npy", tmp_path / "r.npz"):
            source = open_frames(path)
            assert len(source) == N and source.shape == (M * S, F)
            assert np.array_equal(source.frame(2).data, data[2].reshape(M * S, F))

    def test_static_mask_of_modules(self, tmp_path: Path) -> None:
        mask = np.zeros((M, S, F), np.uint8)
        mask[3, 0, 1] = 4
        path = tmp_path / "r.cxi"
        with h5py.File(path, "w") as f:
            f["entry_1/data_1/data"] = _frames()
            f["entry_1/data_1/mask"] = mask
        file_mask = open_frames(path).file_mask()
        assert file_mask is not None and np.argwhere(file_mask).tolist() == [[3 * S, 1]]

    def test_user_mask_of_modules(self, tmp_path: Path) -> None:
        mask = np.zeros((1, M, S, F), np.int32)
        mask[0, 1, 2, 3] = 1
        np.save(tmp_path / "mask.npy", mask)
        bad = load_mask(tmp_path / "mask.npy", shape=(M * S, F))
        assert np.argwhere(bad).tolist() == [[S + 2, 3]]
        with pytest.raises(DataFormatError, match=r"mask.npy: mask of shape \(1, 4, 64, 96\) is not one frame"):
            load_mask(tmp_path / "mask.npy", shape=(S, F))

    def test_without_geometry_each_module_is_an_unplaced_panel(self, tmp_path: Path) -> None:
        hint = geometry_hint(_write_virtual_cxi(tmp_path / "r.cxi", _frames()))
        assert hint is not None and not hint.locates_beam
        assert [tuple(p) for p in hint.panels] == [(k * S, k * S + S - 1, 0, F - 1) for k in range(M)]


_MIXED = "".join(
    f"{n}/min_fs = 0\n{n}/max_fs = 9\n{n}/min_ss = 0\n{n}/max_ss = 9\n{n}/corner_x = 0\n{n}/corner_y = 0\n"
    f"{n}/fs = +1x\n{n}/ss = +1y\n{n}/res = 5000\n{n}/dim0 = %\n" + dims
    for n, dims in (("p0", "p0/dim1 = 0\np0/dim2 = ss\np0/dim3 = fs\n"), ("p1", "p1/dim1 = ss\np1/dim2 = fs\n"))
)


class TestGeometry:
    def test_panels_move_to_their_module_rows(self) -> None:
        geom = parse_crystfel_geom(_geom_text())
        assert geom.module_rows == S and geom.data_shape == (M * S, F)
        p = geom.panel("p2a1")
        assert (p.min_ss, p.max_ss) == (2 * S + 32, 2 * S + 63)
        maps = geom.pixel_maps((M * S, F))
        assert maps.panel_id[2 * S + 40, 0] == 2 * 2 + 1
        # first pixel of p2a1: corner (-48, -150 + 140 + 32) plus half a pixel along fs and ss
        assert maps.radius_px[2 * S + 32, 0] == pytest.approx(math.hypot(-47.5, 22.5), rel=1e-5)

    def test_written_back_in_module_coordinates(self) -> None:
        region = "bad0/min_fs = 0\nbad0/max_fs = 3\nbad0/min_ss = 40\nbad0/max_ss = 41\nbad0/panel = p3a1\n"
        geom = parse_crystfel_geom(_geom_text(region))
        (bad,) = geom.bad_regions
        assert (bad.min_ss, bad.max_ss) == (3 * S + 40, 3 * S + 41)
        assert geom.pixel_maps().mask[3 * S + 40 : 3 * S + 42, :4].all()
        assert geom.pixel_maps().mask.sum() == 8
        text = format_crystfel_geom(geom)
        assert "p3a1/dim1 = 3" in text and "p3a1/min_ss = 32" in text and "bad0/min_ss = 40" in text
        again = parse_crystfel_geom(text)
        assert [(p.min_ss, p.max_ss) for p in again.panels] == [(p.min_ss, p.max_ss) for p in geom.panels]
        assert again.bad_regions[0].min_ss == bad.min_ss and again.module_rows == S

    def test_mask_of_modules_named_by_the_geometry(self, tmp_path: Path) -> None:
        mask = np.zeros((M, S, F), np.uint16)
        mask[1, 33, 4] = 0x2
        with h5py.File(tmp_path / "mask.h5", "w") as f:
            f["/mask"] = mask
        masks = "mask0_data = /mask\nmask0_file = mask.h5\nmask0_badbits = 0x2\n"
        (tmp_path / "d.geom").write_text(masks + _geom_text())
        bad = read_geometry_masks(read_crystfel_geom(tmp_path / "d.geom"))
        assert bad is not None and np.argwhere(bad).tolist() == [[S + 33, 4]]

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            (_MIXED, r"panel 'p0' names its module .* panel 'p1' does not"),
            (_geom_text().replace("p1a0/dim1 = 1", "p1a0/dim1 = 1\np1a0/dim4 = 2"), r"'p1a0': data layout"),
            (_geom_text().replace("dim2 = ss\ndim3 = fs", "dim2 = fs\ndim3 = ss"), r"'p0a0': data layout % 0 fs ss"),
            (_geom_text("bad0/min_fs = 0\nbad0/max_fs = 3\nbad0/min_ss = 0\nbad0/max_ss = 1\n"), "without a panel"),
        ],
    )
    def test_layouts_it_cannot_read(self, text: str, message: str) -> None:
        with pytest.raises(DataFormatError, match=message):
            parse_crystfel_geom(text, source="agipd.geom")

    def test_frames_not_of_whole_modules(self) -> None:
        with pytest.raises(ConfigError, match=r"modules are 64 rows high, but frames of shape \(300, 96\)"):
            parse_crystfel_geom(_geom_text()).pixel_maps((300, F))


def test_info_describes_the_geometry(tmp_path: Path, capsys) -> None:
    (tmp_path / "d.geom").write_text(_geom_text())
    assert main(["info", str(tmp_path / "d.geom")]) == 0
    text = capsys.readouterr().out
    assert "panels:         8" in text
    assert "frames of 256 x 96 pixels (rows x columns), stored module by module: 4 modules of 64 rows" in text
    assert "pixel size:     200 um" in text and "camera length:  200 mm" in text
    assert "radius:         0.7 to 208.1 px from the beam" in text  # p2a0 holds the beam, 0.7 px from a pixel centre
    (tmp_path / "bad.geom").write_text("p0/min_fs = 0\n")
    assert main(["info", str(tmp_path / "bad.geom")]) == 2
    assert "bad.geom" in capsys.readouterr().err


def test_run_finds_the_spots_on_their_modules(tmp_path: Path, capsys) -> None:
    data = _frames()
    run = _write_virtual_cxi(tmp_path / "r.cxi", data)
    (tmp_path / "d.geom").write_text(_geom_text())
    for name, extra in (("plain.h5", []), ("geom.h5", ["--geom", str(tmp_path / "d.geom")])):
        assert main(["find", str(run), "-o", str(tmp_path / name), *extra]) == 0
        peaks = read_peaks(tmp_path / name)
        assert peaks.counts_per_frame().tolist() == [len(SPOTS)] * N
        for n in range(N):
            sel = peaks.frame == n
            for m, r, c in SPOTS:
                distance = np.hypot(peaks.row[sel] - (m * S + r), peaks.col[sel] - c)
                assert distance.min() < 0.3
    # the same frames stored already stacked give the same peaks
    stacked = tmp_path / "stacked.cxi"
    with h5py.File(stacked, "w") as f:
        f["entry_1/data_1/data"] = data.reshape(N, M * S, F)
    assert main(["find", str(stacked), "-o", str(tmp_path / "stacked.h5"), "--geom", str(tmp_path / "d.geom")]) == 0
    a, b = read_peaks(tmp_path / "geom.h5"), read_peaks(tmp_path / "stacked.h5")
    assert np.array_equal(a.row, b.row) and np.array_equal(a.col, b.col) and np.array_equal(a.intensity, b.intensity)
    # a stream gives rows within the module, with the panel, as CrystFEL's file coordinates do, and reads back
    stream = tmp_path / "peaks.stream"
    assert main(["find", str(run), "-o", str(stream), "--geom", str(tmp_path / "d.geom")]) == 0
    text = stream.read_text()
    assert "p3a1/dim1 = 3" in text
    _m, r, c = SPOTS[3]  # on module 3, in rows 32..63 of it: panel p3a1
    on_p3a1 = np.array([line.split()[:2] for line in text.splitlines() if line.endswith(" p3a1")], float)
    assert len(on_p3a1) == N
    assert np.allclose(on_p3a1, [c + 0.5, r + 0.5], atol=0.3)
    back = read_peaks(stream)
    assert np.allclose(back.row, a.row, atol=0.006) and np.allclose(back.col, a.col, atol=0.006)
    capsys.readouterr()
