"""Tests of pointea.ops: farthest point sampling."""

from __future__ import annotations

from typing import Optional

import pytest
import torch

from pointea.ops import farthest_point_sample


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
