"""Run-level hot-pixel search: how many hot pixels it finds, what it costs, and what masking them gives every finder.

Simulated runs: the frames of ``unet_vs_peakfinder8.py`` (run seed 2026, every frame a hit, conditions ``weak``
and ``as-is``) of the presets with hot pixels (``jungfrau4m``, ``pilatus6m``, ``eiger4m``; the ``test`` preset
has none). The simulator's hot pixels are fixed per run, like a real detector's, at 5-500 photons each, so the
truth is known:

- hot pixels found (all of them, and those of >= 20 photons) and pixels taken for hot that are not;
- precision, recall and F1 of default peakfinder8, dispersion and the U-Net, without and with the run's hot
  pixels masked (truth: observable spots with expected SNR >= 3, matched within 2 px; a peak at a weaker simulated
  spot counts as neither true nor false);
- the search's cost per frame looked at, as a ratio to default peakfinder8's time per frame in the same run.

Real runs (``../shared/data/real``, frames and maps from ``classical_data.py``): the thaumatin grid scan (19
Pilatus3 6M stills of one crystal, 13 of them hits at the same orientation) and the L-cysteine rotation wedge (10
frames of 0.1 deg): how many pixels are flagged, and peakfinder8's peak counts without and with the mask. These
runs hold the same Bragg spots in many frames; nothing of them should be taken for a hot pixel.

Run: ``python benchmarks/hot_pixels.py [--frames 16] [--finders peakfinder8 dispersion unet] [--skip real]
[--out results.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from braggml.classical.hotpixels import HotPixelConfig, find_run_hot_pixels
from braggml.evaluate.metrics import evaluate_peaks
from braggml.finder import make_finder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unet_vs_peakfinder8 import run, simulator, truth_of  # noqa: E402

PRESETS = ("jungfrau4m", "pilatus6m", "eiger4m")
CONDITIONS = ("weak", "as-is")


def search(images, bad, config: HotPixelConfig):
    """The run's hot pixels, as ``braggml find`` searches them, and the seconds per frame looked at."""
    t0 = time.perf_counter()
    found = find_run_hot_pixels(lambda k: (images[k], bad), len(images), bad.shape, config=config)
    return found, (time.perf_counter() - t0) / max(found.n_frames, 1)


def simulated(n_frames: int, finder_names: list[str]) -> dict:
    out: dict = {}
    config = HotPixelConfig()
    finders = {name: make_finder(name) for name in finder_names}
    pf8 = make_finder("peakfinder8")
    for preset in PRESETS:
        for condition in CONDITIONS:
            sim = simulator(preset, condition)
            maps = sim.layout.pixel_maps(sim.wavelength_a)
            frames = [sim.frame(k) for k in range(n_frames)]
            images = [f.image for f in frames]
            truth, weaker = truth_of(frames), truth_of(frames, weaker=True)
            hot_photons = np.where(sim.layout.panel_id >= 0, sim.layout.hot_photons, 0.0)
            true_hot = (hot_photons > 0) & ~maps.mask
            found, search_s = search(images, maps.mask, config)
            t0 = time.perf_counter()
            for image in images[:4]:
                pf8.find(image, maps.mask, maps=maps)
            pf8_s = (time.perf_counter() - t0) / min(4, len(images))
            flagged = found.mask
            row = {
                "hot_pixels": int(true_hot.sum()),
                "found": int((flagged & true_hot).sum()),
                "hot_pixels_20_photons": int((true_hot & (hot_photons >= 20)).sum()),
                "found_20_photons": int((flagged & true_hot & (hot_photons >= 20)).sum()),
                "false": int((flagged & ~true_hot).sum()),
                "frames_looked_at": found.n_frames,
                "search_s_per_frame": round(search_s, 4),
                "search_over_peakfinder8": round(search_s / pf8_s, 2),
            }
            line = (f"{preset:10s} {condition:5s} hot {row['found']}/{row['hot_pixels']} "
                    f"(>= 20 ph {row['found_20_photons']}/{row['hot_pixels_20_photons']}), false {row['false']}, "
                    f"search {1000 * search_s:.0f} ms/frame = {row['search_over_peakfinder8']:.2f} x pf8 |")
            with_hot = maps.mask | flagged
            for name, finder in finders.items():
                before = evaluate_peaks(run(finder, frames, maps), truth, optional=weaker)
                after = evaluate_peaks(run(finder, frames, maps, with_hot), truth, optional=weaker)
                row[name] = {
                    "without": {"precision": round(before.precision, 4), "recall": round(before.recall, 4),
                                "f1": round(before.f1, 4), "n_found": before.n_found},
                    "with": {"precision": round(after.precision, 4), "recall": round(after.recall, 4),
                             "f1": round(after.f1, 4), "n_found": after.n_found},
                }
                line += (f" {name} F1 {before.f1:.3f} -> {after.f1:.3f}"
                         f" (P {before.precision:.3f} -> {after.precision:.3f})")
            print(line, flush=True)
            out[f"{preset}/{condition}"] = row
    return out


def real() -> dict:
    from classical_data import REAL, lcys, thaumatin

    if not REAL.is_dir():
        print(f"real frames: {REAL} not found, skipped")
        return {}
    out: dict = {}
    config = HotPixelConfig()
    pf8 = make_finder("peakfinder8")
    for name, frames in (("thaumatin_grid", [thaumatin(i) for i in range(1, 20)]),
                         ("l_cysteine", [lcys(i) for i in range(1, 11)])):
        maps = frames[0].maps
        bad = frames[0].mask
        for f in frames[1:]:
            bad = bad | f.mask
        found, search_s = search([f.image for f in frames], bad, config)
        before = [len(pf8.find(f.image, f.mask, maps=maps)) for f in frames]
        after = [len(pf8.find(f.image, f.mask | found.mask, maps=maps)) for f in frames]
        out[name] = {"frames": len(frames), "flagged": len(found), "frames_looked_at": found.n_frames,
                     "search_s_per_frame": round(search_s, 3),
                     "peakfinder8_peaks_without": int(sum(before)), "peakfinder8_peaks_with": int(sum(after))}
        print(f"{name}: {len(found)} pixels flagged in {found.n_frames} frames ({1000 * search_s:.0f} ms/frame); "
              f"peakfinder8 peaks {sum(before)} -> {sum(after)}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--finders", nargs="+", default=["peakfinder8", "dispersion", "unet"])
    ap.add_argument("--skip", nargs="*", default=[], choices=["simulated", "real"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    results: dict = {"config": vars(HotPixelConfig())}
    if "simulated" not in args.skip:
        results["simulated"] = simulated(args.frames, args.finders)
    if "real" not in args.skip:
        results["real"] = real()
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
