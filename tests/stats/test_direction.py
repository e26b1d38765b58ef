"""Direction test: rising, falling and flat synthetic metrics get the right verdicts; nothing is assumed, and small
samples are called insufficient."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from drift.errors import ConfigError
from drift.stats import BinSpec, aggregate_bins, direction_from_stats, direction_test
from drift.stats.direction import VERDICTS, format_p, spearman_rows
from drift.synthetic import synthetic_tokens

CURVES = {
    "rises": ("exponential", {"a": -0.3, "tau": 0.4, "c": 1.0}),   # saturating rise, like a cumulative quantity
    "falls": ("logistic", {"a": 0.4, "x0": 0.5, "s": 0.15, "c": 0.2}),
    "flat": ("linear", {"a": 0.5, "b": 0.0}),                      # per-token KL in the paper: flat and noisy
}


def _bins(family, params, seed, n_rollouts=120, **kw):
    df = synthetic_tokens(family, params, n_rollouts=n_rollouts, length_range=(20, 200), rollout_sd=0.4,
                          token_sd=0.6, seed=seed, metric="y", realistic=False)  # 4 rollouts per prompt: 30 prompts
    return aggregate_bins(df, "y", BinSpec(bins=kw.get("bins", 10), quantiles="none"))


@pytest.mark.parametrize("expected", list(CURVES))
def test_bootstrap_verdicts(expected):
    family, params = CURVES[expected]
    verdicts = []
    for seed in range(6):
        res = direction_test(_bins(family, params, seed), "y", n=400, seed=seed)
        verdicts.append(res.verdict)
        assert res.method == "bootstrap" and res.n_bins == 10 and res.ci_low <= res.ci_high
        assert res.n_clusters == 30 and res.n_rollouts == 120 and res.cluster == "prompt"
    print(f"[direction] {expected}: {verdicts}")
    if expected == "flat":  # equivalence needs power: flat or inconclusive, never a direction
        assert verdicts.count("flat") >= 3 and verdicts.count("rises") + verdicts.count("falls") <= 1, verdicts
    else:
        assert verdicts.count(expected) >= 5, verdicts


def test_permutation_was_removed_with_a_typed_error_naming_the_replacement():
    rb = _bins(*CURVES["flat"], seed=42)
    for call in (lambda: direction_test(rb, "y", method="permutation"),
                 lambda: direction_from_stats(np.ones((12, 4)), np.ones((12, 4)), method="permutation")):
        with pytest.raises(ConfigError, match="method='bootstrap'") as err:
            call()
        assert "removed" in str(err.value)
    with pytest.raises(ValueError, match="RolloutBins"):
        direction_test(rb.table(n_boot=0), "y")


def test_few_clusters_or_bins_are_insufficient_never_certain():
    one = _bins(*CURVES["falls"], seed=0, n_rollouts=1)
    res = direction_test(one, "y", n=200)
    assert res.verdict == "insufficient" and res.n_clusters == 1 and "min-clusters" in res.reason
    assert not res.sufficient and "insufficient" in res.report()
    few = _bins(*CURVES["falls"], seed=0, n_rollouts=36)  # 9 prompts
    assert direction_test(few, "y", n=200).verdict == "insufficient"
    assert direction_test(few, "y", n=200, min_clusters=5).verdict == "falls"
    single = aggregate_bins(synthetic_tokens("linear", {"a": 0.5, "b": 0.0}, n_rollouts=80, seed=1, metric="y",
                                             realistic=False), "y", BinSpec(bins=1))
    res = direction_test(single, "y", n=200)
    assert res.verdict == "insufficient" and ">= 3 bins" in res.reason  # --bins 1 is never "flat"


def test_flat_needs_equivalence_within_the_margin():
    rb = _bins(*CURVES["flat"], seed=3, n_rollouts=400)
    assert direction_test(rb, "y", n=400, seed=0).verdict == "flat"
    res = direction_test(rb, "y", n=400, seed=0, flat_margin=0.0)  # no margin: equivalence cannot hold
    assert res.verdict == "inconclusive" and "margin" in res.reason
    assert res.diff_low <= res.diff <= res.diff_high and res.margin == 0.0
    assert set(VERDICTS) == {"rises", "falls", "flat", "inconclusive", "insufficient"}


def test_p_values_below_resolution_print_as_a_bound():
    rb = _bins(*CURVES["falls"], seed=1)
    res = direction_test(rb, "y", n=500, seed=0)
    assert res.p_floor and res.p_value == pytest.approx(1 / 501)
    assert "p < 0.002" in res.report() and "p=0" not in res.report()
    assert format_p(0.0123, 1000, False) == "p=0.0123" and format_p(1 / 1001, 1000, True) == "p < 0.001"


def test_result_fields_and_json():
    rb = _bins(*CURVES["falls"], seed=1)
    res = direction_test(rb, "y", n=300, seed=3)
    assert res.rho == pytest.approx(spearmanr(np.arange(10), rb.table(n_boot=0)["mean"]).statistic)
    assert res.verdict == "falls" and res.ci_high < 0 and res.p_value < 0.05
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert {"rho", "ci_low", "ci_high", "p_value", "p_text", "verdict", "n_bins", "method", "n_clusters",
            "n_rollouts", "cluster", "interval", "diff", "margin"} <= set(d)
    assert d["interval"] == "null-centred"
    assert "falls" in res.report()
    assert direction_test(rb, "y", n=300, seed=3) == res  # seeded


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
