"""What training and evaluation share: the preprocessing of every cloud, batching of a split,
and the one evaluation loop (validation during training and ``pointea eval`` both run it).

Preprocessing happens in one place, :func:`preprocessing`: datasets built by :func:`load_split`
apply it to each item, and training's in-memory route applies the dataset's own transform once
to the whole split (the transforms accept batches), so both routes see identical clouds.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from pointea.engine.tasks import Task

PathLike = Union[str, os.PathLike]
Batch = Dict[str, Tensor]

VOTE_SCALE = (0.85, 1.15)  # per-axis scale range of the voting passes (PointMLP's voting script)


def preprocessing() -> Callable[[dict], dict]:
    """The transform every cloud gets before the model: centred and scaled into the unit sphere."""
    from pointea.data.transforms import NormalizeUnitSphere

    return NormalizeUnitSphere()


def load_split(name: str, root: Optional[PathLike], split: str, data_config: Optional[Dict[str, Any]] = None,
               **overrides: Any):
    """Catalog dataset ``name`` with :func:`preprocessing` as its transform (see
    :func:`pointea.data.catalog.build_dataset` for the arguments)."""
    from pointea.data.catalog import build_dataset

    return build_dataset(name, root, split, data_config, transform=preprocessing(), **overrides)


def collate_padded(items: Sequence[Dict[str, Tensor]]) -> Dict[str, Tensor]:
    """Stack item dicts; clouds with different point counts are zero-padded with a ``"mask"``.

    Shapes:
        ``points`` (B, N_max, C), ``parts`` (B, N_max) (padding -1), ``mask`` (B, N_max) bool,
        scalars (B,).
    """
    sizes = [item["points"].shape[0] for item in items]
    batch: Dict[str, Tensor] = {}
    for key in items[0]:
        values = [torch.as_tensor(item[key]) for item in items]
        if values[0].dim() == 0 or len(set(sizes)) == 1:
            batch[key] = torch.stack(values)
        else:
            fill = -1 if key == "parts" else 0
            batch[key] = torch.nn.utils.rnn.pad_sequence(values, batch_first=True, padding_value=fill)
    if len(set(sizes)) > 1:
        batch["mask"] = torch.arange(max(sizes)).unsqueeze(0) < torch.tensor(sizes).unsqueeze(1)
    return batch


def eval_batches(source: Any, batch_size: int, device: torch.device, rank: int = 0, world_size: int = 1,
                 num_workers: int = 0) -> Iterator[Batch]:
    """Batches of a split in order, on ``device``: every ``world_size``-th item from ``rank``.

    Args:
        source: a dataset, or the whole split as a dict of tensors already on ``device``
            (``points`` (M, N, C) and the targets).
    """
    if isinstance(source, dict):
        count = source["points"].shape[0]
        index = torch.arange(rank, count, world_size, device=device)
        for start in range(0, index.numel(), batch_size):
            chunk = index[start : start + batch_size]
            yield {key: value[chunk] for key, value in source.items()}
        return
    if world_size > 1:
        from torch.utils.data import Subset

        source = Subset(source, list(range(rank, len(source), world_size)))
    loader = DataLoader(source, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_padded)
    for batch in loader:
        yield {key: value.to(device) for key, value in batch.items()}


def random_anisotropic_scale(
    points: Tensor, generator: torch.Generator, scale: Tuple[float, float] = VOTE_SCALE
) -> Tensor:
    """Scale each cloud by a random factor per axis (normals, if present, are transformed accordingly).

    Shapes:
        points (B, N, C) with C = 3 (xyz) or 6 (xyz + normals) -> (B, N, C)
    """
    B, N, C = points.shape
    low, high = scale
    factors = low + (high - low) * torch.rand(B, 1, 3, generator=generator, device=points.device)
    xyz = points[..., :3] * factors
    if C < 6:
        return torch.cat([xyz, points[..., 3:]], dim=-1)
    # Normals transform with the inverse transpose: n / s, renormalized.
    normals = torch.nn.functional.normalize(points[..., 3:6] / factors, dim=-1)
    return torch.cat([xyz, normals, points[..., 6:]], dim=-1)


@torch.inference_mode()
def run_evaluation(
    model: nn.Module,
    batches: Iterator[Batch],
    task: Task,
    meter,
    loss_sums: Optional[Tensor] = None,
    smoothing: float = 0.0,
    votes: int = 0,
    voted_meter=None,
    generator: Optional[torch.Generator] = None,
    lookup: Optional[Tensor] = None,
) -> None:
    """Run ``model`` (in eval mode, float32) over ``batches``, adding its predictions to ``meter``.

    Always float32, also after bf16 training: training's validation record then equals what
    ``pointea eval`` measures on the saved weights (bf16 validation flipped a shape or two).

    Args:
        task: the model's task (forward, loss, meter update).
        meter: metric meter of the plain pass.
        loss_sums: float64 ``(2,)`` tensor receiving ``(loss * count, count)`` of each batch,
            or None (no loss is computed).
        smoothing: label smoothing of that loss.
        votes: with ``votes > 1``, ``voted_meter`` also gets the average softmax of the plain pass
            and ``votes - 1`` passes over clouds scaled by :func:`random_anisotropic_scale`.
        generator: the voting scales' generator.
        lookup: classification by name: model class index -> meter column.
    """
    model.eval()
    for batch in batches:
        device = batch["points"].device
        logits = task.forward(model, batch).float()  # (B, K) or (B, N, P)
        if loss_sums is not None:
            loss, _, count = task.loss(logits, batch, smoothing)
            loss_sums += torch.stack([loss.double() * count, torch.as_tensor(count, device=device).double()])
        task.update(meter, logits, batch, lookup)
        if votes > 1:
            probabilities = logits.softmax(dim=-1)
            for _ in range(votes - 1):
                scaled = {**batch, "points": random_anisotropic_scale(batch["points"], generator)}
                probabilities += task.forward(model, scaled).float().softmax(dim=-1)
            task.update(voted_meter, probabilities, batch, lookup)
