"""The self-contained HTML viewer: page contents, and drawing in headless Chromium."""

import base64
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from pointea.html_viewer import CORRECT_KEY, error_view, html_page, label_view, write_html
from pointea.palette import ERROR_COLOR, palette

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (apt-get install -y chromium)")


def _cloud(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(n, 3)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    labels = np.digitize(points[:, 1], [-0.33, 0.33]).astype(np.int64) + 5  # parts 5, 6, 7
    return points, labels


def _embedded(page):
    match = re.search(r'<script id="pointea-data" type="application/json">(.*?)</script>', page, re.S)
    return json.loads(match.group(1))


def test_page_embeds_points_and_labels_without_external_resources():
    points, labels = _cloud(300)
    page = html_page(points, labels, label_names=[f"part{i}" for i in range(8)], title="a <sphere>")
    assert "http://" not in page and "https://" not in page and "<script src" not in page
    assert "<title>a &lt;sphere&gt;</title>" in page
    data = _embedded(page)
    decoded = np.frombuffer(base64.b64decode(data["points"]), dtype="<f4").reshape(-1, 3)
    np.testing.assert_array_equal(decoded, points)  # y-up clouds are embedded unchanged
    (view,) = data["views"]
    assert [entry["name"] for entry in view["legend"]] == ["part5", "part6", "part7"]
    assert [entry["key"] for entry in view["legend"]] == [5, 6, 7]
    colors = np.frombuffer(base64.b64decode(view["colors"]), dtype=np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(colors, palette(8)[labels])
    groups = np.frombuffer(base64.b64decode(view["groups"]), dtype="<u2")
    np.testing.assert_array_equal(groups, labels - 5)  # index into the legend


def test_prediction_adds_prediction_and_error_views():
    points, labels = _cloud(200)
    pred = labels.copy()
    pred[:20] = 5
    data = _embedded(html_page(points, labels, pred_labels=pred))
    assert [view["name"] for view in data["views"]] == ["ground truth", "prediction", "errors"]
    errors = data["views"][2]
    wrong = int((pred != labels).sum())
    assert errors["legend"][0]["name"] == f"wrong ({wrong})"
    groups = np.frombuffer(base64.b64decode(errors["groups"]), dtype="<u2")
    np.testing.assert_array_equal(groups == 0, pred != labels)


def test_z_up_clouds_are_turned_to_y_up():
    points = np.array([[0, 0, 1.0], [1, 0, 0], [0, 1, 0]], dtype=np.float32)
    data = _embedded(html_page(points, up="z"))
    shown = np.frombuffer(base64.b64decode(data["points"]), dtype="<f4").reshape(-1, 3)
    np.testing.assert_allclose(shown[0], [0, 1, 0])  # +z is drawn upwards
    np.testing.assert_allclose(shown[1], [1, 0, 0])
    assert np.isclose(np.linalg.det(np.stack([shown[1], shown[0], np.cross(shown[1], shown[0])])), 1.0)


def test_views_helpers_and_validation():
    view = label_view("labels", np.array([2, 2, -1]))
    assert [key for key, _, _ in view.legend] == [-1, 2]
    errors = error_view(np.array([0, 1]), np.array([0, 0]))
    np.testing.assert_array_equal(errors.colors[1], ERROR_COLOR)
    with pytest.raises(ValueError, match="empty cloud"):
        html_page(np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        html_page(np.zeros((3, 3)), np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="up axis"):
        html_page(np.zeros((3, 3)), up="up")


def _chromium(tmp_path, url, *extra):
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=800,600",
               *extra, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=90)


def _drawn_points(tmp_path, url):
    result = _chromium(tmp_path, url, "--dump-dom")
    match = re.search(r'id="status" data-drawn-points="(\d+)" data-view="(\d+)"', result.stdout)
    assert match, f"no status element in the DOM; stderr: {result.stderr[-500:]}"
    return int(match.group(1)), int(match.group(2))


@needs_chromium
def test_page_draws_the_part_colours_in_headless_chromium(tmp_path):
    from matplotlib.image import imread

    points, labels = _cloud()
    page = write_html(tmp_path / "page.html", points, labels, point_size=3)
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, page.as_uri(), f"--screenshot={shot}")
    image = np.round(imread(shot)[..., :3] * 255).astype(np.uint8)
    assert image.shape[:2] == (600, 800)
    canvas = image[:, :560]  # left of the 210 px side panel
    foreground = np.any(canvas != 255, axis=-1)
    assert 0.02 < foreground.mean() < 0.9
    pixels = canvas[foreground].astype(np.float64)
    for color in palette(8)[5:8].astype(np.float64):
        scale = pixels @ color / (color @ color)  # points are shaded by depth (x 0.6 .. 1)
        close = (scale > 0.55) & (scale < 1.05) & (np.linalg.norm(pixels - scale[:, None] * color, axis=1) < 12)
        assert close.sum() > 100, f"part colour {color} not drawn"


@needs_chromium
def test_url_fragment_hides_parts_and_picks_the_view(tmp_path):
    points, labels = _cloud()
    pred = labels.copy()
    pred[:100] = 7
    page = write_html(tmp_path / "page.html", points, labels, pred_labels=pred).as_uri()
    assert _drawn_points(tmp_path, page) == (len(points), 0)
    hidden = int((labels == 6).sum())
    assert _drawn_points(tmp_path, page + "#hide=6") == (len(points) - hidden, 0)
    wrong = int((pred != labels).sum())
    assert _drawn_points(tmp_path, page + f"#view=2&hide={CORRECT_KEY}") == (wrong, 2)  # only the wrong points
