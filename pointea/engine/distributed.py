"""Multi-process training helpers: process group set-up, rank sharding, global batch norm.

``pointea train`` runs unchanged under ``torchrun``: :func:`init_distributed` reads the
environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) and joins the process group (gloo on CPU, nccl on CUDA). Without those variables
it returns a single-process context, so the same code path serves both cases.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pointea.engine.device import resolve_device
from pointea.nn.encoder import MaskedBatchNorm


@dataclass
class DistributedContext:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_name: str = "auto", timeout_s: float = 1800.0) -> DistributedContext:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1).

    The backend is nccl when the training device is CUDA and gloo otherwise. Each process
    trains on ``cuda:LOCAL_RANK`` when CUDA is used.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown_distributed() -> None:
    """Leave the process group (no-op when none was joined)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistributedContext) -> None:
    if context.distributed:
        dist.barrier()


def all_reduce_sum_(tensors: List[Tensor], context: DistributedContext) -> None:
    """Sum ``tensors`` over all ranks, in place (used for metric counts, never for averages)."""
    if not context.distributed:
        return
    for tensor in tensors:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def broadcast_int(value: int, context: DistributedContext) -> int:
    """Rank 0's ``value`` on every rank (decisions that all ranks must take alike)."""
    if not context.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=context.device)
    dist.broadcast(tensor, src=0)
    return int(tensor.item())


def shard_indices(global_indices: Tensor, context: DistributedContext) -> Tensor:
    """This rank's contiguous slice of a global batch (the batch size must divide evenly)."""
    if not context.distributed:
        return global_indices
    per_rank = global_indices.numel() // context.world_size
    start = context.rank * per_rank
    return global_indices[start : start + per_rank]


# --------------------------------------------------------------------------- global batch norm


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward sums the incoming gradients over ranks as well."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def _all_reduce_autograd(tensor: Tensor) -> Tensor:
    """Differentiable all-reduce sum (d(sum_r L_r)/dx reaches every rank's local inputs)."""
    return _AllReduceSum.apply(tensor)


def global_batch_norm(
    x: Tensor,
    running_mean: Optional[Tensor],
    running_var: Optional[Tensor],
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    momentum: float,
    eps: float,
) -> Tensor:
    """Training-mode batch norm with statistics over the samples of ALL ranks.

    Gives the same result and gradients as ``F.batch_norm`` on the concatenated global batch
    (two-pass mean / variance for accuracy). Works on CPU (gloo) and CUDA (nccl), unlike
    ``nn.SyncBatchNorm``, which is CUDA-only.

    Shapes:
        x: (R, C) or (B, C, L...) -> same shape.
    """
    C = x.shape[1]
    dims = [0] + list(range(2, x.dim()))
    shape = [1, C] + [1] * (x.dim() - 2)
    xf = x.float()
    count = torch.tensor([float(x.numel() // C)], device=x.device)
    total = _all_reduce_autograd(torch.cat([xf.sum(dims), count]))
    n = total[C].detach()
    mean = total[:C] / n
    centered = xf - mean.view(shape)
    var = _all_reduce_autograd((centered * centered).sum(dims)) / n  # biased, as used to normalize
    out = centered * torch.rsqrt(var.view(shape) + eps)
    if weight is not None:
        out = out * weight.view(shape) + bias.view(shape)
    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            unbiased = var.detach() * (n / (n - 1).clamp(min=1))
            running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
            running_var.mul_(1 - momentum).add_(momentum * unbiased)
    return out.to(x.dtype)


class _GlobalBatchNormNd(nn.modules.batchnorm._BatchNorm):
    """``nn.BatchNorm1d/2d/3d`` whose training statistics span all ranks (class swapped in)."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        momentum = 0.1 if self.momentum is None else self.momentum
        track = self.track_running_stats
        return global_batch_norm(
            x,
            self.running_mean if track else None,
            self.running_var if track else None,
            self.weight,
            self.bias,
            momentum,
            self.eps,
        )


def convert_to_global_batchnorm(model: nn.Module) -> int:
    """Make every batch-norm layer of ``model`` use global-batch statistics under DDP, in place.

    Handles ``nn.BatchNorm1d/2d/3d`` and pointea's ``MaskedBatchNorm``. Layers keep their
    parameters, buffers and state-dict keys (only their class changes), so checkpoints stay
    loadable by the plain model. Outside a process group the layers behave as before.

    Returns:
        The number of converted layers.
    """
    converted = 0
    for module in model.modules():
        if type(module) in _GLOBAL_CLASSES:
            module.__class__ = _GLOBAL_CLASSES[type(module)]
            converted += 1
    return converted


class GlobalMaskedBatchNorm(MaskedBatchNorm):
    """pointea's ``MaskedBatchNorm`` whose training statistics span all ranks (class swapped in)."""

    def _normalize(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super()._normalize(x)
        return global_batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, self.momentum, self.eps
        )


class GlobalBatchNorm1d(_GlobalBatchNormNd, nn.BatchNorm1d):
    pass


class GlobalBatchNorm2d(_GlobalBatchNormNd, nn.BatchNorm2d):
    pass


class GlobalBatchNorm3d(_GlobalBatchNormNd, nn.BatchNorm3d):
    pass


_GLOBAL_CLASSES = {
    nn.BatchNorm1d: GlobalBatchNorm1d,
    nn.BatchNorm2d: GlobalBatchNorm2d,
    nn.BatchNorm3d: GlobalBatchNorm3d,
    MaskedBatchNorm: GlobalMaskedBatchNorm,
}
