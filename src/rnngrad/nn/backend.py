"""Which implementation runs the recurrences: numpy, the readable reference, or numba's compiled kernels.

    RNNGRAD_BACKEND=auto|numpy|numba     the environment's choice, read when a model first runs (default auto)
    backend.select("numpy")              the choice in code; "numba" raises if numba cannot be imported
    backend.name()                       -> "numpy" or "numba": the backend in use (what a run reports)
    with backend.using("numpy"): ...     a choice for a block of code
    backend.available()                  the backends that can run here

"auto" is numba when it imports, else numpy. Only the per-step loops differ (`nn.kernels` for numba,
the loops of `nn.rnn` and `nn.cells` for numpy), and the weight gradients' products (`matmul`). The two
agree to float64 rounding, not bit for bit: the kernels' products go through scipy's BLAS, their sums
run in another order, and their tanh, sigmoid and exp are nn.kernels' own (within 3 ulp of the exact
values, as np.tanh is within 1). A training run is chaotic enough to carry such a difference from the
last bit to every digit within a few hundred steps: runs on the two backends agree closely over a few
dozen steps, and afterwards only in distribution (as runs on two BLAS kernels or CPUs already do).

scipy's OpenBLAS is loaded when the backend first resolves to numba and runs on one thread (nn.kernels
says why); numpy's BLAS keeps its thread count; a threadpoolctl limit entered later covers both.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import numpy as np

BACKENDS = ("auto", "numpy", "numba")
ENV = "RNNGRAD_BACKEND"

_active: str | None = None  # "numpy" or "numba" once resolved
_kernels: ModuleType | None = None  # nn.kernels while the numba backend is active


def _numba_kernels() -> ModuleType | None:
    """nn.kernels, or None when numba (or the scipy BLAS its products call) cannot be imported."""
    try:
        from rnngrad.nn import kernels
    except ImportError:
        return None
    return kernels


def available() -> tuple[str, ...]:
    """The backends that can run here: ("numpy", "numba"), or ("numpy",) without numba."""
    return ("numpy",) if _numba_kernels() is None else ("numpy", "numba")


def select(choice: str) -> str:
    """Use `choice` (one of BACKENDS) from now on; returns the backend it resolves to."""
    global _active, _kernels
    if choice not in BACKENDS:
        raise ValueError(f"unknown backend {choice!r}; valid choices: {', '.join(BACKENDS)}")
    found = None if choice == "numpy" else _numba_kernels()
    if found is None and choice == "numba":
        raise ImportError("backend 'numba' needs numba and scipy; install them or select 'auto' or 'numpy'")
    _active, _kernels = ("numpy", None) if found is None else ("numba", found)
    return _active


def name() -> str:
    """The backend in use, "numpy" or "numba" (resolving $RNNGRAD_BACKEND on the first call)."""
    if _active is None:
        select(os.environ.get(ENV, "auto"))
    return _active


def kernels() -> ModuleType | None:
    """The compiled kernels when the numba backend is in use, else None (run the numpy loops)."""
    name()
    return _kernels


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for 2-d arrays, through the kernels' BLAS when numba is in use: for the long products of the
    weight gradients, (H, T B) @ (T B, H), scipy's OpenBLAS has run up to 1.4x faster than numpy's here."""
    contiguous = all(m.flags.c_contiguous or m.flags.f_contiguous for m in (a, b))  # else numba would copy
    return _kernels.matmul(a, b) if contiguous and kernels() is not None else np.matmul(a, b)


@contextmanager
def using(choice: str) -> Iterator[str]:
    """Select `choice` inside the block and restore the previous backend after it."""
    global _active, _kernels
    previous = _active, _kernels
    try:
        yield select(choice)
    finally:
        _active, _kernels = previous
