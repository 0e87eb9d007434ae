r"""Train the CNN and SVM patch classifiers shipped with braggml (``src/braggml/data/{cnn,svm}_default.safetensors``).

Training frames: simulated ``jungfrau4m`` (integrating, float ADU with a gain of 12) and ``pilatus6m`` (photon
counting, int32) frames only, run seed 31; ``eiger4m`` and ``test`` are kept unseen, as for the U-Net. Each
preset gives ``--frames`` frames of every fixed variant (:func:`braggml.ml.unet_train.variant_config`: hits,
weak hits, hits with ice rings, blank frames, dense hits, compact hits, quiet weak hits) and ``--draws``
configurations of every drawn variant (varied, crowded, sharp, pinpoint and phosphor hits, each drawn at random
around the preset, :func:`braggml.ml.unet_train.varied_config` and its neighbours), with two frames each.
The frames are written to ``--data`` as simulated CXI/HDF5 files (an existing file is kept, so a stopped run
resumes), then ``braggml train`` runs on all of them with its defaults but for ``--min-truth-snr 3``:
candidates of the high-recall peakfinder8, 15 x 15 patches, frames split 70/15/15 into train, validation and
test (seed 0), and a candidate at a simulated reflection of expected SNR < 3 counted neither as a peak nor as
a false one (as ``benchmarks/unet_vs_peakfinder8.py`` scores). The CNN trains for at most ``--epochs`` epochs
(the epoch of best validation F1 is kept); the SVM fits on ``--svm-patches`` training patches drawn at random.

The shipped models were made with (2 CPU cores):

    python benchmarks/train_patch_defaults.py --data /tmp/patch_frames --out-dir /tmp/patch_models

and the two ``.safetensors`` files copied to ``src/braggml/data`` (the metrics and plots stay behind).

Afterwards, ``python benchmarks/ml_vs_peakfinder8.py --defaults`` scores the shipped models on the frames of
``benchmarks/unet_vs_peakfinder8.py`` (trained and unseen presets) against peakfinder8's defaults.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from braggml.cli import main as braggml_main
from braggml.ml.unet_train import _DRAWN, variant_config
from braggml.simulate import get_preset
from braggml.simulate.run import simulate_to_file

SEED = 31
PRESETS = ("jungfrau4m", "pilatus6m")
FIXED = ("hits", "weak", "ice", "blank", "dense", "compact", "quiet")
DRAWN = ("varied", "crowded", "sharp", "pinpoint", "phosphor")


def simulate_training_frames(folder: Path, n_frames: int, n_draws: int) -> list[Path]:
    """Write the training frames (one file per preset and variant, or per drawn configuration)."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = []
    for preset in PRESETS:
        base = get_preset(preset)
        for v in FIXED:
            jobs.append((folder / f"{preset}_{v}.h5", variant_config(base, v), n_frames, preset))
        rng = np.random.default_rng([SEED, PRESETS.index(preset)])
        for v in DRAWN:
            for d in range(n_draws):
                jobs.append((folder / f"{preset}_{v}{d}.h5", _DRAWN[v](base, rng), 2, preset))
    for path, config, n, preset in jobs:
        if not path.exists():
            t0 = time.perf_counter()
            simulate_to_file(path, n, config, seed=SEED, preset=preset)
            print(f"{path.name}: {n} frames, {time.perf_counter() - t0:.0f} s", flush=True)
    return [p for p, *_ in jobs]


def describe(model_path: Path, data: Path) -> None:
    """Name the training frames relative to ``data`` in the model's record and say what it was trained on, as
    the shipped U-Net's record does (the model is otherwise left as trained)."""
    from braggml.ml.checkpoint import load_classifier

    model = load_classifier(model_path, device="cpu")
    names = [Path(f).name if Path(f).parent == data else str(f) for f in model.info.get("data", [])]
    model.info["data"] = names
    model.info["trained_on"] = (
        f"simulated frames of presets {', '.join(PRESETS)} (run seed {SEED}; {len(names)} files: fixed variants "
        f"{', '.join(FIXED)}; drawn variants {', '.join(DRAWN)}), candidates of the high-recall peakfinder8, "
        "truth = spots with expected SNR >= 3 (benchmarks/train_patch_defaults.py)"
    )
    model.save(model_path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder of the simulated training frames")
    ap.add_argument("--out-dir", type=Path, default=Path("."), help="folder of cnn_default/svm_default.safetensors")
    ap.add_argument("--frames", type=int, default=6, help="frames of each fixed variant and preset")
    ap.add_argument("--draws", type=int, default=4, help="configurations of each drawn variant and preset")
    ap.add_argument("--models", nargs="+", default=["cnn", "svm"], choices=["cnn", "svm"])
    ap.add_argument("--epochs", type=int, default=20, help="most CNN epochs")
    ap.add_argument("--svm-patches", type=int, default=150_000, help="training patches the SVM keeps (drawn at random)")
    ap.add_argument("--cnn-min-candidate-snr", type=float, default=0.0,
                    help="train the CNN only on candidates at least this bright (the SVM always uses 3)")
    args = ap.parse_args()

    files = [str(p) for p in simulate_training_frames(args.data, args.frames, args.draws)]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for kind in args.models:
        out = args.out_dir / f"{kind}_default.safetensors"
        extra = (["--epochs", str(args.epochs), "--min-candidate-snr", str(args.cnn_min_candidate_snr)]
                 if kind == "cnn"
                 else ["--max-train-patches", str(args.svm_patches), "--min-candidate-snr", "3"])
        t0 = time.perf_counter()
        status = braggml_main(["train", "--model", kind, *files, "-o", str(out), "--min-truth-snr", "3",
                               "--seed", "0", "--plots", str(args.data / f"{kind}_plots"), "--progress", *extra])
        print(f"{kind}: exit {status}, {time.perf_counter() - t0:.0f} s", flush=True)
        if status == 0:
            describe(out, args.data)


if __name__ == "__main__":
    main()
