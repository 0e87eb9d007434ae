"""The learned peak finders: candidates from a classical finder, then a trained patch classifier.

``cnn`` (:class:`CNNFinder`) and ``svm`` (:class:`SVMFinder`) read a model file written by ``braggml train``;
the model carries its candidate-finder settings and patch normalisation, so only the model file is needed.
Without one they use the models that ship with braggml (:data:`DEFAULT_CNN_PATH`, :data:`DEFAULT_SVM_PATH`),
trained on simulated frames of the ``jungfrau4m`` and ``pilatus6m`` presets
(``benchmarks/train_patch_defaults.py``).
Each returned peak is a kept candidate: its centroid, intensity, background and SNR come from the candidate
finder, and ``score`` holds the classifier's peak score in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from numpy.typing import NDArray

from ..classical._common import check_choice, check_non_negative
from ..errors import ConfigError
from ..finder import PeakFinder, finder_class
from ..geometry import PixelMaps
from ..peaks import PeakList
from .patches import CandidateConfig, PatchConfig, candidate_finder, candidate_patches

__all__ = ["CNNFinder", "CNNFinderConfig", "SVMFinder", "SVMFinderConfig", "DEFAULT_CNN_PATH", "DEFAULT_SVM_PATH"]

_DATA = Path(__file__).resolve().parent.parent / "data"
#: The CNN model used when none is given.
DEFAULT_CNN_PATH = _DATA / "cnn_default.safetensors"
#: The SVM model used when none is given.
DEFAULT_SVM_PATH = _DATA / "svm_default.safetensors"


class _PatchClassifier(Protocol):
    kind: str
    patch_config: PatchConfig
    candidate_config: CandidateConfig
    threshold: float

    def scores(self, patches: NDArray[np.floating], *, batch_size: int = ...) -> NDArray[np.float32]: ...


@dataclass(frozen=True)
class _PatchFinderConfig:
    """Settings both patch finders share.

    Attributes
    ----------
    model_path : str
        Model file written by ``braggml train``; empty: the one shipped with braggml.
    score_threshold : float or None
        Keep candidates whose peak score is at least this; None uses the threshold stored in the model
        (the one that maximised the F1 on its validation frames).
    batch_size : int
        Patches per evaluation batch.
    reject_powder_rings : bool
        Drop peaks at radii where much of the annulus stands above the neighbouring radii (powder, kapton or ice
        rings), as the classical finders do. The candidates the model was trained on kept such peaks, so that it
        saw them; here they are dropped before classification.
    ice_rings : {"auto", "reject", "off"}
        Peaks at ice-Ih resolutions (needs a known geometry): ``"auto"`` drops them at the ice rings the frame
        shows, ``"reject"`` at every ice ring.
    min_snr : float
        Candidates whose SNR (as the candidate finder measured it) is below this are not classified. A patch
        holds too few pixels to tell a faint spot from the pixel noise of a detector unlike those of the
        training frames (single noisy pixels pass for sharp spots); the SNR is measured on the whole frame.
    masked_peaks : {"drop", "keep"}
        ``"drop"``: candidates whose core lies along bad pixels, a panel gap or another panel are dropped
        before classification, as the classical finders drop such peaks (their maximum may be hidden, or they
        are artefacts of the panel's border, such as the wider pixels along a CSPAD sensor's middle).
    """

    model_path: str = ""
    score_threshold: float | None = None
    batch_size: int = 4096
    reject_powder_rings: bool = True
    ice_rings: str = "auto"
    min_snr: float = 3.0
    masked_peaks: str = "drop"

    def __post_init__(self) -> None:
        check_choice("ice_rings", self.ice_rings, ("auto", "reject", "off"))
        check_choice("masked_peaks", self.masked_peaks, ("drop", "keep"))
        check_non_negative("min_snr", self.min_snr)
        if not isinstance(self.model_path, str):
            raise ConfigError(f"model_path must be a path, got {self.model_path!r}")
        t = self.score_threshold
        if t is not None and not (math.isfinite(t) and 0.0 <= t <= 1.0):
            raise ConfigError(f"score_threshold must lie in [0, 1] (or be unset), got {t!r}")
        b = self.batch_size
        if isinstance(b, bool) or int(b) != b or b < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {b!r}")


@dataclass(frozen=True)
class CNNFinderConfig(_PatchFinderConfig):
    """Parameters of :class:`CNNFinder`: those of both patch finders (``model_path``, empty for
    :data:`DEFAULT_CNN_PATH`; ``score_threshold``; ``batch_size``, patches per forward pass;
    ``reject_powder_rings``; ``ice_rings``; ``min_snr``; ``masked_peaks``) and the device.

    Attributes
    ----------
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    """

    device: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if str(self.device).strip().lower() != "auto" and not (
            self.device in ("cpu", "cuda") or (str(self.device).startswith("cuda:") and self.device[5:].isdigit())
        ):
            raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")


@dataclass(frozen=True)
class SVMFinderConfig(_PatchFinderConfig):
    """Parameters of :class:`SVMFinder`: those of both patch finders (``model_path``, empty for
    :data:`DEFAULT_SVM_PATH`; ``score_threshold``, on the calibrated score; ``batch_size``;
    ``reject_powder_rings``; ``ice_rings``; ``min_snr``; ``masked_peaks``)."""


class _ClassifierFinder(PeakFinder):
    """Shared machinery: load the model once, find candidates, classify their patches, keep the peaks."""

    model: _PatchClassifier
    default_model: ClassVar[Path]

    def __init__(self, config: Any = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.model = self._load(self.config.model_path or str(self.default_model))
        chosen = self.model.candidate_config
        rules = {"reject_powder_rings": bool(self.config.reject_powder_rings), "ice_rings": self.config.ice_rings,
                 "masked_peaks": self.config.masked_peaks}
        known = {f.name for f in fields(finder_class(chosen.finder).config_class)}
        params = {**chosen.params, **{k: v for k, v in rules.items() if k in known}}
        self.candidates = candidate_finder(replace(chosen, params=params))
        self.last_rejections: dict[str, int] = {}
        self.last_candidates: PeakList = PeakList.empty(1)
        self.last_scores: NDArray[np.float32] = np.zeros(0, np.float32)

    def _load(self, path: str) -> _PatchClassifier:
        raise NotImplementedError

    @property
    def threshold(self) -> float:
        """The score threshold in use."""
        t = self.config.score_threshold
        return float(self.model.threshold if t is None else t)

    def find(
        self,
        image: NDArray,
        mask: NDArray[np.bool_] | None = None,
        *,
        maps: PixelMaps | None = None,
    ) -> PeakList:
        candidates, patches = candidate_patches(
            self.candidates, image, mask, maps=maps, config=self.model.patch_config
        )
        faint = candidates.snr < self.config.min_snr
        if faint.any():
            candidates, patches = candidates.take(~faint), patches[~faint]
        scores = self.model.scores(patches, batch_size=self.config.batch_size) if len(candidates) else np.zeros(0)
        keep = scores >= self.threshold
        self.last_candidates = candidates
        self.last_scores = np.asarray(scores, np.float32)
        self.last_rejections = {"min_snr": int(faint.sum()), "classifier": int((~keep).sum())}
        kept = candidates.take(keep)
        columns = kept.columns()
        columns["score"] = np.asarray(scores, np.float64)[keep]
        return PeakList(**columns, n_frames=1, frames=kept.frames)


class CNNFinder(_ClassifierFinder):
    """Candidates from the model's classical finder, kept where the patch CNN's peak score passes the threshold.

    Examples
    --------
    >>> finder = CNNFinder(model_path="model.safetensors")  # doctest: +SKIP
    >>> peaks = CNNFinder().find(image, mask, maps=maps)  # the shipped model  # doctest: +SKIP
    """

    name: ClassVar[str] = "cnn"
    config_class: ClassVar[type] = CNNFinderConfig
    default_model: ClassVar[Path] = DEFAULT_CNN_PATH
    config: CNNFinderConfig

    def _load(self, path: str) -> _PatchClassifier:
        from .cnn import load_model

        return load_model(path, device=self.config.device)


class SVMFinder(_ClassifierFinder):
    """Candidates from the model's classical finder, kept where the patch SVM's calibrated score passes.

    Examples
    --------
    >>> finder = SVMFinder(model_path="svm.safetensors")  # doctest: +SKIP
    """

    name: ClassVar[str] = "svm"
    config_class: ClassVar[type] = SVMFinderConfig
    default_model: ClassVar[Path] = DEFAULT_SVM_PATH
    config: SVMFinderConfig

    def _load(self, path: str) -> _PatchClassifier:
        from .svm import load_model

        return load_model(path)
