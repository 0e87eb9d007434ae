"""Accuracy of the classical finders with default settings on simulated frames, against a tuned peakfinder8.

For each detector preset (``jungfrau4m``: integrating, float keV units; ``pilatus6m``: photon counts) one run
is simulated. The first ``--grid-frames`` frames tune peakfinder8 in OM's exact algorithm (braggml's
OM-compatible settings, which match OM's compiled peakfinder8 on 99.9 % of peaks, see
``classical_vs_peers.py``) by a grid search for the best F1; the next ``--test-frames`` frames score every
finder with its DEFAULT settings and the tuned OM-style peakfinder8 (and, when ``benchmarks/.venv-om``
exists, OM itself with the tuned parameters). Truth: observable spots with expected SNR >= ``--truth-snr``;
matching one-to-one within 2 px (:func:`braggml.evaluate.metrics.evaluate_peaks`).

Printed per preset and finder: precision, recall, F1, false peaks by cause (ice ring, hot pixel, cosmic
streak, on a true spot below the truth cut or split, noise) and recall by truth-SNR bin::

    python benchmarks/classical_accuracy.py [--grid-frames 4] [--test-frames 8]
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from classical_vs_peers import OM_COMPATIBLE, OM_PYTHON  # noqa: E402

from braggml.classical.rings import on_ice_rings  # noqa: E402
from braggml.evaluate.metrics import evaluate_peaks  # noqa: E402
from braggml.finder import make_finder  # noqa: E402
from braggml.peaks import PeakList  # noqa: E402
from braggml.simulate import Simulator, get_preset  # noqa: E402

HERE = Path(__file__).resolve().parent
FINDERS = ["peakfinder8", "threshold", "dispersion", "dispersion_extended"]
SEED = 4242
#: Detector units per photon of each preset (grid of adc_threshold in photons times this).
UNITS_PER_PHOTON = {"jungfrau4m": 12.0, "pilatus6m": 1.0}
GRID = {
    "minimum_snr": [4.0, 5.0, 6.0, 8.0, 10.0],
    "adc_photons": [0.0, 1.0, 2.0, 4.0],
    "min_pixel_count": [1, 2, 3],
    "local_bg_radius": [2, 3, 4],
}


def truth_of(frames, min_snr: float) -> PeakList:
    parts = []
    for f in frames:
        s = f.spots
        keep = s["observable"] & (s["snr"] >= min_snr)
        parts.append(PeakList.from_columns(n_frames=1, row=s["row"][keep], col=s["col"][keep], snr=s["snr"][keep]))
    return PeakList.concatenate(parts)


def run(finder, frames, maps) -> tuple[PeakList, float]:
    t0 = time.perf_counter()
    peaks = PeakList.concatenate([finder.find(f.image, maps.mask, maps=maps) for f in frames])
    return peaks, (time.perf_counter() - t0) / max(len(frames), 1)


def false_peak_causes(found: PeakList, matched: np.ndarray, frames, sim, maps) -> dict[str, int]:
    """Classify the unmatched found peaks by what lies under them."""
    causes = {"ice_ring": 0, "hot_pixel": 0, "streak": 0, "on_true_spot": 0, "noise": 0}
    h, w = maps.shape
    hot = sim.layout.hot_photons > 0
    for i in np.flatnonzero(~matched):
        k = int(found.frame[i])
        r = int(np.clip(np.rint(found.row[i]), 0, h - 1))
        c = int(np.clip(np.rint(found.col[i]), 0, w - 1))
        win = (slice(max(r - 1, 0), r + 2), slice(max(c - 1, 0), c + 2))
        fp = frames[k].footprint[win]
        if hot[win].any():
            causes["hot_pixel"] += 1
        elif (fp & 2).any():
            causes["streak"] += 1
        elif maps.resolution_a is not None and on_ice_rings(np.array([maps.resolution_a[r, c]]), 0.004)[0]:
            causes["ice_ring"] += 1
        elif (fp & 1).any():
            causes["on_true_spot"] += 1
        else:
            causes["noise"] += 1
    return causes


def om_params(p: dict) -> dict:
    return {**OM_COMPATIBLE, **p}


def run_real_om(frames, maps, params: dict) -> PeakList | None:
    """OM's compiled peakfinder8 with the tuned parameters (None without its environment)."""
    if not OM_PYTHON.exists():
        return None
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        use = (~maps.mask) & (maps.panel_id >= 0)
        np.savez(
            src,
            data=np.stack([f.image.astype(np.float32) for f in frames]),
            mask=np.repeat(use[None].astype(np.int8), len(frames), axis=0),
            radius=maps.radius_px.astype(np.float32),
            params=json.dumps({**params, "max_num_peaks": 2048, "repeats": 1}),
        )
        subprocess.run([str(OM_PYTHON), str(HERE / "peers" / "om_peakfinder8.py"), str(src), str(dst)], check=True)
        out = np.load(dst)
        for k in range(len(frames)):
            sel = out["frame"] == k
            parts.append(PeakList.from_columns(n_frames=1, row=out["row"][sel], col=out["col"][sel]))
    return PeakList.concatenate(parts)


def line(name: str, ev, causes: dict[str, int], seconds: float | None) -> str:
    snr = "  ".join(f"[{b['low']:g},{b['high']:g}) {b['recall']:.2f}" for b in ev.recall_by_snr if b["n_true"])
    fp = " ".join(f"{k}={v}" for k, v in causes.items() if v)
    t = f"{seconds * 1000:6.0f} ms" if seconds is not None else "       -"
    return (
        f"{name:26s} P {ev.precision:.3f} R {ev.recall:.3f} F1 {ev.f1:.3f} {t} | found {ev.n_found:5d} "
        f"| false: {fp or '-'} | recall by SNR: {snr}"
    )


def evaluate_preset(preset: str, n_grid: int, n_test: int, truth_snr: float) -> None:
    sim = Simulator(get_preset(preset), seed=SEED)
    maps = sim.layout.pixel_maps(sim.wavelength_a)
    grid_frames = [sim.frame(k) for k in range(n_grid)]
    test_frames = [sim.frame(k) for k in range(n_grid, n_grid + n_test)]
    truth_grid = truth_of(grid_frames, truth_snr)
    truth_test = truth_of(test_frames, truth_snr)
    unit = UNITS_PER_PHOTON[preset]

    best, best_f1 = None, -1.0
    for snr, adc, npix, lbr in itertools.product(*GRID.values()):
        params = dict(minimum_snr=snr, adc_threshold=adc * unit, min_pixel_count=npix, local_bg_radius=lbr)
        found, _ = run(make_finder("peakfinder8", **om_params(params)), grid_frames, maps)
        f1 = evaluate_peaks(found, truth_grid).f1
        if f1 > best_f1:
            best, best_f1 = params, f1
    print(
        f"\n== {preset}: {maps.shape[0]}x{maps.shape[1]}, {maps.n_panels} panels; "
        f"{n_grid} tuning + {n_test} test frames (seed {SEED}); truth: observable, SNR >= {truth_snr:g}, "
        f"{len(truth_test)} true peaks in the test frames"
    )
    print(f"OM-style peakfinder8 tuned on the tuning frames (F1 {best_f1:.3f} there): {best}")

    rows = []
    tuned, t_tuned = run(make_finder("peakfinder8", **om_params(best)), test_frames, maps)
    rows.append(("peakfinder8 OM-style tuned", tuned, t_tuned))
    om = run_real_om(test_frames, maps, {k: best[k] for k in best} | {"max_pixel_count": 200})
    if om is not None:
        rows.append(("OM peakfinder8 tuned", om, None))
    for name in FINDERS:
        found, seconds = run(make_finder(name), test_frames, maps)
        rows.append((f"{name} (defaults)", found, seconds))
    for name, found, seconds in rows:
        ev = evaluate_peaks(found, truth_test)
        causes = false_peak_causes(found, ev.match.found_matched, test_frames, sim, maps)
        print(line(name, ev, causes, seconds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid-frames", type=int, default=4)
    parser.add_argument("--test-frames", type=int, default=8)
    parser.add_argument("--truth-snr", type=float, default=3.0)
    parser.add_argument("--presets", nargs="+", default=["jungfrau4m", "pilatus6m"])
    args = parser.parse_args(argv)
    for preset in args.presets:
        evaluate_preset(preset, args.grid_frames, args.test_frames, args.truth_snr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
