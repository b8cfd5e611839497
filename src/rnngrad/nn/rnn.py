"""The vanilla RNN: the per-step pair, and the batched sequence pair with exact BPTT.

Row-vector convention and time-major arrays throughout (float64 unless the parameters say otherwise):

    s_t = f(x_t U + s_{t-1} W + b),   s_0 = h0 (zeros by default)
    o_t = s_t V + c

    x (T, B, D)   inputs            U (D, H)   input -> hidden
    s (T, B, H)   hidden states     W (H, H)   hidden -> hidden
    o (T, B, O)   outputs           V (H, O)   hidden -> output
                                    b (H,), c (O,) biases

The per-step pair `step_forward` / `step_backward` is the readable heart of BPTT; `forward` and
`backward` compute exactly the same thing for a whole sequence, batching the work that does not
depend on the recurrence (all x_t U in one product, all dU, dW, dV terms in one product each).
Tests prove the two paths identical.

Truncation (`backward(..., truncation=k)`) is the windowed truncated gradient: the gradient of each
loss term L_t reaches s_t, s_{t-1}, ..., s_{t-k+1} and no earlier state (Williams & Peng 1990).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rnngrad.nn import backend
from rnngrad.nn import functional as F
from rnngrad.nn.spec import Cache
from rnngrad.nn.spec import spec as make_spec
from rnngrad.nn.workspace import Workspace, buffer

PARAM_KEYS = ("U", "W", "b", "V", "c")
LAYOUT = "a rnn has U (D, H), W (H, H), b (H,), V (H, O), c (O,)"


def param_shapes(D: int, H: int, O: int) -> dict[str, tuple[int, ...]]:
    return {"U": (D, H), "W": (H, H), "b": (H,), "V": (H, O), "c": (O,)}


def check_params(params: dict) -> tuple[int, int, int]:
    """Validate a parameter dict (see nn.model.init_params); return (D, H, O)."""
    return F.check_params(params, param_shapes, LAYOUT)


# --------------------------------------------------------------------------------------------
# One step: the readable reference
# --------------------------------------------------------------------------------------------


def step_forward(x_t: np.ndarray, s_prev: np.ndarray, params: dict, activation: str):
    """One step s_t = f(x_t U + s_{t-1} W + b).

    x_t (B, D), s_prev (B, H) -> s (B, H), cache for step_backward.
    """
    F.check_activation(activation)
    a = x_t @ params["U"] + s_prev @ params["W"] + params["b"]
    s = F.activate_(a, activation)
    return s, (x_t, s_prev, s, params, activation)


def step_backward(ds: np.ndarray, cache):
    """Backward through one step, given ds = dL/ds_t (B, H).

    Returns (dx (B, D), ds_prev (B, H), dU (D, H), dW (H, H), db (H,)).
    """
    x_t, s_prev, s, params, activation = cache
    da = ds * F.dactivation(s, activation)  # through f: f'(a_t)
    dx = da @ params["U"].T
    ds_prev = da @ params["W"].T
    dU = x_t.T @ da
    dW = s_prev.T @ da
    db = da.sum(axis=0)
    return dx, ds_prev, dU, dW, db


# --------------------------------------------------------------------------------------------
# The whole sequence
# --------------------------------------------------------------------------------------------


def forward(params: dict, x: np.ndarray, *, activation: str, h0=None, workspace: Workspace | None = None):
    """Run the RNN over a sequence.

    params: see nn.model.init_params; x (T, B, D); h0 (B, H) or None (zeros).
    Returns out (T, B, O) and a Cache for `backward` holding x, x1 (T*B, D+1) = [x_t, 1], h0, the states
    s (T, B, H) and s_prev (T, B, H) = s_{t-1} for every t (h0 first); s and s_prev are views of one
    (T + 1, B, H) buffer, taken from `workspace` when one is given (see Workspace).
    """
    spec = make_spec("rnn", "none", activation)
    D, H, O = check_params(params)
    dtype = params["W"].dtype
    x = F.check_input(x, D, dtype)
    T, B, _ = x.shape
    h0 = F.check_state("h0", h0, B, H, dtype)

    U, W, b, V, c = (params[k] for k in PARAM_KEYS)
    # states[t] = s_{t-1}: the states each step reads (s_prev) and writes (s) are one buffer, so that
    # backward forms dW, h0's term included, in a single product
    states = buffer(workspace, "states", (T + 1, B, H), dtype)
    states[0] = h0
    s = states[1:]
    # every x_t U + b at once, as [x_t, 1] [U; b]: the input path does not depend on the recurrence,
    # and backward gets dU and db from one product with the same [x_t, 1]
    x1 = buffer(workspace, "x1", (T * B, D + 1), dtype)
    x1[:, :D] = x.reshape(T * B, D)
    x1[:, D] = 1.0
    np.matmul(x1, np.vstack((U, b)), out=s.reshape(T * B, H))
    _recurrence(states, W, activation, buffer(workspace, "rec", (B, H), dtype))
    out = (s.reshape(T * B, H) @ V).reshape(T, B, O)
    out += c
    return out, Cache(spec, {"x": x, "x1": x1, "h0": h0, "s": s, "s_prev": states[:-1]})


def backward(params: dict, cache: Cache, dout: np.ndarray, *, truncation: int | None = None,
             workspace: Workspace | None = None):
    """Exact BPTT, full or windowed-truncated.

    dout (T, B, O) = dL/do_t. Returns (grads, ds): grads has the keys and shapes of params;
    ds (T, B, H) is dL/ds_t, the total derivative through all later states (within the window when
    truncating). truncation=k: the gradient of L_t reaches s_t .. s_{t-k+1} only; k >= T is full BPTT.
    With a `workspace`, ds and the intermediate dL/da_t live in its buffers (see Workspace).
    """
    D, H, O = check_params(params)
    x, s, s_prev, activation = cache["x"], cache["s"], cache["s_prev"], cache.spec.activation
    T, B, _ = x.shape
    dout = F.check_dout(dout, T, B, O, s.dtype)
    k = F.check_truncation(truncation)

    U, W, b, V, c = (params[key] for key in PARAM_KEYS)
    loss_steps = F.loss_steps(dout)  # often only the last step carries loss
    # the steps that carry loss: their direct path o_t -> s_t, and all of dV and dc (dc adds the other
    # steps' zeros in order, so the sum over these alone is the same number)
    steps = slice(None) if loss_steps.all() else np.flatnonzero(loss_steps)
    ds = buffer(workspace, "ds", s.shape, s.dtype)
    ds[steps] = dout[steps] @ V.T
    da = buffer(workspace, "da", s.shape, s.dtype)
    _bptt(ds, da, s, np.ascontiguousarray(W.T), activation, loss_steps, None if k is None or k >= T else k)

    # the weight gradients: one product each over all T*B rows (W sees s_{t-1}, h0 first; [dU; db]
    # comes from [x_t, 1])
    da_flat = da.reshape(T * B, H)
    dUb = cache["x1"].T @ da_flat
    dU, db = dUb[:D], dUb[D]
    dW = backend.matmul(s_prev.reshape(T * B, H).T, da_flat)
    dV = s[steps].reshape(-1, H).T @ dout[steps].reshape(-1, O)
    dc = dout[steps].reshape(-1, O).sum(axis=0)
    return {"U": dU, "W": dW, "b": db, "V": dV, "c": dc}, ds


# --------------------------------------------------------------------------------------------
# The recurrences in place: the vanilla RNN's specialised loops (nn.bptt drives the other cells).
# One product per step does the whole recurrence, written straight into the workspace's buffers;
# with the numba backend, nn.kernels runs the same loops compiled.
# --------------------------------------------------------------------------------------------


def _recurrence(states: np.ndarray, W: np.ndarray, activation: str, rec: np.ndarray) -> None:
    """s_t = f(x_t U + b + s_{t-1} W) in place: states (T + 1, B, H) holds h0 first and x_t U + b after it
    on entry, s_t at t + 1 on return; W (H, H); rec (B, H) scratch."""
    kernels = backend.kernels()
    if kernels is not None:
        kernels.rnn_forward(states, np.ascontiguousarray(W), kernels.ACTIVATION_CODES[activation], rec)
        return
    for t in range(states.shape[0] - 1):
        np.matmul(states[t], W, out=rec)
        states[t + 1] += rec
        F.activate_(states[t + 1], activation)


def _bptt(ds: np.ndarray, da: np.ndarray, s: np.ndarray, WT: np.ndarray, activation: str, loss_steps: np.ndarray,
          k: int | None) -> None:
    """Full (k None) or windowed BPTT in place. ds (T, B, H) holds the direct gradients on the loss steps
    on entry (anything elsewhere) and dL/ds_t on return; da (T, B, H) gets dL/da_t; s (T, B, H) the
    states; WT = W^T (H, H); loss_steps (T,) bool."""
    kernels = backend.kernels()
    if kernels is not None:
        T, B, H = s.shape
        kernels.rnn_backward(ds, da, s, WT, kernels.ACTIVATION_CODES[activation], loss_steps,
                             *kernels.windows(1, k, B, H, s.dtype), np.empty((B, H), dtype=s.dtype))
        return
    F.dactivation(s, activation, out=da)  # f'(a_t), made dL/da_t by the loops
    if k is None:
        if not loss_steps[-1]:  # the loop overwrites the other steps' ds_t
            ds[-1] = 0.0
        _bptt_full(ds, da, WT, loss_steps)
    else:
        _bptt_windowed(np.where(loss_steps[:, None, None], ds, 0.0), da, WT, k, loss_steps, out=ds)


def _bptt_full(ds: np.ndarray, da: np.ndarray, WT: np.ndarray, loss_steps: np.ndarray) -> np.ndarray:
    """ds_t = ds_out_t + da_{t+1} W^T, da_t = ds_t * f'(a_t), in place; returns ds.

    ds (T, B, H) holds the direct gradients ds_out on entry (zero where loss_steps is False) and
    dL/ds_t on return; da (T, B, H) holds f'(a_t) on entry and dL/da_t on return; WT = W^T (H, H).
    """
    T, B, H = ds.shape
    carry = np.empty((B, H), dtype=ds.dtype)  # dL/ds_t through s_{t+1}
    for t in range(T - 1, -1, -1):
        if t < T - 1:
            if loss_steps[t]:
                np.matmul(da[t + 1], WT, out=carry)
                ds[t] += carry
            else:  # no direct gradient to add: write straight into ds_t
                np.matmul(da[t + 1], WT, out=ds[t])
        da[t] *= ds[t]
    return ds


def _bptt_windowed(ds_out, da, WT, k: int, loss_steps: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Windowed truncation: each loss term's gradient travels back k states and stops.

    Each loss step u (loss_steps[u] True) keeps its own gradient g_u, which is propagated from s_u
    back to s_{u-k+1}; at time t, ds_t is the sum of the g_u whose window covers t. The windows are
    propagated together as one stacked product per step. ds_out (T, B, H) are the direct gradients;
    da (T, B, H) holds f'(a_t) on entry and dL/da_t on return; WT = W^T (H, H). Returns ds (T, B, H),
    written to `out` if given.
    """
    T, B, H = ds_out.shape
    ds = np.zeros_like(ds_out) if out is None else out
    ds.fill(0.0)
    g = np.zeros((k, B, H), dtype=ds_out.dtype)  # g[u % k]: the gradient of L_u at the current t
    active: list[int] = []  # loss steps whose window covers t, newest last
    for t in range(T - 1, -1, -1):
        if loss_steps[t]:
            g[t % k] = ds_out[t]
            active.append(t)
        slots = [u % k for u in active]
        if slots:
            ds[t] = g[slots].sum(axis=0)
        # windows that reach further back continue to s_{t-1}; the one that started k-1 steps ago ends
        active = [u for u in active if u - t < k - 1]
        if active and t > 0:
            slots = [u % k for u in active]
            g[slots] = ((g[slots] * da[t]).reshape(-1, H) @ WT).reshape(len(slots), B, H)
        da[t] *= ds[t]  # f'(a_t) is no longer needed: dL/da_t
    return ds


# --------------------------------------------------------------------------------------------
# The step Jacobians
# --------------------------------------------------------------------------------------------


def step_jacobians(params: dict, cache: Cache, sample: int = 0) -> np.ndarray:
    """J[t] = ds_t/ds_{t-1} = W diag(f'(a_t)) in row form, for one sample of the batch. Returns (T, H, H)."""
    sample = F.check_sample(sample, cache["s"].shape[1])
    fprime = F.dactivation(cache["s"][:, sample, :], cache.spec.activation)  # (T, H)
    return params["W"][None, :, :] * fprime[:, None, :]


def tangent_map(params: dict, cache: Cache, sample: int = 0) -> Callable[[int, np.ndarray], np.ndarray]:
    """(t, Q (H, k)) -> J[t]^T Q = diag(f'(a_t)) W^T Q in float64, without forming J (see step_jacobians)."""
    sample = F.check_sample(sample, cache["s"].shape[1])
    fprime = F.dactivation(cache["s"][:, sample, :].astype(np.float64), cache.spec.activation)
    WT = params["W"].T.astype(np.float64)

    def advance(t: int, q: np.ndarray) -> np.ndarray:
        return fprime[t][:, None] * (WT @ q)

    return advance
