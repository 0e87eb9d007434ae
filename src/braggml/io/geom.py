"""CrystFEL geometry files (``.geom``, crystfel_geometry(5)): reading and writing.

The parser follows CrystFEL 0.10's data-template rules:

- ``;`` starts a comment; blank lines are ignored; every other line is ``key = value``.
- ``panel/key = value`` sets a panel property; ``key = value`` without a panel sets a default that applies to
  every panel *first mentioned later* in the file (and, for beam keys, the beam).
- ``bad*/key`` lines describe bad regions (lab-frame ``min_x..max_y`` in pixels, or inclusive
  ``min_fs..max_ss`` with an optional ``panel``); ``rigid_group*`` and ``group_*`` lines are accepted and ignored.
- Units: ``clen`` in metres (or ``mm`` when suffixed, and by default when it names a data-file location),
  ``coffset`` in metres, ``res`` in pixels per metre, ``photon_energy`` in eV (or ``keV``), ``wavelength`` in
  ``m`` or ``A``, ``electron_voltage`` in ``V`` or ``kV``.
- A beam or camera-length value given as a data-file location (``/LCLS/photon_energy_eV``) is kept as a
  :class:`~braggml.geometry.MetadataRef` and treated as unknown numerically (with a warning).

Unknown keys give a warning naming the file and line; malformed numbers and panels missing required keys raise
:class:`~braggml.errors.DataFormatError` naming the file, the line and the key.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError, DataFormatError, InputNotFoundError
from ..geometry import (
    HC_KEV_A,
    BadRegion,
    DetectorGeometry,
    MaskSpec,
    MetadataRef,
    Panel,
    electron_wavelength_a,
)
from .atomic import atomic_output
from .hdf5 import stack_modules

__all__ = [
    "read_crystfel_geom",
    "parse_crystfel_geom",
    "format_crystfel_geom",
    "write_crystfel_geom",
    "read_geometry_masks",
    "module_first_row",
]

_REQUIRED_PANEL_KEYS = ("min_fs", "max_fs", "min_ss", "max_ss", "corner_x", "corner_y", "fs", "ss", "res")
_INT_PANEL_KEYS = ("min_fs", "max_fs", "min_ss", "max_ss", "mask_edge_pixels")
_FLOAT_PANEL_KEYS = (
    "corner_x", "corner_y", "res", "coffset", "adu_per_photon", "adu_per_eV", "max_adu",
    "flag_lessthan", "flag_morethan", "flag_equal",
)
_STRING_PANEL_KEYS = ("data", "mask", "mask_file", "saturation_map", "saturation_map_file")
_BITS_PANEL_KEYS = ("mask_good", "mask_bad")
_BOOL_PANEL_KEYS = ("no_index", "bad")
_MASKN = re.compile(r"^mask([0-7])_(data|file|goodbits|badbits)$")
_DIM = re.compile(r"^dim(\d+)$")
_BEAM_KEYS = ("photon_energy", "wavelength", "electron_voltage")
# Accepted and not used by braggml.
_IGNORED_KEYS = {
    "bandwidth", "photon_energy_bandwidth", "photon_energy_scale", "peak_list", "peak_list_type",
    "detector_shift_x", "detector_shift_y", "badrow_direction", "peak_sep", "integration_radius",
    "clen_for_centering", "pixel_pitch", "beam_divergence", "beam_bandwidth", "camera_length",
}
_BAD_REGION_KEYS = ("min_x", "max_x", "min_y", "max_y", "min_fs", "max_fs", "min_ss", "max_ss", "panel")
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_VECTOR_TERM = re.compile(r"([+-]?)((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)?([xyz])")
_VALUE_UNIT = re.compile(rf"^({_NUMBER})\s*([A-Za-z]*)$")


@dataclass
class _PanelDraft:
    name: str
    line: int
    values: dict[str, tuple[Any, int]] = field(default_factory=dict)


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.defaults: dict[str, tuple[Any, int]] = {}
        self.panels: dict[str, _PanelDraft] = {}
        self.bad: dict[str, dict[str, tuple[Any, int]]] = {}
        self.bad_lines: dict[str, int] = {}
        self.beam: tuple[str, str, int] | None = None
        self.bandwidth: float | None = None

    # -- errors ---------------------------------------------------------------------------------------------
    def error(self, line: int, key: str, message: str) -> DataFormatError:
        return DataFormatError(f"{self.source}:{line}: {key!r}: {message}")

    def warn(self, line: int, key: str, message: str) -> None:
        warnings.warn(f"{self.source}:{line}: {key!r}: {message}", stacklevel=4)

    # -- value conversion -------------------------------------------------------------------------------------
    def as_int(self, value: str, line: int, key: str) -> int:
        try:
            number = float(value)
        except ValueError:
            raise self.error(line, key, f"cannot read {value!r} as an integer") from None
        if not math.isfinite(number) or number != int(number):
            raise self.error(line, key, f"cannot read {value!r} as an integer")
        return int(number)

    def as_float(self, value: str, line: int, key: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise self.error(line, key, f"cannot read {value!r} as a number") from None
        if not math.isfinite(number):
            raise self.error(line, key, f"{value!r} is not a finite number")
        return number

    def as_bits(self, value: str, line: int, key: str) -> int:
        try:
            return int(value, 0)
        except ValueError:
            raise self.error(line, key, f"cannot read {value!r} as an integer bit mask") from None

    def as_bool(self, value: str, line: int, key: str) -> bool:
        low = value.strip().lower()
        if low in ("1", "true", "yes"):
            return True
        if low in ("0", "false", "no"):
            return False
        raise self.error(line, key, f"cannot read {value!r} as true/false (1/0)")

    def as_vector(self, value: str, line: int, key: str) -> tuple[float, float, float]:
        compact = re.sub(r"\s+", "", value)
        comps = {"x": 0.0, "y": 0.0, "z": 0.0}
        pos = 0
        seen: set[str] = set()
        for m in _VECTOR_TERM.finditer(compact):
            if m.start() != pos or m.group(3) in seen:
                break
            sign = -1.0 if m.group(1) == "-" else 1.0
            comps[m.group(3)] = sign * (float(m.group(2)) if m.group(2) else 1.0)
            seen.add(m.group(3))
            pos = m.end()
        if not compact or pos != len(compact):
            raise self.error(line, key, f"cannot read {value!r} as a vector like '+1.0x -0.002y'")
        return comps["x"], comps["y"], comps["z"]

    # -- line handling -----------------------------------------------------------------------------------------
    def parse(self) -> DetectorGeometry:
        for lineno, raw in enumerate(self.text.splitlines(), start=1):
            line = raw.split(";", 1)[0].strip()
            if not line:
                continue
            if "=" not in line:
                raise self.error(lineno, line, "expected 'key = value'")
            key, value = (part.strip() for part in line.split("=", 1))
            if not key:
                raise self.error(lineno, line, "missing key before '='")
            if "/" in key:
                owner, prop = (part.strip() for part in key.split("/", 1))
                if owner.startswith("bad"):
                    self.bad_region_key(owner, prop, value, lineno)
                elif owner.startswith("rigid_group") or owner.startswith("group"):
                    continue
                else:
                    self.panel_key(owner, prop, value, lineno)
            else:
                self.global_key(key, value, lineno)
        return self.build()

    def global_key(self, key: str, value: str, line: int) -> None:
        if key.startswith("rigid_group") or key.startswith("group_"):
            return
        if key in _BEAM_KEYS:
            if self.beam is not None and self.beam[0] != key:
                self.warn(line, key, f"overrides {self.beam[0]!r} given on line {self.beam[2]}")
            self.beam = (key, value, line)
            return
        if key == "bandwidth":
            self.bandwidth = self.as_float(value, line, key)
            return
        if key in _IGNORED_KEYS:
            return
        if key == "n_panels":
            self.warn(line, key, "old-style key ignored")
            return
        if self.is_panel_property(key):
            self.check_panel_value(key, value, line, key)
            self.defaults[key] = (value, line)
            return
        self.warn(line, key, "unknown key ignored")

    @staticmethod
    def is_panel_property(prop: str) -> bool:
        return (
            prop in _INT_PANEL_KEYS
            or prop in _FLOAT_PANEL_KEYS
            or prop in _STRING_PANEL_KEYS
            or prop in _BITS_PANEL_KEYS
            or prop in _BOOL_PANEL_KEYS
            or prop in ("fs", "ss", "clen")
            or bool(_MASKN.match(prop))
            or bool(_DIM.match(prop))
        )

    def check_panel_value(self, prop: str, value: str, line: int, key: str) -> None:
        """Fail early on a malformed value (reported at the line where it is written)."""
        if prop in _INT_PANEL_KEYS:
            self.as_int(value, line, key)
        elif prop in _FLOAT_PANEL_KEYS:
            self.as_float(value, line, key)
        elif prop in _BITS_PANEL_KEYS or (_MASKN.match(prop) and prop.endswith("bits")):
            self.as_bits(value, line, key)
        elif prop in _BOOL_PANEL_KEYS:
            self.as_bool(value, line, key)
        elif prop in ("fs", "ss"):
            self.as_vector(value, line, key)
        elif prop == "clen":
            self.length_m(value, line, key)
        elif _DIM.match(prop) and value not in ("%", "ss", "fs"):
            self.as_int(value, line, key)

    def panel_key(self, name: str, prop: str, value: str, line: int) -> None:
        key = f"{name}/{prop}"
        if not name:
            raise self.error(line, key, "empty panel name")
        draft = self.panels.get(name)
        if draft is None:
            draft = _PanelDraft(name=name, line=line, values=dict(self.defaults))
            self.panels[name] = draft
        if prop in _IGNORED_KEYS:
            return
        if not self.is_panel_property(prop):
            self.warn(line, key, "unknown panel key ignored")
            return
        self.check_panel_value(prop, value, line, key)
        draft.values[prop] = (value, line)

    def bad_region_key(self, name: str, prop: str, value: str, line: int) -> None:
        key = f"{name}/{prop}"
        region = self.bad.setdefault(name, {})
        self.bad_lines.setdefault(name, line)
        if prop not in _BAD_REGION_KEYS:
            self.warn(line, key, "unknown bad-region key ignored")
            return
        if prop in ("min_fs", "max_fs", "min_ss", "max_ss"):
            region[prop] = (self.as_int(value, line, key), line)
        elif prop == "panel":
            region[prop] = (value, line)
        else:
            region[prop] = (self.as_float(value, line, key), line)

    # -- units ---------------------------------------------------------------------------------------------------
    def length_m(self, value: str, line: int, key: str) -> float | MetadataRef:
        """A length in metres, or a data-file location with its unit."""
        parts = value.split()
        if parts and not re.match(_NUMBER + "$", parts[0]) and not _VALUE_UNIT.match(value):
            unit = parts[1] if len(parts) > 1 else "mm"
            if unit not in ("m", "mm") or len(parts) > 2:
                raise self.error(line, key, f"cannot read {value!r} as a length (number or location, m or mm)")
            return MetadataRef(quantity=key.rsplit("/", 1)[-1], location=parts[0], unit=unit)
        m = _VALUE_UNIT.match(value)
        if m is None:
            raise self.error(line, key, f"cannot read {value!r} as a length in m or mm")
        number, unit = float(m.group(1)), m.group(2)
        if unit not in ("", "m", "mm"):
            raise self.error(line, key, f"unknown length unit {unit!r} (use m or mm)")
        return number / 1000.0 if unit == "mm" else number

    def beam_wavelength(self) -> tuple[float | None, MetadataRef | None]:
        if self.beam is None:
            return None, None
        key, value, line = self.beam
        default_unit = {"photon_energy": "eV", "wavelength": "m", "electron_voltage": "V"}[key]
        allowed = {"photon_energy": ("eV", "keV"), "wavelength": ("m", "A"), "electron_voltage": ("V", "kV")}[key]
        m = _VALUE_UNIT.match(value)
        if m is None:
            parts = value.split()
            unit = parts[1] if len(parts) > 1 else default_unit
            if not parts or len(parts) > 2 or unit not in allowed:
                raise self.error(line, key, f"cannot read {value!r} (number or location, unit {'/'.join(allowed)})")
            self.warn(line, key, f"value is read from the data files ({parts[0]}); resolution unknown until then")
            return None, MetadataRef(quantity=key, location=parts[0], unit=unit)
        number, unit = float(m.group(1)), m.group(2) or default_unit
        if key == "wavelength" and not m.group(2) and number > 1e-6:
            raise self.error(line, key, f"{value!r} has no unit and is too long for metres; write '{value} A'")
        if unit not in allowed:
            raise self.error(line, key, f"unknown unit {unit!r} (use {' or '.join(allowed)})")
        if not (math.isfinite(number) and number > 0):
            raise self.error(line, key, f"must be > 0, got {value!r}")
        if key == "photon_energy":
            energy_ev = number * (1000.0 if unit == "keV" else 1.0)
            return HC_KEV_A * 1000.0 / energy_ev, None
        if key == "wavelength":
            return (number * 1e10 if unit == "m" else number), None
        return electron_wavelength_a(number * (1000.0 if unit == "kV" else 1.0)), None

    # -- assembly ---------------------------------------------------------------------------------------------------
    def build(self) -> DetectorGeometry:
        if not self.panels:
            raise DataFormatError(f"{self.source}: no panels defined (expected lines like 'p0/min_fs = 0')")
        wavelength_a, beam_metadata = self.beam_wavelength()
        panels = tuple(self.build_panel(d) for d in self.panels.values())
        regions = tuple(self.build_region(name, values) for name, values in self.bad.items())
        panels, regions, module_rows = self.stack_modules(panels, regions)
        try:
            return DetectorGeometry(
                panels=panels,
                bad_regions=regions,
                wavelength_a=wavelength_a,
                beam_metadata=beam_metadata,
                bandwidth=self.bandwidth,
                source=self.source,
                module_rows=module_rows,
            )
        except ConfigError as exc:
            raise DataFormatError(f"{self.source}: {exc}") from None

    def build_panel(self, d: _PanelDraft) -> Panel:
        v = d.values
        missing = [k for k in _REQUIRED_PANEL_KEYS if k not in v]
        if missing:
            raise DataFormatError(
                f"{self.source}:{d.line}: panel {d.name!r} (first mentioned here) lacks "
                f"{', '.join(repr(f'{d.name}/{k}') for k in missing)}"
            )

        def get(prop: str, conv: Any) -> Any:
            value, line = v[prop]
            return conv(value, line, f"{d.name}/{prop}")

        def opt(prop: str, conv: Any) -> Any:
            return get(prop, conv) if prop in v else None

        clen_m: float | None = None
        clen_meta: MetadataRef | None = None
        if "clen" in v:
            value, line = v["clen"]
            clen = self.length_m(value, line, f"{d.name}/clen")
            if isinstance(clen, MetadataRef):
                clen_meta = MetadataRef(quantity="clen", location=clen.location, unit=clen.unit)
                if d is next(iter(self.panels.values())):
                    self.warn(line, "clen", f"camera length is read from the data files ({clen.location}); "
                                            "resolution unknown until then")
            else:
                clen_m = clen
        masks: list[MaskSpec] = []
        mask_fields: dict[int, dict[str, Any]] = {}
        for prop, (value, line) in v.items():
            m = _MASKN.match(prop)
            if m:
                n, what = int(m.group(1)), m.group(2)
                mask_fields.setdefault(n, {})[what] = (
                    self.as_bits(value, line, f"{d.name}/{prop}") if what.endswith("bits") else value
                )
        if "mask" in v or "mask_file" in v:
            legacy = mask_fields.setdefault(0, {})
            if "mask" in v:
                legacy["data"] = v["mask"][0]
            if "mask_file" in v:
                legacy["file"] = v["mask_file"][0]
            if "mask_good" in v:
                legacy["goodbits"] = get("mask_good", self.as_bits)
            if "mask_bad" in v:
                legacy["badbits"] = get("mask_bad", self.as_bits)
        for n in sorted(mask_fields):
            spec = mask_fields[n]
            if "data" not in spec:
                raise DataFormatError(
                    f"{self.source}:{d.line}: panel {d.name!r} gives mask{n} settings without mask{n}_data"
                )
            masks.append(
                MaskSpec(dataset=spec["data"], file=spec.get("file"),
                         good_bits=spec.get("goodbits", 0), bad_bits=spec.get("badbits", 0))
            )
        dims: tuple[str, ...] | None = None
        dim_items = sorted((int(_DIM.match(k).group(1)), val[0]) for k, val in v.items() if _DIM.match(k))  # type: ignore[union-attr]
        if dim_items:
            if [i for i, _ in dim_items] != list(range(len(dim_items))):
                raise DataFormatError(
                    f"{self.source}:{d.line}: panel {d.name!r}: dim keys must be dim0, dim1, ... without gaps"
                )
            dims = tuple(str(val) for _, val in dim_items)
        bad = any(get(k, self.as_bool) for k in _BOOL_PANEL_KEYS if k in v)
        try:
            return Panel(
                name=d.name,
                min_fs=get("min_fs", self.as_int),
                max_fs=get("max_fs", self.as_int),
                min_ss=get("min_ss", self.as_int),
                max_ss=get("max_ss", self.as_int),
                corner_x=get("corner_x", self.as_float),
                corner_y=get("corner_y", self.as_float),
                res_px_per_m=get("res", self.as_float),
                fs_vector=get("fs", self.as_vector),
                ss_vector=get("ss", self.as_vector),
                clen_m=clen_m,
                clen_metadata=clen_meta,
                coffset_m=opt("coffset", self.as_float) or 0.0,
                adu_per_photon=opt("adu_per_photon", self.as_float),
                adu_per_ev=opt("adu_per_eV", self.as_float),
                max_adu=opt("max_adu", self.as_float),
                bad=bad,
                masks=tuple(masks),
                data=v["data"][0] if "data" in v else None,
                dims=dims,
                flag_lessthan=opt("flag_lessthan", self.as_float),
                flag_morethan=opt("flag_morethan", self.as_float),
                flag_equal=opt("flag_equal", self.as_float),
                mask_edge_pixels=opt("mask_edge_pixels", self.as_int) or 0,
            )
        except ConfigError as exc:
            raise DataFormatError(f"{self.source}:{d.line}: {exc}") from None

    def stack_modules(
        self, panels: tuple[Panel, ...], regions: tuple[BadRegion, ...]
    ) -> tuple[tuple[Panel, ...], tuple[BadRegion, ...], int | None]:
        """Panels of data stored module by module (``dim1 = 3``: (N, modules, ss, fs)) moved to the rows of the
        modules stacked along the rows, with the fs/ss bad regions of their panels; the module height is that of
        the panels (the highest ``max_ss`` + 1)."""
        modules = {p.name: self.module_of(p) for p in panels}
        numbered = [name for name, k in modules.items() if k is not None]
        if not numbered:
            return panels, regions, None
        plain = [name for name, k in modules.items() if k is None]
        if plain:
            raise DataFormatError(
                f"{self.source}: panel {numbered[0]!r} names its module in a dim key and panel {plain[0]!r} "
                "does not; give every panel its module"
            )
        rows = max(p.max_ss for p in panels) + 1
        offset = {name: k * rows for name, k in modules.items() if k is not None}
        panels = tuple(replace(p, min_ss=p.min_ss + offset[p.name], max_ss=p.max_ss + offset[p.name]) for p in panels)
        moved = []
        for r in regions:
            if r.is_fsss:
                if r.panel is None:
                    raise DataFormatError(
                        f"{self.source}:{self.bad_lines[r.name]}: bad region {r.name!r} gives fs/ss limits without "
                        "a panel, which data stored module by module need"
                    )
                shift = offset[r.panel]
                r = replace(r, min_ss=r.min_ss + shift, max_ss=r.max_ss + shift)  # type: ignore[operator]
            moved.append(r)
        return panels, tuple(moved), rows

    def module_of(self, p: Panel) -> int | None:
        """The module a panel's ``dimN`` keys name (``dim1 = 3``), or None when they name none."""
        if p.dims is None:
            return None
        numbers = [i for i, d in enumerate(p.dims) if d.lstrip("-").isdigit()]
        if not numbers:
            return None
        i = numbers[0]
        layout_ok = (
            len(numbers) == 1
            and p.dims[i + 1:] == ("ss", "fs")
            and p.dims[:i] in ((), ("%",))
            and int(p.dims[i]) >= 0
        )
        if not layout_ok:
            line = self.panels[p.name].line
            raise DataFormatError(
                f"{self.source}:{line}: panel {p.name!r}: data layout {' '.join(p.dims)} (dim0, dim1, ...) is not "
                "supported; frames must be (%, ss, fs) or, module by module, (%, module, ss, fs)"
            )
        return int(p.dims[i])

    def build_region(self, name: str, values: dict[str, tuple[Any, int]]) -> BadRegion:
        kwargs = {k: val for k, (val, _) in values.items()}
        line = self.bad_lines[name]
        if "panel" in kwargs and kwargs["panel"] not in self.panels:
            raise DataFormatError(f"{self.source}:{values['panel'][1]}: '{name}/panel': "
                                  f"unknown panel {kwargs['panel']!r}")
        try:
            return BadRegion(name=name, **kwargs)
        except ConfigError as exc:
            raise DataFormatError(f"{self.source}:{line}: {exc}") from None


def parse_crystfel_geom(text: str, *, source: str = "<string>") -> DetectorGeometry:
    """Parse the text of a CrystFEL geometry file (see :func:`read_crystfel_geom`)."""
    return _Parser(text, source).parse()


def read_crystfel_geom(path: str | os.PathLike[str]) -> DetectorGeometry:
    """Read a CrystFEL geometry file.

    Parameters
    ----------
    path : str or path-like
        The ``.geom`` file.

    Returns
    -------
    DetectorGeometry
        Panels in file order, bad regions, the wavelength when the file gives a number (else
        :attr:`~braggml.geometry.DetectorGeometry.beam_metadata` names where it is read from).

    Raises
    ------
    InputNotFoundError
        The file does not exist.
    DataFormatError
        A value cannot be read, a panel lacks a required key (``min_fs``, ``max_fs``, ``min_ss``,
        ``max_ss``, ``corner_x``, ``corner_y``, ``fs``, ``ss``, ``res``) or there are no panels; the message
        names the file, the line and the key.

    Warns
    -----
    UserWarning
        For unknown keys, and for a wavelength or camera length to be read from the data files.
    """
    p = Path(os.fspath(path))
    if not p.is_file():
        raise InputNotFoundError(f"geometry file {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataFormatError(f"cannot read geometry file {str(p)!r}: {exc.strerror or exc}") from exc
    return parse_crystfel_geom(text, source=str(p))


def _fmt_vector(v: Iterable[float]) -> str:
    x, y, z = v
    out = f"{x:+.8f}x {y:+.8f}y"
    return out + (f" {z:+.8f}z" if z else "")


def _clen_line(prefix: str, clen_m: float | None, meta: MetadataRef | None) -> list[str]:
    if clen_m is not None:
        return [f"{prefix}clen = {clen_m:.10g} m"]
    if meta is not None:
        return [f"{prefix}clen = {meta.location} {meta.unit}"]
    return []


def module_first_row(geometry: DetectorGeometry, panel: Panel) -> int:
    """First stacked row of the module a panel lies on (0 for frames that are not stored module by module)."""
    if geometry.module_rows is None:
        return 0
    return (panel.min_ss // geometry.module_rows) * geometry.module_rows


def format_crystfel_geom(geometry: DetectorGeometry) -> str:
    """The text of a CrystFEL geometry file describing ``geometry`` (every panel key written explicitly)."""
    lines = ["; CrystFEL geometry written by braggml"]
    if geometry.wavelength_a is not None:
        lines.append(f"wavelength = {geometry.wavelength_a:.8g} A")
    elif geometry.beam_metadata is not None:
        b = geometry.beam_metadata
        lines.append(f"{b.quantity} = {b.location} {b.unit}")
    if geometry.bandwidth is not None:
        lines.append(f"bandwidth = {geometry.bandwidth:.8g}")
    clens = {(p.clen_m, p.clen_metadata) for p in geometry.panels}
    shared_clen = len(clens) == 1
    if shared_clen:
        lines.extend(_clen_line("", *clens.pop()))
    lines.append("")
    for p in geometry.panels:
        n = p.name
        if not shared_clen:
            lines.extend(_clen_line(f"{n}/", p.clen_m, p.clen_metadata))
        if p.data is not None:
            lines.append(f"{n}/data = {p.data}")
        if p.dims is not None:
            lines.extend(f"{n}/dim{i} = {d}" for i, d in enumerate(p.dims))
        first_row = module_first_row(geometry, p)
        lines += [
            f"{n}/min_fs = {p.min_fs}",
            f"{n}/max_fs = {p.max_fs}",
            f"{n}/min_ss = {p.min_ss - first_row}",
            f"{n}/max_ss = {p.max_ss - first_row}",
            f"{n}/fs = {_fmt_vector(p.fs_vector)}",
            f"{n}/ss = {_fmt_vector(p.ss_vector)}",
            f"{n}/corner_x = {p.corner_x:.10g}",
            f"{n}/corner_y = {p.corner_y:.10g}",
            f"{n}/res = {p.res_px_per_m:.10g}",
            f"{n}/coffset = {p.coffset_m:.10g}",
        ]
        for key, value in (("adu_per_photon", p.adu_per_photon), ("adu_per_eV", p.adu_per_ev),
                           ("max_adu", p.max_adu), ("flag_lessthan", p.flag_lessthan),
                           ("flag_morethan", p.flag_morethan), ("flag_equal", p.flag_equal)):
            if value is not None:
                lines.append(f"{n}/{key} = {value:.10g}")
        if p.mask_edge_pixels:
            lines.append(f"{n}/mask_edge_pixels = {p.mask_edge_pixels}")
        if p.bad:
            lines.append(f"{n}/no_index = 1")
        for i, m in enumerate(p.masks):
            lines.append(f"{n}/mask{i}_data = {m.dataset}")
            if m.file is not None:
                lines.append(f"{n}/mask{i}_file = {m.file}")
            lines.append(f"{n}/mask{i}_goodbits = {m.good_bits:#x}")
            lines.append(f"{n}/mask{i}_badbits = {m.bad_bits:#x}")
        lines.append("")
    for r in geometry.bad_regions:
        if r.is_fsss:
            first_row = 0 if r.panel is None else module_first_row(geometry, geometry.panel(r.panel))
            lines += [f"{r.name}/{k} = {getattr(r, k)}" for k in ("min_fs", "max_fs")]
            lines += [f"{r.name}/{k} = {getattr(r, k) - first_row}" for k in ("min_ss", "max_ss")]
        else:
            lines += [f"{r.name}/{k} = {getattr(r, k):.10g}" for k in ("min_x", "max_x", "min_y", "max_y")]
        if r.panel is not None:
            lines.append(f"{r.name}/panel = {r.panel}")
        lines.append("")
    return "\n".join(lines)


def write_crystfel_geom(geometry: DetectorGeometry, path: str | os.PathLike[str]) -> None:
    """Write ``geometry`` as a CrystFEL geometry file (atomically).

    A detector-wide :attr:`~braggml.geometry.DetectorGeometry.mask` array cannot be expressed in the text
    format and is not written.
    """
    with atomic_output(path, mode="w") as fh:
        fh.write(format_crystfel_geom(geometry))


def _mask_file(geometry: DetectorGeometry, name: str) -> Path:
    path = Path(name)
    if path.is_file() or path.is_absolute() or geometry.source is None:
        return path
    beside = Path(geometry.source).parent / path
    return beside if beside.is_file() else path


def read_geometry_masks(
    geometry: DetectorGeometry,
    shape: tuple[int, int] | None = None,
    *,
    data_file: str | os.PathLike[str] | None = None,
) -> NDArray[np.bool_] | None:
    """Read the bad-pixel masks a geometry names (``maskN_data``/``maskN_file``, ``mask``/``mask_file``).

    Parameters
    ----------
    geometry : DetectorGeometry
        The geometry; each panel takes its rectangle of each of its masks and applies the good/bad bit tests.
    shape : (H, W) tuple of int, optional
        Frame shape (default: the geometry's :attr:`~braggml.geometry.DetectorGeometry.data_shape`).
    data_file : str or path-like, optional
        File of the frames, for masks the geometry takes from the data files (no ``maskN_file``).

    Returns
    -------
    (H, W) bool ndarray or None
        True = bad; None when the geometry names no mask. Combine it with
        :meth:`~braggml.geometry.DetectorGeometry.with_mask` to have it in the pixel maps.

    Raises
    ------
    ConfigError
        A mask is in the data files and no ``data_file`` is given, or its path holds a ``%`` placeholder
        (a per-frame mask).
    InputNotFoundError
        A mask file or dataset does not exist (relative file names are tried from the working directory, then
        beside the geometry file).
    DataFormatError
        A mask array is not 2-D or does not cover a panel.
    """
    height, width = geometry.data_shape if shape is None else (int(shape[0]), int(shape[1]))
    out = np.zeros((height, width), bool)
    cache: dict[tuple[str, str], NDArray[Any]] = {}
    found = False
    for p in geometry.panels:
        for spec in p.masks:
            name = spec.file if spec.file is not None else (os.fspath(data_file) if data_file is not None else None)
            if name is None:
                raise ConfigError(
                    f"geometry panel {p.name!r} reads its mask {spec.dataset!r} from the data files; "
                    "give the data file"
                )
            if "%" in spec.dataset:
                raise ConfigError(
                    f"geometry panel {p.name!r}: per-frame mask {spec.dataset!r} (with '%') is not supported"
                )
            path = _mask_file(geometry, name)
            key = (str(path), spec.dataset)
            if key not in cache:
                cache[key] = _read_mask_array(path, spec.dataset)
            array = cache[key]
            if array.shape[0] <= p.max_ss or array.shape[1] <= p.max_fs:
                raise DataFormatError(
                    f"{path}::{spec.dataset}: mask of shape {array.shape} does not cover panel {p.name!r} "
                    f"(rows {p.min_ss}..{p.max_ss}, columns {p.min_fs}..{p.max_fs})"
                )
            if p.max_ss >= height or p.max_fs >= width:
                raise ConfigError(f"geometry panel {p.name!r} lies outside frames of shape {(height, width)}")
            block = (slice(p.min_ss, p.max_ss + 1), slice(p.min_fs, p.max_fs + 1))
            out[block] |= spec.bad_pixels(array[block])
            found = True
    return out if found else None


def _read_mask_array(path: Path, dataset: str) -> NDArray[Any]:
    if not path.is_file():
        raise InputNotFoundError(f"mask file {str(path)!r} named by the geometry does not exist")
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise DataFormatError(f"{path}: cannot read the mask file as HDF5 ({exc})") from None
    with f:
        node = f.get(dataset)
        if not isinstance(node, h5py.Dataset):
            raise InputNotFoundError(f"{path}::{dataset}: no such mask dataset")
        array = np.asarray(node[()])
    array = stack_modules(array, None, f"{path}::{dataset}: mask")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.bool_)):
        if not np.issubdtype(array.dtype, np.floating) or not np.all(array == np.rint(array)):
            raise DataFormatError(f"{path}::{dataset}: mask must hold integer bit values, got {array.dtype}")
    return array
