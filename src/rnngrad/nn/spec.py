"""Which model ran: the cell, its normalization and its activation, and the cache that records them.

A forward pass returns a `Cache`: its `spec` says which model made it (so that `nn.model` dispatches on
it, and nobody else has to ask), its arrays are read by name (`cache["s"]`; each forward documents its
own). The arrays of one cache are views that backward may read and (the LSTM's dL/dc) add to.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from rnngrad.nn.functional import check_activation

CELLS = ("rnn", "lstm", "gru")
NORMS = ("none", "layer", "batch")  # what a configuration chooses; batch norm in one of BN_VARIANTS
VANILLA = ("rnn", "none")  # the plain RNN, nn.rnn
VALID_COMBINATIONS = (("rnn", "none"), ("lstm", "none"), ("gru", "none"), ("rnn", "layer"), ("rnn", "batch"))
# The two batch norms of the rnn cell, by the name a configuration gives them, and the model's norm for each
# (nn.cells): "cooijmans" normalizes x_t U and s_{t-1} W separately and evaluates with population statistics
# (Cooijmans et al. 2016), "summed" normalizes their sum with the batch's statistics, in training and evaluation.
BN_VARIANTS = {"cooijmans": "recurrent_batch", "summed": "batch"}
# every norm the model runs: NORMS and the Cooijmans variant's own name
MODEL_NORMS = NORMS + ("recurrent_batch",)
MODEL_COMBINATIONS = VALID_COMBINATIONS + (("rnn", "recurrent_batch"),)


def model_norm(norm: str, bn_variant: str) -> str:
    """The model's norm for a configuration's norm and batch-norm variant (BN_VARIANTS; used for "batch")."""
    if bn_variant not in BN_VARIANTS:
        raise ValueError(f"unknown batch-norm variant {bn_variant!r}; valid choices: {', '.join(BN_VARIANTS)}")
    return BN_VARIANTS[bn_variant] if norm == "batch" else norm


def check_cell(cell: str, norm: str) -> None:
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; valid choices: {', '.join(CELLS)}")
    if norm not in MODEL_NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid choices: {', '.join(MODEL_NORMS)}")
    if (cell, norm) not in MODEL_COMBINATIONS:
        valid = ", ".join(f"{c}/{n}" for c, n in MODEL_COMBINATIONS)
        raise ValueError(f"cell {cell!r} with norm {norm!r} is not available; valid cell/norm: {valid}")


@dataclass(frozen=True)
class Spec:
    """A valid model: `cell` and `norm` one of VALID_COMBINATIONS; `activation` the f of the rnn cell
    (vanilla or normalized), None for lstm and gru, whose nonlinearities are fixed."""

    cell: str
    norm: str
    activation: str | None

    def __post_init__(self):
        check_cell(self.cell, self.norm)
        if self.cell == "rnn":
            check_activation(self.activation)
        elif self.activation is not None:
            raise ValueError(f"a {self.cell} has fixed nonlinearities: its activation is None, got {self.activation!r}")

    @property
    def vanilla(self) -> bool:
        """The plain RNN s_t = f(x_t U + s_{t-1} W + b), without normalization."""
        return (self.cell, self.norm) == VANILLA

    def check_activation(self, activation: str | None) -> None:
        """Check an activation a caller names for this model: for the rnn cells it must be valid and the one
        the model ran with; the lstm and gru ignore it (as forward does)."""
        if self.cell != "rnn":
            return
        check_activation(activation)
        if activation != self.activation:
            raise ValueError(f"activation {activation!r} is not the one the model ran with, {self.activation!r}")


@lru_cache(maxsize=None)
def spec(cell: str, norm: str, activation: str | None) -> Spec:
    """Spec(cell, norm, activation), checked once per combination (forward makes one per call)."""
    return Spec(cell, norm, activation)


@dataclass(eq=False)
class Cache(Mapping):
    """What a forward pass keeps for backward and the instruments: its spec and its arrays by name."""

    spec: Spec
    arrays: dict[str, np.ndarray]

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.arrays)

    def __len__(self) -> int:
        return len(self.arrays)
