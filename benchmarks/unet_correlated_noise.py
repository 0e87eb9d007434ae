"""The U-Net on frames whose photon noise neighbouring pixels share, as behind a phosphor (Rayonix, MarCCD, sCMOS).

Simulated Jungfrau-4M frames (the conditions and seed of ``unet_vs_peakfinder8.py``: every frame a hit, spots
as simulated or five times weaker) are read out with each photon's signal spread over the neighbouring
pixels by a Gaussian of ``phosphor_spread_px`` before the read noise (``detector.phosphor_spread_px``). Three
finders are scored against the truth (observable spots with SNR >= 3 before the spread, matched one-to-one
within 2 px): the U-Net as shipped (its noise scaled by the measured correlation,
``NormConfig.correlated_noise_min``), the same network without that scaling, and default peakfinder8. The
measured correlation (variance of 3 x 3 sums over nine times the pixel variance) is printed too.

Run: ``python benchmarks/unet_correlated_noise.py [--frames 8] [--spreads 0 0.7 1.0 1.5] [--model PATH]
[--out results.json]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from unet_vs_peakfinder8 import CONDITIONS, SEED, run, simulator, summary, truth_of  # noqa: E402

from braggml.evaluate.metrics import evaluate_peaks  # noqa: E402
from braggml.finder import make_finder  # noqa: E402
from braggml.io.atomic import atomic_output  # noqa: E402
from braggml.ml.unet import NormConfig, normalise_frame  # noqa: E402
from braggml.ml.unet_finder import UNetFinder  # noqa: E402
from braggml.simulate import Simulator, apply_overrides  # noqa: E402

PRESET = "jungfrau4m"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8, help="frames per condition and spread")
    parser.add_argument("--spreads", type=float, nargs="+", default=[0.0, 0.7, 1.0, 1.5], help="pixels")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for the network")
    parser.add_argument("--model", default="", help="U-Net model file (default: the shipped one)")
    parser.add_argument("--out", help="also write the figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    shipped = UNetFinder(device="cpu", model_path=args.model)
    blind = UNetFinder(device="cpu", model_path=args.model)
    blind._model = dataclasses.replace(blind.model, norm=NormConfig(correlated_noise_min=float("inf")))
    finders = {"unet": shipped, "unet_unscaled": blind, "peakfinder8": make_finder("peakfinder8")}
    results = []
    for condition in CONDITIONS:
        base = simulator(PRESET, condition)
        for spread in args.spreads:
            config = apply_overrides(base.config, {"detector": {"phosphor_spread_px": spread}})
            sim = Simulator(config, seed=base.seed)
            maps = sim.layout.pixel_maps(sim.wavelength_a)
            frames = [sim.frame(k) for k in range(args.frames)]
            truth = truth_of(frames)
            measured = [normalise_frame(f.image, maps.mask, maps=maps).noise_correlation for f in frames]
            correlation = float(np.median(measured))
            row = {"condition": condition, "phosphor_spread_px": spread, "noise_correlation": round(correlation, 2)}
            for name, finder in finders.items():
                row[name] = summary(evaluate_peaks(run(finder, frames, maps), truth))
            results.append(row)
            scores = "  ".join(
                f"{name} F1 {row[name]['f1']:.3f} (P {row[name]['precision']:.3f} R {row[name]['recall']:.3f})"
                for name in finders
            )
            print(f"{condition:6s} spread {spread:4.2f} px  correlation {correlation:5.2f}  {scores}", flush=True)
    if args.out:
        with atomic_output(args.out, mode="w") as f:
            json.dump({"preset": PRESET, "frames": args.frames, "seed": SEED, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
