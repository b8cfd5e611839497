import numpy as np
import pytest
from reference import make_cell_model, rel_error

from rnngrad import core, diagnostics
from rnngrad.nn import cells

T, B, D, H, O = 6, 3, 3, 4, 2
# (cell, norm, activation)
CONFIGS = [
    ("lstm", "none", "tanh"),
    ("gru", "none", "tanh"),
    ("rnn", "layer", "tanh"),
    ("rnn", "layer", "relu"),
    ("rnn", "batch", "tanh"),
    ("rnn", "recurrent_batch", "tanh"),
]
IDS = ["-".join(cfg) for cfg in CONFIGS]


def make_model(cell, norm, seed=0, batch=B, dtype=np.float64):
    """Small parameters with nonzero biases, an input x (T, batch, D) and a random initial state."""
    params, x, h0 = make_cell_model(cell, norm, T, batch, D, H, O, seed)
    cast = {k: v.astype(dtype) for k, v in params.items()}
    return cast, x.astype(dtype), h0 if dtype == np.float64 else None


def run(params, x, cfg, h0=None):
    cell, norm, activation = cfg
    return cells.forward(params, x, cell=cell, norm=norm, activation=activation, h0=h0)


def make_dout(kind, rng, batch=B):
    dout = rng.normal(size=(T, batch, O))
    if kind == "many_to_one":
        dout[:-1] = 0.0
    return dout


def state_after(cache, t):
    """The full state after step t: h, and (h, c) for the lstm."""
    if cache.spec.cell == "lstm":
        return cache["s"][t].copy(), cache["c"][t].copy()
    return cache["s"][t].copy()


def truncated_objective(params, x, h0, cfg, dout, k, frozen):
    """sum_u <dout_u, o_u> where each o_u is recomputed from the state after step u-k, held fixed at its
    unperturbed value frozen[u-k]: its gradient is exactly the windowed truncated gradient."""
    if k is None:
        out, _ = run(params, x, cfg, h0)
        return np.sum(dout * out)
    total = 0.0
    for u in range(T):
        start = max(0, u - k + 1)
        out, _ = run(params, x[start : u + 1], cfg, h0 if start == 0 else frozen[start - 1])
        total += np.sum(dout[u] * out[-1])
    return total


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@pytest.mark.parametrize("truncation", [None, 1, 3])
@pytest.mark.parametrize("kind", ["many_to_one", "many_to_many"])
def test_gradients_match_central_differences(cfg, truncation, kind):
    params, x, h0 = make_model(*cfg[:2])
    dout = make_dout(kind, np.random.default_rng(1))
    _, cache = run(params, x, cfg, h0)
    grads, _ = cells.backward(params, cache, dout, truncation=truncation)
    assert grads.keys() == params.keys()
    frozen = [state_after(cache, t) for t in range(T)]
    eps = 1e-6
    for key, p in params.items():
        numeric = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            plus = truncated_objective(params, x, h0, cfg, dout, truncation, frozen)
            p[i] = old - eps
            minus = truncated_objective(params, x, h0, cfg, dout, truncation, frozen)
            p[i] = old
            numeric[i] = (plus - minus) / (2 * eps)
        assert grads[key].shape == p.shape
        assert rel_error(grads[key], numeric) < 1e-7, key
        assert np.linalg.norm(numeric) > 1e-3, f"{key}: the check must test a nonzero gradient"


def loss_after(params, x, cfg, dout, t, state):
    """The part of sum_u <dout_u, o_u> that depends on the state after step t, with that state replaced."""
    h = state[0] if cfg[0] == "lstm" else state
    total = np.sum(dout[t] * (h @ params["V"] + params["c"]))
    if t + 1 < T:
        out, _ = run(params, x[t + 1 :], cfg, state)
        total += np.sum(dout[t + 1 :] * out)
    return total


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_ds_is_the_total_derivative_of_the_state(cfg):
    params, x, h0 = make_model(*cfg[:2])
    dout = make_dout("many_to_many", np.random.default_rng(2))
    _, cache = run(params, x, cfg, h0)
    _, ds = cells.backward(params, cache, dout)
    eps = 1e-6
    numeric = np.zeros_like(ds)
    for t, b, j in np.ndindex(ds.shape):
        diffs = []
        for sign in (1, -1):
            state = state_after(cache, t)
            h = state[0] if cfg[0] == "lstm" else state
            h[b, j] += sign * eps
            diffs.append(loss_after(params, x, cfg, dout, t, state))
        numeric[t, b, j] = (diffs[0] - diffs[1]) / (2 * eps)
    assert rel_error(ds, numeric) < 1e-7


def test_lstm_dc_is_the_total_derivative_of_the_cell_state():
    cfg = CONFIGS[0]
    params, x, h0 = make_model("lstm", "none")
    dout = make_dout("many_to_many", np.random.default_rng(3))
    _, cache = run(params, x, cfg, h0)
    cells.backward(params, cache, dout)
    eps = 1e-6
    numeric = np.zeros_like(cache["dc"])
    for t, b, j in np.ndindex(numeric.shape):
        o = cache["gates"][t, :, 3 * H :]
        diffs = []
        for sign in (1, -1):
            c = cache["c"][t].copy()
            c[b, j] += sign * eps
            diffs.append(loss_after(params, x, cfg, dout, t, (o * np.tanh(c), c)))  # h_t = o tanh(c_t) moves too
        numeric[t, b, j] = (diffs[0] - diffs[1]) / (2 * eps)
    assert rel_error(cache["dc"], numeric) < 1e-7


# ---------------------------------------------------------------- PyTorch's equations


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def torch_lstm(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh):
    """nn.LSTM as PyTorch documents it: column vectors, gates i, f, g, o, one sample at a time."""
    n = weight_hh.shape[1]
    hs, cs = np.zeros((T, x.shape[1], n)), np.zeros((T, x.shape[1], n))
    for b in range(x.shape[1]):
        h, c = h0[b], c0[b]
        for t in range(T):
            gates = weight_ih @ x[t, b] + bias_ih + weight_hh @ h + bias_hh
            i, f, o = sigmoid(gates[:n]), sigmoid(gates[n : 2 * n]), sigmoid(gates[3 * n :])
            g = np.tanh(gates[2 * n : 3 * n])
            c = f * c + i * g
            h = o * np.tanh(c)
            hs[t, b], cs[t, b] = h, c
    return hs, cs


def torch_gru(x, h0, weight_ih, weight_hh, bias_ih, bias_hh):
    """nn.GRU as PyTorch documents it: column vectors, gates r, z, n, one sample at a time."""
    n = weight_hh.shape[1]
    hs = np.zeros((T, x.shape[1], n))
    for b in range(x.shape[1]):
        h = h0[b]
        for t in range(T):
            gi = weight_ih @ x[t, b] + bias_ih
            gh = weight_hh @ h + bias_hh
            r = sigmoid(gi[:n] + gh[:n])
            z = sigmoid(gi[n : 2 * n] + gh[n : 2 * n])
            cand = np.tanh(gi[2 * n :] + r * gh[2 * n :])
            h = (1 - z) * cand + z * h
            hs[t, b] = h
    return hs


def test_lstm_matches_pytorch_equations():
    params, x, (h0, c0) = make_model("lstm", "none")
    out, cache = run(params, x, CONFIGS[0], (h0, c0))
    bias_hh = np.random.default_rng(4).normal(size=4 * H)  # nn.LSTM has two biases; only their sum matters
    hs, cs = torch_lstm(x, h0, c0, params["U"].T, params["W"].T, params["b"] - bias_hh, bias_hh)
    np.testing.assert_allclose(cache["s"], hs, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(cache["c"], cs, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(out, hs @ params["V"] + params["c"], rtol=1e-12, atol=1e-13)


def test_gru_matches_pytorch_equations():
    params, x, h0 = make_model("gru", "none")
    _, cache = run(params, x, CONFIGS[1], h0)
    hs = torch_gru(x, h0, params["U"].T, params["W"].T, params["b"], params["bw"])
    np.testing.assert_allclose(cache["s"], hs, rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------- the remedies at work


def test_saturated_lstm_carries_dc_unchanged():
    """f = 1 and i = 0 (and o = 1): c_t = c_{t-1}, and dL/dc_T passes back through every step untouched."""
    params, x, _ = make_model("lstm", "none")
    params["b"][:H] = -50.0  # i -> 0
    params["b"][H : 2 * H] = 50.0  # f -> 1
    params["b"][3 * H :] = 50.0  # o -> 1: the loss at T reaches h_{T-1} only through the dead gates
    _, cache = run(params, x, CONFIGS[0])
    dout = make_dout("many_to_one", np.random.default_rng(5))
    _, ds = cells.backward(params, cache, dout)
    dc = cache["dc"]
    assert np.linalg.norm(dc[-1]) > 0.1
    np.testing.assert_allclose(dc, np.broadcast_to(dc[-1], dc.shape), rtol=1e-10, atol=0)
    assert np.all(np.abs(ds[:-1]) < 1e-15)  # meanwhile the h path carries nothing back
    np.testing.assert_array_equal(diagnostics.cell_state_jacobian_diag(cache, sample=1), np.ones((T, H)))


def test_gru_with_z_one_copies_the_state():
    params, x, h0 = make_model("gru", "none")
    params["b"][H : 2 * H] = 50.0  # z -> 1: h_t = h_{t-1}
    _, cache = run(params, x, CONFIGS[1], h0)
    np.testing.assert_allclose(cache["s"], np.broadcast_to(h0, (T, B, H)), rtol=0, atol=1e-12)


def test_layer_norm_normalizes_each_sample():
    params, x, h0 = make_model("rnn", "layer", batch=8)
    _, cache = run(params, 2 * x, ("rnn", "layer", "tanh"), h0)
    a_hat = cache["a_hat"]
    np.testing.assert_allclose(a_hat.mean(axis=2), 0.0, atol=1e-10)
    np.testing.assert_allclose(a_hat.var(axis=2), 1.0, atol=1e-4)
    y = np.arctanh(cache["s"])  # the gain and shift come after the normalization
    np.testing.assert_allclose(y, params["g"] * a_hat + params["b"], rtol=1e-9, atol=1e-9)


def test_batch_norm_normalizes_each_unit_over_the_batch():
    params, x, h0 = make_model("rnn", "batch", batch=32)
    _, cache = run(params, 2 * x, ("rnn", "batch", "relu"), h0)
    a_hat = cache["a_hat"]
    np.testing.assert_allclose(a_hat.mean(axis=1), 0.0, atol=1e-10)
    np.testing.assert_allclose(a_hat.var(axis=1), 1.0, atol=1e-4)


def test_batch_norm_needs_two_samples():
    params, x, _ = make_model("rnn", "batch")
    with pytest.raises(ValueError, match="at least 2"):
        run(params, x[:, :1], ("rnn", "batch", "tanh"))


def test_float32_parameters_stay_float32():
    for cfg in CONFIGS:
        params, x, _ = make_model(*cfg[:2])
        params32, x32, _ = make_model(*cfg[:2], dtype=np.float32)
        dout = make_dout("many_to_many", np.random.default_rng(6))
        out, cache = run(params, x, cfg)
        out32, cache32 = run(params32, x32, cfg)
        grads, ds = cells.backward(params, cache, dout, truncation=2)
        grads32, ds32 = cells.backward(params32, cache32, dout.astype(np.float32), truncation=2)
        assert out32.dtype == ds32.dtype == np.float32
        assert all(g.dtype == np.float32 for g in grads32.values())
        assert cells.step_jacobians(params32, cache32).dtype == np.float32
        assert rel_error(out32, out) < 1e-5
        for key in grads:
            assert rel_error(grads32[key], grads[key]) < 1e-4, (cfg, key)


# ---------------------------------------------------------------- truncation


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_truncation_at_least_T_is_full_bptt(cfg):
    params, x, h0 = make_model(*cfg[:2])
    dout = make_dout("many_to_many", np.random.default_rng(7))
    _, cache = run(params, x, cfg, h0)
    full, ds_full = cells.backward(params, cache, dout)
    dc_full = cache.get("dc")
    for k in (T, T + 1, 100):
        grads, ds = cells.backward(params, cache, dout, truncation=k)
        np.testing.assert_array_equal(ds, ds_full)
        for key in full:
            np.testing.assert_array_equal(grads[key], full[key])
        if dc_full is not None:
            np.testing.assert_array_equal(cache["dc"], dc_full)
    grads, _ = cells.backward(params, cache, dout, truncation=T - 1)
    assert rel_error(grads["U"], full["U"]) > 1e-6  # the oldest path is cut


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_truncation_stops_outside_the_window(cfg):
    params, x, h0 = make_model(*cfg[:2])
    dout = make_dout("many_to_one", np.random.default_rng(8))
    _, cache = run(params, x, cfg, h0)
    _, ds = cells.backward(params, cache, dout, truncation=1)
    assert np.all(ds[:-1] == 0.0)
    np.testing.assert_allclose(ds[-1], dout[-1] @ params["V"].T, rtol=1e-15)
    _, ds = cells.backward(params, cache, dout, truncation=3)
    assert np.all(ds[: T - 3] == 0.0)
    assert np.all(np.linalg.norm(ds[T - 3 :].reshape(3, -1), axis=1) > 0)
    if cfg[0] == "lstm":  # the cut applies to the cell state too
        assert np.all(cache["dc"][: T - 3] == 0.0)
        assert np.all(np.linalg.norm(cache["dc"][T - 3 :].reshape(3, -1), axis=1) > 0)


# ---------------------------------------------------------------- Jacobians and saturation


def one_step(params, cache, cfg, t, sample):
    """The map h_{t-1} -> h_t for one sample (lstm: c_{t-1} fixed; batch norm: statistics fixed)."""
    cell, norm, activation = cfg
    x_t = cache["x"][t, sample : sample + 1]
    before = cache["h0"] if t == 0 else cache["s"][t - 1]
    if cell == "lstm":
        c_prev = (cache["c0"] if t == 0 else cache["c"][t - 1])[sample : sample + 1]
        return lambda h: cells.lstm_step_forward(x_t @ params["U"] + params["b"], h, c_prev, params)[0]
    if cell == "gru":
        return lambda h: cells.gru_step_forward(x_t @ params["U"] + params["b"], h, params)[0]
    if norm == "layer":
        return lambda h: cells.norm_step_forward(x_t @ params["U"], h, params, norm="layer", activation=activation)[0]
    if norm == "recurrent_batch":
        hw = before @ params["W"]
        mean, std = hw.mean(axis=0), np.sqrt(hw.var(axis=0) + cells.NORM_EPS)
        x_term = params["gx"] * cache["x_hat"][t, sample : sample + 1] + params["b"]
        return lambda h: np.tanh(x_term + params["gh"] * (h @ params["W"] - mean) / std)
    a = cache["x"][t] @ params["U"] + before @ params["W"]
    mean, std = a.mean(axis=0), np.sqrt(a.var(axis=0) + cells.NORM_EPS)
    return lambda h: np.tanh(params["g"] * (x_t @ params["U"] + h @ params["W"] - mean) / std + params["b"])


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_step_jacobians_match_central_differences(cfg):
    params, x, h0 = make_model(*cfg[:2])
    _, cache = run(params, x, cfg, h0)
    sample, eps = 2, 1e-6
    J = cells.step_jacobians(params, cache, sample=sample)
    assert J.shape == (T, H, H)
    numeric = np.zeros_like(J)
    for t in range(T):
        step = one_step(params, cache, cfg, t, sample)
        h_prev = (cache["h0"] if t == 0 else cache["s"][t - 1])[sample : sample + 1]
        for i in range(H):
            e = np.zeros((1, H))
            e[0, i] = eps
            numeric[t, i] = ((step(h_prev + e) - step(h_prev - e)) / (2 * eps))[0]
    assert rel_error(J, numeric) < 1e-7


def test_cell_state_jacobian_is_the_forget_gate():
    params, x, h0 = make_model("lstm", "none")
    _, cache = run(params, x, CONFIGS[0], h0)
    f = diagnostics.cell_state_jacobian_diag(cache, sample=1)
    t, eps = 3, 1e-6
    xu = x[t, 1:2] @ params["U"] + params["b"]
    h_prev, c_prev = cache["s"][t - 1, 1:2], cache["c"][t - 1, 1:2]
    numeric = np.zeros((H, H))
    for i in range(H):
        e = np.zeros((1, H))
        e[0, i] = eps
        plus = cells.lstm_step_forward(xu, h_prev, c_prev + e, params)[1]
        minus = cells.lstm_step_forward(xu, h_prev, c_prev - e, params)[1]
        numeric[i] = ((plus - minus) / (2 * eps))[0]
    assert rel_error(np.diag(f[t]), numeric) < 1e-8
    with pytest.raises(ValueError, match="lstm"):
        diagnostics.cell_state_jacobian_diag(run(*make_model("gru", "none")[:2], CONFIGS[1])[1])


def test_saturation_fraction_of_gates():
    params, x, _ = make_model("lstm", "none")
    params["U"][:], params["W"][:] = 0.0, 0.0
    params["b"] = np.repeat([-50.0, 50.0, 0.0, 50.0], H)  # i, f, o saturated; g = tanh(0) is not
    assert diagnostics.saturation(run(params, x, CONFIGS[0])[1], "tanh") == 0.75
    params, x, _ = make_model("gru", "none")
    params["U"][:], params["W"][:], params["bw"][:] = 0.0, 0.0, 0.0
    params["b"] = np.repeat([50.0, -50.0, 0.0], H)  # r, z saturated; n = tanh(0) is not
    assert diagnostics.saturation(run(params, x, CONFIGS[1])[1], "tanh") == pytest.approx(2 / 3)
    params["b"][2 * H :] = 20.0
    assert diagnostics.saturation(run(params, x, CONFIGS[1])[1], "tanh") == 1.0


@pytest.mark.parametrize("cfg", CONFIGS[2:], ids=IDS[2:])
def test_saturation_fraction_of_normalized_rnn_is_the_core_definition(cfg):
    params, x, _ = make_model(*cfg[:2], batch=16)
    for key in ("g", "gx", "gh"):  # the normalized pre-activation is O(1): a larger gain lets some units saturate
        if key in params:
            params[key] *= 3.0
    _, cache = run(params, x, cfg)
    expected = diagnostics.saturated_fraction(cache["s"], cfg[2])
    assert diagnostics.saturation(cache, cfg[2]) == expected
    assert 0 < expected < 1


# ---------------------------------------------------------------- initialization and bad input


def test_init_shapes_and_biases():
    p = core.init_params(D, H, O, cell="lstm", init="xavier", rng=0)
    assert {k: v.shape for k, v in p.items()} == {
        "U": (D, 4 * H), "W": (H, 4 * H), "b": (4 * H,), "V": (H, O), "c": (O,)
    }
    np.testing.assert_array_equal(p["b"], np.repeat([0.0, 1.0, 0.0, 0.0], H))
    p = core.init_params(D, H, O, cell="lstm", init="xavier", rng=0, forget_bias=2.5)
    np.testing.assert_array_equal(p["b"][H : 2 * H], 2.5)
    p = core.init_params(D, H, O, cell="gru", init="xavier", rng=0)
    assert {k: v.shape for k, v in p.items()} == {
        "U": (D, 3 * H), "W": (H, 3 * H), "b": (3 * H,), "bw": (3 * H,), "V": (H, O), "c": (O,)
    }
    assert not p["b"].any() and not p["bw"].any()
    for norm, gains in (("layer", {"g": 1.0}), ("batch", {"g": 0.1}), ("recurrent_batch", {"gx": 0.1, "gh": 0.1})):
        p = core.init_params(D, H, O, norm=norm, init="orthogonal", rng=1)
        ref = core.init_params(D, H, O, init="orthogonal", rng=1)
        assert set(p) == set(ref) | set(gains)
        for key in ref:
            np.testing.assert_array_equal(p[key], ref[key])
        for key, gain in gains.items():  # layer norm's starts at 1 (Ba et al.), batch norm's at 0.1 (Cooijmans et al.)
            np.testing.assert_array_equal(p[key], np.full(H, gain))
    p = core.init_params(D, H, O, norm="recurrent_batch", init="orthogonal", rng=1, bn_gain=0.5)
    np.testing.assert_array_equal(p["gh"], np.full(H, 0.5))
    p = core.init_params(D, H, O, cell="gru", init="xavier", rng=0, dtype=np.float32)
    assert all(v.dtype == np.float32 for v in p.values())


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_init_applies_the_recurrent_init_to_each_gate_block(cell):
    n = cells.N_GATES[cell]
    W = core.init_params(D, 16, O, cell=cell, init="orthogonal", scale=2.0, rng=3)["W"]
    for block in np.split(W, n, axis=1):
        np.testing.assert_allclose(block.T @ block, 4 * np.eye(16), atol=1e-12)
    W = core.init_params(D, 16, O, cell=cell, init="gaussian", spectral_radius=0.9, rng=3)["W"]
    for block in np.split(W, n, axis=1):
        assert abs(np.max(np.abs(np.linalg.eigvals(block))) - 0.9) < 1e-12
    blocks = np.split(W, n, axis=1)
    assert not np.allclose(blocks[0], blocks[1])  # independent draws


@pytest.mark.parametrize(
    "cell, norm, match",
    [
        ("lstm", "layer", "valid cell/norm: rnn/none, lstm/none, gru/none, rnn/layer, rnn/batch"),
        ("gru", "batch", "valid cell/norm"),
        ("transformer", "none", "valid choices: rnn, lstm, gru"),
        ("lstm", "weight", "valid choices: none, layer, batch"),
    ],
)
def test_invalid_cell_and_norm(cell, norm, match):
    with pytest.raises(ValueError, match=match):
        core.init_params(D, H, O, cell=cell, norm=norm, init="xavier", rng=0)
    params, x, _ = make_model("gru", "none")
    with pytest.raises(ValueError, match=match):
        core.forward(params, x, cell=cell, norm=norm, activation="tanh")


def test_the_cells_leave_the_vanilla_rnn_to_its_own_module():
    params, x, _ = make_model("rnn", "layer")
    with pytest.raises(ValueError, match="vanilla RNN"):
        cells.forward(params, x, cell="rnn", norm="none", activation="tanh")


def test_forward_and_backward_reject_bad_input():
    params, x, (h0, c0) = make_model("lstm", "none")
    cfg = CONFIGS[0]
    with pytest.raises(ValueError, match="tuple"):
        run(params, x, cfg, h0)
    with pytest.raises(ValueError, match="c0"):
        run(params, x, cfg, (h0, c0[:2]))
    with pytest.raises(ValueError, match="dtype"):
        run(params, x.astype(np.float32), cfg)
    with pytest.raises(ValueError, match=r"shape \(T, B, D\)"):
        run(params, x[0], cfg)
    with pytest.raises(ValueError, match="needs"):
        run(params, x, ("gru", "none", "tanh"))  # lstm parameters for a gru
    with pytest.raises(ValueError, match="inconsistent parameter shapes"):
        run(dict(params, b=params["b"][:H]), x, cfg)
    with pytest.raises(ValueError, match="valid choices: sigmoid"):
        run(*make_model("rnn", "layer")[:2], ("rnn", "layer", "softplus"))
    _, cache = run(params, x, cfg)
    with pytest.raises(ValueError, match="dout must have shape"):
        cells.backward(params, cache, np.zeros((T, 1, O)))
    for k in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="truncation"):
            cells.backward(params, cache, np.zeros((T, B, O)), truncation=k)
    with pytest.raises(ValueError, match="sample"):
        cells.step_jacobians(params, cache, sample=B)
