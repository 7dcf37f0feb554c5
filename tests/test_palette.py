import numpy as np
import pytest

from pointea.palette import (
    CORRECT_COLOR,
    ERROR_COLOR,
    UNLABELED_COLOR,
    label_color,
    legend_entries,
    palette,
    part_colors,
)


def _distances(colors: np.ndarray) -> np.ndarray:
    colors = colors.astype(np.float64)
    return np.linalg.norm(colors[:, None] - colors[None], axis=-1)


def test_palette_shape_dtype_and_prefix_stability():
    big = palette(64)
    assert big.shape == (64, 3) and big.dtype == np.uint8
    for n in (0, 1, 7, 20, 21, 50):
        np.testing.assert_array_equal(palette(n), big[:n])


def test_palette_colours_are_distinct_within_any_category_sized_window():
    # ShapeNetPart numbers parts contiguously with at most 6 per category: any 6 consecutive ids
    # are drawn together and must be told apart.
    colors = palette(64)
    for start in range(64 - 6):
        window = _distances(colors[start:start + 6])
        np.fill_diagonal(window, np.inf)
        assert window.min() > 60, f"ids {start}..{start + 5} have two similar colours"
    everything = _distances(colors[:50])
    np.fill_diagonal(everything, np.inf)
    assert everything.min() > 20  # no two of ShapeNetPart's 50 parts share a colour


def test_palette_colours_stand_out_from_background_and_error_view_colours():
    colors = palette(50).astype(np.float64)
    assert np.linalg.norm(colors - 255.0, axis=1).min() > 80  # white background
    assert np.linalg.norm(colors - np.asarray(CORRECT_COLOR), axis=1).min() > 50


def test_part_colors_maps_labels_and_greys_out_negative_ones():
    labels = np.array([0, 3, -1, 3, 25])
    colors = part_colors(labels)
    assert colors.shape == (5, 3) and colors.dtype == np.uint8
    table = palette(26)
    np.testing.assert_array_equal(colors[[0, 1, 3, 4]], table[[0, 3, 3, 25]])
    np.testing.assert_array_equal(colors[2], UNLABELED_COLOR)
    assert part_colors(np.zeros(0, dtype=np.int64)).shape == (0, 3)


def test_part_colors_does_not_depend_on_the_other_labels_present():
    np.testing.assert_array_equal(part_colors(np.array([4]))[0], part_colors(np.array([4, 40]))[0])


def test_part_colors_with_huge_labels_colour_only_the_labels_present():
    labels = np.array([3, 10**12, -1, 3, 2**62])
    colors = part_colors(labels)  # no table up to the largest label
    assert tuple(colors[0]) == tuple(colors[3]) == tuple(palette(4)[3])
    assert tuple(colors[1]) == label_color(10**12) and tuple(colors[4]) == label_color(2**62)
    assert tuple(colors[2]) == UNLABELED_COLOR
    rows = legend_entries(labels)
    assert rows[0] == (-1, "unlabeled", UNLABELED_COLOR)
    assert rows[-1] == (2**62, f"label {2**62}", label_color(2**62))


def test_label_color_agrees_with_palette():
    assert [label_color(i) for i in range(60)] == [tuple(c) for c in palette(60).tolist()]


def test_error_colours_differ():
    assert np.linalg.norm(np.subtract(ERROR_COLOR, CORRECT_COLOR)) > 150


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 2), dtype=np.int64), "1-D"),
    (np.array([0.5, 1.0]), "integers"),
])
def test_part_colors_rejects_bad_labels(bad, message):
    with pytest.raises(ValueError, match=message):
        part_colors(bad)


def test_palette_rejects_negative_size():
    with pytest.raises(ValueError, match="-1"):
        palette(-1)


def test_legend_entries_names_colours_and_common_prefix():
    names = ["chair/seat", "chair/back", "chair/legs", "lamp/base"]
    rows = legend_entries(np.array([2, 0, 2, 0]), names)
    assert rows == [(0, "seat", tuple(int(c) for c in palette(1)[0])),
                    (2, "legs", tuple(int(c) for c in palette(3)[2]))]
    assert [name for _, name, _ in legend_entries(np.array([0, 3]), names)] == ["chair/seat", "lamp/base"]
    rows = legend_entries(np.array([-1, 7]))
    assert rows[0] == (-1, "unlabeled", UNLABELED_COLOR) and rows[1][1] == "label 7"
