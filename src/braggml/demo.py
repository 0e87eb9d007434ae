"""``braggml demo``: the main job on built-in data, runnable right after installation.

It simulates a small training run and a test run with ground truth, trains the CNN and the SVM patch classifiers
on the training run, runs the classical finders (default settings), the trained models and the models shipped with
braggml on the test run, prints a side-by-side table and writes a report with pictures.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .evaluate.metrics import Evaluation, evaluate_peaks
from .evaluate.plots import plot_frame, plot_peak_counts, plot_recall_vs_snr, plot_run_overview
from .evaluate.report import comparison_rows, format_table, write_report
from .evaluate.truth import load_truth
from .finder import make_finder
from .io.frames import open_frames
from .io.peaklists import write_peaks
from .pipeline import combine_masks, find_in_frames

__all__ = ["run_demo", "DEMO_FINDERS"]

#: True spots below this expected SNR are not counted (no finder can tell them from noise).
DEMO_TRUTH_MIN_SNR = 3.0

#: Finders the demo compares, each with its default settings.
DEMO_FINDERS = ("peakfinder8", "dispersion", "dispersion_extended", "threshold")


def _train(kind: str, train_path: Path, model_path: Path, *, seed: int, epochs: int, progress: bool) -> None:
    """Train a patch classifier exactly as ``braggml train`` does."""
    from .cli import build_parser

    argv = ["train", "--model", kind, str(train_path), "-o", str(model_path), "--seed", str(seed), "-q"]
    if kind == "cnn":
        argv += ["--epochs", str(epochs)]
    else:  # a quick linear search: a subsample of the patches, three folds
        argv += ["--max-train-patches", "8000", "--cv-folds", "3", "--rbf-max-samples", "0"]
        argv += ["--c-values", "0.01", "0.1", "1"]
    if progress:
        argv.append("--progress")
    args = build_parser().parse_args(argv)
    args.func(args)


def run_demo(
    out_dir: Path,
    *,
    n_frames: int = 8,
    n_train_frames: int = 8,
    seed: int = 2026,
    preset: str = "jungfrau4m",
    finders: tuple[str, ...] = DEMO_FINDERS,
    learned: tuple[str, ...] = ("cnn", "svm"),
    epochs: int = 6,
    progress: bool = True,
    echo=print,
) -> int:
    """Simulate a test run of ``n_frames`` frames of ``preset``, train the learned finders on a separate run of
    ``n_train_frames`` frames, find the test run's peaks with every finder (and, when learned finders are run,
    with the models shipped with braggml: ``<kind>_builtin`` and ``unet``) and score them.

    Writes into ``out_dir``: ``frames.h5`` and ``train.h5`` (frames and truth), ``model_<kind>.safetensors``,
    ``peaks_<finder>.h5`` (CXI peak lists), ``report.md`` / ``report.json`` and PNG pictures. Returns the exit
    status.
    """
    from .simulate import Simulator, simulate_to_file
    from .simulate.presets import get_preset

    if n_frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {n_frames}")
    if learned and n_train_frames < 3:
        raise ConfigError(f"--train-frames must be >= 3 to train the learned finders, got {n_train_frames}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = get_preset(preset)
    frames_path = out_dir / "frames.h5"
    echo(f"simulating {n_frames} frames ({preset} preset, seed {seed}) -> {frames_path}")
    t0 = time.perf_counter()
    simulate_to_file(frames_path, n_frames, config, seed=seed, progress=progress, preset=preset)
    echo(f"  {time.perf_counter() - t0:.1f} s")
    models: dict[str, Path] = {}
    if learned:
        train_path = out_dir / "train.h5"
        echo(f"simulating {n_train_frames} training frames (seed {seed + 1}) -> {train_path}")
        simulate_to_file(train_path, n_train_frames, config, seed=seed + 1, progress=progress, preset=preset)
        for kind in learned:
            models[kind] = out_dir / f"model_{kind}.safetensors"
            echo(f"training the {kind.upper()} patch classifier -> {models[kind]}")
            t0 = time.perf_counter()
            _train(kind, train_path, models[kind], seed=seed, epochs=epochs, progress=progress)
            echo(f"  {time.perf_counter() - t0:.1f} s")
    truth = load_truth(frames_path, min_snr=DEMO_TRUTH_MIN_SNR)
    sim = Simulator(config, seed=seed)
    maps = sim.layout.pixel_maps(sim.wavelength_a)
    source = open_frames(frames_path)
    mask = combine_masks(source.shape, source.file_mask(), maps.mask)

    evaluations: dict[str, Evaluation] = {}
    fps: dict[str, float] = {}
    found_all = {}
    runs = [(name, make_finder(name), "default settings") for name in finders]
    runs += [(kind, make_finder(kind, model_path=str(path)), f"model {path.name}") for kind, path in models.items()]
    if learned:  # the models shipped with braggml, trained on other simulated frames: no training here
        runs += [(f"{kind}_builtin", make_finder(kind), "built-in model") for kind in learned]
        runs.append(("unet", make_finder("unet"), "built-in model"))
    for name, finder, what in runs:
        echo(f"finding peaks with {name} ({what})")
        peaks, summary = find_in_frames(
            finder,
            ((f.data, f.ref, f.bad) for f in source),
            n_frames=len(source),
            mask=mask,
            maps=maps,
            progress=progress,
        )
        write_peaks(peaks, out_dir / f"peaks_{name}.h5")
        found_all[name] = peaks
        fps[name] = summary.frames_per_second
        evaluations[name] = evaluate_peaks(
            peaks,
            truth.peaks,
            radius_px=2.0,
            truth_resolution_a=truth.resolution_a,
            truth_is_hit=truth.is_hit,
            optional=truth.optional,
        )

    best = max(evaluations, key=lambda n: np.nan_to_num(evaluations[n].f1))
    k = int(np.argmax(truth.peaks.counts_per_frame()))
    frame = source.frame(k)
    legend = "green: found, white: at a weaker true peak, orange: missed, red: false"
    pictures = {
        f"frame {k} with {best}'s peaks ({legend})": plot_frame(
            frame.data,
            out_dir / f"frame_{k}_{best}.png",
            mask=mask | frame.bad,
            found=found_all[best].for_frame(k),
            truth=truth.peaks.for_frame(k),
            title=f"{preset} frame {k}: {best}",
            optional=truth.optional.for_frame(k) if truth.optional is not None else None,
        ),
        "recall against truth SNR": plot_recall_vs_snr(evaluations, out_dir / "recall_vs_snr.png"),
        "peaks per frame": plot_peak_counts(
            {"truth": truth.peaks.counts_per_frame(), **{n: p.counts_per_frame() for n, p in found_all.items()}},
            out_dir / "peak_counts.png",
        ),
        f"the test run as {best} saw it (what `braggml find --plot` draws)": plot_run_overview(
            found_all[best],
            out_dir / f"run_{best}.png",
            shape=source.shape,
            radius_px=maps.radius_px,
            resolution_a=maps.resolution_a,
            mask=mask,
            title=f"{preset} test run: {best}",
        ),
    }
    rows = comparison_rows(evaluations, fps)
    report = write_report(
        out_dir,
        evaluations,
        pictures=pictures,
        frames_per_second=fps,
        title="braggml demo",
        notes=[
            f"Test run: {n_frames} simulated frames of the `{preset}` preset (seed {seed}), {len(truth.peaks)} "
            f"true spots with expected SNR >= {DEMO_TRUTH_MIN_SNR:g}. Classical finders run with their default settings"
            + (f"; {', '.join(models)} trained on {n_train_frames} other frames (seed {seed + 1})" if models else "")
            + (
                f"; unet and {', '.join(f'{k}_builtin' for k in learned)} use the models shipped with braggml "
                "(trained on many more simulated frames of other seeds and detectors)"
                if learned
                else ""
            )
            + ". A found peak is true when it lies within 2 px of a true spot (one-to-one matching)."
        ],
    )
    echo("")
    echo(format_table(rows))
    echo("")
    echo(f"report: {report.resolve()}")
    return 0
