"""ShapeNetPart part segmentation dataset (16 categories, 50 parts) in its three on-disk layouts.

Layouts, detected under ``root`` (``root`` may be the layout folder itself or hold it):

* ``"normal"``: ``shapenetcore_partanno_segmentation_benchmark_v0_normal/`` with
  ``<synset>/<id>.txt`` (rows ``x y z nx ny nz part``, part already global 0-49),
  ``synsetoffset2category.txt`` and ``train_test_split/shuffled_{train,val,test}_file_list.json``
  (entries ``"shape_data/<synset>/<id>"``).
* ``"v0"``: the original ``shapenetcore_partanno_segmentation_benchmark_v0/`` with
  ``<synset>/points/<id>.pts`` (rows ``x y z``) and ``<synset>/points_label/<id>.seg`` (one label
  per row, numbered from 1 within the category, mapped to global ids through
  :data:`SHAPENETPART_CATEGORY_PARTS`), the same category file and split lists.
* ``"hdf5"``: ``hdf5_data/`` with ``ply_data_{train,val,test}*.h5`` (datasets ``data`` (n, 2048, 3),
  ``label`` (n, 1) category, ``pid`` (n, 2048) global part, optional ``normal``), listed by
  ``{train,val,test}_hdf5_file_list.txt`` or globbed when the lists are absent. Read directly.

Clouds have different sizes: the text layouts are parsed once per official split into a ragged
cache (concatenated points + offsets) under ``cache_dir``, never beside the data, and rebuilt
when a source file changes.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from pointea.data.cache import cache_file, load_or_build
from pointea.data.io import validate_points
from pointea.data.layout import (
    check_dataset_arguments,
    check_labels,
    check_shape_points,
    choose_layout,
    list_hdf5_files,
    load_text_table,
    read_hdf5_arrays,
    read_name_list,
)

PathLike = Union[str, os.PathLike]
Item = Dict[str, torch.Tensor]
Transform = Callable[[Item], Item]

SHAPENETPART_CATEGORIES = (
    "Airplane", "Bag", "Cap", "Car", "Chair", "Earphone", "Guitar", "Knife",
    "Lamp", "Laptop", "Motorbike", "Mug", "Pistol", "Rocket", "Skateboard", "Table",
)
SHAPENETPART_SYNSETS = {
    "Airplane": "02691156", "Bag": "02773838", "Cap": "02954340", "Car": "02958343",
    "Chair": "03001627", "Earphone": "03261776", "Guitar": "03467517", "Knife": "03624134",
    "Lamp": "03636649", "Laptop": "03642806", "Motorbike": "03790512", "Mug": "03797390",
    "Pistol": "03948459", "Rocket": "04099429", "Skateboard": "04225987", "Table": "04379243",
}
_PARTS_PER_CATEGORY = (4, 2, 2, 4, 4, 3, 3, 2, 4, 2, 6, 2, 3, 3, 3, 3)
SHAPENETPART_CATEGORY_PARTS: List[List[int]] = [
    list(range(sum(_PARTS_PER_CATEGORY[:i]), sum(_PARTS_PER_CATEGORY[: i + 1])))
    for i in range(len(_PARTS_PER_CATEGORY))
]
NUM_PARTS = 50
# Global part id -> "Category/partK", K the 1-based label of the original .seg files.
SHAPENETPART_PART_NAMES = [
    f"{name}/part{k + 1}"
    for name, parts in zip(SHAPENETPART_CATEGORIES, SHAPENETPART_CATEGORY_PARTS)
    for k in range(len(parts))
]
SPLITS = ("train", "val", "trainval", "test")
LAYOUTS = ("normal", "hdf5", "v0")  # auto-detection prefers them in this order
_LAYOUT_FOLDERS = {
    "normal": "shapenetcore_partanno_segmentation_benchmark_v0_normal",
    "hdf5": "hdf5_data",
    "v0": "shapenetcore_partanno_segmentation_benchmark_v0",
}
_SYNSET_TO_CATEGORY = {synset: i for i, synset in enumerate(SHAPENETPART_SYNSETS.values())}
# Part id -> category id, to check part labels against their shape's category.
_PART_CATEGORY = np.array([c for c, parts in enumerate(SHAPENETPART_CATEGORY_PARTS) for _ in parts])

logger = logging.getLogger(__name__)


def _split_list_file(folder: Path, split: str) -> Path:
    return folder / "train_test_split" / f"shuffled_{split}_file_list.json"


def _check_parts(parts: np.ndarray, category: int, source: str) -> None:
    """ValueError naming ``source`` when a global part id lies outside the category's parts."""
    allowed = SHAPENETPART_CATEGORY_PARTS[category]
    bad = np.flatnonzero((parts < allowed[0]) | (parts > allowed[-1]))
    if len(bad):
        raise ValueError(
            f"{source}: part id {int(parts[bad[0]])} at point {int(bad[0])} is outside the parts of "
            f"{SHAPENETPART_CATEGORIES[category]} ({allowed[0]}..{allowed[-1]}); {len(bad)} bad points"
        )


def read_normal_shape(path: Path, category: int) -> Tuple[np.ndarray, np.ndarray]:
    """One shape of the ``normal`` layout: ``(N, 6)`` float32 points and ``(N,)`` global part ids."""
    table = load_text_table(path, dtype=np.float64)
    if table.shape[1] != 7:
        raise ValueError(f"{path}: rows have {table.shape[1]} columns, expected 7 (x y z nx ny nz part)")
    points = validate_points(table[:, :6], str(path))
    parts = table[:, 6]
    if not (parts == np.round(parts)).all():
        raise ValueError(f"{path}: the part column (7th) holds non-integer values")
    parts = parts.astype(np.int64)
    _check_parts(parts, category, str(path))
    return points, parts


def read_v0_shape(points_path: Path, labels_path: Path, category: int) -> Tuple[np.ndarray, np.ndarray]:
    """One shape of the ``v0`` layout: ``(N, 3)`` float32 points and ``(N,)`` global part ids."""
    points = load_text_table(points_path, dtype=np.float32)
    if points.shape[1] != 3:
        raise ValueError(f"{points_path}: rows have {points.shape[1]} columns, expected 3 (x y z)")
    points = validate_points(points, str(points_path))
    local = load_text_table(labels_path, dtype=np.int64)
    if local.shape[1] != 1:
        raise ValueError(f"{labels_path}: rows have {local.shape[1]} columns, expected one part label per row")
    local = local[:, 0]
    if len(local) != len(points):
        raise ValueError(
            f"{labels_path}: {len(local)} labels for the {len(points)} points of {points_path.name}"
        )
    table = SHAPENETPART_CATEGORY_PARTS[category]
    bad = np.flatnonzero((local < 1) | (local > len(table)))
    if len(bad):
        raise ValueError(
            f"{labels_path}: label {int(local[bad[0]])} at row {int(bad[0])} is outside 1..{len(table)}, "
            f"the {len(table)} parts of {SHAPENETPART_CATEGORIES[category]}"
        )
    return points, np.asarray(table, dtype=np.int64)[local - 1]


class ShapeNetPart(Dataset):
    """ShapeNetPart (16,881 shapes, 16 categories, 50 parts) for part segmentation.

    Args:
        root: the layout folder, or a folder holding one of
            ``shapenetcore_partanno_segmentation_benchmark_v0_normal/``, ``hdf5_data/``,
            ``shapenetcore_partanno_segmentation_benchmark_v0/``.
        split: ``"train"``, ``"val"``, ``"trainval"`` (train + val) or ``"test"`` (official lists).
        num_points: points per item; train / trainval draw them at random (torch RNG, without
            replacement unless the cloud is shorter), val / test draw them deterministically from
            ``(seed, index)``; None keeps whole clouds (variable N).
        use_normals: return ``x y z nx ny nz`` (C = 6); only layouts with normals support it.
        categories: keep only these categories (names, case-insensitive); ids stay global 0-15.
        transform: callable on the item dict.
        download: fetch the data into ``root`` with :func:`pointea.data.download.download_dataset`
            when no layout is found.
        cache_dir: folder for processed caches (default: ``$POINTEA_CACHE`` or ``~/.cache/pointea``).
        seed: seed of the deterministic val / test point selection.
        layout: ``"normal"``, ``"hdf5"`` or ``"v0"``; None picks the first found in that order.

    Attributes:
        categories (16 names), category_parts, part_names, num_parts (50), num_classes (16),
        in_channels, layout, files (source id of each shape), labels ``(M,)`` category of each
        shape; ragged storage of all clouds concatenated: shape ``i`` is
        ``flat_points[offsets[i]:offsets[i + 1]]`` ``(N_i, C)`` float32 with part ids
        ``flat_parts[offsets[i]:offsets[i + 1]]`` (uint8). There is no ``points`` attribute: clouds
        differ in size, so use the items.

    Items:
        ``{"points": (N, C) float32, "category": int64 scalar, "parts": (N,) int64}`` after
        ``transform``.
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        num_points: Optional[int] = 2048,
        use_normals: bool = False,
        categories: Optional[Union[str, Sequence[str]]] = None,
        transform: Optional[Transform] = None,
        download: bool = False,
        cache_dir: Optional[PathLike] = None,
        seed: int = 0,
        layout: Optional[str] = None,
    ) -> None:
        num_points = check_dataset_arguments(split, layout, num_points, SPLITS, LAYOUTS, allow_all_points=True)
        self.root = Path(root).expanduser()
        self.split = split
        self.num_points = num_points
        self.use_normals = use_normals
        self.transform = transform
        self.cache_dir = cache_dir
        self.seed = seed
        self.in_channels = 6 if use_normals else 3
        self.categories: List[str] = list(SHAPENETPART_CATEGORIES)
        self.category_parts: List[List[int]] = [list(p) for p in SHAPENETPART_CATEGORY_PARTS]
        self.part_names: List[str] = list(SHAPENETPART_PART_NAMES)
        self.num_parts = NUM_PARTS
        self.num_classes = len(SHAPENETPART_CATEGORIES)
        self.selected_categories = self._parse_categories(categories)

        self.layout, self.layout_dir = choose_layout(
            "ShapeNetPart", self.root, self._detect_layouts, LAYOUTS, layout, download, self._not_found_message
        )
        if use_normals and self.layout == "v0":
            raise ValueError(
                f"use_normals=True but the v0 layout at {self.layout_dir} has no normals (.pts rows are "
                "x y z); use shapenetcore_partanno_segmentation_benchmark_v0_normal or use_normals=False"
            )

        official = ("train", "val") if split == "trainval" else (split,)
        loaded = [self._load_split(s) for s in official]
        points, parts, lengths, labels = (
            _concatenate([arrays[key] for arrays in loaded]) for key in ("points", "parts", "lengths", "labels")
        )
        files = [name for arrays in loaded for name in arrays["files"]]
        selected = [SHAPENETPART_CATEGORIES.index(name) for name in self.selected_categories]
        keep = np.isin(labels, selected)
        if not keep.all():
            point_keep = np.repeat(keep, lengths)
            points, parts = points[point_keep], parts[point_keep]
            lengths, labels = lengths[keep], labels[keep]
            files = [name for name, k in zip(files, keep) if k]
        if len(labels) == 0:
            raise ValueError(
                f"ShapeNetPart {split} split at {self.layout_dir} has no shapes of "
                f"{', '.join(self.selected_categories)}"
            )
        self.flat_points = torch.from_numpy(np.ascontiguousarray(points[:, : self.in_channels]))  # (T, C)
        self.flat_parts = torch.from_numpy(parts)  # (T,) uint8 storage, items return int64
        self.offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
        self.labels = torch.from_numpy(labels.astype(np.int64))  # (M,)
        self.files: List[str] = files

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Item:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} shapes")
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        points, parts = self.flat_points[start:end], self.flat_parts[start:end].long()
        if self.num_points is not None:
            generator = None
            if self.split in ("val", "test"):
                generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
            chosen = _choose(end - start, self.num_points, generator)
            # index_select: advanced indexing (points[chosen]) is ~100x slower on a busy multi-core CPU
            points, parts = points.index_select(0, chosen), parts.index_select(0, chosen)
        item = {"points": points, "category": self.labels[index], "parts": parts}
        return self.transform(item) if self.transform is not None else item

    def __repr__(self) -> str:
        return (
            f"ShapeNetPart(split={self.split!r}, layout={self.layout!r}, shapes={len(self)}, "
            f"num_points={self.num_points}, use_normals={self.use_normals}, "
            f"categories={len(self.selected_categories)}, root={str(self.root)!r}, transform={self.transform!r})"
        )

    # ----------------------------------------------------------------------- setup

    @staticmethod
    def _parse_categories(categories: Optional[Union[str, Sequence[str]]]) -> List[str]:
        if categories is None:
            return list(SHAPENETPART_CATEGORIES)
        if isinstance(categories, str):
            categories = [categories]
        by_lower = {name.lower(): name for name in SHAPENETPART_CATEGORIES}
        unknown = [name for name in categories if str(name).lower() not in by_lower]
        if unknown or not categories:
            raise ValueError(
                f"unknown ShapeNetPart categor{'ies' if len(unknown) > 1 else 'y'} "
                f"{', '.join(map(repr, unknown)) or '(none given)'}; valid: {', '.join(SHAPENETPART_CATEGORIES)}"
            )
        wanted = {by_lower[str(name).lower()] for name in categories}
        return [name for name in SHAPENETPART_CATEGORIES if name in wanted]

    @staticmethod
    def _layout_of(folder: Path) -> Optional[str]:
        if not folder.is_dir():
            return None
        if any(folder.glob("ply_data_*.h5")):
            return "hdf5"
        if not (folder / "synsetoffset2category.txt").is_file():
            return None
        has_points = any((folder / synset / "points").is_dir() for synset in SHAPENETPART_SYNSETS.values())
        return "v0" if has_points else "normal"

    def _detect_layouts(self) -> Dict[str, Path]:
        found: Dict[str, Path] = {}
        if not self.root.is_dir():
            return found
        kind = self._layout_of(self.root)
        if kind:
            found[kind] = self.root
        for layout, name in _LAYOUT_FOLDERS.items():
            if layout not in found and self._layout_of(self.root / name) == layout:
                found[layout] = self.root / name
        return found

    def _not_found_message(self, layout: Optional[str]) -> str:
        expected = {
            "normal": f"{_LAYOUT_FOLDERS['normal']}/synsetoffset2category.txt + <synset>/<id>.txt",
            "hdf5": f"{_LAYOUT_FOLDERS['hdf5']}/ply_data_train0.h5",
            "v0": f"{_LAYOUT_FOLDERS['v0']}/<synset>/points/<id>.pts + points_label/<id>.seg",
        }
        state = "does not exist" if not self.root.exists() else "holds none of the expected layouts"
        return (
            f"ShapeNetPart not found: {self.root} {state}. Expected under it (or as it): "
            + "; ".join(expected[name] for name in ([layout] if layout else LAYOUTS))
            + f". Fetch it with `pointea download shapenetpart --data-root {self.root}` (Python: download=True)."
        )

    # ----------------------------------------------------------------------- loading

    def _load_split(self, split: str) -> Dict:
        """One official split: ragged ``points`` (T, C), ``parts`` (T,) uint8, ``lengths``, ``labels``, ``files``."""
        if self.layout == "hdf5":
            arrays = self._load_hdf5(split)
        else:
            arrays = self._load_text(split)
        return {
            "points": arrays["points"], "parts": arrays["parts"], "lengths": arrays["lengths"],
            "labels": arrays["labels"], "files": arrays["files"].tolist(),
        }

    def _read_split_list(self, split: str) -> List[Tuple[int, str]]:
        """``(category id, "<synset>/<id>")`` of every shape listed for ``split``."""
        folder = self.layout_dir
        list_file = _split_list_file(folder, split)
        if not list_file.is_file():
            raise FileNotFoundError(
                f"ShapeNetPart {split} split missing in the {self.layout} layout at {folder}: "
                f"expected {list_file.relative_to(folder)}"
            )
        categories_file = folder / "synsetoffset2category.txt"
        known = {}
        for line in read_name_list(categories_file, "ShapeNetPart category file"):
            name, _, synset = line.partition("\t") if "\t" in line else line.partition(" ")
            known[synset.strip()] = name.strip()
        try:
            entries = json.loads(list_file.read_text(encoding="utf-8"))
        except ValueError as error:
            raise ValueError(f"{list_file}: not a JSON list of shapes ({error})") from None
        if not isinstance(entries, list):
            raise ValueError(f"{list_file}: expected a JSON list of \"shape_data/<synset>/<id>\" entries")
        shapes = []
        for entry in entries:
            pieces = str(entry).strip("/").split("/")
            if len(pieces) < 2:
                raise ValueError(f"{list_file}: entry {entry!r} is not \"shape_data/<synset>/<id>\"")
            synset, shape_id = pieces[-2], pieces[-1]
            if synset not in _SYNSET_TO_CATEGORY or synset not in known:
                raise ValueError(
                    f"{list_file}: entry {entry!r} has synset {synset!r}, which is not a ShapeNetPart "
                    f"category listed in {categories_file.name}"
                )
            shapes.append((_SYNSET_TO_CATEGORY[synset], f"{synset}/{shape_id}"))
        if not shapes:
            raise ValueError(f"{list_file}: lists no shapes")
        return shapes

    def _source_names(self, shape: str) -> List[str]:
        synset, shape_id = shape.split("/")
        if self.layout == "v0":
            return [f"{synset}/points/{shape_id}.pts", f"{synset}/points_label/{shape_id}.seg"]
        return [f"{shape}.txt"]

    def _load_text(self, split: str) -> Dict[str, np.ndarray]:
        folder = self.layout_dir
        shapes = self._read_split_list(split)
        list_file = _split_list_file(folder, split)
        sources = []
        for _, shape in shapes:
            for name in self._source_names(shape):
                if not os.path.isfile(folder / name):
                    raise FileNotFoundError(f"Shape file {folder / name} listed in {list_file} not found")
                sources.append(name)
        channels = "xyzn" if self.layout == "normal" else "xyz"
        path = cache_file(
            "shapenetpart", f"{self.layout}-{split}-{channels}", folder,
            ["synsetoffset2category.txt", list_file.relative_to(folder).as_posix(), *sources],
            {"layout": self.layout, "split": split}, self.cache_dir,
        )
        return load_or_build(path, lambda: self._build_text(shapes), ("points", "parts", "lengths", "labels", "files"))

    def _build_text(self, shapes: List[Tuple[int, str]]) -> Dict[str, np.ndarray]:
        folder = self.layout_dir
        logger.info("ShapeNetPart: parsing %d shapes from %s (cached afterwards)", len(shapes), folder)
        clouds, parts = [], []
        for category, shape in shapes:
            names = self._source_names(shape)
            if self.layout == "v0":
                cloud, part = read_v0_shape(folder / names[0], folder / names[1], category)
            else:
                cloud, part = read_normal_shape(folder / names[0], category)
            clouds.append(cloud)
            parts.append(part.astype(np.uint8))
        return {
            "points": np.concatenate(clouds),
            "parts": np.concatenate(parts),
            "lengths": np.array([len(c) for c in clouds], dtype=np.int64),
            "labels": np.array([category for category, _ in shapes], dtype=np.int64),
            "files": np.array([shape for _, shape in shapes]),
        }

    def _load_hdf5(self, split: str) -> Dict[str, np.ndarray]:
        folder = self.layout_dir
        list_file = folder / f"{split}_hdf5_file_list.txt"
        files = list_hdf5_files(folder, list_file, split)
        if not files:
            raise FileNotFoundError(
                f"ShapeNetPart {split} split missing in the hdf5 layout at {folder}: expected "
                f"{list_file.name} or ply_data_{split}*.h5"
            )
        clouds, parts, lengths, labels, ids = [], [], [], [], []
        for path in files:
            arrays = read_hdf5_arrays(path, ("data", "label", "pid"), ("normal",))
            data = check_shape_points(arrays["data"], str(path))[:, :, :3]
            label = check_labels(arrays["label"], len(SHAPENETPART_CATEGORIES), str(path), "category label")
            pid = np.asarray(arrays["pid"])
            if len(label) != len(data) or pid.shape != data.shape[:2]:
                raise ValueError(
                    f"{path}: 'data' {data.shape}, 'label' {arrays['label'].shape} and 'pid' {pid.shape} "
                    "do not describe the same shapes"
                )
            pid = check_labels(pid, NUM_PARTS, str(path), "part id").reshape(pid.shape)
            wrong = _PART_CATEGORY[pid] != label[:, None]
            if wrong.any():
                shape = int(np.flatnonzero(wrong.any(axis=1))[0])
                _check_parts(pid[shape], int(label[shape]), f"{path} [shape {shape}]")
            if self.use_normals:
                if "normal" not in arrays:
                    raise ValueError(
                        f"{path}: use_normals=True but the file has no 'normal' dataset; the hdf5 layout "
                        "here has no normals (use the v0_normal layout or use_normals=False)"
                    )
                normal = check_shape_points(arrays["normal"], f"{path} 'normal'")
                if normal.shape != arrays["data"].shape[:2] + (3,):
                    raise ValueError(f"{path}: 'normal' shape {normal.shape} does not match 'data'")
                data = np.concatenate([data, normal], axis=2)
            clouds.append(data.reshape(-1, data.shape[2]))  # (n * P, C)
            lengths.append(np.full(len(data), data.shape[1], dtype=np.int64))
            parts.append(pid.reshape(-1).astype(np.uint8))
            labels.append(label)
            ids += [f"{path.name}:{i}" for i in range(len(data))]
        return {
            "points": np.concatenate(clouds), "parts": np.concatenate(parts),
            "lengths": np.concatenate(lengths),
            "labels": np.concatenate(labels), "files": np.array(ids),
        }


def _concatenate(arrays: List[np.ndarray]) -> np.ndarray:
    """``np.concatenate`` without the copy of a single array (a split can hold a gigabyte)."""
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _choose(n: int, k: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """``k`` indices into ``n`` points: a random subset, or all points plus random repeats when short."""
    order = torch.randperm(n, generator=generator)
    if n >= k:
        return order[:k]
    return torch.cat([order, torch.randint(n, (k - n,), generator=generator)])
