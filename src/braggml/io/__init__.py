"""Reading detector frames and masks: HDF5 (CXI, NeXus, Cheetah, Eiger), CBF, TIFF, .npy and .npz.

This package is the only part of braggml that imports h5py, hdf5plugin and fabio.
"""

from __future__ import annotations

from .atomic import atomic_output
from .describe import describe, format_description
from .frames import Frame, FrameSource, expand_inputs, open_frame_groups, open_frames
from .geom import parse_crystfel_geom, read_crystfel_geom, read_geometry_masks, write_crystfel_geom
from .masks import (
    DETECTOR_KINDS,
    PILATUS_OVERLOAD,
    DetectorKind,
    detector_kind_from_text,
    guess_detector_kind,
    invalid_pixels,
    load_mask,
)
from .metadata import GeometryHint, geometry_hint
from .peaklists import PEAK_FORMATS, peak_format, read_event_list, read_peaks, write_event_list, write_peaks

__all__ = [
    "PEAK_FORMATS",
    "GeometryHint",
    "geometry_hint",
    "atomic_output",
    "parse_crystfel_geom",
    "peak_format",
    "read_crystfel_geom",
    "read_event_list",
    "read_geometry_masks",
    "read_peaks",
    "write_crystfel_geom",
    "write_event_list",
    "write_peaks",
    "DETECTOR_KINDS",
    "PILATUS_OVERLOAD",
    "DetectorKind",
    "Frame",
    "FrameSource",
    "describe",
    "detector_kind_from_text",
    "expand_inputs",
    "format_description",
    "guess_detector_kind",
    "invalid_pixels",
    "load_mask",
    "open_frame_groups",
    "open_frames",
]
