"""``pointea robustness``: accuracy under ModelNet-C corruptions of a tiny classifier trained here."""

import json

import numpy as np
import pytest
import torch

from pointea.cli import main
from pointea.data.corruptions import CORRUPTIONS, corrupt_cloud
from pointea.data.synthetic import SyntheticShapes
from pointea.data.transforms import NormalizeUnitSphere
from pointea.engine.robustness import corruption_errors, robustness

NUM_SAMPLES = 4  # per class in training; the test split then holds 1 per class (9 clouds)


def train_tiny_classifier(path, steps, seed=0):
    """A pointnet classifier fitted for a few steps on 64-point synthetic clouds, saved as a checkpoint."""
    from pointea.engine.checkpoint import save_checkpoint
    from pointea.models import build_model, model_config_to_dict

    torch.manual_seed(seed)
    train = SyntheticShapes("train", num_points=64, num_samples=NUM_SAMPLES, transform=NormalizeUnitSphere())
    points = torch.stack([train[i]["points"] for i in range(len(train))])
    model = build_model("pointnet-cls", num_classes=train.num_classes, embed_dims=(16, 32), head_dims=(16,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(points), train.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    dataset = {"name": "synthetic", "task": "classification", "in_channels": 3, "num_points": 64,
               "classes": train.classes}
    state = {"model_config": model_config_to_dict(model.config), "model": model.eval().state_dict(),
             "dataset": dataset, "config": {"data": {"name": "synthetic", "num_samples": NUM_SAMPLES}}}
    return save_checkpoint(path, state), model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_classifier(tmp_path_factory.mktemp("robustness") / "cls.pt", steps=30)


@pytest.fixture(scope="module")
def test_clouds():
    data = SyntheticShapes("test", num_points=1024, num_samples=1, transform=NormalizeUnitSphere())
    return [data[i]["points"].numpy() for i in range(len(data))], data.labels


def accuracy(model, clouds, labels):
    with torch.no_grad():
        predictions = model(torch.from_numpy(np.stack(clouds))).argmax(1)
    return 100.0 * (predictions == labels).double().mean().item()


def test_accuracies_are_the_models_on_the_seeded_corrupted_test_clouds(trained, test_clouds):
    path, model = trained
    clouds, labels = test_clouds
    names = ["rotate", "dropout_global"]
    result = robustness(path, corruptions=names, levels=[0, 4], seed=3, device="cpu", batch_size=4)
    assert result["num_samples"] == len(clouds) == 9 and result["num_points"] == 1024
    assert result["clean_accuracy"] == pytest.approx(accuracy(model, clouds, labels))
    for name in names:
        for level in (0, 4):
            corrupted = [corrupt_cloud(points, name, level, (3, index)) for index, points in enumerate(clouds)]
            assert result["corruptions"][name][str(level)] == pytest.approx(accuracy(model, corrupted, labels))
    assert result["points_per_cloud"]["dropout_global"] == {"0": 768, "4": 256}
    for name in names:
        assert result["corruption_accuracy"][name] == pytest.approx(np.mean(list(result["corruptions"][name].values())))
    every = [v for row in result["corruptions"].values() for v in row.values()]
    assert result["mean_corrupted_accuracy"] == pytest.approx(np.mean(every))
    assert "not read from the official ModelNet-C files" in result["generated_by"]
    assert "ce" not in result and "mce" not in result and result["seconds"] > 0


def test_the_same_seed_gives_the_same_numbers_whatever_else_is_run(trained):
    path, _ = trained
    alone = robustness(path, corruptions=["add_local"], levels=[2], seed=1, device="cpu")
    among = robustness(path, corruptions=["jitter", "add_local"], levels=[0, 2], seed=1, device="cpu", batch_size=2)
    assert among["corruptions"]["add_local"]["2"] == alone["corruptions"]["add_local"]["2"]
    other = robustness(path, corruptions=["dropout_local", "add_local"], levels=[4], seed=2, device="cpu")
    again = robustness(path, corruptions=["dropout_local", "add_local"], levels=[4], seed=2, device="cpu")
    assert other["corruptions"] == again["corruptions"]


def test_corruption_errors_follow_the_benchmarks_formula():
    model = {"clean_accuracy": 90.0, "corruption_accuracy": {"jitter": 70.0, "rotate": 80.0}}
    baseline = {"clean_accuracy": 92.0, "corruption_accuracy": {"jitter": 60.0, "rotate": 100.0}}
    errors = corruption_errors(model, baseline)
    assert errors["ce"] == {"jitter": pytest.approx(30 / 40), "rotate": None}  # no baseline error: undefined
    assert errors["relative_ce"] == {"jitter": pytest.approx(20 / 32), "rotate": pytest.approx(10 / -8)}
    assert errors["mce"] is None and errors["rmce"] == pytest.approx((20 / 32 - 10 / 8) / 2)


def test_command_writes_json_and_plot_with_ce_against_a_baseline(trained, tmp_path, capsys):
    path, _ = trained
    weaker, _ = train_tiny_classifier(tmp_path / "weaker.pt", steps=3, seed=1)
    out = tmp_path / "robust" / "robust.json"
    argv = ["robustness", "--checkpoint", str(path), "--baseline", str(weaker), "--out", str(out),
            "--device", "cpu", "--seed", "5"]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert set(result["corruptions"]) == set(CORRUPTIONS) and result["levels"] == [0, 1, 2, 3, 4]
    assert all(list(row) == ["0", "1", "2", "3", "4"] for row in result["corruptions"].values())
    base = result["baseline"]
    for name, oa in result["corruption_accuracy"].items():
        assert result["ce"][name] == pytest.approx((100 - oa) / (100 - base["corruption_accuracy"][name]))
    assert result["mce"] == pytest.approx(np.mean(list(result["ce"].values())))
    assert (out.parent / "robust.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "| dropout_local " in printed and "mCE " in printed and "wrote" in printed

    itself = tmp_path / "itself.json"
    assert main(["robustness", "--checkpoint", str(path), "--baseline", str(path), "--out", str(itself),
                 "--corruptions", "jitter", "add_global", "--levels", "1", "3", "--device", "cpu"]) == 0
    own = json.loads(itself.read_text())
    assert own["mce"] == pytest.approx(1.0) and own["rmce"] == pytest.approx(1.0)
    assert list(own["corruptions"]) == ["jitter", "add_global"] and own["levels"] == [1, 3]


def test_bad_requests_fail_before_reading_data_with_one_line(trained, tmp_path, capsys):
    path, _ = trained
    with pytest.raises(ValueError, match="did you mean 'jitter'"):
        robustness(path, corruptions=["jiter"], device="cpu")
    with pytest.raises(ValueError, match="severity level must be an integer 0..4, got 5"):
        robustness(path, levels=[5], device="cpu")
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        robustness(path, seed=-1, device="cpu")
    with pytest.raises(ValueError, match="'shapenetpart' has no class labels"):
        robustness(path, dataset="shapenetpart", device="cpu")
    with pytest.raises(SystemExit):
        main(["robustness", "--checkpoint", str(path), "--levels", "7"])
    assert "invalid choice" in capsys.readouterr().err
    out = tmp_path / "robust.json"
    assert main(["robustness", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(out)]) == 2
    assert "pointea robustness: error:" in capsys.readouterr().err and not out.exists()


def test_the_commands_list_of_corruptions_is_the_librarys():
    from pointea.commands.robustness import CORRUPTION_NAMES

    assert list(CORRUPTION_NAMES) == list(CORRUPTIONS)


def test_viz_draws_the_corrupted_cloud_the_benchmark_scores(tmp_path, monkeypatch, capsys):
    import pointea.html_viewer

    drawn = []
    monkeypatch.setattr(pointea.html_viewer, "write_html", lambda path, points, *a, **k: drawn.append(points))
    page = str(tmp_path / "page.html")
    assert main(["viz", "--dataset", "synthetic", "--index", "3", "--corruption", "dropout_local", "--level", "4",
                 "--html", page]) == 0
    clean = SyntheticShapes("test", num_points=1024, transform=NormalizeUnitSphere())[3]["points"].numpy()
    np.testing.assert_allclose(drawn[0], corrupt_cloud(clean, "dropout_local", 4, (0, 3)), atol=1e-6)
    assert main(["viz", "--dataset", "synthetic", "--level", "4", "--html", page]) == 2
    assert "give --corruption NAME too" in capsys.readouterr().err
