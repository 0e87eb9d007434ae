"""braggml: find Bragg peaks in X-ray crystallography detector frames with classical and learned finders."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("braggml")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

from .errors import BraggMLError, ConfigError, DataFormatError, InputNotFoundError
from .finder import available_finders, make_finder
from .geometry import PixelMaps
from .peaks import FrameRef, PeakList

__all__ = [
    "__version__",
    "BraggMLError",
    "ConfigError",
    "DataFormatError",
    "InputNotFoundError",
    "FrameRef",
    "PeakList",
    "PixelMaps",
    "available_finders",
    "make_finder",
]
