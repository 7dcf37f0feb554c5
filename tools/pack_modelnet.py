"""Pack a ModelNet40 / ModelNet10 split into the PointNet HDF5 layout, small enough to carry.

Reads the split with pointea's own dataset class (any layout it reads: the original folders, the
resampled text files, HDF5) and writes the layout that :class:`pointea.data.modelnet.ModelNet40`
reads as ``hdf5``: ``shape_names.txt``, ``{split}_files.txt`` and ``ply_data_{split}0.h5`` with
``data`` ``(n, num_points, 3)`` and ``label`` ``(n, 1)`` uint8. The coordinates are the loader's
raw first ``num_points`` points (no normalisation, no rotation), stored as float16 by default
(gzip-compressed with the byte shuffle filter: lossless, about 15 % smaller), so the 9,843
training shapes at 1,024 points take about 51 MB instead of 121 MB of float32. ``pack_info.json``
beside them records the source, the options and the size and SHA-256 of every file written.

The folder is written as a temporary sibling, checked (loaded back with the dataset class: the
same labels and exactly the float16-rounded source points) and then renamed into place, so a
failed pack leaves nothing behind; an existing folder is replaced only with ``--force``.

``data.val_split=grouped`` compares shapes on their first 1,024 points, so pack at least 1,024
points to train with it. Groups computed from float16 points differ from the float32 source's in
a few shapes, and that reshuffles the whole holdout (on ModelNet40 the two val splits share only
418 of their 976 shapes). So the source's groups travel too (``duplicate_groups_train.npy``), and
:func:`seed_group_cache` puts them where the loader looks for the packed copy's groups: the
grouped val split of the packed copy is then the source's, shape for shape.

The coordinates keep the source's frame: a copy of the folder layout stands on z, while pointea
takes the HDF5 layout to stand on y (``up_axis`` in :mod:`pointea.data.catalog`); ``pack_info.json``
records the source's up axis.

    python tools/pack_modelnet.py --data-root ../shared/data --out .carry/modelnet40_ply_hdf5_1024
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from pointea.commands import positive_int
from pointea.data.cache import load_or_build
from pointea.data.catalog import get_spec
from pointea.data.dedup import (DUPLICATE_IOU, GRID_RESOLUTION, GROUP_POINTS, cached_duplicate_groups,
                                duplicate_groups, groups_cache_file)
from pointea.data.download import sha256_of

PathLike = Union[str, os.PathLike]

DATASETS = ("modelnet40", "modelnet10")
DTYPES = ("float16", "float32")
COMPRESSIONS = ("gzip", "none")
# official split -> the dataset split that holds all of it (pointea's "train" is trainval minus val)
SPLIT_SOURCES = {"train": "trainval", "test": "test"}
INFO_FILE = "pack_info.json"
GROUPS_FILE = "duplicate_groups_train.npy"  # the source's near-duplicate groups of the train list
CHUNK_SHAPES = 64  # shapes per HDF5 chunk when compressing
GZIP_LEVEL = 4


def first_per_class(labels: np.ndarray, limit: Optional[int]) -> np.ndarray:
    """Indices of the first ``limit`` shapes of each class, in their original order (all when None)."""
    if limit is None:
        return np.arange(len(labels))
    keep = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        keep[np.flatnonzero(labels == label)[:limit]] = True
    return np.flatnonzero(keep)


def load_source(dataset: str, root: Path, split: str, num_points: int, cache_dir: Optional[str],
                layout: Optional[str]) -> Any:
    """The whole official ``split`` of ``dataset`` under ``root``, untransformed."""
    cls = get_spec(dataset).load_class()
    return cls(root, split=SPLIT_SOURCES[split], num_points=num_points, cache_dir=cache_dir, layout=layout)


def write_split(folder: Path, split: str, points: np.ndarray, labels: np.ndarray, dtype: str,
                compression: str) -> Path:
    """``ply_data_{split}0.h5`` and ``{split}_files.txt`` in ``folder``.

    Shapes:
        points ``(n, N, 3)`` float32, labels ``(n,)`` int.
    """
    import h5py

    with np.errstate(over="ignore"):  # an overflow becomes inf, refused just below
        stored = points.astype(dtype)
    bad = np.flatnonzero(~np.isfinite(stored).all(axis=(1, 2)))
    if len(bad):
        raise ValueError(f"{split} shape {int(bad[0])} has coordinates beyond the {dtype} range "
                         f"(largest |x| {float(np.abs(points[bad[0]]).max()):.6g}); pack with --dtype float32")
    path = folder / f"ply_data_{split}0.h5"
    options: Dict[str, Any] = {}
    if compression == "gzip":
        options = {"compression": "gzip", "compression_opts": GZIP_LEVEL, "shuffle": True,
                   "chunks": (min(CHUNK_SHAPES, len(stored)), *stored.shape[1:])}
    with h5py.File(path, "w") as handle:
        handle.create_dataset("data", data=stored, **options)
        handle.create_dataset("label", data=labels.astype(np.uint8).reshape(-1, 1))
    (folder / f"{split}_files.txt").write_text(f"{path.name}\n")
    return path


def source_groups(source: Any, keep: np.ndarray, limit: Optional[int],
                  cache_dir: Optional[str]) -> Optional[np.ndarray]:
    """The near-duplicate groups that ``data.val_split=grouped`` computes for the packed shapes of
    ``source`` (the whole official train list) from the float32 source; None below 1,024 points."""
    if source.num_points < GROUP_POINTS:
        return None
    points = source.points.numpy()[:, :GROUP_POINTS, :3]
    if limit is not None:  # a subset groups on its own, as the loader would group it
        return duplicate_groups(points[keep])
    return cached_duplicate_groups(points, source.name.lower(), f"{source.layout}-train", source.layout_dir,
                                   cache_dir=cache_dir)


def seed_group_cache(folder: PathLike, cache_dir: Optional[PathLike], dataset: str = "modelnet40") -> Optional[bool]:
    """Cache the groups carried in a packed ``folder`` under the key the loader computes for it.

    The loader keys its groups by a digest of the points it reads, so the float32 source's groups
    are written under the digest of the packed points; the loader then finds them instead of
    grouping the float16 points anew.

    Returns:
        None when ``folder`` carries no groups; else whether the loader now finds them (False: the
        key was not the loader's, which then grouped the packed points itself).
    """
    folder = Path(folder)
    if not (folder / GROUPS_FILE).is_file():
        return None
    groups = np.load(folder / GROUPS_FILE)
    packed = load_source(dataset, folder, "train", GROUP_POINTS, cache_dir=None, layout="hdf5")
    xyz = np.ascontiguousarray(packed.points.numpy()[..., :3], dtype=np.float32)
    if groups.shape != (len(xyz),):
        raise ValueError(f"{folder / GROUPS_FILE}: {groups.shape} group ids for {len(xyz)} train shapes")
    namespace, label = packed.name.lower(), f"{packed.layout}-train"
    path = groups_cache_file(xyz, namespace, label, packed.layout_dir, cache_dir=cache_dir)
    load_or_build(path, lambda: {"groups": groups.astype(np.int64)}, ("groups",))
    found = cached_duplicate_groups(xyz, namespace, label, packed.layout_dir, cache_dir=cache_dir)
    return bool(np.array_equal(found, groups))


def check_packed(folder: Path, dataset: str, split: str, num_points: int, points: np.ndarray,
                 labels: np.ndarray, dtype: str) -> float:
    """Load ``folder`` back with the dataset class and compare it with what was packed.

    Returns:
        The largest absolute difference from the float32 source points.

    Raises:
        ValueError: labels differ, or points differ from the source rounded to ``dtype``.
    """
    packed = load_source(dataset, folder, split, num_points, cache_dir=None, layout="hdf5")
    if not np.array_equal(packed.labels.numpy(), labels):
        raise ValueError(f"{folder}: the packed {split} labels differ from the source's")
    expected = points.astype(dtype).astype(np.float32)
    if packed.points.shape != expected.shape or not np.array_equal(packed.points.numpy(), expected):
        raise ValueError(f"{folder}: the packed {split} points differ from the source's rounded to {dtype}")
    return float(np.abs(packed.points.numpy() - points).max())


def pack(args: argparse.Namespace) -> Dict[str, Any]:
    """Pack the requested splits into ``args.out`` (atomically); returns what ``pack_info.json`` holds."""
    out = Path(args.out)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} already exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    spec = get_spec(args.dataset)
    info: Dict[str, Any] = {
        "dataset": args.dataset, "source_root": str(Path(args.data_root).resolve()),
        "num_points": args.num_points, "dtype": args.dtype, "compression": args.compression,
        "limit_per_class": args.limit_per_class, "splits": {},
    }
    temporary = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        classes: Optional[List[str]] = None
        for split in args.splits:
            start = time.perf_counter()
            source = load_source(args.dataset, Path(args.data_root), split, args.num_points, args.cache_dir,
                                 args.layout)
            if classes is None:
                classes = list(source.classes)
                (temporary / "shape_names.txt").write_text("\n".join(classes) + "\n")
                info["source_layout"] = source.layout
                info["source_up_axis"] = spec.up_axis_for(source.layout)
            elif list(source.classes) != classes:
                raise ValueError(f"{args.data_root}: the {split} split lists other classes than the first split")
            keep = first_per_class(source.labels.numpy(), args.limit_per_class)
            points = source.points.numpy()[keep, :, :3]
            labels = source.labels.numpy()[keep]
            path = write_split(temporary, split, points, labels, args.dtype, args.compression)
            error = check_packed(temporary, args.dataset, split, args.num_points, points, labels, args.dtype)
            info["splits"][split] = {
                "file": path.name, "shapes": int(len(labels)), "bytes": path.stat().st_size,
                "sha256": sha256_of(path), "max_abs_error": error,
            }
            groups = source_groups(source, keep, args.limit_per_class, args.cache_dir) if split == "train" else None
            if groups is not None:
                np.save(temporary / GROUPS_FILE, groups.astype(np.int32))
                info["splits"][split]["groups"] = {"file": GROUPS_FILE, "count": int(groups.max()) + 1,
                                                   "iou": DUPLICATE_IOU, "resolution": GRID_RESOLUTION}
            info["splits"][split]["seconds"] = round(time.perf_counter() - start, 2)
        (temporary / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        _move_into_place(temporary, out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return info


def _move_into_place(temporary: Path, out: Path) -> None:
    """Rename ``temporary`` to ``out``; a previous ``out`` (``--force``) is removed only afterwards."""
    os.chmod(temporary, 0o777 & ~_umask())  # mkdtemp makes the folder owner-only
    if not out.exists():
        os.replace(temporary, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.replace(out, old / out.name)
    try:
        os.replace(temporary, out)
    except BaseException:
        os.replace(old / out.name, out)  # put the previous folder back
        old.rmdir()
        raise
    shutil.rmtree(old)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, metavar="DIR", help="folder holding a ModelNet layout")
    parser.add_argument("--dataset", default="modelnet40", choices=DATASETS)
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write (must not exist)")
    parser.add_argument("--splits", nargs="+", default=["train"], choices=list(SPLIT_SOURCES),
                        help="official splits to pack (default: train)")
    parser.add_argument("--num-points", type=positive_int, default=1024, metavar="N",
                        help="first N points of each shape (default 1024)")
    parser.add_argument("--dtype", default="float16", choices=DTYPES)
    parser.add_argument("--compression", default="gzip", choices=COMPRESSIONS,
                        help="HDF5 compression of the points (lossless; default gzip)")
    parser.add_argument("--limit-per-class", type=positive_int, default=None, metavar="N",
                        help="pack only the first N shapes of each class (tests, smoke runs)")
    parser.add_argument("--layout", default=None, choices=("hdf5", "folder", "text"),
                        help="source layout (default: the first found)")
    parser.add_argument("--cache-dir", default=None, metavar="DIR", help="pointea's array cache for the source")
    parser.add_argument("--force", action="store_true", help="replace an existing --out folder")
    args = parser.parse_args(argv)
    try:
        info = pack(args)
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"pack_modelnet: error: {error}", file=sys.stderr)
        return 2
    for split, entry in info["splits"].items():
        print(f"{args.out}/{entry['file']}: {split}, {entry['shapes']} shapes x {args.num_points} points, "
              f"{entry['bytes']} bytes ({entry['bytes'] / 2**20:.1f} MiB), sha256 {entry['sha256']}, "
              f"max |error| {entry['max_abs_error']:.3g}")
    print(f"wrote {Path(args.out) / INFO_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
