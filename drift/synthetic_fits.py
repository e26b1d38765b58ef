"""Synthetic clustered bin data with known curves: the ground truth for calibrating fit intervals.

drift's bin means are ratios of sums over independent clusters (prompts), and one cluster's tokens are correlated
across bins. :func:`clustered_bins` simulates exactly that at the level of sufficient statistics: for cluster
``r = 1..R`` and bin ``k = 1..B`` at centre ``x_k = (k - 0.5) / B``,

    value of a token = f(x_k) + u_r + e_rk + eps,    u_r ~ N(0, cluster_sd^2)          (the cluster's level)
                                                     e_rk = ar e_r,k-1 + sqrt(1 - ar^2) ar_sd z_rk   (AR(1), sd ar_sd)
                                                     eps ~ N(0, token_sd^2)              (token noise)

with ``n_rk`` tokens (uniform integers in ``tokens``), giving ``sums_R_B`` (``n_rk (f + u + e) + sqrt(n_rk)
token_sd z``) and ``counts_R_B``. The population bin mean is ``f(x_k)`` (the noise has mean zero and the counts do
not depend on it), so a fit's interval can be checked against the true parameters. :func:`slope_coverage` repeats
this for a line, bootstraps the clusters with :func:`drift.stats.bootstrap.ratio_replicates` like ``drift fit``,
and reports how often the nominal interval of the slope covers the true slope under the legacy rule (full
covariance, Hartlap factor from the number of bootstrap draws) and the rule tied to R
(:func:`drift.stats.fit.fit_model` with ``n_clusters``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from drift.curves import evaluate_curve
from drift.stats.bootstrap import ratio_replicates
from drift.stats.fit import ModelSelection, fit_all, fit_model

__all__ = ["ClusteredBins", "CoverageCell", "bootstrap_cov", "clustered_bins", "coverage_table", "fit_rule",
           "hinge_case", "slope_coverage"]

Rule = Literal["legacy", "new"]
RULES: tuple[Rule, ...] = ("legacy", "new")


@dataclass(frozen=True)
class ClusteredBins:
    """One simulated dataset: bin centres, per-cluster sufficient statistics, bin means and the truth.

    Attributes:
        x: bin centres (B,).
        sums, counts: per-cluster, per-bin sums of the metric and token counts (R x B).
        y: pooled bin means ``sums.sum(0) / counts.sum(0)`` (B,).
        truth: the population bin means ``f(x)`` (B,).
    """

    x: np.ndarray
    sums: np.ndarray
    counts: np.ndarray
    y: np.ndarray
    truth: np.ndarray

    @property
    def n_clusters(self) -> int:
        return int(self.sums.shape[0])


def clustered_bins(n_clusters: int, bins: int = 20, family: str = "linear",
                   params: Mapping[str, float] | None = None, *, cluster_sd: float = 0.3, ar: float = 0.7,
                   ar_sd: float = 0.3, token_sd: float = 0.5, tokens: tuple[int, int] = (5, 30),
                   taper: float = 0.0, seed: int | np.random.Generator = 0) -> ClusteredBins:
    """Simulate R clusters x B bins of sufficient statistics around a known curve (module docstring).

    Args:
        n_clusters: R, independent clusters (prompts).
        bins: B, position bins; centres ``(k - 0.5) / B`` in (0, 1).
        family, params: the true curve (default: the line ``1 - 0.5 x``).
        cluster_sd: sd of the per-cluster level ``u_r`` (a common shift of all its bins).
        ar, ar_sd: lag-one correlation and marginal sd of the within-cluster AR(1) noise across bins.
        token_sd: sd of token-level noise.
        tokens: inclusive range of tokens per cluster and bin.
        taper: later bins hold fewer tokens: counts are scaled by ``1 - taper * x`` (at least 1), so bins differ in
            variance as relative-position bins of short responses do.
        seed: seed or generator.
    """
    if n_clusters < 1 or bins < 1:
        raise ValueError(f"need n_clusters >= 1 and bins >= 1, got {n_clusters}, {bins}")
    if not -1.0 < ar < 1.0:
        raise ValueError(f"ar must be in (-1, 1), got {ar}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    params = dict(params) if params is not None else {"a": 1.0, "b": -0.5}
    x = (np.arange(bins) + 0.5) / bins
    f = evaluate_curve(family, x, params)
    R, B = int(n_clusters), int(bins)
    u = rng.normal(0.0, cluster_sd, size=(R, 1))
    z = rng.normal(0.0, 1.0, size=(R, B))
    e = np.empty((R, B))
    e[:, 0] = ar_sd * z[:, 0]
    innov = math.sqrt(1.0 - ar ** 2) * ar_sd
    for k in range(1, B):
        e[:, k] = ar * e[:, k - 1] + innov * z[:, k]
    n = rng.integers(tokens[0], tokens[1] + 1, size=(R, B)).astype(float)
    if taper:
        n = np.maximum(np.round(n * (1.0 - taper * x[None, :])), 1.0)
    sums = n * (f[None, :] + u + e) + np.sqrt(n) * token_sd * rng.normal(0.0, 1.0, size=(R, B))
    y = sums.sum(axis=0) / n.sum(axis=0)
    return ClusteredBins(x=x, sums=sums, counts=n, y=y, truth=f)


def bootstrap_cov(data: ClusteredBins, n_boot: int = 400, seed: int = 0) -> np.ndarray:
    """Covariance (B x B) of the cluster-bootstrap replicates of the bin means (as ``drift fit`` computes it)."""
    reps = ratio_replicates(data.sums, data.counts, n_boot, seed)
    reps = reps[np.all(np.isfinite(reps), axis=1)]
    return np.atleast_2d(np.cov(reps, rowvar=False))


def _legacy_kwargs(cov: np.ndarray, n_boot: int) -> dict[str, object]:
    """The pre-R rule of ``fit_bins``: Hartlap factor and shrinkage from the number of bootstrap draws N."""
    N, B = n_boot, cov.shape[0]
    hartlap = (N - 1) / (N - B - 2) if N > B + 2 else 2.0
    return {"cov": cov * hartlap, "shrinkage": min(0.5, B / N)}


def fit_rule(data: ClusteredBins, rule: Rule, *, models: tuple[str, ...] | None = None, n_boot: int = 400,
             seed: int = 0, ci: float = 0.95, min_clusters: int = 10) -> ModelSelection:
    """Fit ``models`` (default: all) to ``data`` with bootstrap errors under ``rule`` (``legacy`` or ``new``)."""
    cov = bootstrap_cov(data, n_boot, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if rule == "legacy":
            return fit_all(data.x, data.y, models, absolute_sigma=True, ci=ci, **_legacy_kwargs(cov, n_boot))
        return fit_all(data.x, data.y, models, cov=cov, absolute_sigma=True, ci=ci, n_clusters=data.n_clusters,
                       min_clusters=min_clusters)


@dataclass(frozen=True)
class CoverageCell:
    """Slope coverage of one (R, bins, rule) cell over ``n_reps`` replicates."""

    n_clusters: int
    bins: int
    rule: str
    n_reps: int
    coverage: float
    mean_width: float
    errors: str

    @property
    def mc_se(self) -> float:
        """Monte-Carlo standard error of the coverage."""
        return math.sqrt(max(self.coverage * (1 - self.coverage), 1e-12) / max(self.n_reps, 1))


def slope_coverage(n_clusters: int, n_reps: int = 400, *, bins: int = 20, n_boot: int = 400, ci: float = 0.95,
                   seed: int = 0, rules: tuple[Rule, ...] = RULES, slope: float = -0.5,
                   **sim: float) -> dict[str, CoverageCell]:
    """Coverage of the nominal ``ci`` interval of a linear slope, by rule, over ``n_reps`` seeded replicates.

    Replicate ``i`` simulates with seed ``(seed, n_clusters, bins, i)`` and bootstraps with seed ``i``; both rules
    see the same data and replicates. ``sim`` goes to :func:`clustered_bins` (cluster_sd, ar, ar_sd, token_sd).
    """
    hits = {r: 0 for r in rules}
    widths: dict[str, list[float]] = {r: [] for r in rules}
    used: dict[str, set[str]] = {r: set() for r in rules}
    for i in range(n_reps):
        rng = np.random.default_rng([seed, n_clusters, bins, i])
        data = clustered_bins(n_clusters, bins, "linear", {"a": 1.0, "b": slope}, seed=rng, **sim)  # type: ignore[arg-type]
        cov = bootstrap_cov(data, n_boot, i)
        for rule in rules:
            kw = _legacy_kwargs(cov, n_boot) if rule == "legacy" else {"cov": cov, "n_clusters": n_clusters}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = fit_model("linear", data.x, data.y, absolute_sigma=True, ci=ci, **kw)  # type: ignore[arg-type]
            lo, hi = r.ci_low["b"], r.ci_high["b"]
            hits[rule] += int(lo <= slope <= hi)
            widths[rule].append(hi - lo)
            used[rule].add(r.errors)
    return {rule: CoverageCell(n_clusters, bins, rule, n_reps, hits[rule] / max(n_reps, 1),
                               float(np.mean(widths[rule])) if widths[rule] else math.nan,
                               "/".join(sorted(used[rule]))) for rule in rules}


def coverage_table(clusters: tuple[int, ...] = (10, 20, 80), n_reps: int = 400, *, bins: int = 20,
                   n_boot: int = 400, ci: float = 0.95, seed: int = 0, **sim: float) -> list[dict[str, object]]:
    """One row per R: coverage and mean width of the slope interval under the legacy and the new rule."""
    rows: list[dict[str, object]] = []
    for R in clusters:
        cells = slope_coverage(R, n_reps, bins=bins, n_boot=n_boot, ci=ci, seed=seed, **sim)
        old, new = cells["legacy"], cells["new"]
        rows.append({"R": R, "bins": bins, "n_reps": n_reps, "errors_new": new.errors,
                     "coverage_legacy": old.coverage, "coverage_new": new.coverage, "mc_se": new.mc_se,
                     "width_legacy": old.mean_width, "width_new": new.mean_width})
    return rows


def hinge_case(n_datasets: int = 20, *, n_clusters: int = 16, bins: int = 20, n_boot: int = 400,
               seed: int = 1) -> dict[str, dict[str, float]]:
    """The '16 rollouts, 20 bins' case: a straight line with correlated noise, fitted by linear, hinge, exponential
    and logistic; per rule, how far AIC puts the true (linear) family behind the best one.

    Returns ``{rule: {"median_delta": ..., "max_delta": ..., "frac_over_10": ..., "errors": ...}}`` where delta is
    ``AIC(linear) - AIC(best)`` (0 when linear is selected).
    """
    out: dict[str, dict[str, float]] = {}
    deltas: dict[str, list[float]] = {r: [] for r in RULES}
    errors: dict[str, str] = {}
    for i in range(n_datasets):
        data = clustered_bins(n_clusters, bins, seed=np.random.default_rng([seed, i]))
        for rule in RULES:
            sel = fit_rule(data, rule, models=("linear", "hinge", "exponential", "logistic"), n_boot=n_boot, seed=i)
            deltas[rule].append(float(sel.table().loc["linear", "delta_aic"]))
            errors[rule] = sel.results["linear"].errors
    for rule, d in deltas.items():
        a = np.array(d)
        out[rule] = {"median_delta": float(np.median(a)), "max_delta": float(a.max()),
                     "frac_over_10": float(np.mean(a > 10)), "errors": errors[rule]}  # type: ignore[dict-item]
    return out
