"""Simulated-frame files: CXI layout, truth round trip, atomic writing, shards, errors."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from braggml.errors import DataFormatError, InputNotFoundError
from braggml.io.simfile import (
    DATA_PATH,
    MASK_PATH,
    SimFileWriter,
    iter_sim_frames,
    read_sim_footprint,
    read_sim_frame,
    read_sim_mask,
    read_sim_pixel_maps,
    read_truth,
)
from braggml.simulate import FRAME_COLUMNS, SPOT_COLUMNS, Simulator, apply_overrides, get_preset, simulate_to_file


def config(**sections: dict):
    base = {"crystal": {"hit_fraction": 0.7, "multi_lattice_fraction": 0.3}}
    base.update(sections)
    return apply_overrides(get_preset("test"), base)


@pytest.fixture(scope="module")
def sim_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "frames.h5"
    simulate_to_file(path, 6, config(), seed=9)
    return path


def test_cxi_layout_chunked_and_compressed(sim_file) -> None:
    with h5py.File(sim_file) as f:
        data = f[DATA_PATH]
        assert data.shape == (6, 256, 256) and data.dtype == np.float32
        assert data.chunks == (1, 256, 256)
        assert data.id.get_create_plist().get_nfilters() > 0  # compressed
        assert f[MASK_PATH].shape == (256, 256)
        assert f["/entry_1/instrument_1/detector_1/distance"][()] == pytest.approx(0.025)
        assert f["/truth/footprint"].chunks == (1, 256, 256)
        params = json.loads(f["/truth"].attrs["parameters"])
    assert params["seed"] == 9 and params["config"]["detector"]["distance_mm"] == 25.0
    assert params["geometry"]["beam_center_rowcol"][0] == pytest.approx(127.5 + 3.3)


def test_truth_round_trip_matches_simulator(sim_file) -> None:
    truth = read_truth(sim_file)
    sim = Simulator(config(), seed=9)
    assert truth.n_frames == 6
    assert set(SPOT_COLUMNS) <= set(truth.spots) and set(FRAME_COLUMNS) <= set(truth.frames)
    np.testing.assert_array_equal(truth.mask, sim.layout.mask)
    np.testing.assert_array_equal(read_sim_mask(sim_file), sim.layout.mask)
    for k in range(6):
        frame = sim.frame(k)
        np.testing.assert_array_equal(read_sim_frame(sim_file, k), frame.image)
        np.testing.assert_array_equal(read_sim_footprint(sim_file, k), frame.footprint)
        assert bool(truth.hit[k]) == frame.info["hit"]
        peaks = truth.peaks.for_frame(k)
        keep = frame.spots["observable"]
        np.testing.assert_allclose(np.sort(peaks.row), np.sort(frame.spots["row"][keep]))
        np.testing.assert_allclose(np.sort(peaks.snr), np.sort(frame.spots["snr"][keep]))
        if not frame.info["hit"]:
            assert len(peaks) == 0
    assert truth.peaks.frames[2].dataset == DATA_PATH and truth.peaks.frames[2].index == 2
    assert np.isfinite(truth.peaks.snr).all() and (truth.peaks.n_pixels > 0).all()
    strong = read_truth(sim_file, min_snr=5.0)
    assert 0 < len(strong.peaks) < len(truth.peaks) and (strong.peaks.snr >= 5).all()
    assert sum(1 for _ in iter_sim_frames(sim_file)) == 6


def test_shards_hold_the_same_frames(sim_file, tmp_path) -> None:
    shard = tmp_path / "shard.h5"
    simulate_to_file(shard, 2, config(), seed=9, first_frame=3)
    whole = read_truth(sim_file)
    part = read_truth(shard)
    np.testing.assert_array_equal(part.frames["index"], [3, 4])
    for slot, k in enumerate((3, 4)):
        np.testing.assert_array_equal(read_sim_frame(shard, slot), read_sim_frame(sim_file, k))
        np.testing.assert_allclose(part.peaks.for_frame(slot).col, whole.peaks.for_frame(k).col)


def test_counting_detector_file_keeps_dtype_and_gap_value(tmp_path) -> None:
    cfg = config(detector={"mode": "counting", "gain_adu_per_photon": 1.0, "dtype": "int32", "gap_value": "minus_one"},
                 compression="gzip")
    path = simulate_to_file(tmp_path / "pilatus_like.h5", 1, cfg, seed=1)
    frame = read_sim_frame(path, 0)
    assert frame.dtype == np.int32
    assert (frame[read_sim_mask(path) & (frame < 0)] == -1).all() and (frame[124:132] == -1).all()


def test_failed_write_leaves_no_file(tmp_path) -> None:
    path = tmp_path / "broken.h5"
    sim = Simulator(config(), seed=0)
    with pytest.raises(RuntimeError, match="stop"):
        with SimFileWriter(
            path, n_frames=2, shape=sim.layout.shape, dtype=np.float32, mask=sim.layout.mask,
            spot_columns=SPOT_COLUMNS, frame_columns=FRAME_COLUMNS, parameters=sim.parameters(),
        ) as writer:
            frame = sim.frame(0)
            writer.write(0, image=frame.image, footprint=frame.footprint, spots=frame.spots, info=frame.info,
                         index=0, orientations=frame.orientations)
            raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []


def test_incomplete_file_is_refused(tmp_path) -> None:
    sim = Simulator(config(), seed=0)
    writer = SimFileWriter(
        tmp_path / "short.h5", n_frames=2, shape=sim.layout.shape, dtype=np.float32, mask=sim.layout.mask,
        spot_columns=SPOT_COLUMNS, frame_columns=FRAME_COLUMNS, parameters=sim.parameters(),
    )
    with pytest.raises(ValueError, match="never written"):
        writer.close()
    assert list(tmp_path.iterdir()) == []


def test_reading_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(InputNotFoundError, match="missing.h5"):
        read_truth(tmp_path / "missing.h5")
    other = tmp_path / "plain.h5"
    with h5py.File(other, "w") as f:
        f["entry/data/data"] = np.zeros((1, 4, 4))
    with pytest.raises(DataFormatError, match=r"plain.h5.*/truth"):
        read_truth(other)
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(DataFormatError, match="notes.h5"):
        read_truth(text)


def test_pixel_maps_match_the_simulated_geometry(sim_file) -> None:
    maps = read_sim_pixel_maps(sim_file)
    sim = Simulator(config(), seed=9)
    np.testing.assert_array_equal(maps.panel_id, sim.layout.panel_id)
    np.testing.assert_array_equal(maps.mask, sim.layout.mask)
    np.testing.assert_allclose(maps.radius_px, sim.layout.radius_px, atol=1e-3)
    truth = read_truth(sim_file)
    spots = truth.spots
    ok = spots["observable"]
    d_at_centre = maps.resolution_a[np.rint(spots["row"][ok]).astype(int), np.rint(spots["col"][ok]).astype(int)]
    rel = np.abs(d_at_centre / spots["resolution_a"][ok] - 1.0)
    assert np.median(rel) < 0.005 and rel.max() < 0.05  # nearest pixel is up to 0.7 px off the centre
