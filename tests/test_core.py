import numpy as np
import pytest
from reference import backward_steps, forward_steps, rel_error

from rnngrad import core

ACTS = core.ACTIVATIONS


def make_dout(T, B, O, kind, rng):
    dout = rng.normal(size=(T, B, O))
    if kind == "many_to_one":
        dout[:-1] = 0.0
    return dout


def truncated_objective(params, x, activation, dout, k, s_frozen):
    """sum_u <dout_u, o_u> where each o_u is recomputed from the state s_{u-k}, held fixed at
    its unperturbed value: its gradient is exactly the windowed truncated gradient."""
    T, B, _ = x.shape
    H = params["W"].shape[0]
    total = 0.0
    for u in range(T):
        start = 0 if k is None else u - k + 1
        if start <= 0:
            start, s_prev = 0, np.zeros((B, H))
        else:
            s_prev = s_frozen[start - 1]
        for t in range(start, u + 1):
            s_prev, _ = core.step_forward(x[t], s_prev, params, activation)
        total += np.sum(dout[u] * (s_prev @ params["V"] + params["c"]))
    return total


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("truncation", [None, 1, 2, 4])
@pytest.mark.parametrize("kind", ["many_to_one", "many_to_many"])
def test_gradients_match_central_differences(small_rnn, activation, truncation, kind):
    params, x = small_rnn
    rng = np.random.default_rng(1)
    T, B, _ = x.shape
    dout = make_dout(T, B, 2, kind, rng)
    out, cache = core.forward(params, x, activation=activation)
    grads, _ = core.backward(params, cache, dout, truncation=truncation)
    s_frozen = cache["s"].copy()
    eps = 1e-6
    for key, p in params.items():
        numeric = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            plus = truncated_objective(params, x, activation, dout, truncation, s_frozen)
            p[i] = old - eps
            minus = truncated_objective(params, x, activation, dout, truncation, s_frozen)
            p[i] = old
            numeric[i] = (plus - minus) / (2 * eps)
        assert rel_error(grads[key], numeric) < 1e-7, key
        assert np.linalg.norm(numeric) > 1e-3, f"{key}: the check must test a nonzero gradient"


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("truncation", [None, 1, 3, 6, 7, 50])
def test_batched_core_equals_per_step_reference(small_rnn, activation, truncation):
    params, x = small_rnn
    dout = np.random.default_rng(2).normal(size=(7, 3, 2))
    out, cache = core.forward(params, x, activation=activation)
    s_ref, out_ref, _ = forward_steps(params, x, activation)
    np.testing.assert_allclose(cache["s"], s_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out, out_ref, rtol=1e-12, atol=1e-14)
    grads, ds = core.backward(params, cache, dout, truncation=truncation)
    grads_ref, ds_ref = backward_steps(params, x, activation, dout, truncation)
    np.testing.assert_allclose(ds, ds_ref, rtol=1e-12, atol=1e-14)
    for key in params:
        np.testing.assert_allclose(grads[key], grads_ref[key], rtol=1e-12, atol=1e-13, err_msg=key)


def test_h0_is_the_initial_state(small_rnn):
    params, x = small_rnn
    h0 = np.random.default_rng(3).normal(size=(3, 5))
    _, cache = core.forward(params, x, activation="tanh", h0=h0)
    s_ref, _, _ = forward_steps(params, x, "tanh", h0=h0)
    np.testing.assert_allclose(cache["s"], s_ref, rtol=1e-12)
    np.testing.assert_allclose(cache["s"][0], np.tanh(x[0] @ params["U"] + h0 @ params["W"] + params["b"]), rtol=1e-12)


@pytest.mark.parametrize("r", [0.7, 1.0, 1.3])
def test_linear_orthogonal_closed_form(r):
    """s_t = s_{t-1} W with W = r Q: ds_t = ds_T (W^T)^(T-t), so ||ds_t|| = r^(T-t) ||ds_T||."""
    T, B, H = 40, 4, 16
    rng = np.random.default_rng(4)
    params = core.init_params(3, H, 2, init="orthogonal", scale=r, rng=rng)
    x = rng.normal(size=(T, B, 3))
    _, cache = core.forward(params, x, activation="linear")
    dout = make_dout(T, B, 2, "many_to_one", rng)
    _, ds = core.backward(params, cache, dout)
    norms = np.linalg.norm(ds.reshape(T, -1), axis=1)
    expected = r ** np.arange(T - 1, -1, -1) * norms[-1]
    np.testing.assert_allclose(norms, expected, rtol=1e-10)


def test_truncation_at_least_T_is_full_bptt(small_rnn):
    params, x = small_rnn
    dout = np.random.default_rng(5).normal(size=(7, 3, 2))
    _, cache = core.forward(params, x, activation="tanh")
    full, ds_full = core.backward(params, cache, dout)
    for k in (7, 8, 100):
        grads, ds = core.backward(params, cache, dout, truncation=k)
        np.testing.assert_array_equal(ds, ds_full)
        for key in full:
            np.testing.assert_array_equal(grads[key], full[key])
    # with k = T - 1 only the oldest path is cut: it reaches U (through x_1) but not W (h0 = 0)
    grads, _ = core.backward(params, cache, dout, truncation=6)
    assert rel_error(grads["U"], full["U"]) > 1e-6
    np.testing.assert_allclose(grads["W"], full["W"], rtol=1e-13)


def test_truncation_one_stops_after_one_step(small_rnn):
    params, x = small_rnn
    rng = np.random.default_rng(6)
    _, cache = core.forward(params, x, activation="tanh")
    # many-to-one: only s_T receives gradient
    dout = make_dout(7, 3, 2, "many_to_one", rng)
    _, ds = core.backward(params, cache, dout, truncation=1)
    assert np.all(ds[:-1] == 0.0)
    np.testing.assert_allclose(ds[-1], dout[-1] @ params["V"].T, rtol=1e-15)
    # many-to-many: each s_t receives only its own loss term's direct gradient
    dout = make_dout(7, 3, 2, "many_to_many", rng)
    _, ds = core.backward(params, cache, dout, truncation=1)
    np.testing.assert_allclose(ds, dout @ params["V"].T, rtol=1e-14)


def test_truncation_k_zero_outside_window(small_rnn):
    params, x = small_rnn
    dout = make_dout(7, 3, 2, "many_to_one", np.random.default_rng(7))
    _, cache = core.forward(params, x, activation="tanh")
    _, ds = core.backward(params, cache, dout, truncation=3)
    assert np.all(ds[:4] == 0.0)
    assert np.all(np.linalg.norm(ds[4:].reshape(3, -1), axis=1) > 0)


# ---------------------------------------------------------------- initializations


def test_orthogonal_init_is_orthogonal():
    W = core.init_params(2, 32, 1, init="orthogonal", rng=0)["W"]
    np.testing.assert_allclose(W.T @ W, np.eye(32), atol=1e-13)
    W3 = core.init_params(2, 32, 1, init="orthogonal", scale=3.0, rng=0)["W"]
    np.testing.assert_allclose(W3.T @ W3, 9 * np.eye(32), atol=1e-12)


def test_identity_init_is_irnn():
    p = core.init_params(2, 8, 1, init="identity", rng=0)
    np.testing.assert_array_equal(p["W"], np.eye(8))
    np.testing.assert_array_equal(p["b"], np.zeros(8))
    assert np.std(p["U"]) < 3e-3  # Le et al.: small Gaussian, std 0.001


@pytest.mark.parametrize("init", core.INITS)
@pytest.mark.parametrize("r", [0.5, 0.95, 1.5])
def test_spectral_radius_rescaling_is_exact(init, r):
    W = core.init_params(2, 40, 1, init=init, spectral_radius=r, rng=1)["W"]
    assert abs(np.max(np.abs(np.linalg.eigvals(W))) - r) < 1e-12


def test_sparse_init_has_15_nonzeros_per_row():
    W = core.init_params(2, 50, 1, init="sparse", rng=2)["W"]
    np.testing.assert_array_equal((W != 0).sum(axis=1), np.full(50, 15))


def test_gaussian_and_he_variance():
    H = 400
    W = core.init_params(2, H, 1, init="gaussian", scale=2.0, rng=3)["W"]
    assert abs(W.var() * H / 4.0 - 1) < 0.02
    W = core.init_params(2, H, 1, init="he", rng=3)["W"]
    assert abs(W.var() * H / 2.0 - 1) < 0.02


def test_init_is_reproducible_and_float32_available():
    a = core.init_params(3, 6, 2, init="xavier", rng=9)
    b = core.init_params(3, 6, 2, init="xavier", rng=np.random.default_rng(9))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    p32 = core.init_params(3, 6, 2, init="xavier", rng=9, dtype=np.float32)
    assert all(v.dtype == np.float32 for v in p32.values())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(init="kaiming"), "valid choices: gaussian, xavier, he, orthogonal, identity, sparse"),
        (dict(spectral_radius=-1.0), "spectral_radius"),
        (dict(scale=0.0), "scale"),
    ],
)
def test_init_rejects_bad_choices(kwargs, match):
    with pytest.raises(ValueError, match=match):
        core.init_params(2, 4, 1, **{"init": "xavier", "rng": 0, **kwargs})


@pytest.mark.parametrize("sizes", [(0, 4, 1), (2, -1, 1), (2, 4, 0), (2, 4.5, 1)])
def test_init_rejects_non_positive_sizes(sizes):
    with pytest.raises(ValueError, match="positive integer"):
        core.init_params(*sizes, init="xavier", rng=0)


# ---------------------------------------------------------------- bad input


def test_forward_rejects_bad_input(small_rnn):
    params, x = small_rnn
    with pytest.raises(ValueError, match="valid choices: sigmoid, tanh, relu, linear"):
        core.forward(params, x, activation="softplus")
    with pytest.raises(ValueError, match=r"shape \(T, B, D\)"):
        core.forward(params, x[0], activation="tanh")
    with pytest.raises(ValueError, match="input features"):
        core.forward(params, x[:, :, :2], activation="tanh")
    with pytest.raises(ValueError, match="dtype"):
        core.forward(params, x.astype(np.float32), activation="tanh")
    with pytest.raises(ValueError, match="dtype"):
        core.forward(params, x.astype(np.int64), activation="tanh")
    bad = x.copy()
    bad[2, 1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        core.forward(params, bad, activation="tanh")
    with pytest.raises(ValueError, match="h0"):
        core.forward(params, x, activation="tanh", h0=np.zeros((3, 4)))
    broken = dict(params, W=params["W"][:4])
    with pytest.raises(ValueError, match="inconsistent parameter shapes"):
        core.forward(broken, x, activation="tanh")


def test_backward_rejects_bad_input(small_rnn):
    params, x = small_rnn
    _, cache = core.forward(params, x, activation="tanh")
    with pytest.raises(ValueError, match="dout must have shape"):
        core.backward(params, cache, np.zeros((7, 3, 3)))
    with pytest.raises(ValueError, match="dout must have shape"):
        core.backward(params, cache, np.zeros((7, 1, 2)))  # no silent broadcast over the batch
    for k in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="truncation"):
            core.backward(params, cache, np.zeros((7, 3, 2)), truncation=k)
