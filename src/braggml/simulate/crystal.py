"""Crystal lattices: reciprocal basis of a unit cell and the reflections inside a resolution sphere."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError

__all__ = ["reciprocal_basis", "d_spacing", "enumerate_reflections"]


def reciprocal_basis(cell: Sequence[float]) -> NDArray[np.float64]:
    """Reciprocal basis ``B`` (1/Angstrom) of a unit cell: ``q = B @ (h, k, l)``, ``|q| = 1/d``.

    The direct basis puts ``a`` along the first axis and ``b`` in the plane of the first two (the usual
    crystallographic orthogonalisation); the reciprocal basis is the inverse transpose.

    Parameters
    ----------
    cell : (6,) sequence
        a, b, c (Angstrom), alpha, beta, gamma (degrees).

    Returns
    -------
    (3, 3) ndarray
        Columns are the reciprocal vectors a*, b*, c*.

    Examples
    --------
    >>> b = reciprocal_basis((10.0, 20.0, 40.0, 90.0, 90.0, 90.0))
    >>> round(float(1 / np.linalg.norm(b @ np.array([1.0, 1.0, 0.0]))), 4)
    8.9443
    """
    a, b, c, alpha, beta, gamma = (float(v) for v in cell)
    ca, cb, cg = np.cos(np.radians([alpha, beta, gamma]))
    sg = np.sin(np.radians(gamma))
    cz2 = 1.0 - cb**2 - ((ca - cb * cg) / sg) ** 2
    if cz2 <= 0:
        raise ConfigError(f"crystal.cell {tuple(cell)!r}: the angles do not make a valid cell")
    direct = np.array(
        [
            [a, b * cg, c * cb],
            [0.0, b * sg, c * (ca - cb * cg) / sg],
            [0.0, 0.0, c * np.sqrt(cz2)],
        ]
    )
    return np.linalg.inv(direct).T


def d_spacing(cell: Sequence[float], hkl: NDArray[np.integer]) -> NDArray[np.float64]:
    """Interplanar spacing (Angstrom) of reflections ``hkl`` of shape (..., 3)."""
    q = np.asarray(hkl, dtype=np.float64) @ reciprocal_basis(cell).T
    with np.errstate(divide="ignore"):
        return 1.0 / np.linalg.norm(q, axis=-1)


@lru_cache(maxsize=8)
def _reflections_cached(cell: tuple[float, ...], d_min_a: float) -> tuple[NDArray[np.int32], NDArray[np.float64]]:
    basis = reciprocal_basis(cell)
    q_max = 1.0 / d_min_a
    # |h| <= q_max / |a*|_perp; a safe bound is q_max * |a| (direct length along the reciprocal axis).
    direct = np.linalg.inv(basis.T)
    limits = np.ceil(q_max * np.linalg.norm(direct, axis=0)).astype(int)
    ranges = [np.arange(-n, n + 1) for n in limits]
    grid = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3)
    q = grid @ basis.T
    q_len = np.linalg.norm(q, axis=1)
    keep = (q_len <= q_max) & (q_len > 0)
    hkl = grid[keep].astype(np.int32)
    q = q[keep]
    hkl.setflags(write=False)
    q.setflags(write=False)
    return hkl, q


def enumerate_reflections(
    cell: Sequence[float], d_min_a: float
) -> tuple[NDArray[np.int32], NDArray[np.float64]]:
    """All reflections with ``d >= d_min_a`` (000 excluded) and their reciprocal vectors.

    Returns
    -------
    hkl : (R, 3) int32 ndarray
    q : (R, 3) float ndarray
        ``B @ hkl`` in the crystal frame (1/Angstrom). Both arrays are read-only and cached.
    """
    if not d_min_a > 0:
        raise ConfigError(f"d_min_a must be > 0, got {d_min_a!r}")
    return _reflections_cached(tuple(float(v) for v in cell), float(d_min_a))
