"""Predict on a user's own point cloud files with a trained checkpoint.

Each cloud is normalized to the unit sphere and resampled to the checkpoint's point count (a
fixed seed, so the same file always gives the same answer; external attention normalizes over
the points, so clouds are evaluated at the N the model was trained with). Classification returns
the top-k classes; part segmentation predicts the parts of a given category at the sampled points
and carries them to every original point by nearest neighbour.

:func:`predict_files` reads files in a small thread pool (in order) and runs the model on batches
of clouds; every cloud is prepared exactly as :func:`predict_points` prepares it alone, so the
answers do not depend on the batch size.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sys
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from pointea.engine.loop import preprocessing
from pointea.engine.tasks import task_for

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
LoadedModel = Tuple[nn.Module, Dict[str, Any]]
ReadResult = Tuple[Path, Optional[np.ndarray], Optional[str], List[str]]  # path, points or error, warnings

NEIGHBOR_CHUNK = 8192  # original points per nearest-neighbour distance block
DEFAULT_BATCH_SIZE = 32  # clouds per forward pass of predict_files
READ_WORKERS = 4  # file reading threads (parsing and disk waits overlap the model's work)
READ_AHEAD = 16  # files read ahead of the model at most (bounds the memory held by clouds)
# A cloud is degenerate when it has fewer than MIN_DISTINCT_POINTS distinct positions, positions
# that differ by at most DEGENERATE_TOLERANCE (file units) in every coordinate counting as one:
# a single point, or all points identical, has no shape to classify.
MIN_DISTINCT_POINTS = 3
DEGENERATE_TOLERANCE = 1e-9


def find_point_files(paths: Iterable[PathLike]) -> List[Path]:
    """Expand files and folders (recursively, sorted) into the files ``read_point_cloud`` reads.

    Paths that do not exist, folders without readable files, and broken or looping symbolic
    links inside folders are returned as given, so that reading them reports the problem for that
    entry.
    """
    from pointea.data.io import SUPPORTED_SUFFIXES

    def wanted(p: Path) -> bool:
        # a link whose target is missing or loops is neither a file nor existing: keep it, so that
        # reading it fails loudly instead of the folder silently losing a cloud
        broken_link = p.is_symlink() and not p.exists()
        return (p.is_file() or broken_link) and p.suffix.lower() in SUPPORTED_SUFFIXES

    files: List[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if wanted(p))
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


def degenerate_warning(points: np.ndarray) -> Optional[str]:
    """Why a cloud has no shape to predict on, or None.

    Degenerate means fewer than :data:`MIN_DISTINCT_POINTS` distinct xyz positions, where points
    within :data:`DEGENERATE_TOLERANCE` of each other in every coordinate count as one (e.g. a
    single point, or every point identical). The model still answers, often confidently, but the
    answer says nothing about the cloud.
    """
    remaining = np.asarray(points)[:, :3]
    distinct = 0
    while len(remaining) and distinct < MIN_DISTINCT_POINTS:  # at most 3 passes over the cloud
        distinct += 1
        remaining = remaining[np.abs(remaining - remaining[0]).max(axis=1) > DEGENERATE_TOLERANCE]
    if distinct >= MIN_DISTINCT_POINTS:
        return None
    count = len(points)
    if distinct <= 1:
        what = "a single point" if count == 1 else f"all {count} points coincide (within {DEGENERATE_TOLERANCE:g})"
    else:
        what = f"only {distinct} distinct positions among {count} points"
    return f"degenerate cloud: {what}; the prediction says nothing about its shape"


class PreparedCloud(NamedTuple):
    """A cloud ready for the model: normalized, and resampled to the model's point count."""

    cloud: torch.Tensor  # (N, C) every input point, centred and scaled into the unit sphere
    sampled: torch.Tensor  # (num_points, C) the points fed to the model (``cloud`` itself if whole)
    num_points: int  # points in the input
    warning: Optional[str]  # see degenerate_warning


def prepare_cloud(points: np.ndarray, in_channels: int, num_points: Optional[int], seed: int = 0) -> PreparedCloud:
    """Centre (in float64), scale into the unit sphere and resample one cloud.

    Args:
        points: (N, C) array with C >= ``in_channels``, any scale and position.
        in_channels: channels the model takes (3: xyz, 6: xyz + normals).
        num_points: points fed to the model; None keeps the whole cloud.
        seed: seed of the resampling.
    """
    if points.ndim != 2 or points.shape[1] < in_channels:
        raise ValueError(
            f"the model needs {in_channels} channels (x y z nx ny nz) but the cloud has "
            f"{points.shape[1] if points.ndim == 2 else points.shape}"
        )
    values = np.array(points[:, :in_channels], dtype=np.float64)  # a copy: centred in float64, so
    values[:, :3] -= values[:, :3].mean(axis=0)  # clouds far from the origin keep their detail
    cloud = torch.from_numpy(values.astype(np.float32))
    cloud = preprocessing()({"points": cloud})["points"]  # (N, C), as training and evaluation see clouds
    sampled = cloud if num_points is None else cloud[torch.from_numpy(sample_indices(len(cloud), num_points, seed))]
    return PreparedCloud(cloud, sampled, len(points), degenerate_warning(values))


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
        of every input point, "part_counts" {part name: count}}``, plus ``"label_counts"`` {label
        value: count} when the training files labelled parts by other values than the ids
        (:func:`parts_to_values`). Both: ``"warning"`` when the cloud is degenerate (see
        :func:`degenerate_warning`).
    """
    category_index = resolve_category(category, meta, model.config) if task_for(model).uses_category else None
    prepared = prepare_cloud(points, model.config.in_channels, num_points or meta.get("num_points"), seed)
    result = predict_prepared([prepared], model, meta, topk, category_index)[0]
    if prepared.warning:
        result["warning"] = prepared.warning
    return result


def predict_prepared(
    clouds: Sequence[PreparedCloud],
    model: nn.Module,
    meta: Dict[str, Any],
    topk: int = 5,
    category_index: Optional[int] = None,
) -> List[Dict[str, Any]]:
    """One forward pass over clouds whose ``sampled`` tensors share a shape; results as
    :func:`predict_points` (without the warning)."""
    config, task = model.config, task_for(model)
    device = next(model.parameters()).device
    batch = {"points": torch.stack([c.sampled for c in clouds]).to(device)}  # (B, num_points, C)
    B = len(clouds)
    with torch.inference_mode():
        if not task.uses_category:
            probabilities = task.forward(model, batch).float().softmax(dim=-1).cpu()  # (B, K)
            names = meta.get("classes") or [str(i) for i in range(probabilities.shape[1])]
            values, indices = probabilities.topk(min(topk, probabilities.shape[1]), dim=1)  # (B, k)
            return [
                {"num_points": c.num_points, "predictions": [
                    {"class": names[i], "index": i, "probability": round(v, 6)}
                    for v, i in zip(values[b].tolist(), indices[b].tolist())
                ]}
                for b, c in enumerate(clouds)
            ]
        category_tensor = torch.full((B,), category_index, device=device, dtype=torch.long)
        logits = task.forward(model, {**batch, "category": category_tensor})  # (B, num_points, P)
        sampled_labels = model.restrict_to_category(logits, category_tensor).argmax(dim=-1).cpu()  # (B, num_points)
    part_names = meta.get("part_names") or [str(i) for i in range(config.num_parts)]
    category_name = _category_names(meta, config)[category_index]
    values = part_values(meta)
    results = []
    for c, labels in zip(clouds, sampled_labels):
        if c.sampled is not c.cloud:  # carry the labels to every original point
            labels = labels[nearest_neighbors(c.cloud[:, :3], c.sampled[:, :3])]  # (N,)
        labels = labels.numpy().astype(np.int64)
        ids, counts = np.unique(labels, return_counts=True)
        result = {
            "num_points": c.num_points,
            "category": category_name,
            "labels": labels,
            "part_counts": {part_names[i]: int(n) for i, n in zip(ids, counts)},
        }
        if values is not None:  # the same counts by the label values a .parts.ply holds
            result["label_counts"] = {int(values[i]): int(n) for i, n in zip(ids, counts)}
        results.append(result)
    return results


def part_values(meta: Dict[str, Any]) -> Optional[np.ndarray]:
    """The label value each part id stands for in the training files (``meta["part_values"]``,
    e.g. LAS classes ``[2, 5, 6]``), or None when the files labelled parts by their ids."""
    values = meta.get("part_values")
    if values is None:
        return None
    values = np.asarray(values, dtype=np.int64)
    names = meta.get("part_names")
    if values.ndim != 1 or len(np.unique(values)) != len(values) or (names is not None and len(values) != len(names)):
        raise ValueError("checkpoint metadata: part_values must hold distinct integers, one per part; "
                         f"got {values.tolist()}")
    return values


def parts_to_values(parts: np.ndarray, meta: Dict[str, Any]) -> np.ndarray:
    """Part ids (N,) -> the label values the training files used for them (ids when the
    checkpoint records none)."""
    values = part_values(meta)
    parts = np.asarray(parts, dtype=np.int64)
    return parts if values is None else values[parts]


def values_to_parts(labels: np.ndarray, meta: Dict[str, Any]) -> Tuple[np.ndarray, List[int]]:
    """File labels (N,) -> part ids, the inverse of :func:`parts_to_values`.

    Returns:
        ``(parts, unknown)``: part ids, -1 (no part) where a label is none of the checkpoint's
        values; and those unknown values, sorted.
    """
    values = part_values(meta)
    labels = np.asarray(labels, dtype=np.int64)
    if values is None:
        return labels, []
    order = np.argsort(values)
    position = np.clip(np.searchsorted(values[order], labels), 0, len(values) - 1)
    known = values[order][position] == labels
    parts = np.where(known, order[position], -1)
    return parts, sorted(int(v) for v in np.unique(labels[~known]))


def resolve_category(category: Optional[str], meta: Dict[str, Any], config) -> int:
    """Index of a category name (case-insensitive); ValueError listing the names otherwise.
    A model of one category (a folder of one kind of object) needs no name."""
    names = _category_names(meta, config)
    if category is None and len(names) == 1:
        return 0
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
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Optional[bool] = None,
) -> List[Dict[str, Any]]:
    """Predict on point cloud files and folders, in batches.

    Args:
        paths: files or folders (searched recursively for every format ``read_point_cloud`` reads).
        checkpoint: checkpoint path, or a ``(model, meta)`` pair from ``load_model``.
        topk: classes to report (classification).
        device: where the model runs when it is loaded from a path (a loaded model stays put).
        num_points: points fed to the model (default: the checkpoint's).
        category: object category (part segmentation only; required there).
        out_dir: segmentation: folder for a coloured ``<name>.parts.ply`` per input (with a
            ``label`` property holding the training files' label values, see
            :func:`parts_to_values`); nothing is written when None.
        batch_size: clouds per forward pass (the results do not depend on it; a checkpoint trained
            on whole clouds batches only clouds of equal size).
        progress: progress bar on stderr; None draws one when stderr is a terminal and the files
            fill more than one batch.

    Returns:
        One dict per file, in order, with ``"file"`` and either the fields of
        :func:`predict_points` (plus ``"output"`` when a PLY was written) or ``"error"``: a file
        that cannot be read or predicted is reported and the others are still processed.
        ``"warning"`` holds what was logged while reading the file and the degenerate-cloud
        warning, joined by "; " (those log records carry ``pointea_file_warning = True``, so a
        caller printing the warning with the result can filter them out of its log).

    Raises:
        ValueError: bad checkpoint or batch size, or a missing / unknown category for a
            segmentation model.
    """
    from pointea.engine.checkpoint import load_model

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model, meta = checkpoint if isinstance(checkpoint, tuple) else load_model(checkpoint, device=device)
    category_index = None
    if task_for(model).uses_category:
        category_index = resolve_category(category, meta, model.config)  # fail before reading any file
    elif category is not None:
        raise ValueError("category applies to part segmentation checkpoints only; this one is a classifier")
    num_points = num_points or meta.get("num_points")  # None: trained on whole clouds, keep them

    files = find_point_files(paths)
    results: List[Dict[str, Any]] = [{} for _ in files]
    pending: List[Tuple[int, np.ndarray, PreparedCloud]] = []
    written: set = set()
    show = progress if progress is not None else sys.stderr.isatty() and len(files) > batch_size
    bar = _progress_bar(len(files)) if show else None

    def flush() -> None:
        outputs = predict_prepared([p for _, _, p in pending], model, meta, topk, category_index)
        for (index, points, _), output in zip(pending, outputs):
            result = results[index]
            path = Path(result["file"])
            try:
                if "labels" in output and out_dir is not None:
                    output["output"] = str(_write_parts(Path(out_dir), path, points, output["labels"], meta, written))
            except (OSError, ValueError) as error:
                output = {"error": _error_message(path, error)}
            warning = result.pop("warning", None)
            result.update(output)
            if warning:
                result["warning"] = warning
        pending.clear()

    capture = _FileWarnings()
    logging.getLogger("pointea").addHandler(capture)
    try:
        for index, (path, points, error, messages) in enumerate(_read_ahead(files, capture)):
            results[index]["file"] = str(path)
            prepared = None
            if error is None:
                try:
                    prepared = prepare_cloud(points, model.config.in_channels, num_points)
                except ValueError as problem:
                    error = _error_message(path, problem)
            if prepared is not None and prepared.warning:
                messages.append(prepared.warning)
            if messages:
                results[index]["warning"] = "; ".join(messages)
            if error is not None:
                logger.info("cannot predict %s", error)  # returned to the caller, who reports it
                results[index]["error"] = error
            else:
                if pending and pending[0][2].sampled.shape != prepared.sampled.shape:
                    flush()  # whole clouds of another size: they cannot share a batch
                pending.append((index, points, prepared))
                if len(pending) >= batch_size:
                    flush()
            if bar is not None:
                bar.update()
        if pending:
            flush()
    finally:
        logging.getLogger("pointea").removeHandler(capture)
        if bar is not None:
            bar.close()
    return results


class _FileWarnings(logging.Handler):
    """Collects the warnings pointea logs while a thread reads one file, to report them with the
    file's result instead of before all results."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        messages = getattr(self._local, "messages", None)
        if messages is not None:
            messages.append(record.getMessage())
            record.pointea_file_warning = True  # reported with the file's result

    @contextlib.contextmanager
    def collect(self) -> Iterator[List[str]]:
        self._local.messages = []
        try:
            yield self._local.messages
        finally:
            self._local.messages = None


def _read_ahead(files: Sequence[Path], capture: _FileWarnings) -> Iterator[ReadResult]:
    """``(path, points or None, error or None, warnings)`` per file, in order, read by a thread
    pool a bounded number of files ahead."""

    def read(path: Path) -> ReadResult:
        from pointea.data.io import read_point_cloud

        with capture.collect() as messages:
            try:
                if path.is_dir():
                    raise ValueError(f"{path}: folder holds no point cloud files")
                return path, read_point_cloud(path, dtype=np.float64), None, messages
            except (OSError, ValueError) as error:
                return path, None, _error_message(path, error), messages

    with ThreadPoolExecutor(max_workers=READ_WORKERS, thread_name_prefix="pointea-read") as pool:
        queue = deque(pool.submit(read, path) for path in files[:READ_AHEAD])
        upcoming = iter(files[READ_AHEAD:])
        while queue:
            done = queue.popleft().result()
            for path in itertools.islice(upcoming, 1):
                queue.append(pool.submit(read, path))
            yield done


def _error_message(path: Path, error: Exception) -> str:
    """The error's text, naming the file once."""
    return str(error) if str(path) in str(error) else f"{path}: {error}"


def _progress_bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="file", desc="predict", leave=False, dynamic_ncols=True)


def _write_parts(out_dir: Path, source: Path, points: np.ndarray, parts: np.ndarray, meta: Dict[str, Any],
                 written: set) -> Path:
    """Write the coloured ``.parts.ply``; its ``label`` property holds the label values the
    training files used (colours follow the part ids, as pointea viz draws them)."""
    from pointea.data.io import write_point_cloud
    from pointea.palette import part_colors

    output = _unique_output(out_dir, source, written)
    write_point_cloud(output, points, colors=part_colors(parts), labels=parts_to_values(parts, meta))
    return output


def _category_names(meta: Dict[str, Any], config) -> List[str]:
    names = meta.get("categories") or meta.get("classes")
    return list(names) if names else [str(i) for i in range(len(config.category_parts))]


def _unique_output(out_dir: Path, source: Path, written: set) -> Path:
    candidate, number = out_dir / f"{source.stem}.parts.ply", 1
    while candidate in written:
        candidate, number = out_dir / f"{source.stem}-{number}.parts.ply", number + 1
    written.add(candidate)
    return candidate
