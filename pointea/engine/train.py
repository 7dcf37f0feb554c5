"""Training loop for classification and part segmentation, single process or DDP.

    >>> from pointea.config import load_config
    >>> from pointea.engine.train import train
    >>> result = train(load_config("synthetic-cls"), "runs/quickstart")
    >>> result["best"]["overall_accuracy"]

The run folder holds ``config.yaml`` (resolved), ``log.jsonl`` (one record per epoch and
split), TensorBoard events under ``tb/``, ``checkpoints/last.pt`` (resumable) and
``checkpoints/best.pt`` (best validation metric), ``metrics.json`` and ``curves.png``.

Data that fits in memory (every dataset exposing ``.points`` tensors) lives on the training device
as tensors and is augmented in whole batches with :mod:`pointea.data.transforms`; other datasets
go through a ``DataLoader`` (``DistributedSampler`` under DDP). Model selection uses the
validation split carved from the training data; the test split is never touched here.

Reproducibility: every epoch draws its shuffling and augmentation from a generator seeded by
``(seed, epoch)`` and its dropout from ``(seed, epoch, rank)``, and checkpoints are written at
epoch boundaries, so a run resumed from ``last.pt`` (even after SIGKILL) continues exactly as the
uninterrupted run would have (bit-exact with ``train.deterministic: true``).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from pointea.atomic import atomic_write_text
from pointea.config import AUGMENTATIONS, Config, augmentation_kwargs, config_from_dict, save_config
from pointea.data.catalog import dataset_names, get_spec
from pointea.engine import checkpoint as checkpoints
from pointea.engine import distributed as dist_utils
from pointea.engine.allocator import configure_allocator
from pointea.engine.checkpoint import TrainState
from pointea.engine.distributed import DistributedContext
from pointea.engine.loop import collate_padded, eval_batches, load_split, run_evaluation
from pointea.engine.tasks import Task, task_for

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

# Crash-recovery testing aid: when set to N, the training process SIGKILLs itself right after
# optimizer step N, as a power cut or an OOM killer would.
KILL_AFTER_STEPS_ENV = "POINTEA_KILL_AFTER_STEPS"

# what a run writes atomically, by subfolder: a kill mid-write leaves a temporary file of these,
# removed when the folder is next trained in (others' files there, e.g. an eval's, are left alone)
RUN_FILES = {".": ("config.yaml", "log.jsonl", "metrics.json", "curves.png"),
             "checkpoints": ("last.pt", "best.pt")}


# --------------------------------------------------------------------------- seeds


def derive_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from integers, e.g. ``(seed, epoch, stream)``."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(2, np.uint64)[0] >> 1)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def _determinism(enabled: bool) -> Iterator[None]:
    """Deterministic kernels for the duration of the run (previous settings restored after)."""
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark = previous[2]


# --------------------------------------------------------------------------- data


@dataclass
class TrainData:
    """Training and validation data, either as device tensors or as datasets for loaders."""

    task: Task
    meta: Dict[str, Any]  # checkpoint "dataset" entry
    train_set: Any
    val_set: Any
    train_tensors: Optional[Dict[str, Tensor]] = None  # points (M,N,C), label (M,), parts (M,N)
    val_tensors: Optional[Dict[str, Tensor]] = None

    @property
    def num_train(self) -> int:
        return len(self.train_set)


def _as_tensors(dataset: Any, task: Task, device: torch.device) -> Optional[Dict[str, Tensor]]:
    """The whole split as device tensors, or None if the dataset does not hold it in memory.

    The dataset's own item transform (the engine's preprocessing) is applied once to the whole
    split, so these tensors equal the items the DataLoader route would give.
    """
    points = getattr(dataset, "points", None)
    if not isinstance(points, Tensor):
        return None
    tensors = {"points": points}
    if task.uses_category:
        parts = getattr(dataset, "parts", None)
        categories = getattr(dataset, "labels", None)
        if not isinstance(parts, Tensor) or not isinstance(categories, Tensor):
            return None
        tensors["parts"], tensors["category"] = parts, categories
    else:
        tensors["label"] = dataset.labels
    transform = getattr(dataset, "transform", None)
    if transform is not None:
        tensors = transform(tensors)
    tensors["points"] = tensors["points"].float()
    return {key: value.to(device) for key, value in tensors.items()}


def build_data(config: Config, task: Union[str, Task], device: torch.device) -> TrainData:
    """Load the train and validation splits named by ``config.data`` (a catalog dataset).

    Raises:
        ValueError: the task does not fit the dataset (e.g. a segmentation model on a dataset
            without part labels).
    """
    task = task_for(task)
    data = config.data
    spec = get_spec(data.name)
    if task.name not in spec.tasks:
        fitting = " or ".join(f"data.name={name}" for name in dataset_names(task.name))
        raise ValueError(
            f"model preset {config.model.preset!r} is a {task.name} model but {data.name} has no "
            f"{task.label_words} (it is a {' and '.join(spec.tasks)} dataset); use {fitting}, "
            f"or a {spec.tasks[0]} preset"
        )
    data_config = asdict(data)
    loaded_points = {"train": data.resample_from or data.num_points, "val": data.num_points}
    sets = {split: load_split(data.name, data.root, split, {**data_config, "num_points": loaded_points[split]})
            for split in ("train", "val")}
    train_set, val_set = sets["train"], sets["val"]
    meta: Dict[str, Any] = {
        "name": data.name,
        "task": task.name,
        "in_channels": int(train_set.in_channels),
        "num_points": data.num_points,
        **task.metadata(train_set),
    }
    up_axis = spec.up_axis_for(getattr(train_set, "layout", None))  # ModelNet's differs by layout
    if up_axis is not None:  # pointea viz stands clouds up with it, wherever the data folder is
        meta["up_axis"] = up_axis
    return TrainData(
        task=task,
        meta=meta,
        train_set=train_set,
        val_set=val_set,
        train_tensors=_as_tensors(train_set, task, device),
        val_tensors=_as_tensors(val_set, task, device),
    )


def build_augmentation(specs: List[Dict[str, Any]], generator: Optional[torch.Generator],
                       num_classes: Optional[int] = None) -> Optional[Callable]:
    """``train.augmentation`` entries -> a Compose of batched transforms drawing from ``generator``.

    ``num_classes`` goes to the mixing entries (``rsmix``), which turn class labels into soft
    labels (B, num_classes). An entry with ``p`` is applied to each cloud with that probability.
    """
    from pointea.data import transforms

    if not specs:
        return None
    steps = []
    for spec in specs:
        kwargs = augmentation_kwargs(spec)
        cls = getattr(transforms, AUGMENTATIONS[spec["name"]])
        accepted = inspect.signature(cls).parameters
        if "generator" in accepted:
            kwargs["generator"] = generator
        if "num_classes" in accepted:
            kwargs["num_classes"] = num_classes
        try:
            step = cls(**kwargs)
        except TypeError as error:
            raise ValueError(f"train.augmentation entry {spec!r}: {error}") from None
        steps.append(step if "p" not in spec else transforms.RandomApply(step, spec["p"], generator))
    return transforms.Compose(steps)


def training_augmentation(config: Config, generator: Optional[torch.Generator],
                          num_classes: Optional[int] = None) -> Optional[Callable]:
    """The batch transform of training: ``train.augmentation``, after a fresh random subset of
    ``data.num_points`` points (normalized like the val clouds) when ``data.resample_from`` is set.
    Mixing entries (classification only, last in the list) need ``num_classes``."""
    specs = list(config.train.augmentation)
    if config.data.resample_from is not None:
        specs[:0] = [{"name": "subsample", "num_points": config.data.num_points}, {"name": "normalize"}]
    return build_augmentation(specs, generator, num_classes)


def _tensor_batches(
    tensors: Dict[str, Tensor], batch_size: int, generator: torch.Generator, context: DistributedContext,
    augment: Optional[Callable], weights: Optional[Tensor] = None,
) -> Iterator[Dict[str, Tensor]]:
    """Shuffled global batches (drop last) from device tensors; this rank's slice of each.

    Without ``weights`` each sample comes once; with them (``(M,)`` CPU floats) the epoch draws
    ``M`` samples with replacement in proportion to the weights.

    The permutation and the augmentation are drawn for the whole global batch from a generator
    that every rank seeds alike, so K processes see exactly the batches one process would.
    """
    count = tensors["points"].shape[0]
    if weights is None:
        order = torch.randperm(count, generator=generator)
    else:
        order = torch.multinomial(weights, count, replacement=True, generator=generator)
    device = tensors["points"].device
    for start in range(0, count - batch_size + 1, batch_size):
        index = order[start : start + batch_size].to(device)
        batch = {key: value[index] for key, value in tensors.items()}
        if augment is not None:
            batch = augment(batch)
        local = dist_utils.shard_indices(torch.arange(batch_size, device=device), context)
        yield {key: value[local] for key, value in batch.items()}


def sampling_weights(config: Config, data: TrainData) -> Optional[Tensor]:
    """The per-sample draw weights of ``train.sampling`` (CPU float64 ``(M,)``); None for uniform.

    Raises:
        ValueError: a weighted sampling on a dataset that is not held in memory as tensors.
    """
    sampling = config.train.sampling
    if sampling == "uniform":
        return None
    if data.train_tensors is None:
        raise ValueError(f"train.sampling={sampling} needs a dataset held in memory; "
                         f"{data.meta['name']} is read item by item")
    labels = data.train_tensors["category" if data.task.uses_category else "label"].cpu()
    class_size = torch.bincount(labels).double()
    if sampling == "class_balanced":
        return (1.0 / class_size)[labels]
    from pointea.data.dedup import duplicate_counts

    counts = duplicate_counts(data.train_tensors["points"][..., :3].float().cpu().numpy())
    weights = torch.from_numpy(1.0 / counts)
    logger.info("train.sampling=dedup: %d of %d training shapes have near-identical twins (up to %d); "
                "they count as about %.0f distinct shapes", int((counts > 1).sum()), len(counts),
                int(counts.max()) - 1, float(weights.sum()))
    # rescale within each class so that every class keeps its share of the draws
    class_weight = torch.zeros_like(class_size).index_add_(0, labels, weights)
    return weights * (class_size / class_weight.clamp_min(1e-12))[labels]


def _loader_batches(loader, device: torch.device, augment: Optional[Callable]) -> Iterator[Dict[str, Tensor]]:
    for batch in loader:
        batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
        if augment is not None:
            batch = augment(batch)
        yield batch


def _make_train_loader(data: TrainData, config: Config, context: DistributedContext):
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

    per_rank = config.train.batch_size // context.world_size
    generator = torch.Generator()
    if context.distributed:
        sampler = DistributedSampler(
            data.train_set, num_replicas=context.world_size, rank=context.rank, shuffle=True,
            seed=config.train.seed, drop_last=True,
        )
    else:
        sampler = RandomSampler(data.train_set, generator=generator)
    loader = DataLoader(
        data.train_set, batch_size=per_rank, sampler=sampler, drop_last=True,
        num_workers=config.train.num_workers, collate_fn=collate_padded, generator=generator,
        pin_memory=context.device.type == "cuda",
    )
    return loader, generator


# --------------------------------------------------------------------------- model


def build_training_model(config: Config, data: TrainData) -> nn.Module:
    """The preset of ``config.model`` sized for the dataset (classes / parts / channels).

    Raises:
        ValueError: an override contradicts the dataset (e.g. ``num_classes``), or the preset's
            task differs from the one the data was prepared for.
    """
    from pointea.models import build_model

    overrides = dict(config.model.overrides)
    derived: Dict[str, Any] = {"in_channels": data.meta["in_channels"], **data.task.model_sizes(data.meta)}
    for key, value in derived.items():
        if key in overrides and overrides[key] != value:
            raise ValueError(
                f"model.overrides.{key}={overrides[key]!r} contradicts the dataset "
                f"{data.meta['name']!r}, which needs {value!r}; drop the override"
            )
        overrides[key] = value
    model = build_model(config.model.preset, **overrides)
    if task_for(model) is not data.task:
        raise ValueError(f"model preset {config.model.preset!r} is a {model.config.task} model")
    return model


def preset_task(preset: str, overrides: Dict[str, Any]) -> Task:
    """The task a preset (with its overrides) trains for."""
    from pointea.models import PRESETS

    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; valid: {', '.join(PRESETS)}")
    return task_for(overrides.get("task", PRESETS[preset].task))


def bf16_is_fast(device: torch.device) -> bool:
    """Whether ``device`` has native bfloat16 matrix units (else bf16 autocast is slower)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def resolve_amp(amp: str, device: torch.device) -> bool:
    """Whether to autocast to bfloat16: ``bf16`` always, ``auto`` where it is fast."""
    if amp == "auto":
        return bf16_is_fast(device)
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"train.amp=bf16 but {torch.cuda.get_device_name(device)} lacks bfloat16")
    return amp == "bf16"


# --------------------------------------------------------------------------- epochs


def train_step(net: nn.Module, batch: Dict[str, Tensor], optimizer: torch.optim.Optimizer, config: Config,
               task: Task, use_bf16: bool) -> Tuple[Tensor, Any, Any]:
    """One optimizer step on ``batch``: forward (under bf16 autocast when ``use_bf16``), loss with
    ``config.train``'s label smoothing, backward, gradient clipping, step.

    Returns:
        ``task.loss``'s ``(loss, correct, count)`` of the batch.
    """
    with torch.autocast(next(net.parameters()).device.type, dtype=torch.bfloat16, enabled=use_bf16):
        logits = task.forward(net, batch)
    loss, correct, count = task.loss(logits, batch, config.train.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.train.grad_clip is not None:
        nn.utils.clip_grad_norm_(net.parameters(), config.train.grad_clip)
    optimizer.step()
    return loss, correct, count


def _train_one_epoch(net, batches, optimizer, scheduler, config: Config, task: Task, state: TrainState,
                     context: DistributedContext, use_bf16: bool, progress,
                     on_step: Optional[Callable[[], None]] = None) -> Dict[str, float]:
    net.train()
    device = context.device
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss * n, correct, count
    kill_after = int(os.environ.get(KILL_AFTER_STEPS_ENV, "0"))
    for batch in batches:
        loss, correct, count = train_step(net, batch, optimizer, config, task, use_bf16)
        scheduler.step()
        if on_step is not None:
            on_step()
        state.step += 1
        sums += torch.stack([loss.detach().double() * count, torch.as_tensor(correct).double(),
                             torch.as_tensor(count, device=device).double()])
        if progress is not None:
            progress.update(1)
            if state.step % 5 == 0 or progress.n == progress.total:
                loss_avg, acc = (sums[0] / sums[2]).item(), (100 * sums[1] / sums[2]).item()
                progress.set_postfix(loss=f"{loss_avg:.4f}", acc=f"{acc:.1f}")
        if kill_after and state.step >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    dist_utils.all_reduce_sum_([sums], context)
    total = max(sums[2].item(), 1.0)
    return {"loss": sums[0].item() / total, "accuracy": 100.0 * sums[1].item() / total}


def validate(model: nn.Module, data: TrainData, batch_size: int, context: DistributedContext,
             smoothing: float = 0.0) -> Dict[str, Any]:
    """Metrics of ``model`` on the validation split, summed over the ranks' shards.

    Each rank evaluates every ``world_size``-th sample with the evaluation loop of
    :mod:`pointea.engine.loop`; the meters' count tensors and the loss sums are all-reduced, so
    the result equals a single-process evaluation.
    """
    device = context.device
    meter = data.task.meter(model.config, device)
    loss_sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss * n, n
    source = data.val_set if data.val_tensors is None else data.val_tensors
    batches = eval_batches(source, batch_size, device, context.rank, context.world_size)
    run_evaluation(model, batches, data.task, meter, loss_sums=loss_sums, smoothing=smoothing)
    dist_utils.all_reduce_sum_(meter.tensors() + [loss_sums], context)
    metrics = meter.compute()
    metrics["loss"] = loss_sums[0].item() / max(loss_sums[1].item(), 1.0)
    return metrics


# --------------------------------------------------------------------------- checkpoints


def _scalars(metrics: Dict[str, Any]) -> Dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def build_ema(model: nn.Module, decay: float) -> Optional[AveragedModel]:
    """Exponential moving average of ``model``'s parameters and buffers (None when ``decay`` is 0)."""
    if decay == 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


# --------------------------------------------------------------------------- entry points


def train(config: Config, run_dir: PathLike, resume: bool = False) -> Dict[str, Any]:
    """Train a model as ``config`` says, writing the run folder ``run_dir``.

    Args:
        config: resolved configuration (see :mod:`pointea.config`).
        run_dir: run folder; created if needed. Without ``resume`` it must not already hold a
            run (``checkpoints/last.pt``). The run holds the folder's lock (``.lock``) while it
            lasts, so a second run or resume into the same folder is refused.
        resume: continue the run in ``run_dir`` from ``checkpoints/last.pt``.

    Returns:
        ``{"run_dir", "best_epoch", "select_metric", "best": best val metrics, "last": last val
        metrics, "train_time_s" (the epochs' training loops, all sessions), "elapsed_s" (the
        epochs' wall time with validation and checkpoints, all sessions; what
        ``train.time_budget_s`` limits), "session_time_s" (this call's training loop), "epochs"
        (completed; fewer than planned when the time budget cut the schedule), "rank"}``; under
        DDP every rank returns the same reduced metrics and only rank 0 writes files.

    Raises:
        ValueError: invalid settings, a fresh run into a folder that already holds one, or a
            folder in use by another training process.
        FileNotFoundError: ``resume`` without ``checkpoints/last.pt``.
        WriteError: a file of the run could not be written (e.g. the disk is full); the
            message names the file and the cause, and the previous checkpoints are intact.
    """
    if not str(run_dir).strip():
        raise ValueError("run_dir must name a folder (got an empty path)")
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"run folder {run_dir} exists and is not a folder")
    last_path, best_path = run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "best.pt"
    if resume and not last_path.is_file():  # checked again under the folder's lock
        raise FileNotFoundError(f"cannot resume: {last_path} does not exist")
    tc = config.train
    task = preset_task(config.model.preset, config.model.overrides)
    select = tc.select_metric or task.default_metric
    if select not in task.metric_names:
        raise ValueError(
            f"train.select_metric is {select!r}; a {task.name} run selects on one of {', '.join(task.metric_names)}"
        )
    configure_allocator()
    previous_threads = torch.get_num_threads()
    if tc.threads:
        torch.set_num_threads(tc.threads)
    joined = not torch.distributed.is_initialized()
    context = dist_utils.init_distributed(tc.device)
    try:
        if tc.batch_size % context.world_size:
            raise ValueError(
                f"train.batch_size={tc.batch_size} (the global batch) must be divisible by the "
                f"number of processes ({context.world_size})"
            )
        with _determinism(tc.deterministic), _claim_run_folder(run_dir, resume, context, last_path):
            result = _run(config, run_dir, resume, task, select, context, last_path, best_path)
        # leave together: rank 0 still writes metrics and plots, and a rank tearing down its gloo
        # connections meanwhile could abort ("terminate called without an active exception")
        dist_utils.barrier(context)
        return result
    finally:
        torch.set_num_threads(previous_threads)
        if joined:
            dist_utils.shutdown_distributed()


def _check_run_folder(run_dir: Path, resume: bool, last_path: Path) -> None:
    if resume and not last_path.is_file():
        raise FileNotFoundError(f"cannot resume: {last_path} does not exist")
    if not resume and last_path.is_file():
        raise ValueError(
            f"{run_dir} already holds a run ({last_path}); resume it with --resume {run_dir} "
            "or choose a new --run-dir"
        )


@contextlib.contextmanager
def _claim_run_folder(run_dir: Path, resume: bool, context: DistributedContext,
                      last_path: Path) -> Iterator[None]:
    """Lock ``run_dir`` for this run (rank 0 locks for the job) and remove what killed writes left.

    The folder is checked under the lock, so a run in progress is reported as such (not as a
    finished run to resume), and stale temporary files are removed only then, when no live
    writer can own them.
    """
    from pointea.atomic import remove_stale_temporaries
    from pointea.engine.runlock import run_folder_lock

    with contextlib.ExitStack() as stack:
        refused: Optional[Exception] = None
        if context.is_main:
            try:
                stack.enter_context(run_folder_lock(run_dir))
            except Exception as error:  # every rank must hear of it, or the others wait forever
                refused = error
        flag = torch.tensor([float(refused is not None)], device=context.device)
        dist_utils.all_reduce_sum_([flag], context)
        if refused is not None:
            raise refused
        if flag.item():
            raise ValueError(f"rank 0 could not lock the run folder {run_dir}")
        _check_run_folder(run_dir, resume, last_path)
        if context.is_main:
            for folder, names in RUN_FILES.items():
                for stale in remove_stale_temporaries(run_dir / folder, names):
                    logger.info("removed %s, left by an interrupted write", stale)
        yield


def resume_training(run_dir: PathLike, overrides=()) -> Dict[str, Any]:
    """Continue the run in ``run_dir`` with the configuration its last checkpoint recorded.

    ``overrides`` (``key=value``) may change settings such as ``train.progress``; changing the
    schedule (``train.epochs``) continues with the new schedule from the saved step.
    """
    from pointea.config import apply_overrides
    from pointea.engine.checkpoint import load_checkpoint

    last = Path(run_dir) / "checkpoints" / "last.pt"
    checkpoint = load_checkpoint(last)
    config = config_from_dict(checkpoint["config"], source=str(last))
    return train(apply_overrides(config, overrides), run_dir, resume=True)


def _shorten_run(config: Config, epochs: int, scheduler, steps_per_epoch: int, state: TrainState, pace: float,
                 runlog, run_dir: Path) -> Config:
    """``config`` with ``train.epochs`` cut to ``epochs`` to keep within ``train.time_budget_s``: the
    schedule is re-planned to end there, and the cut logged and written to config.yaml."""
    from pointea.engine.schedule import shorten_schedule

    tc = config.train
    logger.warning("train.time_budget_s=%g: at %.1f s per epoch the remaining %d of %d epochs would end after "
                   "%.0f s; the schedule now ends after epoch %d", tc.time_budget_s, pace, tc.epochs - state.epoch,
                   tc.epochs, state.elapsed_s + pace * (tc.epochs - state.epoch), epochs)
    shorten_schedule(scheduler, epochs * steps_per_epoch)
    shortened = replace(config, train=replace(tc, epochs=epochs))
    if runlog is not None:
        runlog.write("plan", state.epoch, state.step, epochs=epochs, planned_epochs=tc.epochs,
                     epoch_seconds=round(pace, 3), elapsed_s=round(state.elapsed_s, 3))
        save_config(shortened, run_dir / "config.yaml")
    return shortened


def _run(config: Config, run_dir: Path, resume: bool, task: Task, select: str,
         context: DistributedContext, last_path: Path, best_path: Path) -> Dict[str, Any]:
    from pointea.engine.schedule import build_optimizer, build_scheduler, epochs_within_budget

    tc = config.train
    device = context.device
    _seed_everything(tc.seed)
    data = build_data(config, task, device)
    model = build_training_model(config, data).to(device)
    per_rank = tc.batch_size // context.world_size
    weights = sampling_weights(config, data)
    loader = loader_generator = None
    if data.train_tensors is None:
        loader, loader_generator = _make_train_loader(data, config, context)
    steps_per_epoch = data.num_train // tc.batch_size if loader is None else len(loader)
    if steps_per_epoch < 1:
        raise ValueError(
            f"the training split has {data.num_train} samples, fewer than one batch of "
            f"train.batch_size={tc.batch_size}; pass a smaller batch, e.g. "
            f"train.batch_size={max(1, min(data.num_train, tc.batch_size // 2))}"
        )
    optimizer = build_optimizer(model, tc)
    scheduler = build_scheduler(optimizer, tc, steps_per_epoch)
    ema = build_ema(model, tc.ema_decay)
    evaluated = model if ema is None else ema.module  # the model validated, selected and saved
    state = TrainState()
    if resume:
        state = checkpoints.restore_training(last_path, config, model, optimizer, scheduler, device, ema)
        if state.epoch >= tc.epochs:
            raise ValueError(
                f"{run_dir} has already completed {state.epoch} epochs (train.epochs={tc.epochs}); "
                f"pass train.epochs=N with N > {state.epoch} to train further"
            )

    net: nn.Module = model
    if context.distributed:
        if tc.sync_batchnorm:
            dist_utils.convert_to_global_batchnorm(model)
        device_ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if tc.compile:
        net = torch.compile(net)
    use_bf16 = resolve_amp(tc.amp, device)

    augment_generator = torch.Generator()
    augment = training_augmentation(config, augment_generator, len(data.meta.get("classes", ())) or None)

    runlog = None
    if context.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
        from pointea.engine.runlog import RunLog

        runlog = RunLog(run_dir, resume_at=(state.epoch, state.step) if resume else None)
        logger.info("training %s on %s: %d train / %d val samples, %d steps per epoch, %s%s",
                    config.model.preset, data.meta["name"], data.num_train, len(data.val_set),
                    steps_per_epoch, device, " (resumed at epoch %d)" % state.epoch if resume else "")
        if resume:
            runlog.write("resume", state.epoch, state.step)

    session_start = time.perf_counter()
    session_epochs = 0
    try:
        while state.epoch < tc.epochs:
            if tc.time_budget_s is not None and session_epochs:
                pace = (time.perf_counter() - session_start) / session_epochs
                epochs = dist_utils.broadcast_int(epochs_within_budget(
                    state.epoch, tc.epochs, state.elapsed_s, pace, tc.time_budget_s, tc.warmup_epochs), context)
                if epochs < tc.epochs:
                    config = _shorten_run(config, epochs, scheduler, steps_per_epoch, state, pace, runlog, run_dir)
                    tc = config.train
            epoch = state.epoch
            epoch_start = time.perf_counter()
            shared_seed = derive_seed(tc.seed, epoch, 0)
            augment_generator.manual_seed(shared_seed)
            torch.manual_seed(derive_seed(tc.seed, epoch, 1 + context.rank))  # dropout
            if loader is None:
                shuffle = torch.Generator().manual_seed(shared_seed)
                batches = _tensor_batches(data.train_tensors, tc.batch_size, shuffle, context, augment,
                                          weights)
            else:
                loader_generator.manual_seed(derive_seed(tc.seed, epoch, 1 + context.rank))
                if context.distributed:
                    loader.sampler.set_epoch(epoch)
                batches = _loader_batches(loader, device, augment)
            progress = None
            if tc.progress and context.is_main and sys.stderr.isatty():  # no bars in log files
                from tqdm import tqdm

                progress = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{tc.epochs}",
                                leave=False, dynamic_ncols=True)
            train_metrics = _train_one_epoch(net, batches, optimizer, scheduler, config, task, state,
                                             context, use_bf16, progress,
                                             None if ema is None else lambda: ema.update_parameters(model))
            if progress is not None:
                progress.close()
            seconds = time.perf_counter() - epoch_start
            state.epoch = epoch + 1
            state.train_time_s += seconds
            if runlog is not None:
                runlog.write("train", state.epoch, state.step, lr=optimizer.param_groups[0]["lr"],
                             seconds=round(seconds, 3),
                             samples_per_s=round(steps_per_epoch * tc.batch_size / seconds, 2),
                             **train_metrics)
            is_last = state.epoch == tc.epochs
            if state.epoch % tc.eval_every == 0 or is_last:
                val = validate(evaluated, data, per_rank, context, tc.label_smoothing)
                raw = None
                if ema is not None:
                    raw = validate(model, data, per_rank, context, tc.label_smoothing)
                state.last_val = val
                improved = val[select] > state.best_metric
                if improved:
                    state.best_metric, state.best_epoch, state.best_val = val[select], state.epoch, val
                if context.is_main:
                    runlog.write("val", state.epoch, state.step, **_scalars(val))
                    if raw is not None:
                        runlog.write("val_raw", state.epoch, state.step, **_scalars(raw))
                    logger.info("epoch %d/%d: train loss %.4f acc %.2f | val %s %.2f%s (best %.2f @ %d) | %.1fs",
                                state.epoch, tc.epochs, train_metrics["loss"], train_metrics["accuracy"],
                                select, val[select],
                                "" if raw is None else f" (EMA; trained weights {raw[select]:.2f})",
                                state.best_metric, state.best_epoch, seconds)
                    if improved:
                        checkpoints.save_checkpoint(
                            best_path, checkpoints.checkpoint_state(evaluated, data.meta, config, state, val))
            state.elapsed_s += time.perf_counter() - epoch_start
            if context.is_main and (state.epoch % tc.checkpoint_every == 0 or is_last):
                checkpoints.save_last(last_path, model, optimizer, scheduler, data.meta, config, state, ema)
            dist_utils.barrier(context)
            session_epochs += 1
    finally:
        if runlog is not None:
            runlog.close()

    session_time = time.perf_counter() - session_start
    result = {
        "run_dir": str(run_dir),
        "epochs": state.epoch,
        "select_metric": select,
        "best_epoch": state.best_epoch,
        "best": state.best_val,
        "last": state.last_val,
        "train_time_s": round(state.train_time_s, 3),
        "elapsed_s": round(state.elapsed_s, 3),
        "session_time_s": round(session_time, 3),
        "rank": context.rank,
    }
    if context.is_main:
        atomic_write_text(run_dir / "metrics.json", json.dumps(result, indent=2) + "\n")
        try:
            from pointea.plots import plot_training_curves

            plot_training_curves(run_dir)
        except Exception as error:  # a missing plot must not fail a finished run
            logger.warning("could not plot training curves: %s", error)
    return result
