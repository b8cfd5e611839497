"""The classic tier's report (`rnngrad report classic`, rnngrad.report.classic): the verdict rule on crafted data,
the claims' measures on crafted runs, the quick report leaving the classic_ runs out, the refusals, and a shrunken
copy of the classic grid run into a temporary store and reported."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from clihelpers import run_preset
from mlflow.tracking import MlflowClient
from storehelpers import create_experiment, fake_run

from rnngrad import cli as rnngrad_cli
from rnngrad.report import classic, compare, frames, stats
from rnngrad.report.classic import FAILS, HOLDS, NO_DATA, NOT_REPRODUCED, PARTLY, REPRODUCED, UNDECIDED, Sub
from rnngrad.report.findings import NUMBER

VERDICTS = {REPRODUCED, PARTLY, NOT_REPRODUCED, NO_DATA}


# the verdict rule on crafted data

def test_a_clear_success_a_clear_failure_and_a_straddling_interval():
    assert stats.wilson(5, 5)[0] > 0.5 and stats.wilson(0, 5)[1] < 0.5  # the fractions below are decided by these
    assert classic.fraction_state(5, 5) == HOLDS and classic.fraction_state(0, 5) == FAILS
    assert classic.fraction_state(0, 5, above=False) == HOLDS and classic.fraction_state(5, 5, above=False) == FAILS
    lo, hi = stats.wilson(2, 5)
    assert lo < 0.5 < hi and classic.fraction_state(2, 5) == UNDECIDED == classic.fraction_state(3, 5)
    success, failure = Sub("learns", classic.fraction_state(5, 5), central=True), Sub("learns", classic.fraction_state(0, 5))
    straddling = Sub("stays", classic.fraction_state(2, 5, above=False))
    assert classic.verdict([success, Sub("stays", HOLDS)]) == REPRODUCED
    assert classic.verdict([failure, Sub("other", FAILS)]) == NOT_REPRODUCED
    assert classic.verdict([success, straddling]) == PARTLY
    assert classic.verdict([success, failure]) == PARTLY  # a failed sub-claim that is not central
    assert classic.verdict([Sub("central", FAILS, central=True), Sub("other", HOLDS)]) == NOT_REPRODUCED
    assert classic.verdict([straddling, Sub("other", UNDECIDED)]) == NO_DATA  # nothing decided
    assert classic.verdict([success, Sub("stays", HOLDS)], complete=False) == NO_DATA  # an arm without runs
    assert classic.verdict([]) == NO_DATA


def test_comparisons_hold_only_significant_in_the_claims_direction():
    assert classic.comparison_state(0.01, +1) == HOLDS and classic.comparison_state(0.01, -1) == FAILS
    assert classic.comparison_state(0.3, +1) == UNDECIDED and classic.comparison_state(float("nan"), +1) == UNDECIDED
    # "at least as well": holds unless significantly worse
    assert classic.comparison_state(0.3, -1, at_least_as_well=True) == HOLDS
    assert classic.comparison_state(0.01, -1, at_least_as_well=True) == FAILS
    p = stats.fisher(5, 5, 0, 5)
    assert p == pytest.approx(2 / 252, rel=1e-12)  # two-sided: both all-or-nothing tables, 1/252 each
    assert classic.comparison_state(p, 1.0) == HOLDS


def test_the_longest_T_solved_and_its_interval():
    rates = pd.DataFrame({"task.seq_len": [50, 100, 200], "count": [5, 3, 0], "runs": [5, 5, 5]})
    # 5 of 5 at 50: solved for sure; 3 of 5 at 100: solved by majority, not for sure; 0 of 5 at 200: unsolved for sure
    assert classic.longest_solved(rates) == (100.0, 50.0, 100.0)
    assert classic.longest_solved(rates.assign(count=0)) == (0.0, 0.0, 0.0)
    assert classic.longer_state((100, 200), (0, 50)) == HOLDS
    assert classic.longer_state((50, 50), (50, 100)) == FAILS
    assert classic.longer_state((50, 100), (50, 50)) == UNDECIDED


def test_the_window_that_reaches_the_dependency_has_no_off_by_one():
    # temporal order at T = 20: t1 in {2, 3} of steps 0..19, the loss at 19; dependency 17 (tasks.py); the gradient
    # of L_19 reaches s_19 .. s_{19-k+1}, so s_2 needs k = 18 (issue 18): k = 17 still misses t1 = 2
    assert frames.window_needed(17) == 18
    relevant = frames.relevant_distances("16-17,8-9")  # task.relevant, in any order: t2 at 8-9, t1 at 16-17
    assert relevant == [(8, 9), (16, 17)]
    assert [frames.inputs_reached(k, relevant) for k in (8, 9, 10, 16, 17, 18)] == [(0, 0), (0, 1), (1, 1), (1, 1), (1, 2), (2, 2)]
    assert frames.inputs_reached(float("nan"), relevant) == (2, 2)
    bands = [frames.band(k, relevant) for k in (8, 9, 10, 17, 18, float("nan"))]
    assert bands == ["k misses t2 and t1", "k partly reaches t2, misses t1", "k reaches t2, misses t1",
                     "k reaches t2, partly t1", "k reaches t2 and t1", "full BPTT"]
    assert frames.band(17, [(17, 17)]) == "k misses t1" and frames.band(18, [(17, 17)]) == "k reaches t1"


# the measures on crafted runs

def _adding_runs(cells_beating: dict, n=5, lengths=(100, 200)) -> pd.DataFrame:
    rows = [{"model.cell": cell, "task.seq_len": T, "task.baseline": 1 / 6, "eval/loss": (0.01 if i < k else 0.17)}
            for cell, k in cells_beating.items() for T in lengths for i in range(n)]
    return pd.DataFrame(rows)


def test_the_gated_claim_reproduced_refuted_and_without_an_arm():
    good = classic.measure_gated(None, _adding_runs({"lstm": 5, "gru": 5, "rnn": 0}))
    assert classic.verdict(good.subs, good.complete) == REPRODUCED
    text = good.result.finding(good.result_text).text
    assert "T = 100: LSTM 5 of 5 (95% CI 57–100%), GRU 5 of 5 (95% CI 57–100%), tanh RNN 0 of 5 (95% CI 0–43%)" in text
    bad = classic.measure_gated(None, _adding_runs({"lstm": 0, "gru": 0, "rnn": 0}))
    assert classic.verdict(bad.subs, bad.complete) == NOT_REPRODUCED  # the central sub-claims fail
    partial = classic.measure_gated(None, _adding_runs({"lstm": 5, "gru": 2, "rnn": 0}))
    assert classic.verdict(partial.subs, partial.complete) == PARTLY
    missing = classic.measure_gated(None, _adding_runs({"lstm": 5, "rnn": 0}))
    assert not missing.complete and classic.verdict(missing.subs, missing.complete) == NO_DATA
    assert "GRU no runs" in missing.result_text


def test_the_order_claim_from_the_longest_T_solved_per_arm():
    arms = {("none", 0.0): 50, ("norm", 0.0): 100, ("norm", 2.0): 200}  # the longest T each arm solves
    runs = pd.DataFrame([{"clip.mode": m, "train.omega_alpha": a, "task.seq_len": T, "eval/accuracy": 1.0 if T <= top else 0.25}
                         for (m, a), top in arms.items() for T in (50, 100, 200) for _ in range(5)])
    measured = classic.measure_order(None, runs)
    assert classic.verdict(measured.subs, measured.complete) == REPRODUCED
    assert "SGD 50 (95% CI 50–50), SGD+clip 100 (95% CI 100–100), SGD+clip+Omega 200 (95% CI 200–200)" in measured.result_text
    flat = classic.measure_order(None, runs.assign(**{"eval/accuracy": 1.0}))
    assert classic.verdict(flat.subs, flat.complete) == NOT_REPRODUCED  # every arm solves every T: no growth


class CraftedStudy:
    """What the measures ask of a Study: the grad_norms rows and the metric histories of crafted runs."""

    def __init__(self, grad_norms=None, histories=None):
        self.norms, self.histories = grad_norms, histories or {}

    def grad_norms(self, runs):
        return self.norms[self.norms["run_id"].isin(runs["run_id"])]

    def history(self, runs, key):
        return self.histories[key][self.histories[key]["run_id"].isin(runs["run_id"])]


def test_the_batch_norm_claim_from_the_gradient_at_initialization_and_training():
    arms = [("none", 1.0, 1e-3), ("batch", 0.1, 0.5), ("batch", 1.0, 1e-6)]  # norm, gain, ||dL/ds_1|| / ||dL/ds_T||
    runs = pd.DataFrame([{"run_id": f"{norm}{gain}-{i}", "model.norm": norm, "model.bn_gain": gain, "task.name": "adding",
                          "task.seq_len": 50, "task.baseline": 1 / 6, "eval/loss": 0.01, "outcome": "unsolved"}
                         for norm, gain, _ in arms for i in range(5)])
    kept = {f"{norm}{gain}-{i}": ratio * (1 + 0.01 * i) for norm, gain, ratio in arms for i in range(5)}
    norms = pd.DataFrame([{"run_id": r, "step": 0, "t": t, "ds_norm": 1.0 if t == 50 else kept[r]} for r in kept for t in (1, 50)])
    measured = classic.measure_bn(CraftedStudy(norms), runs)
    assert [s.state for s in measured.subs] == [HOLDS, HOLDS]
    assert classic.verdict(measured.subs, measured.complete) == REPRODUCED
    # medians of log10 of the ratios: -3.0, -0.3 and -6.0 (+ log10(1.02)); 5 against 5 all apart: p = 2/252
    assert "plain RNN -2.99, BN gain 0.1 -0.292, BN gain 1 -5.99 (gain 0.1 against 1: p = 0.0079, Mann-Whitney U test)" in measured.result_text
    worse = runs.assign(**{"eval/loss": np.where(runs["model.norm"] == "none", 0.01, 0.17)})
    measured = classic.measure_bn(CraftedStudy(norms), worse)
    assert [s.state for s in measured.subs] == [HOLDS, FAILS]  # gain 0.1 trains significantly worse than plain
    assert classic.verdict(measured.subs, measured.complete) == PARTLY


def _truncation_runs(learns: dict, cosines: dict, relevant="20-24,40-44") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Temporal order at T = 50 (t2 at 20-24, t1 at 40-44 steps from the loss), 5 runs per k: the first
    learns[k] of them beat the constant predictor; every run's cosine is cosines[k] (none for full BPTT)."""
    runs = pd.DataFrame([{"run_id": f"k{k}-{i}", "bptt.truncation": k, "task.dependency": 44, "task.relevant": relevant,
                          "task.seq_len": 50, "model.activation": "tanh", "outcome": "unsolved", "task.baseline": np.log(4),
                          "eval/loss": 0.01 if i < learns[k] else 1.4} for k in learns for i in range(5)])
    cosine = pd.DataFrame([{"run_id": r, "step": 0, "value": cosines[k]} for r, k in zip(runs["run_id"], runs["bptt.truncation"])
                           if not math.isnan(k)])
    return runs, cosine


def test_the_truncation_claim_is_judged_per_band_of_the_relevant_distances():
    nan = float("nan")
    # k = 20 misses both symbols, 25 and 40 reach t2 only, 45 reaches both (k >= 44 + 1), nan is full BPTT
    runs, cosine = _truncation_runs({20.0: 0, 25.0: 0, 40.0: 0, 45.0: 5, nan: 5}, {20.0: 0.3, 25.0: 0.5, 40.0: 0.6, 45.0: 0.99})
    study = CraftedStudy(histories={"grad/trunc_cosine": cosine})
    measured = classic.measure_truncation(study, runs)
    assert measured.arms.tolist() == (["k misses t2 and t1"] * 5 + ["k reaches t2, misses t1"] * 10
                                      + ["k reaches t2 and t1"] * 5 + ["full BPTT"] * 5)
    assert [(s.text, s.state, s.central) for s in measured.subs] == [
        ("k misses t2 and t1 lowers the cosine", HOLDS, False), ("k misses t2 and t1 prevents learning", HOLDS, True),
        ("k reaches t2, misses t1 lowers the cosine", HOLDS, False),
        ("k reaches t2, misses t1 prevents learning", HOLDS, True), ("full BPTT learns reliably", HOLDS, False)]
    assert classic.verdict(measured.subs, measured.complete) == REPRODUCED and measured.why == ""
    text = measured.result_text
    assert "relevant symbols at distances t2 20–24, t1 40–44 from the loss" in text
    assert "k reaches t2, misses t1 (k = 25, 40): cosine 0.55 (p = 0.0015, Mann-Whitney U test against k reaches t2 and t1)" in text
    assert "learns in 0 of 10 (95% CI 0–28%) (p < 0.001, Fisher's exact test against full BPTT)" in text
    assert text.endswith("full BPTT learns in 5 of 5 (95% CI 57–100%)")
    # a band that misses t1 yet learns (the state carries t1 forward; the window's W acts at every step): a central
    # sub-claim fails, so the claim is not reproduced, however the other band does
    runs, cosine = _truncation_runs({20.0: 0, 25.0: 5, 40.0: 5, 45.0: 5, nan: 5}, {20.0: 0.3, 25.0: 0.9, 40.0: 0.95, 45.0: 0.99})
    measured = classic.measure_truncation(CraftedStudy(histories={"grad/trunc_cosine": cosine}), runs)
    states = {s.text: s.state for s in measured.subs}
    assert states["k reaches t2, misses t1 prevents learning"] == FAILS and states["k misses t2 and t1 prevents learning"] == HOLDS
    assert classic.verdict(measured.subs, measured.complete) == NOT_REPRODUCED
    assert measured.why.startswith("k reaches t2, misses t1 (k = 25, 40) never reaches t1 in its gradient, yet learns: "
                                   "the forward state carries t1's symbol into the window")
    # without the band that reaches both symbols there is no cosine to compare with: not enough data
    without = classic.measure_truncation(study, runs[runs["bptt.truncation"] != 45])
    assert not without.complete and classic.verdict(without.subs, without.complete) == NO_DATA
    # a store from before the tag task.relevant: the one distance task.dependency (t1's farthest)
    old = classic.measure_truncation(study, runs.drop(columns="task.relevant"))
    assert set(old.arms) == {"k misses t1", "k reaches t1", "full BPTT"}


def test_the_setting_names_every_deviation_from_the_papers():
    runs = pd.DataFrame({"task.name": "adding", "task.seq_len": [100, 200], "model.hidden_size": 100, "optim.name": "sgd",
                         "optim.lr": 0.01, "clip.mode": "norm", "clip.threshold": 10.0, "train.steps": 3000,
                         "train.batch_size": 16})
    text = classic.setting_text(classic.our_setting(runs, pd.Series(["a", "b"])), classic.LE_2015)
    assert text == ("task adding, T 100, 200 (the paper: 150–400), H 100, optimizer SGD, lr 0.01, clip norm 10, "
                    "updates 3e3 (the paper: 1e6), batch 16, seeds 1 per arm and T")
    assert classic.budget(1500) == "1.5e3" and classic.budget(1e6) == "1e6"


# the command line

def test_the_quick_report_ignores_classic_runs(store, tmp_path):
    client = MlflowClient(store)
    exp = create_experiment(store, "rnngrad")
    base = {"task.name": "adding", "task.seq_len": 8, "model.cell": "rnn", "model.activation": "tanh"}
    tags = {"outcome": "unsolved", "task.baseline": 1 / 6}
    fake_run(client, exp, "quick", {**base, "question": "init", "train.steps": 0}, tags=tags)
    fake_run(client, exp, "classic", {**base, "question": "classic_gated", "train.steps": 10}, tags=tags,
             metrics={"eval/loss": [(10, 0.1)]})
    # the quick report's sections over every question's trained runs (heatmaps, saturation) would take the classic
    # run, which lacks their params, and fail to draw (exit 1): they find no trained run instead
    assert rnngrad_cli.main(["report", "--tracking-uri", store, "--out", str(tmp_path / "quick")]) == 0
    readme = (tmp_path / "quick" / "README.md").read_text()
    assert "| init | 1 |" in readme and "classic\\_" not in readme and "| total | 1 |" in readme
    assert "(classic/README.md)" in readme  # its scope points to the classic report: a link, not a run
    assert rnngrad_cli.main(["report", "classic", "--tracking-uri", store, "--out", str(tmp_path / "classic")]) == 0
    readme = (tmp_path / "classic" / "README.md").read_text()
    assert "| classic\\_gated | 1 |" in readme and "seqlen" not in readme and "| total | 1 |" in readme


def test_an_empty_experiment_gives_every_row_without_data_and_what_to_run(store, tmp_path):
    create_experiment(store, "rnngrad")
    assert rnngrad_cli.main(["report", "classic", "--tracking-uri", store, "--out", str(tmp_path / "out")]) == 0
    readme = (tmp_path / "out" / "README.md").read_text()
    assert readme.count(f"| **{NO_DATA}** |") == len(classic.CLAIMS) == 6
    for claim in classic.CLAIMS:
        assert f"No runs with question={claim.question}: `python -m rnngrad.train -m experiment=classic " in readme
    assert not list((tmp_path / "out" / "figures").iterdir())


def test_an_unknown_report_and_a_missing_store_are_refused_and_nothing_is_written(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        rnngrad_cli.main(["report", "classics", "--tracking-uri", f"sqlite:///{tmp_path / 'x.db'}", "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2 and "argument report: invalid choice: 'classics' (choose from 'study', 'classic')" in capsys.readouterr().err
    assert rnngrad_cli.main(["report", "classic", "--tracking-uri", f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}",
                             "--out", str(tmp_path / "out")]) == 2
    assert "run a sweep first" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "none").exists() and not (tmp_path / "x.db").exists()


# a shrunken copy of the classic grid (the presets' question names and keys), run and reported

TINY_CLASSIC = """# @package _global_
hydra:
  sweeper:
    grids:
      classic_gated: {question: classic_gated, task: adding, task.seq_len: 8, model.cell: "rnn,lstm,gru"}
      classic_irnn: {question: classic_irnn, task: adding, task.seq_len: 8, model: irnn, optim: sgd, clip: norm10,
                     optim.lr: "0.01,0.001"}
      classic_order_sgd: &order {question: classic_order, task: temporal_order, task.seq_len: 8, model: pascanu_smart_tanh,
                                 model.hidden_size: 8, optim: sgd, clip: none, train.omega_alpha: 0}
      classic_order_clip: {<<: *order, clip: norm}
      classic_order_omega: {<<: *order, clip: norm, train.omega_alpha: 2}
      classic_copy_lstm: &copy {question: classic_copy, task: copy, task.seq_len: 4, model.cell: lstm}
      classic_copy_tanh: {<<: *copy, model.cell: rnn, model.activation: tanh}
      classic_copy_linear: {<<: *copy, model.cell: rnn, model.activation: linear, model.init: orthogonal}
      classic_bn_plain: &bn {question: classic_bn, task: adding, task.seq_len: 8, model.norm: none}
      classic_bn_batch: {<<: *bn, model.norm: batch, model.bn_gain: "0.1,1.0"}
      classic_truncation: {question: classic_truncation, task: temporal_order, task.seq_len: 10, bptt.truncation: "2,9,null"}
"""


@pytest.mark.slow
def test_a_shrunken_classic_grid_builds_every_row_of_the_table(tmp_path, blank_db):
    proc, uri = run_preset(tmp_path, blank_db, TINY_CLASSIC, "train.steps=10", env={"RNNGRAD_BACKEND": "numpy"})
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "report"
    assert rnngrad_cli.main(["report", "classic", "--tracking-uri", uri, "--out", str(out)]) == 0
    readme = (out / "README.md").read_text()
    table = [line for line in readme.split("## Reproduction table")[1].split("## Findings")[0].splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in table[1:]] == [f"| {n}" for n in range(1, 7)]
    records = {f["id"]: f for f in json.loads((out / "findings.json").read_text())["findings"]}
    for claim in classic.CLAIMS:
        verdict = records[f"{claim.question}_verdict"]["text"]
        assert verdict in VERDICTS
        assert f"**{verdict}** |" in table[claim.number]
        for cell_id in ("setting", "result", "subclaims"):
            cell = records[f"{claim.question}_{cell_id}"]
            assert cell["text"] != "no runs"
            # every number the cell prints is in findings.json, as printed
            printed = " ".join(n["printed"] for n in cell["numbers"])
            assert all(m.group() in printed for m in NUMBER.finditer(cell["text"])), cell
        assert records[f"{claim.question}_finding"]["text"].startswith(f"Claim {claim.number} ({claim.key}): {verdict}")
        assert f"- {records[f'{claim.question}_finding']['text']}" in readme
    # the counts agree with the store: the gated row's fractions are of 1 run per cell
    client = MlflowClient(uri)
    runs = [r for r in client.search_runs([client.get_experiment_by_name("rnngrad").experiment_id]) if "rnngrad.sweep" not in r.data.tags]
    assert len(runs) == 17 and f"| total | {len(runs)} |" in readme
    gated = [r for r in runs if r.data.params["question"] == "classic_gated"]
    beat = {r.data.params["model.cell"]: r.data.metrics["eval/loss"] < frames.BEATS / 6 for r in gated}
    assert f"LSTM {int(beat['lstm'])} of 1 (95% CI" in records["classic_gated_result"]["text"]
    assert np.isfinite([r.data.metrics["eval/loss"] for r in gated]).all()
    assert all((out / "figures" / f"{claim.question}.png").stat().st_size > 0 for claim in classic.CLAIMS)
    assert "Not drawn" not in readme and "could not be" not in readme
    # scripts/compare_findings.py reads it: a build agrees with itself, number by number
    changes = compare.compare(out / "findings.json", out / "findings.json")
    assert changes and all(c.agree for c in changes)
    assert any(c.id == "classic_gated_result.beats_LSTM_T8" for c in changes)
