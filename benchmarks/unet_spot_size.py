"""How often the U-Net finds an isolated spot, by spot size and photon count, next to peakfinder8.

Frames of 256 x 256 photon-counting pixels (gain 1) with a flat Poisson background of ``--background``
photons per pixel carry a 5 x 5 grid of Gaussian spots 45 px apart, all of one size (sigma in pixels,
integrated over each pixel) and one number of photons, each placed at a random sub-pixel offset. Every
finder runs with its default settings (the U-Net with the model's own cut); a spot counts as found when one
of the finder's peaks matches it one-to-one within 1 px, and the peaks that match no spot are counted as
false peaks per frame (on 65 536 pixels). Both finders see the same frames. Sharp spots (sigma 0.25-0.35 px)
are those of small-pixel, low-mosaicity experiments; on them a finder must also tell a Bragg spot from a hot
pixel by the faint spill into the neighbouring pixels.

Crowding: 16 clusters of 3 x 3 spots each, the spots of a cluster ``pitch`` px apart (2.5-6 px, as the
spots of large unit cells or short camera lengths; 45 px is the isolated reference), clusters 55 px apart.
Matching as above, so that a cluster reported as one peak counts one spot, not nine.

Run: ``python benchmarks/unet_spot_size.py [--model PATH] [--finders unet peakfinder8] [--background 2.0 0.1]
[--repeats 3] [--seed 0] [--skip size crowding]``.
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
from scipy.special import erf

from braggml.evaluate.matching import match_frame
from braggml.finder import PeakFinder, make_finder

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


def render(
    rng: np.random.Generator, centres: np.ndarray, sigma_px: float, photons: float, background: float
) -> np.ndarray:
    """A Poisson frame of Gaussian spots of ``photons`` each at ``centres`` on a flat background."""
    expected = np.full((SIDE, SIDE), background)
    for row, col in centres:
        expected += photons * np.outer(pixel_fractions(row, sigma_px, SIDE), pixel_fractions(col, sigma_px, SIDE))
    return rng.poisson(expected).astype(np.int32)


def spot_grid(
    rng: np.random.Generator, sigma_px: float, photons: float, background: float
) -> tuple[np.ndarray, np.ndarray]:
    """One frame of the isolated-spot grid and the (row, col) of its spots."""
    centres = np.array([(30 + i * PITCH + rng.uniform(-0.5, 0.5), 30 + j * PITCH + rng.uniform(-0.5, 0.5))
                        for i in range(GRID) for j in range(GRID)])
    return render(rng, centres, sigma_px, photons, background), centres


def cluster_grid(
    rng: np.random.Generator, sigma_px: float, photons: float, background: float, pitch: float
) -> tuple[np.ndarray, np.ndarray]:
    """One frame of 4 x 4 clusters of 3 x 3 spots ``pitch`` apart (one spot each above 40 px)."""
    centres = np.array([
        (35 + ci * 55 + i * pitch + rng.uniform(-0.5, 0.5), 35 + cj * 55 + j * pitch + rng.uniform(-0.5, 0.5))
        for ci, cj, i, j in np.ndindex(4, 4, 3, 3)
        if pitch <= 40 or not (i or j)  # above 40 px, the isolated reference: one spot per cluster
    ])
    return render(rng, centres, sigma_px, photons, background), centres


def score(finder: PeakFinder, frames: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """Share of the spots found (one-to-one within 1 px) and false peaks per frame."""
    found = false = total = 0
    for image, centres in frames:
        peaks = finder.find(image)
        _, matched = match_frame(np.column_stack([peaks.row, peaks.col]), centres, 1.0)
        found += len(matched)
        false += len(peaks) - len(matched)
        total += len(centres)
    return found / total, false / len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="U-Net model file (default: the shipped one)")
    parser.add_argument("--background", type=float, nargs="+", default=[2.0, 0.1], help="photons per pixel")
    parser.add_argument("--repeats", type=int, default=3, help="frames per size and count (25 spots each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--finders", nargs="+", default=["unet", "peakfinder8"], choices=["unet", "peakfinder8"],
                        help="finders to score, each with its default settings")
    parser.add_argument("--skip", nargs="*", default=[], choices=["size", "crowding"])
    args = parser.parse_args()
    finders = {name: make_finder(name, model_path=args.model, device="cpu") if name == "unet" else make_finder(name)
               for name in args.finders}
    rng = np.random.default_rng(args.seed)
    if "unet" in finders:
        print(f"model {args.model or 'shipped'}, probability cut {finders['unet'].model.threshold}")
    names = " / ".join(finders)
    for background in [] if "size" in args.skip else args.background:
        counts = ", ".join(map(str, PHOTONS))
        print(f"background {background:g} photons/pixel; share of spots found ({names}) at {counts} photons;"
              " false peaks per frame")
        for sigma in SIGMAS_PX:
            cells, false = [], []
            for p in PHOTONS:
                frames = [spot_grid(rng, sigma, p, background) for _ in range(args.repeats)]
                scores = [score(f, frames) for f in finders.values()]
                cells.append("/".join(f"{found:4.2f}" for found, _ in scores))
                false.append([f for _, f in scores])
            mean_false = "/".join(f"{v:.1f}" for v in np.mean(false, axis=0))
            print(f"  sigma {sigma:4.2f} px: " + "  ".join(cells) + f"   false {mean_false}", flush=True)

    for background in [] if "crowding" in args.skip else args.background:
        pitches = ", ".join(f"{p:g}" for p in CLUSTER_PITCHES)
        print(f"background {background:g} photons/pixel; share of clustered spots found ({names}) at pitches"
              f" {pitches} px")
        for sigma, photons in itertools.product(CLUSTER_SIGMAS_PX, CLUSTER_PHOTONS):
            cells = []
            for pitch in CLUSTER_PITCHES:
                frames = [cluster_grid(rng, sigma, photons, background, pitch) for _ in range(args.repeats)]
                cells.append("/".join(f"{score(f, frames)[0]:4.2f}" for f in finders.values()))
            print(f"  sigma {sigma:4.2f} px, {photons:3d} photons: " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
