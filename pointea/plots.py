"""Figures for runs and evaluations: confusion matrix and training curves (PNG files).

Matplotlib is imported lazily and used through ``matplotlib.figure.Figure`` with the Agg
renderer, so plotting works headless and never changes the user's pyplot backend.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from pointea.atomic import atomic_path

PathLike = Union[str, os.PathLike]

DPI = 100
CURVE_METRICS = ("overall_accuracy", "mean_class_accuracy", "instance_miou", "class_miou")


def plot_confusion_matrix(matrix, class_names: Sequence[str], path: PathLike, normalize: bool = True,
                          column_names: Optional[Sequence[str]] = None) -> Path:
    """Draw a confusion matrix (rows = true class, columns = predicted class) as a PNG.

    Args:
        matrix: (K, C) counts (array, tensor or nested lists); C = K unless ``column_names``.
        class_names: K names for the rows (and the columns by default).
        path: PNG file to write (atomically).
        normalize: colour each row by its fraction of the true class (counts are still printed
            in the cells when K <= 20).
        column_names: C names for the columns, e.g. the classes plus "other" for predictions
            outside them.

    Returns:
        The path written.
    """
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=np.float64)
    K = len(class_names)
    columns = list(class_names if column_names is None else column_names)
    C = len(columns)
    if counts.shape != (K, C):
        raise ValueError(f"confusion matrix has shape {counts.shape}, expected ({K}, {C}) for {K} class names"
                         + ("" if column_names is None else f" and {C} column names"))
    shown = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalize else counts

    side = min(max(4.0, 0.3 * K + 2.5), 16.0)
    figure = Figure(figsize=(side + 1.0, side), dpi=DPI)
    axes = figure.add_subplot()
    image = axes.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of true class" if normalize else "count")
    font = max(4, min(9, int(220 / max(K, C, 1))))
    axes.set_xticks(np.arange(C), labels=columns, rotation=90, fontsize=font)
    axes.set_yticks(np.arange(K), labels=class_names, fontsize=font)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    if K <= 20:
        for row in range(K):
            for col in range(C):
                if counts[row, col]:
                    dark = shown[row, col] > 0.5 * (shown.max() or 1)
                    axes.text(col, row, f"{int(counts[row, col])}", ha="center", va="center",
                              fontsize=font, color="white" if dark else "black")
    total = counts.sum()
    accuracy = 100.0 * np.trace(counts) / total if total else float("nan")
    axes.set_title(f"confusion matrix ({int(total)} samples, accuracy {accuracy:.2f}%)")
    figure.tight_layout()
    return _save(figure, path)


def read_log(path: PathLike) -> List[Dict]:
    """Read a run's ``log.jsonl`` (one JSON object per line; blank lines skipped).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line is not a JSON object (the message names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training log not found: {path}")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not valid JSON ({error.msg})") from error
        if not isinstance(record, dict):
            raise ValueError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def plot_training_curves(run_dir: PathLike, path: PathLike = None) -> Path:
    """Plot loss, metric and learning rate per epoch from ``run_dir/log.jsonl``.

    Records are JSON objects with ``"epoch"`` and ``"kind"`` (or ``"split"``) ``"train"`` or
    ``"val"`` (and ``"val_raw"``, the trained weights of a run that validates a moving average);
    other kinds (e.g. ``"resume"``) are ignored. The metric panel shows the first of
    ``overall_accuracy``, ``mean_class_accuracy``, ``instance_miou``, ``class_miou`` that the log
    holds, and the training records' running ``accuracy`` beside it; ``lr`` comes from the
    training records. A later record for the same epoch (after a resume) replaces the earlier one.

    Args:
        run_dir: training run folder.
        path: output PNG (default ``run_dir/curves.png``).

    Returns:
        The path written.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    run_dir = Path(run_dir)
    log_path = run_dir / "log.jsonl"
    records = [r for r in read_log(log_path) if "epoch" in r and _split(r) in ("train", "val", "val_raw")]
    if not records:
        raise ValueError(f"{log_path} holds no per-epoch records of kind 'train' or 'val'")
    metric = next((name for name in CURVE_METRICS if any(_finite(r.get(name)) for r in records)), None)
    panels = [("loss", [("train", "loss"), ("val", "loss")])]
    if metric is not None:
        panels.append((metric, [("train", metric), ("train", "accuracy"), ("val", metric), ("val_raw", metric)]))
    if any(_finite(r.get("lr")) for r in records):
        panels.append(("lr", [("train", "lr")]))

    figure = Figure(figsize=(4.5 * len(panels), 3.6), dpi=DPI)
    for index, (title, series) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        drawn = set()
        for split, key in series:
            epochs, values = _series(records, split, key)
            if not epochs or split in drawn:  # the train metric itself wins over running accuracy
                continue
            drawn.add(split)
            label = split if key in (title, "loss", "lr") else f"{split} {key.replace('_', ' ')}"
            axes.plot(epochs, values, "-" if split == "train" else "-o", markersize=3, label=label)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(title + (" (%)" if title in CURVE_METRICS else ""))
        axes.set_title(title.replace("_", " "))
        if title == "lr":
            axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        else:
            axes.legend()
        axes.grid(alpha=0.3)
    figure.suptitle(run_dir.name)
    figure.tight_layout()
    return _save(figure, Path(path) if path is not None else run_dir / "curves.png")


def _split(record: Dict) -> str:
    return record.get("split") or record.get("kind")


def _series(records: List[Dict], split: str, key: str):
    points = {}
    for record in records:
        if _split(record) == split and _finite(record.get(key)):
            points[record["epoch"]] = float(record[key])
    epochs = sorted(points)
    return epochs, [points[epoch] for epoch in epochs]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _save(figure, path: PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path
