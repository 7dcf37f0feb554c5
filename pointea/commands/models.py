"""``pointea models``: list the model presets with their size and cost."""

from __future__ import annotations

import argparse

from pointea.commands import positive_int

EPILOG = """examples:
  pointea models                      # every preset: task, attention, parameters, GFLOPs
  pointea models --num-points 2048    # GFLOPs per sample at 2,048 points
  pointea models --name pointea-cls   # one preset, with its full configuration
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "models",
        help="list model presets with parameter count and GFLOPs",
        description="List the model presets with parameters and GFLOPs per sample "
        "(counted by torch.utils.flop_counter: matrix products, a multiply-add = 2 FLOPs).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--num-points", type=positive_int, default=1024, help="points per sample for GFLOPs (default 1024)")
    parser.add_argument("--name", help="show only this preset and print its configuration")
    return parser


def run(args: argparse.Namespace) -> int:
    from pointea.models import PRESETS, build_model, count_flops, count_parameters, model_config_to_dict

    if args.name is not None and args.name not in PRESETS:
        raise SystemExit(f"pointea models: unknown preset {args.name!r}; valid: {', '.join(PRESETS)}")
    names = [args.name] if args.name else list(PRESETS)
    header = f"{'preset':<20} {'task':<14} {'attention':<9} {'params (M)':>10} {f'GFLOPs@{args.num_points}':>12}"
    print(header)
    print("-" * len(header))
    for name in names:
        model = build_model(name)
        config = model.config
        gflops = count_flops(model, args.num_points) / 1e9
        params = count_parameters(model) / 1e6
        attention = config.attention if config.num_blocks > 0 else "-"
        print(f"{name:<20} {config.task:<14} {attention:<9} {params:>10.3f} {gflops:>12.3f}")
    if args.name:
        print()
        for key, value in model_config_to_dict(build_model(args.name).config).items():
            print(f"  {key}: {value}")
    return 0
