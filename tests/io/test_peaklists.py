"""Peak-list files: CXI, CrystFEL stream and CSV round trips, foreign files, errors, event lists."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from braggml.errors import ConfigError, DataFormatError, InputNotFoundError
from braggml.geometry import BadRegion, DetectorGeometry, Panel, flat_geometry
from braggml.io.peaklists import (
    peak_format,
    read_event_list,
    read_peaks,
    write_event_list,
    write_peaks,
)
from braggml.peaks import PEAK_COLUMNS, FrameRef, PeakList


def _sample() -> PeakList:
    """Five frames from two files; frames 0, 2 and 4 have no peaks; NaN and finite scores."""
    refs = [FrameRef("run1.h5", "/entry/data/data", i) for i in range(3)]
    refs += [FrameRef("dir, with comma/img_0001.cbf", "", 0), FrameRef("run2.h5", "/data/data", 7)]
    return PeakList.from_columns(
        n_frames=5,
        frames=refs,
        frame=[1, 1, 1, 3],
        row=[5.0, 10.25, 0.123456789, 99.5],
        col=[7.0, 3.75, 200.987654321, 0.0],
        intensity=[1234.5, 88.0, 1e-3, 5.5e6],
        background=[10.0, 11.5, math.nan, 0.25],
        snr=[25.0, 7.125, 6.0, 1e3],
        n_pixels=[9, 4, 2, 30],
        max_value=[400.0, 30.0, 2.0, 1e5],
        score=[math.nan, 0.75, 0.0, 1.0],
    )


def _same_frames(a: PeakList, b: PeakList) -> bool:
    return a.frames == b.frames


@pytest.mark.parametrize("name", ["peaks.h5", "peaks.cxi", "peaks.hdf5", "peaks.csv"])
def test_exact_round_trip(tmp_path: Path, name: str) -> None:
    peaks = _sample()
    out = write_peaks(peaks, tmp_path / name)
    back = read_peaks(out)
    assert back.equals(peaks)
    assert back.n_frames == 5 and back.counts_per_frame().tolist() == [0, 3, 0, 1, 0]
    assert _same_frames(back, peaks)
    np.testing.assert_array_equal(back.row, peaks.row)  # bit-exact, not just close
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary left behind


def test_stream_round_trip(tmp_path: Path) -> None:
    peaks = _sample()
    back = read_peaks(write_peaks(peaks, tmp_path / "peaks.stream"))
    assert back.n_frames == 5 and back.counts_per_frame().tolist() == [0, 3, 0, 1, 0]
    np.testing.assert_allclose(back.row, peaks.row, atol=0.0051)
    np.testing.assert_allclose(back.col, peaks.col, atol=0.0051)
    np.testing.assert_allclose(back.intensity, peaks.intensity, atol=0.0051)
    # the stream has no background, SNR, pixel count, maximum or score
    assert np.isnan(back.snr).all() and np.isnan(back.score).all() and (back.n_pixels == 0).all()
    assert _same_frames(back, peaks)


@pytest.mark.parametrize("name", ["e.h5", "e.stream", "e.csv"])
@pytest.mark.parametrize("n_frames", [0, 3])
def test_no_peaks_at_all(tmp_path: Path, name: str, n_frames: int) -> None:
    peaks = PeakList.empty(n_frames)
    back = read_peaks(write_peaks(peaks, tmp_path / name))
    assert len(back) == 0 and back.n_frames == n_frames
    if name.endswith(".h5"):
        with h5py.File(tmp_path / name) as f:
            assert f["entry_1/result_1/peakXPosRaw"].shape == (n_frames, 1)


def test_round_trip_without_provenance(tmp_path: Path) -> None:
    peaks = PeakList.from_columns(n_frames=3, frame=[0, 2], row=[1.5, 2.5], col=[3.5, 4.5])
    for name in ("a.h5", "a.csv", "a.stream"):
        back = read_peaks(write_peaks(peaks, tmp_path / name))
        assert back.frames is None, name
        assert back.counts_per_frame().tolist() == [1, 0, 1]


class TestCxi:
    def test_standard_layout(self, tmp_path: Path) -> None:
        peaks = _sample()
        write_peaks(peaks, tmp_path / "p.cxi")
        with h5py.File(tmp_path / "p.cxi") as f:
            g = f["entry_1/result_1"]
            assert g["nPeaks"][()].tolist() == [0, 3, 0, 1, 0]
            x, y = g["peakXPosRaw"][()], g["peakYPosRaw"][()]
            assert x.shape == (5, 3) and x.dtype == np.float32
            assert (x[1, 0], y[1, 0]) == (7.0, 5.0)  # x = column, y = row, pixel centres at integers
            assert (x[3, 0], y[3, 0]) == (0.0, 99.5)
            assert (x[3, 1:] == 0).all() and (x[0] == 0).all()  # padding
            assert g["peakTotalIntensity"][1, 1] == 88.0
            assert g["peakNPixels"][1, 0] == 9 and g["peakMaximumValue"][3, 0] == 1e5
            assert g["peakSNR"][1, 1] == 7.125
            assert g.attrs["software"] == "braggml"
            assert "braggml" in f.attrs["creator"]

    def test_foreign_minimal_file(self, tmp_path: Path) -> None:
        path = tmp_path / "cheetah.cxi"
        x = np.array([[10.0, 20.0, 99.0], [0.0, 0.0, 0.0], [5.0, 99.0, 99.0]], np.float32)
        y = np.array([[1.0, 2.0, 99.0], [0.0, 0.0, 0.0], [6.0, 99.0, 99.0]], np.float32)
        with h5py.File(path, "w") as f:
            g = f.create_group("entry_1/result_1")
            g["nPeaks"] = np.array([2, 0, 1], np.int32)
            g["peakXPosRaw"] = x
            g["peakYPosRaw"] = y
            g["peakTotalIntensity"] = np.full((3, 3), 50.0, np.float32)
            g["peakMaxIntensity"] = np.full((3, 3), 9.0, np.float32)
            f["entry_1/data_1/data"] = np.zeros((3, 4, 4), np.float32)
        peaks = read_peaks(path)
        assert peaks.n_frames == 3 and peaks.counts_per_frame().tolist() == [2, 0, 1]
        assert peaks.col.tolist() == [10.0, 20.0, 5.0] and peaks.row.tolist() == [1.0, 2.0, 6.0]
        assert peaks.intensity.tolist() == [50.0] * 3 and peaks.max_value.tolist() == [9.0] * 3
        assert np.isnan(peaks.snr).all() and np.isnan(peaks.background).all() and np.isnan(peaks.score).all()
        assert (peaks.n_pixels == 0).all()
        assert peaks.frames == tuple(FrameRef(str(path), "/entry_1/data_1/data", k) for k in range(3))

    def test_counts_beyond_stored_peaks_warn(self, tmp_path: Path) -> None:
        path = tmp_path / "c.h5"
        with h5py.File(path, "w") as f:
            f["entry_1/result_1/nPeaks"] = [5]
            f["entry_1/result_1/peakXPosRaw"] = [[1.0, 2.0]]
            f["entry_1/result_1/peakYPosRaw"] = [[1.0, 2.0]]
        with pytest.warns(UserWarning, match="count more peaks"):
            assert len(read_peaks(path)) == 2

    @pytest.mark.parametrize(
        ("content", "match"),
        [
            ({"entry_1/result_1/nPeaks": [1]}, r"missing dataset\(s\) peakXPosRaw, peakYPosRaw"),
            ({"other": [1]}, "no peak list at /entry_1/result_1"),
            (
                {"entry_1/result_1/nPeaks": [1, 2], "entry_1/result_1/peakXPosRaw": [[1.0, 2.0]],
                 "entry_1/result_1/peakYPosRaw": [[1.0, 2.0]]},
                r"peakXPosRaw: shape \(1, 2\), expected \(2, max_peaks\)",
            ),
            (
                {"entry_1/result_1/nPeaks": [-1], "entry_1/result_1/peakXPosRaw": [[1.0]],
                 "entry_1/result_1/peakYPosRaw": [[1.0]]},
                "non-negative",
            ),
        ],
    )
    def test_bad_files(self, tmp_path: Path, content: dict, match: str) -> None:
        path = tmp_path / "bad.h5"
        with h5py.File(path, "w") as f:
            for key, value in content.items():
                f[key] = value
        with pytest.raises(DataFormatError, match=match) as info:
            read_peaks(path)
        assert "bad.h5" in str(info.value)

    def test_not_hdf5(self, tmp_path: Path) -> None:
        path = tmp_path / "x.h5"
        path.write_text("hello")
        with pytest.raises(DataFormatError, match="not an HDF5 file"):
            read_peaks(path)

    def test_damaged_braggml_group(self, tmp_path: Path) -> None:
        path = tmp_path / "p.h5"
        write_peaks(_sample(), path)
        with h5py.File(path, "a") as f:
            del f["entry_1/result_1/braggml/score"]
        with pytest.raises(DataFormatError, match="braggml: missing score"):
            read_peaks(path)


INDEXAMAJIG_STREAM = """\
CrystFEL stream format 2.3
Generated by CrystFEL 0.10.2
indexamajig -i files.lst -g det.geom -o out.stream --peaks=peakfinder8
----- Begin geometry file -----
; a comment
photon_energy = 9500 eV
data = /entry_1/data_1/data
p0/min_fs = 0
----- End geometry file -----
----- Begin unit cell -----
CrystFEL unit cell file version 1.0
lattice_type = tetragonal
----- End unit cell -----
----- Begin chunk -----
Image filename: /data/run2.cxi
Event: //3
Image serial number: 2
hit = 1
indexed_by = xgandalf
photon_energy_eV = 9500.000000
beam_divergence = 0.00e+00 rad
average_camera_length = 0.100000 m
num_peaks = 2
peak_resolution = 2.1 nm^-1 or 4.7 A
Peaks from peak search
  fs/px   ss/px (1/d)/nm^-1   Intensity  Panel
 100.50  200.50       1.23     5000.00   p0
  10.00   20.00       0.45      123.40   p0
End of peak list
--- Begin crystal
Cell parameters 7.80000 7.80000 3.70000 nm, 90.00000 90.00000 90.00000 deg
astar = +0.1 +0.2 +0.3 nm^-1
Reflections measured after indexing
   h    k    l          I   sigma(I)       peak background  fs/px  ss/px panel
   1    2    3      10.00       2.00      20.00       1.00  55.5  66.6 p0
End of reflections
--- End crystal
----- End chunk -----
----- Begin chunk -----
Image filename: /data/run1.cxi
Event: //0
Image serial number: 1
hit = 0
indexed_by = none
num_peaks = 0
Peaks from peak search
  fs/px   ss/px (1/d)/nm^-1   Intensity  Panel
End of peak list
----- End chunk -----
"""


class TestStream:
    def test_indexamajig_stream(self, tmp_path: Path) -> None:
        path = tmp_path / "out.stream"
        path.write_text(INDEXAMAJIG_STREAM)
        peaks = read_peaks(path)
        assert peaks.n_frames == 2
        # chunks are put in input order (serial number), whatever order the workers wrote them in
        assert peaks.frames == (
            FrameRef("/data/run1.cxi", "/entry_1/data_1/data", 0),
            FrameRef("/data/run2.cxi", "/entry_1/data_1/data", 3),
        )
        assert peaks.counts_per_frame().tolist() == [0, 2]
        # CrystFEL counts from the pixel corner: fs = col + 0.5
        assert peaks.col.tolist() == [100.0, 9.5] and peaks.row.tolist() == [200.0, 19.5]
        assert peaks.intensity.tolist() == [5000.0, 123.4]

    def test_written_stream_text(self, tmp_path: Path) -> None:
        peaks = PeakList.from_columns(
            frames=[FrameRef("a.h5", "/entry/data/data", 4), FrameRef("a.h5", "/entry/data/data", 5)],
            frame=[1], row=[10.0], col=[20.25], intensity=[77.0],
        )
        path = tmp_path / "p.stream"
        write_peaks(peaks, path, hit_min_peaks=1)
        text = path.read_text()
        lines = text.splitlines()
        assert lines[0] == "CrystFEL stream format 2.3"
        assert lines[1].startswith("Generated by braggml ")
        assert text.count("----- Begin chunk -----") == 2 == text.count("----- End chunk -----")
        second = text.split("----- Begin chunk -----")[2]
        for expected in ("Image filename: a.h5", "Event: //5", "Image serial number: 2", "hit = 1",
                         "num_peaks = 1", "Peaks from peak search",
                         "  fs/px   ss/px (1/d)/nm^-1   Intensity  Panel", "End of peak list"):
            assert expected in second.splitlines()
        assert "  20.75   10.50       0.00       77.00   p0" in second.splitlines()
        first = text.split("----- Begin chunk -----")[1]
        assert "hit = 0" in first.splitlines() and "num_peaks = 0" in first.splitlines()

    def test_hit_threshold(self, tmp_path: Path) -> None:
        peaks = PeakList.from_columns(n_frames=2, frame=[0, 1, 1], row=[1, 2, 3], col=[1, 2, 3])
        path = tmp_path / "p.stream"
        write_peaks(peaks, path, hit_min_peaks=2)
        hits = [line for line in path.read_text().splitlines() if line.startswith("hit = ")]
        assert hits == ["hit = 0", "hit = 1"]
        with pytest.raises(ConfigError, match="hit_min_peaks"):
            write_peaks(peaks, path, hit_min_peaks=-1)

    def test_resolution_and_panels_from_geometry(self, tmp_path: Path) -> None:
        p0 = Panel("top", 0, 99, 0, 49, corner_x=-50.0, corner_y=-50.0, res_px_per_m=1e4, clen_m=0.1)
        p1 = Panel("bottom", 0, 99, 50, 99, corner_x=50.0, corner_y=50.0, res_px_per_m=1e4, clen_m=0.1,
                   fs_vector=(-1, 0, 0), ss_vector=(0, -1, 0))
        geom = DetectorGeometry(panels=(p0, p1), wavelength_a=1.0,
                                bad_regions=(BadRegion("bad0", min_fs=0, max_fs=1, min_ss=0, max_ss=1),))
        peaks = PeakList.from_columns(n_frames=1, frame=[0, 0], row=[10.0, 80.0], col=[30.0, 60.0],
                                      intensity=[1.0, 2.0])
        path = tmp_path / "g.stream"
        write_peaks(peaks, path, geometry=geom)
        text = path.read_text()
        assert "----- Begin geometry file -----" in text and "top/corner_x = -50" in text
        assert "photon_energy_eV = 12398.419843" in text
        rows = text.split("Intensity  Panel\n")[1].split("End of peak list")[0].splitlines()
        assert [r.split()[-1] for r in rows] == ["top", "bottom"]
        inv_d = [float(r.split()[2]) for r in rows]
        expected = 10.0 / geom.resolution_at(peaks.row, peaks.col)
        np.testing.assert_allclose(inv_d, expected, atol=0.006)
        # by hand for the first peak: centre at (-50 + 30.5, -50 + 10.5) px of 100 um, 0.1 m away
        two_theta = math.atan(math.hypot(19.5, 39.5) * 1e-4 / 0.1)
        assert inv_d[0] == pytest.approx(10 * 2 * math.sin(two_theta / 2), abs=0.006)
        # and it reads back, the geometry's data path not being set
        back = read_peaks(path)
        np.testing.assert_allclose(back.row, peaks.row)

    def test_resolution_from_maps(self, tmp_path: Path) -> None:
        geom = flat_geometry((50, 50), pixel_size_mm=0.1, distance_mm=50.0, beam_center_rowcol=(0, 0),
                             wavelength_a=1.0)
        maps = geom.pixel_maps()
        peaks = PeakList.from_columns(n_frames=1, frame=[0], row=[30.2], col=[40.4])
        path = tmp_path / "m.stream"
        write_peaks(peaks, path, maps=maps)
        row = path.read_text().split("Intensity  Panel\n")[1].splitlines()[0]
        assert float(row.split()[2]) == pytest.approx(10.0 / float(maps.resolution_a[30, 40]), abs=0.006)  # type: ignore[index]

    def test_not_a_stream(self, tmp_path: Path) -> None:
        path = tmp_path / "x.stream"
        path.write_text("hello\n")
        with pytest.raises(DataFormatError, match=r"x\.stream:1: not a CrystFEL stream"):
            read_peaks(path)
        path.write_text("")
        with pytest.raises(DataFormatError, match="empty file"):
            read_peaks(path)

    def test_bad_peak_line(self, tmp_path: Path) -> None:
        path = tmp_path / "x.stream"
        path.write_text(INDEXAMAJIG_STREAM.replace("  10.00   20.00", "  10.00   abc"))
        with pytest.raises(DataFormatError, match=r"x\.stream:28: bad peak line"):
            read_peaks(path)

    def test_truncated_stream_drops_last_chunk(self, tmp_path: Path) -> None:
        path = tmp_path / "x.stream"
        cut = INDEXAMAJIG_STREAM.rsplit("----- End chunk -----", 1)[0]
        path.write_text(cut)
        with pytest.warns(UserWarning, match="incomplete"):
            peaks = read_peaks(path)
        assert peaks.n_frames == 1 and len(peaks) == 2


class TestCsv:
    def test_written_text(self, tmp_path: Path) -> None:
        path = tmp_path / "p.csv"
        write_peaks(_sample(), path)
        lines = path.read_text().splitlines()
        assert lines[1] == "# n_frames=5"
        header = next(line for line in lines if not line.startswith("#"))
        assert header == "frame,file,dataset,index,row,col,intensity,background,snr,n_pixels,max_value,score"

    def test_foreign_fs_ss(self, tmp_path: Path) -> None:
        path = tmp_path / "other.csv"
        path.write_text("Event,fs/px,ss/px,Intensity\n0,10.5,20.5,100\n2,1,2,3\n")
        peaks = read_peaks(path)
        assert peaks.n_frames == 3 and peaks.counts_per_frame().tolist() == [1, 0, 1]
        assert peaks.col.tolist() == [10.5, 1.0] and peaks.row.tolist() == [20.5, 2.0]
        assert peaks.intensity.tolist() == [100.0, 3.0] and np.isnan(peaks.snr).all()
        assert peaks.frames is None

    def test_foreign_x_y_grouped_by_file(self, tmp_path: Path) -> None:
        path = tmp_path / "xy.csv"
        path.write_text("file,index,x,y\nb.h5,3,1.0,2.0\na.h5,0,5.0,6.0\nb.h5,3,7.0,8.0\n")
        peaks = read_peaks(path)
        assert peaks.n_frames == 2
        assert peaks.frames == (FrameRef("b.h5", "", 3), FrameRef("a.h5", "", 0))
        assert peaks.col.tolist() == [1.0, 7.0, 5.0] and peaks.row.tolist() == [2.0, 8.0, 6.0]

    @pytest.mark.parametrize(
        ("text", "match"),
        [
            ("a,b\n1,2\n", "no peak position columns; need row and col"),
            ("", "no CSV header"),
            ("row,col\n1,zz\n", r"bad\.csv:2: column 'col': cannot read 'zz'"),
            ("row,col\n1,2,3\n", r"bad\.csv:2: 3 fields, the header has 2"),
            ("# n_frames=1\nframe,row,col\n3,1,2\n", "n_frames=1 but frame indices go up to 3"),
            ("frame,row,col\n1.5,1,2\n", "must be integers"),
            ("row,col\n,2\n", "finite row and col"),
        ],
    )
    def test_bad_files(self, tmp_path: Path, text: str, match: str) -> None:
        path = tmp_path / "bad.csv"
        path.write_text(text)
        with pytest.raises(DataFormatError, match=match):
            read_peaks(path)


def test_format_detection_and_errors(tmp_path: Path) -> None:
    assert peak_format("a.CXI") == "cxi" and peak_format("a.stream") == "stream"
    with pytest.raises(ConfigError, match="cannot tell the peak-list format"):
        peak_format("a.txt")
    with pytest.raises(ConfigError, match="must be one of"):
        peak_format("a.h5", "json")
    peaks = _sample()
    out = write_peaks(peaks, tmp_path / "peaks.txt", format="csv")
    assert read_peaks(out, format="csv").equals(peaks)
    with pytest.raises(InputNotFoundError, match="does not exist"):
        read_peaks(tmp_path / "missing.h5")
    with pytest.raises(ConfigError, match="does not exist"):
        write_peaks(peaks, tmp_path / "no" / "peaks.h5")
    with pytest.raises(ConfigError, match="needs a PeakList"):
        write_peaks({"row": [1]}, tmp_path / "x.csv")  # type: ignore[arg-type]


def test_overwrite_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "p.h5"
    write_peaks(_sample(), path)
    write_peaks(PeakList.empty(2), path)
    assert read_peaks(path).n_frames == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.h5"]


def test_event_list_round_trip(tmp_path: Path) -> None:
    refs = [FrameRef("/d/run1.h5", "/entry/data/data", 12), FrameRef("/d/img 0001.cbf"), FrameRef("r2.h5", "/x", 0)]
    path = write_event_list(refs, tmp_path / "hits.lst")
    assert path.read_text() == "/d/run1.h5 //12\n/d/img 0001.cbf\nr2.h5 //0\n"
    back = read_event_list(path)
    assert [(r.file, r.index) for r in back] == [("/d/run1.h5", 12), ("/d/img 0001.cbf", 0), ("r2.h5", 0)]
    write_event_list([], tmp_path / "none.lst")
    assert (tmp_path / "none.lst").read_text() == ""
    # frames of a file without dataset paths that holds several keep their index (a bare name means every frame)
    stacks = [FrameRef("s.npy", None, 0), FrameRef("s.npy", None, 2), FrameRef("m.tif", None, 3)]
    assert write_event_list(stacks, tmp_path / "s.lst").read_text() == "s.npy //0\ns.npy //2\nm.tif //3\n"
    with pytest.raises(ConfigError, match="FrameRef"):
        write_event_list(["a.h5"], tmp_path / "x.lst")  # type: ignore[list-item]


def test_all_peak_columns_survive_cxi_and_csv(tmp_path: Path) -> None:
    peaks = _sample()
    for name in ("a.h5", "a.csv"):
        back = read_peaks(write_peaks(peaks, tmp_path / name))
        for column in PEAK_COLUMNS:
            np.testing.assert_array_equal(getattr(back, column), getattr(peaks, column), err_msg=f"{name} {column}")


def test_cxi_links_the_frames_it_lists(tmp_path: Path) -> None:
    # frames 2 and 0 of one file, then frame 1 of another: the peak file's /entry_1/data_1/data holds them, in order
    rng = np.random.default_rng(4)
    stacks = {name: rng.integers(0, 100, (3, 8, 9)).astype(np.int32) for name in ("a.h5", "b.h5")}
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for name, stack in stacks.items():
        with h5py.File(data_dir / name, "w") as f:
            f["entry/data/data"] = stack
    refs = [
        FrameRef(str(data_dir / "a.h5"), "/entry/data/data", 2),
        FrameRef(str(data_dir / "a.h5"), "/entry/data/data", 0),
        FrameRef(str(data_dir / "b.h5"), "/entry/data/data", 1),
    ]
    peaks = PeakList.from_columns(frames=refs, frame=[0, 2], row=[1.0, 2.0], col=[3.0, 4.0])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    write_peaks(peaks, out_dir / "peaks.cxi")
    with h5py.File(out_dir / "peaks.cxi", "r") as f:
        linked = f["entry_1/data_1/data"]
        assert linked.is_virtual and linked.shape == (3, 8, 9)
        assert {s.file_name for s in linked.virtual_sources()} == {"../data/a.h5", "../data/b.h5"}  # relative
        expected = [stacks["a.h5"][2], stacks["a.h5"][0], stacks["b.h5"][1]]
        assert all(np.array_equal(linked[k], expected[k]) for k in range(3))
    assert read_peaks(out_dir / "peaks.cxi").frames == tuple(refs)  # the provenance stays the original files
    # frames that are not frames of HDF5 datasets (CBF, TIFF, npy) are not linked
    write_peaks(PeakList.from_columns(frames=[FrameRef(str(tmp_path / "x.cbf"))]), out_dir / "cbf.cxi")
    with h5py.File(out_dir / "cbf.cxi", "r") as f:
        assert "entry_1/data_1" not in f
