"""CrystFEL geometry files: parsing the real format, its errors, and writing it back."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from braggml.errors import ConfigError, DataFormatError, InputNotFoundError
from braggml.geometry import HC_KEV_A, flat_geometry
from braggml.io.geom import (
    format_crystfel_geom,
    parse_crystfel_geom,
    read_crystfel_geom,
    read_geometry_masks,
    write_crystfel_geom,
)

TWO_PANELS = """\
; Two 50 x 100 panels; p1 is rotated by 180 degrees
photon_energy = 12398.419843320026 eV
clen = 0.1         ; metres
res = 10000        ; 100 um pixels
adu_per_eV = 0.001
max_adu = 16000
data = /entry/data/data
dim0 = %
dim1 = ss
dim2 = fs
mask0_data = /entry/mask
mask0_goodbits = 0x0
mask0_badbits = 0xff

rigid_group_q0 = p0,p1
rigid_group_collection_det = q0
group_all = p0,p1

p0/min_fs = 0
p0/max_fs = 99
p0/min_ss = 0
p0/max_ss = 49
p0/fs = +1.0x +0.0y
p0/ss = +0.0x +1.0y
p0/corner_x = -50
p0/corner_y = -50

p1/min_fs = 0
p1/max_fs = 99
p1/min_ss = 50
p1/max_ss = 99
p1/fs = -x
p1/ss = -y
p1/corner_x = 50.0
p1/corner_y = 50.0
p1/no_index = 0

badcentre/min_x = -2.5
badcentre/max_x = 2.5
badcentre/min_y = -2.5
badcentre/max_y = 2.5

badstrip/min_fs = 0
badstrip/max_fs = 9
badstrip/min_ss = 50
badstrip/max_ss = 99
badstrip/panel = p1
"""


def _write(tmp_path: Path, text: str, name: str = "det.geom") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _d_by_hand(r_px: float) -> float:
    two_theta = math.atan(r_px * 1e-4 / 0.1)
    return 1.0 / (2.0 * math.sin(two_theta / 2.0))


class TestTwoPanelFile:
    def test_values(self, tmp_path: Path) -> None:
        geom = read_crystfel_geom(_write(tmp_path, TWO_PANELS))
        assert [p.name for p in geom.panels] == ["p0", "p1"]
        assert geom.wavelength_a == pytest.approx(1.0)
        p0, p1 = geom.panels
        assert (p0.min_fs, p0.max_fs, p0.min_ss, p0.max_ss) == (0, 99, 0, 49)
        assert p1.fs_vector == (-1.0, 0.0, 0.0) and p1.ss_vector == (0.0, -1.0, 0.0)
        assert p0.clen_m == 0.1 and p1.res_px_per_m == 1e4 and p1.adu_per_ev == 0.001 and p1.max_adu == 16000
        assert p0.data == "/entry/data/data" and p0.dims == ("%", "ss", "fs")
        assert p0.masks[0].dataset == "/entry/mask" and p0.masks[0].bad_bits == 0xFF
        assert not p1.bad
        assert {r.name for r in geom.bad_regions} == {"badcentre", "badstrip"}
        assert geom.source is not None and geom.source.endswith("det.geom")

    def test_pixel_maps(self, tmp_path: Path) -> None:
        maps = read_crystfel_geom(_write(tmp_path, TWO_PANELS)).pixel_maps((100, 100))
        assert (maps.panel_id[:50] == 0).all() and (maps.panel_id[50:] == 1).all()
        assert maps.radius_px[0, 0] == pytest.approx(math.hypot(49.5, 49.5))
        assert maps.radius_px[49, 50] == pytest.approx(math.hypot(0.5, 0.5))
        assert maps.radius_px[99, 99] == pytest.approx(math.hypot(49.5, 0.5))
        assert maps.resolution_a is not None
        assert maps.resolution_a[0, 50] == pytest.approx(_d_by_hand(math.hypot(0.5, 49.5)), rel=1e-5)
        expected = np.zeros((100, 100), bool)
        expected[48:50, 48:53] = True  # lab box around the beam, tested at pixel corners (p0)
        expected[98:100, 48:53] = True  # ... and on the rotated p1
        expected[50:, :10] = True  # fs/ss strip of p1
        np.testing.assert_array_equal(maps.mask, expected)

    def test_round_trip_through_writer(self, tmp_path: Path) -> None:
        geom = read_crystfel_geom(_write(tmp_path, TWO_PANELS))
        text = format_crystfel_geom(geom).splitlines()
        assert "clen = 0.1 m" in text  # one camera length for the whole detector, as CrystFEL 0.10 wants
        assert not any(line.startswith("p0/clen") for line in text)
        out = tmp_path / "copy.geom"
        write_crystfel_geom(geom, out)
        again = read_crystfel_geom(out)
        a, b = geom.pixel_maps(), again.pixel_maps()
        np.testing.assert_array_equal(a.panel_id, b.panel_id)
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_allclose(a.radius_px, b.radius_px)
        np.testing.assert_allclose(a.resolution_a, b.resolution_a, rtol=1e-6)  # type: ignore[arg-type]
        assert again.panels[0].masks == geom.panels[0].masks
        assert again.panels[0].dims == geom.panels[0].dims


def test_flat_geometry_written_and_read_back(tmp_path: Path) -> None:
    geom = flat_geometry((30, 40), pixel_size_mm=0.172, distance_mm=250.0, beam_center_rowcol=(12.3, 20.7),
                         photon_energy_ev=12000.0)
    path = tmp_path / "flat.geom"
    write_crystfel_geom(geom, path)
    again = read_crystfel_geom(path)
    np.testing.assert_allclose(again.pixel_maps().radius_px, geom.pixel_maps().radius_px, atol=1e-5)
    assert again.wavelength_a == pytest.approx(geom.wavelength_a)


def test_defaults_apply_only_to_panels_mentioned_later() -> None:
    text = """
res = 10000
a/min_fs = 0
a/max_fs = 9
a/min_ss = 0
a/max_ss = 9
res = 5000
clen = 120 mm
b/min_fs = 0
b/max_fs = 9
b/min_ss = 10
b/max_ss = 19
a/fs = x
a/ss = y
b/fs = x
b/ss = y
a/corner_x = 0
a/corner_y = 0
b/corner_x = 0
b/corner_y = 0
"""
    geom = parse_crystfel_geom(text)
    assert geom.panel("a").res_px_per_m == 10000 and geom.panel("a").clen_m is None
    assert geom.panel("b").res_px_per_m == 5000 and geom.panel("b").clen_m == pytest.approx(0.12)


@pytest.mark.parametrize(
    ("line", "expected_a"),
    [
        ("photon_energy = 9 keV", HC_KEV_A / 9.0),
        ("photon_energy = 9000", HC_KEV_A / 9.0),
        ("wavelength = 1.5 A", 1.5),
        ("wavelength = 1.5e-10 m", 1.5),
        ("electron_voltage = 200 kV", 0.025079),
    ],
)
def test_beam_units(line: str, expected_a: float) -> None:
    geom = parse_crystfel_geom(line + "\n" + _panel("p0"))
    assert geom.wavelength_a == pytest.approx(expected_a, rel=1e-4)


def _panel(name: str, min_ss: int = 0, extra: str = "") -> str:
    return (
        f"{name}/min_fs = 0\n{name}/max_fs = 9\n{name}/min_ss = {min_ss}\n{name}/max_ss = {min_ss + 9}\n"
        f"{name}/fs = +1.0x\n{name}/ss = +1.0y\n{name}/corner_x = -5\n{name}/corner_y = -5\n"
        f"{name}/res = 10000\n{extra}"
    )


def test_locations_in_data_files_are_kept_and_warned() -> None:
    text = "photon_energy = /LCLS/photon_energy_eV\nclen = /LCLS/detector_1/EncoderValue\n" + _panel("p0")
    with pytest.warns(UserWarning, match="read from the data files") as record:
        geom = parse_crystfel_geom(text, source="lcls.geom")
    assert any("lcls.geom:2" in str(w.message) for w in record)
    assert geom.wavelength_a is None
    assert geom.beam_metadata is not None and geom.beam_metadata.location == "/LCLS/photon_energy_eV"
    assert geom.beam_metadata.unit == "eV"
    p0 = geom.panels[0]
    assert p0.clen_m is None and p0.clen_metadata is not None and p0.clen_metadata.unit == "mm"
    maps = geom.with_wavelength(1.0).pixel_maps()
    assert maps.resolution_a is None and maps.radius_px[5, 5] == pytest.approx(math.hypot(0.5, 0.5))


def test_unknown_keys_warn_with_line_number() -> None:
    text = "frobnicate = 3\n" + _panel("p0", extra="p0/sparkle = 1\n")
    with pytest.warns(UserWarning) as record:
        parse_crystfel_geom(text, source="x.geom")
    messages = [str(w.message) for w in record]
    assert any("x.geom:1: 'frobnicate'" in m for m in messages)
    assert any("x.geom:11: 'p0/sparkle'" in m for m in messages)


def test_comment_only_and_trailing_comments() -> None:
    text = "; header\n\n" + _panel("p0").replace("p0/res = 10000", "p0/res = 10000 ; 100 um")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        geom = parse_crystfel_geom(text)
    assert geom.panels[0].res_px_per_m == 10000


def test_no_index_panel_is_masked() -> None:
    geom = parse_crystfel_geom(_panel("p0") + _panel("p1", 10, "p1/no_index = 1\n"))
    maps = geom.pixel_maps()
    assert maps.mask[10:].all() and not maps.mask[:10].any()


def test_legacy_mask_keys() -> None:
    text = "mask = /data/mask\nmask_file = mask.h5\nmask_good = 0x01\nmask_bad = 0x02\n" + _panel("p0")
    spec = parse_crystfel_geom(text).panels[0].masks[0]
    assert (spec.dataset, spec.file, spec.good_bits, spec.bad_bits) == ("/data/mask", "mask.h5", 1, 2)


class TestErrors:
    def test_bad_integer_names_file_line_and_key(self, tmp_path: Path) -> None:
        path = _write(tmp_path, _panel("p0").replace("p0/max_ss = 9", "p0/max_ss = nine"))
        with pytest.raises(DataFormatError, match=r"det\.geom:4: 'p0/max_ss': cannot read 'nine' as an integer"):
            read_crystfel_geom(path)

    def test_fractional_pixel_index(self) -> None:
        with pytest.raises(DataFormatError, match=r"g:1: 'p0/min_fs'"):
            parse_crystfel_geom("p0/min_fs = 0.5\n", source="g")

    def test_bad_vector(self) -> None:
        with pytest.raises(DataFormatError, match=r":5: 'p0/fs': cannot read '\+1\.0q' as a vector"):
            parse_crystfel_geom(_panel("p0").replace("+1.0x", "+1.0q"))

    def test_bad_default_reported_where_written(self) -> None:
        with pytest.raises(DataFormatError, match=r":1: 'res'"):
            parse_crystfel_geom("res = lots\n" + _panel("p0"))

    def test_missing_required_key(self) -> None:
        text = _panel("p0").replace("p0/corner_y = -5\n", "").replace("p0/res = 10000\n", "")
        with pytest.raises(DataFormatError, match=r"g:1: panel 'p0'.*lacks 'p0/corner_y', 'p0/res'"):
            parse_crystfel_geom(text, source="g")

    def test_inverted_range(self) -> None:
        with pytest.raises(DataFormatError, match="min_fs <= max_fs"):
            parse_crystfel_geom(_panel("p0").replace("p0/max_fs = 9", "p0/max_fs = -1"))

    def test_not_key_value(self) -> None:
        with pytest.raises(DataFormatError, match=r"g:2: .*expected 'key = value'"):
            parse_crystfel_geom("res = 1\njust some words\n", source="g")

    def test_no_panels(self) -> None:
        with pytest.raises(DataFormatError, match="no panels"):
            parse_crystfel_geom("res = 10000\nclen = 0.1\n")

    def test_bad_region_unknown_panel(self) -> None:
        text = _panel("p0") + "bad1/min_fs = 0\nbad1/max_fs = 1\nbad1/min_ss = 0\nbad1/max_ss = 1\nbad1/panel = q9\n"
        with pytest.raises(DataFormatError, match=r":14: 'bad1/panel': unknown panel 'q9'"):
            parse_crystfel_geom(text)

    def test_bad_region_incomplete(self) -> None:
        with pytest.raises(DataFormatError, match="needs all of min_x"):
            parse_crystfel_geom(_panel("p0") + "badx/min_x = 0\n")

    def test_wavelength_without_unit(self) -> None:
        with pytest.raises(DataFormatError, match="has no unit"):
            parse_crystfel_geom("wavelength = 1.3\n" + _panel("p0"))

    def test_bad_units(self) -> None:
        with pytest.raises(DataFormatError, match="unknown length unit"):
            parse_crystfel_geom("clen = 10 cm\n" + _panel("p0"))
        with pytest.raises(DataFormatError, match="unknown unit"):
            parse_crystfel_geom("photon_energy = 9 MeV\n" + _panel("p0"))

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(InputNotFoundError, match="does not exist"):
            read_crystfel_geom(tmp_path / "none.geom")


def _cspad_text() -> str:
    """A CSPAD-like geometry: 4 quadrants x 16 ASICs of 185 x 194 pixels, rotated quadrants, 1480 x 1552 data."""
    lines = [
        "; CSPAD-like test geometry", "clen = 0.0869 m", "photon_energy = 9500 eV", "res = 9097.53",
        "adu_per_eV = 0.00338", "data = /entry_1/data_1/data", "dim0 = %", "dim1 = ss", "dim2 = fs",
        "", "rigid_group_q0 = " + ",".join(f"q0a{a}" for a in range(16)),
    ]
    for q in range(4):
        angle = math.pi / 2 * q + 0.003 * q
        c, s = math.cos(angle), math.sin(angle)
        for a in range(16):
            name = f"q{q}a{a}"
            min_fs = q * 388 + (a % 2) * 194
            min_ss = (a // 2) * 185
            # ASIC pairs stacked outwards from the beam inside each quadrant, then rotated with it
            local_x = 20.0 + (a % 2) * 197.0
            local_y = 20.0 + (a // 2) * 190.0
            corner_x = c * local_x - s * local_y
            corner_y = s * local_x + c * local_y
            lines += [
                f"{name}/min_fs = {min_fs}", f"{name}/max_fs = {min_fs + 193}",
                f"{name}/min_ss = {min_ss}", f"{name}/max_ss = {min_ss + 184}",
                f"{name}/fs = {c:+.6f}x {s:+.6f}y", f"{name}/ss = {-s:+.6f}x {c:+.6f}y",
                f"{name}/corner_x = {corner_x:.3f}", f"{name}/corner_y = {corner_y:.3f}",
                f"{name}/coffset = 0.0",
            ]
    lines += ["", "badq0/min_fs = 0", "badq0/max_fs = 193", "badq0/min_ss = 0", "badq0/max_ss = 184",
              "badq0/panel = q0a0"]
    return "\n".join(lines) + "\n"


def test_cspad_like_64_panels(tmp_path: Path) -> None:
    geom = read_crystfel_geom(_write(tmp_path, _cspad_text(), "cspad.geom"))
    assert geom.n_panels == 64 and geom.data_shape == (1480, 1552)
    assert geom.wavelength_a == pytest.approx(HC_KEV_A / 9.5)
    maps = geom.pixel_maps()
    assert maps.n_panels == 64
    assert (maps.panel_id >= 0).all()
    assert np.isfinite(maps.radius_px).all() and maps.resolution_a is not None
    assert maps.mask.sum() == 185 * 194 and maps.mask[:185, :194].all()
    # first pixel of q0a0: corner (20, 20) + half a pixel along fs (x) and ss (y)
    assert maps.radius_px[0, 0] == pytest.approx(math.hypot(20.5, 20.5), rel=1e-5)
    # q1 is rotated by ~90 degrees: its first pixel sits at about (-20.5, 20.5)
    assert maps.radius_px[0, 388] == pytest.approx(math.hypot(20.5, 20.5), rel=1e-3)
    # outermost pixel corner of the last ASIC row: (20 + 2 * 197, 20 + 8 * 190) minus half a pixel each way
    assert float(maps.radius_px.max()) == pytest.approx(math.hypot(20 + 197 + 193.5, 20 + 7 * 190 + 184.5), rel=2e-3)


class TestGeometryMasks:
    def test_mask_file_beside_the_geometry(self, tmp_path: Path) -> None:
        mask = np.zeros((20, 10), np.uint16)
        mask[3, 4] = 0x2  # bad bit
        mask[15, 1] = 0x4  # another bad bit
        mask[16, 2] = 0x8  # ignored bit
        with h5py.File(tmp_path / "mask.h5", "w") as f:
            f["/data/mask"] = mask
        text = ("mask0_data = /data/mask\nmask0_file = mask.h5\nmask0_goodbits = 0x0\nmask0_badbits = 0x6\n"
                + _panel("p0") + _panel("p1", 10))
        geom = read_crystfel_geom(_write(tmp_path, text))
        bad = read_geometry_masks(geom)
        assert bad is not None and bad.shape == (20, 10)
        assert np.argwhere(bad).tolist() == [[3, 4], [15, 1]]
        maps = geom.with_mask(bad).pixel_maps()
        assert maps.mask[3, 4] and maps.mask.sum() == 2

    def test_good_bits_and_data_file(self, tmp_path: Path) -> None:
        data = tmp_path / "run.h5"
        with h5py.File(data, "w") as f:
            f["/entry/good"] = np.ones((10, 10), np.int32)
            f["/entry/good"][0, 0] = 0
        geom = parse_crystfel_geom("mask = /entry/good\nmask_good = 0x1\nmask_bad = 0x0\n" + _panel("p0"))
        with pytest.raises(ConfigError, match="from the data files"):
            read_geometry_masks(geom)
        bad = read_geometry_masks(geom, data_file=data)
        assert bad is not None and np.argwhere(bad).tolist() == [[0, 0]]

    def test_no_masks(self) -> None:
        assert read_geometry_masks(parse_crystfel_geom(_panel("p0"))) is None

    def test_errors(self, tmp_path: Path) -> None:
        geom = parse_crystfel_geom("mask0_data = /m\nmask0_file = nowhere.h5\n" + _panel("p0"))
        with pytest.raises(InputNotFoundError, match="nowhere.h5"):
            read_geometry_masks(geom)
        with h5py.File(tmp_path / "small.h5", "w") as f:
            f["/m"] = np.zeros((5, 5), np.uint8)
        geom = parse_crystfel_geom(f"mask0_data = /m\nmask0_file = {tmp_path / 'small.h5'}\n" + _panel("p0"))
        with pytest.raises(DataFormatError, match=r"small\.h5::/m: mask of shape \(5, 5\) does not cover"):
            read_geometry_masks(geom)
        geom = parse_crystfel_geom(f"mask0_data = /x\nmask0_file = {tmp_path / 'small.h5'}\n" + _panel("p0"))
        with pytest.raises(InputNotFoundError, match="no such mask dataset"):
            read_geometry_masks(geom)
        geom = parse_crystfel_geom(f"mask0_data = /%/m\nmask0_file = {tmp_path / 'small.h5'}\n" + _panel("p0"))
        with pytest.raises(ConfigError, match="per-frame mask"):
            read_geometry_masks(geom)


def test_value_flags() -> None:
    geom = parse_crystfel_geom("flag_lessthan = -10\nflag_morethan = 1000\n" + _panel("p0")
                               + _panel("p1", 10, "p1/flag_equal = 7\n"))
    image = np.zeros((20, 10))
    image[0, 0] = -10  # strict: not flagged
    image[0, 1] = -10.5
    image[1, 1] = 1001
    image[12, 3] = 7
    image[2, 2] = 7  # p0 has no flag_equal
    assert np.argwhere(geom.flagged_pixels(image)).tolist() == [[0, 1], [1, 1], [12, 3]]
