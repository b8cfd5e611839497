"""Markdown for the report and scripts/bench.py: the one table writer, and the escaping of text that comes from
a store (params, run names, experiment names, error messages), so that no value can break a table, start a list,
open an emphasis, a link, an HTML tag or a code span, or end a line."""

from __future__ import annotations

import re

import pandas as pd

# the rule under the header, per column: '-' the renderer's default, 'l' left, 'r' right, 'c' centred
RULES = {"-": "---", "l": ":---", "r": "---:", "c": ":---:"}
# characters that are markup anywhere in a line in CommonMark or GitHub's extensions (code, emphasis, links,
# HTML and autolinks, entities, table cells, strikethrough, math), and those that are markup at a line's start
SPECIAL = re.compile(r"([\\`*_\[\]<|~$&])")
# a quote, heading or list item at a line's start
LEADING = re.compile(r"^(\s*)(>|(?:#{1,6}|[-+]|\d{1,9}[.)])(?=\s|$))")
BREAKS = re.compile(r"[\r\n\t\v\f\x00-\x08\x0e-\x1f\x7f\u2028\u2029]+")


def escape(text) -> str:
    """str(text) as literal markdown text: every markup character backslash-escaped, line breaks and other
    control characters as one space (a table row and a list item are one line)."""
    text = SPECIAL.sub(r"\\\1", BREAKS.sub(" ", str(text)))
    return LEADING.sub(lambda m: m[1] + m[2][:-1] + "\\" + m[2][-1], text)


def code(text) -> str:
    """str(text) as an inline code span, whatever backticks it holds (the fence is longer than any run of them);
    line breaks as one space."""
    text = BREAKS.sub(" ", str(text))
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def table(rows, header: list[str] | None = None, align: str = "", *, raw: bool = False) -> str:
    """A markdown table, one line per row, each cell str(value) escaped (`escape`), or as it is with raw=True
    (cells that are markdown already, written by the caller, never text from a store).

    rows: a DataFrame (its columns are the header, its index is left out) or a list of rows (lists or tuples)
    with `header`. align: one character of RULES per column; columns beyond it get the default '-'.
    """
    if isinstance(rows, pd.DataFrame):
        header, rows = list(rows.columns) if header is None else header, rows.itertuples(index=False)
    rules = [RULES[a] for a in align.ljust(len(header), "-")]
    cell = str if raw else escape
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join(rules) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])
