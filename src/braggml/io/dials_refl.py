"""DIALS reflection tables (``.refl``): peak lists that ``dials.index`` takes in place of ``dials.find_spots``.

A ``.refl`` file is a MessagePack document, ``["dials::af::reflection_table", 1, {"identifiers": {id: text},
"nrows": N, "data": {column: [type, [N, bytes]]}}]``, each column one little-endian array. The columns written
are those ``dials.find_spots`` writes for its strong spots, less the shoeboxes (pixel values, which indexing
does not use):

- ``xyzobs.px.value`` (``vec3<double>``): ``x = col + 0.5``, ``y = row + 0.5`` (DIALS measures from the outer
  corner of the first pixel, as CrystFEL does), ``z = frame + 0.5`` (the image within its image set);
- ``xyzobs.px.variance``: 1/12 px² on each axis, the variance of a position known to a pixel (DIALS' own floor);
- ``bbox`` (``int6``: x0, x1, y0, y1, z0, z1), a box of about the peak's pixel count around it, on its image;
- ``intensity.sum.value`` and ``.variance`` (from the peak's SNR), ``n_signal`` (its pixel count), ``flags``
  (``strong``);
- ``panel``: 0, the frame being one DIALS panel, unless the experiment list gives a detector of several panels
  that each cover a block of the image (``raw_image_offset``, as ``dials.import`` gives a Pilatus 12M's 24
  modules or a NeXus detector's modules): then each peak's panel, and ``x``, ``y`` within it
  (:class:`DialsPanels`);
- ``id``: the experiment of each peak. Serial frames imported by ``dials.import`` are stills, one experiment per
  image, so by default ``id = frame``. For a rotation sequence (one experiment) give ``layout="sequence"``, or the
  ``imported.expt`` of the frames (``experiments=``), which also gives the experiments' identifiers.

Reading takes such a file (``dials.find_spots`` output included) back as a :class:`~braggml.peaks.PeakList`, so
DIALS' spots can be compared with braggml's (``braggml evaluate --truth strong.refl``). Spots on several panels
need the experiment list to be placed on the image.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError, DataFormatError
from ..peaks import PeakList
from .atomic import atomic_output

__all__ = [
    "write_refl",
    "read_refl",
    "describe_refl",
    "experiment_layout",
    "experiment_panels",
    "DialsPanels",
    "REFL_TAG",
]

#: First element of every DIALS reflection-table file.
REFL_TAG = "dials::af::reflection_table"
_VERSION = 1
_STRONG = 1 << 5  # dials.array_family.flex.reflection_table.flags.strong
_INDEXED = 1 << 2  # ... .flags.indexed

# DIALS column types: numpy dtype and values per row
_TYPES: dict[str, tuple[str, int]] = {
    "double": ("<f8", 1),
    "int": ("<i4", 1),
    "std::size_t": ("<u8", 1),
    "bool": ("u1", 1),
    "vec3<double>": ("<f8", 3),
    "vec2<double>": ("<f8", 2),
    "int6": ("<i4", 6),
    "cctbx::miller::index<>": ("<i4", 3),
}

Layout = Literal["stills", "sequence"]


def _msgpack() -> Any:
    try:
        import msgpack
    except ImportError:  # pragma: no cover - a dependency of braggml
        raise DataFormatError("DIALS reflection tables need msgpack: pip install msgpack") from None
    return msgpack


@dataclass(frozen=True, eq=False)
class DialsPanels:
    """Where the panels of a DIALS detector lie in the image: each a block of ``size`` pixels whose first pixel
    is at ``origin`` (DIALS' ``raw_image_offset`` and ``image_size``, turned to rows and columns).

    Attributes
    ----------
    names : tuple of str
        Panel names, in DIALS' order (the ``panel`` column's numbers).
    origin : (P, 2) int64 ndarray
        ``(row, col)`` of each panel's first pixel in the image.
    size : (P, 2) int64 ndarray
        ``(rows, cols)`` of each panel.

    Examples
    --------
    >>> panels = DialsPanels(("a", "b"), np.array([[0, 0], [10, 0]]), np.array([[8, 20], [8, 20]]))
    >>> panels.locate(np.array([3.2, 12.4, 8.7]), np.array([5.0, 19.4, 2.0])).tolist()  # row 9 lies in the gap
    [0, 1, -1]
    """

    names: tuple[str, ...]
    origin: NDArray[np.int64]
    size: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.names)

    def locate(self, row: NDArray[np.float64], col: NDArray[np.float64]) -> NDArray[np.int64]:
        """The panel holding the pixel of each position (pixel centres at integers), -1 outside every panel."""
        r = np.floor(np.asarray(row, np.float64) + 0.5)[:, None]
        c = np.floor(np.asarray(col, np.float64) + 0.5)[:, None]
        lo, hi = self.origin[None, :, :], (self.origin + self.size)[None, :, :]
        inside = (r >= lo[..., 0]) & (r < hi[..., 0]) & (c >= lo[..., 1]) & (c < hi[..., 1])
        return np.where(inside.any(axis=1), np.argmax(inside, axis=1), -1).astype(np.int64)


def _load_experiments(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    from ..errors import InputNotFoundError

    p = Path(os.fspath(path))
    if not p.is_file():
        raise InputNotFoundError(f"DIALS experiment list {str(p)!r} does not exist")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(doc["experiment"], list):
            raise TypeError("experiment")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataFormatError(f"{p}: not a DIALS experiment list (.expt JSON): {exc}") from None
    if not doc["experiment"]:
        raise DataFormatError(f"{p}: the experiment list holds no experiment")
    return p, doc


def experiment_panels(path: str | os.PathLike[str]) -> DialsPanels | None:
    """The panels of the (first) detector of a DIALS experiment list, placed on the image; None when the list
    holds no detector.

    Raises
    ------
    InputNotFoundError, DataFormatError
        No such file, not an experiment list, an unreadable detector, or panels that do not lie in one image
        without overlapping (detectors whose panels come from separate image arrays, as CSPAD read by cctbx,
        give every panel the offset 0).
    """
    p, doc = _load_experiments(path)
    if not doc.get("detector"):
        return None
    try:
        panels = doc["detector"][0]["panels"]
        names = tuple(str(q.get("name", k)) for k, q in enumerate(panels))
        # DIALS gives (fast, slow); rows are slow
        origin = np.array([q.get("raw_image_offset", (0, 0))[::-1] for q in panels], np.int64).reshape(-1, 2)
        size = np.array([q["image_size"][::-1] for q in panels], np.int64).reshape(-1, 2)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise DataFormatError(f"{p}: the experiment list holds no readable detector ({type(exc).__name__})") from None
    if not names or (size < 1).any() or (origin < 0).any():
        raise DataFormatError(f"{p}: the detector has no panel, or a panel of no pixels or a negative offset")
    lo, hi = origin, origin + size
    overlap = (lo[:, None, :] < hi[None, :, :]).all(axis=2) & (lo[None, :, :] < hi[:, None, :]).all(axis=2)
    np.fill_diagonal(overlap, False)
    if overlap.any():
        a, b = (int(k) for k in np.argwhere(overlap)[0])
        raise DataFormatError(
            f"{p}: panels {names[a]!r} and {names[b]!r} overlap in the image (raw_image_offset); their spots "
            "cannot be placed on one frame"
        )
    return DialsPanels(names, origin, size)


def experiment_layout(path: str | os.PathLike[str]) -> tuple[Layout, dict[int, str]]:
    """The layout and experiment identifiers of a DIALS experiment list (``imported.expt``).

    Returns
    -------
    layout : {"stills", "sequence"}
        "sequence" for one experiment over a rotation sequence, else "stills" (one experiment per image).
    identifiers : dict of int to str
        Experiment number to identifier, for the reflection table's ``identifiers``.

    Raises
    ------
    InputNotFoundError, DataFormatError
    """
    _p, doc = _load_experiments(path)
    experiments, imagesets = doc["experiment"], doc.get("imageset") or []
    identifiers = {i: str(e.get("identifier", "")) for i, e in enumerate(experiments)}
    if not all(identifiers.values()):
        identifiers = {}
    sequence = len(experiments) == 1 and any(s.get("__id__") == "ImageSequence" for s in imagesets)
    return ("sequence" if sequence else "stills"), identifiers


def write_refl(
    peaks: PeakList,
    path: str | os.PathLike[str],
    *,
    layout: Layout = "stills",
    identifiers: dict[int, str] | None = None,
    panels: DialsPanels | None = None,
) -> Path:
    """Write a peak list as a DIALS reflection table of strong spots (atomically); see the module docstring.

    Parameters
    ----------
    peaks : PeakList
        The run's peaks.
    path : str or path-like
        The ``.refl`` file.
    layout : {"stills", "sequence"}
        One experiment per frame (``id = frame``), or one rotation sequence (``id = 0``).
    identifiers : dict of int to str, optional
        Experiment identifiers (from the ``.expt`` file the table goes with, see :func:`experiment_layout`).
    panels : DialsPanels, optional
        The DIALS detector's panels (:func:`experiment_panels`): each peak is written on the panel holding it,
        in that panel's pixels. Peaks outside every panel are left out, with a warning. Without it, or with one
        panel at the image's origin, every peak is on panel 0 in image pixels.

    Returns
    -------
    pathlib.Path
    """
    if layout not in ("stills", "sequence"):
        raise ConfigError(f"layout must be 'stills' or 'sequence', got {layout!r}")
    panel = np.zeros(len(peaks), np.int64)
    if panels is not None and (len(panels) > 1 or panels.origin.any()):
        panel = panels.locate(peaks.row, peaks.col)
        outside = panel < 0
        if outside.any():
            warnings.warn(
                f"{os.fspath(path)}: {int(outside.sum())} peaks lie outside every panel of the DIALS detector "
                "and are left out",
                stacklevel=2,
            )
            peaks, panel = peaks.take(~outside), panel[~outside]
    offset = panels.origin[panel] if panels is not None else np.zeros((len(panel), 2), np.int64)
    n = len(peaks)
    frame = peaks.frame.astype(np.int64)
    x, y = peaks.col + 0.5 - offset[:, 1], peaks.row + 0.5 - offset[:, 0]
    half = np.maximum(1, np.ceil(np.sqrt(np.maximum(peaks.n_pixels, 1)) / 2.0)).astype(np.int64)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    bbox = np.stack([x0 - half, x0 + half + 1, y0 - half, y0 + half + 1, frame, frame + 1], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = np.where(peaks.snr > 0, (peaks.intensity / peaks.snr) ** 2, np.abs(peaks.intensity))
    ids = frame if layout == "stills" else np.zeros(n, np.int64)
    if identifiers:
        missing = sorted(set(np.unique(ids).tolist()) - set(identifiers))
        if missing:
            raise ConfigError(
                f"the experiment list has {len(identifiers)} experiments, but peaks lie on frame {missing[0]}"
            )
        identifiers = {int(k): identifiers[int(k)] for k in np.unique(ids)} if layout == "sequence" else identifiers
    columns: dict[str, tuple[str, NDArray[Any]]] = {
        "bbox": ("int6", bbox),
        "flags": ("std::size_t", np.full(n, _STRONG)),
        "id": ("int", ids),
        "intensity.sum.value": ("double", peaks.intensity),
        "intensity.sum.variance": ("double", np.nan_to_num(variance, nan=0.0)),
        "n_signal": ("int", peaks.n_pixels),
        "panel": ("std::size_t", panel),
        "xyzobs.px.value": ("vec3<double>", np.stack([x, y, frame + 0.5], axis=1)),
        "xyzobs.px.variance": ("vec3<double>", np.full((n, 3), 1.0 / 12.0)),
    }
    data = {}
    for name, (kind, values) in columns.items():
        dtype, _width = _TYPES[kind]
        data[name] = [kind, [n, np.ascontiguousarray(values, dtype=dtype).tobytes()]]
    document = [REFL_TAG, _VERSION, {"identifiers": dict(identifiers or {}), "nrows": n, "data": data}]
    packed = _msgpack().packb(document, use_bin_type=True)
    out = Path(os.fspath(path))
    with atomic_output(out) as tmp:
        Path(tmp).write_bytes(packed)
    return out


def _column(data: dict[str, Any], name: str, n: int, where: str) -> NDArray[Any] | None:
    entry = data.get(name)
    if entry is None:
        return None
    try:
        kind, (count, blob) = entry
        dtype, width = _TYPES[kind]
    except (KeyError, TypeError, ValueError):
        raise DataFormatError(f"{where}: column {name!r} is not a DIALS column of a known type") from None
    values = np.frombuffer(blob, dtype=dtype)
    if count != n or values.size != n * width:
        raise DataFormatError(f"{where}: column {name!r} holds {values.size // width} rows, the table {n}")
    return values.reshape(n, width) if width > 1 else values


def _load_table(p: Path) -> tuple[Any, dict[str, Any]]:
    """(version, table) of a reflection-table file; the table's ``nrows`` made an int."""
    try:
        tag, version, table = _msgpack().unpackb(p.read_bytes(), raw=False, strict_map_key=False)
        table["nrows"] = int(table["nrows"])
        if not isinstance(table["data"], dict):
            raise TypeError("data")
    except Exception as exc:  # msgpack raises many types for other files
        raise DataFormatError(f"{p}: not a DIALS reflection table ({type(exc).__name__})") from None
    if tag != REFL_TAG:
        raise DataFormatError(f"{p}: not a DIALS reflection table (it starts {str(tag)[:40]!r})")
    return version, table


def read_refl(path: str | os.PathLike[str], *, panels: DialsPanels | None = None) -> PeakList:
    """Read a DIALS reflection table as a peak list (``frame`` = image of ``z``; ``row = y - 0.5``,
    ``col = x - 0.5``, plus the panel's origin; ``intensity.sum.value``; ``n_signal`` as the pixel count).

    Parameters
    ----------
    path : str or path-like
        The ``.refl`` file.
    panels : DialsPanels, optional
        The detector's panels (:func:`experiment_panels` of the ``.expt`` the table goes with), which place the
        spots of each panel on the image. Without it every spot must lie on panel 0.

    Raises
    ------
    DataFormatError
        Not a reflection table, no ``xyzobs.px.value`` column, spots on several panels without ``panels``, or a
        panel number ``panels`` lacks.
    """
    p = Path(os.fspath(path))
    _version, table = _load_table(p)
    n, data = table["nrows"], table["data"]
    xyz = _column(data, "xyzobs.px.value", n, str(p))
    if xyz is None:
        raise DataFormatError(f"{p}: the reflection table has no xyzobs.px.value column (observed positions)")
    panel = _column(data, "panel", n, str(p))
    panel = np.zeros(n, np.int64) if panel is None else panel.astype(np.int64)
    offset = np.zeros((n, 2), np.int64)
    if n and panels is not None:
        if int(panel.max()) >= len(panels):
            raise DataFormatError(
                f"{p}: spots lie on panel {int(panel.max())}, the DIALS detector has {len(panels)} panels"
            )
        offset = panels.origin[panel]
    elif n and int(panel.max()) > 0:
        raise DataFormatError(
            f"{p}: spots lie on {int(panel.max()) + 1} detector panels; give the experiment list they go with "
            "(--dials-expt imported.expt) to place them on the frame"
        )
    intensity = _column(data, "intensity.sum.value", n, str(p))
    n_signal = _column(data, "n_signal", n, str(p))
    frame = np.floor(xyz[:, 2]).astype(np.int64) if n else np.zeros(0, np.int64)
    columns: dict[str, Any] = {
        "frame": frame,
        "row": xyz[:, 1] - 0.5 + offset[:, 0],
        "col": xyz[:, 0] - 0.5 + offset[:, 1],
    }
    if intensity is not None:
        columns["intensity"] = intensity
    if n_signal is not None:
        columns["n_pixels"] = n_signal
    return PeakList.from_columns(**columns)


def describe_refl(path: str | os.PathLike[str]) -> str:
    """A few lines on a DIALS reflection table: rows, columns and their types, experiments, images, panels and
    how many rows are flagged strong or indexed."""
    p = Path(os.fspath(path))
    version, table = _load_table(p)
    n, data = table["nrows"], table["data"]
    lines = [f"{p}  (DIALS reflection table, version {version}, {p.stat().st_size:,} bytes)", f"{'rows:':<15} {n}"]
    ids = _column(data, "id", n, str(p)) if "id" in data and data["id"][0] in _TYPES else None
    if ids is not None and n:
        lines.append(f"{'experiments:':<15} {len(np.unique(ids))} (ids {int(ids.min())}..{int(ids.max())})")
    identifiers = table.get("identifiers") or {}
    if identifiers:
        lines.append(f"{'identifiers:':<15} {len(identifiers)}")
    xyz = _column(data, "xyzobs.px.value", n, str(p))
    if xyz is not None and n:
        images = np.floor(xyz[:, 2]).astype(np.int64)
        lines.append(f"{'images:':<15} {len(np.unique(images))} (z {int(images.min())}..{int(images.max())})")
    panel = _column(data, "panel", n, str(p))
    if panel is not None and n:
        lines.append(f"{'panels:':<15} {len(np.unique(panel))}")
    flags = _column(data, "flags", n, str(p))
    if flags is not None:
        lines.append(f"{'strong:':<15} {int(np.count_nonzero(flags & _STRONG))}")
        lines.append(f"{'indexed:':<15} {int(np.count_nonzero(flags & _INDEXED))}")
    columns = ", ".join(f"{name} ({entry[0]})" for name, entry in sorted(data.items()))
    lines.append(f"{'columns:':<15} {columns}")
    return "\n".join(lines)
