"""Fast calibration checks (small replicate counts; the full table comes from scripts/calibrate_stats.py).

Each tolerance passes for the current methods and fails for the ones they replaced: the rollout-unit percentile
interval under intra-prompt correlation, and the bin-mean permutation direction test under dependent noise.
"""

from __future__ import annotations

import numpy as np
import pytest

from drift.stats.bootstrap import expanded_level
from drift.synthetic import clustered_bin_stats
from scripts.calibrate_stats import coverage_cell, false_call_cell, insufficient_cell


def test_prompt_cluster_intervals_cover_under_intra_prompt_correlation():
    cov = coverage_cell(0.5, 4, reps=60, n_prompts=30, n_boot=300, seed0=1)
    print(f"[calibration] coverage, corr 0.5 x 4 rollouts: {cov}")
    assert cov["prompt"] >= 0.90
    assert cov["rollout-pct"] < 0.88  # the old unit: too narrow when rollouts of a prompt are correlated


def test_intervals_cover_with_one_rollout_per_prompt_and_no_correlation():
    cov = coverage_cell(0.0, 1, reps=40, n_prompts=30, n_boot=300, seed0=2)
    assert cov["prompt"] >= 0.90  # with one rollout per prompt the units coincide


@pytest.mark.parametrize("noise", ["ar", "walk"])
def test_direction_false_calls_stay_near_nominal_under_dependent_noise(noise):
    r = false_call_cell(noise, reps=60, n_boot=300, seed0=3)
    print(f"[calibration] {noise}: {r}")
    assert r["false_calls"] <= 0.12  # nominal 0.05; 60 replicates
    assert r["old_permutation"] >= 0.25  # the removed test called directions in noise


def test_iid_flat_metric_is_called_flat():
    r = false_call_cell("iid", reps=40, n_boot=300, seed0=4, old=False)
    assert r["false_calls"] <= 0.12 and r["flat"] >= 0.8


def test_below_min_clusters_the_outcome_is_insufficient():
    assert insufficient_cell(1, reps=10) == 1.0
    assert insufficient_cell(9, reps=10) == 1.0


def test_expanded_level_widens_for_few_clusters_and_vanishes_for_many():
    assert expanded_level(0.95, 10) > 0.98
    assert expanded_level(0.95, 10_000) == pytest.approx(0.95, abs=1e-3)
    assert expanded_level(0.95, 1) == 0.95


def test_generator_noise_kinds_and_truth():
    d = clustered_bin_stats(12, 3, 5, noise="walk", seed=0)
    assert d["sums"].shape == (12, 5) and d["rollout_sums"].shape == (36, 5)
    np.testing.assert_allclose(d["sums"].sum(0), d["rollout_sums"].sum(0))
    np.testing.assert_allclose(d["truth"], 1.0)  # flat default curve
    with pytest.raises(ValueError, match="noise"):
        clustered_bin_stats(3, 1, 5, noise="pink")
