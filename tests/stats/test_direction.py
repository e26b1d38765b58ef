"""Direction test: rising, falling and flat synthetic metrics get the right verdicts; nothing is assumed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from drift.stats import BinSpec, aggregate_bins, direction_from_stats, direction_test
from drift.stats.direction import spearman_rows
from drift.synthetic import synthetic_tokens

CURVES = {
    "rises": ("exponential", {"a": -0.3, "tau": 0.4, "c": 1.0}),   # saturating rise, like a cumulative quantity
    "falls": ("logistic", {"a": 0.4, "x0": 0.5, "s": 0.15, "c": 0.2}),
    "flat": ("linear", {"a": 0.5, "b": 0.0}),                      # per-token KL in the paper: flat and noisy
}


def _bins(family, params, seed, **kw):
    df = synthetic_tokens(family, params, n_rollouts=120, length_range=(20, 200), rollout_sd=0.4, token_sd=0.6,
                          seed=seed, metric="y", realistic=False)
    return aggregate_bins(df, "y", BinSpec(bins=kw.get("bins", 10), quantiles="none"))


@pytest.mark.parametrize("expected", list(CURVES))
def test_bootstrap_verdicts(expected):
    family, params = CURVES[expected]
    verdicts = []
    for seed in range(6):
        res = direction_test(_bins(family, params, seed), "y", n=400, seed=seed)
        verdicts.append(res.verdict)
        assert res.method == "bootstrap" and res.n_bins == 10 and res.ci_low <= res.ci_high
    print(f"[direction] {expected}: {verdicts}")
    assert verdicts.count(expected) >= 5, verdicts


@pytest.mark.parametrize("expected", list(CURVES))
def test_permutation_verdicts_from_a_bins_table(expected):
    family, params = CURVES[expected]
    rb = _bins(family, params, seed=42)
    table = rb.table(n_boot=0)
    res = direction_test(table, "y", method="permutation", n=2000, seed=0)
    assert res.verdict == expected
    assert res.method == "permutation"
    assert direction_test(rb, "y", method="permutation", n=2000, seed=0).rho == pytest.approx(res.rho)


def test_result_fields_and_json():
    rb = _bins(*CURVES["falls"], seed=1)
    res = direction_test(rb, "y", n=300, seed=3)
    assert res.rho == pytest.approx(spearmanr(np.arange(10), rb.table(n_boot=0)["mean"]).statistic)
    assert res.verdict == "falls" and res.ci_high < 0 and res.p_value < 0.05
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert {"rho", "ci_low", "ci_high", "p_value", "verdict", "n_bins", "method"} <= set(d)
    assert "falls" in res.report()
    assert direction_test(rb, "y", n=300, seed=3) == res  # seeded


def test_bootstrap_needs_per_rollout_statistics():
    table = _bins(*CURVES["flat"], seed=0).table(n_boot=0)
    with pytest.raises(ValueError, match="per-rollout"):
        direction_test(table, "y", method="bootstrap")


def test_direction_from_raw_sufficient_statistics(rng):
    R, B = 80, 8
    counts = rng.integers(1, 6, size=(R, B)).astype(float)
    level = np.linspace(1.0, 2.0, B)  # rises
    sums = counts * (level + rng.normal(0, 0.3, size=(R, 1)))
    assert direction_from_stats(sums, counts, n=300, seed=0).verdict == "rises"
    assert direction_from_stats(sums[:, ::-1], counts[:, ::-1], n=300, seed=0).verdict == "falls"


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")
def test_spearman_rows_matches_scipy_with_missing_bins(rng):
    x = np.arange(9.0)
    Y = rng.normal(size=(50, 9))
    Y[::7, 3] = np.nan
    Y[5, :] = 1.0  # constant row: undefined
    got = spearman_rows(x, Y)
    for i, row in enumerate(Y):
        ok = ~np.isnan(row)
        want = spearmanr(x[ok], row[ok]).statistic
        if np.isnan(want):
            assert np.isnan(got[i])
        else:
            assert got[i] == pytest.approx(want)
