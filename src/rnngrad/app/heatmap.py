"""The per-run figures: the heatmap of log10 ||dL/ds_t|| over training step x t, and the norm
through time at the checkpoints, ||dL/ds_t|| against the distance from the loss T - t on a log axis.

Every run of a sweep draws these figures (figures/grad_heatmap.png, figures/grad_through_time.png), so
they are built for speed: a small `Figure` (no pyplot, no global state) at a low resolution, axes,
titles and labels placed by hand rather than by a layout engine (whose measuring of every tick label
costs more than drawing them), few ticks.
Building the axes, their ticks and the colourbar costs as much again as drawing them, so a process keeps
one figure of each kind (`save_grad_heatmap`, `save_grad_curves`) and only gives it each run's data,
limits and title. Drawing the text (tick labels, axis titles, legend) is most of what remains, and
most of it depends only on the run's T and steps: the process keeps the pixels of the figure drawn
without what depends on the data (the frame: everything but the image or lines, the value axis or
colourbar, and the title) for the last few T and steps it drew, and a run with the T and steps of one of
them (the seeds of a configuration, the configurations of a sweep that take turns on a worker) draws only
those over it (matplotlib's blitting: `copy_from_bbox`, `restore_region`, `draw_artist`).
`grad_heatmap` and `grad_curves` return a figure of their own (for a notebook or a test). The report's
figures, drawn once per study, are `rnngrad.report.figures`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage, imsave
from matplotlib.lines import Line2D
from matplotlib.ticker import LogLocator, MaxNLocator, NullLocator

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
CURVE_AXES = (0.14, 0.15, 0.64, 0.75)  # the curves' axes; the legend goes right of them
CURVE_COLOURS = colormaps["viridis"]  # early steps dark, late steps light, as in the heatmap's step axis
DECADES = 6  # at most this many decade ticks on the curves' log axis (every k-th decade beyond)
PNG = {"compress_level": 1}  # zlib's fastest level: the small image's size hardly changes, its time halves
FRAMES = 8  # frames a process keeps per figure: the configurations of a sweep take turns on a worker


def write_png(rgba: np.ndarray, path: str | Path) -> None:
    """Write an (H, W, 4) uint8 RGBA image as a PNG at zlib's fastest level (matplotlib's image writer)."""
    imsave(path, rgba, format="png", pil_kwargs=PNG)


@dataclass
class _Frame:
    """What a process's figure keeps between runs: the pixels of its frame for the last FRAMES limits it was
    drawn for, the most recently used last."""

    pixels: dict = field(default_factory=dict)

    def write(self, figure: Figure, limits: tuple, data: list[Artist], path: str | Path) -> None:
        """Write `figure` as a PNG to `path`: the frame (everything but the `data` artists, which must be
        in drawing order), kept from an earlier call for the same `limits`, and over it the `data` artists."""
        canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
        for artist in data:
            artist.set_animated(True)  # left out of canvas.draw(): the frame is everything else
        if limits in self.pixels:
            canvas.restore_region(self.pixels[limits])
            self.pixels[limits] = self.pixels.pop(limits)  # the most recently used last
        else:
            canvas.draw()
            self.pixels[limits] = canvas.copy_from_bbox(figure.bbox)
            while len(self.pixels) > FRAMES:
                del self.pixels[next(iter(self.pixels))]
        for artist in data:
            figure.draw_artist(artist)
        for artist in data:
            artist.set_animated(False)
        write_png(np.asarray(canvas.buffer_rgba()), path)


@dataclass
class _Heatmap:
    """A heatmap figure and the image a new run's data changes (its colourbar follows the image)."""

    figure: Figure
    image: AxesImage
    frame: _Frame = field(default_factory=_Frame)

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
        colourbar.locator = MaxNLocator(TICKS, integer=True)  # whole decades, few labels (drawn for every run)
        return cls(fig, image)

    def draw(self, steps: np.ndarray, ds_norm: np.ndarray, title: str | None) -> Figure:
        steps, norms = _checked(steps, ds_norm)  # before anything of the figure changes
        spacing = np.diff(steps)
        half = spacing[0] / 2 if spacing.size else 0.5
        valid = np.isfinite(norms) & (norms > 0)
        logs = np.ma.masked_array(np.log10(norms, where=valid, out=np.zeros_like(norms)), mask=~valid)
        lo, hi = _decades(logs[valid]) if valid.any() else (0.0, 1.0)
        self.image.set_data(logs)
        self.image.set_extent((0.5, norms.shape[1] + 0.5, steps[0] - half, steps[-1] + half))
        self.image.set_clim(lo, hi)  # the colourbar follows its mappable
        # y given: the title's place is fixed, not searched for above the tick labels at every draw
        self.image.axes.set_title(title or "", y=1.0, pad=4)
        return self.figure

    def save(self, path: str | Path, steps: np.ndarray, ds_norm: np.ndarray, title: str | None) -> None:
        ax = self.draw(steps, ds_norm, title).axes[0]
        # the axes' edges go over the image, as in a full drawing; the colourbar follows the run's range
        self.frame.write(self.figure, tuple(self.image.get_extent()),
                         [self.image, *ax.spines.values(), ax.title, self.figure.axes[1]], path)


def _decades(logs: np.ndarray) -> tuple[float, float]:
    """The whole decades around these log10 values (at least one): a colour scale or log axis that reads
    off at round values, and a frame the next run with the same range can reuse."""
    lo, hi = np.floor(logs.min()), np.ceil(logs.max())
    return float(lo), float(max(hi, lo + 1))


def _checked(steps, ds_norm, evenly: bool = True) -> tuple[np.ndarray, np.ndarray]:
    steps = np.asarray(steps)
    norms = np.asarray(ds_norm, dtype=np.float64)
    if norms.ndim != 2 or norms.shape[0] != steps.shape[0] or norms.shape[0] == 0 or norms.shape[1] == 0:
        raise ValueError(f"ds_norm must be (N, T) with N = len(steps) >= 1 and T >= 1, got {norms.shape} and {steps.shape}")
    spacing = np.diff(steps)
    if spacing.size and (spacing.min() <= 0 or (evenly and spacing.min() != spacing.max())):
        raise ValueError(f"steps must increase{' evenly' if evenly else ''}, got {steps.tolist()}")
    return steps, norms


def grad_heatmap(steps: np.ndarray, ds_norm: np.ndarray, title: str | None = None) -> Figure:
    """The heatmap of log10 ds_norm, first step at the bottom, t = 1..T left to right, with a colourbar.

    steps (N,): training steps, increasing and evenly spaced (the logger records every step);
    ds_norm (N, T): ||dL/ds_t|| at those steps. Each cell spans the interval around its step and t.
    Zero and non-finite norms are left blank; the colours span the whole decades around the finite logs.
    """
    return _Heatmap.build().draw(steps, ds_norm, title)



@dataclass
class _Curves:
    """A figure of norm-through-time curves and its lines (more are added as a run needs them)."""

    figure: Figure
    lines: list[Line2D]
    frame: _Frame = field(default_factory=_Frame)

    @classmethod
    def build(cls) -> _Curves:
        fig = Figure(figsize=SIZE, dpi=DPI)
        ax = fig.add_axes(CURVE_AXES)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, numticks=DECADES))  # powers of ten only
        ax.yaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_locator(MaxNLocator(TICKS, integer=True))
        ax.set_xlabel("distance from the loss T - t")
        ax.set_ylabel("||dL/ds_t||")
        ax.xaxis.set_label_coords(*XLABEL_AT)
        ax.yaxis.set_label_coords(*YLABEL_AT)
        return cls(fig, [])

    def draw(self, steps: np.ndarray, ds_norm: np.ndarray, title: str | None) -> Figure:
        steps, norms = _checked(steps, ds_norm, evenly=False)
        ax = self.figure.axes[0]
        while len(self.lines) < len(steps):
            self.lines.append(ax.plot([], [])[0])
        T = norms.shape[1]
        distance = np.arange(T - 1, -1, -1)  # column t - 1 holds s_t, at distance T - t
        valid = np.isfinite(norms) & (norms > 0)
        shown = np.where(valid, norms, np.nan)  # a gap, not a line, where the norm is undefined
        for k, line in enumerate(self.lines):
            line.set_visible(k < len(steps))
            if k < len(steps):
                line.set_data(distance, shown[k])
                line.set_color(CURVE_COLOURS(k / max(len(steps) - 1, 1) * 0.85))
                line.set_label(f"step {steps[k]}")
        lo, hi = _decades(np.log10(norms[valid])) if valid.any() else (0.0, 1.0)
        ax.set_ylim(10.0 ** lo, 10.0 ** hi)  # round decades at both ends: the range reads off the axis
        ax.set_xlim(0, max(T - 1, 1))
        ax.legend(handles=self.lines[: len(steps)], loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
                  fontsize="small")
        ax.set_title(title or "", y=1.0, pad=4)
        return self.figure

    def save(self, path: str | Path, steps: np.ndarray, ds_norm: np.ndarray, title: str | None) -> None:
        ax = self.draw(steps, ds_norm, title).axes[0]
        shown = self.lines[: len(steps)]
        # the legend names the steps: part of the frame; the value axis follows the run's range; in the
        # order of a full drawing (its ticks, the lines, the axes' edges over them)
        self.frame.write(self.figure, (ax.get_xlim(), tuple(line.get_label() for line in shown)),
                         [ax.yaxis, *shown, *ax.spines.values(), ax.title], path)


def grad_curves(steps: np.ndarray, ds_norm: np.ndarray, title: str | None = None) -> Figure:
    """||dL/ds_t|| against T - t (log y, decade ticks), one line per training step, a legend naming them.

    steps (N,): increasing training steps (the checkpoints); ds_norm (N, T): the norms at t = 1..T.
    Zero and non-finite norms are gaps in their line; the y range spans the finite norms' decades.
    """
    return _Curves.build().draw(steps, ds_norm, title)


_process_figures: dict[type, _Heatmap | _Curves] = {}


def _save(kind, path: str | Path, steps: np.ndarray, ds_norm: np.ndarray, title: str | None) -> None:
    """Redraw this process's one figure of `kind` (a sweep worker runs many jobs: each pays only for the
    drawing) and write it as a PNG to `path`."""
    if kind not in _process_figures:
        _process_figures[kind] = kind.build()
    _process_figures[kind].save(path, steps, ds_norm, title)


def save_grad_heatmap(path: str | Path, steps: np.ndarray, ds_norm: np.ndarray, title: str | None = None) -> None:
    """Write grad_heatmap(steps, ds_norm, title) as a PNG to `path`."""
    _save(_Heatmap, path, steps, ds_norm, title)


def save_grad_curves(path: str | Path, steps: np.ndarray, ds_norm: np.ndarray, title: str | None = None) -> None:
    """Write grad_curves(steps, ds_norm, title) as a PNG to `path`."""
    _save(_Curves, path, steps, ds_norm, title)
