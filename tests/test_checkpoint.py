import os
import random
import re

import numpy as np

import pytest
import torch

from pointea.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    capture_rng_state,
    export_weights,
    load_checkpoint,
    load_model,
    restore_rng_state,
    save_checkpoint,
)

CLASSES = ["sphere", "box", "cone"]


def tiny_classifier():
    from pointea.models import build_model

    return build_model("pointnet-cls", num_classes=len(CLASSES), embed_dims=(16, 32), head_dims=(16,))


def checkpoint_state(network, **extra):
    from pointea.models import model_config_to_dict

    state = {
        "model_config": model_config_to_dict(network.config),
        "model": network.state_dict(),
        "dataset": {
            "name": "synthetic",
            "task": "classification",
            "classes": CLASSES,
            "in_channels": 3,
            "num_points": 64,
        },
        "config": {"train": {"lr": 0.001}},
        "metrics": {"overall_accuracy": 50.0},
    }
    state.update(extra)
    return state


def plain_state():
    return {
        "model_config": {"task": "classification"},
        "model": {"weight": torch.arange(6.0).reshape(2, 3)},
        "dataset": {"name": "synthetic", "task": "classification", "classes": CLASSES},
        "metrics": {"overall_accuracy": 91.5},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]},
        "rng": {"torch": torch.get_rng_state()},
        "epoch": 3,
        "step": 120,
        "best_metric": 90.0,
    }


def test_round_trip_keeps_plain_values_and_tensors(tmp_path):
    path = save_checkpoint(tmp_path / "sub" / "last.pt", plain_state())
    state = load_checkpoint(path)
    assert state["format"] == CHECKPOINT_FORMAT and state["version"] == 1
    assert torch.equal(state["model"]["weight"], torch.arange(6.0).reshape(2, 3))
    assert state["dataset"]["classes"] == CLASSES
    assert state["epoch"] == 3 and state["best_metric"] == 90.0
    assert torch.equal(state["rng"]["torch"], plain_state()["rng"]["torch"])
    # The atomic write leaves no temporary file behind.
    assert os.listdir(tmp_path / "sub") == ["last.pt"]


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        load_checkpoint(path)


def test_truncated_file(tmp_path):
    path = save_checkpoint(tmp_path / "full.pt", plain_state())
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=re.escape(str(truncated)) + ".*truncated or corrupt"):
        load_checkpoint(truncated)


def test_random_bytes(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_checkpoint(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_checkpoint(path)


def test_plain_state_dict_is_rejected(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"layer.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError, match=re.escape(str(path)) + " is not a pointea checkpoint.*bare state_dict"):
        load_checkpoint(path)


def test_version_mismatch(tmp_path):
    path = tmp_path / "future.pt"
    torch.save({**plain_state(), "format": CHECKPOINT_FORMAT, "version": 99}, path)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*version 99.*version 1"):
        load_checkpoint(path)


def test_arbitrary_objects_are_refused(tmp_path):
    # weights_only loading refuses pickled class instances instead of running their code.
    path = tmp_path / "object.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "version": 1, "payload": ValueError("x")}, path)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_checkpoint(path)


def test_missing_entries(tmp_path):
    path = tmp_path / "partial.pt"
    save_checkpoint(path, {"model": {}})
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*'model_config'"):
        load_checkpoint(path)


def test_export_weights_drops_training_state(tmp_path):
    src = save_checkpoint(tmp_path / "last.pt", plain_state())
    dst = export_weights(src, tmp_path / "ship" / "model.pt")
    slim = load_checkpoint(dst)
    for key in ("optimizer", "scheduler", "rng", "epoch", "step", "best_metric"):
        assert key not in slim
    assert slim["metrics"] == {"overall_accuracy": 91.5}
    assert torch.equal(slim["model"]["weight"], plain_state()["model"]["weight"])
    assert dst.stat().st_size < src.stat().st_size


def test_load_model_round_trip(tmp_path):
    torch.manual_seed(0)
    model = tiny_classifier().eval()
    path = save_checkpoint(tmp_path / "model.pt", checkpoint_state(model))
    loaded, meta = load_model(path)
    assert not loaded.training
    assert meta["classes"] == CLASSES and meta["task"] == "classification"
    assert meta["metrics"] == {"overall_accuracy": 50.0}
    assert meta["config"] == {"train": {"lr": 0.001}}
    points = torch.randn(2, 64, 3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(points), model(points))


def test_load_model_reports_mismatched_weights(tmp_path):
    model = tiny_classifier()
    weights = dict(model.state_dict())
    removed = sorted(weights)[0]
    del weights[removed]
    weights["extra.weight"] = torch.zeros(1)
    path = save_checkpoint(tmp_path / "bad.pt", checkpoint_state(model, model=weights))
    with pytest.raises(ValueError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message
    assert "missing keys" in message and removed in message
    assert "unexpected keys" in message and "extra.weight" in message


@pytest.mark.parametrize(
    "change, message",
    [
        ({"dataset": "x"}, "'dataset' must be a dict, got str"),
        ({"model_config": "hello"}, "'model_config' must be a dict, got str"),
        ({"dataset": {"name": "synthetic", "task": "classification", "classes": CLASSES[:2]}},
         "lists 2 classes but the model has 3"),
        ({"dataset": {"name": "synthetic", "task": "classification", "classes": CLASSES, "num_points": 0}},
         "num_points must be a positive integer, got 0"),
    ],
)
def test_load_model_rejects_inconsistent_metadata(tmp_path, change, message):
    path = save_checkpoint(tmp_path / "bad.pt", checkpoint_state(tiny_classifier(), **change))
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_load_model_rejects_non_finite_weights(tmp_path):
    model = tiny_classifier()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    name = next(k for k, v in weights.items() if v.is_floating_point() and v.numel() > 1)
    weights[name].view(-1)[0] = float("nan")
    path = save_checkpoint(tmp_path / "nan.pt", checkpoint_state(model, model=weights))
    with pytest.raises(ValueError, match=f"NaN or inf weights in .*{re.escape(name)}"):
        load_model(path)


@pytest.mark.parametrize("content", ['{"a": 1}', "train:\n  lr: 0.01\n"])
def test_a_text_file_named_pt_gets_no_unsafe_advice(tmp_path, content):
    path = tmp_path / "config.pt"
    path.write_text(content)
    with pytest.raises(ValueError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert f"cannot load checkpoint {path}: " in message
    assert "weights_only" not in message


def test_load_model_on_a_missing_device_says_so(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    path = save_checkpoint(tmp_path / "model.pt", checkpoint_state(tiny_classifier()))
    with pytest.raises(ValueError, match="CUDA is not available"):
        load_model(path, device="cuda")


def test_rng_state_survives_a_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = save_checkpoint(tmp_path / "rng.pt", {**plain_state(), "rng": capture_rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    restore_rng_state(load_checkpoint(path)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_resume_check_gives_settings_newer_than_the_checkpoint_their_default():
    from pointea.config import config_to_dict, load_config
    from pointea.engine.checkpoint import check_resumable

    config = load_config(None, ["data.num_points=64"])
    saved = config_to_dict(config)
    del saved["data"]["split_seed"], saved["train"]["batch_size"]  # written before these existed
    check_resumable(saved, config, "old.pt")
    changed = load_config(None, ["data.num_points=64", "data.split_seed=3"])
    with pytest.raises(ValueError, match=r"data.split_seed: 0 -> 3"):
        check_resumable(saved, changed, "old.pt")
