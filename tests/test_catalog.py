"""Tests of pointea.data.catalog: every entry builds on fake data and follows the dataset
protocol, names are checked with suggestions, the config accepts exactly the catalog's names, and a
dataset registered here in one entry is trained and evaluated end to end by name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from pointea.config import load_config
from pointea.data.catalog import DATASETS, DatasetSpec, build_dataset, dataset_names, get_spec
from pointea.data.orientation import UP_AXES, dataset_up_axis

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- fake data per entry


def _modelnet(name):
    def write(root):
        from test_modelnet import write_folder_layout

        classes = ("bed", "chair", "desk") if name == "ModelNet10" else ("airplane", "bed", "xbox")
        write_folder_layout(root, {c: {"train": 4, "test": 1} for c in classes}, name=name)
        return root
    return write


def _shapenetpart(root):
    from test_shapenetpart import write_hdf5_layout

    write_hdf5_layout(root, points=32)
    return root


def _scanobjectnn(root):
    from test_scanobjectnn import write_h5

    from pointea.data.scanobjectnn import variant_file

    for seed, official in enumerate(("trainval", "test")):
        write_h5(root / "ScanObjectNN" / "h5_files" / variant_file("pb_t50_rs", official), 3, seed)
    return root


def _folder_cls(root):
    from test_folder import class_folder

    return class_folder(root)


def _folder_seg(root):
    from test_folder import shapenet_pts_seg, two_part_cloud

    for split in ("train", "test"):
        for i in range(4):
            shapenet_pts_seg(root / split / "mug", f"m{i}", *two_part_cloud(50, seed=i, low=0, high=1))
            shapenet_pts_seg(root / split / "lamp", f"l{i}", *two_part_cloud(50, seed=i + 7, low=2, high=3))
    return root


# catalog name -> writer of a fake on-disk copy under a folder (None: generated, no folder)
FAKE_DATA = {
    "synthetic": None,
    "modelnet40": _modelnet("ModelNet40"),
    "modelnet10": _modelnet("ModelNet10"),
    "shapenetpart": _shapenetpart,
    "scanobjectnn": _scanobjectnn,
    "folder-cls": _folder_cls,
    "folder-seg": _folder_seg,
}


def check_protocol(dataset, spec: DatasetSpec, num_points: int) -> None:
    """The attributes and items the engine relies on (the catalog module docstring)."""
    assert len(dataset) > 0 and dataset.in_channels == 3
    item = dataset[0]
    assert item["points"].dtype == torch.float32 and item["points"].shape == (num_points, 3)
    if "classification" in spec.tasks:
        assert all(isinstance(name, str) for name in dataset.classes)
        assert dataset.num_classes == len(dataset.classes)
        assert item["label"].dtype == torch.int64 and item["label"].dim() == 0
        assert 0 <= int(item["label"]) < dataset.num_classes
    if "segmentation" in spec.tasks:
        table = dataset.category_parts
        assert len(table) == len(dataset.categories) and all(table)
        assert sorted(p for parts in table for p in parts) == list(range(dataset.num_parts))
        assert len(dataset.part_names) == dataset.num_parts
        assert item["category"].dtype == torch.int64 and item["parts"].dtype == torch.int64
        assert set(item["parts"].tolist()) <= set(table[int(item["category"])])


def test_every_entry_has_fake_data_here():
    assert sorted(DATASETS) == sorted(FAKE_DATA), "add a writer of fake data for the new entry to FAKE_DATA"


@pytest.mark.parametrize("name", sorted(FAKE_DATA))
def test_every_entry_builds_on_fake_data_and_follows_the_protocol(name, tmp_path):
    spec = get_spec(name)
    writer = FAKE_DATA[name]
    assert spec.needs_root == (writer is not None)
    root = writer(tmp_path / "data") if writer is not None else None
    config = {"num_points": 16, "cache_dir": str(tmp_path / "cache"), "num_samples": 2}
    for split in ("train", "test"):
        dataset = build_dataset(name, root, split, config)
        check_protocol(dataset, spec, 16)
    known = spec.class_names(root, config)
    if known is not None:  # the cheap list is the one the dataset reads
        assert known == list(dataset.classes)
    assert dataset_up_axis(name, spec.find_layout(root) if root is not None else None) in (*UP_AXES, None)


def test_build_dataset_passes_options_transform_and_overrides(tmp_path):
    seen = []
    dataset = build_dataset("synthetic", None, "val", {"num_samples": 8, "split_seed": 3, "num_points": None},
                            transform=lambda item: seen.append(item) or item, num_points=20)
    assert dataset.seed == 3 and len(dataset) == 9 * 2  # val gets a quarter of num_samples per class
    assert dataset.num_points == 20  # the override wins over data_config
    dataset[0]
    assert len(seen) == 1


def test_unknown_names_splits_and_missing_roots_are_one_line_errors():
    with pytest.raises(ValueError) as info:
        get_spec("modelnet4")
    message = str(info.value)
    assert "did you mean 'modelnet40' or 'modelnet10'?" in message
    assert all(name in message for name in DATASETS) and "\n" not in message
    with pytest.raises(ValueError, match="unknown dataset 'kitti' \\(valid: "):
        get_spec("kitti")
    with pytest.raises(ValueError, match="needs a data root"):
        build_dataset("shapenetpart", None, "train")
    with pytest.raises(ValueError, match="has no split 'trainval'"):
        build_dataset("synthetic", None, "trainval")
    with pytest.raises(ValueError, match="tasks must be some of"):
        DatasetSpec(name="x", tasks=("detection",), dataset_class="x:Y")


def test_importing_the_catalog_imports_no_torch():
    code = "import sys, pointea.data.catalog; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_config_accepts_exactly_the_catalog_names(monkeypatch):
    for name in DATASETS:
        assert load_config(None, [f"data.name={name}"]).data.name == name
    with pytest.raises(ValueError, match="data.name is 'toy'"):
        load_config(None, ["data.name=toy"])
    monkeypatch.setitem(DATASETS, "toy", DatasetSpec(name="toy", tasks=("classification",), dataset_class="x:Y"))
    assert load_config(None, ["data.name=toy"]).data.name == "toy"
    assert "toy" in dataset_names("classification") and "toy" not in dataset_names("segmentation")


# --------------------------------------------------------------------------- a new dataset is one entry


class Rods(Dataset):
    """Classification: thin rods along x, y or z (three classes), C = 3."""

    classes = ["along_x", "along_y", "along_z"]

    def __init__(self, root, split="train", num_points=32, use_normals=False, transform=None, seed=0):
        self.root, self.num_points, self.transform = Path(root), num_points, transform
        self.num_classes, self.in_channels = len(self.classes), 3
        count = {"train": 12, "val": 6, "test": 6}[split]
        generator = np.random.default_rng([seed, len(split)])
        self.labels = np.arange(count) % 3
        self.clouds = []
        for label in self.labels:
            cloud = generator.normal(scale=0.05, size=(num_points, 3)) * 50 + 300  # far off, large
            cloud[:, label] += np.linspace(-400, 400, num_points)
            self.clouds.append(cloud.astype(np.float32))

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        item = {"points": torch.from_numpy(self.clouds[index]), "label": torch.tensor(int(self.labels[index]))}
        return self.transform(item) if self.transform is not None else item


class Cups(Dataset):
    """Segmentation with its own table: "cup" (parts 0, 1) and "plate" (parts 2, 3, 4); clouds
    of different sizes; no part names (the checkpoint then names parts by position)."""

    categories = ["cup", "plate"]
    category_parts = [[0, 1], [2, 3, 4]]

    def __init__(self, split="train", num_points=None, use_normals=False, transform=None):
        self.transform, self.in_channels, self.num_parts = transform, 3, 5
        self.num_classes = 2
        generator = np.random.default_rng(len(split))
        self.items = []
        for index in range({"train": 8, "val": 4, "test": 4}[split]):
            category = index % 2
            n = num_points or 24 + 4 * index
            points = generator.uniform(-1, 1, (n, 3)).astype(np.float32)
            parts = np.asarray(self.category_parts[category])[(points[:, 1] > 0).astype(int)]
            self.items.append((points, category, parts))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        points, category, parts = self.items[index]
        item = {"points": torch.from_numpy(points), "category": torch.tensor(category),
                "parts": torch.from_numpy(parts).long()}
        return self.transform(item) if self.transform is not None else item


TINY_MODEL = [
    "model.overrides.embed_dims=[16, 16]", "model.overrides.stage_dims=[]", "model.overrides.stage_samples=[]",
    "model.overrides.num_neighbors=[]", "model.overrides.num_blocks=1", "model.overrides.fuse_dim=32",
]
TINY_RUN = ["train.epochs=1", "train.batch_size=4", "train.amp=none", "train.progress=false",
            "train.augmentation=[]", "train.lr=0.01"]


def test_a_dataset_registered_in_one_entry_trains_and_evaluates_by_name(tmp_path, monkeypatch):
    from pointea.engine.checkpoint import load_model
    from pointea.engine.evaluate import evaluate
    from pointea.engine.train import train

    monkeypatch.setitem(DATASETS, "rods", DatasetSpec(
        name="rods", tasks=("classification",), dataset_class=Rods, up_axis="z",
        options=lambda data_config, split: {"seed": data_config.get("split_seed", 0)},
        class_names=lambda root, data_config: list(Rods.classes)))
    (tmp_path / "rods").mkdir()
    config = load_config(None, ["data.name=rods", f"data.root={tmp_path / 'rods'}", "data.num_points=32",
                                "model.preset=pointea-cls", *TINY_MODEL, *TINY_RUN])
    result = train(config, tmp_path / "run")
    assert result["select_metric"] == "overall_accuracy" and result["best"]["num_samples"] == 6
    model, meta = load_model(tmp_path / "run")
    assert meta["name"] == "rods" and meta["classes"] == Rods.classes and model.config.num_classes == 3

    metrics = evaluate(tmp_path / "run", split="test")  # root and options from the checkpoint
    assert metrics["dataset"] == "rods" and metrics["classes"] == Rods.classes
    assert sum(map(sum, metrics["confusion_matrix"])) == 6
    assert dataset_up_axis("rods") == "z"
    # the cheap class list refuses a mismatching classifier before reading any cloud
    monkeypatch.setitem(DATASETS, "rods4", DatasetSpec(
        name="rods4", tasks=("classification",), dataset_class="no.such.module:Rods",
        class_names=lambda root, data_config: [*Rods.classes, "diagonal"]))
    with pytest.raises(ValueError, match="the model has no class 'diagonal'"):
        evaluate(tmp_path / "run", dataset="rods4", data_root=tmp_path)


def test_a_segmentation_dataset_with_its_own_part_table_works_end_to_end(tmp_path, monkeypatch):
    from pointea.engine.checkpoint import load_model
    from pointea.engine.evaluate import evaluate
    from pointea.engine.train import train

    monkeypatch.setitem(DATASETS, "cups", DatasetSpec(
        name="cups", tasks=("segmentation",), dataset_class=Cups, needs_root=False, default_num_points=None))
    config = load_config(None, ["data.name=cups", "data.num_points=null", "model.preset=pointea-partseg",
                                *TINY_MODEL[:2], "model.overrides.stage_dims=[16]",
                                "model.overrides.num_neighbors=[8]", "model.overrides.num_blocks=1",
                                "model.overrides.fuse_dim=32", "model.overrides.head_dims=[32]",
                                "model.overrides.category_dim=8", *TINY_RUN])
    result = train(config, tmp_path / "run")
    assert result["select_metric"] == "instance_miou" and result["best"]["num_samples"] == 4
    model, meta = load_model(tmp_path / "run")
    assert meta["category_parts"] == Cups.category_parts == model.config.category_parts
    assert meta["part_names"] == ["cup/part1", "cup/part2", "plate/part1", "plate/part2", "plate/part3"]
    assert model.config.num_parts == 5

    metrics = evaluate(tmp_path / "run", split="test")  # whole clouds of different sizes, masked
    assert metrics["task"] == "segmentation" and metrics["categories"] == Cups.categories
    assert metrics["per_category_count"] == {"cup": 2, "plate": 2}
    assert 0.0 <= metrics["instance_miou"] <= 100.0


def test_a_task_the_dataset_lacks_is_refused_naming_the_fitting_datasets(tmp_path, monkeypatch):
    from pointea.engine.train import build_data

    config = load_config(None, ["data.name=modelnet10", "data.root=/nonexistent", "model.preset=pointea-partseg"])
    with pytest.raises(ValueError) as info:
        build_data(config, "segmentation", torch.device("cpu"))
    assert "modelnet10 has no part labels" in str(info.value)
    assert all(f"data.name={name}" in str(info.value) for name in dataset_names("segmentation"))

