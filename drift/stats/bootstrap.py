"""Cluster bootstrap of ratio estimates from per-cluster sufficient statistics.

Tokens of one rollout share its prompt, its length and every earlier token, and rollouts of one prompt share the
prompt's difficulty, so neither tokens nor (with several samples per prompt) rollouts are independent: the unit of
resampling is the *cluster*, by default the prompt (:func:`drift.schema.cluster_key_columns`), never the token. A bin
mean is a ratio of sums, and sums and counts are additive over the rollouts of a cluster,

    mean_b = sum_k s_kb / sum_k n_kb      (s_kb = sum of the metric over cluster k's tokens in bin b, n_kb = count)

so a bootstrap replicate only needs how many times each cluster was drawn: with counts w_k (K clusters drawn with
replacement, sum_k w_k = K) the replicate is ``(w @ s) / (w @ n)``. Working from the K x B sufficient statistics
makes 1000 resamples cheap, and drawing them in blocks keeps memory at ``block x K`` instead of ``n_boot x K``.

Random-number protocol (so results are reproducible and independent of the block size): one
``numpy.random.default_rng(seed)`` draws, for each replicate in order, ``rng.integers(0, K, size=K)``: the indices
of the clusters in that resample. A naive loop that does the same reproduces every replicate exactly.

Intervals. :func:`percentile_interval` is the plain percentile interval; :func:`expanded_percentile_interval`
(the default of bin tables) widens it for few clusters (Hesterberg 2015): the percentile interval at level
``1 - alpha'`` with ``z_{1 - alpha'/2} = sqrt(K / (K - 1)) * t_{K-1, 1 - alpha/2}``, which corrects the bootstrap's
``(K - 1) / K`` variance and the normal-vs-t tails at small K and tends to the percentile interval as K grows.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = [
    "INTERVAL_METHODS",
    "BootstrapResult",
    "cluster_bootstrap_ratio",
    "expanded_level",
    "expanded_percentile_interval",
    "percentile_interval",
    "ratio_replicates",
    "resample_counts",
]

#: Interval methods of bin means: ``expanded`` (default, see the module docstring) or plain ``percentile``.
INTERVAL_METHODS: tuple[str, ...] = ("expanded", "percentile")

# Elements of the block x R resample-count matrix held at once (8 bytes each: 32 MiB).
DEFAULT_BLOCK_ELEMENTS = 4_000_000
_COUNT_ELEMENTS = 65_536  # resample counts tallied per bincount call (a cache-sized slice of the block)


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def resample_counts(n_clusters: int, n_boot: int, seed: int | np.random.Generator = 0, *,
                    block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> Iterator[np.ndarray]:
    """Yield blocks ``counts_b_K`` (float64): how often each of ``n_clusters`` clusters is drawn in each replicate.

    Replicate ``i`` draws ``rng.integers(0, K, size=K)`` (see the module docstring); blocks hold
    ``max(1, block_elements // K)`` replicates, so memory stays bounded for 100k+ clusters. (The first argument was
    called ``n_rollouts`` before clusters became prompts; it is positional in every caller.)
    """
    R = int(n_clusters)
    if R < 1:
        raise ValueError(f"n_clusters must be >= 1 to bootstrap, got {R}")
    rng = _rng(seed)
    block = max(1, int(block_elements) // R)
    done = 0
    while done < n_boot:
        b = min(block, n_boot - done)
        # one call for the block draws the same numbers as b calls of size R (the generator fills in order), and
        # int32 the same as int64 (both draw bounded 32-bit integers below 2**32), at half the memory traffic
        idx_b_R = rng.integers(0, R, size=(b, R), dtype=np.int32 if R < 2 ** 31 - _COUNT_ELEMENTS else np.int64)
        counts = np.empty((b, R))
        rows = max(1, _COUNT_ELEMENTS // R)  # counted a few rows at a time: the counters stay in cache
        for s in range(0, b, rows):
            e = min(b, s + rows)
            offsets = (np.arange(e - s, dtype=idx_b_R.dtype) * R)[:, None]
            counts[s:e] = np.bincount((idx_b_R[s:e] + offsets).ravel(), minlength=(e - s) * R).reshape(e - s, R)
        yield counts
        done += b


def ratio_replicates(sums_R_B: np.ndarray, counts_R_B: np.ndarray, n_boot: int,
                     seed: int | np.random.Generator = 0, *,
                     block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> np.ndarray:
    """Bootstrap replicates ``reps_b_B`` of the ratio ``sum_k sums / sum_k counts`` per column, clusters (rows)
    resampled.

    Columns with no count in a replicate are NaN (the bin was not drawn). ``sums_R_B`` may hold several metrics
    side by side (K x (M*B)): all columns share the same resampled clusters.
    """
    sums_R_B = np.asarray(sums_R_B, dtype=np.float64)
    counts_R_B = np.asarray(counts_R_B, dtype=np.float64)
    if sums_R_B.shape != counts_R_B.shape or sums_R_B.ndim != 2:
        raise ValueError(f"sums and counts must be 2-D arrays of one shape, got {sums_R_B.shape} and "
                         f"{counts_R_B.shape}")
    R, B = sums_R_B.shape
    out = np.empty((n_boot, B))
    start = 0
    with np.errstate(invalid="ignore", divide="ignore"):
        for w_b_R in resample_counts(R, n_boot, seed, block_elements=block_elements):
            num = w_b_R @ sums_R_B
            den = w_b_R @ counts_R_B
            out[start:start + len(w_b_R)] = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
            start += len(w_b_R)
    return out


def percentile_interval(reps_b_B: np.ndarray, ci: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval ``(q_{(1-ci)/2}, q_{(1+ci)/2})`` per column, ignoring NaN replicates."""
    reps = np.asarray(reps_b_B, dtype=np.float64)
    if reps.shape[0] == 0:
        nan = np.full(reps.shape[1:], np.nan)
        return nan, nan.copy()
    lo_q, hi_q = (1.0 - ci) / 2.0, (1.0 + ci) / 2.0
    all_nan = np.all(np.isnan(reps), axis=0)
    safe = np.where(all_nan[None, :], 0.0, reps)
    lo, hi = np.nanquantile(safe, [lo_q, hi_q], axis=0)  # default linear interpolation between order stats
    lo[all_nan] = np.nan
    hi[all_nan] = np.nan
    return lo, hi


def expanded_level(ci: float, n_clusters: int) -> float:
    """Percentile level ``1 - alpha'`` of the expanded percentile interval for K clusters.

    ``z_{1 - alpha'/2} = sqrt(K / (K - 1)) * t_{K-1, 1 - alpha/2}`` with ``alpha = 1 - ci``; K < 2 gives ``ci``
    (nothing to expand: such an interval is degenerate anyway, and callers report it as insufficient).
    """
    # scipy.stats.t.ppf is special.stdtrit(df, p) and norm.sf(z) is special.ndtr(-z): the same numbers without
    # importing scipy.stats (over a second at start-up)
    from scipy import special

    K = int(n_clusters)
    if K < 2:
        return float(ci)
    z = math.sqrt(K / (K - 1)) * float(special.stdtrit(K - 1, (1.0 + ci) / 2.0))
    return float(1.0 - 2.0 * special.ndtr(-z))


def expanded_percentile_interval(reps_b_B: np.ndarray, n_clusters: int | np.ndarray,
                                 ci: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Expanded percentile interval per column (see the module docstring); ``n_clusters`` per column or one K.

    With a per-column K (clusters that have tokens in the bin), each column gets its own level.
    """
    reps = np.asarray(reps_b_B, dtype=np.float64)
    K = np.broadcast_to(np.asarray(n_clusters, dtype=np.int64), reps.shape[1:])
    lo = np.full(reps.shape[1:], np.nan)
    hi = np.full(reps.shape[1:], np.nan)
    for k in np.unique(K):
        cols = k == K
        lo[cols], hi[cols] = percentile_interval(reps[:, cols], expanded_level(ci, int(k)))
    return lo, hi


@dataclass(frozen=True)
class BootstrapResult:
    """Ratio estimates with cluster-bootstrap intervals (arrays are read-only).

    Attributes:
        estimate: ``sum_k sums / sum_k counts`` per column (NaN where the count is 0).
        ci_low, ci_high: interval at level ``ci`` (``interval`` says which kind).
        se: standard deviation of the replicates (bootstrap standard error).
        n_boot, ci, seed: how it was computed.
        replicates: the ``n_boot x B`` replicates when requested, else None.
        interval: ``"percentile"`` or ``"expanded"``; n_clusters: K, the rows resampled.
    """

    estimate: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    se: np.ndarray
    n_boot: int
    ci: float
    seed: int | None
    replicates: np.ndarray | None = None
    interval: str = "percentile"
    n_clusters: int = 0


def _readonly(a: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return None
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


def cluster_bootstrap_ratio(sums_R_B: np.ndarray, counts_R_B: np.ndarray, n_boot: int = 1000, ci: float = 0.95,
                            seed: int = 0, *, return_replicates: bool = False,
                            block_elements: int = DEFAULT_BLOCK_ELEMENTS,
                            interval: str = "percentile") -> BootstrapResult:
    """Cluster bootstrap of per-column ratios of sums: resample clusters (rows), not tokens.

    Args:
        sums_R_B: per-cluster, per-bin sum of the metric (K clusters x B bins); 0 where a cluster has no token.
            A cluster is a prompt (all its rollouts added up) or, with one sample per prompt, a rollout.
        counts_R_B: per-cluster, per-bin token counts (same shape). Any weights work (e.g. correct/attempted for a
            continuation-probe accuracy).
        n_boot: number of resamples (0: point estimates only, intervals NaN).
        ci: interval level, e.g. 0.95.
        seed: seed of ``numpy.random.default_rng``; same seed, same intervals.
        return_replicates: keep the ``n_boot x B`` replicate matrix (for covariances, direction tests).
        block_elements: memory knob, resample-count elements held at once (results do not depend on it).
        interval: ``"percentile"`` (default here, for backward compatibility) or ``"expanded"`` (small-K
            correction; each column uses K = the clusters with a count in it).

    Returns:
        :class:`BootstrapResult` with the point estimate, interval and bootstrap SE per column.
    """
    if interval not in INTERVAL_METHODS:
        raise ValueError(f"interval must be one of {INTERVAL_METHODS}, got {interval!r}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    sums_R_B = np.asarray(sums_R_B, dtype=np.float64)
    counts_R_B = np.asarray(counts_R_B, dtype=np.float64)
    tot_n = counts_R_B.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        est = np.where(tot_n > 0, sums_R_B.sum(axis=0) / np.where(tot_n > 0, tot_n, 1.0), np.nan)
    if n_boot == 0 or sums_R_B.shape[0] == 0:
        nan = np.full(est.shape, np.nan)
        return BootstrapResult(_readonly(est), _readonly(nan), _readonly(nan), _readonly(nan), n_boot, ci, seed,
                               None, interval, int(sums_R_B.shape[0]))
    reps = ratio_replicates(sums_R_B, counts_R_B, n_boot, seed, block_elements=block_elements)
    if interval == "expanded":
        lo, hi = expanded_percentile_interval(reps, (counts_R_B > 0).sum(axis=0), ci)
    else:
        lo, hi = percentile_interval(reps, ci)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, as intended
        se = np.nanstd(reps, axis=0, ddof=1) if n_boot > 1 else np.full(est.shape, np.nan)
    return BootstrapResult(_readonly(est), _readonly(lo), _readonly(hi), _readonly(se), n_boot, ci, seed,
                           _readonly(reps) if return_replicates else None, interval, int(sums_R_B.shape[0]))
