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
from rnngrad.report.stats import FALLBACK_DIGITS
from rnngrad.report.text import count_text, fmt, signed, slug

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


MAX_WORDS = 45  # a finding states one claim in about 40 words at most (tests/test_findings.py holds it to this)


def words(finding: Finding) -> int:
    """The finding's length in words: whitespace-separated tokens, each quoted number (a fraction with its interval,
    a median, a p value with its test's name) and each code span counting as one word."""
    rest = CODE_SPAN.sub("x", finding.text)
    for number in finding.quoted:
        rest = rest.replace(number.printed, "x", 1)
    return len(rest.split())


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

    def median(self, name: str, values, scale: float = 1.0, sign: bool = False, suffix: str = "") -> str:
        """The median of values (NaN left out) times scale, to the precision its bootstrap interval supports
        (`stats.median_interval`, `stats.supported`): '0.41', '+0.41' with sign=True, '38%' with scale=100 and
        suffix='%'. The interval (scaled) and n go to findings.json."""
        x = pd.Series(values, dtype=float).dropna()
        value = scale * float(x.median()) if len(x) else math.nan
        lo, hi = (scale * v for v in stats.median_interval(x))
        printed = stats.supported(value, min(lo, hi), max(lo, hi))
        if sign and value >= 0 and printed != "n/a":
            printed = "+" + printed
        interval = None if math.isnan(lo) else (min(lo, hi), max(lo, hi))
        return self._add(name, value, interval, len(x), printed + suffix)

    def correlation(self, name: str, x, y) -> str:
        """'0.99993 (95% CI 0.99985–0.99997)': Pearson's correlation of the pairs with its bootstrap interval
        (`stats.correlation_interval`), both to the decimals the interval supports."""
        pairs = pd.DataFrame({"x": pd.Series(x, dtype=float).to_numpy(), "y": pd.Series(y, dtype=float).to_numpy()}).dropna()
        r = float(np.corrcoef(pairs["x"], pairs["y"])[0, 1])
        lo, hi = stats.correlation_interval(pairs["x"], pairs["y"])
        if not (math.isfinite(lo) and hi > lo):
            return self._add(name, r, None, len(pairs), fmt(r, FALLBACK_DIGITS))
        return self._add(name, r, (lo, hi), len(pairs), stats.with_interval(r, lo, hi))

    def bound(self, name: str, values) -> str:
        """The largest of values (NaN left out) as a bound rounded up to one significant digit (`stats.upper_bound`),
        for 'at most ...': the sentence stays true, and claims the order of magnitude only."""
        x = pd.Series(values, dtype=float).dropna()
        value = float(x.max()) if len(x) else math.nan
        return self._add(name, value, None, len(x), stats.upper_bound(value))

    def bracket(self, name: str, value: float, lo: float, hi: float, n: int) -> str:
        """'1 and 1.25': the grid points that enclose a value interpolated between them (a sign change of a median
        along a grid with one run per point): the data place it there and no closer."""
        return self._add(name, value, (lo, hi), n, f"{fmt(lo)} and {fmt(hi)}")

    def finding(self, text: str, numbers: dict | None = None) -> Finding:
        missing = [n.printed for n in self.numbers if n.printed not in text]
        if missing:
            raise AssertionError(f"finding {self.id}: quoted numbers not in its text: {missing}")
        return Finding(self.id, text, numbers or {}, tuple(self.numbers))


# gradients at initialization

def pascanu_bound(rows: pd.DataFrame, figure: str) -> list[Finding]:
    """Whether ||dL/ds_t|| <= ||dL/ds_T|| (gamma sigma_max)^(T-t) held at every t, on the tasks whose loss is at the
    last step only; then per init the median ratio measured/bound at the farthest step (`_bound_gap`).

    rows: `frames.through_time`: run_id, t, ds_norm, bound, task.name, model.init, spectral/sigma_max, spectral/radius.
    """
    data = rows[rows["task.name"].isin(LAST_STEP_LOSS_TASKS)].dropna(subset=["bound"])
    if data.empty:
        return []
    T = data.groupby("run_id")["t"].transform("max")
    last = data[data["t"] == T].set_index("run_id")["ds_norm"]
    ratio = data["ds_norm"] / (data["run_id"].map(last) * data["bound"])
    held = ratio.groupby(data["run_id"]).max() <= 1 + 1e-9
    verdict = "held" if held.all() else "was exceeded, which the theory rules out,"
    quote = Quote("pascanu_bound")
    text = (f"The Pascanu et al. bound ||dL/ds_t|| ≤ ||dL/ds_T|| (γσ_max)^(T−t) {verdict} at every t in "
            f"{quote.fraction('held', int(held.sum()), len(held))} runs at initialization (figure `{figure}`).")
    out = [quote.finding(text, {"held": int(held.sum()), "runs": len(held)})]
    farthest = data.assign(ratio=ratio)[data["t"] == 1]
    for init, g in farthest[farthest["ratio"] > 0].groupby("model.init"):
        out += _bound_gap(init, g, figure)
    return out


NON_NORMAL = 1.01  # sigma_max / rho above this: W non-normal, the bound's sigma_max overstates the growth rate rho


def _bound_gap(init: str, farthest: pd.DataFrame, figure: str) -> list[Finding]:
    """How far below the bound the norm lies at the farthest step for one init, and the sigma_max/rho behind it."""
    quote = Quote(f"bound_gap_{init}")
    spread = farthest["spectral/sigma_max"] / farthest["spectral/radius"]
    # each step of the bound multiplies by γσ_max, a step of the gradient by at most that (equal only with f'(a) = γ
    # and ds_t along W's top singular direction); σ_max > ρ, a non-normal W, is one more part of the gap
    why = (": the bound's σ_max overstates the growth rate ρ" if spread.median() > NON_NORMAL
           else ", so the gap is f'(a) < γ and ds_t off W's top singular direction")
    text = (f"{init} W: at the farthest step the measured norm is {quote.median('ratio', farthest['ratio'])} times the "
            f"Pascanu bound (median, {farthest['run_id'].nunique()} runs); σ_max/ρ = "
            f"{quote.median('sigma_over_rho', spread)}{why} (figure `{figure}`).")
    return [quote.finding(text)]


def linear_decay(runs: pd.DataFrame, figure: str) -> list[Finding]:
    """For the linear RNN, the largest |measured decay rate - log rho|. runs: `frames.decay_runs`."""
    linear = runs[runs["model.activation"] == "linear"]
    if linear.empty:
        return []
    dev, quote = linear["excess"].abs().max(), Quote("decay_linear")
    verdict = "as the theory of the linear RNN predicts" if dev < AGREE else "more than the theory of the linear RNN allows"
    text = (f"Linear RNN: the measured decay rate differs from log ρ by at most {quote.bound('max_deviation', linear['excess'].abs())} "
            f"nats per step over {len(linear)} runs, {verdict} (figure `{figure}`).")
    return [quote.finding(text, {"max_deviation": dev, "runs": len(linear)})]


def decay_per_activation(runs: pd.DataFrame, curves: pd.DataFrame, figure: str) -> list[Finding]:
    """Per nonlinear activation of GAMMA: `_decay_against_theory`, `_decay_at_largest_radius`, then
    `_decay_turns_positive`.

    runs: `frames.decay_runs`; curves: `frames.decay_curves` of those runs.
    """
    out = []
    for act in [a for a in frames.ordered(runs["model.activation"]) if a != "linear" and a in GAMMA]:
        part = runs[runs["model.activation"] == act]
        out += _decay_against_theory(part, act, figure)
        out += _decay_at_largest_radius(part, act, figure)
        out += _decay_turns_positive(curves[curves["model.activation"] == act], act, figure)
    return out


def _decay_against_theory(part: pd.DataFrame, act: str, figure: str) -> list[Finding]:
    """How many runs decay at least as fast as log(gamma rho)."""
    below, quote = int((part["excess"] <= AGREE).sum()), Quote(f"decay_theory_{act}")
    text = (f"{act}: the measured decay rate lies at or below log(γρ) (γ = {fmt(GAMMA[act])}) in "
            f"{quote.fraction('at_or_below', below, len(part))} runs at initialization (figure `{figure}`).")
    return [quote.finding(text, {"at_or_below": below, "runs": len(part)})]


def _decay_at_largest_radius(part: pd.DataFrame, act: str, figure: str) -> list[Finding]:
    """The measured against the predicted decay rate at the largest rho, with the saturation that explains a faster decay."""
    top = part[part["model.spectral_radius"] == part["model.spectral_radius"].max()]
    if top.empty:  # no grid over rho: the run with the largest measured one
        top = part.nlargest(1, "spectral/radius")
    measured, theory = top["grad/decay_rate"].median(), top["theory"].median()
    quote = Quote(f"decay_largest_{act}")
    text = (f"{act} at the largest ρ = {fmt(top['spectral/radius'].median())}: measured decay rate "
            f"{quote.median('measured', top['grad/decay_rate'], sign=True)} per step (median, {len(top)} run{'s' if len(top) > 1 else ''}), "
            f"log(γρ) = {signed(theory)}")
    if measured < theory - AGREE:
        text += (f"; with {quote.median('saturated', top['act/saturation'], scale=100, suffix='%')} of units saturated, "
                 "f'(a) < γ contracts each step more than log(γρ) assumes")
    return [quote.finding(text + f" (figure `{figure}`).", {"measured": measured, "theory": theory})]


def _decay_turns_positive(curves: pd.DataFrame, act: str, figure: str) -> list[Finding]:
    """Per init, where the median decay rate changes sign as rho grows along the grid, against 1/gamma.
    curves: one activation's `frames.decay_curves` (the init's own scale, NaN in the grid, left out)."""
    out = []
    for init, curve in curves.dropna(subset=["model.spectral_radius"]).groupby("model.init"):
        rho, rate = curve["radius"].to_numpy(), curve["median"].to_numpy()
        if len(rho) < 2:
            continue
        change, crossing = np.nonzero((rate[:-1] < 0) & (rate[1:] >= 0))[0], math.nan
        quote = Quote(f"decay_crossing_{act}_{init}")
        if len(change):
            # interpolated in log rho, but printed as the two grid points around it: with a median of few runs per
            # point the sign change is placed between them and no closer
            i = change[0]
            x = np.log(rho[i]) + (np.log(rho[i + 1]) - np.log(rho[i])) * (-rate[i]) / (rate[i + 1] - rate[i])
            crossing = float(np.exp(x))
            runs_there = int(curve["n"].iloc[i] + curve["n"].iloc[i + 1])
            where = ("turns positive (gradients stop vanishing) between ρ = "
                     f"{quote.bracket('crossing', crossing, rho[i], rho[i + 1], runs_there)}")
        elif (rate < 0).all():
            where = f"stays negative up to the largest ρ = {fmt(rho[-1])} ({signed(rate[-1])} there)"
        else:
            where = f"is already positive at the smallest ρ = {fmt(rho[0])} ({signed(rate[0])} there)"
        text = (f"{act}, {init} W: the median decay rate {where}; the theory log(γρ) turns positive at ρ = 1/γ = "
                f"{fmt(1 / GAMMA[act])} (figure `{figure}`).")
        out.append(quote.finding(text, {"crossing": crossing, "theory": 1 / GAMMA[act]}))
    return out


def decay_tracks_lyapunov(runs: pd.DataFrame, figure: str) -> list[Finding]:
    """The correlation and distance between the decay rate and the top Lyapunov exponent. runs: `frames.decay_runs`."""
    both = runs.dropna(subset=["lyap/top"])
    if len(both) < 2:
        return []
    diff = (both["grad/decay_rate"] - both["lyap/top"]).abs()
    r, quote = np.corrcoef(both["grad/decay_rate"], both["lyap/top"])[0, 1], Quote("decay_lyapunov")
    text = (f"The measured decay rate tracks the top Lyapunov exponent over {len(both)} runs: correlation "
            f"{quote.correlation('correlation', both['grad/decay_rate'], both['lyap/top'])}, |difference| "
            f"{quote.median('median_difference', diff)} (median), at most {quote.bound('max_difference', diff)} nats "
            f"per step (figure `{figure}`, right).")
    return [quote.finding(text, {"correlation": r, "runs": len(both)})]


# float32 against float64

def _precision_config(act: str, rho: float) -> str:
    return f"{act}, " + (f"ρ = {fmt(rho)}" if not math.isnan(rho) else "ρ of the init's own scale")


def float32_lost(curves: pd.DataFrame, figure: str) -> list[Finding]:
    """Per activation and spectral radius with runs in both precisions: the distance T - t at which float32's median
    ||dL/ds_t|| falls below float32's epsilon times its largest (`frames.below_epsilon`), where the long-range terms of
    the summed weight gradient are lost to rounding, against where float32 first reports exactly 0 (`frames.first_zero`).

    The weight gradient sums, over t, dL/da_t h_{t-1}^T, whose norm is ||dL/ds_t|| f'(a_t) ||h_{t-1}||; at
    initialization f'(a_t) and ||h_{t-1}|| hardly change with t, so ||dL/ds_t|| stands for the per-step term.
    curves: `frames.precision_curves`.
    """
    out = []
    for act, rho, float32, float64 in frames.precision_pairs(curves):
        config = _precision_config(act, rho)
        lost, zero, back = frames.below_epsilon(float32), frames.first_zero(float32), fmt(float32.index.max())
        lost_text = (f"falls below ε = {fmt(FLOAT32.eps, 2)} times its largest at T − t = {fmt(lost)}, so the summed "
                     "weight gradient loses longer-range terms" if not math.isnan(lost) else
                     f"stays above ε = {fmt(FLOAT32.eps, 2)} times its largest over {back} steps back")
        zero_text = f"it reports 0 only from T − t = {fmt(zero)}" if not math.isnan(zero) else "it never reports 0"
        text = f"{config}: float32's ||dL/ds_t|| {lost_text}; {zero_text} (figure `{figure}`)."
        key = config.replace(", ", "_").replace(" ", "")
        out.append(Finding(f"float32_lost_{key}", text, {"below_epsilon": lost, "first_zero": zero}))
        if not math.isnan(zero) and float64.get(zero, 0.0) > 0:
            text = (f"{config}: where float32 first reports exactly 0 (T − t = {fmt(zero)}), float64 still measures "
                    f"{fmt(float64[zero], 2)}, from the same weights (figure `{figure}`).")
            out.append(Finding(f"float32_zero_{key}", text, {"first_zero": zero, "float64_there": float64[zero]}))
    return out


def float32_agreement(curves: pd.DataFrame, setting: str, figure: str) -> list[Finding]:
    """Over the activations and spectral radii with runs in both precisions: the largest relative difference between
    the median norms where both are positive, while float32's is normal and below that (subnormal).
    curves: `frames.precision_curves`. setting: what the runs share, e.g. 'adding, T = 200'."""
    normal_worst, subnormal_worst, settings, normal_all, subnormal_all = 0.0, 0.0, 0, [], []
    for _, _, float32, float64 in frames.precision_pairs(curves):
        both = pd.DataFrame({"float32": float32, "float64": float64}).dropna()
        both = both[(both["float32"] > 0) & (both["float64"] > 0)]
        relative = (both["float32"] - both["float64"]).abs() / both["float64"]
        normal = both["float32"] >= FLOAT32.tiny
        normal_worst = max(normal_worst, relative[normal].max() if normal.any() else 0.0)
        subnormal_worst = max(subnormal_worst, relative[~normal].max() if (~normal).any() else 0.0)
        normal_all.append(relative[normal])
        subnormal_all.append(relative[~normal])
        settings += 1
    if not settings:
        return []
    verdict, quote = "agrees with" if normal_worst < SAME_NORM else "differs from", Quote("float32_agreement")
    text = (f"On {setting}, while float32's ||dL/ds_t|| is normal (≥ {fmt(FLOAT32.tiny, 2)}), it {verdict} float64 "
            f"to a relative difference of at most {quote.bound('normal', pd.concat(normal_all))} in {settings} settings")
    if subnormal_worst > 0:
        text += f"; in its subnormal range it differs by up to {quote.bound('subnormal', pd.concat(subnormal_all))}"
    worst = {"normal": normal_worst, "subnormal": subnormal_worst}
    return [quote.finding(text + f" (figure `{figure}`).", {"largest_relative_difference": worst})]


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


def clipping_solved(runs: pd.DataFrame, figure: str) -> list[Finding]:
    """Per clipping arm (mode and threshold), the runs solved against no clipping's (Fisher's exact test): the
    test of Pascanu et al.'s claim that clipping lets SGD learn where its gradients explode.
    runs: clip.mode, clip.threshold, outcome."""
    solved, unclipped = runs["outcome"] == "solved", runs["clip.mode"] == "none"
    if not unclipped.any():
        return []
    k0, n0 = int(solved[unclipped].sum()), int(unclipped.sum())
    out = []
    for (mode, threshold), group in runs[~unclipped].groupby(["clip.mode", "clip.threshold"]):
        k, n = int(solved[group.index].sum()), len(group)
        label = frames.clip_label(mode, threshold)
        quote = Quote(f"clipping_solved_{mode}_{fmt(threshold)}")
        text = (f"With {label}, {quote.fraction('solved', k, n)} runs solved the task, against "
                f"{quote.fraction('unclipped', k0, n0)} without clipping ({quote.fisher('p', k, n, k0, n0)}) "
                f"(figure `{figure}`).")
        out.append(quote.finding(text, {"solved": k, "runs": n, "solved_unclipped": k0, "unclipped": n0}))
    return out


def clipping_divergence(runs: pd.DataFrame, history: pd.DataFrame, figure: str) -> list[Finding]:
    """Per clipping mode, the runs diverged with the median peak pre-clip norm, each clipping mode against no
    clipping, and whether a clipping mode diverged as often as no clipping (against Pascanu et al.'s claim).

    runs: run_id, clip.mode, outcome, grad/norm_peak (the peak over every step; absent in older stores, where the
    peak over the logged grad/norm `history` (run_id, value) is used).
    """
    diverged = runs["outcome"] == "diverged"
    if "grad/norm_peak" in runs and runs["grad/norm_peak"].notna().all():
        peak = runs.set_index("run_id")["grad/norm_peak"]
    else:
        peak = history.groupby("run_id")["value"].max()
    out, unclipped = [], diverged[runs["clip.mode"] == "none"]
    for mode, group in runs.groupby("clip.mode"):
        d, quote = diverged[group.index], Quote(f"clipping_divergence_{mode}")
        name = "Without clipping" if mode == "none" else f"With {mode} clipping"
        text = (f"{name} {quote.fraction('diverged', int(d.sum()), len(d))} runs diverged (median peak pre-clip "
                f"gradient norm {quote.median('median_peak', peak.reindex(group['run_id']))})")
        if mode != "none" and len(unclipped):
            text += (f", against {int(unclipped.sum())} of {len(unclipped)} without "
                     f"({quote.fisher('p', int(d.sum()), len(d), int(unclipped.sum()), len(unclipped))})")
        out.append(quote.finding(text + f" (figure `{figure}`).", {"diverged": int(d.sum()), "runs": len(d)}))
    rates = diverged.groupby(runs["clip.mode"]).mean()
    as_often = [m for m in rates.index if m != "none" and "none" in rates and rates["none"] > 0 and rates[m] >= rates["none"]]
    if as_often:
        text = (f"Pascanu et al. (2013) found clipping prevents divergence; here {', '.join(as_often)} clipping diverged "
                f"as often as no clipping (figure `{figure}`).")
        out.append(Finding("clipping_as_often", text, {"modes": as_often}))
    return out


def truncation_cosine(runs: pd.DataFrame, figure: str) -> list[Finding]:
    """The median cosine between truncated and full gradient per k. runs: `frames.with_trunc_cosine`."""
    groups = runs.dropna(subset=["trunc_cosine"]).groupby("bptt.truncation")["trunc_cosine"]
    if not len(groups):
        return []
    quote, dependency = Quote("truncation_cosine"), runs["task.dependency"].median()
    text = (f"Median cosine of truncated and full gradient (dependency distance {fmt(dependency)} steps): "
            + ", ".join(f"k = {fmt(k)}: {quote.median(f'k{fmt(k)}', c)}" for k, c in groups) + f" (figure `{figure}`).")
    return [quote.finding(text, {"dependency": dependency})]


def truncation_bands(runs: pd.DataFrame, figure: str) -> list[Finding]:
    """Per band of k that misses the farthest relevant input in some sequence (`frames.band`, from the tag
    task.relevant): how many of its runs solved the task against full BPTT (Fisher); then, where a band that never
    reaches the farthest input solved most of its runs, why it can. runs: bptt.truncation (NaN: full BPTT),
    task.relevant (or task.dependency), outcome."""
    bands, reach, inputs = frames.truncation_bands(runs)
    full = runs[bands == frames.FULL]
    full_solved = int((full["outcome"] == "solved").sum())
    out, learned_without = [], []
    for name in sorted((b for b in reach if reach[b][0] < inputs), key=lambda b: (reach[b], b)):
        part = runs[bands == name]
        solved, quote = int((part["outcome"] == "solved").sum()), Quote(f"truncation_band_{slug(name)}")
        at = ", ".join(fmt(v) for v in sorted(part["bptt.truncation"].unique()))
        text = f"Truncated BPTT, {name} (k = {at}): {quote.fraction('solved', solved, len(part))} runs solved"
        if len(full):
            text += (f"; full BPTT {quote.fraction('full', full_solved, len(full))} "
                     f"({quote.fisher('p', solved, len(part), full_solved, len(full))})")
        out.append(quote.finding(text + f" (figure `{figure}`).", {"solved": solved, "runs": len(part)}))
        if reach[name][1] < inputs and solved > len(part) / 2:  # never reaches the farthest input, yet learns
            learned_without.append(at)
    if learned_without:
        farthest = frames.relevant_names(inputs)[-1]
        text = (f"At k = {', '.join(learned_without)} the gradient never reaches {farthest}, yet most runs solved: the "
                f"state carries {farthest} forward, and the weights learned inside the window act on every step (figure `{figure}`).")
        out.append(Finding("truncation_window", text))
    return out


def final_saturation(runs: pd.DataFrame, history: pd.DataFrame, figure: str) -> list[Finding]:
    """The median fraction of saturated units at the end of training per activation.
    runs: run_id, model.activation; history: act/saturation (run_id, step, value)."""
    final = runs.assign(final=runs["run_id"].map(frames.final_values(history))).dropna(subset=["final"])
    if final.empty:
        return []
    quote, groups = Quote("final_saturation"), final.groupby("model.activation")["final"]
    text = ("Median fraction of saturated units at the end of training, over every trained question: "
            + ", ".join(f"{a} {quote.median(a, groups.get_group(a), scale=100, suffix='%')}"
                        for a in frames.ordered(final["model.activation"])) + f" (figure `{figure}`).")
    return [quote.finding(text)]


def charlm_bits(runs: pd.DataFrame, figure: str) -> list[Finding]:
    """The median final test bits per character per activation against the unigram entropy.
    runs: model.activation, eval/bpc, task.baseline (the unigram entropy in nats)."""
    baseline = runs["task.baseline"].median() / math.log(2)
    data = runs.dropna(subset=["eval/bpc"])
    if data.empty:
        return []
    quote, groups = Quote("charlm_bits"), data.groupby("model.activation")["eval/bpc"]
    text = (f"Character language model, median final test bits per character against the unigram entropy {fmt(baseline)}: "
            + ", ".join(f"{a} {quote.median(a, groups.get_group(a))} "
                        f"({quote.median(a + '_of_entropy', groups.get_group(a), scale=100 / baseline, suffix='%')})"
                        for a in frames.ordered(data["model.activation"]))
            + f" (figure `{figure}`).")
    return [quote.finding(text, {"unigram_entropy": baseline})]


# remedies

def remedy_losses(runs: pd.DataFrame, figure: str) -> list[Finding]:
    """Per task: `_remedy_loss` per T, `_remedies_solved`, then `_classic_account` and `_remedy_tests` at its longest T.

    runs: `frames.remedy_runs` (task.name, task.seq_len, label, outcome, eval/accuracy, train.steps, relative_loss);
    the medians are taken from the runs, so that each carries its bootstrap interval.
    """
    out = []
    for task, part in runs.groupby("task.name"):
        for T, at_T in part.groupby("task.seq_len"):
            out += _remedy_loss(task, T, at_T, figure)
        out += _remedies_solved(task, part, figure)
        out += _classic_account(task, part, figure)
        out += _remedy_tests(task, part, figure)
    return out


def _steps(part: pd.DataFrame) -> str:
    return ", ".join(fmt(s) for s in sorted(part["train.steps"].unique()))


def _remedy_loss(task: str, T, at_T: pd.DataFrame, figure: str) -> list[Finding]:
    """At one T, the remedies whose median final loss relative to the constant predictor's is below BEATS, and the
    range of the rest."""
    losses = at_T.dropna(subset=["relative_loss"]).groupby("label")["relative_loss"]
    median = losses.median().sort_values()
    if median.empty:
        return []
    beat, rest = median[median < BEATS], median[median >= BEATS]
    quote = Quote(f"remedy_loss_{task}_T{fmt(T)}")
    listed = ", ".join(f"{label} ({quote.median(label, losses.get_group(label))})" for label in beat.index)
    spread = ""
    if len(rest):  # the lowest and the highest median of the rest, each to the precision of its own interval
        spread = quote.median("rest_lowest", losses.get_group(rest.index[0]))
        if len(rest) > 1:
            spread += "–" + quote.median("rest_highest", losses.get_group(rest.index[-1]))
    text = f"Remedies on {task}, T = {fmt(T)} ({count_text(losses.size())}, {_steps(at_T)} steps): "
    if beat.empty:
        text += f"none of the {len(rest)} beats the constant predictor (median final test loss over its: {spread})"
    else:
        text += (f"{listed} {'beat' if len(beat) > 1 else 'beats'} the constant predictor (median final test loss below "
                 f"{fmt(BEATS)} of its)")
        if len(rest):
            text += f"; the other {len(rest)} do not ({spread})" if len(rest) > 1 else f"; {rest.index[0]} does not ({spread})"
    return [quote.finding(text + f" (figure `{figure}`).", {"beat": list(beat.index), "rest": list(rest.index)})]


def _remedies_solved(task: str, part: pd.DataFrame, figure: str) -> list[Finding]:
    """The remedies runs of a task solved, and the best final accuracy."""
    solved, quote = part["outcome"] == "solved", Quote(f"remedies_solved_{task}")
    text = (f"Remedies on {task}: {quote.fraction('solved', int(solved.sum()), len(part))} runs solved "
            f"(test accuracy ≥ {fmt(SOLVED_ACCURACY)})")
    scored = part.dropna(subset=["eval/accuracy"])
    if len(scored):  # the remedy and T with the highest median accuracy: a median carries an interval, a maximum not
        accuracy = scored.groupby(["label", "task.seq_len"])["eval/accuracy"]
        label, T = max(accuracy.median().items(), key=lambda item: (item[1], str(item[0])))[0]
        text += (f"; the best median final test accuracy is {quote.median('best_accuracy', accuracy.get_group((label, T)))} "
                 f"({label}, T = {fmt(T)})")
    return [quote.finding(text + f" (figure `{figure}`).", {"solved": int(solved.sum()), "runs": len(part)})]


def _classic_account(task: str, part: pd.DataFrame, figure: str) -> list[Finding]:
    """How many remedies do not beat the constant predictor at the task's longest T, where the classic account has
    every remedy learn what the plain tanh RNN (PLAIN_REMEDY) cannot."""
    T = part["task.seq_len"].max()
    at_T = part[part["task.seq_len"] == T].dropna(subset=["relative_loss"])
    median = at_T.groupby("label")["relative_loss"].median()
    remedies = median.drop(PLAIN_REMEDY, errors="ignore")
    failed = remedies[remedies >= BEATS]
    if failed.empty:
        return []
    quote = Quote(f"classic_account_{task}")
    text = (f"Against the classic account (every remedy learns where the plain RNN cannot), on {task} at T = {fmt(T)}, "
            f"{len(failed)} of {len(remedies)} remedies stay above {fmt(BEATS)} of the constant predictor's loss in "
            f"{_steps(at_T)} steps")
    if PLAIN_REMEDY in median:
        plain = at_T.loc[at_T["label"] == PLAIN_REMEDY, "relative_loss"]
        text += f", {'like' if median[PLAIN_REMEDY] >= BEATS else 'although'} the plain RNN ({quote.median('plain', plain)})"
    return [quote.finding(text + f" (figure `{figure}`).", {"failed": list(failed.index)})]


def _remedy_tests(task: str, part: pd.DataFrame, figure: str) -> list[Finding]:
    """At the task's longest T, the Mann-Whitney test of each remedy's final losses against the plain RNN's: the
    smallest p, and the smallest p that runs this few allow."""
    T = part["task.seq_len"].max()
    losses = part[part["task.seq_len"] == T].dropna(subset=["relative_loss"]).groupby("label")["relative_loss"]
    if PLAIN_REMEDY not in losses.groups or len(losses.groups) < 2:
        return []
    base = losses.get_group(PLAIN_REMEDY)
    p = {label: stats.mann_whitney(g, base) for label, g in losses if label != PLAIN_REMEDY}
    best = min(p, key=lambda label: (p[label], label))
    n = len(losses.get_group(best))
    floor = 2 / math.comb(n + len(base), n)  # all of one arm below all of the other: the exact test's smallest p
    if floor >= 1:  # one run against one: no test can tell the arms apart
        return []
    quote = Quote(f"remedy_tests_{task}")
    text = (f"On {task} at T = {fmt(T)}, each remedy's final losses against the plain RNN's: the smallest "
            f"{quote.mann_whitney('p', losses.get_group(best), base)} ({best}); with {n} against {len(base)} runs no p "
            f"can fall below {stats.p_text(floor)[4:]} (figure `{figure}`).")
    return [quote.finding(text, {"p": p, "smallest_possible": floor})]


def gradient_at_initialization(rows: pd.DataFrame, runs: pd.DataFrame, figure: str) -> list[Finding]:
    """Per task at its longest T: the range of ||dL/ds_1|| / ||dL/ds_last|| at initialization over the remedies (and
    the plain RNN's), the cell state's where a cell has one, on a task whose loss covers every step why the ratio
    does not isolate the long-range path, and where the loss is at the last step only `_gradient_predicts`.

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
        out += _gradient_range(task, T, back, part, ratio["ds_norm"], figure)
        if "dc_norm" in ratio:
            for label in ratio.index[ratio["dc_norm"].notna()]:
                out += _cell_state(task, T, back, label, part[part["label"] == label], figure)
        if task not in LAST_STEP_LOSS_TASKS:
            text = (f"On {task} the loss covers every step, so ||dL/ds_1|| sums the gradients of every later loss and its "
                    f"ratio to ||dL/ds_last|| at initialization does not isolate the long-range path (figure `{figure}`).")
            out.append(Finding(f"init_gradient_every_step_{task}", text))
        else:
            at_T = runs[(runs["task.name"] == task) & (runs["task.seq_len"] == T)]
            out += _gradient_predicts(task, T, part, at_T, figure)
    return out


def _ratio_and_rate(quote: Quote, name: str, ratios: pd.Series, back) -> str:
    """'0.72, ×0.997 per step': the median ratio over the runs and the median factor per step back."""
    return f"{quote.median(name, ratios)}, ×{quote.median(name + '_per_step', ratios ** (1 / back))} per step"


def _gradient_range(task: str, T, back, part: pd.DataFrame, ratio: pd.Series, figure: str) -> list[Finding]:
    """The remedies that keep the most and the least of the gradient at initialization, and the plain RNN."""
    ratio = ratio.dropna()
    if ratio.empty:
        return []
    quote, by = Quote(f"init_gradient_{task}"), part.groupby("label")["ds_norm"]
    most, least = ratio.index[0], ratio.index[-1]
    steps = f" ({fmt(back + 1)} steps)" if back + 1 != T else ""
    text = (f"On {task}, T = {fmt(T)}{steps}, ||dL/ds_1||/||dL/ds_last|| at initialization (median) spans "
            f"{_ratio_and_rate(quote, 'most', by.get_group(most), back)} ({most}) to "
            f"{_ratio_and_rate(quote, 'least', by.get_group(least), back)} ({least})")
    if PLAIN_REMEDY in ratio and PLAIN_REMEDY not in (most, least):
        text += f"; plain RNN {quote.median('plain', by.get_group(PLAIN_REMEDY))}"
    return [quote.finding(text + f" (figure `{figure}`).", {"ratio": ratio.to_dict()})]


def _cell_state(task: str, T, back, label: str, runs: pd.DataFrame, figure: str) -> list[Finding]:
    """A gated cell's cell-state path against its hidden state's at initialization."""
    quote = Quote(f"init_cell_state_{task}_{label}")
    text = (f"{label} on {task}, T = {fmt(T)}: its cell state keeps ||dL/dc_1||/||dL/dc_last|| = "
            f"{_ratio_and_rate(quote, 'cell', runs['dc_norm'], back)} at initialization, its hidden state "
            f"{quote.median('hidden', runs['ds_norm'])} (figure `{figure}`).")
    return [quote.finding(text)]


def _gradient_predicts(task: str, T, per_run: pd.DataFrame, at_T: pd.DataFrame, figure: str) -> list[Finding]:
    """Where the gradient kept at initialization and learning disagree: the remedy whose median ratio is closest to 1
    (the gradient neither vanishing nor growing) does not learn, or a remedy learns whose gradient vanishes at least as
    fast as the plain RNN's; one finding each.

    per_run: label, ds_norm (||dL/ds_1|| / ||dL/ds_T|| of each run); at_T: the runs at T (label, relative_loss:
    final loss / constant predictor's). Every median is quoted with its bootstrap interval.
    """
    ratios = per_run.groupby("label")["ds_norm"]
    ratio = ratios.median()
    ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
    losses = at_T.dropna(subset=["relative_loss"]).groupby("label")["relative_loss"]
    loss = losses.median()
    learned, out = loss[loss < BEATS].index, []
    head = f"On {task} at T = {fmt(T)} the gradient at initialization does not predict learning: "
    where = f" (figures `{figure}` and `remedies`)."
    if len(ratio):
        kept = np.log(ratio).abs().idxmin()
        if kept not in learned and kept in loss:
            quote = Quote(f"gradient_kept_{task}")
            text = (head + f"{kept} keeps it closest to its size at the loss ({quote.median('ratio', ratios.get_group(kept))}) "
                    f"yet ends at {quote.median('relative_loss', losses.get_group(kept))} times the constant predictor's loss" + where)
            out.append(quote.finding(text, {"ratio": ratio[kept], "relative_loss": loss[kept]}))
    if PLAIN_REMEDY in ratio:
        for label in learned:
            if label in ratio and label != PLAIN_REMEDY and ratio[label] <= ratio[PLAIN_REMEDY]:
                quote = Quote(f"gradient_learns_{task}_{label}")
                text = (head + f"{label} beats the constant predictor ({quote.median('relative_loss', losses.get_group(label))}) "
                        f"though its gradient vanishes as fast as the plain RNN's or faster "
                        f"({quote.median('ratio', ratios.get_group(label))} against "
                        f"{quote.median('plain_ratio', ratios.get_group(PLAIN_REMEDY))})" + where)
                out.append(quote.finding(text, {"ratio": ratio[label], "relative_loss": loss[label]}))
    return out
