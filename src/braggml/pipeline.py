"""Running a finder over a run of frames: masks combined, geometry applied, progress shown, peaks gathered."""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from .errors import ConfigError
from .finder import DEFAULT_FINDER, PeakFinder
from .geometry import (
    HC_KEV_A,
    DetectorGeometry,
    PanelRect,
    PixelMaps,
    derive_panels,
    flat_geometry,
    module_background_steps,
    split_cspad_sensors,
)
from .peaks import HIT_MIN_PEAKS, FrameRef, PeakList

if TYPE_CHECKING:
    from .classical.hotpixels import HotPixels
    from .io.frames import Frame
    from .io.metadata import GeometryHint

__all__ = [
    "FindJob",
    "PreparedRun",
    "RunSummary",
    "RunGeometry",
    "find_in_frames",
    "combine_masks",
    "resolve_geometry",
    "detector_panels",
    "MODULE_STEP_NOISE",
]

log = logging.getLogger(__name__)

#: Rejection causes shown in a run's summary (finders also count routine ones, such as too-small groups).
SUMMARY_REJECTIONS = frozenset({"ice_ring", "powder_ring", "masked", "lone_pixel", "not_significant", "max_num_peaks"})


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
    min_peaks: int = HIT_MIN_PEAKS,
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
        for k, (ref, peaks, message) in enumerate(_frame_peaks(finder, frames, mask, maps, summary.rejected)):
            refs.append(ref)
            bar.update(1)
            if peaks is None:
                log.error("%s: %s", ref, message)
                summary.failures.append(f"{ref}: {message}")
                results.append(PeakList.empty(1))
                continue
            results.append(peaks)
            summary.n_hits += int(len(peaks) >= min_peaks)
            summary.n_peaks += len(peaks)
            if on_frame is not None:
                on_frame(k, peaks)
            bar.set_postfix(peaks=len(peaks), hits=summary.n_hits, refresh=False)
    summary.n_frames = len(results)
    summary.seconds = time.perf_counter() - start
    return PeakList.concatenate(results, frames=refs), summary


def _add_rejections(total: dict[str, int], counts: dict[str, int]) -> None:
    for cause, count in counts.items():
        total[cause] = total.get(cause, 0) + int(count)


def _frame_peaks(
    finder: PeakFinder,
    frames: Iterable[tuple[NDArray | None, FrameRef, NDArray[np.bool_] | str | None]],
    mask: NDArray[np.bool_] | None,
    maps: PixelMaps | None,
    rejected: dict[str, int],
) -> Iterator[tuple[FrameRef, PeakList | None, str | None]]:
    """(ref, peaks, None) for each frame in order, (ref, None, message) for one that could not be read.

    A finder with a ``batch_runner`` (the U-Net on a GPU) gets the frames in batches through it; any other
    finds one frame at a time. Rejection counts are added to ``rejected``.
    """
    order: deque[tuple[FrameRef, str | None]] = deque()
    iterator = iter(frames)
    first = None
    for image, ref, bad in iterator:  # up to the first readable frame, whose shape sets up a batch runner
        if image is not None:
            first = (image, ref, bad)
            break
        yield ref, None, str(bad)
    if first is None:
        return
    make_runner = getattr(finder, "batch_runner", None)
    runner = None if make_runner is None else make_runner(first[0].shape, mask=mask, maps=maps)
    if runner is None:
        for image, ref, bad in itertools.chain([first], iterator):
            if image is None:
                yield ref, None, str(bad)
                continue
            peaks = finder.find(image, combine_masks(image.shape, mask, bad), maps=maps)
            _add_rejections(rejected, getattr(finder, "last_rejections", {}))
            yield ref, peaks, None
        return

    def readable() -> Iterator[tuple[NDArray, NDArray[np.bool_] | None]]:
        for image, ref, bad in itertools.chain([first], iterator):
            order.append((ref, None if image is not None else str(bad)))
            if image is not None:
                yield image, bad

    with runner:
        for peaks in runner.find_stream(readable()):
            while order[0][1] is not None:
                ref, message = order.popleft()
                yield ref, None, message
            yield order.popleft()[0], peaks, None
        _add_rejections(rejected, runner.rejected)
    while order:
        ref, message = order.popleft()
        yield ref, None, message


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
    panels: Sequence[PanelRect] | None = None,
) -> RunGeometry:
    """The detector description of a run from whatever geometry the user gave.

    A CrystFEL ``.geom`` file wins (its masks are read, relative to ``data_file`` where they name no file);
    otherwise a flat detector from the beam centre (plus pixel size and distance for resolution). Without
    either, the geometry the data files state (``hint``, see :func:`braggml.io.metadata.geometry_hint`) is
    used: a flat detector from its beam centre, pixel size and distance, a radius map from its beam centre
    alone, or its per-pixel radius map; pixel size, distance and wavelength given by the user take precedence
    over the hint's. With nothing at all, the radius is measured from the image centre and a warning says so.

    Without a ``.geom`` file, ``panels`` (see :func:`detector_panels`) split the frame into panels; pixels
    outside every panel are bad. Otherwise the frame is one panel.
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
    found = _geometry_without_file(
        shape,
        beam_center_rowcol=beam_center_rowcol,
        pixel_size_mm=pixel_size_mm,
        distance_mm=distance_mm,
        wavelength_a=wavelength_a,
        hint=hint,
    )
    if found is None:
        if pixel_size_mm is not None or distance_mm is not None:
            raise ConfigError("--pixel-size-mm/--distance-mm need --beam-center (or use --geom)")
        if warn:
            layout = f"{len(panels)} panels" if panels else "one panel"
            log.warning(
                "no detector geometry given: %s, beam at the image centre "
                "(give --geom or --beam-center for correct radial backgrounds and resolution)",
                layout,
            )
        found = RunGeometry(PixelMaps.fallback(shape))
    if panels:
        found = RunGeometry(found.maps.with_panels(panels), found.geometry, found.mask)
    return found


def _geometry_without_file(
    shape: tuple[int, int],
    *,
    beam_center_rowcol: tuple[float, float] | None,
    pixel_size_mm: float | None,
    distance_mm: float | None,
    wavelength_a: float | None,
    hint: GeometryHint | None,
) -> RunGeometry | None:
    """A one-panel run geometry from a beam centre or the file metadata; None when neither places the beam."""
    if beam_center_rowcol is not None:
        beam = (float(beam_center_rowcol[0]), float(beam_center_rowcol[1]))
        if pixel_size_mm is not None and distance_mm is not None:
            geometry = flat_geometry(
                shape,
                pixel_size_mm=pixel_size_mm,
                distance_mm=distance_mm,
                beam_center_rowcol=beam,
                wavelength_a=wavelength_a,
            )
            return RunGeometry(geometry.pixel_maps(shape), geometry)
        radius = _radius_from(shape, beam)
        return RunGeometry(PixelMaps(np.zeros(shape, np.int32), radius, np.zeros(shape, bool), None, known=True))
    if hint is not None:
        return _geometry_from_hint(
            shape, hint, pixel_size_mm=pixel_size_mm, distance_mm=distance_mm, wavelength_a=wavelength_a
        )
    return None


#: Median background step between facing modules (in noise units) from which modules get panels of their own.
MODULE_STEP_NOISE = 0.5


def detector_panels(
    shape: tuple[int, int],
    *,
    gap: NDArray[np.bool_] | None,
    hint: GeometryHint | None = None,
    image: NDArray[np.number] | None = None,
) -> tuple[PanelRect, ...]:
    """The panels of a frame read without a geometry file: its modules, from the file's layout or its gaps.

    Sensors the file stores side by side without gaps (:attr:`GeometryHint.panels`) are panels as they are.
    Otherwise the modules are the rectangles of good pixels that the gaps separate (see
    :func:`braggml.geometry.derive_panels`). CSPAD two-by-one sensors among them are split into their ASICs,
    with the big-pixel columns between them left out (see :func:`braggml.geometry.split_cspad_sensors`).
    Other modules become panels when their backgrounds step across the gaps (own offsets or gains, as
    pedestal-subtracted sensors have; see :func:`braggml.geometry.module_background_steps`); modules that
    join seamlessly (calibrated photon counters) stay one panel, as per-module background statistics would
    only add noise there, and the masked gaps already keep peaks within a module.

    Parameters
    ----------
    shape : (H, W)
        Frame shape.
    gap : (H, W) bool ndarray or None
        Pixels that are not usable: file mask, user mask and the marker values of a frame (True = gap).
    hint : GeometryHint, optional
        The file's own geometry description.
    image : (H, W) ndarray, optional
        A frame, to compare the modules' backgrounds; without it, modules found from the gaps are panels.

    Returns
    -------
    tuple of PanelRect
        The panels; empty when the frame is one panel.
    """
    if hint is not None and hint.panels:
        rects: tuple[PanelRect, ...] = tuple(hint.panels)
        how = f"sensors stored side by side ({hint.source})"
    elif gap is not None:
        if gap.shape != tuple(shape):
            raise ValueError(f"gap map of shape {gap.shape} does not match frames of shape {tuple(shape)}")
        rects = derive_panels(gap)
        how = "the gaps of the mask and marker values"
    else:
        return ()
    if not rects:
        return ()
    split, n_sensors = split_cspad_sensors(rects)
    sizes = sorted({p.shape for p in split}, key=lambda s: -s[0] * s[1])
    listed = ", ".join(f"{r} x {c}" for r, c in sizes[:3]) + (", ..." if len(sizes) > 3 else "")
    if not n_sensors and image is not None and gap is not None and not (hint is not None and hint.panels):
        steps = module_background_steps(image, gap, rects)
        if steps.size and float(np.median(steps)) < MODULE_STEP_NOISE:
            log.info(
                "%d modules (%s) from %s; their backgrounds join across the gaps (median step %.2f of the noise): "
                "one panel",
                len(split),
                listed,
                how,
                float(np.median(steps)),
            )
            return ()
    log.info("%d panels (%s) from %s", len(split), listed, how)
    if n_sensors:
        log.info(
            "CSPAD: %d two-by-one sensors split into their ASICs; the big-pixel columns between the ASICs are masked",
            n_sensors,
        )
    return split


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

    The last four are what the run learned from its frames, filled in by :class:`PreparedRun` once per run and
    passed on to every worker, so that no worker reads, refines or searches again: ``derived_panels`` (the
    panels of a frame read without a geometry file, see :func:`detector_panels`; None: not yet derived, empty:
    one panel), ``refined_beam_center_rowcol`` (the beam centre the refinement settled on; None: not yet
    refined), ``hot_pixels`` (flat indices of the run's hot pixels, see
    :func:`braggml.classical.hotpixels.find_hot_pixels`; None: not yet searched) and ``hot_pixel_frames`` (the
    frames that search looked at; 0: none, the run being too short or the search off).
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
    min_peaks: int = HIT_MIN_PEAKS
    refine_beam_center: bool = True
    search_hot_pixels: bool = True
    derived_panels: tuple[PanelRect, ...] | None = None
    refined_beam_center_rowcol: tuple[float, float] | None = None
    hot_pixels: tuple[int, ...] | None = None
    hot_pixel_frames: int = 0

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ConfigError("no inputs given")
        if self.min_peaks < 1:
            raise ConfigError(f"min_peaks must be >= 1, got {self.min_peaks}")
        if self.derived_panels is not None:
            try:
                panels = tuple(PanelRect(*(int(v) for v in rect)) for rect in self.derived_panels)
            except (TypeError, ValueError):
                raise ConfigError(
                    "derived_panels must be (min_row, max_row, min_col, max_col) rectangles, "
                    f"got {self.derived_panels!r}"
                ) from None
            object.__setattr__(self, "derived_panels", panels)
        if self.refined_beam_center_rowcol is not None:
            try:
                row, col = (float(v) for v in self.refined_beam_center_rowcol)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"refined_beam_center_rowcol must be (row, col), got {self.refined_beam_center_rowcol!r}"
                ) from None
            if not (math.isfinite(row) and math.isfinite(col)):
                raise ConfigError(f"refined_beam_center_rowcol must be finite, got {self.refined_beam_center_rowcol!r}")
            object.__setattr__(self, "refined_beam_center_rowcol", (row, col))
        if self.hot_pixels is not None:
            try:
                hot = tuple(sorted({int(v) for v in self.hot_pixels}))
            except (TypeError, ValueError):
                raise ConfigError(f"hot_pixels must be flat pixel indices, got {self.hot_pixels!r}") from None
            if hot and hot[0] < 0:
                raise ConfigError(f"hot_pixels must be >= 0, got {hot[0]}")
            object.__setattr__(self, "hot_pixels", hot)

    def make_finder(self) -> PeakFinder:
        from .finder import make_finder

        return make_finder(self.finder, **dict(self.params))


class PreparedRun:
    """A :class:`FindJob` opened: frames, finder, geometry and the run-wide mask, ready to process any range.

    What the run learns from its frames (the panels of a frame read without a geometry file, the refined beam
    centre) is found here once, from the first readable frame, and kept in :attr:`job`; a run opened from that
    job (a worker, a shard) takes them from it and reads no frame to find them again.
    """

    def __init__(self, job: FindJob, *, warn_without_geometry: bool = True) -> None:
        from .io.frames import open_frames

        self.job = job
        self.finder = job.make_finder()
        self.source = open_frames(
            list(job.inputs), dataset=job.dataset, detector_kind=job.detector_kind, saturation=job.saturation
        )
        self._first: Frame | None = None
        self._first_read = False
        shape = self.source.shape
        user_geometry = job.geom is not None or job.beam_center_rowcol is not None
        file_hint = None if job.geom is not None else self.source.geometry_hint()
        hint = None if user_geometry else file_hint
        user_mask = None
        if job.mask:
            from .io.masks import load_mask

            user_mask = load_mask(job.mask, shape=shape, one_means_good=job.mask_one_means_good)
        self._user_mask = user_mask
        panels = job.derived_panels
        if panels is None and job.geom is None:
            first = self._first_frame()
            gap = combine_masks(shape, self.source.file_mask(), user_mask, first.bad if first is not None else None)
            panels = detector_panels(shape, gap=gap, hint=file_hint, image=first.data if first is not None else None)
        self._panels: tuple[PanelRect, ...] = tuple(panels or ())
        #: Sensors stored side by side without placement: the array is not an image of the detector.
        self._unplaced = file_hint is not None and bool(file_hint.panels)
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
            panels=self._panels,
        )
        self._hot: NDArray[np.bool_] | None = None
        self._update_mask()
        centre = job.refined_beam_center_rowcol
        if job.refine_beam_center and not user_geometry:
            centre = self._refine_beam_center(hint, centre, warn=warn_without_geometry)
        self._first = None
        hot, hot_frames = job.hot_pixels, job.hot_pixel_frames
        if hot is None:
            hot, hot_frames = self._search_hot_pixels() if job.search_hot_pixels else ((), 0)
        if hot:
            if hot[-1] >= shape[0] * shape[1]:
                raise ConfigError(f"hot pixel index {hot[-1]} outside frames of shape {shape}")
            self._hot = np.zeros(shape, bool)
            self._hot.flat[np.asarray(hot, np.int64)] = True
            self._update_mask()
        self.source.close()
        self.job = replace(
            job,
            derived_panels=self._panels if job.geom is None else None,
            refined_beam_center_rowcol=centre,
            hot_pixels=hot,
            hot_pixel_frames=hot_frames,
        )

    def _first_frame(self) -> Frame | None:
        """The run's first readable frame (of the first three), read once; None when none can be read."""
        from .errors import DataFormatError

        if not self._first_read:
            self._first_read = True
            for k in range(min(len(self.source), 3)):
                try:
                    self._first = self.source.frame(k)
                    break
                except DataFormatError:
                    continue
        return self._first

    def _update_mask(self) -> None:
        self.mask = combine_masks(
            self.source.shape,
            self.source.file_mask(),
            self._user_mask,
            self.geometry.maps.mask,
            self.geometry.mask,
            self._hot,
        )

    @property
    def hot_pixels(self) -> HotPixels:
        """The run's hot pixels (masked in every frame); empty when the search was off or the run too short."""
        from .classical.hotpixels import HotPixels

        flat = np.asarray(self.job.hot_pixels or (), dtype=np.int64)
        return HotPixels(self.source.shape, flat, np.full(flat.size, np.nan), self.job.hot_pixel_frames)

    def _search_hot_pixels(self) -> tuple[tuple[int, ...], int]:
        """(flat indices, frames looked at) of the run's hot pixels, from frames spread over the run."""
        from .classical.hotpixels import HotPixelConfig, find_run_hot_pixels
        from .errors import DataFormatError

        config = HotPixelConfig()

        def read(k: int) -> tuple[NDArray, NDArray[np.bool_]] | None:
            try:
                frame = self.source.frame(k)
            except DataFormatError:
                return None
            bad = self.mask | frame.bad
            flags = self.geometry.frame_flags(frame.data)
            return frame.data, (bad if flags is None else bad | flags)

        t0 = time.perf_counter()
        found = find_run_hot_pixels(read, len(self.source), self.source.shape, config=config)
        if found.n_frames:
            log.info(
                "hot pixels: %d masked (standing alone in >= %.0f %% of %d frames looked at, %.1f s)",
                len(found),
                100 * config.min_fraction,
                found.n_frames,
                time.perf_counter() - t0,
            )
        return tuple(int(v) for v in found.flat_index), found.n_frames

    def _refine_beam_center(
        self, hint: GeometryHint | None, known: tuple[float, float] | None, *, warn: bool
    ) -> tuple[float, float] | None:
        """Move a stated (file header) or assumed (image centre) beam centre to where the scattering is circular.

        Done once per run on its first readable frame; ``known`` is the centre an earlier refinement of the
        same run settled on (a worker's job carries it), taken without reading a frame. Runs whose geometry is
        a per-pixel radius map (multi-panel detectors) or whose sensors are stored unplaced are left alone.
        Returns the centre settled on, None when there was nothing to refine.
        """
        from .classical.centering import fit_beam_center

        shape = self.source.shape
        if hint is not None and hint.beam_center_rowcol is not None:
            start, search, stated = (float(hint.beam_center_rowcol[0]), float(hint.beam_center_rowcol[1])), 32.0, True
        elif self.geometry.maps.known or self._unplaced:
            if self._unplaced and warn:
                log.warning(
                    "no detector geometry given: the sensors are stored side by side, not placed, so there is no "
                    "beam centre to refine (give --geom for radial backgrounds and resolution)"
                )
            return None
        else:
            start, search, stated = ((shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0), 64.0, False
        if known is not None:
            centre = known
        else:
            centre = start
            frame = self._first_frame()
            if frame is not None:
                fit = fit_beam_center(frame.data, self.mask | frame.bad, start, search_px=search)
                centre = fit.center_rowcol
                if fit.moved:
                    log.info(
                        "beam centre refined from the scattering of %s: (%.2f, %.2f) -> (%.2f, %.2f) px (row, col); "
                        "radial coherence %.3f -> %.3f",
                        frame.ref,
                        *start,
                        *centre,
                        fit.coherence_start,
                        fit.coherence_best,
                    )
                elif fit.failed and warn:
                    log.warning(
                        "beam centre refinement on %s failed (%s); keeping the %s centre (%.1f, %.1f) "
                        "(give --beam-center or --geom if it is wrong)",
                        frame.ref,
                        fit.reason,
                        "stated" if stated else "assumed image",
                        *start,
                    )
        if centre != start:
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
                panels=self._panels,
            )
            self._update_mask()
        if warn and not stated:
            where = "found from the frame's circular scattering" if centre != start else "assumed at the image centre"
            if not (0 <= centre[0] <= shape[0] - 1 and 0 <= centre[1] <= shape[1] - 1):
                where += " off the chip"
            layout = f"{len(self._panels)} panels" if self._panels else "one panel"
            log.warning(
                "no detector geometry given: %s, beam centre %s at (%.1f, %.1f) "
                "(give --geom or --beam-center for correct radial backgrounds and resolution)",
                layout,
                where,
                *centre,
            )
        return centre

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
