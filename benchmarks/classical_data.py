"""Real frames for the classical-finder benchmarks: image, bad-pixel mask and pixel maps per frame.

Reads ``../shared/data/real`` (see its README) with fabio and h5py. Masks come from each detector's
sentinel values; maps from the beam centres and geometry given in the README and the CBF headers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from braggml.geometry import PixelMaps

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


@dataclass
class RealFrame:
    name: str
    image: np.ndarray
    mask: np.ndarray
    maps: PixelMaps
    kind: str  # "hit", "blank", "powder", ...
    expected: tuple[int, int] | None = None  # plausible peak-count range


def _radial_maps(
    shape: tuple[int, int],
    center_rowcol: tuple[float, float],
    panel_id: np.ndarray | None = None,
    *,
    pixel_mm: float | None = None,
    distance_mm: float | None = None,
    wavelength_a: float | None = None,
) -> PixelMaps:
    r = np.arange(shape[0], dtype=np.float64)[:, None] - center_rowcol[0]
    c = np.arange(shape[1], dtype=np.float64)[None, :] - center_rowcol[1]
    radius = np.hypot(r, c)
    res = None
    if pixel_mm and distance_mm and wavelength_a:
        two_theta = np.arctan(radius * pixel_mm / distance_mm)
        with np.errstate(divide="ignore"):
            res = (wavelength_a / (2 * np.sin(two_theta / 2))).astype(np.float32)
    pid = np.zeros(shape, np.int32) if panel_id is None else panel_id
    return PixelMaps(panel_id=pid, radius_px=radius.astype(np.float32), mask=pid < 0, resolution_a=res)


def _cbf_header_float(header: str, key: str) -> float | None:
    m = re.search(rf"{key}\s+([-\d.eE+]+)", header)
    return float(m.group(1)) if m else None


def thaumatin(index: int) -> RealFrame:
    import fabio

    path = REAL / "thaumatin_grid" / f"thau_3_2_{index:04d}.cbf.bz2"
    img = fabio.open(str(path))
    data = img.data
    header = img.header.get("_array_data.header_contents", "")
    dist_m = _cbf_header_float(header, "Detector_distance") or 0.351
    wl = _cbf_header_float(header, "Wavelength") or 0.96859
    gap = data == -1
    mask = (data < 0) | (data > 115897)
    panel = np.where(gap, -1, 0).astype(np.int32)
    maps = _radial_maps(
        data.shape, (1306.96, 1261.61), panel, pixel_mm=0.172, distance_mm=dist_m * 1000, wavelength_a=wl
    )
    kind = "blank" if index >= 16 else ("hit" if 2 <= index <= 14 else "weak")
    expected = (0, 30) if kind == "blank" else ((250, 2000) if kind == "hit" else None)
    return RealFrame(f"thaumatin_{index:04d}", data, mask, maps, kind, expected)


def cspad(index: int) -> RealFrame:
    import h5py

    with h5py.File(REAL / "thermolysin_cspad" / "thermolysin_cspad.h5") as f:
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
    maps = PixelMaps(panel_id=panel, radius_px=radius, mask=panel < 0, resolution_a=None)
    return RealFrame(f"cspad_{index}", data, mask, maps, "hit", (15, 300))


def rayonix() -> RealFrame:
    import h5py

    with h5py.File(REAL / "rayonix_kapton" / "rayonix_kapton.h5") as f:
        data = f["entry/data/data"][0]
    mask = data == 0
    maps = _radial_maps(data.shape, (960.0, 960.0))
    return RealFrame("rayonix_kapton", data, mask, maps, "kapton", (5, 150))


def ceo2() -> RealFrame:
    import fabio

    data = fabio.open(str(REAL / "negatives" / "CeO2_Pilatus1M.tif")).data.astype(np.int32)
    mask = data < 0
    panel = np.where(data == -1, -1, 0).astype(np.int32)
    maps = _radial_maps(data.shape, (529.0, 489.0), panel)
    return RealFrame("ceo2_pilatus1m", data, mask, maps, "powder", (0, 60))


def ceria2m() -> RealFrame:
    import h5py

    with h5py.File(REAL / "negatives" / "ceria_50x30_740mm_000005_Pilatus2M.hdf5") as f:
        data = f["imageseries/images"][0]
    mask = data < 0
    panel = np.where(data == -1, -1, 0).astype(np.int32)
    maps = _radial_maps(data.shape, (807.0, 775.0), panel)
    return RealFrame("ceria_pilatus2m", data, mask, maps, "powder", (0, 60))


def lcys(index: int) -> RealFrame:
    import fabio

    data = fabio.open(str(REAL / "l_cysteine" / f"l-cyst_01_{index:05d}.cbf")).data
    mask = data < 0
    panel = np.where(data == -1, -1, 0).astype(np.int32)
    maps = _radial_maps(data.shape, (data.shape[0] / 2, data.shape[1] / 2), panel)
    return RealFrame(f"lcys_{index}", data, mask, maps, "sparse", (3, 40))


def pilatus_misc(name: str) -> RealFrame:
    """A frame of ``pilatus_misc/``: ``DLS_I23_P12M_thau_00001`` (Pilatus 12M, 24 panels in DIALS) or
    ``DLS_I03_smargon_0001`` (Pilatus 6M), with the beam centre of its header."""
    import fabio

    img = fabio.open(str(REAL / "pilatus_misc" / f"{name}.cbf.gz"))
    data = img.data
    header = img.header.get("_array_data.header_contents", "")
    m = re.search(r"Beam_xy\s*\(\s*([-\d.]+),\s*([-\d.]+)\)", header)
    center = (float(m.group(2)), float(m.group(1))) if m else (data.shape[0] / 2, data.shape[1] / 2)
    mask = data < 0
    panel = np.where(data == -1, -1, 0).astype(np.int32)
    return RealFrame(name, data, mask, _radial_maps(data.shape, center, panel), "hit")


def hexrd_ruby(index: int = 4) -> RealFrame:
    """A thresholded HEXRD frame (only pixels above HEXRD's cut are stored, the rest is 0); frame 4 (ff2:600)
    carries a burst of about 4000 single-pixel noise counts and one to three spots (DIALS: 2)."""
    import h5py

    with h5py.File(REAL / "hexrd_ruby" / "hexrd_ruby.h5") as f:
        data = f["entry/data/data"][index]
    mask = np.zeros(data.shape, bool)
    maps = _radial_maps(data.shape, ((data.shape[0] - 1) / 2, (data.shape[1] - 1) / 2))
    return RealFrame(f"hexrd_ruby_{index}", data, mask, maps, "noise", (0, 20))
