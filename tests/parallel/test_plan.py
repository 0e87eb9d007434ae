"""Shards and chunks: every frame exactly once, in order, never across a file."""

from __future__ import annotations

import pytest

from braggml.errors import ConfigError
from braggml.parallel.plan import Chunk, Shard, auto_chunk_frames, file_ranges, parse_shard, plan_chunks
from braggml.peaks import FrameRef


@pytest.mark.parametrize("n_frames", [0, 1, 7, 10, 101])
@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_shards_cover_every_frame_once(n_frames: int, count: int):
    ranges = [Shard(i, count).frame_range(n_frames) for i in range(count)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n_frames
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    sizes = [b - a for a, b in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_parse_shard():
    assert parse_shard("3/8") == Shard(3, 8)
    assert parse_shard(" 0 / 1 ") == Shard(0, 1)
    for bad in ("8/8", "-1/4", "1", "a/b", "1/0"):
        with pytest.raises(ConfigError, match="shard"):
            parse_shard(bad)


def test_chunks_respect_files_and_range():
    refs = [FrameRef("a.h5", "/d", i) for i in range(5)] + [FrameRef("b.h5", "/d", i) for i in range(4)]
    files = file_ranges(refs)
    assert files == [("a.h5", 0, 5), ("b.h5", 5, 9)]
    chunks = plan_chunks([(a, b) for _, a, b in files], 2)
    assert [(c.start, c.stop) for c in chunks] == [(0, 2), (2, 4), (4, 5), (5, 7), (7, 9)]
    part = plan_chunks([(a, b) for _, a, b in files], 3, start=3, stop=8)
    assert [(c.start, c.stop) for c in part] == [(3, 5), (5, 8)]
    assert sum(len(c) for c in part) == 5
    with pytest.raises(ConfigError, match="chunk_frames"):
        plan_chunks([(0, 5)], 0)
    with pytest.raises(ConfigError, match="outside"):
        plan_chunks([(0, 5)], 2, start=2, stop=6)


def test_auto_chunk_size():
    assert auto_chunk_frames(10, 1) == 2
    assert auto_chunk_frames(100_000, 2) == 50
    assert auto_chunk_frames(0, 4) == 1
    assert Chunk(3, 12).name < Chunk(12, 20).name
