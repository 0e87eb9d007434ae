"""Time per frame of the classical finders with default settings, on one core.

Prints the best of several runs for each finder on a synthetic 4-Mpixel frame (2048 x 2048, Poisson
background with 500 spots) and on the real frames of ``../shared/data/real`` when present::

    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/classical_speed.py [--repeats 5]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--synthetic-only", action="store_true")
    args = parser.parse_args(argv)
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
