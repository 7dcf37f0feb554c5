"""Turn a finished run into shippable pretrained weights: a slim checkpoint plus a metrics record.

The record (``NAME.json`` beside ``NAME.pt``) holds the exact training command, the resolved config,
the split the metrics were measured on (re-measured here with ``pointea.engine.evaluate``), the
training wall time and the hardware, so a README row can quote it and a test can reproduce it.
The run's last epoch (``last.pt``) is re-measured too: the best epoch was selected on the very
split it is measured on, so its figure flatters; the last one does not.

Example::

    python tools/export_pretrained.py runs/mn40-cpu --name pointea-cls-modelnet40-cpu \\
        --data-root ../shared/data --split val \\
        --command "pointea train --config modelnet40-cls-cpu --data-root DATA --run-dir runs/mn40-cpu"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import List, Optional

import torch

from pointea.atomic import atomic_write_text
from pointea.engine.checkpoint import export_weights, load_checkpoint
from pointea.engine.evaluate import evaluate
from pointea.pretrained import WEIGHTS_DIR


def hardware() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}, {platform.system()}"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="finished run folder (uses checkpoints/best.pt)")
    parser.add_argument("--name", required=True, help="file stem, saying task and dataset")
    parser.add_argument("--command", required=True, help="the exact command that trained the run")
    parser.add_argument("--data-root", default=None, help="dataset folder for the re-measurement")
    parser.add_argument("--split", default="val", help="split to measure (never used for selection)")
    parser.add_argument("--out-dir", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args(argv)

    best = args.run_dir / "checkpoints" / "best.pt"
    weights = export_weights(best, args.out_dir / f"{args.name}.pt")
    state = load_checkpoint(best)
    run_summary = json.loads((args.run_dir / "metrics.json").read_text())
    metrics = evaluate(weights, split=args.split, data_root=args.data_root)
    if state["dataset"]["task"] == "classification":
        keys = ("overall_accuracy", "mean_class_accuracy")
    else:
        keys = ("instance_miou", "class_miou")
    last = args.run_dir / "checkpoints" / "last.pt"
    last_metrics = evaluate(last, split=args.split, data_root=args.data_root)
    record = {
        "command": args.command,
        "split": args.split,
        "metrics": {key: metrics[key] for key in keys},
        "best_epoch": state.get("best_epoch"),
        "last_epoch_metrics": {key: last_metrics[key] for key in keys},
        "last_epoch": run_summary.get("epochs"),  # last.pt is written at every run's final epoch
        "train_time_s": run_summary.get("train_time_s"),  # epoch time of the whole run
        "wall_time_s": run_summary.get("session_time_s"),  # the "training wall time" it printed
        "hardware": hardware(),
        "config": state["config"],
    }
    atomic_write_text(weights.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    size_mib = weights.stat().st_size / 2**20
    print(f"wrote {weights} ({size_mib:.2f} MiB) and {weights.with_suffix('.json').name}")
    print(json.dumps(record["metrics"], indent=2))


if __name__ == "__main__":
    main()
