"""The classic tier's report (`rnngrad report classic`): the reproduction table of the papers' claims, built from
the runs whose question starts with `classic_` (conf/experiment/classic.yaml; each classic_<claim>.yaml preset
names its question and the params that tell its arms apart, which the measures below read).

One `Claim` per row: its papers and the paper's setting (text constants: citations, not measurements), and a
`measure` that turns the question's runs into our setting, the measured result with its 95% intervals, and the
sub-claims the `verdict` is decided from. `VERDICT_RULE` states the rule in the report's words; `verdict` is it.
Every cell of the table is the text of a `Finding`, so findings.json holds every number the table prints.
"""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from rnngrad import store
from rnngrad.report import figures, frames, markdown, stats
from rnngrad.report.build import Part, Report, notes, runs_table
from rnngrad.report.findings import Finding, Quote
from rnngrad.report.frames import BEATS, FULL, SOLVED_ACCURACY
from rnngrad.report.load import Study
from rnngrad.report.protocol import LE_2015, PASCANU_2013, budget, our_setting, setting_text, values as _values
from rnngrad.report.text import fmt, slug

OUTCOME_COLUMNS = ("eval/loss", "eval/accuracy", "act/saturation", "task.baseline", "task.dependency")  # what the measures read
PRESET = "classic"  # conf/experiment/classic.yaml: every classic question, in one sweep
LEARNS = 0.5  # a configuration "learns" (or "is solved") when more than this fraction of its runs do
ALPHA = 0.05  # the significance level of a comparison of two arms
AT_BASELINE = (BEATS, 1 / BEATS)  # copy: a final loss in this band around the memoryless baseline sits at it

HOLDS, FAILS, UNDECIDED = "holds", "fails", "undecided"
REPRODUCED, PARTLY, NOT_REPRODUCED, NO_DATA = "reproduced", "partly", "not reproduced", "not enough data"

VERDICT_RULE = (
    f"Each claim is made of sub-claims, each a fraction of runs meeting a criterion, with its 95% Wilson interval, or "
    f"a comparison of two arms (Fisher's exact test for fractions, the Mann-Whitney U test for values; two-sided). "
    f"A run learns when its final test loss is below {fmt(BEATS)} of the constant predictor's (it beats the constant "
    f"predictor), and is solved when its final test accuracy reaches {fmt(SOLVED_ACCURACY)}; a configuration learns (is "
    f"solved) when more than {fmt(LEARNS)} of its runs do. A fraction sub-claim holds when "
    f"its interval lies wholly on the claim's side of {fmt(LEARNS)}, fails when wholly on the other side, and is "
    f"undecided when it straddles it; a comparison holds when p < {fmt(ALPHA)} in the claim's direction, fails when "
    f"p < {fmt(ALPHA)} against it, and is undecided otherwise (a claim of \"at least as well\" holds unless the arm is "
    f"significantly worse). A claim is **{REPRODUCED}** when every sub-claim holds, **{NOT_REPRODUCED}** when every "
    f"sub-claim fails or a central one (marked in its row) fails, **{PARTLY}** otherwise, and **{NO_DATA}** when one "
    f"of its arms has no finished trained runs or no sub-claim is decided. Every verdict holds within our budget only: the row names it against "
    f"the paper's.")


# the verdict rule

@dataclass(frozen=True)
class Sub:
    """One sub-claim: what it says, whether it holds, fails or is undecided, and whether it is central."""

    text: str
    state: str
    central: bool = False


def verdict(subs: list[Sub], complete: bool = True) -> str:
    """The claim's verdict from its sub-claims (`VERDICT_RULE`); complete: every arm has finished trained runs."""
    if not complete or all(s.state == UNDECIDED for s in subs):
        return NO_DATA
    states = [s.state for s in subs]
    if all(s == HOLDS for s in states):
        return REPRODUCED
    if all(s == FAILS for s in states) or any(s.central and s.state == FAILS for s in subs):
        return NOT_REPRODUCED
    return PARTLY


def fraction_state(k: int, n: int, above: bool = True, criterion: float = LEARNS) -> str:
    """A fraction sub-claim (k of n meet the criterion; the claim: more than `criterion` do, or fewer with
    above=False) from where its Wilson interval lies."""
    side = stats.side(*stats.wilson(k, n), criterion)
    return {0: UNDECIDED, 1: HOLDS if above else FAILS, -1: FAILS if above else HOLDS}[side]


def comparison_state(p: float, direction: float, at_least_as_well: bool = False) -> str:
    """A comparison sub-claim: p two-sided, direction > 0 when the data lean the claim's way, < 0 against it.
    at_least_as_well: the claim is that the arm is not worse (it fails only when significantly worse)."""
    if math.isnan(p):
        return UNDECIDED
    if p < ALPHA and direction < 0:
        return FAILS
    if at_least_as_well or (p < ALPHA and direction > 0):
        return HOLDS
    return UNDECIDED


def longer_state(ours: tuple[float, float], theirs: tuple[float, float]) -> str:
    """Whether one arm's longest solved T exceeds another's, from their intervals (lo, hi) (`longest_solved`)."""
    if ours[0] > theirs[1]:
        return HOLDS
    if ours[1] <= theirs[0]:
        return FAILS
    return UNDECIDED


def longest_solved(fractions: pd.DataFrame) -> tuple[float, float, float]:
    """(value, lo, hi): the longest T at which more than LEARNS of an arm's runs are solved, and the interval from
    the Wilson intervals: lo the longest T solved for sure (interval above LEARNS), hi the longest not unsolved for
    sure (interval reaching above it); 0 where there is none. fractions: task.seq_len, count, runs."""
    def longest(mask) -> float:
        return float(fractions.loc[mask, "task.seq_len"].max()) if mask.any() else 0.0
    bounds = [stats.wilson(int(k), int(n)) for k, n in zip(fractions["count"], fractions["runs"])]
    lo, hi = (pd.Series([b[i] > LEARNS for b in bounds], index=fractions.index) for i in (0, 1))
    return longest(fractions["count"] > LEARNS * fractions["runs"]), longest(lo), longest(hi)


# the claims

@dataclass
class Measured:
    """What a claim's measure returns: the runs' arms, the result cell, the sub-claims, and its figure."""

    arms: pd.Series  # each run's arm
    result: Quote  # its numbers, printed in `result_text`
    result_text: str
    subs: list[Sub]
    complete: bool
    summary: str  # what decides the claim, a phrase for its finding below the table and its caption
    figure: tuple[Callable, tuple] | None = None  # (figure function, its data), drawn by `build`
    why: str = ""  # where the data contradict the claim, the mechanism that explains it (a finding of its own)


@dataclass(frozen=True)
class Claim:
    number: int
    key: str  # the question is classic_<key>
    claim: str
    papers: str
    paper: dict[str, str]  # the paper's setting in SETTING_KEYS (citations), and `also`
    also: str  # the rest of the paper's setting, in words
    measure: Callable[[Study, pd.DataFrame], Measured]
    title: str = ""  # the figure's title
    caption: str = ""  # what the figure shows, beyond the claim's summary

    @property
    def question(self) -> str:
        return f"classic_{self.key}"


def beats(runs: pd.DataFrame) -> pd.Series:
    """Runs whose final test loss is below BEATS of the constant predictor's (`frames.relative_loss`); a run
    without a final test loss (diverged) does not."""
    return (frames.relative_loss(runs) < BEATS).fillna(False)


def solved(runs: pd.DataFrame) -> pd.Series:
    """Runs whose final test accuracy reaches SOLVED_ACCURACY (on the task's test set)."""
    return (runs["eval/accuracy"] >= SOLVED_ACCURACY).fillna(False)


def _complete(arms: pd.Series, expected: list[str], lengths=None, runs: pd.DataFrame | None = None) -> bool:
    """Whether every expected arm (at every T of `lengths`) has runs."""
    if lengths is None:
        return all((arms == a).any() for a in expected)
    return all(((arms == a) & (runs["task.seq_len"] == T)).any() for a in expected for T in lengths)


def _fractions(quote: Quote, hits: pd.Series, arms: pd.Series, runs: pd.DataFrame, names: list[str], name: str):
    """Per T and arm: the fraction of hits, printed ('T = 100: lstm 5 of 5 (95% CI 57–100%), ...') and as a frame
    (arm, task.seq_len, count, runs)."""
    rows, parts = [], []
    for T in sorted(runs["task.seq_len"].unique()):
        items = []
        for arm in names:
            at = (arms == arm) & (runs["task.seq_len"] == T)
            k, n = int(hits[at].sum()), int(at.sum())
            rows.append({"arm": arm, "task.seq_len": T, "count": k, "runs": n})
            items.append(f"{arm} " + (quote.fraction(f"{name}_{slug(arm)}_T{fmt(T)}", k, n) if n else "no runs"))
        parts.append(f"T = {fmt(T)}: " + ", ".join(items))
    return "; ".join(parts), pd.DataFrame(rows, columns=["arm", "task.seq_len", "count", "runs"])


def fraction_figure(rates: pd.DataFrame, ylabel: str) -> Figure:
    """`figures.success_vs_length` (a line per arm against T) with the y axis naming what the fraction counts.
    rates: panel, colour, label, task.seq_len, fraction."""
    fig = figures.success_vs_length(rates)
    for ax in fig.axes:
        if ax.get_ylabel():
            ax.set_ylabel(ylabel)
    return fig


def _success_figure(table: pd.DataFrame, panel: str, ylabel: str = "fraction beating the constant predictor"):
    """(fraction_figure, its data) for a per-(arm, T) fraction table, None when no arm has runs."""
    data = table[table["runs"] > 0].assign(panel=panel, label=table["arm"], colour=table["arm"].map(_colour),
                                           fraction=table["count"] / table["runs"])
    return (fraction_figure, (data, ylabel)) if len(data) else None


def _colour(arm: str) -> str:
    """A PALETTE key for an arm's label (its cell or activation where it names one)."""
    return next((m for m in frames.MODELS if m in str(arm).lower()), "")


GATED_ARMS = {"lstm": "LSTM", "gru": "GRU", "rnn": "tanh RNN"}


def measure_gated(study: Study, runs: pd.DataFrame) -> Measured:
    arms = runs["model.cell"].map(GATED_ARMS)
    quote, hits = Quote("classic_gated_result"), beats(runs)
    names = list(GATED_ARMS.values())
    text, table = _fractions(quote, hits, arms, runs, names, "beats")
    subs = [Sub(f"{r.arm} {'learns' if r.arm != 'tanh RNN' else 'stays at the constant predictor'} at T = {fmt(r[2])}",
                fraction_state(r.count, r.runs, above=r.arm != "tanh RNN"), central=r.arm != "tanh RNN")
            for r in table.itertuples() if r.runs]
    return Measured(arms, quote, text + " beat the constant predictor", subs,
                    _complete(arms, names, runs["task.seq_len"].unique(), runs),
                    "runs beating the constant predictor per cell and T in the table's row", _success_figure(table, "adding"))


def measure_irnn(study: Study, runs: pd.DataFrame) -> Measured:
    arms = "IRNN lr " + runs["optim.lr"].map(fmt)
    quote, hits = Quote("classic_irnn_result"), beats(runs)
    names = sorted(arms.unique(), key=lambda a: -float(a.rsplit(" ", 1)[1]))
    text, table = _fractions(quote, hits, arms, runs, names, "beats")
    subs = [Sub(f"{r.arm} learns at T = {fmt(r[2])}", fraction_state(r.count, r.runs)) for r in table.itertuples() if r.runs]
    text += " beat the constant predictor"
    if "act/saturation" in runs and runs["act/saturation"].notna().any():
        dead = runs["act/saturation"].groupby(hits.map({True: "learn", False: "fail"}))
        text += "; dead units at the end, median: " + ", ".join(
            f"{quote.median(f'dead_{w}', dead.get_group(w), scale=100, suffix='%')} in the runs that {w}"
            for w in ("fail", "learn") if w in dead.groups)
    expected = [f"IRNN lr {fmt(lr)}" for lr in (0.01, 0.001)]
    return Measured(arms, quote, text, subs, _complete(arms, expected, runs["task.seq_len"].unique(), runs),
                    "runs beating the constant predictor per learning rate and T, and the dead units that explain a failure",
                    _success_figure(table, "adding, IRNN"))


ORDER_ARMS = ("SGD", "SGD+clip", "SGD+clip+Omega")


def _order_arm(row) -> str:
    if row["clip.mode"] == "none":
        return ORDER_ARMS[0] if row["train.omega_alpha"] == 0 else "SGD+Omega"
    return ORDER_ARMS[2] if row["train.omega_alpha"] > 0 else ORDER_ARMS[1]


class SpanQuote(Quote):
    """A Quote that also prints a value with an interval of its own making (the longest T solved)."""

    def span(self, name: str, value: float, lo: float, hi: float, printed: str) -> str:
        return self._add(name, value, (lo, hi), None, printed)


def _T_text(T: float) -> str:
    return "none" if T == 0 else fmt(T)


def measure_order(study: Study, runs: pd.DataFrame) -> Measured:
    arms = runs.apply(_order_arm, axis=1)
    quote = SpanQuote("classic_order_result")
    text, table = _fractions(quote, solved(runs), arms, runs, list(ORDER_ARMS), "solved")
    longest, parts = {}, []
    for arm in ORDER_ARMS:
        part = table[(table["arm"] == arm) & (table["runs"] > 0)]
        if len(part):
            value, lo, hi = longest[arm] = longest_solved(part)
            parts.append(f"{arm} " + quote.span(f"longest_{slug(arm)}", value, lo, hi,
                                                f"{_T_text(value)} (95% CI {_T_text(lo)}–{_T_text(hi)})"))
    subs = [Sub(f"the longest T solved grows from {a} to {b}", longer_state(longest[b][1:], longest[a][1:]))
            for a, b in zip(ORDER_ARMS, ORDER_ARMS[1:]) if a in longest and b in longest]
    result = (f"longest T solved (test accuracy ≥ {fmt(SOLVED_ACCURACY)} in more than {fmt(LEARNS)} of the runs): "
              + ", ".join(parts) + f"; solved: {text}")
    return Measured(arms, quote, result, subs, _complete(arms, list(ORDER_ARMS), runs["task.seq_len"].unique(), runs),
                    "the longest T solved per arm", _success_figure(table, "temporal order, smart tanh", "fraction of runs solved"))


def _copy_arm(row) -> str:
    if row["model.cell"] == "lstm":
        return "LSTM"
    if row["model.activation"] == "linear" and row["model.init"] == "orthogonal":
        return "linear RNN, orthogonal W"
    return f"{row['model.activation']} RNN"


COPY_ARMS = ("LSTM", "tanh RNN", "linear RNN, orthogonal W")


def measure_copy(study: Study, runs: pd.DataFrame) -> Measured:
    arms = runs.apply(_copy_arm, axis=1)
    ratio, quote, subs, parts = frames.relative_loss(runs), Quote("classic_copy_result"), [], []
    for arm in COPY_ARMS:
        r = ratio[arms == arm]
        if r.empty:
            parts.append(f"{arm} no runs")
            continue
        below = arm == COPY_ARMS[2]
        hit = (r < BEATS) if below else r.between(*AT_BASELINE)
        k, n = int(hit.sum()), len(r)
        parts.append(f"{arm} {'below it' if below else 'at it'} in " + quote.fraction(slug(arm), k, n)
                     + f" (median {quote.median(f'median_{slug(arm)}', r)}×)")
        subs.append(Sub(f"{arm} {'goes below' if below else 'sits at'} the baseline", fraction_state(k, n), central=below))
    result = (f"final test loss relative to the memoryless baseline 10 ln 8/(T+20) (at it: {fmt(AT_BASELINE[0], 2)}–"
              f"{fmt(AT_BASELINE[1], 2)}×; below it: under {fmt(BEATS)}×): " + "; ".join(parts))
    labelled = runs.assign(label=arms, colour=arms.map(_colour), relative_loss=ratio)
    return Measured(arms, quote, result, subs, _complete(arms, list(COPY_ARMS)),
                    "the final test loss relative to the memoryless baseline per model",
                    (figures.remedies, frames.remedy_curves(labelled)))


def _bn_arm(row) -> str:
    return "plain RNN" if row["model.norm"] == "none" else f"BN gain {fmt(row['model.bn_gain'])}"


BN_ARMS = ("plain RNN", "BN gain 0.1", "BN gain 1")


def kept_through_time(grad_norms: pd.DataFrame) -> pd.Series:
    """run_id -> log10 ||dL/ds_1|| / ||dL/ds_T|| at the run's first recorded step (`frames.at_initialization`), the
    gradient kept through time as the quick report's remedies_grad_through_time finding measures it."""
    rows = frames.at_initialization(grad_norms)
    first = rows[rows["distance"] == rows.groupby("run_id")["distance"].transform("max")].set_index("run_id")["ds_norm"]
    last = rows[rows["distance"] == 0].set_index("run_id")["ds_norm"]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(first / last.reindex(first.index)).replace([np.inf, -np.inf], np.nan)


def measure_bn(study: Study, runs: pd.DataFrame) -> Measured:
    arms = runs.apply(_bn_arm, axis=1)
    quote, hits, subs = Quote("classic_bn_result"), beats(runs), []
    norms = study.grad_norms(runs)
    kept = runs["run_id"].map(kept_through_time(norms))
    small, unit = (kept[arms == a].dropna() for a in BN_ARMS[1:])
    result = ("log10 ||dL/ds_1||/||dL/ds_T|| at step 0, median: "
              + ", ".join(f"{a} {quote.median(f'kept_{slug(a)}', kept[arms == a], sign=True)}" for a in BN_ARMS))
    if len(small) and len(unit):
        result += f" (gain 0.1 against 1: {quote.mann_whitney('kept_p', small, unit)})"
        subs.append(Sub("gain 0.1 keeps more of the gradient than gain 1", central=True, state=comparison_state(
            stats.mann_whitney(small, unit), small.median() - unit.median())))
    counts = {a: (int(hits[arms == a].sum()), int((arms == a).sum())) for a in BN_ARMS}
    result += "; beat the constant predictor: " + ", ".join(
        f"{a} " + (quote.fraction(f"beats_{slug(a)}", *counts[a]) if counts[a][1] else "no runs") for a in BN_ARMS)
    (k1, n1), (k2, n2) = counts[BN_ARMS[1]], counts[BN_ARMS[0]]
    if n1 and n2:
        result += f" (gain 0.1 against plain: {quote.fisher('beats_p', k1, n1, k2, n2)})"
        subs.append(Sub("gain 0.1 trains at least as well as the plain RNN", comparison_state(
            stats.fisher(k1, n1, k2, n2), k1 / n1 - k2 / n2, at_least_as_well=True)))
    labelled = runs.assign(label=arms, colour=np.where(arms == BN_ARMS[0], "tanh", "batch"))
    rows = frames.remedy_init_rows(norms, labelled)
    figure = ((figures.remedies_grad_through_time, (frames.remedy_init_curves(rows), frames.task_lengths(rows), labelled))
              if len(rows) else None)
    return Measured(arms, quote, result, subs, _complete(arms, list(BN_ARMS)),
                    "the gradient kept through time at initialization, gain 0.1 against 1, and training against the plain RNN",
                    figure)


def measure_truncation(study: Study, runs: pd.DataFrame) -> Measured:
    """Per band of k (which relevant inputs the window reaches, `band`): the median cosine to the full gradient
    against the band that reaches them all (Mann-Whitney), and the fraction that learns against full BPTT
    (Fisher); each band that misses the farthest input is a central sub-claim: it learns in fewer than half."""
    arms, reach, n_inputs = frames.truncation_bands(runs)
    data = frames.with_trunc_cosine(runs, study.history(runs, "grad/trunc_cosine"))
    cosine, hits = data["trunc_cosine"], beats(runs)
    order = sorted((a for a in reach if a != FULL), key=lambda a: (reach[a], a)) + [FULL] * (FULL in reach)
    whole = next((a for a in order if a != FULL and reach[a][0] == n_inputs), None)  # the band reaching every input
    quote, subs, parts = Quote("classic_truncation_result"), [], []
    distances = frames.relevant_of(runs).iloc[0]
    named = ", ".join(f"{name} {near}–{far}" if near != far else f"{name} {near}"
                      for name, (near, far) in zip(frames.relevant_names(len(distances)), distances))
    full_k, full_n = int(hits[arms == FULL].sum()), int((arms == FULL).sum())
    for arm in order:
        at = arms == arm
        k, n = int(hits[at].sum()), int(at.sum())
        text = f"{arm}" + (f" (k = {_values(runs[at].rename(columns={'bptt.truncation': 'k'}), 'k')})" if arm != FULL else "")
        short = arm != FULL and reach[arm][0] < n_inputs  # the window misses the farthest input somewhere
        if arm != FULL and cosine[at].notna().any():
            text += f": cosine {quote.median(f'cosine_{slug(arm)}', cosine[at])}"
            if short and whole is not None:
                band_cos, whole_cos = cosine[at].dropna(), cosine[arms == whole].dropna()
                text += f" ({quote.mann_whitney(f'cosine_p_{slug(arm)}', band_cos, whole_cos)} against {whole})"
                subs.append(Sub(f"{arm} lowers the cosine", comparison_state(
                    stats.mann_whitney(band_cos, whole_cos), whole_cos.median() - band_cos.median())))
        text += f"{',' if ': cosine' in text else ''} learns in {quote.fraction(f'beats_{slug(arm)}', k, n)}"
        if short:
            if full_n:
                text += f" ({quote.fisher(f'beats_p_{slug(arm)}', k, n, full_k, full_n)} against full BPTT)"
            subs.append(Sub(f"{arm} prevents learning", fraction_state(k, n, above=False), central=True))
        parts.append(text)
    if full_n:
        subs.append(Sub("full BPTT learns reliably", fraction_state(full_k, full_n)))
    never = [a for a in order if a != FULL and reach[a][1] < n_inputs and hits[arms == a].mean() > LEARNS]
    farthest = frames.relevant_names(n_inputs)[-1]
    why = (f"{' and '.join(never)} (k = {', '.join(_values(runs[arms == a].rename(columns={'bptt.truncation': 'k'}), 'k') for a in never)}) "
           f"never reaches {farthest} in its gradient, yet learns: the forward state carries {farthest}'s symbol into the "
           "window, and W, trained inside it, acts at every step; truncation lowers the cosine, not what can be learned"
           if never else "")
    missing_far = [a for a in order if a != FULL and reach[a][0] < n_inputs]
    result = (f"relevant symbols at distances {named} from the loss (a window k reaches a symbol at distance d when "
              f"k ≥ d + 1); cosine: the median to the full gradient; learns: beats the constant predictor; "
              + "; ".join(parts))
    return Measured(arms, quote, result, subs, bool(full_n and missing_far and whole is not None),
                    "learning and the cosine to the full gradient per band of k, by the relevant symbols its window reaches",
                    (figures.truncation, (*frames.truncation_curves(data), data)), why)


CLAIMS = (
    Claim(1, "gated", "LSTM and GRU learn adding at T = 100 and 200 where the tanh RNN stays at the constant predictor",
          "Hochreiter & Schmidhuber 1997; Le et al. 2015", LE_2015,
          "Le et al.'s LSTM (Hochreiter & Schmidhuber 1997: online gradient, lr 0.5, 2 cell blocks)", measure_gated, "Gated cells against the tanh RNN on adding",
          "Fraction of runs beating the constant predictor against T, a line per cell."),
    Claim(2, "irnn", "the IRNN learns adding at T ≥ 100; where it fails, the dead-unit fraction says why",
          "Le et al. 2015", {**LE_2015, "lr": "0.001, 0.01"},
          "W = I, U and V ~ N(0, 1e-3²), relu; the IRNN matched the LSTM", measure_irnn, "IRNN on adding",
          "Fraction of runs beating the constant predictor against T, a line per learning rate."),
    Claim(3, "order", "on temporal order the longest T solved grows from SGD to SGD + clipping to SGD + clipping + Omega",
          "Pascanu et al. 2013 (Fig. 7)",
          {**PASCANU_2013, "clip": "norm 1", "seeds": "5 per arm and T"},
          "smart tanh init (W sparse, 15 nonzeros per row, ρ 0.95), Omega α = 2, lengths sampled in [50, 200], "
          "success: under 1% errors on 10,000 fresh sequences", measure_order, "Temporal order: solved against T",
          "Fraction of runs solved against T, a line per arm, as in Pascanu et al. (2013) Fig. 7."),
    Claim(4, "copy", "on copy at T = 100 the LSTM and the tanh RNN sit at the memoryless baseline 10 ln 8/(T+20); "
          "a linear RNN with orthogonal W goes below it", "Arjovsky et al. 2016; Henaff et al. 2016",
          {"task": "copy", "T": "100", "H": "100", "optimizer": "RMSProp", "lr": "0.001", "clip": "value 1",
           "updates": "2e4", "batch": "20"},
          "Arjovsky et al.'s LSTM (T = 100–500); Henaff et al. give the orthogonal linear RNN no budget", measure_copy,
          "Copy: final loss against the memoryless baseline", "Top: final test loss relative to the memoryless baseline "
          "(median, with the interquartile range where an arm has several runs); bottom: runs solved (accuracy ≥ 0.99 on the recalled symbols)."),
    Claim(5, "bn", "recurrent batch norm with gain 0.1 keeps the gradient through time at initialization where gain 1 "
          "does not, and trains at least as well as the plain RNN", "Cooijmans et al. 2016",
          {"task": "sequential MNIST, character LM"},
          "gain initialized at 0.1, x U and s W normalized apart, population statistics at test per time step",
          measure_bn, "Batch norm: the gradient through time at initialization",
          "||dL/ds_t|| at the first training step against the distance from the last step, median over runs (the "
          "interquartile band where an arm has several runs)."),
    Claim(6, "truncation", "truncation below the dependency distance lowers the cosine to the full gradient and prevents "
          "learning where full BPTT learns reliably", "Tallec & Ollivier 2017; Williams & Peng 1990", {},
          "no fixed setting: truncated BPTT is biased, and the bias matters when dependencies exceed k", measure_truncation,
          "Truncation: cosine to the full gradient and learning against k", "Left: cosine between the truncated and the "
          "full gradient (each run's median over its diagnostic steps); middle: fraction solved; right: final test loss "
          "relative to the constant predictor; dashed: full BPTT; dotted: the dependency distance (tag task.dependency), "
          "one step short of the window k that reaches it."),
)


# the report

@dataclass
class Row:
    """One row of the table: each cell the text of a finding (so findings.json holds every number it prints)."""

    claim: Claim
    cells: dict[str, Finding]  # column -> finding, for the columns of COLUMNS after '#'
    verdict: str = NO_DATA


COLUMNS = ("#", "claim", "paper", "the paper's setting", "our setting", "result (95% CI)", "sub-claims", "verdict")


def cells(claim: Claim, ours: str, result: Finding | None, subs: list[Sub], decided: str) -> dict[str, Finding]:
    """A row's cells (but '#') as findings, id classic_<key>_<column>; the verdict in bold."""
    q = claim.question
    paper = setting_text(claim.paper) + ("; " if claim.paper else "") + claim.also
    states = "; ".join(f"{s.text}{' (central)' if s.central else ''}: {s.state}" for s in subs) or "none"
    return {"claim": Finding(f"{q}_claim", claim.claim), "paper": Finding(f"{q}_papers", claim.papers),
            "the paper's setting": Finding(f"{q}_paper_setting", paper), "our setting": Finding(f"{q}_setting", ours),
            "result (95% CI)": result or Finding(f"{q}_result", "no runs"), "sub-claims": Finding(f"{q}_subclaims", states),
            "verdict": Finding(f"{q}_verdict", decided)}


@dataclass
class ClassicReport(Report):
    rows: list[Row] = field(default_factory=list)
    summaries: list[Finding] = field(default_factory=list)

    def markdown(self, figure_dir: str = "figures") -> str:
        lines = ["# rnngrad classic reproductions", "", self.source, "", "## Reproduction table", "", VERDICT_RULE, ""]
        table = [[str(r.claim.number), *(markdown.escape(r.cells[c].text) for c in COLUMNS[1:-1]),
                  f"**{markdown.escape(r.cells['verdict'].text)}**"] for r in self.rows]
        lines += [markdown.table(table, list(COLUMNS), raw=True), "", "## Findings", ""]
        lines += [f"- {f.text}" for f in self.summaries]  # built from the claims' constants and numbers, not from a store
        lines += ["", "## Figures", ""]
        for number, part in enumerate(self.parts, start=1):
            lines += [f"### {number}. {part.title} (`{part.name}`)", ""]
            lines += ([f"![{part.title}]({figure_dir}/{part.name}.png)", "", f"[PDF]({figure_dir}/{part.name}.pdf). {part.caption}", ""]
                      if part.figure is not None else [f"Not drawn: {part.missing}", ""])
        if self.notes or self.errors:
            lines += ["## Missing or partial data", ""] + [f"- {n}" for n in self.errors + self.notes] + [""]
        runs = "No runs." if self.table.empty else markdown.table(self.table, align="-" + "r" * (len(self.table.columns) - 1))
        return "\n".join(lines + ["## Runs per question", "", runs, ""])


def _n_text(sizes: pd.Series) -> str:
    """'1 run', '5 runs' or '3–5 runs' from the number of runs per arm and T."""
    n = fmt(sizes.min()) if sizes.min() == sizes.max() else f"{fmt(sizes.min())}–{fmt(sizes.max())}"
    return f"{n} run{'' if sizes.max() == 1 else 's'}"


def row(claim: Claim, study: Study, runs: pd.DataFrame) -> tuple[Row, list[Finding], Part | None]:
    """The claim's row, its findings (the verdict's, and the mechanism's where the measure names one), and its
    figure (None when it has none)."""
    mine = runs[runs["question"] == claim.question] if "question" in runs else runs.iloc[:0]
    if mine.empty:
        text = f"Claim {claim.number} ({claim.key}): {NO_DATA}, no finished trained runs of question={claim.question}."
        return Row(claim, cells(claim, "no runs", None, [], NO_DATA)), [Finding(f"{claim.question}_finding", text)], None
    # a metric or tag no run logged (e.g. eval/loss where every run diverged) is a column of NaN
    mine = mine.reindex(columns=[*mine.columns, *(k for k in OUTCOME_COLUMNS if k not in mine)])
    measured = claim.measure(study, mine)
    ours = our_setting(mine, measured.arms)
    decided = verdict(measured.subs, measured.complete)
    part = None
    if measured.figure is not None:
        fn, data = measured.figure
        sizes = mine.groupby([measured.arms, mine["task.seq_len"]]).size()
        part = Part(claim.question, claim.title or claim.claim, fn(*data),
                    f"Claim {claim.number}: {measured.summary}; n = {_n_text(sizes)} per arm and T. {claim.caption}")
    named = f" (figure `{part.name}`)" if part is not None else ""
    theirs = claim.paper.get("updates", ours["updates"])
    deviation = f" within at most {ours['updates']} updates" + (f" (the paper: {theirs})" if theirs != ours["updates"] else "")
    held = sum(s.state == HOLDS for s in measured.subs)
    text = (f"Claim {claim.number} ({claim.key}): {decided}{deviation}; {held} of {len(measured.subs)} sub-claims hold, "
            f"from {measured.summary}{named}.")
    row_cells = cells(claim, setting_text(ours, claim.paper), measured.result.finding(measured.result_text), measured.subs, decided)
    found = [Finding(f"{claim.question}_finding", text)]
    if measured.why:
        found.append(Finding(f"{claim.question}_why", f"Claim {claim.number} ({claim.key}): {measured.why}{named}."))
    return Row(claim, row_cells, decided), found, part


def build(study: Study) -> ClassicReport:
    """The classic report from the study's runs whose question starts with `classic_`."""
    study = study.only(frames.is_classic(study.runs))
    built = (f"Built {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from experiment {markdown.code(study.experiment)} at "
             f"{markdown.code(store.describe(study.uri))}: {len(study.runs)} runs of the classic questions "
             f"({markdown.code(study.command(PRESET))}).")
    report = ClassicReport(built, findings=[Finding("classic_verdict_rule", VERDICT_RULE)])
    ended = frames.ended(study.runs)
    used = frames.trained(ended)
    for claim in CLAIMS:
        try:
            row_, found, part = row(claim, study, used)
        except Exception as err:  # a bug in one claim must not cost the rest of the report
            traceback.print_exc()
            why = markdown.escape(f"{type(err).__name__}: {err}")
            report.errors.append(f"{claim.question}: the row could not be computed ({why}); see the traceback on stderr.")
            row_ = Row(claim, cells(claim, "error", None, [], "error"), "error")
            found, part = [Finding(f"{claim.question}_finding", f"Claim {claim.number} ({claim.key}): error ({why}).")], None
        report.rows.append(row_)
        report.summaries += found
        report.findings += [*row_.cells.values(), *found]
        if part is not None:
            report.parts.append(part)
    report.notes = notes(study, ended, [c.question for c in CLAIMS], PRESET)
    report.table = runs_table(study.runs)
    return report
