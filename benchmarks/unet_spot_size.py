"""How often the U-Net finds an isolated spot, by spot size and photon count.

Frames of 256 x 256 photon-counting pixels (gain 1) with a flat Poisson background of ``--background``
photons per pixel carry a 5 x 5 grid of Gaussian spots 45 px apart, all of one size (sigma in pixels,
integrated over each pixel) and one number of photons, each placed at a random sub-pixel offset. A spot
counts as found when the probability within one pixel of its centre exceeds the model's cut. Sharp spots
(sigma 0.25-0.35 px) are those of small-pixel, low-mosaicity experiments; on them a finder must also tell
a Bragg spot from a hot pixel by the faint spill into the neighbouring pixels.

Crowding: 16 clusters of 3 x 3 spots each, the spots of a cluster ``pitch`` px apart (2.5-6 px, as the
spots of large unit cells or short camera lengths; 45 px is the isolated reference), clusters 55 px apart.
Here a spot counts as found when one of the finder's peaks matches it one-to-one within 1 px, so that a
cluster reported as one peak counts one spot, not nine.

Run: ``python benchmarks/unet_spot_size.py [--model PATH] [--background 2.0 0.1] [--repeats 3] [--seed 0]
[--skip size crowding]``.
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
from scipy.special import erf

from braggml.evaluate.matching import match_frame
from braggml.ml.unet_finder import UNetFinder

SIGMAS_PX = (0.25, 0.35, 0.5, 0.8, 1.2)
PHOTONS = (10, 20, 40, 80, 160, 640)
SIDE = 256
GRID = 5
PITCH = 45
CLUSTER_PITCHES = (2.5, 3.0, 3.5, 4.5, 6.0, 45.0)
CLUSTER_SIGMAS_PX = (0.35, 0.8)
CLUSTER_PHOTONS = (30, 60, 200)


def pixel_fractions(centre: float, sigma_px: float, n: int) -> np.ndarray:
    """Share of a 1-D Gaussian of ``sigma_px`` centred at ``centre`` falling in each of ``n`` pixels."""
    edges = (np.arange(n + 1) - 0.5 - centre) / (np.sqrt(2.0) * sigma_px)
    return 0.5 * np.diff(erf(edges))


def found_fraction(
    finder: UNetFinder, rng: np.random.Generator, sigma_px: float, photons: float, background: float, repeats: int
) -> float:
    cut = finder.model.threshold
    hits = []
    for _ in range(repeats):
        expected = np.full((SIDE, SIDE), background)
        centres = []
        for i in range(GRID):
            for j in range(GRID):
                row, col = 30 + i * PITCH + rng.uniform(-0.5, 0.5), 30 + j * PITCH + rng.uniform(-0.5, 0.5)
                profile = np.outer(pixel_fractions(row, sigma_px, SIDE), pixel_fractions(col, sigma_px, SIDE))
                expected += photons * profile
                centres.append((int(round(row)), int(round(col))))
        image = rng.poisson(expected).astype(np.int32)
        prob, _ = finder.probability(image)
        hits += [prob[r - 1 : r + 2, c - 1 : c + 2].max() > cut for r, c in centres]
    return float(np.mean(hits))


def crowded_found_fraction(
    finder: UNetFinder, rng: np.random.Generator, sigma_px: float, photons: float, background: float,
    pitch: float, repeats: int,
) -> float:
    found = total = 0
    for _ in range(repeats):
        expected = np.full((SIDE, SIDE), background)
        centres = []
        for ci, cj, i, j in np.ndindex(4, 4, 3, 3):
            if pitch > 40 and (i or j):  # the isolated reference: one spot per cluster
                continue
            row = 35 + ci * 55 + i * pitch + rng.uniform(-0.5, 0.5)
            col = 35 + cj * 55 + j * pitch + rng.uniform(-0.5, 0.5)
            expected += photons * np.outer(pixel_fractions(row, sigma_px, SIDE), pixel_fractions(col, sigma_px, SIDE))
            centres.append((row, col))
        image = rng.poisson(expected).astype(np.int32)
        peaks = finder.find(image)
        _, matched = match_frame(np.column_stack([peaks.row, peaks.col]), np.array(centres), 1.0)
        found += len(matched)
        total += len(centres)
    return found / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="U-Net model file (default: the shipped one)")
    parser.add_argument("--background", type=float, nargs="+", default=[2.0, 0.1], help="photons per pixel")
    parser.add_argument("--repeats", type=int, default=3, help="frames per size and count (25 spots each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", nargs="*", default=[], choices=["size", "crowding"])
    args = parser.parse_args()
    finder = UNetFinder(model_path=args.model, device="cpu")
    rng = np.random.default_rng(args.seed)
    print(f"model {args.model or 'shipped'}, probability cut {finder.model.threshold}")
    for background in [] if "size" in args.skip else args.background:
        counts = ", ".join(map(str, PHOTONS))
        print(f"background {background:g} photons/pixel; share of spots found at {counts} photons")
        for sigma in SIGMAS_PX:
            row = [found_fraction(finder, rng, sigma, p, background, args.repeats) for p in PHOTONS]
            print(f"  sigma {sigma:4.2f} px: " + "  ".join(f"{v:4.2f}" for v in row), flush=True)

    for background in [] if "crowding" in args.skip else args.background:
        pitches = ", ".join(f"{p:g}" for p in CLUSTER_PITCHES)
        print(f"background {background:g} photons/pixel; share of clustered spots found at pitches {pitches} px")
        for sigma, photons in itertools.product(CLUSTER_SIGMAS_PX, CLUSTER_PHOTONS):
            row = [crowded_found_fraction(finder, rng, sigma, photons, background, p, args.repeats)
                   for p in CLUSTER_PITCHES]
            print(f"  sigma {sigma:4.2f} px, {photons:3d} photons: " + "  ".join(f"{v:4.2f}" for v in row), flush=True)


if __name__ == "__main__":
    main()
