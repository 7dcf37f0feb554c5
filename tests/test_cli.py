"""The package imports without Open3D, and the command line answers --help everywhere."""

import subprocess
import sys

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
