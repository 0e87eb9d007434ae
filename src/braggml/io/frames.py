"""Detector frames from files: one lazy, random-access sequence over many files and formats.

:func:`open_frames` takes paths, glob patterns, ``FILE::/dataset`` specifications or CrystFEL event lists
(``.lst``) and returns a :class:`FrameSource`. Files are scanned when it is opened (frame counts and shapes,
from headers only), and frames are read one at a time when asked for: an HDF5 stack is never read whole,
``.npy`` files are memory-mapped, and at most one file is held open at a time.

Formats:

- HDF5 (``.h5``, ``.hdf5``, ``.cxi``, ``.nxs`` ... or any file with the HDF5 signature): CXI, NeXus,
  Cheetah and Eiger master layouts, or the largest image-like dataset (see :mod:`braggml.io.hdf5`);
  4-D data stored module by module, (N, modules, ss, fs), give frames of the modules stacked along the rows;
- CBF (``.cbf``, ``.cbf.gz``, ``.cbf.bz2``), TIFF and the other formats of
  :data:`braggml.io.cbf.FABIO_SUFFIXES` (SMV, EDF, MarCCD, mar345, Bruker ...) through fabio, except
  ``x-CBF_PACKED`` CBF (LCLS CSPAD, Rayonix), decoded by CBFlib (pycbf) with its sections stacked along the
  rows (both: ``pip install "braggml[cbf]"``);
- ``.npy`` (2-D to 4-D, memory-mapped) and ``.npz`` (``FILE::name`` picks an array; the array is loaded
  whole, as zip members cannot be memory-mapped); HEXRD sparse frame caches (``.npz``) are expanded to
  dense frames one at a time.
"""

from __future__ import annotations

import glob
import os
import warnings
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError, DataFormatError, InputNotFoundError
from ..peaks import FrameRef
from . import cbf as _cbf
from . import hdf5 as _hdf5
from .masks import (
    DETECTOR_KINDS,
    DetectorKind,
    detector_kind_from_text,
    guess_detector_kind,
    invalid_pixels,
    split_spec,
)

if TYPE_CHECKING:
    from .metadata import GeometryHint

__all__ = [
    "Frame",
    "FrameSource",
    "open_frames",
    "open_frame_groups",
    "expand_inputs",
    "is_event_list",
    "HDF5_SUFFIXES",
]

#: File name endings read as HDF5.
HDF5_SUFFIXES: tuple[str, ...] = (".h5", ".hdf5", ".hdf", ".he5", ".cxi", ".nxs", ".nx5", ".nexus", ".nx")

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True, eq=False)
class Frame:
    """One detector frame.

    Parameters
    ----------
    data : (H, W) float32 ndarray
        Pixel values (a private, writable copy).
    ref : FrameRef
        Where the frame came from (file, dataset path, index within the dataset).
    bad : (H, W) bool ndarray
        Pixels of this frame holding markers or untrustworthy values (see
        :func:`braggml.io.masks.invalid_pixels`), plus the file's per-frame mask when it has one. The
        file-wide mask is separate: :meth:`FrameSource.file_mask`.
    index : int
        Position of the frame in its :class:`FrameSource`.
    """

    data: NDArray[np.float32]
    ref: FrameRef
    bad: NDArray[np.bool_]
    index: int = 0


# -- one input file ---------------------------------------------------------------------------------------


class _FrameFile(ABC):
    """One input file seen as a sequence of frames (probed at construction, read lazily)."""

    path: str
    n_frames: int
    shape: tuple[int, int]
    dtype: np.dtype
    saturation: float | None = None
    kind_text: str = ""

    @abstractmethod
    def ref(self, index: int) -> FrameRef:
        """Provenance of frame ``index`` of this file."""

    @abstractmethod
    def read(self, index: int) -> tuple[NDArray[Any], NDArray[np.bool_] | None]:
        """Raw frame ``index`` in its own dtype, and the file's own mask for that frame (or None)."""

    def file_mask(self) -> NDArray[np.bool_] | None:
        """Mask datasets stored in the file (True = bad), or None."""
        return None

    def close(self) -> None:
        """Release open handles (the file is reopened when read again)."""
        return None

    def __getstate__(self) -> dict[str, Any]:
        self.close()
        return self.__dict__.copy()


class _Hdf5File(_FrameFile):
    """Frames of an HDF5 file: one dataset, or the linked datasets of an Eiger master file."""

    def __init__(self, path: str, dataset: str | None) -> None:
        self.path = path
        self._h5: h5py.File | None = None
        self._dsets: dict[str, h5py.Dataset] = {}
        with _hdf5.open_hdf5(path) as h5:
            paths = _hdf5.find_frame_datasets(h5, dataset)
            self._segments: list[tuple[str, int, bool]] = []
            shapes: dict[tuple[int, int], str] = {}
            dtypes = []
            for p in paths:
                d = _hdf5.get_dataset(h5, p)
                stacked = d.ndim >= 3
                self._segments.append((p, int(d.shape[0]) if stacked else 1, stacked))
                shapes.setdefault(_hdf5.frame_shape(d.shape), p)
                dtypes.append(d.dtype)
                self._frame_dims = tuple(int(n) for n in d.shape[1:]) if stacked else tuple(int(n) for n in d.shape)
            if len(shapes) > 1:
                listed = ", ".join(f"{p} {s}" for s, p in shapes.items())
                raise DataFormatError(f"{path}: linked frame datasets differ in frame shape: {listed}")
            self.shape = next(iter(shapes))
            self.dtype = np.result_type(*dtypes)
            self.n_frames = sum(n for _, n, _ in self._segments)
            self._starts = np.cumsum([0] + [n for _, n, _ in self._segments])
            self.saturation = _hdf5.read_saturation(h5, paths[0])
            self.kind_text = _hdf5.detector_text(h5, paths[0])
            self._mask_paths: list[str] = []
            self._frame_mask_path: str | None = None
            # one frame of the data as stored: (H, W), or (modules, ss, fs) for 4-D data
            frame_dims = self._frame_dims if len(self._frame_dims) == 3 else self.shape
            for mpath in _hdf5.find_mask_paths(h5):
                mshape = tuple(int(n) for n in h5[mpath].shape)
                if mshape[-len(frame_dims):] != frame_dims:
                    warnings.warn(
                        f"{path}::{mpath}: mask shape {mshape} does not match the frame shape "
                        f"{frame_dims}; ignored",
                        stacklevel=4,
                    )
                elif len(mshape) == len(frame_dims) or mshape[0] == 1:
                    self._mask_paths.append(mpath)
                elif (
                    len(mshape) == len(frame_dims) + 1
                    and mshape[0] == self.n_frames
                    and len(self._segments) == 1
                    and self._segments[0][2]
                ):
                    self._frame_mask_path = mpath
                else:
                    warnings.warn(
                        f"{path}::{mpath}: mask holds {mshape[0]} frames but the data {self.n_frames}; ignored",
                        stacklevel=4,
                    )

    def _file(self) -> h5py.File:
        if self._h5 is None:
            self._h5 = _hdf5.open_hdf5(self.path)
            self._dsets = {}
        return self._h5

    def _dataset(self, path: str) -> h5py.Dataset:
        dset = self._dsets.get(path)
        if dset is None:
            dset = _hdf5.get_dataset(self._file(), path)
            self._dsets[path] = dset
        return dset

    def _locate(self, index: int) -> tuple[str, int, bool]:
        k = int(np.searchsorted(self._starts, index, side="right")) - 1
        path, _n, stacked = self._segments[k]
        return path, index - int(self._starts[k]), stacked

    def ref(self, index: int) -> FrameRef:
        path, local, _ = self._locate(index)
        return FrameRef(self.path, path, local)

    def read(self, index: int) -> tuple[NDArray[Any], NDArray[np.bool_] | None]:
        path, local, stacked = self._locate(index)
        dset = self._dataset(path)
        try:
            raw = np.asarray(dset[local] if stacked else dset[()]).reshape(self.shape)  # modules stacked on rows
        except (OSError, RuntimeError, ValueError) as exc:
            raise DataFormatError(
                f"{self.path}::{path}: frame {local} cannot be read, data corrupt ({_hdf5._short(exc)})"
            ) from None
        frame_mask = None
        if self._frame_mask_path is not None:
            mdset = self._dataset(self._frame_mask_path)
            try:
                frame_mask = np.asarray(mdset[local]).reshape(self.shape) != 0
            except (OSError, RuntimeError, ValueError) as exc:
                raise DataFormatError(
                    f"{self.path}::{self._frame_mask_path}: mask of frame {local} cannot be read ({_hdf5._short(exc)})"
                ) from None
        return raw, frame_mask

    def file_mask(self) -> NDArray[np.bool_] | None:
        if not self._mask_paths:
            return None
        mask = np.zeros(self.shape, dtype=bool)
        for mpath in self._mask_paths:
            dset = self._dataset(mpath)
            try:
                values = np.asarray(dset[()])
            except (OSError, RuntimeError, ValueError) as exc:
                raise DataFormatError(f"{self.path}::{mpath}: cannot read the mask ({_hdf5._short(exc)})") from None
            mask |= values.reshape(self.shape) != 0
        return mask

    def close(self) -> None:
        self._dsets = {}
        if self._h5 is not None:
            try:
                self._h5.close()
            finally:
                self._h5 = None


class _NpyFile(_FrameFile):
    """A 2-D, 3-D or 4-D (N, modules, ss, fs) ``.npy`` array, memory-mapped."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._array: np.ndarray | None = None
        array = self._load()
        _hdf5.check_frame_array(array.shape, array.dtype, path)
        self._stacked = array.ndim >= 3
        self.n_frames = int(array.shape[0]) if self._stacked else 1
        self.shape = _hdf5.frame_shape(array.shape)
        self.dtype = array.dtype
        self.close()

    def _load(self) -> np.ndarray:
        if self._array is None:
            try:
                self._array = np.load(self.path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                raise DataFormatError(f"{self.path}: cannot read as .npy ({exc})") from None
        return self._array

    def ref(self, index: int) -> FrameRef:
        return FrameRef(self.path, "", index)

    def read(self, index: int) -> tuple[NDArray[Any], None]:
        array = self._load()
        return np.asarray(array[index] if self._stacked else array).reshape(self.shape), None

    def close(self) -> None:
        self._array = None


def _npz_headers(path: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array of an ``.npz`` file, read from the member headers only."""
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with z.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    if version == (1, 0):
                        shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                    else:
                        shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fh)
                out[info.filename[:-4]] = (tuple(shape), np.dtype(dtype))
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataFormatError(f"{path}: cannot read as .npz ({exc})") from None
    return out


_NPZ_PREFERRED = ("data", "frames", "images", "image", "arr_0")


class _NpzFile(_FrameFile):
    """One 2-D, 3-D or 4-D (N, modules, ss, fs) array of an ``.npz`` file (loaded whole on first read)."""

    def __init__(self, path: str, key: str | None, headers: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
        self.path = path
        if key is None:
            key = _pick_npz_key(path, headers)
        elif key not in headers:
            raise InputNotFoundError(f"{path}: no array {key!r} (arrays: {', '.join(sorted(headers)[:10])})")
        shape, dtype = headers[key]
        _hdf5.check_frame_array(shape, dtype, f"{path}::{key}")
        self.key = key
        self._stacked = len(shape) >= 3
        self.n_frames = int(shape[0]) if self._stacked else 1
        self.shape = _hdf5.frame_shape(shape)
        self.dtype = dtype
        self._array: np.ndarray | None = None

    def ref(self, index: int) -> FrameRef:
        return FrameRef(self.path, self.key, index)

    def read(self, index: int) -> tuple[NDArray[Any], None]:
        if self._array is None:
            try:
                with np.load(self.path, allow_pickle=False) as npz:
                    self._array = np.asarray(npz[self.key])
            except (OSError, ValueError, zipfile.BadZipFile) as exc:
                raise DataFormatError(f"{self.path}::{self.key}: cannot read ({exc})") from None
        return (self._array[index] if self._stacked else self._array).reshape(self.shape), None

    def close(self) -> None:
        self._array = None


def _pick_npz_key(path: str, headers: dict[str, tuple[tuple[int, ...], np.dtype]]) -> str:
    def image_like(key: str) -> bool:
        shape, dtype = headers[key]
        return dtype.kind in "iuf" and len(shape) in (2, 3, 4) and min(shape[-2:]) >= _hdf5.MIN_IMAGE_SIDE

    for key in _NPZ_PREFERRED:
        if key in headers and image_like(key):
            return key
    candidates = [k for k in headers if image_like(k) and "mask" not in k.lower()]
    if not candidates:
        listed = ", ".join(f"{k} {headers[k][0]}" for k in sorted(headers)[:8]) or "none"
        raise DataFormatError(
            f"{path}: no image-like array (numeric 2-D or 3-D with both image dimensions >= "
            f"{_hdf5.MIN_IMAGE_SIDE}); arrays here: {listed}"
        )
    return max(candidates, key=lambda k: int(np.prod(headers[k][0])))


def _is_frame_cache(headers: dict[str, tuple[tuple[int, ...], np.dtype]]) -> bool:
    return {"shape", "nframes", "0_row", "0_col", "0_data"} <= set(headers)


class _FrameCacheFile(_FrameFile):
    """A HEXRD sparse frame cache (``.npz`` with ``shape``, ``nframes`` and ``{i}_row/_col/_data``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            with np.load(path, allow_pickle=False) as npz:
                shape = tuple(int(n) for n in np.asarray(npz["shape"]).reshape(-1))
                self.n_frames = int(np.asarray(npz["nframes"]))
                dtype_name = np.asarray(npz["dtype"]).item() if "dtype" in npz.files else "float32"
                if isinstance(dtype_name, bytes):
                    dtype_name = dtype_name.decode("ascii")
                self.dtype = np.dtype(str(dtype_name))
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            raise DataFormatError(f"{path}: cannot read as a HEXRD frame cache ({exc})") from None
        if len(shape) != 2:
            raise DataFormatError(f"{path}: frame cache shape {shape} is not 2-D")
        self.shape = (shape[0], shape[1])
        _hdf5.check_frame_array((self.n_frames, *self.shape), self.dtype, path)

    def ref(self, index: int) -> FrameRef:
        return FrameRef(self.path, "", index)

    def read(self, index: int) -> tuple[NDArray[Any], None]:
        frame = np.zeros(self.shape, dtype=self.dtype)
        try:
            with np.load(self.path, allow_pickle=False) as npz:
                rows = np.asarray(npz[f"{index}_row"], dtype=np.intp)
                cols = np.asarray(npz[f"{index}_col"], dtype=np.intp)
                frame[rows, cols] = npz[f"{index}_data"]
        except (OSError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as exc:
            raise DataFormatError(f"{self.path}: frame {index} of the frame cache cannot be read ({exc})") from None
        return frame, None


class _CbfFile(_FrameFile):
    """A single-image CBF file (header read directly, pixels through fabio, or pycbf for packed data)."""

    def __init__(self, path: str) -> None:
        self.path = path
        header = _cbf.read_cbf_header(path)
        if header.packed:
            _cbf.require_pycbf()
        else:
            _cbf.require_fabio()
        self.header = header
        self.n_frames = 1
        self.shape = header.shape
        self.dtype = _cbf.cbf_element_dtype(header.element_type)
        self.saturation = header.count_cutoff
        self.kind_text = header.detector

    def ref(self, index: int) -> FrameRef:
        return FrameRef(self.path, "", index)

    def read(self, index: int) -> tuple[NDArray[Any], None]:
        if self.header.packed:
            raw = _cbf.read_packed_frame(self.path)
        else:
            raw = _cbf.read_fabio_frame(self.path, index)
        if raw.shape != self.shape:
            raise DataFormatError(f"{self.path}: decoded frame {raw.shape} differs from the header shape {self.shape}")
        return raw, None


class _FabioFile(_FrameFile):
    """TIFF (and other fabio-readable) images, possibly multi-frame."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.n_frames, self.shape, self.dtype, header_text = _cbf.fabio_frame_count(path)
        _hdf5.check_frame_array((self.n_frames, *self.shape), self.dtype, path)
        self.kind_text = "Pilatus" if header_text.startswith("PilatusImage") else header_text
        cutoff = None
        for line in header_text.splitlines():
            if line.startswith("Count_cutoff "):
                try:
                    cutoff = float(line.split()[1])
                except (IndexError, ValueError):
                    cutoff = None
        self.saturation = cutoff

    def ref(self, index: int) -> FrameRef:
        return FrameRef(self.path, "", index)

    def read(self, index: int) -> tuple[NDArray[Any], None]:
        return _cbf.read_fabio_frame(self.path, index), None


class _SelectedFrames(_FrameFile):
    """Some frames of one file, in a given order (the events of an event list); provenance stays the file's."""

    def __init__(self, inner: _FrameFile, indices: Sequence[int]) -> None:
        self._inner = inner
        self._indices = np.asarray(indices, np.int64)
        self.path = inner.path
        self.n_frames = int(self._indices.size)
        self.shape = inner.shape
        self.dtype = inner.dtype
        self.saturation = inner.saturation
        self.kind_text = inner.kind_text

    def ref(self, index: int) -> FrameRef:
        return self._inner.ref(int(self._indices[index]))

    def read(self, index: int) -> tuple[NDArray[Any], NDArray[np.bool_] | None]:
        return self._inner.read(int(self._indices[index]))

    def file_mask(self) -> NDArray[np.bool_] | None:
        return self._inner.file_mask()

    def close(self) -> None:
        self._inner.close()


def _sniff(path: str) -> str:
    """'hdf5', 'cbf', 'tiff', 'fabio' (the other formats fabio reads), 'npy' or 'npz' from the name, else from
    the first bytes."""
    name = path.lower()
    if name.endswith(HDF5_SUFFIXES):
        return "hdf5"
    if _cbf.is_cbf_path(name):
        return "cbf"
    if _cbf.is_tiff_path(name):
        return "tiff"
    if name.endswith(".npy"):
        return "npy"
    if name.endswith(".npz"):
        return "npz"
    if _cbf.is_fabio_path(name):
        return "fabio"
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise DataFormatError(f"{path}: cannot read ({exc})") from None
    if head.startswith(_HDF5_SIGNATURE) or h5py.is_hdf5(path):
        return "hdf5"
    if head.lstrip().startswith(b"###CBF"):
        return "cbf"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK\x03\x04"):
        return "npz"
    if _cbf.looks_like_fabio_format(head):
        return "fabio"
    raise DataFormatError(
        f"{path}: not a known frame format (expected HDF5, CBF, TIFF, SMV, EDF, MarCCD, mar345, Bruker, JPEG 2000, "
        ".npy or .npz)"
    )


def _open_file(path: str, dataset: str | None) -> _FrameFile:
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"{path}: no such file")
    if p.is_dir():
        raise DataFormatError(f"{path}: is a folder, not a file (give a glob such as '{path}/*.h5')")
    kind = _sniff(path)
    if kind == "hdf5":
        return _Hdf5File(path, dataset)
    if kind == "npz":
        headers = _npz_headers(path)
        if dataset is None and _is_frame_cache(headers):
            return _FrameCacheFile(path)
        return _NpzFile(path, dataset.lstrip("/") if dataset else None, headers)
    if dataset is not None:
        raise DataFormatError(f"{path}: a dataset path ({dataset}) was given, but {kind} files have no datasets")
    if kind == "npy":
        return _NpyFile(path)
    if kind == "cbf":
        return _CbfFile(path)
    return _FabioFile(path)


# -- inputs ----------------------------------------------------------------------------------------------


def expand_inputs(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, dataset: str | None = None
) -> list[tuple[str, str | None]]:
    """Turn paths, glob patterns and ``FILE::/dataset`` specs into ``(file, dataset)`` pairs.

    Globs are expanded and sorted by name; the order of the inputs is kept. ``dataset`` applies to inputs
    that do not name their own.

    Raises
    ------
    InputNotFoundError
        When a glob matches nothing, or no input is given.
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise InputNotFoundError("no input files given")
    out: list[tuple[str, str | None]] = []
    for item in items:
        file, own = split_spec(os.fspath(item))
        chosen = own if own is not None else dataset
        if _GLOB_CHARS & set(file) and not os.path.exists(file):
            matches = sorted(glob.glob(file, recursive=True))
            matches = [m for m in matches if not os.path.isdir(m)]
            if not matches:
                raise InputNotFoundError(f"no files match {file!r}")
            out.extend((m, chosen) for m in matches)
        else:
            out.append((file, chosen))
    return out


def is_event_list(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a CrystFEL event or file list (by its ``.lst`` suffix), as ``indexamajig -i``
    and ``braggml find --hits-out`` write them."""
    return os.fspath(path).lower().endswith(".lst")


def _open_event_list(path: str, dataset: str | None) -> list[_FrameFile]:
    """The frames an event list names, in its order: ``file`` (every frame of the file) or ``file //N`` (frame
    N) per line, ``#`` and ``;`` starting comments. Consecutive events of one file are read as one selection.
    A file name is taken as given, and when no such file exists, relative to the list's folder."""
    from .peaklists import parse_event_list

    if not Path(path).is_file():
        raise InputNotFoundError(f"{path}: no such event list")
    folder = Path(path).parent
    events: list[tuple[str, str | None, int | None, int]] = []
    for lineno, name, index in parse_event_list(path):
        file, own = split_spec(name)
        if not os.path.exists(file) and not os.path.isabs(file) and (folder / file).exists():
            file = str(folder / file)
        events.append((file, own if own is not None else dataset, index, lineno))
    if not events:
        raise DataFormatError(f"{path}: the event list names no frames")
    out: list[_FrameFile] = []
    k = 0
    while k < len(events):
        file, ds, index, lineno = events[k]
        try:
            inner = _open_file(file, ds)
        except (InputNotFoundError, DataFormatError) as exc:
            raise type(exc)(f"{path}:{lineno}: {exc}") from None
        if index is None:
            out.append(inner)
            k += 1
            continue
        chosen = []
        while k < len(events) and events[k][:2] == (file, ds) and events[k][2] is not None:
            _, _, index, lineno = events[k]
            if index >= inner.n_frames:
                raise DataFormatError(
                    f"{path}:{lineno}: {file} holds {inner.n_frames} frame(s), there is no event //{index}"
                )
            chosen.append(index)
            k += 1
        out.append(_SelectedFrames(inner, chosen))
    return out


def _open_inputs(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], dataset: str | None
) -> list[_FrameFile]:
    """Every input opened: files whole, event lists (``.lst``) as the frames they name."""
    out: list[_FrameFile] = []
    for path, ds in expand_inputs(inputs, dataset=dataset):
        if is_event_list(path):
            out.extend(_open_event_list(path, ds))
        else:
            out.append(_open_file(path, ds))
    return out


# -- the source ------------------------------------------------------------------------------------------


class FrameSource:
    """A lazy sequence of frames over one or more files (see :func:`open_frames`).

    Attributes
    ----------
    shape : (int, int)
        Frame shape (rows, cols), the same for every file.
    dtype : numpy.dtype
        The files' raw dtype (promoted when files differ).
    """

    def __init__(
        self,
        files: Sequence[_FrameFile],
        *,
        detector_kind: str | None = None,
        saturation: float | None = None,
    ) -> None:
        self._files = list(files)
        if not self._files:
            raise InputNotFoundError("no input files given")
        first = self._files[0]
        for f in self._files[1:]:
            if f.shape != first.shape:
                raise DataFormatError(
                    f"files differ in frame shape: {first.path} has {first.shape}, {f.path} has {f.shape}"
                )
        self.shape: tuple[int, int] = first.shape
        self.dtype: np.dtype = np.result_type(*[f.dtype for f in self._files])
        self._starts = np.cumsum([0] + [f.n_frames for f in self._files])
        self._open: _FrameFile | None = None
        self._kind: str | None = detector_kind
        self._saturation = saturation
        self._mask: NDArray[np.bool_] | None = None
        self._mask_done = False
        self._hint: GeometryHint | None = None
        self._hint_done = False

    # -- sizes and provenance
    def __len__(self) -> int:
        return int(self._starts[-1])

    def __repr__(self) -> str:
        return (
            f"FrameSource({len(self)} frames of {self.shape} {self.dtype} from {len(self._files)} file(s), "
            f"first {self._files[0].path})"
        )

    @property
    def files(self) -> list[str]:
        """The input files in frame order."""
        return [f.path for f in self._files]

    @property
    def refs(self) -> list[FrameRef]:
        """Provenance of every frame, in order."""
        return [f.ref(i) for f in self._files for i in range(f.n_frames)]

    @property
    def saturation(self) -> float | None:
        """The saturation given to :func:`open_frames`, else the first one the files state, else None."""
        if self._saturation is not None:
            return self._saturation
        for f in self._files:
            if f.saturation is not None:
                return f.saturation
        return None

    @property
    def detector_kind(self) -> DetectorKind:
        """'photon-counting', 'integrating' or 'unknown'.

        Taken from :func:`open_frames`'s argument, else from the first file's metadata (CBF ``# Detector:``
        line, NeXus detector description, model names), else guessed from the first frame's values with
        :func:`braggml.io.masks.guess_detector_kind`.
        """
        if self._kind is None:
            kind = detector_kind_from_text(self._files[0].kind_text)
            if kind is None:
                kind = "unknown"
                for f in self._files:
                    if f.n_frames:
                        self._switch(f)
                        kind = guess_detector_kind(f.read(0)[0])
                        break
            self._kind = kind
        return self._kind  # type: ignore[return-value]

    def geometry_hint(self) -> GeometryHint | None:
        """The detector geometry the first file states (beam centre, pixel size, distance, wavelength, radius
        map), or None; see :func:`braggml.io.metadata.geometry_hint`. Read once, then cached."""
        if not self._hint_done:
            from .metadata import geometry_hint

            self._hint = geometry_hint(self._files[0].path, shape=self.shape)
            self._hint_done = True
        return self._hint

    def file_mask(self) -> NDArray[np.bool_] | None:
        """Union of the mask datasets stored in the files (non-zero = bad), or None when there are none.

        Every file's masks are read once (then cached); per-frame (N, H, W) masks are in :attr:`Frame.bad`.
        """
        if not self._mask_done:
            mask = None
            for f in self._files:
                self._switch(f)
                m = f.file_mask()
                if m is not None:
                    mask = m.copy() if mask is None else (mask | m)
            self._mask = mask
            self._mask_done = True
        return None if self._mask is None else self._mask.copy()

    # -- reading
    def _switch(self, f: _FrameFile) -> None:
        if self._open is not f:
            if self._open is not None:
                self._open.close()
            self._open = f

    def _locate(self, index: int) -> tuple[_FrameFile, int]:
        k = int(np.searchsorted(self._starts, index, side="right")) - 1
        return self._files[k], index - int(self._starts[k])

    def ref(self, index: int) -> FrameRef:
        """Provenance of frame ``index`` without reading it."""
        n = len(self)
        i = int(index) + (n if int(index) < 0 else 0)
        if not 0 <= i < n:
            raise IndexError(f"frame {index} out of range for {n} frames")
        f, local = self._locate(i)
        return f.ref(local)

    def frame(self, index: int) -> Frame:
        """Frame ``index`` (negative counts from the end).

        Raises
        ------
        IndexError
            When ``index`` is out of range.
        DataFormatError
            When the frame cannot be read (the message names file, dataset and frame index).
        """
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"frame {index} out of range for {n} frames")
        f, local = self._locate(i)
        kind = self.detector_kind
        self._switch(f)
        raw, frame_mask = f.read(local)
        saturation = self._saturation if self._saturation is not None else f.saturation
        bad = invalid_pixels(raw, detector_kind=kind, saturation=saturation)
        if frame_mask is not None:
            bad |= frame_mask
        data = np.array(raw, dtype=np.float32, copy=True, order="C")
        return Frame(data=data, ref=f.ref(local), bad=bad, index=i)

    def iter_range(self, start: int, stop: int) -> Iterator[Frame]:
        """Frames ``start <= index < stop`` in order (a shard of the run).

        Raises
        ------
        ConfigError
            When the range does not lie within ``[0, len(self)]``.
        """
        n = len(self)
        if not (0 <= start <= stop <= n):
            raise ConfigError(f"frame range start={start}, stop={stop} must satisfy 0 <= start <= stop <= {n}")
        try:
            for i in range(start, stop):
                yield self.frame(i)
        finally:
            self._switch_off()

    def __iter__(self) -> Iterator[Frame]:
        return self.iter_range(0, len(self))

    def _switch_off(self) -> None:
        if self._open is not None:
            self._open.close()
            self._open = None

    def close(self) -> None:
        """Close any open file (reading again reopens it)."""
        self._switch_off()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        self.close()
        return self.__dict__.copy()


def open_frames(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    dataset: str | None = None,
    detector_kind: str | None = None,
    saturation: float | None = None,
) -> FrameSource:
    """Open detector frames from files, lazily.

    Parameters
    ----------
    inputs : path, glob pattern, or a list of them
        Each may end in ``::/dataset/path`` (HDF5) or ``::name`` (``.npz``). Globs are sorted by name; the
        order of the inputs is kept. A CrystFEL event list (``.lst``: ``file`` or ``file //N`` per line, as
        ``indexamajig -i`` reads and ``braggml find --hits-out`` writes) stands for the frames it names, in
        its order; a frame keeps its index within its file.
    dataset : str, optional
        Dataset path for inputs that do not name one; found automatically when None.
    detector_kind : {'photon-counting', 'integrating', 'unknown'}, optional
        Overrides the kind read from the metadata or guessed from the values (it decides which values are
        markers, see :func:`braggml.io.masks.invalid_pixels`).
    saturation : float, optional
        Overrides the saturation stated in the files; pixels at or above it are flagged in ``Frame.bad``.

    Returns
    -------
    FrameSource

    Raises
    ------
    InputNotFoundError
        Missing file, dataset, or a glob that matches nothing.
    DataFormatError
        Unknown or damaged file, no image-like dataset, arrays that are not 2-D/3-D or not numeric, or
        files whose frame shapes differ.
    ConfigError
        Invalid ``detector_kind`` or ``saturation``.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "frames.npy")
    >>> np.save(path, np.arange(2 * 32 * 32, dtype=np.uint16).reshape(2, 32, 32))
    >>> source = open_frames(path)
    >>> len(source), source.shape, source.frame(1).data.dtype
    (2, (32, 32), dtype('float32'))
    """
    if detector_kind is not None and detector_kind not in DETECTOR_KINDS:
        raise ConfigError(f"detector_kind must be one of {', '.join(DETECTOR_KINDS)}; got {detector_kind!r}")
    if saturation is not None and not (np.isfinite(saturation) and saturation > 0):
        raise ConfigError(f"saturation must be a positive number; got {saturation!r}")
    return FrameSource(_open_inputs(inputs, dataset), detector_kind=detector_kind, saturation=saturation)


def open_frame_groups(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, dataset: str | None = None
) -> list[FrameSource]:
    """Open frames of several detectors at once: one :class:`FrameSource` per frame shape.

    Work that takes frames one by one and does not need them to share a geometry (building a training set
    from runs of two detectors) opens its inputs this way; :func:`open_frames` refuses files whose frame
    shapes differ.

    Parameters
    ----------
    inputs : path, glob pattern, or a list of them
        As for :func:`open_frames`.
    dataset : str, optional
        Dataset path for inputs that do not name one.

    Returns
    -------
    list of FrameSource
        One per frame shape, in the order the shapes first appear; each holds its files in input order.

    Raises
    ------
    InputNotFoundError, DataFormatError
        As :func:`open_frames`, but for differing shapes.

    Examples
    --------
    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> for name, side in (("a.npy", 32), ("b.npy", 48), ("c.npy", 32)):
    ...     np.save(os.path.join(folder, name), np.zeros((2, side, side), np.uint16))
    >>> [(s.shape, len(s)) for s in open_frame_groups(os.path.join(folder, "*.npy"))]
    [((32, 32), 4), ((48, 48), 2)]
    """
    by_shape: dict[tuple[int, int], list[_FrameFile]] = {}
    for f in _open_inputs(inputs, dataset):
        by_shape.setdefault(f.shape, []).append(f)
    return [FrameSource(files) for files in by_shape.values()]
