"""The U-Net's rules for photon-counting frames: what the photon spots (``photon_spots``) add, and what counting
one photon per count with the stricter sparse test (:func:`braggml.ml.unet_finder.counting_gain`,
:data:`~braggml.ml.unet_finder.COUNTING_SIGNIFICANCE_MARGIN`) changes.

Simulated frames: those of ``unet_vs_peakfinder8.py`` (run seed 2026, every frame a hit, conditions ``weak`` and
``as-is``). The network runs once per frame; its probabilities are then cut with the rule off, and on with the
spill it asks of the neighbours at 1, 1.5 (the default, :data:`braggml.ml.unet_finder.PHOTON_SPILL_SIGMA`) and 2
sigmas, and, as the column ``measured gain``, with the rule on but the peak tests counting the gain measured from
the frame's clipped statistics and asking sparse regions for ``significance_snr`` alone. Rows: each preset and
condition on ``--frames`` frames from ``--first-frame``, with the run's hot pixels masked as ``braggml find`` masks
them in runs of 8 frames or more, and without (``--hot-pixels both``, the default). The rule runs on photon-
counting frames only, so the ``jungfrau4m`` and ``test`` rows (float frames of an integrating detector) are the
same both ways; they are there to show it. Truth and scoring as in ``unet_vs_peakfinder8.py``.

Real frames (``../shared/data/real``, maps from ``classical_data.py``; ``--skip real`` leaves them out): the U-Net's
peak counts with the rule off and on and at the measured gain, whether the frame looks photon-counting, how many
of the peaks the rule adds lie within 2 px of a peak of default peakfinder8, and how many of the peaks found at
the measured gain the default drops, and how many of those lie near one.

Run: ``python benchmarks/unet_photon_spots.py [--presets eiger4m pilatus6m] [--frames 16] [--first-frame 0]
[--hot-pixels both|masked|unmasked] [--skip real] [--out results.json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from braggml.classical.peakfinder8 import Peakfinder8
from braggml.evaluate.metrics import evaluate_peaks
from braggml.ml import unet_finder
from braggml.ml.unet_finder import UNetFinder, photon_counting
from braggml.peaks import PeakList

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unet_vs_peakfinder8 import CONDITIONS, PRESETS, run_mask, simulator, summary, truth_of  # noqa: E402

SPILLS = (1.0, 1.5, 2.0)


@contextlib.contextmanager
def measured_gain():
    """The peak tests as they were before the counting rules: the measured gain, no margin on sparse regions."""
    saved = unet_finder.counting_gain, unet_finder.COUNTING_SIGNIFICANCE_MARGIN
    unet_finder.counting_gain = lambda integer, gain, noise_correlation=1.0: (False, gain)
    unet_finder.COUNTING_SIGNIFICANCE_MARGIN = 0.0
    try:
        yield
    finally:
        unet_finder.counting_gain, unet_finder.COUNTING_SIGNIFICANCE_MARGIN = saved


def _near(a: PeakList, b: PeakList, radius: float = 2.0) -> np.ndarray:
    """Which peaks of ``a`` lie within ``radius`` of a peak of ``b``."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros(len(a), bool)
    distance, _ = cKDTree(np.column_stack([b.row, b.col])).query(np.column_stack([a.row, a.col]))
    return distance <= radius


def simulated(presets: list[str], n_frames: int, first: int, masks: list[str]) -> dict:
    on, off = UNetFinder(device="cpu"), UNetFinder(device="cpu", photon_spots="off")
    default_spill = unet_finder.PHOTON_SPILL_SIGMA
    out: dict = {}
    for preset, condition in itertools.product(presets, CONDITIONS):
        sim = simulator(preset, condition)
        maps = sim.layout.pixel_maps(sim.wavelength_a)
        frames = [sim.frame(k) for k in range(first, first + n_frames)]
        truth, weaker = truth_of(frames), truth_of(frames, weaker=True)
        for masked in masks:
            mask, _ = run_mask(frames, maps, masked == "masked")
            probs = [on.probability(f.image, mask, maps=maps) for f in frames]

            def score(finder: UNetFinder, probs=probs, truth=truth, weaker=weaker) -> dict:
                found = PeakList.concatenate([finder.peaks_from_probability(p, norm) for p, norm in probs])
                return summary(evaluate_peaks(found, truth, optional=weaker))

            row = {"off": score(off), "counting_frames": sum(
                photon_counting(norm.integer, norm.gain, norm.noise_correlation) for _, norm in probs)}
            try:
                for spill in SPILLS:
                    unet_finder.PHOTON_SPILL_SIGMA = spill
                    row[f"spill {spill:g}"] = score(on)
            finally:
                unet_finder.PHOTON_SPILL_SIGMA = default_spill
            with measured_gain():
                row["measured gain"] = score(on)
            key = f"{preset}/{condition}/{masked} frames {first}-{first + n_frames - 1}"
            out[key] = row
            figures = " | ".join(f"{name} {r['f1']:.3f} (P {r['precision']:.3f} R {r['recall']:.3f})"
                                 for name, r in row.items() if isinstance(r, dict))
            print(f"{key}: counting frames {row['counting_frames']}/{n_frames} | {figures}", flush=True)
    return out


def real() -> dict:
    from classical_data import REAL, pilatus_misc
    from unet_vs_peakfinder8 import real_frames

    if not REAL.is_dir():
        print("real frames not found:", REAL)
        return {}
    on, off = UNetFinder(device="cpu"), UNetFinder(device="cpu", photon_spots="off")
    out = {}
    frames = itertools.chain(real_frames(), (pilatus_misc(n) for n in ("DLS_I23_P12M_thau_00001",
                                                                      "DLS_I03_smargon_0001")))
    for fr in frames:
        prob, norm = on.probability(fr.image, fr.mask, maps=fr.maps)
        with_rule, without = on.peaks_from_probability(prob, norm), off.peaks_from_probability(prob, norm)
        with measured_gain():
            before = on.peaks_from_probability(prob, norm)
        added = with_rule.take(~_near(with_rule, without, 0.01))
        dropped = before.take(~_near(before, with_rule, 0.01))
        pf8 = Peakfinder8().find(fr.image, fr.mask, maps=fr.maps)
        row = {
            "counting": photon_counting(norm.integer, norm.gain, norm.noise_correlation),
            "gain": round(norm.gain, 3), "off": len(without), "on": len(with_rule), "added": len(added),
            "added_near_peakfinder8": int(_near(added, pf8).sum()), "peakfinder8": len(pf8),
            "measured_gain": len(before), "dropped": len(dropped),
            "dropped_near_peakfinder8": int(_near(dropped, pf8).sum()),
        }
        out[fr.name] = row
        print(fr.name, row, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["eiger4m", "pilatus6m"], choices=PRESETS)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--first-frame", type=int, default=0)
    ap.add_argument("--hot-pixels", choices=("both", "masked", "unmasked"), default="both")
    ap.add_argument("--skip", nargs="*", default=[], choices=["simulated", "real"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    masks = ["masked", "unmasked"] if args.hot_pixels == "both" else [args.hot_pixels]
    results = {}
    if "simulated" not in args.skip:
        results["simulated"] = simulated(args.presets, args.frames, args.first_frame, masks)
    if "real" not in args.skip:
        results["real"] = real()
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
