"""ModelNet-C corruptions: seven ways real scans go wrong, each at five severity levels.

Definitions and parameters follow ModelNet-C (Ren, Pan and Liu, "Benchmarking and Analyzing
Point Cloud Classification under Corruptions", ICML 2022). The official generator is
``build_modelnetc/corrupt.py`` of github.com/jiawei-ren/ModelNet-C, which imports the seven
functions from a ``corrupt_utils`` module; that file was read here in the authors' follow-up,
github.com/ldkong1205/PointCloud-C (``build/corrupt.py`` + ``build/corrupt_utils.py``, which
writes the same ``modelnet_c/<name>_<level>.h5`` files from the first 1,024 points of the
ModelNet40 HDF5 test clouds), and matches the copy ModelNet-C ships for OO3D-C
(``build_oo3d/corrupt.py``). pointea re-implements the definitions; it does not reuse that code.

With ``level`` in 0..4 and a cloud of N points (1,024 in the benchmark):

========================  ==================================================  =================
name                      definition (reference parameters)                   output points
========================  ==================================================  =================
``scale``                 per-axis factors U(1/s, s), s = 1.6, 1.7, 1.8,      N
                          1.9, 2.0; then re-centred and scaled to the unit
                          sphere (the reference renormalizes)
``jitter``                Gaussian noise, sigma = 0.01 (level + 1), no clip   N
``rotate``                angles U(-a, a) about x, y and z, a = (pi/6)(level  N
                          + 1)/5 (6 to 30 degrees); points @ Rz Ry Rx
``dropout_global``        keep a random int(N (1 - r)), r = 0.25, 0.375,      768, 640, 512,
                          0.5, 0.625, 0.75                                    384, 256
``dropout_local``         drop 100 (level + 1) points in 1..7 clusters (each  924, 824, 724,
                          point of the total assigned to a cluster uniformly  624, 524
                          at random); a cluster is the K nearest points of a
                          random remaining point
``add_global``            add 10 (level + 1) points uniform in the unit ball  1034 .. 1074
``add_local``             add 100 (level + 1) points in 1..7 clusters; a      1124 .. 1524
                          cluster is Gaussian around a distinct random point
                          of the cloud, sigma U(0.075, 0.125); an added point
                          p with |p|^2 > 1 becomes p / |p|^2 (inside the unit
                          ball; the reference divides by the squared norm)
========================  ==================================================  =================

The counts of ``dropout_local``, ``add_global`` and ``add_local`` are the reference's for
N = 1,024; another N scales them by N / 1024 (rounded), so a level removes or adds the same
fraction of the cloud. The reference applies the corruptions to clouds already centred and
scaled to the unit sphere and does not renormalize afterwards (except ``scale``); pointea's
robustness evaluation does the same.

Randomness: every function draws only from the ``numpy.random.Generator`` it is given, so a
corrupted cloud depends on nothing but its inputs. :func:`corrupt_cloud` seeds that generator
from ``(seed, corruption name, level)``, so a cloud's corruption does not depend on which
others were corrupted before it. The distributions are the reference's; the draws are not (the
reference draws from one global NumPy stream seeded once), so these clouds are not the official
ModelNet-C files, and accuracies on them are not comparable digit for digit with published ones.

Variable point counts: all clouds of a dataset corrupted with one setting have the same size, so
a batch needs no padding; pointea's models take any number of points, and the benchmark, too,
feeds the corrupted clouds as they are. They are not resampled back to N: that would repeat
points of a dropped cloud and thin out the added clusters, changing the corruption.
"""

from __future__ import annotations

import difflib
import zlib
from typing import Callable, Dict, Sequence, Union

import numpy as np

REFERENCE_POINTS = 1024  # cloud size the reference's point counts are defined for
LEVELS = 5
SCALE_LIMITS = (1.6, 1.7, 1.8, 1.9, 2.0)
JITTER_SIGMA = 0.01  # per level
ROTATE_LIMIT = np.pi / 6  # radians, reached at the top level
DROPOUT_RATES = (0.25, 0.375, 0.5, 0.625, 0.75)
DROPOUT_LOCAL_POINTS = 100  # per level, for 1,024 points
ADD_GLOBAL_POINTS = 10  # per level, for 1,024 points
ADD_LOCAL_POINTS = 100  # per level, for 1,024 points
ADD_LOCAL_SIGMA = (0.075, 0.125)
MAX_CLUSTERS = 7

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def _check(points: np.ndarray, level: int) -> np.ndarray:
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] < 1:
        raise ValueError(f"expected a cloud of shape (N, 3) with N >= 1, got {points.shape}")
    if not 0 <= int(level) < LEVELS:
        raise ValueError(f"level must be 0..{LEVELS - 1}, got {level}")
    return points.astype(np.float64, copy=False)


def _scaled_count(per_level: int, level: int, num_points: int) -> int:
    """The reference's point count for ``level``, scaled from 1,024 points to ``num_points``."""
    return int(round(per_level * (level + 1) * num_points / REFERENCE_POINTS))


def _cluster_sizes(total: int, rng: np.random.Generator) -> np.ndarray:
    """1..7 clusters sharing ``total`` points, each point assigned to one uniformly at random."""
    num_clusters = int(rng.integers(1, MAX_CLUSTERS + 1))
    return rng.multinomial(total, np.full(num_clusters, 1.0 / num_clusters))


def _normalize_unit_sphere(points: np.ndarray) -> np.ndarray:
    centred = points - points.mean(axis=0)
    return centred / max(float(np.linalg.norm(centred, axis=1).max()), 1e-12)


def corrupt_scale(points: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    """Scale each axis by its own factor in U(1/s, s), then renormalize to the unit sphere.

    Shapes: (N, 3) -> (N, 3)
    """
    points = _check(points, level)
    limit = SCALE_LIMITS[level]
    factors = rng.uniform(1.0 / limit, limit, size=3)
    return _normalize_unit_sphere(points * factors).astype(np.float32)


def corrupt_jitter(points: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian noise of standard deviation 0.01 (level + 1) to every coordinate.

    Shapes: (N, 3) -> (N, 3)
    """
    points = _check(points, level)
    sigma = JITTER_SIGMA * (level + 1)
    return (points + sigma * rng.standard_normal(points.shape)).astype(np.float32)


def rotation_matrix(angles: Sequence[float]) -> np.ndarray:
    """``Rz @ Ry @ Rx`` for angles (x, y, z) in radians; clouds are rotated as ``points @ R``."""
    x, y, z = angles
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


def corrupt_rotate(points: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    """Rotate by random angles about x, y and z, each within (pi/6)(level + 1)/5.

    Shapes: (N, 3) -> (N, 3)
    """
    points = _check(points, level)
    limit = ROTATE_LIMIT * (level + 1) / LEVELS
    return (points @ rotation_matrix(rng.uniform(-limit, limit, size=3))).astype(np.float32)


def corrupt_dropout_global(points: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    """Keep a random int(N (1 - r)) of the points, r = 0.25 .. 0.75 (at least one).

    Shapes: (N, 3) -> (int(N (1 - r)), 3)
    """
    points = _check(points, level)
    keep = max(1, int(points.shape[0] * (1.0 - DROPOUT_RATES[level])))
    return points[rng.permutation(points.shape[0])[:keep]].astype(np.float32)


def corrupt_dropout_local(points: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    """Remove 100 (level + 1) points (for N = 1,024) as 1..7 clusters of nearest neighbours.

    Each cluster of K points is the K points nearest a random point still in the cloud, that
    point included; clusters are removed one after another. At least one point is kept.

    Shapes: (N, 3) -> (N - round(100 (level + 1) N / 1024), 3)
    """
    points = _check(points, level)
    total = min(_scaled_count(DROPOUT_LOCAL_POINTS, level, len(points)), len(points) - 1)
    remaining = points
    for size in _cluster_sizes(total, rng):
        if size == 0:
            continue
        centre = remaining[rng.integers(len(remaining))]
        distance = np.sum((remaining - centre) ** 2, axis=1)
        nearest = np.argpartition(distance, size - 1)[:size]
        remaining = np.delete(remaining, nearest, axis=0)
    return remaining.astype(np.float32)


def sample_unit_ball(count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` points uniform in the unit ball (radius U^(1/3), uniform direction).

    Shapes: -> (count, 3)
    """
    radius = np.cbrt(rng.uniform(0.0, 1.0, size=(count, 1)))
    cos_theta = rng.uniform(-1.0, 1.0, size=(count, 1))
    sin_theta = np.sqrt(1.0 - cos_theta ** 2)
    phi = rng.uniform(0.0, 2 * np.pi, size=(count, 1))
    return radius * np.concatenate([sin_theta * np.cos(phi), sin_theta * np.sin(phi), cos_theta], axis=1)


def corrupt_add_global(points: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    """Append 10 (level + 1) points (for N = 1,024) uniform in the unit ball.

    Shapes: (N, 3) -> (N + round(10 (level + 1) N / 1024), 3)
    """
    points = _check(points, level)
    added = sample_unit_ball(_scaled_count(ADD_GLOBAL_POINTS, level, len(points)), rng)
    return np.concatenate([points, added]).astype(np.float32)


def corrupt_add_local(points: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    """Append 100 (level + 1) points (for N = 1,024) as 1..7 Gaussian clusters on the surface.

    Each cluster is centred on a distinct random point of the cloud with sigma U(0.075, 0.125);
    an added point p with |p|^2 > 1 is replaced by p / |p|^2, as in the reference, which keeps
    every added point inside the unit ball.

    Shapes: (N, 3) -> (N + round(100 (level + 1) N / 1024), 3)
    """
    points = _check(points, level)
    sizes = _cluster_sizes(_scaled_count(ADD_LOCAL_POINTS, level, len(points)), rng)
    # the reference centres its clusters on the first points of a shuffled cloud: distinct points
    centres = points[rng.choice(len(points), size=len(sizes), replace=len(sizes) > len(points))]
    clusters = []
    for centre, size in zip(centres, sizes):
        sigma = rng.uniform(*ADD_LOCAL_SIGMA)
        clusters.append(centre + sigma * rng.standard_normal((size, 3)))
    added = np.concatenate(clusters)
    squared = np.sum(added ** 2, axis=1, keepdims=True)
    added = np.where(squared > 1.0, added / np.maximum(squared, 1.0), added)
    return np.concatenate([points, added]).astype(np.float32)


# name -> function, in the benchmark's order
CORRUPTIONS: Dict[str, Corruption] = {
    "scale": corrupt_scale,
    "jitter": corrupt_jitter,
    "rotate": corrupt_rotate,
    "dropout_global": corrupt_dropout_global,
    "dropout_local": corrupt_dropout_local,
    "add_global": corrupt_add_global,
    "add_local": corrupt_add_local,
}


def check_corruption(name: str) -> str:
    """``name`` if it is a corruption, else a ValueError listing them (with a close match)."""
    if name not in CORRUPTIONS:
        close = difflib.get_close_matches(name, CORRUPTIONS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown corruption {name!r}{hint}; valid: {', '.join(CORRUPTIONS)}")
    return name


def check_level(level: int) -> int:
    """``level`` if it is a severity level 0..4, else a ValueError."""
    if isinstance(level, bool) or int(level) != level or not 0 <= level < LEVELS:
        raise ValueError(f"severity level must be an integer 0..{LEVELS - 1}, got {level!r}")
    return int(level)


def corruption_rng(name: str, level: int, seed: Union[int, Sequence[int]] = 0) -> np.random.Generator:
    """The generator of corruption ``name`` at ``level`` for ``seed`` (an int or a sequence of
    non-negative ints, e.g. ``(seed, cloud_index)``): the same arguments give the same stream."""
    seeds = [int(seed)] if np.isscalar(seed) else [int(s) for s in seed]
    if any(s < 0 for s in seeds):
        raise ValueError(f"seeds must be non-negative, got {seed!r}")
    # crc32, not hash(): str hashes change from one Python process to the next
    return np.random.default_rng([*seeds, zlib.crc32(name.encode()), level])


def corrupt_cloud(points: np.ndarray, name: str, level: int, seed: Union[int, Sequence[int]] = 0) -> np.ndarray:
    """Corrupt one cloud deterministically: the same arguments always give the same output.

    Args:
        points: (N, 3) xyz, centred and scaled to the unit sphere as in the benchmark.
        name: one of :data:`CORRUPTIONS`.
        level: severity 0..4.
        seed: int or sequence of ints, e.g. ``(seed, cloud_index)`` to give every cloud of a
            dataset its own draw.

    Returns:
        (M, 3) float32; M per corruption in the module docstring.
    """
    check_corruption(name)
    level = check_level(level)
    return CORRUPTIONS[name](points, level, corruption_rng(name, level, seed))
