"""Detector geometry: what each pixel is (panel, distance from the beam, resolution, bad or not).

Finders do not read geometry files; they take :class:`PixelMaps`, per-pixel arrays computed once per run from
a :class:`DetectorGeometry` (flat detector parameters, :func:`flat_geometry`, or a CrystFEL ``.geom`` file, see
:func:`braggml.io.geom.read_crystfel_geom`) or, when nothing is known, from :func:`PixelMaps.fallback`.

Coordinates follow CrystFEL's geometry model (crystfel_geometry(5)). The laboratory frame has +z along the
beam, +y up and +x completing a right-handed frame; the beam passes through x = y = 0. A panel covers the
data-array rectangle ``min_ss..max_ss`` x ``min_fs..max_fs`` (inclusive) and its ``corner_x, corner_y`` is the
outer corner of its first pixel, in pixels of that panel. The *centre* of data pixel ``(ss, fs)`` is therefore
at::

    corner + (fs - min_fs + 0.5) * fs_vector + (ss - min_ss + 0.5) * ss_vector      (pixels)
    z = (clen_m + coffset_m) * res_px_per_m + the z components of the same sum      (pixels)

braggml's peak positions put pixel centres at integers (``row = ss``, ``col = fs`` for the centre of
``image[ss, fs]``), so a sub-pixel peak at ``(row, col)`` sits at ``fs = col + 0.5`` in CrystFEL's numbers.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from .errors import ConfigError

__all__ = [
    "PixelMaps",
    "HC_KEV_A",
    "Panel",
    "BadRegion",
    "MaskSpec",
    "MetadataRef",
    "DetectorGeometry",
    "flat_geometry",
    "assemble_image",
    "AssembledImage",
    "electron_wavelength_a",
    "PanelRect",
    "derive_panels",
    "split_cspad_sensors",
    "panel_id_from_rects",
    "module_background_steps",
    "CSPAD_SENSOR_SHAPE",
]

#: h*c in keV * Angstrom: wavelength_a = HC_KEV_A / energy_kev.
HC_KEV_A = 12.398419843320026


@dataclass(frozen=True, eq=False)
class PixelMaps:
    """Per-pixel maps of a detector, all of shape (H, W) matching the frames.

    Attributes
    ----------
    panel_id : (H, W) int32 ndarray
        Panel of each pixel; -1 where no panel covers the pixel (gaps between tiles).
    radius_px : (H, W) float32 ndarray
        Distance of each pixel centre from the beam axis, in pixels of the detector's pixel size.
    mask : (H, W) bool ndarray
        True marks a bad pixel from the geometry (no panel, bad regions, masks named in the geometry).
    resolution_a : (H, W) float32 ndarray or None
        Resolution d (Angstrom) at each pixel; None when wavelength or distance is unknown.
    known : bool
        False when the maps are the fallback (one panel, radius from the image centre).
    """

    panel_id: NDArray[np.int32]
    radius_px: NDArray[np.float32]
    mask: NDArray[np.bool_]
    resolution_a: NDArray[np.float32] | None = None
    known: bool = True

    def __post_init__(self) -> None:
        shape = np.shape(self.panel_id)
        for name in ("radius_px", "mask", "resolution_a"):
            value = getattr(self, name)
            if value is not None and np.shape(value) != shape:
                raise ValueError(f"PixelMaps.{name} has shape {np.shape(value)}, panel_id has {shape}")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.panel_id.shape)  # type: ignore[return-value]

    @property
    def n_panels(self) -> int:
        return int(self.panel_id.max()) + 1 if self.panel_id.size else 0

    @classmethod
    def fallback(cls, shape: tuple[int, int]) -> PixelMaps:
        """One panel covering the frame, radius measured from the image centre; no resolution."""
        rows, cols = shape
        r = np.arange(rows, dtype=np.float32) - (rows - 1) / 2.0
        c = np.arange(cols, dtype=np.float32) - (cols - 1) / 2.0
        radius = np.hypot(r[:, None], c[None, :]).astype(np.float32)
        return cls(
            panel_id=np.zeros(shape, np.int32),
            radius_px=radius,
            mask=np.zeros(shape, bool),
            resolution_a=None,
            known=False,
        )

    def with_panels(self, rects: Sequence[PanelRect]) -> PixelMaps:
        """The same maps with the panels ``rects`` (see :func:`derive_panels`); pixels of no panel become bad.

        Parameters
        ----------
        rects : sequence of PanelRect
            Panel rectangles; an empty sequence returns the maps unchanged.

        Returns
        -------
        PixelMaps
            ``panel_id`` from the rectangles (in order), ``mask`` also True wherever no rectangle reaches;
            radius, resolution and ``known`` as before.

        Examples
        --------
        >>> maps = PixelMaps.fallback((2, 5)).with_panels([PanelRect(0, 1, 0, 1), PanelRect(0, 1, 3, 4)])
        >>> maps.panel_id.tolist()
        [[0, 0, -1, 1, 1], [0, 0, -1, 1, 1]]
        >>> maps.mask[:, 2].tolist()
        [True, True]
        """
        if not rects:
            return self
        panel_id = panel_id_from_rects(self.shape, rects)
        return replace(self, panel_id=panel_id, mask=self.mask | (panel_id < 0))


# -- geometry model ------------------------------------------------------------------------------------------

#: Vector type of a panel's fast- and slow-scan directions, (x, y, z) in pixels.
Vector3 = tuple[float, float, float]

_H_J_S = 6.62607015e-34
_ELECTRON_MASS_KG = 9.1093837015e-31
_ELEMENTARY_CHARGE_C = 1.602176634e-19
_SPEED_OF_LIGHT_M_S = 299792458.0


def electron_wavelength_a(voltage_v: float) -> float:
    """Relativistic wavelength (Angstrom) of electrons accelerated through ``voltage_v`` volts.

    Examples
    --------
    >>> round(electron_wavelength_a(200e3), 5)
    0.02508
    """
    if not voltage_v > 0:
        raise ConfigError(f"electron accelerating voltage must be > 0 V, got {voltage_v!r}")
    energy_j = _ELEMENTARY_CHARGE_C * voltage_v
    momentum = math.sqrt(
        2.0 * _ELECTRON_MASS_KG * energy_j * (1.0 + energy_j / (2.0 * _ELECTRON_MASS_KG * _SPEED_OF_LIGHT_M_S**2))
    )
    return _H_J_S / momentum * 1e10


@dataclass(frozen=True)
class MetadataRef:
    """A beam or detector value that CrystFEL takes from each data file rather than from the geometry.

    Attributes
    ----------
    quantity : str
        ``"photon_energy"``, ``"wavelength"``, ``"electron_voltage"`` or ``"clen"``.
    location : str
        Path of the value in the data files (an HDF5 dataset such as ``/LCLS/photon_energy_eV``).
    unit : str
        Unit of the stored value (``eV``, ``keV``, ``m``, ``A``, ``mm``, ``V`` or ``kV``).
    """

    quantity: str
    location: str
    unit: str


@dataclass(frozen=True)
class MaskSpec:
    """A bad-pixel mask named by the geometry (CrystFEL ``maskN_data``, ``maskN_file`` and bit tests).

    Attributes
    ----------
    dataset : str
        Dataset path of the mask array (may hold ``%`` placeholders like the frame data path).
    file : str or None
        File holding the mask; None means the file the frames come from.
    good_bits : int
        A pixel is bad unless all of these bits are set.
    bad_bits : int
        A pixel is bad if any of these bits is set.
    """

    dataset: str
    file: str | None = None
    good_bits: int = 0
    bad_bits: int = 0

    def bad_pixels(self, values: NDArray[np.integer]) -> NDArray[np.bool_]:
        """Apply the bit tests to a mask array: True where the pixel is bad.

        Examples
        --------
        >>> MaskSpec("/mask", good_bits=0x1, bad_bits=0x4).bad_pixels(np.array([1, 0, 5, 3])).tolist()
        [False, True, True, False]
        """
        v = np.asarray(values).astype(np.int64, copy=False)
        bad = np.zeros(v.shape, bool)
        if self.good_bits:
            bad |= (v & self.good_bits) != self.good_bits
        if self.bad_bits:
            bad |= (v & self.bad_bits) != 0
        return bad


def _vector(value: Vector3, where: str) -> Vector3:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where} must be three numbers (x, y, z), got {value!r}") from exc
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise ConfigError(f"{where} must be three finite numbers (x, y, z), got {value!r}")
    if math.hypot(out[0], out[1], out[2]) == 0.0:
        raise ConfigError(f"{where} must not be the zero vector")
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class Panel:
    """One detector panel (CrystFEL meaning): a rectangle of the data array placed in the laboratory.

    Attributes
    ----------
    name : str
        Panel name (``p0``, ``q0a0``...).
    min_fs, max_fs, min_ss, max_ss : int
        Inclusive data-array range of the panel: columns ``min_fs..max_fs``, rows ``min_ss..max_ss``.
    corner_x, corner_y : float
        Laboratory position of the outer corner of the panel's first pixel, in pixels of this panel.
    res_px_per_m : float
        Pixels per metre (one over the pixel size).
    fs_vector, ss_vector : tuple of 3 float
        Laboratory (x, y, z) displacement of one step along fast scan (col) and slow scan (row), in pixels.
    clen_m : float or None
        Camera length (sample to detector along z), None when unknown or taken from the data files.
    clen_metadata : MetadataRef or None
        Where the camera length is read from the data files, when the geometry names a location.
    coffset_m : float
        Extra z offset of this panel added to the camera length.
    adu_per_photon, adu_per_ev : float or None
        Detector gain; only one is normally given.
    max_adu : float or None
        Saturation value.
    bad : bool
        The whole panel is ignored (CrystFEL ``no_index``).
    masks : tuple of MaskSpec
        Bad-pixel masks of this panel.
    data : str or None
        Dataset path of the panel's data (may hold ``%``).
    dims : tuple of str or None
        Layout of the data array (``("%", "ss", "fs")``), CrystFEL ``dim0``, ``dim1``...
    flag_lessthan, flag_morethan, flag_equal : float or None
        Pixel values marking a pixel bad (strict inequalities); applied by the frame reader.
    mask_edge_pixels : int
        Width of the border of the panel masked as bad.
    """

    name: str
    min_fs: int
    max_fs: int
    min_ss: int
    max_ss: int
    corner_x: float
    corner_y: float
    res_px_per_m: float
    fs_vector: Vector3 = (1.0, 0.0, 0.0)
    ss_vector: Vector3 = (0.0, 1.0, 0.0)
    clen_m: float | None = None
    clen_metadata: MetadataRef | None = None
    coffset_m: float = 0.0
    adu_per_photon: float | None = None
    adu_per_ev: float | None = None
    max_adu: float | None = None
    bad: bool = False
    masks: tuple[MaskSpec, ...] = ()
    data: str | None = None
    dims: tuple[str, ...] | None = None
    flag_lessthan: float | None = None
    flag_morethan: float | None = None
    flag_equal: float | None = None
    mask_edge_pixels: int = 0

    def __post_init__(self) -> None:
        where = f"panel {self.name!r}"
        if not self.name:
            raise ConfigError("panel name must not be empty")
        for lo, hi in (("min_fs", "max_fs"), ("min_ss", "max_ss")):
            a, b = getattr(self, lo), getattr(self, hi)
            if int(a) != a or int(b) != b:
                raise ConfigError(f"{where}: {lo}/{hi} must be integers, got {a!r}, {b!r}")
            object.__setattr__(self, lo, int(a))
            object.__setattr__(self, hi, int(b))
            if a < 0 or b < a:
                raise ConfigError(f"{where}: need 0 <= {lo} <= {hi}, got {lo}={a}, {hi}={b}")
        for name in ("corner_x", "corner_y", "coffset_m"):
            value = float(getattr(self, name))
            if not math.isfinite(value):
                raise ConfigError(f"{where}: {name} must be finite, got {value!r}")
            object.__setattr__(self, name, value)
        if not (math.isfinite(self.res_px_per_m) and self.res_px_per_m > 0):
            raise ConfigError(f"{where}: res_px_per_m must be > 0, got {self.res_px_per_m!r}")
        if self.clen_m is not None and not (math.isfinite(self.clen_m) and self.clen_m > 0):
            raise ConfigError(f"{where}: clen_m must be > 0, got {self.clen_m!r}")
        if self.mask_edge_pixels < 0:
            raise ConfigError(f"{where}: mask_edge_pixels must be >= 0, got {self.mask_edge_pixels!r}")
        object.__setattr__(self, "fs_vector", _vector(self.fs_vector, f"{where}: fs_vector"))
        object.__setattr__(self, "ss_vector", _vector(self.ss_vector, f"{where}: ss_vector"))
        object.__setattr__(self, "masks", tuple(self.masks))
        if self.dims is not None:
            object.__setattr__(self, "dims", tuple(self.dims))

    @property
    def width(self) -> int:
        """Number of fast-scan pixels (columns)."""
        return self.max_fs - self.min_fs + 1

    @property
    def height(self) -> int:
        """Number of slow-scan pixels (rows)."""
        return self.max_ss - self.min_ss + 1

    @property
    def pixel_size_m(self) -> float:
        return 1.0 / self.res_px_per_m

    @property
    def distance_m(self) -> float | None:
        """``clen_m + coffset_m``, None when the camera length is unknown."""
        return None if self.clen_m is None else self.clen_m + self.coffset_m

    def contains(self, ss: NDArray[np.integer], fs: NDArray[np.integer]) -> NDArray[np.bool_]:
        """True where integer data coordinates ``(ss, fs)`` fall on this panel."""
        ss = np.asarray(ss)
        fs = np.asarray(fs)
        return (ss >= self.min_ss) & (ss <= self.max_ss) & (fs >= self.min_fs) & (fs <= self.max_fs)

    def lab_xyz_px(
        self, d_ss: NDArray[np.floating], d_fs: NDArray[np.floating]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Laboratory position (pixels) of points ``d_ss, d_fs`` pixels from the panel's corner.

        ``z`` is measured from the sample when the camera length is known, else from the detector plane.
        The centre of the panel's first pixel is at ``d_ss = d_fs = 0.5``.
        """
        d_ss = np.asarray(d_ss, dtype=np.float64)
        d_fs = np.asarray(d_fs, dtype=np.float64)
        fx, fy, fz = self.fs_vector
        sx, sy, sz = self.ss_vector
        x = self.corner_x + d_fs * fx + d_ss * sx
        y = self.corner_y + d_fs * fy + d_ss * sy
        z = d_fs * fz + d_ss * sz
        if self.distance_m is not None:
            z = z + self.distance_m * self.res_px_per_m
        return x, y, z


@dataclass(frozen=True)
class BadRegion:
    """A region excluded by the geometry: a lab-frame x/y box, or an fs/ss rectangle of the data array.

    Lab-frame boxes are in pixels and, as in CrystFEL, tested at the outer corner of each pixel (the point
    ``corner + (fs - min_fs) * fs_vector + (ss - min_ss) * ss_vector``). fs/ss rectangles are inclusive data-array
    coordinates, limited to ``panel`` when one is named.
    """

    name: str
    min_x: float | None = None
    max_x: float | None = None
    min_y: float | None = None
    max_y: float | None = None
    min_fs: int | None = None
    max_fs: int | None = None
    min_ss: int | None = None
    max_ss: int | None = None
    panel: str | None = None

    def __post_init__(self) -> None:
        xy = [self.min_x, self.max_x, self.min_y, self.max_y]
        fsss = [self.min_fs, self.max_fs, self.min_ss, self.max_ss]
        has_xy = any(v is not None for v in xy)
        has_fsss = any(v is not None for v in fsss)
        where = f"bad region {self.name!r}"
        if has_xy and has_fsss:
            raise ConfigError(f"{where}: mixes x/y and fs/ss limits; use one or the other")
        if has_xy and not all(v is not None for v in xy):
            raise ConfigError(f"{where}: needs all of min_x, max_x, min_y, max_y")
        if has_fsss and not all(v is not None for v in fsss):
            raise ConfigError(f"{where}: needs all of min_fs, max_fs, min_ss, max_ss")
        if not (has_xy or has_fsss):
            raise ConfigError(f"{where}: gives no limits (min_x.. or min_fs..)")

    @property
    def is_fsss(self) -> bool:
        return self.min_fs is not None


@dataclass(frozen=True, eq=False)
class DetectorGeometry:
    """A detector: panels placed in the laboratory, bad regions, the beam wavelength and an optional mask.

    Attributes
    ----------
    panels : tuple of Panel
        The panels, in file order (the order gives the panel ids of :meth:`pixel_maps`).
    bad_regions : tuple of BadRegion
        Regions excluded from every frame.
    wavelength_a : float or None
        Beam wavelength (Angstrom), None when unknown or taken from the data files.
    beam_metadata : MetadataRef or None
        Where the wavelength / photon energy is read from the data files, when the geometry names a location.
    bandwidth : float or None
        Relative bandwidth (standard deviation / wavelength).
    mask : (H, W) bool ndarray or None
        Detector-wide bad-pixel mask (True = bad) added to :meth:`pixel_maps`.
    source : str or None
        File the geometry was read from.
    module_rows : int or None
        Rows of one module when the frames are stored module by module, (N, modules, ss, fs), as at the
        European XFEL: the panels' rows are then those of the modules stacked along the rows
        (``module · module_rows + ss``), as :mod:`braggml.io.frames` reads such data. None for 2-D frames.

    Examples
    --------
    >>> geom = flat_geometry((5, 7), pixel_size_mm=0.1, distance_mm=100.0, beam_center_rowcol=(2.0, 3.0))
    >>> maps = geom.pixel_maps()
    >>> float(maps.radius_px[2, 6])
    3.0
    """

    panels: tuple[Panel, ...]
    bad_regions: tuple[BadRegion, ...] = ()
    wavelength_a: float | None = None
    beam_metadata: MetadataRef | None = None
    bandwidth: float | None = None
    mask: NDArray[np.bool_] | None = None
    source: str | None = field(default=None)
    module_rows: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "panels", tuple(self.panels))
        object.__setattr__(self, "bad_regions", tuple(self.bad_regions))
        if not self.panels:
            raise ConfigError("a detector geometry needs at least one panel")
        names = [p.name for p in self.panels]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"panel names must be unique, repeated: {', '.join(dupes)}")
        for region in self.bad_regions:
            if region.panel is not None and region.panel not in names:
                raise ConfigError(f"bad region {region.name!r} names unknown panel {region.panel!r}")
        if self.module_rows is not None and not (int(self.module_rows) == self.module_rows and self.module_rows > 0):
            raise ConfigError(f"module_rows must be a positive integer, got {self.module_rows!r}")
        if self.wavelength_a is not None and not (math.isfinite(self.wavelength_a) and self.wavelength_a > 0):
            raise ConfigError(f"wavelength_a must be > 0, got {self.wavelength_a!r}")
        if self.mask is not None:
            m = np.asarray(self.mask)
            if m.ndim != 2:
                raise ConfigError(f"geometry mask must be 2-D (H, W), got shape {m.shape}")
            m = m.astype(bool, copy=True)
            m.setflags(write=False)
            object.__setattr__(self, "mask", m)

    # -- properties -------------------------------------------------------------------------------------
    @property
    def photon_energy_ev(self) -> float | None:
        """Photon energy (eV) equivalent to :attr:`wavelength_a`."""
        return None if self.wavelength_a is None else HC_KEV_A * 1000.0 / self.wavelength_a

    @property
    def data_shape(self) -> tuple[int, int]:
        """Smallest (H, W) frame holding every panel."""
        return (max(p.max_ss for p in self.panels) + 1, max(p.max_fs for p in self.panels) + 1)

    @property
    def n_panels(self) -> int:
        return len(self.panels)

    @property
    def clen_known(self) -> bool:
        """True when every panel's camera length is a number."""
        return all(p.clen_m is not None for p in self.panels)

    def panel(self, name: str) -> Panel:
        """The panel called ``name``."""
        for p in self.panels:
            if p.name == name:
                return p
        raise KeyError(f"no panel {name!r}; panels are {', '.join(p.name for p in self.panels)}")

    # -- sub-pixel positions ------------------------------------------------------------------------------
    def panel_index_at(self, row: NDArray[np.floating], col: NDArray[np.floating]) -> NDArray[np.int64]:
        """Index of the panel holding each sub-pixel position (pixel centres at integers), -1 for none."""
        row = np.asarray(row, dtype=np.float64)
        col = np.asarray(col, dtype=np.float64)
        ss = np.floor(row + 0.5)
        fs = np.floor(col + 0.5)
        out = np.full(row.shape, -1, np.int64)
        for i, p in enumerate(self.panels):
            hit = (out < 0) & p.contains(ss, fs)
            out[hit] = i
        return out

    def lab_position_px(
        self, row: NDArray[np.floating], col: NDArray[np.floating]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
        """Laboratory ``x, y, z`` (pixels of each point's panel) and panel index of sub-pixel positions.

        Points on no panel get NaN. ``z`` is NaN where the camera length is unknown.
        """
        row = np.asarray(row, dtype=np.float64)
        col = np.asarray(col, dtype=np.float64)
        idx = self.panel_index_at(row, col)
        x = np.full(row.shape, np.nan)
        y = np.full(row.shape, np.nan)
        z = np.full(row.shape, np.nan)
        for i, p in enumerate(self.panels):
            sel = idx == i
            if not sel.any():
                continue
            px, py, pz = p.lab_xyz_px(row[sel] + 0.5 - p.min_ss, col[sel] + 0.5 - p.min_fs)
            x[sel], y[sel] = px, py
            if p.distance_m is not None:
                z[sel] = pz
        return x, y, z, idx

    def resolution_at(self, row: NDArray[np.floating], col: NDArray[np.floating]) -> NDArray[np.float64]:
        """Resolution d (Angstrom) at sub-pixel positions; NaN off the panels or when unknown."""
        x, y, z, _ = self.lab_position_px(row, col)
        if self.wavelength_a is None:
            return np.full(x.shape, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            two_theta = np.arctan2(np.hypot(x, y), z)
            return self.wavelength_a / (2.0 * np.sin(two_theta / 2.0))

    # -- per-pixel maps -----------------------------------------------------------------------------------
    def check_frame_shape(self, shape: tuple[int, int]) -> None:
        """Raise :class:`ConfigError` unless frames of ``shape`` (H, W) hold every panel (and whole modules, for
        data stored module by module)."""
        height, width = shape
        where = f" (geometry {self.source})" if self.source else ""
        if self.module_rows is not None and height % self.module_rows:
            raise ConfigError(
                f"geometry modules are {self.module_rows} rows high, but frames of shape {(height, width)} are not "
                "a whole number of modules" + where
            )
        for p in self.panels:
            if p.max_ss >= height or p.max_fs >= width:
                raise ConfigError(
                    f"geometry panel {p.name!r} covers rows {p.min_ss}..{p.max_ss}, columns "
                    f"{p.min_fs}..{p.max_fs}, outside frames of shape {(height, width)}" + where
                )

    def pixel_maps(self, shape: tuple[int, int] | None = None) -> PixelMaps:
        """Per-pixel maps of frames of shape ``shape`` (default :attr:`data_shape`).

        Parameters
        ----------
        shape : (H, W) tuple of int, optional
            Frame shape; every panel must fit inside it. Pixels covered by no panel get ``panel_id = -1``,
            ``radius_px = NaN`` and ``mask = True``.

        Returns
        -------
        PixelMaps
            ``panel_id`` from the panels' rectangles (the first panel listed wins where two overlap, with a
            warning); ``radius_px`` the distance of each pixel centre from the beam axis in the panel's pixels;
            ``resolution_a`` d = wavelength / (2 sin(theta)) with 2 theta = atan(r / z), None when the
            wavelength or a camera length is unknown (``inf`` on the beam axis); ``mask`` True on pixels
            of no panel, of ``bad`` panels, of bad regions, of panel edges (``mask_edge_pixels``) and of
            :attr:`mask`.

        Raises
        ------
        ConfigError
            ``shape`` is not two positive integers, a panel lies outside it or :attr:`mask` has
            another shape.
        """
        shape = self.data_shape if shape is None else shape
        try:
            height, width = (int(s) for s in shape)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"pixel_maps shape must be (H, W), got {shape!r}") from exc
        if height <= 0 or width <= 0:
            raise ConfigError(f"pixel_maps shape must be positive, got {shape!r}")
        self.check_frame_shape((height, width))
        with_resolution = self.wavelength_a is not None and self.clen_known
        panel_id = np.full((height, width), -1, np.int32)
        radius = np.full((height, width), np.nan, np.float32)
        resolution = np.full((height, width), np.nan, np.float32) if with_resolution else None
        mask = np.zeros((height, width), bool)
        overlaps: list[str] = []
        for i, p in enumerate(self.panels):
            block = (slice(p.min_ss, p.max_ss + 1), slice(p.min_fs, p.max_fs + 1))
            free = panel_id[block] < 0
            if not free.all():
                overlaps.append(p.name)
            d_ss = np.arange(p.height, dtype=np.float64)[:, None]
            d_fs = np.arange(p.width, dtype=np.float64)[None, :]
            x, y, z = p.lab_xyz_px(d_ss + 0.5, d_fs + 0.5)
            r = np.broadcast_to(np.hypot(x, y), free.shape)
            panel_id[block][free] = i
            radius[block][free] = r[free]
            if resolution is not None:
                z = np.broadcast_to(z, free.shape)
                with np.errstate(divide="ignore"):
                    two_theta = np.arctan2(r, z)
                    d = self.wavelength_a / (2.0 * np.sin(two_theta / 2.0))  # type: ignore[operator]
                resolution[block][free] = d[free]
            bad = self._panel_bad(p, d_ss, d_fs)
            mask[block][free] = bad[free]
        if overlaps:
            warnings.warn(
                f"geometry panels overlap ({', '.join(overlaps)} overlap earlier panels); "
                "the pixels keep the first panel",
                stacklevel=2,
            )
        mask |= panel_id < 0
        if self.mask is not None:
            if self.mask.shape != (height, width):
                raise ConfigError(
                    f"geometry mask has shape {self.mask.shape}, frames have {(height, width)}"
                )
            mask |= self.mask
        return PixelMaps(panel_id=panel_id, radius_px=radius, mask=mask, resolution_a=resolution, known=True)

    def _panel_bad(self, p: Panel, d_ss: NDArray[np.float64], d_fs: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Geometry-only bad pixels of panel ``p`` (shape (height, width))."""
        bad = np.zeros((p.height, p.width), bool)
        if p.bad:
            bad[:] = True
            return bad
        e = p.mask_edge_pixels
        if e:
            bad[:e, :] = True
            bad[-e:, :] = True
            bad[:, :e] = True
            bad[:, -e:] = True
        corner_x = corner_y = None
        for region in self.bad_regions:
            if region.panel is not None and region.panel != p.name:
                continue
            if region.is_fsss:
                ss = d_ss + p.min_ss
                fs = d_fs + p.min_fs
                bad |= (
                    (ss >= region.min_ss) & (ss <= region.max_ss)  # type: ignore[operator]
                    & (fs >= region.min_fs) & (fs <= region.max_fs)  # type: ignore[operator]
                )
            else:
                if corner_x is None:
                    corner_x, corner_y, _ = p.lab_xyz_px(d_ss, d_fs)
                bad |= (
                    (corner_x >= region.min_x) & (corner_x <= region.max_x)  # type: ignore[operator]
                    & (corner_y >= region.min_y) & (corner_y <= region.max_y)  # type: ignore[operator]
                )
        return bad

    def flagged_pixels(self, image: NDArray[np.number]) -> NDArray[np.bool_]:
        """Pixels of one frame marked bad by the panels' value flags (``flag_lessthan``, ``flag_morethan``,
        ``flag_equal``; strict inequalities, as in CrystFEL).

        Parameters
        ----------
        image : (H, W) ndarray
            One frame; every panel must fit inside it.

        Returns
        -------
        (H, W) bool ndarray
            True where a flag marks the pixel bad; all False when no panel sets a flag.
        """
        image = np.asarray(image)
        if image.ndim != 2:
            raise ConfigError(f"flagged_pixels needs one (H, W) frame, got shape {image.shape}")
        out = np.zeros(image.shape, bool)
        for p in self.panels:
            if p.flag_lessthan is None and p.flag_morethan is None and p.flag_equal is None:
                continue
            if p.max_ss >= image.shape[0] or p.max_fs >= image.shape[1]:
                raise ConfigError(f"geometry panel {p.name!r} lies outside frames of shape {image.shape}")
            block = (slice(p.min_ss, p.max_ss + 1), slice(p.min_fs, p.max_fs + 1))
            values = image[block]
            bad = out[block]
            if p.flag_lessthan is not None:
                bad |= values < p.flag_lessthan
            if p.flag_morethan is not None:
                bad |= values > p.flag_morethan
            if p.flag_equal is not None:
                bad |= values == p.flag_equal
        return out

    # -- derived geometries ---------------------------------------------------------------------------------
    def with_wavelength(self, wavelength_a: float | None) -> DetectorGeometry:
        """The same geometry with another wavelength (e.g. read from the data files)."""
        return replace(self, wavelength_a=wavelength_a)

    def with_mask(self, mask: NDArray[np.bool_] | None) -> DetectorGeometry:
        """The same geometry with a detector-wide bad-pixel mask (True = bad)."""
        return replace(self, mask=mask)


def _wavelength_from(wavelength_a: float | None, photon_energy_ev: float | None) -> float | None:
    if wavelength_a is not None and photon_energy_ev is not None:
        raise ConfigError("give wavelength_a or photon_energy_ev, not both")
    if photon_energy_ev is not None:
        if not (math.isfinite(photon_energy_ev) and photon_energy_ev > 0):
            raise ConfigError(f"photon_energy_ev must be > 0, got {photon_energy_ev!r}")
        return HC_KEV_A * 1000.0 / photon_energy_ev
    if wavelength_a is not None and not (math.isfinite(wavelength_a) and wavelength_a > 0):
        raise ConfigError(f"wavelength_a must be > 0, got {wavelength_a!r}")
    return wavelength_a


def flat_geometry(
    shape: tuple[int, int],
    *,
    pixel_size_mm: float,
    distance_mm: float,
    beam_center_rowcol: tuple[float, float],
    wavelength_a: float | None = None,
    photon_energy_ev: float | None = None,
) -> DetectorGeometry:
    """A single flat panel perpendicular to the beam.

    Parameters
    ----------
    shape : (H, W) tuple of int
        Frame shape.
    pixel_size_mm : float
        Pixel size (square pixels).
    distance_mm : float
        Sample-to-detector distance along the beam.
    beam_center_rowcol : (2,) tuple of float
        Where the beam meets the detector, in array coordinates with pixel centres at integers
        (``(row, col)``; XDS/CBF ``Beam_xy`` is ``(col, row)`` in those coordinates).
    wavelength_a, photon_energy_ev : float, optional
        Beam wavelength or photon energy (at most one); without either, :meth:`DetectorGeometry.pixel_maps`
        gives no resolution.

    Returns
    -------
    DetectorGeometry
        One panel ``p0`` with fast scan along +x and slow scan along -y (rows go down, y goes up).

    Raises
    ------
    ConfigError
        A size or distance is not positive, or both wavelength and photon energy are given.

    Examples
    --------
    >>> geom = flat_geometry((3, 3), pixel_size_mm=0.075, distance_mm=100.0, beam_center_rowcol=(1, 1),
    ...                      wavelength_a=1.0)
    >>> round(float(geom.pixel_maps().resolution_a[1, 2]), 1)   # 1 pixel off-axis
    1333.3
    """
    try:
        height, width = (int(s) for s in shape)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"shape must be (H, W), got {shape!r}") from exc
    if height <= 0 or width <= 0:
        raise ConfigError(f"shape must be positive, got {shape!r}")
    if not (math.isfinite(pixel_size_mm) and pixel_size_mm > 0):
        raise ConfigError(f"pixel_size_mm must be > 0, got {pixel_size_mm!r}")
    if not (math.isfinite(distance_mm) and distance_mm > 0):
        raise ConfigError(f"distance_mm must be > 0, got {distance_mm!r}")
    try:
        beam_row, beam_col = (float(v) for v in beam_center_rowcol)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"beam_center_rowcol must be (row, col), got {beam_center_rowcol!r}") from exc
    if not (math.isfinite(beam_row) and math.isfinite(beam_col)):
        raise ConfigError(f"beam_center_rowcol must be finite, got {beam_center_rowcol!r}")
    wavelength = _wavelength_from(wavelength_a, photon_energy_ev)
    panel = Panel(
        name="p0",
        min_fs=0,
        max_fs=width - 1,
        min_ss=0,
        max_ss=height - 1,
        # centre of pixel (row, col) at x = col - beam_col, y = -(row - beam_row)
        corner_x=-(beam_col + 0.5),
        corner_y=beam_row + 0.5,
        res_px_per_m=1000.0 / pixel_size_mm,
        fs_vector=(1.0, 0.0, 0.0),
        ss_vector=(0.0, -1.0, 0.0),
        clen_m=distance_mm / 1000.0,
    )
    return DetectorGeometry(panels=(panel,), wavelength_a=wavelength)


# -- panels derived from gaps in the mask ------------------------------------------------------------------------

#: (rows, cols) of one CSPAD two-by-one sensor as it is stored (two 185 x 194 ASICs side by side).
CSPAD_SENSOR_SHAPE: tuple[int, int] = (185, 388)

#: Columns (within a 388-wide two-by-one) of the 2.5x wider pixels at the two ASICs' adjacent edges.
_CSPAD_BIG_PIXELS: tuple[int, int] = (193, 194)


class AssembledImage(NamedTuple):
    """A frame drawn as the detector sees it: see :func:`assemble_image`."""

    image: NDArray[np.float64]
    bad: NDArray[np.bool_]
    extent_xy: tuple[float, float, float, float]

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.image.shape[0]), int(self.image.shape[1]))


def assemble_image(
    geometry: DetectorGeometry,
    image: NDArray[np.number],
    *,
    bad: NDArray[np.bool_] | None = None,
    max_side: int = 4096,
) -> AssembledImage:
    """Place every panel of a frame where it sits in the laboratory's x-y plane (the beam at x = y = 0).

    Each pixel of the picture (one laboratory pixel) takes the value of the data pixel under its centre
    (nearest neighbour, through the inverse of the panel's fs/ss vectors, so rotated panels leave no holes).
    The z components of the vectors are ignored: tilted panels are drawn as projected onto the x-y plane.

    Parameters
    ----------
    geometry : DetectorGeometry
        Panels placed in the laboratory (``--geom``).
    image : (H, W) ndarray
        The frame, in the data layout the geometry describes.
    bad : (H, W) bool ndarray, optional
        Pixels to draw as bad.
    max_side : int
        Largest picture side; a geometry that spreads its panels wider is refused.

    Returns
    -------
    AssembledImage
        ``image`` (rows along +y, columns along +x; NaN between panels), ``bad`` (True between panels too) and
        ``extent_xy = (x_min, x_max, y_min, y_max)`` of the picture in laboratory pixels, the beam at (0, 0):
        row ``i``, column ``j`` is centred at ``x = x_min + j + 0.5``, ``y = y_min + i + 0.5``.

    Raises
    ------
    ConfigError
        ``image`` or ``bad`` does not hold every panel, or the picture would be wider than ``max_side``.

    Examples
    --------
    >>> geom = flat_geometry((2, 3), pixel_size_mm=0.1, distance_mm=100.0, beam_center_rowcol=(0.0, 0.0))
    >>> picture = assemble_image(geom, np.arange(6.0).reshape(2, 3))
    >>> picture.image.tolist(), picture.extent_xy  # rows run along +y (up): the frame's first row is on top
    ([[3.0, 4.0, 5.0], [0.0, 1.0, 2.0]], (-0.5, 2.5, -1.5, 0.5))
    """
    data = np.asarray(image, dtype=np.float64)
    if data.ndim != 2:
        raise ConfigError(f"assemble_image needs a 2-D frame, got shape {data.shape}")
    geometry.check_frame_shape(data.shape)
    if bad is not None and np.shape(bad) != data.shape:
        raise ConfigError(f"bad-pixel map of shape {np.shape(bad)} does not match the frame {data.shape}")
    corners = []
    for p in geometry.panels:
        d_ss = np.array([0.0, 0.0, p.height, p.height])
        d_fs = np.array([0.0, p.width, 0.0, p.width])
        x, y, _ = p.lab_xyz_px(d_ss, d_fs)
        corners.append((x, y))
    # the picture's pixel edges on those of the first panel, so that a flat detector is drawn pixel for pixel
    off_x, off_y = geometry.panels[0].corner_x % 1.0, geometry.panels[0].corner_y % 1.0
    x_min = math.floor(min(float(x.min()) for x, _ in corners) - off_x + 1e-9) + off_x
    x_max = math.ceil(max(float(x.max()) for x, _ in corners) - off_x - 1e-9) + off_x
    y_min = math.floor(min(float(y.min()) for _, y in corners) - off_y + 1e-9) + off_y
    y_max = math.ceil(max(float(y.max()) for _, y in corners) - off_y - 1e-9) + off_y
    height, width = round(y_max - y_min), round(x_max - x_min)
    if max(height, width) > max_side:
        raise ConfigError(f"the panels spread over {width} x {height} pixels, more than max_side = {max_side}")
    out = np.full((height, width), np.nan)
    out_bad = np.ones((height, width), bool)
    for p, (cx, cy) in zip(geometry.panels, corners):
        (fx, fy, _), (sx, sy, _) = p.fs_vector, p.ss_vector
        det = fx * sy - fy * sx
        if abs(det) < 1e-9:
            continue  # a panel seen edge-on covers no area
        i0, i1 = max(math.floor(float(cy.min()) - y_min), 0), min(math.ceil(float(cy.max()) - y_min), height)
        j0, j1 = max(math.floor(float(cx.min()) - x_min), 0), min(math.ceil(float(cx.max()) - x_min), width)
        yy, xx = np.mgrid[i0:i1, j0:j1]
        dx = xx + 0.5 + x_min - p.corner_x
        dy = yy + 0.5 + y_min - p.corner_y
        d_fs = np.floor((dx * sy - dy * sx) / det).astype(np.int64)
        d_ss = np.floor((fx * dy - fy * dx) / det).astype(np.int64)
        on = (d_fs >= 0) & (d_fs < p.width) & (d_ss >= 0) & (d_ss < p.height)
        rows, cols = d_ss[on] + p.min_ss, d_fs[on] + p.min_fs
        out[yy[on], xx[on]] = data[rows, cols]
        out_bad[yy[on], xx[on]] = bool(p.bad) | (bad[rows, cols] if bad is not None else False)
    return AssembledImage(out, out_bad, (float(x_min), float(x_max), float(y_min), float(y_max)))


class PanelRect(NamedTuple):
    """A panel as an inclusive rectangle of the data array (no placement in the laboratory)."""

    min_row: int
    max_row: int
    min_col: int
    max_col: int

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the rectangle."""
        return (self.max_row - self.min_row + 1, self.max_col - self.min_col + 1)

    @property
    def slices(self) -> tuple[slice, slice]:
        """Row and column slices of the rectangle."""
        return (slice(self.min_row, self.max_row + 1), slice(self.min_col, self.max_col + 1))


def _check_rects(shape: tuple[int, int], rects: Sequence[Sequence[int]]) -> list[PanelRect]:
    out = []
    for k, rect in enumerate(rects):
        try:
            r = PanelRect(*(int(v) for v in rect))
        except (TypeError, ValueError):
            raise ConfigError(
                f"panel rectangle {k} must be (min_row, max_row, min_col, max_col), got {rect!r}"
            ) from None
        if not (0 <= r.min_row <= r.max_row < shape[0] and 0 <= r.min_col <= r.max_col < shape[1]):
            raise ConfigError(f"panel rectangle {k} {tuple(r)} does not lie inside frames of shape {tuple(shape)}")
        out.append(r)
    return out


def panel_id_from_rects(shape: tuple[int, int], rects: Sequence[Sequence[int]]) -> NDArray[np.int32]:
    """Panel map of frames of ``shape``: pixels in ``rects[k]`` get ``k`` (the first rectangle wins), others -1.

    Raises
    ------
    ConfigError
        A rectangle is not four integers ``min_row <= max_row``, ``min_col <= max_col`` inside ``shape``.
    """
    checked = _check_rects(shape, rects)
    panel_id = np.full(tuple(shape), -1, np.int32)
    for k in range(len(checked) - 1, -1, -1):
        panel_id[checked[k].slices] = k
    return panel_id


def derive_panels(
    gap: NDArray[np.bool_],
    *,
    min_panel_px: int = 1000,
    min_fill: float = 0.5,
    min_coverage: float = 0.99,
) -> tuple[PanelRect, ...]:
    """The modules of a tiled detector from the gaps between them: the connected good regions.

    A frame stored without geometry (tiles pasted into one array with gaps, Pilatus/EIGER modules with their
    gaps marked) shows its modules as the rectangles of good pixels the gaps separate. Those are returned as
    panels when the gaps really tile the frame: at least two regions of ``min_panel_px`` pixels or more, their
    bounding boxes disjoint, each filled at least ``min_fill`` by its region, and together holding at least
    ``min_coverage`` of the good pixels. Otherwise (a monolithic detector, a beamstop or beam-hole mask, a
    circular active area) nothing is returned. Good pixels outside every returned rectangle (isolated
    specks inside masked areas) belong to no panel.

    Parameters
    ----------
    gap : (H, W) bool ndarray
        True where there is no usable pixel: the file's mask, marker values, the user's mask.
    min_panel_px : int
        Smallest region taken as a module.
    min_fill : float
        Smallest fraction of a module's bounding box its good pixels must fill.
    min_coverage : float
        Smallest fraction of all good pixels the modules must hold.

    Returns
    -------
    tuple of PanelRect
        The modules' bounding boxes in row-major order of their first corner; empty when the gaps do not tile
        the frame.

    Examples
    --------
    >>> gap = np.zeros((40, 90), bool)
    >>> gap[:, 40:44] = True                      # a 4-pixel gap between two 40 x 40 modules
    >>> gap[:, 84:] = True                        # and a masked strip at the right edge
    >>> [tuple(p) for p in derive_panels(gap, min_panel_px=100)]
    [(0, 39, 0, 39), (0, 39, 44, 83)]
    """
    from scipy import ndimage

    gap = np.asarray(gap, dtype=bool)
    if gap.ndim != 2:
        raise ConfigError(f"gap map must be 2-D (H, W), got shape {gap.shape}")
    if min_panel_px < 1:
        raise ConfigError(f"min_panel_px must be >= 1, got {min_panel_px}")
    if not 0.0 < min_fill <= 1.0:
        raise ConfigError(f"min_fill must be in (0, 1], got {min_fill}")
    if not 0.0 < min_coverage <= 1.0:
        raise ConfigError(f"min_coverage must be in (0, 1], got {min_coverage}")
    good = ~gap
    n_good = int(good.sum())
    if n_good == 0:
        return ()
    labels, n = ndimage.label(good)
    if n < 2:
        return ()
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    boxes = ndimage.find_objects(labels)
    rects: list[PanelRect] = []
    held = 0
    for size, box in zip(sizes, boxes, strict=True):
        if size < min_panel_px or box is None:
            continue
        rect = PanelRect(box[0].start, box[0].stop - 1, box[1].start, box[1].stop - 1)
        if size < min_fill * rect.shape[0] * rect.shape[1]:
            return ()
        rects.append(rect)
        held += int(size)
    if len(rects) < 2 or held < min_coverage * n_good:
        return ()
    occupied = np.zeros(gap.shape, np.int32)
    for rect in rects:
        occupied[rect.slices] += 1
    if int(occupied.max()) > 1:
        return ()
    return tuple(sorted(rects))


def split_cspad_sensors(rects: Sequence[PanelRect]) -> tuple[tuple[PanelRect, ...], int]:
    """Split CSPAD two-by-one sensors into their two ASICs, leaving out the big-pixel columns between them.

    A CSPAD two-by-one (185 x 388 pixels as stored, or 388 x 185 transposed) is two 185 x 194 ASICs whose
    adjacent edge columns (193 and 194 of the 388) hold pixels 2.5 times wider than the others: they collect
    about 2.5 times the signal and noise of their neighbours, so per-panel background statistics and peak
    finders flag them. Each such rectangle becomes two 185 x 193 panels, and the two big-pixel columns
    belong to no panel (they are masked). Other rectangles are kept as they are.

    Parameters
    ----------
    rects : sequence of PanelRect
        Panels, e.g. from :func:`derive_panels`.

    Returns
    -------
    panels : tuple of PanelRect
        The panels, two-by-ones replaced by their ASICs.
    n_sensors : int
        How many two-by-ones were split.

    Examples
    --------
    >>> panels, n = split_cspad_sensors([PanelRect(0, 184, 392, 779)])
    >>> n, [tuple(p) for p in panels]
    (1, [(0, 184, 392, 584), (0, 184, 587, 779)])
    """
    out: list[PanelRect] = []
    n_sensors = 0
    rows, cols = CSPAD_SENSOR_SHAPE
    first, second = _CSPAD_BIG_PIXELS
    for rect in rects:
        r = PanelRect(*rect)
        if r.shape == (rows, cols):
            out.append(PanelRect(r.min_row, r.max_row, r.min_col, r.min_col + first - 1))
            out.append(PanelRect(r.min_row, r.max_row, r.min_col + second + 1, r.max_col))
            n_sensors += 1
        elif r.shape == (cols, rows):
            out.append(PanelRect(r.min_row, r.min_row + first - 1, r.min_col, r.max_col))
            out.append(PanelRect(r.min_row + second + 1, r.max_row, r.min_col, r.max_col))
            n_sensors += 1
        else:
            out.append(r)
    return tuple(out), n_sensors


def module_background_steps(
    image: NDArray[np.number],
    bad: NDArray[np.bool_],
    rects: Sequence[PanelRect],
    *,
    strip_px: int = 4,
    max_gap_px: int = 40,
) -> NDArray[np.float64]:
    """How much the background steps between modules that face each other across a gap, in units of the noise.

    For each pair of modules side by side (or one above the other) with at most ``max_gap_px`` between them
    and at least 20 pixels of shared edge, the mean of the ``strip_px`` pixels next to the gap is taken on each
    side at every position along the edge; the step is the median of their differences, divided by the pixel
    noise (from differences of neighbouring pixels along the edge, so that scattering that varies along the
    edge does not count as noise). Calibrated photon-counting modules join seamlessly (steps near 0); modules
    with their own offsets or gains (pedestal-subtracted integrating sensors) do not. A steep background
    gradient across a gap also shows as a step.

    Parameters
    ----------
    image : (H, W) ndarray
        One frame.
    bad : (H, W) bool ndarray
        True marks a pixel left out.
    rects : sequence of PanelRect
        The modules.
    strip_px : int
        Width of the strips compared.
    max_gap_px : int
        Widest gap between modules that face each other.

    Returns
    -------
    (P,) float64 ndarray
        The absolute step of each facing pair (empty when no modules face each other).
    """
    if strip_px < 1:
        raise ConfigError(f"strip_px must be >= 1, got {strip_px}")
    data = np.where(np.asarray(bad, dtype=bool), np.nan, np.asarray(image, dtype=np.float64))
    boxes = [PanelRect(*r) for r in rects]
    steps: list[float] = []
    for a in boxes:
        for b in boxes:
            if 0 < b.min_col - a.max_col <= max_gap_px:
                lo, hi = max(a.min_row, b.min_row), min(a.max_row, b.max_row)
                near = data[lo : hi + 1, max(a.max_col - strip_px + 1, a.min_col) : a.max_col + 1]
                far = data[lo : hi + 1, b.min_col : min(b.min_col + strip_px, b.max_col + 1)]
            elif 0 < b.min_row - a.max_row <= max_gap_px:
                lo, hi = max(a.min_col, b.min_col), min(a.max_col, b.max_col)
                near = data[max(a.max_row - strip_px + 1, a.min_row) : a.max_row + 1, lo : hi + 1].T
                far = data[b.min_row : min(b.min_row + strip_px, b.max_row + 1), lo : hi + 1].T
            else:
                continue
            if hi - lo < 20:
                continue
            step = _step_across(near, far)
            along = np.concatenate([np.diff(near, axis=0).ravel(), np.diff(far, axis=0).ravel()])
            along = np.abs(along[np.isfinite(along)])
            if not np.isfinite(step) or along.size < 40:
                continue
            along = along[along <= np.percentile(along, 99.0)]
            noise = float(np.sqrt(np.mean(along**2) / 2.0))
            steps.append(abs(step) / noise if noise > 0 else (0.0 if step == 0 else np.inf))
    return np.array(steps, dtype=np.float64)


def _step_across(near: NDArray[np.float64], far: NDArray[np.float64]) -> float:
    """Median over the edge of the difference between the mean pixels of two strips facing each other across
    a gap (rows along the edge); NaN when fewer than 20 positions can be compared."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        diff = np.nanmean(near, axis=1) - np.nanmean(far, axis=1)
    diff = diff[np.isfinite(diff)]
    return float(np.median(diff)) if diff.size >= 20 else float("nan")
