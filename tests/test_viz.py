"""Views rendered headless to pixels; missing Open3D / display; the ``pointea viz`` command."""

import argparse
import json
import os
import re
import subprocess
import sys
import types

import numpy as np
import pytest

from pointea import viz
from pointea.palette import CORRECT_COLOR, ERROR_COLOR, palette

BACKGROUND = np.asarray(viz.BACKGROUND)


@pytest.fixture(scope="module")
def open3d():
    try:
        return viz.import_open3d()
    except viz.VisualizationError as error:
        pytest.skip(f"Open3D cannot be imported here: {error}")


def _sphere(n=1500, seed=0):
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(n, 3)).astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def _three_parts(points):
    """Labels 0 (bottom), 1 (middle), 2 (top) by height."""
    return np.digitize(points[:, 1], [-0.33, 0.33]).astype(np.int64)


def _foreground_share(image):
    return np.any(image != BACKGROUND, axis=-1).mean()


def _shaded_matches(image, rgb, tolerance=14.0):
    """Mask of pixels that are ``rgb`` darkened by depth shading (a factor of 0.55..1)."""
    pixels = image.reshape(-1, 3).astype(np.float64)
    color = np.asarray(rgb, dtype=np.float64)
    scale = pixels @ color / (color @ color)
    residual = np.linalg.norm(pixels - scale[:, None] * color, axis=1)
    return ((scale > 0.55) & (scale < 1.05) & (residual < tolerance)).reshape(image.shape[:2])


def _exact_matches(image, rgb):
    return np.all(image == np.asarray(rgb, dtype=np.uint8), axis=-1)


# --------------------------------------------------------------------------------------------
# Camera


def test_camera_vectors_for_each_up_axis():
    front, up = viz.Camera(azimuth=0, elevation=0, up="y").vectors()
    np.testing.assert_allclose(front, [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(up, [0, 1, 0])
    front, _ = viz.Camera(azimuth=90, elevation=0, up="y").vectors()
    np.testing.assert_allclose(front, [1, 0, 0], atol=1e-12)
    front, up = viz.Camera(azimuth=0, elevation=90, up="z").vectors()
    np.testing.assert_allclose(front, [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(up, [0, 0, 1])
    for axis in ("x", "y", "z"):
        front, up = viz.Camera(azimuth=37, elevation=-12, up=axis).vectors()
        assert np.isclose(np.linalg.norm(front), 1.0)
        assert np.isclose(front @ up, np.sin(np.radians(-12)))


def test_camera_rejects_bad_settings():
    with pytest.raises(ValueError, match="up axis"):
        viz.Camera(up="w")
    with pytest.raises(ValueError, match="zoom"):
        viz.Camera(zoom=0)


# --------------------------------------------------------------------------------------------
# Rendering


def test_render_points_has_requested_size_and_is_not_blank(open3d):
    image = viz.render_points(_sphere(), width=320, height=200)
    assert image.shape == (200, 320, 3) and image.dtype == np.uint8
    assert 0.05 < _foreground_share(image) < 0.9


def test_camera_azimuth_turns_an_elongated_shape(open3d):
    rng = np.random.default_rng(1)
    rod = np.c_[rng.uniform(-1, 1, 2000), rng.uniform(-0.05, 0.05, 2000), rng.uniform(-0.05, 0.05, 2000)]

    def aspect_of_silhouette(azimuth):  # width over height: views are fitted, so sizes alone say little
        image = viz.render_points(rod, width=200, height=200, camera=viz.Camera(azimuth=azimuth, elevation=0))
        rows, columns = np.nonzero(np.any(image != BACKGROUND, axis=2))
        return np.ptp(columns) / max(np.ptp(rows), 1)

    assert aspect_of_silhouette(0) > 5 * aspect_of_silhouette(90)  # seen from the side vs end-on


def test_fit_view_keeps_every_point_inside_the_margin_and_centred():
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(500, 3)) * [3.0, 0.5, 1.0] + 7.0
    tan_half = np.tan(np.radians(30))
    for azimuth, elevation, width, height in ((0, 0, 400, 300), (30, 20, 120, 400), (75, -40, 300, 300)):
        front, up = viz.Camera(azimuth=azimuth, elevation=elevation).vectors()
        look_at, distance = viz.fit_view(xyz, front, up, tan_half, width, height, margin=0.1)
        up = up - front * (up @ front)
        up /= np.linalg.norm(up)
        relative = xyz - look_at
        depth = distance - relative @ front
        x = relative @ np.cross(up, front) / (depth * tan_half * width / height)
        y = relative @ up / (depth * tan_half)
        reach = max(np.abs(x).max(), np.abs(y).max())
        assert reach <= 0.9 + 1e-9
        assert reach > 0.89  # as close as the margin allows: the view is filled
        assert abs(x.max() + x.min()) < 0.1 and abs(y.max() + y.min()) < 0.1  # about centred


@pytest.mark.parametrize("shape, camera, size", [
    ("sphere", viz.Camera(), (200, 200)),
    ("rod", viz.Camera(azimuth=10, elevation=0), (100, 260)),  # a long shape in a tall image
    ("far", viz.Camera(azimuth=60, elevation=45, up="z"), (260, 150)),  # far from the origin, z up
])
def test_renders_fill_the_image_and_never_touch_its_edges(open3d, shape, camera, size):
    rng = np.random.default_rng(2)
    points = {
        "sphere": _sphere(2000),
        "rod": np.c_[rng.uniform(-2, 2, 2000), rng.uniform(-0.1, 0.1, (2000, 2))],
        "far": _sphere(2000) * [2.0, 1.0, 0.5] + 1000.0,
    }[shape]
    width, height = size
    image = viz.render_points(points, width=width, height=height, point_size=4, camera=camera)
    foreground = np.any(image != BACKGROUND, axis=-1)
    border = np.concatenate([foreground[:3].ravel(), foreground[-3:].ravel(),
                             foreground[:, :3].ravel(), foreground[:, -3:].ravel()])
    assert not border.any(), "the cloud touches the image edge"
    rows, columns = np.nonzero(foreground)
    assert max(np.ptp(rows) / height, np.ptp(columns) / width) > 0.8, "the cloud is drawn small"


def test_view_parts_draws_each_part_colour_and_a_legend(open3d):
    points = _sphere()
    image = viz.view_parts(points, _three_parts(points) + 4, part_names=[f"p{i}" for i in range(7)],
                           title="sphere", width=480, height=320)
    assert image.shape == (320, 480, 3)
    assert _foreground_share(image) > 0.05
    colors = palette(7)[4:7]
    for color in colors:
        assert _shaded_matches(image, color).sum() > 100, f"part colour {color} missing"
        # legend swatches are unshaded squares in the right part of the image
        assert _exact_matches(image[:, 300:], color).sum() > 20
    assert not _exact_matches(image, palette(7)[0]).any()  # labels 0..3 are absent


def test_view_parts_without_labels_and_bad_inputs(open3d):
    image = viz.view_parts(_sphere(), width=200, height=150)
    assert image.shape == (150, 200, 3) and _foreground_share(image) > 0.05
    with pytest.raises(ValueError, match=r"shape \(1500,\)"):
        viz.view_parts(_sphere(), np.zeros(10, dtype=np.int64))
    with pytest.raises(ValueError, match="no name"):
        viz.view_parts(_sphere(), np.full(1500, 3), part_names=["a"])
    with pytest.raises(ValueError, match="empty cloud"):
        viz.view_parts(np.zeros((0, 3)))


def test_view_comparison_marks_exactly_the_wrong_points(open3d):
    points = _sphere()
    truth = _three_parts(points)
    pred = truth.copy()
    pred[points[:, 0] > 0.7] = 0  # a cap of wrong labels on the +x side
    width, height = 900, 300
    camera = viz.Camera(azimuth=90, elevation=0)  # looking at the cap
    image = viz.view_comparison(points, truth, pred, legend=False, width=width, height=height, camera=camera)
    assert image.shape == (height, width, 3)
    panels = [image[40:, k * 300:(k + 1) * 300] for k in range(3)]  # under the captions
    red = [_shaded_matches(panel, ERROR_COLOR).sum() for panel in panels]
    assert red[2] > 50 and red[0] == 0 and red[1] == 0
    assert _shaded_matches(panels[2], CORRECT_COLOR, tolerance=10).sum() > 200
    for color in palette(3):
        assert _shaded_matches(panels[0], color).sum() > 50

    perfect = viz.view_comparison(points, truth, truth, legend=False, width=width, height=height, camera=camera)
    assert not _shaded_matches(perfect, ERROR_COLOR).any()

    with_legend = viz.view_comparison(points, truth, pred, part_names=["a", "b", "c"], width=width, height=height)
    for color in [*palette(3), ERROR_COLOR, CORRECT_COLOR]:
        assert _exact_matches(with_legend[:, int(width * 0.65):], color).sum() > 20  # legend swatches


def test_view_comparison_without_error_panel_has_two_views(open3d):
    points = _sphere(800)
    truth = _three_parts(points)
    image = viz.view_comparison(points, truth, truth, errors=False, legend=False, width=600, height=250)
    columns = np.any(image[40:] != BACKGROUND, axis=(0, 2))
    # two blobs of columns separated by background
    starts = np.flatnonzero(np.diff(columns.astype(int)) == 1)
    assert image.shape == (250, 600, 3) and len(starts) >= 2
    assert not _shaded_matches(image, ERROR_COLOR).any()


def _tile_boxes(count, ncols, width, height):
    nrows = -(-count // ncols)
    tile_w, tile_h = width // ncols, height // nrows
    return [((i % ncols) * tile_w, (i // ncols) * tile_h, tile_w, tile_h) for i in range(count)]


def test_classification_gallery_grid_captions_and_marked_mistakes(open3d):
    samples = [viz.ClassificationSample(_sphere(600, seed=i) * [1, 1 + 0.3 * i, 1], label=i % 3, pred=i % 3)
               for i in range(6)]
    samples[1].pred = 2  # two mistakes
    samples[5].pred = 0
    width, height = 600, 400
    image = viz.view_classification_gallery(samples, ["a", "b", "c"], ncols=3, width=width, height=height)
    assert image.shape == (height, width, 3)
    red_frames = []
    for x0, y0, w, h in _tile_boxes(6, 3, width, height):
        tile = image[y0:y0 + h, x0:x0 + w]
        assert _foreground_share(tile) > 0.02  # every tile holds a shape
        assert (tile[: h // 8] != BACKGROUND).any()  # and a caption on top
        frame = _exact_matches(tile[:, :6], ERROR_COLOR).mean(axis=1)  # left border column
        red_frames.append(frame.mean() > 0.5)
    assert red_frames == [False, True, False, False, False, True]


def test_classification_gallery_default_height_gives_square_tiles(open3d):
    samples = [viz.ClassificationSample(_sphere(300), label=0) for _ in range(5)]
    image = viz.view_classification_gallery(samples, ["ball"], width=300)
    assert image.shape == (200, 300, 3)  # 3 columns x 2 rows of 100 px


def test_segmentation_gallery_puts_each_category_on_its_own_row(open3d):
    points = _sphere(500)
    parts = _three_parts(points)
    samples = [viz.SegmentationSample(points, parts + 3 * c, parts + 3 * c, category=c) for c in (1, 0, 1)]
    image = viz.view_segmentation_gallery(samples, category_names=["x", "y"], width=400, height=300)
    assert image.shape == (300, 400, 3)
    # row 0: category 0 (one pair, then an empty pair), row 1: two pairs of category 1
    tiles = _tile_boxes(8, 4, 400, 300)
    filled = [_foreground_share(image[y:y + h, x:x + w]) > 0.02 for x, y, w, h in tiles]
    assert filled == [True, True, False, False, True, True, True, True]
    assert _shaded_matches(image[: 150], palette(1)[0]).sum() > 20  # category 0 parts 0..2 on top
    assert _shaded_matches(image[150:], palette(4)[3]).sum() > 20  # category 1 parts 3..5 below


def test_gallery_errors_for_bad_requests(open3d):
    with pytest.raises(ValueError, match="at least one"):
        viz.view_classification_gallery([], ["a"])
    with pytest.raises(ValueError, match="out of range"):
        viz.view_classification_gallery([viz.ClassificationSample(_sphere(50), label=3)], ["a"])
    with pytest.raises(ValueError, match="too small"):
        viz.view_classification_gallery([viz.ClassificationSample(_sphere(50), 0)] * 30, ["a"], ncols=30,
                                        width=300, height=300)
    points = _sphere(50)
    with pytest.raises(ValueError, match="every sample"):
        viz.view_segmentation_gallery([viz.SegmentationSample(points, _three_parts(points), _three_parts(points)),
                                       viz.SegmentationSample(points, _three_parts(points))])


def test_save_png_round_trip(tmp_path):
    from matplotlib.image import imread

    image = np.zeros((20, 30, 3), dtype=np.uint8)
    image[5:10, 3:8] = (200, 10, 30)
    viz.save_png(tmp_path / "out.png", image)
    back = imread(tmp_path / "out.png")
    assert back.shape[:2] == (20, 30)
    np.testing.assert_array_equal(np.round(back[..., :3] * 255).astype(np.uint8), image)
    with pytest.raises(ValueError, match="uint8"):
        viz.save_png(tmp_path / "bad.png", image.astype(np.float32))


# --------------------------------------------------------------------------------------------
# Missing Open3D, missing display


def test_importing_pointea_viz_does_not_import_open3d():
    code = "import sys, pointea.viz, pointea.html_viewer, pointea.commands.viz; print('open3d' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_missing_open3d_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "open3d", None)  # makes `import open3d` fail
    with pytest.raises(viz.VisualizationError) as caught:
        viz.render_points(_sphere(100), width=50, height=50)
    message = str(caught.value)
    assert "pip install open3d" in message and "--html" in message


class _FailingVisualizer:
    def create_window(self, **kwargs):
        return False


def test_failed_offscreen_window_gives_a_clear_message(monkeypatch):
    fake = types.SimpleNamespace(visualization=types.SimpleNamespace(Visualizer=_FailingVisualizer))
    monkeypatch.setattr(viz, "import_open3d", lambda: fake)
    with pytest.raises(viz.VisualizationError, match="offscreen.*--html"):
        viz.render_points(_sphere(100), width=50, height=50)


def test_ensure_runtime_dir_gives_a_private_folder_only_when_needed(monkeypatch, tmp_path):
    import stat

    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    viz.ensure_runtime_dir()
    folder = os.environ["XDG_RUNTIME_DIR"]
    assert os.path.isdir(folder) and stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "gone"))
    viz.ensure_runtime_dir()
    assert os.environ["XDG_RUNTIME_DIR"] != str(tmp_path / "gone")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    viz.ensure_runtime_dir()
    assert os.environ["XDG_RUNTIME_DIR"] == str(tmp_path)  # a valid one is kept


def test_headless_render_without_xdg_runtime_dir_prints_no_error(open3d, tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("XDG_RUNTIME_DIR", "DISPLAY")}
    out = tmp_path / "cloud.png"
    script = ("import numpy as np; from pointea import viz; "
              f"viz.save_png({str(out)!r}, viz.render_points(np.random.default_rng(0).normal(size=(200, 3)), "
              "width=64, height=64))")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "XDG_RUNTIME_DIR" not in result.stderr
    assert out.is_file() and _read_png(out).shape == (64, 64, 3)


def test_show_without_display_points_to_png_and_html(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(viz.VisualizationError, match="no display.*--out.*--html"):
        viz.show([(_sphere(100), None)])


class _FakeCloud:
    def __init__(self, xyz):
        self.xyz = np.asarray(xyz)
        self.colors = None


class _FakeVisualizer:
    opened = True

    def __init__(self):
        self.clouds, self.ran = [], False
        _FakeVisualizer.last = self

    def create_window(self, **kwargs):
        return self.opened

    def add_geometry(self, cloud):
        self.clouds.append(cloud)

    def get_render_option(self):
        return types.SimpleNamespace()

    def get_view_control(self):
        self.view = types.SimpleNamespace(get_field_of_view=lambda: 60.0)
        for name in ("lookat", "front", "up", "zoom"):
            setattr(self.view, f"set_{name}", lambda value, name=name: setattr(self.view, name, value))
        return self.view

    def run(self):
        self.ran = True

    def destroy_window(self):
        pass


def _fake_open3d():
    return types.SimpleNamespace(
        visualization=types.SimpleNamespace(Visualizer=_FakeVisualizer),
        geometry=types.SimpleNamespace(PointCloud=_FakeCloud),
        utility=types.SimpleNamespace(Vector3dVector=np.asarray),
    )


def test_show_places_clouds_side_by_side_in_one_window(monkeypatch):
    monkeypatch.setattr(viz, "has_display", lambda: True)
    monkeypatch.setattr(viz, "import_open3d", _fake_open3d)
    monkeypatch.setattr(_FakeVisualizer, "opened", True)
    points = _sphere(200)
    viz.show([(points, None), (points + 10.0, None), (points, palette(3)[_three_parts(points)])],
             camera=viz.Camera(azimuth=0, elevation=0))
    window = _FakeVisualizer.last
    assert window.ran and len(window.clouds) == 3
    centres = np.array([cloud.xyz.mean(axis=0) for cloud in window.clouds])
    assert np.all(np.diff(centres[:, 0]) > 1.0)  # left to right along +x (the screen's right)
    np.testing.assert_allclose(centres[:, 1:], 0.0, atol=1e-6)  # each cloud re-centred
    everything = np.concatenate([cloud.xyz for cloud in window.clouds])
    assert np.all(everything.min(axis=0) < window.view.lookat) and np.all(window.view.lookat < everything.max(axis=0))
    assert 0.02 <= window.view.zoom <= 2.0

    monkeypatch.setattr(_FakeVisualizer, "opened", False)
    with pytest.raises(viz.VisualizationError, match="could not open a window.*--out.*--html"):
        viz.show([(points, None)])


# --------------------------------------------------------------------------------------------
# The command


def _viz(argv):
    from pointea.commands import viz as command

    parser = argparse.ArgumentParser(prog="pointea")
    command.add_parser(parser.add_subparsers(dest="command"))
    return command.run(parser.parse_args(["viz", *argv]))


def _read_png(path):
    from matplotlib.image import imread

    return np.round(imread(path)[..., :3] * 255).astype(np.uint8)


def test_cli_renders_a_synthetic_item_with_part_colours(open3d, tmp_path, capsys):
    from pointea.data.synthetic import SyntheticShapes

    dataset = SyntheticShapes("test", num_points=64)
    chair = dataset.classes.index("chair")
    index = int(np.flatnonzero(dataset.labels.numpy() == chair)[0])
    out = tmp_path / "item.png"
    assert _viz(["--dataset", "synthetic", "--index", str(index), "--num-points", "512", "--out", str(out),
                 "--width", "400", "--height", "300"]) == 0
    image = _read_png(out)
    assert image.shape == (300, 400, 3)
    for part in dataset.category_parts[chair]:
        assert _exact_matches(image, palette(part + 1)[part]).sum() > 20  # legend swatch at least
        assert _shaded_matches(image, palette(part + 1)[part]).sum() > 60
    assert "wrote" in capsys.readouterr().out


def test_cli_renders_a_labelled_file(open3d, tmp_path):
    from pointea.data.io import write_point_cloud

    points = _sphere(1000)
    cloud = tmp_path / "pred.ply"
    write_point_cloud(cloud, points, labels=_three_parts(points) + 10)
    out = tmp_path / "file.png"
    assert _viz([str(cloud), "--out", str(out), "--width", "300", "--height", "240"]) == 0
    image = _read_png(out)
    assert image.shape == (240, 300, 3)
    for color in palette(13)[10:13]:
        assert _shaded_matches(image, color).sum() > 50


def test_cli_reports_user_errors_without_a_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert _viz(["--dataset", "synthetic", "--index", "0"]) == 2
    assert "--out" in capsys.readouterr().err
    assert _viz([str(tmp_path / "missing.ply"), "--out", str(tmp_path / "x.png")]) == 2
    assert "missing.ply" in capsys.readouterr().err
    assert _viz(["--dataset", "synthetic", "--index", "100000", "--out", str(tmp_path / "x.png")]) == 2
    assert "out of range" in capsys.readouterr().err
    assert _viz(["--dataset", "modelnet40", "--out", str(tmp_path / "x.png")]) == 2
    assert "--data-root" in capsys.readouterr().err


def test_cli_html_output(tmp_path):
    page = tmp_path / "page.html"
    assert _viz(["--dataset", "synthetic", "--index", "3", "--num-points", "256", "--html", str(page)]) == 0
    text = page.read_text()
    assert "data-drawn-points" in text and "<script src" not in text


def _tiny_checkpoint(path, task, **meta_changes):
    import torch

    from pointea.data.synthetic import SyntheticShapes
    from pointea.engine.checkpoint import save_checkpoint
    from pointea.models import ModelConfig, build_model, model_config_to_dict

    data = SyntheticShapes("test", num_points=64, num_samples=1)
    small = dict(embed_dims=(16,), stage_dims=(32,), num_neighbors=(8,), num_blocks=1, fuse_dim=0, head_dims=(16,))
    if task == "classification":
        config = ModelConfig(num_classes=data.num_classes, stage_samples=(32,), **small)
    else:
        config = ModelConfig(task="segmentation", category_parts=data.category_parts, stage_samples=(0,), **small)
    torch.manual_seed(0)
    model = build_model(config)
    meta = {"name": "synthetic", "task": task, "in_channels": 3, "num_points": 256,
            "category_parts": data.category_parts, "part_names": data.part_names}
    meta["classes" if task == "classification" else "categories"] = data.classes
    config_of_run = {"data": {"name": meta_changes.pop("name", "synthetic"), "root": meta_changes.pop("root", None)}}
    meta.update(name=config_of_run["data"]["name"], **meta_changes)
    save_checkpoint(path, {"model_config": model_config_to_dict(config), "model": model.state_dict(), "dataset": meta,
                           "config": config_of_run})
    return path


def test_cli_predicts_with_a_segmentation_checkpoint(open3d, tmp_path):
    checkpoint = _tiny_checkpoint(tmp_path / "seg.pt", "segmentation")
    out = tmp_path / "compare.png"
    assert _viz(["--dataset", "synthetic", "--index", "100", "--checkpoint", str(checkpoint), "--out", str(out),
                 "--width", "600", "--height", "240"]) == 0
    image = _read_png(out)
    assert image.shape == (240, 600, 3)
    assert _shaded_matches(image, CORRECT_COLOR, tolerance=10).sum() + _shaded_matches(image, ERROR_COLOR).sum() > 100


def test_cli_gallery_with_a_classification_checkpoint(open3d, tmp_path):
    checkpoint = _tiny_checkpoint(tmp_path / "cls.pt", "classification")
    out = tmp_path / "gallery.png"
    assert _viz(["--dataset", "synthetic", "--count", "4", "--checkpoint", str(checkpoint), "--out", str(out),
                 "--width", "400"]) == 0
    image = _read_png(out)
    assert image.shape == (400, 400, 3)  # 2 x 2 square tiles
    for x0, y0, w, h in _tile_boxes(4, 2, 400, 400):
        assert _foreground_share(image[y0:y0 + h, x0:x0 + w]) > 0.02


def test_cli_plots_curves_and_confusion(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    records = [{"epoch": e, "split": s, "loss": 1.0 / (e + 1), "overall_accuracy": 50.0 + e, "lr": 0.01}
               for e in range(3) for s in ("train", "val")]
    (run_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert _viz(["--curves", str(run_dir), "--out", str(tmp_path / "curves.png")]) == 0
    assert _read_png(tmp_path / "curves.png").shape[0] > 100
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"confusion_matrix": [[3, 1], [0, 4]], "classes": ["a", "b"]}))
    assert _viz(["--confusion", str(metrics), "--out", str(tmp_path / "confusion.png")]) == 0
    assert (tmp_path / "confusion.png").stat().st_size > 1000
    metrics.write_text(json.dumps({"instance_miou": 80.0}))
    assert _viz(["--confusion", str(metrics), "--out", str(tmp_path / "c2.png")]) == 2
    for bad in ("x", [[1, 2], [3]], [1, 2, 3]):
        metrics.write_text(json.dumps({"confusion_matrix": bad}))
        assert _viz(["--confusion", str(metrics), "--out", str(tmp_path / "c3.png")]) == 2
    assert not (tmp_path / "c3.png").exists()


@pytest.mark.realdata("shapenetcore_partanno_segmentation_benchmark_v0")
def test_cli_draws_a_real_shapenetpart_shape_with_its_category_parts(open3d, tmp_path, shared_data):
    from pointea.data.shapenetpart import SHAPENETPART_CATEGORY_PARTS

    out = tmp_path / "real.png"
    assert _viz(["--dataset", "shapenetpart", "--data-root", str(shared_data), "--split", "train", "--index", "0",
                 "--out", str(out), "--width", "400", "--height", "300", "--no-errors"]) == 0
    image = _read_png(out)
    assert image.shape == (300, 400, 3)
    airplane_parts = SHAPENETPART_CATEGORY_PARTS[0]
    present = [part for part in airplane_parts if _exact_matches(image, palette(50)[part]).sum() > 20]
    assert len(present) >= 2  # legend swatches of the parts this airplane has
    assert all(part in airplane_parts for part in range(50)
               if _exact_matches(image, palette(50)[part]).sum() > 20)


def _z_up_chair(path):
    """A synthetic chair (seat 0, back 1, legs 2) turned to stand on z, as a labelled PLY."""
    from pointea.data.io import write_point_cloud
    from pointea.data.orientation import to_y_up
    from pointea.data.synthetic import generate_shape

    points, parts = generate_shape("chair", 1500, np.random.default_rng(5))
    z_to_y = to_y_up(np.eye(3), "z")  # (3, 3), row k: where axis k goes; its inverse is its transpose
    write_point_cloud(path, (points[:, :3] @ z_to_y.T).astype(np.float32), labels=parts)
    return path


def _mean_row(image, label):
    from pointea.palette import part_colors

    rows, _ = np.nonzero(_shaded_matches(image, part_colors(np.array([label]))[0]))
    assert len(rows) > 30, f"part {label} is hardly drawn"
    return rows.mean()


def test_cli_draws_a_z_up_file_upright_with_the_guessed_up_axis(open3d, tmp_path, capsys):
    chair = _z_up_chair(tmp_path / "chair.ply")
    out = tmp_path / "chair.png"
    assert _viz([str(chair), "--out", str(out), "--width", "300", "--height", "300", "--title", ""]) == 0
    assert "up axis: z (guessed from the cloud" in capsys.readouterr().err
    image = _read_png(out)
    back, seat, legs = _mean_row(image, 1), _mean_row(image, 0), _mean_row(image, 2)
    assert back < seat < legs  # the back on top, the legs below: upright
    assert _viz([str(chair), "--up", "z", "--out", str(tmp_path / "again.png"), "--title", ""]) == 0
    assert "up axis: z (from --up)" in capsys.readouterr().err


def test_cli_up_axis_of_datasets_and_of_a_checkpoint_s_training_data(tmp_path, capsys, monkeypatch):
    from pointea import viz as library

    monkeypatch.setattr(library, "_compose", lambda tiles, **kw: np.zeros((kw["height"], kw["width"], 3), np.uint8))
    root = tmp_path / "data"
    (root / "ModelNet40" / "chair" / "train").mkdir(parents=True)  # the folder layout, z up; nothing is read
    chair = _z_up_chair(tmp_path / "chair.ply")
    checkpoint = _tiny_checkpoint(tmp_path / "mn.pt", "classification", name="modelnet40", root=str(root))
    out = str(tmp_path / "x.png")
    assert _viz([str(chair), "--checkpoint", str(checkpoint), "--up", "x", "--out", out]) == 0
    assert "up axis: x (from --up)" in capsys.readouterr().err
    assert _viz([str(chair), "--checkpoint", str(checkpoint), "--out", out]) == 0
    assert "up axis: z (from the checkpoint's training data modelnet40, folder layout)" in capsys.readouterr().err
    checkpoint = _tiny_checkpoint(tmp_path / "moved.pt", "classification", name="modelnet40",
                                  root=str(tmp_path / "elsewhere"))
    assert _viz([str(chair), "--checkpoint", str(checkpoint), "--out", out]) == 0
    err = capsys.readouterr().err
    assert "up axis: z (guessed from the cloud" in err and "not found at" in err
    checkpoint = _tiny_checkpoint(tmp_path / "syn.pt", "classification")
    assert _viz([str(chair), "--checkpoint", str(checkpoint), "--out", out]) == 0
    assert "up axis: y (from the checkpoint's training data synthetic)" in capsys.readouterr().err
    assert _viz(["--dataset", "synthetic", "--index", "0", "--num-points", "64", "--out", out]) == 0
    assert "up axis: y (from the dataset synthetic)" in capsys.readouterr().err
    # a user's folder dataset has no up axis of its own: guessed, and said why
    checkpoint = _tiny_checkpoint(tmp_path / "own.pt", "classification", name="folder-cls", root=str(root))
    assert _viz([str(chair), "--checkpoint", str(checkpoint), "--out", out]) == 0
    err = capsys.readouterr().err
    assert "up axis: z (guessed from the cloud" in err
    assert "the checkpoint's training data folder-cls has no known up axis" in err and "not found" not in err


def test_training_records_the_up_axis_of_its_data_s_layout(tmp_path, monkeypatch):
    import torch

    from pointea.config import Config, DataConfig
    from pointea.engine.train import build_data

    monkeypatch.setenv("POINTEA_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for name in ("bed", "chair"):  # ModelNet's folder layout (.npy point files), which stands on z
        for split in ("train", "test"):
            folder = tmp_path / "ModelNet10" / name / split
            folder.mkdir(parents=True)
            for number in range(1, 5):
                np.save(folder / f"{name}_{number:04d}.npy", rng.uniform(-1, 1, (40, 3)).astype(np.float32))
    metas = {}
    for data in (DataConfig(name="modelnet10", root=str(tmp_path), num_points=32),
                 DataConfig(name="synthetic", num_points=32, num_samples=2)):
        metas[data.name] = build_data(Config(data=data), "classification", torch.device("cpu")).meta
    assert metas["modelnet10"]["up_axis"] == "z" and metas["synthetic"]["up_axis"] == "y"


def test_cli_takes_the_up_axis_a_checkpoint_records_from_any_folder(tmp_path, capsys, monkeypatch):
    from pointea import viz as library
    from pointea.data.io import read_point_cloud, write_point_cloud
    from pointea.data.orientation import to_y_up
    from pointea.pretrained import shipped_weights

    monkeypatch.setattr(library, "_compose", lambda tiles, **kw: np.zeros((kw["height"], kw["width"], 3), np.uint8))
    chair = tmp_path / "chair.ply"  # y up: a guess says y, the checkpoints' records say otherwise
    write_point_cloud(chair, to_y_up(read_point_cloud(_z_up_chair(tmp_path / "z.ply")), "z"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the recorded data roots are relative, and not found from here
    out = str(tmp_path / "x.png")
    checkpoint = _tiny_checkpoint(tmp_path / "x.pt", "classification", name="modelnet40", root="data", up_axis="x")
    assert _viz([str(chair), "--checkpoint", str(checkpoint), "--out", out]) == 0
    assert "up axis: x (from the checkpoint, trained on modelnet40)" in capsys.readouterr().err
    if "pointea-cls-modelnet40-cpu" in shipped_weights():  # trained on the folder layout: z up
        assert _viz([str(chair), "--checkpoint", "pointea-cls-modelnet40-cpu", "--out", out]) == 0
        assert "up axis: z (from the checkpoint, trained on modelnet40)" in capsys.readouterr().err


def test_cli_turns_files_guessed_to_stand_on_different_axes_to_y(tmp_path, capsys, monkeypatch):
    from pointea import viz as library
    from pointea.data.io import read_point_cloud, write_point_cloud
    from pointea.data.orientation import to_y_up

    drawn = []

    def compose(tiles, **kwargs):
        drawn.extend(tile.points for tile in tiles)
        return np.zeros((kwargs["height"], kwargs["width"], 3), np.uint8)

    monkeypatch.setattr(library, "_compose", compose)
    z_up = _z_up_chair(tmp_path / "z.ply")
    y_up = tmp_path / "y.ply"
    write_point_cloud(y_up, to_y_up(read_point_cloud(z_up), "z"))
    assert _viz([str(z_up), str(y_up), "--out", str(tmp_path / "g.png")]) == 0
    assert "up axis: y (guessed per cloud, each turned to y: z.ply z, y.ply y)" in capsys.readouterr().err
    np.testing.assert_allclose(drawn[0], drawn[1], atol=1e-5)  # both now stand on y


def test_cli_titles_say_what_was_predicted(tmp_path, monkeypatch, capsys):
    from pointea import viz as library
    from pointea.data.io import write_point_cloud
    from pointea.engine.checkpoint import load_model
    from pointea.engine.predict import predict_points

    titles = []

    def compose(tiles, **kwargs):
        titles.append(kwargs["title"])
        return np.zeros((kwargs["height"], kwargs["width"], 3), np.uint8)

    monkeypatch.setattr(library, "_compose", compose)
    cloud = tmp_path / "shape.ply"
    write_point_cloud(cloud, _sphere(300) * [1.0, 2.0, 1.0])
    checkpoint = _tiny_checkpoint(tmp_path / "cls.pt", "classification")
    assert _viz([str(cloud), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "c.png")]) == 0
    best = predict_points(_sphere(300) * [1.0, 2.0, 1.0], *load_model(checkpoint), topk=1)["predictions"][0]
    assert titles[-1] == f"shape.ply \u2014 predicted: {best['class']} ({100 * best['probability']:.1f} %)"

    segmenter = _tiny_checkpoint(tmp_path / "seg.pt", "segmentation")
    assert _viz([str(cloud), "--checkpoint", str(segmenter), "--category", "chair", "--out", str(tmp_path / "s.png")]) == 0
    assert titles[-1] == "chair (shape.ply) \u2014 predicted parts"
    assert _viz(["--dataset", "synthetic", "--index", "100", "--num-points", "64", "--checkpoint", str(segmenter),
                 "--out", str(tmp_path / "d.png")]) == 0
    assert re.fullmatch(r"\w+ \(synthetic test #100\) \u2014 ground truth and predicted parts", titles[-1])
    page = tmp_path / "page.html"
    assert _viz([str(cloud), "--checkpoint", str(checkpoint), "--html", str(page)]) == 0
    assert f"<title>shape.ply \u2014 predicted: {best['class']} (" in page.read_text(encoding="utf-8")


def test_cli_vocabulary_matches_the_other_commands():
    from pointea.commands import viz as command

    parser = argparse.ArgumentParser(prog="pointea")
    command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["viz", "cloud.ply"])
    assert args.split == "test" and args.device == "auto" and args.zoom == 1.0
    text = parser._subparsers._group_actions[0].choices["viz"].format_help()
    for usage in ("--data-root DIR", "--checkpoint CKPT", "--count N", "--num-points N", "--columns N",
                  "--width N", "--out PNG", "--html HTML", "--confusion JSON", "--curves DIR", "--device DEVICE"):
        assert usage in text, usage


def test_cli_html_page_stands_a_z_up_file_on_y(tmp_path, capsys):
    import base64

    chair = _z_up_chair(tmp_path / "chair.ply")
    page = tmp_path / "chair.html"
    assert _viz([str(chair), "--html", str(page)]) == 0
    assert "up axis: z" in capsys.readouterr().err
    text = page.read_text(encoding="utf-8")
    payload = json.loads(re.search(r'<script id="pointea-data" type="application/json">(.*?)</script>', text,
                                   re.S).group(1))
    shown = np.frombuffer(base64.b64decode(payload["points"]), dtype="<f4").reshape(-1, 3)
    parts = np.frombuffer(base64.b64decode(payload["views"][0]["groups"]), dtype="<u2")  # legend order: 0, 1, 2
    heights = [shown[parts == k, 1].mean() for k in range(3)]  # the page draws +y upwards
    assert heights[1] > heights[0] > heights[2]  # back over seat over legs


def test_cli_plots_the_confusion_matrix_of_a_by_name_evaluation(tmp_path):
    # eval of 40-class weights on a 2-class subset: rows are the dataset's classes, one more
    # column counts predictions outside them
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"confusion_matrix": [[3, 0, 1], [1, 2, 1]], "classes": ["a", "b"],
                                   "confusion_columns": ["a", "b", "other"]}))
    assert _viz(["--confusion", str(metrics), "--out", str(tmp_path / "confusion.png")]) == 0
    assert _read_png(tmp_path / "confusion.png").shape[0] > 100
    # the same table without the column names is not a confusion matrix
    metrics.write_text(json.dumps({"confusion_matrix": [[3, 0, 1], [1, 2, 1]], "classes": ["a", "b"]}))
    assert _viz(["--confusion", str(metrics), "--out", str(tmp_path / "bad.png")]) == 2
    assert not (tmp_path / "bad.png").exists()
