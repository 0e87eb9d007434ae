"""Simulate many frames into one file, streaming (a few frames in memory at a time)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..io.simfile import SimFileWriter
from .config import SimulationConfig
from .frame import FRAME_COLUMNS, SPOT_COLUMNS, SimulatedFrame, Simulator

__all__ = ["simulate_to_file"]

log = logging.getLogger(__name__)


def simulate_to_file(
    path: str | Path,
    n_frames: int,
    config: SimulationConfig | None = None,
    *,
    seed: int = 0,
    first_frame: int = 0,
    progress: bool = False,
    preset: str | None = None,
) -> Path:
    """Simulate frames ``first_frame .. first_frame + n_frames - 1`` of run ``seed`` into ``path``.

    Frames are written as they are made; the file appears under ``path`` only when complete. Shards of one
    run (different ``first_frame``, same ``seed`` and configuration) hold exactly the frames a single file
    would hold.

    Parameters
    ----------
    path : str or Path
        Output HDF5 file (layout in :mod:`braggml.io.simfile`).
    n_frames : int
        Number of frames.
    config : SimulationConfig, optional
    seed : int
    first_frame : int
        Simulator frame number of the file's first frame.
    progress : bool
        Show a progress bar.
    preset : str, optional
        Name recorded with the parameters.

    Returns
    -------
    Path
        The written file.
    """
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise ConfigError(f"n_frames must be an integer >= 1, got {n_frames!r}")
    if isinstance(first_frame, bool) or not isinstance(first_frame, (int, np.integer)) or first_frame < 0:
        raise ConfigError(f"first_frame must be an integer >= 0, got {first_frame!r}")
    sim = Simulator(config, seed=seed)
    lay = sim.layout
    parameters = sim.parameters()
    parameters["first_frame"] = int(first_frame)
    parameters["preset"] = preset
    maps = {
        "panel_id": lay.panel_id.astype(np.int16),
        "mask_reason": lay.mask_reason,
        "hot_pixel_photons": lay.hot_photons,
    }
    writer = SimFileWriter(
        path,
        n_frames=int(n_frames),
        shape=lay.shape,
        dtype=np.dtype(sim.config.detector.dtype),
        mask=lay.mask,
        spot_columns=SPOT_COLUMNS,
        frame_columns=FRAME_COLUMNS,
        parameters=parameters,
        detector_maps=maps,
        compression=sim.config.compression,
    )
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=int(n_frames), unit="frame", desc="simulate")
    n_spots = 0
    n_hits = 0
    with writer:
        for slot in range(int(n_frames)):
            frame: SimulatedFrame = sim.frame(int(first_frame) + slot)
            writer.write(
                slot,
                image=frame.image,
                footprint=frame.footprint,
                spots=frame.spots,
                info=frame.info,
                index=frame.index,
                orientations=frame.orientations,
            )
            n_spots += frame.n_spots
            n_hits += int(frame.info["hit"])
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    log.info("wrote %d frames (%d hits, %d truth spots) to %s", n_frames, n_hits, n_spots, path)
    return Path(path)
