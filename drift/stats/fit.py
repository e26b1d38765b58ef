"""One fitting routine for every declared curve family, and frozen results you can report, plot and compare.

**Model.** Bin means ``y_k`` at positions ``x_k`` follow ``y_k = f(x_k; theta) + e_k`` with ``e ~ N(0, sigma^2 V)``.
``V`` comes from one of (pick at most one):

- ``weights=w``: ``V = diag(1 / w)``. With bin counts (``n_rollouts`` is the default in :func:`~drift.stats.fit_bins`:
  rollout-level noise dominates a bin mean's variance, and it is the number of independent units) or any
  precision weights. Points with weight 0 are dropped.
- ``sigma=s``: ``V = diag(s^2)`` (e.g. the bootstrap standard error of each bin).
- ``cov=C``: ``V = C``, a full covariance, e.g. of the bootstrap replicates of the bin means: the same rollouts feed
  every bin, so bin means are correlated and a common shift should widen the intercept's interval, not vanish.
  ``C`` is shrunk towards its diagonal by ``shrinkage`` and its diagonal floored at 1e-4 x its median so a bin
  with (near) zero variance, like a cumulative quantity at position 0, cannot dominate the fit.
- none: ``V = I``.

``scipy.optimize.least_squares`` (trust-region reflective, within the model's bounds) minimises ``|W r|^2`` with
``W^T W = V^{-1}``, from the model's start points; the best converged one wins.

**Bins are intervals, not points.** A bin mean averages the curve over the bin's tokens, which differs from the
curve at their mean position ``x`` where the curve bends (Jensen). With ``x_var`` (the variance of the token
positions within each bin) the model value of a bin is ``(f(x - d) + 4 f(x) + f(x + d)) / 6``, ``d = sqrt(3 x_var)``
(matches the first two moments; exact for quadratics); without it, ``f(x)``. :func:`~drift.stats.fit_bins` passes
it, which removes the bias of strongly curved fits (tau near the bin width, power laws near 0).

**Uncertainty.** ``cov(theta) = s^2 (J^T J)^{-1}`` with ``J`` the whitened Jacobian and ``s^2 = RSS / (n - p)``
(``absolute_sigma=False``, the default: ``V`` gives relative weights and the scale is estimated) or
``s^2 = max(1, RSS / (n - p))`` (``absolute_sigma=True`` with ``sigma``/``cov``: they are the actual errors, e.g.
from the rollout bootstrap, so the scale is known; a misfitting curve still widens its intervals by the reduced
chi-square, a well-fitting one never narrows them). Intervals are Wald: ``theta +- q * se`` with ``q`` from
Student's t with n - p degrees of freedom (estimated scale) or the normal (known scale).

**Information criteria** from the Gaussian likelihood of the whitened residuals:

- scale estimated: ``logL = -n/2 * (log(2 pi RSS / n) + 1) + log|det W|``, ``k = p + 1`` (the variance counts);
- scale known (``absolute_sigma=True``): ``logL = -n/2 * log(2 pi) - RSS / 2 + log|det W|``, ``k = p``;

``AIC = 2k - 2 logL``, ``AICc = AIC + 2k(k+1) / (n - k - 1)``, ``BIC = k log(n) - 2 logL``. Only differences
between models fitted to the same data and errors mean anything.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import linalg, optimize
from scipy import stats as sps

from drift.errors import ConvergenceError, FitWarning
from drift.stats.models import MODELS, DecayModel, get_model

__all__ = ["FitResult", "FrozenDict", "ModelSelection", "fit_all", "fit_model", "half_point"]


class FrozenDict(Mapping[str, Any]):
    """A read-only, picklable mapping (fitted parameters must not change after the fit)."""

    __slots__ = ("_d",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        object.__setattr__(self, "_d", dict(*args, **kwargs))

    def __getitem__(self, key: str) -> Any:
        return self._d[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("FrozenDict is read-only")

    def __repr__(self) -> str:
        return repr(self._d)

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (self._d,))


def _plain(v: Any) -> Any:
    """JSON-safe plain Python value (non-finite floats become None)."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_plain(x) for x in v]
    return v


def _ro(a: Any) -> np.ndarray | None:
    if a is None:
        return None
    a = np.array(a, dtype=float, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class FitResult:
    """A finished fit of one model: immutable; ``converged=False`` results carry NaN parameters and the reason.

    Attributes:
        model: the :class:`~drift.stats.models.DecayModel`.
        params, stderr, ci_low, ci_high: by parameter name.
        cov: parameter covariance (p x p).
        aic, aicc, bic, loglik: information criteria (see the module docstring for the formulas).
        n_obs, df_resid, scale: data points, n - p, the error scale s^2 (1 when known).
        converged, message: whether the optimizer converged, and its (or the failure's) message.
        x, y, weights, yerr: the data fitted (``yerr``: per-point standard errors when known, for plots).
        x_var: spread of positions within each bin when the bin-averaged curve was fitted, else None.
        ci: interval level; errors: which error model was used (``none``, ``weights``, ``sigma``, ``cov``).
    """

    model: DecayModel
    params: FrozenDict
    stderr: FrozenDict
    ci_low: FrozenDict
    ci_high: FrozenDict
    cov: np.ndarray
    aic: float
    aicc: float
    bic: float
    loglik: float
    n_obs: int
    df_resid: int
    scale: float
    converged: bool
    message: str
    x: np.ndarray
    y: np.ndarray
    weights: np.ndarray | None = None
    yerr: np.ndarray | None = None
    ci: float = 0.95
    errors: str = "none"
    warnings: tuple[str, ...] = field(default=())
    x_var: np.ndarray | None = None

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def n_params(self) -> int:
        return self.model.n_params

    def predict(self, x: Any) -> np.ndarray:
        """The fitted curve at ``x`` (NaN for a fit that did not converge)."""
        if not self.converged:
            return np.full(np.shape(x), np.nan)
        return self.model.evaluate(x, dict(self.params))

    def summary(self) -> pd.DataFrame:
        """One row per parameter: estimate, stderr, ci_low, ci_high."""
        names = list(self.model.param_names)
        return pd.DataFrame({"estimate": [self.params[p] for p in names], "stderr": [self.stderr[p] for p in names],
                             "ci_low": [self.ci_low[p] for p in names], "ci_high": [self.ci_high[p] for p in names]},
                            index=pd.Index(names, name="param"))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict: model, params, stderr, ci_low, ci_high, aic, bic, converged and fit details."""
        return _plain({
            "model": self.name, "formula": self.model.formula, "params": dict(self.params),
            "stderr": dict(self.stderr), "ci_low": dict(self.ci_low), "ci_high": dict(self.ci_high),
            "aic": self.aic, "aicc": self.aicc, "bic": self.bic, "loglik": self.loglik, "converged": self.converged,
            "message": self.message, "n_obs": self.n_obs, "n_params": self.n_params, "scale": self.scale,
            "ci": self.ci, "errors": self.errors, "warnings": list(self.warnings),
        })

    def report(self) -> str:
        """A short text report: formula, fit statistics and the parameter table."""
        head = f"{self.name}: y = {self.model.formula}"
        if not self.converged:
            return f"{head}\n  did not converge: {self.message}"
        lines = [head, f"  n={self.n_obs}  AIC={self.aic:.2f}  BIC={self.bic:.2f}  scale={self.scale:.3g}  "
                       f"errors={self.errors}"]
        level = f"{round(self.ci * 100)}%"
        for p in self.model.param_names:
            lines.append(f"  {p:>4} = {self.params[p]: .5g}  (se {self.stderr[p]:.3g}; {level} CI "
                         f"[{self.ci_low[p]:.5g}, {self.ci_high[p]:.5g}])")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    def _repr_html_(self) -> str:
        status = "" if self.converged else f" <b>did not converge</b>: {self.message}"
        return (f"<p><b>{self.name}</b>: y = {self.model.formula}; n={self.n_obs}, AIC={self.aic:.2f}, "
                f"BIC={self.bic:.2f}{status}</p>" + self.summary().to_html(float_format=lambda v: f"{v:.5g}"))

    def plot(self, ax: Any = None, *, data: bool = True, n_points: int = 200, **line_kws: Any) -> Any:
        """Data points (with error bars when known) and the fitted curve on ``ax`` (default: current axes)."""
        import matplotlib.pyplot as plt

        ax = ax if ax is not None else plt.gca()
        if data:
            ax.errorbar(self.x, self.y, yerr=self.yerr, fmt="o", ms=3, color="0.3", ecolor="0.6", lw=1,
                        label="bin means")
        if self.converged and len(self.x):
            grid = np.linspace(float(np.min(self.x)), float(np.max(self.x)), n_points)
            line_kws.setdefault("label", f"{self.name} (AIC {self.aic:.1f})")
            ax.plot(grid, self.predict(grid), **line_kws)
        ax.set(xlabel="position", ylabel="mean")
        return ax

    @classmethod
    def failed(cls, model: str | DecayModel, x: Any, y: Any, message: str, *, ci: float = 0.95,
               errors: str = "none") -> FitResult:
        """A result that records a failed fit (NaN parameters, infinite AIC) so it is reported, not hidden."""
        model = get_model(model)
        nan = FrozenDict(dict.fromkeys(model.param_names, math.nan))
        p = model.n_params
        return cls(model, nan, nan, nan, nan, _ro(np.full((p, p), np.nan)), math.inf, math.inf, math.inf, -math.inf,
                   len(np.atleast_1d(x)), len(np.atleast_1d(x)) - p, math.nan, False, message, _ro(x), _ro(y),
                   ci=ci, errors=errors)


def _inside(p0: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Move a start point strictly inside the bounds (least_squares requires it)."""
    span = np.where(np.isfinite(hi - lo), hi - lo, 1.0)
    eps = 1e-6 * np.maximum(span, 1e-12)
    return np.clip(p0, np.where(np.isfinite(lo), lo + eps, -np.inf), np.where(np.isfinite(hi), hi - eps, np.inf))


def _whitener(n: int, weights: Any, sigma: Any, cov: Any, shrinkage: float
              ) -> tuple[str, Any, float, np.ndarray | None, np.ndarray | None]:
    """(errors, whiten(r), log|det W|, weights used, yerr) for the chosen error model."""
    given = [name for name, v in (("weights", weights), ("sigma", sigma), ("cov", cov)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"pass at most one of weights, sigma, cov (got {', '.join(given)})")
    if weights is not None:
        w = np.asarray(weights, dtype=float)
        rw = np.sqrt(w)
        return "weights", (lambda r: rw * r), float(np.sum(np.log(rw))), w, None
    if sigma is not None:
        s = np.asarray(sigma, dtype=float)
        return "sigma", (lambda r: r / s), float(-np.sum(np.log(s))), 1.0 / s ** 2, s
    if cov is not None:
        C = np.asarray(cov, dtype=float)
        if C.shape != (n, n):
            raise ValueError(f"cov must be {n} x {n} for {n} points, got {C.shape}")
        d = np.diag(C).copy()
        pos = d[d > 0]
        if len(pos) == 0:
            raise ValueError("cov has no positive variance (every point is deterministic); fit with weights instead")
        d = np.maximum(d, 1e-4 * float(np.median(pos)))
        C = (1.0 - shrinkage) * C + shrinkage * np.diag(np.diag(C))
        C[np.diag_indices(n)] = np.maximum(np.diag(C), d)
        try:
            L = linalg.cholesky(C, lower=True)
        except linalg.LinAlgError:
            C = C + np.diag(1e-6 * d)
            L = linalg.cholesky(C, lower=True)
        Linv = np.linalg.inv(L)  # W = L^-1, so W^T W = C^-1
        return "cov", (lambda r: Linv @ r), float(-np.sum(np.log(np.diag(L)))), None, np.sqrt(np.diag(C))
    return "none", (lambda r: r), 0.0, None, None


def _what_to_try(model: DecayModel) -> str:
    return (f"Try other start values (p0={{{', '.join(f'{p!r}: ...' for p in model.param_names)}}}), rescale x "
            "(relative positions, or absolute positions / 1000), a family with fewer parameters (linear), "
            "or compare families with fit_all.")


def fit_model(model: str | DecayModel, x: Any, y: Any, *, weights: Any = None, sigma: Any = None, cov: Any = None,
              p0: Mapping[str, float] | None = None, absolute_sigma: bool = False, ci: float = 0.95,
              nan_policy: Literal["raise", "omit"] = "raise", shrinkage: float = 0.0,
              max_nfev: int | None = None, x_var: Any = None) -> FitResult:
    """Fit one curve family to ``(x, y)`` by (generalized) least squares; see the module docstring for the model.

    Args:
        model: a family name (``"exponential"``, ``"power"``, ``"logistic"``, ``"linear"``, ``"hinge"``) or model.
        x, y: abscissa (bin centres) and bin means, same length.
        weights, sigma, cov: the error model; at most one (``weights``: precision weights such as bin counts;
            ``sigma``: per-point standard errors; ``cov``: full covariance).
        p0: start values by name (default: the model's data-driven starts).
        absolute_sigma: treat ``sigma``/``cov`` as the true error scale instead of relative weights.
        ci: level of the Wald intervals.
        nan_policy: ``"raise"`` on non-finite x, y or errors, or ``"omit"`` those points.
        shrinkage: with ``cov``, weight of its diagonal in ``(1 - a) C + a diag(C)`` (0..1).
        max_nfev: function-evaluation budget per start (default 200 x (p + 1)).
        x_var: variance of positions within each point's bin: fit the bin-averaged curve (module docstring).

    Raises:
        ConvergenceError: no start converged, or too few points for the parameters; the message says what to try.
        ValueError: malformed input (shapes, NaNs under ``nan_policy="raise"``, negative weights).
    """
    model = get_model(model)
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
    if nan_policy not in ("raise", "omit"):
        raise ValueError(f"nan_policy must be 'raise' or 'omit', got {nan_policy!r}")
    if x_var is not None:
        x_var = np.asarray(x_var, dtype=float).ravel()
        if x_var.shape != x.shape:
            raise ValueError(f"x_var must have one value per point ({len(x)}), got {len(x_var)}")
        x_var = np.where(np.isfinite(x_var), np.maximum(x_var, 0.0), 0.0)
    ok = np.isfinite(x) & np.isfinite(y)
    keep = np.ones(len(x), dtype=bool)  # zero weights: the point carries no information and is dropped
    for name, v in (("weights", weights), ("sigma", sigma)):
        if v is not None:
            v = np.asarray(v, dtype=float).ravel()
            if v.shape != x.shape:
                raise ValueError(f"{name} must have one value per point ({len(x)}), got {len(v)}")
            if np.any(v[np.isfinite(v)] < 0):
                raise ValueError(f"{name} must be >= 0; negative values found")
            ok &= np.isfinite(v)
            if name == "weights":
                keep &= v != 0
            elif np.any(v == 0):
                raise ValueError("sigma must be > 0 (a zero standard error means infinite weight); "
                                 "floor it or use weights")
    if cov is not None:
        cov = np.asarray(cov, dtype=float)
        if cov.ndim == 2 and cov.shape == (len(x), len(x)):
            ok &= np.all(np.isfinite(cov), axis=0) & np.all(np.isfinite(cov), axis=1)
    if not np.all(ok) and nan_policy == "raise":
        raise ValueError(f"{int((~ok).sum())} point(s) have a non-finite x, y or error; "
                         "pass nan_policy='omit' to drop them")
    ok &= keep
    if not np.all(ok):
        x, y = x[ok], y[ok]
        x_var = None if x_var is None else x_var[ok]
        weights = None if weights is None else np.asarray(weights, dtype=float).ravel()[ok]
        sigma = None if sigma is None else np.asarray(sigma, dtype=float).ravel()[ok]
        cov = None if cov is None else cov[np.ix_(ok, ok)]
    n, p = len(x), model.n_params
    if n <= p:
        raise ConvergenceError(
            f"{model.name} has {p} parameters but only {n} usable point(s); it needs at least {p + 1}. Use more "
            "bins, drop --strata/--group-by to pool data, or a family with fewer parameters (linear has 2).")
    errors, whiten, logdet_w, w_used, yerr = _whitener(n, weights, sigma, cov, shrinkage)
    lo, hi = model.bounds_for(x)

    if x_var is not None and np.any(x_var > 0):
        d = np.sqrt(3.0 * x_var)
        d = np.where(x > 0, np.minimum(d, 0.999 * x), d)  # stay on x > 0 (power laws)
        xs = (x - d, x, x + d)

        def fitted(theta: np.ndarray) -> np.ndarray:
            return (model.curve(xs[0], *theta) + 4.0 * model.curve(xs[1], *theta) + model.curve(xs[2], *theta)) / 6

    else:
        def fitted(theta: np.ndarray) -> np.ndarray:
            return model.curve(x, *theta)

    def resid(theta: np.ndarray) -> np.ndarray:
        return whiten(fitted(theta) - y)

    try:
        starts = [dict(p0)] if p0 is not None else model.starts(x, y)
        if p0 is not None and set(p0) != set(model.param_names):
            raise ValueError(f"p0 must name exactly {list(model.param_names)}, got {sorted(p0)}")
    except ValueError as exc:
        raise ConvergenceError(f"{model.name}: {exc}") from exc
    best, last_msg = None, ""
    for start in starts:
        theta0 = _inside(np.array([start[q] for q in model.param_names], dtype=float), lo, hi)
        try:
            with np.errstate(all="ignore"):
                res = optimize.least_squares(resid, theta0, bounds=(lo, hi), method="trf", x_scale="jac",
                                             max_nfev=max_nfev or 200 * (p + 1))
        except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
            last_msg = str(exc)
            continue
        last_msg = res.message
        if res.status > 0 and np.all(np.isfinite(res.fun)) and (best is None or res.cost < best.cost):
            best = res
        if best is not None and not np.any(best.active_mask):
            break  # an interior optimum from the best grid start: the other starts are only a fallback
    if best is None:
        raise ConvergenceError(f"{model.name} fit did not converge from {len(starts)} start point(s) "
                               f"({last_msg}). {_what_to_try(model)}")
    theta, J = best.x, best.jac
    rss = max(float(2.0 * best.cost), 1e-300)
    df = n - p
    known = absolute_sigma and errors in ("sigma", "cov")
    # s^2: estimated from the residuals, or (known errors) 1, inflated by the reduced chi-square when the model
    # misfits (never narrower than the given errors; wider when the curve cannot explain the data).
    scale = max(1.0, rss / df) if known else rss / df
    notes: list[str] = []
    _, s, vt = np.linalg.svd(J, full_matrices=False)
    tol = np.finfo(float).eps * max(J.shape) * (s[0] if len(s) else 0.0)
    if np.any(s <= tol):
        pcov = np.full((p, p), np.inf)
        notes.append("the parameters are not all identifiable from these data (singular Jacobian); "
                     "try a family with fewer parameters")
    else:
        pcov = (vt.T / s ** 2) @ vt * scale
    se = np.sqrt(np.clip(np.diag(pcov), 0.0, np.inf))
    q = sps.norm.ppf((1 + ci) / 2) if known else sps.t.ppf((1 + ci) / 2, df)
    for i, name in enumerate(model.param_names):
        if best.active_mask[i] != 0:
            notes.append(f"{name} = {theta[i]:.4g} is at its bound; its interval is unreliable. "
                         "Try another family or rescale x")
    for note in notes:
        warnings.warn(f"{model.name}: {note}", FitWarning, stacklevel=2)
    if known:
        loglik, k = -0.5 * n * math.log(2 * math.pi) - 0.5 * rss + logdet_w, p
    else:
        loglik, k = -0.5 * n * (math.log(2 * math.pi * rss / n) + 1.0) + logdet_w, p + 1
    aic = 2 * k - 2 * loglik
    aicc = aic + (2 * k * (k + 1) / (n - k - 1) if n - k - 1 > 0 else math.inf)
    bic = k * math.log(n) - 2 * loglik
    names = model.param_names
    return FitResult(
        model=model, params=FrozenDict(zip(names, map(float, theta), strict=True)),
        stderr=FrozenDict(zip(names, map(float, se), strict=True)),
        ci_low=FrozenDict(zip(names, map(float, theta - q * se), strict=True)),
        ci_high=FrozenDict(zip(names, map(float, theta + q * se), strict=True)),
        cov=_ro(pcov), aic=float(aic), aicc=float(aicc), bic=float(bic), loglik=float(loglik), n_obs=n,
        df_resid=df, scale=float(scale), converged=True, message=str(best.message), x=_ro(x), y=_ro(y),
        weights=_ro(w_used), yerr=_ro(yerr), ci=ci, errors=errors, warnings=tuple(notes), x_var=_ro(x_var))


@dataclass(frozen=True)
class ModelSelection:
    """Several families fitted to the same data, compared by AIC (failed fits are kept and listed).

    ``best`` is the converged fit with the lowest ``criterion`` (AIC by default; ``"aicc"`` favours fewer
    parameters with few bins, ``"bic"`` more so with many); ``table()`` has AIC, AICc, BIC, the delta of the
    criterion and Akaike weights ``w_i = exp(-delta_i / 2) / sum_j exp(-delta_j / 2)`` over converged fits.
    """

    results: FrozenDict
    criterion: Literal["aic", "aicc", "bic"] = "aic"

    def __post_init__(self) -> None:
        if self.criterion not in ("aic", "aicc", "bic"):
            raise ValueError(f"criterion must be aic, aicc or bic, got {self.criterion!r}")

    def _score(self, name: str) -> float:
        return float(getattr(self.results[name], self.criterion))

    @property
    def converged(self) -> list[str]:
        return [n for n, r in self.results.items() if r.converged and math.isfinite(r.aic)]

    @property
    def best_name(self) -> str | None:
        ok = self.converged
        return min(ok, key=self._score) if ok else None

    @property
    def best(self) -> FitResult:
        """The converged fit with the lowest criterion; raises ConvergenceError when none converged."""
        name = self.best_name
        if name is None:
            reasons = "; ".join(f"{n}: {r.message}" for n, r in self.results.items())
            raise ConvergenceError(f"no model converged ({reasons})")
        return self.results[name]

    def table(self) -> pd.DataFrame:
        """One row per model, best first: n_params, converged, aic, aicc, bic, delta_<criterion>, akaike_weight,
        loglik, message."""
        rows = [{"model": n, "n_params": r.n_params, "converged": r.converged, "aic": r.aic, "aicc": r.aicc,
                 "bic": r.bic, "loglik": r.loglik, "message": r.message} for n, r in self.results.items()]
        df = pd.DataFrame(rows)
        if df.empty:
            return df
        crit = self.criterion
        best = min((self._score(n) for n in self.converged), default=math.nan)
        delta = f"delta_{crit}"
        df[delta] = df[crit] - best
        rel = np.where(df["converged"], np.exp(-0.5 * df[delta].to_numpy(dtype=float)), 0.0)
        df["akaike_weight"] = rel / rel.sum() if rel.sum() > 0 else np.nan
        df = df.sort_values(["converged", crit], ascending=[False, True], kind="stable")
        cols = ["model", "n_params", "converged", "aic", "aicc", "bic", delta, "akaike_weight", "loglik",
                "message"]
        return df[cols].set_index("model")

    def to_dict(self) -> dict[str, Any]:
        """``{"models": {name: FitResult.to_dict()}, "selected": best name or None, "criterion"}``, plain JSON."""
        return {"models": {n: r.to_dict() for n, r in self.results.items()}, "selected": self.best_name,
                "criterion": self.criterion}

    def report(self) -> str:
        t = self.table()
        cols = ["n_params", "converged", "aic", "aicc", "bic", f"delta_{self.criterion}", "akaike_weight"]
        return (f"selected by {self.criterion.upper()}: {self.best_name}\n"
                + t[cols].to_string(float_format=lambda v: f"{v:.3f}"))

    def _repr_html_(self) -> str:
        return f"<p>selected: <b>{self.best_name}</b></p>" + self.table().to_html(float_format=lambda v: f"{v:.4g}")

    def plot(self, ax: Any = None, *, only_best: bool = False) -> Any:
        """Data with error bars and each converged curve (the selected one drawn thicker)."""
        import matplotlib.pyplot as plt

        ax = ax if ax is not None else plt.gca()
        names = [self.best_name] if only_best and self.best_name else self.converged
        for i, n in enumerate(names):
            r = self.results[n]
            r.plot(ax, data=(i == 0), lw=2.5 if n == self.best_name else 1.0)
        ax.legend(fontsize="small")
        return ax


def fit_all(x: Any, y: Any, models: Sequence[str | DecayModel] | None = None, *,
            criterion: Literal["aic", "aicc", "bic"] = "aic", **fit_kwargs: Any) -> ModelSelection:
    """Fit several families (default: all of :data:`MODELS`) with the same errors (``fit_kwargs`` go to
    :func:`fit_model`) and compare them by ``criterion``; failed fits are recorded with their reason, not hidden."""
    chosen = [get_model(m) for m in (models if models is not None else list(MODELS))]
    results: dict[str, FitResult] = {}
    for m in chosen:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FitWarning)  # recorded in FitResult.warnings instead
                results[m.name] = fit_model(m, x, y, **fit_kwargs)
        except ConvergenceError as exc:
            results[m.name] = FitResult.failed(m, x, y, str(exc), ci=fit_kwargs.get("ci", 0.95))
    return ModelSelection(FrozenDict(results), criterion)


def half_point(result: FitResult, x_range: tuple[float, float] | None = None, *, n_grid: int = 4001) -> float:
    """Where the fitted curve first reaches halfway between its values at the ends of ``x_range``.

    For a decaying metric this is where it has fallen half of the way from start to end (e.g. where supervision
    quality halves). NaN when the curve is flat or never crosses the halfway level. ``x_range`` defaults to the
    fitted data's range.
    """
    if not result.converged:
        return math.nan
    lo, hi = x_range if x_range is not None else (float(np.min(result.x)), float(np.max(result.x)))
    y0, y1 = (float(v) for v in result.predict(np.array([lo, hi])))
    target = 0.5 * (y0 + y1)
    if not (math.isfinite(target) and y0 != y1):
        return math.nan
    grid = np.linspace(lo, hi, n_grid)
    g = result.predict(grid) - target
    sign = np.sign(g)
    idx = np.flatnonzero(sign[:-1] * sign[1:] <= 0)
    if len(idx) == 0:
        return math.nan
    i = int(idx[0])
    if g[i] == 0:
        return float(grid[i])
    return float(optimize.brentq(lambda v: float(result.predict(np.array([v]))[0]) - target, grid[i], grid[i + 1]))
