"""The ShapeNetPart recipe end to end: train, evaluate and predict with its own model and optimizer
settings, on the procedural parts data and on the real ShapeNetPart shapes in ../shared/data.

Only the length of the run (epochs, batch, points, workers) is shortened; the published model,
optimizer, schedule shape and augmentation stay as shipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pointea.cli import main as cli_main
from pointea.config import load_config
from pointea.data.io import read_labeled_point_cloud, read_point_cloud
from pointea.engine.train import train

REAL_V0 = "shapenetcore_partanno_segmentation_benchmark_v0"
SHORT_RUN = ["train.epochs=2", "train.warmup_epochs=1", "train.batch_size=4", "train.num_workers=0",
             "train.progress=false", "train.threads=2"]


def test_shapenetpart_recipe_follows_the_published_settings():
    config = load_config("shapenetpart-partseg")
    assert config.data.name == "shapenetpart" and config.data.num_points == 2048
    assert config.model.preset == "pointea-partseg"
    assert (config.train.epochs, config.train.batch_size, config.train.optimizer) == (250, 32, "sgd")
    assert [aug["name"] for aug in config.train.augmentation] == ["scale_translate"]


def check_run(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    for key in ("instance_miou", "class_miou"):
        assert 0.0 <= metrics["best"][key] <= 100.0
    return metrics


def test_shapenetpart_recipe_on_procedural_parts(tmp_path):
    run_dir = tmp_path / "run"
    config = load_config("shapenetpart-partseg", ["data.name=synthetic", "data.num_samples=4",
                                                  "data.num_points=256", *SHORT_RUN])
    train(config, run_dir)
    check_run(run_dir)
    best = str(run_dir / "checkpoints" / "best.pt")
    out = tmp_path / "test.json"
    assert cli_main(["eval", "--checkpoint", best, "--split", "test", "--out", str(out)]) == 0
    assert {"instance_miou", "class_miou"} <= set(json.loads(out.read_text()))


def real_shapes_with_a_val_list(shared_data: Path, tmp_path: Path) -> Path:
    """The 16 real shapes in their v0 layout, with 4 of them listed as the validation split.

    The copy in ../shared/data carries only the official train list; the synset folders are
    linked, the split lists are written here in the official format.
    """
    source = shared_data / REAL_V0
    root = tmp_path / "data" / REAL_V0
    (root / "train_test_split").mkdir(parents=True)
    for entry in source.iterdir():
        if entry.name != "train_test_split":
            (root / entry.name).symlink_to(entry)
    shapes = json.loads((source / "train_test_split" / "shuffled_train_file_list.json").read_text())
    lists = {"train": shapes[4:], "val": shapes[:4], "test": shapes[:4]}
    for split, names in lists.items():
        (root / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(json.dumps(names))
    return root.parent


@pytest.mark.realdata(REAL_V0)
def test_shapenetpart_recipe_on_the_real_shapes(tmp_path, shared_data):
    data_root = real_shapes_with_a_val_list(shared_data, tmp_path)
    run_dir = tmp_path / "run"
    config = load_config("shapenetpart-partseg", [f"data.root={data_root}", f"data.cache_dir={tmp_path / 'cache'}",
                                                  *SHORT_RUN])
    train(config, run_dir)
    check_run(run_dir)
    best = str(run_dir / "checkpoints" / "best.pt")
    out = tmp_path / "val.json"
    assert cli_main(["eval", "--checkpoint", best, "--split", "val", "--data-root", str(data_root),
                     "--out", str(out)]) == 0
    assert json.loads(out.read_text())["num_samples"] == 4

    # Predict the parts of a real chair scan given as a ShapeNetPart .pts file.
    chair = next((shared_data / REAL_V0 / "03001627" / "points").glob("*.pts"))
    out_dir = tmp_path / "parts"
    assert cli_main(["predict", str(chair), "--checkpoint", best, "--category", "Chair",
                     "--out-dir", str(out_dir), "--out", str(tmp_path / "pred.json")]) == 0
    written = next(out_dir.glob("*.ply"))
    points, labels = read_labeled_point_cloud(written)
    assert len(points) == len(read_point_cloud(chair))
    assert set(labels.tolist()) <= {12, 13, 14, 15}  # Chair's global part ids
