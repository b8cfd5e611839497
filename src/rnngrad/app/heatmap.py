"""The per-run heatmap artifact: log10 ||dL/ds_t|| over training step x t.

Every run of a sweep draws this figure (figures/grad_heatmap.png), so it is built for speed: a small
`Figure` (no pyplot, no global state) at a low resolution, axes placed by hand rather than by a
layout engine, few ticks. Even so it costs ~60 ms a run (~10 ms to build, ~50 ms to draw the text and
save; the hand-drawn Pillow image it replaces took ~6 ms), about 3% of a default run's ~2 s.
The report's figures, drawn once per study, are `rnngrad.report.figures`.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

SIZE = (6.0, 3.75)  # inches; at DPI, a 480 x 300 pixel image
DPI = 80
# [left, bottom, width, height] in figure fractions: room for the tick labels, the axis titles and the
# colourbar's labels (a layout engine would find the same at several times the cost)
HEATMAP_AXES = (0.14, 0.15, 0.64, 0.75)
COLOURBAR_AXES = (0.81, 0.15, 0.03, 0.75)
TICKS = 5
BLANK = "lightgrey"  # cells whose norm is zero or not finite: log10 is undefined there


def grad_heatmap(steps: np.ndarray, ds_norm: np.ndarray, title: str | None = None) -> Figure:
    """The heatmap of log10 ds_norm, first step at the bottom, t = 1..T left to right, with a colourbar.

    steps (N,): training steps, increasing and evenly spaced (the logger records every step);
    ds_norm (N, T): ||dL/ds_t|| at those steps. Each cell spans the interval around its step and t.
    Zero and non-finite norms are left blank; the colours span the finite logs' range.
    """
    steps = np.asarray(steps)
    norms = np.asarray(ds_norm, dtype=np.float64)
    if norms.ndim != 2 or norms.shape[0] != steps.shape[0] or norms.shape[0] == 0 or norms.shape[1] == 0:
        raise ValueError(f"ds_norm must be (N, T) with N = len(steps) >= 1 and T >= 1, got {norms.shape} and {steps.shape}")
    spacing = np.diff(steps)
    if spacing.size and (spacing.min() <= 0 or spacing.min() != spacing.max()):
        raise ValueError(f"steps must increase evenly, got {steps.tolist()}")
    half = spacing[0] / 2 if spacing.size else 0.5
    valid = np.isfinite(norms) & (norms > 0)
    logs = np.ma.masked_array(np.log10(norms, where=valid, out=np.zeros_like(norms)), mask=~valid)
    lo, hi = (float(logs.min()), float(logs.max())) if valid.any() else (0.0, 1.0)

    fig = Figure(figsize=SIZE, dpi=DPI)
    ax = fig.add_axes(HEATMAP_AXES)
    image = ax.imshow(logs, origin="lower", aspect="auto", interpolation="nearest", vmin=lo, vmax=hi,
                      cmap=colormaps["viridis"].with_extremes(bad=BLANK), extent=(0.5, norms.shape[1] + 0.5, steps[0] - half, steps[-1] + half))
    for axis in (ax.xaxis, ax.yaxis):  # t and steps are integers
        axis.set_major_locator(MaxNLocator(TICKS, integer=True))
    ax.set_xlabel("time step t")
    ax.set_ylabel("training step")
    if title:
        ax.set_title(title)
    fig.colorbar(image, cax=fig.add_axes(COLOURBAR_AXES), label="log10 ||dL/ds_t||")
    return fig
