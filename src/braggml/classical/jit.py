"""Whether the compiled (numba) kernels of the finders are in numba's on-disk cache.

Every kernel is compiled on its first call and cached (``cache=True``): in ``__pycache__`` beside the sources, in a
user cache folder when that is read-only, or in ``NUMBA_CACHE_DIR``. The first run after braggml is installed or
upgraded therefore spends tens of seconds compiling before its first frame; later runs load the kernels in about
a second. The command line uses :func:`kernels_cached` to say so before that wait, rather than appear to hang.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["kernels_cached", "KERNEL_MODULES"]

# modules whose kernels every classical finder and the U-Net's peak extraction call
KERNEL_MODULES = ("braggml.classical._common", "braggml.classical._radial")


def _module_cached(module: ModuleType) -> bool:
    """True when some kernel of ``module`` has a cache index that matches its current source."""
    for value in vars(module).values():
        cache = getattr(value, "_cache", None)
        index_file = getattr(cache, "_cache_file", None)
        if index_file is None or getattr(value, "py_func", None) is None:
            continue  # not a numba dispatcher
        if index_file._load_index():  # empty when absent, stale (source changed) or of another numba
            return True
    return False


def kernels_cached(modules: tuple[str, ...] = KERNEL_MODULES) -> bool:
    """Whether the compiled kernels of ``modules`` are cached on this machine.

    A module counts as cached when any of its kernels is; each is compiled whole by the first run that uses
    it. The check reads numba's cache index files, which are internal to numba: should numba change them, this
    says True (no notice) rather than fail.

    Parameters
    ----------
    modules : tuple of str
        Dotted names of modules holding ``numba.njit(cache=True)`` kernels.

    Returns
    -------
    bool
        False when some module has no kernel cached (the coming run compiles it).
    """
    try:
        return all(_module_cached(importlib.import_module(name)) for name in modules)
    except Exception:  # numba internals changed: assume cached, say nothing
        return True
