"""Every fast path against the plain per-step reference (float64, to 1e-12), and float32 kept float32.

The fast paths: the core's batched forward and in-place BPTT (including the steps that carry no loss),
the cells' sequence loops writing each step in place with all local derivatives computed at once, and
the instruments' batched norms, Gram-matrix spectral norms and the direct k = 1 QR of the Lyapunov loop.
The references loop the public step functions one step and one loss term at a time. The sequence paths
run on every backend (`on_backend`: numpy, and numba's compiled kernels when numba is installed; without
it those cases are skipped, with the reason, and the numpy fallback is what runs).
"""

import subprocess
import sys

import numpy as np
import pytest
from reference import backward_steps, forward_steps, make_cell_model, rel_error
from runconfig import run_config

from rnngrad import core, diagnostics
from rnngrad.nn import backend, cells
from rnngrad.nn import model as nn
from rnngrad.training import train

NO_NUMBA = "numba is not installed: the compiled kernels are not tested here, the numpy fallback is"
BACKENDS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif("numba" not in backend.available(), reason=NO_NUMBA))]


@pytest.fixture(params=BACKENDS)
def on_backend(request):
    """Run the test on each backend in turn."""
    with backend.using(request.param) as name:
        yield name


T, B, D, H, O = 9, 3, 3, 5, 2
CELL_CONFIGS = [("lstm", "none", "tanh"), ("gru", "none", "tanh"), ("rnn", "layer", "tanh"), ("rnn", "batch", "relu")]
CELL_IDS = ["-".join(c) for c in CELL_CONFIGS]


def close(actual, expected, err_msg=""):
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-14, err_msg=err_msg)


def make_dout(kind, rng, T=T, B=B, O=O):
    """Loss at every step, at the last step only, or at a few steps (so that some steps carry none)."""
    dout = rng.normal(size=(T, B, O))
    if kind == "last":
        dout[:-1] = 0.0
    elif kind == "sparse":
        dout[[0, 1, 3, 4, 6, 8]] = 0.0
    return dout


# ---------------------------------------------------------------- the core


@pytest.mark.parametrize("activation", core.ACTIVATIONS)
@pytest.mark.parametrize("kind", ["all", "last", "sparse"])
@pytest.mark.parametrize("truncation", [None, 1, 3, T])
@pytest.mark.usefixtures("on_backend")
def test_core_equals_per_step_reference(activation, kind, truncation):
    rng = np.random.default_rng(0)
    params = core.init_params(D, H, O, init="gaussian", scale=1.1, rng=rng)
    params["b"] = rng.normal(0, 0.3, H)
    x = rng.normal(size=(T, B, D))
    dout = make_dout(kind, rng)
    out, cache = core.forward(params, x, activation=activation)
    s_ref, out_ref, _ = forward_steps(params, x, activation)
    close(cache["s"], s_ref)
    close(out, out_ref)
    grads, ds = core.backward(params, cache, dout, truncation=truncation)
    grads_ref, ds_ref = backward_steps(params, x, activation, dout, truncation)
    close(ds, ds_ref)
    for key in params:
        close(grads[key], grads_ref[key], key)


@pytest.mark.usefixtures("on_backend")
def test_core_with_a_reused_workspace_equals_the_reference():
    """Buffers poisoned with NaN between calls, shapes and loss patterns changing: nothing stale is read."""
    rng = np.random.default_rng(3)
    params = core.init_params(D, H, O, init="gaussian", scale=1.1, rng=rng)
    params["b"] = rng.normal(0, 0.3, H)
    workspace = core.Workspace()
    calls = [("all", None, T), ("last", None, T), ("sparse", 3, T), ("sparse", None, T), ("all", 2, T + 4), ("last", 1, T)]
    for kind, truncation, length in calls:
        for buf in workspace._buffers.values():
            buf.fill(np.nan)
        x = rng.normal(size=(length, B, D))
        dout = make_dout(kind, rng, T=length)
        if kind == "sparse":
            dout[-1] = 0.0  # the last step carries no loss: its ds must still be exactly the BPTT's
        out, cache = core.forward(params, x, activation="tanh", workspace=workspace)
        grads, ds = core.backward(params, cache, dout, truncation=truncation, workspace=workspace)
        s_ref, out_ref, _ = forward_steps(params, x, "tanh")
        grads_ref, ds_ref = backward_steps(params, x, "tanh", dout, truncation)
        close(out, out_ref, f"{kind} {truncation} {length}")
        close(ds, ds_ref, f"{kind} {truncation} {length}")
        for key in params:
            close(grads[key], grads_ref[key], f"{key}: {kind} {truncation} {length}")
    assert cache["s"].base is not None and np.shares_memory(cache["s"], workspace._buffers["states"])


def test_core_cache_holds_the_previous_states():
    rng = np.random.default_rng(1)
    params = core.init_params(D, H, O, init="xavier", rng=rng)
    h0 = rng.normal(size=(B, H))
    _, cache = core.forward(params, rng.normal(size=(T, B, D)), activation="tanh", h0=h0)
    np.testing.assert_array_equal(cache["s_prev"][0], h0)
    np.testing.assert_array_equal(cache["s_prev"][1:], cache["s"][:-1])
    assert cache["s"].flags.c_contiguous and cache["s_prev"].flags.c_contiguous


# ---------------------------------------------------------------- the cells


def cell_steps_forward(params, x, cfg, h0):
    """The states, outputs and step caches by looping the step functions (allocating, no `out`)."""
    cell, norm, activation = cfg
    h, c = h0 if cell == "lstm" else (h0, None)
    hs, cs, caches = [], [], []
    for t in range(T):
        xu_t = x[t] @ params["U"]
        if cell == "lstm":
            h, c, cache = cells.lstm_step_forward(xu_t + params["b"], h, c, params)
        elif cell == "gru":
            h, cache = cells.gru_step_forward(xu_t + params["b"], h, params)
        else:
            h, cache = cells.norm_step_forward(xu_t, h, params, norm=norm, activation=activation)
        hs.append(h)
        cs.append(c)
        caches.append(cache)
    s = np.stack(hs)
    return s, s @ params["V"] + params["c"], caches, (np.stack(cs) if cell == "lstm" else None)


def cell_steps_backward(params, x, cfg, h0, dout, truncation):
    """Gradients by looping the step backward separately for every loss term L_u, each travelling back at
    most `truncation` steps, the local derivatives of each step taken from that step's cache alone."""
    cell, norm, activation = cfg
    s, _, caches, _ = cell_steps_forward(params, x, cfg, h0)
    s_prev = np.concatenate([(h0[0] if cell == "lstm" else h0)[None], s[:-1]])
    k = T if truncation is None else min(truncation, T)
    grads = {key: np.zeros_like(p) for key, p in params.items()}
    grads["V"] = np.einsum("tbh,tbo->ho", s, dout)
    grads["c"] = dout.sum(axis=(0, 1))
    ds, dc = np.zeros_like(s), np.zeros_like(s)
    for u in range(T):
        g, g_c = dout[u] @ params["V"].T, np.zeros((B, H))
        for t in range(u, max(u - k, -1), -1):
            ds[t] += g
            if cell == "lstm":
                local = cells.lstm_local_derivatives(*caches[t])
                dxu, g, g_c, dc_total = cells.lstm_step_backward(g, g_c, local, params["W"])
                dc[t] += dc_total
                dhw = dxu
            elif cell == "gru":
                dpre, g = cells.gru_step_backward(g, cells.gru_local_derivatives(*caches[t]), params["W"])
                dhw = dpre[:, : 3 * H]
                dxu = np.concatenate([dpre[:, : 2 * H], dpre[:, 3 * H :]], axis=1)
                grads["bw"] += dhw.sum(axis=0)
            else:
                local = cells.norm_local_derivatives(*caches[t], activation)
                dxu, dy, g = cells.norm_step_backward(g, local, params, norm)
                dhw = dxu
                grads["g"] += (dy * caches[t][0]).sum(axis=0)
                grads["b"] += dy.sum(axis=0)
            grads["U"] += x[t].T @ dxu
            grads["W"] += s_prev[t].T @ dhw
            if cell != "rnn":
                grads["b"] += dxu.sum(axis=0)
    return grads, ds, dc


@pytest.mark.parametrize("cfg", CELL_CONFIGS, ids=CELL_IDS)
@pytest.mark.parametrize("kind", ["all", "last", "sparse"])
@pytest.mark.parametrize("truncation", [None, 1, 3])
@pytest.mark.usefixtures("on_backend")
def test_cells_equal_per_step_reference(cfg, kind, truncation):
    cell, norm, activation = cfg
    params, x, h0 = make_cell_model(cell, norm, T, B, D, H, O)
    dout = make_dout(kind, np.random.default_rng(1))
    out, cache = cells.forward(params, x, cell=cell, norm=norm, activation=activation, h0=h0)
    s_ref, out_ref, _, c_ref = cell_steps_forward(params, x, cfg, h0)
    close(cache["s"], s_ref)
    close(out, out_ref)
    if cell == "lstm":
        close(cache["c"], c_ref)
    grads, ds = cells.backward(params, cache, dout, truncation=truncation)
    grads_ref, ds_ref, dc_ref = cell_steps_backward(params, x, cfg, h0, dout, truncation)
    close(ds, ds_ref)
    if cell == "lstm":
        close(cache["dc"], dc_ref)
    for key in params:
        close(grads[key], grads_ref[key], key)


# ---------------------------------------------------------------- the instruments


def test_grad_norms_through_time_are_the_plain_norms():
    ds = np.random.default_rng(2).normal(size=(T, B, H))
    close(diagnostics.grad_norms_through_time(ds), [np.linalg.norm(d) for d in ds])


@pytest.mark.parametrize("scale", [1e-200, 1e-5, 1.0, 1e150])
def test_spectral_norms_are_the_largest_singular_values(scale):
    M = np.random.default_rng(3).normal(size=(70, 6, 6)) * scale  # more than one chunk of 64
    M[3] = 0.0
    M[4] = np.outer(np.arange(6.0), np.ones(6)) * scale  # rank one
    close(diagnostics.spectral_norms(M) / scale, np.linalg.svd(M / scale, compute_uv=False)[:, 0])


@pytest.mark.parametrize("cfg", [("rnn", "none", "tanh"), *CELL_CONFIGS], ids=["rnn", *CELL_IDS])
def test_lyapunov_fast_paths_equal_the_qr_method(cfg):
    cell, norm, activation = cfg
    params = core.init_params(D, H, O, init="gaussian", scale=1.3, rng=4, cell=cell, norm=norm)
    x = np.random.default_rng(5).normal(size=(T, 2, D))
    kwargs = dict(cell=cell, norm=norm, rng=0)
    top = diagnostics.lyapunov_exponents(params, x, activation, 1, **kwargs)
    _, cache = core.forward(params, x, activation=activation, cell=cell, norm=norm)
    close(diagnostics.lyapunov_exponents(params, x, activation, 1, cache=cache, **kwargs), top)
    # k = 1 by the general QR: the same start vector, np.linalg.qr at every step
    JT = np.swapaxes(diagnostics.step_jacobians(params, cache, 0), 1, 2)
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((H, 1)))
    total = 0.0
    for J in JT:
        q, r = np.linalg.qr(J @ q)
        total += np.log(abs(r[0, 0]))
    close(top, [total / T])


# ---------------------------------------------------------------- float32


@pytest.mark.parametrize("cfg", [("rnn", "none", "tanh"), *CELL_CONFIGS], ids=["rnn", *CELL_IDS])
@pytest.mark.parametrize("truncation", [None, 3])
@pytest.mark.usefixtures("on_backend")
def test_float32_stays_float32_and_matches_float64(cfg, truncation):
    cell, norm, activation = cfg
    params = core.init_params(D, H, O, init="gaussian", scale=1.1, rng=6, cell=cell, norm=norm)
    params32 = {k: v.astype(np.float32) for k, v in params.items()}
    x = np.random.default_rng(7).normal(size=(T, B, D))
    dout = make_dout("sparse", np.random.default_rng(8))
    model = dict(activation=activation, cell=cell, norm=norm)
    out, cache = core.forward(params, x, **model)
    out32, cache32 = core.forward(params32, x.astype(np.float32), **model)
    grads, ds = core.backward(params, cache, dout, truncation=truncation)
    grads32, ds32 = core.backward(params32, cache32, dout.astype(np.float32), truncation=truncation)
    arrays = [out32, ds32, *grads32.values(), *(v for v in cache32.values() if isinstance(v, np.ndarray))]
    assert all(a.dtype == np.float32 for a in arrays)
    assert diagnostics.step_jacobians(params32, cache32).dtype == np.float32
    assert rel_error(out32, out) < 1e-5
    assert rel_error(ds32, ds) < 1e-5
    for key in grads:
        assert rel_error(grads32[key], grads[key]) < 1e-4, key


@pytest.mark.parametrize("cell, norm", [("rnn", "none"), ("lstm", "none"), ("gru", "none"), ("rnn", "layer"), ("rnn", "batch")])
@pytest.mark.usefixtures("on_backend")
def test_float32_trains_end_to_end(cell, norm):
    settings = run_config("task.name=adding", "task.seq_len=10", "model.hidden_size=16", f"model.cell={cell}",
                          f"model.norm={norm}", "model.dtype=float32", "optim.lr=0.01", "train.steps=20",
                          "train.eval_interval=10", "train.diag_interval=10", "bptt.truncation=4", "train.verbose=false")
    result = train(settings)
    assert result.outcome != "diverged"
    assert {"train/loss", "eval/loss", "lyap/top", "grad/trunc_cosine"} <= set(result.final)


# ---------------------------------------------------------------- the backends


@pytest.mark.usefixtures("on_backend")
@pytest.mark.parametrize("cfg", [("rnn", "none", "sigmoid"), *CELL_CONFIGS], ids=["rnn", *CELL_IDS])
def test_predict_is_forward_without_the_cache(cfg):
    """Evaluation's forward pass: the same outputs, the per-step arrays of one step only (one workspace reused)."""
    cell, norm, activation = cfg
    params, x, h0 = make_cell_model(cell, norm, T, B, D, H, O)
    model = dict(activation=activation, cell=cell, norm=norm, h0=h0 if cell != "rnn" or norm != "none" else None)
    workspace = nn.Workspace()
    expected, _ = nn.forward(params, x, **model)
    np.testing.assert_array_equal(nn.predict(params, x, **model, workspace=workspace), expected)
    step_arrays = {"lstm": "gates", "gru": "gates", "rnn": "a_hat"}[cell]
    if norm != "none" or cell != "rnn":
        assert workspace._buffers[step_arrays].shape[0] == 1
    np.testing.assert_array_equal(nn.predict(params, x, **model, workspace=workspace), expected)


@pytest.mark.skipif("numba" not in backend.available(), reason=NO_NUMBA)
@pytest.mark.parametrize("cell, norm, activation, truncation", [
    ("rnn", "none", "tanh", None), ("rnn", "none", "relu", 4), ("lstm", "none", "tanh", None),
    ("gru", "none", "tanh", 4), ("rnn", "layer", "sigmoid", None), ("rnn", "batch", "tanh", None)])
def test_the_backends_give_the_same_metrics_on_a_short_run(cell, norm, activation, truncation):
    """Same seed, same machine: the numba and numpy backends agree closely, not bit for bit. Their
    products and nonlinearities round differently (nn.backend), and training carries those last-bit
    differences further with every step: over 20 steps they stay within 1e-9 of each other."""
    settings = run_config("task.name=adding", "task.seq_len=12", "model.hidden_size=8", f"model.cell={cell}",
                          f"model.norm={norm}", f"model.activation={activation}", "optim.lr=0.01", "train.steps=20",
                          "train.eval_interval=10", "train.diag_interval=10", f"bptt.truncation={truncation or 'null'}",
                          "train.verbose=false")
    results = {}
    for name in ("numpy", "numba"):
        with backend.using(name):
            results[name] = train(settings)
    numpy_run, numba_run = results["numpy"].final, results["numba"].final
    assert numpy_run.keys() == numba_run.keys()
    for key, value in numpy_run.items():
        assert numba_run[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert results["numpy"].outcome == results["numba"].outcome


@pytest.mark.skipif("numba" not in backend.available(), reason=NO_NUMBA)
def test_compiled_nonlinearities_are_within_rounding_of_numpys():
    from rnngrad.nn import kernels

    rng = np.random.default_rng(9)
    x = np.concatenate([rng.uniform(-25, 25, 200_000), rng.uniform(-1e-3, 1e-3, 10_000), 10.0 ** rng.uniform(-300, 2, 10_000),
                        [0.0, -0.0, 1e-310, 19.0, 20.0, 21.0, 700.0, 709.0, np.inf, -np.inf]])
    x = np.concatenate([x, -x])
    with np.errstate(over="ignore"):
        references = {"tanh": np.tanh(x), "sigmoid": 1.0 / (1.0 + np.exp(-x))}
    for activation, expected in references.items():
        y = x.copy()[None]
        kernels.add_activate(y, np.zeros_like(y), kernels.ACTIVATION_CODES[activation])
        error = np.abs(y[0] - expected)
        # below 1.3e-308 (sigmoid of a < -709, where numpy's e^-a overflows to a result of 0) absolutely
        assert np.all((error <= 5e-16 * np.abs(expected)) | (error < 1.3e-308)), activation
        y = np.array([[np.nan]])
        kernels.add_activate(y, np.zeros_like(y), kernels.ACTIVATION_CODES[activation])
        assert np.isnan(y[0, 0])


def test_the_backend_is_selectable_and_reported():
    with backend.using("numpy"):
        assert backend.name() == nn.backend_name() == "numpy"
        assert backend.kernels() is None
        with backend.using("auto") as name:
            assert name == backend.name() == backend.available()[-1]
        assert backend.name() == "numpy"
    with pytest.raises(ValueError, match="auto, numpy, numba"):
        backend.select("cuda")


def test_without_numba_auto_falls_back_to_numpy(monkeypatch):
    monkeypatch.setattr(backend, "_numba_kernels", lambda: None)
    with backend.using("auto") as name:
        assert name == "numpy" and backend.available() == ("numpy",)
        params = core.init_params(D, H, O, init="gaussian", rng=0)
        out, cache = core.forward(params, np.ones((T, B, D)), activation="tanh")
        core.backward(params, cache, np.ones((T, B, O)))
    with pytest.raises(ImportError, match="numba"):
        backend.select("numba")


@pytest.mark.parametrize("choice", ["numpy", "auto"])
def test_the_environment_chooses_the_backend(choice, monkeypatch):
    monkeypatch.setenv(backend.ENV, choice)
    code = "from rnngrad.nn import model; print(model.backend_name())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == (backend.available()[-1] if choice == "auto" else "numpy")
