"""The pretrained weights shipped in pointea/weights (subfolders included) load by name, predict,
and reproduce their recorded metrics."""

import json
import shlex
from pathlib import Path

import pytest
import torch
import yaml

from pointea.cli import main
from pointea.config import config_to_dict, load_config
from pointea.engine.checkpoint import _flatten, load_model
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


TRAIN_COMMANDS = [w for w in WEIGHTS if shlex.split(json.loads(_metrics_file(w).read_text())["command"])[:2]
                  == ["pointea", "train"]]


@pytest.mark.parametrize("weights", TRAIN_COMMANDS, ids=lambda p: p.name)
def test_recorded_command_rebuilds_the_recorded_config(weights, capsys):
    """A recipe changed after its weights were trained (or weights shipped from another run than the
    recorded command) shows up here: the command, resolved by ``pointea train --print-config`` with
    today's recipe, must give the config the weights were trained with. Keys a record lacks
    predate it and must still be at their defaults."""
    record = json.loads(_metrics_file(weights).read_text())
    capsys.readouterr()
    assert main(shlex.split(record["command"])[1:] + ["--print-config"]) == 0
    rebuilt = _flatten(yaml.safe_load(capsys.readouterr().out))
    recorded = _flatten(record["config"])
    defaults = _flatten(config_to_dict(load_config(None)))
    assert set(recorded) <= set(rebuilt), f"{weights.name}: record keys unknown to the config"
    for key, value in rebuilt.items():
        expected = recorded.get(key, defaults.get(key))
        assert value == expected, f"{weights.name}: {key} is {value!r} by its command, {expected!r} in its record"


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
