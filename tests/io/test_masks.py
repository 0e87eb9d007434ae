"""Sentinel pixels, detector kind, and mask files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from braggml.errors import ConfigError, DataFormatError, InputNotFoundError
from braggml.io import detector_kind_from_text, guess_detector_kind, invalid_pixels, load_mask

# -- invalid_pixels ------------------------------------------------------------------------------------------


def test_pilatus_int32_sentinels() -> None:
    frame = np.array([[0, 5, -1, -2], [1046527, 99, 100, 101]], dtype=np.int32)
    before = frame.copy()
    bad = invalid_pixels(frame, detector_kind="photon-counting")
    assert bad.tolist() == [[False, False, True, True], [True, False, False, False]]
    bad = invalid_pixels(frame, detector_kind="photon-counting", saturation=100)
    assert bad.tolist() == [[False, False, True, True], [True, False, True, True]]
    np.testing.assert_array_equal(frame, before)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_eiger_unsigned_gap_value(dtype: type) -> None:
    top = np.iinfo(dtype).max
    frame = np.array([[0, 3, top], [top - 1, 7, 1]], dtype=dtype)
    bad = invalid_pixels(frame, detector_kind="photon-counting")
    assert bad.tolist() == [[False, False, True], [False, False, False]]
    assert invalid_pixels(frame, detector_kind="unknown").tolist() == bad.tolist()
    assert not invalid_pixels(frame, detector_kind="integrating").any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int16])
def test_integrating_negatives_are_never_masked(dtype: type) -> None:
    rng = np.random.default_rng(1)
    frame = rng.normal(0.0, 5.0, size=(32, 32)).astype(dtype)
    frame[0, 0] = -1
    frame[0, 1] = -2
    frame[0, 2] = -5136
    assert (frame < 0).sum() > 100
    assert not invalid_pixels(frame, detector_kind="integrating").any()
    assert not invalid_pixels(frame, detector_kind="unknown").any()


def test_nan_and_inf_masked_for_every_kind() -> None:
    frame = np.array([[np.nan, 1.0], [np.inf, -np.inf]], dtype=np.float32)
    for kind in ("photon-counting", "integrating", "unknown"):
        assert invalid_pixels(frame, detector_kind=kind).tolist() == [[True, False], [True, True]]


def test_saturation_applies_to_integrating_data() -> None:
    frame = np.array([[16383, 16382, -40]], dtype=np.int32)
    assert invalid_pixels(frame, detector_kind="integrating", saturation=16383).tolist() == [[True, False, False]]


def test_overload_only_for_int32_photon_counting() -> None:
    frame = np.array([[1046527, 2**20 - 1, 1]], dtype=np.int32)
    assert invalid_pixels(frame, detector_kind="photon-counting").tolist() == [[True, True, False]]
    frame = np.array([[1046527, 1]], dtype=np.int64)
    assert not invalid_pixels(frame, detector_kind="photon-counting").any()
    assert not invalid_pixels(frame.astype(np.int32), detector_kind="integrating").any()


def test_invalid_kind_rejected() -> None:
    with pytest.raises(ConfigError, match="detector_kind must be one of photon-counting, integrating, unknown"):
        invalid_pixels(np.zeros((2, 2)), detector_kind="counting")


# -- detector kind ---------------------------------------------------------------------------------------------


def test_guess_detector_kind() -> None:
    pilatus = np.array([[0, 3, -1], [-2, 7, 1]], dtype=np.int32)
    assert guess_detector_kind(pilatus) == "photon-counting"
    # thermolysin CSPAD: int32 with -1 gaps, but real pixels down to -10 and one at -5136
    cspad = np.array([[-1, -1, 4], [-10, 2, -5136]], dtype=np.int32)
    assert guess_detector_kind(cspad) == "integrating"
    assert guess_detector_kind(np.array([[0.5, 2.0]], dtype=np.float32)) == "integrating"
    assert guess_detector_kind(np.array([[0, 65535]], dtype=np.uint16)) == "unknown"
    assert guess_detector_kind(np.array([[0, 12]], dtype=np.int32)) == "unknown"


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("PILATUS3 6M, S/N 60-0119", "photon-counting"),
        ("Dectris EIGER2 Si 16M", "photon-counting"),
        ("CS PAD", "integrating"),
        ("CSPAD 2.3M, 32 two-by-one sensors", "integrating"),
        ("Jungfrau 4M", "integrating"),
        ("ePix10k2M", "integrating"),
        ("Rayonix MX340-XFEL", "integrating"),
        ("sCMOS camera", "integrating"),
        ("lossless JPEG 2000 decoded with Pillow", None),
        ("", None),
    ],
)
def test_detector_kind_from_text(text: str, kind: str | None) -> None:
    assert detector_kind_from_text(text) == kind


# -- load_mask ---------------------------------------------------------------------------------------------------


def _mask(shape: tuple[int, int] = (20, 24)) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[2, 3] = 1
    mask[:, 0] = 4
    return mask


@pytest.mark.parametrize(
    "path",
    [
        "/entry_1/data_1/mask",
        "/entry/instrument/detector/pixel_mask",
        "/entry/instrument/detector/detectorSpecific/pixel_mask",
        "/mask",
        "/data/data",
    ],
)
def test_load_mask_hdf5_auto_path(tmp_path: Path, path: str) -> None:
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f[path] = _mask()
        f["other/thing"] = np.ones((3, 3))
    bad = load_mask(str(tmp_path / "m.h5"), shape=(20, 24))
    assert bad.dtype == bool
    np.testing.assert_array_equal(bad, _mask() != 0)


def test_load_mask_explicit_dataset_and_polarity(tmp_path: Path) -> None:
    good = np.ones((20, 24), np.int32)
    good[5, 6] = 0  # CrystFEL style: 1 = good
    with h5py.File(tmp_path / "cf.h5", "w") as f:
        f["entry/data/data"] = np.ones((20, 24))
        f["masks/good_pixels"] = good
    bad = load_mask(f"{tmp_path / 'cf.h5'}::/masks/good_pixels", shape=(20, 24), one_means_good=True)
    assert np.argwhere(bad).tolist() == [[5, 6]]
    bad = load_mask(f"{tmp_path / 'cf.h5'}::/masks/good_pixels", shape=(20, 24))
    assert bad.sum() == 20 * 24 - 1


def test_load_mask_numpy_and_leading_axis(tmp_path: Path) -> None:
    np.save(tmp_path / "m.npy", _mask()[None])
    np.testing.assert_array_equal(load_mask(tmp_path / "m.npy", shape=(20, 24)), _mask() != 0)
    np.savez(tmp_path / "m.npz", mask=_mask(), other=np.ones(3))
    np.testing.assert_array_equal(load_mask(str(tmp_path / "m.npz"), shape=None), _mask() != 0)
    float_mask = _mask().astype(np.float32)
    float_mask[9, 9] = np.nan
    np.save(tmp_path / "f.npy", float_mask)
    assert load_mask(tmp_path / "f.npy", shape=(20, 24))[9, 9]
    assert load_mask(tmp_path / "f.npy", shape=(20, 24), one_means_good=True)[9, 9]


def test_load_mask_tiff(tmp_path: Path) -> None:
    import fabio.tifimage

    fabio.tifimage.TifImage(data=_mask().astype(np.int32)).write(str(tmp_path / "m.tif"))
    np.testing.assert_array_equal(load_mask(tmp_path / "m.tif", shape=(20, 24)), _mask() != 0)


def test_load_mask_wrong_shape_names_file_dataset_and_shapes(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["entry_1/data_1/mask"] = _mask()
    with pytest.raises(
        DataFormatError,
        match=r"m\.h5::/entry_1/data_1/mask: mask shape \(20, 24\) does not match the frame shape \(32, 32\)",
    ):
        load_mask(str(tmp_path / "m.h5"), shape=(32, 32))


def test_load_mask_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match=r"none\.h5: no such mask file"):
        load_mask(str(tmp_path / "none.h5"), shape=None)
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["a"] = np.zeros((20, 24))
        f["b"] = np.zeros((20, 24))
    with pytest.raises(DataFormatError, match=r"two\.h5: cannot tell which dataset is the mask; give FILE::/dataset"):
        load_mask(str(tmp_path / "two.h5"), shape=(20, 24))
    with pytest.raises(InputNotFoundError, match=r"two\.h5: no dataset '/c'"):
        load_mask(f"{tmp_path / 'two.h5'}::/c", shape=(20, 24))
    np.save(tmp_path / "three.npy", np.zeros((2, 20, 24)))
    with pytest.raises(DataFormatError, match=r"three\.npy: mask of shape \(2, 20, 24\) is not one frame"):
        load_mask(tmp_path / "three.npy", shape=(20, 24))


def test_single_2d_dataset_is_taken_as_mask(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "one.h5", "w") as f:
        f["my_mask"] = _mask()
        f["notes"] = np.arange(4)
    np.testing.assert_array_equal(load_mask(str(tmp_path / "one.h5"), shape=(20, 24)), _mask() != 0)


@pytest.mark.parametrize("name", ["hot.h5", "hot.hdf5", "hot.npy"])
def test_write_mask_round_trip(tmp_path: Path, name: str) -> None:
    from braggml.io.masks import write_mask

    mask = np.zeros((6, 9), bool)
    mask[1, 2] = mask[5, 8] = True
    path = write_mask(mask, tmp_path / name)
    assert np.array_equal(load_mask(path, shape=(6, 9)), mask)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary left behind


def test_write_mask_rejects_bad_names_and_shapes(tmp_path: Path) -> None:
    from braggml.io.masks import write_mask

    with pytest.raises(ConfigError, match=r"mask file must end in \.h5"):
        write_mask(np.zeros((4, 4), bool), tmp_path / "mask.tif")
    with pytest.raises(ConfigError, match="must be 2-D"):
        write_mask(np.zeros((2, 4, 4), bool), tmp_path / "mask.h5")
    assert list(tmp_path.iterdir()) == []
