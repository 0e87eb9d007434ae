"""What a model file holds, for ``braggml info MODEL``: kind, size, cut, what it was trained on and how it scored.

Only the file's JSON header and the shapes of its arrays are read (:mod:`braggml.ml.checkpoint`); no weights are
loaded.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .checkpoint import read_shapes
from .finders import DEFAULT_CNN_PATH, DEFAULT_SVM_PATH
from .unet import DEFAULT_MODEL_PATH

__all__ = ["BUILTIN_MODELS", "describe_model", "format_model_description"]

#: The models shipped with braggml, by finder: what ``--finder cnn|svm|unet`` uses without ``--model``.
BUILTIN_MODELS = {"cnn": DEFAULT_CNN_PATH, "svm": DEFAULT_SVM_PATH, "unet": DEFAULT_MODEL_PATH}

#: Arrays that are statistics of the training data, not fitted parameters.
_NOT_PARAMETERS = ("running_mean", "running_var", "num_batches_tracked")


def describe_model(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Summarise a braggml model file.

    Parameters
    ----------
    path : str or Path
        The ``.safetensors`` model file.

    Returns
    -------
    dict
        ``file``, ``size_bytes``, ``kind``, ``builtin`` (the finder it is the shipped model of, or None),
        ``created``, ``versions``, ``parameters`` (fitted numbers, without batch-norm statistics),
        ``threshold`` and, for a U-Net, ``flips`` and ``cuts`` (by number of flipped copies); for a patch
        classifier ``patch_size_px``, ``candidates`` (finder and parameters) and ``min_candidate_snr`` (the
        fainter candidates were left out of training); ``trained_on``,
        ``n_training_files``, ``validation_f1`` and ``test`` (held-out peak precision, recall and F1), each
        None when the file does not record it.

    Raises
    ------
    InputNotFoundError, DataFormatError
        A missing file, or one that is not a braggml model file.
    """
    p = Path(os.fspath(path))
    shapes, meta = read_shapes(p)
    n_params = sum(math.prod(shape) for name, shape in shapes.items() if not name.endswith(_NOT_PARAMETERS))
    info = meta.get("info") or {}
    kind = meta.get("kind")
    builtin = next((k for k, b in BUILTIN_MODELS.items() if b.exists() and b.resolve() == p.resolve()), None)
    test = (info.get("test") or {}).get("peaks")
    out: dict[str, Any] = {
        "file": str(p),
        "size_bytes": p.stat().st_size,
        "kind": kind,
        "builtin": builtin,
        "created": meta.get("created"),
        "versions": meta.get("versions") or {},
        "parameters": n_params,
        "threshold": meta.get("threshold"),
        "trained_on": info.get("trained_on"),
        "n_training_files": len(info["data"]) if isinstance(info.get("data"), list) else None,
        "validation_f1": info.get("best_val_f1", info.get("val_f1")),
        "test": {k: test.get(k) for k in ("precision", "recall", "f1", "n_true", "n_found")} if test else None,
    }
    if kind == "unet":
        out["flips"] = meta.get("flips", 1)
        out["cuts"] = meta.get("cuts")
        out["input_channels"] = (meta.get("model_config") or {}).get("in_channels")
    else:
        patch = meta.get("patch") or {}
        half = patch.get("half_size")
        out["patch_size_px"] = 2 * int(half) + 1 if isinstance(half, int) else None
        out["candidates"] = meta.get("candidates")
        out["min_candidate_snr"] = info.get("min_candidate_snr")
    return out


def format_model_description(info: dict[str, Any]) -> str:
    """Human-readable text of :func:`describe_model`'s dict."""
    kinds = {"cnn": "patch CNN classifier", "svm": "patch SVM classifier", "unet": "U-Net segmentation network"}
    lines = [f"{info['file']}  (braggml model, {info['size_bytes']:,} bytes)"]
    rows: list[tuple[str, Any]] = [
        ("kind", f"{kinds.get(info['kind'], info['kind'])} (--finder {info['kind']})"),
        ("built in", f"yes: what --finder {info['builtin']} uses without --model" if info["builtin"] else None),
        ("parameters", f"{info['parameters']:,}"),
    ]
    threshold = info.get("threshold")
    if info["kind"] == "unet":
        cuts = info.get("cuts") or {}
        by_flips = ", ".join(f"{n} copies {c:g}" if str(n) != "1" else f"1 copy {c:g}" for n, c in cuts.items())
        rows += [
            ("input channels", info.get("input_channels")),
            ("flipped copies", info.get("flips")),
            ("probability cut", f"{threshold:g}" + (f" ({by_flips})" if by_flips else "") if threshold else None),
        ]
    else:
        cand = info.get("candidates") or {}
        floor = info.get("min_candidate_snr")
        params = ", ".join(f"{k}={v}" for k, v in sorted((cand.get("params") or {}).items()))
        rows += [
            ("patch", f"{info['patch_size_px']} x {info['patch_size_px']} px" if info.get("patch_size_px") else None),
            ("candidates", f"{cand.get('finder')} ({params})" if cand else None),
            ("trained on SNR", f">= {floor:g} (fainter candidates left out)" if floor else None),
            ("score cut", f"{threshold:.3f}" if threshold is not None else None),
        ]
    test = info.get("test")
    rows += [
        ("trained on", info.get("trained_on")),
        ("training files", info.get("n_training_files")),
        ("validation F1", f"{info['validation_f1']:.3f}" if info.get("validation_f1") is not None else None),
        (
            "held-out peaks",
            f"precision {test['precision']:.3f}, recall {test['recall']:.3f}, F1 {test['f1']:.3f} "
            f"({test['n_true']} true peaks)" if test and test.get("f1") is not None else None,
        ),
        ("created", info.get("created")),
        ("written by", ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items()) or None),
    ]
    for key, value in rows:
        if value is not None:
            lines.append(f"  {key:<16} {value}")
    return "\n".join(lines)
