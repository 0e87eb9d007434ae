"""CBF and TIFF frames through fabio, and the CBF header read without decoding the pixels.

The header is read directly (a few kB, decompressing ``.gz``/``.bz2`` only that far), so a folder of many
CBF files can be scanned for frame shapes quickly. ``x-CBF_BYTE_OFFSET`` pixels (Pilatus, Eiger miniCBF) are
decoded by fabio; ``x-CBF_PACKED`` pixels (CCP4 packing, written by cctbx.xfel for CSPAD and Rayonix at LCLS),
which fabio cannot read, are decoded by CBFlib through pycbf. Both are optional dependencies
(``pip install "braggml[cbf]"``). A file with several arrays or sections (a CSPAD CBF holds 4 arrays of
8 sensors) becomes one frame with the sections stacked along the rows in file order.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import hashlib
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from ..errors import DataFormatError, InputNotFoundError

__all__ = [
    "CbfHeader",
    "read_cbf_header",
    "PilatusValues",
    "pilatus_header_values",
    "read_packed_frame",
    "read_imgcif_geometry",
    "ImgCifGeometry",
    "cbf_element_dtype",
    "read_fabio_frame",
    "fabio_frame_count",
    "fabio_header_text",
    "require_fabio",
    "require_pycbf",
    "is_cbf_path",
    "is_tiff_path",
    "is_fabio_path",
    "looks_like_fabio_format",
    "FABIO_SUFFIXES",
]

_BINARY_START = b"\x0c\x1a\x04\xd5"
_MAX_HEADER_BYTES = 8 * 1024**2
_FABIO_CONVERSIONS = {"x-CBF_BYTE_OFFSET", "x-CBF_NONE", "none", ""}
_PACKED_CONVERSIONS = {"x-CBF_PACKED", "x-CBF_PACKED_V2"}

_FLOAT = r"([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)"


def is_cbf_path(path: str | Path) -> bool:
    """True for ``.cbf``, ``.cbf.gz`` and ``.cbf.bz2`` names."""
    name = str(path).lower()
    return name.endswith((".cbf", ".cbf.gz", ".cbf.bz2"))


def is_tiff_path(path: str | Path) -> bool:
    """True for ``.tif`` and ``.tiff`` names."""
    return str(path).lower().endswith((".tif", ".tiff"))


#: Name endings of the other detector formats read through fabio: SMV (ADSC, Rayonix, d*TREK), ESRF EDF, MarCCD,
#: mar345 image plates, Bruker, Rigaku R-AXIS, Oxford Diffraction and (lossless) JPEG 2000, as the ESRF's Laue
#: tools store frames, optionally gzip- or bzip2-compressed.
FABIO_SUFFIXES: tuple[str, ...] = (
    ".img", ".smv", ".edf", ".mccd", ".mar1200", ".mar1600", ".mar1800", ".mar2000", ".mar2300", ".mar2400",
    ".mar3000", ".mar3450", ".sfrm", ".gfrm", ".osc", ".kccd", ".jp2", ".j2k",
)

# first bytes of those formats: SMV and EDF headers open with "{", Bruker with "FORMAT :", R-AXIS with "RAXIS",
# Oxford Diffraction with "OD ", a JPEG 2000 file with its signature box, a bare JPEG 2000 codestream with SOC SIZ
_FABIO_SIGNATURES = (b"{", b"FORMAT :", b"RAXIS", b"OD ", b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")


def is_fabio_path(path: str | Path) -> bool:
    """True for names of the other formats fabio reads (:data:`FABIO_SUFFIXES`, also ``.gz``/``.bz2``)."""
    name = str(path).lower()
    for packed in (".gz", ".bz2"):
        name = name.removesuffix(packed)
    return name.endswith(FABIO_SUFFIXES)


def looks_like_fabio_format(head: bytes) -> bool:
    """True when the first bytes of a file open one of the formats of :data:`FABIO_SUFFIXES`."""
    return head.lstrip(b"\r\n ").startswith(_FABIO_SIGNATURES)


def require_fabio() -> Any:
    """Import fabio, or explain how to install it."""
    try:
        import fabio
    except ImportError:
        raise DataFormatError("reading CBF and TIFF frames needs fabio: pip install braggml[cbf]") from None
    return fabio


@dataclass(frozen=True)
class CbfHeader:
    """Essentials of a CBF header.

    Parameters
    ----------
    shape : (int, int)
        Frame shape (rows, cols) from ``X-Binary-Size-Second-Dimension`` / ``-Fastest-Dimension``.
    element_type : str
        ``X-Binary-Element-Type``, e.g. ``signed 32-bit integer``.
    conversions : str
        Compression, e.g. ``x-CBF_BYTE_OFFSET``.
    detector : str
        Detector name (Pilatus ``# Detector:`` line or ``_diffrn_detector.type``), empty when absent.
    wavelength_a, distance_mm, exposure_time_s : float or None
        From the Pilatus header lines.
    pixel_size_um : (float, float) or None
        Pixel size (fast, slow) as written.
    beam_row_col_px : (float, float) or None
        Beam centre in pixels as (row, col), from ``Beam_xy (x, y)``.
    count_cutoff : float or None
        ``Count_cutoff``: counts at or above it are not trustworthy.
    header_convention : str
        ``_array_data.header_convention``, e.g. ``PILATUS_1.2``.
    lines : dict
        Every ``# Key value`` line of the Pilatus header.
    """

    shape: tuple[int, int]
    element_type: str
    conversions: str
    detector: str = ""
    wavelength_a: float | None = None
    distance_mm: float | None = None
    exposure_time_s: float | None = None
    pixel_size_um: tuple[float, float] | None = None
    beam_row_col_px: tuple[float, float] | None = None
    count_cutoff: float | None = None
    header_convention: str = ""
    lines: dict[str, str] = field(default_factory=dict)
    n_sections: int = 1

    @property
    def packed(self) -> bool:
        """True for ``x-CBF_PACKED`` data, decoded by :func:`read_packed_frame` (pycbf) rather than fabio."""
        return self.conversions in _PACKED_CONVERSIONS

    def essentials(self) -> dict[str, Any]:
        """The header fields as a plain dict (for ``braggml info``)."""
        return {
            "detector": self.detector,
            "header_convention": self.header_convention,
            "compression": self.conversions,
            "element_type": self.element_type,
            "shape": self.shape,
            "wavelength_a": self.wavelength_a,
            "distance_mm": self.distance_mm,
            "exposure_time_s": self.exposure_time_s,
            "pixel_size_um": self.pixel_size_um,
            "beam_row_col_px": self.beam_row_col_px,
            "count_cutoff": self.count_cutoff,
            "sections": self.n_sections,
        }


def _open_maybe_compressed(path: Path) -> IO[bytes]:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")
    return open(path, "rb")


def _read_head(path: Path) -> bytes:
    """Bytes of the file up to the first binary section (or the whole text of a short file)."""
    data = b""
    block = 16384
    with _open_maybe_compressed(path) as fh:
        while len(data) < _MAX_HEADER_BYTES:
            chunk = fh.read(block)
            if not chunk:
                break
            data += chunk
            if _BINARY_START in data:
                break
            block = min(block * 2, 1024**2)
    return data


def read_cbf_header(path: str | Path) -> CbfHeader:
    """Read the header of a (possibly gzip/bzip2 compressed) CBF file.

    Raises
    ------
    InputNotFoundError
        When the file does not exist.
    DataFormatError
        When it is not a CBF file, is truncated before its first binary section, or uses a compression
        fabio cannot decode.
    """
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"{path}: no such file")
    try:
        head = _read_head(p)
    except (OSError, EOFError, ValueError) as exc:
        raise DataFormatError(f"{path}: cannot read as CBF ({' '.join(str(exc).split())})") from None
    if not head.lstrip().startswith(b"###CBF"):
        raise DataFormatError(f"{path}: not a CBF file (no '###CBF' signature)")
    cut = head.find(_BINARY_START)
    if cut < 0:
        raise DataFormatError(f"{path}: CBF file has no binary image section (truncated?)")
    text = head[:cut].decode("latin-1")
    mime = text[text.rfind("--CIF-BINARY-FORMAT-SECTION--") :]

    def mime_value(key: str) -> str:
        m = re.search(rf"{key}\s*[:=]\s*\"?([^\"\r\n;]*)", mime, flags=re.IGNORECASE)
        return m.group(1).strip() if m else ""

    conversions = mime_value("conversions")
    try:
        fast = int(mime_value("X-Binary-Size-Fastest-Dimension"))
        slow = int(mime_value("X-Binary-Size-Second-Dimension") or 1)
    except ValueError:
        raise DataFormatError(f"{path}: CBF binary section does not give the image dimensions") from None
    n_sections = 1
    if conversions in _PACKED_CONVERSIONS:
        dims = _section_dims(_read_all(p), str(path))
        n_sections = sum(d[2] for d in dims)
        slow = sum(d[1] * d[2] for d in dims)
    elif conversions not in _FABIO_CONVERSIONS:
        raise DataFormatError(
            f"{path}: CBF compression {conversions} is not supported (x-CBF_BYTE_OFFSET, x-CBF_PACKED and "
            "uncompressed CBF can be decoded); convert the file to HDF5, e.g. with dxtbx"
        )
    lines: dict[str, str] = {}
    for raw in text.splitlines():
        m = re.match(r"#\s*([A-Za-z_][\w-]*)[:=]?\s+(.*)", raw.strip())
        if m:
            lines.setdefault(m.group(1), m.group(2).strip())
    detector = lines.get("Detector", "")
    if not detector:
        m = re.search(r"_diffrn_detector\.type\s+'?([^'\r\n]+)'?", text)
        detector = m.group(1).strip() if m else ""
    convention = ""
    m = re.search(r"_array_data\.header_convention\s+\"?([^\"\r\n]+)\"?", text)
    if m:
        convention = m.group(1).strip()
    values = pilatus_header_values(lines)
    wavelength = values.wavelength_a
    if wavelength is None:
        m = re.search(rf"_diffrn_radiation_wavelength\.wavelength\s+{_FLOAT}", text)
        wavelength = float(m.group(1)) if m else None
    return CbfHeader(
        shape=(slow, fast),
        element_type=mime_value("X-Binary-Element-Type"),
        conversions=conversions,
        detector=detector,
        wavelength_a=wavelength,
        distance_mm=values.distance_mm,
        exposure_time_s=_number(lines.get("Exposure_time")),
        pixel_size_um=values.pixel_size_um,
        beam_row_col_px=values.beam_row_col_px,
        count_cutoff=_number(lines.get("Count_cutoff")),
        header_convention=convention,
        lines=lines,
        n_sections=n_sections,
    )


@dataclass(frozen=True)
class PilatusValues:
    """Geometry of a Pilatus/Eiger header (miniCBF or TIFF), each None when the header does not give it.

    Attributes
    ----------
    wavelength_a : float or None
        ``# Wavelength`` (Angstrom).
    distance_mm : float or None
        ``# Detector_distance`` (written in metres).
    pixel_size_um : (float, float) or None
        ``# Pixel_size`` (fast, slow), written in metres.
    beam_row_col_px : (float, float) or None
        ``# Beam_xy (x, y) pixels`` as (row, col) = (y, x): x runs along the fast axis (columns).
    two_theta_deg : float or None
        ``# Detector_2theta``: a non-zero value means the detector is not perpendicular to the beam.
    """

    wavelength_a: float | None = None
    distance_mm: float | None = None
    pixel_size_um: tuple[float, float] | None = None
    beam_row_col_px: tuple[float, float] | None = None
    two_theta_deg: float | None = None


def pilatus_header_values(lines: Mapping[str, str]) -> PilatusValues:
    """Parse the geometry lines of a Pilatus header given as ``{key: rest of the line}``.

    Examples
    --------
    >>> v = pilatus_header_values({"Beam_xy": "(1261.61, 1306.96) pixels", "Wavelength": "0.96859 A"})
    >>> v.beam_row_col_px, v.wavelength_a
    ((1306.96, 1261.61), 0.96859)
    """
    distance_m = _number(lines.get("Detector_distance"))
    pixel = None
    m = re.match(rf"{_FLOAT}\s*m\s*x\s*{_FLOAT}\s*m", str(lines.get("Pixel_size", "")).strip())
    if m:
        pixel = (float(m.group(1)) * 1e6, float(m.group(2)) * 1e6)
    beam = None
    m = re.match(rf"\(\s*{_FLOAT}\s*,\s*{_FLOAT}\s*\)", str(lines.get("Beam_xy", "")).strip())
    if m:
        beam = (float(m.group(2)), float(m.group(1)))
    return PilatusValues(
        wavelength_a=_number(lines.get("Wavelength")),
        distance_mm=distance_m * 1000.0 if distance_m is not None else None,
        pixel_size_um=pixel,
        beam_row_col_px=beam,
        two_theta_deg=_number(lines.get("Detector_2theta")),
    )


def _number(text: str | None) -> float | None:
    if not text:
        return None
    m = re.match(_FLOAT, text.strip())
    return float(m.group(1)) if m else None


def _why(exc: BaseException) -> str:
    """One short line saying what went wrong (the exception type when it has no message)."""
    text = " ".join(str(exc).split())[:200]
    return text or type(exc).__name__


def _fabio_open(path: str | Path) -> Any:
    fabio = require_fabio()
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"{path}: no such file")
    try:
        return fabio.open(str(p))
    except Exception as exc:  # fabio raises bare Exception, OSError, ValueError ... for bad files
        raise DataFormatError(f"{path}: fabio cannot read the file ({_why(exc)})") from None


def fabio_frame_count(path: str | Path) -> tuple[int, tuple[int, int], np.dtype, str]:
    """Number of frames, frame shape, dtype and header text of a file fabio reads (TIFF and others)."""
    image = _fabio_open(path)
    try:
        data = image.data
        if data is None or np.ndim(data) != 2:
            raise DataFormatError(f"{path}: fabio found no 2-D image in the file")
        n = int(getattr(image, "nframes", 1) or 1)
        return n, (int(data.shape[0]), int(data.shape[1])), np.dtype(data.dtype), fabio_header_text(image)
    finally:
        _close(image)


def fabio_header_text(image: Any) -> str:
    """The header of a fabio image as ``key value`` lines, plus its class name (e.g. ``PilatusImage``)."""
    parts = [type(image).__name__]
    header = getattr(image, "header", None) or {}
    for key, value in list(header.items())[:200]:
        parts.append(f"{key} {value}")
    return "\n".join(parts)


def _close(image: Any) -> None:
    close = getattr(image, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # pragma: no cover - closing must not hide the real error
            pass


def read_fabio_frame(path: str | Path, index: int = 0) -> NDArray:
    """Frame ``index`` of a CBF/TIFF file, in the file's own dtype.

    Raises
    ------
    DataFormatError
        When fabio is missing or the file cannot be decoded (the message names the file and frame).
    """
    image = _fabio_open(path)
    try:
        if index:
            try:
                image = image.getframe(index)
            except Exception as exc:
                raise DataFormatError(f"{path}: cannot read frame {index} ({_why(exc)})") from None
        data = image.data
    except DataFormatError:
        raise
    except Exception as exc:
        raise DataFormatError(f"{path}: frame {index} cannot be decoded ({_why(exc)})") from None
    finally:
        _close(image)
    if data is None or np.ndim(data) != 2:
        raise DataFormatError(f"{path}: frame {index} is not a 2-D image")
    return np.asarray(data)


def cbf_element_dtype(element_type: str) -> np.dtype:
    """NumPy dtype of a CBF ``X-Binary-Element-Type`` such as ``signed 32-bit integer``."""
    text = element_type.lower()
    bits = 32
    for n in (8, 16, 32, 64):
        if f"{n}-bit" in text:
            bits = n
    if "real" in text or "float" in text:
        return np.dtype(np.float64 if bits == 64 else np.float32)
    return np.dtype(f"{'u' if 'unsigned' in text else 'i'}{bits // 8}")


# -- x-CBF_PACKED (through pycbf) -------------------------------------------------------------------------


def require_pycbf() -> Any:
    """Import pycbf (the CBFlib bindings), or explain how to install it."""
    try:
        with warnings.catch_warnings():
            # SWIG-built modules warn about their own internal types on import
            warnings.simplefilter("ignore", DeprecationWarning)
            import pycbf
    except ImportError:
        raise DataFormatError(
            'reading x-CBF_PACKED CBF frames (LCLS CSPAD, Rayonix) needs pycbf: pip install "braggml[cbf]"'
        ) from None
    return pycbf


def _read_all(path: Path) -> bytes:
    try:
        with _open_maybe_compressed(path) as fh:
            return fh.read()
    except (OSError, EOFError, ValueError) as exc:
        raise DataFormatError(f"{path}: cannot read as CBF ({' '.join(str(exc).split())})") from None


def _mime_value(mime: str, key: str) -> str:
    """The value of ``key`` in a binary section's MIME header ('' when absent)."""
    m = re.search(rf"{key}\s*[:=]\s*\"?([^\"\r\n;]*)", mime, flags=re.IGNORECASE)
    return m.group(1).strip() if m else ""


def _binary_sections(data: bytes, path: str) -> list[tuple[str, int, int]]:
    """(MIME header, payload start, payload size) of every binary section, in file order."""
    sections: list[tuple[str, int, int]] = []
    pos = 0
    while True:
        marker = data.find(_BINARY_START, pos)
        if marker < 0:
            return sections
        head_at = data.rfind(b"--CIF-BINARY-FORMAT-SECTION--", pos, marker)
        if head_at < 0:
            raise DataFormatError(f"{path}: CBF binary section {len(sections) + 1} has no MIME header")
        mime = data[head_at:marker].decode("latin-1")
        try:
            size = int(_mime_value(mime, "X-Binary-Size"))
        except ValueError:
            raise DataFormatError(f"{path}: CBF binary section {len(sections) + 1} does not give its size") from None
        start = marker + len(_BINARY_START)
        sections.append((mime, start, size))
        pos = start + max(size, 0)


def _section_dims(data: bytes, path: str) -> list[tuple[int, int, int]]:
    """(fastest, second, third) dimensions of every binary section, from their MIME headers."""
    dims: list[tuple[int, int, int]] = []
    for mime, _start, _size in _binary_sections(data, path):
        try:
            dims.append(
                (
                    int(_mime_value(mime, "X-Binary-Size-Fastest-Dimension")),
                    int(_mime_value(mime, "X-Binary-Size-Second-Dimension") or 1),
                    int(_mime_value(mime, "X-Binary-Size-Third-Dimension") or 1),
                )
            )
        except ValueError:
            raise DataFormatError(
                f"{path}: CBF binary section {len(dims) + 1} does not give its size and dimensions"
            ) from None
    if not dims:
        raise DataFormatError(f"{path}: CBF file has no binary image section (truncated?)")
    fast = {d[0] for d in dims}
    if len(fast) > 1:
        raise DataFormatError(f"{path}: CBF arrays differ in row length {sorted(fast)}; cannot stack them")
    return dims


def _check_payloads(data: bytes, path: str) -> None:
    """Every binary section holds its ``X-Binary-Size`` bytes, and they match its ``Content-MD5`` where it
    gives one, before CBFlib decodes them: it may read past the end of a corrupt or truncated payload."""
    for k, (mime, start, size) in enumerate(_binary_sections(data, path), 1):
        payload = data[start : start + size]
        if len(payload) < size:
            raise DataFormatError(
                f"{path}: binary array {k} cannot be decoded (truncated: {len(payload)} of {size} bytes)"
            )
        digest = _mime_value(mime, "Content-MD5")
        if digest and base64.b64encode(hashlib.md5(payload).digest()).decode() != digest:
            raise DataFormatError(f"{path}: binary array {k} cannot be decoded (its Content-MD5 does not match)")


def _pycbf_handle(path: str | Path, data: bytes) -> Any:
    """A pycbf handle holding the parsed file ``data`` (binary sections are decoded only when asked for).

    CBFlib may read from ``data`` until the handle is gone: the caller keeps both alive together.
    """
    pycbf = require_pycbf()
    handle = pycbf.cbf_handle_struct()
    try:
        handle.read_buffer(data, pycbf.MSG_DIGEST | pycbf.CBF_PARSE_WIDE)
    except Exception as exc:  # CBFlib reports every failure as RuntimeError or bare Exception
        raise DataFormatError(f"{path}: CBFlib cannot parse the file ({_why(exc)})") from None
    return handle


def read_packed_frame(path: str | Path) -> NDArray:
    """Decode every binary array of an ``x-CBF_PACKED`` CBF file with CBFlib, stacked along the rows.

    Each row of the ``_array_data.data`` loop (a CSPAD quadrant of 8 sensors, or one Rayonix image) becomes
    ``third * second`` rows of ``fastest`` pixels; the arrays follow one another in file order.

    Parameters
    ----------
    path : str or Path
        The CBF file (``.cbf``, ``.cbf.gz`` or ``.cbf.bz2``).

    Returns
    -------
    (sum of third * second, fastest) ndarray
        In the file's integer element type.

    Raises
    ------
    DataFormatError
        When pycbf is not installed, or CBFlib cannot decode the file (truncated data, checksum mismatch,
        arrays of different row lengths).
    """
    data = _read_all(Path(path))
    _check_payloads(data, str(path))
    handle = _pycbf_handle(path, data)
    parts: list[NDArray] = []
    try:
        handle.find_category(b"array_data")
        handle.find_column(b"data")
        n_arrays = int(handle.count_rows())
    except Exception as exc:
        raise DataFormatError(f"{path}: CBF file has no _array_data.data ({_why(exc)})") from None
    for row in range(n_arrays):
        try:
            handle.select_row(row)
            (_compression, _bid, elsize, elsigned, _eu, elements, _mn, _mx, byteorder, fast, mid, slow, _pad) = (
                handle.get_integerarrayparameters_wdims_fs()
            )
            raw = handle.get_integerarray_as_string()
        except Exception as exc:
            raise DataFormatError(f"{path}: binary array {row + 1} cannot be decoded ({_why(exc)})") from None
        order = "<" if b"little" in bytes(byteorder).lower() else ">"
        values = np.frombuffer(raw, dtype=np.dtype(f"{order}{'i' if elsigned else 'u'}{int(elsize)}"))
        fast = int(fast) or int(elements)
        if values.size != int(elements) or values.size % fast:
            raise DataFormatError(
                f"{path}: binary array {row + 1} decodes to {values.size} of {int(elements)} elements "
                f"({fast} per row; truncated or corrupt)"
            )
        parts.append(values.astype(values.dtype.newbyteorder("="), copy=False).reshape(-1, fast))
    if not parts:
        raise DataFormatError(f"{path}: CBF file holds no binary arrays")
    widths = {a.shape[1] for a in parts}
    if len(widths) > 1:
        raise DataFormatError(f"{path}: CBF arrays differ in row length {sorted(widths)}; cannot stack them")
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


@dataclass(frozen=True)
class ImgCifGeometry:
    """Detector geometry stated in a full imgCIF header (axes and detector categories), read by CBFlib.

    Attributes
    ----------
    beam_center_rowcol : (float, float)
        Where the beam meets the detector, in pixel indices (row = slow, col = fast) as CBFlib states them.
    pixel_size_mm : float or None
        Pixel size, when square.
    distance_mm : float or None
        Sample-to-detector distance.
    wavelength_a : float or None
        Wavelength of the ``diffrn_radiation_wavelength`` category.
    """

    beam_center_rowcol: tuple[float, float]
    pixel_size_mm: float | None
    distance_mm: float | None
    wavelength_a: float | None


def read_imgcif_geometry(path: str | Path) -> ImgCifGeometry | None:
    """Beam centre, pixel size, distance and wavelength of a single-element imgCIF detector, or None.

    Files with several detector elements (a CSPAD CBF holds one per quadrant) return None, as no single beam
    centre places their stacked arrays. So do files without an ``axis`` description (miniCBF, whose
    ``# Beam_xy`` lines :func:`read_cbf_header` reads).

    Raises
    ------
    DataFormatError
        When pycbf is not installed or CBFlib cannot parse the file.
    """
    data = _read_all(Path(path))
    handle = _pycbf_handle(path, data)
    try:
        if int(handle.count_elements()) != 1:
            return None
        detector = handle.construct_detector(0)
        try:
            index_fast, index_slow, _mm_fast, _mm_slow = detector.get_beam_center_fs()
            distance = float(detector.get_detector_distance())
            size_fast = float(detector.get_inferred_pixel_size_fs(1))
            size_slow = float(detector.get_inferred_pixel_size_fs(2))
        finally:
            del detector
    except Exception:  # not an imgCIF detector description
        return None
    try:
        wavelength: float | None = float(handle.get_wavelength())
    except Exception:
        wavelength = None

    def positive(value: float | None) -> float | None:
        return value if value is not None and np.isfinite(value) and value > 0 else None

    pixel = positive(size_fast) if abs(size_fast - size_slow) <= 1e-6 * max(abs(size_fast), 1e-12) else None
    if not (np.isfinite(index_fast) and np.isfinite(index_slow)):
        return None
    return ImgCifGeometry(
        beam_center_rowcol=(float(index_slow), float(index_fast)),
        pixel_size_mm=pixel,
        distance_mm=positive(distance),
        wavelength_a=positive(wavelength),
    )
