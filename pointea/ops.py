"""Point cloud kernels shared by the data transforms and the encoder, in pure PyTorch.

They run on CPU and CUDA and work under ``torch.jit.script``, ``torch.jit.trace`` (and the ONNX
exporter built on it) and ``torch.export``: no ``out=`` arguments and no in-place writes.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor

# PyTorch splits CPU element-wise ops over threads above 32,768 elements. Inside farthest point
# sampling's sequential loop of small ops the thread synchronisation costs more than it saves
# (up to 100x more when other processes share the cores), so on CPUs the batch is sampled in
# groups of clouds small enough to keep every op of the loop on one thread.
FPS_CPU_GROUP_ELEMENTS = 32768


def farthest_point_sample(
    xyz: Tensor,
    num_samples: int,
    mask: Optional[Tensor] = None,
    start: Optional[Tensor] = None,
    group_elements: int = FPS_CPU_GROUP_ELEMENTS,
) -> Tensor:
    """Farthest point sampling: greedily pick the point farthest from those already picked.

    By default the first sample is the point farthest from the cloud's centroid (instead of a
    fixed index), so the sampled *set* does not depend on the order of the points and an encoder
    built on it stays permutation invariant (up to exact distance ties). Padded points are never
    sampled; when a cloud has fewer real points than ``num_samples`` the remaining samples repeat
    real points.

    Args:
        xyz: coordinates (B, N, 3).
        num_samples: number of points M to sample.
        mask: optional (B, N) bool, True = real point.
        start: optional (B,) int64 index of the first sample per cloud (a real point), replacing
            the farthest-from-centroid start.
        group_elements: on CPUs, clouds are sampled in groups of at most this many coordinates
            (see ``FPS_CPU_GROUP_ELEMENTS``).

    Returns:
        indices (B, M) int64.
    """
    B, N, _ = xyz.shape
    group = max(1, group_elements // (3 * N))
    exporting = torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling()
    if xyz.device.type != "cpu" or group >= B or exporting:
        return _farthest_point_loop(xyz, num_samples, mask, start)
    groups: List[Tensor] = []
    for first in range(0, B, group):
        group_mask: Optional[Tensor] = None
        if mask is not None:
            group_mask = mask[first:first + group]
        group_start: Optional[Tensor] = None
        if start is not None:
            group_start = start[first:first + group]
        groups.append(_farthest_point_loop(xyz[first:first + group], num_samples, group_mask, group_start))
    return torch.cat(groups, dim=0)


def _farthest_point_loop(
    xyz: Tensor, num_samples: int, mask: Optional[Tensor], start: Optional[Tensor]
) -> Tensor:
    """Farthest point sampling of a whole batch at once; see ``farthest_point_sample``."""
    B, N, _ = xyz.shape
    xyz = xyz.detach().transpose(1, 2).contiguous()  # (B, 3, N): coordinate planes
    # Distance from each point to the sampled set; padded points sit at -1 and are never chosen.
    min_dist = torch.full((B, N), float("inf"), dtype=xyz.dtype, device=xyz.device)
    if mask is not None:
        min_dist = min_dist.masked_fill(~mask, -1.0)
    if start is None:
        farthest = _farthest_from_centroid(xyz, mask)  # (B,)
    else:
        farthest = start.to(xyz.device)
    indices: List[Tensor] = []
    for _ in range(num_samples):
        indices.append(farthest)
        chosen = xyz.gather(2, farthest.view(B, 1, 1).expand(B, 3, 1))  # (B, 3, 1)
        min_dist = torch.minimum(min_dist, (xyz - chosen).square().sum(dim=1))
        farthest = min_dist.argmax(dim=1)
    return torch.stack(indices, dim=1)  # (B, M)


def _farthest_from_centroid(xyz: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Index of each cloud's real point farthest from its centroid.

    Shapes:
        xyz (B, 3, N), mask (B, N) -> (B,) int64
    """
    if mask is None:
        centroid = xyz.mean(dim=2, keepdim=True)  # (B, 3, 1)
    else:
        weights = mask.unsqueeze(1).to(xyz.dtype)  # (B, 1, N)
        centroid = (xyz * weights).sum(dim=2, keepdim=True) / weights.sum(dim=2, keepdim=True).clamp_min(1.0)
    dist = (xyz - centroid).square().sum(dim=1)  # (B, N)
    if mask is not None:
        dist = dist.masked_fill(~mask, -1.0)
    return dist.argmax(dim=1)


def symmetric_eigen3(matrix: Tensor, eps: float = 1e-12) -> Tuple[Tensor, Tensor]:
    """Eigenvalues of symmetric 3x3 matrices and the eigenvector of the smallest one, in closed form.

    The eigenvalues come from the trigonometric solution of the characteristic cubic; the
    eigenvector is the longest cross product of two rows of ``matrix - lambda_min * I`` (each is
    perpendicular to the other two eigenvectors). Only element-wise ops, so it batches over
    millions of matrices, unlike ``torch.linalg.eigh``, and exports to ONNX. Where the two
    smallest eigenvalues coincide the eigenvector is ill-defined and a unit vector of their plane
    is returned; for a multiple of the identity, a coordinate axis.

    Shapes:
        matrix (..., 3, 3) -> eigenvalues (..., 3) in descending order, eigenvector (..., 3) unit
    """
    a00, a11, a22 = matrix[..., 0, 0], matrix[..., 1, 1], matrix[..., 2, 2]
    a01, a02, a12 = matrix[..., 0, 1], matrix[..., 0, 2], matrix[..., 1, 2]
    mean = (a00 + a11 + a22) / 3.0
    b00, b11, b22 = a00 - mean, a11 - mean, a22 - mean  # diagonal of matrix - mean * I
    off_diagonal = a01 * a01 + a02 * a02 + a12 * a12
    spread = torch.sqrt((b00 * b00 + b11 * b11 + b22 * b22 + 2.0 * off_diagonal) / 6.0).clamp_min(eps)
    det = b00 * (b11 * b22 - a12 * a12) - a01 * (a01 * b22 - a12 * a02) + a02 * (a01 * a12 - b11 * a02)
    angle = torch.acos((det / (2.0 * spread * spread * spread)).clamp(-1.0, 1.0)) / 3.0
    largest = mean + 2.0 * spread * torch.cos(angle)
    smallest = mean + 2.0 * spread * torch.cos(angle + 2.0 * math.pi / 3.0)
    middle = 3.0 * mean - largest - smallest
    rows = matrix - smallest[..., None, None] * torch.eye(3, dtype=matrix.dtype, device=matrix.device)
    r0, r1, r2 = rows[..., 0, :], rows[..., 1, :], rows[..., 2, :]
    vector, length = _cross(r0, r1)
    for a, b in ((r0, r2), (r1, r2)):
        candidate, candidate_length = _cross(a, b)
        longer = candidate_length > length
        vector = torch.where(longer.unsqueeze(-1), candidate, vector)
        length = torch.where(longer, candidate_length, length)
    # Two smallest eigenvalues equal: the rows are parallel (rank 1) and every cross product
    # vanishes; any vector perpendicular to them is an eigenvector, e.g. a row crossed with the
    # coordinate axis it leans on least. All three equal: the rows vanish too; take that axis.
    row_lengths = rows.square().sum(dim=-1)  # (..., 3)
    longest_row = rows.gather(-2, row_lengths.argmax(dim=-1)[..., None, None].expand(rows.shape[:-2] + (1, 3))).squeeze(-2)
    axis = torch.nn.functional.one_hot(longest_row.abs().argmin(dim=-1), 3).to(matrix.dtype)
    perpendicular, perpendicular_length = _cross(longest_row, axis)
    parallel_rows = length <= (1e-10 * row_lengths.amax(dim=-1)) ** 2
    vector = torch.where(parallel_rows.unsqueeze(-1), perpendicular, vector)
    length = torch.where(parallel_rows, perpendicular_length, length)
    isotropic = length <= eps * eps
    vector = torch.where(isotropic.unsqueeze(-1), axis, vector)
    length = torch.where(isotropic, torch.ones_like(length), length)
    vector = vector / length.sqrt().unsqueeze(-1)
    return torch.stack([largest, middle, smallest], dim=-1), vector


def _cross(a: Tensor, b: Tensor) -> Tuple[Tensor, Tensor]:
    """Cross product of 3-vectors (..., 3) and its squared length (...), in element-wise ops."""
    ax, ay, az = a[..., 0], a[..., 1], a[..., 2]
    bx, by, bz = b[..., 0], b[..., 1], b[..., 2]
    cross = torch.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], dim=-1)
    return cross, cross.square().sum(dim=-1)
