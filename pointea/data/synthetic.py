"""Procedural shapes with named parts: the embedded default dataset, no download needed.

Every sample is generated deterministically from ``(seed, split, index)``: a parametric shape
made of primitive surfaces (sphere, rectangles, tubes, disks, cone frusta, torus sections),
points sampled uniformly over the whole surface (each primitive gets points in proportion to its
area, so density is uniform across parts), analytic outward normals, random dimensions and
orientation about the up axis (y), small positional noise, then normalized to the unit sphere.

Classes share building blocks on purpose (cylinder / mug body / lamp pole, box / table top /
chair seat, cone / lamp shade) so that classification is learnable but not trivial.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

SPLITS = ("train", "val", "test")
SAMPLES_PER_CLASS = {"train": 64, "val": 16, "test": 16}
NOISE_SIGMA = 0.01  # positional noise after normalization to the unit sphere

# Category -> part names; global part ids number the parts contiguously in this order.
CATEGORY_PART_NAMES: Dict[str, List[str]] = {
    "sphere": ["surface"],
    "box": ["sides", "caps"],
    "cylinder": ["body", "caps"],
    "cone": ["body", "base"],
    "torus": ["surface"],
    "table": ["top", "legs"],
    "chair": ["seat", "back", "legs"],
    "lamp": ["base", "pole", "shade"],
    "mug": ["body", "handle"],
}
CATEGORIES = list(CATEGORY_PART_NAMES)

# A surface is (xyz (k, 3), normals (k, 3)) sampled uniformly; a primitive is (area, sampler).
Surface = Tuple[np.ndarray, np.ndarray]
Sampler = Callable[[np.random.Generator, int], Surface]
Primitive = Tuple[float, Sampler]

_Y = np.array([0.0, 1.0, 0.0])


# --------------------------------------------------------------------------- primitives

def _rectangle(origin, edge_u, edge_v) -> Primitive:
    """Parallelogram ``origin + s * edge_u + t * edge_v``; normal ``edge_u x edge_v``."""
    origin, edge_u, edge_v = (np.asarray(a, dtype=np.float64) for a in (origin, edge_u, edge_v))
    normal = np.cross(edge_u, edge_v)
    area = float(np.linalg.norm(normal))
    normal = normal / area

    def sample(rng: np.random.Generator, k: int) -> Surface:
        s, t = rng.random((2, k, 1))
        return origin + s * edge_u + t * edge_v, np.tile(normal, (k, 1))

    return area, sample


def _box(center, size, faces: str = "xXyYzZ") -> List[Primitive]:
    """Faces of an axis-aligned box; ``faces`` picks them (lower case = negative side)."""
    c, (w, h, d) = np.asarray(center, dtype=np.float64), size
    lo = c - np.array([w, h, d]) / 2
    ex, ey, ez = np.array([w, 0, 0.0]), np.array([0, h, 0.0]), np.array([0, 0, d * 1.0])
    table = {  # (origin, u, v) with u x v pointing outwards
        "x": (lo, ez, ey), "X": (lo + ex, ey, ez),
        "y": (lo, ex, ez), "Y": (lo + ey, ez, ex),
        "z": (lo, ey, ex), "Z": (lo + ez, ex, ey),
    }
    return [_rectangle(*table[f]) for f in faces]


def _frustum(base, radius_bottom: float, radius_top: float, height: float) -> Primitive:
    """Side of a cone frustum (a tube when the radii match) around the y axis, open ends."""
    base = np.asarray(base, dtype=np.float64)
    r0, r1 = radius_bottom, radius_top
    slant = float(np.hypot(height, r0 - r1))
    area = float(np.pi * (r0 + r1) * slant)

    def sample(rng: np.random.Generator, k: int) -> Surface:
        # Area density along the height is proportional to the radius: invert its CDF.
        u = rng.random(k)
        if abs(r1 - r0) < 1e-9:
            t = u
        else:
            t = (np.sqrt(r0**2 + u * (r1**2 - r0**2)) - r0) / (r1 - r0)
        theta = rng.random(k) * 2 * np.pi
        radius = r0 + t * (r1 - r0)
        cos, sin = np.cos(theta), np.sin(theta)
        xyz = base + np.stack([radius * cos, t * height, radius * sin], axis=1)
        normals = np.stack([height * cos, np.full(k, r0 - r1), height * sin], axis=1) / slant
        return xyz, normals

    return area, sample


def _disk(center, radius: float, up: bool) -> Primitive:
    """Horizontal disk; its normal points up (+y) or down (-y)."""
    center = np.asarray(center, dtype=np.float64)
    normal = _Y if up else -_Y

    def sample(rng: np.random.Generator, k: int) -> Surface:
        r = radius * np.sqrt(rng.random(k))
        theta = rng.random(k) * 2 * np.pi
        xyz = center + np.stack([r * np.cos(theta), np.zeros(k), r * np.sin(theta)], axis=1)
        return xyz, np.tile(normal, (k, 1))

    return float(np.pi * radius**2), sample


def _ellipsoid(center, radii) -> Primitive:
    """Ellipsoid surface, sampled uniformly by rejection from mapped sphere samples."""
    center, radii = np.asarray(center, dtype=np.float64), np.asarray(radii, dtype=np.float64)
    a, b, c = radii
    p = 1.6075  # Knud Thomsen's approximation of the ellipsoid area (error < 1.1 %)
    area = float(4 * np.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p))

    def sample(rng: np.random.Generator, k: int) -> Surface:
        # Mapping the unit sphere by diag(radii) stretches area by |radii_prod / radii * u|.
        stretch_max = float(np.prod(radii) / radii.min())
        chunks, have = [], 0
        while have < k:
            u = rng.normal(size=(2 * k + 16, 3))
            u /= np.linalg.norm(u, axis=1, keepdims=True)
            stretch = np.linalg.norm(u * (np.prod(radii) / radii), axis=1)
            keep = u[rng.random(len(u)) * stretch_max < stretch]
            chunks.append(keep)
            have += len(keep)
        u = np.concatenate(chunks)[:k]
        normals = u / radii
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        return center + u * radii, normals

    return area, sample


def _torus(center, major: float, minor: float, axis: str = "y",
           arc: Tuple[float, float] = (0.0, 2 * np.pi)) -> Primitive:
    """Torus (or a section of it over the angle range ``arc``) around the y or z axis."""
    center = np.asarray(center, dtype=np.float64)
    area = float(2 * np.pi * minor * major * (arc[1] - arc[0]))

    def sample(rng: np.random.Generator, k: int) -> Surface:
        # The tube angle phi has area density (major + minor cos phi): rejection sampling.
        chunks, have = [], 0
        while have < k:
            phi = rng.random(2 * k + 16) * 2 * np.pi
            keep = phi[rng.random(len(phi)) * (major + minor) < major + minor * np.cos(phi)]
            chunks.append(keep)
            have += len(keep)
        phi = np.concatenate(chunks)[:k]
        theta = arc[0] + rng.random(k) * (arc[1] - arc[0])
        ring = np.stack([np.cos(theta), np.sin(theta)], axis=1)  # (k, 2) in the torus plane
        radial = np.cos(phi)[:, None] * ring
        along_axis = np.sin(phi)
        if axis == "y":  # torus plane xz
            normals = np.stack([radial[:, 0], along_axis, radial[:, 1]], axis=1)
        else:  # torus plane xy
            normals = np.stack([radial[:, 0], radial[:, 1], along_axis], axis=1)
        tube_center = np.zeros((k, 3))
        if axis == "y":
            tube_center[:, [0, 2]] = major * ring
        else:
            tube_center[:, [0, 1]] = major * ring
        return center + tube_center + minor * normals, normals

    return area, sample


# --------------------------------------------------------------------------- shapes

def _legs(width: float, depth: float, height: float, thickness: float, rng) -> List[Primitive]:
    """Four legs from the floor (y = 0) up to ``height``, square or round at random."""
    inset_x, inset_z = width / 2 - thickness, depth / 2 - thickness
    round_legs = rng.random() < 0.5
    legs: List[Primitive] = []
    for sx in (-1, 1):
        for sz in (-1, 1):
            x, z = sx * inset_x, sz * inset_z
            if round_legs:
                legs.append(_frustum([x, 0, z], thickness / 2, thickness / 2, height))
            else:
                legs += _box([x, height / 2, z], (thickness, height, thickness), faces="xXzZ")
    return legs


def _shape(category: str, rng: np.random.Generator) -> List[List[Primitive]]:
    """Primitives of one random instance of ``category``, grouped by part (in part order)."""
    u = rng.uniform
    if category == "sphere":
        return [[_ellipsoid([0, 0, 0], u(0.6, 1.4, size=3))]]
    if category == "box":
        w, h, d = u(0.3, 1.5, size=3)
        return [_box([0, 0, 0], (w, h, d), faces="xXzZ"), _box([0, 0, 0], (w, h, d), faces="yY")]
    if category == "cylinder":
        r, h = u(0.2, 0.8), u(0.4, 2.0)
        return [[_frustum([0, 0, 0], r, r, h)], [_disk([0, 0, 0], r, False), _disk([0, h, 0], r, True)]]
    if category == "cone":
        r, h, top = u(0.4, 0.8), u(0.6, 1.8), u(0.0, 0.35)
        return [[_frustum([0, 0, 0], r, top, h)], [_disk([0, 0, 0], r, False)]]
    if category == "torus":
        return [[_torus([0, 0, 0], u(0.55, 0.9), u(0.12, 0.45))]]
    if category == "table":
        w, d, h, t = u(1.0, 1.8), u(0.6, 1.2), u(0.6, 1.0), u(0.04, 0.1)
        top = _box([0, h + t / 2, 0], (w, t, d))
        return [top, _legs(w, d, h, u(0.05, 0.1), rng)]
    if category == "chair":
        w, d, h, t = u(0.8, 1.1), u(0.8, 1.1), u(0.8, 1.2), u(0.05, 0.1)
        back_height = u(0.35, 1.3)
        seat = _box([0, h + t / 2, 0], (w, t, d))
        back = _box([0, h + t + back_height / 2, -d / 2 + t / 2], (w, back_height, t))
        return [seat, back, _legs(w, d, h, u(0.05, 0.1), rng)]
    if category == "lamp":
        base_r, base_h = u(0.3, 0.5), u(0.05, 0.15)
        pole_r, pole_h = u(0.025, 0.05), u(1.0, 1.8)
        shade_bottom, shade_top, shade_h = u(0.35, 0.6), u(0.12, 0.3), u(0.3, 0.6)
        base = [_frustum([0, 0, 0], base_r, base_r, base_h), _disk([0, 0, 0], base_r, False),
                _disk([0, base_h, 0], base_r, True)]
        pole = [_frustum([0, base_h, 0], pole_r, pole_r, pole_h)]
        shade_y = base_h + pole_h - shade_h * u(0.3, 0.7)
        shade = [_frustum([0, shade_y, 0], shade_bottom, shade_top, shade_h)]
        return [base, pole, shade]
    if category == "mug":
        r, h = u(0.3, 0.5), u(0.6, 1.2)
        body = [_frustum([0, 0, 0], r, r, h), _disk([0, 0, 0], r, False)]
        major, minor = u(0.15, 0.32) * h, u(0.025, 0.07)
        # Outer half of a torus in the xy plane, its ends touching the body wall.
        handle = [_torus([r, h / 2, 0], major, minor, axis="z", arc=(-np.pi / 2, np.pi / 2))]
        return [body, handle]
    raise ValueError(f"unknown category {category!r}; expected one of {', '.join(CATEGORIES)}")


def _rotation_about_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def generate_shape(category: str, num_points: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Sample one random instance of ``category``.

    Args:
        category: one of :data:`CATEGORIES`.
        num_points: number of surface samples.
        rng: numpy generator that drives every random choice.

    Returns:
        ``(points, parts)``: float32 ``(num_points, 6)`` xyz + unit normals, centred on the
        centroid and scaled into the unit sphere, and int64 ``(num_points,)`` part indices local
        to the category (0 .. number of parts - 1).
    """
    groups = _shape(category, rng)
    primitives = [(area, sampler, part) for part, group in enumerate(groups) for area, sampler in group]
    areas = np.array([area for area, _, _ in primitives])
    counts = rng.multinomial(num_points, areas / areas.sum())
    xyz, normals, parts = [], [], []
    for (_, sampler, part), k in zip(primitives, counts):
        if k:
            p, n = sampler(rng, int(k))
            xyz.append(p)
            normals.append(n)
            parts.append(np.full(k, part, dtype=np.int64))
    xyz, normals, parts = np.concatenate(xyz), np.concatenate(normals), np.concatenate(parts)
    order = rng.permutation(num_points)  # no part ordering for index-based transforms to exploit
    xyz, normals, parts = xyz[order], normals[order], parts[order]

    rotation = _rotation_about_y(rng.uniform(0, 2 * np.pi))
    xyz, normals = xyz @ rotation.T, normals @ rotation.T
    xyz = xyz - xyz.mean(axis=0)
    xyz = xyz / np.linalg.norm(xyz, axis=1).max()
    xyz = xyz + rng.normal(scale=NOISE_SIGMA, size=xyz.shape)
    # Noise may push a few points past radius 1: shrink to keep the unit-sphere promise.
    xyz = xyz / max(1.0, float(np.linalg.norm(xyz, axis=1).max()))
    normals = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    return np.concatenate([xyz, normals], axis=1).astype(np.float32), parts


class SyntheticShapes(Dataset):
    """Procedural shapes with class and part labels, generated in memory from a seed.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``; each split draws from its own random stream,
            so splits never share a sample.
        num_points: points per shape.
        num_samples: samples per class (default 64 for train, 16 for val and test).
        seed: dataset seed; the same ``(seed, split, index)`` always gives the same shape.
        use_normals: return xyz + normals (6 channels) instead of xyz (3 channels).
        transform: callable applied to each item dict.

    Attributes:
        classes / categories: category names; ``num_classes``.
        category_parts: global part ids of each category (contiguous numbering across categories).
        part_names: global part id -> ``"category/part"``; ``num_parts``.
        points: ``(M, num_points, C)`` float32; labels: ``(M,)`` int64; parts: ``(M, num_points)`` int64.

    Items: ``{"points": (N, C) float32, "label": int64, "category": int64 (== label),
    "parts": (N,) int64 global part ids}``, then ``transform``.
    """

    def __init__(
        self,
        split: str = "train",
        num_points: int = 1024,
        num_samples: Optional[int] = None,
        seed: int = 0,
        use_normals: bool = False,
        transform: Optional[Callable[[dict], dict]] = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if num_points < 1:
            raise ValueError(f"num_points must be positive, got {num_points}")
        per_class = SAMPLES_PER_CLASS[split] if num_samples is None else int(num_samples)
        if per_class < 1:
            raise ValueError(f"num_samples (per class) must be positive, got {num_samples}")
        self.split, self.num_points, self.seed = split, num_points, seed
        self.use_normals, self.transform = use_normals, transform
        self.classes = list(CATEGORIES)
        self.categories = self.classes
        self.num_classes = len(self.classes)
        self.category_parts: List[List[int]] = []
        self.part_names: List[str] = []
        for category in self.classes:
            first = len(self.part_names)
            self.part_names += [f"{category}/{part}" for part in CATEGORY_PART_NAMES[category]]
            self.category_parts.append(list(range(first, len(self.part_names))))
        self.num_parts = len(self.part_names)
        self.in_channels = 6 if use_normals else 3

        labels = np.repeat(np.arange(self.num_classes), per_class)  # (M,)
        points = np.empty((len(labels), num_points, 6), dtype=np.float32)
        parts = np.empty((len(labels), num_points), dtype=np.int64)
        split_id = SPLITS.index(split)
        for index, label in enumerate(labels):
            rng = np.random.default_rng([seed, split_id, index])
            cloud, local_parts = generate_shape(self.classes[label], num_points, rng)
            points[index] = cloud
            parts[index] = np.asarray(self.category_parts[label])[local_parts]
        self.points = torch.from_numpy(points[:, :, : self.in_channels].copy())
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.parts = torch.from_numpy(parts)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        label = self.labels[index]
        item = {"points": self.points[index], "label": label, "category": label, "parts": self.parts[index]}
        return self.transform(item) if self.transform is not None else item

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(split={self.split!r}, num_points={self.num_points}, "
                f"samples={len(self)}, classes={self.num_classes}, parts={self.num_parts}, "
                f"use_normals={self.use_normals}, seed={self.seed})")
