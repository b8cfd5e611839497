"""The report's findings: sentences computed from frames, never typed by hand.

Each function takes the frames of one section (`rnngrad.report.frames`; the docstring names the columns it
reads) and `figure`, the name of the figure the sentence points to, and returns a list of `Finding`s: none
when the data cannot support the sentence, one per activation or task where the sentence is per group. No
function has a side effect; `rnngrad.report.build` collects them in the order of the sections.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rnngrad.report import frames, stats
from rnngrad.report.frames import BEATS, FLOAT32, GAMMA, LAST_STEP_LOSS_TASKS, SOLVED_ACCURACY
from rnngrad.report.text import count_text, fmt, ratio_list, ratio_text, signed

AGREE = 0.05  # nats per step: a measured decay rate this close to a predicted one counts as agreeing
PLAIN_REMEDY = "tanh, gaussian init"  # the plain RNN the remedies are set against (conf/experiment/remedies.yaml)
SAME_NORM = 1e-3  # a relative difference between the float32 and float64 norms below this counts as agreeing


@dataclass(frozen=True)
class Number:
    """One number a finding prints: `value` (a fraction as k/n), its 95% `interval` (None when it has none), the
    sample size `n` behind it (None when not a count of runs) and `printed`, the exact text the sentence holds."""

    id: str
    value: float
    interval: tuple[float, float] | None
    n: int | None
    printed: str

    def record(self) -> dict:
        return {"id": self.id, "value": _plain(self.value), "interval": None if self.interval is None else
                [_plain(v) for v in self.interval], "n": self.n, "printed": self.printed}


def _plain(x):
    """A float for json: NaN as None."""
    x = float(x)
    return None if math.isnan(x) else x


@dataclass(frozen=True)
class Finding:
    """One sentence of the report's findings: `id` names the claim, `numbers` holds the values it quotes (free
    form), `quoted` the numbers its text prints through a `Quote`, each with its interval."""

    id: str
    text: str
    numbers: dict = field(default_factory=dict)
    quoted: tuple[Number, ...] = ()

    def record(self) -> dict:
        """The finding as findings.json holds it: every number its text prints (`printed_numbers`) and the text."""
        return {"id": self.id, "text": self.text, "numbers": [n.record() for n in printed_numbers(self)]}


# a number as a sentence prints it: not part of a word (float32, x_t), optionally signed, decimal or exponent
NUMBER = re.compile(r"(?<![\w.^])[-+−]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w])")
CODE_SPAN = re.compile(r"`[^`]*`")


def printed_numbers(finding: Finding) -> list[Number]:
    """Every number the finding's text prints: its `quoted` ones, then each further number of the text (outside
    code spans and the quoted fragments) in order, id '<finding id>.<i>', without interval or n, its value as
    printed (compared as printed, `rnngrad.report.compare`)."""
    rest = CODE_SPAN.sub(" ", finding.text)
    for number in finding.quoted:
        rest = rest.replace(number.printed, " ", 1)
    found = [Number(f"{finding.id}.{i}", float(m.group().replace("−", "-")), None, None, m.group())
             for i, m in enumerate(NUMBER.finditer(rest))]
    return [*finding.quoted, *found]


class Quote:
    """The numbers of one finding as its text prints them: each method returns the text to put in the sentence
    and records the `Number` behind it, so that findings.json and the sentence come from the same values."""

    def __init__(self, finding_id: str):
        self.id, self.numbers = finding_id, []

    def _add(self, name: str, value, interval, n, printed: str) -> str:
        self.numbers.append(Number(f"{self.id}.{name}", float(value), interval, n, printed))
        return printed

    def fraction(self, name: str, k: int, n: int) -> str:
        """'2 of 5 (95% CI 12–77%)': k of n with its Wilson interval, as whole percents."""
        k, n = int(k), int(n)
        if n == 0:
            return "0 of 0"
        lo, hi = stats.wilson(k, n)
        return self._add(name, k / n, (lo, hi), n, f"{k} of {n} (95% CI {100 * lo:.0f}–{100 * hi:.0f}%)")

    def fisher(self, name: str, k1: int, n1: int, k2: int, n2: int) -> str:
        """'p = 0.4, Fisher's exact test' for k1 of n1 against k2 of n2."""
        p = stats.fisher(k1, n1, k2, n2)
        return self._add(name, p, None, int(n1 + n2), f"{stats.p_text(p)}, Fisher's exact test")

    def mann_whitney(self, name: str, a, b, named: bool = True) -> str:
        """'p = 0.4, Mann-Whitney U test' for two samples (NaN left out); 'p = 0.4' with named=False (the
        sentence names the test once for several)."""
        a, b = pd.Series(a, dtype=float).dropna(), pd.Series(b, dtype=float).dropna()
        p = stats.mann_whitney(a, b)
        return self._add(name, p, None, len(a) + len(b), stats.p_text(p) + (", Mann-Whitney U test" if named else ""))

    def finding(self, text: str, numbers: dict | None = None) -> Finding:
        missing = [n.printed for n in self.numbers if n.printed not in text]
        if missing:
            raise AssertionError(f"finding {self.id}: quoted numbers not in its text: {missing}")
        return Finding(self.id, text, numbers or {}, tuple(self.numbers))


# gradients at initialization

def pascanu_bound(rows: pd.DataFrame, figure: str) -> list[Finding]:
    """Whether ||dL/ds_t|| <= ||dL/ds_T|| (gamma sigma_max)^(T-t) held at every t, on the tasks whose loss is at the
    last step only, and the median ratio measured/bound at the farthest step per init.

    rows: `frames.through_time`: run_id, t, ds_norm, bound, task.name, model.init, spectral/sigma_max, spectral/radius.
    """
    data = rows[rows["task.name"].isin(LAST_STEP_LOSS_TASKS)].dropna(subset=["bound"])
    if data.empty:
        return []
    T = data.groupby("run_id")["t"].transform("max")
    last = data[data["t"] == T].set_index("run_id")["ds_norm"]
    ratio = data["ds_norm"] / (data["run_id"].map(last) * data["bound"])
    held = ratio.groupby(data["run_id"]).max() <= 1 + 1e-9
    farthest = data.assign(ratio=ratio)[data["t"] == 1]
    farthest = farthest[farthest["ratio"] > 0]
    gaps = {init: (g["ratio"].median(), (g["spectral/sigma_max"] / g["spectral/radius"]).median())
            for init, g in farthest.groupby("model.init")}
    verdict = "held" if held.all() else "was exceeded, which the theory rules out,"
    quote = Quote("pascanu_bound")
    text = (f"The Pascanu et al. bound ||dL/ds_t|| ≤ ||dL/ds_T|| (γσ_max)^(T−t) {verdict} at every t in "
            f"{quote.fraction('held', int(held.sum()), len(held))} runs at initialization"
            + ("" if held.all() else f" (exceeded in {len(held) - int(held.sum())})")
            + ". At the farthest step the median ratio measured/bound is "
            + ", ".join(f"{init} W 10^{fmt(np.log10(r), 2)} (median σ_max/ρ = {fmt(s, 3)})" for init, (r, s) in gaps.items())
            + f" (figure `{figure}`).")
    return [quote.finding(text, {"held": int(held.sum()), "runs": len(held), "farthest_ratio": gaps})]


def linear_decay(runs: pd.DataFrame, figure: str) -> list[Finding]:
    """For the linear RNN, the largest |measured decay rate - log rho|. runs: `frames.decay_runs`."""
    linear = runs[runs["model.activation"] == "linear"]
    if linear.empty:
        return []
    dev = linear["excess"].abs().max()
    verdict = "as the theory of the linear RNN predicts" if dev < AGREE else "more than the theory of the linear RNN allows"
    text = (f"Linear RNN: the measured decay rate differs from log ρ by at most {fmt(dev, 2)} nats per step over "
            f"{len(linear)} runs, {verdict} (figure `{figure}`).")
    return [Finding("decay_linear", text, {"max_deviation": dev, "runs": len(linear)})]


def decay_per_activation(runs: pd.DataFrame, curves: pd.DataFrame, figure: str) -> list[Finding]:
    """Per nonlinear activation of GAMMA: `_decay_against_theory`, then `_decay_turns_positive`.

    runs: `frames.decay_runs`; curves: `frames.decay_curves` of those runs.
    """
    out = []
    for act in [a for a in frames.ordered(runs["model.activation"]) if a != "linear" and a in GAMMA]:
        out += _decay_against_theory(runs[runs["model.activation"] == act], act, figure)
        out += _decay_turns_positive(curves[curves["model.activation"] == act], act, figure)
    return out


def _decay_against_theory(part: pd.DataFrame, act: str, figure: str) -> list[Finding]:
    """How many runs decay at least as fast as log(gamma rho), and the measured against the predicted rate at the
    largest rho (with the saturation that explains a faster decay)."""
    below = int((part["excess"] <= AGREE).sum())
    top = part[part["model.spectral_radius"] == part["model.spectral_radius"].max()]
    if top.empty:  # no grid over rho: the run with the largest measured one
        top = part.nlargest(1, "spectral/radius")
    measured, theory = top["grad/decay_rate"].median(), top["theory"].median()
    quote = Quote(f"decay_theory_{act}")
    text = (f"{act}: the measured decay rate lies at or below log(γρ) (γ = {fmt(GAMMA[act])}) in {quote.fraction('at_or_below', below, len(part))} runs; "
            f"at the largest ρ = {fmt(top['spectral/radius'].median())} it is {signed(measured)} against {signed(theory)} predicted")
    if measured < theory - AGREE:
        text += (f": f'(a) < γ away from a = 0 (and {100 * top['act/saturation'].median():.0f}% of units saturated, "
                 "median), so each step contracts the gradient more than log(γρ) assumes")
    numbers = {"at_or_below": below, "runs": len(part), "measured": measured, "theory": theory}
    return [quote.finding(text + f" (figure `{figure}`).", numbers)]


def _decay_turns_positive(curves: pd.DataFrame, act: str, figure: str) -> list[Finding]:
    """Where the median decay rate changes sign as rho grows along the grid, per init, against 1/gamma.
    curves: one activation's `frames.decay_curves` (the init's own scale, NaN in the grid, left out)."""
    texts, crossings = [], {}
    for init, curve in curves.dropna(subset=["model.spectral_radius"]).groupby("model.init"):
        rho, rate = curve["radius"].to_numpy(), curve["median"].to_numpy()
        if len(rho) < 2:
            continue
        change = np.nonzero((rate[:-1] < 0) & (rate[1:] >= 0))[0]
        if len(change):
            i = change[0]
            x = np.log(rho[i]) + (np.log(rho[i + 1]) - np.log(rho[i])) * (-rate[i]) / (rate[i + 1] - rate[i])
            crossings[init] = np.exp(x)
            texts.append(f"at ρ ≈ {fmt(np.exp(x), 2)} for {init} W")
        elif (rate < 0).all():
            texts.append(f"nowhere up to ρ = {fmt(rho[-1])} for {init} W (still {signed(rate[-1])} there)")
        else:
            texts.append(f"already below the smallest ρ = {fmt(rho[0])} for {init} W ({signed(rate[0])} there)")
    if not texts:
        return []
    text = (f"{act}, where the measured decay rate turns positive (gradients stop vanishing): " + "; ".join(texts)
            + f"; the theory line log(γρ) does so at ρ = 1/γ = {fmt(1 / GAMMA[act])} (figure `{figure}`).")
    return [Finding(f"decay_crossing_{act}", text, {"crossing": crossings, "theory": 1 / GAMMA[act]})]


def decay_tracks_lyapunov(runs: pd.DataFrame, figure: str) -> list[Finding]:
    """The correlation and distance between the decay rate and the top Lyapunov exponent. runs: `frames.decay_runs`."""
    both = runs.dropna(subset=["lyap/top"])
    if len(both) < 2:
        return []
    diff = (both["grad/decay_rate"] - both["lyap/top"]).abs()
    r = np.corrcoef(both["grad/decay_rate"], both["lyap/top"])[0, 1]
    text = (f"The measured decay rate tracks the top Lyapunov exponent: correlation {fmt(r, 4)}, median |difference| "
            f"{fmt(diff.median(), 2)} and at most {fmt(diff.max(), 2)} nats per step over {len(both)} runs (figure `{figure}`, right).")
    return [Finding("decay_lyapunov", text, {"correlation": r, "median_difference": diff.median(), "runs": len(both)})]


# float32 against float64

def _precision_config(act: str, rho: float) -> str:
    return f"{act}, " + (f"ρ = {fmt(rho)}" if not math.isnan(rho) else "ρ of the init's own scale")


def float32_underflow(curves: pd.DataFrame, setting: str, figure: str) -> list[Finding]:
    """Per activation and spectral radius with runs in both precisions: the distance from the loss at which float32's
    median ||dL/ds_t|| first is exactly 0, and float64's median there.

    curves: `frames.precision_curves`. setting: what the runs share, e.g. 'adding, T = 200'.
    """
    lost, zeros = [], {}
    for act, rho, float32, float64 in frames.precision_pairs(curves):
        config = _precision_config(act, rho)
        zero, zero64 = frames.first_zero(float32), frames.first_zero(float64)
        zeros[config] = zero
        if math.isnan(zero):
            lost.append(f"{config}: float32 never reports 0 over {fmt(float32.index.max())} steps back, its smallest "
                        f"norm {fmt(float32.min(), 2)}")
        elif float64.get(zero, 0.0) > 0:
            lost.append(f"{config}: float32 first reports exactly 0 at T − t = {fmt(zero)}, where float64 still measures "
                        f"{fmt(float64[zero], 2)} ("
                        + (f"float64 itself first reports 0 at T − t = {fmt(zero64)})" if not math.isnan(zero64) else
                           f"float64 stays positive to T − t = {fmt(float64.index.max())}, down to {fmt(float64.min(), 2)})"))
        else:
            lost.append(f"{config}: float32 first reports 0 at T − t = {fmt(zero)}, where float64 reports 0 as well")
    if not lost:
        return []
    text = (f"Where float32 loses a vanishing gradient that float64 still measures, ||dL/ds_t|| at initialization ({setting}, "
            f"the same weights in both precisions, median over runs; float32's smallest subnormal is "
            f"{fmt(FLOAT32.smallest_subnormal, 2)}): " + "; ".join(lost) + f" (figure `{figure}`).")
    return [Finding("float32_underflow", text, {"first_zero": zeros})]


def float32_agreement(curves: pd.DataFrame, figure: str) -> list[Finding]:
    """Per activation and spectral radius with runs in both precisions: the largest relative difference between the
    median norms where both are positive, while float32's is normal and below that (subnormal).
    curves: `frames.precision_curves`."""
    agree, worst, normal_ok, subnormal_ok = [], {}, True, True
    for act, rho, float32, float64 in frames.precision_pairs(curves):
        config = _precision_config(act, rho)
        both = pd.DataFrame({"float32": float32, "float64": float64}).dropna()
        both = both[(both["float32"] > 0) & (both["float64"] > 0)]
        relative = (both["float32"] - both["float64"]).abs() / both["float64"]
        normal = both["float32"] >= FLOAT32.tiny
        item = f"{config}: {ratio_text(relative[normal].max())} at the {int(normal.sum())} distances where float32's norm is normal"
        if (~normal).any():
            item += f", {ratio_text(relative[~normal].max())} at the {int((~normal).sum())} where it is subnormal"
        agree.append(item)
        worst[config] = (relative[normal].max(), relative[~normal].max())
        normal_ok &= not (relative[normal] >= SAME_NORM).any()
        subnormal_ok &= not (relative[~normal] >= SAME_NORM).any()
    if not agree:
        return []
    if normal_ok and subnormal_ok:
        verdict = "float32 agrees with float64 wherever both are positive"
    elif normal_ok:
        verdict = "float32 agrees with float64 while its norm is normal and loses precision in the subnormal range before it reaches 0"
    else:
        verdict = "float32 differs from float64 even where its norm is normal"
    text = ("Where both precisions report a positive ||dL/ds_t||, the largest relative difference |float32 − float64| / float64 "
            f"(float32's smallest normal number is {fmt(FLOAT32.tiny, 2)}, its ε {fmt(FLOAT32.eps, 2)}): "
            + "; ".join(agree) + f"; so, counting a relative difference below {fmt(SAME_NORM)} as agreement, {verdict} "
            f"(figure `{figure}`).")
    return [Finding("float32_agreement", text, {"largest_relative_difference": worst})]


# training: success, loss, clipping, truncation, saturation

def solved_by_length(runs: pd.DataFrame, figure: str) -> list[Finding]:
    """The fraction of runs solved per sequence length, pooled. runs: task.seq_len, outcome."""
    by_T = (runs["outcome"] == "solved").groupby(runs["task.seq_len"]).agg(["sum", "size"])
    quote = Quote("solved_by_length")
    text = ("Runs solved by sequence length, pooled over every configuration: "
            + ", ".join(f"T = {T}: {quote.fraction(f'T{T}', r['sum'], r['size'])}" for T, r in by_T.iterrows())
            + f" (figure `{figure}`).")
    return [quote.finding(text, {"solved": by_T["sum"].to_dict(), "runs": by_T["size"].to_dict()})]


def clipping_and_success(runs: pd.DataFrame, figure: str) -> list[Finding]:
    """Runs solved with and without gradient clipping, against Pascanu et al.'s claim. runs: clip.mode, outcome."""
    solved, clipped = runs["outcome"] == "solved", runs["clip.mode"] != "none"
    if not (clipped.any() and (~clipped).any()):
        return []
    with_, without = solved[clipped], solved[~clipped]
    k1, n1, k2, n2 = int(with_.sum()), len(with_), int(without.sum()), len(without)
    quote = Quote("clipping_success")
    text = (f"With gradient clipping {quote.fraction('clipped', k1, n1)} runs solved the task, without "
            f"{quote.fraction('unclipped', k2, n2)} ({quote.fisher('p', k1, n1, k2, n2)})")
    if k1 + k2 == 0:
        text += ", so these runs cannot tell whether clipping helps"
    elif with_.mean() <= without.mean():
        text += "; Pascanu et al. (2013, Fig. 7) found clipping raised the success rate, which these runs do not show"
    numbers = {"solved_clipped": k1, "clipped": n1, "solved_unclipped": k2, "unclipped": n2}
    return [quote.finding(text + f" (figure `{figure}`).", numbers)]


def beats_constant_predictor(runs: pd.DataFrame, question: str, figure: str) -> list[Finding]:
    """How many trained runs of a question beat the constant predictor (final test loss below BEATS of its loss).
    runs: eval/loss, task.baseline."""
    below = runs["eval/loss"] < BEATS * runs["task.baseline"]
    quote = Quote(f"beats_baseline_{question}")
    text = (f"{question}: {quote.fraction('below', int(below.sum()), len(runs))} trained runs beat the constant "
            f"predictor (final test loss below {fmt(BEATS)} of its loss; figure `{figure}`).")
    return [quote.finding(text, {"below": int(below.sum()), "runs": len(runs)})]


def clipping_divergence(runs: pd.DataFrame, history: pd.DataFrame, figure: str) -> list[Finding]:
    """Runs diverged per clipping mode with the median peak pre-clip norm, against Pascanu et al.'s claim.

    runs: run_id, clip.mode, outcome, grad/norm_peak (the peak over every step; absent in older stores, where the
    peak over the logged grad/norm `history` (run_id, value) is used).
    """
    diverged = runs["outcome"] == "diverged"
    if "grad/norm_peak" in runs and runs["grad/norm_peak"].notna().all():
        peak = runs.set_index("run_id")["grad/norm_peak"]
    else:
        peak = history.groupby("run_id")["value"].max()
    parts, numbers, quote = [], {}, Quote("clipping_divergence")
    unclipped = diverged[runs["clip.mode"] == "none"]
    for mode, group in runs.groupby("clip.mode"):
        d = diverged[group.index]
        median_peak = peak.reindex(group["run_id"]).median()
        numbers[mode] = {"diverged": int(d.sum()), "runs": len(d), "median_peak": median_peak}
        test = (f"; against no clipping {quote.fisher(f'p_{mode}', int(d.sum()), len(d), int(unclipped.sum()), len(unclipped))}"
                if mode != "none" and len(unclipped) else "")
        parts.append(f"{frames.clip_label(mode, math.nan) if mode == 'none' else mode + ' clipping'} "
                     f"{quote.fraction(mode, int(d.sum()), len(d))} (median peak pre-clip norm {fmt(median_peak)}{test})")
    text = "Runs diverged: " + "; ".join(parts)
    rates = diverged.groupby(runs["clip.mode"]).mean()
    if "none" in rates and any(rates[m] >= rates["none"] and rates["none"] > 0 for m in rates.index if m != "none"):
        text += ". Pascanu et al. (2013) found clipping prevents divergence; here a clipping mode diverged as often as no clipping"
    return [quote.finding(text + f" (figure `{figure}`).", numbers)]


def truncation_cosine(runs: pd.DataFrame, figure: str) -> list[Finding]:
    """The median cosine between truncated and full gradient per k. runs: `frames.with_trunc_cosine`."""
    cos = runs.groupby(runs["bptt.truncation"])["trunc_cosine"].median()
    if cos.empty:
        return []
    dependency = runs["task.dependency"].median()
    text = ("Median cosine between truncated and full gradient: " + ", ".join(f"k = {fmt(k)}: {fmt(c, 2)}" for k, c in cos.items())
            + f", against a dependency distance of {fmt(dependency)} steps (figure `{figure}`).")
    return [Finding("truncation_cosine", text, {"cosine": cos.to_dict(), "dependency": dependency})]


def truncation_shorter_than_dependency(runs: pd.DataFrame, figure: str) -> list[Finding]:
    """How many runs with k below the dependency distance solved the task, against full BPTT.
    runs: bptt.truncation (NaN: full BPTT), task.dependency, outcome."""
    k, window = runs["bptt.truncation"], frames.window_needed(runs["task.dependency"])
    short, full = runs[k < window], runs[k.isna()]
    if short.empty:
        return []
    dependency = window.median()  # the shortest window that reaches the earliest relevant input
    won = short[short["outcome"] == "solved"]
    full_solved, quote = int((full["outcome"] == "solved").sum()), Quote("truncation_short")
    text = f"Truncation shorter than the dependency (k < {fmt(dependency)}): {quote.fraction('short', len(won), len(short))} runs solved"
    if len(won):
        text += f" (at k = {', '.join(fmt(v) for v in sorted(won['bptt.truncation'].unique()))})"
    if len(full):
        text += (f"; full BPTT: {quote.fraction('full', full_solved, len(full))} "
                 f"({quote.fisher('p', len(won), len(short), full_solved, len(full))})")
    if len(won):
        text += ("; with k below the dependency distance the loss gradient misses the earliest relevant input of "
                 "at least some sequences, yet the weights learned inside the window act on every step, so some "
                 "longer-range behaviour can still emerge")
    numbers = {"solved": len(won), "runs": len(short), "full_solved": full_solved, "full": len(full)}
    return [quote.finding(text + f" (figure `{figure}`).", numbers)]


def final_saturation(runs: pd.DataFrame, history: pd.DataFrame, figure: str) -> list[Finding]:
    """The median fraction of saturated units at the end of training per activation.
    runs: run_id, model.activation; history: act/saturation (run_id, step, value)."""
    last = frames.final_values(history)
    final = runs.assign(final=runs["run_id"].map(last)).groupby("model.activation")["final"].median().dropna()
    text = ("Median fraction of saturated units at the end of training, over every trained question: "
            + ", ".join(f"{a} {100 * final[a]:.0f}%" for a in frames.ordered(final.index)) + f" (figure `{figure}`).")
    return [Finding("final_saturation", text, {"saturated": final.to_dict()})]


def charlm_bits(runs: pd.DataFrame, figure: str) -> list[Finding]:
    """The median final test bits per character per activation against the unigram entropy.
    runs: model.activation, eval/bpc, task.baseline (the unigram entropy in nats)."""
    baseline = runs["task.baseline"].median() / math.log(2)
    final = runs.groupby("model.activation")["eval/bpc"].median().dropna()
    text = (f"Character language model, median final test bits per character against the unigram entropy {fmt(baseline)}: "
            + ", ".join(f"{a} {fmt(final[a])} ({100 * final[a] / baseline:.0f}%)" for a in frames.ordered(final.index))
            + f" (figure `{figure}`).")
    return [Finding("charlm_bits", text, {"unigram_entropy": baseline, "bits": final.to_dict()})]


# remedies

def remedy_losses(runs: pd.DataFrame, curves: pd.DataFrame, figure: str) -> list[Finding]:
    """Per task: `_remedy_loss`, then `_classic_account`.

    runs: `frames.remedy_runs` (task.name, task.seq_len, label, outcome, eval/accuracy, train.steps);
    curves: `frames.remedy_curves` of those runs (relative_loss by task.name, colour, label, task.seq_len).
    """
    out = []
    for task, part in runs.groupby("task.name"):
        median = curves[curves["task.name"] == task].set_index(["task.seq_len", "label"])["median"].sort_index()
        out += _remedy_loss(task, part, median, figure)
        out += _classic_account(task, part, median, figure)
    return out


def _remedy_loss(task: str, part: pd.DataFrame, median: pd.Series, figure: str) -> list[Finding]:
    """Per T the remedies that beat the constant predictor (median final loss below BEATS of it) and those that do
    not, the runs solved and the best final accuracy. median: (task.seq_len, label) -> median relative loss."""
    steps = ", ".join(fmt(s) for s in sorted(part["train.steps"].unique()))
    sentences = []
    for T, ratios in median.groupby(level=0):
        ratios = ratios.droplevel(0).sort_values()
        beat, rest = ratios[ratios < BEATS], ratios[ratios >= BEATS]
        if beat.empty:
            sentences.append(f"T = {fmt(T)}: none beats it, {ratio_list(rest)}")
        else:
            sentences.append(f"T = {fmt(T)}: {ratio_list(beat)} {'beat' if len(beat) > 1 else 'beats'} it"
                             + (f"; {ratio_list(rest)} {'do' if len(rest) > 1 else 'does'} not" if len(rest) else ""))
    solved, quote = part["outcome"] == "solved", Quote(f"remedy_loss_{task}")
    text = (f"Remedies on {task} ({count_text(part.groupby(['task.seq_len', 'label']).size())}, {steps} training steps), "
            + (f"median final test loss relative to the constant predictor's, beating it meaning below {fmt(BEATS)} of it. "
               + "".join(f"{sentence}. " for sentence in sentences) if sentences else "no final test loss logged. ")
            + f"Runs solved (test accuracy ≥ {fmt(SOLVED_ACCURACY)}): {quote.fraction('solved', int(solved.sum()), len(part))}")
    best = part.dropna(subset=["eval/accuracy"])
    if len(best):
        top = best.loc[best["eval/accuracy"].idxmax()]
        text += f"; the highest final test accuracy is {fmt(top['eval/accuracy'])} ({top['label']}, T = {fmt(top['task.seq_len'])})"
    numbers = {"relative_loss": median.to_dict(), "solved": int(solved.sum()), "runs": len(part)}
    return [quote.finding(text + f" (figure `{figure}`).", numbers)]


def _classic_account(task: str, part: pd.DataFrame, median: pd.Series, figure: str) -> list[Finding]:
    """The remedies that do not beat the constant predictor at the task's longest T, where the classic account has
    every remedy learn what the plain tanh RNN (PLAIN_REMEDY) cannot."""
    T = part["task.seq_len"].max()
    ratios = median[median.index.get_level_values(0) == T].droplevel(0).sort_values()
    remedies = ratios.drop(PLAIN_REMEDY, errors="ignore")
    failed, beat = remedies[remedies >= BEATS], remedies[remedies < BEATS]
    if failed.empty:
        return []
    text = (f"Against the classic account (each remedy carries the gradient over long spans and so learns where the plain "
            f"RNN does not), on {task} at T = {fmt(T)}: {ratio_list(failed)} {'do' if len(failed) > 1 else 'does'} not beat "
            f"the constant predictor within {', '.join(fmt(s) for s in sorted(part['train.steps'].unique()))} training steps")
    quote = Quote(f"classic_account_{task}")
    if PLAIN_REMEDY in ratios:
        plain = ratios[PLAIN_REMEDY]
        text += f", {'like' if plain >= BEATS else 'although'} the plain RNN ({PLAIN_REMEDY}, {ratio_text(plain)}){'' if plain >= BEATS else ' does'}"
    text += f"; only {ratio_list(beat)} {'do' if len(beat) > 1 else 'does'}" if len(beat) else "; no remedy does"
    at_T = part[part["task.seq_len"] == T]
    losses = at_T.groupby("label")["relative_loss"]
    if PLAIN_REMEDY in losses.groups:
        base = losses.get_group(PLAIN_REMEDY)
        tests = [f"{label} {quote.mann_whitney(label, losses.get_group(label), base, named=False)}"
                 for label in remedies.index if label in losses.groups]
        text += f" (final losses against the plain RNN's, Mann-Whitney U test: {', '.join(tests)})"
    return [quote.finding(text + f" (figure `{figure}`).", {"failed": failed.to_dict(), "beat": beat.to_dict()})]


def gradient_at_initialization(rows: pd.DataFrame, runs: pd.DataFrame, figure: str) -> list[Finding]:
    """Per task at its longest T: ||dL/ds_1|| / ||dL/ds_last|| at initialization per remedy (and ||dL/dc|| the same
    for a cell state), then, where the loss is at the last step only, `_gradient_predicts`.

    rows: `frames.remedy_init_rows` (run_id, task.name, task.seq_len, label, distance, ds_norm, maybe dc_norm).
    runs: `frames.remedy_runs` (task.name, task.seq_len, label, relative_loss).
    """
    paths = [p for p in ("ds_norm", "dc_norm") if p in rows]
    first = rows[rows["distance"] == rows.groupby("run_id")["distance"].transform("max")].set_index("run_id")
    last = rows[rows["distance"] == 0].set_index("run_id")
    per_run = (first[paths] / last[paths].reindex(first.index)).join(first[["task.name", "task.seq_len", "label", "distance"]])
    out = []
    for task, part in per_run.groupby("task.name"):
        T, back = part["task.seq_len"].iloc[0], part["distance"].max()
        ratio = part.groupby("label")[paths].median().sort_values("ds_norm", ascending=False)
        items = []
        for label, r in ratio.iterrows():
            item = f"{label}: {ratio_text(r['ds_norm'])} (×{fmt(r['ds_norm'] ** (1 / back), 3)} per step)"
            if pd.notna(r.get("dc_norm", np.nan)):
                item += (f", its cell state ||dL/dc_1|| / ||dL/dc_last|| {ratio_text(r['dc_norm'])} "
                         f"(×{fmt(r['dc_norm'] ** (1 / back), 3)} per step)")
            items.append(item)
        text = (f"Gradient at initialization on {task}, T = {fmt(T)}" + (f" ({fmt(back + 1)} steps)" if back + 1 != T else "")
                + ", ||dL/ds_1|| / ||dL/ds_last||, median over seeds: " + "; ".join(items))
        if task not in LAST_STEP_LOSS_TASKS:
            text += (f". On {task} the loss covers every step, so ||dL/ds_1|| sums the gradients of every later loss and "
                     "this ratio does not isolate the long-range path")
        out.append(Finding(f"init_gradient_{task}", text + f" (figure `{figure}`).", {"ratio": ratio["ds_norm"].to_dict()}))
        if task in LAST_STEP_LOSS_TASKS:
            loss = runs[(runs["task.name"] == task) & (runs["task.seq_len"] == T)].groupby("label")["relative_loss"].median()
            out += _gradient_predicts(task, T, ratio["ds_norm"], loss, figure)
    return out


def _gradient_predicts(task: str, T, ratio: pd.Series, loss: pd.Series, figure: str) -> list[Finding]:
    """Where the gradient kept at initialization (ratio: label -> ||dL/ds_1|| / ||dL/ds_T||) and learning (loss:
    label -> median final loss / constant predictor's) disagree: the remedy that keeps the most of it does not
    learn, or a remedy learns whose gradient vanishes at least as fast as the plain RNN's."""
    ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
    learned = loss[loss < BEATS].index
    parts = []
    if len(ratio):
        kept = np.log(ratio).abs().idxmin()
        if kept not in learned and kept in loss:
            parts.append(f"{kept} keeps the most of the gradient ({ratio_text(ratio[kept])}) yet ends at {ratio_text(loss[kept])} "
                         "times the constant predictor's loss")
    if PLAIN_REMEDY in ratio:
        faster = [label for label in learned if label in ratio and label != PLAIN_REMEDY and ratio[label] <= ratio[PLAIN_REMEDY]]
        parts += [f"{label} beats the constant predictor ({ratio_text(loss[label])}) though its gradient vanishes at least as "
                  f"fast as the plain RNN's ({ratio_text(ratio[label])} against {PLAIN_REMEDY}, {ratio_text(ratio[PLAIN_REMEDY])})"
                  for label in faster]
    if not parts:
        return []
    text = (f"On {task} at T = {fmt(T)} the gradient at initialization does not predict which remedy learns: " + "; ".join(parts)
            + f" (figures `{figure}` and `remedies`).")
    return [Finding(f"gradient_predicts_{task}", text, {"ratio": ratio.to_dict(), "relative_loss": loss.to_dict()})]
