"""The learned finders against peakfinder8 on weak-spot simulated frames, and CNN inference speed.

Frames: the "test" preset (256 x 256, two modules, integrating detector) with weak crystals
(``crystal.strength_range_photons`` lowered) and a stronger background, one run seed. Frames
``0 .. n_train-1`` train, the next ``n_val`` validate (CNN early stopping and threshold, SVM calibration),
the next ``n_test`` are the held-out test set. Truth: observable spots with expected SNR >= ``--truth-snr``.

peakfinder8 gets its best parameters by grid search on the training frames (F1 against the same truth);
the CNN and SVM are trained on the training frames' candidate patches. All three are scored on the test frames
with :func:`braggml.evaluate.metrics.evaluate_peaks` (one-to-one matching within 2 px).

Speed: candidates + CNN on one Jungfrau-4M-like frame (4.2 Mpixel) with torch limited to one thread.

Run: ``python benchmarks/ml_vs_peakfinder8.py [--small] [--out results.json]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

from braggml.evaluate.metrics import evaluate_peaks
from braggml.finder import make_finder
from braggml.ml import cnn, svm
from braggml.ml.finders import CNNFinder, SVMFinder
from braggml.ml.patches import (
    CandidateConfig,
    PatchConfig,
    PatchSet,
    candidate_finder,
    candidate_patches,
    label_candidates,
)
from braggml.peaks import PeakList
from braggml.simulate import Simulator, get_preset
from braggml.simulate.config import apply_overrides

SEED = 2026
WEAK = {
    "crystal": {"strength_range_photons": [20.0, 400.0]},
    "background": {"air_photons": 4.0, "water_photons": 3.0},
}
PF8_GRID = {
    "minimum_snr": [3.0, 3.5, 4.0, 5.0, 6.0, 8.0],
    "min_pixel_count": [1, 2, 3, 4],
    "local_bg_radius": [2, 3, 4],
}


def truth_of(frame, min_snr: float) -> PeakList:
    s = frame.spots
    keep = s["observable"] & (s["snr"] >= min_snr)
    return PeakList.from_columns(n_frames=1, row=s["row"][keep], col=s["col"][keep], snr=s["snr"][keep])


def run_finder(finder, frames, maps) -> PeakList:
    return PeakList.concatenate([finder.find(f.image, maps.mask, maps=maps) for f in frames])


def patch_set(frames, truths, maps, cand_cfg: CandidateConfig, patch_cfg: PatchConfig, offset: int) -> PatchSet:
    finder = candidate_finder(cand_cfg)
    parts = []
    for k, (f, t) in enumerate(zip(frames, truths)):
        cands, patches = candidate_patches(finder, f.image, maps.mask, maps=maps, config=patch_cfg)
        lab = label_candidates(np.column_stack([cands.row, cands.col]), np.column_stack([t.row, t.col]))
        parts.append((patches, lab, np.full(len(cands), offset + k), cands))
    n = len(frames)
    return PatchSet(
        patches=np.concatenate([p[0] for p in parts]),
        labels=np.concatenate([p[1] for p in parts]),
        frame=np.concatenate([p[2] for p in parts]).astype(np.int64),
        run=np.zeros(sum(len(p[1]) for p in parts), np.int64),
        row=np.concatenate([p[3].row for p in parts]),
        col=np.concatenate([p[3].col for p in parts]),
        snr=np.concatenate([p[3].snr for p in parts]),
        n_frames=n,
        frames_used=np.arange(offset, offset + n, dtype=np.int64),
        truth=PeakList.concatenate(truths),
        files=("simulated",),
        patch_config=patch_cfg,
        candidate_config=cand_cfg,
    )


def scores(ev) -> dict[str, float]:
    return {
        "precision": ev.precision,
        "recall": ev.recall,
        "f1": ev.f1,
        "n_found": ev.n_found,
        "n_true": ev.n_true,
        "centroid_median_px": ev.centroid_median_px,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="fewer frames and epochs (a few minutes on 2 cores)")
    ap.add_argument("--truth-snr", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--channels", type=int, nargs="+", help="CNN stage widths (default: CNNConfig's)")
    ap.add_argument("--convs", type=int, help="CNN convolutions per stage (default: CNNConfig's)")
    ap.add_argument("--out", type=Path, help="write the figures as JSON")
    args = ap.parse_args()
    n_train, n_val, n_test, epochs = (16, 4, 10, 15) if args.small else (40, 10, 30, 30)
    torch.set_num_threads(args.threads)
    config = apply_overrides(get_preset("test"), WEAK)
    sim = Simulator(config, seed=SEED)
    maps = sim.layout.pixel_maps(sim.wavelength_a)
    t0 = time.perf_counter()
    frames = [sim.frame(k) for k in range(n_train + n_val + n_test)]
    print(f"simulated {len(frames)} weak-spot frames in {time.perf_counter() - t0:.1f} s")
    truths = [truth_of(f, args.truth_snr) for f in frames]
    train_f, val_f, test_f = frames[:n_train], frames[n_train : n_train + n_val], frames[n_train + n_val :]
    train_t, val_t, test_t = truths[:n_train], truths[n_train : n_train + n_val], truths[n_train + n_val :]
    truth_train, truth_test = PeakList.concatenate(train_t), PeakList.concatenate(test_t)
    print(
        f"true spots (SNR >= {args.truth_snr:g}): {len(truth_train)} in training, {len(truth_test)} in test "
        f"frames ({len(truth_test) / n_test:.1f} per frame)"
    )
    results: dict[str, object] = {
        "frames": {
            "preset": "test",
            "overrides": WEAK,
            "seed": SEED,
            "n_train": n_train,
            "n_val": n_val,
            "n_test": n_test,
            "truth_min_snr": args.truth_snr,
            "shape": list(frames[0].image.shape),
        },
    }

    # peakfinder8, grid-searched on the training frames
    t0 = time.perf_counter()
    best = None
    for values in itertools.product(*PF8_GRID.values()):
        params = dict(zip(PF8_GRID, values))
        ev = evaluate_peaks(run_finder(make_finder("peakfinder8", **params), train_f, maps), truth_train)
        if best is None or ev.f1 > best[0]:
            best = (ev.f1, params)
    assert best is not None
    pf8 = make_finder("peakfinder8", **best[1])
    ev_pf8 = evaluate_peaks(run_finder(pf8, test_f, maps), truth_test)
    ev_pf8_default = evaluate_peaks(run_finder(make_finder("peakfinder8"), test_f, maps), truth_test)
    print(
        f"peakfinder8 grid search ({np.prod([len(v) for v in PF8_GRID.values()])} settings) "
        f"{time.perf_counter() - t0:.1f} s: best {best[1]} (training F1 {best[0]:.4f})"
    )
    results["peakfinder8"] = {
        "params": best[1],
        "train_f1": best[0],
        "test": scores(ev_pf8),
        "test_defaults": scores(ev_pf8_default),
    }

    # CNN and SVM on the candidates' patches
    cand_cfg, patch_cfg = CandidateConfig(), PatchConfig()
    t0 = time.perf_counter()
    train_ps = patch_set(train_f, train_t, maps, cand_cfg, patch_cfg, 0)
    val_ps = patch_set(val_f, val_t, maps, cand_cfg, patch_cfg, n_train)
    print(f"patches: {train_ps!r}; {val_ps!r} ({time.perf_counter() - t0:.1f} s)")
    t0 = time.perf_counter()
    arch = {k: v for k, v in (("channels", args.channels), ("convs_per_stage", args.convs)) if v}
    model = cnn.train_cnn(
        train_ps,
        val_ps,
        model_config=cnn.CNNConfig(**arch),
        config=cnn.TrainConfig(epochs=epochs, seed=0, device="cpu"),
        on_epoch=lambda r: print(f"  epoch {r.epoch:2d} loss {r.train_loss:.4f} val F1 {r.val_f1:.4f}"),
    )
    cnn_train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    svm_model = svm.train_svm(train_ps, val_ps, config=svm.SVMConfig(cv_folds=3, max_train_samples=4000))
    svm_train_s = time.perf_counter() - t0
    out_dir = Path(args.out).parent if args.out else Path("/tmp")
    out_dir.mkdir(parents=True, exist_ok=True)
    cnn_path = model.save(out_dir / "bench_cnn.safetensors")
    svm_path = svm_model.save(out_dir / "bench_svm.safetensors")
    cnn_finder = CNNFinder(model_path=str(cnn_path), device="cpu")
    svm_finder = SVMFinder(model_path=str(svm_path))
    ev_cnn = evaluate_peaks(run_finder(cnn_finder, test_f, maps), truth_test)
    ev_svm = evaluate_peaks(run_finder(svm_finder, test_f, maps), truth_test)
    ev_cand = evaluate_peaks(run_finder(candidate_finder(cand_cfg), test_f, maps), truth_test)
    results["cnn"] = {
        "test": scores(ev_cnn),
        "threshold": model.threshold,
        "train_seconds": cnn_train_s,
        "epochs_run": len(model.history),
    }
    results["svm"] = {
        "test": scores(ev_svm),
        "threshold": svm_model.threshold,
        "train_seconds": svm_train_s,
        "chosen": svm_model.info["best"],
    }
    results["candidates"] = {"test": scores(ev_cand)}

    print("\nheld-out test frames, one-to-one matching within 2 px:")
    print("| finder | precision | recall | F1 | found | true |")
    print("|---|---|---|---|---|---|")
    for name, ev in (
        ("peakfinder8 (grid-searched)", ev_pf8),
        ("peakfinder8 (defaults)", ev_pf8_default),
        ("candidates (pf8 high recall)", ev_cand),
        ("cnn", ev_cnn),
        ("svm", ev_svm),
    ):
        print(f"| {name} | {ev.precision:.4f} | {ev.recall:.4f} | {ev.f1:.4f} | {ev.n_found} | {ev.n_true} |")

    if not args.skip_speed:
        torch.set_num_threads(1)
        big = Simulator(get_preset("jungfrau4m"), seed=SEED)
        big_maps = big.layout.pixel_maps(big.wavelength_a)
        frame = big.frame(0)
        for k in range(1, 10):
            if frame.info["hit"]:
                break
            frame = big.frame(k)
        image = frame.image
        cnn_finder.find(image, big_maps.mask, maps=big_maps)  # warm-up (numba, torch)
        timing: dict[str, float] = {}
        reps = 3
        t0 = time.process_time()
        for _ in range(reps):
            cands, patches = candidate_patches(
                cnn_finder.candidates, image, big_maps.mask, maps=big_maps, config=model.patch_config
            )
        timing["candidates_and_patches_s"] = (time.process_time() - t0) / reps
        t0 = time.process_time()
        for _ in range(reps):
            model.scores(patches)
        timing["cnn_s"] = (time.process_time() - t0) / reps
        t0 = time.process_time()
        for _ in range(reps):
            peaks = cnn_finder.find(image, big_maps.mask, maps=big_maps)
        timing["cnn_finder_total_s"] = (time.process_time() - t0) / reps
        t0 = time.process_time()
        for _ in range(reps):
            svm_finder.find(image, big_maps.mask, maps=big_maps)
        timing["svm_finder_total_s"] = (time.process_time() - t0) / reps
        t0 = time.process_time()
        for _ in range(reps):
            make_finder("peakfinder8").find(image, big_maps.mask, maps=big_maps)
        timing["peakfinder8_s"] = (time.process_time() - t0) / reps
        timing["n_candidates"] = len(cands)
        timing["n_peaks"] = len(peaks)
        timing["pixels"] = int(image.size)
        results["speed_4mpix_one_thread_cpu_seconds"] = timing
        # the same with candidates at minimum_snr 4 (fewer noise candidates on this detector)
        strict = CNNFinder(model_path=str(cnn_path), device="cpu")
        strict.candidates = strict.candidates.with_params(minimum_snr=4.0)
        strict.find(image, big_maps.mask, maps=big_maps)
        t0 = time.process_time()
        for _ in range(reps):
            strict_peaks = strict.find(image, big_maps.mask, maps=big_maps)
        timing["cnn_finder_total_snr4_s"] = (time.process_time() - t0) / reps
        timing["n_candidates_snr4"] = len(strict.last_candidates)
        timing["n_peaks_snr4"] = len(strict_peaks)
        print(
            f"\n4-Mpixel frame ({image.shape}, {len(cands)} candidates, {len(peaks)} peaks), "
            "torch 1 thread, CPU seconds: "
            + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in timing.items())
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=float))
        print(f"figures written to {args.out}")


if __name__ == "__main__":
    main()
