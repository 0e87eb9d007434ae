"""describe / format_description: what ``braggml info FILE`` reports."""

from __future__ import annotations

from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

from braggml.errors import DataFormatError, InputNotFoundError
from braggml.io import describe, format_description


def _eiger(folder: Path) -> Path:
    master = folder / "m_master.h5"
    with h5py.File(master, "w") as m:
        det = m.create_group("entry/instrument/detector")
        det["description"] = "Dectris EIGER2 Si 4M"
        det["detectorSpecific/countrate_correction_count_cutoff"] = np.uint32(18533)
        det["detectorSpecific/pixel_mask"] = np.zeros((32, 40), np.uint32)
        for k in (1, 2):
            name = f"m_data_{k:06d}.h5"
            with h5py.File(folder / name, "w") as d:
                d.create_dataset(
                    "entry/data/data",
                    data=np.zeros((3, 32, 40), np.uint16),
                    chunks=(1, 32, 40),
                    **hdf5plugin.Bitshuffle(cname="lz4"),
                )
            m[f"entry/data/data_{k:06d}"] = h5py.ExternalLink(name, "/entry/data/data")
    return master


def test_describe_eiger_master(tmp_path: Path) -> None:
    info = describe(_eiger(tmp_path))
    assert info["format"] == "hdf5"
    assert info["frame_dataset"] == ["/entry/data/data_000001", "/entry/data/data_000002"]
    assert info["n_frames"] == 6 and info["frame_shape"] == (32, 40) and info["dtype"] == "uint16"
    assert info["masks"] == ["/entry/instrument/detector/detectorSpecific/pixel_mask"]
    assert info["detector_kind"] == "photon-counting" and info["detector_kind_from"] == "metadata"
    assert info["saturation"] == 18533
    linked = {d["path"]: d for d in info["datasets"]}["/entry/data/data_000002"]
    assert linked["link"] == "m_data_000002.h5::/entry/data/data"
    assert linked["filters"] == ["bitshuffle+lz4 (32008)"]
    assert linked["chunks"] == (1, 32, 40) and linked["shape"] == (3, 32, 40)
    text = format_description(info)
    assert "bitshuffle+lz4 (32008)" in text
    assert "-> m_data_000001.h5::/entry/data/data" in text
    assert "frames:         6" in text
    assert "detector kind:  photon-counting (from metadata)" in text
    assert "saturation:     18533" in text


def test_describe_cxi_gzip(tmp_path: Path) -> None:
    path = tmp_path / "r.cxi"
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "entry_1/data_1/data",
            data=np.ones((2, 20, 20), np.float32),
            chunks=(1, 20, 20),
            compression="gzip",
            shuffle=True,
        )
        f["entry_1/data_1/mask"] = np.zeros((20, 20), np.uint16)
    info = describe(path)
    data = {d["path"]: d for d in info["datasets"]}["/entry_1/data_1/data"]
    assert data["filters"] == ["shuffle", "gzip level 4"]
    assert info["frame_dataset"] == "/entry_1/data_1/data" and info["masks"] == ["/entry_1/data_1/mask"]
    assert info["detector_kind"] == "integrating" and info["detector_kind_from"] == "values"


def test_describe_cbf_header(tmp_path: Path) -> None:
    import fabio.cbfimage

    header = (
        "# Detector: PILATUS3 6M, S/N 60-0119\r\n# Pixel_size 172e-6 m x 172e-6 m\r\n"
        "# Count_cutoff 115897 counts\r\n# Wavelength 0.96859 A\r\n# Detector_distance 0.35100 m\r\n"
        "# Beam_xy (1261.61, 1306.96) pixels\r\n# Exposure_time 0.0190000 s\r\n"
    )
    fabio.cbfimage.CbfImage(
        data=np.zeros((24, 20), np.int32),
        header={"_array_data.header_convention": "PILATUS_1.2", "_array_data.header_contents": header},
    ).write(str(tmp_path / "h.cbf"))
    info = describe(tmp_path / "h.cbf")
    cbf = info["cbf_header"]
    assert cbf["detector"] == "PILATUS3 6M, S/N 60-0119"
    assert cbf["wavelength_a"] == pytest.approx(0.96859)
    assert cbf["distance_mm"] == pytest.approx(351.0)
    assert cbf["pixel_size_um"] == pytest.approx((172.0, 172.0))
    assert cbf["beam_row_col_px"] == pytest.approx((1306.96, 1261.61))
    assert cbf["count_cutoff"] == 115897 and cbf["compression"] == "x-CBF_BYTE_OFFSET"
    assert info["frame_shape"] == (24, 20) and info["saturation"] == 115897
    assert info["detector_kind"] == "photon-counting"
    text = format_description(info)
    assert "wavelength_a     0.96859" in text and "count_cutoff     115897" in text
    assert info["geometry"]["beam_center_rowcol"] == pytest.approx((1306.96, 1261.61))
    assert info["geometry"]["distance_mm"] == pytest.approx(351.0)
    assert (
        "geometry:       beam centre (row, col) (1306.96, 1261.61) px, pixel 0.172 mm, distance 351 mm, "
        "wavelength 0.96859 A (from CBF header of h.cbf)"
    ) in text


def test_describe_nexus_geometry_and_none(tmp_path: Path) -> None:
    path = tmp_path / "n.h5"
    with h5py.File(path, "w") as f:
        f["entry/data/data"] = np.zeros((1, 20, 24), np.uint16)
        det = f.create_group("entry/instrument/detector")
        det["beam_center_x"] = 11.0
        det["beam_center_x"].attrs["units"] = "pixels"
        det["beam_center_y"] = 9.5
        det["beam_center_y"].attrs["units"] = "pixels"
    info = describe(path)
    assert info["geometry"]["beam_center_rowcol"] == (9.5, 11.0) and info["geometry"]["radius_map_shape"] is None
    assert "geometry:       beam centre (row, col) (9.50, 11.00) px (from NeXus metadata of n.h5)" in (
        format_description(info)
    )
    np.save(tmp_path / "f.npy", np.zeros((16, 16)))
    info = describe(tmp_path / "f.npy")
    assert info["geometry"] is None and "geometry:       -" in format_description(info)


def test_describe_npz_lists_arrays(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", frames=np.zeros((2, 16, 16), np.uint16), omega=np.arange(2.0))
    info = describe(tmp_path / "a.npz")
    assert [d["path"] for d in info["datasets"]] == ["frames", "omega"]
    assert info["frame_dataset"] == "frames" and info["n_frames"] == 2


def test_describe_reports_problem_instead_of_failing(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "meta.h5", "w") as f:
        f["x"] = np.arange(10)
    info = describe(tmp_path / "meta.h5")
    assert info["n_frames"] is None and "no image-like dataset" in info["problem"]
    assert "problem:" in format_description(info)


def test_describe_bad_files(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match=r"gone\.h5: no such file"):
        describe(tmp_path / "gone.h5")
    (tmp_path / "x.h5").write_bytes(b"\0" * 100)
    with pytest.raises(DataFormatError, match=r"x\.h5: not an HDF5 file"):
        describe(tmp_path / "x.h5")


def test_describe_event_list(tmp_path: Path) -> None:
    master = _eiger(tmp_path)
    np.save(tmp_path / "one.npy", np.zeros((32, 40), np.uint16))
    listing = tmp_path / "hits.lst"
    listing.write_text(f"{master} //5\n{master} //0\n{tmp_path / 'one.npy'}\n")
    info = describe(listing)
    assert info["format"] == "event list" and info["n_frames"] == 3 and info["files_named"] == 2
    assert info["frame_shape"] == (32, 40)
    text = format_description(info)
    assert "(event list," in text and "files named:    2" in text
    listing.write_text(f"{master} //6\n")
    assert "there is no event //6" in describe(listing)["problem"]
