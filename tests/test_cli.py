"""The package imports without Open3D, and the command line answers --help everywhere."""

import subprocess
import sys
from pathlib import Path

import pytest

from pointea.cli import COMMANDS, build_parser, main
from pointea.commands import positive_int


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


@pytest.mark.parametrize("argv, hint", [
    (["--config", "modelnet40-cls-cup"], "did you mean modelnet40-cls-cpu?"),
    (["--config", "synthetic-cls", "train.lrr=0.01"], "did you mean train.lr?"),
    (["--config", "synthetic-cls", "data.name=synthetik"], "did you mean synthetic?"),
    (["--config", "synthetic-cls", "model.preset=pointea-cls-mheaa"], "did you mean pointea-cls-mhea?"),
    (["--config", "synthetic-cls", "model.overrides.dropuot=0.3"], "did you mean model.overrides.dropout?"),
])
def test_train_typos_fail_before_any_data_is_read(argv, hint, tmp_path, monkeypatch, capsys):
    import pointea.engine.train as engine_train

    def no_data(*args, **kwargs):
        raise AssertionError("data was read")

    monkeypatch.setattr(engine_train, "build_data", no_data)
    run_dir = tmp_path / "run"
    assert main(["train", *argv, "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pointea train: error: ") and err.count("\n") == 1
    assert err.rstrip().endswith(hint)
    assert not run_dir.exists()


def test_train_device_auto_keeps_the_recipes_device(tmp_path, capsys):
    recipe = tmp_path / "cpu.yaml"
    recipe.write_text("train: {device: cpu}\n")
    assert main(["train", "--config", str(recipe), "--print-config"]) == 0
    assert "device: cpu" in capsys.readouterr().out
    assert main(["train", "--config", str(recipe), "--print-config", "--device", "cuda:1"]) == 0
    assert "device: cuda:1" in capsys.readouterr().out


# The option vocabulary that every command follows.
CANONICAL_METAVARS = {
    "--checkpoint": "CKPT",
    "--config": "NAME_OR_YAML",
    "--data-root": "DIR",
    "--run-dir": "DIR",
    "--device": "DEVICE",
}
FIXED_DEFAULTS = {"--device": "auto", "--split": "test"}
AGREEING_DEFAULTS = {"--batch-size", "--num-points", "--topk"}  # the same wherever they appear
# options whose metavar names a file format that differs by command (eval --out JSON, viz --out PNG)
FORMAT_OPTIONS = {"--out"}
FOLDER_OPTIONS = {"--resume", "--curves"}  # besides every --*-dir and --*-root
COUNT_OPTIONS = {"--batch-size", "--topk", "--count", "--num-points", "--votes"}


def _command_options():
    """{option string: {command: argparse action}} over every subcommand's visible options."""
    import argparse

    (subparsers,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    options = {}
    for command, parser in subparsers.choices.items():
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or action.nargs == 0:  # hidden aliases, flags, --help
                continue
            for option in action.option_strings:
                options.setdefault(option, {})[command] = action
    return options


def _metavar(action):
    return action.metavar or action.dest.upper()  # argparse's own default metavar


def test_every_command_speaks_the_same_option_vocabulary():
    options = _command_options()
    problems = []
    for option, actions in sorted(options.items()):
        metavars = {command: _metavar(action) for command, action in actions.items()}
        if option in CANONICAL_METAVARS:
            problems += [f"{command} {option} {metavar} (want {CANONICAL_METAVARS[option]})"
                         for command, metavar in metavars.items() if metavar != CANONICAL_METAVARS[option]]
        elif len(actions) > 1 and option not in FORMAT_OPTIONS and len(set(metavars.values())) > 1:
            problems.append(f"{option} metavars differ: {metavars}")
        defaults = {command: action.default for command, action in actions.items()}
        if option in FIXED_DEFAULTS:
            problems += [f"{command} {option} default {default!r} (want {FIXED_DEFAULTS[option]!r})"
                         for command, default in defaults.items() if default != FIXED_DEFAULTS[option]]
        if option in AGREEING_DEFAULTS and len(set(defaults.values())) > 1:
            problems.append(f"{option} defaults differ: {defaults}")
        if option in FOLDER_OPTIONS or option.endswith(("-dir", "-root")):
            problems += [f"{command} {option} {metavar} (a folder: want DIR)"
                         for command, metavar in metavars.items() if metavar != "DIR"]
        for command, action in actions.items():
            if (option in COUNT_OPTIONS or action.type is positive_int) and _metavar(action) != "N":
                problems.append(f"{command} {option} {_metavar(action)} (a count: want N)")
    assert not problems, "\n".join(problems)


def test_shared_options_are_where_the_convention_puts_them():
    parser = build_parser()
    for argv in (["eval", "--checkpoint", "x.pt"], ["viz", "--dataset", "synthetic"]):
        args = parser.parse_args(argv)
        assert (args.split, args.device, args.data_root) == ("test", "auto", None), argv
    args = parser.parse_args(["train", "--config", "synthetic-cls"])
    assert (args.device, args.data_root, args.run_dir) == ("auto", None, None)


def test_train_help_lists_every_shipped_recipe_with_its_summary():
    from pointea.config import available_configs

    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    section = text.split("shipped recipes (--config NAME):\n", 1)[1].split("\n\n", 1)[0]
    listed = {line.split()[0]: " ".join(line.split()[1:]) for line in section.splitlines()}
    assert sorted(listed) == sorted(available_configs())
    assert listed["synthetic-cls"] == "Classify the embedded procedural shapes"
    assert all(listed.values())
