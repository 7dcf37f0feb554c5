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

import math
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ATTENTION_TYPES = ("ea", "mhea", "sa", "ssa", "oa", "none")

# Added to the sum over the memory slots before dividing by it (EANet's double normalization).
DOUBLE_NORM_EPS = 1e-9
# Without autograd, external attention over more points than this may run tile by tile (see
# ExternalAttention.tile_size and inference_path).
EA_TILE_SIZE = 2048
# How ExternalAttention picks its path without autograd; "auto" times both once per process.
EA_INFERENCE_PATHS = ("auto", "tiled", "one-pass")
# "auto" takes the tiled path only when its probe time is below this fraction of the one-pass
# time: the tiled path runs ~20 small ops per tile, each an OpenMP parallel region that waits for
# descheduled threads when the cores are oversubscribed (measured 10-50x slower than one pass
# under load), so a marginal quiet-machine gain is not worth that risk.
EA_TILED_MARGIN = 0.9
# A cached "auto" choice is dropped (and the next call probes again) when EA_REPROBE_STRIKES calls
# in a row of the tiled path run this many times slower per point than its probe, or of the
# one-pass path this many times faster: the machine's load has changed. Quiet-machine noise stays
# well within 3x; two strikes keep one preempted call from costing a probe.
EA_REPROBE_FACTOR = 3.0
EA_REPROBE_STRIKES = 2
# A probe round whose two times differ by more than this is decisive; otherwise a second round
# runs (the first call of a size also pays for faulting in fresh memory).
EA_PROBE_DECISIVE = 4.0

_clock = time.perf_counter  # the probe's timer; tests replace it


@dataclass
class _PathChoice:
    """The result of one "auto" probe: the faster path and both measured times."""

    path: str  # "tiled" or "one-pass"
    one_pass_s: float
    tiled_s: float
    elements: int  # B * heads * N of the probed call, to compare later calls per point
    strikes: int = 0  # later calls in a row that ran out of line with the probe

    def seconds_per_element(self) -> float:
        return (self.tiled_s if self.path == "tiled" else self.one_pass_s) / self.elements


# Probe results of this process, keyed by device type, dtype, threads, head width, slots, tile
# size and the power-of-two bucket of B * heads * N (see ExternalAttention._path_key).
_PATH_CHOICES: Dict[Tuple, _PathChoice] = {}


def external_attention_path_choices() -> List[Dict[str, object]]:
    """The inference paths "auto" external attention has chosen in this process, with the probe times.

    Returns:
        one dict per probed case: device, dtype, threads, head_dim, memory_size, tile_size,
        elements (B * heads * N of the probed call), path, one_pass_ms, tiled_ms.
    """
    rows = []
    for (device, dtype, threads, head_dim, memory_size, tile_size, _), choice in _PATH_CHOICES.items():
        rows.append({
            "device": device, "dtype": str(dtype), "threads": threads, "head_dim": head_dim,
            "memory_size": memory_size, "tile_size": tile_size, "elements": choice.elements,
            "path": choice.path, "one_pass_ms": choice.one_pass_s * 1e3, "tiled_ms": choice.tiled_s * 1e3,
        })
    return rows


def reset_external_attention_path_choices() -> None:
    """Forget every "auto" choice of this process, so that the next large no-grad call probes again."""
    _PATH_CHOICES.clear()


def _is_exporting() -> bool:
    """True while torch.jit.trace, the ONNX exporter, torch.export or torch.compile trace the model."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


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
    normalization can run over tiles of ``tile_size`` points with an online softmax over N
    (running per-slot maximum and sum, as in memory-efficient attention), so the (N, S) map is
    produced and consumed a tile at a time while it is in cache. The result equals the one-pass
    formula up to float rounding. Which path is faster depends on the machine and on its load:
    the tiled path wins on some CPUs when they are quiet, loses on others, and collapses when the
    cores are oversubscribed (its many small ops each wait for descheduled OpenMP threads).
    ``inference_path="auto"`` therefore times both paths on the first such call of each case
    (device type, dtype, thread count, head width, slots, tile size, power-of-two bucket of
    B * heads * N; once per process, a few calls' time), keeps the faster one (the tiled one only
    if clearly faster, see ``EA_TILED_MARGIN``) and probes again when later calls show that the
    load has changed (``EA_REPROBE_FACTOR``, ``EA_REPROBE_STRIKES``). Under load the probe itself
    pays for one slow tiled call. "auto" takes the one-pass path off the CPU (the tiled path is a
    CPU cache optimisation) and while the model is scripted, traced or exported, so exported
    graphs never depend on a timing.
    ``inference_path="tiled"`` / ``"one-pass"`` force a path. Training (autograd on) always uses
    the one-pass formula.

    With ``num_heads > 1`` the input is projected (dim -> dim), split into heads of d = dim /
    num_heads channels which all share the same two memories, concatenated and projected back.

    Args:
        dim: channels of the input and output.
        memory_size: number of memory slots S.
        num_heads: number of heads; must divide ``dim``.
        norm: "double" or "softmax".
        tile_size: points per tile of the tiled inference path; 0 or None: always one pass.
        inference_path: "auto", "tiled" or "one-pass" (see above); set the attribute of the same
            name to change it later.

    Shapes:
        x (B, N, dim), mask (B, N) bool -> (B, N, dim)
    """

    def __init__(
        self,
        dim: int,
        memory_size: int = 64,
        num_heads: int = 1,
        norm: str = "double",
        tile_size: Optional[int] = EA_TILE_SIZE,
        inference_path: str = "auto",
    ):
        super().__init__()
        if norm not in ("double", "softmax"):
            raise ValueError(f"unknown external attention norm {norm!r}; valid: 'double', 'softmax'")
        if num_heads < 1 or dim % num_heads != 0:
            raise ValueError(f"num_heads={num_heads} must be >= 1 and divide dim={dim}")
        if inference_path not in EA_INFERENCE_PATHS:
            raise ValueError(
                f"unknown external attention inference_path {inference_path!r}; valid: {', '.join(EA_INFERENCE_PATHS)}"
            )
        tile_size = tile_size or 0
        if tile_size < 0 or (inference_path == "tiled" and tile_size == 0):
            raise ValueError(f"tile_size={tile_size} must be >= 0, and > 0 for inference_path='tiled'")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.double_norm = norm == "double"
        self.eps = DOUBLE_NORM_EPS
        self.tile_size = tile_size
        self.inference_path = inference_path
        self.last_inference_path = ""  # the path of the latest "auto" call (eager mode only)
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
        if self.double_norm and not torch.is_grad_enabled():
            if self.inference_path == "auto" and not torch.jit.is_scripting():
                out = self._auto_double_norm(x, mask)
            elif self.inference_path == "tiled" and 0 < self.tile_size < N:
                out = self._tiled_double_norm(x, mask)
            else:
                out = self._one_pass(x, mask)
        else:
            out = self._one_pass(x, mask)
        out = out.transpose(1, 2).reshape(B, N, dim)  # (B, N, H*d)
        return self.proj_out(out)

    def _one_pass(self, x: Tensor, mask: Optional[Tensor]) -> Tensor:
        """The paper's formula over the whole (N, S) map at once; x (B, H, N, d) -> (B, H, N, d)."""
        B, H, N, _ = x.shape
        attn = self.mk(x)  # (B, H, N, S)
        if self.double_norm:
            attn = _masked_logits(attn, mask, dim=2).softmax(dim=2)  # over the points N
            if mask is not None:
                # A cloud without real points would give NaN; padded rows must be exactly 0.
                attn = attn.masked_fill(~mask.view(B, 1, N, 1), 0.0)
            attn = attn / (attn.sum(dim=3, keepdim=True) + self.eps)  # over the slots S
        else:
            attn = attn.softmax(dim=3)  # over the slots S
        return self.mv(attn)  # (B, H, N, d)

    def _path_key(self, x: Tensor) -> Tuple:
        """What the speed of the two paths depends on; x (B, H, N, d)."""
        B, H, N, _ = x.shape
        return (x.device.type, x.dtype, torch.get_num_threads(), self.head_dim, self.mk.out_features,
                self.tile_size, (B * H * N).bit_length())

    @torch.jit.unused
    def _auto_double_norm(self, x: Tensor, mask: Optional[Tensor]) -> Tensor:
        """The double normalization by the path "auto" picks (see the class docstring); x (B, H, N, d)."""
        B, H, N, _ = x.shape
        if _is_exporting() or x.device.type != "cpu" or not 0 < self.tile_size < N:
            self.last_inference_path = "one-pass"
            return self._one_pass(x, mask)
        key = self._path_key(x)
        choice = _PATH_CHOICES.get(key)
        if choice is None:
            out, _PATH_CHOICES[key] = self._probe(x, mask)
            self.last_inference_path = _PATH_CHOICES[key].path
            return out
        start = _clock()
        out = self._tiled_double_norm(x, mask) if choice.path == "tiled" else self._one_pass(x, mask)
        per_element = (_clock() - start) / (B * H * N)
        expected = choice.seconds_per_element()
        # Only these two changes can make the other path the faster one: the tiled path slowing
        # down (cores now oversubscribed) or the one-pass path speeding up (load gone).
        if (choice.path == "tiled" and per_element > EA_REPROBE_FACTOR * expected) or (
            choice.path == "one-pass" and per_element * EA_REPROBE_FACTOR < expected
        ):
            choice.strikes += 1
            if choice.strikes >= EA_REPROBE_STRIKES:
                _PATH_CHOICES.pop(key, None)
        else:
            choice.strikes = 0
        self.last_inference_path = choice.path
        return out

    @torch.jit.unused
    def _probe(self, x: Tensor, mask: Optional[Tensor]) -> Tuple[Tensor, _PathChoice]:
        """Time both paths on this call; returns the faster path's output and the choice."""
        B, H, N, _ = x.shape
        seconds = {"one-pass": math.inf, "tiled": math.inf}
        outputs: Dict[str, Tensor] = {}
        for _ in range(2):
            for path in ("one-pass", "tiled"):
                start = _clock()
                outputs[path] = self._tiled_double_norm(x, mask) if path == "tiled" else self._one_pass(x, mask)
                seconds[path] = min(seconds[path], _clock() - start)
            if max(seconds.values()) > EA_PROBE_DECISIVE * min(seconds.values()):
                break
        path = "tiled" if seconds["tiled"] < EA_TILED_MARGIN * seconds["one-pass"] else "one-pass"
        return outputs[path], _PathChoice(path, seconds["one-pass"], seconds["tiled"], B * H * N)

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
