import numpy as np
import pytest

from rnngrad.optim import SGD, Adam, Momentum, RMSProp, make_optimizer

# Two parameters, two steps of gradients: g1 then g2.
G1 = {"w": np.array([1.0, -2.0]), "b": np.array([4.0])}
G2 = {"w": np.array([0.5, 0.5]), "b": np.array([-1.0])}


def params():
    return {"w": np.array([1.0, 1.0]), "b": np.array([0.0])}


def run(opt, steps):
    """Apply G1, G2, ... for `steps` steps; return the parameters after each and the returned norms."""
    p = params()
    w, b = p["w"], p["b"]
    history, norms = [], []
    for g in [G1, G2][:steps]:
        before = {k: v.copy() for k, v in p.items()}
        norms.append(opt.step(p, g))
        update = np.concatenate([before[k] - p[k] for k in p])
        assert norms[-1] == pytest.approx(np.linalg.norm(update), rel=1e-12)
        history.append({k: v.copy() for k, v in p.items()})
    assert p["w"] is w and p["b"] is b  # updated in place
    return history, norms


def assert_params(got, w, b):
    np.testing.assert_allclose(got["w"], w, rtol=1e-12)
    np.testing.assert_allclose(got["b"], b, rtol=1e-12)


def test_sgd():
    (p1, p2), (n1, n2) = run(SGD(lr=0.1), 2)
    assert_params(p1, [1 - 0.1, 1 + 0.2], [0 - 0.4])
    assert_params(p2, [0.9 - 0.05, 1.2 - 0.05], [-0.4 + 0.1])
    assert n1 == pytest.approx(0.1 * np.sqrt(1 + 4 + 16), rel=1e-12)
    assert n2 == pytest.approx(0.1 * np.sqrt(0.25 + 0.25 + 1), rel=1e-12)


def test_momentum():
    (p1, p2), (n1, n2) = run(Momentum(lr=0.1, momentum=0.9), 2)
    # step 1: buf = g1 = w [1, -2], b [4]
    assert_params(p1, [1 - 0.1, 1 + 0.2], [-0.4])
    # step 2: buf = 0.9 g1 + g2 = w [0.9 + 0.5, -1.8 + 0.5] = [1.4, -1.3], b [3.6 - 1] = [2.6]
    assert_params(p2, [0.9 - 0.14, 1.2 + 0.13], [-0.4 - 0.26])
    assert n2 == pytest.approx(0.1 * np.sqrt(1.4**2 + 1.3**2 + 2.6**2), rel=1e-12)


def test_nesterov():
    (p1, p2), _ = run(make_optimizer("momentum", 0.1, momentum=0.9, nesterov=True), 2)
    # step 1: buf = g1; update = g1 + 0.9 buf = 1.9 g1 = w [1.9, -3.8], b [7.6]
    assert_params(p1, [1 - 0.19, 1 + 0.38], [-0.76])
    # step 2: buf = [1.4, -1.3], [2.6]; update = g2 + 0.9 buf = w [0.5 + 1.26, 0.5 - 1.17], b [-1 + 2.34]
    assert_params(p2, [0.81 - 0.176, 1.38 + 0.067], [-0.76 - 0.134])


def test_rmsprop():
    (p1, p2), _ = run(RMSProp(lr=0.01, alpha=0.99, eps=1e-8), 2)
    # step 1: v = 0.01 g1^2 = w [0.01, 0.04], b [0.16]; sqrt(v) = [0.1, 0.2], [0.4]
    w1 = np.array([1 - 0.01 * 1 / (0.1 + 1e-8), 1 + 0.01 * 2 / (0.2 + 1e-8)])
    b1 = np.array([0 - 0.01 * 4 / (0.4 + 1e-8)])
    assert_params(p1, w1, b1)
    # step 2: v = 0.99 v + 0.01 g2^2 = w [0.0099 + 0.0025, 0.0396 + 0.0025], b [0.1584 + 0.01]
    w2 = w1 - 0.01 * 0.5 / (np.sqrt([0.0124, 0.0421]) + 1e-8)
    b2 = b1 - 0.01 * -1 / (np.sqrt([0.1684]) + 1e-8)
    assert_params(p2, w2, b2)


def test_adam():
    (p1, p2), (n1, _) = run(Adam(lr=0.1), 2)
    # step 1: m_hat = g1, v_hat = g1^2, so the step is lr g / (|g| + eps): about lr sign(g)
    w1 = np.array([1 - 0.1 * 1 / (1 + 1e-8), 1 + 0.1 * 2 / (2 + 1e-8)])
    b1 = np.array([0 - 0.1 * 4 / (4 + 1e-8)])
    assert_params(p1, w1, b1)
    assert n1 == pytest.approx(0.1 * np.sqrt(3), rel=1e-7)
    # step 2: m = 0.9 * 0.1 g1 + 0.1 g2; v = 0.999 * 0.001 g1^2 + 0.001 g2^2; bias 1 - 0.9^2, 1 - 0.999^2
    m_w = np.array([0.09 + 0.05, -0.18 + 0.05])
    v_w = np.array([0.000999 * 1 + 0.001 * 0.25, 0.000999 * 4 + 0.001 * 0.25])
    m_b = np.array([0.36 - 0.1])
    v_b = np.array([0.000999 * 16 + 0.001 * 1])
    bc1, bc2 = 1 - 0.81, 1 - 0.998001
    w2 = w1 - 0.1 * (m_w / bc1) / (np.sqrt(v_w / bc2) + 1e-8)
    b2 = b1 - 0.1 * (m_b / bc1) / (np.sqrt(v_b / bc2) + 1e-8)
    assert_params(p2, w2, b2)


def test_state_is_per_key_and_created_lazily():
    opt = Adam(lr=0.1)
    p = {"a": np.array([0.0])}
    opt.step(p, {"a": np.array([1.0])})
    p["c"] = np.array([0.0])
    opt.step(p, {"a": np.array([1.0]), "c": np.array([-3.0])})
    # "c" takes its own first bias-corrected step, lr sign(g); "a" is on its second
    assert p["c"][0] == pytest.approx(0.1, rel=1e-8)
    assert opt.state["c"]["n"] == 1 and opt.state["a"]["n"] == 2


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="sgd, momentum, rmsprop, adam"):
        make_optimizer("nesterov", 0.1)
    with pytest.raises(ValueError, match="momentum, nesterov"):
        make_optimizer("momentum", 0.1, beta1=0.9)
    with pytest.raises(ValueError, match="valid options: none"):
        make_optimizer("sgd", 0.1, momentum=0.9)
    for lr in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="lr"):
            make_optimizer("adam", lr)
    with pytest.raises(ValueError, match="momentum"):
        Momentum(0.1, momentum=1.0)
    with pytest.raises(ValueError, match="beta2"):
        Adam(0.1, beta2=1.0)
    with pytest.raises(ValueError, match="alpha"):
        RMSProp(0.1, alpha=-0.1)
    with pytest.raises(ValueError, match="exactly the keys"):
        SGD(0.1).step(params(), {"w": np.zeros(2)})
    with pytest.raises(ValueError, match="shape"):
        SGD(0.1).step(params(), {"w": np.zeros(3), "b": np.zeros(1)})


def reference_deltas(name, lr, state, key, g):
    """The docstrings' formulas, one key at a time and allocating (ee16401's optimizers)."""
    if name == "sgd":
        return lr * g
    if name in ("momentum", "nesterov"):
        buf = state.setdefault(key, np.zeros(g.shape))
        buf *= 0.9
        buf += g
        return lr * (g + 0.9 * buf if name == "nesterov" else buf)
    if name == "rmsprop":
        v = state.setdefault(key, np.zeros(g.shape))
        v *= 0.99
        v += (1 - 0.99) * g * g
        return lr * g / (np.sqrt(v) + 1e-8)
    s = state.setdefault(key, {"n": 0, "m": np.zeros(g.shape), "v": np.zeros(g.shape)})
    s["n"] += 1
    s["m"] *= 0.9
    s["m"] += (1 - 0.9) * g
    s["v"] *= 0.999
    s["v"] += (1 - 0.999) * g * g
    return lr * (s["m"] / (1 - 0.9 ** s["n"])) / (np.sqrt(s["v"] / (1 - 0.999 ** s["n"])) + 1e-8)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "rmsprop", "adam"])
def test_the_flat_in_place_update_is_the_per_key_formula_bit_for_bit(name, dtype):
    """A key that joins later takes its own steps (Adam's bias correction), the others keep their state."""
    rng = np.random.default_rng(3)
    opt = make_optimizer("momentum", 0.01, nesterov=True) if name == "nesterov" else make_optimizer(name, 0.01)
    p = {"W": rng.normal(size=(4, 6)).astype(dtype), "b": rng.normal(size=6).astype(dtype)}
    expected, state = {k: v.copy() for k, v in p.items()}, {}
    for step in range(25):
        if step == 10:
            p["c"] = rng.normal(size=3).astype(dtype)
            expected["c"] = p["c"].copy()
        g = {k: rng.normal(size=v.shape).astype(dtype) for k, v in p.items()}
        opt.step(p, g)
        for key in expected:
            expected[key] -= reference_deltas(name, 0.01, state, key, g[key])
    for key in p:
        assert p[key].dtype == dtype
        np.testing.assert_array_equal(p[key], expected[key], err_msg=key)
