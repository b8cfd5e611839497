"""Figure functions: drawing only. Each takes frames that `rnngrad.report.frames` has aggregated (its
docstring names their columns) and optionally an empty `fig` to draw into, and returns a
`matplotlib.figure.Figure`; no pyplot state and no backend, so saving (`fig.savefig`) is the caller's.

Conventions shared by every figure:
- one colour per activation (and per gated cell or normalization) from `PALETTE`, wherever colour
  stands for the model; where a figure needs a second ordered variable (spectral radius, clip
  threshold) it uses shades of that colour or greys;
- seeds (and any other runs of one configuration) are shown as the median with the interquartile
  range as a band or error bar;
- legends sit outside the axes, one entry per distinct label, none for an entry that says nothing
  (`frames.ALL_RUNS`); the legend of coloured lines is coloured;
- log axes have their major ticks at round decades only (`DecadeLocator`: 10^k for k a multiple of 1, 2, 5, 10,
  20, ...); panels that show the same quantity share their y range;
- a line over a grid (T, rho, k, a threshold) is broken where a grid value has no runs (`_on_grid`), never drawn
  across it;
- panels wrap into rows so that a figure is at most MAX_ASPECT times as wide as it is tall.
"""

from __future__ import annotations

import functools
import math
import re

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, LogFormatterSciNotation, LogLocator, NullFormatter

from rnngrad.report import frames
from rnngrad.report.frames import FLOAT32, GAMMA, ordered, with_radius

# Okabe-Ito colours, one per entry of frames.MODELS (activations, gated cells, normalizations)
PALETTE = dict(zip(frames.MODELS, ("#E69F00", "#0072B2", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#999933", "#882255")))
OTHER_COLOUR = "#555555"
BASELINE_STYLE = dict(color="black", linestyle=":", linewidth=1.2)
# the threshold of "beats the constant predictor" (frames.BEATS) on an axis of the loss relative to its loss
BEATS_STYLE = dict(color="0.35", linestyle=":", linewidth=1.2)
BEATS_LABEL = f"beats the constant predictor (below {frames.BEATS:g})"
RATIO_ONE_STYLE = dict(color="0.6", linestyle="-", linewidth=0.8)  # the constant predictor itself (ratio 1)
CLIP_LINESTYLES = {"none": "-", "norm": "--", "value": ":"}
LINESTYLES = ["-", "--", ":", "-."]  # cycled over the configurations that share a colour
INIT_MARKERS = {"orthogonal": "o", "gaussian": "s", "identity": "D", "sparse": "^", "xavier": "v", "he": "P"}
PANEL = (3.2, 2.6)  # inches per panel
MAX_COLS = 3  # panels per row where the panels are a list (wrapped into rows beyond it)
MAX_ASPECT = 4.0  # the widest a figure may be, as width / height (a legend that would pass it goes below)
DECADE_STRIDES = (1, 2, 5, 10, 20, 50, 100, 200, 500)  # decades between major ticks of a log axis
MAJOR_TICKS = 6  # at most this many major ticks on a log axis

GRAD_LABEL = r"$\|\partial L/\partial s_t\|$"
LOG10_GRAD_LABEL = r"$\log_{10}\|\partial L/\partial s_t\|$"
DECAY_LABEL = "decay rate of " + GRAD_LABEL + "\n(nats per step back)"


def colour(key) -> str:
    """The colour of an activation, cell or normalization (grey for anything else)."""
    return PALETTE.get(key, OTHER_COLOUR)


def shades(base: str, n: int) -> list[tuple]:
    """n shades of one colour, light to dark (for an ordered variable such as the spectral radius)."""
    rgb = np.array(to_rgb(base))
    out = []
    for p in np.linspace(0.0, 1.0, n) if n > 1 else [0.6]:
        mixed = rgb + (1 - rgb) * 0.7 * (1 - 2 * p) if p < 0.5 else rgb * (1 - 0.6 * (p - 0.5))
        out.append(tuple(np.clip(mixed, 0, 1)))
    return out


def greys(n: int) -> list[tuple]:
    """n greys, light to dark."""
    return [tuple(np.full(3, g)) for g in np.linspace(0.65, 0.1, n)] if n > 1 else [(0.2, 0.2, 0.2)]


def _band(ax, x, stats: pd.DataFrame, label: str, **style):
    """The median as a line and the interquartile range as a band (drawn only where it has width)."""
    (line,) = ax.plot(x, stats["median"].to_numpy(), label=label, **style)
    if (stats["q75"] > stats["q25"]).any():
        ax.fill_between(x, stats["q25"].to_numpy(), stats["q75"].to_numpy(), color=line.get_color(), alpha=0.2, linewidth=0)
    return line


def _errorbars(ax, x, stats: pd.DataFrame, label: str, color, **style):
    """The median as a line with markers, the interquartile range as error bars."""
    x, median = np.asarray(x, dtype=float), stats["median"].to_numpy()
    ax.plot(x, median, color=color, label=label, markersize=style.pop("markersize", 4), **style)
    ax.errorbar(x, median, yerr=[median - stats["q25"].to_numpy(), stats["q75"].to_numpy() - median], fmt="none",
                ecolor=color, capsize=2, linewidth=1)


def _grid(n_rows: int, n_cols: int, fig: Figure | None = None, **kwargs):
    """`fig` (a new Figure by default) sized to n_rows x n_cols panels, with constrained layout, and its axes."""
    fig = Figure() if fig is None else fig
    fig.set_size_inches(PANEL[0] * n_cols + 0.4, PANEL[1] * n_rows + 0.4)
    fig.set_layout_engine("constrained")
    return fig, fig.subplots(n_rows, n_cols, squeeze=False, **kwargs)


def _styles(frame: pd.DataFrame) -> dict:
    """(colour key, label) -> line style: the styles cycle over the labels of one colour, the same in every panel."""
    styles = {}
    for key in ordered(frame["colour"]):
        for k, label in enumerate(sorted(frame.loc[frame["colour"] == key, "label"].unique(), key=str)):
            styles[key, label] = LINESTYLES[k % len(LINESTYLES)]
    return styles


def _line(frame: pd.DataFrame, key, label) -> pd.DataFrame:
    """The rows of one line of `_styles`."""
    return frame[(frame["colour"] == key) & (frame["label"] == label)]


def _lines(frame: pd.DataFrame, styles: dict):
    """(colour key, label, line style, rows) for each line of `styles` that has rows in frame."""
    for (key, label), style in styles.items():
        rows = _line(frame, key, label)
        if len(rows):
            yield key, label, style, rows


def _panel_grid(frame: pd.DataFrame, max_cols: int, fig: Figure | None, sharey) -> tuple:
    """One panel per value of frame["panel"] (natural order), at most max_cols a row: (fig, axes, panels),
    panels a list of (ax, value, the value's rows)."""
    values = sorted(frame["panel"].unique(), key=natural_key)
    n_cols = min(max_cols, len(values))
    fig, axes = _grid(math.ceil(len(values) / n_cols), n_cols, fig, sharey=sharey)
    return fig, axes, [(ax, value, frame[frame["panel"] == value]) for ax, value in zip(axes.flat, values)]


def _wrapped(n_panels: int, fig: Figure | None, max_cols: int = MAX_COLS, **kwargs) -> tuple:
    """n_panels panels in rows of at most max_cols: (fig, the grid of axes, the first n_panels axes); the rest hidden."""
    n_cols = max(1, min(max_cols, n_panels))
    fig, axes = _grid(math.ceil(n_panels / n_cols) if n_panels else 1, n_cols, fig, **kwargs)
    _hide_unused(axes, n_panels)
    return fig, axes, list(axes.flat[:n_panels])


def _hide_unused(axes, used: int) -> None:
    for ax in axes.flat[used:]:
        ax.set_visible(False)


def legend(fig, axes=None, handles=None, labels=None, extra=()):
    """One legend for the whole figure, outside the axes: on the right (the figure widens to make room), or below
    when that would make the figure wider than MAX_ASPECT (it grows taller instead).

    Without `handles`, the entries of every axis, each label once (labels starting with '_' and `frames.ALL_RUNS`,
    which say nothing, are skipped), then the (handle, label) pairs in `extra`. A handle may be a tuple of artists
    (drawn side by side: one per colour). No legend when no entry is left.
    """
    if handles is None:
        found = {}
        for ax in np.ravel(axes if axes is not None else fig.axes):
            for handle, label in zip(*ax.get_legend_handles_labels()):
                found.setdefault(label, handle)
        found.update({label: handle for handle, label in extra})
        found.pop(frames.ALL_RUNS, None)
        labels, handles = list(found), list(found.values())
    if not handles:
        return None
    style = dict(fontsize="small", frameon=False, handler_map={tuple: HandlerTuple(ndivide=None, pad=0)},
                 handlelength=2.0 * min(3, max(_width(h) for h in handles)))
    width, height = fig.get_size_inches()
    wide = width + 0.8 + 0.062 * max(len(label) for label in labels) + 0.25 * max(_width(h) - 1 for h in handles)
    if wide / height <= MAX_ASPECT:
        fig.set_size_inches(wide, height)
        return fig.legend(handles, labels, loc="outside right upper", **style)
    columns = max(1, int(width // (1.2 + 0.062 * max(len(label) for label in labels))))
    fig.set_size_inches(width, height + 0.25 * math.ceil(len(labels) / columns) + 0.2)
    return fig.legend(handles, labels, loc="outside lower center", ncols=columns, **style)


def _width(handle) -> int:
    return len(handle) if isinstance(handle, tuple) else 1


def _drawn(draw):
    """A figure function whose figure's log axes are finished (`finish_log_axes`) once everything is drawn."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs) -> Figure:
        fig = draw(*args, **kwargs)
        finish_log_axes(fig)
        return fig

    return wrapper


class DecadeLocator(LogLocator):
    """Major ticks of a base-10 log axis at 10^k, k a multiple of the smallest stride of DECADE_STRIDES that keeps
    at most `numticks` in view (so 10^-10, 10^0, 10^10, never 10^-6, 10^12, 10^30); minor=True: every decade
    between them, or 2..9 x 10^k when the stride is 1."""

    def __init__(self, numticks: int = MAJOR_TICKS, minor: bool = False):
        super().__init__(base=10.0, numticks=numticks)
        self.minor = minor

    @staticmethod
    def stride(low: float, high: float, numticks: int = MAJOR_TICKS) -> int:
        """The decades between major ticks for exponents low..high."""
        for stride in DECADE_STRIDES:
            if math.floor(high / stride) - math.ceil(low / stride) + 1 <= numticks:
                return stride
        return DECADE_STRIDES[-1]

    def tick_values(self, vmin, vmax):
        vmin, vmax = sorted((vmin, vmax))
        if not (vmax > 0 and np.isfinite(vmax)):
            return np.array([])
        vmin = vmin if vmin > 0 and np.isfinite(vmin) else vmax / 1e3
        low, high = math.log10(vmin), math.log10(vmax)
        stride = self.stride(low, high, self.numticks)
        exponents = np.arange((math.floor(low / stride) - 1) * stride, (math.ceil(high / stride) + 1) * stride + 1, stride)
        if not self.minor:
            return 10.0 ** exponents.astype(float)
        if stride > 1:
            decades = np.arange(exponents[0], exponents[-1] + 1)
            return 10.0 ** decades[decades % stride != 0].astype(float) if len(decades) <= 60 else np.array([])
        return np.array([m * 10.0 ** e for e in exponents for m in range(2, 10)])

    def set_params(self, **kwargs):
        self.minor = kwargs.pop("minor", getattr(self, "minor", False))
        super().set_params(**kwargs)


def _at_least_one_decade(ax, axis: str = "y") -> None:
    """Widen a log axis whose view holds no power of ten to the nearest one (else it would carry no major label)."""
    low, high = sorted(ax.get_ylim() if axis == "y" else ax.get_xlim())
    if not (low > 0) or math.floor(math.log10(high)) >= math.ceil(math.log10(low)):
        return
    below, above = 10.0 ** math.floor(math.log10(low)), 10.0 ** math.ceil(math.log10(high))
    low, high = (below, high) if math.log10(low / below) < math.log10(above / high) else (low, above)
    (ax.set_ylim if axis == "y" else ax.set_xlim)(low, high)


def finish_log_axes(fig: Figure) -> None:
    """Every log axis of the figure: at least one power of ten in view (`_at_least_one_decade`)."""
    for ax in fig.axes:
        for axis in ("x", "y"):
            if (ax.get_yscale() if axis == "y" else ax.get_xscale()) == "log" and ax.get_visible():
                _at_least_one_decade(ax, axis)


class _PlainLogFormatter(LogFormatterSciNotation):
    """Log-axis labels as plain numbers (0.2, 1, 50) when the axis spans 1e-4..1e5, else as powers of 10."""

    def __call__(self, x, pos=None):
        label = super().__call__(x, pos)
        low, high = sorted(self.axis.get_view_interval()) if self.axis is not None else (x, x)
        return f"{x:g}" if label and low >= 1e-4 and high < 1e5 else label


def _log_y(ax) -> None:
    """A logarithmic y axis with major ticks at round decades (`DecadeLocator`), labelled in plain numbers where they
    stay short; over less than a decade some minor ticks are labelled too (2, 5)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(DecadeLocator())
    ax.yaxis.set_minor_locator(DecadeLocator(minor=True))
    ax.yaxis.set_major_formatter(_PlainLogFormatter())
    ax.yaxis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))


def _log_ticks(ax, values) -> None:
    """A logarithmic x axis with major ticks at round decades and, up to 8 grid values (a sweep's grid), minor ticks
    labelled in plain numbers at each of them."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(DecadeLocator())
    ax.xaxis.set_major_formatter(_PlainLogFormatter())
    ticks = np.unique(np.round(np.asarray(values, dtype=float), 3))
    ticks = ticks[np.isfinite(ticks) & (ticks > 0)]
    if 0 < len(ticks) <= 8:
        labelled = _spaced_labels(ticks)
        ax.xaxis.set_minor_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, pos: f"{x:g}" if np.isclose(labelled, x).any() else ""))
    else:
        ax.xaxis.set_minor_locator(DecadeLocator(minor=True))
        ax.xaxis.set_minor_formatter(NullFormatter())


LABEL_RATIO = 1.2  # on a log axis, grid values closer than this factor to a labelled one stay ticks without a label


def _spaced_labels(ticks: np.ndarray) -> np.ndarray:
    """The sorted grid values to label on a log axis: each at least LABEL_RATIO times the last labelled one, so
    that neighbours such as k = 16, 17, 18 do not print over each other (the largest is always labelled)."""
    labelled = []
    for tick in sorted(ticks, reverse=True):
        if not labelled or labelled[-1] / tick >= LABEL_RATIO:
            labelled.append(tick)
    return np.asarray(labelled)


def _on_grid(frame: pd.DataFrame, column: str, grid) -> pd.DataFrame:
    """The rows of one line with a row of NaN for each grid value inside its range that it lacks, so the line
    breaks there instead of joining the points around it."""
    present = frame[column].dropna()
    if present.empty:
        return frame
    inside = [g for g in grid if present.min() < g < present.max() and not np.isclose(present, g).any()]
    if not inside:
        return frame
    gaps = pd.DataFrame({column: inside}).reindex(columns=frame.columns)
    gaps[column] = inside
    return pd.concat([frame, gaps], ignore_index=True).sort_values(column, kind="stable", ignore_index=True)


def _share_y(axes) -> None:
    """The y axis of these panels shared (one range), the first one's."""
    axes = [ax for ax in axes if ax.get_visible()]
    for ax in axes[1:]:
        ax.sharey(axes[0])


def natural_key(text) -> list:
    """Sort key that orders the numbers inside a text by value: 'T=8' before 'T=16'."""
    return [(0, float(part), "") if k % 2 else (1, 0.0, part) for k, part in enumerate(re.split(r"(\d+(?:\.\d+)?)", str(text)))]


def _radius_name(rho: float, measured: float) -> str:
    return r"$\rho$ = " + (f"{rho:g}" if not math.isnan(rho) else f"{measured:.2g} (init's own scale)")


def _radius_handles(grid: pd.DataFrame, linewidth: float, activations: list) -> tuple[list, list]:
    """Legend entries for the shades of the spectral radii of `frames.radius_grid`: per radius, a segment in its
    shade of each activation's colour, as the panels draw it."""
    tones = [shades(colour(act), len(grid)) for act in activations]
    handles = [tuple(Line2D([], [], color=tone[i], linewidth=linewidth) for tone in tones) for i in range(len(grid))]
    return handles, [_radius_name(rho, measured) for rho, measured in grid.itertuples(index=False)]


# 1. gradient norm through time at initialization

@_drawn
def grad_through_time(curves: pd.DataFrame, grid: pd.DataFrame, fig: Figure | None = None) -> Figure:
    """||dL/ds_t|| (log scale) against the distance T - t from the loss, at the first recorded step of each run.

    curves: `frames.through_time_curves`: columns model.init, model.activation, model.spectral_radius (the grid
    value, NaN for the init's own scale), measured_radius, curve (ds_norm, anchored_bound, anchored_rho), distance
    and median, q25, q75 over runs.
    grid: `frames.radius_grid`: model.spectral_radius (every grid value, in order) and measured.
    One panel per init (rows) x activation (columns); a solid line per spectral radius (a shade of the
    activation's colour, darker for larger rho) with the interquartile band; dotted, the bound anchored at the
    loss step, ||dL/ds_T|| (gamma sigma_max)^(T-t); for linear also dash-dotted ||dL/ds_T|| rho^(T-t).
    """
    activations, inits = ordered(curves["model.activation"]), sorted(curves["model.init"].unique())
    fig, axes = _grid(len(inits), len(activations), fig, sharex=True, sharey=True)
    for i, init in enumerate(inits):
        for j, act in enumerate(activations):
            ax = axes[i, j]
            panel = curves[(curves["model.init"] == init) & (curves["model.activation"] == act)]
            for rho, tone in zip(grid["model.spectral_radius"], shades(colour(act), len(grid))):
                line = with_radius(panel, rho)
                if line.empty:
                    continue
                name = f"{act} {_radius_name(rho, line['measured_radius'].iloc[0])}"
                stats, bound, rate = (line[line["curve"] == c] for c in ("ds_norm", "anchored_bound", "anchored_rho"))
                _band(ax, stats["distance"].to_numpy(), stats, name, color=tone, linewidth=1.6)
                ax.plot(bound["distance"], bound["median"], color=tone, linestyle=":", linewidth=1, label=f"_bound {name}")
                if act == "linear":
                    ax.plot(rate["distance"], rate["median"], color=tone, linestyle="-.", linewidth=1, label=f"_rho {name}")
            _log_y(ax)
            ax.set_title(f"{act}, {init} init", fontsize="medium")
            if i == len(inits) - 1:
                ax.set_xlabel("distance from the loss T − t (steps)")
            if j == 0:
                ax.set_ylabel(GRAD_LABEL)
    handles, names = _radius_handles(grid, 1.6, activations)
    handles += [Line2D([], [], color=OTHER_COLOUR, linestyle=":"), Line2D([], [], color=OTHER_COLOUR, linestyle="-.")]
    labels = [f"measured, {n}" for n in names]
    labels += [r"bound $\|\partial L/\partial s_T\|(\gamma\sigma_{max})^{T-t}$", r"linear: $\|\partial L/\partial s_T\|\rho^{T-t}$"]
    legend(fig, handles=handles, labels=labels)
    return fig


# 2. decay rate against spectral radius and Lyapunov exponent

@_drawn
def decay_rate_vs_radius(curves: pd.DataFrame, runs: pd.DataFrame, fig: Figure | None = None) -> Figure:
    """Measured decay rate of ||dL/ds_t|| against the spectral radius, with the theory log(gamma rho).

    curves: `frames.decay_curves`: per model.activation, model.init and model.spectral_radius (the grid value),
    median, q25, q75 of grad/decay_rate (slope of log ||dL/ds_t|| per step back) and radius (median measured rho).
    runs: `frames.decay_runs`, one row per run with model.activation, model.init, spectral/radius, grad/decay_rate
    and lyap/top.
    One panel per activation: per init (marker) and grid value, the median decay rate at the median measured rho,
    the error bar the interquartile range; dashed: log(gamma rho) over the measured range. Last panel: every
    run's decay rate against its top Lyapunov exponent, with the line decay = exponent.
    """
    activations, inits = ordered(runs["model.activation"]), sorted(runs["model.init"].unique())
    fig, grid, panels = _wrapped(len(activations) + 1, fig, sharey=True)
    radii = sorted(runs["model.spectral_radius"].dropna().unique())  # the sweep's grid: a line breaks where it lacks one
    for ax, act in zip(panels, activations):
        panel = runs[runs["model.activation"] == act]
        for init in inits:
            line = _on_grid(curves[(curves["model.activation"] == act) & (curves["model.init"] == init)], "model.spectral_radius", radii)
            _errorbars(ax, line["radius"].to_numpy(), line, f"{act}, {init} init", colour(act), marker=INIT_MARKERS.get(init, "x"),
                       linewidth=1, markersize=5)
        rho = np.geomspace(panel["spectral/radius"].min(), panel["spectral/radius"].max(), 100)
        ax.plot(rho, np.log(GAMMA.get(act, 1.0) * rho), color=colour(act), linestyle="--", linewidth=1, label=f"_theory {act}")
        ax.axhline(0, color="0.7", linewidth=0.8, zorder=0)
        _log_ticks(ax, panel["spectral/radius"])
        ax.set_title(rf"{act} ($\gamma$ = {GAMMA.get(act, 1.0):g})", fontsize="medium")
        ax.set_xlabel(r"spectral radius $\rho$ of W")
    for row in grid:
        row[0].set_ylabel(DECAY_LABEL)
    ax = panels[-1]
    for act in activations:
        group = runs[runs["model.activation"] == act].dropna(subset=["lyap/top"])
        ax.scatter(group["lyap/top"], group["grad/decay_rate"], color=colour(act), s=14, alpha=0.8, label=act)
    both = runs.dropna(subset=["lyap/top"])
    if len(both):
        span = np.array([min(both["lyap/top"].min(), both["grad/decay_rate"].min()), max(both["lyap/top"].max(), both["grad/decay_rate"].max())])
        ax.plot(span, span, color="black", linestyle="--", linewidth=1, label="_identity")
    ax.set_xlabel("top Lyapunov exponent (nats per step)")
    ax.set_ylabel(DECAY_LABEL)
    ax.set_title("decay rate vs Lyapunov exponent", fontsize="medium")
    handles = [Line2D([], [], color=colour(a), marker="o", linestyle="none") for a in activations]
    handles += [Line2D([], [], color=OTHER_COLOUR, marker=INIT_MARKERS.get(i, "x"), linestyle="-") for i in inits]
    handles += [Line2D([], [], color=OTHER_COLOUR, linestyle="--")]
    labels = activations + [f"{i} init (median, IQR)" for i in inits] + [r"theory $\log(\gamma\rho)$; right: decay = exponent"]
    legend(fig, handles=handles, labels=labels)
    return fig


# 3. heatmaps of the gradient through training

def _draw_heatmap(ax, frame: pd.DataFrame, vmin=None, vmax=None):
    """log10 ||dL/ds_t|| as an image, training step (rows) x t (columns); zero or non-finite norms left blank."""
    grid = frame.pivot(index="step", columns="t", values="ds_norm").sort_index()
    values = grid.to_numpy(dtype=float, copy=True)
    values[~(np.isfinite(values) & (values > 0))] = np.nan
    steps, ts = grid.index.to_numpy(), grid.columns.to_numpy()
    image = ax.imshow(np.log10(values), aspect="auto", origin="lower", interpolation="nearest", cmap="viridis",
                      vmin=vmin, vmax=vmax, extent=(ts[0] - 0.5, ts[-1] + 0.5, steps[0] - 0.5, steps[-1] + 0.5))
    ax.set_xlabel("time step t")
    ax.set_ylabel("training step")
    return image


@_drawn
def grad_heatmaps(panels: dict[str, pd.DataFrame], fig: Figure | None = None) -> Figure:
    """log10 ||dL/ds_t|| over training step (rows) x t (columns) for a few runs, on one colour scale.

    panels: panel title -> frame with columns step, t, ds_norm (one row per step and t), as in grad_norms.parquet.
    """
    values = pd.concat([f["ds_norm"] for f in panels.values()]).to_numpy(dtype=float)
    values = np.log10(values[np.isfinite(values) & (values > 0)])
    vmin, vmax = (values.min(), values.max()) if values.size else (None, None)
    fig, axes = _grid(1, len(panels), fig)
    fig.set_size_inches(fig.get_size_inches() + [1.0, 0.5])
    for ax, (title, frame) in zip(axes[0], panels.items()):
        image = _draw_heatmap(ax, frame, vmin, vmax)
        ax.set_title(title, fontsize="small")
    fig.colorbar(image, ax=list(axes[0]), label=LOG10_GRAD_LABEL)
    return fig


# 4. success against sequence length

@_drawn
def success_vs_length(solved: pd.DataFrame, fig: Figure | None = None) -> Figure:
    """Fraction of runs solved against the sequence length (the layout of Pascanu et al. 2013, Fig. 7).

    solved: `frames.success_rates` (diverged counts as not solved): columns panel (one panel per value, e.g.
    'tanh, gaussian init'), colour (a PALETTE key), label (one line per value, e.g. the clipping setting),
    task.seq_len and fraction. Line styles cycle over the labels of
    one colour.
    """
    styles = _styles(solved)
    fig, axes, panels = _panel_grid(solved, MAX_COLS, fig, sharey=True)
    lengths = sorted(solved["task.seq_len"].unique())  # the sweep's grid: a line breaks where it lacks one
    for ax, value, part in panels:
        for key, label, style, rate in _lines(part, styles):
            rate = _on_grid(rate, "task.seq_len", lengths)
            ax.plot(rate["task.seq_len"].to_numpy(), rate["fraction"].to_numpy(), color=colour(key), linestyle=style, marker="o",
                    markersize=4, label=label)
        ax.set_title(str(value), fontsize="medium")
        _log_ticks(ax, part["task.seq_len"])
        ax.set_xlabel("sequence length T (steps)")
        ax.set_ylim(-0.05, 1.05)
    for ax in axes[:, 0]:
        ax.set_ylabel("fraction of runs solved")
    _hide_unused(axes, len(panels))
    legend(fig, axes)
    return fig


# 5 and 9. learning curves against a baseline

@_drawn
def learning_curves(curves: pd.DataFrame, baselines: pd.DataFrame, ylabel: str, *, baseline_scale: float = 1.0,
                    baseline_label: str = "constant predictor", logy: bool = True, fig: Figure | None = None) -> Figure:
    """A metric over training, one line per configuration, with the memoryless baseline as a line.

    curves, baselines: `frames.learning_curves`. curves: columns panel (one panel per value, its title), colour (a
    PALETTE key), label (the configuration), step, median, q25, q75 (the band).
    baselines: panel, task.baseline (the constant predictor's loss, drawn as a dotted line
    times baseline_scale, e.g. 1/ln 2 for bits). Line styles cycle over the configurations of one colour. Panels
    share the y axis when every panel has the same baseline (the same task).
    """
    styles = _styles(curves)
    shared = bool(baselines["task.baseline"].nunique() <= 1)
    fig, axes, panels = _panel_grid(curves, MAX_COLS, fig, sharey=shared)
    groups: dict = {}  # baseline -> the panels that show it: one task's, sharing their y range
    for ax, value, part in panels:
        for key, label, style, stats in _lines(part, styles):
            _band(ax, stats["step"].to_numpy(), stats, label, color=colour(key), linestyle=style, linewidth=1.3)
        for base in baselines.loc[baselines["panel"] == value, "task.baseline"]:
            ax.axhline(base * baseline_scale, label=baseline_label, **BASELINE_STYLE)
            ax.annotate(f"{base * baseline_scale:.3g}", (1, base * baseline_scale), xycoords=("axes fraction", "data"),
                        xytext=(-2, 2), textcoords="offset points", ha="right", va="bottom", fontsize="x-small")
            groups.setdefault(round(float(base), 12), []).append(ax)
        if logy:
            _log_y(ax)
        ax.set_xlabel("training step")
        ax.set_title(value, fontsize="medium")
    if not shared:
        for group in groups.values():
            _share_y(group)
    for ax in axes[:, 0] if shared else axes.flat:
        ax.set_ylabel(ylabel)
    _hide_unused(axes, len(panels))
    legend(fig, axes)
    return fig


# 6. clipping

def _clip_order(mode: str) -> int:
    return list(CLIP_LINESTYLES).index(mode) if mode in CLIP_LINESTYLES else len(CLIP_LINESTYLES)


CLIP_OUTCOME_MARKERS = {"diverged": "o", "solved": "s"}  # frames.CLIP_OUTCOMES: filled circles, open squares


@_drawn
def clipping(curves: pd.DataFrame, diverged: pd.DataFrame, fig: Figure | None = None) -> Figure:
    """Pre-clip gradient norm over training, and the rates of divergence and success, per clipping mode and threshold.

    curves, diverged: `frames.clipping_curves`. curves: grad/norm (the global norm before clipping) per
    model.activation, clip.mode and clip.threshold (NaN without clipping): those columns, step, median, q25, q75.
    diverged: the fraction of runs diverged and solved (column outcome) per the same three columns, over every run.
    Left: one panel per activation (rows) x mode (columns), a line per threshold (greys, darker for larger
    thresholds) with its band, a norm threshold as a dashed line of the same grey. Right: the fractions of runs
    diverged (filled circles) and solved (open squares) against the threshold, a line per activation x mode x
    outcome; without clipping a horizontal line (solid: diverged, dash-dotted: solved). The norm
    panels share one y range; an activation's panels wrap into two rows beyond MAX_COLS.
    """
    activations = ordered(diverged["model.activation"])
    modes = sorted(diverged["clip.mode"].unique(), key=_clip_order)
    thresholds = sorted(diverged["clip.threshold"].dropna().unique())
    tone = dict(zip(thresholds, greys(len(thresholds))))
    per = len(modes) + 1  # an activation's panels: its modes, then its divergence
    n_cols = per if per <= MAX_COLS else math.ceil(per / 2)
    rows = math.ceil(per / n_cols)
    fig, axes = _grid(len(activations) * rows, n_cols, fig)
    panel = {(i, j): axes[i * rows + j // n_cols, j % n_cols] for i in range(len(activations)) for j in range(per)}
    for ax in set(axes.flat) - set(panel.values()):
        ax.set_visible(False)
    norms = []
    for i, act in enumerate(activations):
        for j, mode in enumerate(modes):
            ax = panel[i, j]
            norms.append(ax)
            part = curves[(curves["model.activation"] == act) & (curves["clip.mode"] == mode)]
            for threshold, stats in part.groupby("clip.threshold", dropna=False):
                grey = tone.get(threshold, (0.2, 0.2, 0.2))
                _band(ax, stats["step"].to_numpy(), stats, frames.clip_label(mode, threshold), color=grey, linewidth=1.2)
                if mode == "norm":
                    ax.axhline(threshold, color=grey, linestyle="--", linewidth=0.8, label=f"_threshold {threshold:g}")
            _log_y(ax)
            ax.set_title(f"{act}, {'no clipping' if mode == 'none' else mode + ' clipping'}", fontsize="medium")
            ax.set_xlabel("training step")
            if j % n_cols == 0:
                ax.set_ylabel("gradient norm before clipping")
        ax = panel[i, per - 1]
        part = diverged[diverged["model.activation"] == act]
        for kind, marker in CLIP_OUTCOME_MARKERS.items():
            of_kind, suffix = part[part["outcome"] == kind], "" if kind == "diverged" else f": {kind}"
            filled = {} if kind == "diverged" else {"markerfacecolor": "white"}
            for mode in modes:
                rate = of_kind[of_kind["clip.mode"] == mode]
                if mode == "none":  # one rate for the runs without clipping (NaN, no line, if this activation has none)
                    ax.axhline(rate["fraction"].iloc[0] if len(rate) else math.nan, color=colour(act),
                               linestyle="-" if kind == "diverged" else "-.", linewidth=1.2, label=f"{act}, no clipping{suffix}")
                    continue
                rate = _on_grid(rate.dropna(subset=["clip.threshold"]), "clip.threshold", thresholds)
                ax.plot(rate["clip.threshold"].to_numpy(), rate["fraction"].to_numpy(), color=colour(act),
                        linestyle=CLIP_LINESTYLES.get(mode, "-"), marker=marker, markersize=4, **filled,
                        label=f"{act}, {mode} clipping{suffix}")
        _log_ticks(ax, part["clip.threshold"].dropna())
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("clip threshold")
        ax.set_ylabel("fraction of runs")
        ax.set_title(f"{act}: diverged (filled), solved (open)", fontsize="medium")
    _share_y(norms)
    legend(fig, axes, extra=[(Line2D([], [], color="black", linestyle="--", linewidth=0.8), "norm threshold")] if "norm" in modes else ())
    return fig


# 7. truncated BPTT

TRUNCATION_PANELS = [("trunc_cosine", "cosine(truncated,\nfull gradient)"), ("solved", "fraction of runs solved"),
                     ("relative_loss", "final eval loss /\nconstant predictor's")]


@_drawn
def truncation(curves: pd.DataFrame, solved: pd.DataFrame, runs: pd.DataFrame, fig: Figure | None = None) -> Figure:
    """Truncated BPTT: gradient direction, success and final loss against the truncation length k.

    curves, solved: `frames.truncation_curves`. curves: trunc_cosine and relative_loss (final eval/loss /
    task.baseline) per task.seq_len, model.activation and bptt.truncation (NaN: full BPTT): those columns, curve,
    median, q25, q75. solved: the fraction of runs solved per the same three columns.
    runs: `frames.with_trunc_cosine`, one row per run (the panels, lines and ticks): task.seq_len, model.activation,
    bptt.truncation, task.dependency.
    One row of panels per sequence length: cosine vs k, fraction solved vs k, final eval loss / baseline vs k;
    a line per activation (median and interquartile range over runs; the fraction solved without spread);
    full BPTT as a dashed horizontal line; the dependency distance as a vertical dotted line; on the loss panel BEATS
    as a horizontal grey dotted line.
    """
    lengths = sorted(runs["task.seq_len"].unique())
    fig, axes = _grid(len(lengths), 3, fig, sharex=True, sharey="col")
    ks = sorted(runs["bptt.truncation"].dropna().unique())  # the sweep's grid: a line breaks where it lacks one
    for i, T in enumerate(lengths):
        part = runs[runs["task.seq_len"] == T]
        for j, (value, ylabel) in enumerate(TRUNCATION_PANELS):
            ax = axes[i, j]
            for act in ordered(part["model.activation"]):
                if value == "solved":  # a fraction of runs, no spread
                    lines = solved[(solved["task.seq_len"] == T) & (solved["model.activation"] == act)]
                    rate = _on_grid(lines.dropna(subset=["bptt.truncation"]), "bptt.truncation", ks)
                    ax.plot(rate["bptt.truncation"].to_numpy(), rate["fraction"].to_numpy(), color=colour(act), marker="o",
                            markersize=4, linewidth=1.2, label=act)
                    reference = lines.loc[lines["bptt.truncation"].isna(), "fraction"]
                else:
                    lines = curves[(curves["task.seq_len"] == T) & (curves["model.activation"] == act) & (curves["curve"] == value)]
                    stats = _on_grid(lines.dropna(subset=["bptt.truncation"]), "bptt.truncation", ks)
                    _errorbars(ax, stats["bptt.truncation"], stats, act, colour(act), marker="o", linewidth=1.2)
                    reference = lines.loc[lines["bptt.truncation"].isna(), "median"]
                if len(reference):  # none without a full-BPTT run (or one with a value)
                    ax.axhline(reference.iloc[0], color=colour(act), linestyle="--", linewidth=1, label=f"{act}, full BPTT")
            if value == "relative_loss":
                ax.axhline(frames.BEATS, label=BEATS_LABEL, **BEATS_STYLE)
            for d in sorted(part["task.dependency"].dropna().unique()):
                ax.axvline(d, label=f"dependency distance ({d:g} steps)", **BASELINE_STYLE)
            _log_ticks(ax, pd.concat([part["bptt.truncation"].dropna(), part["task.dependency"].dropna()]))
            ax.set_ylabel(ylabel)
            ax.set_title(f"T = {T}", fontsize="medium")
            if i == len(lengths) - 1:
                ax.set_xlabel("truncation k (steps)")
        axes[i, 1].set_ylim(-0.05, 1.05)
    legend(fig, axes)
    return fig


# 8. saturation

@_drawn
def saturation(curves: pd.DataFrame, fig: Figure | None = None) -> Figure:
    """Fraction of saturated units over training (act/saturation), one panel per question, one line per activation.

    curves: `frames.saturation_curves`: columns question, model.activation, step, median, q25, q75 (over the runs of
    an activation, the band) and panel_runs (the question's number of runs, in the title).
    """
    panels = sorted(curves["question"].unique())
    fig, axes, used = _wrapped(len(panels), fig, sharey=True)
    for ax, value in zip(used, panels):
        part = curves[curves["question"] == value]
        for act in ordered(part["model.activation"]):
            stats = part[part["model.activation"] == act]
            _band(ax, stats["step"].to_numpy(), stats, act, color=colour(act), linewidth=1.4)
        ax.set_title(f"question = {value} ({part['panel_runs'].iloc[0]} runs)", fontsize="medium")
        ax.set_xlabel("training step")
        ax.set_ylim(-0.02, 1.02)
    for row in axes:
        row[0].set_ylabel("fraction of units saturated\n(f'(a) < 1% of its max)")
    legend(fig, axes)
    return fig


# 10. remedies

RELATIVE_LOSS_LABEL = "final test loss /\nconstant predictor's"
CELL_STATE_LABEL = r"cell state $\|\partial L/\partial c_t\|$"
GRID_ROW = 0.22  # inches per remedy in the grid of runs solved


@_drawn
def remedies(curves: pd.DataFrame, solved: pd.DataFrame, fig: Figure | None = None) -> Figure:
    """Final test loss relative to the constant predictor's, and the runs solved, against T per remedy.

    curves, solved: `frames.remedy_curves`. curves: relative_loss (final eval/loss / task.baseline) per task.name,
    colour (a PALETTE key), label (the remedy; runs sharing it are seeds) and task.seq_len: those columns, median,
    q25, q75. solved: the runs solved (diverged counts as not solved) per the same columns, over every run: runs,
    count, fraction.
    One column per task. Top: the relative loss (log scale) against T, a line per remedy, the median with the
    interquartile range as error bars; grey, the constant predictor (ratio 1); dotted, BEATS (below it a run beats
    the constant predictor). Bottom: the fraction of runs
    solved, remedy (rows) x T (columns), each cell marked 'solved/runs'.
    Line styles cycle over the remedies of one colour; the grid lists the remedies in the legend's order.
    """
    tasks, styles = sorted(solved["task.name"].unique()), _styles(solved)
    fig, axes = _grid(2, len(tasks), fig, gridspec_kw={"height_ratios": [PANEL[1], GRID_ROW * len(styles) + 0.3]})
    fig.set_size_inches(fig.get_size_inches()[0], PANEL[1] + GRID_ROW * len(styles) + 1.2)
    for j, task in enumerate(tasks):
        ax = axes[0, j]
        lengths = sorted(solved.loc[solved["task.name"] == task, "task.seq_len"].unique())
        for key, label, style, stats in _lines(curves[curves["task.name"] == task], styles):
            stats = _on_grid(stats, "task.seq_len", lengths)
            _errorbars(ax, stats["task.seq_len"], stats, label, colour(key), linestyle=style, marker="o", linewidth=1.3)
        ax.axhline(1.0, label="constant predictor (ratio 1)", **RATIO_ONE_STYLE)
        ax.axhline(frames.BEATS, label=BEATS_LABEL, **BEATS_STYLE)
        _log_y(ax)
        part = solved[solved["task.name"] == task]
        _log_ticks(ax, part["task.seq_len"])
        ax.set_title(task, fontsize="medium")
        ax.set_xlabel("sequence length T (steps)")
        _solved_grid(axes[1, j], part, list(styles), labelled=j == 0)
    axes[0, 0].set_ylabel(RELATIVE_LOSS_LABEL)
    _share_y(axes[0])
    legend(fig, axes[0])
    return fig


def _solved_grid(ax, solved: pd.DataFrame, remedies: list[tuple], labelled: bool) -> None:
    """Fraction solved as an image, remedy (rows, in the given (colour key, label) order) x T (columns),
    each cell marked 'solved/runs'; cells without runs blank. solved: one task's `frames.outcomes`."""
    lengths = sorted(solved["task.seq_len"].unique())
    cells = solved.set_index(["label", "task.seq_len"])
    fraction = np.full((len(remedies), len(lengths)), np.nan)
    for i, (_, label) in enumerate(remedies):
        for j, T in enumerate(lengths):
            if (label, T) in cells.index:
                cell = cells.loc[(label, T)]
                fraction[i, j] = cell["fraction"]
                ax.text(j, i, f"{cell['count']:.0f}/{cell['runs']:.0f}", ha="center", va="center", fontsize="x-small",
                        color="white" if cell["fraction"] > 0.6 else "black")
    ax.imshow(fraction, aspect="auto", cmap="Greens", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(len(lengths)), [f"{T:g}" for T in lengths])
    ax.set_xlabel("sequence length T (steps)")
    ax.set_yticks(range(len(remedies)), [label for _, label in remedies] if labelled else [], fontsize="x-small")
    for tick, (key, _) in zip(ax.get_yticklabels(), remedies):
        tick.set_color(colour(key))
    ax.tick_params(length=0)
    ax.set_title("runs solved", fontsize="small")


@_drawn
def remedies_grad_through_time(curves: pd.DataFrame, lengths: pd.DataFrame, runs: pd.DataFrame,
                               fig: Figure | None = None) -> Figure:
    """||dL/ds_t|| at initialization (log scale) against the distance from the sequence's last step, a line per
    remedy, at each task's longest T; the LSTM's cell-state path ||dL/dc_t|| dashed.

    curves: `frames.remedy_init_curves`: columns task.name, colour, label, curve (ds_norm, dc_norm), distance,
    median, q25, q75 (over the runs of a remedy, the band).
    lengths: `frames.task_lengths`: one panel per task.name, titled with its task.seq_len (T) and, where it
    differs, its steps.
    runs: every run of the remedies (colour, label), with or without grad_norms: the line styles come from all
    of them, as in `remedies`.
    """
    styles = _styles(runs)
    fig, axes, used = _wrapped(len(lengths), fig, sharey=True)
    for ax, (task, T, steps) in zip(used, lengths.itertuples(index=False)):
        part = curves[curves["task.name"] == task]
        for (key, label), style in styles.items():
            line = _line(part, key, label)
            for value, name, linestyle in (("ds_norm", label, style), ("dc_norm", f"{label}, {CELL_STATE_LABEL}", "--")):
                stats = line[line["curve"] == value]
                if len(stats):
                    _band(ax, stats["distance"].to_numpy(), stats, name, color=colour(key), linestyle=linestyle, linewidth=1.4)
        ax.set_title(f"{task}, T = {T:g}" + (f" ({steps:g} steps)" if steps != T else ""), fontsize="medium")
        _log_y(ax)
        ax.set_xlabel("distance from the last step (steps)")
    for row in axes:
        row[0].set_ylabel(GRAD_LABEL + " at initialization")
    legend(fig, axes)
    return fig


# 11. float32 against float64

# float64 wide under float32 dashed with white gaps, so both show where they coincide
DTYPE_STYLES = {"float64": dict(linestyle="-", linewidth=2.8), "float32": dict(linestyle="--", linewidth=1.0, gapcolor="white")}
ZERO_TICK = 0.08  # height of the tick marking float32's first zero, as a fraction of the panel


@_drawn
def precision(curves: pd.DataFrame, grid: pd.DataFrame, fig: Figure | None = None) -> Figure:
    """float32 against float64: ||dL/ds_t|| at initialization (log scale) against the distance T - t from the loss.

    curves: `frames.precision_curves` (norms summed in float64, so a float32 median of 0 means its gradient
    underflowed): columns model.activation, model.spectral_radius, model.dtype, distance, median, q25, q75.
    grid: `frames.radius_grid` of the runs: model.spectral_radius (in order) and measured.
    One panel per activation; per spectral radius a shade of the activation's colour (darker for larger rho),
    float64 solid and wide, float32 dashed on top (white gaps), the median over runs with the interquartile band;
    zero and non-finite medians are left out of the lines. Where float32's median first is exactly 0
    (`frames.first_zero`), a tick at the bottom of the panel and an open circle on the float64 line (if positive there);
    where float32's median first falls below its epsilon times its largest (`frames.below_epsilon`), a tick at the top.
    Horizontal: float32's smallest subnormal (dotted) and smallest normal number (dash-dotted).
    """
    activations = ordered(curves["model.activation"])
    fig, axes = _grid(1, len(activations), fig, sharey=True)
    for ax, act in zip(axes[0], activations):
        panel = curves[curves["model.activation"] == act]
        for (rho, measured), tone in zip(grid.itertuples(index=False), shades(colour(act), len(grid))):
            line = with_radius(panel, rho)
            if line.empty:
                continue
            name = f"{act} {_radius_name(rho, measured)}"
            for dtype, style in DTYPE_STYLES.items():
                stats = line[line["model.dtype"] == dtype]
                if len(stats):
                    stats = stats.assign(**{q: frames.positive(stats[q]) for q in ("median", "q25", "q75")})
                    _band(ax, stats["distance"].to_numpy(), stats, f"{name}, {dtype}", color=tone, **style)
            float32 = line[line["model.dtype"] == "float32"].set_index("distance")["median"]
            lost = frames.below_epsilon(float32)
            if not math.isnan(lost):
                ax.axvline(lost, ymin=1 - ZERO_TICK, color=tone, linewidth=2, label=f"_float32 below epsilon {name}")
            zero = frames.first_zero(float32)
            if math.isnan(zero):
                continue
            ax.axvline(zero, ymax=ZERO_TICK, color=tone, linewidth=2, label=f"_float32 zero {name}")
            float64 = frames.positive(line[line["model.dtype"] == "float64"].set_index("distance")["median"])
            if pd.notna(float64.get(zero, math.nan)):
                ax.plot([zero], [float64[zero]], marker="o", markerfacecolor="none", color=tone, linestyle="none",
                        label=f"_float64 at float32 zero {name}")
        ax.axhline(FLOAT32.smallest_subnormal, color="black", linestyle=":", linewidth=1, label="_smallest subnormal")
        ax.axhline(FLOAT32.tiny, color="0.5", linestyle="-.", linewidth=1, label="_smallest normal")
        _log_y(ax)
        ax.set_title(act, fontsize="medium")
        ax.set_xlabel("distance from the loss T − t (steps)")
    axes[0, 0].set_ylabel(GRAD_LABEL + " at initialization")
    handles, labels = _radius_handles(grid, 1.4, activations)
    handles += [Line2D([], [], color=OTHER_COLOUR, **style) for style in DTYPE_STYLES.values()]
    handles += [Line2D([], [], color=OTHER_COLOUR, marker="|", markersize=9, markeredgewidth=2, linestyle="none"),
                Line2D([], [], color=OTHER_COLOUR, marker="|", markersize=9, markeredgewidth=2, linestyle="none"),
                Line2D([], [], color=OTHER_COLOUR, marker="o", markerfacecolor="none", linestyle="none"),
                Line2D([], [], color="black", linestyle=":"), Line2D([], [], color="0.5", linestyle="-.")]
    labels += list(DTYPE_STYLES) + [
        f"top: float32 below ε ({FLOAT32.eps:.2g}) × its largest", "bottom: float32 first exactly 0", "float64 at that distance", f"float32 smallest subnormal ({FLOAT32.smallest_subnormal:.2g})",
        f"float32 smallest normal ({FLOAT32.tiny:.2g})"]
    legend(fig, handles=handles, labels=labels)
    return fig
