"""The U-Net segmentation finder: network, normalisation, model files, training, tiled inference, finder."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

torch = pytest.importorskip("torch")

from braggml.errors import ConfigError, DataFormatError, InputNotFoundError  # noqa: E402
from braggml.evaluate.matching import match_frame  # noqa: E402
from braggml.ml.checkpoint import save_arrays  # noqa: E402
from braggml.ml.unet import (  # noqa: E402
    FLIPS,
    FlipAveraged,
    NormConfig,
    TrainedUNet,
    UNet,
    UNetConfig,
    inference_precision,
    load_unet,
    normalise_frame,
    predict_tiled,
    tile_starts,
)
from braggml.ml.unet_extract import candidate_reach, extract_peaks, gather_candidates  # noqa: E402
from braggml.ml.unet_finder import UNetFinder, UNetFinderConfig  # noqa: E402
from braggml.ml.unet_train import (  # noqa: E402
    IGNORE,
    VARIANTS,
    CropSet,
    UNetTrainConfig,
    average_weights,
    choose_threshold,
    crowded_config,
    frame_target,
    lattice_spacing_px,
    peak_f1,
    phosphor_config,
    pinpoint_config,
    sharp_config,
    simulate_crops,
    train_unet,
    variant_config,
)
from braggml.simulate import Simulator, get_preset  # noqa: E402
from braggml.simulate.config import apply_overrides  # noqa: E402

TINY = UNetConfig(channels=(8, 16), convs_per_block=2, downsample=1)


def _sparse_peaks(
    prob: np.ndarray,
    *,
    residual: np.ndarray | None = None,
    background: np.ndarray | None = None,
    noise: np.ndarray | None = None,
    bad: np.ndarray | None = None,
    panel: np.ndarray | None = None,
    threshold: float = 0.5,
    grow_px: float = 0.0,
    split: bool = False,
    min_pixel_count: int = 1,
) -> tuple[dict, np.ndarray]:
    """Regions of a probability map as the finder extracts them (residual 0, background 0, noise 1, no bad
    pixels and one panel unless given)."""
    shape = prob.shape
    zeros = np.zeros(shape, np.float32)
    c = gather_candidates(
        prob,
        zeros if residual is None else residual,
        zeros if background is None else background,
        np.ones(shape, np.float32) if noise is None else noise,
        np.zeros(shape, bool) if bad is None else bad,
        np.zeros(shape, np.int32) if panel is None else panel,
        threshold,
        candidate_reach(grow_px),
    )
    columns, along_mask, *_ = extract_peaks(c, min_pixel_count=min_pixel_count, split=split, grow_px=grow_px)
    return columns, along_mask


def _test_frame(k: int = 0, seed: int = 5):
    sim = Simulator(get_preset("test"), seed=seed)
    return sim.frame(k), sim.layout.pixel_maps(sim.wavelength_a)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny U-Net trained for a few seconds on crops of the "test" preset, saved to a model file."""
    cfg = UNetTrainConfig(
        presets=("test",),
        variants=("hits", "weak", "ice"),
        train_frames_per_preset=3,
        val_frames_per_preset=1,
        crop_size=96,
        crops_per_frame=12,
        epochs=12,
        batch_size=6,
        learning_rate=1e-2,
        patience=12,
        seed=3,
        device="cpu",
    )
    rng = np.random.default_rng(0)
    train = simulate_crops(cfg, frames=range(3), augment=True, rng=rng)
    val = simulate_crops(cfg, frames=[50], augment=False, rng=rng)
    trained = train_unet(train, val, config=cfg, model_config=TINY)
    choose_threshold(trained, cfg, frames=[50, 51])  # a cut for 1, 2 and 4 flipped copies
    return trained.save(tmp_path_factory.mktemp("unet") / "tiny.safetensors")


# -- configuration ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"channels": (8,)}, "channels"), ({"channels": (8, 0)}, "channels"), ({"in_channels": 0}, "in_channels"),
     ({"convs_per_block": 0}, "convs_per_block"), ({"downsample": 3}, "downsample")],
)
def test_unet_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        UNetConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"probability_threshold": 1.5}, "probability_threshold"), ({"tile_size": 0}, "tile_size"),
     ({"overlap": 2000}, "overlap"), ({"device": "tpu"}, "device"), ({"min_pixel_count": 0}, "min_pixel_count"),
     ({"grow_px": -1.0}, "grow_px"), ({"precision": "int8"}, "precision"), ({"ice_rings": "maybe"}, "ice_rings"),
     ({"lone_pixels": "maybe"}, "lone_pixels"), ({"significance_snr": -1.0}, "significance_snr"),
     ({"second_cut": 1.0}, "second_cut"), ({"second_cut": -0.1}, "second_cut"),
     ({"second_cut_snr": 0.0}, "second_cut_snr"),
     ({"flips": 3}, "flips must be one of 1, 2, 4"), ({"flips": True}, "flips must be one of 1, 2, 4")],
)
def test_finder_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        UNetFinderConfig(**kwargs)


def test_finder_knows_the_flip_counts_without_torch() -> None:
    from braggml.ml.unet_finder import _FLIP_COUNTS

    assert _FLIP_COUNTS == tuple(FLIPS)


def test_train_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="gain_range"):
        UNetTrainConfig(gain_range=(2.0, 1.0))
    with pytest.raises(ConfigError, match="crop_size"):
        UNetTrainConfig(crop_size=0)
    with pytest.raises(ConfigError, match="shadow_fraction must lie in"):
        UNetTrainConfig(shadow_fraction=1.5)
    with pytest.raises(ConfigError, match="hot_mask_fraction must lie in"):
        UNetTrainConfig(hot_mask_fraction=-0.1)
    with pytest.raises(ConfigError, match="flips must be one of 1, 2, 4, got 8"):
        UNetTrainConfig(flips=8)
    with pytest.raises(ConfigError, match="cut_tolerance must lie in"):
        UNetTrainConfig(cut_tolerance=-0.01)


# -- network -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(37, 53), (64, 64), (1, 9), (130, 17)])
def test_forward_shape_any_size(shape: tuple[int, int]) -> None:
    model = UNet(UNetConfig(channels=(4, 8, 16))).eval()
    out = model(torch.zeros(2, 2, *shape))
    assert out.shape == (2, 1, *shape)


@pytest.mark.parametrize("downsample", [2, 4])
def test_space_to_depth_input_keeps_full_resolution(downsample: int) -> None:
    cfg = UNetConfig(channels=(8, 16), downsample=downsample)
    assert cfg.multiple == 2 * downsample
    torch.manual_seed(0)
    model = UNet(cfg).eval()
    x = torch.randn(1, 2, 29, 46)
    out = model(x)
    assert out.shape == (1, 1, 29, 46)
    # each pixel of a block gets its own logit: a change of one input pixel changes the output near it only
    y = x.clone()
    y[0, 0, 10, 20] += 5.0
    diff = (model(y) - out).abs()[0, 0]
    assert diff[10, 20] > 0 and diff[:, :4].max() == 0 and diff.sum() > diff[10, 20]


def test_inference_copy_gives_the_same_logits() -> None:
    torch.manual_seed(0)
    model = UNet(UNetConfig(channels=(8, 16, 32), downsample=2))
    model.train()
    for _ in range(3):  # move the batch-norm running statistics away from their start
        model(torch.randn(4, 2, 32, 32) * 3 + 1)
    model.eval()
    fast = model.for_inference()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    x = torch.randn(2, 2, 40, 56)
    with torch.inference_mode():
        np.testing.assert_allclose(fast(x.contiguous(memory_format=torch.channels_last)).numpy(), model(x).numpy(),
                                   atol=1e-4)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched


def _flip_mean(net: torch.nn.Module, x: torch.Tensor, flips: int) -> torch.Tensor:
    """The logits of ``net`` on each flipped copy of ``x``, flipped back and averaged."""
    outs = [torch.flip(net(torch.flip(x, dims)), dims) if dims else net(x) for dims in FLIPS[flips]]
    return torch.stack(outs).mean(0)


@pytest.mark.parametrize("flips", [1, 2, 4])
def test_flip_averaged_logits_are_the_mean_over_flipped_copies(flips: int) -> None:
    torch.manual_seed(0)
    net = UNet(UNetConfig(channels=(8, 16, 32), downsample=2)).eval()
    averaged = FlipAveraged(net, flips)
    x = torch.randn(2, 2, 48, 64)
    with torch.no_grad():
        out = averaged(x)
        np.testing.assert_allclose(out.numpy(), _flip_mean(net, x, flips).numpy(), atol=1e-5)
        if flips == 1:
            np.testing.assert_array_equal(out.numpy(), net(x).numpy())
            return
        assert (out - net(x)).abs().max() > 1e-3  # the network alone is not symmetric...
        for dims in FLIPS[flips][1:]:  # ...the average is: a flipped frame gives the flipped logits
            np.testing.assert_allclose(averaged(torch.flip(x, dims)).numpy(), torch.flip(out, dims).numpy(),
                                       atol=1e-5)
        # a frame that is not a multiple of the blocks is padded before it is flipped, so the copies stay aligned
        odd = x[:, :, :37, :53]
        assert net.config.multiple == 8
        padded = torch.nn.functional.pad(odd, (0, 56 - 53, 0, 40 - 37))
        np.testing.assert_allclose(averaged(odd).numpy(), _flip_mean(net, padded, flips)[..., :37, :53].numpy(),
                                   atol=1e-5)
    with pytest.raises(ConfigError, match="flips must be one of 1, 2, 4, got 3"):
        FlipAveraged(net, 3)


def _rewritten(path: Path, arrays: dict, settings: dict) -> Path:
    """A model file of these arrays with these settings as its metadata."""
    from safetensors.numpy import save_file

    save_file(arrays, str(path), metadata={"braggml": json.dumps(settings)})
    return path


def test_model_file_keeps_its_flips_and_cuts_and_older_files_run_one_copy(tmp_path: Path) -> None:
    from safetensors import safe_open

    torch.manual_seed(0)
    trained = TrainedUNet(model=UNet(TINY).eval(), threshold=0.4, flips=4, cuts={1: 0.7, 4: 0.4})
    back = load_unet(trained.save(tmp_path / "m.safetensors"), device="cpu")
    assert back.flips == 4 and back.cuts == {1: 0.7, 4: 0.4} and back.threshold == 0.4
    assert isinstance(back.inference_model(), FlipAveraged)
    back.use_flips(1)  # the cut and the inference network follow
    assert back.threshold == 0.7 and isinstance(back.inference_model(), UNet)
    back.use_flips(2)  # no cut chosen for two copies: the cut stays
    assert back.threshold == 0.7 and back.inference_model().flips == 2
    with pytest.raises(ConfigError, match="flips must be one of 1, 2, 4, got 3"):
        back.use_flips(3)
    with safe_open(str(tmp_path / "m.safetensors"), "np") as fh:
        meta, arrays = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    settings = json.loads(meta["braggml"])
    del settings["flips"]  # a model file written before the copies existed
    del settings["cuts"]
    old = load_unet(_rewritten(tmp_path / "old.safetensors", arrays, settings), device="cpu")
    assert old.flips == 1 and old.cuts == {} and old.threshold == 0.4
    for key, value, message in [("flips", 3, "flips must be one of"), ("cuts", {"4": 1.5}, "the cut for 4 copies"),
                                ("cuts", {"3": 0.5}, "flips must be one of"), ("cuts", [0.5], "cuts must map")]:
        bad = _rewritten(tmp_path / "bad.safetensors", arrays, {**settings, key: value})
        with pytest.raises(DataFormatError, match=rf"bad.safetensors: invalid model settings \({message}"):
            load_unet(bad, device="cpu")


def _random_trained(config: UNetConfig, seed: int, norm: NormConfig | None = None) -> TrainedUNet:
    torch.manual_seed(seed)
    model = UNet(config)
    with torch.no_grad():  # batch-norm statistics of its own
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return TrainedUNet(model=model.eval(), norm=norm or NormConfig(), threshold=0.6, info={"trained_on": str(seed)},
                       flips=2, cuts={1: 0.7, 2: 0.6})


def test_averaged_weights_are_the_mean_of_the_models() -> None:
    a, b, c = (_random_trained(TINY, seed) for seed in (0, 1, 2))
    mean = average_weights([a, b, c])
    for name, value in mean.model.state_dict().items():
        parts = [m.model.state_dict()[name] for m in (a, b, c)]
        if value.is_floating_point():
            np.testing.assert_allclose(value.numpy(), (sum(p.double() for p in parts) / 3).numpy(), atol=1e-6)
        else:
            assert torch.equal(value, parts[0])
    assert mean.info["averaged_from"] == ["0", "1", "2"]
    assert mean.flips == 1 and mean.cuts == {} and mean.threshold == 0.6  # the cuts are to be chosen again
    x = torch.randn(1, 2, 32, 40)
    with torch.no_grad():  # one model averaged with itself is itself
        np.testing.assert_allclose(average_weights([a, a]).model(x).numpy(), a.model(x).numpy(), atol=1e-6)
    with pytest.raises(ConfigError, match="different architectures"):
        average_weights([a, _random_trained(UNetConfig(channels=(8, 32), convs_per_block=2, downsample=1), 3)])
    with pytest.raises(ConfigError, match="different architectures or normalisations"):
        average_weights([a, _random_trained(TINY, 4, NormConfig(asinh_scale=2.0))])
    with pytest.raises(ConfigError, match="at least one model"):
        average_weights([])


def test_default_model_is_compact() -> None:
    n = sum(p.numel() for p in UNet().parameters())
    assert 50_000 < n < 2_000_000


def test_backward_reaches_every_parameter() -> None:
    model = UNet(TINY)
    model(torch.randn(2, 2, 24, 40)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# -- normalisation ---------------------------------------------------------------------------------------
def test_normalisation_is_gain_and_offset_invariant() -> None:
    frame, maps = _test_frame()
    image = frame.image.copy()
    a = normalise_frame(image, maps.mask, maps=maps)
    np.testing.assert_array_equal(image, frame.image)  # input not modified
    b = normalise_frame(image.astype(np.float64) * 7.0 + 100.0, maps.mask, maps=maps)
    good = ~a.bad
    assert np.median(np.abs(a.inputs[0][good] - b.inputs[0][good])) < 0.05
    assert a.inputs.shape == (2, *image.shape) and a.inputs.dtype == np.float32
    np.testing.assert_array_equal(a.inputs[1] > 0, a.bad)
    # spot pixels stand out from the background in noise units
    spot = (frame.footprint & 1) > 0
    assert np.median(a.inputs[0][spot & good]) > 1.0 > abs(np.median(a.inputs[0][~spot & good]))


def test_normalisation_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="2-D"):
        normalise_frame(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="mask"):
        normalise_frame(np.zeros((8, 8)), np.zeros((4, 4), bool))


def test_constant_frame_gives_finite_inputs() -> None:
    norm = normalise_frame(np.full((40, 50), 3.0, np.float32))
    assert np.isfinite(norm.inputs).all() and np.abs(norm.inputs[0]).max() < 1e-3


# -- model files -----------------------------------------------------------------------------------------
def test_save_load_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = UNet(TINY)
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    trained = TrainedUNet(model=model.eval(), norm=NormConfig(asinh_scale=2.0), threshold=0.37, info={"a": 1})
    path = trained.save(tmp_path / "m.safetensors")
    back = load_unet(path, device="cpu")
    assert back.config == TINY and back.norm == NormConfig(asinh_scale=2.0) and back.threshold == 0.37
    x = torch.randn(1, 2, 33, 47)
    with torch.no_grad():
        np.testing.assert_array_equal(model(x).numpy(), back.model(x).numpy())


def test_load_rejects_other_kind_and_missing_file(tmp_path: Path) -> None:
    cnn = save_arrays(tmp_path / "cnn.safetensors", {"w": np.zeros(3, np.float32)}, {"kind": "cnn"})
    with pytest.raises(DataFormatError, match="holds a cnn model, not a unet model"):
        load_unet(cnn)
    with pytest.raises(InputNotFoundError, match="not found"):
        load_unet(tmp_path / "absent.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model")
    with pytest.raises(DataFormatError, match="not a braggml model file"):
        load_unet(junk)


# -- training ---------------------------------------------------------------------------------------------
def test_target_marks_compact_cores_of_strong_spots_and_ignores_weak_ones() -> None:
    frame, _ = _test_frame()
    target, rc = frame_target(frame, min_snr=3.0, core_radius_px=1.5)
    s = frame.spots
    strong = s["observable"] & (s["snr"] >= 3.0)
    assert len(rc) == strong.sum()
    r, c = np.rint(rc).astype(int).T
    assert (target[r, c] == 1).all()
    assert set(np.unique(target)) <= {0, 1, IGNORE}
    tree = cKDTree(rc)
    # every peak pixel lies within the core radius of a target spot
    peak_px = np.argwhere(target == 1)
    assert tree.query(peak_px)[0].max() <= 1.5 + 1e-9
    # away from the target spots and outside every footprint: background
    all_px = np.argwhere(np.ones_like(target, bool))
    far = (tree.query(all_px)[0] > 1.5 + 1.2 + 1e-9).reshape(target.shape)
    spot = (frame.footprint & 1) > 0
    assert not (target[far & ~spot] != 0).any()
    # footprints holding only spots weaker than the cut are left out of the loss
    weak = s["observable"] & (s["snr"] < 3.0) & (s["snr"] > 0.5)
    wr, wc = np.rint(s["row"][weak]).astype(int), np.rint(s["col"][weak]).astype(int)
    inside = (wr >= 0) & (wr < target.shape[0]) & (wc >= 0) & (wc < target.shape[1])
    alone = far[wr[inside], wc[inside]] & spot[wr[inside], wc[inside]]
    assert alone.any() and (target[wr[inside][alone], wc[inside][alone]] != 1).all()


def test_training_frames_mix_the_variants() -> None:
    base = get_preset("test")
    weak = variant_config(base, "weak")
    assert weak.crystal.strength_range_photons[1] == pytest.approx(base.crystal.strength_range_photons[1] / 10)
    assert variant_config(base, "blank").crystal.hit_fraction == 0.0
    assert variant_config(base, "ice").background.ice_fraction == 1.0
    with pytest.raises(ConfigError, match="variant"):
        variant_config(base, "powder")
    with pytest.raises(ConfigError, match="variants"):
        UNetTrainConfig(variants=("hits", "snow"))
    # crowded, sharp, pinpoint and phosphor frames are for fine-tuning only: never part of a default training set
    for variant in ("crowded", "sharp", "pinpoint", "phosphor"):
        assert variant not in UNetTrainConfig().variants and variant in VARIANTS
    # compact: broad spots (small mosaic domains, wide point spread) become spots of a pixel or two
    broad = apply_overrides(
        base,
        {
            "crystal": {"mosaic_domain_size_um": 0.08, "mosaicity_deg": 0.3, "hit_fraction": 1.0},
            "detector": {"psf_sigma_px": 0.8},
        },
    )
    compact = variant_config(broad, "compact")
    assert compact.crystal.strength_range_photons == pytest.approx(
        (broad.crystal.strength_range_photons[0] / 10, broad.crystal.strength_range_photons[1])
    )
    sigma = {}
    for name, sim_cfg in (("broad", broad), ("compact", compact)):
        spots = Simulator(sim_cfg, seed=3).frame(0).spots
        sigma[name] = np.median(spots["sigma_row_px"][spots["observable"]])
    assert sigma["compact"] < 0.5 < 0.8 < sigma["broad"]
    cfg = UNetTrainConfig(presets=("test",), variants=("blank",), crop_size=64, crops_per_frame=3, device="cpu")
    crops = simulate_crops(cfg, frames=[0, 1], augment=False, rng=np.random.default_rng(0))
    assert len(crops) == 6 and not (crops.target == 1).any() and all(len(sp) == 0 for sp in crops.spots)


def test_crowded_frames_put_distinct_spots_a_few_pixels_apart() -> None:
    from scipy.spatial import cKDTree

    for name in ("jungfrau4m", "pilatus6m"):
        base = get_preset(name)
        assert lattice_spacing_px(base) > 15
        spacings = [lattice_spacing_px(crowded_config(base, np.random.default_rng(k))) for k in range(40)]
        assert 2.5 <= min(spacings) < 3.5 and 5.0 < max(spacings) <= 6.0
        again = crowded_config(base, np.random.default_rng(7))
        assert again == crowded_config(base, np.random.default_rng(7))
    # a 256 x 256 detector at 80 mm: spots some 10 px apart, a few pixels apart once crowded
    far = apply_overrides(
        get_preset("test"),
        {"detector": {"distance_mm": 80.0}, "crystal": {"strength_range_photons": [2e4, 4e4], "mosaicity_deg": 0.3}},
    )
    assert lattice_spacing_px(far) > 10

    def neighbour_px(cfg) -> float:
        spots = Simulator(cfg, seed=1).frame(0).spots
        keep = spots["observable"] & (spots["snr"] >= 3)
        rc = np.column_stack([spots["row"][keep], spots["col"][keep]])
        assert len(rc) > 20
        return float(np.median(cKDTree(rc).query(rc, k=2)[0][:, 1]))

    crowded = crowded_config(far, np.random.default_rng(3))
    assert neighbour_px(far) > 2.5 * neighbour_px(crowded)  # about 10.5 against 3.2
    assert 2.0 < neighbour_px(crowded) < 8.0


def test_sharp_frames_put_few_photon_spots_into_a_pixel_or_two_of_an_empty_frame() -> None:
    base = apply_overrides(get_preset("test"), {"crystal": {"mosaicity_deg": 0.3}, "detector": {"psf_sigma_px": 0.8}})
    draws = [sharp_config(base, np.random.default_rng(k)) for k in range(40)]
    assert sharp_config(base, np.random.default_rng(7)) == draws[7]
    psf = [d.detector.psf_sigma_px for d in draws]
    air = [d.background.air_photons / base.background.air_photons for d in draws]
    strength = [d.crystal.strength_range_photons[1] / base.crystal.strength_range_photons[1] for d in draws]
    assert 0.1 <= min(psf) < 0.15 and 0.3 < max(psf) <= 0.35
    assert 0.005 <= min(air) < 0.02 and 0.1 < max(air) <= 0.3
    assert 0.03 <= min(strength) < 0.1 and 0.5 < max(strength) <= 1.0
    assert all(d.crystal.hit_fraction == 1.0 for d in draws)

    def spots_and_background(cfg) -> tuple[float, float]:
        sim = Simulator(cfg, seed=2)
        frame = sim.frame(0)
        spots = frame.spots
        keep = spots["observable"] & (spots["snr"] >= 3)
        assert keep.sum() > 10
        return float(np.median(spots["sigma_row_px"][keep])), float(np.mean(frame.background_photons[~sim.layout.mask]))

    sigma_base, bg_base = spots_and_background(base)
    sigma_sharp, bg_sharp = spots_and_background(draws[3])
    assert sigma_sharp < 0.4 < 0.7 < sigma_base  # about 0.26 against 0.85
    assert bg_sharp < 0.1 * bg_base  # this draw: a hundredth

    # pinpoint frames: as sharp, on about the preset's own background
    pins = [pinpoint_config(base, np.random.default_rng(k)) for k in range(40)]
    air = [d.background.air_photons / base.background.air_photons for d in pins]
    assert 0.3 <= min(air) < 0.45 and 2.0 < max(air) <= 3.0
    assert all(0.1 <= d.detector.psf_sigma_px <= 0.35 and d.crystal.hit_fraction == 1.0 for d in pins)
    sigma_pin, bg_pin = spots_and_background(pins[3])
    assert sigma_pin < 0.4 and 0.25 * bg_base < bg_pin < 4.0 * bg_base


def test_no_frames_give_an_empty_crop_set_of_the_crop_size() -> None:
    cfg = UNetTrainConfig(presets=("test",), variants=("hits",), crop_size=64, device="cpu")
    crops = simulate_crops(cfg, frames=[], augment=False, rng=np.random.default_rng(0))
    assert len(crops) == 0 and crops.inputs.shape == (0, 2, 64, 64) and crops.target.shape == (0, 64, 64)


def test_phosphor_frames_share_the_photon_noise_on_an_integrating_readout() -> None:
    base = get_preset("pilatus6m")  # a counting preset becomes an integrating one
    draws = [phosphor_config(base, np.random.default_rng(k)) for k in range(40)]
    assert phosphor_config(base, np.random.default_rng(5)) == draws[5]
    spread = [d.detector.phosphor_spread_px for d in draws]
    gain = [d.detector.gain_adu_per_photon for d in draws]
    assert 0.5 <= min(spread) < 0.6 and 1.4 < max(spread) <= 1.5
    assert 2.0 <= min(gain) < 3.0 and 14.0 < max(gain) <= 20.0
    assert all(d.detector.mode == "integrating" and d.crystal.hit_fraction == 1.0 for d in draws)
    cfg = UNetTrainConfig(presets=("test",), variants=("phosphor",), crop_size=64, crops_per_frame=2, device="cpu")
    crops = simulate_crops(cfg, frames=[0], augment=False, rng=np.random.default_rng(0))
    assert len(crops) == 2 and set(crops.variant) == {"phosphor"} and (crops.target == 1).any()


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_training_frames_have_their_hot_pixels_masked_at_the_chosen_rate(monkeypatch, fraction) -> None:
    import braggml.ml.unet_train as unet_train

    masks = []

    def recording(image, mask=None, **kwargs):
        masks.append(mask.copy())
        return normalise_frame(image, mask, **kwargs)

    monkeypatch.setattr(unet_train, "normalise_frame", recording)
    cfg = UNetTrainConfig(
        presets=("test",), variants=("hits",), crop_size=64, crops_per_frame=2, hot_mask_fraction=fraction,
        shadow_fraction=0.0, device="cpu",
    )
    sim = Simulator(variant_config(get_preset("test"), "hits"), seed=cfg.seed)
    hot = sim.layout.hot_photons > 0
    geometry = sim.layout.pixel_maps(sim.wavelength_a).mask
    assert hot.any() and not geometry[hot].any()
    simulate_crops(cfg, frames=[0, 1, 2], augment=True, rng=np.random.default_rng(0))
    assert len(masks) == 3
    for mask in masks:
        assert mask[hot].all() if fraction == 1.0 else not mask[hot].any()
        assert np.array_equal(mask & ~hot, geometry & ~hot)  # nothing else changes
    masks.clear()
    simulate_crops(cfg, frames=[50], augment=False, rng=np.random.default_rng(0))  # validation: as recorded
    assert not masks[0][hot].any()


def test_overfits_a_tiny_crop_set() -> None:
    cfg = UNetTrainConfig(
        presets=("test",), train_frames_per_preset=1, crop_size=64, crops_per_frame=4, epochs=40, batch_size=4,
        learning_rate=1e-2, patience=40, seed=1, device="cpu",
    )
    crops = simulate_crops(cfg, frames=[0], augment=False, rng=np.random.default_rng(1))
    trained = train_unet(crops, crops, config=cfg, model_config=TINY)
    history = trained.info["history"]
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert trained.info["val_f1"] > 0.8


def test_without_validation_crops_the_last_epoch_is_kept() -> None:
    cfg = UNetTrainConfig(
        presets=("test",), train_frames_per_preset=1, val_frames_per_preset=0, crop_size=64, crops_per_frame=2,
        epochs=3, batch_size=2, patience=1, seed=1, device="cpu",
    )
    crops = simulate_crops(cfg, frames=[0], augment=False, rng=np.random.default_rng(1))
    empty = simulate_crops(cfg, frames=[], augment=False, rng=np.random.default_rng(1))
    trained = train_unet(crops, empty, config=cfg, model_config=TINY)
    assert trained.info["best_epoch"] == 2 and len(trained.info["history"]) == 3
    assert trained.info["val_f1"] is None


# -- tiled inference ------------------------------------------------------------------------------------
def test_tile_starts_cover_and_own_each_pixel_once() -> None:
    for length in (1, 63, 64, 65, 200, 1031, 2156):
        starts, cuts, side = tile_starts(length, 64, 16, 8)
        assert cuts[0] == 0 and cuts[-1] == length and all(s % 8 == 0 for s in starts)
        assert side <= 64 and starts[-1] + side >= length
        for i, s in enumerate(starts):  # each owned span lies inside its tile
            assert s <= cuts[i] <= cuts[i + 1] <= s + side
        for a, b in zip(starts, starts[1:]):  # neighbours overlap by at least the overlap asked for
            assert a + side - b >= 16
    # the fewest tiles, made no larger than needed: 2156 px in tiles of at most 1024 -> three of 768
    assert tile_starts(2156, 1024, 64, 16) == ([0, 704, 1408], [0, 736, 1440, 2156], 768)
    with pytest.raises(ConfigError, match="overlap"):
        tile_starts(100, 32, 32)


def test_tiled_inference_equals_whole_frame() -> None:
    torch.manual_seed(0)
    model = UNet(TINY).eval()
    rng = np.random.default_rng(0)
    inputs = np.stack([rng.normal(size=(150, 170)), (rng.random((150, 170)) < 0.02)]).astype(np.float32)
    whole = predict_tiled(model, inputs, tile_size=1024, overlap=0)
    tiled = predict_tiled(model, inputs, tile_size=48, overlap=32, batch_size=3)
    # away from the frame's far edges (where the padding differs) the two agree to float precision
    np.testing.assert_allclose(tiled[:136, :152], whole[:136, :152], atol=1e-5)


def test_reduced_precision_keeps_the_probabilities() -> None:
    torch.manual_seed(0)
    model = UNet(UNetConfig(channels=(8, 16, 32), downsample=2)).for_inference()
    rng = np.random.default_rng(1)
    inputs = np.stack([rng.normal(size=(96, 120)), (rng.random((96, 120)) < 0.02)]).astype(np.float32)
    full = predict_tiled(model, inputs, precision="float32")
    brain = predict_tiled(model, inputs, precision="bfloat16")
    assert brain.dtype == np.float32 and np.abs(brain - full).max() < 0.05
    assert inference_precision("cpu") in ("bfloat16", "float32") and inference_precision("cuda") == "float16"
    with pytest.raises(ConfigError, match="float16 needs a CUDA device"):
        predict_tiled(model, inputs, precision="float16")
    with pytest.raises(ConfigError, match="precision"):
        predict_tiled(model, inputs, precision="int8")


# -- the finder ----------------------------------------------------------------------------------------
def test_finder_finds_strong_spots(tiny_model: Path) -> None:
    frame, maps = _test_frame(k=7, seed=21)
    finder = UNetFinder(model_path=str(tiny_model), device="cpu")
    peaks = finder.find(frame.image, maps.mask, maps=maps)
    s = frame.spots
    strong = s["observable"] & (s["snr"] >= 10)
    truth = np.column_stack([s["row"][strong], s["col"][strong]])
    found = np.column_stack([peaks.row, peaks.col])
    fi, ti = match_frame(found, truth, 2.0)
    assert len(ti) >= 0.8 * len(truth)
    all_obs = np.column_stack([s["row"][s["observable"]], s["col"][s["observable"]]])
    fi_any, _ = match_frame(found, all_obs, 2.0)
    assert len(fi_any) >= 0.7 * len(peaks)
    assert np.all((peaks.score > 0) & (peaks.score <= 1)) and np.all(peaks.n_pixels >= 1)
    assert np.all(peaks.intensity[fi] > 0)
    assert finder.last_probability is not None and finder.last_probability.shape == frame.image.shape


def test_finder_tiles_give_the_same_peaks(tiny_model: Path) -> None:
    frame, maps = _test_frame(k=7, seed=21)
    whole = UNetFinder(model_path=str(tiny_model), device="cpu", tile_size=512, overlap=0, precision="float32")
    tiled = UNetFinder(model_path=str(tiny_model), device="cpu", tile_size=64, overlap=40, precision="float32")
    a = whole.find(frame.image, maps.mask, maps=maps)
    b = tiled.find(frame.image, maps.mask, maps=maps)
    # peaks straddling a tile border are found once, at the same place
    _, cuts, _ = tile_starts(frame.image.shape[0], 64, 40, TINY.multiple)
    on_border = np.isin(np.rint(a.row).astype(int), cuts[1:-1]) | np.isin(np.rint(a.row).astype(int) - 1, cuts[1:-1])
    assert on_border.any()
    assert len(a) == len(b)
    np.testing.assert_allclose(b.row, a.row, atol=1e-4)
    np.testing.assert_allclose(b.col, a.col, atol=1e-4)


def test_finder_threshold_and_input_checks(tiny_model: Path) -> None:
    frame, maps = _test_frame(k=7, seed=21)
    lax = UNetFinder(model_path=str(tiny_model), device="cpu", probability_threshold=0.2)
    strict = UNetFinder(model_path=str(tiny_model), device="cpu", probability_threshold=0.95)
    a, b = strict.find(frame.image, maps.mask, maps=maps), lax.find(frame.image, maps.mask, maps=maps)
    assert len(a) and len(b) and np.all(a.score > 0.95) and np.all(b.score > 0.2)
    assert np.any(b.score < 0.95)  # the lax cut keeps regions the strict one drops
    with pytest.raises(ValueError, match="2-D"):
        lax.find(np.zeros((3, 4, 5)))
    empty = UNetFinder(model_path=str(tiny_model), device="cpu").find(np.zeros((64, 64), np.float32))
    assert len(empty) == 0 and empty.n_frames == 1


def test_finder_runs_the_models_flipped_copies_unless_told_otherwise(tiny_model: Path) -> None:
    frame, maps = _test_frame(k=7, seed=21)
    one = UNetFinder(model_path=str(tiny_model), device="cpu", precision="float32")
    four = UNetFinder(model_path=str(tiny_model), device="cpu", precision="float32", flips=4)
    assert one.model.flips == 1 and four.model.flips == 4  # one copy unless told otherwise
    assert set(one.model.cuts) == {1, 2, 4}  # training chose a cut for every count
    assert one.model.threshold == one.model.cuts[1] and four.model.threshold == four.model.cuts[4]
    p4, norm = four.probability(frame.image, maps.mask, maps=maps)
    p1, _ = one.probability(frame.image, maps.mask, maps=maps)
    again, same = four.model.probability(frame.image, maps.mask, maps=maps, precision="float32", normalised=norm)
    assert same is norm  # a frame normalised once serves every count of copies
    np.testing.assert_array_equal(again, p4)
    inputs = torch.from_numpy(norm.inputs[None])
    with torch.no_grad():  # the tiles of this small frame are the whole frame
        expected = torch.sigmoid(_flip_mean(one.model.model, inputs, 4))[0, 0].numpy()
    good = ~norm.bad
    np.testing.assert_allclose(p4[good], expected[good], atol=1e-5)
    assert np.abs(p4 - p1).max() > 0.05
    peaks = four.find(frame.image, maps.mask, maps=maps)
    assert len(peaks) and np.all(peaks.score > four.model.threshold)


def test_regions_respect_panels_and_size() -> None:
    prob = np.zeros((5, 8), np.float32)
    prob[2, 2:6] = 0.9
    prob[0, 7] = 0.9
    panel = np.zeros((5, 8), np.int32)
    panel[:, 4:] = 1
    cols, _ = _sparse_peaks(prob, panel=panel)
    assert cols["n_pixels"].tolist() == [1, 2, 2]  # the run across the panel border is two regions
    np.testing.assert_allclose(np.column_stack([cols["row"], cols["col"]]), [[0, 7], [2, 2.5], [2, 4.5]])
    cols, _ = _sparse_peaks(prob, panel=panel, min_pixel_count=2)
    assert cols["n_pixels"].tolist() == [2, 2]  # the lone pixel (0, 7) is dropped
    np.testing.assert_allclose(np.column_stack([cols["row"], cols["col"]]), [[2, 2.5], [2, 4.5]])


def test_peak_f1_perfect_on_targets() -> None:
    cfg = UNetTrainConfig(presets=("test",), crop_size=64, crops_per_frame=4, device="cpu")
    crops = simulate_crops(cfg, frames=[0], augment=False, rng=np.random.default_rng(2))
    prob = (crops.target == 1).astype(np.float32)
    precision, recall, f1 = peak_f1(prob, crops, 0.5)
    assert recall > 0.8 and precision > 0.8


def test_cut_chosen_on_whole_frames_averages_over_variants_when_asked(tiny_model: Path) -> None:
    model = load_unet(tiny_model, device="cpu")
    cuts = (0.3, 0.6, 0.9)

    def scores(variants: tuple[str, ...], frames: list[int], average: str) -> np.ndarray:
        cfg = UNetTrainConfig(presets=("test",), variants=variants, val_average=average, device="cpu")
        _, rows = choose_threshold(model, cfg, frames=frames, thresholds=cuts)
        return np.array([[r["precision"], r["recall"], r["f1"]] for r in rows])

    hits, weak = scores(("hits",), [0], "pooled"), scores(("weak",), [1], "pooled")
    # frame 0 is a hit, frame 1 a weak hit, in either configuration; blank frames hold no spot and do not count
    np.testing.assert_allclose(scores(("hits", "weak", "blank"), [0, 1, 2], "variant"), (hits + weak) / 2)
    pooled = scores(("hits", "weak"), [0, 1], "pooled")
    assert not np.allclose(pooled, (hits + weak) / 2)


def test_cut_is_the_highest_within_the_tolerance_of_the_best_f1(tiny_model: Path) -> None:
    model = load_unet(tiny_model, device="cpu")
    cuts = (0.2, 0.4, 0.6, 0.8, 0.95)

    def choose(tolerance: float) -> tuple[float, np.ndarray]:
        cfg = UNetTrainConfig(presets=("test",), variants=("hits", "weak"), cut_tolerance=tolerance, device="cpu")
        cut, rows = choose_threshold(model, cfg, frames=[0, 1], thresholds=cuts)
        assert model.threshold == cut and model.info["threshold_choice"]["cut_tolerance"] == tolerance
        return cut, np.array([r["f1"] for r in rows])

    best, f1 = choose(0.0)
    assert best == cuts[int(np.argmax(f1))] == model.info["threshold_choice"]["best_f1_cut"]
    assert len(set(np.round(f1, 6))) > 1  # the cuts differ, so the tolerance has something to choose from
    for tolerance in (0.01, 0.05, 1.0 - 1e-9):
        cut, again = choose(tolerance)
        np.testing.assert_array_equal(again, f1)
        within = [c for c, f in zip(cuts, f1) if f >= f1.max() - tolerance]
        assert cut == max(within) >= best
        assert model.info["threshold_choice"]["best_f1_cut"] == best
    assert choose(1.0 - 1e-9)[0] == cuts[-1]
    assert set(model.cuts) == {1, 2, 4} and model.threshold == model.cuts[model.flips]
    with pytest.raises(ConfigError, match=r"flips must include the model's own number of copies \(1\)"):
        choose_threshold(model, UNetTrainConfig(presets=("test",), device="cpu"), frames=[0], flips=(2, 4))


def test_cut_choice_does_not_count_peaks_at_weaker_reflections_as_false() -> None:
    cfg = UNetTrainConfig(presets=("test",), variants=("hits",), device="cpu")
    sim = Simulator(get_preset("test"), seed=cfg.seed)
    spots = sim.frame(0).spots
    scored = spots["observable"] & (spots["snr"] >= cfg.min_snr)
    assert np.count_nonzero(~scored & spots["observable"]) >= 8  # weaker reflections on the detector

    class EverySpot:
        """A stand-in network marking every simulated spot on the detector, scored or not."""

        threshold, info, flips = 0.5, {}, 1

        def probability(self, image, mask, *, maps, normalised=None):
            prob = np.zeros(image.shape, np.float32)
            r = np.clip(np.rint(spots["row"]).astype(int), 0, image.shape[0] - 1)
            c = np.clip(np.rint(spots["col"]).astype(int), 0, image.shape[1] - 1)
            prob[r, c] = 1.0
            return prob, normalise_frame(image, mask, maps=maps) if normalised is None else normalised

    _, rows = choose_threshold(EverySpot(), cfg, frames=[0], thresholds=(0.5,))
    assert rows[0]["precision"] > 0.97  # before, every weaker reflection found was a false peak
    assert rows[0]["recall"] > 0.9


def test_validation_f1_averaged_over_variants_weighs_every_kind_of_frame_alike() -> None:
    cfg = UNetTrainConfig(presets=("test",), variants=("hits", "weak", "blank"), crop_size=64, crops_per_frame=4,
                          device="cpu")
    crops = simulate_crops(cfg, frames=[0, 1, 2], augment=False, rng=np.random.default_rng(2))
    assert crops.variant == ("hits",) * 4 + ("weak",) * 4 + ("blank",) * 4
    hits = np.array([v == "hits" for v in crops.variant])
    n_hits, n_weak = (sum(len(crops.spots[i]) for i in np.flatnonzero(sel)) for sel in (hits, ~hits))
    assert n_hits > 3 * n_weak > 0
    # every spot of the hits found, none of the weak frames' spots
    prob = ((crops.target == 1) & hits[:, None, None]).astype(np.float32)
    only = np.flatnonzero(hits)
    hits_crops = CropSet(crops.inputs[only], crops.target[only], [crops.spots[i] for i in only])
    hits_only = peak_f1(prob[only], hits_crops, 0.5)
    pooled = peak_f1(prob, crops, 0.5)
    by_variant = peak_f1(prob, crops, 0.5, average="variant")
    assert pooled[1] > 0.75 * hits_only[1] > 0  # the many spots of the hits rule the pooled recall
    # the mean of the hits' figures and the weak frames' zeros; the blank frames hold no target and do not count
    np.testing.assert_allclose(by_variant, np.array(hits_only) / 2)
    with pytest.raises(ConfigError, match="average"):
        peak_f1(prob, crops, 0.5, average="mean")
    with pytest.raises(ConfigError, match="val_average"):
        UNetTrainConfig(val_average="frames")
    with pytest.raises(ValueError, match="variant names"):
        dataclasses.replace(crops, variant=("hits",))


# -- command line ---------------------------------------------------------------------------------------
def test_train_unet_command_writes_a_loadable_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from braggml.cli import main

    out = tmp_path / "cli.safetensors"
    argv = ["train", "--model", "unet", "-o", str(out), "--preset", "test", "--variant", "hits", "--variant",
            "blank", "--train-frames", "2", "--val-frames", "1", "--crop-size", "64", "--crops-per-frame", "4",
            "--epochs", "2", "--channels", "4", "8", "--downsample", "2", "--device", "cpu", "--val-average",
            "variant", "--shadow-fraction", "0.5", "--hot-mask-fraction", "0.75", "--flips", "2", "--cut-tolerance",
            "0.01", "-q"]
    assert main(argv) == 0
    back = load_unet(out, device="cpu")
    assert back.config.channels == (4, 8) and back.config.downsample == 2
    assert back.flips == 2 and back.info["threshold_choice"]["flips"] == 2  # it runs two copies
    assert set(back.cuts) == {1, 2, 4} and back.threshold == back.cuts[2]
    assert back.info["threshold_choice"]["cut_tolerance"] == 0.01
    assert back.info["train_config"]["val_average"] == "variant"
    assert back.info["train_config"]["shadow_fraction"] == 0.5
    assert back.info["train_config"]["hot_mask_fraction"] == 0.75
    assert "test" in back.info["trained_on"] and "blank" in back.info["trained_on"]
    assert "threshold_choice" in back.info  # the cut was chosen on whole validation frames
    capsys.readouterr()
    assert main(["train", "--model", "unet", "-o", str(out), "--crop-size", "0"]) == 2
    assert "crop_size" in capsys.readouterr().err
    assert main(["train", "--model", "unet", "-o", str(out), "--shadow-fraction", "2"]) == 2
    assert "shadow_fraction must lie in [0, 1]" in capsys.readouterr().err
    assert main(["train", "--model", "unet", "-o", str(out), "--cut-tolerance", "-1"]) == 2
    assert "cut_tolerance must lie in [0, 1)" in capsys.readouterr().err
    assert main(["train", "--model", "unet", "-o", str(out), "frames.h5"]) == 2
    assert "DATA files are for --model cnn/svm" in capsys.readouterr().err
    assert main(["train", "--model", "cnn", "-o", str(out)]) == 2
    assert "--model cnn needs DATA" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_export_gives_the_same_peaks(tiny_model: Path, tmp_path: Path) -> None:
    from braggml.ml.unet import export_torchscript

    trained = load_unet(tiny_model, device="cpu")
    trained.use_flips(4)  # the exported network averages the four flipped copies
    assert trained.threshold == trained.cuts[4]
    path = export_torchscript(trained, tmp_path / "unet.pt", tile_size=64)
    extra = {"braggml.json": ""}
    scripted = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["braggml.json"])["flips"] == 4
    assert json.loads(extra["braggml.json"])["threshold"] == trained.threshold
    frame, maps = _test_frame(k=7, seed=21)
    norm = normalise_frame(frame.image, maps.mask, maps=maps)
    tiles = torch.from_numpy(np.stack([norm.inputs[:, :64, :64], norm.inputs[:, 100:164, 30:94]]))
    with torch.no_grad():
        ref = _flip_mean(trained.model, tiles, 4)
        out = scripted(tiles)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-5)
    for r, o in zip(torch.sigmoid(ref).numpy()[:, 0], torch.sigmoid(out).numpy()[:, 0]):
        np.testing.assert_array_equal(o > trained.threshold, r > trained.threshold)  # the same regions
    with pytest.raises(ConfigError, match="tile_size"):
        export_torchscript(trained, tmp_path / "bad.pt", tile_size=31)


def test_shipped_model_finds_strong_spots_on_an_unseen_jungfrau_frame() -> None:
    from braggml.ml.unet import DEFAULT_MODEL_PATH

    assert DEFAULT_MODEL_PATH.is_file()
    sim = Simulator(apply_overrides(get_preset("jungfrau4m"), {"crystal": {"hit_fraction": 1.0}}), seed=8)
    frame, maps = sim.frame(0), sim.layout.pixel_maps(sim.wavelength_a)  # run seed never used in training
    finder = UNetFinder(device="cpu")
    assert "jungfrau4m" in finder.model.info["trained_on"]
    peaks = finder.find(frame.image, maps.mask, maps=maps)
    s = frame.spots
    found = np.column_stack([peaks.row, peaks.col])
    strong = s["observable"] & (s["snr"] >= 10)
    _, ti = match_frame(found, np.column_stack([s["row"], s["col"]])[strong], 2.0)
    assert strong.sum() > 100 and len(ti) >= 0.95 * strong.sum()
    fi_any, _ = match_frame(found, np.column_stack([s["row"], s["col"]])[s["observable"]], 2.0)
    assert len(fi_any) >= 0.9 * len(peaks)


def test_shipped_model_finds_each_spot_of_a_tight_group() -> None:
    """Nine bright sharp spots 4.5 px apart are nine peaks, each at its place, not one peak per group."""
    from scipy.special import erf

    def pixel_fractions(centre: float, sigma: float, n: int) -> np.ndarray:
        edges = (np.arange(n + 1) - 0.5 - centre) / (np.sqrt(2.0) * sigma)
        return 0.5 * np.diff(erf(edges))

    rng = np.random.default_rng(5)
    side = 256
    expected = np.full((side, side), 2.0)
    centres = []
    for gi, gj, i, j in np.ndindex(3, 3, 3, 3):
        row = 50 + 70 * gi + 4.5 * i + rng.uniform(-0.5, 0.5)
        col = 50 + 70 * gj + 4.5 * j + rng.uniform(-0.5, 0.5)
        expected += 200.0 * np.outer(pixel_fractions(row, 0.35, side), pixel_fractions(col, 0.35, side))
        centres.append((row, col))
    image = rng.poisson(expected).astype(np.int32)
    peaks = UNetFinder(device="cpu").find(image)
    fi, _ = match_frame(np.column_stack([peaks.row, peaks.col]), np.array(centres), 1.0)
    assert len(fi) >= 0.9 * len(centres)  # 78 of 81; before crowded training frames 44
    assert len(peaks) <= len(centres) + 3


def test_regions_grow_to_nearby_free_pixels_without_merging() -> None:
    shape = (12, 20)
    prob = np.zeros(shape, np.float32)
    prob[5, 5] = prob[5, 9] = prob[5, 14] = 0.9  # three one-pixel regions
    bad = np.zeros(shape, bool)
    bad[5, 3] = True
    panel = np.zeros(shape, np.int32)
    panel[:, 15:] = 1
    # each probed pixel carries its own power of two: a region's intensity tells which of them it took
    probes = [(5, 6), (5, 8), (5, 7), (5, 3), (5, 4), (5, 15), (5, 13), (7, 5), (7, 7)]
    residual = np.zeros(shape, np.float32)
    for bit, (r, c) in enumerate(probes):
        residual[r, c] = 2.0**bit
    before = prob.copy(), residual.copy()
    cols, _ = _sparse_peaks(prob, residual=residual, bad=bad, panel=panel, grow_px=2.0)
    np.testing.assert_array_equal(prob, before[0])  # inputs not modified
    np.testing.assert_array_equal(residual, before[1])
    first, second, third = [{p for bit, p in enumerate(probes) if int(v) >> bit & 1} for v in cols["intensity"]]
    assert (5, 6) in first and (5, 8) in second  # each pixel goes to the nearer region
    assert ((5, 7) in first) != ((5, 7) in second)  # a pixel halfway goes to one of them
    assert (5, 3) not in first and (5, 4) in first  # never onto a bad pixel
    assert (5, 15) not in third and (5, 13) in third  # never across a panel border
    assert (7, 5) in first and (7, 7) not in first | second | third  # within 2 px (a disk), not a square
    assert _sparse_peaks(prob, residual=residual, bad=bad, panel=panel)[0]["n_pixels"].tolist() == [1, 1, 1]


def test_measured_regions_match_direct_sums() -> None:
    rng = np.random.default_rng(4)
    residual = rng.normal(size=(30, 40)).astype(np.float32)
    residual[10:13, 20:23] += np.array([[1, 2, 1], [2, 8, 3], [1, 2, 1]], np.float32)
    prob = (0.5 * rng.random((30, 40))).astype(np.float32)  # below the cut outside the two regions
    prob[11, 21:23] = [0.7, 0.9]
    prob[25, 5] = 0.8
    regions = np.zeros((30, 40), np.int32)
    regions[11, 21:23] = 1
    regions[25, 5] = 2
    background = rng.uniform(3.0, 4.0, (30, 40)).astype(np.float32)
    noise = np.full((30, 40), 0.5, np.float32)
    got, _ = _sparse_peaks(prob, residual=residual, background=background, noise=noise, grow_px=1.5)
    assert got["row"].size == 2
    for k in (1, 2):
        sel = ndimage.binary_dilation(regions == k, np.ones((3, 3), bool))  # all within 1.5 px: a 3 x 3 square
        rr, cc = np.nonzero(sel)
        w = np.clip(residual[sel], 0, None)
        assert got["row"][k - 1] == pytest.approx((w * rr).sum() / w.sum(), abs=1e-5)
        assert got["col"][k - 1] == pytest.approx((w * cc).sum() / w.sum(), abs=1e-5)
        assert got["intensity"][k - 1] == pytest.approx(residual[sel].sum(), rel=1e-6)
        assert got["n_pixels"][k - 1] == sel.sum()
        assert got["snr"][k - 1] == pytest.approx(residual[sel].sum() / np.sqrt(0.25 * sel.sum()), rel=1e-6)
        assert got["score"][k - 1] == pytest.approx(prob[regions == k].max())
        assert got["background"][k - 1] == pytest.approx(background[sel].mean(), rel=1e-6)
        assert got["max_value"][k - 1] == pytest.approx(residual[sel].max() + background[sel].mean(), rel=1e-6)
    assert got["row"][0] == pytest.approx(11.0, abs=0.1) and got["col"][0] == pytest.approx(21.1, abs=0.15)


def test_peaks_on_powder_rings_are_dropped_and_counted() -> None:
    from braggml.geometry import PixelMaps

    rng = np.random.default_rng(3)
    shape = (301, 301)
    maps = PixelMaps.fallback(shape)
    radius = np.asarray(maps.radius_px)
    image = rng.poisson(10.0 + 40.0 * (np.abs(radius - 100.0) < 1.5)).astype(np.int32)
    norm = normalise_frame(image, None, maps=maps)
    prob = np.zeros(shape, np.float32)
    centre = np.array(shape) / 2 - 0.5
    on_ring = [(centre[0] + 100 * np.sin(a), centre[1] + 100 * np.cos(a)) for a in (0.3, 1.9, 4.0)]
    off_ring = [(centre[0] + 60, centre[1] + 20), (centre[0] - 30, centre[1] - 120)]
    for r, c in on_ring + off_ring:
        prob[int(round(r)) - 1 : int(round(r)) + 2, int(round(c)) - 1 : int(round(c)) + 2] = 0.99
    finder = UNetFinder(device="cpu", significance_snr=0.0)  # the regions are marked on plain background
    peaks = finder.peaks_from_probability(prob, norm, 0.5)
    assert len(peaks) == len(off_ring) and finder.last_rejections == {"powder_ring": len(on_ring)}
    found = np.column_stack([peaks.row, peaks.col])
    fi, _ = match_frame(found, np.array(off_ring), 1.5)
    assert len(fi) == len(off_ring)
    keep_all = UNetFinder(device="cpu", reject_powder_rings=False, significance_snr=0.0)
    assert len(keep_all.peaks_from_probability(prob, norm, 0.5)) == len(on_ring) + len(off_ring)
    assert keep_all.last_rejections == {}


def test_faulty_lines_stay_inside_panels_and_keep_counts_whole() -> None:
    from braggml.ml.unet_train import faulty_lines

    frame, maps = _test_frame()
    counts = np.random.default_rng(0).poisson(20.0, frame.image.shape).astype(np.int32)
    out, where = faulty_lines(counts, maps.panel_id, maps.mask, np.random.default_rng(5))
    assert where.any() and not (where & maps.mask).any() and (maps.panel_id[where] >= 0).all()
    np.testing.assert_array_equal(out[~where], counts[~where])
    assert np.all(out == np.rint(out)) and not np.array_equal(out[where], counts[where])
    assert counts.dtype == np.int32  # the input is not modified


def test_unlit_regions_take_every_kind_and_a_bounded_share() -> None:
    from braggml.ml.unet_train import unlit_region

    shape, beam = (240, 260), (110.0, 140.0)
    rng = np.random.default_rng(3)
    regions = [unlit_region(shape, beam, rng) for _ in range(60)]
    shares = np.array([r.mean() for r in regions])
    assert shares.min() > 0 and shares.max() <= 0.41
    # circles and edges take 5-40 % of the frame; bands are thin
    assert (shares >= 0.05).sum() >= 30 and (shares < 0.05).sum() >= 10
    for region in regions:  # the beam itself is never in the shadow of a circle or an edge taking <= 40 %
        if region.mean() >= 0.05:
            assert not region[110, 140]
    again = unlit_region(shape, beam, np.random.default_rng(3))
    np.testing.assert_array_equal(again, regions[0])


def test_shadow_leaves_the_dark_level_and_keeps_the_rest_of_the_frame() -> None:
    from braggml.ml.unet_train import cast_shadow

    sim = Simulator(get_preset("pilatus6m"), seed=2)  # photon counting: no offsets, no read noise
    frame = sim.frame(0)
    region = np.zeros(frame.image.shape, bool)
    region[:, :900] = True
    good = (sim.layout.panel_id >= 0) & ~sim.layout.mask & ~sim.layout.dead
    cold = good & (sim.layout.hot_photons == 0)
    out = cast_shadow(sim, frame, region, np.random.default_rng(1), transmission=(0.0, 0.0))
    assert out.dtype == frame.image.dtype and out.shape == frame.image.shape
    # no photons reach the shadow: its pixels read zero, where the frame had its background
    assert np.all(out[region & cold] == 0) and float(np.mean(frame.image[region & cold])) > 0.5
    # outside it, a new readout of the same expected photons
    lit = ~region & cold
    assert abs(float(np.mean(out[lit])) / float(np.mean(frame.image[lit])) - 1.0) < 0.01
    assert not np.array_equal(out[lit], frame.image[lit])
    np.testing.assert_array_equal(out[~good & ~sim.layout.dead & (sim.layout.panel_id < 0)], -1)  # gaps stay gaps
    hot = region & good & (sim.layout.hot_photons > 50)  # hot pixels are the detector's own and stay
    assert hot.any() and np.all(out[hot] > 20)
    half = cast_shadow(sim, frame, region, np.random.default_rng(1), transmission=(0.5, 0.5))
    ratio = float(np.mean(half[region & cold])) / float(np.mean(frame.image[region & cold]))
    assert 0.48 < ratio < 0.52
    assert np.array_equal(frame.image, sim.frame(0).image)  # the frame is not modified


def test_shadowed_training_frames_have_no_peak_targets_in_the_shadow(monkeypatch: pytest.MonkeyPatch) -> None:
    import braggml.ml.unet_train as ut

    seen = []

    def left_half(shape, beam_rowcol, rng):
        region = np.zeros(shape, bool)
        region[:, : shape[1] // 2] = True
        seen.append(region)
        return region

    monkeypatch.setattr(ut, "unlit_region", left_half)
    cfg = UNetTrainConfig(presets=("test",), variants=("hits",), crop_size=256, crops_per_frame=1,
                          spot_crop_fraction=0.0, shadow_fraction=1.0)
    crops = ut.simulate_crops(cfg, frames=[0, 1], augment=True, rng=np.random.default_rng(0))
    assert len(seen) == 2
    for target in crops.target:  # the crop is the whole 256-pixel-wide frame
        h, w = target.shape
        assert not (target[:, : w // 2] == 1).any() and (target[:, w // 2 :] == 1).any()
    plain = ut.simulate_crops(dataclasses.replace(cfg, shadow_fraction=0.0), frames=[0], augment=True,
                              rng=np.random.default_rng(0))
    assert len(seen) == 2 and (plain.target[0][:, :128] == 1).any()


def test_touching_spots_are_split_into_one_peak_each() -> None:
    rr, cc = np.mgrid[0:30, 0:40].astype(float)
    residual = np.zeros((30, 40))
    for r0, c0, a in [(12.0, 10.0, 100.0), (12.2, 14.0, 60.0), (20.0, 30.0, 80.0)]:
        residual += a * np.exp(-((rr - r0) ** 2 + (cc - c0) ** 2) / (2 * 0.8**2))
    residual = residual.astype(np.float32)
    prob = np.zeros((30, 40), np.float32)
    prob[10:15, 8:16] = 0.9  # one region over two spots 3.6 px apart
    prob[18:23, 28:33] = 0.9  # one spot
    before = prob.copy(), residual.copy()
    whole, _ = _sparse_peaks(prob, residual=residual)
    assert whole["n_pixels"].tolist() == [40, 25]
    cols, _ = _sparse_peaks(prob, residual=residual, split=True)
    np.testing.assert_array_equal(prob, before[0])  # inputs not modified
    np.testing.assert_array_equal(residual, before[1])
    # the first region keeps its number for its first spot; its second spot comes after every region
    assert cols["n_pixels"].size == 3
    assert cols["n_pixels"][0] + cols["n_pixels"][2] == 40 and cols["n_pixels"][1] == 25
    assert min(cols["n_pixels"][0], cols["n_pixels"][2]) > 0
    np.testing.assert_allclose(cols["row"], [12.0, 20.0, 12.2], atol=0.3)
    np.testing.assert_allclose(cols["col"], [10.0, 30.0, 14.0], atol=0.3)
    # a lone strong spot with a small bump on its flank stays whole
    lone = (100.0 * np.exp(-((rr - 12.0) ** 2 + (cc - 10.0) ** 2) / (2 * 1.5**2))).astype(np.float32)
    lone[12, 14] += 6.0
    one = np.zeros((30, 40), np.float32)
    one[8:17, 6:16] = 0.9
    assert _sparse_peaks(one, residual=lone, split=True)[0]["n_pixels"].tolist() == [90]


def test_regions_along_the_mask_are_measured_and_dropped() -> None:
    prob = np.zeros((20, 20), np.float32)
    prob[0, 15] = 1.0  # on the frame's edge
    prob[5, 1:4] = 1.0  # along the masked column 0 only partly
    prob[10:12, 1] = 1.0  # entirely along it
    prob[15, 10] = 1.0  # in the open
    bad = np.zeros((20, 20), bool)
    bad[:, 0] = True
    _, share = _sparse_peaks(prob, bad=bad)  # regions in raster order of their first pixel, as listed above
    np.testing.assert_allclose(share, [1.0, 1 / 3, 1.0, 0.0])
    panel = np.zeros((20, 20), np.int32)
    panel[:, 11:] = 1
    _, share = _sparse_peaks(prob, bad=bad, panel=panel)
    np.testing.assert_allclose(share, [1.0, 1 / 3, 1.0, 1.0])  # the open one now lies next to another panel
    norm = normalise_frame(np.random.default_rng(0).poisson(5.0, (20, 20)).astype(np.int32), bad)
    # the regions are marked on plain background: only the mask rule is judged here
    finder = UNetFinder(device="cpu", reject_powder_rings=False, split_regions=False, significance_snr=0.0)
    peaks = finder.peaks_from_probability(prob, norm, 0.5)
    assert len(peaks) == 2 and finder.last_rejections == {"masked": 2}
    kept = UNetFinder(device="cpu", reject_powder_rings=False, masked_peaks="keep", significance_snr=0.0)
    assert len(kept.peaks_from_probability(prob, norm, 0.5)) == 4


def test_a_lone_hot_pixel_is_dropped_and_a_spot_kept() -> None:
    rng = np.random.default_rng(2)
    image = rng.poisson(5.0, (64, 64)).astype(np.float32)
    image[12, 12] += 1000.0  # a hot pixel
    r, c = np.mgrid[:64, :64]
    image += rng.poisson(1000.0 * np.exp(-((r - 40.0) ** 2 + (c - 40.3) ** 2) / (2 * 0.5**2)) / (2 * np.pi * 0.25))
    prob = np.zeros((64, 64), np.float32)
    prob[12, 12] = prob[40, 40] = 1.0
    norm = normalise_frame(image, np.zeros((64, 64), bool))
    assert 0.8 < norm.gain < 1.25
    finder = UNetFinder(device="cpu", reject_powder_rings=False)
    peaks = finder.peaks_from_probability(prob, norm, 0.5)
    assert len(peaks) == 1 and abs(peaks.row[0] - 40.0) < 0.3 and finder.last_rejections == {"lone_pixel": 1}
    kept = UNetFinder(device="cpu", reject_powder_rings=False, lone_pixels="keep")
    assert len(kept.peaks_from_probability(prob, norm, 0.5)) == 2 and kept.last_rejections == {}
    # a run's summary shows them
    from braggml.pipeline import RunSummary

    summary = RunSummary(n_frames=1, rejected={"lone_pixel": 1, "too_small": 4}).lines()
    assert "rejected peaks: lone_pixel 1" in summary


def test_lone_pixels_on_an_empty_background_are_dropped_where_the_network_marks_a_neighbour() -> None:
    """Thresholded frames (zero below a cut, as HEXRD's frame caches): a lone pixel of 140-180 counts with empty
    neighbours is no spot (a spot of sigma 0.26 px would put 14-18 photons beside it; none is a 1e-5 chance),
    also where the network's most probable pixel is an empty neighbour of it. A sharp spot whose neighbours
    hold a tenth of its signal stays."""
    image = np.zeros((64, 64), np.float32)
    image[10, 10] = 140.0
    image[10, 30] = 180.0
    image[40, 40] = 160.0
    image[39:42, 39:42] += np.array([[2, 3, 1], [2, 0, 3], [1, 2, 2]], np.float32)  # 16 counts beside it
    prob = np.zeros((64, 64), np.float32)
    prob[10, 10] = prob[40, 40] = 1.0
    prob[11, 30] = 1.0  # the network marks the empty pixel below the 180-count one
    norm = normalise_frame(image, np.zeros((64, 64), bool))
    assert norm.gain == 1.0
    finder = UNetFinder(device="cpu", reject_powder_rings=False)
    peaks = finder.peaks_from_probability(prob, norm, 0.5)
    assert len(peaks) == 1 and abs(peaks.row[0] - 40.0) < 0.1 and abs(peaks.col[0] - 40.0) < 0.1
    assert finder.last_rejections == {"lone_pixel": 2}


def test_a_noise_cluster_on_a_sparse_background_is_dropped_and_a_faint_sharp_spot_kept() -> None:
    rng = np.random.default_rng(3)
    image = rng.poisson(0.4, (96, 96)).astype(np.float32)
    image[20:23, 20:23] = [[1, 2, 1], [2, 4, 2], [1, 2, 1]]  # a loose cluster of a few photons (7 Gaussian sigmas)
    image[60:63, 60:63] = [[0, 3, 0], [0, 8, 6], [0, 0, 0]]  # a sharp spot of 17 photons
    prob = np.zeros((96, 96), np.float32)
    prob[20:23, 20:23] = prob[60:62, 60:63] = 1.0
    norm = normalise_frame(image, np.zeros((96, 96), bool))
    assert 0.8 < norm.gain < 1.25
    finder = UNetFinder(device="cpu", reject_powder_rings=False)
    peaks = finder.peaks_from_probability(prob, norm, 0.5)
    assert len(peaks) == 1 and abs(peaks.row[0] - 60.5) < 1 and finder.last_rejections == {"not_significant": 1}
    kept = UNetFinder(device="cpu", reject_powder_rings=False, significance_snr=0.0)
    assert len(kept.peaks_from_probability(prob, norm, 0.5)) == 2 and kept.last_rejections == {}
    from braggml.pipeline import RunSummary

    assert "rejected peaks: not_significant 1" in RunSummary(n_frames=1, rejected=finder.last_rejections).lines()


def test_counting_frames_count_a_photon_per_count_and_ask_more_of_sparse_regions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a sparse photon-counting frame the clipped statistics measure well under one count per photon; the peak
    tests count one, and a region on that background must be a Poisson excess of ``significance_snr`` plus half
    a sigma: a cluster of 15 photons that passes 5 sigmas but not 5.5 is dropped, a sharp spot of 19 kept."""
    from braggml.ml import unet_finder

    rng = np.random.default_rng(3)
    image = rng.poisson(0.5, (128, 128)).astype(np.int32)
    image[60:63, 60:63] = [[0, 2, 0], [2, 7, 2], [0, 2, 0]]
    image[20:23, 100:103] = [[0, 3, 0], [1, 9, 5], [0, 1, 0]]
    prob = np.zeros(image.shape, np.float32)
    prob[60:63, 60:63] = prob[21, 101] = 1.0
    norm = normalise_frame(image, np.zeros(image.shape, bool))
    assert norm.integer and norm.gain < 0.75
    assert unet_finder.counting_gain(norm.integer, norm.gain, norm.noise_correlation) == (True, 1.0)
    finder = UNetFinder(device="cpu", reject_powder_rings=False)
    peaks = finder.peaks_from_probability(prob, norm, 0.5)
    assert len(peaks) == 1 and abs(peaks.row[0] - 21.0) < 0.5 and finder.last_rejections == {"not_significant": 1}
    looser = UNetFinder(device="cpu", reject_powder_rings=False, significance_snr=4.5)
    assert len(looser.peaks_from_probability(prob, norm, 0.5)) == 2
    monkeypatch.setattr(unet_finder, "COUNTING_SIGNIFICANCE_MARGIN", 0.0)
    assert len(finder.peaks_from_probability(prob, norm, 0.5)) == 2
    monkeypatch.undo()
    # counted at the measured gain, each count would be 1.6 photons: the cluster would pass even 5.5 sigmas
    at_measured = dataclasses.replace(norm, integer=False)
    assert len(UNetFinder(device="cpu", reject_powder_rings=False, significance_snr=5.5).peaks_from_probability(
        prob, at_measured, 0.5)) == 2


def test_a_region_of_pixels_no_higher_than_their_background_is_dropped() -> None:
    """On 5 photons per pixel (not sparse) a region needs only a 3-sigma excess: a faint spot of 40 photons is
    kept, a region the network marks on plain background is not."""
    rng = np.random.default_rng(6)
    image = rng.poisson(5.0, (96, 96)).astype(np.float32)
    r, c = np.mgrid[:96, :96]
    image += rng.poisson(40.0 * np.exp(-((r - 30.0) ** 2 + (c - 30.0) ** 2) / (2 * 0.8**2)) / (2 * np.pi * 0.64))
    image[60:63, 60:63] = 5.0  # exactly the background
    prob = np.zeros((96, 96), np.float32)
    prob[29:32, 29:32] = prob[60:63, 60:63] = 1.0
    norm = normalise_frame(image, np.zeros((96, 96), bool))
    finder = UNetFinder(device="cpu", reject_powder_rings=False)
    peaks = finder.peaks_from_probability(prob, norm, 0.5)
    assert len(peaks) == 1 and abs(peaks.row[0] - 30.0) < 0.5 and finder.last_rejections == {"not_significant": 1}
    assert len(UNetFinder(device="cpu", significance_snr=0.0).peaks_from_probability(prob, norm, 0.5)) == 2


def test_train_help_names_every_frame_variant() -> None:
    import argparse

    from braggml.ml.unet_cli import add_train_unet_arguments
    from braggml.ml.unet_train import VARIANTS

    parser = argparse.ArgumentParser()
    add_train_unet_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert all(v in text for v in VARIANTS), text


def test_noise_blobs_behind_a_phosphor_are_not_taken_for_spots() -> None:
    """A CCD behind a phosphor spreads each photon's charge over neighbouring pixels: its noise forms blobs a
    few pixels wide that stand several noise units above the background unless the noise is scaled by how
    much more it varies over 3 x 3 pixels (a network trained on independent pixels took them for weak
    spots: over a hundred peaks on this frame)."""
    rng = np.random.default_rng(1)
    shape = (512, 512)
    image = 10.0 * ndimage.gaussian_filter(rng.poisson(50.0, shape).astype(np.float64), 1.2) + 200.0
    noise_only = image.astype(np.float32)
    rows, cols = np.indices(shape)
    spots = [(100.3, 120.6), (300.2, 400.1), (420.7, 80.4)]
    for r, c in spots:
        image += 3000.0 * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * 1.2**2))
    finder = UNetFinder(device="cpu", precision="float32")
    peaks = finder.find(image.astype(np.float32))
    assert len(peaks) <= len(spots) + 2  # against over a hundred below
    assert match_frame(np.array(spots), np.column_stack([peaks.row, peaks.col]), 1.0)[0].size == len(spots)
    scaled = normalise_frame(noise_only)
    blind = normalise_frame(noise_only, config=NormConfig(correlated_noise_min=float("inf")))
    assert scaled.noise_correlation > 4 and blind.noise_correlation == 1.0  # measured about 5.6
    assert (scaled.residual / scaled.noise > 3).sum() == 0
    assert (blind.residual / blind.noise > 3).sum() > 200  # 429 pixels: blobs that look like weak spots


def test_the_second_cut_adds_clear_spots_the_network_is_unsure_of() -> None:
    rng = np.random.default_rng(5)
    image = rng.poisson(0.3, (96, 96)).astype(np.float32)
    image[30:33, 30:33] = [[0, 3, 1], [1, 9, 6], [0, 2, 0]]  # a sharp spot of 22 photons
    image[60, 60] = 500.0  # a hot pixel
    image[70, 20] = 1.0  # one photon
    prob = np.zeros((96, 96), np.float32)
    prob[30:32, 30:32] = 0.5  # the network is unsure of the spot,
    prob[59, 60] = 0.5  # of the hot pixel's neighbour (not of the hot pixel itself)
    prob[70, 20] = 0.5  # and of the photon
    norm = normalise_frame(image, np.zeros((96, 96), bool))
    finder = UNetFinder(device="cpu", reject_powder_rings=False)
    peaks = finder.peaks_from_probability(prob, norm, 0.98)
    assert len(peaks) == 1 and abs(peaks.row[0] - 31.0) < 0.5 and abs(peaks.col[0] - 31.2) < 0.5
    assert peaks.score[0] == pytest.approx(0.5)
    # a region holding a pixel above the first cut is the first cut's alone
    prob[31, 31] = 0.99
    again = finder.peaks_from_probability(prob, norm, 0.98)
    assert len(again) == 1 and again.score[0] == pytest.approx(0.99)
    prob[31, 31] = 0.5
    # no second cut, or a stricter significance: nothing (but for the photon spots of this counting frame)
    without = {"device": "cpu", "photon_spots": "off"}
    assert len(UNetFinder(second_cut=0.0, **without).peaks_from_probability(prob, norm, 0.98)) == 0
    assert len(UNetFinder(second_cut_snr=30.0, **without).peaks_from_probability(prob, norm, 0.98)) == 0
    assert len(UNetFinder(device="cpu", second_cut_snr=30.0).peaks_from_probability(prob, norm, 0.98)) == 0
    # nor below it
    assert len(UNetFinder(second_cut=0.6, **without).peaks_from_probability(prob, norm, 0.98)) == 0
    # the spot is then a photon spot: its brightest pixel is unmarked, bright and on a sparse background
    photon = UNetFinder(device="cpu", second_cut=0.0).peaks_from_probability(prob, norm, 0.98)
    assert len(photon) == 1 and abs(photon.row[0] - 31.0) < 0.5 and photon.score[0] == pytest.approx(0.5)


def _counting_frame() -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """A sparse photon-counting frame (0.2 photon per pixel) with two sharp spots of 17 and 20 photons, a hot
    pixel of 40 counts with nothing beside it, and a spot the network marks; the network's probability."""
    rng = np.random.default_rng(7)
    image = rng.poisson(0.2, (128, 128)).astype(np.int32)
    image[29:32, 39:42] += np.array([[0, 2, 0], [1, 9, 4], [0, 1, 0]])
    image[89:92, 99:102] += np.array([[1, 1, 0], [2, 12, 2], [0, 1, 1]])
    image[59:62, 19:22] = 0
    image[60, 20] = 40
    image[100:103, 30] += np.array([3, 15, 4])
    prob = np.zeros(image.shape, np.float32)
    prob[101, 30] = 0.99
    return image, prob, [(30, 40), (90, 100), (101, 30)]


def test_photon_spots_find_sharp_spots_the_network_left_on_counting_frames() -> None:
    """On a photon-counting frame a sharp spot of a few photons that the network leaves unmarked is a peak, with
    its own (low) probability as score; a hot pixel with nothing beside it is not. The same frame read out by
    an integrating detector (12 units per photon, read noise) is not searched unless asked."""
    image, prob, spots = _counting_frame()
    norm = normalise_frame(image, np.zeros(image.shape, bool))
    assert norm.integer and 0.6 < norm.gain < 1.5
    finder = UNetFinder(device="cpu", reject_powder_rings=False)
    peaks = finder.peaks_from_probability(prob, norm, 0.98)
    assert match_frame(np.column_stack([peaks.row, peaks.col]), np.array(spots, float), 1.0)[0].size == 3
    assert len(peaks) == 3 and sorted(peaks.score.tolist()) == [0.0, 0.0, pytest.approx(0.99)]
    off = UNetFinder(device="cpu", reject_powder_rings=False, photon_spots="off")
    assert len(off.peaks_from_probability(prob, norm, 0.98)) == 1
    integrating = (image * 12.0 + np.random.default_rng(1).normal(0.0, 3.0, image.shape)).astype(np.float32)
    norm_i = normalise_frame(integrating, np.zeros(image.shape, bool))
    assert not norm_i.integer and norm_i.gain > 5
    assert len(finder.peaks_from_probability(prob, norm_i, 0.98)) == 1
    asked = UNetFinder(device="cpu", reject_powder_rings=False, photon_spots="on").peaks_from_probability(
        prob, norm_i, 0.98
    )
    assert match_frame(np.column_stack([asked.row, asked.col]), np.array(spots, float), 1.0)[0].size == 3
    with pytest.raises(ConfigError, match="photon_spots"):
        UNetFinderConfig(photon_spots="yes")


def test_photon_counting_frames_are_told_from_integrating_ones() -> None:
    from braggml.ml.unet_finder import photon_counting

    assert photon_counting(True, 1.0) and photon_counting(True, 0.75)
    assert not photon_counting(False, 1.0)  # fractional values: converted or integrating
    assert not photon_counting(True, 25.0)  # ADU of an integrating detector
    assert not photon_counting(True, 1.0, noise_correlation=2.4)  # noise shared by neighbours: a phosphor


def test_the_cnn_backstop_adds_spots_the_network_missed_and_keeps_its_own() -> None:
    """On weak frames of a detector neither model was trained on, the CNN backstop finds more of the spots."""
    config = get_preset("test")
    low, high = config.crystal.strength_range_photons
    sim = Simulator(apply_overrides(config, {"crystal": {"strength_range_photons": [low / 5, high / 5]}}), seed=8)
    maps = sim.layout.pixel_maps(sim.wavelength_a)
    alone = UNetFinder(device="cpu")
    with_cnn = UNetFinder(device="cpu", backstop="cnn")
    assert with_cnn.batch_runner((256, 256)) is None  # frames one at a time, so that the backstop runs
    n_true = n_alone = n_with = n_added = n_added_at_spots = 0
    for k in range(4):
        frame = sim.frame(k)
        a = alone.find(frame.image, maps.mask, maps=maps)
        b = with_cnn.find(frame.image, maps.mask, maps=maps)
        added = b.take(np.arange(len(b)) >= len(a))
        np.testing.assert_array_equal(b.row[: len(a)], a.row)  # the network's peaks all stay
        assert with_cnn.last_backstop_added == len(added)
        assert np.all(added.score >= with_cnn.config.backstop_score)
        if len(a) and len(added):
            assert cKDTree(np.column_stack([a.row, a.col])).query(np.column_stack([added.row, added.col]))[0].min() > 2
        s = frame.spots
        truth = np.column_stack([s["row"], s["col"]])[s["observable"] & (s["snr"] >= 3)]
        n_true += len(truth)
        n_alone += len(match_frame(np.column_stack([a.row, a.col]), truth, 2.0)[1])
        n_with += len(match_frame(np.column_stack([b.row, b.col]), truth, 2.0)[1])
        n_added += len(added)
        n_added_at_spots += len(match_frame(np.column_stack([added.row, added.col]),
                                            np.column_stack([s["row"], s["col"]]), 2.0)[0])
    assert n_true > 200 and n_with > n_alone
    assert n_added > 0 and n_added_at_spots >= 0.8 * n_added
    with pytest.raises(ConfigError, match="backstop"):
        UNetFinderConfig(backstop="pf8")
    with pytest.raises(ConfigError, match="backstop_score"):
        UNetFinderConfig(backstop_score=1.5)
