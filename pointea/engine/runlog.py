"""Run logging: a JSON-lines log and TensorBoard event files in the run folder."""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

from pointea.atomic import atomic_write_text, write_error


class RunLog:
    """Append records to ``run_dir/log.jsonl`` and scalars to TensorBoard (``run_dir/tb``).

    Each record is one JSON object per line with at least ``split`` ("train", "val", or an event
    such as "resume"), ``epoch``, ``step`` and ``time`` (Unix seconds). Numeric fields are also
    written as TensorBoard scalars named ``<split>/<field>`` at ``step``.

    A fresh run (``resume_at=None``) starts both logs anew, so a failed earlier attempt in the same
    folder leaves nothing behind. A resumed run passes the ``(epoch, step)`` of its checkpoint:
    records of later epochs (written after that checkpoint, before the interruption) are dropped
    from the JSON log and hidden in TensorBoard (``purge_step``), so no epoch appears twice.

    A record that cannot be written (a full disk) raises :class:`pointea.atomic.WriteError`
    naming the log file or the TensorBoard folder.
    """

    def __init__(self, run_dir: Path, tensorboard: bool = True,
                 resume_at: Optional[Tuple[int, int]] = None) -> None:
        self.path = Path(run_dir) / "log.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_at is None:
            atomic_write_text(self.path, "")
        elif self.path.is_file():
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                    if _epoch_of(line) <= resume_at[0]]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        self._file = open(self.path, "a", encoding="utf-8")
        self._writer: Optional[Any] = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge_step = 0 if resume_at is None else resume_at[1] + 1
            self._tb_dir = Path(run_dir) / "tb"
            with self._reporting_failures(self._tb_dir):
                self._writer = SummaryWriter(log_dir=str(self._tb_dir), purge_step=purge_step)
            _quiet_writer_thread(self._writer)

    def write(self, split: str, epoch: int, step: int, **fields: Any) -> Dict[str, Any]:
        """Record ``fields`` (numbers, strings, small lists) and return the record."""
        record = {"split": split, "epoch": epoch, "step": step, "time": round(time.time(), 3)}
        record.update(fields)
        with self._reporting_failures(self.path):
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        if self._writer is not None:
            with self._reporting_failures(self._tb_dir):
                for key, value in fields.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        if math.isfinite(value):
                            self._writer.add_scalar(f"{split}/{key}", value, step)
                self._writer.flush()
        return record

    def close(self) -> None:
        with self._reporting_failures(self.path):
            self._file.close()
        if self._writer is not None:
            with self._reporting_failures(self._tb_dir):
                self._writer.close()

    @staticmethod
    @contextlib.contextmanager
    def _reporting_failures(path: Path) -> Iterator[None]:
        """Raise a failed write as a WriteError naming ``path`` instead of a bare errno."""
        try:
            yield
        except OSError as error:
            raise (write_error(path, error) or error) from error

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _quiet_writer_thread(writer: Any) -> None:
    """Keep TensorBoard's writer thread from printing a traceback when a write fails (a full disk).

    The thread keeps the error and TensorBoard raises it again in the training thread at the
    next write, where :class:`RunLog` reports it as one line naming the folder; the traceback
    would only bury that line. Private attributes, so any other TensorBoard is left as it is.
    """
    worker = getattr(getattr(getattr(writer, "file_writer", None), "event_writer", None), "_async_writer", None)
    thread = getattr(worker, "_worker", None)
    if hasattr(thread, "_invoke_excepthook"):
        thread._invoke_excepthook = lambda thread: None


def _epoch_of(line: str) -> float:
    """Epoch of a log line; lines that cannot be read (a write cut by a kill) sort last."""
    try:
        return float(json.loads(line).get("epoch", math.inf))
    except (ValueError, AttributeError):
        return math.inf
