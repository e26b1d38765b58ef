"""Curve families for position effects: the shared formulas behind decay fits and fitted schedules.

``x`` is a position: relative (t/T in [0, 1], usually bin centres) or absolute (t, tokens). Every family is a
plain vectorized function of ``x`` and named parameters; :mod:`drift.stats` declares bounds and start values
around them, :mod:`drift.schedules` evaluates them as ``fitted`` weights.

============  ===========================================================  ==========================
family        formula                                                      parameters
============  ===========================================================  ==========================
exponential   y = a * exp(-x / tau) + c                                    a, tau (> 0), c
power         y = a * x ** (-b) + c            (x > 0 required)            a, b, c
logistic      y = c + a / (1 + exp((x - x0) / s))                          a, x0, s (> 0), c
linear        y = a + b * x                                                a, b
hinge         y = a + b1 * min(x, x0) + b2 * max(x - x0, 0)  (continuous)  a, b1, b2, x0
============  ===========================================================  ==========================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from drift.errors import ConfigError

__all__ = ["CURVES", "PARAM_NAMES", "evaluate_curve", "exponential", "hinge", "linear", "logistic", "power"]


def exponential(x: Any, a: float, tau: float, c: float) -> np.ndarray:
    """y = a * exp(-x / tau) + c."""
    return a * np.exp(-np.asarray(x, dtype=float) / tau) + c


def power(x: Any, a: float, b: float, c: float) -> np.ndarray:
    """y = a * x ** (-b) + c, defined for x > 0 (use bin centres, never position 0)."""
    x = np.asarray(x, dtype=float)
    if np.any(x <= 0):
        n = int(np.sum(x <= 0))
        raise ValueError(
            f"x must be > 0 for a power law; {n} value(s) <= 0 found. Use bin centres ((t + 0.5) / T or t + 1) "
            "instead of raw positions, or choose another curve family."
        )
    return a * x ** (-b) + c


def logistic(x: Any, a: float, x0: float, s: float, c: float) -> np.ndarray:
    """y = c + a / (1 + exp((x - x0) / s)); falls from c + a to c around x0 when a > 0, s > 0."""
    z = np.clip((np.asarray(x, dtype=float) - x0) / s, -500.0, 500.0)
    return c + a / (1.0 + np.exp(z))


def linear(x: Any, a: float, b: float) -> np.ndarray:
    """y = a + b * x."""
    return a + b * np.asarray(x, dtype=float)


def hinge(x: Any, a: float, b1: float, b2: float, x0: float) -> np.ndarray:
    """y = a + b1 * min(x, x0) + b2 * max(x - x0, 0): slope b1 before the change point x0, b2 after."""
    x = np.asarray(x, dtype=float)
    return a + b1 * np.minimum(x, x0) + b2 * np.maximum(x - x0, 0.0)


CURVES: dict[str, Callable[..., np.ndarray]] = {
    "exponential": exponential,
    "power": power,
    "logistic": logistic,
    "linear": linear,
    "hinge": hinge,
}

PARAM_NAMES: dict[str, tuple[str, ...]] = {
    "exponential": ("a", "tau", "c"),
    "power": ("a", "b", "c"),
    "logistic": ("a", "x0", "s", "c"),
    "linear": ("a", "b"),
    "hinge": ("a", "b1", "b2", "x0"),
}


def evaluate_curve(family: str, x: Any, params: dict[str, float]) -> np.ndarray:
    """Evaluate curve ``family`` at ``x`` with named ``params``; all names must be present, none extra."""
    if family not in CURVES:
        raise ConfigError("curve", [f"unknown curve family {family!r}; choose one of {sorted(CURVES)}"])
    want = PARAM_NAMES[family]
    problems = [f"missing parameter {p!r} for {family}" for p in want if p not in params]
    problems += [f"unexpected parameter {p!r} for {family} (expects {list(want)})" for p in params if p not in want]
    if problems:
        raise ConfigError(f"{family} curve", problems)
    return CURVES[family](x, **{p: float(params[p]) for p in want})
