"""Datasets, transforms and point cloud file I/O.

The dataset classes are imported on first use, so ``pointea.data.io`` (file readers and the point
and label checks that the renderers use) loads without torch.
"""

from importlib import import_module
from typing import Any

from pointea.data.io import read_labeled_point_cloud, read_point_cloud, write_point_cloud

_LAZY = {
    "ModelNet10": "pointea.data.modelnet",
    "ModelNet40": "pointea.data.modelnet",
    "SCANOBJECTNN_CLASSES": "pointea.data.scanobjectnn",
    "SHAPENETPART_CATEGORIES": "pointea.data.shapenetpart",
    "SHAPENETPART_CATEGORY_PARTS": "pointea.data.shapenetpart",
    "ScanObjectNN": "pointea.data.scanobjectnn",
    "ShapeNetPart": "pointea.data.shapenetpart",
    "SyntheticShapes": "pointea.data.synthetic",
}

__all__ = [*_LAZY, "read_labeled_point_cloud", "read_point_cloud", "write_point_cloud"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pointea.data' has no attribute {name!r}")
