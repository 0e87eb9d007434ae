"""Hot pixels found from a run: pixels that stand alone above their neighbours in most frames.

A hot pixel (a leaky or noisy channel) reads high in every frame of a run, at the same place, with neighbours at
the background level. On one frame it looks exactly like a sharp one-pixel Bragg spot, and every finder takes
some of them for peaks. Over a run the two part company: Bragg spots move from frame to frame (a new crystal or
orientation), hot pixels do not. This is the rule of Cheetah's hot-pixel search (Barty et al. 2014), made
independent of the detector's units:

- in each frame a pixel's *excess* is its value minus the largest of its eight good neighbours, so only a pixel
  brighter than everything around it has one;
- the frame is cut into tiles of :attr:`HotPixelConfig.tile_px` pixels, and a pixel is *lit* when its excess
  is positive and among the :attr:`HotPixelConfig.lit_share` largest of its tile (noise level and background
  change over a detector; the share does not), and its neighbours stand near the background
  (:attr:`HotPixelConfig.max_neighbour_share`), as those of a hot pixel do and those of a Bragg spot do not;
- a pixel lit in at least :attr:`HotPixelConfig.min_fraction` of the frames looked at is hot. As no frame lights
  more than ``lit_share`` of a tile (one pixel at least), about ``lit_share / min_fraction`` of the pixels at most
  can be hot.

Frames are looked at evenly spread over the run, up to :attr:`HotPixelConfig.sample_frames` of them; with fewer
than :attr:`HotPixelConfig.min_frames` readable frames the evidence is too thin and nothing is flagged.

References
----------
Barty, A. et al. (2014). Cheetah: software for high-throughput reduction and analysis of serial femtosecond
X-ray diffraction data. J. Appl. Cryst. 47, 1118-1131. doi:10.1107/S1600576714007626
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numba
import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError

__all__ = [
    "HotPixelConfig",
    "HotPixels",
    "sample_indices",
    "pixel_excess",
    "lit_pixels",
    "find_hot_pixels",
    "find_run_hot_pixels",
]


@dataclass(frozen=True)
class HotPixelConfig:
    """Settings of the run-level hot-pixel search.

    Attributes
    ----------
    sample_frames : int
        Most frames looked at, evenly spread over the run.
    min_frames : int
        Fewest readable frames for a search; a shorter run gets no hot-pixel mask.
    min_fraction : float
        Share of the frames looked at in which a pixel must be lit to be hot. Above the share of a run's frames
        that show one crystal in one orientation (a grid scan across a crystal, a short rotation wedge), so
        that its Bragg spots are not taken for hot pixels.
    lit_share : float
        Share of a tile's good pixels that may be lit in one frame: those of largest excess.
    tile_px : int
        Side of the square tiles in which the excesses are ranked.
    max_neighbour_share : float
        A lit pixel's eight neighbours may stand, on average, at most this share of its own height above the
        background. A hot pixel's neighbours are background; a Bragg spot of sigma 0.7 px or more puts a
        quarter of its peak height or more on them, so a spot that stays put (one crystal, one orientation) is
        not taken for a hot pixel, however many frames show it.
    """

    sample_frames: int = 16
    min_frames: int = 8
    min_fraction: float = 0.75
    lit_share: float = 1e-3
    tile_px: int = 64
    max_neighbour_share: float = 0.15

    def __post_init__(self) -> None:
        for name in ("sample_frames", "min_frames", "tile_px"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"hot_pixels.{name} must be an integer, got {value!r}")
        if self.min_frames < 2:
            raise ConfigError(f"hot_pixels.min_frames must be >= 2, got {self.min_frames!r}")
        if self.sample_frames < self.min_frames:
            raise ConfigError(
                f"hot_pixels.sample_frames must be >= min_frames ({self.min_frames}), got {self.sample_frames!r}"
            )
        if not 0.5 <= self.min_fraction <= 1.0:
            raise ConfigError(f"hot_pixels.min_fraction must be in [0.5, 1], got {self.min_fraction!r}")
        if not 0.0 < self.lit_share <= 0.05:
            raise ConfigError(f"hot_pixels.lit_share must be in (0, 0.05], got {self.lit_share!r}")
        if self.tile_px < 8:
            raise ConfigError(f"hot_pixels.tile_px must be >= 8, got {self.tile_px!r}")
        if not 0.0 < self.max_neighbour_share < 1.0:
            raise ConfigError(
                f"hot_pixels.max_neighbour_share must be in (0, 1), got {self.max_neighbour_share!r}"
            )


@dataclass(frozen=True)
class HotPixels:
    """Result of a hot-pixel search.

    Attributes
    ----------
    shape : (int, int)
        Frame shape.
    flat_index : (K,) int64 ndarray
        Hot pixels, as indices into the flattened frame, ascending.
    lit_fraction : (K,) float64 ndarray
        Share of the frames looked at in which each hot pixel was lit.
    n_frames : int
        Frames looked at (0: the run was too short, or the search was not made).
    """

    shape: tuple[int, int]
    flat_index: NDArray[np.int64]
    lit_fraction: NDArray[np.float64]
    n_frames: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", (int(self.shape[0]), int(self.shape[1])))

    @classmethod
    def none(cls, shape: tuple[int, int]) -> HotPixels:
        """No hot pixels, no frames looked at: the search was off or the run too short."""
        return cls(shape, np.zeros(0, np.int64), np.zeros(0), 0)

    def __len__(self) -> int:
        return int(self.flat_index.size)

    @property
    def mask(self) -> NDArray[np.bool_]:
        """(H, W) bool: True at the hot pixels."""
        out = np.zeros(self.shape[0] * self.shape[1], bool)
        out[self.flat_index] = True
        return out.reshape(self.shape)

    @property
    def rowcol(self) -> NDArray[np.int64]:
        """(K, 2) int64: (row, col) of each hot pixel."""
        return np.stack(np.unravel_index(self.flat_index, self.shape), axis=1).astype(np.int64)


def sample_indices(n_frames: int, n_sample: int) -> NDArray[np.int64]:
    """Indices of ``min(n_frames, n_sample)`` frames spread evenly over ``0 .. n_frames - 1``, ends included.

    >>> sample_indices(10, 4).tolist()
    [0, 3, 6, 9]
    >>> sample_indices(3, 8).tolist()
    [0, 1, 2]
    """
    if n_frames < 0 or n_sample < 1:
        raise ValueError(f"n_frames must be >= 0 and n_sample >= 1, got {n_frames!r} and {n_sample!r}")
    if n_frames <= n_sample:
        return np.arange(n_frames, dtype=np.int64)
    return np.unique(np.rint(np.linspace(0, n_frames - 1, n_sample)).astype(np.int64))


@numba.njit(cache=True, nogil=True)
def _excess_kernel(values, bad):  # pragma: no cover - compiled
    rows, cols = values.shape
    v = np.empty((rows + 2, cols + 2), np.float32)  # bad pixels and the border read -inf
    v[:] = -np.inf
    for r in range(rows):
        for c in range(cols):
            if not bad[r, c]:
                v[r + 1, c + 1] = values[r, c]
    across = np.empty((rows + 2, cols), np.float32)  # largest of each pixel and its left and right neighbours
    for r in range(rows + 2):
        for c in range(cols):
            across[r, c] = max(max(v[r, c], v[r, c + 1]), v[r, c + 2])
    excess = np.full((rows, cols), -np.inf, np.float32)
    for r in range(rows):
        for c in range(cols):
            centre = v[r + 1, c + 1]
            if centre == -np.inf:
                continue
            best = max(max(across[r, c], across[r + 2, c]), max(v[r + 1, c], v[r + 1, c + 2]))
            if best > -np.inf:
                excess[r, c] = centre - best
    return excess


@numba.njit(cache=True, nogil=True)
def _lit_kernel(values, bad, excess, tile_px, lit_share, max_neighbour_share):  # pragma: no cover - compiled
    rows, cols = excess.shape
    lit = np.zeros((rows, cols), np.bool_)
    ring = np.empty(16, np.float32)
    k_max = max(int(np.ceil(lit_share * tile_px * tile_px)), 1)
    top = np.empty(k_max + 1, np.float32)
    for r0 in range(0, rows, tile_px):
        for c0 in range(0, cols, tile_px):
            r1, c1 = min(r0 + tile_px, rows), min(c0 + tile_px, cols)
            # the k_max + 1 largest positive excesses of the tile, descending; the good pixels counted
            n_top = 0
            n_good = 0
            for r in range(r0, r1):
                for c in range(c0, c1):
                    e = excess[r, c]
                    if e == -np.inf:
                        continue
                    n_good += 1
                    if e <= 0 or (n_top == k_max + 1 and e <= top[k_max]):
                        continue
                    i = min(n_top, k_max)
                    while i > 0 and top[i - 1] < e:
                        if i <= k_max:
                            top[i] = top[i - 1]
                        i -= 1
                    top[i] = e
                    n_top = min(n_top + 1, k_max + 1)
            allowed = min(max(int(np.ceil(lit_share * n_good)), 1), k_max)
            # lit: above the largest excess that is not among the allowed (ties at the cut stay unlit)
            cut = top[allowed] if n_top > allowed else 0.0
            for r in range(r0, r1):
                for c in range(c0, c1):
                    if excess[r, c] > cut and _isolated(values, bad, r, c, ring, max_neighbour_share):
                        lit[r, c] = True
    return lit


@numba.njit(cache=True, nogil=True)
def _isolated(values, bad, r, c, ring, max_share):  # pragma: no cover - compiled
    """Whether the mean of the good neighbours of (r, c) stands at most ``max_share`` of the pixel's own height
    above the background (the median of the good pixels two steps away); ``ring`` is scratch space (16)."""
    rows, cols = values.shape
    total = 0.0
    n = 0
    m = 0
    for dr in range(-2, 3):
        for dc in range(-2, 3):
            rr, cc = r + dr, c + dc
            if (dr == 0 and dc == 0) or rr < 0 or rr >= rows or cc < 0 or cc >= cols or bad[rr, cc]:
                continue
            if abs(dr) <= 1 and abs(dc) <= 1:
                total += values[rr, cc]
                n += 1
            else:
                ring[m] = values[rr, cc]
                m += 1
    if n == 0 or m == 0:
        return True
    background = np.median(ring[:m])
    height = values[r, c] - background
    return total / n - background <= max_share * height


def pixel_excess(image: NDArray, bad: NDArray[np.bool_]) -> NDArray[np.float32]:
    """Each good pixel's value minus the largest of its good neighbours (eight-connected).

    Parameters
    ----------
    image : (H, W) ndarray
        One frame.
    bad : (H, W) bool ndarray
        Pixels not to use, neither as a centre nor as a neighbour.

    Returns
    -------
    (H, W) float32 ndarray
        The excess; ``-inf`` at bad pixels and at good pixels with no good neighbour.

    Examples
    --------
    >>> img = np.array([[1, 1, 1], [1, 9, 2], [1, 1, 1]])
    >>> pixel_excess(img, np.zeros((3, 3), bool))[1].tolist()
    [-8.0, 7.0, -7.0]
    """
    return _excess_kernel(*_frame_arrays(image, bad))


def _frame_arrays(image: NDArray, bad: NDArray[np.bool_]) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """The frame as contiguous float32 and its bad pixels, non-finite values included (shapes checked)."""
    image = np.asarray(image)
    bad = np.asarray(bad, dtype=bool)
    if image.ndim != 2 or bad.shape != image.shape:
        raise ValueError(f"image must be 2-D with a mask of its shape, got {image.shape} and {bad.shape}")
    values = np.ascontiguousarray(image, dtype=np.float32)
    return values, np.ascontiguousarray(bad | ~np.isfinite(values))


def lit_pixels(
    image: NDArray,
    bad: NDArray[np.bool_],
    *,
    lit_share: float = 1e-3,
    tile_px: int = 64,
    max_neighbour_share: float = 0.15,
) -> NDArray[np.bool_]:
    """Pixels of one frame that stand alone: a positive excess among the largest ``lit_share`` of their tile,
    and neighbours at the background.

    Parameters
    ----------
    image : (H, W) ndarray
        One frame.
    bad : (H, W) bool ndarray
        Pixels not to use.
    lit_share : float
        Share of a tile's good pixels that may be lit (at least one per tile with a good pixel).
    tile_px : int
        Side of the square tiles.
    max_neighbour_share : float
        Largest height of the mean of the eight neighbours above the background (the median of the pixels two
        steps away), as a share of the pixel's own height above it.

    Returns
    -------
    (H, W) bool ndarray

    Examples
    --------
    >>> img = np.zeros((16, 16))
    >>> img[3, 4] = 5.0
    >>> np.argwhere(lit_pixels(img, np.zeros((16, 16), bool), tile_px=8)).tolist()
    [[3, 4]]
    """
    values, bad = _frame_arrays(image, bad)
    return _lit_kernel(
        values, bad, _excess_kernel(values, bad), int(tile_px), float(lit_share), float(max_neighbour_share)
    )


def find_hot_pixels(
    frames: Iterable[tuple[NDArray, NDArray[np.bool_]]],
    shape: tuple[int, int],
    *,
    config: HotPixelConfig | None = None,
) -> HotPixels:
    """Hot pixels of a run, from the frames looked at.

    Parameters
    ----------
    frames : iterable of ((H, W) ndarray, (H, W) bool ndarray)
        The frames to look at (see :func:`sample_indices`) and each one's bad pixels (run and frame masks).
    shape : (int, int)
        Frame shape (H, W).
    config : HotPixelConfig, optional

    Returns
    -------
    HotPixels
        Empty, with ``n_frames`` 0, when fewer than ``config.min_frames`` frames were given.

    Raises
    ------
    ValueError
        A frame or mask of another shape.
    """
    config = HotPixelConfig() if config is None else config
    shape = (int(shape[0]), int(shape[1]))
    counts = np.zeros(shape, np.int32)
    n = 0
    for image, bad in frames:
        if image.shape != shape or bad.shape != shape:
            raise ValueError(f"frame of shape {image.shape} (mask {bad.shape}) in a run of shape {shape}")
        counts += lit_pixels(
            image,
            bad,
            lit_share=config.lit_share,
            tile_px=config.tile_px,
            max_neighbour_share=config.max_neighbour_share,
        )
        n += 1
    if n < config.min_frames:
        return HotPixels.none(shape)
    need = int(np.ceil(config.min_fraction * n - 1e-9))
    flat = np.flatnonzero(counts.reshape(-1) >= need).astype(np.int64)
    return HotPixels(shape, flat, counts.reshape(-1)[flat] / n, n)


def find_run_hot_pixels(
    read: Callable[[int], tuple[NDArray, NDArray[np.bool_]] | None],
    n_frames: int,
    shape: tuple[int, int],
    *,
    config: HotPixelConfig | None = None,
) -> HotPixels:
    """Hot pixels of a run of ``n_frames``, from the frames of :func:`sample_indices` read with ``read``.

    Parameters
    ----------
    read : callable
        ``read(k)`` gives frame ``k`` and its bad pixels, or None when the frame cannot be read (it is skipped).
    n_frames : int
        Frames in the run; a run shorter than ``config.min_frames`` is not read at all.
    shape : (int, int)
        Frame shape (H, W).
    config : HotPixelConfig, optional

    Returns
    -------
    HotPixels
        As :func:`find_hot_pixels`.
    """
    config = HotPixelConfig() if config is None else config
    if n_frames < config.min_frames:
        return HotPixels.none(shape)
    looked_at = (read(int(k)) for k in sample_indices(n_frames, config.sample_frames))
    return find_hot_pixels((pair for pair in looked_at if pair is not None), shape, config=config)
