"""How close the U-Net comes to the detection limit of the photons: recall of an oracle that knows every spot.

The frames are those of ``unet_vs_peakfinder8.py``: run seed 2026, every frame a hit, conditions ``weak`` and
``as-is``, frames 0..``--frames``-1 of every preset. The scored spots are observable spots of expected SNR >= 3.

For each scored spot the oracle knows its position, its profile and the background under it. The profile is
the simulation's noise-free expected photons minus its background, over the pixels within 3 px of the spot.
It computes the Poisson likelihood-ratio statistic of the observed photon counts, ``sum n_i log(1 + s_i / b_i)``.
An integrating detector's frame is divided by its gain and rounded; the read noise is ignored. The tail
probability of the statistic under background alone is that of a weighted sum of Poisson counts, taken from the
Lugannani-Rice saddlepoint approximation at the observed value less half the smallest weight (a continuity
correction). Against Poisson sums with equal weights and Monte Carlo sums of unequal ones it is within about 10 % of
the tail down to 1e-5, and 10-30 % low below that; the two levels printed are a factor of ten apart.

A spot counts as detectable when that tail is at most ``alpha``:

- ``alpha`` is a number of false peaks per frame divided by the frame's good pixels, as if every pixel were one
  trial (``--false-per-frame``, 1 and 0.1 by default).
- A finder must also search for the positions and shapes the oracle is given, so its real number of trials is
  larger, and it must tell spots from cosmic-ray hits and zingers, which the oracle's background does not hold.
  The oracle's recall is therefore an upper bound for a finder with that many false peaks.

Printed next to it: the U-Net's recall (overall and at SNR 3-5), precision and false peaks per frame on the same
frames. The run's hot pixels are masked, as ``braggml find`` does for runs of 8 frames or more. A peak at a
weaker simulated spot counts as neither true nor false.

Run: ``python benchmarks/unet_detection_limit.py [--frames 8] [--rows jungfrau4m/weak ...]
[--false-per-frame 1 0.1] [--model PATH] [--out results.json]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import optimize, stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unet_vs_peakfinder8 import CONDITIONS, PRESETS, run, run_mask, simulator, summary, truth_of  # noqa: E402

from braggml.evaluate.metrics import DEFAULT_SNR_BINS, evaluate_peaks  # noqa: E402
from braggml.ml.unet_finder import UNetFinder  # noqa: E402

#: Pixels within this distance of a spot's centre make up its profile.
PROFILE_RADIUS_PX = 3.0


def poisson_sum_tail(weights: np.ndarray, rates: np.ndarray, x: float) -> float:
    """P(sum w_i N_i >= x) for independent N_i ~ Poisson(rate_i) and w_i >= 0 (Lugannani-Rice)."""

    def k0(t: float) -> float:
        return float(np.sum(rates * np.expm1(t * weights)))

    def k1(t: float) -> float:
        return float(np.sum(rates * weights * np.exp(t * weights)))

    def k2(t: float) -> float:
        return float(np.sum(rates * weights**2 * np.exp(t * weights)))

    if x <= k1(0.0):
        return 1.0
    high = 1.0
    while k1(high) < x:
        high *= 2.0
    t = optimize.brentq(lambda s: k1(s) - x, 0.0, high)
    r = np.sqrt(2.0 * max(t * x - k0(t), 0.0))
    u = t * np.sqrt(k2(t))
    if r < 1e-6 or u < 1e-6:
        return 0.5
    p = stats.norm.sf(r) + stats.norm.pdf(r) * (1.0 / u - 1.0 / r)
    return float(np.clip(p, 0.0, 1.0))


def spot_tails(frame, mask: np.ndarray, gain: float) -> tuple[np.ndarray, np.ndarray]:
    """Background-only tail probability of every scored spot's likelihood-ratio statistic, and its SNR."""
    s = frame.spots
    keep = s["observable"] & (s["snr"] >= 3.0)
    photons = np.clip(np.rint(frame.image.astype(np.float64) / gain), 0, None)
    background = frame.background_photons.astype(np.float64)
    signal = np.clip(frame.expected_photons.astype(np.float64) - background, 0.0, None)
    h, w = photons.shape
    reach = int(np.ceil(PROFILE_RADIUS_PX)) + 1
    tails = []
    for row, col in zip(s["row"][keep], s["col"][keep]):
        r0, c0 = int(round(row)), int(round(col))
        box = (slice(max(r0 - reach, 0), min(r0 + reach + 1, h)), slice(max(c0 - reach, 0), min(c0 + reach + 1, w)))
        rr, cc = np.mgrid[box]
        use = (~mask[box]) & (signal[box] > 1e-3) & (background[box] > 0)
        use &= np.hypot(rr - row, cc - col) <= PROFILE_RADIUS_PX
        b, weights = background[box][use], np.log1p(signal[box][use] / background[box][use])
        observed = float(np.sum(weights * photons[box][use]))
        # half the smallest step as a continuity correction: the sum takes discrete values
        tails.append(poisson_sum_tail(weights, b, observed - 0.5 * weights.min()) if weights.size else 1.0)
    return np.asarray(tails), np.asarray(s["snr"][keep], np.float64)


def binned(detected: np.ndarray, snr: np.ndarray) -> dict[str, float]:
    """Share of the spots detected, by the SNR bins of :func:`evaluate_peaks` (bins without spots left out)."""
    shares = {}
    for lo, hi in zip(DEFAULT_SNR_BINS[:-1], DEFAULT_SNR_BINS[1:]):
        in_bin = (snr >= lo) & (snr < hi)
        if in_bin.any():
            shares[f"{lo:g}-{hi:g}"] = round(float(detected[in_bin].mean()), 3)
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--rows", nargs="+", default=[f"{p}/{c}" for p, c in itertools.product(PRESETS, CONDITIONS)],
                        help="preset/condition pairs, e.g. jungfrau4m/weak")
    parser.add_argument("--false-per-frame", type=float, nargs="+", default=[1.0, 0.1])
    parser.add_argument("--model", default="", help="U-Net model file (default: the shipped one)")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.frames < 8:
        parser.error("--frames must be at least 8: the run's hot pixels are found in runs of 8 frames or more")
    for row in args.rows:
        preset, _, condition = row.partition("/")
        if preset not in PRESETS or condition not in CONDITIONS:
            parser.error(f"--rows: {row!r} is not one of {', '.join(f'{p}/{c}' for p in PRESETS for c in CONDITIONS)}")
    if any(not fpf > 0 for fpf in args.false_per_frame):
        parser.error(f"--false-per-frame must be > 0, got {args.false_per_frame}")
    if args.model and not Path(args.model).is_file():
        parser.error(f"--model: no such file: {args.model}")
    torch.set_num_threads(2)
    finder = UNetFinder(model_path=args.model)
    results = {}
    for row in args.rows:
        preset, condition = row.split("/")
        sim = simulator(preset, condition)
        maps = sim.layout.pixel_maps(sim.wavelength_a)
        frames = [sim.frame(k) for k in range(args.frames)]
        mask, _ = run_mask(frames, maps, True)
        det = sim.config.detector
        gain = det.gain_adu_per_photon if det.mode == "integrating" else 1.0
        tails, snr = map(np.concatenate, zip(*(spot_tails(f, mask, gain) for f in frames)))
        good_pixels = int((~mask).sum())
        truth = truth_of(frames)
        ev = evaluate_peaks(run(finder, frames, maps, mask), truth, optional=truth_of(frames, weaker=True))
        unet = summary(ev)
        unet_bins = unet["recall_by_snr"]
        entry = {
            "n_true": int(snr.size),
            "unet": {"precision": unet["precision"], "recall": unet["recall"],
                     "false_per_frame": round(ev.n_found * (1 - ev.precision) / args.frames, 2),
                     "recall_by_snr": unet_bins},
            "oracle": {},
        }
        line = (f"{row:18s} {snr.size:5d} spots | U-Net P {ev.precision:.3f} R {ev.recall:.3f} "
                f"(SNR 3-5 {unet_bins.get('3-5', float('nan')):.3f}), "
                f"{entry['unet']['false_per_frame']:.2f} false/frame")
        for fpf in args.false_per_frame:
            detected = tails <= fpf / good_pixels
            bins = binned(detected, snr)
            entry["oracle"][f"{fpf:g}"] = {"recall": round(float(detected.mean()), 3), "recall_by_snr": bins}
            line += (f" | oracle at {fpf:g} false/frame: R {detected.mean():.3f}"
                     f" (SNR 3-5 {bins.get('3-5', float('nan')):.3f})")
        print(line, flush=True)
        results[row] = entry
    if args.out:
        Path(args.out).write_text(json.dumps({"frames": args.frames, "rows": results}, indent=1))


if __name__ == "__main__":
    main()
