"""Every file of ../shared/data/real opens as documented in its README (one frame read per file)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from braggml.errors import DataFormatError
from braggml.io import describe, format_description, open_frames

pytestmark = pytest.mark.real_data


class Expect(NamedTuple):
    shape: tuple[int, int]
    n_frames: int
    dtype: str
    kind: str
    dataset: str = ""


PILATUS = "photon-counting"
INTEGRATING = "integrating"
UNKNOWN = "unknown"

FRAME_FILES: dict[str, Expect] = {
    "eiger2/dlsnxs2cbf_therm_0001.cbf.gz": Expect((4362, 4148), 1, "int32", PILATUS),
    "eiger2/eiger2_stream_5291452_f43.h5": Expect((2068, 2162), 1, "uint16", PILATUS, "/entry/data/data"),
    "hexrd_ruby/hexrd_ruby.h5": Expect((3888, 3072), 6, "uint16", INTEGRATING, "/entry/data/data"),
    "hexrd_ruby/mruby-0129_000004_ff1_000012-cachefile.npz": Expect((3888, 3072), 1440, "uint16", UNKNOWN),
    "hexrd_ruby/mruby-0129_000004_ff2_000012-cachefile.npz": Expect((3888, 3072), 1440, "uint16", UNKNOWN),
    "hexrd_zr_dac/LT1_Ne_zr001_00000-fc_GE2.npz": Expect((2048, 2048), 100, "uint16", UNKNOWN),
    "hexrd_zr_dac/hexrd_zr_dac.h5": Expect((2048, 2048), 1, "uint16", UNKNOWN, "/entry/data/data"),
    **{f"l_cysteine/l-cyst_01_{k:05d}.cbf": Expect((1679, 1475), 1, "int32", PILATUS) for k in range(1, 11)},
    "laue_ge/ge_blanc.jp2": Expect((2048, 2048), 1, "uint16", UNKNOWN),
    "laue_ge/ge.jp2": Expect((2018, 2016), 1, "uint16", UNKNOWN),
    "laue_ge/laue_ge_blanc.h5": Expect((2048, 2048), 1, "uint16", UNKNOWN, "/entry/data/data"),
    "laue_ge/laue_ge_scmos.h5": Expect((2018, 2016), 1, "uint16", UNKNOWN, "/entry/data/data"),
    "negatives/AgBehenate_228.hdf5": Expect((195, 487), 1, "int32", PILATUS, "/entry/data/data"),
    "negatives/CeO2_Pilatus1M.tif": Expect((1043, 981), 1, "int32", PILATUS),
    "negatives/ceria_50x30_740mm_000005_Pilatus2M.hdf5": Expect(
        (1679, 1475), 1, "int32", PILATUS, "/imageseries/images"
    ),
    "pilatus_misc/DLS_I03_smargon_0001.cbf.gz": Expect((2527, 2463), 1, "int32", PILATUS),
    "pilatus_misc/DLS_I23_P12M_thau_00001.cbf.gz": Expect((5071, 2463), 1, "int32", PILATUS),
    "pilatus_misc/Fe3O4C_M1_map_1_P1_E1_001.tif": Expect((1043, 981), 1, "int32", PILATUS),
    "rayonix_kapton/rayonix_kapton.h5": Expect((1920, 1920), 1, "int32", INTEGRATING, "/entry/data/data"),
    **{f"thaumatin_grid/thau_3_2_{k:04d}.cbf.bz2": Expect((2527, 2463), 1, "int32", PILATUS) for k in range(1, 20)},
    "thermolysin_cspad/thermolysin_cspad.h5": Expect((756, 3136), 4, "int32", INTEGRATING, "/entry/data/data"),
}

#: CBFs with x-CBF_PACKED compression (LCLS CSPAD and Rayonix), with the converted .h5 file and frame index
#: holding the same pixels.
PACKED_CBF = {
    "rayonix_kapton/hit-20181213155134902.cbf": ("rayonix_kapton/rayonix_kapton.h5", 0),
    **{
        f"thermolysin_cspad/idx-20130301060858{k}.cbf": ("thermolysin_cspad/thermolysin_cspad.h5", i)
        for i, k in enumerate((401, 601, 701, 801))
    },
}

#: Files that hold no frames (documentation, calibration), or none braggml reads (a raw zmq packet).
NOT_FRAMES = {
    "README.md",
    "eiger2/header",
    "eiger2/image000044",
    "hexrd_ruby/LICENSE",
    "hexrd_zr_dac/LICENSE",
    "l_cysteine/README.md",
    "laue_ge/calibGe111.det",
    "thermolysin_cspad/README.MD",
}


def test_every_file_is_covered(real_data: Path) -> None:
    present = {str(p.relative_to(real_data)) for p in real_data.rglob("*") if p.is_file()}
    known = set(FRAME_FILES) | set(PACKED_CBF) | NOT_FRAMES
    assert present - known == set(), "files without an expectation"


@pytest.mark.parametrize("name", sorted(FRAME_FILES))
def test_frame_file_opens(real_data: Path, name: str) -> None:
    expect = FRAME_FILES[name]
    path = real_data / name
    with open_frames(path) as source:
        assert len(source) == expect.n_frames
        assert source.shape == expect.shape
        assert source.dtype == np.dtype(expect.dtype)
        assert source.detector_kind == expect.kind
        last = source.frame(len(source) - 1 if name.endswith(".npz") else 0)
    assert last.data.shape == expect.shape and last.data.dtype == np.float32
    assert last.bad.shape == expect.shape and last.bad.dtype == bool
    assert last.ref.file == str(path) and last.ref.dataset == expect.dataset
    assert np.isfinite(last.data).all()
    if expect.kind == PILATUS:
        negative = last.data < 0
        assert np.all(last.bad[negative]), "Pilatus gaps (-1) and bad pixels (-2) must be flagged"
    if expect.kind == INTEGRATING:
        assert not last.bad[last.data < 0].any(), "negative values of integrating detectors are noise"


def test_thaumatin_gaps_overload_and_cutoff(real_data: Path) -> None:
    source = open_frames(real_data / "thaumatin_grid" / "thau_3_2_0007.cbf.bz2")
    assert source.saturation == 115897
    frame = source.frame(0)
    gaps = frame.data == -1
    assert gaps.sum() > 100_000 and frame.bad[gaps].all()
    assert frame.bad[frame.data == 1046527].all() and (frame.data == 1046527).sum() == 1
    assert frame.bad[frame.data >= 115897].all()
    assert not frame.bad[(frame.data >= 0) & (frame.data < 115897)].any()


def test_thermolysin_integrating_with_pixel_mask(real_data: Path) -> None:
    source = open_frames(real_data / "thermolysin_cspad" / "thermolysin_cspad.h5")
    assert source.detector_kind == INTEGRATING
    frame = source.frame(0)
    assert frame.data.min() == -5136 and not frame.bad.any()
    mask = source.file_mask()
    assert mask is not None
    # the gaps hold -1 and are all in the pixel mask; real pixels read -1 too and stay unmasked
    assert np.all(frame.data[mask] == -1)
    assert ((frame.data == -1) & ~mask).sum() > 0
    assert mask.sum() == 756 * 3136 - 32 * 185 * 388  # everything outside the 32 sensors


def test_thermolysin_heuristic_alone_says_integrating(real_data: Path) -> None:
    from braggml.io import guess_detector_kind

    with open_frames(real_data / "thermolysin_cspad" / "thermolysin_cspad.h5", detector_kind="unknown") as s:
        raw = s.frame(0).data.astype(np.int32)
    assert guess_detector_kind(raw) == INTEGRATING


def test_eiger2_gap_value(real_data: Path) -> None:
    frame = open_frames(real_data / "eiger2" / "eiger2_stream_5291452_f43.h5").frame(0)
    np.testing.assert_array_equal(frame.bad, frame.data == 65535)
    assert frame.bad.sum() > 0


def test_rayonix_zero_is_not_masked_by_sign(real_data: Path) -> None:
    frame = open_frames(real_data / "rayonix_kapton" / "rayonix_kapton.h5").frame(0)
    assert not frame.bad.any()


@pytest.mark.parametrize("name", sorted(PACKED_CBF))
def test_packed_cbf_matches_converted_file(real_data: Path, name: str) -> None:
    pytest.importorskip("pycbf")
    converted, index = PACKED_CBF[name]
    source = open_frames(real_data / name)
    assert source.detector_kind == INTEGRATING and source.dtype == np.int32
    frame = source.frame(0).data
    reference = open_frames(real_data / converted).frame(index).data
    if "rayonix" in name:
        assert source.shape == (1920, 1920)
        np.testing.assert_array_equal(frame, reference)
        return
    # CSPAD: 4 arrays x 8 sensors of 185 x 388 stacked along the rows; the converted file tiles them 4 x 8
    assert source.shape == (32 * 185, 388)
    for sensor in range(32):
        r0, c0 = 189 * (sensor // 8), 392 * (sensor % 8)
        np.testing.assert_array_equal(frame[185 * sensor : 185 * (sensor + 1)], reference[r0 : r0 + 185, c0 : c0 + 388])


@pytest.mark.parametrize("name", ["ge_blanc", "ge"])
def test_jpeg2000_laue_frames_match_their_converted_files(real_data: Path, name: str) -> None:
    converted = {"ge_blanc": "laue_ge_blanc.h5", "ge": "laue_ge_scmos.h5"}[name]
    frame = open_frames(real_data / "laue_ge" / f"{name}.jp2").frame(0).data
    np.testing.assert_array_equal(frame, open_frames(real_data / "laue_ge" / converted).frame(0).data)


@pytest.mark.parametrize("name", sorted(NOT_FRAMES - {"README.md"}))
def test_non_frame_files_are_refused_in_one_line(real_data: Path, name: str) -> None:
    with pytest.raises(DataFormatError) as info:
        open_frames(real_data / name)
    message = str(info.value)
    assert "\n" not in message and name.split("/")[-1] in message


def test_describe_real_files(real_data: Path) -> None:
    info = describe(real_data / "thermolysin_cspad" / "thermolysin_cspad.h5")
    assert info["masks"] == ["/entry/instrument/detector/pixel_mask"]
    assert info["frame_dataset"] == "/entry/data/data" and info["n_frames"] == 4
    info = describe(real_data / "thaumatin_grid" / "thau_3_2_0001.cbf.bz2")
    assert info["cbf_header"]["wavelength_a"] == pytest.approx(0.96859)
    assert info["cbf_header"]["beam_row_col_px"] == pytest.approx((1306.96, 1261.61))
    assert info["geometry"]["beam_center_rowcol"] == pytest.approx((1306.96, 1261.61))
    assert "geometry:       beam centre (row, col) (1306.96, 1261.61) px" in format_description(info)


def test_describe_packed_cspad_cbf(real_data: Path) -> None:
    pytest.importorskip("pycbf")
    info = describe(real_data / "thermolysin_cspad" / "idx-20130301060858401.cbf")
    header = info["cbf_header"]
    assert header["compression"] == "x-CBF_PACKED" and header["sections"] == 32
    assert header["detector"] == "CS PAD" and info["detector_kind"] == "integrating"
    assert info["frame_shape"] == (5920, 388)


def test_geometry_hint_thaumatin_cbf_header(real_data: Path) -> None:
    hint = open_frames(real_data / "thaumatin_grid" / "thau_3_2_0001.cbf.bz2").geometry_hint()
    assert hint is not None
    assert hint.beam_center_rowcol == pytest.approx((1306.96, 1261.61))
    assert hint.wavelength_a == pytest.approx(0.9686, abs=1e-4)
    assert hint.pixel_size_mm == pytest.approx(0.172) and hint.distance_mm == pytest.approx(351.0)


def test_geometry_hint_thermolysin_radius_map(real_data: Path) -> None:
    hint = open_frames(real_data / "thermolysin_cspad" / "thermolysin_cspad.h5").geometry_hint()
    assert hint is not None and hint.beam_center_rowcol is None
    assert hint.radius_px is not None and hint.radius_px.shape == (756, 3136)
    assert float(hint.radius_px.max()) == pytest.approx(1174.6, abs=0.1)


def test_geometry_hint_rayonix_imgcif_header(real_data: Path) -> None:
    pytest.importorskip("pycbf")
    hint = open_frames(real_data / "rayonix_kapton" / "hit-20181213155134902.cbf").geometry_hint()
    assert hint is not None and hint.beam_center_rowcol == pytest.approx((960.0, 960.0), abs=1.0)
    assert hint.pixel_size_mm == pytest.approx(0.1771, abs=1e-4) and hint.wavelength_a == pytest.approx(1.304, abs=1e-3)
    assert hint.distance_mm == pytest.approx(124.0)


def test_geometry_hint_refused_where_the_header_misleads(real_data: Path) -> None:
    p12m = open_frames(real_data / "pilatus_misc" / "DLS_I23_P12M_thau_00001.cbf.gz").geometry_hint()
    assert p12m is not None and p12m.beam_center_rowcol is None and p12m.wavelength_a == pytest.approx(2.7552)
    saxs = open_frames(real_data / "negatives" / "AgBehenate_228.hdf5").geometry_hint()
    assert saxs is not None and saxs.beam_center_rowcol is None and saxs.pixel_size_mm is None
    tiff = open_frames(real_data / "negatives" / "CeO2_Pilatus1M.tif").geometry_hint()
    assert tiff is not None and tiff.beam_center_rowcol == pytest.approx((515.77, 498.18))


def test_real_hint_drives_resolve_geometry(real_data: Path) -> None:
    from braggml.pipeline import resolve_geometry

    source = open_frames(real_data / "thermolysin_cspad" / "thermolysin_cspad.h5")
    run = resolve_geometry(source.shape, hint=source.geometry_hint())
    assert run.maps.known and run.maps.radius_px.shape == (756, 3136)
    source = open_frames(real_data / "thaumatin_grid" / "thau_3_2_0001.cbf.bz2")
    run = resolve_geometry(source.shape, hint=source.geometry_hint())
    assert run.geometry is not None and np.unravel_index(np.argmin(run.maps.radius_px), source.shape) == (1307, 1262)
