"""The vanishing-gradient regularizer Omega of Pascanu, Mikolov & Bengio (2013, Sec. 3.3, eq. 9).

For the vanilla RNN s_t = f(x_t U + s_{t-1} W + b), with delta_t = dL/ds_t (the total derivative that
BPTT returns, `ds`) and the step Jacobian ds_t/ds_{t-1} = diag(f'(a_t)) W^T in column form (row form:
delta_t ds_t/ds_{t-1} = (delta_t * f'(a_t)) W^T), each term asks that one step back preserves the norm of
the gradient in the direction the error actually takes:

    Omega_t = ( ||(delta_t * f'(a_t)) W^T|| / ||delta_t|| - 1 )^2,     t = 1 .. T (s_0 = h0 included)

Differentiation: the paper (Sec. 3.3) treats dE/dx_{k+1} as constant with respect to W_rec when it
differentiates Omega_k, and takes the derivative with respect to W_rec only; their code (RNN.py:
`TT.grad(tmp_reg, W_hh)` with the gradients and the states as separate inputs, substituted afterwards)
also holds the states, hence f'(a_t), constant. So here delta_t and f'(a_t) are constants and Omega is
differentiated with respect to W only (U, b, V, c get nothing from it). With
u = delta_t * f'(a_t) and v = u W^T,

    dOmega_t/dW = 2 (r_t - 1) / (||delta_t|| ||v||) v^T u,     r_t = ||v|| / ||delta_t||.

The training loop adds alpha dOmega/dW to the loss gradient of W before clipping, as their code does.

Where this follows the paper and where their code (pascanur/trainingRNNs, RNN.py), each documented:
- the ratio of norms is the paper's eq. 9; their code takes the ratio of squared norms
  (||v||^2 / ||delta||^2 - 1)^2;
- the state is the project's s_t = f(a_t), as in their code (h); the paper writes the model as
  x_k = W_rec sigma(x_{k-1}) + W_in u_k + b, whose state is the pre-activation, and the Jacobian
  W_rec^T diag(sigma'(x_k)) of that parametrization;
- eq. 9 sums over k for one sequence; here, as in their code, Omega is the mean of the terms over the
  steps and the sequences of the batch whose ||delta_t||^2 >= 1e-20 (their `bound`; the others would
  divide by zero and count 0), so that alpha means what it meant in their experiments (alpha = 2 for
  temporal order) whatever T and the batch size.
"""

from __future__ import annotations

import numpy as np

from rnngrad.nn import backend
from rnngrad.nn import functional as F
from rnngrad.nn.spec import Cache

MIN_NORM2 = 1e-20  # terms with ||dL/ds_t||^2 below this are left out (Pascanu et al.'s code: `bound`)


def omega_terms(W: np.ndarray, ds: np.ndarray, fprime: np.ndarray):
    """The pieces of Omega at W with delta = ds (T, B, H) and f'(a_t) = fprime (T, B, H) held constant.

    Returns (r (T, B) the norm ratios, valid (T, B) the terms that count, u = ds * fprime, v = u W^T).
    """
    T, B, H = ds.shape
    u = ds * fprime
    v = (u.reshape(T * B, H) @ W.T).reshape(T, B, H)
    den2 = np.einsum("tbh,tbh->tb", ds, ds)
    valid = den2 >= MIN_NORM2
    num = np.sqrt(np.einsum("tbh,tbh->tb", v, v))
    r = np.where(valid, num / np.sqrt(np.where(valid, den2, 1.0)), 1.0)
    return r, valid, u, v


def omega_value(W: np.ndarray, ds: np.ndarray, fprime: np.ndarray) -> float:
    """Omega at W, delta and f' held constant (see the module docstring): the mean of the valid terms."""
    r, valid, _, _ = omega_terms(W, ds, fprime)
    n = int(valid.sum())
    return float(np.sum((r - 1.0) ** 2) / n) if n else 0.0


def omega_and_grad(W: np.ndarray, ds: np.ndarray, fprime: np.ndarray) -> tuple[float, np.ndarray]:
    """(Omega, dOmega/dW (H, H)) at W with ds = dL/ds_t and fprime = f'(a_t) (T, B, H) held constant.

    A term whose ||v|| is 0 (every unit it reaches has f' = 0, or W = 0) has no derivative of ||v||; it
    contributes 0 to the gradient (its value, 1, still counts).
    """
    r, valid, u, v = omega_terms(W, ds, fprime)
    n = int(valid.sum())
    if n == 0:
        return 0.0, np.zeros_like(W)
    T, B, H = ds.shape
    den = np.sqrt(np.where(valid, np.einsum("tbh,tbh->tb", ds, ds), 1.0))
    num = r * den
    with np.errstate(divide="ignore", invalid="ignore"):
        coef = np.where(valid & (num > 0), 2.0 * (r - 1.0) / (den * num), 0.0) / n
    dW = backend.matmul((coef[..., None] * v).reshape(T * B, H).T, u.reshape(T * B, H))  # a weight gradient's product
    return float(np.sum((r - 1.0) ** 2) / n), dW.astype(W.dtype, copy=False)


def omega(params: dict, cache: Cache, ds: np.ndarray) -> tuple[float, np.ndarray]:
    """Omega of a vanilla RNN's forward (cache) and backward (ds = dL/ds_t), and its gradient w.r.t. W.

    Returns (Omega, dOmega/dW (H, H)) as omega_and_grad, with f'(a_t) from the cache's states.
    """
    if not cache.spec.vanilla:
        raise ValueError(f"Omega (Pascanu et al. 2013) is defined for the vanilla RNN, not a "
                         f"{cache.spec.cell} with norm {cache.spec.norm!r}")
    fprime = F.dactivation(cache["s"], cache.spec.activation)
    return omega_and_grad(params["W"], ds, fprime)
