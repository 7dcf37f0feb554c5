"""Tests of pointea.engine.allocator: freed tensor memory is reused instead of faulted in again."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pointea.engine.allocator import NO_MALLOC_TUNING_ENV

# Runs one-pass external attention on a 65,536-point cloud (tensors of 16 and 32 MiB) and prints
# the median minor page faults of 11 passes after 5 warm-up passes: a one-off refault of a block
# in one pass (the heap settling after warm-up) must not decide the test.
FAULT_PROBE = """
import resource, statistics, torch
from pointea.engine.allocator import configure_allocator
from pointea.nn.attention import ExternalAttention
print(configure_allocator())
layer = ExternalAttention(128, 64, tile_size=0)
x = torch.randn(1, 65536, 128)
with torch.no_grad():
    for _ in range(5):
        layer(x)
    faults = []
    for _ in range(11):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        layer(x)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(int(statistics.median(faults)))
"""


def run_probe(tuning: bool) -> tuple:
    env = dict(os.environ)
    env.pop(NO_MALLOC_TUNING_ENV, None)
    if not tuning:
        env[NO_MALLOC_TUNING_ENV] = "1"
    out = subprocess.run([sys.executable, "-c", FAULT_PROBE], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt only on Linux")
def test_tuned_allocator_reuses_freed_tensor_memory():
    applied, tuned_faults = run_probe(tuning=True)
    skipped, default_faults = run_probe(tuning=False)
    assert applied and not skipped
    pages_per_pass = (16 + 32) * 2**20 // 4096  # the attention map and the output
    assert default_faults > 0.5 * pages_per_pass  # glibc maps and faults in big blocks anew
    assert tuned_faults < 0.1 * default_faults  # the heap keeps the pages
