"""Speed and memory of the frame simulator, per preset, on one CPU core.

Measures the time to simulate one frame (physics, noise and truth), the time to stream frames into an HDF5
file (compression included), and the peak resident memory while writing many frames, which must stay flat
(a few frames) however many frames are written.

Run: ``python benchmarks/simulate_speed.py [--frames N] [--presets jungfrau4m pilatus6m ...]``
"""

from __future__ import annotations

import argparse
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from braggml.simulate import Simulator, get_preset, simulate_to_file  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_preset(name: str, n_frames: int, out_dir: Path) -> dict[str, float]:
    config = get_preset(name)
    t0 = time.perf_counter()
    sim = Simulator(config, seed=1)
    sim.frame(0)  # builds the reflection table
    setup_s = time.perf_counter() - t0
    times = []
    spots = []
    for k in range(1, 11):
        t = time.perf_counter()
        frame = sim.frame(k)
        times.append(time.perf_counter() - t)
        spots.append(frame.n_spots)
    del frame
    path = out_dir / f"speed_{name}.h5"
    rss_before = peak_rss_mb()
    t = time.perf_counter()
    simulate_to_file(path, n_frames, config, seed=1)
    write_s = time.perf_counter() - t
    rss_after = peak_rss_mb()
    size_mb = path.stat().st_size / 1e6
    path.unlink()
    rows, cols = config.detector.shape
    return {
        "megapixels": rows * cols / 1e6,
        "setup_s": setup_s,
        "frame_s_median": float(np.median(times)),
        "frame_s_max": float(np.max(times)),
        "frames_per_s": 1.0 / float(np.median(times)),
        "written_frames_per_s": n_frames / write_s,
        "mb_per_frame": size_mb / n_frames,
        "peak_rss_mb_before_write": rss_before,
        "peak_rss_mb_after_write": rss_after,
        "mean_spots": float(np.mean(spots)),
    }


def streaming_rss_mb(preset: str, n_frames: int, out_dir: Path) -> float:
    """Peak resident memory (MB) of a fresh process that streams ``n_frames`` frames into a file."""
    code = (
        "import resource, sys; from braggml.simulate import get_preset, simulate_to_file; "
        f"simulate_to_file(sys.argv[1], {n_frames}, get_preset({preset!r}), seed=2); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)"
    )
    path = out_dir / f"rss_{preset}_{n_frames}.h5"
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    path.unlink()
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40, help="frames streamed to a file per preset")
    parser.add_argument("--presets", nargs="+", default=["jungfrau4m", "pilatus6m", "eiger4m"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        # Peak memory first, in fresh processes (a child inherits the parent's high-water mark).
        small = streaming_rss_mb("jungfrau4m", 5, Path(tmp))
        large = streaming_rss_mb("jungfrau4m", 4 * args.frames, Path(tmp))
        rows = [(name, bench_preset(name, args.frames, Path(tmp))) for name in args.presets]
    header = (
        f"{'preset':<11} {'Mpix':>5} {'frame s':>8} {'max s':>6} {'frames/s':>8} {'written/s':>9} "
        f"{'MB/frame':>8} {'RSS MB before/after':>20} {'spots':>6}"
    )
    print(header)
    print("-" * len(header))
    for name, r in rows:
        print(
            f"{name:<11} {r['megapixels']:>5.2f} {r['frame_s_median']:>8.3f} {r['frame_s_max']:>6.3f} "
            f"{r['frames_per_s']:>8.2f} {r['written_frames_per_s']:>9.2f} {r['mb_per_frame']:>8.2f} "
            f"{r['peak_rss_mb_before_write']:>9.0f}/{r['peak_rss_mb_after_write']:<10.0f} {r['mean_spots']:>6.0f}"
        )
    print(f"({args.frames} frames written per preset; one CPU core; frame s = physics + noise + truth, no I/O)")
    print(
        f"peak RSS streaming jungfrau4m frames to a file: {small:.0f} MB for 5 frames, "
        f"{large:.0f} MB for {4 * args.frames} frames"
    )


if __name__ == "__main__":
    main()
