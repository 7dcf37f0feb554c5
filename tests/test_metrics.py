import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, jaccard_score

from pointea.engine import metrics
from pointea.engine.metrics import ClassificationMeter, PartSegmentationMeter

CATEGORY_PARTS = [[0, 1, 2], [3, 4], [5], [6, 7, 8, 9]]


def random_classification(seed, size=300, num_classes=7):
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, num_classes - 1, (size,), generator=generator)  # last class absent
    logits = torch.randn(size, num_classes, generator=generator)
    logits[torch.arange(size), targets] += 1.0  # better than chance, not perfect
    return logits, targets


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_meter_matches_sklearn(seed):
    logits, targets = random_classification(seed)
    meter = ClassificationMeter(7)
    for chunk in range(0, len(targets), 64):
        meter.update(logits[chunk : chunk + 64], targets[chunk : chunk + 64])
    result = meter.compute()
    preds = logits.argmax(1).numpy()
    truth = targets.numpy()
    assert result["overall_accuracy"] == pytest.approx(100 * accuracy_score(truth, preds))
    # balanced_accuracy_score averages recall over the classes present in the targets.
    assert result["mean_class_accuracy"] == pytest.approx(100 * balanced_accuracy_score(truth, preds))
    assert result["confusion_matrix"] == confusion_matrix(truth, preds, labels=range(7)).tolist()
    assert result["num_samples"] == len(truth)
    assert result["per_class_accuracy"][6] is None
    recall_0 = 100 * np.mean(preds[truth == 0] == 0)
    assert result["per_class_accuracy"][0] == pytest.approx(recall_0)


def test_classification_meter_accepts_predicted_ids_and_merges_by_summing():
    logits, targets = random_classification(3)
    full = ClassificationMeter(7)
    full.update(logits.argmax(1), targets)
    halves = [ClassificationMeter(7), ClassificationMeter(7)]
    halves[0].update(logits[:100], targets[:100])
    halves[1].update(logits[100:], targets[100:])
    for merged, other in zip(halves[0].tensors(), halves[1].tensors()):
        merged += other  # what all_reduce does across ranks
    assert halves[0].compute() == full.compute()


def test_classification_hand_made_case():
    meter = ClassificationMeter(3)
    meter.update(torch.tensor([0, 0, 1, 1, 1, 2]), torch.tensor([0, 1, 1, 1, 1, 1]))
    result = meter.compute()
    assert result["overall_accuracy"] == pytest.approx(100 * 4 / 6)
    assert result["per_class_accuracy"][:2] == pytest.approx([100.0, 60.0])
    assert result["per_class_accuracy"][2] is None
    assert result["mean_class_accuracy"] == pytest.approx(80.0)


def test_classification_rejects_out_of_range_ids():
    meter = ClassificationMeter(3)
    with pytest.raises(ValueError, match=r"targets .*\[0, 3\)"):
        meter.update(torch.tensor([0, 1]), torch.tensor([0, 3]))


def sklearn_shape_iou(pred, truth, parts):
    return jaccard_score(truth, pred, labels=parts, average="macro", zero_division=1.0)


def random_segmentation(seed, batch=24, num_points=64):
    generator = torch.Generator().manual_seed(seed)
    category = torch.randint(0, len(CATEGORY_PARTS), (batch,), generator=generator)
    targets = torch.empty(batch, num_points, dtype=torch.long)
    for b, cat in enumerate(category.tolist()):
        parts = torch.tensor(CATEGORY_PARTS[cat])
        # Use only some of the category's parts so absent-part handling is exercised.
        used = parts[: 1 + b % len(parts)]
        targets[b] = used[torch.randint(0, len(used), (num_points,), generator=generator)]
    logits = torch.randn(batch, num_points, 10, generator=generator)
    logits.scatter_add_(2, targets.unsqueeze(2), torch.full((batch, num_points, 1), 1.5))
    return logits, targets, category


@pytest.mark.parametrize("seed", [0, 1])
def test_part_segmentation_meter_matches_sklearn(seed):
    logits, targets, category = random_segmentation(seed)
    meter = PartSegmentationMeter(CATEGORY_PARTS)
    meter.update(logits[:10], targets[:10], category[:10])
    meter.update(logits[10:], targets[10:], category[10:])
    result = meter.compute()

    # Reference: restrict to the category's parts, then sklearn IoU per shape.
    shape_ious, per_category = [], {}
    for b in range(len(category)):
        parts = CATEGORY_PARTS[int(category[b])]
        pred = np.array(parts)[logits[b][:, parts].argmax(1).numpy()]
        iou = sklearn_shape_iou(pred, targets[b].numpy(), parts)
        shape_ious.append(iou)
        per_category.setdefault(int(category[b]), []).append(iou)
    assert result["instance_miou"] == pytest.approx(100 * np.mean(shape_ious))
    class_means = [np.mean(values) for values in per_category.values()]
    assert result["class_miou"] == pytest.approx(100 * np.mean(class_means))
    for cat, values in per_category.items():
        assert result["per_category_iou"][cat] == pytest.approx(100 * np.mean(values))
        assert result["per_category_count"][cat] == len(values)
    assert result["num_samples"] == len(category)


def test_part_absent_from_prediction_and_truth_scores_one():
    # Category 0 has parts 0, 1, 2; part 2 appears in neither prediction nor truth.
    truth = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 1, 1, 1]])
    iou = metrics.shape_part_ious(pred, truth, torch.tensor([0]), CATEGORY_PARTS)
    expected = (1 / 2 + 2 / 3 + 1.0) / 3
    assert iou.item() == pytest.approx(expected)
    assert iou.item() == pytest.approx(sklearn_shape_iou(pred[0].numpy(), truth[0].numpy(), [0, 1, 2]))


def test_logits_are_restricted_to_the_category_parts():
    # The largest logit points at part 9 (another category): the restricted prediction is part 1.
    logits = torch.zeros(1, 3, 10)
    logits[0, :, 9] = 10.0
    logits[0, :, 1] = 1.0
    meter = PartSegmentationMeter(CATEGORY_PARTS)
    meter.update(logits, torch.tensor([[1, 1, 1]]), torch.tensor([0]))
    assert meter.compute()["instance_miou"] == pytest.approx(100.0)

    # Predicted ids outside the category count as wrong (no restriction is applied to ids).
    ids_meter = PartSegmentationMeter(CATEGORY_PARTS)
    ids_meter.update(torch.tensor([[9, 9, 1]]), torch.tensor([[1, 1, 1]]), torch.tensor([0]))
    assert ids_meter.compute()["instance_miou"] == pytest.approx(100 * (1 / 3 + 1 + 1) / 3)


def test_part_segmentation_mask_ignores_padding():
    truth = torch.tensor([[5, 5, 0, 0]])
    pred = torch.tensor([[5, 5, 3, 3]])
    mask = torch.tensor([[True, True, False, False]])
    meter = PartSegmentationMeter(CATEGORY_PARTS)
    meter.update(pred, truth, torch.tensor([2]), mask=mask)
    result = meter.compute()
    assert result["instance_miou"] == pytest.approx(100.0)
    assert result["per_category_iou"] == [None, None, 100.0, None]
    assert result["class_miou"] == pytest.approx(100.0)


def test_part_segmentation_meters_merge_by_summing():
    logits, targets, category = random_segmentation(5)
    full = PartSegmentationMeter(CATEGORY_PARTS)
    full.update(logits, targets, category)
    first, second = PartSegmentationMeter(CATEGORY_PARTS), PartSegmentationMeter(CATEGORY_PARTS)
    first.update(logits[:7], targets[:7], category[:7])
    second.update(logits[7:], targets[7:], category[7:])
    for merged, other in zip(first.tensors(), second.tensors()):
        merged += other
    assert first.compute()["instance_miou"] == pytest.approx(full.compute()["instance_miou"])
    assert first.compute()["class_miou"] == pytest.approx(full.compute()["class_miou"])


def test_part_segmentation_rejects_bad_category():
    meter = PartSegmentationMeter(CATEGORY_PARTS)
    with pytest.raises(ValueError, match="category"):
        meter.update(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long), torch.tensor([4]))
