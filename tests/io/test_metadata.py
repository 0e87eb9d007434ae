"""geometry_hint / FrameSource.geometry_hint and its use by resolve_geometry: geometry stated in the files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np
import pytest

from braggml.errors import ConfigError, InputNotFoundError
from braggml.geometry import HC_KEV_A
from braggml.io import open_frames
from braggml.io.metadata import GeometryHint, geometry_hint
from braggml.pipeline import resolve_geometry

PILATUS_LINES = (
    "# Detector: PILATUS 2M, S/N 24-0107\r\n"
    "# Pixel_size 172e-6 m x 172e-6 m\r\n"
    "# Exposure_time 0.0964000 s\r\n"
    "# Count_cutoff 1000 counts\r\n"
    "# Wavelength 0.9763 A\r\n"
    "# Detector_distance 0.25000 m\r\n"
    "# Detector_2theta 0.0000 deg.\r\n"
    "# Beam_xy (16.50, 20.25) pixels\r\n"
)
SHAPE = (40, 32)


def write_minicbf(path: Path, header: str = PILATUS_LINES, shape: tuple[int, int] = SHAPE) -> Path:
    import fabio.cbfimage

    data = np.zeros(shape, np.int32)
    fabio.cbfimage.CbfImage(
        data=data,
        header={"_array_data.header_convention": "PILATUS_1.2", "_array_data.header_contents": header},
    ).write(str(path))
    return path


def write_nexus(path: Path, *, shape: tuple[int, int] = SHAPE, **fields: tuple[float, str | None]) -> Path:
    """A NeXus file with frames and ``name=(value, units)`` datasets (paths relative to /entry/instrument)."""
    with h5py.File(path, "w") as f:
        f.create_dataset("entry/data/data", data=np.zeros((2, *shape), np.uint16))
        for name, (value, units) in fields.items():
            dset = f.create_dataset(f"entry/instrument/{name.replace('__', '/')}", data=np.float64(value))
            if units is not None:
                dset.attrs["units"] = units
    return path


# -- CBF and TIFF headers ------------------------------------------------------------------------------------


def test_minicbf_header(tmp_path: Path) -> None:
    hint = geometry_hint(write_minicbf(tmp_path / "a_0001.cbf"))
    assert hint is not None
    assert hint.beam_center_rowcol == pytest.approx((20.25, 16.50))  # Beam_xy is (x = col, y = row)
    assert hint.pixel_size_mm == pytest.approx(0.172)
    assert hint.distance_mm == pytest.approx(250.0)
    assert hint.wavelength_a == pytest.approx(0.9763)
    assert hint.radius_px is None and hint.locates_beam
    assert "CBF header of a_0001.cbf" in hint.source
    assert hint.summary().startswith("beam centre (row, col) (20.25, 16.50) px, pixel 0.172 mm, distance 250 mm")


def test_frame_source_hint_uses_the_first_file_and_is_cached(tmp_path: Path) -> None:
    first = write_minicbf(tmp_path / "a_0001.cbf")
    write_minicbf(tmp_path / "a_0002.cbf", PILATUS_LINES.replace("(16.50, 20.25)", "(1.00, 2.00)"))
    source = open_frames(str(tmp_path / "a_*.cbf"))
    hint = source.geometry_hint()
    assert hint is not None and hint.beam_center_rowcol == pytest.approx((20.25, 16.50))
    assert str(first.name) in hint.source
    assert source.geometry_hint() is hint


def test_cylindrical_and_tilted_detectors_give_no_beam_centre(tmp_path: Path) -> None:
    p12m = PILATUS_LINES.replace("PILATUS 2M, S/N 24-0107", "PILATUS 12M, S/N 120-0100")
    hint = geometry_hint(write_minicbf(tmp_path / "p12m.cbf", p12m))
    assert hint is not None and hint.beam_center_rowcol is None and hint.distance_mm is None
    assert hint.wavelength_a == pytest.approx(0.9763) and "not flat" in hint.source
    tilted = PILATUS_LINES.replace("Detector_2theta 0.0000", "Detector_2theta 30.0000")
    hint = geometry_hint(write_minicbf(tmp_path / "tilted.cbf", tilted))
    assert hint is not None and hint.beam_center_rowcol is None and not hint.locates_beam
    assert "2theta 30 deg" in hint.source


def test_cbf_without_geometry_lines(tmp_path: Path) -> None:
    assert geometry_hint(write_minicbf(tmp_path / "bare.cbf", "# Exposure_time 0.1 s\r\n")) is None


# -- NeXus, Eiger and CXI ------------------------------------------------------------------------------------


def test_nexus_eiger_master_fields(tmp_path: Path) -> None:
    path = write_nexus(
        tmp_path / "m_master.h5",
        detector__beam_center_x=(12.5, "pixel"),
        detector__beam_center_y=(30.25, "pixel"),
        detector__x_pixel_size=(75e-6, "m"),
        detector__y_pixel_size=(75e-6, "m"),
        detector__detector_distance=(0.12, "m"),
        beam__incident_wavelength=(0.98, "angstrom"),
    )
    hint = geometry_hint(path)
    assert hint is not None
    assert hint.beam_center_rowcol == pytest.approx((30.25, 12.5))
    assert hint.pixel_size_mm == pytest.approx(0.075) and hint.distance_mm == pytest.approx(120.0)
    assert hint.wavelength_a == pytest.approx(0.98) and "NeXus metadata of m_master.h5" in hint.source


def test_nexus_units_are_honoured(tmp_path: Path) -> None:
    path = write_nexus(
        tmp_path / "units.nxs",
        detector__beam_center_x=(3.0, "mm"),  # 3 mm / 0.15 mm = 20 pixels
        detector__beam_center_y=(1.5, "mm"),
        detector__x_pixel_size=(150.0, "um"),
        detector__distance=(95.0, "mm"),
        monochromator__wavelength=(0.1, "nm"),
    )
    hint = geometry_hint(path)
    assert hint is not None
    assert hint.beam_center_rowcol == pytest.approx((10.0, 20.0))
    assert hint.pixel_size_mm == pytest.approx(0.15) and hint.distance_mm == pytest.approx(95.0)
    assert hint.wavelength_a == pytest.approx(1.0)


def test_nexus_energy_and_defaults_without_units(tmp_path: Path) -> None:
    path = write_nexus(
        tmp_path / "e.h5",
        detector__beam_center_x=(5.0, None),
        detector__beam_center_y=(6.0, None),
        detector__x_pixel_size=(172e-6, None),
        detector__detector_distance=(0.3, None),
        beam__incident_energy=(12.4, "keV"),
    )
    hint = geometry_hint(path)
    assert hint is not None and hint.beam_center_rowcol == (6.0, 5.0)
    assert hint.pixel_size_mm == pytest.approx(0.172) and hint.distance_mm == pytest.approx(300.0)
    assert hint.wavelength_a == pytest.approx(HC_KEV_A / 12.4)


def test_unitless_values_in_other_units_are_not_trusted(tmp_path: Path) -> None:
    # a writer that put millimetres in fields without units: 0.172 m pixels and a 513.8 m distance
    path = write_nexus(
        tmp_path / "saxs.hdf5",
        detector__beam_center_x=(14.8, None),
        detector__beam_center_y=(-0.9, None),
        detector__x_pixel_size=(0.172, None),
        detector__distance=(513.8, None),
        monochromator__wavelength=(0.7336, "A"),
    )
    hint = geometry_hint(path)
    assert hint is not None and hint.beam_center_rowcol is None and hint.pixel_size_mm is None
    assert hint.distance_mm is None and hint.wavelength_a == pytest.approx(0.7336)


def test_unknown_units_are_ignored(tmp_path: Path) -> None:
    path = write_nexus(
        tmp_path / "u.h5",
        detector__beam_center_x=(5.0, "furlong"),
        detector__beam_center_y=(6.0, "pixel"),
        detector__x_pixel_size=(75e-6, "m"),
    )
    hint = geometry_hint(path)
    assert hint is not None and hint.beam_center_rowcol is None and hint.pixel_size_mm == pytest.approx(0.075)


def test_cxi_distance_pixel_and_energy_in_joules(tmp_path: Path) -> None:
    path = tmp_path / "r0001.cxi"
    energy_kev = 9.5
    with h5py.File(path, "w") as f:
        f.create_dataset("entry_1/data_1/data", data=np.zeros((2, *SHAPE), np.float32))
        f["entry_1/instrument_1/detector_1/distance"] = 0.1
        f["entry_1/instrument_1/detector_1/x_pixel_size"] = 110e-6
        f["entry_1/instrument_1/detector_1/y_pixel_size"] = 110e-6
        f["entry_1/instrument_1/source_1/energy"] = energy_kev * 1000 * 1.602176634e-19
    hint = geometry_hint(path)
    assert hint is not None and hint.beam_center_rowcol is None and not hint.locates_beam
    assert hint.distance_mm == pytest.approx(100.0) and hint.pixel_size_mm == pytest.approx(0.11)
    assert hint.wavelength_a == pytest.approx(HC_KEV_A / energy_kev)
    assert "CXI metadata of r0001.cxi" in hint.source


def test_radius_map(tmp_path: Path) -> None:
    radius = np.hypot(*np.meshgrid(np.arange(SHAPE[0]) - 3.0, np.arange(SHAPE[1]) - 4.0, indexing="ij"))
    path = tmp_path / "tiled.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("entry/data/data", data=np.zeros((1, *SHAPE), np.int32))
        f["entry/instrument/detector/radius_px"] = radius.astype(np.float32)
        f["entry/instrument/detector/pixel_mask"] = np.zeros(SHAPE, np.uint8)
    hint = open_frames(path).geometry_hint()
    assert hint is not None and hint.beam_center_rowcol is None and hint.locates_beam
    np.testing.assert_allclose(hint.radius_px, radius, rtol=1e-6)
    assert not hint.radius_px.flags.writeable
    assert "radius map /entry/instrument/detector/radius_px" in hint.source


def test_radius_map_of_another_shape_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "wrong.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("entry/data/data", data=np.zeros((1, *SHAPE), np.int32))
        f["entry/instrument/detector/radius_px"] = np.zeros((SHAPE[0], SHAPE[1] + 1), np.float32)
    with caplog.at_level(logging.WARNING, logger="braggml.io.metadata"):
        assert geometry_hint(path) is None
    assert "does not fit frames of shape (40, 32)" in caplog.text


def test_braggml_simulation_parameters(tmp_path: Path) -> None:
    path = tmp_path / "sim.h5"
    geometry = {"beam_center_rowcol": [19.5, 15.0], "distance_mm": 150.0, "pixel_size_mm": 0.1, "wavelength_a": 1.3}
    with h5py.File(path, "w") as f:
        f.create_dataset("entry_1/data_1/data", data=np.zeros((1, *SHAPE), np.float32))
        f["entry_1/instrument_1/detector_1/distance"] = 0.2  # the /truth parameters win
        truth = f.create_group("truth")
        truth.attrs["format"] = "braggml-simulation"
        truth.attrs["parameters"] = json.dumps({"seed": 1, "geometry": geometry})
    hint = geometry_hint(f"{path}::/entry_1/data_1/data")
    assert hint is not None and hint.beam_center_rowcol == (19.5, 15.0)
    assert (hint.distance_mm, hint.pixel_size_mm, hint.wavelength_a) == (150.0, 0.1, 1.3)
    assert "braggml simulation" in hint.source


def test_files_without_metadata(tmp_path: Path) -> None:
    np.save(tmp_path / "f.npy", np.zeros(SHAPE))
    assert geometry_hint(tmp_path / "f.npy") is None
    write_nexus(tmp_path / "plain.h5")
    assert open_frames(tmp_path / "plain.h5").geometry_hint() is None
    with pytest.raises(InputNotFoundError, match="missing.h5: no such file"):
        geometry_hint(tmp_path / "missing.h5")


def test_hint_validation() -> None:
    with pytest.raises(ConfigError, match="pixel_size_mm must be a positive number"):
        GeometryHint(pixel_size_mm=-0.1)
    with pytest.raises(ConfigError, match="beam_center_rowcol must be finite"):
        GeometryHint(beam_center_rowcol=(np.nan, 1.0))
    with pytest.raises(ConfigError, match="radius_px must be a 2-D"):
        GeometryHint(radius_px=np.zeros(5, np.float32))
    assert GeometryHint().is_empty and GeometryHint().summary() == "nothing"


# -- resolve_geometry with a hint ----------------------------------------------------------------------------


def test_resolve_geometry_flat_detector_from_hint(caplog: pytest.LogCaptureFixture) -> None:
    hint = GeometryHint((20.25, 16.5), 0.172, 250.0, 0.9763, source="CBF header of x.cbf")
    with caplog.at_level(logging.INFO, logger="braggml.pipeline"):
        run = resolve_geometry(SHAPE, hint=hint)
    assert "geometry from file metadata: beam centre (row, col) (20.25, 16.50)" in caplog.text
    assert "no detector geometry given" not in caplog.text
    assert run.geometry is not None and run.maps.known and run.maps.resolution_a is not None
    radius = run.maps.radius_px
    assert np.unravel_index(np.argmin(radius), SHAPE) == (20, 16)
    assert radius[20, 16] == pytest.approx(np.hypot(0.25, 0.5), abs=1e-4)
    assert run.geometry.wavelength_a == pytest.approx(0.9763)


def test_resolve_geometry_user_values_win_over_hint() -> None:
    hint = GeometryHint((20.0, 16.0), 0.172, 250.0, 0.9763)
    run = resolve_geometry(SHAPE, hint=hint, distance_mm=500.0, wavelength_a=1.5)
    assert run.geometry is not None and run.geometry.wavelength_a == 1.5
    assert run.geometry.panels[0].clen_m == pytest.approx(0.5)
    run = resolve_geometry(SHAPE, hint=hint, beam_center_rowcol=(1.0, 1.0))
    assert np.unravel_index(np.argmin(run.maps.radius_px), SHAPE) == (1, 1)


def test_resolve_geometry_beam_centre_only_hint() -> None:
    run = resolve_geometry(SHAPE, hint=GeometryHint(beam_center_rowcol=(5.0, 6.0)))
    assert run.geometry is None and run.maps.known and run.maps.resolution_a is None
    assert run.maps.radius_px[5, 6] == 0 and run.maps.radius_px[8, 10] == pytest.approx(5.0)


def test_resolve_geometry_radius_map_hint() -> None:
    radius = np.arange(SHAPE[0] * SHAPE[1], dtype=np.float32).reshape(SHAPE)
    run = resolve_geometry(SHAPE, hint=GeometryHint(radius_px=radius, source="radius map"))
    assert run.maps.known and run.geometry is None and run.maps.resolution_a is None
    np.testing.assert_array_equal(run.maps.radius_px, radius)
    assert run.maps.radius_px.flags.writeable and not run.maps.mask.any() and not run.maps.panel_id.any()


def test_resolve_geometry_falls_back_when_hint_places_no_beam(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="braggml.pipeline"):
        run = resolve_geometry(SHAPE, hint=GeometryHint(wavelength_a=1.0))
        assert not run.maps.known and "no detector geometry given" in caplog.text
        wrong = GeometryHint(radius_px=np.zeros((4, 4), np.float32))
        assert not resolve_geometry(SHAPE, hint=wrong).maps.known
    assert "radius map of shape (4, 4) does not fit frames of shape (40, 32)" in caplog.text
    with pytest.raises(ConfigError, match="need --beam-center"):
        resolve_geometry(SHAPE, hint=GeometryHint(wavelength_a=1.0), distance_mm=100.0)


# -- sensors stored side by side --------------------------------------------------------------------------------


def test_cspad_sensor_stack_from_the_detector_description(tmp_path: Path) -> None:
    path = tmp_path / "cspad_stack.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("entry/data/data", data=np.zeros((1, 370, 388), np.int32))
        f["entry/data/data"].attrs["description"] = "CsPad 2x2"
    hint = geometry_hint(path)
    assert hint is not None and [tuple(p) for p in hint.panels] == [(0, 184, 0, 387), (185, 369, 0, 387)]
    assert hint.beam_center_rowcol is None and "2 unplaced sensors of 185 x 388" in hint.summary()
    plain = tmp_path / "plain_370.h5"
    with h5py.File(plain, "w") as f:
        f.create_dataset("entry/data/data", data=np.zeros((1, 370, 388), np.int32))
    assert geometry_hint(plain) is None  # the shape alone is not enough


def test_real_cspad_cbf_hint_lists_its_sensors(real_data: Path) -> None:
    path = real_data / "thermolysin_cspad" / "idx-20130301060858401.cbf"
    if not path.is_file():
        pytest.skip("thermolysin CSPAD CBF not available")
    hint = geometry_hint(path)
    assert hint is not None and len(hint.panels) == 32 and {p.shape for p in hint.panels} == {(185, 388)}
    assert hint.wavelength_a == pytest.approx(1.2726, abs=1e-3)
