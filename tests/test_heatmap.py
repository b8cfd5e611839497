"""The per-run heatmap artifact: pixels checked against the data, not just "a file was written"."""

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from rnngrad import heatmap as hm


def render(tmp_path, steps, norms, **kwargs):
    path = tmp_path / "h.png"
    hm.grad_heatmap_png(np.asarray(steps), np.asarray(norms, dtype=float), path, **kwargs)
    image = Image.open(path)
    assert image.format == "PNG" and image.mode == "P"
    return np.asarray(image.convert("RGB")).astype(int)


def viridis(fraction):
    """The palette colour of a value at `fraction` of the way from vmin to vmax."""
    index = min(int(np.floor(fraction * hm.N_COLOURS)), hm.N_COLOURS - 1)
    return (np.asarray(colormaps["viridis"](index / (hm.N_COLOURS - 1))[:3]) * 255).round().astype(int)


def cell_centre(row, col, n_steps, T):
    """Pixel (y, x) at the centre of the cell of row `row` (0 = first step) and column `col` (t = col + 1)."""
    y = hm.TOP + hm.PLOT_H - (row + 0.5) / n_steps * hm.PLOT_H
    x = hm.LEFT + (col + 0.5) / T * hm.PLOT_W
    return int(y), int(x)


def test_cells_have_the_colour_of_their_log_norm_first_step_at_the_bottom(tmp_path):
    # log10 norms: step 0 -> [-3, -1, 1], step 10 -> [blank (0), blank (nan), 0]; vmin -3, vmax 1
    norms = [[1e-3, 1e-1, 10.0], [0.0, np.nan, 1.0]]
    pixels = render(tmp_path, [0, 10], norms)
    assert pixels.shape == (hm.TOP + hm.PLOT_H + hm.BOTTOM, hm.LEFT + hm.PLOT_W + hm.RIGHT, 3)
    expected = {(0, 0): viridis(0.0), (0, 1): viridis(0.5), (0, 2): viridis(1.0), (1, 2): viridis(0.75)}
    for (row, col), colour in expected.items():
        np.testing.assert_array_equal(pixels[cell_centre(row, col, 2, 3)], colour, err_msg=f"cell {row},{col}")
    grey = np.full(3, np.linspace(0, 255, 16).round()[hm.BLANK - hm.GREY])
    for col in (0, 1):
        np.testing.assert_array_equal(pixels[cell_centre(1, col, 2, 3)], grey)


def test_colourbar_runs_from_vmin_at_the_bottom_to_vmax_at_the_top(tmp_path):
    pixels = render(tmp_path, [0, 1], [[1e-4, 1.0], [1e-2, 1e-1]])
    x = hm.LEFT + hm.PLOT_W + hm.BAR_GAP + hm.BAR_W // 2
    np.testing.assert_array_equal(pixels[hm.TOP + hm.PLOT_H - 1, x], viridis(0.0))
    np.testing.assert_array_equal(pixels[hm.TOP, x], viridis(1.0))


def test_degenerate_inputs_still_give_an_image(tmp_path):
    render(tmp_path, [5], [[2.0]])  # one step, one time step, vmin == vmax
    pixels = render(tmp_path, [0, 1], [[0.0, 0.0], [np.inf, np.nan]], title="all blank")
    grey = np.linspace(0, 255, 16).round()[hm.BLANK - hm.GREY]
    assert (pixels[cell_centre(0, 0, 2, 2)] == grey).all() and (pixels[cell_centre(1, 1, 2, 2)] == grey).all()


@pytest.mark.parametrize("steps, norms", [([0, 1], [[1.0, 2.0]]), ([0], [1.0, 2.0]), ([], np.zeros((0, 3)))])
def test_bad_shapes_are_refused(tmp_path, steps, norms):
    with pytest.raises(ValueError, match=r"ds_norm must be \(N, T\)"):
        hm.grad_heatmap_png(np.asarray(steps), np.asarray(norms), tmp_path / "h.png")
    assert not (tmp_path / "h.png").exists()


@pytest.mark.parametrize("lo, hi, count, expected", [
    (1, 50, 5, [10, 20, 30, 40, 50]),
    (0, 1000, 5, [0, 200, 400, 600, 800, 1000]),
    (-6.3, 0.2, 4, [-6, -4, -2, 0]),
    (1, 8, 5, [2, 4, 6, 8]),
    (3, 3, 5, [3]),
])
def test_nice_ticks_are_round_values_inside_the_range(lo, hi, count, expected):
    np.testing.assert_allclose(hm.nice_ticks(lo, hi, count), expected)
