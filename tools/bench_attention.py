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

External attention has two inference paths (tiled with an online softmax, or one pass; see
``ExternalAttention``); ``--ea-paths`` times "ea" and "mhea" with each path given ("auto" shows
the path it chose, and the JSON holds its probe times). ``--load-procs K`` keeps K busy-loop
processes running for the duration of the benchmark, as on a shared machine or beside other
training processes, and stops them at the end. The summary and the paired ratio use the first
path of ``--ea-paths``.

Examples:
    python tools/bench_attention.py --out /tmp/bench_attention.json --plot /tmp/bench_attention.png
    python tools/bench_attention.py --types ea --sizes 16384 --threads 2 --ea-paths auto tiled one-pass \\
        --load-procs 1 --pair-rounds 0
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import torch
from torch import nn

from pointea.atomic import atomic_path, atomic_write_text
from pointea.engine.allocator import configure_allocator
from pointea.nn.attention import (
    EA_INFERENCE_PATHS,
    EA_TILE_SIZE,
    build_attention,
    external_attention_path_choices,
    reset_external_attention_path_choices,
)

LOG = logging.getLogger("bench_attention")

TYPES = ("ea", "mhea", "sa", "ssa", "oa")
EXTERNAL = ("ea", "mhea")  # the types with an inference path to choose
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


@contextmanager
def busy_processes(count: int) -> Iterator[List[int]]:
    """Keep ``count`` CPU-bound processes running while the block runs; yields their ids."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield [proc.pid for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def build_layer(name: str, args: argparse.Namespace, ea_path: Optional[str]) -> nn.Module:
    """The attention layer of the benchmark, with the external attention path ``ea_path``."""
    torch.manual_seed(0)
    layer = build_attention(name, args.dim, args.memory_size, args.heads)
    if ea_path is not None:
        layer.tile_size = args.tile_size
        layer.inference_path = ea_path
    return layer.to(torch.device(args.device))


def path_taken(layer: nn.Module, ea_path: str, n: int) -> str:
    """The inference path the latest no-grad pass of an external attention layer took."""
    if ea_path == "auto":
        return layer.last_inference_path
    return "tiled" if ea_path == "tiled" and layer.tile_size < n else "one-pass"


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
    cases = [(name, path) for name in args.types for path in (args.ea_paths if name in EXTERNAL else [None])]
    for name, ea_path in cases:
        layer = build_layer(name, args, ea_path)
        previous: Dict[bool, Optional[tuple]] = {False: None, True: None}
        for n in args.sizes:
            row: Dict = {"attention": name, "num_points": n}
            if ea_path is not None:
                row["ea_path"] = ea_path
            for backward in (False, True):
                key = "fwd_bwd" if backward else "fwd"
                reason = skip_reason(name, n, backward, previous[backward], max_memory, args.time_budget)
                if reason is None:
                    x = torch.randn(1, n, args.dim, device=device, requires_grad=backward)
                    try:
                        seconds = time_pass(layer, x, backward, args.repeats, args.min_time, args.time_budget)
                        row[f"{key}_ms"] = seconds * 1e3
                        if ea_path is not None and not backward:
                            row["path_taken"] = path_taken(layer, ea_path, n)
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


def label(row: Dict) -> str:
    """The table's name of a row: the attention, and for external attention its path
    ("ea auto>tiled": "auto" took the tiled path)."""
    if "ea_path" not in row:
        return row["attention"]
    taken = row.get("path_taken", "?")
    return f"{row['attention']} {row['ea_path']}" + (f">{taken}" if row["ea_path"] == "auto" else "")


def format_table(results: List[Dict]) -> str:
    header = f"{'attention':<19} {'N':>6} {'fwd ms':>10} {'fwd MiB':>10} {'fwd+bwd ms':>11} {'fwd+bwd MiB':>12}"
    lines = [header, "-" * len(header)]
    for row in results:
        cells = []
        for key, widths in (("fwd", (10, 10)), ("fwd_bwd", (11, 12))):
            if f"{key}_ms" in row:
                cells.append(f"{row[f'{key}_ms']:>{widths[0]}.1f} {row[f'{key}_peak_mib']:>{widths[1]}.1f}")
            else:
                mark = "skip: " + row[f"{key}_skipped"].split(":")[0]
                cells.append(f"{mark:>{widths[0]}} {'':>{widths[1]}}")
        lines.append(f"{label(row):<19} {row['num_points']:>6} {cells[0]} {cells[1]}")
    lines.append("skip: memory = predicted N x N maps over --max-memory; time = predicted time over --time-budget")
    return "\n".join(lines)


def summary(results: List[Dict], ea_path: str) -> Dict[str, Optional[float]]:
    """The scaling ratios the external attention design promises (external attention: ``ea_path``)."""
    def value(name: str, n: int, key: str) -> Optional[float]:
        for row in results:
            if row["attention"] == name and row["num_points"] == n and row.get("ea_path", ea_path) == ea_path:
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
    layer = build_layer("ea", args, args.ea_paths[0])
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
    for name in dict.fromkeys((row["attention"], row.get("ea_path")) for row in results):
        rows = [row for row in results if (row["attention"], row.get("ea_path")) == name and "fwd_ms" in row]
        if not rows:
            continue
        sizes = [row["num_points"] for row in rows]
        legend = " ".join(part for part in name if part)
        axes[0].plot(sizes, [row["fwd_ms"] for row in rows], marker="o", label=legend)
        axes[1].plot(sizes, [max(row["fwd_peak_mib"], 1e-3) for row in rows], marker="o", label=legend)
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
    parser.add_argument("--ea-paths", nargs="+", default=["auto"], choices=EA_INFERENCE_PATHS,
                        help="inference paths of ea and mhea to time (a row each); the first one feeds the summary")
    parser.add_argument("--tile-size", type=int, default=EA_TILE_SIZE, help="points per tile of the tiled path")
    parser.add_argument("--load-procs", type=int, default=0,
                        help="busy-loop processes kept running during the benchmark (a loaded machine)")
    parser.add_argument("--pair-rounds", type=int, default=7,
                        help="rounds of the paired ea 65,536 / 4,096 time ratio (0 = skip it)")
    parser.add_argument("--no-malloc-tuning", action="store_true",
                        help="keep glibc's default malloc thresholds (what the pointea CLI sets otherwise)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--plot", type=Path, help="write a log-log plot (PNG) here")
    args = parser.parse_args(argv)
    if args.tile_size < 1:
        parser.error(f"--tile-size must be >= 1, got {args.tile_size}")
    if args.load_procs < 0:
        parser.error(f"--load-procs must be >= 0, got {args.load_procs}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    malloc_tuned = False if args.no_malloc_tuning else configure_allocator()
    reset_external_attention_path_choices()  # report the choices of this run only

    with busy_processes(args.load_procs) as load_pids:
        results = bench(args)
        paired = paired_scaling(args) if args.pair_rounds > 0 and "ea" in args.types else None
    print(format_table(results))
    if args.load_procs:
        print(f"measured with {args.load_procs} busy-loop process(es) running beside it")
    choices = external_attention_path_choices()
    for choice in choices:
        print(f"auto probe, B*heads*N = {choice['elements']}, S = {choice['memory_size']}, "
              f"{choice['threads']} threads: one-pass {choice['one_pass_ms']:.1f} ms, "
              f"tiled {choice['tiled_ms']:.1f} ms -> {choice['path']}")
    ratios = summary(results, args.ea_paths[0])
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
            "load_pids": load_pids,
            "ea_path_choices": choices,
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
