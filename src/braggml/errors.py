"""Exceptions raised for bad input.

The command line turns every :class:`BraggMLError` into one line on stderr and a non-zero exit; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class BraggMLError(Exception):
    """Base class of the errors that describe bad input rather than a bug."""


class ConfigError(BraggMLError, ValueError):
    """A parameter or configuration value is invalid (names the parameter and the value)."""


class DataFormatError(BraggMLError):
    """A file cannot be read as detector frames, a mask, a geometry or a peak list.

    The message names the file and, where there is one, the dataset path.
    """


class InputNotFoundError(DataFormatError, FileNotFoundError):
    """A file, a dataset path or a glob pattern names nothing that exists."""
