"""``pointea models``: list the model presets with their size and cost, and the shipped weights."""

from __future__ import annotations

import argparse
from typing import Any, Dict

from pointea.commands import positive_int

EPILOG = """examples:
  pointea models                      # presets (task, attention, parameters, GFLOPs) and shipped weights
  pointea models --num-points 2048    # GFLOPs per sample at 2,048 points
  pointea models --name pointea-cls   # one preset, with its full configuration
  pointea models --name pointea-cls-modelnet40-cpu   # shipped weights: how they were made

Shipped weights are used by name wherever a checkpoint is expected, e.g.
  pointea predict scan.ply --checkpoint pointea-cls-modelnet40-cpu
"""

DEFAULT_POINTS = 1024  # GFLOPs are quoted per 1,024-point cloud, as in the papers' tables
# short names of the recorded metrics, in the order shown
METRIC_LABELS = {
    "overall_accuracy": "OA",
    "mean_class_accuracy": "mAcc",
    "instance_miou": "ins. mIoU",
    "class_miou": "cls. mIoU",
}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "models",
        help="list model presets (parameters, GFLOPs) and the shipped pretrained weights",
        description="List the model presets with parameters and GFLOPs per sample "
        "(counted by torch.utils.flop_counter: matrix products, a multiply-add = 2 FLOPs), "
        "and the shipped pretrained weights with their data, size and recorded metrics.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--num-points", type=positive_int, metavar="N",
                        help=f"points per sample for GFLOPs (default {DEFAULT_POINTS})")
    parser.add_argument("--name", metavar="NAME", help="show only this preset or shipped weights, in detail")
    return parser


def run(args: argparse.Namespace) -> int:
    from pointea.models import PRESETS
    from pointea.pretrained import list_pretrained

    shipped = list_pretrained()
    if args.name is not None and args.name not in PRESETS and args.name not in shipped:
        from pointea.config import choices_hint

        hint = choices_hint(args.name, [*PRESETS, *shipped], "presets and shipped weights")
        raise SystemExit(f"pointea models: unknown preset or shipped weights {args.name!r}{hint}")
    if args.name is None or args.name in PRESETS:
        num_points = args.num_points or DEFAULT_POINTS
        print_presets([args.name] if args.name else list(PRESETS), num_points, detail=args.name is not None)
    if args.name is None or args.name in shipped:
        if args.name is None:
            print()
        print_weights([args.name] if args.name else shipped, detail=args.name is not None)
    return 0


def print_presets(names: list, num_points: int, detail: bool) -> None:
    """The presets table; with ``detail``, the configuration of its single preset."""
    from pointea.models import build_model, count_flops, count_parameters, model_config_to_dict

    header = f"{'preset':<20} {'task':<14} {'attention':<9} {'params (M)':>10} {f'GFLOPs@{num_points}':>12}"
    print(header)
    print("-" * len(header))
    for name in names:
        model = build_model(name)
        config = model.config
        gflops = count_flops(model, num_points) / 1e9
        params = count_parameters(model) / 1e6
        attention = config.attention if config.num_blocks > 0 else "-"
        print(f"{name:<20} {config.task:<14} {attention:<9} {params:>10.3f} {gflops:>12.3f}")
    if detail:
        print()
        for key, value in model_config_to_dict(model.config).items():
            print(f"  {key}: {value}")


def print_weights(names: list, detail: bool) -> None:
    """The shipped weights table (use them as ``--checkpoint NAME``); with ``detail``, their record."""
    from pointea.pretrained import weights_info

    width = max([len("shipped weights"), *map(len, names)])
    header = (f"{'shipped weights':<{width}} {'task':<14} {'data':<26} {'params (M)':>10} {'file (MiB)':>10}  "
              "recorded metrics")
    print(header)
    print("-" * len(header))
    if not names:
        print("(none shipped)")
    info = None
    for name in names:
        try:
            info = weights_info(name)
        except (OSError, ValueError) as error:  # one damaged file must not hide the others
            print(f"{name:<{width}} unreadable: {error}")
            continue
        data = f"{info['dataset'] or '?'}, {info['num_points'] or 'all'} pts, {info['in_channels']} ch"
        print(f"{name:<{width}} {info['task']:<14} {data:<26} {info['params'] / 1e6:>10.3f} "
              f"{info['file_mib']:>10.2f}  {format_metrics(split_label(info['split'], info['record']), info['metrics'])}")
    if detail and info is not None:
        record = info["record"]
        print()
        print(f"  file: {info['path']}")
        if info["preset"]:
            print(f"  built from preset: {info['preset']}, with the model overrides in its record")
        for key in ("command", "best_epoch", "train_time_s", "hardware"):
            if key in record:
                print(f"  {key}: {record[key]}")


def split_label(split: Any, record: Dict[str, Any]) -> Any:
    """``val (grouped)`` for metrics measured on the grouped validation split, which differs from
    the default stratified one (see ``data.val_split``); the split name otherwise."""
    data = (record.get("config") or {}).get("data") or {}
    if split == "val" and data.get("val_split", "stratified") != "stratified":
        return f"val ({data['val_split']})"
    return split


def format_metrics(split: Any, metrics: Dict[str, Any]) -> str:
    """``val OA 92.40, mAcc 89.15`` from a record's split and metrics ("-" when none)."""
    shown = [f"{label} {metrics[key]:.2f}" for key, label in METRIC_LABELS.items()
             if isinstance(metrics.get(key), (int, float))]
    if not shown:
        return "-"
    return f"{split or ''} {', '.join(shown)}".strip()
