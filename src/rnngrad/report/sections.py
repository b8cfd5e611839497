"""The report's sections, in order: `SECTIONS`, one `Section` per figure.

A section names the runs it shows (a question, trained or not), how to turn them into its data (`prepare`:
the loads from MLflow and the `frames` transforms; a dict of named frames and values, or a sentence saying
why the figure cannot be drawn), and which figure, caption and findings are computed from that data (each a
`Call` naming the entries it takes). `rnngrad.report.build` walks the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import pandas as pd

from rnngrad.report import figures, findings, frames
from rnngrad.report.frames import BEATS, FLOAT32, LAST_STEP_LOSS_TASKS, SOLVED_ACCURACY
from rnngrad.report.load import Study
from rnngrad.report.markdown import code, escape
from rnngrad.report.text import fmt, value_order, value_text

QUESTIONS = ("init", "precision", "seqlen", "clipping", "truncation", "charlm", "remedies")
TRAINED_QUESTIONS = ("seqlen", "clipping", "truncation", "remedies")  # the ones with a loss-curve figure
# the settings a caption states when they are the same for every run of a figure
FIXED_SETTINGS = ("task.name", "task.seq_len", "model.cell", "model.hidden_size", "train.steps", "train.batch_size",
                  "optim.name", "optim.lr", "clip.mode", "bptt.truncation")


@dataclass(frozen=True)
class Call:
    """`fn` applied to the entries `args` of a section's data, in that order, and to the keyword arguments `kwargs`."""

    fn: Callable
    args: tuple[str, ...]
    kwargs: dict = field(default_factory=dict)

    def __call__(self, data: dict, **more):
        return self.fn(*(data[name] for name in self.args), **self.kwargs, **more)


def call(fn: Callable, *args: str, **kwargs) -> Call:
    return Call(fn, args, kwargs)


@dataclass(frozen=True)
class Section:
    """One figure of the report, with its caption and findings (each finding also gets figure=name)."""

    name: str
    title: str
    question: str | None  # the question whose ended runs it shows; None: every question's
    trained: bool  # only the runs that trained (train.steps > 0)
    prepare: Callable[[Study, pd.DataFrame], dict | str]  # (study, the selected runs) -> data, or why not drawn
    figure: Call
    caption: Call
    findings: tuple[Call, ...] = ()
    without_runs: Callable[[Study], str] | None = None  # why not drawn when no run is selected (default: how to make them)
    optional: bool = False  # without runs the section is left out of the report instead

    def select(self, runs: pd.DataFrame) -> pd.DataFrame:
        chosen = runs if self.question is None else frames.of_question(runs, self.question)
        return frames.trained(chosen) if self.trained else chosen

    def missing(self, study: Study) -> str:
        if self.without_runs is not None:
            return self.without_runs(study)
        return _missing_runs(study, self.question, "finished trained runs" if self.trained else "finished runs")


# text shared by captions and the reasons a figure is not drawn

def describe(runs: pd.DataFrame, params: list[str]) -> str:
    """'N runs; varying: a ∈ {..}, b ∈ {..}; fixed: task.name adding, ...' for a caption (a sweep may be a
    union of grids, so the varying values are listed, not claimed to be crossed); names and values escaped for markdown."""
    grid = frames.varying(runs, params)
    parts = [f"{len(runs)} runs"]
    if grid:
        parts.append("varying: " + ", ".join(
            f"{escape(k)} ∈ {{{', '.join(escape(value_text(v)) for v in sorted(runs[k].unique(), key=value_order))}}}" for k in grid))
    fixed = [f"{escape(k)} {escape(value_text(runs[k].iloc[0]))}" for k in FIXED_SETTINGS if k in runs and k not in grid and len(runs)]
    if fixed:
        parts.append("fixed: " + ", ".join(fixed))
    return "; ".join(parts)


def _left_out(lost: int) -> str:
    return f" {lost} run(s) without grad_norms.parquet left out." if lost else ""


def _missing_runs(study: Study, question: str, what: str) -> str:
    return f"no {what} with question={question}. Produce them with {code(study.command(question))}."


def _missing_grad_norms(study: Study, question: str) -> str:
    return (f"none of the {question} runs has grad_norms.parquet. Rerun them with "
            f"{code(study.command(question) + ' tracking.skip_completed=false')}.")


def _with_grad_norms(study: Study, runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs' grad_norms.parquet rows and the runs that have them (the others are recorded as missing)."""
    norms = study.grad_norms(runs)
    return norms, runs[runs["run_id"].isin(norms["run_id"])]


# the report's opening: what the study's budget can show

CLASSIC_REPORT = "classic/README.md"  # the reproductions of the papers, beside this report (reports/classic/)


def _values(runs: pd.DataFrame, key: str) -> str:
    values = sorted(runs[key].dropna().unique(), key=value_order) if key in runs else []
    return "–".join(fmt(v) for v in (values[0], values[-1])) if len(values) > 1 else fmt(values[0]) if values else "n/a"


def scope(runs: pd.DataFrame) -> str:
    """The report's opening for the quick study: per question the training steps and seeds read from its ended runs,
    what a budget of that size can show and what it cannot, and where the reproductions of the papers are."""
    asked = [q for q in QUESTIONS if len(frames.of_question(runs, q))]
    if not asked:
        return ""
    budget = []
    for q in asked:
        part = frames.of_question(runs, q)
        steps = "measured at initialization" if (part["train.steps"] == 0).all() else f"{_values(part, 'train.steps')} training steps"
        seeds = part["seed"].nunique() if "seed" in part else 1
        budget.append(f"{q} ({len(part)} runs, {steps}, {fmt(seeds)} seed{'' if seeds == 1 else 's'}, "
                      f"H = {_values(part, 'model.hidden_size')})")
    trained = frames.trained(runs)
    return (
        "This is the quick study, sized to run in minutes on a small machine: " + "; ".join(budget) + ". "
        "What it can show: the measurements at initialization (the Pascanu bound, the decay rate against log(γρ) and "
        "the Lyapunov exponent, float32 against float64), which need no training; and, within "
        f"{_values(trained, 'train.steps')} training steps at small hidden sizes, which settings beat the constant "
        "predictor, diverge or solve their task, each fraction with its 95% interval. What it cannot show: whether a "
        "method learns at the lengths and training budgets of the papers (T in the hundreds, tens of thousands of steps), "
        "or a difference between arms smaller than the intervals a few seeds allow. For those, see the reproductions "
        f"of the classic experiments in [reports/classic/README.md]({CLASSIC_REPORT}).")


# 1-2. gradients at initialization

def _through_time(study: Study, runs: pd.DataFrame) -> dict | str:
    norms, have = _with_grad_norms(study, runs)
    if have.empty:
        return _missing_grad_norms(study, "init")
    rows = frames.through_time(norms, have)
    return {"rows": rows, "curves": frames.through_time_curves(rows), "grid": frames.radius_grid(rows),
            "described": describe(runs, study.params), "lost": len(runs) - len(have)}


def _through_time_caption(curves: pd.DataFrame, described: str, lost: int) -> str:
    return (f"||dL/ds_t|| at initialization against the distance T − t from the loss; {described}; "
            f"{per_line(curves.loc[curves['curve'] == 'ds_norm', 'n'])}; dotted: the Pascanu et al. bound ||dL/ds_T|| (γ σ_max)^(T−t) with the "
            "measured σ_max (γ = 1/4 sigmoid, 1 otherwise); dash-dotted for linear: ||dL/ds_T|| ρ^(T−t)." + _left_out(lost))


def _decay(study: Study, runs: pd.DataFrame) -> dict | str:
    if not runs.reindex(columns=["grad/decay_rate", "spectral/radius"]).notna().all(axis=1).any():
        return "no init run logged both grad/decay_rate and spectral/radius."
    data = frames.decay_runs(runs)
    return {"runs": data, "curves": frames.decay_curves(data), "described": describe(runs, study.params)}


def _decay_caption(described: str) -> str:
    return (f"Left: slope of log ||dL/ds_t|| per step back (negative: vanishing) against the measured spectral radius, "
            f"median and interquartile range over runs, dashed the theory log(γρ); right: the same slope against the top "
            f"Lyapunov exponent of the state dynamics (QR method). {described}.")


def _precision(study: Study, runs: pd.DataFrame) -> dict | str:
    norms, have = _with_grad_norms(study, runs)
    if have.empty:
        return _missing_grad_norms(study, "precision")
    setting = ", ".join(f"{task}, T = {fmt(T)}" for task, T in have.groupby(["task.name", "task.seq_len"]).size().index)
    return {"curves": frames.precision_curves(norms, have), "grid": frames.radius_grid(have), "setting": setting,
            "described": describe(have, study.params), "lost": len(runs) - len(have)}


def per_line(n: pd.Series) -> str:
    """'the median over n = 3 runs per line with the interquartile band', 'one run per line, so no band' (n: the
    runs behind each point of the lines, the `quartiles` column n), for a caption."""
    low, high = int(n.min()), int(n.max())
    if high <= 1:
        return "one run per line, so no band"
    count = fmt(low) if low == high else f"{fmt(low)}–{fmt(high)}"
    return f"the median over n = {count} runs per line with the interquartile band" + (" (none where a line has one run)" if low == 1 else "")


def _precision_caption(curves: pd.DataFrame, described: str, lost: int) -> str:
    return (
        "||dL/ds_t|| at initialization against the distance T − t from the loss, one panel per activation, a shade per "
        f"spectral radius (darker for larger ρ); solid float64, dashed float32, {per_line(curves['n'])}; both precisions "
        "start from the same weights (the same seed). Norms are summed in float64, so a float32 norm of exactly 0 means "
        "the float32 gradient itself underflowed; the tick at the bottom marks where float32 first reports 0, the open "
        "circle the float64 norm there. The tick at the top marks where float32's norm first falls below its ε "
        f"({fmt(FLOAT32.eps, 2)}) times its largest: the weight gradient sums a term per step, so from there on the "
        "longer-range terms are lost to rounding next to the short-range ones, long before any norm is subnormal. "
        "Dotted: float32's smallest subnormal "
        f"{fmt(FLOAT32.smallest_subnormal, 2)}; dash-dotted: its smallest normal number {fmt(FLOAT32.tiny, 2)}. "
        f"{described}." + _left_out(lost))


# 3. heatmaps of representative runs

def _no_heatmap_runs(study: Study) -> str:
    return ("no finished trained run (train.steps > 0, full BPTT) with a decay rate. Any trained sweep "
            f"provides them, e.g. {code(study.command('seqlen'))}.")


def _heatmaps(study: Study, runs: pd.DataFrame) -> dict | str:
    pool = runs[(runs["bptt.mode"] == "window") & runs["bptt.truncation"].isna()]
    decay = study.history(pool, "grad/decay_rate").groupby("run_id")["value"].median() if len(pool) else pd.Series(dtype=float)
    pool = pool.assign(decay=pool["run_id"].map(decay)).dropna(subset=["decay"])
    if pool.empty:
        return _no_heatmap_runs(study)
    candidates = frames.heatmap_candidates(pool)
    norms = study.grad_norms(candidates)
    picks = frames.heatmap_picks(candidates, norms)
    if not picks:
        return (f"none of the {len(candidates)} trained runs with the most extreme decay rates has a live gradient "
                "(positive at some t < T on half of its training steps or more).")
    panels = {f"{kind}" + (f" (diverged at step {fmt(p['diverged_at'])})" if p["outcome"] == "diverged" else "")
              + f"\n{p['run_name']}\nmedian decay rate {p['decay']:+.3f} per step": norms[norms["run_id"] == p["run_id"]]
              for kind, p in picks.items() if (norms["run_id"] == p["run_id"]).any()}
    if not panels:
        return "the chosen runs have no grad_norms.parquet artifact."
    return {"panels": panels, "pool": pool, "picks": picks, "candidates": candidates}


def _heatmaps_caption(panels: dict, pool: pd.DataFrame, picks: dict) -> str:
    absent = "".join(
        f" No trained run has a {kind} gradient over training (median decay rates from {pool['decay'].min():+.3f} to "
        f"{pool['decay'].max():+.3f} per step), so there is no {kind} example."
        for kind in ("vanishing", "exploding") if kind not in picks)
    T = fmt(next(iter(picks.values()))["task.seq_len"])
    return (
        f"log10 ||dL/ds_t|| over training step × time step t for {len(panels)} of the {len(pool)} trained runs with full BPTT, "
        f"all at T = {T}, chosen by the median over training of their decay rate (slope of log ||dL/ds_t|| per step "
        "back): the most negative (vanishing), the most positive (exploding) and the one closest to 0 (healthy), "
        "preferring runs that did not diverge. Runs whose gradient is dead (zero at every t < T on more than half of "
        f"their training steps, e.g. relu runs with every unit dead) are left out, as are the sequence lengths with "
        f"fewer kinds; blank cells: zero or non-finite norms.{absent}")


# 4. success against sequence length

def _seqlen(study: Study, runs: pd.DataFrame) -> dict:
    label = [f"{a}, {frames.clip_label(m, t)}" for a, m, t in zip(runs["model.activation"], runs["clip.mode"], runs["clip.threshold"])]
    info = frames.labelled(runs, label, panel=runs["model.activation"] + ", " + runs["model.init"] + " init")
    return {"runs": runs, "solved": frames.success_rates(info), "described": describe(runs, study.params)}


def _seqlen_caption(described: str) -> str:
    return (f"Fraction of runs solved (diverged counts as failed) against T, one panel per activation × init, "
            f"a line per clipping setting, as in Pascanu et al. (2013) Fig. 7; {described}.")


# 5. loss curves, one section per question that trains

def _loss_curves(study: Study, runs: pd.DataFrame, question: str) -> dict | str:
    if question == "truncation":
        panel, exclude = ["full BPTT" if k != k else f"k = {k:g}" for k in runs["bptt.truncation"]], ("bptt.truncation",)
    else:
        panel, exclude = runs["task.name"] + ", T = " + runs["task.seq_len"].astype(str), ("task.name", "task.seq_len")
    label = runs.apply(frames.remedy_label, axis=1) if question == "remedies" else frames.config_labels(runs, study.params, exclude=exclude)
    info = frames.labelled(runs, label, panel=panel)
    history = study.history(info, "eval/loss")
    if history.empty:
        return f"the {len(runs)} runs of question={question} logged no eval/loss."
    loss = runs["task.loss"].dropna().unique() if "task.loss" in runs else []
    curves, baselines = frames.learning_curves(history, info)
    return {"runs": runs, "question": question, "curves": curves, "baselines": baselines, "seeds": _seeds(info),
            "ylabel": f"test loss ({', '.join(loss) or 'task loss'})", "described": describe(runs, study.params)}


def _seeds(info: pd.DataFrame) -> str:
    """`per_line` of the runs per (panel, label) line."""
    return per_line(info.groupby(["panel", "label"]).size())


def _loss_caption(seeds: str, described: str) -> str:
    return (f"Test loss over training, {seeds}, a line per configuration; dotted: the constant predictor's loss "
            f"(tag task.baseline). A run that stopped when solved keeps its last loss in the median afterwards; a "
            f"diverged run leaves it after its last step. {described}.")


def _loss_section(question: str, optional: bool = False) -> Section:
    return Section(f"loss_{question}", f"Loss curves ({question})", question, True, partial(_loss_curves, question=question),
                   call(figures.learning_curves, "curves", "baselines", "ylabel"), call(_loss_caption, "seeds", "described"),
                   (call(findings.beats_constant_predictor, "runs", "question"),), optional=optional)


# 6-9. clipping, truncation, saturation, character language model

def _clipping(study: Study, runs: pd.DataFrame) -> dict:
    history = study.history(runs, "grad/norm")
    curves, diverged = frames.clipping_curves(history, runs)
    return {"runs": runs, "history": history, "curves": curves, "diverged": diverged, "described": describe(runs, study.params)}


def _clipping_caption(curves: pd.DataFrame, described: str) -> str:
    return (f"Left: global gradient norm before clipping over training ({per_line(curves['n'])}; "
            f"dashed: the norm threshold); right: fractions of runs diverged (filled) and solved (open) per mode and "
            f"threshold (without clipping the threshold is unused, so those runs are pooled; a horizontal line). {described}.")


def _truncation(study: Study, runs: pd.DataFrame) -> dict:
    data = frames.with_trunc_cosine(runs, study.history(runs, "grad/trunc_cosine"))
    curves, solved = frames.truncation_curves(data)
    return {"runs": data, "curves": curves, "solved": solved, "described": describe(data, study.params)}


def _truncation_caption(described: str) -> str:
    return (f"Left: cosine between the truncated and the full gradient on the same batch (each run's median over "
            f"its diagnostic steps); middle: fraction solved; right: final test loss relative to the constant "
            f"predictor, dotted horizontal at {fmt(BEATS)}: below it a run beats the constant predictor; dashed: full BPTT; "
            f"dotted vertical: the task's dependency distance (tag task.dependency). {described}.")


def _no_trained_runs(study: Study) -> str:
    return f"no finished trained runs. Any trained sweep provides them, e.g. {code(study.command('seqlen'))}."


def _saturation(study: Study, runs: pd.DataFrame) -> dict | str:
    data = runs[runs["model.cell"] == "rnn"] if "model.cell" in runs else runs
    if data.empty:
        return _no_trained_runs(study)
    history = study.history(data, "act/saturation")
    if history.empty:
        return "the trained runs logged no act/saturation."
    return {"runs": data, "history": history, "curves": frames.saturation_curves(history, data)}


def _saturation_caption(runs: pd.DataFrame) -> str:
    return ("Fraction of units whose derivative f'(a) is below 1% of its maximum (dead units for relu), over "
            f"training, one panel per question, median over the runs of an activation with the interquartile band; "
            f"{len(runs)} trained runs of plain RNN cells.")


def _charlm(study: Study, runs: pd.DataFrame) -> dict | str:
    info = frames.labelled(runs, frames.config_labels(runs, study.params), panel="")
    history = study.history(info, "eval/bpc")
    if history.empty:
        return f"the {len(runs)} charlm runs logged no eval/bpc."
    curves, baselines = frames.learning_curves(history, info)
    return {"runs": runs, "curves": curves, "baselines": baselines, "seeds": _seeds(info),
            "described": describe(runs, study.params)}


def _charlm_caption(seeds: str, described: str) -> str:
    return (f"Test bits per character over training, {seeds}; dotted: the unigram entropy of the training text "
            f"(task.baseline / ln 2). {described}.")


# 10-11. remedies

def _remedies(study: Study, runs: pd.DataFrame) -> dict:
    data = frames.remedy_runs(runs)
    curves, solved = frames.remedy_curves(data)
    return {"runs": data, "curves": curves, "solved": solved, "described": describe(data, study.params)}


def _remedies_caption(curves: pd.DataFrame, described: str) -> str:
    return (
        f"Top: final test loss relative to the constant predictor's (tag task.baseline; below 1 the model uses the inputs), "
        f"{per_line(curves['n']).replace('band', 'range')}, against T, one panel per task, a line per remedy (colour: "
        f"activation, normalization or gated cell); grey: ratio 1; dotted: {fmt(BEATS)}, below which a run beats the constant predictor. Bottom: runs solved (test accuracy ≥ {fmt(SOLVED_ACCURACY)}; "
        f"diverged counts as failed) per remedy and T. {described}.")


def _remedies_grad(study: Study, runs: pd.DataFrame) -> dict | str:
    data = frames.remedy_runs(runs)
    norms, have = _with_grad_norms(study, data)
    if have.empty:
        return _missing_grad_norms(study, "remedies")
    rows, shown = frames.remedy_init_rows(norms, data), frames.longest(have)
    return {"runs": data, "rows": rows, "curves": frames.remedy_init_curves(rows), "lengths": frames.task_lengths(rows),
            "clipped": bool((have["clip.mode"] != "none").any()),
            "every_step": sorted(set(shown["task.name"]) - set(LAST_STEP_LOSS_TASKS)),
            "described": describe(shown, study.params), "lost": len(data) - len(have)}


def _remedies_grad_caption(curves: pd.DataFrame, clipped: bool, every_step: list[str], described: str, lost: int) -> str:
    return (
        "||dL/ds_t|| at initialization (each run's first training step) against the distance from the sequence's last "
        f"step, at each task's longest T, {per_line(curves['n'])}, a line per remedy (colours and "
        "styles as in `remedies`); dashed in the LSTM's colour: its cell-state path ||dL/dc_t||."
        + (" Clipping acts after the gradient is computed, so at initialization a clipped run lies on the same model's "
           "unclipped line." if clipped else "")
        + (f" On {', '.join(every_step)} the loss covers every step, so there ||dL/ds_t|| sums the gradients of every "
           "later loss." if every_step else "")
        + f" {described}." + _left_out(lost))


SECTIONS = (
    Section("init_grad_through_time", "Gradient norm through time at initialization", "init", False, _through_time,
            call(figures.grad_through_time, "curves", "grid"), call(_through_time_caption, "curves", "described", "lost"),
            (call(findings.pascanu_bound, "rows"),)),
    Section("init_decay_rate", "Decay rate against spectral radius and Lyapunov exponent", "init", False, _decay,
            call(figures.decay_rate_vs_radius, "curves", "runs"), call(_decay_caption, "described"),
            (call(findings.linear_decay, "runs"), call(findings.decay_per_activation, "runs", "curves"),
             call(findings.decay_tracks_lyapunov, "runs"))),
    Section("precision", "float32 against float64: where a vanishing gradient underflows", "precision", False, _precision,
            call(figures.precision, "curves", "grid"), call(_precision_caption, "curves", "described", "lost"),
            (call(findings.float32_lost, "curves"), call(findings.float32_agreement, "curves", "setting"))),
    Section("grad_heatmaps", "Gradient norm over training and time (representative runs)", None, True, _heatmaps,
            call(figures.grad_heatmaps, "panels"), call(_heatmaps_caption, "panels", "pool", "picks"),
            without_runs=_no_heatmap_runs),
    Section("success_vs_length", "Success rate against sequence length", "seqlen", False, _seqlen,
            call(figures.success_vs_length, "solved"), call(_seqlen_caption, "described"),
            (call(findings.solved_by_length, "runs"), call(findings.clipping_and_success, "runs"))),
    *(_loss_section(question) for question in TRAINED_QUESTIONS),
    _loss_section("adhoc", optional=True),
    Section("clipping", "Gradient clipping: pre-clip norm, divergence and success", "clipping", True, _clipping,
            call(figures.clipping, "curves", "diverged"), call(_clipping_caption, "curves", "described"),
            (call(findings.clipping_solved, "runs"),
             call(findings.clipping_divergence, "runs", "history"))),
    Section("truncation", "Truncated BPTT: gradient direction and success against k", "truncation", True, _truncation,
            call(figures.truncation, "curves", "solved", "runs"), call(_truncation_caption, "described"),
            (call(findings.truncation_cosine, "runs"), call(findings.truncation_bands, "runs"))),
    Section("saturation", "Saturation over training", None, True, _saturation,
            call(figures.saturation, "curves"), call(_saturation_caption, "runs"),
            (call(findings.final_saturation, "runs", "history"),), without_runs=_no_trained_runs),
    Section("charlm_bpc", "Character language model: bits per character", "charlm", True, _charlm,
            call(figures.learning_curves, "curves", "baselines", ylabel="test bits per character",
                 baseline_scale=1 / math.log(2), baseline_label="unigram entropy", logy=False),
            call(_charlm_caption, "seeds", "described"), (call(findings.charlm_bits, "runs"),)),
    Section("remedies", "Remedies: final loss and success against sequence length", "remedies", True, _remedies,
            call(figures.remedies, "curves", "solved"), call(_remedies_caption, "curves", "described"),
            (call(findings.remedy_losses, "runs"),)),
    Section("remedies_grad_through_time", "Remedies: gradient norm through time at initialization", "remedies", True,
            _remedies_grad, call(figures.remedies_grad_through_time, "curves", "lengths", "runs"),
            call(_remedies_grad_caption, "curves", "clipped", "every_step", "described", "lost"),
            (call(findings.gradient_at_initialization, "rows", "runs"),)),
)
