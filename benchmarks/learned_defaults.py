"""The learned finders as they ship (``cnn``, ``svm``, ``unet`` with their built-in models and default settings)
against peakfinder8 and dispersion with their defaults, on simulated and real frames.

Simulated frames: those of ``benchmarks/unet_vs_peakfinder8.py`` (run seed 2026, every frame a hit; ``weak``:
crystals five times weaker; ``as-is``: the preset's settings), frames ``--first-frame`` .. +``--frames``-1 of
each row. The shipped
models were trained on ``jungfrau4m`` and ``pilatus6m`` frames of other seeds; ``eiger4m`` and ``test`` they
never saw. Scoring as there: observable spots of expected SNR >= 3 are the truth, matched one-to-one within
2 px; a peak at a weaker simulated spot counts as neither true nor false; the run's hot pixels are masked for
every finder, as ``braggml find`` does in runs of 8 frames or more.

Real frames (``../shared/data/real``, maps from ``benchmarks/classical_data.py``): peak counts per finder, the
share of peakfinder8's strong peaks (SNR >= 10) each finder also finds within 2 px, and the hit calls on the
thaumatin grid scan (hit: at least ``--min-peaks`` peaks).

``--finders unet+cnn`` adds the U-Net with the patch CNN as its backstop (``backstop="cnn"``). ``--model
cnn=new.safetensors`` adds a column ``cnn:new`` with that model and the finder's default settings, to weigh a
retrained model against the shipped one in the same run.

Run: ``python benchmarks/learned_defaults.py [--frames 8] [--first-frame 0] [--finders cnn svm unet unet+cnn]
[--model FINDER=PATH ...] [--skip simulated real] [--out results.json]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unet_vs_peakfinder8 import CONDITIONS, PRESETS, TRAINED, real_frames, run, run_mask, simulator, truth_of  # noqa: E402

from braggml.evaluate.matching import match_frame  # noqa: E402
from braggml.evaluate.metrics import evaluate_peaks  # noqa: E402
from braggml.finder import make_finder  # noqa: E402

REFERENCES = ("peakfinder8", "dispersion")
LEARNED = ("cnn", "svm", "unet")
#: Finders that can be asked for besides: the U-Net with the patch CNN as a backstop.
VARIANTS = {"unet+cnn": ("unet", {"backstop": "cnn"})}


def finder(name: str):
    base, params = VARIANTS.get(name, (name, {}))
    return make_finder(base, **params)


def add_model_variants(specs: list[str]) -> list[str]:
    """Register ``FINDER=PATH`` as the finder ``FINDER:stem`` with that model; returns the new names."""
    names = []
    for spec in specs:
        base, sep, path = spec.partition("=")
        if not sep or base not in LEARNED or not Path(path).is_file():
            raise SystemExit(f"--model wants FINDER=PATH with FINDER one of {LEARNED} and an existing file: {spec!r}")
        name = f"{base}:{Path(path).stem}"
        VARIANTS[name] = (base, {"model_path": path})
        names.append(name)
    return names


def simulated(names: list[str], n_frames: int, first: int = 0) -> dict:
    finders = {name: finder(name) for name in names}
    out: dict = {}
    print("| row | " + " | ".join(f"{n} F1 (P / R)" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for preset, condition in itertools.product(PRESETS, CONDITIONS):
        sim = simulator(preset, condition)
        maps = sim.layout.pixel_maps(sim.wavelength_a)
        frames = [sim.frame(k) for k in range(first, first + n_frames)]
        truth, weaker = truth_of(frames), truth_of(frames, weaker=True)
        mask, _ = run_mask(frames, maps, True)
        row: dict = {}
        for name, f in finders.items():
            t0 = time.perf_counter()
            ev = evaluate_peaks(run(f, frames, maps, mask), truth, optional=weaker)
            row[name] = {"precision": round(ev.precision, 3), "recall": round(ev.recall, 3), "f1": round(ev.f1, 3),
                         "n_found": ev.n_found, "n_true": ev.n_true,
                         "seconds_per_frame": round((time.perf_counter() - t0) / n_frames, 3)}
        label = f"{preset}{'' if preset in TRAINED else ' (unseen)'}, {condition}"
        out[label] = row
        print(f"| {label} | " + " | ".join(
            f"{r['f1']:.3f} ({r['precision']:.3f} / {r['recall']:.3f})" for r in row.values()) + " |", flush=True)
    means = {n: round(float(np.mean([r[n]["f1"] for r in out.values()])), 4) for n in names}
    print("mean F1:", means)
    out["mean_f1"] = means
    return out


def real(names: list[str], min_peaks: int) -> dict:
    from classical_data import REAL

    if not REAL.is_dir():
        print("real frames not found:", REAL)
        return {}
    finders = {name: finder(name) for name in names}
    rows = []
    for fr in real_frames():
        found = {name: f.find(fr.image, fr.mask, maps=fr.maps) for name, f in finders.items()}
        ref = found["peakfinder8"]
        strong = ref.snr >= 10
        row: dict = {"frame": fr.name, "kind": fr.kind, "pf8_strong": int(strong.sum())}
        for name, peaks in found.items():
            row[name] = len(peaks)
            if name != "peakfinder8" and strong.any():
                _, ti = match_frame(np.column_stack([peaks.row, peaks.col]),
                                    np.column_stack([ref.row[strong], ref.col[strong]]), 2.0)
                row[f"{name}_strong"] = round(len(ti) / strong.sum(), 3)
        rows.append(row)
        print(row, flush=True)
    grid = [r for r in rows if r["frame"].startswith("thaumatin")]
    calls = {name: sum((r[name] >= min_peaks) == (r["kind"] in ("hit", "weak")) for r in grid) for name in names}
    print(f"thaumatin frames called right of {len(grid)} (hit: >= {min_peaks} peaks):", calls)
    return {"frames": rows, "hit_calls_right": calls, "grid_frames": len(grid)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=8, help="scored frames per simulated row")
    ap.add_argument("--first-frame", type=int, default=0, help="first scored frame of each simulated row")
    ap.add_argument("--finders", nargs="+", default=list(LEARNED), choices=[*LEARNED, *VARIANTS],
                    help="learned finders to score (unet+cnn: the U-Net with the CNN backstop)")
    ap.add_argument("--model", nargs="+", default=[], metavar="FINDER=PATH",
                    help="also score FINDER with this model file (column FINDER:stem)")
    ap.add_argument("--min-peaks", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--skip", nargs="*", default=[], choices=["simulated", "real"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = [*REFERENCES, *args.finders, *add_model_variants(args.model)]
    results: dict = {"finders": names}
    if "simulated" not in args.skip:
        results["simulated"] = simulated(names, args.frames, args.first_frame)
    if "real" not in args.skip:
        results["real"] = real(names, args.min_peaks)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
        print("figures written to", args.out)


if __name__ == "__main__":
    main()
