"""One-to-one matching of found peaks to true peaks, frame by frame, and the scores that follow from it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ..errors import ConfigError
from ..peaks import PeakList

__all__ = ["Match", "match_peaks", "match_frame"]


def match_frame(
    found_rc: NDArray[np.floating], truth_rc: NDArray[np.floating], radius_px: float
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Optimal one-to-one matching of two point sets within ``radius_px``.

    Pairs closer than the radius are candidates; among them the assignment with the most pairs and, for that
    count, the smallest total distance is chosen. The problem is split into connected groups of candidate
    pairs, so thousands of peaks per frame stay fast.

    Parameters
    ----------
    found_rc, truth_rc : (N, 2) and (M, 2) float ndarrays
        (row, col) of the found and the true peaks.
    radius_px : float
        Largest distance of a match.

    Returns
    -------
    found_index, truth_index : (K,) int ndarrays
        Matched pairs, sorted by ``found_index``.

    Examples
    --------
    >>> f, t = match_frame(np.array([[0.0, 0.0], [0.0, 1.5]]), np.array([[0.0, 1.0], [9.0, 9.0]]), 2.0)
    >>> f.tolist(), t.tolist()
    ([1], [0])
    """
    if not radius_px > 0:
        raise ConfigError(f"radius_px must be > 0, got {radius_px}")
    found_rc = np.asarray(found_rc, float).reshape(-1, 2)
    truth_rc = np.asarray(truth_rc, float).reshape(-1, 2)
    empty = np.empty(0, np.int64)
    if len(found_rc) == 0 or len(truth_rc) == 0:
        return empty, empty
    pairs = cKDTree(found_rc).sparse_distance_matrix(cKDTree(truth_rc), radius_px, output_type="ndarray")
    if pairs.size == 0:
        return empty, empty
    n_found = len(found_rc)
    # connected groups of the bipartite candidate graph (found nodes first, then truth nodes)
    graph = coo_matrix(
        (np.ones(pairs.size), (pairs["i"], pairs["j"] + n_found)), shape=(n_found + len(truth_rc),) * 2
    )
    _, labels = connected_components(graph, directed=False)
    group = labels[pairs["i"]]
    order = np.argsort(group, kind="stable")
    rows, cols, dist, group = pairs["i"][order], pairs["j"][order], pairs["v"][order], group[order]
    bounds = np.flatnonzero(np.diff(group)) + 1
    out_f: list[NDArray] = []
    out_t: list[NDArray] = []
    for r, c, d in zip(np.split(rows, bounds), np.split(cols, bounds), np.split(dist, bounds)):
        if len(r) == 1:
            out_f.append(r)
            out_t.append(c)
            continue
        uf, r_local = np.unique(r, return_inverse=True)
        ut, c_local = np.unique(c, return_inverse=True)
        # cost: a large constant rewards every pair, distance breaks ties; non-pairs are forbidden
        big = 1e6
        cost = np.full((len(uf), len(ut)), big * 4.0)
        cost[r_local, c_local] = d - big
        ri, ci = linear_sum_assignment(cost)
        ok = cost[ri, ci] < 0
        out_f.append(uf[ri[ok]])
        out_t.append(ut[ci[ok]])
    fi = np.concatenate(out_f).astype(np.int64)
    ti = np.concatenate(out_t).astype(np.int64)
    order = np.argsort(fi)
    return fi[order], ti[order]


@dataclass(frozen=True, eq=False)
class Match:
    """Result of matching a run's found peaks to its true peaks.

    Attributes
    ----------
    found_index, truth_index : (K,) int ndarrays
        Matched pairs as row indices into the found and the true peak lists.
    found_matched : (P,) bool ndarray
        True for found peaks that matched (true positives).
    truth_matched : (T,) bool ndarray
        True for true peaks that were found; the others are misses.
    offset_rc : (K, 2) float ndarray
        Found minus true position of each pair (row, col).
    found_optional : (P,) bool ndarray
        True for found peaks left unmatched that match an optional true peak (one not scored, such as a
        reflection below the truth's SNR cut): neither true nor false positives. Found peaks neither matched nor
        optional are false peaks.
    """

    found_index: NDArray[np.int64]
    truth_index: NDArray[np.int64]
    found_matched: NDArray[np.bool_]
    truth_matched: NDArray[np.bool_]
    offset_rc: NDArray[np.float64]
    found_optional: NDArray[np.bool_] | None = None

    def __post_init__(self) -> None:
        if self.found_optional is None:
            object.__setattr__(self, "found_optional", np.zeros(self.found_matched.size, bool))

    @property
    def n_scored(self) -> int:
        """Found peaks that count: all but those at optional true peaks."""
        return int(self.found_matched.size - np.count_nonzero(self.found_optional))

    @property
    def true_positives(self) -> int:
        return int(self.found_index.size)

    @property
    def false_positives(self) -> int:
        return int(np.count_nonzero(~self.found_matched & ~self.found_optional))

    @property
    def false_negatives(self) -> int:
        return int((~self.truth_matched).sum())

    @property
    def precision(self) -> float:
        n = self.n_scored
        return self.true_positives / n if n else float("nan")

    @property
    def recall(self) -> float:
        n = self.truth_matched.size
        return self.true_positives / n if n else float("nan")

    @property
    def f1(self) -> float:
        denom = self.n_scored + self.truth_matched.size
        return 2.0 * self.true_positives / denom if denom else float("nan")

    @property
    def centroid_error_px(self) -> NDArray[np.float64]:
        """Distance between each matched found peak and its true peak."""
        return np.hypot(self.offset_rc[:, 0], self.offset_rc[:, 1])


def _match_run(
    found: PeakList, truth: PeakList, radius_px: float, use: NDArray[np.bool_] | None = None
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """One-to-one pairs (found row, truth row) frame by frame; only found peaks with ``use`` take part."""
    f_bounds = np.searchsorted(found.frame, np.arange(found.n_frames + 1))
    t_bounds = np.searchsorted(truth.frame, np.arange(truth.n_frames + 1))
    f_rc = np.column_stack([found.row, found.col])
    t_rc = np.column_stack([truth.row, truth.col])
    fi_all: list[NDArray] = []
    ti_all: list[NDArray] = []
    for k in range(found.n_frames):
        f0, f1 = f_bounds[k], f_bounds[k + 1]
        t0, t1 = t_bounds[k], t_bounds[k + 1]
        rows = np.arange(f0, f1) if use is None else f0 + np.flatnonzero(use[f0:f1])
        if rows.size == 0 or t0 == t1:
            continue
        fi, ti = match_frame(f_rc[rows], t_rc[t0:t1], radius_px)
        fi_all.append(rows[fi])
        ti_all.append(ti + t0)
    fi = np.concatenate(fi_all).astype(np.int64) if fi_all else np.empty(0, np.int64)
    ti = np.concatenate(ti_all).astype(np.int64) if ti_all else np.empty(0, np.int64)
    return fi, ti


def match_peaks(
    found: PeakList, truth: PeakList, *, radius_px: float = 2.0, optional: PeakList | None = None
) -> Match:
    """Match found peaks to true peaks one-to-one within ``radius_px``, frame by frame.

    Parameters
    ----------
    found, truth : PeakList
        Found and true peaks of the same run (same ``n_frames``).
    radius_px : float
        Largest distance of a match.
    optional : PeakList, optional
        True peaks that are not scored (reflections below the truth's SNR cut, for example). Found peaks left
        unmatched by ``truth`` are matched one-to-one to these in a second round; those that match are neither
        true nor false positives (:attr:`Match.found_optional`).
    """
    for other, what in ((truth, "the truth"), (optional, "the optional truth")):
        if other is not None and found.n_frames != other.n_frames:
            raise ConfigError(
                f"found peaks cover {found.n_frames} frames but {what} covers {other.n_frames}: not the same run"
            )
    fi, ti = _match_run(found, truth, radius_px)
    found_matched = np.zeros(len(found), bool)
    truth_matched = np.zeros(len(truth), bool)
    found_matched[fi] = True
    truth_matched[ti] = True
    found_optional = np.zeros(len(found), bool)
    if optional is not None and len(optional) and not found_matched.all():
        oi, _ = _match_run(found, optional, radius_px, use=~found_matched)
        found_optional[oi] = True
    offset = np.column_stack([found.row[fi] - truth.row[ti], found.col[fi] - truth.col[ti]])
    return Match(fi, ti, found_matched, truth_matched, offset.reshape(-1, 2), found_optional)
