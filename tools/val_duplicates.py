"""How much do near-duplicates inflate validation? Accuracy of a classifier on its val split, by
how close each val shape is to its nearest training shape.

Similarity is the occupancy-grid IoU of :mod:`pointea.data.dedup` (the measure ``data.val_split:
grouped`` groups by), on the first 1,024 points of each shape. Evaluation goes through
:func:`pointea.engine.evaluate.evaluate_model` on the checkpoint's own val split (as
``pointea eval --split val``), restricted to the val shapes with a near-twin in train (IoU >=
``--threshold``), without one, and to IoU bins. Also counts the groups of near-identical shapes in
the official train list. Prints a table and writes JSON with ``--out``.

    python tools/val_duplicates.py --checkpoint pointea-cls-modelnet40-cpu --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from pointea.atomic import atomic_write_text
from pointea.commands import positive_int
from pointea.data.dedup import DUPLICATE_IOU, GROUP_POINTS, cached_duplicate_groups, occupancy_grids
from pointea.engine.checkpoint import load_model
from pointea.engine.evaluate import evaluate_model, evaluation_data, load_split, model_inputs
from pointea.pretrained import resolve_checkpoint
from pointea.tables import markdown_table

BINS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 1.01)  # IoU bin edges; the last closes [0.7, 1]


def nearest_iou(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Index and IoU of the most similar ``reference`` shape for every ``query`` shape.

    Shapes:
        query ``(Q, N, 3)``, reference ``(R, N, 3)`` -> int64 ``(Q,)``, float ``(Q,)``.
    """
    a = torch.from_numpy(occupancy_grids(query).astype(np.float32))  # (Q, V)
    b = torch.from_numpy(occupancy_grids(reference).astype(np.float32))  # (R, V)
    inter = a @ b.T  # (Q, R)
    iou = inter / (a.sum(1)[:, None] + b.sum(1)[None, :] - inter)
    best, index = iou.max(dim=1)
    return index.numpy(), best.numpy().astype(np.float64)


def subset(dataset: Any, mask: np.ndarray) -> Any:
    """A shallow copy of a split-in-memory dataset holding the items where ``mask`` is True."""
    keep = torch.from_numpy(np.flatnonzero(mask))
    part = copy.copy(dataset)
    part.points, part.labels = dataset.points[keep], dataset.labels[keep]
    part.files = [dataset.files[i] for i in keep.tolist()]
    return part


def run(args: argparse.Namespace) -> Dict[str, Any]:
    checkpoint = resolve_checkpoint(args.checkpoint)
    model, meta = load_model(checkpoint, device="cpu")
    name, _, data_root, data_config = evaluation_data(checkpoint, meta, None, args.data_root)
    data_config.update(model_inputs(model, meta))
    val = load_split(name, data_root, "val", data_config)
    trainval = load_split(name, data_root, "trainval", {**data_config, "num_points": GROUP_POINTS,
                                                         "use_normals": False})
    position = {file: i for i, file in enumerate(trainval.files)}
    in_val = np.zeros(len(trainval), dtype=bool)
    in_val[[position[file] for file in val.files]] = True
    points, labels = trainval.points.numpy(), trainval.labels.numpy()
    train = np.flatnonzero(~in_val)
    nearest, iou = nearest_iou(points[in_val], points[train])
    same_class = labels[train[nearest]] == labels[in_val]
    twin = iou >= args.threshold

    groups = cached_duplicate_groups(points, name, f"{trainval.layout}-train", trainval.layout_dir,
                                     threshold=args.threshold, cache_dir=data_config.get("cache_dir"))
    sizes = np.bincount(groups)
    class_names = meta.get("classes")

    def evaluate(what: str, mask: np.ndarray) -> Dict[str, Any]:
        row: Dict[str, Any] = {"subset": what, "shapes": int(mask.sum())}
        if mask.any():
            result = evaluate_model(model, subset(val, mask), batch_size=args.batch_size, class_names=class_names)
            row.update(oa=result["overall_accuracy"], macc=result["mean_class_accuracy"])
        return row

    rows = [evaluate("all val", np.ones(len(val), dtype=bool)),
            evaluate(f"twin in train (IoU >= {args.threshold:g})", twin),
            evaluate("  of the same class", twin & same_class),
            evaluate("no twin in train", ~twin)]
    rows += [evaluate(f"IoU in [{lo:g}, {min(hi, 1):g}{']' if hi > 1 else ')'}", (iou >= lo) & (iou < hi))
             for lo, hi in zip(BINS[:-1], BINS[1:])]
    return {
        "checkpoint": str(checkpoint), "dataset": name, "threshold": args.threshold,
        "val_shapes": len(val), "val_with_twin": int(twin.sum()), "val_with_twin_same_class": int((twin & same_class).sum()),
        "val_nearest_iou_quantiles": dict(zip(("10", "25", "50", "75", "90"),
                                              np.quantile(iou, [0.1, 0.25, 0.5, 0.75, 0.9]).round(3).tolist())),
        "train_list_shapes": len(groups), "groups": len(sizes), "groups_of_several": int((sizes > 1).sum()),
        "shapes_in_groups_of_several": int(sizes[sizes > 1].sum()), "largest_groups": np.sort(sizes)[::-1][:5].tolist(),
        "rows": rows,
    }


def format_table(rows: List[Dict[str, Any]]) -> str:
    def cell(row: Dict[str, Any], key: str) -> str:
        return f"{row[key]:.2f}" if key in row else "-"

    return markdown_table(("val subset", "shapes", "OA %", "mAcc %"),
                          [(r["subset"], r["shapes"], cell(r, "oa"), cell(r, "macc")) for r in rows])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="pointea-cls-modelnet40-cpu",
                        help="checkpoint file, run folder or shipped weights name (default: %(default)s)")
    parser.add_argument("--data-root", default=None, help="dataset folder (default: the checkpoint's)")
    parser.add_argument("--threshold", type=float, default=DUPLICATE_IOU,
                        help="occupancy IoU of a near-twin (default: %(default)s, as data.val_split: grouped)")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    print(format_table(result["rows"]))
    print(f"val shapes with a twin in train: {result['val_with_twin']} of {result['val_shapes']} "
          f"({result['val_with_twin_same_class']} of the same class); train list: {result['groups']} groups, "
          f"{result['groups_of_several']} of several shapes holding {result['shapes_in_groups_of_several']} "
          f"of {result['train_list_shapes']}, largest {result['largest_groups']}")
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
