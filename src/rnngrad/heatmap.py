"""The per-run heatmap artifact: log10 ||dL/ds_t|| over training step x t, drawn directly with Pillow.

Every run of a sweep writes this figure (figures/grad_heatmap.png), so it has to be cheap: a matplotlib
figure with axes, ticks and a colourbar costs about 100 ms to build and save, more than the rest of a
run's logging together, while this image (the same cells, viridis colours, tick labels at round values,
a labelled colourbar) costs a few milliseconds. The report's figures, drawn once per study, stay in
matplotlib (`rnngrad.report.figures`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps  # the colour table only: pyplot and its figure machinery are not imported
from PIL import Image, ImageDraw, ImageFont

PLOT_W, PLOT_H = 480, 300  # the cells' area, pixels
LEFT, RIGHT, TOP, BOTTOM = 78, 96, 30, 48  # margins: tick labels and axis titles; the colourbar on the right
BAR_W, BAR_GAP = 16, 14
FONT_SIZE = 13
# A palette image: PNG encodes one index per pixel in well under a millisecond, where an RGB image of
# the same size takes 20-30 ms (the encoder tries every row filter on three channels).
# Indices 0..239 are viridis from low to high; 240..255 are 16 greys from black to white, which carry
# the antialiased text and lines.
N_COLOURS, GREY = 240, 240
BLANK = GREY + 14  # light grey: cells whose norm is zero or not finite (log10 undefined)


def nice_ticks(lo: float, hi: float, count: int = 5) -> np.ndarray:
    """Round values in [lo, hi] about (hi - lo) / count apart (steps of 1, 2 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return np.array([lo]) if math.isfinite(lo) else np.array([])
    raw = (hi - lo) / count
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = np.arange(first, hi + step * 1e-9, step)
    return ticks[(ticks >= lo - 1e-9) & (ticks <= hi + 1e-9)]


def _label(value: float) -> str:
    return f"{value:.0f}" if abs(value - round(value)) < 1e-9 else f"{value:.3g}"


def _palette() -> list[int]:
    viridis = (colormaps["viridis"](np.linspace(0.0, 1.0, N_COLOURS))[:, :3] * 255).round().astype(np.uint8)
    greys = np.repeat(np.linspace(0, 255, 16).round().astype(np.uint8)[:, None], 3, axis=1)
    return np.concatenate([viridis, greys]).ravel().tolist()


def _vertical_text(text: str, font) -> Image.Image:
    """The text, black on white (mode L), turned to read bottom to top."""
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("L", (right - left + 2, bottom - top + 2), 255)
    ImageDraw.Draw(image).text((1 - left, 1 - top), text, fill=0, font=font)
    return image.rotate(90, expand=True, fillcolor=255)


def grad_heatmap_png(steps: np.ndarray, ds_norm: np.ndarray, path: str | Path, title: str | None = None) -> None:
    """Write the heatmap of log10 ds_norm to `path` (PNG).

    steps (N,) training steps, increasing; ds_norm (N, T): ||dL/ds_t|| at those steps, t = 1..T.
    Rows are drawn bottom (first step) to top (last step), t left to right; each cell spans the
    interval around its step and t. Zero and non-finite norms are left blank (light grey).
    """
    steps = np.asarray(steps)
    norms = np.asarray(ds_norm, dtype=np.float64)
    if norms.ndim != 2 or norms.shape[0] != steps.shape[0] or norms.shape[0] == 0 or norms.shape[1] == 0:
        raise ValueError(f"ds_norm must be (N, T) with N = len(steps) >= 1 and T >= 1, got {norms.shape} and {steps.shape}")
    n_steps, T = norms.shape
    valid = np.isfinite(norms) & (norms > 0)
    logs = np.zeros(norms.shape)
    np.log10(norms, out=logs, where=valid)
    vmin, vmax = (float(logs[valid].min()), float(logs[valid].max())) if valid.any() else (0.0, 1.0)
    span = vmax - vmin if vmax > vmin else 1.0
    cells = np.clip(np.floor((logs - vmin) / span * N_COLOURS), 0, N_COLOURS - 1).astype(np.uint8)
    cells[~valid] = BLANK

    # the decorations, black on white, antialiased
    width, height = LEFT + PLOT_W + RIGHT, TOP + PLOT_H + BOTTOM
    canvas = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=FONT_SIZE)
    bar_x = LEFT + PLOT_W + BAR_GAP
    draw.rectangle((LEFT - 1, TOP - 1, LEFT + PLOT_W, TOP + PLOT_H), outline=0)
    draw.rectangle((bar_x - 1, TOP - 1, bar_x + BAR_W, TOP + PLOT_H), outline=0)

    # x: cell j (t = j + 1) spans [t - 0.5, t + 0.5]; y: rows stacked bottom to top, ticks interpolated
    # between the rows' steps (they need not be evenly spaced)
    for t in nice_ticks(1, T, 5):
        x = LEFT + (t - 0.5) / T * PLOT_W
        draw.line((x, TOP + PLOT_H, x, TOP + PLOT_H + 4), fill=0)
        draw.text((x, TOP + PLOT_H + 6), _label(t), fill=0, font=font, anchor="mt")
    draw.text((LEFT + PLOT_W / 2, height - 6), "time step t", fill=0, font=font, anchor="mb")
    for step in nice_ticks(float(steps[0]), float(steps[-1]), 5):
        row = float(np.interp(step, steps, np.arange(n_steps)))
        y = TOP + PLOT_H - (row + 0.5) / n_steps * PLOT_H
        draw.line((LEFT - 4, y, LEFT - 1, y), fill=0)
        draw.text((LEFT - 6, y), _label(step), fill=0, font=font, anchor="rm")
    y_title = _vertical_text("training step", font)
    canvas.paste(y_title, (4, TOP + (PLOT_H - y_title.height) // 2))
    for value in nice_ticks(vmin, vmax, 4) if vmax > vmin else [vmin]:
        y = TOP + PLOT_H - (value - vmin) / span * PLOT_H if vmax > vmin else TOP + PLOT_H / 2
        draw.line((bar_x + BAR_W, y, bar_x + BAR_W + 3, y), fill=0)
        draw.text((bar_x + BAR_W + 5, y), _label(value), fill=0, font=font, anchor="lm")
    bar_title = _vertical_text("log10 ||dL/ds_t||", font)
    canvas.paste(bar_title, (width - bar_title.width - 4, TOP + (PLOT_H - bar_title.height) // 2))
    if title:
        draw.text((LEFT + PLOT_W / 2, 6), title, fill=0, font=font, anchor="mt")

    # one palette index per pixel: greys for the decorations, the cells (first step at the bottom,
    # nearest-neighbour scaling) and the colourbar (low at the bottom)
    index = GREY + (np.asarray(canvas) >> 4)
    rows = (np.arange(PLOT_H) * n_steps // PLOT_H)[::-1]
    cols = np.arange(PLOT_W) * T // PLOT_W
    index[TOP:TOP + PLOT_H, LEFT:LEFT + PLOT_W] = cells[rows[:, None], cols[None, :]]
    bar = ((PLOT_H - 1 - np.arange(PLOT_H)) * N_COLOURS // PLOT_H).astype(np.uint8)
    index[TOP:TOP + PLOT_H, bar_x:bar_x + BAR_W] = bar[:, None]
    image = Image.fromarray(index.astype(np.uint8), mode="L")
    image.putpalette(_palette())
    image.save(path, format="PNG")
