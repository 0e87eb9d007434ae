r"""Train the U-Net model shipped with braggml (``src/braggml/data/unet_default.safetensors``).

Training data: simulated frames of the ``jungfrau4m`` (integrating, float ADU with a gain of 12) and
``pilatus6m`` (photon counting, int32) presets only; ``eiger4m`` and ``test`` are kept unseen for
``benchmarks/unet_vs_peakfinder8.py``. Run seed 0. Every frame is one of the variants of its preset in turn
(``--variants``, :func:`braggml.ml.unet_train.variant_config`): hits, weak hits (crystals ten times weaker),
hits with ice rings, blank frames (solvent, ice on half of them, detector artefacts), dense hits (a 3.5 times
longer unit cell, to 3-5 A), quiet weak hits (a fiftieth of the background), varied hits (each frame's
experiment drawn at random around the preset, :func:`braggml.ml.unet_train.varied_config`), compact hits
(spots of one to three pixels, from crystals up to ten times weaker), crowded hits (spots 2.5-6 px apart,
:func:`braggml.ml.unet_train.crowded_config`), sharp hits (few-photon spots of one or two pixels on an almost
empty frame, :func:`braggml.ml.unet_train.sharp_config`; ``pinpoint``: the same on about the preset's own
background) and phosphor hits (photon noise shared by neighbouring
pixels, :func:`braggml.ml.unet_train.phosphor_config`). Frames 0..N-1 train (half of them rescaled by a random gain
factor in [0.5, 2] plus a pedestal before normalisation, a quarter of them given an unmasked region the X-rays
do not reach, :func:`braggml.ml.unet_train.cast_shadow`), frames 1000.. validate.
Random 128 x 128 crops, 40 % centred near a target spot. Targets: cores of radius 1.5 px around observable
spots with expected SNR >= 3 (:func:`braggml.ml.unet_train.frame_target`).
Loss: weighted BCE (peak pixels x5) + 0.5 soft Dice; AdamW with a one-cycle schedule; the epoch with the best
validation peak F1 (2 px matching) is kept. The probability cut is then chosen on whole validation frames
(:func:`choose_threshold`), not on crops, unless ``--cut`` names the one to ship.

The shipped model is the average of the weights of four networks, made on 2 CPU cores. First a network from
scratch (28 min; best epoch 26 of 30), with compact frames twice in every nine, before unlit regions were among
the augmentations (hence ``--shadow-fraction 0``):

    python benchmarks/train_unet_default.py --out h.safetensors --train-frames 63 --val-frames 9 --epochs 30 \
        --learning-rate 1e-3 --workers 2 --max-seconds 2700 --shadow-fraction 0 \
        --variants hits weak ice blank dense quiet varied compact compact

then fine-tuned from that with crowded frames (spots 2.5-6 px apart) twice in every eleven (13 min; best epoch
11 of 12). Its validation frames are those of the first run: crowded frames hold so many spots that they would
outweigh every other kind of frame in a pooled F1. This network, ``h2``, was the shipped model before the
average.

    python benchmarks/train_unet_default.py --init h.safetensors --out h2.safetensors --train-frames 77 \
        --val-frames 9 --epochs 12 --learning-rate 3e-4 --workers 2 --max-seconds 1500 --patience 12 \
        --shadow-fraction 0 --variants hits weak ice blank dense quiet varied compact compact crowded crowded \
        --val-variants hits weak ice blank dense quiet varied compact compact

Then ``h2`` was fine-tuned three times for up to 14 more epochs on twice the frames (27-31 min each): ``f1``
without unlit regions, ``f2`` with them (``--shadow-fraction 0.25``, the default), and ``f3`` with them and
with sharp frames once in twelve (``--variants ... crowded crowded sharp``, ``--max-seconds 2400``):

    python benchmarks/train_unet_default.py --init h2.safetensors --out f1.safetensors --train-frames 154 \
        --val-frames 9 --epochs 14 --learning-rate 3e-4 --workers 2 --max-seconds 2700 --patience 14 \
        --shadow-fraction 0 --variants hits weak ice blank dense quiet varied compact compact crowded crowded \
        --val-variants hits weak ice blank dense quiet varied compact compact

Each alone did better than ``h2`` on some simulated frames and worse on some real ones (``docs/unet.md``).
Their average, ``a4``, was the shipped model before this one: the mean of the weights and batch-norm
statistics of ``h2``, ``f1``, ``f2`` and ``f3`` (:func:`braggml.ml.unet_train.average_weights`), with cuts for
one, two and four flipped copies (:class:`braggml.ml.unet.FlipAveraged`) chosen on the validation frames of the
first run (1 min): each the highest within 0.005 of the best F1.

    python benchmarks/train_unet_default.py --average h2.safetensors f1.safetensors f2.safetensors \
        f3.safetensors --out a4.safetensors --val-frames 9 \
        --variants hits weak ice blank dense quiet varied compact compact

``a4`` was then fine-tuned three times more (22-30 min each): ``g1`` with ``phosphor`` frames among the
variants and the hot pixels of three training frames in four masked (``--hot-mask-fraction 0.75``), ``g2``
with the hot pixels masked as often and ``sharp`` frames three times, ``quiet`` and ``compact`` twice in every
fifteen, and ``g3`` with ``phosphor`` frames and no hot pixels masked:

    python benchmarks/train_unet_default.py --init a4.safetensors --out g1.safetensors --train-frames 132 \
        --val-frames 9 --epochs 12 --learning-rate 3e-4 --workers 2 --max-seconds 2100 --patience 12 \
        --hot-mask-fraction 0.75 --variants hits weak ice blank dense quiet varied compact compact crowded \
        crowded sharp phosphor --val-variants hits weak ice blank dense quiet varied compact compact
    python benchmarks/train_unet_default.py --init a4.safetensors --out g2.safetensors --train-frames 132 \
        --val-frames 9 --epochs 12 --learning-rate 3e-4 --workers 2 --max-seconds 2100 --patience 12 \
        --hot-mask-fraction 0.75 --variants hits weak compact compact sharp sharp sharp quiet quiet crowded \
        varied blank ice dense phosphor --val-variants hits weak ice blank dense quiet varied compact compact
    python benchmarks/train_unet_default.py --init a4.safetensors --out g3.safetensors --train-frames 120 \
        --val-frames 9 --epochs 11 --learning-rate 3e-4 --workers 2 --max-seconds 1500 --patience 11 \
        --variants hits weak ice blank dense quiet varied compact compact crowded crowded sharp phosphor \
        --val-variants hits weak ice blank dense quiet varied compact compact

``m4``, the average of ``a4``, ``g3``, ``g1`` and ``g2`` (so ``h2``, ``f1``, ``f2`` and ``f3`` weigh a
sixteenth each), with cuts 0.9, 0.9 and 0.8 chosen as above, was the shipped model before this one:

    python benchmarks/train_unet_default.py --average a4.safetensors g3.safetensors g1.safetensors \
        g2.safetensors --out m4.safetensors --val-frames 9 \
        --variants hits weak ice blank dense quiet varied compact compact

The shipped model is ``m4`` fine-tuned for 10 epochs (35 min) with ``pinpoint`` frames (sharp few-photon spots
on about the preset's own background) four times and ``sharp`` twice in every sixteen, every training frame's hot pixels
masked, and no validation frames (the last epoch is kept), then given its cuts on the validation frames of the
first run (0.98 for one, two and four copies; the best F1 at 0.95). It runs one copy unless told otherwise.

    python benchmarks/train_unet_default.py --init m4.safetensors --out p.safetensors --train-frames 128 \
        --val-frames 0 --epochs 10 --learning-rate 3e-4 --workers 2 --max-seconds 2100 --patience 12 \
        --hot-mask-fraction 1.0 --variants hits weak compact sharp sharp pinpoint pinpoint pinpoint pinpoint \
        quiet crowded varied blank ice dense phosphor
    python benchmarks/train_unet_default.py --recut p.safetensors --out shipped.safetensors --val-frames 9 \
        --variants hits weak ice blank dense quiet varied compact compact

``--recut MODEL`` chooses the cuts of one model again in the same way (for ``h2``: 0.95, 0.95 and 0.9).

Run: ``python benchmarks/train_unet_default.py [--out PATH] [--max-seconds S] [--train-frames N] [--init MODEL]
[--variants ...] [--val-variants ...] [--val-average pooled|variant] [--patience N] [--convs-per-block N]
[--shadow-fraction F] [--hot-mask-fraction F] [--cut C] [--flips N] [--cut-tolerance DF1] [--recut MODEL]
[--average MODEL ...]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import torch

from braggml.errors import ConfigError
from braggml.ml.unet import DEFAULT_MODEL_PATH, NormConfig, TrainedUNet, UNetConfig, load_unet
from braggml.ml.unet_train import (
    DEFAULT_VARIANTS,
    VAL_AVERAGES,
    VARIANTS,
    CropSet,
    UNetTrainConfig,
    average_weights,
    choose_threshold,
    simulate_crops,
    train_unet,
)

#: The shipped architecture (the defaults): 2x2 space-to-depth input, four levels, one convolution per block.
MODEL = UNetConfig()
FIRST_VAL = 1000


def _crops(job: tuple) -> CropSet:
    cfg, frames, augment, norm, seed = job
    torch.set_num_threads(1)
    return simulate_crops(cfg, frames=frames, augment=augment, norm=norm, rng=np.random.default_rng(seed))


def crops_in_parallel(cfg: UNetTrainConfig, frames: range, augment: bool, norm: NormConfig, workers: int) -> CropSet:
    """:func:`simulate_crops` over chunks of the frames in ``workers`` processes (chunk ``i`` draws its crops and
    augmentation from seed ``(cfg.seed, i)``)."""
    chunks = [list(frames)[i::workers] for i in range(workers)]
    jobs = [(cfg, chunk, augment, norm, [cfg.seed, i]) for i, chunk in enumerate(chunks) if chunk]
    if not jobs:  # no frames (--val-frames 0): an empty set
        return _crops((cfg, [], augment, norm, cfg.seed))
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        return CropSet.concatenate(pool.map(_crops, jobs))


def train_config(args: argparse.Namespace) -> UNetTrainConfig:
    """The training settings of the command line (presets jungfrau4m and pilatus6m)."""
    return UNetTrainConfig(
        presets=("jungfrau4m", "pilatus6m"),
        train_frames_per_preset=args.train_frames,
        val_frames_per_preset=args.val_frames,
        crop_size=128,
        crops_per_frame=args.crops_per_frame,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        patience=args.patience,
        max_seconds=args.max_seconds,
        seed=args.seed,
        device=args.device,
        variants=tuple(args.variants),
        val_average=args.val_average,
        shadow_fraction=args.shadow_fraction,
        hot_mask_fraction=args.hot_mask_fraction,
        flips=args.flips,
        cut_tolerance=args.cut_tolerance,
    )


def recut(args: argparse.Namespace, trained: TrainedUNet) -> None:
    """Choose the cuts of a model again (for 1, 2 and 4 flipped copies; it runs ``args.flips``), and write it to
    ``args.out`` with its weights unchanged (the earlier choice is kept in its info as
    ``earlier_threshold_choice``)."""
    t0 = time.monotonic()
    before = {"threshold": trained.threshold, "flips": trained.flips,
              "threshold_choice": trained.info.get("threshold_choice")}
    trained.flips = args.flips
    cfg = dataclasses.replace(train_config(args), variants=tuple(args.val_variants or args.variants))
    frames = range(FIRST_VAL, FIRST_VAL + args.val_frames)
    threshold, scores = choose_threshold(trained, cfg, frames=frames)
    for n, choice in trained.info["threshold_choice"]["by_flips"].items():
        for row in choice["scores"]:
            print(f"{n} copies:", {k: round(v, 4) for k, v in row.items()}, flush=True)
    if args.cut is not None:
        trained.info["threshold_choice"]["best_on_validation"] = threshold
        trained.threshold = args.cut
    trained.info["earlier_threshold_choice"] = before
    path = trained.save(args.out)
    print(json.dumps({"path": str(path), "flips": trained.flips, "threshold": trained.threshold,
                      "cuts": trained.cuts, "best_f1_cut": trained.info["threshold_choice"]["best_f1_cut"],
                      "seconds": round(time.monotonic() - t0)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_MODEL_PATH))
    parser.add_argument("--max-seconds", type=float, default=1500.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-frames", type=int, default=24, help="training frames per preset")
    parser.add_argument("--val-frames", type=int, default=8, help="validation frames per preset")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--crops-per-frame", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--init", default="", help="start from this model file's weights (fine-tuning)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="processes simulating the training frames")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=VARIANTS)
    parser.add_argument("--val-variants", nargs="+", default=None, choices=VARIANTS,
                        help="variants of the validation frames (default: those of --variants)")
    parser.add_argument("--patience", type=int, default=8, help="epochs without a better validation F1 to stop")
    parser.add_argument("--convs-per-block", type=int, default=MODEL.convs_per_block,
                        help="3x3 convolutions in every U-Net block (from scratch only)")
    parser.add_argument("--shadow-fraction", type=float, default=UNetTrainConfig.shadow_fraction,
                        help="share of the training frames given an unmasked unlit region")
    parser.add_argument("--hot-mask-fraction", type=float, default=UNetTrainConfig.hot_mask_fraction,
                        help="share of the training frames whose hot pixels are in the mask")
    parser.add_argument("--cut", type=float, default=None,
                        help="probability cut to ship instead of the one with the best F1 on the validation frames "
                             "(both are recorded in the model's threshold_choice)")
    parser.add_argument("--val-average", choices=VAL_AVERAGES, default="pooled",
                        help="validation F1 over all crops together, or the mean over the variants")
    parser.add_argument("--seed", type=int, default=0,
                        help="run seed of the simulated training and validation frames, and of the training")
    parser.add_argument("--flips", type=int, choices=(1, 2, 4), default=UNetTrainConfig.flips,
                        help="flipped copies whose logits the model averages unless told otherwise")
    parser.add_argument("--cut-tolerance", type=float, default=UNetTrainConfig.cut_tolerance,
                        help="the cut is the highest within this of the best validation F1")
    parser.add_argument("--recut", default="", metavar="MODEL",
                        help="train nothing: choose the cuts of this model again (on the validation frames of "
                             "--val-frames and --val-variants or --variants; it runs --flips copies) and write it "
                             "to --out")
    parser.add_argument("--average", nargs="+", default=[], metavar="MODEL",
                        help="train nothing: average the weights of these models (fine-tuned from one model), "
                             "choose the cuts as --recut does and write the result to --out")
    args = parser.parse_args()
    if args.cut is not None and not 0 < args.cut < 1:
        parser.error(f"--cut must lie in (0, 1), got {args.cut}")
    try:  # every path (training, --recut, --average) takes its settings from here: refuse bad ones in one line
        train_config(args)
    except ConfigError as err:
        parser.error(str(err))
    torch.set_num_threads(args.threads)
    if args.recut:
        recut(args, load_unet(args.recut, device=args.device))
        return
    if args.average:
        averaged = average_weights([load_unet(p, device=args.device) for p in args.average])
        averaged.info["trained_on"] = (
            f"the weights of {len(args.average)} models averaged: " + "; ".join(
                f"({i + 1}) {t}" for i, t in enumerate(averaged.info["averaged_from"])
            )
        )
        recut(args, averaged)
        return
    cfg = train_config(args)
    # validation frames may be of other variants: crowded frames hold so many spots that they would outweigh
    # every other kind of frame in a pooled F1
    val_cfg = dataclasses.replace(cfg, variants=tuple(args.val_variants or args.variants))
    norm = NormConfig()
    rng = np.random.default_rng(cfg.seed)
    t0 = time.monotonic()
    val_frames = range(FIRST_VAL, FIRST_VAL + cfg.val_frames_per_preset)
    if args.workers > 1:
        train = crops_in_parallel(cfg, range(cfg.train_frames_per_preset), True, norm, args.workers)
        val = crops_in_parallel(val_cfg, val_frames, False, norm, args.workers)
    else:
        train = simulate_crops(cfg, frames=range(cfg.train_frames_per_preset), augment=True, norm=norm, rng=rng)
        val = simulate_crops(val_cfg, frames=val_frames, augment=False, norm=norm, rng=rng)
    print(f"data: {len(train)} train / {len(val)} val crops in {time.monotonic() - t0:.0f} s", flush=True)
    initial = load_unet(args.init, device=args.device) if args.init else None
    trained = train_unet(
        train, val, config=cfg, model_config=dataclasses.replace(MODEL, convs_per_block=args.convs_per_block),
        norm=norm, progress=lambda r: print(r, flush=True),
        initial=initial,
    )
    if initial is not None:
        trained.info["initialised_from"] = initial.info.get("trained_on")
    if len(val_frames):
        threshold, scores = choose_threshold(trained, val_cfg, frames=val_frames)
        print("threshold on whole validation frames:", threshold, scores, flush=True)
    else:  # the last epoch is kept; its cut is chosen with --recut
        threshold = trained.threshold
        print(f"no validation frames: the last epoch is kept, with cut {threshold}; choose one with --recut",
              flush=True)
    if args.cut is not None:
        trained.info["threshold_choice"]["best_on_validation"] = threshold
        trained.threshold = args.cut
    trained.info["trained_on"] = (
        f"simulated frames of presets jungfrau4m and pilatus6m (seed {cfg.seed}; variants {', '.join(cfg.variants)}"
        f"{'' if val_cfg.variants == cfg.variants else '; validation ' + ', '.join(val_cfg.variants)}; "
        "'varied' draws pixel size, distance, point spread, divergence, mosaicity, cell, strength and background "
        "at random around the preset for each frame; 'compact' makes spots of one to three pixels; 'crowded' "
        "puts spots 2.5-6 px apart; 'sharp' puts few-photon spots of one or two pixels on an almost empty frame, "
        "'pinpoint' on about the preset's own background; "
        "'phosphor' reads the frame out behind a phosphor (photon noise shared by neighbouring pixels); "
        f"{cfg.shadow_fraction:.0%} of the training frames with an unmasked region the X-rays do not reach; "
        f"{cfg.hot_mask_fraction:.0%} with their hot pixels masked; "
        f"train frames 0-{cfg.train_frames_per_preset - 1}, "
        + (f"validation frames {val_frames.start}-{val_frames.stop - 1}" if len(val_frames) else "no validation frames")
        + "), 128x128 crops, targets = 1.5 px cores of spots with expected SNR >= 3"
    )
    path = trained.save(args.out)
    n_params = sum(p.numel() for p in trained.model.parameters())
    print(json.dumps({"path": str(path), "bytes": Path(path).stat().st_size, "parameters": n_params,
                      "threshold": trained.threshold, "val_f1": trained.info["val_f1"],
                      "seconds": round(time.monotonic() - t0)}))


if __name__ == "__main__":
    main()
