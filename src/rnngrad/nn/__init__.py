"""The numpy model layer: the vanilla RNN, LSTM, GRU and normalized RNNs with exact BPTT.

It imports nothing else of rnngrad. `nn.model` is the entry (init_params, forward, backward,
step_jacobians); the choices it accepts are here for whoever builds configuration on top:
ACTIVATIONS, INITS, CELLS, NORMS, VALID_COMBINATIONS (cell, norm), BN_VARIANTS and DTYPES.

    functional  activations, GAMMA, input checks        rnn    the vanilla RNN (step and sequence pairs)
    init        every initialization                    cells  lstm, gru, layer/batch-norm rnn
    spec        Spec (cell, norm, activation), Cache    bptt   the generic full/truncated BPTT driver
"""

from rnngrad.nn.functional import ACTIVATIONS, DTYPES, GAMMA
from rnngrad.nn.init import INITS
from rnngrad.nn.spec import BN_VARIANTS, CELLS, NORMS, VALID_COMBINATIONS

__all__ = ["ACTIVATIONS", "BN_VARIANTS", "CELLS", "DTYPES", "GAMMA", "INITS", "NORMS", "VALID_COMBINATIONS"]
