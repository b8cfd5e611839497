"""The instruments of the study: how gradients travel back through time.

All functions take what the core already computed (states in the forward cache, ds from backward)
and never rerun the model, except `lyapunov_exponents`, which needs a trajectory of its own.
Row-vector convention as in `rnngrad.core`: the Jacobian of one step is

    ds_t / ds_{t-1} = W diag(f'(a_t))      (H, H)

and a perturbation row vector evolves as d s_T = d s_t J_{t+1} ... J_T.
"""

from __future__ import annotations

import numpy as np

from rnngrad import cells
from rnngrad.core import GAMMA, check_activation, dactivation, forward

_SATURATION_LEVEL = 0.01  # a unit is saturated when f'(a) < 1% of max |f'|


def grad_norms_through_time(ds: np.ndarray) -> np.ndarray:
    """||dL/ds_t|| for every t, the L2 norm over batch and units. ds (T, B, H) -> (T,)."""
    T = ds.shape[0]
    flat = ds.reshape(T, -1)
    return np.sqrt(np.einsum("ij,ij->i", flat, flat))


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


def step_jacobians(params: dict, cache: dict, sample: int = 0) -> np.ndarray:
    """J[t] = ds_t/ds_{t-1} in row form for one sample of the batch, every cell. Returns (T, H, H).

    Vanilla RNN: W diag(f'(a_t)); the remedy cells: `rnngrad.cells.step_jacobians`.
    """
    if "cell" in cache:
        return cells.step_jacobians(params, cache, sample)
    fprime = dactivation(cache["s"][:, sample, :], cache["activation"])  # (T, H)
    return params["W"][None, :, :] * fprime[:, None, :]


def jacobian_norms(params: dict, cache: dict, activation: str, sample: int = 0) -> np.ndarray:
    """Spectral norm of ds_T/ds_t for t = 1..T, for one sample of the batch. Returns (T,).

    The exact product of the per-step Jacobians J_u (`step_jacobians`): M_T = I, M_t = J_{t+1} M_{t+1}.
    `activation` names the vanilla RNN's f (the cache of a remedy cell carries its own).
    """
    if "cell" not in cache:
        check_activation(activation)
    J = step_jacobians(params, cache, sample).astype(np.float64)
    T, H, _ = J.shape
    products = np.empty((T, H, H))
    products[T - 1] = np.eye(H)
    for t in range(T - 2, -1, -1):
        np.matmul(J[t + 1], products[t + 1], out=products[t])
    norms = np.empty(T)
    for start in range(0, T, 64):  # batched SVDs, in chunks to bound memory
        norms[start : start + 64] = np.linalg.svd(products[start : start + 64], compute_uv=False)[:, 0]
    return norms


def pascanu_bound(params: dict, activation: str, T: int) -> np.ndarray:
    """The upper bound (gamma * sigma_max(W))^(T-t) on ||ds_T/ds_t||, t = 1..T (Pascanu et al. 2013, Eq. 7).

    gamma = max |f'|: 1/4 for sigmoid, 1 for tanh, relu and linear. Returns (T,).
    """
    check_activation(activation)
    eta = GAMMA[activation] * sigma_max(params["W"])
    return eta ** np.arange(T - 1, -1, -1, dtype=np.float64)


def saturation(cache: dict, activation: str) -> float:
    """Fraction of units (over t, batch, units) with f'(a) below 1% of max |f'|.

    For relu these are the dead units (f'(a) = 0); a linear unit never saturates. For the gated
    cells, the fraction of saturated gates (`rnngrad.cells.saturation_fraction`).
    """
    if cache.get("cell") in ("lstm", "gru"):
        return cells.saturation_fraction(cache)
    check_activation(activation)
    fprime = dactivation(cache["s"], activation)
    return float(np.mean(fprime < _SATURATION_LEVEL * GAMMA[activation]))


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
) -> np.ndarray:
    """The top k Lyapunov exponents (nats per step) of the state dynamics along the trajectory of x.

    QR method (Engelken, Wolf & Abbott 2020): evolve an orthonormal basis Q (H, k) with the step
    Jacobians in column form, Q <- J_t^T Q, re-orthonormalize by QR every step and average
    log |diag(R)| over time. The trajectory is the first sample of x (T, B, D) (the whole batch is run,
    so batch normalization has its statistics). Returns (k,), descending.
    For a linear RNN the exponents are log |eig(W)|.
    """
    H = params["W"].shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= H:
        raise ValueError(f"k must be an integer in [1, {H}], got {k!r}")
    _, cache = forward(params, x, activation=activation, cell=cell, norm=norm, h0=h0)
    if "cell" in cache:
        JT = np.swapaxes(step_jacobians(params, cache, 0).astype(np.float64), 1, 2)

        def advance(t, q):
            return JT[t] @ q
    else:  # the vanilla RNN without forming J: diag(f'(a_t)) W^T Q
        fprime = dactivation(cache["s"][:, 0, :].astype(np.float64), activation)
        WT = params["W"].T.astype(np.float64)

        def advance(t, q):
            return fprime[t][:, None] * (WT @ q)

    T = cache["s"].shape[0]
    q, _ = np.linalg.qr(np.random.default_rng(rng).standard_normal((H, k)))
    log_growth = np.zeros(k)
    for t in range(T):
        q, r = np.linalg.qr(advance(t, q))
        log_growth += np.log(np.abs(np.diag(r)))
    return np.sort(log_growth / T)[::-1]
