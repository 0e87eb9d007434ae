"""Ground truth for scoring: a simulated file's truth group, or any peak list (CXI, stream, CSV)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError, DataFormatError, InputNotFoundError
from ..peaks import FrameRef, PeakList

__all__ = ["Truth", "load_truth", "truth_for"]


@dataclass(frozen=True, eq=False)
class Truth:
    """True peaks of a run and what else is known about them.

    Attributes
    ----------
    peaks : PeakList
        The true peaks (``snr`` NaN when unknown).
    resolution_a : (T,) float ndarray or None
        Resolution of each true peak, when known.
    is_hit : (n_frames,) bool ndarray or None
        Which frames are hits, when known (simulated files); otherwise frames with a true peak.
    source : str
        Where the truth came from.
    optional : PeakList or None
        Reflections that are real but not scored (a simulated file's spots below ``min_snr`` or centred on a bad
        pixel): a found peak at one of them is neither a true nor a false positive. None for peak lists.
    """

    peaks: PeakList
    resolution_a: NDArray[np.float64] | None
    is_hit: NDArray[np.bool_] | None
    source: str
    optional: PeakList | None = None


def load_truth(
    path: str | Path, *, min_snr: float | None = None, dials_experiments: str | Path | None = None
) -> Truth:
    """Read the truth of a run from a braggml simulated file or from any peak list braggml reads.

    ``min_snr`` keeps only simulated truth spots with at least that expected SNR (ignored for peak lists); the
    others become :attr:`Truth.optional`. ``dials_experiments`` places the spots of a DIALS reflection table on
    several panels (:func:`~braggml.io.peaklists.read_peaks`).
    """
    from ..io.peaklists import read_peaks
    from ..io.simfile import read_truth

    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"truth file {str(path)!r} does not exist")
    try:
        sim = read_truth(path, min_snr=min_snr)
    except DataFormatError as exc:
        if "truth group" not in str(exc) and "not an HDF5" not in str(exc):
            raise
    else:
        keep = sim.spots["observable"].astype(bool)
        if min_snr is not None:
            keep &= sim.spots["snr"] >= min_snr
        resolution = np.asarray(sim.spots["resolution_a"], float)[keep]
        order = np.argsort(sim.spots["frame"][keep], kind="stable")
        rest = ~keep
        optional = PeakList.from_columns(
            n_frames=sim.peaks.n_frames,
            frames=sim.peaks.frames,
            frame=sim.spots["frame"][rest],
            row=sim.spots["row"][rest],
            col=sim.spots["col"][rest],
            snr=sim.spots["snr"][rest],
        )
        return Truth(sim.peaks, resolution[order], sim.hit, f"simulation truth in {path}", optional)
    peaks = read_peaks(path, dials_experiments=dials_experiments)
    return Truth(peaks, None, None, f"peak list {path}")


def _frame_key(ref: FrameRef) -> tuple[str, int]:
    return Path(ref.file).name, int(ref.index)


def truth_for(truth: Truth, found: PeakList, *, found_name: str = "the peak list") -> Truth:
    """The truth of the frames of ``found``, in its order.

    A peak list of some frames of a run (found in an event list, for example) is scored against the truth of
    those frames: each frame is looked up by its file name and index when both lists record where their frames
    came from. Lists of the same length without that record are taken frame by frame.

    Raises
    ------
    ConfigError
        When the frames cannot be paired: different lengths without frame records, or a frame of ``found``
        the truth does not hold.
    """
    n_truth = truth.peaks.n_frames
    if found.frames is None or truth.peaks.frames is None:
        if found.n_frames != n_truth:
            raise ConfigError(f"{found_name} has {found.n_frames} frames but the truth {truth.source} has {n_truth}")
        return truth
    where = {_frame_key(ref): k for k, ref in enumerate(truth.peaks.frames)}
    positions = []
    for ref in found.frames:
        k = where.get(_frame_key(ref))
        if k is None:
            raise ConfigError(f"{found_name}: frame {ref} is not among the frames of the truth ({truth.source})")
        positions.append(k)
    if positions == list(range(n_truth)):
        return truth
    rows = np.concatenate([np.flatnonzero(truth.peaks.frame == k) for k in positions])
    shown = ", ".join(str(ref.index) for ref in found.frames[:3]) + (" ..." if len(positions) > 3 else "")
    optional = truth.optional
    return Truth(
        peaks=PeakList.concatenate([truth.peaks.for_frame(k) for k in positions]),
        resolution_a=None if truth.resolution_a is None else truth.resolution_a[rows],
        is_hit=None if truth.is_hit is None else truth.is_hit[positions],
        source=f"{truth.source} (frames {shown})",
        optional=None if optional is None else PeakList.concatenate([optional.for_frame(k) for k in positions]),
    )
