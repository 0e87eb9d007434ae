"""Model files that cannot run code: arrays in a safetensors file, every setting as JSON in its header.

A braggml model file is one ``.safetensors`` file. Its tensors are the fitted arrays (network weights, or the
SVM's scaler, PCA and coefficients / support vectors); its header metadata holds one JSON document under the
key ``"braggml"`` with the model kind, the model configuration, the patch and candidate-finder settings, the
decision threshold, training figures and the versions that wrote it. Loading parses JSON and copies arrays;
nothing is unpickled, so a model file received from another lab cannot execute code.

The header is plain JSON and can be inspected with :func:`read_metadata`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import DataFormatError, InputNotFoundError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MODEL_KINDS",
    "save_arrays",
    "read_arrays",
    "read_metadata",
    "read_shapes",
    "versions",
    "json_clean",
    "require",
    "load_classifier",
]

#: Value of the ``format`` entry of every braggml model file.
FORMAT_NAME = "braggml-model"
#: Layout version; files with a newer one are refused.
FORMAT_VERSION = 1
#: Kinds of model a file can hold.
MODEL_KINDS = ("cnn", "svm", "unet")
_META_KEY = "braggml"


def versions() -> dict[str, str]:
    """Versions of the software that writes a model (recorded in the file)."""
    from .. import __version__

    out = {"braggml": str(__version__), "numpy": np.__version__, "python": platform.python_version()}
    for name in ("torch", "sklearn", "safetensors"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        out["scikit-learn" if name == "sklearn" else name] = str(getattr(module, "__version__", "unknown"))
    return out


def _safetensors() -> Any:
    try:
        import safetensors.numpy as st
    except ImportError as exc:  # pragma: no cover - part of the ml extra
        raise ImportError("model files need safetensors: pip install 'braggml[ml]'") from exc
    return st


def save_arrays(path: str | os.PathLike[str], arrays: Mapping[str, NDArray[Any]], metadata: Mapping[str, Any]) -> Path:
    """Write ``arrays`` and the JSON ``metadata`` to a model file, atomically.

    ``metadata`` must hold ``kind`` (one of :data:`MODEL_KINDS`); ``format``, ``format_version``, ``versions``
    and ``created`` are added.
    """
    from ..io.atomic import atomic_output

    st = _safetensors()
    meta = dict(metadata)
    if meta.get("kind") not in MODEL_KINDS:
        raise ValueError(f"model metadata needs kind in {MODEL_KINDS}, got {meta.get('kind')!r}")
    meta.update(
        format=FORMAT_NAME,
        format_version=FORMAT_VERSION,
        versions=versions(),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    tensors = {name: np.ascontiguousarray(value) for name, value in arrays.items()}
    text = json.dumps(meta, sort_keys=True, allow_nan=False)
    path = Path(path)
    with atomic_output(path) as tmp:
        st.save_file(tensors, str(tmp), metadata={_META_KEY: text})
    return path


def _open(path: Path) -> Any:
    from safetensors import safe_open

    if not path.is_file():
        raise InputNotFoundError(f"{path}: model file not found")
    try:
        return safe_open(str(path), framework="numpy")
    except Exception as exc:  # safetensors raises its own error type for damaged headers
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataFormatError(f"{path}: not a braggml model file (unreadable safetensors header: {first})") from None


def _metadata(handle: Any, path: Path) -> dict[str, Any]:
    raw = (handle.metadata() or {}).get(_META_KEY)
    if raw is None:
        raise DataFormatError(f"{path}: a safetensors file without braggml settings (not a braggml model file)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}: damaged model settings (invalid JSON: {exc.msg})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise DataFormatError(f"{path}: not a braggml model file (format {meta.get('format')!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DataFormatError(
            f"{path}: model file format version {version!r} is newer than this braggml reads ({FORMAT_VERSION}); "
            "upgrade braggml"
        )
    return meta


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON settings of a model file (no arrays are read).

    Raises
    ------
    InputNotFoundError
        The file does not exist.
    DataFormatError
        The file is not a braggml model file.
    """
    path = Path(path)
    return _metadata(_open(path), path)


def read_shapes(path: str | os.PathLike[str]) -> tuple[dict[str, tuple[int, ...]], dict[str, Any]]:
    """The shapes of a model file's arrays and its settings, without reading the arrays.

    Raises
    ------
    InputNotFoundError, DataFormatError
        As :func:`read_metadata`.
    """
    path = Path(path)
    handle = _open(path)
    meta = _metadata(handle, path)
    shapes = {name: tuple(int(n) for n in handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
    return shapes, meta


def read_arrays(
    path: str | os.PathLike[str], *, kind: str | None = None
) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
    """Read a model file: its arrays and its settings.

    Parameters
    ----------
    path : path
        The model file.
    kind : {"cnn", "svm"}, optional
        The kind of model expected; another kind is an error naming both.

    Raises
    ------
    InputNotFoundError
        The file does not exist.
    DataFormatError
        The file is damaged, not a braggml model file, or holds another kind of model.
    """
    path = Path(path)
    handle = _open(path)
    meta = _metadata(handle, path)
    found = meta.get("kind")
    if found not in MODEL_KINDS:
        raise DataFormatError(f"{path}: unknown model kind {found!r} (known: {', '.join(MODEL_KINDS)})")
    if kind is not None and found != kind:
        raise DataFormatError(f"{path}: holds a {found} model, not a {kind} model (use --finder {found})")
    try:
        arrays = {name: np.array(handle.get_tensor(name)) for name in handle.keys()}  # noqa: SIM118
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataFormatError(f"{path}: damaged model arrays ({first})") from None
    return arrays, meta


def json_clean(value: Any) -> Any:
    """NaN/inf to None and NumPy scalars and arrays to Python, recursively (model settings are strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): json_clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_clean(value.tolist())
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def require(meta: Mapping[str, Any], key: str, path: str | os.PathLike[str]) -> Any:
    """``meta[key]``, or a :class:`DataFormatError` naming the file and the missing setting."""
    try:
        return meta[key]
    except KeyError:
        raise DataFormatError(f"{path}: model settings lack {key!r} (damaged or incompatible model file)") from None


def load_classifier(path: str | os.PathLike[str], *, device: str = "auto") -> Any:
    """Load a CNN or SVM model file, whichever it holds (:func:`braggml.ml.cnn.load_model` or
    :func:`braggml.ml.svm.load_model`)."""
    kind = read_metadata(path).get("kind")
    if kind == "cnn":
        from .cnn import load_model

        return load_model(path, device=device)
    if kind == "svm":
        from .svm import load_model as load_svm

        return load_svm(path)
    if kind == "unet":
        from .unet import load_unet

        return load_unet(path, device=device)
    raise DataFormatError(f"{path}: unknown model kind {kind!r} (known: {', '.join(MODEL_KINDS)})")
