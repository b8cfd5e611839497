import numpy as np
import pytest
from reference import rel_error

from rnngrad import core, diagnostics
from rnngrad.nn import init as nn_init


def explicit_jacobian_products(params, s_sample, activation):
    """M[t] = ds_T/ds_t (row form) by multiplying the per-step Jacobians W diag(f'(a_u)) directly."""
    T, H = s_sample.shape
    W = params["W"]
    fprime = core.dactivation(s_sample, activation)
    out = []
    for t in range(T):
        M = np.eye(H)
        for u in range(t + 1, T):
            M = M @ (W @ np.diag(fprime[u]))
        out.append(M)
    return out


@pytest.mark.parametrize("activation", core.ACTIVATIONS)
def test_ds_equals_jacobian_products(activation):
    rng = np.random.default_rng(0)
    params = core.init_params(3, 6, 2, init="gaussian", scale=1.1, rng=rng)
    x = rng.normal(size=(9, 2, 3))
    dout = np.zeros((9, 2, 2))
    dout[-1] = rng.normal(size=(2, 2))
    _, cache = core.forward(params, x, activation=activation)
    _, ds = core.backward(params, cache, dout)
    for sample in range(2):
        g_T = dout[-1, sample] @ params["V"].T
        products = explicit_jacobian_products(params, cache["s"][:, sample], activation)
        for t in range(9):
            np.testing.assert_allclose(ds[t, sample], g_T @ products[t].T, rtol=1e-12, atol=1e-15)
        norms = diagnostics.jacobian_norms(params, cache, activation, sample=sample)
        expected = [np.linalg.norm(M, 2) for M in products]
        np.testing.assert_allclose(norms, expected, rtol=1e-12)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0, 8.0])
def test_jacobian_norms_never_exceed_pascanu_bound(activation, scale):
    rng = np.random.default_rng(1)
    params = core.init_params(3, 20, 2, init="gaussian", scale=scale, rng=rng)
    x = rng.normal(size=(30, 4, 3))
    _, cache = core.forward(params, x, activation=activation)
    bound = diagnostics.pascanu_bound(params, activation, 30)
    for sample in range(4):
        norms = diagnostics.jacobian_norms(params, cache, activation, sample=sample)
        assert np.all(norms <= bound * (1 + 1e-12))
    assert bound[-1] == 1.0
    eta = core.GAMMA[activation] * np.linalg.norm(params["W"], 2)
    np.testing.assert_allclose(bound[0], eta**29, rtol=1e-12)


def test_linear_jacobian_norms_are_powers_for_orthogonal_W():
    params = core.init_params(2, 10, 1, init="orthogonal", scale=0.9, rng=2)
    _, cache = core.forward(params, np.ones((12, 1, 2)), activation="linear")
    np.testing.assert_allclose(
        diagnostics.jacobian_norms(params, cache, "linear"), 0.9 ** np.arange(11, -1, -1), rtol=1e-12
    )


def test_grad_norms_and_decay_rate():
    ds = np.random.default_rng(3).normal(size=(15, 4, 6))
    norms = diagnostics.grad_norms_through_time(ds)
    np.testing.assert_allclose(norms, [np.linalg.norm(ds[t]) for t in range(15)], rtol=1e-14)
    geometric = 3.0 * 0.8 ** np.arange(14, -1, -1)  # ||ds_t|| = 3 * 0.8^(T-t)
    assert diagnostics.decay_rate(geometric) == pytest.approx(np.log(0.8), rel=1e-12)
    exploding = 1.5 ** np.arange(14, -1, -1)
    assert diagnostics.decay_rate(exploding) == pytest.approx(np.log(1.5), rel=1e-12)
    truncated = geometric.copy()
    truncated[:10] = 0.0  # outside a truncation window: left out, the rate is unchanged
    assert diagnostics.decay_rate(truncated) == pytest.approx(np.log(0.8), rel=1e-12)
    assert np.isnan(diagnostics.decay_rate(np.array([0.0, 0.0, 1.0])))


def test_spectral_radius_and_sigma_max():
    W = np.array([[0.0, 2.0], [0.5, 0.0]])  # eigenvalues +-1, singular values 2 and 0.5
    assert diagnostics.spectral_radius(W) == pytest.approx(1.0, rel=1e-14)
    assert diagnostics.sigma_max(W) == pytest.approx(2.0, rel=1e-14)


def test_saturation_counts_exactly():
    s = np.array([[[0.9999, 0.0, -0.99999, 0.5]]])  # tanh: 1 - s^2 < 0.01 for |s| > 0.99499
    assert diagnostics.saturated_fraction(s, "tanh") == pytest.approx(0.5)
    relu = np.array([[[0.0, 1.0, 0.0, 2.0, 0.0]]])
    assert diagnostics.saturated_fraction(relu, "relu") == pytest.approx(0.6)
    sig = np.array([[[0.999, 0.5, 0.001, 0.9]]])  # s(1-s) < 0.0025
    assert diagnostics.saturated_fraction(sig, "sigmoid") == pytest.approx(0.5)
    assert diagnostics.saturated_fraction(relu, "linear") == 0.0


def test_lyapunov_linear_symmetric_matches_log_eigenvalues():
    rng = np.random.default_rng(5)
    H = 8
    Q = nn_init.orthogonal(H, rng)
    eig = np.array([1.3, -1.1, 0.9, 0.7, -0.6, 0.5, 0.4, -0.3])
    params = core.init_params(2, H, 1, init="xavier", rng=rng)
    params["W"] = (Q * eig) @ Q.T  # symmetric
    x = rng.normal(size=(1000, 1, 2)) * 1e-3
    exps = diagnostics.lyapunov_exponents(params, x, "linear", 5)
    expected = np.sort(np.log(np.abs(eig)))[::-1][:5]
    np.testing.assert_allclose(exps, expected, atol=1e-2)
    assert np.all(np.diff(exps) <= 0)


def test_lyapunov_rejects_bad_k():
    params = core.init_params(2, 4, 1, init="xavier", rng=0)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 4\]"):
        diagnostics.lyapunov_exponents(params, np.zeros((5, 1, 2)), "tanh", 5)


def test_float32_norms_do_not_underflow_in_the_square():
    ds = np.full((3, 2, 4), 1e-30, dtype=np.float32)  # representable in float32; its square is not
    norms = diagnostics.grad_norms_through_time(ds)
    np.testing.assert_allclose(norms, np.sqrt(8) * np.float64(np.float32(1e-30)), rtol=1e-12)
