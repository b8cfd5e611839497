"""The one entry to the models: every cell behind the same five calls.

    params = init_params(D, H, O, cell=..., norm=..., init=..., rng=...)
    out, cache = forward(params, x, activation=..., cell=..., norm=...)     x (T, B, D) -> out (T, B, O)
    out = predict(params, x, activation=..., cell=..., norm=...)             the same out, no cache (evaluation)
                                                                 population=Population(): norm recurrent_batch's
    grads, ds = backward(params, cache, dout, truncation=None)                ds (T, B, H) = dL/ds_t
    J = step_jacobians(params, cache, sample)                                 (T, H, H), row form
    value, dW = omega(params, cache, ds)              Pascanu et al.'s regularizer (vanilla RNN): nn.omega

The per-step loops run on the backend `backend_name()` reports, "numpy" or "numba" (nn.backend: chosen by
$RNNGRAD_BACKEND or nn.backend.select; numba when it imports, unless told otherwise).

This is the only module that asks which cell it runs: the vanilla RNN (`nn.rnn`, specialised in-place
loops) or a remedy cell (`nn.cells`: lstm, gru, rnn with layer or batch norm).
The cache a forward returns carries its Spec, and every call that takes a cache dispatches on that.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from rnngrad.nn import cells, rnn
from rnngrad.nn import init as nn_init
from rnngrad.nn.backend import name as backend_name
from rnngrad.nn.functional import DTYPES, check_size
from rnngrad.nn.omega import omega
from rnngrad.nn.population import Population
from rnngrad.nn.workspace import Workspace
from rnngrad.nn.spec import MODEL_COMBINATIONS, VANILLA, Cache, Spec, check_cell, model_norm

__all__ = ["Cache", "Population", "Spec", "Workspace", "backend_name", "backward", "check_cell", "forward", "init_params", "model_norm",
           "nonlinearities", "omega", "predict", "step_jacobians", "tangent_map", "warm_up"]


def init_params(
    input_size: int,
    hidden_size: int,
    output_size: int,
    *,
    cell: str = "rnn",
    norm: str = "none",
    init: str,
    spectral_radius: float | None = None,
    scale: float = 1.0,
    rng: np.random.Generator | int,
    dtype=np.float64,
    forget_bias: float = 1.0,
    io_std: float | None = None,
    bn_gain: float = 0.1,
) -> dict[str, np.ndarray]:
    """Parameters of a model: for every gate, U's (D, H) block and W's (H, H) block are drawn as
    nn.init.draw draws a vanilla RNN's U and W (`init`, `scale`, and `spectral_radius`, which rescales each
    W block on its own; `io_std`, the standard deviation of U and V, None for the init's own).

    rnn:           {"U": (D, H), "W": (H, H), "b": (H,), "V": (H, O), "c": (O,)}
    rnn with norm: the same plus the gain "g" (H,): 1 for layer norm, `bn_gain` for batch norm;
                   recurrent_batch: the gains "gx", "gh" (H,) = `bn_gain` instead (nn.cells.add_cell_params)
    lstm, gru:     see nn.cells.add_cell_params (`forget_bias`: the LSTM forget gate's bias; others ignore it)
    """
    check_cell(cell, norm)
    D = check_size("input_size", input_size)
    H = check_size("hidden_size", hidden_size)
    O = check_size("output_size", output_size)
    nn_init.check_init(init, scale, spectral_radius, io_std)
    rng = np.random.default_rng(rng)
    drawn = [nn_init.draw(D, H, O, init, spectral_radius, float(scale), rng, dtype, io_std)
             for _ in range(cells.N_GATES[cell])]
    params = nn_init.gate_blocks(drawn)
    if (cell, norm) == VANILLA:
        return params
    return cells.add_cell_params(params, cell, forget_bias=forget_bias, norm=norm, bn_gain=float(bn_gain))


def forward(params: dict, x: np.ndarray, *, activation: str, cell: str = "rnn", norm: str = "none", h0=None,
            workspace: Workspace | None = None) -> tuple[np.ndarray, Cache]:
    """Run a model over a sequence: x (T, B, D) -> out (T, B, O) and the Cache for backward.

    h0: the initial state (B, H), None for zeros; for the lstm a tuple (h0, c0) or None. `activation` is f
    of the rnn cells (vanilla or normalized); the lstm and gru have fixed nonlinearities and ignore it.
    `workspace` (see Workspace): buffers reused from call to call, whose views the cache holds.
    The cache's arrays: nn.rnn.forward and nn.cells.forward.
    """
    if (cell, norm) == VANILLA:
        return rnn.forward(params, x, activation=activation, h0=h0, workspace=workspace)
    return cells.forward(params, x, cell=cell, norm=norm, activation=activation, h0=h0, workspace=workspace)


def predict(params: dict, x: np.ndarray, *, activation: str, cell: str = "rnn", norm: str = "none", h0=None,
            workspace: Workspace | None = None, population: Population | None = None) -> np.ndarray:
    """The outputs of `forward`, out (T, B, O), without keeping what only backward needs: for evaluation.

    The remedy cells keep their gates, cell states and normalized pre-activations for one step at a time
    (nn.cells.predict); the vanilla RNN needs its states for the outputs anyway, and with a `workspace`
    (one kept for evaluation: not the training step's, whose cache must stay valid) allocates nothing.
    `population`: norm recurrent_batch's population statistics (nn.population), None for the batch's.
    """
    if (cell, norm) == VANILLA:
        if population is not None:
            raise ValueError("population statistics are for norm 'recurrent_batch', not the vanilla RNN")
        out, _ = rnn.forward(params, x, activation=activation, h0=h0, workspace=workspace)
        return out
    return cells.predict(params, x, cell=cell, norm=norm, activation=activation, h0=h0, workspace=workspace,
                         population=population)


def backward(params: dict, cache: Cache, dout: np.ndarray, *, truncation: int | None = None,
             workspace: Workspace | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Exact BPTT, full (truncation=None) or windowed-truncated (truncation=k, Williams & Peng 1990).

    dout (T, B, O) = dL/do_t. Returns (grads, ds): grads has the keys and shapes of params; ds (T, B, H)
    is dL/ds_t, the total derivative through all later states (within the window when truncating).
    The gradient of each L_t reaches the states at t .. t-k+1 only; k >= T is full BPTT. For the lstm,
    backward also sets cache["dc"] (T, B, H) = dL/dc_t.
    """
    if cache.spec.vanilla:
        return rnn.backward(params, cache, dout, truncation=truncation, workspace=workspace)
    return cells.backward(params, cache, dout, truncation=truncation, workspace=workspace)


def step_jacobians(params: dict, cache: Cache, sample: int = 0) -> np.ndarray:
    """J[t] = ds_t/ds_{t-1} in row form for one sample of the batch, every cell. Returns (T, H, H).

    Vanilla RNN: W diag(f'(a_t)); the other cells: nn.cells.step_jacobians (the lstm's with c_{t-1} fixed,
    batch norm's with the batch statistics fixed).
    """
    if cache.spec.vanilla:
        return rnn.step_jacobians(params, cache, sample)
    return cells.step_jacobians(params, cache, sample)


def tangent_map(params: dict, cache: Cache, sample: int = 0) -> Callable[[int, np.ndarray], np.ndarray]:
    """The step Jacobians in column form as a map: advance(t, Q (H, k)) = J[t]^T Q, in float64.

    The vanilla RNN applies diag(f'(a_t)) W^T without forming J; the other cells form J once.
    """
    if cache.spec.vanilla:
        return rnn.tangent_map(params, cache, sample)
    return cells.tangent_map(params, cache, sample)


def nonlinearities(cache: Cache) -> dict[str, tuple[np.ndarray, str]]:
    """The outputs of every nonlinearity of the model and its name: {name: (y (T, B, H), f)}.

    The rnn cells: {"s": (states, the activation)}; lstm: gates i, f, g, o; gru: gates r, z, n (views).
    """
    if cache.spec.cell == "rnn":
        return {"s": (cache["s"], cache.spec.activation)}
    return cells.gate_outputs(cache)


def warm_up(reverse: bool = False) -> None:
    """Run every cell once, in both dtypes and both BPTT modes, on a tiny problem: with the numba backend
    this compiles every kernel into numba's cache (about half a minute on a fresh clone), or loads it.
    Call it once before a sweep, so that its workers do not each compile the same kernels. Two processes
    that must warm up at once (a test run's two workers) go through the cells from opposite ends
    (`reverse`): each then loads from the cache what the other compiled, and both are done in about
    two thirds of the time."""
    combinations = list(itertools.product(MODEL_COMBINATIONS, DTYPES))
    for (cell, norm), dtype in reversed(combinations) if reverse else combinations:
        params = init_params(2, 3, 1, cell=cell, norm=norm, init="orthogonal", rng=0, dtype=dtype)
        x, dout = np.ones((4, 2, 2), dtype=dtype), np.ones((4, 2, 1), dtype=dtype)
        predict(params, x, activation="tanh", cell=cell, norm=norm)
        _, cache = forward(params, x, activation="tanh", cell=cell, norm=norm)
        for truncation in (None, 2):
            backward(params, cache, dout, truncation=truncation)
