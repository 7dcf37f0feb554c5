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
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from pointea.engine.device import resolve_device
from pointea.engine.metrics import (
    ClassificationMeter,
    PartSegmentationMeter,
    mean_class_accuracy,
    overall_accuracy,
    per_class_accuracy,
)

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

DATASET_NAMES = ("modelnet40", "modelnet10", "shapenetpart", "synthetic")
VOTE_SCALE = (0.85, 1.15)  # per-axis scale range of the voting passes (PointMLP's voting script)
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
    task = model.config.task
    _check_compatible(model, dataset, class_names is not None)
    if len(dataset) == 0:
        raise ValueError(f"nothing to evaluate: {dataset} holds no clouds")
    device = resolve_device(device)
    model.to(device).eval()
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_padded
    )
    generator = torch.Generator(device=device).manual_seed(seed)
    names = _names(dataset, task)
    lookup = None  # model class index -> dataset class index (OTHER: the extra column)
    if task == "classification" and class_names is not None:
        if names is None:
            raise ValueError(f"{dataset} has no class names to map the model's classes to")
        mapping = map_classes_by_name(class_names, names, type(dataset).__name__)
        lookup = None if mapping is None else torch.tensor(mapping, device=device)

    if task == "classification":
        columns = model.config.num_classes if lookup is None else int(lookup.max()) + 1
        meters = [ClassificationMeter(columns, device) for _ in range(2)]
    else:
        category_parts = getattr(dataset, "category_parts", None) or model.config.category_parts
        meters = [PartSegmentationMeter(category_parts, device) for _ in range(2)]
    single, voted = meters

    start = time.perf_counter()
    with torch.inference_mode():
        for batch in loader:
            points = batch["points"].to(device)  # (B, N, C)
            mask = batch["mask"].to(device) if "mask" in batch else None  # (B, N) or absent
            category = batch["category"].to(device) if task == "segmentation" else None  # (B,)
            targets = batch["label" if task == "classification" else "parts"].to(device)
            logits = _forward(model, points, category, mask)  # (B, K) or (B, N, P)
            _update(single, logits, targets, category, mask, lookup)
            if votes > 1:
                probabilities = logits.float().softmax(dim=-1)
                for _ in range(votes - 1):
                    scaled = random_anisotropic_scale(points, generator)
                    probabilities += _forward(model, scaled, category, mask).float().softmax(dim=-1)
                _update(voted, probabilities, targets, category, mask, lookup)
    seconds = time.perf_counter() - start

    def metrics(meter) -> Dict[str, Any]:
        computed = meter.compute() if lookup is None else _mapped_metrics(meter, len(names))
        return _named(computed, names, task)

    result: Dict[str, Any] = {"task": task, **metrics(single), "seconds": round(seconds, 3)}
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


def dataset_class_names(name: str) -> Optional[List[str]]:
    """The class names of a classification dataset, known without reading it (None for a
    dataset without classes, i.e. shapenetpart).

    ModelNet's labels are its official class list (the folder layout indexes it; the text and
    HDF5 layouts must list as many names, which :func:`evaluate_model` then maps by name again).
    """
    if name == "synthetic":
        from pointea.data.synthetic import CATEGORIES

        return list(CATEGORIES)
    if name in ("modelnet40", "modelnet10"):
        from pointea.data.modelnet import MODELNET10_CLASSES, MODELNET40_CLASSES

        return list(MODELNET40_CLASSES if name == "modelnet40" else MODELNET10_CLASSES)
    return None


def random_anisotropic_scale(
    points: Tensor, generator: torch.Generator, scale: Tuple[float, float] = VOTE_SCALE
) -> Tensor:
    """Scale each cloud by a random factor per axis (normals, if present, are transformed accordingly).

    Shapes:
        points (B, N, C) with C = 3 (xyz) or 6 (xyz + normals) -> (B, N, C)
    """
    B, N, C = points.shape
    low, high = scale
    factors = low + (high - low) * torch.rand(B, 1, 3, generator=generator, device=points.device)
    xyz = points[..., :3] * factors
    if C < 6:
        return torch.cat([xyz, points[..., 3:]], dim=-1)
    # Normals transform with the inverse transpose: n / s, renormalized.
    normals = torch.nn.functional.normalize(points[..., 3:6] / factors, dim=-1)
    return torch.cat([xyz, normals, points[..., 6:]], dim=-1)


def collate_padded(items: Sequence[Dict[str, Tensor]]) -> Dict[str, Tensor]:
    """Stack item dicts; clouds with different point counts are zero-padded with a ``"mask"``.

    Shapes:
        ``points`` (B, N_max, C), ``parts`` (B, N_max) (padding -1), ``mask`` (B, N_max) bool,
        scalars (B,).
    """
    sizes = [item["points"].shape[0] for item in items]
    batch: Dict[str, Tensor] = {}
    for key in items[0]:
        values = [torch.as_tensor(item[key]) for item in items]
        if values[0].dim() == 0 or len(set(sizes)) == 1:
            batch[key] = torch.stack(values)
        else:
            fill = -1 if key == "parts" else 0
            batch[key] = torch.nn.utils.rnn.pad_sequence(values, batch_first=True, padding_value=fill)
    if len(set(sizes)) > 1:
        batch["mask"] = torch.arange(max(sizes)).unsqueeze(0) < torch.tensor(sizes).unsqueeze(1)
    return batch


def build_dataset(
    name: str,
    split: str,
    root: Optional[PathLike] = None,
    num_points: Optional[int] = 1024,
    use_normals: bool = False,
    **options: Any,
) -> Dataset:
    """Construct a dataset by name with clouds normalized to the unit sphere.

    Args:
        name: one of ``modelnet40``, ``modelnet10``, ``shapenetpart``, ``synthetic``.
        split: dataset split (``train``, ``val``, ``test``, and ``trainval`` for the real datasets).
        root: data folder (not needed for ``synthetic``).
        num_points: points per cloud (``None`` keeps whole ShapeNetPart clouds).
        use_normals: xyz + normals input.
        **options: further keyword arguments of the dataset class (e.g. ``cache_dir``, ``seed``).
    """
    from pointea.data.transforms import NormalizeUnitSphere

    common = dict(split=split, use_normals=use_normals, transform=NormalizeUnitSphere(), **options)
    if name == "synthetic":
        from pointea.data.synthetic import SyntheticShapes

        return SyntheticShapes(num_points=num_points or 1024, **common)
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASET_NAMES)}")
    if root is None:
        raise ValueError(f"dataset {name!r} needs a data root (--data-root DIR)")
    if name == "shapenetpart":
        from pointea.data.shapenetpart import ShapeNetPart

        return ShapeNetPart(root, num_points=num_points, **common)
    from pointea.data.modelnet import ModelNet10, ModelNet40

    cls = ModelNet40 if name == "modelnet40" else ModelNet10
    return cls(root, num_points=num_points or 1024, **common)


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
    name = dataset or meta.get("name")
    if name is None:
        raise ValueError(
            f"checkpoint {checkpoint} records no dataset name; pass dataset= one of {', '.join(DATASET_NAMES)}"
        )
    num_points = num_points or meta.get("num_points")  # None keeps whole ShapeNetPart clouds
    # Same dataset as in training: reuse its options (val holdout, seeds) and, by default, its root.
    data_config = (meta["config"].get("data") or {}) if name == meta.get("name") else {}
    options = dataset_options(name, data_config, split)
    if data_root is None and data_config.get("root") and name != "synthetic":
        data_root = data_config["root"]
        if not Path(data_root).exists():
            raise FileNotFoundError(
                f"the data root recorded in checkpoint {checkpoint} ({data_root}) does not exist here; "
                "pass the dataset folder (--data-root DIR, or data_root= in Python)"
            )
    class_names = meta.get("classes") if model.config.task == "classification" else None
    _check_classes_early(model, class_names, name, checkpoint)
    use_normals = model.config.in_channels >= 6
    data = build_dataset(name, split, data_root, num_points=num_points, use_normals=use_normals, **options)
    logger.info("evaluating %s on %s (%d clouds)", checkpoint, data, len(data))
    result = evaluate_model(model, data, batch_size=batch_size, device=device, votes=votes, seed=seed,
                            class_names=class_names)
    return {"checkpoint": str(checkpoint), "dataset": name, "split": split, "num_points": num_points, **result}


def _check_classes_early(model: nn.Module, class_names: Optional[Sequence[str]], name: str,
                         checkpoint: PathLike) -> None:
    """Refuse a classifier that cannot be evaluated on dataset ``name`` before its shapes are read."""
    expected = dataset_class_names(name)
    if model.config.task != "classification" or expected is None:
        return
    if class_names is not None:
        map_classes_by_name(class_names, expected, name)
    elif model.config.num_classes != len(expected):
        raise ValueError(
            f"the model predicts {model.config.num_classes} classes but {name} has {len(expected)}, "
            f"and checkpoint {checkpoint} records no class names to map them by"
        )


def dataset_options(name: str, data_config: Dict[str, Any], split: str) -> Dict[str, Any]:
    """Dataset keyword arguments from a run's ``data`` config.

    Training builds its splits with these and evaluation rebuilds them from the checkpoint, so
    that evaluating the ``val`` split holds out exactly the clouds training held out.

    Args:
        name: dataset name.
        data_config: a ``DataConfig`` as a dict, e.g. the ``"data"`` section of a checkpoint's
            ``"config"`` (may be empty: missing keys take the ``DataConfig`` defaults).
        split: the split to build.
    """
    split_seed = data_config.get("split_seed", 0)
    if name == "synthetic":
        options: Dict[str, Any] = {"seed": split_seed}
        num_samples = data_config.get("num_samples")
        if num_samples is not None:  # val and test sets scale with the train size
            options["num_samples"] = num_samples if split == "train" else max(1, num_samples // 4)
        return options
    options = {"cache_dir": data_config.get("cache_dir")}
    if name == "shapenetpart":
        options.update(categories=data_config.get("categories"), seed=split_seed)
    elif name in ("modelnet40", "modelnet10"):
        options.update(val_fraction=data_config.get("val_fraction", 0.1), split_seed=split_seed)
    return options


def _forward(model: nn.Module, points: Tensor, category: Optional[Tensor], mask: Optional[Tensor]) -> Tensor:
    if category is None:
        return model(points, mask=mask)
    return model(points, category, mask=mask)


def _update(meter, outputs: Tensor, targets: Tensor, category: Optional[Tensor], mask: Optional[Tensor],
            lookup: Optional[Tensor] = None) -> None:
    if category is None:  # argmax over all the model's classes, then map by name
        meter.update(outputs if lookup is None else lookup[outputs.argmax(dim=-1)], targets)
    else:  # padded points carry part -1 and are masked out
        meter.update(outputs, targets.clamp(min=0), category, mask=mask)


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


def _check_compatible(model: nn.Module, dataset: Dataset, by_name: bool = False) -> None:
    config = model.config
    in_channels = getattr(dataset, "in_channels", None)
    if in_channels is not None and in_channels != config.in_channels:
        raise ValueError(
            f"the model takes {config.in_channels} input channels but the dataset gives {in_channels} "
            "(use_normals must match training)"
        )
    if config.task == "classification":
        count = getattr(dataset, "num_classes", None)
        if not by_name and count is not None and count != config.num_classes:
            raise ValueError(f"the model predicts {config.num_classes} classes but the dataset has {count}")
    else:
        parts = getattr(dataset, "category_parts", None)
        if parts is None:
            raise ValueError(
                f"the model segments parts but {type(dataset).__name__} has no part labels; "
                "evaluate it on shapenetpart or synthetic"
            )
        if [list(p) for p in parts] != [list(p) for p in config.category_parts]:
            raise ValueError("the dataset's category/part table differs from the one the model was trained with")


def _names(dataset: Dataset, task: str) -> Optional[List[str]]:
    if task == "classification":
        names = getattr(dataset, "classes", None)
    else:
        names = getattr(dataset, "categories", None)
    return list(names) if names is not None else None


def _named(metrics: Dict[str, Any], names: Optional[List[str]], task: str) -> Dict[str, Any]:
    """Key per-class / per-category lists by name when names are known."""
    if names is None:
        return metrics
    out = dict(metrics)
    if task == "classification":
        out["per_class_accuracy"] = dict(zip(names, metrics["per_class_accuracy"]))
        out["classes"] = names
    else:
        out["per_category_iou"] = dict(zip(names, metrics["per_category_iou"]))
        out["per_category_count"] = dict(zip(names, metrics["per_category_count"]))
        out["categories"] = names
    return out
