"""The papers' settings and ours, for both reports: what each experiment's protocol follows and where it departs.

The papers' settings are citations (text constants from the papers, ../REFERENCES of the study), ours is read
from the runs' params; `setting_text` writes ours with every value that differs from the paper's followed by
"(the paper: ...)", so each deviation is visible in the report (the presets' comments give the reasons).
"""

from __future__ import annotations

import pandas as pd

from rnngrad.report import frames
from rnngrad.report.markdown import escape
from rnngrad.report.text import fmt

SETTING_KEYS = ("task", "T", "H", "optimizer", "lr", "clip", "updates", "batch", "seeds")
OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "rmsprop": "RMSProp", "momentum": "SGD with momentum"}

# Le, Jaitly & Hinton (2015), the adding problem: the IRNN and the LSTM they compare it with
LE_2015 = {"task": "adding", "T": "150–400", "H": "100", "optimizer": "SGD", "lr": "0.01", "clip": "norm 10",
           "updates": "1e6", "batch": "16"}
# Pascanu, Mikolov & Bengio (2013), Sec. 4.3 and Fig. 7: temporal order under SGD, with and without clipping
PASCANU_2013 = {"task": "temporal order", "T": "50–200", "H": "50", "optimizer": "SGD", "lr": "0.01",
                "clip": "none, norm 1", "updates": "5e6", "batch": "20"}

# the quick study's trained questions: (the papers whose protocol it follows, their setting, the rest in words)
QUICK_PROTOCOLS = {
    "seqlen": ("Pascanu et al. 2013 (Fig. 7)", PASCANU_2013,
               "their three initializations (sigmoid, basic tanh, smart tanh), lengths sampled in [50, 200], Omega "
               "as a third arm, success: under 1% errors on 10,000 fresh sequences"),
    "clipping": ("Pascanu et al. 2013 (Algorithm 1)", {**PASCANU_2013, "clip": "norm 1"},
                 "smart tanh init; element-wise clipping after Mikolov (2012)"),
    "truncation": ("Williams & Peng 1990; Tallec & Ollivier 2017", {},
                   "no fixed setting: truncated BPTT is biased when a dependency exceeds the window k"),
    "remedies": ("Le et al. 2015; Hochreiter & Schmidhuber 1997; Cooijmans et al. 2016; Ba et al. 2016", LE_2015,
                 "each remedy by its own paper: IRNN SGD + norm clipping 10, gated cells and normalization at lr "
                 "1e-3, batch norm's gain 0.1 with population statistics"),
}


def budget(x: float) -> str:
    """An update count as the table writes it: 3000 as '3e3', 1500 as '1.5e3', 1e6 as '1e6'."""
    mantissa, exponent = f"{float(x):.2e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def values(runs: pd.DataFrame, key: str, show=fmt) -> str:
    """The distinct values of a param over the runs, sorted, as a comma list ('n/a' when none)."""
    found = sorted(runs[key].dropna().unique()) if key in runs else []
    return ", ".join(show(v) for v in found) or "n/a"


def our_setting(runs: pd.DataFrame, arms: pd.Series) -> dict[str, str]:
    """Our setting from the runs' params, in the keys of SETTING_KEYS (arms: each run's arm; seeds: the runs per arm
    and T)."""
    modes = runs.reindex(columns=["clip.mode", "clip.threshold"])
    clip = ", ".join(sorted({"none" if m == "none" else f"{m} {fmt(t)}" for m, t in modes.dropna(subset=["clip.mode"]).itertuples(index=False)})) or "n/a"
    sizes = runs.groupby([arms, runs["task.seq_len"]]).size()
    seeds = fmt(sizes.min()) if sizes.min() == sizes.max() else f"{fmt(sizes.min())}–{fmt(sizes.max())}"
    T = values(runs, "task.seq_len")
    if "task.min_seq_len" in runs and runs["task.min_seq_len"].notna().any():
        T += " (trained on lengths from " + values(runs, "task.min_seq_len") + ")"
    return {"task": values(runs, "task.name", str).replace("_", " "), "T": T, "H": values(runs, "model.hidden_size"),
            "optimizer": values(runs, "optim.name", lambda v: OPTIMIZERS.get(v, v)), "lr": values(runs, "optim.lr"),
            "clip": clip, "updates": values(runs, "train.steps", budget), "batch": values(runs, "train.batch_size"),
            "seeds": f"{seeds} per arm and T"}


def setting_text(setting: dict[str, str], paper: dict[str, str] | None = None) -> str:
    """'task adding, T 100, 200, ...'; with the paper's setting, each value that differs from it followed by
    '(the paper: ...)', so every deviation is visible."""
    parts = []
    for key in SETTING_KEYS:
        if key not in setting:
            continue
        text = f"{key} {setting[key]}"
        if paper is not None and key in paper and paper[key] not in (setting[key], *setting[key].split(", ")):
            text += f" (the paper: {paper[key]})"
        parts.append(text)
    return ", ".join(parts)


def quick_protocols(runs: pd.DataFrame, params: list[str]) -> str:
    """The quick study's protocol table: per trained question of QUICK_PROTOCOLS with runs, the papers it follows,
    their setting, and ours with its deviations marked (arms: the configurations apart from seed and T)."""
    rows = []
    for question, (papers, paper, also) in QUICK_PROTOCOLS.items():
        mine = frames.trained(frames.of_question(runs, question))
        if mine.empty:
            continue
        arms = frames.config_labels(mine, params, exclude=("task.seq_len",))
        theirs = setting_text(paper) + ("; " if paper else "") + also
        rows.append(f"| {question} | {escape(papers)} | {escape(theirs)} | {escape(setting_text(our_setting(mine, arms), paper))} |")
    if not rows:
        return ""
    return "\n".join(["| question | follows | the paper's setting | ours (each departure followed by the paper's value) |",
                      "|---|---|---|---|", *rows])
