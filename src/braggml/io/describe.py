"""What a detector file holds, for ``braggml info FILE``: datasets, the frame dataset, masks, detector."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import DataFormatError, InputNotFoundError
from . import cbf as _cbf
from . import hdf5 as _hdf5
from .frames import _npz_headers, _sniff, is_event_list, open_frames
from .masks import detector_kind_from_text, split_spec
from .metadata import GeometryHint

__all__ = ["describe", "format_description"]


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Summarise a frame file.

    Parameters
    ----------
    path : str or Path
        The file, optionally ``FILE::/dataset``.

    Returns
    -------
    dict
        ``file``, ``format``, ``size_bytes``; ``datasets`` (HDF5: list of dicts with ``path``, ``shape``,
        ``dtype``, ``chunks``, ``filters``, ``link``; ``.npz``: arrays); ``frame_dataset``, ``n_frames``,
        ``frame_shape``, ``dtype``, ``masks``, ``detector``, ``detector_kind`` (with
        ``detector_kind_from``: ``'metadata'`` or ``'values'``), ``saturation``; ``geometry`` (what the file
        states about its geometry, see :func:`braggml.io.metadata.geometry_hint`: ``beam_center_rowcol``,
        ``pixel_size_mm``, ``distance_mm``, ``wavelength_a``, ``radius_map_shape``, ``source`` and a one-line
        ``summary``; None when it states nothing); ``cbf_header`` for CBF;
        ``problem`` (one line) when the frames cannot be read.

    Raises
    ------
    InputNotFoundError
        When the file does not exist.
    DataFormatError
        When it is not a readable HDF5/CBF/TIFF/.npy/.npz file.
    """
    text = os.fspath(path)
    file, dataset = split_spec(text)
    p = Path(file)
    if not p.exists():
        raise InputNotFoundError(f"{file}: no such file")
    if p.is_dir():
        raise DataFormatError(f"{file}: is a folder, not a file")
    kind = "event list" if is_event_list(file) else _sniff(file)
    info: dict[str, Any] = {
        "file": file,
        "format": kind,
        "size_bytes": p.stat().st_size,
        "datasets": [],
        "frame_dataset": None,
        "n_frames": None,
        "frame_shape": None,
        "dtype": None,
        "masks": [],
        "detector": "",
        "detector_kind": None,
        "detector_kind_from": None,
        "saturation": None,
        "geometry": None,
    }
    if kind == "hdf5":
        with _hdf5.open_hdf5(file) as h5:
            info["datasets"] = [
                {
                    "path": d.path,
                    "shape": d.shape,
                    "dtype": d.dtype,
                    "chunks": d.chunks,
                    "filters": list(d.filters),
                    "link": d.link,
                }
                for d in _hdf5.list_datasets(h5)
            ]
            info["masks"] = _hdf5.find_mask_paths(h5)
    elif kind == "npz":
        headers = _npz_headers(file)
        info["datasets"] = [
            {"path": k, "shape": s, "dtype": str(t), "chunks": None, "filters": [], "link": ""}
            for k, (s, t) in headers.items()
        ]
    elif kind == "cbf":
        info["cbf_header"] = _cbf.read_cbf_header(file).essentials()
    try:
        with open_frames(text) as source:
            first = source._files[0]
            segments = getattr(first, "_segments", None)
            if segments:
                paths = [s[0] for s in segments]
                info["frame_dataset"] = paths[0] if len(paths) == 1 else paths
            elif first.n_frames and first.ref(0).dataset:
                info["frame_dataset"] = first.ref(0).dataset
            info["n_frames"] = len(source)
            if kind == "event list":
                info["files_named"] = len(dict.fromkeys(source.files))
            info["frame_shape"] = source.shape
            info["dtype"] = str(source.dtype)
            info["detector"] = first.kind_text
            from_text = detector_kind_from_text(first.kind_text)
            info["detector_kind"] = source.detector_kind
            info["detector_kind_from"] = "metadata" if from_text is not None else "values"
            info["saturation"] = source.saturation
            hint = source.geometry_hint()
            info["geometry"] = None if hint is None else _hint_dict(hint)
    except DataFormatError as exc:
        info["problem"] = str(exc)
    return info


def _hint_dict(hint: GeometryHint) -> dict[str, Any]:
    radius = hint.radius_px
    return {
        "beam_center_rowcol": hint.beam_center_rowcol,
        "pixel_size_mm": hint.pixel_size_mm,
        "distance_mm": hint.distance_mm,
        "wavelength_a": hint.wavelength_a,
        "radius_map_shape": None if radius is None else tuple(int(n) for n in radius.shape),
        "source": hint.source,
        "summary": hint.summary(),
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        return "(" + ", ".join(_fmt(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _clip(text: str | None, n: int = 100) -> str | None:
    if text is None or len(text) <= n:
        return text
    return text[: n - 3] + "..."


def format_description(info: dict[str, Any]) -> str:
    """Human-readable text of :func:`describe`'s dict."""
    lines = [f"{info['file']}  ({info['format']}, {info['size_bytes']:,} bytes)"]
    datasets = info.get("datasets") or []
    if datasets:
        lines.append("datasets:")
        width = min(max(len(d["path"]) for d in datasets), 60)
        for d in datasets:
            extra = []
            if d.get("chunks"):
                extra.append(f"chunks {_fmt(tuple(d['chunks']))}")
            if d.get("filters"):
                extra.append("filters " + ", ".join(d["filters"]))
            if d.get("link"):
                extra.append(f"-> {d['link']}")
            lines.append(
                f"  {d['path']:<{width}}  {_fmt(tuple(d['shape'])):<20} {d['dtype']:<8} {'  '.join(extra)}".rstrip()
            )
    header = info.get("cbf_header")
    if header:
        lines.append("CBF header:")
        for key, value in header.items():
            lines.append(f"  {key:<16} {_fmt(value)}")
    frame_dataset = info.get("frame_dataset")
    if isinstance(frame_dataset, list):
        frame_dataset = f"{frame_dataset[0]} ... {frame_dataset[-1]} ({len(frame_dataset)} linked datasets)"
    rows = [
        ("frame dataset", frame_dataset),
        ("frames", info.get("n_frames")),
        ("files named", info.get("files_named")),
        ("frame shape", info.get("frame_shape")),
        ("dtype", info.get("dtype")),
        ("masks", ", ".join(info.get("masks") or []) or None),
        ("detector", _clip(info.get("detector") or None)),
        (
            "detector kind",
            f"{info['detector_kind']} (from {info['detector_kind_from']})" if info.get("detector_kind") else None,
        ),
        ("saturation", info.get("saturation")),
        ("geometry", (info.get("geometry") or {}).get("summary")),
    ]
    for key, value in rows:
        lines.append(f"{key + ':':<15} {_fmt(value)}")
    if info.get("problem"):
        lines.append(f"problem:        {info['problem']}")
    return "\n".join(lines)


def describe_geometry(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a CrystFEL geometry file describes: panels, frame layout, pixel sizes, camera length, beam, masks,
    and the radius and resolution its pixels cover.

    Raises
    ------
    InputNotFoundError, DataFormatError
        As :func:`braggml.io.geom.read_crystfel_geom`.
    """
    import numpy as np

    from .geom import read_crystfel_geom

    geom = read_crystfel_geom(path)
    maps = geom.pixel_maps()
    on = maps.panel_id >= 0
    radius = maps.radius_px[on]
    resolution = None
    if maps.resolution_a is not None:
        res = maps.resolution_a[on & np.isfinite(maps.resolution_a)]
        resolution = (float(res.min()), float(res.max())) if res.size else None
    clens = sorted({p.clen_m for p in geom.panels if p.clen_m is not None})
    located = sorted({p.clen_metadata.location for p in geom.panels if p.clen_metadata is not None})
    return {
        "file": os.fspath(path),
        "n_panels": geom.n_panels,
        "data_shape": geom.data_shape,
        "module_rows": geom.module_rows,
        "pixel_sizes_um": sorted({round(p.pixel_size_m * 1e6, 3) for p in geom.panels}),
        "clen_mm": [round(c * 1e3, 4) for c in clens],
        "clen_from": located,
        "wavelength_a": geom.wavelength_a,
        "wavelength_from": geom.beam_metadata.location if geom.beam_metadata is not None else None,
        "bad_panels": [p.name for p in geom.panels if p.bad],
        "bad_regions": len(geom.bad_regions),
        "masks": sorted({(m.file or "(data file)") + "::" + m.dataset for p in geom.panels for m in p.masks}),
        "radius_px": (float(radius.min()), float(radius.max())) if radius.size else None,
        "resolution_a": resolution,
    }


def format_geometry_description(info: dict[str, Any]) -> str:
    """Human-readable text of :func:`describe_geometry`'s dict."""
    rows, cols = info["data_shape"]
    layout = f"frames of {rows} x {cols} pixels (rows x columns)"
    if info["module_rows"]:
        layout += f", stored module by module: {rows // info['module_rows']} modules of {info['module_rows']} rows"
    if info["clen_mm"]:
        clen = ", ".join(f"{c:g}" for c in info["clen_mm"]) + " mm"
    elif info["clen_from"]:
        clen = "read from the data files at " + ", ".join(info["clen_from"])
    else:
        clen = "not given (no resolution)"
    if info["wavelength_a"] is not None:
        beam = f"{info['wavelength_a']:.6g} A"
    elif info["wavelength_from"]:
        beam = f"read from the data files at {info['wavelength_from']}"
    else:
        beam = "not given (no resolution)"
    lines = [
        f"{info['file']}  (CrystFEL geometry)",
        f"{'panels:':<15} {info['n_panels']}"
        + (f" ({len(info['bad_panels'])} marked bad)" if info["bad_panels"] else ""),
        f"{'layout:':<15} {layout}",
        f"{'pixel size:':<15} " + ", ".join(f"{v:g} um" for v in info["pixel_sizes_um"]),
        f"{'camera length:':<15} {clen}",
        f"{'wavelength:':<15} {beam}",
        f"{'bad regions:':<15} {info['bad_regions']}",
        f"{'masks:':<15} " + (", ".join(info["masks"]) or "-"),
    ]
    if info["radius_px"] is not None:
        lo, hi = info["radius_px"]
        lines.append(f"{'radius:':<15} {lo:.1f} to {hi:.1f} px from the beam")
    if info["resolution_a"] is not None:
        best, worst = info["resolution_a"]
        lines.append(f"{'resolution:':<15} {worst:.2f} to {best:.2f} A")
    return "\n".join(lines)
