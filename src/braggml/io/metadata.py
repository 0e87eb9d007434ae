"""Detector geometry stated in the frame files themselves: beam centre, pixel size, distance, wavelength.

:func:`geometry_hint` reads what a file says about its geometry, so a run without ``--geom`` or
``--beam-center`` can still place the beam correctly:

- CBF and Pilatus TIFF headers: ``# Beam_xy (x, y) pixels`` (x along the fast axis, i.e. the column),
  ``# Pixel_size``, ``# Detector_distance`` (m) and ``# Wavelength`` (Angstrom); full imgCIF headers
  (axes and detector categories, e.g. LCLS Rayonix CBFs) through CBFlib when pycbf is installed;
- NeXus and Eiger master files: ``/entry/instrument/detector/beam_center_x|y`` (pixels, x = column),
  ``x_pixel_size``, ``detector_distance`` or ``distance``, and ``/entry/instrument/beam/incident_wavelength``
  (or ``incident_energy``, or ``/entry/instrument/monochromator/wavelength``), each converted according
  to its ``units`` attribute (NeXus defaults: metres, Angstrom, pixels for the beam centre);
- CXI: ``/entry_1/instrument_1/detector_1/distance`` and ``x_pixel_size`` (m),
  ``/entry_1/instrument_1/source_1/energy`` (J) or ``wavelength`` (m); a beam centre only where the file
  states one;
- per-pixel radius maps (``/entry/instrument/detector/radius_px``): each pixel's distance from the beam,
  for tiled detectors that no single beam centre describes;
- braggml's simulated files (the ``geometry`` of the ``/truth`` attribute ``parameters``);
- the sensors of a CSPAD stored one beside the other without gaps (psana's 32 x 185 x 388 stack, Cheetah's
  1480 x 1552 layout, the LCLS CBF arrays), from the detector's name in the file or those exact shapes:
  each two-by-one sensor is a panel (:attr:`GeometryHint.panels`).

Beam centres are in array coordinates with pixel centres at integers, taking ``Beam_xy`` and
``beam_center_x|y`` as written (the convention of :func:`braggml.geometry.flat_geometry`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError, DataFormatError
from ..geometry import CSPAD_SENSOR_SHAPE, PanelRect
from . import cbf as _cbf
from . import hdf5 as _hdf5

if TYPE_CHECKING:
    from .frames import FrameSource

__all__ = ["GeometryHint", "geometry_hint", "sensor_stack_panels", "RADIUS_MAP_PATHS"]

log = logging.getLogger(__name__)

#: Per-pixel distance-from-the-beam maps (pixels), tried in this order.
RADIUS_MAP_PATHS: tuple[str, ...] = (
    "/entry/instrument/detector/radius_px",
    "/entry_1/instrument_1/detector_1/radius_px",
)

#: Detector descriptions naming a CSPAD (CBF ``CS PAD``, psana ``CsPad``, ``CSPAD 2.3M``, ``CS-PAD``).
_CSPAD = re.compile(r"\bCS[-\s]?PAD", re.IGNORECASE)

#: Frame shapes that are CSPAD sensor stacks whatever the file says: psana's (32 x 185, 388) array and
#: Cheetah's 8 x 4 layout of two-by-ones.
_CSPAD_STACK_SHAPES: frozenset[tuple[int, int]] = frozenset({(32 * 185, 388), (8 * 185, 4 * 388)})

#: Detectors whose modules do not lie in one plane: a single beam centre and distance do not describe them.
_NOT_FLAT = re.compile(r"PILATUS3?\s*12M", re.IGNORECASE)

_NEXUS_DETECTOR = "/entry/instrument/detector"
_CXI_DETECTOR = "/entry_1/instrument_1/detector_1"
_CXI_SOURCE = "/entry_1/instrument_1/source_1"
_SIMULATION_FORMAT = "braggml-simulation"

#: h * c in J * m, for photon energies given in joules (CXI).
_HC_J_M = 6.62607015e-34 * 299792458.0
_EV_J = 1.602176634e-19

_LENGTH_M = {
    "m": 1.0, "meter": 1.0, "meters": 1.0, "metre": 1.0, "metres": 1.0,
    "cm": 1e-2, "mm": 1e-3, "millimeter": 1e-3, "millimeters": 1e-3, "millimetre": 1e-3, "millimetres": 1e-3,
    "um": 1e-6, "µm": 1e-6, "μm": 1e-6, "micron": 1e-6, "microns": 1e-6, "micrometer": 1e-6,
    "micrometre": 1e-6, "nm": 1e-9, "nanometer": 1e-9, "nanometre": 1e-9,
    "a": 1e-10, "å": 1e-10, "ang": 1e-10, "angstrom": 1e-10, "angstroms": 1e-10,
}  # fmt: skip
_ENERGY_EV = {"ev": 1.0, "kev": 1e3, "mev": 1e6, "j": 1.0 / _EV_J, "joule": 1.0 / _EV_J, "joules": 1.0 / _EV_J}
_PIXELS = {"pixel", "pixels", "px", "pix"}
_DETECTOR_KEYS = ("x_pixel_size", "y_pixel_size", "detector_distance", "distance", "beam_center_x", "beam_center_y")
#: Values outside these ranges (metres) are taken as misread units.
_PIXEL_M_RANGE = (5e-7, 1e-2)
_DISTANCE_M_RANGE = (1e-3, 200.0)


@dataclass(frozen=True, eq=False)
class GeometryHint:
    """Geometry a frame file states about itself (every part optional).

    Attributes
    ----------
    beam_center_rowcol : (float, float) or None
        Where the beam meets the detector, in array coordinates with pixel centres at integers.
    pixel_size_mm : float or None
        Pixel size (square pixels).
    distance_mm : float or None
        Sample-to-detector distance.
    wavelength_a : float or None
        Beam wavelength.
    radius_px : (H, W) float32 ndarray or None
        Each pixel's distance from the beam axis, in pixels, for detectors no single beam centre describes.
    panels : tuple of PanelRect or None
        Panels the file's layout implies, for frames that hold several sensors side by side without gaps
        (see :func:`sensor_stack_panels`). The sensors are not placed: the array is not the detector's image.
    source : str
        Where the values were read (format and file), for logs and ``braggml info``.
    """

    beam_center_rowcol: tuple[float, float] | None = None
    pixel_size_mm: float | None = None
    distance_mm: float | None = None
    wavelength_a: float | None = None
    radius_px: NDArray[np.float32] | None = None
    panels: tuple[PanelRect, ...] | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.beam_center_rowcol is not None:
            try:
                row, col = (float(v) for v in self.beam_center_rowcol)
            except (TypeError, ValueError):
                raise ConfigError(f"beam_center_rowcol must be (row, col), got {self.beam_center_rowcol!r}") from None
            if not (math.isfinite(row) and math.isfinite(col)):
                raise ConfigError(f"beam_center_rowcol must be finite, got {self.beam_center_rowcol!r}")
            object.__setattr__(self, "beam_center_rowcol", (row, col))
        for name in ("pixel_size_mm", "distance_mm", "wavelength_a"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if self.radius_px is not None:
            radius = np.array(self.radius_px, dtype=np.float32)
            if radius.ndim != 2:
                raise ConfigError(f"radius_px must be a 2-D (H, W) map, got shape {radius.shape}")
            radius.setflags(write=False)
            object.__setattr__(self, "radius_px", radius)
        if self.panels is not None:
            try:
                panels = tuple(PanelRect(*(int(v) for v in rect)) for rect in self.panels)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"panels must be (min_row, max_row, min_col, max_col) rectangles, got {self.panels!r}"
                ) from None
            object.__setattr__(self, "panels", panels or None)

    @property
    def locates_beam(self) -> bool:
        """True when the hint places the beam: a beam centre or a radius map."""
        return self.beam_center_rowcol is not None or self.radius_px is not None

    @property
    def is_empty(self) -> bool:
        """True when the hint states nothing at all."""
        return (
            self.radius_px is None
            and self.panels is None
            and all(
                v is None for v in (self.beam_center_rowcol, self.pixel_size_mm, self.distance_mm, self.wavelength_a)
            )
        )

    def summary(self) -> str:
        """One line, e.g. ``beam centre (row, col) (1306.96, 1261.61) px, pixel 0.172 mm, ...``."""
        parts = []
        if self.beam_center_rowcol is not None:
            row, col = self.beam_center_rowcol
            parts.append(f"beam centre (row, col) ({row:.2f}, {col:.2f}) px")
        if self.radius_px is not None:
            finite = self.radius_px[np.isfinite(self.radius_px)]
            top = f", up to {float(finite.max()):.1f} px" if finite.size else ""
            parts.append(f"per-pixel radius map {self.radius_px.shape[0]} x {self.radius_px.shape[1]}{top}")
        if self.panels is not None:
            rows, cols = self.panels[0].shape
            parts.append(f"{len(self.panels)} unplaced sensors of {rows} x {cols}")
        if self.pixel_size_mm is not None:
            parts.append(f"pixel {self.pixel_size_mm:.6g} mm")
        if self.distance_mm is not None:
            parts.append(f"distance {self.distance_mm:.6g} mm")
        if self.wavelength_a is not None:
            parts.append(f"wavelength {self.wavelength_a:.6g} A")
        text = ", ".join(parts) or "nothing"
        return f"{text} (from {self.source})" if self.source else text


def geometry_hint(
    source: str | os.PathLike[str] | FrameSource,
    *,
    shape: tuple[int, int] | None = None,
) -> GeometryHint | None:
    """The geometry a frame file states about itself, or None when it states none.

    Parameters
    ----------
    source : path or FrameSource
        A frame file (``FILE::/dataset`` allowed), or an open source, whose first file is read.
    shape : (H, W), optional
        Frame shape; a radius map of another shape is ignored (with a warning in the log). Taken from the
        source when a :class:`~braggml.io.frames.FrameSource` is given.

    Returns
    -------
    GeometryHint or None

    Raises
    ------
    InputNotFoundError
        When the file does not exist.

    Notes
    -----
    Metadata that cannot be read or makes no sense (negative sizes, unknown units) is left out, not fatal:
    the hint only replaces the image-centre fallback. The flat-detector model does not fit a Pilatus 12M
    (cylindrical): its beam centre and distance are left out.
    """
    if isinstance(source, (str, os.PathLike)):
        from .masks import split_spec

        path, _dataset = split_spec(os.fspath(source))
    else:
        path = source.files[0]
        shape = source.shape if shape is None else shape
    from .frames import _sniff

    if not Path(path).exists():
        from ..errors import InputNotFoundError

        raise InputNotFoundError(f"{path}: no such file")
    kind = _sniff(path)
    try:
        if kind == "cbf":
            hint = _cbf_hint(path)
        elif kind == "tiff":
            hint = _tiff_hint(path)
        elif kind == "fabio":
            hint = _smv_hint(path)
        elif kind == "hdf5":
            hint = _hdf5_hint(path, shape)
        else:
            hint = None
    except DataFormatError as exc:
        log.debug("%s: no geometry metadata read (%s)", path, exc)
        return None
    if hint is None or hint.is_empty:
        return None
    return hint


def sensor_stack_panels(detector_text: str, shape: tuple[int, int] | None) -> tuple[PanelRect, ...] | None:
    """The two-by-one sensors of a CSPAD whose frames hold them side by side without gaps, or None.

    Parameters
    ----------
    detector_text : str
        What the file says about its detector (``CS PAD``, ``CsPad``...); may be empty.
    shape : (H, W) or None
        Frame shape.

    Returns
    -------
    tuple of PanelRect or None
        One 185 x 388 rectangle per sensor, row by row, when the shape is a grid of such sensors and either
        the file names a CSPAD or the shape is a whole CSPAD stack (32 x 185 rows of 388, or Cheetah's
        1480 x 1552); None otherwise.

    Examples
    --------
    >>> [tuple(p) for p in sensor_stack_panels("CS PAD", (370, 388))]
    [(0, 184, 0, 387), (185, 369, 0, 387)]
    >>> sensor_stack_panels("PILATUS3 6M", (370, 388)) is None
    True
    """
    if shape is None:
        return None
    rows, cols = (int(v) for v in shape)
    sensor_rows, sensor_cols = CSPAD_SENSOR_SHAPE
    if rows % sensor_rows or cols % sensor_cols or (rows, cols) == (sensor_rows, sensor_cols):
        return None
    if not (_CSPAD.search(detector_text or "") or (rows, cols) in _CSPAD_STACK_SHAPES):
        return None
    return tuple(
        PanelRect(r, r + sensor_rows - 1, c, c + sensor_cols - 1)
        for r in range(0, rows, sensor_rows)
        for c in range(0, cols, sensor_cols)
    )


def _with_stack_panels(
    hint: GeometryHint | None, detector_text: str, shape: tuple[int, int] | None, source: str
) -> GeometryHint | None:
    """``hint`` with the panels of a gap-less CSPAD sensor stack added (made when there was no hint)."""
    panels = sensor_stack_panels(detector_text, shape)
    return hint if panels is None else _with_panels(hint, panels, source)


def _with_panels(hint: GeometryHint | None, panels: tuple[PanelRect, ...], source: str) -> GeometryHint:
    """``hint`` with ``panels``, or a hint of the panels alone when there was none."""
    return GeometryHint(panels=panels, source=source) if hint is None else replace(hint, panels=panels)


# -- CBF and TIFF --------------------------------------------------------------------------------------------


def _square_mm(size_um: tuple[float, float] | None) -> float | None:
    if size_um is None:
        return None
    fast, slow = size_um
    if fast > 0 and abs(fast - slow) <= 1e-6 * fast:
        return fast / 1000.0
    return None


def _positive(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) and value > 0 else None


def _pilatus_hint(values: _cbf.PilatusValues, detector: str, source: str) -> GeometryHint:
    beam = values.beam_row_col_px
    distance = _positive(values.distance_mm)
    if _NOT_FLAT.search(detector):
        source += f"; {detector.split(',')[0].strip()} is not flat: beam centre and distance not used"
        beam, distance = None, None
    elif values.two_theta_deg is not None and abs(values.two_theta_deg) > 0.01:
        source += f"; detector at 2theta {values.two_theta_deg:g} deg: beam centre and distance not used"
        beam, distance = None, None
    return GeometryHint(
        beam_center_rowcol=beam,
        pixel_size_mm=_square_mm(values.pixel_size_um),
        distance_mm=distance,
        wavelength_a=_positive(values.wavelength_a),
        source=source,
    )


def _cbf_hint(path: str) -> GeometryHint | None:
    header = _cbf.read_cbf_header(path)
    name = Path(path).name
    hint = _cbf_header_hint(path, header, name)
    return _with_stack_panels(hint, header.detector, header.shape, f"CBF header of {name}")


def _cbf_header_hint(path: str, header: _cbf.CbfHeader, name: str) -> GeometryHint | None:
    if header.beam_row_col_px is not None:
        return _pilatus_hint(_cbf.pilatus_header_values(header.lines), header.detector, f"CBF header of {name}")
    try:
        found = _cbf.read_imgcif_geometry(path)
    except DataFormatError as exc:  # pycbf missing, or a header CBFlib cannot parse
        log.debug("%s: imgCIF geometry not read (%s)", path, exc)
        found = None
    if found is not None:
        row, col = found.beam_center_rowcol
        inside = -header.shape[0] <= row <= 2 * header.shape[0] and -header.shape[1] <= col <= 2 * header.shape[1]
        return GeometryHint(
            beam_center_rowcol=found.beam_center_rowcol if inside else None,
            pixel_size_mm=found.pixel_size_mm,
            distance_mm=found.distance_mm,
            wavelength_a=found.wavelength_a or _positive(header.wavelength_a),
            source=f"imgCIF header of {name}",
        )
    if header.wavelength_a is not None:
        return GeometryHint(wavelength_a=_positive(header.wavelength_a), source=f"CBF header of {name}")
    return None


def _tiff_hint(path: str) -> GeometryHint | None:
    header = _fabio_header(path)
    if "Beam_xy" not in header and "Detector_distance" not in header:
        return None
    values = _cbf.pilatus_header_values(header)
    return _pilatus_hint(values, header.get("Detector", ""), f"TIFF header of {Path(path).name}")


def _fabio_header(path: str) -> dict[str, str]:
    fabio = _cbf.require_fabio()
    try:
        image = fabio.open(path)
        try:
            return {str(k): str(v) for k, v in (getattr(image, "header", None) or {}).items()}
        finally:
            close = getattr(image, "close", None)
            if callable(close):
                close()
    except Exception as exc:  # fabio raises many types for unreadable files
        raise DataFormatError(f"{path}: fabio cannot read the header ({exc})") from None


def _smv_hint(path: str) -> GeometryHint | None:
    """Pixel size, distance and wavelength of an SMV header (ADSC, Rayonix, d*TREK), or None.

    The beam centre is left out: SMV writers disagree on its axes and origin (DIALS keeps a reader per ADSC
    serial number for it), and a wrong stated centre would be searched around instead of the image centre.
    """
    header = _fabio_header(path)

    def number(key: str) -> float | None:
        try:
            return _positive(float(header[key].split()[0].rstrip(";")))
        except (KeyError, IndexError, ValueError):
            return None

    hint = GeometryHint(
        pixel_size_mm=number("PIXEL_SIZE"),
        distance_mm=number("DISTANCE"),
        wavelength_a=number("WAVELENGTH"),
        source=f"SMV header of {Path(path).name}",
    )
    return None if hint.is_empty else hint


# -- HDF5 ------------------------------------------------------------------------------------------------------


def _unit_text(obj: h5py.Dataset) -> str:
    for key in ("units", "unit"):
        if key in obj.attrs:
            value = obj.attrs[key]
            if isinstance(value, np.ndarray):
                value = value.reshape(-1)[0] if value.size else ""
            if isinstance(value, (bytes, np.bytes_)):
                value = bytes(value).decode("utf-8", "replace")
            return str(value).strip()
    return ""


def _quantity(h5: h5py.File, path: str) -> tuple[float, str] | None:
    """First value of a numeric dataset and its units (lower case, '' when not stated), or None."""
    try:
        obj = h5.get(path)
        if not isinstance(obj, h5py.Dataset) or obj.dtype.kind not in "iuf" or obj.size < 1 or obj.size > 1_000_000:
            return None
        value = float(np.asarray(obj[()]).reshape(-1)[0])
        units = _unit_text(obj).lower()
    except (OSError, RuntimeError, TypeError, ValueError, KeyError):
        return None
    return (value, units) if math.isfinite(value) else None


def _length_m(found: tuple[float, str] | None, default: str, where: str) -> float | None:
    if found is None:
        return None
    value, units = found
    scale = _LENGTH_M.get(units or default)
    if scale is None:
        log.info("%s: unknown length units %r; value ignored", where, units)
        return None
    return _positive(value * scale)


def _wavelength_a(found: tuple[float, str] | None, default: str, where: str) -> float | None:
    metres = _length_m(found, default, where)
    return None if metres is None else metres * 1e10


def _wavelength_from_energy(found: tuple[float, str] | None, default: str, where: str) -> float | None:
    if found is None:
        return None
    value, units = found
    scale = _ENERGY_EV.get(units or default)
    if scale is None:
        log.info("%s: unknown energy units %r; value ignored", where, units)
        return None
    ev = value * scale
    return _positive(_HC_J_M / (ev * _EV_J) * 1e10) if ev > 0 else None


def _beam_px(found: tuple[float, str] | None, pixel_m: float | None, where: str) -> float | None:
    """A beam-centre coordinate in pixels (given in pixels, or as a length when the pixel size is known)."""
    if found is None:
        return None
    value, units = found
    if not units or units in _PIXELS:
        return value
    scale = _LENGTH_M.get(units)
    if scale is None or pixel_m is None:
        log.info("%s: beam centre in units %r cannot be converted to pixels; ignored", where, units)
        return None
    return value * scale / pixel_m


def _simulation_hint(h5: h5py.File, name: str) -> GeometryHint | None:
    truth = h5.get("/truth")
    if not isinstance(truth, h5py.Group) or _attr_text(truth, "format") != _SIMULATION_FORMAT:
        return None
    try:
        geometry = json.loads(_attr_text(truth, "parameters") or "{}").get("geometry", {})
        beam = geometry.get("beam_center_rowcol")
        return GeometryHint(
            beam_center_rowcol=(float(beam[0]), float(beam[1])) if beam is not None else None,
            pixel_size_mm=_positive(_float_or_none(geometry.get("pixel_size_mm"))),
            distance_mm=_positive(_float_or_none(geometry.get("distance_mm"))),
            wavelength_a=_positive(_float_or_none(geometry.get("wavelength_a"))),
            source=f"braggml simulation parameters of {name}",
        )
    except (ValueError, TypeError, IndexError, AttributeError, ConfigError) as exc:
        log.info("%s: simulation parameters unreadable (%s); ignored", name, exc)
        return None


def _attr_text(obj: h5py.HLObject, key: str) -> str:
    value = obj.attrs.get(key)
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace")
    return "" if value is None else str(value)


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _plausible(value_m: float | None, bounds: tuple[float, float]) -> bool:
    return value_m is not None and bounds[0] <= value_m <= bounds[1]


def _detector_hint(h5: h5py.File, group: str, name: str, layout: str) -> GeometryHint | None:
    """Beam centre, pixel size and distance of a NeXus or CXI detector group.

    Values without a ``units`` attribute are taken in the standard's units (metres, pixels for the beam
    centre) unless a pixel size or distance then makes no sense (e.g. 0.172 m pixels): the writer used
    other units, so none of the group's unitless values is trusted.
    """
    if not isinstance(h5.get(group), h5py.Group):
        return None
    where = f"{name}::{group}"
    raw = {key: _quantity(h5, f"{group}/{key}") for key in _DETECTOR_KEYS}
    distance_key = "detector_distance" if raw["detector_distance"] is not None else "distance"
    checks = (("x_pixel_size", _PIXEL_M_RANGE), ("y_pixel_size", _PIXEL_M_RANGE), (distance_key, _DISTANCE_M_RANGE))
    unitless_wrong = [
        f"{key} {raw[key][0]:g}"  # type: ignore[index]
        for key, bounds in checks
        if raw[key] is not None and not raw[key][1] and not _plausible(raw[key][0], bounds)  # type: ignore[index]
    ]
    if unitless_wrong:
        log.info(
            "%s: values without units are not in metres (%s); the group's unitless values are not used",
            where,
            ", ".join(unitless_wrong),
        )
        raw = {key: (q if q is not None and q[1] else None) for key, q in raw.items()}
    pixel_m = _length_m(raw["x_pixel_size"], "m", where)
    pixel_y_m = _length_m(raw["y_pixel_size"], "m", where)
    if not _plausible(pixel_m, _PIXEL_M_RANGE):
        pixel_m = None
    if pixel_m is not None and pixel_y_m is not None and abs(pixel_m - pixel_y_m) > 1e-6 * pixel_m:
        log.info("%s: pixels are not square (%g x %g m); pixel size not used", where, pixel_m, pixel_y_m)
        pixel_m = None
    distance_m = _length_m(raw[distance_key], "m", where)
    if not _plausible(distance_m, _DISTANCE_M_RANGE):
        distance_m = None
    col = _beam_px(raw["beam_center_x"], pixel_m, where)
    row = _beam_px(raw["beam_center_y"], pixel_m, where)
    hint = GeometryHint(
        beam_center_rowcol=(row, col) if row is not None and col is not None else None,
        pixel_size_mm=None if pixel_m is None else pixel_m * 1e3,
        distance_mm=None if distance_m is None else distance_m * 1e3,
        source=f"{layout} metadata of {name}",
    )
    return None if hint.is_empty else hint


def _nexus_wavelength(h5: h5py.File, where: str) -> float | None:
    for path in ("/entry/instrument/beam/incident_wavelength", "/entry/instrument/monochromator/wavelength"):
        value = _wavelength_a(_quantity(h5, path), "angstrom", where)
        if value is not None:
            return value
    return _wavelength_from_energy(_quantity(h5, "/entry/instrument/beam/incident_energy"), "ev", where)


def _cxi_wavelength(h5: h5py.File, where: str) -> float | None:
    value = _wavelength_from_energy(_quantity(h5, f"{_CXI_SOURCE}/energy"), "j", where)
    if value is None:
        value = _wavelength_a(_quantity(h5, f"{_CXI_SOURCE}/wavelength"), "m", where)
    return value


def _radius_map(h5: h5py.File, shape: tuple[int, int] | None, name: str) -> tuple[NDArray[np.float32], str] | None:
    for path in RADIUS_MAP_PATHS:
        obj = h5.get(path)
        if not isinstance(obj, h5py.Dataset) or obj.dtype.kind not in "iuf":
            continue
        dims = tuple(int(n) for n in obj.shape)
        if len(dims) == 3 and dims[0] == 1:
            dims = dims[1:]
        if len(dims) != 2 or (shape is not None and dims != tuple(shape)):
            log.warning("%s::%s: radius map of shape %s does not fit frames of shape %s; ignored",
                        name, path, tuple(obj.shape), shape)
            continue
        try:
            radius = np.asarray(obj[()], dtype=np.float32).reshape(dims)
        except (OSError, RuntimeError, ValueError) as exc:
            log.warning("%s::%s: radius map unreadable (%s); ignored", name, path, exc)
            continue
        return radius, path
    return None


def _frame_layout(h5: h5py.File) -> tuple[tuple[int, int] | None, str, int]:
    """Frame shape (None when unknown), detector description and number of modules (the second axis of
    4-D (N, modules, ss, fs) data; 1 otherwise) of the file's first frame dataset."""
    try:
        path = _hdf5.find_frame_datasets(h5)[0]
        dims = h5[path].shape
        return _hdf5.frame_shape(dims), _hdf5.detector_text(h5, path), int(dims[1]) if len(dims) == 4 else 1
    except (DataFormatError, KeyError, OSError, RuntimeError, IndexError):
        return None, "", 1


def _with_module_panels(
    hint: GeometryHint | None, shape: tuple[int, int] | None, modules: int, source: str
) -> GeometryHint | None:
    """``hint`` with one panel per module of data stored module by module, which a frame shows stacked along
    its rows (made when there was no hint; a hint with panels already is kept)."""
    if modules < 2 or shape is None or shape[0] % modules or (hint is not None and hint.panels):
        return hint
    rows = shape[0] // modules
    panels = tuple(PanelRect(k * rows, (k + 1) * rows - 1, 0, shape[1] - 1) for k in range(modules))
    return _with_panels(hint, panels, source)


def _hdf5_hint(path: str, shape: tuple[int, int] | None) -> GeometryHint | None:
    name = Path(path).name
    with _hdf5.open_hdf5(path) as h5:
        simulated = _simulation_hint(h5, name)
        if simulated is not None:
            return simulated
        nexus = _detector_hint(h5, _NEXUS_DETECTOR, name, "NeXus")
        cxi = _detector_hint(h5, _CXI_DETECTOR, name, "CXI")
        found = nexus or cxi
        wavelength = _nexus_wavelength(h5, name) or _cxi_wavelength(h5, name)
        frame_shape, detector, modules = _frame_layout(h5)
        if shape is None:
            shape = frame_shape
        radius = _radius_map(h5, shape, name)
    hint = None
    if found is not None or radius is not None or wavelength is not None:
        if found is not None:
            source = found.source
        else:
            source = f"radius map {radius[1]} of {name}" if radius is not None else f"beam metadata of {name}"
        if found is not None and radius is not None:
            source += f" and radius map {radius[1]}"
        hint = GeometryHint(
            beam_center_rowcol=found.beam_center_rowcol if found is not None else None,
            pixel_size_mm=found.pixel_size_mm if found is not None else None,
            distance_mm=found.distance_mm if found is not None else None,
            wavelength_a=wavelength,
            radius_px=radius[0] if radius is not None else None,
            source=source,
        )
    hint = _with_stack_panels(hint, detector, shape, f"detector description of {name}")
    return _with_module_panels(hint, shape, modules, f"{modules} modules stored one by one in {name}")
