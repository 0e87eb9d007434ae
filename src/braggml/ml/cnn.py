"""The patch CNN: a small convolutional network that calls each candidate patch peak or not peak.

:class:`PatchCNN` is the network, :func:`train_cnn` its training loop (class-weighted loss, AdamW, cosine
learning-rate schedule, early stopping on validation F1, seeded, CUDA and mixed precision when available),
:class:`TrainedCNN` a trained network with everything needed to use it (patch and candidate settings, decision
threshold), and :func:`load_model` reads one back from a model file without unpickling anything.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from ..errors import ConfigError, DataFormatError
from .checkpoint import json_clean, read_arrays, require, save_arrays
from .metrics import best_threshold, binary_metrics
from .patches import LABEL_PEAK, CandidateConfig, PatchConfig, PatchSet, positive_weight

__all__ = [
    "CNNConfig",
    "PatchCNN",
    "TrainConfig",
    "EpochRecord",
    "TrainedCNN",
    "train_cnn",
    "load_model",
    "resolve_device",
    "DistributedContext",
    "distributed_context",
    "init_distributed",
    "shutdown_distributed",
    "rank_device",
    "rank_indices",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CNNConfig:
    """Architecture of :class:`PatchCNN`.

    Attributes
    ----------
    patch_size : int
        Side of the input patches (odd).
    in_channels : int
        Input channels (normalised values and validity).
    channels : tuple of int
        Feature channels of each convolution stage; every stage halves the patch side.
    convs_per_stage : int
        3x3 convolutions in each stage before its pooling.
    hidden : int
        Width of the fully connected layer.
    dropout : float
        Dropout probability before each fully connected layer.
    """

    patch_size: int = 15
    in_channels: int = 2
    channels: tuple[int, ...] = (16, 32)
    convs_per_stage: int = 2
    hidden: int = 64
    dropout: float = 0.3

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if self.patch_size < 5 or self.patch_size % 2 == 0:
            raise ConfigError(f"patch_size must be odd and >= 5, got {self.patch_size!r}")
        if self.in_channels < 1:
            raise ConfigError(f"in_channels must be >= 1, got {self.in_channels!r}")
        if not self.channels or any(c < 1 for c in self.channels):
            raise ConfigError(f"channels must be one or more positive integers, got {self.channels!r}")
        if self.patch_size >> len(self.channels) < 1:
            raise ConfigError(
                f"{len(self.channels)} pooling stages leave nothing of a {self.patch_size}-pixel patch; "
                "use fewer channels stages or a larger patch"
            )
        if self.convs_per_stage < 1:
            raise ConfigError(f"convs_per_stage must be >= 1, got {self.convs_per_stage!r}")
        if self.hidden < 1:
            raise ConfigError(f"hidden must be >= 1, got {self.hidden!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must lie in [0, 1), got {self.dropout!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CNNConfig:
        return cls(**{k: (tuple(v) if k == "channels" else v) for k, v in data.items()})


def _conv_stage(c_in: int, c_out: int, n_convs: int) -> nn.Sequential:
    """``n_convs`` 3x3 convolutions (batch-normalised, ReLU), then a 2x2 max pooling."""
    layers: list[nn.Module] = []
    for k in range(n_convs):
        layers += [
            nn.Conv2d(c_in if k == 0 else c_out, c_out, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        ]
    layers.append(nn.MaxPool2d(kernel_size=2))
    return nn.Sequential(*layers)


class PatchCNN(nn.Module):
    """Convolution stages, then dropout and fully connected layers ending in one peak logit.

    Input ``(N, in_channels, P, P)``; output ``(N,)`` logits (``sigmoid`` gives the peak score).

    Examples
    --------
    >>> net = PatchCNN(CNNConfig(patch_size=9, channels=(4,), hidden=8))
    >>> net(torch.zeros(3, 2, 9, 9)).shape
    torch.Size([3])
    """

    def __init__(self, config: CNNConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or CNNConfig()
        widths = (config.in_channels, *config.channels)
        self.features = nn.Sequential(
            *[_conv_stage(a, b, config.convs_per_stage) for a, b in zip(widths[:-1], widths[1:])]
        )
        side = config.patch_size >> len(config.channels)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(config.dropout),
            nn.Linear(config.channels[-1] * side * side, config.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)).squeeze(1)


@dataclass(frozen=True)
class TrainConfig:
    """How :func:`train_cnn` trains.

    Attributes
    ----------
    epochs : int
        Most passes over the training patches.
    batch_size : int
        Patches per optimiser step.
    learning_rate : float
        Peak AdamW learning rate (cosine-annealed to 1/50 of it over ``epochs``).
    weight_decay : float
        AdamW weight decay.
    patience : int
        Stop after this many epochs without a better validation F1; the best epoch's weights are kept.
    balance : {"weight", "sample", "none"}
        Class imbalance: weight peak patches by ``n_not_peak / n_peak`` in the loss, draw balanced batches,
        or nothing.
    augment : bool
        Random flips and quarter turns of each batch.
    seed : int
        Seed of weight initialisation, shuffling and augmentation.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    mixed_precision : bool
        float16 autocast and gradient scaling on CUDA (ignored on CPU).
    """

    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 6
    balance: Literal["weight", "sample", "none"] = "weight"
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    mixed_precision: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("learning_rate",):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be > 0, got {value!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.balance not in ("weight", "sample", "none"):
            raise ConfigError(f"balance must be 'weight', 'sample' or 'none', got {self.balance!r}")
        if isinstance(self.seed, bool) or int(self.seed) != self.seed or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        resolve_device(self.device, check_only=True)


def resolve_device(name: str, *, check_only: bool = False) -> torch.device:
    """The torch device for ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises
    ------
    ConfigError
        Unknown name, or CUDA asked for where none is available.
    """
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        if not check_only and not torch.cuda.is_available():
            raise ConfigError(f"device {name!r}: no CUDA device is available (use 'auto' or 'cpu')")
        return torch.device(text)
    raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")


# -- several processes (torchrun) ----------------------------------------------------------------------------
PROCESS_GROUP_TIMEOUT_S = 1800.0
"""Longest wait of one rank for the others at a collective step (rank 0 evaluates and writes while the others wait)."""


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands among the processes ``torchrun`` started.

    Attributes
    ----------
    rank : int
        Global rank, 0 to ``world_size - 1``; rank 0 prints and writes.
    local_rank : int
        Rank on this node (the CUDA device this process uses).
    world_size : int
        Number of processes, > 1.
    """

    rank: int
    local_rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        """True for rank 0, the process that prints and writes."""
        return self.rank == 0


def distributed_context(environ: Mapping[str, str] | None = None) -> DistributedContext | None:
    """The ranks ``torchrun`` sets in the environment, or None for a single process.

    A process is one of several when ``WORLD_SIZE`` > 1; it then needs ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``
    and ``MASTER_PORT`` (all set by ``torchrun``).

    Raises
    ------
    ConfigError
        A variable is missing or not a valid integer, or a rank lies outside ``[0, WORLD_SIZE)``.

    Examples
    --------
    >>> distributed_context({"WORLD_SIZE": "1"}) is None
    True
    >>> distributed_context({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1",
    ...                      "MASTER_ADDR": "localhost", "MASTER_PORT": "29500"}).rank
    1
    """
    env = os.environ if environ is None else environ

    def integer(name: str) -> int:
        text = env.get(name)
        if text is None or not text.strip():
            raise ConfigError(
                f"environment variable {name} is not set although WORLD_SIZE={env.get('WORLD_SIZE')}; "
                "start the processes with torchrun"
            )
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"environment variable {name} must be an integer, got {text!r}") from None

    if not env.get("WORLD_SIZE", "").strip():
        return None
    world_size = integer("WORLD_SIZE")
    if world_size < 1:
        raise ConfigError(f"environment variable WORLD_SIZE must be >= 1, got {world_size}")
    if world_size == 1:
        return None
    rank, local_rank = integer("RANK"), integer("LOCAL_RANK")
    if not 0 <= rank < world_size:
        raise ConfigError(f"environment variable RANK must lie in [0, {world_size}), got {rank}")
    if local_rank < 0:
        raise ConfigError(f"environment variable LOCAL_RANK must be >= 0, got {local_rank}")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not env.get(name, "").strip():
            raise ConfigError(
                f"environment variable {name} is not set although WORLD_SIZE={world_size}; "
                "start the processes with torchrun"
            )
    integer("MASTER_PORT")
    return DistributedContext(rank=rank, local_rank=local_rank, world_size=world_size)


def rank_device(name: str, local_rank: int) -> torch.device:
    """The device of the process with ``local_rank``: ``cuda:LOCAL_RANK`` unless ``name`` is ``"cpu"`` or
    there is no CUDA device.

    Raises
    ------
    ConfigError
        ``name`` is not a device name, asks for CUDA where none is available, or there are fewer CUDA devices
        than processes on this node.
    """
    wanted = resolve_device(name, check_only=True)
    if wanted.type == "cpu":  # "cpu", or "auto" without CUDA
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: no CUDA device is available (use 'auto' or 'cpu')")
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"LOCAL_RANK {local_rank} needs cuda:{local_rank} but this node has {torch.cuda.device_count()} "
            "CUDA devices; start at most one process per device (torchrun --nproc-per-node)"
        )
    return torch.device("cuda", local_rank)


def init_distributed(context: DistributedContext, device: str = "auto") -> torch.device:
    """Join the process group of ``context`` (NCCL on CUDA, Gloo on CPU); returns this process's device.

    The rendezvous is read from ``MASTER_ADDR`` and ``MASTER_PORT``. Call :func:`shutdown_distributed` at the end.
    """
    import datetime

    import torch.distributed as dist

    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed; run one process")
    dev = rank_device(device, context.local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if dev.type == "cuda" else "gloo",
            init_method="env://",
            rank=context.rank,
            world_size=context.world_size,
            timeout=datetime.timedelta(seconds=PROCESS_GROUP_TIMEOUT_S),
        )
    return dev


def shutdown_distributed(*, wait: bool = True) -> None:
    """Wait for every rank (when ``wait``), then leave the process group; nothing when none was joined."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if wait:
            if dist.get_backend() == "nccl":
                dist.barrier(device_ids=[torch.cuda.current_device()])
            else:
                dist.barrier()
    finally:
        dist.destroy_process_group()


def _active_context() -> DistributedContext | None:
    """The context of the joined process group when it has more than one process, else None."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    local = os.environ.get("LOCAL_RANK", "")
    local_rank = int(local) if local.strip().isdigit() else dist.get_rank()
    return DistributedContext(rank=dist.get_rank(), local_rank=local_rank, world_size=dist.get_world_size())


def rank_indices(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's share of an epoch's sample ``order`` (the same on every rank).

    The order is extended by its own first entries to a multiple of ``world_size``, then rank ``r`` takes
    entries ``r, r + world_size, ...``: the shares are disjoint up to the padding, together cover every sample,
    and all have ``ceil(len(order) / world_size)`` entries, so every rank runs the same number of steps.

    Parameters
    ----------
    order : (N,) tensor of int
    rank : int
        0 to ``world_size - 1``.
    world_size : int
        >= 1.

    Returns
    -------
    (ceil(N / world_size),) tensor of int

    Examples
    --------
    >>> rank_indices(torch.arange(5), 1, 2).tolist()
    [1, 3, 0]
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, {world_size}), got {rank}")
    n = int(order.numel())
    if n == 0:
        return order[:0]
    total = -(-n // world_size) * world_size
    return order[torch.arange(rank, total, world_size) % n]


@dataclass(frozen=True)
class EpochRecord:
    """Figures of one training epoch."""

    epoch: int
    train_loss: float
    val_loss: float
    val_f1: float
    val_precision: float
    val_recall: float
    threshold: float
    learning_rate: float
    seconds: float


@dataclass(eq=False)
class TrainedCNN:
    """A trained :class:`PatchCNN` with the settings that go with it.

    Attributes
    ----------
    model : PatchCNN
        The network (evaluation mode, on ``device``).
    patch_config : PatchConfig
        How patches are cut and normalised.
    candidate_config : CandidateConfig
        The candidate finder the network was trained behind.
    threshold : float
        Peak-score threshold that maximised the validation F1.
    history : list of EpochRecord
        Training epochs (empty when unknown).
    info : dict
        Training figures stored with the model (data, split, held-out metrics).
    device : torch.device
    """

    model: PatchCNN
    patch_config: PatchConfig
    candidate_config: CandidateConfig
    threshold: float = 0.5
    history: list[EpochRecord] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    kind = "cnn"

    @property
    def config(self) -> CNNConfig:
        return self.model.config

    def to(self, device: str | torch.device) -> TrainedCNN:
        """Move the network to ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``...)."""
        dev = resolve_device(device) if isinstance(device, str) else device
        self.model.to(dev)
        self.device = dev
        return self

    @torch.inference_mode()
    def logits(self, patches: NDArray[np.floating], *, batch_size: int = 4096) -> NDArray[np.float32]:
        """Peak logits of ``(N, C, P, P)`` patches, in batches."""
        x = np.asarray(patches, dtype=np.float32)
        c, p = self.config.in_channels, self.config.patch_size
        if x.ndim != 4 or x.shape[1:] != (c, p, p):
            raise ValueError(f"patches must have shape (N, {c}, {p}, {p}), got {x.shape}")
        self.model.eval()
        out = np.empty(x.shape[0], np.float32)
        use_amp = self.device.type == "cuda"
        for start in range(0, x.shape[0], batch_size):
            batch = torch.from_numpy(x[start : start + batch_size]).to(self.device, non_blocking=True)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                logit = self.model(batch)
            out[start : start + batch.shape[0]] = logit.float().cpu().numpy()
        return out

    def scores(self, patches: NDArray[np.floating], *, batch_size: int = 4096) -> NDArray[np.float32]:
        """Peak scores in [0, 1] (the sigmoid of the logits)."""
        z = self.logits(patches, batch_size=batch_size)
        return (1.0 / (1.0 + np.exp(-z.astype(np.float64)))).astype(np.float32)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model file (safetensors weights, JSON settings); see :mod:`braggml.ml.checkpoint`."""
        state = {k: v.detach().cpu().numpy().copy() for k, v in self.model.state_dict().items()}
        meta = {
            "kind": self.kind,
            "model_config": {**asdict(self.config), "channels": list(self.config.channels)},
            "patch": self.patch_config.to_dict(),
            "candidates": self.candidate_config.to_dict(),
            "threshold": float(self.threshold),
            "history": [asdict(r) for r in self.history],
            "info": self.info,
        }
        return save_arrays(path, state, json_clean(meta))


def load_model(path: str | os.PathLike[str], *, device: str = "auto") -> TrainedCNN:
    """Read a CNN model file written by :meth:`TrainedCNN.save` (no code is executed).

    Raises
    ------
    InputNotFoundError
        The file does not exist.
    DataFormatError
        The file is damaged, not a braggml model, an SVM model, or its weights do not fit its architecture.
    """
    arrays, meta = read_arrays(path, kind="cnn")
    try:
        config = CNNConfig.from_dict(require(meta, "model_config", path))
        patch = PatchConfig.from_dict(require(meta, "patch", path))
        candidates = CandidateConfig.from_dict(require(meta, "candidates", path))
        history = [EpochRecord(**r) for r in meta.get("history", [])]
    except (ConfigError, TypeError, KeyError, ValueError) as exc:
        raise DataFormatError(f"{path}: invalid model settings ({exc})") from None
    if config.patch_size != patch.size:
        raise DataFormatError(f"{path}: network patch size {config.patch_size} differs from patch size {patch.size}")
    model = PatchCNN(config)
    state = model.state_dict()
    missing = sorted(set(state) - set(arrays))
    extra = sorted(set(arrays) - set(state))
    if missing or extra:
        raise DataFormatError(
            f"{path}: weights do not match the network in its settings "
            f"(missing {', '.join(missing[:3]) or 'none'}; unexpected {', '.join(extra[:3]) or 'none'})"
        )
    for name, tensor in state.items():
        if tensor.dim() == 0 and arrays[name].size == 1:  # scalars are stored with shape (1,)
            arrays[name] = arrays[name].reshape(())
        if tuple(arrays[name].shape) != tuple(tensor.shape):
            raise DataFormatError(
                f"{path}: weight {name} has shape {tuple(arrays[name].shape)}, the network needs {tuple(tensor.shape)}"
            )
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()})
    model.eval()
    threshold = meta.get("threshold")
    trained = TrainedCNN(
        model=model,
        patch_config=patch,
        candidate_config=candidates,
        threshold=0.5 if threshold is None else float(threshold),
        history=history,
        info=dict(meta.get("info") or {}),
    )
    return trained.to(device)


# -- training ------------------------------------------------------------------------------------------------
def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    k = int(torch.randint(0, 4, (1,), generator=generator))
    if k:
        x = torch.rot90(x, k, dims=(2, 3))
    if bool(torch.randint(0, 2, (1,), generator=generator)):
        x = torch.flip(x, dims=(3,))
    return x


def train_cnn(
    train: PatchSet,
    val: PatchSet,
    *,
    model_config: CNNConfig | None = None,
    config: TrainConfig | None = None,
    progress: bool = False,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainedCNN:
    """Train a :class:`PatchCNN` on labelled patches, stopping early on the validation F1.

    In a joined process group of several processes (``torchrun``, see :func:`init_distributed`) the network is
    wrapped in ``DistributedDataParallel`` (batch normalisation synchronised across ranks on CUDA); every rank
    passes the same patches, draws the same seeded order each epoch and trains on its own share of it
    (:func:`rank_indices`), so one optimiser step sees ``batch_size`` patches per rank, ``batch_size`` times
    the number of processes in all. Every rank scores the whole validation set with rank 0's batch-norm
    statistics, and rank 0's figures decide the threshold and early stopping on all ranks, so all ranks stop at
    the same epoch and return the same weights.

    Parameters
    ----------
    train, val : PatchSet
        Training and validation patches from different frames (:func:`~braggml.ml.patches.split_by_frame`);
        patches labelled ignore are skipped.
    model_config : CNNConfig, optional
        Architecture; ``patch_size`` is taken from the patches.
    config : TrainConfig, optional
        Under ``torchrun`` the device is ``cuda:LOCAL_RANK`` (or the CPU when ``config.device`` is ``"cpu"``
        or there is no CUDA device).
    progress : bool
        Show a progress bar over the batches of each epoch (rank 0 only).
    on_epoch : callable, optional
        Called with each epoch's :class:`EpochRecord` (e.g. to print it); on rank 0 only.

    Returns
    -------
    TrainedCNN
        The weights of the epoch with the best validation F1, and that epoch's best threshold.

    Raises
    ------
    ConfigError
        When the training patches hold no peaks or no non-peaks, or the validation set is empty.
    """
    from tqdm.auto import tqdm

    config = config or TrainConfig()
    train = train.labelled()
    val = val.labelled()
    if train.n_positive == 0 or train.n_negative == 0:
        raise ConfigError(
            f"training patches need both classes, got {train.n_positive} peaks and {train.n_negative} not peaks"
        )
    if len(val) == 0:
        raise ConfigError("the validation set holds no labelled patches; use more frames")
    size = train.patch_config.size
    base = model_config or CNNConfig()
    model_config = CNNConfig(**{**asdict(base), "patch_size": size, "in_channels": int(train.patches.shape[1])})
    context = _active_context()
    rank, world_size = (0, 1) if context is None else (context.rank, context.world_size)
    is_main = rank == 0
    device = resolve_device(config.device) if context is None else rank_device(config.device, context.local_rank)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = PatchCNN(model_config).to(device)
    net: nn.Module = model
    if context is not None:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        has_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        if device.type == "cuda" and has_batch_norm:
            model = cast(PatchCNN, nn.SyncBatchNorm.convert_sync_batchnorm(model))
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        torch.manual_seed(config.seed + 1_000_003 * rank)  # each rank its own dropout noise

    x_train = torch.from_numpy(np.ascontiguousarray(train.patches)).to(device)
    y_train = torch.from_numpy((train.labels == LABEL_PEAK).astype(np.float32)).to(device)
    y_val = (val.labels == LABEL_PEAK).astype(np.int64)
    pos_weight = positive_weight(train.labels) if config.balance == "weight" else 1.0
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=device))
    val_loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=device))
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimiser, T_max=config.epochs, eta_min=config.learning_rate / 50.0
    )
    use_amp = device.type == "cuda" and config.mixed_precision
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    n = len(train)
    sample_weights = None
    if config.balance == "sample":
        pos = y_train.cpu().numpy() > 0.5
        w = np.where(pos, 0.5 / max(pos.sum(), 1), 0.5 / max((~pos).sum(), 1))
        sample_weights = torch.from_numpy(w)

    trained = TrainedCNN(
        model=model,
        patch_config=train.patch_config,
        candidate_config=train.candidate_config,
        device=device,
    )
    best_f1 = -1.0
    best_loss = math.inf
    best_state: dict[str, torch.Tensor] | None = None
    best_threshold_value = 0.5
    stale = 0
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        net.train()
        if sample_weights is not None:
            order = torch.multinomial(sample_weights, n, replacement=True, generator=generator)
        else:
            order = torch.randperm(n, generator=generator)
        if context is not None:
            order = rank_indices(order, rank, world_size)
        total = 0.0
        seen = 0
        batches = range(0, int(order.numel()), config.batch_size)
        bar = tqdm(batches, desc=f"epoch {epoch}/{config.epochs}", unit="batch", disable=not (progress and is_main),
                   leave=False)
        for start in bar:
            idx = order[start : start + config.batch_size].to(device)
            if idx.numel() < 2:  # batch normalisation needs two samples (the same on every rank)
                continue
            xb = x_train[idx]
            if config.augment:
                xb = _augment(xb, generator)
            optimiser.zero_grad(set_to_none=True)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                loss = loss_fn(net(xb), y_train[idx])
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            total += float(loss.detach()) * idx.numel()
            seen += idx.numel()
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", refresh=False)
        train_loss = total / max(n, 1)
        if context is not None:
            sums = torch.tensor([total, float(seen)], dtype=torch.float64, device=device)
            dist.all_reduce(sums)
            train_loss = float(sums[0]) / max(float(sums[1]), 1.0)
            for buffer in model.buffers():  # batch-norm statistics of rank 0 for validation and checkpoints
                dist.broadcast(buffer, src=0)
        lr = optimiser.param_groups[0]["lr"]
        schedule.step()
        model.eval()
        val_logits = trained.logits(val.patches)
        val_loss = float(
            val_loss_fn(torch.from_numpy(val_logits).to(device), torch.from_numpy(y_val.astype(np.float32)).to(device))
        )
        val_scores = 1.0 / (1.0 + np.exp(-val_logits.astype(np.float64)))
        threshold, _ = best_threshold(y_val, val_scores)
        m = binary_metrics(y_val, val_scores >= threshold)
        val_f1, val_precision, val_recall = m["f1"], m["precision"], m["recall"]
        if context is not None:  # rank 0's figures decide on every rank
            figures = torch.tensor([val_loss, val_f1, val_precision, val_recall, float(threshold)],
                                   dtype=torch.float64, device=device)
            dist.broadcast(figures, src=0)
            val_loss, val_f1, val_precision, val_recall, threshold = figures.tolist()
        record = EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            val_f1=val_f1,
            val_precision=val_precision,
            val_recall=val_recall,
            threshold=float(threshold),
            learning_rate=float(lr),
            seconds=time.perf_counter() - t0,
        )
        trained.history.append(record)
        if is_main:
            if on_epoch is not None:
                on_epoch(record)
            log.info("epoch %d: %s", epoch, record)
        f1 = val_f1 if math.isfinite(val_f1) else 0.0
        if f1 > best_f1 or (f1 == best_f1 and val_loss < best_loss):  # ties: the lower validation loss
            best_f1 = f1
            best_loss = val_loss
            best_state = copy.deepcopy(model.state_dict())
            best_threshold_value = float(threshold)
            stale = 0
        else:
            stale += 1
            if stale >= config.patience:
                if is_main:
                    log.info("early stop after epoch %d (best validation F1 %.4f)", epoch, best_f1)
                break
    if context is not None:  # a plain network (no synchronised batch norm) with the best weights
        final = PatchCNN(model_config).to(device)
        final.load_state_dict(best_state if best_state is not None else model.state_dict())
        model = trained.model = final
    elif best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    trained.threshold = best_threshold_value
    trained.info.update(
        {
            "train_config": asdict(config),
            "n_train_patches": len(train),
            "n_val_patches": len(val),
            "positive_weight": pos_weight,
            "best_val_f1": best_f1,
            "epochs_run": len(trained.history),
        }
    )
    if context is not None:
        trained.info.update({"world_size": world_size, "global_batch_size": config.batch_size * world_size})
    return trained
