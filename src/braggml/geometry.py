"""Detector geometry: what each pixel is (panel, distance from the beam, resolution, bad or not).

Finders do not read geometry files; they take :class:`PixelMaps`, per-pixel arrays computed once per run from
a :class:`DetectorGeometry` (flat detector parameters or a CrystFEL ``.geom`` file, see
:func:`braggml.io.geom.read_crystfel_geom`) or, when nothing is known, from :func:`PixelMaps.fallback`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["PixelMaps", "HC_KEV_A"]

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
