"""Running a finder over a run of frames: masks combined, geometry applied, progress shown, peaks gathered."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from .errors import ConfigError
from .finder import DEFAULT_FINDER, PeakFinder
from .geometry import HC_KEV_A, DetectorGeometry, PixelMaps, flat_geometry
from .peaks import FrameRef, PeakList

if TYPE_CHECKING:
    from .io.metadata import GeometryHint

__all__ = [
    "FindJob",
    "PreparedRun",
    "RunSummary",
    "RunGeometry",
    "find_in_frames",
    "combine_masks",
    "resolve_geometry",
]

log = logging.getLogger(__name__)

#: Rejection causes shown in a run's summary (finders also count routine ones, such as too-small groups).
SUMMARY_REJECTIONS = frozenset({"ice_ring", "powder_ring", "masked", "not_significant", "max_num_peaks"})


@dataclass
class RunSummary:
    """What a run did: frames, hits, peaks, failures and time."""

    n_frames: int = 0
    n_hits: int = 0
    n_peaks: int = 0
    seconds: float = 0.0
    min_peaks: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def frames_per_second(self) -> float:
        return self.n_frames / self.seconds if self.seconds > 0 else float("nan")

    def lines(self) -> list[str]:
        """The summary as short human-readable lines."""
        out = [
            f"frames: {self.n_frames}   hits (>= {self.min_peaks} peaks): {self.n_hits}   peaks: {self.n_peaks}",
            f"time: {self.seconds:.2f} s ({self.frames_per_second:.2f} frames/s)",
        ]
        shown = {k: v for k, v in self.rejected.items() if k in SUMMARY_REJECTIONS and v}
        if shown:
            out.append("rejected peaks: " + ", ".join(f"{k} {v}" for k, v in sorted(shown.items())))
        if self.failures:
            out.append(f"failures: {len(self.failures)}")
            out.extend(f"  {f}" for f in self.failures)
        return out


def combine_masks(shape: tuple[int, int], *masks: NDArray[np.bool_] | None) -> NDArray[np.bool_]:
    """OR of the given bad-pixel masks (None ignored); each must have ``shape``."""
    out = np.zeros(shape, dtype=bool)
    for m in masks:
        if m is None:
            continue
        if m.shape != tuple(shape):
            raise ValueError(f"mask of shape {m.shape} does not match frames of shape {tuple(shape)}")
        out |= m
    return out


def find_in_frames(
    finder: PeakFinder,
    frames: Iterable[tuple[NDArray | None, FrameRef, NDArray[np.bool_] | None]],
    *,
    n_frames: int | None = None,
    mask: NDArray[np.bool_] | None = None,
    maps: PixelMaps | None = None,
    min_peaks: int = 1,
    progress: bool = True,
    on_frame: Callable[[int, PeakList], None] | None = None,
) -> tuple[PeakList, RunSummary]:
    """Run ``finder`` on every frame, in order.

    Parameters
    ----------
    finder : PeakFinder
        The finder to run.
    frames : iterable of (image, ref, bad)
        Each frame, its provenance and its own invalid pixels (or None). A frame that could not be read comes
        as ``(None, ref, message)``: it is counted as a failure, gets no peaks, and the run goes on.
    n_frames : int, optional
        Number of frames, for the progress bar.
    mask : (H, W) bool ndarray, optional
        Bad pixels shared by all frames (file, user and geometry masks combined).
    maps : PixelMaps, optional
        Detector maps; the fallback is used when omitted.
    min_peaks : int
        A frame with at least this many peaks counts as a hit in the summary.
    progress : bool
        Show a progress bar with frames/s.
    on_frame : callable, optional
        Called with (frame number, one-frame peaks) after each frame.
    """
    from tqdm.auto import tqdm

    results: list[PeakList] = []
    refs: list[FrameRef] = []
    summary = RunSummary(min_peaks=min_peaks)
    start = time.perf_counter()
    with tqdm(total=n_frames, unit="frame", disable=not progress, dynamic_ncols=True, leave=False) as bar:
        for k, (image, ref, bad) in enumerate(frames):
            if image is None:
                log.error("%s: %s", ref, bad)
                summary.failures.append(f"{ref}: {bad}")
                results.append(PeakList.empty(1))
                refs.append(ref)
                bar.update(1)
                continue
            frame_mask = combine_masks(image.shape, mask, bad)
            peaks = finder.find(image, frame_mask, maps=maps)
            for cause, count in getattr(finder, "last_rejections", {}).items():
                summary.rejected[cause] = summary.rejected.get(cause, 0) + int(count)
            results.append(peaks)
            refs.append(ref)
            summary.n_hits += int(len(peaks) >= min_peaks)
            summary.n_peaks += len(peaks)
            if on_frame is not None:
                on_frame(k, peaks)
            bar.update(1)
            bar.set_postfix(peaks=len(peaks), hits=summary.n_hits, refresh=False)
    summary.n_frames = len(results)
    summary.seconds = time.perf_counter() - start
    return PeakList.concatenate(results, frames=refs), summary


@dataclass(frozen=True, eq=False)
class RunGeometry:
    """The detector description of a run: the geometry (when one was given) and its per-pixel maps."""

    maps: PixelMaps
    geometry: DetectorGeometry | None = None
    mask: NDArray[np.bool_] | None = None

    def frame_flags(self, image: NDArray) -> NDArray[np.bool_] | None:
        """Pixels of one frame flagged bad by the geometry's value flags (CrystFEL ``flag_*``), if any."""
        return self.geometry.flagged_pixels(image) if self.geometry is not None else None


def resolve_geometry(
    shape: tuple[int, int],
    *,
    geom: str | None = None,
    beam_center_rowcol: tuple[float, float] | None = None,
    pixel_size_mm: float | None = None,
    distance_mm: float | None = None,
    wavelength_a: float | None = None,
    photon_energy_ev: float | None = None,
    data_file: str | None = None,
    warn: bool = True,
    hint: GeometryHint | None = None,
) -> RunGeometry:
    """The detector description of a run from whatever geometry the user gave.

    A CrystFEL ``.geom`` file wins (its masks are read, relative to ``data_file`` where they name no file);
    otherwise a flat detector from the beam centre (plus pixel size and distance for resolution). Without
    either, the geometry the data files state (``hint``, see :func:`braggml.io.metadata.geometry_hint`) is
    used: a flat detector from its beam centre, pixel size and distance, a radius map from its beam centre
    alone, or its per-pixel radius map; pixel size, distance and wavelength given by the user take precedence
    over the hint's. With nothing at all, one panel with the radius measured from the image centre is used and
    a warning says so.
    """
    if photon_energy_ev is not None:
        if not photon_energy_ev > 0:
            raise ConfigError(f"photon_energy_ev must be > 0, got {photon_energy_ev}")
        wavelength_a = HC_KEV_A / (photon_energy_ev / 1000.0)
    for name, value in (("pixel_size_mm", pixel_size_mm), ("distance_mm", distance_mm), ("wavelength_a", wavelength_a)):
        if value is not None and not value > 0:
            raise ConfigError(f"{name} must be > 0, got {value}")
    if geom is not None:
        from .io.geom import read_crystfel_geom, read_geometry_masks

        geometry = read_crystfel_geom(geom)
        if wavelength_a is not None:
            geometry = geometry.with_wavelength(wavelength_a)
        geometry_mask = read_geometry_masks(geometry, shape, data_file=data_file)
        maps = geometry.pixel_maps(shape)
        return RunGeometry(maps, geometry, geometry_mask)
    if beam_center_rowcol is not None:
        if pixel_size_mm is not None and distance_mm is not None:
            geometry = flat_geometry(
                shape,
                pixel_size_mm=pixel_size_mm,
                distance_mm=distance_mm,
                beam_center_rowcol=(float(beam_center_rowcol[0]), float(beam_center_rowcol[1])),
                wavelength_a=wavelength_a,
            )
            return RunGeometry(geometry.pixel_maps(shape), geometry)
        radius = _radius_from(shape, (float(beam_center_rowcol[0]), float(beam_center_rowcol[1])))
        return RunGeometry(PixelMaps(np.zeros(shape, np.int32), radius, np.zeros(shape, bool), None, known=True))
    if hint is not None:
        from_hint = _geometry_from_hint(
            shape, hint, pixel_size_mm=pixel_size_mm, distance_mm=distance_mm, wavelength_a=wavelength_a
        )
        if from_hint is not None:
            return from_hint
    if pixel_size_mm is not None or distance_mm is not None:
        raise ConfigError("--pixel-size-mm/--distance-mm need --beam-center (or use --geom)")
    if warn:
        log.warning(
            "no detector geometry given: treating the frame as one panel with the beam at the image centre "
            "(give --geom or --beam-center for correct radial backgrounds and resolution)"
        )
    return RunGeometry(PixelMaps.fallback(shape))


def _radius_from(shape: tuple[int, int], beam_center_rowcol: tuple[float, float]) -> NDArray[np.float32]:
    rows, cols = shape
    return np.hypot(
        np.arange(rows, dtype=np.float32)[:, None] - np.float32(beam_center_rowcol[0]),
        np.arange(cols, dtype=np.float32)[None, :] - np.float32(beam_center_rowcol[1]),
    ).astype(np.float32)


def _geometry_from_hint(
    shape: tuple[int, int],
    hint: GeometryHint,
    *,
    pixel_size_mm: float | None,
    distance_mm: float | None,
    wavelength_a: float | None,
) -> RunGeometry | None:
    """The run geometry the file metadata gives (user values first), or None when it does not place the beam."""
    pixel = pixel_size_mm if pixel_size_mm is not None else hint.pixel_size_mm
    distance = distance_mm if distance_mm is not None else hint.distance_mm
    wavelength = wavelength_a if wavelength_a is not None else hint.wavelength_a
    if hint.beam_center_rowcol is not None:
        beam = (float(hint.beam_center_rowcol[0]), float(hint.beam_center_rowcol[1]))
        if pixel is not None and distance is not None:
            geometry = flat_geometry(
                shape, pixel_size_mm=pixel, distance_mm=distance, beam_center_rowcol=beam, wavelength_a=wavelength
            )
            log.info("geometry from file metadata: %s", hint.summary())
            return RunGeometry(geometry.pixel_maps(shape), geometry)
        log.info("geometry from file metadata: %s (no resolution without pixel size and distance)", hint.summary())
        radius = _radius_from(shape, beam)
        return RunGeometry(PixelMaps(np.zeros(shape, np.int32), radius, np.zeros(shape, bool), None, known=True))
    if hint.radius_px is not None:
        if hint.radius_px.shape != tuple(shape):
            log.warning(
                "file metadata radius map of shape %s does not fit frames of shape %s; ignored",
                hint.radius_px.shape,
                tuple(shape),
            )
            return None
        radius = np.array(hint.radius_px, dtype=np.float32)
        log.info("geometry from file metadata: %s", hint.summary())
        return RunGeometry(PixelMaps(np.zeros(shape, np.int32), radius, np.zeros(shape, bool), None, known=True))
    return None


@dataclass(frozen=True)
class FindJob:
    """Everything that defines a ``braggml find`` run; small and picklable, so workers can open their own frames.

    Attributes mirror the command line: inputs (files, globs, ``FILE::/dataset``), the frame dataset, the finder's
    name and parameters, masks, saturation, detector kind and geometry.
    """

    inputs: tuple[str, ...]
    dataset: str | None = None
    finder: str = DEFAULT_FINDER
    params: tuple[tuple[str, Any], ...] = ()
    mask: str | None = None
    mask_one_means_good: bool = False
    saturation: float | None = None
    detector_kind: str | None = None
    geom: str | None = None
    beam_center_rowcol: tuple[float, float] | None = None
    pixel_size_mm: float | None = None
    distance_mm: float | None = None
    wavelength_a: float | None = None
    photon_energy_ev: float | None = None
    min_peaks: int = 1
    refine_beam_center: bool = True

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ConfigError("no inputs given")
        if self.min_peaks < 1:
            raise ConfigError(f"min_peaks must be >= 1, got {self.min_peaks}")

    def make_finder(self) -> PeakFinder:
        from .finder import make_finder

        return make_finder(self.finder, **dict(self.params))


class PreparedRun:
    """A :class:`FindJob` opened: frames, finder, geometry and the run-wide mask, ready to process any range."""

    def __init__(self, job: FindJob, *, warn_without_geometry: bool = True) -> None:
        from .io.frames import open_frames

        self.job = job
        self.finder = job.make_finder()
        self.source = open_frames(
            list(job.inputs), dataset=job.dataset, detector_kind=job.detector_kind, saturation=job.saturation
        )
        shape = self.source.shape
        user_geometry = job.geom is not None or job.beam_center_rowcol is not None
        hint = None if user_geometry else self.source.geometry_hint()
        self.geometry = resolve_geometry(
            shape,
            geom=job.geom,
            beam_center_rowcol=job.beam_center_rowcol,
            pixel_size_mm=job.pixel_size_mm,
            distance_mm=job.distance_mm,
            wavelength_a=job.wavelength_a,
            photon_energy_ev=job.photon_energy_ev,
            data_file=self.source.files[0],
            warn=warn_without_geometry and (user_geometry or not job.refine_beam_center),
            hint=hint,
        )
        user_mask = None
        if job.mask:
            from .io.masks import load_mask

            user_mask = load_mask(job.mask, shape=shape, one_means_good=job.mask_one_means_good)
        self._user_mask = user_mask
        self._update_mask()
        if job.refine_beam_center and not user_geometry:
            self._refine_beam_center(hint, warn=warn_without_geometry)

    def _update_mask(self) -> None:
        self.mask = combine_masks(
            self.source.shape, self.source.file_mask(), self._user_mask, self.geometry.maps.mask, self.geometry.mask
        )

    def _refine_beam_center(self, hint: GeometryHint | None, *, warn: bool) -> None:
        """Move a stated (file header) or assumed (image centre) beam centre to where the scattering is circular.

        Done once per run on its first readable frame, so every worker and shard finds the same centre. Runs
        whose geometry is a per-pixel radius map (multi-panel detectors) are left alone.
        """
        from .classical.centering import refine_beam_center
        from .errors import DataFormatError

        shape = self.source.shape
        if hint is not None and hint.beam_center_rowcol is not None:
            start, search, stated = (float(hint.beam_center_rowcol[0]), float(hint.beam_center_rowcol[1])), 32.0, True
        elif self.geometry.maps.known:
            return
        else:
            start, search, stated = ((shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0), 64.0, False
        frame = None
        for k in range(min(len(self.source), 3)):
            try:
                frame = self.source.frame(k)
                break
            except DataFormatError:
                continue
        self.source.close()
        centre = start
        if frame is not None:
            centre, before, after = refine_beam_center(frame.data, self.mask | frame.bad, start, search_px=search)
        if centre != start:
            log.info(
                "beam centre refined from the scattering of %s: (%.2f, %.2f) -> (%.2f, %.2f) px (row, col); "
                "radial coherence %.3f -> %.3f",
                frame.ref,
                *start,
                *centre,
                before,
                after,
            )
            job = self.job
            wavelength_a = job.wavelength_a or (hint.wavelength_a if hint else None)
            self.geometry = resolve_geometry(
                shape,
                beam_center_rowcol=centre,
                pixel_size_mm=job.pixel_size_mm or (hint.pixel_size_mm if hint else None),
                distance_mm=job.distance_mm or (hint.distance_mm if hint else None),
                wavelength_a=wavelength_a,
                photon_energy_ev=job.photon_energy_ev if wavelength_a is None else None,
                warn=False,
            )
            self._update_mask()
        if warn and not stated:
            where = "found from the frame's circular scattering" if centre != start else "assumed at the image centre"
            log.warning(
                "no detector geometry given: one panel, beam centre %s at (%.1f, %.1f) "
                "(give --geom or --beam-center for correct radial backgrounds and resolution)",
                where,
                *centre,
            )

    def __len__(self) -> int:
        return len(self.source)

    def frames(self, start: int = 0, stop: int | None = None):
        """(image, ref, bad) of frames ``start <= k < stop``; an unreadable frame yields (None, ref, message)."""
        from .errors import DataFormatError

        stop = len(self.source) if stop is None else stop
        if not 0 <= start <= stop <= len(self.source):
            raise ConfigError(f"frame range {start}..{stop} outside the run's {len(self.source)} frames")
        try:
            for k in range(start, stop):
                try:
                    frame = self.source.frame(k)
                except DataFormatError as exc:
                    yield None, self.source.ref(k), str(exc)
                    continue
                bad = frame.bad
                flags = self.geometry.frame_flags(frame.data)
                if flags is not None:
                    bad = bad | flags
                yield frame.data, frame.ref, bad
        finally:
            self.source.close()

    def run(
        self, start: int = 0, stop: int | None = None, *, progress: bool = False, on_frame=None
    ) -> tuple[PeakList, RunSummary]:
        """Find the peaks of frames ``start <= k < stop``; the peak list covers just those frames."""
        stop = len(self.source) if stop is None else stop
        return find_in_frames(
            self.finder,
            self.frames(start, stop),
            n_frames=stop - start,
            mask=self.mask,
            maps=self.geometry.maps,
            min_peaks=self.job.min_peaks,
            progress=progress,
            on_frame=on_frame,
        )
