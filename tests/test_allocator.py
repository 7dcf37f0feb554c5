"""Tests of pointea.engine.allocator: large tensors come from the reusable heap, not fresh mmaps."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pointea.engine.allocator import NO_MALLOC_TUNING_ENV

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt only on Linux")

TENSOR_BYTES = 32 * 2**20  # one (65,536 x 128) float32 tensor: the output of the probe's attention

# glibc's own accounting (mallinfo2) of a fresh process: bytes in mmapped blocks ("hblkhd") while a
# 32 MiB tensor is alive, and what freeing it leaves in the heap: the heap's size ("arena") and its
# free bytes ("fordblks"), which stay there for the next tensor when glibc does not trim the heap.
# Unlike page-fault counts, which also depend on the kernel, this says exactly where malloc put it.
MALLINFO_PROBE = """
import ctypes, json, torch
from pointea.engine.allocator import configure_allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
applied = configure_allocator()
before = libc.mallinfo2().hblkhd
first = torch.empty(%d, dtype=torch.uint8)
mmapped = libc.mallinfo2().hblkhd - before
heap = libc.mallinfo2().arena
del first
after = libc.mallinfo2()
print(json.dumps({"applied": applied, "mmapped": mmapped, "heap_shrink": heap - after.arena, "heap_free": after.fordblks}))
""" % TENSOR_BYTES

# One-pass external attention on a 65,536-point cloud (tensors of 16 and 32 MiB): the median minor
# page faults of 11 passes after 5 warm-up passes.
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


def run_python(code: str, tuning: bool) -> str:
    env = dict(os.environ)
    env.pop(NO_MALLOC_TUNING_ENV, None)
    if not tuning:
        env[NO_MALLOC_TUNING_ENV] = "1"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def test_default_malloc_serves_a_large_tensor_with_a_fresh_mmap():
    report = json.loads(run_python(MALLINFO_PROBE, tuning=False))
    assert report["applied"] is False
    assert report["mmapped"] >= TENSOR_BYTES  # returned to the OS on free, faulted in again next time


def test_tuned_malloc_serves_a_large_tensor_from_the_heap_and_keeps_it_after_free():
    report = json.loads(run_python(MALLINFO_PROBE, tuning=True))
    assert report["applied"] is True
    assert report["mmapped"] == 0
    assert report["heap_shrink"] == 0  # not handed back to the OS on free
    assert report["heap_free"] >= TENSOR_BYTES  # but kept, free, for the next tensor


def test_tuned_allocator_keeps_attention_passes_free_of_page_faults():
    applied, faults = run_python(FAULT_PROBE, tuning=True).split()
    assert applied == "True"
    pages_per_pass = (16 + 32) * 2**20 // 4096  # the attention map and the output, faulted anew untuned
    assert int(faults) < 0.05 * pages_per_pass
