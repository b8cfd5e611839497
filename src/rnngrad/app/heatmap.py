"""The per-run heatmap artifact: log10 ||dL/ds_t|| over training step x t.

Every run of a sweep draws this figure (figures/grad_heatmap.png), so it is built for speed: a small
`Figure` (no pyplot, no global state) at a low resolution, axes, titles and labels placed by hand rather
than by a layout engine (whose measuring of every tick label costs more than drawing them), few ticks.
Building the axes, their ticks and the colourbar costs as much again as drawing them, so a process keeps
one heatmap figure (`save_grad_heatmap`) and only gives it each run's data, limits and title.
`grad_heatmap` returns a figure of its own (for a notebook or a test). The report's figures, drawn once
per study, are `rnngrad.report.figures`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.ticker import MaxNLocator

SIZE = (6.0, 3.75)  # inches; at DPI, a 480 x 300 pixel image
DPI = 80
# [left, bottom, width, height] in figure fractions: room for the tick labels, the axis titles and the
# colourbar's labels (a layout engine would find the same at several times the cost)
HEATMAP_AXES = (0.14, 0.15, 0.64, 0.75)
COLOURBAR_AXES = (0.81, 0.15, 0.03, 0.75)
# where the axis titles sit, in their axes' fractions: clear of the widest tick labels at this size
XLABEL_AT, YLABEL_AT, COLOURBAR_LABEL_AT = (0.5, -0.13), (-0.15, 0.5), (4.2, 0.5)
TICKS = 4  # each tick label costs about a millisecond to lay out and draw
BLANK = "lightgrey"  # cells whose norm is zero or not finite: log10 is undefined there
PNG = {"compress_level": 1}  # zlib's fastest level: the small image's size hardly changes, its time halves


@dataclass
class _Heatmap:
    """A heatmap figure and the image a new run's data changes (its colourbar follows the image)."""

    figure: Figure
    image: AxesImage

    @classmethod
    def build(cls) -> _Heatmap:
        fig = Figure(figsize=SIZE, dpi=DPI)
        ax = fig.add_axes(HEATMAP_AXES)
        image = ax.imshow(np.zeros((1, 1)), origin="lower", aspect="auto", interpolation="nearest",
                          cmap=colormaps["viridis"].with_extremes(bad=BLANK))
        for axis in (ax.xaxis, ax.yaxis):  # t and steps are integers
            axis.set_major_locator(MaxNLocator(TICKS, integer=True))
        ax.set_xlabel("time step t")
        ax.set_ylabel("training step")
        ax.xaxis.set_label_coords(*XLABEL_AT)
        ax.yaxis.set_label_coords(*YLABEL_AT)
        colourbar = fig.colorbar(image, cax=fig.add_axes(COLOURBAR_AXES), label="log10 ||dL/ds_t||")
        colourbar.ax.yaxis.set_label_coords(*COLOURBAR_LABEL_AT)
        return cls(fig, image)

    def draw(self, steps: np.ndarray, ds_norm: np.ndarray, title: str | None) -> Figure:
        steps, norms = _checked(steps, ds_norm)  # before anything of the figure changes
        spacing = np.diff(steps)
        half = spacing[0] / 2 if spacing.size else 0.5
        valid = np.isfinite(norms) & (norms > 0)
        logs = np.ma.masked_array(np.log10(norms, where=valid, out=np.zeros_like(norms)), mask=~valid)
        lo, hi = (float(logs.min()), float(logs.max())) if valid.any() else (0.0, 1.0)
        self.image.set_data(logs)
        self.image.set_extent((0.5, norms.shape[1] + 0.5, steps[0] - half, steps[-1] + half))
        self.image.set_clim(lo, hi)  # the colourbar follows its mappable
        # y given: the title's place is fixed, not searched for above the tick labels at every draw
        self.image.axes.set_title(title or "", y=1.0, pad=4)
        return self.figure


def _checked(steps, ds_norm) -> tuple[np.ndarray, np.ndarray]:
    steps = np.asarray(steps)
    norms = np.asarray(ds_norm, dtype=np.float64)
    if norms.ndim != 2 or norms.shape[0] != steps.shape[0] or norms.shape[0] == 0 or norms.shape[1] == 0:
        raise ValueError(f"ds_norm must be (N, T) with N = len(steps) >= 1 and T >= 1, got {norms.shape} and {steps.shape}")
    spacing = np.diff(steps)
    if spacing.size and (spacing.min() <= 0 or spacing.min() != spacing.max()):
        raise ValueError(f"steps must increase evenly, got {steps.tolist()}")
    return steps, norms


def grad_heatmap(steps: np.ndarray, ds_norm: np.ndarray, title: str | None = None) -> Figure:
    """The heatmap of log10 ds_norm, first step at the bottom, t = 1..T left to right, with a colourbar.

    steps (N,): training steps, increasing and evenly spaced (the logger records every step);
    ds_norm (N, T): ||dL/ds_t|| at those steps. Each cell spans the interval around its step and t.
    Zero and non-finite norms are left blank; the colours span the finite logs' range.
    """
    return _Heatmap.build().draw(steps, ds_norm, title)


_process_heatmap: _Heatmap | None = None


def save_grad_heatmap(path: str | Path, steps: np.ndarray, ds_norm: np.ndarray, title: str | None = None) -> None:
    """Write grad_heatmap(steps, ds_norm, title) as a PNG to `path`, redrawing this process's one heatmap
    figure (a sweep worker runs many jobs: each pays only for the drawing)."""
    global _process_heatmap
    if _process_heatmap is None:
        _process_heatmap = _Heatmap.build()
    _process_heatmap.draw(steps, ds_norm, title).savefig(path, pil_kwargs=PNG)
