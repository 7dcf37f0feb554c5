"""The pretrained weights shipped in pointea/weights (subfolders included) load by name, predict,
and reproduce their recorded metrics."""

import json
from pathlib import Path

import pytest
import torch

from pointea.engine.checkpoint import load_model
from pointea.engine.evaluate import evaluate
from pointea.pretrained import WEIGHTS_DIR, shipped_weights

WEIGHTS = sorted(WEIGHTS_DIR.rglob("*.pt"))

pytestmark = pytest.mark.skipif(not WEIGHTS, reason="no pretrained weights shipped")


def _metrics_file(weights: Path) -> Path:
    return weights.with_suffix(".json")


@pytest.mark.parametrize("weights", WEIGHTS, ids=lambda p: p.name)
def test_shipped_weights_are_small_and_documented(weights):
    assert weights.stat().st_size <= 20 * 2**20
    record = json.loads(_metrics_file(weights).read_text())
    assert {"command", "config", "metrics", "split", "hardware", "train_time_s"} <= set(record)


@pytest.mark.parametrize("weights", WEIGHTS, ids=lambda p: p.name)
def test_shipped_weights_load_by_name_and_predict(weights):
    name = weights.relative_to(WEIGHTS_DIR).with_suffix("").as_posix()
    assert shipped_weights()[name] == weights
    model, meta = load_model(name)
    points = torch.randn(2, meta["num_points"], meta["in_channels"])
    with torch.inference_mode():
        logits = model(points)
    assert logits.shape == (2, len(meta["classes"]))
    assert torch.isfinite(logits).all()


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One array cache for the module: the split and its near-duplicate groups are built once."""
    return tmp_path_factory.mktemp("cache")


@pytest.mark.realdata("ModelNet40")
@pytest.mark.parametrize("weights", [w for w in WEIGHTS if "modelnet40" in w.name], ids=lambda p: p.name)
def test_shipped_weights_reproduce_their_validation_accuracy(weights, shared_data, shared_cache, monkeypatch):
    monkeypatch.setenv("POINTEA_CACHE", str(shared_cache))
    record = json.loads(_metrics_file(weights).read_text())
    metrics = evaluate(weights, split=record["split"], data_root=shared_data)
    assert metrics["overall_accuracy"] == pytest.approx(record["metrics"]["overall_accuracy"], abs=1e-6)
    assert metrics["mean_class_accuracy"] == pytest.approx(record["metrics"]["mean_class_accuracy"], abs=1e-6)
