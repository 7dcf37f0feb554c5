"""Tests for pointea.data.synthetic: determinism, splits, labels, parts, geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pointea.data.synthetic import CATEGORIES, SyntheticShapes, generate_shape


@pytest.fixture(scope="module")
def train():
    return SyntheticShapes("train", num_points=256, num_samples=12, use_normals=True)


def test_same_seed_same_data_other_seed_other_data():
    a = SyntheticShapes("val", num_points=128, num_samples=3, seed=7)
    b = SyntheticShapes("val", num_points=128, num_samples=3, seed=7)
    c = SyntheticShapes("val", num_points=128, num_samples=3, seed=8)
    assert torch.equal(a.points, b.points) and torch.equal(a.parts, b.parts)
    assert not torch.equal(a.points, c.points)


def test_sample_depends_only_on_seed_split_and_index():
    small = SyntheticShapes("train", num_points=128, num_samples=2)
    large = SyntheticShapes("train", num_points=128, num_samples=5)
    # Index 0 is the first sphere in both; generation must not depend on the dataset size.
    assert torch.equal(small.points[0], large.points[0])


def test_splits_are_disjoint():
    clouds = {split: SyntheticShapes(split, num_points=64, num_samples=4).points for split in ("train", "val", "test")}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        distance = torch.cdist(clouds[a].flatten(1), clouds[b].flatten(1))
        assert distance.min() > 1e-3, (a, b)


def test_default_sizes_and_shapes():
    test = SyntheticShapes("test", num_points=32)
    assert len(test) == 16 * test.num_classes
    assert test.points.shape == (len(test), 32, 3) and test.points.dtype == torch.float32
    assert test.labels.shape == (len(test),) and test.labels.dtype == torch.int64
    assert test.parts.shape == (len(test), 32) and test.parts.dtype == torch.int64
    assert torch.bincount(test.labels).tolist() == [16] * test.num_classes
    assert test.in_channels == 3


def test_metadata_is_consistent(train):
    assert train.classes == train.categories == CATEGORIES and train.num_classes == len(CATEGORIES)
    flat = [p for parts in train.category_parts for p in parts]
    assert flat == list(range(train.num_parts)) == list(range(len(train.part_names)))
    for category, parts in zip(train.classes, train.category_parts):
        assert all(train.part_names[p].startswith(category + "/") for p in parts)
    assert train.part_names[train.category_parts[train.classes.index("lamp")][1]] == "lamp/pole"
    assert train.in_channels == 6 and train.points.shape[-1] == 6


def test_parts_belong_to_the_category_and_all_appear(train):
    for c, parts in enumerate(train.category_parts):
        mine = train.parts[train.labels == c]  # (S, N)
        assert torch.isin(mine, torch.tensor(parts)).all(), train.classes[c]
        for p in parts:
            present = (mine == p).any(dim=1).float().mean()
            assert present >= 0.9, f"{train.part_names[p]} present in only {present:.0%} of samples"


def test_geometry_unit_sphere_and_unit_normals(train):
    xyz, normals = train.points[..., :3], train.points[..., 3:]
    assert xyz.norm(dim=-1).max() <= 1 + 1e-5
    assert xyz.norm(dim=-1).amax(dim=1).min() > 0.9  # each shape fills the sphere
    assert xyz.mean(dim=1).abs().max() < 0.05  # centred
    torch.testing.assert_close(normals.norm(dim=-1), torch.ones(normals.shape[:2]), atol=1e-5, rtol=0)


def test_density_is_uniform_across_parts():
    # A cylinder of radius r and height h: body area 2 pi r h, caps 2 pi r^2, so the body gets
    # h / (h + r) of the points whatever the dimensions drawn.
    for seed in range(3):
        points, parts = generate_shape("cylinder", 6000, np.random.default_rng(seed))
        body = points[parts == 0, :3].astype(np.float64)
        radius = np.hypot(body[:, 0], body[:, 2]).mean()
        height = np.percentile(body[:, 1], 99.5) - np.percentile(body[:, 1], 0.5)
        expected = height / (height + radius)
        tolerance = 4 * np.sqrt(expected * (1 - expected) / len(points)) + 0.01
        assert abs((parts == 0).mean() - expected) < tolerance, (seed, (parts == 0).mean(), expected)
        caps = points[parts == 1]
        np.testing.assert_allclose(np.abs(caps[:, 4]), 1.0, atol=1e-5)  # normals along +-y
        np.testing.assert_allclose(points[parts == 0, 4], 0.0, atol=1e-5)


def test_normals_point_outwards_for_convex_shapes():
    for category in ("sphere", "box", "cylinder", "cone"):
        points, _ = generate_shape(category, 2000, np.random.default_rng(1))
        xyz, normals = points[:, :3], points[:, 3:]
        # For a convex shape, (p - centroid) . n > 0 away from noise-level distances.
        dots = ((xyz - xyz.mean(0)) * normals).sum(1)
        assert (dots > -0.05).mean() > 0.99, category


def test_items_and_transform():
    seen = []

    def transform(item):
        seen.append(item)
        return {**item, "points": item["points"] * 2}

    data = SyntheticShapes("val", num_points=64, num_samples=1, transform=transform)
    item = data[3]
    assert set(item) == {"points", "label", "category", "parts"}
    assert item["points"].shape == (64, 3) and item["parts"].shape == (64,)
    assert item["label"].dtype == torch.int64 and item["label"].ndim == 0
    assert int(item["label"]) == int(item["category"]) == 3
    torch.testing.assert_close(item["points"], data.points[3] * 2)
    assert torch.isin(item["parts"], torch.tensor(data.category_parts[3])).all()
    loader = torch.utils.data.DataLoader(SyntheticShapes("val", num_points=64, num_samples=1), batch_size=4)
    batch = next(iter(loader))
    assert batch["points"].shape == (4, 64, 3) and batch["label"].shape == (4,)


def test_bad_arguments():
    with pytest.raises(ValueError, match="split must be one of train, val, test, got 'dev'"):
        SyntheticShapes("dev")
    with pytest.raises(ValueError, match="num_points"):
        SyntheticShapes(num_points=0)
    with pytest.raises(ValueError, match="unknown category 'pyramid'"):
        generate_shape("pyramid", 10, np.random.default_rng(0))
