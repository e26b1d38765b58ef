"""Does a metric rise, fall or stay flat along the response? Measured, never assumed.

The statistic is Spearman's rho between bin position and bin mean: a monotone trend of any shape gives |rho| near 1,
noise gives rho near 0. Per-token KL in the paper is flat and noisy while cumulative quantities climb, and privileged
self-teachers reverse the direction of reliability, so drift reports the sign with an interval instead of fitting a
"decay" and reading its slope.

- ``method="bootstrap"`` (needs per-rollout statistics, i.e. a :class:`~drift.stats.bins.RolloutBins`): resample
  rollouts with replacement, recompute every bin mean from the sufficient statistics, recompute rho; the percentile
  interval of rho is the interval. Verdict: ``rises`` if the interval lies above 0, ``falls`` if below, else
  ``flat``. p-value: ``2 * min(P*(rho <= 0), P*(rho >= 0))`` over the replicates (approximate).
- ``method="permutation"`` (works on bin means alone, e.g. a bins table): shuffle the bin means across positions;
  p-value = ``(1 + #{|rho_perm| >= |rho|}) / (n + 1)``; the interval is the central ``1 - alpha`` range of rho under
  "no trend". Verdict: the sign of rho when ``p < alpha``, else ``flat``. It ignores the uncertainty of each bin
  mean (each is treated as one observation), so prefer the bootstrap when rollouts are available.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from drift.stats.bins import RolloutBins
from drift.stats.bootstrap import ratio_replicates

__all__ = ["DirectionResult", "direction_from_stats", "direction_test", "spearman_rows"]

Verdict = Literal["rises", "falls", "flat"]


@dataclass(frozen=True)
class DirectionResult:
    """The measured direction of a metric along the response.

    Attributes:
        rho: Spearman correlation of bin means with bin position (NaN with < 3 bins or constant means).
        ci_low, ci_high: bootstrap interval of rho, or the no-trend band (permutation).
        p_value: two-sided p-value for "no monotone trend".
        verdict: ``"rises"``, ``"falls"`` or ``"flat"``.
        method, n_resamples, alpha, seed: how it was decided; n_bins: bins used.
        metric, cell: what was tested (labels only).
    """

    rho: float
    ci_low: float
    ci_high: float
    p_value: float
    verdict: Verdict
    method: str
    n_bins: int
    n_resamples: int
    alpha: float
    seed: int
    metric: str | None = None
    cell: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict (non-finite numbers become None)."""
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            if isinstance(v, float):
                out[k] = v if math.isfinite(v) else None
            else:
                out[k] = v
        return out

    def report(self) -> str:
        what = f"{self.metric} " if self.metric else ""
        level = f"{round((1 - self.alpha) * 100)}%"
        band = "interval" if self.method == "bootstrap" else "no-trend band"
        return (f"{what}{self.verdict}: Spearman rho {self.rho:+.3f} ({level} {self.method} {band} "
                f"[{self.ci_low:+.3f}, {self.ci_high:+.3f}], p={self.p_value:.3g}, {self.n_bins} bins)")

    def __str__(self) -> str:
        return self.report()


def spearman_rows(x_B: np.ndarray, Y_n_B: np.ndarray) -> np.ndarray:
    """Spearman rho of ``x`` with each row of ``Y`` (ties averaged); NaN entries of a row are left out of it."""
    Y = np.atleast_2d(np.asarray(Y_n_B, dtype=float))
    X = np.broadcast_to(np.asarray(x_B, dtype=float), Y.shape)
    mask = ~np.isnan(Y)
    ry = rankdata(np.where(mask, Y, np.nan), axis=1, nan_policy="omit")
    rx = rankdata(np.where(mask, X, np.nan), axis=1, nan_policy="omit")
    k = mask.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = np.nansum(rx, axis=1) / k
        my = np.nansum(ry, axis=1) / k
        dx = np.where(mask, rx - mx[:, None], 0.0)
        dy = np.where(mask, ry - my[:, None], 0.0)
        rho = (dx * dy).sum(axis=1) / np.sqrt((dx ** 2).sum(axis=1) * (dy ** 2).sum(axis=1))
    return np.where(k >= 3, rho, np.nan)


def _verdict_from_interval(lo: float, hi: float) -> Verdict:
    if lo > 0:
        return "rises"
    if hi < 0:
        return "falls"
    return "flat"


def _bootstrap_result(x_B: np.ndarray, mean_B: np.ndarray, reps_n_B: np.ndarray, *, alpha: float, seed: int,
                      metric: str | None, cell: str | None) -> DirectionResult:
    rho = float(spearman_rows(x_B, mean_B[None, :])[0])
    rr = spearman_rows(x_B, reps_n_B)
    rr = rr[np.isfinite(rr)]
    if len(rr) == 0 or not math.isfinite(rho):
        return DirectionResult(rho, math.nan, math.nan, math.nan, "flat", "bootstrap", len(x_B), len(reps_n_B),
                               alpha, seed, metric, cell)
    lo, hi = (float(v) for v in np.quantile(rr, [alpha / 2, 1 - alpha / 2]))
    p = min(1.0, 2.0 * min(float(np.mean(rr <= 0)), float(np.mean(rr >= 0))))
    return DirectionResult(rho, lo, hi, p, _verdict_from_interval(lo, hi), "bootstrap", len(x_B), len(reps_n_B),
                           alpha, seed, metric, cell)


def _permutation_result(x_B: np.ndarray, mean_B: np.ndarray, *, n: int, alpha: float, seed: int,
                        metric: str | None, cell: str | None) -> DirectionResult:
    ok = np.isfinite(mean_B)
    x_B, mean_B = x_B[ok], mean_B[ok]
    rho = float(spearman_rows(x_B, mean_B[None, :])[0])
    if not math.isfinite(rho):
        return DirectionResult(rho, math.nan, math.nan, math.nan, "flat", "permutation", len(x_B), n, alpha, seed,
                               metric, cell)
    rng = np.random.default_rng(seed)
    perms = np.argsort(rng.random((n, len(mean_B))), axis=1)
    null = spearman_rows(x_B, mean_B[perms])
    lo, hi = (float(v) for v in np.quantile(null, [alpha / 2, 1 - alpha / 2]))
    p = float((1 + np.sum(np.abs(null) >= abs(rho) - 1e-12)) / (n + 1))
    verdict: Verdict = ("rises" if rho > 0 else "falls") if p < alpha else "flat"
    return DirectionResult(rho, lo, hi, p, verdict, "permutation", len(x_B), n, alpha, seed, metric, cell)


def direction_from_stats(sums_R_B: np.ndarray, counts_R_B: np.ndarray, x_B: np.ndarray | None = None, *,
                         method: Literal["bootstrap", "permutation"] = "bootstrap", n: int = 1000, seed: int = 0,
                         alpha: float = 0.05, metric: str | None = None) -> DirectionResult:
    """Direction test from per-rollout, per-bin sums and counts (R x B); ``x_B`` defaults to the bin order."""
    sums_R_B, counts_R_B = np.asarray(sums_R_B, float), np.asarray(counts_R_B, float)
    tot = counts_R_B.sum(axis=0)
    keep = tot > 0
    x_B = np.arange(sums_R_B.shape[1], dtype=float) if x_B is None else np.asarray(x_B, dtype=float)
    mean_B = sums_R_B.sum(axis=0)[keep] / tot[keep]
    if method == "permutation":
        return _permutation_result(x_B[keep], mean_B, n=n, alpha=alpha, seed=seed, metric=metric, cell=None)
    reps = ratio_replicates(sums_R_B[:, keep], counts_R_B[:, keep], n, seed)
    return _bootstrap_result(x_B[keep], mean_B, reps, alpha=alpha, seed=seed, metric=metric, cell=None)


def direction_test(data: RolloutBins | pd.DataFrame, metric: str | None = None, *,
                   method: Literal["bootstrap", "permutation"] = "bootstrap", n: int = 1000, seed: int = 0,
                   alpha: float = 0.05, step: int | Literal["auto"] | None = "auto", stratum: str = "all",
                   group: str = "all") -> DirectionResult:
    """Whether ``metric`` rises, falls or stays flat along the response (see the module docstring).

    Args:
        data: a :class:`~drift.stats.bins.RolloutBins` (bootstrap or permutation) or a bins table from
            :func:`~drift.stats.bins.bin_metric` (permutation only: it has no per-rollout statistics).
        metric: which metric (optional when only one is present).
        method: ``"bootstrap"`` (rollouts resampled) or ``"permutation"`` (bin means shuffled).
        n: resamples or permutations; seed: their seed (a RolloutBins reuses the replicates of its table when
            ``n`` and ``seed`` match ``n_boot`` and ``seed`` there); alpha: 1 - interval level.
        step, stratum, group: the cell to test (default: the pooled one).
    """
    if method not in ("bootstrap", "permutation"):
        raise ValueError(f"method must be 'bootstrap' or 'permutation', got {method!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if isinstance(data, RolloutBins):
        metric = metric or (data.metrics[0] if len(data.metrics) == 1 else None)
        if metric is None:
            raise ValueError(f"pass metric=; this RolloutBins holds {list(data.metrics)}")
        cell = data.cell(step, stratum, group)
        bins, sums, counts = data.sufficient(metric, cell)
        mean_B = sums.sum(axis=0) / counts.sum(axis=0)
        x_B = bins.astype(float)
        if method == "permutation":
            return _permutation_result(x_B, mean_B, n=n, alpha=alpha, seed=seed, metric=metric, cell=cell.label)
        reps = data.replicates(cell, n, seed)[:, data.metric_index(metric), :][:, bins]
        return _bootstrap_result(x_B, mean_B, reps, alpha=alpha, seed=seed, metric=metric, cell=cell.label)
    if isinstance(data, pd.DataFrame):
        if method == "bootstrap":
            raise ValueError("a bins table has no per-rollout statistics to resample; pass the RolloutBins from "
                             "aggregate_bins(...) for method='bootstrap', or use method='permutation'")
        df = data
        if metric is not None:
            df = df[df["metric"] == metric]
        if "stratum" in df:
            df = df[(df["stratum"] == stratum) & (df["group"] == group)]
        if step != "auto" and "step" in df:
            df = df[df["step"].isna()] if step is None else df[df["step"] == step]
        cells = df[["metric", "step", "stratum", "group"]].drop_duplicates() if "stratum" in df else df[["metric"]]
        if len(cells) != 1:
            raise ValueError(f"the table holds {len(cells)} metric/cell combinations after filtering; pass "
                             f"metric=, step=, stratum=, group= to pick one:\n{cells.to_string(index=False)}")
        df = df.sort_values("bin")
        return _permutation_result(df["bin"].to_numpy(float), df["mean"].to_numpy(float), n=n, alpha=alpha,
                                   seed=seed, metric=str(df["metric"].iloc[0]), cell=None)
    raise TypeError(f"direction_test needs a RolloutBins or a bins DataFrame, got {type(data).__name__}")
