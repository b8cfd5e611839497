"""The numba backend (see nn.backend): every cell's per-step loops, forward and backward, compiled.

Each kernel runs the recurrence of one sequence function of `nn.rnn` or `nn.cells` in place, on the
arrays that function allocated: one product per step (numba's np.dot, i.e. scipy's BLAS, without
numpy's per-call overhead) and one fused loop over the step's elements (the nonlinearities, the gates,
their derivatives). What does not depend on the recurrence (the input and output products, the weight
gradients) stays numpy's, outside. Arrays are time-major and C-contiguous, float64 or float32 alike
(the elementwise arithmetic runs in float64 and rounds once to the arrays' dtype).

The nonlinearities are computed here, not by libm (whose scalar calls would keep the loops from
vectorizing): exp by the classic reduction u = k ln2 + r, |r| <= ln2/2, with e^r - 1 by its Taylor
series to r^13 (truncation below 1e-17) and 2^k from its bits; tanh(a) = -m / (m + 2) with
m = e^{-2|a|} - 1, which has no cancellation at small |a|; sigmoid(a) = 1 / (1 + e^{-a}). Measured
against long-double references: tanh within 3.7e-16 relative (np.tanh 1.8e-16), sigmoid within
2.9e-16 (numpy's 1 / (1 + exp(-a)) 2.7e-16), i.e. within 3 ulp.

BPTT runs as a set of windows (nn.bptt's semantics): g (n, P, B, H) holds n gradients with respect to
the state at t (P parts: h, and c for the LSTM), start (n,) the loss step each one began at (-1: a free
slot). Full BPTT (k = 0) is one window that every loss term joins; windowed truncation (k >= 1) gives
each loss step u its own slot u % k, which carries its gradient back to the state at u - k + 1.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import numba
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401 -- the BLAS numba's np.dot calls; without it, no numba backend
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

# nogil: a thread may run other work meanwhile; error_model="numpy": a division by zero gives inf or
# nan as numpy does (rather than a Python exception), which also lets the loops vectorize
jit = numba.njit(cache=True, nogil=True, error_model="numpy")
# the nonlinearities may fuse a * b + c into one rounding (an FMA): it is never less accurate
fused = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})

ACTIVATION_CODES = {"tanh": 0, "sigmoid": 1, "relu": 2, "linear": 3}
TANH, SIGMOID, RELU, LINEAR = (ACTIVATION_CODES[f] for f in ("tanh", "sigmoid", "relu", "linear"))
NORM_CODES = {"layer": 0, "batch": 1}
LAYER = NORM_CODES["layer"]


# --------------------------------------------------------------------------------------------
# exp, tanh and sigmoid, elementwise and vectorizable
# --------------------------------------------------------------------------------------------


def _ln2_split() -> tuple[float, float]:
    """ln 2 = hi + lo, hi with its last 16 significand bits zero (so that k * hi is exact for |k| < 2^11)."""
    with localcontext() as ctx:
        ctx.prec = 40
        ln2 = Decimal(2).ln()
        bits = np.array([float(ln2)]).view(np.int64) & ~np.int64(0xFFFF)
        hi = float(bits.view(np.float64)[0])
        return hi, float(ln2 - Decimal(hi))


LN2_HI, LN2_LO = _ln2_split()
LOG2E = 1.0 / math.log(2.0)
# 1/n! for n = 13, 12, ..., 2: e^r - 1 = r + r^2 (1/2! + r (1/3! + ...)), evaluated by Horner
C13, C12, C11, C10, C9, C8, C7, C6, C5, C4, C3, C2 = (1.0 / math.factorial(n) for n in range(13, 1, -1))
TANH_ONE = 20.0  # tanh(a) rounds to 1 for |a| > 19.1
SIGMOID_LOW, SIGMOID_HIGH = -40.0, 709.0  # 1 + e^v rounds to 1 below; e^v overflows above


@intrinsic
def _float_from_bits(typingctx, bits):
    """The float64 whose bit pattern is the int64 `bits` (a bitcast: 2^k is (k + 1023) << 52)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@fused
def _exp_parts(u):
    """e^u = 2^k (1 + p) for u in [-1022 ln2, 1023 ln2]: returns (2^k, p), p = e^r - 1 with r = u - k ln2."""
    k = math.floor(u * LOG2E + 0.5)
    r = (u - k * LN2_HI) - k * LN2_LO
    p = C7 + r * (C8 + r * (C9 + r * (C10 + r * (C11 + r * (C12 + r * C13)))))
    p = C2 + r * (C3 + r * (C4 + r * (C5 + r * (C6 + r * p))))
    p = r + (r * r) * p
    return _float_from_bits((np.int64(k) + 1023) << 52), p


@fused
def tanh(a):
    """tanh(a) = -m / (m + 2), m = e^{-2|a|} - 1, with a's sign; NaN stays NaN."""
    x = abs(a)
    if x > TANH_ONE:
        x = TANH_ONE
    scale, p = _exp_parts(-2.0 * x)
    m = scale * p + (scale - 1.0)  # e^u - 1 = 2^k p + (2^k - 1): exact at k = 0, no cancellation after
    y = -m / (m + 2.0)
    return y if a >= 0 else -y


@fused
def sigmoid(a):
    """1 / (1 + e^{-a}); for a < -709, where numpy's e^{-a} overflows to a result of 0, a value below 1.3e-308."""
    v = -a
    if v < SIGMOID_LOW:  # NaN fails both tests and stays NaN
        v = SIGMOID_LOW
    elif v > SIGMOID_HIGH:
        v = SIGMOID_HIGH
    scale, p = _exp_parts(v)
    return 1.0 / (1.0 + (scale + scale * p))


@jit
def activate(a, act):
    """f(a) for the activation code `act`."""
    if act == TANH:
        return tanh(a)
    if act == SIGMOID:
        return sigmoid(a)
    if act == RELU:
        return 0.0 if a < 0.0 else a  # NaN stays NaN, as with np.maximum
    return a


@jit
def dactivation(s, act):
    """f'(a) from the output s = f(a) (nn.functional.dactivation)."""
    if act == TANH:
        return 1.0 - s * s
    if act == SIGMOID:
        return s * (1.0 - s)
    if act == RELU:
        return 1.0 if s > 0.0 else 0.0
    return 1.0


@jit
def add_activate(s, rec, act):
    """s = f(s + rec) in place, s and rec (B, H); one loop per activation, so that each vectorizes."""
    s, rec = s.reshape(-1), rec.reshape(-1)
    if act == TANH:
        for i in range(s.size):
            s[i] = tanh(s[i] + rec[i])
    elif act == SIGMOID:
        for i in range(s.size):
            s[i] = sigmoid(s[i] + rec[i])
    else:
        for i in range(s.size):
            s[i] = activate(s[i] + rec[i], act)


@jit
def times_dactivation(out, ds, s, act):
    """out = ds * f'(a), f' from the outputs s; all (B, H)."""
    out, ds, s = out.reshape(-1), ds.reshape(-1), s.reshape(-1)
    for i in range(out.size):
        out[i] = ds[i] * dactivation(s[i], act)


@jit
def matmul(a, b):
    """a @ b, 2-d (nn.backend.matmul)."""
    return np.dot(a, b)


# --------------------------------------------------------------------------------------------
# The BPTT windows (see the module docstring)
# --------------------------------------------------------------------------------------------


@jit
def open_window(g, start, ds_t, t, k):
    """The loss at step t enters with its direct gradient ds_t (B, H): it joins the one window of full
    BPTT (k = 0), or takes slot t % k (whose previous window, started at t + k, has ended)."""
    if k == 0 and start[0] >= 0:
        g[0, 0] += ds_t
        return
    w = 0 if k == 0 else t % k
    g[w] = 0.0
    g[w, 0] = ds_t
    start[w] = t


@jit
def sum_windows(g, start, out):
    """out (B, H) = the sum of the open windows' h part; returns how many are open."""
    out[...] = 0.0
    n_open = 0
    for w in range(start.size):
        if start[w] >= 0:
            out += g[w, 0]
            n_open += 1
    return n_open


@jit
def close_windows(start, t, k):
    """Windows that have reached their last state (t = u - k + 1) end; full BPTT's never does."""
    if k > 0:
        for w in range(start.size):
            if start[w] >= 0 and start[w] - t == k - 1:
                start[w] = -1


def windows(n_parts: int, k: int | None, B: int, H: int, dtype) -> tuple[int, np.ndarray, np.ndarray]:
    """The kernels' window arguments (k, g, start) for full BPTT (k None, passed as 0) or windows of k
    steps: g (n, n_parts, B, H) and start (n,), n = 1 or k."""
    n = 1 if k is None else k
    return (0 if k is None else k), np.zeros((n, n_parts, B, H), dtype=dtype), np.full(n, -1, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# The vanilla RNN
# --------------------------------------------------------------------------------------------


@jit
def rnn_forward(states, W, act, rec):
    """s_t = f(x_t U + b + s_{t-1} W) in place. states (T + 1, B, H): states[0] = h0 and states[t + 1] =
    x_t U + b on entry, states[t + 1] = s_t on return; W (H, H); rec (B, H) scratch."""
    for t in range(states.shape[0] - 1):
        np.dot(states[t], W, rec)
        add_activate(states[t + 1], rec, act)


@jit
def rnn_backward(ds, da, s, WT, act, loss_steps, k, g, start, tmp):
    """BPTT of the vanilla RNN in place (nn.rnn._bptt_full and _bptt_windowed in one loop).

    ds (T, B, H): the direct gradients on the loss steps on entry, dL/ds_t on return; da (T, B, H):
    dL/da_t on return; s (T, B, H) the states; WT = W^T (H, H); loss_steps (T,) bool; k, g (n, 1, B, H),
    start: the windows (see `windows`); tmp (B, H) scratch.
    """
    for t in range(ds.shape[0] - 1, -1, -1):
        if loss_steps[t]:
            open_window(g, start, ds[t], t, k)
        n_open = sum_windows(g, start, ds[t])
        times_dactivation(da[t], ds[t], s[t], act)
        for w in range(start.size):
            if start[w] >= 0 and t > 0 and continues(start[w], t, k):
                if n_open == 1:  # ds_t is this window's gradient: da_t is its dL/da_t
                    np.dot(da[t], WT, g[w, 0])
                else:
                    times_dactivation(tmp, g[w, 0], s[t], act)
                    np.dot(tmp, WT, g[w, 0])
        close_windows(start, t, k)


# --------------------------------------------------------------------------------------------
# The gated cells and the normalized RNN (nn.cells' sequence loops). A forward stores what a step
# makes at index t % n of its per-step arrays (c at (t + 1) % n): n = T (T + 1 for c) keeps every
# step, for backward; n = 1 (2) keeps only the last, for inference.
# --------------------------------------------------------------------------------------------


@jit
def lstm_forward(xu, h, c, gates, tanh_c, W, pre):
    """LSTM steps (nn.cells.lstm_step_forward). xu (T, B, 4H) = x_t U + b; h (T + 1, B, H) with h[0] = h0,
    h_t at t + 1 on return; c (n + 1, B, H) with c[0] = c0; gates (n, B, 4H) = [i f g o] after their
    nonlinearities and tanh_c (n, B, H); W (H, 4H); pre (B, 4H) scratch."""
    n_c, n = c.shape[0], gates.shape[0]
    for t in range(xu.shape[0]):
        np.dot(h[t], W, pre)
        _lstm_cell(pre, xu[t], c[t % n_c], c[(t + 1) % n_c], gates[t % n], tanh_c[t % n], h[t + 1])


@jit
def _lstm_cell(pre, xu, c_prev, c, gates, tanh_c, h):
    B, H = h.shape
    for b in range(B):
        for j in range(H):
            i = sigmoid(pre[b, j] + xu[b, j])
            f = sigmoid(pre[b, H + j] + xu[b, H + j])
            g = tanh(pre[b, 2 * H + j] + xu[b, 2 * H + j])
            o = sigmoid(pre[b, 3 * H + j] + xu[b, 3 * H + j])
            c[b, j] = f * c_prev[b, j] + i * g
            tanh_c[b, j] = tanh(c[b, j])
            h[b, j] = o * tanh_c[b, j]
            gates[b, j], gates[b, H + j], gates[b, 2 * H + j], gates[b, 3 * H + j] = i, f, g, o


@jit
def lstm_backward(ds, dc, dgates, gates, c_prev, tanh_c, WT, loss_steps, k, g, start, part, dc_part):
    """LSTM BPTT (nn.cells.lstm_step_backward over nn.bptt's windows). ds (T, B, H): the direct gradients
    on the loss steps on entry, dL/dh_t on return; dc (T, B, H) gets dL/dc_t and dgates (T, B, 4H)
    dL/d[i f g o] before the nonlinearities; gates, c_prev, tanh_c: the forward's; WT = W^T (4H, H);
    g (n, 2, B, H): the windows' dL/dh and dL/dc; part (B, 4H), dc_part (B, H) scratch."""
    for t in range(ds.shape[0] - 1, -1, -1):
        if loss_steps[t]:
            open_window(g, start, ds[t], t, k)
        sum_windows(g, start, ds[t])
        dgates[t], dc[t] = 0.0, 0.0
        for w in range(start.size):
            if start[w] >= 0:
                _lstm_step_back(g[w, 0], g[w, 1], gates[t], c_prev[t], tanh_c[t], part, dc_part)
                dgates[t] += part
                dc[t] += dc_part
                if t > 0 and continues(start[w], t, k):
                    np.dot(part, WT, g[w, 0])
        close_windows(start, t, k)


@jit
def _lstm_step_back(dh, dc_next, gates, c_prev, tanh_c, dgates, dc_total):
    """One window through one step: dh (B, H) = dL/dh_t, dc_next (B, H) = dL/dc_t through c_{t+1}, which
    becomes dL/dc_{t-1}; writes dgates (B, 4H) and dc_total (B, H), dL/dc_t through h_t and c_{t+1}."""
    B, H = dh.shape
    for b in range(B):
        for j in range(H):
            i, f, g, o = gates[b, j], gates[b, H + j], gates[b, 2 * H + j], gates[b, 3 * H + j]
            y = tanh_c[b, j]
            dct = dh[b, j] * ((1.0 - y * y) * o) + dc_next[b, j]
            dgates[b, j] = dct * (i * (1.0 - i) * g)  # c_t = f c_{t-1} + i g, h_t = o tanh(c_t)
            dgates[b, H + j] = dct * (f * (1.0 - f) * c_prev[b, j])
            dgates[b, 2 * H + j] = dct * ((1.0 - g * g) * i)
            dgates[b, 3 * H + j] = dh[b, j] * (o * (1.0 - o) * y)
            dc_total[b, j] = dct
            dc_next[b, j] = dct * f  # the cell state's linear path


@jit
def continues(u, t, k):
    """Whether the window that began at loss step u goes on from the state at t to the one at t - 1."""
    return k == 0 or u - t < k - 1


@jit
def gru_forward(xu, h, gates, hw_n, W, bw, hw):
    """GRU steps (nn.cells.gru_step_forward). xu (T, B, 3H) = x_t U + b; h (T + 1, B, H) with h[0] = h0;
    gates (n, B, 3H) = [r z n] and hw_n (n, B, H) = h_{t-1} W_n + bw_n; W (H, 3H); bw (3H,); hw (B, 3H) scratch."""
    n = gates.shape[0]
    for t in range(xu.shape[0]):
        np.dot(h[t], W, hw)
        _gru_cell(hw, bw, xu[t], h[t], gates[t % n], hw_n[t % n], h[t + 1])


@jit
def _gru_cell(hw, bw, xu, h_prev, gates, hw_n, h):
    B, H = h.shape
    for b in range(B):
        for j in range(H):
            r = sigmoid(xu[b, j] + (hw[b, j] + bw[j]))
            z = sigmoid(xu[b, H + j] + (hw[b, H + j] + bw[H + j]))
            hw_n[b, j] = hw[b, 2 * H + j] + bw[2 * H + j]
            n = tanh(r * hw_n[b, j] + xu[b, 2 * H + j])
            h[b, j] = (h_prev[b, j] - n) * z + n  # (1 - z) n + z h_{t-1}
            gates[b, j], gates[b, H + j], gates[b, 2 * H + j] = r, z, n


@jit
def gru_backward(ds, dpre, gates, hw_n, h_prev, WT, loss_steps, k, g, start, dhw, dn_x, dh_z):
    """GRU BPTT (nn.cells.gru_step_backward over the windows). ds (T, B, H) as for the LSTM; dpre
    (T, B, 4H) gets dL/d[r z n_h n_x]; gates, hw_n, h_prev (T, B, H): the forward's; WT = W^T (3H, H);
    g (n, 1, B, H); dhw (B, 3H), dn_x (B, H), dh_z (B, H) scratch."""
    H = ds.shape[2]
    for t in range(ds.shape[0] - 1, -1, -1):
        if loss_steps[t]:
            open_window(g, start, ds[t], t, k)
        sum_windows(g, start, ds[t])
        dpre[t] = 0.0
        for w in range(start.size):
            if start[w] >= 0:
                _gru_step_back(g[w, 0], gates[t], hw_n[t], h_prev[t], dhw, dn_x, dh_z)
                dpre[t, :, : 3 * H] += dhw
                dpre[t, :, 3 * H :] += dn_x
                if t > 0 and continues(start[w], t, k):
                    np.dot(dhw, WT, g[w, 0])
                    g[w, 0] += dh_z  # z also copies h_{t-1} straight through
        close_windows(start, t, k)


@jit
def _gru_step_back(dh, gates, hw_n, h_prev, dhw, dn_x, dh_z):
    """One window through one step, dh (B, H) = dL/dh_t: dhw (B, 3H) = dL/d(h_{t-1} W + bw) = [r z n_h],
    dn_x (B, H) = dL/d(x_t U_n + b_n), dh_z = dh z."""
    B, H = dh.shape
    for b in range(B):
        for j in range(H):
            r, z, n = gates[b, j], gates[b, H + j], gates[b, 2 * H + j]
            through_n = (1.0 - n * n) * (1.0 - z)  # h_t = (1 - z) n + z h_{t-1}, n = tanh(.)
            dhw[b, j] = dh[b, j] * ((1.0 - r) * r * hw_n[b, j] * through_n)
            dhw[b, H + j] = dh[b, j] * ((1.0 - z) * z * (h_prev[b, j] - n))
            dhw[b, 2 * H + j] = dh[b, j] * (through_n * r)
            dn_x[b, j] = dh[b, j] * through_n
            dh_z[b, j] = dh[b, j] * z


@jit
def norm_forward(xu, s, a_hat, rstd, W, gain, bias, norm, act, eps):
    """Normalized RNN steps (nn.cells.norm_step_forward). xu (T, B, H) = x_t U; s (T + 1, B, H) with
    s[0] = h0; a_hat (n, B, H); rstd (n, B, 1) for layer, (n, 1, H) for batch; W (H, H); gain, bias (H,);
    eps: added to the variance."""
    n = a_hat.shape[0]
    for t in range(xu.shape[0]):
        a = a_hat[t % n]
        np.dot(s[t], W, a)
        a += xu[t]
        _normalize(a, rstd[t % n], norm, eps)
        _gain_activate(a, gain, bias, s[t + 1], act)


@jit
def _normalize(a, rstd, norm, eps):
    """a (B, H) -> (a - mean) / sqrt(var + eps) in place, over the units of each sample (layer) or the
    batch of each unit (batch); rstd ((B, 1) or (1, H)) gets 1 / sqrt(var + eps)."""
    B, H = a.shape
    if norm == LAYER:
        for b in range(B):
            a[b] -= a[b].sum() / H
            rstd[b, 0] = 1.0 / math.sqrt((a[b] * a[b]).sum() / H + eps)
            a[b] *= rstd[b, 0]
    else:
        mean = a.sum(axis=0) / B
        a -= mean
        rstd[0] = 1.0 / np.sqrt((a * a).sum(axis=0) / B + eps)
        a *= rstd[0]


@jit
def _gain_activate(a_hat, gain, bias, s, act):
    """s (B, H) = f(gain a_hat + bias)."""
    B, H = s.shape
    for b in range(B):
        for j in range(H):
            s[b, j] = activate(gain[j] * a_hat[b, j] + bias[j], act)


@jit
def norm_backward(ds, da, dy, a_hat, rstd, s, gain, WT, norm, act, loss_steps, k, g, start, da_part, dy_part):
    """Normalized RNN BPTT (nn.cells.norm_step_backward over the windows). ds (T, B, H) as for the LSTM;
    da (T, B, H) gets dL/d(x_t U + s_{t-1} W), dy (T, B, H) dL/d(gain a_hat + bias); a_hat, rstd, s: the
    forward's; WT = W^T (H, H); g (n, 1, B, H); da_part, dy_part (B, H) scratch."""
    for t in range(ds.shape[0] - 1, -1, -1):
        if loss_steps[t]:
            open_window(g, start, ds[t], t, k)
        sum_windows(g, start, ds[t])
        da[t], dy[t] = 0.0, 0.0
        for w in range(start.size):
            if start[w] >= 0:
                times_dactivation(dy_part, g[w, 0], s[t], act)
                _normalize_back(dy_part * gain, a_hat[t], rstd[t], norm, da_part)
                da[t] += da_part
                dy[t] += dy_part
                if t > 0 and continues(start[w], t, k):
                    np.dot(da_part, WT, g[w, 0])
        close_windows(start, t, k)


@jit
def _normalize_back(da_hat, a_hat, rstd, norm, da):
    """da (B, H) = dL/da from dL/da_hat: the mean and the variance depend on every a in the group."""
    if norm == LAYER:
        H = da.shape[1]
        for b in range(da.shape[0]):
            da[b] = da_hat[b] - da_hat[b].sum() / H
            da[b] -= a_hat[b] * ((da_hat[b] * a_hat[b]).sum() / H)
            da[b] *= rstd[b, 0]
    else:
        B = da.shape[0]
        da[...] = da_hat - da_hat.sum(axis=0) / B
        da -= a_hat * ((da_hat * a_hat).sum(axis=0) / B)
        da *= rstd[0]
