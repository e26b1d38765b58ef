"""Paired-seed statistics and verdict rules of the schedule ablation: t intervals, MDEs, slopes, verdicts.

Pure functions of numbers (no training, no files), used by :mod:`drift.train.ablation` for its claims (which
re-exports them). A verdict is a pure function of an interval: ``holds``, ``contradicted``,
``inconclusive``, or :data:`NO_VERDICT` without an interval (fewer than two seeds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sstats

__all__ = ["NO_VERDICT", "mde", "mean_ci", "slope_per_100", "verdict_above", "verdict_below", "verdict_within"]


def mde(sd: float, n: int, *, alpha: float = 0.05, power: float = 0.80) -> float:
    """Minimum detectable effect of a (paired) one-sample t test: ``(t_{1-alpha/2,n-1} + t_{power,n-1}) sd/sqrt(n)``.

    The smallest true mean difference a two-sided level-``alpha`` test detects with probability ``power`` when the
    differences have standard deviation ``sd`` (NaN for n < 2).

    Example:
        >>> round(mde(1.0, 5), 3)  # (2.776 + 0.941) / sqrt(5)
        1.662
    """
    if n < 2 or not math.isfinite(sd):
        return math.nan
    df = n - 1
    return float((sstats.t.ppf(1 - alpha / 2, df) + sstats.t.ppf(power, df)) * sd / math.sqrt(n))


def mean_ci(values: pd.Series | Sequence[float]) -> dict[str, float]:
    """Mean with a 95% t interval, the values' sd and the MDE at 80% power (NaN interval with fewer than two)."""
    v = pd.Series(values, dtype=float).dropna()
    n = len(v)
    mean = float(v.mean()) if n else math.nan
    if n < 2:
        return {"value": mean, "ci_low": math.nan, "ci_high": math.nan, "sd": math.nan, "mde": math.nan, "n": n}
    sd = float(v.std(ddof=1))
    half = float(sstats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
    return {"value": mean, "ci_low": mean - half, "ci_high": mean + half, "sd": sd, "mde": mde(sd, n), "n": n}


def _no_interval(r: dict[str, float]) -> bool:
    return not (math.isfinite(r["ci_low"]) and math.isfinite(r["ci_high"]))


NO_VERDICT = "n/a (needs >= 2 seeds)"


def verdict_above(r: dict[str, float], bound: float) -> str:
    """holds if the interval lies above ``bound``, contradicted if below it, inconclusive if it contains it."""
    if _no_interval(r):
        return NO_VERDICT
    return "holds" if r["ci_low"] > bound else "contradicted" if r["ci_high"] < bound else "inconclusive"


def verdict_below(r: dict[str, float], bound: float) -> str:
    """holds if the interval lies below ``bound``, contradicted if above it, inconclusive if it contains it."""
    if _no_interval(r):
        return NO_VERDICT
    return "holds" if r["ci_high"] < bound else "contradicted" if r["ci_low"] > bound else "inconclusive"


def verdict_within(r: dict[str, float], low: float, high: float) -> str:
    """holds if the interval lies inside [low, high], contradicted if it lies entirely outside (above ``high`` or
    below ``low``), inconclusive if it straddles ``low`` or ``high``."""
    if _no_interval(r):
        return NO_VERDICT
    if low <= r["ci_low"] and r["ci_high"] <= high:
        return "holds"
    if r["ci_low"] > high or r["ci_high"] < low:
        return "contradicted"
    return "inconclusive"


def slope_per_100(steps: np.ndarray, values: np.ndarray) -> float:
    """OLS slope of values on steps, per 100 steps (NaN with fewer than two distinct steps)."""
    if len(steps) < 2 or np.ptp(steps) == 0:
        return math.nan
    return float(np.polyfit(steps, values, 1)[0] * 100.0)
