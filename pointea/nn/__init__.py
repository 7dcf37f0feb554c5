"""Network building blocks: attention layers, the point encoder and the task heads."""

from pointea.nn.attention import (
    AttentionBlock,
    ExternalAttention,
    OffsetAttention,
    SelfAttention,
    SimplifiedSelfAttention,
)
from pointea.nn.encoder import PointEncoder
from pointea.nn.heads import ClassificationHead, PartSegmentationHead

__all__ = [
    "AttentionBlock",
    "ClassificationHead",
    "ExternalAttention",
    "OffsetAttention",
    "PartSegmentationHead",
    "PointEncoder",
    "SelfAttention",
    "SimplifiedSelfAttention",
]
