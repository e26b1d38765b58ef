"""Calibration of fit intervals and model selection under clustered, correlated noise (fast tier, small).

The full table (400 replicates per cell) comes from ``python -m scripts.calibrate_fits``; these tests run fewer
replicates with a tolerance the legacy rule (full covariance with the Hartlap factor of the bootstrap draws) fails.
"""

from __future__ import annotations

import numpy as np
import pytest

from drift.synthetic_fits import clustered_bins, fit_rule, hinge_case, slope_coverage


@pytest.mark.parametrize("R,errors", [(10, "diagonal"), (20, "diagonal"), (80, "full_cov")])
def test_slope_interval_covers_the_true_slope(R, errors):
    cells = slope_coverage(R, 120, bins=20, n_boot=300, seed=7)
    new, old = cells["new"], cells["legacy"]
    print(f"[fit calibration] R={R}: slope coverage new {new.coverage:.3f} ({new.errors}), legacy {old.coverage:.3f}")
    assert new.errors == errors
    assert new.coverage >= 0.88
    if R <= 20:
        assert old.coverage < 0.85  # the legacy rule is overconfident with few clusters


def test_sixteen_rollouts_twenty_bins_is_not_overconfident():
    """The reported case: 16 clusters, 20 bins, a straight line. The legacy full covariance put the line tens of
    AIC units behind a curved family; the rule tied to R uses diagonal errors and rarely prefers a shape by > 10."""
    h = hinge_case(16, n_boot=300)
    print(f"[fit calibration] 16 clusters x 20 bins: {h}")
    assert h["legacy"]["errors"] == "cov" and h["new"]["errors"] == "diagonal"
    assert h["legacy"]["max_delta"] > 30 and h["legacy"]["frac_over_10"] >= 0.15
    assert h["new"]["max_delta"] < h["legacy"]["max_delta"] / 2 and h["new"]["frac_over_10"] <= 0.1
    assert h["new"]["median_delta"] < 2


def test_few_clusters_give_no_selection():
    data = clustered_bins(4, 8, seed=np.random.default_rng(3))
    sel = fit_rule(data, "new", models=("linear", "hinge"), n_boot=200)
    assert sel.best_name is None and sel.reason == "insufficient: R=4 < 10 clusters"
    assert sel.results["linear"].converged  # still fitted and reported
