"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one.

A write that fails (a full disk, a quota, a file size limit) raises :class:`WriteError`, an
``OSError`` whose message names the file and the cause, e.g. ``cannot write
runs/x/checkpoints/last.pt: no space left on device``; the temporary file is removed and the
previous file, if any, is left as it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from pathlib import Path
from typing import Collection, Iterator, List, Optional, Union

PathLike = Union[str, os.PathLike]

# errnos that mean the storage, not the path, is at fault: a write anywhere would fail alike
STORAGE_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# what torch's C++ zip writer says when a write fails; it drops the errno unless the file was a
# Python handle (the OSError then rides along as __context__)
_TORCH_WRITE_FAILED = re.compile(r"file write failed|unexpected pos|failed writing")
# temporary files made by atomic_path: ".<name>." + mkstemp's 8 random characters + ".tmp"
_TEMPORARY = re.compile(r"^\.(.+)\.[a-z0-9_]{8}\.tmp$")


class WriteError(OSError):
    """A file could not be written; ``str()`` is ``cannot write PATH: REASON`` (no ``[Errno N]``)."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


def write_error(path: PathLike, error: BaseException, temporary: Optional[PathLike] = None) -> Optional[WriteError]:
    """The :class:`WriteError` that ``error``, raised while writing ``path``, stands for.

    Args:
        path: the file the user asked for (named in the message).
        error: what the write raised.
        temporary: the file actually being written, if another one (e.g. atomic_path's).

    Returns:
        None when ``error`` is not a failed write (e.g. a bad value, or a missing input file
        read while producing the output); such errors are better passed on unchanged.
    """
    if isinstance(error, WriteError):
        return error
    if isinstance(error, RuntimeError) and _TORCH_WRITE_FAILED.search(str(error)):
        cause = error.__context__
        if isinstance(cause, OSError) and cause.errno is not None:
            return WriteError(cause.errno, _reason(cause.errno), str(path))
        return WriteError(errno.EIO, _unexplained_failure(Path(path)), str(path))
    if not isinstance(error, OSError) or error.errno is None:
        return None
    ours = {os.fspath(p) for p in (path, temporary) if p is not None}
    if error.errno not in STORAGE_FULL_ERRNOS and not ours & {error.filename, error.filename2}:
        return None
    return WriteError(error.errno, _reason(error.errno), str(path))


def _reason(code: int) -> str:
    text = os.strerror(code)
    return text[:1].lower() + text[1:]


def _unexplained_failure(path: Path) -> str:
    """Why a write failed when the writer kept the errno to itself: a full disk, if it is full."""
    with contextlib.suppress(OSError):
        if os.statvfs(path.parent).f_bavail == 0:
            return _reason(errno.ENOSPC)
    return "the write failed (a full disk or a file size limit?)"


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed over ``path``.

    The file gets the permissions of a plain ``open(path, "w")`` (0o666 minus the umask), not the
    owner-only mode of the temporary file.

    If the body raises, the temporary file is removed and ``path`` is left untouched. A failed
    write (see :func:`write_error`) is raised as :class:`WriteError` naming ``path``.

    Example::

        with atomic_path("cache/train.npz") as tmp:
            np.savez(tmp, points=points)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise (write_error(path, error, error.filename) or error) from error
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        converted = write_error(path, error, tmp) if isinstance(error, Exception) else None
        if converted is None or converted is error:
            raise
        raise converted from error


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temporaries(folder: PathLike, names: Optional[Collection[str]] = None) -> List[Path]:
    """Delete the temporary files that :func:`atomic_path` left in ``folder`` when killed mid-write.

    Only call this while no process can be writing these files (e.g. holding a run's lock): a
    live writer's temporary file looks the same.

    Args:
        folder: where to look (a missing folder holds nothing).
        names: only the temporaries of these file names (e.g. ``{"last.pt"}``); default all.

    Returns:
        The files removed.
    """
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            match = _TEMPORARY.match(entry.name)
            if match and (names is None or match.group(1) in names) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed
