import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pointea.commands import predict as predict_command
from pointea.data.io import read_labeled_point_cloud, write_point_cloud
from pointea.data.synthetic import SyntheticShapes
from pointea.engine.checkpoint import load_model, save_checkpoint
from pointea.engine.predict import DEFAULT_BATCH_SIZE, predict_files, sample_indices
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


def test_broken_and_looping_links_in_a_folder_fail_loudly(tmp_path, classifier, shapes, capsys):
    folder = tmp_path / "scans"
    folder.mkdir()
    write_point_cloud(folder / "good.ply", shapes.points[1, :, :3].numpy())
    (folder / "gone.ply").symlink_to(folder / "deleted.ply")  # the target was moved away
    (folder / "loop.xyz").symlink_to(folder / "loop.xyz")
    (folder / "readme").symlink_to(folder / "nowhere")  # no cloud suffix: still skipped
    out = tmp_path / "preds.json"
    code = run_cli([str(folder), "--checkpoint", str(classifier), "--out", str(out), "--device", "cpu"])
    assert code == 1
    written = json.loads(out.read_text())
    assert sorted(Path(name).name for name in written) == ["gone.ply", "good.ply", "loop.xyz"]
    assert "predictions" in written[str(folder / "good.ply")]
    assert "symbolic link to a missing target" in written[str(folder / "gone.ply")]["error"]
    assert "symbolic link loop" in written[str(folder / "loop.xyz")]["error"]
    assert "2 of 3 files failed" in capsys.readouterr().err


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


def write_scans(folder, shapes, sizes):
    """One .ply per size, from different synthetic shapes, plus an unreadable file among them."""
    folder.mkdir()
    for i, size in enumerate(sizes):
        write_point_cloud(folder / f"scan{i:02d}.ply", shapes.points[i % len(shapes), :size, :3].numpy() * (i + 1))
    (folder / "scan03b.xyz").write_text("not numbers\nat all\n")
    return folder


def test_batched_prediction_equals_one_at_a_time(tmp_path, classifier, shapes, capsys):
    folder = write_scans(tmp_path / "scans", shapes, [300, 40, 64, 200, 300, 90, 150])
    one = predict_files([folder], classifier, topk=4, batch_size=1, progress=False)
    batched = predict_files([folder], classifier, topk=4, batch_size=3, progress=True)  # 2 full batches + 1
    assert [r["file"] for r in batched] == [r["file"] for r in one] == [str(p) for p in sorted(folder.iterdir())]
    assert "error" in batched[4] and batched[4]["file"].endswith("scan03b.xyz")  # the others still go through
    for a, b in zip(one, batched):
        if "error" in a:
            assert a == b
            continue
        assert [p["index"] for p in a["predictions"]] == [p["index"] for p in b["predictions"]]
        assert [p["probability"] for p in b["predictions"]] == pytest.approx(
            [p["probability"] for p in a["predictions"]], abs=1e-5)
    assert "predict" in capsys.readouterr().err  # the progress bar asked for
    assert predict_command.DEFAULT_BATCH_SIZE == DEFAULT_BATCH_SIZE  # the CLI default, kept in step


def test_batched_segmentation_keeps_per_file_outputs(tmp_path, segmenter, shapes):
    folder = write_scans(tmp_path / "scans", shapes, [300, 64, 120])
    model, meta = load_model(segmenter)
    for num_points in (None, NUM_POINTS):  # None: whole clouds of different sizes, batched by size
        loaded = (model, {**meta, "num_points": num_points})
        one = predict_files([folder], loaded, category="chair", batch_size=1, out_dir=tmp_path / "one")
        batched = predict_files([folder], loaded, category="chair", batch_size=8, out_dir=tmp_path / "many")
        for a, b in zip(one, batched):
            assert a.keys() == b.keys()
            if "labels" in a:
                np.testing.assert_array_equal(a["labels"], b["labels"])
                assert len(b["labels"]) == b["num_points"]
                np.testing.assert_array_equal(read_labeled_point_cloud(b["output"])[1], b["labels"])
        assert len({r["output"] for r in batched if "output" in r}) == 3


def test_degenerate_clouds_are_predicted_with_a_warning(tmp_path, classifier, shapes, capsys):
    np.savetxt(tmp_path / "same.xyz", np.tile([[1.5, -2.0, 3.0]], (50, 1)))
    np.savetxt(tmp_path / "one.xyz", [[1.0, 2.0, 3.0]])
    np.savetxt(tmp_path / "two.xyz", np.repeat([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], 10, axis=0))
    np.savetxt(tmp_path / "three.xyz", [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    write_point_cloud(tmp_path / "good.ply", shapes.points[2, :, :3].numpy())
    names = ["same.xyz", "one.xyz", "two.xyz", "three.xyz", "good.ply"]
    results = {Path(r["file"]).name: r for r in predict_files([tmp_path / n for n in names], classifier)}
    assert "all 50 points coincide" in results["same.xyz"]["warning"]
    assert "a single point" in results["one.xyz"]["warning"]
    assert "only 2 distinct positions among 20 points" in results["two.xyz"]["warning"]
    assert "warning" not in results["three.xyz"] and "warning" not in results["good.ply"]
    assert all("predictions" in r for r in results.values())

    out = tmp_path / "preds.json"
    code = run_cli([str(tmp_path / "same.xyz"), str(tmp_path / "good.ply"), "--checkpoint", str(classifier),
                    "--out", str(out), "--device", "cpu"])
    assert code == 0  # a warning, not a failure
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{tmp_path / 'same.xyz'}: ") and lines[1].startswith("  warning: degenerate cloud")
    assert lines[2].startswith(f"{tmp_path / 'good.ply'}: ")
    assert "degenerate" in json.loads(out.read_text())[str(tmp_path / "same.xyz")]["warning"]


def test_cli_names_a_failed_file_once_and_prints_read_warnings_with_its_result(
        tmp_path, classifier, shapes, capsys, monkeypatch):
    import logging

    from pointea.data import io

    read = io.read_point_cloud

    def read_with_a_warning(path, **kwargs):  # as a reader that logs about an odd file
        if Path(path).name == "a.xyz":
            logging.getLogger("pointea.data.io").warning("%s: odd header, read anyway", path)
        return read(path, **kwargs)

    monkeypatch.setattr(io, "read_point_cloud", read_with_a_warning)
    cloud = shapes.points[1, :, :3].numpy()
    np.savetxt(tmp_path / "a.xyz", cloud)
    (tmp_path / "b.xyz").write_text("1 2\n3 4 5 6 7\n")
    write_point_cloud(tmp_path / "c.ply", cloud)
    out = tmp_path / "preds.json"
    code = run_cli([str(tmp_path / n) for n in ("a.xyz", "b.xyz", "c.ply")]
                   + ["--checkpoint", str(classifier), "--device", "cpu", "--out", str(out), "--batch-size", "2"])
    assert code == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{tmp_path / 'a.xyz'}: ")
    assert lines[1] == f"  warning: {tmp_path / 'a.xyz'}: odd header, read anyway"
    assert lines[2].startswith(f"{tmp_path / 'b.xyz'}: ERROR ") and lines[2].count("b.xyz") == 1
    assert lines[3].startswith(f"{tmp_path / 'c.ply'}: ")
    assert "odd header" in json.loads(out.read_text())[str(tmp_path / "a.xyz")]["warning"]
