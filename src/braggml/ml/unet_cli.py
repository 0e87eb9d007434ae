"""Command-line wiring of U-Net training (``braggml train --model unet -o MODEL [--preset NAME ...]``) and export.

The network is trained on frames it simulates itself (presets and frame variants of
:class:`~braggml.ml.unet_train.UNetTrainConfig`, targets from the simulator's truth); the flags map one-to-one
onto :class:`~braggml.ml.unet_train.UNetTrainConfig` and :class:`~braggml.ml.unet.UNetConfig` fields, whose
defaults apply when a flag is not given. After training, the probability cut is chosen on whole validation
frames (:func:`~braggml.ml.unet_train.choose_threshold`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["add_train_unet_arguments", "run_train_unet", "add_export_arguments", "run_export"]

#: output suffix -> export format
EXPORT_SUFFIXES = {".pt": "torchscript", ".onnx": "onnx"}

#: flag destination -> UNetTrainConfig field
_TRAIN_FLAGS = {
    "presets": "presets",
    "variants": "variants",
    "train_frames": "train_frames_per_preset",
    "val_frames": "val_frames_per_preset",
    "crop_size": "crop_size",
    "crops_per_frame": "crops_per_frame",
    "min_snr": "min_snr",
    "shadow_fraction": "shadow_fraction",
    "hot_mask_fraction": "hot_mask_fraction",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "learning_rate": "learning_rate",
    "patience": "patience",
    "val_average": "val_average",
    "max_seconds": "max_seconds",
    "flips": "flips",
    "cut_tolerance": "cut_tolerance",
    "seed": "seed",
    "device": "device",
}
#: flag destination -> UNetConfig field
_MODEL_FLAGS = {"channels": "channels", "convs_per_block": "convs_per_block", "downsample": "downsample"}

#: Validation frames are numbered from here, so they never overlap training frames.
FIRST_VALIDATION_FRAME = 10_000


def add_train_unet_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags that only U-Net training has to ``braggml train``'s parser.

    The flags shared with the CNN (``--channels``, ``--epochs``, ``--batch-size``, ``--learning-rate``,
    ``--patience``, ``--device``, ``--threads``, ``--seed``, ``-o``, ``-q``) are defined by the train command.
    """
    g = parser.add_argument_group("U-Net training (--model unet; on frames it simulates)")
    g.add_argument("--preset", dest="presets", action="append", metavar="NAME",
                   help="simulator preset to train on (repeat for several; default jungfrau4m and pilatus6m)")
    g.add_argument("--variant", dest="variants", action="append", metavar="KIND",
                   help="kind of training frame: hits, weak, ice, blank, dense, quiet, varied, compact, crowded, "
                        "sharp, pinpoint or phosphor (repeat; default all but crowded, sharp, pinpoint and phosphor, "
                        "which are for fine-tuning)")
    g.add_argument("--train-frames", type=int, metavar="N", help="training frames per preset")
    g.add_argument("--val-frames", type=int, metavar="N", help="validation frames per preset")
    g.add_argument("--crop-size", type=int, metavar="S", help="side of the training crops")
    g.add_argument("--crops-per-frame", type=int, metavar="N", help="crops taken from each frame")
    g.add_argument("--min-snr", type=float, metavar="SNR", help="spots with this expected SNR or more are targets")
    g.add_argument("--shadow-fraction", type=float, metavar="F",
                   help="share of the training frames given an unmasked region the X-rays do not reach "
                        "(default 0.25)")
    g.add_argument("--hot-mask-fraction", type=float, metavar="F",
                   help="share of the training frames whose hot pixels are in the mask, as a detector mask or "
                        "--hot-pixels auto would put them (default 0)")
    g.add_argument("--convs-per-block", type=int, metavar="N", help="3x3 convolutions in every U-Net block")
    g.add_argument("--downsample", type=int, choices=[1, 2, 4], help="space-to-depth factor of the input")
    g.add_argument("--val-average", choices=["pooled", "variant"],
                   help="validation F1 for early stopping and the probability cut: over all peaks together "
                        "(default), or the mean over the variants, so that frames with many spots do not "
                        "outweigh the rest")
    g.add_argument("--max-seconds", type=float, help="wall-clock budget of the training loop")
    g.add_argument("--flips", type=int, choices=[1, 2, 4],
                   help="flipped copies of a frame whose logits the model averages when it finds peaks, unless "
                        "told otherwise (default 1); a cut is chosen for 1, 2 and 4 copies")
    g.add_argument("--cut-tolerance", type=float, metavar="DF1",
                   help="take the highest probability cut whose F1 on the validation frames is within this of "
                        "the best (default 0.005)")


def run_train_unet(args: argparse.Namespace) -> int:
    """Simulate the crops, train, choose the cut, write the model file and print a one-line JSON summary."""
    if getattr(args, "data", None):
        raise ConfigError(
            "--model unet trains on frames it simulates (--preset, --variant); DATA files are for --model cnn/svm"
        )
    from .unet import NormConfig, UNetConfig
    from .unet_train import UNetTrainConfig, choose_threshold, simulate_crops, train_unet

    given: dict[str, Any] = {
        field: getattr(args, flag) for flag, field in _TRAIN_FLAGS.items() if getattr(args, flag, None) is not None
    }
    cfg = UNetTrainConfig(**given)
    model_cfg = UNetConfig(
        **{field: getattr(args, flag) for flag, field in _MODEL_FLAGS.items() if getattr(args, flag, None)}
    )
    from pathlib import Path

    out = Path(args.output)
    if out.is_dir() or not out.resolve().parent.is_dir():
        raise ConfigError(f"--output {out}: not a file in an existing folder")
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(int(args.threads))
    quiet = bool(getattr(args, "quiet", False))
    norm = NormConfig()
    rng = np.random.default_rng(cfg.seed)
    if not quiet:
        print(f"simulating {len(cfg.presets) * cfg.train_frames_per_preset} training frames", file=sys.stderr)
    train = simulate_crops(cfg, frames=range(cfg.train_frames_per_preset), augment=True, norm=norm, rng=rng)
    val_frames = range(FIRST_VALIDATION_FRAME, FIRST_VALIDATION_FRAME + cfg.val_frames_per_preset)
    val = simulate_crops(cfg, frames=val_frames, augment=False, norm=norm, rng=rng)

    def show(record: dict[str, float]) -> None:
        if not quiet:
            print(json.dumps({k: round(v, 4) for k, v in record.items()}), file=sys.stderr, flush=True)

    trained = train_unet(train, val, config=cfg, model_config=model_cfg, norm=norm, progress=show)
    if cfg.val_frames_per_preset:
        choose_threshold(trained, cfg, frames=val_frames)
    trained.info["trained_on"] = (
        f"simulated frames of presets {', '.join(cfg.presets)} (seed {cfg.seed}; variants "
        f"{', '.join(cfg.variants)}), {cfg.crop_size}-pixel crops, targets = {cfg.core_radius_px} px cores of "
        f"spots with expected SNR >= {cfg.min_snr}"
    )
    path = trained.save(out)
    if not quiet:
        print(json.dumps({"model": str(path), "threshold": trained.threshold, "val_f1": trained.info["val_f1"],
                          "best_epoch": trained.info["best_epoch"]}))
    return 0


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``braggml export MODEL -o OUT [--format torchscript|onnx] [--tile-size S]
    [--flips N]``."""
    parser.add_argument("model", metavar="MODEL",
                        help="U-Net model file (.safetensors, written by braggml train --model unet)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="exported file (.pt or .onnx)")
    parser.add_argument("--format", choices=sorted(set(EXPORT_SUFFIXES.values())),
                        help="export format (default: from OUT's suffix, .pt = torchscript, .onnx = onnx)")
    parser.add_argument("--tile-size", type=int, default=512, metavar="S",
                        help="tile side the network is traced for (a multiple of the network's padding multiple)")
    parser.add_argument("--flips", type=int, choices=[1, 2, 4],
                        help="flipped copies the exported network averages, with the model's cut for them "
                             "(default: the model's own)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")


def run_export(args: argparse.Namespace) -> int:
    """Load the U-Net model file, export it and print a one-line JSON summary (file, format, size, seconds)."""
    import time
    from pathlib import Path

    out = Path(args.output)
    if out.is_dir() or not out.resolve().parent.is_dir():
        raise ConfigError(f"--output {out}: not a file in an existing folder")
    fmt = args.format or EXPORT_SUFFIXES.get(out.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"--output {out}: cannot tell the format from the suffix {out.suffix!r}; give --format torchscript|onnx"
        )
    from .unet import export_onnx, export_torchscript, load_unet

    trained = load_unet(args.model, device="cpu")
    if getattr(args, "flips", None) is not None:
        trained.use_flips(args.flips)
    exporter = export_onnx if fmt == "onnx" else export_torchscript
    start = time.perf_counter()
    path = exporter(trained, out, tile_size=args.tile_size)
    seconds = time.perf_counter() - start
    if not getattr(args, "quiet", False):
        print(json.dumps({"output": str(path), "format": fmt, "tile_size": args.tile_size, "flips": trained.flips,
                          "threshold": trained.threshold, "bytes": path.stat().st_size,
                          "seconds": round(seconds, 3)}))
    return 0
