"""The whole report from a `Study`: `build` walks `sections.SECTIONS` and returns a `Report` (its markdown,
the matplotlib Figures, the findings, the notes on missing data and the runs table); `rnngrad.report.cli`
writes it. A question without runs, a run still running, a diverged run or a missing artifact never raises:
the figure is skipped and the report says what is missing and how to produce it.
"""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pandas as pd
from matplotlib.figure import Figure

from rnngrad import store
from rnngrad.report import frames, markdown
from rnngrad.report.findings import Finding
from rnngrad.report.load import Study
from rnngrad.report.protocol import quick_protocols
from rnngrad.report.sections import QUESTIONS, SECTIONS, Section, scope

LISTED = 10  # run names a note lists before '...'


@dataclass
class Part:
    """One figure of the report: `figure` is None when it could not be drawn, and `missing` says why."""

    name: str
    title: str
    figure: Figure | None = None
    caption: str = ""
    missing: str = ""


@dataclass
class Report:
    source: str
    findings: list[Finding] = field(default_factory=list)
    intro: str = ""  # what the study can show and what it cannot (`sections.scope`)
    parts: list[Part] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    errors: list[str] = field(default_factory=list)  # figures that failed to draw (a bug, not missing data)

    def findings_json(self) -> str:
        """findings.json: every finding's id, text and the numbers its text prints (`Finding.record`). No build
        time or path: two builds of the same runs write the same file."""
        return json.dumps({"findings": [f.record() for f in self.findings]}, indent=1, ensure_ascii=False) + "\n"

    def markdown(self, figure_dir: str = "figures") -> str:
        lines = ["# rnngrad report", "", self.source, ""] + (["## What this study can show", "", self.intro, ""] if self.intro else [])
        lines += ["## Findings", ""]
        lines += [f"- {f.text}" for f in self.findings] or ["- No findings: the store holds no finished runs of the study's questions."]
        lines += ["", "## Figures", ""]
        for number, part in enumerate(self.parts, start=1):
            lines += [f"### {number}. {part.title} (`{part.name}`)", ""]
            if part.figure is not None:
                lines += [f"![{part.title}]({figure_dir}/{part.name}.png)", "",
                          f"[PDF]({figure_dir}/{part.name}.pdf). {part.caption}", ""]
            else:
                lines += [f"Not drawn: {part.missing}", ""]
        if self.notes or self.errors:
            lines += ["## Missing or partial data", ""]
            lines += [f"- {n}" for n in self.errors + self.notes] + [""]
        # the question column left, the counts right
        runs = "No runs." if self.table.empty else markdown.table(self.table, align="-" + "r" * (len(self.table.columns) - 1))
        lines += ["## Runs per question", "", runs, ""]
        return "\n".join(lines)


def draw(section: Section, study: Study, used: pd.DataFrame) -> tuple[Part, list[Finding]]:
    """The section's figure, caption and findings from the ended runs `used`, or why it cannot be drawn."""
    part = Part(section.name, section.title)
    runs = section.select(used)
    data = section.prepare(study, runs) if len(runs) else section.missing(study)
    if isinstance(data, str):
        part.missing = data
        return part, []
    part.figure, part.caption = section.figure(data), section.caption(data)
    return part, [finding for call in section.findings for finding in call(data, figure=section.name)]


def build(study: Study) -> Report:
    """The whole report from the study's runs (the classic tier's, question classic_*, left out: `rnngrad.report.classic`)."""
    study = study.only(~frames.is_classic(study.runs))
    built = (f"Built {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from experiment {markdown.code(study.experiment)} at "
             f"{markdown.code(store.describe(study.uri))}")
    found = f": {len(study.runs)} runs."
    report = Report(built + found)
    used = frames.ended(study.runs)
    for section in SECTIONS:
        if section.optional and section.select(used).empty:
            continue
        try:
            part, found_here = draw(section, study, used)
        except Exception as err:  # a bug in one figure must not cost the rest of the report
            traceback.print_exc()
            why = markdown.escape(f"{type(err).__name__}: {err}")  # it enters the markdown
            report.errors.append(f"{section.name}: the figure could not be drawn ({why}); see the traceback on stderr.")
            part, found_here = Part(section.name, section.title, missing=f"error while drawing ({why})."), []
        report.parts.append(part)
        report.findings += found_here
    protocols = quick_protocols(used, study.params)
    report.intro = scope(used) + (f"\n\nThe protocol of each trained question, against the paper it follows "
                                  f"(the presets in conf/experiment/ give the reasons for each departure):\n\n{protocols}"
                                  if protocols else "")
    report.notes = notes(study, used)
    report.table = runs_table(study.runs)
    return report


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs per question: measured at initialization (FINISHED with train.steps 0: they do not train, so they are
    neither solved nor unsolved), solved/unsolved/diverged (FINISHED, trained), running, killed, failed, and
    finished without an outcome."""
    if runs.empty:
        return pd.DataFrame()
    question = runs["question"].fillna("(none)") if "question" in runs else pd.Series("(none)", index=runs.index)
    finished = runs["status"] == "FINISHED"
    at_init = finished & runs["outcome"].notna() & (runs["train.steps"] == 0 if "train.steps" in runs else False)
    trained = finished & ~at_init
    columns = {
        "runs": pd.Series(True, index=runs.index), "measured at initialization": at_init,
        "solved": trained & (runs["outcome"] == "solved"), "unsolved": trained & (runs["outcome"] == "unsolved"),
        "diverged": trained & (runs["outcome"] == "diverged"), "running": runs["status"] == "RUNNING",
        "killed": runs["status"] == "KILLED", "failed": runs["status"] == "FAILED",
        "no outcome": finished & runs["outcome"].isna(),
    }
    table = pd.DataFrame({k: v.groupby(question).sum().astype(int) for k, v in columns.items()})
    table = table.reindex(sorted(table.index, key=lambda q: (QUESTIONS.index(q) if q in QUESTIONS else len(QUESTIONS), q)))
    table.loc["total"] = table.sum()
    return table.reset_index(names="question")


def _names(runs: pd.DataFrame) -> str:
    return ", ".join(markdown.escape(name) for name in runs["run_name"].astype(str).head(LISTED))


def notes(study: Study, used: pd.DataFrame, questions=QUESTIONS, preset: str | None = None) -> list[str]:
    """What the figures leave out: runs not FINISHED or without an outcome, older repeats of a configuration,
    unreadable artifacts (as the sections recorded them in the study), and questions without runs (with the
    command of their preset: conf/experiment/<question>.yaml, or `preset` for every question)."""
    runs, out = study.runs, []
    for status, why in (("RUNNING", "still running"), ("KILLED", "killed"), ("FAILED", "failed")):
        part = runs[runs["status"] == status]
        if len(part):
            out.append(f"{len(part)} run(s) {why}, left out of every figure: {_names(part)}" + (" ..." if len(part) > LISTED else "") + ".")
    no_outcome = runs[(runs["status"] == "FINISHED") & runs["outcome"].isna()]
    if len(no_outcome):
        out.append(f"{len(no_outcome)} FINISHED run(s) without an outcome tag, left out: {_names(no_outcome)}.")
    duplicates = len(runs[(runs["status"] == "FINISHED") & runs["outcome"].notna()]) - len(used)
    if duplicates:
        out.append(f"{duplicates} older FINISHED run(s) repeat the config_hash of a later run; only the latest is shown.")
    if study.missing_artifacts:
        names = runs.set_index("run_id")["run_name"].reindex(list(study.missing_artifacts)).fillna("?")
        out.append(f"{len(study.missing_artifacts)} run(s) without a readable grad_norms.parquet, left out of the through-time "
                   "figures: " + "; ".join(f"{markdown.escape(n)} ({markdown.escape(why)})"
                                     for n, why in zip(names, study.missing_artifacts.values())) + ".")
    present = set(runs["question"].dropna()) if "question" in runs else set()
    out += [f"No runs with question={q}: {markdown.code(study.command(preset or q))}." for q in questions if q not in present]
    return out
