"""Model presets: a settings dataclass, the two model classes and ``build_model``.

Example::

    from pointea.models import build_model
    model = build_model("pointea-cls", num_classes=40)
    logits = model(points)                     # points (B, N, 3) -> (B, 40)
    seg = build_model("pointea-partseg")
    part_logits = seg(points, category)        # category (B,) -> (B, N, 50)
    mask = ...                                 # optional (B, N) bool, True = real point

The ``ModelConfig`` of a model (``model.config``) is stored in every checkpoint with
``model_config_to_dict`` and read back with ``model_config_from_dict``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from pointea.config import choices_hint
from pointea.data.shapenetpart import SHAPENETPART_CATEGORY_PARTS
from pointea.nn.attention import ATTENTION_TYPES
from pointea.nn.encoder import POOLING_TYPES, PointEncoder
from pointea.nn.heads import ClassificationHead, PartSegmentationHead

TASKS = ("classification", "segmentation")

_TUPLE_FIELDS = ("embed_dims", "stage_dims", "stage_samples", "num_neighbors", "head_dims")

# ModelConfig fields that take one of a few names; config loading checks overrides against them
MODEL_CHOICES: Dict[str, Tuple[str, ...]] = {
    "task": TASKS,
    "attention": ATTENTION_TYPES,
    "pooling": POOLING_TYPES,
    "ea_norm": ("double", "softmax"),
}


@dataclass
class ModelConfig:
    """Settings of a pointea model (classification or part segmentation).

    The encoder settings mirror ``pointea.nn.encoder.PointEncoder``; see there for details.
    """

    task: str = "classification"  # "classification" or "segmentation"
    # Classification: number of classes. Segmentation: number of object categories, derived from
    # category_parts when left as None.
    num_classes: Optional[int] = None
    in_channels: int = 3  # 3 = xyz, 6 = xyz + normals
    descriptor_neighbors: int = 0  # k of the local shape descriptor appended to the input; 0 = none
    # Segmentation only: total number of parts (derived from category_parts when None) and the
    # global part ids of each category (default: ShapeNetPart's 16 categories, 50 parts).
    num_parts: Optional[int] = None
    category_parts: Optional[List[List[int]]] = None
    embed_dims: Tuple[int, ...] = (64, 64)
    stage_dims: Tuple[int, ...] = (128, 256)
    stage_samples: Tuple[int, ...] = (512, 256)  # farthest point sampling per stage; 0 = all points
    num_neighbors: Tuple[int, ...] = (20, 20)
    edge_mlp: bool = False  # stages max-pool after both layers per neighbour (EdgeConv-style)
    attention: str = "ea"  # one of ATTENTION_TYPES
    num_blocks: int = 4
    memory_size: int = 64  # external attention slots S (EANet's value)
    num_heads: int = 4  # heads of "sa" and "mhea"
    ffn_ratio: float = 0.0  # feed-forward width / block width; PCT's blocks have none
    ea_norm: str = "double"  # "double" (EANet) or "softmax" (ablation)
    fuse_dim: int = 512  # Linear over the concatenated block outputs; 0 = none
    pooling: str = "maxmean"
    head_dims: Tuple[int, ...] = (256,)
    dropout: float = 0.5
    category_dim: int = 64  # segmentation: width of the learned category embedding

    def __post_init__(self) -> None:
        for name in _TUPLE_FIELDS:
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        for name, choices in MODEL_CHOICES.items():
            _check_choice(name, getattr(self, name), choices)
        if self.in_channels < 3:
            raise ValueError(f"in_channels must be >= 3 (xyz first), got {self.in_channels}")
        if not (len(self.stage_dims) == len(self.stage_samples) == len(self.num_neighbors)):
            raise ValueError(
                "stage_dims, stage_samples and num_neighbors need one entry per stage, got "
                f"{self.stage_dims}, {self.stage_samples}, {self.num_neighbors}"
            )
        if self.task == "classification":
            if self.num_classes is None or self.num_classes < 1:
                raise ValueError(f"classification needs num_classes >= 1, got {self.num_classes}")
            return
        if any(s > 0 for s in self.stage_samples):
            raise ValueError(
                f"segmentation predicts every point, so stage_samples must be all 0, got {self.stage_samples}"
            )
        if self.category_parts is None:
            self.category_parts = [list(p) for p in SHAPENETPART_CATEGORY_PARTS]
        self.category_parts = [[int(p) for p in parts] for parts in self.category_parts]
        if not self.category_parts or any(not parts for parts in self.category_parts):
            raise ValueError(f"category_parts needs a non-empty part list per category, got {self.category_parts}")
        max_part = max(max(parts) for parts in self.category_parts)
        if min(min(parts) for parts in self.category_parts) < 0:
            raise ValueError(f"category_parts holds negative part ids: {self.category_parts}")
        if self.num_parts is None:
            self.num_parts = max_part + 1
        elif self.num_parts <= max_part:
            raise ValueError(f"num_parts={self.num_parts} but category_parts uses part id {max_part}")
        if self.num_classes is None:
            self.num_classes = len(self.category_parts)
        elif self.num_classes != len(self.category_parts):
            raise ValueError(
                f"num_classes={self.num_classes} but category_parts lists {len(self.category_parts)} categories"
            )


def _check_choice(name: str, value: str, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}{choices_hint(value, choices)}")


def model_config_to_dict(config: ModelConfig) -> Dict[str, Any]:
    """Plain dict (lists, no tuples) of a config, for checkpoints and YAML."""
    out = dataclasses.asdict(config)
    for name in _TUPLE_FIELDS:
        out[name] = list(out[name])
    return out


def model_config_from_dict(data: Dict[str, Any]) -> ModelConfig:
    """Inverse of ``model_config_to_dict``; unknown keys raise ValueError naming the valid ones."""
    valid = [f.name for f in dataclasses.fields(ModelConfig)]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ValueError(f"unknown model config keys {unknown}; valid: {', '.join(valid)}")
    return ModelConfig(**data)


def _encoder_from_config(config: ModelConfig) -> PointEncoder:
    return PointEncoder(
        in_channels=config.in_channels,
        descriptor_neighbors=config.descriptor_neighbors,
        embed_dims=config.embed_dims,
        stage_dims=config.stage_dims,
        stage_samples=config.stage_samples,
        num_neighbors=config.num_neighbors,
        edge_mlp=config.edge_mlp,
        attention=config.attention,
        num_blocks=config.num_blocks,
        memory_size=config.memory_size,
        num_heads=config.num_heads,
        ffn_ratio=config.ffn_ratio,
        ea_norm=config.ea_norm,
        fuse_dim=config.fuse_dim,
        pooling=config.pooling,
    )


class ClassificationModel(nn.Module):
    """Point cloud classifier: ``PointEncoder`` + ``ClassificationHead`` on the global feature.

    Shapes:
        points (B, N, C), mask (B, N) bool (True = real point) -> logits (B, num_classes)
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.task != "classification":
            raise ValueError(f"ClassificationModel needs task='classification', got {config.task!r}")
        self.config = config
        self.encoder = _encoder_from_config(config)
        self.head = ClassificationHead(self.encoder.global_dim, config.num_classes, config.head_dims, config.dropout)

    def forward_features(self, points: Tensor, mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Per-point (or per-centre) and global features of the encoder."""
        return self.encoder(points, mask)

    def forward(self, points: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        _, global_feats = self.encoder(points, mask)
        return self.head(global_feats)


class SegmentationModel(nn.Module):
    """Part segmentation: ``PointEncoder`` + ``PartSegmentationHead`` (per point ⊕ global ⊕ category).

    Shapes:
        points (B, N, C), category (B,) int64, mask (B, N) bool -> logits (B, N, num_parts)
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.task != "segmentation":
            raise ValueError(f"SegmentationModel needs task='segmentation', got {config.task!r}")
        self.config = config
        self.num_categories = len(config.category_parts)
        self.encoder = _encoder_from_config(config)
        self.head = PartSegmentationHead(
            self.encoder.point_dim,
            self.encoder.global_dim,
            config.category_parts,
            config.num_parts,
            config.category_dim,
            config.head_dims,
            config.dropout,
        )

    def forward_features(self, points: Tensor, mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Per-point and global features of the encoder."""
        return self.encoder(points, mask)

    def forward(self, points: Tensor, category: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        if not (torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling()):
            if category.numel() > 0 and (int(category.min()) < 0 or int(category.max()) >= self.num_categories):
                raise ValueError(
                    f"category ids must lie in [0, {self.num_categories}), got {category.tolist()}"
                )
        point_feats, global_feats = self.encoder(points, mask)
        return self.head(point_feats, global_feats, category, mask)

    def restrict_to_category(self, logits: Tensor, category: Tensor) -> Tensor:
        """Set the logits of parts that do not belong to each cloud's category to -inf.

        Shapes:
            logits (B, N, P), category (B,) int64 -> (B, N, P)
        """
        return self.head.restrict_to_category(logits, category)


# PointNet without the transform nets: a shared per-point MLP, max pooling, no attention.
_POINTNET = dict(
    stage_dims=(), stage_samples=(), num_neighbors=(), attention="none", num_blocks=0, fuse_dim=0,
    pooling="max", dropout=0.3,
)

PRESETS: Dict[str, ModelConfig] = {
    # Neighbour embedding (FPS 1024 -> 512 -> 256 centres, kNN) + 4 external attention blocks.
    # The attention always sees 256 centres, so its softmax over the points does not drift when
    # a cloud has more or fewer points than the 1,024 it was trained with.
    "pointea-cls": ModelConfig(num_classes=40),
    # The same encoder with other attention layers, for the attention comparison.
    "pointea-cls-mhea": ModelConfig(num_classes=40, attention="mhea"),
    "pointea-cls-sa": ModelConfig(num_classes=40, attention="sa"),
    "pointea-cls-ssa": ModelConfig(num_classes=40, attention="ssa"),
    "pointea-cls-oa": ModelConfig(num_classes=40, attention="oa"),
    "pointea-cls-none": ModelConfig(num_classes=40, attention="none"),
    # Full-resolution neighbour embedding (no sampling) + 4 external attention blocks of 128.
    "pointea-partseg": ModelConfig(
        task="segmentation",
        stage_dims=(128,),
        stage_samples=(0,),
        num_neighbors=(16,),
        fuse_dim=256,
        head_dims=(256, 128),
    ),
    # PointNet: shared MLP 64-64-64-128-1024, max pool, MLP 512-256 (segmentation: 64-128-128-512-1024).
    "pointnet-cls": ModelConfig(num_classes=40, embed_dims=(64, 64, 64, 128, 1024), head_dims=(512, 256), **_POINTNET),
    "pointnet-partseg": ModelConfig(
        task="segmentation", embed_dims=(64, 128, 128, 512, 1024), head_dims=(256, 128), **_POINTNET
    ),
}


def build_model(name_or_config: Union[str, ModelConfig], **overrides: Any) -> nn.Module:
    """Build a model from a preset name or a ``ModelConfig``, with field overrides.

    Args:
        name_or_config: a key of ``PRESETS`` or a ``ModelConfig``.
        **overrides: ``ModelConfig`` fields to replace, e.g. ``num_classes=10, in_channels=6``.
            Overriding ``category_parts`` re-derives ``num_classes`` and ``num_parts`` unless
            they are given too.

    Returns:
        a ``ClassificationModel`` or ``SegmentationModel`` whose ``.config`` is the final config.

    Raises:
        ValueError: unknown preset name, unknown field or invalid value.
    """
    if isinstance(name_or_config, ModelConfig):
        config = name_or_config
    elif name_or_config in PRESETS:
        config = PRESETS[name_or_config]
    else:
        raise ValueError(f"unknown model preset {name_or_config!r}{choices_hint(name_or_config, PRESETS)}")
    valid = [f.name for f in dataclasses.fields(ModelConfig)]
    for name in overrides:
        if name not in valid:
            raise ValueError(f"unknown model config field {name!r}{choices_hint(name, valid)}")
    if "category_parts" in overrides:
        overrides.setdefault("num_classes", None)
        overrides.setdefault("num_parts", None)
    config = dataclasses.replace(config, **overrides)
    if config.task == "classification":
        return ClassificationModel(config)
    return SegmentationModel(config)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def example_inputs(model: nn.Module, num_points: int = 1024, batch_size: int = 1) -> Tuple[Tensor, ...]:
    """Random inputs matching ``model``'s forward (points, and category for segmentation)."""
    config: ModelConfig = model.config
    device = next(model.parameters()).device
    points = torch.randn(batch_size, num_points, config.in_channels, device=device)
    if config.task == "segmentation":
        category = torch.zeros(batch_size, dtype=torch.long, device=device)
        return points, category
    return (points,)


def count_flops(model: nn.Module, num_points: int = 1024) -> int:
    """FLOPs of one forward pass on one cloud, counted by ``torch.utils.flop_counter``.

    The counter counts matrix products (a multiply-add is 2 FLOPs), convolutions and attention
    kernels; element-wise work, gathers and sorting are not counted.
    """
    return count_module_flops(model, *example_inputs(model, num_points))


def _sdpa_flops(query_shape, key_shape, value_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
    """FLOPs of scaled dot-product attention: Q K^T and A V, 2 per multiply-add."""
    batch, heads, queries, channels = query_shape
    keys, value_channels = key_shape[2], value_shape[3]
    return 2 * batch * heads * queries * keys * (channels + value_channels)


def count_module_flops(module: nn.Module, *inputs: Tensor) -> int:
    """FLOPs of ``module(*inputs)`` in eval mode without autograd (see :func:`count_flops`).

    torch's counter has formulas for the CUDA attention kernels but not for the fused CPU kernel
    that ``scaled_dot_product_attention`` runs here; it is added, so self-attention is counted
    on every device.
    """
    from torch.utils.flop_counter import FlopCounterMode

    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    custom = {cpu_sdpa: _sdpa_flops} if cpu_sdpa is not None else {}
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=custom) as counter:
            module(*inputs)
    finally:
        module.train(was_training)
    return int(counter.get_total_flops())
