"""Tests of the scripts under tools/: the ablation and the attention benchmark (tiny sizes)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

TINY = [
    "data.num_points=64", "data.num_samples=4", "model.overrides.embed_dims=[16, 16]",
    "model.overrides.num_blocks=1", "model.overrides.fuse_dim=32", "model.overrides.head_dims=[32]",
    "model.overrides.num_heads=2", "train.epochs=1", "train.batch_size=16", "train.progress=false",
    "train.threads=1",
]


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ablation_trains_one_run_per_attention_and_reads_finished_runs_back(tmp_path, capsys):
    ablation = load_tool("ablation")
    out = tmp_path / "ablation.json"
    argv = ["--config", "synthetic-cls", "--attention", "ea", "none", "--out-dir", str(tmp_path / "runs"),
            "--out", str(out), *TINY]
    assert ablation.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [row["attention"] for row in rows] == ["ea", "none"]
    for row in rows:
        metrics = json.loads((Path(row["run_dir"]) / "metrics.json").read_text())
        assert row["overall_accuracy"] == metrics["best"]["overall_accuracy"]
        assert row["last_overall_accuracy"] == metrics["last"]["overall_accuracy"]
        log = [json.loads(line) for line in (Path(row["run_dir"]) / "log.jsonl").read_text().splitlines()]
        val = [record["overall_accuracy"] for record in log if record["split"] == "val"]
        assert row["last10_overall_accuracy"] == pytest.approx(sum(val[-10:]) / len(val[-10:]))
        assert row["train_samples_per_s"] > 0 and row["epoch_seconds"] > 0
        assert row["gflops_1024_points"] > row["gflops_recipe_points"] > 0
        config = (Path(row["run_dir"]) / "config.yaml").read_text()
        assert f"attention: {row['attention']}" in config
    assert rows[0]["params"] != rows[1]["params"]  # the memories of EA versus a Linear
    table = capsys.readouterr().out
    assert "| ea |" in table and "| none |" in table and "GFLOPs @64" in table

    best = tmp_path / "runs" / "ea" / "checkpoints" / "best.pt"
    stamp = best.stat().st_mtime_ns
    assert ablation.main(argv) == 0  # finished runs are read back, not retrained
    assert best.stat().st_mtime_ns == stamp
    assert json.loads(out.read_text())["rows"] == rows


def test_ablation_over_seeds_trains_each_seed_and_reports_the_spread(tmp_path, capsys):
    ablation = load_tool("ablation")
    out = tmp_path / "seeds.json"
    assert ablation.main(["--config", "synthetic-cls", "--attention", "ea", "--seeds", "0", "1",
                          "--out-dir", str(tmp_path / "runs"), "--out", str(out), *TINY]) == 0
    payload = json.loads(out.read_text())
    rows = payload["rows"]
    assert [(row["attention"], row["seed"], Path(row["run_dir"]).name) for row in rows] == [
        ("ea", 0, "ea-seed0"), ("ea", 1, "ea-seed1")]
    logs = [(Path(row["run_dir"]) / "log.jsonl").read_text() for row in rows]
    assert "seed: 1" in (tmp_path / "runs" / "ea-seed1" / "config.yaml").read_text() and logs[0] != logs[1]
    (spread,) = payload["spread"]
    assert spread["seeds"] == [0, 1] and payload["seeds"] == [0, 1]
    for key in ablation.SPREAD_KEYS:
        values = np.array([row[key] for row in rows])
        assert spread[key]["mean"] == pytest.approx(values.mean())
        assert spread[key]["std"] == pytest.approx(values.std(ddof=1))
    assert "| ea | 0, 1 | " in capsys.readouterr().out
    with pytest.raises(SystemExit):
        ablation.main(["--config", "synthetic-cls", "--seeds", "0", "--out-dir", str(tmp_path), "train.seed=3"])


def test_seed_spread_is_the_mean_and_sample_std_per_type():
    ablation = load_tool("ablation")
    # the CPU recipe's best-epoch grouped val OA over seeds 0-2 (873, 864 and 873 of 976 shapes
    # right), which the README quotes as 89.14 ± 0.53
    rows = [{"attention": "ea", "seed": seed, "overall_accuracy": 100 * right / 976, "mean_class_accuracy": None,
             "last_overall_accuracy": 88.0, "last10_overall_accuracy": 88.0}
            for seed, right in enumerate([873, 864, 873])]
    rows.append({**rows[0], "attention": "sa"})
    ea, sa = ablation.seed_spread(rows)
    assert ea["seeds"] == [0, 1, 2] and sa["seeds"] == [0]
    assert round(ea["overall_accuracy"]["mean"], 2) == 89.14 and round(ea["overall_accuracy"]["std"], 2) == 0.53
    assert ea["last_overall_accuracy"] == {"mean": 88.0, "std": 0.0}
    assert ea["mean_class_accuracy"] == {"mean": None, "std": None} and sa["overall_accuracy"]["std"] is None
    table = ablation.format_spread([ea, sa])
    assert "| ea | 0, 1, 2 | 89.14 ± 0.53 | – | 88.00 ± 0.00 |" in table and "| sa | 0 | 89.45 | – |" in table


def test_ablation_refuses_an_attention_override(tmp_path):
    ablation = load_tool("ablation")
    with pytest.raises(SystemExit):
        ablation.main(["--config", "synthetic-cls", "--out-dir", str(tmp_path), "model.overrides.attention=sa"])


def test_attention_benchmark_writes_table_json_and_plot_and_skips_what_would_not_fit(tmp_path, capsys):
    bench = load_tool("bench_attention")
    out, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    # ssa at N = 128 needs 2 maps of 128 x 128 floats (128 KiB) > 100 KiB: skipped for memory.
    assert bench.main(["--types", "ea", "ssa", "--sizes", "64", "128", "--repeats", "1", "--min-time", "0",
                       "--pair-rounds", "1", "--max-memory", "100KiB", "--threads", "1",
                       "--out", str(out), "--plot", str(plot)]) == 0
    payload = json.loads(out.read_text())
    rows = {(row["attention"], row["num_points"]): row for row in payload["results"]}
    assert rows[("ea", 128)]["fwd_ms"] > 0 and rows[("ea", 128)]["fwd_bwd_peak_mib"] > 0
    assert rows[("ssa", 64)]["fwd_ms"] > 0
    assert rows[("ssa", 128)]["fwd_skipped"].startswith("memory")
    assert payload["paired_scaling"]["median"] == payload["summary"]["ea_time_65536_over_4096"] > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "skip: memory" in capsys.readouterr().out


def test_attention_benchmark_times_each_ea_path_under_load_and_stops_the_load(tmp_path, capsys):
    bench = load_tool("bench_attention")
    out = tmp_path / "bench.json"
    # tile size 32: both sizes run tiled when forced, and "auto" probes both paths at each size.
    assert bench.main(["--types", "ea", "--sizes", "64", "128", "--repeats", "1", "--min-time", "0",
                       "--pair-rounds", "0", "--threads", "1", "--ea-paths", "auto", "tiled", "one-pass",
                       "--tile-size", "32", "--load-procs", "1", "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    rows = {(row["ea_path"], row["num_points"]): row for row in payload["results"]}
    assert set(rows) == {(path, n) for path in ("auto", "tiled", "one-pass") for n in (64, 128)}
    for n in (64, 128):
        assert rows[("tiled", n)]["path_taken"] == "tiled" and rows[("one-pass", n)]["path_taken"] == "one-pass"
        assert rows[("auto", n)]["path_taken"] in ("tiled", "one-pass") and rows[("auto", n)]["fwd_ms"] > 0
    choices = payload["ea_path_choices"]
    assert sorted(choice["elements"] for choice in choices) == [64, 128]
    assert all(choice["one_pass_ms"] > 0 and choice["tiled_ms"] > 0 for choice in choices)
    (pid,) = payload["load_pids"]
    with pytest.raises(ProcessLookupError):  # the busy process was stopped and reaped
        os.kill(pid, 0)
    printed = capsys.readouterr().out
    assert "ea tiled" in printed and "ea one-pass" in printed and "ea auto>" in printed
    assert "1 busy-loop process" in printed and "auto probe" in printed


def test_predict_benchmark_writes_table_and_json(tmp_path, capsys):
    bench = load_tool("bench_predict")
    out = tmp_path / "bench_predict.json"
    assert bench.main(["--files", "5", "--points", "40", "--format", ".npy", "--preset", "pointnet-cls",
                       "--num-points", "16", "--batch-size", "4", "--threads", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [(row["what"], row["batch_size"]) for row in rows] == [("read", None), ("predict", 1), ("predict", 4)]
    for row in rows:
        assert row["files_per_s"] == pytest.approx(5 / row["seconds"]) and row["seconds"] > 0
    assert "| predict | 4 " in capsys.readouterr().out
    # with real weights (the shipped classifier) and their point count
    assert bench.main(["--files", "3", "--points", "600", "--format", ".ply", "--checkpoint",
                       "pointea-cls-modelnet40-cpu", "--batch-size", "2", "--threads", "1", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["checkpoint"] == "pointea-cls-modelnet40-cpu" and len(record["results"]) == 3


def test_robustness_benchmark_times_every_setting_and_writes_json(tmp_path, capsys):
    checkpoint = _tiny_classifier(tmp_path / "tiny.pt", 0)
    bench = load_tool("bench_robustness")
    out = tmp_path / "bench_robustness.json"
    assert bench.main(["--checkpoint", str(checkpoint), "--device", "cpu", "--threads", "1", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    rows = {row["what"]: row for row in record["results"]}
    assert list(rows)[:7] == ["scale", "jitter", "rotate", "dropout_global", "dropout_local", "add_global", "add_local"]
    assert rows["total"]["settings"] == 35 and rows["dropout_local"]["settings"] == 5
    assert rows["total"]["seconds"] == record["robustness"]["seconds"] > 0
    assert rows["total"]["clouds_per_s"] == pytest.approx(9 * 35 / rows["total"]["seconds"])
    assert all(row["corrupt_s"] >= 0 and row["evaluate_s"] > 0 for row in record["results"][:7])
    assert "| total " in capsys.readouterr().out


def _tiny_classifier(path: Path, seed: int, num_samples: int = 4) -> Path:
    import torch

    from pointea.data.synthetic import CATEGORIES
    from pointea.engine.checkpoint import save_checkpoint
    from pointea.models import build_model, model_config_to_dict

    torch.manual_seed(seed)
    model = build_model("pointnet-cls", num_classes=len(CATEGORIES), embed_dims=(8,), head_dims=(8,))
    dataset = {"name": "synthetic", "task": "classification", "in_channels": 3, "num_points": 64,
               "classes": list(CATEGORIES)}
    return save_checkpoint(path, {
        "model_config": model_config_to_dict(model.config), "model": model.state_dict(), "dataset": dataset,
        "config": {"data": {"name": "synthetic", "num_samples": num_samples}}})


def test_error_overlap_counts_the_ensemble_the_oracle_and_the_shapes_all_models_miss():
    error_overlap = load_tool("error_overlap")
    labels = np.array([0, 1, 2, 0])
    first = np.array([[0.6, 0.4, 0.0], [0.6, 0.4, 0.0], [0.0, 0.1, 0.9], [0.1, 0.8, 0.1]])
    second = np.array([[0.2, 0.8, 0.0], [0.0, 0.9, 0.1], [0.0, 0.4, 0.6], [0.2, 0.7, 0.1]])
    result = error_overlap.overlap([first, second], labels, ["a", "b", "c"])
    # first: right on shapes 0 and 2; second: on 1 and 2; mean: [0.4 0.6 0], [0.3 0.65 0.05], c, b
    assert [m["errors"] for m in result["models"]] == [2, 2]
    assert result["models"][0]["overall_accuracy"] == 50.0
    assert result["ensemble"]["errors"] == 2 and result["ensemble"]["overall_accuracy"] == 50.0
    assert result["ensemble"]["mean_class_accuracy"] == pytest.approx(100 * (0 + 1 + 1) / 3)
    assert result["oracle_accuracy"] == 75.0
    assert result["all_wrong"] == [3]
    assert result["all_wrong_confusions"] == [{"true": "a", "predicted": "b", "count": 1}]


def test_error_overlap_reproduces_eval_per_checkpoint_and_refuses_other_shapes(tmp_path, capsys):
    from pointea.engine.evaluate import evaluate

    error_overlap = load_tool("error_overlap")
    first, second = _tiny_classifier(tmp_path / "a.pt", 0), _tiny_classifier(tmp_path / "b.pt", 1)
    out = tmp_path / "overlap.json"
    assert error_overlap.main(["--checkpoints", str(first), str(second), str(first), "--split", "test",
                               "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for model, checkpoint in zip(result["models"], (first, second, first)):
        expected = evaluate(checkpoint, split="test")
        assert model["overall_accuracy"] == pytest.approx(expected["overall_accuracy"])
        assert model["mean_class_accuracy"] == pytest.approx(expected["mean_class_accuracy"])
        assert model["checkpoint"] == str(checkpoint)
    assert result["shapes"] == expected["num_samples"]
    assert result["oracle_accuracy"] >= max(m["overall_accuracy"] for m in result["models"])
    assert "ensemble of 3" in capsys.readouterr().out

    other = _tiny_classifier(tmp_path / "c.pt", 2, num_samples=8)  # 2 test shapes per class, not 1
    with pytest.raises(ValueError, match=r"c\.pt and .*a\.pt see different test shapes"):
        error_overlap.main(["--checkpoints", str(first), str(other), "--split", "test"])


def test_robustness_comparison_matches_paired_baseline_runs(tmp_path, capsys):
    from pointea.engine.robustness import robustness

    first, second = _tiny_classifier(tmp_path / "a.pt", 0), _tiny_classifier(tmp_path / "b.pt", 1)
    settings = dict(corruptions=["jitter", "add_global"], levels=[0, 4], device="cpu")
    paired = robustness(first, baseline=second, **settings)  # both models on the same clouds
    for name, checkpoint in (("a", first), ("b", second)):
        (tmp_path / f"{name}.json").write_text(json.dumps(robustness(checkpoint, **settings)))
    compare = load_tool("compare_robustness")
    out = tmp_path / "table.json"
    plot = tmp_path / "robustness.png"
    assert compare.main([f"first={tmp_path / 'a.json'}", str(tmp_path / "b.json"), "--baseline", "b",
                         "--out", str(out), "--plot", str(plot)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob(".*.tmp"))
    rows = {row["model"]: row for row in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["first", "b"]
    assert rows["first"]["clean_accuracy"] == paired["clean_accuracy"]
    assert rows["first"]["corruption_accuracy"] == paired["corruption_accuracy"]
    assert paired["mce"] is not None and rows["first"]["mce"] == pytest.approx(paired["mce"])
    assert rows["first"]["ce"] == pytest.approx(paired["ce"])
    assert rows["b"]["corruption_accuracy"] == paired["baseline"]["corruption_accuracy"]
    assert rows["b"]["mce"] in (1.0, None)  # the baseline against itself
    table = capsys.readouterr().out
    assert "| first " in table and "add_global" in table and "mCE" in table


def test_robustness_comparison_refuses_results_from_other_clouds(tmp_path):
    compare = load_tool("compare_robustness")
    result = {"dataset": "synthetic", "split": "test", "num_points": 64, "num_samples": 4, "levels": [0],
              "seed": 0, "clean_accuracy": 50.0, "mean_corrupted_accuracy": 40.0,
              "corruption_accuracy": {"jitter": 40.0}, "corruptions": {"jitter": {"0": 40.0}}}
    (tmp_path / "a.json").write_text(json.dumps(result))
    (tmp_path / "b.json").write_text(json.dumps({**result, "seed": 1}))
    (tmp_path / "c.json").write_text(json.dumps({"clean_accuracy": 1.0}))
    with pytest.raises(SystemExit) as error:
        compare.main([str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert error.value.code == 1
    with pytest.raises(ValueError, match=r"b\.json and .*a\.json were measured on different clouds: seed 1 vs 0"):
        compare.check_same_clouds({"a": result, "b": {**result, "seed": 1}},
                                  {"a": tmp_path / "a.json", "b": tmp_path / "b.json"})
    with pytest.raises(ValueError, match=r"c\.json: not a `pointea robustness` result \(missing dataset"):
        compare.load_result(tmp_path / "c.json")
    with pytest.raises(FileNotFoundError, match="missing.json: no such file"):
        compare.load_result(tmp_path / "missing.json")


def test_export_pretrained_records_best_and_last_epoch_measured_again(tmp_path):
    from pointea.engine.evaluate import evaluate

    ablation = load_tool("ablation")
    assert ablation.main(["--config", "synthetic-cls", "--attention", "ea", "--out-dir", str(tmp_path / "runs"),
                          *TINY, "train.epochs=2"]) == 0
    export = load_tool("export_pretrained")
    export.main([str(tmp_path / "runs" / "ea"), "--name", "tiny-cls", "--command", "train it",
                 "--split", "val", "--out-dir", str(tmp_path / "weights")])
    record = json.loads((tmp_path / "weights" / "tiny-cls.json").read_text())
    assert record["command"] == "train it" and record["split"] == "val" and record["last_epoch"] == 2
    best = evaluate(tmp_path / "weights" / "tiny-cls.pt", split="val")
    last = evaluate(tmp_path / "runs" / "ea" / "checkpoints" / "last.pt", split="val")
    assert record["metrics"]["overall_accuracy"] == best["overall_accuracy"]
    assert record["last_epoch_metrics"]["mean_class_accuracy"] == last["mean_class_accuracy"]
    logged = json.loads((tmp_path / "runs" / "ea" / "metrics.json").read_text())
    assert record["last_epoch_metrics"]["overall_accuracy"] == logged["last"]["overall_accuracy"]


def test_training_benchmark_times_recipe_models_side_by_side(tmp_path, capsys):
    from pointea.config import load_config
    from pointea.models import build_model, count_parameters

    bench = load_tool("bench_train")
    out = tmp_path / "bench_train.json"
    variant = "synthetic-cls model.overrides.edge_mlp=true 'model.overrides.stage_dims=[16]' " \
              "'model.overrides.stage_samples=[16]' 'model.overrides.num_neighbors=[4]'"
    assert bench.main(["--recipe", "synthetic-cls", "--recipe", variant, "--dtypes", "fp32", "--num-points", "32",
                       "--batch-size", "2", "--steps", "1", "--warmup", "0", "--threads", "1",
                       "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [row["preset"] for row in rows] == ["#1 synthetic-cls", "#2 synthetic-cls"]
    plain = load_config("synthetic-cls").model
    assert rows[0]["model_overrides"] == plain.overrides
    assert rows[1]["model_overrides"] == {**plain.overrides, "edge_mlp": True, "stage_dims": [16],
                                          "stage_samples": [16], "num_neighbors": [4]}
    for row in rows:  # the benchmarked model is the one the recipe builds
        assert row["params"] == count_parameters(build_model(row["model_preset"], **row["model_overrides"]))
        assert row["train_samples_per_s"] > 0 and row["infer_samples_per_s"] > 0
    printed = capsys.readouterr().out
    assert "#1 synthetic-cls" in printed and f"#2: {variant}" in printed

    with pytest.raises(SystemExit):
        bench.main(["--recipe", "synthetic-cls model.overrides.no_such_key=1", "--steps", "1"])
    assert "no_such_key" in capsys.readouterr().err
