"""Position bins from DuckDB against naive pandas groupbys on small frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from drift.errors import ConfigError, DatasetError, SchemaError
from drift.stats import BIN_COLUMNS, BinSpec, aggregate_bins, bin_metric, open_tokens
from drift.stats.bootstrap import expanded_level, percentile_interval
from drift.synthetic import synthetic_tokens, write_synthetic_dataset

KEY = ["run_id", "step", "prompt_id", "sample_id"]
CONTRACT = ["metric", "by", "group", "bin", "bin_left", "bin_right", "mean", "ci_low", "ci_high", "n_tokens",
            "n_rollouts"]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    a = synthetic_tokens("exponential", {"a": 1.0, "tau": 0.3, "c": 0.2}, n_rollouts=40, length_range=(3, 70),
                         seed=11, step=0)
    b = synthetic_tokens("linear", {"a": 0.5, "b": 0.1}, n_rollouts=30, length_range=(3, 70), seed=12, step=5)
    return pd.concat([a, b], ignore_index=True)


def naive(df: pd.DataFrame, bin_N: np.ndarray, metric: str, by_cols: list[str] | None = None) -> pd.DataFrame:
    d = df.assign(_bin=bin_N, _m=df[metric].astype(float), _r=df[KEY].astype(str).agg("|".join, axis=1))
    d = d[d["_m"].notna()]
    keys = (by_cols or []) + ["_bin"]
    g = d.groupby(keys, dropna=False)
    return pd.DataFrame({"mean": g["_m"].mean(), "n_tokens": g["_m"].size(), "n_rollouts": g["_r"].nunique(),
                         "q50": g["_m"].median()}).reset_index()


def pick(table: pd.DataFrame, metric: str, *, step=None, stratum="all", group="all") -> pd.DataFrame:
    t = table[(table["metric"] == metric) & (table["stratum"] == stratum) & (table["group"] == group)]
    t = t[t["step"].isna()] if step is None else t[t["step"] == step]
    return t.sort_values("bin").reset_index(drop=True)


def test_relative_bins_match_naive_groupby(frame):
    B = 8
    table = bin_metric(frame, ["kl_reverse", "teacher_top1"], BinSpec(by="rel", bins=B), n_boot=50)
    assert list(table.columns) == list(BIN_COLUMNS)
    assert list(table.columns[:11]) == CONTRACT
    rel_bin = np.minimum(np.floor(frame["rel_position"] * B), B - 1).astype(int)
    for metric in ("kl_reverse", "teacher_top1"):
        got = pick(table, metric)  # two steps -> pooled cell has step NA
        want = naive(frame, rel_bin, metric)
        np.testing.assert_array_equal(got["bin"], want["_bin"])
        np.testing.assert_allclose(got["mean"], want["mean"], rtol=1e-10)
        np.testing.assert_array_equal(got["n_tokens"], want["n_tokens"])
        np.testing.assert_array_equal(got["n_rollouts"], want["n_rollouts"])
        np.testing.assert_allclose(got["q50"], want["q50"], rtol=1e-10)
        np.testing.assert_allclose(got["bin_left"], got["bin"] / B)
        np.testing.assert_allclose(got["bin_right"], (got["bin"] + 1) / B)
        assert (got["ci_low"] <= got["mean"] + 1e-12).all() and (got["mean"] <= got["ci_high"] + 1e-12).all()
    # x is the mean slot centre (t + 0.5) / T of the bin's tokens
    xc = (frame["position"] + 0.5) / frame["response_len"]
    want_x = xc.groupby(rel_bin).mean().to_numpy()
    np.testing.assert_allclose(pick(table, "kl_reverse")["x"], want_x, rtol=1e-10)


def test_per_step_cells_and_margin(frame):
    table = bin_metric(frame, "kl_reverse", BinSpec(bins=5), n_boot=20)
    assert set(table["step"].dropna().astype(int)) == {0, 5}
    assert table["step"].isna().any()  # the pooled margin
    rel_bin = np.minimum(np.floor(frame["rel_position"] * 5), 4).astype(int)
    want = naive(frame, rel_bin, "kl_reverse", ["step"])
    for step in (0, 5):
        got = pick(table, "kl_reverse", step=step)
        w = want[want["step"] == step]
        np.testing.assert_allclose(got["mean"], w["mean"], rtol=1e-10)
        np.testing.assert_array_equal(got["n_rollouts"], w["n_rollouts"])
    pooled = bin_metric(frame, "kl_reverse", BinSpec(bins=5, step="pool"), n_boot=20)
    assert pooled["step"].isna().all() and len(pooled) == 5


def test_absolute_fixed_width_and_default_width(frame):
    table = bin_metric(frame, "kl_forward", BinSpec(by="abs", width=7, step="pool"), n_boot=0)
    M = int(frame["position"].max()) + 1
    want = naive(frame, frame["position"] // 7, "kl_forward")
    np.testing.assert_allclose(table["mean"], want["mean"], rtol=1e-10)
    np.testing.assert_array_equal(table["n_rollouts"], want["n_rollouts"])
    np.testing.assert_allclose(table["bin_left"], table["bin"] * 7)
    np.testing.assert_allclose(table["bin_right"], np.minimum((table["bin"] + 1) * 7, M))
    assert table["ci_low"].isna().all()  # n_boot=0: no intervals
    np.testing.assert_allclose(table["x"], (frame["position"] + 0.5).groupby(frame["position"] // 7).mean())
    # bins=10 without width: width = ceil(M / 10), tokens at t >= max_position left out
    t2 = bin_metric(frame, "kl_forward", BinSpec(by="abs", bins=10, max_position=40, step="pool"), n_boot=0)
    kept = frame[frame["position"] < 40]
    want2 = naive(kept, kept["position"] // 4, "kl_forward")
    np.testing.assert_allclose(t2["mean"], want2["mean"], rtol=1e-10)
    assert t2["n_tokens"].sum() == len(kept)


def test_log_bins_edges_and_means(frame):
    spec = BinSpec(by="abs_log", bins=6, step="pool")
    table = bin_metric(frame, "k3", spec, n_boot=0)
    M = int(frame["position"].max()) + 1
    edges = np.unique(np.round(np.geomspace(1, M + 1, 7)).astype(int)) - 1
    np.testing.assert_array_equal(spec.edges(M), edges)
    b = np.searchsorted(edges, frame["position"], side="right") - 1
    want = naive(frame, b, "k3")
    np.testing.assert_array_equal(table["bin"], want["_bin"])
    np.testing.assert_allclose(table["mean"], want["mean"], rtol=1e-6)
    np.testing.assert_allclose(table["bin_left"], edges[table["bin"]])
    np.testing.assert_allclose(table["bin_right"], edges[table["bin"] + 1])
    assert edges[0] == 0 and edges[-1] == M


def test_length_strata_cut_points_and_quantiles(frame):
    spec = BinSpec(bins=4, strata=(20, 45), step="pool")
    table = bin_metric(frame, "kl_reverse", spec, n_boot=0)
    assert set(table["stratum"]) == {"all", "T<20", "20<=T<45", "T>=45"}
    rel_bin = np.minimum(np.floor(frame["rel_position"] * 4), 3).astype(int)
    label = np.select([frame["response_len"] < 20, frame["response_len"] < 45], ["T<20", "20<=T<45"], "T>=45")
    want = naive(frame.assign(stratum=label), rel_bin, "kl_reverse", ["stratum"])
    for s in ("T<20", "20<=T<45", "T>=45"):
        got = table[table["stratum"] == s].sort_values("bin")
        w = want[want["stratum"] == s]
        np.testing.assert_allclose(got["mean"], w["mean"], rtol=1e-10)
        np.testing.assert_array_equal(got["n_rollouts"], w["n_rollouts"])
    # quantile strata: cut points at rollout-level length quantiles (equal rollout counts)
    rb = aggregate_bins(frame, "kl_reverse", BinSpec(bins=4, strata="quantiles:2", step="pool"))
    lengths = frame[frame["position"] == 0]["response_len"]
    cut = round(float(np.quantile(lengths, 0.5)))
    assert rb.strata_labels == (f"T<{cut}", f"T>={cut}")


def test_group_by_column(frame):
    table = bin_metric(frame, "kl_reverse", BinSpec(bins=4, group_by=("finished",), step="pool"), n_boot=0)
    rel_bin = np.minimum(np.floor(frame["rel_position"] * 4), 3).astype(int)
    want = naive(frame, rel_bin, "kl_reverse", ["finished"])
    for value in (True, False):
        got = table[table["group"] == f"finished={value}"].sort_values("bin")
        w = want[want["finished"] == value]
        np.testing.assert_allclose(got["mean"], w["mean"], rtol=1e-10)
        np.testing.assert_array_equal(got["n_tokens"], w["n_tokens"])
    assert (table["group"] == "all").any()


def test_null_metric_values_are_left_out(frame):
    df = frame.copy()
    df.loc[df.index[::7], "kl_reverse"] = np.nan
    table = bin_metric(df, "kl_reverse", BinSpec(bins=4, step="pool"), n_boot=0)
    rel_bin = np.minimum(np.floor(df["rel_position"] * 4), 3).astype(int)
    want = naive(df, rel_bin, "kl_reverse")
    np.testing.assert_allclose(table["mean"], want["mean"], rtol=1e-6)
    np.testing.assert_array_equal(table["n_tokens"], want["n_tokens"])


def test_frame_and_dataset_on_disk_give_identical_tables(frame, tmp_path):
    ds = write_synthetic_dataset(tmp_path / "ds", frame, rollouts_per_part=25)
    assert len(ds.files("tokens")) == 3
    spec = BinSpec(by="rel", bins=6, strata="quantiles:2", group_by=("finished",))
    a = bin_metric(frame, ["kl_reverse", "cum_abs_gap_frac"], spec, n_boot=100, seed=3)
    b = bin_metric(tmp_path / "ds", ["kl_reverse", "cum_abs_gap_frac"], spec, n_boot=100, seed=3)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)


def test_table_intervals_are_the_percentiles_of_the_replicates(frame):
    rb = aggregate_bins(frame, "kl_reverse", BinSpec(bins=4, step="pool"))
    table = rb.table(n_boot=300, ci=0.9, seed=7, interval="percentile")
    reps = rb.replicates(rb.headline, 300, 7)[:, 0, :]
    lo, hi = percentile_interval(reps, 0.9)
    np.testing.assert_allclose(table["ci_low"], lo)
    np.testing.assert_allclose(table["ci_high"], hi)
    # default: the expanded percentile interval at the level for K = the bin's clusters (wider, same centre)
    wide = rb.table(n_boot=300, ci=0.9, seed=7)
    K = int(wide["n_clusters"].iloc[0])
    lo2, hi2 = percentile_interval(reps, expanded_level(0.9, K))
    np.testing.assert_allclose(wide["ci_low"], lo2)
    np.testing.assert_allclose(wide["ci_high"], hi2)
    assert (wide["ci_low"] <= table["ci_low"]).all() and (wide["ci_high"] >= table["ci_high"]).all()
    table = rb.table(n_boot=300, ci=0.9, seed=7, interval="percentile")
    assert rb.table(n_boot=300, ci=0.9, seed=7, interval="percentile").equals(table)  # seeded
    assert not rb.table(n_boot=300, ci=0.9, seed=8, interval="percentile")["ci_low"].equals(table["ci_low"])


def test_schema_error_lists_every_missing_column_at_once(frame):
    bad = frame.drop(columns=["position", "sample_id"]).assign(rel_position=frame["rel_position"].astype(str))
    with pytest.raises(SchemaError) as err:
        bin_metric(bad, ["kl_reverse", "no_such_metric"], n_boot=0)
    msg = str(err.value)
    for needle in ("'position'", "'sample_id'", "'rel_position'", "no_such_metric", "numeric columns available",
                   "kl_forward"):
        assert needle in msg, needle
    assert len(err.value.problems) >= 5


def test_non_numeric_metric_and_empty_selection(frame):
    with pytest.raises(SchemaError, match="metrics must be numeric"):
        open_tokens(frame.assign(note="x"), metrics=["note"])
    with pytest.raises(DatasetError, match="no token rows"):
        bin_metric(frame, "kl_reverse", BinSpec(steps=(99,)), n_boot=0)


def test_bin_spec_validation_lists_problems():
    with pytest.raises(ConfigError) as err:
        BinSpec(by="abs_sqrt", bins=500, strata="quantiles:1", group_by=("step",))
    assert len(err.value.problems) == 4
    with pytest.raises(ConfigError, match="cluster"):
        BinSpec(cluster="token")
    with pytest.raises(ConfigError, match="width is only used"):
        BinSpec(by="rel", width=8)


def test_plot_bins_draws_bands_per_stratum(frame):
    import matplotlib.pyplot as plt

    from drift.stats import plot_bins

    table = bin_metric(frame, "kl_reverse", BinSpec(bins=5, strata=(30,), step="pool"), n_boot=50)
    fig, ax = plt.subplots()
    assert plot_bins(table, "kl_reverse", ax=ax, hue="stratum") is ax
    assert len(ax.lines) == 3 and len(ax.collections) == 3  # all, T<30, T>=30: a line and a band each
    assert ax.get_xlabel() == "relative position t/T"
    with pytest.raises(ValueError, match="not in the table"):
        plot_bins(table, "k3", ax=ax)
    plt.close(fig)


def test_prompt_clusters_pool_rollouts_and_steps(frame):
    # frame: steps 0 and 5 of one run; prompts p0..p9 at step 0 (4 samples each) and p0..p7 at step 5.
    spec = BinSpec(bins=4, step="pool")
    prompt = aggregate_bins(frame, "kl_reverse", spec)
    rollout = aggregate_bins(frame, "kl_reverse", BinSpec(bins=4, step="pool", cluster="rollout"))
    assert prompt.cluster == "prompt" and rollout.cluster == "rollout"
    assert prompt.n_clusters("kl_reverse") == frame["prompt_id"].nunique() == 10  # a prompt at 2 steps: 1 cluster
    assert rollout.n_clusters("kl_reverse") == prompt.n_rollouts("kl_reverse") == 70
    # sums and counts are additive over a cluster's rollouts: same bin means, same token counts
    tp, tr = prompt.table(n_boot=50), rollout.table(n_boot=50)
    np.testing.assert_allclose(tp["mean"], tr["mean"])
    np.testing.assert_array_equal(tp["n_rollouts"], tr["n_rollouts"])
    assert (tp["n_clusters"] <= 10).all() and (tp["cluster"] == "prompt").all() and (tr["cluster"] == "rollout").all()
    want = frame.assign(_b=np.minimum(np.floor(frame["rel_position"] * 4), 3)).groupby("_b")["prompt_id"].nunique()
    np.testing.assert_array_equal(tp["n_clusters"], want.to_numpy())
    # per-step cells: the same prompt at another step is another cell's cluster
    per_step = aggregate_bins(frame, "kl_reverse", BinSpec(bins=4))
    assert per_step.n_clusters("kl_reverse", per_step.cell(step=0)) == 10
    assert per_step.n_clusters("kl_reverse", per_step.cell(step=5)) == 8


def test_older_datasets_without_prompt_key_fall_back_to_run_and_prompt_id(frame):
    old = frame.drop(columns=["prompt_key"])
    a = aggregate_bins(old, "kl_reverse", BinSpec(bins=4, step="pool"))
    assert a.n_clusters("kl_reverse") == 10
    mixed = frame.copy()
    mixed.loc[mixed["step"] == 5, "prompt_key"] = None  # null keys: each falls back, never one giant cluster
    # the 8 prompts of step 5 fall back to (run_id, prompt_id) keys: 10 + 8 clusters
    assert aggregate_bins(mixed, "kl_reverse", BinSpec(bins=4, step="pool")).n_clusters("kl_reverse") == 18


def test_quantile_strata_with_a_length_cap_are_merged():
    capped = synthetic_tokens("linear", {"a": 0.5, "b": 0.0}, n_rollouts=200, length_range=(20, 400), seed=2)
    lengths = capped.groupby(["prompt_id", "sample_id"])["response_len"].transform("first")
    keep = (lengths >= 120) | (capped["prompt_id"] == "p0000000")  # a cap: almost all at length >= 120 ...
    capped = capped[keep].copy()
    capped.loc[capped["response_len"] >= 120, "response_len"] = 120  # ... cut to 120 tokens
    capped = capped[capped["position"] < capped["response_len"]]
    capped["rel_position"] = capped["position"] / capped["response_len"]
    rb = aggregate_bins(capped, "kl_reverse", BinSpec(bins=4, strata="quantiles:3", step="pool"))
    assert len(rb.strata_labels) <= 1  # T<120 holds one prompt's rollouts: merged, no one-prompt stratum
    explicit = aggregate_bins(capped, "kl_reverse", BinSpec(bins=4, strata=(120,), step="pool"))
    assert explicit.strata_labels == ("T<120", "T>=120")  # the user's cut points are kept ...
    from drift.stats import direction_test

    small = direction_test(explicit, "kl_reverse", n=100, stratum="T<120")
    assert small.verdict == "insufficient"  # ... but the small stratum gets no verdict
