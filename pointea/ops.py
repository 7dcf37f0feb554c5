"""Point cloud kernels shared by the data transforms and the encoder, in pure PyTorch.

They run on CPU and CUDA and work under ``torch.jit.script``, ``torch.jit.trace`` (and the ONNX
exporter built on it) and ``torch.export``: no ``out=`` arguments and no in-place writes.
"""

from __future__ import annotations

from typing import List, Optional

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
