import numpy as np
import pytest

from rnngrad.clip import clip_grads, global_norm


def grads():
    rng = np.random.default_rng(0)
    return {"W": rng.normal(size=(4, 4)) * 3, "b": rng.normal(size=4), "V": rng.normal(size=(4, 2))}


@pytest.mark.parametrize("threshold", [0.5, 2.0, 1e3])
def test_norm_clipping_caps_norm_and_keeps_direction(threshold):
    g = grads()
    before = {k: v.copy() for k, v in g.items()}
    norm = global_norm(g)
    clipped, info = clip_grads(g, "norm", threshold)
    assert info["norm"] == pytest.approx(norm, rel=1e-15)
    assert info["clipped"] == (norm > threshold)
    assert global_norm(clipped) == pytest.approx(min(norm, threshold), rel=1e-13)
    flat = np.concatenate([v.ravel() for v in g.values()])
    flat_c = np.concatenate([v.ravel() for v in clipped.values()])
    cos = flat @ flat_c / (np.linalg.norm(flat) * np.linalg.norm(flat_c))
    assert cos == pytest.approx(1.0, abs=1e-14)
    for k in g:  # the input is untouched
        np.testing.assert_array_equal(g[k], before[k])


def test_value_clipping_bounds_every_element():
    g = grads()
    before = {k: v.copy() for k, v in g.items()}
    clipped, info = clip_grads(g, "value", 0.5)
    assert info["clipped"]
    for k in g:
        assert np.all(np.abs(clipped[k]) <= 0.5)
        inside = np.abs(g[k]) <= 0.5
        np.testing.assert_array_equal(clipped[k][inside], g[k][inside])
        np.testing.assert_array_equal(clipped[k][~inside], 0.5 * np.sign(g[k][~inside]))
        np.testing.assert_array_equal(g[k], before[k])


def test_none_reports_norm_without_change():
    g = grads()
    clipped, info = clip_grads(g, "none", None)
    assert info == {"norm": pytest.approx(global_norm(g)), "clipped": False}
    for k in g:
        np.testing.assert_array_equal(clipped[k], g[k])


def test_bad_mode_and_threshold():
    with pytest.raises(ValueError, match="valid choices: none, norm, value"):
        clip_grads(grads(), "global", 1.0)
    for bad in (0.0, -1.0, None, float("nan")):
        with pytest.raises(ValueError, match="threshold"):
            clip_grads(grads(), "norm", bad)
