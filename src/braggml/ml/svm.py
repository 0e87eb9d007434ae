"""The patch SVM: scikit-learn support-vector classification of candidate patches.

:func:`train_svm` fits a :class:`~sklearn.pipeline.Pipeline` of :class:`~sklearn.preprocessing.StandardScaler`,
an optional :class:`~sklearn.decomposition.PCA` and :class:`~sklearn.svm.LinearSVC` (``dual=False``), choosing
``C`` by :class:`~sklearn.model_selection.GridSearchCV` with k-fold cross-validation grouped by frame (patches of
one frame never sit on both sides of a fold); on small training sets an RBF-kernel :class:`~sklearn.svm.SVC`
competes in the same search. The fitted arrays are copied into a :class:`TrainedSVM`, a NumPy-only predictor
that is saved without pickle (the arrays in a safetensors file, the settings as JSON) and rebuilt by
:func:`load_model`. Decision values are mapped to a peak score in [0, 1] by a logistic (Platt) fit on the
validation patches.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError, DataFormatError
from .checkpoint import json_clean, read_arrays, require, save_arrays
from .metrics import best_threshold, binary_metrics
from .patches import LABEL_PEAK, CandidateConfig, PatchConfig, PatchSet

__all__ = ["SVMConfig", "TrainedSVM", "train_svm", "load_model", "patch_features"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SVMConfig:
    """How :func:`train_svm` fits.

    Attributes
    ----------
    c_values : tuple of float
        Regularisation values ``C`` searched for the linear SVM.
    pca_components : int or None
        Keep this many principal components between scaling and the SVM; None for no PCA.
    max_iter : int
        Iteration limit of the linear solver.
    cv_folds : int
        Folds of the cross-validation (grouped by frame; fewer when there are fewer frames).
    rbf_max_samples : int
        An RBF-kernel SVC joins the search when the training set has at most this many patches (0: never).
    rbf_c_values : tuple of float
        ``C`` values searched for the RBF SVC.
    rbf_gamma_factors : tuple of float
        RBF ``gamma`` values as multiples of ``1 / n_features`` (the features are standardised).
    max_train_samples : int or None
        Randomly keep at most this many training patches (quick runs); None keeps all.
    seed : int
        Seed of the downsampling and the solvers.
    n_jobs : int
        Parallel jobs of the grid search.
    """

    c_values: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)
    pca_components: int | None = None
    max_iter: int = 5000
    cv_folds: int = 5
    rbf_max_samples: int = 3000
    rbf_c_values: tuple[float, ...] = (1.0, 10.0)
    rbf_gamma_factors: tuple[float, ...] = (1.0,)
    max_train_samples: int | None = None
    seed: int = 0
    n_jobs: int = 1

    def __post_init__(self) -> None:
        for name in ("c_values", "rbf_c_values", "rbf_gamma_factors"):
            values = tuple(float(v) for v in getattr(self, name))
            object.__setattr__(self, name, values)
            if any(not (math.isfinite(v) and v > 0) for v in values):
                raise ConfigError(f"{name} must all be > 0, got {values!r}")
        if not self.c_values:
            raise ConfigError("c_values must hold at least one value")
        if self.pca_components is not None and self.pca_components < 1:
            raise ConfigError(f"pca_components must be >= 1 or None, got {self.pca_components!r}")
        if self.max_iter < 1:
            raise ConfigError(f"max_iter must be >= 1, got {self.max_iter!r}")
        if self.cv_folds < 2:
            raise ConfigError(f"cv_folds must be >= 2, got {self.cv_folds!r}")
        if self.rbf_max_samples < 0:
            raise ConfigError(f"rbf_max_samples must be >= 0, got {self.rbf_max_samples!r}")
        if self.max_train_samples is not None and self.max_train_samples < 2:
            raise ConfigError(f"max_train_samples must be >= 2 or None, got {self.max_train_samples!r}")
        if self.n_jobs == 0:
            raise ConfigError("n_jobs must not be 0")


def patch_features(patches: NDArray[np.floating]) -> NDArray[np.float64]:
    """Flatten ``(N, C, P, P)`` patches into ``(N, C * P * P)`` feature vectors."""
    x = np.asarray(patches)
    if x.ndim != 4:
        raise ValueError(f"patches must have shape (N, C, P, P), got {x.shape}")
    return x.reshape(x.shape[0], -1).astype(np.float64)


@dataclass(eq=False)
class TrainedSVM:
    """A fitted patch SVM as plain arrays: ``decision = f(PCA((x - mean) / scale))``.

    Attributes
    ----------
    kernel : {"linear", "rbf"}
    scaler_mean, scaler_scale : (D,) float ndarrays
        StandardScaler.
    pca_mean, pca_components : (D,) and (K, D) float ndarrays or None
        PCA projection ``(z - pca_mean) @ pca_components.T`` (None without PCA).
    coef : (F,) float ndarray or None
        Linear weights in the (scaled, projected) feature space.
    support_vectors, dual_coef : (S, F) and (S,) float ndarrays or None
        RBF model: decision ``sum(dual_coef * exp(-gamma * |sv - z|**2)) + intercept``.
    intercept, gamma : float
    calibration : (float, float)
        Peak score ``1 / (1 + exp(-(a * decision + b)))``.
    threshold : float
        Peak-score threshold that maximised the validation F1.
    patch_config, candidate_config : PatchConfig, CandidateConfig
    patch_shape : tuple of int
        ``(C, P, P)`` of the patches.
    info : dict
        Search results, cross-validation scores and held-out figures stored with the model.
    """

    kernel: str
    scaler_mean: NDArray[np.float64]
    scaler_scale: NDArray[np.float64]
    pca_mean: NDArray[np.float64] | None
    pca_components: NDArray[np.float64] | None
    coef: NDArray[np.float64] | None
    support_vectors: NDArray[np.float64] | None
    dual_coef: NDArray[np.float64] | None
    intercept: float
    gamma: float
    calibration: tuple[float, float]
    threshold: float
    patch_config: PatchConfig
    candidate_config: CandidateConfig
    patch_shape: tuple[int, int, int]
    info: dict[str, Any] = field(default_factory=dict)

    kind = "svm"

    def _project(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        z = (x - self.scaler_mean) / self.scaler_scale
        if self.pca_components is not None and self.pca_mean is not None:
            z = (z - self.pca_mean) @ self.pca_components.T
        return z

    def decision_function(self, patches: NDArray[np.floating], *, batch_size: int = 4096) -> NDArray[np.float64]:
        """Signed distance to the separating surface (positive = peak) of ``(N, C, P, P)`` patches."""
        x = np.asarray(patches)
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.patch_shape):
            raise ValueError(f"patches must have shape (N, {', '.join(map(str, self.patch_shape))}), got {x.shape}")
        out = np.empty(x.shape[0], np.float64)
        for start in range(0, x.shape[0], batch_size):
            z = self._project(patch_features(x[start : start + batch_size]))
            if self.kernel == "linear":
                assert self.coef is not None
                d = z @ self.coef + self.intercept
            else:
                assert self.support_vectors is not None and self.dual_coef is not None
                sv = self.support_vectors
                sq = (z * z).sum(1)[:, None] + (sv * sv).sum(1)[None, :] - 2.0 * z @ sv.T
                d = np.exp(-self.gamma * np.maximum(sq, 0.0)) @ self.dual_coef + self.intercept
            out[start : start + z.shape[0]] = d
        return out

    def scores(self, patches: NDArray[np.floating], *, batch_size: int = 4096) -> NDArray[np.float32]:
        """Peak scores in [0, 1] (calibrated decision values)."""
        a, b = self.calibration
        d = self.decision_function(patches, batch_size=batch_size)
        return (1.0 / (1.0 + np.exp(-np.clip(a * d + b, -500, 500)))).astype(np.float32)

    def coefficient_map(self) -> NDArray[np.float64]:
        """Weights of the linear model on the input pixels, shaped ``(C, P, P)``.

        Positive weights push towards "peak". PCA and scaling are folded back so each value is the change of
        the decision per unit of that normalised patch pixel.

        Raises
        ------
        ConfigError
            For an RBF model, which has no per-pixel weights.
        """
        if self.kernel != "linear" or self.coef is None:
            raise ConfigError("only a linear SVM has a coefficient map (this model uses the RBF kernel)")
        w = self.coef
        if self.pca_components is not None:
            w = self.pca_components.T @ w
        return (w / self.scaler_scale).reshape(self.patch_shape)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model file (safetensors arrays, JSON settings); see :mod:`braggml.ml.checkpoint`."""
        arrays: dict[str, NDArray[Any]] = {"scaler_mean": self.scaler_mean, "scaler_scale": self.scaler_scale}
        for name in ("pca_mean", "pca_components", "coef", "support_vectors", "dual_coef"):
            value = getattr(self, name)
            if value is not None:
                arrays[name] = np.asarray(value, np.float64)
        meta = {
            "kind": self.kind,
            "model_config": {
                "kernel": self.kernel,
                "intercept": float(self.intercept),
                "gamma": float(self.gamma),
                "calibration": [float(v) for v in self.calibration],
                "patch_shape": list(self.patch_shape),
            },
            "patch": self.patch_config.to_dict(),
            "candidates": self.candidate_config.to_dict(),
            "threshold": float(self.threshold),
            "info": self.info,
        }
        return save_arrays(path, arrays, json_clean(meta))


def load_model(path: str | os.PathLike[str]) -> TrainedSVM:
    """Rebuild a :class:`TrainedSVM` from a model file written by :meth:`TrainedSVM.save` (no unpickling).

    Raises
    ------
    InputNotFoundError
        The file does not exist.
    DataFormatError
        The file is damaged, not a braggml model, a CNN model, or its arrays do not fit together.
    """
    arrays, meta = read_arrays(path, kind="svm")
    try:
        mc = require(meta, "model_config", path)
        kernel = str(mc["kernel"])
        patch_shape = tuple(int(v) for v in mc["patch_shape"])
        model = TrainedSVM(
            kernel=kernel,
            scaler_mean=arrays["scaler_mean"].astype(np.float64),
            scaler_scale=arrays["scaler_scale"].astype(np.float64),
            pca_mean=arrays.get("pca_mean"),
            pca_components=arrays.get("pca_components"),
            coef=arrays.get("coef"),
            support_vectors=arrays.get("support_vectors"),
            dual_coef=arrays.get("dual_coef"),
            intercept=float(mc["intercept"]),
            gamma=float(mc["gamma"]),
            calibration=(float(mc["calibration"][0]), float(mc["calibration"][1])),
            threshold=float(meta.get("threshold") if meta.get("threshold") is not None else 0.5),
            patch_config=PatchConfig.from_dict(require(meta, "patch", path)),
            candidate_config=CandidateConfig.from_dict(require(meta, "candidates", path)),
            patch_shape=patch_shape,  # type: ignore[arg-type]
            info=dict(meta.get("info") or {}),
        )
    except (ConfigError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise DataFormatError(f"{path}: invalid SVM model settings ({exc!s})") from None
    d = int(np.prod(patch_shape)) if len(patch_shape) == 3 else -1
    n_features = model.pca_components.shape[0] if model.pca_components is not None else d
    problems = []
    if len(patch_shape) != 3 or patch_shape[1] != model.patch_config.size or patch_shape[2] != patch_shape[1]:
        problems.append(f"patch shape {patch_shape} does not fit patch size {model.patch_config.size}")
    if model.scaler_mean.shape != (d,) or model.scaler_scale.shape != (d,):
        problems.append(f"scaler has {model.scaler_mean.shape} entries for {d} features")
    if model.pca_components is not None and (
        model.pca_components.ndim != 2 or model.pca_components.shape[1] != d or model.pca_mean is None
    ):
        problems.append("PCA arrays do not fit the features")
    if kernel == "linear":
        if model.coef is None or model.coef.shape != (n_features,):
            problems.append("linear weights missing or of the wrong length")
    elif kernel == "rbf":
        sv, dc = model.support_vectors, model.dual_coef
        if sv is None or dc is None or sv.ndim != 2 or sv.shape[1] != n_features or dc.shape != (sv.shape[0],):
            problems.append("support vectors missing or of the wrong shape")
    else:
        problems.append(f"unknown kernel {kernel!r}")
    if problems:
        raise DataFormatError(f"{path}: damaged SVM model: {'; '.join(problems)}")
    return model


def _from_pipeline(
    pipeline: Any, patch_config: PatchConfig, candidate_config: CandidateConfig, patch_shape: tuple[int, int, int]
) -> TrainedSVM:
    """Copy the fitted arrays out of a scikit-learn pipeline (scaler, optional PCA, LinearSVC or SVC)."""
    scaler = pipeline.named_steps["scale"]
    pca = pipeline.named_steps.get("pca")
    svm = pipeline.named_steps["svm"]
    kernel = "linear" if not hasattr(svm, "kernel") else str(svm.kernel)
    coef = sv = dual = None
    gamma = 0.0
    if kernel == "linear":
        coef = np.asarray(svm.coef_, np.float64).reshape(-1)
        intercept = float(np.asarray(svm.intercept_).reshape(-1)[0])
    else:
        sv = np.asarray(svm.support_vectors_, np.float64)
        dual = np.asarray(svm.dual_coef_, np.float64).reshape(-1)
        intercept = float(np.asarray(svm.intercept_).reshape(-1)[0])
        gamma = float(svm.gamma)
    has_pca = pca is not None and pca != "passthrough"
    return TrainedSVM(
        kernel=kernel,
        scaler_mean=np.asarray(scaler.mean_, np.float64),
        scaler_scale=np.asarray(scaler.scale_, np.float64),
        pca_mean=np.asarray(pca.mean_, np.float64) if has_pca else None,
        pca_components=np.asarray(pca.components_, np.float64) if has_pca else None,
        coef=coef,
        support_vectors=sv,
        dual_coef=dual,
        intercept=intercept,
        gamma=gamma,
        calibration=(1.0, 0.0),
        threshold=0.5,
        patch_config=patch_config,
        candidate_config=candidate_config,
        patch_shape=patch_shape,
    )


def _platt(decision: NDArray[np.float64], y: NDArray[np.integer]) -> tuple[float, float]:
    """Logistic fit of the labels on the decision values."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) < 2:
        return 1.0, 0.0
    lr = LogisticRegression(C=100.0, max_iter=1000)
    lr.fit(decision.reshape(-1, 1), y)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def train_svm(
    train: PatchSet,
    val: PatchSet | None = None,
    *,
    config: SVMConfig | None = None,
    echo: Callable[[str], None] | None = None,
) -> TrainedSVM:
    """Fit the patch SVM: grid search over ``C`` (and the RBF kernel on small sets) with frame-grouped k-fold CV.

    Parameters
    ----------
    train : PatchSet
        Training patches (ignored labels skipped); the cross-validation folds group them by frame.
    val : PatchSet, optional
        Validation patches from other frames, for the score calibration and the decision threshold (the
        training patches' cross-validated decision values are used without it).
    config : SVMConfig, optional
    echo : callable, optional
        Receives one line per searched setting and per fold (e.g. ``print``).

    Returns
    -------
    TrainedSVM
        ``info`` holds the search table, the best setting's fold scores, and the validation classification
        report and confusion matrix.
    """
    from sklearn.decomposition import PCA
    from sklearn.metrics import classification_report
    from sklearn.model_selection import GridSearchCV, GroupKFold, cross_val_predict
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC

    config = config or SVMConfig()
    say = echo or (lambda line: None)
    train = train.labelled()
    if config.max_train_samples is not None and len(train) > config.max_train_samples:
        rng = np.random.default_rng(config.seed)
        keep = np.sort(rng.choice(len(train), config.max_train_samples, replace=False))
        train = train.take(keep)
        say(f"downsampled the training set to {len(train)} patches")
    if train.n_positive == 0 or train.n_negative == 0:
        raise ConfigError(
            f"training patches need both classes, got {train.n_positive} peaks and {train.n_negative} not peaks"
        )
    x = patch_features(train.patches)
    y = (train.labels == LABEL_PEAK).astype(np.int64)
    groups = train.groups("frame")
    n_groups = int(np.unique(groups).size)
    folds = min(config.cv_folds, n_groups)
    if folds < 2:
        raise ConfigError(f"cross-validation needs patches from at least 2 frames, got {n_groups}")
    n_features = x.shape[1]
    steps: list[tuple[str, Any]] = [("scale", StandardScaler())]
    if config.pca_components is not None:
        k = min(config.pca_components, n_features, len(x))
        steps.append(("pca", PCA(n_components=k, random_state=config.seed)))
        n_features = k
    steps.append(("svm", LinearSVC(dual=False, max_iter=config.max_iter, class_weight="balanced")))
    pipeline = Pipeline(steps)
    grid: list[dict[str, Any]] = [
        {
            "svm": [LinearSVC(dual=False, max_iter=config.max_iter, class_weight="balanced", random_state=config.seed)],
            "svm__C": list(config.c_values),
        }
    ]
    if config.rbf_max_samples and len(train) <= config.rbf_max_samples:
        grid.append(
            {
                "svm": [SVC(kernel="rbf", class_weight="balanced", random_state=config.seed)],
                "svm__C": list(config.rbf_c_values),
                "svm__gamma": [f / n_features for f in config.rbf_gamma_factors],
            }
        )
    cv = GroupKFold(n_splits=folds)
    search = GridSearchCV(pipeline, grid, scoring="f1", cv=cv, n_jobs=config.n_jobs, refit=True)
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(x, y, groups=groups)
    results = search.cv_results_
    table = []
    for i, params in enumerate(results["params"]):
        est = params["svm"]
        kernel = "rbf" if isinstance(est, SVC) else "linear"
        row = {
            "kernel": kernel,
            "C": float(params["svm__C"]),
            "gamma": float(params.get("svm__gamma", 0.0)),
            "mean_f1": float(results["mean_test_score"][i]),
            "std_f1": float(results["std_test_score"][i]),
            "fold_f1": [float(results[f"split{k}_test_score"][i]) for k in range(folds)],
        }
        table.append(row)
        gamma_text = f" gamma {row['gamma']:.3g}" if kernel == "rbf" else ""
        say(f"{kernel:6s} C {row['C']:<8g}{gamma_text}  CV F1 {row['mean_f1']:.4f} +- {row['std_f1']:.4f}")
    best = table[search.best_index_]
    for k, f1 in enumerate(best["fold_f1"]):
        say(f"best setting, fold {k + 1}/{folds}: F1 {f1:.4f}")
    model = _from_pipeline(
        search.best_estimator_, train.patch_config, train.candidate_config, tuple(train.patches.shape[1:])
    )
    # score calibration and decision threshold: on the validation frames, else cross-validated training values
    if val is not None and len(val.labelled()) and len(np.unique(val.labelled().labels)) == 2:
        cal = val.labelled()
        d_cal = model.decision_function(cal.patches)
        y_cal = (cal.labels == LABEL_PEAK).astype(np.int64)
        source = "validation"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            d_cal = cross_val_predict(
                search.best_estimator_, x, y, groups=groups, cv=cv, method="decision_function"
            )
        y_cal = y
        source = "cross-validated training"
    model.calibration = _platt(d_cal, y_cal)
    scores = model.scores(cal.patches) if source == "validation" else 1.0 / (
        1.0 + np.exp(-(model.calibration[0] * d_cal + model.calibration[1]))
    )
    model.threshold, _ = best_threshold(y_cal, scores)
    m = binary_metrics(y_cal, scores >= model.threshold)
    report = classification_report(
        y_cal, (scores >= model.threshold).astype(int), labels=[0, 1], target_names=["not peak", "peak"], digits=4,
        zero_division=0,
    )
    say(f"{source} patches at threshold {model.threshold:.3f}:\n{report}")
    model.info.update(
        {
            "svm_config": asdict(config),
            "search": table,
            "best": {k: best[k] for k in ("kernel", "C", "gamma", "mean_f1", "std_f1")},
            "cv_folds": folds,
            "cv_fold_f1": best["fold_f1"],
            "n_train_patches": len(train),
            "calibration_source": source,
            "calibration_metrics": m,
            "classification_report": report,
        }
    )
    return model
