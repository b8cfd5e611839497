"""The report's statistics against values known by hand, the findings' numbers as data (findings.json) against
their text, and scripts/compare_findings.py on crafted files."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rnngrad.report import compare, findings, stats
from rnngrad.report.build import Report

ROOT = Path(__file__).resolve().parents[1]


def _wilson_by_hand(k, n, z=1.959963984540054):
    p = k / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_wilson_interval_matches_the_score_formula_and_the_known_values():
    assert stats.wilson(2, 5) == pytest.approx((0.1176, 0.7693), abs=5e-5)
    for k, n in ((0, 3), (2, 5), (7, 9), (10, 10)):
        assert stats.wilson(k, n) == pytest.approx(_wilson_by_hand(k, n), abs=1e-12)
    assert all(math.isnan(v) for v in stats.wilson(0, 0))
    with pytest.raises(ValueError, match="k = 6"):
        stats.wilson(6, 5)


def test_fisher_exact_p_is_the_sum_of_the_tables_no_more_likely_than_the_observed():
    # [[8, 2], [1, 5]]: the hypergeometric law of the top-left cell with margins 10, 6 and 9
    prob = {a: math.comb(10, a) * math.comb(6, 9 - a) / math.comb(16, 9) for a in range(3, 10)}
    by_hand = sum(p for p in prob.values() if p <= prob[8] * (1 + 1e-7))
    assert stats.fisher(8, 10, 1, 6) == pytest.approx(by_hand, rel=1e-9) and by_hand == pytest.approx(0.0350, abs=5e-5)
    assert stats.fisher(3, 5, 3, 5) == pytest.approx(1.0) and math.isnan(stats.fisher(0, 0, 1, 2))


def test_mann_whitney_exact_p_counts_orderings():
    # U = 0 for fully separated samples of 3 and 3: 1 of the C(6, 3) = 20 orderings each way, two-sided 2/20
    assert stats.mann_whitney([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1, abs=1e-12)
    assert stats.mann_whitney([1, 2, 3, float("nan")], [4, 5, 6]) == pytest.approx(0.1, abs=1e-12)
    assert math.isnan(stats.mann_whitney([], [1.0]))


def test_round_to_interval_keeps_the_digits_the_interval_supports():
    assert stats.round_to_interval(0.4213, 0.118, 0.769) == "0.4"  # half-width 0.33: one decimal
    assert stats.round_to_interval(0.4213, 0.30, 0.54) == "0.42"  # half-width 0.12: its leading 1 keeps one more
    assert stats.round_to_interval(123.4, 100, 150) == "120"  # half-width 25: tens
    assert stats.round_to_interval(0.40213, 0.399, 0.405) == "0.402"
    with pytest.raises(ValueError, match="no positive finite width"):
        stats.round_to_interval(1.0, 1.0, 1.0)
    assert stats.p_text(0.0350) == "p = 0.035" and stats.p_text(0.4) == "p = 0.4" and stats.p_text(1e-5) == "p < 0.001"


def _clipping_runs(k1, n1, k2, n2):
    outcome = ["solved"] * k1 + ["unsolved"] * (n1 - k1) + ["solved"] * k2 + ["unsolved"] * (n2 - k2)
    return pd.DataFrame({"clip.mode": ["norm"] * n1 + ["none"] * n2, "outcome": outcome})


def test_a_comparison_of_arms_prints_each_fraction_with_its_interval_and_the_test():
    (found,) = findings.clipping_and_success(_clipping_runs(8, 10, 1, 6), "fig")
    assert ("With gradient clipping 8 of 10 (95% CI 49–94%) runs solved the task, without 1 of 6 (95% CI 3–56%) "
            "(p = 0.035, Fisher's exact test)") in found.text
    quoted = {n.id: n for n in found.quoted}
    assert quoted["clipping_success.clipped"].value == 0.8 and quoted["clipping_success.clipped"].n == 10
    assert quoted["clipping_success.p"].value == pytest.approx(0.0350, abs=5e-5)


def test_each_clipping_arm_is_tested_against_no_clipping():
    runs = pd.DataFrame({"clip.mode": ["none"] * 10 + ["norm"] * 20, "clip.threshold": [1.0] * 20 + [10.0] * 10,
                         "outcome": ["unsolved"] * 10 + ["solved"] * 10 + ["solved"] * 2 + ["unsolved"] * 8})
    one, ten = findings.clipping_solved(runs, "clipping")
    assert one.text == ("With norm clip 1, 10 of 10 (95% CI 72–100%) runs solved the task, against 0 of 10 (95% CI 0–28%) "
                        "without clipping (p < 0.001, Fisher's exact test) (figure `clipping`).")
    assert "2 of 10 (95% CI 6–51%)" in ten.text and "p = 0.47" in ten.text
    assert {n.id: n.value for n in ten.quoted}["clipping_solved_norm_10.solved"] == 0.2
    assert findings.clipping_solved(runs[runs["clip.mode"] != "none"], "clipping") == []


def _numbers_in(text):
    return findings.NUMBER.findall(findings.CODE_SPAN.sub(" ", text))


def test_findings_json_holds_every_number_the_text_prints_rounded_as_printed():
    runs = pd.DataFrame({"task.seq_len": [10, 10, 10, 20, 20], "outcome": ["solved", "solved", "unsolved", "diverged", "solved"],
                         "clip.mode": ["norm", "none", "norm", "none", "norm"]})
    saturation = pd.DataFrame({"run_id": ["a", "b", "c"], "model.activation": "tanh"})
    history = pd.DataFrame({"run_id": ["a", "b", "c"], "step": 9, "value": [0.31, 0.35, 0.42]})
    report = Report("src", findings=[*findings.solved_by_length(runs, "fig2"), *findings.clipping_and_success(runs, "fig"),
                                     *findings.final_saturation(saturation, history, "fig3")])
    data = json.loads(report.findings_json())
    for finding, record in zip(report.findings, data["findings"]):
        assert record["id"] == finding.id and record["text"] == finding.text
        printed = [n["printed"] for n in record["numbers"]]
        assert sorted(_numbers_in(finding.text)) == sorted(x for p in printed for x in _numbers_in(p))
        for n in record["numbers"]:
            assert n["printed"] in finding.text
            if n["interval"] is not None and " of " not in n["printed"]:  # a median: printed to its interval
                assert n["printed"].lstrip("+").rstrip("%") == stats.supported(n["value"], *n["interval"])
            elif n["interval"] is not None:  # 'k of n (95% CI lo–hi%)': every printed number from the record
                k, total, lo, hi = map(int, re.fullmatch(r"(\d+) of (\d+) \(95% CI (\d+)–(\d+)%\)", n["printed"]).groups())
                assert (k, total) == (round(n["value"] * n["n"]), n["n"])
                assert (lo, hi) == (round(100 * n["interval"][0]), round(100 * n["interval"][1]))
            elif n["n"] is None:
                assert float(n["printed"].replace("−", "-")) == n["value"]
    (by_length, _, saturated) = data["findings"]
    assert "tanh 35%" in saturated["text"] and saturated["numbers"][0]["interval"] == pytest.approx([31.0, 42.0])
    assert [n["id"] for n in by_length["numbers"]][:2] == ["solved_by_length.T10", "solved_by_length.T20"]
    assert "T = 10: 2 of 3 (95% CI 21–94%)" in by_length["text"]
    assert report.findings_json() == Report("other source", findings=report.findings).findings_json()  # no build time


def _json(path, numbers):
    path.write_text(json.dumps({"findings": [{"id": "f", "text": "t", "numbers": numbers}]}))
    return path


def _n(id, value, interval, printed):
    return {"id": id, "value": value, "interval": interval, "n": 5 if interval else None, "printed": printed}


def test_compare_findings_agrees_inside_an_interval_and_on_equal_printed_values(tmp_path):
    old = _json(tmp_path / "old.json", [_n("f.solved", 0.4, [0.12, 0.77], "2 of 5 (95% CI 12–77%)"),
                                        _n("f.0", 0.4, None, "0.40"), _n("f.gone", 1.0, None, "1")])
    same = _json(tmp_path / "same.json", [_n("f.solved", 0.6, [0.23, 0.88], "3 of 5 (95% CI 23–88%)"),
                                          _n("f.0", 0.4, None, "0.40"), _n("f.new", 2.0, None, "2")])
    moved = _json(tmp_path / "moved.json", [_n("f.solved", 1.0, [0.9, 1.0], "5 of 5 (95% CI 90–100%)"),
                                            _n("f.0", 0.42, None, "0.42")])
    changes = {c.id: c for c in compare.compare(old, same)}
    assert changes["f.solved"].agree and changes["f.0"].agree
    assert changes["f.gone"].agree is None and changes["f.new"].agree is None
    assert {c.id: c.agree for c in compare.compare(old, moved)} == {"f.solved": False, "f.0": False, "f.gone": None}
    script = [sys.executable, str(ROOT / "scripts" / "compare_findings.py")]
    agree = subprocess.run([*script, str(old), str(same)], capture_output=True, text=True)
    assert agree.returncode == 0, agree.stderr
    assert "| f.solved | 2 of 5 (95% CI 12–77%) | 3 of 5 (95% CI 23–88%) | yes |" in agree.stdout
    assert "2 of 2 shared numbers agree" in agree.stdout
    differ = subprocess.run([*script, str(old), str(moved)], capture_output=True, text=True)
    assert differ.returncode == 1 and "| f.0 | 0.40 | 0.42 | NO |" in differ.stdout
    assert "0 of 2 shared numbers agree; 2 do not: f.solved, f.0" in differ.stdout
    bad = subprocess.run([*script, str(old), str(tmp_path / "absent.json")], capture_output=True, text=True)
    assert bad.returncode == 2 and "absent.json is not a readable findings.json" in bad.stderr and not bad.stdout


def test_a_run_that_stopped_when_solved_keeps_its_last_loss_in_the_median():
    from rnngrad.report import frames
    runs = pd.DataFrame({"run_id": ["a", "b", "c"], "panel": "p", "colour": "c", "label": "l", "task.baseline": 1.0,
                         "outcome": ["solved", "unsolved", "diverged"]})
    history = pd.DataFrame({"run_id": ["a", "a", "b", "b", "b", "c", "c", "c"], "step": [0, 1, 0, 1, 2, 0, 1, 2],
                            "value": [1.0, 0.1, 1.0, 0.9, 0.8, 1.0, 5.0, 9.0]})
    curves, _ = frames.learning_curves(history, runs)
    last = curves[curves["step"] == 2].iloc[0]
    assert (last["n"], last["median"]) == (3, 0.8)  # a's 0.1 carried to step 2: median of 0.1, 0.8, 9.0
    diverged_early = history[~((history["run_id"] == "c") & (history["step"] == 2))]
    assert frames.carried_forward(diverged_early, runs, ["label"]).query("run_id == 'c'")["step"].max() == 1


def test_the_bootstrap_interval_of_a_median_is_seeded_and_blind_to_the_order_of_the_runs():
    # 3 runs: every resample's median is one of the 3 values, and the 2.5% and 97.5% points are the extremes
    assert stats.median_interval([0.3, 0.1, 0.2]) == (0.1, 0.3)
    values = [0.41, 0.38, 0.44, 0.40, 0.43, 0.39, 0.42]
    assert stats.median_interval(values) == stats.median_interval(sorted(values)) == stats.median_interval(values[::-1])
    lo, hi = stats.median_interval(values)
    assert 0.38 <= lo < 0.41 < hi <= 0.44
    assert all(math.isnan(v) for v in stats.median_interval([0.4])) and all(math.isnan(v) for v in stats.median_interval([]))


def test_supported_prints_the_digits_the_interval_allows_as_significant_digits():
    assert stats.supported(0.4213, 0.118, 0.769) == "0.4"  # as round_to_interval
    assert stats.supported(0.4213, 0.30, 0.54) == "0.42"
    assert stats.supported(7.7e-08, 5e-08, 1e-07) == "8e-08"  # a small number keeps its exponent
    assert stats.supported(3.5e04, 1e04, 6e04) == "4e+04" and stats.supported(123.4, 100, 150) == "120"
    assert stats.supported(0.0012, 0.0005, 0.1) == "0.001"  # an interval wider than the value: one digit
    assert stats.supported(0.409213, 0.4091, 0.4093) == "0.409"  # never more than 3 significant digits
    assert stats.supported(2.94, math.nan, math.nan) == "2.9" and stats.supported(1.0, 1.0, 1.0) == "1.0"  # no spread: 2
    assert stats.supported(-0.4512, -0.47, -0.43) == "-0.45"


def test_the_correlation_interval_is_a_seeded_bootstrap_over_pairs_blind_to_their_order():
    x = np.array([0.1, 0.5, 0.2, 0.9, 0.4, 0.7, 0.3, 0.8])
    y = 2 * x + np.array([0.01, -0.02, 0.03, 0.0, -0.01, 0.02, -0.03, 0.01])
    lo, hi = stats.correlation_interval(x, y)
    r = np.corrcoef(x, y)[0, 1]
    assert lo < r < hi <= 1 and hi - lo < 0.01
    order = np.argsort(-x)
    assert stats.correlation_interval(x[order], y[order]) == (lo, hi)
    assert stats.correlation_interval(x, 2 * x) == pytest.approx((1.0, 1.0))  # every resample lies on the line
    assert all(math.isnan(v) for v in stats.correlation_interval([0.1, 0.2], [0.3, 0.1]))
    assert stats.with_interval(0.99992763, 0.99985443, 0.99996831) == "0.99993 (95% CI 0.99985–0.99997)"
    assert stats.with_interval(0.62, 0.3, 0.8) == "0.6 (95% CI 0.3–0.8)"


def test_a_maximum_is_printed_as_a_bound_rounded_up_to_one_significant_digit():
    assert [stats.upper_bound(v) for v in (0.0356, 1.3e-06, 0.57, 0.0016, 0.95, 0.001, 2e-07)] == [
        "0.04", "2e-06", "0.6", "0.002", "1", "0.001", "2e-07"]
    quote = findings.Quote("f")
    assert quote.bound("worst", [0.01, np.nan, 0.0356]) == "0.04"
    (worst,) = quote.numbers
    assert worst.value == 0.0356 and worst.interval is None and worst.n == 2


def test_a_quoted_median_prints_to_its_bootstrap_interval_and_records_it():
    quote = findings.Quote("f")
    printed = quote.median("rate", [0.41, 0.38, 0.44, 0.40, 0.43, 0.39, 0.42], sign=True)
    share = quote.median("share", [0.2, 0.25, 0.3], scale=100, suffix="%")
    (rate, saturated) = quote.numbers
    assert printed == "+" + stats.supported(0.41, *rate.interval) and rate.value == pytest.approx(0.41) and rate.n == 7
    assert share == "25%" and saturated.interval == pytest.approx((20.0, 30.0)) and saturated.value == pytest.approx(25.0)
    assert quote.median("one", [2.94]) == "2.9" and quote.numbers[-1].interval is None  # one run: no interval


def test_words_counts_a_quoted_number_and_a_code_span_as_one_word():
    quote = findings.Quote("f")
    text = f"With clipping {quote.fraction('k', 2, 5)} runs solved ({quote.fisher('p', 2, 5, 1, 5)}) (figure `a_b`)."
    finding = quote.finding(text)
    assert findings.words(finding) == 8  # With clipping <fraction> runs solved (<p>) (figure <code>).
    long = findings.Finding("long", " ".join(["word"] * 46))
    assert findings.words(long) == 46 > findings.MAX_WORDS


def test_every_finding_on_crafted_runs_states_one_claim_within_the_word_limit_and_names_its_figure():
    runs = pd.DataFrame({"task.seq_len": [10, 20, 40, 80] * 5, "outcome": ["solved", "unsolved"] * 10,
                         "clip.mode": ["norm", "none"] * 10, "eval/loss": [0.5, 1.0] * 10, "task.baseline": 1.0})
    found = [*findings.solved_by_length(runs, "fig"), *findings.clipping_and_success(runs, "fig"),
             *findings.beats_constant_predictor(runs, "seqlen", "fig")]
    assert len(found) == 3
    for finding in found:
        assert findings.words(finding) <= findings.MAX_WORDS and "figure `fig`)" in finding.text


def test_the_bound_gap_names_its_cause_by_whether_w_is_normal():
    def farthest(sigma):
        return pd.DataFrame({"run_id": list("abc"), "ratio": [1e-3, 2e-3, 4e-3], "spectral/radius": 1.0,
                             "spectral/sigma_max": sigma})
    (normal,) = findings._bound_gap("orthogonal", farthest([1.0, 1.0, 1.0]), "fig")
    assert normal.text == ("orthogonal W: at the farthest step the measured norm is 0.0020 times the Pascanu bound "
                           "(median, 3 runs); σ_max/ρ = 1.0, so the gap is f'(a) < γ and ds_t off W's top singular "
                           "direction (figure `fig`).")
    (skewed,) = findings._bound_gap("gaussian", farthest([1.8, 1.9, 2.0]), "fig")
    assert "σ_max/ρ = 1.90: the bound's σ_max overstates the growth rate ρ" in skewed.text
