"""Evaluation metrics for shape classification and part segmentation (all reported in percent).

Classification: overall accuracy, mean class accuracy (mean of the per-class accuracies over the
classes present in the targets, i.e. balanced accuracy), per-class accuracy, confusion matrix
(rows = true class, columns = predicted class).

Part segmentation follows the standard ShapeNetPart convention (PointNet, PCT, ...): a shape's IoU
is the mean over the parts of *its category* of |pred ∩ true| / |pred ∪ true|, where a part absent
from both prediction and truth scores 1; instance mIoU averages the shape IoUs, class mIoU
averages the per-category means. When logits are given, the prediction is restricted to the
parts of the shape's category first.

The meters keep only count tensors (:meth:`ClassificationMeter.tensors`,
:meth:`PartSegmentationMeter.tensors`), so distributed evaluation sums them across ranks with
``all_reduce`` before ``compute()``.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor


def confusion_matrix(preds: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    """Count (true, predicted) pairs.

    Shapes:
        preds, targets: (M,) int class ids in ``[0, num_classes)``. Returns (K, K) int64 with
        rows = true class, columns = predicted class.
    """
    preds, targets = preds.reshape(-1).long(), targets.reshape(-1).long()
    if preds.shape != targets.shape:
        raise ValueError(f"preds and targets differ in size: {preds.numel()} vs {targets.numel()}")
    _check_range(targets, num_classes, "targets")
    _check_range(preds, num_classes, "preds")
    flat = targets * num_classes + preds
    counts = torch.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def per_class_accuracy(confusion: Tensor) -> Tensor:
    """Recall of each class in percent; NaN for classes absent from the targets.

    Shapes:
        confusion: (K, K) as from :func:`confusion_matrix`. Returns (K,) float64.
    """
    confusion = confusion.double()
    support = confusion.sum(dim=1)
    correct = confusion.diagonal()
    return torch.where(support > 0, 100.0 * correct / support.clamp(min=1), torch.nan)


def overall_accuracy(confusion: Tensor) -> float:
    """Fraction of correct predictions in percent (NaN when the matrix is empty)."""
    total = confusion.sum().item()
    return 100.0 * confusion.diagonal().sum().item() / total if total else float("nan")


def mean_class_accuracy(confusion: Tensor) -> float:
    """Mean of the per-class accuracies over the classes present in the targets, in percent."""
    accuracies = per_class_accuracy(confusion)
    present = accuracies[~accuracies.isnan()]
    return present.mean().item() if present.numel() else float("nan")


def shape_part_ious(
    preds: Tensor,
    targets: Tensor,
    category: Tensor,
    category_parts: Sequence[Sequence[int]],
    mask: Optional[Tensor] = None,
) -> Tensor:
    """IoU of each shape, averaged over the parts of its category (absent from both: IoU 1).

    Args:
        preds: (B, N) predicted global part ids.
        targets: (B, N) true global part ids.
        category: (B,) category index of each shape.
        category_parts: global part ids of each category.
        mask: optional (B, N) bool, True for real points (padding is ignored).

    Returns:
        (B,) float64 shape IoUs in [0, 1].
    """
    B, N = targets.shape
    num_parts = 1 + max(part for parts in category_parts for part in parts)
    device = targets.device
    if mask is None:
        mask = torch.ones(B, N, dtype=torch.bool, device=device)
    # Points predicted outside the global part range still count as wrong: map them to a spare id.
    preds = torch.where((preds >= 0) & (preds < num_parts), preds.long(), num_parts)
    _check_range(targets[mask], num_parts, "targets")
    width = num_parts + 1
    offsets = torch.arange(B, device=device).unsqueeze(1) * width  # (B, 1)

    def count(ids: Tensor) -> Tensor:  # (B, N) ids -> (B, width) counts over real points
        return torch.bincount((ids + offsets)[mask], minlength=B * width).reshape(B, width)

    pred_count = count(preds)
    true_count = count(targets.long())
    hits = torch.where(preds == targets, targets.long(), num_parts)  # spare id for misses
    intersection = count(hits)
    union = pred_count + true_count - intersection
    iou = torch.where(union > 0, intersection.double() / union.clamp(min=1), 1.0)[:, :num_parts]

    part_mask = category_part_mask(category_parts, num_parts, device)[category.long()]  # (B, P)
    return (iou * part_mask).sum(dim=1) / part_mask.sum(dim=1)


def category_part_mask(category_parts: Sequence[Sequence[int]], num_parts: int, device=None) -> Tensor:
    """(num_categories, num_parts) bool table: True where the part belongs to the category."""
    table = torch.zeros(len(category_parts), num_parts, dtype=torch.bool, device=device)
    for index, parts in enumerate(category_parts):
        table[index, list(parts)] = True
    return table


def restrict_logits_to_category(
    logits: Tensor, category: Tensor, category_parts: Sequence[Sequence[int]]
) -> Tensor:
    """Set the logits of parts outside each shape's category to -inf.

    Shapes:
        logits: (B, N, P); category: (B,). Returns (B, N, P).
    """
    B, N, P = logits.shape
    allowed = category_part_mask(category_parts, P, logits.device)[category.long()]  # (B, P)
    return logits.masked_fill(~allowed.unsqueeze(1), float("-inf"))


class ClassificationMeter:
    """Accumulates a confusion matrix over batches.

    Example::

        meter = ClassificationMeter(num_classes=40)
        for points, labels in loader:
            meter.update(model(points), labels)
        meter.compute()["overall_accuracy"]
    """

    def __init__(self, num_classes: int, device=None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.confusion.zero_()

    @torch.no_grad()
    def update(self, logits_or_preds: Tensor, targets: Tensor) -> None:
        """Add a batch: logits (B, K) (arg-maxed) or predicted ids (B,), and targets (B,)."""
        preds = logits_or_preds.argmax(dim=-1) if logits_or_preds.dim() == 2 else logits_or_preds
        self.confusion += confusion_matrix(preds, targets, self.num_classes).to(self.confusion.device)

    def tensors(self) -> List[Tensor]:
        """The count tensors; summing them across ranks (``all_reduce``) merges the meters."""
        return [self.confusion]

    def compute(self) -> Dict[str, object]:
        """Metrics in percent.

        Returns:
            ``overall_accuracy``, ``mean_class_accuracy`` (floats), ``per_class_accuracy`` (list,
            None for classes absent from the targets), ``confusion_matrix`` (list of lists; rows =
            true class), ``num_samples``.
        """
        confusion = self.confusion.cpu()
        return {
            "overall_accuracy": overall_accuracy(confusion),
            "mean_class_accuracy": mean_class_accuracy(confusion),
            "per_class_accuracy": _nan_to_none(per_class_accuracy(confusion)),
            "confusion_matrix": confusion.tolist(),
            "num_samples": int(confusion.sum()),
        }


class PartSegmentationMeter:
    """Accumulates per-category sums of shape IoUs for instance and class mIoU.

    Example::

        meter = PartSegmentationMeter(dataset.category_parts)
        for batch in loader:
            meter.update(model(batch["points"], batch["category"]), batch["parts"], batch["category"])
        meter.compute()["instance_miou"]
    """

    def __init__(self, category_parts: Sequence[Sequence[int]], device=None) -> None:
        if not category_parts or any(len(parts) == 0 for parts in category_parts):
            raise ValueError("category_parts must list at least one part id for every category")
        self.category_parts = [list(parts) for parts in category_parts]
        self.num_parts = 1 + max(part for parts in self.category_parts for part in parts)
        num_categories = len(self.category_parts)
        self.iou_sum = torch.zeros(num_categories, dtype=torch.float64, device=device)
        self.shape_count = torch.zeros(num_categories, dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.iou_sum.zero_()
        self.shape_count.zero_()

    @torch.no_grad()
    def update(
        self,
        logits_or_preds: Tensor,
        targets: Tensor,
        category: Tensor,
        mask: Optional[Tensor] = None,
    ) -> None:
        """Add a batch.

        Args:
            logits_or_preds: (B, N, P) logits (restricted to the category's parts, then
                arg-maxed) or (B, N) predicted global part ids.
            targets: (B, N) true global part ids.
            category: (B,) category index of each shape.
            mask: optional (B, N) bool, True for real points.
        """
        if logits_or_preds.dim() == 3:
            restricted = restrict_logits_to_category(logits_or_preds, category, self.category_parts)
            preds = restricted.argmax(dim=-1)
        else:
            preds = logits_or_preds
        _check_range(category, len(self.category_parts), "category")
        ious = shape_part_ious(preds, targets, category, self.category_parts, mask)
        category = category.long().to(self.iou_sum.device)
        self.iou_sum.index_add_(0, category, ious.to(self.iou_sum.device))
        self.shape_count.index_add_(0, category, torch.ones_like(category))

    def tensors(self) -> List[Tensor]:
        """The accumulated tensors; summing them across ranks (``all_reduce``) merges the meters."""
        return [self.iou_sum, self.shape_count]

    def compute(self) -> Dict[str, object]:
        """Metrics in percent.

        Returns:
            ``instance_miou``, ``class_miou`` (mean over categories with at least one shape),
            ``per_category_iou`` (list, None for categories without shapes),
            ``per_category_count``, ``num_samples``.
        """
        iou_sum, count = self.iou_sum.cpu(), self.shape_count.cpu()
        total = int(count.sum())
        per_category = torch.where(count > 0, 100.0 * iou_sum / count.clamp(min=1), torch.nan)
        present = per_category[count > 0]
        return {
            "instance_miou": 100.0 * iou_sum.sum().item() / total if total else float("nan"),
            "class_miou": present.mean().item() if present.numel() else float("nan"),
            "per_category_iou": _nan_to_none(per_category),
            "per_category_count": count.tolist(),
            "num_samples": total,
        }


def _check_range(ids: Tensor, num_classes: int, name: str) -> None:
    if ids.numel() and (ids.min() < 0 or ids.max() >= num_classes):
        raise ValueError(
            f"{name} must be ids in [0, {num_classes}), got values in "
            f"[{int(ids.min())}, {int(ids.max())}]"
        )


def _nan_to_none(values: Tensor) -> List[Optional[float]]:
    return [None if value != value else value for value in values.tolist()]
