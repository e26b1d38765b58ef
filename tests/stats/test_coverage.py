"""Coverage: over repeated synthetic datasets, the 95% rollout-bootstrap interval covers the true bin mean ~95%.

The truth is the population value of the pooled bin mean (``drift.synthetic.true_bin_means``); the data carry a
rollout-level random offset, so a token-level bootstrap would under-cover badly (checked too).
"""

from __future__ import annotations

import numpy as np
import pytest

from drift.stats import BinSpec, aggregate_bins, cluster_bootstrap_ratio
from drift.synthetic import synthetic_tokens, true_bin_means

FAMILY, PARAMS = "exponential", {"a": 1.0, "tau": 0.25, "c": 0.2}
LENGTHS = (10, 60)


def _sufficient(df, B: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-rollout, per-bin sums and counts with numpy (rollouts are contiguous in synthetic data)."""
    r = np.cumsum(df["position"].to_numpy() == 0) - 1
    b = np.minimum(np.floor(df["rel_position"].to_numpy() * B), B - 1).astype(int)
    R = int(r[-1]) + 1
    idx = r * B + b
    sums = np.bincount(idx, weights=df["y"].to_numpy(), minlength=R * B).reshape(R, B)
    counts = np.bincount(idx, minlength=R * B).reshape(R, B).astype(float)
    return sums, counts


def _simulate(n_sims: int, n_boot: int, B: int, R: int, seed0: int, n_token_sims: int = 40) -> tuple[float, float]:
    truth = true_bin_means(FAMILY, PARAMS, BinSpec(bins=B), length_range=LENGTHS)
    hits = token_hits = total = 0
    for i in range(n_sims):
        df = synthetic_tokens(FAMILY, PARAMS, n_rollouts=R, length_range=LENGTHS, rollout_sd=0.3, token_sd=0.5,
                              seed=seed0 + i, metric="y", realistic=False)
        sums, counts = _sufficient(df, B)
        res = cluster_bootstrap_ratio(sums, counts, n_boot=n_boot, ci=0.95, seed=i)
        hits += int(np.sum((res.ci_low <= truth) & (truth <= res.ci_high)))
        total += B
        if i < n_token_sims:  # the wrong unit, for comparison: every token its own cluster
            onehot_N_B = np.minimum(np.floor(df["rel_position"].to_numpy() * B), B - 1)[:, None] == np.arange(B)
            tok = cluster_bootstrap_ratio(df["y"].to_numpy()[:, None] * onehot_N_B, onehot_N_B.astype(float),
                                          n_boot=n_boot, seed=i)
            token_hits += int(np.sum((tok.ci_low <= truth) & (truth <= tok.ci_high)))
    return hits / total, token_hits / (B * min(n_sims, n_token_sims))


def test_bootstrap_interval_covers_true_bin_mean_about_95_percent():
    rate, token_rate = _simulate(n_sims=200, n_boot=200, B=5, R=100, seed0=10_000)
    print(f"[coverage] rollout bootstrap: {rate:.3f} of 1000 nominal-95% intervals cover the true bin mean; "
          f"token bootstrap (40 datasets): {token_rate:.3f}")
    assert 0.90 <= rate <= 0.98
    assert token_rate < 0.86  # resampling tokens ignores the rollout effect: clearly below nominal


@pytest.mark.slow
def test_coverage_end_to_end_through_duckdb_bins():
    """The full path (DuckDB aggregation, per-cell seeds, 1000 resamples), relative and absolute bins."""
    results = {}
    for spec, x in ((BinSpec(by="rel", bins=10), "rel"), (BinSpec(by="abs", width=15, max_position=60), "abs")):
        truth = true_bin_means(FAMILY, {"a": 1.0, "tau": 15.0, "c": 0.2} if x == "abs" else PARAMS, spec,
                               length_range=LENGTHS, x=x)
        hits = total = 0
        for i in range(300):
            df = synthetic_tokens(FAMILY, {"a": 1.0, "tau": 15.0, "c": 0.2} if x == "abs" else PARAMS,
                                  n_rollouts=100, length_range=LENGTHS, rollout_sd=0.3, token_sd=0.5, x=x,
                                  seed=20_000 + i, metric="y", realistic=False)
            t = aggregate_bins(df, "y", spec).table(n_boot=1000, seed=i)
            covered = (t["ci_low"].to_numpy() <= truth[t["bin"]]) & (truth[t["bin"]] <= t["ci_high"].to_numpy())
            hits += int(covered.sum())
            total += len(t)
        results[spec.by] = hits / total
    print(f"[coverage, slow] rollout bootstrap through bin_metric: {results}")
    for rate in results.values():
        assert 0.92 <= rate <= 0.975
