import numpy as np
import pytest

from rnngrad.losses import make_loss, mse, softmax_xent

T, B, O = 5, 4, 3


def numerical_gradient(f, x, h=1e-5):
    """Central differences of the scalar f() with respect to every entry of x (modified in place)."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        f_plus = f()
        x[i] = old - h
        f_minus = f()
        x[i] = old
        grad[i] = (f_plus - f_minus) / (2 * h)
    return grad


def rel_error(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(a) + np.abs(b))


def batch(loss, rng):
    """Random outputs, targets and a mask with some masked-out steps."""
    out = rng.normal(size=(T, B, O))
    y = rng.normal(size=(T, B, O)) if loss == "mse" else rng.integers(0, O, size=(T, B))
    mask = (rng.uniform(size=(T, B)) < 0.6).astype(float)
    mask[0, 0], mask[1, 1] = 1.0, 0.0
    return out, y, mask


@pytest.mark.parametrize("loss_fn", [mse, softmax_xent])
def test_dout_matches_finite_differences_and_is_zero_where_masked(loss_fn):
    out, y, mask = batch("mse" if loss_fn is mse else "xent", np.random.default_rng(0))
    _, dout = loss_fn(out, y, mask)
    dout_num = numerical_gradient(lambda: loss_fn(out, y, mask)[0], out)
    assert rel_error(dout, dout_num) < 1e-7
    assert np.all(dout[mask == 0] == 0.0)
    assert np.all(dout_num[mask == 0] == 0.0)
    assert np.any(dout[mask == 1] != 0.0)


def test_mse_is_the_mean_over_masked_elements():
    out = np.zeros((2, 1, 2))
    y = np.array([[[1.0, 3.0]], [[100.0, 100.0]]])
    mask = np.array([[1.0], [0.0]])
    loss, _ = mse(out, y, mask)
    assert loss == pytest.approx((1.0 + 9.0) / 2, rel=1e-15)


def test_softmax_xent_value_and_stability_for_huge_logits():
    out = np.zeros((1, 2, 4))
    y = np.array([[2, 0]])
    mask = np.ones((1, 2))
    loss, _ = softmax_xent(out, y, mask)
    assert loss == pytest.approx(np.log(4), rel=1e-15)

    out = np.array([[[1e4, 0.0, -1e4], [1e4, 1e4 - 2.0, 0.0]]])
    y = np.array([[1, 1]])
    loss, dout = softmax_xent(out, y, np.ones((1, 2)))
    # -log p = logsumexp - logit: row 0 gives 1e4 (e^-1e4 vanishes); row 1 gives 2 + log(1 + e^-2)
    expected = (1e4 + 2.0 + np.log1p(np.exp(-2.0))) / 2
    assert np.isfinite(loss) and np.all(np.isfinite(dout))
    assert loss == pytest.approx(expected, rel=1e-12)
    p1 = 1 / (1 + np.exp(2.0))
    np.testing.assert_allclose(dout, np.array([[[1.0, -1.0, 0.0], [1 - p1, p1 - 1, 0.0]]]) / 2,
                               rtol=1e-12, atol=1e-300)


def test_make_loss_and_bad_inputs():
    assert make_loss("mse") is mse and make_loss("xent") is softmax_xent
    with pytest.raises(ValueError, match="mse, xent"):
        make_loss("hinge")
    out, y, mask = batch("xent", np.random.default_rng(1))
    with pytest.raises(ValueError, match="no positive entry"):
        softmax_xent(out, y, np.zeros((T, B)))
    with pytest.raises(ValueError, match="mask"):
        softmax_xent(out, y, mask[:, :2])
    with pytest.raises(ValueError, match="integer"):
        softmax_xent(out, y.astype(float), mask)
    with pytest.raises(ValueError, match="class ids"):
        softmax_xent(out, np.full((T, B), O), mask)
    with pytest.raises(ValueError, match="shape of out"):
        mse(out, out[..., :1], mask)
    with pytest.raises(ValueError, match=r"\(T, B, O\)"):
        mse(out[0], out[0], mask)


def losses_over_every_step(out, y, mask):
    """The losses computed at every step, masked afterwards (ee16401): what restricting to the steps that
    carry loss must reproduce bit for bit."""
    scale = out.shape[2] * mask.sum()
    diff = (out - y[0]) * mask[..., None]
    mse_value = (np.sum(diff * (out - y[0])) / scale, 2.0 * diff / scale)
    shifted = out - out.max(axis=2, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=2, keepdims=True))
    count = mask.sum()
    dout = np.exp(log_probs)
    np.put_along_axis(dout, y[1][..., None], np.take_along_axis(dout, y[1][..., None], axis=2) - 1.0, axis=2)
    dout *= mask[..., None] / count
    xent_value = (-np.sum(mask * np.take_along_axis(log_probs, y[1][..., None], axis=2)[..., 0]) / count, dout)
    return {"mse": mse_value, "xent": xent_value}


@pytest.mark.parametrize("steps", ["last", "some", "all"])
@pytest.mark.parametrize("shape", [(40, 32, 4), (23, 20, 3), (7, 5, 1)])
def test_losses_at_the_loss_steps_only_are_bit_for_bit_the_full_ones(steps, shape):
    rng = np.random.default_rng(2)
    T, B, O = shape
    out = rng.normal(size=shape) * 3
    y = (rng.normal(size=shape), rng.integers(0, O, size=(T, B)))
    mask = {"last": np.eye(T)[-1][:, None] * np.ones(B), "some": (rng.uniform(size=(T, 1)) < 0.3) * np.ones(B),
            "all": np.ones((T, B))}[steps]
    mask[-1] = 1.0
    expected = losses_over_every_step(out, y, mask)
    for name, target in (("mse", y[0]), ("xent", y[1])):
        loss, dout = make_loss(name)(out, target, mask)
        assert loss == expected[name][0], name
        np.testing.assert_array_equal(dout, expected[name][1], err_msg=name)
