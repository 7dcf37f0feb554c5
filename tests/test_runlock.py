"""The run-folder lock: one training process per folder, released however its holder ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pointea.engine.runlock import LOCK_NAME, run_folder_lock

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX only")

REPO = Path(__file__).resolve().parents[1]

HOLDER = """
import sys, time
from pathlib import Path
from pointea.engine.runlock import run_folder_lock
with run_folder_lock(Path(sys.argv[1])):
    Path(sys.argv[2]).touch()
    time.sleep(60)
"""


def start_holder(run_dir: Path, tmp_path: Path) -> subprocess.Popen:
    """A second process that takes the lock of ``run_dir`` and keeps it until killed."""
    ready = tmp_path / "holder-ready"
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir), str(ready)], cwd=REPO)
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the holder did not start"
        time.sleep(0.02)
    return process


def test_a_second_process_is_refused_until_the_holder_is_killed(tmp_path):
    run_dir = tmp_path / "runs" / "x"
    holder = start_holder(run_dir, tmp_path)
    try:
        with pytest.raises(ValueError, match=f"^{run_dir} is in use by another training run "
                                             f"\\(pid {holder.pid}\\); wait for it"):
            with run_folder_lock(run_dir):
                pytest.fail("the body ran without the lock")
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    with run_folder_lock(run_dir):  # the kernel dropped the dead holder's lock
        assert (run_dir / LOCK_NAME).read_text() == f"{os.getpid()}\n"


def test_the_lock_is_released_on_exit_and_refused_within_one_process(tmp_path):
    with run_folder_lock(tmp_path):
        with pytest.raises(ValueError, match="in use by another training run"):
            with run_folder_lock(tmp_path):
                pass
    with run_folder_lock(tmp_path):
        assert (tmp_path / LOCK_NAME).is_file()
    assert list(tmp_path.iterdir()) == []  # the lock file goes with its holder


def test_a_folder_made_for_a_run_that_wrote_nothing_is_removed(tmp_path):
    with pytest.raises(RuntimeError, match="dataset not found"):
        with run_folder_lock(tmp_path / "new"):
            raise RuntimeError("dataset not found")
    assert list(tmp_path.iterdir()) == []
    with run_folder_lock(tmp_path / "kept"):
        (tmp_path / "kept" / "config.yaml").write_text("")
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["config.yaml"]


def test_a_lock_file_replaced_between_open_and_lock_is_not_trusted(tmp_path, monkeypatch):
    """The last holder may remove the file after we opened it: a lock on that one is private."""
    from pointea.engine import runlock

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK_NAME).write_text("")
    real_flock, holders = runlock.fcntl.flock, []

    def flock_after_replacement(fd, operation):
        if not holders:  # the old file goes, a new run makes and locks a new one
            (run_dir / LOCK_NAME).unlink()
            holders.append(start_holder(run_dir, tmp_path))
        return real_flock(fd, operation)

    monkeypatch.setattr(runlock.fcntl, "flock", flock_after_replacement)
    try:
        with pytest.raises(ValueError) as info:
            with run_folder_lock(run_dir):
                pytest.fail("locked a file that is no longer the lock file")
        assert f"in use by another training run (pid {holders[0].pid})" in str(info.value)
    finally:
        for holder in holders:
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait()
