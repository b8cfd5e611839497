"""The papers' protocols at the model level (issue 18): Pascanu et al.'s Omega, Cooijmans et al.'s population
statistics, variable training lengths, and the named initializations."""

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from reference import rel_error
from runconfig import run_config

from rnngrad import config, core
from rnngrad.training import Callback, train
from rnngrad.nn import model as nn
from rnngrad.nn import omega as nn_omega
from rnngrad.tasks import make_task, temporal_order_windows

T, B, D, H, O = 7, 4, 3, 5, 2


def vanilla(activation, seed=0):
    rng = np.random.default_rng(seed)
    params = core.init_params(D, H, O, init="gaussian", scale=1.1, rng=rng)
    params["b"] = rng.normal(0, 0.3, H)
    x = rng.normal(size=(T, B, D))
    dout = rng.normal(size=(T, B, O))
    out, cache = nn.forward(params, x, activation=activation)
    _, ds = nn.backward(params, cache, dout)
    return params, cache, ds


# ---------------------------------------------------------------- Omega (Pascanu et al. 2013, eq. 9)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
def test_omega_is_eq_9_on_the_step_jacobians(activation):
    """Omega from the model's own step Jacobians: the mean over (t, b) of (||delta_t J_t^T|| / ||delta_t|| - 1)^2,
    J_t = ds_t/ds_{t-1} in row form (so delta_{t-1} gets delta_t J_t^T)."""
    params, cache, ds = vanilla(activation)
    terms = []
    for b in range(B):
        J = nn.step_jacobians(params, cache, sample=b)
        for t in range(T):
            terms.append((np.linalg.norm(J[t] @ ds[t, b]) / np.linalg.norm(ds[t, b]) - 1.0) ** 2)
    value, _ = nn.omega(params, cache, ds)
    assert value == pytest.approx(np.mean(terms), rel=1e-12)
    assert value > 1e-3  # the check sees a nonzero regularizer


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
def test_omega_gradient_matches_central_differences(activation):
    """dOmega/dW against central differences of the same objective: delta_t = dL/ds_t and f'(a_t) held at
    their values (the paper's simplification), W alone perturbed."""
    params, cache, ds = vanilla(activation, seed=1)
    fprime = core.dactivation(cache["s"], activation)
    value, dW = nn.omega(params, cache, ds)
    W = params["W"].copy()
    eps, numeric = 1e-6, np.zeros_like(W)
    for i in np.ndindex(W.shape):
        old = W[i]
        W[i] = old + eps
        plus = nn_omega.omega_value(W, ds, fprime)
        W[i] = old - eps
        minus = nn_omega.omega_value(W, ds, fprime)
        W[i] = old
        numeric[i] = (plus - minus) / (2 * eps)
    assert value == nn_omega.omega_value(W, ds, fprime)
    assert rel_error(dW, numeric) < 1e-7
    assert np.linalg.norm(numeric) > 1e-3


def test_omega_is_zero_for_a_norm_preserving_step_and_skips_vanishing_terms():
    """W orthogonal and f linear: every step preserves the norm exactly, Omega = 0 with zero gradient.
    Terms with ||dL/ds_t||^2 < 1e-20 do not count (their ratio is undefined)."""
    rng = np.random.default_rng(2)
    params = core.init_params(D, H, O, init="orthogonal", rng=rng)
    x = rng.normal(size=(T, B, D))
    _, cache = nn.forward(params, x, activation="linear")
    dout = rng.normal(size=(T, B, O))
    _, ds = nn.backward(params, cache, dout)
    value, dW = nn.omega(params, cache, ds)
    assert value == pytest.approx(0.0, abs=1e-24) and np.abs(dW).max() < 1e-12
    # a step whose gradient vanishes is left out of the mean, not counted as a term of value 1
    params["W"] = 0.5 * params["W"]
    _, cache = nn.forward(params, x, activation="linear")
    _, ds = nn.backward(params, cache, dout)
    full, _ = nn.omega(params, cache, ds)
    assert full == pytest.approx(0.25, rel=1e-12)  # ||0.5 Q^T d|| / ||d|| = 0.5 everywhere
    ds[:3] = 0.0
    assert nn.omega(params, cache, ds)[0] == pytest.approx(0.25, rel=1e-12)


def test_omega_needs_the_vanilla_rnn():
    params = core.init_params(D, H, O, cell="lstm", init="orthogonal", rng=0)
    _, cache = nn.forward(params, np.ones((T, B, D)), activation="tanh", cell="lstm")
    with pytest.raises(ValueError, match="vanilla RNN"):
        nn.omega(params, cache, np.ones((T, B, H)))


# ---------------------------------------------------------------- recurrent batch norm: population statistics


def recurrent_bn(seed=0):
    params = core.init_params(D, H, O, norm="recurrent_batch", init="gaussian", scale=1.0, rng=seed)
    return params


def test_running_averages_converge_to_the_datas_moments():
    """With a fixed model and inputs ~ N(mu, sigma^2) iid, x_t U has per-unit mean mu U and variance
    sigma^2 ||U_:j||^2: the running averages of many batches reach them (1% of the variance at momentum 0.02)."""
    params = recurrent_bn()
    rng = np.random.default_rng(3)
    mu, sigma = np.array([0.5, -1.0, 2.0]), np.array([1.0, 0.5, 2.0])
    population = nn.Population(momentum=0.02)
    for _ in range(2000):
        x = mu + sigma * rng.normal(size=(T, 16, D))
        _, cache = nn.forward(params, x, activation="tanh", norm="recurrent_batch")
        population.update(cache)
    stats = population.statistics(T)
    mean_x, var_x = mu @ params["U"], (sigma**2) @ params["U"] ** 2
    np.testing.assert_allclose(stats[:, 0], np.broadcast_to(mean_x, (T, H)), atol=0.05 * np.sqrt(var_x).max())
    np.testing.assert_allclose(stats[:, 1], np.broadcast_to(var_x, (T, H)), rtol=0.1)
    # s_0 W = 0 at the first step (h0 = 0): mean and variance 0; later steps carry the data's spread
    assert np.all(stats[0, 2:] == 0.0) and np.all(stats[1:, 3] > 0)
    assert population.counts.tolist() == [2000] * T


def test_running_averages_are_exact_for_equal_batches_and_use_the_unbiased_variance():
    params = recurrent_bn()
    x = np.random.default_rng(4).normal(size=(T, 8, D))
    _, cache = nn.forward(params, x, activation="tanh", norm="recurrent_batch")
    population = nn.Population(momentum=0.3)
    for _ in range(3):
        population.update(cache)
    xu = x @ params["U"]
    np.testing.assert_allclose(population.statistics(T)[:, 0], xu.mean(axis=1), rtol=1e-13)
    np.testing.assert_allclose(population.statistics(T)[:, 1], xu.var(axis=1, ddof=1), rtol=1e-13)


def test_evaluation_uses_the_population_statistics():
    """With population statistics one sample's output does not depend on the rest of its batch, and equals
    a direct evaluation of s_t = tanh(gx (x_t U - m) / sd + gh (s_{t-1} W - m') / sd' + b)."""
    params = recurrent_bn()
    params["b"] = np.random.default_rng(5).normal(0, 0.3, H)
    rng = np.random.default_rng(6)
    population = nn.Population()
    for _ in range(20):
        _, cache = nn.forward(params, rng.normal(size=(T, 8, D)), activation="tanh", norm="recurrent_batch")
        population.update(cache)
    x = rng.normal(size=(T, 6, D))
    kw = {"activation": "tanh", "norm": "recurrent_batch", "population": population}
    batch = nn.predict(params, x, **kw)
    other = np.concatenate([x[:, :1], 3.0 * rng.normal(size=(T, 9, D))], axis=1)
    np.testing.assert_allclose(nn.predict(params, other, **kw)[:, 0], batch[:, 0], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(nn.predict(params, x[:, :1], **kw)[:, 0], batch[:, 0], rtol=1e-13, atol=1e-15)
    stats, s = population.statistics(T), np.zeros(H)
    for t in range(T):
        m_x, v_x, m_h, v_h = stats[t]
        s = np.tanh(params["gx"] * (x[t, 0] @ params["U"] - m_x) / np.sqrt(v_x + 1e-5)
                    + params["gh"] * (s @ params["W"] - m_h) / np.sqrt(v_h + 1e-5) + params["b"])
        np.testing.assert_allclose(batch[t, 0], s @ params["V"] + params["c"], rtol=1e-12)
    # training statistics (no population) do depend on the batch
    train_kw = {"activation": "tanh", "norm": "recurrent_batch"}
    assert not np.allclose(nn.predict(params, other, **train_kw)[:, 0], nn.predict(params, x, **train_kw)[:, 0])


def test_steps_beyond_the_longest_trained_use_its_last_statistics():
    params = recurrent_bn()
    population = nn.Population()
    _, cache = nn.forward(params, np.random.default_rng(7).normal(size=(4, 8, D)), activation="tanh",
                          norm="recurrent_batch")
    population.update(cache)
    stats = population.statistics(9)
    assert population.length == 4 and stats.shape == (9, 4, H)
    np.testing.assert_array_equal(stats[4:], np.broadcast_to(stats[3], (5, 4, H)))
    with pytest.raises(ValueError, match="no population statistics yet"):
        nn.Population().statistics(3)
    with pytest.raises(ValueError, match="momentum"):
        nn.Population(momentum=0.0)


@pytest.mark.skipif("numba" not in __import__("rnngrad.nn.backend").nn.backend.available(), reason="needs numba")
def test_the_recurrent_batch_norm_runs_the_numpy_loops_on_either_backend():
    """No kernel exists for it: on the numba backend it runs the same numpy loops (only the weight gradients'
    products go through the kernels' BLAS), so the two backends agree to rounding."""
    from rnngrad.nn import backend

    params = recurrent_bn()
    x = np.random.default_rng(11).normal(size=(T, B, D))
    dout = np.random.default_rng(12).normal(size=(T, B, O))
    results = []
    for name in ("numpy", "numba"):
        with backend.using(name):
            out, cache = nn.forward(params, x, activation="tanh", norm="recurrent_batch")
            grads, ds = nn.backward(params, cache, dout, truncation=3)
            results.append((out.copy(), {k: v.copy() for k, v in grads.items()}, ds.copy()))
    (out0, g0, ds0), (out1, g1, ds1) = results
    np.testing.assert_array_equal(out0, out1)
    np.testing.assert_array_equal(ds0, ds1)
    for key in g0:
        assert rel_error(g0[key], g1[key]) < 1e-14, key


# ---------------------------------------------------------------- variable training lengths


@pytest.mark.parametrize("name", ["adding", "temporal_order"])
def test_training_lengths_cover_the_range_and_the_test_set_is_at_T(name):
    task = make_task(name, seq_len=30, min_seq_len=20)
    rng = np.random.default_rng(8)
    lengths = [task.sample(3, rng)[0].shape[0] for _ in range(600)]
    assert set(lengths) == set(range(20, 31))  # both ends included
    counts = np.bincount(lengths)[20:]
    assert counts.min() > 600 / 11 / 2  # about uniform (expected 54.5 each)
    again = np.random.default_rng(8)
    for length in lengths[:50]:  # the same seed draws the same batches
        assert task.sample(3, again)[0].shape[0] == length
    x, _, mask = task.test_set()
    assert x.shape[0] == 30 and mask.shape[0] == 30 and task.length == 30
    assert task.dependency == make_task(name, seq_len=30).dependency


def test_fixed_length_tasks_draw_what_they_always_drew():
    """min_seq_len unset, or equal to seq_len, consumes no randomness for the length."""
    for task in (make_task("adding", seq_len=12, min_seq_len=12), make_task("adding", seq_len=12)):
        a, b = task.sample(4, np.random.default_rng(9)), make_task("adding", seq_len=12).sample(4, np.random.default_rng(9))
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)


def test_positions_are_drawn_relative_to_each_sampled_length():
    adding = make_task("adding", seq_len=40, min_seq_len=10)
    order = make_task("temporal_order", seq_len=40, min_seq_len=10)
    rng = np.random.default_rng(10)
    seen = set()
    for _ in range(300):
        x, y, mask = adding.sample(5, rng)
        L = x.shape[0]
        first, second = (np.argmax(x[: L // 2, :, 1], axis=0), L // 2 + np.argmax(x[L // 2 :, :, 1], axis=0))
        assert np.all(x[:, :, 1].sum(axis=0) == 2) and np.all(x[: L // 2, :, 1].sum(axis=0) == 1)
        np.testing.assert_allclose(y[-1, :, 0], x[first, np.arange(5), 0] + x[second, np.arange(5), 0])
        assert np.all(mask[-1] == 1) and np.all(mask[:-1] == 0)
        x, y, _ = order.sample(5, rng)
        L = x.shape[0]
        (lo1, hi1), (lo2, hi2) = temporal_order_windows(L)
        t, b = np.nonzero(x.argmax(axis=2) >= 4)  # X or Y
        t = t[np.argsort(b, kind="stable")].reshape(5, 2)
        assert np.all((lo1 <= t[:, 0]) & (t[:, 0] < hi1) & (lo2 <= t[:, 1]) & (t[:, 1] < hi2))
        seen.add(L)
    assert len(seen) == 31


@pytest.mark.parametrize("options, message", [
    ({"min_seq_len": 41}, "min_seq_len must be <= seq_len = 40"),
    ({"min_seq_len": 1}, "min_seq_len must be an integer >= 2"),
])
def test_bad_minimum_lengths_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        make_task("adding", seq_len=40, **options)
    with pytest.raises(ValueError, match="unknown option"):
        make_task("copy", seq_len=40, min_seq_len=20)


# ---------------------------------------------------------------- in training


class Recorder(Callback):
    def __init__(self):
        self.steps = {}

    def on_step(self, step, metrics):
        self.steps[step] = metrics


TINY = ("task.name=temporal_order", "task.seq_len=12", "model.hidden_size=8", "optim.name=sgd", "optim.lr=0.05",
        "train.batch_size=8", "train.steps=6", "train.eval_interval=3", "train.diag_interval=3", "task.test_size=40",
        "train.verbose=false")


def test_omega_joins_the_gradient_of_w_and_is_logged():
    """alpha dOmega/dW is added to W's gradient before clipping: after one SGD step, W differs from the
    unregularized run's by exactly -lr alpha dOmega/dW (U, b, V, c not at all)."""
    from rnngrad.training import _Loop, make_run_task

    plain, reg = (run_config(*TINY, f"train.omega_alpha={a}") for a in (0.0, 2.0))
    loops = [_Loop(run, make_run_task(run)) for run in (plain, reg)]
    outs = [loop.gradient() for loop in loops]
    _, grads, cache, ds, _ = outs[1]
    value, dW = nn.omega(loops[1].params, cache, ds)  # both loops start from the same parameters and batch
    for loop, run, (loss, grads, cache, ds, _) in zip(loops, (plain, reg), outs):
        total, metrics = loop.regularize(grads, cache, ds, diagnostic=False)
        assert ("train/omega" in metrics) == (run.train.omega_alpha > 0)
        loop.update(total)
    np.testing.assert_allclose(loops[1].params["W"] - loops[0].params["W"], -0.05 * 2.0 * dW, rtol=1e-10, atol=1e-16)
    for key in ("U", "b", "V", "c"):
        np.testing.assert_array_equal(loops[1].params[key], loops[0].params[key])
    assert value > 0

    rec = Recorder()
    result = train(reg, [rec])
    assert result.outcome != "diverged"
    assert all("train/omega" in m for m in rec.steps.values())  # every step, alpha > 0
    rec0 = Recorder()
    train(plain, [rec0])
    assert {s for s, m in rec0.steps.items() if "train/omega" in m} == {0, 3, 6}  # diagnostic steps only


def test_omega_alpha_needs_the_vanilla_rnn_and_a_nonnegative_value():
    with pytest.raises(config.ConfigError, match="train.omega_alpha > 0 .* needs the vanilla RNN"):
        run_config(*TINY, "train.omega_alpha=1", "model.cell=lstm")
    with pytest.raises(config.ConfigError, match="train.omega_alpha must be >= 0"):
        run_config(*TINY, "train.omega_alpha=-1")


def test_cooijmans_batch_norm_trains_and_evaluates_with_population_statistics():
    from rnngrad.training import _Loop, make_run_task

    run = run_config(*TINY, "model.norm=batch", "train.steps=30", "train.eval_interval=10")
    assert run.model.bn_variant == "cooijmans" and run.model.bn_gain == 0.1
    loop = _Loop(run, make_run_task(run))
    assert loop.model["norm"] == "recurrent_batch" and np.all(loop.params["gx"] == 0.1)
    loop.gradient()
    assert loop.population.counts.tolist() == [1] * 12
    rec = Recorder()
    result = train(run, [rec])
    assert result.outcome != "diverged" and {"eval/loss", "lyap/top", "act/saturation"} <= set(rec.steps[30])
    summed = run_config(*TINY, "model.norm=batch", "model.bn_variant=summed", "model.bn_gain=1")
    loop = _Loop(summed, make_run_task(summed))
    assert loop.model["norm"] == "batch" and loop.population is None and np.all(loop.params["g"] == 1.0)


def test_a_run_trains_on_variable_lengths_and_tests_at_T():
    from rnngrad.training import _Loop, make_run_task

    run = run_config(*TINY, "task.min_seq_len=6")
    loop = _Loop(run, make_run_task(run))
    assert {loop.gradient()[2]["s"].shape[0] for _ in range(60)} == set(range(6, 13))
    assert loop.test_x.shape[0] == 12
    assert train(run).outcome != "diverged"
    with pytest.raises(config.ConfigError, match="min_seq_len must be <= seq_len = 12"):
        run_config(*TINY, "task.min_seq_len=13")
    with pytest.raises(config.ConfigError, match=r"unknown option\(s\) \['min_seq_len'\] for task 'copy'"):
        run_config(*TINY, "task.name=copy", "task.min_seq_len=6")
    with pytest.raises(config.ConfigError, match=r"task.options \['min_seq_len'\] are not options"):
        run_config(*TINY, "task.options.min_seq_len=6")  # one key for it, task.min_seq_len


def test_run_names_say_the_new_protocol_choices():
    from omegaconf import OmegaConf

    def name(*overrides):
        return config.run_name(OmegaConf.merge(OmegaConf.structured(config.Config), OmegaConf.from_dotlist(list(overrides))))

    assert name() == "T50-tanh-orth-s0-adding"
    assert name("task.min_seq_len=20", "train.omega_alpha=2") == "T20to50-tanh-orth-omega2-s0-adding"
    assert name("model.norm=batch") == "T50-tanh-batchnorm-orth-s0-adding"
    assert name("model.norm=batch", "model.bn_variant=summed") == "T50-tanh-batchnorm-summed-orth-s0-adding"


# ---------------------------------------------------------------- the named presets

CONF = Path(__file__).resolve().parents[1] / "conf"


def composed(*overrides):
    config.register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return config.checked(compose("config", overrides=list(overrides)))


def initial_params(run):
    from rnngrad.training import _Loop, make_run_task

    return _Loop(run, make_run_task(run)).params


@pytest.mark.parametrize("preset, activation, w_std, io_std", [
    ("pascanu_sigmoid", "sigmoid", 0.01, 0.01), ("pascanu_basic_tanh", "tanh", 0.1, 0.1),
    ("pascanu_smart_tanh", "tanh", None, 0.01)])
def test_pascanus_initializations(preset, activation, w_std, io_std):
    """Pascanu et al. (2013): 50 units; sigmoid N(0, 0.01^2), basic tanh N(0, 0.1^2) for U, W and V; smart tanh
    W sparse (15 nonzeros per row) at rho 0.95 and U, V N(0, 0.01^2). On temporal order as they trained it."""
    run = composed(f"model={preset}", "task=temporal_order_pascanu", "optim=sgd", "clip=norm", "train.batch_size=20",
                   "train.omega_alpha=2")
    assert (run.model.activation, run.model.hidden_size) == (activation, 50)
    assert (run.task.seq_len, run.task.min_seq_len, run.task.test_size) == (200, 50, 10_000)
    assert (run.optim.name, run.optim.lr, run.clip.mode, run.clip.threshold) == ("sgd", 0.01, "norm", 1.0)
    p = initial_params(run)
    for key in ("U", "V"):
        assert np.std(p[key]) == pytest.approx(io_std, rel=0.15) and abs(np.mean(p[key])) < 0.3 * io_std
    if w_std is not None:
        assert np.std(p["W"]) == pytest.approx(w_std, rel=0.05)
    else:
        assert np.all(np.count_nonzero(p["W"], axis=1) == 15)
        assert np.max(np.abs(np.linalg.eigvals(p["W"]))) == pytest.approx(0.95, rel=1e-12)
    # a shrunken copy trains
    small = composed(f"model={preset}", "task=temporal_order_pascanu", "optim=sgd", "clip=norm", "train.omega_alpha=2",
                     "task.seq_len=20", "task.min_seq_len=10", "task.test_size=50", "model.hidden_size=16",
                     "train.batch_size=20", "train.steps=5", "train.eval_interval=5", "train.diag_interval=5",
                     "train.verbose=false")
    assert train(small).outcome != "diverged"


@pytest.mark.parametrize("lr", [0.01, 0.001])
def test_the_irnn_as_le_et_al_trained_it(lr):
    """Le et al. (2015): relu, W = I, biases 0, U and V ~ N(0, 0.001^2); SGD at lr 1e-2 or 1e-3, norm clipping."""
    run = composed("model=irnn", "optim=sgd", f"optim.lr={lr}", "clip=norm10", "model.hidden_size=100")
    assert (run.model.activation, run.optim.name, run.optim.lr, run.clip.threshold) == ("relu", "sgd", lr, 10.0)
    p = initial_params(run)
    np.testing.assert_array_equal(p["W"], np.eye(100))
    assert not p["b"].any() and not p["c"].any()
    for key in ("U", "V"):
        assert np.std(p[key]) == pytest.approx(1e-3, rel=0.15)
    small = composed("model=irnn", "optim=sgd", f"optim.lr={lr}", "clip=norm10", "task.seq_len=10",
                     "task.test_size=50", "model.hidden_size=8", "train.steps=5", "train.eval_interval=5",
                     "train.verbose=false")
    assert train(small).outcome != "diverged"


@pytest.mark.parametrize("cell, optim", [("lstm", "adam"), ("gru", "rmsprop")])
def test_gated_cells_at_lr_1e_3(cell, optim):
    run = composed(f"model={cell}", f"optim={optim}")
    assert run.optim.lr == 0.001


def test_variable_lengths_align_the_through_time_table_at_the_loss():
    """Batches of different lengths (task.min_seq_len): each step's norms fill the last L columns of the
    logged table, so every column is one distance T - t from the loss, the first T - L columns NaN."""
    from rnngrad.app.tracking import MlflowLogger

    logger = MlflowLogger(None, "run", checkpoints=3, points=25, flush_seconds=1.0, metric_every=50)
    logger.on_through_time(0, {"ds_norm": np.array([1.0, 2.0, 3.0])})
    logger.on_through_time(1, {"ds_norm": np.array([4.0, 5.0, 6.0, 7.0, 8.0]), "jac_norm": np.array([1.0, 1.0])})
    steps, data = logger.through_time_table()
    assert steps == [0, 1]
    np.testing.assert_array_equal(data["ds_norm"], [[np.nan, np.nan, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0, 8.0]])
    np.testing.assert_array_equal(data["jac_norm"][1], [np.nan, np.nan, np.nan, 1.0, 1.0])
    columns = logger.grad_norms_columns()
    assert columns["t"].tolist() == [1, 2, 3, 4, 5] * 2 and columns["step"].tolist() == [0] * 5 + [1] * 5


def test_a_variable_length_sweep_job_logs_its_figures_and_table(tmp_path):
    import pyarrow.parquet as pq
    from clihelpers import TINY as CLI_TINY
    from clihelpers import run_cli, runs

    proc = run_cli(tmp_path, *CLI_TINY, "task.seq_len=10", "task.min_seq_len=4")
    assert proc.returncode == 0, proc.stderr
    client, found = runs(tmp_path)
    (run,) = [r for r in found if r.data.tags.get("rnngrad.sweep") != "true"]
    assert run.info.status == "FINISHED" and run.info.run_name.startswith("T4to10-")
    table = pq.read_table(client.download_artifacts(run.info.run_id, "grad_norms.parquet", str(tmp_path))).to_pandas()
    assert table["t"].max() <= 10 and table.groupby("step")["ds_norm"].apply(lambda v: v.notna().sum()).between(4, 10).all()
    last = table[table["t"] == table["t"].max()]  # the loss's own step is measured at every step
    assert last["ds_norm"].notna().all()
    assert {a.path for a in client.list_artifacts(run.info.run_id, "figures")} == {
        "figures/grad_heatmap.png", "figures/grad_through_time.png"}
