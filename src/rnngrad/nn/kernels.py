"""The numba backend (see nn.backend): every cell's per-step loops, forward and backward, compiled.

Each kernel runs the recurrence of one sequence function of `nn.rnn` or `nn.cells` in place, on the
arrays that function allocated: the step's products (numba's np.dot, i.e. scipy's BLAS, without
numpy's per-call overhead) and a few fused loops over its elements (the nonlinearities, the gates,
their derivatives). The cells form their input path x_t U step by step too: the numpy loops' (T, B, G)
array of all steps, written and read back, cost more than the products. The rest (the vanilla RNN's
input product, the outputs, the weight gradients) stays outside, in numpy (the weight gradients
through `matmul`). Arrays are
time-major and C-contiguous, float64 or float32 alike; float32 arithmetic stays float32, except inside
the nonlinearities, which compute in float64 and round once.

The nonlinearities are computed here, not by libm (whose scalar calls would keep the loops from
vectorizing): exp by the classic reduction u = k ln2 + r, |r| <= ln2/2, with e^r - 1 by its Taylor
series to r^13 (truncation below 1e-17) and 2^k from its bits; tanh and sigmoid from m = e^v - 1
(`squash`): tanh(|a|) = -m / (m + 2) with v = -2|a|, which has no cancellation at small |a|, and
sigmoid(a) = 1 / (m + 2) with v = -a. Measured against long-double references over 2e6 points in
[-25, 25] (and 1e3 in [-1e-3, 1e-3]): tanh within 3.6e-16 relative (np.tanh 1.8e-16), sigmoid within
2.2e-16 (numpy's 1 / (1 + exp(-a)) 2.7e-16); against np.tanh within 4.5e-16, i.e. 2 ulp.

BPTT runs as a set of windows (nn.bptt's semantics): g (n, P, B, H) holds n gradients with respect to
the state at t (P parts: h, and c for the LSTM), start (n,) the loss step each one began at (-1: a free
slot). Full BPTT (k = 0) is one window that every loss term joins; windowed truncation (k >= 1) gives
each loss step u its own slot u % k, which carries its gradient back to the state at u - k + 1.
"""

from __future__ import annotations

import math
from pathlib import Path
from decimal import Decimal, localcontext

import numba
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401 -- the BLAS numba's np.dot calls; without it, no numba backend
from llvmlite import ir
from numba import types
from numba.extending import intrinsic
from threadpoolctl import ThreadpoolController

# nogil: a thread may run other work meanwhile; error_model="numpy": a division by zero gives inf or
# nan as numpy does (rather than a Python exception), which also lets the loops vectorize
jit = numba.njit(cache=True, nogil=True, error_model="numpy")
# the nonlinearities may fuse a * b + c into one rounding (an FMA): it is never less accurate
fused = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})


def _single_threaded_blas() -> None:
    """Run scipy's OpenBLAS, loaded only now and called only by these kernels, on one thread. Its products
    at the study's sizes are too small to share: threads bought nothing (a default run, adding T 50, H 64)
    and cost 1.6x, because its idle workers spin beside numpy's BLAS workers and the kernels' own loops on
    two cores (measured: 2.99 s with two threads each, 1.83 s with one here). numpy's BLAS keeps its count;
    a threadpoolctl limit entered later covers both."""
    blas = ThreadpoolController().select(user_api="blas")
    kernels_blas = [lib for lib in blas.lib_controllers if "numpy" not in Path(lib.filepath).parent.name]
    for lib in kernels_blas:
        lib.set_num_threads(1)


_single_threaded_blas()

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
SQUASH_LOW, SQUASH_HIGH = -40.0, 709.0  # the range of v in squash


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
def squash(a, is_tanh):
    """tanh(a) if is_tanh else sigmoid(a), by one formula (so that a loop over gates of both kinds vectorizes):
    with m = e^v - 1, v = -2|a| for tanh and -a for sigmoid, tanh(|a|) = -m / (m + 2) and sigmoid(a) =
    1 / (m + 2). m = 2^k p + (2^k - 1) is exact at k = 0: no cancellation at small |a|. v is kept in
    [-40, 709], where 1 + e^v rounds to 1 below and e^v overflows above (so sigmoid(a) for a < -709, 0 in
    numpy, is a number below 1.3e-308 here); NaN stays NaN."""
    v = -2.0 * abs(a) if is_tanh else -a
    if v < SQUASH_LOW:
        v = SQUASH_LOW
    elif v > SQUASH_HIGH:
        v = SQUASH_HIGH
    scale, p = _exp_parts(v)
    m = scale * p + (scale - 1.0)
    y = (-m if is_tanh else 1.0) / (m + 2.0)
    return -y if is_tanh and a < 0 else y


@jit
def tanh(a):
    return squash(a, True)


@jit
def sigmoid(a):
    return squash(a, False)


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
def add(a, b):
    """a += b, both (B, H)."""
    a, b = a.reshape(-1), b.reshape(-1)
    for i in range(a.size):
        a[i] += b[i]


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
def begin_step(g, start, ds, loss_steps, t, k):
    """Step t of a backward loop: the loss at t enters (open_window), and ds[t] becomes the sum of the open
    windows' h part; returns how many are open."""
    if loss_steps[t]:
        open_window(g, start, ds[t], t, k)
    return sum_windows(g, start, ds[t])


@jit
def piece_targets(single, total_a, total_b, part_a, part_b):
    """Where the windows write their two pieces (per-step gradient sources) at a step: straight into the
    step's totals when one window is open, else into the scratch parts, which `accumulate` adds to the
    totals (zeroed here)."""
    if single:
        return total_a, total_b
    total_a[...] = 0.0
    total_b[...] = 0.0
    return part_a, part_b


@jit
def accumulate(single, total_a, total_b, part_a, part_b):
    """Add a window's parts to the step's totals, unless it wrote them there itself (piece_targets)."""
    if not single:
        add(total_a, part_a)
        add(total_b, part_b)


@jit
def continues(u, t, k):
    """Whether the window that began at loss step u goes on from the state at t to the one at t - 1."""
    return k == 0 or u - t < k - 1


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
    """BPTT of the vanilla RNN in place (nn.rnn._bptt_full and _bptt_windowed).

    ds (T, B, H): the direct gradients on the loss steps on entry, dL/ds_t on return; da (T, B, H):
    dL/da_t on return; s (T, B, H) the states; WT = W^T (H, H); loss_steps (T,) bool; k, g (n, 1, B, H),
    start: the windows (see `windows`); tmp (B, H) scratch.
    """
    if k == 0:
        _rnn_bptt_full(ds, da, s, WT, act, loss_steps, tmp)
        return
    for t in range(ds.shape[0] - 1, -1, -1):
        n_open = begin_step(g, start, ds, loss_steps, t, k)
        times_dactivation(da[t], ds[t], s[t], act)
        for w in range(start.size):
            if start[w] >= 0 and t > 0 and continues(start[w], t, k):
                if n_open == 1:  # ds_t is this window's gradient: da_t is its dL/da_t
                    np.dot(da[t], WT, g[w, 0])
                else:
                    times_dactivation(tmp, g[w, 0], s[t], act)
                    np.dot(tmp, WT, g[w, 0])
        close_windows(start, t, k)


@jit
def _rnn_bptt_full(ds, da, s, WT, act, loss_steps, carry):
    """Full BPTT with its one window kept in ds itself, as nn.rnn._bptt_full: ds_t = ds_out_t + da_{t+1} W^T."""
    T = ds.shape[0]
    if not loss_steps[T - 1]:
        ds[T - 1] = 0.0
    for t in range(T - 1, -1, -1):
        times_dactivation(da[t], ds[t], s[t], act)
        if t > 0 and loss_steps[t - 1]:
            np.dot(da[t], WT, carry)
            ds[t - 1] += carry
        elif t > 0:  # no direct gradient to add: straight into ds_{t-1}
            np.dot(da[t], WT, ds[t - 1])


# --------------------------------------------------------------------------------------------
# The gated cells and the normalized RNN (nn.cells' sequence loops). A forward stores what a step
# makes at index t % n of its per-step arrays (c at (t + 1) % n): n = T (T + 1 for c) keeps every
# step, for backward; n = 1 (2) keeps only the last, for inference.
# --------------------------------------------------------------------------------------------


@jit
def lstm_forward(x, U, b, h, c, gates, tanh_c, W, xu):
    """LSTM steps (nn.cells.lstm_step_forward). x (T, B, D); U (D, 4H), b (4H,); h (T + 1, B, H) with
    h[0] = h0, h_t at t + 1 on return; c (n + 1, B, H) with c[0] = c0; gates (n, B, 4H) = [i f g o] after
    their nonlinearities and tanh_c (n, B, H); W (H, 4H); xu (B, 4H) scratch for x_t U."""
    n_c, n = c.shape[0], gates.shape[0]
    for t in range(x.shape[0]):
        np.dot(x[t], U, xu)
        np.dot(h[t], W, gates[t % n])
        _lstm_gates(gates[t % n], xu, b)
        _lstm_state(gates[t % n], c[t % n_c], c[(t + 1) % n_c], tanh_c[t % n], h[t + 1])


@jit
def _lstm_gates(gates, xu, bias):
    """gates (B, 4H): h_{t-1} W on entry, [i f g o] = [sigmoid sigmoid tanh sigmoid](h_{t-1} W + (x_t U + b))
    on return; xu (B, 4H) = x_t U, bias (4H,) = b."""
    H = gates.shape[1] // 4
    for b in range(gates.shape[0]):
        row, x = gates[b], xu[b]
        for j in range(4 * H):
            row[j] = squash(row[j] + (x[j] + bias[j]), 2 * H <= j < 3 * H)


@jit
def _lstm_state(gates, c_prev, c, tanh_c, h):
    """c = f c_prev + i g, h = o tanh(c), all (B, H) but gates (B, 4H). (Loops over at most three arrays each
    here and below: with more, the compiler no longer proves them apart and leaves the loop unvectorized.)"""
    H = h.shape[1]
    for b in range(h.shape[0]):
        i, f, g, o = gates[b, :H], gates[b, H : 2 * H], gates[b, 2 * H : 3 * H], gates[b, 3 * H :]
        for j in range(H):
            c[b, j] = f[j] * c_prev[b, j] + i[j] * g[j]
        for j in range(H):
            tanh_c[b, j] = tanh(c[b, j])
        for j in range(H):
            h[b, j] = o[j] * tanh_c[b, j]


@jit
def lstm_backward(ds, dc, dgates, gates, c_prev, tanh_c, WT, loss_steps, k, g, start, part, dc_part):
    """LSTM BPTT (nn.cells.lstm_step_backward over nn.bptt's windows). ds (T, B, H): the direct gradients
    on the loss steps on entry, dL/dh_t on return; dc (T, B, H) gets dL/dc_t and dgates (T, B, 4H)
    dL/d[i f g o] before the nonlinearities; gates, c_prev, tanh_c: the forward's; WT = W^T (4H, H);
    g (n, 2, B, H): the windows' dL/dh and dL/dc; part (B, 4H), dc_part (B, H) scratch."""
    for t in range(ds.shape[0] - 1, -1, -1):
        single = begin_step(g, start, ds, loss_steps, t, k) == 1
        d_gates, d_c = piece_targets(single, dgates[t], dc[t], part, dc_part)
        for w in range(start.size):
            if start[w] >= 0:
                _lstm_step_back(g[w, 0], g[w, 1], gates[t], c_prev[t], tanh_c[t], d_gates, d_c)
                accumulate(single, dgates[t], dc[t], part, dc_part)
                if t > 0 and continues(start[w], t, k):
                    np.dot(d_gates, WT, g[w, 0])
        close_windows(start, t, k)


@jit
def _lstm_step_back(dh, dc_next, gates, c_prev, tanh_c, dgates, dc_total):
    """One window through one step: dh (B, H) = dL/dh_t, dc_next (B, H) = dL/dc_t through c_{t+1}, which
    becomes dL/dc_{t-1}; writes dgates (B, 4H) and dc_total (B, H), dL/dc_t through h_t and c_{t+1}."""
    H = dh.shape[1]
    for b in range(dh.shape[0]):
        i, f, g, o = gates[b, :H], gates[b, H : 2 * H], gates[b, 2 * H : 3 * H], gates[b, 3 * H :]
        y, dct = tanh_c[b], dc_total[b]
        d_i, d_f, d_g, d_o = dgates[b, :H], dgates[b, H : 2 * H], dgates[b, 2 * H : 3 * H], dgates[b, 3 * H :]
        for j in range(H):
            dct[j] = (1.0 - y[j] * y[j]) * o[j]  # dh_t/dc_t
        for j in range(H):
            dct[j] = dh[b, j] * dct[j] + dc_next[b, j]
        for j in range(H):  # c_t = f c_{t-1} + i g, h_t = o tanh(c_t)
            d_i[j] = dct[j] * (i[j] * (1.0 - i[j]) * g[j])
        for j in range(H):
            d_f[j] = dct[j] * (f[j] * (1.0 - f[j]) * c_prev[b, j])
        for j in range(H):
            d_g[j] = dct[j] * ((1.0 - g[j] * g[j]) * i[j])
        for j in range(H):
            d_o[j] = dh[b, j] * (o[j] * (1.0 - o[j]) * y[j])
        for j in range(H):
            dc_next[b, j] = dct[j] * f[j]  # the cell state's linear path


@jit
def gru_forward(x, U, b, h, gates, hw_n, W, bw, hw, xu):
    """GRU steps (nn.cells.gru_step_forward). x (T, B, D); U (D, 3H), b (3H,); h (T + 1, B, H) with
    h[0] = h0; gates (n, B, 3H) = [r z n] and hw_n (n, B, H) = h_{t-1} W_n + bw_n; W (H, 3H); bw (3H,);
    hw (B, 3H) and xu (B, 3H) scratch for h_{t-1} W and x_t U."""
    n = gates.shape[0]
    for t in range(x.shape[0]):
        np.dot(x[t], U, xu)
        np.dot(h[t], W, hw)
        _gru_cell(hw, bw, xu, b, h[t], gates[t % n], hw_n[t % n], h[t + 1])


@jit
def _gru_cell(hw, bw, xu, bias, h_prev, gates, hw_n, h):
    """One GRU step's elementwise part; hw (B, 3H) = h_{t-1} W, xu (B, 3H) = x_t U, bias (3H,) = b."""
    H = h.shape[1]
    for b in range(h.shape[0]):
        rz, n, hw_b, x = gates[b, : 2 * H], gates[b, 2 * H :], hw[b], xu[b]
        for j in range(2 * H):
            rz[j] = sigmoid((x[j] + bias[j]) + (hw_b[j] + bw[j]))
        for j in range(H):
            hw_n[b, j] = hw_b[2 * H + j] + bw[2 * H + j]
        for j in range(H):
            n[j] = tanh(rz[j] * hw_n[b, j] + (x[2 * H + j] + bias[2 * H + j]))
        for j in range(H):
            h[b, j] = (h_prev[b, j] - n[j]) * rz[H + j] + n[j]  # (1 - z) n + z h_{t-1}


@jit
def gru_backward(ds, dpre, gates, hw_n, h_prev, WT, loss_steps, k, g, start, dhw, dn_x, dh_z):
    """GRU BPTT (nn.cells.gru_step_backward over the windows). ds (T, B, H) as for the LSTM; dpre
    (T, B, 4H) gets dL/d[r z n_h n_x]; gates, hw_n, h_prev (T, B, H): the forward's; WT = W^T (3H, H);
    g (n, 1, B, H); dhw (B, 3H), dn_x (B, H), dh_z (B, H) scratch."""
    H = ds.shape[2]
    for t in range(ds.shape[0] - 1, -1, -1):
        begin_step(g, start, ds, loss_steps, t, k)
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
    H = dh.shape[1]
    for b in range(dh.shape[0]):
        r, z, n = gates[b, :H], gates[b, H : 2 * H], gates[b, 2 * H :]
        d_r, d_z, d_nh, through_n = dhw[b, :H], dhw[b, H : 2 * H], dhw[b, 2 * H :], dn_x[b]
        for j in range(H):
            through_n[j] = (1.0 - n[j] * n[j]) * (1.0 - z[j])  # h_t = (1 - z) n + z h_{t-1}, n = tanh(.)
        for j in range(H):
            d_r[j] = dh[b, j] * ((1.0 - r[j]) * r[j] * hw_n[b, j] * through_n[j])
        for j in range(H):
            d_z[j] = dh[b, j] * ((1.0 - z[j]) * z[j] * (h_prev[b, j] - n[j]))
        for j in range(H):
            d_nh[j] = dh[b, j] * (through_n[j] * r[j])
        for j in range(H):
            dh_z[b, j] = dh[b, j] * z[j]
        for j in range(H):
            through_n[j] *= dh[b, j]  # now dn_x


@jit
def norm_forward(x, U, s, a_hat, rstd, W, gain, bias, norm, act, eps, xu):
    """Normalized RNN steps (nn.cells.norm_step_forward). x (T, B, D); U (D, H); s (T + 1, B, H) with
    s[0] = h0; a_hat (n, B, H); rstd (n, B, 1) for layer, (n, 1, H) for batch; W (H, H); gain, bias (H,);
    eps: added to the variance; xu (B, H) scratch for x_t U."""
    n = a_hat.shape[0]
    sums = np.empty(W.shape[0], dtype=W.dtype)  # batch norm's per-unit sums
    for t in range(x.shape[0]):
        a = a_hat[t % n]
        np.dot(x[t], U, xu)
        np.dot(s[t], W, a)
        add(a, xu)
        if norm == LAYER:
            _normalize_rows(a, rstd[t % n], eps)
        else:
            _normalize_columns(a, rstd[t % n], eps, sums)
        _gain_activate(a, gain, bias, s[t + 1], act)


@jit
def _normalize_rows(a, rstd, eps):
    """Layer norm in place: each row of a (B, H) to (a - mean) / sqrt(var + eps); rstd (B, 1) = 1 / sqrt(var + eps)."""
    B, H = a.shape
    for b in range(B):
        row = a[b]
        mean = 0.0
        for j in range(H):
            mean += row[j]
        mean /= H
        var = 0.0
        for j in range(H):
            row[j] -= mean
            var += row[j] * row[j]
        rstd[b, 0] = 1.0 / math.sqrt(var / H + eps)
        for j in range(H):
            row[j] *= rstd[b, 0]


@jit
def _normalize_columns(a, rstd, eps, sums):
    """Batch norm in place: each column of a (B, H) over the batch; rstd (1, H); sums (H,) scratch."""
    B, H = a.shape
    _column_sums(a, sums)
    for b in range(B):
        for j in range(H):
            a[b, j] -= sums[j] / B
    sums[:] = 0.0
    for b in range(B):
        for j in range(H):
            sums[j] += a[b, j] * a[b, j]
    for j in range(H):
        rstd[0, j] = 1.0 / math.sqrt(sums[j] / B + eps)
    for b in range(B):
        for j in range(H):
            a[b, j] *= rstd[0, j]


@jit
def _column_sums(a, sums):
    """sums (H,) = the sum of a (B, H) over its rows."""
    sums[:] = 0.0
    for b in range(a.shape[0]):
        for j in range(a.shape[1]):
            sums[j] += a[b, j]


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
    m1, m2 = np.empty(ds.shape[2], dtype=ds.dtype), np.empty(ds.shape[2], dtype=ds.dtype)
    for t in range(ds.shape[0] - 1, -1, -1):
        single = begin_step(g, start, ds, loss_steps, t, k) == 1
        d_a, d_y = piece_targets(single, da[t], dy[t], da_part, dy_part)
        for w in range(start.size):
            if start[w] >= 0:
                times_dactivation(d_y, g[w, 0], s[t], act)
                if norm == LAYER:
                    _normalize_rows_back(d_y, gain, a_hat[t], rstd[t], d_a)
                else:
                    _normalize_columns_back(d_y, gain, a_hat[t], rstd[t], d_a, m1, m2)
                accumulate(single, da[t], dy[t], da_part, dy_part)
                if t > 0 and continues(start[w], t, k):
                    np.dot(d_a, WT, g[w, 0])
        close_windows(start, t, k)


@jit
def _normalize_rows_back(dy, gain, a_hat, rstd, da):
    """da (B, H) = dL/da of layer norm from dy = dL/d(gain a_hat + bias): with da_hat = gain dy, the mean and
    the variance of each row depend on all its a: da = (da_hat - mean(da_hat) - a_hat mean(da_hat a_hat)) rstd."""
    B, H = da.shape
    for b in range(B):
        m1, m2 = 0.0, 0.0
        for j in range(H):
            da[b, j] = dy[b, j] * gain[j]  # da_hat
            m1 += da[b, j]
            m2 += da[b, j] * a_hat[b, j]
        for j in range(H):
            da[b, j] = ((da[b, j] - m1 / H) - a_hat[b, j] * (m2 / H)) * rstd[b, 0]


@jit
def _normalize_columns_back(dy, gain, a_hat, rstd, da, m1, m2):
    """The same for batch norm, the means over each column; m1, m2 (H,) scratch."""
    B, H = da.shape
    m1[:], m2[:] = 0.0, 0.0
    for b in range(B):
        for j in range(H):
            da[b, j] = dy[b, j] * gain[j]
            m1[j] += da[b, j]
            m2[j] += da[b, j] * a_hat[b, j]
    for b in range(B):
        for j in range(H):
            da[b, j] = ((da[b, j] - m1[j] / B) - a_hat[b, j] * (m2[j] / B)) * rstd[0, j]
