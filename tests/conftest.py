import numpy as np
import pytest

from rnngrad import core


def rel_error(a, b) -> float:
    """||a - b|| / max(||a||, ||b||): the size of the disagreement relative to the gradient."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return 0.0 if scale == 0 else float(np.linalg.norm(a - b) / scale)


@pytest.fixture
def small_rnn():
    """A small float64 RNN and input: T=7, B=3, D=3, H=5, O=2."""
    rng = np.random.default_rng(0)
    params = core.init_params(3, 5, 2, init="gaussian", scale=1.2, rng=rng)
    params["b"] = rng.normal(0, 0.3, 5)
    params["c"] = rng.normal(0, 0.3, 2)
    x = rng.normal(size=(7, 3, 3))
    return params, x
