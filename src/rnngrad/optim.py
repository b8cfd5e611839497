"""First-order optimizers over a dict of numpy parameters, following PyTorch's update conventions.

Each optimizer updates the arrays of `params` in place and keeps its state (velocity, moment
estimates, step count) per key, created the first time the key is seen. `step` returns the global
L2 norm of the update actually applied, lr included, over all parameters: the training loop watches
it to detect divergence.
"""
import abc

import numpy as np

from rnngrad import registry


class Optimizer(abc.ABC):
    """Base class: `step` applies `params[k] -= delta_k` for the delta each subclass computes.

    The deltas are written into buffers kept per key (`_scratch`), so that a step allocates nothing:
    each subclass computes exactly the expressions of its docstring, in their order and dtypes (float64
    state; a float32 gradient's own products stay float32), only with `out=`.
    """

    def __init__(self, lr):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.lr = lr
        self.state = {}
        self._buffers = {}

    def step(self, params, grads):
        """Update every array of `params` in place from `grads`.

        Inputs:
        - params: dict name -> float array, updated in place
        - grads: dict with exactly the keys of params, each array of its parameter's shape

        Returns the L2 norm of the applied update over all parameters, a float.
        """
        if set(grads) != set(params):
            raise ValueError(f"grads must have exactly the keys of params {sorted(params)}, "
                             f"got {sorted(grads)}")
        sq_norm = 0.0
        for key, p in params.items():
            g = grads[key]
            if g.shape != p.shape:
                raise ValueError(f"grad {key!r} has shape {g.shape}, parameter has {p.shape}")
            delta = self._delta(key, g)
            p -= delta
            sq_norm += float(np.vdot(delta, delta))
        return float(np.sqrt(sq_norm))

    def _scratch(self, key, g, *dtypes):
        """Buffers of g's shape for parameter `key`, one per dtype given (made on first use)."""
        buffers = self._buffers.get(key)
        if buffers is None or buffers[0].shape != g.shape:
            buffers = self._buffers[key] = tuple(np.empty(g.shape, dtype=d) for d in dtypes)
        return buffers

    @abc.abstractmethod
    def _delta(self, key, g):
        """The amount to subtract from parameter `key` given its gradient `g`, lr included."""


class SGD(Optimizer):
    """Plain gradient descent: p -= lr g."""

    def _delta(self, key, g):
        (delta,) = self._scratch(key, g, g.dtype)
        return np.multiply(self.lr, g, out=delta)


class Momentum(Optimizer):
    """Heavy-ball momentum, or Nesterov's variant, as in torch.optim.SGD (dampening 0).

    buf = momentum buf + g; p -= lr (g + momentum buf) if nesterov else lr buf.
    """

    def __init__(self, lr, momentum=0.9, nesterov=False):
        super().__init__(lr)
        if not 0 < momentum < 1:
            raise ValueError(f"momentum must lie in (0, 1), got {momentum}")
        self.momentum = momentum
        self.nesterov = nesterov

    def _delta(self, key, g):
        if key not in self.state:
            self.state[key] = np.zeros(g.shape)
        buf = self.state[key]
        (delta,) = self._scratch(key, g, np.float64)
        buf *= self.momentum
        buf += g
        if not self.nesterov:
            return np.multiply(self.lr, buf, out=delta)
        np.multiply(self.momentum, buf, out=delta)
        np.add(g, delta, out=delta)
        delta *= self.lr
        return delta


class RMSProp(Optimizer):
    """RMSProp (Tieleman & Hinton 2012) as in torch.optim.RMSprop.

    v = alpha v + (1 - alpha) g^2; p -= lr g / (sqrt(v) + eps).
    """

    def __init__(self, lr, alpha=0.99, eps=1e-8):
        super().__init__(lr)
        if not 0 <= alpha < 1:
            raise ValueError(f"alpha must lie in [0, 1), got {alpha}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.alpha = alpha
        self.eps = eps

    def _delta(self, key, g):
        if key not in self.state:
            self.state[key] = np.zeros(g.shape)
        v = self.state[key]
        g_term, delta = self._scratch(key, g, g.dtype, np.float64)
        v *= self.alpha
        v += _squared((1 - self.alpha), g, g_term)
        np.sqrt(v, out=delta)
        delta += self.eps
        return np.divide(np.multiply(self.lr, g, out=g_term), delta, out=delta)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction, as in torch.optim.Adam.

    m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g^2; after n steps of this key,
    p -= lr (m / (1 - beta1^n)) / (sqrt(v / (1 - beta2^n)) + eps).
    """

    def __init__(self, lr, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(lr)
        for label, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0 <= beta < 1:
                raise ValueError(f"{label} must lie in [0, 1), got {beta}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps

    def _delta(self, key, g):
        if key not in self.state:
            self.state[key] = {"n": 0, "m": np.zeros(g.shape), "v": np.zeros(g.shape)}
        state = self.state[key]
        state["n"] += 1
        m, v, n = state["m"], state["v"], state["n"]
        g_term, m_hat, delta = self._scratch(key, g, g.dtype, np.float64, np.float64)
        m *= self.beta1
        m += np.multiply((1 - self.beta1), g, out=g_term)
        v *= self.beta2
        v += _squared((1 - self.beta2), g, g_term)
        # the moments start at 0, so early averages are shrunk by (1 - beta^n): undo it
        np.divide(m, 1 - self.beta1 ** n, out=m_hat)
        np.divide(v, 1 - self.beta2 ** n, out=delta)  # v_hat, then sqrt(v_hat) + eps, then the delta
        np.sqrt(delta, out=delta)
        delta += self.eps
        m_hat *= self.lr
        return np.divide(m_hat, delta, out=delta)


def _squared(scale, g, out):
    """(scale g) g in g's dtype, written to out."""
    np.multiply(scale, g, out=out)
    out *= g
    return out


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "rmsprop": RMSProp, "adam": Adam}


def make_optimizer(name, lr, **options):
    """The optimizer called `name` ('sgd', 'momentum', 'rmsprop', 'adam') with learning rate lr.

    options are the keyword arguments of its class, e.g. make_optimizer('momentum', 0.01, nesterov=True).
    """
    return registry.lookup("optimizer", OPTIMIZERS, name, options, "lr")(lr, **options)


def option_names(name) -> tuple[str, ...]:
    """The keyword options of the optimizer called `name` (e.g. ('beta1', 'beta2', 'eps') for adam)."""
    return registry.option_names(OPTIMIZERS[name], "lr")
