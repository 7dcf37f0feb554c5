"""Run logging: a JSON-lines log and TensorBoard event files in the run folder."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from pointea.atomic import atomic_write_text


class RunLog:
    """Append records to ``run_dir/log.jsonl`` and scalars to TensorBoard (``run_dir/tb``).

    Each record is one JSON object per line with at least ``split`` ("train", "val", or an event
    such as "resume"), ``epoch``, ``step`` and ``time`` (Unix seconds). Numeric fields are also
    written as TensorBoard scalars named ``<split>/<field>`` at ``step``.

    A fresh run (``resume_at=None``) starts both logs anew, so a failed earlier attempt in the same
    folder leaves nothing behind. A resumed run passes the ``(epoch, step)`` of its checkpoint:
    records of later epochs (written after that checkpoint, before the interruption) are dropped
    from the JSON log and hidden in TensorBoard (``purge_step``), so no epoch appears twice.
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
            self._writer = SummaryWriter(log_dir=str(Path(run_dir) / "tb"), purge_step=purge_step)

    def write(self, split: str, epoch: int, step: int, **fields: Any) -> Dict[str, Any]:
        """Record ``fields`` (numbers, strings, small lists) and return the record."""
        record = {"split": split, "epoch": epoch, "step": step, "time": round(time.time(), 3)}
        record.update(fields)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in fields.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    if math.isfinite(value):
                        self._writer.add_scalar(f"{split}/{key}", value, step)
            self._writer.flush()
        return record

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _epoch_of(line: str) -> float:
    """Epoch of a log line; lines that cannot be read (a write cut by a kill) sort last."""
    try:
        return float(json.loads(line).get("epoch", math.inf))
    except (ValueError, AttributeError):
        return math.inf
