"""CBF and TIFF frames through fabio, and the CBF header read without decoding the pixels.

The header is read directly (a few kB, decompressing ``.gz``/``.bz2`` only that far), so a folder of many
CBF files can be scanned for frame shapes quickly. ``x-CBF_BYTE_OFFSET`` pixels (Pilatus, Eiger miniCBF) are
decoded by fabio, an optional dependency (``pip install braggml[cbf]``); ``x-CBF_PACKED`` pixels (CCP4 packing
after J. P. Abrahams, written by cctbx.xfel for CSPAD and Rayonix at LCLS) are decoded here. A file with
several arrays or sections (a CSPAD CBF holds 4 arrays of 8 sensors) becomes one frame with the sections
stacked along the rows in file order.
"""

from __future__ import annotations

import bz2
import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from ..errors import DataFormatError, InputNotFoundError

__all__ = [
    "CbfHeader",
    "read_cbf_header",
    "read_packed_frame",
    "decode_packed",
    "cbf_element_dtype",
    "read_fabio_frame",
    "fabio_frame_count",
    "fabio_header_text",
    "require_fabio",
    "is_cbf_path",
    "is_tiff_path",
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
        """True for ``x-CBF_PACKED`` data, decoded by :func:`read_packed_frame` rather than fabio."""
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
        sections = _binary_sections(_read_all(p), str(path))
        n_sections = sum(sec.dims[2] for sec in sections)
        slow = sum(sec.dims[1] * sec.dims[2] for sec in sections)
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
    wavelength = _number(lines.get("Wavelength"))
    if wavelength is None:
        m = re.search(rf"_diffrn_radiation_wavelength\.wavelength\s+{_FLOAT}", text)
        wavelength = float(m.group(1)) if m else None
    distance_m = _number(lines.get("Detector_distance"))
    pixel = None
    m = re.match(rf"{_FLOAT}\s*m\s*x\s*{_FLOAT}\s*m", lines.get("Pixel_size", ""))
    if m:
        pixel = (float(m.group(1)) * 1e6, float(m.group(2)) * 1e6)
    beam = None
    m = re.match(rf"\(\s*{_FLOAT}\s*,\s*{_FLOAT}\s*\)", lines.get("Beam_xy", ""))
    if m:
        beam = (float(m.group(2)), float(m.group(1)))
    return CbfHeader(
        shape=(slow, fast),
        element_type=mime_value("X-Binary-Element-Type"),
        conversions=conversions,
        detector=detector,
        wavelength_a=wavelength,
        distance_mm=distance_m * 1000.0 if distance_m is not None else None,
        exposure_time_s=_number(lines.get("Exposure_time")),
        pixel_size_um=pixel,
        beam_row_col_px=beam,
        count_cutoff=_number(lines.get("Count_cutoff")),
        header_convention=convention,
        lines=lines,
        n_sections=n_sections,
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


# -- x-CBF_PACKED ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _BinarySection:
    """One binary section of a CBF file: payload position, dimensions (fast, second, third), encoding."""

    start: int
    size: int
    dims: tuple[int, int, int]
    element_type: str
    conversions: str
    flat: bool
    uncorrelated: bool


def _read_all(path: Path) -> bytes:
    try:
        with _open_maybe_compressed(path) as fh:
            return fh.read()
    except (OSError, EOFError, ValueError) as exc:
        raise DataFormatError(f"{path}: cannot read as CBF ({' '.join(str(exc).split())})") from None


def _binary_sections(data: bytes, path: str) -> list[_BinarySection]:
    """Every binary section of a CBF file (MIME headers parsed, payload not decoded)."""
    sections: list[_BinarySection] = []
    pos = 0
    while True:
        marker = data.find(_BINARY_START, pos)
        if marker < 0:
            break
        head_at = data.rfind(b"--CIF-BINARY-FORMAT-SECTION--", pos, marker)
        if head_at < 0:
            raise DataFormatError(f"{path}: CBF binary section {len(sections) + 1} has no MIME header")
        mime = data[head_at:marker].decode("latin-1")

        def value(key: str, text: str = mime) -> str:
            m = re.search(rf"{key}\s*[:=]\s*\"?([^\"\r\n;]*)", text, flags=re.IGNORECASE)
            return m.group(1).strip() if m else ""

        try:
            size = int(value("X-Binary-Size"))
            dims = (
                int(value("X-Binary-Size-Fastest-Dimension")),
                int(value("X-Binary-Size-Second-Dimension") or 1),
                int(value("X-Binary-Size-Third-Dimension") or 1),
            )
        except ValueError:
            raise DataFormatError(
                f"{path}: CBF binary section {len(sections) + 1} does not give its size and dimensions"
            ) from None
        start = marker + len(_BINARY_START)
        if start + size > len(data):
            raise DataFormatError(f"{path}: CBF binary section {len(sections) + 1} is truncated")
        content_type = mime[: mime.find("Content-Transfer-Encoding")] if "Content-Transfer-Encoding" in mime else mime
        options = content_type.lower()
        sections.append(
            _BinarySection(
                start=start,
                size=size,
                dims=dims,
                element_type=value("X-Binary-Element-Type"),
                conversions=value("conversions"),
                flat=re.search(r"\bflat\b", options) is not None,
                uncorrelated=re.search(r"\buncorrelated_sections\b", options) is not None,
            )
        )
        pos = start + size
    if not sections:
        raise DataFormatError(f"{path}: CBF file has no binary image section (truncated?)")
    fast = {sec.dims[0] for sec in sections}
    if len(fast) > 1:
        raise DataFormatError(f"{path}: CBF arrays differ in row length {sorted(fast)}; cannot stack them")
    return sections


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


_DECODER: Any = None


def _packed_decoder() -> Any:
    """The compiled decoding loop (numba is imported and the loop compiled on first use)."""
    global _DECODER
    if _DECODER is None:
        import numba

        _DECODER = numba.njit(cache=True, nogil=True)(_decode_packed_loop)
    return _DECODER


def _decode_packed_loop(
    payload: NDArray[np.uint8],
    nelem: int,
    dim_fast: int,
    dim_mid: int,
    v2: bool,
    averaged: bool,
    uncorrelated: bool,
    elem_bits: int,
    signed: bool,
    out: NDArray[np.int64],
) -> int:
    """Decode a CCP4-packed bit stream into ``out``; returns the number of elements decoded.

    The stream (after a 32-byte header) is a series of blocks read least-significant bit first: a 6-bit
    code (7 bits in version 2) whose low 3 bits give the block length ``2**n`` and whose high bits index
    the bit width of the block's signed offsets. Each value is its offset plus a prediction: the previous
    value (``flat``), or the rounded mean of the already decoded neighbours: left, above-left, above and
    above-right in this section and, unless sections are uncorrelated, the pixel itself and the same three
    upper neighbours in the previous section.
    """
    widths_v1 = (0, 4, 5, 6, 7, 8, 16, 65)
    widths_v2 = (0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 65)
    n_bits_total = payload.size * 8
    pos = 32 * 8
    code_bits = 7 if v2 else 6
    plane = dim_fast * dim_mid
    modulus = 1 << elem_bits
    half = 1 << (elem_bits - 1)
    count = 0
    prediction = 0
    while count < nelem:
        if pos + code_bits > n_bits_total:
            return count
        code = 0
        for b in range(code_bits):
            p = pos + b
            code |= ((payload[p >> 3] >> (p & 7)) & 1) << b
        pos += code_bits
        n_pix = 1 << (code & 7)
        width = widths_v2[(code >> 3) & 15] if v2 else widths_v1[(code >> 3) & 7]
        if averaged and width == 65:
            width = elem_bits
        if n_pix > nelem - count:
            n_pix = nelem - count
        for _ in range(n_pix):
            offset = 0
            if width:
                if pos + width > n_bits_total:
                    return count
                used = width if width <= 63 else 63
                for b in range(used):
                    p = pos + b
                    offset |= ((payload[p >> 3] >> (p & 7)) & 1) << b
                if width <= 63 and (offset >> (width - 1)) & 1:
                    offset -= 1 << width
                pos += width
            value = (prediction + offset) % modulus
            if signed and value >= half:
                value -= modulus
            out[count] = value
            count += 1
            if count >= nelem:
                break
            if not averaged:
                prediction = value
                continue
            n = count
            section = n // plane
            within = n - section * plane
            row = within // dim_fast
            col = within - row * dim_fast
            total = 0
            used_n = 0
            if row > 0:
                has_left = col > 0
                has_right = col < dim_fast - 1
                has_up_left = has_left and has_right
                depth = 2 if (section > 0 and not uncorrelated) else 1
                for d in range(depth):
                    base = n - d * plane
                    if has_left:
                        # this section: the left neighbour; previous section: the pixel right below
                        total += out[base - 1 + d]
                        used_n += 1
                    if has_right:
                        total += out[base - dim_fast + 1]
                        used_n += 1
                    total += out[base - dim_fast]
                    used_n += 1
                    if has_up_left:
                        total += out[base - dim_fast - 1]
                        used_n += 1
            elif col > 0:
                total = out[n - 1]
                used_n = 1
            elif section > 0:
                total = out[n - plane]
                used_n = 1
            total = (total + half) % modulus - half
            k = used_n >> 1
            if k == 1:
                total = (total + 1) >> 1
            elif k == 2:
                total = (total + 2) >> 2
            elif k == 4:
                total = (total + 4) >> 3
            elif k == 3:
                total = total + 3
            prediction = total
    return count


def decode_packed(
    payload: bytes | NDArray[np.uint8],
    *,
    dims: tuple[int, int, int],
    dtype: np.dtype,
    version: int = 1,
    flat: bool = False,
    uncorrelated_sections: bool = False,
) -> NDArray:
    """Decode one ``x-CBF_PACKED`` (or ``x-CBF_PACKED_V2``) binary section.

    Parameters
    ----------
    payload : bytes
        The section's binary data (after the ``0C 1A 04 D5`` marker), starting with its 32-byte header.
    dims : (int, int, int)
        (fastest, second, third) dimensions from the MIME header.
    dtype : numpy.dtype
        Element type (8/16/32-bit signed or unsigned integers).
    version : {1, 2}
        Packing version (``x-CBF_PACKED_V2`` is 2).
    flat : bool
        The stream was packed without averaging neighbours (``flat`` option).
    uncorrelated_sections : bool
        Neighbours in the previous section are not used for prediction.

    Returns
    -------
    (third * second, fastest) ndarray of ``dtype``

    Raises
    ------
    DataFormatError
        When the stream ends before every element is decoded, or the element type is not supported.
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "iu" or dtype.itemsize > 4:
        raise DataFormatError(f"x-CBF_PACKED data of element type {dtype} are not supported")
    buf = np.frombuffer(payload, dtype=np.uint8) if isinstance(payload, (bytes, bytearray)) else payload
    fast, second, third = dims
    nelem = fast * second * third
    out = np.empty(nelem, dtype=np.int64)
    decoded = _packed_decoder()(
        buf,
        nelem,
        fast,
        second,
        version == 2,
        not flat,
        uncorrelated_sections,
        dtype.itemsize * 8,
        dtype.kind == "i",
        out,
    )
    if decoded != nelem:
        raise DataFormatError(f"packed CBF data end after {decoded} of {nelem} elements (truncated or corrupt)")
    return out.astype(dtype).reshape(third * second, fast)


def read_packed_frame(path: str | Path) -> NDArray:
    """Decode every binary section of an ``x-CBF_PACKED`` CBF file, stacked along the rows.

    Raises
    ------
    DataFormatError
        When the file is damaged or mixes encodings.
    """
    p = Path(path)
    data = _read_all(p)
    parts = []
    for k, sec in enumerate(_binary_sections(data, str(path))):
        if sec.conversions not in _PACKED_CONVERSIONS:
            raise DataFormatError(f"{path}: binary section {k + 1} uses {sec.conversions}, not x-CBF_PACKED")
        try:
            parts.append(
                decode_packed(
                    np.frombuffer(data, dtype=np.uint8, count=sec.size, offset=sec.start),
                    dims=sec.dims,
                    dtype=cbf_element_dtype(sec.element_type),
                    version=2 if sec.conversions.endswith("V2") else 1,
                    flat=sec.flat,
                    uncorrelated_sections=sec.uncorrelated,
                )
            )
        except DataFormatError as exc:
            raise DataFormatError(f"{path}: binary section {k + 1}: {exc}") from None
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
