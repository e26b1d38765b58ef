"""Does a metric rise, fall or stay flat along the response? Measured, never assumed, and never more certain than
the data allow.

Inputs are per-cluster, per-bin sufficient statistics (a :class:`~drift.stats.bins.RolloutBins`, or raw
``sums_K_B`` / ``counts_K_B``); a cluster is a prompt by default (all its rollouts move together), see
:mod:`drift.stats.bootstrap`. With bin means ``m_b = sum_k s_kb / sum_k n_kb`` and cluster-bootstrap replicates
``m*_b`` (K clusters drawn with replacement):

**Direction (ρ).** ``rho = Spearman(position_b, m_b)``. Spearman is a rank statistic and not smooth where the
true means tie (a flat metric), so the bootstrap of ``rho`` itself is inconsistent there (its replicates are shrunk
toward the observed ranks: sd 0.16 where the true sd is 0.23 at 20 bins). The test therefore uses the bootstrap
only for what it estimates consistently, the joint error of the bin means: the *null-centred* replicates

    rho0*_b = Spearman(position, m*_b - m_hat)        (the data's own error structure, a flat truth)

are the distribution of ``rho`` under "no trend" with the metric's real dependence between bins (cumulative or
autocorrelated metrics give wide null distributions; shuffling bin means did not, and called trends in noise).
Ranks ignore scale, so the bootstrap's ``(K - 1) / K`` variance does not matter. Two-sided p-value:
``p = (1 + #{|rho0*| >= |rho|}) / (n + 1)``, printed as ``p < 1/n`` when no null replicate reaches ``|rho|``.
Interval of rho (method ``"null-centred"``): ``[rho - q_{1-alpha/2}(rho0*), rho - q_{alpha/2}(rho0*)]`` clipped to
[-1, 1]: it excludes 0 exactly when the test rejects, and has the sampling spread of rho at a flat truth (the
widest case), so it is conservative under a strong trend rather than shrunk.

**Flat (an equivalence test with units).** Under a truly flat metric rho behaves like a random permutation's at
any sample size, so rho can never show flatness. Instead ``diff = mean(m_b, last quintile of bins) - mean(m_b,
first quintile)`` (unweighted means of ``max(1, B // 5)`` bins each) with its expanded-percentile cluster-bootstrap
interval at level ``1 - 2 alpha`` (TOST at level alpha). ``flat`` when that interval lies within
``±margin``, ``margin = flat_margin * |overall mean|`` (default 10% of the cell's pooled token mean).

**Verdicts.** ``insufficient`` with fewer than 3 bins with tokens, fewer than ``min_clusters`` clusters (default 10)
or no resamples (the reason says which); else ``rises`` / ``falls`` (sign of rho) when ``p < alpha``; else ``flat``
when the equivalence holds; else ``inconclusive``.

The bin-mean permutation test was removed (it assumed exchangeable bins); asking for it raises
:class:`~drift.errors.ConfigError` naming this test.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from drift.errors import ConfigError
from drift.stats.bins import DEFAULT_MIN_CLUSTERS, RolloutBins
from drift.stats.bootstrap import expanded_percentile_interval, ratio_replicates
from drift.stats.reader import is_dataframe

if TYPE_CHECKING:  # pandas is imported where a table is built: `import drift.stats` and the CLI stay light
    import pandas as pd

__all__ = [
    "DEFAULT_FLAT_MARGIN",
    "DIRECTION_METHODS",
    "RHO_INTERVAL",
    "VERDICTS",
    "DirectionResult",
    "average_ranks",
    "check_direction_method",
    "direction_from_stats",
    "direction_test",
    "format_p",
    "spearman_rows",
]

Verdict = Literal["rises", "falls", "flat", "inconclusive", "insufficient"]
VERDICTS: tuple[str, ...] = ("rises", "falls", "flat", "inconclusive", "insufficient")
DIRECTION_METHODS: tuple[str, ...] = ("bootstrap",)
RHO_INTERVAL = "null-centred"  # see the module docstring
DEFAULT_FLAT_MARGIN = 0.1
MIN_BINS = 3

_REMOVED = {
    "permutation": ("direction method 'permutation' (shuffling bin means) was removed: bin means of cumulative or "
                    "autocorrelated metrics are not exchangeable, and it called trends in pure noise (23-66% false "
                    "calls at nominal 5%). Use method='bootstrap' (the default: a null-centred cluster-bootstrap "
                    "test, valid under within-rollout and within-prompt dependence); on the command line drop "
                    "--direction or pass --direction bootstrap"),
}


def check_direction_method(method: str) -> None:
    """Raise :class:`~drift.errors.ConfigError` unless ``method`` is a supported direction test (``bootstrap``)."""
    if method in _REMOVED:
        raise ConfigError("direction test", [_REMOVED[method]])
    if method not in DIRECTION_METHODS:
        raise ConfigError("direction test", [f"method must be one of {DIRECTION_METHODS}, got {method!r}"])


def format_p(p: float, n_resamples: int, floor: bool) -> str:
    """``p=0.034``, or ``p < 0.001`` (``1/n``) when no resample was as extreme: never ``p=0``."""
    if not math.isfinite(p):
        return "p=n/a"
    if floor and n_resamples > 0:
        return f"p < {1.0 / n_resamples:.2g}"
    return f"p={p:.3g}"


@dataclass(frozen=True)
class DirectionResult:
    """The measured direction of a metric along the response.

    Attributes:
        rho: Spearman correlation of bin means with bin position (NaN with < 3 bins or constant means).
        ci_low, ci_high: interval of rho (``interval`` names the method; see the module docstring).
        p_value: two-sided p-value for "no monotone trend", ``(1 + #extreme) / (n + 1)``.
        verdict: ``rises``, ``falls``, ``flat``, ``inconclusive`` or ``insufficient``.
        method, n_resamples, alpha, seed: how it was decided; n_bins: bins with tokens.
        metric, cell: what was tested (labels only).
        n_clusters, n_rollouts, cluster: the sample (clusters resampled, rollouts in them, the cluster unit).
        min_clusters: below it the verdict is ``insufficient``; reason: why a verdict is insufficient/inconclusive.
        p_floor: True when no null resample reached |rho| (report ``p < 1/n``).
        diff, diff_low, diff_high: last minus first quintile of bin means, with its ``1 - 2 alpha`` interval.
        margin, flat_margin: the equivalence margin in metric units, and as a fraction of |overall mean|.
        overall_mean: the cell's pooled token mean.
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
    n_clusters: int = 0
    n_rollouts: int | None = None
    cluster: str = "prompt"
    min_clusters: int = DEFAULT_MIN_CLUSTERS
    interval: str = RHO_INTERVAL
    p_floor: bool = False
    diff: float = math.nan
    diff_low: float = math.nan
    diff_high: float = math.nan
    margin: float = math.nan
    flat_margin: float = DEFAULT_FLAT_MARGIN
    overall_mean: float = math.nan
    reason: str = ""

    @property
    def sufficient(self) -> bool:
        """False when the data cannot give a verdict (too few clusters or bins)."""
        return self.verdict != "insufficient"

    @property
    def p_text(self) -> str:
        """The p-value as printed: ``p=0.03`` or ``p < 0.001``."""
        return format_p(self.p_value, self.n_resamples, self.p_floor)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DirectionResult:
        """The result back from :meth:`to_dict` (None floats become NaN; derived keys such as ``p_text`` dropped)."""
        import dataclasses

        kinds = {f.name: f.type for f in dataclasses.fields(cls)}
        return cls(**{k: (math.nan if v is None and kinds[k] in ("float", float) else v)
                      for k, v in d.items() if k in kinds})

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict (non-finite numbers become None); ``p_text`` is the printable p-value."""
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            if isinstance(v, float):
                out[k] = v if math.isfinite(v) else None
            else:
                out[k] = v
        out["p_text"] = self.p_text
        return out

    def report(self) -> str:
        what = f"{self.metric} " if self.metric else ""
        level = f"{round((1 - self.alpha) * 100)}%"
        sample = f"{self.n_bins} bins, {self.n_clusters} {self.cluster} clusters" + (
            f", {self.n_rollouts} rollouts" if self.n_rollouts is not None else "")
        rho = (f"Spearman rho {self.rho:+.3f} ({level} {self.interval} cluster-bootstrap interval "
               f"[{self.ci_low:+.3f}, {self.ci_high:+.3f}], {self.p_text})" if math.isfinite(self.rho)
               else "Spearman rho n/a")
        if self.verdict == "insufficient":
            return f"{what}insufficient: {self.reason} ({rho}; {sample})"
        eq = ""
        if math.isfinite(self.diff):
            eq = (f"; last-first quintile {self.diff:+.4g} [{self.diff_low:+.4g}, {self.diff_high:+.4g}] vs "
                  f"flat margin ±{self.margin:.3g}")
        note = f" ({self.reason})" if self.reason and self.verdict == "inconclusive" else ""
        return f"{what}{self.verdict}{note}: {rho}{eq}; {sample}"

    def __str__(self) -> str:
        return self.report()


def average_ranks(a_n_B: np.ndarray) -> np.ndarray:
    """Ranks 1..B along each row, ties averaged, NaN entries NaN (ranked among the others as if absent).

    The numbers of ``scipy.stats.rankdata(a, axis=1, nan_policy="omit")`` (the same algorithm: a stable sort, the
    mean rank of each run of equal values), without importing ``scipy.stats``.
    """
    x = np.atleast_2d(np.asarray(a_n_B, dtype=float))
    if x.size == 0:
        return np.empty(x.shape)
    j = np.argsort(x, axis=-1, kind="stable")
    y = np.take_along_axis(x, j, axis=-1)
    first = np.concatenate([np.ones((*x.shape[:-1], 1), dtype=bool), y[..., :-1] != y[..., 1:]], axis=-1)
    starts = np.flatnonzero(first.ravel())
    counts = np.diff(starts, append=y.size)
    ordinal = np.broadcast_to(np.arange(1, x.shape[-1] + 1, dtype=float), x.shape)
    ranks = np.repeat(ordinal[first] + (counts.astype(float) - 1) / 2, counts).reshape(x.shape)
    out = np.empty(x.shape)
    np.put_along_axis(out, j, ranks, axis=-1)
    out[np.isnan(x)] = np.nan
    return out


def spearman_rows(x_B: np.ndarray, Y_n_B: np.ndarray) -> np.ndarray:
    """Spearman rho of ``x`` with each row of ``Y`` (ties averaged); NaN entries of a row are left out of it."""
    Y = np.atleast_2d(np.asarray(Y_n_B, dtype=float))
    X = np.broadcast_to(np.asarray(x_B, dtype=float), Y.shape)
    mask = ~np.isnan(Y)
    ry = average_ranks(np.where(mask, Y, np.nan))
    rx = average_ranks(np.where(mask, X, np.nan))
    k = mask.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = np.nansum(rx, axis=1) / k
        my = np.nansum(ry, axis=1) / k
        dx = np.where(mask, rx - mx[:, None], 0.0)
        dy = np.where(mask, ry - my[:, None], 0.0)
        rho = (dx * dy).sum(axis=1) / np.sqrt((dx ** 2).sum(axis=1) * (dy ** 2).sum(axis=1))
    return np.where(k >= 3, rho, np.nan)


def _quintile_diff(m_n_B: np.ndarray) -> np.ndarray:
    """Unweighted mean of the last ``max(1, B // 5)`` bin means minus that of the first, per row."""
    m = np.atleast_2d(m_n_B)
    q = max(1, m.shape[1] // 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a row whose quintile bins were all undrawn: NaN
        return np.nanmean(m[:, -q:], axis=1) - np.nanmean(m[:, :q], axis=1)


def _decide(x_B: np.ndarray, mean_B: np.ndarray, reps_n_B: np.ndarray | None, *, overall_mean: float,
            n_clusters: int, n_rollouts: int | None, cluster: str, alpha: float, seed: int, n: int,
            min_clusters: int, flat_margin: float, metric: str | None, cell: str | None) -> DirectionResult:
    B = len(x_B)
    rho = float(spearman_rows(x_B, mean_B[None, :])[0]) if B >= MIN_BINS else math.nan
    base: dict[str, Any] = dict(method="bootstrap", n_bins=B, n_resamples=int(n), alpha=alpha, seed=seed,
                                metric=metric, cell=cell, n_clusters=int(n_clusters), n_rollouts=n_rollouts,
                                cluster=cluster, min_clusters=int(min_clusters), flat_margin=float(flat_margin),
                                overall_mean=float(overall_mean))
    margin = float(flat_margin) * abs(float(overall_mean)) if math.isfinite(overall_mean) else math.nan
    base["margin"] = margin
    diff = float(_quintile_diff(mean_B[None, :])[0]) if B >= 2 else math.nan
    lo = hi = p = d_lo = d_hi = math.nan
    floor = False
    if reps_n_B is not None and len(reps_n_B) and B >= MIN_BINS:
        null = spearman_rows(x_B, reps_n_B - mean_B[None, :])
        null = null[np.isfinite(null)]
        if len(null) and math.isfinite(rho):
            extreme = int(np.sum(np.abs(null) >= abs(rho) - 1e-12))
            p = (1.0 + extreme) / (len(null) + 1.0)
            floor = extreme == 0
            q_lo, q_hi = (float(v) for v in np.quantile(null, [alpha / 2, 1 - alpha / 2]))
            lo, hi = max(-1.0, rho - q_hi), min(1.0, rho - q_lo)
        d_reps = _quintile_diff(reps_n_B)
        d_reps = d_reps[np.isfinite(d_reps)]
        if len(d_reps):
            a, b = expanded_percentile_interval(d_reps[:, None], max(int(n_clusters), 1), 1.0 - 2.0 * alpha)
            d_lo, d_hi = float(a[0]), float(b[0])
    base.update(rho=rho, ci_low=lo, ci_high=hi, p_value=p, p_floor=floor, diff=diff, diff_low=d_lo, diff_high=d_hi)
    if B < MIN_BINS:
        return DirectionResult(verdict="insufficient", reason=f"a direction needs >= {MIN_BINS} bins with tokens, "
                               f"got {B} (use more --bins)", **base)
    if n_clusters < min_clusters:
        return DirectionResult(verdict="insufficient", reason=f"{n_clusters} {cluster} cluster(s) < --min-clusters "
                               f"{min_clusters}: too few independent units for a verdict", **base)
    if reps_n_B is None or not len(reps_n_B):
        return DirectionResult(verdict="insufficient", reason="no bootstrap resamples (n_boot = 0)", **base)
    if math.isfinite(p) and p < alpha:
        return DirectionResult(verdict="rises" if rho > 0 else "falls", **base)
    if math.isfinite(d_lo) and math.isfinite(margin) and margin > 0 and -margin <= d_lo and d_hi <= margin:
        return DirectionResult(verdict="flat", **base)
    why = ("no significant trend, and the last-first quintile interval "
           f"[{d_lo:+.3g}, {d_hi:+.3g}] is not within the flat margin ±{margin:.3g}")
    return DirectionResult(verdict="inconclusive", reason=why, **base)


def _check(method: str, alpha: float, flat_margin: float, min_clusters: int) -> None:
    check_direction_method(method)
    problems = []
    if not 0 < alpha < 0.5:
        problems.append(f"alpha must be in (0, 0.5), got {alpha}")
    if not flat_margin >= 0:
        problems.append(f"flat_margin must be >= 0 (a fraction of |overall mean|), got {flat_margin}")
    if int(min_clusters) < 1:
        problems.append(f"min_clusters must be >= 1, got {min_clusters}")
    if problems:
        raise ConfigError("direction test", problems)


def direction_from_stats(sums_R_B: np.ndarray, counts_R_B: np.ndarray, x_B: np.ndarray | None = None, *,
                         method: str = "bootstrap", n: int = 1000, seed: int = 0, alpha: float = 0.05,
                         metric: str | None = None, min_clusters: int = DEFAULT_MIN_CLUSTERS,
                         flat_margin: float = DEFAULT_FLAT_MARGIN, n_rollouts: int | None = None,
                         cluster: str = "prompt") -> DirectionResult:
    """Direction test from per-cluster, per-bin sums and counts (K x B); ``x_B`` defaults to the bin order.

    Rows are the resampling units: pass one row per *prompt* (sums and counts of its rollouts added up) unless
    each prompt has one rollout. ``n_rollouts`` and ``cluster`` are labels for the result. ``method`` must be
    ``"bootstrap"`` (``"permutation"`` raises ConfigError).
    """
    _check(method, alpha, flat_margin, min_clusters)
    sums_R_B, counts_R_B = np.asarray(sums_R_B, float), np.asarray(counts_R_B, float)
    tot = counts_R_B.sum(axis=0)
    keep = tot > 0
    x_B = np.arange(sums_R_B.shape[1], dtype=float) if x_B is None else np.asarray(x_B, dtype=float)
    mean_B = sums_R_B.sum(axis=0)[keep] / tot[keep]
    K = int((counts_R_B.sum(axis=1) > 0).sum())
    overall = float(sums_R_B.sum() / tot.sum()) if tot.sum() > 0 else math.nan
    reps = ratio_replicates(sums_R_B[:, keep], counts_R_B[:, keep], n, seed) if n > 0 and K > 0 else None
    return _decide(x_B[keep], mean_B, reps, overall_mean=overall, n_clusters=K, n_rollouts=n_rollouts,
                   cluster=cluster, alpha=alpha, seed=seed, n=n, min_clusters=min_clusters,
                   flat_margin=flat_margin, metric=metric, cell=None)


def direction_test(data: RolloutBins | pd.DataFrame, metric: str | None = None, *, method: str = "bootstrap",
                   n: int = 1000, seed: int = 0, alpha: float = 0.05, step: int | Literal["auto"] | None = "auto",
                   stratum: str = "all", group: str = "all", min_clusters: int = DEFAULT_MIN_CLUSTERS,
                   flat_margin: float = DEFAULT_FLAT_MARGIN) -> DirectionResult:
    """Whether ``metric`` rises, falls, stays flat, is inconclusive, or the sample is insufficient (module docs).

    Args:
        data: a :class:`~drift.stats.bins.RolloutBins` (per-cluster statistics; its ``spec.cluster`` is the unit).
        metric: which metric (optional when only one is present).
        method: ``"bootstrap"`` (the only test; ``"permutation"`` raises ConfigError naming it).
        n: resamples; seed: their seed (the RolloutBins' cached replicates of its table are reused when ``n`` and
            ``seed`` match); alpha: level of the test (intervals of rho at ``1 - alpha``, the flat equivalence at
            ``1 - 2 alpha``).
        step, stratum, group: the cell to test (default: the pooled one).
        min_clusters: fewer clusters in the cell give ``insufficient`` (default 10).
        flat_margin: equivalence margin as a fraction of the cell's |overall mean| (default 0.1).
    """
    _check(method, alpha, flat_margin, min_clusters)
    if isinstance(data, RolloutBins):
        metric = metric or (data.metrics[0] if len(data.metrics) == 1 else None)
        if metric is None:
            raise ValueError(f"pass metric=; this RolloutBins holds {list(data.metrics)}")
        cell = data.cell(step, stratum, group)
        bins, sums, counts = data.sufficient(metric, cell)
        mean_B = sums.sum(axis=0) / counts.sum(axis=0)
        overall = float(sums.sum() / counts.sum()) if counts.sum() > 0 else math.nan
        reps = data.replicates(cell, n, seed)[:, data.metric_index(metric), :][:, bins] if n > 0 else None
        return _decide(bins.astype(float), mean_B, reps, overall_mean=overall,
                       n_clusters=data.n_clusters(metric, cell), n_rollouts=data.n_rollouts(metric, cell),
                       cluster=data.cluster, alpha=alpha, seed=seed, n=n, min_clusters=min_clusters,
                       flat_margin=flat_margin, metric=metric, cell=cell.label)
    if is_dataframe(data):
        raise ValueError("a bins table has no per-cluster statistics to resample, and shuffling its bin means is "
                         "not a valid test; pass the RolloutBins from aggregate_bins(...) instead")
    raise TypeError(f"direction_test needs a RolloutBins, got {type(data).__name__}")
