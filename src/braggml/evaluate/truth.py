"""Ground truth for scoring: a simulated file's truth group, or any peak list (CXI, stream, CSV)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ..errors import DataFormatError
from ..peaks import PeakList

__all__ = ["Truth", "load_truth"]


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


def load_truth(path: str | Path, *, min_snr: float | None = None) -> Truth:
    """Read the truth of a run from a braggml simulated file or from any peak list braggml reads.

    ``min_snr`` keeps only simulated truth spots with at least that expected SNR (ignored for peak lists); the
    others become :attr:`Truth.optional`.
    """
    from ..io.peaklists import read_peaks
    from ..io.simfile import read_truth

    path = Path(path)
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
    peaks = read_peaks(path)
    return Truth(peaks, None, None, f"peak list {path}")
