"""HDF5 access: opening files with clear errors, finding frame and mask datasets, detector metadata.

Frame layouts recognised, in order of preference:

1. CXI (XFEL): ``/entry_1/data_1/data`` (or ``/entry_1/instrument_1/detector_1/data``), shape (N, H, W), often
   with a ``mask`` beside it.
2. NeXus-like: ``/entry/data/data``, (H, W) or (N, H, W).
3. Cheetah: ``/data/data``.
4. Eiger/NeXus master: ``/entry/data/data_000001``, ``data_000002`` ... (external links to data files).
5. Anything else: the largest numeric 2-D, 3-D or 4-D dataset whose two image dimensions are both at least
   :data:`MIN_IMAGE_SIDE` pixels and whose name does not say ``mask``.

A 4-D dataset (N, modules, ss, fs) holds frames of a detector read out module by module, as European XFEL's
AGIPD, LPD, DSSC and JUNGFRAU files and their virtual CXI files (``extra_data``) store them. Each frame is seen
as the modules stacked along the rows, (modules · ss, fs), the layout that CrystFEL geometry files with a module
dimension (``dim1 = 3``) describe once :mod:`braggml.io.geom` has read them.

The compression filters of Dectris files (bitshuffle/LZ4) are registered by importing ``hdf5plugin`` before a
file is opened.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray

from ..errors import DataFormatError, InputNotFoundError

__all__ = [
    "KNOWN_FRAME_PATHS",
    "KNOWN_MASK_PATHS",
    "MIN_IMAGE_SIDE",
    "DatasetInfo",
    "open_hdf5",
    "get_dataset",
    "list_datasets",
    "find_frame_datasets",
    "find_mask_paths",
    "read_saturation",
    "detector_text",
    "filter_names",
    "check_frame_array",
    "frame_shape",
    "stack_modules",
]

#: Frame dataset paths tried first, in this order.
KNOWN_FRAME_PATHS: tuple[str, ...] = (
    "/entry_1/data_1/data",
    "/entry_1/instrument_1/detector_1/data",
    "/entry/data/data",
    "/data/data",
)

#: Group holding Eiger master-file links ``data_000001``, ``data_000002`` ...
EIGER_DATA_GROUP = "/entry/data"
_EIGER_LINK_NAME = re.compile(r"^data_\d{6}$")

#: Mask datasets that sit beside frames (non-zero = bad), tried in this order.
KNOWN_MASK_PATHS: tuple[str, ...] = (
    "/entry_1/data_1/mask",
    "/entry/data/mask",
    "/entry/instrument/detector/pixel_mask",
    "/entry/instrument/detector/detectorSpecific/pixel_mask",
    "/entry_1/instrument_1/detector_1/mask",
    "/entry_1/instrument_1/detector_1/pixel_mask",
)

#: Saturation values, first found wins.
_SATURATION_PATHS: tuple[str, ...] = (
    "/entry/instrument/detector/detectorSpecific/countrate_correction_count_cutoff",
    "/entry/instrument/detector/saturation_value",
    "/entry_1/instrument_1/detector_1/saturation_value",
)

#: Datasets and attributes whose text names the detector.
_DETECTOR_TEXT_PATHS: tuple[str, ...] = (
    "/entry/instrument/detector/description",
    "/entry/instrument/detector/model",
    "/entry/instrument/detector/type",
    "/entry/instrument/detector/local_name",
    "/entry/instrument/detector/detectorSpecific/description",
    "/entry_1/instrument_1/detector_1/description",
    "/entry_1/instrument_1/detector_1/name",
    "/entry/data/description",
    "/entry/data/model",
)
_DETECTOR_TEXT_ATTRS: tuple[str, ...] = ("description", "model", "make", "detector", "note", "local_name")

#: Smallest size of both image dimensions for a dataset to count as image-like in the automatic search.
MIN_IMAGE_SIDE = 16

#: Chunk cache per open file, large enough to hold a chunk spanning a few Eiger frames.
CHUNK_CACHE_BYTES = 64 * 1024**2

#: HDF5 filter ids and their usual names (bitshuffle's own compressor is its 5th parameter).
FILTER_NAMES: dict[int, str] = {
    1: "gzip",
    2: "shuffle",
    3: "fletcher32",
    4: "szip",
    5: "nbit",
    6: "scaleoffset",
    307: "bzip2",
    32001: "blosc",
    32004: "lz4",
    32008: "bitshuffle",
    32013: "zfp",
    32015: "zstd",
    32017: "sz",
    32026: "blosc2",
}
_BITSHUFFLE_COMPRESSORS = {0: "", 2: "+lz4", 3: "+zstd"}

_plugins_loaded = False


def _load_plugins() -> None:
    """Register the compression filters of ``hdf5plugin`` (bitshuffle, LZ4, Blosc, Zstd ...) once."""
    global _plugins_loaded
    if not _plugins_loaded:
        import hdf5plugin  # noqa: F401  (registers the filters with HDF5)

        _plugins_loaded = True


def _short(exc: BaseException) -> str:
    """One line of an exception message."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."


def open_hdf5(path: str | Path) -> h5py.File:
    """Open an HDF5 file read-only, turning every failure into one clear error.

    Parameters
    ----------
    path : str or Path
        The file.

    Returns
    -------
    h5py.File
        The open file (the caller closes it).

    Raises
    ------
    InputNotFoundError
        When the file does not exist.
    DataFormatError
        When it is a folder, not HDF5, or truncated/corrupt.
    """
    _load_plugins()
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"{path}: no such file")
    if p.is_dir():
        raise DataFormatError(f"{path}: is a folder, not a file (give a glob such as '{path}/*.h5')")
    try:
        return h5py.File(p, "r", rdcc_nbytes=CHUNK_CACHE_BYTES, locking=False)
    except OSError as exc:
        try:
            is_hdf5 = h5py.is_hdf5(p)
        except OSError:
            is_hdf5 = False
        if not is_hdf5:
            raise DataFormatError(f"{path}: not an HDF5 file (no HDF5 signature)") from None
        raise DataFormatError(
            f"{path}: cannot open as HDF5, the file is truncated or corrupt ({_short(exc)})"
        ) from None


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset found in a file: path, shape, dtype, chunking and compression filters."""

    path: str
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...] | None
    filters: tuple[str, ...]
    link: str = ""

    @property
    def image_like(self) -> bool:
        """Numeric, 2-D to 4-D, both image dimensions at least :data:`MIN_IMAGE_SIDE`."""
        return (
            np.dtype(self.dtype).kind in "iuf"
            and len(self.shape) in (2, 3, 4)
            and min(self.shape[-2:]) >= MIN_IMAGE_SIDE
        )


def filter_names(dset: h5py.Dataset) -> tuple[str, ...]:
    """Names of the filters in a dataset's pipeline, e.g. ``('bitshuffle+lz4 (32008)',)``."""
    names: list[str] = []
    try:
        plist = dset.id.get_create_plist()
        for i in range(plist.get_nfilters()):
            code, _flags, values, raw_name = plist.get_filter(i)
            name = FILTER_NAMES.get(code)
            if name is None:
                name = raw_name.decode("ascii", "replace").split(";")[0].strip() or "filter"
            if code == 32008 and len(values) > 4:
                name += _BITSHUFFLE_COMPRESSORS.get(int(values[4]), f"+compressor {values[4]}")
            if code == 1 and values:
                name += f" level {values[0]}"
            names.append(f"{name} ({code})" if code >= 256 else name)
    except (RuntimeError, OSError, ValueError):  # pragma: no cover - damaged property lists
        names.append("unreadable")
    return tuple(names)


def _info(path: str, dset: h5py.Dataset, link: str = "") -> DatasetInfo:
    return DatasetInfo(
        path=path,
        shape=tuple(int(n) for n in dset.shape) if dset.shape is not None else (),
        dtype=str(dset.dtype),
        chunks=tuple(dset.chunks) if dset.chunks else None,
        filters=filter_names(dset),
        link=link,
    )


def list_datasets(h5: h5py.File, *, limit: int = 2000) -> list[DatasetInfo]:
    """Every dataset reachable by hard links, plus Eiger-style external links in ``/entry/data``.

    Parameters
    ----------
    h5 : h5py.File
        Open file.
    limit : int
        Stop after this many datasets (very large files).

    Raises
    ------
    DataFormatError
        When the file's object tree cannot be read (corrupt file).
    """
    found: list[DatasetInfo] = []

    def visit(name: str, obj: Any) -> Any:
        if isinstance(obj, h5py.Dataset):
            found.append(_info("/" + name, obj))
        return True if len(found) >= limit else None

    try:
        h5.visititems(visit)
    except (RuntimeError, OSError, KeyError) as exc:
        raise DataFormatError(f"{h5.filename}: cannot list the datasets, file corrupt ({_short(exc)})") from None
    for path, link in _external_links(h5):
        try:
            obj = h5[path]
        except (KeyError, OSError, RuntimeError):
            found.append(DatasetInfo(path, (), "unresolved", None, (), link=f"{link} (missing)"))
            continue
        if isinstance(obj, h5py.Dataset):
            found.append(_info(path, obj, link=link))
    return found


def _external_links(h5: h5py.File) -> Iterator[tuple[str, str]]:
    """(path, 'file::dataset') of the external links directly in ``/entry/data`` (Eiger master files)."""
    group = h5.get(EIGER_DATA_GROUP)
    if not isinstance(group, h5py.Group):
        return
    for name in sorted(group):
        link = group.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            yield f"{EIGER_DATA_GROUP}/{name}", f"{link.filename}::{link.path}"


def _describe_some(infos: list[DatasetInfo], n: int = 6) -> str:
    pick = [i for i in infos if i.image_like] or infos
    text = ", ".join(f"{i.path} {i.shape}" for i in pick[:n])
    if len(pick) > n:
        text += f" and {len(pick) - n} more"
    return text or "none"


def get_dataset(h5: h5py.File, path: str) -> h5py.Dataset:
    """The dataset at ``path``, with errors naming the file and listing datasets that do exist.

    Raises
    ------
    InputNotFoundError
        When nothing is at ``path``.
    DataFormatError
        When ``path`` is a group, or an external link whose target is missing.
    """
    file = h5.filename
    link = None
    try:
        link = h5.get(path, getlink=True)
    except (KeyError, OSError, RuntimeError, ValueError):
        link = None
    if isinstance(link, h5py.ExternalLink):
        try:
            obj = h5[path]
        except (KeyError, OSError, RuntimeError) as exc:
            raise DataFormatError(
                f"{file}::{path}: external link to {link.filename}::{link.path} cannot be followed "
                f"(data file missing or unreadable: {_short(exc)})"
            ) from None
    else:
        try:
            obj = h5[path] if link is not None else None
        except (KeyError, OSError, RuntimeError) as exc:
            raise DataFormatError(f"{file}::{path}: cannot read the object ({_short(exc)})") from None
    if obj is None:
        raise InputNotFoundError(f"{file}: no dataset {path!r}; datasets here: {_describe_some(list_datasets(h5))}")
    if not isinstance(obj, h5py.Dataset):
        members = [f"{path.rstrip('/')}/{k}" for k in list(obj)[:6]] if isinstance(obj, h5py.Group) else []
        raise DataFormatError(f"{file}::{path} is a group, not a dataset (it holds: {', '.join(members) or 'nothing'})")
    return obj


def check_frame_array(shape: tuple[int, ...], dtype: np.dtype, where: str) -> None:
    """Reject arrays that cannot hold frames: not 2-D to 4-D, or a dtype that is not integer or float.

    Parameters
    ----------
    shape : tuple of int
        Array shape.
    dtype : numpy.dtype
        Array dtype.
    where : str
        ``file::dataset`` for the message.

    Raises
    ------
    DataFormatError
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        raise DataFormatError(f"{where}: boolean array {shape} looks like a mask, not detector frames")
    if dtype.kind not in "iuf":
        raise DataFormatError(
            f"{where}: unsupported dtype {dtype} for detector frames (integer or floating point expected)"
        )
    if len(shape) not in (2, 3, 4):
        raise DataFormatError(
            f"{where}: array of shape {shape} is {len(shape)}-D; frames must be 2-D (H, W), 3-D (N, H, W) "
            "or 4-D (N, modules, H, W)"
        )
    if min(shape[-2:]) < 1 or (len(shape) == 4 and shape[1] < 1):
        raise DataFormatError(f"{where}: empty frame shape {shape[1:] if len(shape) == 4 else shape[-2:]}")


def frame_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The (H, W) frame of a dataset shape: (H, W), (N, H, W), or (N, modules, ss, fs) seen as (modules · ss, fs).

    Examples
    --------
    >>> frame_shape((100, 16, 512, 128))
    (8192, 128)
    >>> frame_shape((100, 512, 1024))
    (512, 1024)
    """
    if len(shape) == 4:
        return int(shape[1]) * int(shape[2]), int(shape[3])
    return int(shape[-2]), int(shape[-1])


def stack_modules(values: NDArray[Any], shape: tuple[int, int] | None, where: str) -> NDArray[Any]:
    """A mask-like array as one (H, W) frame: leading axes of length 1 dropped, and (modules, ss, fs) modules
    stacked along the rows when that gives ``shape`` (or when ``shape`` is None).

    Raises
    ------
    DataFormatError
        The array cannot be read as one frame (``where``, e.g. ``"FILE: mask"``, starts the message).
    """
    array = np.asarray(values)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3 and (shape is None or (array.shape[0] * array.shape[1], array.shape[2]) == tuple(shape)):
        array = array.reshape(array.shape[0] * array.shape[1], array.shape[2])
    if array.ndim != 2:
        raise DataFormatError(
            f"{where} of shape {tuple(np.shape(values))} is not one frame (H, W) or (modules, H, W)"
        )
    return array


def find_frame_datasets(h5: h5py.File, dataset: str | None = None) -> list[str]:
    """Paths of the frame dataset(s) of a file, in frame order.

    Parameters
    ----------
    h5 : h5py.File
        Open file.
    dataset : str, optional
        Explicit dataset path; the automatic search (see the module docstring) is used when None.

    Returns
    -------
    list of str
        One path, or the ``data_NNNNNN`` links of an Eiger master file.

    Raises
    ------
    InputNotFoundError, DataFormatError
        Missing dataset, no image-like dataset, or a dataset that cannot hold frames.
    """
    file = h5.filename
    if dataset is not None:
        path = "/" + dataset.lstrip("/")
        dset = get_dataset(h5, path)
        check_frame_array(dset.shape, dset.dtype, f"{file}::{path}")
        return [path]
    for path in KNOWN_FRAME_PATHS:
        if _exists(h5, path):
            dset = get_dataset(h5, path)
            check_frame_array(dset.shape, dset.dtype, f"{file}::{path}")
            return [path]
    group = h5.get(EIGER_DATA_GROUP)
    if isinstance(group, h5py.Group):
        links = sorted(name for name in group if _EIGER_LINK_NAME.match(name))
        if links:
            paths = [f"{EIGER_DATA_GROUP}/{name}" for name in links]
            for path in paths:
                dset = get_dataset(h5, path)
                check_frame_array(dset.shape, dset.dtype, f"{file}::{path}")
            return paths
    infos = list_datasets(h5)
    candidates = [i for i in infos if i.image_like and "mask" not in i.path.rsplit("/", 1)[-1].lower()]
    if not candidates:
        raise DataFormatError(
            f"{file}: no image-like dataset (numeric 2-D to 4-D array with both image dimensions "
            f">= {MIN_IMAGE_SIDE}); datasets here: {_describe_some(infos)}"
        )
    best = max(candidates, key=lambda i: int(np.prod(i.shape)))
    return [best.path]


def _exists(h5: h5py.File, path: str) -> bool:
    try:
        return h5.get(path, getlink=True) is not None
    except (KeyError, OSError, RuntimeError, ValueError):
        return False


def find_mask_paths(h5: h5py.File) -> list[str]:
    """Paths of the known mask datasets present in the file (see :data:`KNOWN_MASK_PATHS`), each dataset once
    (CXI files often link ``/entry_1/data_1`` to ``/entry_1/instrument_1/detector_1``)."""
    found = []
    seen: list[h5py.Dataset] = []
    for path in KNOWN_MASK_PATHS:
        if _exists(h5, path):
            try:
                obj = h5[path]
            except (KeyError, OSError, RuntimeError):
                continue
            if isinstance(obj, h5py.Dataset) and obj.ndim in (2, 3, 4) and obj not in seen:  # links: read once
                found.append(path)
                seen.append(obj)
    return found


def read_saturation(h5: h5py.File, frame_path: str | None = None) -> float | None:
    """The detector's saturation (count cutoff) stored in the file, or None.

    Looks at the Eiger ``countrate_correction_count_cutoff``, NeXus ``saturation_value`` and a
    ``saturation_value`` attribute of the frame dataset.
    """
    for path in _SATURATION_PATHS:
        if _exists(h5, path):
            value = _scalar(h5, path)
            if value is not None:
                return value
    if frame_path is not None:
        try:
            attr = h5[frame_path].attrs.get("saturation_value")
        except (KeyError, OSError, RuntimeError):
            attr = None
        if attr is not None:
            try:
                return float(np.asarray(attr).reshape(-1)[0])
            except (TypeError, ValueError, IndexError):
                return None
    return None


def _scalar(h5: h5py.File, path: str) -> float | None:
    try:
        obj = h5[path]
        if not isinstance(obj, h5py.Dataset) or obj.size != 1 or obj.dtype.kind not in "iuf":
            return None
        value = float(np.asarray(obj[()]).reshape(-1)[0])
    except (KeyError, OSError, RuntimeError, TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return " ".join(_text(v) for v in value.reshape(-1)[:4])
    if isinstance(value, (str, np.str_)):
        return str(value)
    if isinstance(value, np.bytes_):
        return bytes(value).decode("utf-8", "replace")
    return ""


def detector_text(h5: h5py.File, frame_path: str | None = None) -> str:
    """Text the file gives about its detector (descriptions, model names, notes), joined by ``' | '``."""
    parts: list[str] = []
    for path in _DETECTOR_TEXT_PATHS:
        if not _exists(h5, path):
            continue
        try:
            obj = h5[path]
            if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "SOU" and obj.size <= 16:
                parts.append(_text(obj[()]))
        except (KeyError, OSError, RuntimeError, TypeError, ValueError):
            continue
    holders = [frame_path, "/entry/instrument/detector", "/entry_1/instrument_1/detector_1"]
    for path in holders:
        if path is None or not _exists(h5, path):
            continue
        try:
            attrs = h5[path].attrs
            for key in _DETECTOR_TEXT_ATTRS:
                if key in attrs:
                    parts.append(_text(attrs[key]))
        except (KeyError, OSError, RuntimeError, TypeError, ValueError):
            continue
    return " | ".join(p.strip() for p in parts if p and p.strip())
