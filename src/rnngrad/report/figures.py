"""Figure functions: each takes tidy frames and returns a matplotlib Figure; only scripts save files.

Conventions shared by every figure:
- one colour per activation (and per gated cell or normalization) from `PALETTE`, wherever colour
  stands for the model; where a figure needs a second ordered variable (spectral radius, clip
  threshold) it uses shades of that colour or greys;
- seeds (and any other runs of one configuration) are aggregated as the median with the
  interquartile range as a band or error bar;
- legends sit outside the axes.

Column names are those of `rnngrad.report.load` (params, tags and metric keys as logged).
"""

from __future__ import annotations

import math
import re

import matplotlib

matplotlib.use("Agg")  # figures are written to files, never shown
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb
from matplotlib.lines import Line2D
from matplotlib.ticker import LogFormatterSciNotation, NullFormatter

from rnngrad.core import GAMMA

# Okabe-Ito colours: activations, gated cells, normalizations
PALETTE = {
    "sigmoid": "#E69F00", "tanh": "#0072B2", "relu": "#009E73", "linear": "#CC79A7",
    "lstm": "#D55E00", "gru": "#56B4E9", "layer": "#999933", "batch": "#882255",
}
OTHER_COLOUR = "#555555"
BASELINE_STYLE = dict(color="black", linestyle=":", linewidth=1.2)
CLIP_LINESTYLES = {"none": "-", "norm": "--", "value": ":"}
LINESTYLES = ["-", "--", ":", "-."]  # cycled over the configurations that share a colour
INIT_MARKERS = {"orthogonal": "o", "gaussian": "s", "identity": "D", "sparse": "^", "xavier": "v", "he": "P"}
PANEL = (3.2, 2.6)  # inches per panel

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


def clip_label(mode: str, threshold: float) -> str:
    """'no clipping', 'norm clip 1', 'value clip 0.5'."""
    return "no clipping" if mode == "none" else f"{mode} clip {threshold:g}"


def colour_key(row) -> str:
    """What colour a run gets: its gated cell, else its normalization, else its activation."""
    cell, norm = row.get("model.cell", "rnn"), row.get("model.norm", "none")
    if isinstance(cell, str) and cell != "rnn":
        return cell
    if isinstance(norm, str) and norm != "none":
        return norm
    return row["model.activation"]


def quartiles(frame: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """Median, 25th and 75th percentile and count of `value` per group: columns by + median, q25, q75, n."""
    grouped = frame.dropna(subset=[value]).groupby(by, dropna=False, sort=True)[value]
    return pd.DataFrame({
        "median": grouped.median(), "q25": grouped.quantile(0.25), "q75": grouped.quantile(0.75), "n": grouped.size(),
    }).reset_index()


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


def _grid(n_rows: int, n_cols: int, **kwargs):
    return plt.subplots(n_rows, n_cols, figsize=(PANEL[0] * n_cols + 0.4, PANEL[1] * n_rows + 0.4),
                        squeeze=False, layout="constrained", **kwargs)


def _styles(frame: pd.DataFrame) -> dict:
    """(colour key, label) -> line style: the styles cycle over the labels of one colour, the same in every panel."""
    styles = {}
    for key in ordered(frame["colour"]):
        for k, label in enumerate(sorted(frame.loc[frame["colour"] == key, "label"].unique(), key=str)):
            styles[key, label] = LINESTYLES[k % len(LINESTYLES)]
    return styles


def _hide_unused(axes, used: int) -> None:
    for ax in axes.flat[used:]:
        ax.set_visible(False)


def legend(fig, axes=None, handles=None, labels=None, extra=()):
    """One legend for the whole figure, outside the axes on the right; the figure widens to make room.

    Without `handles`, the entries of every axis, each label once (labels starting with '_' are skipped),
    then the (handle, label) pairs in `extra`.
    """
    if handles is None:
        found = {}
        for ax in np.ravel(axes if axes is not None else fig.axes):
            for handle, label in zip(*ax.get_legend_handles_labels()):
                found.setdefault(label, handle)
        found.update({label: handle for handle, label in extra})
        labels, handles = list(found), list(found.values())
    if not handles:
        return None
    width, height = fig.get_size_inches()
    fig.set_size_inches(width + 0.8 + 0.062 * max(len(label) for label in labels), height)
    return fig.legend(handles, labels, loc="outside right upper", fontsize="small", frameon=False)


class _PlainLogFormatter(LogFormatterSciNotation):
    """Log-axis labels as plain numbers (0.2, 1, 50) when the axis spans 1e-4..1e5, else as powers of 10."""

    def __call__(self, x, pos=None):
        label = super().__call__(x, pos)
        low, high = sorted(self.axis.get_view_interval()) if self.axis is not None else (x, x)
        return f"{x:g}" if label and low >= 1e-4 and high < 1e5 else label


def _log_y(ax) -> None:
    """A logarithmic y axis, labelled in plain numbers where they stay short (minor ticks too over a short range)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_PlainLogFormatter())
    ax.yaxis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _log_ticks(ax, values) -> None:
    """A logarithmic x axis with plain-number ticks at the given values (a sweep's grid)."""
    ax.set_xscale("log")
    ticks = np.unique(np.round(np.asarray(values, dtype=float), 3))
    ticks = ticks[np.isfinite(ticks) & (ticks > 0)]
    if 0 < len(ticks) <= 8:
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())


def ordered(values) -> list:
    """The distinct values, PALETTE keys first in PALETTE order (sigmoid, tanh, relu, linear, ...), then the rest sorted."""
    values = list(dict.fromkeys(v for v in values if v is not None and v == v))
    known = [k for k in PALETTE if k in values]
    return known + sorted((v for v in values if v not in PALETTE), key=str)


# 1. gradient norm through time at initialization

def at_initialization(grad_norms: pd.DataFrame) -> pd.DataFrame:
    """The rows of each run's first recorded training step, with distance = T - t (T: the run's last t)."""
    first = grad_norms[grad_norms.groupby("run_id")["step"].transform("min") == grad_norms["step"]]
    return first.assign(distance=first.groupby("run_id")["t"].transform("max") - first["t"])


def positive(norms: pd.Series) -> pd.Series:
    """Norms with zeros (underflow) and non-finite values (overflow) as NaN, so a log axis leaves them out."""
    return norms.where(np.isfinite(norms) & (norms > 0))


def _radius_name(rho: float, measured: float) -> str:
    return r"$\rho$ = " + (f"{rho:g}" if not math.isnan(rho) else f"{measured:.2g} (init's own scale)")


def radii(values) -> list[float]:
    """The distinct grid values of model.spectral_radius, ascending, NaN (the init's own scale) last."""
    return sorted(pd.unique(np.asarray(values, dtype=float)), key=lambda r: (math.isnan(r), r))


def with_radius(frame: pd.DataFrame, rho: float) -> pd.DataFrame:
    """The rows whose model.spectral_radius is rho (NaN matching NaN)."""
    return frame[frame["model.spectral_radius"].isna() if math.isnan(rho) else frame["model.spectral_radius"] == rho]


def grad_through_time(grad_norms: pd.DataFrame, runs: pd.DataFrame):
    """||dL/ds_t|| (log scale) against the distance T - t from the loss, at the first recorded step of each run.

    grad_norms: columns run_id, step, t (1..T), ds_norm, bound (the Pascanu bound (gamma sigma_max)^(T-t),
    NaN where not measured), as in grad_norms.parquet.
    runs: one row per run_id with model.activation, model.init, model.spectral_radius (the grid value, NaN
    for the init's own scale) and spectral/radius (the measured rho).
    One panel per init (rows) x activation (columns); a solid line per spectral radius (a shade of the
    activation's colour, darker for larger rho; median over runs with the interquartile band); dotted, the
    bound anchored at the loss step, ||dL/ds_T|| (gamma sigma_max)^(T-t); for linear also dash-dotted
    ||dL/ds_T|| rho^(T-t). Zero (underflow) and infinite (overflow) norms are left out.
    """
    data = at_initialization(grad_norms).merge(runs, on="run_id")
    at_loss = data["run_id"].map(data[data["distance"] == 0].set_index("run_id")["ds_norm"])
    data = data.assign(anchored_bound=data["bound"] * at_loss, anchored_rho=data["spectral/radius"] ** data["distance"] * at_loss,
                       ds_norm=positive(data["ds_norm"]))
    activations, inits = ordered(data["model.activation"]), sorted(data["model.init"].unique())
    grid = radii(data["model.spectral_radius"])
    fig, axes = _grid(len(inits), len(activations), sharex=True)
    for i, init in enumerate(inits):
        for j, act in enumerate(activations):
            ax = axes[i, j]
            panel = data[(data["model.init"] == init) & (data["model.activation"] == act)]
            for rho, tone in zip(grid, shades(colour(act), len(grid))):
                group = with_radius(panel, rho)
                if group.empty:
                    continue
                name = _radius_name(rho, group["spectral/radius"].median())
                stats = quartiles(group, ["distance"], "ds_norm")
                _band(ax, stats["distance"].to_numpy(), stats, f"{act} {name}", color=tone, linewidth=1.6)
                bound = quartiles(group, ["distance"], "anchored_bound")
                ax.plot(bound["distance"], bound["median"], color=tone, linestyle=":", linewidth=1, label=f"_bound {act} {name}")
                if act == "linear":
                    rate = quartiles(group, ["distance"], "anchored_rho")
                    ax.plot(rate["distance"], rate["median"], color=tone, linestyle="-.", linewidth=1, label=f"_rho {act} {name}")
            ax.set_yscale("log")
            ax.set_title(f"{act}, {init} init", fontsize="medium")
            if i == len(inits) - 1:
                ax.set_xlabel("distance from the loss T − t (steps)")
            if j == 0:
                ax.set_ylabel(GRAD_LABEL)
    grey = shades(OTHER_COLOUR, len(grid))
    names = [_radius_name(rho, data.loc[data["model.spectral_radius"].isna(), "spectral/radius"].median()) for rho in grid]
    handles = [Line2D([], [], color=tone, linewidth=1.6) for tone in grey]
    handles += [Line2D([], [], color=OTHER_COLOUR, linestyle=":"), Line2D([], [], color=OTHER_COLOUR, linestyle="-.")]
    names += [r"bound $\|\partial L/\partial s_T\|(\gamma\sigma_{max})^{T-t}$", r"linear: $\|\partial L/\partial s_T\|\rho^{T-t}$"]
    legend(fig, handles=handles, labels=[f"measured, {n}" if k < len(grid) else n for k, n in enumerate(names)])
    return fig


# 2. decay rate against spectral radius and Lyapunov exponent

def decay_rate_vs_radius(runs: pd.DataFrame):
    """Measured decay rate of ||dL/ds_t|| against the spectral radius, with the theory log(gamma rho).

    runs: one row per run with model.activation, model.init, model.spectral_radius (grid value, may be NaN),
    spectral/radius (measured rho), grad/decay_rate (slope of log ||dL/ds_t|| per step back) and lyap/top.
    One panel per activation: per init (marker) and grid value, the median decay rate over runs at the
    median measured rho, the error bar the interquartile range; dashed: log(gamma rho). Last panel: every
    run's decay rate against its top Lyapunov exponent, with the line decay = exponent.
    """
    data = runs.dropna(subset=["grad/decay_rate", "spectral/radius"])
    activations = ordered(data["model.activation"])
    inits = sorted(data["model.init"].unique())
    fig, axes = _grid(1, len(activations) + 1)
    for ax, act in zip(axes[0], activations):
        panel = data[data["model.activation"] == act]
        for init in inits:
            group = panel[panel["model.init"] == init]
            stats = quartiles(group, ["model.spectral_radius"], "grad/decay_rate")
            x = quartiles(group, ["model.spectral_radius"], "spectral/radius")["median"].to_numpy()
            _errorbars(ax, x, stats, f"{act}, {init} init", colour(act), marker=INIT_MARKERS.get(init, "x"), linewidth=1, markersize=5)
        rho = np.geomspace(panel["spectral/radius"].min(), panel["spectral/radius"].max(), 100)
        ax.plot(rho, np.log(GAMMA.get(act, 1.0) * rho), color=colour(act), linestyle="--", linewidth=1, label=f"_theory {act}")
        ax.axhline(0, color="0.7", linewidth=0.8, zorder=0)
        _log_ticks(ax, panel["spectral/radius"])
        ax.set_title(rf"{act} ($\gamma$ = {GAMMA.get(act, 1.0):g})", fontsize="medium")
        ax.set_xlabel(r"spectral radius $\rho$ of W")
    axes[0, 0].set_ylabel(DECAY_LABEL)
    ax = axes[0, -1]
    for act in activations:
        group = data[data["model.activation"] == act].dropna(subset=["lyap/top"])
        ax.scatter(group["lyap/top"], group["grad/decay_rate"], color=colour(act), s=14, alpha=0.8, label=act)
    both = data.dropna(subset=["lyap/top"])
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


def grad_heatmaps(frames: dict[str, pd.DataFrame]):
    """log10 ||dL/ds_t|| over training step (rows) x t (columns) for a few runs, on one colour scale.

    frames: panel title -> frame with columns step, t, ds_norm (one row per step and t), as in grad_norms.parquet.
    """
    values = pd.concat([f["ds_norm"] for f in frames.values()]).to_numpy(dtype=float)
    values = np.log10(values[np.isfinite(values) & (values > 0)])
    vmin, vmax = (values.min(), values.max()) if values.size else (None, None)
    fig, axes = _grid(1, len(frames))
    fig.set_size_inches(fig.get_size_inches() + [1.0, 0.5])
    for ax, (title, frame) in zip(axes[0], frames.items()):
        image = _draw_heatmap(ax, frame, vmin, vmax)
        ax.set_title(title, fontsize="small")
    fig.colorbar(image, ax=list(axes[0]), label=LOG10_GRAD_LABEL)
    return fig


# 4. success against sequence length

def success_vs_length(runs: pd.DataFrame):
    """Fraction of runs solved against the sequence length (the layout of Pascanu et al. 2013, Fig. 7).

    runs: one row per ended run with task.seq_len, outcome (solved/unsolved/diverged; diverged counts as not
    solved), panel (one panel per value, e.g. 'tanh, gaussian init'), label (one line per value, e.g. the
    clipping setting) and colour (a PALETTE key). Line styles cycle over the labels of one colour.
    """
    data = runs.assign(solved=(runs["outcome"] == "solved").astype(float))
    panels = sorted(data["panel"].unique(), key=natural_key)
    styles = _styles(data)
    n_cols = min(4, len(panels))
    fig, axes = _grid(math.ceil(len(panels) / n_cols), n_cols, sharey=True)
    for ax, value in zip(axes.flat, panels):
        part = data[data["panel"] == value]
        for (key, label), style in styles.items():
            group = part[(part["colour"] == key) & (part["label"] == label)]
            if len(group):
                rate = group.groupby("task.seq_len")["solved"].mean()
                ax.plot(rate.index.to_numpy(), rate.to_numpy(), color=colour(key), linestyle=style, marker="o", markersize=4, label=label)
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

def learning_curves(history: pd.DataFrame, runs: pd.DataFrame, *, ylabel: str, baseline_scale: float = 1.0,
                    baseline_label: str = "constant predictor", logy: bool = True):
    """A metric over training, one line per configuration, with the memoryless baseline as a line.

    history: columns run_id, step, value (one metric).
    runs: one row per run_id with label (the configuration: runs sharing it are aggregated, median and
    interquartile band), colour (a PALETTE key), task.baseline (the constant predictor's loss, drawn as a
    dotted line times baseline_scale, e.g. 1/ln 2 for bits) and optionally panel (one panel per value, its
    title). Line styles cycle over the configurations of one colour. Panels share the y axis when every run
    has the same baseline (the same task).
    """
    data = history.merge(runs, on="run_id")
    if "panel" not in data:
        data = data.assign(panel="")
    panels = sorted(data["panel"].unique(), key=natural_key)
    styles = _styles(data)
    n_cols = min(3, len(panels))
    shared = bool(runs["task.baseline"].nunique() <= 1)
    fig, axes = _grid(math.ceil(len(panels) / n_cols), n_cols, sharey=shared)
    for ax, value in zip(axes.flat, panels):
        part = data[data["panel"] == value]
        for (key, label), style in styles.items():
            group = part[(part["colour"] == key) & (part["label"] == label)]
            if len(group):
                stats = quartiles(group, ["step"], "value")
                _band(ax, stats["step"].to_numpy(), stats, label, color=colour(key), linestyle=style, linewidth=1.3)
        for base in sorted(part["task.baseline"].dropna().unique()):
            ax.axhline(base * baseline_scale, label=f"{baseline_label} ({base * baseline_scale:.3g})", **BASELINE_STYLE)
        if logy:
            _log_y(ax)
        ax.set_xlabel("training step")
        ax.set_title(value, fontsize="medium")
    for ax in axes[:, 0] if shared else axes.flat:
        ax.set_ylabel(ylabel)
    _hide_unused(axes, len(panels))
    legend(fig, axes)
    return fig


def natural_key(text) -> list:
    """Sort key that orders the numbers inside a text by value: 'T=8' before 'T=16'."""
    return [(0, float(part), "") if k % 2 else (1, 0.0, part) for k, part in enumerate(re.split(r"(\d+(?:\.\d+)?)", str(text)))]


# 6. clipping

def clipping(history: pd.DataFrame, runs: pd.DataFrame):
    """Pre-clip gradient norm over training, and the divergence rate, per clipping mode and threshold.

    history: columns run_id, step, value (grad/norm, the global norm before clipping).
    runs: one row per ended run with model.activation, clip.mode, clip.threshold, outcome.
    Left: one panel per activation (rows) x mode (columns), a line per threshold (greys, darker for larger
    thresholds; median and interquartile band), a norm threshold as a dashed line of the same grey. Right: the
    fraction of runs diverged against the threshold, a line per activation x mode; without clipping (the
    threshold unused) a horizontal line.
    """
    runs = runs.assign(**{"clip.threshold": runs["clip.threshold"].where(runs["clip.mode"] != "none")})
    data = history.merge(runs, on="run_id")
    activations = ordered(runs["model.activation"])
    modes = sorted(runs["clip.mode"].unique(), key=lambda m: list(CLIP_LINESTYLES).index(m) if m in CLIP_LINESTYLES else 9)
    fig, axes = _grid(len(activations), len(modes) + 1)
    thresholds = sorted(runs["clip.threshold"].dropna().unique())
    tone = dict(zip(thresholds, greys(len(thresholds))))
    for i, act in enumerate(activations):
        for j, mode in enumerate(modes):
            ax = axes[i, j]
            part = data[(data["model.activation"] == act) & (data["clip.mode"] == mode)]
            for threshold, group in part.groupby("clip.threshold", dropna=False):
                stats = quartiles(group, ["step"], "value")
                grey = tone.get(threshold, (0.2, 0.2, 0.2))
                _band(ax, stats["step"].to_numpy(), stats, clip_label(mode, threshold), color=grey, linewidth=1.2)
                if mode == "norm":
                    ax.axhline(threshold, color=grey, linestyle="--", linewidth=0.8, label=f"_threshold {threshold:g}")
            _log_y(ax)
            ax.set_title(f"{act}, {'no clipping' if mode == 'none' else mode + ' clipping'}", fontsize="medium")
            ax.set_xlabel("training step")
            if j == 0:
                ax.set_ylabel("gradient norm before clipping")
        ax = axes[i, -1]
        part = runs[runs["model.activation"] == act].assign(diverged=lambda f: (f["outcome"] == "diverged").astype(float))
        for mode in modes:
            group = part[part["clip.mode"] == mode]
            if mode == "none":
                ax.axhline(group["diverged"].mean(), color=colour(act), linestyle="-", linewidth=1.2, label=f"{act}, no clipping")
                continue
            rate = group.groupby("clip.threshold")["diverged"].mean()
            ax.plot(rate.index.to_numpy(), rate.to_numpy(), color=colour(act), linestyle=CLIP_LINESTYLES.get(mode, "-"),
                    marker="o", markersize=4, label=f"{act}, {mode} clipping")
        _log_ticks(ax, part["clip.threshold"].dropna())
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("clip threshold")
        ax.set_ylabel("fraction of runs diverged")
        ax.set_title(f"{act}: divergence", fontsize="medium")
    legend(fig, axes, extra=[(Line2D([], [], color="black", linestyle="--", linewidth=0.8), "norm threshold")] if "norm" in modes else ())
    return fig


# 7. truncated BPTT

def truncation(runs: pd.DataFrame):
    """Truncated BPTT: gradient direction, success and final loss against the truncation length k.

    runs: one row per ended run with model.activation, task.seq_len, bptt.truncation (NaN: full BPTT),
    trunc_cosine (the run's cosine between truncated and full gradient, a summary over training; NaN for
    full BPTT), outcome, eval/loss (final), task.baseline and task.dependency.
    One row of panels per sequence length: cosine vs k, fraction solved vs k, final eval loss / baseline vs k;
    a line per activation (median and interquartile range over runs; the fraction solved without spread);
    full BPTT as a dashed horizontal line; the dependency distance as a vertical dotted line.
    """
    data = runs.assign(solved=(runs["outcome"] == "solved").astype(float),
                       relative_loss=runs["eval/loss"] / runs["task.baseline"])
    lengths = sorted(data["task.seq_len"].unique())
    fig, axes = _grid(len(lengths), 3, sharex=True)
    columns = [("trunc_cosine", "cosine(truncated,\nfull gradient)"), ("solved", "fraction of runs solved"),
               ("relative_loss", "final eval loss /\nconstant predictor's")]
    for i, T in enumerate(lengths):
        part = data[data["task.seq_len"] == T]
        truncated, full = part[part["bptt.truncation"].notna()], part[part["bptt.truncation"].isna()]
        for j, (value, ylabel) in enumerate(columns):
            ax = axes[i, j]
            for act in ordered(part["model.activation"]):
                runs_k, runs_full = truncated[truncated["model.activation"] == act], full[full["model.activation"] == act]
                if value == "solved":  # a fraction of runs, no spread
                    rate = runs_k.groupby("bptt.truncation")["solved"].mean()
                    ax.plot(rate.index.to_numpy(), rate.to_numpy(), color=colour(act), marker="o", markersize=4, linewidth=1.2, label=act)
                    reference = runs_full["solved"].mean()
                else:
                    stats = quartiles(runs_k, ["bptt.truncation"], value)
                    _errorbars(ax, stats["bptt.truncation"], stats, act, colour(act), marker="o", linewidth=1.2)
                    reference = runs_full[value].median()
                if pd.notna(reference):  # NaN when there is no full-BPTT run (or it has no value)
                    ax.axhline(reference, color=colour(act), linestyle="--", linewidth=1, label=f"{act}, full BPTT")
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

def saturation(history: pd.DataFrame, runs: pd.DataFrame, panel: str = "question"):
    """Fraction of saturated units over training (act/saturation), one line per activation.

    history: columns run_id, step, value (act/saturation).
    runs: one row per run_id with model.activation and the `panel` column (one panel per value).
    Median over the runs of an activation with the interquartile band.
    """
    data = history.merge(runs, on="run_id")
    panels = sorted(data[panel].unique())
    fig, axes = _grid(1, len(panels), sharey=True)
    for ax, value in zip(axes[0], panels):
        part = data[data[panel] == value]
        for act in ordered(part["model.activation"]):
            stats = quartiles(part[part["model.activation"] == act], ["step"], "value")
            _band(ax, stats["step"].to_numpy(), stats, act, color=colour(act), linewidth=1.4)
        ax.set_title(f"{panel} = {value} ({part['run_id'].nunique()} runs)", fontsize="medium")
        ax.set_xlabel("training step")
        ax.set_ylim(-0.02, 1.02)
    axes[0, 0].set_ylabel("fraction of units saturated\n(f'(a) < 1% of its max)")
    legend(fig, axes)
    return fig


# 10. remedies

RELATIVE_LOSS_LABEL = "final test loss /\nconstant predictor's"
CELL_STATE_LABEL = r"cell state $\|\partial L/\partial c_t\|$"
GRID_ROW = 0.22  # inches per remedy in the grid of runs solved


def longest(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows at each task's longest sequence length (columns task.name, task.seq_len)."""
    return frame[frame["task.seq_len"] == frame.groupby("task.name")["task.seq_len"].transform("max")]


def remedies(runs: pd.DataFrame):
    """Final test loss relative to the constant predictor's, and the runs solved, against T per remedy.

    runs: one row per ended run with task.name, task.seq_len, label (the remedy; runs sharing it are seeds),
    colour (a PALETTE key), eval/loss (final), task.baseline and outcome (diverged counts as not solved).
    One column per task. Top: eval/loss / task.baseline (log scale) against T, a line per remedy, the median
    over its runs with the interquartile range as error bars; dotted, the constant predictor (ratio 1).
    Bottom: the fraction of runs solved, remedy (rows) x T (columns), each cell marked 'solved/runs'.
    Line styles cycle over the remedies of one colour; the grid lists the remedies in the legend's order.
    """
    data = runs.assign(relative_loss=runs["eval/loss"] / runs["task.baseline"], solved=(runs["outcome"] == "solved").astype(float))
    tasks, styles = sorted(data["task.name"].unique()), _styles(data)
    fig, axes = _grid(2, len(tasks), gridspec_kw={"height_ratios": [PANEL[1], GRID_ROW * len(styles) + 0.3]})
    fig.set_size_inches(fig.get_size_inches()[0], PANEL[1] + GRID_ROW * len(styles) + 1.2)
    for j, task in enumerate(tasks):
        part = data[data["task.name"] == task]
        ax = axes[0, j]
        for (key, label), style in styles.items():
            stats = quartiles(part[(part["colour"] == key) & (part["label"] == label)], ["task.seq_len"], "relative_loss")
            if len(stats):
                _errorbars(ax, stats["task.seq_len"], stats, label, colour(key), linestyle=style, marker="o", linewidth=1.3)
        ax.axhline(1.0, label="constant predictor (ratio 1)", **BASELINE_STYLE)
        _log_y(ax)
        _log_ticks(ax, part["task.seq_len"])
        ax.set_title(task, fontsize="medium")
        ax.set_xlabel("sequence length T (steps)")
        _solved_grid(axes[1, j], part, list(styles), labelled=j == 0)
    axes[0, 0].set_ylabel(RELATIVE_LOSS_LABEL)
    legend(fig, axes[0])
    return fig


def _solved_grid(ax, runs: pd.DataFrame, remedies: list[tuple], labelled: bool) -> None:
    """Fraction solved as an image, remedy (rows, in the given (colour key, label) order) x T (columns),
    each cell marked 'solved/runs'; cells without runs blank."""
    lengths = sorted(runs["task.seq_len"].unique())
    counts = runs.groupby(["label", "task.seq_len"])["solved"].agg(["sum", "size"])
    fraction = np.full((len(remedies), len(lengths)), np.nan)
    for i, (_, label) in enumerate(remedies):
        for j, T in enumerate(lengths):
            if (label, T) in counts.index:
                solved, n = counts.loc[(label, T)]
                fraction[i, j] = solved / n
                ax.text(j, i, f"{solved:.0f}/{n:.0f}", ha="center", va="center", fontsize="x-small",
                        color="white" if solved / n > 0.6 else "black")
    ax.imshow(fraction, aspect="auto", cmap="Greens", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(len(lengths)), [f"{T:g}" for T in lengths])
    ax.set_xlabel("sequence length T (steps)")
    ax.set_yticks(range(len(remedies)), [label for _, label in remedies] if labelled else [], fontsize="x-small")
    for tick, (key, _) in zip(ax.get_yticklabels(), remedies):
        tick.set_color(colour(key))
    ax.tick_params(length=0)
    ax.set_title("runs solved", fontsize="small")


def remedies_grad_through_time(grad_norms: pd.DataFrame, runs: pd.DataFrame):
    """||dL/ds_t|| at initialization (log scale) against the distance from the sequence's last step, a line per
    remedy, at each task's longest T; the LSTM's cell-state path ||dL/dc_t|| dashed.

    grad_norms: columns run_id, step, t (1..T), ds_norm and optionally dc_norm (||dL/dc_t||, NaN for cells
    without a cell state), as in grad_norms.parquet; each run's first recorded step is used.
    runs: one row per run with run_id, task.name, task.seq_len, label (the remedy) and colour (a PALETTE key).
    Pass every run of the remedies, with or without grad_norms: the line styles come from all of them, as in
    `remedies`. One panel per task at the longest T among its runs that have grad_norms (the title gives the
    sequence's length in steps where it differs from T, as for copy); median over the runs of a
    remedy with the interquartile band; where a remedy has dc_norm, a dashed line in its colour.
    Zero (underflow) and infinite (overflow) norms are left out.
    """
    styles = _styles(runs)
    data = longest(at_initialization(grad_norms).merge(runs, on="run_id"))
    data = data.assign(ds_norm=positive(data["ds_norm"]), dc_norm=positive(data["dc_norm"]) if "dc_norm" in data else np.nan)
    tasks = sorted(data["task.name"].unique())
    fig, axes = _grid(1, len(tasks))
    for ax, task in zip(axes[0], tasks):
        part = data[data["task.name"] == task]
        for (key, label), style in styles.items():
            group = part[(part["colour"] == key) & (part["label"] == label)]
            for value, name, linestyle in (("ds_norm", label, style), ("dc_norm", f"{label}, {CELL_STATE_LABEL}", "--")):
                stats = quartiles(group, ["distance"], value)
                if len(stats):
                    _band(ax, stats["distance"].to_numpy(), stats, name, color=colour(key), linestyle=linestyle, linewidth=1.4)
        T, length = part["task.seq_len"].iloc[0], part["t"].max()
        ax.set_title(f"{task}, T = {T:g}" + (f" ({length:g} steps)" if length != T else ""), fontsize="medium")
        _log_y(ax)
        ax.set_xlabel("distance from the last step (steps)")
    axes[0, 0].set_ylabel(GRAD_LABEL + " at initialization")
    legend(fig, axes)
    return fig


# 11. float32 against float64

FLOAT32 = np.finfo(np.float32)
# float64 wide under float32 dashed with white gaps, so both show where they coincide
DTYPE_STYLES = {"float64": dict(linestyle="-", linewidth=2.8), "float32": dict(linestyle="--", linewidth=1.0, gapcolor="white")}
ZERO_TICK = 0.08  # height of the tick marking float32's first zero, as a fraction of the panel


def precision_curves(grad_norms: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """||dL/ds_t|| at initialization per activation, spectral radius, dtype and distance T - t from the loss: the
    median over runs with the quartiles and count, zeros kept (an underflow is data here).

    grad_norms: columns run_id, step, t (1..T), ds_norm; each run's first recorded step is used.
    runs: one row per run_id with model.activation, model.spectral_radius and model.dtype.
    Columns model.activation, model.spectral_radius, model.dtype, distance, median, q25, q75, n.
    """
    data = at_initialization(grad_norms).merge(runs, on="run_id")
    return quartiles(data, ["model.activation", "model.spectral_radius", "model.dtype", "distance"], "ds_norm")


def first_zero(norms: pd.Series) -> float:
    """The smallest distance (the index) at which the norm is exactly 0; NaN if it never is."""
    zero = norms.index[norms == 0]
    return float(zero.min()) if len(zero) else math.nan


def precision(grad_norms: pd.DataFrame, runs: pd.DataFrame):
    """float32 against float64: ||dL/ds_t|| at initialization (log scale) against the distance T - t from the loss.

    grad_norms: columns run_id, step, t (1..T), ds_norm, as in grad_norms.parquet (norms summed in float64, so a
    float32 run's 0 means its gradient underflowed); each run's first recorded step is used.
    runs: one row per run_id with model.activation, model.spectral_radius (grid value, NaN for the init's own
    scale), spectral/radius (the measured rho) and model.dtype (float64 or float32).
    One panel per activation; per spectral radius a shade of the activation's colour (darker for larger rho),
    float64 solid and wide, float32 dashed on top (white gaps), the median over runs with the interquartile band
    (`precision_curves`); zero and non-finite medians are left out of the lines. Where float32's median first is
    exactly 0 (`first_zero`), a tick at the bottom of the panel and an open circle on the float64 line (if positive there).
    Horizontal: float32's smallest subnormal (dotted) and smallest normal number (dash-dotted).
    """
    curves = precision_curves(grad_norms, runs)
    activations, grid = ordered(curves["model.activation"]), radii(curves["model.spectral_radius"])
    fig, axes = _grid(1, len(activations), sharey=True)
    for ax, act in zip(axes[0], activations):
        panel = curves[curves["model.activation"] == act]
        for rho, tone in zip(grid, shades(colour(act), len(grid))):
            group = with_radius(panel, rho)
            if group.empty:
                continue
            name = f"{act} {_radius_name(rho, with_radius(runs, rho)['spectral/radius'].median())}"
            for dtype, style in DTYPE_STYLES.items():
                stats = group[group["model.dtype"] == dtype]
                if len(stats):
                    stats = stats.assign(**{q: positive(stats[q]) for q in ("median", "q25", "q75")})
                    _band(ax, stats["distance"].to_numpy(), stats, f"{name}, {dtype}", color=tone, **style)
            zero = first_zero(group[group["model.dtype"] == "float32"].set_index("distance")["median"])
            if math.isnan(zero):
                continue
            ax.axvline(zero, ymax=ZERO_TICK, color=tone, linewidth=2, label=f"_float32 zero {name}")
            float64 = positive(group[group["model.dtype"] == "float64"].set_index("distance")["median"])
            if pd.notna(float64.get(zero, math.nan)):
                ax.plot([zero], [float64[zero]], marker="o", markerfacecolor="none", color=tone, linestyle="none",
                        label=f"_float64 at float32 zero {name}")
        ax.axhline(FLOAT32.smallest_subnormal, color="black", linestyle=":", linewidth=1, label="_smallest subnormal")
        ax.axhline(FLOAT32.tiny, color="0.5", linestyle="-.", linewidth=1, label="_smallest normal")
        _log_y(ax)
        ax.set_title(act, fontsize="medium")
        ax.set_xlabel("distance from the loss T − t (steps)")
    axes[0, 0].set_ylabel(GRAD_LABEL + " at initialization")
    names = [_radius_name(rho, with_radius(runs, rho)["spectral/radius"].median()) for rho in grid]
    handles = [Line2D([], [], color=tone, linewidth=1.4) for tone in shades(OTHER_COLOUR, len(grid))]
    handles += [Line2D([], [], color=OTHER_COLOUR, **style) for style in DTYPE_STYLES.values()]
    handles += [Line2D([], [], color=OTHER_COLOUR, marker="|", markersize=9, markeredgewidth=2, linestyle="none"),
                Line2D([], [], color=OTHER_COLOUR, marker="o", markerfacecolor="none", linestyle="none"),
                Line2D([], [], color="black", linestyle=":"), Line2D([], [], color="0.5", linestyle="-.")]
    labels = names + list(DTYPE_STYLES) + [
        "float32 first exactly 0", "float64 at that distance", f"float32 smallest subnormal ({FLOAT32.smallest_subnormal:.2g})",
        f"float32 smallest normal ({FLOAT32.tiny:.2g})"]
    legend(fig, handles=handles, labels=labels)
    return fig
