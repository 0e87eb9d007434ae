"""Resumable runs: finished chunks kept on disk beside the output until the output is written.

The folder ``.<output name>.parts/`` beside the output holds ``manifest.json`` (the run's identity and chunk
plan) and one ``<start>-<stop>.npz`` per finished chunk, each written atomically. A restarted run with the same
identity (same inputs, unchanged on disk, same finder settings, same frame range) skips the chunks found there
and keeps the plan it started with; a run whose identity differs starts afresh, so stale parts are never reused.
The folder is removed once the final output is written. Chunk results live on disk rather than in memory, so
a long run's memory stays bounded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..io.atomic import atomic_output
from .plan import Chunk
from .worker import ChunkResult, job_key

__all__ = ["PartStore", "parts_folder", "run_identity"]

log = logging.getLogger(__name__)

_MANIFEST = "manifest.json"
_FORMAT = 1


def parts_folder(output: str | os.PathLike[str]) -> Path:
    """The folder of finished chunks for ``output``: ``.<name>.parts`` beside it."""
    out = Path(os.fspath(output))
    name = out.name.replace("{stem}", "split")
    return out.parent / f".{name}.parts"


def run_identity(job: Any, files: Sequence[str], frame_range: tuple[int, int], n_frames: int) -> str:
    """Digest of what decides a run's results: the job, the input files and event lists (size, mtime) and the
    frame range.

    The braggml version is part of it: parts written by another version are not reused.
    """
    from .. import __version__
    from ..io.frames import expand_inputs, is_event_list

    inputs = tuple(getattr(job, "inputs", ()))
    lists = [path for path, _ in expand_inputs(inputs) if is_event_list(path)] if inputs else []
    stats = []
    for path in [*files, *lists]:
        try:
            st = os.stat(path)
            stats.append([os.path.abspath(path), st.st_size, st.st_mtime_ns])
        except OSError:
            stats.append([os.path.abspath(path), -1, -1])
    text = json.dumps(
        {"job": job_key(job), "files": stats, "range": list(frame_range), "n_frames": n_frames, "v": __version__},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class PartStore:
    """Finished chunks of one run in ``folder`` (see the module notes).

    Parameters
    ----------
    folder : path
        The parts folder (created if missing; its parent must exist).
    identity : str
        :func:`run_identity` of the run.
    plan : sequence of Chunk
        The chunk plan of a fresh run; a resumed run keeps the plan stored in the manifest.
    resume : bool
        Reuse matching parts; when False any existing parts are discarded.
    """

    def __init__(self, folder: str | os.PathLike[str], identity: str, plan: Sequence[Chunk], *, resume: bool = True):
        self.folder = Path(os.fspath(folder))
        self.identity = identity
        if not self.folder.parent.is_dir():
            raise ConfigError(f"cannot keep run parts in {self.folder}: folder {self.folder.parent} does not exist")
        self.plan: list[Chunk] = list(plan)
        self.resumed = False
        manifest = self._read_manifest() if resume else None
        if manifest is not None and manifest.get("identity") == identity:
            self.plan = [Chunk(int(a), int(b)) for a, b in manifest["chunks"]]
            self.resumed = True
        else:
            if manifest is not None:
                log.warning("%s: parts of a different run (inputs or settings changed); starting afresh", self.folder)
            self.discard()
            self.folder.mkdir()
            with atomic_output(self.folder / _MANIFEST, mode="w") as fh:
                json.dump(
                    {"format": _FORMAT, "identity": identity, "chunks": [[c.start, c.stop] for c in self.plan]}, fh
                )

    def _read_manifest(self) -> dict[str, Any] | None:
        path = self.folder / _MANIFEST
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("%s: unreadable manifest; starting afresh", path)
            return None
        if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("chunks"), list):
            return None
        return data

    def _path(self, chunk: Chunk) -> Path:
        return self.folder / f"{chunk.name}.npz"

    def done(self) -> set[Chunk]:
        """Chunks of the plan already finished."""
        return {c for c in self.plan if self._path(c).is_file()}

    def save(self, result: ChunkResult) -> None:
        """Keep a finished chunk (atomically)."""
        chunk = Chunk(result.start, result.stop)
        with atomic_output(self._path(chunk), mode="wb") as fh:
            np.savez(fh, **result.to_arrays())

    def load(self, chunk: Chunk) -> ChunkResult | None:
        """A finished chunk, or None when its part is missing or damaged (it is then redone)."""
        path = self._path(chunk)
        try:
            with np.load(path, allow_pickle=False) as data:
                result = ChunkResult.from_arrays(data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            log.warning("%s: damaged part (%s); the chunk is redone", path, exc)
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        if (result.start, result.stop) != (chunk.start, chunk.stop):
            return None
        return result

    def discard(self) -> None:
        """Remove the parts folder and everything in it."""
        if self.folder.is_dir():
            shutil.rmtree(self.folder, ignore_errors=True)
