"""Point cloud encoder: shared per-point MLP, local neighbour embedding, attention blocks, pooling.

All tensors are channels-last: points (B, N, C), features (B, N, F). An optional padding mask
(B, N) (``True`` = real point) lets clouds of different sizes share a batch; padded points never
change the features of real points (masked batch statistics, masked kNN, sampling and pooling).

Everything is pure PyTorch (no custom kernels) and runs on CPU and CUDA. The encoder works with
``torch.jit.trace`` (and the ONNX exporter built on it), ``torch.export`` and ``torch.jit.script``;
farthest point sampling is a Python loop, which tracing and ``torch.export`` unroll, so exporting
a down-sampling encoder takes a while (one to two minutes on a CPU for 512 + 256 samples).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointea.nn.attention import AttentionBlock
from pointea.ops import farthest_point_sample, symmetric_eigen3

POOLING_TYPES = ("max", "mean", "maxmean")

# Largest number of entries of one (B, rows, N) distance block in ``knn``: queries are processed
# in chunks so that memory stays linear in the number of points.
KNN_CHUNK_ELEMENTS = 1 << 23


class MaskedBatchNorm(nn.Module):
    """Batch normalization over the last (channel) axis that ignores padded points.

    In training mode the batch statistics are computed over real points only (padded rows come
    out as zeros); in eval mode the running statistics are used, as in ``nn.BatchNorm1d``.

    Args:
        num_features: channels C.
        momentum: running statistics update factor.
        eps: added to the variance.

    Shapes:
        x (..., C) and mask broadcastable to x.shape[:-1] by appending axes, e.g. x (B, M, K, C)
        with mask (B, M) -> (..., C)
    """

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _normalize(self, x: Tensor) -> Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias,
            self.training, self.momentum, self.eps,
        )

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        C = x.shape[-1]
        flat = x.reshape(-1, C)  # (rows, C)
        if mask is None or not self.training:
            return self._normalize(flat).view(x.shape)
        keep = mask
        while keep.dim() < x.dim() - 1:
            keep = keep.unsqueeze(-1)
        keep = keep.expand(x.shape[:-1]).reshape(-1)  # (rows,)
        out = torch.zeros_like(flat)
        out[keep] = self._normalize(flat[keep])
        return out.view(x.shape)


class SharedMLP(nn.Module):
    """Per-point MLP: (Linear -> MaskedBatchNorm -> ReLU) for each width in ``dims``.

    Shapes:
        x (B, N, in_dim), mask (B, N) -> (B, N, dims[-1])
    """

    def __init__(self, in_dim: int, dims: Sequence[int]):
        super().__init__()
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        for dim in dims:
            self.linears.append(nn.Linear(in_dim, dim, bias=False))
            self.norms.append(MaskedBatchNorm(dim))
            in_dim = dim
        self.out_dim = in_dim

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        for linear, norm in zip(self.linears, self.norms):
            x = F.relu(norm(linear(x), mask))
        return x


def index_points(x: Tensor, idx: Tensor) -> Tensor:
    """Gather rows of ``x`` per batch element.

    Shapes:
        x (B, N, C), idx (B, *S) int64 with values in [0, N) -> (B, *S, C)
    """
    B, N, C = x.shape
    offsets = torch.arange(B, device=idx.device).view([B] + [1] * (idx.dim() - 1)) * N
    flat = (idx + offsets).reshape(-1)
    out_shape = list(idx.shape) + [C]
    return x.reshape(B * N, C).index_select(0, flat).view(out_shape)


def neighbor_max(x: Tensor, idx: Tensor) -> Tensor:
    """Channel-wise maximum of ``x`` over each point's neighbours.

    In eager mode this runs as one ``embedding_bag(mode="max")`` call, which never materialises
    the (B, M, k, C) neighbourhood tensor and back-propagates into the winning rows only;
    under scripting, tracing and compilation it falls back to an equivalent gather + max.

    Shapes:
        x (B, N, C), idx (B, M, k) int64 -> (B, M, C)
    """
    B, N, C = x.shape
    M, k = idx.shape[1], idx.shape[2]
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return index_points(x, idx).amax(dim=2)
    offsets = torch.arange(B, device=idx.device).view(B, 1, 1) * N
    bags = (idx + offsets).view(B * M, k)
    return F.embedding_bag(bags, x.reshape(B * N, C), mode="max").view(B, M, C)


def _ranking_scores(ref_sq: Tensor, query: Tensor, ref_t: Tensor) -> Tensor:
    """``|r|^2 - 2 q.r`` for every query and reference: (B, 1, N), (B, m, 3), (B, 3, N) -> (B, m, N)."""
    return torch.baddbmm(ref_sq, query, ref_t, alpha=-2.0)


@torch.jit.unused
def _ranking_scores_in_float32(ref_sq: Tensor, query: Tensor, ref_t: Tensor) -> Tensor:
    """``_ranking_scores`` with autocast off: in bfloat16 the scores of neighbours a few hundredths
    apart in a unit-sphere cloud tie or swap, so mixed-precision training would group different
    neighbours than full-precision inference."""
    with torch.autocast(query.device.type, enabled=False):
        return _ranking_scores(ref_sq.float(), query.float(), ref_t.float())


def knn(
    query: Tensor,
    ref: Tensor,
    k: int,
    ref_mask: Optional[Tensor] = None,
    chunk_elements: int = KNN_CHUNK_ELEMENTS,
) -> Tensor:
    """Indices of the ``k`` nearest reference points of each query point (squared Euclidean).

    Neighbours are ranked by ``|r|^2 - 2 q.r``, which differs from the squared distance by the
    query's own ``|q|^2`` and so orders each row's references the same way, in one fused
    ``baddbmm``. Queries are processed in chunks of at most ``chunk_elements`` distances, so
    memory grows linearly with the number of points.
    Padded reference points are never returned; a cloud with fewer than ``k`` real points
    repeats its nearest real neighbour. ``k`` is clipped to the number of reference points.

    Shapes:
        query (B, M, 3), ref (B, N, 3), ref_mask (B, N) -> (B, M, k) int64, in no particular order
    """
    B, M, _ = query.shape
    N = ref.shape[1]
    k = min(k, N)
    query = query.detach()
    ref = ref.detach()
    ref_sq = ref.square().sum(dim=-1).unsqueeze(1)  # (B, 1, N)
    ref_t = ref.transpose(1, 2)  # (B, 3, N)
    rows = max(1, chunk_elements // max(1, B * N))
    chunks: List[Tensor] = []
    for start in range(0, M, rows):
        q = query[:, start:start + rows]  # (B, m, 3)
        if torch.jit.is_scripting():
            dist = _ranking_scores(ref_sq, q, ref_t)
        else:
            dist = _ranking_scores_in_float32(ref_sq, q, ref_t)
        if ref_mask is not None:
            dist = dist.masked_fill(~ref_mask.unsqueeze(1), float("inf"))
        if ref_mask is None:
            idx = dist.topk(k, dim=-1, largest=False, sorted=False)[1]  # (B, m, k)
        else:
            values, idx = dist.topk(k, dim=-1, largest=False, sorted=True)
            idx = torch.where(torch.isinf(values), idx[:, :, :1], idx)
        chunks.append(idx)
    return torch.cat(chunks, dim=1)


class LocalShapeDescriptor(nn.Module):
    """Parameter-free local geometry of each point from its ``k`` nearest neighbours (itself included).

    From the covariance of the neighbourhood (eigenvalues l1 >= l2 >= l3, s = l1 + l2 + l3):

    - the surface normal estimate: the eigenvector of l3, oriented away from the cloud's centroid
      (3 channels; the usual principal-component normal, as in PCL and Open3D);
    - the eigenvalue shares l / s: linear, planar or scattered neighbourhoods, and l3 / s is the
      surface variation, a curvature estimate (3);
    - the point's offset from its neighbourhood mean, large at edges and corners (3);
    - the neighbourhood's extent sqrt(s) (1).

    Computed in float32 without gradients (the points are inputs); cheap next to a learned local
    operator, since one kNN and closed-form 3x3 eigenproblems replace grouped MLPs.

    Shapes:
        xyz (B, N, 3), mask (B, N) -> (B, N, 10); padded points are nobody's neighbour, so real
        points' descriptors never depend on them.
    """

    channels = 10

    def __init__(self, num_neighbors: int):
        super().__init__()
        if num_neighbors < 3:
            raise ValueError(f"the local shape descriptor needs at least 3 neighbours, got {num_neighbors}")
        self.num_neighbors = num_neighbors

    def forward(self, xyz: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        xyz = xyz.detach().float()
        idx = knn(xyz, xyz, self.num_neighbors, mask)  # (B, N, k)
        neighbors = index_points(xyz, idx)  # (B, N, k, 3)
        center = neighbors.mean(dim=2)  # (B, N, 3)
        spread = neighbors - center.unsqueeze(2)
        covariance = (spread.unsqueeze(-1) * spread.unsqueeze(-2)).mean(dim=2)  # (B, N, 3, 3)
        total = covariance[..., 0, 0] + covariance[..., 1, 1] + covariance[..., 2, 2]  # (B, N)
        shares, normal = symmetric_eigen3(covariance / total.clamp_min(1e-12)[..., None, None])
        centroid = masked_pool(xyz, mask, "mean").unsqueeze(1)  # (B, 1, 3)
        inward = ((xyz - centroid) * normal).sum(dim=-1, keepdim=True) < 0
        normal = torch.where(inward, -normal, normal)
        return torch.cat([normal, shares, xyz - center, total.sqrt().unsqueeze(-1)], dim=-1)


class NeighborEmbedding(nn.Module):
    """Local neighbour embedding: optional farthest point sampling, kNN grouping, max pooling.

    In the spirit of PCT's sample-and-group layer and DGCNN's EdgeConv. For a centre i with
    coordinates p_i, features f_i and neighbours j:

        h_i = ReLU(BN(max_j [W_f f_j + W_p (p_j - p_i)] + W_c f_i))
        out_i = ReLU(BN(W_o h_i))

    With a positive BN scale this equals EdgeConv's max_j ReLU(BN(W_f f_j + W_p (p_j - p_i) +
    W_c f_i)) at inference, since the centre term is constant over j and BN + ReLU are monotone;
    the maximum is taken first so that only the (B, N, C) point term is gathered, which keeps
    training fast on CPUs. ``W_p (p_j - p_i)`` is the support function of the neighbourhood
    (relative to the centre) along the directions in W_p.

    With ``edge_mlp`` both layers run on every (centre, neighbour) pair and the maximum comes
    last, as in PCT's sample-and-group layer and PointNet++'s set abstraction:

        out_i = max_j ReLU(BN(W_o ReLU(BN(W_f f_j + W_p (p_j - p_i) + W_c f_i))))

    Same parameters; the second layer then costs k times more and the (B, M, k, C) tensor is
    materialised.

    Args:
        in_dim: input feature channels.
        out_dim: output feature channels.
        num_neighbors: k of the kNN grouping.
        num_samples: number of centres chosen by farthest point sampling; 0 keeps every point as
            a centre (no down-sampling).
        edge_mlp: max-pool over the neighbours after both layers instead of after the first.

    Shapes:
        xyz (B, N, 3), feats (B, N, in_dim), mask (B, N) ->
        centre xyz (B, M, 3), centre features (B, M, out_dim), centre mask (B, M) or None
        (M = num_samples, or N when num_samples is 0; sampled centres are all real points).
    """

    def __init__(self, in_dim: int, out_dim: int, num_neighbors: int, num_samples: int = 0,
                 edge_mlp: bool = False):
        super().__init__()
        self.in_dim = in_dim
        self.num_neighbors = num_neighbors
        self.num_samples = num_samples
        self.edge_mlp = edge_mlp
        self.neighbor = nn.Linear(in_dim + 3, out_dim, bias=False)  # [W_f | W_p]
        self.center = nn.Linear(in_dim, out_dim, bias=False)  # W_c (the norm adds the bias)
        self.norm = MaskedBatchNorm(out_dim)
        self.out = nn.Linear(out_dim, out_dim, bias=False)
        self.out_norm = MaskedBatchNorm(out_dim)

    def forward(
        self, xyz: Tensor, feats: Tensor, mask: Optional[Tensor] = None
    ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        if self.num_samples > 0:
            idx = farthest_point_sample(xyz, self.num_samples, mask)  # (B, M)
            center_xyz = index_points(xyz, idx)  # (B, M, 3)
            center_feats = index_points(feats, idx)  # (B, M, in_dim)
            center_mask: Optional[Tensor] = None
        else:
            center_xyz, center_feats, center_mask = xyz, feats, mask
        neighbors = knn(center_xyz, xyz, self.num_neighbors, mask)  # (B, M, k)
        point_term = self.neighbor(torch.cat([feats, xyz], dim=-1))  # (B, N, out)
        w_pos = self.neighbor.weight[:, self.in_dim:]  # (out, 3)
        center_term = self.center(center_feats) - F.linear(center_xyz, w_pos)  # (B, M, out)
        if self.edge_mlp:
            x = index_points(point_term, neighbors) + center_term.unsqueeze(2)  # (B, M, k, out)
        else:
            x = neighbor_max(point_term, neighbors) + center_term  # (B, M, out)
        x = F.relu(self.norm(x, center_mask))
        x = F.relu(self.out_norm(self.out(x), center_mask))
        if self.edge_mlp:
            x = x.amax(dim=2)  # (B, M, out)
        return center_xyz, x, center_mask


def masked_pool(x: Tensor, mask: Optional[Tensor], mode: str = "maxmean") -> Tensor:
    """Pool point features over the points axis, ignoring padded points.

    Args:
        x: features (B, N, F).
        mask: optional (B, N) bool, True = real point.
        mode: "max", "mean" or "maxmean" (max and mean concatenated).

    Returns:
        (B, F), or (B, 2F) for "maxmean".
    """
    use_max = mode == "max" or mode == "maxmean"
    use_mean = mode == "mean" or mode == "maxmean"
    if not (use_max or use_mean):
        raise ValueError("unknown pooling '" + mode + "'; valid: max, mean, maxmean")
    pooled: List[Tensor] = []
    if use_max:
        if mask is None:
            pooled.append(x.amax(dim=1))
        else:
            pooled.append(x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1))
    if use_mean:
        if mask is None:
            pooled.append(x.mean(dim=1))
        else:
            weights = mask.unsqueeze(-1).to(x.dtype)
            pooled.append((x * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0))
    return torch.cat(pooled, dim=-1)


class PointEncoder(nn.Module):
    """PointNet-style encoder with local neighbour embedding and a stack of attention blocks.

        points [+ LocalShapeDescriptor] -> SharedMLP(embed_dims) -> NeighborEmbedding per stage
               -> AttentionBlock x num_blocks -> concat(block outputs) -> Linear(fuse_dim) -> per-point features
               -> pool (max and mean) -> global feature

    Args:
        in_channels: input channels C (3 = xyz, 6 = xyz + normals); xyz are the first three.
        descriptor_neighbors: k of a ``LocalShapeDescriptor`` whose 10 channels are appended to
            the input points before the per-point MLP (0 = none).
        embed_dims: widths of the per-point MLP.
        stage_dims: output widths of the neighbour-embedding stages (empty: no stage).
        stage_samples: centres kept by farthest point sampling in each stage (0 = all points).
        num_neighbors: k of each stage's kNN grouping.
        edge_mlp: run both layers of each stage on every (centre, neighbour) pair and max-pool
            after them, as EdgeConv and set abstraction do (see ``NeighborEmbedding``).
        attention: attention type of the blocks ("ea", "mhea", "sa", "ssa", "oa", "none").
        num_blocks: number of attention blocks (their width is the last stage/embed width).
        memory_size: memory slots S of external attention.
        num_heads: heads of "sa" and "mhea".
        ffn_ratio: feed-forward width of the blocks as a multiple of their width (0 = none).
        ea_norm: external attention normalization, "double" or "softmax".
        fuse_dim: width of the Linear applied to the concatenated block outputs (0 = none; the
            per-point features are then the last block's output).
        pooling: "max", "mean" or "maxmean".

    Shapes:
        points (B, N, C), mask (B, N) -> per-point features (B, M, point_dim), global (B, global_dim),
        where M = N unless a stage down-samples (then M = its ``stage_samples``).
    """

    def __init__(
        self,
        in_channels: int = 3,
        descriptor_neighbors: int = 0,
        embed_dims: Sequence[int] = (64, 64),
        stage_dims: Sequence[int] = (128, 256),
        stage_samples: Sequence[int] = (512, 256),
        num_neighbors: Sequence[int] = (20, 20),
        edge_mlp: bool = False,
        attention: str = "ea",
        num_blocks: int = 4,
        memory_size: int = 64,
        num_heads: int = 4,
        ffn_ratio: float = 0.0,
        ea_norm: str = "double",
        fuse_dim: int = 512,
        pooling: str = "maxmean",
    ):
        super().__init__()
        if in_channels < 3:
            raise ValueError(f"in_channels must be >= 3 (xyz first), got {in_channels}")
        if not (len(stage_dims) == len(stage_samples) == len(num_neighbors)):
            raise ValueError(
                "stage_dims, stage_samples and num_neighbors need one entry per stage, got "
                f"{list(stage_dims)}, {list(stage_samples)}, {list(num_neighbors)}"
            )
        if descriptor_neighbors != 0 and descriptor_neighbors < 3:
            raise ValueError(f"descriptor_neighbors must be 0 (none) or at least 3, got {descriptor_neighbors}")
        if pooling not in POOLING_TYPES:
            raise ValueError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLING_TYPES)}")
        self.in_channels = in_channels
        self.pooling = pooling
        self.use_descriptor = descriptor_neighbors > 0
        self.descriptor = LocalShapeDescriptor(descriptor_neighbors if self.use_descriptor else 3)
        descriptor_channels = LocalShapeDescriptor.channels if self.use_descriptor else 0
        self.embed = SharedMLP(in_channels + descriptor_channels, embed_dims)
        dim = self.embed.out_dim
        self.stages = nn.ModuleList()
        for out_dim, samples, k in zip(stage_dims, stage_samples, num_neighbors):
            self.stages.append(NeighborEmbedding(dim, out_dim, k, samples, edge_mlp))
            dim = out_dim
        self.blocks = nn.ModuleList(
            AttentionBlock(dim, attention, memory_size, num_heads, ffn_ratio, ea_norm)
            for _ in range(num_blocks)
        )
        self.has_fuse = fuse_dim > 0
        # Linear + norm + ReLU over the concatenated block outputs (an identity without fuse_dim).
        self.fuse = SharedMLP(dim * max(num_blocks, 1), (fuse_dim,)) if self.has_fuse else SharedMLP(dim, ())
        dim = self.fuse.out_dim
        self.point_dim = dim
        self.global_dim = 2 * dim if pooling == "maxmean" else dim

    def forward(self, points: Tensor, mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        B, N, C = points.shape
        if C != self.in_channels:
            raise ValueError(
                "expected points (B, N, " + str(self.in_channels) + "), got shape "
                + str(list(points.shape))
            )
        if mask is not None and (
            mask.dtype != torch.bool or mask.dim() != 2 or mask.shape[0] != B or mask.shape[1] != N
        ):
            raise ValueError(
                "expected a bool mask (B, N) = " + str([B, N]) + ", got " + str(mask.dtype) + " "
                + str(list(mask.shape))
            )
        xyz = points[..., :3]
        if self.use_descriptor:
            points = torch.cat([points, self.descriptor(xyz, mask).to(points.dtype)], dim=-1)
        x = self.embed(points, mask)  # (B, N, embed)
        for stage in self.stages:
            xyz, x, mask = stage(xyz, x, mask)  # (B, M, stage_dim)
        outputs: List[Tensor] = []
        for block in self.blocks:
            x = block(x, mask)
            outputs.append(x)
        if self.has_fuse and len(outputs) > 0:
            x = torch.cat(outputs, dim=-1)  # (B, M, num_blocks * dim)
        x = self.fuse(x, mask)  # (B, M, point_dim)
        return x, masked_pool(x, mask, self.pooling)
