import math

import numpy as np
import pytest

from runconfig import run_config

from rnngrad.training import Callback, train


class Recorder(Callback):
    def __init__(self):
        self.info, self.steps, self.arrays, self.result = None, {}, {}, None

    def on_start(self, info):
        self.info = info

    def on_step(self, step, metrics):
        self.steps[step] = metrics

    def on_through_time(self, step, arrays):
        self.arrays[step] = arrays

    def on_end(self, result):
        self.result = result


ADDING_T10 = ("task.name=adding", "task.seq_len=10", "model.hidden_size=32", "model.init=orthogonal", "optim.name=adam",
              "optim.lr=0.01", "train.steps=1500", "train.eval_interval=300", "train.diag_interval=300", "seed=0",
              "train.verbose=false")


@pytest.fixture(scope="module")
def adding_runs():
    full, trunc = Recorder(), Recorder()
    r_full = train(run_config(*ADDING_T10), [full])
    r_trunc = train(run_config(*ADDING_T10, "bptt.truncation=2"), [trunc])
    return (r_full, full), (r_trunc, trunc)


@pytest.mark.slow
def test_tanh_learns_adding_and_truncation_hurts(adding_runs):
    (r_full, _), (r_trunc, trunc) = adding_runs
    baseline = 1 / 6
    assert r_full.baseline == pytest.approx(baseline)
    assert r_full.final["eval/loss"] < 0.1 * baseline
    # weights learned inside the window still act on every step, so truncation may learn something,
    # but its test loss stays clearly above the full-BPTT run's with the same budget and seed
    assert r_trunc.final["eval/loss"] > 3 * r_full.final["eval/loss"]
    # the truncated gradient is exactly zero for every state outside the window (loss at the last step)
    for arrays in trunc.arrays.values():
        assert np.all(arrays["ds_norm"][:-2] == 0.0)
        assert np.all(arrays["ds_norm"][-2:] > 0.0)
    # the truncation bias is measured on the diagnostic interval
    cosines = [m["grad/trunc_cosine"] for m in trunc.steps.values() if "grad/trunc_cosine" in m]
    assert len(cosines) == 6 and all(-1.0 <= c <= 1.0 for c in cosines)


def test_metrics_reach_callbacks(adding_runs):
    (r_full, rec), _ = adding_runs
    assert sorted(rec.steps) == list(range(1501))
    every = {"train/loss", "grad/norm", "grad/clipped", "grad/ds_first", "grad/ds_last", "grad/decay_rate"}
    assert all(every <= set(m) for m in rec.steps.values())
    diag = {"spectral/radius", "spectral/sigma_max", "act/saturation", "lyap/top", "eval/loss", "eval/accuracy"}
    assert {s for s, m in rec.steps.items() if diag <= set(m)} == {0, 300, 600, 900, 1200, 1500}
    assert "grad/trunc_cosine" not in rec.steps[300]  # only when truncating
    assert set(rec.arrays[300]) == {"ds_norm", "jac_norm", "bound"}
    assert set(rec.arrays[1]) == {"ds_norm"}
    assert all(len(a) == 10 for a in rec.arrays[300].values())
    assert np.all(rec.arrays[300]["jac_norm"] <= rec.arrays[300]["bound"] * (1 + 1e-12))
    m0 = rec.steps[0]
    assert m0["grad/ds_last"] == pytest.approx(rec.arrays[0]["ds_norm"][-1], rel=1e-15)
    assert rec.info["baseline"] == pytest.approx(1 / 6) and rec.info["length"] == 10
    assert r_full.outcome in ("solved", "unsolved") and r_full.steps_done == 1500
    # the peak pre-clip norm is over every step, exactly
    assert r_full.grad_norm_peak == max(m["grad/norm"] for m in rec.steps.values())


def test_same_seed_is_bit_identical():
    settings = (*ADDING_T10, "train.steps=30", "train.eval_interval=10", "train.diag_interval=10")
    a, b, c = Recorder(), Recorder(), Recorder()
    train(run_config(*settings), [a])
    train(run_config(*settings), [b])
    train(run_config(*settings, "seed=1"), [c])
    assert a.steps == b.steps
    for step in a.arrays:
        for key in a.arrays[step]:
            np.testing.assert_array_equal(a.arrays[step][key], b.arrays[step][key])
    assert a.steps[30]["train/loss"] != c.steps[30]["train/loss"]


def test_zero_steps_measures_initialization_only():
    rec = Recorder()
    result = train(run_config(*ADDING_T10, "train.steps=0"), [rec])
    assert list(rec.steps) == [0] and result.steps_done == 0
    assert {"eval/loss", "spectral/radius", "lyap/top"} <= set(rec.steps[0])
    # W is untouched: the orthogonal init has spectral radius exactly 1
    assert rec.steps[0]["spectral/radius"] == pytest.approx(1.0, abs=1e-12)


EXPLODING = ("task.name=adding", "task.seq_len=20", "model.hidden_size=32", "model.activation=relu", "model.init=gaussian",
             "model.spectral_radius=3.0", "optim.name=sgd", "optim.lr=0.01", "train.steps=200", "train.eval_interval=50",
             "train.verbose=false")


def test_exploding_run_diverges_and_clipping_prevents_it():
    rec = Recorder()
    result = train(run_config(*EXPLODING), [rec])
    assert result.outcome == "diverged"
    assert result.diverged_at is not None and 0 < result.diverged_at < 200
    assert rec.result is result
    # everything measured up to the divergence is reported, and only finite values
    assert max(rec.steps) == result.diverged_at - 1 or max(rec.steps) == result.diverged_at
    assert all(math.isfinite(v) for m in rec.steps.values() for v in m.values())
    assert rec.steps[0]["grad/decay_rate"] > 0  # exploding: the norm grows going back in time

    clipped = train(run_config(*EXPLODING, "clip.mode=norm", "clip.threshold=1.0"))
    assert clipped.outcome != "diverged" and clipped.steps_done == 200
    assert clipped.final["grad/clipped"] == 1.0


@pytest.mark.slow
def test_chunked_bptt_learns_char_lm():
    rec = Recorder()
    settings = run_config("task.name=char_lm", "task.seq_len=50", "task.test_size=64", "model.hidden_size=64",
                          "bptt.truncation=25", "bptt.mode=chunked", "train.steps=300", "train.eval_interval=100",
                          "optim.lr=0.005", "train.verbose=false")
    result = train(settings, [rec])
    unigram_bits = result.baseline / math.log(2)
    assert rec.steps[0]["eval/bpc"] > unigram_bits  # an untrained model is worse than the unigram
    assert result.final["eval/bpc"] < 0.9 * unigram_bits
    assert len(rec.arrays[1]["ds_norm"]) == 25  # one chunk of k steps per update


@pytest.mark.parametrize("cell, norm", [("lstm", "none"), ("gru", "none"), ("rnn", "layer"), ("rnn", "batch")])
def test_every_cell_trains_with_every_instrument(cell, norm):
    rec = Recorder()
    settings = (*ADDING_T10, f"model.cell={cell}", f"model.norm={norm}", "train.steps=40", "train.eval_interval=20",
                "train.diag_interval=20", "bptt.truncation=4")
    result = train(run_config(*settings), [rec])
    assert result.outcome != "diverged"
    assert result.final["eval/loss"] < rec.steps[0]["eval/loss"]  # it learns something
    m = rec.steps[20]
    assert {"act/saturation", "lyap/top", "grad/trunc_cosine", "grad/decay_rate"} <= set(m)
    assert ("spectral/radius" in m) == (cell == "rnn")  # W is the square recurrent matrix only there
    arrays = rec.arrays[20]
    assert np.all(arrays["ds_norm"][:-4] == 0) and np.all(arrays["ds_norm"][-4:] > 0)  # truncation=4
    assert arrays["jac_norm"].shape == (10,) and arrays["jac_norm"][-1] == pytest.approx(1.0, rel=1e-12)
    assert "bound" not in arrays  # the Pascanu bound is stated for the plain RNN only
    assert ("dc_norm" in arrays) == (cell == "lstm") and (("grad/dc_last" in m) == (cell == "lstm"))
