"""Curve families for fitting: the registry's family (:data:`drift.curves.FAMILIES`) plus start values and bounds.

A model points at its :class:`~drift.curves.CurveFamily` (which declares the function, parameter names, bounds,
linear parameters, formula and domain once for fits and schedules alike), may narrow the bounds to the data's scale
and guesses start values from the data. The one fitting routine (:func:`drift.stats.fit.fit_model`) owns
optimization, covariance, intervals, identification and information criteria.

Every family here is *partially linear*: with its nonlinear parameters fixed (``tau``; ``b``; ``x0, s``; ``x0``) the
curve is linear in the rest. :meth:`DecayModel.starts` uses that: it scans a grid of the nonlinear parameters, solves
the linear ones by least squares at each grid point and returns the best few points as start values (variable
projection), which makes fits robust without hand-tuned guesses. No family assumes a direction: amplitudes and
slopes may have either sign, so a rising metric is fitted as readily as a falling one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import numpy as np

from drift import curves
from drift.curves import FAMILIES, CurveFamily

__all__ = [
    "MODELS",
    "DecayModel",
    "ExponentialDecay",
    "HingeTrend",
    "LinearTrend",
    "LogisticDecay",
    "PowerLawDecay",
    "get_model",
]


class DecayModel:
    """Base of the fitted families. Subclasses set ``family`` (a :class:`~drift.curves.CurveFamily`; ``name``,
    ``param_names``, ``bounds``, ``formula`` and ``curve`` are taken from it) and implement ``_grid`` (nonlinear
    parameter values to scan) and ``_basis`` (the design of the family's linear parameters at one of them).
    Models hold no state; :meth:`guess` may be overridden directly for a family that is not partially linear."""

    family: ClassVar[CurveFamily]
    name: ClassVar[str]
    param_names: ClassVar[tuple[str, ...]]
    bounds: ClassVar[tuple[tuple[float, float], ...]]
    formula: ClassVar[str]
    curve: ClassVar[Callable[..., np.ndarray]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fam = cls.__dict__.get("family")
        if not isinstance(fam, CurveFamily):
            raise TypeError(f"{cls.__name__} must set family = drift.curves.FAMILIES[...]")
        cls.name, cls.param_names, cls.bounds, cls.formula = fam.name, fam.param_names, fam.bounds, fam.formula
        cls.curve = staticmethod(fam.func)  # type: ignore[assignment]

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DecayModel) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def evaluate(self, x: Any, params: dict[str, float]) -> np.ndarray:
        """The curve at ``x`` with named ``params`` (raises outside the family's domain)."""
        return self.family.evaluate(x, params)

    def bounds_for(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bounds for a fit on abscissa ``x``: the declared ``bounds``, which a family may narrow to the data's scale
        where a parameter would otherwise run off to infinity on data the family does not fit."""
        lo, hi = zip(*self.bounds, strict=True)
        return np.array(lo, dtype=float), np.array(hi, dtype=float)

    # --- start values by variable projection -------------------------------------------------------------
    def _grid(self, x: np.ndarray) -> Iterable[dict[str, float]]:
        return [{}]

    def _basis(self, x: np.ndarray, **nonlinear: float) -> tuple[np.ndarray, tuple[str, ...]]:
        raise NotImplementedError

    def starts(self, x: Any, y: Any, k: int = 3) -> list[dict[str, float]]:
        """Up to ``k`` start points: the best grid points of the nonlinear parameters with the linear ones solved."""
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        scored: list[tuple[float, dict[str, float]]] = []
        for nl in self._grid(x):
            X, names = self._basis(x, **nl)
            if not np.all(np.isfinite(X)):
                continue
            coef, *_ = np.linalg.lstsq(X, y, rcond=None)
            rss = float(np.sum((X @ coef - y) ** 2))
            scored.append((rss, {**nl, **dict(zip(names, map(float, coef), strict=True))}))
        scored.sort(key=lambda s: s[0])
        out = [{p: point[p] for p in self.param_names} for _, point in scored[:k]]
        return out or [dict.fromkeys(self.param_names, 1.0)]

    def guess(self, x: Any, y: Any) -> dict[str, float]:
        """One start-value guess from the data (the best point of :meth:`starts`)."""
        return self.starts(x, y, k=1)[0]


def _span(x: np.ndarray) -> float:
    s = float(np.ptp(x)) if len(x) else 1.0
    return s if s > 0 else 1.0


class ExponentialDecay(DecayModel):
    """y = a * exp(-x / tau) + c: relaxes from c + a towards c with scale tau (a < 0: rises towards c)."""

    family = FAMILIES["exponential"]

    def bounds_for(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # On data it does not fit (a straight line), tau runs off to infinity with a; keep it to the data's scale.
        lo, hi = super().bounds_for(x)
        lo[1], hi[1] = _span(x) / 1000, _span(x) * 100
        return lo, hi

    def _grid(self, x: np.ndarray) -> Iterable[dict[str, float]]:
        return [{"tau": t} for t in np.geomspace(_span(x) / 100, _span(x) * 3, 40)]

    def _basis(self, x: np.ndarray, tau: float) -> tuple[np.ndarray, tuple[str, ...]]:
        return np.column_stack([np.exp(-x / tau), np.ones_like(x)]), ("a", "c")


class PowerLawDecay(DecayModel):
    """y = a * x ** (-b) + c, b > 0, x > 0: a heavy-tailed decay (a < 0: rise); use bin centres, never x = 0."""

    family = FAMILIES["power"]

    def _grid(self, x: np.ndarray) -> Iterable[dict[str, float]]:
        return [{"b": b} for b in np.geomspace(0.02, 5.0, 40)]

    def _basis(self, x: np.ndarray, b: float) -> tuple[np.ndarray, tuple[str, ...]]:
        return np.column_stack([curves.power(x, 1.0, b, 0.0), np.ones_like(x)]), ("a", "c")


class LogisticDecay(DecayModel):
    """y = c + a / (1 + exp((x - x0) / s)): a smooth step of height a at x0 with width s (a < 0: a rise)."""

    family = FAMILIES["logistic"]

    def bounds_for(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # An exponential-looking tail sends x0 to -infinity: keep the midpoint within one data span of the data.
        lo, hi = super().bounds_for(x)
        span = _span(x)
        lo[1], hi[1] = float(np.min(x)) - span, float(np.max(x)) + span
        lo[2], hi[2] = span / 1000, span * 100
        return lo, hi

    def _grid(self, x: np.ndarray) -> Iterable[dict[str, float]]:
        lo, span = float(np.min(x)), _span(x)
        return [{"x0": x0, "s": s} for x0 in lo + span * np.linspace(-0.1, 1.1, 25)
                for s in span * np.geomspace(0.005, 0.5, 12)]

    def _basis(self, x: np.ndarray, x0: float, s: float) -> tuple[np.ndarray, tuple[str, ...]]:
        return np.column_stack([curves.logistic(x, 1.0, x0, s, 0.0), np.ones_like(x)]), ("a", "c")


class LinearTrend(DecayModel):
    """y = a + b * x: a straight line (the null model of a steady trend; b = 0 is flat)."""

    family = FAMILIES["linear"]

    def _basis(self, x: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
        return np.column_stack([np.ones_like(x), x]), ("a", "b")


class HingeTrend(DecayModel):
    """y = a + b1 * min(x, x0) + b2 * max(x - x0, 0): two straight pieces joined at the change point x0."""

    family = FAMILIES["hinge"]

    def bounds_for(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # A change point outside the data is not identified: keep x0 within the observed x.
        lo, hi = super().bounds_for(x)
        lo[3], hi[3] = float(np.min(x)), float(np.max(x))
        return lo, hi

    def _grid(self, x: np.ndarray) -> Iterable[dict[str, float]]:
        xs = np.unique(x)
        inner = (xs[1:-2] + xs[2:-1]) / 2 if len(xs) > 4 else np.array([np.median(xs)])
        return [{"x0": float(v)} for v in inner]

    def _basis(self, x: np.ndarray, x0: float) -> tuple[np.ndarray, tuple[str, ...]]:
        return (np.column_stack([np.ones_like(x), np.minimum(x, x0), np.maximum(x - x0, 0.0)]),
                ("a", "b1", "b2"))


MODELS: dict[str, DecayModel] = {m.name: m for m in (ExponentialDecay(), PowerLawDecay(), LogisticDecay(),
                                                     LinearTrend(), HingeTrend())}


def get_model(model: str | DecayModel) -> DecayModel:
    """A model by name (``"exponential"``...) or the instance itself; unknown names list the known ones."""
    if isinstance(model, DecayModel):
        return model
    try:
        return MODELS[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r}; choose one of {sorted(MODELS)}") from None
