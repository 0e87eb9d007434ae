"""Scores of a finder against ground truth: peak detection, centroids, recall by SNR and resolution, hit finding."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError
from ..peaks import HIT_MIN_PEAKS, PeakList
from .matching import Match, match_peaks

__all__ = ["Evaluation", "evaluate_peaks", "DEFAULT_SNR_BINS", "DEFAULT_RESOLUTION_SHELLS_A"]

#: Edges of the truth-SNR bins for recall (the last bin is open).
DEFAULT_SNR_BINS: tuple[float, ...] = (0.0, 3.0, 5.0, 10.0, 20.0, 50.0, np.inf)
#: Edges of the resolution shells (Angstrom, from low to high resolution; the last shell is open).
DEFAULT_RESOLUTION_SHELLS_A: tuple[float, ...] = (np.inf, 8.0, 4.0, 3.0, 2.5, 2.0, 1.5, 0.0)


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def _binned_recall(values: NDArray, matched: NDArray[np.bool_], edges: NDArray) -> list[dict[str, Any]]:
    lo_hi = list(zip(edges[:-1], edges[1:]))
    out = []
    for lo, hi in lo_hi:
        a, b = min(lo, hi), max(lo, hi)
        sel = (values >= a) & (values < b)
        n = int(sel.sum())
        out.append({"low": float(lo), "high": float(hi), "n_true": n, "recall": _ratio(matched[sel].sum(), n)})
    return out


@dataclass(frozen=True)
class Evaluation:
    """All figures of one finder on one run; :meth:`to_dict` gives them machine-readably."""

    n_frames: int
    n_found: int
    n_true: int
    true_positives: int
    n_optional: int
    precision: float
    recall: float
    f1: float
    centroid_median_px: float
    centroid_p95_px: float
    centroid_rmsd_px: float
    per_frame: dict[str, list]
    recall_by_snr: list[dict[str, Any]]
    recall_by_resolution: list[dict[str, Any]] | None
    hit_finding: dict[str, float] | None
    radius_px: float
    match: Match = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "match"}
        return _json_safe(out)

    def table_lines(self) -> list[str]:
        """A compact terminal table of the main figures."""
        lines = [
            f"frames {self.n_frames}   true peaks {self.n_true}   found {self.n_found}   matched {self.true_positives}"
            + (f"   at weaker true peaks (not scored) {self.n_optional}" if self.n_optional else "")
            + f"   (radius {self.radius_px:g} px)",
            f"precision {self.precision:.3f}   recall {self.recall:.3f}   F1 {self.f1:.3f}",
            f"centroid error: median {self.centroid_median_px:.3f} px   95% {self.centroid_p95_px:.3f} px"
            f"   RMSD {self.centroid_rmsd_px:.3f} px",
        ]
        by_snr = [
            f"[{b['low']:g},{b['high']:g}) {b['recall']:.2f} (n={b['n_true']})"
            for b in self.recall_by_snr
            if b["n_true"]
        ]
        if by_snr:  # a truth without SNRs (another finder's list) has none
            lines.append("recall by truth SNR: " + "  ".join(by_snr))
        if self.recall_by_resolution:
            lines.append(
                "recall by resolution (A): "
                + "  ".join(
                    f"{b['low']:g}-{b['high']:g} {b['recall']:.2f} (n={b['n_true']})"
                    for b in self.recall_by_resolution
                    if b["n_true"]
                )
            )
        if self.hit_finding:
            h = self.hit_finding
            lines.append(
                f"hit finding (>= {int(h['min_peaks'])} peaks): accuracy {h['accuracy']:.3f}   "
                f"precision {h['precision']:.3f}   recall {h['recall']:.3f}"
            )
        return lines


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if np.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def evaluate_peaks(
    found: PeakList,
    truth: PeakList,
    *,
    radius_px: float = 2.0,
    truth_resolution_a: NDArray[np.floating] | None = None,
    truth_is_hit: NDArray[np.bool_] | None = None,
    min_peaks: int = HIT_MIN_PEAKS,
    snr_bins: tuple[float, ...] = DEFAULT_SNR_BINS,
    resolution_shells_a: tuple[float, ...] = DEFAULT_RESOLUTION_SHELLS_A,
    optional: PeakList | None = None,
) -> Evaluation:
    """Score ``found`` against ``truth`` (same run, same frame numbering).

    Parameters
    ----------
    found, truth : PeakList
        Found and true peaks; the truth's ``snr`` column gives the SNR bins (NaN SNRs fall in no bin).
    radius_px : float
        Largest distance between a found peak and the true peak it matches.
    optional : PeakList, optional
        True peaks that are not scored, such as the reflections below the truth's SNR cut: a found peak at one
        of them (and at no scored true peak) is neither a true nor a false positive (see
        :func:`~braggml.evaluate.matching.match_peaks`). Hit finding still counts every found peak.
    truth_resolution_a : (T,) float ndarray, optional
        Resolution of each true peak, for recall by resolution shell.
    truth_is_hit : (n_frames,) bool ndarray, optional
        Which frames really are hits; by default a frame with at least one true peak.
    min_peaks : int
        A frame with at least this many found peaks is called a hit.
    """
    if min_peaks < 1:
        raise ConfigError(f"min_peaks must be >= 1, got {min_peaks}")
    m = match_peaks(found, truth, radius_px=radius_px, optional=optional)
    err = m.centroid_error_px
    n_found_pf = found.counts_per_frame()
    n_true_pf = truth.counts_per_frame()
    tp_pf = np.bincount(found.frame[m.found_index], minlength=found.n_frames)
    opt_pf = np.bincount(found.frame[m.found_optional], minlength=found.n_frames)
    scored_pf = n_found_pf - opt_pf
    per_frame = {
        "n_found": n_found_pf.tolist(),
        "n_true": n_true_pf.tolist(),
        "true_positives": tp_pf.tolist(),
        "n_optional": opt_pf.tolist(),
        "precision": [_ratio(t, f) for t, f in zip(tp_pf, scored_pf)],
        "recall": [_ratio(t, n) for t, n in zip(tp_pf, n_true_pf)],
        "f1": [_ratio(2 * t, f + n) for t, f, n in zip(tp_pf, scored_pf, n_true_pf)],
    }
    by_res = None
    if truth_resolution_a is not None:
        res = np.asarray(truth_resolution_a, float)
        if res.shape != (len(truth),):
            raise ConfigError(f"truth_resolution_a has shape {res.shape}, expected ({len(truth)},)")
        by_res = _binned_recall(res, m.truth_matched, np.asarray(resolution_shells_a, float))
    if truth_is_hit is None:
        truth_is_hit = n_true_pf > 0
    truth_is_hit = np.asarray(truth_is_hit, bool)
    if truth_is_hit.shape != (found.n_frames,):
        raise ConfigError(f"truth_is_hit has shape {truth_is_hit.shape}, expected ({found.n_frames},)")
    called = n_found_pf >= min_peaks
    tp_hits = int((called & truth_is_hit).sum())
    hit = {
        "min_peaks": float(min_peaks),
        "accuracy": _ratio((called == truth_is_hit).sum(), found.n_frames),
        "precision": _ratio(tp_hits, called.sum()),
        "recall": _ratio(tp_hits, truth_is_hit.sum()),
        "n_called": float(called.sum()),
        "n_hits": float(truth_is_hit.sum()),
    }
    return Evaluation(
        n_frames=found.n_frames,
        n_found=len(found),
        n_true=len(truth),
        true_positives=m.true_positives,
        n_optional=int(np.count_nonzero(m.found_optional)),
        precision=m.precision,
        recall=m.recall,
        f1=m.f1,
        centroid_median_px=float(np.median(err)) if err.size else float("nan"),
        centroid_p95_px=float(np.percentile(err, 95)) if err.size else float("nan"),
        centroid_rmsd_px=float(np.sqrt(np.mean(err**2))) if err.size else float("nan"),
        per_frame=per_frame,
        recall_by_snr=_binned_recall(truth.snr, m.truth_matched, np.asarray(snr_bins, float)),
        recall_by_resolution=by_res,
        hit_finding=hit,
        radius_px=float(radius_px),
        match=m,
    )
