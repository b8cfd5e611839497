"""The remedies for vanishing gradients as cells on the vanilla RNN's contract (`nn.rnn`): LSTM, GRU, and
the vanilla RNN with layer or batch normalization.

Same conventions as `nn.rnn`: row vectors, time-major arrays, float64 unless the parameters are float32,
out (T, B, O) = h_t V + c, and `backward` returns (grads, ds) with ds (T, B, H) = dL/dh_t.

    lstm   (Hochreiter & Schmidhuber 1997, with the forget gate of Gers, Schmidhuber & Cummins 2000;
            exactly PyTorch's nn.LSTM, its two biases summed into b)
           [i f g o] = x_t U + h_{t-1} W + b           U (D, 4H), W (H, 4H), b (4H,)
           i, f, o = sigmoid, g = tanh
           c_t = f c_{t-1} + i g,  h_t = o tanh(c_t)
    gru    (Cho et al. 2014, in PyTorch's nn.GRU form: r multiplies h_{t-1} W_n + bw_n, not h_{t-1})
           r = sigmoid(x_t U_r + b_r + h_{t-1} W_r + bw_r),  z likewise
           n = tanh(x_t U_n + b_n + r (h_{t-1} W_n + bw_n))   U (D, 3H), W (H, 3H), b, bw (3H,)
           h_t = (1 - z) n + z h_{t-1}
    rnn + norm="layer" (Ba, Kiros & Hinton 2016) or norm="batch" (the "summed" batch norm)
           a_t = x_t U + s_{t-1} W,  â_t = (a_t - mean) / sqrt(var + 1e-5),  s_t = f(g â_t + b)
           layer: mean and biased variance over the H units of each sample;
           batch: over the batch for each unit, at every time step (one BN over the summed
           pre-activation, a simplification of Cooijmans et al., who normalize x U and h W separately).
           Batch statistics are used in training and in evaluation alike: there are no running averages.
    rnn + norm="recurrent_batch" (Cooijmans, Ballas, Laurent, Gulcehre & Courville 2016: their BN-LSTM's
           normalization of the two recurrent-layer terms, here for the vanilla RNN's one pre-activation
           instead of the LSTM's four gates)
           s_t = f(gx BN(x_t U) + gh BN(s_{t-1} W) + b),   BN(z) = (z - mean_t) / sqrt(var_t + 1e-5)
           each of the two terms normalized on its own, per unit and per time step, with its own gain and
           one shared bias b (they set the two BNs' own shifts to zero, b being shared). Training
           (forward) normalizes with the batch's statistics (biased variance); evaluation (predict with a
           `Population`) with population statistics: running averages of each step's batch statistics
           (nn.population), the steps beyond the longest trained one using its last step's (as they do
           for test sequences longer than the training ones). Deviations: Cooijmans et al. estimate the
           population statistics by averaging batch statistics over the training set, here they are
           exponential running averages kept during training (momentum configurable, Ioffe & Szegedy's
           unbiased B/(B-1) variance); with h0 = 0 the first step's s_0 W is 0 for every sample, its variance
           0, and BN(s_0 W) = 0. The gains start at 0.1 (their recommendation) unless told
           otherwise; the numba backend runs this cell through these numpy loops.

Gradients: each cell has a per-step backward that works from the step's local derivatives (computed for
all steps at once, so that the loop does only the recurrence) and also accepts a stack of independent
incoming gradients (leading axes); the generic driver `nn.bptt.bptt` runs full or windowed-truncated
BPTT over it, with the vanilla RNN's semantics (Williams & Peng 1990): the gradient of each loss term L_t
reaches the states at t .. t-k+1 and no earlier ones; for the LSTM the cut applies to h and c alike.
Weight gradients are then formed for all steps at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from rnngrad.nn import backend
from rnngrad.nn import functional as F
from rnngrad.nn.bptt import bptt
from rnngrad.nn.spec import Cache
from rnngrad.nn.spec import spec as make_spec
from rnngrad.nn.workspace import Workspace, buffer

NORM_EPS = 1e-5

N_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
# each gate's name and nonlinearity, in the order of their blocks in U, W and b
GATES = {
    "lstm": (("i", "sigmoid"), ("f", "sigmoid"), ("g", "tanh"), ("o", "sigmoid")),
    "gru": (("r", "sigmoid"), ("z", "sigmoid"), ("n", "tanh")),
}
# mean and variance over: the units of each sample (layer), the batch for each unit (batch)
_NORM_AXIS = {"layer": -1, "batch": -2}


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


def add_cell_params(params: dict, cell: str, *, forget_bias: float, norm: str = "none",
                    bn_gain: float = 1.0) -> dict[str, np.ndarray]:
    """Complete the weights of nn.init.gate_blocks (N_GATES[cell] draws) to the parameters of a cell.

    lstm: {"U": (D, 4H), "W": (H, 4H), "b": (4H,), "V": (H, O), "c": (O,)}, gates i, f, g, o.
    gru:  {"U": (D, 3H), "W": (H, 3H), "b": (3H,), "bw": (3H,), "V": (H, O), "c": (O,)}, gates r, z, n.
    rnn with norm layer or batch: the vanilla RNN's plus the gain "g" (H,); "b" (H,) is the shift after
    normalization. rnn with norm recurrent_batch: the gains "gx" and "gh" (H,) of BN(x_t U) and
    BN(s_{t-1} W) instead of g.

    The gains start at 1 for layer norm (Ba et al. 2016), at `bn_gain` for both batch norms (Cooijmans et
    al. 2016 recommend 0.1: a gain of 1 saturates tanh units and makes the gradient vanish).
    Biases start at zero except the LSTM forget gate's, `forget_bias` (1 by default: Gers et al. 2000;
    Jozefowicz, Zaremba & Sutskever 2015), so that the cell state is remembered from the start.
    `forget_bias` is ignored by other cells. Modifies and returns params.
    """
    H, dtype = params["W"].shape[0], params["W"].dtype
    if cell == "rnn" and norm == "recurrent_batch":
        params.update(gx=np.full(H, bn_gain, dtype=dtype), gh=np.full(H, bn_gain, dtype=dtype))
    elif cell == "rnn":
        params["g"] = np.full(H, 1.0 if norm == "layer" else bn_gain, dtype=dtype)
    elif cell == "lstm":
        params["b"][H : 2 * H] = forget_bias
    else:
        params["bw"] = np.zeros(3 * H, dtype=dtype)
    return params


_SHAPES_TEXT = {
    "lstm": "U (D, 4H), W (H, 4H), b (4H,), V (H, O), c (O,)",
    "gru": "U (D, 3H), W (H, 3H), b (3H,), bw (3H,), V (H, O), c (O,)",
    "rnn": "U (D, H), W (H, H), b (H,), g (H,), V (H, O), c (O,)",
    "recurrent_batch": "U (D, H), W (H, H), b (H,), gx (H,), gh (H,), V (H, O), c (O,)",
}


def _param_shapes(cell: str, norm: str, D: int, H: int, O: int) -> dict[str, tuple[int, ...]]:
    G = N_GATES[cell] * H
    shapes = {"U": (D, G), "W": (H, G), "b": (G,), "V": (H, O), "c": (O,)}
    if cell == "gru":
        shapes["bw"] = (G,)
    if cell == "rnn" and norm == "recurrent_batch":
        shapes.update(gx=(H,), gh=(H,))
    elif cell == "rnn":
        shapes["g"] = (H,)
    return shapes


def check_params(params: dict, cell: str, norm: str = "none") -> tuple[int, int, int]:
    """Validate a cell's parameter dict (see add_cell_params); return (D, H, O)."""
    layout = _SHAPES_TEXT["recurrent_batch" if norm == "recurrent_batch" else cell]
    return F.check_params(params, lambda D, H, O: _param_shapes(cell, norm, D, H, O), f"a {cell} has {layout}")


# --------------------------------------------------------------------------------------------
# One step of each cell. xu_t is the input projection x_t U (+ b for the gated cells), which
# forward computes for all t at once. A step's backward works from its local derivatives
# (`*_local_derivatives`, computed from the step's cache: for one step, or for all t at once), and
# takes a stack of independent incoming gradients (leading axes before (B, H)): the truncation
# windows, or a basis for Jacobians. `out` lets the sequence loops write each step in place.
# --------------------------------------------------------------------------------------------


def _blocks(a: np.ndarray, n: int) -> list[np.ndarray]:
    """The n equal blocks of the last axis (the gates), as views."""
    width = a.shape[-1] // n
    return [a[..., j * width : (j + 1) * width] for j in range(n)]


def lstm_step_forward(xu_t: np.ndarray, h_prev: np.ndarray, c_prev: np.ndarray, params: dict, out=None):
    """One LSTM step. xu_t (B, 4H) = x_t U + b; h_prev, c_prev (B, H).

    Returns h (B, H), c (B, H) and the cache (gates (B, 4H) = [i f g o] after their nonlinearities,
    c_prev, tanh(c) (B, H)). out: optional arrays (h, c, gates, tanh_c) to write into.
    """
    H = h_prev.shape[-1]
    if out is None:
        out = (np.empty_like(h_prev), np.empty_like(h_prev), np.empty_like(xu_t), np.empty_like(h_prev))
    h, c, gates, tanh_c = out
    np.matmul(h_prev, params["W"], out=gates)
    gates += xu_t
    i, f, g, o = _blocks(gates, 4)
    np.tanh(g, out=tanh_c)  # tanh_c serves as scratch: one sigmoid pass over all four blocks is cheaper
    F.activate_(gates, "sigmoid")
    g[...] = tanh_c
    np.multiply(f, c_prev, out=c)
    c += i * g
    np.tanh(c, out=tanh_c)
    np.multiply(o, tanh_c, out=h)
    return h, c, (gates, c_prev, tanh_c)


def lstm_local_derivatives(gates: np.ndarray, c_prev: np.ndarray, tanh_c: np.ndarray):
    """The local derivatives of LSTM steps, from their caches: (..., B, 4H) gates, (..., B, H) otherwise.

    Returns (slopes (..., B, 4, H), dc_dh (..., B, H), f (..., B, H)): slopes are the derivatives of what
    each gate feeds (c_t for i, f, g; h_t for o) with respect to the gate's pre-activation;
    dc_dh = o (1 - tanh(c)^2) = dh_t/dc_t; f = dc_t/dc_{t-1}. Computed in place: one pass per term.
    """
    i, f, g, o = _blocks(gates, 4)
    slopes = gates * (1.0 - gates)  # sigmoid' = s (1 - s): right for i, f, o
    slopes = slopes.reshape(i.shape[:-1] + (4, i.shape[-1]))
    np.multiply(g, g, out=slopes[..., 2, :])
    np.subtract(1.0, slopes[..., 2, :], out=slopes[..., 2, :])  # tanh' = 1 - y^2 for g
    slopes[..., 0, :] *= g  # c_t = f c_{t-1} + i g
    slopes[..., 1, :] *= c_prev
    slopes[..., 2, :] *= i
    slopes[..., 3, :] *= tanh_c  # h_t = o tanh(c_t)
    dc_dh = tanh_c * tanh_c
    np.subtract(1.0, dc_dh, out=dc_dh)
    dc_dh *= o
    return slopes, dc_dh, f


def lstm_step_backward(dh: np.ndarray, dc: np.ndarray, local, W: np.ndarray, out=None):
    """Backward through one LSTM step. dh (..., B, H) = dL/dh_t; dc (..., B, H) = dL/dc_t through c_{t+1};
    local = lstm_local_derivatives of this step; W (H, 4H).

    Returns dgates (..., B, 4H) = dL/d[i f g o] before the nonlinearities (= dL/d(x_t U + h_{t-1} W + b)),
    dh_prev, dc_prev and dc_total (..., B, H), the last being dL/dc_t including the path through h_t.
    out: optional arrays (dh_prev, dc_prev) to write into.
    """
    slopes, dc_dh, f = local
    H = dh.shape[-1]
    if out is None:
        out = (np.empty_like(dh), np.empty_like(dh))
    dh_prev, dc_prev = out
    dc_total = dh * dc_dh
    dc_total += dc
    dgates = np.empty(dh.shape[:-1] + (4, H), dtype=dh.dtype)
    np.multiply(dc_total[..., None, :], slopes[..., :3, :], out=dgates[..., :3, :])  # i, f, g feed c_t
    np.multiply(dh, slopes[..., 3, :], out=dgates[..., 3, :])  # o feeds h_t
    dgates = dgates.reshape(dh.shape[:-1] + (4 * H,))
    np.matmul(dgates, W.T, out=dh_prev)
    np.multiply(dc_total, f, out=dc_prev)  # the cell state's linear path: scaled by f only, no activation
    return dgates, dh_prev, dc_prev, dc_total


def gru_step_forward(xu_t: np.ndarray, h_prev: np.ndarray, params: dict, out=None):
    """One GRU step. xu_t (B, 3H) = x_t U + b; h_prev (B, H).

    Returns h (B, H) and the cache (gates (B, 3H) = [r z n] after their nonlinearities,
    hw_n (B, H) = h_prev W_n + bw_n, h_prev). out: optional arrays (h, gates, hw_n) to write into.
    """
    H = h_prev.shape[-1]
    if out is None:
        out = (np.empty_like(h_prev), np.empty_like(xu_t), np.empty_like(h_prev))
    h, gates, hw_n = out
    hw = h_prev @ params["W"]
    hw += params["bw"]
    np.add(xu_t[:, : 2 * H], hw[:, : 2 * H], out=gates[:, : 2 * H])
    F.activate_(gates[:, : 2 * H], "sigmoid")
    r, z, n = _blocks(gates, 3)
    hw_n[...] = hw[:, 2 * H :]
    np.multiply(r, hw_n, out=n)
    n += xu_t[:, 2 * H :]
    np.tanh(n, out=n)
    np.subtract(h_prev, n, out=h)  # h = (1 - z) n + z h_prev = n + z (h_prev - n)
    h *= z
    h += n
    return h, (gates, hw_n, h_prev)


def gru_local_derivatives(gates: np.ndarray, hw_n: np.ndarray, h_prev: np.ndarray):
    """The local derivatives of GRU steps, from their caches: (..., B, 3H) gates, (..., B, H) otherwise.

    Returns (slopes (..., B, 4, H), z (..., B, H)): slopes = dh_t/d[r z n_h n_x], the pre-activations of
    r and z, the recurrent part of n's (n_h = h_{t-1} W_n + bw_n, scaled by r) and its input part
    (n_x = x_t U_n + b_n); z = the direct path dh_t/dh_{t-1} besides W. Computed in place.
    """
    r, z, n = _blocks(gates, 3)
    slopes = np.empty(r.shape[:-1] + (4, r.shape[-1]), dtype=gates.dtype)
    dr, dz, dn_h, dn_x = (slopes[..., j, :] for j in range(4))
    np.multiply(n, n, out=dn_x)
    np.subtract(1.0, dn_x, out=dn_x)  # through n = tanh(.)
    dn_x *= 1.0 - z  # h_t = (1 - z) n + z h_{t-1}
    np.multiply(dn_x, r, out=dn_h)
    np.subtract(1.0, r, out=dr)  # sigmoid' = s (1 - s)
    dr *= r
    dr *= hw_n
    dr *= dn_x
    np.subtract(1.0, z, out=dz)
    dz *= z
    dz *= h_prev - n
    return slopes, z


def gru_step_backward(dh: np.ndarray, local, W: np.ndarray):
    """Backward through one GRU step, given dh (..., B, H) = dL/dh_t, local = gru_local_derivatives of
    this step and W (H, 3H).

    Returns dpre (..., B, 4H) = dL/d[r z n_h n_x] (see gru_local_derivatives) and dh_prev (..., B, H).
    dL/d(h_{t-1} W + bw) is dpre[..., :3H]; dL/d(x_t U + b) is dpre's r, z and n_x blocks.
    """
    slopes, z = local
    H = dh.shape[-1]
    dpre = (dh[..., None, :] * slopes).reshape(dh.shape[:-1] + (4 * H,))
    dhw = dpre[..., : 3 * H].reshape(-1, 3 * H)  # rows with a stride: as one 2-d product, BLAS takes them as they are
    dh_prev = (dhw @ W.T).reshape(dh.shape)
    dh_prev += dh * z  # z also copies h_{t-1} straight through
    return dpre, dh_prev


def _check_batch_norm(norm: str, B: int, population=None) -> None:
    if norm in ("batch", "recurrent_batch") and B < 2 and population is None:
        raise ValueError(f"norm={norm!r} needs a batch of at least 2 samples, got {B}")


def norm_step_forward(xu_t: np.ndarray, s_prev: np.ndarray, params: dict, *, norm: str, activation: str, out=None):
    """One normalized RNN step s_t = f(g â_t + b), â_t = normalize(x_t U + s_{t-1} W). xu_t (B, H) = x_t U.

    norm "layer" normalizes each sample over its H units, "batch" each unit over the B samples (B >= 2).
    Returns s (B, H) and the cache (â (B, H), 1/std ((B, 1) or (1, H)), s).
    out: optional arrays (s, â, 1/std) to write into.
    """
    F.check_activation(activation)
    B, H = xu_t.shape
    _check_batch_norm(norm, B)
    axis = _NORM_AXIS[norm]
    if out is None:
        out = (np.empty_like(xu_t), np.empty_like(xu_t), np.empty((B, 1) if norm == "layer" else (1, H), xu_t.dtype))
    s, a_hat, rstd = out
    np.matmul(s_prev, params["W"], out=a_hat)
    a_hat += xu_t
    a_hat -= a_hat.mean(axis=axis, keepdims=True)
    np.divide(1.0, np.sqrt(np.mean(a_hat * a_hat, axis=axis, keepdims=True) + NORM_EPS), out=rstd)
    a_hat *= rstd
    np.multiply(params["g"], a_hat, out=s)
    s += params["b"]
    F.activate_(s, activation)
    return s, (a_hat, rstd, s)


def norm_local_derivatives(a_hat: np.ndarray, rstd: np.ndarray, s: np.ndarray, activation: str):
    """The local derivatives of normalized RNN steps, from their caches (one step, or (T, ...) at once).

    Returns (a_hat, rstd, f'(y)) with y = g â + b: the normalization's own derivative depends on the
    whole group, so the step backward forms it from â and 1/std.
    """
    return a_hat, rstd, F.dactivation(s, activation)


def norm_step_backward(ds: np.ndarray, local, params: dict, norm: str):
    """Backward through one normalized step, given ds (..., B, H) = dL/ds_t and local =
    norm_local_derivatives of this step.

    Returns da (..., B, H) = dL/d(x_t U + s_{t-1} W), dy (..., B, H) = dL/d(g â_t + b), ds_prev (..., B, H).
    """
    a_hat, rstd, fprime = local
    dy = ds * fprime
    da = _normalization_backward(dy * params["g"], a_hat, rstd, _NORM_AXIS[norm])
    return da, dy, da @ params["W"].T


def _normalization_backward(da_hat: np.ndarray, a_hat: np.ndarray, rstd: np.ndarray, axis: int) -> np.ndarray:
    """dL/da of â = (a - mean) rstd, the mean and the (biased) variance over `axis`, from da_hat = dL/dâ:
    the statistics depend on every a of the group, hence the two mean terms."""
    da = da_hat - da_hat.mean(axis=axis, keepdims=True)
    da -= a_hat * np.mean(da_hat * a_hat, axis=axis, keepdims=True)
    da *= rstd
    return da


# Cooijmans et al.'s recurrent batch norm (norm="recurrent_batch", see the module docstring). The
# statistics of a step are kept as one (4, H) array: mean and biased variance of x_t U, then of s_{t-1} W.


def _batch_normalize(z: np.ndarray, stats: np.ndarray, z_hat: np.ndarray, population: np.ndarray | None) -> None:
    """z_hat = (z - mean) / sqrt(var + eps) per unit: z (B, H); stats (2, H) gets the batch's mean and biased
    variance (population None), or holds the population's (given, then written to stats)."""
    if population is None:
        stats[0] = z.mean(axis=0)
        np.subtract(z, stats[0], out=z_hat)
        stats[1] = np.mean(z_hat * z_hat, axis=0)
    else:
        stats[...] = population
        np.subtract(z, stats[0], out=z_hat)
    z_hat /= np.sqrt(stats[1] + NORM_EPS)


def recurrent_batch_step_forward(xu_t: np.ndarray, s_prev: np.ndarray, params: dict, *, activation: str,
                                 population: np.ndarray | None = None, out=None):
    """One step s_t = f(gx BN(x_t U) + gh BN(s_{t-1} W) + b) of Cooijmans et al.'s recurrent batch norm.

    xu_t (B, H) = x_t U; s_prev (B, H); population: None (the batch's statistics, B >= 2) or this step's
    population statistics (4, H) = mean and variance of x_t U, then of s_{t-1} W.
    Returns s (B, H) and the cache (x̂ (B, H), ĥ (B, H), the statistics used (4, H), s).
    out: optional arrays (s, x̂, ĥ, stats) to write into.
    """
    F.check_activation(activation)
    B, H = xu_t.shape
    _check_batch_norm("recurrent_batch", B, population)
    if out is None:
        out = (np.empty_like(xu_t), np.empty_like(xu_t), np.empty_like(xu_t), np.empty((4, H), dtype=xu_t.dtype))
    s, x_hat, h_hat, stats = out
    hw = s_prev @ params["W"]
    _batch_normalize(xu_t, stats[:2], x_hat, None if population is None else population[:2])
    _batch_normalize(hw, stats[2:], h_hat, None if population is None else population[2:])
    np.multiply(params["gx"], x_hat, out=s)
    s += params["gh"] * h_hat
    s += params["b"]
    F.activate_(s, activation)
    return s, (x_hat, h_hat, stats, s)


def recurrent_batch_local_derivatives(x_hat, h_hat, stats, s, activation: str):
    """The local derivatives of recurrent batch-norm steps (one step, or (T, ...) at once): x̂, ĥ, their
    1/std ((..., 1, H) each) and f'(y), y = gx x̂ + gh ĥ + b."""
    rstd = 1.0 / np.sqrt(stats[..., 1::2, :] + NORM_EPS)  # (..., 2, H): of x_t U, of s_{t-1} W
    return x_hat, h_hat, rstd[..., 0:1, :], rstd[..., 1:2, :], F.dactivation(s, activation)


def recurrent_batch_step_backward(ds: np.ndarray, local, params: dict):
    """Backward through one recurrent batch-norm step (batch statistics), given ds (..., B, H) = dL/ds_t.

    Returns dxu (..., B, H) = dL/d(x_t U), dhw (..., B, H) = dL/d(s_{t-1} W), dy (..., B, H) =
    dL/d(gx x̂ + gh ĥ + b) and ds_prev (..., B, H).
    """
    x_hat, h_hat, rstd_x, rstd_h, fprime = local
    dy = ds * fprime
    dxu = _normalization_backward(dy * params["gx"], x_hat, rstd_x, -2)
    dhw = _normalization_backward(dy * params["gh"], h_hat, rstd_h, -2)
    return dxu, dhw, dy, dhw @ params["W"].T


# --------------------------------------------------------------------------------------------
# Each cell over a whole sequence: the forward loop (writing every step in place), the local
# derivatives of all steps at once, one backward step of the state gradient g (n, P, B, H)
# (P = 2 state parts h, c for the LSTM, else 1) given the local derivatives at t, the parameter
# gradients from the per-step pieces that backward step returns, and the compiled backward that
# returns the same pieces (nn.kernels; the forward loops choose their backend themselves).
# A forward loop keeps what step t makes at t % n of its per-step arrays (the cell state at
# (t + 1) % (n + 1)): n = T keeps every step for backward, n = 1 only the last (inference).
# --------------------------------------------------------------------------------------------


def _sum_outer(a: np.ndarray, d: np.ndarray) -> np.ndarray:
    """sum_t a_t^T d_t for time-major a (T, B, m), d (T, B, n), as one product."""
    return backend.matmul(a.reshape(-1, a.shape[-1]).T, d.reshape(-1, d.shape[-1]))


def _states(initial: np.ndarray, n: int, workspace, name: str) -> np.ndarray:
    """Storage for a state over n steps: one (n + 1, B, H) buffer with the initial state first. Its views
    [1:] (new) and [:-1] (prev, prev[t] = new[t - 1]) make a recurrent weight's gradient one product."""
    states = buffer(workspace, name, (n + 1,) + initial.shape, initial.dtype)
    states[0] = initial
    return states


def _input_projection(params, x, workspace, bias: bool = True):
    """xu (T, B, G) = x_t U (+ b): the input path of every step at once, for the numpy loops (the kernels
    form each step's as they go, rather than write and read back a (T, B, G) array)."""
    T, B, D = x.shape
    xu = buffer(workspace, "xu", (T, B, params["U"].shape[1]), x.dtype)
    np.matmul(x.reshape(T * B, D), params["U"], out=xu.reshape(T * B, -1))
    if bias:
        xu += params["b"]
    return xu


def _kernel_inputs(params, x) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x, U and W as the kernels take them (C-contiguous), and a (B, G) scratch for x_t U."""
    U = np.ascontiguousarray(params["U"])
    return np.ascontiguousarray(x), U, np.ascontiguousarray(params["W"]), np.empty((x.shape[1], U.shape[1]), dtype=x.dtype)


def _lstm_forward(params, x, cache, n, workspace):
    T, B, _ = x.shape
    G = params["U"].shape[1]
    h, c = _states(cache["h0"], T, workspace, "h"), _states(cache["c0"], n, workspace, "c")
    gates = buffer(workspace, "gates", (n, B, G), x.dtype)
    tanh_c = buffer(workspace, "tanh_c", (n, B, G // 4), x.dtype)
    kernels = backend.kernels()
    if kernels is not None:
        x, U, W, xu = _kernel_inputs(params, x)
        kernels.lstm_forward(x, U, params["b"], h, c, gates, tanh_c, W, xu)
    else:
        xu = _input_projection(params, x, workspace)
        for t in range(T):
            out = (h[t + 1], c[(t + 1) % (n + 1)], gates[t % n], tanh_c[t % n])
            lstm_step_forward(xu[t], h[t], c[t % (n + 1)], params, out=out)
    return {"s": h[1:], "s_prev": h[:-1], "c": c[1:], "c_prev": c[:-1], "gates": gates, "tanh_c": tanh_c}


def _lstm_local(cache):
    return lstm_local_derivatives(cache["gates"], cache["c_prev"], cache["tanh_c"])


def _lstm_backprop_step(params, cache, local_t, g):
    g_prev = np.empty_like(g)
    dgates, _, _, dc_total = lstm_step_backward(g[:, 0], g[:, 1], local_t, params["W"], out=(g_prev[:, 0], g_prev[:, 1]))
    return g_prev, (dgates, dc_total)


def _lstm_compiled(kernels, params, cache, ds, loss_steps, windows, workspace):
    T, B, H = ds.shape
    dgates = buffer(workspace, "dgates", (T, B, 4 * H), ds.dtype)
    dc = buffer(workspace, "dc", ds.shape, ds.dtype)
    kernels.lstm_backward(ds, dc, dgates, cache["gates"], cache["c_prev"], cache["tanh_c"], _WT(params), loss_steps,
                          *windows, np.empty((B, 4 * H), dtype=ds.dtype), np.empty((B, H), dtype=ds.dtype))
    return dgates, dc


def _lstm_grads(params, cache, pieces):
    dgates, _ = pieces
    return {
        "U": _sum_outer(cache["x"], dgates),
        "W": _sum_outer(cache["s_prev"], dgates),
        "b": dgates.sum(axis=(0, 1)),
    }


def _gru_forward(params, x, cache, n, workspace):
    T, B, _ = x.shape
    G = params["U"].shape[1]
    h = _states(cache["h0"], T, workspace, "h")
    gates = buffer(workspace, "gates", (n, B, G), x.dtype)
    hw_n = buffer(workspace, "hw_n", (n, B, G // 3), x.dtype)
    kernels = backend.kernels()
    if kernels is not None:
        x, U, W, xu = _kernel_inputs(params, x)
        kernels.gru_forward(x, U, params["b"], h, gates, hw_n, W, params["bw"], np.empty((B, G), x.dtype), xu)
    else:
        xu = _input_projection(params, x, workspace)
        for t in range(T):
            gru_step_forward(xu[t], h[t], params, out=(h[t + 1], gates[t % n], hw_n[t % n]))
    return {"s": h[1:], "s_prev": h[:-1], "gates": gates, "hw_n": hw_n}


def _gru_local(cache):
    return gru_local_derivatives(cache["gates"], cache["hw_n"], cache["s_prev"])


def _gru_backprop_step(params, cache, local_t, g):
    dpre, dh_prev = gru_step_backward(g[:, 0], local_t, params["W"])
    return dh_prev[:, None], (dpre,)


def _gru_compiled(kernels, params, cache, ds, loss_steps, windows, workspace):
    T, B, H = ds.shape
    dpre = buffer(workspace, "dpre", (T, B, 4 * H), ds.dtype)
    scratch = (np.empty((B, 3 * H), dtype=ds.dtype), np.empty((B, H), dtype=ds.dtype), np.empty((B, H), dtype=ds.dtype))
    kernels.gru_backward(ds, dpre, cache["gates"], cache["hw_n"], cache["s_prev"], _WT(params), loss_steps, *windows,
                         *scratch)
    return (dpre,)


def _gru_grads(params, cache, pieces):
    (dpre,) = pieces
    H = dpre.shape[-1] // 4
    dsum = dpre.sum(axis=(0, 1))
    # h_{t-1} W + bw feeds r, z and n_h; x_t U + b feeds r, z and n_x
    return {
        "U": np.hstack([_sum_outer(cache["x"], dpre[..., : 2 * H]), _sum_outer(cache["x"], dpre[..., 3 * H :])]),
        "W": _sum_outer(cache["s_prev"], dpre[..., : 3 * H]),
        "b": np.concatenate([dsum[: 2 * H], dsum[3 * H :]]),
        "bw": dsum[: 3 * H],
    }


def _norm_forward(params, x, cache, n, workspace):
    T, B, _ = x.shape
    H = params["W"].shape[0]
    norm, activation = cache.spec.norm, cache.spec.activation
    s = _states(cache["h0"], T, workspace, "h")
    a_hat = buffer(workspace, "a_hat", (n, B, H), x.dtype)
    rstd = buffer(workspace, "rstd", (n, B, 1) if norm == "layer" else (n, 1, H), x.dtype)
    kernels = backend.kernels()
    if kernels is not None:
        x, U, W, xu = _kernel_inputs(params, x)
        kernels.norm_forward(x, U, s, a_hat, rstd, W, params["g"], params["b"], kernels.NORM_CODES[norm],
                             kernels.ACTIVATION_CODES[activation], NORM_EPS, xu)
    else:
        xu = _input_projection(params, x, workspace, bias=False)  # the normalized rnn adds b after normalizing
        for t in range(T):
            norm_step_forward(xu[t], s[t], params, norm=norm, activation=activation, out=(s[t + 1], a_hat[t % n], rstd[t % n]))
    return {"s": s[1:], "s_prev": s[:-1], "a_hat": a_hat, "rstd": rstd}


def _norm_local(cache):
    return norm_local_derivatives(cache["a_hat"], cache["rstd"], cache["s"], cache.spec.activation)


def _norm_backprop_step(params, cache, local_t, g):
    da, dy, ds_prev = norm_step_backward(g[:, 0], local_t, params, cache.spec.norm)
    return ds_prev[:, None], (da, dy)


def _norm_compiled(kernels, params, cache, ds, loss_steps, windows, workspace):
    spec = cache.spec
    da, dy = buffer(workspace, "da", ds.shape, ds.dtype), buffer(workspace, "dy", ds.shape, ds.dtype)
    kernels.norm_backward(ds, da, dy, cache["a_hat"], cache["rstd"], cache["s"], params["g"], _WT(params),
                          kernels.NORM_CODES[spec.norm], kernels.ACTIVATION_CODES[spec.activation], loss_steps, *windows,
                          np.empty_like(ds[0]), np.empty_like(ds[0]))
    return da, dy


def _norm_grads(params, cache, pieces):
    da, dy = pieces
    return {
        "U": _sum_outer(cache["x"], da),
        "W": _sum_outer(cache["s_prev"], da),
        "g": np.einsum("tbh,tbh->h", dy, cache["a_hat"]),
        "b": dy.sum(axis=(0, 1)),
    }


def _recurrent_batch_forward(params, x, cache, n, workspace, population=None):
    T, B, _ = x.shape
    H = params["W"].shape[0]
    activation = cache.spec.activation
    s = _states(cache["h0"], T, workspace, "h")
    x_hat = buffer(workspace, "x_hat", (n, B, H), x.dtype)
    h_hat = buffer(workspace, "h_hat", (n, B, H), x.dtype)
    stats = buffer(workspace, "bn_stats", (n, 4, H), x.dtype)
    steps = None if population is None else population.statistics(T).astype(x.dtype, copy=False)
    xu = _input_projection(params, x, workspace, bias=False)  # b is added after normalizing
    for t in range(T):
        recurrent_batch_step_forward(xu[t], s[t], params, activation=activation,
                                     population=None if steps is None else steps[t],
                                     out=(s[t + 1], x_hat[t % n], h_hat[t % n], stats[t % n]))
    return {"s": s[1:], "s_prev": s[:-1], "x_hat": x_hat, "h_hat": h_hat, "bn_stats": stats}


def _recurrent_batch_local(cache):
    return recurrent_batch_local_derivatives(cache["x_hat"], cache["h_hat"], cache["bn_stats"], cache["s"],
                                             cache.spec.activation)


def _recurrent_batch_backprop_step(params, cache, local_t, g):
    dxu, dhw, dy, ds_prev = recurrent_batch_step_backward(g[:, 0], local_t, params)
    return ds_prev[:, None], (dxu, dhw, dy)


def _recurrent_batch_grads(params, cache, pieces):
    dxu, dhw, dy = pieces
    return {
        "U": _sum_outer(cache["x"], dxu),
        "W": _sum_outer(cache["s_prev"], dhw),
        "gx": np.einsum("tbh,tbh->h", dy, cache["x_hat"]),
        "gh": np.einsum("tbh,tbh->h", dy, cache["h_hat"]),
        "b": dy.sum(axis=(0, 1)),
    }


def _WT(params) -> np.ndarray:
    return np.ascontiguousarray(params["W"].T)


class _CellPath(NamedTuple):
    n_parts: int  # state parts P
    forward: Callable  # (params, x, cache, n, workspace) -> the cache's arrays
    local: Callable  # (cache) -> the local derivatives of all steps
    backprop_step: Callable  # (params, cache, local_t, g) -> (g_prev, pieces)
    grads: Callable  # (params, cache, pieces) -> the parameter gradients but V and c
    compiled_backward: Callable | None  # (kernels, params, cache, ds, loss_steps, windows, workspace) -> pieces
    # (T, B, width); None: the numpy loops on every backend


_CELL_PATHS = {
    "lstm": _CellPath(2, _lstm_forward, _lstm_local, _lstm_backprop_step, _lstm_grads, _lstm_compiled),
    "gru": _CellPath(1, _gru_forward, _gru_local, _gru_backprop_step, _gru_grads, _gru_compiled),
    "rnn": _CellPath(1, _norm_forward, _norm_local, _norm_backprop_step, _norm_grads, _norm_compiled),
}
# Cooijmans et al.'s recurrent batch norm: numpy only (nn.kernels has no kernel for it)
_RECURRENT_BATCH_PATH = _CellPath(1, _recurrent_batch_forward, _recurrent_batch_local, _recurrent_batch_backprop_step,
                                  _recurrent_batch_grads, None)


def _path(spec) -> _CellPath:
    return _RECURRENT_BATCH_PATH if spec.norm == "recurrent_batch" else _CELL_PATHS[spec.cell]


# --------------------------------------------------------------------------------------------
# The whole sequence
# --------------------------------------------------------------------------------------------


def _initial_state(h0, cell: str, B: int, H: int, dtype) -> dict:
    if cell != "lstm":
        return {"h0": F.check_state("h0", h0, B, H, dtype)}
    if h0 is None:
        h0 = (None, None)
    if not isinstance(h0, tuple) or len(h0) != 2:
        raise ValueError("h0 of an lstm must be None or a tuple (h0, c0)")
    return {"h0": F.check_state("h0", h0[0], B, H, dtype), "c0": F.check_state("c0", h0[1], B, H, dtype)}


def forward(params: dict, x: np.ndarray, *, cell: str, norm: str, activation: str | None, h0=None,
            workspace: Workspace | None = None):
    """Run a cell over a sequence.

    params: see add_cell_params; x (T, B, D); h0 (B, H) or None (zeros), for the lstm a tuple
    (h0, c0) of (B, H) arrays or None. `activation` is f of the normalized rnn; the lstm and gru have
    fixed nonlinearities and ignore it.

    Returns out (T, B, O) = h_t V + c and the Cache for backward, whose spec has activation None for
    lstm/gru, and whose arrays are:
      all:  "x" (T, B, D), "h0" (B, H), "s" (T, B, H) = h_t,
            "s_prev" (T, B, H) = h_{t-1} (h0 first; a view of the same buffer as s)
      lstm: "c0" (B, H), "c" (T, B, H), "c_prev" (T, B, H) likewise, "gates" (T, B, 4H) = i f g o,
            "tanh_c" (T, B, H); after backward also "dc" (T, B, H) = dL/dc_t
      gru:  "gates" (T, B, 3H) = r z n, "hw_n" (T, B, H) = h_{t-1} W_n + bw_n
      rnn:  "a_hat" (T, B, H), the normalized pre-activation before the gain; "rstd" 1/sqrt(var + eps),
            (T, B, 1) for layer, (T, 1, H) for batch
      rnn with norm recurrent_batch: "x_hat", "h_hat" (T, B, H) = BN(x_t U), BN(s_{t-1} W) before their
            gains; "bn_stats" (T, 4, H) the batch's mean and biased variance of x_t U, then of s_{t-1} W
            (what nn.population.Population.update averages)
    A chunk can continue from the last state: h0 = cache["s"][-1] (lstm: (cache["s"][-1], cache["c"][-1])).
    With a `workspace` (nn.workspace.Workspace) the arrays are its buffers, valid until its next use.
    """
    return _run(params, x, cell=cell, norm=norm, activation=activation, h0=h0, keep=True, workspace=workspace)


def predict(params: dict, x: np.ndarray, *, cell: str, norm: str, activation: str | None, h0=None,
            workspace: Workspace | None = None, population=None) -> np.ndarray:
    """The outputs of `forward`, out (T, B, O), without what only backward needs: the per-step arrays
    (gates, cell states, normalized pre-activations) live one step at a time.

    population (norm recurrent_batch only): an nn.population.Population whose statistics normalize each
    step instead of the batch's (evaluation, Cooijmans et al. 2016); then each sample's output depends on
    that sample alone, and a batch of one is allowed. None: the batch's statistics, as in training.
    """
    out, _ = _run(params, x, cell=cell, norm=norm, activation=activation, h0=h0, keep=False, workspace=workspace,
                  population=population)
    return out


def _run(params: dict, x: np.ndarray, *, cell: str, norm: str, activation: str | None, h0, keep: bool, workspace,
         population=None):
    """forward (keep=True), or predict, whose cache holds the last step's arrays only and is discarded."""
    spec = make_spec(cell, norm, activation if cell == "rnn" else None)
    if spec.vanilla:
        raise ValueError("cell 'rnn' with norm 'none' is the vanilla RNN: nn.rnn.forward (or nn.model.forward)")
    if population is not None and norm != "recurrent_batch":
        raise ValueError(f"population statistics are for norm 'recurrent_batch', not {cell} with norm {norm!r}")
    D, H, O = check_params(params, cell, norm)
    dtype = params["W"].dtype
    x = F.check_input(x, D, dtype)
    T, B, _ = x.shape
    _check_batch_norm(norm, B, population)
    cache = Cache(spec, {"x": x, **_initial_state(h0, cell, B, H, dtype)})

    path = _path(spec)
    extra = {} if population is None else {"population": population}
    cache.arrays.update(path.forward(params, x, cache, T if keep else 1, workspace, **extra))
    out = (cache["s"].reshape(T * B, H) @ params["V"]).reshape(T, B, O)
    out += params["c"]
    return out, cache


def backward(params: dict, cache: Cache, dout: np.ndarray, *, truncation: int | None = None,
             workspace: Workspace | None = None):
    """Exact BPTT through a cell, full or windowed-truncated, with nn.rnn.backward's contract.

    dout (T, B, O) = dL/do_t. Returns (grads, ds): grads has the keys and shapes of params; ds (T, B, H)
    is dL/dh_t, the total derivative through all later states (within the window when truncating).
    For the lstm, cache["dc"] (T, B, H) is set to dL/dc_t, likewise total (through h_t and c_{t+1}).
    truncation=k: the gradient of L_t reaches the states (h, and c) at t .. t-k+1 only; k >= T is full BPTT.
    With a `workspace`, ds and the gradients' sources are its buffers (see forward).
    """
    cell = cache.spec.cell
    _, H, O = check_params(params, cell, cache.spec.norm)
    s = cache["s"]
    T, B, _ = s.shape
    dout = F.check_dout(dout, T, B, O, s.dtype)
    k = F.check_truncation(truncation)
    if k is not None and k >= T:
        k = None  # no window is cut: full BPTT

    path = _path(cache.spec)
    loss_steps = F.loss_steps(dout)  # often only the last step carries loss
    ds = buffer(workspace, "ds", s.shape, s.dtype)  # read at the loss steps only
    ds[loss_steps] = dout[loss_steps] @ params["V"].T  # the direct path o_t -> h_t
    kernels = backend.kernels() if path.compiled_backward is not None else None
    if kernels is not None:  # ds becomes dL/dh_t in place
        windows = kernels.windows(path.n_parts, k, B, H, s.dtype)
        pieces = path.compiled_backward(kernels, params, cache, ds, loss_steps, windows, workspace)
    else:
        local = path.local(cache)  # of every step at once: the loop below only does the recurrence

        def step(t, g):
            return path.backprop_step(params, cache, [a[t] for a in local], g)

        dstate, pieces = bptt(step, ds, path.n_parts, loss_steps, k)
        ds = dstate[:, 0]
    grads = path.grads(params, cache, pieces)
    grads["V"] = _sum_outer(s, dout)
    grads["c"] = dout.sum(axis=(0, 1))
    if cell == "lstm":
        cache.arrays["dc"] = pieces[1]
    return {key: grads[key] for key in params}, ds


# --------------------------------------------------------------------------------------------
# What the instruments read: the step Jacobians and the gates
# --------------------------------------------------------------------------------------------


def step_jacobians(params: dict, cache: Cache, sample: int = 0) -> np.ndarray:
    """The one-step Jacobians of the hidden state for one sample, in row form. Returns J (T, H, H).

    J[t][i, j] = d h_t[j] / d h_{t-1}[i] (h_{-1} = h0), so a row perturbation evolves as dh_t = dh_{t-1} J[t]
    and J[t] = W diag(f'(a_t)) for the vanilla RNN (nn.rnn's convention).
    lstm: the h -> h path with c_{t-1} held fixed; the c -> c path is diag(f_t), the forget gate.
    rnn with norm="batch": the per-sample Jacobian with the batch statistics held fixed, i.e. ignoring
    that h_{t-1} of this sample also moves the mean and variance seen by every sample:
    J[t] = W diag(g f'(y_t) / std_t); norm="recurrent_batch" likewise, J[t] = W diag(gh f'(y_t) / std_t),
    std_t that of s_{t-1} W.
    Computed by running the step backward on the basis e_1 .. e_H of dL/dh_t.
    """
    spec = cache.spec
    T, B, H = cache["s"].shape
    sample = F.check_sample(sample, B)
    dtype = cache["s"].dtype
    if spec.norm in ("batch", "recurrent_batch"):
        fprime = F.dactivation(cache["s"][:, sample], spec.activation)  # (T, H)
        if spec.norm == "batch":
            gain, rstd = params["g"], cache["rstd"][:, 0]
        else:
            gain, rstd = params["gh"], 1.0 / np.sqrt(cache["bn_stats"][:, 3] + NORM_EPS)
        return params["W"] * (gain * rstd * fprime)[:, None, :]
    # the cache of this sample alone (batch axis kept with size 1)
    one = Cache(spec, {
        key: value[sample : sample + 1] if key in ("h0", "c0") else value[:, sample : sample + 1]
        for key, value in cache.items()
    })
    n_parts, _, local_derivatives, backprop_step, _, _ = _CELL_PATHS[spec.cell]
    local = local_derivatives(one)
    basis = np.zeros((H, n_parts, 1, H), dtype=dtype)  # the lstm's c part stays zero: c_{t-1} fixed
    basis[:, 0, 0, :] = np.eye(H, dtype=dtype)
    J = np.empty((T, H, H), dtype=dtype)
    for t in range(T):
        g_prev, _ = backprop_step(params, one, [a[t] for a in local], basis)
        J[t] = g_prev[:, 0, 0, :].T  # row j of g_prev is d h_t[j] / d h_{t-1}
    return J


def tangent_map(params: dict, cache: Cache, sample: int = 0) -> Callable[[int, np.ndarray], np.ndarray]:
    """(t, Q (H, k)) -> J[t]^T Q in float64, J from step_jacobians (formed once for all t)."""
    JT = np.swapaxes(step_jacobians(params, cache, sample).astype(np.float64), 1, 2)

    def advance(t: int, q: np.ndarray) -> np.ndarray:
        return JT[t] @ q

    return advance


def gate_outputs(cache: Cache) -> dict[str, tuple[np.ndarray, str]]:
    """Each gate of an lstm or gru cache: name -> (its outputs (T, B, H), a view; its nonlinearity)."""
    gates = GATES[cache.spec.cell]
    return {name: (y, f) for (name, f), y in zip(gates, _blocks(cache["gates"], len(gates)))}
