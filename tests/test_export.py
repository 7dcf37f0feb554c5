import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from pointea.commands import export as export_command
from pointea.engine import export as export_module
from pointea.engine.checkpoint import save_checkpoint
from pointea.engine.export import export_model, onnx_missing
from pointea.models import build_model, model_config_to_dict

needs_onnx = pytest.mark.skipif(bool(onnx_missing()), reason='ONNX export needs pip install "pointea[export]"')

NUM_POINTS = 64
CATEGORY_PARTS = [[0, 1], [2], [3, 4, 5]]


def save(path, model, task, **dataset):
    state = {
        "model_config": model_config_to_dict(model.config),
        "model": model.state_dict(),
        "dataset": {"name": "synthetic", "task": task, "in_channels": model.config.in_channels,
                    "num_points": NUM_POINTS, **dataset},
    }
    return save_checkpoint(path, state)


@pytest.fixture(scope="module", params=[False, True], ids=["max-first", "edge-mlp"])
def attention_classifier(request, tmp_path_factory):
    """A tiny external-attention classifier: local shape descriptor, neighbour embedding (FPS + kNN,
    max-pooled after the first layer or, with ``edge_mlp``, after both) and two EA blocks."""
    torch.manual_seed(0)
    model = build_model("pointea-cls", num_classes=4, descriptor_neighbors=6, embed_dims=(16, 16), stage_dims=(32, 32),
                        stage_samples=(32, 16), num_neighbors=(8, 8), edge_mlp=request.param, num_blocks=2,
                        fuse_dim=32, head_dims=(32,))
    return save(tmp_path_factory.mktemp("ea") / "ea.pt", model.eval(), "classification", classes=list("abcd")), model


@needs_onnx
def test_torchscript_and_onnx_match_pytorch(tmp_path, attention_classifier):
    path, model = attention_classifier
    result = export_model(path, tmp_path / "out")
    for fmt in ("torchscript", "onnx"):
        assert result[fmt]["ok"] and result[fmt]["max_abs_diff"] < 1e-4
    assert result["num_points"] == NUM_POINTS

    # Independent check with another batch size (the batch axis is dynamic).
    points = torch.rand(5, NUM_POINTS, 3) * 2 - 1
    with torch.no_grad():
        expected = model.eval()(points).numpy()
    import onnxruntime

    session = onnxruntime.InferenceSession(result["onnx"]["path"], providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["points"]
    np.testing.assert_allclose(session.run(None, {"points": points.numpy()})[0], expected, atol=1e-4)
    with warnings.catch_warnings():  # PyTorch marks TorchScript deprecated; loading still works
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(result["torchscript"]["path"])
    np.testing.assert_allclose(scripted(points).detach().numpy(), expected, atol=1e-4)

    metadata = json.loads(Path(result["metadata"]).read_text())
    assert metadata["inputs"]["points"]["shape"] == ["batch", NUM_POINTS, 3]
    assert metadata["outputs"]["logits"]["shape"] == ["batch", 4]
    assert metadata["dataset"]["classes"] == list("abcd")


@needs_onnx
def test_segmentation_export_takes_the_category(tmp_path):
    torch.manual_seed(0)
    model = build_model("pointnet-partseg", category_parts=CATEGORY_PARTS, embed_dims=(16, 32), head_dims=(16,),
                        category_dim=8).eval()
    path = save(tmp_path / "seg.pt", model, "segmentation", categories=["x", "y", "z"], category_parts=CATEGORY_PARTS)
    result = export_model(path, tmp_path / "out", formats=("onnx",), name="seg")
    assert result["onnx"]["ok"] and "torchscript" not in result
    import onnxruntime

    session = onnxruntime.InferenceSession(result["onnx"]["path"], providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["points", "category"]
    points, category = torch.rand(4, NUM_POINTS, 3), torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        expected = model(points, category).numpy()
    actual = session.run(None, {"points": points.numpy(), "category": category.numpy()})[0]
    assert actual.shape == (4, NUM_POINTS, 6)
    np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_unknown_format_is_rejected(tmp_path, attention_classifier):
    with pytest.raises(ValueError, match="unknown export formats \\['tflite'\\].*torchscript, onnx"):
        export_model(attention_classifier[0], tmp_path, formats=("tflite",))


@needs_onnx
def test_cli_prints_the_check(tmp_path, capsys):
    torch.manual_seed(0)
    model = build_model("pointnet-cls", num_classes=3, embed_dims=(8, 16), head_dims=(8,)).eval()
    path = save(tmp_path / "small.pt", model, "classification", classes=["a", "b", "c"])
    parser = argparse.ArgumentParser()
    export_command.add_parser(parser.add_subparsers())
    argv = ["export", "--checkpoint", str(path), "--out-dir", str(tmp_path / "out"), "--format", "onnx"]
    args = parser.parse_args(argv)
    assert export_command.run(args) == 0
    out = capsys.readouterr().out
    assert "onnx:" in out and "ok" in out and "torchscript" not in out
    assert (tmp_path / "out" / "small.onnx").is_file()


@needs_onnx
def test_a_failing_exporter_is_reported_and_the_other_format_still_written(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator\nmore detail")

    monkeypatch.setattr(export_module, "export_onnx", broken)
    torch.manual_seed(0)
    model = build_model("pointnet-cls", num_classes=3, embed_dims=(8, 16), head_dims=(8,)).eval()
    path = save(tmp_path / "small.pt", model, "classification", classes=["a", "b", "c"])
    parser = argparse.ArgumentParser()
    export_command.add_parser(parser.add_subparsers())
    assert export_command.run(parser.parse_args(["export", "--checkpoint", str(path), "--out-dir", str(tmp_path)])) == 1
    out = capsys.readouterr().out
    assert "onnx: FAILED to export: RuntimeError: unsupported operator" in out
    assert "torchscript:" in out and "ok" in out
    assert (tmp_path / "small.torchscript.pt").is_file() and not (tmp_path / "small.onnx").exists()


def small_classifier(path):
    torch.manual_seed(0)
    model = build_model("pointnet-cls", num_classes=3, embed_dims=(8, 16), head_dims=(8,)).eval()
    return save(path, model, "classification", classes=["a", "b", "c"])


def run_cli(argv):
    parser = argparse.ArgumentParser()
    export_command.add_parser(parser.add_subparsers())
    return export_command.run(parser.parse_args(["export", *argv]))


def hide_onnx(monkeypatch) -> None:
    """As if the export extra were not installed, whether or not it is here."""
    for package in export_module.ONNX_PACKAGES:
        monkeypatch.setitem(sys.modules, package, None)


def test_without_onnx_the_default_writes_torchscript_and_metadata_and_says_why(tmp_path, monkeypatch, capsys):
    hide_onnx(monkeypatch)
    path = small_classifier(tmp_path / "small.pt")
    assert run_cli(["--checkpoint", str(path), "--out-dir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert 'onnx: skipped: ONNX export needs onnx and onnxruntime (not installed): pip install "pointea[export]"' in out
    assert "torchscript:" in out and "ok" in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["small.json", "small.torchscript.pt"]
    assert json.loads((tmp_path / "out" / "small.json").read_text())["source_checkpoint"] == "small.pt"


def test_without_onnx_asking_for_onnx_is_an_error_that_writes_nothing(tmp_path, monkeypatch, capsys):
    hide_onnx(monkeypatch)
    path = small_classifier(tmp_path / "small.pt")
    assert run_cli(["--checkpoint", str(path), "--out-dir", str(tmp_path / "out"), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.startswith('pointea export: error: ONNX export needs onnx and onnxruntime (not installed): '
                          'pip install "pointea[export]"')
    assert "--format torchscript" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ImportError, match=r"pointea\[export\]"):
        export_model(path, tmp_path / "out", formats=["torchscript", "onnx"])
    assert not (tmp_path / "out").exists()


def test_a_run_folder_exports_its_best_checkpoint_under_the_folder_name(tmp_path):
    run = tmp_path / "mn40"
    small_classifier(run / "checkpoints" / "best.pt")
    result = export_model(run, tmp_path / "out", formats="torchscript")
    assert result["torchscript"]["ok"] and result["torchscript"]["path"] == str(tmp_path / "out" / "mn40.torchscript.pt")
    assert json.loads(Path(result["metadata"]).read_text())["source_checkpoint"] == "best.pt"


def test_the_command_offers_the_engine_formats():
    assert export_command.FORMATS == export_module.FORMATS


# `pointea export` on a disk that is full once the checkpoint is loaded: no file may grow past
# 4 KiB (RLIMIT_FSIZE with SIGXFSZ ignored, so writes fail with EFBIG)
EXPORT_ON_A_FULL_DISK = """
import resource, signal, sys
from pointea.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX only")
def test_torchscript_export_on_a_full_disk_is_a_one_line_error(tmp_path, attention_classifier):
    import subprocess

    path, _ = attention_classifier
    out_dir = tmp_path / "out"
    argv = [sys.executable, "-c", EXPORT_ON_A_FULL_DISK, "export", "--checkpoint", str(path),
            "--out-dir", str(out_dir), "--format", "torchscript"]
    process = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert process.returncode == 1, process.stderr  # torch's own writer aborted with SIGABRT (-6)
    errors = [line for line in process.stderr.splitlines() if "error:" in line]
    assert errors == [f"pointea export: error: cannot write {out_dir / 'ea.torchscript.pt'}: file too large"], \
        process.stderr
    assert list(out_dir.glob("*.tmp")) == [] and list(out_dir.glob(".*.tmp")) == []
