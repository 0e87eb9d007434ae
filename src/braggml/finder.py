"""The interface every peak finder implements, and the registry that names them.

A finder is built from its frozen configuration dataclass and maps one frame (plus a bad-pixel mask and the
detector's :class:`~braggml.geometry.PixelMaps`) to a one-frame :class:`~braggml.peaks.PeakList`.
:meth:`PeakFinder.find_frames` runs it over many frames.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from .config import config_from_mapping
from .errors import ConfigError
from .geometry import PixelMaps
from .peaks import FrameRef, PeakList

__all__ = ["PeakFinder", "available_finders", "finder_class", "make_finder", "DEFAULT_FINDER"]

#: Finder used by ``braggml find`` when none is named.
DEFAULT_FINDER = "peakfinder8"

# name -> "module:Class"; modules are imported only when the finder is asked for.
_REGISTRY: dict[str, str] = {
    "threshold": "braggml.classical.threshold:ThresholdFinder",
    "peakfinder8": "braggml.classical.peakfinder8:Peakfinder8",
    "dispersion": "braggml.classical.dispersion:DispersionFinder",
    "dispersion_extended": "braggml.classical.dispersion:DispersionExtendedFinder",
    "cnn": "braggml.ml.finders:CNNFinder",
    "svm": "braggml.ml.finders:SVMFinder",
    "unet": "braggml.ml.unet_finder:UNetFinder",
}


class PeakFinder(ABC):
    """Base class of peak finders.

    Subclasses set ``name`` and ``config_class`` (a frozen dataclass holding every parameter and its default)
    and implement :meth:`find`.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any = None, **params: Any) -> None:
        if config is None:
            config = self.config_class()
        elif not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, got {type(config).__name__}")
        if params:
            config = config_from_mapping(self.config_class, params, base=config, prefix=self.name)
        self.config = config

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    @abstractmethod
    def find(
        self,
        image: NDArray,
        mask: NDArray[np.bool_] | None = None,
        *,
        maps: PixelMaps | None = None,
    ) -> PeakList:
        """Find the peaks of one frame.

        Parameters
        ----------
        image : (H, W) ndarray
            The frame, any real dtype; it is not modified.
        mask : (H, W) bool ndarray, optional
            True marks a bad pixel (never part of a peak, never in a background estimate).
        maps : PixelMaps, optional
            Panels, radius and resolution of each pixel; :meth:`PixelMaps.fallback` when omitted.

        Returns
        -------
        PeakList
            The peaks, with ``n_frames == 1`` and ``frame == 0``.
        """

    def find_frames(
        self,
        frames: Iterable[NDArray],
        mask: NDArray[np.bool_] | None = None,
        *,
        maps: PixelMaps | None = None,
        refs: Iterable[FrameRef] | None = None,
    ) -> PeakList:
        """Run :meth:`find` over many frames that share one mask and geometry."""
        results = [self.find(image, mask, maps=maps) for image in frames]
        return PeakList.concatenate(results, frames=tuple(refs) if refs is not None else None)

    def with_params(self, **params: Any) -> PeakFinder:
        """A copy of this finder with some parameters changed."""
        return type(self)(replace(self.config), **params)


def available_finders() -> list[str]:
    """Names accepted by :func:`make_finder`."""
    return sorted(_REGISTRY)


def finder_class(name: str) -> type[PeakFinder]:
    """The finder class registered under ``name``."""
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown finder {name!r}; available: {', '.join(available_finders())}") from None
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"finder {name!r} needs a package that is not installed ({exc.name}): pip install 'braggml[ml]'"
        ) from None
    return getattr(module, class_name)


def make_finder(name: str = DEFAULT_FINDER, config: Any = None, **params: Any) -> PeakFinder:
    """Build the finder ``name`` from a configuration dataclass and/or keyword parameters.

    Examples
    --------
    >>> finder = make_finder("peakfinder8", minimum_snr=6.0)  # doctest: +SKIP
    """
    return finder_class(name)(config, **params)


def register_finder(name: str, target: str) -> None:
    """Register a finder class by ``"module:Class"`` so that :func:`make_finder` can build it by name."""
    _REGISTRY[name] = target
