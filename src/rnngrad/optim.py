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

    All keys are updated at once, as one flat vector: the gradients are gathered into one array, the
    subclass computes the flat delta from flat state arrays (float64, zero at first: `STATE`), and each
    parameter takes its slice. A step thus costs a few whole-vector operations and allocates nothing,
    whatever the number of parameters. The expressions are those of each docstring, in their order and
    dtypes (a float32 gradient's own products stay float32), elementwise as per key: the same numbers.
    `state[key]` holds the key's views of the flat state (Adam's also its step count "n").
    """

    STATE: tuple[str, ...] = ()  # the names of the flat state arrays

    def __init__(self, lr):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.lr = lr
        self.state = {}
        self._layout = None  # ((key, shape), ...) of the parameters the flat arrays follow
        self._flat = {}  # name -> flat state array; also "g", scratch "a" (the gradient's dtype), "b", "c"

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
        for key, p in params.items():
            if grads[key].shape != p.shape:
                raise ValueError(f"grad {key!r} has shape {grads[key].shape}, parameter has {p.shape}")
        layout = tuple((key, p.shape) for key, p in params.items())
        if layout != self._layout or self._flat["g"].dtype != grads[layout[0][0]].dtype:
            self._relayout(layout, grads[layout[0][0]].dtype)
        g = self._flat["g"]
        for key, sl in self._slices.items():
            g[sl] = grads[key].reshape(-1)
        delta = self._delta(g)
        for key, sl in self._slices.items():
            params[key] -= delta[sl].reshape(params[key].shape)
        return float(np.sqrt(np.vdot(delta, delta)))

    def _relayout(self, layout, dtype):
        """Flat arrays for these parameters, carrying over the state of the keys seen before."""
        sizes = [int(np.prod(shape)) for _, shape in layout]
        offsets = np.cumsum([0] + sizes)
        self._slices = {key: slice(offsets[i], offsets[i + 1]) for i, (key, _) in enumerate(layout)}
        n = int(offsets[-1])
        flat = {name: np.zeros(n) for name in self.STATE}
        for key, sl in self._slices.items():
            for name in self.STATE:
                if key in self.state:
                    flat[name][sl] = self._state_view(key, name).reshape(-1)
        flat["g"], flat["a"] = np.empty(n, dtype=dtype), np.empty(n, dtype=dtype)
        flat["b"], flat["c"] = np.empty(n), np.empty(n)
        self._flat, self._layout = flat, layout
        for (key, shape), sl in zip(layout, self._slices.values()):
            self._set_state(key, {name: flat[name][sl].reshape(shape) for name in self.STATE})

    def _state_view(self, key, name):
        return self.state[key][name]

    def _set_state(self, key, views):
        self.state[key] = views

    @abc.abstractmethod
    def _delta(self, g):
        """The flat amount to subtract given the flat gradient g, lr included (in self._flat's buffers)."""


class SGD(Optimizer):
    """Plain gradient descent: p -= lr g."""

    def _delta(self, g):
        return np.multiply(self.lr, g, out=self._flat["a"])


class Momentum(Optimizer):
    """Heavy-ball momentum, or Nesterov's variant, as in torch.optim.SGD (dampening 0).

    buf = momentum buf + g; p -= lr (g + momentum buf) if nesterov else lr buf.
    """

    STATE = ("buf",)

    def __init__(self, lr, momentum=0.9, nesterov=False):
        super().__init__(lr)
        if not 0 < momentum < 1:
            raise ValueError(f"momentum must lie in (0, 1), got {momentum}")
        self.momentum = momentum
        self.nesterov = nesterov

    def _delta(self, g):
        buf, delta = self._flat["buf"], self._flat["b"]
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

    STATE = ("v",)

    def __init__(self, lr, alpha=0.99, eps=1e-8):
        super().__init__(lr)
        if not 0 <= alpha < 1:
            raise ValueError(f"alpha must lie in [0, 1), got {alpha}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.alpha = alpha
        self.eps = eps

    def _delta(self, g):
        v, g_term, delta = self._flat["v"], self._flat["a"], self._flat["b"]
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

    STATE = ("m", "v")

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

    def _set_state(self, key, views):
        self.state[key] = {"n": self.state.get(key, {}).get("n", 0), **views}

    def _delta(self, g):
        m, v, g_term, m_hat, v_hat = (self._flat[name] for name in ("m", "v", "a", "c", "b"))
        m *= self.beta1
        m += np.multiply((1 - self.beta1), g, out=g_term)
        v *= self.beta2
        v += _squared((1 - self.beta2), g, g_term)
        # the moments start at 0, so early averages are shrunk by (1 - beta^n): undo it, per key (keys
        # added later have taken fewer steps), in one go when all keys have taken as many
        for key in self._slices:
            self.state[key]["n"] += 1
        counts = {self.state[key]["n"] for key in self._slices}
        parts = ([(counts.pop(), slice(None))] if len(counts) == 1
                 else [(self.state[key]["n"], sl) for key, sl in self._slices.items()])
        for n, sl in parts:
            np.divide(m[sl], 1 - self.beta1 ** n, out=m_hat[sl])
            np.divide(v[sl], 1 - self.beta2 ** n, out=v_hat[sl])
        np.sqrt(v_hat, out=v_hat)
        v_hat += self.eps
        m_hat *= self.lr
        return np.divide(m_hat, v_hat, out=v_hat)  # the delta


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
