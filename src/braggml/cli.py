"""The ``braggml`` command line: parses arguments, wires the library together and reports.

Every :class:`~braggml.errors.BraggMLError` becomes one line on stderr and exit status 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import BraggMLError, ConfigError
from .peaks import HIT_MIN_PEAKS

if TYPE_CHECKING:
    from .peaks import FrameRef, PeakList
    from .pipeline import FindJob, PreparedRun

log = logging.getLogger("braggml")

EXIT_BAD_INPUT = 2


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default only where it says something (not None, False or already in the text)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


# ---------------------------------------------------------------------------------------------- helpers
def _finder_params() -> dict[str, tuple[Any, dict[str, Any]]]:
    """Every parameter of the registered finders: name -> (annotation, {finder that has it: its default})."""
    import dataclasses

    from .config import field_types
    from .finder import available_finders, finder_class

    params: dict[str, tuple[Any, dict[str, Any]]] = {}
    for name in available_finders():
        try:
            cls = finder_class(name)
        except (ImportError, BraggMLError):  # a finder whose optional dependency is missing
            continue
        annotations = field_types(cls.config_class)
        for f in dataclasses.fields(cls.config_class):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            params.setdefault(f.name, (annotations[f.name], {}))[1][name] = default
    return params


def _add_geometry_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("detector geometry (gives radius, resolution and panels; optional)")
    g.add_argument("--geom", metavar="FILE", help="CrystFEL .geom file")
    g.add_argument("--beam-center", nargs=2, type=float, metavar=("ROW", "COL"), help="beam centre, pixels")
    g.add_argument("--pixel-size-mm", type=float, help="pixel size of a flat detector (mm)")
    g.add_argument("--distance-mm", type=float, help="sample-to-detector distance (mm)")
    g.add_argument(
        "--no-refine-beam-center",
        action="store_true",
        help="use the beam centre the file states (or the image centre) as it is, without refining it from "
        "the frame's circular scattering",
    )
    w = g.add_mutually_exclusive_group()
    w.add_argument("--wavelength-a", type=float, help="X-ray wavelength (Angstrom)")
    w.add_argument("--photon-energy-ev", type=float, help="photon energy (eV)")


def _add_input_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help=(
            "HDF5/CXI/NeXus, CBF, TIFF, SMV, EDF, MarCCD ..., .npy/.npz files or quoted globs; "
            "FILE::/dataset/path picks a dataset; a CrystFEL event list (.lst: 'file //N' or 'file' per line, "
            "as --hits-out writes) stands for the frames it names"
        ),
    )
    parser.add_argument("--dataset", metavar="PATH", help="dataset holding the frames in every HDF5 input")
    m = parser.add_argument_group("masks (bad pixels are never part of a peak)")
    m.add_argument(
        "--mask",
        metavar="FILE[::PATH]",
        help="mask file (HDF5, npy/npz, CBF, TIFF); by default non-zero marks a bad pixel",
    )
    m.add_argument(
        "--mask-one-means-good", action="store_true", help="the mask file writes 1 for good pixels (CrystFEL style)"
    )
    m.add_argument("--saturation", type=float, metavar="VALUE", help="mask pixels at or above this value")
    m.add_argument(
        "--detector-kind",
        choices=["photon-counting", "integrating"],
        help="override the kind read from the file (decides which values are markers, e.g. Pilatus -1/-2)",
    )
    from .classical.hotpixels import HotPixelConfig

    hot = HotPixelConfig()
    m.add_argument(
        "--hot-pixels",
        choices=["auto", "off"],
        default="auto",
        help=(
            f"auto: mask the pixels that stand alone above their neighbours in >= {100 * hot.min_fraction:.0f}%% "
            f"of the frames looked at (up to {hot.sample_frames}, spread over the run; runs of "
            f"{hot.min_frames} frames or more)"
        ),
    )
    m.add_argument(
        "--hot-pixel-mask-out",
        metavar="FILE",
        help="write the hot pixels found as a mask file for --mask (.h5 dataset /mask, or .npy; 1 = bad)",
    )


# ---------------------------------------------------------------------------------------------- info
def _cmd_info(args: argparse.Namespace) -> int:
    from .io.describe import describe, format_description

    paths = list(args.files)
    if args.builtin_models or any(_is_model_file(p) for p in paths):
        from .ml.describe import BUILTIN_MODELS, describe_model, format_model_description

        if args.builtin_models:
            paths += [str(path) for path in BUILTIN_MODELS.values()]
    if not paths:
        raise ConfigError("give a detector or model file, or --builtin-models")
    for path in paths:
        if _is_model_file(path):
            print(format_model_description(describe_model(path)))
        elif Path(path).suffix.lower() == ".refl":
            from .io.dials_refl import describe_refl

            print(describe_refl(path))
        elif Path(path).suffix.lower() == ".geom":
            from .io.describe import describe_geometry, format_geometry_description

            print(format_geometry_description(describe_geometry(path)))
        else:
            print(format_description(describe(path)))
    return 0


def _is_model_file(path: str) -> bool:
    """A braggml model file, by its suffix (``braggml info`` describes those as models)."""
    return Path(path).suffix.lower() == ".safetensors"


# ---------------------------------------------------------------------------------------------- find
def _finder_settings(args: argparse.Namespace, params: dict[str, tuple[Any, dict[str, Any]]]) -> tuple[str, dict]:
    """The finder name and its parameters from --config, flags and --param, in increasing priority."""
    from .config import load_config_file
    from .finder import DEFAULT_FINDER

    settings: dict[str, Any] = {}
    name = None
    if args.config:
        data = load_config_file(args.config)
        name = data.pop("finder", None)
        chosen = args.finder or name or DEFAULT_FINDER
        section = data.pop(chosen, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{args.config}: section {chosen!r} must be a mapping of parameters")
        for key in list(data):
            if key in params:
                settings[key] = data.pop(key)
        if data:
            raise ConfigError(f"{args.config}: unknown setting(s) {', '.join(map(repr, data))} for finder {chosen!r}")
        settings.update(section)
    finder_name = args.finder or name or DEFAULT_FINDER
    for key, (_annotation, owners) in params.items():
        value = getattr(args, f"fp_{key}", None)
        if value is None:
            continue
        if finder_name not in owners:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(f"{flag} does not apply to finder {finder_name!r} (it belongs to {', '.join(owners)})")
        settings[key] = value
    if getattr(args, "model", None):
        if "model_path" not in params or finder_name not in params["model_path"][1]:
            raise ConfigError(f"--model applies to the learned finders (cnn, svm, unet), not to {finder_name!r}")
        settings["model_path"] = args.model
    for item in args.param or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--param expects NAME=VALUE, got {item!r}")
        settings[key.strip()] = value.strip()
    return finder_name, settings


def _find_job(args: argparse.Namespace) -> FindJob:
    """The :class:`~braggml.pipeline.FindJob` the ``find`` arguments describe (finder settings checked)."""
    from .pipeline import FindJob

    finder_name, settings = _finder_settings(args, args._finder_params)
    if args.min_peaks < 1:
        raise ConfigError(f"--min-peaks must be >= 1, got {args.min_peaks}")
    job = FindJob(
        inputs=tuple(args.inputs),
        dataset=args.dataset,
        finder=finder_name,
        params=tuple(settings.items()),
        mask=args.mask,
        mask_one_means_good=args.mask_one_means_good,
        saturation=args.saturation,
        detector_kind=args.detector_kind,
        geom=args.geom,
        beam_center_rowcol=tuple(args.beam_center) if args.beam_center else None,
        pixel_size_mm=args.pixel_size_mm,
        distance_mm=args.distance_mm,
        wavelength_a=args.wavelength_a,
        photon_energy_ev=args.photon_energy_ev,
        min_peaks=args.min_peaks,
        refine_beam_center=not args.no_refine_beam_center,
        search_hot_pixels=args.hot_pixels == "auto",
    )
    finder = job.make_finder()  # reject bad settings before any file is opened
    getattr(finder, "model", None)  # and a model file that cannot be read (the U-Net reads it on first use)
    return job


def _write_find_outputs(args: argparse.Namespace, run: PreparedRun, peaks: PeakList) -> None:
    from .config import config_to_dict
    from .io.atomic import atomic_output
    from .io.peaklists import write_event_list, write_peaks

    if args.output:
        write_peaks(
            peaks,
            args.output,
            format=args.format,
            maps=run.geometry.maps,
            geometry=run.geometry.geometry,
            dials_experiments=args.dials_expt,
        )
        import yaml

        from .io.peaklists import peak_format

        settings = {
            "braggml": __version__,
            "inputs": list(args.inputs),
            "finder": run.job.finder,
            run.job.finder: config_to_dict(run.finder.config),
            "hot_pixels": {
                "frames_looked_at": run.job.hot_pixel_frames,
                "rowcol": run.hot_pixels.rowcol.tolist(),
            },
        }
        if peak_format(args.output, args.format) == "refl" and peaks.frames is not None:
            # a reflection table does not say which file each image came from: kept here, for a restart
            settings["frames"] = _frame_runs(peaks.frames)
        with atomic_output(str(args.output) + ".yaml", mode="w") as fh:
            yaml.safe_dump(settings, fh, sort_keys=False)
    if args.hot_pixel_mask_out:
        from .io.masks import write_mask

        write_mask(run.hot_pixels.mask, args.hot_pixel_mask_out)
    if args.plot:
        from .evaluate.plots import plot_run_overview

        maps = run.geometry.maps
        plot_run_overview(
            peaks,
            args.plot,
            shape=run.source.shape,
            min_peaks=run.job.min_peaks,
            radius_px=maps.radius_px if maps.known else None,
            resolution_a=maps.resolution_a,
            mask=run.mask,
            title=f"{', '.join(map(str, args.inputs))[:100]}: {run.job.finder}",
        )
    if args.hits_out:
        counts = peaks.counts_per_frame()
        hits = [ref for ref, n in zip(peaks.frames or (), counts) if n >= run.job.min_peaks]
        write_event_list(hits, args.hits_out)


def _cmd_find(args: argparse.Namespace) -> int:
    from .config import config_to_dict
    from .parallel.cli_support import execution_from_args, finish_find_command, prepare_run, run_find_command

    outputs = {
        "-o": args.output,
        "--hits-out": args.hits_out,
        "--hot-pixel-mask-out": args.hot_pixel_mask_out,
        "--plot": args.plot,
    }
    named = [(flag, Path(path).resolve()) for flag, path in outputs.items() if path]
    protected = _find_input_files(args)
    for i, (flag, target) in enumerate(named):  # fail before the run, not after it
        for other, other_target in named[:i]:
            if target == other_target:
                raise ConfigError(f"{flag} and {other} name the same file")
        if target in protected:
            raise ConfigError(f"{flag} {outputs[flag]} is one of the run's inputs; it would be overwritten")
        if not target.parent.is_dir():
            raise ConfigError(f"{outputs[flag]}: output folder {target.parent} does not exist")
    if args.output and not args.split_output:
        from .io.peaklists import peak_format

        peak_format(args.output, args.format)
    if args.hot_pixel_mask_out:
        from .io.masks import MASK_SUFFIXES

        if not str(args.hot_pixel_mask_out).lower().endswith(MASK_SUFFIXES):
            raise ConfigError(
                f"--hot-pixel-mask-out {args.hot_pixel_mask_out}: give a {', '.join(MASK_SUFFIXES)} file name"
            )
    if args.dials_expt:
        from .io.dials_refl import experiment_layout, experiment_panels
        from .io.peaklists import peak_format

        if not args.output or peak_format(args.output, args.format) != "refl":
            raise ConfigError("--dials-expt goes with a DIALS reflection table output (-o strong.refl)")
        experiment_layout(args.dials_expt)  # an unreadable list fails now, not after the run
        experiment_panels(args.dials_expt)
    job = _find_job(args)
    execution_from_args(args)  # reject bad parallel options before any file is opened
    if not args.quiet:
        _notice_first_compile(args.command)
    if args.follow:
        return _follow_find(args, job)
    run, file_failures = prepare_run(job)  # damaged files among several are left out and reported
    log.info("finder %s: %s", job.finder, config_to_dict(run.finder.config))
    progress = args.progress or (not args.quiet and sys.stderr.isatty())
    outcome = run_find_command(args, run, progress=progress)  # --workers, --scheduler, --shard, --resume
    peaks, summary = outcome.peaks, outcome.summary
    frame_failures = len(summary.failures)
    summary.failures[:0] = file_failures
    _write_find_outputs(argparse.Namespace(**{**vars(args), "output": None}) if args.split_output else args, run, peaks)
    finish_find_command(args, run, outcome)
    if not args.quiet:
        print(f"finder: {job.finder}")
        if run.job.hot_pixel_frames:
            print(f"hot pixels: {len(run.hot_pixels)} masked (from {run.job.hot_pixel_frames} frames looked at)")
        for line in summary.lines():
            print(line)
        if outcome.resumed_frames:
            print(f"resumed: {outcome.resumed_frames} frames were taken from an interrupted run")
        if args.output and not args.split_output:
            print(f"peaks written to {args.output}")
        if args.hits_out:
            print(f"hit list written to {args.hits_out}")
        if args.plot:
            print(f"run picture written to {args.plot}")
    return 1 if frame_failures and summary.n_frames == frame_failures else 0


def _frame_runs(frames: Sequence[FrameRef]) -> list[dict[str, Any]]:
    """Frame references as runs of consecutive indices of one dataset: ``{file, dataset, first, count}``."""
    runs: list[dict[str, Any]] = []
    for ref in frames:
        last = runs[-1] if runs else None
        same_dataset = last is not None and (last["file"], last["dataset"]) == (ref.file, ref.dataset)
        if same_dataset and last["first"] + last["count"] == ref.index:
            last["count"] += 1
        else:
            runs.append({"file": ref.file, "dataset": ref.dataset, "first": int(ref.index), "count": 1})
    return runs


def _frames_of_runs(runs: list[dict[str, Any]]) -> list[FrameRef]:
    """The frame references of :func:`_frame_runs`."""
    from .peaks import FrameRef

    return [
        FrameRef(str(r["file"]), str(r["dataset"]), int(r["first"]) + k) for r in runs for k in range(int(r["count"]))
    ]


def _earlier_output(args: argparse.Namespace, job: FindJob) -> PeakList | None:
    """The peaks an earlier ``--follow`` of the same run (same inputs, finder and settings, as its settings file
    beside the output says) wrote to ``-o``; None when there is none or it was another run."""
    import yaml

    from .config import config_to_dict
    from .errors import DataFormatError
    from .io.peaklists import read_peaks
    from .peaks import PeakList

    settings = Path(str(args.output) + ".yaml")
    if not (Path(args.output).is_file() and settings.is_file()):
        return None
    try:
        recorded = yaml.safe_load(settings.read_text())
        same = (
            recorded.get("inputs") == list(args.inputs)
            and recorded.get("finder") == job.finder
            and recorded.get(job.finder) == config_to_dict(job.make_finder().config)
        )
        peaks = read_peaks(args.output, format=args.format, dials_experiments=args.dials_expt) if same else None
        if peaks is not None and peaks.frames is None and recorded.get("frames"):  # a .refl: the frames beside it
            frames = _frames_of_runs(recorded["frames"])
            if len(frames) < peaks.n_frames:
                raise DataFormatError(f"its settings file lists {len(frames)} frames, it holds {peaks.n_frames}")
            peaks = PeakList(**peaks.columns(), n_frames=len(frames), frames=tuple(frames))
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError, ValueError, BraggMLError) as exc:
        log.warning("%s: not resumed from (%s)", args.output, exc)
        return None
    return peaks if peaks is not None and peaks.frames is not None else None


def _find_input_files(args: argparse.Namespace) -> set[Path]:
    """Every file ``find`` reads (frames, event lists, mask, geometry, settings, model), resolved, so that no
    output can replace one of them. Globs that match nothing yet (``--follow``) add nothing."""
    from .errors import InputNotFoundError
    from .io.frames import expand_inputs
    from .io.masks import split_spec

    try:
        files = [file for file, _dataset in expand_inputs(list(args.inputs))]
    except InputNotFoundError:
        files = [split_spec(str(item))[0] for item in args.inputs]
    extra = [args.mask and split_spec(args.mask)[0], args.geom, args.config, args.dials_expt, args.model]
    return {Path(f).resolve() for f in [*files, *extra] if f}


def _follow_find(args: argparse.Namespace, job: FindJob) -> int:
    """``find --follow``: find the peaks of the inputs' files as they are written, batch by batch, rewriting
    the outputs after each batch, until no new file has come for ``--follow-idle`` seconds or Ctrl-C."""
    from dataclasses import replace

    from .errors import DataFormatError
    from .io.masks import split_spec
    from .parallel.cli_support import finish_find_command, prepare_run, run_find_command, split_outputs
    from .parallel.follow import FollowConfig, follow_inputs, matching_files
    from .peaks import PeakList
    from .pipeline import RunSummary

    if args.shard or args.scheduler == "dask":
        raise ConfigError("--follow runs on this machine: leave out --shard and --scheduler dask")
    config = FollowConfig(poll_s=args.follow_poll, idle_s=args.follow_idle, retry_s=args.follow_retry)
    # the run's own outputs are never inputs, even where the inputs' globs match them
    seen = {os.path.realpath(p) for p in (args.output, args.hits_out, args.plot, args.hot_pixel_mask_out) if p}
    if args.split_output:  # files whose own peak list exists were done by an earlier run: a restart resumes
        for file, _spec in matching_files(list(args.inputs)):
            target = split_outputs(args.output, [file], args.format)[file]
            seen.add(os.path.realpath(target))
            if Path(target).is_file():
                seen.add(os.path.realpath(file))
    progress = args.progress or (not args.quiet and sys.stderr.isatty())
    earlier = None if args.split_output or args.resume is False else _earlier_output(args, job)
    per_batch = argparse.Namespace(**{**vars(args), "output": args.output if args.split_output else None})
    outputs = argparse.Namespace(**{**vars(args), "output": None if args.split_output else args.output})
    parts: list[PeakList] = []
    done: list[str] = []  # the inputs of the batches run
    hot_reported = False
    total = RunSummary(min_peaks=job.min_peaks)
    template = job
    if earlier is not None:  # an interrupted follow of the same run: its frames are kept, its files not redone
        parts.append(earlier)
        counts = earlier.counts_per_frame()
        total.n_frames, total.n_peaks = earlier.n_frames, len(earlier)
        total.n_hits = int((counts >= job.min_peaks).sum())
        files = list(dict.fromkeys(ref.file for ref in earlier.frames or ()))
        seen.update(os.path.realpath(f) for f in files)
        done.extend(files)
        if not args.quiet:
            print(f"resumed: {earlier.n_frames} frames of {len(files)} files from {args.output}", flush=True)
    if not args.quiet:
        print(f"following {', '.join(map(str, args.inputs))} (every {config.poll_s:g} s; Ctrl-C stops)", flush=True)
    retry: dict[str, tuple[float, str]] = {}  # files that could not be read yet: since when, and why

    def put_off(specs: list[str], why: str) -> None:
        for spec in specs:
            if spec not in retry:
                log.warning("%s cannot be read yet; tried again while following (%s)", spec, why)
                retry[spec] = (time.monotonic(), why)

    try:
        for batch in follow_inputs(list(args.inputs), config, seen=seen, busy=lambda: bool(retry)):
            for spec, (since, why) in list(retry.items()):
                if time.monotonic() - since > config.retry_s:
                    log.error("%s: left out, still unreadable after %g s (%s)", spec, config.retry_s, why)
                    total.failures.append(f"{spec}: unreadable file, left out ({why})")
                    del retry[spec]
            batch = [*batch, *(spec for spec in retry if spec not in batch)]
            if not batch:
                continue
            if args.split_output:  # the peak lists about to be written are not new inputs, whatever the globs
                files = [split_spec(spec)[0] for spec in batch]
                seen.update(os.path.realpath(t) for t in split_outputs(args.output, files, args.format).values())
            try:
                fresh = any(spec not in retry for spec in batch)  # not only files tried again
                if job.search_hot_pixels and template.hot_pixels is None and done and fresh:
                    # the batches so far were each too short to tell hot pixels: look over all the files seen
                    whole, _ = prepare_run(replace(template, inputs=(*done, *batch)))
                    if whole.job.hot_pixel_frames:
                        template = replace(
                            template, hot_pixels=whole.job.hot_pixels, hot_pixel_frames=whole.job.hot_pixel_frames
                        )
                run, _failures = prepare_run(replace(template, inputs=tuple(batch)))
            except DataFormatError as exc:  # unreadable files must not end a run that is being followed
                put_off(batch, str(exc))
                continue
            readable = set(run.job.inputs)
            put_off([spec for spec in batch if spec not in readable], "left out of its batch")
            for spec in readable:
                retry.pop(spec, None)
            done.extend(run.job.inputs)
            outcome = run_find_command(per_batch, run, progress=progress)
            # the next batches keep what this one learnt: panels, beam centre and hot pixels
            template = run.job
            if job.search_hot_pixels and not run.job.hot_pixel_frames:  # too few frames yet: look next batch
                template = replace(template, hot_pixels=None)
            if outcome.peaks is not None:
                parts.append(outcome.peaks)
            b = outcome.summary
            total.n_frames += b.n_frames
            total.n_hits += b.n_hits
            total.n_peaks += b.n_peaks
            total.seconds += b.seconds
            total.failures += b.failures
            for key, value in b.rejected.items():
                total.rejected[key] = total.rejected.get(key, 0) + value
            if parts:
                _write_find_outputs(outputs, run, PeakList.concatenate(parts))
            finish_find_command(per_batch, run, outcome)
            if not args.quiet:
                if run.job.hot_pixel_frames and not hot_reported:
                    looked = run.job.hot_pixel_frames
                    print(f"hot pixels: {len(run.hot_pixels)} masked (from {looked} frames looked at)")
                    hot_reported = True
                rate = 100.0 * total.n_hits / max(total.n_frames, 1)
                print(
                    f"+{len(readable)} files: {b.n_frames} frames, {b.n_hits} hits, {b.n_peaks} peaks   "
                    f"so far: {total.n_frames} frames, hit rate {rate:.1f} %",
                    flush=True,
                )
    except KeyboardInterrupt:
        if not args.quiet:
            print("stopped; the outputs hold every batch finished", flush=True)
    for spec, (_since, why) in retry.items():
        log.error("%s: left out, unreadable (%s)", spec, why)
        total.failures.append(f"{spec}: unreadable file, left out ({why})")
    if not args.quiet:
        print(f"finder: {job.finder}")
        for line in total.lines():
            print(line)
    return 0


def _add_find_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from .finder import DEFAULT_FINDER, available_finders
    from .parallel.cli_support import add_parallel_arguments

    p = sub.add_parser(
        "find",
        help="find Bragg peaks in detector frames and write a peak list",
        description=(
            "Find Bragg peaks in every frame of the inputs (in the order given; a glob sorted by name) and write "
            "a peak list: CXI (.h5/.cxi, CrystFEL --peaks=cxi), CrystFEL stream (.stream), DIALS reflection "
            "table (.refl, dials.index) or CSV (.csv). "
            f"With no --finder, {DEFAULT_FINDER} runs with defaults meant to work on common detectors untuned."
        ),
        formatter_class=_HelpFormatter,
    )
    _add_input_arguments(p)
    p.add_argument("--finder", choices=available_finders(), help=f"peak finder (default: {DEFAULT_FINDER})")
    p.add_argument(
        "--model",
        metavar="MODEL",
        help="trained model for --finder cnn/svm/unet (braggml train); without it, the built-in one",
    )
    p.add_argument("-o", "--output", metavar="PEAKS", help="peak list to write (.h5/.cxi, .stream, .csv, .refl)")
    p.add_argument(
        "--format", choices=["cxi", "stream", "csv", "refl"], help="peak-list format (default: from extension)"
    )
    p.add_argument(
        "--dials-expt",
        metavar="EXPT",
        help="for a .refl output: the frames' DIALS experiment list (dials.import), for a rotation sequence "
        "(one experiment), the experiment identifiers and the detector's panels; without it the frames are "
        "stills on one panel",
    )
    p.add_argument(
        "--min-peaks", type=int, default=HIT_MIN_PEAKS, metavar="N", help="a frame with >= N peaks is a hit"
    )
    p.add_argument("--hits-out", metavar="LIST", help="write hit frames as a CrystFEL event list (file //index)")
    p.add_argument(
        "--plot",
        metavar="PNG",
        help="picture of the run: peaks per frame and hit rate, where the peaks lie, peakogram, SNRs",
    )
    p.add_argument("--config", metavar="YAML", help="finder settings: 'finder: NAME' and a 'NAME:' mapping")
    p.add_argument("-p", "--param", action="append", metavar="NAME=VALUE", help="set any finder parameter (repeatable)")
    p.add_argument(
        "--follow",
        action="store_true",
        help="keep looking for new files of the inputs' globs as the detector writes them and find their peaks, "
        "rewriting the outputs after each batch (with --split-output, one peak list per file; a restart skips "
        "files that have theirs)",
    )
    p.add_argument("--follow-poll", type=float, default=2.0, metavar="S", help="seconds between looks (--follow)")
    p.add_argument(
        "--follow-idle",
        type=float,
        default=600.0,
        metavar="S",
        help="stop after S seconds without a new file (0: never; --follow)",
    )
    p.add_argument(
        "--follow-retry",
        type=float,
        default=300.0,
        metavar="S",
        help="try a file that cannot be read yet again on every look for S seconds, as an Eiger master file "
        "whose data files are still to come (--follow)",
    )
    p.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    add_parallel_arguments(p)
    _add_geometry_arguments(p)
    params = _finder_params()
    fp = p.add_argument_group("finder parameters (each applies to the finders named; defaults are the finder's)")
    for key, (_annotation, owners) in sorted(params.items()):
        shown = ", ".join(f"{name} {default!r}" for name, default in owners.items())
        fp.add_argument(
            "--" + key.replace("_", "-"),
            dest=f"fp_{key}",
            type=str,  # converted and checked by the finder's configuration
            metavar="V",
            default=None,
            help=f"default: {shown}",
        )
    p.set_defaults(func=_cmd_find, _finder_params=params)
    return p


# ---------------------------------------------------------------------------------------------- slurm, merge
def _cmd_slurm_find(args: argparse.Namespace) -> int:
    from .parallel.cli_support import run_slurm_find

    _find_job(args)  # reject bad finder settings before writing a script
    return run_slurm_find(args, args._slurm_parser)


def _add_slurm_parser(sub: argparse._SubParsersAction) -> None:
    from .parallel.cli_support import add_slurm_arguments

    p = sub.add_parser(
        "slurm",
        help="write (and submit) a SLURM job array that runs a command over shards of the frames",
        description=(
            "Write an sbatch job-array script whose task i runs 'braggml find ... --shard i/N' into "
            "<stem>.shard-i<suffix>, and a merge job that joins the shards into -o. --dry-run prints both; "
            "--submit submits them (the merge after every task succeeded)."
        ),
    )
    inner = p.add_subparsers(dest="slurm_command", metavar="COMMAND")
    inner.required = True
    fp = _add_find_parser(inner)
    add_slurm_arguments(fp)
    fp.set_defaults(func=_cmd_slurm_find, _slurm_parser=fp)


def _cmd_merge(args: argparse.Namespace) -> int:
    from .parallel.cli_support import run_merge

    return run_merge(args)


def _add_merge_parser(sub: argparse._SubParsersAction) -> None:
    from .parallel.cli_support import add_merge_arguments

    p = sub.add_parser(
        "merge",
        help="join the shard outputs of 'find --shard i/N' into one peak list",
        description="Check that the shard outputs are the complete set of one run, then join them in frame order.",
        formatter_class=_HelpFormatter,
    )
    add_merge_arguments(p)
    p.set_defaults(func=_cmd_merge)


# ---------------------------------------------------------------------------------------------- simulate
def _add_simulate_parser(sub: argparse._SubParsersAction) -> None:
    from .simulate.cli_support import add_simulate_arguments, run_simulate

    p = sub.add_parser(
        "simulate",
        help="simulate realistic diffraction frames with ground truth",
        description="Simulate serial-crystallography frames with peak-level ground truth, written as CXI/HDF5.",
        formatter_class=_HelpFormatter,
    )
    add_simulate_arguments(p)
    p.set_defaults(func=run_simulate)


# ---------------------------------------------------------------------------------------------- train
def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    from .ml.cli_support import add_train_arguments, run_train

    p = sub.add_parser(
        "train",
        help="train a CNN or SVM peak classifier on your frames, or the U-Net on frames it simulates",
        description=(
            "--model cnn/svm: find candidates with a high-recall classical finder, cut patches around them, label "
            "them against the truth (a simulated file's truth group or --labels PEAKS) and train a CNN (PyTorch) "
            "or an SVM (scikit-learn). Frames are split into train/validation/test sets, never patches. "
            "--model unet: train the whole-frame segmentation network on frames it simulates (hits, weak hits, "
            "ice, blanks, crowded and quiet frames of the --preset detectors); see docs/unet.md."
        ),
        formatter_class=_HelpFormatter,
    )
    add_train_arguments(p)
    _add_geometry_arguments(p)
    p.set_defaults(func=run_train)


# ---------------------------------------------------------------------------------------------- export
def _add_export_parser(sub: argparse._SubParsersAction) -> None:
    from .ml.unet_cli import add_export_arguments, run_export

    p = sub.add_parser(
        "export",
        help="export a U-Net model file as TorchScript (.pt) or ONNX (.onnx) for deployment",
        description=(
            "Write the U-Net of MODEL, prepared for inference, as a TorchScript or ONNX file that takes (N, 2, S, S) "
            "normalised tiles and returns (N, 1, S, S) logits; the model settings travel with it. See docs/unet.md."
        ),
        formatter_class=_HelpFormatter,
    )
    add_export_arguments(p)
    p.set_defaults(func=run_export)


# ---------------------------------------------------------------------------------------------- evaluate
def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from .evaluate.metrics import evaluate_peaks
    from .evaluate.truth import load_truth, truth_for
    from .io.atomic import atomic_output
    from .io.peaklists import read_peaks

    if not args.radius > 0:
        raise ConfigError(f"--radius must be > 0, got {args.radius}")
    found = read_peaks(args.peaks, dials_experiments=args.dials_expt)
    truth = truth_for(
        load_truth(args.truth, min_snr=args.min_snr, dials_experiments=args.dials_expt),
        found,
        found_name=str(args.peaks),
    )
    ev = evaluate_peaks(
        found,
        truth.peaks,
        radius_px=args.radius,
        truth_resolution_a=truth.resolution_a,
        truth_is_hit=truth.is_hit,
        min_peaks=args.min_peaks,
        optional=truth.optional,
    )
    print(f"truth: {truth.source}")
    print(f"peaks: {args.peaks}")
    for line in ev.table_lines():
        print(line)
    if args.json:
        with atomic_output(args.json, mode="w") as fh:
            json.dump(ev.to_dict(), fh, indent=1)
        print(f"figures written to {args.json}")
    if args.report:
        report = _write_evaluation_report(Path(args.report), args, ev, found, truth)
        print(f"report written to {report}")
    return 0


def _write_evaluation_report(out: Path, args: argparse.Namespace, ev, found, truth) -> Path:
    import numpy as np

    from .evaluate.plots import plot_frame, plot_peak_counts, plot_precision_recall, plot_recall_vs_snr
    from .evaluate.report import write_report

    out.mkdir(parents=True, exist_ok=True)
    name = Path(args.peaks).name
    pictures = {
        "recall against truth SNR": plot_recall_vs_snr({name: ev}, out / "recall_vs_snr.png"),
        "peaks per frame": plot_peak_counts(
            {"truth": truth.peaks.counts_per_frame(), name: found.counts_per_frame()}, out / "peak_counts.png"
        ),
    }
    if np.isfinite(found.score).any():
        pictures["precision-recall"] = plot_precision_recall(
            {name: found}, truth.peaks, out / "precision_recall.png", optional=truth.optional
        )
    refs = truth.peaks.frames or found.frames
    if refs:
        from .io.frames import open_frames

        counts = truth.peaks.counts_per_frame()
        k = int(np.argmax(counts))
        ref = refs[k]
        try:
            frame = open_frames(f"{ref.file}::{ref.dataset}" if ref.dataset else ref.file).frame(ref.index)
        except BraggMLError as exc:
            log.warning("frame picture left out: %s", exc)
        else:
            pictures[f"frame {k}"] = plot_frame(
                frame.data,
                out / f"frame_{k}.png",
                mask=frame.bad,
                found=found.for_frame(k),
                truth=truth.peaks.for_frame(k),
                radius_px=args.radius,
                title=f"{ref}",
                optional=None if truth.optional is None else truth.optional.for_frame(k),
            )
    return write_report(out, {name: ev}, pictures=pictures, notes=[f"Truth: {truth.source}."])


def _add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a peak list against ground truth or another peak list",
        description=(
            "Match found peaks one-to-one to true peaks within a radius, frame by frame, and report precision, "
            "recall, F1, centroid errors, recall by SNR and resolution, and hit finding. The truth is a braggml "
            "simulated file or any peak list (CXI, stream, CSV, DIALS .refl), so two finders can be compared on "
            "real data."
        ),
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--truth", required=True, metavar="FILE", help="simulated file or peak list holding the truth")
    p.add_argument("--peaks", required=True, metavar="PEAKS", help="peak list to score")
    p.add_argument("--radius", type=float, default=2.0, help="largest distance of a match (px)")
    p.add_argument(
        "--min-peaks",
        type=int,
        default=HIT_MIN_PEAKS,
        metavar="N",
        help="a frame with >= N found peaks is called a hit",
    )
    p.add_argument(
        "--min-snr",
        type=float,
        help="score only simulated truth spots with at least this SNR (a peak found at a weaker one is neither "
        "a true nor a false positive)",
    )
    p.add_argument(
        "--dials-expt",
        metavar="EXPT",
        help="DIALS experiment list (imported.expt) whose detector places the spots of .refl tables on several "
        "panels on the frame",
    )
    p.add_argument("--json", metavar="OUT", help="write every figure as JSON")
    p.add_argument("--report", metavar="DIR", help="write a Markdown report with pictures into DIR")
    p.set_defaults(func=_cmd_evaluate)


# ---------------------------------------------------------------------------------------------- show
def _cmd_show(args: argparse.Namespace) -> int:
    from .evaluate.plots import plot_frame
    from .io.frames import open_frames
    from .io.peaklists import read_peaks
    from .pipeline import combine_masks

    source = open_frames(args.file, dataset=args.dataset)
    if not 0 <= args.frame < len(source):
        raise ConfigError(f"--frame {args.frame} out of range: {args.file} holds {len(source)} frames")
    frame = source.frame(args.frame)
    found = truth = optional = None
    if args.peaks:
        found = read_peaks(args.peaks, dials_experiments=args.dials_expt)
        if args.frame >= found.n_frames:
            raise ConfigError(f"{args.peaks} has no frame {args.frame} ({found.n_frames} frames)")
        found = found.for_frame(args.frame)
    if args.truth:
        from .evaluate.truth import load_truth

        loaded = load_truth(args.truth, dials_experiments=args.dials_expt)
        if args.frame >= loaded.peaks.n_frames:
            raise ConfigError(f"{args.truth} has no frame {args.frame} ({loaded.peaks.n_frames} frames)")
        truth = loaded.peaks.for_frame(args.frame)
        if loaded.optional is not None:
            optional = loaded.optional.for_frame(args.frame)
    geometry = geometry_mask = None
    if args.geom:
        from .io.geom import read_crystfel_geom, read_geometry_masks

        geometry = read_crystfel_geom(args.geom)
        geometry_mask = read_geometry_masks(geometry, frame.data.shape, data_file=source.files[0])
    mask = combine_masks(frame.data.shape, source.file_mask(), frame.bad, geometry_mask)
    out = plot_frame(
        frame.data,
        args.output,
        mask=mask,
        found=found,
        truth=truth,
        title=str(frame.ref),
        optional=optional,
        geometry=geometry,
    )
    print(f"picture written to {out}")
    return 0


def _add_show_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "show",
        help="save a PNG of a frame with its peaks",
        description=(
            "Save a frame on a log scale (masked pixels grey) with found and/or true peaks marked: the data array "
            "as stored, or with --geom the detector as assembled in the laboratory frame."
        ),
        formatter_class=_HelpFormatter,
    )
    p.add_argument("file", metavar="FILE", help="detector file (FILE::/dataset allowed)")
    p.add_argument("--dataset", metavar="PATH", help="dataset holding the frames")
    p.add_argument("--frame", type=int, default=0, help="frame number in the file")
    p.add_argument("--peaks", metavar="PEAKS", help="peak list to mark")
    p.add_argument("--truth", metavar="FILE", help="truth to mark (simulated file or peak list)")
    p.add_argument(
        "--dials-expt",
        metavar="EXPT",
        help="DIALS experiment list whose detector places the spots of .refl tables on several panels",
    )
    p.add_argument(
        "--geom", metavar="GEOM", help="CrystFEL geometry: draw the panels where they sit (x right, y up, beam at 0)"
    )
    p.add_argument("-o", "--output", default="frame.png", metavar="PNG", help="picture to write")
    p.set_defaults(func=_cmd_show)


# ---------------------------------------------------------------------------------------------- demo
def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    if not args.quiet:
        _notice_first_compile(args.command)
    return run_demo(
        out_dir=Path(args.out),
        n_frames=args.frames,
        n_train_frames=args.train_frames,
        seed=args.seed,
        preset=args.preset,
        learned=() if args.no_train else ("cnn", "svm"),
        epochs=args.epochs,
        progress=not args.quiet,
    )


def _add_demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="simulate data, train the learned finders, compare every finder and write a report (no data needed)",
        description=(
            "The main job on built-in data: simulate a training and a test run with ground truth, train the CNN and "
            "SVM patch classifiers, run the classical finders with default settings, the trained models and the "
            "models shipped with braggml (cnn_builtin, svm_builtin, unet) on the test frames, print a side-by-side "
            "table and write a Markdown report with pictures."
        ),
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--out", default="braggml-demo", metavar="DIR", help="folder for the demo's files")
    p.add_argument("--frames", type=int, default=8, help="number of test frames to simulate")
    p.add_argument("--train-frames", type=int, default=8, help="number of training frames for the learned finders")
    p.add_argument("--epochs", type=int, default=6, help="CNN training epochs")
    p.add_argument("--preset", default="jungfrau4m", help="simulation preset (see braggml simulate --help)")
    p.add_argument("--no-train", action="store_true", help="skip the learned finders (classical finders only)")
    p.add_argument("--seed", type=int, default=2026, help="random seed")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)


# ---------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="braggml",
        description="Find Bragg peaks in X-ray crystallography detector frames (classical and learned finders).",
    )
    parser.add_argument("--version", action="version", version=f"braggml {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="more log output: info, and warnings of the libraries that read the files (-vv for debug)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "info",
        help="show what a detector file, a CrystFEL geometry or a model file holds",
        description=(
            "Show the datasets, frames, masks and geometry of detector files (and of the frames an event list "
            "names), and the kind, size, cut, training and held-out scores of model files (.safetensors)."
        ),
    )
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="detector file (FILE::/dataset picks a dataset), event list (.lst), CrystFEL geometry (.geom), "
                        "DIALS reflection table (.refl) or model (.safetensors)")
    p.add_argument("--builtin-models", action="store_true",
                   help="describe the models shipped with braggml (what --finder cnn|svm|unet uses without --model)")
    p.set_defaults(func=_cmd_info)

    _add_find_parser(sub)
    _add_slurm_parser(sub)
    _add_merge_parser(sub)
    _add_simulate_parser(sub)
    _add_train_parser(sub)
    _add_export_parser(sub)
    _add_evaluate_parser(sub)
    _add_show_parser(sub)
    _add_demo_parser(sub)
    return parser


def _notice_first_compile(command: str) -> None:
    """Say so before the finders' kernels are compiled (first run after an install or upgrade), a wait of tens
    of seconds that would otherwise look like a hang."""
    from .classical.jit import kernels_cached

    if not kernels_cached():
        print(
            f"braggml {command}: compiling the finders' kernels for this machine (first run of this braggml "
            "version here, about half a minute; later runs reuse them)",
            file=sys.stderr,
        )


# libraries whose warnings are about the files' own quirks (fabio: "Data at tag id '65000' is smaller than
# expected" for every private TIFF tag it cannot size), shown with -v only
_CHATTY_LOGGERS = ("fabio",)


class _LogFormatter(logging.Formatter):
    """``braggml: LEVEL: message``, with the logger's name for messages other libraries log (Python
    warnings name their source file already)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.name in ("braggml", "py.warnings") or record.name.startswith("braggml."):
            return f"braggml: {record.levelname}: {text}"
        return f"braggml: {record.levelname}: [{record.name}] {text}"


def _configure_logging(verbose: int) -> None:
    """Log to stderr at WARNING, INFO (-v) or DEBUG (-vv); Python warnings are logged too."""
    handler = logging.StreamHandler()
    handler.setFormatter(_LogFormatter("%(message)s"))
    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2), handlers=[handler])
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if verbose else logging.ERROR)
    logging.captureWarnings(True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except BraggMLError as exc:
        print(f"braggml {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # unwritable output folder, full disk, ...
        print(f"braggml {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"braggml {args.command}: interrupted", file=sys.stderr)
        return 130


__all__ = ["main", "build_parser"]
