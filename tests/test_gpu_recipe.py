"""Tests of the GPU recipe's tools: tools/pack_modelnet.py (ModelNet -> carried HDF5) and
tools/gpu_modelnet40.py (time, plan, train and evaluate within a budget), run on the CPU."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pointea.data.dedup import duplicate_groups
from pointea.data.modelnet import MODELNET40_CLASSES, ModelNet40

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("airplane", "bed", "chair")
TINY_MODEL = [
    "data.num_points=64", "train.epochs=1", "train.threads=1", "model.overrides.embed_dims=[16,16]",
    "model.overrides.stage_dims=[16]", "model.overrides.stage_samples=[16]", "model.overrides.num_neighbors=[4]",
    "model.overrides.num_blocks=1", "model.overrides.fuse_dim=32", "model.overrides.head_dims=[32]",
]

# installed here (or optional) but not on the GPU machine
ABSENT_ON_DEVICE = ("open3d", "libusb_package", "onnx", "onnxruntime")


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_modelnet_folder(root: Path, per_class: int = 6, points: int = 1024) -> Path:
    """``root/ModelNet40/<class>/train/<class>_<NNNN>.npy``: distinct random clouds, a few classes."""
    rng = np.random.default_rng(0)
    for cls in CLASSES:
        folder = root / "ModelNet40" / cls / "train"
        folder.mkdir(parents=True)
        for number in range(1, per_class + 1):
            cloud = rng.normal(size=(points, 3)) * rng.uniform(0.5, 3.0, size=3)  # a few units: float16 rounds
            np.save(folder / f"{cls}_{number:04d}.npy", cloud.astype(np.float32))
    return root


def pack_args(root: Path, out: Path, *extra: str) -> list:
    return ["--data-root", str(root), "--out", str(out), *extra]


def siblings(path: Path) -> list:
    return sorted(p.name for p in path.parent.iterdir())


# --------------------------------------------------------------------------- packing


def test_pack_round_trip_labels_points_size_and_grouped_split(tmp_path, cache_dir):
    pack = load_tool("pack_modelnet")
    root = write_modelnet_folder(tmp_path / "data")
    out = tmp_path / "carry" / "mn40"
    assert pack.main(pack_args(root, out, "--cache-dir", str(cache_dir))) == 0

    source = ModelNet40(root, "trainval", 1024, cache_dir=cache_dir)
    packed = ModelNet40(out, "trainval", 1024, cache_dir=cache_dir)
    assert packed.layout == "hdf5" and packed.classes == list(MODELNET40_CLASSES)
    assert np.array_equal(packed.labels.numpy(), source.labels.numpy())
    src, got = source.points.numpy(), packed.points.numpy()
    assert 0 < np.abs(got - src).max() <= 2.0 ** -11 * np.abs(src).max()  # float16 rounding, nothing more
    assert np.array_equal(got, src.astype(np.float16).astype(np.float32))

    info = json.loads((out / "pack_info.json").read_text())
    entry = info["splits"]["train"]
    h5 = out / "ply_data_train0.h5"
    assert entry["shapes"] == len(source) and entry["bytes"] == h5.stat().st_size
    assert entry["sha256"] == hashlib.sha256(h5.read_bytes()).hexdigest()
    assert info["source_layout"] == "folder" and info["source_up_axis"] == "z" and info["dtype"] == "float16"
    assert h5.stat().st_size < len(source) * 1024 * 3 * 2  # float16 and compressed: under 6 bytes a point
    assert sorted(p.name for p in out.iterdir()) == [
        "duplicate_groups_train.npy", "pack_info.json", "ply_data_train0.h5", "shape_names.txt", "train_files.txt"]
    assert siblings(out) == ["mn40"]  # no temporary folder left
    assert np.array_equal(np.load(out / "duplicate_groups_train.npy"), duplicate_groups(src))

    # the grouped holdout works on the packed copy (hdf5 layout): from its own groups, and with the
    # carried ones seeded into the cache, it is the source's holdout shape for shape
    train = ModelNet40(out, "train", 64, val_split="grouped", cache_dir=tmp_path / "fresh")
    val = ModelNet40(out, "val", 64, val_split="grouped", cache_dir=tmp_path / "fresh")
    assert len(val) > 0 and len(train) + len(val) == len(packed)
    assert not set(train.files) & set(val.files)
    assert pack.seed_group_cache(out, tmp_path / "seeded") is True
    val = ModelNet40(out, "val", 64, val_split="grouped", cache_dir=tmp_path / "seeded")
    source_val = ModelNet40(root, "val", 64, val_split="grouped", cache_dir=cache_dir)
    index = {name: i for i, name in enumerate(source.files)}
    assert [int(name.split(":")[1]) for name in val.files] == [index[name] for name in source_val.files]


def test_seeded_groups_steer_the_grouped_holdout_of_the_packed_copy(tmp_path, cache_dir):
    pack = load_tool("pack_modelnet")
    root = write_modelnet_folder(tmp_path / "data", per_class=6, points=1024)
    out = tmp_path / "mn40"
    assert pack.main(pack_args(root, out, "--cache-dir", str(cache_dir))) == 0
    assert pack.seed_group_cache(tmp_path / "data", cache_dir) is None  # nothing carried there
    pairs = np.arange(18) // 2  # shapes 2k and 2k+1 (same class) as near-twins
    np.save(out / "duplicate_groups_train.npy", pairs)
    assert pack.seed_group_cache(out, tmp_path / "seeded") is True
    val = ModelNet40(out, "val", 1024, val_split="grouped", val_fraction=0.34, cache_dir=tmp_path / "seeded")
    taken = sorted(int(name.split(":")[1]) for name in val.files)
    assert len(taken) == 6  # two of the six shapes of each class: one whole pair
    assert all(i ^ 1 in taken for i in taken)  # each shape's twin is held out with it
    np.save(out / "duplicate_groups_train.npy", pairs[:5])
    with pytest.raises(ValueError, match="5,\\) group ids for 18 train shapes"):
        pack.seed_group_cache(out, tmp_path / "other")


def test_pack_float32_is_exact_and_limit_per_class_keeps_the_first_shapes(tmp_path, cache_dir):
    pack = load_tool("pack_modelnet")
    root = write_modelnet_folder(tmp_path / "data", per_class=4, points=32)
    out = tmp_path / "mn40"
    assert pack.main(pack_args(root, out, "--dtype", "float32", "--num-points", "16", "--limit-per-class", "2",
                               "--compression", "none", "--cache-dir", str(cache_dir))) == 0
    source = ModelNet40(root, "trainval", 16, cache_dir=cache_dir)
    packed = ModelNet40(out, "trainval", 16, cache_dir=cache_dir)
    first_two = np.concatenate([np.flatnonzero(source.labels.numpy() == label)[:2]
                                for label in np.unique(source.labels.numpy())])
    assert np.array_equal(packed.labels.numpy(), source.labels.numpy()[first_two])
    assert np.array_equal(packed.points.numpy(), source.points.numpy()[first_two])


def test_pack_refuses_an_existing_folder_and_replaces_it_with_force(tmp_path, cache_dir, capsys):
    pack = load_tool("pack_modelnet")
    root = write_modelnet_folder(tmp_path / "data", per_class=2, points=32)
    out = tmp_path / "mn40"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert pack.main(pack_args(root, out, "--num-points", "16", "--cache-dir", str(cache_dir))) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    assert pack.main(pack_args(root, out, "--num-points", "16", "--cache-dir", str(cache_dir), "--force")) == 0
    assert not (out / "keep.txt").exists() and (out / "ply_data_train0.h5").is_file()
    assert siblings(out) == ["cache", "data", "mn40"]  # the old folder is gone, no temporary left


def test_a_failed_pack_leaves_no_folder_and_keeps_the_old_one(tmp_path, cache_dir, monkeypatch):
    pack = load_tool("pack_modelnet")
    root = write_modelnet_folder(tmp_path / "data", per_class=2, points=32)
    out = tmp_path / "carry" / "mn40"

    def broken_check(*args, **kwargs):
        raise ValueError("check failed on purpose")

    monkeypatch.setattr(pack, "check_packed", broken_check)
    assert pack.main(pack_args(root, out, "--num-points", "16", "--cache-dir", str(cache_dir))) == 2
    assert list(out.parent.iterdir()) == []  # neither the folder nor its temporary sibling

    out.mkdir()
    (out / "old.txt").write_text("old")
    assert pack.main(pack_args(root, out, "--num-points", "16", "--cache-dir", str(cache_dir), "--force")) == 2
    assert siblings(out) == ["mn40"] and (out / "old.txt").read_text() == "old"


def test_pack_refuses_coordinates_beyond_float16(tmp_path, cache_dir, capsys):
    pack = load_tool("pack_modelnet")
    folder = tmp_path / "data" / "ModelNet40" / "airplane" / "train"
    folder.mkdir(parents=True)
    np.save(folder / "airplane_0001.npy", np.full((16, 3), 1e5, dtype=np.float32))
    out = tmp_path / "mn40"
    assert pack.main(pack_args(tmp_path / "data", out, "--num-points", "16", "--cache-dir", str(cache_dir))) == 2
    assert "beyond the float16 range" in capsys.readouterr().err and not out.exists()


@pytest.mark.realdata("ModelNet40")
def test_pack_a_few_real_shapes(tmp_path, cache_dir, shared_data):
    pack = load_tool("pack_modelnet")
    root = tmp_path / "data"
    for cls in ("airplane", "chair"):
        names = sorted((shared_data / "ModelNet40" / cls / "train").glob("*.npy"))[:3]
        (root / "ModelNet40" / cls / "train").mkdir(parents=True)
        for name in names:
            shutil.copy(name, root / "ModelNet40" / cls / "train" / name.name)
    out = tmp_path / "mn40"
    assert pack.main(pack_args(root, out, "--cache-dir", str(cache_dir))) == 0
    source = ModelNet40(root, "trainval", 1024, cache_dir=cache_dir)
    packed = ModelNet40(out, "trainval", 1024, cache_dir=cache_dir)
    assert packed.labels.tolist() == [0] * 3 + [8] * 3 == source.labels.tolist()
    assert np.abs(packed.points.numpy() - source.points.numpy()).max() <= 2.0 ** -11  # unit-sphere clouds


# --------------------------------------------------------------------------- the GPU script


def test_plan_fits_the_budget_and_clamps_to_the_recipe():
    gpu = load_tool("gpu_modelnet40")
    timing = {"steps_per_epoch": 70, "step_s": 0.05, "val_s": 0.5, "checkpoint_s": 0.05, "data_s": 2.0,
              "warmup_s": 3.0, "val_first_s": 1.0}
    plan = gpu.plan_epochs(480, 30, timing, startup_s=5.0, max_epochs=250)
    epoch_s = 70 * 0.05 + 0.5 + 0.1
    assert plan["epoch_s"] == pytest.approx(epoch_s)
    assert plan["available_s"] == pytest.approx(480 - 30 - (5 + 2 + 3 + 15) - (5 + 2 + 1 + 15))
    assert plan["epochs"] == int(0.9 * plan["available_s"] / epoch_s) and plan["fits"]
    assert plan["planned_train_s"] + plan["eval_s"] + 30 <= 480
    assert gpu.plan_epochs(480, 30, timing, 5.0, max_epochs=20)["epochs"] == 20
    tight = gpu.plan_epochs(40, 30, timing, 5.0, max_epochs=250)
    assert tight["epochs"] == 1 and not tight["fits"]


def test_run_logged_stops_a_process_at_the_deadline(tmp_path):
    gpu = load_tool("gpu_modelnet40")
    log = gpu.Log(tmp_path / "run.log")
    start = time.perf_counter()
    code, stopped = gpu.run_logged([sys.executable, "-c", "import time; print('started'); time.sleep(60)"],
                                   log, deadline=time.perf_counter() + 2.0)
    log.close()
    assert stopped and code != 0 and time.perf_counter() - start < 20
    text = (tmp_path / "run.log").read_text()
    assert "started" in text and "deadline passed" in text


def test_pack_then_gpu_script_end_to_end_on_cpu_without_open3d(tmp_path):
    """The two device-side commands in a fresh interpreter each, with the packages that the GPU
    machine lacks (open3d and the other optional ones) failing to import, and leaving a mark."""
    root = write_modelnet_folder(tmp_path / "data", per_class=8)
    marks = tmp_path / "imported"
    marks.mkdir()
    for name in ABSENT_ON_DEVICE:
        (tmp_path / "block" / name).mkdir(parents=True)
        (tmp_path / "block" / name / "__init__.py").write_text(
            f"open({str(marks / name)!r}, 'w').close()\nraise ImportError('{name} is not installed here')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "block"), str(REPO)]),
               POINTEA_CACHE=str(tmp_path / "cache"))
    env.pop("OUT", None)
    packed = tmp_path / "carry" / "modelnet40_ply_hdf5_1024"
    subprocess.run([sys.executable, str(REPO / "tools" / "pack_modelnet.py"), *pack_args(root, packed)],
                   env=env, check=True, capture_output=True, text=True, timeout=60)

    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "gpu_modelnet40.py"), "--data-root", str(packed), "--out", str(out),
         "--work-dir", str(tmp_path / "work"), "--device", "cpu", "--batch-size", "8", "--warmup-steps", "1",
         "--timing-steps", "2", "--budget-s", "120", *TINY_MODEL],
        env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert list(marks.iterdir()) == []  # nothing tried to import them

    summary = json.loads((out / "gpu_modelnet40.json").read_text())
    assert summary["returncode"] == 0 and summary["planned_epochs"] == 1
    assert summary["plan"]["max_epochs"] == 1 and summary["train"]["epochs_done"] == 1
    assert 0 <= summary["val_overall_accuracy"] <= 100
    assert summary["eval"]["metrics"]["split"] == "val" and summary["eval"]["metrics"]["num_samples"] > 0
    assert 0 < summary["train"]["wall_s"] < summary["wall_s"] < 120
    assert summary["timing"]["step_s"] > 0 and summary["timing"]["steps_per_epoch"] >= 1
    assert summary["data"]["splits"]["train"]["shapes"] == 24
    assert summary["val_groups"] == "carried from the float32 source"
    resolved = summary["resolved_config"]
    assert resolved["data"]["val_split"] == "grouped" and resolved["train"]["epochs"] == 1
    assert 0 < resolved["train"]["time_budget_s"] < 120  # the epochs' share of the budget
    assert resolved["train"]["batch_size"] == 8 and resolved["train"]["lr"] == pytest.approx(0.01 * 8 / 32)
    files = sorted(p.name for p in out.iterdir())
    assert files == ["best.pt", "config.yaml", "curves.png", "gpu_modelnet40.json", "log.jsonl", "run.log",
                     "val.json", "val_per_class.csv"]
    log = (out / "run.log").read_text()
    assert "plan: 1 of at most 1 epochs" in log and "single pass: overall_accuracy" in log
    val = json.loads((out / "val.json").read_text())
    assert val["overall_accuracy"] == summary["val_overall_accuracy"]
    from pointea.engine.checkpoint import load_checkpoint

    assert load_checkpoint(out / "best.pt")["dataset"]["up_axis"] == "z"  # the packed clouds' own, not HDF5's y
