"""Following a run while it is written: the new files of the inputs' globs, found by polling.

:func:`follow_inputs` yields batches of files that appeared since the last look and have stopped growing, so
that ``braggml find --follow`` can find their peaks while the detector writes the next ones. A file counts as
written once its size and modification time have stayed the same for ``settle_s`` seconds; it is then taken
once, whatever happens to it later.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from ..errors import ConfigError
from ..io.masks import split_spec

__all__ = ["FollowConfig", "follow_inputs", "matching_files"]


@dataclass(frozen=True)
class FollowConfig:
    """How to follow a run.

    Parameters
    ----------
    poll_s : float
        Seconds between looks at the inputs.
    settle_s : float
        A file is taken once its size and modification time have not changed for this long.
    idle_s : float
        Stop after this long without a new file (0: never; Ctrl-C stops too).
    retry_s : float
        How long a file that cannot be read yet is tried again, on every poll: an Eiger master file is written
        before the data files its links name.
    """

    poll_s: float = 2.0
    settle_s: float = 4.0
    idle_s: float = 600.0
    retry_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.poll_s > 0:
            raise ConfigError(f"follow poll interval must be > 0 s, got {self.poll_s!r}")
        for name in ("settle_s", "idle_s", "retry_s"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"follow {name} must be >= 0, got {getattr(self, name)!r}")


def matching_files(patterns: Sequence[str]) -> list[tuple[str, str]]:
    """(file, spec) of every existing file the inputs name now; ``spec`` keeps a ``::dataset`` suffix."""
    out: list[tuple[str, str]] = []
    for pattern in patterns:
        file, dataset = split_spec(os.fspath(pattern))
        suffix = "" if dataset is None else f"::{dataset}"
        if glob.has_magic(file) and not os.path.exists(file):
            names = sorted(glob.glob(file, recursive=True))
        else:
            names = [file]
        out.extend((name, name + suffix) for name in names if os.path.isfile(name))
    return out


def follow_inputs(
    patterns: Sequence[str],
    config: FollowConfig = FollowConfig(),
    *,
    seen: set[str] | None = None,
    busy: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    wall: Callable[[], float] = time.time,
) -> Iterator[list[str]]:
    """Yield batches of new, settled input files (their specs, in the inputs' order) as they are written.

    Parameters
    ----------
    patterns : sequence of str
        Files and quoted globs, ``FILE::/dataset`` allowed; globs are looked at again on every poll.
    config : FollowConfig
        Poll interval, settling time and idle limit.
    seen : set of str, optional
        Files already done or not to be taken (the run's outputs), as :func:`os.path.realpath` gives them;
        updated in place as batches are yielded.
    busy : callable, optional
        True while the caller has files to try again: every poll then yields, an empty batch when nothing is
        new, and the idle time does not run.
    clock, sleep, wall : callables
        Time source, wait and wall-clock time (for tests). A file last modified ``settle_s`` or more before the
        wall-clock time is taken at once.

    Yields
    ------
    list of str
        A non-empty batch. The generator returns after ``config.idle_s`` seconds without a new file.
    """
    done = seen if seen is not None else set()
    watched: dict[str, tuple[tuple[int, int], float]] = {}  # file: ((size, mtime_ns), since when unchanged)
    last_new = clock()
    first = True
    while True:
        if not first:
            sleep(config.poll_s)
        first = False
        now = clock()
        batch: list[str] = []
        for name, spec in matching_files(patterns):
            file = os.path.realpath(name)
            if file in done:
                continue
            try:
                st = os.stat(file)
            except OSError:  # removed between the glob and the look
                continue
            state = (st.st_size, st.st_mtime_ns)
            previous = watched.get(file)
            if previous is None or previous[0] != state:
                watched[file] = (state, now)
            old_enough = wall() - st.st_mtime_ns / 1e9 >= config.settle_s
            if old_enough or now - watched[file][1] >= config.settle_s:
                batch.append(spec)
                done.add(file)
                watched.pop(file, None)
        waiting = busy is not None and busy()
        if batch or waiting:
            last_new = now
            yield batch
        elif config.idle_s and now - last_new >= config.idle_s and not watched:
            return
