"""``pointea train``: train a model from a YAML recipe, or resume a run."""

from __future__ import annotations

import argparse
import logging
import re
import sys

from pointea.commands import add_data_root_argument, add_device_argument

DESCRIPTION = """\
Train a classifier or part segmenter from a YAML recipe (a shipped name or a file), with
section.key=value overrides. The run folder receives config.yaml (resolved), log.jsonl,
TensorBoard events (tb/), checkpoints/last.pt and best.pt (best on the validation split),
metrics.json and curves.png.

Under torchrun the same command trains with DistributedDataParallel (gloo on CPU, nccl on
GPU); train.batch_size is the global batch, split across the processes.
"""

EPILOG = """\
examples:
  pointea train --config synthetic-cls --run-dir runs/quickstart
  pointea train --config modelnet40-cls-cpu --data-root ~/data --run-dir runs/mn40
  pointea train --config folder-cls --data-root ~/scans --run-dir runs/scans
  pointea train --config my.yaml --run-dir runs/x train.lr=0.01 train.epochs=50 \\
      model.preset=pointnet-cls model.overrides.dropout=0.5 train.augmentation=[]
  pointea train --resume runs/mn40                 # continue after an interruption
  pointea train --config modelnet40-cls-cpu --data-root ~/data --run-dir runs/mn40-10min \\
      train.time_budget_s=600                      # cut the schedule to fit 10 minutes
  pointea train --config synthetic-cls --print-config train.amp=none
  torchrun --nproc_per_node 4 -m pointea train --config modelnet40-cls --data-root ~/data \\
      --run-dir runs/mn40-ddp
"""


def recipes_help() -> str:
    """The shipped recipes as an epilog section: name and the first phrase of its header comment."""
    from pointea.config import CONFIG_DIR, available_configs

    lines = []
    width = max(map(len, available_configs())) + 2
    for name in available_configs():
        first = (CONFIG_DIR / f"{name}.yaml").read_text(encoding="utf-8").splitlines()[:1] or [""]
        summary = re.split(r"[:(.;]", first[0].lstrip("# "), maxsplit=1)[0].strip()
        lines.append(f"  {name:<{width}} {summary}")
    return "shipped recipes (--config NAME):\n" + "\n".join(lines) + "\n\n"


def datasets_help() -> str:
    """The catalog's datasets as an epilog section: name, tasks and description."""
    from pointea.data.catalog import DATASETS

    width = max(map(len, DATASETS)) + 2
    lines = [f"  {name:<{width}} {'/'.join(spec.tasks)}: {spec.description}" for name, spec in DATASETS.items()]
    return "\ndatasets (data.name=NAME):\n" + "\n".join(lines) + "\n"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="train a model from a YAML recipe",
        description=DESCRIPTION,
        epilog=recipes_help() + EPILOG + datasets_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", metavar="NAME_OR_YAML", help="shipped recipe name or recipe file")
    source.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last.pt")
    parser.add_argument("--run-dir", metavar="DIR", help="run folder (required with --config)")
    add_data_root_argument(parser, help="dataset folder (same as data.root=DIR)")
    add_device_argument(
        parser,
        help="cpu, cuda, cuda:K or auto (same as train.device=...; default auto keeps the "
        "recipe's train.device, which is auto unless the recipe sets it)",
    )
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved configuration as YAML and exit")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides, e.g. train.lr=0.01 model.overrides.dropout=0.3")
    return parser


def run(args: argparse.Namespace) -> int:
    from pointea.config import config_to_yaml, load_config

    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    if args.device != "auto":  # auto leaves the device a recipe (or a resumed run) chose
        overrides.append(f"train.device={args.device}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.resume:
            if args.run_dir:
                raise ValueError("--resume DIR names the run folder; --run-dir goes with --config only")
            from pointea.engine.train import resume_training

            result = resume_training(args.resume, overrides)
        else:
            config = load_config(args.config, overrides)
            if args.print_config:
                sys.stdout.write(config_to_yaml(config))
                return 0
            if not args.run_dir:
                raise ValueError("--run-dir DIR is required with --config")
            from pointea.engine.train import train

            result = train(config, args.run_dir)
    except (ValueError, FileNotFoundError) as error:
        print(f"pointea train: error: {error}", file=sys.stderr)
        return 2
    if result.get("rank", 0) == 0:
        best = result["best"]
        metric = result["select_metric"]
        print(f"training wall time: {result['session_time_s']:.1f} s "
              f"(epoch time over the whole run: {result['train_time_s']:.1f} s)")
        if best:
            print(f"best val {metric}: {best[metric]:.2f} at epoch {result['best_epoch']}; "
                  f"run folder: {result['run_dir']}")
    return 0
