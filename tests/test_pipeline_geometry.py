"""What a run learns about its detector without a geometry file: module panels from the gaps, CSPAD ASICs, and the
beam centre (found once per run, also off the chip)."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import pytest

from braggml.classical.centering import fit_beam_center
from braggml.errors import ConfigError
from braggml.geometry import PanelRect
from braggml.io import frames as frames_module
from braggml.io.metadata import GeometryHint, sensor_stack_panels
from braggml.pipeline import FindJob, PreparedRun, detector_panels, resolve_geometry

# -- synthetic tiled frames ---------------------------------------------------------------------------------


def _spot(image: np.ndarray, row: float, col: float, height: float) -> None:
    rows, cols = np.indices(image.shape)
    image += height * np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / 2.0)


def _write_nexus(path: Path, frames: np.ndarray, *, pixel_mask: np.ndarray | None = None, note: str = "") -> Path:
    with h5py.File(path, "w") as f:
        data = f.create_dataset("entry/data/data", data=frames, chunks=(1, *frames.shape[1:]))
        if note:
            data.attrs["note"] = note
        if pixel_mask is not None:
            f.create_dataset("entry/instrument/detector/pixel_mask", data=pixel_mask.astype(np.uint8))
    return path


MODULE = (48, 64)
GAP = (6, 10)


def _tiled(n_frames: int = 2, offsets: tuple[float, ...] = (0.0,) * 6) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """2 x 3 modules with -1 in the gaps, one spot per module and a background level of 15 plus each module's
    offset; the spot positions."""
    rows = 2 * MODULE[0] + GAP[0]
    cols = 3 * MODULE[1] + 2 * GAP[1]
    rng = np.random.default_rng(3)
    out = np.empty((n_frames, rows, cols), np.int32)
    spots = [(20.3 + i * (MODULE[0] + GAP[0]), 30.6 + j * (MODULE[1] + GAP[1])) for i in range(2) for j in range(3)]
    level = np.full((rows, cols), 15.0)
    for k, offset in enumerate(offsets):
        i, j = divmod(k, 3)
        r0, c0 = i * (MODULE[0] + GAP[0]), j * (MODULE[1] + GAP[1])
        level[r0 : r0 + MODULE[0], c0 : c0 + MODULE[1]] += offset
    for k in range(n_frames):
        image = level.copy()
        for r, c in spots:
            _spot(image, r, c, 800.0)
        frame = rng.poisson(image).astype(np.int32)
        frame[MODULE[0] : MODULE[0] + GAP[0], :] = -1
        for j in (1, 2):
            start = j * MODULE[1] + (j - 1) * GAP[1]
            frame[:, start : start + GAP[1]] = -1
        out[k] = frame
    return out, spots


OFFSETS = (0.0, 10.0, 5.0, 15.0, 3.0, 12.0)
PANELS = [
    (0, 47, 0, 63),
    (0, 47, 74, 137),
    (0, 47, 148, 211),
    (54, 101, 0, 63),
    (54, 101, 74, 137),
    (54, 101, 148, 211),
]


def test_modules_with_their_own_offsets_become_panels(tmp_path: Path) -> None:
    frames, spots = _tiled(offsets=OFFSETS)
    run = PreparedRun(FindJob(inputs=(str(_write_nexus(tmp_path / "tiles.h5", frames)),)), warn_without_geometry=False)
    maps = run.geometry.maps
    assert maps.n_panels == 6 and [tuple(p) for p in run.job.derived_panels] == PANELS
    for k, (r, c) in enumerate(spots):
        assert maps.panel_id[int(r), int(c)] == k
    assert (maps.panel_id[48:54, :] == -1).all() and maps.mask[48:54, :].all() and (maps.panel_id[:, 64:74] == -1).all()
    peaks, _ = run.run()
    assert len(peaks) == 2 * len(spots)
    for k in range(2):
        sel = peaks.frame == k
        for r, c in spots:
            assert np.min(np.hypot(peaks.row[sel] - r, peaks.col[sel] - c)) < 0.5


def test_seamless_modules_stay_one_panel(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    frames, spots = _tiled()
    with caplog.at_level(logging.INFO, logger="braggml.pipeline"):
        run = PreparedRun(
            FindJob(inputs=(str(_write_nexus(tmp_path / "flat.h5", frames)),)), warn_without_geometry=False
        )
    assert "6 modules (48 x 64) from the gaps" in caplog.text and "join across the gaps" in caplog.text
    assert run.geometry.maps.n_panels == 1 and run.job.derived_panels == ()
    peaks, _ = run.run()
    assert len(peaks) == 2 * len(spots)


def test_file_mask_gaps_make_panels_and_user_geometry_file_wins(tmp_path: Path) -> None:
    frames, _ = _tiled(1, OFFSETS)
    gap = frames[0] < 0
    frames = np.where(gap, 0, frames).astype(np.int32)  # the gaps are only in the mask dataset
    path = _write_nexus(tmp_path / "masked.h5", frames, pixel_mask=gap)
    run = PreparedRun(FindJob(inputs=(str(path),), refine_beam_center=False), warn_without_geometry=False)
    assert run.geometry.maps.n_panels == 6 and len(run.job.derived_panels) == 6
    geom = tmp_path / "one.geom"
    geom.write_text(
        "res = 5814\nclen = 0.1\np0/min_fs = 0\np0/max_fs = 211\np0/min_ss = 0\np0/max_ss = 101\n"
        "p0/corner_x = -106\np0/corner_y = -51\np0/fs = x\np0/ss = y\n"
    )
    with_geom = PreparedRun(FindJob(inputs=(str(path),), geom=str(geom)), warn_without_geometry=False)
    assert with_geom.geometry.maps.n_panels == 1 and with_geom.job.derived_panels is None


def test_monolithic_frame_stays_one_panel(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = rng.poisson(10.0, (1, 80, 90)).astype(np.int32)
    frames[0, 35:45, 40:50] = -2  # a masked beamstop does not split the frame
    run = PreparedRun(FindJob(inputs=(str(_write_nexus(tmp_path / "mono.h5", frames)),)), warn_without_geometry=False)
    assert run.geometry.maps.n_panels == 1 and run.job.derived_panels == ()


def _cspad_like(n_sensors: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Pedestal-subtracted two-by-ones side by side with 4-pixel gaps: per-sensor offsets, bright big pixels."""
    rng = np.random.default_rng(5)
    cols = n_sensors * 388 + (n_sensors - 1) * 4
    frame = np.zeros((185, cols), np.float64)
    gap = np.ones((185, cols), bool)
    for s in range(n_sensors):
        c0 = s * 392
        block = 30.0 * s + rng.normal(0.0, 6.0, (185, 388))
        block[:, 193:195] = 30.0 * s + 2.5 * rng.normal(0.0, 6.0, (185, 2)) + 25.0  # 2.5x wider pixels
        frame[:, c0 : c0 + 388] = block
        gap[:, c0 : c0 + 388] = False
    frame[gap] = -1
    return np.rint(frame).astype(np.int32)[None], gap


def test_cspad_sensors_are_split_and_big_pixels_masked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    frames, gap = _cspad_like()
    path = _write_nexus(tmp_path / "cspad.h5", frames, pixel_mask=gap)
    with caplog.at_level(logging.INFO, logger="braggml.pipeline"):
        run = PreparedRun(FindJob(inputs=(str(path),)), warn_without_geometry=False)
    assert "CSPAD: 2 two-by-one sensors split into their ASICs" in caplog.text
    maps = run.geometry.maps
    assert maps.n_panels == 4
    for c0 in (0, 392):
        assert run.mask[:, c0 + 193 : c0 + 195].all() and not run.mask[:, c0 + 192].any()
        assert maps.panel_id[0, c0 + 192] != maps.panel_id[0, c0 + 195]
    peaks, _ = run.run()
    assert len(peaks) == 0  # noise only: neither the big pixels nor the sensor offsets make peaks


def test_sensor_stack_panels_from_metadata() -> None:
    assert sensor_stack_panels("", (32 * 185, 388)) is not None  # psana's stack: recognised by its shape
    assert len(sensor_stack_panels("", (1480, 1552))) == 32  # Cheetah's layout
    assert sensor_stack_panels("", (370, 388)) is None  # other shapes need the detector's name
    assert sensor_stack_panels("CSPAD 2.3M", (185, 388)) is None  # a single sensor: nothing to split
    hint = GeometryHint(panels=sensor_stack_panels("CS PAD", (370, 388)), source="test")
    assert not hint.is_empty and "2 unplaced sensors of 185 x 388" in hint.summary()
    panels = detector_panels((370, 388), gap=None, hint=hint)
    assert [tuple(p) for p in panels] == [
        (0, 184, 0, 192), (0, 184, 195, 387), (185, 369, 0, 192), (185, 369, 195, 387)
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="panels must be"):
        GeometryHint(panels=((1, 2),))


def test_resolve_geometry_applies_panels_to_every_branch() -> None:
    panels = (PanelRect(0, 9, 0, 9), PanelRect(0, 9, 12, 19))
    for kwargs in ({}, {"beam_center_rowcol": (5.0, 5.0)}, {"hint": GeometryHint(beam_center_rowcol=(1.0, 2.0))}):
        maps = resolve_geometry((10, 20), warn=False, panels=panels, **kwargs).maps
        assert maps.n_panels == 2 and maps.mask[:, 10:12].all() and not maps.mask[:, :10].any()
    flat = resolve_geometry(
        (10, 20), beam_center_rowcol=(5.0, 5.0), pixel_size_mm=0.1, distance_mm=100.0, panels=panels
    )
    assert flat.maps.n_panels == 2 and flat.geometry is not None


def test_find_job_validates_what_the_run_learned() -> None:
    job = FindJob(inputs=("x.h5",), derived_panels=[[0, 1, 0, 1]], refined_beam_center_rowcol=[1, 2])
    assert job.derived_panels == (PanelRect(0, 1, 0, 1),) and job.refined_beam_center_rowcol == (1.0, 2.0)
    with pytest.raises(ConfigError, match="derived_panels must be"):
        FindJob(inputs=("x.h5",), derived_panels=[[0, 1]])
    with pytest.raises(ConfigError, match="refined_beam_center_rowcol must be finite"):
        FindJob(inputs=("x.h5",), refined_beam_center_rowcol=(np.nan, 1.0))


# -- once per run ---------------------------------------------------------------------------------------------


def _ring_frames(shape: tuple[int, int], centre: tuple[float, float], n: int = 2, seed: int = 1) -> np.ndarray:
    rows, cols = np.indices(shape)
    r = np.hypot(rows - centre[0], cols - centre[1])
    image = 20.0 + 200.0 * np.exp(-((r - 40.0) ** 2) / 8.0) + 120.0 * np.exp(-((r - 75.0) ** 2) / 8.0)
    rng = np.random.default_rng(seed)
    return rng.poisson(image, (n, *shape)).astype(np.int32)


def test_a_prepared_job_reopens_without_reading_or_refining(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frames, _ = _tiled(1, OFFSETS)
    rings = _ring_frames(frames.shape[1:], (44.0, 110.0), n=1)
    frames = np.where(frames[0] < 0, -1, frames[0] + rings[0])[None].astype(np.int32)
    path = _write_nexus(tmp_path / "rings.h5", frames)
    run = PreparedRun(FindJob(inputs=(str(path),)), warn_without_geometry=False)
    centre = run.job.refined_beam_center_rowcol
    assert centre is not None and abs(centre[0] - 44.0) < 1.0 and abs(centre[1] - 110.0) < 1.0
    assert len(run.job.derived_panels) == 6

    def no_reading(self, index):  # noqa: ANN001, ANN202
        raise AssertionError("a worker read a frame to set up its run")

    monkeypatch.setattr(frames_module.FrameSource, "frame", no_reading)
    again = PreparedRun(run.job, warn_without_geometry=False)
    np.testing.assert_array_equal(again.geometry.maps.radius_px, run.geometry.maps.radius_px)
    np.testing.assert_array_equal(again.geometry.maps.panel_id, run.geometry.maps.panel_id)
    np.testing.assert_array_equal(again.mask, run.mask)
    assert again.job == run.job


# -- beam centre off the chip ---------------------------------------------------------------------------------


def _saxs_like(shape: tuple[int, int], centre: tuple[float, float], seed: int = 1) -> np.ndarray:
    """Two broad rings on a radial fall-off about ``centre`` (which may lie off the chip), Poisson counts."""
    rows, cols = np.indices(shape)
    r = np.hypot(rows - centre[0], cols - centre[1])
    image = 20.0 + 300.0 * np.exp(-r / 60.0) + 200.0 * np.exp(-((r - 80.0) ** 2) / 16.0)
    image += 120.0 * np.exp(-((r - 150.0) ** 2) / 16.0)
    return np.random.default_rng(seed).poisson(image).astype(np.int32)


@pytest.mark.parametrize("centre", [(-12.0, 60.0), (100.2, -20.6), (250.0, 420.0)])
def test_scattering_centred_off_the_chip_is_found(centre: tuple[float, float]) -> None:
    image = _saxs_like((240, 400), centre)
    fit = fit_beam_center(image, None, (119.5, 199.5), search_px=64.0)
    assert fit.moved and not fit.failed
    assert fit.center_rowcol == pytest.approx(centre, abs=1.5)
    assert fit.coherence_best > 0.9 and fit.coherence_start < 0.5


def test_centre_that_cannot_be_pinned_down_keeps_the_start() -> None:
    shape = (240, 400)
    fit = fit_beam_center(_saxs_like(shape, (-200.0, 200.0)), None, (119.5, 199.5), search_px=64.0)
    assert not fit.moved and fit.failed and "edge of the region searched" in fit.reason
    rows = np.indices(shape)[0]
    gradient = 50.0 + 0.5 * rows + np.random.default_rng(0).normal(0, 1.0, shape)
    assert not fit_beam_center(gradient, None, (119.5, 199.5)).moved  # a plain gradient never moves it
    flat = np.random.default_rng(1).poisson(30.0, (60, 100)).astype(float)
    fit = fit_beam_center(flat, None, (29.5, 49.5))
    assert not fit.moved and not fit.failed and fit.reason == "no clear gain in radial coherence"
    with pytest.raises(ConfigError, match="margin_fraction must be >= 0"):
        fit_beam_center(flat, None, (1.0, 1.0), margin_fraction=-1.0)


def test_failed_refinement_warns_and_keeps_the_stated_centre(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    frames = _saxs_like((240, 400), (-200.0, 200.0))[None]
    path = _write_nexus(tmp_path / "far.h5", frames)
    with caplog.at_level(logging.WARNING, logger="braggml.pipeline"):
        run = PreparedRun(FindJob(inputs=(str(path),)), warn_without_geometry=True)
    assert "beam centre refinement on" in caplog.text
    assert "keeping the assumed image centre (119.5, 199.5)" in caplog.text
    assert run.job.refined_beam_center_rowcol == (119.5, 199.5)
    assert np.unravel_index(np.argmin(run.geometry.maps.radius_px), (240, 400)) in {(119, 199), (120, 200)}


# -- real frames ----------------------------------------------------------------------------------------------


def _counts(run: PreparedRun) -> list[int]:
    peaks, _ = run.run()
    return np.bincount(peaks.frame, minlength=peaks.n_frames).tolist()


def test_real_cspad_without_geometry_gives_plausible_counts(real_data: Path) -> None:
    path = real_data / "thermolysin_cspad" / "thermolysin_cspad.h5"
    if not path.is_file():
        pytest.skip("thermolysin_cspad.h5 not available")
    run = PreparedRun(FindJob(inputs=(str(path),)), warn_without_geometry=False)
    assert run.geometry.maps.n_panels == 64 and len(run.job.derived_panels) == 64
    peaks, _ = run.run()
    counts = np.bincount(peaks.frame, minlength=4)
    assert all(30 <= n <= 600 for n in counts), counts  # one-panel maps gave 1050-1240, mostly big pixels
    local_col = np.rint(peaks.col).astype(int) % 392
    assert not np.isin(local_col, (193, 194)).any()


def test_real_cspad_cbf_sensor_stack(real_data: Path) -> None:
    pytest.importorskip("pycbf")
    path = real_data / "thermolysin_cspad" / "idx-20130301060858401.cbf"
    if not path.is_file():
        pytest.skip("thermolysin CSPAD CBF not available")
    run = PreparedRun(FindJob(inputs=(str(path),)), warn_without_geometry=False)
    assert run.geometry.maps.n_panels == 64 and run.job.refined_beam_center_rowcol is None
    (count,) = _counts(run)
    assert 30 <= count <= 1000  # one panel: 2048, the finder's cap


@pytest.mark.slow
def test_real_pilatus_modules_are_found_and_stay_one_panel(real_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = real_data / "thaumatin_grid" / "thau_3_2_0002.cbf.bz2"
    if not path.is_file():
        pytest.skip("thaumatin grid frames not available")
    with caplog.at_level(logging.INFO, logger="braggml.pipeline"):
        run = PreparedRun(FindJob(inputs=(str(path),)), warn_without_geometry=False)
    assert "60 modules (195 x 487) from the gaps" in caplog.text  # Pilatus 6M: 5 x 12 modules
    assert run.geometry.maps.n_panels == 1 and run.job.derived_panels == ()  # calibrated: no steps at the gaps
    (count,) = _counts(run)
    assert 1000 <= count <= 2048  # a strong hit


def test_real_saxs_frame_centre_off_the_chip(real_data: Path) -> None:
    path = real_data / "negatives" / "AgBehenate_228.hdf5"
    if not path.is_file():
        pytest.skip("AgBehenate_228.hdf5 not available")
    run = PreparedRun(FindJob(inputs=(str(path),)), warn_without_geometry=False)
    row, col = run.job.refined_beam_center_rowcol
    # The file's pin_ccd_center_x|y_pixel say 85.86 and -5.42 px; the array is (195, 487) with the beam
    # just beyond its first column.
    assert abs(row - 85.86) < 2.0 and -8.0 < col < 0.0
    assert np.unravel_index(np.argmin(run.geometry.maps.radius_px), (195, 487))[1] == 0
