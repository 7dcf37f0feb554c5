"""The pretrained weights shipped in pointea/weights load, predict, and reproduce their metrics."""

import json
from pathlib import Path

import pytest
import torch

from pointea.engine.checkpoint import load_model
from pointea.engine.evaluate import evaluate

WEIGHTS = sorted((Path(__file__).resolve().parents[1] / "pointea" / "weights").glob("*.pt"))

pytestmark = pytest.mark.skipif(not WEIGHTS, reason="no pretrained weights shipped")


def _metrics_file(weights: Path) -> Path:
    return weights.with_suffix(".json")


@pytest.mark.parametrize("weights", WEIGHTS, ids=lambda p: p.name)
def test_shipped_weights_are_small_and_documented(weights):
    assert weights.stat().st_size <= 20 * 2**20
    record = json.loads(_metrics_file(weights).read_text())
    assert {"command", "config", "metrics", "split", "hardware", "train_time_s"} <= set(record)


@pytest.mark.parametrize("weights", WEIGHTS, ids=lambda p: p.name)
def test_shipped_weights_load_and_predict(weights):
    model, meta = load_model(weights)
    points = torch.randn(2, meta["num_points"], meta["in_channels"])
    with torch.inference_mode():
        logits = model(points)
    assert logits.shape == (2, len(meta["classes"]))
    assert torch.isfinite(logits).all()


@pytest.mark.realdata("ModelNet40")
@pytest.mark.parametrize("weights", [w for w in WEIGHTS if "modelnet40" in w.name], ids=lambda p: p.name)
def test_shipped_weights_reproduce_their_validation_accuracy(weights, shared_data, cache_dir, monkeypatch):
    monkeypatch.setenv("POINTEA_CACHE", str(cache_dir))
    record = json.loads(_metrics_file(weights).read_text())
    metrics = evaluate(weights, split=record["split"], data_root=shared_data)
    assert metrics["overall_accuracy"] == pytest.approx(record["metrics"]["overall_accuracy"], abs=1e-6)
    assert metrics["mean_class_accuracy"] == pytest.approx(record["metrics"]["mean_class_accuracy"], abs=1e-6)
