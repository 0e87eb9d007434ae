"""Throughput of the U-Net finder on a GPU: frames per second for whole 4-6 Mpx frames, peak extraction included.

Frames: simulated weak-spot hits of the ``jungfrau4m`` (2156 x 2060 float32, 4.4 Mpx) and ``pilatus6m``
(2527 x 2463 int32, 6.2 Mpx) presets, crystals five times weaker than the preset, seed 2026, frames 0..N-1
(the settings of ``benchmarks/unet_vs_peakfinder8.py``), streamed over and over from host memory.

Measured, in one run on one device:

- ``per_frame``: :meth:`UNetFinder.find` one frame at a time (CPU normalisation and extraction, tiled network on
  the device): the reference.
- ``batched``: :class:`~braggml.ml.unet_batch.BatchedUNetFinder` with host worker threads, for each batch
  size: normalisation, network, probability cut and near-peak pixels on the device, extraction on the host
  while the device works on the next batch. ``device_only`` is the same without the host extraction;
  ``normalise`` and ``network`` are those two steps alone (synchronised); ``host_extraction_fps_one_thread``
  is the host's share alone (extraction, ring and mask rules) in one thread.
- Accuracy: F1 against the simulated truth (2 px matching, spots of SNR >= 3) of the batched device peaks and of
  :meth:`UNetFinder.find` on the CPU, on the same frames, and how many peaks the two share (within 0.5 px).

Run: ``python benchmarks/unet_gpu_throughput.py [--device cuda] [--frames 16] [--stream 256] [--flips N]
[--json OUT]``. ``--flips 1`` runs the network once per frame instead of on the model's flipped copies.
On a machine without CUDA, ``--device cpu`` runs the same measurements (slowly) as a check of the script.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial

import numpy as np
import torch
from unet_vs_peakfinder8 import simulator, truth_of

from braggml.evaluate.matching import match_frame
from braggml.evaluate.metrics import evaluate_peaks
from braggml.ml.unet_batch import BatchedUNetFinder, peaks_from_pixels
from braggml.ml.unet_finder import UNetFinder
from braggml.peaks import PeakList


def weak_frames(preset: str, n: int):
    sim = simulator(preset, "weak")
    return [sim.frame(k) for k in range(n)], sim.layout.pixel_maps(sim.wavelength_a)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, repeats: int, device: torch.device) -> float:
    """Mean seconds of ``fn()``, the device synchronised before and after."""
    sync(device)
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - t) / repeats


def extract_all(batched: BatchedUNetFinder, pixels) -> None:
    """The host's share of a batch, in this thread: extraction, ring and mask rules."""
    for p in pixels:
        peaks_from_pixels(p, batched.config, batched._radius, batched._resolution)


def shared_fraction(a: list[PeakList], b: list[PeakList]) -> float:
    """Share of the peaks of ``a`` that have a peak of ``b`` within 0.5 px, over all frames."""
    hits = total = 0
    for pa, pb in zip(a, b):
        total += len(pa)
        if len(pa) and len(pb):
            found, _ = match_frame(np.stack([pa.row, pa.col], 1), np.stack([pb.row, pb.col], 1), 0.5)
            hits += found.size
    return hits / max(total, 1)


def measure(preset: str, args, device: torch.device) -> dict:
    t0 = time.perf_counter()
    frames, maps = weak_frames(preset, args.frames)
    images = np.stack([f.image for f in frames])
    out: dict = {
        "preset": preset,
        "shape": list(images.shape[1:]),
        "megapixels": round(images[0].size / 1e6, 2),
        "dtype": str(images.dtype),
        "simulate_s": round(time.perf_counter() - t0, 1),
    }
    finder = UNetFinder(device=str(device), flips=args.flips)
    out["flips"] = finder.model.flips

    # the reference: one frame at a time through UNetFinder.find on this device
    n_ref = min(args.frames, 8)
    finder.find(images[0], maps.mask, maps=maps)
    sync(device)
    t0 = time.perf_counter()
    for k in range(n_ref):
        finder.find(images[k], maps.mask, maps=maps)
    sync(device)
    out["per_frame_fps"] = round(n_ref / (time.perf_counter() - t0), 2)
    print(f"{preset}: per-frame UNetFinder.find on {device}: {out['per_frame_fps']} frames/s", flush=True)

    stream = [images[k % len(images)] for k in range(args.stream)]
    out["batched"] = {}
    best_peaks = None
    for batch_size in args.batch_sizes:
        with BatchedUNetFinder(
            finder, images.shape[1:], maps=maps, mask=maps.mask, batch_size=batch_size, workers=args.workers
        ) as batched:
            x = torch.as_tensor(images[:batch_size]).to(device)
            peaks = list(batched.find_stream(stream[: 2 * batch_size]))  # warm up: kernels, workers
            sync(device)
            row: dict = {}
            reps = max(args.stream // batch_size // 4, 2)
            with torch.inference_mode():
                norm_s = timed(partial(batched.normaliser, x), reps, device)
                norm = batched.normaliser(x)
                net_s = timed(partial(batched._probability, norm.inputs), reps, device)
            row["normalise_fps"] = round(batch_size / norm_s, 1)
            row["network_fps"] = round(batch_size / net_s, 1)
            dev_s = timed(partial(batched.device_pixels, torch.as_tensor(images[:batch_size])), reps, device)
            row["device_only_fps"] = round(batch_size / dev_s, 1)
            pixels = batched.device_pixels(images[:batch_size])
            host_s = timed(partial(extract_all, batched, pixels), reps, device)
            row["host_extraction_fps_one_thread"] = round(batch_size / host_s, 1)
            t = time.perf_counter()
            peaks = list(batched.find_stream(stream))
            row["fps"] = round(len(stream) / (time.perf_counter() - t), 1)
            row["peaks_per_frame"] = round(float(np.mean([len(p) for p in peaks])), 1)
            if device.type == "cuda":
                row["max_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            out["batched"][str(batch_size)] = row
            best_peaks = peaks[: len(frames)]
            print(f"{preset}: batch {batch_size}: {row}", flush=True)

    # accuracy: batched device peaks against the truth and against UNetFinder.find on the CPU
    cpu = UNetFinder(device="cpu", flips=args.flips)
    cpu_peaks = [cpu.find(f.image, maps.mask, maps=maps) for f in frames[: args.check]]
    dev_peaks = best_peaks[: args.check]
    sub_truth = truth_of(frames[: args.check])
    ev_dev = evaluate_peaks(PeakList.concatenate(dev_peaks), sub_truth)
    ev_cpu = evaluate_peaks(PeakList.concatenate(cpu_peaks), sub_truth)
    out["f1_batched_device"] = round(ev_dev.f1, 4)
    out["f1_cpu_finder"] = round(ev_cpu.f1, 4)
    out["peaks_batched"] = sum(len(p) for p in dev_peaks)
    out["peaks_cpu"] = sum(len(p) for p in cpu_peaks)
    out["batched_peaks_found_on_cpu"] = round(shared_fraction(dev_peaks, cpu_peaks), 4)
    out["cpu_peaks_found_batched"] = round(shared_fraction(cpu_peaks, dev_peaks), 4)
    out["n_true"] = len(sub_truth)
    accuracy = {k: v for k, v in out.items() if k.startswith(("f1", "peaks", "batched_", "cpu_", "n_true"))}
    print(f"{preset}: accuracy {accuracy}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--presets", nargs="+", default=["jungfrau4m", "pilatus6m"])
    parser.add_argument("--frames", type=int, default=16, help="distinct simulated frames per preset")
    parser.add_argument("--stream", type=int, default=256, help="frames streamed per batch size")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--workers", type=int, default=2, help="host threads extracting the peaks")
    parser.add_argument("--check", type=int, default=4, help="frames compared with the CPU finder")
    parser.add_argument("--flips", type=int, choices=[1, 2, 4], default=None,
                        help="flipped copies the network's logits are averaged over (default: the model's own)")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    device = torch.device(args.device)
    info = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cpu_cores": os.cpu_count(),
        "workers": args.workers,
        "python": sys.version.split()[0],
    }
    print(info, flush=True)
    results: dict = {"info": info, "presets": []}
    for preset in args.presets:
        results["presets"].append(measure(preset, args, device))
        if args.json:  # after each preset, so that a run cut short keeps what it measured
            with open(args.json, "w") as fh:
                json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
