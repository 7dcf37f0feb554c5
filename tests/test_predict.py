import argparse
import json

import numpy as np
import pytest
import torch

from pointea.commands import predict as predict_command
from pointea.data.io import read_labeled_point_cloud, write_point_cloud
from pointea.data.synthetic import SyntheticShapes
from pointea.engine.checkpoint import load_model, save_checkpoint
from pointea.engine.predict import predict_files, sample_indices
from pointea.models import build_model, model_config_to_dict

NUM_POINTS = 64


@pytest.fixture(scope="module")
def shapes():
    return SyntheticShapes("test", num_points=300, num_samples=1, use_normals=True)


def save_tiny(path, shapes, task):
    torch.manual_seed(0)
    common = dict(embed_dims=(16, 32), head_dims=(16,))
    if task == "classification":
        model = build_model("pointnet-cls", num_classes=shapes.num_classes, **common)
        dataset = {"name": "synthetic", "task": task, "classes": shapes.classes}
    else:
        model = build_model("pointnet-partseg", category_parts=shapes.category_parts, category_dim=8, **common)
        dataset = {"name": "synthetic", "task": task, "categories": shapes.categories,
                   "category_parts": shapes.category_parts, "part_names": shapes.part_names}
    dataset.update(in_channels=3, num_points=NUM_POINTS)
    state = {"model_config": model_config_to_dict(model.config), "model": model.state_dict(), "dataset": dataset}
    return save_checkpoint(path, state)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, shapes):
    return save_tiny(tmp_path_factory.mktemp("cls") / "cls.pt", shapes, "classification")


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory, shapes):
    return save_tiny(tmp_path_factory.mktemp("seg") / "seg.pt", shapes, "segmentation")


def write_ascii_pcd(path, points):
    header = (
        "# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"
        f"WIDTH {len(points)}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {len(points)}\nDATA ascii\n"
    )
    path.write_text(header + "\n".join(" ".join(f"{v:.6f}" for v in row) for row in points) + "\n")


def test_files_in_several_formats_and_one_unreadable(tmp_path, classifier, shapes):
    cloud = shapes.points[3, :, :3].numpy()  # a cylinder
    folder = tmp_path / "scans"
    (folder / "nested").mkdir(parents=True)
    write_point_cloud(folder / "a.ply", cloud)
    write_point_cloud(folder / "nested" / "b.xyz", cloud * 5 + 3)  # another scale and position
    np.save(folder / "c.npy", cloud)
    write_ascii_pcd(folder / "d.pcd", cloud)
    (folder / "broken.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1000\n")
    (folder / "notes.md").write_text("not a cloud")  # unsupported suffixes are skipped in folders

    results = predict_files([folder], classifier, topk=3)
    by_name = {r["file"].split("/")[-1]: r for r in results}
    assert sorted(by_name) == ["a.ply", "b.xyz", "broken.ply", "c.npy", "d.pcd"]
    assert "broken.ply" in by_name["broken.ply"]["error"]
    reference = by_name["a.ply"]["predictions"]
    assert len(reference) == 3
    probabilities = [p["probability"] for p in reference]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6
    assert reference[0]["class"] == shapes.classes[reference[0]["index"]]
    for name in ("b.xyz", "c.npy", "d.pcd"):  # same shape: same answer whatever format, scale, position
        assert [p["index"] for p in by_name[name]["predictions"]] == [p["index"] for p in reference]
        assert [p["probability"] for p in by_name[name]["predictions"]] == pytest.approx(probabilities, abs=1e-4)


def test_prediction_is_deterministic_and_handles_small_clouds(tmp_path, classifier, shapes):
    write_point_cloud(tmp_path / "small.ply", shapes.points[0, :20, :3].numpy())  # fewer than 64 points
    first = predict_files([tmp_path / "small.ply"], classifier)
    second = predict_files([tmp_path / "small.ply"], classifier)
    assert first == second and "predictions" in first[0]
    assert first[0]["num_points"] == 20
    indices = sample_indices(20, NUM_POINTS)
    assert len(indices) == NUM_POINTS and set(indices.tolist()) == set(range(20))
    assert len(set(sample_indices(500, NUM_POINTS).tolist())) == NUM_POINTS


def test_clouds_far_from_the_origin_predict_as_at_the_origin(tmp_path, classifier, shapes):
    cloud = shapes.points[0, :, :3].numpy().astype(np.float64)
    np.savetxt(tmp_path / "here.xyz", cloud, fmt="%.9f")
    np.savetxt(tmp_path / "utm.xyz", cloud + [4.5e6, 5.3e6, 120.0], fmt="%.9f")  # float32 steps: 0.5 m
    here, utm = predict_files([tmp_path / "here.xyz", tmp_path / "utm.xyz"], classifier, topk=3)
    assert [p["class"] for p in utm["predictions"]] == [p["class"] for p in here["predictions"]]
    for a, b in zip(utm["predictions"], here["predictions"]):
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-4)


def test_missing_path_is_reported(tmp_path, classifier):
    results = predict_files([tmp_path / "absent.ply"], classifier)
    assert "absent.ply" in results[0]["error"]


def test_segmentation_writes_coloured_labelled_ply(tmp_path, segmenter, shapes):
    chair = shapes.categories.index("chair")
    cloud = shapes.points[chair, :NUM_POINTS, :3].numpy()  # exactly num_points: every point is predicted
    write_point_cloud(tmp_path / "chair.xyz", cloud)
    big = shapes.points[chair, :, :3].numpy()
    write_point_cloud(tmp_path / "chair_big.ply", big)

    results = predict_files([tmp_path / "chair.xyz", tmp_path / "chair_big.ply"], segmenter,
                            category="Chair", out_dir=tmp_path / "out")
    small, large = results
    assert small["category"] == "chair"
    model, _ = load_model(segmenter)
    x = torch.from_numpy(cloud)
    x = (x - x.mean(0)) / (x - x.mean(0)).norm(dim=1).max()
    category = torch.tensor([chair])
    with torch.no_grad():
        expected = model.restrict_to_category(model(x[None], category), category).argmax(-1)[0].numpy()
    np.testing.assert_array_equal(small["labels"], expected)

    points, labels = read_labeled_point_cloud(large["output"])
    assert len(labels) == len(big) == large["num_points"]
    np.testing.assert_allclose(points[:, :3], big, atol=1e-6)
    assert set(labels.tolist()) <= set(shapes.category_parts[chair])
    assert sum(large["part_counts"].values()) == len(big)
    assert all(name.startswith("chair/") for name in large["part_counts"])
    assert b"red" in open(large["output"], "rb").read(400)


def test_segmentation_needs_a_known_category(tmp_path, segmenter):
    with pytest.raises(ValueError, match="needs the object category.*chair"):
        predict_files([tmp_path], segmenter)
    with pytest.raises(ValueError, match="unknown category 'Sofa'.*mug"):
        predict_files([tmp_path], segmenter, category="Sofa")


def run_cli(argv):
    parser = argparse.ArgumentParser()
    predict_command.add_parser(parser.add_subparsers())
    return predict_command.run(parser.parse_args(["predict"] + argv))


def test_cli_reports_failures_and_writes_json(tmp_path, classifier, shapes, capsys):
    write_point_cloud(tmp_path / "good.ply", shapes.points[1, :, :3].numpy())
    (tmp_path / "bad.xyz").write_text("1 2\n3 4 5 6 7\n")
    out = tmp_path / "preds.json"
    code = run_cli([str(tmp_path / "good.ply"), str(tmp_path / "bad.xyz"), "--checkpoint", str(classifier),
                    "--topk", "2", "--out", str(out), "--device", "cpu"])
    assert code == 1
    written = json.loads(out.read_text())
    assert len(written[str(tmp_path / "good.ply")]["predictions"]) == 2
    assert "bad.xyz" in written[str(tmp_path / "bad.xyz")]["error"]
    captured = capsys.readouterr()
    assert "good.ply:" in captured.out and "1 of 2 files failed" in captured.err


def test_cli_segmentation_requires_out_dir(tmp_path, segmenter, capsys):
    assert run_cli([str(tmp_path), "--checkpoint", str(segmenter), "--category", "chair"]) == 2
    assert "--out-dir" in capsys.readouterr().err


def test_checkpoint_trained_on_whole_clouds_predicts_every_point(tmp_path, segmenter, shapes):
    from pointea.engine.predict import predict_points

    model, meta = load_model(segmenter)
    meta = {**meta, "num_points": None}  # as recorded for a run on whole ShapeNetPart clouds
    chair = shapes.categories.index("chair")
    cloud = shapes.points[chair, :123, :3].numpy()
    result = predict_points(cloud, model, meta, category="chair")
    x = torch.from_numpy(cloud)
    x = (x - x.mean(0)) / (x - x.mean(0)).norm(dim=1).max()
    category = torch.tensor([chair])
    with torch.no_grad():
        expected = model.restrict_to_category(model(x[None], category), category).argmax(-1)[0].numpy()
    np.testing.assert_array_equal(result["labels"], expected)  # all 123 points, no resampling
