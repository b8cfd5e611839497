"""The instruments of the study: how gradients travel back through time.

All functions take what the model already computed (states in the forward cache, ds from backward)
and never rerun the model, except `lyapunov_exponents`, which needs a trajectory of its own. They read
every cell's cache through `nn.model`. Row-vector convention as in `nn.rnn`: the Jacobian of one step is

    ds_t / ds_{t-1} = W diag(f'(a_t))      (H, H)

and a perturbation row vector evolves as d s_T = d s_t J_{t+1} ... J_T.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import lapack

from rnngrad.nn import model
from rnngrad.nn.functional import GAMMA, check_activation, check_sample, dactivation, is_integer
from rnngrad.nn.spec import Cache

_SATURATION_LEVEL = 0.01  # a unit is saturated when f'(a) < 1% of max |f'|


def grad_norms_through_time(ds: np.ndarray) -> np.ndarray:
    """||dL/ds_t|| for every t, the L2 norm over batch and units. ds (T, B, H) -> (T,), float64.

    Accumulated in float64 whatever the dtype of ds: squaring a float32 gradient below ~1e-23 would
    underflow and report 0 for a gradient that float32 still holds.
    """
    T = ds.shape[0]
    flat = ds.reshape(T, 1, -1).astype(np.float64, copy=False)
    # the T dot products <ds_t, ds_t> as one batched product: BLAS, several times faster than einsum here
    return np.sqrt((flat @ flat.transpose(0, 2, 1)).reshape(T))


def decay_rate(norms: np.ndarray) -> float:
    """Least-squares slope of log ||dL/ds_t|| per step back in time.

    norms (T,), index t-1 for s_t; the distance back from the last state is T - t. A negative slope
    means vanishing, a positive one exploding. Zero or non-finite norms (outside a truncation
    window, or after overflow) are left out; fewer than two usable points give NaN.
    """
    norms = np.asarray(norms, dtype=np.float64)
    distance = np.arange(norms.size - 1, -1, -1, dtype=np.float64)
    ok = np.isfinite(norms) & (norms > 0)
    if ok.sum() < 2:
        return float("nan")
    d, y = distance[ok], np.log(norms[ok])
    d_c = d - d.mean()
    return float(np.dot(d_c, y - y.mean()) / np.dot(d_c, d_c))


def spectral_radius(W: np.ndarray) -> float:
    """rho(W) = max |eigenvalue|."""
    return float(np.max(np.abs(np.linalg.eigvals(W))))


def sigma_max(W: np.ndarray) -> float:
    """Largest singular value of W (its spectral norm)."""
    return float(np.linalg.norm(W, 2))


def step_jacobians(params: dict, cache: Cache, sample: int = 0) -> np.ndarray:
    """J[t] = ds_t/ds_{t-1} in row form for one sample of the batch, every cell. Returns (T, H, H).

    Vanilla RNN: W diag(f'(a_t)); the remedy cells: `nn.cells.step_jacobians`.
    """
    return model.step_jacobians(params, cache, sample)


def jacobian_norms(params: dict, cache: Cache, activation: str, sample: int = 0) -> np.ndarray:
    """Spectral norm of ds_T/ds_t for t = 1..T, for one sample of the batch. Returns (T,).

    The exact product of the per-step Jacobians J_u (`step_jacobians`): M_T = I, M_t = J_{t+1} M_{t+1}.
    `activation` names the rnn's f, checked against the cache (the lstm and gru ignore it).
    """
    cache.spec.check_activation(activation)
    J = step_jacobians(params, cache, sample).astype(np.float64)
    T, H, _ = J.shape
    products = np.empty((T, H, H))
    products[T - 1] = np.eye(H)
    for t in range(T - 2, -1, -1):
        np.matmul(J[t + 1], products[t + 1], out=products[t])
    return spectral_norms(products)


def spectral_norms(M: np.ndarray) -> np.ndarray:
    """The largest singular value of each matrix of a stack M (n, H, H). Returns (n,).

    sigma_max(M) = sqrt(lambda_max(M M^T)): LAPACK's dsyevr finds the largest eigenvalue of the Gram
    matrix alone, exact to rounding like a full eigensolver or an SVD and about 3x cheaper at H = 32
    (the diagnostic step's largest cost). Each M is first divided by its largest |entry|, so that
    squaring neither underflows a vanishing product nor overflows an exploding one.
    """
    n, H = M.shape[0], M.shape[1]
    scale = np.max(np.abs(M), axis=(1, 2)) if n else np.zeros(0)
    scale[scale == 0] = 1.0
    norms = np.empty(n)
    for i in range(n):
        m = M[i] / scale[i]
        top, *_, info = lapack.dsyevr(m @ m.T, compute_v=0, range="I", il=H, iu=H)
        if info != 0:  # LAPACK did not converge: not seen; fall back to the full solver
            top = np.linalg.eigvalsh(m @ m.T)[-1:]
        norms[i] = np.sqrt(max(top[0], 0.0))
    return norms * scale


def pascanu_bound(params: dict, activation: str, T: int) -> np.ndarray:
    """The upper bound (gamma * sigma_max(W))^(T-t) on ||ds_T/ds_t||, t = 1..T (Pascanu et al. 2013, Eq. 7).

    gamma = max |f'|: 1/4 for sigmoid, 1 for tanh, relu and linear. Returns (T,).
    """
    check_activation(activation)
    eta = GAMMA[activation] * sigma_max(params["W"])
    return eta ** np.arange(T - 1, -1, -1, dtype=np.float64)


def saturated_fraction(y: np.ndarray, activation: str) -> float:
    """Fraction of the outputs y = f(a) (any shape) with f'(a) below 1% of max |f'|.

    For relu these are the dead units (f'(a) = 0); a linear unit never saturates; a sigmoid s counts
    when s (1 - s) < 1% of 1/4, a tanh y when 1 - y^2 < 0.01.
    """
    check_activation(activation)
    fprime = dactivation(y, activation)
    return float(np.mean(fprime < _SATURATION_LEVEL * GAMMA[activation]))


def saturation(cache: Cache, activation: str) -> float:
    """Fraction of saturated nonlinearities (`saturated_fraction`) of the model, over t, batch and units.

    The rnn cells: of the states s; lstm and gru: over all gate activations (T, B, 4H or 3H).
    `activation` names the rnn's f, checked against the cache (the lstm and gru ignore it).
    """
    cache.spec.check_activation(activation)
    # equal-sized blocks: the mean of their fractions is the fraction over all of them
    return float(np.mean([saturated_fraction(y, f) for y, f in model.nonlinearities(cache).values()]))


def cell_state_jacobian_diag(cache: Cache, sample: int = 0) -> np.ndarray:
    """The LSTM's c -> c Jacobian d c_t / d c_{t-1} = diag(f_t) at fixed h_{t-1}: returns f_t (T, H).

    Its product over time is what carries dL/dc back unsquashed (the constant error carousel of
    Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000).
    """
    outputs = model.nonlinearities(cache)
    if "f" not in outputs:
        raise ValueError(f"cell_state_jacobian_diag needs an lstm cache (its forget gate f), got cell {cache.spec.cell!r}")
    forget, _ = outputs["f"]
    sample = check_sample(sample, forget.shape[1])
    return forget[:, sample].copy()


def lyapunov_exponents(
    params: dict,
    x: np.ndarray,
    activation: str,
    k: int,
    *,
    cell: str = "rnn",
    norm: str = "none",
    h0: np.ndarray | None = None,
    rng: np.random.Generator | int = 0,
    cache: Cache | None = None,
) -> np.ndarray:
    """The top k Lyapunov exponents (nats per step) of the state dynamics along the trajectory of x.

    QR method (Engelken, Wolf & Abbott 2020): evolve an orthonormal basis Q (H, k) with the step
    Jacobians in column form, Q <- J_t^T Q, re-orthonormalize by QR every step and average
    log |diag(R)| over time. The trajectory is the first sample of x (T, B, D) (the whole batch is run,
    so batch normalization has its statistics). Returns (k,), descending.
    `cache`: the forward cache of x from the same params and h0, if the caller already has it.
    For a linear RNN the exponents are log |eig(W)|.
    """
    H = params["W"].shape[0]
    if not is_integer(k) or not 1 <= k <= H:
        raise ValueError(f"k must be an integer in [1, {H}], got {k!r}")
    if cache is None:
        _, cache = model.forward(params, x, activation=activation, cell=cell, norm=norm, h0=h0)
    cache.spec.check_activation(activation)
    advance = model.tangent_map(params, cache, 0)
    T = cache["s"].shape[0]
    q, _ = np.linalg.qr(np.random.default_rng(rng).standard_normal((H, k)))
    log_growth = np.zeros(k)
    for t in range(T):
        q, r_diag = _qr(advance(t, q))
        log_growth += np.log(np.abs(r_diag))
    return np.sort(log_growth / T)[::-1]


def _qr(a: np.ndarray):
    """Q (H, k) and diag(R) (k,) of a = QR. For k = 1 that is a / |a| and |a|, computed directly:
    np.linalg.qr's overhead would dominate the per-step loop. (A zero column stays zero: exponent -inf.)"""
    if a.shape[1] == 1:
        norm = np.sqrt(a[:, 0] @ a[:, 0])
        return (a / norm if norm > 0 else a), np.array([norm])
    q, r = np.linalg.qr(a)
    return q, np.diag(r)
