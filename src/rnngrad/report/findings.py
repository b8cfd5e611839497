"""The report's content: which runs each figure shows, the figures, their captions, the findings and
the runs table, all computed from the runs in MLflow (no number is typed by hand).

`build(study)` returns a `Report` (markdown text and matplotlib Figures); `scripts/build_report.py`
writes it. A question without runs, a run still running, a diverged run or a missing artifact never
raises: the figure is skipped or annotated and the report says what is missing and how to produce it.
"""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

from rnngrad import store
from rnngrad.core import GAMMA
from rnngrad.report import figures, load
from rnngrad.tasks import SOLVED_ACCURACY

QUESTIONS = ("init", "precision", "seqlen", "clipping", "truncation", "charlm", "remedies")
TRAINED_QUESTIONS = ("seqlen", "clipping", "truncation", "remedies")  # the ones with a loss-curve figure
# tasks whose only loss is at the last step: there ||dL/ds_t|| <= ||dL/ds_T|| ||ds_T/ds_t|| <= ||dL/ds_T|| bound
LAST_STEP_LOSS_TASKS = ("adding", "temporal_order")
# params that do not describe a configuration
BOOKKEEPING = ("tracking.", "train.verbose", "question")
FIXED_SETTINGS = ("task.name", "task.seq_len", "model.cell", "model.hidden_size", "train.steps", "train.batch_size",
                  "optim.name", "optim.lr", "clip.mode", "bptt.truncation")
SHORT_NAMES = {"clip.mode": "clip", "clip.threshold": "clip threshold", "bptt.truncation": "k", "bptt.mode": "bptt",
               "model.spectral_radius": "ρ", "task.seq_len": "T", "task.name": "task", "model.hidden_size": "H"}
AGREE = 0.05  # nats per step: a measured decay rate this close to a predicted one counts as agreeing
BEATS = 0.9  # a median final loss below this fraction of the constant predictor's counts as beating it
PLAIN_REMEDY = "tanh, gaussian init"  # the plain RNN the remedies are set against (conf/experiment/remedies.yaml)
SAME_NORM = 1e-3  # a relative difference between the float32 and float64 norms below this counts as agreeing


def fmt(x, digits: int = 3) -> str:
    """A number with `digits` significant digits; NaN as 'n/a'."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, (int, np.integer)) or float(x).is_integer() and abs(x) < 1e6:
        return f"{int(x)}"
    return f"{x:.{digits}g}"


def signed(x: float) -> str:
    """+0.40, -0.45; a rounding -0.00 is shown as +0.00."""
    return f"{x + 0.0:+.2f}" if abs(x) >= 0.005 else "+0.00"


def pct(part: int, whole: int) -> str:
    """'3 of 12 (25%)'."""
    return f"{part} of {whole} ({100 * part / whole:.0f}%)" if whole else "0 of 0"


def value_text(v) -> str:
    """A param value as written on the command line: numbers short, NaN/None as 'null'."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "null"
    return fmt(v) if _is_number(v) else str(v)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and not math.isnan(v)


def _sort_key(v):
    """Numbers by value, then everything else (NaN, strings) by its text."""
    return (0, float(v), "") if _is_number(v) else (1, 0.0, str(v))


class Study:
    """The runs of one experiment, with loaders for their histories and artifacts.

    Records what could not be loaded (`missing_artifacts`: run_id -> reason).
    """

    def __init__(self, client: MlflowClient | None, exp_id: str | None, runs: pd.DataFrame, *, uri: str, experiment: str):
        self.client, self.exp_id, self.runs = client, exp_id, runs
        self.uri, self.experiment = uri, experiment
        self.params = sorted(k for k in runs.attrs.get("params", []) if not k.startswith(BOOKKEEPING))
        self.missing_artifacts: dict[str, str] = {}

    @classmethod
    def open(cls, uri: str, experiment: str) -> Study:
        """Read the experiment's runs; a missing experiment gives an empty study (nothing is created).

        Raises store.StoreNotFound when the store itself does not exist, store.StoreError when it cannot be read.
        """
        store.check_store(uri, must_exist=True)
        client = MlflowClient(uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return cls(None, None, pd.DataFrame(columns=load.RUN_COLUMNS), uri=uri, experiment=experiment)
        return cls(client, found.experiment_id, load.load_runs(client, found.experiment_id), uri=uri, experiment=experiment)

    def history(self, runs: pd.DataFrame, key: str) -> pd.DataFrame:
        """Columns run_id, step, value of metric `key` for these runs."""
        return load.load_histories(self.client, runs["run_id"], [key])[["run_id", "step", "value"]]

    def grad_norms(self, runs: pd.DataFrame) -> pd.DataFrame:
        """The grad_norms.parquet rows of these runs; runs without the artifact are recorded as missing."""
        found = load.load_grad_norms(self.client, runs["run_id"])
        self.missing_artifacts.update(found.missing)
        return found.frame

    def command(self, question: str) -> str:
        """The command that produces the runs of a question into this report's store and experiment."""
        parts = ["python -m rnngrad.train -m", f"+experiment={question}"]  # the preset conf/experiment/<question>.yaml
        if self.uri != store.resolve_uri(None):
            parts.append(f"tracking.uri={store.redact(self.uri)}")
        if self.experiment != "rnngrad":
            parts.append(f"tracking.experiment={self.experiment}")
        return " ".join(parts)


@dataclass
class Section:
    """One figure of the report: `figure` is None when it could not be drawn, and `missing` says why."""

    name: str
    title: str
    figure: Figure | None = None
    caption: str = ""
    missing: str = ""


@dataclass
class Report:
    source: str
    findings: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    errors: list[str] = field(default_factory=list)  # figures that failed to draw (a bug, not missing data)

    def markdown(self, figure_dir: str = "figures") -> str:
        lines = ["# rnngrad report", "", self.source, "", "## Findings", ""]
        lines += [f"- {f}" for f in self.findings] or ["- No findings: the store holds no finished runs of the study's questions."]
        lines += ["", "## Figures", ""]
        for number, s in enumerate(self.sections, start=1):
            lines += [f"### {number}. {s.title} (`{s.name}`)", ""]
            if s.figure is not None:
                lines += [f"![{s.title}]({figure_dir}/{s.name}.png)", "",
                          f"[PDF]({figure_dir}/{s.name}.pdf). {s.caption}", ""]
            else:
                lines += [f"Not drawn: {s.missing}", ""]
        if self.notes or self.errors:
            lines += ["## Missing or partial data", ""]
            lines += [f"- {n}" for n in self.errors + self.notes] + [""]
        lines += ["## Runs per question", "", _markdown_table(self.table), ""]
        return "\n".join(lines)


def _markdown_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "No runs."
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(table.columns))) + "|"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


# selecting runs

def ended(runs: pd.DataFrame) -> pd.DataFrame:
    """FINISHED runs with an outcome; of several runs of one configuration (config_hash) the latest."""
    done = runs[(runs["status"] == "FINISHED") & runs["outcome"].notna()]
    if "config_hash" in done:
        hashed = done["config_hash"].notna()
        latest = done[hashed].sort_values("start_time").drop_duplicates("config_hash", keep="last")
        done = pd.concat([latest, done[~hashed]])
    return done.sort_values("run_name").reset_index(drop=True)


def of_question(runs: pd.DataFrame, question: str) -> pd.DataFrame:
    return runs[runs["question"] == question] if "question" in runs else runs.iloc[:0]


def trained(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["train.steps"] > 0] if "train.steps" in runs else runs.iloc[:0]


def varying(runs: pd.DataFrame, params: list[str], exclude=()) -> list[str]:
    """The params that take more than one value among these runs, model and task first, seed last."""
    keys = [k for k in params if k in runs and k not in exclude and runs[k].astype(str).nunique() > 1]
    groups = ("model", "task", "clip", "bptt", "optim", "train")
    return sorted(keys, key=lambda k: (groups.index(k.split(".")[0]) if k.split(".")[0] in groups else len(groups), k))


def describe(runs: pd.DataFrame, params: list[str]) -> str:
    """'N runs; varying: a ∈ {..}, b ∈ {..}; fixed: task.name adding, ...' for a caption (a sweep may be a
    union of grids, so the varying values are listed, not claimed to be crossed)."""
    grid = varying(runs, params)
    parts = [f"{len(runs)} runs"]
    if grid:
        parts.append("varying: " + ", ".join(
            f"{k} ∈ {{{', '.join(value_text(v) for v in sorted(runs[k].unique(), key=_sort_key))}}}" for k in grid))
    fixed = [f"{k} {value_text(runs[k].iloc[0])}" for k in FIXED_SETTINGS if k in runs and k not in grid and len(runs)]
    if fixed:
        parts.append("fixed: " + ", ".join(fixed))
    return "; ".join(parts)


def config_labels(runs: pd.DataFrame, params: list[str], exclude=()) -> pd.Series:
    """A label per run naming its configuration by the params that vary (seeds excluded): 'init=gaussian, clip=norm'."""
    keys = varying(runs, params, exclude=("seed", *exclude))
    short = [SHORT_NAMES.get(k, k.rsplit(".", 1)[-1]) for k in keys]
    names = [s if short.count(s) == 1 else k for k, s in zip(keys, short)]
    if not keys:
        return pd.Series("all runs", index=runs.index)
    return pd.Series([", ".join(f"{n}={value_text(v)}" for n, v in zip(names, row)) for row in runs[keys].itertuples(index=False)],
                     index=runs.index)


# the sections

def _missing_runs(study: Study, question: str, what: str = "finished runs") -> str:
    return f"no {what} with question={question}. Produce them with `{study.command(question)}`."


def _missing_grad_norms(study: Study, question: str) -> str:
    return (f"none of the {question} runs has grad_norms.parquet. Rerun them with "
            f"`{study.command(question)} tracking.skip_completed=false`.")


def _init(study: Study, runs: pd.DataFrame, report: Report) -> list[Section]:
    through = Section("init_grad_through_time", "Gradient norm through time at initialization")
    decay = Section("init_decay_rate", "Decay rate against spectral radius and Lyapunov exponent")
    init = of_question(runs, "init")
    if init.empty:
        through.missing = decay.missing = _missing_runs(study, "init")
        return [through, decay]
    task = describe(init, study.params)
    norms = study.grad_norms(init)
    have = init[init["run_id"].isin(norms["run_id"])]
    if have.empty:
        through.missing = _missing_grad_norms(study, "init")
    else:
        through.figure = figures.grad_through_time(norms, have)
        lost = len(init) - len(have)
        through.caption = (
            f"||dL/ds_t|| at initialization against the distance T − t from the loss; {task}. Median over runs "
            "with the interquartile band; dotted: the Pascanu et al. bound ||dL/ds_T|| (γ σ_max)^(T−t) with the "
            "measured σ_max (γ = 1/4 sigmoid, 1 otherwise); dash-dotted for linear: ||dL/ds_T|| ρ^(T−t)."
            + (f" {lost} run(s) without grad_norms.parquet left out." if lost else ""))
        report.findings += _bound_findings(norms, have, through.name)
    if not init.reindex(columns=["grad/decay_rate", "spectral/radius"]).notna().all(axis=1).any():
        decay.missing = "no init run logged both grad/decay_rate and spectral/radius."
        return [through, decay]
    decay.figure = figures.decay_rate_vs_radius(init)
    decay.caption = (
        f"Left: slope of log ||dL/ds_t|| per step back (negative: vanishing) against the measured spectral radius, "
        f"median and interquartile range over runs, dashed the theory log(γρ); right: the same slope against the top "
        f"Lyapunov exponent of the state dynamics (QR method). {task}.")
    report.findings += _decay_findings(init, decay.name)
    return [through, decay]


def _bound_findings(norms: pd.DataFrame, runs: pd.DataFrame, name: str) -> list[str]:
    runs = runs[runs["task.name"].isin(LAST_STEP_LOSS_TASKS)]
    data = norms[norms["run_id"].isin(runs["run_id"])]
    data = data[data.groupby("run_id")["step"].transform("min") == data["step"]].dropna(subset=["bound"])
    if data.empty:
        return []
    T = data.groupby("run_id")["t"].transform("max")
    last = data[data["t"] == T].set_index("run_id")["ds_norm"]
    ratio = data["ds_norm"] / (data["run_id"].map(last) * data["bound"])
    held = ratio.groupby(data["run_id"]).max() <= 1 + 1e-9
    farthest = data.assign(ratio=ratio)[data["t"] == 1].merge(runs, on="run_id")
    farthest = farthest[farthest["ratio"] > 0]
    gaps = [f"{init} W 10^{fmt(np.log10(g['ratio'].median()), 2)} (median σ_max/ρ = {fmt((g['spectral/sigma_max'] / g['spectral/radius']).median(), 3)})"
            for init, g in farthest.groupby("model.init")]
    verdict = "held" if held.all() else "was exceeded, which the theory rules out,"
    return [f"The Pascanu et al. bound ||dL/ds_t|| ≤ ||dL/ds_T|| (γσ_max)^(T−t) {verdict} at every t in "
            f"{pct(int(held.sum()), len(held))} runs at initialization"
            + ("" if held.all() else f" (exceeded in {len(held) - int(held.sum())})")
            + f". At the farthest step the median ratio measured/bound is {', '.join(gaps)} (figure `{name}`)."]


def _decay_findings(init: pd.DataFrame, name: str) -> list[str]:
    data = init.dropna(subset=["grad/decay_rate", "spectral/radius"])
    if data.empty:
        return []
    gamma = data["model.activation"].map(GAMMA).astype(float)
    data = data.assign(theory=np.log(gamma * data["spectral/radius"]), gamma=gamma)
    data = data.assign(excess=data["grad/decay_rate"] - data["theory"])
    out = []
    linear = data[data["model.activation"] == "linear"]
    if len(linear):
        dev = linear["excess"].abs().max()
        verdict = "as the theory of the linear RNN predicts" if dev < AGREE else "more than the theory of the linear RNN allows"
        out.append(f"Linear RNN: the measured decay rate differs from log ρ by at most {fmt(dev, 2)} nats per step over "
                   f"{len(linear)} runs, {verdict} (figure `{name}`).")
    for act in [a for a in figures.ordered(data["model.activation"]) if a != "linear" and a in GAMMA]:
        part = data[data["model.activation"] == act]
        below = int((part["excess"] <= AGREE).sum())
        top = part[part["model.spectral_radius"] == part["model.spectral_radius"].max()]
        if top.empty:  # no grid over rho: the run with the largest measured one
            top = part.nlargest(1, "spectral/radius")
        measured, theory = top["grad/decay_rate"].median(), top["theory"].median()
        sentence = (f"{act}: the measured decay rate lies at or below log(γρ) (γ = {fmt(GAMMA[act])}) in {pct(below, len(part))} runs; "
                    f"at the largest ρ = {fmt(top['spectral/radius'].median())} it is {signed(measured)} against {signed(theory)} predicted")
        if measured < theory - AGREE:
            sentence += (f": f'(a) < γ away from a = 0 (and {100 * top['act/saturation'].median():.0f}% of units saturated, "
                         "median), so each step contracts the gradient more than log(γρ) assumes")
        out.append(sentence + f" (figure `{name}`).")
        out += _crossings(part, act, name)
    both = data.dropna(subset=["lyap/top"])
    if len(both) > 1:
        diff = (both["grad/decay_rate"] - both["lyap/top"]).abs()
        r = np.corrcoef(both["grad/decay_rate"], both["lyap/top"])[0, 1]
        out.append(f"The measured decay rate tracks the top Lyapunov exponent: correlation {fmt(r, 4)}, median |difference| "
                   f"{fmt(diff.median(), 2)} and at most {fmt(diff.max(), 2)} nats per step over {len(both)} runs (figure `{name}`, right).")
    return out


def _crossings(part: pd.DataFrame, act: str, name: str) -> list[str]:
    """Where the median decay rate changes sign as rho grows along the grid, per init, against 1/gamma."""
    edge = 1 / GAMMA[act]
    texts = []
    for init, group in part.groupby("model.init"):
        curve = group.groupby("model.spectral_radius")[["spectral/radius", "grad/decay_rate"]].median()
        rho, rate = curve["spectral/radius"].to_numpy(), curve["grad/decay_rate"].to_numpy()
        if len(rho) < 2:
            continue
        change = np.nonzero((rate[:-1] < 0) & (rate[1:] >= 0))[0]
        if len(change):
            i = change[0]
            x = np.log(rho[i]) + (np.log(rho[i + 1]) - np.log(rho[i])) * (-rate[i]) / (rate[i + 1] - rate[i])
            texts.append(f"at ρ ≈ {fmt(np.exp(x), 2)} for {init} W")
        elif (rate < 0).all():
            texts.append(f"nowhere up to ρ = {fmt(rho[-1])} for {init} W (still {signed(rate[-1])} there)")
        else:
            texts.append(f"already below the smallest ρ = {fmt(rho[0])} for {init} W ({signed(rate[0])} there)")
    if not texts:
        return []
    return [f"{act}, where the measured decay rate turns positive (gradients stop vanishing): " + "; ".join(texts)
            + f"; the theory line log(γρ) does so at ρ = 1/γ = {fmt(edge)} (figure `{name}`)."]


def _precision(study: Study, runs: pd.DataFrame, report: Report) -> Section:
    section = Section("precision", "float32 against float64: where a vanishing gradient underflows")
    data = of_question(runs, "precision")
    if data.empty:
        section.missing = _missing_runs(study, "precision")
        return section
    norms = study.grad_norms(data)
    have = data[data["run_id"].isin(norms["run_id"])]
    if have.empty:
        section.missing = _missing_grad_norms(study, "precision")
        return section
    section.figure = figures.precision(norms, have)
    lost = len(data) - len(have)
    section.caption = (
        "||dL/ds_t|| at initialization against the distance T − t from the loss, one panel per activation, a shade per "
        "spectral radius (darker for larger ρ); solid float64, dashed float32, the median over runs with the interquartile "
        "band; both precisions start from the same weights (the same seed). Norms are summed in float64, so a float32 norm "
        "of exactly 0 means the float32 gradient itself underflowed; the tick at the bottom marks where float32 first "
        "reports 0, the open circle the float64 norm there. Dotted: float32's smallest subnormal "
        f"{fmt(figures.FLOAT32.smallest_subnormal, 2)}; dash-dotted: its smallest normal number {fmt(figures.FLOAT32.tiny, 2)}. "
        f"{describe(have, study.params)}." + (f" {lost} run(s) without grad_norms.parquet left out." if lost else ""))
    setting = ", ".join(f"{task}, T = {fmt(T)}" for task, T in have.groupby(["task.name", "task.seq_len"]).size().index)
    report.findings += _precision_findings(figures.precision_curves(norms, have), setting, section.name)
    return section


def _precision_findings(curves: pd.DataFrame, setting: str, name: str) -> list[str]:
    """Per activation and spectral radius with runs in both precisions: the distance from the loss at which float32's
    median ||dL/ds_t|| first is exactly 0 and float64's median there; and the largest relative difference between
    them where both are positive, while float32's norm is normal and below that (subnormal).

    curves: figures.precision_curves (model.activation, model.spectral_radius, model.dtype, distance, median).
    setting: what the runs share, e.g. 'adding, T = 200'.
    """
    lost, agree, normal_ok, subnormal_ok = [], [], True, True
    for act in figures.ordered(curves["model.activation"]):
        panel = curves[curves["model.activation"] == act]
        for rho in figures.radii(panel["model.spectral_radius"]):
            group = figures.with_radius(panel, rho)
            float32, float64 = (group[group["model.dtype"] == d].set_index("distance")["median"] for d in ("float32", "float64"))
            if float32.empty or float64.empty:
                continue
            config = f"{act}, " + (f"ρ = {fmt(rho)}" if not math.isnan(rho) else "ρ of the init's own scale")
            zero, zero64 = figures.first_zero(float32), figures.first_zero(float64)
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
            both = pd.DataFrame({"float32": float32, "float64": float64}).dropna()
            both = both[(both["float32"] > 0) & (both["float64"] > 0)]
            relative = (both["float32"] - both["float64"]).abs() / both["float64"]
            normal = both["float32"] >= figures.FLOAT32.tiny
            item = f"{config}: {ratio_text(relative[normal].max())} at the {int(normal.sum())} distances where float32's norm is normal"
            if (~normal).any():
                item += f", {ratio_text(relative[~normal].max())} at the {int((~normal).sum())} where it is subnormal"
            agree.append(item)
            normal_ok &= not (relative[normal] >= SAME_NORM).any()
            subnormal_ok &= not (relative[~normal] >= SAME_NORM).any()
    if not lost:
        return []
    if normal_ok and subnormal_ok:
        verdict = "float32 agrees with float64 wherever both are positive"
    elif normal_ok:
        verdict = "float32 agrees with float64 while its norm is normal and loses precision in the subnormal range before it reaches 0"
    else:
        verdict = "float32 differs from float64 even where its norm is normal"
    return [f"Where float32 loses a vanishing gradient that float64 still measures, ||dL/ds_t|| at initialization ({setting}, "
            f"the same weights in both precisions, median over runs; float32's smallest subnormal is "
            f"{fmt(figures.FLOAT32.smallest_subnormal, 2)}): " + "; ".join(lost) + f" (figure `{name}`).",
            "Where both precisions report a positive ||dL/ds_t||, the largest relative difference |float32 − float64| / float64 "
            f"(float32's smallest normal number is {fmt(figures.FLOAT32.tiny, 2)}, its ε {fmt(figures.FLOAT32.eps, 2)}): "
            + "; ".join(agree) + f"; so, counting a relative difference below {fmt(SAME_NORM)} as agreement, {verdict} "
            f"(figure `{name}`)."]


def _heatmaps(study: Study, runs: pd.DataFrame, report: Report) -> Section:
    section = Section("grad_heatmaps", "Gradient norm over training and time (representative runs)")
    pool = trained(runs)
    if len(pool):
        pool = pool[(pool["bptt.mode"] == "window") & pool["bptt.truncation"].isna()]
    decay = study.history(pool, "grad/decay_rate").groupby("run_id")["value"].median() if len(pool) else pd.Series(dtype=float)
    pool = pool.assign(decay=pool["run_id"].map(decay)).dropna(subset=["decay"])
    if pool.empty:
        section.missing = ("no finished trained run (train.steps > 0, full BPTT) with a decay rate. Any trained sweep "
                           f"provides them, e.g. `{study.command('seqlen')}`.")
        return section
    # a run that diverged within a few steps makes a poor picture: prefer runs that trained to the end
    calm = pool[pool["outcome"] != "diverged"]
    lowest = (calm if len(calm) and calm["decay"].min() < 0 else pool).nsmallest(1, "decay").iloc[0]
    highest = (calm if len(calm) and calm["decay"].max() > 0 else pool).nlargest(1, "decay").iloc[0]
    picks = {}
    if lowest["decay"] < 0:
        picks["vanishing"] = lowest
    if highest["decay"] > 0:
        picks["exploding"] = highest
    rest = pool[~pool["run_id"].isin([p["run_id"] for p in picks.values()])]
    if len(rest):
        picks["healthy"] = rest.loc[rest["decay"].abs().idxmin()]
    norms = study.grad_norms(pd.DataFrame({"run_id": [p["run_id"] for p in picks.values()]}))
    frames = {f"{kind}" + (f" (diverged at step {fmt(p['diverged_at'])})" if p["outcome"] == "diverged" else "")
              + f"\n{p['run_name']}\nmedian decay rate {p['decay']:+.3f} per step": norms[norms["run_id"] == p["run_id"]]
              for kind, p in picks.items() if (norms["run_id"] == p["run_id"]).any()}
    if not frames:
        section.missing = "the chosen runs have no grad_norms.parquet artifact."
        return section
    section.figure = figures.grad_heatmaps(frames)
    absent = "".join(
        f" No trained run has a {kind} gradient over training (median decay rates from {pool['decay'].min():+.3f} to "
        f"{pool['decay'].max():+.3f} per step), so there is no {kind} example."
        for kind in ("vanishing", "exploding") if kind not in picks)
    section.caption = (
        f"log10 ||dL/ds_t|| over training step × time step t for {len(frames)} of the {len(pool)} trained runs with full BPTT, "
        "chosen by the median over training of their decay rate (slope of log ||dL/ds_t|| per step back): the most "
        "negative (vanishing), the most positive (exploding) and the one closest to 0 (healthy), preferring runs that "
        f"did not diverge; blank cells: zero or non-finite norms.{absent}")
    return section


def _seqlen(study: Study, runs: pd.DataFrame, report: Report) -> Section:
    section = Section("success_vs_length", "Success rate against sequence length")
    data = of_question(runs, "seqlen")
    if data.empty:
        section.missing = _missing_runs(study, "seqlen")
        return section
    info = data.assign(panel=data["model.activation"] + ", " + data["model.init"] + " init",
                       label=[f"{a}, {figures.clip_label(m, t)}" for a, m, t in zip(data["model.activation"], data["clip.mode"], data["clip.threshold"])],
                       colour=data.apply(figures.colour_key, axis=1))
    section.figure = figures.success_vs_length(info)
    section.caption = (f"Fraction of runs solved (diverged counts as failed) against T, one panel per activation × init, "
                       f"a line per clipping setting, as in Pascanu et al. (2013) Fig. 7; {describe(data, study.params)}.")
    solved = data["outcome"] == "solved"
    by_T = solved.groupby(data["task.seq_len"]).agg(["sum", "size"])
    report.findings.append("Fraction solved by sequence length, pooled over every configuration: "
                           + ", ".join(f"T = {T}: {pct(int(r['sum']), int(r['size']))}" for T, r in by_T.iterrows())
                           + f" (figure `{section.name}`).")
    clipped = data["clip.mode"] != "none"
    if clipped.any() and (~clipped).any():
        with_, without = solved[clipped], solved[~clipped]
        claim = (f"With gradient clipping {pct(int(with_.sum()), len(with_))} runs solved the task, without {pct(int(without.sum()), len(without))}")
        if with_.sum() + without.sum() == 0:
            claim += ", so these runs cannot tell whether clipping helps"
        elif with_.mean() <= without.mean():
            claim += "; Pascanu et al. (2013, Fig. 7) found clipping raised the success rate, which these runs do not show"
        report.findings.append(claim + f" (figure `{section.name}`).")
    return section


def remedy_label(row) -> str:
    """What a remedies run tries: 'lstm', or 'tanh, gaussian init, layer norm, norm clip 1'."""
    if row.get("model.cell", "rnn") != "rnn":
        return row["model.cell"]
    parts = [row["model.activation"], f"{row['model.init']} init"]
    if row.get("model.norm", "none") != "none":
        parts.append(f"{row['model.norm']} norm")
    if row.get("clip.mode", "none") != "none":
        parts.append(figures.clip_label(row["clip.mode"], row["clip.threshold"]))
    return ", ".join(parts)


def _remedy_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The trained remedies runs with label (the remedy), colour and relative_loss (final eval/loss / task.baseline;
    eval/loss and eval/accuracy are NaN for runs that never logged them)."""
    data = trained(of_question(runs, "remedies"))
    if data.empty:
        return data
    data = data.reindex(columns=[*data.columns, *(k for k in ("eval/loss", "eval/accuracy") if k not in data)])  # NaN if never logged
    return data.assign(label=data.apply(remedy_label, axis=1), colour=data.apply(figures.colour_key, axis=1),
                       relative_loss=data["eval/loss"] / data["task.baseline"])


def _remedies(study: Study, runs: pd.DataFrame, report: Report) -> Section:
    section = Section("remedies", "Remedies: final loss and success against sequence length")
    data = _remedy_runs(runs)
    if data.empty:
        section.missing = _missing_runs(study, "remedies", "finished trained runs")
        return section
    section.figure = figures.remedies(data)
    section.caption = (
        f"Top: final test loss relative to the constant predictor's (tag task.baseline; below 1 the model uses the inputs), "
        f"median over seeds with the interquartile range, against T, one panel per task, a line per remedy (colour: "
        f"activation, normalization or gated cell); dotted: ratio 1. Bottom: runs solved (test accuracy ≥ {fmt(SOLVED_ACCURACY)}; "
        f"diverged counts as failed) per remedy and T. {describe(data, study.params)}.")
    report.findings += _remedy_loss_findings(data, section.name)
    return section


def _count_text(sizes: pd.Series) -> str:
    """'1 run each', '2 runs each' or '1–3 runs each' from the number of runs per configuration."""
    if sizes.min() == sizes.max():
        return f"{fmt(sizes.min())} run{'' if sizes.min() == 1 else 's'} each"
    return f"{fmt(sizes.min())}–{fmt(sizes.max())} runs each"


def ratio_text(x: float) -> str:
    """A ratio with 2 significant digits, trailing zeros kept (1.0, 0.0020, 92, 8.8e+04); NaN as 'n/a'."""
    return "n/a" if math.isnan(x) else f"{x:#.2g}".rstrip(".")


def _ratio_list(ratios: pd.Series) -> str:
    """'gru (0.0020); lstm (0.0067)' from label -> ratio, in the series' order."""
    return "; ".join(f"{label} ({ratio_text(r)})" for label, r in ratios.items())


def _remedy_loss_findings(data: pd.DataFrame, name: str) -> list[str]:
    """Per task: the median final loss relative to the constant predictor per remedy and T, which remedies beat
    it (median below BEATS of it), the runs solved, and the remedies that fail where the classic account has them learn.

    data: one row per run with task.name, task.seq_len, label, relative_loss, outcome, eval/accuracy, train.steps.
    """
    out = []
    for task, part in data.groupby("task.name"):
        steps = ", ".join(fmt(s) for s in sorted(part["train.steps"].unique()))
        median = part.groupby(["task.seq_len", "label"])["relative_loss"].median().dropna()
        sentences = []
        for T, ratios in median.groupby(level=0):
            ratios = ratios.droplevel(0).sort_values()
            beat, rest = ratios[ratios < BEATS], ratios[ratios >= BEATS]
            if beat.empty:
                sentences.append(f"T = {fmt(T)}: none beats it, {_ratio_list(rest)}")
            else:
                sentences.append(f"T = {fmt(T)}: {_ratio_list(beat)} {'beat' if len(beat) > 1 else 'beats'} it"
                                 + (f"; {_ratio_list(rest)} {'do' if len(rest) > 1 else 'does'} not" if len(rest) else ""))
        solved = part["outcome"] == "solved"
        claim = (f"Remedies on {task} ({_count_text(part.groupby(['task.seq_len', 'label']).size())}, {steps} training steps), "
                 + (f"median final test loss relative to the constant predictor's, beating it meaning below {fmt(BEATS)} of it. "
                    + "".join(f"{sentence}. " for sentence in sentences) if sentences else "no final test loss logged. ")
                 + f"Runs solved (test accuracy ≥ {fmt(SOLVED_ACCURACY)}): {pct(int(solved.sum()), len(part))}")
        best = part.dropna(subset=["eval/accuracy"])
        if len(best):
            top = best.loc[best["eval/accuracy"].idxmax()]
            claim += f"; the highest final test accuracy is {fmt(top['eval/accuracy'])} ({top['label']}, T = {fmt(top['task.seq_len'])})"
        out.append(claim + f" (figure `{name}`).")
        out += _classic_account(task, part, name)
    return out


def _classic_account(task: str, part: pd.DataFrame, name: str) -> list[str]:
    """The remedies that do not beat the constant predictor at the task's longest T, where the classic account has
    every remedy learn what the plain tanh RNN (PLAIN_REMEDY) cannot."""
    T = part["task.seq_len"].max()
    ratios = part[part["task.seq_len"] == T].groupby("label")["relative_loss"].median().dropna().sort_values()
    remedies = ratios.drop(PLAIN_REMEDY, errors="ignore")
    failed, beat = remedies[remedies >= BEATS], remedies[remedies < BEATS]
    if failed.empty:
        return []
    claim = (f"Against the classic account (each remedy carries the gradient over long spans and so learns where the plain "
             f"RNN does not), on {task} at T = {fmt(T)}: {_ratio_list(failed)} {'do' if len(failed) > 1 else 'does'} not beat "
             f"the constant predictor within {', '.join(fmt(s) for s in sorted(part['train.steps'].unique()))} training steps")
    if PLAIN_REMEDY in ratios:
        plain = ratios[PLAIN_REMEDY]
        claim += f", {'like' if plain >= BEATS else 'although'} the plain RNN ({PLAIN_REMEDY}, {ratio_text(plain)}){'' if plain >= BEATS else ' does'}"
    claim += f"; only {_ratio_list(beat)} {'do' if len(beat) > 1 else 'does'}" if len(beat) else "; no remedy does"
    return [claim + f" (figure `{name}`)."]


def _remedies_grad(study: Study, runs: pd.DataFrame, report: Report) -> Section:
    section = Section("remedies_grad_through_time", "Remedies: gradient norm through time at initialization")
    data = _remedy_runs(runs)
    if data.empty:
        section.missing = _missing_runs(study, "remedies", "finished trained runs")
        return section
    init = figures.at_initialization(study.grad_norms(data))
    have = data[data["run_id"].isin(init["run_id"])]
    if have.empty:
        section.missing = _missing_grad_norms(study, "remedies")
        return section
    section.figure = figures.remedies_grad_through_time(init, data)
    shown = figures.longest(have)
    every_step = sorted(set(shown["task.name"]) - set(LAST_STEP_LOSS_TASKS))
    lost = len(data) - len(have)
    section.caption = (
        "||dL/ds_t|| at initialization (each run's first training step) against the distance from the sequence's last "
        "step, at each task's longest T, median over seeds with the interquartile band, a line per remedy (colours and "
        "styles as in `remedies`); dashed in the LSTM's colour: its cell-state path ||dL/dc_t||."
        + (" Clipping acts after the gradient is computed, so at initialization a clipped run lies on the same model's "
           "unclipped line." if (have["clip.mode"] != "none").any() else "")
        + (f" On {', '.join(every_step)} the loss covers every step, so there ||dL/ds_t|| sums the gradients of every "
           "later loss." if every_step else "")
        + f" {describe(shown, study.params)}." + (f" {lost} run(s) without grad_norms.parquet left out." if lost else ""))
    report.findings += _remedy_grad_findings(init, data, section.name)
    return section


def _remedy_grad_findings(init: pd.DataFrame, runs: pd.DataFrame, name: str) -> list[str]:
    """Per task at its longest T: ||dL/ds_1|| / ||dL/ds_last|| at initialization per remedy (and ||dL/dc|| the same
    for a cell state), and where it fails to predict which remedy learns.

    init: the first-step rows of grad_norms (figures.at_initialization: run_id, t, distance, ds_norm, maybe dc_norm).
    runs: one row per run with run_id, task.name, task.seq_len, label, relative_loss.
    """
    data = figures.longest(init.merge(runs[["run_id", "task.name", "task.seq_len", "label"]], on="run_id"))
    paths = [p for p in ("ds_norm", "dc_norm") if p in data]
    first = data[data["distance"] == data.groupby("run_id")["distance"].transform("max")].set_index("run_id")
    last = data[data["distance"] == 0].set_index("run_id")
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
        claim = (f"Gradient at initialization on {task}, T = {fmt(T)}" + (f" ({fmt(back + 1)} steps)" if back + 1 != T else "")
                 + ", ||dL/ds_1|| / ||dL/ds_last||, median over seeds: " + "; ".join(items))
        if task not in LAST_STEP_LOSS_TASKS:
            claim += (f". On {task} the loss covers every step, so ||dL/ds_1|| sums the gradients of every later loss and "
                      "this ratio does not isolate the long-range path")
        out.append(claim + f" (figure `{name}`).")
        if task in LAST_STEP_LOSS_TASKS:
            loss = runs[(runs["task.name"] == task) & (runs["task.seq_len"] == T)].groupby("label")["relative_loss"].median()
            out += _gradient_predicts(task, T, ratio["ds_norm"], loss, name)
    return out


def _gradient_predicts(task: str, T, ratio: pd.Series, loss: pd.Series, name: str) -> list[str]:
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
    return [f"On {task} at T = {fmt(T)} the gradient at initialization does not predict which remedy learns: " + "; ".join(parts)
            + f" (figures `{name}` and `remedies`)."]


def _loss_curves(study: Study, runs: pd.DataFrame, report: Report) -> list[Section]:
    questions = list(TRAINED_QUESTIONS) + (["adhoc"] if len(trained(of_question(runs, "adhoc"))) else [])
    sections = []
    for question in questions:
        section = Section(f"loss_{question}", f"Loss curves ({question})")
        data = trained(of_question(runs, question))
        sections.append(section)
        if data.empty:
            section.missing = _missing_runs(study, question, "finished trained runs")
            continue
        if question == "truncation":
            panel, exclude = ["full BPTT" if k != k else f"k = {k:g}" for k in data["bptt.truncation"]], ("bptt.truncation",)
        else:
            panel, exclude = data["task.name"] + ", T = " + data["task.seq_len"].astype(str), ("task.name", "task.seq_len")
        label = data.apply(remedy_label, axis=1) if question == "remedies" else config_labels(data, study.params, exclude=exclude)
        info = data.assign(label=label, panel=panel, colour=data.apply(figures.colour_key, axis=1))
        history = study.history(info, "eval/loss")
        if history.empty:
            section.missing = f"the {len(data)} runs of question={question} logged no eval/loss."
            continue
        loss = data["task.loss"].dropna().unique() if "task.loss" in data else []
        section.figure = figures.learning_curves(history, info, ylabel=f"test loss ({', '.join(loss) or 'task loss'})")
        section.caption = (f"Test loss over training, median over seeds with the interquartile band, a line per configuration; "
                           f"dotted: the constant predictor's loss (tag task.baseline). A run that stops early (diverged, or "
                           f"solved with train.stop_when_solved) leaves the median after its last step. {describe(data, study.params)}.")
        below = data["eval/loss"] < data["task.baseline"]
        report.findings.append(f"{question}: {pct(int(below.sum()), len(data))} trained runs end with a test loss below the "
                               f"constant predictor's (figure `{section.name}`).")
    return sections


def _clipping(study: Study, runs: pd.DataFrame, report: Report) -> Section:
    section = Section("clipping", "Gradient clipping: pre-clip norm and divergence")
    data = trained(of_question(runs, "clipping"))
    if data.empty:
        section.missing = _missing_runs(study, "clipping", "finished trained runs")
        return section
    history = study.history(data, "grad/norm")
    section.figure = figures.clipping(history, data)
    section.caption = (f"Left: global gradient norm before clipping over training (median over seeds, interquartile band; "
                       f"dashed: the norm threshold); right: fraction of runs diverged per mode and threshold (without "
                       f"clipping the threshold is unused, so those runs are pooled). {describe(data, study.params)}.")
    diverged = data["outcome"] == "diverged"
    if "grad/norm_peak" in data and data["grad/norm_peak"].notna().all():
        peak = data.set_index("run_id")["grad/norm_peak"]  # over every step, logged once per run
    else:  # a store from before grad/norm_peak: the peak over the logged steps only
        peak = history.groupby("run_id")["value"].max()
    parts = []
    for mode, group in data.groupby("clip.mode"):
        d = diverged[group.index]
        parts.append(f"{figures.clip_label(mode, math.nan) if mode == 'none' else mode + ' clipping'} "
                     f"{pct(int(d.sum()), len(d))} (median peak pre-clip norm {fmt(peak.reindex(group['run_id']).median())})")
    claim = "Runs diverged: " + "; ".join(parts)
    rates = diverged.groupby(data["clip.mode"]).mean()
    if "none" in rates and any(rates[m] >= rates["none"] and rates["none"] > 0 for m in rates.index if m != "none"):
        claim += ". Pascanu et al. (2013) found clipping prevents divergence; here a clipping mode diverged as often as no clipping"
    report.findings.append(claim + f" (figure `{section.name}`).")
    return section


def _truncation(study: Study, runs: pd.DataFrame, report: Report) -> Section:
    section = Section("truncation", "Truncated BPTT: gradient direction and success against k")
    data = trained(of_question(runs, "truncation"))
    if data.empty:
        section.missing = _missing_runs(study, "truncation", "finished trained runs")
        return section
    cosine = study.history(data, "grad/trunc_cosine").groupby("run_id")["value"].median()
    data = data.assign(trunc_cosine=data["run_id"].map(cosine))
    section.figure = figures.truncation(data)
    section.caption = (f"Left: cosine between the truncated and the full gradient on the same batch (each run's median over "
                       f"its diagnostic steps); middle: fraction solved; right: final test loss relative to the constant "
                       f"predictor; dashed: full BPTT; dotted vertical: the task's dependency distance (tag task.dependency). "
                       f"{describe(data, study.params)}.")
    k = data["bptt.truncation"]
    cos = data.groupby(k)["trunc_cosine"].median()
    dependency = data["task.dependency"].median()
    if len(cos):
        report.findings.append("Median cosine between truncated and full gradient: " + ", ".join(f"k = {fmt(kk)}: {fmt(c, 2)}" for kk, c in cos.items())
                               + f", against a dependency distance of {fmt(dependency)} steps (figure `{section.name}`).")
    short = data[k < data["task.dependency"]]
    full = data[k.isna()]
    if len(short):
        won = short[short["outcome"] == "solved"]
        claim = f"Truncation shorter than the dependency (k < {fmt(dependency)}): {pct(len(won), len(short))} runs solved"
        if len(won):
            claim += f" (at k = {', '.join(fmt(v) for v in sorted(won['bptt.truncation'].unique()))})"
        if len(full):
            claim += f"; full BPTT: {pct(int((full['outcome'] == 'solved').sum()), len(full))}"
        if len(won):
            claim += ("; with k below the dependency distance the loss gradient misses the earliest relevant input of "
                      "at least some sequences, yet the weights learned inside the window act on every step, so some "
                      "longer-range behaviour can still emerge")
        report.findings.append(claim + f" (figure `{section.name}`).")
    return section


def _saturation(study: Study, runs: pd.DataFrame, report: Report) -> Section:
    section = Section("saturation", "Saturation over training")
    data = trained(runs)
    if "model.cell" in data:
        data = data[data["model.cell"] == "rnn"]
    if data.empty:
        section.missing = f"no finished trained runs. Any trained sweep provides them, e.g. `{study.command('seqlen')}`."
        return section
    history = study.history(data, "act/saturation")
    if history.empty:
        section.missing = "the trained runs logged no act/saturation."
        return section
    section.figure = figures.saturation(history, data)
    section.caption = ("Fraction of units whose derivative f'(a) is below 1% of its maximum (dead units for relu), over "
                       f"training, one panel per question, median over the runs of an activation with the interquartile band; "
                       f"{len(data)} trained runs of plain RNN cells.")
    last = history.sort_values("step").groupby("run_id")["value"].last()
    final = data.assign(final=data["run_id"].map(last)).groupby("model.activation")["final"].median().dropna()
    report.findings.append("Median fraction of saturated units at the end of training, over every trained question: "
                           + ", ".join(f"{a} {100 * final[a]:.0f}%" for a in figures.ordered(final.index)) + f" (figure `{section.name}`).")
    return section


def _charlm(study: Study, runs: pd.DataFrame, report: Report) -> Section:
    section = Section("charlm_bpc", "Character language model: bits per character")
    data = trained(of_question(runs, "charlm"))
    if data.empty:
        section.missing = _missing_runs(study, "charlm", "finished trained runs")
        return section
    info = data.assign(label=config_labels(data, study.params), colour=data.apply(figures.colour_key, axis=1))
    history = study.history(info, "eval/bpc")
    if history.empty:
        section.missing = f"the {len(data)} charlm runs logged no eval/bpc."
        return section
    section.figure = figures.learning_curves(history, info, ylabel="test bits per character", baseline_scale=1 / math.log(2),
                                             baseline_label="unigram entropy", logy=False)
    section.caption = (f"Test bits per character over training, median over seeds with the interquartile band; dotted: the "
                       f"unigram entropy of the training text (task.baseline / ln 2). {describe(data, study.params)}.")
    baseline = data["task.baseline"].median() / math.log(2)
    final = data.groupby("model.activation")["eval/bpc"].median().dropna()
    report.findings.append(f"Character language model, median final test bits per character against the unigram entropy {fmt(baseline)}: "
                           + ", ".join(f"{a} {fmt(final[a])} ({100 * final[a] / baseline:.0f}%)" for a in figures.ordered(final.index))
                           + f" (figure `{section.name}`).")
    return section


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs per question: solved/unsolved/diverged (FINISHED), running, killed, failed, and finished without an outcome."""
    if runs.empty:
        return pd.DataFrame()
    question = runs["question"].fillna("(none)") if "question" in runs else pd.Series("(none)", index=runs.index)
    finished = runs["status"] == "FINISHED"
    columns = {
        "runs": pd.Series(True, index=runs.index),
        "solved": finished & (runs["outcome"] == "solved"), "unsolved": finished & (runs["outcome"] == "unsolved"),
        "diverged": finished & (runs["outcome"] == "diverged"), "running": runs["status"] == "RUNNING",
        "killed": runs["status"] == "KILLED", "failed": runs["status"] == "FAILED",
        "no outcome": finished & runs["outcome"].isna(),
    }
    table = pd.DataFrame({k: v.groupby(question).sum().astype(int) for k, v in columns.items()})
    table = table.reindex(sorted(table.index, key=lambda q: (QUESTIONS.index(q) if q in QUESTIONS else len(QUESTIONS), q)))
    table.loc["total"] = table.sum()
    return table.reset_index(names="question")


def _notes(study: Study, runs: pd.DataFrame, used: pd.DataFrame) -> list[str]:
    notes = []
    for status, why in (("RUNNING", "still running"), ("KILLED", "killed"), ("FAILED", "failed")):
        part = runs[runs["status"] == status]
        if len(part):
            names = ", ".join(part["run_name"].astype(str).head(10)) + (" ..." if len(part) > 10 else "")
            notes.append(f"{len(part)} run(s) {why}, left out of every figure: {names}.")
    no_outcome = runs[(runs["status"] == "FINISHED") & runs["outcome"].isna()]
    if len(no_outcome):
        notes.append(f"{len(no_outcome)} FINISHED run(s) without an outcome tag, left out: {', '.join(no_outcome['run_name'].astype(str).head(10))}.")
    duplicates = len(runs[(runs["status"] == "FINISHED") & runs["outcome"].notna()]) - len(used)
    if duplicates:
        notes.append(f"{duplicates} older FINISHED run(s) repeat the config_hash of a later run; only the latest is shown.")
    if study.missing_artifacts:
        names = runs.set_index("run_id")["run_name"].reindex(list(study.missing_artifacts)).fillna("?")
        notes.append(f"{len(study.missing_artifacts)} run(s) without a readable grad_norms.parquet, left out of the through-time "
                     "figures: " + "; ".join(f"{n} ({why})" for n, why in zip(names, study.missing_artifacts.values())) + ".")
    questions = set(runs["question"].dropna()) if "question" in runs else set()
    for question in QUESTIONS:
        if question not in questions:
            notes.append(f"No runs with question={question}: `{study.command(question)}`.")
    return notes


# the report's sections in order: (name used in error messages, function returning its Section(s))
PARTS = [("init", _init), ("precision", lambda *a: [_precision(*a)]), ("grad_heatmaps", lambda *a: [_heatmaps(*a)]),
         ("success_vs_length", lambda *a: [_seqlen(*a)]), ("loss curves", _loss_curves),
         ("clipping", lambda *a: [_clipping(*a)]), ("truncation", lambda *a: [_truncation(*a)]),
         ("saturation", lambda *a: [_saturation(*a)]), ("charlm_bpc", lambda *a: [_charlm(*a)]),
         ("remedies", lambda *a: [_remedies(*a)]), ("remedies_grad_through_time", lambda *a: [_remedies_grad(*a)])]


def build(study: Study) -> Report:
    """The whole report from the study's runs."""
    built = (f"Built {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from experiment `{study.experiment}` at "
             f"`{store.redact(study.uri)}`")
    found = ": the experiment does not exist in this store (no runs yet)." if study.exp_id is None else f": {len(study.runs)} runs."
    report = Report(built + found)
    used = ended(study.runs)
    for name, part in PARTS:
        try:
            report.sections += part(study, used, report)
        except Exception as err:  # a bug in one figure must not cost the rest of the report
            traceback.print_exc()
            why = f"{type(err).__name__}: {err}"
            report.errors.append(f"{name}: the figure could not be drawn ({why}); see the traceback on stderr.")
            report.sections.append(Section(name.replace(" ", "_"), name, missing=f"error while drawing ({why})."))
    report.notes = _notes(study, study.runs, used)
    report.table = runs_table(study.runs)
    return report
