"""Default settings on real detector frames: peak counts in plausible ranges (tolerant)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from braggml.finder import make_finder
from braggml.geometry import PixelMaps

pytestmark = pytest.mark.real_data

FINDERS = ["threshold", "peakfinder8", "dispersion", "dispersion_extended"]


def _radial_maps(shape: tuple[int, int], centre: tuple[float, float], panel: np.ndarray) -> PixelMaps:
    rows = np.arange(shape[0], dtype=np.float64)[:, None] - centre[0]
    cols = np.arange(shape[1], dtype=np.float64)[None, :] - centre[1]
    radius = np.hypot(rows, cols).astype(np.float32)
    return PixelMaps(panel_id=panel, radius_px=radius, mask=panel < 0)


def _thaumatin(real: Path, index: int) -> tuple[np.ndarray, np.ndarray, PixelMaps]:
    fabio = pytest.importorskip("fabio")
    data = fabio.open(str(real / "thaumatin_grid" / f"thau_3_2_{index:04d}.cbf.bz2")).data
    mask = (data < 0) | (data > 115897)  # gaps, bad pixels, above the count cut-off
    panel = np.where(data == -1, -1, 0).astype(np.int32)
    return data, mask, _radial_maps(data.shape, (1306.96, 1261.61), panel)


def _cspad(real: Path, index: int) -> tuple[np.ndarray, np.ndarray, PixelMaps]:
    h5py = pytest.importorskip("h5py")
    with h5py.File(real / "thermolysin_cspad" / "thermolysin_cspad.h5") as f:
        data = f["entry/data/data"][index]
        gap = f["entry/instrument/detector/pixel_mask"][()] > 0
        radius = f["entry/instrument/detector/radius_px"][()].astype(np.float32)
    panel = np.full(data.shape, -1, np.int32)
    for s in range(32):  # 32 two-by-one sensors, each two 185 x 194 ASICs (dxtbx's 64 panels)
        r0, c0 = 189 * (s // 8), 392 * (s % 8)
        panel[r0 : r0 + 185, c0 : c0 + 194] = 2 * s
        panel[r0 : r0 + 185, c0 + 194 : c0 + 388] = 2 * s + 1
    panel[gap] = -1
    mask = gap | (data >= 16383) | (data < -400)
    return data, mask, PixelMaps(panel_id=panel, radius_px=radius, mask=panel < 0)


def _ceo2(real: Path) -> tuple[np.ndarray, np.ndarray, PixelMaps]:
    fabio = pytest.importorskip("fabio")
    data = fabio.open(str(real / "negatives" / "CeO2_Pilatus1M.tif")).data.astype(np.int32)
    panel = np.where(data == -1, -1, 0).astype(np.int32)
    return data, data < 0, _radial_maps(data.shape, (529.0, 489.0), panel)


def _rayonix(real: Path) -> tuple[np.ndarray, np.ndarray, PixelMaps]:
    h5py = pytest.importorskip("h5py")
    with h5py.File(real / "rayonix_kapton" / "rayonix_kapton.h5") as f:
        data = f["entry/data/data"][0]
    return data, data == 0, _radial_maps(data.shape, (960.0, 960.0), np.zeros(data.shape, np.int32))


@pytest.fixture(scope="module")
def frames(real_data: Path) -> dict[str, tuple[np.ndarray, np.ndarray, PixelMaps]]:
    return {
        "hit": _thaumatin(real_data, 2),
        "blank": _thaumatin(real_data, 17),
        "cspad": _cspad(real_data, 0),
        "powder": _ceo2(real_data),
        "kapton": _rayonix(real_data),
    }


# (low, high) plausible peak counts; wide on purpose
EXPECTED = {
    "hit": (350, 2000),
    "blank": (0, 20),
    "cspad": (30, 800),
    "powder": (0, 80),
    "kapton": (5, 100),  # a few dozen weak spots on strong kapton scatter
}


@pytest.mark.parametrize("finder_name", FINDERS)
@pytest.mark.parametrize("frame", sorted(EXPECTED))
def test_default_peak_counts_on_real_frames(frames: dict, finder_name: str, frame: str) -> None:
    image, mask, maps = frames[frame]
    before = image.copy()
    peaks = make_finder(finder_name).find(image, mask, maps=maps)
    low, high = EXPECTED[frame]
    assert low <= len(peaks) <= high, f"{finder_name} on {frame}: {len(peaks)} peaks"
    np.testing.assert_array_equal(image, before)
    assert not np.any(mask[np.rint(peaks.row).astype(int), np.rint(peaks.col).astype(int)])


@pytest.mark.parametrize(("finder_name", "dials_spots"), [("dispersion", 77), ("dispersion_extended", 110)])
def test_sparse_photon_counting_frame_as_dials_finds_it(real_data: Path, finder_name: str, dials_spots: int) -> None:
    # an EIGER 16M frame of a few photons per thousand pixels; dials.find_spots (DIALS 3.12) finds 77 spots with
    # dispersion and 110 with dispersion_extended. The photon gain, fitted on near-empty radius bins without the
    # half-count noise floor, once came out at 126 counts per photon and every spot failed the Poisson test.
    pytest.importorskip("fabio")
    from braggml.pipeline import FindJob, PreparedRun

    path = real_data / "eiger2" / "dlsnxs2cbf_therm_0001.cbf.gz"
    run = PreparedRun(FindJob(inputs=(str(path),), finder=finder_name), warn_without_geometry=False)
    frame = run.source.frame(0)
    finder = make_finder(finder_name)
    peaks = finder.find(frame.data, run.mask | frame.bad, maps=run.geometry.maps)
    assert dials_spots <= len(peaks) <= 1.2 * dials_spots
