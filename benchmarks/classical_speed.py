"""Time per frame of the classical finders with default settings, on one core.

Prints the best of several runs for each finder on a synthetic 4-Mpixel frame (2048 x 2048, Poisson
background with 500 spots) and on the real frames of ``../shared/data/real`` when present::

    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/classical_speed.py [--repeats 5]

``--peakfinder8`` times only the default peakfinder8 (best of ``--repeats`` runs, ms per frame) on
4-Mpixel frames (the synthetic one, simulated Jungfrau 4M) and 6-Mpixel frames (simulated Pilatus 6M,
real Pilatus 6M thaumatin when present), next to OM's compiled peakfinder8 (best of 3, its normal
mode) when ``benchmarks/.venv-om`` exists (see ``classical_vs_peers.py``). The two sides alternate in
``--rounds`` rounds per frame, so that both see the same load on a shared machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from braggml.finder import make_finder  # noqa: E402
from braggml.geometry import PixelMaps  # noqa: E402

FINDERS = ["peakfinder8", "threshold", "dispersion", "dispersion_extended"]


def synthetic_frame(shape: tuple[int, int] = (2048, 2048), n_spots: int = 500, seed: int = 0):
    """A Poisson frame with a radial background and Gaussian spots; returns (image, mask, maps)."""
    rng = np.random.default_rng(seed)
    maps = PixelMaps.fallback(shape)
    r = maps.radius_px.astype(np.float64)
    expected = 3.0 + 40.0 * np.exp(-r / 300.0)
    rows = rng.uniform(20, shape[0] - 20, n_spots)
    cols = rng.uniform(20, shape[1] - 20, n_spots)
    amps = rng.uniform(20, 400, n_spots)
    for r0, c0, a in zip(rows, cols, amps):
        rs, cs = slice(int(r0) - 6, int(r0) + 7), slice(int(c0) - 6, int(c0) + 7)
        rr, cc = np.mgrid[rs, cs]
        expected[rs, cs] += a * np.exp(-((rr - r0) ** 2 + (cc - c0) ** 2) / 2.0)
    image = rng.poisson(expected).astype(np.int32)
    return image, np.zeros(shape, bool), maps


def best_time(name: str, image: np.ndarray, mask: np.ndarray, maps: PixelMaps, repeats: int) -> tuple[float, int]:
    finder = make_finder(name)
    peaks = finder.find(image, mask, maps=maps)  # compiles on first use
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        peaks = finder.find(image, mask, maps=maps)
        best = min(best, time.perf_counter() - t0)
    return best, len(peaks)


def best_default_time(finder, image: np.ndarray, mask: np.ndarray | None, maps: PixelMaps, repeats: int):
    """Best seconds per frame of a (warmed-up) default peakfinder8 over ``repeats`` runs, and its peaks."""
    best = np.inf
    peaks = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        peaks = finder.find(image, mask, maps=maps)
        best = min(best, time.perf_counter() - t0)
    return best, peaks


def peakfinder8_frames(real: bool) -> list[tuple[str, np.ndarray, np.ndarray | None, PixelMaps]]:
    """4- and 6-Mpixel frames: synthetic, simulated Jungfrau 4M and Pilatus 6M, real Pilatus 6M."""
    from braggml.simulate import Simulator
    from braggml.simulate.presets import get_preset

    frames = [("synthetic 2048x2048", *synthetic_frame())]
    for preset in ("jungfrau4m", "pilatus6m"):
        sim = Simulator(get_preset(preset), seed=7)
        maps = sim.layout.pixel_maps(sim.wavelength_a)
        for k in range(2):
            frames.append((f"sim {preset} #{k}", sim.frame(k).image, None, maps))
    if real:
        try:
            from classical_data import REAL, thaumatin

            if REAL.is_dir():
                for index in (2, 16):
                    fr = thaumatin(index)
                    frames.append((fr.name, fr.image, fr.mask, fr.maps))
        except ImportError as exc:  # fabio missing
            print(f"real frames skipped: {exc}")
    return frames


def om_seconds(frames: list[tuple[str, np.ndarray, np.ndarray | None, PixelMaps]]) -> list[float] | None:
    """OM's best time per frame in its normal mode (best of 3), or None without its environment."""
    try:
        from classical_data import RealFrame
        from classical_vs_peers import OM_PYTHON, run_om
    except ImportError as exc:
        print(f"OM comparison skipped: {exc}")
        return None
    if not OM_PYTHON.exists():
        print(f"OM comparison skipped: no {OM_PYTHON}")
        return None
    real = [
        RealFrame(label, image, np.zeros(image.shape, bool) if mask is None else mask, maps, "speed")
        for label, image, mask, maps in frames
    ]
    return [seconds for _, seconds in run_om(real)]


def compare_peakfinder8(repeats: int, real: bool, rounds: int) -> None:
    """Per frame, ``rounds`` alternating rounds of OM (best of 3) and braggml (best of ``repeats``), so
    that both sides see the same load on a shared machine; the ratio of the best times and the median
    of the per-round ratios are printed."""
    frames = peakfinder8_frames(real)
    print(
        f"{'frame':24s} {'Mpix':>5s} {'peaks':>6s} {'braggml ms':>10s} {'OM ms':>8s} {'OM/braggml':>10s} "
        f"{'median of rounds':>16s}"
    )
    for label, image, mask, maps in frames:
        finder = make_finder("peakfinder8")
        finder.find(image, mask, maps=maps)  # compiles on first use
        ours, theirs = [], []
        n = 0
        for _ in range(rounds):
            om = om_seconds([(label, image, mask, maps)])
            seconds, peaks = best_default_time(finder, image, mask, maps, repeats)
            n = len(peaks)
            ours.append(seconds)
            if om is not None:
                theirs.append(om[0])
        if theirs:
            ratios = np.array(theirs) / np.array(ours)
            om_cell = f"{min(theirs) * 1000:8.1f} {min(theirs) / min(ours):10.2f} {np.median(ratios):16.2f}"
        else:
            om_cell = f"{'-':>8s} {'-':>10s} {'-':>16s}"
        print(f"{label:24s} {image.size / 1e6:5.1f} {n:6d} {min(ours) * 1000:10.1f} {om_cell}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--synthetic-only", action="store_true")
    parser.add_argument("--peakfinder8", action="store_true", help="default peakfinder8 only, next to OM")
    parser.add_argument("--rounds", type=int, default=3, help="alternating OM/braggml rounds (--peakfinder8)")
    args = parser.parse_args(argv)
    if args.peakfinder8:
        compare_peakfinder8(args.repeats, real=not args.synthetic_only, rounds=args.rounds)
        return 0
    frames = [("synthetic 2048x2048", *synthetic_frame())]
    if not args.synthetic_only:
        try:
            from classical_data import REAL, cspad, rayonix, thaumatin

            if REAL.is_dir():
                for fr in (thaumatin(2), cspad(0), rayonix()):
                    frames.append((fr.name, fr.image, fr.mask, fr.maps))
        except ImportError as exc:  # fabio or h5py missing
            print(f"real frames skipped: {exc}")
    print(f"{'frame':22s} {'Mpix':>5s} " + " ".join(f"{n:>22s}" for n in FINDERS))
    for label, image, mask, maps in frames:
        cells = []
        for name in FINDERS:
            seconds, n = best_time(name, image, mask, maps, args.repeats)
            cells.append(f"{seconds * 1000:9.1f} ms {n:6d} pk")
        print(f"{label:22s} {image.size / 1e6:5.1f} " + " ".join(f"{c:>22s}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
