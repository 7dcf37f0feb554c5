"""``pointea eval``: metrics of a checkpoint on a dataset split, written as JSON, CSV and PNG."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, Dict

from pointea.commands import (
    add_checkpoint_argument,
    add_data_root_argument,
    add_device_argument,
    positive_int,
)

EPILOG = """\
examples:
  # ModelNet40 test accuracy of a run's best checkpoint
  pointea eval --checkpoint runs/cls/checkpoints/best.pt --data-root data --out runs/cls/test.json
  # the same with 10-pass voting (reported beside the single-pass numbers)
  pointea eval --checkpoint best.pt --data-root data --votes 10 --out test_vote.json
  # the validation split held out in training
  pointea eval --checkpoint best.pt --data-root data --split val
  # ModelNet40 weights on ModelNet10: its 10 classes are mapped by name
  pointea eval --checkpoint best.pt --dataset modelnet10 --data-root data --out mn10.json
  # ShapeNetPart instance / class mIoU
  pointea eval --checkpoint runs/partseg/checkpoints/best.pt --data-root data --out seg.json
  # the built-in synthetic dataset needs no data folder
  pointea eval --checkpoint runs/synthetic/checkpoints/best.pt --out synthetic.json

Beside --out (e.g. test.json) it writes, for classification, test_confusion.csv,
test_confusion.png and test_per_class.csv; for segmentation, test_per_category.csv.

A classifier evaluated on a dataset whose classes are a subset of its own (by name, e.g.
ModelNet40 weights on ModelNet10) predicts over all its classes; a prediction outside the
dataset's classes counts as wrong and goes to an extra "other" confusion column. Accuracies,
per-class accuracy and the confusion rows are over the dataset's classes. Class lists that do
not fit are refused before any shape is read, naming the missing classes.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint on a dataset split",
        description=(
            "Evaluate a checkpoint on a dataset split: overall and mean class accuracy with the "
            "confusion matrix (classification) or instance and class mIoU (part segmentation), "
            "in percent. The dataset is the one recorded in the checkpoint unless --dataset says "
            "otherwise. With --votes the voted metrics are reported under 'vote', beside the "
            "single-pass ones."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    from pointea.data.catalog import DATASETS

    splits = list(dict.fromkeys(split for spec in DATASETS.values() for split in spec.splits))
    add_checkpoint_argument(parser)
    parser.add_argument("--split", default="test", choices=splits,
                        help="split to evaluate (default test; the dataset says which it has)")
    add_data_root_argument(parser)
    parser.add_argument("--dataset", choices=list(DATASETS), metavar="DATASET",
                        help="dataset to evaluate on (default: the checkpoint's): " + ", ".join(DATASETS))
    parser.add_argument("--out", metavar="JSON", help="metrics file to write (tables and plots go beside it)")
    parser.add_argument("--votes", type=int, default=0, metavar="N",
                        help="test-time voting passes (random anisotropic scaling; default 0 = off)")
    parser.add_argument("--num-points", type=positive_int, metavar="N", help="points per cloud (default: the checkpoint's)")
    parser.add_argument("--batch-size", type=positive_int, default=32, metavar="N",
                        help="clouds per batch (default 32)")
    add_device_argument(parser)
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="seed of the voting augmentation (default 0)")
    return parser


def run(args: argparse.Namespace) -> int:
    import logging

    from pointea.engine.evaluate import evaluate

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        metrics = evaluate(
            args.checkpoint,
            args.split,
            data_root=args.data_root,
            dataset=args.dataset,
            votes=args.votes,
            batch_size=args.batch_size,
            device=args.device,
            num_points=args.num_points,
            seed=args.seed,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"pointea eval: error: {error}", file=sys.stderr)
        return 2
    print(summary(metrics))
    if args.out:
        for path in write_outputs(metrics, Path(args.out)):
            print(f"wrote {path}")
    return 0


def summary(metrics: Dict[str, Any]) -> str:
    """A few readable lines with the headline numbers."""
    points = f"{metrics['num_points']} points" if metrics.get("num_points") else "all points"
    from pointea.engine.tasks import task_for

    head = f"{metrics['dataset']} {metrics['split']} ({metrics['num_samples']} clouds, {points})"
    keys = task_for(metrics["task"]).metric_names
    lines = [head]
    if metrics.get("class_mapping") == "name":
        lines.append(
            f"  classes mapped by name: the model's {metrics['model_num_classes']} onto the dataset's "
            f"{len(metrics['classes'])}; {metrics['outside_predictions']} predictions outside them count as wrong"
        )
    lines.append("  single pass: " + ", ".join(f"{k} {metrics[k]:.2f}" for k in keys))
    if "vote" in metrics:
        vote = metrics["vote"]
        lines.append(f"  {vote['votes']} votes:    " + ", ".join(f"{k} {vote[k]:.2f}" for k in keys))
    return "\n".join(lines)


def write_outputs(metrics: Dict[str, Any], out: Path) -> list:
    """Write the metrics JSON and, beside it, the tables (CSV) and the confusion matrix (PNG)."""
    from pointea.atomic import atomic_write_text
    from pointea.plots import plot_confusion_matrix

    written = []
    atomic_write_text(out, json.dumps(metrics, indent=2) + "\n")
    written.append(out)
    stem = out.with_suffix("")
    if "confusion_matrix" in metrics:  # classification
        names = metrics.get("classes") or [str(i) for i in range(len(metrics["confusion_matrix"]))]
        columns = metrics.get("confusion_columns") or names  # + "other" after a mapping by name
        rows = [["true \\ predicted"] + columns]
        rows += [[name] + counts for name, counts in zip(names, metrics["confusion_matrix"])]
        written.append(_write_csv(Path(f"{stem}_confusion.csv"), rows))
        written.append(plot_confusion_matrix(metrics["confusion_matrix"], names, Path(f"{stem}_confusion.png"),
                                             column_names=columns))
        table = _per_name_table(metrics, "per_class_accuracy", "class", "accuracy")
        written.append(_write_csv(Path(f"{stem}_per_class.csv"), table))
    else:
        table = _per_name_table(metrics, "per_category_iou", "category", "miou")
        counts = metrics.get("per_category_count") or {}
        table[0].append("shapes")
        for row in table[1:]:
            row.append(counts.get(row[0], "") if isinstance(counts, dict) else "")
        written.append(_write_csv(Path(f"{stem}_per_category.csv"), table))
    return written


def _per_name_table(metrics: Dict[str, Any], key: str, label: str, value: str) -> list:
    sources = [("", metrics)] + ([("vote_", metrics["vote"])] if "vote" in metrics else [])
    header = [label] + [f"{prefix}{value}" for prefix, _ in sources]
    values = metrics[key]
    names = list(values) if isinstance(values, dict) else [str(i) for i in range(len(values))]
    rows = [header]
    for index, name in enumerate(names):
        row = [name]
        for _, source in sources:
            entry = source[key]
            number = entry[name] if isinstance(entry, dict) else entry[index]
            row.append("" if number is None else f"{number:.2f}")
        rows.append(row)
    return rows


def _write_csv(path: Path, rows: list) -> Path:
    from pointea.atomic import atomic_write_text

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    atomic_write_text(path, buffer.getvalue())
    return path
