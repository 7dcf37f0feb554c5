"""Device names as the configs and the CLI spell them (auto, cpu, cuda, cuda:K) -> ``torch.device``."""

from __future__ import annotations

from typing import Union

import torch


def resolve_device(device: Union[str, torch.device] = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``.

    A bare ``cuda`` also becomes ``cuda:<local_rank>``, so each torchrun process of a job uses its
    own GPU; other names pass through to ``torch.device``.

    Raises:
        ValueError: CUDA requested but unavailable, or an unknown device string.
    """
    name = str(device)
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"invalid device {name!r}: use auto, cpu, cuda or cuda:K") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available; use cpu or auto")
        if resolved.index is None:
            resolved = torch.device(f"cuda:{local_rank}")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} requested but MPS is not available; use cpu or auto")
    return resolved
