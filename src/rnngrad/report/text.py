"""Numbers and param values as the report's sentences write them (captions, findings, missing-data notes)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


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


def ratio_text(x: float) -> str:
    """A ratio with 2 significant digits, trailing zeros kept (1.0, 0.0020, 92, 8.8e+04); NaN as 'n/a'."""
    return "n/a" if math.isnan(x) else f"{x:#.2g}".rstrip(".")


def ratio_list(ratios: pd.Series) -> str:
    """'gru (0.0020); lstm (0.0067)' from label -> ratio, in the series' order."""
    return "; ".join(f"{label} ({ratio_text(r)})" for label, r in ratios.items())


def count_text(sizes: pd.Series) -> str:
    """'1 run each', '2 runs each' or '1–3 runs each' from the number of runs per configuration."""
    if sizes.min() == sizes.max():
        return f"{fmt(sizes.min())} run{'' if sizes.min() == 1 else 's'} each"
    return f"{fmt(sizes.min())}–{fmt(sizes.max())} runs each"


def slug(text: str) -> str:
    """An id part from a label: 'k reaches t2, misses t1' -> 'k_reaches_t2__misses_t1'."""
    return "".join(c if c.isalnum() else "_" for c in str(text)).strip("_")


def is_number(v) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and not math.isnan(v)


def value_text(v) -> str:
    """A param value as written on the command line: numbers short, NaN/None as 'null'."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "null"
    return fmt(v) if is_number(v) else str(v)


def value_order(v):
    """Sort key for param values: numbers by value, then everything else (NaN, strings) by its text."""
    return (0, float(v), "") if is_number(v) else (1, 0.0, str(v))
