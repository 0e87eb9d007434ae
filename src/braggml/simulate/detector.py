"""Simulated detector layout: panels, gaps, beamstop, per-pixel scattering angle and geometric factors.

Lab frame: the beam travels along +z; the detector plane is ``z = distance_mm``; the row axis of the frame
runs along the lab's first axis and the column axis along the second, so a pixel at array position
``(row, col)`` sits at ``((row - beam_row) * pixel_size_mm, (col - beam_col) * pixel_size_mm, distance_mm)``.
The beam is polarised along the column axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..geometry import PixelMaps
from .config import ArtefactConfig, BeamConfig, DetectorConfig

__all__ = ["DetectorLayout", "build_layout", "geometric_factor"]

#: Values of the bit field in :attr:`DetectorLayout.mask_reason`.
MASK_GAP = 1
MASK_BEAMSTOP = 2
MASK_DEAD = 4


def geometric_factor(
    two_theta: NDArray[np.floating], azimuth: NDArray[np.floating], polarisation_fraction: float
) -> NDArray[np.float64]:
    """Solid angle of a pixel on a flat detector (``cos^3 2theta``) times the polarisation factor.

    ``azimuth`` is measured from the column axis, which is the main polarisation direction.
    """
    s2 = np.sin(two_theta) ** 2
    c_az2 = np.cos(azimuth) ** 2
    pol = 1.0 - s2 * (polarisation_fraction * c_az2 + (1.0 - polarisation_fraction) * (1.0 - c_az2))
    return np.cos(two_theta) ** 3 * pol


@dataclass(frozen=True, eq=False)
class DetectorLayout:
    """Fixed per-run maps of a simulated detector, all (H, W).

    Attributes
    ----------
    beam_rowcol : (row, col)
        Beam centre in array coordinates.
    panel_id : (H, W) int32 ndarray
        Module index, -1 in gaps.
    mask : (H, W) bool ndarray
        True for gaps, chip boundaries, beamstop shadow and dead pixels.
    mask_reason : (H, W) uint8 ndarray
        Bit field: 1 gap, 2 beamstop, 4 dead pixel.
    transmission : (H, W) float32 ndarray
        Beamstop transmission (1 outside the shadow).
    two_theta : (H, W) float32 ndarray
        Scattering angle of each pixel centre (radians).
    geom_factor : (H, W) float32 ndarray
        Solid angle (relative to the beam-centre pixel) times polarisation.
    radius_px : (H, W) float32 ndarray
        Distance of each pixel centre from the beam centre, pixels.
    hot_photons : (H, W) float32 ndarray
        Mean extra signal of hot pixels (0 elsewhere).
    dead : (H, W) bool ndarray
        Dead pixels.
    """

    beam_rowcol: tuple[float, float]
    panel_id: NDArray[np.int32]
    mask: NDArray[np.bool_]
    mask_reason: NDArray[np.uint8]
    transmission: NDArray[np.float32]
    two_theta: NDArray[np.float32]
    geom_factor: NDArray[np.float32]
    radius_px: NDArray[np.float32]
    hot_photons: NDArray[np.float32]
    dead: NDArray[np.bool_]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.panel_id.shape)  # type: ignore[return-value]

    def pixel_maps(self, wavelength_a: float | None = None) -> PixelMaps:
        """The :class:`~braggml.geometry.PixelMaps` a finder takes for frames of this detector."""
        resolution = None
        if wavelength_a is not None:
            with np.errstate(divide="ignore"):
                resolution = (wavelength_a / (2.0 * np.sin(self.two_theta / 2.0))).astype(np.float32)
            resolution[~np.isfinite(resolution)] = np.float32(np.inf)
        return PixelMaps(
            panel_id=self.panel_id.copy(),
            radius_px=self.radius_px.copy(),
            mask=self.mask.copy(),
            resolution_a=resolution,
            known=True,
        )


def _panel_map(config: DetectorConfig) -> NDArray[np.int32]:
    rows, cols = config.shape
    panel = np.full((rows, cols), -1, np.int32)
    mr, mc = config.module_shape
    gr, gc = config.module_gap_px
    cr, cc = config.chip_shape
    for i in range(config.module_grid[0]):
        for j in range(config.module_grid[1]):
            r0, c0 = i * (mr + gr), j * (mc + gc)
            module = np.full((mr, mc), i * config.module_grid[1] + j, np.int32)
            if cr and cc and config.chip_gap_px:
                half = config.chip_gap_px / 2.0
                for edge in range(cr, mr, cr):
                    module[int(np.floor(edge - half)) : int(np.ceil(edge + half)), :] = -1
                for edge in range(cc, mc, cc):
                    module[:, int(np.floor(edge - half)) : int(np.ceil(edge + half))] = -1
            panel[r0 : r0 + mr, c0 : c0 + mc] = module
    return panel


def build_layout(
    detector: DetectorConfig, beam: BeamConfig, artefacts: ArtefactConfig, rng: np.random.Generator
) -> DetectorLayout:
    """Compute the per-run detector maps; ``rng`` draws the hot and dead pixels."""
    rows, cols = detector.shape
    if detector.beam_center_rowcol is not None:
        beam_r, beam_c = (float(v) for v in detector.beam_center_rowcol)
    else:
        beam_r = (rows - 1) / 2.0 + detector.beam_offset_px[0]
        beam_c = (cols - 1) / 2.0 + detector.beam_offset_px[1]
    panel = _panel_map(detector)
    dr = (np.arange(rows, dtype=np.float64) - beam_r)[:, None]
    dc = (np.arange(cols, dtype=np.float64) - beam_c)[None, :]
    radius_px = np.hypot(dr, dc)
    radius_mm = radius_px * detector.pixel_size_mm
    two_theta = np.arctan2(radius_mm, detector.distance_mm)
    azimuth = np.arctan2(dr, dc)
    geom = geometric_factor(two_theta, azimuth, beam.polarisation_fraction)

    reason = np.zeros((rows, cols), np.uint8)
    reason[panel < 0] |= MASK_GAP
    transmission = np.ones((rows, cols), np.float32)
    shadow = np.zeros((rows, cols), bool)
    if artefacts.beamstop_radius_mm > 0:
        shadow |= radius_mm <= artefacts.beamstop_radius_mm
        if artefacts.beamstop_arm_width_mm > 0:
            angle = np.radians(artefacts.beamstop_arm_angle_deg)
            along = (dc * np.cos(angle) + dr * np.sin(angle)) * detector.pixel_size_mm
            across = (-dc * np.sin(angle) + dr * np.cos(angle)) * detector.pixel_size_mm
            shadow |= (along >= 0) & (np.abs(across) <= artefacts.beamstop_arm_width_mm / 2.0)
    transmission[shadow] = artefacts.beamstop_transmission
    reason[shadow] |= MASK_BEAMSTOP

    n_pix = rows * cols
    on_panel = np.flatnonzero(panel.reshape(-1) >= 0)
    dead = np.zeros(n_pix, bool)
    n_dead = int(rng.binomial(on_panel.size, artefacts.dead_pixel_fraction)) if on_panel.size else 0
    if n_dead:
        dead[rng.choice(on_panel, n_dead, replace=False)] = True
    hot = np.zeros(n_pix, np.float32)
    n_hot = int(rng.binomial(on_panel.size, artefacts.hot_pixel_fraction)) if on_panel.size else 0
    if n_hot:
        where = rng.choice(on_panel, n_hot, replace=False)
        lo, hi = artefacts.hot_pixel_photons_range
        hot[where] = np.exp(rng.uniform(np.log(lo), np.log(hi), n_hot))
        hot[dead] = 0.0
    dead = dead.reshape(rows, cols)
    reason[dead] |= MASK_DEAD

    return DetectorLayout(
        beam_rowcol=(beam_r, beam_c),
        panel_id=panel,
        mask=reason != 0,
        mask_reason=reason,
        transmission=transmission,
        two_theta=two_theta.astype(np.float32),
        geom_factor=geom.astype(np.float32),
        radius_px=radius_px.astype(np.float32),
        hot_photons=hot.reshape(rows, cols),
        dead=dead,
    )
