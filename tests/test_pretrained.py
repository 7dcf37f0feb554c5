"""Shipped weights by name, run folders as checkpoints, and ``pointea models`` listing the weights."""

import configparser
import fnmatch
import logging
import re
import shutil
from pathlib import Path

import pytest
import torch

import pointea
from pointea import pretrained
from pointea.cli import main
from pointea.engine.checkpoint import load_model
from pointea.models import count_parameters

ROOT = Path(__file__).resolve().parents[1]
NAME = "pointea-cls-modelnet40-cpu"
SHIPPED = ROOT / "pointea" / "weights" / f"{NAME}.pt"

pytestmark = pytest.mark.skipif(not SHIPPED.is_file(), reason=f"{SHIPPED.name} is not shipped")


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    """A weights folder of the test's own: the shipped file at the top and one in ablation/."""
    folder = tmp_path / "weights"
    (folder / "ablation").mkdir(parents=True)
    shutil.copy(SHIPPED, folder / "top.pt")
    shutil.copy(SHIPPED, folder / "ablation" / "top-ea.pt")
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", folder)
    return folder


def test_a_shipped_name_loads_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, meta = pointea.load_model(NAME)
    reference, _ = load_model(SHIPPED)
    assert NAME in pointea.list_pretrained()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    assert pretrained.resolve_checkpoint(f"{NAME}.pt") == SHIPPED
    assert meta["classes"] and meta["num_points"] > 0


def test_an_existing_path_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path(NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=re.escape(NAME) + ".*not a file saved with torch.save"):
        load_model(NAME)


def test_an_unknown_name_lists_the_shipped_ones_and_the_closest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        load_model("pointea-cls-modelnet40-gpu")
    message = str(error.value)
    assert "checkpoint not found: pointea-cls-modelnet40-gpu" in message
    assert f"shipped weights: {', '.join(pointea.list_pretrained())}" in message
    assert f"did you mean {NAME}" in message
    assert "did you mean" not in str(pytest.raises(FileNotFoundError, load_model, "zzz").value)


def test_weights_in_subfolders_are_listed_and_resolved(weights_dir):
    assert pretrained.list_pretrained() == ["ablation/top-ea", "top"]
    assert pretrained.resolve_checkpoint("ablation/top-ea") == weights_dir / "ablation" / "top-ea.pt"
    assert pretrained.resolve_checkpoint("top-ea") == weights_dir / "ablation" / "top-ea.pt"  # unique stem
    assert pretrained.resolve_checkpoint("top") == weights_dir / "top.pt"
    with pytest.raises(FileNotFoundError, match=r"\(shipped weights: ablation/top-ea, top\); did you mean top-ea"):
        pretrained.resolve_checkpoint("top-ae")


def test_package_data_ships_every_weights_file():
    """setup.cfg must carry the files of pointea/weights and its ablation/ subfolder into a wheel."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    patterns = [p.strip() for p in parser["options.package_data"]["pointea"].split(",")]
    package = ROOT / "pointea"
    shipped = [p.relative_to(package).as_posix() for p in (package / "weights").rglob("*") if p.is_file()]
    for relative in shipped + ["weights/ablation/pointea-cls-modelnet40-cpu-ea.pt",
                               "weights/ablation/pointea-cls-modelnet40-cpu-ea.json"]:
        # setuptools globs do not cross folders, fnmatch's * does: compare the depth too
        assert any(fnmatch.fnmatch(relative, p) and p.count("/") == relative.count("/") for p in patterns), relative


def test_a_run_folder_stands_for_its_best_checkpoint(tmp_path, caplog):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(SHIPPED, run / "checkpoints" / "best.pt")
    with caplog.at_level(logging.INFO, logger="pointea.pretrained"):
        model, _ = load_model(run)
    assert [r.getMessage() for r in caplog.records] == [f"{run} is a run folder: using its checkpoints/best.pt"]
    assert count_parameters(model) > 0


def test_a_folder_without_a_best_checkpoint_says_what_it_lacks(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"folder without checkpoints/best.pt: checkpoints/ holds no \.pt"):
        load_model(run)
    shutil.copy(SHIPPED, run / "checkpoints" / "last.pt")
    with pytest.raises(FileNotFoundError, match=r"checkpoints/ holds last\.pt; pass one of those files"):
        load_model(run)
    with pytest.raises(FileNotFoundError, match="no checkpoints/ subfolder, so it is not a pointea run folder"):
        load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"it holds last\.pt: pass one of those files"):
        load_model(run / "checkpoints")


def test_cli_commands_take_a_shipped_name(tmp_path, capsys):
    cloud = tmp_path / "a.xyz"
    cloud.write_text("\n".join(f"{i % 7} {i % 5} {i % 3}" for i in range(50)) + "\n")
    assert main(["predict", str(cloud), "--checkpoint", NAME]) == 0
    assert "a.xyz" in capsys.readouterr().out
    assert main(["predict", str(cloud), "--checkpoint", "no-such-weights"]) == 2
    assert f"shipped weights: {', '.join(pretrained.list_pretrained())})" in capsys.readouterr().err


def test_models_lists_the_shipped_weights_with_their_own_size(capsys):
    model, meta = load_model(SHIPPED)
    assert main(["models", "--name", NAME]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith(NAME))
    record = pretrained.weights_record(SHIPPED)
    assert f"{count_parameters(model) / 1e6:.3f}" in row
    assert f"{SHIPPED.stat().st_size / 2**20:.2f}" in row
    assert f"{meta['num_points']} pts" in row and meta["name"] in row
    grouped = record["split"] == "val" and record["config"]["data"].get("val_split") == "grouped"
    split = "val (grouped)" if grouped else record["split"]
    assert f"{split} OA {record['metrics']['overall_accuracy']:.2f}" in row
    assert f"command: {record['command']}" in out
    assert "GFLOPs" not in out  # a weights name shows the weights alone, without building the presets


def test_models_rejects_an_unknown_name_listing_both_kinds(capsys):
    with pytest.raises(SystemExit, match=f"unknown preset or shipped weights 'nope'.*pointea-cls.*{NAME}"):
        main(["models", "--name", "nope"])


def test_models_lists_every_shipped_file_and_reports_a_damaged_one(weights_dir, capsys):
    from pointea.commands.models import print_weights

    (weights_dir / "broken.pt").write_bytes(b"\x00" * 10)
    print_weights(pretrained.list_pretrained(), detail=False)
    rows = capsys.readouterr().out.splitlines()[2:]
    assert [row.split()[0] for row in rows] == ["ablation/top-ea", "broken", "top"]
    assert "unreadable: cannot load checkpoint" in rows[1] and "broken.pt" in rows[1]
    assert "classification" in rows[0] and "classification" in rows[2]


def test_models_says_which_validation_split_a_record_was_measured_on():
    from pointea.commands.models import format_metrics, split_label

    metrics = {"overall_accuracy": 89.446, "mean_class_accuracy": 84.08}
    grouped = {"config": {"data": {"val_split": "grouped"}}}
    assert format_metrics(split_label("val", grouped), metrics) == "val (grouped) OA 89.45, mAcc 84.08"
    assert split_label("val", {"config": {"data": {"val_split": "stratified"}}}) == "val"
    assert split_label("val", {}) == "val" and split_label("test", grouped) == "test"
