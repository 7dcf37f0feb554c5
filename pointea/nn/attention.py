"""Attention layers for point clouds: external attention and the baselines it is compared with.

Every layer maps features ``x`` of shape (B, N, dim) to (B, N, dim) and takes an optional padding
mask of shape (B, N) (``True`` = real point, ``False`` = padding). Padded points never change the
output of a real point.

References:
    Guo et al., "Beyond Self-attention: External Attention using Two Linear Layers for Visual
    Tasks", 2021 (external attention, EA).
    Guo et al., "PCT: Point Cloud Transformer", 2021 (offset-attention, OA).
"""

from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ATTENTION_TYPES = ("ea", "mhea", "sa", "ssa", "oa", "none")

# Added to the sum over the memory slots before dividing by it (EANet's double normalization).
DOUBLE_NORM_EPS = 1e-9
# Without autograd, external attention over more points than this runs tile by tile (see
# ExternalAttention.tile_size).
EA_TILE_SIZE = 2048


def _masked_logits(logits: Tensor, mask: Optional[Tensor], dim: int) -> Tensor:
    """Set the logits of padded points to -inf along ``dim`` (the points axis).

    ``mask`` (B, N) is broadcast over every other axis of ``logits``; ``dim`` is the axis of
    ``logits`` that indexes the points.
    """
    if mask is None:
        return logits
    shape = [mask.shape[0]] + [1] * (logits.dim() - 1)
    shape[dim] = mask.shape[1]
    return logits.masked_fill(~mask.view(shape), float("-inf"))


def _finite_or_zero(x: Tensor) -> Tensor:
    """``x`` with its -inf entries replaced by 0 (a safe shift before an exponential)."""
    return x.masked_fill(x == float("-inf"), 0.0)


def _zero_padded(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Zero the rows of padded points. Shapes: x (B, N, ...), mask (B, N)."""
    if mask is None:
        return x
    shape = list(mask.shape) + [1] * (x.dim() - 2)
    return x.masked_fill(~mask.view(shape), 0.0)


class ExternalAttention(nn.Module):
    """External attention (Guo et al. 2021): every point attends to two small learnable memories.

    For the features F of one head (N points, d channels) and memories M_k, M_v (S slots x d):

        A = Norm(F M_k^T)  # (N, S)
        out = A M_v        # (N, d)

    ``norm="double"`` (the paper's double normalization):
        1. softmax over the **points axis N** (each memory slot distributes one unit of attention
           over the points of the cloud; padded points are excluded: -inf before the softmax,
           exactly zero after it);
        2. each point's S weights are divided by their sum over the **memory axis S** (+1e-9),
           so every point's weights over the slots sum to 1.
    ``norm="softmax"``: a plain softmax over the memory axis S (the paper's ablation).

    Because step 1 runs over N, a slot's weights depend on the number of points in the cloud.

    Without autograd (inference) and with more than ``tile_size`` points, the double
    normalization runs over tiles of ``tile_size`` points with an online softmax over N (running
    per-slot maximum and sum, as in memory-efficient attention), so the (N, S) map is produced
    and consumed a tile at a time while it is in cache. The result equals the one-pass formula up
    to float rounding; time stays linear in N for clouds far larger than the cache. Training
    (autograd on) always uses the one-pass formula.

    With ``num_heads > 1`` the input is projected (dim -> dim), split into heads of d = dim /
    num_heads channels which all share the same two memories, concatenated and projected back.

    Args:
        dim: channels of the input and output.
        memory_size: number of memory slots S.
        num_heads: number of heads; must divide ``dim``.
        norm: "double" or "softmax".
        tile_size: points per tile of the inference path; 0 turns tiling off.

    Shapes:
        x (B, N, dim), mask (B, N) bool -> (B, N, dim)
    """

    def __init__(
        self, dim: int, memory_size: int = 64, num_heads: int = 1, norm: str = "double", tile_size: int = EA_TILE_SIZE
    ):
        super().__init__()
        if norm not in ("double", "softmax"):
            raise ValueError(f"unknown external attention norm {norm!r}; valid: 'double', 'softmax'")
        if num_heads < 1 or dim % num_heads != 0:
            raise ValueError(f"num_heads={num_heads} must be >= 1 and divide dim={dim}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.double_norm = norm == "double"
        self.eps = DOUBLE_NORM_EPS
        self.tile_size = tile_size
        self.mk = nn.Linear(self.head_dim, memory_size, bias=False)  # memory M_k: d -> S
        self.mv = nn.Linear(memory_size, self.head_dim, bias=False)  # memory M_v: S -> d
        with torch.no_grad():
            self.mv.weight.copy_(self.mk.weight.t())  # EANet: M_v starts as M_k's transpose
        if num_heads > 1:
            self.proj_in: nn.Module = nn.Linear(dim, dim)
            self.proj_out: nn.Module = nn.Linear(dim, dim)
        else:
            self.proj_in = nn.Identity()
            self.proj_out = nn.Identity()

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        B, N, dim = x.shape
        x = self.proj_in(x)
        x = x.view(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, N, d)
        if self.double_norm and 0 < self.tile_size < N and not torch.is_grad_enabled():
            out = self._tiled_double_norm(x, mask)
            return self.proj_out(out.transpose(1, 2).reshape(B, N, dim))
        attn = self.mk(x)  # (B, H, N, S)
        if self.double_norm:
            attn = _masked_logits(attn, mask, dim=2).softmax(dim=2)  # over the points N
            if mask is not None:
                # A cloud without real points would give NaN; padded rows must be exactly 0.
                attn = attn.masked_fill(~mask.view(B, 1, N, 1), 0.0)
            attn = attn / (attn.sum(dim=3, keepdim=True) + self.eps)  # over the slots S
        else:
            attn = attn.softmax(dim=3)  # over the slots S
        out = self.mv(attn)  # (B, H, N, d)
        out = out.transpose(1, 2).reshape(B, N, dim)  # (B, N, H*d)
        return self.proj_out(out)

    def _tiled_double_norm(self, x: Tensor, mask: Optional[Tensor]) -> Tensor:
        """The double-normalized attention, ``tile_size`` points at a time; x (B, H, N, d).

        Pass 1 turns each tile's logits into exp(logit - running max) and keeps per slot the
        running maximum over the points seen so far and the sum of exponentials rescaled to it.
        Pass 2 rescales each tile to the final maximum and sum (the softmax over N), divides
        each point's weights by their sum over the slots and applies M_v.
        """
        B, H, N, _ = x.shape
        tiles: List[Tensor] = []
        tile_maxima: List[Tensor] = []  # running maximum after each tile; -inf: no real point yet
        running_max = x.new_full((B, H, 1, self.mk.out_features), float("-inf"))
        total = x.new_zeros(running_max.shape)
        for start in range(0, N, self.tile_size):
            logits = self.mk(x[:, :, start : start + self.tile_size])  # (B, H, T, S)
            if mask is not None:
                logits = logits.masked_fill_(~mask[:, None, start : start + self.tile_size, None], float("-inf"))
            new_max = torch.maximum(running_max, logits.amax(dim=2, keepdim=True))
            shift = _finite_or_zero(new_max)  # a slot without a real point yet has only -inf logits
            total.mul_(torch.exp(running_max - shift)).add_(logits.sub_(shift).exp_().sum(dim=2, keepdim=True))
            running_max = new_max
            tiles.append(logits)
            tile_maxima.append(new_max)
        # The point at a slot's maximum adds exp(0) = 1, so a total below 1 is 0: a cloud without
        # real points, whose weights are exactly 0 (the clamp avoids 0 * inf).
        inverse_total = total.clamp_min(1.0).reciprocal_()
        final_shift = _finite_or_zero(running_max)
        out = x.new_empty(B, H, N, self.mv.out_features)
        for index, weights in enumerate(tiles):
            start = index * self.tile_size
            # exp(-inf) = 0 for slots that had no real point by this tile (their weights are 0).
            weights.mul_(torch.exp(tile_maxima[index] - final_shift).mul_(inverse_total))  # softmax over N
            weights.div_(weights.sum(dim=3, keepdim=True).add_(self.eps))  # over the slots S
            out[:, :, start : start + self.tile_size] = self.mv(weights)
        return out


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention (torch's fused kernel), O(N^2) time.

    Args:
        dim: channels of the input and output.
        num_heads: number of heads; must divide ``dim``.

    Shapes:
        x (B, N, dim), mask (B, N) bool -> (B, N, dim)
    """

    def __init__(self, dim: int, num_heads: int = 4):
        super().__init__()
        if num_heads < 1 or dim % num_heads != 0:
            raise ValueError(f"num_heads={num_heads} must be >= 1 and divide dim={dim}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        B, N, dim = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, d)
        attn_mask: Optional[Tensor] = None
        if mask is not None:
            attn_mask = mask.view(B, 1, 1, N)  # True = may attend to this key
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, N, d)
        return self.proj(out.transpose(1, 2).reshape(B, N, dim))


class SimplifiedSelfAttention(nn.Module):
    """Self-attention without projections, as analysed in the EA paper: out = softmax(F F^T) F.

    The softmax runs over the keys (last axis); the (B, N, N) map is materialised, so memory is
    O(N^2).

    Shapes:
        x (B, N, dim), mask (B, N) bool -> (B, N, dim)
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        energy = torch.bmm(x, x.transpose(1, 2))  # (B, N_query, N_key)
        attn = _masked_logits(energy, mask, dim=2).softmax(dim=2)
        return torch.bmm(attn, x)


class OffsetAttention(nn.Module):
    """PCT's offset-attention core: returns the offset x - SA(x).

    Query and key share one projection (dim -> dim/4), values are projected dim -> dim. The
    (B, N, N) map is double-normalized: softmax over the keys, then each key's column is
    l1-normalized over the queries; point j receives sum_i A_ij v_i. The surrounding
    ``AttentionBlock`` adds PCT's Linear + norm + ReLU and the residual.

    Shapes:
        x (B, N, dim), mask (B, N) bool -> (B, N, dim)
    """

    def __init__(self, dim: int):
        super().__init__()
        self.qk = nn.Linear(dim, max(dim // 4, 1), bias=False)
        self.v = nn.Linear(dim, dim)
        self.eps = DOUBLE_NORM_EPS

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        qk = self.qk(x)  # (B, N, dim/4)
        energy = torch.bmm(qk, qk.transpose(1, 2))  # (B, N_i, N_j), symmetric
        attn = _masked_logits(energy, mask, dim=2).softmax(dim=2)  # over j
        attn = _zero_padded(attn, mask)  # padded i contribute nothing
        attn = attn / (attn.sum(dim=1, keepdim=True) + self.eps)  # l1 over i
        sa = torch.bmm(attn.transpose(1, 2), self.v(x))  # (B, N_j, dim)
        return x - sa


class NoAttention(nn.Module):
    """Identity with the attention interface (the "none" ablation)."""

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return x


def build_attention(
    name: str, dim: int, memory_size: int = 64, num_heads: int = 4, ea_norm: str = "double"
) -> nn.Module:
    """Create the attention layer called ``name`` (one of ``ATTENTION_TYPES``).

    ``num_heads`` applies to "sa" and "mhea"; "ea" is single-head.
    """
    if name == "ea":
        return ExternalAttention(dim, memory_size, num_heads=1, norm=ea_norm)
    if name == "mhea":
        return ExternalAttention(dim, memory_size, num_heads=num_heads, norm=ea_norm)
    if name == "sa":
        return SelfAttention(dim, num_heads)
    if name == "ssa":
        return SimplifiedSelfAttention(dim)
    if name == "oa":
        return OffsetAttention(dim)
    if name == "none":
        return NoAttention()
    raise ValueError(f"unknown attention {name!r}; valid: {', '.join(ATTENTION_TYPES)}")


# The block adds the projections a layer lacks, and no more. "ssa" has none, so it gets both.
# "ea" needs neither: its memories are linear maps already (M_k: input -> slots, M_v: slots ->
# output), and a Linear before M_k or after M_v would compose with it into a single linear map
# (the input bias only shifts each slot's logits by a constant, which the softmax over N cancels),
# adding parameters and FLOPs without adding capacity. "mhea" and "sa" bring their own input and
# output projections; "oa" brings q/k/v, and the block adds PCT's output Linear. For "none" the
# output Linear stands in for the attention layer.
_INPUT_PROJECTION = ("ssa",)
_OUTPUT_PROJECTION = ("ssa", "oa", "none")


class AttentionBlock(nn.Module):
    """A point cloud transformer block around any attention layer, PCT style.

        x = x + ReLU(LayerNorm(Linear_out(Attention(Linear_in(x)))))   # attention sub-block
        x = x + FFN(LayerNorm(x))                                      # only when ffn_ratio > 0

    ``Linear_in`` / ``Linear_out`` are present only for layers without projections of their
    own (see ``_INPUT_PROJECTION`` and ``_OUTPUT_PROJECTION``); for "ea" the block is
    x + ReLU(LayerNorm(EA(x))), the memories acting as the projections. For "oa" the attention
    returns the offset x - SA(x), which makes the first line PCT's offset-attention layer.
    LayerNorm normalizes every point on its own, so padded points never leak into the
    statistics of real ones.

    Args:
        dim: channels of the input and output.
        attention: one of ``ATTENTION_TYPES``.
        memory_size: memory slots S of external attention.
        num_heads: heads of "sa" and "mhea".
        ffn_ratio: hidden width of the feed-forward network as a multiple of ``dim`` (0 = none).
        ea_norm: normalization of external attention, "double" or "softmax".

    Shapes:
        x (B, N, dim), mask (B, N) bool -> (B, N, dim)
    """

    def __init__(
        self,
        dim: int,
        attention: str = "ea",
        memory_size: int = 64,
        num_heads: int = 4,
        ffn_ratio: float = 0.0,
        ea_norm: str = "double",
    ):
        super().__init__()
        self.attn = build_attention(attention, dim, memory_size, num_heads, ea_norm)
        self.proj_in = nn.Linear(dim, dim) if attention in _INPUT_PROJECTION else nn.Identity()
        self.proj_out = nn.Linear(dim, dim) if attention in _OUTPUT_PROJECTION else nn.Identity()
        self.norm = nn.LayerNorm(dim)
        hidden = int(round(dim * ffn_ratio))
        self.has_ffn = hidden > 0
        if self.has_ffn:
            self.ffn: nn.Module = nn.Sequential(
                nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)
            )
        else:
            self.ffn = nn.Identity()

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        y = self.attn(self.proj_in(x), mask)
        x = x + F.relu(self.norm(self.proj_out(y)))
        if self.has_ffn:
            x = x + self.ffn(x)
        return x
