"""The package imports without Open3D, and the command line answers --help everywhere."""

import subprocess
import sys
from pathlib import Path

import pytest

from pointea.cli import COMMANDS, main


def test_importing_the_library_does_not_import_open3d():
    code = (
        "import sys\n"
        "import pointea, pointea.data, pointea.nn, pointea.models, pointea.cli, pointea.viz\n"
        "import pointea.engine.train, pointea.engine.evaluate, pointea.engine.predict\n"
        "pointea.cli.build_parser()\n"
        "print('open3d' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_python_m_pointea_help_lists_every_command():
    result = subprocess.run(
        [sys.executable, "-m", "pointea", "--help"], capture_output=True, text=True, check=True
    )
    for name in COMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"pointea {command}" in out
    assert "example" in out.lower()


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "<command>" in capsys.readouterr().out


SHIPPED = Path(__file__).resolve().parents[1] / "pointea" / "weights" / "pointea-cls-modelnet40-cpu.pt"


@pytest.mark.parametrize("argv", [
    ["eval", "--checkpoint", "x.pt", "--split", "val", "--num-points", "0"],
    ["predict", "a.xyz", "--checkpoint", "x.pt", "--num-points", "-5"],
    ["predict", "a.xyz", "--checkpoint", "x.pt", "--topk", "0"],
    ["export", "--checkpoint", "x.pt", "--out-dir", "e", "--num-points", "0"],
    ["viz", "a.xyz", "--out", "a.png", "--num-points", "0"],
])
def test_counts_below_one_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_resume_with_run_dir_is_refused(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--run-dir", str(tmp_path / "other")]) == 2
    assert "--run-dir goes with --config only" in capsys.readouterr().err


def test_unwritable_outputs_are_reported_without_a_traceback(tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("")
    assert main(["export", "--checkpoint", str(SHIPPED), "--out-dir", str(blocker)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pointea export: error:") and "afile" in err and "Traceback" not in err

    cloud = tmp_path / "a.xyz"
    cloud.write_text("0 0 0\n1 0 0\n0 1 0\n0 0 1\n")
    folder = tmp_path / "out.json"
    folder.mkdir()
    assert main(["predict", str(cloud), "--checkpoint", str(SHIPPED), "--out", str(folder)]) == 2
    assert "out.json is a folder" in capsys.readouterr().err


def test_viz_checks_its_options_before_writing_anything(tmp_path, capsys):
    clouds = []
    for name in ("a.xyz", "b.xyz"):
        clouds.append(tmp_path / name)
        clouds[-1].write_text("0 0 0\n1 0 0\n0 1 0\n0 0 1\n")
    png, page = tmp_path / "two.png", tmp_path / "two.html"
    assert main(["viz", *map(str, clouds), "--out", str(png), "--html", str(page)]) == 2
    assert "--html draws one cloud, got 2" in capsys.readouterr().err
    assert not png.exists() and not page.exists()
