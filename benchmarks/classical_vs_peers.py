"""braggml's classical finders side by side with OM's peakfinder8 and DIALS' dispersion finders.

Runs each peer in its own environment on the same real frames and parameters, then prints the time per
frame and the fraction of each side's peaks that the other side has within 1 pixel. DIALS runs on four thaumatin
grid stills, then on a Pilatus 12M frame (24 panels to DIALS, placed on the image by their offsets) and a
Pilatus 6M frame of ``pilatus_misc/``::

    python benchmarks/classical_vs_peers.py            # OM and DIALS
    python benchmarks/classical_vs_peers.py --skip-dials

OM needs ``benchmarks/.venv-om`` (``python -m venv benchmarks/.venv-om && benchmarks/.venv-om/bin/pip
install ondamonitor "numpy<2"``); DIALS needs the Debian package ``dials`` (``/usr/bin/python3``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parent))

from classical_data import REAL, RealFrame, cspad, pilatus_misc, rayonix, thaumatin  # noqa: E402

from braggml.finder import make_finder  # noqa: E402
from braggml.geometry import PixelMaps  # noqa: E402

HERE = Path(__file__).resolve().parent
OM_PYTHON = HERE / ".venv-om" / "bin" / "python"
DIALS_PYTHON = Path("/usr/bin/python3")

#: Parameters given to OM.
OM_PARAMS = dict(
    adc_threshold=0.0,
    minimum_snr=5.0,
    min_pixel_count=2,
    max_pixel_count=200,
    local_bg_radius=3,
    max_num_peaks=2048,
)

#: braggml settings that reproduce OM's algorithm with OM_PARAMS.
OM_COMPATIBLE = dict(
    adc_threshold=0.0,
    minimum_snr=5.0,
    min_pixel_count=2,
    max_pixel_count=200,
    local_bg_radius=3,
    max_num_peaks=2048,
    per_panel_background=False,
    background_clip_sigma=None,
    robust_background_start=False,
    clip_iterations=5,
    gain=0.0,
    pixel_snr=None,
    min_pixel_photons=0.0,
    reject_powder_rings=False,
    ice_rings="off",
    masked_peaks="keep",
)

#: DIALS' dispersion parameters (its defaults, spelled out) and the matching braggml settings.
DIALS_PARAMS = [
    "spotfinder.threshold.dispersion.gain=1",
    "spotfinder.threshold.dispersion.kernel_size=3,3",
    "spotfinder.threshold.dispersion.sigma_background=6",
    "spotfinder.threshold.dispersion.sigma_strong=3",
    "spotfinder.threshold.dispersion.min_local=2",
    "spotfinder.threshold.dispersion.global_threshold=0",
    "spotfinder.filter.min_spot_size=3",
    "spotfinder.filter.max_spot_size=1000",
]
DIALS_COMPATIBLE = dict(
    gain=1.0,
    kernel_size=3,
    sigma_background=6.0,
    sigma_strong=3.0,
    min_local=2,
    global_threshold=0.0,
    min_spot_size=3,
    max_spot_size=1000,
    connectivity=4,
    reject_powder_rings=False,
    ice_rings="off",
    masked_peaks="keep",
    significance_snr=0.0,
)


def matched_fraction(a: np.ndarray, b: np.ndarray, tol: float = 1.0) -> float:
    """Fraction of the points ``a`` (N, 2) with a point of ``b`` within ``tol``."""
    if len(a) == 0:
        return float("nan") if len(b) == 0 else 0.0
    if len(b) == 0:
        return 0.0
    dist, _ = cKDTree(b).query(a, k=1)
    return float(np.mean(dist <= tol))


def time_braggml(name: str, frame: RealFrame, repeats: int = 3, **params: object):
    finder = make_finder(name, **params)
    finder.find(frame.image, frame.mask, maps=frame.maps)  # compile and warm up
    best = np.inf
    peaks = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        peaks = finder.find(frame.image, frame.mask, maps=frame.maps)
        best = min(best, time.perf_counter() - t0)
    return peaks, best


def run_om(frames: list[RealFrame]) -> list[tuple[np.ndarray, float]]:
    """OM peakfinder8 on each frame (grouped by shape); per frame: (N, 2) row/col array and seconds."""
    results: list[tuple[np.ndarray, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, fr in enumerate(frames):
            src, dst = Path(tmp) / f"in{k}.npz", Path(tmp) / f"out{k}.npz"
            use = (~fr.mask) & (fr.maps.panel_id >= 0)
            np.savez(
                src,
                data=fr.image[None].astype(np.float32),
                mask=use[None].astype(np.int8),
                radius=fr.maps.radius_px.astype(np.float32),
                params=json.dumps({**OM_PARAMS, "repeats": 3}),
            )
            subprocess.run([str(OM_PYTHON), str(HERE / "peers" / "om_peakfinder8.py"), str(src), str(dst)], check=True)
            out = np.load(dst)
            results.append((np.column_stack([out["row"], out["col"]]), float(out["seconds"][0])))
    return results


def compare_om(frames: list[RealFrame]) -> None:
    print("\n== peakfinder8: braggml vs OM (ondamonitor, compiled), one core")
    print(f"OM parameters: {OM_PARAMS}")
    om = run_om(frames)
    print(
        f"{'frame':18s} {'Mpix':>5s} {'OM n':>6s} {'bm n':>6s} {'OM s':>7s} {'bm s':>7s} {'ratio':>6s} "
        f"{'OM in bm':>8s} {'bm in OM':>8s} | {'default n':>9s} {'def s':>6s} {'OM in def':>9s}"
    )
    agree = []
    for fr, (om_xy, om_s) in zip(frames, om):
        # OM sees each frame as one panel (its ASIC grid must be regular): give braggml the same view
        one_panel = PixelMaps(
            panel_id=np.where(fr.maps.panel_id >= 0, 0, -1).astype(np.int32),
            radius_px=fr.maps.radius_px,
            mask=fr.maps.mask,
            resolution_a=fr.maps.resolution_a,
        )
        peaks, bm_s = time_braggml("peakfinder8", replace(fr, maps=one_panel), **OM_COMPATIBLE)
        bm_xy = np.column_stack([peaks.row, peaks.col])
        default, def_s = time_braggml("peakfinder8", fr)
        def_xy = np.column_stack([default.row, default.col])
        a, b = matched_fraction(om_xy, bm_xy), matched_fraction(bm_xy, om_xy)
        agree.append((len(om_xy), a, len(bm_xy), b))
        print(
            f"{fr.name:18s} {fr.image.size / 1e6:5.1f} {len(om_xy):6d} {len(bm_xy):6d} {om_s:7.3f} "
            f"{bm_s:7.3f} {om_s / bm_s:6.2f} {a:8.3f} {b:8.3f} | {len(def_xy):9d} {def_s:6.3f} "
            f"{matched_fraction(om_xy, def_xy):9.3f}"
        )
    n_om = sum(x[0] for x in agree)
    n_bm = sum(x[2] for x in agree)
    print(
        f"overall: {sum(x[0] * x[1] for x in agree) / max(n_om, 1):.3f} of OM's {n_om} peaks matched, "
        f"{sum(x[2] * x[3] for x in agree) / max(n_bm, 1):.3f} of braggml's {n_bm}"
    )


def run_dials(files: list[Path], algorithm: str, workdir: Path) -> tuple[dict, float]:
    out = workdir / "out.npz"
    cmd = [
        str(DIALS_PYTHON),
        str(HERE / "peers" / "dials_find_spots.py"),
        str(out),
        str(workdir),
        algorithm,
        *DIALS_PARAMS,
        "--",
        *map(str, files),
    ]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    data = np.load(out)
    return {k: data[k] for k in data.files}, float(data["seconds"])


def compare_dials(indices: list[int]) -> None:
    files = [REAL / "thaumatin_grid" / f"thau_3_2_{i:04d}.cbf.bz2" for i in indices]
    frames = [thaumatin(i) for i in indices]
    print("\n== dispersion / dispersion_extended: braggml vs DIALS 3.12, one core (Pilatus 6M thaumatin)")
    print(f"DIALS parameters: {' '.join(DIALS_PARAMS)}")
    for algorithm in ("dispersion", "dispersion_extended"):
        with tempfile.TemporaryDirectory() as tmp:
            one, t1 = run_dials(files[:1], algorithm, Path(tmp) / "one")
            many, tn = run_dials(files, algorithm, Path(tmp) / "many")
        per_frame = (tn - t1) / max(len(files) - 1, 1)
        print(
            f"-- {algorithm}: DIALS {t1:.2f} s for 1 frame, {tn:.2f} s for {len(files)} "
            f"(about {per_frame:.3f} s per extra frame; start-up about {t1 - per_frame:.1f} s)"
        )
        print(
            f"{'frame':18s} {'DIALS n':>7s} {'bm n':>6s} {'bm s':>7s} {'DIALS in bm':>11s} {'bm in DIALS':>11s}"
            f" | {'default n':>9s} {'DIALS in def':>12s}"
        )
        tot = []
        for k, fr in enumerate(frames):
            sel = many["frame"] == k
            d_xy = np.column_stack([many["row"][sel], many["col"][sel]])
            peaks, bm_s = time_braggml(algorithm, fr, **DIALS_COMPATIBLE)
            bm_xy = np.column_stack([peaks.row, peaks.col])
            default, _ = time_braggml(algorithm, fr, repeats=1)
            def_xy = np.column_stack([default.row, default.col])
            a, b = matched_fraction(d_xy, bm_xy), matched_fraction(bm_xy, d_xy)
            tot.append((len(d_xy), a, len(bm_xy), b, bm_s))
            print(
                f"{fr.name:18s} {len(d_xy):7d} {len(bm_xy):6d} {bm_s:7.3f} {a:11.3f} {b:11.3f} | "
                f"{len(def_xy):9d} {matched_fraction(d_xy, def_xy):12.3f}"
            )
        n_d = sum(x[0] for x in tot)
        n_b = sum(x[2] for x in tot)
        print(
            f"overall: {sum(x[0] * x[1] for x in tot) / max(n_d, 1):.3f} of DIALS' {n_d} spots matched, "
            f"{sum(x[2] * x[3] for x in tot) / max(n_b, 1):.3f} of braggml's {n_b}; braggml "
            f"{np.mean([x[4] for x in tot]):.3f} s per frame vs DIALS about {per_frame:.3f} s"
        )


def compare_dials_detectors() -> None:
    """Each algorithm on one frame of other Pilatus detectors, DIALS run on each file alone; the Pilatus 12M is 24
    panels to DIALS, whose spots are placed on the image by their panels' offsets."""
    names = ["DLS_I23_P12M_thau_00001", "DLS_I03_smargon_0001"]
    print("\n== dispersion / dispersion_extended: braggml vs DIALS 3.12 on other detectors (one frame each)")
    print(f"{'frame':24s} {'algorithm':20s} {'DIALS n':>7s} {'bm n':>6s} {'DIALS in bm':>11s} {'bm in DIALS':>11s}"
          f" | {'default n':>9s} {'DIALS in def':>12s}")
    for name in names:
        fr = pilatus_misc(name)
        for algorithm in ("dispersion", "dispersion_extended"):
            with tempfile.TemporaryDirectory() as tmp:
                theirs, _ = run_dials([REAL / "pilatus_misc" / f"{name}.cbf.gz"], algorithm, Path(tmp))
            d_xy = np.column_stack([theirs["row"], theirs["col"]])
            peaks, _ = time_braggml(algorithm, fr, repeats=1, **DIALS_COMPATIBLE)
            bm_xy = np.column_stack([peaks.row, peaks.col])
            default, _ = time_braggml(algorithm, fr, repeats=1)
            def_xy = np.column_stack([default.row, default.col])
            print(
                f"{name:24s} {algorithm:20s} {len(d_xy):7d} {len(bm_xy):6d} {matched_fraction(d_xy, bm_xy):11.3f} "
                f"{matched_fraction(bm_xy, d_xy):11.3f} | {len(def_xy):9d} {matched_fraction(d_xy, def_xy):12.3f}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-om", action="store_true")
    parser.add_argument("--skip-dials", action="store_true")
    args = parser.parse_args(argv)
    if not args.skip_om:
        if not OM_PYTHON.exists():
            print(f"OM environment missing: {OM_PYTHON}")
        else:
            frames = [thaumatin(2), thaumatin(8), thaumatin(14), thaumatin(17), cspad(0), cspad(1), rayonix()]
            compare_om(frames)
    if not args.skip_dials:
        if not DIALS_PYTHON.exists() or subprocess.run(["which", "dials.find_spots"], capture_output=True).returncode:
            print("DIALS not installed (apt-get install dials)")
        else:
            compare_dials([2, 8, 14, 17])
            compare_dials_detectors()
    return 0


if __name__ == "__main__":
    sys.exit(main())
