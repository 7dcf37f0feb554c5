"""Groups of near-identical shapes, and a validation holdout that keeps each group on one side.

ModelNet holds many near-duplicate CAD models (the same mesh, or a lightly edited copy, under two
file names). A validation shape whose twin sits in the training split is classified almost
perfectly, so a plain random holdout overstates test accuracy (measured on ModelNet40 by
``tools/val_duplicates.py``). :func:`grouped_holdout` carves validation by whole groups instead.

Similarity is the IoU of occupancy grids of the unit-sphere-normalised clouds: cheap (one matrix
product over all pairs), and alignment-aware, which suits datasets whose shapes share an up axis
and orientation (ModelNet). Groups are the connected components of the graph "IoU >= threshold".
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from pathlib import Path
from typing import Iterator, Optional, Tuple, Union

import numpy as np
import torch

from pointea.data.cache import cache_file, load_or_build

PathLike = Union[str, os.PathLike]

VAL_SPLITS = ("stratified", "grouped")  # the values of data.val_split
# clouds are compared on their first GROUP_POINTS points whatever num_points a dataset serves, so
# every split and point count of one dataset carves the same groups
GROUP_POINTS = 1024
GRID_RESOLUTION = 24  # voxels per side of the occupancy grid
# IoU at which two shapes count as near-identical: at 24^3 on 1024-point ModelNet40 clouds, twins
# of the same mesh score 0.6-0.9 (point sampling keeps them below 1) and val shapes above 0.5
# score 96 % against 91 % below (see README, Results)
DUPLICATE_IOU = 0.5
_BLOCK = 1024  # rows per block of the pairwise product: bounds memory at O(block * voxels)

logger = logging.getLogger(__name__)


def occupancy_grids(points: np.ndarray, resolution: int = GRID_RESOLUTION) -> np.ndarray:
    """Occupancy grids of clouds centred on their mean and scaled into the unit sphere.

    Shapes:
        points ``(M, N, C)`` (the first three channels are xyz) -> bool ``(M, resolution ** 3)``.
    """
    if points.ndim != 3 or points.shape[2] < 3:
        raise ValueError(f"points must be (M, N, C >= 3), got shape {points.shape}")
    xyz = np.asarray(points[..., :3], dtype=np.float64)
    xyz = xyz - xyz.mean(axis=1, keepdims=True)
    radius = np.linalg.norm(xyz, axis=2).max(axis=1)  # (M,)
    xyz = xyz / np.where(radius > 0, radius, 1.0)[:, None, None]
    cells = np.clip(((xyz + 1.0) * 0.5 * resolution).astype(np.int64), 0, resolution - 1)  # (M, N, 3)
    flat = (cells[..., 0] * resolution + cells[..., 1]) * resolution + cells[..., 2]  # (M, N)
    grids = np.zeros((len(points), resolution ** 3), dtype=bool)
    np.put_along_axis(grids, flat, True, axis=1)
    return grids


def _near_identical_pairs(grids: np.ndarray, threshold: float) -> Iterator[Tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i <= j`` (each shape pairs with itself), whose occupancy IoU is at
    least ``threshold``; one matrix product per block pair of the upper triangle."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    counts = torch.from_numpy(grids.sum(axis=1).astype(np.float32))  # (M,)
    for start in range(0, len(grids), _BLOCK):
        rows = torch.from_numpy(grids[start:start + _BLOCK].astype(np.float32))  # (b, V)
        for other in range(start, len(grids), _BLOCK):  # upper block triangle: IoU is symmetric
            cols = torch.from_numpy(grids[other:other + _BLOCK].astype(np.float32))  # (b', V)
            inter = rows @ cols.T  # (b, b')
            union = counts[start:start + len(rows), None] + counts[None, other:other + len(cols)] - inter
            close = inter >= threshold * union  # IoU >= threshold without dividing by an empty union
            for i, j in torch.nonzero(close).tolist():
                if start + i <= other + j:
                    yield start + i, other + j


def duplicate_groups(
    points: np.ndarray, threshold: float = DUPLICATE_IOU, resolution: int = GRID_RESOLUTION
) -> np.ndarray:
    """Group id of every shape: connected components of "occupancy IoU >= threshold".

    Args:
        points: ``(M, N, C)`` clouds (xyz first).
        threshold: IoU in (0, 1] at which two shapes are near-identical.
        resolution: voxels per side of the occupancy grid.

    Returns:
        int64 ``(M,)``; groups are numbered 0, 1, ... in the order of their first shape, so the
        result depends only on the clouds and their order.
    """
    grids = occupancy_grids(points, resolution)
    parent = np.arange(len(grids))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in _near_identical_pairs(grids, threshold):
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    roots = np.array([find(i) for i in range(len(grids))], dtype=np.int64)
    _, groups = np.unique(roots, return_inverse=True)  # roots are each group's first shape: order kept
    return groups.astype(np.int64)


def duplicate_counts(
    points: np.ndarray, threshold: float = DUPLICATE_IOU, resolution: int = GRID_RESOLUTION
) -> np.ndarray:
    """How many shapes, itself included, each shape is near-identical to (occupancy IoU >=
    ``threshold``): its direct neighbours, unlike :func:`duplicate_groups`, whose chains of
    pairwise matches can join hundreds of shapes of one class into a group.

    Shapes:
        points ``(M, N, C)`` (xyz first) -> int64 ``(M,)``, every entry >= 1.
    """
    counts = np.zeros(len(points), dtype=np.int64)
    for i, j in _near_identical_pairs(occupancy_grids(points, resolution), threshold):
        counts[i] += 1
        if i != j:
            counts[j] += 1
    return counts


def groups_cache_file(xyz: np.ndarray, namespace: str, label: str, root: PathLike,
                      threshold: float = DUPLICATE_IOU, resolution: int = GRID_RESOLUTION,
                      cache_dir: Optional[PathLike] = None) -> Path:
    """Where :func:`cached_duplicate_groups` keeps the groups of the float32 ``xyz`` ``(M, N, 3)``:
    the key holds the options and a digest of the clouds themselves."""
    options = {"kind": "duplicate_groups", "threshold": float(threshold), "resolution": int(resolution),
               "shape": list(xyz.shape), "points_sha256": hashlib.sha256(xyz.tobytes()).hexdigest()}
    return cache_file(namespace, f"{label}-groups-{resolution}vox-iou{threshold:g}", Path(root), [],
                      options, cache_dir)


def cached_duplicate_groups(
    points: np.ndarray,
    namespace: str,
    label: str,
    root: PathLike,
    threshold: float = DUPLICATE_IOU,
    resolution: int = GRID_RESOLUTION,
    cache_dir: Optional[PathLike] = None,
) -> np.ndarray:
    """:func:`duplicate_groups`, computed once and cached through :mod:`pointea.data.cache`.

    The key holds the options and a digest of the clouds themselves, so any change of the data
    (or of how it was read) gives new groups.

    Args:
        points: ``(M, N, C)`` clouds.
        namespace, label, root: as in :func:`pointea.data.cache.cache_file` (the dataset's cache
            folder, a readable name of the split, the data folder).
        threshold, resolution: as in :func:`duplicate_groups`.
        cache_dir: cache folder (default :func:`pointea.data.cache.default_cache_dir`).
    """
    xyz = np.ascontiguousarray(points[..., :3], dtype=np.float32)
    path = groups_cache_file(xyz, namespace, label, root, threshold, resolution, cache_dir)

    def build() -> dict:
        logger.info("grouping %d shapes by occupancy IoU >= %g (cached afterwards)", len(xyz), threshold)
        return {"groups": duplicate_groups(xyz, threshold, resolution)}

    groups = load_or_build(path, build, ("groups",))["groups"]
    if groups.shape != (len(xyz),):  # a cache of another split under a colliding key
        raise ValueError(f"{path}: holds {groups.shape} group ids for {len(xyz)} shapes; delete it")
    return groups


def grouped_holdout(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Class-stratified validation mask that never splits a group.

    Each class aims at the count of :func:`pointea.data.layout.stratified_holdout`
    (``round(fraction * n)``, at least one, at most ``n - 1``). Groups are visited in an order
    drawn from ``seed`` and taken whole while no class of theirs exceeds its count, so a class
    may fall short only when its remaining groups are too large; it keeps a training shape.

    Args:
        labels: ``(M,)`` class index of every shape.
        groups: ``(M,)`` group id of every shape (e.g. :func:`duplicate_groups`).
        fraction: share of each class held out, in ``[0, 1)``.
        seed: selection seed.

    Returns:
        bool ``(M,)``, True for validation shapes.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    if labels.shape != groups.shape:
        raise ValueError(f"labels {labels.shape} and groups {groups.shape} differ in shape")
    mask = np.zeros(len(labels), dtype=bool)
    if fraction <= 0 or len(labels) == 0:
        return mask
    classes, class_of = np.unique(labels, return_inverse=True)
    sizes = np.bincount(class_of, minlength=len(classes))
    targets = np.array([min(max(math.floor(fraction * n + 0.5), 1), n - 1) for n in sizes])
    taken = np.zeros(len(classes), dtype=np.int64)
    group_ids, group_of = np.unique(groups, return_inverse=True)
    members = np.argsort(group_of, kind="stable")  # shapes sorted by group
    bounds = np.searchsorted(group_of[members], np.arange(len(group_ids) + 1))
    for g in np.random.default_rng([seed]).permutation(len(group_ids)):
        shapes = members[bounds[g]:bounds[g + 1]]
        need = np.bincount(class_of[shapes], minlength=len(classes))
        if np.all(taken + need <= targets):
            taken += need
            mask[shapes] = True
    short = [int(classes[c]) for c in np.flatnonzero(taken < targets)]
    if short:
        logger.info("grouped holdout: classes %s get fewer validation shapes than asked (their "
                    "groups are too large)", short)
    return mask
