"""Figure functions: each takes tidy frames and returns a matplotlib Figure; only scripts save files."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # figures are written to files, never shown
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def grad_heatmap(frame: pd.DataFrame, title: str | None = None):
    """log10 ||dL/ds_t|| over training step (rows) x t (columns).

    frame: columns step, t, ds_norm (one row per step and t), as in grad_norms.parquet.
    """
    grid = frame.pivot(index="step", columns="t", values="ds_norm").sort_index()
    with np.errstate(divide="ignore"):
        values = np.log10(grid.to_numpy(dtype=float))
    values[~np.isfinite(values)] = np.nan
    fig, ax = plt.subplots(figsize=(6, 4))
    steps, ts = grid.index.to_numpy(), grid.columns.to_numpy()
    image = ax.imshow(values, aspect="auto", origin="lower", interpolation="nearest", cmap="viridis",
                      extent=(ts[0] - 0.5, ts[-1] + 0.5, steps[0] - 0.5, steps[-1] + 0.5))
    fig.colorbar(image, ax=ax, label=r"$\log_{10}\|\partial L/\partial s_t\|$")
    ax.set_xlabel("time step t")
    ax.set_ylabel("training step")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
