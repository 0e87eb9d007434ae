"""The PeakList result type: construction, validation, immutability, per-frame access."""

from __future__ import annotations

import numpy as np
import pytest

from braggml.peaks import PEAK_COLUMNS, FrameRef, PeakList


def _three() -> PeakList:
    return PeakList.from_columns(
        n_frames=3, frame=[2, 0, 2], row=[1.0, 2.0, 3.0], col=[4.0, 5.0, 6.0], intensity=[10, 20, 30]
    )


def test_from_columns_sorts_and_fills() -> None:
    peaks = _three()
    assert peaks.frame.tolist() == [0, 2, 2]
    assert peaks.row.tolist() == [2.0, 1.0, 3.0]  # stable sort keeps the order inside a frame
    assert np.isnan(peaks.background).all() and np.isnan(peaks.score).all()
    assert (peaks.n_pixels == 0).all()
    for name, dtype in PEAK_COLUMNS.items():
        assert getattr(peaks, name).dtype == dtype
    assert peaks.counts_per_frame().tolist() == [1, 0, 2]
    assert repr(peaks) == "PeakList(3 peaks in 3 frames)"


def test_n_frames_inferred() -> None:
    assert PeakList.from_columns(frame=[0, 4], row=[1, 1], col=[1, 1]).n_frames == 5
    assert PeakList.from_columns(frames=[FrameRef("a"), FrameRef("b")]).n_frames == 2
    assert PeakList.empty().n_frames == 0 and len(PeakList.empty(4)) == 0


def test_columns_are_read_only_and_independent_of_the_input() -> None:
    rows = np.array([1.0, 2.0])
    peaks = PeakList.from_columns(n_frames=1, row=rows, col=[0.0, 0.0])
    with pytest.raises(ValueError, match="read-only"):
        peaks.row[0] = 5.0
    frame = np.zeros(2, np.int64)
    col = np.array([3.0, 4.0])
    direct = PeakList(frame=frame, row=col, col=col, intensity=col, background=col, snr=col,
                      n_pixels=frame, max_value=col, score=col, n_frames=1)
    col[0] = 99.0  # the caller's buffer stays writable and the list does not change with it
    assert direct.row.tolist() == [3.0, 4.0]
    assert rows.flags.writeable


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_frames": 1, "frame": [0, 1], "row": [1, 1], "col": [1, 1]}, r"lie in \[0, n_frames=1\)"),
        ({"n_frames": -1}, "n_frames"),
        ({"n_frames": 2.5}, "n_frames"),
        ({"frames": [FrameRef("a")], "n_frames": 2}, "1 frame references given for n_frames=2"),
        ({"row": [1, 2], "col": [1]}, "differ in length"),
    ],
)
def test_invalid(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PeakList.from_columns(**kwargs)


def test_unknown_column() -> None:
    with pytest.raises(TypeError, match="unknown peak column"):
        PeakList.from_columns(x=[1.0])


def test_unsorted_rows_rejected() -> None:
    f = np.array([1, 0])
    v = np.zeros(2)
    with pytest.raises(ValueError, match="sorted by frame"):
        PeakList(frame=f, row=v, col=v, intensity=v, background=v, snr=v, n_pixels=f, max_value=v, score=v,
                 n_frames=2)


def test_for_frame_and_take() -> None:
    refs = [FrameRef("a.h5", "/d", i) for i in range(3)]
    peaks = _three().with_frames(refs)
    two = peaks.for_frame(2)
    assert two.n_frames == 1 and two.frame.tolist() == [0, 0] and two.row.tolist() == [1.0, 3.0]
    assert two.frames == (refs[2],)
    assert len(peaks.for_frame(1)) == 0
    with pytest.raises(IndexError):
        peaks.for_frame(3)
    sub = peaks.take(peaks.intensity > 15)
    assert sub.intensity.tolist() == [20.0, 30.0] and sub.n_frames == 3 and sub.frames == peaks.frames
    assert peaks.take(np.array([2, 0])).intensity.tolist() == [20.0, 30.0]


def test_concatenate_renumbers_frames_and_joins_provenance() -> None:
    a = PeakList.from_columns(frames=[FrameRef("a", "", 0), FrameRef("a", "", 1)], frame=[1], row=[1], col=[1])
    b = PeakList.from_columns(frames=[FrameRef("b", "", 0)], frame=[0, 0], row=[2, 3], col=[2, 3])
    joined = PeakList.concatenate([a, b])
    assert joined.n_frames == 3 and joined.frame.tolist() == [1, 2, 2]
    assert [r.file for r in joined.frames] == ["a", "a", "b"]  # type: ignore[union-attr]
    assert PeakList.concatenate([]).n_frames == 0
    no_refs = PeakList.concatenate([a, PeakList.empty(1)])
    assert no_refs.frames is None and no_refs.n_frames == 3


def test_equals_treats_nan_as_equal() -> None:
    a = _three()
    b = PeakList.from_columns(**{k: v for k, v in a.columns().items()}, n_frames=3)
    assert a.equals(b)
    c = PeakList.from_columns(**(a.columns() | {"row": a.row + 1e-3}), n_frames=3)
    assert not a.equals(c) and a.equals(c, atol=2e-3)
    assert not a.equals(PeakList.empty(3))


def test_frame_ref() -> None:
    ref = FrameRef("run.h5", "/entry/data/data", 7)
    assert ref.event == "//7" and str(ref) == "run.h5::/entry/data/data //7"
    assert str(FrameRef("x.cbf")) == "x.cbf //0"
