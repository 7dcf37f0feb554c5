"""Evaluate a classifier or part segmenter on a dataset split, with optional test-time voting.

Voting, as in the reference code (PointNet++, PointMLP): the prediction is the average softmax of
``votes`` forward passes; the first pass sees the clouds as they are, each later pass a random
anisotropic scaling U(0.85, 1.15) per axis. The single-pass metrics are always reported as well,
under their plain names, and the voted ones under ``"vote"``: voting is never kept silently, nor
repeated until a lucky seed wins (the seed is fixed).

Cross-dataset evaluation: a classifier whose class names include every class of the dataset
(ModelNet40 weights on ModelNet10) is evaluated by name. The prediction is the argmax over all the
model's classes, mapped to the dataset's classes; a prediction outside them counts as wrong and
lands in an extra ``"other"`` column of the confusion matrix, so each row still sums to its class
count. Accuracies are over the dataset's classes.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils.data import Dataset

from pointea.data.catalog import DATASETS, get_spec
from pointea.engine.device import resolve_device
from pointea.engine.loop import (
    VOTE_SCALE,
    collate_padded,
    eval_batches,
    load_split,
    random_anisotropic_scale,
    run_evaluation,
)
from pointea.engine.metrics import ClassificationMeter, mean_class_accuracy, overall_accuracy, per_class_accuracy
from pointea.engine.tasks import task_for

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

__all__ = ["evaluate", "evaluate_model", "map_classes_by_name", "build_dataset", "collate_padded",
           "random_anisotropic_scale", "model_inputs", "VOTE_SCALE", "OTHER_COLUMN"]

OTHER_COLUMN = "other"  # confusion column of predictions outside the dataset's classes


def evaluate_model(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 32,
    device: Union[str, torch.device] = "cpu",
    votes: int = 0,
    seed: int = 0,
    num_workers: int = 0,
    class_names: Optional[Sequence[str]] = None,
) -> Dict[str, Any]:
    """Evaluate ``model`` on every item of ``dataset``.

    Args:
        model: a pointea ``ClassificationModel`` or ``SegmentationModel`` (``model.config.task``).
        dataset: items with ``"points"`` and ``"label"`` (classification) or ``"points"``,
            ``"category"`` and ``"parts"`` (segmentation). Clouds of different sizes are padded
            and masked.
        batch_size: clouds per forward pass.
        device: where the model runs.
        votes: number of voting passes (0 or 1: single pass only). The first pass is the plain one.
        seed: seed of the voting augmentation.
        num_workers: DataLoader workers.
        class_names: the classifier's class names (a checkpoint's ``meta["classes"]``). When
            they differ from the dataset's ``classes`` but hold all of them, predictions are
            mapped by name (see the module docstring); None requires equal class counts.

    Returns:
        Classification: ``overall_accuracy``, ``mean_class_accuracy``, ``per_class_accuracy``
        ({class: %} or a list), ``confusion_matrix``, ``classes``. Segmentation:
        ``instance_miou``, ``class_miou``, ``per_category_iou``, ``per_category_count``,
        ``categories``. Both: ``task``, ``num_samples``, ``seconds``, and with ``votes > 1`` a
        ``"vote"`` dict holding the same metrics for the voted predictions plus ``"votes"``.
        All metrics in percent. With a mapping by name, also ``class_mapping`` ("name"),
        ``model_num_classes``, ``outside_predictions`` (predictions outside the dataset's
        classes) and ``confusion_columns`` (the dataset's classes, then ``"other"`` when the model
        has classes outside the dataset's: the matrix is then K x (K + 1)).
    """
    if votes < 0:
        raise ValueError(f"votes must be >= 0, got {votes}")
    task = task_for(model)
    task.check_dataset(model.config, dataset, class_names is not None)
    if len(dataset) == 0:
        raise ValueError(f"nothing to evaluate: {dataset} holds no clouds")
    device = resolve_device(device)
    model.to(device).eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    names = task.names(dataset)
    lookup = None  # model class index -> dataset class index (OTHER: the extra column)
    if not task.uses_category and class_names is not None:
        if names is None:
            raise ValueError(f"{dataset} has no class names to map the model's classes to")
        mapping = map_classes_by_name(class_names, names, type(dataset).__name__)
        lookup = None if mapping is None else torch.tensor(mapping, device=device)

    columns = None if lookup is None else int(lookup.max()) + 1
    single, voted = (task.meter(model.config, device, columns) for _ in range(2))

    start = time.perf_counter()
    batches = eval_batches(dataset, batch_size, device, num_workers=num_workers)
    run_evaluation(model, batches, task, single, votes=votes, voted_meter=voted, generator=generator, lookup=lookup)
    seconds = time.perf_counter() - start

    def metrics(meter) -> Dict[str, Any]:
        computed = meter.compute() if lookup is None else _mapped_metrics(meter, len(names))
        return task.named(computed, names)

    result: Dict[str, Any] = {"task": task.name, **metrics(single), "seconds": round(seconds, 3)}
    if lookup is not None:
        columns = list(names) + ([OTHER_COLUMN] if single.num_classes > len(names) else [])
        result.update(class_mapping="name", model_num_classes=len(class_names), confusion_columns=columns)
    if votes > 1:
        voting = {"votes": votes, "scale": list(VOTE_SCALE), "seed": seed}
        result["vote"] = {**voting, **metrics(voted)}
    return result


def map_classes_by_name(
    model_classes: Sequence[str], dataset_classes: Sequence[str], dataset: str
) -> Optional[List[int]]:
    """Where each model class goes among the dataset's classes, or None when they are the same.

    Args:
        model_classes: the classifier's class names.
        dataset_classes: the dataset's class names, in label order.
        dataset: the dataset's name, for messages.

    Returns:
        None when the names are equal (same order); else a list with,
        for each model class, the index of the dataset class of that name, or
        ``len(dataset_classes)`` (the "other" column) for a class the dataset lacks.

    Raises:
        ValueError: the dataset has a class the model does not know (the names are listed).
    """
    if list(model_classes) == list(dataset_classes):
        return None
    missing = [name for name in dataset_classes if name not in model_classes]
    if missing:
        raise ValueError(
            f"the model predicts {len(model_classes)} classes but {dataset} has {len(dataset_classes)} "
            f"and they cannot be mapped by name: the model has no class {', '.join(map(repr, missing))}"
        )
    index = {name: i for i, name in enumerate(dataset_classes)}
    return [index.get(name, len(dataset_classes)) for name in model_classes]


def build_dataset(
    name: str,
    split: str,
    root: Optional[PathLike] = None,
    num_points: Optional[int] = 1024,
    use_normals: bool = False,
    **options: Any,
) -> Dataset:
    """A catalog dataset with clouds normalized to the unit sphere, from explicit arguments.

    Args:
        name: a name of :data:`pointea.data.catalog.DATASETS`.
        split: dataset split (one of the catalog entry's ``splits``).
        root: data folder (not needed for datasets without one).
        num_points: points per cloud (``None``: the entry's default; whole clouds where it has none).
        use_normals: xyz + normals input.
        **options: further keyword arguments of the dataset class (e.g. ``cache_dir``, ``seed``).
    """
    return load_split(name, root, split, {"num_points": num_points, "use_normals": use_normals}, **options)


def evaluate(
    checkpoint: PathLike,
    split: str = "test",
    data_root: Optional[PathLike] = None,
    dataset: Optional[str] = None,
    votes: int = 0,
    batch_size: int = 32,
    device: Union[str, torch.device] = "cpu",
    num_points: Optional[int] = None,
    seed: int = 0,
) -> Dict[str, Any]:
    """Evaluate a checkpoint on a dataset split (the dataset recorded in the checkpoint by default).

    Args:
        checkpoint: checkpoint file.
        split: split to evaluate (default ``"test"``).
        data_root: data folder (not needed for the synthetic dataset).
        dataset: dataset name overriding the checkpoint's. A classifier is evaluated on another
            dataset whose classes are a subset of its own by name (see the module docstring);
            other class lists are refused before any shape is read.
        votes: voting passes (see :func:`evaluate_model`).
        batch_size, device, seed: as in :func:`evaluate_model`.
        num_points: points per cloud (default: the checkpoint's).

    Returns:
        The metrics of :func:`evaluate_model` plus ``checkpoint``, ``dataset``, ``split`` and
        ``num_points``.

    Raises:
        ValueError: e.g. a dataset whose classes the model does not have (named).
        FileNotFoundError: the data is missing.
    """
    from pointea.engine.checkpoint import load_model

    device = resolve_device(device)
    model, meta = load_model(checkpoint, device=device)
    name, spec, data_root, data_config = evaluation_data(checkpoint, meta, dataset, data_root)
    inputs = model_inputs(model, meta, num_points)
    task = task_for(model)
    class_names = meta.get("classes") if not task.uses_category else None
    check_classes_early(model, class_names, spec.class_names(data_root, data_config), name, checkpoint)
    data_config.update(inputs)
    data = load_split(name, data_root, split, data_config)
    logger.info("evaluating %s on %s (%d clouds)", checkpoint, data, len(data))
    result = evaluate_model(model, data, batch_size=batch_size, device=device, votes=votes, seed=seed,
                            class_names=class_names)
    return {"checkpoint": str(checkpoint), "dataset": name, "split": split, "num_points": inputs["num_points"],
            **result}


def model_inputs(model: nn.Module, meta: Dict[str, Any], num_points: Optional[int] = None) -> Dict[str, Any]:
    """The data options a checkpoint's clouds are read with: ``num_points`` (default the
    checkpoint's; None keeps whole clouds where the dataset allows) and ``use_normals`` when the
    model takes xyz + normals."""
    return {"num_points": num_points or meta.get("num_points"), "use_normals": model.config.in_channels >= 6}


def evaluation_data(checkpoint: PathLike, meta: Dict[str, Any], dataset: Optional[str] = None,
                    data_root: Optional[PathLike] = None) -> Tuple[str, Any, Optional[PathLike], Dict[str, Any]]:
    """The dataset a checkpoint is evaluated on: ``(name, spec, data_root, data_config)``.

    ``dataset`` overrides the checkpoint's own. On the training dataset its options (val holdout,
    seeds) are reused and, without ``data_root``, its recorded root, which must exist here.
    """
    name = dataset or meta.get("name")
    if name is None:
        raise ValueError(
            f"checkpoint {checkpoint} records no dataset name; pass dataset= one of {', '.join(DATASETS)}"
        )
    spec = get_spec(name)
    data_config = dict(meta["config"].get("data") or {}) if name == meta.get("name") else {}
    if data_root is None and data_config.get("root") and spec.needs_root:
        data_root = data_config["root"]
        if not Path(data_root).exists():
            raise FileNotFoundError(
                f"the data root recorded in checkpoint {checkpoint} ({data_root}) does not exist here; "
                "pass the dataset folder (--data-root DIR, or data_root= in Python)"
            )
    return name, spec, data_root, data_config


def check_classes_early(model: nn.Module, class_names: Optional[Sequence[str]],
                         expected: Optional[Sequence[str]], name: str, checkpoint: PathLike) -> None:
    """Refuse a classifier that cannot be evaluated on dataset ``name`` (whose class names are
    ``expected``, None when unknown before reading it) before its shapes are read."""
    if task_for(model).uses_category or expected is None:
        return
    if class_names is not None:
        map_classes_by_name(class_names, expected, name)
    elif model.config.num_classes != len(expected):
        raise ValueError(
            f"the model predicts {model.config.num_classes} classes but {name} has {len(expected)}, "
            f"and checkpoint {checkpoint} records no class names to map them by"
        )


def _mapped_metrics(meter: ClassificationMeter, num_classes: int) -> Dict[str, Any]:
    """Metrics of a meter whose last column collects predictions outside the dataset's
    ``num_classes`` classes: rows are the dataset's classes only."""
    confusion = meter.confusion.cpu()[:num_classes]  # (K, K) or (K, K + 1)
    accuracies = per_class_accuracy(confusion)
    return {
        "overall_accuracy": overall_accuracy(confusion),
        "mean_class_accuracy": mean_class_accuracy(confusion),
        "per_class_accuracy": [None if a != a else a for a in accuracies.tolist()],
        "confusion_matrix": confusion.tolist(),
        "num_samples": int(confusion.sum()),
        "outside_predictions": int(confusion[:, num_classes:].sum()),
    }
