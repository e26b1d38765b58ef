"""Frozen results of curve fits: :class:`FitResult` (one family) and :class:`ModelSelection` (several, compared).

They are what :mod:`drift.stats.fit` returns and what ``fits.json`` holds: parameters, standard errors, intervals,
AIC/AICc/BIC, the error model that produced them (``errors``, ``errors_reason``, ``n_clusters``, ``df_ci``) and
whether the data identify them (``identified``). ``to_dict`` writes plain JSON; ``from_dict`` reads it back with
the same predictions and the same selection, so later stages (the report) reload fits instead of recomputing them.
The fitting itself (models, errors, intervals, identification) is documented in :mod:`drift.stats.fit`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from drift.curves import evaluate_on_domain
from drift.errors import ConvergenceError
from drift.stats.models import DecayModel, get_model

if TYPE_CHECKING:  # pandas is imported where a table is built: `import drift.stats` and the CLI stay light
    import pandas as pd

__all__ = ["FitResult", "FrozenDict", "ModelSelection"]


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


def _floats(d: Mapping[str, Any] | None, names: Sequence[str], missing: float = math.nan) -> FrozenDict:
    """Named floats from a JSON dict (None, as non-finite values are written, becomes ``missing``)."""
    d = d or {}
    return FrozenDict({p: (missing if d.get(p) is None else float(d[p])) for p in names})


def _num(v: Any, missing: float = math.nan) -> float:
    return missing if v is None else float(v)


def _arr(v: Any) -> np.ndarray | None:
    if v is None:
        return None
    return _ro(np.array([math.nan if e is None else e for e in np.ravel(np.array(v, dtype=object))], dtype=float)
               .reshape(np.shape(v)))


@dataclass(frozen=True)
class FitResult:
    """A finished fit of one model: immutable; ``converged=False`` results carry NaN parameters and the reason.

    Attributes:
        model: the :class:`~drift.stats.models.DecayModel`.
        params, stderr, ci_low, ci_high: by parameter name.
        cov: parameter covariance (p x p).
        aic, aicc, bic, loglik: information criteria (see the module docstring for the formulas).
        n_obs, df_resid, scale: data points, n - p, the error scale s^2 (1 when known).
        converged, message: whether the optimizer converged, and its (or the failure's) message; for an
            unidentified fit the message starts with ``unidentified:`` and names the parameter.
        x, y, weights, yerr: the data fitted (``yerr``: per-point standard errors when known, for plots).
        x_var: spread of positions within each bin when the bin-averaged curve was fitted, else None.
        ci: interval level.
        errors: the error model used: ``none``, ``weights``, ``sigma``, ``cov`` (legacy: as given), ``full_cov``
            (GLS with the R-corrected covariance) or ``diagonal`` (WLS on its diagonal, sandwich intervals).
        errors_reason: why that error model (e.g. ``R=16 < 2 x 20 bins``); empty when not chosen by a rule.
        n_clusters: the number R of independent clusters behind the errors, when given.
        df_ci: degrees of freedom of the t quantile of the intervals (``inf``: the normal).
        identified: False when a parameter's interval is not finite or absurdly wide (module docstring); such a
            fit is never selected.
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
    errors_reason: str = ""
    n_clusters: int | None = None
    df_ci: float = math.inf
    identified: bool = True

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def n_params(self) -> int:
        return self.model.n_params

    @property
    def selectable(self) -> bool:
        """Converged, with a finite AIC and identified parameters: may be selected by :class:`ModelSelection`."""
        return self.converged and math.isfinite(self.aic) and self.identified

    def predict(self, x: Any) -> np.ndarray:
        """The fitted curve at ``x`` (NaN for a fit that did not converge; raises outside the family's domain)."""
        if not self.converged:
            return np.full(np.shape(x), np.nan)
        return self.model.evaluate(x, dict(self.params))

    def predict_on_domain(self, x: Any) -> np.ndarray:
        """The fitted curve at ``x``, points outside the family's domain evaluated at its edge (for an open edge,
        x > 0 of a power law, the smallest fitted x); see :func:`drift.curves.evaluate_on_domain`."""
        if not self.converged:
            return np.full(np.shape(x), np.nan)
        edge = float(np.min(self.x)) if len(self.x) else None
        return evaluate_on_domain(self.name, dict(self.params), x, edge=edge)

    def summary(self) -> pd.DataFrame:
        """One row per parameter: estimate, stderr, ci_low, ci_high."""
        import pandas as pd

        names = list(self.model.param_names)
        return pd.DataFrame({"estimate": [self.params[p] for p in names], "stderr": [self.stderr[p] for p in names],
                             "ci_low": [self.ci_low[p] for p in names], "ci_high": [self.ci_high[p] for p in names]},
                            index=pd.Index(names, name="param"))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict: model, params, stderr, ci_low, ci_high, aic, bic, converged, identified, the error model
        and the data fitted (x, y, yerr), so :meth:`from_dict` rebuilds an equivalent result."""
        return _plain({
            "model": self.name, "formula": self.model.formula, "params": dict(self.params),
            "stderr": dict(self.stderr), "ci_low": dict(self.ci_low), "ci_high": dict(self.ci_high),
            "aic": self.aic, "aicc": self.aicc, "bic": self.bic, "loglik": self.loglik, "converged": self.converged,
            "identified": self.identified, "message": self.message, "n_obs": self.n_obs, "n_params": self.n_params,
            "df_resid": self.df_resid, "scale": self.scale, "ci": self.ci, "errors": self.errors,
            "errors_reason": self.errors_reason, "n_clusters": self.n_clusters,
            "df_ci": self.df_ci if math.isfinite(self.df_ci) else "inf", "warnings": list(self.warnings),
            "cov": self.cov, "x": self.x, "y": self.y, "yerr": self.yerr,
        })

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FitResult:
        """Rebuild a result from :meth:`to_dict` output (e.g. an entry of ``fits.json``).

        Values written as null (non-finite numbers) come back as NaN (``aic``/``aicc``/``bic``: inf, ``loglik``:
        -inf). Older files without ``identified``, ``x`` or ``cov`` load with ``identified=True``, empty data and a
        NaN covariance; predictions need only the parameters.

        Raises:
            ValueError: an unknown model name.
        """
        model = get_model(str(d["model"]))
        names = model.param_names
        p = model.n_params
        cov = _arr(d.get("cov"))
        if cov is None or cov.shape != (p, p):
            cov = _ro(np.full((p, p), math.nan))
        x = _arr(d.get("x"))
        y = _arr(d.get("y"))
        df_ci = d.get("df_ci", "inf")
        return cls(model=model, params=_floats(d.get("params"), names), stderr=_floats(d.get("stderr"), names),
                   ci_low=_floats(d.get("ci_low"), names), ci_high=_floats(d.get("ci_high"), names), cov=cov,
                   aic=_num(d.get("aic"), math.inf), aicc=_num(d.get("aicc"), math.inf),
                   bic=_num(d.get("bic"), math.inf), loglik=_num(d.get("loglik"), -math.inf),
                   n_obs=int(d.get("n_obs") or 0), df_resid=int(d.get("df_resid", (d.get("n_obs") or 0) - p)),
                   scale=_num(d.get("scale")), converged=bool(d.get("converged", False)),
                   message=str(d.get("message", "")), x=x if x is not None else _ro(np.empty(0)),
                   y=y if y is not None else _ro(np.empty(0)), yerr=_arr(d.get("yerr")), ci=float(d.get("ci", 0.95)),
                   errors=str(d.get("errors", "none")), warnings=tuple(d.get("warnings") or ()),
                   errors_reason=str(d.get("errors_reason") or ""),
                   n_clusters=None if d.get("n_clusters") is None else int(d["n_clusters"]),
                   df_ci=math.inf if df_ci in (None, "inf") else float(df_ci),
                   identified=bool(d.get("identified", True)))

    def report(self) -> str:
        """A short text report: formula, fit statistics and the parameter table."""
        head = f"{self.name}: y = {self.model.formula}"
        if not self.converged:
            return f"{head}\n  did not converge: {self.message}"
        errors = self.errors + (f" ({self.errors_reason})" if self.errors_reason else "")
        clusters = f"  R={self.n_clusters}" if self.n_clusters is not None else ""
        lines = [head, f"  n={self.n_obs}  AIC={self.aic:.2f}  BIC={self.bic:.2f}  scale={self.scale:.3g}  "
                       f"errors={errors}{clusters}"]
        if not self.identified:
            lines.append(f"  NOT IDENTIFIED (never selected): {self.message}")
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
        if self.converged and not self.identified:
            status = f" <b>not identified</b>: {self.message}"
        return (f"<p><b>{self.name}</b>: y = {self.model.formula}; n={self.n_obs}, AIC={self.aic:.2f}, "
                f"BIC={self.bic:.2f}, errors={self.errors}{status}</p>"
                + self.summary().to_html(float_format=lambda v: f"{v:.5g}"))

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
               errors: str = "none", n_clusters: int | None = None) -> FitResult:
        """A result that records a failed fit (NaN parameters, infinite AIC) so it is reported, not hidden."""
        model = get_model(model)
        nan = FrozenDict(dict.fromkeys(model.param_names, math.nan))
        p = model.n_params
        return cls(model, nan, nan, nan, nan, _ro(np.full((p, p), np.nan)), math.inf, math.inf, math.inf, -math.inf,
                   len(np.atleast_1d(x)), len(np.atleast_1d(x)) - p, math.nan, False, message, _ro(x), _ro(y),
                   ci=ci, errors=errors, n_clusters=n_clusters, identified=False)


@dataclass(frozen=True)
class ModelSelection:
    """Several families fitted to the same data, compared by AIC (failed and unidentified fits are kept and listed).

    ``best`` is the *selectable* fit (converged, finite criterion, identified) with the lowest ``criterion`` (AIC
    by default; ``"aicc"`` favours fewer parameters with few bins, ``"bic"`` more so with many); ``table()`` has AIC,
    AICc, BIC, the delta of the criterion and Akaike weights ``w_i = exp(-delta_i / 2) / sum_j exp(-delta_j / 2)``
    over selectable fits. No fit is selected (``best_name`` is None, ``reason`` says why) when ``n_clusters <
    min_clusters`` (``insufficient: R=4 < 10 clusters``: too few independent units to choose a shape), or when no
    fit is selectable.
    """

    results: FrozenDict
    criterion: Literal["aic", "aicc", "bic"] = "aic"
    n_clusters: int | None = None
    min_clusters: int = 10

    def __post_init__(self) -> None:
        if self.criterion not in ("aic", "aicc", "bic"):
            raise ValueError(f"criterion must be aic, aicc or bic, got {self.criterion!r}")
        if int(self.min_clusters) < 1:
            raise ValueError(f"min_clusters must be >= 1, got {self.min_clusters}")

    def _score(self, name: str) -> float:
        return float(getattr(self.results[name], self.criterion))

    @property
    def converged(self) -> list[str]:
        """Fits that converged with a finite AIC (identified or not)."""
        return [n for n, r in self.results.items() if r.converged and math.isfinite(r.aic)]

    @property
    def selectable(self) -> list[str]:
        """Fits that may be selected: converged, finite criterion and identified."""
        return [n for n, r in self.results.items() if r.selectable and math.isfinite(self._score(n))]

    @property
    def insufficient(self) -> bool:
        """Too few clusters to select a shape: ``n_clusters < min_clusters``."""
        return self.n_clusters is not None and self.n_clusters < self.min_clusters

    @property
    def reason(self) -> str | None:
        """Why no fit is selected (None when one is): insufficient clusters, or no selectable fit."""
        if self.insufficient:
            return f"insufficient: R={self.n_clusters} < {self.min_clusters} clusters"
        if self.selectable:
            return None
        if self.converged:
            return "no identified fit (" + "; ".join(
                f"{n}: {self.results[n].message}" for n in self.converged) + ")"
        return "no model converged (" + "; ".join(f"{n}: {r.message}" for n, r in self.results.items()) + ")"

    @property
    def best_name(self) -> str | None:
        """The selected family, or None (see :attr:`reason`)."""
        if self.insufficient:
            return None
        ok = self.selectable
        return min(ok, key=self._score) if ok else None

    @property
    def best(self) -> FitResult:
        """The selected fit; raises ConvergenceError (with :attr:`reason`) when none is selected."""
        name = self.best_name
        if name is None:
            raise ConvergenceError(f"no model selected: {self.reason}")
        return self.results[name]

    def table(self) -> pd.DataFrame:
        """One row per model, best first: n_params, converged, identified, aic, aicc, bic, delta_<criterion>,
        akaike_weight (0 for fits that cannot be selected), loglik, errors, message."""
        import pandas as pd

        rows = [{"model": n, "n_params": r.n_params, "converged": r.converged, "identified": r.identified,
                 "aic": r.aic, "aicc": r.aicc, "bic": r.bic, "loglik": r.loglik, "errors": r.errors,
                 "message": r.message} for n, r in self.results.items()]
        df = pd.DataFrame(rows)
        if df.empty:
            return df
        crit = self.criterion
        ok = set(self.selectable)
        best = min((self._score(n) for n in ok), default=math.nan)
        delta = f"delta_{crit}"
        df[delta] = df[crit] - best
        sel = df["model"].isin(ok).to_numpy()
        rel = np.where(sel, np.exp(-0.5 * np.where(sel, df[delta].to_numpy(dtype=float), 0.0)), 0.0)
        df["akaike_weight"] = rel / rel.sum() if rel.sum() > 0 else np.nan
        df["_sel"] = sel
        df = df.sort_values(["_sel", "converged", crit], ascending=[False, False, True], kind="stable")
        cols = ["model", "n_params", "converged", "identified", "aic", "aicc", "bic", delta, "akaike_weight",
                "loglik", "errors", "message"]
        return df[cols].set_index("model")

    def to_dict(self) -> dict[str, Any]:
        """``{"models": {name: FitResult.to_dict()}, "selected": best name or None, "criterion", "n_clusters",
        "min_clusters", "reason"}`` (``reason``: why nothing is selected, else None), plain JSON."""
        return {"models": {n: r.to_dict() for n, r in self.results.items()}, "selected": self.best_name,
                "criterion": self.criterion, "n_clusters": self.n_clusters, "min_clusters": int(self.min_clusters),
                "reason": self.reason}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelSelection:
        """Rebuild a selection from :meth:`to_dict` output or a ``fits.json`` entry (which holds ``models``,
        ``selected`` and ``criterion``, and may hold ``n_clusters``/``min_clusters``; missing ones take the
        defaults). The selection is recomputed from the stored criteria and flags.

        Raises:
            ValueError: the recomputed selection differs from the stored ``selected`` (the file was edited or
                written by an incompatible drift), or an unknown model name.
        """
        results = {str(n): FitResult.from_dict(r) for n, r in (d.get("models") or {}).items()}
        n_clusters = d.get("n_clusters")
        sel = cls(FrozenDict(results), d.get("criterion", "aic"),
                  n_clusters=None if n_clusters is None else int(n_clusters),
                  min_clusters=int(d.get("min_clusters") or 10))
        if "selected" in d and d["selected"] != sel.best_name:
            raise ValueError(f"stored selection {d['selected']!r} differs from the one its fits give "
                             f"({sel.best_name!r}); refit instead of reloading")
        return sel

    def report(self) -> str:
        t = self.table()
        cols = ["n_params", "converged", "identified", "aic", "aicc", "bic", f"delta_{self.criterion}",
                "akaike_weight"]
        head = f"selected by {self.criterion.upper()}: {self.best_name}"
        if self.best_name is None:
            head += f" ({self.reason})"
        return head + "\n" + t[cols].to_string(float_format=lambda v: f"{v:.3f}")

    def _repr_html_(self) -> str:
        why = f" ({self.reason})" if self.best_name is None else ""
        return (f"<p>selected: <b>{self.best_name}</b>{why}</p>"
                + self.table().to_html(float_format=lambda v: f"{v:.4g}"))

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
