"""Decay fits: recovery of known curves from per-token data, model selection, errors and result objects."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from drift.curves import PARAM_NAMES, evaluate_curve
from drift.errors import ConvergenceError
from drift.stats import MODELS, BinSpec, aggregate_bins, fit_all, fit_bins, fit_model, get_model, half_point
from drift.synthetic import synthetic_tokens

# family -> (true params, curve abscissa, bins, length range). Power laws live at small x: log-spaced token bins.
CASES = {
    "exponential": ({"a": 1.0, "tau": 0.2, "c": 0.3}, "rel", BinSpec(by="rel", bins=20), (100, 400)),
    "power": ({"a": 1.5, "b": 0.6, "c": 0.1}, "abs", BinSpec(by="abs_log", bins=20), (100, 1000)),
    "logistic": ({"a": 0.8, "x0": 0.5, "s": 0.08, "c": 0.2}, "rel", BinSpec(by="rel", bins=20), (100, 400)),
}
SEEDS = range(20)


@pytest.fixture(scope="module")
def recovery() -> dict[str, list[tuple[bool, str]]]:
    """Per family and seed: (every true parameter inside its 95% interval, family selected by AIC)."""
    out: dict[str, list[tuple[bool, str]]] = {}
    for family, (params, x, spec, lengths) in CASES.items():
        rows = []
        for seed in SEEDS:
            df = synthetic_tokens(family, params, n_rollouts=200, length_range=lengths, rollout_sd=0.3,
                                  token_sd=0.5, x=x, seed=seed, metric="y", realistic=False)
            rb = aggregate_bins(df, "y", spec)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sel = fit_bins(rb, "y", n_boot=400, seed=seed)
            r = sel.results[family]
            inside = r.converged and all(r.ci_low[k] <= v <= r.ci_high[k] for k, v in params.items())
            rows.append((inside, str(sel.best_name)))
        out[family] = rows
        rate = np.mean([i for i, _ in rows])
        pick = np.mean([b == family for _, b in rows])
        print(f"[recovery] {family}: all params inside 95% CI in {rate:.0%} of seeds, AIC picks {family} "
              f"in {pick:.0%} (picked {[b for _, b in rows]})")
    return out


@pytest.mark.parametrize("family", list(CASES))
def test_true_parameters_inside_intervals_for_most_seeds(recovery, family):
    inside = [i for i, _ in recovery[family]]
    assert sum(inside) > len(inside) / 2, recovery[family]


@pytest.mark.parametrize("family", list(CASES))
def test_aic_picks_the_generating_family_for_most_seeds(recovery, family):
    picked = [b for _, b in recovery[family]]
    assert picked.count(family) > len(picked) / 2, picked


def test_models_are_declared_like_the_curves():
    assert set(MODELS) == set(PARAM_NAMES)
    x = np.linspace(0.05, 0.95, 19)
    for name, model in MODELS.items():
        assert model.param_names == PARAM_NAMES[name]
        assert model.name == name and get_model(name) is model
        g = model.guess(x, np.exp(-x))
        assert set(g) == set(model.param_names) and all(np.isfinite(list(g.values())))
        np.testing.assert_allclose(model.evaluate(x, g), evaluate_curve(name, x, g))
    with pytest.raises(ValueError, match="unknown model"):
        get_model("gamma")


@pytest.mark.parametrize("family,params", [
    ("exponential", {"a": -0.7, "tau": 0.3, "c": 1.0}),  # rising: no family assumes a direction
    ("power", {"a": 0.4, "b": 1.2, "c": 0.2}),
    ("logistic", {"a": -1.0, "x0": 0.4, "s": 0.1, "c": 0.5}),
    ("linear", {"a": 0.2, "b": 0.8}),
    ("hinge", {"a": 1.0, "b1": -2.0, "b2": 0.3, "x0": 0.35}),
])
def test_each_family_recovers_its_curve_from_bin_means(rng, family, params):
    x = (np.arange(30) + 0.5) / 30
    y = evaluate_curve(family, x, params) + rng.normal(0, 0.002, size=x.size)
    r = fit_model(family, x, y, weights=np.full(x.size, 50.0))
    for k, v in params.items():
        assert r.params[k] == pytest.approx(v, abs=0.05 * max(1.0, abs(v))), (k, r.params)
    assert r.converged and r.n_obs == 30 and r.df_resid == 30 - len(params)


def test_weights_and_sigma_and_diagonal_cov_agree(rng):
    x = np.linspace(0.05, 0.95, 15)
    y = 2.0 - 1.2 * x + rng.normal(0, 0.05, 15)
    s = rng.uniform(0.02, 0.1, 15)
    a = fit_model("linear", x, y, weights=1 / s ** 2)
    b = fit_model("linear", x, y, sigma=s)
    c = fit_model("linear", x, y, cov=np.diag(s ** 2))
    for r in (b, c):
        np.testing.assert_allclose(list(r.params.values()), list(a.params.values()), rtol=1e-6)
        np.testing.assert_allclose(list(r.stderr.values()), list(a.stderr.values()), rtol=1e-6)
        assert r.aic == pytest.approx(a.aic)
    # closed-form weighted least squares and the documented AIC formula (scale estimated: k = p + 1)
    W = 1 / s ** 2
    X = np.column_stack([np.ones_like(x), x])
    beta = np.linalg.solve(X.T @ (W[:, None] * X), X.T @ (W * y))
    rss = float(np.sum(W * (y - X @ beta) ** 2))
    loglik = -15 / 2 * (np.log(2 * np.pi * rss / 15) + 1) + 0.5 * np.sum(np.log(W))
    np.testing.assert_allclose([a.params["a"], a.params["b"]], beta, rtol=1e-6)
    assert a.aic == pytest.approx(2 * 3 - 2 * loglik)
    assert a.bic == pytest.approx(3 * np.log(15) - 2 * loglik)
    se = np.sqrt(np.diag(np.linalg.inv(X.T @ (W[:, None] * X)) * rss / 13))
    np.testing.assert_allclose([a.stderr["a"], a.stderr["b"]], se, rtol=1e-5)
    # known errors: k = p, and the scale is never below 1
    k = fit_model("linear", x, y, sigma=s, absolute_sigma=True)
    assert k.scale >= 1.0 and k.aic == pytest.approx(rss - 2 * (-7.5 * np.log(2 * np.pi) - np.sum(np.log(s))) + 4)


def test_convergence_error_says_what_to_try():
    x = np.array([0.1, 0.5, 0.9])
    with pytest.raises(ConvergenceError, match="fewer parameters"):
        fit_model("logistic", x, np.array([1.0, 0.5, 0.2]))
    x = np.linspace(0.05, 0.95, 12)
    with pytest.raises(ConvergenceError, match=r"other start values.*rescale x"):
        fit_model("logistic", x, np.sin(12 * x), max_nfev=2)
    with pytest.raises(ConvergenceError, match="x must be > 0"):
        fit_model("power", np.linspace(0, 1, 10), np.linspace(1, 0, 10))
    with pytest.raises(ValueError, match="nan_policy"):
        fit_model("linear", np.arange(5.0), np.array([1, 2, np.nan, 4, 5.0]))
    r = fit_model("linear", np.arange(5.0), np.array([1, 2, np.nan, 4, 5.0]), nan_policy="omit")
    assert r.n_obs == 4


def test_fit_all_records_failures_instead_of_hiding_them():
    x = np.array([0.1, 0.4, 0.6, 0.9])
    sel = fit_all(x, 1.0 - 0.5 * x + np.array([0.01, -0.01, 0.01, -0.01]))
    table = sel.table()
    assert set(table.index) == set(MODELS)
    assert not table.loc["logistic", "converged"] and not table.loc["hinge", "converged"]
    assert "parameters" in sel.results["logistic"].message
    assert sel.best.converged and sel.best_name in sel.converged
    assert table["akaike_weight"].sum() == pytest.approx(1.0)
    assert math.isnan(sel.results["hinge"].params["x0"])
    with pytest.raises(ConvergenceError, match="no model converged"):
        _ = fit_all(x[:2], x[:2], models=["logistic", "hinge"]).best


def test_fit_result_is_frozen_serializable_and_plots(rng):
    x = (np.arange(20) + 0.5) / 20
    y = 0.8 * np.exp(-x / 0.25) + 0.1 + rng.normal(0, 0.01, 20)
    sel = fit_all(x, y, sigma=np.full(20, 0.01), absolute_sigma=True)
    r = sel.best
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.aic = 0.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        r.params["a"] = 1.0  # type: ignore[index]
    with pytest.raises(ValueError):
        r.x[0] = 1.0
    assert pickle.loads(pickle.dumps(r)).params == r.params
    d = json.loads(json.dumps(sel.to_dict(), allow_nan=False))
    assert d["selected"] == sel.best_name
    assert {"params", "stderr", "ci_low", "ci_high", "aic", "bic", "converged"} <= set(d["models"][r.name])
    assert list(r.summary().index) == list(r.model.param_names)
    assert list(r.summary().columns) == ["estimate", "stderr", "ci_low", "ci_high"]
    assert r.name in r.report() and "<table" in r._repr_html_() and "<table" in sel._repr_html_()
    np.testing.assert_allclose(r.predict(x), evaluate_curve(r.name, x, dict(r.params)))
    fig, ax = plt.subplots()
    assert r.plot(ax=ax) is ax and sel.plot(ax=ax) is ax
    assert len(ax.lines) >= 2
    plt.close(fig)


def test_half_point_of_an_exponential():
    x = np.linspace(0.0, 1.0, 30)
    tau, a, c = 0.2, 1.0, 0.3
    r = fit_model("exponential", x, a * np.exp(-x / tau) + c + 1e-9 * np.sin(40 * x))
    want = -tau * np.log((1 + np.exp(-1 / tau)) / 2)  # a e^{-x/tau} + c halfway between f(0) and f(1)
    assert half_point(r) == pytest.approx(want, rel=1e-4)
    flat = fit_model("linear", x, np.full(30, 2.0) + 1e-9 * np.sin(40 * x))
    assert math.isnan(half_point(flat, (0.0, 1.0))) or 0.0 <= half_point(flat) <= 1.0


def test_fit_bins_from_a_table_and_from_rollout_bins_agree_on_the_best_family():
    df = synthetic_tokens("exponential", {"a": 1.0, "tau": 0.2, "c": 0.3}, n_rollouts=150, length_range=(50, 300),
                          seed=5, metric="y", realistic=False)
    rb = aggregate_bins(df, "y", BinSpec(bins=15))
    table = rb.table(n_boot=300, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from_table = fit_bins(table, "y", errors="se")
        from_stats = fit_bins(rb, "y", errors="se", n_boot=300, seed=1)
        by_counts = fit_bins(rb, "y", errors="n_rollouts", models=["exponential", "linear"])
    assert from_table.best_name == from_stats.best_name == by_counts.best_name == "exponential"
    # same bins and errors; only RolloutBins knows the spread of x within each bin (bin-averaged curve)
    np.testing.assert_allclose(list(from_table.best.params.values()), list(from_stats.best.params.values()),
                               rtol=2e-2)
    t = table.sort_values("bin")
    plain = fit_model("exponential", t["x"], t["mean"], sigma=t["se"], absolute_sigma=True)
    np.testing.assert_allclose(list(from_table.best.params.values()), list(plain.params.values()), rtol=1e-6)
    with pytest.raises(ValueError, match="no bootstrap replicates"):
        fit_bins(table, "y", errors="cov")


# --- one registry per family ---------------------------------------------------------------------------------------

def test_models_take_everything_from_the_registry():
    from drift.curves import FAMILIES

    assert set(FAMILIES) == set(MODELS)
    x = np.linspace(0.05, 0.95, 19)
    for name, model in MODELS.items():
        fam = FAMILIES[name]
        assert model.family is fam and model.formula == fam.formula and model.bounds == fam.bounds
        # the linear parameters the start values solve for are the ones the registry declares
        nl = next(iter(model._grid(x)))
        _, linear = model._basis(x, **nl)
        assert set(linear) == set(fam.linear) and set(nl) | set(linear) == set(fam.param_names)


@pytest.mark.parametrize("name,params", [
    ("exponential", {"a": 0.7, "tau": 0.3, "c": 0.2}), ("power", {"a": 0.4, "b": 0.8, "c": 0.1}),
    ("logistic", {"a": -1.0, "x0": 0.4, "s": 0.1, "c": 0.5}), ("linear", {"a": 0.2, "b": 0.8}),
    ("hinge", {"a": 1.0, "b1": -2.0, "b2": 0.3, "x0": 0.35}),
])
def test_registry_affine_rescales_the_curve(name, params):
    from drift.curves import get_family

    fam = get_family(name)
    x = np.linspace(0.05, 1.0, 40)
    np.testing.assert_allclose(fam.evaluate(x, fam.affine(params, 0.3, 1.0)), 0.3 * fam.evaluate(x, params) + 1.0)


def test_power_is_evaluated_only_where_defined():
    from drift.curves import evaluate_on_domain, get_family

    p = {"a": 0.5, "b": 0.7, "c": 0.1}
    fam = get_family("power")
    assert fam.domain_text() == "x > 0" and not fam.valid(0.0) and fam.valid(1e-9)
    with pytest.raises(ValueError, match="x must be > 0"):
        evaluate_curve("power", np.linspace(0, 1, 5), p)
    x = np.linspace(0.0, 1.0, 5)
    got = evaluate_on_domain("power", p, x, edge=0.025)
    assert got[0] == pytest.approx(evaluate_curve("power", [0.025], p)[0])  # clamped to the edge, never the pole
    np.testing.assert_allclose(got[1:], evaluate_curve("power", x[1:], p))
    np.testing.assert_allclose(evaluate_on_domain("power", p, x)[0], got[1])  # no edge: smallest valid x
    with pytest.raises(ValueError, match="pass edge"):
        evaluate_on_domain("power", p, np.array([0.0, -1.0]))
    np.testing.assert_allclose(evaluate_on_domain("linear", {"a": 1, "b": 2}, x), 1 + 2 * x)  # all x: unchanged
    # a fitted power law (the recommend crash: its peak is scanned over [0, 1])
    xs = (np.arange(20) + 0.5) / 20
    r = fit_model("power", xs, evaluate_curve("power", xs, p), weights=np.ones(20))
    peak = r.predict_on_domain(np.linspace(0.0, 1.0, 201))
    assert np.all(np.isfinite(peak)) and peak[0] == pytest.approx(r.predict([xs[0]])[0])


# --- errors tied to the number of clusters R -----------------------------------------------------------------------

def _clustered(R: int, B: int = 20, seed: int = 0):
    from drift.synthetic_fits import bootstrap_cov, clustered_bins

    d = clustered_bins(R, B, seed=seed)
    return d, bootstrap_cov(d, 300, seed)


def test_full_covariance_only_with_twice_as_many_clusters_as_bins():
    from scipy import stats as sps

    from drift.stats.fit import full_cov_allowed, percival_m1

    for R, errors in ((10, "diagonal"), (39, "diagonal"), (40, "full_cov"), (80, "full_cov")):
        d, C = _clustered(R)
        r = fit_model("linear", d.x, d.y, cov=C, n_clusters=R, absolute_sigma=True)
        assert r.errors == errors and r.n_clusters == R and f"R={R}" in r.errors_reason, r.errors_reason
        assert r.df_ci == (R - 1 if errors == "diagonal" else R - 1 - (20 - 2))
        half = r.ci_high["b"] - r.params["b"]
        assert half == pytest.approx(sps.t.ppf(0.975, r.df_ci) * r.stderr["b"])
    assert full_cov_allowed(40, 20)[0] and not full_cov_allowed(39, 20)[0] and not full_cov_allowed(7, 3)[0]
    assert percival_m1(80, 20, 2) == pytest.approx(1.25, abs=0.01) and percival_m1(10_000, 20, 2) == pytest.approx(
        1.0, abs=0.01)
    # full covariance: GLS with C R / (R - B - 2) (Hartlap with R), parameter covariance times m1
    d, C = _clustered(80)
    r = fit_model("linear", d.x, d.y, cov=C, n_clusters=80, absolute_sigma=True)
    legacy = fit_model("linear", d.x, d.y, cov=C * 80 / (80 - 22), absolute_sigma=True)
    assert legacy.errors == "cov" and legacy.df_ci == math.inf
    np.testing.assert_allclose(list(r.params.values()), list(legacy.params.values()), rtol=1e-6)
    assert r.stderr["b"] == pytest.approx(legacy.stderr["b"] * math.sqrt(percival_m1(80, 20, 2)), rel=1e-6)


def test_diagonal_errors_use_the_sandwich_with_the_bootstrap_covariance():
    d, C = _clustered(12)
    r = fit_model("linear", d.x, d.y, cov=C, n_clusters=12, absolute_sigma=True)
    assert r.errors == "diagonal" and "diagonal errors" in r.errors_reason
    np.testing.assert_allclose(r.yerr, np.sqrt(np.diag(C) * 12 / 11))  # plots show the bins' own errors
    # a common shift of every bin (perfectly correlated errors) widens the intercept, not the slope
    B = 20
    shift = np.full((B, B), 0.04)
    base = np.diag(np.full(B, 0.01))
    a = fit_model("linear", d.x, d.y, cov=base, n_clusters=12, absolute_sigma=True)
    b = fit_model("linear", d.x, d.y, cov=base + shift, n_clusters=12, absolute_sigma=True)
    assert b.stderr["a"] > 1.5 * a.stderr["a"]
    assert b.params["b"] == pytest.approx(a.params["b"], rel=0.2)
    # sigma with R: the bootstrap's (R - 1) / R variance is corrected and t has R - 1 degrees of freedom
    s = fit_model("linear", d.x, d.y, sigma=np.full(B, 0.1), n_clusters=12, absolute_sigma=True)
    plain = fit_model("linear", d.x, d.y, sigma=np.full(B, 0.1) * math.sqrt(12 / 11), absolute_sigma=True)
    assert s.errors == "sigma" and s.df_ci == 11 and s.stderr["b"] == pytest.approx(plain.stderr["b"])
    with pytest.raises(ValueError, match="n_clusters"):
        fit_model("linear", d.x, d.y, n_clusters=0)


def test_legacy_behaviour_without_n_clusters_is_unchanged(rng):
    x = np.linspace(0.05, 0.95, 15)
    y = 2.0 - 1.2 * x + rng.normal(0, 0.05, 15)
    C = np.diag(rng.uniform(0.001, 0.01, 15))
    r = fit_model("linear", x, y, cov=C, absolute_sigma=True)
    assert r.errors == "cov" and r.errors_reason == "" and r.n_clusters is None and r.df_ci == math.inf
    w = fit_model("linear", x, y, weights=np.full(15, 3.0), n_clusters=5)
    assert w.errors == "weights" and w.df_ci == 4  # the scale from residuals, t limited by the clusters


# --- identification and selection ---------------------------------------------------------------------------------

def test_unidentified_fits_are_marked_and_never_selected(rng):
    x = (np.arange(20) + 0.5) / 20
    y = 0.5 + rng.normal(0, 0.01, 20)  # flat: a logistic's midpoint and width cannot be told
    sel = fit_all(x, y, sigma=np.full(20, 0.01), absolute_sigma=True)
    lg = sel.results["logistic"]
    assert lg.converged and not lg.identified and lg.message.startswith("unidentified:")
    assert "x0" in lg.message or "s " in lg.message or "no finite interval" in lg.message
    assert "logistic" not in sel.selectable and sel.best_name in sel.selectable
    t = sel.table()
    assert not t.loc["logistic", "identified"] and t.loc["logistic", "akaike_weight"] == 0.0
    assert t["akaike_weight"].sum() == pytest.approx(1.0)
    assert "NOT IDENTIFIED" in lg.report()
    # only unidentified fits: nothing is selected, and the reason says so
    only = fit_all(x, y, models=["logistic"], sigma=np.full(20, 0.01), absolute_sigma=True)
    assert only.converged == ["logistic"] and only.best_name is None and only.reason.startswith("no identified fit")
    with pytest.raises(ConvergenceError, match="no identified fit"):
        _ = only.best


def test_selection_is_refused_below_min_clusters():
    d, C = _clustered(4, B=8)
    sel = fit_all(d.x, d.y, models=["linear", "exponential"], cov=C, absolute_sigma=True, n_clusters=4)
    assert sel.converged and sel.best_name is None and sel.reason == "insufficient: R=4 < 10 clusters"
    assert sel.to_dict()["selected"] is None and sel.to_dict()["reason"] == sel.reason
    with pytest.raises(ConvergenceError, match="insufficient: R=4 < 10 clusters"):
        _ = sel.best
    assert "insufficient" in sel.report()
    ok = fit_all(d.x, d.y, models=["linear"], cov=C, absolute_sigma=True, n_clusters=4, min_clusters=3)
    assert ok.best_name == "linear" and ok.reason is None and ok.min_clusters == 3


# --- reloading fits.json -------------------------------------------------------------------------------------------

def test_selection_round_trips_through_json(rng):
    x = (np.arange(20) + 0.5) / 20
    y = 0.8 * np.exp(-x / 0.25) + 0.1 + rng.normal(0, 0.01, 20)
    d, C = _clustered(16)
    for sel in (fit_all(x, y, sigma=np.full(20, 0.01), absolute_sigma=True),  # incl. an unidentified power law
                fit_all(x[:4], y[:4]),  # failed fits (too few points for logistic, hinge)
                fit_all(d.x, d.y, cov=C, absolute_sigma=True, n_clusters=16),
                fit_all(d.x, d.y, cov=C, absolute_sigma=True, n_clusters=6)):  # refused
        text = json.dumps(sel.to_dict(), allow_nan=False)
        back = type(sel).from_dict(json.loads(text))
        assert back.best_name == sel.best_name and back.reason == sel.reason
        assert back.criterion == sel.criterion and back.n_clusters == sel.n_clusters
        assert json.loads(json.dumps(back.to_dict(), allow_nan=False)) == json.loads(text)
        for name, r in sel.results.items():
            b = back.results[name]
            assert (b.converged, b.identified, b.errors, b.df_ci) == (r.converged, r.identified, r.errors, r.df_ci)
            np.testing.assert_allclose(b.predict(r.x), r.predict(r.x), rtol=1e-12)
            np.testing.assert_allclose(b.x, r.x)
            assert b.aic == r.aic or (math.isnan(b.aic) and math.isnan(r.aic))
        pd.testing.assert_frame_equal(back.table().drop(columns=["message"]), sel.table().drop(columns=["message"]))
    # an old fits.json entry (models, selected, criterion only) still loads
    old = {"models": {"linear": {"model": "linear", "params": {"a": 1.0, "b": -0.5}, "aic": 3.0, "converged": True}},
           "selected": "linear", "criterion": "aic"}
    back = type(sel).from_dict(old)
    assert back.best_name == "linear" and back.best.predict([0.0, 1.0]).tolist() == [1.0, 0.5]
    with pytest.raises(ValueError, match="differs"):
        type(sel).from_dict({**old, "selected": "hinge"})
