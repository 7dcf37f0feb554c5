"""Tests of pointea.nn.encoder: kNN, masked statistics and pooling, the encoder."""

from __future__ import annotations

import pytest
import torch

from pointea.nn.encoder import (
    LocalShapeDescriptor,
    MaskedBatchNorm,
    NeighborEmbedding,
    PointEncoder,
    index_points,
    knn,
    masked_pool,
    neighbor_max,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_encoder(**kwargs) -> PointEncoder:
    settings = dict(
        embed_dims=(16,), stage_dims=(32, 48), stage_samples=(48, 24), num_neighbors=(8, 8),
        num_blocks=2, memory_size=8, fuse_dim=64,
    )
    settings.update(kwargs)
    return PointEncoder(**settings)


@pytest.mark.parametrize("chunk_elements", [2 * 64, 2 * 64 * 3, 1 << 20])  # 1-row, 3-row, 1 chunk
def test_knn_matches_brute_force_across_chunks(chunk_elements):
    query, ref = torch.randn(2, 10, 3), torch.randn(2, 64, 3)
    idx = knn(query, ref, 5, chunk_elements=chunk_elements)
    expected = torch.cdist(query, ref).topk(5, dim=-1, largest=False).indices
    assert idx.shape == (2, 10, 5)
    assert torch.equal(idx.sort(dim=-1).values, expected.sort(dim=-1).values)


def test_knn_ranks_in_float32_under_bfloat16_autocast():
    # neighbours 0.01 apart in a unit-sphere cloud: bfloat16 scores (8-bit mantissa) would tie them
    ref = torch.nn.functional.normalize(torch.randn(1, 400, 3), dim=-1)
    query = ref[:, :50]
    expected = torch.cdist(query, ref).topk(8, dim=-1, largest=False).indices.sort(dim=-1).values
    with torch.autocast("cpu", dtype=torch.bfloat16):
        idx = knn(query, ref, 8)
    assert torch.equal(idx.sort(dim=-1).values, expected)


def test_knn_skips_padding_and_repeats_when_short():
    ref = torch.randn(1, 12, 3)
    mask = torch.zeros(1, 12, dtype=torch.bool)
    mask[0, :3] = True
    idx = knn(ref, ref, 5, mask)
    assert idx.max() < 3
    assert torch.equal(idx[0, :3, 0], torch.arange(3))  # nearest of a real point is itself


def test_neighbor_max_equals_gather_then_max():
    x = torch.randn(2, 30, 8, requires_grad=True)
    idx = torch.stack([torch.randperm(30)[:6] for _ in range(2 * 11)]).view(2, 11, 6)
    out = neighbor_max(x, idx)
    torch.testing.assert_close(out, index_points(x, idx).amax(dim=2))
    (grad,) = torch.autograd.grad(out.sum(), x)
    (expected,) = torch.autograd.grad(index_points(x, idx).amax(dim=2).sum(), x)
    torch.testing.assert_close(grad, expected)


def fibonacci_sphere(n: int) -> torch.Tensor:
    """n points spread evenly over the unit sphere, (1, n, 3)."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * i / n
    angle = i * torch.pi * (3.0 - 5.0 ** 0.5)
    radius = (1.0 - z * z).sqrt()
    return torch.stack([radius * angle.cos(), radius * angle.sin(), z], dim=-1).float().unsqueeze(0)


def test_local_shape_descriptor_on_a_sphere():
    sphere = fibonacci_sphere(800) * 2.0 + torch.tensor([0.5, -1.0, 0.3])  # off-centre, radius 2
    features = LocalShapeDescriptor(12)(sphere)
    assert features.shape == (1, 800, LocalShapeDescriptor.channels)
    normal, shares, offset, extent = features[..., :3], features[..., 3:6], features[..., 6:9], features[..., 9]
    radial = torch.nn.functional.normalize(sphere - sphere.mean(dim=1, keepdim=True), dim=-1)
    assert (normal * radial).sum(dim=-1).min() > 0.99  # outward normals
    torch.testing.assert_close(shares.sum(dim=-1), torch.ones(1, 800))
    assert (shares[..., 0] >= shares[..., 1]).all() and (shares[..., 1] >= shares[..., 2] - 1e-6).all()
    assert shares[..., 2].max() < 0.02  # nearly flat at the scale of 12 neighbours
    assert ((offset * radial).sum(dim=-1) > 0).all()  # the neighbourhood mean lies inside the sphere
    assert (extent > 0).all()


def test_local_shape_descriptor_is_rotation_and_permutation_equivariant():
    cloud = torch.randn(2, 200, 3)
    descriptor = LocalShapeDescriptor(10)
    features = descriptor(cloud)
    rotation = torch.linalg.qr(torch.randn(3, 3))[0]
    rotation = rotation * torch.linalg.det(rotation)  # a proper rotation
    rotated = descriptor(cloud @ rotation.T)
    torch.testing.assert_close(rotated[..., :3], features[..., :3] @ rotation.T, atol=2e-3, rtol=0)
    torch.testing.assert_close(rotated[..., 3:6], features[..., 3:6], atol=2e-4, rtol=0)
    torch.testing.assert_close(rotated[..., 6:9], features[..., 6:9] @ rotation.T, atol=1e-5, rtol=0)
    perm = torch.randperm(200)
    # summation order changes with the permutation; normals of nearly isotropic neighbourhoods
    # (common in a Gaussian blob) move most under rounding
    torch.testing.assert_close(descriptor(cloud[:, perm]), features[:, perm], atol=2e-3, rtol=0)


def test_local_shape_descriptor_ignores_padding():
    real = torch.randn(1, 60, 3)
    padded = torch.cat([real, torch.randn(1, 20, 3) * 0.1], dim=1)  # padding inside the cloud
    mask = torch.arange(80).unsqueeze(0) < 60
    descriptor = LocalShapeDescriptor(8)
    torch.testing.assert_close(descriptor(padded, mask)[:, :60], descriptor(real), atol=1e-5, rtol=0)


def test_masked_batch_norm_uses_real_points_only():
    norm, reference = MaskedBatchNorm(4), torch.nn.BatchNorm1d(4)
    x = torch.randn(2, 10, 4)
    mask = torch.rand(2, 10) > 0.3
    x_padded = x.masked_fill(~mask.unsqueeze(-1), 1e3)
    out = norm(x_padded, mask)
    expected = reference(x[mask])
    torch.testing.assert_close(out[mask], expected)
    torch.testing.assert_close(norm.running_mean, reference.running_mean)
    torch.testing.assert_close(norm.running_var, reference.running_var)
    norm.eval()
    reference.eval()
    torch.testing.assert_close(norm(x), reference(x.view(-1, 4)).view(2, 10, 4))


def test_masked_pool_ignores_padding():
    x = torch.randn(2, 10, 4)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    x[1, 6:] = 1e3
    pooled = masked_pool(x, mask, "maxmean")
    assert pooled.shape == (2, 8)
    torch.testing.assert_close(pooled[1], torch.cat([x[1, :6].amax(0), x[1, :6].mean(0)]))
    with pytest.raises(ValueError, match="valid: max, mean, maxmean"):
        masked_pool(x, None, "sum")


def _randomise_norms(module: torch.nn.Module) -> None:
    for norm in (m for m in module.modules() if isinstance(m, MaskedBatchNorm)):
        C = norm.weight.numel()
        norm.weight.data = torch.rand(C) + 0.5
        norm.bias.data = torch.randn(C) * 0.1
        norm.running_mean = torch.randn(C) * 0.1
        norm.running_var = torch.rand(C) + 0.5


def _bn(norm: MaskedBatchNorm, x: torch.Tensor) -> torch.Tensor:
    return (x - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps) * norm.weight + norm.bias


@pytest.mark.parametrize("edge_mlp", [False, True])
def test_neighbor_embedding_matches_its_edge_formula(edge_mlp):
    """Each centre's output, pair by pair from the docstring's formula (brute-force neighbours)."""
    stage = NeighborEmbedding(5, 7, num_neighbors=4, edge_mlp=edge_mlp)
    _randomise_norms(stage)
    stage.eval()
    xyz, feats = torch.randn(2, 30, 3), torch.randn(2, 30, 5)
    _, out, _ = stage(xyz, feats)
    W = stage.neighbor.weight
    W_f, W_p, W_c = W[:, :5], W[:, 5:], stage.center.weight
    expected = torch.empty(2, 30, 7)
    for b in range(2):
        neighbours = torch.cdist(xyz[b], xyz[b]).topk(4, largest=False).indices  # (30, 4)
        for i in range(30):
            j = neighbours[i]
            edges = feats[b, j] @ W_f.T + (xyz[b, j] - xyz[b, i]) @ W_p.T + feats[b, i] @ W_c.T  # (4, 7)
            if edge_mlp:
                hidden = torch.relu(_bn(stage.norm, edges))
                expected[b, i] = torch.relu(_bn(stage.out_norm, hidden @ stage.out.weight.T)).amax(0)
            else:
                hidden = torch.relu(_bn(stage.norm, edges.amax(0)))
                expected[b, i] = torch.relu(_bn(stage.out_norm, hidden @ stage.out.weight.T))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_encoder_shapes_with_and_without_down_sampling():
    encoder = tiny_encoder()
    per_point, global_feats = encoder(torch.randn(2, 100, 3))
    assert per_point.shape == (2, 24, 64) and global_feats.shape == (2, 128)
    assert encoder.point_dim == 64 and encoder.global_dim == 128
    full = tiny_encoder(stage_dims=(32,), stage_samples=(0,), num_neighbors=(8,), fuse_dim=0, pooling="max")
    per_point, global_feats = full(torch.randn(2, 100, 6)[..., :3])
    assert per_point.shape == (2, 100, 32) and global_feats.shape == (2, 32)
    described = tiny_encoder(descriptor_neighbors=8, in_channels=6)
    assert described.embed.linears[0].in_features == 6 + LocalShapeDescriptor.channels
    per_point, global_feats = described(torch.randn(2, 100, 6))
    assert per_point.shape == (2, 24, 64) and global_feats.shape == (2, 128)


@pytest.mark.parametrize("attention, descriptor, edge_mlp",
                         [("ea", 0, False), ("sa", 0, False), ("oa", 0, False), ("ea", 8, False), ("ea", 0, True)])
def test_encoder_global_features_are_permutation_invariant(attention, descriptor, edge_mlp):
    encoder = tiny_encoder(attention=attention, descriptor_neighbors=descriptor, edge_mlp=edge_mlp).eval()
    points = torch.randn(2, 100, 3)
    perm = torch.randperm(100)
    torch.testing.assert_close(encoder(points[:, perm])[1], encoder(points)[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("samples, descriptor, edge_mlp",
                         [((48, 24), 0, False), ((0, 0), 0, False), ((0, 0), 8, False),
                          ((48, 24), 0, True), ((0, 0), 0, True)])
def test_encoder_padding_does_not_change_real_points(train, samples, descriptor, edge_mlp):
    encoder = tiny_encoder(stage_samples=samples, descriptor_neighbors=descriptor, edge_mlp=edge_mlp).train(train)
    real = torch.randn(1, 60, 3)
    padded = torch.cat([real, torch.randn(1, 25, 3) * 5], dim=1)
    mask = torch.arange(85).unsqueeze(0) < 60
    per_point, global_feats = encoder(padded, mask)
    expected_points, expected_global = encoder(real)
    # the descriptor's masked centroid rounds differently, which training-mode batch norm amplifies
    tolerance = 1e-4 if descriptor else 1e-5
    torch.testing.assert_close(global_feats, expected_global, atol=tolerance, rtol=tolerance)
    if samples[0] == 0:
        per_point = per_point[:, :60]
    torch.testing.assert_close(per_point, expected_points, atol=tolerance, rtol=tolerance)


def test_encoder_rejects_bad_inputs_and_settings():
    with pytest.raises(ValueError, match=r"expected points \(B, N, 3\), got shape \[1, 50, 4\]"):
        tiny_encoder()(torch.randn(1, 50, 4))
    with pytest.raises(ValueError, match=r"expected a bool mask \(B, N\) = \[1, 50\], got torch.float32"):
        tiny_encoder()(torch.randn(1, 50, 3), torch.ones(1, 50))
    with pytest.raises(ValueError, match="one entry per stage"):
        tiny_encoder(stage_samples=(48,))
    with pytest.raises(ValueError, match="descriptor_neighbors must be 0 \\(none\\) or at least 3, got 2"):
        tiny_encoder(descriptor_neighbors=2)
