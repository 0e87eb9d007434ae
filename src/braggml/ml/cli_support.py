"""``braggml train``: argument parsing and the run function the command line wires in.

``braggml train --model {cnn,svm} DATA... -o MODEL [--labels PEAKS]`` finds candidates in the frames, labels
them from the truth of simulated files or from the user's peak list, splits the frames into training,
validation and test sets, trains, prints per-epoch (CNN) or per-fold (SVM) figures, then scores the held-out
test frames (patch and peak level), stores those figures in the model file, writes ``MODEL.metrics.json`` and
PNG plots.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, InputNotFoundError

__all__ = ["add_train_arguments", "run_train"]

log = logging.getLogger(__name__)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` options to ``parser`` (defaults are those of the configuration classes)."""
    parser.add_argument("data", nargs="*", metavar="DATA",
                        help="frame files for --model cnn/svm, of one or several detectors (simulated files carry "
                             "their own truth)")
    parser.add_argument("--model", required=True, choices=["cnn", "svm", "unet"],
                        help="classifier to train, or unet: the whole-frame segmentation network")
    parser.add_argument("-o", "--output", required=True, metavar="MODEL", help="model file to write (.safetensors)")
    parser.add_argument(
        "--labels",
        metavar="PEAKS",
        help="true peaks (CXI, CrystFEL stream or CSV), e.g. of frames that indexed; only frames it lists are used",
    )
    parser.add_argument("--dataset", metavar="PATH", help="HDF5 dataset of the frames when not found automatically")
    parser.add_argument("--max-frames", type=int, metavar="N", help="use at most N labelled frames")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the initialisation and the shuffles")
    parser.add_argument("--split", nargs=3, type=float, metavar=("TRAIN", "VAL", "TEST"),
                        default=(0.7, 0.15, 0.15), help="shares of the frames (or runs) for each set")
    parser.add_argument("--split-by", choices=["frame", "run"], default="frame",
                        help="split whole frames, or whole input files (runs)")
    g = parser.add_argument_group("candidates and patches")
    g.add_argument("--candidate-finder", metavar="NAME", help="classical finder proposing candidates")
    g.add_argument("--candidate-param", action="append", default=[], metavar="NAME=VALUE",
                   help="candidate-finder parameter (repeatable; replaces the high-recall defaults it names)")
    g.add_argument("--half-size", type=int, metavar="S", help="patches are (2S+1) pixels square")
    g.add_argument("--normalisation", choices=["robust", "poisson"], help="patch normalisation")
    g.add_argument("--radius-px", type=float, default=2.0, help="largest candidate-to-truth distance of a peak")
    g.add_argument("--min-truth-snr", type=float, metavar="SNR",
                   help="true peaks below this SNR neither count as peaks nor as misses")
    g.add_argument("--min-candidate-snr", type=float, default=0.0, metavar="SNR",
                   help="train and score on the candidates of at least this SNR only (as the candidate finder "
                        "measures it); the cnn and svm finders classify those of --min-snr or more (3 by default)")
    c = parser.add_argument_group("CNN and U-Net training")
    c.add_argument("--channels", type=int, nargs="+", metavar="C",
                   help="feature channels of each convolution stage (U-Net: of each level)")
    c.add_argument("--convs-per-stage", type=int, metavar="N", help="3x3 convolutions per stage")
    c.add_argument("--hidden", type=int, metavar="N", help="width of the fully connected layer")
    c.add_argument("--dropout", type=float, help="dropout probability")
    c.add_argument("--epochs", type=int, help="most training epochs (early stopping on validation F1)")
    c.add_argument("--batch-size", type=int, help="patches per step")
    c.add_argument("--learning-rate", type=float, help="peak AdamW learning rate")
    c.add_argument("--patience", type=int, help="epochs without a better validation F1 before stopping")
    c.add_argument("--balance", choices=["weight", "sample", "none"], help="class-imbalance handling")
    c.add_argument("--device", help="auto (CUDA when available), cpu, cuda or cuda:N")
    c.add_argument("--threads", type=int, metavar="N", help="CPU threads of torch (default: torch's choice)")
    s = parser.add_argument_group("SVM training")
    s.add_argument("--c-values", nargs="+", type=float, metavar="C", help="C values of the grid search")
    s.add_argument("--pca", type=int, metavar="K", help="keep K principal components before the SVM")
    s.add_argument("--cv-folds", type=int, metavar="K", help="cross-validation folds (grouped by frame)")
    s.add_argument("--max-iter", type=int, help="iteration limit of the linear SVM")
    s.add_argument("--max-train-patches", type=int, metavar="N", help="downsample the training set to N patches")
    s.add_argument("--rbf-max-samples", type=int, metavar="N",
                   help="try an RBF-kernel SVC when the training set has at most N patches (0: never)")
    from .unet_cli import add_train_unet_arguments

    add_train_unet_arguments(parser)
    o = parser.add_argument_group("output")
    o.add_argument("--plots", metavar="DIR", help="folder for the PNG plots (default: MODEL's name + _plots)")
    o.add_argument("--no-plots", action="store_true", help="write no plots")
    o.add_argument("--progress", action="store_true", help="show progress bars even when not on a terminal")
    o.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def _parse_params(items: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--candidate-param needs NAME=VALUE, got {item!r}")
        try:
            out[name.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[name.strip()] = value
    return out


def _given(args: argparse.Namespace, mapping: dict[str, str]) -> dict[str, Any]:
    """Settings the user gave: {config field: value} for the flags that are not None."""
    return {field: getattr(args, flag) for flag, field in mapping.items() if getattr(args, flag, None) is not None}


def _maps(args: argparse.Namespace, shape: tuple[int, int] | None) -> Any:
    """Detector maps from ``--geom`` when the command line defines it and it is given."""
    geom = getattr(args, "geom", None)
    if geom and shape is not None:
        from ..io.geom import read_crystfel_geom

        return read_crystfel_geom(geom).pixel_maps(shape)
    return None


def run_train(args: argparse.Namespace) -> int:
    """Run ``braggml train``; returns the exit status.

    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) every process joins the process group, reads the
    same frames and trains its share of each epoch (:func:`braggml.ml.cnn.train_cnn`); rank 0 alone prints,
    evaluates and writes the model, metrics and plots while the other ranks wait for it, then all leave the
    group. Only the CNN trains this way.
    """
    from .cnn import distributed_context

    if args.model == "unet":
        from .unet_cli import run_train_unet

        return run_train_unet(args)
    if not args.data:
        raise ConfigError(f"--model {args.model} needs DATA: frame files with truth (or --labels PEAKS)")
    context = distributed_context()
    if context is None:
        return _run_train(args, is_main=True)
    if args.model != "cnn":
        raise ConfigError(
            f"--model {args.model} trains in one process; only --model cnn runs under torchrun "
            f"(WORLD_SIZE={context.world_size})"
        )
    from .cnn import TrainConfig, init_distributed, shutdown_distributed

    init_distributed(context, args.device if args.device is not None else TrainConfig().device)
    finished = False
    try:
        status = _run_train(args, is_main=context.is_main)
        finished = True
    finally:  # after an error the other ranks are stopped by torchrun, not awaited
        shutdown_distributed(wait=finished)
    return status


def _run_train(args: argparse.Namespace, *, is_main: bool) -> int:
    """The body of :func:`run_train`; with ``is_main`` False it trains, then returns without printing or writing."""
    from ..evaluate.metrics import evaluate_peaks
    from ..io.frames import expand_inputs, open_frames
    from .metrics import binary_metrics
    from .patches import LABEL_PEAK, CandidateConfig, PatchConfig, build_patch_set, candidate_finder, split_by_frame

    quiet = bool(getattr(args, "quiet", False)) or not is_main
    echo = (lambda *a, **k: None) if quiet else print
    progress = not quiet and (bool(getattr(args, "progress", False)) or sys.stderr.isatty())
    out = Path(args.output)
    if out.is_dir():
        raise ConfigError(f"--output {out} is a directory")
    if not out.resolve().parent.is_dir():
        raise ConfigError(f"--output {out}: the folder {out.resolve().parent} does not exist")
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    if not args.min_candidate_snr >= 0:
        raise ConfigError(f"--min-candidate-snr must be >= 0, got {args.min_candidate_snr}")

    default_candidates = CandidateConfig()
    finder_name = args.candidate_finder or default_candidates.finder
    params = dict(default_candidates.params) if finder_name == default_candidates.finder else {}
    params.update(_parse_params(list(args.candidate_param or [])))
    candidates = CandidateConfig(finder=finder_name, params=params)
    candidate_finder(candidates)  # unknown finder or parameter: fail before reading any frame
    patch = PatchConfig(**_given(args, {"half_size": "half_size", "normalisation": "normalisation"}))

    for file, _dataset in expand_inputs(list(args.data), dataset=args.dataset):  # fail before printing anything
        if not Path(file).exists():
            raise InputNotFoundError(f"{file}: no such file")
    shape = None
    if getattr(args, "geom", None):
        with open_frames(args.data, dataset=args.dataset) as src:
            shape = src.shape
    echo(f"finding candidates with {candidates.finder} {json.dumps(candidates.params, sort_keys=True)}")
    ps = build_patch_set(
        args.data,
        labels=args.labels,
        patch_config=patch,
        candidate_config=candidates,
        radius_px=args.radius_px,
        min_truth_snr=args.min_truth_snr,
        maps=_maps(args, shape),
        dataset=args.dataset,
        max_frames=args.max_frames,
        progress=progress,
    )
    if args.min_candidate_snr > 0:
        faint = ps.snr < args.min_candidate_snr
        ps = ps.take(~faint)
        echo(f"left out {int(faint.sum())} candidates under SNR {args.min_candidate_snr:g} (--min-candidate-snr)")
    echo(f"{ps.n_frames} labelled frames, {len(ps)} candidates: {ps.n_positive} peaks, {ps.n_negative} not peaks, "
         f"{len(ps) - ps.n_positive - ps.n_negative} ignored")
    split = split_by_frame(ps.groups(args.split_by), tuple(args.split), seed=args.seed)  # type: ignore[arg-type]
    train, val, test = ps.take(split.train), ps.take(split.val), ps.take(split.test)
    for name, part, groups in (("train", train, split.train_groups), ("validation", val, split.val_groups),
                               ("test", test, split.test_groups)):
        echo(f"  {name:10s} {groups.size:5d} {args.split_by}s  {len(part):7d} patches "
             f"({part.n_positive} peaks, {part.n_negative} not peaks)")

    model: Any
    if args.model == "cnn":
        import torch

        from .cnn import CNNConfig, TrainConfig, train_cnn

        if args.threads is not None:
            if args.threads < 1:
                raise ConfigError(f"--threads must be >= 1, got {args.threads}")
            torch.set_num_threads(args.threads)

        tc = TrainConfig(**_given(args, {"epochs": "epochs", "batch_size": "batch_size",
                                         "learning_rate": "learning_rate", "patience": "patience",
                                         "balance": "balance", "device": "device"}), seed=args.seed)

        def show(r: Any) -> None:
            echo(f"epoch {r.epoch:3d}/{tc.epochs}  loss {r.train_loss:.4f}  val loss {r.val_loss:.4f}  "
                 f"val P {r.val_precision:.3f} R {r.val_recall:.3f} F1 {r.val_f1:.4f} (threshold {r.threshold:.3f})"
                 f"  lr {r.learning_rate:.2e}  {r.seconds:.1f} s")

        arch = CNNConfig(**_given(args, {"channels": "channels", "convs_per_stage": "convs_per_stage",
                                         "hidden": "hidden", "dropout": "dropout"}))
        model = train_cnn(train, val, model_config=arch, config=tc, progress=progress, on_epoch=show)
        if not is_main:
            return 0
        world = model.info.get("world_size")
        if world:
            echo(f"trained on {world} processes, {model.info['global_batch_size']} patches per step in all")
        echo(f"best validation F1 {model.info['best_val_f1']:.4f}, threshold {model.threshold:.3f}")
    else:
        from .svm import SVMConfig, train_svm

        sc = SVMConfig(**_given(args, {"c_values": "c_values", "pca": "pca_components", "cv_folds": "cv_folds",
                                       "max_iter": "max_iter", "max_train_patches": "max_train_samples",
                                       "rbf_max_samples": "rbf_max_samples"}), seed=args.seed)
        model = train_svm(train, val, config=sc, echo=echo)
        best = model.info["best"]
        echo(f"chosen: {best['kernel']} C {best['C']:g}, CV F1 {best['mean_f1']:.4f} +- {best['std_f1']:.4f}")

    # held-out figures on the test frames
    test_l = test.labelled()
    scores = model.scores(test_l.patches) if len(test_l) else np.zeros(0)
    y = (test_l.labels == LABEL_PEAK).astype(np.int64)
    patch_metrics = binary_metrics(y, scores >= model.threshold)
    test_frames = split.test_groups if args.split_by == "frame" else np.unique(test.frame)
    sub = ps.for_frames(test_frames)
    sub_scores = model.scores(sub.patches) if len(sub) else np.zeros(0)
    found = sub.found_peaks(sub_scores, model.threshold)
    ev = evaluate_peaks(found, sub.truth, radius_px=args.radius_px)
    ceiling = evaluate_peaks(sub.found_peaks(sub_scores), sub.truth, radius_px=args.radius_px)
    held_out = {
        "patches": patch_metrics,
        "peaks": {
            "precision": ev.precision,
            "recall": ev.recall,
            "f1": ev.f1,
            "n_true": ev.n_true,
            "n_found": ev.n_found,
            "true_positives": ev.true_positives,
            "candidate_recall": ceiling.recall,
            "centroid_median_px": ev.centroid_median_px,
        },
        "threshold": model.threshold,
        "n_frames": int(sub.n_frames),
    }
    model.info.update(
        {
            "data": [str(p) for p in ps.files],
            "labels": str(args.labels) if args.labels else "simulation truth",
            "radius_px": args.radius_px,
            "min_truth_snr": args.min_truth_snr,
            "min_candidate_snr": args.min_candidate_snr,
            "split": {"by": args.split_by, "fractions": list(args.split), "seed": args.seed,
                      "train": split.train_groups.tolist(), "val": split.val_groups.tolist(),
                      "test": split.test_groups.tolist()},
            "test": held_out,
        }
    )
    model.save(out)
    from .checkpoint import json_clean

    metrics_path = out.with_suffix(".metrics.json")
    from ..io.atomic import atomic_output

    with atomic_output(metrics_path, mode="w") as fh:
        json.dump(json_clean({"model": str(out), "kind": args.model, "test": held_out,
                              "threshold": model.threshold, "info": model.info}), fh, indent=2)
    pm = patch_metrics
    echo(f"held-out test patches ({len(test_l)}): precision {pm['precision']:.4f}  recall {pm['recall']:.4f}  "
         f"F1 {pm['f1']:.4f}  accuracy {pm['accuracy']:.4f}")
    echo(f"  confusion [[TN FP] [FN TP]] = {pm['confusion']}")
    echo(f"held-out test frames ({sub.n_frames}), peaks within {args.radius_px:g} px: precision {ev.precision:.4f}  "
         f"recall {ev.recall:.4f}  F1 {ev.f1:.4f}  (candidates reach recall {ceiling.recall:.4f})")
    if not args.no_plots:
        from ..evaluate.plots import plot_precision_recall
        from .plots import plot_coefficient_map, plot_confusion, plot_patch_pr, plot_search_curves, plot_training_curves

        folder = Path(args.plots) if args.plots else out.with_name(out.stem + "_plots")
        folder.mkdir(parents=True, exist_ok=True)
        written = [
            plot_confusion(pm["confusion"], folder / "confusion_matrix.png",
                           title=f"{args.model}: held-out test patches"),
            plot_patch_pr(y, scores, folder / "precision_recall_patches.png", threshold=model.threshold),
            plot_precision_recall({args.model: sub.found_peaks(sub_scores)}, sub.truth,
                                  folder / "precision_recall_peaks.png", radius_px=args.radius_px),
        ]
        if args.model == "cnn":
            written.append(plot_training_curves(model.history, folder / "training_curves.png"))
        else:
            written.append(plot_search_curves(model.info["search"], folder / "training_curves.png"))
            if model.kernel == "linear":
                written.append(plot_coefficient_map(model.coefficient_map(), folder / "coefficient_map.png"))
        echo(f"plots: {', '.join(str(p) for p in written)}")
    echo(f"model written to {out} (metrics: {metrics_path})")
    return 0
