"""Tests for pointea.data.shapenetpart: tables, the three layouts, resampling, cache, bad input."""

import json
import os
import stat
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pointea.data import shapenetpart
from pointea.data.shapenetpart import (
    NUM_PARTS,
    SHAPENETPART_CATEGORIES,
    SHAPENETPART_CATEGORY_PARTS,
    SHAPENETPART_PART_NAMES,
    SHAPENETPART_SYNSETS,
    ShapeNetPart,
)

REAL_V0 = "shapenetcore_partanno_segmentation_benchmark_v0"  # folder of the real sample in ../shared/data

AIRPLANE, LAMP, MUG = "02691156", "03636649", "03797390"
CATEGORY_OF = {synset: i for i, synset in enumerate(SHAPENETPART_SYNSETS.values())}

# Shapes per split: (synset, id, number of points); Airplane 0, Lamp 8, Mug 11.
SPLIT_SHAPES = {
    "train": [(AIRPLANE, "a1", 30), (AIRPLANE, "a2", 25), (LAMP, "l1", 12), (MUG, "m1", 40)],
    "val": [(LAMP, "l2", 20)],
    "test": [(AIRPLANE, "a3", 18), (MUG, "m2", 9)],
}

# --------------------------------------------------------------------------- fixture writers


def _shape_arrays(synset, shape_id, n):
    """Deterministic points (n, 6) and 1-based local part labels for one shape."""
    rng = np.random.default_rng(zlib.crc32(f"{synset}/{shape_id}".encode()))
    points = rng.uniform(-1, 1, (n, 6)).round(5)
    local = rng.integers(1, len(SHAPENETPART_CATEGORY_PARTS[CATEGORY_OF[synset]]) + 1, n)
    return points, local


def _global_parts(synset, local):
    return np.asarray(SHAPENETPART_CATEGORY_PARTS[CATEGORY_OF[synset]])[local - 1]


def _write_common(folder, splits):
    (folder / "train_test_split").mkdir(parents=True)
    (folder / "synsetoffset2category.txt").write_text(
        "".join(f"{name}\t{synset}\n" for name, synset in SHAPENETPART_SYNSETS.items())
    )
    for split in splits:
        entries = [f"shape_data/{s}/{i}" for s, i, _ in SPLIT_SHAPES[split]]
        (folder / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(json.dumps(entries))


def write_normal_layout(root, splits=("train", "val", "test")):
    folder = root / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
    _write_common(folder, splits)
    for split in splits:
        for synset, shape_id, n in SPLIT_SHAPES[split]:
            points, local = _shape_arrays(synset, shape_id, n)
            (folder / synset).mkdir(exist_ok=True)
            table = np.concatenate([points, _global_parts(synset, local)[:, None]], axis=1)
            np.savetxt(folder / synset / f"{shape_id}.txt", table, fmt=["%.5f"] * 6 + ["%d"])
    return folder


def write_v0_layout(root, splits=("train", "val", "test")):
    folder = root / "shapenetcore_partanno_segmentation_benchmark_v0"
    _write_common(folder, splits)
    for split in splits:
        for synset, shape_id, n in SPLIT_SHAPES[split]:
            points, local = _shape_arrays(synset, shape_id, n)
            (folder / synset / "points").mkdir(parents=True, exist_ok=True)
            (folder / synset / "points_label").mkdir(exist_ok=True)
            np.savetxt(folder / synset / "points" / f"{shape_id}.pts", points[:, :3], fmt="%.5f")
            np.savetxt(folder / synset / "points_label" / f"{shape_id}.seg", local, fmt="%d")
    return folder


def write_hdf5_layout(root, list_files=True, normals=False, points=16):
    folder = root / "hdf5_data"
    folder.mkdir(parents=True)
    (folder / "all_object_categories.txt").write_text(
        "".join(f"{name}\t{synset}\n" for name, synset in SHAPENETPART_SYNSETS.items())
    )
    rng = np.random.default_rng(0)
    for split, files in (("train", 2), ("val", 1), ("test", 1)):
        names = [f"ply_data_{split}{i}.h5" for i in range(files)]
        for name in names:
            labels = rng.integers(0, 16, 3)
            pid = np.stack([rng.choice(SHAPENETPART_CATEGORY_PARTS[c], points) for c in labels])
            with h5py.File(folder / name, "w") as f:
                f["data"] = rng.uniform(-1, 1, (3, points, 3)).astype(np.float32)
                f["label"] = labels[:, None].astype(np.uint8)
                f["pid"] = pid.astype(np.uint8)
                if normals:
                    f["normal"] = rng.uniform(-1, 1, (3, points, 3)).astype(np.float32)
        if list_files:
            (folder / f"{split}_hdf5_file_list.txt").write_text("".join(f"{n}\n" for n in names))
    return folder


def files_under(folder):
    folder = Path(folder)
    if not folder.exists():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- tables


def test_category_part_table():
    assert len(SHAPENETPART_CATEGORIES) == 16 and NUM_PARTS == 50
    flat = [p for parts in SHAPENETPART_CATEGORY_PARTS for p in parts]
    assert flat == list(range(50))  # contiguous global numbering in category order
    expected = {"Airplane": [0, 1, 2, 3], "Car": [8, 9, 10, 11], "Motorbike": [30, 31, 32, 33, 34, 35],
                "Mug": [36, 37], "Table": [47, 48, 49]}
    for name, parts in expected.items():
        assert SHAPENETPART_CATEGORY_PARTS[SHAPENETPART_CATEGORIES.index(name)] == parts
    assert len(SHAPENETPART_PART_NAMES) == 50 and SHAPENETPART_PART_NAMES[30] == "Motorbike/part1"
    assert SHAPENETPART_SYNSETS["Table"] == "04379243"


# --------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("writer, layout", [(write_normal_layout, "normal"), (write_v0_layout, "v0")])
def test_text_layouts_whole_clouds(tmp_path, cache_dir, writer, layout):
    folder = writer(tmp_path)
    ds = ShapeNetPart(tmp_path, split="train", num_points=None, cache_dir=cache_dir)
    assert ds.layout == layout and len(ds) == 4 and ds.num_classes == 16 and ds.num_parts == 50
    assert ds.categories == list(SHAPENETPART_CATEGORIES) and ds.category_parts == SHAPENETPART_CATEGORY_PARTS
    assert ds.labels.tolist() == [0, 0, 8, 11]
    assert ds.files == [f"{AIRPLANE}/a1", f"{AIRPLANE}/a2", f"{LAMP}/l1", f"{MUG}/m1"]
    item = ds[2]
    points, local = _shape_arrays(LAMP, "l1", 12)
    assert item["points"].shape == (12, 3) and item["points"].dtype == torch.float32
    np.testing.assert_allclose(item["points"].numpy(), points[:, :3], atol=1e-5)
    assert item["parts"].dtype == torch.int64 and item["parts"].tolist() == _global_parts(LAMP, local).tolist()
    assert item["category"].dtype == torch.int64 and int(item["category"]) == 8
    # ragged storage: concatenated clouds + offsets; no fixed-size ``points`` tensor to misread
    assert ds.offsets.tolist() == [0, 30, 55, 67, 107] and ds.flat_points.shape == (107, 3)
    torch.testing.assert_close(ds.flat_points[55:67], item["points"])
    assert ds.flat_parts[55:67].tolist() == item["parts"].tolist()
    assert not hasattr(ds, "points") and folder.exists()


def test_normal_layout_normals(tmp_path, cache_dir):
    write_normal_layout(tmp_path)
    ds = ShapeNetPart(tmp_path, split="test", num_points=None, use_normals=True, cache_dir=cache_dir)
    assert ds.in_channels == 6 and ds[1]["points"].shape == (9, 6)
    np.testing.assert_allclose(ds[1]["points"].numpy(), _shape_arrays(MUG, "m2", 9)[0], atol=1e-5)


def test_v0_layout_has_no_normals(tmp_path, cache_dir):
    write_v0_layout(tmp_path)
    with pytest.raises(ValueError, match="use_normals=True but the v0 layout .* has no normals"):
        ShapeNetPart(tmp_path, use_normals=True, cache_dir=cache_dir)


@pytest.mark.parametrize("list_files", [True, False])
def test_hdf5_layout(tmp_path, cache_dir, list_files):
    folder = write_hdf5_layout(tmp_path, list_files=list_files)
    ds = ShapeNetPart(tmp_path, split="train", num_points=None, cache_dir=cache_dir)
    assert ds.layout == "hdf5" and len(ds) == 6 and ds.files[3] == "ply_data_train1.h5:0"
    with h5py.File(folder / "ply_data_train1.h5", "r") as f:
        np.testing.assert_array_equal(ds[4]["points"].numpy(), f["data"][1])
        assert ds[4]["parts"].tolist() == f["pid"][1].tolist()
        assert int(ds[4]["category"]) == int(f["label"][1, 0])
    assert len(ShapeNetPart(folder, split="trainval", cache_dir=cache_dir)) == 9
    assert files_under(cache_dir) == []  # packed arrays are read directly


def test_hdf5_layout_normals(tmp_path, cache_dir):
    write_hdf5_layout(tmp_path, normals=True)
    assert ShapeNetPart(tmp_path, split="test", use_normals=True, num_points=8, cache_dir=cache_dir)[0][
        "points"].shape == (8, 6)
    (tmp_path / "plain").mkdir()
    write_hdf5_layout(tmp_path / "plain")
    with pytest.raises(ValueError, match=r"ply_data_test0\.h5: use_normals=True .*'normal'"):
        ShapeNetPart(tmp_path / "plain", split="test", use_normals=True, cache_dir=cache_dir)


def test_layout_choice_and_missing_root(tmp_path, cache_dir):
    write_v0_layout(tmp_path)
    write_hdf5_layout(tmp_path)
    assert ShapeNetPart(tmp_path, cache_dir=cache_dir).layout == "hdf5"
    assert ShapeNetPart(tmp_path, cache_dir=cache_dir, layout="v0").layout == "v0"
    with pytest.raises(FileNotFoundError, match="v0_normal/synsetoffset2category.txt"):
        ShapeNetPart(tmp_path, cache_dir=cache_dir, layout="normal")
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=f"does not exist.*pointea download shapenetpart --data-root {missing}"):
        ShapeNetPart(missing, cache_dir=cache_dir)


# --------------------------------------------------------------------------- splits, categories, sampling


def test_splits(tmp_path, cache_dir):
    write_normal_layout(tmp_path)
    sizes = {s: len(ShapeNetPart(tmp_path, split=s, cache_dir=cache_dir)) for s in ("train", "val", "trainval", "test")}
    assert sizes == {"train": 4, "val": 1, "trainval": 5, "test": 2}
    trainval = ShapeNetPart(tmp_path, split="trainval", num_points=None, cache_dir=cache_dir)
    assert trainval.files[-1] == f"{LAMP}/l2" and trainval[4]["points"].shape == (20, 3)


def test_category_filter(tmp_path, cache_dir):
    write_v0_layout(tmp_path)
    ds = ShapeNetPart(tmp_path, categories=["mug", "AIRPLANE"], num_points=None, cache_dir=cache_dir)
    assert ds.files == [f"{AIRPLANE}/a1", f"{AIRPLANE}/a2", f"{MUG}/m1"]
    assert ds.labels.tolist() == [0, 0, 11] and ds.selected_categories == ["Airplane", "Mug"]
    assert len(ds.categories) == 16  # ids stay global
    assert ds[2]["points"].shape == (40, 3) and set(ds[2]["parts"].tolist()) <= {36, 37}
    assert len(ShapeNetPart(tmp_path, categories="Lamp", cache_dir=cache_dir)) == 1
    with pytest.raises(ValueError, match="unknown ShapeNetPart category 'planes'; valid: Airplane, Bag, Cap"):
        ShapeNetPart(tmp_path, categories=["planes"], cache_dir=cache_dir)
    with pytest.raises(ValueError, match="has no shapes of Bag"):
        ShapeNetPart(tmp_path, categories=["bag"], cache_dir=cache_dir)


def test_resampling(tmp_path, cache_dir):
    write_v0_layout(tmp_path)
    whole = ShapeNetPart(tmp_path, split="train", num_points=None, cache_dir=cache_dir)
    train = ShapeNetPart(tmp_path, split="train", num_points=20, cache_dir=cache_dir)
    item = train[0]  # 30 points -> 20 distinct ones, parts follow their points
    assert item["points"].shape == (20, 3) and item["parts"].shape == (20,)
    rows = {tuple(p): part for p, part in zip(whole[0]["points"].tolist(), whole[0]["parts"].tolist())}
    assert len({tuple(p) for p in item["points"].tolist()}) == 20
    assert all(rows[tuple(p)] == part for p, part in zip(item["points"].tolist(), item["parts"].tolist()))
    short = train[2]  # 12 points -> all of them plus 8 repeats
    assert {tuple(p) for p in short["points"].tolist()} == {tuple(p) for p in whole[2]["points"].tolist()}
    torch.manual_seed(0)
    first = train[0]["points"]
    torch.manual_seed(1)
    assert not torch.equal(first, train[0]["points"])  # train draws from the torch RNG

    test = ShapeNetPart(tmp_path, split="test", num_points=10, cache_dir=cache_dir)
    assert torch.equal(test[0]["points"], test[0]["points"])  # deterministic per index
    other_seed = ShapeNetPart(tmp_path, split="test", num_points=10, cache_dir=cache_dir, seed=1)
    assert not torch.equal(test[0]["points"], other_seed[0]["points"])


def test_transform_and_repr(tmp_path, cache_dir):
    write_v0_layout(tmp_path)

    def scale(item):
        return {**item, "points": item["points"] * 2}

    ds = ShapeNetPart(tmp_path, split="test", num_points=None, transform=scale, cache_dir=cache_dir)
    plain = ShapeNetPart(tmp_path, split="test", num_points=None, cache_dir=cache_dir)
    torch.testing.assert_close(ds[0]["points"], plain[0]["points"] * 2)
    assert "ShapeNetPart(split='test', layout='v0', shapes=2" in repr(ds)
    with pytest.raises(ValueError, match="split must be one of train, val, trainval, test"):
        ShapeNetPart(tmp_path, split="testing")
    with pytest.raises(ValueError, match="num_points must be a positive int or None"):
        ShapeNetPart(tmp_path, num_points=-1)


# --------------------------------------------------------------------------- cache


def test_cache_reuse_and_invalidation(tmp_path, cache_dir, monkeypatch):
    folder = write_v0_layout(tmp_path)
    first = ShapeNetPart(tmp_path, split="train", num_points=None, cache_dir=cache_dir)
    names = files_under(cache_dir)
    assert len(names) == 1 and names[0].startswith("shapenetpart/v0-train-xyz-")
    original = shapenetpart.read_v0_shape

    def fail(*args, **kwargs):
        raise AssertionError("a source file was parsed on a warm load")

    monkeypatch.setattr(shapenetpart, "read_v0_shape", fail)
    warm = ShapeNetPart(tmp_path, split="train", num_points=None, categories=["lamp"], cache_dir=cache_dir)
    assert warm.files == [f"{LAMP}/l1"]
    torch.testing.assert_close(warm[0]["points"], first[2]["points"])

    seg = folder / LAMP / "points_label" / "l1.seg"
    seg.write_text("1\n" * 12)
    later = seg.stat().st_mtime_ns + 2_000_000_000
    os.utime(seg, ns=(later, later))
    with pytest.raises(AssertionError, match="parsed on a warm load"):  # a changed source: rebuild
        ShapeNetPart(tmp_path, split="train", cache_dir=cache_dir)
    monkeypatch.setattr(shapenetpart, "read_v0_shape", original)
    rebuilt = ShapeNetPart(tmp_path, split="train", num_points=None, cache_dir=cache_dir)
    assert rebuilt[2]["parts"].tolist() == [24] * 12
    assert len(files_under(cache_dir)) == 1


def test_read_only_data_root(tmp_path, cache_dir):
    data = tmp_path / "data"
    write_normal_layout(data)
    before = files_under(data)
    modes = {}
    for path in [data, *data.rglob("*")]:
        modes[path] = path.stat().st_mode
        path.chmod(stat.S_IMODE(modes[path]) & ~0o222)
    try:
        assert len(ShapeNetPart(data, split="trainval", cache_dir=cache_dir)) == 5
        assert files_under(data) == before
        assert len(files_under(cache_dir)) == 2  # one ragged cache per official split
    finally:
        for path, mode in modes.items():
            path.chmod(stat.S_IMODE(mode))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "seg, pts, message",
    [
        ("1\n2\n5\n" + "1\n" * 27, None, r"a1\.seg: label 5 at row 2 is outside 1\.\.4, the 4 parts of Airplane"),
        ("0\n" * 30, None, r"a1\.seg: label 0 at row 0 is outside 1\.\.4"),
        ("1\n" * 29, None, r"a1\.seg: 29 labels for the 30 points of a1\.pts"),
        (None, "0 0 0\n1 1\n", r"a1\.pts: malformed rows"),
        (None, "0 0 0 0\n1 1 1 1\n", r"a1\.pts: rows have 4 columns, expected 3"),
        (None, "0 0 0\nnan 1 1\n", r"a1\.pts: 1 of 2 rows contain NaN or inf"),
        (None, "", r"a1\.pts: empty cloud"),
    ],
)
def test_v0_bad_files(tmp_path, cache_dir, seg, pts, message):
    folder = write_v0_layout(tmp_path)
    if seg is not None:
        (folder / AIRPLANE / "points_label" / "a1.seg").write_text(seg)
    if pts is not None:
        (folder / AIRPLANE / "points" / "a1.pts").write_text(pts)
    with pytest.raises(ValueError, match=message):
        ShapeNetPart(tmp_path, split="train", cache_dir=cache_dir)
    assert files_under(cache_dir) == []  # no half-written cache


def test_normal_layout_bad_files(tmp_path, cache_dir):
    folder = write_normal_layout(tmp_path)
    path = folder / MUG / "m1.txt"
    path.write_text("0 0 0 0 0 1 36\n0 0 0 0 0 1 12\n")
    with pytest.raises(ValueError, match=r"m1\.txt: part id 12 at point 1 is outside the parts of Mug \(36\.\.37\)"):
        ShapeNetPart(tmp_path, cache_dir=cache_dir)
    path.write_text("0 0 0 0 0 1\n")
    with pytest.raises(ValueError, match=r"m1\.txt: rows have 6 columns, expected 7"):
        ShapeNetPart(tmp_path, cache_dir=cache_dir)
    path.write_text("0 0 inf 0 0 1 36\n")
    with pytest.raises(ValueError, match=r"m1\.txt: .*NaN or inf"):
        ShapeNetPart(tmp_path, cache_dir=cache_dir)
    assert files_under(cache_dir) == []


def test_missing_lists_and_files(tmp_path, cache_dir):
    folder = write_normal_layout(tmp_path, splits=("train",))
    with pytest.raises(FileNotFoundError, match=r"ShapeNetPart test split missing .*shuffled_test_file_list\.json"):
        ShapeNetPart(tmp_path, split="test", cache_dir=cache_dir)
    with pytest.raises(FileNotFoundError, match=r"val split missing"):
        ShapeNetPart(tmp_path, split="trainval", cache_dir=cache_dir)
    (folder / LAMP / "l1.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"l1\.txt listed in .*shuffled_train_file_list\.json not found"):
        ShapeNetPart(tmp_path, cache_dir=cache_dir)
    split_list = folder / "train_test_split" / "shuffled_train_file_list.json"
    split_list.write_text(json.dumps(["shape_data/99999999/x"]))
    with pytest.raises(ValueError, match=r"shuffled_train_file_list\.json: entry .* synset '99999999'"):
        ShapeNetPart(tmp_path, cache_dir=cache_dir)
    split_list.write_text("[not json")
    with pytest.raises(ValueError, match=r"shuffled_train_file_list\.json: not a JSON list"):
        ShapeNetPart(tmp_path, cache_dir=cache_dir)
    # only the complete train cache written while loading trainval; no partial file
    assert [Path(name).name.split("-")[:2] for name in files_under(cache_dir)] == [["normal", "train"]]


def _rewrite_h5(path, **datasets):
    path.unlink()
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f[name] = value


def test_hdf5_bad_files(tmp_path, cache_dir):
    folder = write_hdf5_layout(tmp_path, points=4)
    target = folder / "ply_data_train1.h5"

    def load():
        return ShapeNetPart(tmp_path, split="train", cache_dir=cache_dir)

    data = np.zeros((2, 4, 3), np.float32)
    good_pid = np.array([[0, 1, 2, 3], [36, 37, 36, 37]], np.uint8)
    _rewrite_h5(target, data=data, label=np.array([[0], [16]], np.uint8), pid=good_pid)
    with pytest.raises(ValueError, match=r"ply_data_train1\.h5: category label 16 at index 1 is outside the 16"):
        load()
    _rewrite_h5(target, data=data, label=np.array([[0], [11]], np.uint8), pid=good_pid + 50)
    with pytest.raises(ValueError, match=r"ply_data_train1\.h5: part id 50 .*outside the 50 classes"):
        load()
    _rewrite_h5(target, data=data, label=np.array([[0], [0]], np.uint8), pid=good_pid)
    outside = r"ply_data_train1\.h5 \[shape 1\]: part id 36 at point 0 is outside the parts of Airplane"
    with pytest.raises(ValueError, match=outside):
        load()
    _rewrite_h5(target, data=data, label=np.array([[0], [11]], np.uint8))
    with pytest.raises(ValueError, match=r"ply_data_train1\.h5: missing HDF5 dataset 'pid'"):
        load()
    _rewrite_h5(target, data=data, label=np.array([[0], [11]], np.uint8), pid=good_pid[:, :3])
    with pytest.raises(ValueError, match=r"ply_data_train1\.h5: .*do not describe the same shapes"):
        load()
    _rewrite_h5(target, data=data, label=np.array([[0], [11]], np.uint8), pid=good_pid)
    payload = target.read_bytes()
    target.write_bytes(payload[:300])
    with pytest.raises(ValueError, match=r"ply_data_train1\.h5: cannot read HDF5 file"):
        load()
    (folder / "ply_data_val0.h5").unlink()
    with pytest.raises(FileNotFoundError, match=r"ply_data_val0\.h5 listed in .*val_hdf5_file_list\.txt"):
        ShapeNetPart(tmp_path, split="val", cache_dir=cache_dir)


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("shapenetpart_real_cache")


@pytest.mark.realdata(REAL_V0)
def test_real_v0_shapes(real_cache, shared_data):
    ds = ShapeNetPart(shared_data, split="train", num_points=None, cache_dir=real_cache, layout="v0")
    assert len(ds) == 16 and sorted(ds.labels.tolist()) == list(range(16))
    for i in range(len(ds)):
        item = ds[i]
        parts = SHAPENETPART_CATEGORY_PARTS[int(item["category"])]
        assert 2209 <= len(item["points"]) <= 2834
        assert set(item["parts"].tolist()) <= set(parts)
        assert ds.files[i].split("/")[0] == SHAPENETPART_SYNSETS[ds.categories[int(item["category"])]]
    sampled = ShapeNetPart(shared_data / REAL_V0, split="train", num_points=2048, cache_dir=real_cache)
    assert sampled[0]["points"].shape == (2048, 3)


@pytest.mark.realdata(REAL_V0)
def test_real_v0_test_split_is_missing(real_cache, shared_data):
    with pytest.raises(FileNotFoundError, match=r"ShapeNetPart test split missing .*shuffled_test_file_list\.json"):
        ShapeNetPart(shared_data, split="test", cache_dir=real_cache)
