"""ModelNet40 / ModelNet10 shape classification datasets in their three common on-disk layouts.

Layouts, detected under ``root`` (``root`` may be the layout folder itself or hold it):

* ``"hdf5"``: ``modelnet40_ply_hdf5_2048/`` with ``ply_data_{train,test}*.h5`` (datasets
  ``data`` (n, 2048, 3), ``label`` (n, 1), optional ``normal``), ``shape_names.txt`` and
  ``{train,test}_files.txt`` (paths resolved by base name; without them the ``.h5`` files are
  globbed). Already packed arrays, read directly without a cache.
* ``"folder"``: the original archive layout ``ModelNet40/<class>/{train,test}/<class>_<NNNN>.<ext>``
  holding meshes (``.off``, ``.obj``, ``.stl``: ``num_points`` points are sampled uniformly over the
  surface with a seed derived from the file name) or point files (``.npy``, ``.ply``, ``.pcd``,
  ``.txt`` ...: the first ``num_points`` rows are used). Labels are the official class indices
  (alphabetical: airplane = 0 ... xbox = 39).
* ``"text"``: ``modelnet40_normal_resampled/`` with ``<class>/<class>_<NNNN>.txt`` (rows
  ``x,y,z,nx,ny,nz``), ``modelnet40_shape_names.txt`` and ``modelnet40_{train,test}.txt``
  (ModelNet10: ``modelnet10_*.txt`` in the same folder). The **first** ``num_points`` rows of each
  file are used, the convention of the reference PointNet++ / PCT loaders.

The folder and text layouts are parsed once per (split, num_points, use_normals) into a cache
file under ``cache_dir`` (default :func:`pointea.data.cache.default_cache_dir`), never beside
the data; the cache is rebuilt when a source file or an option changes. Shapes are returned as
stored (mesh samples are not rescaled): add ``NormalizeUnitSphere`` to the transform if needed.

Splits: ``trainval`` is the official training list, ``test`` the official test list, ``val`` a
deterministic class-stratified holdout of ``trainval`` (see :func:`stratified_holdout`, or with
``val_split="grouped"`` :func:`pointea.data.dedup.grouped_holdout`) and ``train`` the rest of
``trainval``.
"""

from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from pointea.data.cache import cache_file, load_or_build
from pointea.data.dedup import GROUP_POINTS, VAL_SPLITS, cached_duplicate_groups, grouped_holdout
from pointea.data.io import MESH_SUFFIXES, SUPPORTED_SUFFIXES, read_point_cloud, validate_points
from pointea.data.layout import (
    check_dataset_arguments,
    check_labels,
    check_shape_points,
    choose_layout,
    list_hdf5_files,
    load_text_table,
    read_hdf5_arrays,
    read_name_list,
    stratified_holdout,
)

PathLike = Union[str, os.PathLike]
Item = Dict[str, torch.Tensor]
Transform = Callable[[Item], Item]

MODELNET40_CLASSES = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone",
    "cup", "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard",
    "lamp", "laptop", "mantel", "monitor", "night_stand", "person", "piano", "plant", "radio",
    "range_hood", "sink", "sofa", "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase",
    "wardrobe", "xbox",
)
MODELNET10_CLASSES = (
    "bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet",
)
SPLITS = ("train", "val", "trainval", "test")
LAYOUTS = ("hdf5", "folder", "text")  # auto-detection prefers them in this order
SPLIT_ARRAYS = ("points", "labels", "files")  # what a cached split holds

logger = logging.getLogger(__name__)


class SplitArrays(NamedTuple):
    """One official split of a layout, in memory."""

    classes: List[str]
    points: np.ndarray  # (M, num_points, C) float32
    labels: np.ndarray  # (M,) int64
    files: List[str]  # source id of each shape


# --------------------------------------------------------------------------- dataset

class _ModelNet(Dataset):
    """Shared implementation of :class:`ModelNet40` and :class:`ModelNet10`."""

    variant = 40
    official_classes: Tuple[str, ...] = MODELNET40_CLASSES

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        num_points: int = 1024,
        use_normals: bool = False,
        transform: Optional[Transform] = None,
        download: bool = False,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        cache_dir: Optional[PathLike] = None,
        layout: Optional[str] = None,
        val_split: str = "stratified",
    ) -> None:
        num_points = check_dataset_arguments(split, layout, num_points, SPLITS, LAYOUTS)
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction!r}")
        if val_split not in VAL_SPLITS:
            raise ValueError(f"val_split must be one of {', '.join(VAL_SPLITS)}; got {val_split!r}")
        self.root = Path(root).expanduser()
        self.split = split
        self.num_points = num_points
        self.use_normals = use_normals
        self.transform = transform
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.val_split = val_split
        self.cache_dir = cache_dir
        self.in_channels = 6 if use_normals else 3

        official_split = "test" if split == "test" else "train"
        # without a chosen layout, prefer one that holds the split
        detect = self._detect_layouts if layout else lambda: self._layouts_for(official_split)
        self.layout, self.layout_dir = choose_layout(
            self.name, self.root, detect, LAYOUTS, layout, download, self._not_found_message
        )

        loader = {"hdf5": self._load_hdf5, "folder": self._load_folder, "text": self._load_text}
        arrays = loader[self.layout](self.layout_dir, official_split)
        points, labels, files = arrays.points, arrays.labels, arrays.files
        if split in ("train", "val"):
            in_val = self._val_mask(points, labels, official_split)
            keep = in_val if split == "val" else ~in_val
            if not keep.any():
                raise ValueError(
                    f"{self.name} split {split!r} is empty (val_fraction={val_fraction}, "
                    f"{len(labels)} training shapes)"
                )
            points, labels = points[keep], labels[keep]
            files = [name for name, k in zip(files, keep) if k]
        self.classes: List[str] = list(arrays.classes)
        self.num_classes = len(self.classes)
        self.points = torch.from_numpy(np.ascontiguousarray(points))  # (M, num_points, C)
        self.labels = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))  # (M,)
        self.files: List[str] = files

    @property
    def name(self) -> str:
        return type(self).__name__

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Item:
        item = {"points": self.points[index], "label": self.labels[index]}
        return self.transform(item) if self.transform is not None else item

    def __repr__(self) -> str:
        return (
            f"{self.name}(split={self.split!r}, layout={self.layout!r}, shapes={len(self)}, "
            f"num_points={self.num_points}, use_normals={self.use_normals}, root={str(self.root)!r}, "
            f"transform={self.transform!r})"
        )

    @classmethod
    def find_layout(cls, root: PathLike, split: str = "train") -> Optional[str]:
        """The layout ``split`` would be read from under ``root`` (e.g. a root a checkpoint
        recorded), looking at file names only; None when no layout is found."""
        probe = cls.__new__(cls)
        probe.root = Path(root).expanduser()  # the detection helpers read the root only: nothing is loaded
        found = probe._layouts_for(split)
        return next((layout for layout in LAYOUTS if layout in found), None)

    def _val_mask(self, points: np.ndarray, labels: np.ndarray, official_split: str) -> np.ndarray:
        """The validation holdout of the official train list (see ``val_split``)."""
        if self.val_split == "stratified":
            return stratified_holdout(labels, self.val_fraction, self.split_seed)
        if self.num_points != GROUP_POINTS or self.use_normals:
            try:
                points = type(self)(self.root, "trainval", GROUP_POINTS, cache_dir=self.cache_dir,
                                    layout=self.layout).points.numpy()
            except ValueError as error:
                raise ValueError(f"val_split='grouped' compares shapes on their first {GROUP_POINTS} "
                                 f"points: {error}") from None
        groups = cached_duplicate_groups(points, self.name.lower(), f"{self.layout}-{official_split}",
                                         self.layout_dir, cache_dir=self.cache_dir)
        return grouped_holdout(labels, groups, self.val_fraction, self.split_seed)

    # ----------------------------------------------------------------------- layout detection

    def _layout_folder_names(self) -> Dict[str, Tuple[str, ...]]:
        v = self.variant
        return {
            "hdf5": (f"modelnet{v}_ply_hdf5_2048",),
            "folder": (f"ModelNet{v}",),
            "text": ("modelnet40_normal_resampled", f"modelnet{v}_normal_resampled"),
        }

    def _is_layout(self, layout: str, folder: Path) -> bool:
        if not folder.is_dir():
            return False
        if layout == "hdf5":
            return (folder / "shape_names.txt").is_file() and any(folder.glob("ply_data_*.h5"))
        if layout == "text":
            return (folder / f"modelnet{self.variant}_shape_names.txt").is_file()
        if folder.name == f"ModelNet{self.variant}":
            return True
        return self._class_folder_holds(folder, ("train", "test"))

    def _class_folder_holds(self, folder: Path, splits: Sequence[str]) -> bool:
        """Whether some class folder under ``folder`` has a subfolder named after one of ``splits``."""
        return any(
            any((child / split).is_dir() for split in splits)
            for child in folder.iterdir() if child.is_dir() and child.name in self.official_classes
        )

    def _layouts_for(self, split: str) -> Dict[str, Path]:
        """The layouts under the root that hold ``split``, else all of them (the loader then says
        what is missing)."""
        found = self._detect_layouts()
        holding = {layout: folder for layout, folder in found.items() if self._holds_split(layout, folder, split)}
        if holding and len(holding) < len(found):
            logger.info("%s: of the layouts under %s (%s), only %s hold%s the %s split",
                        self.name, self.root, ", ".join(found), ", ".join(holding),
                        "s" if len(holding) == 1 else "", split)
        return holding or found

    def _holds_split(self, layout: str, folder: Path, split: str) -> bool:
        if layout == "hdf5":
            return bool(list_hdf5_files(folder, folder / f"{split}_files.txt", split))
        if layout == "text":
            return (folder / f"modelnet{self.variant}_{split}.txt").is_file()
        return self._class_folder_holds(folder, (split,))

    def _detect_layouts(self) -> Dict[str, Path]:
        found: Dict[str, Path] = {}
        if not self.root.is_dir():
            return found
        for layout, names in self._layout_folder_names().items():
            for folder in (self.root, *(self.root / name for name in names)):
                if self._is_layout(layout, folder):
                    found[layout] = folder
                    break
        return found

    def _not_found_message(self, layout: Optional[str]) -> str:
        names = self._layout_folder_names()
        v = self.variant
        expected = {
            "hdf5": f"{names['hdf5'][0]}/ply_data_train0.h5 + shape_names.txt",
            "folder": f"{names['folder'][0]}/<class>/{{train,test}}/<class>_<NNNN>.<off|npy|ply|...>",
            "text": f"modelnet40_normal_resampled/modelnet{v}_shape_names.txt + <class>/<class>_<NNNN>.txt",
        }
        wanted = [layout] if layout else list(LAYOUTS)
        state = "does not exist" if not self.root.exists() else "holds none of the expected layouts"
        return (
            f"{self.name} not found: {self.root} {state}. Expected under it (or as it): "
            + "; ".join(expected[w] for w in wanted)
            + f". Fetch it with `pointea download {self.name.lower()} --data-root {self.root}` "
            "(Python: download=True)."
        )

    def _missing_split(self, split: str, folder: Path, expected: str) -> FileNotFoundError:
        return FileNotFoundError(
            f"{self.name} {split} split missing in the {self.layout} layout at {folder}: "
            f"expected {expected}"
        )

    def _normals_error(self, source: str, problem: str) -> ValueError:
        return ValueError(
            f"{source}: use_normals=True but {problem}; the {self.layout} layout here has no "
            "normals (modelnet40_normal_resampled has them), or pass use_normals=False"
        )

    def _cache_label(self, split: str) -> str:
        return f"{self.layout}-{split}-{self.num_points}pts-{'xyzn' if self.use_normals else 'xyz'}"

    def _cache_options(self, split: str) -> Dict[str, object]:
        return {"dataset": self.name, "layout": self.layout, "split": split,
                "num_points": self.num_points, "use_normals": self.use_normals}

    def _first_rows(self, points: np.ndarray, source: str) -> np.ndarray:
        """The first ``num_points`` rows and the xyz (+ normal) channels of one cloud."""
        if len(points) < self.num_points:
            raise ValueError(
                f"{source}: has {len(points)} points, fewer than num_points={self.num_points}"
            )
        if self.use_normals and points.shape[1] < 6:
            raise self._normals_error(source, f"it has {points.shape[1]} columns (x y z)")
        return points[: self.num_points, : self.in_channels]

    # ----------------------------------------------------------------------- hdf5 layout

    def _load_hdf5(self, folder: Path, split: str) -> SplitArrays:
        names_file = folder / "shape_names.txt"
        classes = read_name_list(names_file, f"{self.name} class names file")
        self._check_class_count(classes, names_file)
        list_file = folder / f"{split}_files.txt"
        files = list_hdf5_files(folder, list_file, split)
        if not files:
            raise self._missing_split(split, folder, f"{list_file.name} or ply_data_{split}*.h5")
        points, labels, ids = [], [], []
        for path in files:
            arrays = read_hdf5_arrays(path, ("data", "label"), ("normal",))
            data = check_shape_points(arrays["data"], str(path))
            label = check_labels(arrays["label"], len(classes), str(path))
            if len(label) != len(data):
                raise ValueError(f"{path}: {len(label)} labels for {len(data)} shapes")
            if data.shape[1] < self.num_points:
                raise ValueError(
                    f"{path}: holds {data.shape[1]} points per shape, fewer than num_points={self.num_points}"
                )
            data = data[:, : self.num_points, :3]
            if self.use_normals:
                if "normal" not in arrays:
                    raise self._normals_error(str(path), "it has no 'normal' dataset")
                normal = check_shape_points(arrays["normal"], f"{path} 'normal'")
                if normal.shape[:2] != arrays["data"].shape[:2]:
                    raise ValueError(f"{path}: 'normal' shape {normal.shape} does not match 'data'")
                data = np.concatenate([data, normal[:, : self.num_points, :3]], axis=2)
            points.append(data)
            labels.append(label)
            ids += [f"{path.name}:{i}" for i in range(len(data))]
        return SplitArrays(classes, np.concatenate(points), np.concatenate(labels), ids)

    def _check_class_count(self, classes: List[str], names_file: Path) -> None:
        if len(classes) != self.variant:
            raise ValueError(
                f"{names_file}: lists {len(classes)} classes, {self.name} has {self.variant}"
            )

    # ----------------------------------------------------------------------- folder layout

    def _folder_files(self, folder: Path, split: str) -> List[Tuple[int, str]]:
        """``(label, path relative to folder)`` of every shape file of ``split`` (strings: fast)."""
        class_index = {name: i for i, name in enumerate(self.official_classes)}
        entries = []
        for child in sorted(os.scandir(folder), key=lambda e: e.name):
            split_dir = os.path.join(child.path, split)
            if child.name.startswith(".") or not child.is_dir() or not os.path.isdir(split_dir):
                continue
            if child.name not in class_index:
                raise ValueError(
                    f"{child.path}: folder {child.name!r} is not a {self.name} class; "
                    f"valid: {', '.join(self.official_classes)}"
                )
            names = sorted(
                e.name for e in os.scandir(split_dir)
                if not e.name.startswith(".") and e.is_file()
                and os.path.splitext(e.name)[1].lower() in SUPPORTED_SUFFIXES
            )
            label = class_index[child.name]
            entries += [(label, f"{child.name}/{split}/{name}") for name in names]
        return entries

    def _load_folder(self, folder: Path, split: str) -> SplitArrays:
        entries = self._folder_files(folder, split)
        if not entries:
            raise self._missing_split(
                split, folder, f"files <class>/{split}/<class>_<NNNN>.<ext>, ext one of "
                + ", ".join(SUPPORTED_SUFFIXES)
            )
        path = cache_file(self.name.lower(), self._cache_label(split), folder,
                          [name for _, name in entries], self._cache_options(split), self.cache_dir)
        arrays = load_or_build(path, lambda: self._build_folder(folder, entries), SPLIT_ARRAYS)
        return SplitArrays(list(self.official_classes), arrays["points"], arrays["labels"],
                           arrays["files"].tolist())

    def _build_folder(self, folder: Path, entries: List[Tuple[int, str]]) -> Dict[str, np.ndarray]:
        logger.info("%s: reading %d shapes from %s (cached afterwards)", self.name, len(entries), folder)
        points = np.empty((len(entries), self.num_points, self.in_channels), dtype=np.float32)
        for i, (_, name) in enumerate(entries):
            path = folder / name
            points[i] = self._first_rows(read_shape_file(path, self.num_points, name), str(path))
        labels = np.array([label for label, _ in entries], dtype=np.int64)
        return {"points": points, "labels": labels, "files": np.array([name for _, name in entries])}

    # ----------------------------------------------------------------------- text layout

    def _load_text(self, folder: Path, split: str) -> SplitArrays:
        prefix = f"modelnet{self.variant}"
        names_file = folder / f"{prefix}_shape_names.txt"
        classes = read_name_list(names_file, f"{self.name} class names file")
        self._check_class_count(classes, names_file)
        list_file = folder / f"{prefix}_{split}.txt"
        if not list_file.is_file():
            raise self._missing_split(split, folder, f"the list file {list_file.name}")
        class_index = {name: i for i, name in enumerate(classes)}
        entries = []
        for number, shape in enumerate(read_name_list(list_file, "split list"), start=1):
            name = shape.rsplit("_", 1)[0]
            if name not in class_index:
                raise ValueError(
                    f"{list_file}: shape {shape!r} (entry {number}) has class {name!r}, "
                    f"which is not in {names_file.name}"
                )
            entries.append((class_index[name], f"{name}/{shape}.txt"))
        if not entries:
            raise ValueError(f"{list_file}: lists no shapes")
        for _, name in entries:
            if not os.path.isfile(folder / name):
                raise FileNotFoundError(f"Shape file {folder / name} listed in {list_file} not found")
        path = cache_file(self.name.lower(), self._cache_label(split), folder,
                          [names_file.name, list_file.name, *(name for _, name in entries)],
                          self._cache_options(split), self.cache_dir)
        arrays = load_or_build(path, lambda: self._build_text(folder, entries), SPLIT_ARRAYS)
        return SplitArrays(classes, arrays["points"], arrays["labels"], arrays["files"].tolist())

    def _build_text(self, folder: Path, entries: List[Tuple[int, str]]) -> Dict[str, np.ndarray]:
        logger.info("%s: parsing %d text files from %s (cached afterwards)", self.name, len(entries), folder)
        points = np.empty((len(entries), self.num_points, self.in_channels), dtype=np.float32)
        for i, (_, name) in enumerate(entries):
            path = folder / name
            points[i] = self._first_rows(read_text_rows(path, self.num_points, 6), str(path))
        labels = np.array([label for label, _ in entries], dtype=np.int64)
        return {"points": points, "labels": labels, "files": np.array([name for _, name in entries])}


def read_shape_file(path: Path, num_points: int, relative: str) -> np.ndarray:
    """One shape of the folder layout: a point file, or ``num_points`` surface samples of a mesh.

    The mesh sampling seed is derived from the relative file name, so it is reproducible.
    """
    if path.suffix.lower() in MESH_SUFFIXES:
        return read_point_cloud(path, num_mesh_points=num_points, seed=zlib.crc32(relative.encode()))
    return read_point_cloud(path)


def read_text_rows(path: Path, num_rows: int, num_columns: int) -> np.ndarray:
    """The first ``num_rows`` rows of a comma-separated text cloud with exactly ``num_columns`` columns."""
    table = load_text_table(path, delimiter=",", max_rows=num_rows, dtype=np.float32)
    if table.shape[1] != num_columns:
        raise ValueError(
            f"{path}: rows have {table.shape[1]} columns, expected {num_columns} (x,y,z,nx,ny,nz)"
        )
    return validate_points(table, str(path))


class ModelNet40(_ModelNet):
    """ModelNet40 (12,311 CAD shapes, 40 classes) for point cloud classification.

    Args:
        root: the layout folder, or a folder holding ``modelnet40_ply_hdf5_2048/``, ``ModelNet40/``
            or ``modelnet40_normal_resampled/``.
        split: ``"train"``, ``"val"`` (stratified holdout of the official train list),
            ``"trainval"`` (the official train list) or ``"test"``.
        num_points: points per shape (the first ``num_points`` stored points; mesh samples).
        use_normals: return ``x y z nx ny nz`` (C = 6) instead of ``x y z`` (C = 3).
        transform: callable on the item dict.
        download: fetch the data into ``root`` with :func:`pointea.data.download.download_dataset`
            when no layout is found.
        val_fraction: share of each class held out for ``"val"``.
        split_seed: seed of the validation holdout.
        val_split: ``"stratified"`` (a random share of each class) or ``"grouped"`` (the same
            share taken in whole groups of near-identical shapes, so no val shape has a twin in
            ``"train"``; see :mod:`pointea.data.dedup`). Shapes are compared on their first 1024
            points whatever ``num_points`` is; the groups are computed once and cached.
        cache_dir: folder for processed caches (default: ``$POINTEA_CACHE`` or ``~/.cache/pointea``).
        layout: ``"hdf5"``, ``"folder"`` or ``"text"``; None picks the first found in that order.

    Attributes:
        classes, num_classes, in_channels, layout, points ``(M, num_points, C)`` float32,
        labels ``(M,)`` int64, files (source id of each shape).

    Items:
        ``{"points": (num_points, C) float32, "label": int64 scalar}`` after ``transform``.

    Raises:
        FileNotFoundError: no layout under ``root`` or the requested split is missing.
        ValueError: a bad option or a malformed source file (the message names the file).
    """

    variant = 40
    official_classes = MODELNET40_CLASSES


class ModelNet10(_ModelNet):
    """ModelNet10 (4,899 shapes, 10 classes); arguments as :class:`ModelNet40`.

    Layouts: ``ModelNet10/<class>/{train,test}/...``, the ModelNet10 lists of
    ``modelnet40_normal_resampled/`` (``modelnet10_*.txt``) or ``modelnet10_ply_hdf5_2048/``.
    """

    variant = 10
    official_classes = MODELNET10_CLASSES
