import json
import subprocess
import sys

import numpy as np
import pytest

from pointea.plots import plot_confusion_matrix, plot_training_curves, read_log


def read_png(path):
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(path)


def assert_not_blank(image):
    rgb = image[..., :3]
    assert rgb.std() > 0.05
    # A meaningful share of pixels is not background white.
    assert (rgb.min(axis=2) < 0.9).mean() > 0.01


def test_confusion_matrix_png(tmp_path):
    matrix = np.array([[8, 1, 1], [0, 10, 0], [2, 3, 5]])
    path = plot_confusion_matrix(matrix, ["sphere", "box", "cone"], tmp_path / "cm.png")
    image = read_png(path)
    assert image.shape[:2] == (400, 500)  # figsize (5, 4) inches at 100 dpi for 3 classes
    assert_not_blank(image)


def test_confusion_matrix_scales_with_many_classes(tmp_path):
    matrix = np.random.default_rng(0).integers(0, 5, size=(40, 40))
    image = read_png(plot_confusion_matrix(matrix, [f"class{i}" for i in range(40)], tmp_path / "cm40.png"))
    assert image.shape[:2] == (1450, 1550)
    assert_not_blank(image)


def test_confusion_matrix_shape_mismatch(tmp_path):
    with pytest.raises(ValueError, match=r"shape \(2, 2\).*\(3, 3\)"):
        plot_confusion_matrix(np.eye(2), ["a", "b", "c"], tmp_path / "cm.png")


def write_log(run_dir, metric="overall_accuracy"):
    """Records as the training loop's RunLog writes them (kind train / val, a resume in between)."""
    run_dir.mkdir()
    lines = []
    for epoch in range(1, 6):
        common = {"epoch": epoch, "step": 10 * epoch, "time": 1e9 + epoch}
        lines.append({"kind": "train", **common, "loss": 2.0 / epoch, "accuracy": 40 + 8 * epoch, "lr": 0.01 / epoch})
        lines.append({"kind": "val", **common, "loss": 2.2 / epoch, metric: 35 + 8 * epoch})
        if epoch == 3:
            lines.append({"kind": "resume", **common})
    (run_dir / "log.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")


@pytest.mark.parametrize("metric", ["overall_accuracy", "instance_miou"])
def test_training_curves_png(tmp_path, metric):
    run_dir = tmp_path / "run"
    write_log(run_dir, metric)
    path = plot_training_curves(run_dir)
    assert path == run_dir / "curves.png"
    image = read_png(path)
    assert image.shape[:2] == (360, 1350)  # three panels: loss, metric, lr
    assert_not_blank(image)


def test_training_curves_draw_the_trained_weights_of_an_ema_run(tmp_path):
    plain, ema = tmp_path / "a" / "run", tmp_path / "b" / "run"
    for run_dir in (plain, ema):
        run_dir.parent.mkdir()
        write_log(run_dir)
    with open(ema / "log.jsonl", "a") as log:
        for epoch in range(1, 6):
            log.write(json.dumps({"split": "val_raw", "epoch": epoch, "overall_accuracy": 30 + 9 * epoch}) + "\n")
    a, b = read_png(plot_training_curves(plain)), read_png(plot_training_curves(ema))
    assert a.shape == b.shape
    third = a.shape[1] // 3  # panels: loss | metric | lr
    assert np.array_equal(a[:, :third], b[:, :third])  # the loss panel is untouched
    assert not np.array_equal(a[:, third : 2 * third], b[:, third : 2 * third])  # one more line


def test_training_curves_accept_split_records_and_custom_path(tmp_path):
    (tmp_path / "log.jsonl").write_text(
        "\n".join(json.dumps({"epoch": e, "split": s, "loss": 1.0 / e}) for e in (1, 2) for s in ("train", "val"))
    )
    image = read_png(plot_training_curves(tmp_path, tmp_path / "loss.png"))
    assert image.shape[:2] == (360, 450)  # loss only
    assert_not_blank(image)


def test_training_curves_errors_name_the_log(tmp_path):
    with pytest.raises(FileNotFoundError, match="log.jsonl"):
        plot_training_curves(tmp_path)
    (tmp_path / "log.jsonl").write_text('{"epoch": 1, "split": "train", "loss": 1.0}\nnot json\n')
    with pytest.raises(ValueError, match=r"log.jsonl, line 2"):
        read_log(tmp_path / "log.jsonl")


def test_plots_leave_pyplot_alone(tmp_path):
    # A fresh interpreter, so that other tests' imports cannot hide a stray pyplot import.
    code = (
        "import sys, numpy as np; from pointea.plots import plot_confusion_matrix; "
        f"plot_confusion_matrix(np.eye(2), ['a', 'b'], {str(tmp_path / 'cm.png')!r}); "
        "assert 'matplotlib.pyplot' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
