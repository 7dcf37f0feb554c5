"""Tests of pointea.engine.tasks against hand-computed values: forward calls, losses with label
smoothing and padding, meters and named metrics, checkpoint metadata and model sizes."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from pointea.data.catalog import TASKS as CATALOG_TASKS
from pointea.engine.tasks import TASKS, ClassificationTask, SegmentationTask, task_for

CLS, SEG = TASKS["classification"], TASKS["segmentation"]


def smoothed_cross_entropy(logits, target, smoothing):
    """-(1 - e) log p_target - e / K * sum_k log p_k, written out."""
    log_z = math.log(sum(math.exp(v) for v in logits))
    log_p = [v - log_z for v in logits]
    return -(1 - smoothing) * log_p[target] - smoothing / len(logits) * sum(log_p)


class Recorder(torch.nn.Module):
    """Returns fixed logits and records how it was called."""

    def __init__(self, logits):
        super().__init__()
        self.logits, self.calls = logits, []

    def forward(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.logits


def test_task_for_names_configs_models_and_dicts():
    assert task_for("classification") is CLS and task_for("segmentation") is SEG
    config = SimpleNamespace(task="segmentation")
    assert task_for(config) is SEG and task_for(SimpleNamespace(config=config)) is SEG
    assert task_for({"task": "classification"}) is CLS and task_for(SEG) is SEG
    with pytest.raises(ValueError, match="unknown task 'detection'; valid: classification, segmentation"):
        task_for("detection")
    assert tuple(TASKS) == CATALOG_TASKS  # the catalog's task vocabulary is the engine's
    assert isinstance(CLS, ClassificationTask) and isinstance(SEG, SegmentationTask)


def test_forward_passes_the_category_and_mask_only_where_they_belong():
    points, mask, category = torch.zeros(2, 5, 3), torch.ones(2, 5, dtype=torch.bool), torch.tensor([1, 0])
    model = Recorder(torch.zeros(2, 4))
    CLS.forward(model, {"points": points, "mask": mask, "category": category})
    SEG.forward(model, {"points": points, "category": category})
    (cls_args, cls_kwargs), (seg_args, seg_kwargs) = model.calls
    assert len(cls_args) == 1 and cls_kwargs["mask"] is mask
    assert len(seg_args) == 2 and seg_args[1] is category and seg_kwargs["mask"] is None


def test_classification_loss_with_label_smoothing_and_hits():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    batch = {"label": torch.tensor([0, 2])}
    loss, correct, count = CLS.loss(logits, batch, smoothing=0.1)
    expected = (smoothed_cross_entropy([2.0, 0.0, -1.0], 0, 0.1) + smoothed_cross_entropy([0.5, 1.5, 0.0], 2, 0.1)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert int(correct) == 1 and int(count) == 2


def test_classification_loss_against_soft_targets():
    # mixed samples: -sum_k t'_k log p_k with t' = (1 - e) t + e / K, written out per row
    rows = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]
    targets = [[0.7, 0.0, 0.3], [0.0, 0.4, 0.6]]
    smoothing = 0.1
    expected = 0.0
    for logits_row, target_row in zip(rows, targets):
        log_z = math.log(sum(math.exp(v) for v in logits_row))
        smoothed = [(1 - smoothing) * t + smoothing / 3 for t in target_row]
        expected -= sum(t * (v - log_z) for t, v in zip(smoothed, logits_row)) / 2
    loss, correct, count = CLS.loss(torch.tensor(rows), {"label": torch.tensor(targets)}, smoothing)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # accuracy against the target's argmax: classes 0 and 2, predictions 0 and 1
    assert int(correct) == 1 and int(count) == 2


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_one_hot_soft_targets_give_the_hard_loss(smoothing):
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 4, 2, 2, 1, 3])
    hard = CLS.loss(logits, {"label": labels}, smoothing)
    soft = CLS.loss(logits, {"label": torch.nn.functional.one_hot(labels, 5).float()}, smoothing)
    torch.testing.assert_close(soft[0], hard[0])
    assert int(soft[1]) == int(hard[1]) and int(soft[2]) == int(hard[2]) == 6
    with pytest.raises(ValueError, match=r"soft targets must have the logits' shape \(6, 5\), got \(6, 4\)"):
        CLS.loss(logits, {"label": torch.zeros(6, 4)}, smoothing)


def test_segmentation_loss_ignores_padding():
    logits = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [9.0, -9.0]]])  # (B=1, N=3, P=2)
    batch = {"parts": torch.tensor([[0, 0, -1]])}  # the third point is padding
    loss, correct, count = SEG.loss(logits, batch, smoothing=0.2)
    expected = (smoothed_cross_entropy([1.0, 0.0], 0, 0.2) + smoothed_cross_entropy([0.0, 2.0], 0, 0.2)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert int(correct) == 1 and int(count) == 2


def test_classification_meter_metrics_and_names():
    config = SimpleNamespace(task="classification", num_classes=3)
    meter = CLS.meter(config)
    # predictions 0, 1, 1, 2 for targets 0, 1, 2, 2
    logits = torch.eye(3)[[0, 1, 1, 2]]
    CLS.update(meter, logits, {"label": torch.tensor([0, 1, 2, 2])})
    metrics = CLS.named(meter.compute(), ["a", "b", "c"])
    assert metrics["overall_accuracy"] == pytest.approx(75.0)
    assert metrics["mean_class_accuracy"] == pytest.approx((100 + 100 + 50) / 3)
    assert metrics["per_class_accuracy"] == {"a": 100.0, "b": 100.0, "c": 50.0}
    assert metrics["classes"] == ["a", "b", "c"]
    assert CLS.metric_names == ("overall_accuracy", "mean_class_accuracy") and CLS.default_metric == "overall_accuracy"
    # by name: model classes 0, 1, 2 -> dataset columns 1, 0 and "other" (2); predictions 0, 1, 1, 2
    mapped = CLS.meter(config, num_columns=3)
    CLS.update(mapped, logits, {"label": torch.tensor([0, 1, 1, 0])}, lookup=torch.tensor([1, 0, 2]))
    assert mapped.confusion.tolist() == [[0, 1, 1], [2, 0, 0], [0, 0, 0]]  # (true, predicted) pairs


def test_segmentation_meter_restricts_to_the_category_and_skips_padding():
    config = SimpleNamespace(task="segmentation", category_parts=[[0, 1], [2]])
    meter = SEG.meter(config)
    # shape 0 (category 0): logits favour part 2, which category 0 lacks: restricted to 0/1
    logits = torch.tensor([[[0.0, 1.0, 5.0], [2.0, 0.0, 5.0], [0.0, 0.0, 0.0]]])
    batch = {"parts": torch.tensor([[1, 1, -1]]), "category": torch.tensor([0]),
             "mask": torch.tensor([[True, True, False]])}
    SEG.update(meter, logits, batch)
    metrics = SEG.named(meter.compute(), ["mug", "cap"])
    # predictions 1, 0 vs truth 1, 1: part 0 IoU 0/1 = 0, part 1 IoU 1/2 -> shape IoU 25 %
    assert metrics["instance_miou"] == pytest.approx(25.0)
    assert metrics["per_category_iou"] == {"mug": pytest.approx(25.0), "cap": None}
    assert metrics["per_category_count"] == {"mug": 1, "cap": 0} and metrics["categories"] == ["mug", "cap"]
    assert SEG.default_metric == "instance_miou"


def test_checkpoint_metadata_and_model_sizes():
    classifier_data = SimpleNamespace(classes=("box", "ball"))
    assert CLS.metadata(classifier_data) == {"classes": ["box", "ball"]}
    assert CLS.model_sizes({"classes": ["box", "ball"]}) == {"num_classes": 2}

    named = SimpleNamespace(categories=["cup", "plate"], category_parts=[[1, 0], [2]],
                            part_names=["cup/body", "cup/handle", "plate/top"])
    meta = SEG.metadata(named)
    assert meta == {"categories": ["cup", "plate"], "category_parts": [[1, 0], [2]],
                    "part_names": ["cup/body", "cup/handle", "plate/top"]}
    assert SEG.model_sizes(meta) == {"category_parts": [[1, 0], [2]], "num_classes": 2, "num_parts": 3}
    unnamed = SimpleNamespace(categories=["cup", "plate"], category_parts=[[2, 0], [1]])
    assert SEG.metadata(unnamed)["part_names"] == ["cup/part2", "plate/part1", "cup/part1"]


def test_check_dataset_refusals():
    cls_config = SimpleNamespace(task="classification", in_channels=3, num_classes=4)
    with pytest.raises(ValueError, match="takes 3 input channels but the dataset gives 6"):
        CLS.check_dataset(cls_config, SimpleNamespace(in_channels=6, num_classes=4))
    with pytest.raises(ValueError, match="predicts 4 classes but the dataset has 5"):
        CLS.check_dataset(cls_config, SimpleNamespace(in_channels=3, num_classes=5))
    CLS.check_dataset(cls_config, SimpleNamespace(in_channels=3, num_classes=5), by_name=True)
    seg_config = SimpleNamespace(task="segmentation", in_channels=3, category_parts=[[0, 1], [2]])
    with pytest.raises(ValueError, match="Namespace has no part labels; evaluate it on"):
        SEG.check_dataset(seg_config, SimpleNamespace(in_channels=3))
    with pytest.raises(ValueError, match="category/part table differs"):
        SEG.check_dataset(seg_config, SimpleNamespace(in_channels=3, category_parts=[[0], [1, 2]]))
    SEG.check_dataset(seg_config, SimpleNamespace(in_channels=3, category_parts=[[0, 1], [2]]))
