"""Attention ablation: one recipe, one seed, one training run per attention type.

Every run uses the same recipe, seed, data and schedule; only ``model.overrides.attention``
changes. For each type the table gives the best validation accuracy (and its epoch), the last
epoch's and the mean of the last ten validation epochs (the best epoch is selected on the very
split it is reported on, so it flatters; the last ones do not), the parameters, GFLOPs per
sample at the recipe's number of points and at 1,024 points (counted by
``torch.utils.flop_counter``), and training speed as the median over the epochs of the run's own
log (samples/s and seconds per epoch; medians stay meaningful when a few epochs shared the
machine with other work, the total training time is in the JSON). Run folders are kept under
``--out-dir``: a finished run is read back instead of retrained, an interrupted one is resumed
from its ``last.pt``.

    python tools/ablation.py --config modelnet40-cls-cpu --data-root ../shared/data \\
        --attention ea sa none mhea --out-dir runs/ablation --out ablation.json train.epochs=12

Run the types one after another on an otherwise idle machine: samples/s come from the runs.

``--seeds 0 1 2`` trains every type once per seed (run folders ``<type>-seed<S>``) and adds a
second table: per type, the mean ± standard deviation over the seeds of the best, last and
last-10 validation figures. With one type it measures a recipe's spread over seeds:

    python tools/ablation.py --config modelnet40-cls-cpu --data-root ../shared/data \
        --attention ea --seeds 0 1 2 --out-dir runs/seeds --out seeds.json data.val_split=grouped
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path
from typing import Dict, List, Optional

from pointea.atomic import atomic_write_text
from pointea.config import apply_overrides, load_config
from pointea.engine.train import resume_training, train
from pointea.models import build_model, count_flops, count_parameters
from pointea.nn.attention import ATTENTION_TYPES

LOG = logging.getLogger("ablation")


def run_one(config, run_dir: Path) -> Dict:
    """Train (or resume, or read back) one run; returns its metrics.json content."""
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        LOG.info("%s: finished before, reading %s", run_dir.name, metrics_path)
    elif (run_dir / "checkpoints" / "last.pt").is_file():
        LOG.info("%s: resuming", run_dir.name)
        resume_training(run_dir)
    else:
        train(config, run_dir)
    return json.loads(metrics_path.read_text())


def logged_values(run_dir: Path, split: str, key: str) -> List[float]:
    """``key`` of each ``split`` record of a run's log, in epoch order."""
    records = map(json.loads, (run_dir / "log.jsonl").read_text().splitlines())
    return [record[key] for record in records if record.get("split") == split and key in record]


def median_train_speed(run_dir: Path, key: str) -> Optional[float]:
    """Median of ``key`` ("samples_per_s" or "seconds") over the training epochs of a run's log."""
    values = logged_values(run_dir, "train", key)
    return statistics.median(values) if values else None


def last_val_mean(run_dir: Path, key: str, count: int = 10) -> Optional[float]:
    """Mean of ``key`` over the last ``count`` validation records of a run's log: steadier than
    one epoch, and free of the selection bias of the best one."""
    values = logged_values(run_dir, "val", key)
    return statistics.mean(values[-count:]) if values else None


def ablation_row(attention: str, config, run_dir: Path, metrics: Dict) -> Dict:
    model = build_model(config.model.preset, **config.model.overrides)
    best = metrics["best"]
    return {
        "attention": attention,
        "seed": config.train.seed,
        "overall_accuracy": best["overall_accuracy"],
        "mean_class_accuracy": best.get("mean_class_accuracy"),
        "instance_miou": best.get("instance_miou"),
        "best_epoch": metrics["best_epoch"],
        "last_overall_accuracy": metrics["last"]["overall_accuracy"],
        "last10_overall_accuracy": last_val_mean(run_dir, "overall_accuracy"),
        "epochs": metrics["epochs"],
        "params": count_parameters(model),
        "gflops_recipe_points": count_flops(model, config.data.num_points) / 1e9,
        "gflops_1024_points": count_flops(model, 1024) / 1e9,
        "train_samples_per_s": median_train_speed(run_dir, "samples_per_s"),
        "epoch_seconds": median_train_speed(run_dir, "seconds"),
        "train_time_s": metrics.get("train_time_s"),
        "run_dir": str(run_dir),
    }


def format_table(rows: List[Dict], num_points: int) -> str:
    lines = [
        f"| attention | seed | val OA % | val mAcc % | best epoch | last / last-10 OA % | params | GFLOPs @{num_points} "
        "| GFLOPs @1024 | train samples/s | s / epoch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rate = "–" if r["train_samples_per_s"] is None else f"{r['train_samples_per_s']:.1f}"
        epoch = "–" if r["epoch_seconds"] is None else f"{r['epoch_seconds']:.1f}"
        lines.append(
            f"| {r['attention']} | {r['seed']} | {r['overall_accuracy']:.2f} | {r['mean_class_accuracy']:.2f} "
            f"| {r['best_epoch']} of {r['epochs']} | {r['last_overall_accuracy']:.2f} / "
            f"{r['last10_overall_accuracy']:.2f} | {r['params'] / 1e6:.2f} M | {r['gflops_recipe_points']:.3f} "
            f"| {r['gflops_1024_points']:.3f} | {rate} | {epoch} |"
        )
    return "\n".join(lines)


SPREAD_KEYS = ("overall_accuracy", "mean_class_accuracy", "last_overall_accuracy", "last10_overall_accuracy")


def seed_spread(rows: List[Dict]) -> List[Dict]:
    """Per attention type, in first-seen order: the seeds and, for each of :data:`SPREAD_KEYS`,
    the mean and sample standard deviation over the seeds (std None for a single seed)."""
    spread = []
    for attention in dict.fromkeys(row["attention"] for row in rows):
        runs = [row for row in rows if row["attention"] == attention]
        entry: Dict = {"attention": attention, "seeds": [row["seed"] for row in runs]}
        for key in SPREAD_KEYS:
            values = [row[key] for row in runs if row[key] is not None]
            entry[key] = {"mean": statistics.mean(values) if values else None,
                          "std": statistics.stdev(values) if len(values) > 1 else None}
        spread.append(entry)
    return spread


def format_spread(spread: List[Dict]) -> str:
    def cell(value: Dict) -> str:
        if value["mean"] is None:
            return "–"
        return f"{value['mean']:.2f}" + ("" if value["std"] is None else f" ± {value['std']:.2f}")

    lines = ["| attention | seeds | best OA % | best mAcc % | last OA % | last-10 OA % |",
             "|---|---|---:|---:|---:|---:|"]
    for entry in spread:
        seeds = ", ".join(map(str, entry["seeds"]))
        lines.append(f"| {entry['attention']} | {seeds} | " + " | ".join(cell(entry[key]) for key in SPREAD_KEYS) + " |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="recipe file or shipped recipe name")
    parser.add_argument("--data-root", help="dataset folder (same as data.root=DIR)")
    parser.add_argument("--attention", nargs="+", default=["ea", "sa", "none", "mhea"], choices=ATTENTION_TYPES)
    parser.add_argument("--seeds", nargs="+", type=int, metavar="S",
                        help="train each type once per seed and report mean ± std (default: the recipe's seed)")
    parser.add_argument("--out-dir", type=Path, required=True, help="one run folder per attention type (and seed)")
    parser.add_argument("--out", type=Path, help="write the table as JSON here")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides for every run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if any(item.startswith("model.overrides.attention=") for item in args.overrides):
        parser.error("the ablation sets model.overrides.attention itself; choose types with --attention")
    if args.seeds and any(item.startswith("train.seed=") for item in args.overrides):
        parser.error("--seeds sets train.seed itself; drop the train.seed override")
    if args.seeds:
        args.seeds = list(dict.fromkeys(args.seeds))  # a repeated seed would be one run counted twice
    overrides = list(args.overrides) + ([f"data.root={args.data_root}"] if args.data_root else [])
    base = load_config(args.config, overrides)
    rows = []
    for attention in args.attention:
        for seed in args.seeds or [base.train.seed]:
            config = apply_overrides(base, [f"model.overrides.attention={attention}", f"train.seed={seed}"])
            run_dir = args.out_dir / (f"{attention}-seed{seed}" if args.seeds else attention)
            metrics = run_one(config, run_dir)
            rows.append(ablation_row(attention, config, run_dir, metrics))
    print(format_table(rows, base.data.num_points))
    payload = {"config": args.config, "overrides": overrides, "rows": rows}
    if not args.seeds:
        payload["seed"] = base.train.seed
    else:
        payload["seeds"] = args.seeds
        payload["spread"] = seed_spread(rows)
        print()
        print(format_spread(payload["spread"]))
    if args.out:
        atomic_write_text(args.out, json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
