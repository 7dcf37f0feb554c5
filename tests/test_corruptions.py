"""ModelNet-C corruptions: output sizes, seeding, severity ordering and what each keeps intact."""

from collections import Counter

import numpy as np
import pytest
import torch

from pointea.data.corruptions import (
    CORRUPTIONS,
    SCALE_LIMITS,
    corrupt_cloud,
    corrupt_rotate,
    corrupt_scale,
)
from pointea.data.synthetic import SyntheticShapes
from pointea.data.transforms import NormalizeUnitSphere

# points out of a 1,024-point cloud at levels 0..4, as ModelNet-C's files hold them
EXPECTED_SIZES = {
    "scale": [1024] * 5,
    "jitter": [1024] * 5,
    "rotate": [1024] * 5,
    "dropout_global": [768, 640, 512, 384, 256],
    "dropout_local": [924, 824, 724, 624, 524],
    "add_global": [1034, 1044, 1054, 1064, 1074],
    "add_local": [1124, 1224, 1324, 1424, 1524],
}


def shape(num_points, index=3):
    shapes = SyntheticShapes("test", num_points=num_points, num_samples=1, transform=NormalizeUnitSphere())
    return shapes[index]["points"].numpy().astype(np.float64)


@pytest.fixture(scope="module")
def cloud():
    return shape(1024)


def nearest(a, b):
    """Distance from each point of ``a`` to its nearest point of ``b``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)).min(axis=1)


def chamfer(a, b):
    return nearest(a, b).mean() + nearest(b, a).mean()


def rows(points):
    """The cloud's points as a multiset (exact float32 values)."""
    return Counter(p.tobytes() for p in np.asarray(points, np.float32))


def test_the_table_lists_the_seven_benchmark_corruptions():
    assert list(CORRUPTIONS) == list(EXPECTED_SIZES)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_output_sizes_are_the_benchmarks_and_scale_with_the_cloud(name, cloud):
    for level, size in enumerate(EXPECTED_SIZES[name]):
        out = corrupt_cloud(cloud, name, level, seed=7)
        assert out.shape == (size, 3) and out.dtype == np.float32 and np.isfinite(out).all()
        half = corrupt_cloud(cloud[:512], name, level, seed=7)
        # counts defined for 1,024 points scale with the cloud: the same fraction is dropped or added
        assert half.shape == (round(size / 2), 3)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_same_seed_same_cloud_other_seed_other_cloud(name, cloud):
    before = cloud.copy()
    first = corrupt_cloud(cloud, name, 2, seed=(0, 5))
    corrupt_cloud(cloud, name, 2, seed=(0, 4))  # another cloud's draw in between changes nothing
    np.testing.assert_array_equal(corrupt_cloud(cloud, name, 2, seed=(0, 5)), first)
    assert not np.array_equal(corrupt_cloud(cloud, name, 2, seed=(0, 6)), first)
    assert not np.array_equal(corrupt_cloud(cloud, name, 2, seed=(1, 5)), first)
    np.testing.assert_array_equal(cloud, before)  # the input is never modified


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_higher_levels_perturb_more(name):
    """Mean Chamfer distance to the clean cloud grows strictly with the level; each draw uses the
    same random stream at every level, so the level alone differs."""
    corrupt = CORRUPTIONS[name]
    for points in (shape(256, 0), shape(256, 5)):
        distances = [np.mean([chamfer(points, corrupt(points, level, np.random.default_rng(seed)))
                              for seed in range(12)]) for level in range(5)]
        assert all(np.diff(distances) > 0), (name, distances)


def test_rotate_keeps_every_pairwise_distance(cloud):
    for level in range(5):
        out = corrupt_rotate(cloud, level, np.random.default_rng(level))
        assert np.linalg.norm(out - cloud, axis=1).max() > 1e-3  # it did move
        np.testing.assert_allclose(torch.pdist(torch.from_numpy(out).double()),
                                   torch.pdist(torch.from_numpy(cloud)), atol=2e-6)


def test_rotate_angles_about_x_y_z_reach_but_never_pass_the_levels_limit():
    points = shape(128)
    for level in range(5):
        limit = (np.pi / 6) * (level + 1) / 5
        angles = []
        for seed in range(60):
            # out = points @ R with R = Rz Ry Rx: read the three angles back from R
            r = np.linalg.lstsq(points, corrupt_rotate(points, level, np.random.default_rng(seed)), rcond=None)[0]
            angles.append([np.arctan2(r[2, 1], r[2, 2]), -np.arcsin(r[2, 0]), np.arctan2(r[1, 0], r[0, 0])])
        largest = np.abs(angles).max(axis=0)
        assert (largest <= limit + 1e-5).all() and (largest >= 0.9 * limit).all(), (level, largest / limit)


def test_scale_is_a_scaling_per_axis_then_the_unit_sphere(cloud):
    for level, limit in enumerate(SCALE_LIMITS):
        out = corrupt_scale(cloud, level, np.random.default_rng(10 + level)).astype(np.float64)
        factors = []
        for axis in range(3):  # out[:, k] = a_k * cloud[:, k] + b_k exactly
            design = np.stack([cloud[:, axis], np.ones(len(cloud))], axis=1)
            (a, b), *_ = np.linalg.lstsq(design, out[:, axis], rcond=None)
            np.testing.assert_allclose(design @ [a, b], out[:, axis], atol=2e-6)
            factors.append(a)
        factors = np.array(factors)
        assert (factors > 0).all() and factors.max() / factors.min() <= limit ** 2 + 1e-6
        assert factors.max() / factors.min() > 1.001  # anisotropic, not a mere renormalization
        np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-6)
        assert np.linalg.norm(out, axis=1).max() == pytest.approx(1, abs=1e-6)


def test_jitter_noise_has_the_levels_standard_deviation(cloud):
    for level in range(5):
        noise = corrupt_cloud(cloud, "jitter", level, seed=3) - cloud
        assert noise.std() == pytest.approx(0.01 * (level + 1), rel=0.05)
        assert abs(noise.mean()) < 0.002 * (level + 1)


def test_dropouts_keep_a_subset_and_local_dropout_removes_clusters(cloud):
    clean = rows(cloud)
    for level in range(5):
        for name in ("dropout_global", "dropout_local"):
            out = corrupt_cloud(cloud, name, level, seed=1)
            assert not rows(out) - clean  # original points, none repeated
    # holes, not thinning: the dropped points of dropout_local lie far from the kept ones
    mask = np.ones(len(cloud), bool)
    kept = rows(corrupt_cloud(cloud, "dropout_local", 4, seed=1))
    mask[[i for i, p in enumerate(cloud.astype(np.float32)) if p.tobytes() in kept]] = False
    assert mask.sum() == 500
    spread = np.zeros(len(cloud), bool)
    spread[np.random.default_rng(0).permutation(len(cloud))[:500]] = True  # as many, dropped anywhere
    assert nearest(cloud[mask], cloud[~mask]).mean() > 2 * nearest(cloud[spread], cloud[~spread]).mean()


def test_added_points_lie_in_the_unit_ball_after_the_clean_ones(cloud):
    for name in ("add_global", "add_local"):
        for level in range(5):
            out = corrupt_cloud(cloud, name, level, seed=2)
            np.testing.assert_array_equal(out[: len(cloud)], cloud.astype(np.float32))
            assert np.linalg.norm(out[len(cloud):], axis=1).max() <= 1 + 1e-6
    # local clusters sit on the surface, global points anywhere in the ball
    near = nearest(corrupt_cloud(cloud, "add_local", 4, seed=2)[1024:], cloud).mean()
    anywhere = nearest(corrupt_cloud(cloud, "add_global", 4, seed=2)[1024:], cloud).mean()
    assert near < anywhere / 2


def test_bad_inputs_are_one_line_errors(cloud):
    with pytest.raises(ValueError, match="unknown corruption 'jiter' \\(did you mean 'jitter'\\?\\)"):
        corrupt_cloud(cloud, "jiter", 0)
    with pytest.raises(ValueError, match="severity level must be an integer 0..4, got 5"):
        corrupt_cloud(cloud, "jitter", 5)
    with pytest.raises(ValueError, match=r"shape \(N, 3\).*\(1024, 6\)"):
        corrupt_cloud(np.zeros((1024, 6)), "rotate", 0)
    with pytest.raises(ValueError, match="non-negative"):
        corrupt_cloud(cloud, "rotate", 0, seed=-1)
