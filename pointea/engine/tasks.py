"""The two tasks, classification and part segmentation, as small objects.

A task owns what differs between them: the model call (with or without the object category),
the loss, the metric meter and its selectable metrics, the class / part metadata a checkpoint
records, and the model sizes derived from that metadata. Training, evaluation, prediction and
export ask :func:`task_for` for the task of a model or config instead of testing strings.

    >>> task = task_for(model)                      # or task_for("segmentation"), task_for(model.config)
    >>> logits = task.forward(model, batch)         # batch: {"points", "mask"?, "category"?}
    >>> loss, correct, count = task.loss(logits, batch, smoothing=0.1)
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointea.data.catalog import dataset_names
from pointea.engine.metrics import ClassificationMeter, PartSegmentationMeter

Batch = Dict[str, Tensor]


class Task:
    """What a task does; see :class:`ClassificationTask` and :class:`SegmentationTask`."""

    name: ClassVar[str]
    target_key: ClassVar[str]  # batch key of the targets
    names_key: ClassVar[str]  # metadata key of the names indexing the model's outputs
    label_words: ClassVar[str]  # what a dataset must label for this task, for messages
    uses_category: ClassVar[bool]  # the model takes the object category as a second input
    # validation metrics best.pt may be selected on (higher is better); the first is the default
    metric_names: ClassVar[Tuple[str, ...]]

    def forward(self, model: nn.Module, batch: Batch) -> Tensor:
        """Logits of ``batch`` (padding ``"mask"`` honoured when present)."""
        raise NotImplementedError

    def loss(self, logits: Tensor, batch: Batch, smoothing: float = 0.0) -> Tuple[Tensor, Tensor, Tensor]:
        """Mean cross-entropy (with label smoothing), number of correct predictions and of predictions."""
        raise NotImplementedError

    def meter(self, model_config: Any, device: Optional[torch.device] = None, num_columns: Optional[int] = None):
        """A fresh metric meter for a model of ``model_config`` (``num_columns``: classification
        predictions mapped by name onto other columns than the model's classes)."""
        raise NotImplementedError

    def update(self, meter, outputs: Tensor, batch: Batch, lookup: Optional[Tensor] = None) -> None:
        """Add a batch's logits or probabilities to ``meter`` (``lookup``: model class -> column)."""
        raise NotImplementedError

    def metadata(self, dataset: Any) -> Dict[str, Any]:
        """The names and tables a checkpoint records from the training dataset."""
        raise NotImplementedError

    def model_sizes(self, meta: Dict[str, Any]) -> Dict[str, Any]:
        """Model config values the metadata fixes (number of classes, part table)."""
        raise NotImplementedError

    def check_dataset(self, model_config: Any, dataset: Any, by_name: bool = False) -> None:
        """Refuse a dataset the model cannot be evaluated on (ValueError saying why)."""
        in_channels = getattr(dataset, "in_channels", None)
        if in_channels is not None and in_channels != model_config.in_channels:
            raise ValueError(
                f"the model takes {model_config.in_channels} input channels but the dataset gives {in_channels} "
                "(use_normals must match training)"
            )

    def names(self, dataset: Any) -> Optional[List[str]]:
        """The dataset's class (or category) names, or None when it has none."""
        names = getattr(dataset, self.names_key, None)
        return list(names) if names is not None else None

    def named(self, metrics: Dict[str, Any], names: Optional[Sequence[str]]) -> Dict[str, Any]:
        """Key the per-class / per-category lists of ``metrics`` by name when names are known."""
        raise NotImplementedError

    @property
    def default_metric(self) -> str:
        return self.metric_names[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ClassificationTask(Task):
    """One label per cloud: logits (B, K), targets ``batch["label"]`` (B,), or soft (B, K) in training."""

    name = "classification"
    target_key = "label"
    names_key = "classes"
    label_words = "class labels"
    uses_category = False
    metric_names = ("overall_accuracy", "mean_class_accuracy")

    def forward(self, model: nn.Module, batch: Batch) -> Tensor:
        return model(batch["points"], mask=batch.get("mask"))  # (B, K)

    def loss(self, logits: Tensor, batch: Batch, smoothing: float = 0.0) -> Tuple[Tensor, Tensor, Tensor]:
        """Cross-entropy against class indices (B,) or, from mixing augmentations, soft targets
        (B, K) float: ``-sum_k t_k log p_k`` with t smoothed to ``(1 - e) t + e / K`` either way, so
        one-hot targets give exactly the hard loss. A prediction counts as correct when it is the
        target's argmax (the class with the larger share; the lower index on a tie)."""
        logits, targets = logits.float(), batch["label"]  # (B, K), (B,) or (B, K)
        if targets.is_floating_point():
            if targets.shape != logits.shape:
                raise ValueError(f"soft targets must have the logits' shape {tuple(logits.shape)}, "
                                 f"got {tuple(targets.shape)}")
            targets = targets.float()
        loss = F.cross_entropy(logits, targets, label_smoothing=smoothing)
        classes = targets.argmax(-1) if targets.is_floating_point() else targets
        return loss, (logits.argmax(-1) == classes).sum(), torch.tensor(classes.numel(), device=classes.device)

    def meter(self, model_config: Any, device: Optional[torch.device] = None,
              num_columns: Optional[int] = None) -> ClassificationMeter:
        return ClassificationMeter(num_columns or model_config.num_classes, device)

    def update(self, meter, outputs: Tensor, batch: Batch, lookup: Optional[Tensor] = None) -> None:
        # argmax over all the model's classes, then map by name
        meter.update(outputs if lookup is None else lookup[outputs.argmax(dim=-1)], batch["label"])

    def metadata(self, dataset: Any) -> Dict[str, Any]:
        return {"classes": [str(name) for name in dataset.classes]}

    def model_sizes(self, meta: Dict[str, Any]) -> Dict[str, Any]:
        return {"num_classes": len(meta["classes"])}

    def check_dataset(self, model_config: Any, dataset: Any, by_name: bool = False) -> None:
        super().check_dataset(model_config, dataset, by_name)
        count = getattr(dataset, "num_classes", None)
        if not by_name and count is not None and count != model_config.num_classes:
            raise ValueError(f"the model predicts {model_config.num_classes} classes but the dataset has {count}")

    def named(self, metrics: Dict[str, Any], names: Optional[Sequence[str]]) -> Dict[str, Any]:
        if names is None:
            return metrics
        names = list(names)
        return {**metrics, "per_class_accuracy": dict(zip(names, metrics["per_class_accuracy"])), "classes": names}


class SegmentationTask(Task):
    """One part per point, given the object category: logits (B, N, P), targets
    ``batch["parts"]`` (B, N) global part ids (-1 marks padding), ``batch["category"]`` (B,)."""

    name = "segmentation"
    target_key = "parts"
    names_key = "categories"
    label_words = "part labels"
    uses_category = True
    metric_names = ("instance_miou", "class_miou")

    def forward(self, model: nn.Module, batch: Batch) -> Tensor:
        return model(batch["points"], batch["category"], mask=batch.get("mask"))  # (B, N, P)

    def loss(self, logits: Tensor, batch: Batch, smoothing: float = 0.0) -> Tuple[Tensor, Tensor, Tensor]:
        logits = logits.float()
        B, N, P = logits.shape
        targets = batch["parts"].long()  # (B, N), -1 marks padding
        loss = F.cross_entropy(logits.reshape(B * N, P), targets.reshape(B * N), ignore_index=-1,
                               label_smoothing=smoothing)
        real = targets >= 0
        return loss, ((logits.argmax(-1) == targets) & real).sum(), real.sum()

    def meter(self, model_config: Any, device: Optional[torch.device] = None,
              num_columns: Optional[int] = None) -> PartSegmentationMeter:
        return PartSegmentationMeter(model_config.category_parts, device)

    def update(self, meter, outputs: Tensor, batch: Batch, lookup: Optional[Tensor] = None) -> None:
        # padded points carry part -1 and are masked out
        meter.update(outputs, batch["parts"].clamp(min=0), batch["category"], mask=batch.get("mask"))

    def metadata(self, dataset: Any) -> Dict[str, Any]:
        categories = [str(name) for name in dataset.categories]
        table = [[int(part) for part in parts] for parts in dataset.category_parts]
        part_names = getattr(dataset, "part_names", None)
        if part_names is None:  # the protocol makes names optional: "category/partK" by position
            part_names = [""] * (1 + max(max(parts) for parts in table))
            for name, parts in zip(categories, table):
                for k, part in enumerate(parts):
                    part_names[part] = f"{name}/part{k + 1}"
        meta = {"categories": categories, "category_parts": table, "part_names": [str(n) for n in part_names]}
        values = getattr(dataset, "part_values", None)
        if values is not None:  # the files label parts by other values (e.g. LAS classes 2, 5, 6)
            meta["part_values"] = [int(value) for value in values]
        return meta

    def model_sizes(self, meta: Dict[str, Any]) -> Dict[str, Any]:
        table = meta["category_parts"]
        return {"category_parts": table, "num_classes": len(table), "num_parts": len(meta["part_names"])}

    def check_dataset(self, model_config: Any, dataset: Any, by_name: bool = False) -> None:
        super().check_dataset(model_config, dataset, by_name)
        table = getattr(dataset, "category_parts", None)
        if table is None:
            raise ValueError(
                f"the model segments parts but {type(dataset).__name__} has no part labels; "
                f"evaluate it on {' or '.join(dataset_names(self.name))}"
            )
        if [list(p) for p in table] != [list(p) for p in model_config.category_parts]:
            raise ValueError("the dataset's category/part table differs from the one the model was trained with")

    def named(self, metrics: Dict[str, Any], names: Optional[Sequence[str]]) -> Dict[str, Any]:
        if names is None:
            return metrics
        names = list(names)
        return {**metrics,
                "per_category_iou": dict(zip(names, metrics["per_category_iou"])),
                "per_category_count": dict(zip(names, metrics["per_category_count"])),
                "categories": names}


TASKS: Dict[str, Task] = {task.name: task for task in (ClassificationTask(), SegmentationTask())}


def task_for(source: Any) -> Task:
    """The task of a name (``"classification"``), a model config or a model (``.config.task``),
    or a dict with a ``"task"`` key (a checkpoint's model config or metadata).

    Raises:
        ValueError: an unknown task name (the valid ones are listed).
    """
    if isinstance(source, Task):
        return source
    if isinstance(source, dict):
        name = source.get("task")
    elif isinstance(source, str):
        name = source
    else:
        config = getattr(source, "config", source)
        name = getattr(config, "task", None)
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    return TASKS[name]
