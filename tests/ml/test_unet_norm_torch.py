"""Batched normalisation on a torch device against the one-frame CPU path (:func:`normalise_frame`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from braggml.classical._common import prepare_frame  # noqa: E402
from braggml.classical.rings import azimuth_sectors, ring_evidence  # noqa: E402
from braggml.errors import ConfigError  # noqa: E402
from braggml.geometry import PixelMaps  # noqa: E402
from braggml.ml.unet import NormConfig, normalise_frame  # noqa: E402
from braggml.ml.unet_norm_torch import TorchNormalised, TorchNormaliser  # noqa: E402
from braggml.simulate import Simulator, get_preset  # noqa: E402
from braggml.simulate.config import apply_overrides  # noqa: E402


def _simulated(config, n: int, seed: int) -> tuple[list[np.ndarray], PixelMaps]:
    sim = Simulator(config, seed=seed)
    return [sim.frame(k).image for k in range(n)], sim.layout.pixel_maps(sim.wavelength_a)


def _relative(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b) / np.maximum(np.abs(a), 1e-6)


def _agreement(
    frames: list[np.ndarray],
    maps: PixelMaps,
    mask: np.ndarray | None,
    *,
    config: NormConfig | None = None,
) -> tuple[TorchNormalised, list[dict[str, float]]]:
    """Normalise ``frames`` both ways and measure how far apart the results are, frame by frame."""
    normaliser = TorchNormaliser(frames[0].shape, maps=maps, mask=mask, config=config)
    batch = torch.as_tensor(np.stack(frames))
    before = batch.clone()
    out = normaliser(batch)
    torch.testing.assert_close(batch, before, rtol=0, atol=0, equal_nan=True)  # the frames are not modified
    n, (h, w) = len(frames), frames[0].shape
    assert out.inputs.shape == (n, 2, h, w) and out.inputs.dtype == torch.float32
    for name in ("residual", "background", "noise"):
        assert getattr(out, name).shape == (n, h, w) and getattr(out, name).dtype == torch.float32
    assert out.bad.dtype == torch.bool and len(out.gains) == len(out.stats) == n
    measured = []
    for i, image in enumerate(frames):
        ref = normalise_frame(image, mask, maps=maps, config=config)
        assert ref.stats is not None
        good = ~ref.bad
        prepared = prepare_frame(image, mask, maps)
        sectors = azimuth_sectors(maps.radius_px, maps.panel_id)
        cpu_rings = ring_evidence(prepared.data, ~prepared.bad, ref.stats, contrast=1.0, sectors=sectors)
        rings = out.rings(i)
        cpu_sector, sector = cpu_rings.sector_fraction(), rings.sector_fraction()
        assert cpu_sector is not None and sector is not None
        np.testing.assert_array_equal(np.isnan(cpu_sector), np.isnan(sector))
        np.testing.assert_array_equal(cpu_rings.sector_counts()[1], rings.sector_counts()[1])
        background = out.background[i].numpy()
        noise = out.noise[i].numpy()
        stats = out.stats[i]
        measured.append(
            {
                "bad_equal": float(np.array_equal(ref.bad, out.bad[i].numpy())),
                "gain_rel": abs(out.gains[i] - ref.gain) / max(abs(ref.gain), 1e-12),
                "background_median_rel": float(np.median(_relative(ref.background[good], background[good]))),
                "background_p99_rel": float(np.percentile(_relative(ref.background[good], background[good]), 99)),
                "noise_median_rel": float(np.median(_relative(ref.noise[good], noise[good]))),
                "noise_p99_rel": float(np.percentile(_relative(ref.noise[good], noise[good]), 99)),
                "inputs_p999_abs": float(np.percentile(np.abs(ref.inputs[0] - out.inputs[i, 0].numpy()), 99.9)),
                "ring_fraction_abs": float(np.abs(cpu_rings.fraction - rings.fraction).max()),
                "ring_raised_equal": float(np.array_equal(cpu_rings.raised, rings.raised)),
                "ring_sector_abs": float(np.nan_to_num(np.abs(cpu_sector - sector)).max()),
                "count_equal": float(np.array_equal(ref.stats.count, stats.count)),
                "offset_abs": float(np.abs(ref.stats.offset - stats.offset).max()),
            }
        )
        np.testing.assert_array_equal(stats.bin_index, ref.stats.bin_index)
        np.testing.assert_array_equal(out.inputs[i, 1].numpy() > 0, ref.bad)
    return out, measured


def _check(measured: list[dict[str, float]]) -> None:
    for m in measured:
        assert m["bad_equal"] and m["count_equal"] and m["ring_raised_equal"], m
        assert m["gain_rel"] < 0.02, m
        assert m["background_median_rel"] < 0.01 and m["background_p99_rel"] < 0.05, m
        assert m["noise_median_rel"] < 0.01 and m["noise_p99_rel"] < 0.05, m
        assert m["inputs_p999_abs"] < 0.05, m
        assert m["ring_fraction_abs"] < 0.02 and m["ring_sector_abs"] < 0.05, m


def test_integrating_frames_match_the_cpu_path() -> None:
    frames, maps = _simulated(get_preset("test"), 3, seed=5)
    out, measured = _agreement(frames, maps, maps.mask)
    _check(measured)
    # the statistics are those of the CPU passes, not just close to them
    assert max(m["offset_abs"] for m in measured) < 1e-3
    assert all(g > 1 for g in out.gains)  # 12 ADU per photon in the preset
    assert len({round(g, 6) for g in out.gains}) == 3  # each frame its own gain


def test_counting_frames_with_gaps_match_the_cpu_path() -> None:
    """Pilatus-like int32 frames: -1 in the gaps between six modules, integer counts."""
    config = apply_overrides(
        get_preset("pilatus6m"),
        {
            "detector": {"module_shape": [97, 243], "module_grid": [3, 2], "distance_mm": 120.0},
            "crystal": {"hit_fraction": 1.0},
        },
    )
    config = apply_overrides(config, {"detector": {"beam_center_rowcol": None}})
    frames, maps = _simulated(config, 2, seed=3)
    assert frames[0].dtype == np.int32 and (frames[0] == -1).any() and maps.n_panels == 6
    out, measured = _agreement(frames, maps, maps.mask)
    _check(measured)
    assert out.bad[0].numpy()[frames[0] == -1].all()


def test_float_frames_with_gain_and_non_finite_pixels_match_the_cpu_path() -> None:
    """Jungfrau-like float frames (30 ADU per photon, not whole numbers) with NaN and inf pixels."""
    config = apply_overrides(get_preset("test"), {"detector": {"adu_step": 0.0, "gain_adu_per_photon": 30.0}})
    frames, maps = _simulated(config, 2, seed=9)
    frames[1] = frames[1].copy()
    frames[1][5:9, 40:60] = np.nan
    frames[1][100, 100] = np.inf
    assert frames[0].dtype == np.float32 and not np.all(frames[0] == np.floor(frames[0]))
    out, measured = _agreement(frames, maps, maps.mask)
    _check(measured)
    assert out.bad[1, 5:9, 40:60].all() and out.bad[1, 100, 100] and not out.bad[0, 5:9, 40:60].any()
    assert all(abs(g - 30.0) < 6.0 for g in out.gains)
    assert torch.isfinite(out.inputs).all()


def test_user_mask_fallback_maps_and_integer_dtypes() -> None:
    """No maps (one panel, radius from the centre), a user mask, uint16 frames, a constant frame."""
    rng = np.random.default_rng(4)
    shape = (90, 110)
    frames = [rng.poisson(4.0, shape).astype(np.uint16), np.full(shape, 7, np.uint16)]
    mask = np.zeros(shape, bool)
    mask[10:20, 30:35] = True
    maps = PixelMaps.fallback(shape)
    normaliser = TorchNormaliser(shape, mask=mask)
    out = normaliser(torch.as_tensor(np.stack(frames).astype(np.int32)))
    for i, image in enumerate(frames):
        ref = normalise_frame(image, mask, maps=maps)
        np.testing.assert_array_equal(out.bad[i].numpy(), ref.bad)
        assert abs(out.gains[i] - ref.gain) <= 0.02 * ref.gain
        np.testing.assert_allclose(out.background[i].numpy(), ref.background, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.noise[i].numpy(), ref.noise, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.inputs[i].numpy(), ref.inputs, atol=1e-4)
    assert out.gains[1] == 1.0 and torch.all(out.inputs[1, 0] == 0)  # whole numbers without a trend: 1 per count


def test_rings_are_counted_only_when_asked() -> None:
    rng = np.random.default_rng(3)
    shape = (201, 201)
    maps = PixelMaps.fallback(shape)
    radius = np.asarray(maps.radius_px)
    image = rng.poisson(10.0 + 40.0 * (np.abs(radius - 60.0) < 1.5)).astype(np.int32)
    normaliser = TorchNormaliser(shape, maps=maps)
    out = normaliser(torch.as_tensor(image[None]))
    rings = out.rings(0)
    assert rings.on_ring(0.4)[60] and not rings.on_ring(0.4)[30]
    n_groups = int(out.stats[0].radius_bin.max()) + 1
    assert out.ring_above is not None and out.ring_total is not None
    assert out.ring_above.shape == out.ring_total.shape == (1, n_groups)
    assert rings.fraction.size == int(np.rint(radius.max())) + 1  # per rounded radius, as ring_evidence
    bare = normaliser(torch.as_tensor(image[None]), rings=False)
    assert bare.ring_above is None and bare.ring_levels is None
    with pytest.raises(ValueError, match="rings=False"):
        bare.rings(0)
    with pytest.raises(IndexError, match="not in a batch of 1"):
        out.rings(3)
    torch.testing.assert_close(bare.inputs, out.inputs)


def test_wrong_shapes_and_settings_are_rejected() -> None:
    maps = PixelMaps.fallback((30, 40))
    with pytest.raises(ValueError, match="shape must be two positive integers"):
        TorchNormaliser((30,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape must be two positive integers"):
        TorchNormaliser((0, 40))
    with pytest.raises(ValueError, match=r"maps have shape \(30, 40\), frames have \(40, 30\)"):
        TorchNormaliser((40, 30), maps=maps)
    with pytest.raises(ValueError, match=r"mask has shape \(3, 4\)"):
        TorchNormaliser((30, 40), mask=np.zeros((3, 4), bool))
    with pytest.raises(ConfigError, match="ring_contrast must be > 0"):
        TorchNormaliser((30, 40), ring_contrast=0.0)
    with pytest.raises(ConfigError, match="device"):
        TorchNormaliser((30, 40), device="tpu-9000")
    with pytest.raises(ConfigError, match="config must be a NormConfig"):
        TorchNormaliser((30, 40), config={"clip_sigma": 3.0})  # type: ignore[arg-type]
    normaliser = TorchNormaliser((30, 40), maps=maps)
    with pytest.raises(ValueError, match=r"frames must have shape \(B, 30, 40\), got \(30, 40\)"):
        normaliser(torch.zeros(30, 40))
    with pytest.raises(ValueError, match=r"got \(2, 40, 30\)"):
        normaliser(torch.zeros(2, 40, 30))
    with pytest.raises(ValueError, match=r"got \(0, 30, 40\)"):
        normaliser(torch.zeros(0, 30, 40))
    with pytest.raises(ValueError, match="real numbers"):
        normaliser(torch.zeros(1, 30, 40, dtype=torch.complex64))
    with pytest.raises(ValueError, match="torch tensor"):
        normaliser(np.zeros((1, 30, 40)))  # type: ignore[arg-type]


def test_other_settings_follow_the_config() -> None:
    frames, maps = _simulated(get_preset("test"), 2, seed=6)
    config = NormConfig(clip_sigma=2.5, photon_noise_floor=1.0, asinh_scale=2.0)
    _, measured = _agreement(frames, maps, maps.mask, config=config)
    _check(measured)


def _pilatus6m_maps(shape: tuple[int, int], bad: np.ndarray) -> PixelMaps:
    """Pilatus 6M modules (195 x 487, gaps of 17 rows and 7 columns) and the beam of the thaumatin header."""
    rows, cols = np.indices(shape)
    module_row, in_row = np.divmod(rows, 195 + 17)
    module_col, in_col = np.divmod(cols, 487 + 7)
    panel = np.where((in_row < 195) & (in_col < 487), module_row * 5 + module_col, -1).astype(np.int32)
    radius = np.hypot(rows - 1306.96, cols - 1261.61).astype(np.float32)
    return PixelMaps(panel_id=panel, radius_px=radius, mask=bad | (panel < 0))


@pytest.mark.slow
@pytest.mark.real_data
def test_real_pilatus_frames_match_the_cpu_path(real_data: Path) -> None:
    from braggml.io.cbf import read_fabio_frame

    paths = [real_data / "thaumatin_grid" / f"thau_3_2_{k:04d}.cbf.bz2" for k in (2, 17)]  # a hit and a blank
    if not all(p.is_file() for p in paths):
        pytest.skip("thaumatin grid frames not available")
    frames = [read_fabio_frame(p) for p in paths]
    # gaps (-1), bad pixels (-2) and values above the header's count cutoff
    bad = np.any([(f < 0) | (f > 115897) for f in frames], axis=0)
    maps = _pilatus6m_maps(frames[0].shape, bad)
    _, measured = _agreement(frames, maps, None)
    _check(measured)


def _phosphor_frame(shape: tuple[int, int], seed: int, blur_px: float) -> np.ndarray:
    """50 photons per pixel at 10 ADU each on a pedestal that rises along the rows (a background the radial
    profile does not follow); with ``blur_px`` > 0 each photon's charge spreads over neighbouring pixels, as
    behind a phosphor."""
    rng = np.random.default_rng(seed)
    photons = rng.poisson(50.0, shape).astype(np.float64)
    if blur_px > 0:
        from scipy import ndimage

        photons = ndimage.gaussian_filter(photons, blur_px)
    return (10.0 * photons + 200.0 + 0.3 * np.arange(shape[0])[:, None]).astype(np.float32)


def test_noise_shared_by_neighbouring_pixels_is_measured_and_scaled() -> None:
    shape = (300, 340)
    independent = normalise_frame(_phosphor_frame(shape, 1, 0.0))
    assert 0.85 < independent.noise_correlation < 1.15
    off = NormConfig(correlated_noise_min=float("inf"))
    np.testing.assert_array_equal(independent.noise, normalise_frame(_phosphor_frame(shape, 1, 0.0), config=off).noise)

    image = _phosphor_frame(shape, 2, 1.0)
    shared = normalise_frame(image)
    plain = normalise_frame(image, config=off)
    assert shared.noise_correlation > 2.5 and plain.noise_correlation == 1.0
    np.testing.assert_allclose(shared.noise, plain.noise * shared.noise_correlation, rtol=1e-5)
    good = ~shared.bad
    np.testing.assert_allclose(shared.inputs[0][good], np.arcsinh(shared.residual / shared.noise)[good], atol=1e-5)
    np.testing.assert_array_equal(shared.residual, plain.residual)
    for bad_value in (0.5, float("nan")):
        with pytest.raises(ConfigError, match="correlated_noise_min"):
            NormConfig(correlated_noise_min=bad_value)


def test_noise_correlation_on_the_device_path_matches_the_cpu_path() -> None:
    shape = (300, 340)
    frames = [_phosphor_frame(shape, 3, 0.0), _phosphor_frame(shape, 4, 1.0)]
    maps = PixelMaps.fallback(shape)
    out, measured = _agreement(frames, maps, None)
    _check(measured)
    expected = [normalise_frame(f, maps=maps).noise_correlation for f in frames]
    np.testing.assert_allclose(out.noise_correlation, expected, atol=0.02)
    assert out.noise_correlation[0] < 1.5 < out.noise_correlation[1]
