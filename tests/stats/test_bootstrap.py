"""The cluster bootstrap from sufficient statistics against a naive loop that resamples rollouts."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from drift.stats import BinSpec, aggregate_bins, cluster_bootstrap_ratio, ratio_replicates, resample_counts
from drift.stats.bootstrap import percentile_interval
from drift.synthetic import synthetic_tokens


def naive_replicates(sums_R_B: np.ndarray, counts_R_B: np.ndarray, n_boot: int, rng: np.random.Generator):
    """The documented protocol, written as a plain loop: draw R rollout indices per replicate, add up, divide."""
    R = sums_R_B.shape[0]
    out = []
    for _ in range(n_boot):
        idx = rng.integers(0, R, size=R)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(sums_R_B[idx].sum(axis=0) / counts_R_B[idx].sum(axis=0))
    return np.array(out)


@pytest.fixture
def stats(rng):
    R, B = 37, 6
    counts = rng.integers(0, 5, size=(R, B)).astype(float)
    counts[:, 5] = 0
    counts[3, 5] = 2  # one rollout only in the last bin: often absent from a resample
    sums = counts * rng.normal(1.0, 0.5, size=(R, 1)) + rng.normal(0, 0.3, size=(R, B)) * counts
    return sums, counts


@pytest.mark.parametrize("block_elements", [10, 37 * 7, 10_000_000])
def test_replicates_equal_naive_loop_for_any_block_size(stats, block_elements):
    sums, counts = stats
    fast = ratio_replicates(sums, counts, 200, 5, block_elements=block_elements)
    slow = naive_replicates(sums, counts, 200, np.random.default_rng(5))
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=0)
    assert np.isnan(fast[:, 5]).any()  # the rare bin is missing from some resamples: NaN, not 0


def test_estimate_interval_and_se(stats):
    sums, counts = stats
    res = cluster_bootstrap_ratio(sums, counts, n_boot=400, ci=0.9, seed=2, return_replicates=True)
    np.testing.assert_allclose(res.estimate, sums.sum(0) / counts.sum(0))
    slow = naive_replicates(sums, counts, 400, np.random.default_rng(2))
    for b in range(6):
        col = slow[:, b][~np.isnan(slow[:, b])]
        np.testing.assert_allclose([res.ci_low[b], res.ci_high[b]], np.quantile(col, [0.05, 0.95]))
        np.testing.assert_allclose(res.se[b], col.std(ddof=1), atol=1e-12)
    assert res.replicates.shape == (400, 6)
    with pytest.raises(ValueError):
        res.estimate[0] = 1.0  # read-only


def test_seeded_determinism(stats):
    sums, counts = stats
    a = cluster_bootstrap_ratio(sums, counts, 100, seed=1)
    b = cluster_bootstrap_ratio(sums, counts, 100, seed=1)
    c = cluster_bootstrap_ratio(sums, counts, 100, seed=2)
    np.testing.assert_array_equal(a.ci_low, b.ci_low)
    assert not np.array_equal(a.ci_low, c.ci_low)


def test_resample_counts_rows_sum_to_n_rollouts():
    blocks = list(resample_counts(50, 23, seed=0, block_elements=200))
    assert [len(b) for b in blocks] == [4, 4, 4, 4, 4, 3]
    for b in blocks:
        np.testing.assert_array_equal(b.sum(axis=1), 50)


def test_zero_resamples_and_empty_columns():
    res = cluster_bootstrap_ratio(np.ones((4, 2)), np.array([[1.0, 0]] * 4), n_boot=0)
    assert res.estimate[0] == 1.0 and np.isnan(res.estimate[1]) and np.isnan(res.ci_low).all()
    lo, hi = percentile_interval(np.full((5, 2), np.nan))
    assert np.isnan(lo).all() and np.isnan(hi).all()


def test_bootstrap_se_matches_the_sampling_se_of_a_cluster_mean(rng):
    # R iid rollouts with a random intercept: the SE of the pooled mean is about sd(rollout means) / sqrt(R).
    R, T = 400, 10
    u = rng.normal(0, 1.0, size=R)
    counts = np.full((R, 1), float(T))
    sums = (u[:, None] + rng.normal(0, 0.5, size=(R, T))).sum(axis=1, keepdims=True)
    res = cluster_bootstrap_ratio(sums, counts, n_boot=1000, seed=0)
    want = (sums[:, 0] / T).std(ddof=1) / np.sqrt(R)
    assert res.se[0] == pytest.approx(want, rel=0.15)
    # resampling tokens instead would ignore the intercept and be ~3x too narrow
    assert res.se[0] > 2 * 0.5 / np.sqrt(R * T) * 1.0


def test_bin_table_replicates_follow_the_documented_seed(rng):
    df = synthetic_tokens("linear", {"a": 1.0, "b": -0.5}, n_rollouts=30, length_range=(5, 40), seed=4)
    rb = aggregate_bins(df, "kl_reverse", BinSpec(bins=4))
    cell = rb.headline
    bins, sums, counts = rb.sufficient("kl_reverse", cell)
    seq = np.random.SeedSequence([9, zlib.crc32(cell.label.encode())])
    want = naive_replicates(sums, counts, 50, np.random.default_rng(seq))
    np.testing.assert_allclose(rb.replicates(cell, 50, 9)[:, 0, bins], want, rtol=1e-12)
