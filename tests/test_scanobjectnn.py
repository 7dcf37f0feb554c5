"""ScanObjectNN: fake HDF5 files in the released layout (h5_files/main_split*/...), read back."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pointea.cli import main as cli_main
from pointea.commands import download as download_command
from pointea.config import load_config
from pointea.data.download import DownloadError, download_dataset
from pointea.data.scanobjectnn import SCANOBJECTNN_CLASSES, VARIANTS, ScanObjectNN, variant_file

PER_CLASS = {"trainval": 4, "test": 2}  # shapes per class in the fake files
POINTS = 2048


def write_h5(path: Path, per_class: int, seed: int, **override) -> dict:
    """A file like the release's: data (M, 2048, 3) float32, label (M,), mask (M, 2048); returns
    the arrays written."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(15), per_class)
    rng.shuffle(labels)
    arrays = {
        "data": rng.normal(size=(len(labels), POINTS, 3)).astype(np.float32),
        "label": labels.astype(np.int64),
        "mask": np.where(rng.random((len(labels), POINTS)) < 0.3, -1, 7).astype(np.int32),
    }
    arrays.update(override)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        for name, value in arrays.items():
            if value is not None:
                handle.create_dataset(name, data=value)
    return arrays


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> tuple:
    """``DIR/ScanObjectNN/h5_files/`` holding every variant's files; returns (DIR, written arrays
    keyed by (variant, official split))."""
    root = tmp_path_factory.mktemp("data")
    written = {}
    for seed, variant in enumerate(VARIANTS):
        for official, per_class in PER_CLASS.items():
            path = root / "ScanObjectNN" / "h5_files" / variant_file(variant, official)
            written[variant, official] = write_h5(path, per_class, seed * 2 + (official == "test"))
    return root, written


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_variant_reads_its_own_files(released, variant):
    root, written = released
    folder = "main_split_nobg" if variant == "obj_only" else "main_split"
    for split, official in (("trainval", "trainval"), ("test", "test")):
        dataset = ScanObjectNN(root, split=split, variant=variant, num_points=POINTS)
        assert dataset.file.parent.name == folder
        assert dataset.file.name.startswith("training_" if split == "trainval" else "test_")
        np.testing.assert_array_equal(dataset.points.numpy(), written[variant, official]["data"])
        np.testing.assert_array_equal(dataset.labels.numpy(), written[variant, official]["label"])
    assert ScanObjectNN(root, split="test").variant == "pb_t50_rs"  # the benchmark papers report


def test_items_classes_and_mask(released):
    root, written = released
    dataset = ScanObjectNN(root, split="test", variant="obj_bg", with_mask=True)
    assert dataset.classes == ["bag", "bin", "box", "cabinet", "chair", "desk", "display", "door",
                               "shelf", "table", "bed", "pillow", "sink", "sofa", "toilet"]
    assert dataset.num_classes == 15 and dataset.in_channels == 3 and len(dataset) == 30
    item = dataset[3]
    assert item["points"].shape == (1024, 3) and item["points"].dtype == torch.float32
    assert item["label"].shape == () and item["label"].dtype == torch.int64
    stored = written["obj_bg", "test"]
    assert item["mask"].dtype == torch.int64
    np.testing.assert_array_equal(item["mask"].numpy(), stored["mask"][3, :1024])
    assert "mask" not in ScanObjectNN(root, split="test", variant="obj_bg")[3]
    assert "variant='obj_bg'" in repr(dataset) and "shapes=30" in repr(dataset)


def test_num_points_keeps_the_first_stored_points(released):
    root, written = released
    dataset = ScanObjectNN(root, split="test", num_points=100, transform=lambda item: {**item, "seen": 1})
    np.testing.assert_array_equal(dataset.points.numpy(), written["pb_t50_rs", "test"]["data"][:, :100])
    assert dataset[0]["seen"] == 1 and dataset[0]["points"].shape == (100, 3)


def test_val_is_a_deterministic_stratified_holdout_of_train(released):
    root, _ = released
    options = dict(variant="obj_only", val_fraction=0.25)
    trainval = ScanObjectNN(root, split="trainval", **options)
    train = ScanObjectNN(root, split="train", **options)
    val = ScanObjectNN(root, split="val", **options)
    assert set(train.files).isdisjoint(val.files)
    assert sorted(train.files + val.files) == sorted(trainval.files)
    assert torch.bincount(val.labels, minlength=15).tolist() == [1] * 15  # round(0.25 * 4) per class
    assert ScanObjectNN(root, split="val", **options).files == val.files
    assert ScanObjectNN(root, split="val", split_seed=1, **options).files != val.files
    # each held-out shape is the trainval shape of the same id
    row = int(val.files[0].rsplit(":", 1)[1])
    assert torch.equal(val.points[0], trainval.points[row]) and val.labels[0] == trainval.labels[row]


@pytest.mark.parametrize(
    "below", ["", "ScanObjectNN", "ScanObjectNN/h5_files", "ScanObjectNN/h5_files/main_split"]
)
def test_root_may_name_any_folder_on_the_way(released, below):
    root, written = released
    dataset = ScanObjectNN(root / below, split="test", variant="obj_bg", num_points=8)
    np.testing.assert_array_equal(dataset.points.numpy(), written["obj_bg", "test"]["data"][:, :8])


def test_main_split_without_h5_files_folder(tmp_path):
    written = write_h5(tmp_path / "ScanObjectNN" / variant_file("pb_t50_rs", "test"), 1, seed=5)
    dataset = ScanObjectNN(tmp_path, split="test", num_points=16)
    np.testing.assert_array_equal(dataset.labels.numpy(), written["label"])


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "override, problem",
    [
        ({"label": None}, "missing HDF5 dataset 'label'"),
        ({"data": np.zeros((15, POINTS, 4), np.float32)}, "expected (shapes, points, 3)"),
        ({"data": np.zeros((15, 512, 3), np.float32)}, "fewer than num_points=1024"),
        ({"label": np.r_[np.arange(14), 15]}, "label 15 at index 14 is outside the 15 classes"),
        ({"label": np.arange(14)}, "14 labels for 15 shapes"),
        ({"data": np.full((15, POINTS, 3), np.nan, np.float32)}, "NaN"),
    ],
)
def test_malformed_file_is_a_one_line_error_naming_it(tmp_path, override, problem):
    path = tmp_path / variant_file("pb_t50_rs", "test")
    write_h5(path, 1, seed=0, **override)
    with pytest.raises(ValueError) as error:
        ScanObjectNN(tmp_path, split="test")
    message = _one_line(error)
    assert str(path) in message and problem in message


def test_truncated_file_and_bad_mask(tmp_path):
    path = tmp_path / variant_file("pb_t50_rs", "test")
    write_h5(path, 1, seed=0, mask=np.zeros((15, 100), np.int32))
    assert len(ScanObjectNN(tmp_path, split="test")) == 15  # the mask is read only when asked for
    with pytest.raises(ValueError, match="'mask' has shape") as error:
        ScanObjectNN(tmp_path, split="test", with_mask=True)
    assert str(path) in _one_line(error)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or not HDF5") as error:
        ScanObjectNN(tmp_path, split="test")
    assert str(path) in _one_line(error)


def test_not_found_says_what_to_request_and_where(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        ScanObjectNN(tmp_path / "data", split="train")
    message = _one_line(error)
    expected = (tmp_path / "data" / "ScanObjectNN" / "h5_files" / "main_split"
                / "training_objectdataset_augmentedrot_scale75.h5")
    assert "does not exist" in message and str(expected) in message
    assert "hkust-vgd.github.io/scanobjectnn" in message and "h5_files.zip" in message
    assert f"pointea download scanobjectnn --data-root {tmp_path / 'data'}" in message
    with pytest.raises(DownloadError, match="on request only"):
        ScanObjectNN(tmp_path / "data", download=True)


def test_missing_variant_names_the_file_and_what_is_there(tmp_path):
    write_h5(tmp_path / "h5_files" / variant_file("obj_bg", "trainval"), 1, seed=0)
    with pytest.raises(FileNotFoundError) as error:
        ScanObjectNN(tmp_path, split="test", variant="obj_bg")
    message = _one_line(error)
    assert str(tmp_path / "h5_files" / "main_split" / "test_objectdataset.h5") in message
    assert "holds main_split/training_objectdataset.h5" in message


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"variant": "pb_t50"}, "variant must be one of obj_bg, obj_only, pb_t25"),
        ({"split": "validation"}, "split must be one of train, val, trainval, test"),
        ({"use_normals": True}, "ScanObjectNN has no normals"),
        ({"num_points": 4096}, "num_points must be at most 2048"),
        ({"num_points": 0}, "num_points must be a positive int"),
        ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
    ],
)
def test_bad_options(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ScanObjectNN(tmp_path, **kwargs)


def run_download(argv: list) -> int:
    parser = argparse.ArgumentParser(prog="pointea")
    download_command.add_parser(parser.add_subparsers(dest="command"))
    return download_command.run(parser.parse_args(argv))


def test_download_explains_the_request_and_fetches_nothing(tmp_path, capsys, monkeypatch):
    root_logger = logging.getLogger()
    monkeypatch.setattr(root_logger, "handlers", list(root_logger.handlers))  # undo basicConfig
    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: pytest.fail("must not fetch"))
    root = tmp_path / "data"
    assert run_download(["download", "scanobjectnn", "--data-root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "on request only" in err and "https://hkust-vgd.github.io/scanobjectnn/" in err
    target = root / "ScanObjectNN"
    assert f"Unpack it in {target}/ so that {target / 'h5_files' / 'main_split'}/ exists" in err
    assert not root.exists()
    assert run_download(["download", "scanobjectnn", "--data-root", str(root), "--list"]) == 0
    assert "h5_files.zip" in capsys.readouterr().out
    # unpacked where the steps say: found, and readable by the dataset
    write_h5(root / "ScanObjectNN" / "h5_files" / variant_file("pb_t50_rs", "test"), 1, seed=0)
    assert download_dataset("scanobjectnn", root) == root / "ScanObjectNN" / "h5_files" / "main_split"
    assert run_download(["download", "scanobjectnn", "--data-root", str(root)]) == 0
    assert len(ScanObjectNN(root, split="test")) == 15


def test_recipe_settings():
    config = load_config("scanobjectnn-cls")
    assert config.data.name == "scanobjectnn" and config.data.num_points == 1024
    assert config.data.resample_from == POINTS
    assert {"name": "rotate_up", "axis": "y"} in config.train.augmentation  # the scans stand on y


def test_recipe_trains_and_evaluates(tmp_path):
    root = tmp_path / "data"
    for seed, (official, per_class) in enumerate((("trainval", 3), ("test", 1))):
        write_h5(root / "ScanObjectNN" / "h5_files" / variant_file("pb_t50_rs", official), per_class, seed)
    run_dir, out = tmp_path / "run", tmp_path / "test.json"
    tiny = ["train.epochs=1", "train.warmup_epochs=0", "train.batch_size=8", "train.progress=false",
            "train.threads=1", "data.num_points=64", "data.resample_from=128",
            "model.overrides.embed_dims=[16,16]", "model.overrides.num_blocks=1",
            "model.overrides.fuse_dim=32", "model.overrides.head_dims=[32]"]
    assert cli_main(["train", "--config", "scanobjectnn-cls", "--data-root", str(root),
                     "--run-dir", str(run_dir), "--device", "cpu", *tiny]) == 0
    checkpoint = torch.load(run_dir / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)
    assert list(SCANOBJECTNN_CLASSES) == checkpoint["dataset"]["classes"]
    assert cli_main(["eval", "--checkpoint", str(run_dir / "checkpoints" / "best.pt"),
                     "--data-root", str(root), "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["dataset"] == "scanobjectnn" and result["split"] == "test"
    assert 0.0 <= result["overall_accuracy"] <= 100.0


TINY = ["train.epochs=1", "train.warmup_epochs=0", "train.batch_size=8", "train.progress=false",
        "train.threads=1", "data.num_points=64", "data.resample_from=128",
        "model.overrides.embed_dims=[16,16]", "model.overrides.num_blocks=1",
        "model.overrides.fuse_dim=32", "model.overrides.head_dims=[32]"]


def test_config_variant_trains_evaluates_and_is_checked(tmp_path, capsys):
    from pointea.data.catalog import DATASETS

    assert DATASETS["scanobjectnn"].variants == tuple(VARIANTS)  # the catalog lists the reader's variants
    assert load_config("scanobjectnn-cls").data.variant == "pb_t50_rs"
    root = tmp_path / "data"
    for seed, (official, per_class) in enumerate((("trainval", 3), ("test", 1))):  # obj_bg files only
        write_h5(root / "ScanObjectNN" / "h5_files" / variant_file("obj_bg", official), per_class, seed)
    run_dir, out = tmp_path / "run", tmp_path / "test.json"
    train = ["train", "--config", "scanobjectnn-cls", "--data-root", str(root), "--device", "cpu"]
    assert cli_main([*train, "--run-dir", str(run_dir), *TINY, "data.variant=obj_bg"]) == 0
    checkpoint = torch.load(run_dir / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)
    assert checkpoint["config"]["data"]["variant"] == "obj_bg"
    # evaluation reads the variant the run trained on (the default's files are absent)
    assert cli_main(["eval", "--checkpoint", str(run_dir), "--device", "cpu", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["num_samples"] == 15
    capsys.readouterr()
    assert cli_main([*train, "--run-dir", str(tmp_path / "r2"), *TINY, "data.variant=pb_t50"]) != 0
    err = capsys.readouterr().err
    assert "unknown scanobjectnn variant 'pb_t50'; did you mean 'pb_t50_r'" in err and "obj_only" in err
    assert cli_main(["train", "--config", "synthetic-cls", "--run-dir", str(tmp_path / "r3"),
                     "data.variant=obj_bg", *TINY[:5]]) != 0
    assert "dataset 'synthetic' has no variants, got data.variant='obj_bg'" in capsys.readouterr().err


def test_run_recorded_before_variants_existed_resumes(tmp_path):
    from pointea.engine.checkpoint import save_checkpoint

    root = tmp_path / "data"
    for seed, (official, per_class) in enumerate((("trainval", 3), ("test", 1))):
        write_h5(root / "ScanObjectNN" / "h5_files" / variant_file("pb_t50_rs", official), per_class, seed)
    run_dir = tmp_path / "run"
    assert cli_main(["train", "--config", "scanobjectnn-cls", "--data-root", str(root), "--device", "cpu",
                     "--run-dir", str(run_dir), *TINY]) == 0
    last = run_dir / "checkpoints" / "last.pt"
    state = torch.load(last, map_location="cpu", weights_only=False)
    del state["config"]["data"]["variant"]  # as an older pointea wrote it
    save_checkpoint(last, state)
    assert cli_main(["train", "--resume", str(run_dir), "train.epochs=2"]) == 0
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 2
