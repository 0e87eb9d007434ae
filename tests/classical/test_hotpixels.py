"""Run-level hot-pixel search: hot pixels found from the frames of a run, moving Bragg spots left alone."""

from __future__ import annotations

import numpy as np
import pytest

from braggml.classical.hotpixels import (
    HotPixelConfig,
    find_hot_pixels,
    find_run_hot_pixels,
    lit_pixels,
    pixel_excess,
    sample_indices,
)
from braggml.errors import ConfigError

SHAPE = (160, 192)
#: (row, col, photons per frame): strong to weak, one on the frame's edge, one beside a bad pixel.
HOT = ((10, 20, 300.0), (80, 100, 40.0), (150, 5, 15.0), (0, 191, 60.0), (120, 150, 25.0))
BAD = np.zeros(SHAPE, bool)
BAD[120, 151] = True
BAD[40:44, :] = True  # a gap between two modules


def _run(
    n: int, *, counting: bool, seed: int = 0, static_spots: int = 0, static_sigma: float = 0.7
) -> list[np.ndarray]:
    """Frames of a run: background, the :data:`HOT` pixels, and 25 spots per frame at new places each frame
    (a third of them one pixel wide); the first ``static_spots`` frames also hold a spot of ``static_sigma``
    that never moves."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices(SHAPE)
    frames = []
    for k in range(n):
        expected = np.full(SHAPE, 0.5 if counting else 2.0)
        for i in range(25):
            r, c = rng.uniform(2, SHAPE[0] - 2), rng.uniform(2, SHAPE[1] - 2)
            sigma = 0.3 if i % 3 == 0 else rng.uniform(0.6, 1.2)
            expected += rng.uniform(30, 300) * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * sigma**2)) / (
                2 * np.pi * sigma**2
            )
        if k < static_spots:
            expected += 200.0 * np.exp(-((rows - 100.2) ** 2 + (cols - 30.4) ** 2) / (2 * static_sigma**2))
        for r, c, photons in HOT:
            expected[r, c] += photons
        photons = rng.poisson(expected).astype(np.float32)
        if counting:
            frames.append(photons.astype(np.int32))
        else:  # 10 ADU per photon, 3 ADU of read noise, a panel offset
            frames.append((10.0 * photons + rng.normal(0, 3.0, SHAPE) + 7.0).astype(np.float32))
    return frames


def _hot_set(found) -> set[tuple[int, int]]:
    return {tuple(rc) for rc in found.rowcol.tolist()}


def test_excess_is_over_the_brightest_good_neighbour():
    image = np.zeros((5, 5))
    image[2, 2] = 10.0
    image[2, 3] = 50.0  # brighter neighbour, but bad
    bad = np.zeros((5, 5), bool)
    bad[2, 3] = True
    excess = pixel_excess(image, bad)
    assert excess[2, 2] == 10.0
    assert excess[2, 3] == -np.inf  # bad pixels have none
    assert excess[2, 1] == -10.0
    lone = np.zeros((3, 3), bool)
    lone[:, :] = True
    lone[1, 1] = False  # a good pixel with no good neighbour
    assert pixel_excess(np.ones((3, 3)), lone)[1, 1] == -np.inf


def test_lit_pixels_keep_to_their_share_of_each_tile():
    rng = np.random.default_rng(3)
    image = rng.normal(100.0, 5.0, (256, 256))
    lit = lit_pixels(image, np.zeros(image.shape, bool), lit_share=0.002, tile_px=64)
    per_tile = lit.reshape(4, 64, 4, 64).sum(axis=(1, 3))
    assert per_tile.max() <= np.ceil(0.002 * 64 * 64) and per_tile.min() >= 1
    assert not lit_pixels(np.zeros((64, 64)), np.zeros((64, 64), bool)).any()  # nothing stands out
    ties = np.zeros((64, 64))
    ties[::4, ::4] = 1.0  # 256 equal lone pixels: none is above the others
    assert not lit_pixels(ties, np.zeros((64, 64), bool)).any()


def test_input_frames_are_not_modified():
    frames = _run(8, counting=True)
    copies = [f.copy() for f in frames]
    find_hot_pixels(((f, BAD) for f in frames), SHAPE)
    assert all(np.array_equal(a, b) for a, b in zip(frames, copies))


@pytest.mark.parametrize("counting", [True, False], ids=["counting", "integrating"])
def test_hot_pixels_found_and_moving_spots_left_alone(counting: bool):
    frames = _run(16, counting=counting)
    found = find_hot_pixels(((f, BAD) for f in frames), SHAPE)
    assert found.n_frames == 16
    assert _hot_set(found) == {(r, c) for r, c, _ in HOT}
    assert np.all(found.lit_fraction >= 0.75)
    assert found.mask.sum() == len(HOT) and not (found.mask & BAD).any()


def test_short_run_gives_no_hot_pixels():
    frames = _run(7, counting=True)
    found = find_hot_pixels(((f, BAD) for f in frames), SHAPE)
    assert len(found) == 0 and found.n_frames == 0
    eight = find_hot_pixels(((f, BAD) for f in _run(8, counting=True)), SHAPE)
    assert _hot_set(eight) == {(r, c) for r, c, _ in HOT}


def test_spot_that_stays_put_is_not_hot():
    # one crystal at one orientation in every frame (a still grid scan through one crystal): its neighbours
    # stand well above the background, so it is no hot pixel however often it is seen
    hot = {(r, c) for r, c, _ in HOT}
    frames = _run(16, counting=True, static_spots=16)
    assert _hot_set(find_hot_pixels(((f, BAD) for f in frames), SHAPE)) == hot
    loose = HotPixelConfig(max_neighbour_share=0.5)  # without the neighbour test it would be taken
    assert (100, 30) in _hot_set(find_hot_pixels(((f, BAD) for f in frames), SHAPE, config=loose))
    # a sharper spot (sigma 0.4 px) in 11 of 16 frames: too rare to count, below min_fraction
    frames = _run(16, counting=True, static_spots=11, static_sigma=0.4)
    assert _hot_set(find_hot_pixels(((f, BAD) for f in frames), SHAPE)) == hot


def test_run_search_reads_the_frames_spread_over_the_run_and_skips_unreadable_ones():
    frames = _run(40, counting=True)
    asked: list[int] = []

    def read(k: int):
        asked.append(k)
        return None if k == 13 else (frames[k], BAD)  # frame 13 cannot be read

    found = find_run_hot_pixels(read, 40, SHAPE)
    assert asked == sample_indices(40, 16).tolist() and 13 in asked
    assert found.n_frames == 15 and _hot_set(found) == {(r, c) for r, c, _ in HOT}

    def refuse(k: int):
        raise AssertionError("a run too short to search was read")

    short = find_run_hot_pixels(refuse, 7, SHAPE)
    assert len(short) == 0 and short.n_frames == 0


def test_sample_indices_spread_over_the_run():
    assert sample_indices(100, 16)[[0, -1]].tolist() == [0, 99]
    assert len(sample_indices(100, 16)) == 16 and np.all(np.diff(sample_indices(100, 16)) >= 6)
    assert sample_indices(0, 16).size == 0
    with pytest.raises(ValueError, match="n_sample"):
        sample_indices(10, 0)


def test_wrong_shape_is_rejected():
    frames = _run(8, counting=True)
    with pytest.raises(ValueError, match="shape"):
        find_hot_pixels(((f[:, :100], BAD[:, :100]) for f in frames), SHAPE)
    with pytest.raises(ValueError, match="2-D"):
        pixel_excess(np.zeros(10), np.zeros(10, bool))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("min_frames", 1, "min_frames must be >= 2"),
        ("sample_frames", 4, "sample_frames must be >= min_frames"),
        ("min_fraction", 0.3, r"min_fraction must be in \[0.5, 1\]"),
        ("lit_share", 0.0, "lit_share must be in"),
        ("tile_px", 4, "tile_px must be >= 8"),
        ("max_neighbour_share", 1.0, r"max_neighbour_share must be in \(0, 1\)"),
        ("sample_frames", 16.5, "sample_frames must be an integer"),
    ],
)
def test_bad_settings_are_rejected(field: str, value, message: str):
    with pytest.raises(ConfigError, match=message):
        HotPixelConfig(**{field: value})
