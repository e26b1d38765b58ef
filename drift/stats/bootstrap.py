"""Rollout-level (cluster) bootstrap of ratio estimates from per-rollout sufficient statistics.

Tokens of one rollout share its prompt, its length and every earlier token, so they are not independent: the
unit of resampling is the *rollout*, never the token. A bin mean is a ratio of sums over rollouts,

    mean_b = sum_r s_rb / sum_r n_rb          (s = sum of the metric over the rollout's tokens in bin b, n = count)

so a bootstrap replicate only needs how many times each rollout was drawn: with counts w_r (rollouts drawn with
replacement, sum_r w_r = R) the replicate is ``(w @ s) / (w @ n)``. Working from the R x B sufficient statistics
makes 1000 resamples cheap, and drawing them in blocks keeps memory at ``block x R`` instead of ``n_boot x R``.

Random-number protocol (so results are reproducible and independent of the block size): one
``numpy.random.default_rng(seed)`` draws, for each replicate in order, ``rng.integers(0, R, size=R)``: the indices
of the rollouts in that resample. A naive loop that does the same reproduces every replicate exactly.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BootstrapResult",
    "cluster_bootstrap_ratio",
    "percentile_interval",
    "ratio_replicates",
    "resample_counts",
]

# Elements of the block x R resample-count matrix held at once (8 bytes each: 32 MiB).
DEFAULT_BLOCK_ELEMENTS = 4_000_000


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def resample_counts(n_rollouts: int, n_boot: int, seed: int | np.random.Generator = 0, *,
                    block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> Iterator[np.ndarray]:
    """Yield blocks ``counts_b_R`` (float64): how often each of ``n_rollouts`` rollouts is drawn in each replicate.

    Replicate ``i`` draws ``rng.integers(0, R, size=R)`` (see the module docstring); blocks hold
    ``max(1, block_elements // R)`` replicates, so memory stays bounded for 100k+ rollouts.
    """
    R = int(n_rollouts)
    if R < 1:
        raise ValueError(f"n_rollouts must be >= 1 to bootstrap, got {R}")
    rng = _rng(seed)
    block = max(1, int(block_elements) // R)
    done = 0
    while done < n_boot:
        b = min(block, n_boot - done)
        idx_b_R = np.stack([rng.integers(0, R, size=R) for _ in range(b)])
        offsets = (np.arange(b) * R)[:, None]
        counts = np.bincount((idx_b_R + offsets).ravel(), minlength=b * R).reshape(b, R)
        yield counts.astype(np.float64)
        done += b


def ratio_replicates(sums_R_B: np.ndarray, counts_R_B: np.ndarray, n_boot: int,
                     seed: int | np.random.Generator = 0, *,
                     block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> np.ndarray:
    """Bootstrap replicates ``reps_b_B`` of the ratio ``sum_r sums / sum_r counts`` per column, rollouts resampled.

    Columns with no count in a replicate are NaN (the bin was not drawn). ``sums_R_B`` may hold several metrics
    side by side (R x (M*B)): all columns share the same resampled rollouts.
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


@dataclass(frozen=True)
class BootstrapResult:
    """Ratio estimates with rollout-level percentile intervals (arrays are read-only).

    Attributes:
        estimate: ``sum_r sums / sum_r counts`` per column (NaN where the count is 0).
        ci_low, ci_high: percentile interval at level ``ci``.
        se: standard deviation of the replicates (bootstrap standard error).
        n_boot, ci, seed: how it was computed.
        replicates: the ``n_boot x B`` replicates when requested, else None.
    """

    estimate: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    se: np.ndarray
    n_boot: int
    ci: float
    seed: int | None
    replicates: np.ndarray | None = None


def _readonly(a: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return None
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


def cluster_bootstrap_ratio(sums_R_B: np.ndarray, counts_R_B: np.ndarray, n_boot: int = 1000, ci: float = 0.95,
                            seed: int = 0, *, return_replicates: bool = False,
                            block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> BootstrapResult:
    """Cluster bootstrap of per-column ratios of sums: resample rollouts (rows), not tokens.

    Args:
        sums_R_B: per-rollout, per-bin sum of the metric (R rollouts x B bins); 0 where a rollout has no token.
        counts_R_B: per-rollout, per-bin token counts (same shape). Any weights work (e.g. correct/attempted for a
            continuation-probe accuracy).
        n_boot: number of resamples (0: point estimates only, intervals NaN).
        ci: interval level, e.g. 0.95.
        seed: seed of ``numpy.random.default_rng``; same seed, same intervals.
        return_replicates: keep the ``n_boot x B`` replicate matrix (for covariances, direction tests).
        block_elements: memory knob, resample-count elements held at once (results do not depend on it).

    Returns:
        :class:`BootstrapResult` with the point estimate, percentile interval and bootstrap SE per column.
    """
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
                               None)
    reps = ratio_replicates(sums_R_B, counts_R_B, n_boot, seed, block_elements=block_elements)
    lo, hi = percentile_interval(reps, ci)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, as intended
        se = np.nanstd(reps, axis=0, ddof=1) if n_boot > 1 else np.full(est.shape, np.nan)
    return BootstrapResult(_readonly(est), _readonly(lo), _readonly(hi), _readonly(se), n_boot, ci, seed,
                           _readonly(reps) if return_replicates else None)
