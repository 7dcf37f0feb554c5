"""Time and peak memory of the attention layers against the number of points.

For every attention type and N it measures the median time of a forward pass (no autograd) and
of a forward + backward pass, and the peak memory of each, at batch 1.

Peak memory is the highest amount of memory allocated *during* the pass on top of what was
allocated before it (inputs and parameters excluded):
  - CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.
  - CPU: ``torch.profiler`` with ``profile_memory=True`` records every allocation and free of
    PyTorch's CPU allocator in time order; the peak is the maximum of their running sum. This
    is a separate run from the timed ones, so profiling does not slow the timings down.

The quadratic layers are skipped instead of crashing when they would not fit: "ssa" and "oa"
when their predicted N x N maps exceed ``--max-memory``, and any layer whose time predicted
from the previous N (scaled by N^2 for the quadratic layers, N for the others) exceeds
``--time-budget``. Skipped cases appear in the table with the reason.

The scaling ratio of external attention, time(65,536) / time(4,096), is also measured in paired
rounds that time both sizes back to back (``--pair-rounds``), which keeps the drift of a shared
machine's speed out of it; the summary reports that median and the table-based ratio beside it.

Example:
    python tools/bench_attention.py --out /tmp/bench_attention.json --plot /tmp/bench_attention.png
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import nn

from pointea.atomic import atomic_path, atomic_write_text
from pointea.engine.allocator import configure_allocator
from pointea.nn.attention import build_attention

LOG = logging.getLogger("bench_attention")

TYPES = ("ea", "mhea", "sa", "ssa", "oa")
QUADRATIC = ("sa", "ssa", "oa")  # time grows with N^2
# N x N float maps alive at the peak of a pass (forward, forward + backward); "sa" uses torch's
# fused kernel, which never stores the map.
MAP_COPIES = {"ssa": (2, 4), "oa": (3, 6)}
SIZES = (1024, 2048, 4096, 8192, 16384, 32768, 65536)


def parse_bytes(text: str) -> int:
    """'4GiB', '512MiB', '1e9' -> bytes."""
    units = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "kb": 1e3, "mb": 1e6, "gb": 1e9, "b": 1}
    lowered = text.strip().lower()
    for unit, factor in units.items():
        if lowered.endswith(unit):
            return int(float(lowered[: -len(unit)]) * factor)
    return int(float(lowered))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_pass(layer: nn.Module, x: torch.Tensor, backward: bool) -> None:
    if backward:
        layer(x).sum().backward()
        layer.zero_grad(set_to_none=True)
        x.grad = None
    else:
        with torch.no_grad():
            layer(x)


def time_pass(layer: nn.Module, x: torch.Tensor, backward: bool, repeats: int, min_time: float, budget: float) -> float:
    """Median seconds of one pass after a warm-up.

    Runs at least ``repeats`` passes and, for quick cases, more until ``min_time`` seconds have
    been spent (at most 100), which steadies the median on a noisy machine; slow cases whose
    repeats would exceed ``budget`` report the warm-up pass alone.
    """
    device = x.device
    start = time.perf_counter()
    run_pass(layer, x, backward)  # warm-up
    synchronize(device)
    first = time.perf_counter() - start
    if first * (repeats + 1) > budget:
        return first
    times: List[float] = []
    while len(times) < repeats or (sum(times) < min_time and len(times) < 100):
        synchronize(device)
        start = time.perf_counter()
        run_pass(layer, x, backward)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory(layer: nn.Module, x: torch.Tensor, backward: bool) -> int:
    """Bytes allocated at the peak of one pass above what was allocated before it."""
    device = x.device
    if device.type == "cuda":
        synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run_pass(layer, x, backward)
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run_pass(layer, x, backward)
    events = sorted(
        (event.start_ns(), event.nbytes())
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]"
    )
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak


def skip_reason(
    name: str, n: int, backward: bool, previous: Optional[tuple], max_memory: int, budget: float
) -> Optional[str]:
    """Why the case (name, n) is not run, predicted before running it; None to run it."""
    if name in MAP_COPIES:
        predicted = MAP_COPIES[name][int(backward)] * n * n * 4
        if predicted > max_memory:
            return f"memory: N x N maps need ~{predicted / 2**30:.1f} GiB > --max-memory"
    if previous is not None:
        prev_n, prev_time = previous
        if prev_time == float("inf"):
            return "time: a smaller N was already skipped"
        exponent = 2 if name in QUADRATIC else 1
        predicted_time = prev_time * (n / prev_n) ** exponent
        if predicted_time > budget:
            return f"time: predicted {predicted_time:.0f} s > --time-budget"
    return None


def bench(args: argparse.Namespace) -> List[Dict]:
    device = torch.device(args.device)
    max_memory = parse_bytes(args.max_memory)
    results: List[Dict] = []
    for name in args.types:
        torch.manual_seed(0)
        layer = build_attention(name, args.dim, args.memory_size, args.heads).to(device)
        previous: Dict[bool, Optional[tuple]] = {False: None, True: None}
        for n in args.sizes:
            row: Dict = {"attention": name, "num_points": n}
            for backward in (False, True):
                key = "fwd_bwd" if backward else "fwd"
                reason = skip_reason(name, n, backward, previous[backward], max_memory, args.time_budget)
                if reason is None:
                    x = torch.randn(1, n, args.dim, device=device, requires_grad=backward)
                    try:
                        seconds = time_pass(layer, x, backward, args.repeats, args.min_time, args.time_budget)
                        row[f"{key}_ms"] = seconds * 1e3
                        row[f"{key}_peak_mib"] = peak_memory(layer, x, backward) / 2**20
                        previous[backward] = (n, seconds)
                    except (RuntimeError, MemoryError) as error:  # e.g. CUDA out of memory
                        reason = f"failed: {str(error).splitlines()[0][:80]}"
                    del x
                if reason is not None:
                    row[f"{key}_skipped"] = reason
                    previous[backward] = (n, float("inf"))
            results.append(row)
            LOG.info("%s", row)
    return results


def format_table(results: List[Dict]) -> str:
    header = f"{'attention':<9} {'N':>6} {'fwd ms':>10} {'fwd MiB':>10} {'fwd+bwd ms':>11} {'fwd+bwd MiB':>12}"
    lines = [header, "-" * len(header)]
    for row in results:
        cells = []
        for key, widths in (("fwd", (10, 10)), ("fwd_bwd", (11, 12))):
            if f"{key}_ms" in row:
                cells.append(f"{row[f'{key}_ms']:>{widths[0]}.1f} {row[f'{key}_peak_mib']:>{widths[1]}.1f}")
            else:
                mark = "skip: " + row[f"{key}_skipped"].split(":")[0]
                cells.append(f"{mark:>{widths[0]}} {'':>{widths[1]}}")
        lines.append(f"{row['attention']:<9} {row['num_points']:>6} {cells[0]} {cells[1]}")
    lines.append("skip: memory = predicted N x N maps over --max-memory; time = predicted time over --time-budget")
    return "\n".join(lines)


def summary(results: List[Dict]) -> Dict[str, Optional[float]]:
    """The scaling ratios the external attention design promises."""
    def value(name: str, n: int, key: str) -> Optional[float]:
        for row in results:
            if row["attention"] == name and row["num_points"] == n:
                return row.get(key)
        return None

    def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
        return a / b if a is not None and b else None

    return {
        "ea_time_65536_over_4096": ratio(value("ea", 65536, "fwd_ms"), value("ea", 4096, "fwd_ms")),
        "sa_over_ea_time_16384": ratio(value("sa", 16384, "fwd_ms"), value("ea", 16384, "fwd_ms")),
        "ssa_over_ea_memory_16384": ratio(value("ssa", 16384, "fwd_peak_mib"), value("ea", 16384, "fwd_peak_mib")),
        "oa_over_ea_memory_16384": ratio(value("oa", 16384, "fwd_peak_mib"), value("ea", 16384, "fwd_peak_mib")),
    }


def paired_scaling(args: argparse.Namespace, small: int = 4096, large: int = 65536) -> Dict[str, object]:
    """time(large) / time(small) of "ea", with both sizes timed back to back in each round.

    On a shared machine the speed drifts over seconds; the table's medians of the two sizes are
    taken at different moments, so their ratio carries that drift. Here every round times the
    small and the large cloud one after the other and the median of the per-round ratios is
    reported, with each round's ratio.
    """
    device = torch.device(args.device)
    torch.manual_seed(0)
    layer = build_attention("ea", args.dim, args.memory_size).to(device)
    x_small = torch.randn(1, small, args.dim, device=device)
    x_large = torch.randn(1, large, args.dim, device=device)
    ratios = []
    for _ in range(args.pair_rounds):
        small_s = time_pass(layer, x_small, False, args.repeats, 0.25, args.time_budget)
        large_s = time_pass(layer, x_large, False, args.repeats, 0.25, args.time_budget)
        ratios.append(large_s / small_s)
    return {"small": small, "large": large, "median": statistics.median(ratios), "rounds": ratios}


def plot(results: List[Dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in dict.fromkeys(row["attention"] for row in results):
        rows = [row for row in results if row["attention"] == name and "fwd_ms" in row]
        if not rows:
            continue
        sizes = [row["num_points"] for row in rows]
        axes[0].plot(sizes, [row["fwd_ms"] for row in rows], marker="o", label=name)
        axes[1].plot(sizes, [max(row["fwd_peak_mib"], 1e-3) for row in rows], marker="o", label=name)
    for ax, ylabel in zip(axes, ("forward time (ms)", "forward peak memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("number of points N")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("Attention cost against N (batch 1; missing points: skipped, see the table)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--types", nargs="+", default=list(TYPES), choices=TYPES)
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES), help="numbers of points N")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--memory-size", type=int, default=64, help="external attention slots S")
    parser.add_argument("--heads", type=int, default=4, help="heads of sa and mhea")
    parser.add_argument("--repeats", type=int, default=3, help="least timed passes per case (median)")
    parser.add_argument("--min-time", type=float, default=0.5, help="repeat quick cases for this many seconds")
    parser.add_argument("--max-memory", default="4GiB", help="skip N x N maps larger than this")
    parser.add_argument("--time-budget", type=float, default=30.0, help="seconds allowed per pass")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--pair-rounds", type=int, default=7,
                        help="rounds of the paired ea 65,536 / 4,096 time ratio (0 = skip it)")
    parser.add_argument("--no-malloc-tuning", action="store_true",
                        help="keep glibc's default malloc thresholds (what the pointea CLI sets otherwise)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--plot", type=Path, help="write a log-log plot (PNG) here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    malloc_tuned = False if args.no_malloc_tuning else configure_allocator()

    results = bench(args)
    print(format_table(results))
    ratios = summary(results)
    paired = paired_scaling(args) if args.pair_rounds > 0 and "ea" in args.types else None
    if paired is not None:
        ratios["ea_time_65536_over_4096_table"] = ratios.pop("ea_time_65536_over_4096")
        ratios["ea_time_65536_over_4096"] = paired["median"]
    for key, value in ratios.items():
        print(f"{key}: {'n/a' if value is None else f'{value:.1f}'}")
    if paired is not None:
        rounds = ", ".join(f"{r:.1f}" for r in paired["rounds"])
        print(f"ea_time_65536_over_4096 is the median of {len(paired['rounds'])} paired rounds: {rounds}")
    if args.out:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        payload = {
            "settings": settings,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "malloc_tuned": malloc_tuned,
            "results": results,
            "summary": ratios,
            "paired_scaling": paired,
        }
        atomic_write_text(args.out, json.dumps(payload, indent=2))
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
