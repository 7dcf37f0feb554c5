"""The interactive Open3D window on a real (virtual) X display: Xvfb, screenshot with xwd."""

import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

from pointea.palette import palette

pytestmark = pytest.mark.skipif(
    shutil.which("xvfb-run") is None or shutil.which("xwd") is None,
    reason="needs Xvfb and xwd (Debian packages xvfb and x11-apps)",
)

SHOW_SCRIPT = """
import numpy as np
from pointea import viz
from pointea.palette import part_colors
points = np.random.default_rng(0).normal(size=(4000, 3)).astype(np.float32)
points /= np.linalg.norm(points, axis=1, keepdims=True)
labels = (points[:, 1] > 0).astype(np.int64)
viz.show([(points, part_colors(labels))], width=640, height=480, point_size=6.0)
"""


def read_xwd(data: bytes) -> np.ndarray:
    """Decode a 24- or 32-bit-per-pixel TrueColor XWD screenshot into RGB uint8 (H, W, 3)."""
    fields = struct.unpack(">25I", data[:100])
    header_size, width, height = fields[0], fields[4], fields[5]
    byte_order, bits_per_pixel, bytes_per_line, ncolors = fields[7], fields[11], fields[12], fields[19]
    assert bits_per_pixel in (24, 32), f"unexpected XWD pixel size {bits_per_pixel}"
    start = header_size + 12 * ncolors
    raw = np.frombuffer(data, dtype=np.uint8, count=height * bytes_per_line, offset=start)
    step = bits_per_pixel // 8
    pixel_bytes = raw.reshape(height, bytes_per_line)[:, : width * step].reshape(height, width, step)
    if byte_order == 1:  # most significant byte first
        pixel_bytes = pixel_bytes[..., ::-1]
    pixels = np.zeros((height, width), dtype=np.uint32)
    for i in range(step):
        pixels |= pixel_bytes[..., i].astype(np.uint32) << np.uint32(8 * i)
    channels = []
    for mask in fields[14:17]:  # red, green, blue masks
        shift = (mask & -mask).bit_length() - 1
        channels.append(((pixels & np.uint32(mask)) >> np.uint32(shift)).astype(np.uint8))
    return np.stack(channels, axis=-1)


def test_show_opens_a_window_that_draws_the_part_colours(tmp_path):
    shot = tmp_path / "screen.xwd"
    script = tmp_path / "show.py"
    script.write_text(SHOW_SCRIPT)
    command = (
        f"{sys.executable} {script} & pid=$!; sleep 12; "
        f"xwd -root -silent > {shot}; alive=$(kill -0 $pid 2>/dev/null && echo yes); "
        "kill $pid 2>/dev/null; wait $pid 2>/dev/null; echo alive=$alive"
    )
    result = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 800x600x24", "bash", "-c", command],
        capture_output=True, text=True, timeout=120,
    )
    assert "alive=yes" in result.stdout, f"window process exited early:\n{result.stderr[-2000:]}"
    screen = read_xwd(shot.read_bytes())
    assert screen.shape == (600, 800, 3)
    colours = screen.reshape(-1, 3).astype(int)
    for colour in palette(2).astype(int):
        # depth shading darkens far points a little: look for pixels close to each part colour
        close = np.abs(colours - colour).max(axis=1) <= 60
        assert close.sum() > 200, f"part colour {colour.tolist()} not drawn"
