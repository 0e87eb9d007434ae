"""Train the U-Net model shipped with braggml (``src/braggml/data/unet_default.safetensors``).

Training data: simulated hit frames (``crystal.hit_fraction = 1``) of the ``jungfrau4m``, ``pilatus6m`` and
``eiger4m`` presets, run seed 0: frames 0..9 of each preset train (each frame scaled by a random gain factor in
[0.5, 2] plus a pedestal before normalisation), frames 100..101 validate. 40 random 128 x 128 crops per frame,
half centred near a target spot. Targets: truth footprints of observable spots with expected SNR >= 3.
Architecture: ``UNetConfig()`` defaults. Loss: weighted BCE (peak pixels x5) + 0.5 soft Dice; AdamW (peak
learning rate 2e-3) with a one-cycle schedule over 10 epochs of 16-crop batches; the epoch with the best
validation peak F1 (2 px matching) is kept; CPU with 2 torch threads, a 900 s budget for the training loop.
The probability cut is then chosen on the whole validation frames (:func:`choose_threshold`), not on crops.

Run: ``python benchmarks/train_unet_default.py [--out PATH] [--max-seconds S]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from braggml.ml.unet import DEFAULT_MODEL_PATH, NormConfig, UNetConfig
from braggml.ml.unet_train import UNetTrainConfig, choose_threshold, simulate_crops, train_unet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_MODEL_PATH))
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = UNetTrainConfig(
        presets=("jungfrau4m", "pilatus6m", "eiger4m"),
        train_frames_per_preset=10,
        val_frames_per_preset=2,
        crop_size=128,
        crops_per_frame=40,
        epochs=10,
        learning_rate=2e-3,
        batch_size=16,
        max_seconds=args.max_seconds,
        seed=0,
        device="cpu",
    )
    norm = NormConfig()
    rng = np.random.default_rng(cfg.seed)
    t0 = time.monotonic()
    train = simulate_crops(cfg, frames=range(cfg.train_frames_per_preset), augment=True, norm=norm, rng=rng)
    val = simulate_crops(cfg, frames=range(100, 100 + cfg.val_frames_per_preset), augment=False, norm=norm, rng=rng)
    print(f"data: {len(train)} train / {len(val)} val crops in {time.monotonic() - t0:.0f} s", flush=True)
    trained = train_unet(
        train, val, config=cfg, model_config=UNetConfig(), norm=norm, progress=lambda r: print(r, flush=True)
    )
    threshold, scores = choose_threshold(trained, cfg, frames=range(100, 100 + cfg.val_frames_per_preset))
    print("threshold on whole validation frames:", threshold, scores, flush=True)
    trained.info["trained_on"] = (
        "simulated hit frames of presets jungfrau4m, pilatus6m, eiger4m (seed 0; train frames 0-9, "
        "validation frames 100-101), 128x128 crops, targets = footprints of spots with expected SNR >= 3"
    )
    path = trained.save(args.out)
    n_params = sum(p.numel() for p in trained.model.parameters())
    print(json.dumps({"path": str(path), "bytes": Path(path).stat().st_size, "parameters": n_params,
                      "threshold": trained.threshold, "val_f1": trained.info["val_f1"]}))


if __name__ == "__main__":
    main()
