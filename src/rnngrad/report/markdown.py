"""The one markdown-table writer, for the report's runs table and scripts/bench.py's tables."""

from __future__ import annotations

import pandas as pd

# the rule under the header, per column: '-' the renderer's default, 'l' left, 'r' right, 'c' centred
RULES = {"-": "---", "l": ":---", "r": "---:", "c": ":---:"}


def table(rows, header: list[str] | None = None, align: str = "") -> str:
    """A markdown table, one line per row, cells as str(value).

    rows: a DataFrame (its columns are the header, its index is left out) or a list of rows (lists or tuples)
    with `header`. align: one character of RULES per column; columns beyond it get the default '-'.
    """
    if isinstance(rows, pd.DataFrame):
        header, rows = list(rows.columns) if header is None else header, rows.itertuples(index=False)
    rules = [RULES[a] for a in align.ljust(len(header), "-")]
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "|".join(rules) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(v) for v in row) + " |" for row in rows])
