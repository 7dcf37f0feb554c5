"""ScanObjectNN (Uy et al., ICCV 2019): object classification on real indoor scans, 15 classes.

The authors release the data on request only (a terms-of-use form, see
:data:`pointea.data.download.ON_REQUEST`). Their ``h5_files.zip`` unpacks to ``h5_files/`` with one
folder per split protocol; pointea reads the main split::

    h5_files/main_split/        objects with background (OBJ_BG and the perturbed PB_* variants)
    h5_files/main_split_nobg/   objects only (OBJ_ONLY)

Each folder holds ``training_objectdataset<suffix>.h5`` and ``test_objectdataset<suffix>.h5`` with
datasets ``data`` (M, 2048, 3) float32, ``label`` (M,) and ``mask`` (M, 2048): the per-point
object / background indicator (the official ``convert_to_binary_mask`` in hkust-vgd/scanobjectnn,
``data_utils.py``, treats -1 as background). Variants, named as papers name them:

========== ====================== =============================================== ===============
variant    folder                 suffix                                          shapes train/test
========== ====================== =============================================== ===============
obj_bg     main_split             (none)                                          2,309 / 581
obj_only   main_split_nobg        (none)                                          2,309 / 581
pb_t25     main_split             ``_augmented25_norot``                          perturbed copies
pb_t25_r   main_split             ``_augmented25rot``                             perturbed copies
pb_t50_r   main_split             ``_augmentedrot``                               perturbed copies
pb_t50_rs  main_split             ``_augmentedrot_scale75`` (the hardest)         11,416 / 2,882
========== ====================== =============================================== ===============

``root`` may be the folder holding ``main_split/`` or any folder above it on the path
``ScanObjectNN/h5_files/``: ``DIR``, ``DIR/ScanObjectNN``, ``DIR/ScanObjectNN/h5_files`` (the
official archive's layout, as PointNeXt expects it), ``DIR/ScanObjectNN/main_split`` ... all work;
``root`` may also be ``main_split/`` itself.

The clouds stand on **y** (OpenPoints' ``ScanObjectNNHardest`` sets ``gravity_dim = 1`` and
PointNeXt's recipe rotates about y). ``num_points`` keeps the **first** points of each stored
cloud, as PointMLP's loader does (``classification_ScanObjectNN/ScanObjectNN.py``); the release
drew the 2,048 stored points of each object at random. The HDF5 files are read directly; nothing
is cached.

Splits: ``trainval`` is the official training file, ``test`` the official test file, ``val`` a
deterministic class-stratified holdout of ``trainval`` and ``train`` the rest. The PB_* files hold
several perturbed copies of each scan, so a scan's copies can fall on both sides of ``val``:
``val`` then measures less generalization than ``test`` does (the files do not say which rows
are copies of the same scan).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from pointea.data.layout import (
    check_dataset_arguments,
    check_labels,
    check_shape_points,
    read_hdf5_arrays,
    stratified_holdout,
)

PathLike = Union[str, os.PathLike]
Item = Dict[str, torch.Tensor]
Transform = Callable[[Item], Item]

# Label order of the release. Checked against the official class mapping to ModelNet40
# (hkust-vgd/scanobjectnn, mapping2.py: ModelNet bed 2 -> 10, chair 8 -> 4, desk 12 -> 5, door
# 13 -> 7, monitor 22 -> 6, sink 29 -> 12, sofa 30 -> 13, table 33 -> 9, toilet 35 -> 14,
# bookshelf 4 -> 8, dresser and wardrobe -> 3 cabinet) and OpenPoints' ScanObjectNNHardest.classes.
SCANOBJECTNN_CLASSES = (
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table",
    "bed", "pillow", "sink", "sofa", "toilet",
)
# variant -> (folder, file name suffix)
VARIANTS: Dict[str, Tuple[str, str]] = {
    "obj_bg": ("main_split", ""),
    "obj_only": ("main_split_nobg", ""),
    "pb_t25": ("main_split", "_augmented25_norot"),
    "pb_t25_r": ("main_split", "_augmented25rot"),
    "pb_t50_r": ("main_split", "_augmentedrot"),
    "pb_t50_rs": ("main_split", "_augmentedrot_scale75"),
}
DEFAULT_VARIANT = "pb_t50_rs"
SPLITS = ("train", "val", "trainval", "test")
# Folders above main_split/ that the root may name, nearest first (the archive unpacks to h5_files/).
ROOT_FOLDERS = ("", "h5_files", "ScanObjectNN", "ScanObjectNN/h5_files")
FILE_PREFIX = {"trainval": "training", "test": "test"}  # official split -> file name prefix
POINTS_PER_SHAPE = 2048


def variant_file(variant: str, official_split: str) -> str:
    """``main_split/training_objectdataset_augmentedrot_scale75.h5`` and the like, relative to
    the folder holding the split folders."""
    folder, suffix = VARIANTS[variant]
    return f"{folder}/{FILE_PREFIX[official_split]}_objectdataset{suffix}.h5"


def find_h5_root(root: PathLike) -> Optional[Path]:
    """The folder under (or at) ``root`` that holds ``main_split/`` or ``main_split_nobg/``; None
    when there is none. Looks at names only."""
    root = Path(root).expanduser()
    split_folders = {folder for folder, _ in VARIANTS.values()}
    bases = [root / name for name in ROOT_FOLDERS]
    if root.name in split_folders:  # the root is main_split/ itself
        bases.insert(0, root.parent)
    return next((base for base in bases if any((base / f).is_dir() for f in split_folders)), None)


class ScanObjectNN(Dataset):
    """ScanObjectNN object classification (real scans, 15 classes) from the released HDF5 files.

    Args:
        root: a folder holding ``ScanObjectNN/h5_files/main_split/`` or a folder on that path
            (see the module docstring).
        split: ``"train"``, ``"val"`` (stratified holdout of the official training file),
            ``"trainval"`` (the official training file) or ``"test"``.
        variant: ``"obj_bg"``, ``"obj_only"``, ``"pb_t25"``, ``"pb_t25_r"``, ``"pb_t50_r"`` or
            ``"pb_t50_rs"`` (the hardest, reported most often; the default).
        num_points: points per cloud, the first ``num_points`` of the 2,048 stored.
        use_normals: must be False: the release has no normals (accepted for the common dataset
            signature, so a config asking for normals fails clearly).
        transform: callable on the item dict.
        download: when the files are missing, call :func:`pointea.data.download.download_dataset`,
            which cannot fetch them (released on request) and raises with the steps to get them.
        val_fraction: share of each class held out for ``"val"``.
        split_seed: seed of the validation holdout.
        cache_dir: accepted for the common signature; unused (the HDF5 arrays are read directly).
        with_mask: add ``"mask"`` to items: the stored per-point mask values, int64, unchanged
            (background is -1 in the official code).

    Attributes:
        classes, num_classes, in_channels (3), variant, file (the HDF5 file read),
        points ``(M, num_points, 3)`` float32, labels ``(M,)`` int64, files (``"<file>:<row>"``
        per shape), masks ``(M, num_points)`` int64 when ``with_mask``.

    Items:
        ``{"points": (num_points, 3) float32, "label": int64 scalar}`` (+ ``"mask"``: (num_points,)
        int64) after ``transform``.

    Raises:
        FileNotFoundError: the variant's file is not under ``root``; says what to request and where
            to unpack it.
        ValueError: a bad option, or a malformed HDF5 file (truncated, a dataset missing, a wrong
            shape, a label outside 0..14); the message names the file.
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        variant: str = DEFAULT_VARIANT,
        num_points: int = 1024,
        use_normals: bool = False,
        transform: Optional[Transform] = None,
        download: bool = False,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        cache_dir: Optional[PathLike] = None,
        with_mask: bool = False,
    ) -> None:
        num_points = check_dataset_arguments(split, None, num_points, SPLITS, ())
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}; got {variant!r}")
        if use_normals:
            raise ValueError("ScanObjectNN has no normals (the HDF5 files hold x y z only); "
                             "use use_normals=False")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction!r}")
        if num_points > POINTS_PER_SHAPE:
            raise ValueError(f"num_points must be at most {POINTS_PER_SHAPE} (points stored per "
                             f"ScanObjectNN object); got {num_points}")
        self.root = Path(root).expanduser()
        self.split = split
        self.variant = variant
        self.num_points = num_points
        self.use_normals = False
        self.in_channels = 3
        self.transform = transform
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.cache_dir = cache_dir
        self.with_mask = with_mask
        self.classes: List[str] = list(SCANOBJECTNN_CLASSES)
        self.num_classes = len(self.classes)

        self.file = self._locate("test" if split == "test" else "trainval", download)
        points, labels, masks = self._read(self.file)
        files = [f"{self.file.name}:{i}" for i in range(len(labels))]
        if split in ("train", "val"):
            in_val = stratified_holdout(labels, val_fraction, split_seed)
            keep = in_val if split == "val" else ~in_val
            if not keep.any():
                raise ValueError(f"ScanObjectNN split {split!r} is empty (val_fraction={val_fraction}, "
                                 f"{len(labels)} training shapes in {self.file})")
            points, labels = points[keep], labels[keep]
            masks = masks[keep] if masks is not None else None
            files = [name for name, k in zip(files, keep) if k]
        self.points = torch.from_numpy(np.ascontiguousarray(points))  # (M, num_points, 3)
        self.labels = torch.from_numpy(labels)  # (M,)
        # (M, num_points) stored mask values, or None
        self.masks = torch.from_numpy(np.ascontiguousarray(masks)) if masks is not None else None
        self.files: List[str] = files

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Item:
        item = {"points": self.points[index], "label": self.labels[index]}
        if self.masks is not None:
            item["mask"] = self.masks[index]
        return self.transform(item) if self.transform is not None else item

    def __repr__(self) -> str:
        return (
            f"ScanObjectNN(split={self.split!r}, variant={self.variant!r}, shapes={len(self)}, "
            f"num_points={self.num_points}, root={str(self.root)!r}, transform={self.transform!r})"
        )

    # ----------------------------------------------------------------------- reading

    def _locate(self, official_split: str, download: bool) -> Path:
        """The variant's HDF5 file of ``official_split``; raises with the steps to get it."""
        relative = variant_file(self.variant, official_split)
        base = find_h5_root(self.root)
        if base is None and download:
            from pointea.data.download import download_dataset

            download_dataset("scanobjectnn", self.root)  # raises: the data is released on request
            base = find_h5_root(self.root)
        if base is None:
            raise FileNotFoundError(self._not_found_message(relative))
        path = base / relative
        if not path.is_file():
            present = sorted(p.relative_to(base).as_posix() for p in base.glob("main_split*/*.h5"))
            raise FileNotFoundError(
                f"ScanObjectNN variant {self.variant!r} ({official_split}) not found: expected {path}; "
                f"{base} holds {', '.join(present) or 'no .h5 files'}. The full h5_files.zip holds "
                "every variant (pointea download scanobjectnn says where to request it)"
            )
        return path

    def _not_found_message(self, relative: str) -> str:
        from pointea.data.download import ON_REQUEST

        request = ON_REQUEST["scanobjectnn"]
        state = "does not exist" if not self.root.exists() else "holds no main_split/ folder"
        return (
            f"ScanObjectNN not found: {self.root} {state}. Expected "
            f"{self.root / 'ScanObjectNN' / 'h5_files' / relative} (or {relative} under the root or "
            f"under ScanObjectNN/). The files are released on request: fill in the form at "
            f"{request.request_url}, download {request.archive} and unpack it in "
            f"{self.root / request.folder}/ (`pointea download scanobjectnn --data-root {self.root}` "
            "prints these steps)."
        )

    def _read(self, path: Path) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """Points ``(M, num_points, 3)``, labels ``(M,)`` and masks ``(M, num_points)`` or None,
        checked."""
        arrays = read_hdf5_arrays(path, ("data", "label", "mask") if self.with_mask else ("data", "label"))
        data = arrays["data"]
        if data.ndim != 3 or data.shape[2] != 3:
            raise ValueError(f"{path}: 'data' has shape {data.shape}, expected (shapes, points, 3)")
        if data.shape[1] < self.num_points:
            raise ValueError(f"{path}: holds {data.shape[1]} points per shape, fewer than "
                             f"num_points={self.num_points}")
        points = check_shape_points(data[:, : self.num_points], str(path))
        labels = check_labels(arrays["label"], self.num_classes, str(path))
        if len(labels) != len(points):
            raise ValueError(f"{path}: {len(labels)} labels for {len(points)} shapes")
        if len(labels) == 0:
            raise ValueError(f"{path}: holds no shapes")
        masks = None
        if self.with_mask:
            mask = arrays["mask"]
            if mask.shape != data.shape[:2] or mask.dtype.kind not in "iuf":
                raise ValueError(f"{path}: 'mask' has shape {mask.shape} ({mask.dtype}), expected "
                                 f"{data.shape[:2]} numbers like 'data'")
            masks = mask[:, : self.num_points].astype(np.int64)
        return points, labels, masks
