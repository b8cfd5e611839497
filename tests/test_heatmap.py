"""The per-run heatmap artifact: the figure's data, scale and labels, and the PNG's pixels, against the input."""

import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from rnngrad.app import heatmap as hm


def parts(fig):
    """The heatmap's axes, its image, and the colourbar's axes."""
    ax, cax = fig.axes
    (image,) = ax.images
    return ax, image, cax


def pixel(png, fig, ax, x, y):
    """The RGB of the PNG's pixel at data point (x, y) of ax."""
    col, row = ax.transData.transform((x, y))
    return png[int(fig.bbox.height - row), int(col), :3]


def test_image_is_log10_of_the_norms_first_step_at_the_bottom_blank_where_undefined():
    norms = np.array([[1e-3, 1e-1, 10.0], [0.0, np.nan, 1.0], [np.inf, 2.0, 4.0]])
    fig = hm.grad_heatmap(np.array([0, 10, 20]), norms, title="adding-T3-tanh-orthogonal-s0")
    ax, image, _ = parts(fig)
    data = image.get_array()
    np.testing.assert_array_equal(data.mask, ~(np.isfinite(norms) & (norms > 0)))
    np.testing.assert_allclose(data[~data.mask], np.log10(norms[~data.mask]), rtol=0, atol=1e-15)
    assert image.origin == "lower"  # row 0, the first step, at the bottom
    # each cell spans the interval around its t (1..3) and its step (10 apart)
    assert image.get_extent() == [0.5, 3.5, -5.0, 25.0]
    assert image.cmap.name == "viridis" and image.cmap.get_bad()[:3] == pytest.approx(to_rgb(hm.BLANK))


def test_colour_scale_spans_the_decades_of_the_finite_logs_and_the_colourbar_shows_it():
    norms = np.array([[2e-4, 1.0], [1e-2, 0.5]])  # logs from -3.7 to 0: the decades -4 to 0
    fig = hm.grad_heatmap(np.array([0, 1]), norms)
    ax, image, cax = parts(fig)
    assert image.get_clim() == (-4.0, 0.0)
    assert cax.get_ylim() == (-4.0, 0.0)
    assert cax.get_ylabel() == "log10 ||dL/ds_t||"
    ticks = cax.get_yticks()
    assert ticks.min() >= -4.0 and ticks.max() <= 0.0 and len(ticks) >= 3


@pytest.mark.parametrize("steps, T", [(np.arange(0, 1001), 50), (np.arange(0, 3), 3)])
def test_axes_are_labelled_with_integer_ticks_inside_the_data_and_the_title_is_the_run_name(steps, T):
    fig = hm.grad_heatmap(steps, np.ones((len(steps), T)), title="adding-T50-tanh-orthogonal-s0")
    ax, _, _ = parts(fig)
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("time step t", "training step",
                                                                  "adding-T50-tanh-orthogonal-s0")
    for ticks, (lo, hi) in ((ax.get_xticks(), ax.get_xlim()), (ax.get_yticks(), ax.get_ylim())):
        inside = ticks[(ticks >= lo) & (ticks <= hi)]
        assert 2 <= len(inside) <= hm.TICKS + 1
        np.testing.assert_array_equal(inside, np.round(inside))  # steps and t are integers


def test_png_has_the_figure_size_and_the_cells_the_colours_of_their_values(tmp_path):
    norms = np.array([[1e-3, 1e-1, 10.0], [0.0, np.nan, 1.0]])  # logs -3, -1, 1 / blank, blank, 0
    fig = hm.grad_heatmap(np.array([0, 1]), norms)
    path = tmp_path / "h.png"
    fig.savefig(path)
    png = imread(path)
    assert png.shape[:2] == (round(hm.SIZE[1] * hm.DPI), round(hm.SIZE[0] * hm.DPI))
    ax, _, cax = parts(fig)
    viridis = colormaps["viridis"]
    expected = {(1, 0): viridis(0.0), (2, 0): viridis(0.5), (3, 0): viridis(1.0), (3, 1): viridis(0.75),
                (1, 1): to_rgb(hm.BLANK), (2, 1): to_rgb(hm.BLANK)}
    for (t, step), colour in expected.items():
        np.testing.assert_allclose(pixel(png, fig, ax, t, step), colour[:3], atol=1.5 / 255, err_msg=f"t={t} step={step}")
    # the colourbar maps the data's range, vmin (-3) at the bottom to vmax (1) at the top, as the cells do
    for value in (-2.9, -1.0, 0.9):
        np.testing.assert_allclose(pixel(png, fig, cax, 0.5, value), viridis((value + 3) / 4)[:3], atol=3 / 255)


def test_degenerate_inputs_still_give_a_figure(tmp_path):
    one = hm.grad_heatmap(np.array([5]), np.array([[2.0]]))  # one step, one time step, vmin == vmax
    assert parts(one)[1].get_extent() == [0.5, 1.5, 4.5, 5.5]
    blank = hm.grad_heatmap(np.array([0, 1]), np.array([[0.0, 0.0], [np.inf, np.nan]]), title="all blank")
    assert parts(blank)[1].get_array().mask.all()
    for fig in (one, blank):
        fig.savefig(tmp_path / "h.png")


@pytest.mark.parametrize("steps, norms, message", [
    ([0, 1], [[1.0, 2.0]], r"ds_norm must be \(N, T\)"),
    ([0], [1.0, 2.0], r"ds_norm must be \(N, T\)"),
    ([], np.zeros((0, 3)), r"ds_norm must be \(N, T\)"),
    ([0, 1, 3], np.ones((3, 2)), "steps must increase evenly"),
    ([2, 1], np.ones((2, 2)), "steps must increase evenly"),
])
def test_bad_input_is_refused(steps, norms, message):
    with pytest.raises(ValueError, match=message):
        hm.grad_heatmap(np.asarray(steps), np.asarray(norms, dtype=float))


FIGURES = {"heatmap": (hm.save_grad_heatmap, hm.grad_heatmap), "curves": (hm.save_grad_curves, hm.grad_curves)}


@pytest.mark.parametrize("kind", FIGURES)
def test_the_process_figure_redrawn_for_a_run_is_the_fresh_figure_of_that_run(tmp_path, monkeypatch, kind):
    """A process reuses one figure of each kind, and the pixels of its frame while the limits stay: what an
    earlier run left on it (another shape, range, title, blank cells; or other data at the same limits)
    must not show in the next run's PNG, which is the full drawing's up to the antialiasing of the axes'
    edges where the data meet them (the data are drawn over the frame's ticks, not under)."""
    save, figure = FIGURES[kind]
    rng = np.random.default_rng(0)
    other = (np.arange(0, 40, 2), 10.0 ** rng.uniform(-9, 3, (20, 7)))
    other[1][3, 2] = np.nan
    later = (np.arange(0, 1001), 10.0 ** rng.uniform(-2, 0, (1001, 50)))
    same_limits = (later[0], 10.0 ** rng.uniform(-1.5, -0.5, (1001, 50)))
    monkeypatch.setattr(hm, "_process_figures", {})
    save(tmp_path / "fresh.png", *later, title="T50-tanh-orth-s0-adding")
    for name, earlier in (("other", other), ("same", same_limits)):
        monkeypatch.setattr(hm, "_process_figures", {})
        save(tmp_path / f"{name}.png", *earlier, title="T7-relu-id-s1-adding")
        save(tmp_path / f"after_{name}.png", *later, title="T50-tanh-orth-s0-adding")
        np.testing.assert_array_equal(imread(tmp_path / f"after_{name}.png"), imread(tmp_path / "fresh.png"))
        assert not np.array_equal(imread(tmp_path / f"{name}.png"), imread(tmp_path / "fresh.png"))
    canvas = FigureCanvasAgg(figure(*later, title="T50-tanh-orth-s0-adding"))
    canvas.draw()  # the full drawing, written as the process figure's PNG is
    hm.write_png(np.asarray(canvas.buffer_rgba()), tmp_path / "full.png")
    differ = np.abs(imread(tmp_path / "full.png") - imread(tmp_path / "fresh.png")).max(axis=2) > 0
    assert differ.sum() <= 20 and np.abs(imread(tmp_path / "full.png") - imread(tmp_path / "fresh.png")).max() < 0.1


def test_curves_are_the_norms_against_the_distance_from_the_loss_on_decade_ticks():
    norms = np.array([[1e-3, 1e-2, 0.5, 2.0], [np.nan, 0.0, 1e-1, 1.0], [1e-5, 1e-4, 1e-3, 1e-2]])
    fig = hm.grad_curves(np.array([0, 500, 1000]), norms, title="T4-tanh-orth-s0-adding")
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["step 0", "step 500", "step 1000"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["step 0", "step 500", "step 1000"]
    for line, row in zip(lines, norms):
        x, y = line.get_data()
        np.testing.assert_array_equal(x, [3, 2, 1, 0])  # t = 1..T at distance T - t
        shown = np.where(np.isfinite(row) & (row > 0), row, np.nan)  # a gap where log10 is undefined
        np.testing.assert_array_equal(y, shown)
    assert ax.get_yscale() == "log" and ax.get_ylim() == pytest.approx((1e-5, 1e1))  # whole decades
    ticks = [t for t in ax.get_yticks() if 1e-5 <= t <= 1e1]
    assert len(ticks) >= 2 and np.allclose(np.log10(ticks), np.round(np.log10(ticks)))  # powers of ten only
    assert ax.get_xlim() == (0, 3)
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == (
        "distance from the loss T - t", "||dL/ds_t||", "T4-tanh-orth-s0-adding")


def test_curves_of_a_later_run_with_fewer_checkpoints_hide_the_earlier_lines(tmp_path):
    hm.save_grad_curves(tmp_path / "a.png", np.array([0, 5, 10, 15]), np.ones((4, 6)), title="a")
    fig = hm.grad_curves(np.array([0, 10]), np.ones((2, 6)))
    hm.save_grad_curves(tmp_path / "b.png", np.array([0, 10]), np.ones((2, 6)))
    cached = hm._process_figures[hm._Curves].figure.axes[0]
    assert [line.get_label() for line in cached.get_lines() if line.get_visible()] == ["step 0", "step 10"]
    legend = lambda ax: [t.get_text() for t in ax.get_legend().get_texts()]  # noqa: E731
    assert legend(cached) == legend(fig.axes[0]) == ["step 0", "step 10"]


def test_a_refused_input_leaves_the_process_figure_as_it_was(tmp_path):
    steps, norms = np.arange(3), np.ones((3, 4))
    hm.save_grad_heatmap(tmp_path / "a.png", steps, norms, title="a")
    with pytest.raises(ValueError, match="steps must increase evenly"):
        hm.save_grad_heatmap(tmp_path / "b.png", np.array([0, 1, 3]), norms, title="b")
    assert not (tmp_path / "b.png").exists()
    hm.save_grad_heatmap(tmp_path / "c.png", steps, norms, title="a")
    np.testing.assert_array_equal(imread(tmp_path / "a.png"), imread(tmp_path / "c.png"))


def test_a_worker_keeps_the_frames_of_its_last_configurations_and_redraws_each_as_fresh(tmp_path, monkeypatch):
    """Two configurations taking turns on a worker (A, B, A): the third run reuses A's frame (no full drawing)
    and its PNG is the one a fresh process writes; the frames kept are at most FRAMES, the oldest dropped."""
    rng = np.random.default_rng(1)
    a = (np.arange(0, 101), 10.0 ** rng.uniform(-3, 0, (101, 20)))
    b = (np.arange(0, 51), 10.0 ** rng.uniform(-3, 0, (51, 9)))
    monkeypatch.setattr(hm, "_process_figures", {})
    hm.save_grad_heatmap(tmp_path / "fresh.png", *a, title="a")
    monkeypatch.setattr(hm, "_process_figures", {})
    hm.save_grad_heatmap(tmp_path / "a.png", *a, title="a")
    hm.save_grad_heatmap(tmp_path / "b.png", *b, title="b")
    figure = hm._process_figures[hm._Heatmap]
    draws = []
    monkeypatch.setattr(FigureCanvasAgg, "draw", lambda self: draws.append(1))
    hm.save_grad_heatmap(tmp_path / "again.png", *a, title="a")
    assert draws == [] and len(figure.frame.pixels) == 2
    np.testing.assert_array_equal(imread(tmp_path / "again.png"), imread(tmp_path / "fresh.png"))
    monkeypatch.undo()
    monkeypatch.setattr(hm, "_process_figures", {hm._Heatmap: figure})
    for n in range(3, 3 + hm.FRAMES):
        hm.save_grad_heatmap(tmp_path / "n.png", np.arange(n), np.ones((n, 4)))
    assert len(figure.frame.pixels) == hm.FRAMES
    assert (0.5, 20.5, -0.5, 100.5) not in figure.frame.pixels  # a's, the least recently used, dropped
