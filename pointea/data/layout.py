"""On-disk layout helpers shared by the dataset readers: layout detection, list and HDF5 files,
argument, point and label checks, and the stratified validation holdout.

Every error names the file and the problem, so a reader built on these reports bad data the same
way whichever dataset it belongs to.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from pointea.data.io import validate_points

logger = logging.getLogger(__name__)


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Deterministic class-stratified validation mask over a training list.

    Each class with ``n >= 2`` shapes gives ``round(fraction * n)`` shapes to validation, at least
    one and at most ``n - 1`` (every class keeps a training shape); a class with a single shape
    stays in training. The choice within a class depends only on ``seed``, the class and the
    order of that class's shapes, so it is reproducible across machines.

    Args:
        labels: ``(M,)`` class index of every shape of the official training list.
        fraction: share of each class held out, in ``[0, 1)``; 0 gives an empty validation set.
        seed: selection seed.

    Returns:
        bool ``(M,)``, True for validation shapes.
    """
    labels = np.asarray(labels)
    mask = np.zeros(len(labels), dtype=bool)
    if fraction <= 0:
        return mask
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        n = len(members)
        if n < 2:
            continue
        count = min(max(math.floor(fraction * n + 0.5), 1), n - 1)
        rng = np.random.default_rng([seed, int(label)])
        mask[rng.permutation(members)[:count]] = True
    return mask


def read_name_list(path: Path, what: str) -> List[str]:
    """Non-empty stripped lines of a list file; FileNotFoundError naming ``what`` when missing."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_hdf5_arrays(path: Path, required: Sequence[str], optional: Sequence[str] = ()) -> Dict[str, np.ndarray]:
    """Read whole datasets from an HDF5 file, with errors that name the file and the problem.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a readable HDF5 file (truncated, corrupt) or a required dataset missing.
    """
    import h5py

    if not path.is_file():
        raise FileNotFoundError(f"HDF5 file not found: {path}")
    try:
        with h5py.File(path, "r") as handle:
            found = sorted(handle.keys())
            datasets = [name for name in found if isinstance(handle[name], h5py.Dataset)]
            missing = [name for name in required if name not in datasets]
            if missing:
                raise ValueError(
                    f"{path}: missing HDF5 dataset {', '.join(repr(m) for m in missing)}; "
                    f"found {', '.join(found) or 'none'}; expected {', '.join(required)}"
                )
            return {name: handle[name][()] for name in (*required, *optional) if name in datasets}
    except OSError as error:
        raise ValueError(f"{path}: cannot read HDF5 file, truncated or not HDF5 ({error})") from None


def check_dataset_arguments(
    split: str, layout: Optional[str], num_points: Optional[int], splits: Sequence[str], layouts: Sequence[str],
    allow_all_points: bool = False,
) -> Optional[int]:
    """Check the ``split``, ``layout`` and ``num_points`` arguments of a dataset class.

    Returns ``num_points`` as a Python int (None stays None where ``allow_all_points``).
    """
    if split not in splits:
        raise ValueError(f"split must be one of {', '.join(splits)}; got {split!r}")
    if layout is not None and layout not in layouts:
        raise ValueError(f"layout must be one of {', '.join(layouts)} or None (auto); got {layout!r}")
    if num_points is None and allow_all_points:
        return None
    if isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer)) or num_points <= 0:
        expected = "a positive int or None" if allow_all_points else "a positive int"
        raise ValueError(f"num_points must be {expected}; got {num_points!r}")
    return int(num_points)


def choose_layout(
    name: str,
    root: Path,
    detect: Callable[[], Dict[str, Path]],
    preference: Sequence[str],
    requested: Optional[str],
    download: bool,
    not_found_message: Callable[[Optional[str]], str],
) -> Tuple[str, Path]:
    """Find the dataset layout to read under ``root``: the requested one, else the first found.

    Downloads the dataset first when nothing is found and ``download`` is set.

    Returns:
        The layout name and its folder.

    Raises:
        FileNotFoundError: no (requested) layout under ``root``, with ``not_found_message``.
    """
    found = detect()
    if not found and download:
        from pointea.data.download import download_dataset

        download_dataset(name.lower(), root)
        found = detect()
    if requested is not None:
        found = {requested: found[requested]} if requested in found else {}
    if not found:
        raise FileNotFoundError(not_found_message(requested))
    layout = next(candidate for candidate in preference if candidate in found)
    if len(found) > 1:
        logger.info("%s: several layouts under %s (%s); using %s (to read another, point the root "
                    "at its folder, e.g. %s, or pass layout= in Python)",
                    name, root, ", ".join(found), layout, next(found[k] for k in found if k != layout))
    return layout, found[layout]


def list_hdf5_files(folder: Path, list_file: Path, split: str) -> List[Path]:
    """The HDF5 files of ``split``: those named in ``list_file`` when it exists (names are taken
    relative to ``folder``), else ``folder/ply_data_<split>*.h5`` in natural order; may be empty.

    Raises:
        FileNotFoundError: a file named in ``list_file`` does not exist.
    """
    if not list_file.is_file():
        return sorted(folder.glob(f"ply_data_{split}*.h5"), key=_natural_key)
    files = [folder / Path(line).name for line in read_name_list(list_file, "HDF5 file list")]
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"HDF5 file {path} listed in {list_file} not found")
    return files


def check_shape_points(points: np.ndarray, source: str) -> np.ndarray:
    """Validate a stack of clouds ``(M, N, C)``; the error names the first bad shape."""
    if points.ndim != 3 or points.shape[2] < 3:
        raise ValueError(f"{source}: expected point data of shape (shapes, points, 3+), got {points.shape}")
    finite = np.isfinite(points).all(axis=(1, 2))
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        validate_points(points[first], f"{source} [shape {first}]")
    return np.ascontiguousarray(points, dtype=np.float32)


def check_labels(labels: np.ndarray, num_classes: int, source: str, what: str = "label") -> np.ndarray:
    """Labels as int64 ``(M,)``; ValueError naming the file, the shape and the valid range."""
    labels = np.asarray(labels).reshape(-1)
    integral = labels.dtype.kind in "iu" or (
        labels.dtype.kind == "f" and np.isfinite(labels).all() and (labels == np.round(labels)).all()
    )
    if not integral:
        raise ValueError(f"{source}: {what}s must be integers, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        raise ValueError(
            f"{source}: {what} {int(labels[bad[0]])} at index {int(bad[0])} is outside the "
            f"{num_classes} classes (valid 0..{num_classes - 1}); {len(bad)} bad {what}s in all"
        )
    return labels


def _natural_key(path: Path) -> Tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name))


def load_text_table(path: Path, **loadtxt_kwargs) -> np.ndarray:
    """``np.loadtxt`` as a 2-D table, with errors naming ``path`` (malformed rows, empty file)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": raised below
            table = np.loadtxt(path, ndmin=2, **loadtxt_kwargs)
    except ValueError as error:
        raise ValueError(f"{path}: malformed rows ({error})") from None
    if table.size == 0:
        raise ValueError(f"{path}: empty cloud (no data rows)")
    return table
