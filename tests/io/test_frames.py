"""open_frames / FrameSource: every supported layout, laziness, provenance and bad input."""

from __future__ import annotations

import gzip
import pickle
import shutil
import sys
import tracemalloc
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

from braggml.errors import ConfigError, DataFormatError, InputNotFoundError
from braggml.io import Frame, FrameSource, open_frame_groups, open_frames
from braggml.peaks import FrameRef

RNG = np.random.default_rng(7)

PILATUS_HEADER = (
    "# Detector: PILATUS 2M, S/N 24-0107\r\n"
    "# Pixel_size 172e-6 m x 172e-6 m\r\n"
    "# Exposure_time 0.0964000 s\r\n"
    "# Count_cutoff 1000 counts\r\n"
    "# Wavelength 0.9763 A\r\n"
    "# Detector_distance 0.25000 m\r\n"
    "# Beam_xy (16.50, 20.25) pixels\r\n"
)


# -- fixture writers ---------------------------------------------------------------------------------------


def write_cxi(path: Path, frames: np.ndarray, mask: np.ndarray | None = None) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("entry_1/data_1/data", data=frames, chunks=(1, *frames.shape[1:]))
        if mask is not None:
            f.create_dataset("entry_1/data_1/mask", data=mask)
        f.create_dataset("entry_1/result_1/nPeaks", data=np.zeros(len(frames), np.int32))
    return path


def write_nexus(path: Path, frame: np.ndarray, pixel_mask: np.ndarray | None = None) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("entry/data/data", data=frame)
        if pixel_mask is not None:
            f.create_dataset("entry/instrument/detector/pixel_mask", data=pixel_mask)
    return path


def write_eiger(folder: Path, stacks: list[np.ndarray], cutoff: int = 20000) -> Path:
    """Master file with ExternalLinks to data files compressed with bitshuffle+LZ4."""
    folder.mkdir(parents=True, exist_ok=True)
    master = folder / "series_master.h5"
    with h5py.File(master, "w") as m:
        det = m.create_group("entry/instrument/detector")
        det["description"] = "Dectris EIGER2 Si 4M"
        spec = det.create_group("detectorSpecific")
        spec["countrate_correction_count_cutoff"] = np.uint32(cutoff)
        pmask = np.zeros(stacks[0].shape[1:], np.uint32)
        pmask[:, 10] = 1  # a gap column
        pmask[3, 3] = 8  # a hot pixel
        spec.create_dataset("pixel_mask", data=pmask)
        m.create_group("entry/data")
        for k, stack in enumerate(stacks, start=1):
            name = f"series_data_{k:06d}.h5"
            with h5py.File(folder / name, "w") as d:
                d.create_dataset(
                    "entry/data/data",
                    data=stack,
                    chunks=(1, *stack.shape[1:]),
                    **hdf5plugin.Bitshuffle(cname="lz4"),
                )
            m[f"entry/data/data_{k:06d}"] = h5py.ExternalLink(name, "/entry/data/data")
    return master


def write_cbf(path: Path, data: np.ndarray, header: str = PILATUS_HEADER) -> Path:
    import fabio.cbfimage

    image = fabio.cbfimage.CbfImage(
        data=data,
        header={"_array_data.header_convention": "PILATUS_1.2", "_array_data.header_contents": header},
    )
    image.write(str(path))
    return path


def pilatus_frame(shape: tuple[int, int] = (40, 32)) -> np.ndarray:
    frame = RNG.poisson(3.0, size=shape).astype(np.int32)
    frame[:, 12] = -1  # module gap
    frame[5, 5] = -2  # bad pixel
    frame[7, 9] = 1046527  # Pilatus overload marker
    return frame


# -- layouts -----------------------------------------------------------------------------------------------


def test_cxi_with_mask(tmp_path: Path) -> None:
    frames = RNG.normal(10.0, 3.0, size=(3, 32, 40)).astype(np.float32)
    frames[1, 4, 4] = np.nan
    mask = np.zeros((32, 40), np.uint16)
    mask[0, :] = 1
    path = write_cxi(tmp_path / "run.cxi", frames, mask)
    with open_frames(path) as source:
        assert isinstance(source, FrameSource)
        assert len(source) == 3 and source.shape == (32, 40) and source.dtype == np.float32
        assert source.detector_kind == "integrating"  # float data
        assert source.saturation is None
        np.testing.assert_array_equal(source.file_mask(), mask != 0)
        got = list(source)
    assert [f.ref for f in got] == [FrameRef(str(path), "/entry_1/data_1/data", i) for i in range(3)]
    assert [f.index for f in got] == [0, 1, 2]
    for k, frame in enumerate(got):
        assert isinstance(frame, Frame)
        assert frame.data.dtype == np.float32 and frame.data.flags.writeable
        np.testing.assert_array_equal(frame.data, frames[k])
    assert got[1].bad[4, 4] and got[1].bad.sum() == 1
    assert not got[0].bad.any()  # negative-free float noise, nothing flagged
    assert source.refs == [f.ref for f in got]


def test_cxi_per_frame_mask_goes_into_bad(tmp_path: Path) -> None:
    frames = np.ones((2, 20, 24), np.float32)
    mask = np.zeros((2, 20, 24), np.uint8)
    mask[1, 2, 3] = 1
    path = write_cxi(tmp_path / "m.cxi", frames, mask)
    source = open_frames(path)
    assert source.file_mask() is None
    assert not source.frame(0).bad.any()
    assert np.argwhere(source.frame(1).bad).tolist() == [[2, 3]]


def test_nexus_single_frame_files_by_glob(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    frames = [pilatus_frame() for _ in range(3)]
    pixel_mask = np.zeros((40, 32), np.uint8)
    for k, frame in enumerate(frames):
        pm = pixel_mask.copy()
        pm[k, 0] = 1
        write_nexus(folder / f"img_{k + 1:03d}.h5", frame, pm)
    source = open_frames(str(folder / "img_*.h5"))
    assert len(source) == 3 and source.files == sorted(str(p) for p in folder.glob("img_*.h5"))
    assert [r.file for r in source.refs] == source.files
    assert all(r.dataset == "/entry/data/data" and r.index == 0 for r in source.refs)
    assert source.detector_kind == "photon-counting"  # only -1/-2 below zero
    for k in range(3):
        frame = source.frame(k)
        np.testing.assert_array_equal(frame.data, frames[k].astype(np.float32))
        assert frame.bad[:, 12].all() and frame.bad[5, 5] and frame.bad[7, 9]
        assert frame.bad.sum() == 40 + 2
    np.testing.assert_array_equal(np.argwhere(source.file_mask()), [[0, 0], [1, 0], [2, 0]])


def test_inputs_order_kept_and_globs_sorted(tmp_path: Path) -> None:
    for name in ("b_2.npy", "b_1.npy", "a.npy"):
        np.save(tmp_path / name, np.full((16, 16), len(name), np.uint16))
    source = open_frames([tmp_path / "b_*.npy", str(tmp_path / "a.npy")])
    assert [Path(f).name for f in source.files] == ["b_1.npy", "b_2.npy", "a.npy"]


def test_event_list_selects_frames_in_its_order(tmp_path: Path) -> None:
    """A CrystFEL event list stands for the frames it names; each keeps its index within its file."""
    stack = np.stack([np.full((16, 16), 10 * k, np.uint16) for k in range(6)])
    write_cxi(tmp_path / "run.cxi", stack)
    np.save(tmp_path / "single.npy", np.full((16, 16), 7, np.uint16))
    (tmp_path / "sub").mkdir()
    listing = tmp_path / "sub" / "hits.lst"
    listing.write_text(f"# hits\n{tmp_path / 'run.cxi'} //4\n{tmp_path / 'run.cxi'} //1\n; comment\n\n"
                       f"../single.npy\n{tmp_path / 'run.cxi'} //5/0\n")
    source = open_frames(listing)
    assert len(source) == 4
    assert [source.frame(k).data[0, 0] for k in range(4)] == [40.0, 10.0, 7.0, 50.0]
    assert [ref.index for ref in source.refs] == [4, 1, 0, 5]
    assert [source.frame(k).index for k in range(4)] == [0, 1, 2, 3]
    assert source.refs[2].file == str(tmp_path / "sub" / ".." / "single.npy")  # relative to the list
    again = pickle.loads(pickle.dumps(source))  # workers receive the source pickled
    assert [again.frame(k).data[0, 0] for k in range(4)] == [40.0, 10.0, 7.0, 50.0]
    whole = tmp_path / "whole.lst"
    whole.write_text(f"{tmp_path / 'run.cxi'}\n")  # a bare file name: all its frames
    assert len(open_frames(whole)) == 6
    mixed = open_frames([str(tmp_path / "run.cxi"), str(listing)])
    assert len(mixed) == 10 and mixed.refs[6].index == 4


def test_event_list_errors_name_the_list_and_line(tmp_path: Path) -> None:
    write_cxi(tmp_path / "run.cxi", np.zeros((3, 16, 16), np.uint16))
    run = tmp_path / "run.cxi"
    cases = {
        f"{run} //0\n{run} //3\n": (DataFormatError, r"bad\.lst:2: .*holds 3 frame\(s\), there is no event //3"),
        f"{tmp_path / 'gone.h5'} //0\n": (InputNotFoundError, r"bad\.lst:1: .*gone\.h5: no such file"),
        f"{run} //x\n": (DataFormatError, r"bad\.lst:1: cannot read event '//x'"),
        "# nothing here\n": (DataFormatError, r"bad\.lst: the event list names no frames"),
    }
    for text, (error, message) in cases.items():
        (tmp_path / "bad.lst").write_text(text)
        with pytest.raises(error, match=message):
            open_frames(tmp_path / "bad.lst")
    with pytest.raises(InputNotFoundError, match=r"missing\.lst: no such event list"):
        open_frames(tmp_path / "missing.lst")


def test_cheetah_data_data(tmp_path: Path) -> None:
    frames = RNG.integers(0, 100, size=(2, 24, 30)).astype(np.int16)
    with h5py.File(tmp_path / "cheetah.h5", "w") as f:
        f["data/data"] = frames
    source = open_frames(tmp_path / "cheetah.h5")
    assert source.refs[1] == FrameRef(str(tmp_path / "cheetah.h5"), "/data/data", 1)
    np.testing.assert_array_equal(source.frame(1).data, frames[1])


def test_eiger_master_with_bitshuffle_lz4(tmp_path: Path) -> None:
    stacks = [RNG.poisson(2.0, size=(n, 32, 48)).astype(np.uint16) for n in (3, 2)]
    for stack in stacks:
        stack[:, :, 10] = 65535  # module gap
    master = write_eiger(tmp_path / "eiger", stacks, cutoff=30)
    stacks[1][0, 6, 7] = 0
    with h5py.File(tmp_path / "eiger" / "series_data_000002.h5", "a") as d:
        d["entry/data/data"][0, 6, 7] = 31  # above the count cutoff
    stacks[1][0, 6, 7] = 31
    with open_frames(master) as source:
        assert len(source) == 5 and source.shape == (32, 48) and source.dtype == np.uint16
        assert source.detector_kind == "photon-counting"
        assert source.saturation == 30
        mask = source.file_mask()
        assert mask is not None and mask[:, 10].all() and mask[3, 3] and mask.sum() == 33
        assert source.refs[3] == FrameRef(str(master), "/entry/data/data_000002", 0)
        frame = source.frame(3)
        np.testing.assert_array_equal(frame.data, stacks[1][0].astype(np.float32))
        assert frame.bad[:, 10].all() and frame.bad[6, 7] and frame.bad.sum() == 33
        assert np.array_equal(source.frame(-1).data, stacks[1][1])


def test_explicit_dataset_spec_and_keyword(tmp_path: Path) -> None:
    path = tmp_path / "two.h5"
    with h5py.File(path, "w") as f:
        f["entry/data/data"] = np.zeros((2, 16, 16), np.float32)
        f["processed/corrected"] = np.ones((4, 16, 16), np.float32)
    assert len(open_frames(path)) == 2
    assert len(open_frames(f"{path}::/processed/corrected")) == 4
    assert len(open_frames(path, dataset="processed/corrected")) == 4
    assert open_frames(f"{path}::processed/corrected").refs[0].dataset == "/processed/corrected"


def test_dataset_spec_applies_to_every_file_of_a_glob(tmp_path: Path) -> None:
    for k in range(2):
        with h5py.File(tmp_path / f"r{k}.h5", "w") as f:
            f["entry/data/data"] = np.zeros((1, 16, 16), np.float32)
            f["calib/frames"] = np.full((2, 16, 16), k, np.float32)
    source = open_frames(f"{tmp_path}/r*.h5::/calib/frames")
    assert len(source) == 4 and {r.dataset for r in source.refs} == {"/calib/frames"}
    assert [source.frame(i).data[0, 0] for i in range(4)] == [0, 0, 1, 1]


def test_automatic_search_picks_largest_image_dataset(tmp_path: Path) -> None:
    path = tmp_path / "other.hdf5"
    with h5py.File(path, "w") as f:
        f["imageseries/images"] = np.ones((3, 64, 48), np.int32)
        f["imageseries/mask_big"] = np.ones((5, 64, 48), np.uint8)
        f["meta/thumbnail"] = np.ones((8, 8), np.float32)
        f["meta/omega"] = np.arange(3.0)
    source = open_frames(path)
    assert source.refs[0].dataset == "/imageseries/images" and len(source) == 3


def test_npy_stack_and_single(tmp_path: Path) -> None:
    stack = RNG.integers(0, 1000, size=(4, 20, 18)).astype(np.int32)
    np.save(tmp_path / "stack.npy", stack)
    np.save(tmp_path / "single.npy", stack[0].astype(np.float64))
    source = open_frames([tmp_path / "stack.npy", tmp_path / "single.npy"])
    assert len(source) == 5 and source.dtype == np.float64
    assert source.refs[2] == FrameRef(str(tmp_path / "stack.npy"), "", 2)
    np.testing.assert_array_equal(source.frame(2).data, stack[2])
    np.testing.assert_array_equal(source.frame(4).data, stack[0])


def test_npz_default_and_named_array(tmp_path: Path) -> None:
    frames = RNG.normal(size=(2, 16, 20)).astype(np.float32)
    np.savez_compressed(tmp_path / "f.npz", data=frames, other=frames[:1] * 2, mask=np.zeros((16, 20)))
    assert len(open_frames(tmp_path / "f.npz")) == 2
    source = open_frames(f"{tmp_path / 'f.npz'}::other")
    assert len(source) == 1 and source.refs[0].dataset == "other"
    np.testing.assert_array_equal(source.frame(0).data, frames[0] * 2)
    with pytest.raises(InputNotFoundError, match=r"f\.npz: no array 'nope'"):
        open_frames(f"{tmp_path / 'f.npz'}::nope")


def test_hexrd_frame_cache(tmp_path: Path) -> None:
    arrays = {
        "shape": np.array([20, 30]),
        "nframes": np.array(2),
        "dtype": np.array(b"uint16"),
        "0_row": np.array([1, 2], np.uint16),
        "0_col": np.array([3, 4], np.uint16),
        "0_data": np.array([10, 20], np.uint16),
        "1_row": np.array([5], np.uint16),
        "1_col": np.array([6], np.uint16),
        "1_data": np.array([7], np.uint16),
    }
    np.savez(tmp_path / "cache.npz", **arrays)
    source = open_frames(tmp_path / "cache.npz")
    assert len(source) == 2 and source.shape == (20, 30)
    frame = source.frame(0).data
    assert frame[1, 3] == 10 and frame[2, 4] == 20 and frame.sum() == 30


@pytest.mark.parametrize("suffix", [".cbf", ".cbf.gz"])
def test_cbf_through_fabio(tmp_path: Path, suffix: str) -> None:
    frame = pilatus_frame()
    frame[10, 10] = 1000  # at the count cutoff
    path = write_cbf(tmp_path / "img_0001.cbf", frame)
    if suffix == ".cbf.gz":
        with open(path, "rb") as src, gzip.open(str(path) + ".gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        path = Path(str(path) + ".gz")
    source = open_frames(path)
    assert len(source) == 1 and source.shape == (40, 32) and source.dtype == np.int32
    assert source.detector_kind == "photon-counting" and source.saturation == 1000
    got = source.frame(0)
    assert got.ref == FrameRef(str(path), "", 0)
    np.testing.assert_array_equal(got.data, frame.astype(np.float32))
    assert got.bad[:, 12].all() and got.bad[5, 5] and got.bad[7, 9] and got.bad[10, 10]
    assert got.bad.sum() == 40 + 3


def test_tiff_through_fabio(tmp_path: Path) -> None:
    import fabio.tifimage

    frame = RNG.integers(0, 50, size=(24, 20)).astype(np.int32)
    fabio.tifimage.TifImage(data=frame).write(str(tmp_path / "a.tif"))
    source = open_frames(tmp_path / "a.tif")
    np.testing.assert_array_equal(source.frame(0).data, frame)


@pytest.mark.parametrize("name", ["a.img", "a.img.gz", "a_0001"])  # SMV by name, compressed, and by content
def test_smv_through_fabio(tmp_path: Path, name: str) -> None:
    import gzip

    import fabio.adscimage

    from braggml.io.metadata import geometry_hint

    frame = RNG.integers(0, 5000, size=(24, 20)).astype(np.uint16)
    header = {"PIXEL_SIZE": "0.1024", "DISTANCE": "150.5", "WAVELENGTH": "0.9795", "BEAM_CENTER_X": "1.2"}
    fabio.adscimage.AdscImage(data=frame, header=header).write(str(tmp_path / "plain.img"))
    path = tmp_path / name
    raw = (tmp_path / "plain.img").read_bytes()
    path.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    source = open_frames(path)
    assert len(source) == 1 and source.shape == (24, 20)
    np.testing.assert_array_equal(source.frame(0).data, frame)
    hint = geometry_hint(path)
    assert hint is not None and hint.beam_center_rowcol is None  # SMV beam centre conventions differ: not taken
    assert (hint.pixel_size_mm, hint.distance_mm, hint.wavelength_a) == (0.1024, 150.5, 0.9795)


def test_edf_through_fabio(tmp_path: Path) -> None:
    import fabio.edfimage

    frame = RNG.normal(0, 3, size=(24, 20)).astype(np.float32)
    fabio.edfimage.EdfImage(data=frame).write(str(tmp_path / "a.edf"))
    np.testing.assert_array_equal(open_frames(tmp_path / "a.edf").frame(0).data, frame)


@pytest.mark.parametrize("name", ["a.jp2", "a.j2k", "a_0001"])  # a JPEG 2000 file, a bare codestream, by content
def test_lossless_jpeg2000_through_fabio(tmp_path: Path, name: str) -> None:
    from PIL import Image

    frame = RNG.integers(0, 60000, size=(24, 20)).astype(np.uint16)
    kind = "J2K" if name.endswith(".j2k") else "JPEG2000"
    with open(tmp_path / name, "wb") as fh:  # Pillow's encoder is lossless by default
        Image.fromarray(frame).save(fh, format="JPEG2000", no_jp2=kind == "J2K")
    source = open_frames(tmp_path / name)
    assert len(source) == 1 and source.shape == (24, 20)
    np.testing.assert_array_equal(source.frame(0).data, frame)


def test_overrides(tmp_path: Path) -> None:
    frame = np.full((16, 16), -3, np.int32)
    frame[0, 0] = 500
    np.save(tmp_path / "f.npy", frame)
    assert not open_frames(tmp_path / "f.npy").frame(0).bad.any()  # -3: integrating guess
    forced = open_frames(tmp_path / "f.npy", detector_kind="photon-counting", saturation=400)
    assert forced.detector_kind == "photon-counting" and forced.frame(0).bad.all()
    with pytest.raises(ConfigError, match="detector_kind must be one of"):
        open_frames(tmp_path / "f.npy", detector_kind="pixel")
    with pytest.raises(ConfigError, match="saturation must be a positive number"):
        open_frames(tmp_path / "f.npy", saturation=-1)


def test_frame_data_is_a_copy(tmp_path: Path) -> None:
    np.save(tmp_path / "f.npy", np.ones((2, 16, 16), np.float32))
    source = open_frames(tmp_path / "f.npy")
    frame = source.frame(0)
    frame.data[:] = 5
    assert source.frame(0).data.max() == 1


def test_random_access_ranges_and_pickling(tmp_path: Path) -> None:
    frames = np.arange(5 * 16 * 16, dtype=np.float32).reshape(5, 16, 16)
    path = write_cxi(tmp_path / "r.cxi", frames)
    source = open_frames(path)
    assert [f.ref.index for f in source.iter_range(1, 4)] == [1, 2, 3]
    assert list(source.iter_range(2, 2)) == []
    with pytest.raises(IndexError, match="frame 5 out of range for 5 frames"):
        source.frame(5)
    with pytest.raises(ConfigError, match="start=3, stop=9"):
        list(source.iter_range(3, 9))
    source.frame(0)  # leaves the file open
    clone = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(clone.frame(4).data, frames[4])


# -- laziness ----------------------------------------------------------------------------------------------


def test_hdf5_frames_are_read_one_at_a_time(tmp_path: Path) -> None:
    n, shape = 40, (512, 512)  # 40 MiB of float32 on disk, 1 MiB per frame
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as f:
        dset = f.create_dataset("entry/data/data", shape=(n, *shape), dtype=np.float32, chunks=(1, *shape))
        for k in range(n):
            dset[k] = k
    source = open_frames(path)
    tracemalloc.start()
    try:
        frame = source.frame(n - 1)
        seen = sum(1 for _ in source.iter_range(0, 5))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert frame.data[0, 0] == n - 1 and seen == 5
    assert peak < 6 * 1024**2, f"peak {peak / 1024**2:.1f} MiB while reading single frames of a 40 MiB file"


def test_hdf5_reads_only_the_requested_frame(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_cxi(tmp_path / "s.cxi", np.zeros((6, 16, 16), np.float32))
    selections = []
    original = h5py.Dataset.__getitem__

    def spy(self: h5py.Dataset, key: object) -> object:
        selections.append(key)
        return original(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    source = open_frames(path)
    assert selections == []  # opening reads no pixels
    assert source.detector_kind == "integrating"  # guessed from frame 0 (float data), once
    assert selections == [0]
    selections.clear()
    source.frame(4)
    source.frame(2)
    assert selections == [4, 2]


def test_npy_is_memory_mapped(tmp_path: Path) -> None:
    np.save(tmp_path / "big.npy", np.zeros((40, 512, 512), np.float32))
    source = open_frames(tmp_path / "big.npy")
    tracemalloc.start()
    try:
        source.frame(39)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6 * 1024**2


# -- bad input ---------------------------------------------------------------------------------------------


def test_missing_file_and_empty_glob(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match=r"nothere\.h5: no such file"):
        open_frames(tmp_path / "nothere.h5")
    with pytest.raises(InputNotFoundError, match=r"no files match '.*run_\*\.cxi'"):
        open_frames(str(tmp_path / "run_*.cxi"))
    with pytest.raises(InputNotFoundError, match="no input files given"):
        open_frames([])


def test_folder_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"is a folder, not a file \(give a glob"):
        open_frames(tmp_path)


def test_not_hdf5_and_unknown_format(tmp_path: Path) -> None:
    (tmp_path / "fake.h5").write_text("hello")
    with pytest.raises(DataFormatError, match=r"fake\.h5: not an HDF5 file"):
        open_frames(tmp_path / "fake.h5")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataFormatError, match=r"notes\.txt: not a known frame format"):
        open_frames(tmp_path / "notes.txt")


def test_truncated_hdf5(tmp_path: Path) -> None:
    path = write_cxi(tmp_path / "full.cxi", np.ones((4, 64, 64), np.float32))
    data = path.read_bytes()
    cut = tmp_path / "cut.cxi"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match=r"cut\.cxi: cannot open as HDF5, the file is truncated or corrupt"):
        open_frames(cut)


def test_missing_dataset_lists_existing_ones(tmp_path: Path) -> None:
    path = write_cxi(tmp_path / "a.cxi", np.ones((2, 16, 16), np.float32))
    with pytest.raises(
        InputNotFoundError,
        match=r"a\.cxi: no dataset '/entry/data/data'; datasets here: "
        r"/entry_1/data_1/data \(2, 16, 16\)",
    ):
        open_frames(f"{path}::/entry/data/data")
    with pytest.raises(DataFormatError, match=r"a\.cxi::/entry_1/data_1 is a group, not a dataset"):
        open_frames(path, dataset="/entry_1/data_1")


def test_no_image_like_dataset(tmp_path: Path) -> None:
    path = tmp_path / "meta.h5"
    with h5py.File(path, "w") as f:
        f["sample/temperature"] = np.arange(100.0)
        f["sample/thumb"] = np.ones((8, 8))
    with pytest.raises(DataFormatError, match=r"meta\.h5: no image-like dataset .*sample/temperature"):
        open_frames(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (np.ones(300, np.float32), r"is 1-D; frames must be 2-D \(H, W\), 3-D \(N, H, W\) or 4-D \(N, modules, H, W\)"),
        (np.ones((2, 2, 2, 16, 16), np.float32), r"is 5-D; frames must be"),
        (np.ones((16, 16), np.complex64), "unsupported dtype complex64"),
        (np.ones((16, 16), bool), "boolean array .* looks like a mask"),
        (np.array([b"abc"] * 4), "unsupported dtype"),
    ],
)
def test_unusable_arrays(tmp_path: Path, data: np.ndarray, message: str) -> None:
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f["entry/data/data"] = data
    with pytest.raises(DataFormatError, match=r"bad\.h5::/entry/data/data: .*" + message):
        open_frames(path)
    np.save(tmp_path / "bad.npy", data)
    with pytest.raises(DataFormatError, match=r"bad\.npy"):
        open_frames(tmp_path / "bad.npy")


def test_files_of_different_frame_shapes(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((16, 16)))
    np.save(tmp_path / "b.npy", np.zeros((16, 20)))
    with pytest.raises(DataFormatError, match=r"files differ in frame shape: .*a\.npy has \(16, 16\), .*b\.npy has"):
        open_frames(str(tmp_path / "*.npy"))


def test_open_frame_groups_one_source_per_shape(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.full((2, 16, 16), 1.0))
    np.save(tmp_path / "b.npy", np.full((3, 16, 20), 2.0))
    np.save(tmp_path / "c.npy", np.full((1, 16, 16), 3.0))
    groups = open_frame_groups(str(tmp_path / "*.npy"))
    assert [(g.shape, len(g)) for g in groups] == [((16, 16), 3), ((16, 20), 3)]
    assert [Path(f).name for f in groups[0].files] == ["a.npy", "c.npy"]
    assert groups[0].frame(2).data[0, 0] == 3.0 and groups[1].frame(0).data[0, 0] == 2.0
    assert groups[0].frame(2).ref.index == 0
    with pytest.raises(InputNotFoundError, match="no files match"):
        open_frame_groups(str(tmp_path / "*.h5"))


def test_corrupt_chunk_names_file_dataset_and_frame(tmp_path: Path) -> None:
    path = tmp_path / "c.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("entry/data/data", data=RNG.normal(size=(3, 64, 64)), chunks=(1, 64, 64), compression="gzip")
    with h5py.File(path, "r") as f:
        info = f["entry/data/data"].id.get_chunk_info(1)
    raw = bytearray(path.read_bytes())
    raw[info.byte_offset : info.byte_offset + info.size] = b"\x00garbage" * (info.size // 8) + b"\x00" * (info.size % 8)
    path.write_bytes(bytes(raw))
    source = open_frames(path)
    source.frame(0)
    with pytest.raises(DataFormatError, match=r"c\.h5::/entry/data/data: frame 1 cannot be read, data corrupt"):
        source.frame(1)
    source.frame(2)  # the run goes on after a bad frame


def test_missing_eiger_data_file(tmp_path: Path) -> None:
    master = write_eiger(tmp_path / "e", [np.zeros((2, 16, 16), np.uint16)] * 2)
    (tmp_path / "e" / "series_data_000002.h5").unlink()
    with pytest.raises(
        DataFormatError,
        match=r"series_master\.h5::/entry/data/data_000002: external link to "
        r"series_data_000002\.h5::/entry/data/data cannot be followed",
    ):
        open_frames(master)


def test_cbf_without_fabio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_cbf(tmp_path / "x.cbf", pilatus_frame())
    monkeypatch.setitem(sys.modules, "fabio", None)
    with pytest.raises(DataFormatError, match=r"needs fabio: pip install braggml\[cbf\]"):
        open_frames(path)


def write_packed_cbf(path: Path, arrays: list[np.ndarray], compression: str = "CBF_PACKED") -> Path:
    """A CBF written by CBFlib with one packed binary array per 3-D array (third, second, fastest)."""
    pycbf = pytest.importorskip("pycbf")
    handle = pycbf.cbf_handle_struct()
    handle.new_datablock(b"test")
    handle.new_category(b"diffrn_detector")
    handle.new_column(b"type")
    handle.set_value(b"CS PAD")
    handle.new_category(b"array_data")
    handle.new_column(b"data")
    for k, array in enumerate(arrays):
        if k:
            handle.new_row()
        third, second, fast = array.shape
        handle.set_integerarray_wdims_fs(
            getattr(pycbf, compression), k + 1, np.ascontiguousarray(array, "<i4").tobytes(), 4, 1, array.size,
            b"little_endian", fast, second, third, 0,
        )
    handle.write_widefile(str(path).encode(), pycbf.CBF, pycbf.MIME_HEADERS | pycbf.MSG_DIGEST, 0)
    del handle
    return path


@pytest.mark.parametrize("compression", ["CBF_PACKED", "CBF_PACKED_V2"])
def test_packed_cbf_arrays_are_stacked(tmp_path: Path, compression: str) -> None:
    arrays = [RNG.integers(-50, 20000, size=(2, 17, 24)).astype(np.int32) for _ in range(2)]
    arrays[1][0, 0, 0] = -2_000_000_000
    path = write_packed_cbf(tmp_path / "cspad.cbf", arrays, compression)
    source = open_frames(path)
    assert source.shape == (4 * 17, 24) and source.dtype == np.int32
    assert source.detector_kind == "integrating"
    expected = np.concatenate([a.reshape(-1, 24) for a in arrays])
    frame = source.frame(0)
    np.testing.assert_array_equal(frame.data, expected.astype(np.float32))
    assert not frame.bad.any()


def test_packed_cbf_gzip(tmp_path: Path) -> None:
    array = RNG.integers(0, 300, size=(1, 20, 30)).astype(np.int32)
    path = write_packed_cbf(tmp_path / "r.cbf", [array])
    with open(path, "rb") as src, gzip.open(tmp_path / "r.cbf.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    np.testing.assert_array_equal(open_frames(tmp_path / "r.cbf.gz").frame(0).data, array[0])


def test_corrupt_packed_cbf(tmp_path: Path) -> None:
    path = write_packed_cbf(tmp_path / "t.cbf", [np.arange(2 * 20 * 20, dtype=np.int32).reshape(2, 20, 20) * 7])
    data = bytearray(path.read_bytes())
    start = data.index(b"\x0c\x1a\x04\xd5") + 4 + 40
    data[start : start + 64] = bytes(64)  # the payload no longer matches its Content-MD5
    path.write_bytes(bytes(data))
    source = open_frames(path)
    with pytest.raises(DataFormatError, match=r"t\.cbf: binary array 1 cannot be decoded \(its Content-MD5"):
        source.frame(0)


def test_truncated_packed_cbf(tmp_path: Path) -> None:
    # the payload ends before its X-Binary-Size: refused before CBFlib reads past it
    path = write_packed_cbf(tmp_path / "t.cbf", [np.arange(2 * 20 * 20, dtype=np.int32).reshape(2, 20, 20) * 7])
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"\x0c\x1a\x04\xd5") + 4 + 30])
    with pytest.raises(DataFormatError, match=r"t\.cbf: binary array 1 cannot be decoded \(truncated: 30 of"):
        open_frames(path).frame(0)


def test_packed_cbf_without_pycbf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    header = (
        "###CBF: VERSION 1.5\r\ndata_x\r\n_array_data.data\r\n;\r\n--CIF-BINARY-FORMAT-SECTION--\r\n"
        'Content-Type: application/octet-stream;\r\n     conversions="x-CBF_PACKED"\r\n'
        "Content-Transfer-Encoding: BINARY\r\nX-Binary-Size: 40\r\n"
        'X-Binary-Element-Type: "signed 32-bit integer"\r\n'
        "X-Binary-Size-Fastest-Dimension: 16\r\nX-Binary-Size-Second-Dimension: 16\r\n\r\n"
    )
    path = tmp_path / "p.cbf"
    tail = b"\r\n--CIF-BINARY-FORMAT-SECTION----\r\n;\r\n"
    path.write_bytes(header.encode() + b"\x0c\x1a\x04\xd5" + bytes(40) + tail)
    monkeypatch.setitem(sys.modules, "pycbf", None)
    with pytest.raises(DataFormatError, match=r'needs pycbf: pip install "braggml\[cbf\]"'):
        open_frames(path)


def test_cbf_with_unsupported_compression(tmp_path: Path) -> None:
    path = write_cbf(tmp_path / "p.cbf", pilatus_frame())
    path.write_bytes(path.read_bytes().replace(b"x-CBF_BYTE_OFFSET", b"x-CBF_CANONICAL"))
    with pytest.raises(DataFormatError, match=r"p\.cbf: CBF compression x-CBF_CANONICAL is not supported"):
        open_frames(path)
    (tmp_path / "t.cbf").write_bytes(b"###CBF: VERSION 1.5\r\ndata_x\r\n")
    with pytest.raises(DataFormatError, match=r"t\.cbf: CBF file has no binary image section"):
        open_frames(tmp_path / "t.cbf")
    (tmp_path / "n.cbf").write_bytes(b"not a cbf at all")
    with pytest.raises(DataFormatError, match=r"n\.cbf: not a CBF file"):
        open_frames(tmp_path / "n.cbf")


def test_dataset_given_for_a_format_without_datasets(tmp_path: Path) -> None:
    np.save(tmp_path / "f.npy", np.zeros((16, 16)))
    with pytest.raises(DataFormatError, match=r"f\.npy: a dataset path \(/x\) was given, but npy files"):
        open_frames(f"{tmp_path / 'f.npy'}::/x")
