"""Batched U-Net finding (the GPU path), run here on the CPU: same peaks as the one-frame finder, in order."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from braggml.errors import ConfigError  # noqa: E402
from braggml.evaluate.matching import match_frame  # noqa: E402
from braggml.ml.unet import normalise_frame  # noqa: E402
from braggml.ml.unet_batch import BatchedUNetFinder  # noqa: E402
from braggml.ml.unet_finder import UNetFinder  # noqa: E402
from braggml.peaks import FrameRef, PeakList  # noqa: E402
from braggml.pipeline import find_in_frames  # noqa: E402
from braggml.simulate import Simulator, get_preset  # noqa: E402
from braggml.simulate.config import apply_overrides  # noqa: E402


@pytest.fixture(scope="module")
def run():
    """Four frames of the "test" preset (two panels, ice on some), their maps and the shipped finder on the CPU."""
    config = apply_overrides(get_preset("test"), {"background": {"ice_fraction": 0.5}})
    sim = Simulator(config, seed=11)
    frames = [sim.frame(k) for k in range(4)]
    finder = UNetFinder(device="cpu", precision="float32")
    return frames, sim.layout.pixel_maps(sim.wavelength_a), finder


def _rc(peaks: PeakList) -> np.ndarray:
    return np.column_stack([peaks.row, peaks.col])


def _shared(a: PeakList, b: PeakList, radius: float) -> int:
    return match_frame(_rc(a), _rc(b), radius)[0].size if len(a) and len(b) else 0


@pytest.mark.parametrize("flips", [1, 4])
def test_batched_peaks_match_the_one_frame_finder(run, flips: int) -> None:
    frames, maps, finder = run
    if flips != 1:  # the whole frames and the tiles are flipped alike
        finder = UNetFinder(device="cpu", precision="float32", flips=flips)
        assert finder.model.flips == flips
    single = [finder.find(f.image, maps.mask, maps=maps) for f in frames]
    with BatchedUNetFinder(finder, frames[0].image.shape, maps=maps, mask=maps.mask, batch_size=3) as batched:
        streamed = list(batched.find_stream(f.image for f in frames))
    assert len(streamed) == len(frames)
    total = sum(len(p) for p in single)
    assert total > 40
    shared = sum(_shared(a, b, 0.05) for a, b in zip(streamed, single))
    # the device path normalises with its own (float32, fixed-pass) statistics: nearly every peak is the same
    assert shared >= 0.95 * total
    assert abs(sum(len(p) for p in streamed) - total) <= 0.03 * total
    for a, b in zip(streamed, single):
        m_a, m_b = match_frame(_rc(a), _rc(b), 0.05)
        np.testing.assert_allclose(a.intensity[m_a], b.intensity[m_b], rtol=0.02, atol=1.0)


def test_worker_processes_give_identical_peaks(run) -> None:
    frames, maps, finder = run
    images = np.stack([f.image for f in frames])
    with BatchedUNetFinder(finder, images.shape[1:], maps=maps, mask=maps.mask, batch_size=2) as local:
        expected = local.find_batch(images)
    with BatchedUNetFinder(finder, images.shape[1:], maps=maps, mask=maps.mask, batch_size=2, workers=2) as pool:
        got = list(pool.find_stream(images))
    for a, b in zip(got, expected):
        for name in ("row", "col", "intensity", "snr", "score", "n_pixels"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_each_frame_keeps_its_own_bad_pixels(run) -> None:
    frames, maps, finder = run
    image = frames[0].image
    with BatchedUNetFinder(finder, image.shape, maps=maps, mask=maps.mask, batch_size=2) as batched:
        clean = batched.find_batch(image[None])[0]
        strongest = int(np.argmax(clean.intensity))
        r, c = int(round(clean.row[strongest])), int(round(clean.col[strongest]))
        bad = np.zeros(image.shape, bool)
        bad[max(r - 4, 0) : r + 5, max(c - 4, 0) : c + 5] = True
        masked, same = list(batched.find_stream([(image, bad), (image, None)]))
    assert len(masked) < len(clean)
    assert np.min(np.hypot(masked.row - r, masked.col - c)) > 3
    np.testing.assert_array_equal(same.row, clean.row)


def test_wrong_frames_and_settings_are_rejected(run) -> None:
    frames, maps, finder = run
    shape = frames[0].image.shape
    with BatchedUNetFinder(finder, shape, maps=maps) as batched, pytest.raises(ConfigError, match="frames must have"):
        batched.find_batch(np.zeros((2, shape[0], shape[1] + 1), np.float32))
    with pytest.raises(ConfigError, match="batch_size"):
        BatchedUNetFinder(finder, shape, maps=maps, batch_size=0)
    with pytest.raises(ConfigError, match="maps have shape"):
        BatchedUNetFinder(finder, (shape[0] + 1, shape[1]), maps=maps)
    with pytest.raises(ConfigError, match="UNetFinder"):
        BatchedUNetFinder(object(), shape)  # type: ignore[arg-type]


def test_a_run_goes_through_the_batch_runner_in_order(run, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU ``find_in_frames`` hands the frames to the batch runner; unreadable frames keep their place."""
    frames, maps, finder = run
    expected = [finder.find(f.image, maps.mask, maps=maps) for f in frames]
    made: list[BatchedUNetFinder] = []

    def runner(self, shape, *, mask=None, maps=None):
        made.append(BatchedUNetFinder(self, shape, maps=maps, mask=mask, batch_size=3))
        return made[-1]

    monkeypatch.setattr(UNetFinder, "batch_runner", runner)
    refs = [FrameRef("run.h5", "/data", k) for k in range(6)]
    items = [
        (None, refs[0], "unreadable"),
        (frames[0].image, refs[1], None),
        (frames[1].image, refs[2], None),
        (None, refs[3], "truncated"),
        (frames[2].image, refs[4], None),
        (frames[3].image, refs[5], None),
    ]
    peaks, summary = find_in_frames(finder, items, mask=maps.mask, maps=maps, progress=False)
    assert len(made) == 1
    assert summary.n_frames == 6 and len(summary.failures) == 2
    assert "unreadable" in summary.failures[0] and "truncated" in summary.failures[1]
    assert [str(r) for r in peaks.frames] == [str(r) for r in refs]
    counts = peaks.counts_per_frame()
    assert counts[0] == 0 and counts[3] == 0
    assert summary.n_peaks == len(peaks)
    for k, want in zip((1, 2, 4, 5), expected):
        got = peaks.for_frame(k)
        assert abs(len(got) - len(want)) <= max(2, 0.05 * len(want))
        assert _shared(got, want, 0.05) >= 0.9 * len(want)


def test_without_ring_rules_no_ring_evidence_is_needed(run) -> None:
    frames, maps, finder = run
    plain = UNetFinder(device="cpu", precision="float32", reject_powder_rings=False, ice_rings="off")
    images = np.stack([f.image for f in frames])
    with BatchedUNetFinder(plain, images.shape[1:], maps=maps, mask=maps.mask, batch_size=4) as batched:
        assert all(p.rings is None for p in batched.device_pixels(images))
        got = batched.find_batch(images)
    expected = [plain.find(f.image, maps.mask, maps=maps) for f in frames]
    assert [len(p) for p in got] == [len(p) for p in expected]
    assert "powder_ring" not in batched.rejected and "ice_ring" not in batched.rejected


def test_batches_shrink_to_the_free_device_memory() -> None:
    from braggml.ml.unet_batch import DEVICE_BYTES_PER_PIXEL, FLIP_BYTES_PER_PIXEL, batch_that_fits

    pixels = 18_000_000  # an Eiger 16M frame
    assert batch_that_fits(8, pixels, 200 * 2**30) == 8
    free = int(3.5 * DEVICE_BYTES_PER_PIXEL * pixels / 0.8)
    assert batch_that_fits(8, pixels, free) == 3
    assert batch_that_fits(8, pixels, 1) == 1
    exactly_three = int(np.ceil(3 * DEVICE_BYTES_PER_PIXEL * pixels / 0.8))
    assert batch_that_fits(8, pixels, exactly_three) == 3
    assert batch_that_fits(8, pixels, exactly_three, flips=4) == 2  # the flipped copies' buffers count too
    with_copies = int(np.ceil(3 * (DEVICE_BYTES_PER_PIXEL + FLIP_BYTES_PER_PIXEL) * pixels / 0.8))
    assert batch_that_fits(8, pixels, with_copies, flips=2) == 3


def test_elliptical_powder_ring_rejected_on_both_paths() -> None:
    """A faint grainy ring whose radius wanders by +-3 px around the beam (a tilted detector): only the ring
    counts by azimuthal sector find it, on the device as on the host; the spots off the ring stay."""
    from braggml.geometry import PixelMaps

    rng = np.random.default_rng(13)
    shape = (600, 600)
    rows, cols = np.indices(shape, dtype=np.float64)
    dr, dc = rows - 299.5, cols - 299.5
    ring_radius = 240.0 + 3.0 * np.cos(2 * np.arctan2(dr, dc))
    image = 10.0 + 5.0 * np.exp(-((np.hypot(dr, dc) - ring_radius) ** 2) / (2 * 0.8**2))
    azimuths = rng.uniform(0, 2 * np.pi, 80)
    grain_radius = 240.0 + 3.0 * np.cos(2 * azimuths)
    grains = [(299.5 + g * np.sin(a), 299.5 + g * np.cos(a)) for g, a in zip(grain_radius, azimuths)]
    spots = [(150.3, 420.7), (420.2, 160.4), (300.6, 120.1), (80.4, 300.2), (560.3, 380.3)]
    for amplitude, centres in ((100.0, grains), (300.0, spots)):
        for r0, c0 in centres:
            image += amplitude * np.exp(-((rows - r0) ** 2 + (cols - c0) ** 2) / 2.0)
    image = rng.poisson(image).astype(np.int32)
    maps = PixelMaps.fallback(shape)
    finder = UNetFinder(device="cpu", precision="float32")
    single = finder.find(image, maps=maps)
    with BatchedUNetFinder(finder, shape, maps=maps, batch_size=1) as batched:
        (streamed,) = batched.find_batch(image[None])
    truth = np.array(spots)
    for peaks in (single, streamed):
        assert len(peaks) == len(spots)
        nearest = np.hypot(peaks.row[None, :] - truth[:, :1], peaks.col[None, :] - truth[:, 1:]).min(axis=1)
        assert np.all(nearest < 1.0)
    assert batched.rejected.get("powder_ring", 0) >= 10 and finder.last_rejections.get("powder_ring", 0) >= 10


def test_photon_spots_are_seeded_alike_on_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a network that marks nothing, every peak of a sparse photon-counting frame comes from the photon
    seeds; the device path seeds and measures them as the one-frame finder does."""
    rng = np.random.default_rng(4)
    frames = []
    for k in range(3):
        image = rng.poisson(0.15, (96, 160)).astype(np.int32)
        for r, c in rng.uniform(8, 88, (6, 2)) * [1, 1.6]:
            r, c = int(r), int(c)
            image[r - 1 : r + 2, c - 1 : c + 2] += rng.poisson(np.array([[0.5, 2, 0.5], [2, 10 + k, 2], [0.5, 2, 0.5]]))
        frames.append(image)
    finder = UNetFinder(device="cpu", precision="float32", reject_powder_rings=False)
    single = [finder.peaks_from_probability(np.zeros(f.shape, np.float32), normalise_frame(f)) for f in frames]
    with BatchedUNetFinder(finder, frames[0].shape, batch_size=2) as batched:
        monkeypatch.setattr(batched, "_probability", lambda inputs: torch.zeros(inputs.shape[0], *inputs.shape[2:]))
        streamed = list(batched.find_stream(frames))
    total = sum(len(p) for p in single)
    assert total >= 12  # most of the 18 spots
    assert [len(p) for p in streamed] == [len(p) for p in single]
    for a, b in zip(streamed, single):
        assert _shared(a, b, 0.05) == len(b)
        np.testing.assert_allclose(np.sort(a.intensity), np.sort(b.intensity), rtol=1e-4)
    off = UNetFinder(device="cpu", precision="float32", reject_powder_rings=False, photon_spots="off")
    with BatchedUNetFinder(off, frames[0].shape, batch_size=2) as batched:
        monkeypatch.setattr(batched, "_probability", lambda inputs: torch.zeros(inputs.shape[0], *inputs.shape[2:]))
        assert sum(len(p) for p in batched.find_stream(frames)) == 0


def test_counting_frames_are_tested_alike_on_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """On sparse photon-counting frames both paths count a photon per count and ask the regions the network marks
    for the counting margin: a 15-photon cluster that passes 5 sigmas but not 5.5 is dropped on each, a sharp
    spot kept."""
    frames = []
    for seed in (3, 5):
        image = np.random.default_rng(seed).poisson(0.5, (128, 128)).astype(np.int32)
        image[60:63, 60:63] = [[0, 2, 0], [2, 7, 2], [0, 2, 0]]
        image[20:23, 100:103] = [[0, 3, 0], [1, 9, 5], [0, 1, 0]]
        frames.append(image)
    prob = np.zeros((128, 128), np.float32)
    prob[60:63, 60:63] = prob[21, 101] = 1.0
    finder = UNetFinder(device="cpu", precision="float32", reject_powder_rings=False)
    single = [finder.peaks_from_probability(prob, normalise_frame(f)) for f in frames]
    with BatchedUNetFinder(finder, frames[0].shape, batch_size=2) as batched:
        monkeypatch.setattr(batched, "_probability", lambda inputs: torch.as_tensor(prob).repeat(len(inputs), 1, 1))
        streamed = list(batched.find_stream(frames))
    spot, cluster = (
        PeakList.from_columns(n_frames=1, row=np.array([r]), col=np.array([c])) for r, c in [(21, 101), (61, 61)]
    )
    assert _shared(single[0], cluster, 2.0) == 0
    for a, b in zip(streamed, single):
        assert _shared(b, spot, 1.0) == 1
        assert len(a) == len(b) and _shared(a, b, 0.05) == len(b)
