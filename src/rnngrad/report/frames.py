"""The transforms that figures, captions and findings share: which runs a section shows, how they are
labelled, and the statistics that are drawn and quoted (medians with interquartile ranges, fractions of
runs, gradient norms through time at initialization).

Every function takes and returns pandas frames; column names are those of `rnngrad.report.load` (params,
tags and metric keys as logged) plus the derived columns each docstring names. Nothing here draws.
A "curves" frame has one row per group and x value with the columns median, q25, q75, n (`quartiles`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from rnngrad.report.text import value_text

# The two constants of the model stack the report uses. The report must not import the model stack
# (rnngrad.core, rnngrad.tasks), so they are restated here; tests/test_report.py checks that they agree.
GAMMA = {"sigmoid": 0.25, "tanh": 1.0, "relu": 1.0, "linear": 1.0}  # the largest f'(a) per activation
SOLVED_ACCURACY = 0.99  # test accuracy at which a run counts as solved
# the one threshold of "beats the constant predictor", in every finding: a final test loss below this fraction of
# the constant predictor's (tag task.baseline); the margin below 1 keeps a run that only matched it by chance out
BEATS = 0.9

CLASSIC_PREFIX = "classic_"  # the questions of the classic tier (conf/experiment/classic.yaml)

FLOAT32 = np.finfo(np.float32)
# the order in which models are listed and coloured: activations, gated cells, normalizations
MODELS = ("sigmoid", "tanh", "relu", "linear", "lstm", "gru", "layer", "batch")
# tasks whose only loss is at the last step: there ||dL/ds_t|| <= ||dL/ds_T|| ||ds_T/ds_t|| <= ||dL/ds_T|| bound
LAST_STEP_LOSS_TASKS = ("adding", "temporal_order")
ALL_RUNS = "all runs"  # the label of runs whose configurations do not differ (a legend entry that says nothing)
SHORT_NAMES = {"clip.mode": "clip", "clip.threshold": "clip threshold", "bptt.truncation": "k", "bptt.mode": "bptt",
               "model.spectral_radius": "ρ", "task.seq_len": "T", "task.name": "task", "model.hidden_size": "H"}
PARAM_GROUPS = ("model", "task", "clip", "bptt", "optim", "train")  # the order of varying params in labels


# selecting runs

def ended(runs: pd.DataFrame) -> pd.DataFrame:
    """FINISHED runs with an outcome; of several runs of one configuration (config_hash) the latest."""
    done = runs[(runs["status"] == "FINISHED") & runs["outcome"].notna()]
    if "config_hash" in done:
        hashed = done["config_hash"].notna()
        latest = done[hashed].sort_values("start_time").drop_duplicates("config_hash", keep="last")
        done = pd.concat([latest, done[~hashed]])
    return done.sort_values("run_name").reset_index(drop=True)


def is_classic(runs: pd.DataFrame) -> pd.Series:
    """The runs of the classic tier (question classic_*, `rnngrad report classic`); the quick study ignores them."""
    if "question" not in runs:
        return pd.Series(False, index=runs.index)
    return runs["question"].astype(str).str.startswith(CLASSIC_PREFIX)


def of_question(runs: pd.DataFrame, question: str) -> pd.DataFrame:
    return runs[runs["question"] == question] if "question" in runs else runs.iloc[:0]


def trained(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["train.steps"] > 0] if "train.steps" in runs else runs.iloc[:0]


def longest(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows at each task's longest sequence length (columns task.name, task.seq_len)."""
    return frame[frame["task.seq_len"] == frame.groupby("task.name")["task.seq_len"].transform("max")]


def radii(values) -> list[float]:
    """The distinct grid values of model.spectral_radius, ascending, NaN (the init's own scale) last."""
    return sorted(pd.unique(np.asarray(values, dtype=float)), key=lambda r: (math.isnan(r), r))


def with_radius(frame: pd.DataFrame, rho: float) -> pd.DataFrame:
    """The rows whose model.spectral_radius is rho (NaN matching NaN)."""
    return frame[frame["model.spectral_radius"].isna() if math.isnan(rho) else frame["model.spectral_radius"] == rho]


def varying(runs: pd.DataFrame, params: list[str], exclude=()) -> list[str]:
    """The params that take more than one value among these runs, model and task first, seed last."""
    keys = [k for k in params if k in runs and k not in exclude and runs[k].astype(str).nunique() > 1]
    rank = {group: i for i, group in enumerate(PARAM_GROUPS)}
    return sorted(keys, key=lambda k: (rank.get(k.split(".")[0], len(PARAM_GROUPS)), k))


# labels

def ordered(values) -> list:
    """The distinct values, MODELS first in their order (sigmoid, tanh, relu, linear, ...), then the rest sorted."""
    values = list(dict.fromkeys(v for v in values if v is not None and v == v))
    return [m for m in MODELS if m in values] + sorted((v for v in values if v not in MODELS), key=str)


def clip_label(mode: str, threshold: float) -> str:
    """'no clipping', 'norm clip 1', 'value clip 0.5'."""
    return "no clipping" if mode == "none" else f"{mode} clip {threshold:g}"


def colour_key(row) -> str:
    """What colour a run gets (a MODELS entry): its gated cell, else its normalization, else its activation."""
    cell, norm = row.get("model.cell", "rnn"), row.get("model.norm", "none")
    if isinstance(cell, str) and cell != "rnn":
        return cell
    if isinstance(norm, str) and norm != "none":
        return norm
    return row["model.activation"]


def remedy_label(row) -> str:
    """What a remedies run tries: 'lstm', or 'tanh, gaussian init, layer norm, norm clip 1'."""
    if row.get("model.cell", "rnn") != "rnn":
        return row["model.cell"]
    parts = [row["model.activation"], f"{row['model.init']} init"]
    if row.get("model.norm", "none") != "none":
        parts.append(f"{row['model.norm']} norm")
    if row.get("clip.mode", "none") != "none":
        parts.append(clip_label(row["clip.mode"], row["clip.threshold"]))
    return ", ".join(parts)


def config_labels(runs: pd.DataFrame, params: list[str], exclude=()) -> pd.Series:
    """A label per run naming its configuration by the params that vary (seeds excluded): 'init=gaussian, clip=norm'."""
    keys = varying(runs, params, exclude=("seed", *exclude))
    short = [SHORT_NAMES.get(k, k.rsplit(".", 1)[-1]) for k in keys]
    names = [s if short.count(s) == 1 else k for k, s in zip(keys, short)]
    if not keys:
        return pd.Series(ALL_RUNS, index=runs.index)
    return pd.Series([", ".join(f"{n}={value_text(v)}" for n, v in zip(names, row)) for row in runs[keys].itertuples(index=False)],
                     index=runs.index)


def labelled(runs: pd.DataFrame, label, **columns) -> pd.DataFrame:
    """The runs with label (one line per value: the runs sharing it are aggregated), colour (`colour_key`) and any
    other columns given (e.g. panel)."""
    return runs.assign(label=label, colour=runs.apply(colour_key, axis=1), **columns)


def remedy_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The (trained) remedies runs `labelled` by `remedy_label`, with relative_loss (final eval/loss / task.baseline);
    eval/loss and eval/accuracy are NaN for runs that never logged them."""
    data = runs.reindex(columns=[*runs.columns, *(k for k in ("eval/loss", "eval/accuracy") if k not in runs)])
    return labelled(data, data.apply(remedy_label, axis=1)).assign(relative_loss=relative_loss(data))


def relative_loss(runs: pd.DataFrame) -> pd.Series:
    """The final test loss relative to the constant predictor's: eval/loss / task.baseline (below 1: the model
    uses the inputs)."""
    return runs["eval/loss"] / runs["task.baseline"]


# statistics

def quartiles(frame: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """Median, 25th and 75th percentile and count of `value` per group (NaN values left out, NaN keys kept, groups
    sorted): columns by + median, q25, q75, n."""
    grouped = frame.dropna(subset=[value]).groupby(by, dropna=False, sort=True)[value]
    return pd.DataFrame({
        "median": grouped.median(), "q25": grouped.quantile(0.25), "q75": grouped.quantile(0.75), "n": grouped.size(),
    }).reset_index()


def quartiles_of(frame: pd.DataFrame, by: list[str], values: list[str]) -> pd.DataFrame:
    """`quartiles` of several columns at once: columns curve (the column's name) + by + median, q25, q75, n."""
    long = frame.melt(id_vars=by, value_vars=values, var_name="curve", value_name="value")
    return quartiles(long, ["curve", *by], "value")


def outcomes(runs: pd.DataFrame, by: list[str], outcome: str) -> pd.DataFrame:
    """How many runs per group ended with `outcome` (diverged counts as not solved): columns by + runs, count,
    fraction (count / runs), NaN keys kept as a group, groups sorted."""
    grouped = runs.assign(hit=(runs["outcome"] == outcome).astype(float)).groupby(by, dropna=False, sort=True)["hit"]
    return pd.DataFrame({"runs": grouped.size(), "count": grouped.sum(), "fraction": grouped.mean()}).reset_index()


def positive(norms: pd.Series) -> pd.Series:
    """Norms with zeros (underflow) and non-finite values (overflow) as NaN, so a log axis leaves them out."""
    return norms.where(np.isfinite(norms) & (norms > 0))


def first_zero(norms: pd.Series) -> float:
    """The smallest distance (the index) at which the norm is exactly 0; NaN if it never is."""
    zero = norms.index[norms == 0]
    return float(zero.min()) if len(zero) else math.nan


def radius_grid(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per grid value of model.spectral_radius in `radii` order, with measured: the median spectral/radius
    over the frame's rows (what the init's own scale, NaN in the grid, turned out to be)."""
    measured = frame.groupby("model.spectral_radius", dropna=False)["spectral/radius"].median()
    grid = radii(frame["model.spectral_radius"])
    return pd.DataFrame({"model.spectral_radius": grid, "measured": measured.reindex(grid).to_numpy()})


# gradient norms through time at initialization

def at_initialization(grad_norms: pd.DataFrame) -> pd.DataFrame:
    """The rows of each run's first recorded training step, with distance = T - t (T: the run's last t)."""
    first = grad_norms[grad_norms.groupby("run_id")["step"].transform("min") == grad_norms["step"]]
    return first.assign(distance=first.groupby("run_id")["t"].transform("max") - first["t"])


def through_time(grad_norms: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The runs' norms at initialization, one row per run and t, with the run's columns, distance, and the
    two predictions anchored at the loss step: anchored_bound = ||dL/ds_T|| bound (the Pascanu bound
    (gamma sigma_max)^(T-t) of grad_norms.parquet) and anchored_rho = ||dL/ds_T|| rho^(T-t) (rho: spectral/radius).

    grad_norms: columns run_id, step, t (1..T), ds_norm, bound. runs: one row per run_id.
    """
    data = at_initialization(grad_norms).merge(runs, on="run_id")
    at_loss = data["run_id"].map(data[data["distance"] == 0].set_index("run_id")["ds_norm"])
    return data.assign(anchored_bound=data["bound"] * at_loss, anchored_rho=data["spectral/radius"] ** data["distance"] * at_loss)


def through_time_curves(rows: pd.DataFrame) -> pd.DataFrame:
    """Curves of `through_time` rows per model.init, model.activation, model.spectral_radius, curve (ds_norm with zero
    and non-finite norms left out, anchored_bound, anchored_rho) and distance, with measured_radius: the median
    spectral/radius of the line's rows."""
    keys = ["model.init", "model.activation", "model.spectral_radius"]
    measured = rows.groupby(keys, dropna=False)["spectral/radius"].median().rename("measured_radius").reset_index()
    curves = quartiles_of(rows.assign(ds_norm=positive(rows["ds_norm"])), [*keys, "distance"],
                          ["ds_norm", "anchored_bound", "anchored_rho"])
    return curves.merge(measured, on=keys, how="left")


def precision_curves(grad_norms: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """||dL/ds_t|| at initialization per activation, spectral radius, dtype and distance T - t from the loss: the
    median over runs with the quartiles and count, zeros kept (an underflow is data here).

    grad_norms: columns run_id, step, t (1..T), ds_norm; each run's first recorded step is used.
    runs: one row per run_id with model.activation, model.spectral_radius and model.dtype.
    Columns model.activation, model.spectral_radius, model.dtype, distance, median, q25, q75, n.
    """
    data = at_initialization(grad_norms).merge(runs, on="run_id")
    return quartiles(data, ["model.activation", "model.spectral_radius", "model.dtype", "distance"], "ds_norm")


def precision_pairs(curves: pd.DataFrame):
    """(activation, rho, float32, float64) per activation (`ordered`) and spectral radius (`radii`) with curves in both
    precisions; float32 and float64 are the median norms indexed by distance."""
    for act in ordered(curves["model.activation"]):
        panel = curves[curves["model.activation"] == act]
        for rho in radii(panel["model.spectral_radius"]):
            group = with_radius(panel, rho)
            float32, float64 = (group[group["model.dtype"] == d].set_index("distance")["median"] for d in ("float32", "float64"))
            if len(float32) and len(float64):
                yield act, rho, float32, float64


def remedy_init_rows(grad_norms: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The remedies runs' norms at initialization (`at_initialization`, with the run's columns) at each task's longest
    T among the runs that have them. grad_norms: columns run_id, step, t, ds_norm, maybe dc_norm."""
    return longest(at_initialization(grad_norms).merge(runs, on="run_id"))


def remedy_init_curves(rows: pd.DataFrame) -> pd.DataFrame:
    """Curves of `remedy_init_rows` per task.name, colour, label, curve (ds_norm; dc_norm, the cell-state path, where
    the cell has one) and distance, zero and non-finite norms left out."""
    paths = {"ds_norm": positive(rows["ds_norm"]), "dc_norm": positive(rows["dc_norm"]) if "dc_norm" in rows else np.nan}
    return quartiles_of(rows.assign(**paths), ["task.name", "colour", "label", "distance"], list(paths))


def task_lengths(rows: pd.DataFrame) -> pd.DataFrame:
    """Per task.name of `remedy_init_rows`: task.seq_len (T) and steps (the length of its sequences, which for
    some tasks, e.g. copy, is longer than T)."""
    return rows.groupby("task.name").agg(**{"task.seq_len": ("task.seq_len", "first"), "steps": ("t", "max")}).reset_index()


# per-figure statistics of the runs' last values and histories

def decay_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that logged grad/decay_rate and spectral/radius, with gamma (GAMMA of the activation), theory
    (log(gamma rho), the linearised decay rate) and excess (measured minus theory)."""
    data = runs.dropna(subset=["grad/decay_rate", "spectral/radius"])
    gamma = data["model.activation"].map(GAMMA).astype(float)
    data = data.assign(theory=np.log(gamma * data["spectral/radius"]), gamma=gamma)
    return data.assign(excess=data["grad/decay_rate"] - data["theory"])


def decay_curves(runs: pd.DataFrame) -> pd.DataFrame:
    """Per model.activation, model.init and model.spectral_radius (the grid value) of `decay_runs`: the `quartiles`
    of grad/decay_rate (median, q25, q75, n) and radius, the median measured spectral/radius."""
    keys = ["model.activation", "model.init", "model.spectral_radius"]
    curves = quartiles(runs, keys, "grad/decay_rate")
    return curves.assign(radius=quartiles(runs, keys, "spectral/radius")["median"])


def step_curves(history: pd.DataFrame, runs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Curves of a metric over training: `quartiles` of history's value per the runs' columns `by` and step.
    history: columns run_id, step, value; runs: one row per run_id with the columns `by`."""
    return quartiles(history.merge(runs, on="run_id"), [*by, "step"], "value")


def learning_curves(history: pd.DataFrame, runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curves, baselines) of a metric over training, a line per configuration.

    history: columns run_id, step, value. runs: one row per run_id with panel, colour, label (`labelled`) and
    task.baseline. curves: `step_curves` by panel, colour, label; baselines: the distinct task.baseline of each
    panel's runs that have a history (columns panel, task.baseline, sorted).
    """
    drawn = runs[runs["run_id"].isin(history["run_id"])]
    baselines = drawn[["panel", "task.baseline"]].dropna().drop_duplicates().sort_values(["panel", "task.baseline"], ignore_index=True)
    by = ["panel", "colour", "label"]
    return step_curves(carried_forward(history, runs, by), runs, by), baselines


def carried_forward(history: pd.DataFrame, runs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """history with the last value of each solved run (outcome solved: it stopped when solved, or ran to the end)
    carried forward to every later step of its group (`by`), so that the group's median keeps it instead of rising
    when it stops; other runs (a diverged one has no last loss worth keeping) as they are.
    history: columns run_id, step, value; runs: run_id, outcome, the columns `by`."""
    solved = runs.loc[runs["outcome"] == "solved", "run_id"] if "outcome" in runs else pd.Series(dtype=object)
    if history.empty or solved.empty:
        return history
    steps = history.merge(runs[["run_id", *by]], on="run_id").groupby(by, dropna=False)["step"].max().rename("end")
    ends = runs[["run_id", *by]].merge(steps.reset_index(), on=by, how="left").set_index("run_id")["end"]
    last = history[history["run_id"].isin(solved)].sort_values("step").groupby("run_id").tail(1)
    all_steps = sorted(history["step"].unique())
    extra = [pd.DataFrame({"run_id": row.run_id, "step": [s for s in all_steps if row.step < s <= ends[row.run_id]],
                           "value": row.value}) for row in last.itertuples()]
    return pd.concat([history, *extra], ignore_index=True)


def success_rates(runs: pd.DataFrame) -> pd.DataFrame:
    """`outcomes` solved per panel, colour, label and task.seq_len of `labelled` runs."""
    return outcomes(runs, ["panel", "colour", "label", "task.seq_len"], "solved")


CLIP_KEYS = ["model.activation", "clip.mode", "clip.threshold"]


CLIP_OUTCOMES = ("diverged", "solved")  # what the clipping figure's right panels count


def clipping_curves(history: pd.DataFrame, runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curves, rates): grad/norm over training (`step_curves`) and the `outcomes` diverged and solved over every
    run (rates' column outcome), both per model.activation, clip.mode and clip.threshold, where the threshold is
    NaN without clipping (it is unused there, so those runs are pooled). history: grad/norm (run_id, step, value)."""
    runs = runs.assign(**{"clip.threshold": runs["clip.threshold"].where(runs["clip.mode"] != "none")})
    rates = pd.concat([outcomes(runs, CLIP_KEYS, kind).assign(outcome=kind) for kind in CLIP_OUTCOMES], ignore_index=True)
    return step_curves(history, runs, CLIP_KEYS), rates


def with_trunc_cosine(runs: pd.DataFrame, cosine: pd.DataFrame) -> pd.DataFrame:
    """The runs with trunc_cosine: each run's median grad/trunc_cosine over its diagnostic steps (NaN for full BPTT).
    cosine: history columns run_id, step, value."""
    return runs.assign(trunc_cosine=runs["run_id"].map(cosine.groupby("run_id")["value"].median()))


def window_needed(dependency):
    """The truncation window k that reaches an input `dependency` steps before its loss (tag task.dependency): the
    gradient of L_t reaches s_t .. s_{t-k+1}, so an input at t - d needs k >= d + 1 (temporal order at T = 20,
    t1 in {2, 3} of steps 0..19: dependency 17, k >= 18 for every sequence)."""
    return dependency + 1


def relevant_distances(text: str) -> list[tuple[int, int]]:
    """The tag task.relevant ('20-24,40-44') as [(nearest, farthest), ...]: each relevant input's distance in steps
    from its loss (tasks.Task.relevant), nearest input first."""
    return sorted(tuple(int(v) for v in part.split("-")) for part in str(text).split(","))


def inputs_reached(k: float, relevant: list[tuple[int, int]]) -> tuple[int, int]:
    """(every, some): how many relevant inputs a truncation window k reaches in every sequence (k >= farthest + 1:
    `window_needed`) and in some (k >= nearest + 1). Full BPTT (k NaN) reaches them all."""
    if math.isnan(k):
        return len(relevant), len(relevant)
    return (sum(k >= window_needed(far) for _, far in relevant), sum(k >= window_needed(near) for near, _ in relevant))


RELEVANT_NAMES = ("t2", "t1")  # temporal order's relevant symbols, nearest to the loss first (task.relevant's order)
FULL = "full BPTT"


def relevant_names(n: int) -> list[str]:
    """Names for n relevant inputs, nearest to the loss first: temporal order's t2, t1 (the last of them for one)."""
    return list(RELEVANT_NAMES[-n:]) if n <= len(RELEVANT_NAMES) else [f"input {i + 1}" for i in range(n)]


def band(k: float, relevant: list[tuple[int, int]]) -> str:
    """A truncation run's band: full BPTT (k NaN), or which relevant inputs its window k reaches in every sequence
    and which in some only (`inputs_reached`), by name ('k reaches t2, misses t1'). relevant: the run's
    (nearest, farthest) distances (`relevant_distances`), named from the farthest (RELEVANT_NAMES)."""
    if math.isnan(k):
        return FULL
    names = relevant_names(len(relevant))
    every, some = inputs_reached(k, relevant)
    if every == 0 and some == 0:
        return "k misses " + " and ".join(names)
    if every == len(relevant):
        return "k reaches " + " and ".join(names)
    text = "k reaches " + " and ".join(names[:every]) if every else "k"
    if some > every:
        text += (", partly " if every else " partly reaches ") + " and ".join(names[every:some])
    if some < len(relevant):
        text += ", misses " + " and ".join(names[some:])
    return text


def relevant_of(runs: pd.DataFrame) -> pd.Series:
    """Each run's relevant distances: the tag task.relevant, or where a run lacks it (a store from before the tag)
    the one distance task.dependency."""
    tagged = runs["task.relevant"] if "task.relevant" in runs else pd.Series(None, index=runs.index, dtype=object)
    return pd.Series([relevant_distances(t) if isinstance(t, str) else [(int(d), int(d))]
                      for t, d in zip(tagged, runs["task.dependency"])], index=runs.index, dtype=object)


def truncation_bands(runs: pd.DataFrame) -> tuple[pd.Series, dict[str, tuple[int, int]], int]:
    """(bands, reach, inputs): each run's `band`, each band's `inputs_reached`, and the number of relevant inputs,
    from bptt.truncation (NaN: full BPTT) and `relevant_of` the runs."""
    relevant, k = relevant_of(runs), runs["bptt.truncation"]
    bands = pd.Series([band(v, r) for v, r in zip(k, relevant)], index=runs.index, dtype=object)
    reach = {b: inputs_reached(v, r) for b, v, r in zip(bands, k, relevant)}
    return bands, reach, max(len(r) for r in relevant)


TRUNCATION_KEYS = ["task.seq_len", "model.activation", "bptt.truncation"]


def truncation_curves(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curves, solved) per task.seq_len, model.activation and bptt.truncation (NaN: full BPTT): `quartiles_of`
    trunc_cosine and relative_loss, and `outcomes` solved. runs: `with_trunc_cosine`, with eval/loss, task.baseline."""
    data = runs.assign(relative_loss=relative_loss(runs))
    return quartiles_of(data, TRUNCATION_KEYS, ["trunc_cosine", "relative_loss"]), outcomes(data, TRUNCATION_KEYS, "solved")


REMEDY_KEYS = ["task.name", "colour", "label", "task.seq_len"]


def remedy_curves(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curves, solved) per task.name, colour, label and task.seq_len of `remedy_runs`: the `quartiles` of
    relative_loss, and `outcomes` solved over every run."""
    return quartiles(runs, REMEDY_KEYS, "relative_loss"), outcomes(runs, REMEDY_KEYS, "solved")


def saturation_curves(history: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """act/saturation over training per question and activation (`step_curves`), with panel_runs: how many runs of
    the question have a history."""
    curves = step_curves(history, runs, ["question", "model.activation"])
    counts = history.merge(runs, on="run_id").groupby("question")["run_id"].nunique()
    return curves.assign(panel_runs=curves["question"].map(counts))


def final_values(history: pd.DataFrame) -> pd.Series:
    """Each run's last logged value (by step): run_id -> value."""
    return history.sort_values("step").groupby("run_id")["value"].last()


def representative_runs(pool: pd.DataFrame) -> dict[str, pd.Series]:
    """Up to three runs of `pool` (one row per run with decay: its median decay rate), by kind: the most negative decay
    (vanishing) and the most positive (exploding), if of that sign, and of the rest the closest to 0 (healthy).
    Runs that did not diverge are preferred: a run that diverged within a few steps makes a poor picture."""
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
    return picks


def below_epsilon(norms: pd.Series, eps: float = float(FLOAT32.eps)) -> float:
    """The smallest distance (the index) at which a positive norm falls below eps times the largest norm: from there
    on, a term of that size added to the largest is lost to rounding in a float32 sum (the long-range terms of the
    summed weight gradient). NaN if none does; a norm of exactly 0 counts as below."""
    finite = norms[np.isfinite(norms)].sort_index()
    if finite.empty or not (finite.max() > 0):
        return math.nan
    lost = finite.index[finite < eps * finite.max()]
    return float(lost.min()) if len(lost) else math.nan


HEATMAP_CANDIDATES = 3  # runs per extreme kind and sequence length whose gradients are loaded to find a live example
HEALTHY_CANDIDATES = 10  # the same for the decay rate closest to 0, where dead runs (decay about 0) crowd


def heatmap_candidates(pool: pd.DataFrame, per_kind: int = HEATMAP_CANDIDATES, healthy: int = HEALTHY_CANDIDATES) -> pd.DataFrame:
    """Per task.seq_len, the per_kind runs of `pool` (one row per run with decay) with the most negative decay and the
    most positive, and the `healthy` runs closest to 0: the runs `heatmap_picks` may choose from, without loading every
    run's norms."""
    parts = []
    for _, group in pool.groupby("task.seq_len"):
        parts += [group.nsmallest(per_kind, "decay"), group.nlargest(per_kind, "decay"),
                  group.loc[group["decay"].abs().nsmallest(healthy).index]]
    return pd.concat(parts).drop_duplicates("run_id") if parts else pool.iloc[:0]


def live_runs(grad_norms: pd.DataFrame) -> pd.Series:
    """run_id -> whether its gradient is alive: at half of its recorded training steps or more, ||dL/ds_t|| is
    positive and finite at some t < T (a dead relu run, whose gradient is 0 at every t < T, is not).
    grad_norms: columns run_id, step, t, ds_norm."""
    if grad_norms.empty:
        return pd.Series(dtype=bool)
    T = grad_norms.groupby("run_id")["t"].transform("max")
    earlier = grad_norms[grad_norms["t"] < T]
    flowing = (np.isfinite(earlier["ds_norm"]) & (earlier["ds_norm"] > 0)).groupby([earlier["run_id"], earlier["step"]]).any()
    alive = flowing.groupby(level="run_id").mean() >= 0.5
    return alive.reindex(grad_norms["run_id"].unique(), fill_value=False)


def heatmap_picks(pool: pd.DataFrame, grad_norms: pd.DataFrame) -> dict[str, pd.Series]:
    """`representative_runs` among the runs of `pool` whose gradient is alive (`live_runs` of their grad_norms), all
    of one sequence length: the task.seq_len that gives the most kinds (vanishing, exploding, healthy), on a tie the
    one whose vanishing and exploding picks' decay rates spread the widest (the most distinct pictures), then the
    longer. {} when no run is alive."""
    alive = live_runs(grad_norms)
    live = pool[pool["run_id"].map(alive).fillna(False).astype(bool)]
    best, best_key = {}, None
    for T, group in live.groupby("task.seq_len"):
        picks = representative_runs(group)
        decays = [p["decay"] for kind, p in picks.items() if kind != "healthy"] or [0.0]
        key = (len(picks), max(decays) - min(decays), T)
        if best_key is None or key > best_key:
            best, best_key = picks, key
    return best
