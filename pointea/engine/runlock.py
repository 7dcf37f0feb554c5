"""One training process per run folder: an exclusive lock on ``RUN/.lock`` for the run's life.

The lock is ``flock``: the kernel drops it when its holder exits or dies (even by SIGKILL), so a
lock file left by a killed run never blocks the next one. The holder writes its pid into the
file, which the refusal message quotes, and removes the file when it ends. Platforms without
``fcntl`` (Windows) train unlocked, with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator, Optional

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"


@contextlib.contextmanager
def run_folder_lock(run_dir: Path) -> Iterator[None]:
    """Hold the exclusive lock of ``run_dir`` (created if needed) while the body runs.

    The lock file is removed on the way out, and so is a folder this call created when the run
    left nothing in it (a run refused or failed before writing anything).

    Raises:
        ValueError: another process holds the lock; the message names the folder and its pid.
    """
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    if fcntl is None:
        logger.warning("cannot lock %s on this platform: make sure no other run uses it", run_dir)
        yield
        return
    fd = _acquire(path, run_dir)
    try:
        with contextlib.suppress(OSError):  # the pid only helps the message; a full disk shows later
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        yield
    finally:
        # removed while still locked: a process that opened this file meanwhile sees it gone
        # once it gets the lock, and starts over with the path (see _acquire)
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):  # not empty: the run wrote something
                run_dir.rmdir()


def _acquire(path: Path, run_dir: Path) -> int:
    """An open descriptor of ``path`` holding its exclusive lock."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _holder(path)
            raise ValueError(
                f"{run_dir} is in use by another training run{f' (pid {holder})' if holder else ''}; "
                "wait for it to end or choose another --run-dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # The previous holder may have removed the file between our open and our lock: then
        # we hold a lock nobody else can see, and must lock the file now at that path instead.
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _holder(path: Path) -> Optional[int]:
    """The pid the lock holder wrote into ``path`` (None if unreadable or not yet written)."""
    try:
        return int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
