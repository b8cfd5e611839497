"""Whether two report builds agree: their findings.json files (`rnngrad.report.build.Report.findings_json`)
compared number by number (scripts/compare_findings.py).

Two records of the same id agree when the value of one lies inside the other's 95% interval; a number without
an interval on either side (a p value, a median, a count) agrees only when both print it alike. An id that only
one build has is listed, not counted as a disagreement (the two builds ran different questions).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from rnngrad.report import markdown


@dataclass(frozen=True)
class Change:
    id: str
    old: str  # as printed, or '(absent)'
    new: str
    agree: bool | None  # None: the id is in one build only


def numbers(path: Path) -> dict[str, dict]:
    """id -> number record of a findings.json; ValueError naming the file when it is not one."""
    try:
        data = json.loads(Path(path).read_text())
        return {n["id"]: n for finding in data["findings"] for n in finding["numbers"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a readable findings.json ({type(err).__name__}: {err})") from err


def _inside(value, interval) -> bool:
    return interval is not None and value is not None and interval[0] <= value <= interval[1]


def agree(old: dict, new: dict) -> bool:
    """A value of one inside the other's interval; without intervals, the same printed text."""
    if old["interval"] is None and new["interval"] is None:
        return old["printed"] == new["printed"]
    return _inside(old["value"], new["interval"]) or _inside(new["value"], old["interval"])


def compare(old_path: Path, new_path: Path) -> list[Change]:
    """Every id of either build, in the new build's order then the old-only ones, with whether they agree."""
    old, new = numbers(old_path), numbers(new_path)
    changes = [Change(i, old[i]["printed"] if i in old else "(absent)", n["printed"],
                      agree(old[i], n) if i in old else None) for i, n in new.items()]
    return changes + [Change(i, o["printed"], "(absent)", None) for i, o in old.items() if i not in new]


def table(changes: list[Change]) -> str:
    """The numbers that changed (printed differently), as a markdown table: id, old, new, agree (yes, NO, or
    '-' for an id in one build only)."""
    rows = [(c.id, c.old, c.new, {True: "yes", False: "NO", None: "-"}[c.agree]) for c in changes if c.old != c.new]
    return markdown.table(rows, ["id", "old", "new", "agree"]) if rows else "No number changed."


def main(argv: list[str]) -> int:
    """compare_findings.py OLD NEW: print the table; 0 when every shared id agrees, 1 when one does not, 2 on
    bad input."""
    if len(argv) != 2:
        print("usage: compare_findings.py OLD/findings.json NEW/findings.json", file=sys.stderr)
        return 2
    try:
        changes = compare(Path(argv[0]), Path(argv[1]))
    except ValueError as err:
        print(f"compare_findings: {err}", file=sys.stderr)
        return 2
    print(table(changes))
    shared = [c for c in changes if c.agree is not None]
    disagree = [c for c in shared if not c.agree]
    print(f"\n{len(shared) - len(disagree)} of {len(shared)} shared numbers agree"
          + (f"; {len(disagree)} do not: {', '.join(c.id for c in disagree)}" if disagree else ""))
    return 1 if disagree else 0
