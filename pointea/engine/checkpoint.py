"""Checkpoint files: save, load with clear errors, rebuild the model, strip for shipping.

A pointea checkpoint is a ``torch.save``-d dict of plain Python types and tensors only, so it
loads with ``torch.load(weights_only=True)`` (no arbitrary code runs when opening one):

- ``"format"``: ``"pointea-checkpoint"`` and ``"version"``: :data:`CHECKPOINT_VERSION`
- ``"model_config"``: ``pointea.models.model_config_to_dict(model.config)``
- ``"model"``: the model's ``state_dict()``
- ``"dataset"``: ``{"name", "task", "classes" | "categories", "category_parts", "part_names",
  "in_channels", "num_points"}``, enough for prediction and evaluation from the file alone; the
  names and the category -> parts table are the training dataset's
  (:meth:`pointea.engine.tasks.Task.metadata`), so any dataset's table round-trips
- ``"config"``: the resolved training configuration as a dict, ``"metrics"``: the last metrics
- resumable checkpoints also hold ``"optimizer"``, ``"scheduler"``, ``"epoch"``, ``"step"``,
  ``"rng"`` (:func:`capture_rng_state`) and ``"best_metric"``, plus run bookkeeping; with
  ``train.ema_decay`` on, ``"model"`` is the averaged model and ``"trained_model"`` and
  ``"ema_num_averaged"`` hold what resuming needs; :func:`export_weights` drops them.

Training writes ``best.pt`` with :func:`checkpoint_state` and ``last.pt`` with :func:`save_last`,
and resumes with :func:`restore_training`, which refuses (:func:`check_resumable`) a configuration
that changes the model, the data or the optimizer.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from pointea.atomic import atomic_path
from pointea.engine.device import resolve_device
from pointea.engine.schedule import restore_schedule_position
from pointea.pretrained import resolve_checkpoint

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

CHECKPOINT_FORMAT = "pointea-checkpoint"
CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("model_config", "model", "dataset")
TRAINING_STATE_KEYS = (
    "optimizer", "scheduler", "epoch", "step", "rng", "best_metric", "best_epoch", "best_val", "train_time_s",
    "elapsed_s", "trained_model", "ema_num_averaged",
)
# settings a resumed run must keep: they shape the model, the data or the optimizer state
# (data.root and data.cache_dir may change, e.g. after moving the data)
RESUME_FIXED = ("model.", "data.", "train.optimizer", "train.batch_size")
RESUME_MOVABLE = ("data.root", "data.cache_dir")


def save_checkpoint(path: PathLike, state: Dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically, adding the format and version markers.

    Args:
        path: destination file (parent folders are created).
        state: checkpoint dict (see the module docstring); plain types and tensors only.

    Returns:
        The path written.
    """
    path = Path(path)
    payload = {**state, "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION}
    with atomic_path(path) as tmp:
        # through a Python handle, so a failed write keeps its errno (torch's own file writer
        # reports only "unexpected pos") and atomic_path can say "no space left on device"
        with open(tmp, "wb") as handle:
            torch.save(payload, handle)
    return path


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Load and validate a pointea checkpoint.

    Args:
        path: checkpoint file written by :func:`save_checkpoint`, a run folder (its
            ``checkpoints/best.pt``) or the name of shipped weights (see
            :func:`pointea.pretrained.resolve_checkpoint`).
        map_location: device the tensors are loaded onto.

    Returns:
        The checkpoint dict.

    Raises:
        FileNotFoundError: ``path`` is neither a file, a run folder with a best checkpoint nor a
            shipped name (the message lists the shipped names).
        ValueError: the file is truncated or corrupt, holds something other than plain types and
            tensors, is not a pointea checkpoint (e.g. a bare ``state_dict``), or has another
            format version. The message names the file.
    """
    path = resolve_checkpoint(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:  # torch's text suggests weights_only=False: not for us
        raise ValueError(
            f"cannot load checkpoint {path}: it is not a file saved with torch.save, or it holds "
            "objects other than tensors and plain Python types, which pointea does not unpickle"
        ) from error
    except Exception as error:  # torch raises RuntimeError, EOFError, ... for damaged files
        raise ValueError(
            f"cannot load checkpoint {path}: the file is truncated or corrupt "
            f"({type(error).__name__}: {_first_line(error)})"
        ) from error
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        hint = " (it looks like a bare state_dict)" if _looks_like_state_dict(state) else ""
        raise ValueError(
            f"{path} is not a pointea checkpoint{hint}: expected a dict with "
            f"'format': '{CHECKPOINT_FORMAT}' as written by pointea.engine.checkpoint.save_checkpoint"
        )
    version = state.get("version")
    if version != CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint {path} has format version {version!r}; this pointea reads version "
            f"{CHECKPOINT_VERSION}"
        )
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise ValueError(f"checkpoint {path} lacks the entries {missing}")
    return state


def load_model(path: PathLike, device: Union[str, torch.device] = "cpu") -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuild the model stored in a checkpoint, in eval mode on ``device``.

    Args:
        path: checkpoint file, run folder or shipped weights name, as for :func:`load_checkpoint`.
        device: device for the model.

    Returns:
        ``(model, meta)`` where ``meta`` is the checkpoint's ``"dataset"`` dict plus
        ``"metrics"`` and ``"config"`` (empty dicts when absent).

    Raises:
        ValueError: the file is not a valid checkpoint (see :func:`load_checkpoint`), its
            weights do not match the model its config describes (missing / unexpected keys and
            shape mismatches are listed) or hold NaN / inf, or its dataset metadata does not fit
            the model (number of class names, point count).
    """
    from pointea.models import build_model, model_config_from_dict

    path = resolve_checkpoint(path)
    state = load_checkpoint(path, map_location="cpu")
    for key in ("model_config", "dataset", "model"):
        if not isinstance(state[key], dict):
            raise ValueError(f"checkpoint {path}: {key!r} must be a dict, got {type(state[key]).__name__}")
    try:
        config = model_config_from_dict(state["model_config"])
        model = build_model(config)
    except (TypeError, ValueError, KeyError) as error:
        raise ValueError(f"checkpoint {path} has an invalid model_config: {error}") from error
    _check_metadata(state["dataset"], config, path)
    load_state_strict(model, state["model"], path)
    broken = [k for k, v in state["model"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise ValueError(f"checkpoint {path} has NaN or inf weights in {_preview(broken)}")
    model.to(resolve_device(device)).eval()
    meta = dict(state["dataset"])
    meta["metrics"] = state.get("metrics") or {}
    meta["config"] = state.get("config") or {}
    return model, meta


def export_weights(src: PathLike, dst: PathLike) -> Path:
    """Copy a checkpoint without its training state (optimizer, scheduler, RNG, counters).

    The result holds the model config, weights, dataset metadata, config and metrics: all that
    evaluation, prediction and export need, in a much smaller file.

    Returns:
        The path written.
    """
    state = load_checkpoint(src)
    slim = {key: value for key, value in state.items() if key not in TRAINING_STATE_KEYS}
    return save_checkpoint(dst, slim)


def capture_rng_state() -> Dict[str, Any]:
    """Snapshot the Python, NumPy, torch and CUDA generators as plain types and tensors.

    NumPy's state array becomes a tensor so the checkpoint still loads with ``weights_only=True``.
    """
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state: Dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Restore generators saved by :func:`capture_rng_state` (CUDA only when present in both)."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def load_state_strict(model: nn.Module, weights: Dict[str, torch.Tensor], path: Path) -> None:
    """Load ``weights`` into ``model``, or raise a ValueError naming ``path`` and every mismatch."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    mismatched = [
        f"{key}: checkpoint {tuple(weights[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if key in weights and tuple(weights[key].shape) != tuple(expected[key].shape)
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"missing keys {_preview(missing)}")
        if unexpected:
            problems.append(f"unexpected keys {_preview(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches {_preview(mismatched)}")
        raise ValueError(
            f"weights in checkpoint {path} do not match the model built from its model_config: "
            + "; ".join(problems)
        )
    model.load_state_dict(weights, strict=True)


# --------------------------------------------------------------------------- training state


@dataclass
class TrainState:
    """Where a run stands: what ``last.pt`` records besides weights and optimizer state."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    best_metric: float = -math.inf
    best_epoch: int = -1
    train_time_s: float = 0.0  # training loops of the completed epochs, all sessions
    elapsed_s: float = 0.0  # wall time of the completed epochs (validation and checkpoints too), all sessions
    last_val: Dict[str, Any] = field(default_factory=dict)
    best_val: Dict[str, Any] = field(default_factory=dict)


def checkpoint_state(model: nn.Module, meta: Dict[str, Any], config: Any, state: TrainState,
                     metrics: Dict[str, Any]) -> Dict[str, Any]:
    """The checkpoint dict of ``model`` (weights copied) trained on data described by ``meta``
    (the ``"dataset"`` entry) under ``config`` (a :class:`pointea.config.Config`)."""
    from pointea.config import config_to_dict
    from pointea.models import model_config_to_dict

    return {
        "model_config": model_config_to_dict(model.config),
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "dataset": dict(meta),
        "config": config_to_dict(config),
        "metrics": metrics,
        "epoch": state.epoch,
        "step": state.step,
        "best_metric": state.best_metric,
        "best_epoch": state.best_epoch,
        "train_time_s": state.train_time_s,
    }


def save_last(path: PathLike, model: nn.Module, optimizer, scheduler, meta: Dict[str, Any], config: Any,
              state: TrainState, ema: Optional[nn.Module] = None) -> None:
    """Write the resumable checkpoint: weights, optimizer, scheduler, RNG and run state.

    With a moving average (``ema``, an ``AveragedModel``), ``"model"`` is the average (the model
    the recorded metrics belong to) and ``"trained_model"`` the weights being trained.
    """
    checkpoint = checkpoint_state(model if ema is None else ema.module, meta, config, state, state.last_val)
    checkpoint.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                      rng=capture_rng_state(), best_val=state.best_val, elapsed_s=state.elapsed_s)
    if ema is not None:
        checkpoint.update(trained_model={k: v.detach().clone() for k, v in model.state_dict().items()},
                          ema_num_averaged=int(ema.n_averaged))
    save_checkpoint(path, checkpoint)


def restore_training(path: PathLike, config: Any, model: nn.Module, optimizer, scheduler,
                     device: Union[str, torch.device], ema: Optional[nn.Module] = None) -> TrainState:
    """Load a resumable checkpoint into the model, optimizer, scheduler, RNGs and ``ema``.

    The scheduler takes the saved position (steps taken) and keeps the schedule it was built with
    from ``config``: a run resumed with more ``train.epochs`` follows the longer schedule.

    Raises:
        ValueError: the file lacks training state, or ``config`` changes settings that shape the
            model, the data or the optimizer (see :func:`check_resumable`).
    """
    checkpoint = load_checkpoint(path, map_location=device)
    missing = [k for k in ("optimizer", "scheduler", "epoch", "step", "rng") if k not in checkpoint]
    if missing:
        raise ValueError(f"{path} is not a resumable checkpoint: it lacks {missing}")
    check_resumable(checkpoint.get("config") or {}, config, path)
    averaged = "trained_model" in checkpoint  # the run kept a moving average
    load_state_strict(model, checkpoint["trained_model" if averaged else "model"], Path(path))
    if ema is not None and averaged:
        ema.module.load_state_dict(checkpoint["model"])
        ema.n_averaged.fill_(int(checkpoint["ema_num_averaged"]))
    elif ema is not None:
        logger.info("%s holds no moving average; it starts from the resumed weights", path)
        ema.n_averaged.zero_()  # the next update copies the model
    optimizer.load_state_dict(checkpoint["optimizer"])
    restore_schedule_position(scheduler, checkpoint["scheduler"])
    restore_rng_state(checkpoint["rng"])
    return TrainState(
        epoch=int(checkpoint["epoch"]),
        step=int(checkpoint["step"]),
        best_metric=float(checkpoint.get("best_metric", -math.inf)),
        best_epoch=int(checkpoint.get("best_epoch", -1)),
        train_time_s=float(checkpoint.get("train_time_s", 0.0)),
        elapsed_s=float(checkpoint.get("elapsed_s", checkpoint.get("train_time_s", 0.0))),
        last_val=dict(checkpoint.get("metrics") or {}),
        best_val=dict(checkpoint.get("best_val") or {}),
    )


def check_resumable(saved: Dict[str, Any], config: Any, path: PathLike) -> None:
    """Refuse a resume whose configuration changes the model, the data or the optimizer.

    Args:
        saved: the configuration the checkpoint recorded, as a dict.
        config: the resuming run's :class:`pointea.config.Config`.
        path: the checkpoint, for the message.

    Raises:
        ValueError: lists each changed setting with its recorded and its new value.
    """
    from pointea.config import Config, config_to_dict

    # A setting added to pointea after the checkpoint was written takes its default there.
    defaults = config_to_dict(Config())
    saved = {**saved, **{name: {**section, **(saved.get(name) or {})} for name, section in defaults.items()}}
    old, new = _flatten(saved), _flatten(config_to_dict(config))
    changed = [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if key.startswith(RESUME_FIXED) and key not in RESUME_MOVABLE and old.get(key) != new.get(key)
    ]
    if changed:
        raise ValueError(
            f"cannot resume from {path} with changed model, data or optimizer settings "
            f"({'; '.join(changed)}); start a new run with --config instead"
        )


def _flatten(tree: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    flat: Dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# --------------------------------------------------------------------------- checks


def _check_metadata(dataset: Dict[str, Any], config: Any, path: Path) -> None:
    """The class / category names and point count that prediction relies on must fit the model."""
    from pointea.engine.tasks import task_for

    key = task_for(config).names_key
    names = dataset.get(key)
    if names is not None and len(names) != config.num_classes:
        raise ValueError(
            f"checkpoint {path}: its dataset metadata lists {len(names)} {key} but the model has "
            f"{config.num_classes}"
        )
    num_points = dataset.get("num_points")
    if num_points is not None and (not isinstance(num_points, int) or num_points < 1):
        raise ValueError(f"checkpoint {path}: dataset num_points must be a positive integer, got {num_points!r}")


def _preview(items: list, limit: int = 10) -> str:
    shown = ", ".join(str(item) for item in items[:limit])
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return f"[{shown}{more}]"


def _looks_like_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in obj.items()
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
