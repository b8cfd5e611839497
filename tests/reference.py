"""Plain per-step references for the batched core: every fast path is checked against these."""

import numpy as np

from rnngrad import core


def rel_error(a, b) -> float:
    """||a - b|| / max(||a||, ||b||): the size of the disagreement relative to the gradient."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return 0.0 if scale == 0 else float(np.linalg.norm(a - b) / scale)


def forward_steps(params, x, activation, h0=None):
    """s (T, B, H) and out (T, B, O) by looping core.step_forward; also the step caches."""
    T, B, _ = x.shape
    H = params["W"].shape[0]
    s_prev = np.zeros((B, H)) if h0 is None else h0
    states, caches = [], []
    for t in range(T):
        s_prev, cache = core.step_forward(x[t], s_prev, params, activation)
        states.append(s_prev)
        caches.append(cache)
    s = np.stack(states)
    return s, s @ params["V"] + params["c"], caches


def backward_steps(params, x, activation, dout, truncation=None):
    """Gradients by looping core.step_backward separately for every loss term L_u,
    each travelling back at most `truncation` steps (all the way when None)."""
    s, _, caches = forward_steps(params, x, activation)
    T = x.shape[0]
    k = T if truncation is None else min(truncation, T)
    grads = {key: np.zeros_like(p) for key, p in params.items()}
    grads["V"] = np.einsum("tbh,tbo->ho", s, dout)
    grads["c"] = dout.sum(axis=(0, 1))
    ds = np.zeros_like(s)
    for u in range(T):
        g = dout[u] @ params["V"].T
        for t in range(u, u - k, -1):
            if t < 0:
                break
            ds[t] += g
            _, g, dU, dW, db = core.step_backward(g, caches[t])
            grads["U"] += dU
            grads["W"] += dW
            grads["b"] += db
    return grads, ds


def make_cell_model(cell, norm, T, B, D, H, O, seed=0):
    """A remedy cell with nonzero biases (and gain), an input x (T, B, D) and a random initial state
    (an (h0, c0) pair for the LSTM), all float64."""
    rng = np.random.default_rng(seed)
    params = core.init_params(D, H, O, cell=cell, norm=norm, init="gaussian", scale=1.2, rng=rng, bn_gain=1.0)
    for key in ("b", "bw", "c"):
        if key in params:
            params[key] = params[key] + rng.normal(0, 0.3, params[key].shape)
    perturb_gains(params, rng)
    x = rng.normal(size=(T, B, D))
    h0 = rng.normal(0, 0.5, size=(B, H))
    if cell == "lstm":
        h0 = (h0, rng.normal(0, 0.5, size=(B, H)))
    return params, x, h0


def perturb_gains(params, rng):
    """Gains away from their initial value, so that gradient checks see them act (every norm's gains)."""
    for key in ("g", "gx", "gh"):
        if key in params:
            params[key] = params[key] + rng.normal(0, 0.2, params[key].shape)
