"""One fitting routine for every declared curve family; its frozen results live in :mod:`drift.stats.results`.

**Model.** Bin means ``y_k`` at positions ``x_k`` follow ``y_k = f(x_k; theta) + e_k`` with ``e ~ N(0, sigma^2 V)``.
``V`` comes from one of (pick at most one):

- ``weights=w``: ``V = diag(1 / w)``. With bin counts (``n_rollouts`` is the default in :func:`~drift.stats.fit_bins`:
  rollout-level noise dominates a bin mean's variance, and it is the number of independent units) or any
  precision weights. Points with weight 0 are dropped.
- ``sigma=s``: ``V = diag(s^2)`` (e.g. the bootstrap standard error of each bin).
- ``cov=C``: a covariance of the bin means, e.g. of their bootstrap replicates: the same clusters feed every bin,
  so bin means are correlated and a common shift should widen the intercept's interval, not vanish. Its diagonal is
  floored at 1e-4 x its median so a bin with (near) zero variance, like a cumulative quantity at position 0, cannot
  dominate the fit. How ``C`` is used depends on ``n_clusters`` (below).
- none: ``V = I``.

``scipy.optimize.least_squares`` (trust-region reflective, within the model's bounds) minimises ``|W r|^2`` with
``W^T W = V^{-1}``, from the model's start points; the best converged one wins.

**Errors estimated from R clusters** (``n_clusters=R``: the errors ``sigma``/``cov`` come from a cluster bootstrap
over R independent clusters, e.g. prompts). A covariance of B bin means estimated from R clusters has R - 1 degrees
of freedom, however many bootstrap draws were made, so R, not the number of draws, decides how far it can be trusted:

1. The bootstrap's plug-in variance is ``(R - 1) / R`` times the unbiased one: ``sigma^2`` and ``C`` are multiplied
   by ``R / (R - 1)``.
2. ``errors="full_cov"`` when ``R >= 2 B`` (and ``R >= B + 5``, so the corrections below are defined): generalized
   least squares with ``V = C R / (R - B - 2)``, i.e. the unbiased inverse ``(R - B - 2) / (R - 1) * Chat^{-1}`` of
   Hartlap et al. (2007) (``Chat = C R / (R - 1)``), optionally shrunk towards its diagonal by ``shrinkage``. The
   parameter covariance is further multiplied by Percival et al.'s (2014) ``m1 = (1 + b (B - p)) / (1 + a +
   b (p + 1))``, ``a = 2 / ((R - B - 1)(R - B - 4))``, ``b = (R - B - 2) / ((R - B - 1)(R - B - 4))``: the extra
   scatter of estimates weighted by a noisy inverse. Intervals use Student's t with ``R - 1 - (B - p)`` degrees of
   freedom (the distribution of ``(J^T Chat^{-1} J)^{-1}`` under a Wishart ``Chat``).
3. ``errors="diagonal"`` otherwise: the full covariance is too noisy to invert (with R <= B it is singular, and a
   GLS fit then trusts directions in which it has seen no variation, e.g. ΔAIC 55 and a "significant" hinge from
   16 rollouts at 20 bins). The curve is fitted by weighted least squares with ``V = diag(C)`` (working
   independence), and its parameter covariance is the sandwich ``A^{-1} J_w^T C_w J_w A^{-1}`` (``J_w`` the
   whitened Jacobian, ``A = J_w^T J_w``, ``C_w = D^{-1/2} C D^{-1/2}``, ``D = diag(C)``), which needs no inverse of
   ``C``: it is the bootstrap variance of the fitted linear combinations of the bin means, correlations included.
   Intervals use Student's t with ``R - 1`` degrees of freedom. (AIC uses the diagonal likelihood.)
4. With ``sigma``: ``errors="sigma"``, t with ``R - 1`` degrees of freedom; with ``weights`` or none the scale is
   estimated from the residuals and t has ``min(n - p, R - 1)`` degrees of freedom.

``FitResult.errors`` and ``FitResult.errors_reason`` say which was used and why. ``n_clusters=None`` keeps the
legacy behaviour: ``cov`` is used as given (``errors="cov"``, full GLS, no correction for R) and intervals use the
normal (known scale) or t with n - p degrees of freedom.

**Bins are intervals, not points.** A bin mean averages the curve over the bin's tokens, which differs from the
curve at their mean position ``x`` where the curve bends (Jensen). With ``x_var`` (the variance of the token
positions within each bin) the model value of a bin is ``(f(x - d) + 4 f(x) + f(x + d)) / 6``, ``d = sqrt(3 x_var)``
(matches the first two moments; exact for quadratics); without it, ``f(x)``. :func:`~drift.stats.fit_bins` passes
it, which removes the bias of strongly curved fits (tau near the bin width, power laws near 0).

**Uncertainty.** ``cov(theta) = s^2 (J^T J)^{-1}`` (or the sandwich above) with ``J`` the whitened Jacobian and
``s^2 = RSS / (n - p)`` (``absolute_sigma=False``, the default: ``V`` gives relative weights and the scale is
estimated) or ``s^2 = max(1, RSS / (n - p))`` (``absolute_sigma=True`` with ``sigma``/``cov``: they are the actual
errors, e.g. from the cluster bootstrap, so the scale is known; a misfitting curve still widens its intervals by the
reduced chi-square, a well-fitting one never narrows them). Intervals are Wald: ``theta +- q * se`` with ``q`` from
Student's t (degrees of freedom above; ``FitResult.df_ci``, ``inf`` for the normal).

**Identification.** A converged fit is ``identified=False`` (and never selected by :class:`ModelSelection`) when a
parameter's standard error is not finite, or its interval is absurdly wide: for a position or width along x (units
``x``/``dx`` in :data:`drift.curves.FAMILIES`) a half-width above ``max_ci_scale`` (default 100) x the x-range of
the data; for any other parameter a half-width ``h`` that would move the curve by more than ``max_ci_scale`` x the
data scale, ``h * max_k |df/dtheta_j (x_k)| > max_ci_scale * ptp(y)``. Such an interval says the data cannot tell
the value (a logistic ``x0 = 0.84 [-2.8e7, 2.8e7]`` on x in [0, 1]); the message names the parameter.

**Information criteria** from the Gaussian likelihood of the whitened residuals:

- scale estimated: ``logL = -n/2 * (log(2 pi RSS / n) + 1) + log|det W|``, ``k = p + 1`` (the variance counts);
- scale known (``absolute_sigma=True``): ``logL = -n/2 * log(2 pi) - RSS / 2 + log|det W|``, ``k = p``;

``AIC = 2k - 2 logL``, ``AICc = AIC + 2k(k+1) / (n - k - 1)``, ``BIC = k log(n) - 2 logL``. Only differences
between models fitted to the same data and errors mean anything.

**Reloading.** :meth:`FitResult.to_dict` / :meth:`ModelSelection.to_dict` write plain JSON (``fits.json``);
:meth:`FitResult.from_dict` / :meth:`ModelSelection.from_dict` read it back with the same predictions and the same
selection, so later stages (the report) need not fit again.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from drift.errors import ConvergenceError, FitWarning
from drift.stats.models import MODELS, DecayModel, get_model
from drift.stats.results import FitResult, FrozenDict, ModelSelection, _ro

__all__ = ["FitResult", "FrozenDict", "ModelSelection", "fit_all", "fit_model", "full_cov_allowed", "half_point",
           "percival_m1"]


def _t_ppf(p: float, df: float) -> float:
    """Student's t quantile: what ``scipy.stats.t.ppf(p, df)`` returns (its ``_ppf`` is ``special.stdtrit``),
    without importing ``scipy.stats`` (over a second)."""
    from scipy import special

    return float(special.stdtrit(df, p))


def _normal_ppf(p: float) -> float:
    """Standard normal quantile, as ``scipy.stats.norm.ppf(p)`` (``special.ndtri``)."""
    from scipy import special

    return float(special.ndtri(p))


def _inside(p0: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Move a start point strictly inside the bounds (least_squares requires it)."""
    span = np.where(np.isfinite(hi - lo), hi - lo, 1.0)
    eps = 1e-6 * np.maximum(span, 1e-12)
    return np.clip(p0, np.where(np.isfinite(lo), lo + eps, -np.inf), np.where(np.isfinite(hi), hi - eps, np.inf))


def _floored_cov(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C with its diagonal floored at 1e-4 x the median positive variance, the floored diagonal)."""
    d = np.diag(C).copy()
    pos = d[d > 0]
    if len(pos) == 0:
        raise ValueError("cov has no positive variance (every point is deterministic); fit with weights instead")
    d = np.maximum(d, 1e-4 * float(np.median(pos)))
    C = C.copy()
    C[np.diag_indices(len(d))] = d
    return C, d


def _whitener(n: int, weights: Any, sigma: Any, cov: Any, shrinkage: float
              ) -> tuple[str, Any, float, np.ndarray | None, np.ndarray | None]:
    """(errors, whiten(r), log|det W|, weights used, yerr) for the chosen error model."""
    if weights is not None:
        w = np.asarray(weights, dtype=float)
        rw = np.sqrt(w)
        return "weights", (lambda r: rw * r), float(np.sum(np.log(rw))), w, None
    if sigma is not None:
        s = np.asarray(sigma, dtype=float)
        return "sigma", (lambda r: r / s), float(-np.sum(np.log(s))), 1.0 / s ** 2, s
    if cov is not None:
        C0 = np.asarray(cov, dtype=float)
        _, d = _floored_cov(C0)
        C = (1.0 - shrinkage) * C0 + shrinkage * np.diag(np.diag(C0))
        C[np.diag_indices(n)] = np.maximum(np.diag(C), d)
        from scipy import linalg  # imported when first needed: `import drift.stats` stays light

        try:
            L = linalg.cholesky(C, lower=True)
        except linalg.LinAlgError:
            C = C + np.diag(1e-6 * d)
            L = linalg.cholesky(C, lower=True)
        Linv = np.linalg.inv(L)  # W = L^-1, so W^T W = C^-1
        return "cov", (lambda r: Linv @ r), float(-np.sum(np.log(np.diag(L)))), None, np.sqrt(np.diag(C))
    return "none", (lambda r: r), 0.0, None, None


def percival_m1(n_clusters: int, n_bins: int, n_params: int) -> float:
    """Percival et al. (2014) variance factor ``m1`` of parameters fitted with a Hartlap-corrected inverse covariance
    estimated from ``n_clusters`` samples of ``n_bins`` bins (module docstring); needs ``R > B + 4``."""
    R, B, p = int(n_clusters), int(n_bins), int(n_params)
    if R <= B + 4:
        raise ValueError(f"m1 needs n_clusters > n_bins + 4, got R={R}, B={B}")
    den = (R - B - 1) * (R - B - 4)
    a, b = 2.0 / den, (R - B - 2) / den
    return (1.0 + b * (B - p)) / (1.0 + a + b * (p + 1))


def smoothed_variances(d: np.ndarray, n_clusters: int) -> np.ndarray:
    """Per-bin variances shrunk towards their common level, as weights of the diagonal-error fit.

    Each ``d_k`` is estimated from R clusters, so ``log d_k`` carries sampling noise of variance about
    ``psi'((R - 1) / 2)`` (trigamma; ``log`` of a chi-square with R - 1 degrees of freedom). Weights that noisy
    make the estimate scatter more than the sandwich (which treats weights as fixed) reports. James-Stein on the
    log scale: ``log d'_k = m + (1 - lam) (log d_k - m)``, ``m`` the mean of ``log d``, ``lam = min(1, noise /
    var_k(log d_k))``: genuinely different variances (a bin with few tokens) keep their weight, noise is averaged
    away. Any fixed weights give a valid sandwich interval; these only make it efficient and robust.
    """
    d = np.asarray(d, dtype=float)
    if len(d) < 3 or n_clusters < 3:
        return np.full_like(d, float(np.exp(np.mean(np.log(d)))))
    logd = np.log(d)
    m = float(np.mean(logd))
    spread = float(np.var(logd, ddof=1))
    from scipy import special

    noise = float(special.polygamma(1, (n_clusters - 1) / 2.0))
    lam = 1.0 if spread <= noise else noise / spread
    return np.exp(m + (1.0 - lam) * (logd - m))


def full_cov_allowed(n_clusters: int, n_bins: int) -> tuple[bool, str]:
    """Whether ``n_clusters`` clusters support the full covariance of ``n_bins`` bin means, and why (or why not).

    The rule: ``R >= 2 B`` and ``R >= B + 5`` (so the Hartlap and Percival corrections are defined).
    """
    n_c, n_b = int(n_clusters), int(n_bins)
    need = max(2 * n_b, n_b + 5)
    if n_c >= need:
        return True, f"R={n_c} >= {need} clusters for {n_b} bins: full covariance (Hartlap-corrected)"
    return False, (f"R={n_c} < {need} clusters for {n_b} bins (full covariance needs R >= 2 x bins): diagonal "
                   "errors, interval by the sandwich with the bootstrap covariance")


def _identification(model: DecayModel, x: np.ndarray, y: np.ndarray, theta: np.ndarray, half: np.ndarray,
                    fitted: Any, max_ci_scale: float) -> str:
    """'' when every parameter is identified, else the reason (module docstring: Identification)."""
    span = float(np.ptp(x)) if len(x) else 0.0
    span = span if span > 0 else 1.0
    yscale = float(np.ptp(y)) if len(y) else 0.0
    if not yscale > 0:
        yscale = max(float(np.max(np.abs(y))) if len(y) else 0.0, 1e-12)
    problems = []
    units = model.family.units
    for i, name in enumerate(model.param_names):
        h = float(half[i])
        if not math.isfinite(h):
            problems.append(f"{name} has no finite interval")
            continue
        if units[name] in ("x", "dx"):
            if h > max_ci_scale * span:
                problems.append(f"{name} = {theta[i]:.4g} +- {h:.3g} is wider than {max_ci_scale:g} x the x-range "
                                f"({span:.3g})")
            continue
        step = 1e-6 * max(abs(float(theta[i])), 1e-3)
        tp, tm = theta.copy(), theta.copy()
        tp[i] += step
        tm[i] -= step
        with np.errstate(all="ignore"):
            grad = (np.asarray(fitted(tp)) - np.asarray(fitted(tm))) / (2 * step)
        moved = h * float(np.max(np.abs(grad))) if np.all(np.isfinite(grad)) else math.inf
        if moved > max_ci_scale * yscale:
            problems.append(f"{name} = {theta[i]:.4g} +- {h:.3g} moves the curve by {moved:.3g}, more than "
                            f"{max_ci_scale:g} x the data scale ({yscale:.3g})")
    return "; ".join(problems)


def _what_to_try(model: DecayModel) -> str:
    return (f"Try other start values (p0={{{', '.join(f'{p!r}: ...' for p in model.param_names)}}}), rescale x "
            "(relative positions, or absolute positions / 1000), a family with fewer parameters (linear), "
            "or compare families with fit_all.")


def fit_model(model: str | DecayModel, x: Any, y: Any, *, weights: Any = None, sigma: Any = None, cov: Any = None,
              p0: Mapping[str, float] | None = None, absolute_sigma: bool = False, ci: float = 0.95,
              nan_policy: Literal["raise", "omit"] = "raise", shrinkage: float = 0.0,
              max_nfev: int | None = None, x_var: Any = None, n_clusters: int | None = None,
              max_ci_scale: float = 100.0) -> FitResult:
    """Fit one curve family to ``(x, y)`` by (generalized) least squares; see the module docstring for the model.

    Args:
        model: a family name (``"exponential"``, ``"power"``, ``"logistic"``, ``"linear"``, ``"hinge"``) or model.
        x, y: abscissa (bin centres) and bin means, same length.
        weights, sigma, cov: the error model; at most one (``weights``: precision weights such as bin counts;
            ``sigma``: per-point standard errors; ``cov``: covariance of the points, e.g. of bootstrap replicates).
        p0: start values by name (default: the model's data-driven starts).
        absolute_sigma: treat ``sigma``/``cov`` as the true error scale instead of relative weights.
        ci: level of the Wald intervals.
        nan_policy: ``"raise"`` on non-finite x, y or errors, or ``"omit"`` those points.
        shrinkage: with the full covariance, weight of its diagonal in ``(1 - a) C + a diag(C)`` (0..1).
        max_nfev: function-evaluation budget per start (default 200 x (p + 1)).
        x_var: variance of positions within each point's bin: fit the bin-averaged curve (module docstring).
        n_clusters: R, the number of independent clusters (e.g. prompts) the errors were bootstrapped over. Given,
            ``cov`` is used in full only when ``R >= 2 x`` points (else its diagonal, with sandwich intervals),
            the bootstrap variance is corrected by ``R / (R - 1)`` and intervals use t with R-based degrees of
            freedom (module docstring). None: legacy behaviour (``cov`` used in full as given).
        max_ci_scale: a parameter whose interval is wider than this many x-ranges (positions, widths) or moves
            the curve by more than this many data scales (the rest) makes the fit unidentified.

    Raises:
        ConvergenceError: no start converged, or too few points for the parameters; the message says what to try.
        ValueError: malformed input (shapes, NaNs under ``nan_policy="raise"``, negative weights, n_clusters < 1).
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
    if n_clusters is not None and (isinstance(n_clusters, bool) or int(n_clusters) != n_clusters
                                   or int(n_clusters) < 1):
        raise ValueError(f"n_clusters must be a positive integer or None, got {n_clusters!r}")
    R = None if n_clusters is None else int(n_clusters)
    if not max_ci_scale > 0:
        raise ValueError(f"max_ci_scale must be > 0, got {max_ci_scale}")
    given = [name for name, v in (("weights", weights), ("sigma", sigma), ("cov", cov)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"pass at most one of weights, sigma, cov (got {', '.join(given)})")
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
    if cov is not None and cov.shape != (len(x), len(x)):
        raise ValueError(f"cov must be {len(x)} x {len(x)} for {len(x)} points, got {cov.shape}")
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

    # --- the error model: legacy (R unknown) or tied to the number of clusters R --------------------------------
    errors_reason = ""
    sandwich: np.ndarray | None = None  # C_w of the sandwich (diagonal errors from a full covariance)
    chi2_var: np.ndarray | None = None  # with smoothed weights: the variances of the misfit chi-square
    m1 = 1.0
    df_known = math.inf  # t degrees of freedom when the error scale is known
    if R is not None and (sigma is not None or cov is not None):
        boot = R / (R - 1) if R > 1 else 1.0  # the bootstrap's plug-in variance is (R - 1) / R of the unbiased one
        df_known = float(max(R - 1, 1))
        if sigma is not None:
            sigma = np.asarray(sigma, dtype=float) * math.sqrt(boot)
            errors_reason = f"per-point errors from R={R} clusters"
        else:
            full, errors_reason = full_cov_allowed(R, n)
            C, d = _floored_cov(np.asarray(cov, dtype=float) * boot)
            if full:
                cov = C * (R - 1) / (R - n - 2)  # Hartlap: the unbiased precision is (R - B - 2) / (R - 1) Chat^-1
                m1 = percival_m1(R, n, p)
                df_known = float(max(R - 1 - (n - p), 1))
            else:
                dw = smoothed_variances(d, R)
                sigma, cov = np.sqrt(dw), None
                sandwich = C / np.sqrt(np.outer(dw, dw))
                chi2_var = d
    errors, whiten, logdet_w, w_used, yerr = _whitener(n, weights, sigma, cov, shrinkage)
    if chi2_var is not None:
        yerr = np.sqrt(chi2_var)
    if R is not None and errors_reason:
        errors = {"cov": "full_cov", "sigma": "sigma" if sandwich is None else "diagonal"}.get(errors, errors)
    lo, hi = model.bounds_for(x)

    if x_var is not None and np.any(x_var > 0):
        dx = np.sqrt(3.0 * x_var)
        dx = np.where(x > 0, np.minimum(dx, 0.999 * x), dx)  # stay on x > 0 (power laws)
        xs = (x - dx, x, x + dx)

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
    from scipy import optimize

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
    known = absolute_sigma and errors in ("sigma", "cov", "full_cov", "diagonal")
    # s^2: estimated from the residuals, or (known errors) 1, inflated by the reduced chi-square when the model
    # misfits (never narrower than the given errors; wider when the curve cannot explain the data).
    if chi2_var is not None:  # the reduced chi-square against the bins' own variances, not the smoothed weights
        rss_scale = float(np.sum((fitted(theta) - y) ** 2 / chi2_var))
    else:
        rss_scale = rss
    scale = max(1.0, rss_scale / df) if known else rss_scale / df
    notes: list[str] = []
    u, s, vt = np.linalg.svd(J, full_matrices=False)
    tol = np.finfo(float).eps * max(J.shape) * (s[0] if len(s) else 0.0)
    if np.any(s <= tol):
        pcov = np.full((p, p), np.inf)
        notes.append("the parameters are not all identifiable from these data (singular Jacobian); "
                     "try a family with fewer parameters")
    elif sandwich is not None:
        g = (vt.T / s) @ u.T  # A^-1 J_w^T
        pcov = g @ sandwich @ g.T * scale
    else:
        pcov = (vt.T / s ** 2) @ vt * scale * m1
    se = np.sqrt(np.clip(np.diag(pcov), 0.0, np.inf))
    if known:
        df_ci = df_known
    else:
        df_ci = float(df if R is None else max(min(df, R - 1), 1))
    q = _normal_ppf((1 + ci) / 2) if math.isinf(df_ci) else _t_ppf((1 + ci) / 2, df_ci)
    for i, name in enumerate(model.param_names):
        if best.active_mask[i] != 0:
            notes.append(f"{name} = {theta[i]:.4g} is at its bound; its interval is unreliable. "
                         "Try another family or rescale x")
    unidentified = _identification(model, x, y, theta, q * se, fitted, max_ci_scale)
    message = str(best.message)
    if unidentified:
        message = f"unidentified: {unidentified}"
        notes.append(f"not identified ({unidentified}); never selected")
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
        df_resid=df, scale=float(scale), converged=True, message=message, x=_ro(x), y=_ro(y),
        weights=_ro(w_used), yerr=_ro(yerr), ci=ci, errors=errors, warnings=tuple(notes), x_var=_ro(x_var),
        errors_reason=errors_reason, n_clusters=R, df_ci=float(df_ci), identified=not unidentified)


def fit_all(x: Any, y: Any, models: Sequence[str | DecayModel] | None = None, *,
            criterion: Literal["aic", "aicc", "bic"] = "aic", n_clusters: int | None = None,
            min_clusters: int = 10, **fit_kwargs: Any) -> ModelSelection:
    """Fit several families (default: all of :data:`MODELS`) with the same errors and compare them by ``criterion``.

    Args:
        x, y: abscissa and bin means.
        models: families to fit (default: all).
        criterion: ``aic``, ``aicc`` or ``bic``.
        n_clusters: R, the independent clusters behind the errors (passed to :func:`fit_model`, which ties the
            covariance rule and intervals to it); with ``R < min_clusters`` every family is still fitted and
            reported but none is selected (``best_name`` None, ``reason`` ``insufficient: R=4 < 10 clusters``).
            None: legacy behaviour, no gate.
        min_clusters: the fewest clusters for a selection (default 10).
        **fit_kwargs: passed to :func:`fit_model` (weights, sigma, cov, absolute_sigma, ci, x_var...).

    Failed fits are recorded with their reason, not hidden; unidentified ones are listed but never selected.
    """
    chosen = [get_model(m) for m in (models if models is not None else list(MODELS))]
    results: dict[str, FitResult] = {}
    for m in chosen:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FitWarning)  # recorded in FitResult.warnings instead
                results[m.name] = fit_model(m, x, y, n_clusters=n_clusters, **fit_kwargs)
        except ConvergenceError as exc:
            results[m.name] = FitResult.failed(m, x, y, str(exc), ci=fit_kwargs.get("ci", 0.95),
                                               n_clusters=n_clusters)
    return ModelSelection(FrozenDict(results), criterion, n_clusters=n_clusters, min_clusters=int(min_clusters))


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
    from scipy import optimize

    return float(optimize.brentq(lambda v: float(result.predict(np.array([v]))[0]) - target, grid[i], grid[i + 1]))
