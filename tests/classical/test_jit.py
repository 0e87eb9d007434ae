"""Whether the finders' compiled kernels are cached (numba's cache index files)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from braggml.classical import _radial
from braggml.classical.jit import KERNEL_MODULES, kernels_cached

_PROBE = """
import numpy as np
from braggml.classical import _common, _radial
from braggml.classical.jit import kernels_cached
radial = ("braggml.classical._radial",)
print(kernels_cached(), kernels_cached(radial))
_radial._percentile_sorted(np.arange(5.0), 0.5)  # one kernel of one module compiled and cached
print(kernels_cached(), kernels_cached(radial))
"""


def _probe(cache_dir: Path) -> list[str]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_an_empty_cache_is_told_apart(tmp_path: Path):
    # a fresh cache folder: nothing cached; once a kernel of _radial is compiled, that module is, _common not yet
    assert _probe(tmp_path) == ["False", "False", "False", "True"]
    # a second process finds _radial's kernel in the same folder before compiling anything
    assert _probe(tmp_path) == ["False", "True", "False", "True"]


def test_kernels_cached_after_use():
    _radial._percentile_sorted(np.arange(5.0), 0.5)
    assert kernels_cached(("braggml.classical._radial",))
    assert "braggml.classical._radial" in KERNEL_MODULES


def test_unknown_internals_say_cached():
    # a module that is not braggml's, or numba internals that changed, never raise: no notice is given
    assert kernels_cached(("braggml.no_such_module",))
