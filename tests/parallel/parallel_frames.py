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


def write_ring_cxi(
    path: Path,
    n: int,
    *,
    centre: tuple[float, float] = (20.3, 95.7),
    gap_cols: tuple[int, int] | None = None,
    right_offset: float = 0.0,
) -> Path:
    """Frames with a powder ring about ``centre`` (so the beam centre is refined) and the spots of
    :func:`spots_of`; with ``gap_cols`` (start, stop), those columns read -1 (a gap between two modules) and the
    module right of the gap reads ``right_offset`` more."""
    rows, cols = np.indices(SHAPE)
    r = np.hypot(rows - centre[0], cols - centre[1])
    rng = np.random.default_rng(11)
    out = np.empty((n, *SHAPE), np.int32)
    for k in range(n):
        image = 20.0 + 150.0 * np.exp(-((r - 30.0) ** 2) / 8.0)
        if gap_cols is not None:
            image[:, gap_cols[1] :] += right_offset
        for sr, sc in spots_of(k):
            image += 900.0 * np.exp(-((rows - sr) ** 2 + (cols - sc) ** 2) / 2.0)
        out[k] = rng.poisson(image)
        if gap_cols is not None:
            out[k][:, gap_cols[0] : gap_cols[1]] = -1
    with h5py.File(path, "w") as f:
        f.create_dataset("entry_1/data_1/data", data=out, chunks=(1, *SHAPE), compression="gzip")
    return path


#: Hot pixels of :func:`write_hot_cxi`: (row, col, counts added to every frame).
HOT_PIXELS = ((7, 9, 400), (50, 60, 150), (81, 100, 60))


def write_hot_cxi(path: Path, n: int, *, first: int = 0) -> Path:
    """The frames of :func:`make_frames` with the :data:`HOT_PIXELS` reading high in every frame."""
    frames = make_frames(n, first=first)
    for r, c, counts in HOT_PIXELS:
        frames[:, r, c] += counts
    with h5py.File(path, "w") as f:
        f.create_dataset("entry_1/data_1/data", data=frames, chunks=(1, *SHAPE), compression="gzip")
    return path


def chunk_without_setup_work(job, start: int, stop: int):
    """A chunk task that fails if its worker reads a frame to derive panels, refines the beam centre or searches
    for hot pixels."""
    import braggml.classical.centering as centering
    import braggml.classical.hotpixels as hotpixels
    import braggml.pipeline as pipeline
    from braggml.parallel.worker import process_chunk

    def refuse(*args, **kwargs):
        raise AssertionError("a worker repeated the run's setup (panels, beam centre or hot pixels)")

    centering.fit_beam_center = refuse
    hotpixels.find_hot_pixels = refuse
    pipeline.detector_panels = refuse
    return process_chunk(job, start, stop)
