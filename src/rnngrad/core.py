"""The public face of the model layer, `rnngrad.nn`: what scripts, notebooks and the training loop use.

    params = core.init_params(D, H, O, init="orthogonal", rng=0)          # cell="lstm", norm="layer", ...
    out, cache = core.forward(params, x, activation="tanh")                 x (T, B, D) -> out (T, B, O)
    grads, ds = core.backward(params, cache, dout, truncation=None)         ds (T, B, H) = dL/ds_t

Conventions (row vectors, time-major arrays) and the equations: `nn.rnn` for the vanilla RNN
s_t = f(x_t U + s_{t-1} W + b), o_t = s_t V + c; `nn.cells` for the LSTM, GRU and normalized RNNs.
"""

from rnngrad.nn.functional import ACTIVATIONS, GAMMA, activate_, check_activation, check_truncation, dactivation
from rnngrad.nn.init import INITS
from rnngrad.nn.model import Cache, Spec, Workspace, backward, check_cell, forward, init_params
from rnngrad.nn.rnn import step_backward, step_forward

__all__ = ["ACTIVATIONS", "GAMMA", "INITS", "Cache", "Spec", "Workspace", "activate_", "backward", "check_activation",
           "check_cell", "check_truncation", "dactivation", "forward", "init_params", "step_backward", "step_forward"]
