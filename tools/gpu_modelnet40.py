"""Train and evaluate the ModelNet40 recipe within a wall-time budget, in one command.

Made for a GPU machine lent for a few minutes (it runs on a CPU too, for tests):

    PYTHONUNBUFFERED=1 python3 tools/gpu_modelnet40.py --data-root .carry/modelnet40_ply_hdf5_1024

1. Loads the recipe (``--config``, default ``modelnet40-cls``) with ``data.val_split=grouped``
   (validation in whole groups of near-identical shapes, see :mod:`pointea.data.dedup`), the
   chosen batch size, precision and compile setting, and any ``KEY=VALUE`` overrides given last.
2. Times the real training step on the device: the data on the device, the model, the batched
   augmentation, forward / backward / optimizer step, after ``--warmup-steps`` (and compilation);
   then one validation pass and one checkpoint write.
3. Plans ``train.epochs`` so that training, its validation epochs and the final evaluation end
   within ``--budget-s`` seconds of the script's start (default 480), with ``--safety`` margin,
   clamped to the recipe's epochs (or ``train.epochs=N`` given as override); prints the plan.
4. Runs ``pointea train`` with ``train.time_budget_s`` set to the time its epochs have until the
   deadline, so epochs slower than timed shorten the cosine schedule rather than run into the
   deadline (and if it still overruns, it is stopped there: the best checkpoint so far is kept),
   then ``pointea eval --split val`` of ``best.pt``.
5. Copies the results to ``--out`` (default ``$OUT``), at most eight files at its top level:
   ``gpu_modelnet40.json`` (settings, timings, plan, best and evaluated val metrics, wall times),
   ``run.log`` (everything printed), ``val.json``, ``val_per_class.csv``, ``log.jsonl``,
   ``config.yaml``, ``curves.png`` and ``best.pt``.

GPU settings, each an option with its default printed in the plan:

* ``--batch-size 128`` with the learning rate (and ``min_lr``) scaled linearly from the recipe's
  batch (32: lr 0.01 -> 0.04), ``--lr-scaling none`` to keep it. The model's farthest point
  sampling is a loop of several hundred small kernels whose cost hardly grows with the batch,
  so on a GPU a larger batch buys epochs almost for free.
* ``--amp auto``: bf16 autocast where the device runs it fast (every recent NVIDIA GPU).
* No ``torch.compile`` by default (``--compile`` turns it on): the sampling loop is unrolled when
  traced, so compilation takes minutes, and it would happen twice (here and in the training
  process), a large share of a budget of a few minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Dict, List, Optional, Sequence, Tuple

START = time.perf_counter()  # the budget counts from here

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "tools"):  # pointea need not be installed; pack_modelnet sits beside
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from pointea.atomic import atomic_write_text  # noqa: E402
from pointea.commands import positive_int  # noqa: E402
from pointea.config import AMP_MODES, Config, apply_overrides, load_config  # noqa: E402
from pack_modelnet import seed_group_cache  # noqa: E402

DEFAULT_DATA_ROOT = ".carry/modelnet40_ply_hdf5_1024"
SUMMARY = "gpu_modelnet40.json"
RUN_LOG = "run.log"
# what comes back, by source folder in the run: at most 8 files with the summary and the log
RUN_FILES = ("log.jsonl", "config.yaml", "curves.png", "val.json", "val_per_class.csv")
CHECKPOINT = "checkpoints/best.pt"
STOP_GRACE_S = 15.0  # SIGTERM, then SIGKILL after this many seconds


class Log:
    """Prints to stdout and appends to a log file."""

    def __init__(self, path: Path) -> None:
        self.handle: IO[str] = open(path, "a", encoding="utf-8")
        self.lock = threading.Lock()

    def __call__(self, text: str = "") -> None:
        with self.lock:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
            self.handle.write(text + "\n")
            self.handle.flush()

    def close(self) -> None:
        self.handle.close()


# --------------------------------------------------------------------------- settings


def run_overrides(args: argparse.Namespace, work: Path) -> List[str]:
    """The recipe overrides of this run: data, GPU settings, then the user's ``KEY=VALUE``."""
    recipe = load_config(args.config)
    scale = args.batch_size / recipe.train.batch_size if args.lr_scaling == "linear" else 1.0
    ours = [
        f"data.root={Path(args.data_root).resolve()}",
        f"data.val_split={args.val_split}",
        f"data.cache_dir={work / 'cache'}",
        f"train.batch_size={args.batch_size}",
        f"train.lr={_decimal(recipe.train.lr * scale)}",
        f"train.min_lr={_decimal(recipe.train.min_lr * scale)}",
        f"train.amp={args.amp}",
        f"train.compile={str(args.compile).lower()}",
        f"train.device={args.device}",
        "train.progress=false",
    ]
    return ours + list(args.overrides)


def _decimal(value: float) -> str:
    """``value`` as a plain decimal: YAML reads ``5e-05`` as a string, ``0.00005`` as a float."""
    return f"{value:.12f}".rstrip("0").rstrip(".") or "0"


# --------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(config: Config, warmup_steps: int, steps: int, scratch: Path) -> Dict[str, Any]:
    """Seconds of the pieces of an epoch of ``config``'s training, measured on its device.

    Returns:
        ``{"device", "device_name", "bf16", "data_s", "warmup_s", "step_s", "val_first_s",
        "val_s", "checkpoint_s", "steps_per_epoch", "num_train", "num_val", "peak_memory_gb"}``.
    """
    from pointea.engine.distributed import init_distributed
    from pointea.engine.schedule import build_optimizer
    from pointea.engine.train import (
        build_data, build_training_model, preset_task, resolve_amp, train_step, training_augmentation, validate,
    )

    tc = config.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    context = init_distributed(tc.device)
    device = context.device
    task = preset_task(config.model.preset, config.model.overrides)
    build_data(config, task, device)  # reads the data and computes the val groups into the cache
    _sync(device)
    start = time.perf_counter()
    data = build_data(config, task, device)  # as the training process will: from the cache
    _sync(device)
    data_s = time.perf_counter() - start
    if data.train_tensors is None:
        raise ValueError(f"{config.data.name}: the training split is not held in memory; cannot time it")
    count = data.num_train
    if count < tc.batch_size:
        raise ValueError(f"the training split has {count} shapes, fewer than one batch of {tc.batch_size}")
    torch.manual_seed(tc.seed)
    model = build_training_model(config, data).to(device)
    net = torch.compile(model) if tc.compile else model
    optimizer = build_optimizer(model, tc)
    use_bf16 = resolve_amp(tc.amp, device)
    generator = torch.Generator().manual_seed(tc.seed)
    augment = training_augmentation(config, generator, len(data.meta.get("classes", ())) or None)

    def step() -> None:
        index = torch.randperm(count, generator=generator)[: tc.batch_size].to(device)
        batch = {key: value[index] for key, value in data.train_tensors.items()}
        if augment is not None:
            batch = augment(batch)
        train_step(net, batch, optimizer, config, task, use_bf16)

    def timed(function, repeats: int) -> float:
        _sync(device)
        begin = time.perf_counter()
        for _ in range(repeats):
            function()
        _sync(device)
        return time.perf_counter() - begin

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    warmup_s = timed(step, warmup_steps)
    step_s = timed(step, steps) / steps
    per_rank = tc.batch_size // context.world_size

    def val_pass() -> None:
        validate(model, data, per_rank, context, smoothing=tc.label_smoothing)

    val_first_s = timed(val_pass, 1)
    val_s = timed(val_pass, 1)
    scratch.mkdir(parents=True, exist_ok=True)
    checkpoint_s = timed(lambda: _write_state(model, optimizer, scratch / "timing.pt"), 1)
    (scratch / "timing.pt").unlink()
    result = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "bf16": use_bf16,
        "compile": tc.compile,
        "data_s": data_s,
        "warmup_steps": warmup_steps,
        "warmup_s": warmup_s,
        "timed_steps": steps,
        "step_s": step_s,
        "samples_per_s": tc.batch_size / step_s,
        "val_first_s": val_first_s,
        "val_s": val_s,
        "checkpoint_s": checkpoint_s,
        "steps_per_epoch": count // tc.batch_size,
        "num_train": count,
        "num_val": len(data.val_set),
        "peak_memory_gb": (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None),
    }
    return result


def _write_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """A write the size of ``last.pt`` (weights and optimizer state), flushed to disk."""
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    with open(path, "wb") as handle:
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())


# --------------------------------------------------------------------------- plan


def plan_epochs(budget_s: float, elapsed_s: float, timing: Dict[str, Any], startup_s: float,
                max_epochs: int, eval_every: int = 1, safety: float = 0.9, reserve_s: float = 15.0) -> Dict[str, Any]:
    """How many epochs fit in what is left of the budget.

    A training process costs ``startup_s`` (interpreter and imports) + loading the data + the
    warm-up steps + ``reserve_s`` (plots, files) on top of its epochs; an epoch costs its steps,
    its share of a validation pass and two checkpoint writes; the final evaluation costs a
    process start, the data and one cold validation pass. ``safety`` of the time left is planned.

    Returns:
        ``{"epochs", "max_epochs", "epoch_s", "train_overhead_s", "eval_s", "available_s",
        "planned_train_s", "fits"}``; ``fits`` is False when not even one epoch fits (``epochs``
        is then 1).
    """
    epoch_s = (timing["steps_per_epoch"] * timing["step_s"] + timing["val_s"] / eval_every
               + 2 * timing["checkpoint_s"])
    train_overhead_s = startup_s + timing["data_s"] + timing["warmup_s"] + reserve_s
    eval_s = startup_s + timing["data_s"] + timing["val_first_s"] + reserve_s
    available_s = budget_s - elapsed_s - train_overhead_s - eval_s
    fitting = math.floor(safety * available_s / epoch_s) if available_s > 0 else 0
    epochs = max(1, min(max_epochs, fitting))
    return {
        "epochs": epochs, "max_epochs": max_epochs, "epoch_s": epoch_s, "train_overhead_s": train_overhead_s,
        "eval_s": eval_s, "available_s": available_s, "planned_train_s": train_overhead_s + epochs * epoch_s,
        "fits": fitting >= 1,
    }


# --------------------------------------------------------------------------- processes


def run_logged(command: Sequence[str], log: Log, deadline: Optional[float] = None) -> Tuple[int, bool]:
    """Run ``command``, its output line by line into ``log``; stop it at ``deadline``
    (a ``time.perf_counter()`` value). Returns ``(returncode, stopped at the deadline)``."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               bufsize=1, env=env, start_new_session=True)

    def pump() -> None:
        for line in process.stdout:
            log(line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    stopped = False
    try:
        process.wait(timeout=None if deadline is None else max(0.0, deadline - time.perf_counter()))
    except subprocess.TimeoutExpired:
        stopped = True
        log(f"[gpu_modelnet40] the budget's deadline passed: stopping pid {process.pid}")
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    reader.join()
    return process.returncode, stopped


def _pointea(*arguments: str) -> List[str]:
    return [sys.executable, "-m", "pointea", *arguments]


def _read_json(path: Path) -> Optional[Dict[str, Any]]:
    return json.loads(path.read_text()) if path.is_file() else None


def _epochs_done(run_dir: Path) -> int:
    log = run_dir / "log.jsonl"
    if not log.is_file():
        return 0
    epochs = [json.loads(line).get("epoch", 0) for line in log.read_text().splitlines() if line.strip()]
    return max(epochs, default=0)


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace, log: Log, out: Path, work: Path) -> Tuple[int, Dict[str, Any]]:
    """Time, plan, train, evaluate; returns the exit code and the summary."""
    from pointea.config import config_to_dict

    startup_s = time.perf_counter() - START  # interpreter, torch and pointea imports
    overrides = run_overrides(args, work)
    config = load_config(args.config, overrides)
    summary: Dict[str, Any] = {"config": args.config, "overrides": overrides, "budget_s": args.budget_s,
                               "torch": torch.__version__, "startup_s": startup_s}
    pack_info = Path(args.data_root) / "pack_info.json"
    if pack_info.is_file():
        summary["data"] = json.loads(pack_info.read_text())
    log(f"[gpu_modelnet40] {args.config}: batch {config.train.batch_size}, lr {config.train.lr:g} "
        f"(min {config.train.min_lr:g}, scaling {args.lr_scaling}), amp {config.train.amp}, "
        f"compile {config.train.compile}, val_split {config.data.val_split}, data {config.data.root}")

    if config.data.val_split == "grouped":
        seeded = seed_group_cache(config.data.root, config.data.cache_dir, config.data.name)
        summary["val_groups"] = {None: "computed from the points read", True: "carried from the float32 source",
                                 False: "computed from the points read (the carried ones were not found "
                                        "under the loader's key)"}[seeded]
        log(f"[gpu_modelnet40] grouped val split: groups {summary['val_groups']}")
    timing = time_training(config, args.warmup_steps, args.timing_steps, work / "scratch")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the timed model and data are gone: leave their memory to training
    summary["timing"] = timing
    log(f"[gpu_modelnet40] timing on {timing['device_name']} (bf16 {timing['bf16']}): "
        f"{timing['step_s'] * 1000:.1f} ms/step ({timing['samples_per_s']:.0f} samples/s), "
        f"{timing['steps_per_epoch']} steps/epoch, val pass {timing['val_s']:.2f} s, "
        f"warm-up {timing['warmup_s']:.1f} s, data {timing['data_s']:.1f} s, "
        f"checkpoint {timing['checkpoint_s']:.2f} s, peak memory {timing['peak_memory_gb']} GB")

    plan = plan_epochs(args.budget_s, time.perf_counter() - START, timing, startup_s, config.train.epochs,
                       config.train.eval_every, args.safety)
    summary["plan"] = plan
    log(f"[gpu_modelnet40] plan: {plan['epochs']} of at most {plan['max_epochs']} epochs at "
        f"{plan['epoch_s']:.2f} s each (about {plan['planned_train_s']:.0f} s of training, "
        f"{plan['eval_s']:.0f} s of final evaluation, {time.perf_counter() - START:.0f} s spent so far, "
        f"budget {args.budget_s:.0f} s)")
    if not plan["fits"]:
        log("[gpu_modelnet40] warning: not even one epoch fits the budget; training one epoch anyway")

    run_dir = work / "run"
    deadline = START + args.budget_s - plan["eval_s"]
    epochs_budget_s = max(1.0, deadline - time.perf_counter() - plan["train_overhead_s"])
    planned = [f"train.epochs={plan['epochs']}", f"train.time_budget_s={epochs_budget_s:.0f}"]
    train_overrides = overrides + planned
    summary["resolved_config"] = config_to_dict(apply_overrides(config, planned))
    started = time.perf_counter()
    code, stopped = run_logged(_pointea("train", "--config", args.config, "--run-dir", str(run_dir),
                                        *train_overrides), log, deadline)
    train_wall = time.perf_counter() - started
    metrics = _read_json(run_dir / "metrics.json") or {}
    summary["train"] = {"returncode": code, "stopped_at_deadline": stopped, "wall_s": train_wall,
                        "epochs_done": _epochs_done(run_dir), "best_epoch": metrics.get("best_epoch"),
                        "best": _scalars(metrics.get("best")), "last": _scalars(metrics.get("last")),
                        "train_time_s": metrics.get("train_time_s"), "session_time_s": metrics.get("session_time_s")}

    checkpoint = run_dir / CHECKPOINT
    evaluation = None
    if checkpoint.is_file():
        started = time.perf_counter()
        eval_code, _ = run_logged(_pointea("eval", "--checkpoint", str(checkpoint), "--split", "val",
                                           "--data-root", str(Path(args.data_root).resolve()),
                                           "--device", args.device, "--batch-size", str(config.train.batch_size),
                                           "--out", str(run_dir / "val.json")), log)
        evaluation = _read_json(run_dir / "val.json")
        summary["eval"] = {"returncode": eval_code, "wall_s": time.perf_counter() - started,
                           "metrics": _scalars(evaluation)}
    else:
        eval_code = 1
        log(f"[gpu_modelnet40] no {checkpoint}: nothing to evaluate")
    summary["wall_s"] = time.perf_counter() - START
    summary["val_overall_accuracy"] = evaluation.get("overall_accuracy") if evaluation else None
    summary["val_mean_class_accuracy"] = evaluation.get("mean_class_accuracy") if evaluation else None
    summary["planned_epochs"] = plan["epochs"]

    for name in RUN_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, out / name)
    if checkpoint.is_file():
        copy_checkpoint(checkpoint, out / "best.pt", summary.get("data", {}).get("source_up_axis"))
    failed = (code != 0 and not stopped) or eval_code != 0  # a run stopped at the deadline kept best.pt
    return (1 if failed else 0), summary


def _scalars(metrics: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The scalar entries of a metrics dict (the per-class tables stay in val.json and log.jsonl)."""
    if metrics is None:
        return None
    return {key: value for key, value in metrics.items() if isinstance(value, (int, float, str))}


def copy_checkpoint(source: Path, target: Path, up_axis: Optional[str]) -> None:
    """Copy a checkpoint, recording the packed clouds' own up axis: the HDF5 layout's default (y)
    is not theirs when they were packed from a z-up layout, and `pointea viz` stands clouds up by it."""
    from pointea.engine.checkpoint import load_checkpoint, save_checkpoint

    if up_axis is None:
        shutil.copy2(source, target)
        return
    state = load_checkpoint(source)
    state["dataset"] = {**state["dataset"], "up_axis": up_axis}
    save_checkpoint(target, state)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=DEFAULT_DATA_ROOT, metavar="DIR",
                        help="ModelNet40 folder, e.g. the packed copy (default: %(default)s)")
    parser.add_argument("--out", default=os.environ.get("OUT"), metavar="DIR",
                        help="results folder (default: $OUT)")
    parser.add_argument("--work-dir", default=None, metavar="DIR",
                        help="run folder and data cache (default: runs/modelnet40-gpu-<time>)")
    parser.add_argument("--config", default="modelnet40-cls", help="recipe (default: %(default)s)")
    parser.add_argument("--budget-s", type=float, default=480.0, metavar="S",
                        help="wall seconds for everything from start to the evaluated result (default 480)")
    parser.add_argument("--batch-size", type=positive_int, default=128, metavar="N")
    parser.add_argument("--lr-scaling", default="linear", choices=("linear", "none"),
                        help="scale lr and min_lr with the batch size from the recipe's (default linear)")
    parser.add_argument("--amp", default="auto", choices=AMP_MODES)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (default off)")
    parser.add_argument("--device", default="auto", help="auto (default), cuda, cuda:K or cpu")
    parser.add_argument("--val-split", default="grouped", choices=("grouped", "stratified"))
    parser.add_argument("--warmup-steps", type=positive_int, default=5, metavar="N")
    parser.add_argument("--timing-steps", type=positive_int, default=20, metavar="N")
    parser.add_argument("--safety", type=float, default=0.9,
                        help="share of the time left that the epochs are planned to fill (default 0.9)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="recipe overrides applied last, e.g. train.epochs=100")
    args = parser.parse_args(argv)
    if not args.out:
        parser.error("--out DIR is required when $OUT is not set")
    if not 0 < args.safety <= 1:
        parser.error(f"--safety must be in (0, 1], got {args.safety}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work_dir or f"runs/modelnet40-gpu-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = Log(out / RUN_LOG)
    summary: Dict[str, Any] = {}
    code = 1
    try:
        code, summary = run(args, log, out, work)
    except (ValueError, FileNotFoundError) as error:
        log(f"gpu_modelnet40: error: {error}")
        summary = {"error": str(error), "wall_s": time.perf_counter() - START}
        code = 2
    except Exception as error:  # e.g. out of memory: the summary says so, the traceback follows
        summary = {"error": f"{type(error).__name__}: {error}", "wall_s": time.perf_counter() - START}
        raise
    finally:
        summary["returncode"] = code
        with contextlib.suppress(OSError):
            atomic_write_text(out / SUMMARY, json.dumps(summary, indent=2, default=str) + "\n")
        log(f"[gpu_modelnet40] wall time {time.perf_counter() - START:.1f} s; "
            f"val overall accuracy {summary.get('val_overall_accuracy')}; wrote {out / SUMMARY}")
        log.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
