"""Peak-list files: CXI (Cheetah/OM/CrystFEL), CrystFEL streams, DIALS reflection tables (:mod:`.dials_refl`) and
CSV, and CrystFEL event lists.

Coordinates
-----------
:class:`~braggml.peaks.PeakList` puts the centre of pixel ``image[r, c]`` at ``row = r, col = c``. Each format
is mapped on the way in and out:

- **CXI** (``.cxi``, ``.h5``, ``.hdf5``): ``peakXPosRaw = col`` and ``peakYPosRaw = row``, the Cheetah/OM
  convention, one row per frame in peak-list order. CrystFEL reads this layout with
  ``indexamajig --peaks=cxi --hdf5-peaks=/entry_1/result_1`` (from the file that holds the frames) and adds its
  half-pixel shift itself (do not pass ``--no-half-pixel-shift``). When the frames are frames of HDF5
  datasets, the file's ``/entry_1/data_1/data`` is a virtual dataset of those frames, so the peak file is that
  file.
- **stream** (``.stream``): CrystFEL measures peak positions from the outer corner of the first pixel, so the
  stream holds ``fs = col + 0.5`` and ``ss = row + 0.5`` in data-array coordinates.
- **CSV** (``.csv``): braggml's own columns, ``row``/``col`` as in the peak list. CSV files from other tools
  with ``fs``/``ss`` or ``x``/``y`` columns are read as array coordinates with pixel centres at integers
  (``x = col = fs``, ``y = row = ss``).

All writers write atomically (:func:`braggml.io.atomic.atomic_output`).
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError, DataFormatError, InputNotFoundError
from ..geometry import DetectorGeometry, PixelMaps
from ..peaks import HIT_MIN_PEAKS, PEAK_COLUMNS, FrameRef, PeakList
from .atomic import atomic_output
from .geom import format_crystfel_geom, module_first_row, parse_crystfel_geom

__all__ = [
    "PeakFormat",
    "PEAK_FORMATS",
    "CXI_PEAKS_PATH",
    "peak_format",
    "write_peaks",
    "read_peaks",
    "write_event_list",
    "read_event_list",
    "parse_event_list",
]

PeakFormat = Literal["cxi", "stream", "csv", "refl"]

#: File-name endings of each peak-list format.
PEAK_FORMATS: dict[str, tuple[str, ...]] = {
    "cxi": (".cxi", ".h5", ".hdf5"),
    "stream": (".stream",),
    "csv": (".csv",),
    "refl": (".refl",),
}

#: Group of the CXI peak arrays (CrystFEL ``hdf5-peaks``).
CXI_PEAKS_PATH = "/entry_1/result_1"
_CXI_BRAGGML = "braggml"
_CXI_FRAME_DATA = "/entry_1/data_1/data"
_CXI_FORMAT_VERSION = 1

_STREAM_MAGIC = "CrystFEL stream format"
_STREAM_VERSION = "2.3"
_CHUNK_BEGIN = "----- Begin chunk -----"
_CHUNK_END = "----- End chunk -----"
_GEOM_BEGIN = "----- Begin geometry file -----"
_GEOM_END = "----- End geometry file -----"
_PEAKS_BEGIN = "Peaks from peak search"
_PEAKS_HEADER = "  fs/px   ss/px (1/d)/nm^-1   Intensity  Panel"
_PEAKS_END = "End of peak list"
_CRYSTAL_BEGIN = "--- Begin crystal"
_CRYSTAL_END = "--- End crystal"
_NO_FILE = "(none)"
_DATASET_HEADER = "header/str/braggml_dataset"
#: Panel named in streams written without a geometry.
DEFAULT_PANEL_NAME = "p0"

_CSV_COLUMNS = (
    "frame", "file", "dataset", "index", "row", "col", "intensity", "background", "snr", "n_pixels",
    "max_value", "score",
)


def _version() -> str:
    from .. import __version__

    return str(__version__)


def peak_format(path: str | os.PathLike[str], format: str | None = None) -> PeakFormat:
    """The peak-list format named by ``format`` or, when None, by the file name's ending.

    Examples
    --------
    >>> peak_format("run7_peaks.h5"), peak_format("run7.stream"), peak_format("x.txt", "csv")
    ('cxi', 'stream', 'csv')
    """
    if format is not None:
        if format not in PEAK_FORMATS:
            raise ConfigError(f"peak-list format must be one of {', '.join(PEAK_FORMATS)}, got {format!r}")
        return format  # type: ignore[return-value]
    name = os.fspath(path).lower()
    for fmt, endings in PEAK_FORMATS.items():
        if name.endswith(endings):
            return fmt  # type: ignore[return-value]
    *known, last = (e for endings in PEAK_FORMATS.values() for e in endings)
    raise ConfigError(
        f"cannot tell the peak-list format of {os.fspath(path)!r} from its name: end it in {', '.join(known)} or "
        f"{last}, or give the format (find: --format)"
    )


# -- public entry points -----------------------------------------------------------------------------------------


def write_peaks(
    peaks: PeakList,
    path: str | os.PathLike[str],
    *,
    format: PeakFormat | None = None,
    geometry: DetectorGeometry | None = None,
    maps: PixelMaps | None = None,
    hit_min_peaks: int = HIT_MIN_PEAKS,
    dials_experiments: str | os.PathLike[str] | None = None,
) -> Path:
    """Write a peak list (atomically).

    Parameters
    ----------
    peaks : PeakList
        Peaks of ``peaks.n_frames`` frames; frames without peaks are kept in every format.
    path : str or path-like
        Output file; its folder must exist.
    format : {"cxi", "stream", "csv", "refl"}, optional
        Output format; by default from the file name (``.cxi``/``.h5``/``.hdf5``, ``.stream``, ``.csv``,
        ``.refl``: a DIALS reflection table of strong spots, see :mod:`braggml.io.dials_refl`).
    geometry : DetectorGeometry, optional
        Stream only: embedded in the stream header, names each peak's panel and gives 1/d.
    maps : PixelMaps, optional
        Stream only: 1/d from ``maps.resolution_a`` at the nearest pixel when no ``geometry`` is given.
    hit_min_peaks : int
        Stream only: a frame is written ``hit = 1`` when it has at least this many peaks.
    dials_experiments : str or path-like, optional
        ``.refl`` only: the DIALS experiment list (``imported.expt``) of the frames, which says whether they are
        stills or a rotation sequence, gives the experiments' identifiers and the detector's panels (peaks are
        written on the panel holding them, in its pixels). Without it, stills on one panel.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    ConfigError
        Unknown format, missing output folder, or a bad ``hit_min_peaks``.

    Notes
    -----
    The stream's ``(1/d)/nm^-1`` column is 0.0 when neither a geometry with wavelength and camera length nor
    maps with a resolution map are given, and for peaks outside every panel.
    """
    if not isinstance(peaks, PeakList):
        raise ConfigError(f"write_peaks needs a PeakList, got {type(peaks).__name__}")
    fmt = peak_format(path, format)
    out = Path(os.fspath(path))
    if fmt == "cxi":
        _write_cxi(peaks, out)
    elif fmt == "stream":
        if hit_min_peaks < 0:
            raise ConfigError(f"hit_min_peaks must be >= 0, got {hit_min_peaks!r}")
        _write_stream(peaks, out, geometry=geometry, maps=maps, hit_min_peaks=hit_min_peaks)
    elif fmt == "refl":
        from .dials_refl import experiment_layout, experiment_panels, write_refl

        panels = experiment_panels(dials_experiments) if dials_experiments is not None else None
        if geometry is not None and geometry.n_panels > 1 and (panels is None or len(panels) == 1):
            warnings.warn(
                f"{out}: the peaks are written in frame coordinates on DIALS panel 0; DIALS must read these frames "
                f"as one panel (the geometry has {geometry.n_panels})",
                stacklevel=2,
            )
        if dials_experiments is None:
            write_refl(peaks, out)
        else:
            layout, identifiers = experiment_layout(dials_experiments)
            write_refl(peaks, out, layout=layout, identifiers=identifiers, panels=panels)
    else:
        _write_csv(peaks, out)
    return out


def read_peaks(
    path: str | os.PathLike[str],
    *,
    format: PeakFormat | None = None,
    dials_experiments: str | os.PathLike[str] | None = None,
) -> PeakList:
    """Read a peak list written by braggml or by Cheetah/OM/psocake (CXI), CrystFEL (stream), DIALS (``.refl``)
    or as CSV.

    Parameters
    ----------
    path : str or path-like
        The peak-list file.
    format : {"cxi", "stream", "csv", "refl"}, optional
        Input format; by default from the file name.
    dials_experiments : str or path-like, optional
        ``.refl`` only: the DIALS experiment list the table goes with, whose detector places the spots of
        several panels on the frame (needed only when there are several).

    Returns
    -------
    PeakList
        Columns a file does not hold are NaN (``n_pixels`` 0). ``frames`` is set when the file tells where the
        frames came from (braggml files, stream chunks, CXI files holding their frames at
        ``/entry_1/data_1/data``, CSV ``file`` columns).

    Raises
    ------
    InputNotFoundError
        The file does not exist.
    DataFormatError
        The file is not a peak list of that format; the message names the file and what is missing or bad.
    """
    fmt = peak_format(path, format)
    p = Path(os.fspath(path))
    if not p.is_file():
        raise InputNotFoundError(f"peak-list file {str(p)!r} does not exist")
    if fmt == "cxi":
        return _read_cxi(p)
    if fmt == "stream":
        return _read_stream(p)
    if fmt == "refl":
        from .dials_refl import experiment_panels, read_refl

        return read_refl(p, panels=experiment_panels(dials_experiments) if dials_experiments is not None else None)
    return _read_csv(p)


def write_event_list(refs: Iterable[FrameRef], path: str | os.PathLike[str]) -> Path:
    """Write a CrystFEL event list (``indexamajig -i``): one ``file //index`` line per frame (atomically).

    The frame of a single-image file (no dataset path, index 0: CBF, TIFF) is written as the bare file name,
    which is how CrystFEL lists them. Frames of files without dataset paths that hold several (NumPy stacks, the
    frames after the first of any other) keep their index: a bare name stands for every frame of its file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "hits.lst"
    >>> refs = [FrameRef("run1.h5", "/entry/data/data", 3), FrameRef("img_0001.cbf"), FrameRef("stack.npy", None, 0)]
    >>> _ = write_event_list(refs, out)
    >>> print(out.read_text(), end="")
    run1.h5 //3
    img_0001.cbf
    stack.npy //0
    """
    lines = []
    for ref in refs:
        if not isinstance(ref, FrameRef):
            raise ConfigError(f"write_event_list needs FrameRef items, got {type(ref).__name__}")
        if any(ch in ref.file for ch in "\n\r"):
            raise ConfigError(f"file name {ref.file!r} cannot be written to an event list")
        stack = ref.file.lower().endswith((".npy", ".npz"))
        lines.append(f"{ref.file} {ref.event}" if ref.dataset or ref.index or stack else ref.file)
    out = Path(os.fspath(path))
    with atomic_output(out, mode="w") as fh:
        fh.write("".join(line + "\n" for line in lines))
    return out


def parse_event_list(path: str | os.PathLike[str]) -> list[tuple[int, str, int | None]]:
    """The entries of a CrystFEL event or file list: ``(line number, file, index)`` for each ``file //index``
    line, with index None for a bare ``file`` line (every frame of the file); ``#`` and ``;`` start comments.

    Raises
    ------
    InputNotFoundError
        The list does not exist.
    DataFormatError
        It cannot be read, or a line holds an event that is not a frame index.
    """
    p = Path(os.fspath(path))
    if not p.is_file():
        raise InputNotFoundError(f"event list {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{p}: cannot read the event list ({exc})") from None
    entries: list[tuple[int, str, int | None]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if " //" in line:
            name, event = line.rsplit(" //", 1)
            index = _event_index(event)
            if index is None:
                raise DataFormatError(f"{p}:{lineno}: cannot read event {'//' + event.strip()!r}")
            entries.append((lineno, name.strip(), index))
        else:
            entries.append((lineno, line, None))
    return entries


def read_event_list(path: str | os.PathLike[str]) -> list[FrameRef]:
    """Read a CrystFEL event or file list: ``file`` or ``file //index`` per line (``#``/``;`` comments); a bare
    file is read as its frame 0.

    The dataset path is not part of an event list and is left empty.
    """
    return [FrameRef(name, "", 0 if index is None else index) for _, name, index in parse_event_list(path)]


# -- CXI -------------------------------------------------------------------------------------------------------


def _write_cxi(peaks: PeakList, path: Path) -> None:
    n = peaks.n_frames
    counts = peaks.counts_per_frame()
    width = max(1, int(counts.max()) if counts.size else 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if n else np.zeros(0, np.int64)
    slot = np.arange(len(peaks), dtype=np.int64) - starts[peaks.frame] if len(peaks) else np.zeros(0, np.int64)
    std = {
        "peakXPosRaw": peaks.col,
        "peakYPosRaw": peaks.row,
        "peakTotalIntensity": peaks.intensity,
        "peakSNR": peaks.snr,
        "peakNPixels": peaks.n_pixels,
        "peakMaximumValue": peaks.max_value,
    }
    compress: dict[str, Any] = {"compression": "gzip", "compression_opts": 4, "shuffle": True} if n else {}
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["creator"] = f"braggml {_version()}"
        entry = f.create_group("entry_1")
        entry.attrs["NX_class"] = "NXentry"
        result = entry.create_group("result_1")
        result.attrs["software"] = "braggml"
        result.attrs["software_version"] = _version()
        result.attrs["coordinates"] = "peakXPosRaw = column, peakYPosRaw = row; pixel centres at integers"
        result.create_dataset("nPeaks", data=counts.astype(np.int32))
        for name, values in std.items():
            table = np.zeros((n, width), np.float32)
            if len(peaks):
                table[peaks.frame, slot] = values
            result.create_dataset(name, data=table, **compress)
        result["data"] = h5py.SoftLink(f"{CXI_PEAKS_PATH}/peakTotalIntensity")
        full = result.create_group(_CXI_BRAGGML)
        full.attrs["format_version"] = _CXI_FORMAT_VERSION
        full.attrs["n_frames"] = n
        full.attrs["description"] = "braggml peak list, one entry per peak in full precision"
        for name, dtype in PEAK_COLUMNS.items():
            full.create_dataset(name, data=np.asarray(getattr(peaks, name), dtype=dtype))
        if peaks.frames is not None:
            frames = full.create_group("frames")
            text = h5py.string_dtype("utf-8")
            frames.create_dataset("file", data=np.array([r.file for r in peaks.frames], dtype=object), dtype=text)
            frames.create_dataset(
                "dataset", data=np.array([r.dataset for r in peaks.frames], dtype=object), dtype=text
            )
            frames.create_dataset("index", data=np.array([r.index for r in peaks.frames], dtype=np.int64))
            _link_frames(f, peaks.frames, path)


def _link_frames(f: h5py.File, refs: Sequence[FrameRef], out: Path) -> None:
    """Make ``/entry_1/data_1/data`` a virtual dataset of the run's frames, when every frame is one frame of an
    HDF5 dataset of one shape and dtype, so that the peak file is also the frames' file that CrystFEL reads
    with ``--peaks=cxi`` (the sources are named relative to the peak file's folder). Otherwise nothing."""
    if not refs or not all(r.dataset and r.dataset.startswith("/") for r in refs):
        return
    shapes: dict[tuple[str, str], tuple[tuple[int, ...], np.dtype]] = {}
    for key in dict.fromkeys((r.file, r.dataset) for r in refs):
        try:
            with h5py.File(key[0], "r", locking=False) as src:
                dset = src[key[1]]
                if not isinstance(dset, h5py.Dataset) or dset.ndim not in (3, 4):
                    return
                shapes[key] = (tuple(int(n) for n in dset.shape), dset.dtype)
        except (OSError, KeyError, ValueError):
            return
    frame_shapes = {shape[1:] for shape, _dtype in shapes.values()}
    dtypes = {dtype for _shape, dtype in shapes.values()}
    if len(frame_shapes) != 1 or len(dtypes) != 1:
        return
    frame_shape = frame_shapes.pop()
    layout = h5py.VirtualLayout(shape=(len(refs), *frame_shape), dtype=dtypes.pop())
    sources = {}
    for key, (shape, _dtype) in shapes.items():
        try:
            name = os.path.relpath(os.path.abspath(key[0]), os.path.abspath(out.parent))
        except ValueError:  # another drive
            name = os.path.abspath(key[0])
        sources[key] = h5py.VirtualSource(name, key[1], shape=shape)
    k = 0
    while k < len(refs):  # runs of consecutive frames of one dataset map as one block
        r = refs[k]
        end = k + 1
        while end < len(refs) and (refs[end].file, refs[end].dataset) == (r.file, r.dataset) and (
            refs[end].index == r.index + (end - k)
        ):
            end += 1
        layout[k:end] = sources[(r.file, r.dataset)][r.index : r.index + (end - k)]
        k = end
    data = f.require_group("entry_1/data_1")
    data.create_virtual_dataset("data", layout)
    data.attrs["description"] = "the frames of the peak list, linked (virtual dataset) from the run's files"


def _read_cxi(path: Path) -> PeakList:
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise DataFormatError(f"{path}: not an HDF5 file ({exc})") from None
    with f:
        if CXI_PEAKS_PATH not in f:
            raise DataFormatError(f"{path}: no peak list at {CXI_PEAKS_PATH} (expected nPeaks, peakXPosRaw, ...)")
        group = f[CXI_PEAKS_PATH]
        if not isinstance(group, h5py.Group):
            raise DataFormatError(f"{path}: {CXI_PEAKS_PATH} is not a group")
        if _CXI_BRAGGML in group:
            return _read_cxi_full(path, group[_CXI_BRAGGML])
        return _read_cxi_standard(path, f, group)


def _read_cxi_full(path: Path, full: h5py.Group) -> PeakList:
    where = f"{path}::{CXI_PEAKS_PATH}/{_CXI_BRAGGML}"
    missing = [name for name in PEAK_COLUMNS if name not in full]
    if missing or "n_frames" not in full.attrs:
        what = ", ".join(missing + ([] if "n_frames" in full.attrs else ["attribute n_frames"]))
        raise DataFormatError(f"{where}: missing {what}")
    columns = {name: np.asarray(full[name][()], dtype=dtype) for name, dtype in PEAK_COLUMNS.items()}
    n_frames = int(full.attrs["n_frames"])
    frames = None
    if "frames" in full:
        g = full["frames"]
        try:
            files = [_as_str(v) for v in g["file"][()]]
            datasets = [_as_str(v) for v in g["dataset"][()]]
            indices = [int(v) for v in g["index"][()]]
        except KeyError as exc:
            raise DataFormatError(f"{where}/frames: missing {exc.args[0]}") from None
        frames = tuple(FrameRef(a, b, c) for a, b, c in zip(files, datasets, indices, strict=True))
    try:
        return PeakList(**columns, n_frames=n_frames, frames=frames)
    except ValueError as exc:
        raise DataFormatError(f"{where}: inconsistent peak list: {exc}") from None


def _read_cxi_standard(path: Path, f: h5py.File, group: h5py.Group) -> PeakList:
    where = f"{path}::{CXI_PEAKS_PATH}"
    missing = [name for name in ("nPeaks", "peakXPosRaw", "peakYPosRaw") if name not in group]
    if missing:
        raise DataFormatError(f"{where}: missing dataset(s) {', '.join(missing)}")
    counts = np.asarray(group["nPeaks"][()]).reshape(-1)
    if counts.size and (not np.issubdtype(counts.dtype, np.number) or np.any(counts < 0)):
        raise DataFormatError(f"{where}/nPeaks: must hold non-negative peak counts")
    counts = counts.astype(np.int64)
    n = counts.size
    x = np.asarray(group["peakXPosRaw"][()], dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != n:
        raise DataFormatError(f"{where}/peakXPosRaw: shape {x.shape}, expected ({n}, max_peaks) for {n} frames")
    width = x.shape[1]
    if np.any(counts > width):
        warnings.warn(
            f"{where}/nPeaks: some frames count more peaks than the {width} stored; keeping the stored ones",
            stacklevel=3,
        )
        counts = np.minimum(counts, width)
    take = np.arange(width)[None, :] < counts[:, None]
    frame = np.nonzero(take)[0]

    def column(names: Sequence[str], fill: float) -> NDArray[np.float64]:
        for name in names:
            if name in group:
                values = np.asarray(group[name][()], dtype=np.float64)
                if values.shape != x.shape:
                    raise DataFormatError(f"{where}/{name}: shape {values.shape}, peakXPosRaw has {x.shape}")
                return values[take]
        return np.full(frame.size, fill)

    data = {
        "frame": frame,
        "col": x[take],
        "row": column(["peakYPosRaw"], math.nan),
        "intensity": column(["peakTotalIntensity"], math.nan),
        "snr": column(["peakSNR"], math.nan),
        "n_pixels": np.rint(np.nan_to_num(column(["peakNPixels"], 0.0))).astype(np.int64),
        "max_value": column(["peakMaximumValue", "peakMaxIntensity"], math.nan),
    }
    frames = None
    frame_data = f.get(_CXI_FRAME_DATA)
    if isinstance(frame_data, h5py.Dataset) and frame_data.ndim == 3 and frame_data.shape[0] == n:
        frames = tuple(FrameRef(str(path), _CXI_FRAME_DATA, k) for k in range(n))
    return PeakList.from_columns(n_frames=n, frames=frames, **data)


def _as_str(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# -- CrystFEL stream -----------------------------------------------------------------------------------------------


def _inverse_d_nm(
    peaks: PeakList, geometry: DetectorGeometry | None, maps: PixelMaps | None
) -> NDArray[np.float64]:
    d_a = np.full(len(peaks), np.nan)
    if geometry is not None:
        d_a = geometry.resolution_at(peaks.row, peaks.col)
    elif maps is not None and maps.resolution_a is not None and len(peaks):
        h, w = maps.shape
        r = np.clip(np.floor(peaks.row + 0.5).astype(np.int64), 0, h - 1)
        c = np.clip(np.floor(peaks.col + 0.5).astype(np.int64), 0, w - 1)
        d_a = maps.resolution_a[r, c].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 10.0 / d_a
    return np.where(np.isfinite(inv), inv, 0.0)


def _panel_names(peaks: PeakList, geometry: DetectorGeometry | None) -> tuple[list[str], NDArray[np.int64]]:
    """Each peak's panel name, and the first row of its module: streams give the rows of data stored module by
    module within the module, as CrystFEL's file coordinates do (0 for other data)."""
    if geometry is None:
        return [DEFAULT_PANEL_NAME] * len(peaks), np.zeros(len(peaks), np.int64)
    idx = geometry.panel_index_at(peaks.row, peaks.col)
    names = [p.name for p in geometry.panels]
    outside = int(np.count_nonzero(idx < 0))
    if outside:
        warnings.warn(
            f"{outside} peak(s) lie outside every panel of the geometry; written with panel {names[0]!r}",
            stacklevel=4,
        )
    first_rows = np.array([module_first_row(geometry, p) for p in geometry.panels], np.int64)
    return [names[i] if i >= 0 else names[0] for i in idx], first_rows[np.maximum(idx, 0)]


def _write_stream(
    peaks: PeakList,
    path: Path,
    *,
    geometry: DetectorGeometry | None,
    maps: PixelMaps | None,
    hit_min_peaks: int,
) -> None:
    inv_d = _inverse_d_nm(peaks, geometry, maps)
    panels, first_rows = _panel_names(peaks, geometry)
    counts = peaks.counts_per_frame()
    bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    fs = peaks.col + 0.5
    ss = peaks.row + 0.5 - first_rows
    energy = geometry.photon_energy_ev if geometry is not None else None
    with atomic_output(path, mode="w") as fh:
        fh.write(f"{_STREAM_MAGIC} {_STREAM_VERSION}\n")
        fh.write(f"Generated by braggml {_version()}\n")
        if geometry is not None:
            fh.write(_GEOM_BEGIN + "\n")
            fh.write(format_crystfel_geom(geometry).rstrip("\n") + "\n")
            fh.write(_GEOM_END + "\n")
        for k in range(peaks.n_frames):
            ref = peaks.frames[k] if peaks.frames is not None else None
            lo, hi = int(bounds[k]), int(bounds[k + 1])
            lines = [
                _CHUNK_BEGIN,
                f"Image filename: {ref.file if ref is not None else _NO_FILE}",
                f"Event: {ref.event if ref is not None else f'//{k}'}",
                f"Image serial number: {k + 1}",
                f"hit = {1 if hi - lo >= hit_min_peaks else 0}",
                "indexed_by = none",
            ]
            if ref is not None and ref.dataset:
                lines.append(f"{_DATASET_HEADER} = {ref.dataset}")
            if energy is not None:
                lines.append(f"photon_energy_eV = {energy:.6f}")
            lines += [f"num_peaks = {hi - lo}", _PEAKS_BEGIN, _PEAKS_HEADER]
            lines += [
                f"{fs[i]:7.2f} {ss[i]:7.2f} {inv_d[i]:10.2f}  {peaks.intensity[i]:10.2f}   {panels[i]}"
                for i in range(lo, hi)
            ]
            lines += [_PEAKS_END, _CHUNK_END]
            fh.write("\n".join(lines) + "\n")


def _event_index(event: str) -> int | None:
    """Frame index from the part of a CrystFEL event after ``//`` (``5``, ``5/0``, or empty for 0)."""
    event = event.strip().lstrip("/")
    if not event:
        return 0
    m = re.match(r"^(\d+)", event)
    return int(m.group(1)) if m else None


def _stream_first_rows(geometry_lines: list[str], path: Path) -> dict[str, int]:
    """First row of each panel's module when the stream's geometry stores the data module by module (its peaks
    then give rows within the module); empty otherwise."""
    if not any(re.match(r"^\s*(\S+/)?dim\d+\s*=\s*\d+", line) for line in geometry_lines):
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # keys of other CrystFEL versions
            geometry = parse_crystfel_geom("\n".join(geometry_lines), source=f"{path} (geometry)")
    except (DataFormatError, ConfigError) as exc:
        raise DataFormatError(
            f"{path}: the peaks are given per module, but the stream's geometry cannot be read to place them ({exc})"
        ) from None
    return {p.name: module_first_row(geometry, p) for p in geometry.panels}


def _read_stream(path: Path) -> PeakList:
    chunks: list[dict[str, Any]] = []
    geometry_lines: list[str] = []
    first_rows: dict[str, int] | None = None  # of each panel's module, for data stored module by module
    default_dataset = ""
    state = "start"
    chunk: dict[str, Any] | None = None
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.rstrip("\r\n")
            stripped = line.strip()
            if state == "start":
                if not stripped:
                    continue
                if not stripped.startswith(_STREAM_MAGIC):
                    raise DataFormatError(
                        f"{path}:{lineno}: not a CrystFEL stream (first line should be '{_STREAM_MAGIC} ...')"
                    )
                state = "header"
            elif state == "header":
                if stripped == _GEOM_BEGIN:
                    state = "geometry"
                elif stripped == _CHUNK_BEGIN:
                    chunk, state = _new_chunk(lineno), "chunk"
            elif state == "geometry":
                if stripped == _GEOM_END:
                    state = "header"
                else:
                    geometry_lines.append(line)
                    m = re.match(r"^data\s*=\s*([^;\s]+)", stripped)
                    if m:
                        default_dataset = m.group(1)
            elif state == "chunk":
                assert chunk is not None
                if stripped == _CHUNK_END:
                    chunks.append(chunk)
                    chunk, state = None, "between"
                elif stripped.startswith("Image filename:"):
                    chunk["file"] = stripped.split(":", 1)[1].strip()
                elif stripped.startswith("Event:"):
                    event = stripped.split(":", 1)[1].strip()
                    index = _event_index(event.split("//", 1)[1] if "//" in event else event)
                    if index is None:
                        raise DataFormatError(f"{path}:{lineno}: cannot read the frame index of event {event!r}")
                    chunk["index"] = index
                elif stripped.startswith("Image serial number:"):
                    try:
                        chunk["serial"] = int(stripped.split(":", 1)[1])
                    except ValueError:
                        raise DataFormatError(f"{path}:{lineno}: bad image serial number {stripped!r}") from None
                elif stripped.startswith(_DATASET_HEADER):
                    chunk["dataset"] = stripped.split("=", 1)[1].strip()
                elif stripped == _PEAKS_BEGIN:
                    state = "peaks_header"
                elif stripped.startswith(_CRYSTAL_BEGIN):
                    state = "crystal"
            elif state == "peaks_header":
                if not stripped.startswith("fs/px"):
                    raise DataFormatError(f"{path}:{lineno}: expected the peak table header '{_PEAKS_HEADER.strip()}'")
                state = "peaks"
            elif state == "peaks":
                assert chunk is not None
                if stripped == _PEAKS_END:
                    state = "chunk"
                    continue
                fields = stripped.split()
                try:
                    fs, ss, _inv_d, intensity = (float(v) for v in fields[:4])
                except ValueError:
                    raise DataFormatError(
                        f"{path}:{lineno}: bad peak line {stripped!r} (expected fs ss 1/d intensity panel)"
                    ) from None
                if first_rows is None:
                    first_rows = _stream_first_rows(geometry_lines, path)
                if first_rows and len(fields) > 4:
                    ss += first_rows.get(fields[4], 0)
                chunk["peaks"].append((ss - 0.5, fs - 0.5, intensity))
            elif state == "crystal":
                if stripped.startswith(_CRYSTAL_END):
                    state = "chunk"
                elif stripped == _CHUNK_END:
                    raise DataFormatError(f"{path}:{lineno}: chunk ends inside a crystal section")
            elif state == "between":
                if stripped == _CHUNK_BEGIN:
                    chunk, state = _new_chunk(lineno), "chunk"
    if state == "start":
        raise DataFormatError(f"{path}: empty file, not a CrystFEL stream")
    if chunk is not None:
        warnings.warn(
            f"{path}: the last chunk (from line {chunk['line']}) is incomplete and was dropped", stacklevel=3
        )
    if chunks and all(c["serial"] is not None for c in chunks):
        chunks.sort(key=lambda c: c["serial"])
    return _stream_peaklist(chunks, default_dataset)


def _new_chunk(lineno: int) -> dict[str, Any]:
    return {"line": lineno, "file": None, "index": 0, "serial": None, "dataset": None, "peaks": []}


def _stream_peaklist(chunks: list[dict[str, Any]], default_dataset: str) -> PeakList:
    frame: list[int] = []
    rows: list[float] = []
    cols: list[float] = []
    intensity: list[float] = []
    for k, c in enumerate(chunks):
        for r, col, i in c["peaks"]:
            frame.append(k)
            rows.append(r)
            cols.append(col)
            intensity.append(i)
    frames = None
    if chunks and not all(c["file"] in (None, _NO_FILE) for c in chunks):
        frames = tuple(
            FrameRef(
                c["file"] or "",
                c["dataset"] if c["dataset"] is not None else default_dataset,
                int(c["index"]),
            )
            for c in chunks
        )
    return PeakList.from_columns(
        n_frames=len(chunks), frames=frames, frame=frame, row=rows, col=cols, intensity=intensity
    )


# -- CSV ---------------------------------------------------------------------------------------------------------


def _write_csv(peaks: PeakList, path: Path) -> None:
    refs = peaks.frames
    counts = peaks.counts_per_frame()
    with atomic_output(path, mode="w") as fh:
        fh.write(f"# braggml {_version()} peak list; row/col: pixel centres at integers\n")
        fh.write(f"# n_frames={peaks.n_frames}\n")
        if refs is not None:
            for k in np.flatnonzero(counts == 0):
                buf = io.StringIO()
                csv.writer(buf, lineterminator="").writerow([int(k), refs[k].file, refs[k].dataset, refs[k].index])
                fh.write(f"# empty_frame={buf.getvalue()}\n")
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(_CSV_COLUMNS)
        cols = peaks.columns()
        for i in range(len(peaks)):
            k = int(cols["frame"][i])
            ref = refs[k] if refs is not None else None
            writer.writerow(
                [
                    k,
                    ref.file if ref else "",
                    ref.dataset if ref else "",
                    ref.index if ref else "",
                    repr(float(cols["row"][i])),
                    repr(float(cols["col"][i])),
                    repr(float(cols["intensity"][i])),
                    repr(float(cols["background"][i])),
                    repr(float(cols["snr"][i])),
                    int(cols["n_pixels"][i]),
                    repr(float(cols["max_value"][i])),
                    repr(float(cols["score"][i])),
                ]
            )


_CSV_ALIASES: dict[str, tuple[str, ...]] = {
    "frame": ("frame", "frame_index", "frame_number", "event", "image"),
    "intensity": ("intensity", "total_intensity", "peaktotalintensity", "i"),
    "background": ("background", "bg", "bkg"),
    "snr": ("snr", "peaksnr", "signal_to_noise"),
    "n_pixels": ("n_pixels", "npix", "npixels", "num_pixels", "peaknpixels"),
    "max_value": ("max_value", "max_intensity", "peakmaximumvalue", "peak_max"),
    "score": ("score", "probability", "confidence"),
}
_CSV_POSITIONS = (("row", "col"), ("ss", "fs"), ("y", "x"))


def _csv_key(name: str) -> str:
    key = name.strip().lower()
    key = re.sub(r"/px$", "", key)
    return re.sub(r"[\s\-]+", "_", key)


def _read_csv(path: Path) -> PeakList:
    with open(path, encoding="utf-8", newline="") as fh:
        text = fh.read()
    lines = text.splitlines(keepends=True)
    n_frames: int | None = None
    empty_refs: dict[int, FrameRef] = {}
    start = 0
    for lineno, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped:
            start = lineno
            continue
        if not stripped.startswith("#"):
            break
        start = lineno
        body = stripped[1:].strip()
        if body.startswith("n_frames="):
            try:
                n_frames = int(body.split("=", 1)[1])
            except ValueError:
                raise DataFormatError(f"{path}:{lineno}: bad n_frames comment {stripped!r}") from None
        elif body.startswith("empty_frame="):
            try:
                k, file, dataset, index = next(csv.reader([body.split("=", 1)[1]]))
                empty_refs[int(k)] = FrameRef(file, dataset, int(index))
            except (ValueError, StopIteration):
                raise DataFormatError(f"{path}:{lineno}: bad empty_frame comment {stripped!r}") from None
    reader = csv.reader(lines[start:])
    try:
        header = next(reader)
    except StopIteration:
        raise DataFormatError(f"{path}: no CSV header line (expected columns such as row,col)") from None
    keys = [_csv_key(h) for h in header]
    index_of = {k: i for i, k in enumerate(keys) if k}
    pos = next(((r, c) for r, c in _CSV_POSITIONS if r in index_of and c in index_of), None)
    if pos is None:
        raise DataFormatError(
            f"{path}: no peak position columns; need row and col (or ss and fs, or y and x), got "
            f"{', '.join(h.strip() for h in header) or 'none'}"
        )
    found = {
        name: next((index_of[a] for a in aliases if a in index_of), None) for name, aliases in _CSV_ALIASES.items()
    }
    header_line = start + 1
    values: dict[str, list[float]] = {name: [] for name in PEAK_COLUMNS}
    provenance: list[tuple[str, str, str]] = []
    file_i, dataset_i, index_i = (index_of.get(k) for k in ("file", "dataset", "index"))
    for offset, record in enumerate(reader, start=1):
        lineno = header_line + offset
        if not record or all(not v.strip() for v in record):
            continue
        if len(record) != len(header):
            raise DataFormatError(f"{path}:{lineno}: {len(record)} fields, the header has {len(header)}")

        def number(i: int | None, default: float, record: list[str] = record, lineno: int = lineno) -> float:
            if i is None or not record[i].strip():
                return default
            try:
                return float(record[i])
            except ValueError:
                raise DataFormatError(f"{path}:{lineno}: column {header[i].strip()!r}: cannot read {record[i]!r} "
                                      f"as a number") from None

        values["row"].append(number(index_of[pos[0]], math.nan))
        values["col"].append(number(index_of[pos[1]], math.nan))
        for name in ("intensity", "background", "snr", "max_value", "score"):
            values[name].append(number(found[name], math.nan))
        npix = number(found["n_pixels"], 0.0)
        frame = number(found["frame"], 0.0)
        if not (math.isfinite(npix) and npix == int(npix) and math.isfinite(frame) and frame == int(frame)):
            raise DataFormatError(f"{path}:{lineno}: frame and n_pixels must be integers")
        values["n_pixels"].append(int(npix))
        values["frame"].append(int(frame))
        provenance.append(
            tuple(record[i].strip() if i is not None else "" for i in (file_i, dataset_i, index_i))  # type: ignore[arg-type]
        )
    if any(not math.isfinite(v) for v in values["row"] + values["col"]):
        raise DataFormatError(f"{path}: every peak needs a finite {pos[0]} and {pos[1]}")
    if found["frame"] is None and file_i is not None:
        # No frame column: one frame per distinct (file, dataset, index), in order of appearance.
        order: dict[tuple[str, str, str], int] = {}
        values["frame"] = [order.setdefault(p, len(order)) for p in provenance]
    frames_col = np.asarray(values["frame"], dtype=np.int64)
    if frames_col.size and frames_col.min() < 0:
        raise DataFormatError(f"{path}: negative frame index {int(frames_col.min())}")
    needed = int(frames_col.max()) + 1 if frames_col.size else 0
    if empty_refs:
        needed = max(needed, max(empty_refs) + 1)
    if n_frames is None:
        n_frames = needed
    elif n_frames < needed:
        raise DataFormatError(f"{path}: n_frames={n_frames} but frame indices go up to {needed - 1}")
    frames = _csv_frames(path, n_frames, frames_col, provenance, empty_refs, file_i is not None)
    return PeakList.from_columns(n_frames=n_frames, frames=frames, **values)


def _csv_frames(
    path: Path,
    n_frames: int,
    frame: NDArray[np.int64],
    provenance: list[tuple[str, str, str]],
    empty_refs: dict[int, FrameRef],
    has_file: bool,
) -> tuple[FrameRef, ...] | None:
    if not has_file:
        return None
    refs: dict[int, FrameRef] = dict(empty_refs)
    for k, (file, dataset, index) in zip(frame.tolist(), provenance, strict=True):
        if not file:
            return None
        try:
            ref = FrameRef(file, dataset, int(index) if index else 0)
        except ValueError:
            raise DataFormatError(f"{path}: column 'index' must hold integers, got {index!r}") from None
        if refs.setdefault(k, ref) != ref:
            raise DataFormatError(f"{path}: frame {k} is given two sources: {refs[k]} and {ref}")
    if len(refs) != n_frames:
        return None
    return tuple(refs[k] for k in range(n_frames))
