"""Frames/s of ``find --finder peakfinder8`` with 1 and N local worker processes and a Dask LocalCluster.

Writes a synthetic run (CXI files of Poisson frames with Gaussian spots, gzip-compressed one frame per HDF5
chunk, as detectors write them) and times :func:`braggml.parallel.run_find` on it with each backend; every
backend must give the same peaks as one worker. Figures per backend:

- *wall* frames/s: the whole call, worker start-up included;
- *steady* frames/s: frames finished between the first and the last chunk over that time, the rate a long run
  approaches. Efficiency is the N-worker rate over N times the one-worker rate;
- *CPU efficiency*: the one-worker CPU time per frame over the N-worker run's (the workers' median per frame
  plus the gathering process's share between the first and the last chunk). It does not depend on what else
  the machine runs; wall efficiency approaches it when N cores are free;
- *cores used*: the finder's CPU seconds per second of the steady phase. Near 1 with N workers means other
  processes held the remaining cores, so no wall-clock speed-up was possible.

Usage::

    python benchmarks/parallel_scaling.py                   # 2 workers, 160 frames of 1024 x 1024
    python benchmarks/parallel_scaling.py --workers 2 4 8 --frames 400
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from braggml.parallel import ExecutionConfig, run_find
from braggml.pipeline import FindJob, PreparedRun

OUT = Path(__file__).resolve().parent / "out"


def write_run(folder: Path, n_frames: int, side: int, n_files: int = 2, seed: int = 0) -> list[Path]:
    """``n_files`` CXI files holding ``n_frames`` frames of ``side x side`` pixels, 30 spots each."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices((side, side))
    paths = []
    per_file = [n_frames // n_files + (i < n_frames % n_files) for i in range(n_files)]
    for i, n in enumerate(per_file):
        path = folder / f"bench_{i}.cxi"
        with h5py.File(path, "w") as f:
            dset = f.create_dataset(
                "entry_1/data_1/data",
                shape=(n, side, side),
                dtype=np.uint16,
                chunks=(1, side, side),
                compression="gzip",
                compression_opts=1,
            )
            for k in range(n):
                image = np.full((side, side), 15.0)
                for r, c in rng.uniform(20, side - 20, size=(30, 2)):
                    lo_r, lo_c = int(r) - 6, int(c) - 6
                    sub = (slice(lo_r, lo_r + 13), slice(lo_c, lo_c + 13))
                    image[sub] += 600.0 * np.exp(-((rows[sub] - r) ** 2 + (cols[sub] - c) ** 2) / 2.0)
                dset[k] = rng.poisson(image).astype(np.uint16)
        paths.append(path)
    return paths


def time_backend(run: PreparedRun, config: ExecutionConfig) -> dict:
    stamps: list[tuple[float, int]] = []
    cpu_per_frame: list[float] = []

    def on_chunk(r) -> None:
        stamps.append((time.perf_counter(), r.stop - r.start, time.process_time()))
        cpu_per_frame.append(r.cpu_seconds / (r.stop - r.start))

    t0, cpu0 = time.perf_counter(), time.process_time()
    outcome = run_find(run, config, on_chunk=on_chunk)
    wall = time.perf_counter() - t0
    parent_cpu = time.process_time() - cpu0
    serial = config.workers == 1 and config.scheduler == "local"
    steady = parent_steady = float("nan")
    if len(stamps) > 2:
        frames_after_first = sum(n for _, n, _ in stamps[1:])
        steady = frames_after_first / (stamps[-1][0] - stamps[0][0])
        parent_steady = (stamps[-1][2] - stamps[0][2]) / frames_after_first
    return {
        "frames": outcome.summary.n_frames,
        "peaks": outcome.summary.n_peaks,
        "wall_s": wall,
        "wall_fps": outcome.summary.n_frames / wall,
        "steady_fps": steady,
        # CPU per frame: in the finder (median over chunks) plus the gathering process's share
        "worker_cpu_ms_per_frame": 1000 * float(np.median(cpu_per_frame)),
        "parent_cpu_ms_per_frame": 0.0 if serial else 1000 * parent_steady,
        "parent_cpu_s_total": parent_cpu,
        "peaks_list": outcome.peaks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=160)
    parser.add_argument("--side", type=int, default=1024, help="frame side (pixels)")
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--chunk-frames", type=int, default=None, help="frames per chunk (default: automatic)")
    parser.add_argument("--no-dask", action="store_true")
    parser.add_argument("--json", type=Path, default=OUT / "parallel_scaling.json")
    args = parser.parse_args()

    load_before = os.getloadavg()
    print(f"load average before: {load_before[0]:.2f} on {os.cpu_count()} CPUs (other processes skew the rates)")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        files = write_run(Path(tmp), args.frames, args.side)
        seconds = time.perf_counter() - t
        print(f"wrote {args.frames} frames of {args.side}x{args.side} in {len(files)} files ({seconds:.1f} s)")
        job = FindJob(inputs=tuple(map(str, files)), finder="peakfinder8")
        run = PreparedRun(job, warn_without_geometry=False)
        run.run(0, 1)  # compile / load the numba kernels in this process
        results: dict[str, dict] = {}
        results["local x1"] = time_backend(run, ExecutionConfig(workers=1, chunk_frames=args.chunk_frames))
        for n in args.workers:
            results[f"local x{n}"] = time_backend(run, ExecutionConfig(workers=n, chunk_frames=args.chunk_frames))
            if not args.no_dask:
                from braggml.parallel.dask_backend import DaskConfig

                config = ExecutionConfig(workers=n, scheduler="dask", chunk_frames=args.chunk_frames, dask=DaskConfig())
                results[f"dask LocalCluster x{n}"] = time_backend(run, config)
    reference = results["local x1"]["peaks_list"]
    base_wall, base_steady = results["local x1"]["wall_fps"], results["local x1"]["steady_fps"]
    base_cpu = results["local x1"]["worker_cpu_ms_per_frame"]
    print(
        f"\n{'backend':24s} {'frames/s wall':>14s} {'frames/s steady':>16s} {'eff. wall':>10s} {'eff. steady':>12s}"
        f" {'CPU ms/frame':>13s} {'eff. CPU':>9s} {'cores used':>11s}"
    )
    table = []
    for name, r in results.items():
        n = int(name.rsplit("x", 1)[1])
        same = r["peaks_list"].equals(reference) and r["peaks_list"].frames == reference.frames
        if not same:
            raise SystemExit(f"{name}: peaks differ from one worker")
        eff_wall = r["wall_fps"] / (n * base_wall)
        eff_steady = r["steady_fps"] / (n * base_steady)
        cpu = r["worker_cpu_ms_per_frame"] + r["parent_cpu_ms_per_frame"]
        eff_cpu = base_cpu / cpu
        cores = r["steady_fps"] * r["worker_cpu_ms_per_frame"] / 1000.0
        print(
            f"{name:24s} {r['wall_fps']:14.2f} {r['steady_fps']:16.2f} {eff_wall:10.0%} {eff_steady:12.0%}"
            f" {cpu:13.1f} {eff_cpu:9.0%} {cores:11.2f}"
        )
        table.append(
            {k: v for k, v in r.items() if k != "peaks_list"}
            | {
                "backend": name,
                "workers": n,
                "efficiency_wall": eff_wall,
                "efficiency_steady": eff_steady,
                "efficiency_cpu": eff_cpu,
                "cores_used": cores,
            }
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "frames": args.frames,
        "side": args.side,
        "chunk_frames": args.chunk_frames,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    args.json.write_text(json.dumps({"setup": info, "results": table}, indent=1))
    print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
