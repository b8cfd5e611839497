"""The remedies for vanishing gradients as cells on the core's contract: LSTM, GRU, and the vanilla RNN
with layer or batch normalization.

Same conventions as `rnngrad.core`: row vectors, time-major arrays, float64 unless the parameters are
float32, out (T, B, O) = h_t V + c, and `cell_backward` returns (grads, ds) with ds (T, B, H) = dL/dh_t.

    lstm   (Hochreiter & Schmidhuber 1997, with the forget gate of Gers, Schmidhuber & Cummins 2000;
            exactly PyTorch's nn.LSTM, its two biases summed into b)
           [i f g o] = x_t U + h_{t-1} W + b           U (D, 4H), W (H, 4H), b (4H,)
           i, f, o = sigmoid, g = tanh
           c_t = f c_{t-1} + i g,  h_t = o tanh(c_t)
    gru    (Cho et al. 2014, in PyTorch's nn.GRU form: r multiplies h_{t-1} W_n + bw_n, not h_{t-1})
           r = sigmoid(x_t U_r + b_r + h_{t-1} W_r + bw_r),  z likewise
           n = tanh(x_t U_n + b_n + r (h_{t-1} W_n + bw_n))   U (D, 3H), W (H, 3H), b, bw (3H,)
           h_t = (1 - z) n + z h_{t-1}
    rnn + norm="layer" (Ba, Kiros & Hinton 2016) or norm="batch" (Cooijmans et al. 2016)
           a_t = x_t U + s_{t-1} W,  â_t = (a_t - mean) / sqrt(var + 1e-5),  s_t = f(g â_t + b)
           layer: mean and biased variance over the H units of each sample;
           batch: over the batch for each unit, at every time step (one BN over the summed
           pre-activation, a simplification of Cooijmans et al., who normalize x U and h W separately).
           Batch statistics are used in training and in evaluation alike: there are no running averages.

Gradients: each cell has a per-step backward that also accepts a stack of independent incoming gradients
(leading axes), and one generic driver `_bptt` runs full or windowed-truncated BPTT over it, with the
core's semantics (Williams & Peng 1990): the gradient of each loss term L_t reaches the states at
t .. t-k+1 and no earlier ones; for the LSTM the cut applies to h and c alike. Weight gradients are then
formed for all steps at once.
"""

from __future__ import annotations

import numpy as np

from rnngrad import core

CELLS = ("rnn", "lstm", "gru")
NORMS = ("none", "layer", "batch")
VALID_COMBINATIONS = (("lstm", "none"), ("gru", "none"), ("rnn", "layer"), ("rnn", "batch"))
NORM_EPS = 1e-5

N_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
GATE_ACTIVATIONS = {"lstm": ("sigmoid", "sigmoid", "tanh", "sigmoid"), "gru": ("sigmoid", "sigmoid", "tanh")}
# mean and variance over: the units of each sample (layer), the batch for each unit (batch)
_NORM_AXIS = {"layer": -1, "batch": -2}


def check_cell(cell: str, norm: str) -> None:
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; valid choices: {', '.join(CELLS)}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid choices: {', '.join(NORMS)}")
    if (cell, norm) not in VALID_COMBINATIONS:
        valid = ", ".join(f"{c}/{n}" for c, n in VALID_COMBINATIONS)
        hint = " (the plain RNN is rnngrad.core)" if (cell, norm) == ("rnn", "none") else ""
        raise ValueError(f"cell {cell!r} with norm {norm!r} is not available{hint}; valid cell/norm: {valid}")


# --------------------------------------------------------------------------------------------
# Initialization
# --------------------------------------------------------------------------------------------


def init_cell_params(
    cell: str,
    norm: str,
    input_size: int,
    hidden_size: int,
    output_size: int,
    *,
    init: str = "xavier",
    spectral_radius: float | None = None,
    scale: float = 1.0,
    rng: np.random.Generator | int,
    dtype=np.float64,
    forget_bias: float = 1.0,
) -> dict[str, np.ndarray]:
    """Parameters of a cell; `init`, `spectral_radius` and `scale` mean what they mean in core.init_params.

    lstm: {"U": (D, 4H), "W": (H, 4H), "b": (4H,), "V": (H, O), "c": (O,)}, gates i, f, g, o.
    gru:  {"U": (D, 3H), "W": (H, 3H), "b": (3H,), "bw": (3H,), "V": (H, O), "c": (O,)}, gates r, z, n.
    rnn with norm: core.init_params plus the gain "g" (H,) = 1; "b" (H,) is the shift after normalization.

    For the gated cells each gate's (D, H) block of U and (H, H) block of W is drawn as core.init_params
    draws U and W (so `spectral_radius` rescales each W block on its own). Biases start at zero except the
    LSTM forget gate's, `forget_bias` (1 by default: Gers et al. 2000; Jozefowicz, Zaremba & Sutskever
    2015), so that the cell state is remembered from the start. `forget_bias` is ignored by other cells.
    """
    check_cell(cell, norm)
    rng = np.random.default_rng(rng)
    blocks = [
        core.init_params(
            input_size, hidden_size, output_size, init=init, spectral_radius=spectral_radius,
            scale=scale, rng=rng, dtype=dtype,
        )
        for _ in range(N_GATES[cell])
    ]
    params = blocks[0]
    H = params["W"].shape[0]
    if cell == "rnn":
        params["g"] = np.ones(H, dtype=dtype)
        return params
    params["U"] = np.hstack([blk["U"] for blk in blocks])
    params["W"] = np.hstack([blk["W"] for blk in blocks])
    params["b"] = np.zeros(N_GATES[cell] * H, dtype=dtype)
    if cell == "lstm":
        params["b"][H : 2 * H] = forget_bias
    else:
        params["bw"] = np.zeros(3 * H, dtype=dtype)
    return params


_SHAPES_TEXT = {
    "lstm": "U (D, 4H), W (H, 4H), b (4H,), V (H, O), c (O,)",
    "gru": "U (D, 3H), W (H, 3H), b (3H,), bw (3H,), V (H, O), c (O,)",
    "rnn": "U (D, H), W (H, H), b (H,), g (H,), V (H, O), c (O,)",
}


def _param_shapes(cell: str, D: int, H: int, O: int) -> dict[str, tuple[int, ...]]:
    G = N_GATES[cell] * H
    shapes = {"U": (D, G), "W": (H, G), "b": (G,), "V": (H, O), "c": (O,)}
    if cell == "gru":
        shapes["bw"] = (G,)
    if cell == "rnn":
        shapes["g"] = (H,)
    return shapes


def check_cell_params(params: dict, cell: str, norm: str) -> tuple[int, int, int]:
    """Validate a cell's parameter dict (see init_cell_params); return (D, H, O)."""
    check_cell(cell, norm)
    U, W, V = (params.get(key) for key in ("U", "W", "V"))
    if any(not isinstance(p, np.ndarray) or p.ndim != 2 for p in (U, W, V)):
        raise ValueError(f"params needs 2-d arrays U, W and V; a {cell} has {_SHAPES_TEXT[cell]}")
    expected = _param_shapes(cell, U.shape[0], W.shape[0], V.shape[1])
    if set(params) != set(expected):
        raise ValueError(f"params has keys {sorted(params)}; a {cell} needs {sorted(expected)}")
    wrong = {k: params[k].shape for k, shape in expected.items() if params[k].shape != shape}
    if wrong:
        raise ValueError(f"inconsistent parameter shapes {wrong}; a {cell} has {_SHAPES_TEXT[cell]}")
    dtypes = {params[k].dtype for k in expected}
    if len(dtypes) != 1 or dtypes.pop() not in (np.float32, np.float64):
        raise ValueError("parameters must all be float32 or all float64")
    return U.shape[0], W.shape[0], V.shape[1]


# --------------------------------------------------------------------------------------------
# One step of each cell. xu_t is the input projection x_t U (+ b for the gated cells), which
# cell_forward computes for all t at once. Every backward also takes a stack of independent
# incoming gradients (leading axes before (B, H)): the truncation windows, or a basis for Jacobians.
# --------------------------------------------------------------------------------------------


def lstm_step_forward(xu_t: np.ndarray, h_prev: np.ndarray, c_prev: np.ndarray, params: dict):
    """One LSTM step. xu_t (B, 4H) = x_t U + b; h_prev, c_prev (B, H).

    Returns h (B, H), c (B, H) and the cache (gates (B, 4H) = [i f g o] after their nonlinearities,
    c_prev, tanh(c) (B, H), params).
    """
    H = h_prev.shape[-1]
    gates = xu_t + h_prev @ params["W"]
    core.activate_(gates[:, : 2 * H], "sigmoid")
    core.activate_(gates[:, 2 * H : 3 * H], "tanh")
    core.activate_(gates[:, 3 * H :], "sigmoid")
    i, f, g, o = np.split(gates, 4, axis=-1)
    c = f * c_prev + i * g
    tanh_c = np.tanh(c)
    return o * tanh_c, c, (gates, c_prev, tanh_c, params)


def lstm_step_backward(dh: np.ndarray, dc: np.ndarray, cache):
    """Backward through one LSTM step. dh (..., B, H) = dL/dh_t; dc (..., B, H) = dL/dc_t through c_{t+1}.

    Returns dgates (..., B, 4H) = dL/d[i f g o] before the nonlinearities (= dL/d(x_t U + h_{t-1} W + b)),
    dh_prev, dc_prev and dc_total (..., B, H), the last being dL/dc_t including the path through h_t.
    """
    gates, c_prev, tanh_c, params = cache
    i, f, g, o = np.split(gates, 4, axis=-1)
    dc_total = dc + dh * o * (1.0 - tanh_c * tanh_c)  # h_t = o tanh(c_t)
    dgates = np.concatenate(
        [
            dc_total * g * i * (1.0 - i),  # sigmoid' = s (1 - s)
            dc_total * c_prev * f * (1.0 - f),
            dc_total * i * (1.0 - g * g),  # tanh' = 1 - y^2
            dh * tanh_c * o * (1.0 - o),
        ],
        axis=-1,
    )
    dh_prev = dgates @ params["W"].T
    dc_prev = dc_total * f  # the cell state's linear path: scaled by f only, no activation
    return dgates, dh_prev, dc_prev, dc_total


def gru_step_forward(xu_t: np.ndarray, h_prev: np.ndarray, params: dict):
    """One GRU step. xu_t (B, 3H) = x_t U + b; h_prev (B, H).

    Returns h (B, H) and the cache (gates (B, 3H) = [r z n] after their nonlinearities,
    hw_n (B, H) = h_prev W_n + bw_n, h_prev, params).
    """
    H = h_prev.shape[-1]
    hw = h_prev @ params["W"] + params["bw"]
    gates = xu_t.copy()
    gates[:, : 2 * H] += hw[:, : 2 * H]
    core.activate_(gates[:, : 2 * H], "sigmoid")
    r, z, n = np.split(gates, 3, axis=-1)  # views: n is filled in place
    hw_n = hw[:, 2 * H :]
    n += r * hw_n
    core.activate_(n, "tanh")
    return (1.0 - z) * n + z * h_prev, (gates, hw_n, h_prev, params)


def gru_step_backward(dh: np.ndarray, cache):
    """Backward through one GRU step, given dh (..., B, H) = dL/dh_t.

    Returns dxu (..., B, 3H) = dL/d(x_t U + b), dhw (..., B, 3H) = dL/d(h_{t-1} W + bw), dh_prev (..., B, H).
    """
    gates, hw_n, h_prev, params = cache
    r, z, n = np.split(gates, 3, axis=-1)
    dn = dh * (1.0 - z) * (1.0 - n * n)  # through n = tanh(.)
    dr = dn * hw_n * r * (1.0 - r)
    dz = dh * (h_prev - n) * z * (1.0 - z)
    dxu = np.concatenate([dr, dz, dn], axis=-1)
    dhw = np.concatenate([dr, dz, dn * r], axis=-1)  # r scales the recurrent part of n
    dh_prev = dh * z + dhw @ params["W"].T  # z also copies h_{t-1} straight through
    return dxu, dhw, dh_prev


def norm_step_forward(xu_t: np.ndarray, s_prev: np.ndarray, params: dict, *, norm: str, activation: str):
    """One normalized RNN step s_t = f(g â_t + b), â_t = normalize(x_t U + s_{t-1} W). xu_t (B, H) = x_t U.

    norm "layer" normalizes each sample over its H units, "batch" each unit over the B samples (B >= 2).
    Returns s (B, H) and the cache (â (B, H), 1/std ((B, 1) or (1, H)), s, s_prev, params, norm, activation).
    """
    core.check_activation(activation)
    if norm == "batch" and xu_t.shape[0] < 2:
        raise ValueError(f"norm='batch' needs a batch of at least 2 samples, got {xu_t.shape[0]}")
    axis = _NORM_AXIS[norm]
    a = xu_t + s_prev @ params["W"]
    a -= a.mean(axis=axis, keepdims=True)
    rstd = 1.0 / np.sqrt(np.mean(a * a, axis=axis, keepdims=True) + NORM_EPS)
    a_hat = a * rstd
    s = core.activate_(params["g"] * a_hat + params["b"], activation)
    return s, (a_hat, rstd, s, s_prev, params, norm, activation)


def norm_step_backward(ds: np.ndarray, cache):
    """Backward through one normalized step, given ds (..., B, H) = dL/ds_t.

    Returns da (..., B, H) = dL/d(x_t U + s_{t-1} W), dy (..., B, H) = dL/d(g â_t + b), ds_prev (..., B, H).
    """
    a_hat, rstd, s, s_prev, params, norm, activation = cache
    axis = _NORM_AXIS[norm]
    dy = ds * core.dactivation(s, activation)
    da_hat = dy * params["g"]
    # through the normalization: the mean and the variance depend on every a in the group
    da = rstd * (
        da_hat - da_hat.mean(axis=axis, keepdims=True) - a_hat * np.mean(da_hat * a_hat, axis=axis, keepdims=True)
    )
    return da, dy, da @ params["W"].T


# --------------------------------------------------------------------------------------------
# Each cell over a whole sequence: the forward loop, the step cache at time t, one backward step
# of the state gradient g (n, P, B, H) (P = 2 state parts h, c for the LSTM, else 1), and the
# parameter gradients from the per-step pieces that backward step returns.
# --------------------------------------------------------------------------------------------


def _before(cache: dict, key0: str, key: str, t: int) -> np.ndarray:
    """The state entering step t: the initial one for t = 0."""
    return cache[key0] if t == 0 else cache[key][t - 1]


def _sum_outer(a: np.ndarray, d: np.ndarray) -> np.ndarray:
    """sum_t a_t^T d_t for time-major a (T, B, m), d (T, B, n), as one product."""
    return a.reshape(-1, a.shape[-1]).T @ d.reshape(-1, d.shape[-1])


def _sum_outer_prev(h0: np.ndarray, s: np.ndarray, d: np.ndarray) -> np.ndarray:
    """sum_t s_{t-1}^T d_t with s_{-1} = h0: the gradient of a recurrent weight."""
    total = h0.T @ d[0]
    if len(s) > 1:
        total += _sum_outer(s[:-1], d[1:])
    return total


def _lstm_forward(params, xu, cache):
    T, B, G = xu.shape
    H = G // 4
    seq = {key: np.empty((T, B, H), dtype=xu.dtype) for key in ("s", "c", "tanh_c")}
    seq["gates"] = np.empty_like(xu)
    h, c = cache["h0"], cache["c0"]
    for t in range(T):
        h, c, (gates, _, tanh_c, _) = lstm_step_forward(xu[t], h, c, params)
        seq["s"][t], seq["c"][t], seq["gates"][t], seq["tanh_c"][t] = h, c, gates, tanh_c
    return seq


def _lstm_step_cache(params, cache, t):
    return cache["gates"][t], _before(cache, "c0", "c", t), cache["tanh_c"][t], params


def _lstm_backprop_step(params, cache, t, g):
    dgates, dh_prev, dc_prev, dc_total = lstm_step_backward(g[:, 0], g[:, 1], _lstm_step_cache(params, cache, t))
    return np.stack([dh_prev, dc_prev], axis=1), (dgates, dc_total)


def _lstm_grads(params, cache, pieces):
    dgates, _ = pieces
    return {
        "U": _sum_outer(cache["x"], dgates),
        "W": _sum_outer_prev(cache["h0"], cache["s"], dgates),
        "b": dgates.sum(axis=(0, 1)),
    }


def _gru_forward(params, xu, cache):
    T, B, G = xu.shape
    H = G // 3
    seq = {"s": np.empty((T, B, H), dtype=xu.dtype), "hw_n": np.empty((T, B, H), dtype=xu.dtype)}
    seq["gates"] = np.empty_like(xu)
    h = cache["h0"]
    for t in range(T):
        h, (gates, hw_n, _, _) = gru_step_forward(xu[t], h, params)
        seq["s"][t], seq["gates"][t], seq["hw_n"][t] = h, gates, hw_n
    return seq


def _gru_step_cache(params, cache, t):
    return cache["gates"][t], cache["hw_n"][t], _before(cache, "h0", "s", t), params


def _gru_backprop_step(params, cache, t, g):
    dxu, dhw, dh_prev = gru_step_backward(g[:, 0], _gru_step_cache(params, cache, t))
    return dh_prev[:, None], (dxu, dhw)


def _gru_grads(params, cache, pieces):
    dxu, dhw = pieces
    return {
        "U": _sum_outer(cache["x"], dxu),
        "W": _sum_outer_prev(cache["h0"], cache["s"], dhw),
        "b": dxu.sum(axis=(0, 1)),
        "bw": dhw.sum(axis=(0, 1)),
    }


def _norm_forward(params, xu, cache):
    T, B, H = xu.shape
    seq = {"s": np.empty_like(xu), "a_hat": np.empty_like(xu)}
    seq["rstd"] = np.empty((T, B, 1) if cache["norm"] == "layer" else (T, 1, H), dtype=xu.dtype)
    s = cache["h0"]
    for t in range(T):
        s, (a_hat, rstd, *_) = norm_step_forward(xu[t], s, params, norm=cache["norm"], activation=cache["activation"])
        seq["s"][t], seq["a_hat"][t], seq["rstd"][t] = s, a_hat, rstd
    return seq


def _norm_step_cache(params, cache, t):
    s_prev = _before(cache, "h0", "s", t)
    return cache["a_hat"][t], cache["rstd"][t], cache["s"][t], s_prev, params, cache["norm"], cache["activation"]


def _norm_backprop_step(params, cache, t, g):
    da, dy, ds_prev = norm_step_backward(g[:, 0], _norm_step_cache(params, cache, t))
    return ds_prev[:, None], (da, dy)


def _norm_grads(params, cache, pieces):
    da, dy = pieces
    return {
        "U": _sum_outer(cache["x"], da),
        "W": _sum_outer_prev(cache["h0"], cache["s"], da),
        "g": np.einsum("tbh,tbh->h", dy, cache["a_hat"]),
        "b": dy.sum(axis=(0, 1)),
    }


# cell -> (state parts P, forward loop, one backward step, parameter gradients)
_CELL_PATHS = {
    "lstm": (2, _lstm_forward, _lstm_backprop_step, _lstm_grads),
    "gru": (1, _gru_forward, _gru_backprop_step, _gru_grads),
    "rnn": (1, _norm_forward, _norm_backprop_step, _norm_grads),
}


# --------------------------------------------------------------------------------------------
# The whole sequence
# --------------------------------------------------------------------------------------------


def _initial_state(h0, cell: str, B: int, H: int, dtype) -> dict:
    def check(name, value):
        if value is None:
            return np.zeros((B, H), dtype=dtype)
        if not isinstance(value, np.ndarray) or value.shape != (B, H) or value.dtype != dtype:
            raise ValueError(f"{name} must be a {np.dtype(dtype)} array of shape ({B}, {H})")
        return value

    if cell != "lstm":
        return {"h0": check("h0", h0)}
    if h0 is None:
        h0 = (None, None)
    if not isinstance(h0, tuple) or len(h0) != 2:
        raise ValueError("h0 of an lstm must be None or a tuple (h0, c0)")
    return {"h0": check("h0", h0[0]), "c0": check("c0", h0[1])}


def cell_forward(params: dict, x: np.ndarray, *, cell: str, norm: str, activation: str | None, h0=None):
    """Run a cell over a sequence.

    params: see init_cell_params; x (T, B, D); h0 (B, H) or None (zeros), for the lstm a tuple
    (h0, c0) of (B, H) arrays or None. `activation` is f of the normalized rnn; the lstm and gru have
    fixed nonlinearities and ignore it.

    Returns out (T, B, O) = h_t V + c and the cache for cell_backward:
      all:  "cell", "norm", "activation" (None for lstm/gru), "x" (T, B, D), "h0" (B, H), "s" (T, B, H) = h_t
      lstm: "c0" (B, H), "c" (T, B, H), "gates" (T, B, 4H) = i f g o, "tanh_c" (T, B, H);
            after cell_backward also "dc" (T, B, H) = dL/dc_t
      gru:  "gates" (T, B, 3H) = r z n, "hw_n" (T, B, H) = h_{t-1} W_n + bw_n
      rnn:  "a_hat" (T, B, H), the normalized pre-activation before the gain; "rstd" 1/sqrt(var + eps),
            (T, B, 1) for layer, (T, 1, H) for batch
    A chunk can continue from the last state: h0 = cache["s"][-1] (lstm: (cache["s"][-1], cache["c"][-1])).
    """
    D, H, O = check_cell_params(params, cell, norm)
    if cell == "rnn":
        core.check_activation(activation)
    else:
        activation = None
    dtype = params["W"].dtype
    x = core.check_input(x, D, dtype)
    T, B, _ = x.shape
    cache = {"cell": cell, "norm": norm, "activation": activation, "x": x}
    cache.update(_initial_state(h0, cell, B, H, dtype))

    # every x_t U at once: the input path does not depend on the recurrence
    xu = (x.reshape(T * B, D) @ params["U"]).reshape(T, B, -1)
    if cell != "rnn":  # the normalized rnn adds b after the normalization
        xu += params["b"]
    _, forward_loop, _, _ = _CELL_PATHS[cell]
    cache.update(forward_loop(params, xu, cache))
    out = (cache["s"].reshape(T * B, H) @ params["V"]).reshape(T, B, O)
    out += params["c"]
    return out, cache


def cell_backward(params: dict, cache: dict, dout: np.ndarray, *, truncation: int | None = None):
    """Exact BPTT through a cell, full or windowed-truncated, with core.backward's contract.

    dout (T, B, O) = dL/do_t. Returns (grads, ds): grads has the keys and shapes of params; ds (T, B, H)
    is dL/dh_t, the total derivative through all later states (within the window when truncating).
    For the lstm, cache["dc"] (T, B, H) is set to dL/dc_t, likewise total (through h_t and c_{t+1}).
    truncation=k: the gradient of L_t reaches the states (h, and c) at t .. t-k+1 only; k >= T is full BPTT.
    """
    cell, norm = cache["cell"], cache["norm"]
    _, H, O = check_cell_params(params, cell, norm)
    s = cache["s"]
    T, B, _ = s.shape
    dout = core.check_dout(dout, T, B, O, s.dtype)
    k = core.check_truncation(truncation)
    if k is not None and k >= T:
        k = None  # no window is cut: the same computation as full BPTT, bit for bit

    n_parts, _, backprop_step, param_grads = _CELL_PATHS[cell]
    ds_out = (dout.reshape(T * B, O) @ params["V"].T).reshape(T, B, H)  # the direct path o_t -> h_t
    dstate, pieces = _bptt(
        lambda t, g: backprop_step(params, cache, t, g),
        ds_out,
        n_parts,
        k,
        loss_steps=np.any(dout != 0, axis=(1, 2)),
    )
    grads = param_grads(params, cache, pieces)
    grads["V"] = _sum_outer(s, dout)
    grads["c"] = dout.sum(axis=(0, 1))
    if cell == "lstm":
        cache["dc"] = pieces[1]
    return {key: grads[key] for key in params}, dstate[:, 0]


def _bptt(backprop_step, ds_out: np.ndarray, n_parts: int, k: int | None, loss_steps: np.ndarray):
    """Backpropagation through time over a per-step backward, full (k None) or windowed-truncated.

    backprop_step(t, g) -> (g_prev, pieces): g (n, P, B, H) stacks n independent gradients w.r.t. the
    state at t (P parts: h, and c for the LSTM), g_prev is the same w.r.t. the state at t-1, and pieces is
    a tuple of arrays (n, B, width), linear in g, from which the parameter gradients are formed.

    As in core._bptt_windowed, each loss step u (loss_steps[u] True) keeps its own gradient window,
    carried from the state at u back to the state at u-k+1 and no further; all windows are propagated
    together as one stack. With k None no window ever ends, so every loss term joins a single window.
    ds_out (T, B, H) is the direct gradient o_t -> h_t. Returns dstate (T, P, B, H), the summed window
    gradients w.r.t. each state, and the pieces summed over the windows, (T, B, width) each.
    """
    T, B, H = ds_out.shape
    dstate = np.empty((T, n_parts, B, H), dtype=ds_out.dtype)
    pieces = None
    g = np.zeros((0, n_parts, B, H), dtype=ds_out.dtype)
    starts: list[int] = []  # the loss step of each window in g
    for t in range(T - 1, -1, -1):
        if loss_steps[t]:
            if k is None and starts:  # full BPTT: the one window never ends, later loss terms join it
                g[0, 0] += ds_out[t]
            else:
                new = np.zeros((1, n_parts, B, H), dtype=ds_out.dtype)
                new[0, 0] = ds_out[t]
                g = np.concatenate([g, new])
                starts.append(t)
        dstate[t] = g.sum(axis=0)
        g, step_pieces = backprop_step(t, g)
        if pieces is None:
            pieces = tuple(np.empty((T,) + p.shape[1:], dtype=ds_out.dtype) for p in step_pieces)
        for total, p in zip(pieces, step_pieces):
            total[t] = p.sum(axis=0)
        # the window that started k-1 steps ago has reached its oldest state
        keep = [j for j, u in enumerate(starts) if k is None or u - t < k - 1]
        g, starts = g[keep], [starts[j] for j in keep]
    return dstate, pieces


# --------------------------------------------------------------------------------------------
# Diagnostics
# --------------------------------------------------------------------------------------------


def _check_sample(sample, B: int) -> int:
    if isinstance(sample, bool) or not isinstance(sample, (int, np.integer)) or not 0 <= sample < B:
        raise ValueError(f"sample must be an integer in [0, {B}), got {sample!r}")
    return int(sample)


def step_jacobians(params: dict, cache: dict, sample: int = 0) -> np.ndarray:
    """The one-step Jacobians of the hidden state for one sample, in row form. Returns J (T, H, H).

    J[t][i, j] = d h_t[j] / d h_{t-1}[i] (h_{-1} = h0), so a row perturbation evolves as dh_t = dh_{t-1} J[t]
    and J[t] = W diag(f'(a_t)) for the vanilla RNN (core's convention).
    lstm: the h -> h path with c_{t-1} held fixed; the c -> c path is cell_state_jacobian_diag.
    rnn with norm="batch": the per-sample Jacobian with the batch statistics held fixed, i.e. ignoring
    that h_{t-1} of this sample also moves the mean and variance seen by every sample:
    J[t] = W diag(g f'(y_t) / std_t).
    Computed by running the step backward on the basis e_1 .. e_H of dL/dh_t.
    """
    cell, norm = cache["cell"], cache["norm"]
    T, B, H = cache["s"].shape
    sample = _check_sample(sample, B)
    dtype = cache["s"].dtype
    if norm == "batch":
        fprime = core.dactivation(cache["s"][:, sample], cache["activation"])  # (T, H)
        return params["W"] * (params["g"] * cache["rstd"][:, 0] * fprime)[:, None, :]
    # the cache of this sample alone (batch axis kept with size 1)
    one = {
        key: value[sample : sample + 1] if key in ("h0", "c0") else value[:, sample : sample + 1]
        for key, value in cache.items()
        if isinstance(value, np.ndarray)
    }
    one.update({key: value for key, value in cache.items() if not isinstance(value, np.ndarray)})
    n_parts, _, backprop_step, _ = _CELL_PATHS[cell]
    basis = np.zeros((H, n_parts, 1, H), dtype=dtype)  # the lstm's c part stays zero: c_{t-1} fixed
    basis[:, 0, 0, :] = np.eye(H, dtype=dtype)
    J = np.empty((T, H, H), dtype=dtype)
    for t in range(T):
        g_prev, _ = backprop_step(params, one, t, basis)
        J[t] = g_prev[:, 0, 0, :].T  # row j of g_prev is d h_t[j] / d h_{t-1}
    return J


def cell_state_jacobian_diag(cache: dict, sample: int = 0) -> np.ndarray:
    """The LSTM's c -> c Jacobian d c_t / d c_{t-1} = diag(f_t) at fixed h_{t-1}: returns f_t (T, H).

    Its product over time is what carries dL/dc back unsquashed (the constant error carousel of
    Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000).
    """
    if cache["cell"] != "lstm":
        raise ValueError(f"cell_state_jacobian_diag needs an lstm cache, got cell {cache['cell']!r}")
    gates = cache["gates"]
    sample = _check_sample(sample, gates.shape[1])
    H = gates.shape[2] // 4
    return gates[:, sample, H : 2 * H].copy()


def saturation_fraction(cache: dict) -> float:
    """Fraction of saturated nonlinearities.

    lstm and gru: over all gate activations (T, B, 4H or 3H), a sigmoid gate s counting as saturated
    when s (1 - s) < 1% of 1/4 and a tanh y when 1 - y^2 < 0.01. rnn with norm: the core's definition on
    the states, rnngrad.diagnostics.saturation.
    """
    # imported here: diagnostics imports core, which may import this module
    from rnngrad.diagnostics import saturation

    if cache["cell"] == "rnn":
        return saturation(cache, cache["activation"])
    activations = GATE_ACTIVATIONS[cache["cell"]]
    blocks = np.split(cache["gates"], len(activations), axis=-1)
    # equal-sized blocks: the mean of their fractions is the fraction over all gates
    return float(np.mean([saturation({"s": y}, act) for y, act in zip(blocks, activations)]))
