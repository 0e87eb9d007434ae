"""Atomic output: a file appears complete under its final name, or not at all.

Every writer in braggml writes to a hidden temporary file in the destination folder and renames it onto the
final name (:func:`os.replace`, atomic on POSIX and Windows within one file system) only when writing
finished without an exception. An interrupted run (error, Ctrl-C, killed batch job) therefore never leaves a
truncated peak list that a later step would read as a valid one, and an existing file is kept intact.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal, overload

from ..errors import ConfigError

__all__ = ["atomic_output"]


def _temporary_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")


def _create_temporary(target: Path) -> Path:
    """Create an empty, uniquely named file beside ``target`` (permissions follow the umask)."""
    folder = target.parent
    if target.is_dir():
        raise ConfigError(f"cannot write {str(target)!r}: it is a directory")
    if not folder.is_dir():
        raise ConfigError(f"cannot write {str(target)!r}: the folder {str(folder)!r} does not exist")
    for _ in range(16):
        tmp = _temporary_name(target)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise ConfigError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from exc
        os.close(fd)
        return tmp
    raise ConfigError(f"cannot write {str(target)!r}: no free temporary name in {str(folder)!r}")


def _default_permissions(path: Path) -> None:
    """Give the finished file the umask's permissions (libraries that write a file anew may make it 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o666 & ~umask)


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError), open(path, "rb") as fh:
        os.fsync(fh.fileno())


@overload
def atomic_output(path: str | os.PathLike[str], *, mode: None = None) -> contextlib.AbstractContextManager[Path]:
    ...


@overload
def atomic_output(
    path: str | os.PathLike[str], *, mode: Literal["w", "wb"]
) -> contextlib.AbstractContextManager[IO[Any]]:
    ...


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike[str], *, mode: Literal["w", "wb"] | None = None
) -> Iterator[Any]:
    """Write ``path`` atomically.

    Parameters
    ----------
    path : str or path-like
        Final name of the output file. Its folder must exist.
    mode : {None, "w", "wb"}
        None yields the temporary :class:`~pathlib.Path` for a library that opens files itself (h5py);
        ``"w"`` (UTF-8 text, ``\\n`` line ends) or ``"wb"`` yields the temporary file opened in that mode,
        closed before the rename.

    Yields
    ------
    pathlib.Path or file object
        The hidden temporary file ``.<name>.<random>.tmp`` in the destination folder.

    Raises
    ------
    ConfigError
        The destination folder does not exist, ``path`` is a directory or the folder is not writable.

    Notes
    -----
    The temporary file is renamed onto ``path`` only when the block exits normally; on any exception,
    including :class:`KeyboardInterrupt`, it is removed and ``path`` is left as it was.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "hits.lst"
    >>> with atomic_output(out, mode="w") as fh:
    ...     _ = fh.write("run1.h5 //0\\n")
    >>> out.read_text()
    'run1.h5 //0\\n'
    """
    if mode not in (None, "w", "wb"):
        raise ConfigError(f"atomic_output mode must be None, 'w' or 'wb', got {mode!r}")
    target = Path(os.fspath(path))
    tmp = _create_temporary(target)
    try:
        if mode is None:
            yield tmp
        else:
            kwargs: dict[str, Any] = {"encoding": "utf-8", "newline": "\n"} if mode == "w" else {}
            with open(tmp, mode, **kwargs) as fh:
                yield fh
                fh.flush()
        _fsync(tmp)
        _default_permissions(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
