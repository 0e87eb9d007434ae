"""``braggml simulate``: argument parsing and the run function the command line wires in."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ..config import load_config_file
from ..errors import ConfigError
from .config import SimulationConfig, apply_overrides, parse_set_options
from .presets import DEFAULT_PRESET, available_presets, get_preset

__all__ = ["add_simulate_arguments", "run_simulate", "build_config"]

log = logging.getLogger(__name__)


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``simulate`` options to ``parser``."""
    parser.add_argument("-n", "--frames", dest="n_frames", type=int, metavar="N", help="number of frames (required)")
    parser.add_argument("-o", "--output", metavar="FILE", help="output HDF5 file, .h5/.cxi (required)")
    parser.add_argument(
        "--preset", default=DEFAULT_PRESET, choices=available_presets(), help="experiment preset to start from"
    )
    parser.add_argument("--seed", type=int, default=0, help="run seed; frame k depends only on (seed, k)")
    parser.add_argument(
        "--first-frame", type=int, default=0, metavar="K", help="simulator frame number of the first frame (shards)"
    )
    parser.add_argument("--config", metavar="FILE", help="YAML file of settings (nested like --show-config prints)")
    parser.add_argument(
        "--set",
        dest="set_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting by its dotted path, e.g. crystal.b_factor_a2=30 (repeatable; after --config)",
    )
    parser.add_argument("--preview", metavar="PNG", help="save a log-scaled picture of the frame with most spots")
    parser.add_argument(
        "--show-config", action="store_true", help="print the effective configuration as YAML and exit"
    )
    parser.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def build_config(
    preset: str, config_file: str | Path | None = None, set_options: list[str] | None = None
) -> SimulationConfig:
    """The configuration of a run: ``preset``, then the YAML file, then the ``--set`` overrides."""
    config = get_preset(preset)
    if config_file is not None:
        data = load_config_file(config_file)
        try:
            config = apply_overrides(config, data)
        except ConfigError as exc:
            raise ConfigError(f"{config_file}: {exc}") from None
    if set_options:
        config = apply_overrides(config, parse_set_options(set_options))
    return config


def run_simulate(args: argparse.Namespace) -> int:
    """Run ``braggml simulate``; returns the exit status."""
    import yaml

    from ..io.simfile import read_truth
    from .preview import preview_file
    from .run import simulate_to_file

    config = build_config(args.preset, args.config, list(args.set_options or []))
    if args.show_config:
        sys.stdout.write(yaml.safe_dump(config.to_dict(), sort_keys=False))
        return 0
    if args.n_frames is None or args.output is None:
        raise ConfigError("simulate needs -n/--frames and -o/--output")
    if args.n_frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {args.n_frames}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    out = Path(args.output)
    if out.is_dir():
        raise ConfigError(f"--output {out} is a directory")
    if not out.parent.is_dir():
        raise ConfigError(f"--output {out}: the folder {out.parent} does not exist")
    quiet = bool(getattr(args, "quiet", False))
    progress = not quiet and (bool(getattr(args, "progress", False)) or sys.stderr.isatty())
    simulate_to_file(
        out, args.n_frames, config, seed=args.seed, first_frame=args.first_frame, progress=progress, preset=args.preset
    )
    truth = read_truth(out)
    hits = int(truth.hit.sum())
    summary: dict[str, Any] = {
        "output": str(out),
        "frames": truth.n_frames,
        "hits": hits,
        "truth_spots": int(truth.spots["row"].size),
        "observable_spots": len(truth.peaks),
        "spots_snr_ge_3": int((truth.peaks.snr >= 3).sum()),
    }
    if args.preview:
        preview_file(out, args.preview)
        summary["preview"] = str(args.preview)
    if not quiet:
        print(json.dumps(summary))
    return 0
