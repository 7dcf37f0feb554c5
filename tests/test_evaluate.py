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


# --------------------------------------------------------------------------- cross-dataset, by name


def write_modelnet10_folders(root, counts):
    """``root/ModelNet10/<class>/test/<class>_<NNNN>.npy`` (the real folder layout); counts: {class: n}."""
    rng = np.random.default_rng(0)
    for name, count in counts.items():
        folder = root / "ModelNet10" / name / "test"
        folder.mkdir(parents=True)
        for number in range(1, count + 1):
            np.save(folder / f"{name}_{number:04d}.npy", rng.uniform(-1, 1, (40, 3)).astype(np.float32))


def save_modelnet40_checkpoint(path, model, classes):
    from pointea.engine.checkpoint import save_checkpoint
    from pointea.models import model_config_to_dict

    dataset = {"name": "modelnet40", "task": "classification", "in_channels": 3, "num_points": 32}
    if classes is not None:
        dataset["classes"] = list(classes)
    return save_checkpoint(path, {"model_config": model_config_to_dict(model.config), "model": model.state_dict(),
                                  "dataset": dataset, "config": {"data": {"name": "modelnet40"}}})


MN10_COUNTS = {"bed": 2, "chair": 3, "toilet": 2}


def test_modelnet40_weights_on_modelnet10_map_classes_by_name(tmp_path, monkeypatch):
    from pointea.data.modelnet import MODELNET10_CLASSES, MODELNET40_CLASSES, ModelNet10
    from pointea.data.transforms import NormalizeUnitSphere
    from pointea.engine.evaluate import evaluate

    monkeypatch.setenv("POINTEA_CACHE", str(tmp_path / "cache"))
    write_modelnet10_folders(tmp_path, MN10_COUNTS)
    model = tiny_classifier(num_classes=40)
    with torch.no_grad():  # "chair": index 8 of ModelNet40, 2 of ModelNet10
        model.head.mlp[4].bias[MODELNET40_CLASSES.index("chair")] = 100.0
    path = save_modelnet40_checkpoint(tmp_path / "mn40.pt", model, MODELNET40_CLASSES)
    result = evaluate(path, dataset="modelnet10", data_root=tmp_path, device="cpu", batch_size=3)

    data = ModelNet10(tmp_path, split="test", num_points=32, transform=NormalizeUnitSphere())
    clouds = torch.stack([data[i]["points"] for i in range(len(data))])  # (7, 32, 3)
    with torch.no_grad():  # argmax over the 40 classes, then each name to its ModelNet10 index or "other"
        predicted = [MODELNET40_CLASSES[i] for i in model(clouds).argmax(1).tolist()]
    columns = list(MODELNET10_CLASSES) + ["other"]
    expected = np.zeros((10, 11), dtype=int)
    for label, name in zip(data.labels.tolist(), predicted):
        expected[label, columns.index(name) if name in columns else 10] += 1
    assert result["class_mapping"] == "name" and result["model_num_classes"] == 40
    assert result["classes"] == list(MODELNET10_CLASSES) and result["confusion_columns"] == columns
    assert np.array_equal(result["confusion_matrix"], expected)  # 10 rows summing to the class counts
    assert result["num_samples"] == 7 and result["outside_predictions"] == expected[:, 10].sum()
    assert result["overall_accuracy"] == pytest.approx(100 * np.trace(expected) / 7)
    for name, count in MN10_COUNTS.items():
        row = MODELNET10_CLASSES.index(name)
        assert result["per_class_accuracy"][name] == pytest.approx(100 * expected[row, row] / count)
    assert result["per_class_accuracy"]["sofa"] is None  # no test shape
    assert [row[2] for row in result["confusion_matrix"]] == [0, 2, 3, 0, 0, 0, 0, 0, 0, 2]
    assert result["per_class_accuracy"]["chair"] == 100.0 and result["overall_accuracy"] == pytest.approx(300 / 7)
    present = [result["per_class_accuracy"][name] for name in MN10_COUNTS]
    assert result["mean_class_accuracy"] == pytest.approx(np.mean(present))


def test_eval_command_on_a_class_subset_counts_outside_predictions_wrong(tmp_path, monkeypatch, capsys):
    from pointea.data.modelnet import MODELNET10_CLASSES, MODELNET40_CLASSES

    monkeypatch.setenv("POINTEA_CACHE", str(tmp_path / "cache"))
    write_modelnet10_folders(tmp_path, MN10_COUNTS)
    model = tiny_classifier(num_classes=40)
    last = model.head.mlp[4]  # logits = bias: "airplane" (not in ModelNet10) beats "chair" for every cloud
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[MODELNET40_CLASSES.index("airplane")] = 2.0
        last.bias[MODELNET40_CLASSES.index("chair")] = 1.0
    path = save_modelnet40_checkpoint(tmp_path / "mn40.pt", model, MODELNET40_CLASSES)
    out = tmp_path / "mn10.json"
    argv = ["--checkpoint", str(path), "--dataset", "modelnet10", "--data-root", str(tmp_path),
            "--out", str(out), "--device", "cpu", "--votes", "2"]  # --split defaults to test
    assert run_eval_cli(argv) == 0
    metrics = json.loads(out.read_text())
    assert metrics["split"] == "test" and metrics["overall_accuracy"] == 0.0  # chair shapes too: argmax first
    assert metrics["outside_predictions"] == 7 and metrics["vote"]["outside_predictions"] == 7
    counts = [MN10_COUNTS.get(name, 0) for name in MODELNET10_CLASSES]
    assert [row[-1] for row in metrics["confusion_matrix"]] == counts
    assert [sum(row) for row in metrics["vote"]["confusion_matrix"]] == counts
    with open(tmp_path / "mn10_confusion.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][1:] == list(MODELNET10_CLASSES) + ["other"] and len(rows) == 11
    assert (tmp_path / "mn10_confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert "mapped by name: the model's 40 onto the dataset's 10; 7 predictions outside" in capsys.readouterr().out


def test_classes_that_do_not_fit_are_refused_before_reading_any_shape(tmp_path):
    from pointea.data.modelnet import MODELNET40_CLASSES
    from pointea.engine.evaluate import evaluate

    model = tiny_classifier(num_classes=40)
    renamed = [f"class{i}" if name in ("bed", "toilet") else name for i, name in enumerate(MODELNET40_CLASSES)]
    path = save_modelnet40_checkpoint(tmp_path / "renamed.pt", model, renamed)
    absent = tmp_path / "no-data-here"  # reading any shape would fail with FileNotFoundError
    with pytest.raises(ValueError, match=r"predicts 40 classes but modelnet10 has 10 .*no class 'bed', 'toilet'$"):
        evaluate(path, dataset="modelnet10", data_root=absent, device="cpu")
    unnamed = save_modelnet40_checkpoint(tmp_path / "unnamed.pt", model, None)
    refused = r"predicts 40 classes but modelnet10 has 10, .*unnamed\.pt records no class names"
    with pytest.raises(ValueError, match=refused):
        evaluate(unnamed, dataset="modelnet10", data_root=absent, device="cpu")
