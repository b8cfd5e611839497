"""Activations and the checks every model shares.

The activations are written in place (`activate_`) or from their outputs (`dactivation`): the hot loops
must not allocate. The checks raise ValueError naming what was expected.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

ACTIVATIONS = ("sigmoid", "tanh", "relu", "linear")
DTYPES = ("float64", "float32")
_DTYPES = tuple(np.dtype(name) for name in DTYPES)  # compared as objects: a dtype's .name is slow to build

# max |f'(a)|: the gamma of Pascanu et al. (2013), Sec. 2.1
GAMMA = {"sigmoid": 0.25, "tanh": 1.0, "relu": 1.0, "linear": 1.0}


# --------------------------------------------------------------------------------------------
# Activations
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
# Checks
# --------------------------------------------------------------------------------------------


def is_integer(value) -> bool:
    """True for a Python or numpy integer, False for a bool (which Python counts as an int)."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def check_size(name: str, value) -> int:
    if not is_integer(value) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_sample(sample, B: int) -> int:
    if not is_integer(sample) or not 0 <= sample < B:
        raise ValueError(f"sample must be an integer in [0, {B}), got {sample!r}")
    return int(sample)


def check_truncation(truncation) -> int | None:
    if truncation is None:
        return None
    if not is_integer(truncation) or truncation < 1:
        raise ValueError(f"truncation must be None (full BPTT) or an integer >= 1, got {truncation!r}")
    return int(truncation)


def check_params(params: dict, shapes: Callable[[int, int, int], dict], layout: str) -> tuple[int, int, int]:
    """Validate a parameter dict against the shapes of its model; return (D, H, O).

    D, H and O are read from U (D, .), W (H, .) and V (., O); shapes(D, H, O) gives every key's shape;
    `layout` describes them for the error messages (e.g. "a rnn has U (D, H), ...").
    """
    U, W, V = (params.get(key) for key in ("U", "W", "V"))
    if any(not isinstance(p, np.ndarray) or p.ndim != 2 for p in (U, W, V)):
        raise ValueError(f"params needs 2-d arrays U, W and V; {layout}")
    expected = shapes(U.shape[0], W.shape[0], V.shape[1])
    if params.keys() != expected.keys():
        raise ValueError(f"params has keys {sorted(params)}; it needs {sorted(expected)}")
    wrong = {k: params[k].shape for k, shape in expected.items() if params[k].shape != shape}
    if wrong:
        raise ValueError(f"inconsistent parameter shapes {wrong}; {layout}")
    if W.dtype not in _DTYPES or any(params[k].dtype != W.dtype for k in expected):
        raise ValueError("parameters must all be float32 or all float64")
    return U.shape[0], W.shape[0], V.shape[1]


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


def check_state(name: str, value, B: int, H: int, dtype) -> np.ndarray:
    """An initial state (B, H): zeros for None, else checked."""
    if value is None:
        return np.zeros((B, H), dtype=dtype)
    if not isinstance(value, np.ndarray) or value.shape != (B, H) or value.dtype != dtype:
        raise ValueError(f"{name} must be a {np.dtype(dtype)} array of shape ({B}, {H})")
    return value


def loss_steps(dout: np.ndarray) -> np.ndarray:
    """The steps that carry loss: (T,) bool, True where dout (T, B, O) has a nonzero entry."""
    return (dout != 0).reshape(dout.shape[0], -1).any(axis=1)


def check_dout(dout, T: int, B: int, O: int, dtype) -> np.ndarray:
    if not isinstance(dout, np.ndarray) or dout.shape != (T, B, O):
        raise ValueError(f"dout must have shape ({T}, {B}, {O}), got {getattr(dout, 'shape', type(dout))}")
    if not np.all(np.isfinite(dout)):
        raise ValueError("dout contains NaN or Inf")
    return np.asarray(dout, dtype=dtype)
