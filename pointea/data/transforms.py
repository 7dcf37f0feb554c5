"""Composable point cloud transforms for single items and whole batches.

Every transform is a callable on an item dict that returns a NEW dict (the input is never
modified) and shows its arguments in ``repr``. ``item["points"]`` is ``(N, C)`` for one cloud or
``(B, N, C)`` for a batch, channels ``x y z [nx ny nz] [extra...]``; per-point keys
(:data:`POINT_KEYS`, e.g. ``parts`` ``(N,)`` / ``(B, N)``) follow any reordering or selection of
the points. Every other key passes through untouched, except that the batch mixing of
:class:`RSMix` turns ``label`` into soft labels (B, K).

Normals (channels 3:6) are rotated with the points, and transformed by the inverse-transpose of
an anisotropic scaling (then renormalized) so they stay perpendicular to the surface; they are
never translated or jittered. Batches draw independent random parameters per cloud.

Randomness comes from torch only, from ``generator`` when given and otherwise from the global
torch generator, which ``DataLoader`` seeds per worker, so augmented runs are reproducible
(:class:`RSMix`'s Beta draw comes from a NumPy generator seeded from that torch generator).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from pointea.ops import farthest_point_sample

Item = Dict[str, Any]
POINT_KEYS = ("parts", "mask")  # per-point values that follow the points when they are reordered


# --------------------------------------------------------------------------- helpers

def _batched_points(item: Item) -> Tuple[Tensor, bool]:
    """Return ``points`` as ``(B, N, C)`` and whether the item was a single cloud."""
    if "points" not in item:
        raise ValueError(f"transform input must be a dict with a 'points' entry, got keys {sorted(item)}")
    points = torch.as_tensor(item["points"])
    if points.ndim not in (2, 3) or points.shape[-1] < 3:
        raise ValueError(f"'points' must have shape (N, C) or (B, N, C) with C >= 3, got {tuple(points.shape)}")
    single = points.ndim == 2
    return (points.unsqueeze(0) if single else points), single


def _with_points(item: Item, points: Tensor, single: bool) -> Item:
    return {**item, "points": points.squeeze(0) if single else points}


def _uniform(shape: Sequence[int], points: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Uniform [0, 1) samples of ``points``' dtype and device, drawn on the generator's device."""
    device = generator.device if generator is not None else points.device
    dtype = points.dtype if points.is_floating_point() else torch.float32
    return torch.rand(tuple(shape), generator=generator, device=device, dtype=dtype).to(points.device)


def _normal(shape: Sequence[int], points: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    device = generator.device if generator is not None else points.device
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=points.dtype).to(points.device)


def _apply_linear(points: Tensor, matrix: Tensor) -> Tensor:
    """Apply per-cloud 3x3 ``matrix`` (B, 3, 3) to xyz and, when present, normals.

    Normals get the inverse-transpose (equal to ``matrix`` for rotations), renormalized.
    """
    xyz = points[..., :3] @ matrix.transpose(1, 2)  # (B, N, 3)
    parts = [xyz]
    if points.shape[-1] >= 6:
        normal_matrix = torch.linalg.inv(matrix).transpose(1, 2)
        normals = points[..., 3:6] @ normal_matrix.transpose(1, 2)
        parts.append(normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        parts.append(points[..., 6:])
    return torch.cat(parts, dim=-1)


def _gather_points(item: Item, index: Tensor, single: bool) -> Item:
    """Select/reorder points and per-point keys with ``index`` (B, K)."""
    points, _ = _batched_points(item)
    out = _with_points(item, torch.gather(points, 1, index[..., None].expand(-1, -1, points.shape[-1])), single)
    for key in POINT_KEYS:
        if key in item:
            values = torch.as_tensor(item[key])
            values = values.unsqueeze(0) if single else values
            if values.shape[:2] != points.shape[:2]:
                raise ValueError(f"'{key}' has shape {tuple(values.shape)}, expected {tuple(points.shape[:2])}")
            gathered = torch.gather(values, 1, index.to(values.device))
            out[key] = gathered.squeeze(0) if single else gathered
    return out


def _format_args(**kwargs: Any) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in kwargs.items())


# --------------------------------------------------------------------------- transforms

class Compose:
    """Apply transforms one after another."""

    def __init__(self, transforms: Sequence[Callable[[Item], Item]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, item: Item) -> Item:
        for transform in self.transforms:
            item = transform(item)
        return item

    def __repr__(self) -> str:
        lines = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"{type(self).__name__}([{lines}\n])" if self.transforms else f"{type(self).__name__}([])"


class RandomApply:
    """Apply ``transform`` to each cloud with probability ``p``; the others pass unchanged.

    On a batch the transform runs once on all clouds and each cloud keeps its transformed
    points (and per-point keys) with probability ``p``, so clouds are chosen independently; a
    single cloud is transformed or not as a whole. For label-preserving transforms whose output
    has the input's shape (``train.augmentation`` entries take it as ``p: 0.5``).
    """

    def __init__(self, transform: Callable[[Item], Item], p: float = 0.5,
                 generator: Optional[torch.Generator] = None) -> None:
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.transform, self.p, self.generator = transform, p, generator

    def __call__(self, item: Item) -> Item:
        points, single = _batched_points(item)
        chosen = _uniform((points.shape[0],), points, self.generator) < self.p  # (B,)
        if single:
            return self.transform(item) if bool(chosen[0]) else dict(item)
        out = self.transform(item)
        for key in ("points",) + POINT_KEYS:
            if key in item:
                before, after = torch.as_tensor(item[key]), out[key]
                if after.shape != before.shape:
                    raise ValueError(f"{self.transform!r} changed '{key}' from {tuple(before.shape)} to "
                                     f"{tuple(after.shape)}; RandomApply needs shape-preserving transforms")
                keep = chosen.view(-1, *[1] * (before.ndim - 1)).to(before.device)
                out[key] = torch.where(keep, after, before)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r}, p={self.p})"


class NormalizeUnitSphere:
    """Centre each cloud on its centroid and scale it so the farthest point has norm 1."""

    def __call__(self, item: Item) -> Item:
        points, single = _batched_points(item)
        xyz = points[..., :3]
        # divide by the largest magnitude first, so that squares cannot overflow float32
        xyz = xyz / xyz.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-30)
        xyz = xyz - xyz.mean(dim=1, keepdim=True)
        radius = xyz.norm(dim=-1).amax(dim=1).clamp_min(1e-12)  # (B,)
        out = torch.cat([xyz / radius[:, None, None], points[..., 3:]], dim=-1)
        return _with_points(item, out, single)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RandomScaleTranslate:
    """Scale each cloud by a random factor in ``scale`` (per axis when ``anisotropic``), then
    shift it by a random offset in ``[-shift, shift]`` per axis (PointNet++ / DGCNN recipe)."""

    def __init__(self, scale: Tuple[float, float] = (2 / 3, 3 / 2), shift: float = 0.2,
                 anisotropic: bool = True, generator: Optional[torch.Generator] = None) -> None:
        low, high = scale
        if not 0 < low <= high:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale}")
        if shift < 0:
            raise ValueError(f"shift must be >= 0, got {shift}")
        self.scale, self.shift, self.anisotropic, self.generator = (low, high), shift, anisotropic, generator

    def __call__(self, item: Item) -> Item:
        points, single = _batched_points(item)
        B = points.shape[0]
        low, high = self.scale
        factors = low + (high - low) * _uniform((B, 3 if self.anisotropic else 1), points, self.generator)
        factors = factors.expand(B, 3)
        offsets = self.shift * (2 * _uniform((B, 3), points, self.generator) - 1)
        out = _apply_linear(points, torch.diag_embed(factors))
        out = torch.cat([out[..., :3] + offsets[:, None], out[..., 3:]], dim=-1)
        return _with_points(item, out, single)

    def __repr__(self) -> str:
        scale = (round(self.scale[0], 4), round(self.scale[1], 4))
        return f"{type(self).__name__}({_format_args(scale=scale, shift=self.shift, anisotropic=self.anisotropic)})"


class RandomJitter:
    """Add Gaussian noise of std ``sigma``, clipped to ``[-clip, clip]``, to xyz only."""

    def __init__(self, sigma: float = 0.01, clip: float = 0.05, generator: Optional[torch.Generator] = None) -> None:
        if sigma < 0 or clip < 0:
            raise ValueError(f"sigma and clip must be >= 0, got sigma={sigma}, clip={clip}")
        self.sigma, self.clip, self.generator = sigma, clip, generator

    def __call__(self, item: Item) -> Item:
        points, single = _batched_points(item)
        noise = (self.sigma * _normal(points[..., :3].shape, points, self.generator)).clamp(-self.clip, self.clip)
        out = torch.cat([points[..., :3] + noise, points[..., 3:]], dim=-1)
        return _with_points(item, out, single)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_format_args(sigma=self.sigma, clip=self.clip)})"


# Right-handed rotation about an axis turns coordinate i towards coordinate j.
_ROTATION_PLANES = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}


class RandomRotateUp:
    """Rotate each cloud by a uniform random angle about the up ``axis``.

    The up axis differs between distributions of the same benchmark: ``y`` in
    ``modelnet40_normal_resampled`` and ShapeNetPart, ``z`` in some per-shape ``.npy`` / HDF5
    conversions of ModelNet40. Check the extents of a few tall shapes (person, bottle) first.
    """

    def __init__(self, axis: str = "y", generator: Optional[torch.Generator] = None) -> None:
        if axis not in _ROTATION_PLANES:
            raise ValueError(f"axis must be one of {', '.join(_ROTATION_PLANES)}, got {axis!r}")
        self.axis, self.generator = axis, generator

    def __call__(self, item: Item) -> Item:
        points, single = _batched_points(item)
        B = points.shape[0]
        angle = 2 * math.pi * _uniform((B,), points, self.generator)
        cos, sin = torch.cos(angle), torch.sin(angle)
        i, j = _ROTATION_PLANES[self.axis]
        matrix = torch.eye(3, dtype=points.dtype, device=points.device).repeat(B, 1, 1)
        matrix[:, i, i], matrix[:, i, j], matrix[:, j, i], matrix[:, j, j] = cos, -sin, sin, cos
        return _with_points(item, _apply_linear(points, matrix), single)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_format_args(axis=self.axis)})"


class RandomRotateSO3:
    """Rotate each cloud by a rotation drawn uniformly from SO(3) (normalized Gaussian quaternion)."""

    def __init__(self, generator: Optional[torch.Generator] = None) -> None:
        self.generator = generator

    def __call__(self, item: Item) -> Item:
        points, single = _batched_points(item)
        B = points.shape[0]
        q = _normal((B, 4), points, self.generator)
        w, x, y, z = (q / q.norm(dim=1, keepdim=True)).unbind(dim=1)
        matrix = torch.stack([
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ], dim=1).reshape(B, 3, 3)
        return _with_points(item, _apply_linear(points, matrix), single)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RandomPointDropout:
    """Drop a random fraction (up to ``max_ratio``) of each cloud's points, keeping N fixed.

    Dropped points (and their per-point values) are replaced by the cloud's first point, as in
    PointNet++, so batch shapes do not change.
    """

    def __init__(self, max_ratio: float = 0.875, generator: Optional[torch.Generator] = None) -> None:
        if not 0 <= max_ratio < 1:
            raise ValueError(f"max_ratio must be in [0, 1), got {max_ratio}")
        self.max_ratio, self.generator = max_ratio, generator

    def __call__(self, item: Item) -> Item:
        points, single = _batched_points(item)
        B, N, _ = points.shape
        ratio = self.max_ratio * _uniform((B, 1), points, self.generator)
        dropped = _uniform((B, N), points, self.generator) <= ratio  # (B, N)
        index = torch.arange(N, device=points.device).expand(B, N).masked_fill(dropped, 0)
        return _gather_points(item, index, single)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_format_args(max_ratio=self.max_ratio)})"


class RandomLocalDropout:
    """Cut up to ``max_ratio`` of each cloud's points out as 1..``max_clusters`` local holes,
    keeping N fixed (ModelNet-C's ``dropout_local`` occlusions, as a training augmentation).

    Each cloud draws a drop ratio U(0, max_ratio) and a number of holes; the hole centres are
    random points of the cloud and the points nearest to any centre are removed (so several holes
    share the count). Removed points (and their per-point values) are replaced by random kept
    points, so batch shapes do not change; points come out reordered. Label-preserving.
    """

    def __init__(self, max_ratio: float = 0.5, max_clusters: int = 7,
                 generator: Optional[torch.Generator] = None) -> None:
        if not 0 <= max_ratio < 1:
            raise ValueError(f"max_ratio must be in [0, 1), got {max_ratio}")
        if max_clusters < 1:
            raise ValueError(f"max_clusters must be at least 1, got {max_clusters}")
        self.max_ratio, self.max_clusters, self.generator = max_ratio, max_clusters, generator

    def __call__(self, item: Item) -> Item:
        points, single = _batched_points(item)
        B, N, _ = points.shape
        g = self.generator
        dropped = (self.max_ratio * _uniform((B,), points, g) * N).long()  # (B,) points to remove
        clusters = 1 + (_uniform((B,), points, g) * self.max_clusters).long().clamp_max(self.max_clusters - 1)
        centre_index = (_uniform((B, self.max_clusters), points, g) * N).long().clamp_max(N - 1)
        xyz = points[..., :3]
        centres = torch.gather(xyz, 1, centre_index[..., None].expand(-1, -1, 3))  # (B, K, 3)
        distance = torch.cdist(xyz, centres)  # (B, N, K)
        unused = torch.arange(self.max_clusters, device=points.device) >= clusters[:, None]  # (B, K)
        distance = distance.masked_fill(unused[:, None, :], float("inf")).amin(dim=-1)  # (B, N)
        order = distance.argsort(dim=1, descending=True)  # kept points first, the holes last
        kept = (N - dropped).clamp_min(1)[:, None]  # (B, 1)
        position = torch.arange(N, device=points.device).expand(B, N)
        refill = (_uniform((B, N), points, g) * kept).long().clamp_max(kept - 1)  # a random kept slot
        index = torch.gather(order, 1, torch.where(position < kept, position, refill))
        return _gather_points(item, index, single)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_format_args(max_ratio=self.max_ratio, max_clusters=self.max_clusters)})"


class RandomSubsample:
    """Keep ``num_points`` distinct random points of each cloud.

    A cloud with fewer points keeps all of them plus random repeats to reach ``num_points``.
    """

    def __init__(self, num_points: int, generator: Optional[torch.Generator] = None) -> None:
        if num_points < 1:
            raise ValueError(f"num_points must be positive, got {num_points}")
        self.num_points, self.generator = num_points, generator

    def __call__(self, item: Item) -> Item:
        points, single = _batched_points(item)
        B, N, _ = points.shape
        order = _uniform((B, N), points, self.generator).argsort(dim=1)  # a random permutation per cloud
        if N < self.num_points:
            extra = (_uniform((B, self.num_points - N), points, self.generator) * N).long().clamp_max(N - 1)
            order = torch.cat([order, extra], dim=1)
        return _gather_points(item, order[:, : self.num_points], single)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_format_args(num_points=self.num_points)})"


class FarthestPointSubsample:
    """Keep ``num_points`` points chosen by farthest point sampling (even coverage).

    Starts at point 0 (deterministic) unless ``random_start``.
    """

    def __init__(self, num_points: int, random_start: bool = False,
                 generator: Optional[torch.Generator] = None) -> None:
        if num_points < 1:
            raise ValueError(f"num_points must be positive, got {num_points}")
        self.num_points, self.random_start, self.generator = num_points, random_start, generator

    def __call__(self, item: Item) -> Item:
        points, single = _batched_points(item)
        B, N, _ = points.shape
        if self.random_start:
            start = (_uniform((B,), points, self.generator) * N).long().clamp_max(N - 1)
        else:
            start = torch.zeros(B, dtype=torch.long, device=points.device)
        index = farthest_point_sample(points[..., :3], self.num_points, start=start)
        return _gather_points(item, index, single)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_format_args(num_points=self.num_points, random_start=self.random_start)})"


class ShufflePoints:
    """Randomly permute the points of each cloud (per-point values follow)."""

    def __init__(self, generator: Optional[torch.Generator] = None) -> None:
        self.generator = generator

    def __call__(self, item: Item) -> Item:
        points, single = _batched_points(item)
        B, N, _ = points.shape
        return _gather_points(item, _uniform((B, N), points, self.generator).argsort(dim=1), single)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# --------------------------------------------------------------------------- robust training
# Augmentations that ModelNet-C's authors (Ren et al., ICML 2022) and later work found to help
# robustness to corrupted clouds: local deformation, noise points and mixing of samples.


def _random_axes(shape: Sequence[int], points: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """A random non-empty subset of the x, y, z axes per entry: bool ``(*shape, 3)``."""
    code = (_uniform(shape, points, generator) * 7).long().clamp_max(6) + 1  # 1..7, one bit per axis
    return (code[..., None] >> torch.arange(3, device=points.device)) & 1 == 1


def _euler_rotation(angles: Tensor) -> Tensor:
    """Rotations ``Rz @ Ry @ Rx`` from angles (..., 3) about x, y, z in radians: (..., 3, 3)."""
    sx, sy, sz = torch.sin(angles).unbind(-1)
    cx, cy, cz = torch.cos(angles).unbind(-1)
    return torch.stack([
        cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx,
        sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx,
        -sy, cy * sx, cy * cx,
    ], dim=-1).reshape(*angles.shape[:-1], 3, 3)


class RandomRotatePerturb:
    """Rotate each cloud by angles U(-max_angle, max_angle) degrees about x, y and z
    (``Rz @ Ry @ Rx``): small tilts in every direction, as ModelNet-C's ``rotate`` corruption
    (6 to 30 degrees) and DGCNN's rotation perturbation. Normals turn with the points."""

    def __init__(self, max_angle: float = 15.0, generator: Optional[torch.Generator] = None) -> None:
        if not 0 <= max_angle <= 180:
            raise ValueError(f"max_angle must be in [0, 180] degrees, got {max_angle}")
        self.max_angle, self.generator = max_angle, generator

    def __call__(self, item: Item) -> Item:
        points, single = _batched_points(item)
        angles = math.radians(self.max_angle) * (2 * _uniform((points.shape[0], 3), points, self.generator) - 1)
        return _with_points(item, _apply_linear(points, _euler_rotation(angles)), single)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_format_args(max_angle=self.max_angle)})"


class PointWOLF:
    """Weighted local transformations (PointWOLF: Kim et al., "Point Cloud Augmentation with
    Weighted Local Transformations", ICCV 2021, eq. 2-6). Label-preserving.

    Per cloud, ``num_anchors`` anchors are picked (farthest point sampling from a random start, or
    at random); each anchor draws a local transformation about itself: rotation angles
    U(-max_rotation, max_rotation) degrees about x, y and z, per-axis scale U(1, max_scale) and
    translation U(-max_translation, max_translation) on a random non-empty subset of the axes,
    each of the three kept with probability 1/2 as in the reference. Every point moves to the
    average of its anchor-transformed positions, weighted by a Gaussian kernel (bandwidth
    ``sigma``) of its distance to each anchor, that distance taken on a random subset of the
    axes per cloud. With ``normalize`` the result is re-centred and scaled into the unit sphere,
    as the reference does. Defaults are the paper's (github.com/mlvlab/PointWOLF).

    Normals get the inverse-transpose of the blended linear part at each point (the kernel
    weights' own variation is neglected), renormalized.
    """

    SAMPLE_TYPES = ("fps", "random")

    def __init__(self, num_anchors: int = 4, sample_type: str = "fps", sigma: float = 0.5,
                 max_rotation: float = 10.0, max_scale: float = 3.0, max_translation: float = 0.25,
                 normalize: bool = True, generator: Optional[torch.Generator] = None) -> None:
        if num_anchors < 1:
            raise ValueError(f"num_anchors must be positive, got {num_anchors}")
        if sample_type not in self.SAMPLE_TYPES:
            raise ValueError(f"sample_type must be one of {', '.join(self.SAMPLE_TYPES)}, got {sample_type!r}")
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        if max_rotation < 0 or max_scale < 1 or max_translation < 0:
            raise ValueError(
                "need max_rotation >= 0, max_scale >= 1 and max_translation >= 0, got "
                f"{max_rotation}, {max_scale}, {max_translation}"
            )
        self.num_anchors, self.sample_type, self.sigma = num_anchors, sample_type, sigma
        self.max_rotation, self.max_scale, self.max_translation = max_rotation, max_scale, max_translation
        self.normalize, self.generator = normalize, generator

    def __call__(self, item: Item) -> Item:
        points, single = _batched_points(item)
        B, N, C = points.shape
        M, g = self.num_anchors, self.generator
        xyz = points[..., :3]
        if self.sample_type == "fps":
            start = (_uniform((B,), points, g) * N).long().clamp_max(N - 1)
            anchor_index = farthest_point_sample(xyz, M, start=start)  # (B, M)
        else:
            anchor_index = (_uniform((B, M), points, g) * N).long().clamp_max(N - 1)
        anchors = torch.gather(xyz, 1, anchor_index[..., None].expand(-1, -1, 3))  # (B, M, 3)

        keep = _uniform((B, M, 3), points, g) < 0.5  # rotation / scale / translation kept per anchor
        axes = _random_axes((B, M), points, g)  # (B, M, 3) axes that scale and translate
        angles = math.radians(self.max_rotation) * (2 * _uniform((B, M, 3), points, g) - 1) * keep[..., :1]
        scale = 1 + (self.max_scale - 1) * _uniform((B, M, 3), points, g)
        scale = torch.where(axes & keep[..., 1:2], scale, torch.ones_like(scale))
        shift = self.max_translation * (2 * _uniform((B, M, 3), points, g) - 1) * (axes & keep[..., 2:3])
        linear = _euler_rotation(angles) @ torch.diag_embed(scale)  # (B, M, 3, 3)

        local = xyz[:, None] - anchors[:, :, None]  # (B, M, N, 3) positions relative to each anchor
        moved = local @ linear.transpose(-1, -2) + anchors[:, :, None] + shift[:, :, None]  # (B, M, N, 3)
        project = _random_axes((B,), points, g).to(points.dtype)  # (B, 3)
        distance2 = (local * project[:, None, None]).square().sum(-1)  # (B, M, N)
        # softmax = exp(-d^2 / 2 sigma^2) normalized over anchors, without underflow far from all of them
        weight = torch.softmax(-0.5 * distance2 / self.sigma ** 2, dim=1)  # (B, M, N)
        out = [(weight[..., None] * moved).sum(1)]  # (B, N, 3)
        if C >= 6:
            blend = torch.einsum("bmn,bmij->bnij", weight, linear)  # (B, N, 3, 3)
            a1, a2, a3 = blend.unbind(-1)  # columns
            # cofactor matrix = det * inverse-transpose: no inverse of a near-singular blend needed
            cofactor = torch.stack([torch.cross(a2, a3, dim=-1), torch.cross(a3, a1, dim=-1),
                                    torch.cross(a1, a2, dim=-1)], dim=-1)
            sign = torch.sign((a1 * cofactor[..., 0]).sum(-1, keepdim=True))  # sign of det
            normals = sign * (cofactor @ points[..., 3:6, None]).squeeze(-1)
            out += [normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12), points[..., 6:]]
        result = _with_points(item, torch.cat(out, dim=-1), single)
        return NormalizeUnitSphere()(result) if self.normalize else result

    def __repr__(self) -> str:
        args = _format_args(num_anchors=self.num_anchors, sample_type=self.sample_type, sigma=self.sigma,
                            max_rotation=self.max_rotation, max_scale=self.max_scale,
                            max_translation=self.max_translation, normalize=self.normalize)
        return f"{type(self).__name__}({args})"


class RandomNoisePoints:
    """Replace a random fraction (up to ``max_ratio``) of each cloud's points by uniform noise,
    keeping N fixed (ModelNet-C's ``add_global`` outliers, as a training augmentation).

    Noise lies in the unit ball (``region="ball"``, the corruption's region) or in the cloud's
    axis-aligned bounding box (``"box"``). Noise points get random unit normals and keep the
    replaced point's extra channels; their per-point ``parts`` become -1, which losses and
    metrics ignore. Label-preserving.
    """

    REGIONS = ("ball", "box")

    def __init__(self, max_ratio: float = 0.05, region: str = "ball",
                 generator: Optional[torch.Generator] = None) -> None:
        if not 0 <= max_ratio <= 1:
            raise ValueError(f"max_ratio must be in [0, 1], got {max_ratio}")
        if region not in self.REGIONS:
            raise ValueError(f"region must be one of {', '.join(self.REGIONS)}, got {region!r}")
        self.max_ratio, self.region, self.generator = max_ratio, region, generator

    def __call__(self, item: Item) -> Item:
        points, single = _batched_points(item)
        B, N, C = points.shape
        g = self.generator
        ratio = self.max_ratio * _uniform((B, 1), points, g)
        noisy = _uniform((B, N), points, g) < ratio  # (B, N)
        if self.region == "ball":
            direction = _normal((B, N, 3), points, g)
            radius = _uniform((B, N, 1), points, g) ** (1 / 3)  # uniform in volume
            noise = radius * direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        else:
            low, high = points[..., :3].amin(1, keepdim=True), points[..., :3].amax(1, keepdim=True)
            noise = low + (high - low) * _uniform((B, N, 3), points, g)
        channels = [noise]
        if C >= 6:
            normals = _normal((B, N, 3), points, g)
            channels += [normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12), points[..., 6:]]
        out = torch.where(noisy[..., None], torch.cat(channels, dim=-1), points)
        result = _with_points(item, out, single)
        if "parts" in item:
            parts = torch.as_tensor(item["parts"])
            result["parts"] = parts.masked_fill(noisy.squeeze(0) if single else noisy, -1)
        return result

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_format_args(max_ratio=self.max_ratio, region=self.region)})"


def soft_labels(labels: Tensor, num_classes: Optional[int], dtype: torch.dtype = torch.float32) -> Tensor:
    """Class indices (B,) as one-hot rows (B, K); soft labels (B, K) pass through as ``dtype``."""
    labels = torch.as_tensor(labels)
    if labels.is_floating_point():
        if labels.ndim != 2 or (num_classes is not None and labels.shape[1] != num_classes):
            raise ValueError(f"soft labels must have shape (B, {num_classes or 'K'}), got {tuple(labels.shape)}")
        return labels.to(dtype)
    if num_classes is None:
        raise ValueError("mixing class-index labels needs num_classes (the number of classes)")
    return torch.nn.functional.one_hot(labels.long(), num_classes).to(dtype)


class RSMix:
    """Rigid subset mixing of the clouds of a batch (RSMix: Lee et al., "Regularization Strategy
    for Point Cloud via Rigidly Mixed Sample", CVPR 2021, sec. 3).

    With probability ``prob`` per batch: a radius r ~ Beta(beta, beta) is drawn, each cloud a is
    paired with a partner b (a random permutation of the batch, which may pair a cloud with
    itself), and each of the two loses or gives the points strictly within r of a random centre
    point of its own (at most ``max_points`` nearest, the reference's ball query size). a's
    subset is removed and as many of b's subset points are inserted (a random subset of them, or
    all plus random repeats when b's is smaller), translated so that b's centre lands on a's:
    N stays fixed. Labels become soft, ``(1 - lam) * y_a + lam * y_b`` with lam = inserted / N,
    shape (B, K) float; hard labels (B,) are one-hot encoded with ``num_classes`` first, and a
    batch left unmixed gets one-hot rows, so the label type does not change between batches.

    Only xyz is translated; normals, extra channels and per-point values (``parts``) come with
    the inserted points unchanged. Padded batches are refused. Mixing suits class labels only
    (the config refuses it for segmentation).
    """

    mixes_samples = True  # mixes clouds and labels across the batch: classification only

    def __init__(self, num_classes: Optional[int] = None, beta: float = 1.0, prob: float = 0.5,
                 max_points: int = 512, generator: Optional[torch.Generator] = None) -> None:
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta}")
        if not 0 <= prob <= 1:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        if max_points < 1:
            raise ValueError(f"max_points must be positive, got {max_points}")
        self.num_classes, self.beta, self.prob, self.max_points = num_classes, beta, prob, max_points
        self.generator = generator

    def _radius(self, points: Tensor) -> float:
        # Beta draws from torch take no generator: seed a NumPy one from ours, to stay reproducible
        device = self.generator.device if self.generator is not None else points.device
        seed = int(torch.randint(2 ** 62, (1,), generator=self.generator, device=device))
        return float(np.random.default_rng(seed).beta(self.beta, self.beta))

    def __call__(self, item: Item) -> Item:
        points, single = _batched_points(item)
        if single:
            raise ValueError("RSMix mixes the clouds of a batch; got a single cloud (N, C)")
        if "label" not in item:
            raise ValueError(f"RSMix needs class labels in 'label', got keys {sorted(item)}")
        if "mask" in item and not torch.as_tensor(item["mask"]).all():
            raise ValueError("RSMix needs clouds of equal size; this batch is padded (set data.num_points)")
        B, N, C = points.shape
        dtype = points.dtype if points.is_floating_point() else torch.float32
        targets = soft_labels(item["label"], self.num_classes, dtype).to(points.device)  # (B, K)
        g = self.generator
        if float(_uniform((1,), points, g)) >= self.prob:
            return {**item, "label": targets}
        radius = self._radius(points)
        partner = _uniform((B,), points, g).argsort()  # (B,)
        centres = (_uniform((2, B), points, g) * N).long().clamp_max(N - 1)  # a's and b's centre index
        rows = torch.arange(B, device=points.device)
        xyz, partner_points = points[..., :3], points[partner]
        centre_a, centre_b = xyz[rows, centres[0]], partner_points[rows, centres[1], :3]  # (B, 3)

        def ball(cloud_xyz: Tensor, centre: Tensor) -> Tensor:
            """(B, N) bool: the at most max_points nearest points strictly within radius."""
            distance = (cloud_xyz - centre[:, None]).norm(dim=-1)  # (B, N)
            near = distance.topk(min(self.max_points, N), dim=1, largest=False)
            return torch.zeros(B, N, dtype=torch.bool, device=points.device).scatter(
                1, near.indices, near.values < radius)

        taken = ball(partner_points[..., :3], centre_b)  # (B, N) partner points that may be inserted
        available = taken.sum(1)  # (B,)
        erased = ball(xyz, centre_a) & (available > 0)[:, None]  # nothing to insert: nothing erased
        # partner's ball points first, in random order; erased slot s takes the s-th of them, or a
        # random one of them once they run out
        order = torch.where(taken, _uniform((B, N), points, g), torch.full_like(xyz[..., 0], 2.0)).argsort(dim=1)
        slot = erased.long().cumsum(1) - 1  # (B, N) rank of each erased point
        repeat = (_uniform((B, N), points, g) * available[:, None]).long()
        slot = torch.where(slot < available[:, None], slot, repeat).clamp(0, N - 1)
        source = torch.gather(order, 1, slot)  # (B, N) partner point index per slot
        inserted = torch.gather(partner_points, 1, source[..., None].expand(-1, -1, C))
        inserted = torch.cat([inserted[..., :3] + (centre_a - centre_b)[:, None], inserted[..., 3:]], dim=-1)
        mixed = torch.where(erased[..., None], inserted, points)
        lam = (erased.sum(1).to(dtype) / N)[:, None]  # (B, 1) share of inserted points
        out = {**item, "points": mixed, "label": (1 - lam) * targets + lam * targets[partner]}
        for key in POINT_KEYS:  # per-point values come along with the inserted points
            if key in item:
                values = torch.as_tensor(item[key])
                out[key] = torch.where(erased, torch.gather(values[partner], 1, source), values)
        return out

    def __repr__(self) -> str:
        args = _format_args(num_classes=self.num_classes, beta=self.beta, prob=self.prob,
                            max_points=self.max_points)
        return f"{type(self).__name__}({args})"
