"""The U-Net finder against peakfinder8: weak-spot accuracy, unseen detectors, CPU speed and real frames.

Simulated frames (run seed 2026, never used in training; every frame a hit):

- ``weak``: the preset's crystals diffracting five times more weakly (``crystal.strength_range_photons``
  divided by 5), so that most spots lie near the detection limit;
- ``as-is``: the preset's own settings.

Presets ``jungfrau4m`` and ``pilatus6m`` are those the shipped model was trained on (other frames, seed 0);
``eiger4m`` (a counting detector with a tenth of their background) and ``test`` (a small 256 x 256 frame at
25 mm, dense spots) it never saw. Truth: observable spots with expected SNR >= 3, matched one-to-one within
2 px (:func:`braggml.evaluate.metrics.evaluate_peaks`); a peak found at any other simulated spot (weaker, or
centred on a bad pixel) is a real reflection and counts as neither a true nor a false positive
(``--weaker-spots false`` counts it as false). Frames 0..``--frames``-1 are scored; peakfinder8's
parameters are grid-searched (``GRID``, best F1) on frames 100..100+``--grid-frames``-1 of the same preset
and condition (8 by default: the unseen ``eiger4m`` frames hold about ten scored spots each, too few for a search
on two), and it is also run with its defaults. On an unseen preset it is also run with the settings grid-searched
on each trained preset in the same condition: peakfinder8 carried over to a detector it was not tuned on, as the
U-Net is. "Recall at equal precision" is compared by SNR bin both ways: the U-Net's probability cut lowered as
far as its precision stays at or above grid-searched peakfinder8's, and peakfinder8 at the grid's most sensitive
setting (highest recall on the grid frames) that is at least as precise there as the U-Net with its own cut.

``--also`` scores variants of the finder on the same simulated frames, each at its own settings and cut:
``flips4`` (four flipped copies averaged), ``backstop`` (the patch CNN as a backstop, ``backstop="cnn"``) and
both.

Speed: seconds per 4.4-Mpixel frame (Jungfrau-4M-like, 2156 x 2060) of the U-Net finder on one and two CPU
threads, split into normalisation, network and peak extraction, next to default peakfinder8 in the same run;
for a model that averages flipped copies (``--flips``, by default the model's own), also with one copy.

Real frames (``../shared/data/real``, maps from ``benchmarks/classical_data.py``): peak counts of both
finders, the fraction of peakfinder8's strong peaks (SNR >= 10) the U-Net also finds within 2 px, and
hit/blank calls on the thaumatin grid scan (hit: at least ``--min-peaks`` peaks). With ``--pictures DIR``
the U-Net's peaks on a thaumatin hit, a blank and the CeO2 powder frame are drawn with ``braggml show``.

The scored frames are one run of one detector, so, as ``braggml find`` does for a run of 8 frames or more, the
hot pixels found in them (:mod:`braggml.classical.hotpixels`) are masked for every finder, in the grid search
too; ``--hot-pixels off`` scores each frame with the detector's mask alone.

Run: ``python benchmarks/unet_vs_peakfinder8.py [--presets eiger4m test] [--frames 4] [--grid-frames 8]
[--model PATH] [--flips N] [--also flips4 backstop flips4+backstop] [--hot-pixels off] [--weaker-spots false]
[--out results.json] [--pictures DIR] [--skip simulated speed real]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from braggml.classical.hotpixels import find_run_hot_pixels
from braggml.classical.peakfinder8 import Peakfinder8
from braggml.evaluate.matching import match_frame
from braggml.evaluate.metrics import evaluate_peaks
from braggml.ml.unet import inference_precision, normalise_frame, predict_tiled
from braggml.ml.unet_finder import UNetFinder
from braggml.peaks import PeakList
from braggml.simulate import Simulator, get_preset
from braggml.simulate.config import apply_overrides

SEED = 2026
PRESETS = ("jungfrau4m", "pilatus6m", "eiger4m", "test")
#: The presets the shipped model was trained on; the others are unseen.
TRAINED = ("jungfrau4m", "pilatus6m")
CONDITIONS = ("weak", "as-is")
GRID = {
    "minimum_snr": [3.0, 4.0, 5.0, 6.0],
    "pixel_snr": [2.5, 3.0, 3.5, 4.5],
    "min_pixel_count": [1, 2, 3],
    "min_pixel_photons": [0.0, 1.0, 2.0],
}
#: Variants of the finder that ``--also`` scores beside it, each at its own cut.
VARIANTS = {
    "flips4": {"flips": 4},
    "backstop": {"backstop": "cnn"},
    "flips4+backstop": {"flips": 4, "backstop": "cnn"},
}
CUTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


def simulator(preset: str, condition: str) -> Simulator:
    base = get_preset(preset)
    over: dict = {"crystal": {"hit_fraction": 1.0}}
    if condition == "weak":
        low, high = base.crystal.strength_range_photons
        over["crystal"]["strength_range_photons"] = [low / 5.0, high / 5.0]
    return Simulator(apply_overrides(base, over), seed=SEED)


def truth_of(frames, *, weaker: bool = False) -> PeakList:
    """The scored truth (observable spots of expected SNR >= 3); with ``weaker``, every other simulated spot."""
    parts = []
    for f in frames:
        s = f.spots
        keep = s["observable"] & (s["snr"] >= 3.0)
        if weaker:
            keep = ~keep
        parts.append(PeakList.from_columns(n_frames=1, row=s["row"][keep], col=s["col"][keep], snr=s["snr"][keep]))
    return PeakList.concatenate(parts)


def run(finder, frames, maps, mask=None) -> PeakList:
    mask = maps.mask if mask is None else mask
    return PeakList.concatenate([finder.find(f.image, mask, maps=maps) for f in frames])


def run_mask(frames, maps, hot_pixels: bool):
    """The bad pixels of the run: the detector's, and with ``hot_pixels`` the hot pixels ``braggml find`` would
    find in these frames (:func:`braggml.classical.hotpixels.find_hot_pixels`; none in runs under 8 frames)."""
    if not hot_pixels:
        return maps.mask, 0
    found = find_run_hot_pixels(lambda k: (frames[k].image, maps.mask), len(frames), maps.mask.shape)
    return maps.mask | found.mask, len(found)


def summary(ev) -> dict:
    return {
        "precision": round(ev.precision, 3), "recall": round(ev.recall, 3), "f1": round(ev.f1, 3),
        "n_found": ev.n_found, "n_true": ev.n_true,
        "recall_by_snr": {f"{b['low']:g}-{b['high']:g}": round(b["recall"], 3)
                          for b in ev.recall_by_snr if b["n_true"]},
    }


def grid_search(
    sim: Simulator, maps, n_grid: int, mask=None, optional: bool = True, unet=None
) -> tuple[dict, dict | None]:
    """Peakfinder8's settings of best F1 on the grid frames and, with ``unet``, those of highest recall among
    the settings at least as precise there as the U-Net (None when none is)."""
    frames = [sim.frame(k) for k in range(100, 100 + n_grid)]
    truth = truth_of(frames)
    weaker = truth_of(frames, weaker=True) if optional else None
    best, best_f1 = {}, -1.0
    scores = []
    for values in itertools.product(*GRID.values()):
        params = dict(zip(GRID, values))
        ev = evaluate_peaks(run(Peakfinder8(**params), frames, maps, mask), truth, optional=weaker)
        scores.append((params, ev.precision, ev.recall))
        if ev.f1 > best_f1:
            best, best_f1 = params, ev.f1
    equal = None
    if unet is not None:
        precision = evaluate_peaks(run(unet, frames, maps, mask), truth, optional=weaker).precision
        as_precise = [(recall, params) for params, prec, recall in scores if prec >= precision]
        if as_precise:
            equal = max(as_precise, key=lambda item: item[0])[1]
    return best, equal


def simulated(
    unet: UNetFinder, n_frames: int, n_grid: int, hot_pixels: bool = True, optional: bool = True,
    others: dict[str, UNetFinder] | None = None, presets: tuple[str, ...] = PRESETS,
) -> dict:
    """Every row of ``presets`` and conditions; ``others`` are further U-Net finders (by name) scored at their own
    settings beside ``unet`` on the same frames."""
    others = others or {}
    out: dict = {}
    tuned: dict[tuple[str, str], dict] = {}  # grid-searched settings of the trained presets, by (preset, condition)
    for preset, condition in itertools.product(presets, CONDITIONS):
        sim = simulator(preset, condition)
        maps = sim.layout.pixel_maps(sim.wavelength_a)
        frames = [sim.frame(k) for k in range(n_frames)]
        truth = truth_of(frames)
        weaker = truth_of(frames, weaker=True) if optional else None
        mask, n_hot = run_mask(frames, maps, hot_pixels)
        t0 = time.perf_counter()
        params, params_equal = grid_search(sim, maps, n_grid, mask, optional, unet)
        grid_s = time.perf_counter() - t0
        pf8_grid = evaluate_peaks(run(Peakfinder8(**params), frames, maps, mask), truth, optional=weaker)
        pf8_default = evaluate_peaks(run(Peakfinder8(), frames, maps, mask), truth, optional=weaker)
        if preset in TRAINED:
            tuned[preset, condition] = params
        # on an unseen preset, peakfinder8 as the U-Net is: with the settings grid-searched on a trained preset
        transfer = {
            name: summary(evaluate_peaks(run(Peakfinder8(**tuned[name, condition]), frames, maps, mask), truth,
                                         optional=weaker)) | {"params": tuned[name, condition]}
            for name in TRAINED if preset not in TRAINED and (name, condition) in tuned
        }
        maps_prob = [unet.probability(f.image, mask, maps=maps) for f in frames]
        by_cut = {}
        for cut in CUTS:
            found = PeakList.concatenate([unet.peaks_from_probability(p, nf, cut) for p, nf in maps_prob])
            by_cut[cut] = evaluate_peaks(found, truth, optional=weaker)
        own = unet.model.threshold
        ev_unet = by_cut.get(own) or evaluate_peaks(
            PeakList.concatenate([unet.peaks_from_probability(p, nf) for p, nf in maps_prob]), truth, optional=weaker)
        # the lowest cut at which the U-Net is at least as precise as grid-searched peakfinder8
        equal = [c for c in CUTS if by_cut[c].precision >= pf8_grid.precision]
        at_equal = by_cut[min(equal)] if equal else None
        # peakfinder8's most sensitive setting at least as precise as the U-Net on the grid frames
        pf8_equal = (evaluate_peaks(run(Peakfinder8(**params_equal), frames, maps, mask), truth, optional=weaker)
                     if params_equal else None)
        row = {
            "unet": summary(ev_unet),
            "peakfinder8_at_unet_precision": (summary(pf8_equal) | {"params": params_equal}) if pf8_equal else None,
            "peakfinder8_grid": summary(pf8_grid) | {"params": params, "grid_seconds": round(grid_s)},
            "peakfinder8_default": summary(pf8_default),
            "peakfinder8_tuned_on_trained_presets": transfer or None,
            "unet_at_equal_precision": (summary(at_equal) | {"cut": min(equal)}) if at_equal else None,
            "f1_gain_over_grid": round(ev_unet.f1 - pf8_grid.f1, 3),
            "f1_gain_over_best_pf8": round(ev_unet.f1 - max(pf8_grid.f1, pf8_default.f1), 3),
            "hot_pixels_masked": n_hot,
        }
        for name, other in others.items():
            ev = evaluate_peaks(run(other, frames, maps, mask), truth, optional=weaker)
            row[name] = summary(ev) | {"f1_gain_over_grid": round(ev.f1 - pf8_grid.f1, 3)}
            print(f"    {name}: F1 {ev.f1:.3f} (P {ev.precision:.3f} R {ev.recall:.3f}),"
                  f" gain over grid {ev.f1 - pf8_grid.f1:+.3f}", flush=True)
        out[f"{preset}/{condition}"] = row
        print(f"{preset:10s} {condition:5s} unet F1 {ev_unet.f1:.3f} (P {ev_unet.precision:.3f} R {ev_unet.recall:.3f})"
              f" | pf8 grid F1 {pf8_grid.f1:.3f} (P {pf8_grid.precision:.3f} R {pf8_grid.recall:.3f})"
              f" | pf8 default F1 {pf8_default.f1:.3f} | gain over grid {row['f1_gain_over_grid']:+.3f},"
              f" over the better pf8 {row['f1_gain_over_best_pf8']:+.3f}", flush=True)
        for name, ev in transfer.items():
            print(f"    pf8 with the settings grid-searched on {name} {condition}: F1 {ev['f1']:.3f}"
                  f" (P {ev['precision']:.3f} R {ev['recall']:.3f})", flush=True)
        if at_equal:
            print(f"    recall by SNR at equal precision (cut {min(equal)}): unet {summary(at_equal)['recall_by_snr']}"
                  f" | pf8 grid {summary(pf8_grid)['recall_by_snr']}", flush=True)
        if pf8_equal:
            print(f"    at the U-Net's precision: unet (P {ev_unet.precision:.3f}) {summary(ev_unet)['recall_by_snr']}"
                  f" | pf8 (P {pf8_equal.precision:.3f}, {params_equal}) {summary(pf8_equal)['recall_by_snr']}",
                  flush=True)
    return out


def speed(unet: UNetFinder, repeats: int = 3) -> dict:
    sim = simulator("jungfrau4m", "as-is")
    maps = sim.layout.pixel_maps(sim.wavelength_a)
    image = sim.frame(0).image
    pf8 = Peakfinder8()
    out: dict = {"shape": list(image.shape), "megapixels": round(image.size / 1e6, 2)}

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    norm = normalise_frame(image, maps.mask, maps=maps, config=unet.model.norm)
    model = unet.model.inference_model()
    cfg = unet.config

    def network() -> None:
        predict_tiled(model, norm.inputs, tile_size=cfg.tile_size, overlap=cfg.overlap, batch_size=cfg.batch_size,
                      precision=cfg.precision)

    out["precision"] = inference_precision("cpu") if cfg.precision == "auto" else cfg.precision

    flips = unet.model.flips
    out["flips"] = flips
    for threads in (1, 2):
        torch.set_num_threads(threads)
        out[f"unet_total_s_{threads}_threads"] = round(best(lambda: unet.find(image, maps.mask, maps=maps)), 3)
        out[f"network_s_{threads}_threads"] = round(best(network), 3)
        out[f"peakfinder8_s_{threads}_threads"] = round(best(lambda: pf8.find(image, maps.mask, maps=maps)), 3)
        if flips > 1:  # the same finder without the flipped copies
            unet.model.flips = 1
            model = unet.model.inference_model()
            out[f"unet_total_s_{threads}_threads_one_copy"] = round(
                best(lambda: unet.find(image, maps.mask, maps=maps)), 3
            )
            out[f"network_s_{threads}_threads_one_copy"] = round(best(network), 3)
            unet.model.flips = flips
            model = unet.model.inference_model()
    torch.set_num_threads(1)
    out["normalisation_s"] = round(best(lambda: normalise_frame(image, maps.mask, maps=maps)), 3)
    prob, norm = unet.probability(image, maps.mask, maps=maps)
    out["extraction_s"] = round(best(lambda: unet.peaks_from_probability(prob, norm)), 3)
    print("speed", out, flush=True)
    return out


def real_frames():
    """All the real frames of ``classical_data.py``: the whole thaumatin grid scan, then the others."""
    from classical_data import ceo2, ceria2m, cspad, hexrd_ruby, lcys, rayonix, thaumatin

    for i in range(1, 20):
        yield thaumatin(i)
    for i in range(4):
        yield cspad(i)
    yield rayonix()
    yield ceo2()
    yield ceria2m()
    yield lcys(1)
    yield hexrd_ruby(4)


def real(unet: UNetFinder, min_peaks: int) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from classical_data import REAL

    if not REAL.is_dir():
        print("real frames not found:", REAL)
        return {}
    pf8 = Peakfinder8()
    rows = []
    for fr in real_frames():
        a = unet.find(fr.image, fr.mask, maps=fr.maps)
        b = pf8.find(fr.image, fr.mask, maps=fr.maps)
        strong = b.snr >= 10
        _, ti = match_frame(np.column_stack([a.row, a.col]), np.column_stack([b.row[strong], b.col[strong]]), 2.0)
        row = {"frame": fr.name, "kind": fr.kind, "expected": fr.expected, "unet": len(a), "peakfinder8": len(b),
               "pf8_strong": int(strong.sum()),
               "strong_found_by_unet": round(len(ti) / strong.sum(), 3) if strong.any() else None}
        rows.append(row)
        print(row, flush=True)
    grid = [r for r in rows if r["frame"].startswith("thaumatin")]
    calls = {}
    for label in ("unet", "peakfinder8"):
        right = sum((r[label] >= min_peaks) == (r["kind"] in ("hit", "weak")) for r in grid)
        calls[label] = f"{right}/{len(grid)} thaumatin frames called right (hit: >= {min_peaks} peaks)"
    print(calls, flush=True)
    return {"frames": rows, "hit_calls": calls}


def pictures(model: str, folder: Path) -> list[str]:
    """``braggml find --finder unet`` then ``braggml show`` on a thaumatin hit, a blank and CeO2 powder."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from classical_data import REAL

    folder.mkdir(parents=True, exist_ok=True)
    shots = {
        "unet_thaumatin_hit": REAL / "thaumatin_grid" / "thau_3_2_0002.cbf.bz2",
        "unet_thaumatin_blank": REAL / "thaumatin_grid" / "thau_3_2_0017.cbf.bz2",
        "unet_ceo2_powder": REAL / "negatives" / "CeO2_Pilatus1M.tif",
    }
    made = []
    for name, path in shots.items():
        if not path.exists():
            continue
        peaks = folder / f"{name}.csv"
        cli = [sys.executable, "-m", "braggml"]
        cmd = [*cli, "find", str(path), "--finder", "unet", "-o", str(peaks), "--format", "csv", "-q"]
        subprocess.run(cmd + (["--model", model] if model else []), check=True)
        subprocess.run([*cli, "show", str(path), "--peaks", str(peaks), "-o", str(folder / f"{name}.png")],
                       check=True)
        made.append(str(folder / f"{name}.png"))
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS,
                        help="simulated presets to score (the unseen ones are compared with peakfinder8 tuned on the"
                             " trained presets only when those run too, first)")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--grid-frames", type=int, default=8)
    parser.add_argument("--min-peaks", type=int, default=30)
    parser.add_argument("--model", default="")
    parser.add_argument("--flips", type=int, choices=[1, 2, 4], default=None,
                        help="flipped copies the network's logits are averaged over (default: the model's own)")
    parser.add_argument("--also", nargs="*", default=[], choices=sorted(VARIANTS),
                        help="score these variants of the finder beside it on the simulated frames")
    parser.add_argument("--out", default="")
    parser.add_argument("--pictures", default="")
    parser.add_argument("--skip", nargs="*", default=[], choices=["simulated", "speed", "real"])
    parser.add_argument("--hot-pixels", choices=["auto", "off"], default="auto",
                        help="mask the hot pixels found in the scored frames, as braggml find does (runs >= 8 frames)")
    parser.add_argument("--weaker-spots", choices=["not-scored", "false"], default="not-scored",
                        help="a peak found at a simulated spot below the truth's cut: neither true nor false, or false")
    args = parser.parse_args()
    torch.set_num_threads(2)
    unet = UNetFinder(model_path=args.model, device="cpu", flips=args.flips)
    n_params = sum(p.numel() for p in unet.model.model.parameters())
    results = {"model": args.model or "shipped", "parameters": n_params, "threshold": unet.model.threshold,
               "flips": unet.model.flips,
               "trained_on": unet.model.info.get("trained_on"), "cpu_threads_simulated": 2}
    print({k: v for k, v in results.items()}, flush=True)
    others = {name: UNetFinder(model_path=args.model, device="cpu", **VARIANTS[name]) for name in args.also}

    def save() -> None:  # after every section, so that a later failure keeps what was measured
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1, default=str))

    if "simulated" not in args.skip:
        results["simulated"] = simulated(
            unet, args.frames, args.grid_frames, args.hot_pixels == "auto", args.weaker_spots == "not-scored",
            others, tuple(args.presets),
        )
        save()
    if "speed" not in args.skip:
        results["speed"] = speed(unet)
        save()
    if "real" not in args.skip:
        torch.set_num_threads(2)
        results["real"] = real(unet, args.min_peaks)
        save()
    if args.pictures:
        results["pictures"] = pictures(args.model, Path(args.pictures))
        save()


if __name__ == "__main__":
    main()
