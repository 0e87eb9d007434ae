"""Small CXI runs with Gaussian spots at known places (frames, files and damage) for the parallel tests."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

SHAPE = (96, 112)


def spots_of(frame: int) -> list[tuple[float, float]]:
    """Spot centres (row, col) of frame ``frame``: a few, moving from frame to frame; every 5th frame is empty."""
    if frame % 5 == 4:
        return []
    n = 2 + frame % 3
    return [(15.3 + 20.0 * i + (frame % 4), 20.6 + 17.0 * i + 2.0 * (frame % 3)) for i in range(n)]


def make_frames(n: int, *, first: int = 0, seed: int = 0) -> np.ndarray:
    rows, cols = np.indices(SHAPE)
    rng = np.random.default_rng(seed + first)
    out = np.empty((n, *SHAPE), np.int32)
    for k in range(n):
        image = np.full(SHAPE, 20.0)
        for r, c in spots_of(first + k):
            image += 900.0 * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / 2.0)
        out[k] = rng.poisson(image)
    return out


def write_cxi(path: Path, n: int, *, first: int = 0) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "entry_1/data_1/data", data=make_frames(n, first=first), chunks=(1, *SHAPE), compression="gzip"
        )
    return path


def corrupt_frame(path: Path, index: int) -> None:
    """Overwrite the compressed bytes of frame ``index`` with garbage, as a damaged disk block would."""
    with h5py.File(path, "r") as f:
        info = f["entry_1/data_1/data"].id.get_chunk_info_by_coord((index, 0, 0))
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(np.random.default_rng(7).integers(0, 256, info.size, dtype=np.uint8).tobytes())


def crash_on_frame_3(job, start: int, stop: int):
    """A chunk task whose worker process dies on frame 3, as a crashing decompression filter would."""
    import os

    from braggml.parallel.worker import process_chunk

    if start <= 3 < stop:
        os._exit(3)
    return process_chunk(job, start, stop)
