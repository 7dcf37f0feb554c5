"""Tests of pointea.nn.attention: reference formulas, padding, permutation, gradients."""

from __future__ import annotations

import pytest
import torch

from pointea.nn import attention as attention_module
from pointea.nn.attention import (
    ATTENTION_TYPES,
    AttentionBlock,
    ExternalAttention,
    OffsetAttention,
    SimplifiedSelfAttention,
    build_attention,
    external_attention_path_choices,
    reset_external_attention_path_choices,
)

B, N, DIM, S = 2, 23, 32, 16


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _fresh_path_choices(monkeypatch):
    """Every test starts without the "auto" probe results of the tests before it."""
    monkeypatch.setattr(attention_module, "_PATH_CHOICES", {})


def reference_external_attention(x: torch.Tensor, mk: torch.Tensor, mv: torch.Tensor) -> tuple:
    """The paper's formulas, written out: returns (weights (..., N, S), output (..., N, d))."""
    logits = x @ mk.t()  # (..., N, S)
    weights = torch.exp(logits - logits.max(dim=-2, keepdim=True).values)
    weights = weights / weights.sum(dim=-2, keepdim=True)  # softmax over the points N
    weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-9)  # l1 over the slots S
    return weights, weights @ mv.t()


def capture_memory_input(layer: ExternalAttention) -> list:
    """Record what the second memory receives: the normalized attention weights."""
    seen = []
    layer.mv.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach()))
    return seen


def test_external_attention_single_head_matches_paper_formulas():
    layer = ExternalAttention(DIM, memory_size=S)
    x = torch.randn(B, N, DIM)
    seen = capture_memory_input(layer)
    out = layer(x)
    weights, expected = reference_external_attention(x, layer.mk.weight, layer.mv.weight)
    assert out.shape == (B, N, DIM)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert seen[0].shape == (B, 1, N, S)  # (B, heads, N, S)
    torch.testing.assert_close(seen[0][:, 0], weights, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(seen[0].sum(dim=-1), torch.ones(B, 1, N), atol=1e-5, rtol=0)


def test_external_attention_multi_head_matches_paper_formulas():
    heads = 4
    layer = ExternalAttention(DIM, memory_size=S, num_heads=heads)
    x = torch.randn(B, N, DIM)
    seen = capture_memory_input(layer)
    out = layer(x)
    projected = layer.proj_in(x)
    head_outputs = []
    for h in range(heads):  # every head uses the same two memories
        part = projected[..., h * DIM // heads:(h + 1) * DIM // heads]
        head_outputs.append(reference_external_attention(part, layer.mk.weight, layer.mv.weight)[1])
    expected = layer.proj_out(torch.cat(head_outputs, dim=-1))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert layer.mk.weight.shape == (S, DIM // heads) and layer.mv.weight.shape == (DIM // heads, S)
    assert seen[0].shape == (B, heads, N, S)
    torch.testing.assert_close(seen[0].sum(dim=-1), torch.ones(B, heads, N), atol=1e-5, rtol=0)


def test_external_attention_softmax_norm_is_a_softmax_over_slots():
    layer = ExternalAttention(DIM, memory_size=S, norm="softmax")
    x = torch.randn(B, N, DIM)
    expected = torch.softmax(x @ layer.mk.weight.t(), dim=-1) @ layer.mv.weight.t()
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


def test_external_attention_memories_are_bias_free_and_mv_starts_as_mk_transpose():
    layer = ExternalAttention(DIM, memory_size=S)
    assert layer.mk.bias is None and layer.mv.bias is None
    torch.testing.assert_close(layer.mv.weight, layer.mk.weight.t())


def test_external_attention_gradients_reach_both_memories():
    layer = ExternalAttention(DIM, memory_size=S)
    layer(torch.randn(B, N, DIM)).square().sum().backward()
    for weight in (layer.mk.weight, layer.mv.weight):
        assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_simplified_self_attention_formula():
    x = torch.randn(B, N, DIM)
    expected = torch.softmax(x @ x.transpose(1, 2), dim=-1) @ x
    torch.testing.assert_close(SimplifiedSelfAttention(DIM)(x), expected, atol=1e-5, rtol=1e-5)


def test_offset_attention_formula():
    layer = OffsetAttention(DIM)
    x = torch.randn(B, N, DIM)
    q = layer.qk(x)
    attn = torch.softmax(q @ q.transpose(1, 2), dim=-1)  # (B, i, j), softmax over j
    attn = attn / (attn.sum(dim=1, keepdim=True) + 1e-9)  # l1 over i
    expected = x - attn.transpose(1, 2) @ layer.v(x)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ATTENTION_TYPES)
def test_block_padding_does_not_change_real_points(name):
    block = AttentionBlock(DIM, name, memory_size=S, num_heads=4, ffn_ratio=2.0)
    real = torch.randn(1, 13, DIM)
    alone = block(real)
    # Pad the cloud with 9 large random points, interleaved with the real ones.
    padded = torch.randn(1, 22, DIM) * 10
    mask = torch.zeros(1, 22, dtype=torch.bool)
    positions = torch.randperm(22)[:13].sort().values
    padded[0, positions] = real[0]
    mask[0, positions] = True
    out = block(padded, mask)
    torch.testing.assert_close(out[0, positions], alone[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ATTENTION_TYPES)
def test_block_is_permutation_equivariant(name):
    block = AttentionBlock(DIM, name, memory_size=S, num_heads=4)
    x = torch.randn(B, N, DIM)
    perm = torch.randperm(N)
    torch.testing.assert_close(block(x[:, perm]), block(x)[:, perm], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ATTENTION_TYPES)
def test_block_backward_reaches_every_parameter(name):
    block = AttentionBlock(DIM, name, memory_size=S, num_heads=4, ffn_ratio=1.0)
    block(torch.randn(B, N, DIM)).square().sum().backward()
    for pname, param in block.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), pname


def test_external_attention_with_all_points_padded_stays_finite():
    layer = ExternalAttention(DIM, memory_size=S)
    mask = torch.tensor([[True] * N, [False] * N])
    out = layer(torch.randn(B, N, DIM), mask)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("path, tile_lengths", [("tiled", [5, 5, 5, 5, 3]), ("one-pass", [N])])
@pytest.mark.parametrize("heads", [1, 4])
def test_forced_inference_paths_match_paper_formulas(heads, path, tile_lengths):
    # tile_size 5 with N = 23: five tiles, the last one of 3 points.
    layer = ExternalAttention(DIM, memory_size=S, num_heads=heads, tile_size=5, inference_path=path)
    x = torch.randn(B, N, DIM) * 3  # large logits exercise the running maximum
    seen = capture_memory_input(layer)
    with torch.no_grad():
        out = layer(x)
    assert [weights.shape[2] for weights in seen] == tile_lengths  # one M_v call per tile
    assert external_attention_path_choices() == []  # a forced path never probes
    d = DIM // heads
    parts = layer.proj_in(x).view(B, N, heads, d).transpose(1, 2)
    weights, per_head = reference_external_attention(parts, layer.mk.weight, layer.mv.weight)
    expected = layer.proj_out(per_head.transpose(1, 2).reshape(B, N, DIM))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(seen, dim=2), weights, atol=1e-6, rtol=1e-5)


def test_tiled_inference_path_excludes_padding_like_the_one_pass_path():
    layer = ExternalAttention(DIM, memory_size=S, tile_size=5, inference_path="tiled")
    x = torch.randn(3, N, DIM) * 3
    mask = torch.rand(3, N) > 0.4
    mask[0, :12] = False  # the first tiles hold no real point: running maximum starts at -inf
    mask[1] = False  # no real point at all: all weights exactly 0
    with torch.no_grad():
        tiled = layer(x, mask)
        layer.tile_size = 0
        one_pass = layer(x, mask)
    torch.testing.assert_close(tiled[mask], one_pass[mask], atol=1e-5, rtol=1e-5)
    assert torch.equal(tiled[1], torch.zeros(N, DIM))
    assert torch.isfinite(tiled).all()


def test_tiled_inference_path_is_stable_for_very_negative_logits_after_padded_tiles():
    layer = ExternalAttention(DIM, memory_size=S, tile_size=5, inference_path="tiled")
    with torch.no_grad():
        layer.mk.weight.fill_(1.0)
    x = torch.full((1, N, DIM), -5.0) + 0.1 * torch.randn(1, N, DIM)  # logits near -160
    mask = torch.ones(1, N, dtype=torch.bool)
    mask[0, :10] = False  # the first two tiles are padding
    with torch.no_grad():
        tiled = layer(x, mask)
        layer.tile_size = 0
        one_pass = layer(x, mask)
    assert torch.isfinite(tiled).all() and tiled[0, 10:].abs().sum() > 0
    torch.testing.assert_close(tiled[mask], one_pass[mask], atol=1e-5, rtol=1e-5)


def test_training_uses_the_one_pass_path_and_backpropagates():
    layer = ExternalAttention(DIM, memory_size=S, tile_size=5)
    seen = capture_memory_input(layer)
    layer(torch.randn(B, N, DIM)).sum().backward()
    assert len(seen) == 1 and seen[0].shape[2] == N
    assert layer.mk.weight.grad is not None and layer.mv.weight.grad is not None


def test_bad_arguments_raise_value_errors_naming_choices():
    with pytest.raises(ValueError, match="valid: ea, mhea, sa, ssa, oa, none"):
        build_attention("transformer", DIM)
    with pytest.raises(ValueError, match="'double', 'softmax'"):
        ExternalAttention(DIM, norm="l2")
    with pytest.raises(ValueError, match="divide dim"):
        ExternalAttention(DIM, num_heads=5)
    with pytest.raises(ValueError, match="inference_path 'fast'; valid: auto, tiled, one-pass"):
        ExternalAttention(DIM, inference_path="fast")
    with pytest.raises(ValueError, match="> 0 for inference_path='tiled'"):
        ExternalAttention(DIM, tile_size=None, inference_path="tiled")


class FakeClock:
    """A timer that only advances when a wrapped path runs, by that path's set cost."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def timed_paths(monkeypatch, layer: ExternalAttention, costs: dict) -> list:
    """Make the probe's timer read ``costs[path]`` seconds per call of each path; returns the calls."""
    clock, calls = FakeClock(), []
    monkeypatch.setattr(attention_module, "_clock", clock)
    for path, method in (("tiled", "_tiled_double_norm"), ("one-pass", "_one_pass")):
        original = getattr(layer, method)

        def run(x, mask, path=path, original=original):
            calls.append(path)
            clock.now += costs[path]
            return original(x, mask)

        monkeypatch.setattr(layer, method, run)
    return calls


def expected_external_attention(layer: ExternalAttention, x: torch.Tensor) -> torch.Tensor:
    return reference_external_attention(x, layer.mk.weight, layer.mv.weight)[1]


@pytest.mark.parametrize("tiled_s, one_pass_s, chosen", [
    (1.0, 2.0, "tiled"),
    (2.0, 1.0, "one-pass"),
    (0.95, 1.0, "one-pass"),  # within EA_TILED_MARGIN: the one-pass path is safer under load
])
def test_auto_path_is_the_probed_faster_one_and_is_cached(monkeypatch, tiled_s, one_pass_s, chosen):
    layer = ExternalAttention(DIM, memory_size=S, tile_size=5)
    calls = timed_paths(monkeypatch, layer, {"tiled": tiled_s, "one-pass": one_pass_s})
    x = torch.randn(B, N, DIM) * 3
    with torch.no_grad():
        first = layer(x)
        assert calls == ["one-pass", "tiled", "one-pass", "tiled"]  # two probe rounds: not decisive
        assert layer.last_inference_path == chosen
        second = layer(x)
    assert calls[4:] == [chosen]  # the choice is cached: no second probe
    (choice,) = external_attention_path_choices()
    assert choice["path"] == chosen and choice["elements"] == B * N
    assert (choice["tiled_ms"], choice["one_pass_ms"]) == (tiled_s * 1e3, one_pass_s * 1e3)
    expected = expected_external_attention(layer, x)
    torch.testing.assert_close(first, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(second, expected, atol=1e-5, rtol=1e-5)


def test_auto_probe_stops_after_one_decisive_round_and_sizes_are_probed_apart(monkeypatch):
    layer = ExternalAttention(DIM, memory_size=S, tile_size=5)
    calls = timed_paths(monkeypatch, layer, {"tiled": 50.0, "one-pass": 1.0})  # the collapse under load
    with torch.no_grad():
        layer(torch.randn(B, N, DIM))
        assert calls == ["one-pass", "tiled"]
        layer(torch.randn(B, 4 * N, DIM))  # another power-of-two bucket of B * N: probed on its own
    assert calls == ["one-pass", "tiled"] * 2
    assert [row["elements"] for row in external_attention_path_choices()] == [B * N, B * 4 * N]
    reset_external_attention_path_choices()
    with torch.no_grad():
        layer(torch.randn(B, N, DIM))  # probed again
    assert calls == ["one-pass", "tiled"] * 3


@pytest.mark.parametrize("chosen, costs_after", [
    ("tiled", {"tiled": 6.0, "one-pass": 2.0}),  # the cores became oversubscribed: tiled slows down
    ("one-pass", {"tiled": 0.1, "one-pass": 0.2}),  # the load went away
])
def test_auto_probes_again_when_the_load_changes(monkeypatch, chosen, costs_after):
    layer = ExternalAttention(DIM, memory_size=S, tile_size=5)
    costs = {"tiled": 1.0, "one-pass": 2.0} if chosen == "tiled" else {"tiled": 2.0, "one-pass": 1.0}
    calls = timed_paths(monkeypatch, layer, costs)
    x = torch.randn(B, N, DIM)
    with torch.no_grad():
        layer(x)
        layer(x)  # as fast as probed: kept
        assert calls[4:] == [chosen] and len(external_attention_path_choices()) == 1
        costs.update(costs_after)
        layer(x)  # one call out of line (a preemption, say): kept
        costs.update({"tiled": 1.0, "one-pass": 2.0} if chosen == "tiled" else {"tiled": 2.0, "one-pass": 1.0})
        layer(x)  # back in line: the strike is forgotten
        costs.update(costs_after)
        layer(x)
        assert calls[4:] == [chosen] * 4 and len(external_attention_path_choices()) == 1
        layer(x)  # the second call in a row out of line: served by the old choice, which is dropped
        assert calls[8:] == [chosen] and external_attention_path_choices() == []
        out = layer(x)
    assert calls[9:] == ["one-pass", "tiled", "one-pass", "tiled"]
    other = "one-pass" if chosen == "tiled" else "tiled"
    assert layer.last_inference_path == other == external_attention_path_choices()[0]["path"]
    torch.testing.assert_close(out, expected_external_attention(layer, x), atol=1e-5, rtol=1e-5)


def test_auto_uses_one_pass_without_probing_for_small_clouds_and_training(monkeypatch):
    layer = ExternalAttention(DIM, memory_size=S, tile_size=N)
    calls = timed_paths(monkeypatch, layer, {"tiled": 1.0, "one-pass": 2.0})
    with torch.no_grad():
        layer(torch.randn(B, N, DIM))  # N <= tile_size
    layer.tile_size = 5
    layer(torch.randn(B, N, DIM)).sum().backward()  # autograd on
    assert calls == ["one-pass", "one-pass"] and external_attention_path_choices() == []


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated, still supported
def test_auto_never_probes_while_scripted_traced_or_exported(monkeypatch):
    layer = ExternalAttention(DIM, memory_size=S, num_heads=4, tile_size=5).eval()

    def no_probe(x, mask):
        raise AssertionError("probed while compiling")

    monkeypatch.setattr(layer, "_probe", no_probe)
    x = torch.randn(B, N, DIM) * 3
    mask = torch.rand(B, N) > 0.3
    with torch.no_grad():
        expected = layer.proj_out(torch.cat([
            expected_external_attention(layer, part) for part in layer.proj_in(x).chunk(4, dim=-1)], dim=-1))
        masked = ExternalAttention(DIM, memory_size=S, num_heads=4, tile_size=0)
        masked.load_state_dict(layer.state_dict())
        masked = masked(x, mask)
        scripted = torch.jit.script(layer)
        traced = torch.jit.trace(layer, (x, mask), check_trace=False)
        exported = torch.export.export(layer, (x, mask)).module()
        for compiled in (scripted, traced, exported):
            torch.testing.assert_close(compiled(x, mask), masked, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(scripted(x), expected, atol=1e-5, rtol=1e-5)
        layer.inference_path = "tiled"  # a forced path still compiles
        torch.testing.assert_close(torch.jit.script(layer)(x), expected, atol=1e-5, rtol=1e-5)
    assert external_attention_path_choices() == []
