"""Predict on a user's own point cloud files with a trained checkpoint.

Each cloud is normalized to the unit sphere and resampled to the checkpoint's point count (a
fixed seed, so the same file always gives the same answer; external attention normalizes over
the points, so clouds are evaluated at the N the model was trained with). Classification returns
the top-k classes; part segmentation predicts the parts of a given category at the sampled points
and carries them to every original point by nearest neighbour.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
LoadedModel = Tuple[nn.Module, Dict[str, Any]]

NEIGHBOR_CHUNK = 8192  # original points per nearest-neighbour distance block


def find_point_files(paths: Iterable[PathLike]) -> List[Path]:
    """Expand files and folders (recursively, sorted) into the files ``read_point_cloud`` reads.

    Paths that do not exist and folders without readable files are returned as given, so that
    reading them reports the problem for that entry.
    """
    from pointea.data.io import SUPPORTED_SUFFIXES

    files: List[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
            files.extend(found or [path])
        else:
            files.append(path)
    return files


def sample_indices(num_available: int, num_points: int, seed: int = 0) -> np.ndarray:
    """Deterministic choice of ``num_points`` indices: without replacement when there are enough
    points, else every point once plus random repeats."""
    rng = np.random.default_rng(seed)
    if num_available >= num_points:
        return np.sort(rng.choice(num_available, num_points, replace=False))
    extra = rng.choice(num_available, num_points - num_available, replace=True)
    return np.concatenate([np.arange(num_available), extra])


def nearest_neighbors(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Index of the nearest reference point for each query point (chunked to bound memory).

    Shapes:
        queries (M, 3), references (K, 3) -> (M,) int64
    """
    return torch.cat([torch.cdist(chunk, references).argmin(dim=1) for chunk in queries.split(NEIGHBOR_CHUNK)])


def predict_points(
    points: np.ndarray,
    model: nn.Module,
    meta: Dict[str, Any],
    topk: int = 5,
    category: Optional[str] = None,
    num_points: Optional[int] = None,
    seed: int = 0,
) -> Dict[str, Any]:
    """Predict on one cloud with a loaded model (see :func:`pointea.engine.checkpoint.load_model`).

    Args:
        points: (N, 3) or (N, 6) array, any scale and position.
        model: the model, in eval mode.
        meta: checkpoint metadata (``classes`` or ``categories``, ``part_names``, ``num_points``).
        topk: classes to report (classification).
        category: object category name (segmentation; case-insensitive).
        num_points: points fed to the model (default: the checkpoint's; a checkpoint trained on
            whole clouds sees the whole cloud).
        seed: seed of the resampling.

    Returns:
        Classification: ``{"num_points", "predictions": [{"class", "index", "probability"}, ...]}``
        best first. Segmentation: ``{"num_points", "category", "labels" (N,) int64 global part ids
        of every input point, "part_counts" {part name: count}}``.
    """
    from pointea.data.transforms import NormalizeUnitSphere

    config = model.config
    device = next(model.parameters()).device
    in_channels = config.in_channels
    if points.shape[1] < in_channels:
        raise ValueError(
            f"the model needs {in_channels} channels (x y z nx ny nz) but the cloud has {points.shape[1]}"
        )
    num_points = num_points or meta.get("num_points")  # None: trained on whole clouds, keep them
    values = np.array(points[:, :in_channels], dtype=np.float64)  # a copy: centred in float64, so
    values[:, :3] -= values[:, :3].mean(axis=0)  # clouds far from the origin keep their detail
    cloud = torch.from_numpy(values.astype(np.float32))
    cloud = NormalizeUnitSphere()({"points": cloud})["points"]  # (N, C)
    whole = num_points is None
    sampled = cloud if whole else cloud[torch.from_numpy(sample_indices(len(cloud), num_points, seed))]
    batch = sampled.unsqueeze(0).to(device)  # (1, num_points, C)

    with torch.inference_mode():
        if config.task == "classification":
            probabilities = model(batch).float().softmax(dim=-1)[0].cpu()  # (K,)
            names = meta.get("classes") or [str(i) for i in range(len(probabilities))]
            values, indices = probabilities.topk(min(topk, len(probabilities)))
            predictions = [
                {"class": names[i], "index": i, "probability": round(v, 6)}
                for v, i in zip(values.tolist(), indices.tolist())
            ]
            return {"num_points": len(points), "predictions": predictions}

        category_index = resolve_category(category, meta, config)
        category_tensor = torch.tensor([category_index], device=device)
        logits = model(batch, category_tensor)  # (1, num_points, P)
        restricted = model.restrict_to_category(logits, category_tensor)
        sampled_labels = restricted.argmax(dim=-1)[0].cpu()  # (num_points,)
    if not whole:  # carry the labels to every original point
        sampled_labels = sampled_labels[nearest_neighbors(cloud[:, :3], sampled[:, :3])]  # (N,)
    labels = sampled_labels.numpy().astype(np.int64)
    part_names = meta.get("part_names") or [str(i) for i in range(config.num_parts)]
    ids, counts = np.unique(labels, return_counts=True)
    return {
        "num_points": len(points),
        "category": _category_names(meta, config)[category_index],
        "labels": labels,
        "part_counts": {part_names[i]: int(c) for i, c in zip(ids, counts)},
    }


def resolve_category(category: Optional[str], meta: Dict[str, Any], config) -> int:
    """Index of a category name (case-insensitive); ValueError listing the names otherwise."""
    names = _category_names(meta, config)
    if category is None:
        raise ValueError(f"part segmentation needs the object category; choose one of: {', '.join(names)}")
    lowered = [name.lower() for name in names]
    if category.lower() not in lowered:
        raise ValueError(f"unknown category {category!r}; choose one of: {', '.join(names)}")
    return lowered.index(category.lower())


def predict_files(
    paths: Iterable[PathLike],
    checkpoint: Union[PathLike, LoadedModel],
    topk: int = 5,
    device: Union[str, torch.device] = "cpu",
    num_points: Optional[int] = None,
    category: Optional[str] = None,
    out_dir: Optional[PathLike] = None,
) -> List[Dict[str, Any]]:
    """Predict on point cloud files and folders.

    Args:
        paths: files or folders (searched recursively for every format ``read_point_cloud`` reads).
        checkpoint: checkpoint path, or a ``(model, meta)`` pair from ``load_model``.
        topk: classes to report (classification).
        device: where the model runs when it is loaded from a path (a loaded model stays put).
        num_points: points fed to the model (default: the checkpoint's).
        category: object category (part segmentation only; required there).
        out_dir: segmentation: folder for a coloured ``<name>.parts.ply`` per input (with a
            ``label`` property); nothing is written when None.

    Returns:
        One dict per file with ``"file"`` and either the fields of :func:`predict_points` (plus
        ``"output"`` when a PLY was written) or ``"error"``: a file that cannot be read or
        predicted is reported and the others are still processed.

    Raises:
        ValueError: bad checkpoint, or a missing / unknown category for a segmentation model.
    """
    from pointea.data.io import read_point_cloud, write_point_cloud
    from pointea.engine.checkpoint import load_model
    from pointea.palette import part_colors

    model, meta = checkpoint if isinstance(checkpoint, tuple) else load_model(checkpoint, device=device)
    if model.config.task == "segmentation":
        resolve_category(category, meta, model.config)  # fail before reading any file
    elif category is not None:
        raise ValueError("category applies to part segmentation checkpoints only; this one is a classifier")

    results: List[Dict[str, Any]] = []
    written: set = set()
    for path in find_point_files(paths):
        try:
            if path.is_dir():
                raise ValueError(f"{path}: folder holds no point cloud files")
            points = read_point_cloud(path, dtype=np.float64)
            result = {"file": str(path), **predict_points(points, model, meta, topk, category, num_points)}
            if "labels" in result and out_dir is not None:
                output = _unique_output(Path(out_dir), path, written)
                write_point_cloud(output, points, colors=part_colors(result["labels"]), labels=result["labels"])
                result["output"] = str(output)
        except (OSError, ValueError) as error:
            message = str(error) if str(path) in str(error) else f"{path}: {error}"
            logger.info("cannot predict %s", message)  # returned to the caller, who reports it
            result = {"file": str(path), "error": message}
        results.append(result)
    return results


def _category_names(meta: Dict[str, Any], config) -> List[str]:
    names = meta.get("categories") or meta.get("classes")
    return list(names) if names else [str(i) for i in range(len(config.category_parts))]


def _unique_output(out_dir: Path, source: Path, written: set) -> Path:
    candidate, number = out_dir / f"{source.stem}.parts.ply", 1
    while candidate in written:
        candidate, number = out_dir / f"{source.stem}-{number}.parts.ply", number + 1
    written.add(candidate)
    return candidate
