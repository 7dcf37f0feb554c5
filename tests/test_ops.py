"""Tests of pointea.ops: farthest point sampling, closed-form 3x3 eigenproblems."""

from __future__ import annotations

from typing import Optional

import pytest
import torch

from pointea.ops import farthest_point_sample, symmetric_eigen3


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def reference_fps(xyz: torch.Tensor, num_samples: int, start: Optional[int] = None) -> list:
    """Textbook farthest point sampling of one cloud (N, 3), starting at ``start`` or, by
    default, at the point farthest from the centroid."""
    if start is None:
        start = int((xyz - xyz.mean(0)).norm(dim=1).argmax())
    chosen = [start]
    dist = (xyz - xyz[start]).norm(dim=1)
    for _ in range(num_samples - 1):
        chosen.append(int(dist.argmax()))
        dist = torch.minimum(dist, (xyz - xyz[chosen[-1]]).norm(dim=1))
    return chosen


@pytest.mark.parametrize("group_elements", [300, 1 << 15])  # groups of one cloud, whole batch
def test_farthest_point_sampling_matches_reference(group_elements):
    xyz = torch.randn(3, 100, 3)
    idx = farthest_point_sample(xyz, 20, group_elements=group_elements)
    assert idx.shape == (3, 20)
    for b in range(3):
        assert idx[b].tolist() == reference_fps(xyz[b], 20)


def test_farthest_point_sampling_from_given_start():
    xyz = torch.rand(2, 60, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    start = torch.zeros(2, dtype=torch.long)
    index = farthest_point_sample(xyz, 12, start=start)
    for b in range(2):
        assert index[b].tolist() == reference_fps(xyz[b], 12, start=0)
    start = torch.tensor([5, 17])
    index = farthest_point_sample(xyz, 12, start=start, group_elements=180)  # groups of one cloud
    assert index[1].tolist() == reference_fps(xyz[1], 12, start=17)


def test_farthest_point_sampling_picks_the_same_set_after_permutation():
    xyz = torch.randn(2, 200, 3)
    perm = torch.randperm(200)

    def sampled(points: torch.Tensor) -> torch.Tensor:
        idx = farthest_point_sample(points, 32)  # (B, M)
        return points.gather(1, idx.unsqueeze(-1).expand(-1, -1, 3))  # (B, M, 3)

    torch.testing.assert_close(sampled(xyz[:, perm]), sampled(xyz))  # same points, in the same order


def test_farthest_point_sampling_never_picks_padding():
    xyz = torch.randn(2, 50, 3)
    mask = torch.ones(2, 50, dtype=torch.bool)
    mask[1, 10:] = False  # 10 real points, 16 samples: the rest must repeat real points
    xyz[1, 10:] = 100.0  # far away, would be chosen first if padding leaked in
    idx = farthest_point_sample(xyz, 16, mask, group_elements=150)
    assert torch.equal(idx, farthest_point_sample(xyz, 16, mask))
    assert idx[1].max() < 10
    assert set(idx[1].tolist()) == set(range(10))
    assert idx[1, :10].tolist() == reference_fps(xyz[1, :10], 10)


def test_symmetric_eigen3_matches_eigh():
    x = torch.randn(500, 6, 3, dtype=torch.float64)
    matrices = x.transpose(1, 2) @ x  # positive semi-definite, well separated eigenvalues
    values, vector = symmetric_eigen3(matrices.float())
    expected_values, expected_vectors = torch.linalg.eigh(matrices)
    torch.testing.assert_close(values.double(), expected_values.flip(-1), atol=2e-4, rtol=1e-4)
    alignment = (vector.double() * expected_vectors[..., 0]).sum(dim=-1).abs()  # sign is arbitrary
    assert alignment.min() > 0.999
    torch.testing.assert_close(vector.norm(dim=-1), torch.ones(500))


def test_symmetric_eigen3_flat_and_repeated_spectra():
    # a flat neighbourhood: smallest eigenvalue 0 along a rotated axis
    rotation = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0]
    flat = rotation @ torch.diag(torch.tensor([3.0, 1.0, 0.0], dtype=torch.float64)) @ rotation.T
    values, vector = symmetric_eigen3(flat.float())
    torch.testing.assert_close(values, torch.tensor([3.0, 1.0, 0.0]), atol=1e-5, rtol=0)
    assert abs(float(vector.double() @ rotation[:, 2])) > 0.9999
    # a line: the two smallest coincide, any unit vector perpendicular to the line is right
    line = torch.diag(torch.tensor([2.0, 0.0, 0.0]))
    values, vector = symmetric_eigen3(line)
    torch.testing.assert_close(values, torch.tensor([2.0, 0.0, 0.0]), atol=1e-5, rtol=0)
    assert abs(float(vector[0])) < 1e-5 and abs(float(vector.norm()) - 1.0) < 1e-5
    # all three equal: every unit vector is an eigenvector
    values, vector = symmetric_eigen3(2.0 * torch.eye(3))
    torch.testing.assert_close(values, torch.full((3,), 2.0))
    torch.testing.assert_close(vector.norm(), torch.tensor(1.0))
