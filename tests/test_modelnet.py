"""Tests for pointea.data.modelnet: the three ModelNet layouts, splits, cache, bad input, real data."""

import os
import stat
import sys
import types
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pointea.data import modelnet
from pointea.data.modelnet import (
    MODELNET10_CLASSES,
    MODELNET40_CLASSES,
    ModelNet10,
    ModelNet40,
    stratified_holdout,
)

# --------------------------------------------------------------------------- fixture writers


def _cloud(seed, rows=40, columns=3):
    return np.random.default_rng(seed).uniform(-1, 1, (rows, columns)).astype(np.float32)


def write_folder_layout(root, counts, ext=".npy", rows=40, columns=3, name="ModelNet40"):
    """``root/<name>/<class>/<split>/<class>_<NNNN><ext>``; counts: {class: {split: n}}."""
    folder = root / name
    seed = 0
    for cls, splits in counts.items():
        number = 1
        for split, n in splits.items():
            (folder / cls / split).mkdir(parents=True, exist_ok=True)
            for _ in range(n):
                path = folder / cls / split / f"{cls}_{number:04d}{ext}"
                if ext == ".npy":
                    np.save(path, _cloud(seed, rows, columns))
                elif ext == ".off":
                    write_box_off(path, scale=1.0 + number)
                else:
                    np.savetxt(path, _cloud(seed, rows, columns), fmt="%.6f")
                number += 1
                seed += 1
    return folder


def write_box_off(path, scale=1.0):
    """An axis-aligned box [-scale/2, scale/2]^3 as an OFF mesh (ModelNet style header)."""
    corners = (np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)]) - 0.5) * scale
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    lines = [f"OFF{len(corners)} {len(quads)} 0"]
    lines += [" ".join(f"{v:.6f}" for v in c) for c in corners]
    lines += ["4 " + " ".join(map(str, q)) for q in quads]
    path.write_text("\n".join(lines) + "\n")


def write_hdf5_layout(root, train_files=2, test_files=1, shapes=5, points=64, normals=False,
                      classes=MODELNET40_CLASSES, list_files=True):
    folder = root / "modelnet40_ply_hdf5_2048"
    folder.mkdir(parents=True)
    (folder / "shape_names.txt").write_text("\n".join(classes) + "\n")
    rng = np.random.default_rng(0)
    for split, count in (("train", train_files), ("test", test_files)):
        names = [f"ply_data_{split}{i}.h5" for i in range(count)]
        for name in names:
            with h5py.File(folder / name, "w") as f:
                f["data"] = rng.uniform(-1, 1, (shapes, points, 3)).astype(np.float32)
                f["label"] = rng.integers(0, len(classes), (shapes, 1)).astype(np.uint8)
                if normals:
                    f["normal"] = rng.uniform(-1, 1, (shapes, points, 3)).astype(np.float32)
        if list_files:
            (folder / f"{split}_files.txt").write_text(
                "".join(f"data/modelnet40_ply_hdf5_2048/{n}\n" for n in names)
            )
    return folder


def write_text_layout(root, train, test, rows=50, variant=40, classes=MODELNET40_CLASSES):
    """train / test: {class: n}; rows of ``x,y,z,nx,ny,nz``."""
    folder = root / "modelnet40_normal_resampled"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"modelnet{variant}_shape_names.txt").write_text("\n".join(classes) + "\n")
    number, seed = {}, 100
    for split, counts in (("train", train), ("test", test)):
        names = []
        for cls, n in counts.items():
            (folder / cls).mkdir(exist_ok=True)
            for _ in range(n):
                number[cls] = number.get(cls, 0) + 1
                shape = f"{cls}_{number[cls]:04d}"
                np.savetxt(folder / cls / f"{shape}.txt", _cloud(seed, rows, 6), fmt="%.6f", delimiter=",")
                names.append(shape)
                seed += 1
        (folder / f"modelnet{variant}_{split}.txt").write_text("\n".join(names) + "\n")
    return folder


def files_under(folder):
    folder = Path(folder)
    if not folder.exists():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


SMALL_COUNTS = {"airplane": {"train": 6, "test": 2}, "bed": {"train": 4, "test": 1}, "xbox": {"train": 1}}

# --------------------------------------------------------------------------- folder layout


def test_folder_layout_points_labels_files(tmp_path, cache_dir):
    folder = write_folder_layout(tmp_path, SMALL_COUNTS)
    ds = ModelNet40(tmp_path, split="trainval", num_points=32, cache_dir=cache_dir)
    assert ds.layout == "folder"
    assert len(ds) == 11 and ds.points.shape == (11, 32, 3) and ds.points.dtype == torch.float32
    assert ds.classes == list(MODELNET40_CLASSES) and ds.num_classes == 40 and ds.in_channels == 3
    # official indices, not positions among the folders present
    assert ds.labels.tolist() == [0] * 6 + [2] * 4 + [39]
    assert ds.files[0] == "airplane/train/airplane_0001.npy"
    first = np.load(folder / "bed" / "train" / "bed_0003.npy")
    index = ds.files.index("bed/train/bed_0003.npy")
    np.testing.assert_array_equal(ds.points[index].numpy(), first[:32])  # the first num_points rows
    test = ModelNet40(folder, split="test", num_points=32, cache_dir=cache_dir)  # root = layout folder
    assert len(test) == 3 and test.labels.tolist() == [0, 0, 2]


def test_folder_layout_items_and_transform(tmp_path, cache_dir):
    write_folder_layout(tmp_path, SMALL_COUNTS)

    def shift(item):
        return {**item, "points": item["points"] + 1}

    ds = ModelNet40(tmp_path, split="trainval", num_points=16, cache_dir=cache_dir, transform=shift)
    item = ds[0]
    assert item["points"].shape == (16, 3) and item["label"].dtype == torch.int64 and item["label"].ndim == 0
    torch.testing.assert_close(item["points"], ds.points[0] + 1)
    assert "ModelNet40(split='trainval'" in repr(ds)


def test_folder_layout_meshes_are_sampled_on_the_surface(tmp_path, cache_dir):
    write_folder_layout(tmp_path, {"chair": {"train": 2, "test": 1}}, ext=".off")
    ds = ModelNet40(tmp_path, split="trainval", num_points=200, use_normals=True, cache_dir=cache_dir)
    assert ds.points.shape == (2, 200, 6) and ds.in_channels == 6
    for i, scale in enumerate((2.0, 3.0)):  # chair_0001 has scale 2, chair_0002 scale 3
        xyz, normals = ds.points[i, :, :3], ds.points[i, :, 3:]
        on_face = (xyz.abs() - scale / 2).abs().min(dim=1).values
        assert on_face.max() < 1e-4  # every point lies on a face of the box
        torch.testing.assert_close(normals.norm(dim=1), torch.ones(200))
    again = ModelNet40(tmp_path, split="trainval", num_points=200, use_normals=True,
                       cache_dir=cache_dir / "other")
    torch.testing.assert_close(again.points, ds.points)  # sampling is seeded by the file name


def test_folder_layout_use_normals_without_normals_is_clear(tmp_path, cache_dir):
    write_folder_layout(tmp_path, SMALL_COUNTS)
    with pytest.raises(ValueError, match=r"airplane_0001\.npy.*use_normals=True.*no normals"):
        ModelNet40(tmp_path, split="trainval", num_points=16, use_normals=True, cache_dir=cache_dir)
    assert files_under(cache_dir) == []


def test_folder_layout_other_point_formats(tmp_path, cache_dir):
    write_folder_layout(tmp_path, {"cup": {"train": 2}}, ext=".txt", columns=6)
    ds = ModelNet40(tmp_path, split="trainval", num_points=10, use_normals=True, cache_dir=cache_dir)
    expected = np.loadtxt(tmp_path / "ModelNet40" / "cup" / "train" / "cup_0001.txt")[:10]
    np.testing.assert_allclose(ds.points[0].numpy(), expected, atol=1e-6)


def test_modelnet10_folder_layout(tmp_path, cache_dir):
    write_folder_layout(tmp_path, {"chair": {"train": 2}, "toilet": {"train": 2}}, name="ModelNet10")
    ds = ModelNet10(tmp_path, split="trainval", num_points=8, cache_dir=cache_dir)
    assert ds.classes == list(MODELNET10_CLASSES) and ds.num_classes == 10
    assert ds.labels.tolist() == [2, 2, 9, 9]
    with pytest.raises(FileNotFoundError, match="pointea download modelnet40"):
        ModelNet40(tmp_path, cache_dir=cache_dir)  # a ModelNet10 folder is not ModelNet40


def test_folder_with_unknown_class_folder(tmp_path, cache_dir):
    write_folder_layout(tmp_path, {"chair": {"train": 2}, "spaceship": {"train": 1}})
    with pytest.raises(ValueError, match="'spaceship' is not a ModelNet40 class; valid: airplane"):
        ModelNet40(tmp_path, split="trainval", num_points=8, cache_dir=cache_dir)


# --------------------------------------------------------------------------- hdf5 layout


def test_hdf5_layout(tmp_path, cache_dir):
    folder = write_hdf5_layout(tmp_path)
    ds = ModelNet40(tmp_path, split="trainval", num_points=32, cache_dir=cache_dir)
    assert ds.layout == "hdf5" and len(ds) == 10 and ds.points.shape == (10, 32, 3)
    with h5py.File(folder / "ply_data_train1.h5", "r") as f:
        np.testing.assert_array_equal(ds.points[5:].numpy(), f["data"][:, :32])
        assert ds.labels[5:].tolist() == f["label"][:, 0].tolist()
    assert ds.files[5] == "ply_data_train1.h5:0"
    assert len(ModelNet40(folder, split="test", num_points=32, cache_dir=cache_dir)) == 5
    assert files_under(cache_dir) == []  # packed arrays are read directly


def test_hdf5_layout_without_list_files_globs(tmp_path, cache_dir):
    write_hdf5_layout(tmp_path, train_files=3, list_files=False)
    ds = ModelNet40(tmp_path, split="trainval", num_points=8, cache_dir=cache_dir)
    assert len(ds) == 15 and ds.files[-1] == "ply_data_train2.h5:4"


def test_hdf5_layout_normals(tmp_path, cache_dir):
    write_hdf5_layout(tmp_path, normals=True)
    ds = ModelNet40(tmp_path, split="test", num_points=8, use_normals=True, cache_dir=cache_dir)
    assert ds.points.shape == (5, 8, 6)


def test_hdf5_layout_without_normals_is_clear(tmp_path, cache_dir):
    write_hdf5_layout(tmp_path)
    with pytest.raises(ValueError, match=r"ply_data_test0\.h5.*use_normals=True.*'normal'"):
        ModelNet40(tmp_path, split="test", num_points=8, use_normals=True, cache_dir=cache_dir)


def test_hdf5_num_points_larger_than_stored(tmp_path, cache_dir):
    write_hdf5_layout(tmp_path, points=16)
    with pytest.raises(ValueError, match=r"ply_data_train0\.h5.*16 points.*num_points=32"):
        ModelNet40(tmp_path, split="trainval", num_points=32, cache_dir=cache_dir)


# --------------------------------------------------------------------------- text layout


def test_text_layout_first_rows_and_normals(tmp_path, cache_dir):
    folder = write_text_layout(tmp_path, {"airplane": 3, "vase": 2}, {"vase": 1})
    ds = ModelNet40(tmp_path, split="trainval", num_points=20, use_normals=True, cache_dir=cache_dir)
    assert ds.layout == "text" and ds.points.shape == (5, 20, 6)
    assert ds.labels.tolist() == [0, 0, 0, 37, 37]
    assert ds.files[3] == "vase/vase_0001.txt"
    source = np.loadtxt(folder / "vase" / "vase_0001.txt", delimiter=",")
    np.testing.assert_allclose(ds.points[3].numpy(), source[:20], atol=1e-6)
    xyz = ModelNet40(tmp_path, split="test", num_points=20, cache_dir=cache_dir)
    assert xyz.points.shape == (1, 20, 3) and xyz.files == ["vase/vase_0003.txt"]


def test_modelnet10_text_lists_share_the_folder(tmp_path, cache_dir):
    write_text_layout(tmp_path, {"airplane": 2}, {"airplane": 1})
    write_text_layout(tmp_path, {"bed": 2, "toilet": 2}, {"bed": 1}, variant=10, classes=MODELNET10_CLASSES)
    ds = ModelNet10(tmp_path, split="trainval", num_points=10, cache_dir=cache_dir)
    assert ds.labels.tolist() == [1, 1, 9, 9] and ds.num_classes == 10
    assert len(ModelNet40(tmp_path, split="trainval", num_points=10, cache_dir=cache_dir)) == 2


def test_layout_choice(tmp_path, cache_dir):
    write_folder_layout(tmp_path, SMALL_COUNTS)
    write_text_layout(tmp_path, {"airplane": 2}, {"airplane": 1})
    assert ModelNet40(tmp_path, split="trainval", num_points=8, cache_dir=cache_dir).layout == "folder"
    text = ModelNet40(tmp_path, split="trainval", num_points=8, cache_dir=cache_dir, layout="text")
    assert text.layout == "text" and len(text) == 2
    with pytest.raises(FileNotFoundError, match="modelnet40_ply_hdf5_2048"):
        ModelNet40(tmp_path, num_points=8, cache_dir=cache_dir, layout="hdf5")
    # a split only one layout holds is read from that layout, unless a layout is chosen
    train_only = tmp_path / "train_only"
    write_folder_layout(train_only, {"airplane": {"train": 3}})
    write_text_layout(train_only, {"airplane": 2}, {"airplane": 1})
    assert ModelNet40(train_only, split="train", num_points=8, cache_dir=cache_dir).layout == "folder"
    assert ModelNet40(train_only, split="test", num_points=8, cache_dir=cache_dir).layout == "text"
    with pytest.raises(FileNotFoundError, match="test split missing"):
        ModelNet40(train_only, split="test", num_points=8, cache_dir=cache_dir, layout="folder")
    with pytest.raises(ValueError, match="layout must be one of hdf5, folder, text"):
        ModelNet40(tmp_path, cache_dir=cache_dir, layout="meshes")


# --------------------------------------------------------------------------- options and download


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"split": "validation"}, "split must be one of train, val, trainval, test; got 'validation'"),
        ({"num_points": 0}, "num_points must be a positive int"),
        ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
    ],
)
def test_bad_options(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelNet40(tmp_path, **kwargs)


def test_missing_root_says_what_to_fetch(tmp_path, cache_dir):
    root = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as error:
        ModelNet40(root, cache_dir=cache_dir)
    message = str(error.value)
    assert str(root) in message and "does not exist" in message
    assert f"pointea download modelnet40 --data-root {root}" in message and "download=True" in message
    for expected in ("modelnet40_ply_hdf5_2048", "ModelNet40/<class>", "modelnet40_normal_resampled"):
        assert expected in message


def test_download_true_calls_download_dataset(tmp_path, cache_dir, monkeypatch):
    calls = []

    def download_dataset(name, root, url=None, sha256=None):
        calls.append((name, Path(root)))
        return write_text_layout(Path(root), {"airplane": 2}, {"airplane": 1})

    fake = types.ModuleType("pointea.data.download")
    fake.download_dataset = download_dataset
    monkeypatch.setitem(sys.modules, "pointea.data.download", fake)
    ds = ModelNet40(tmp_path, split="test", num_points=8, download=True, cache_dir=cache_dir)
    assert calls == [("modelnet40", tmp_path)] and len(ds) == 1
    ModelNet40(tmp_path, split="test", num_points=8, download=True, cache_dir=cache_dir)
    assert len(calls) == 1  # data present: no second download


# --------------------------------------------------------------------------- splits


def test_stratified_holdout_rule():
    labels = np.array([0] * 10 + [1] * 2 + [2] * 1 + [3] * 3)
    mask = stratified_holdout(labels, 0.2, seed=0)
    counts = {c: int(mask[labels == c].sum()) for c in range(4)}
    assert counts == {0: 2, 1: 1, 2: 0, 3: 1}  # round(0.2 n), >= 1 when n >= 2, a train shape kept
    assert stratified_holdout(labels, 0.9, seed=0)[labels == 1].sum() == 1  # at most n - 1
    np.testing.assert_array_equal(mask, stratified_holdout(labels, 0.2, seed=0))
    assert not np.array_equal(mask, stratified_holdout(labels, 0.2, seed=1))
    assert not stratified_holdout(labels, 0.0, seed=0).any()


def test_splits_disjoint_union_stratified_deterministic(tmp_path, cache_dir):
    counts = {"airplane": {"train": 20}, "bed": {"train": 5}, "cup": {"train": 2}, "xbox": {"train": 1}}
    write_folder_layout(tmp_path, counts)

    def make(split, seed=0):
        return ModelNet40(tmp_path, split=split, num_points=8, val_fraction=0.2, split_seed=seed,
                          cache_dir=cache_dir)

    train, val, trainval = make("train"), make("val"), make("trainval")
    assert set(train.files).isdisjoint(val.files)
    assert sorted(train.files + val.files) == sorted(trainval.files)
    assert len(set(trainval.files)) == len(trainval)
    val_counts = {c: val.labels.tolist().count(c) for c in (0, 2, 10, 39)}
    assert val_counts == {0: 4, 2: 1, 10: 1, 39: 0}
    assert set(train.labels.tolist()) == {0, 2, 10, 39}  # every class keeps a training shape
    assert make("val").files == val.files
    assert make("val", seed=1).files != val.files
    index = trainval.files.index(val.files[0])
    torch.testing.assert_close(val.points[0], trainval.points[index])


def test_empty_val_split(tmp_path, cache_dir):
    write_folder_layout(tmp_path, SMALL_COUNTS)
    with pytest.raises(ValueError, match="split 'val' is empty"):
        ModelNet40(tmp_path, split="val", num_points=8, val_fraction=0.0, cache_dir=cache_dir)
    assert len(ModelNet40(tmp_path, split="train", num_points=8, val_fraction=0.0, cache_dir=cache_dir)) == 11


# --------------------------------------------------------------------------- cache


def test_warm_load_does_not_reopen_sources(tmp_path, cache_dir, monkeypatch):
    write_folder_layout(tmp_path, SMALL_COUNTS)
    write_text_layout(tmp_path, {"airplane": 3}, {"airplane": 1})
    cold = {layout: ModelNet40(tmp_path, split="trainval", num_points=8, cache_dir=cache_dir, layout=layout)
            for layout in ("folder", "text")}

    def fail(*args, **kwargs):
        raise AssertionError("a source file was parsed on a warm load")

    monkeypatch.setattr(modelnet, "read_shape_file", fail)
    monkeypatch.setattr(modelnet, "read_text_rows", fail)
    for layout, first in cold.items():
        warm = ModelNet40(tmp_path, split="train", num_points=8, cache_dir=cache_dir, layout=layout)
        both = ModelNet40(tmp_path, split="trainval", num_points=8, cache_dir=cache_dir, layout=layout)
        torch.testing.assert_close(both.points, first.points)
        assert both.files == first.files and len(warm) < len(both)
    with pytest.raises(AssertionError, match="parsed on a warm load"):  # other options: a new cache
        ModelNet40(tmp_path, split="trainval", num_points=4, cache_dir=cache_dir, layout="folder")


def test_cache_invalidated_when_a_source_changes(tmp_path, cache_dir):
    folder = write_text_layout(tmp_path, {"airplane": 2}, {"airplane": 1})
    first = ModelNet40(tmp_path, split="trainval", num_points=5, cache_dir=cache_dir)
    path = folder / "airplane" / "airplane_0001.txt"
    np.savetxt(path, np.full((10, 6), 0.5), fmt="%.6f", delimiter=",")
    later = path.stat().st_mtime_ns + 2_000_000_000
    os.utime(path, ns=(later, later))
    second = ModelNet40(tmp_path, split="trainval", num_points=5, cache_dir=cache_dir)
    assert torch.all(second.points[0] == 0.5) and not torch.all(first.points[0] == 0.5)
    assert len(files_under(cache_dir)) == 1  # the stale cache was replaced

    touched = path.stat().st_mtime_ns + 2_000_000_000  # touch only: rebuilt too
    os.utime(path, ns=(touched, touched))
    before = files_under(cache_dir)
    ModelNet40(tmp_path, split="trainval", num_points=5, cache_dir=cache_dir)
    assert files_under(cache_dir) != before and len(files_under(cache_dir)) == 1


def test_cache_goes_to_default_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("POINTEA_CACHE", str(tmp_path / "env_cache"))
    write_text_layout(tmp_path / "data", {"airplane": 2}, {"airplane": 1})
    ModelNet40(tmp_path / "data", split="test", num_points=5)
    names = files_under(tmp_path / "env_cache")
    assert len(names) == 1 and names[0].startswith("modelnet40/text-test-5pts-xyz-")


def test_read_only_data_root(tmp_path, cache_dir):
    data = tmp_path / "data"
    write_folder_layout(data, SMALL_COUNTS)
    write_text_layout(data, {"airplane": 2}, {"airplane": 1})
    before = files_under(data)
    modes = {}
    for path in [data, *data.rglob("*")]:
        modes[path] = path.stat().st_mode
        path.chmod(stat.S_IMODE(modes[path]) & ~0o222)
    try:
        for layout in ("folder", "text"):
            ds = ModelNet40(data, split="trainval", num_points=8, cache_dir=cache_dir, layout=layout)
            assert len(ds) > 0
        assert files_under(data) == before  # nothing written beside the data
        assert len(files_under(cache_dir)) == 2
    finally:
        for path, mode in sorted(modes.items(), key=lambda item: len(item[0].parts)):
            path.chmod(stat.S_IMODE(mode))


# --------------------------------------------------------------------------- bad input


def _break_text_file(folder, text):
    (folder / "airplane" / "airplane_0002.txt").write_text(text)


@pytest.mark.parametrize(
    "content, message",
    [
        ("1,2,3,4,5,6\n1,2,3,4,5\n" * 10, r"airplane_0002\.txt: malformed rows"),
        ("1,2,3,4,5\n" * 20, r"airplane_0002\.txt: rows have 5 columns, expected 6"),
        ("1,2,3,4,5,6\nnan,2,3,4,5,6\n" + "1,2,3,4,5,6\n" * 10, r"airplane_0002\.txt: 1 of \d+ rows contain NaN or inf"),
        ("1,2,3,4,5,6\ninf,2,3,4,5,6\n" + "1,2,3,4,5,6\n" * 10, r"airplane_0002\.txt: .*NaN or inf"),
        ("", r"airplane_0002\.txt: .*empty cloud"),
        ("1,2,3,4,5,6\n" * 3, r"airplane_0002\.txt: has 3 points, fewer than num_points=8"),
    ],
)
def test_text_layout_bad_rows(tmp_path, cache_dir, content, message):
    folder = write_text_layout(tmp_path, {"airplane": 3}, {"airplane": 1})
    _break_text_file(folder, content)
    with pytest.raises(ValueError, match=message):
        ModelNet40(tmp_path, split="trainval", num_points=8, cache_dir=cache_dir)
    assert files_under(cache_dir) == []  # no half-written cache


def test_text_layout_missing_pieces(tmp_path, cache_dir):
    folder = write_text_layout(tmp_path, {"airplane": 2}, {"airplane": 1})
    (folder / "modelnet40_test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"ModelNet40 test split missing .*modelnet40_test\.txt"):
        ModelNet40(tmp_path, split="test", cache_dir=cache_dir)
    (folder / "airplane" / "airplane_0002.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"airplane_0002\.txt listed in .*modelnet40_train\.txt"):
        ModelNet40(tmp_path, split="trainval", num_points=8, cache_dir=cache_dir)
    (folder / "modelnet40_train.txt").write_text("airplane_0001\nspaceship_0001\n")
    with pytest.raises(ValueError, match=r"modelnet40_train\.txt: shape 'spaceship_0001'.*not in"):
        ModelNet40(tmp_path, split="trainval", num_points=8, cache_dir=cache_dir)
    (folder / "modelnet40_shape_names.txt").write_text("airplane\nbed\n")
    with pytest.raises(ValueError, match=r"modelnet40_shape_names\.txt: lists 2 classes, ModelNet40 has 40"):
        ModelNet40(tmp_path, split="trainval", num_points=8, cache_dir=cache_dir)
    assert files_under(cache_dir) == []


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((0, 3), np.float32), "empty cloud"),
        (np.array([[0, 0, 0]] * 9 + [[np.inf, 0, 0]], np.float32), "NaN or inf"),
        (np.zeros((10, 2), np.float32), "at least 3 columns"),
    ],
)
def test_folder_layout_bad_point_files(tmp_path, cache_dir, array, message):
    folder = write_folder_layout(tmp_path, SMALL_COUNTS)
    np.save(folder / "bed" / "train" / "bed_0008.npy", array)
    with pytest.raises(ValueError, match=r"bed_0008\.npy.*" + message):
        ModelNet40(tmp_path, split="trainval", num_points=8, cache_dir=cache_dir)
    assert files_under(cache_dir) == []


def test_folder_layout_missing_test_split(tmp_path, cache_dir):
    write_folder_layout(tmp_path, {"airplane": {"train": 2}})
    with pytest.raises(FileNotFoundError, match=r"ModelNet40 test split missing .*<class>/test/"):
        ModelNet40(tmp_path, split="test", cache_dir=cache_dir)


def _rewrite_h5(path, **datasets):
    path.unlink()
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f[name] = value


def test_hdf5_bad_files(tmp_path, cache_dir):
    folder = write_hdf5_layout(tmp_path, shapes=3, points=16)
    target = folder / "ply_data_train1.h5"

    def load():
        return ModelNet40(tmp_path, split="trainval", num_points=8, cache_dir=cache_dir)

    data = np.zeros((3, 16, 3), np.float32)
    _rewrite_h5(target, data=data, label=np.array([[1], [57], [2]], np.uint8))
    with pytest.raises(ValueError, match=r"ply_data_train1\.h5: label 57 at index 1 is outside the 40 classes"):
        load()
    _rewrite_h5(target, points=data, label=np.zeros((3, 1), np.uint8))
    with pytest.raises(ValueError, match=r"ply_data_train1\.h5: missing HDF5 dataset 'data'; found label, points"):
        load()
    _rewrite_h5(target, data=data, label=np.zeros((2, 1), np.uint8))
    with pytest.raises(ValueError, match=r"ply_data_train1\.h5: 2 labels for 3 shapes"):
        load()
    bad = data.copy()
    bad[2, 5, 1] = np.nan
    _rewrite_h5(target, data=bad, label=np.zeros((3, 1), np.uint8))
    with pytest.raises(ValueError, match=r"ply_data_train1\.h5 \[shape 2\]: 1 of 16 rows contain NaN"):
        load()
    _rewrite_h5(target, data=data, label=np.zeros((3, 1), np.uint8))
    payload = target.read_bytes()
    target.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(ValueError, match=r"ply_data_train1\.h5: cannot read HDF5 file, truncated or not HDF5"):
        load()
    target.write_bytes(b"")
    with pytest.raises(ValueError, match=r"ply_data_train1\.h5: cannot read HDF5 file"):
        load()
    target.unlink()
    with pytest.raises(FileNotFoundError, match=r"ply_data_train1\.h5 listed in .*train_files\.txt not found"):
        load()
    assert files_under(cache_dir) == []


def test_hdf5_missing_test_split(tmp_path, cache_dir):
    write_hdf5_layout(tmp_path, test_files=0)
    with pytest.raises(FileNotFoundError, match="ModelNet40 test split missing in the hdf5 layout"):
        ModelNet40(tmp_path, split="test", cache_dir=cache_dir)


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("modelnet_real_cache")


@pytest.mark.realdata("ModelNet40")
def test_real_modelnet40_folder_layout(real_cache, shared_data):
    trainval = ModelNet40(shared_data, split="trainval", cache_dir=real_cache, layout="folder")
    assert len(trainval) == 9843 and trainval.points.shape == (9843, 1024, 3)
    assert trainval.num_classes == 40 and trainval.classes[0] == "airplane" and trainval.classes[39] == "xbox"
    assert sorted(set(trainval.labels.tolist())) == list(range(40))
    assert trainval.classes == sorted(trainval.classes)  # official order is alphabetical
    assert trainval.labels[trainval.files.index("airplane/train/airplane_0001.npy")] == 0
    assert trainval.labels[trainval.files.index("xbox/train/xbox_0001.npy")] == 39
    assert torch.isfinite(trainval.points).all()
    train = ModelNet40(shared_data, split="train", cache_dir=real_cache, layout="folder")
    val = ModelNet40(shared_data, split="val", cache_dir=real_cache, layout="folder")
    assert len(train) + len(val) == 9843 and set(train.files).isdisjoint(val.files)
    assert sorted(set(val.labels.tolist())) == list(range(40))


@pytest.mark.realdata("ModelNet40")
def test_real_modelnet40_test_split_is_missing(real_cache, shared_data):
    with pytest.raises(FileNotFoundError, match=r"ModelNet40 test split missing .*ModelNet40"):
        ModelNet40(shared_data, split="test", cache_dir=real_cache, layout="folder")


@pytest.mark.realdata("ModelNet40")
def test_real_modelnet40_text_layout(real_cache, shared_data):
    folder = shared_data / "modelnet40_normal_resampled"
    train = ModelNet40(shared_data, split="trainval", use_normals=True, cache_dir=real_cache, layout="text")
    test = ModelNet40(folder, split="test", cache_dir=real_cache)
    listed = (folder / "modelnet40_train.txt").read_text().split()
    assert len(train) == 68 == len(listed) and len(test) == 10
    assert [Path(f).stem for f in train.files] == listed
    assert train.num_classes == 40 and train.points.shape == (68, 1024, 6)
    assert test.classes[test.labels[0]] == Path(test.files[0]).parent.name
    source = np.loadtxt(folder / train.files[0], delimiter=",", max_rows=1024)
    np.testing.assert_allclose(train.points[0].numpy(), source, atol=1e-6)
