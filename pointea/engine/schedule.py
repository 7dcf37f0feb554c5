"""Optimizers, the cosine learning-rate schedule with linear warm-up, and fitting a schedule to a
time budget."""

from __future__ import annotations

import math
from typing import Any, Dict

import torch
from torch import nn

from pointea.config import TrainConfig


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD (Nesterov-free, with momentum) as ``config.optimizer`` says.

    Weight decay applies to weight matrices and memories only; biases and normalisation
    parameters (every parameter with fewer than 2 dims) are not decayed, as in timm and
    PointNeXt.
    """
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    raise ValueError(f"train.optimizer is {config.optimizer!r}; valid choices: adamw, sgd")


def cosine_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based).

    Linear warm-up from ``1 / warmup_steps`` to 1 over ``warmup_steps`` steps, then a half cosine
    from 1 down to ``min_ratio`` at ``total_steps``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(1.0, progress)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class _CosineFactor:
    """Picklable multiplier for ``LambdaLR`` (a closure would not survive a state_dict)."""

    def __init__(self, total_steps: int, warmup_steps: int, min_ratio: float) -> None:
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.min_ratio = min_ratio

    def __call__(self, step: int) -> float:
        return cosine_factor(step, self.total_steps, self.warmup_steps, self.min_ratio)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step cosine schedule with warm-up; call ``scheduler.step()`` after every optimizer step."""
    total = config.epochs * steps_per_epoch
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, _CosineFactor(total, warmup, config.min_lr / config.lr)
    )


def restore_schedule_position(scheduler: torch.optim.lr_scheduler.LambdaLR, saved: Dict[str, Any]) -> None:
    """Move ``scheduler`` to the step a saved scheduler state had reached, keeping its own schedule.

    ``LambdaLR.load_state_dict`` would also bring back the saved schedule's length, warm-up and
    peak rate; a run resumed with another ``train.epochs`` must follow the new schedule instead.
    With an unchanged schedule the learning rates come out bit-identical to the saved ones.
    """
    position = {key: value for key, value in saved.items() if key not in ("lr_lambdas", "base_lrs", "_last_lr")}
    scheduler.load_state_dict({**position, "lr_lambdas": [None] * len(scheduler.lr_lambdas)})
    _apply_learning_rates(scheduler)


def shorten_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR, total_steps: int) -> None:
    """Re-plan the cosine schedule to end at ``total_steps``, from the step it is at; the next
    optimizer step already uses the new schedule's rate."""
    for factor in scheduler.lr_lambdas:
        factor.total_steps = total_steps
    _apply_learning_rates(scheduler)


def _apply_learning_rates(scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """Set each parameter group's rate to what the schedule gives at its current step (the same
    product ``LambdaLR`` computes when it steps)."""
    rates = [base * factor(scheduler.last_epoch) for factor, base in zip(scheduler.lr_lambdas, scheduler.base_lrs)]
    for group, rate in zip(scheduler.optimizer.param_groups, rates):
        group["lr"] = rate
    scheduler._last_lr = rates  # what get_last_lr() reports


def epochs_within_budget(done: int, planned: int, elapsed_s: float, epoch_s: float, budget_s: float,
                         warmup_epochs: float = 0.0) -> int:
    """How many epochs a run can plan for within a time budget.

    Args:
        done: epochs completed.
        planned: epochs the run plans now (the result never exceeds it).
        elapsed_s: wall time the completed epochs took.
        epoch_s: expected wall time of one more epoch.
        budget_s: the run's budget.
        warmup_epochs: the warm-up is never cut short.

    Returns:
        ``planned`` when the remaining epochs fit in what is left of the budget, else ``done`` plus
        as many epochs as fit, but at least one more epoch and at least the warm-up.
    """
    fitting = done + max(0, math.floor((budget_s - elapsed_s) / epoch_s))
    return min(planned, max(fitting, done + 1, math.ceil(warmup_epochs)))
