"""Do classifiers fail on the same shapes? Accuracy of each checkpoint on one split, of their
averaged class probabilities (an ensemble), of an oracle that counts a shape as right when any
checkpoint gets it right, and the shapes every checkpoint gets wrong with their commonest
confusions.

When averaging models of other seeds and architectures gains nothing and they all miss the same
shapes, more capacity or less variance will not lift accuracy: the errors come from the data (look-
alike classes) or from something every model shares. Every checkpoint is evaluated on its own
dataset record (as ``pointea eval``), in float32; all must see the same shapes in the same order
(same dataset, split and holdout). Prints a table and writes JSON with ``--out``.

    python tools/error_overlap.py --checkpoints runs/a runs/b runs/c --split val --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from pointea.atomic import atomic_write_text
from pointea.commands import positive_int
from pointea.engine.checkpoint import load_model
from pointea.engine.evaluate import evaluation_data, load_split, model_inputs
from pointea.engine.loop import eval_batches
from pointea.engine.metrics import confusion_matrix, mean_class_accuracy, overall_accuracy
from pointea.engine.tasks import task_for
from pointea.pretrained import resolve_checkpoint
from pointea.tables import markdown_table


def class_probabilities(checkpoint: str, split: str, data_root: Optional[str] = None,
                        batch_size: int = 32) -> Tuple[np.ndarray, np.ndarray, List[str], List[str]]:
    """Softmax of a classifier over every shape of a split of its own dataset.

    Returns:
        probabilities ``(M, K)`` float64, labels ``(M,)`` int64, the shapes' files (or indices
        as text for datasets without files) and the class names.
    """
    path = resolve_checkpoint(checkpoint)
    model, meta = load_model(path, device="cpu")
    task = task_for(model)
    if task.uses_category:
        raise ValueError(f"{path} is a {task.name} model; error_overlap compares classifiers only")
    name, _, root, data_config = evaluation_data(path, meta, None, data_root)
    data_config.update(model_inputs(model, meta))
    data = load_split(name, root, split, data_config)
    classes = list(meta.get("classes") or [])
    if classes and list(data.classes) != classes:
        raise ValueError(f"{path} predicts classes {classes[:3]}... but its {split} split has "
                         f"{list(data.classes)[:3]}...: the class lists differ")
    chunks, labels = [], []
    model.eval()
    with torch.no_grad():
        for batch in eval_batches(data, batch_size, torch.device("cpu")):
            chunks.append(task.forward(model, batch).float().softmax(dim=-1).double())
            labels.append(batch["label"])
    files = [str(f) for f in getattr(data, "files", None) or range(len(data))]
    return torch.cat(chunks).numpy(), torch.cat(labels).numpy(), files, list(data.classes)


def _accuracies(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> Dict[str, float]:
    confusion = confusion_matrix(torch.from_numpy(predictions), torch.from_numpy(labels), num_classes)
    return {"overall_accuracy": overall_accuracy(confusion),
            "mean_class_accuracy": mean_class_accuracy(confusion),
            "errors": int((predictions != labels).sum())}


def overlap(probabilities: Sequence[np.ndarray], labels: np.ndarray, classes: Sequence[str],
            top: int = 15) -> Dict[str, Any]:
    """Per-model, ensemble and oracle accuracy of class probabilities on the same shapes.

    Args:
        probabilities: one ``(M, K)`` array per model.
        labels: ``(M,)`` true classes.
        classes: the ``K`` class names.
        top: how many of the all-wrong shapes' confusions to list.

    Returns:
        ``models`` (per model: overall and mean class accuracy in percent, errors), ``ensemble``
        (the argmax of the mean probability), ``oracle_accuracy`` (percent of shapes some model
        gets right), ``all_wrong`` (indices of the shapes every model gets wrong),
        ``all_wrong_confusions`` (true class, the ensemble's class, count; commonest first).
    """
    num_classes = len(classes)
    predictions = np.stack([p.argmax(axis=1) for p in probabilities])  # (models, M)
    ensemble = np.mean(probabilities, axis=0).argmax(axis=1)
    right = predictions == labels[None, :]
    all_wrong = np.flatnonzero(~right.any(axis=0))
    confusions = Counter((classes[labels[i]], classes[ensemble[i]]) for i in all_wrong)
    return {
        "models": [_accuracies(p, labels, num_classes) for p in predictions],
        "ensemble": _accuracies(ensemble, labels, num_classes),
        "oracle_accuracy": 100.0 * float(right.any(axis=0).mean()),
        "all_wrong": all_wrong.tolist(),
        "all_wrong_confusions": [{"true": t, "predicted": p, "count": n} for (t, p), n in confusions.most_common(top)],
    }


def run(args: argparse.Namespace) -> Dict[str, Any]:
    probabilities, reference = [], None
    for checkpoint in args.checkpoints:
        probs, labels, files, classes = class_probabilities(checkpoint, args.split, args.data_root, args.batch_size)
        if reference is None:
            reference = (checkpoint, labels, files, classes)
        elif files != reference[2] or not np.array_equal(labels, reference[1]) or classes != reference[3]:
            raise ValueError(f"{checkpoint} and {reference[0]} see different {args.split} shapes "
                             f"({len(files)} and {len(reference[2])}): compare checkpoints of the same dataset, "
                             "split and holdout (data.val_split, data.val_fraction)")
        probabilities.append(probs)
    _, labels, files, classes = reference
    result = overlap(probabilities, labels, classes, top=args.top)
    for name, model in zip(args.checkpoints, result["models"]):
        model["checkpoint"] = name
    result["all_wrong"] = [files[i] for i in result["all_wrong"]]
    return {"split": args.split, "shapes": len(labels), **result}


def format_table(result: Dict[str, Any]) -> str:
    def row(what: str, accuracies: Dict[str, Any]) -> Tuple[str, ...]:
        return (what, f"{accuracies['overall_accuracy']:.2f}", f"{accuracies['mean_class_accuracy']:.2f}",
                str(accuracies["errors"]))

    rows = [row(model["checkpoint"], model) for model in result["models"]]
    rows.append(row(f"ensemble of {len(result['models'])} (mean probability)", result["ensemble"]))
    wrong = len(result["all_wrong"])
    rows.append(("oracle (any model right)", f"{result['oracle_accuracy']:.2f}", "-", str(wrong)))
    return markdown_table(("checkpoint", "OA %", "mAcc %", "errors"), rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", nargs="+", required=True,
                        help="checkpoint files, run folders or shipped weights names")
    parser.add_argument("--split", default="val", help="split to compare on (default: %(default)s)")
    parser.add_argument("--data-root", default=None, help="dataset folder (default: each checkpoint's)")
    parser.add_argument("--top", type=positive_int, default=15, help="confusions of the all-wrong shapes to list")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    print(format_table(result))
    confusions = ", ".join(f"{c['true']} as {c['predicted']} {c['count']}" for c in result["all_wrong_confusions"])
    print(f"{len(result['all_wrong'])} of {result['shapes']} {args.split} shapes are wrong in every model; "
          f"commonest (true as ensemble's class): {confusions or 'none'}")
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
