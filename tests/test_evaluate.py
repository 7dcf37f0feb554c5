import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from pointea.data.synthetic import SyntheticShapes
from pointea.engine.evaluate import collate_padded, evaluate_model, random_anisotropic_scale
from pointea.engine.metrics import shape_part_ious
from pointea.models import build_model

NUM_POINTS = 64


@pytest.fixture(scope="module")
def test_set():
    return SyntheticShapes("test", num_points=NUM_POINTS, num_samples=2)


def tiny_classifier(num_classes=9, in_channels=3):
    torch.manual_seed(0)
    return build_model(
        "pointnet-cls", num_classes=num_classes, in_channels=in_channels, embed_dims=(16, 32), head_dims=(16,)
    ).eval()


def tiny_segmenter(category_parts):
    torch.manual_seed(0)
    return build_model(
        "pointnet-partseg", category_parts=category_parts, embed_dims=(16, 32), head_dims=(16,), category_dim=8
    ).eval()


def test_classification_single_pass_matches_direct_forward(test_set):
    model = tiny_classifier()
    result = evaluate_model(model, test_set, batch_size=5)
    with torch.no_grad():
        preds = model(test_set.points).argmax(1)
    expected = 100 * (preds == test_set.labels).double().mean().item()
    assert result["task"] == "classification"
    assert result["num_samples"] == len(test_set) == 18
    assert result["overall_accuracy"] == pytest.approx(expected)
    assert result["classes"] == test_set.classes
    assert list(result["per_class_accuracy"]) == test_set.classes
    assert torch.tensor(result["confusion_matrix"]).sum() == 18
    assert 0 <= result["mean_class_accuracy"] <= 100
    assert "vote" not in result


def test_voting_is_reported_apart_and_reproducible(test_set):
    model = tiny_classifier()
    first = evaluate_model(model, test_set, batch_size=8, votes=3, seed=1)
    again = evaluate_model(model, test_set, batch_size=8, votes=3, seed=1)
    single = evaluate_model(model, test_set, batch_size=8)
    assert first["overall_accuracy"] == single["overall_accuracy"]
    vote = first["vote"]
    assert vote["votes"] == 3
    assert set(vote) >= {"overall_accuracy", "mean_class_accuracy", "per_class_accuracy", "confusion_matrix"}
    assert vote["num_samples"] == 18
    assert vote == again["vote"]


class RecordingClassifier(nn.Module):
    """Returns fixed logits and remembers every input batch."""

    def __init__(self, num_classes):
        super().__init__()
        self.config = build_model("pointnet-cls", num_classes=num_classes, embed_dims=(8,), head_dims=(8,)).config
        self.inputs = []

    def forward(self, points, mask=None):
        self.inputs.append(points.clone())
        return torch.zeros(points.shape[0], self.config.num_classes)


def test_voting_passes_see_the_plain_cloud_then_scaled_ones(test_set):
    model = RecordingClassifier(test_set.num_classes)
    evaluate_model(model, test_set, batch_size=len(test_set), votes=4)
    plain, *augmented = model.inputs
    assert len(augmented) == 3
    torch.testing.assert_close(plain, test_set.points)
    for other in augmented:
        ratio = other / plain  # one factor per cloud and axis, inside the voting range
        per_axis = ratio.median(dim=1).values  # (B, 3)
        assert not torch.allclose(other, plain)
        assert ((per_axis > 0.85 - 1e-4) & (per_axis < 1.15 + 1e-4)).all()
        assert per_axis.std(dim=0).min() > 0  # different clouds get different factors
    assert not torch.allclose(augmented[0], augmented[1])


def test_random_anisotropic_scale_keeps_normals_unit_and_perpendicular():
    generator = torch.Generator().manual_seed(0)
    # Points on the plane x + y + z = 1 with its normal; the scaled plane must keep a valid normal.
    uv = torch.rand(2, 50, 2, generator=generator)
    xyz = torch.stack([uv[..., 0], uv[..., 1], 1 - uv.sum(-1)], dim=-1)
    normals = torch.full_like(xyz, 3 ** -0.5)
    scaled = random_anisotropic_scale(torch.cat([xyz, normals], -1), generator)
    new_xyz, new_normals = scaled[..., :3], scaled[..., 3:]
    torch.testing.assert_close(new_normals.norm(dim=-1), torch.ones(2, 50))
    tangent = new_xyz[:, 1:] - new_xyz[:, :1]  # vectors within each scaled plane
    assert (tangent * new_normals[:, 1:]).sum(-1).abs().max() < 1e-5


def test_segmentation_metrics_match_direct_computation(test_set):
    model = tiny_segmenter(test_set.category_parts)
    result = evaluate_model(model, test_set, batch_size=7, votes=2)
    with torch.no_grad():
        logits = model(test_set.points, test_set.labels)
    preds = model.restrict_to_category(logits, test_set.labels).argmax(-1)
    ious = shape_part_ious(preds, test_set.parts, test_set.labels, test_set.category_parts)
    assert result["task"] == "segmentation"
    assert result["instance_miou"] == pytest.approx(100 * ious.mean().item())
    assert result["categories"] == test_set.categories
    assert list(result["per_category_iou"]) == test_set.categories
    assert set(result["per_category_count"].values()) == {2}
    assert {"instance_miou", "class_miou"} <= set(result["vote"])


class CloudList(torch.utils.data.Dataset):
    """Segmentation items with different point counts."""

    def __init__(self, base, sizes):
        self.items = [
            {"points": base.points[i, :n], "category": base.labels[i], "parts": base.parts[i, :n]}
            for i, n in enumerate(sizes)
        ]
        self.category_parts, self.categories, self.in_channels = base.category_parts, base.categories, 3

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def test_variable_size_clouds_are_padded_and_masked(test_set):
    data = CloudList(test_set, [64, 40, 52, 17])
    batch = collate_padded([data[0], data[1]])
    assert batch["points"].shape == (2, 64, 3) and batch["parts"][1, 40:].eq(-1).all()
    assert batch["mask"].sum(1).tolist() == [64, 40]
    model = tiny_segmenter(test_set.category_parts)
    together = evaluate_model(model, data, batch_size=4)
    one_by_one = evaluate_model(model, data, batch_size=1)
    assert together["num_samples"] == 4
    assert together["instance_miou"] == pytest.approx(one_by_one["instance_miou"], abs=1e-4)


def test_incompatible_dataset_is_rejected(test_set):
    with pytest.raises(ValueError, match="6 input channels but the dataset gives 3"):
        evaluate_model(tiny_classifier(in_channels=6), test_set)
    with pytest.raises(ValueError, match="predicts 4 classes but the dataset has 9"):
        evaluate_model(tiny_classifier(num_classes=4), test_set)


def test_segmenter_on_a_dataset_without_parts_and_empty_datasets_are_rejected(test_set):
    class Clouds(list):  # a classification dataset: classes, no part table
        num_classes = 9

    with pytest.raises(ValueError, match="segments parts but Clouds has no part labels"):
        evaluate_model(tiny_segmenter(test_set.category_parts), Clouds(test_set[i] for i in range(2)))
    with pytest.raises(ValueError, match="nothing to evaluate: .* holds no clouds"):
        evaluate_model(tiny_classifier(), Clouds())


def test_a_recorded_data_root_missing_here_asks_for_data_root(tmp_path):
    from pointea.engine.checkpoint import save_checkpoint
    from pointea.engine.evaluate import evaluate
    from pointea.models import model_config_to_dict

    model = tiny_classifier(num_classes=40)
    dataset = {"name": "modelnet40", "task": "classification", "in_channels": 3, "num_points": NUM_POINTS}
    path = save_checkpoint(tmp_path / "mn.pt", {
        "model_config": model_config_to_dict(model.config), "model": model.state_dict(), "dataset": dataset,
        "config": {"data": {"name": "modelnet40", "root": str(tmp_path / "gone")}},
    })
    with pytest.raises(FileNotFoundError, match=r"data root recorded in checkpoint .*mn\.pt .*gone.*--data-root"):
        evaluate(path, "val")


def save_synthetic_checkpoint(path, model, task, data_config):
    from pointea.engine.checkpoint import save_checkpoint
    from pointea.models import model_config_to_dict

    shapes = SyntheticShapes("val", num_points=8, num_samples=1)
    dataset = {"name": "synthetic", "task": task, "in_channels": 3, "num_points": NUM_POINTS}
    if task == "classification":
        dataset["classes"] = shapes.classes
    else:
        dataset.update(categories=shapes.categories, category_parts=shapes.category_parts, part_names=shapes.part_names)
    state = {"model_config": model_config_to_dict(model.config), "model": model.state_dict(), "dataset": dataset,
             "config": {"data": data_config}}
    return save_checkpoint(path, state)


def run_eval_cli(argv):
    import argparse

    from pointea.commands import eval as eval_command

    parser = argparse.ArgumentParser()
    eval_command.add_parser(parser.add_subparsers())
    return eval_command.run(parser.parse_args(["eval"] + argv))


def test_evaluate_checkpoint_uses_the_recorded_dataset_options(tmp_path, test_set):
    from pointea.engine.evaluate import evaluate

    model = tiny_classifier()
    path = save_synthetic_checkpoint(tmp_path / "cls.pt", model, "classification",
                                     {"name": "synthetic", "num_samples": 12, "split_seed": 0})
    result = evaluate(path, "val", device="cpu")
    assert result["num_samples"] == 9 * 3  # val holds num_samples // 4 clouds per class, as in training
    assert result["dataset"] == "synthetic" and result["split"] == "val" and result["num_points"] == NUM_POINTS
    test = evaluate(path, "test", device="cpu", batch_size=4)
    direct = evaluate_model(model, SyntheticShapes("test", num_points=NUM_POINTS, num_samples=3), batch_size=4)
    assert test["overall_accuracy"] == direct["overall_accuracy"]


def test_eval_command_writes_json_tables_and_plot(tmp_path, capsys):
    model = tiny_classifier()
    data_config = {"name": "synthetic", "num_samples": 8}
    path = save_synthetic_checkpoint(tmp_path / "cls.pt", model, "classification", data_config)
    out = tmp_path / "eval" / "test.json"
    argv = ["--checkpoint", str(path), "--split", "test", "--out", str(out), "--votes", "2", "--device", "cpu"]
    assert run_eval_cli(argv) == 0
    metrics = json.loads(out.read_text())
    assert {"overall_accuracy", "mean_class_accuracy", "confusion_matrix", "vote"} <= set(metrics)
    assert metrics["num_samples"] == 18
    with open(tmp_path / "eval" / "test_confusion.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][1:] == metrics["classes"] and len(rows) == 10
    assert sum(int(v) for row in rows[1:] for v in row[1:]) == 18
    with open(tmp_path / "eval" / "test_per_class.csv") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["class", "accuracy", "vote_accuracy"] and len(table) == 10
    assert (tmp_path / "eval" / "test_confusion.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "single pass: overall_accuracy" in printed and "2 votes" in printed


def test_eval_command_segmentation_table(tmp_path, test_set):
    model = tiny_segmenter(test_set.category_parts)
    data_config = {"name": "synthetic", "num_samples": 8}
    path = save_synthetic_checkpoint(tmp_path / "seg.pt", model, "segmentation", data_config)
    out = tmp_path / "seg.json"
    assert run_eval_cli(["--checkpoint", str(path), "--split", "test", "--out", str(out), "--device", "cpu"]) == 0
    metrics = json.loads(out.read_text())
    assert {"instance_miou", "class_miou", "per_category_iou"} <= set(metrics)
    with open(tmp_path / "seg_per_category.csv") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["category", "miou", "shapes"]
    assert [row[0] for row in table[1:]] == test_set.categories and {row[2] for row in table[1:]} == {"2"}


def test_eval_command_reports_bad_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert run_eval_cli(["--checkpoint", str(bad), "--split", "test"]) == 2
    assert str(bad) in capsys.readouterr().err


@pytest.mark.realdata("shapenetcore_partanno_segmentation_benchmark_v0")
def test_shapenetpart_whole_clouds_match_sklearn(tmp_path, shared_data):
    from sklearn.metrics import jaccard_score

    from pointea.engine.evaluate import build_dataset

    dataset = build_dataset("shapenetpart", "train", shared_data, num_points=None, cache_dir=tmp_path)
    model = tiny_segmenter(dataset.category_parts)
    result = evaluate_model(model, dataset, batch_size=len(dataset))  # one padded, masked batch
    expected = {}
    for item in dataset:
        category = item["category"].view(1)
        with torch.no_grad():
            logits = model(item["points"][None], category)
        preds = model.restrict_to_category(logits, category).argmax(-1)[0].numpy()
        parts = dataset.category_parts[int(category)]
        iou = jaccard_score(item["parts"].numpy(), preds, labels=parts, average="macro", zero_division=1.0)
        expected[dataset.categories[int(category)]] = 100 * iou
    assert result["num_samples"] == len(dataset) == 16
    assert result["instance_miou"] == pytest.approx(np.mean(list(expected.values())), abs=1e-3)
    for name, value in expected.items():  # one shape per category
        assert result["per_category_iou"][name] == pytest.approx(value, abs=1e-3)
