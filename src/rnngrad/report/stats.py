"""The report's statistics, from scipy: a 95% Wilson interval for a fraction, Fisher's exact test for two
fractions, the Mann-Whitney U test for two samples, seeded bootstrap intervals for a median and a correlation, and a
number written to the precision its interval supports (a maximum as a bound rounded up to its order).

The report runs 3-10 seeds per configuration, so every fraction it prints is uncertain by tens of percentage
points (2 of 5 solved: 12-77%), and a digit beyond the interval's width is noise, not a finding.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as scipy_stats

LEVEL = 0.95  # the confidence level of every interval the report prints


def wilson(k: int, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval for k successes in n trials; (nan, nan) for n = 0."""
    if n == 0:
        return (math.nan, math.nan)
    if not 0 <= k <= n:
        raise ValueError(f"wilson: k = {k} successes must lie in [0, n = {n}]")
    ci = scipy_stats.binomtest(int(k), int(n)).proportion_ci(LEVEL, method="wilson")
    return (float(ci.low), float(ci.high))


def side(lo: float, hi: float, criterion: float) -> int:
    """Where the interval [lo, hi] lies against a criterion: 1 wholly above it, -1 wholly below, 0 straddling it
    (or touching it, or an empty interval: nan)."""
    if lo > criterion:
        return 1
    if hi < criterion:
        return -1
    return 0


def fisher(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p of Fisher's exact test that k1 of n1 and k2 of n2 come from the same fraction; nan when an arm is empty."""
    if n1 == 0 or n2 == 0:
        return math.nan
    return float(scipy_stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]]).pvalue)


def mann_whitney(a, b) -> float:
    """Two-sided p of the Mann-Whitney U test that samples a and b (NaN left out) come from the same distribution;
    nan when either is empty."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) == 0 or len(b) == 0:
        return math.nan
    return float(scipy_stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def decimals(lo: float, hi: float) -> int:
    """The decimals that the interval [lo, hi] supports: down to the first significant digit of its half-width,
    one more when that digit is 1 (a half-width of 0.12 keeps 0.12, not 0.1). Negative: tens, hundreds."""
    half = (hi - lo) / 2
    if not (math.isfinite(half) and half > 0):
        raise ValueError(f"decimals: the interval [{lo}, {hi}] has no positive finite width")
    first = math.floor(math.log10(half))
    leading = half / 10 ** first
    return -first + (1 if round(leading, 9) < 2 else 0)


def round_to_interval(value: float, lo: float, hi: float) -> str:
    """value written to the precision the interval [lo, hi] supports (`decimals`): 0.4213 in [0.1, 0.7] as
    '0.4', 123.4 in [100, 150] as '120'."""
    places = decimals(lo, hi)
    if places > 0:
        return f"{value:.{places}f}"
    return f"{round(value, places):.0f}"


def p_text(p: float) -> str:
    """A p value with 2 significant digits ('p = 0.035'), 'p < 0.001' below that; 'p = n/a' for nan."""
    if math.isnan(p):
        return "p = n/a"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {float(f'{p:.2g}'):g}"


BOOTSTRAP_RESAMPLES = 2000  # resamples of the median's bootstrap interval
BOOTSTRAP_SEED = 0  # the fixed seed that makes the interval, and so the printed digits, the same on every build
MAX_DIGITS = 3  # significant digits printed at most, however narrow the interval
FALLBACK_DIGITS = 2  # significant digits of a number whose spread is unknown (one run) or zero


def _percentiles(resampled: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(resampled, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return (float(lo), float(hi))


def _resamples(n: int) -> np.ndarray:
    """BOOTSTRAP_RESAMPLES index rows (resamples, n) from the fixed seed: every interval of the report draws the same."""
    return np.random.default_rng(BOOTSTRAP_SEED).integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))


def median_interval(values) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of the median of values (NaN left out), from BOOTSTRAP_RESAMPLES
    resamples with a fixed seed over the sorted values: the same values in any order give the same interval.
    (nan, nan) for fewer than 2 values."""
    x = np.sort(np.asarray(values, dtype=float))
    x = x[~np.isnan(x)]
    if len(x) < 2:
        return (math.nan, math.nan)
    return _percentiles(np.median(x[_resamples(len(x))], axis=1))


def correlation_interval(x, y) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of Pearson's correlation of the pairs (x_i, y_i) (pairs with a NaN left
    out), resampling pairs with the fixed seed, in the order of x (sorted with y to make the order irrelevant).
    (nan, nan) for fewer than 3 pairs; a resample whose x or y is constant is left out."""
    pairs = np.column_stack([np.asarray(x, dtype=float), np.asarray(y, dtype=float)])
    pairs = pairs[~np.isnan(pairs).any(axis=1)]
    if len(pairs) < 3:
        return (math.nan, math.nan)
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    drawn = pairs[_resamples(len(pairs))]  # (resamples, n, 2)
    centred = drawn - drawn.mean(axis=1, keepdims=True)
    spread = np.sqrt((centred[..., 0] ** 2).sum(axis=1) * (centred[..., 1] ** 2).sum(axis=1))
    keep = spread > 0
    return _percentiles((centred[..., 0] * centred[..., 1]).sum(axis=1)[keep] / spread[keep])


def with_interval(value: float, lo: float, hi: float) -> str:
    """'0.99993 (95% CI 0.99985–0.99997)': value and its interval to the decimals the interval supports
    (`decimals`), not capped at MAX_DIGITS significant digits: for a number near a bound (a correlation near 1)
    the digits that matter are the ones after its run of 9s."""
    places = max(0, decimals(lo, hi))
    return f"{value:.{places}f} (95% CI {lo:.{places}f}–{hi:.{places}f})"


def upper_bound(value: float) -> str:
    """The largest of some values as a bound that stays true: rounded up to one significant digit (0.036 -> '0.04',
    1.3e-06 -> '2e-06'). A maximum has no interval that narrows with more runs (one more run can only raise it)
    and in chaotic regimes its last digits differ between machines; its order of magnitude is what it shows."""
    if not math.isfinite(value) or value <= 0:
        return "n/a" if math.isnan(value) else f"{value:g}"
    exponent = math.floor(math.log10(value))
    leading = math.ceil(round(value / 10 ** exponent, 9))
    if leading == 10:
        leading, exponent = 1, exponent + 1
    return _significant(leading * 10.0 ** exponent, 1)


def _significant(value: float, digits: int) -> str:
    """value with `digits` significant digits: positional between 1e-3 and 1e4 (0.41, 120, 1.0), else with an
    exponent (7.7e-08, 4e+04)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    exponent = math.floor(math.log10(abs(value)))
    if -3 <= exponent < 4:
        places = digits - 1 - exponent
        return f"{value:.{places}f}" if places > 0 else f"{round(value, places):.0f}"
    return f"{value:.{digits - 1}e}"


def supported(value: float, lo: float, hi: float) -> str:
    """value to the precision the interval [lo, hi] supports (`decimals`), counted as significant digits so that
    a small or large number keeps its exponent (7.7e-08 in [5e-08, 1e-07] as '8e-08'), between 1 and MAX_DIGITS
    significant digits; FALLBACK_DIGITS when the interval is unknown or has no width (one run, equal runs)."""
    if not math.isfinite(value) or value == 0:
        return "n/a" if math.isnan(value) else f"{value:g}"
    exponent = math.floor(math.log10(abs(value)))
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        return _significant(value, FALLBACK_DIGITS)
    digits = exponent + 1 + decimals(lo, hi)
    return _significant(value, min(MAX_DIGITS, max(1, digits)))
