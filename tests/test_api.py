"""The package-level Python API: lazy imports, and the README's example run as written."""

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pointea
from pointea.data import SyntheticShapes
from pointea.data.synthetic import CATEGORIES
from pointea.data.io import write_point_cloud

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_api_example() -> str:
    text = README.read_text()
    section = text[text.index("### Python API") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Python API section has no python block"
    return match.group(1)


def test_import_pointea_loads_neither_torch_nor_the_engine():
    code = "import sys, pointea; print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('pointea.')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_every_api_name_is_the_function_of_its_module():
    from pointea.config import load_config
    from pointea.engine.checkpoint import load_model
    from pointea.engine.evaluate import evaluate
    from pointea.engine.export import export_model
    from pointea.engine.predict import predict_files, predict_points
    from pointea.engine.robustness import robustness
    from pointea.engine.train import resume_training, train
    from pointea.models import build_model
    from pointea.data.io import read_point_cloud
    from pointea.pretrained import list_pretrained

    expected = {f.__name__: f for f in (load_config, load_model, evaluate, export_model, predict_files,
                                        predict_points, resume_training, train, build_model, read_point_cloud,
                                        list_pretrained, robustness)}
    assert set(pointea.__all__) == {"__version__", *expected}
    for name, function in expected.items():
        assert getattr(pointea, name) is function
        assert name in dir(pointea)


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        pointea.trian


def test_readme_example_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("POINTEA_CACHE", str(tmp_path / "cache"))
    shape = SyntheticShapes(split="test", num_points=1024, num_samples=1, seed=3)[0]
    write_point_cloud("scan.ply", shape["points"].numpy())

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(readme_api_example(), str(README), "exec"), {})
    lines = printed.getvalue().splitlines()

    summary = json.loads((tmp_path / "runs/api/metrics.json").read_text())
    assert (tmp_path / "runs/api/checkpoints/best.pt").is_file()
    best_epoch, best_accuracy, train_time = lines[0].split()
    assert 1 <= int(best_epoch) <= 3 and 0 <= float(best_accuracy) <= 100 and float(train_time) > 0
    assert int(best_epoch) == summary["best_epoch"]
    overall, mean_class = map(float, lines[1].split())
    assert 0 <= mean_class <= 100 and 0 <= overall <= 100
    top_class = lines[3]
    assert top_class in CATEGORIES
    assert lines[2].startswith(f"scan.ply [{{'class': '{top_class}'")  # file and array paths agree
