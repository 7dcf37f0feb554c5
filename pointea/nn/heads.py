"""Task heads that turn encoder features into logits."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointea.nn.encoder import MaskedBatchNorm


class ClassificationHead(nn.Module):
    """MLP on the global feature: (Linear -> BatchNorm -> ReLU -> Dropout) per hidden width -> Linear.

    Args:
        in_dim: global feature channels.
        num_classes: number of classes K.
        hidden_dims: widths of the hidden layers.
        dropout: dropout probability after every hidden layer.

    Shapes:
        x (B, in_dim) -> logits (B, K)
    """

    def __init__(self, in_dim: int, num_classes: int, hidden_dims: Sequence[int] = (256,), dropout: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        for dim in hidden_dims:
            layers += [nn.Linear(in_dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(), nn.Dropout(dropout)]
            in_dim = dim
        layers.append(nn.Linear(in_dim, num_classes))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


class PartSegmentationHead(nn.Module):
    """Per-point part classifier: per-point features ⊕ global feature ⊕ category embedding -> MLP.

    The first Linear of the MLP acts on the concatenation; it is computed as a per-point term plus
    a per-cloud term broadcast over the points, which gives the same result without materialising
    the (B, N, point_dim + global_dim + category_dim) tensor.

    Args:
        point_dim: per-point feature channels.
        global_dim: global feature channels.
        category_parts: global part ids of each object category (category c may only take the
            parts ``category_parts[c]``).
        num_parts: total number of parts P.
        category_dim: width of the learned category embedding.
        hidden_dims: widths of the hidden layers (at least one).
        dropout: dropout probability after the first hidden layer.

    Shapes:
        point_feats (B, N, point_dim), global_feats (B, global_dim), category (B,) int64,
        mask (B, N) -> logits (B, N, P)
    """

    def __init__(
        self,
        point_dim: int,
        global_dim: int,
        category_parts: Sequence[Sequence[int]],
        num_parts: int,
        category_dim: int = 64,
        hidden_dims: Sequence[int] = (256, 128),
        dropout: float = 0.5,
    ):
        super().__init__()
        if len(hidden_dims) < 1:
            raise ValueError("PartSegmentationHead needs at least one hidden layer")
        self.num_categories = len(category_parts)
        self.category_embedding = nn.Embedding(self.num_categories, category_dim)
        self.point_linear = nn.Linear(point_dim, hidden_dims[0], bias=False)
        self.cloud_linear = nn.Linear(global_dim + category_dim, hidden_dims[0], bias=False)
        self.first_norm = MaskedBatchNorm(hidden_dims[0])
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        for in_dim, dim in zip(hidden_dims[:-1], hidden_dims[1:]):
            self.linears.append(nn.Linear(in_dim, dim, bias=False))
            self.norms.append(MaskedBatchNorm(dim))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_dims[-1], num_parts)
        part_mask = torch.zeros(self.num_categories, num_parts, dtype=torch.bool)
        for category, parts in enumerate(category_parts):
            part_mask[category, list(parts)] = True
        self.register_buffer("part_mask", part_mask, persistent=False)  # (categories, P)

    def forward(
        self, point_feats: Tensor, global_feats: Tensor, category: Tensor, mask: Optional[Tensor] = None
    ) -> Tensor:
        cloud = torch.cat([global_feats, self.category_embedding(category)], dim=-1)  # (B, G + E)
        x = self.point_linear(point_feats) + self.cloud_linear(cloud).unsqueeze(1)  # (B, N, H0)
        x = self.dropout(F.relu(self.first_norm(x, mask)))
        for linear, norm in zip(self.linears, self.norms):
            x = F.relu(norm(linear(x), mask))
        return self.classifier(x)

    def restrict_to_category(self, logits: Tensor, category: Tensor) -> Tensor:
        """Set the logits of parts outside each cloud's category to -inf.

        Shapes:
            logits (B, N, P), category (B,) int64 -> (B, N, P)
        """
        allowed = self.part_mask[category].unsqueeze(1)  # (B, 1, P)
        return logits.masked_fill(~allowed, float("-inf"))
