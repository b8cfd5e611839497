"""The report's figures read on a page (issue 15): checked from the Figure objects, each built from a small crafted
frame. Every log axis has its major ticks at round decades; panels that show the same quantity share their y range;
no line is drawn across a grid value it lacks; legends hold distinct entries that say something, coloured where
the panels are; no figure is wider than figures.MAX_ASPECT times its height."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba

from rnngrad.report import figures, frames


def stats(frame: pd.DataFrame, median) -> pd.DataFrame:
    """The frame with median, q25, q75 columns (a band of +-10%)."""
    median = np.asarray(median, dtype=float)
    return frame.assign(median=median, q25=0.9 * median, q75=1.1 * median)


def log_axes(fig):
    return [(ax, axis) for ax in fig.axes if ax.get_visible() for axis, scale in (("x", ax.get_xscale()), ("y", ax.get_yscale()))
            if scale == "log"]


def decades(ax, axis: str) -> np.ndarray:
    """The exponents of the major ticks in view of a log axis (asserting they are integers)."""
    ticks = (ax.xaxis if axis == "x" else ax.yaxis).get_majorticklocs()
    low, high = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    shown = ticks[(ticks >= low * (1 - 1e-9)) & (ticks <= high * (1 + 1e-9))]
    exponents = np.log10(shown)
    np.testing.assert_allclose(exponents, np.round(exponents), atol=1e-9, err_msg=f"{axis} ticks {shown} not powers of ten")
    return np.round(exponents).astype(int)


def check_page(fig) -> None:
    """What every figure must satisfy: round-decade majors on its log axes, a page's aspect, a legend that says something."""
    for ax, axis in log_axes(fig):
        exponents = decades(ax, axis)
        assert len(exponents) >= 1, (ax.get_title(), axis, "no power of ten in view")
        steps = set(np.diff(exponents))
        assert len(steps) <= 1 and steps <= set(figures.DECADE_STRIDES), (ax.get_title(), exponents)
        stride = steps.pop() if steps else 1
        assert all(e % stride == 0 for e in exponents), (ax.get_title(), exponents)  # 10^-10, 10^0: never 10^-6, 10^12
    width, height = fig.get_size_inches()
    assert 0.3 <= width / height <= figures.MAX_ASPECT, (width, height)
    for legend in fig.legends:
        texts = [t.get_text() for t in legend.get_texts()]
        assert len(texts) == len(set(texts)), texts
        assert not any(t.startswith("_") or t == frames.ALL_RUNS for t in texts), texts


def check_gaps(ax, label: str, grid) -> None:
    """No segment of the line `label` joins two points with a grid value between them."""
    (line,) = [l for l in ax.get_lines() if l.get_label() == label]
    xy = line.get_xydata()
    for (x0, y0), (x1, y1) in itertools.pairwise(xy):
        if np.isfinite([x0, y0, x1, y1]).all():
            assert not any(x0 < g < x1 for g in grid), (label, x0, x1)


def same_ylim(axes) -> None:
    limits = {tuple(np.round(ax.get_ylim(), 12)) for ax in axes}
    assert len(limits) == 1, limits


def test_decade_locator_picks_round_strides():
    assert [figures.DecadeLocator.stride(lo, hi) for lo, hi in ((-2, 3), (-14, 4), (-96, 30), (-168, 7))] == [1, 5, 20, 50]
    exponents = np.round(np.log10(figures.DecadeLocator().tick_values(1e-96, 1e30))).astype(int)
    assert [e for e in exponents if -96 <= e <= 30] == [-80, -60, -40, -20, 0, 20]


def through_time_frame(T=100):
    """Curves of `frames.through_time_curves` form: sigmoid and tanh, rho 0.5 and 2, spanning 1e-99 to 1e60."""
    rows = []
    for act, rate in (("sigmoid", 0.1), ("tanh", 1.0)):
        for rho in (0.5, 2.0):
            for curve in ("ds_norm", "anchored_bound", "anchored_rho"):
                d = np.arange(T)
                value = (rate * rho) ** d * (3.0 if curve == "anchored_bound" else 1.0)
                rows.append(stats(pd.DataFrame({"model.init": "gaussian", "model.activation": act, "model.spectral_radius": rho,
                                                "measured_radius": rho, "curve": curve, "distance": d}), value))
    return pd.concat(rows, ignore_index=True), pd.DataFrame({"model.spectral_radius": [0.5, 2.0], "measured": [0.5, 2.0]})


def test_grad_through_time_shares_its_decades_and_colours_its_legend():
    fig = figures.grad_through_time(*through_time_frame())
    check_page(fig)
    sigmoid, tanh = fig.axes
    same_ylim([sigmoid, tanh])
    assert sigmoid.get_ylim()[0] < 1e-99 and tanh.get_ylim()[1] > 1e29
    # per spectral radius, a segment in that radius's shade of each activation's colour, not a grey
    handles = fig.legends[0].legend_handles
    for i, handle in enumerate(handles[:2]):
        assert to_rgba(handle.get_color()) == to_rgba(figures.shades(figures.PALETTE["sigmoid"], 2)[i])


def test_decay_rate_wraps_its_panels_shares_its_y_and_breaks_at_a_missing_radius():
    rows = []
    for act in ("sigmoid", "tanh", "relu", "linear"):
        for rho in (0.5, 1.0, 2.0):
            if act == "tanh" and rho == 1.0:
                continue  # no runs there: the tanh line must break
            rows.append({"model.activation": act, "model.init": "orthogonal", "model.spectral_radius": rho, "spectral/radius": rho,
                         "grad/decay_rate": math.log(frames.GAMMA[act] * rho), "lyap/top": math.log(frames.GAMMA[act] * rho)})
    data = frames.decay_runs(pd.DataFrame(rows))
    fig = figures.decay_rate_vs_radius(frames.decay_curves(data), data)
    check_page(fig)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == 5 and fig.get_size_inches()[0] / fig.get_size_inches()[1] < 3  # 2 rows of 3, not a strip of 5
    same_ylim(shown)
    tanh = shown[1]
    check_gaps(tanh, "tanh, orthogonal init", [0.5, 1.0, 2.0])
    assert np.isnan(figures._on_grid(pd.DataFrame({"k": [0.5, 2.0], "v": [1, 2]}), "k", [0.5, 1.0, 2.0])["v"][1])


def test_success_vs_length_breaks_the_line_where_a_length_has_no_runs():
    solved = pd.DataFrame({"panel": "tanh, gaussian init", "colour": "tanh",
                           "label": ["no clipping"] * 4 + ["norm clip 1"] * 3,
                           "task.seq_len": [10, 20, 40, 80, 10, 40, 80], "fraction": [1, 0.8, 0.4, 0, 1, 0.6, 0.2]})
    fig = figures.success_vs_length(pd.concat([solved, solved.assign(panel="relu, identity init", colour="relu")]))
    check_page(fig)
    ax = fig.axes[0]
    check_gaps(ax, "norm clip 1", [10, 20, 40, 80])
    check_gaps(ax, "no clipping", [10, 20, 40, 80])
    same_ylim(fig.axes[:2])


def test_learning_curves_share_y_per_task_and_name_the_baseline_once():
    curves = []
    for panel, task_loss in (("adding, T = 25", 0.2), ("adding, T = 50", 0.02), ("copy, T = 10", 1.5), ("copy, T = 20", 0.9)):
        curves.append(stats(pd.DataFrame({"panel": panel, "colour": "tanh", "label": frames.ALL_RUNS, "step": [0, 100, 200]}),
                            [1.0, 0.5, task_loss]))
    baselines = pd.DataFrame({"panel": ["adding, T = 25", "adding, T = 50", "copy, T = 10", "copy, T = 20"],
                              "task.baseline": [0.167, 0.167, 0.693, 0.693]})
    fig = figures.learning_curves(pd.concat(curves, ignore_index=True), baselines, "test loss")
    check_page(fig)
    a25, a50, c10, c20 = fig.axes[:4]
    same_ylim([a25, a50])
    same_ylim([c10, c20])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["constant predictor"]  # not 'all runs', not 4 entries
    assert [t.get_text() for ax in (a25, c10) for t in ax.texts] == ["0.167", "0.693"]


def test_learning_curves_without_a_legend_entry_to_give_have_no_legend():
    curves = stats(pd.DataFrame({"panel": "T = 8", "colour": "tanh", "label": frames.ALL_RUNS, "step": [0, 10]}), [2.0, 1.0])
    fig = figures.learning_curves(curves, pd.DataFrame({"panel": [], "task.baseline": []}), "loss")
    check_page(fig)
    assert not fig.legends


def test_clipping_wraps_modes_into_two_rows_and_shares_the_norm_panels_range():
    keys = pd.DataFrame([("relu", m, t) for m, t in (("none", np.nan), ("norm", 1.0), ("norm", 10.0), ("value", 0.1), ("value", 10.0))],
                        columns=["model.activation", "clip.mode", "clip.threshold"])
    curves = pd.concat([stats(keys.iloc[[i]].merge(pd.DataFrame({"step": [0, 50, 100]}), how="cross"), [10.0 ** (5 * i), 1.0, 0.5])
                        for i in range(len(keys))], ignore_index=True)
    diverged = keys.assign(fraction=[1.0, 0.0, 0.5, 0.0, 0.5], outcome="diverged")
    diverged = diverged[~((diverged["clip.mode"] == "value") & (diverged["clip.threshold"] == 1.0))]
    fig = figures.clipping(curves, diverged.assign(**{"clip.threshold": diverged["clip.threshold"]}))
    check_page(fig)
    none, norm, value, divergence = [ax for ax in fig.axes if ax.get_visible()]
    same_ylim([none, norm, value])
    assert divergence.get_ylim() == (-0.05, 1.05)
    check_gaps(divergence, "relu, value clipping", [0.1, 1.0, 10.0])


def test_truncation_shares_each_column_and_breaks_at_a_missing_k():
    keys = [(T, "tanh", k) for T in (20, 40) for k in (1, 4, 16, np.nan) if not (T == 40 and k == 4)]
    base = pd.DataFrame(keys, columns=frames.TRUNCATION_KEYS)
    curves = pd.concat([stats(base.assign(curve=c), np.linspace(0.2, 0.9, len(base))) for c in ("trunc_cosine", "relative_loss")],
                       ignore_index=True)
    solved = base.assign(fraction=np.linspace(0, 1, len(base)))
    runs = base.assign(**{"task.dependency": 15})
    fig = figures.truncation(curves, solved, runs)
    check_page(fig)
    for column in range(3):
        same_ylim([fig.axes[column], fig.axes[3 + column]])
    for ax in fig.axes[3:]:
        check_gaps(ax, "tanh", [1, 4, 16])


def test_saturation_wraps_five_questions():
    curves = pd.concat([stats(pd.DataFrame({"question": q, "model.activation": "tanh", "step": [0, 10], "panel_runs": 2}), [0.1, 0.2])
                        for q in ("charlm", "clipping", "remedies", "seqlen", "truncation")], ignore_index=True)
    fig = figures.saturation(curves)
    check_page(fig)
    assert sum(ax.get_visible() for ax in fig.axes) == 5 and len(fig.axes) == 6


def test_remedies_share_the_loss_range_across_tasks_and_break_at_a_missing_length():
    solved = pd.DataFrame([("adding", "gru", "gru", T) for T in (25, 50, 100)] + [("adding", "tanh", "tanh", T) for T in (25, 100)]
                          + [("copy", "gru", "gru", T) for T in (10, 20)], columns=frames.REMEDY_KEYS)
    curves = stats(solved.copy(), [1e-3, 2e-3, 5e-3, 1.0, 1.1, 0.9, 0.95])
    solved = solved.assign(runs=3, count=1, fraction=1 / 3)
    fig = figures.remedies(curves, solved)
    check_page(fig)
    adding, copy = fig.axes[:2]
    same_ylim([adding, copy])
    check_gaps(adding, "tanh", [25, 50, 100])


def test_remedies_grad_through_time_shares_its_range():
    curves = pd.concat([stats(pd.DataFrame({"task.name": task, "colour": "gru", "label": "gru", "curve": "ds_norm", "distance": np.arange(5)}),
                              scale ** np.arange(5)) for task, scale in (("adding", 0.01), ("copy", 2.0))], ignore_index=True)
    lengths = pd.DataFrame({"task.name": ["adding", "copy"], "task.seq_len": [5, 5], "steps": [5, 5]})
    fig = figures.remedies_grad_through_time(curves, lengths, pd.DataFrame({"colour": ["gru"], "label": ["gru"]}))
    check_page(fig)
    same_ylim(fig.axes[:2])


def test_precision_legend_is_coloured_and_its_axes_round():
    rows = [stats(pd.DataFrame({"model.activation": act, "model.spectral_radius": rho, "model.dtype": dtype, "distance": np.arange(50)}),
                  (0.05 * rho) ** np.arange(50) * (0 if dtype == "float32" and rho == 0.5 else 1) + 1e-300)
            for act in ("sigmoid", "tanh") for rho in (0.5, 1.0) for dtype in ("float64", "float32")]
    fig = figures.precision(pd.concat(rows, ignore_index=True), pd.DataFrame({"model.spectral_radius": [0.5, 1.0], "measured": [0.5, 1.0]}))
    check_page(fig)
    first = fig.legends[0].legend_handles[0]
    assert to_rgba(first.get_color()) == to_rgba(figures.shades(figures.PALETTE["sigmoid"], 2)[0])


def test_heatmaps_read_on_a_page():
    frame = pd.DataFrame({"step": np.repeat([0, 10], 3), "t": np.tile([1, 2, 3], 2), "ds_norm": [1e-3, 1e-2, 1.0, 1e-4, 1e-2, 10.0]})
    check_page(figures.grad_heatmaps({"vanishing": frame, "healthy": frame, "exploding": frame}))


@pytest.mark.parametrize("low, high", [(0.55, 0.9), (1.2, 8.0), (2e-7, 3e-7)])
def test_a_log_axis_without_a_power_of_ten_in_view_is_widened_to_the_nearest(low, high):
    curves = stats(pd.DataFrame({"panel": "T = 8", "colour": "tanh", "label": "tanh", "step": [0, 10]}), [low, high])
    fig = figures.learning_curves(curves, pd.DataFrame({"panel": [], "task.baseline": []}), "loss")
    check_page(fig)
    bottom, top = fig.axes[0].get_ylim()
    assert bottom <= low and top >= high / 1.1 and math.log10(top / bottom) < 1.2


def test_neighbouring_grid_values_share_a_log_axis_without_printing_over_each_other():
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    ax.plot([4, 18], [0, 1])
    figures._log_ticks(ax, [4, 8, 9, 10, 16, 17, 18])
    formatter = ax.xaxis.get_minor_formatter()
    assert [formatter(k) for k in (4, 8, 9, 10, 16, 17, 18)] == ["4", "8", "", "10", "", "", "18"]
    assert list(ax.xaxis.get_minor_locator().tick_values(4, 18)) == [4, 8, 9, 10, 16, 17, 18]  # every k keeps its tick
