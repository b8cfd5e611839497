"""The shared RNN core: initialization, forward pass and exact backpropagation through time.

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

import numpy as np

from rnngrad import cells

ACTIVATIONS = ("sigmoid", "tanh", "relu", "linear")
INITS = ("gaussian", "xavier", "he", "orthogonal", "identity", "sparse")

# max |f'(a)|: the gamma of Pascanu et al. (2013), Sec. 2.1
GAMMA = {"sigmoid": 0.25, "tanh": 1.0, "relu": 1.0, "linear": 1.0}

SPARSE_NONZEROS = 15  # nonzeros per row of W for the "sparse" init (Pascanu et al. 2013, Sec. 4.3)


# --------------------------------------------------------------------------------------------
# Activations, written in place: the hot loop must not allocate.
# --------------------------------------------------------------------------------------------


def check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; valid choices: {', '.join(ACTIVATIONS)}")


def activate_(a: np.ndarray, activation: str) -> np.ndarray:
    """Apply f to the pre-activation a in place and return it (now holding s = f(a))."""
    if activation == "tanh":
        np.tanh(a, out=a)
    elif activation == "sigmoid":
        # 1 / (1 + exp(-a)), in place; exp overflow to inf gives the correct limit 0
        np.negative(a, out=a)
        with np.errstate(over="ignore"):
            np.exp(a, out=a)
        a += 1.0
        np.reciprocal(a, out=a)
    elif activation == "relu":
        np.maximum(a, 0.0, out=a)
    elif activation != "linear":
        check_activation(activation)
    return a


def dactivation(s: np.ndarray, activation: str, out: np.ndarray | None = None) -> np.ndarray:
    """f'(a) computed from the output s = f(a) (every activation here allows it).

    s: any shape; returns an array of the same shape (written to `out` if given).
    """
    if out is None:
        out = np.empty_like(s)
    if activation == "tanh":  # 1 - s^2
        np.multiply(s, s, out=out)
        np.subtract(1.0, out, out=out)
    elif activation == "sigmoid":  # s (1 - s)
        np.subtract(1.0, s, out=out)
        out *= s
    elif activation == "relu":  # 1 where a > 0, i.e. where s > 0
        np.greater(s, 0.0, out=out)
    elif activation == "linear":
        out.fill(1.0)
    else:
        check_activation(activation)
    return out


# --------------------------------------------------------------------------------------------
# Initialization
# --------------------------------------------------------------------------------------------


def _orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random orthogonal matrix (QR of a Gaussian with the sign of diag(R) fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def _recurrent_init(H: int, init: str, scale: float, rng: np.random.Generator) -> np.ndarray:
    if init == "gaussian":
        return rng.normal(0.0, scale / np.sqrt(H), size=(H, H))
    if init == "xavier":  # Glorot & Bengio (2010), uniform, fan_in = fan_out = H
        limit = scale * np.sqrt(6.0 / (H + H))
        return rng.uniform(-limit, limit, size=(H, H))
    if init == "he":  # He et al. (2015): variance 2 / fan_in
        return rng.normal(0.0, scale * np.sqrt(2.0 / H), size=(H, H))
    if init == "orthogonal":  # Saxe et al. (2014)
        return scale * _orthogonal(H, rng)
    if init == "identity":  # IRNN, Le et al. (2015)
        return scale * np.eye(H)
    if init == "sparse":
        # Pascanu et al. (2013): a fixed number of nonzeros per row; their variance makes each
        # row's squared norm ~ scale^2, so rho ~ scale as for the Gaussian init.
        k = min(SPARSE_NONZEROS, H)
        W = np.zeros((H, H))
        for i in range(H):
            cols = rng.choice(H, size=k, replace=False)
            W[i, cols] = rng.normal(0.0, scale / np.sqrt(k), size=k)
        return W
    raise ValueError(f"unknown init {init!r}; valid choices: {', '.join(INITS)}")


def _check_size(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def init_params(
    input_size: int,
    hidden_size: int,
    output_size: int,
    *,
    init: str = "xavier",
    spectral_radius: float | None = None,
    scale: float = 1.0,
    rng: np.random.Generator | int,
    dtype=np.float64,
    cell: str = "rnn",
    norm: str = "none",
    forget_bias: float = 1.0,
) -> dict[str, np.ndarray]:
    """Parameters of a vanilla RNN (or, with `cell`/`norm`, of a remedy cell: see `rnngrad.cells`).

    Returns {"U": (D, H), "W": (H, H), "b": (H,), "V": (H, O), "c": (O,)}.

    `init` chooses W: gaussian N(0, scale^2/H); xavier (Glorot uniform) times scale; he N(0, 2 scale^2/H);
    orthogonal times scale; identity (IRNN: W = scale * I); sparse (15 nonzeros per row, rho ~ scale).
    U and V are Glorot-normal, except for identity, where they are N(0, 0.001^2) as in Le et al. (2015).
    Biases start at zero. `spectral_radius=r` rescales W afterwards so that max |eig(W)| = r exactly.
    """
    if cell != "rnn" or norm != "none":
        return cells.init_cell_params(
            cell, norm, input_size, hidden_size, output_size, init=init, spectral_radius=spectral_radius,
            scale=scale, rng=rng, dtype=dtype, forget_bias=forget_bias,
        )
    D = _check_size("input_size", input_size)
    H = _check_size("hidden_size", hidden_size)
    O = _check_size("output_size", output_size)
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; valid choices: {', '.join(INITS)}")
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    rng = np.random.default_rng(rng)

    W = _recurrent_init(H, init, float(scale), rng)
    if spectral_radius is not None:
        if not np.isfinite(spectral_radius) or spectral_radius <= 0:
            raise ValueError(f"spectral_radius must be a positive number or None, got {spectral_radius!r}")
        rho = np.max(np.abs(np.linalg.eigvals(W)))
        if rho == 0:
            raise ValueError(f"cannot rescale W to spectral radius {spectral_radius}: init {init!r} gave rho = 0")
        W *= spectral_radius / rho
    if init == "identity":
        U = rng.normal(0.0, 1e-3, size=(D, H))
        V = rng.normal(0.0, 1e-3, size=(H, O))
    else:
        U = rng.normal(0.0, np.sqrt(2.0 / (D + H)), size=(D, H))
        V = rng.normal(0.0, np.sqrt(2.0 / (H + O)), size=(H, O))
    params = {"U": U, "W": W, "b": np.zeros(H), "V": V, "c": np.zeros(O)}
    return {k: np.ascontiguousarray(v, dtype=dtype) for k, v in params.items()}


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

PARAM_KEYS = ("U", "W", "b", "V", "c")


def check_params(params: dict) -> tuple[int, int, int]:
    """Validate a parameter dict; return (D, H, O)."""
    missing = [k for k in PARAM_KEYS if k not in params]
    if missing:
        raise ValueError(f"params is missing {missing}; expected keys {list(PARAM_KEYS)}")
    U, W, b, V, c = (params[k] for k in PARAM_KEYS)
    D, H = U.shape if U.ndim == 2 else (None, None)
    if U.ndim != 2 or W.shape != (H, H) or b.shape != (H,) or V.ndim != 2 or V.shape[0] != H:
        raise ValueError(
            f"inconsistent parameter shapes U{U.shape} W{W.shape} b{b.shape} V{V.shape}; "
            "expected U (D,H), W (H,H), b (H,), V (H,O), c (O,)"
        )
    O = V.shape[1]
    if c.shape != (O,):
        raise ValueError(f"c has shape {c.shape}, expected ({O},)")
    dtypes = {params[k].dtype for k in PARAM_KEYS}
    if len(dtypes) != 1 or dtypes.pop() not in (np.float32, np.float64):
        raise ValueError("parameters must all be float32 or all float64")
    return D, H, O


def check_input(x, D: int, dtype) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.ndim != 3:
        raise ValueError(f"x must be a numpy array of shape (T, B, D), got {getattr(x, 'shape', type(x))}")
    if x.dtype != dtype:
        raise ValueError(f"x has dtype {x.dtype}, the parameters are {np.dtype(dtype)}")
    if x.shape[2] != D:
        raise ValueError(f"x has {x.shape[2]} input features, U expects D = {D}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x must have T >= 1 and B >= 1, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x contains NaN or Inf")
    return x


def check_truncation(truncation) -> int | None:
    if truncation is None:
        return None
    if isinstance(truncation, bool) or not isinstance(truncation, (int, np.integer)) or truncation < 1:
        raise ValueError(f"truncation must be None (full BPTT) or an integer >= 1, got {truncation!r}")
    return int(truncation)


# --------------------------------------------------------------------------------------------
# One step: the readable reference
# --------------------------------------------------------------------------------------------


def step_forward(x_t: np.ndarray, s_prev: np.ndarray, params: dict, activation: str):
    """One step s_t = f(x_t U + s_{t-1} W + b).

    x_t (B, D), s_prev (B, H) -> s (B, H), cache for step_backward.
    """
    check_activation(activation)
    a = x_t @ params["U"] + s_prev @ params["W"] + params["b"]
    s = activate_(a, activation)
    return s, (x_t, s_prev, s, params, activation)


def step_backward(ds: np.ndarray, cache):
    """Backward through one step, given ds = dL/ds_t (B, H).

    Returns (dx (B, D), ds_prev (B, H), dU (D, H), dW (H, H), db (H,)).
    """
    x_t, s_prev, s, params, activation = cache
    da = ds * dactivation(s, activation)  # through f: f'(a_t)
    dx = da @ params["U"].T
    ds_prev = da @ params["W"].T
    dU = x_t.T @ da
    dW = s_prev.T @ da
    db = da.sum(axis=0)
    return dx, ds_prev, dU, dW, db


# --------------------------------------------------------------------------------------------
# The whole sequence
# --------------------------------------------------------------------------------------------


class Workspace:
    """Buffers that `forward` and `backward` reuse from call to call.

    A training step of the vanilla RNN needs three (T, B, H) arrays (states, dL/ds, dL/da). Allocated
    afresh, each costs page faults on first touch, which at (T, B, H) = (200, 32, 128) is about a fifth
    of the step; a loop that hands the same workspace to every call allocates once. What a call with a
    workspace returns (the cache's s and s_prev, ds, the gradients' sources) are views of its buffers:
    valid until the next call with the same workspace, so a caller that keeps results across steps
    copies them, and a second backward of the same cache (e.g. the full gradient next to a truncated
    one) is called without it. The remedy cells (`rnngrad.cells`) allocate their own arrays and ignore it.
    """

    def __init__(self):
        self._buffers: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple, dtype) -> np.ndarray:
        """The buffer `name` with this shape and dtype (uninitialized), reallocated only when they change."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._buffers[name] = np.empty(shape, dtype=dtype)
        return buf


def _buffer(workspace: Workspace | None, name: str, shape: tuple, dtype) -> np.ndarray:
    return np.empty(shape, dtype=dtype) if workspace is None else workspace.get(name, shape, dtype)


def forward(params: dict, x: np.ndarray, *, activation: str, cell: str = "rnn", norm: str = "none", h0=None,
            workspace: Workspace | None = None):
    """Run the RNN over a sequence.

    params: see init_params; x (T, B, D); h0 (B, H) or None (zeros).
    Returns out (T, B, O) and a cache for `backward` holding x, h0, the states s (T, B, H) and
    s_prev (T, B, H) = s_{t-1} for every t (h0 first); s and s_prev are views of one (T + 1, B, H) buffer,
    taken from `workspace` when one is given (see Workspace).
    `cell` (lstm, gru) and `norm` (layer, batch) select a remedy cell with the same contract (`rnngrad.cells`).
    """
    if cell != "rnn" or norm != "none":
        return cells.cell_forward(params, x, cell=cell, norm=norm, activation=activation, h0=h0)
    check_activation(activation)
    D, H, O = check_params(params)
    dtype = params["W"].dtype
    x = check_input(x, D, dtype)
    T, B, _ = x.shape
    if h0 is None:
        h0 = np.zeros((B, H), dtype=dtype)
    elif not isinstance(h0, np.ndarray) or h0.shape != (B, H) or h0.dtype != dtype:
        raise ValueError(f"h0 must be a {np.dtype(dtype)} array of shape ({B}, {H})")

    U, W, b, V, c = (params[k] for k in PARAM_KEYS)
    # states[t] = s_{t-1}: the states each step reads (s_prev) and writes (s) are one buffer, so that
    # backward forms dW, h0's term included, in a single product
    states = _buffer(workspace, "states", (T + 1, B, H), dtype)
    states[0] = h0
    s = states[1:]
    # every x_t U + b at once, as [x_t, 1] [U; b]: the input path does not depend on the recurrence,
    # and backward gets dU and db from one product with the same [x_t, 1]
    x1 = _buffer(workspace, "x1", (T * B, D + 1), dtype)
    x1[:, :D] = x.reshape(T * B, D)
    x1[:, D] = 1.0
    np.matmul(x1, np.vstack((U, b)), out=s.reshape(T * B, H))
    rec = _buffer(workspace, "rec", (B, H), dtype)
    for t in range(T):
        np.matmul(states[t], W, out=rec)
        s[t] += rec
        activate_(s[t], activation)
    out = (s.reshape(T * B, H) @ V).reshape(T, B, O)
    out += c
    cache = {"x": x, "x1": x1, "h0": h0, "s": s, "s_prev": states[:-1], "activation": activation}
    return out, cache


def check_dout(dout, T: int, B: int, O: int, dtype) -> np.ndarray:
    if not isinstance(dout, np.ndarray) or dout.shape != (T, B, O):
        raise ValueError(f"dout must have shape ({T}, {B}, {O}), got {getattr(dout, 'shape', type(dout))}")
    if not np.all(np.isfinite(dout)):
        raise ValueError("dout contains NaN or Inf")
    return np.asarray(dout, dtype=dtype)


def backward(params: dict, cache: dict, dout: np.ndarray, *, truncation: int | None = None,
             workspace: Workspace | None = None):
    """Exact BPTT, full or windowed-truncated.

    dout (T, B, O) = dL/do_t. Returns (grads, ds): grads has the keys and shapes of params;
    ds (T, B, H) is dL/ds_t, the total derivative through all later states (within the window when
    truncating). truncation=k: the gradient of L_t reaches s_t .. s_{t-k+1} only; k >= T is full BPTT.
    With a `workspace`, ds and the intermediate dL/da_t live in its buffers (see Workspace).
    """
    if "cell" in cache:
        return cells.cell_backward(params, cache, dout, truncation=truncation)
    D, H, O = check_params(params)
    x, s, s_prev, activation = cache["x"], cache["s"], cache["s_prev"], cache["activation"]
    T, B, _ = x.shape
    dout = check_dout(dout, T, B, O, s.dtype)
    k = check_truncation(truncation)

    U, W, b, V, c = (params[key] for key in PARAM_KEYS)
    loss_steps = np.any(dout != 0, axis=(1, 2))  # often only the last step carries loss
    da = dactivation(s, activation, out=_buffer(workspace, "da", s.shape, s.dtype))  # f'(a_t), made dL/da_t below
    WT = np.ascontiguousarray(W.T)
    ds = _buffer(workspace, "ds", s.shape, s.dtype)
    if k is None or k >= T:
        # the direct path o_t -> s_t; the BPTT overwrites the other steps' ds_t, except the last
        ds[loss_steps] = dout[loss_steps] @ V.T
        if not loss_steps[-1]:
            ds[-1] = 0.0
        _bptt_full(ds, da, WT, loss_steps)
    else:
        ds_out = np.zeros_like(s)
        ds_out[loss_steps] = dout[loss_steps] @ V.T
        _bptt_windowed(ds_out, da, WT, k, loss_steps, out=ds)

    # the weight gradients: one product each over all T*B rows (W sees s_{t-1}, h0 first; [dU; db]
    # comes from [x_t, 1])
    da_flat = da.reshape(T * B, H)
    dUb = cache["x1"].T @ da_flat
    dU, db = dUb[:D], dUb[D]
    dW = s_prev.reshape(T * B, H).T @ da_flat
    if loss_steps.all():
        dV = s.reshape(T * B, H).T @ dout.reshape(T * B, O)
    else:  # only the steps that carry loss contribute: often just the last
        steps = np.flatnonzero(loss_steps)
        dV = s[steps].reshape(-1, H).T @ dout[steps].reshape(-1, O)
    dc = dout.sum(axis=(0, 1))
    return {"U": dU, "W": dW, "b": db, "V": dV, "c": dc}, ds


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
