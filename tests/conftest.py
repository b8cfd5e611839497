import numpy as np
import pytest

from rnngrad import core


@pytest.fixture
def small_rnn():
    """A small float64 RNN and input: T=7, B=3, D=3, H=5, O=2."""
    rng = np.random.default_rng(0)
    params = core.init_params(3, 5, 2, init="gaussian", scale=1.2, rng=rng)
    params["b"] = rng.normal(0, 0.3, 5)
    params["c"] = rng.normal(0, 0.3, 2)
    x = rng.normal(size=(7, 3, 3))
    return params, x
