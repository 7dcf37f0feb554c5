"""Stable colours (and legend rows) for part labels, shared by images, HTML pages and coloured PLY files.

Colour ``i`` is the same whatever the number of labels in a cloud, so a part keeps its colour
across views, files and runs. The first 20 colours are a hand-picked high-contrast set; later ones
step around the hue circle by the golden angle, so any run of consecutive ids stays distinct.
"""

from __future__ import annotations

import colorsys
from typing import List, Optional, Sequence, Tuple

import numpy as np

# High-contrast qualitative colours (Kelly / Tableau inspired), distinguishable on white and black.
_BASE_COLORS = (
    (31, 119, 180),   # blue
    (255, 127, 14),   # orange
    (44, 160, 44),    # green
    (214, 39, 40),    # red
    (148, 103, 189),  # purple
    (140, 86, 75),    # brown
    (227, 119, 194),  # pink
    (188, 189, 34),   # olive
    (23, 190, 207),   # cyan
    (255, 215, 0),    # gold
    (0, 0, 128),      # navy
    (0, 128, 128),    # teal
    (128, 0, 0),      # maroon
    (170, 255, 195),  # mint
    (245, 130, 48),   # dark orange
    (70, 240, 240),   # light cyan
    (240, 50, 230),   # magenta
    (0, 130, 200),    # sky blue
    (210, 245, 60),   # lime
    (128, 128, 0),    # dark olive
)

UNIFORM_COLOR = _BASE_COLORS[0]
"""Colour of clouds drawn without labels."""

UNLABELED_COLOR = (160, 160, 160)
"""Grey used for negative labels (unknown / ignored points)."""

ERROR_COLOR = (230, 0, 0)
"""Red used to mark wrongly labelled points."""

CORRECT_COLOR = (190, 190, 190)
"""Light grey used for correctly labelled points in an error view."""

_GOLDEN_ANGLE = 0.381966011250105  # 1 - 1/phi, as a fraction of the hue circle


def palette(n: int) -> np.ndarray:
    """Return the first ``n`` label colours.

    Args:
        n: number of colours (>= 0).

    Returns:
        uint8 array of shape (n, 3), RGB. ``palette(n)[i]`` does not depend on ``n``.
    """
    if n < 0:
        raise ValueError(f"palette size must be >= 0, got {n}")
    return np.asarray([label_color(i) for i in range(n)], dtype=np.uint8).reshape(n, 3)


def label_color(label: int) -> Tuple[int, int, int]:
    """RGB colour of one label (>= 0): the base colours, then golden-angle hues."""
    if label < len(_BASE_COLORS):
        return tuple(_BASE_COLORS[label])
    k = label - len(_BASE_COLORS)
    hue = (0.05 + k * _GOLDEN_ANGLE) % 1.0
    saturation = (0.85, 0.6, 0.95)[k % 3]
    value = (0.9, 0.75, 0.6)[(k // 3) % 3]
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
    return round(r * 255), round(g * 255), round(b * 255)


def part_colors(labels: np.ndarray) -> np.ndarray:
    """Colour each point by its integer label.

    Args:
        labels: integer array of shape (N,); negative values mean "no label" and are drawn grey.

    Returns:
        uint8 array of shape (N, 3), RGB.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array of shape (N,), got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    colors = np.empty((labels.shape[0], 3), dtype=np.uint8)
    known = labels >= 0
    values, inverse = np.unique(labels[known], return_inverse=True)  # only the labels present
    table = np.asarray([label_color(int(v)) for v in values], dtype=np.uint8).reshape(-1, 3)
    colors[known] = table[inverse.reshape(-1)]
    colors[~known] = UNLABELED_COLOR
    return colors


def legend_entries(
    labels: np.ndarray, names: Optional[Sequence[str]] = None
) -> List[Tuple[int, str, Tuple[int, int, int]]]:
    """Legend rows ``(label, name, rgb)`` for the distinct labels present, in increasing order.

    Names default to "label k"; negative labels are "unlabeled". When every name carries the
    same "category/" prefix (e.g. "chair/seat", "chair/legs"), the prefix is dropped.
    """
    present = sorted({int(label) for label in np.asarray(labels).ravel()})
    texts = []
    for label in present:
        if label < 0:
            texts.append("unlabeled")
        elif names is not None and label < len(names):
            texts.append(str(names[label]))
        else:
            texts.append(f"label {label}")
    prefixes = {text.rsplit("/", 1)[0] if "/" in text else None for text in texts}
    if len(prefixes) == 1 and None not in prefixes:
        texts = [text.rsplit("/", 1)[1] for text in texts]
    return [(label, text, label_color(label) if label >= 0 else UNLABELED_COLOR)
            for label, text in zip(present, texts)]
