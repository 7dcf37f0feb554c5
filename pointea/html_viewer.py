"""A self-contained interactive HTML page for a point cloud: rotate, zoom, toggle parts.

The page needs no server, no network and no WebGL: the points are embedded as base64 float32 and
drawn by a small software rasterizer (z-buffered squares on a 2-D canvas) in inline JavaScript,
so it opens in any browser, including headless ones. Several colourings of the same points
("views": ground truth, prediction, errors) can be switched with buttons; clicking a legend entry
hides or shows that part.

The page reads its URL fragment at load: ``page.html#hide=3,5`` hides parts 3 and 5,
``#view=1`` opens the second view (both may be combined with ``&``; the error view's keys are
-2 for wrong and -3 for correct points). After every draw it writes
the number of drawn points to the ``data-drawn-points`` attribute of the element ``#status``
(and the shown view's index to ``data-view``), which scripts and tests can read.
"""

from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from pointea.atomic import atomic_write_text
from pointea.data.io import validate_labels, validate_points
from pointea.data.orientation import UP_AXES, to_y_up
from pointea.palette import CORRECT_COLOR, ERROR_COLOR, UNIFORM_COLOR, legend_entries, part_colors

PathLike = Union[str, os.PathLike]

# Legend keys of the error view (part labels are >= 0, unlabeled points -1).
WRONG_KEY, CORRECT_KEY = -2, -3
MAX_POINTS = 500_000  # larger clouds are subsampled (deterministically) to keep the page small


@dataclass
class HtmlView:
    """One colouring of the cloud.

    Attributes:
        name: button label, e.g. "ground truth".
        groups: (N,) int keys, one legend entry per distinct key (e.g. part ids).
        colors: (N, 3) uint8 colour of each point.
        legend: ``(key, name, rgb)`` for each key in ``groups``, in legend order.
    """

    name: str
    groups: np.ndarray
    colors: np.ndarray
    legend: List[Tuple[int, str, Tuple[int, int, int]]]


def label_view(name: str, labels: np.ndarray, label_names: Optional[Sequence[str]] = None) -> HtmlView:
    """A view colouring points by integer label with the shared palette; legend keys are the labels."""
    labels = np.asarray(labels).astype(np.int64)
    return HtmlView(name, labels, part_colors(labels), legend_entries(labels, label_names))


def error_view(true_labels: np.ndarray, pred_labels: np.ndarray, name: str = "errors") -> HtmlView:
    """A view with wrongly labelled points red (key ``WRONG_KEY``) and correct ones grey (``CORRECT_KEY``)."""
    wrong = np.asarray(true_labels) != np.asarray(pred_labels)
    groups = np.where(wrong, WRONG_KEY, CORRECT_KEY).astype(np.int64)
    colors = np.where(wrong[:, None], np.asarray(ERROR_COLOR, np.uint8), np.asarray(CORRECT_COLOR, np.uint8))
    legend = [(WRONG_KEY, f"wrong ({int(wrong.sum())})", ERROR_COLOR),
              (CORRECT_KEY, f"correct ({int((~wrong).sum())})", CORRECT_COLOR)]
    return HtmlView(name, groups, colors, legend)


def html_page(
    points: np.ndarray,
    labels: Optional[np.ndarray] = None,
    *,
    pred_labels: Optional[np.ndarray] = None,
    label_names: Optional[Sequence[str]] = None,
    views: Optional[Sequence[HtmlView]] = None,
    title: str = "pointea",
    point_size: float = 2.0,
    up: str = "y",
    background: str = "#ffffff",
) -> str:
    """Build the page for one cloud.

    Args:
        points: (N, C>=3) cloud; only xyz is used.
        labels: (N,) integer labels (ground truth, or predictions of a predicted file), or None
            for a single-colour cloud.
        pred_labels: (N,) predicted labels; with ``labels`` this adds "prediction" and "errors"
            views.
        label_names: name of each label id for the legend (default "label k").
        views: explicit views instead of ``labels`` / ``pred_labels``.
        title: page title and heading.
        point_size: initial point size in pixels (the page has +/- buttons).
        up: the cloud's up axis ("x", "y" or "z"), shown upwards (see
            :mod:`pointea.data.orientation` to look it up or guess it).
        background: CSS colour of the drawing area.

    Returns:
        The HTML text.
    """
    xyz = validate_points(points, "points")[:, :3].astype(np.float64)
    if up not in UP_AXES:
        raise ValueError(f"up axis must be one of {UP_AXES}, got {up!r}")
    if views is None:
        views = _default_views(len(xyz), labels, pred_labels, label_names)
    if not views:
        raise ValueError("a page needs at least one view")
    for view in views:
        if view.groups.shape != (len(xyz),) or view.colors.shape != (len(xyz), 3):
            raise ValueError(
                f"view {view.name!r} must have groups ({len(xyz)},) and colors ({len(xyz)}, 3), "
                f"got {view.groups.shape} and {view.colors.shape}"
            )
    if len(xyz) > MAX_POINTS:
        keep = np.random.default_rng(0).choice(len(xyz), MAX_POINTS, replace=False)
        keep.sort()
    else:
        keep = np.arange(len(xyz))
    shown = to_y_up(xyz[keep], up)  # the page draws +y upwards
    data = {
        "title": title,
        "numPoints": int(len(keep)),
        "pointSize": float(point_size),
        "points": _b64(shown.astype("<f4")),
        "views": [
            {
                "name": view.name,
                "colors": _b64(np.asarray(view.colors, dtype=np.uint8)[keep]),
                "groups": _b64(_group_indices(view)[keep].astype("<u2")),
                "legend": [{"key": int(key), "name": name, "color": "#%02x%02x%02x" % tuple(color)}
                           for key, name, color in view.legend],
            }
            for view in views
        ],
    }
    payload = json.dumps(data).replace("</", "<\\/")
    return (_TEMPLATE.replace("__TITLE__", html.escape(title))
            .replace("__BACKGROUND__", html.escape(background))
            .replace("__DATA__", payload))


def write_html(path: PathLike, points: np.ndarray, labels: Optional[np.ndarray] = None, **kwargs) -> Path:
    """Write :func:`html_page` to ``path`` atomically; keyword arguments are passed on.

    Returns:
        The path written.
    """
    path = Path(path)
    atomic_write_text(path, html_page(points, labels, **kwargs))
    return path


def _default_views(num_points: int, labels, pred_labels, label_names) -> List[HtmlView]:
    if labels is None and pred_labels is None:
        color = np.asarray(UNIFORM_COLOR, np.uint8)
        return [HtmlView("points", np.zeros(num_points, np.int64), np.tile(color, (num_points, 1)),
                         [(0, f"{num_points} points", tuple(int(c) for c in color))])]
    if labels is None:
        return [label_view("prediction", validate_labels(pred_labels, num_points, "pred_labels"), label_names)]
    labels = validate_labels(labels, num_points, "labels")
    if pred_labels is None:
        return [label_view("labels", labels, label_names)]
    pred_labels = validate_labels(pred_labels, num_points, "pred_labels")
    return [label_view("ground truth", labels, label_names), label_view("prediction", pred_labels, label_names),
            error_view(labels, pred_labels)]


def _group_indices(view: HtmlView) -> np.ndarray:
    """Map each point's group key to the index of its legend entry."""
    keys = np.asarray([key for key, _, _ in view.legend], dtype=np.int64)
    if len(keys) > 65535:
        raise ValueError(f"view {view.name!r} has {len(keys)} legend entries; at most 65535 are supported")
    order = np.argsort(keys)
    position = np.searchsorted(keys[order], view.groups)
    position = np.clip(position, 0, len(keys) - 1)
    if not np.array_equal(keys[order][position], view.groups):
        raise ValueError(f"view {view.name!r} has group keys without a legend entry")
    return order[position]


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
  html, body { margin: 0; height: 100%; font: 13px/1.4 system-ui, sans-serif; color: #222; }
  body { display: flex; }
  #stage { flex: 1; position: relative; background: __BACKGROUND__; cursor: grab; min-width: 0; }
  #stage canvas { display: block; width: 100%; height: 100%; }
  #side { width: 210px; padding: 10px; box-sizing: border-box; overflow-y: auto;
          border-left: 1px solid #ddd; background: #fafafa; }
  h1 { font-size: 15px; margin: 0 0 6px; word-break: break-word; }
  .legend-item { display: flex; align-items: center; gap: 6px; padding: 2px 4px; cursor: pointer;
                 user-select: none; border-radius: 3px; }
  .legend-item:hover { background: #eee; }
  .legend-item.hidden { opacity: 0.35; text-decoration: line-through; }
  .swatch { width: 13px; height: 13px; border: 1px solid #555; flex: none; }
  button { margin: 2px 2px 2px 0; font: inherit; }
  button.active { font-weight: bold; }
  #help { color: #666; font-size: 11px; margin-top: 10px; }
</style>
</head>
<body>
<div id="stage"><canvas id="canvas"></canvas></div>
<div id="side">
  <h1 id="title"></h1>
  <div id="views"></div>
  <div id="legend"></div>
  <div>size <button id="smaller">&minus;</button><button id="bigger">+</button>
    <button id="reset">reset view</button></div>
  <div id="status" data-drawn-points="0" data-view="0"></div>
  <div id="help">Drag to rotate, wheel to zoom, click a legend entry to hide or show it.</div>
</div>
<script id="pointea-data" type="application/json">__DATA__</script>
<script>
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("pointea-data").textContent);
  function bytes(b64) {
    const text = atob(b64), out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out;
  }
  const n = data.numPoints;
  const xyz = new Float32Array(bytes(data.points).buffer);
  const views = data.views.map(v => ({
    name: v.name, legend: v.legend, colors: bytes(v.colors),
    groups: new Uint16Array(bytes(v.groups).buffer)
  }));
  // Centre on the bounding box and scale to the unit sphere.
  const lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
  for (let i = 0; i < n; i++) for (let k = 0; k < 3; k++) {
    const v = xyz[3 * i + k]; if (v < lo[k]) lo[k] = v; if (v > hi[k]) hi[k] = v;
  }
  const centre = [0, 1, 2].map(k => (lo[k] + hi[k]) / 2);
  let radius = 1e-9;
  for (let i = 0; i < n; i++) {
    let r = 0; for (let k = 0; k < 3; k++) { const d = xyz[3 * i + k] - centre[k]; r += d * d; }
    radius = Math.max(radius, Math.sqrt(r));
  }
  // Start from the PNG views' default camera: azimuth 30 degrees, elevation 20 degrees.
  const state = { yaw: -0.52, pitch: 0.35, zoom: 1.0, size: data.pointSize, view: 0, hidden: new Set() };
  // URL fragment: #hide=3,5&view=1
  for (const part of location.hash.replace(/^#/, "").split("&")) {
    const [key, value] = part.split("=");
    if (key === "hide" && value) value.split(",").forEach(k => state.hidden.add(Number(k)));
    if (key === "view" && Number(value) >= 0 && Number(value) < views.length) state.view = Number(value);
  }
  const canvas = document.getElementById("canvas"), stage = document.getElementById("stage");
  const ctx = canvas.getContext("2d");
  const status = document.getElementById("status");
  document.getElementById("title").textContent = data.title;
  const bg = getComputedStyle(stage).backgroundColor.match(/\d+/g).map(Number);

  function draw() {
    const w = Math.max(1, stage.clientWidth), h = Math.max(1, stage.clientHeight);
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    const image = ctx.createImageData(w, h), pix = image.data;
    for (let p = 0; p < w * h; p++) {
      pix[4 * p] = bg[0]; pix[4 * p + 1] = bg[1]; pix[4 * p + 2] = bg[2]; pix[4 * p + 3] = 255;
    }
    const depth = new Float32Array(w * h).fill(Infinity);
    const view = views[state.view];
    const hiddenGroup = view.legend.map(e => state.hidden.has(e.key));
    const cy = Math.cos(state.yaw), sy = Math.sin(state.yaw), cp = Math.cos(state.pitch), sp = Math.sin(state.pitch);
    const scale = 0.4 * Math.min(w, h) * state.zoom / radius, dist = 3.0 * radius;
    const s = Math.max(1, Math.round(state.size)), half = Math.floor(s / 2);
    let drawn = 0;
    for (let i = 0; i < n; i++) {
      if (hiddenGroup[view.groups[i]]) continue;
      const x = xyz[3 * i] - centre[0], y = xyz[3 * i + 1] - centre[1], z = xyz[3 * i + 2] - centre[2];
      const x1 = cy * x + sy * z, z1 = -sy * x + cy * z;           // yaw about y
      const y2 = cp * y - sp * z1, z2 = sp * y + cp * z1;          // pitch about x
      const persp = dist / (dist - z2);
      const px = Math.round(w / 2 + x1 * scale * persp) - half, py = Math.round(h / 2 - y2 * scale * persp) - half;
      const d = -z2, shade = 0.6 + 0.4 * (z2 / radius + 1) / 2;
      const r = view.colors[3 * i] * shade, g = view.colors[3 * i + 1] * shade, b = view.colors[3 * i + 2] * shade;
      for (let yy = Math.max(0, py); yy < Math.min(h, py + s); yy++) {
        for (let xx = Math.max(0, px); xx < Math.min(w, px + s); xx++) {
          const p = yy * w + xx;
          if (d < depth[p]) { depth[p] = d; pix[4 * p] = r; pix[4 * p + 1] = g; pix[4 * p + 2] = b; }
        }
      }
      if (px + s > 0 && py + s > 0 && px < w && py < h) drawn++;
    }
    ctx.putImageData(image, 0, 0);
    status.dataset.drawnPoints = String(drawn);
    status.dataset.view = String(state.view);
    status.textContent = drawn + " of " + n + " points shown";
  }

  function buildControls() {
    const viewBox = document.getElementById("views");
    viewBox.innerHTML = "";
    if (views.length > 1) views.forEach((v, k) => {
      const button = document.createElement("button");
      button.textContent = v.name;
      button.className = k === state.view ? "active" : "";
      button.onclick = () => { state.view = k; buildControls(); draw(); };
      viewBox.appendChild(button);
    });
    const legend = document.getElementById("legend");
    legend.innerHTML = "";
    for (const entry of views[state.view].legend) {
      const item = document.createElement("div");
      item.className = "legend-item" + (state.hidden.has(entry.key) ? " hidden" : "");
      item.dataset.key = String(entry.key);
      const swatch = document.createElement("span");
      swatch.className = "swatch"; swatch.style.background = entry.color;
      const label = document.createElement("span");
      label.textContent = entry.name;
      item.append(swatch, label);
      item.onclick = () => {
        if (state.hidden.has(entry.key)) state.hidden.delete(entry.key); else state.hidden.add(entry.key);
        item.classList.toggle("hidden");
        draw();
      };
      legend.appendChild(item);
    }
  }

  let drag = null;
  stage.addEventListener("pointerdown", e => {
    drag = [e.clientX, e.clientY];
    stage.setPointerCapture(e.pointerId);
    stage.style.cursor = "grabbing";
  });
  stage.addEventListener("pointerup", () => { drag = null; stage.style.cursor = "grab"; });
  stage.addEventListener("pointermove", e => {
    if (!drag) return;
    state.yaw += (e.clientX - drag[0]) * 0.01;
    state.pitch = Math.max(-1.55, Math.min(1.55, state.pitch + (e.clientY - drag[1]) * 0.01));
    drag = [e.clientX, e.clientY];
    requestAnimationFrame(draw);
  });
  stage.addEventListener("wheel", e => {
    e.preventDefault();
    state.zoom = Math.max(0.1, Math.min(20, state.zoom * Math.exp(-e.deltaY * 0.001)));
    requestAnimationFrame(draw);
  }, { passive: false });
  document.getElementById("bigger").onclick = () => { state.size = Math.min(12, state.size + 1); draw(); };
  document.getElementById("smaller").onclick = () => { state.size = Math.max(1, state.size - 1); draw(); };
  document.getElementById("reset").onclick = () => { state.yaw = -0.52; state.pitch = 0.35; state.zoom = 1; draw(); };
  window.addEventListener("resize", draw);
  buildControls();
  draw();
})();
</script>
</body>
</html>
"""
