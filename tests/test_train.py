"""Tests of pointea.engine.train on the embedded synthetic data with tiny models."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pointea.config import AUGMENTATIONS, config_to_dict, load_config
from pointea.data.transforms import NormalizeUnitSphere, RandomSubsample
from pointea.engine import train as train_module
from pointea.engine.checkpoint import load_checkpoint, load_model
from pointea.engine.schedule import cosine_factor, epochs_within_budget
from pointea.engine.train import (
    KILL_AFTER_STEPS_ENV,
    build_augmentation,
    build_data,
    resume_training,
    sampling_weights,
    train,
    training_augmentation,
)
from pointea.plots import read_log

REPO = Path(__file__).resolve().parents[1]

# A tiny pointea classifier: per-point embedding + one external attention block.
TINY_CLS = [
    "model.preset=pointea-cls",
    "model.overrides.embed_dims=[16, 16]",
    "model.overrides.stage_dims=[]",
    "model.overrides.stage_samples=[]",
    "model.overrides.num_neighbors=[]",
    "model.overrides.num_blocks=1",
    "model.overrides.fuse_dim=32",
    "model.overrides.head_dims=[32]",
]


def tiny_config(*extra: str, samples: int = 4, epochs: int = 2):
    """Synthetic data (``samples`` per class, 64 points), tiny model, fp32, no progress bars."""
    return load_config(None, [
        "data.name=synthetic", "data.num_points=64", f"data.num_samples={samples}",
        *TINY_CLS,
        "model.overrides.dropout=0.2",
        f"train.epochs={epochs}", "train.batch_size=16", "train.lr=0.005", "train.warmup_epochs=1",
        "train.amp=none", "train.progress=false", "train.threads=1",
        "train.augmentation=[{name: scale_translate, scale: [0.8, 1.25], shift: 0.1}, {name: jitter}]",
        *extra,
    ])


def final_weights(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key



def test_validation_after_bf16_training_is_float32_and_matches_eval(tmp_path):
    # bf16 autocast trains; the validation record must still be what `pointea eval` measures on
    # the saved weights: a float32 pass (bf16 validation flipped borderline shapes).
    from pointea.engine.evaluate import evaluate_model
    from pointea.engine.tasks import task_for

    config = tiny_config("train.amp=bf16", "data.num_points=128", samples=8, epochs=1)
    train(config, tmp_path / "run")
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    logged = [record for record in logged if record["split"] == "val"][-1]
    model, _ = load_model(tmp_path / "run" / "checkpoints" / "best.pt")
    data = build_data(config, "classification", torch.device("cpu"))
    with torch.no_grad():
        logits = model(data.val_tensors["points"])
    loss, _, _ = task_for("classification").loss(logits, {"label": data.val_tensors["label"]},
                                                  config.train.label_smoothing)
    assert logged["loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert logged["overall_accuracy"] == evaluate_model(model, data.val_set)["overall_accuracy"]

def _tiny_overrides(*extra: str) -> list:
    """The override list of :func:`tiny_config` (for subprocesses)."""
    config = tiny_config(*extra)
    flat = []
    for section, values in config_to_dict(config).items():
        for key, value in values.items():
            flat.append(f"{section}.{key}={json.dumps(value)}")
    return flat


def test_training_learns_and_writes_run_folder(tmp_path):
    config = tiny_config("train.lr=0.01", "model.overrides.dropout=0.0", samples=16, epochs=5)
    result = train(config, tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.yaml", "log.jsonl", "metrics.json", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert load_config(run / "config.yaml") == config

    chance = 100.0 / 9
    assert result["best"]["overall_accuracy"] > 4 * chance
    assert result["select_metric"] == "overall_accuracy"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best"]["overall_accuracy"] == result["best"]["overall_accuracy"]
    assert metrics["train_time_s"] > 0

    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    val_records = [r for r in records if r["split"] == "val"]
    assert [r["epoch"] for r in train_records] == [1, 2, 3, 4, 5]
    assert len(val_records) == 5
    assert train_records[-1]["loss"] < train_records[0]["loss"]
    assert train_records[-1]["step"] == 5 * (16 * 9 // 16)

    # best.pt is the epoch with the best validation accuracy and loads on its own.
    best_epoch = max(val_records, key=lambda r: r["overall_accuracy"])["epoch"]
    assert result["best_epoch"] == best_epoch
    model, meta = load_model(run / "checkpoints" / "best.pt")
    assert meta["task"] == "classification" and meta["name"] == "synthetic"
    assert len(meta["classes"]) == 9 and meta["in_channels"] == 3 and meta["num_points"] == 64
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["epoch"] == 5 and "optimizer" in last and "scheduler" in last and "rng" in last


def test_seeded_runs_are_identical_and_seeds_matter(tmp_path):
    train(tiny_config("train.deterministic=true"), tmp_path / "a")
    train(tiny_config("train.deterministic=true"), tmp_path / "b")
    train(tiny_config("train.deterministic=true", "train.seed=1"), tmp_path / "c")
    a, b, c = (final_weights(tmp_path / name) for name in "abc")
    assert_same_weights(a, b)
    assert any(not torch.equal(a[key], c[key]) for key in a)


@pytest.mark.parametrize("extra", [[], ["train.ema_decay=0.5"]], ids=["plain", "ema"])
def test_resume_after_sigkill_is_bit_exact(tmp_path, extra):
    overrides = ["train.deterministic=true", "train.epochs=3", *extra]
    config = tiny_config(*overrides)
    steps_per_epoch = 4 * 9 // 16
    train(config, tmp_path / "full")

    # Train in a subprocess that SIGKILLs itself in the middle of the second epoch.
    killed = tmp_path / "killed"
    env = dict(os.environ, **{KILL_AFTER_STEPS_ENV: str(steps_per_epoch + 1)})
    script = (
        "import sys; from pointea.config import load_config; from pointea.engine.train import train; "
        "train(load_config(None, sys.argv[2:]), sys.argv[1])"
    )
    argv = [sys.executable, "-c", script, str(killed), *_tiny_overrides(*overrides)]
    process = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert process.returncode == -9, process.stderr
    interrupted = load_checkpoint(killed / "checkpoints" / "last.pt")
    assert interrupted["epoch"] == 1 and interrupted["step"] == steps_per_epoch

    result = resume_training(killed)
    assert result["epochs"] == 3
    assert_same_weights(final_weights(tmp_path / "full"), final_weights(killed))
    resumed = load_checkpoint(killed / "checkpoints" / "last.pt")
    full = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    assert resumed["step"] == full["step"] == 3 * steps_per_epoch
    assert resumed["metrics"]["overall_accuracy"] == full["metrics"]["overall_accuracy"]
    if extra:  # the trained weights and the average both continue exactly
        assert_same_weights(full["trained_model"], resumed["trained_model"])
        assert resumed["ema_num_averaged"] == full["ema_num_averaged"] == 3 * steps_per_epoch


def test_build_ema_is_the_exponential_average_of_parameters_and_buffers():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    assert train_module.build_ema(model, 0.0) is None
    ema = train_module.build_ema(model, 0.75)
    expected = None
    for step in range(4):
        with torch.no_grad():
            for tensor in [*model.parameters(), model[1].running_mean, model[1].running_var]:
                tensor.copy_(torch.randn_like(tensor))
        current = [t.clone() for t in [*model.parameters(), model[1].running_mean, model[1].running_var]]
        ema.update_parameters(model)
        # the first update copies; later ones keep 0.75 of the average and add 0.25 of the model
        expected = current if expected is None else [0.75 * e + 0.25 * c for e, c in zip(expected, current)]
    averaged = [*ema.module.parameters(), ema.module[1].running_mean, ema.module[1].running_var]
    for got, want in zip(averaged, expected):
        torch.testing.assert_close(got, want)
    assert int(ema.n_averaged) == 4


def test_ema_run_validates_and_saves_the_average(tmp_path):
    run = tmp_path / "run"
    result = train(tiny_config("train.ema_decay=0.5", "train.deterministic=true", epochs=3), run)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    val = {r["epoch"]: r for r in records if r["split"] == "val"}
    raw = {r["epoch"]: r for r in records if r["split"] == "val_raw"}
    assert sorted(val) == sorted(raw) == [1, 2, 3]

    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert any(not torch.equal(last["model"][k], last["trained_model"][k]) for k in last["model"])
    # "model" in each file is the average, so evaluating it reproduces the logged "val" numbers,
    # and the trained weights reproduce "val_raw".
    from pointea.engine.checkpoint import save_checkpoint
    from pointea.engine.evaluate import evaluate

    best = evaluate(run / "checkpoints" / "best.pt", split="val")
    assert best["overall_accuracy"] == pytest.approx(val[result["best_epoch"]]["overall_accuracy"])
    trained = save_checkpoint(tmp_path / "trained.pt", {**last, "model": last["trained_model"]})
    assert evaluate(trained, split="val")["overall_accuracy"] == pytest.approx(raw[3]["overall_accuracy"])
    assert evaluate(run / "checkpoints" / "last.pt", split="val")["overall_accuracy"] == pytest.approx(
        val[3]["overall_accuracy"])

    from pointea.engine.checkpoint import export_weights

    slim = load_checkpoint(export_weights(run / "checkpoints" / "last.pt", tmp_path / "slim.pt"))
    assert "trained_model" not in slim and "ema_num_averaged" not in slim
    assert_same_weights(slim["model"], last["model"])


def test_ema_decay_must_be_below_one():
    with pytest.raises(ValueError, match="train.ema_decay must be in \\[0, 1\\)"):
        tiny_config("train.ema_decay=1.0")


def test_segmentation_through_dataloader_path(tmp_path, monkeypatch):
    # Force the DataLoader path that datasets without in-memory tensors (ShapeNetPart) take.
    monkeypatch.setattr(train_module, "_as_tensors", lambda *args: None)
    config = load_config(None, [
        "data.name=synthetic", "data.num_points=64", "data.num_samples=4",
        "model.preset=pointea-partseg", "model.overrides.embed_dims=[16, 16]",
        "model.overrides.stage_dims=[16]", "model.overrides.num_neighbors=[8]",
        "model.overrides.num_blocks=1", "model.overrides.fuse_dim=32", "model.overrides.head_dims=[32]",
        "model.overrides.category_dim=8",
        "train.epochs=2", "train.batch_size=8", "train.lr=0.01", "train.amp=none",
        "train.progress=false", "train.augmentation=[{name: scale_translate}]",
    ])
    result = train(config, tmp_path / "seg")
    assert result["select_metric"] == "instance_miou"
    assert 0.0 < result["last"]["instance_miou"] <= 100.0
    _, meta = load_model(tmp_path / "seg" / "checkpoints" / "best.pt")
    assert meta["task"] == "segmentation" and len(meta["category_parts"]) == 9
    assert meta["part_names"][0].startswith(meta["categories"][0])


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_every_augmentation_name_builds_its_transform(name):
    spec = {"name": name, **({"num_points": 16} if name == "subsample" else {})}
    augment = build_augmentation([spec], torch.Generator().manual_seed(0), num_classes=2)
    assert type(augment.transforms[0]).__name__ == AUGMENTATIONS[name]
    points = augment({"points": torch.randn(4, 32, 3), "label": torch.zeros(4, dtype=torch.long)})["points"]
    assert points.shape == (4, 16 if name == "subsample" else 32, 3) and torch.isfinite(points).all()


def test_in_memory_route_gives_the_items_the_loader_route_gives():
    # one preprocessing path: the dataset's own transform, applied once to the whole split
    from pointea.data.synthetic import SyntheticShapes
    from pointea.engine.tasks import task_for

    def shift(item):
        return {**item, "points": NormalizeUnitSphere()(item)["points"] + 0.5}

    for task in ("classification", "segmentation"):
        dataset = SyntheticShapes("val", num_points=32, num_samples=1, transform=shift)
        tensors = train_module._as_tensors(dataset, task_for(task), torch.device("cpu"))
        for index in range(len(dataset)):
            item = dataset[index]
            torch.testing.assert_close(tensors["points"][index], item["points"])
            for key in set(tensors) - {"points"}:
                assert torch.equal(tensors[key][index], item[key])


def test_resample_from_trains_on_a_fresh_subset_each_draw(tmp_path):
    config = tiny_config("data.resample_from=128", "train.augmentation=[]", "train.epochs=1")
    data = build_data(config, "classification", torch.device("cpu"))
    assert data.train_tensors["points"].shape[1:] == (128, 3)
    assert data.val_tensors["points"].shape[1:] == (64, 3)  # val keeps its fixed clouds

    batch = {"points": data.train_tensors["points"][:4], "label": data.train_tensors["label"][:4]}
    augment = training_augmentation(config, torch.Generator().manual_seed(3))
    first, second = augment(dict(batch))["points"], augment(dict(batch))["points"]
    assert first.shape == (4, 64, 3) and not torch.equal(first, second)
    # A random subset of each loaded cloud, normalized to the unit sphere like the val clouds.
    subset = RandomSubsample(64, generator=torch.Generator().manual_seed(3))(dict(batch))
    torch.testing.assert_close(first, NormalizeUnitSphere()(subset)["points"])
    torch.testing.assert_close(first.norm(dim=-1).amax(dim=1), torch.ones(4))

    train(config, tmp_path / "run")
    _, meta = load_model(tmp_path / "run" / "checkpoints" / "best.pt")
    assert meta["num_points"] == 64  # what evaluation and prediction feed the model
    with pytest.raises(ValueError, match="data.resample_from must be larger than data.num_points"):
        tiny_config("data.resample_from=64")


def test_dedup_sampling_weighs_each_shape_by_one_over_its_twins(tmp_path):
    from pointea.data.dedup import duplicate_counts

    config = tiny_config("train.sampling=dedup", samples=6)
    data = build_data(config, "classification", torch.device("cpu"))
    assert sampling_weights(tiny_config(), data) is None  # uniform: every shape once per epoch
    tensors = data.train_tensors
    count = len(tensors["label"])
    for key in tensors:  # three shapes twice over: each gains a twin
        tensors[key] = torch.cat([tensors[key], tensors[key][:3]])
    weights = sampling_weights(config, data)
    counts = torch.from_numpy(duplicate_counts(tensors["points"].numpy()))
    assert (counts[:3] >= 2).all() and torch.equal(weights[:3], weights[count:])
    for label in tensors["label"].unique():
        members = tensors["label"] == label
        # 1 / twins within a class, scaled so that the class keeps its share of the draws
        torch.testing.assert_close(weights[members].sum(), members.sum().double())
        scaled = weights[members] * counts[members]
        torch.testing.assert_close(scaled, scaled[:1].expand_as(scaled))

    result = train(config, tmp_path / "run")  # and a whole run trains with it
    assert result["last"]["num_samples"] == len(data.val_set)


def test_class_balanced_sampling_gives_every_class_an_equal_share():
    config = tiny_config("train.sampling=class_balanced", samples=6)
    data = build_data(config, "classification", torch.device("cpu"))
    tensors = data.train_tensors
    keep = torch.ones(len(tensors["label"]), dtype=torch.bool)
    keep[torch.nonzero(tensors["label"] == 0)[1:, 0]] = False  # class 0 keeps one shape
    for key in tensors:
        tensors[key] = tensors[key][keep]
    weights = sampling_weights(config, data)
    labels = tensors["label"]
    share = torch.zeros(int(labels.max()) + 1, dtype=torch.float64).index_add_(0, labels, weights)
    torch.testing.assert_close(share, torch.ones_like(share))
    assert weights[labels == 0].item() == 1.0 and (weights[labels != 0] < 1.0).all()


def test_weighted_batches_draw_in_proportion_with_replacement():
    from pointea.engine.distributed import DistributedContext

    tensors = {"points": torch.zeros(4, 2, 3), "label": torch.arange(4)}
    weights = torch.tensor([0.0, 1.0, 1.0, 2.0], dtype=torch.float64)

    def epoch_labels(seed: int) -> torch.Tensor:
        batches = train_module._tensor_batches(tensors, 2, torch.Generator().manual_seed(seed),
                                               DistributedContext(), None, weights)
        return torch.cat([batch["label"] for batch in batches])

    draws = torch.cat([epoch_labels(seed) for seed in range(500)])
    assert len(draws) == 500 * 4  # an epoch keeps the split's length
    share = torch.bincount(draws, minlength=4) / len(draws)
    torch.testing.assert_close(share, torch.tensor([0.0, 0.25, 0.25, 0.5]), atol=0.03, rtol=0)
    assert torch.equal(epoch_labels(7), epoch_labels(7))  # seeded like the uniform order


def test_dedup_sampling_needs_an_in_memory_dataset_and_a_known_name(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="train.sampling"):
        tiny_config("train.sampling=dedupe")
    monkeypatch.setattr(train_module, "_as_tensors", lambda *args: None)
    with pytest.raises(ValueError, match="train.sampling=dedup .*held in memory"):
        train(tiny_config("train.sampling=dedup"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_run_folder_misuse_errors(tmp_path):
    config = tiny_config("train.epochs=1")
    train(config, tmp_path / "run")
    with pytest.raises(ValueError, match="--resume"):
        train(config, tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="last.pt"):
        train(config, tmp_path / "empty", resume=True)
    with pytest.raises(ValueError, match="model.overrides.num_classes"):
        train(tiny_config("model.overrides.num_classes=40"), tmp_path / "other")
    with pytest.raises(ValueError, match="has no part labels"):
        train(load_config(None, ["data.name=modelnet40", "data.root=/nonexistent",
                                 "model.preset=pointea-partseg"]), tmp_path / "seg")


def test_bad_run_folders_and_select_metric_fail_before_any_write(tmp_path):
    with pytest.raises(ValueError, match="run_dir must name a folder"):
        train(tiny_config(), "")
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    with pytest.raises(ValueError, match="afile exists and is not a folder"):
        train(tiny_config(), afile)
    with pytest.raises(ValueError, match="select_metric is 'foo'; a classification run selects on one of "
                                         "overall_accuracy, mean_class_accuracy"):
        train(tiny_config("train.select_metric=foo"), tmp_path / "typo")
    assert not (tmp_path / "typo").exists()


def test_resume_refuses_other_settings_and_finished_runs(tmp_path):
    run = tmp_path / "run"
    train(tiny_config("train.epochs=2"), run)
    before = {name: (run / name).read_bytes() for name in ("config.yaml", "metrics.json", "log.jsonl")}
    changes = {
        "model.overrides.fuse_dim=64": "model.overrides.fuse_dim: 32 -> 64",
        "train.optimizer=sgd": "train.optimizer: 'adamw' -> 'sgd'",
        "data.num_points=32": "data.num_points: 64 -> 32",
    }
    for override, message in changes.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            resume_training(run, [override, "train.epochs=3"])
    for epochs in (2, 1):
        with pytest.raises(ValueError, match=f"completed 2 epochs \\(train.epochs={epochs}\\); pass train.epochs=N with N > 2"):
            resume_training(run, [f"train.epochs={epochs}"])
    assert before == {name: (run / name).read_bytes() for name in before}  # nothing rewritten
    result = resume_training(run, ["train.epochs=3", "data.cache_dir=" + str(tmp_path / "moved")])
    assert result["epochs"] == 3


def test_run_log_starts_fresh_or_drops_epochs_after_the_resumed_checkpoint(tmp_path):
    from pointea.engine.runlog import RunLog

    with RunLog(tmp_path, tensorboard=False) as log:
        for epoch in (1, 2, 3):
            log.write("train", epoch, 10 * epoch, loss=1.0 / epoch)
    with open(tmp_path / "log.jsonl", "a") as handle:
        handle.write('{"split": "train", "epo')  # a line cut by a kill
    with RunLog(tmp_path, tensorboard=False, resume_at=(2, 20)) as log:
        log.write("resume", 2, 20)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(r["split"], r["epoch"]) for r in records] == [("train", 1), ("train", 2), ("resume", 2)]
    RunLog(tmp_path, tensorboard=False).close()  # a fresh run in the same folder
    assert (tmp_path / "log.jsonl").read_text() == ""


def test_no_progress_bars_when_stderr_is_not_a_terminal(tmp_path, capsys):
    train(tiny_config("train.progress=true", epochs=1), tmp_path / "run")
    err = capsys.readouterr().err
    assert "\r" not in err and "it/s" not in err


def test_cosine_schedule_with_warmup():
    factors = [cosine_factor(step, total_steps=10, warmup_steps=2, min_ratio=0.1) for step in range(11)]
    assert factors[0] == pytest.approx(0.5) and factors[1] == pytest.approx(1.0)
    assert factors[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[2:], factors[3:]))
    assert factors[10] == pytest.approx(0.1)


def test_resume_with_more_epochs_follows_the_longer_schedule(tmp_path):
    run = tmp_path / "run"
    train(tiny_config("train.min_lr=0.0005", epochs=2), run)
    resume_training(run, ["train.epochs=4"])
    tc = tiny_config("train.min_lr=0.0005", epochs=4).train
    records = [r for r in read_log(run / "log.jsonl") if r["split"] == "train"]
    steps = records[0]["step"]  # steps per epoch

    def rate(step: int, epochs: int) -> float:
        return tc.lr * cosine_factor(step, epochs * steps, round(tc.warmup_epochs * steps), tc.min_lr / tc.lr)

    # epochs 1-2 ran on the two-epoch schedule (ending at min_lr), epochs 3-4 on the four-epoch one
    assert [r["lr"] for r in records] == pytest.approx([rate(steps, 2), rate(2 * steps, 2), rate(3 * steps, 4),
                                                        rate(4 * steps, 4)])
    assert records[1]["lr"] == pytest.approx(tc.min_lr) and records[2]["lr"] > 2 * tc.min_lr


def test_epochs_within_budget_keeps_the_plan_when_it_fits_and_cuts_it_when_not():
    assert epochs_within_budget(done=2, planned=10, elapsed_s=20, epoch_s=10, budget_s=100) == 10
    assert epochs_within_budget(done=2, planned=10, elapsed_s=20, epoch_s=10, budget_s=79.9) == 7
    # at least one more epoch, and never less than the warm-up
    assert epochs_within_budget(done=2, planned=10, elapsed_s=50, epoch_s=10, budget_s=40) == 3
    assert epochs_within_budget(done=1, planned=10, elapsed_s=10, epoch_s=10, budget_s=20, warmup_epochs=4.5) == 5


def test_time_budget_cuts_the_schedule_to_fit_and_still_ends_it_at_min_lr(tmp_path, monkeypatch):
    real_epoch = train_module._train_one_epoch

    def slow_epoch(*args, **kwargs):  # a steady 0.2 s per epoch
        time.sleep(0.2)
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_module, "_train_one_epoch", slow_epoch)
    run = tmp_path / "run"
    result = train(tiny_config("train.time_budget_s=1.5", "train.min_lr=0.0005", epochs=40), run)
    records = read_log(run / "log.jsonl")
    plans = [r for r in records if r["split"] == "plan"]
    assert plans and plans[0]["planned_epochs"] == 40
    assert 3 <= result["epochs"] == plans[-1]["epochs"] < 40
    assert result["elapsed_s"] <= 1.5 + plans[-1]["epoch_seconds"]
    trained = [r for r in records if r["split"] == "train"]
    assert len(trained) == result["epochs"] and trained[-1]["lr"] == pytest.approx(0.0005)  # annealed
    # the cut is the run's recorded plan: config.yaml and last.pt say so, and the run is complete
    assert load_config(run / "config.yaml").train.epochs == result["epochs"]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["config"]["train"]["epochs"] == result["epochs"]
    with pytest.raises(ValueError, match=f"already completed {result['epochs']} epochs"):
        resume_training(run)


def test_a_time_budget_the_schedule_fits_changes_nothing(tmp_path):
    train(tiny_config("train.deterministic=true"), tmp_path / "plain")
    result = train(tiny_config("train.deterministic=true", "train.time_budget_s=3600"), tmp_path / "budget")
    records = read_log(tmp_path / "budget" / "log.jsonl")
    assert result["epochs"] == 2 and not any(r["split"] == "plan" for r in records)
    assert_same_weights(final_weights(tmp_path / "plain"), final_weights(tmp_path / "budget"))
    with pytest.raises(ValueError, match="train.time_budget_s must be a positive number of seconds"):
        tiny_config("train.time_budget_s=0")


# A training process that holds its run in the first epoch until the file argv[3] appears.
PAUSED_RUN = """
import sys, time
from pathlib import Path
from pointea.config import load_config
from pointea.engine import train as train_module

run_dir, started, go, mode, overrides = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], sys.argv[5:]
real_epoch = train_module._train_one_epoch

def paused_epoch(*args, **kwargs):
    started.touch()
    deadline = time.monotonic() + 60
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return real_epoch(*args, **kwargs)

train_module._train_one_epoch = paused_epoch
if mode == "resume":
    train_module.resume_training(run_dir, overrides)
else:
    train_module.train(load_config(None, overrides), run_dir)
"""


def start_paused_run(run_dir: Path, tmp_path: Path, mode: str, overrides: list):
    """A second training process, inside its first epoch when this returns; and its go file."""
    started, go = tmp_path / "started", tmp_path / "go"
    argv = [sys.executable, "-c", PAUSED_RUN, str(run_dir), str(started), str(go), mode, *overrides]
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not started.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the first run did not start: {process.communicate()[1]}")
        time.sleep(0.05)
    return process, go


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_run_into_a_folder_in_use_is_refused_and_writes_nothing(tmp_path):
    run = tmp_path / "run"
    # the first run, inside its first epoch: its files are written, its lock held
    train(tiny_config("train.epochs=1"), run)
    (run / "checkpoints" / "last.pt").unlink()
    in_flight = run / ".metrics.json.abcdefgh.tmp"
    in_flight.write_text("{")
    ready = tmp_path / "ready"
    hold = ("import sys, time, pathlib; from pointea.engine.runlock import run_folder_lock\n"
            "with run_folder_lock(pathlib.Path(sys.argv[1])):\n"
            "    pathlib.Path(sys.argv[2]).touch(); time.sleep(60)")
    first = subprocess.Popen([sys.executable, "-c", hold, str(run), str(ready)], cwd=REPO)
    try:
        while not ready.exists():
            assert first.poll() is None
            time.sleep(0.02)
        before = snapshot(run)
        with pytest.raises(ValueError, match=f"^{re.escape(str(run))} is in use by another training run "
                                             f"\\(pid {first.pid}\\)"):
            train(tiny_config("train.seed=7"), run)
        assert snapshot(run) == before  # neither its config nor its log, and the temporary file kept
    finally:
        first.kill()
        first.wait()
    # SIGKILLed, the first run released the folder: a new run starts over in it (no last.pt),
    # and removes the temporary file the killed one left
    train(tiny_config("train.epochs=1", "train.seed=7"), run)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["config"]["train"]["seed"] == 7
    assert not in_flight.exists()


def test_concurrent_resume_is_refused_and_the_log_keeps_every_line(tmp_path):
    run = tmp_path / "run"
    train(tiny_config(epochs=1), run)
    first, go = start_paused_run(run, tmp_path, "resume", ["train.epochs=2"])
    try:
        left = [run / "checkpoints" / ".last.pt.k2_9ab0x.tmp", run / "checkpoints" / ".best.pt.abcdefgh.tmp"]
        others = run / ".eval.json.abcdefgh.tmp"  # not the run's: another command may be writing it
        for path in [*left, others]:
            path.write_bytes(b"PK")
        before = snapshot(run)
        with pytest.raises(ValueError, match=f"in use by another training run \\(pid {first.pid}\\)"):
            resume_training(run, ["train.epochs=2"])
        with pytest.raises(ValueError, match="in use"):  # not "already holds a run; resume it"
            train(tiny_config(epochs=2), run)
        assert snapshot(run) == before
        go.touch()
        assert first.wait(timeout=120) == 0, first.communicate()[1]
    finally:
        first.kill()
        first.communicate()
    # the lock went with the first resume's normal end; this one also clears the temporary files
    assert resume_training(run, ["train.epochs=3"])["epochs"] == 3
    assert not any(path.exists() for path in left) and not (run / ".lock").exists()
    assert others.exists()
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [(r["split"], r["epoch"]) for r in records if r["split"] in ("train", "resume")] == [
        ("train", 1), ("resume", 1), ("train", 2), ("resume", 2), ("train", 3)]


# `pointea train` on a disk that fills up right after the first checkpoint: from then on no file
# may grow past 4 KiB (RLIMIT_FSIZE, SIGXFSZ ignored, so writes fail with EFBIG); the next
# checkpoint fails while the small log files still fit.
FULL_AFTER_FIRST_SAVE = """
import resource, signal, sys
from pointea.cli import main
from pointea.engine import checkpoint as checkpoint_module

real_save = checkpoint_module.save_last

def save_then_fill_the_disk(*args, **kwargs):
    real_save(*args, **kwargs)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))

checkpoint_module.save_last = save_then_fill_the_disk
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX only")
def test_full_disk_while_saving_a_checkpoint_is_a_one_line_error(tmp_path):
    run = tmp_path / "run"
    argv = [sys.executable, "-c", FULL_AFTER_FIRST_SAVE, "train", "--config", "synthetic-cls",
            "--run-dir", str(run), *_tiny_overrides("train.epochs=2")]
    process = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert process.returncode == 1, process.stderr
    assert "Traceback" not in process.stderr and "enforce fail" not in process.stderr
    errors = [line for line in process.stderr.splitlines() if line.startswith("pointea train: error:")]
    assert len(errors) == 1 and re.fullmatch(
        f"pointea train: error: cannot write {re.escape(str(run / 'checkpoints'))}/(best|last).pt: "
        "file too large", errors[0]), process.stderr
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1  # the previous one survives
    assert list(run.rglob("*.tmp")) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_run_log_on_a_full_disk_names_the_file(tmp_path):
    from pointea.atomic import WriteError
    from pointea.engine.runlog import RunLog

    (tmp_path / "log.jsonl").symlink_to("/dev/full")  # every write: ENOSPC
    log = RunLog(tmp_path, tensorboard=False, resume_at=(0, 0))
    message = f"^cannot write {re.escape(str(tmp_path / 'log.jsonl'))}: no space left on device$"
    with pytest.raises(WriteError, match=message):
        log.write("train", 1, 1, loss=1.0)
    with pytest.raises(WriteError, match=message):
        log.close()


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX only")
def test_tensorboard_on_a_full_disk_is_one_line_naming_the_folder(tmp_path):
    script = """
import os, resource, signal, sys
from pathlib import Path
from pointea.atomic import WriteError
from pointea.engine.runlog import RunLog

run = Path(sys.argv[1])
log = RunLog(run)
log.write("train", 1, 1, loss=1.0)
events = next((run / "tb").iterdir())
# the events file may not grow any more; the JSON log still may
limit = max(events.stat().st_size, (run / "log.jsonl").stat().st_size + 4096)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
try:
    log.write("train", 2, 2, **{f"metric{i}": float(i) for i in range(200)})
except WriteError as error:
    print(error)
"""
    process = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    assert process.stdout == f"cannot write {tmp_path / 'tb'}: file too large\n", process.stderr
    assert process.stderr == ""  # no traceback from TensorBoard's writer thread


def test_a_split_smaller_than_one_batch_is_refused_with_a_batch_that_fits(tmp_path):
    config = tiny_config("train.batch_size=64", samples=4)  # 36 shapes, some held out for val
    with pytest.raises(ValueError, match=r"fewer than one batch of train.batch_size=64; pass a smaller batch, "
                                         r"e.g. train.batch_size=\d+$") as error:
        train(config, tmp_path / "run")
    suggested = int(str(error.value).rsplit("=", 1)[1])
    assert 1 <= suggested < 64
    assert not (tmp_path / "run").exists()  # nothing written
