"""Backpropagation through time over any cell's per-step backward, full or windowed-truncated.

The truncation is the windowed one (Williams & Peng 1990): the gradient of each loss term L_u reaches the
states at u .. u-k+1 and no earlier ones. (The vanilla RNN runs its own in-place loops, `nn.rnn`.)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def bptt(backprop_step: Callable, ds_out: np.ndarray, n_parts: int, loss_steps: np.ndarray, truncation: int | None):
    """Run the state gradient back from t = T-1 to 0 and collect what each step's backward returns.

    backprop_step(t, g) -> (g_prev, pieces): g (n, P, B, H) stacks n independent gradients w.r.t. the
    state at t (P parts: h, and c for the LSTM), g_prev is the same w.r.t. the state at t-1, and pieces is
    a tuple of arrays (n, B, width), linear in g, from which the parameter gradients are formed.
    ds_out (T, B, H) is the direct gradient o_t -> h_t; loss_steps (T,) marks the steps that carry loss.

    truncation=None: every loss term joins one gradient (n = 1). truncation=k: each loss step u keeps its
    own window, carried from the state at u back to the state at u-k+1 and no further; all windows are
    propagated together as one stack, oldest first.
    Returns dstate (T, P, B, H), the gradient w.r.t. each state, and the pieces (T, B, width) each,
    summed over the windows.
    """
    T, B, H = ds_out.shape
    dstate = np.empty((T, n_parts, B, H), dtype=ds_out.dtype)
    pieces = None
    g = np.zeros((1 if truncation is None else 0, n_parts, B, H), dtype=ds_out.dtype)
    starts: list[int] = []  # the loss step of each window in g, oldest window first (truncation only)
    for t in range(T - 1, -1, -1):
        if loss_steps[t] and truncation is None:
            g[0, 0] += ds_out[t]
        elif loss_steps[t]:
            new = np.zeros((1, n_parts, B, H), dtype=ds_out.dtype)
            new[0, 0] = ds_out[t]
            g = np.concatenate([g, new])
            starts.append(t)
        np.sum(g, axis=0, out=dstate[t])
        g, step_pieces = backprop_step(t, g)
        if pieces is None:
            pieces = tuple(np.empty((T,) + p.shape[1:], dtype=ds_out.dtype) for p in step_pieces)
        for total, p in zip(pieces, step_pieces):
            np.sum(p, axis=0, out=total[t])
        if starts and starts[0] - t == truncation - 1:  # the oldest window has reached its last state
            g, starts = g[1:], starts[1:]
    return dstate, pieces
