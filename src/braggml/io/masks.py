"""Bad pixels: sentinel values within a frame, the detector kind that decides them, and mask files.

Every mask in braggml is a bool array with True = bad pixel.

Photon-counting detectors (Pilatus, Eiger, ...) cannot count below zero, so negative values are markers
(Pilatus ``-1`` gap between modules, ``-2`` bad pixel), and unsigned data use the dtype's maximum for gaps
(Eiger: 65535 in uint16, 2**32 - 1 in uint32). Integrating detectors (CSPAD, Jungfrau, ePix, Rayonix,
CCDs) record pedestal-subtracted charge, where negative values are ordinary noise and must never be masked
by their sign.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import ConfigError, DataFormatError, InputNotFoundError

__all__ = [
    "DetectorKind",
    "DETECTOR_KINDS",
    "PILATUS_OVERLOAD",
    "PILATUS_OVERLOAD_VALUES",
    "invalid_pixels",
    "guess_detector_kind",
    "detector_kind_from_text",
    "load_mask",
    "write_mask",
    "MASK_SUFFIXES",
    "split_spec",
]

DetectorKind = Literal["photon-counting", "integrating", "unknown"]
DETECTOR_KINDS: tuple[str, ...] = ("photon-counting", "integrating", "unknown")

#: Pilatus value for an overloaded or defective pixel in int32 data (0xFF7FF, as found in Pilatus3 files).
PILATUS_OVERLOAD = 1046527
#: Values treated as Pilatus overload markers in int32 photon-counting data: :data:`PILATUS_OVERLOAD` and the
#: 20-bit counter maximum 2**20 - 1.
PILATUS_OVERLOAD_VALUES: tuple[int, ...] = (PILATUS_OVERLOAD, 2**20 - 1)

_PHOTON_COUNTING_NAMES = (
    "pilatus",
    "eiger",
    "medipix",
    "timepix",
    "merlin",
    "mythen",
    "xpad",
    "lambda",
    "dectris",
)
_INTEGRATING_NAMES = (
    "cspad",
    "cs pad",
    "cs-pad",
    "jungfrau",
    "epix",
    "rayonix",
    "mx340",
    "mx300",
    "mx225",
    "mx170",
    "marccd",
    "mar ccd",
    "mar345",
    "adsc",
    "agipd",
    "lpd",
    "dssc",
    "pnccd",
    "mpccd",
    "dexela",
    "perkinelmer",
    "varex",
    "ccd",
    "cmos",
    "scmos",
    "image plate",
)


def _check_kind(detector_kind: str) -> None:
    if detector_kind not in DETECTOR_KINDS:
        raise ConfigError(f"detector_kind must be one of {', '.join(DETECTOR_KINDS)}; got {detector_kind!r}")


def invalid_pixels(raw: ArrayLike, *, detector_kind: str, saturation: float | None = None) -> NDArray[np.bool_]:
    """Pixels of one frame whose value is a marker or cannot be trusted.

    Parameters
    ----------
    raw : (H, W) array
        The frame in the detector's own dtype (before any conversion to float).
    detector_kind : {'photon-counting', 'integrating', 'unknown'}
        Decides which values are markers:

        - all kinds: NaN and infinity; values ``>= saturation`` when a saturation is given;
        - photon-counting: every negative value (Pilatus ``-1`` gaps, ``-2`` bad pixels), the Pilatus
          overload values 1046527 and 1048575 (2**20 - 1) in int32 data, and the dtype's maximum in
          unsigned data;
        - unknown: the dtype's maximum in unsigned data (a gap marker or a pegged ADC in any detector);
        - integrating: nothing else (negative values are noise after pedestal subtraction).
    saturation : float, optional
        Count or ADU value at and above which a pixel is not trustworthy (e.g. Pilatus ``Count_cutoff``).

    Returns
    -------
    (H, W) bool ndarray
        True where the pixel is bad.

    Examples
    --------
    >>> frame = np.array([[5, -1], [-2, 1046527]], dtype=np.int32)
    >>> invalid_pixels(frame, detector_kind="photon-counting").tolist()
    [[False, True], [True, True]]
    >>> invalid_pixels(frame, detector_kind="integrating").tolist()
    [[False, False], [False, False]]
    """
    _check_kind(detector_kind)
    a = np.asarray(raw)
    kind = a.dtype.kind
    if kind not in "iufb":
        raise DataFormatError(f"frame dtype {a.dtype} is not numeric")
    bad = np.zeros(a.shape, dtype=bool)
    if kind == "f":
        bad |= ~np.isfinite(a)
    if detector_kind == "photon-counting":
        if kind in "if":
            bad |= a < 0
        if a.dtype == np.int32:
            for value in PILATUS_OVERLOAD_VALUES:
                bad |= a == value
    if kind == "u" and detector_kind != "integrating":
        bad |= a == np.iinfo(a.dtype).max
    if saturation is not None:
        with np.errstate(invalid="ignore"):
            bad |= a >= saturation
    return bad


def guess_detector_kind(raw: ArrayLike) -> DetectorKind:
    """Guess the detector kind from one frame's values when the file does not say.

    - floating point data: ``'integrating'`` (converted or pedestal-subtracted data);
    - signed integers whose only negative values are exactly -1 and -2: ``'photon-counting'`` (Pilatus
      markers);
    - signed integers with any other negative value: ``'integrating'`` (noise around a subtracted pedestal);
    - anything else (no negative values, unsigned data): ``'unknown'``.

    Examples
    --------
    >>> guess_detector_kind(np.array([[0, 3], [-1, -2]], dtype=np.int32))
    'photon-counting'
    >>> guess_detector_kind(np.array([[0, 3], [-1, -7]], dtype=np.int32))
    'integrating'
    """
    a = np.asarray(raw)
    if a.dtype.kind == "f":
        return "integrating"
    if a.dtype.kind != "i":
        return "unknown"
    negative = a[a < 0]
    if negative.size == 0:
        return "unknown"
    if np.all((negative == -1) | (negative == -2)):
        return "photon-counting"
    return "integrating"


def detector_kind_from_text(text: str) -> DetectorKind | None:
    """The detector kind named by metadata text (CBF/NeXus detector description), or None.

    Examples
    --------
    >>> detector_kind_from_text("PILATUS3 6M, S/N 60-0119")
    'photon-counting'
    >>> detector_kind_from_text("CS PAD")
    'integrating'
    >>> detector_kind_from_text("unnamed") is None
    True
    """
    low = text.lower()
    hits: list[tuple[int, DetectorKind]] = []
    for names, kind in ((_PHOTON_COUNTING_NAMES, "photon-counting"), (_INTEGRATING_NAMES, "integrating")):
        for name in names:
            m = re.search(rf"(?<![a-z]){re.escape(name)}", low)
            if m:
                hits.append((m.start(), kind))  # type: ignore[arg-type]
    if not hits:
        return None
    return min(hits)[1]


def split_spec(spec: str) -> tuple[str, str | None]:
    """Split ``FILE::/dataset`` into the file and the dataset path (None when absent)."""
    file, sep, dataset = str(spec).partition("::")
    return file, (dataset if sep and dataset else None)


#: Mask dataset paths tried in HDF5 mask files when none is given, in this order.
MASK_FILE_PATHS: tuple[str, ...] = (
    "/entry_1/data_1/mask",
    "/entry/instrument/detector/pixel_mask",
    "/entry/instrument/detector/detectorSpecific/pixel_mask",
    "/entry_1/instrument_1/detector_1/mask",
    "/mask",
    "/data/mask",
    "/data/data",
    "/pixel_mask",
    "/entry/data/data",
)


def _frame_of(shape: tuple[int, ...]) -> tuple[int, ...]:
    """(H, W) of a (modules, ss, fs) mask, or of one with leading axes of length 1, with modules stacked."""
    while len(shape) > 3 and shape[0] == 1:
        shape = shape[1:]
    return (shape[0] * shape[1], shape[2]) if len(shape) == 3 else tuple(shape)


def _mask_from_hdf5(path: Path, dataset: str | None, shape: tuple[int, int] | None) -> tuple[NDArray, str]:
    from . import hdf5

    with hdf5.open_hdf5(path) as h5:
        if dataset is None:
            for candidate in MASK_FILE_PATHS:
                try:
                    obj = h5.get(candidate)
                except (KeyError, OSError, RuntimeError):
                    obj = None
                if obj is not None and hasattr(obj, "shape") and len(obj.shape) in (2, 3, 4):
                    dataset = candidate
                    break
            else:
                infos = [i for i in hdf5.list_datasets(h5) if len(i.shape) in (2, 3, 4)]
                if shape is not None:
                    fit = [i for i in infos if _frame_of(i.shape) == tuple(shape) or i.shape[-2:] == tuple(shape)]
                    infos = fit or infos
                if len(infos) != 1:
                    listed = ", ".join(f"{i.path} {i.shape}" for i in infos[:6]) or "none"
                    raise DataFormatError(
                        f"{path}: cannot tell which dataset is the mask; give FILE::/dataset "
                        f"(2-D datasets here: {listed})"
                    )
                dataset = infos[0].path
        dataset = "/" + dataset.lstrip("/")
        dset = hdf5.get_dataset(h5, dataset)
        try:
            values = np.asarray(dset[()])
        except (OSError, RuntimeError) as exc:
            raise DataFormatError(f"{path}::{dataset}: cannot read the mask ({exc})") from None
    return values, dataset


def _mask_from_npz(path: Path, key: str | None) -> tuple[NDArray, str]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.keys())
            if key is None:
                preferred = [k for k in ("mask", "pixel_mask", "bad", "arr_0") if k in keys]
                if preferred:
                    key = preferred[0]
                elif len(keys) == 1:
                    key = keys[0]
                else:
                    raise DataFormatError(
                        f"{path}: cannot tell which array is the mask; give FILE::NAME (arrays: {', '.join(keys)})"
                    )
            if key not in keys:
                raise InputNotFoundError(f"{path}: no array {key!r} (arrays: {', '.join(keys)})")
            return np.asarray(npz[key]), key
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataFormatError(f"{path}: cannot read as .npz ({exc})") from None


def load_mask(
    spec: str | Path,
    *,
    shape: tuple[int, int] | None,
    one_means_good: bool = False,
) -> NDArray[np.bool_]:
    """Read a bad-pixel mask file.

    Parameters
    ----------
    spec : str or Path
        ``FILE`` or ``FILE::/dataset``: HDF5 (the mask dataset is found automatically when no path is given:
        CXI ``/entry_1/data_1/mask``, NeXus ``pixel_mask``, ``/mask``, Cheetah ``/data/data`` ...), ``.npy``,
        ``.npz`` (``FILE::name`` picks an array), or CBF, TIFF and the other formats fabio reads.
    shape : (int, int) or None
        Expected frame shape (rows, cols); None skips the check.
    one_means_good : bool
        The file writes 1 (non-zero) for good pixels, as CrystFEL masks do. By default non-zero means bad.

    Returns
    -------
    (H, W) bool ndarray
        True = bad pixel. Leading axes of length 1 are dropped, and a (modules, ss, fs) mask of data stored
        module by module has its modules stacked along the rows, as the frames are read. NaN entries count as bad.

    Raises
    ------
    InputNotFoundError
        Missing file or dataset.
    DataFormatError
        Unreadable file, or a mask that is not 2-D or whose shape differs from ``shape`` (the message names
        the file, the dataset and both shapes).
    """
    from . import cbf, hdf5

    file, dataset = split_spec(str(spec))
    path = Path(file)
    if not path.exists():
        raise InputNotFoundError(f"{file}: no such mask file")
    name = path.name.lower()
    where = file
    if name.endswith(".npy"):
        try:
            values = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataFormatError(f"{file}: cannot read as .npy ({exc})") from None
    elif name.endswith(".npz"):
        values, key = _mask_from_npz(path, dataset)
        where = f"{file}::{key}"
    elif cbf.is_cbf_path(path) or cbf.is_tiff_path(path) or cbf.is_fabio_path(path):
        values = cbf.read_fabio_frame(path)
    else:
        values, dataset_path = _mask_from_hdf5(path, dataset, shape)
        where = f"{file}::{dataset_path}"
    values = np.asarray(values)
    if values.ndim != 2:  # a leading axis of 1; the (modules, ss, fs) mask of data stored module by module
        values = hdf5.stack_modules(values, shape, f"{where}: mask")
    if values.dtype.kind not in "biuf":
        raise DataFormatError(f"{where}: mask dtype {values.dtype} is not numeric or bool")
    if shape is not None and tuple(values.shape) != tuple(shape):
        raise DataFormatError(
            f"{where}: mask shape {tuple(values.shape)} does not match the frame shape {tuple(shape)}"
        )
    if values.dtype.kind == "f":
        nonzero = (values != 0) | np.isnan(values)
        good_if_one = (values != 0) & ~np.isnan(values)
        return ~good_if_one if one_means_good else nonzero
    nonzero = values != 0
    return ~nonzero if one_means_good else nonzero


#: File names :func:`write_mask` writes: HDF5 (dataset ``/mask``) or NumPy.
MASK_SUFFIXES: tuple[str, ...] = (".h5", ".hdf5", ".npy")


def write_mask(mask: NDArray[np.bool_], path: str | Path) -> Path:
    """Write a bad-pixel mask (True = bad) that :func:`load_mask` reads back, atomically.

    Parameters
    ----------
    mask : (H, W) bool ndarray
    path : str or Path
        ``.h5``/``.hdf5`` (uint8 dataset ``/mask``, 1 = bad, gzip) or ``.npy`` (bool).

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    ConfigError
        Another file name suffix, or a mask that is not 2-D.
    """
    from .atomic import atomic_output

    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ConfigError(f"a mask must be 2-D (H, W), got shape {mask.shape}")
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in MASK_SUFFIXES:
        raise ConfigError(f"{target}: a mask file must end in {', '.join(MASK_SUFFIXES)}")
    if suffix == ".npy":
        with atomic_output(target, mode="wb") as fh:
            np.save(fh, mask, allow_pickle=False)
        return target
    import h5py

    with atomic_output(target) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("mask", data=mask.astype(np.uint8), compression="gzip", shuffle=True)
        f["mask"].attrs["meaning"] = "1 = bad pixel"
    return target
