"""Files of simulated frames with their ground truth (HDF5, CXI layout plus a ``/truth`` group).

Layout (N frames of H x W pixels, S truth spots):

``/entry_1/data_1/data``            (N, H, W) frames, one chunk per frame, compressed
``/entry_1/data_1/mask``            (H, W) uint8, non-zero = bad pixel (gaps, chip edges, beamstop, dead)
``/entry_1/instrument_1/...``       CXI geometry: ``detector_1/distance``, ``x_pixel_size``, ``y_pixel_size``
                                    (metres), ``source_1/energy`` (J), ``wavelength`` (m)
``/truth``                          attributes ``format`` = ``braggml-simulation``, ``version``, ``seed``,
                                    ``first_frame``, ``n_frames``, ``parameters`` (JSON: configuration and
                                    geometry)
``/truth/spots/<column>``           (S,) one dataset per truth column (``braggml.simulate.SPOT_COLUMNS``);
                                    ``frame`` is the frame's position in this file
``/truth/frames/<column>``          (N,) per-frame truth (``hit``, ``n_spots``, ``wavelength_a``, ...), plus
                                    ``index`` (the simulator's frame number) and ``orientation`` (N, 2, 4)
``/truth/footprint``                (N, H, W) uint8 bit field: 1 spot footprint, 2 cosmic-ray streak
``/truth/detector/*``               ``panel_id`` (H, W) int16, ``mask_reason`` (H, W) uint8 (1 gap,
                                    2 beamstop, 4 dead), ``hot_pixel_photons`` (H, W) float32

The writer builds the file under a temporary name in the target folder and renames it into place when it is
complete, so a reader never sees a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError, DataFormatError, InputNotFoundError
from ..geometry import PixelMaps
from ..peaks import FrameRef, PeakList

__all__ = [
    "DATA_PATH",
    "MASK_PATH",
    "TRUTH_GROUP",
    "SimFileWriter",
    "SimTruth",
    "read_truth",
    "read_sim_frame",
    "read_sim_footprint",
    "read_sim_mask",
    "read_sim_pixel_maps",
    "iter_sim_frames",
]

DATA_PATH = "/entry_1/data_1/data"
MASK_PATH = "/entry_1/data_1/mask"
TRUTH_GROUP = "/truth"
FOOTPRINT_PATH = "/truth/footprint"
FORMAT_NAME = "braggml-simulation"
FORMAT_VERSION = 1
_JOULE_PER_KEV = 1.602176634e-16


def _compression(name: str) -> dict[str, Any]:
    if name == "bitshuffle_lz4":
        import hdf5plugin

        return dict(hdf5plugin.Bitshuffle(cname="lz4"))
    if name == "gzip":
        return {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    if name == "none":
        return {}
    raise ConfigError(f"compression must be 'bitshuffle_lz4', 'gzip' or 'none', got {name!r}")


class SimFileWriter:
    """Stream simulated frames and their truth into an HDF5 file.

    Parameters
    ----------
    path : str or Path
        Output file; written under a temporary name and renamed on :meth:`close`.
    n_frames : int
        Number of frames the file will hold.
    shape : (H, W)
        Frame shape.
    dtype : numpy dtype
        Frame dtype.
    mask : (H, W) bool ndarray
        Detector mask, True = bad.
    spot_columns, frame_columns : dict of str to dtype
        Truth columns to create.
    parameters : dict
        Run parameters (JSON-serialisable), stored in ``/truth`` attribute ``parameters``.
    detector_maps : dict of str to (H, W) ndarray
        Stored under ``/truth/detector``.
    compression : {"bitshuffle_lz4", "gzip", "none"}
    flush_every : int
        Truth spots are appended to the file every this many frames.

    Examples
    --------
    Use as a context manager; the file appears under ``path`` only if the block ends without an exception.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        n_frames: int,
        shape: tuple[int, int],
        dtype: Any,
        mask: NDArray[np.bool_],
        spot_columns: Mapping[str, Any],
        frame_columns: Mapping[str, Any],
        parameters: Mapping[str, Any],
        detector_maps: Mapping[str, NDArray[Any]] | None = None,
        compression: str = "bitshuffle_lz4",
        flush_every: int = 64,
    ) -> None:
        if n_frames < 1:
            raise ConfigError(f"n_frames must be >= 1, got {n_frames!r}")
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise InputNotFoundError(f"{self.path}: output folder {self.path.parent} does not exist")
        self._tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        self.n_frames = int(n_frames)
        self.shape = tuple(int(v) for v in shape)
        self._spot_columns = dict(spot_columns)
        self._frame_columns = dict(frame_columns)
        self._flush_every = max(1, int(flush_every))
        self._pending: list[dict[str, NDArray[Any]]] = []
        self._n_spots = 0
        self._written = np.zeros(self.n_frames, bool)
        self._closed = False
        comp = _compression(compression)
        self._file = h5py.File(self._tmp, "w")
        try:
            f = self._file
            f.attrs["default"] = "entry_1"
            entry = f.create_group("entry_1")
            entry.attrs["NX_class"] = "NXentry"
            data = entry.create_group("data_1")
            self._data = data.create_dataset(
                "data", shape=(self.n_frames, *self.shape), dtype=np.dtype(dtype), chunks=(1, *self.shape), **comp
            )
            data.create_dataset("mask", data=np.asarray(mask, bool).astype(np.uint8), **_comp_small(comp))
            data["mask"].attrs["description"] = "non-zero marks a bad pixel"
            geom = dict(parameters.get("geometry", {}))
            inst = entry.create_group("instrument_1")
            det = inst.create_group("detector_1")
            if "distance_mm" in geom:
                det["distance"] = geom["distance_mm"] * 1e-3
                det["x_pixel_size"] = geom["pixel_size_mm"] * 1e-3
                det["y_pixel_size"] = geom["pixel_size_mm"] * 1e-3
                det["data"] = h5py.SoftLink(DATA_PATH)
                src = inst.create_group("source_1")
                src["energy"] = geom["energy_kev"] * _JOULE_PER_KEV
                src["wavelength"] = geom["wavelength_a"] * 1e-10
            truth = f.create_group("truth")
            truth.attrs["format"] = FORMAT_NAME
            truth.attrs["version"] = FORMAT_VERSION
            truth.attrs["n_frames"] = self.n_frames
            truth.attrs["parameters"] = json.dumps(dict(parameters), sort_keys=True)
            for key in ("seed", "first_frame"):
                if key in parameters:
                    truth.attrs[key] = int(parameters[key])
            spots = truth.create_group("spots")
            for name, col_dtype in self._spot_columns.items():
                spots.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.dtype(col_dtype), chunks=(65536,))
            frames = truth.create_group("frames")
            for name, col_dtype in self._frame_columns.items():
                frames.create_dataset(name, shape=(self.n_frames,), dtype=np.dtype(col_dtype))
            frames.create_dataset("index", shape=(self.n_frames,), dtype=np.int64)
            frames.create_dataset("orientation", shape=(self.n_frames, 2, 4), dtype=np.float64)
            self._footprint = truth.create_dataset(
                "footprint", shape=(self.n_frames, *self.shape), dtype=np.uint8, chunks=(1, *self.shape), **comp
            )
            self._footprint.attrs["bits"] = "1: truth spot footprint, 2: cosmic-ray streak"
            maps = truth.create_group("detector")
            for name, value in (detector_maps or {}).items():
                maps.create_dataset(name, data=value, **_comp_small(comp))
        except BaseException:
            self._abort()
            raise

    # -- writing -----------------------------------------------------------------------------------------
    def write(
        self,
        slot: int,
        *,
        image: NDArray[Any],
        footprint: NDArray[np.uint8],
        spots: Mapping[str, NDArray[Any]],
        info: Mapping[str, Any],
        index: int,
        orientations: NDArray[np.float64],
    ) -> None:
        """Store one frame at position ``slot``; its spots' ``frame`` column is set to ``slot``."""
        if self._closed:
            raise ValueError(f"{self.path}: writer is closed")
        if not 0 <= slot < self.n_frames:
            raise IndexError(f"slot {slot} outside 0..{self.n_frames - 1}")
        if image.shape != self.shape:
            raise ValueError(f"frame has shape {image.shape}, the file holds {self.shape}")
        self._data[slot] = image
        self._footprint[slot] = footprint
        frames = self._file["truth/frames"]
        for name in self._frame_columns:
            frames[name][slot] = info[name]
        frames["index"][slot] = index
        frames["orientation"][slot] = orientations
        table = {name: np.asarray(spots[name]) for name in self._spot_columns}
        if "frame" in table:
            table["frame"] = np.full(table["frame"].shape, slot, np.int64)
        self._pending.append(table)
        self._written[slot] = True
        if len(self._pending) >= self._flush_every:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        group = self._file["truth/spots"]
        n_new = sum(int(next(iter(t.values())).size) for t in self._pending) if self._spot_columns else 0
        if n_new:
            for name in self._spot_columns:
                values = np.concatenate([t[name] for t in self._pending])
                ds = group[name]
                ds.resize((self._n_spots + n_new,))
                ds[self._n_spots :] = values
            self._n_spots += n_new
        self._pending.clear()

    def close(self) -> Path:
        """Finish the file and rename it into place; returns the final path."""
        if self._closed:
            return self.path
        if not self._written.all():
            missing = np.flatnonzero(~self._written)
            self._abort()
            raise ValueError(f"{self.path}: frames {missing[:5].tolist()}... were never written")
        self._flush()
        self._sort_spots()
        self._file.close()
        self._closed = True
        os.replace(self._tmp, self.path)
        return self.path

    def _sort_spots(self) -> None:
        group = self._file["truth/spots"]
        if "frame" not in group or self._n_spots == 0:
            return
        frame = group["frame"][()]
        if np.all(np.diff(frame) >= 0):
            return
        order = np.argsort(frame, kind="stable")
        for name in self._spot_columns:
            group[name][...] = group[name][()][order]

    def _abort(self) -> None:
        self._closed = True
        try:
            self._file.close()
        finally:
            if self._tmp.exists():
                self._tmp.unlink()

    def __enter__(self) -> SimFileWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()


def _comp_small(comp: Mapping[str, Any]) -> dict[str, Any]:
    """Compression settings for the small per-detector maps (gzip, readable without plugins)."""
    return {"compression": "gzip", "compression_opts": 4, "shuffle": True} if comp else {}


# -- reading ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SimTruth:
    """Ground truth of a simulated file.

    Attributes
    ----------
    peaks : PeakList
        Observable truth spots (centre on an unmasked pixel) as a peak list: ``intensity`` = integrated ADU,
        ``background`` = mean background ADU per footprint pixel, ``snr`` = expected SNR, ``n_pixels`` =
        footprint size, ``max_value`` = expected peak-pixel ADU; ``frames`` point into the file.
    spots : dict of str to (S,) ndarray
        The full truth table, every spot (observable or not).
    frames : dict of str to (N,) ndarray
        Per-frame truth (``hit``, ``n_spots``, ``wavelength_a``, ``index``, ``orientation``, ...).
    mask : (H, W) bool ndarray
        Detector mask, True = bad.
    parameters : dict
        Run parameters: ``seed``, ``first_frame``, ``config`` and ``geometry``.
    """

    peaks: PeakList
    spots: dict[str, NDArray[Any]]
    frames: dict[str, NDArray[Any]]
    mask: NDArray[np.bool_]
    parameters: dict[str, Any]

    @property
    def n_frames(self) -> int:
        return self.peaks.n_frames

    @property
    def hit(self) -> NDArray[np.bool_]:
        """Per-frame hit flag."""
        return self.frames["hit"].astype(bool)


def _open(path: str | Path) -> h5py.File:
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: simulated frame file not found")
    try:
        import hdf5plugin  # noqa: F401  (registers the Bitshuffle filter)
    except ImportError:  # pragma: no cover - hdf5plugin is a dependency
        pass
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise DataFormatError(f"{path}: not an HDF5 file ({exc})") from None
    if TRUTH_GROUP not in f or f[TRUTH_GROUP].attrs.get("format") != FORMAT_NAME:
        f.close()
        raise DataFormatError(f"{path}: no simulation truth group {TRUTH_GROUP} (not a braggml simulated file)")
    if DATA_PATH not in f:
        f.close()
        raise DataFormatError(f"{path}: dataset {DATA_PATH} missing")
    return f


def read_truth(path: str | Path, *, min_snr: float | None = None) -> SimTruth:
    """Read the ground truth of a simulated file.

    Parameters
    ----------
    path : str or Path
    min_snr : float, optional
        Keep only truth spots with at least this expected SNR in :attr:`SimTruth.peaks` (the full table in
        :attr:`SimTruth.spots` is unfiltered).

    Raises
    ------
    InputNotFoundError
        If the file does not exist.
    DataFormatError
        If it is not a braggml simulated file.
    """
    path = Path(path)
    with _open(path) as f:
        truth = f[TRUTH_GROUP]
        n_frames = int(truth.attrs["n_frames"])
        spots = {name: ds[()] for name, ds in truth["spots"].items()}
        frames = {name: ds[()] for name, ds in truth["frames"].items()}
        mask = f[MASK_PATH][()] != 0 if MASK_PATH in f else np.zeros(f[DATA_PATH].shape[1:], bool)
        parameters = json.loads(truth.attrs["parameters"])
    keep = spots["observable"].astype(bool)
    if min_snr is not None:
        keep &= spots["snr"] >= min_snr
    refs = [FrameRef(str(path), DATA_PATH, i) for i in range(n_frames)]
    peaks = PeakList.from_columns(
        n_frames=n_frames,
        frames=refs,
        frame=spots["frame"][keep],
        row=spots["row"][keep],
        col=spots["col"][keep],
        intensity=spots["adu"][keep],
        background=spots["background_adu"][keep],
        snr=spots["snr"][keep],
        n_pixels=spots["n_pixels"][keep],
        max_value=spots["peak_adu"][keep],
    )
    return SimTruth(peaks=peaks, spots=spots, frames=frames, mask=mask, parameters=parameters)


def read_sim_frame(path: str | Path, index: int) -> NDArray[Any]:
    """Frame ``index`` of a simulated file."""
    with _open(path) as f:
        data = f[DATA_PATH]
        if not 0 <= index < data.shape[0]:
            raise IndexError(f"{path}: frame {index} out of range for {data.shape[0]} frames in {DATA_PATH}")
        return data[index]


def read_sim_footprint(path: str | Path, index: int) -> NDArray[np.uint8]:
    """Footprint bit field (1 spot, 2 cosmic-ray streak) of frame ``index``."""
    with _open(path) as f:
        data = f[FOOTPRINT_PATH]
        if not 0 <= index < data.shape[0]:
            raise IndexError(f"{path}: frame {index} out of range for {data.shape[0]} frames in {FOOTPRINT_PATH}")
        return data[index]


def read_sim_mask(path: str | Path) -> NDArray[np.bool_]:
    """Detector mask of a simulated file, True = bad."""
    with _open(path) as f:
        return f[MASK_PATH][()] != 0


def read_sim_pixel_maps(path: str | Path) -> PixelMaps:
    """The :class:`~braggml.geometry.PixelMaps` of a simulated file's detector (panels, radius, mask, d)."""
    with _open(path) as f:
        shape = f[DATA_PATH].shape[1:]
        mask = f[MASK_PATH][()] != 0
        panel_path = f"{TRUTH_GROUP}/detector/panel_id"
        panel = f[panel_path][()].astype(np.int32) if panel_path in f else np.zeros(shape, np.int32)
        geometry = json.loads(f[TRUTH_GROUP].attrs["parameters"]).get("geometry", {})
    try:
        beam_r, beam_c = geometry["beam_center_rowcol"]
        distance_mm = float(geometry["distance_mm"])
        pixel_mm = float(geometry["pixel_size_mm"])
        wavelength_a = float(geometry["wavelength_a"])
    except (KeyError, TypeError, ValueError):
        raise DataFormatError(f"{path}: {TRUTH_GROUP} attribute 'parameters' has no usable geometry") from None
    rows = np.arange(shape[0], dtype=np.float64)[:, None] - beam_r
    cols = np.arange(shape[1], dtype=np.float64)[None, :] - beam_c
    radius = np.hypot(rows, cols)
    half_angle = 0.5 * np.arctan2(radius * pixel_mm, distance_mm)
    with np.errstate(divide="ignore"):
        resolution = wavelength_a / (2.0 * np.sin(half_angle))
    return PixelMaps(
        panel_id=panel,
        radius_px=radius.astype(np.float32),
        mask=mask,
        resolution_a=resolution.astype(np.float32),
        known=True,
    )


def iter_sim_frames(path: str | Path) -> Iterator[NDArray[Any]]:
    """Yield the frames of a simulated file one at a time."""
    with _open(path) as f:
        data = f[DATA_PATH]
        for i in range(data.shape[0]):
            yield data[i]
