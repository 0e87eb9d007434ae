"""The shipped U-Net model against default peakfinder8: simulated accuracy, CPU speed, real-frame peak counts.

Simulated frames: presets ``jungfrau4m``, ``pilatus6m``, ``eiger4m`` (the model's training presets, but run
seed 2026, never seen in training) and ``test`` (a preset the model was NOT trained on), every frame a hit
(``crystal.hit_fraction = 1``), frames 0..``--frames``-1. Truth: observable spots with expected SNR >= 3.
Both finders are scored with :func:`braggml.evaluate.metrics.evaluate_peaks` (one-to-one matching within
2 px); ``precision_vs_all_observable`` also counts found peaks that match an observable spot weaker than SNR 3.
peakfinder8 runs with its default parameters (no grid search here).

Speed: seconds per frame of ``UNetFinder.find`` (normalisation + tiled inference + peak extraction) on a
Jungfrau-4M-like frame (2156 x 2060 = 4.4 Mpixel) on CPU with 1 and 2 torch threads, and peakfinder8's.

Real frames: peak counts of both finders on the frames of ``benchmarks/classical_data.py`` (thaumatin grid
hits and blanks, CSPAD thermolysin, Rayonix with kapton, CeO2 powder) with their plausible count ranges.

Run: ``python benchmarks/unet_vs_peakfinder8.py [--frames N] [--out results.json] [--model PATH]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from braggml.classical.peakfinder8 import Peakfinder8
from braggml.evaluate.matching import match_frame
from braggml.evaluate.metrics import evaluate_peaks
from braggml.ml.unet import normalise_frame
from braggml.ml.unet_finder import UNetFinder
from braggml.peaks import PeakList
from braggml.simulate import Simulator, get_preset
from braggml.simulate.config import apply_overrides

SEED = 2026
PRESETS = ("jungfrau4m", "pilatus6m", "eiger4m", "test")


def simulated(finders: dict, n_frames: int) -> dict:
    out = {}
    for name in PRESETS:
        sim = Simulator(apply_overrides(get_preset(name), {"crystal": {"hit_fraction": 1.0}}), seed=SEED)
        maps = sim.layout.pixel_maps(sim.wavelength_a)
        frames = [sim.frame(k) for k in range(n_frames)]
        truths = []
        for f in frames:
            s = f.spots
            keep = s["observable"] & (s["snr"] >= 3.0)
            truths.append(PeakList.from_columns(
                n_frames=1, row=s["row"][keep], col=s["col"][keep], snr=s["snr"][keep]))
        truth = PeakList.concatenate(truths)
        out[name] = {}
        for label, finder in finders.items():
            t0 = time.perf_counter()
            found = PeakList.concatenate([finder.find(f.image, maps.mask, maps=maps) for f in frames])
            seconds = (time.perf_counter() - t0) / n_frames
            ev = evaluate_peaks(found, truth)
            # found peaks within 2 px of any observable spot (weaker than SNR 3 included)
            near_any = 0
            for k, f in enumerate(frames):
                s = f.spots
                obs = np.column_stack([s["row"][s["observable"]], s["col"][s["observable"]]])
                mine = found.for_frame(k)
                fi, _ = match_frame(np.column_stack([mine.row, mine.col]), obs, 2.0)
                near_any += len(fi)
            out[name][label] = {
                "precision": round(ev.precision, 3), "recall": round(ev.recall, 3), "f1": round(ev.f1, 3),
                "n_found": ev.n_found, "n_true": ev.n_true, "seconds_per_frame": round(seconds, 2),
                "precision_vs_all_observable": round(near_any / max(ev.n_found, 1), 3),
                "recall_by_snr": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in b.items()}
                                  for b in ev.recall_by_snr],
            }
            print(name, label, {k: v for k, v in out[name][label].items() if k != "recall_by_snr"}, flush=True)
    return out


def speed(unet: UNetFinder, pf8: Peakfinder8) -> dict:
    sim = Simulator(apply_overrides(get_preset("jungfrau4m"), {"crystal": {"hit_fraction": 1.0}}), seed=SEED)
    maps = sim.layout.pixel_maps(sim.wavelength_a)
    image = sim.frame(0).image
    out: dict = {"shape": list(image.shape)}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        unet.find(image, maps.mask, maps=maps)
        t0 = time.perf_counter()
        unet.find(image, maps.mask, maps=maps)
        out[f"unet_s_{threads}_threads"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    normalise_frame(image, maps.mask, maps=maps)
    out["normalisation_s"] = round(time.perf_counter() - t0, 2)
    pf8.find(image, maps.mask, maps=maps)
    t0 = time.perf_counter()
    pf8.find(image, maps.mask, maps=maps)
    out["peakfinder8_s"] = round(time.perf_counter() - t0, 2)
    print("speed", out, flush=True)
    return out


def real(finders: dict) -> list:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from classical_data import REAL, all_frames

    rows = []
    if not REAL.is_dir():
        print("real frames not found:", REAL)
        return rows
    for fr in all_frames(quick=True):
        row = {"frame": fr.name, "kind": fr.kind, "expected": fr.expected}
        for label, finder in finders.items():
            row[label] = len(finder.find(fr.image, fr.mask, maps=fr.maps))
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--model", default="")
    parser.add_argument("--out", default="")
    parser.add_argument("--skip", nargs="*", default=[], choices=["simulated", "speed", "real"])
    args = parser.parse_args()
    torch.set_num_threads(2)
    unet = UNetFinder(model_path=args.model, device="cpu")
    pf8 = Peakfinder8()
    finders = {"unet": unet, "peakfinder8": pf8}
    results = {"model": args.model or "shipped", "threshold": unet.model.threshold,
               "trained_on": unet.model.info.get("trained_on")}
    if "simulated" not in args.skip:
        results["simulated"] = simulated(finders, args.frames)
    if "speed" not in args.skip:
        results["speed"] = speed(unet, pf8)
    if "real" not in args.skip:
        results["real"] = real(finders)
    text = json.dumps(results, indent=1, default=str)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
