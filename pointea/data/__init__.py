"""Datasets, transforms and point cloud file I/O."""

from pointea.data.io import read_labeled_point_cloud, read_point_cloud, write_point_cloud
from pointea.data.modelnet import ModelNet10, ModelNet40
from pointea.data.shapenetpart import (
    SHAPENETPART_CATEGORIES,
    SHAPENETPART_CATEGORY_PARTS,
    ShapeNetPart,
)
from pointea.data.synthetic import SyntheticShapes

__all__ = [
    "ModelNet10",
    "ModelNet40",
    "SHAPENETPART_CATEGORIES",
    "SHAPENETPART_CATEGORY_PARTS",
    "ShapeNetPart",
    "SyntheticShapes",
    "read_labeled_point_cloud",
    "read_point_cloud",
    "write_point_cloud",
]
