"""Realistic serial-crystallography frames with peak-level ground truth.

>>> from braggml.simulate import Simulator, get_preset
>>> frame = Simulator(get_preset("test"), seed=0).frame(0)
>>> frame.image.shape, sorted(frame.info)[:2]
((256, 256), ['b_factor_a2', 'background_scale'])

:func:`simulate_to_file` streams a run into an HDF5 file (layout in :mod:`braggml.io.simfile`), read back with
:func:`braggml.io.simfile.read_truth`; docs/simulation.md describes the physics, presets and truth layout.
"""

from __future__ import annotations

from .config import (
    ArtefactConfig,
    BackgroundConfig,
    BeamConfig,
    CrystalConfig,
    DetectorConfig,
    SimulationConfig,
    TruthConfig,
    apply_overrides,
    parse_set_options,
)
from .frame import FRAME_COLUMNS, SPOT_COLUMNS, SimulatedFrame, Simulator, frame_rng
from .presets import available_presets, get_preset
from .preview import preview_file, save_preview
from .run import simulate_to_file

__all__ = [
    "ArtefactConfig",
    "BackgroundConfig",
    "BeamConfig",
    "CrystalConfig",
    "DetectorConfig",
    "SimulationConfig",
    "TruthConfig",
    "apply_overrides",
    "parse_set_options",
    "FRAME_COLUMNS",
    "SPOT_COLUMNS",
    "SimulatedFrame",
    "Simulator",
    "frame_rng",
    "available_presets",
    "get_preset",
    "preview_file",
    "save_preview",
    "simulate_to_file",
]
