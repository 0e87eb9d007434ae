"""Command-line wiring of U-Net training: ``braggml train --model unet -o MODEL [--preset NAME ...]``.

The network is trained on simulated hit frames of the chosen simulator presets (targets from the simulator's
truth footprints); the arguments map one-to-one onto :class:`~braggml.ml.unet_train.UNetTrainConfig` and
:class:`~braggml.ml.unet.UNetConfig` fields, whose defaults apply when a flag is not given.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

__all__ = ["add_train_unet_arguments", "run_train_unet"]

_TRAIN_FLAGS = {
    "presets": "presets",
    "train_frames": "train_frames_per_preset",
    "val_frames": "val_frames_per_preset",
    "crop_size": "crop_size",
    "crops_per_frame": "crops_per_frame",
    "min_snr": "min_snr",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "learning_rate": "learning_rate",
    "patience": "patience",
    "max_seconds": "max_seconds",
    "seed": "seed",
    "device": "device",
}


def add_train_unet_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the U-Net training flags to ``parser`` (every one optional; defaults from the config classes)."""
    g = parser.add_argument_group("U-Net training (simulated frames)")
    g.add_argument("-o", "--output", required=True, metavar="MODEL", help="model file to write (.safetensors)")
    g.add_argument("--preset", dest="presets", action="append", metavar="NAME",
                   help="simulator preset to train on (repeat for several)")
    g.add_argument("--train-frames", type=int, metavar="N", help="training frames per preset")
    g.add_argument("--val-frames", type=int, metavar="N", help="validation frames per preset")
    g.add_argument("--crop-size", type=int, metavar="S", help="side of the training crops")
    g.add_argument("--crops-per-frame", type=int, metavar="N", help="crops taken from each frame")
    g.add_argument("--min-snr", type=float, metavar="SNR", help="spots with this expected SNR or more are targets")
    g.add_argument("--channels", type=int, nargs="+", metavar="C", help="feature channels of each U-Net level")
    g.add_argument("--epochs", type=int, help="most training epochs (early stopping on validation peak F1)")
    g.add_argument("--batch-size", type=int, help="crops per step")
    g.add_argument("--learning-rate", type=float, help="peak AdamW learning rate")
    g.add_argument("--patience", type=int, help="epochs without a better validation F1 before stopping")
    g.add_argument("--max-seconds", type=float, help="wall-clock budget of the training loop")
    g.add_argument("--seed", type=int, help="simulation run seed and training seed")
    g.add_argument("--device", help="auto (CUDA when available), cpu, cuda or cuda:N")
    g.add_argument("--threads", type=int, metavar="N", help="CPU threads of torch")
    g.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def run_train_unet(args: argparse.Namespace) -> int:
    """Simulate the crops, train, write the model file and print a one-line JSON summary."""
    import torch

    from .unet import NormConfig, UNetConfig
    from .unet_train import UNetTrainConfig, simulate_crops, train_unet

    given: dict[str, Any] = {
        field: getattr(args, flag) for flag, field in _TRAIN_FLAGS.items() if getattr(args, flag, None) is not None
    }
    cfg = UNetTrainConfig(**given)
    model_cfg = UNetConfig(channels=tuple(args.channels)) if getattr(args, "channels", None) else UNetConfig()
    if getattr(args, "threads", None):
        torch.set_num_threads(int(args.threads))
    norm = NormConfig()
    rng = np.random.default_rng(cfg.seed)
    train = simulate_crops(cfg, frames=range(cfg.train_frames_per_preset), augment=True, norm=norm, rng=rng)
    first_val = 10_000  # validation frames never overlap training frames
    val = simulate_crops(
        cfg, frames=range(first_val, first_val + cfg.val_frames_per_preset), augment=False, norm=norm, rng=rng
    )

    def show(record: dict[str, float]) -> None:
        if not args.quiet:
            print(json.dumps({k: round(v, 4) for k, v in record.items()}), file=sys.stderr, flush=True)

    trained = train_unet(train, val, config=cfg, model_config=model_cfg, norm=norm, progress=show)
    trained.info["trained_on"] = (
        f"simulated hit frames of presets {', '.join(cfg.presets)} (seed {cfg.seed}), {cfg.crop_size}-pixel "
        f"crops, targets = footprints of spots with expected SNR >= {cfg.min_snr}"
    )
    path = trained.save(args.output)
    if not args.quiet:
        print(json.dumps({"model": str(path), "threshold": trained.threshold, "val_f1": trained.info["val_f1"],
                          "best_epoch": trained.info["best_epoch"]}))
    return 0
