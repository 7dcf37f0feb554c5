"""Tests for pointea.data.dedup: near-duplicate groups, the grouped holdout, its cache and the
ModelNet ``val_split="grouped"`` option."""

import numpy as np
import pytest

from pointea.config import DataConfig
from pointea.data import dedup
from pointea.data.catalog import DATASETS
from pointea.data.dedup import (
    GROUP_POINTS,
    cached_duplicate_groups,
    duplicate_counts,
    duplicate_groups,
    grouped_holdout,
    occupancy_grids,
)
from pointea.data.layout import stratified_holdout
from pointea.data.modelnet import ModelNet40

POINTS = 256


def blob_shape(anchors_seed: int, sample_seed: int, points: int = POINTS) -> np.ndarray:
    """A shape of 4 tight clusters at anchors drawn from ``anchors_seed``; ``sample_seed`` draws
    its points, so two samples of one anchor set are near-identical twins."""
    anchors = np.random.default_rng(anchors_seed).uniform(-1, 1, (4, 3))
    rng = np.random.default_rng([anchors_seed, sample_seed])
    which = np.arange(points) % 4  # balanced clusters: the centroid does not move between twins
    return (anchors[which] + rng.normal(0, 0.02, (points, 3))).astype(np.float32)


def test_occupancy_grids_are_alignment_aware_and_scale_free():
    cloud = blob_shape(0, 0)
    grids = occupancy_grids(np.stack([cloud, 3 * cloud + 5, cloud[:, [1, 0, 2]]]), resolution=8)
    assert grids.shape == (3, 512) and grids.dtype == bool
    assert np.array_equal(grids[0], grids[1])  # translation and scale are normalised away
    assert not np.array_equal(grids[0], grids[2])  # a rotated (axis-swapped) copy is another shape
    with pytest.raises(ValueError, match="points must be"):
        occupancy_grids(cloud)


def test_twins_share_a_group_and_distinct_shapes_do_not():
    # shapes 0..5 distinct; 6, 7 resample shape 1 and 8 resamples shape 4
    anchors = [0, 1, 2, 3, 4, 5, 1, 1, 4]
    points = np.stack([blob_shape(a, i) for i, a in enumerate(anchors)])
    groups = duplicate_groups(points)
    assert groups.tolist() == [0, 1, 2, 3, 4, 5, 1, 1, 4]  # numbered by first shape
    # blocks smaller than the set give the same components (the block loop joins across blocks)
    original = dedup._BLOCK
    try:
        dedup._BLOCK = 2
        assert duplicate_groups(points).tolist() == groups.tolist()
    finally:
        dedup._BLOCK = original
    assert duplicate_groups(points, threshold=1.0).tolist() == list(range(9))
    with pytest.raises(ValueError, match="threshold"):
        duplicate_groups(points, threshold=0)


def chain_shape(pairs: list, seed: int) -> np.ndarray:
    """Four fixed corner clusters and three centre-symmetric pairs of clusters chosen by index
    (the centroid and radius stay put), each cluster one voxel wide: two shapes sharing two of
    their three pairs score IoU 6/9 = 0.67, sharing one pair 4/12 = 0.43 (threshold 0.5)."""
    corners = np.array([[1, 1, 1], [-1, -1, -1], [1, -1, 1], [-1, 1, -1]])
    offsets = np.random.default_rng(0).uniform(-0.8, 0.8, (5, 3))[pairs]
    centres = np.concatenate([corners, offsets, -offsets])
    noise = np.random.default_rng(seed).normal(0, 0.001, (POINTS, 3))
    return (centres[np.arange(POINTS) % len(centres)] + noise).astype(np.float32)


def test_duplicate_counts_are_direct_twins_where_groups_chain():
    # a ~ b ~ c but a !~ c (one shared pair of three); d resamples a
    points = np.stack([chain_shape([0, 1, 2], 0), chain_shape([0, 1, 3], 1), chain_shape([0, 3, 4], 2),
                       chain_shape([0, 1, 2], 3)])
    assert duplicate_groups(points).tolist() == [0, 0, 0, 0]  # the chain joins all four
    counts = duplicate_counts(points)
    assert counts.tolist() == [3, 4, 2, 3]  # itself included
    grids = occupancy_grids(points).astype(np.float64)  # reference: the dense IoU matrix
    inter = grids @ grids.T
    iou = inter / (grids.sum(1)[:, None] + grids.sum(1)[None, :] - inter)
    assert np.array_equal(counts, (iou >= dedup.DUPLICATE_IOU).sum(1))
    original = dedup._BLOCK
    try:
        dedup._BLOCK = 3  # pairs across and inside blocks are each counted once
        assert duplicate_counts(points).tolist() == counts.tolist()
    finally:
        dedup._BLOCK = original
    assert duplicate_counts(points, threshold=1.0).tolist() == [2, 1, 1, 2]  # a and d: same voxels
    with pytest.raises(ValueError, match="threshold"):
        duplicate_counts(points, threshold=1.5)


def _labelled_groups():
    """3 classes of 20 shapes; class 0 holds a group of 4 and two pairs, class 2 a group of 15."""
    labels = np.repeat([0, 1, 2], 20)
    groups = np.arange(60)
    groups[[0, 5, 9, 13]] = 0
    groups[[1, 2]] = 1
    groups[[3, 17]] = 3
    groups[40:55] = 40
    return labels, groups


def test_grouped_holdout_keeps_groups_whole_and_classes_stratified():
    labels, groups = _labelled_groups()
    for seed in range(20):
        mask = grouped_holdout(labels, groups, 0.25, seed)
        for g in np.unique(groups):
            assert len(set(mask[groups == g])) == 1, f"group {g} split (seed {seed})"
        assert mask[40:55].sum() == 0  # larger than class 2's share: stays in training
        counts = np.bincount(labels[mask], minlength=3)
        assert counts.tolist() == [5, 5, 5]  # round(0.25 * 20) per class, as the stratified carve
        stratified = stratified_holdout(labels, 0.25, seed)
        assert np.array_equal(counts, np.bincount(labels[stratified], minlength=3))


def test_grouped_holdout_is_deterministic_and_seeded():
    labels, groups = _labelled_groups()
    first = grouped_holdout(labels, groups, 0.25, 3)
    assert np.array_equal(first, grouped_holdout(labels, groups, 0.25, 3))
    assert not np.array_equal(first, grouped_holdout(labels, groups, 0.25, 4))
    assert not grouped_holdout(labels, groups, 0.0, 3).any()


def test_grouped_holdout_keeps_a_training_shape_when_a_class_is_one_group():
    labels = np.array([0] * 6 + [1] * 6)
    groups = np.array([0] * 6 + list(range(1, 7)))
    mask = grouped_holdout(labels, groups, 0.5, 0)
    assert mask[:6].sum() == 0 and mask[6:].sum() == 3
    with pytest.raises(ValueError, match="differ in shape"):
        grouped_holdout(labels, groups[:-1], 0.5, 0)


def test_groups_are_cached_and_keyed_by_the_clouds(tmp_path, monkeypatch):
    points = np.stack([blob_shape(a, i) for i, a in enumerate([0, 1, 0])])
    kwargs = dict(namespace="modelnet40", label="folder-train", root=tmp_path, cache_dir=tmp_path / "cache")
    first = cached_duplicate_groups(points, **kwargs)
    assert first.tolist() == [0, 1, 0]
    assert len(list((tmp_path / "cache" / "modelnet40").glob("folder-train-groups-*.npz"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("groups recomputed despite a cache")

    monkeypatch.setattr(dedup, "duplicate_groups", fail)
    assert cached_duplicate_groups(points, **kwargs).tolist() == [0, 1, 0]
    changed = points.copy()
    changed[2] = blob_shape(2, 2)  # other clouds: a new key, so the groups are computed again
    with pytest.raises(AssertionError, match="recomputed"):
        cached_duplicate_groups(changed, **kwargs)


def write_twin_folder_layout(root, points=GROUP_POINTS):
    """ModelNet40 folder layout, 2 classes x 12 train shapes, each class holding 3 twin triples."""
    anchors = {"airplane": [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 4, 5],
               "chair": [10, 10, 10, 11, 11, 11, 12, 12, 12, 13, 14, 15]}
    for cls, seeds in anchors.items():
        folder = root / "ModelNet40" / cls / "train"
        folder.mkdir(parents=True)
        for number, anchor in enumerate(seeds, start=1):
            np.save(folder / f"{cls}_{number:04d}.npy", blob_shape(anchor, number, points))
    return anchors


def test_modelnet_grouped_val_split(tmp_path, cache_dir):
    anchors = write_twin_folder_layout(tmp_path)
    twins = {f"{cls}/train/{cls}_{i + 1:04d}.npy": (cls, anchor)
             for cls, seeds in anchors.items() for i, anchor in enumerate(seeds)}

    def make(split, num_points=64, **kw):
        return ModelNet40(tmp_path, split=split, num_points=num_points, val_fraction=0.25,
                          cache_dir=cache_dir, **kw)

    for seed in range(4):
        val = make("val", val_split="grouped", split_seed=seed)
        train = make("train", val_split="grouped", split_seed=seed)
        assert len(val) == 6 and len(train) == 18  # 3 per class, as the stratified carve
        assert not set(val.files) & set(train.files)
        assert not {twins[f] for f in val.files} & {twins[f] for f in train.files}  # no twin across
        # the val split loaded at another point count (as training loads val and train) is the same
        assert make("val", val_split="grouped", split_seed=seed, num_points=GROUP_POINTS).files == val.files
    stratified = make("val")  # the default is unchanged
    trainval = make("trainval")
    expected = [f for f, k in zip(trainval.files, stratified_holdout(trainval.labels.numpy(), 0.25, 0)) if k]
    assert stratified.files == expected
    with pytest.raises(ValueError, match="val_split must be one of stratified, grouped; got 'random'"):
        make("val", val_split="random")


def test_modelnet_grouped_needs_enough_points(tmp_path, cache_dir):
    write_twin_folder_layout(tmp_path, points=100)
    expected = "compares shapes on their first 1024 points: .*airplane_0001.npy: has 100 points"
    with pytest.raises(ValueError, match=expected):
        ModelNet40(tmp_path, split="val", num_points=64, cache_dir=cache_dir, val_split="grouped")


def test_config_and_catalog_pass_val_split():
    assert DataConfig().val_split == "stratified"
    for name in ("modelnet40", "modelnet10"):
        assert DATASETS[name].options({"val_split": "grouped"}, "val")["val_split"] == "grouped"
        assert DATASETS[name].options({}, "val")["val_split"] == "stratified"
