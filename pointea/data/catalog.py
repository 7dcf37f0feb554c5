"""The dataset catalog: every dataset pointea knows, one :class:`DatasetSpec` entry each.

Config validation, the CLI (``choices=`` and help), training, evaluation, orientation and
``pointea download`` all read :data:`DATASETS`; adding a dataset is one module plus one entry
here. Importing this module is cheap (no torch): dataset classes are named by import path and
loaded only when a dataset is built.

Dataset protocol (what the engine relies on)
--------------------------------------------
Constructor, torchvision style::

    Cls(root, split=..., num_points=..., use_normals=..., transform=..., **spec.options(data_config, split))

``root`` is passed first, positionally, only when ``spec.needs_root``; ``split`` is one of
``spec.splits``; ``num_points`` is an int (points per item) or None (whole clouds, only when
``spec.default_num_points`` is None); ``use_normals`` selects C = 6 (xyz + normals) over C = 3;
``transform`` is a callable on the item dict (the engine passes a unit-sphere normalization), or
None. ``len(dataset)`` is the number of clouds. Every dataset exposes ``in_channels`` (C).

Classification datasets (``"classification" in spec.tasks``):

- ``classes: List[str]`` (label order), ``num_classes: int``;
- items ``{"points": (N, C) float32, "label": int64 scalar}``.

Segmentation datasets (``"segmentation" in spec.tasks``):

- ``categories: List[str]`` (category ids index it), ``num_classes == len(categories)``;
- ``category_parts: List[List[int]]``: the global part ids of each category (the category ->
  parts table; parts are numbered globally, 0 .. num_parts - 1, and a category's predictions are
  restricted to its own parts). The engine takes this table from the dataset, builds the model
  with it and saves it in the checkpoint, so any table works, not only ShapeNetPart's;
- ``num_parts: int``, ``part_names: List[str]`` (global part id -> name, e.g. ``"chair/back"``);
- optional ``part_values: List[int]``: the label value each part id stands for in the source
  files (part id -> value, e.g. LAS classes ``[2, 5, 6]``); without it the values are the ids.
  Checkpoints record it, and predicted files carry the values, not the ids;
- items ``{"points": (N, C) float32, "category": int64 scalar, "parts": (N,) int64}``. Clouds may
  differ in size (they are padded and masked; padded parts are -1).

A dataset serving both tasks (``synthetic``) has both sets of attributes and item keys.

Optional: a classmethod ``find_layout(root) -> Optional[str]`` naming the on-disk layout from
file names alone (datasets whose ``up_axis`` differs by layout); and, for speed, ``points`` (M, N, C), ``labels`` (M,) (and ``parts`` (M, N) for
segmentation) as tensors: training then holds the split on the device and batches by index.

Adding a dataset::

    # pointea/data/mydata.py: class MyData(Dataset) following the protocol above
    DATASETS["mydata"] = DatasetSpec(
        name="mydata", tasks=("classification",), dataset_class="pointea.data.mydata:MyData",
        splits=("train", "val", "test"), up_axis="z", options=cache_options,
        description="my scans",
    )
"""

from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

PathLike = Union[str, os.PathLike]
DataConfig = Mapping[str, Any]  # a DataConfig as a dict (missing keys take its defaults)

TASKS = ("classification", "segmentation")


def no_options(data_config: DataConfig, split: str) -> Dict[str, Any]:
    """Dataset options of a dataset that takes none beyond the common ones."""
    return {}


def cache_options(data_config: DataConfig, split: str) -> Dict[str, Any]:
    """``cache_dir`` only (datasets that cache processed arrays)."""
    return {"cache_dir": data_config.get("cache_dir")}


def no_class_names(root: Optional[PathLike], data_config: DataConfig) -> Optional[List[str]]:
    """Class names unknown without reading the data."""
    return None


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the catalog.

    Attributes:
        name: the name used in configs and on the command line.
        tasks: the tasks it serves, ``"classification"`` and / or ``"segmentation"``.
        dataset_class: ``"module.path:ClassName"`` (imported on first use) or a callable
            constructing the dataset with the protocol's arguments.
        splits: the split names it accepts (``"val"`` included: training validates on it).
        needs_root: whether it reads a data folder (``root``); False for generated data.
        up_axis: ``"x"``, ``"y"`` or ``"z"``; or a mapping layout -> axis when layouts differ;
            or None when unknown.
        download_name: the key of :data:`pointea.data.download.SOURCES` fetching it, or None.
        options: ``(data_config, split) -> dict`` of further constructor keyword arguments
            (holdout fraction and seed, cache folder, ...), the same in training and evaluation.
        class_names: ``(root, data_config) -> list or None``: the class names, when known cheaply,
            for checks before any cloud is read (e.g. a classifier evaluated on another dataset).
        default_num_points: points per cloud when the config asks for None; None means the
            dataset can return whole clouds of varying size.
        description: one line for help texts.
        variants: the names ``data.variant`` may take (its ``options`` pass the choice on, with
            the default for None); empty for datasets without variants, which refuse one.
    """

    name: str
    tasks: Tuple[str, ...]
    dataset_class: Union[str, Callable[..., Any]]
    splits: Tuple[str, ...] = ("train", "val", "test")
    needs_root: bool = True
    up_axis: Union[None, str, Mapping[str, str]] = None
    download_name: Optional[str] = None
    options: Callable[[DataConfig, str], Dict[str, Any]] = no_options
    class_names: Callable[[Optional[PathLike], DataConfig], Optional[List[str]]] = no_class_names
    default_num_points: Optional[int] = 1024
    description: str = ""
    variants: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [task for task in self.tasks if task not in TASKS]
        if not self.tasks or unknown:
            raise ValueError(f"dataset {self.name!r}: tasks must be some of {', '.join(TASKS)}, got {self.tasks!r}")

    def load_class(self) -> Callable[..., Any]:
        """The dataset class (or constructing function), imported now."""
        if callable(self.dataset_class):
            return self.dataset_class
        module, _, attribute = self.dataset_class.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def up_axis_for(self, layout: Optional[str] = None) -> Optional[str]:
        """The up axis in ``layout`` (needed only when the layouts differ; None if not given)."""
        if isinstance(self.up_axis, Mapping):
            return self.up_axis.get(layout) if layout is not None else None
        return self.up_axis

    def check_variant(self, variant: Optional[str]) -> None:
        """Refuse a ``data.variant`` the dataset does not have.

        Raises:
            ValueError: a variant on a dataset without variants, or an unknown one (close names
                suggested, the valid ones listed).
        """
        if variant is None:
            return
        if not self.variants:
            raise ValueError(f"dataset {self.name!r} has no variants, got data.variant={variant!r}; drop it")
        if variant not in self.variants:
            hint = _did_you_mean(variant, self.variants)
            raise ValueError(f"unknown {self.name} variant {variant!r}{hint} (valid: {', '.join(self.variants)})")

    def find_layout(self, root: PathLike) -> Optional[str]:
        """The layout the train split would be read from under ``root`` (file names only), for
        datasets whose class has a ``find_layout(root)`` classmethod; else None."""
        finder = getattr(self.load_class(), "find_layout", None)
        return finder(root) if finder is not None else None


# --------------------------------------------------------------------------- entries


def _synthetic_options(data_config: DataConfig, split: str) -> Dict[str, Any]:
    options: Dict[str, Any] = {"seed": data_config.get("split_seed", 0)}
    num_samples = data_config.get("num_samples")
    if num_samples is not None:  # val and test sets scale with the train size
        options["num_samples"] = num_samples if split == "train" else max(1, num_samples // 4)
    return options


def _synthetic_classes(root: Optional[PathLike], data_config: DataConfig) -> List[str]:
    from pointea.data.synthetic import CATEGORIES

    return list(CATEGORIES)


def _modelnet_options(data_config: DataConfig, split: str) -> Dict[str, Any]:
    return {
        "cache_dir": data_config.get("cache_dir"),
        "val_fraction": data_config.get("val_fraction", 0.1),
        "split_seed": data_config.get("split_seed", 0),
        "val_split": data_config.get("val_split", "stratified"),
    }


def _modelnet40_classes(root: Optional[PathLike], data_config: DataConfig) -> List[str]:
    # ModelNet's labels are its official class list (the folder layout indexes it; the text and
    # HDF5 layouts must list as many names, which evaluation then maps by name again).
    from pointea.data.modelnet import MODELNET40_CLASSES

    return list(MODELNET40_CLASSES)


def _modelnet10_classes(root: Optional[PathLike], data_config: DataConfig) -> List[str]:
    from pointea.data.modelnet import MODELNET10_CLASSES

    return list(MODELNET10_CLASSES)


def _shapenetpart_options(data_config: DataConfig, split: str) -> Dict[str, Any]:
    return {
        "cache_dir": data_config.get("cache_dir"),
        "categories": data_config.get("categories"),
        "seed": data_config.get("split_seed", 0),
    }


def _scanobjectnn_options(data_config: DataConfig, split: str) -> Dict[str, Any]:
    # no cache_dir: the HDF5 arrays are read directly
    return {"variant": data_config.get("variant") or _SCANOBJECTNN_DEFAULT,
            "val_fraction": data_config.get("val_fraction", 0.1), "split_seed": data_config.get("split_seed", 0)}


def _scanobjectnn_classes(root: Optional[PathLike], data_config: DataConfig) -> List[str]:
    from pointea.data.scanobjectnn import SCANOBJECTNN_CLASSES

    return list(SCANOBJECTNN_CLASSES)


def _folder_options(data_config: DataConfig, split: str) -> Dict[str, Any]:
    return {
        "cache_dir": data_config.get("cache_dir"),
        "val_fraction": data_config.get("val_fraction", 0.1),
        "split_seed": data_config.get("split_seed", 0),
    }


def _folder_classes(root: Optional[PathLike], data_config: DataConfig) -> Optional[List[str]]:
    # the class folder names, from file names alone (the dataset checks them when it reads)
    from pointea.data.folder import folder_class_names

    return folder_class_names(root) if root is not None else None


# ModelNet's original archive (folder layout, .off meshes) stands on z; the resampled text and the
# PointNet HDF5 exports stand on y.
_MODELNET_UP = {"folder": "z", "text": "y", "hdf5": "y"}
# the variants of pointea.data.scanobjectnn.VARIANTS (a test keeps the two equal), named as papers
# name them; PB_T50_RS, the hardest, is the one papers report
_SCANOBJECTNN_VARIANTS = ("obj_bg", "obj_only", "pb_t25", "pb_t25_r", "pb_t50_r", "pb_t50_rs")
_SCANOBJECTNN_DEFAULT = "pb_t50_rs"
_REAL_SPLITS = ("train", "val", "trainval", "test")

DATASETS: Dict[str, DatasetSpec] = {
    "synthetic": DatasetSpec(
        name="synthetic", tasks=("classification", "segmentation"),
        dataset_class="pointea.data.synthetic:SyntheticShapes", needs_root=False, up_axis="y",
        options=_synthetic_options, class_names=_synthetic_classes,
        description="procedural shapes with class and part labels, generated in memory",
    ),
    "modelnet40": DatasetSpec(
        name="modelnet40", tasks=("classification",), dataset_class="pointea.data.modelnet:ModelNet40",
        splits=_REAL_SPLITS, up_axis=_MODELNET_UP, download_name="modelnet40", options=_modelnet_options,
        class_names=_modelnet40_classes,
        description="ModelNet40 shape classification (40 classes)",
    ),
    "modelnet10": DatasetSpec(
        name="modelnet10", tasks=("classification",), dataset_class="pointea.data.modelnet:ModelNet10",
        splits=_REAL_SPLITS, up_axis=_MODELNET_UP, download_name="modelnet10", options=_modelnet_options,
        class_names=_modelnet10_classes,
        description="ModelNet10 shape classification (10 classes)",
    ),
    "shapenetpart": DatasetSpec(
        name="shapenetpart", tasks=("segmentation",), dataset_class="pointea.data.shapenetpart:ShapeNetPart",
        splits=_REAL_SPLITS, up_axis="y", download_name="shapenetpart", options=_shapenetpart_options,
        default_num_points=None,
        description="ShapeNetPart part segmentation (16 categories, 50 parts)",
    ),
    # y-up (OpenPoints' gravity_dim = 1); released on request, so download only explains
    # (pointea.data.download.ON_REQUEST); data.variant picks the file, pb_t50_rs by default
    "scanobjectnn": DatasetSpec(
        name="scanobjectnn", tasks=("classification",), dataset_class="pointea.data.scanobjectnn:ScanObjectNN",
        splits=_REAL_SPLITS, up_axis="y", download_name="scanobjectnn", options=_scanobjectnn_options,
        class_names=_scanobjectnn_classes, variants=_SCANOBJECTNN_VARIANTS,
        description="ScanObjectNN real-scan classification (15 classes, data.variant, default PB_T50_RS)",
    ),
    "folder-cls": DatasetSpec(
        name="folder-cls", tasks=("classification",), dataset_class="pointea.data.folder:FolderClassification",
        splits=_REAL_SPLITS, options=_folder_options, class_names=_folder_classes,
        description="your own clouds, one folder per class: DIR/<class>/<files> (check with pointea data DIR)",
    ),
    "folder-seg": DatasetSpec(
        name="folder-seg", tasks=("segmentation",), dataset_class="pointea.data.folder:FolderSegmentation",
        splits=_REAL_SPLITS, options=_folder_options,
        description="your own clouds with per-point labels: DIR/{train,test}/<files> (check with pointea data DIR)",
    ),
}


# --------------------------------------------------------------------------- lookups


def dataset_names(task: Optional[str] = None) -> List[str]:
    """The catalog's dataset names, or those serving ``task``."""
    return [name for name, spec in DATASETS.items() if task is None or task in spec.tasks]


def get_spec(name: str) -> DatasetSpec:
    """The catalog entry of dataset ``name``.

    Raises:
        ValueError: unknown name; the message suggests close names and lists the valid ones.
    """
    spec = DATASETS.get(name)
    if spec is not None:
        return spec
    raise ValueError(f"unknown dataset {name!r}{_did_you_mean(name, DATASETS)} (valid: {', '.join(DATASETS)})")


def _did_you_mean(value: Any, choices: Sequence[str]) -> str:
    """``"; did you mean 'a' or 'b'?"`` with the names close to ``value``, or ``""``.

    (:func:`pointea.config.choices_hint` words config errors; the catalog cannot import the config,
    which imports it.)
    """
    close = difflib.get_close_matches(str(value), list(choices), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(map(repr, close))}?" if close else ""


def build_dataset(
    name: str,
    root: Optional[PathLike],
    split: str,
    data_config: Optional[DataConfig] = None,
    transform: Optional[Callable[[dict], dict]] = None,
    **overrides: Any,
) -> Any:
    """Construct dataset ``name`` as a run's ``data`` config describes it.

    Args:
        name: a catalog name.
        root: the data folder (ignored, and may be None, for datasets without one).
        split: one of the entry's ``splits``.
        data_config: a ``DataConfig`` as a dict (``num_points``, ``use_normals``, the entry's
            options such as ``split_seed``); missing keys take the defaults.
        transform: callable applied to each item.
        **overrides: constructor keyword arguments replacing the derived ones (e.g. the train
            split's ``num_points=data.resample_from``, or ``cache_dir``).

    Raises:
        ValueError: unknown name, split or variant (``data.variant``), or a dataset that needs
            a root without one.
    """
    spec = get_spec(name)
    data_config = data_config or {}
    if split not in spec.splits:
        raise ValueError(f"dataset {name!r} has no split {split!r}; valid: {', '.join(spec.splits)}")
    spec.check_variant(data_config.get("variant"))
    kwargs: Dict[str, Any] = {
        "split": split,
        "num_points": data_config.get("num_points", spec.default_num_points),
        "use_normals": bool(data_config.get("use_normals", False)),
        "transform": transform,
        **spec.options(data_config, split),
        **overrides,
    }
    if kwargs["num_points"] is None:
        kwargs["num_points"] = spec.default_num_points
    cls = spec.load_class()
    if not spec.needs_root:
        return cls(**kwargs)
    if root is None or not str(root).strip():
        raise ValueError(f"dataset {name!r} needs a data root (--data-root DIR)")
    return cls(root, **kwargs)
