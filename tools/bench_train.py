"""Training and inference throughput of every model preset (or of recipes' models) on this machine.

For each preset: samples/s of a training step (forward, backward, AdamW step) and of inference
(eval mode, ``torch.inference_mode``) at ``--num-points`` points and batch ``--batch-size``, in
fp32 and bf16 autocast, with the achieved GFLOP/s from ``pointea.models.count_flops`` (a training
step is counted as 3x the forward FLOPs). Prints a table and writes JSON with ``--out``; the JSON
also holds CPU seconds and minor page faults per step, which stay meaningful on a shared machine.

    python tools/bench_train.py --out bench_train.json
    python tools/bench_train.py --presets pointnet-cls --no-malloc-tuning   # allocator A/B
    python tools/bench_train.py --presets pointea-cls --compile             # torch.compile

``--recipe`` (repeatable) benchmarks the model of a training recipe instead, built from its
``model`` section with the recipe's ``key=value`` overrides as ``pointea train`` takes them, so
variants are timed side by side in one run (the table labels them #1, #2, ... in order):

    python tools/bench_train.py --dtypes bf16 --num-points 512 --recipe modelnet40-cls-cpu \
        --recipe "modelnet40-cls-cpu model.overrides.edge_mlp=true 'model.overrides.stage_dims=[64]' ..."
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shlex
import sys
import time
from typing import Any, Dict, List, Tuple

import torch
import torch.nn.functional as F

from pointea.atomic import atomic_write_text


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _targets(model, batch_size: int, num_points: int, device) -> torch.Tensor:
    config = model.config
    if config.task == "classification":
        return torch.randint(0, config.num_classes, (batch_size,), device=device)
    return torch.randint(0, config.num_parts, (batch_size, num_points), device=device)


def _loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if logits.dim() == 3:  # (B, N, P) part logits
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
    return F.cross_entropy(logits.float(), targets)


def recipe_model(spec: str) -> Tuple[str, str, Dict[str, Any]]:
    """``"RECIPE [key=value ...]"`` -> (RECIPE, model preset, its keyword overrides) as the recipe
    trains it."""
    from pointea.config import load_config

    words = shlex.split(spec)
    if not words:
        raise ValueError("--recipe needs a recipe name or YAML path")
    config = load_config(words[0], words[1:])
    return words[0], config.model.preset, dict(config.model.overrides)


def bench_preset(name: str, args, bf16: bool, device: torch.device,
                 overrides: Dict[str, Any] | None = None) -> Dict[str, object]:
    from pointea.models import build_model, count_flops, count_parameters, example_inputs

    torch.manual_seed(0)
    model = build_model(name, **(overrides or {})).to(device)
    flops = count_flops(model, args.num_points)
    inputs = example_inputs(model, args.num_points, args.batch_size)
    targets = _targets(model, args.batch_size, args.num_points, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    net = torch.compile(model) if args.compile else model
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)  # noqa: E731

    def train_step() -> None:
        with autocast():
            logits = net(*inputs)
        loss = _loss(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def infer_step() -> None:
        with torch.inference_mode(), autocast():
            net(*inputs)

    result: Dict[str, object] = {
        "preset": name, "dtype": "bf16" if bf16 else "fp32", "params": count_parameters(model),
        "gflops_per_sample": flops / 1e9,
    }
    for phase, step, factor in (("train", train_step, 3.0), ("infer", infer_step, 1.0)):
        model.train(phase == "train")
        start = time.perf_counter()
        for _ in range(args.warmup):
            step()
        _sync(device)
        result[f"{phase}_warmup_s"] = round(time.perf_counter() - start, 3)
        faults = _minor_faults()
        cpu_start = time.process_time()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        _sync(device)
        seconds = time.perf_counter() - start
        result[f"{phase}_cpu_s_per_step"] = round((time.process_time() - cpu_start) / args.steps, 3)
        rate = args.steps * args.batch_size / seconds
        result[f"{phase}_samples_per_s"] = round(rate, 2)
        result[f"{phase}_gflop_per_s"] = round(factor * flops * rate / 1e9, 2)
        result[f"{phase}_minor_faults_per_step"] = (_minor_faults() - faults) // args.steps
    return result


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def format_table(rows: List[Dict[str, object]]) -> str:
    header = (f"{'model':<24} {'dtype':<5} {'params':>8} {'GFLOP':>6} {'train/s':>8} {'GFLOP/s':>8} "
              f"{'infer/s':>8} {'GFLOP/s':>8}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['preset']:<24} {r['dtype']:<5} {r['params'] / 1e6:>7.2f}M {r['gflops_per_sample']:>6.2f} "
            f"{r['train_samples_per_s']:>8.1f} {r['train_gflop_per_s']:>8.1f} "
            f"{r['infer_samples_per_s']:>8.1f} {r['infer_gflop_per_s']:>8.1f}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    from pointea.models import PRESETS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--recipe", action="append", default=[], metavar='"RECIPE [key=value ...]"',
                        help="benchmark this recipe's model (repeatable) instead of the presets")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--num-points", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per phase")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per phase")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (warm-up = compile)")
    parser.add_argument("--no-malloc-tuning", action="store_true",
                        help="keep glibc's default malloc thresholds (what pointea train sets otherwise)")
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args(argv)

    from pointea.engine.allocator import configure_allocator

    tuned = False if args.no_malloc_tuning else configure_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.recipe:
        models = []
        for number, spec in enumerate(args.recipe, 1):
            try:
                recipe, preset, overrides = recipe_model(spec)
            except (ValueError, FileNotFoundError) as error:
                parser.error(f"--recipe {spec!r}: {error}")
            models.append((f"#{number} {recipe}", preset, overrides, spec))
    else:
        models = [(name, name, {}, None) for name in args.presets]
    rows = []
    for label, preset, overrides, spec in models:
        for dtype in args.dtypes:
            row = {**bench_preset(preset, args, dtype == "bf16", device, overrides), "preset": label}
            if spec is not None:
                row.update(recipe=spec, model_preset=preset, model_overrides=overrides)
            rows.append(row)
            print(f"{label} {dtype}: train {row['train_samples_per_s']} / infer {row['infer_samples_per_s']} "
                  f"samples/s", file=sys.stderr, flush=True)
    print(format_table(rows))
    for number, spec in enumerate(args.recipe, 1):
        print(f"#{number}: {spec}")
    if args.out:
        report = {
            "machine": {"platform": platform.platform(), "processor": platform.processor(),
                        "torch": torch.__version__, "threads": torch.get_num_threads(),
                        "device": str(device)},
            "settings": {"num_points": args.num_points, "batch_size": args.batch_size, "steps": args.steps,
                         "warmup": args.warmup, "compile": args.compile, "malloc_tuned": tuned},
            "results": rows,
        }
        atomic_write_text(args.out, json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
