"""Composable point cloud transforms for single items and whole batches.

Every transform is a callable on an item dict that returns a NEW dict (the input is never
modified) and shows its arguments in ``repr``. ``item["points"]`` is ``(N, C)`` for one cloud or
``(B, N, C)`` for a batch, channels ``x y z [nx ny nz] [extra...]``; per-point keys
(:data:`POINT_KEYS`, e.g. ``parts`` ``(N,)`` / ``(B, N)``) follow any reordering or selection of
the points. Every other key passes through untouched.

Normals (channels 3:6) are rotated with the points, and transformed by the inverse-transpose of
an anisotropic scaling (then renormalized) so they stay perpendicular to the surface; they are
never translated or jittered. Batches draw independent random parameters per cloud.

Randomness comes from torch only, from ``generator`` when given and otherwise from the global
torch generator, which ``DataLoader`` seeds per worker, so augmented runs are reproducible.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

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
