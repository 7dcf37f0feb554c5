"""3-D views of point clouds: part colours, ground truth against prediction, galleries.

Every view is rendered with Open3D's legacy visualizer in a hidden window, which works without a
display (EGL / Mesa offscreen), and returned as an RGB ``uint8`` image of exactly the requested
size; captions and legends are drawn onto it with matplotlib, since the legacy renderer draws no
text. The images work the same on servers, in CI and in notebooks (``plt.imshow(image)``);
:func:`show` opens an interactive window where a display exists.

This is the only pointea module that imports Open3D, and it does so lazily (:func:`import_open3d`).

Example::

    from pointea import viz
    image = viz.view_parts(points, parts, part_names=["seat", "back", "legs"], title="chair")
    viz.save_png("chair.png", image)
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from pointea.atomic import atomic_path
from pointea.data.io import validate_labels, validate_points
from pointea.data.orientation import UP_AXES
from pointea.palette import CORRECT_COLOR, ERROR_COLOR, UNIFORM_COLOR, legend_entries, part_colors

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
RGB = Tuple[int, int, int]

BACKGROUND: RGB = (255, 255, 255)
MIN_TILE_SIZE = 48  # pixels; smaller tiles cannot hold a caption and a recognisable shape
MAX_AUTO_TILE_HEIGHT = 320  # pixels; galleries with few columns get wide tiles, not huge images
FRAME_MARGIN = 0.06  # share of each half of the image left empty around a fitted cloud
FIT_STEPS = 4  # fits of the camera distance, each after centring the drawing of the one before
# Open3D's legacy view control keeps its zoom (view size / bounding box size) in this range.
OPEN3D_ZOOM_RANGE = (0.02, 2.0)

INSTALL_HINT = (
    "install it with `pip install open3d-cpu libusb-package` (or `pip install open3d`; on Linux "
    "the system library libusb-1.0 is also needed: `apt-get install libusb-1.0-0`, or the "
    "libusb-package wheel), or write an interactive web page instead with `pointea viz ... --html "
    "page.html`, which needs no Open3D"
)


class VisualizationError(RuntimeError):
    """Open3D is missing, or no window (visible or offscreen) could be created."""


# --------------------------------------------------------------------------------------------
# Open3D


def import_open3d():
    """Import Open3D, first loading libusb from the ``libusb-package`` wheel when installed.

    Open3D links against ``libusb-1.0.so.0``, which many servers and containers lack; loading the
    copy shipped in ``libusb-package`` with ``RTLD_GLOBAL`` satisfies the link without root.

    Returns:
        The ``open3d`` module.

    Raises:
        VisualizationError: Open3D cannot be imported; the message says what to install.
    """
    if "open3d" in sys.modules and sys.modules["open3d"] is not None:
        return sys.modules["open3d"]
    _preload_libusb()
    try:
        import open3d
    except (ImportError, OSError) as error:
        raise VisualizationError(f"Open3D could not be imported ({error}); {INSTALL_HINT}") from error
    open3d.utility.set_verbosity_level(open3d.utility.VerbosityLevel.Error)
    return open3d


def _preload_libusb() -> None:
    try:
        import libusb_package
    except ImportError:
        return  # a system libusb may still be present
    library = libusb_package.get_library_path()
    if library is not None:
        try:
            ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
        except OSError as error:
            logger.debug("could not preload %s: %s", library, error)


def ensure_runtime_dir() -> None:
    """Give the process a private ``XDG_RUNTIME_DIR`` when it has none or a missing one.

    Open3D's window library prints "XDG_RUNTIME_DIR is invalid or not set in the environment"
    on headless servers and in containers although offscreen rendering works without it; a
    fresh folder of mode 0700 (what the XDG spec asks) silences it and is removed at exit.
    """
    current = os.environ.get("XDG_RUNTIME_DIR")
    if current and os.path.isabs(current) and os.path.isdir(current) and os.access(current, os.W_OK):
        return
    folder = tempfile.mkdtemp(prefix="pointea-runtime-")  # created with mode 0700
    atexit.register(shutil.rmtree, folder, True)
    os.environ["XDG_RUNTIME_DIR"] = folder


def has_display() -> bool:
    """Whether an interactive window can be shown (always assumed on macOS and Windows)."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


# --------------------------------------------------------------------------------------------
# Camera and raw rendering


@dataclass(frozen=True)
class Camera:
    """Where the camera looks from, orbiting the cloud's centre.

    Attributes:
        azimuth: degrees around the up axis; 0 looks at the front of the shape (from +z when y is
            up, from -y when z is up, from +x... when x is up).
        elevation: degrees above the horizon (90 looks straight down).
        zoom: camera distance relative to the fitted one: 1 shows the whole cloud with a margin
            to the image edges, smaller is closer (parts may then be cut off), larger farther.
        up: the cloud's up axis, "x", "y" (ShapeNetPart, modelnet40_normal_resampled, the
            synthetic shapes) or "z" (ModelNet's original archive); see
            :mod:`pointea.data.orientation`.
    """

    azimuth: float = 30.0
    elevation: float = 20.0
    zoom: float = 1.0
    up: str = "y"

    def __post_init__(self) -> None:
        if self.up not in UP_AXES:
            raise ValueError(f"camera up axis must be one of {UP_AXES}, got {self.up!r}")
        if not self.zoom > 0:
            raise ValueError(f"camera zoom must be > 0, got {self.zoom}")

    def vectors(self) -> Tuple[np.ndarray, np.ndarray]:
        """Return ``(front, up)``: unit vectors from the look-at point towards the camera, and up."""
        az, el = math.radians(self.azimuth), math.radians(self.elevation)
        # Coordinates in a frame (right, up, towards the viewer at azimuth 0).
        local = np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])
        frames = {  # columns: world axes of (right, up, viewer)
            "y": np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float).T,
            "z": np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=float).T,
            "x": np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1]], dtype=float).T,
        }
        frame = frames[self.up]
        return frame @ local, frame[:, 1].copy()


def _check_points(points: np.ndarray, name: str = "points") -> np.ndarray:
    """The xyz columns of a valid cloud as float64 (see ``validate_points``)."""
    return validate_points(points, name)[:, :3].astype(np.float64)


def _as_float_colors(colors: Optional[np.ndarray], num_points: int) -> np.ndarray:
    if colors is None:
        return np.tile(np.asarray(UNIFORM_COLOR, dtype=np.float64) / 255.0, (num_points, 1))
    colors = np.asarray(colors)
    if colors.shape != (num_points, 3):
        raise ValueError(f"colors must have shape ({num_points}, 3), got {colors.shape}")
    if np.issubdtype(colors.dtype, np.integer):
        return colors.astype(np.float64) / 255.0
    return np.clip(colors.astype(np.float64), 0.0, 1.0)


def _depth_shaded(xyz: np.ndarray, colors: np.ndarray, front: np.ndarray) -> np.ndarray:
    """Darken far points (down to 60 %) so that flat-coloured points still read as a 3-D shape."""
    nearness = (xyz - xyz.mean(axis=0)) @ front
    span = nearness.max() - nearness.min()
    if span <= 0:
        return colors
    nearness = (nearness - nearness.min()) / span
    return colors * (0.6 + 0.4 * nearness)[:, None]


class _HiddenWindow:
    """One offscreen Open3D window of a fixed size, reused for many renders."""

    def __init__(self, width: int, height: int, point_size: float, background: RGB) -> None:
        if width < 8 or height < 8:
            raise ValueError(f"render size must be at least 8x8 pixels, got {width}x{height}")
        self.o3d = import_open3d()
        self.width, self.height, self.background = int(width), int(height), background
        self.point_size = float(point_size)
        ensure_runtime_dir()
        self.window = self.o3d.visualization.Visualizer()
        if not self.window.create_window(visible=False, width=self.width, height=self.height):
            raise VisualizationError(
                "Open3D could not create an offscreen rendering window: neither a display nor "
                "EGL/OSMesa offscreen rendering is available. Install Mesa's EGL libraries "
                "(e.g. `apt-get install libegl1 libgl1`), run under a display, or write an "
                "interactive web page with `pointea viz ... --html page.html`"
            )
        option = self.window.get_render_option()
        option.point_size = float(point_size)
        option.background_color = np.asarray(background, dtype=np.float64) / 255.0
        option.light_on = False

    def render(self, xyz: np.ndarray, colors: np.ndarray, camera: Camera) -> np.ndarray:
        front, up = camera.vectors()
        cloud = self.o3d.geometry.PointCloud(self.o3d.utility.Vector3dVector(xyz))
        cloud.colors = self.o3d.utility.Vector3dVector(_depth_shaded(xyz, colors, front))
        self.window.clear_geometries()
        self.window.add_geometry(cloud, reset_bounding_box=True)
        _frame(self.window.get_view_control(), xyz, camera, self.width, self.height, self.point_size)
        self.window.poll_events()
        self.window.update_renderer()
        buffer = np.asarray(self.window.capture_screen_float_buffer(do_render=True))
        image = np.clip(np.round(buffer * 255.0), 0, 255).astype(np.uint8)
        return _fit(image, self.width, self.height, self.background)

    def close(self) -> None:
        self.window.destroy_window()

    def __enter__(self) -> "_HiddenWindow":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _frame(view, xyz: np.ndarray, camera: Camera, width: int, height: int, point_size: float) -> None:
    """Point an Open3D view control at ``xyz`` (N, 3) so that it fills the image with a margin."""
    front, up = camera.vectors()
    # Open3D puts the eye at zoom * (largest side of the geometry's box) / tan(fov / 2)
    tan_half = math.tan(math.radians(view.get_field_of_view()) / 2)
    look_at, distance = fit_view(xyz, front, up, tan_half, width, height, point_size)
    view.set_lookat(look_at)
    view.set_front(front)
    view.set_up(up)
    largest = max(float(np.max(np.ptp(xyz, axis=0))), 1e-12)
    view.set_zoom(float(np.clip(camera.zoom * distance * tan_half / largest, *OPEN3D_ZOOM_RANGE)))


def fit_view(
    xyz: np.ndarray,
    front: np.ndarray,
    up: np.ndarray,
    tan_half_fov: float,
    width: int,
    height: int,
    point_size: float = 0.0,
    margin: float = FRAME_MARGIN,
) -> Tuple[np.ndarray, float]:
    """Where to look and from how far so that every point lands inside the image with a margin.

    The camera looks at ``look_at`` from ``look_at + front * distance`` with a vertical field of
    view whose half-angle tangent is ``tan_half_fov`` (a perspective projection, as Open3D's). A
    point ``q`` (relative to ``look_at``) at depth ``distance - q.front`` projects to
    ``(q.right, q.up) / (depth * tan_half_fov)``; the smallest distance keeping every point within
    ``1 - margin`` of the image centre (less half a point, in units of half the image) is a
    maximum over the points: exact, unlike a bounding sphere, which leaves elongated shapes small.
    Perspective draws the near side larger, so the look-at point is moved sideways until the
    drawing is centred, and the distance fitted again.

    Args:
        xyz: (N, 3) points.
        front: unit vector from the look-at point towards the camera.
        up: the camera's up direction (need not be orthogonal to ``front``).
        tan_half_fov: tangent of half the vertical field of view.
        width, height: image size in pixels.
        point_size: drawn point diameter in pixels, kept inside too.
        margin: share of each half of the image left empty.

    Returns:
        ``(look_at, distance)``: a (3,) point and a distance in the units of ``xyz``.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    front = np.asarray(front, dtype=np.float64) / np.linalg.norm(front)
    up = np.asarray(up, dtype=np.float64) - front * np.dot(up, front)
    up /= np.linalg.norm(up)
    right = np.cross(up, front)
    # visible half extents, as shares of tan_half_fov * depth, along the image's x and y
    limit_x = (1.0 - margin - point_size / width) * tan_half_fov * width / height
    limit_y = (1.0 - margin - point_size / height) * tan_half_fov
    diagonal = float(np.linalg.norm(np.ptp(xyz, axis=0)))
    look_at = (xyz.min(axis=0) + xyz.max(axis=0)) / 2
    for step in range(FIT_STEPS):
        relative = xyz - look_at
        nearness = relative @ front  # (N,) how much nearer than the look-at point each point is
        across, upward = relative @ right, relative @ up
        needed = np.maximum(np.abs(across) / limit_x, np.abs(upward) / limit_y) + nearness
        # keep the camera out of the cloud, which a single point or a plane seen edge-on would allow
        distance = max(float(needed.max()), float(nearness.max()) + 0.1 * diagonal, 1e-6)
        if step == FIT_STEPS - 1:
            break
        depth = distance - nearness
        shift_x = (np.max(across / depth) + np.min(across / depth)) / 2  # off-centre, in tangent units
        shift_y = (np.max(upward / depth) + np.min(upward / depth)) / 2
        look_at = look_at + (right * shift_x + up * shift_y) * distance
    return look_at, distance


def _fit(image: np.ndarray, width: int, height: int, background: RGB) -> np.ndarray:
    """Crop or pad ``image`` (H, W, 3) to exactly (height, width, 3)."""
    out = np.empty((height, width, 3), dtype=np.uint8)
    out[:] = background
    h, w = min(height, image.shape[0]), min(width, image.shape[1])
    out[:h, :w] = image[:h, :w]
    return out


def render_points(
    points: np.ndarray,
    colors: Optional[np.ndarray] = None,
    *,
    width: int = 800,
    height: int = 600,
    point_size: float = 3.0,
    camera: Camera = Camera(),
    background: RGB = BACKGROUND,
) -> np.ndarray:
    """Render one cloud offscreen, without text.

    Args:
        points: (N, C>=3) array; only xyz is drawn.
        colors: (N, 3) uint8 (0-255) or float (0-1) colours; None draws every point in one colour.
        width, height: image size in pixels.
        point_size: point diameter in pixels.
        camera: viewpoint.
        background: RGB background colour.

    Returns:
        uint8 image of shape (height, width, 3).

    Raises:
        VisualizationError: Open3D is missing or cannot render here.
    """
    return render_many([(points, colors)], width=width, height=height, point_size=point_size,
                       camera=camera, background=background)[0]


def render_many(
    clouds: Sequence[Tuple[np.ndarray, Optional[np.ndarray]]],
    *,
    width: int,
    height: int,
    point_size: float = 3.0,
    camera: Camera = Camera(),
    background: RGB = BACKGROUND,
) -> List[np.ndarray]:
    """Render several ``(points, colors)`` clouds of the same image size with one hidden window.

    Returns:
        One uint8 (height, width, 3) image per cloud.
    """
    checked = []
    for i, (points, colors) in enumerate(clouds):
        xyz = _check_points(points, f"cloud {i}")
        checked.append((xyz, _as_float_colors(colors, len(xyz))))
    with _HiddenWindow(width, height, point_size, background) as window:
        return [window.render(xyz, colors, camera) for xyz, colors in checked]


def show(
    clouds: Sequence[Tuple[np.ndarray, Optional[np.ndarray]]],
    *,
    title: str = "pointea",
    width: int = 1024,
    height: int = 768,
    point_size: float = 3.0,
    camera: Camera = Camera(),
) -> None:
    """Open an interactive Open3D window showing ``(points, colors)`` clouds side by side.

    Blocks until the window is closed. Drag to rotate, scroll to zoom, ``+``/``-`` change the
    point size, ``h`` lists Open3D's keys.

    Raises:
        VisualizationError: there is no display (use :func:`render_points` / ``--out`` for a PNG,
            or ``--html``) or Open3D is missing.
    """
    if not has_display():
        raise VisualizationError(
            "no display found (DISPLAY / WAYLAND_DISPLAY are unset), so no interactive window can "
            "open; render a PNG headless with `pointea viz ... --out image.png`, or write an "
            "interactive web page with `pointea viz ... --html page.html`"
        )
    o3d = import_open3d()
    ensure_runtime_dir()
    window = o3d.visualization.Visualizer()
    if not window.create_window(window_name=title, width=width, height=height, visible=True):
        raise VisualizationError(
            "Open3D could not open a window on this display; render a PNG headless with "
            "`pointea viz ... --out image.png`, or use `--html page.html`"
        )
    front, up = camera.vectors()
    right = np.cross(up, front)
    offset = 0.0
    placed = []
    for i, (points, colors) in enumerate(clouds):
        xyz = _check_points(points, f"cloud {i}")
        xyz = xyz - xyz.mean(axis=0)
        extent = np.ptp(xyz @ right) if len(xyz) > 1 else 1.0
        if i:
            offset += extent * 0.6
        placed.append(xyz + right * offset)
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(placed[-1]))
        cloud.colors = o3d.utility.Vector3dVector(_depth_shaded(xyz, _as_float_colors(colors, len(xyz)), front))
        window.add_geometry(cloud)
        offset += extent * 0.6
    option = window.get_render_option()
    option.point_size = float(point_size)
    option.light_on = False
    _frame(window.get_view_control(), np.concatenate(placed), camera, width, height, point_size)
    window.run()
    window.destroy_window()


# --------------------------------------------------------------------------------------------
# Text overlays and layout


def _font_px(tile_height: int) -> float:
    return float(np.clip(tile_height * 0.055, 9.0, 16.0))


def _overlay(image: np.ndarray, draw: Callable[["object"], None]) -> np.ndarray:
    """Draw text and shapes with matplotlib over ``image``; ``draw`` receives axes in pixel units.

    The axes span the image with (0, 0) at the top-left corner and y pointing down. Rendered
    pixels outside the drawn artists stay untouched (alpha compositing).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    height, width = image.shape[:2]
    dpi = 100.0
    figure = Figure(figsize=((width + 0.5) / dpi, (height + 0.5) / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(figure)
    figure.patch.set_alpha(0.0)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)
    axes.set_axis_off()
    axes.patch.set_alpha(0.0)
    draw(axes)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())[:height, :width].astype(np.float32) / 255.0
    alpha = rgba[..., 3:4]
    out = image.astype(np.float32) * (1.0 - alpha) + rgba[..., :3] * 255.0 * alpha
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


@dataclass
class _Tile:
    points: Optional[np.ndarray]  # None leaves the tile empty
    colors: Optional[np.ndarray]
    caption: str = ""
    caption_color: str = "black"
    marked: bool = False  # drawn with a red frame (a mistake)


def _legend_width(entries: Sequence[Tuple[str, RGB]], font_px: float, width: int) -> int:
    if not entries:
        return 0
    longest = max(len(name) for name, _ in entries)
    wanted = int(font_px * (2.2 + 0.62 * longest) + 12)
    return min(wanted, int(width * 0.35))


def _compose(
    tiles: Sequence[_Tile],
    *,
    ncols: int,
    width: int,
    height: int,
    title: Optional[str],
    legend: Sequence[Tuple[str, RGB]],
    point_size: float,
    camera: Camera,
    background: RGB,
) -> np.ndarray:
    """Lay tiles out on a grid of exactly ``width`` x ``height`` pixels, with captions and a legend.

    Layout: an optional title strip on top, a legend column on the right, the rest split into
    ``ncols`` columns and as many rows as needed; each tile has a caption strip over its render.
    """
    if width < MIN_TILE_SIZE or height < MIN_TILE_SIZE:
        raise ValueError(f"image size must be at least {MIN_TILE_SIZE}x{MIN_TILE_SIZE} pixels, got {width}x{height}")
    nrows = max(1, math.ceil(len(tiles) / ncols))
    font = _font_px(min(height // nrows, width // ncols))
    title_h = int(font * 2.2) if title else 0
    legend_w = _legend_width(legend, font, width)
    tile_w = (width - legend_w) // ncols
    tile_h = (height - title_h) // nrows
    if tile_w < MIN_TILE_SIZE or tile_h < MIN_TILE_SIZE:
        raise ValueError(
            f"an image of {width}x{height} pixels is too small for {nrows} row(s) x {ncols} column(s) "
            f"of views (each would be {tile_w}x{tile_h}); ask for a larger width/height or fewer views"
        )
    caption_h = int(font * 1.9) if any(tile.caption for tile in tiles) else 0
    filled = [i for i, tile in enumerate(tiles) if tile.points is not None]
    renders = render_many(
        [(tiles[i].points, tiles[i].colors) for i in filled],
        width=tile_w, height=tile_h - caption_h, point_size=point_size, camera=camera,
        background=background,
    )
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = background
    origins = [((i % ncols) * tile_w, title_h + (i // ncols) * tile_h) for i in range(len(tiles))]
    for i, render in zip(filled, renders):
        x0, y0 = origins[i]
        image[y0 + caption_h:y0 + tile_h, x0:x0 + tile_w] = render

    def draw(axes) -> None:
        from matplotlib.patches import Rectangle

        points_per_px = 72.0 / 100.0
        if title:
            axes.text((width - legend_w) / 2, title_h / 2, title, ha="center", va="center",
                      fontsize=font * 1.15 * points_per_px, fontweight="bold")
        for tile, (x0, y0) in zip(tiles, origins):
            if tile.caption:
                axes.text(x0 + tile_w / 2, y0 + caption_h / 2, _fit_text(tile.caption, tile_w, font),
                          ha="center", va="center", color=tile.caption_color,
                          fontsize=font * points_per_px)
            if tile.marked:
                inset = 2.0
                axes.add_patch(Rectangle((x0 + inset, y0 + inset), tile_w - 2 * inset, tile_h - 2 * inset,
                                         fill=False, edgecolor=np.asarray(ERROR_COLOR) / 255.0, linewidth=3.0))
        if legend:
            _draw_legend(axes, legend, x0=width - legend_w, y0=title_h, width=legend_w,
                         height=height - title_h, font=font)

    return _overlay(image, draw)


def _fit_text(text: str, width_px: float, font_px: float) -> str:
    """Shorten ``text`` with an ellipsis so that it fits about ``width_px`` pixels."""
    limit = max(4, int(width_px / (0.6 * font_px)))
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _draw_legend(axes, entries: Sequence[Tuple[str, RGB]], *, x0: float, y0: float, width: float,
                 height: float, font: float) -> None:
    from matplotlib.patches import Rectangle

    line_h = font * 1.6
    capacity = max(1, int((height - font) // line_h))
    shown = list(entries)
    if len(shown) > capacity:
        hidden = len(shown) - (capacity - 1)
        shown = shown[: capacity - 1] + [(f"\u2026 {hidden} more", (255, 255, 255))]
    swatch = font * 1.0
    for i, (name, color) in enumerate(shown):
        y = y0 + font * 0.8 + i * line_h
        axes.add_patch(Rectangle((x0 + 6, y), swatch, swatch, facecolor=np.asarray(color) / 255.0,
                                 edgecolor="0.3", linewidth=0.6))
        axes.text(x0 + 6 + swatch + font * 0.5, y + swatch / 2,
                  _fit_text(name, width - swatch - font, font), ha="left", va="center",
                  fontsize=font * 0.72)


def _legend_entries(labels: np.ndarray, names: Optional[Sequence[str]]) -> List[Tuple[str, RGB]]:
    """``(name, colour)`` legend rows of the labelled (non-negative) parts present."""
    return [(name, color) for label, name, color in legend_entries(labels, names) if label >= 0]


def _check_names(names: Optional[Sequence[str]], labels: np.ndarray, what: str) -> None:
    if names is not None and labels.size and int(labels.max()) >= len(names):
        raise ValueError(f"{what} label {int(labels.max())} has no name: only {len(names)} names were given")


# --------------------------------------------------------------------------------------------
# Views


def view_parts(
    points: np.ndarray,
    parts: Optional[np.ndarray] = None,
    *,
    part_names: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    legend: bool = True,
    width: int = 800,
    height: int = 600,
    point_size: float = 3.0,
    camera: Camera = Camera(),
    background: RGB = BACKGROUND,
) -> np.ndarray:
    """A cloud coloured by part label with a legend of part names (or one colour without labels).

    Args:
        points: (N, C>=3) cloud.
        parts: (N,) integer labels or None; colours come from :func:`pointea.palette.part_colors`,
            so part ``k`` has the same colour in every view.
        part_names: name of each label id (global ids, e.g. ShapeNetPart's 50); defaults to
            "label k".
        title: caption drawn above the cloud, e.g. the class name.
        legend: draw the legend of part names (a column on the right) when there are labels.
        width, height: size of the returned image in pixels.

    Returns:
        uint8 image of shape (height, width, 3).
    """
    xyz = _check_points(points)
    entries: List[Tuple[str, RGB]] = []
    colors = None
    if parts is not None:
        parts = validate_labels(parts, len(xyz), "parts")
        _check_names(part_names, parts, "part")
        colors = part_colors(parts)
        entries = _legend_entries(np.unique(parts), part_names) if legend else []
    tile = _Tile(xyz, colors)
    return _compose([tile], ncols=1, width=width, height=height, title=title, legend=entries,
                    point_size=point_size, camera=camera, background=background)


def view_classification(
    points: np.ndarray,
    *,
    true_name: Optional[str] = None,
    pred_name: Optional[str] = None,
    title: Optional[str] = None,
    width: int = 800,
    height: int = 600,
    point_size: float = 3.0,
    camera: Camera = Camera(),
    background: RGB = BACKGROUND,
) -> np.ndarray:
    """A cloud captioned with its class: the true one, the predicted one, or both (red if they differ).

    Args:
        title: drawn above the cloud, e.g. "chair.ply — predicted: chair (97.3 %)"; a caption
            that would only repeat the predicted name is then left out.

    Returns:
        uint8 image of shape (height, width, 3).
    """
    xyz = _check_points(points)
    tile = _class_tile(xyz, true_name, pred_name)
    if title and true_name is None:
        tile.caption = ""
    return _compose([tile], ncols=1, width=width, height=height, title=title, legend=[],
                    point_size=point_size, camera=camera, background=background)


def _class_tile(xyz: np.ndarray, true_name: Optional[str], pred_name: Optional[str]) -> _Tile:
    wrong = pred_name is not None and true_name is not None and pred_name != true_name
    if pred_name is not None and true_name is not None:
        caption = f"{pred_name} \u2717 (true: {true_name})" if wrong else f"{pred_name} \u2713"
    else:
        caption = pred_name if pred_name is not None else (true_name or "")
    return _Tile(xyz, None, caption=caption, caption_color="#d00000" if wrong else "black", marked=wrong)


def view_comparison(
    points: np.ndarray,
    true_parts: np.ndarray,
    pred_parts: np.ndarray,
    *,
    part_names: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    errors: bool = True,
    legend: bool = True,
    width: int = 1200,
    height: int = 450,
    point_size: float = 3.0,
    camera: Camera = Camera(),
    background: RGB = BACKGROUND,
) -> np.ndarray:
    """Ground truth and prediction side by side, and (``errors=True``) a third view of the mistakes.

    In the error view correct points are light grey and wrongly labelled points red.

    Args:
        points: (N, C>=3) cloud.
        true_parts, pred_parts: (N,) integer labels.
        part_names: name of each label id.
        title: caption above the views.
        errors: add the error view.
        legend: draw the legend of part names (a column on the right).
        width, height: size of the whole returned image in pixels.

    Returns:
        uint8 image of shape (height, width, 3).
    """
    xyz = _check_points(points)
    true_parts = validate_labels(true_parts, len(xyz), "true_parts")
    pred_parts = validate_labels(pred_parts, len(xyz), "pred_parts")
    _check_names(part_names, np.concatenate([true_parts, pred_parts]), "part")
    wrong = true_parts != pred_parts
    accuracy = 100.0 * (1.0 - wrong.mean())
    tiles = [
        _Tile(xyz, part_colors(true_parts), caption="ground truth"),
        _Tile(xyz, part_colors(pred_parts), caption=f"predicted parts ({accuracy:.1f} % correct)"),
    ]
    entries = _legend_entries(np.union1d(true_parts, pred_parts), part_names)
    if errors:
        tiles.append(_Tile(xyz, error_colors(wrong), caption=f"errors: {int(wrong.sum())} of {len(xyz)} points",
                           caption_color="#d00000" if wrong.any() else "black"))
        entries += [("wrong", ERROR_COLOR), ("correct", CORRECT_COLOR)]
    return _compose(tiles, ncols=len(tiles), width=width, height=height, title=title,
                    legend=entries if legend else [],
                    point_size=point_size, camera=camera, background=background)


@dataclass
class ClassificationSample:
    """One shape of a classification gallery.

    Attributes:
        points: (N, C>=3) cloud.
        label: true class index, or None when unknown.
        pred: predicted class index, or None when there is no prediction.
    """

    points: np.ndarray
    label: Optional[int] = None
    pred: Optional[int] = None


@dataclass
class SegmentationSample:
    """One shape of a segmentation gallery.

    Attributes:
        points: (N, C>=3) cloud.
        parts: (N,) true part labels.
        pred_parts: (N,) predicted part labels, or None.
        category: category index (used for grouping and captions), or None.
    """

    points: np.ndarray
    parts: np.ndarray
    pred_parts: Optional[np.ndarray] = None
    category: Optional[int] = None


def _grid_columns(count: int, ncols: Optional[int]) -> int:
    if ncols is not None:
        if ncols < 1:
            raise ValueError(f"ncols must be >= 1, got {ncols}")
        return min(ncols, count)
    return max(1, math.ceil(math.sqrt(count)))


def _class_name(names: Sequence[str], index: Optional[int]) -> Optional[str]:
    if index is None:
        return None
    if not 0 <= index < len(names):
        raise ValueError(f"class index {index} is out of range for {len(names)} class names")
    return names[index]


def view_classification_gallery(
    samples: Sequence[ClassificationSample],
    class_names: Sequence[str],
    *,
    ncols: Optional[int] = None,
    title: Optional[str] = None,
    width: int = 1200,
    height: Optional[int] = None,
    point_size: float = 2.0,
    camera: Camera = Camera(),
    background: RGB = BACKGROUND,
) -> np.ndarray:
    """A grid of shapes, each captioned with its predicted and true class; mistakes framed in red.

    Args:
        samples: shapes to show, in grid order (row by row).
        class_names: name of each class index.
        ncols: columns of the grid (default: about the square root of the count).
        title: caption above the grid.
        width: image width in pixels.
        height: image height in pixels (default: square tiles).

    Returns:
        uint8 image of shape (height, width, 3).
    """
    if not samples:
        raise ValueError("a gallery needs at least one sample, got none")
    ncols = _grid_columns(len(samples), ncols)
    tiles = [
        _class_tile(_check_points(s.points, f"sample {i}"), _class_name(class_names, s.label),
                    _class_name(class_names, s.pred))
        for i, s in enumerate(samples)
    ]
    if height is None:
        height = _auto_height(width, ncols, len(tiles), title)
    return _compose(tiles, ncols=ncols, width=width, height=height, title=title, legend=[],
                    point_size=point_size, camera=camera, background=background)


def view_segmentation_gallery(
    samples: Sequence[SegmentationSample],
    *,
    category_names: Optional[Sequence[str]] = None,
    ncols: Optional[int] = None,
    errors: bool = False,
    title: Optional[str] = None,
    width: int = 1200,
    height: Optional[int] = None,
    point_size: float = 2.0,
    camera: Camera = Camera(),
    background: RGB = BACKGROUND,
) -> np.ndarray:
    """A grid of ground-truth / prediction pairs (triples with ``errors``), one row per category.

    Without ``ncols`` every category starts a new row holding its samples in the given order
    (when some category has several samples); otherwise samples, sorted by category, flow
    ``ncols`` (default: about the square root of the count) to a row. Prediction tiles are
    captioned with their share of correct points. Samples without predictions show the ground
    truth alone.

    Args:
        samples: shapes with true (and optionally predicted) part labels; either all or none
            have ``pred_parts``.
        category_names: name of each category index, for captions.
        ncols: samples per row (default: one row per category, see above).
        errors: add a third tile per sample with the wrong points in red.
        width: image width in pixels; height: image height (default: square tiles).

    Returns:
        uint8 image of shape (height, width, 3).
    """
    if not samples:
        raise ValueError("a gallery needs at least one sample, got none")
    has_pred = samples[0].pred_parts is not None
    if any((s.pred_parts is not None) != has_pred for s in samples):
        raise ValueError("either every sample of a segmentation gallery has pred_parts or none has")
    per_sample = 1 + int(has_pred) + int(errors and has_pred)
    order = sorted(range(len(samples)), key=lambda i: (samples[i].category is None, samples[i].category or 0))
    rows: List[List[int]] = []
    for i in order:
        if rows and samples[rows[-1][0]].category == samples[i].category:
            rows[-1].append(i)
        else:
            rows.append([i])
    if ncols is not None or max(len(row) for row in rows) == 1:
        step = _grid_columns(len(samples), ncols)
        rows = [order[k:k + step] for k in range(0, len(order), step)]
    per_row = max(len(row) for row in rows)
    tiles: List[_Tile] = []
    for row in rows:
        for i in row:
            tiles.extend(_segmentation_tiles(samples[i], i, category_names, has_pred, errors))
        tiles.extend(_Tile(None, None) for _ in range((per_row - len(row)) * per_sample))
    ncols = per_row * per_sample
    if height is None:
        height = _auto_height(width, ncols, len(tiles), title)
    return _compose(tiles, ncols=ncols, width=width, height=height, title=title, legend=[],
                    point_size=point_size, camera=camera, background=background)


def _segmentation_tiles(sample: SegmentationSample, index: int, category_names: Optional[Sequence[str]],
                        has_pred: bool, errors: bool) -> List[_Tile]:
    xyz = _check_points(sample.points, f"sample {index}")
    parts = validate_labels(sample.parts, len(xyz), f"sample {index} parts")
    name = ""
    if sample.category is not None:
        name = (_class_name(category_names, sample.category) if category_names is not None
                else f"category {sample.category}")
    if not has_pred:
        return [_Tile(xyz, part_colors(parts), caption=name)]
    pred = validate_labels(sample.pred_parts, len(xyz), f"sample {index} pred_parts")
    wrong = pred != parts
    tiles = [
        _Tile(xyz, part_colors(parts), caption=f"{name} (truth)" if name else "truth"),
        _Tile(xyz, part_colors(pred), caption=f"predicted: {100 * (1 - wrong.mean()):.1f}%"),
    ]
    if errors:
        tiles.append(_Tile(xyz, error_colors(wrong), caption=f"{int(wrong.sum())} wrong",
                           caption_color="#d00000" if wrong.any() else "black"))
    return tiles


def error_colors(wrong: np.ndarray) -> np.ndarray:
    """(N, 3) uint8: red for wrong points, light grey for correct ones."""
    return np.where(wrong[:, None], np.asarray(ERROR_COLOR, np.uint8), np.asarray(CORRECT_COLOR, np.uint8))


def _auto_height(width: int, ncols: int, count: int, title: Optional[str]) -> int:
    """Height giving square tiles, at most ``MAX_AUTO_TILE_HEIGHT`` pixels tall."""
    tile = min(width // ncols, MAX_AUTO_TILE_HEIGHT)
    nrows = math.ceil(count / ncols)
    return nrows * tile + (int(_font_px(tile) * 2.2) if title else 0)


# --------------------------------------------------------------------------------------------
# Output


def save_png(path: PathLike, image: np.ndarray) -> None:
    """Write an RGB uint8 image (H, W, 3) to ``path`` as PNG, atomically."""
    from matplotlib.image import imsave

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be a uint8 array of shape (H, W, 3), got {image.dtype} {image.shape}")
    with atomic_path(path) as tmp:
        imsave(tmp, image, format="png")
