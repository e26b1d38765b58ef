"""Curve families for position effects: the one registry of what each family is, used by fits and schedules.

``x`` is a position: relative (t/T in [0, 1], usually bin centres) or absolute (t, tokens). Every family is a
plain vectorized function of ``x`` and named parameters, declared once in :data:`FAMILIES` as a
:class:`CurveFamily`: its function, parameter names, bounds, which parameters must be positive, which enter
linearly, the formula text and the domain of ``x`` where it is defined. :mod:`drift.stats.models` adds start
values and data-dependent bounds on top of it, :mod:`drift.stats.fit` its identification check,
:mod:`drift.schedules` (the ``fitted`` kind, ``recommend``) evaluates and rescales through it.

============  ===========================================================  ==================  ===========
family        formula                                                      parameters          domain
============  ===========================================================  ==================  ===========
exponential   y = a * exp(-x / tau) + c                                    a, tau (> 0), c     all x
power         y = a * x ** (-b) + c                                        a, b (> 0), c       x > 0
logistic      y = c + a / (1 + exp((x - x0) / s))                          a, x0, s (> 0), c   all x
linear        y = a + b * x                                                a, b                all x
hinge         y = a + b1 * min(x, x0) + b2 * max(x - x0, 0)  (continuous)  a, b1, b2, x0       all x
============  ===========================================================  ==================  ===========

**Linear parameters.** Every family is affine in its ``linear`` parameters, and exactly one of them (``offset``)
multiplies the constant. So the rescaled curve ``s * f(x; theta) + t`` is the same family with every linear
parameter multiplied by ``s`` and ``t`` added to the offset (:meth:`CurveFamily.affine`); the nonlinear ones
(``tau``; ``b``; ``x0, s``; ``x0``) are unchanged.

**Domain.** A family is defined for ``x >= domain_min`` (``x > domain_min`` when ``domain_open``); a power law only
for ``x > 0``. :func:`evaluate_curve` raises outside the domain; :func:`evaluate_on_domain` clamps ``x`` to the
domain edge instead (for an open edge, to a caller-given ``edge`` inside the domain, e.g. the smallest fitted bin
centre), for callers such as a schedule's normalization that scan [0, 1] including x = 0.

**Parameter units** (``units``) say what each parameter is measured in, for the identification check of fits:
``"y"`` (a level or amplitude of the metric), ``"y/x"`` (a slope), ``"x"`` (a position), ``"dx"`` (a width along
x), ``"1"`` (dimensionless, e.g. an exponent).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from drift.errors import ConfigError

__all__ = [
    "CURVES",
    "FAMILIES",
    "PARAM_NAMES",
    "CurveFamily",
    "evaluate_curve",
    "evaluate_on_domain",
    "exponential",
    "get_family",
    "hinge",
    "linear",
    "logistic",
    "power",
]

INF = math.inf
Unit = Literal["y", "y/x", "x", "dx", "1"]


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
            "instead of raw positions, evaluate_on_domain to clamp to the domain, or choose another curve family."
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


@dataclass(frozen=True)
class CurveFamily:
    """Everything drift knows about one curve family, declared once.

    Attributes:
        name: the family's name (``"exponential"``...), as written in fits.json and schedule specs.
        func: the vectorized curve ``func(x, *params)`` (parameters in ``param_names`` order).
        param_names: the parameters, in order.
        formula: the formula text, ``y = <formula>``.
        bounds: declared ``(low, high)`` per parameter for fitting (fits may narrow them to the data's scale).
        positive: parameters that must be > 0 (widths, scales, exponents).
        linear: parameters the curve is affine in (solved by least squares in the fits' start values).
        offset: the linear parameter multiplying the constant (``c``, or ``a`` of lines).
        units: the unit of each parameter (module docstring), for the identification check of fits.
        domain_min: the smallest x where the family is defined (``-inf``: everywhere).
        domain_open: the domain excludes ``domain_min`` itself (power laws: x > 0).
    """

    name: str
    func: Callable[..., np.ndarray]
    param_names: tuple[str, ...]
    formula: str
    bounds: tuple[tuple[float, float], ...]
    positive: tuple[str, ...]
    linear: tuple[str, ...]
    offset: str
    units: Mapping[str, Unit]
    domain_min: float = -INF
    domain_open: bool = False

    def __post_init__(self) -> None:
        names = set(self.param_names)
        problems = [f"{len(self.bounds)} bounds for {len(self.param_names)} parameters"] * (
            len(self.bounds) != len(self.param_names))
        problems += [f"unknown parameter {p!r} in {what}" for what, ps in
                     (("positive", self.positive), ("linear", self.linear), ("units", tuple(self.units)))
                     for p in ps if p not in names]
        problems += [f"offset {self.offset!r} is not a linear parameter"] * (self.offset not in self.linear)
        problems += [f"no unit for {p!r}" for p in self.param_names if p not in self.units]
        if problems:
            raise TypeError(f"curve family {self.name!r}: " + "; ".join(problems))

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    def valid(self, x: Any) -> np.ndarray:
        """Boolean mask: where ``x`` lies in the family's domain."""
        x = np.asarray(x, dtype=float)
        return x > self.domain_min if self.domain_open else x >= self.domain_min

    def domain_text(self) -> str:
        """The domain as text, e.g. ``x > 0`` or ``all x``."""
        if self.domain_min == -INF:
            return "all x"
        return f"x {'>' if self.domain_open else '>='} {self.domain_min:g}"

    def check_params(self, params: Mapping[str, Any]) -> list[str]:
        """Problems with named ``params`` (missing, extra, non-finite, not positive where required); [] if fine."""
        want = self.param_names
        problems = [f"missing parameter {p!r} for {self.name}" for p in want if p not in params]
        problems += [f"unexpected parameter {p!r} for {self.name} (expects {list(want)})"
                     for p in params if p not in want]
        for p in want:
            if p in params:
                try:
                    v = float(params[p])
                except (TypeError, ValueError):
                    problems.append(f"parameter {p!r} must be a number, got {params[p]!r}")
                    continue
                if not math.isfinite(v):
                    problems.append(f"parameter {p!r} must be finite, got {v}")
                elif p in self.positive and v <= 0:
                    problems.append(f"parameter {p!r} must be > 0 for {self.name}, got {v:g}")
        return problems

    def evaluate(self, x: Any, params: Mapping[str, float]) -> np.ndarray:
        """The curve at ``x`` with named ``params`` (raises outside the domain, e.g. a power law at x <= 0)."""
        return self.func(np.asarray(x, dtype=float), *(float(params[p]) for p in self.param_names))

    def clamp(self, x: Any, edge: float | None = None) -> np.ndarray:
        """``x`` with points outside the domain moved to its edge.

        A closed domain's edge is ``domain_min``. An open one (x > 0) has no smallest point, so ``edge`` (> the
        domain minimum, e.g. the first fitted bin centre) is used; without it, the smallest valid ``x`` given.

        Raises:
            ValueError: an open edge with neither a valid ``edge`` nor any valid ``x`` to clamp to.
        """
        x = np.asarray(x, dtype=float)
        ok = self.valid(x) | np.isnan(x)
        if np.all(ok):
            return x
        if not self.domain_open:
            return np.where(ok, x, self.domain_min)
        if edge is None or not bool(self.valid(edge)):
            inside = x[self.valid(x)]
            if edge is not None or len(inside) == 0:
                raise ValueError(f"{self.name} is defined for {self.domain_text()}; pass edge (a point inside the "
                                 f"domain, e.g. the smallest fitted x) to clamp {int(np.sum(~ok))} point(s) to, "
                                 f"got edge={edge!r}")
            edge = float(np.min(inside))
        return np.where(ok, x, float(edge))

    def affine(self, params: Mapping[str, float], scale: float, shift: float = 0.0) -> dict[str, float]:
        """Parameters of ``scale * f(x; params) + shift``: linear parameters times ``scale``, ``shift`` added to
        the offset, the nonlinear ones unchanged."""
        out = {p: float(params[p]) for p in self.param_names}
        for p in self.linear:
            out[p] *= float(scale)
        out[self.offset] += float(shift)
        return out


_FAMILY_LIST = (
    CurveFamily("exponential", exponential, ("a", "tau", "c"), "a * exp(-x / tau) + c",
                bounds=((-INF, INF), (1e-12, INF), (-INF, INF)), positive=("tau",), linear=("a", "c"), offset="c",
                units={"a": "y", "tau": "dx", "c": "y"}),
    CurveFamily("power", power, ("a", "b", "c"), "a * x ** (-b) + c",
                bounds=((-INF, INF), (1e-6, 20.0), (-INF, INF)), positive=("b",), linear=("a", "c"), offset="c",
                units={"a": "y", "b": "1", "c": "y"}, domain_min=0.0, domain_open=True),
    CurveFamily("logistic", logistic, ("a", "x0", "s", "c"), "c + a / (1 + exp((x - x0) / s))",
                bounds=((-INF, INF), (-INF, INF), (1e-12, INF), (-INF, INF)), positive=("s",), linear=("a", "c"),
                offset="c", units={"a": "y", "x0": "x", "s": "dx", "c": "y"}),
    CurveFamily("linear", linear, ("a", "b"), "a + b * x", bounds=((-INF, INF), (-INF, INF)), positive=(),
                linear=("a", "b"), offset="a", units={"a": "y", "b": "y/x"}),
    CurveFamily("hinge", hinge, ("a", "b1", "b2", "x0"), "a + b1 * min(x, x0) + b2 * max(x - x0, 0)",
                bounds=((-INF, INF), (-INF, INF), (-INF, INF), (-INF, INF)), positive=(), linear=("a", "b1", "b2"),
                offset="a", units={"a": "y", "b1": "y/x", "b2": "y/x", "x0": "x"}),
)

FAMILIES: dict[str, CurveFamily] = {f.name: f for f in _FAMILY_LIST}
"""The curve families by name: the one registry (fits, the ``fitted`` schedule kind and ``recommend`` ask it)."""

CURVES: dict[str, Callable[..., np.ndarray]] = {f.name: f.func for f in _FAMILY_LIST}
"""Each family's function, by name (a view of :data:`FAMILIES`)."""

PARAM_NAMES: dict[str, tuple[str, ...]] = {f.name: f.param_names for f in _FAMILY_LIST}
"""Each family's parameter names, by name (a view of :data:`FAMILIES`)."""


def get_family(family: str | CurveFamily) -> CurveFamily:
    """The :class:`CurveFamily` named ``family`` (an instance passes through).

    Raises:
        ConfigError: an unknown name (the message lists the known ones).
    """
    if isinstance(family, CurveFamily):
        return family
    try:
        return FAMILIES[family]
    except (KeyError, TypeError):
        raise ConfigError("curve", [f"unknown curve family {family!r}; choose one of {sorted(FAMILIES)}"]) from None


def _checked(family: str, params: Mapping[str, float]) -> CurveFamily:
    fam = get_family(family)
    want = fam.param_names
    problems = [f"missing parameter {p!r} for {family}" for p in want if p not in params]
    problems += [f"unexpected parameter {p!r} for {family} (expects {list(want)})" for p in params if p not in want]
    if problems:
        raise ConfigError(f"{family} curve", problems)
    return fam


def evaluate_curve(family: str, x: Any, params: Mapping[str, float]) -> np.ndarray:
    """Evaluate curve ``family`` at ``x`` with named ``params``; all names must be present, none extra.

    Raises:
        ConfigError: unknown family or wrong parameter names.
        ValueError: ``x`` outside the family's domain (a power law at x <= 0); see :func:`evaluate_on_domain`.
    """
    return _checked(family, params).evaluate(x, params)


def evaluate_on_domain(family: str, params: Mapping[str, float], x: Any, *, edge: float | None = None) -> np.ndarray:
    """Evaluate ``family`` at ``x``, with points outside its domain evaluated at the domain's edge.

    ``f(clamp(x))``: inside the domain this is :func:`evaluate_curve`; below it (a power law at x <= 0) the value at
    the edge, so a scan over [0, 1] (e.g. a schedule's peak) never crashes and never sees the power law's pole. For an
    open edge the clamp point is ``edge`` (e.g. the smallest fitted bin centre, which the fit has seen), else the
    smallest valid ``x`` (see :meth:`CurveFamily.clamp`).

    Raises:
        ConfigError: unknown family or wrong parameter names.
        ValueError: an open domain edge with nothing inside the domain to clamp to.
    """
    fam = _checked(family, params)
    return fam.evaluate(fam.clamp(x, edge), params)
